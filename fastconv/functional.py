"""NumPy counterparts of ``torch.nn.functional``: same names, same arguments, same numbers.

Arrays are NCHW (or unbatched CHW), float32 or float64 (or bfloat16: see
:func:`fastconv.set_precision`); the convolution is a cross-correlation,
as in every deep-learning framework. Each ``*_backward`` returns the gradients that autograd would.
"""
from ._core.activations import log_softmax, softmax
from ._core.adaptive_pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward,
                                  adaptive_max_pool2d, adaptive_max_pool2d_backward)
from ._core.bf16 import default_precision, get_precision, set_precision
from ._core.conv import conv2d, conv2d_backward
from ._core.denormal import get_flush_denormal, set_flush_denormal
from ._core.memory import release_memory
from ._core.pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from ._core.threads import get_num_threads, max_num_threads, set_num_threads
from ._core.transpose import conv_transpose2d, conv_transpose2d_backward

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "get_num_threads",
    "set_num_threads",
    "max_num_threads",
    "get_flush_denormal",
    "set_flush_denormal",
    "release_memory",
    "set_precision",
    "get_precision",
    "default_precision",
    "softmax",
    "log_softmax",
]
