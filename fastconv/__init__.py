"""fastconv: fast, exact CNN kernels for NumPy (design notes: see the module docstring of
fastconv._design once written)."""
from .functional import (
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    get_num_threads,
    max_pool2d,
    max_pool2d_backward,
    set_num_threads,
)

__version__ = "0.1.0"

__all__ = [
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "get_num_threads",
    "set_num_threads",
]
