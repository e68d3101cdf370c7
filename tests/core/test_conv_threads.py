"""Threads: bitwise determinism across OpenMP thread counts, the GIL released during the kernels,
and index arithmetic past 2**31 elements."""
import mmap
import os
import sys
import threading
import time

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import fastconv
from fastconv import _kernels
from conv_helpers import SUPPORTED_ISAS, assert_same_bits, num_threads, run_isolated, using_isa

# Shapes with enough work items for every thread: several images (forward, grad_input items are
# per image / group / pixel block), a single large image (items are pixel blocks only), groups,
# depthwise, strides and dilation (grad_weight reduces batch chunks in a fixed order).
DETERMINISM_CASES = {
    "dense": ((4, 16, 20, 20), (24, 16, 3, 3), dict(padding=1)),
    "one-image": ((1, 8, 40, 40), (12, 8, 3, 3), dict(padding=1)),
    "grouped-stride2": ((3, 12, 21, 19), (18, 6, 3, 5), dict(stride=2, padding=(1, 2), groups=2)),
    "depthwise": ((2, 16, 24, 24), (16, 1, 3, 3), dict(padding="same", groups=16)),
    "dilated-same": ((5, 6, 18, 22), (10, 6, 3, 2), dict(padding="same", dilation=(2, 3))),
    "big-batch": ((16, 8, 12, 12), (8, 8, 3, 3), dict(stride=(1, 2))),
}


def _all_passes(x, w, b, kw):
    out = fastconv.conv2d(x, w, b, **kw)
    gy = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    return (out,) + fastconv.conv2d_backward(gy, x, w, **kw)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(DETERMINISM_CASES))
def test_bitwise_identical_for_any_thread_count(name, dtype, isa):
    xs, ws, kw = DETERMINISM_CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    results = {}
    with using_isa(isa):
        for n in (1, 2, 3):
            with num_threads(n):
                assert fastconv.get_num_threads() == n
                results[n] = _all_passes(x, w, b, kw)
    for n in (2, 3):
        for what, one, many in zip(["out", "grad_input", "grad_weight", "grad_bias"],
                                   results[1], results[n]):
            assert_same_bits(many, one, f"{what}: {n} threads against 1")


def test_set_num_threads_round_trip():
    with num_threads(1):
        assert fastconv.get_num_threads() == 1
        with num_threads(2):
            assert fastconv.get_num_threads() == 2
        assert fastconv.get_num_threads() == 1


def test_openmp_is_enabled():
    """The build here has a compiler with OpenMP: a serial fallback would go unnoticed otherwise."""
    assert _kernels.openmp_enabled()


def test_set_num_threads_applies_to_every_python_thread():
    """'Use n threads in every fastconv kernel from now on': also in kernels called from another
    Python thread (a data-loader thread, a thread pool)."""
    seen = []
    with num_threads(1):
        t = threading.Thread(target=lambda: seen.append(fastconv.get_num_threads()))
        t.start()
        t.join()
    assert seen == [1]


def test_concurrent_calls_from_python_threads():
    """With the GIL released, several Python threads run kernels at once (each with its own
    OpenMP team and per-thread workspaces): every result must equal the one computed alone."""
    rng = np.random.default_rng(3)
    jobs = []
    for i, (xs, ws, kw) in enumerate(DETERMINISM_CASES.values()):
        dtype = (np.float32, np.float64)[i % 2]
        x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        jobs.append((x, w, b, kw))
    alone = [_all_passes(*job) for job in jobs]
    results, errors = {}, []

    def worker(t):
        try:
            fastconv.set_num_threads(1 + t % 2)
            for rep in range(3):
                for j in range(len(jobs)):
                    k = (j + t) % len(jobs)  # each thread in another order
                    results[t, rep, k] = _all_passes(*jobs[k])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for (t, rep, k), got in results.items():
        for one, other in zip(alone[k], got):
            assert_same_bits(other, one, f"job {k} in thread {t}")


# ------------------------------------------------------------------------------ the GIL
def _long_problem(dtype=np.float64):
    """A conv2d of some tens of milliseconds on one core: long enough for a waiting thread to
    wake up inside it, whatever the machine's load."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 48, 48)).astype(dtype)
    w = rng.standard_normal((32, 32, 5, 5)).astype(dtype)
    return x, w


@pytest.mark.parametrize("pass_", ["forward", "backward"])
def test_gil_is_released_inside_the_kernels(pass_):
    """While one Python thread is inside a kernel, another Python thread runs.

    No clock involved: with the interpreter's switch interval set far above the test's length,
    a thread waiting for the GIL gets it only when the holder releases it of its own accord. The
    kernel thread announces itself (an Event) and calls the kernel; the main thread, woken by
    the Event, needs the GIL to go on, which it can get only when the kernel releases it; it then
    marks that it ran, and notes where the kernel thread was. When the kernel returns, the mark
    must be there: had the kernel held the GIL, the main thread could not have run before it
    returned. (The timings of the same, and of two threads overlapping, are in
    bench/thread_scaling.py.)"""
    x, w = _long_problem()
    gy = np.ones((4, 32, 48, 48)) if pass_ == "backward" else None
    if pass_ == "forward":
        call = lambda: fastconv.conv2d(x, w, padding=2)  # noqa: E731
    else:
        call = lambda: fastconv.conv2d_backward(gy, x, w, padding=2,  # noqa: E731
                                                needs=(True, False, False))
    call()  # warm-up: the workspaces of this shape exist before the measured call
    # A kernel that holds the GIL fails every attempt. One that releases it passes unless the OS
    # did not wake the main thread during the whole kernel (tens of ms), on a very busy machine:
    # a few attempts make that as good as impossible.
    # The main thread may also wake while NumPy, which releases the GIL in its own loops, checks
    # the arguments (a finiteness pass over the weight): it then gives the GIL back and waits for
    # the next release.
    package = os.path.dirname(fastconv.__file__)
    wakes = []
    for _ in range(5):
        wakes.append(_main_thread_runs_during(call, package))
        if wakes[-1] and wakes[-1][-1].startswith(package):
            break
    assert any(wakes), "the GIL was held for the whole kernel call"
    # the GIL was released inside fastconv (not, say, in the Event machinery or in NumPy)
    assert wakes[-1] and wakes[-1][-1].startswith(package), wakes


def _main_thread_runs_during(call, package):
    """Run ``call`` in another Python thread (one OpenMP thread) with a switch interval of a
    minute; the files of that thread's innermost Python frame at each moment this (main) thread
    got the GIL back before ``call`` returned. After a wake-up outside ``package`` (NumPy checking
    the arguments releases the GIL in its loops too), this thread gives the GIL back and waits
    for the next release: the list ends at the first wake-up inside ``package``."""
    entered, marks, seen_after = threading.Event(), [], []

    def kernel_thread():
        entered.set()
        call()
        seen_after.append(list(marks))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    try:
        with num_threads(1):
            t = threading.Thread(target=kernel_thread)
            t.start()
            entered.wait()
            while t.is_alive():
                frame = sys._current_frames().get(t.ident)  # where the kernel thread is now
                marks.append(frame.f_code.co_filename if frame is not None else "")
                if marks[-1].startswith(package):
                    break
                time.sleep(0.0005)  # the GIL back to the kernel thread until its next release
            t.join()
    finally:
        sys.setswitchinterval(previous)
    return seen_after[0]


# ------------------------------------------------------------------------------ large offsets
OFFSET = 2**31 + 4099  # elements: past the int32 range in every dtype


def _sparse_buffer(nelem, dtype):
    """A zero-filled array of ``nelem`` elements backed by virtual memory only (MAP_NORESERVE):
    pages cost memory only once written, so a 50 GB buffer with a few planes used is cheap."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
    try:
        mm = mmap.mmap(-1, nelem * np.dtype(dtype).itemsize, flags=flags)
    except (OSError, OverflowError, ValueError) as exc:
        pytest.skip(f"cannot map a sparse {nelem}-element buffer here: {exc}")
    return np.frombuffer(mm, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", ["batch", "channel", "row", "column"])
def test_element_offsets_beyond_int32(dtype, axis):
    """Input views whose element offsets exceed 2**31 along one axis, so that 32-bit index
    arithmetic would wrap. (An array of more than 2**31 elements that is actually filled does
    not fit in this machine's memory next to the other jobs; the output and grad_input, always
    contiguous and allocated by fastconv, share the same Py_ssize_t arithmetic.)"""
    shape = (2, 2, 5, 6)
    itemsize = np.dtype(dtype).itemsize
    # element strides: the last index along one axis lies OFFSET elements in (past 2**31); the
    # other axes interleave below that step without overlapping. The buffer spans ~OFFSET
    # elements (8.6 GB float32, 17 GB float64 of address space, a few pages of memory).
    big = lambda n: -(-OFFSET // (n - 1))
    base = {"batch": (big(2), 30, 6, 1), "channel": (60, big(2), 6, 1),
            "row": (1000, 7, big(5), 1), "column": (1000, 100, 7, big(6))}[axis]
    extent = sum((n - 1) * s for n, s in zip(shape, base)) + 1
    buf = _sparse_buffer(extent, dtype)
    x = as_strided(buf, shape=shape, strides=tuple(s * itemsize for s in base))
    rng = np.random.default_rng(0)
    x[...] = rng.standard_normal(shape)
    compact = np.ascontiguousarray(x)
    w = rng.standard_normal((3, 2, 3, 2)).astype(dtype)
    assert_same_bits(fastconv.conv2d(x, w, padding=1), fastconv.conv2d(compact, w, padding=1))
    gy = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    assert_same_bits(fastconv.conv2d_backward(gy, x, w, padding=1)[1],
                     fastconv.conv2d_backward(gy, compact, w, padding=1)[1])
    flipped = x[::-1, ::-1]  # negative strides from the far end of the buffer
    assert_same_bits(fastconv.conv2d(flipped, w, padding=1),
                     fastconv.conv2d(np.ascontiguousarray(flipped), w, padding=1))
    del x, flipped, buf


def test_workspaces_of_exited_threads_are_freed():
    """Each thread keeps its workspace between calls; a thread that exits must give it back (a
    program that runs kernels from many short-lived threads must not grow without bound)."""
    x = np.ones((4, 16, 32, 32), np.float32)
    w = np.ones((16, 16, 3, 3), np.float32)
    with num_threads(1):
        fastconv.conv2d(x, w, padding=1)
        held_before, _ = _kernels.workspace_bytes()
        for _ in range(12):
            t = threading.Thread(target=lambda: fastconv.conv2d_backward(x, x, w, padding=1))
            t.start()
            t.join()
        held_after, _ = _kernels.workspace_bytes()
    per_thread = held_before  # at least what one conv2d of this size needs
    assert per_thread > 0
    assert held_after <= held_before + per_thread, (held_before, held_after)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_python_thread_with_a_small_stack(threads):
    """The kernels keep their buffers off the stack: a Python thread started with a 64 KiB stack
    runs every pass (a 65 KB packing buffer on the stack used to overflow it: a segfault), with
    the numbers of a normal thread. Panels that need packing (14-wide outputs) included. The
    reference runs in the main thread: OpenBLAS's own kernels need more stack than that."""
    proc = run_isolated(
        "import threading, numpy as np, fastconv\n"
        "from fastconv import functional as F\n"
        "from conv_helpers import assert_same_bits\n"
        f"fastconv.set_num_threads({threads})\n"
        "def passes():\n"
        "    rng, out = np.random.default_rng(0), []\n"
        "    for dt in (np.float32, np.float64):\n"
        "        x = rng.standard_normal((3, 20, 14, 14)).astype(dt)\n"
        "        w = rng.standard_normal((16, 20, 3, 3)).astype(dt)\n"
        "        y = F.conv2d(x, w, padding=1)\n"
        "        out += [y, *F.conv2d_backward(np.ones_like(y), x, w, padding=1)]\n"
        "        p, i = F.max_pool2d(x, 3, 2, 1, return_indices=True)\n"
        "        out += [p, i, F.max_pool2d_backward(np.ones_like(p), i, x.shape)]\n"
        "        a = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)\n"
        "        out += [a, F.avg_pool2d_backward(np.ones_like(a), x.shape, 3, 1, 1,\n"
        "                                         count_include_pad=False)]\n"
        "    return out\n"
        "want = passes()\n"
        "threading.stack_size(64 * 1024)\n"
        "got = []\n"
        "t = threading.Thread(target=lambda: got.append(passes()))\n"
        "t.start(); t.join()\n"
        "assert len(got) == 1 and len(got[0]) == len(want)\n"
        "for g, e in zip(got[0], want):\n"
        "    assert_same_bits(g, e)\n")
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr[-800:]}"
