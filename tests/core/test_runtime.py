"""Runtime control of the kernels: Ctrl-C during a long call, flushing subnormals to zero, the
cap on the thread count, and the CPU features each SIMD path is checked for.

Whatever may crash, hang or needs a signal runs in a fresh interpreter (with a timeout).
"""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, _testing, reference
import conv_helpers
from conv_helpers import SUPPORTED_ISAS, assert_same_bits, num_threads, using_isa

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = pathlib.Path(HERE).parents[1] / "src"  # tests/core -> the repository root
posix_only = pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix",
                                reason="needs POSIX signals")
needs_openmp = pytest.mark.skipif(not _kernels.openmp_enabled(),
                                  reason="fastconv built without OpenMP")


def child_env(**extra):
    env = conv_helpers.child_env()
    for name in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "OMP_DYNAMIC"):
        env.pop(name, None)
    env.update(extra)
    return env


def run_script(body, timeout=120, **env):
    """Run ``body`` in a fresh interpreter; return its stdout (it must exit with status 0)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True,
                          text=True, env=child_env(**env), cwd=HERE, timeout=timeout)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# ------------------------------------------------------------------------------ Ctrl-C
# The child runs a check call, then a call that needs far longer than the test allows, and
# reports where KeyboardInterrupt came from; after it, the check call again (bitwise the same
# result as before, and right). Both calls run on 2 threads, so that both the polling caller
# and a worker have to stop.
#
# How long the long calls need, at the very least, whatever the machine: conv2d makes
# 1000 images x 16 x 4096 pixels x 278784 taps x 2 = 3.7e13 flops; two cores retiring two 16-lane
# float32 FMAs per cycle at 6 GHz (beyond any current CPU) do 7.7e11 flop/s: over 45 s.
# max_pool2d compares 8 planes x 1025^2 outputs x 1024^2 taps = 8.8e12 float64 values, each
# loaded once per output vector: two cores loading two 8-lane vectors per cycle at 6 GHz need
# over 45 s. The inputs are broadcast views (any strides are accepted): little memory, and the
# outputs' pages are only touched where items ran.
INTERRUPT_CHILD = """
import signal, sys, traceback
import numpy as np
import fastconv
from fastconv import reference

signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores SIGINT
fastconv.set_num_threads(2)
rng = np.random.default_rng(0)
{setup}
before = check()
print("started", flush=True)
try:
    long_call()
except KeyboardInterrupt as exc:
    frames = traceback.extract_tb(exc.__traceback__)
    print("interrupted in", frames[-1].filename.rsplit("/", 1)[-1], frames[-1].name, flush=True)
else:
    print("finished", flush=True)
after = check()
assert np.array_equal(before, after), "a call after the interruption differs"
print("same result after", flush=True)
"""

CONV_SETUP = """
x = np.broadcast_to(np.ones((1, 256, 96, 96), np.float32), (1000, 256, 96, 96))
w = np.ones((16, 256, 33, 33), np.float32)
def long_call():
    fastconv.conv2d(x, w, algorithm="direct")
xs = rng.standard_normal((3, 8, 20, 20)).astype(np.float32)
ws = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
def check():
    from conv_helpers import check_forward, conv_case  # the tests folder is the working dir
    out = fastconv.conv2d(xs, ws, padding=1, algorithm="direct")
    check_forward(conv_case(xs, ws, padding=1), out)
    return out
"""

POOL_SETUP = """
x = np.broadcast_to(np.ones((1, 1, 2048, 2048)), (1, 8, 2048, 2048))
def long_call():
    fastconv.max_pool2d(x, 1024, stride=1)
xs = rng.standard_normal((2, 3, 64, 64))
def check():
    out = fastconv.max_pool2d(xs, 3, stride=2, padding=1)
    np.testing.assert_array_equal(out, reference.max_pool2d(xs, 3, stride=2, padding=1))
    return out
"""


def interrupt_child(setup, kernel_file, seconds=5):
    """Start the child, send SIGINT once its long call runs; it must stop within ``seconds``."""
    code = INTERRUPT_CHILD.format(setup=setup)
    proc = subprocess.Popen([sys.executable, "-c", code], env=child_env(), cwd=HERE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line == "started\n", line + proc.stderr.read()
        # the long call is then inside the kernel: arguments are checked in microseconds
        threading.Event().wait(1.0)
        assert proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the call went on for more than {seconds} s after Ctrl-C")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stdout + stderr
    lines = stdout.splitlines()
    # raised from inside the compiled call, not before or after it
    assert lines[0].startswith(f"interrupted in {kernel_file}"), stdout + stderr
    assert lines[1] == "same result after"


@posix_only
def test_ctrl_c_stops_a_long_conv2d():
    interrupt_child(CONV_SETUP, "_kernels.pyx")


@posix_only
def test_ctrl_c_stops_a_long_max_pool2d():
    interrupt_child(POOL_SETUP, "_pooling.pxi")


def test_calls_from_other_threads_and_short_calls_are_unaffected():
    """Signals are only handled on the main thread: a call from another thread runs as before
    (and gives the same bits)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8, 30, 30)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    want = fastconv.conv2d(x, w, algorithm="direct")
    got = []
    t = threading.Thread(target=lambda: got.append(fastconv.conv2d(x, w, algorithm="direct")))
    t.start()
    t.join()
    assert_same_bits(got[0], want)


# ------------------------------------------------------------------------------ failures
@pytest.mark.parametrize("item", [0, 5])
def test_a_failing_item_fails_the_call(item):
    """An item that runs out of memory makes the call raise MemoryError whichever thread ran it
    (the flag used to be per thread, and only the one of the thread that ran the last item
    counted), and the next call is right."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 8, 32, 32)).astype(np.float32)  # 8 images, 64 planes: > 5 items
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    with num_threads(2):
        want = fastconv.conv2d(x, w), fastconv.max_pool2d(x, 2)
        _testing.set_fail_item(item)
        try:
            for _ in range(10):
                for call in (lambda: fastconv.conv2d(x, w), lambda: fastconv.max_pool2d(x, 2)):
                    with pytest.raises(MemoryError, match="out of memory"):
                        call()
        finally:
            _testing.set_fail_item(-1)
        assert_same_bits(fastconv.conv2d(x, w), want[0])
        assert_same_bits(fastconv.max_pool2d(x, 2), want[1])


# ------------------------------------------------------------------------------ flush denormals
FLUSH_BITS = (1 << 15) | (1 << 6)  # MXCSR: FTZ, DAZ
STATUS_BITS = 0x3F  # MXCSR exception flags: set by arithmetic, not part of the mode
x86_64 = pytest.mark.skipif(_testing.mxcsr() is None, reason="no MXCSR (not x86-64)")


@pytest.fixture
def flushing():
    """Turn flushing on for the test; off again after it, whatever happens."""
    assert fastconv.set_flush_denormal(True)
    try:
        yield
    finally:
        fastconv.set_flush_denormal(False)


def tiny(dtype):
    """The smallest positive normal number of dtype: a quarter of it is subnormal."""
    return np.finfo(dtype).tiny


def test_set_flush_denormal_api():
    assert fastconv.set_flush_denormal is fastconv.functional.set_flush_denormal
    assert fastconv.get_flush_denormal is fastconv.functional.get_flush_denormal
    assert fastconv.get_flush_denormal() is False
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match="flag must be a bool"):
            fastconv.set_flush_denormal(bad)
    assert fastconv.get_flush_denormal() is False
    supported = fastconv.set_flush_denormal(np.True_)
    try:
        assert fastconv.get_flush_denormal() is supported
        assert supported is (_testing.mxcsr() is not None)
    finally:
        assert fastconv.set_flush_denormal(False) is supported
    assert fastconv.get_flush_denormal() is False


@x86_64
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
def test_conv2d_forward_flushes_subnormals(isa, dtype):
    t = tiny(dtype)
    x = np.full((2, 3, 6, 6), t / 4, dtype)   # subnormal inputs
    x[1] = t                                   # normal inputs, subnormal products (t * 0.25)
    w = np.full((4, 3, 1, 1), 0.25, dtype)
    w[:, 1:] = 0
    exact = reference.conv2d(x, w)
    assert exact[0].min() > 0 and exact[1].min() > 0 and exact.max() < t  # all subnormal
    with using_isa(isa), num_threads(2):
        np.testing.assert_array_equal(fastconv.conv2d(x, w), exact)
        fastconv.set_flush_denormal(True)
        try:
            flushed = fastconv.conv2d(x, w)
        finally:
            fastconv.set_flush_denormal(False)
        np.testing.assert_array_equal(fastconv.conv2d(x, w), exact)  # off again: exact again
    np.testing.assert_array_equal(flushed, np.zeros_like(exact))


@x86_64
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_backward_pass_flushes_subnormals(dtype):
    t = tiny(dtype)
    x = np.ones((2, 3, 5, 5), dtype)
    w = np.ones((4, 3, 2, 2), dtype)
    gy = np.full((2, 4, 4, 4), t / 64, dtype)  # sums of up to 32 of them stay subnormal
    exact = reference.conv2d_backward(gy, x, w)
    for g in exact:
        assert 0 < g.min() and g.max() < t
    with num_threads(2):
        for got, want in zip(fastconv.conv2d_backward(gy, x, w), exact):
            np.testing.assert_array_equal(got, want)
        fastconv.set_flush_denormal(True)
        try:
            flushed = fastconv.conv2d_backward(gy, x, w)
        finally:
            fastconv.set_flush_denormal(False)
    for g in flushed:
        np.testing.assert_array_equal(g, np.zeros_like(g))


@x86_64
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_honours_the_flush_setting(dtype, flushing):
    t = tiny(dtype)
    x = np.full((2, 3, 8, 8), t / 4, dtype)
    with num_threads(2):
        np.testing.assert_array_equal(fastconv.avg_pool2d(x, 2), np.zeros((2, 3, 4, 4), dtype))
        gi = fastconv.avg_pool2d_backward(np.full((2, 3, 4, 4), t / 4, dtype), x.shape, 2)
        np.testing.assert_array_equal(gi, np.zeros_like(x))
        # max: a subnormal compares as zero (0 stays the first maximum), but a selected value is
        # returned as it is; the backward adds the gradient, flushed
        row = np.array([[[[0, t / 4, t / 2, 0]]]], dtype)
        out, idx = fastconv.max_pool2d(row, (1, 2), return_indices=True)
        np.testing.assert_array_equal(out, np.array([[[[0, t / 2]]]], dtype))
        np.testing.assert_array_equal(idx, [[[[0, 2]]]])
        g = fastconv.max_pool2d_backward(np.full(out.shape, t / 4, dtype), idx, row.shape)
        np.testing.assert_array_equal(g, np.zeros_like(row))
    fastconv.set_flush_denormal(False)
    out, idx = fastconv.max_pool2d(row, (1, 2), return_indices=True)
    np.testing.assert_array_equal(idx, [[[[1, 2]]]])
    np.testing.assert_array_equal(fastconv.avg_pool2d(x, 2), np.full((2, 3, 4, 4), t / 4, dtype))


@x86_64
@pytest.mark.parametrize("flush", [False, True])
def test_mxcsr_of_the_caller_and_the_workers_is_restored(flush):
    """The caller's and the persisting OpenMP workers' floating-point mode is unchanged after
    calls of every kind, whichever the setting (only the sticky exception flags may change)."""
    x = np.random.default_rng(2).standard_normal((4, 8, 40, 40)).astype(np.float32)
    w = np.ones((8, 8, 3, 3), np.float32)
    with num_threads(2):
        fastconv.conv2d(x, w)  # the team exists
        caller = _testing.mxcsr()
        workers = _testing.threads_mxcsr()
        assert not caller & FLUSH_BITS and not any(c & FLUSH_BITS for c in workers)
        fastconv.set_flush_denormal(flush)
        try:
            y = fastconv.conv2d(x, w, padding=1)
            fastconv.conv2d_backward(y, x, w, padding=1)
            out, idx = fastconv.max_pool2d(y, 2, return_indices=True)
            fastconv.max_pool2d_backward(out, idx, y.shape)
            fastconv.avg_pool2d_backward(fastconv.avg_pool2d(y, 2), y.shape, 2)
        finally:
            fastconv.set_flush_denormal(False)
        assert _testing.mxcsr() & ~STATUS_BITS == caller & ~STATUS_BITS
        assert [c & ~STATUS_BITS for c in _testing.threads_mxcsr()] == \
               [c & ~STATUS_BITS for c in workers]


@x86_64
def test_python_arithmetic_and_other_threads_are_unaffected(flushing):
    """Subnormal Python and NumPy arithmetic stays exact in the caller after a flushing call and
    in another thread while the calls run."""
    x = np.full((2, 4, 32, 32), tiny(np.float32) / 4, np.float32)
    w = np.ones((4, 4, 3, 3), np.float32)
    sub = np.float32(1e-40)
    want = (0, 5e-324, sub * 2)  # as computed before any flushing call
    assert want[2] != 0
    seen, stop = [], threading.Event()

    def other_thread():
        while not stop.is_set():
            seen.append((_testing.mxcsr() & FLUSH_BITS, 5e-324 * 1.0, sub * 2))

    t = threading.Thread(target=other_thread)
    t.start()
    try:
        with num_threads(2):
            for _ in range(50):
                assert fastconv.conv2d(x, w).max() == 0
    finally:
        stop.set()
        t.join()
    assert seen and all(s == want for s in seen)
    assert (_testing.mxcsr() & FLUSH_BITS, 5e-324 * 1.0, sub * 2) == want


@x86_64
def test_only_fastconvs_setting_decides():
    """A caller thread whose own MXCSR flushes (set by torch here) gets exact results while
    fastconv's setting is off, and keeps its own mode afterwards."""
    torch = pytest.importorskip("torch")
    x = np.full((1, 2, 4, 4), tiny(np.float32) / 4, np.float32)
    w = np.ones((2, 2, 1, 1), np.float32)
    assert torch.set_flush_denormal(True)
    try:
        assert _testing.mxcsr() & FLUSH_BITS == FLUSH_BITS
        with num_threads(1):
            np.testing.assert_array_equal(fastconv.conv2d(x, w), reference.conv2d(x, w))
        assert _testing.mxcsr() & FLUSH_BITS == FLUSH_BITS
    finally:
        torch.set_flush_denormal(False)


@x86_64
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flushing_results_are_the_same_for_any_thread_count(dtype, flushing):
    rng = np.random.default_rng(3)
    t = tiny(dtype)
    # a mix of normal and subnormal values and products
    x = (rng.standard_normal((3, 6, 17, 17)) * t * rng.choice([1e-3, 1, 1e3], (3, 6, 17, 17)))
    x = x.astype(dtype)
    w = rng.standard_normal((5, 6, 3, 3)).astype(dtype)
    results = []
    for n in (1, 2, 3):
        with num_threads(n):
            results.append((fastconv.conv2d(x, w, padding=1),
                            *fastconv.conv2d_backward(np.ones((3, 5, 17, 17), dtype) * t, x, w,
                                                      padding=1),
                            fastconv.avg_pool2d(x, 3, stride=2)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert_same_bits(b, a)


# ------------------------------------------------------------------------------ thread count
@needs_openmp
def test_huge_thread_count_is_capped_not_a_crash():
    """set_num_threads(100000) used to crash the first kernel (libgomp's stack overflowed)."""
    out = run_script("""
        import os
        import numpy as np
        import fastconv
        from fastconv import reference
        cap = fastconv.max_num_threads()
        assert 1 <= cap <= max(1024, os.cpu_count()), cap
        fastconv.set_num_threads(100000)
        assert fastconv.get_num_threads() == cap
        fastconv.set_num_threads(2 ** 70)  # beyond a C int: capped too
        assert fastconv.get_num_threads() == cap
        x = np.random.default_rng(0).standard_normal((4, 16, 128, 128)).astype(np.float32)
        np.testing.assert_array_equal(fastconv.max_pool2d(x, 2), reference.max_pool2d(x, 2))
        print("ok")
    """)
    assert out == "ok\n"


@needs_openmp
def test_huge_omp_num_threads_is_capped():
    out = run_script("""
        import numpy as np
        import fastconv
        assert fastconv.get_num_threads() == fastconv.max_num_threads()
        x = np.ones((4, 16, 128, 128), np.float32)
        assert fastconv.max_pool2d(x, 2).min() == 1
        print("ok")
    """, OMP_NUM_THREADS="100000")
    assert out == "ok\n"


@needs_openmp
def test_thread_limit_caps_the_count():
    out = run_script("""
        import fastconv
        assert fastconv.max_num_threads() == 3
        fastconv.set_num_threads(8)
        print(fastconv.get_num_threads())
    """, OMP_THREAD_LIMIT="3")
    assert out == "3\n"


@needs_openmp
def test_fewer_threads_than_asked_give_the_same_bits():
    """With OMP_DYNAMIC the OpenMP runtime may give a team fewer threads than asked for (here on
    a machine with fewer cores than that): the kernels make no assumption on the team size."""
    out = run_script("""
        import numpy as np
        import fastconv
        from fastconv import _testing
        _testing.set_parallel_grain(0)
        _testing.set_serial_bytes(0)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 6, 19, 19))
        w = rng.standard_normal((8, 6, 3, 3))
        def run():
            y = fastconv.conv2d(x, w, padding=1)
            return (y, *fastconv.conv2d_backward(y, x, w, padding=1),
                    *fastconv.max_pool2d(y, 3, return_indices=True), fastconv.avg_pool2d(y, 2))
        fastconv.set_num_threads(1)
        want = run()
        fastconv.set_num_threads(64)
        for a, b in zip(run(), want):
            np.testing.assert_array_equal(a, b)
        print("ok")
    """, OMP_DYNAMIC="true")
    assert out == "ok\n"


# ------------------------------------------------------------------------------ CPU features
def _preprocess(source):
    """src/fc_common.h's macros expanded in ``source`` by the C preprocessor (None without one)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    proc = subprocess.run([cc, "-E", "-P", f"-I{SRC}", "-x", "c", "-"],
                          input=f'#include "fc_common.h"\n{source}\n', capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(not SRC.is_dir(), reason="needs the source tree")
def test_each_path_checks_every_feature_it_is_compiled_for():
    """Each path's code is compiled for exactly the features its run-time check tests: no target
    attribute in src/ spells its own feature string, and the ones built from the list of paths
    (FC_TARGET_AVX2, FC_TARGET_AVX512 in src/fc_common.h) name the features of isa_features."""
    for path in sorted(SRC.glob("*.h")) + sorted(SRC.glob("*.pyx")) + sorted(SRC.glob("*.pxi")):
        spelled = re.findall(r'target\("[^"]*"\)', path.read_text())
        assert not spelled, f"{path.name}: {spelled} is not built from FC_ISA_LIST"
    assert _kernels.isa_features("generic") == ()
    out = _preprocess("avx2 FC_TARGET_AVX2\navx512 FC_TARGET_AVX512")
    if out is None or "FC_TARGET_AVX2" in out:
        pytest.skip("no C preprocessor, or no x86-64 paths")
    for line in out.splitlines():
        level, _, attribute = line.partition(" ")
        if level in ("avx2", "avx512"):
            target = "".join(re.findall(r'"([^"]*)"', attribute)).split(",")
            assert target[0] == "sse2" and len(target) == len(set(target)), attribute
            assert set(target[1:]) == set(_kernels.isa_features(level)), (level, attribute)


def _cpuinfo_flags():
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(m.group(1).split()) if m else None


@pytest.mark.skipif(_cpuinfo_flags() is None, reason="needs /proc/cpuinfo")
def test_best_path_agrees_with_proc_cpuinfo():
    """The best path the kernels accept is the highest whose every feature /proc/cpuinfo lists
    (the kernel removes a flag whose registers the OS does not save, as the runtime check does)."""
    flags = _cpuinfo_flags()
    best = SUPPORTED_ISAS[-1]
    names = list(_kernels.ISA_NAMES)
    for level in names:
        has_all = set(_kernels.isa_features(level)) <= flags
        if names.index(level) <= names.index(best):
            assert has_all, f"{level} chosen, but /proc/cpuinfo lacks " \
                            f"{sorted(set(_kernels.isa_features(level)) - flags)}"
        else:
            assert not has_all, f"/proc/cpuinfo lists every feature of {level}, yet {best} chosen"
