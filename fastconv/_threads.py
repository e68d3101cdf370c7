"""The number of OpenMP threads the kernels use, and what happens to it across ``fork``.

The kernels run on the OpenMP runtime they were linked with (libgomp with GCC) and take their
thread count from it (``omp_get_max_threads``), so every tool that drives that runtime works:
``OMP_NUM_THREADS``, :func:`set_num_threads`, and ``threadpoolctl.threadpool_limits(n,
user_api="openmp")``. Like any OpenMP setting, a limit belongs to the Python thread that set it.

Fork: libgomp keeps the worker threads of a parallel region alive (docked at a barrier) for the
next region, and it has no fork handler. A child created by ``fork()`` (multiprocessing's 'fork'
start method) inherits that pool's bookkeeping but not its threads, so the child's first parallel
region waits forever for workers that do not exist (GCC bug 60035, never fixed). The pool belongs
to the thread that ran the region, and the forking thread is the only thread of the child. So in
a forked child fastconv sets that thread to one OpenMP thread (``os.register_at_fork``): a team of
one never touches the pool, kernels run and give the same bits (results never depend on the thread
count). Threads that the child starts later have no pool yet and use the default count. Do not
raise the count again on the forking thread of a child: if the parent had run a multi-threaded
kernel on it, the next kernel hangs. For multi-threaded workers use the 'spawn' or 'forkserver'
start method.
"""
import os

from . import _kernels
from ._validation import as_int


def set_num_threads(n):
    """Use ``n`` (>= 1) OpenMP threads in every fastconv kernel from now on.

    Results do not depend on it: every kernel is bitwise identical for any thread count.
    """
    n = as_int(n, "n")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _kernels.set_num_threads(n)


def get_num_threads():
    """The number of OpenMP threads the kernels will use (default: OpenMP's, i.e. OMP_NUM_THREADS
    or the number of cores)."""
    return _kernels.get_num_threads()


def _single_threaded_after_fork():
    _kernels.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_single_threaded_after_fork)
