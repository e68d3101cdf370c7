"""The argument rules of pooling, shared by the compiled kernels and the layers: the input
(dtype, shape), the hyper-parameters (kernel_size, stride, padding, dilation, ceil_mode,
count_include_pad, divisor_override) and the output size, as ``torch.nn.functional`` defines them.
Plain Python; no kernel is loaded."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .args import as_bool, as_float_array, as_int, as_int64, batched, nonnegative_pair, positive_pair
from .geometry import pool_windows

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from .args import FloatArray, IntPair, Shape


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                     ceil_mode: bool) -> int:
    """torch's ``pooling_output_shape``: with ceil_mode the last window must start inside the
    input or the left padding, else it is dropped."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _empty_windows(size: int, kernel: int, stride: int, padding: int, dilation: int, out: int
                   ) -> NDArray[np.intp]:
    """Output positions (along one axis) whose dilated window holds no input element."""
    return np.flatnonzero(pool_windows(size, kernel, stride, padding, dilation, out)[1] == 0)


def check_input(input: ArrayLike, name: str = "input") -> Tuple[FloatArray, bool]:
    x = as_float_array(input, name)
    x4, unbatched = batched(x, name)
    if 0 in x4.shape[1:]:
        raise ValueError(f"{name} must have non-zero C, H and W (only N may be 0), got shape {x.shape}")
    return x4, unbatched


def check_input_shape(input_shape: Sequence[int]) -> Tuple[Shape, bool]:
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"input_shape must be a tuple of ints, got {type(input_shape).__name__}")
    shape = tuple(as_int(v, "input_shape") for v in input_shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"input_shape must be (N, C, H, W) or (C, H, W), got {shape}")
    unbatched = len(shape) == 3
    shape4 = (1,) + shape if unbatched else shape
    if shape4[0] < 0 or min(shape4[1:]) < 1:
        raise ValueError(f"input_shape must have N >= 0 and C, H, W >= 1, got {shape}")
    return shape4, unbatched


class PoolParams(NamedTuple):
    """The hyper-parameters of a pooling, validated and normalised (pairs are (height, width))."""

    kernel: IntPair
    stride: IntPair
    padding: IntPair
    dilation: IntPair
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: Optional[int]


class PoolGeometry(NamedTuple):
    """Everything a pooling kernel needs besides the arrays: the hyper-parameters (PoolParams'
    fields, in its order), then the output size."""

    kernel: IntPair
    stride: IntPair
    padding: IntPair
    dilation: IntPair
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: Optional[int]
    out_h: int
    out_w: int


def pool_params(kernel_size: object, stride: object, padding: object, dilation: object = 1,
                ceil_mode: object = False, count_include_pad: object = True,
                divisor_override: object = None) -> PoolParams:
    """The rules of the pooling hyper-parameters, which do not depend on the input: each one
    checked (TypeError/ValueError naming it) and normalised; ``stride=None`` (or an empty
    sequence) means ``kernel_size``. The layers check their arguments with this at construction."""
    kernel = positive_pair(kernel_size, "kernel_size")
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    else:
        stride = positive_pair(stride, "stride")
    padding = nonnegative_pair(padding, "padding")
    dilation = positive_pair(dilation, "dilation")
    ceil_mode = as_bool(ceil_mode, "ceil_mode")
    count_include_pad = as_bool(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        divisor_override = as_int64(divisor_override, "divisor_override")
        if divisor_override == 0:
            raise ValueError("divisor_override must not be zero")
    for p, k in zip(padding, kernel):
        if p > k // 2:
            raise ValueError(
                f"padding must be at most half of kernel_size (padding <= kernel_size // 2), "
                f"got padding={padding} and kernel_size={kernel}"
            )
    return PoolParams(kernel, stride, padding, dilation, ceil_mode, count_include_pad,
                      divisor_override)


def _check_windows(h: int, w: int, p: PoolParams, out: Sequence[int]) -> None:
    """ValueError if a max pooling window holds no input element (only padding)."""
    for axis, (n, k, s, pad, d, o) in enumerate(zip((h, w), p.kernel, p.stride, p.padding,
                                                    p.dilation, out)):
        empty = _empty_windows(n, k, s, pad, d, o)
        if empty.size:
            raise ValueError(
                f"the pooling window at output {'row' if axis == 0 else 'column'} "
                f"{int(empty[0])} holds no input element (only padding): input {h}x{w}, "
                f"kernel_size={p.kernel}, stride={p.stride}, padding={p.padding}, "
                f"dilation={p.dilation}, ceil_mode={p.ceil_mode}; torch would return -inf there"
            )


_GEOMETRIES: Dict[Any, PoolGeometry] = {}  # (shape, hyper-parameters) -> PoolGeometry
_MAX_GEOMETRIES = 1024


def _is_plain(value: object) -> bool:
    """An int, or a tuple of two ints: exact ``int`` objects (a bool hashes as an int and must
    still be refused by the checks)."""
    if type(value) is int:
        return True
    return type(value) is tuple and len(value) == 2 and type(value[0]) is int \
        and type(value[1]) is int


def pool_geometry(input_shape: Sequence[int], kernel_size: object, stride: object,
                  padding: object, dilation: object = 1, ceil_mode: object = False,
                  count_include_pad: object = True, divisor_override: object = None,
                  is_max: bool = True) -> PoolGeometry:
    """Validate the hyper-parameters for a 4-D input shape; return a PoolGeometry.

    A model calls a layer with the same arguments again and again, and the checks cost
    microseconds, as much as a small kernel: the geometry of valid plain arguments (ints or
    pairs of ints, bools, ``stride=None``) is kept, at most ``_MAX_GEOMETRIES`` of them.
    Anything else, and every invalid call, runs the checks."""
    if (_is_plain(kernel_size) and (stride is None or _is_plain(stride)) and _is_plain(padding)
            and _is_plain(dilation) and type(ceil_mode) is bool
            and type(count_include_pad) is bool
            and (divisor_override is None or type(divisor_override) is int)):
        key = (tuple(input_shape), kernel_size, stride, padding, dilation, ceil_mode,
               count_include_pad, divisor_override, is_max)
        g = _GEOMETRIES.get(key)
        if g is None:
            g = _pool_geometry(input_shape, kernel_size, stride, padding, dilation, ceil_mode,
                               count_include_pad, divisor_override, is_max)
            if len(_GEOMETRIES) < _MAX_GEOMETRIES:
                _GEOMETRIES[key] = g
        return g
    return _pool_geometry(input_shape, kernel_size, stride, padding, dilation, ceil_mode,
                          count_include_pad, divisor_override, is_max)


def _pool_geometry(input_shape: Sequence[int], kernel_size: object, stride: object,
                   padding: object, dilation: object, ceil_mode: object,
                   count_include_pad: object, divisor_override: object, is_max: bool
                   ) -> PoolGeometry:
    _, _, h, w = input_shape
    p = pool_params(kernel_size, stride, padding, dilation, ceil_mode, count_include_pad,
                    divisor_override)
    out = [pool_output_size(n, k, s, pad, d, p.ceil_mode)
           for n, k, s, pad, d in zip((h, w), p.kernel, p.stride, p.padding, p.dilation)]
    if out[0] < 1 or out[1] < 1:
        raise ValueError(
            f"output size ({out[0]}, {out[1]}) is < 1: input {h}x{w} with padding {p.padding} is "
            f"too small for a {p.kernel[0]}x{p.kernel[1]} kernel with dilation {p.dilation}"
        )
    if is_max and p.dilation != (1, 1):
        _check_windows(h, w, p, out)
    return PoolGeometry(*p, out[0], out[1])


def adaptive_output_param(output_size: object) -> Tuple[Optional[int], ...]:
    """The rule of adaptive pooling's ``output_size``, which does not depend on the input: an
    int, or a pair (a sequence of one counts as that entry for both axes, as for the other
    pooling sizes) whose entries are ints >= 1 or ``None`` (the input's size along that axis).
    Returns ``(oh, ow)``, ``None`` entries kept; TypeError/ValueError naming output_size. The
    layers check it with this at construction."""
    value = output_size.tolist() if isinstance(output_size, np.ndarray) else output_size
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            value = (value[0], value[0])
        if len(value) != 2:
            raise ValueError(
                f"output_size must be an int or a pair (of ints or None), got {output_size!r}")
        sizes = tuple(None if v is None else as_int64(v, "output_size") for v in value)
    elif value is None:
        raise TypeError("output_size must be an int or a pair (of ints or None), got None")
    else:
        v = as_int64(value, "output_size")
        sizes = (v, v)
    if any(v is not None and v < 1 for v in sizes):
        raise ValueError(
            f"output_size must be >= 1 (or None: the input's size), got {output_size!r}")
    return sizes


def adaptive_output_size(input_shape: Sequence[int], output_size: object) -> IntPair:
    """``(OH, OW)`` of adaptive pooling of an (N, C, H, W) input: ``output_size`` checked by
    :func:`adaptive_output_param`, ``None`` entries replaced by H or W."""
    oh, ow = adaptive_output_param(output_size)
    return (input_shape[2] if oh is None else oh, input_shape[3] if ow is None else ow)
