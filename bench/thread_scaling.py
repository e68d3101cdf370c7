"""Python threads running fastconv kernels at once: how much they overlap, and how freely another
Python thread runs while a kernel does. Wall-clock measurements, so they live here, not in the
unit tests (tests/core/test_conv_threads.py checks that the GIL is released without timing anything).

    python bench/thread_scaling.py [--repeats 5]

Prints, per attempt:

- the overlap ratio: the wall time of a large conv2d run in two Python threads at once (one
  OpenMP thread each) over that of the two calls one after the other: ~0.5 on two idle cores
  when the kernel releases the GIL, ~1 when it holds it (or when the machine gives this process
  one core's worth only). A control that is known to release the GIL (hashlib.sha256 of a large
  buffer) is timed the same way, back to back, to tell the two apart: when the control overlaps
  and conv2d does not, the kernel holds the GIL;
- the ticks of a pure-Python thread during the middle half of a long kernel (forward and
  backward): zero if the kernel held the GIL throughout, many thousand if it releases it.
"""
import argparse
import hashlib
import sys
import threading
import time

import numpy as np

import fastconv


def large_problem(dtype=np.float64):
    """A conv2d of ~0.1-0.2 s on one core (6.7 GMAC)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 64, 64, 64)).astype(dtype)
    w = rng.standard_normal((64, 64, 5, 5)).astype(dtype)
    return x, w


def in_thread(fn, *args):
    """fn(*args) in a new Python thread whose kernels use one OpenMP thread; its result."""
    result = []

    def body():
        fastconv.set_num_threads(1)
        result.append(fn(*args))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return result[0]


def overlap_ratio(work):
    """Wall time of ``work`` in two Python threads at once over that of running it twice in one
    thread; every thread uses one OpenMP thread."""

    def serial():
        t = time.perf_counter()
        work()
        work()
        return time.perf_counter() - t

    t_serial = in_thread(serial)
    barrier = threading.Barrier(2)

    def body():
        fastconv.set_num_threads(1)
        barrier.wait()
        work()

    threads = [threading.Thread(target=body) for _ in range(2)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (time.perf_counter() - t) / t_serial


def ticks_during(call):
    """(ticks of a pure-Python thread in the middle half of ``call``, the call's seconds)."""
    ticks, stop = [], threading.Event()

    def ticker():  # pure Python: it needs the GIL for every bytecode
        while not stop.is_set():
            for _ in range(50):
                pass
            ticks.append(time.perf_counter())

    def timed_call():
        t0 = time.perf_counter()
        call()
        return t0, time.perf_counter()

    in_thread(call)  # warm-up: workspaces allocated outside the timed window
    tick_thread = threading.Thread(target=ticker)
    tick_thread.start()
    try:
        t0, t1 = in_thread(timed_call)
    finally:
        stop.set()
        tick_thread.join()
    lo, hi = t0 + 0.25 * (t1 - t0), t1 - 0.25 * (t1 - t0)
    return sum(lo < t < hi for t in ticks), t1 - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="attempts of each (default 5)")
    args = parser.parse_args(argv)
    x, w = large_problem()
    gy = np.ones((16, 64, 64, 64))
    data = bytes(64 * 2**20)

    def conv():
        fastconv.conv2d(x, w, padding=2)

    def control():
        for _ in range(4):
            hashlib.sha256(data).digest()

    in_thread(conv)  # warm-up
    print("overlap of two Python threads (parallel / serial wall time; ~0.5 = full overlap)")
    for i in range(args.repeats):
        r_control, r_conv = overlap_ratio(control), overlap_ratio(conv)
        print(f"  attempt {i + 1}: control (sha256) {r_control:.2f}  conv2d {r_conv:.2f}")
    print("ticks of a pure-Python thread in the middle half of a kernel (0 = GIL held)")
    passes = {"forward": conv,
              "backward": lambda: fastconv.conv2d_backward(gy, x, w, padding=2,
                                                           needs=(True, False, False))}
    for name, call in passes.items():
        for i in range(args.repeats):
            ticks, secs = ticks_during(call)
            print(f"  {name:8s} attempt {i + 1}: {ticks} ticks during a {secs:.3f} s kernel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
