"""Flushing subnormal ("denormal") numbers to zero in the kernels, as torch.set_flush_denormal.

On x86-64 an arithmetic operation with a subnormal operand or result can take a hundred times
longer than a normal one (fastconv measured conv2d forward 180x, backward 75x, avg_pool2d 6x
slower on subnormal data). The CPU's FTZ ("flush to zero": subnormal results become 0) and DAZ
("denormals are zero": subnormal inputs are read as 0) bits of the MXCSR register remove that
cost. They are per thread: each kernel thread sets them as :func:`set_flush_denormal` asks when
a call starts and puts its own back when the call ends (src/fc_common.h, fc_run), so the caller's
and the OpenMP workers' registers, and every other Python thread, are left as they were.
"""
from .. import _kernels
from .args import as_bool


def set_flush_denormal(flag: bool) -> bool:
    """Flush subnormal numbers to zero in every later fastconv kernel call (from any thread).

    Args:
        flag: bool. ``True`` turns flushing on, ``False`` (the default state) off.

    Returns:
        ``True`` if the CPU can flush (x86-64 with SSE's FTZ and DAZ), ``False`` otherwise: then
        the call is a no-op and flushing stays off, as with ``torch.set_flush_denormal``.

    With flushing on, subnormal inputs are read as zero and subnormal results (of additions,
    products, averages) become zero: results then differ from the exact ones, and from torch's
    unless torch flushes too (``torch.set_flush_denormal(True)``, which only sets the calling
    thread). Max pooling compares a subnormal as zero but returns the selected element's value
    unchanged. Results stay bitwise identical for any thread count and SIMD path, flushing or not:
    every kernel thread is set to fastconv's mode for the call, whatever other code set in it.
    Only fastconv's compiled kernels are affected, never NumPy or Python arithmetic (nor the
    convolutions that ``algorithm='auto'`` sends to the NumPy FFT path).
    """
    return _kernels.set_flush_denormal(as_bool(flag, "flag"))


def get_flush_denormal() -> bool:
    """Whether the kernels flush subnormal numbers to zero (see :func:`set_flush_denormal`)."""
    return _kernels.get_flush_denormal()
