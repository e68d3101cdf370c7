"""max_pool2d / avg_pool2d and their backward passes: the argument rules of
``torch.nn.functional`` (``pool_geometry``), then the compiled kernels (src/pool_engine.h)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union, overload

import numpy as np

from .. import _kernels
from .bf16 import accepts_bfloat16
from .args import as_bool, as_float_array, as_index_array, batched, restore_batch
from .geometry import check_size, gather, pool_axis, scatter_add
from .pool_geometry import PoolGeometry, check_input, check_input_shape, pool_geometry

if TYPE_CHECKING:
    from typing import Literal

    from numpy.typing import ArrayLike, NDArray

    from .args import FloatArray, IndexArray, IntOrPair, Shape


class PoolPlan(NamedTuple):
    """The equivalent small problem the kernels run (see fastconv._core.geometry): its geometry, the
    source rows/columns of a gathered axis (None: not gathered) and, for an average pooling
    whose divisors the kernels cannot derive from that geometry, the (OH, OW) divisors."""

    geometry: PoolGeometry
    rows_h: Optional[IndexArray]
    rows_w: Optional[IndexArray]
    divisor: Optional[NDArray[np.object_]]

    @property
    def gathered(self) -> bool:
        return self.rows_h is not None or self.rows_w is not None

    def kernel_shape(self, shape4: Sequence[int]) -> Shape:
        n, c, h, w = shape4
        return (n, c, h if self.rows_h is None else self.rows_h.size,
                w if self.rows_w is None else self.rows_w.size)


def _avg_divisor(shape4: Sequence[int], g: PoolGeometry) -> NDArray[Any]:
    """(OH, OW) divisors of avg_pool2d without divisor_override, torch's rule, in exact integer
    arithmetic (an object array: the sizes may be near 2**63)."""
    factors = []
    for size, out, k, s, p in zip(shape4[2:], (g.out_h, g.out_w), g.kernel, g.stride, g.padding):
        start = np.arange(out, dtype=object) * s - p
        if g.count_include_pad:  # padding cells count, cells past the padded edge do not
            factors.append(np.minimum(start + k, size + p) - start)
        else:
            factors.append(np.minimum(start + k, size) - np.maximum(start, 0))
    return factors[0][:, None] * factors[1][None, :]


_PLANS: Dict[Any, PoolPlan] = {}  # (shape, geometry, is_max) -> PoolPlan, if plain (see below)
_MAX_PLANS = 1024


def pool_plan(shape4: Sequence[int], g: PoolGeometry, is_max: bool) -> PoolPlan:
    """Reduce the validated geometry ``g`` axis by axis to what the kernels should run.

    Plans that gather no rows and need no divisor table (every usual geometry) are kept, at
    most ``_MAX_PLANS`` of them: the reduction costs as much as a small kernel."""
    key = (tuple(shape4), g, is_max)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _pool_plan(shape4, g, is_max)
        if not plan.gathered and plan.divisor is None and len(_PLANS) < _MAX_PLANS:
            _PLANS[key] = plan
    return plan


def _pool_plan(shape4: Sequence[int], g: PoolGeometry, is_max: bool) -> PoolPlan:
    _, _, h, w = shape4
    ah = pool_axis(h, g.kernel[0], g.stride[0], g.padding[0], g.dilation[0], g.out_h)
    aw = pool_axis(w, g.kernel[1], g.stride[1], g.padding[1], g.dilation[1], g.out_w)
    divisor, override = None, g.divisor_override
    # the kernels derive the divisors from the kernel, padding and stride they are given
    changed = any(a.rows is not None or a.kernel != k or a.pad != p or (a.stride != s and o > 1)
                  for a, k, p, s, o in zip((ah, aw), g.kernel, g.padding, g.stride,
                                           (g.out_h, g.out_w)))
    if changed and not is_max and override is None:
        divisor, override = _avg_divisor(shape4, g), 1  # the kernels sum, Python divides
    kg = PoolGeometry((ah.kernel, aw.kernel), (ah.stride, aw.stride), (ah.pad, aw.pad),
                      (ah.dilation, aw.dilation), g.ceil_mode, g.count_include_pad, override,
                      g.out_h, g.out_w)
    plan = PoolPlan(kg, ah.rows, aw.rows, divisor)
    check_size(plan.kernel_shape(shape4), 8, "the gathered input")
    return plan


def _divided(a: FloatArray, divisor: NDArray[np.object_]) -> FloatArray:
    """a / divisor elementwise in a's dtype (divisor: the exact integers of _avg_divisor)."""
    return a / np.array([float(v) for v in divisor.ravel()], a.dtype).reshape(divisor.shape)


@overload
def max_pool2d(input: ArrayLike, kernel_size: IntOrPair, stride: Optional[IntOrPair] = ...,
               padding: IntOrPair = ..., dilation: IntOrPair = ..., ceil_mode: bool = ...,
               return_indices: Literal[False] = ...) -> FloatArray: ...
@overload
def max_pool2d(input: ArrayLike, kernel_size: IntOrPair, stride: Optional[IntOrPair] = ...,
               padding: IntOrPair = ..., dilation: IntOrPair = ..., ceil_mode: bool = ..., *,
               return_indices: Literal[True]) -> Tuple[FloatArray, IndexArray]: ...
@overload
def max_pool2d(input: ArrayLike, kernel_size: IntOrPair, stride: Optional[IntOrPair],
               padding: IntOrPair, dilation: IntOrPair, ceil_mode: bool,
               return_indices: Literal[True]) -> Tuple[FloatArray, IndexArray]: ...
@overload
def max_pool2d(input: ArrayLike, kernel_size: IntOrPair, stride: Optional[IntOrPair] = ...,
               padding: IntOrPair = ..., dilation: IntOrPair = ..., ceil_mode: bool = ...,
               return_indices: bool = ...
               ) -> Union[FloatArray, Tuple[FloatArray, IndexArray]]: ...
@accepts_bfloat16("input")
def max_pool2d(input: ArrayLike, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False
               ) -> Union[FloatArray, Tuple[FloatArray, Optional[IndexArray]]]:
    r"""2-D max pooling over an NCHW batch, as ``torch.nn.functional.max_pool2d``.

    Args:
        input: array of shape ``(N, C, H, W)`` or unbatched ``(C, H, W)``; float32, float64 or
            bfloat16 (``ml_dtypes``; the result is then bfloat16); any memory layout (views,
            transposes, negative strides). N may be 0.
        kernel_size: int or pair ``(kH, kW)``, the window size, >= 1.
        stride: int or pair, the window step, >= 1. Default: ``None``, meaning ``kernel_size``.
        padding: int or pair, implicit -inf padding added on both sides, at most
            ``kernel_size // 2`` (torch's rule, checked on the undilated kernel). Default: 0.
        dilation: int or pair, the spacing between window elements, >= 1. Default: 1.
        ceil_mode: bool, round the output size up instead of down; the last window must then
            still start inside the input or the left padding. Default: ``False``.
        return_indices: bool, also return the argmax indices (for :func:`max_pool2d_backward`).
            Default: ``False``.

    Returns:
        ``out`` of shape ``(N, C, OH, OW)`` (or ``(C, OH, OW)``), dtype of ``input``, with
        ``OH = floor_or_ceil((H + 2*pH - dH*(kH-1) - 1) / sH) + 1`` (likewise OW); and with
        ``return_indices``, ``(out, indices)`` where ``indices`` (int64, same shape) holds, for
        each output, the position ``h * W + w`` of its maximum in its own ``(n, c)`` input plane.

    As in torch: ties go to the first position in row-major order; a NaN in the window makes the
    output NaN and the index that of the last NaN in row-major order; a window of only -inf
    values reports its first in-bounds position. Results are bitwise identical to torch's CPU
    kernel and for any number of threads. Inputs are never modified.

    Windows that would contain no input element at all (possible only with ``dilation > 1``,
    when a dilated window straddles a small input, e.g. H=1, kernel 2, dilation 2, padding 1)
    are rejected with a ``ValueError``. torch returns -inf there with an index that is either
    past the plane or the first element of the next row (whose value is not -inf), so its
    backward would route the gradient to the wrong element or out of bounds.

    kernel_size, stride, padding and dilation take any value up to
    ``2**63 - 1``, as in torch (a larger one is a ``ValueError``); windows are clipped to the
    input exactly, so a huge kernel or stride costs no memory.
    """
    x4, unbatched = check_input(input)
    return_indices = as_bool(return_indices, "return_indices")
    g = pool_geometry(x4.shape, kernel_size, stride, padding, dilation, ceil_mode, is_max=True)
    shape = (x4.shape[0], x4.shape[1], g.out_h, g.out_w)
    check_size(shape, 16 if return_indices else x4.itemsize, "the output")
    out = _kernels.empty(shape, x4.dtype)
    indices = _kernels.empty(shape, np.int64) if return_indices else None
    if out.size:
        plan = pool_plan(x4.shape, g, True)
        xk = gather(x4, plan.rows_h, plan.rows_w, -np.inf) if plan.gathered else x4
        _kernels.pool2d_forward(xk, out, indices, True, plan.geometry)
        if plan.gathered and indices is not None:  # positions in the gathered plane -> input's
            rows = np.arange(x4.shape[2]) if plan.rows_h is None else plan.rows_h
            cols = np.arange(x4.shape[3]) if plan.rows_w is None else plan.rows_w
            i, j = np.divmod(indices, xk.shape[3])
            indices[...] = rows[i] * x4.shape[3] + cols[j]
    out, indices = restore_batch(out, unbatched), restore_batch(indices, unbatched)
    return (out, indices) if return_indices else out


@accepts_bfloat16("grad_output")
def max_pool2d_backward(grad_output: ArrayLike, indices: ArrayLike, input_shape: Sequence[int]
                        ) -> FloatArray:
    r"""Gradient of :func:`max_pool2d` with respect to its input.

    Args:
        grad_output: ``(N, C, OH, OW)`` (or ``(C, OH, OW)``) float32/float64 array (or
            bfloat16: the gradient is then bfloat16), the gradient
            of the loss with respect to the output of ``max_pool2d``; any memory layout.
        indices: int64 array of the same shape, as returned by
            ``max_pool2d(..., return_indices=True)``: each entry a position ``h * W + w`` inside
            its ``(n, c)`` input plane, ``0 <= index < H * W``.
        input_shape: the shape ``(N, C, H, W)`` (or ``(C, H, W)``) of the pooled input.

    Returns:
        ``grad_input`` of shape ``input_shape`` and dtype of ``grad_output``: each gradient added
        to the input position its index names (summed where windows overlap). Bitwise identical
        to torch's CPU kernel and for any number of threads.

    Raises:
        ValueError: if an index lies outside its plane (nothing is ever written out of bounds),
            or the shapes disagree.
        TypeError: wrong dtypes.
    """
    grad_output = as_float_array(grad_output, "grad_output")
    indices = as_index_array(indices, "indices")
    shape4, unbatched = check_input_shape(input_shape)
    if grad_output.ndim != len(input_shape):
        raise ValueError(
            f"grad_output must be {len(input_shape)}-D like input_shape {tuple(input_shape)}, "
            f"got shape {grad_output.shape}"
        )
    if indices.shape != grad_output.shape:
        raise ValueError(
            f"indices must have the shape of grad_output {grad_output.shape}, got {indices.shape}"
        )
    go4, _ = batched(grad_output, "grad_output")
    ind4, _ = batched(indices, "indices")
    if go4.shape[:2] != shape4[:2]:
        raise ValueError(
            f"grad_output shape {grad_output.shape} does not match input_shape "
            f"{tuple(input_shape)} in N and C"
        )
    check_size(shape4, grad_output.itemsize, "grad_input (input_shape)")
    grad_input = _kernels.empty(shape4, grad_output.dtype)
    if grad_input.size:
        if go4.size == 0:
            grad_input.fill(0)
        elif not _kernels.max_pool2d_backward(go4, ind4, grad_input):
            hw = shape4[2] * shape4[3]
            bad = ind4[(ind4 < 0) | (ind4 >= hw)]
            raise ValueError(
                f"indices must lie inside their {shape4[2]}x{shape4[3]} input plane "
                f"(0 <= index < {hw}), found {int(bad[0])}"
            )
    return restore_batch(grad_input, unbatched)


@accepts_bfloat16("input")
def avg_pool2d(input: ArrayLike, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None
               ) -> FloatArray:
    r"""2-D average pooling over an NCHW batch, as ``torch.nn.functional.avg_pool2d``.

    Args:
        input: array of shape ``(N, C, H, W)`` or unbatched ``(C, H, W)``; float32, float64
            or bfloat16 (``ml_dtypes``; the result is then bfloat16); any memory layout. N may be 0.
        kernel_size: int or pair ``(kH, kW)``, the window size, >= 1.
        stride: int or pair, the window step, >= 1. Default: ``None``, meaning ``kernel_size``.
        padding: int or pair, implicit zero padding on both sides, at most ``kernel_size // 2``.
            Default: 0.
        ceil_mode: bool, round the output size up instead of down; the last window must then
            still start inside the input or the left padding. Default: ``False``.
        count_include_pad: bool, count the padding cells in the divisor. The part of a ceil_mode
            window that runs past the padded input is never counted. Default: ``True``.
        divisor_override: int (non-zero), divide every window sum by it instead. Default:
            ``None``.

    Returns:
        ``(N, C, OH, OW)`` (or ``(C, OH, OW)``), dtype of ``input``, with
        ``OH = floor_or_ceil((H + 2*pH - kH) / sH) + 1`` (likewise OW). Each output is the
        window's sum, accumulated in row-major order, divided by the divisor: bitwise identical
        to torch's CPU kernel and for any number of threads. Inputs are never modified. Every
        window contains at least one input element (padding <= kernel_size // 2).

    kernel_size, stride, padding and divisor_override take any value up to ``2**63 - 1``, as
    in torch (a larger one is a ``ValueError``); a huge kernel or stride costs no memory.
    Divisors are computed as exact integers.
    """
    x4, unbatched = check_input(input)
    g = pool_geometry(x4.shape, kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                      divisor_override, is_max=False)
    shape = (x4.shape[0], x4.shape[1], g.out_h, g.out_w)
    check_size(shape, x4.itemsize, "the output")
    out = _kernels.empty(shape, x4.dtype)
    if out.size:
        plan = pool_plan(x4.shape, g, False)
        xk = gather(x4, plan.rows_h, plan.rows_w, 0) if plan.gathered else x4
        _kernels.pool2d_forward(xk, out, None, False, plan.geometry)
        if plan.divisor is not None:
            out[...] = _divided(out, plan.divisor)
    return restore_batch(out, unbatched)


@accepts_bfloat16("grad_output")
def avg_pool2d_backward(grad_output: ArrayLike, input_shape: Sequence[int],
                        kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                        padding: IntOrPair = 0, ceil_mode: bool = False,
                        count_include_pad: bool = True, divisor_override: Optional[int] = None
                        ) -> FloatArray:
    r"""Gradient of :func:`avg_pool2d` with respect to its input.

    Args:
        grad_output: ``(N, C, OH, OW)`` (or ``(C, OH, OW)``) float32/float64 array (or
            bfloat16: the gradient is then bfloat16), the gradient
            of the loss with respect to the output of ``avg_pool2d``; any memory layout.
        input_shape: the shape ``(N, C, H, W)`` (or ``(C, H, W)``) of the pooled input.
        kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override: as given
            to :func:`avg_pool2d`.

    Returns:
        ``grad_input`` of shape ``input_shape``: every input element receives
        ``grad_output / divisor`` of each window containing it, summed in output row-major order
        (torch's order; bitwise identical to torch's CPU kernel and for any number of threads).
    """
    grad_output = as_float_array(grad_output, "grad_output")
    shape4, unbatched = check_input_shape(input_shape)
    g = pool_geometry(shape4, kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                      divisor_override, is_max=False)
    expected = (shape4[0], shape4[1], g.out_h, g.out_w)
    want = expected[1:] if unbatched else expected
    if grad_output.shape != want:
        raise ValueError(f"grad_output must have shape {want}, got {grad_output.shape}")
    go4, _ = batched(grad_output, "grad_output")
    check_size(shape4, grad_output.itemsize, "grad_input (input_shape)")
    if not go4.size:
        return _kernels.empty(input_shape, grad_output.dtype, zero=True)
    plan = pool_plan(shape4, g, False)
    if plan.divisor is not None:  # the kernels run with divisor 1
        go4 = _divided(go4, plan.divisor)
    if not plan.gathered:
        grad_input = _kernels.empty(shape4, grad_output.dtype)
        _kernels.avg_pool2d_backward(go4, grad_input, plan.geometry)
    else:  # every gathered element lies in one window; then back to the input, in a fixed order
        grad_k = _kernels.empty(plan.kernel_shape(shape4), grad_output.dtype)
        _kernels.avg_pool2d_backward(go4, grad_k, plan.geometry)
        grad_input = scatter_add(shape4, grad_output.dtype, grad_k, plan.rows_h, plan.rows_w)
    return restore_batch(grad_input, unbatched)
