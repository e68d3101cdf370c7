"""Giving back the memory the kernels keep between calls."""
from .. import _kernels


def release_memory() -> int:
    """Free the memory fastconv keeps for reuse between calls.

    The kernels keep, per thread, a few workspaces for the next call (at most 48 MiB per thread
    after any call) and a cache of freed large output arrays (up to 512 MiB). Both come back by
    themselves on the next calls; call this to return them to the operating system now, e.g.
    after a call on a very large image. It empties the output cache and frees the workspaces of
    every thread, idle OpenMP worker threads included. A workspace in use by a call running in
    another Python thread is left to that call and freed at its thread's next use of it.

    Returns:
        int: the number of bytes freed.
    """
    return _kernels.release_memory()
