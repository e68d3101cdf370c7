"""Thread control that other libraries understand (threadpoolctl, OMP_NUM_THREADS) and fork safety.

Thread counts are observed without timing: libgomp starts exactly ``team size - 1`` worker threads
the first time a thread opens a parallel region of that size and keeps them, so the growth of
/proc/self/task across a kernel call shows the team the kernel really ran with. Each check runs in
a fresh interpreter (with a timeout, so a hang fails instead of blocking the suite).
"""
import os
import subprocess
import sys
import textwrap

import pytest

import fastconv
from conv_helpers import child_env, run_to_deadline

threadpoolctl = pytest.importorskip("threadpoolctl")

# a neutral working directory: "-c" scripts put it first on sys.path, and the source folder
# (without compiled kernels) must not shadow the package under test
HERE = os.path.dirname(os.path.abspath(__file__))
linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
needs_openmp = pytest.mark.skipif(not fastconv._kernels.openmp_enabled(),
                                  reason="fastconv built without OpenMP")

PRELUDE = """
import os, sys, threading
import numpy as np
import fastconv
from fastconv import _testing

# Small calls normally use fewer threads than allowed (a parallel grain); here every call uses
# every thread it may, so the team size shows the limit itself.
_testing.set_parallel_grain(0)

x = np.random.default_rng(0).standard_normal((8, 8, 24, 24)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((8, 8, 3, 3)).astype(np.float32)

def n_threads():
    return len(os.listdir("/proc/self/task"))

def run():
    return fastconv.conv2d(x, w, padding=1)

def run_pool():
    out, idx = fastconv.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    return out, fastconv.max_pool2d_backward(out, idx, x.shape)
"""


def run_script(body, omp_threads=None, timeout=60):
    env = child_env(OPENBLAS_NUM_THREADS="1")
    env.pop("OMP_NUM_THREADS", None)
    if omp_threads is not None:
        env["OMP_NUM_THREADS"] = str(omp_threads)
    code = PRELUDE + textwrap.dedent(body)
    # on a hang, the script and any child it forked are killed together
    returncode, stdout, stderr = run_to_deadline([sys.executable, "-c", code], timeout, "script",
                                                 env=env, cwd=HERE, stderr=subprocess.PIPE)
    assert returncode == 0, stdout + stderr
    return stdout


# ------------------------------------------------------------------------------ threadpoolctl
@needs_openmp
def test_threadpool_info_lists_fastconvs_openmp_runtime():
    """The OpenMP library threadpoolctl reports is the one whose thread count the kernels read
    (checked both ways: a change through either side is seen by the other)."""
    out = run_script("""
        from threadpoolctl import threadpool_info, threadpool_limits
        fastconv.set_num_threads(3)
        omp = [i for i in threadpool_info() if i["user_api"] == "openmp"]
        assert omp, threadpool_info()
        mine = [i for i in omp if i["num_threads"] == 3]
        assert mine, omp
        with threadpool_limits(limits=1, user_api="openmp"):
            assert fastconv.get_num_threads() == 1
        assert fastconv.get_num_threads() == 3
        print(mine[0]["internal_api"], mine[0]["prefix"], mine[0]["filepath"])
    """)
    assert out.startswith("openmp")


@needs_openmp
def test_threadpool_limits_in_process():
    before = fastconv.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastconv.get_num_threads() == 1
    assert fastconv.get_num_threads() == before


@linux_only
@needs_openmp
@pytest.mark.parametrize("kernel", ["run", "run_pool"])
def test_threadpool_limits_take_effect_in_the_kernels(kernel):
    """Team sizes seen from the thread count: limit 1 starts no worker, limit 2 one, the
    OMP_NUM_THREADS=4 default three; for the convolution and the pooling kernels alike."""
    out = run_script(f"""
        from threadpoolctl import threadpool_limits
        from conv_helpers import assert_same_bits  # the tests folder is the working directory
        base = n_threads()
        ref = None
        deltas = []
        for limit in (1, 2, None):
            if limit is None:
                y = {kernel}()
            else:
                with threadpool_limits(limits=limit, user_api="openmp"):
                    y = {kernel}()
            deltas.append(n_threads() - base)
            y = np.concatenate([np.ravel(a) for a in (y if isinstance(y, tuple) else (y,))])
            ref = y if ref is None else ref
            assert_same_bits(y, ref, f"team limit {{limit}}")  # for any team size
        print(deltas)
    """, omp_threads=4)
    assert out.strip() == "[0, 1, 3]"


@linux_only
@needs_openmp
@pytest.mark.parametrize("omp, call, expect_count, expect_workers", [
    (3, None, 3, 2),      # OMP_NUM_THREADS alone
    (1, None, 1, 0),
    (4, 2, 2, 1),         # fastconv.set_num_threads overrides it
    (None, 1, 1, 0),
])
def test_omp_num_threads_and_set_num_threads(omp, call, expect_count, expect_workers):
    set_call = "pass" if call is None else f"fastconv.set_num_threads({call})"
    out = run_script(f"""
        base = n_threads()
        {set_call}
        run()
        print(fastconv.get_num_threads(), n_threads() - base)
    """, omp_threads=omp)
    assert out.split() == [str(expect_count), str(expect_workers)]


# ------------------------------------------------------------------------------ fork
@posix_only
@linux_only
@needs_openmp
def test_forked_children_do_not_hang():
    """The parent runs multi-threaded kernels (its libgomp pool exists: one worker thread), then
    forks: through multiprocessing's 'fork' pool, with os.fork from the main thread, and with
    os.fork from another thread that ran kernels too. Every child runs single-threaded, refuses
    to go multi-threaded on its forking thread, and computes the same bits."""
    out = run_script("""
        import multiprocessing as mp

        def child_work(_):
            return fastconv.get_num_threads(), run().tobytes()

        base = n_threads()
        ref = run().tobytes()
        assert n_threads() - base == 1, "the parent's OpenMP pool should exist"

        # 1. multiprocessing with the 'fork' start method
        with mp.get_context("fork").Pool(2) as pool:
            results = pool.map(child_work, range(4))
        assert all(r == (1, ref) for r in results), [r[0] for r in results]

        # 2. os.fork from the main thread; in the child, set_num_threads on the forking thread
        #    is refused (it would hang), while a new thread of the child can use more threads
        def fork_and_check():
            pid = os.fork()
            if pid == 0:
                import warnings
                ok = run().tobytes() == ref and fastconv.get_num_threads() == 1
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    fastconv.set_num_threads(2)
                ok = ok and len(caught) == 1 and fastconv.get_num_threads() == 1
                ok = ok and run().tobytes() == ref
                seen = {}
                def in_new_thread():  # no stale pool on a new thread
                    seen["before"] = fastconv.get_num_threads()
                    fastconv.set_num_threads(2)
                    base = n_threads()
                    seen["ok"] = run().tobytes() == ref
                    seen["workers"] = n_threads() - base
                t = threading.Thread(target=in_new_thread)
                t.start(); t.join()
                ok = ok and seen == {"before": 1, "ok": True, "workers": 1}
                ok = ok and fastconv.get_num_threads() == 1 and run().tobytes() == ref
                os._exit(0 if ok else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status

        fork_and_check()

        # 3. os.fork from a second thread that ran kernels (its own pool) before forking
        errors = []
        def second_thread():
            try:
                run()
                fork_and_check()
            except Exception as exc:
                errors.append(exc)
        t = threading.Thread(target=second_thread)
        t.start(); t.join()
        assert not errors, errors
        assert fastconv.get_num_threads() == 2  # the parent is unaffected
        print("ok")
    """, omp_threads=2, timeout=60)
    assert out.strip() == "ok"
