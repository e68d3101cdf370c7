"""The number of OpenMP threads the kernels use."""
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
