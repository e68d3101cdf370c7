"""The number of OpenMP threads the kernels use, and what happens to it across ``fork``.

The kernels run on the OpenMP runtime they were linked with (libgomp with GCC). Their thread
count is :func:`set_num_threads`'s process-wide value, capped by the calling thread's OpenMP limit
(``omp_get_max_threads``), so every tool that drives that runtime works: ``OMP_NUM_THREADS`` and
``threadpoolctl.threadpool_limits(n, user_api="openmp")`` (which, like any OpenMP setting, apply
to the Python thread that set them). Every source is capped at :func:`max_num_threads`.

Fork: libgomp keeps the worker threads of a parallel region alive (docked at a barrier) for the
next region, and it has no fork handler. A child created by ``fork()`` (multiprocessing's 'fork'
start method) inherits that pool's bookkeeping but not its threads, so the child's first parallel
region waits forever for workers that do not exist (GCC bug 60035, never fixed). The pool belongs
to the thread that ran the region, and the forking thread is the only thread of the child. So a
forked child runs fastconv on one thread (``os.register_at_fork`` calls ``set_num_threads(1)``
there): a team of one never touches the stale pool, and results are the same bits (they never
depend on the thread count). The compiled kernels also enforce it (a ``pthread_atfork`` handler
in src/fc_common.h): on the forking thread of a child they always run on one thread, whatever
``threadpool_limits`` or ``set_num_threads`` say; ``set_num_threads(n)`` there is ignored with a
RuntimeWarning. From a thread the child starts itself (no stale pool), ``set_num_threads(n)``
works. For multi-threaded worker processes, prefer the 'spawn' or 'forkserver' start method.
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Optional

from .. import _kernels
from .args import as_int

# In a forked child: the identifier of the thread that forked (it holds libgomp's stale pool).
_forked_thread: Optional[int] = None


def set_num_threads(n: int) -> None:
    """Use ``n`` OpenMP threads in every fastconv kernel from now on.

    Args:
        n: int >= 1. Counts above :func:`max_num_threads` (1024, or the number of processors if
            that is more, and at most ``OMP_THREAD_LIMIT``) use that maximum.

    Results do not depend on it: every kernel is bitwise identical for any thread count.
    (``torch.set_num_threads`` takes any positive count; 100000 crashes it in the OpenMP
    runtime, which is why fastconv caps the count, also one from ``OMP_NUM_THREADS``.)
    """
    n = as_int(n, "n")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    n = min(n, max_num_threads())
    if n > 1 and _forked_thread is not None and threading.get_ident() == _forked_thread:
        warnings.warn(
            f"fastconv.set_num_threads({n}) ignored: this thread forked this process, and libgomp "
            "cannot run a multi-threaded region on it again (it would hang). Call it from a new "
            "thread, or start worker processes with 'spawn' or 'forkserver'.",
            RuntimeWarning, stacklevel=2,
        )
        return
    _kernels.set_num_threads(n)


def max_num_threads() -> int:
    """The most threads a kernel uses: 1024, or the number of processors if that is more, and
    never more than OpenMP's thread limit (``OMP_THREAD_LIMIT``); 1 without OpenMP.

    The OpenMP runtime reserves stack space on the calling thread for every thread it starts and
    ends the process when the system refuses one, so larger requests are capped to this.
    """
    return _kernels.max_num_threads()


def get_num_threads() -> int:
    """The number of OpenMP threads the kernels will use (default: OpenMP's, i.e. OMP_NUM_THREADS
    or the number of cores; at most :func:`max_num_threads`)."""
    return _kernels.get_num_threads()


def _single_threaded_after_fork() -> None:
    global _forked_thread
    _forked_thread = threading.get_ident()
    _kernels.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_single_threaded_after_fork)
