"""The direct backend of a convolution: the compiled kernels (``fastconv._kernels``).

``forward`` and ``backward`` take validated 4-D arrays and a :class:`ConvGeometry`; before any
kernel runs, the geometry is reduced axis by axis to an equivalent small one (``kernel_plan``,
see ``geometry``), so that a huge stride, padding or dilation costs no memory.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .. import _kernels
from .conv_geometry import ConvGeometry
from .epilogue import NONE, activate_
from .geometry import check_size, conv_axis, gather, scatter_add

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

    from .args import FloatArray, Grads, IndexArray, Needs, Shape
    from .epilogue import Epilogue


def is_usable_for(input_shape: Sequence[int], weight_shape: Sequence[int],
                  geometry: ConvGeometry) -> bool:
    """The direct kernels compute every convolution the argument rules accept."""
    return True


class KernelPlan(NamedTuple):
    """The equivalent small problem the kernels run (see fastconv._core.geometry): its geometry and,
    per gathered axis, the source row of every row of the gathered input (None: not gathered)."""

    geometry: ConvGeometry
    rows_h: Optional[IndexArray]
    rows_w: Optional[IndexArray]

    @property
    def gathered(self) -> bool:
        return self.rows_h is not None or self.rows_w is not None


_PLANS: Dict[Any, KernelPlan] = {}  # (H, W, R, S, geometry) -> its KernelPlan, if not gathered
_MAX_PLANS = 1024


def kernel_plan(input_shape: Sequence[int], weight_shape: Sequence[int], g: ConvGeometry
                ) -> KernelPlan:
    """Reduce the validated geometry ``g`` axis by axis to what the kernels should run.

    A model calls a layer with the same shapes again and again, and the reduction costs
    microseconds, as much as a small kernel: plans that gather no rows (every usual geometry)
    are kept, at most ``_MAX_PLANS`` of them (a plan is a few small tuples)."""
    key = (input_shape[2], input_shape[3], weight_shape[2], weight_shape[3], g)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _kernel_plan(input_shape, weight_shape, g)
        if not plan.gathered and len(_PLANS) < _MAX_PLANS:
            _PLANS[key] = plan
    return plan


def _kernel_plan(input_shape: Sequence[int], weight_shape: Sequence[int], g: ConvGeometry
                 ) -> KernelPlan:
    _, _, h, w = input_shape
    _, _, r, s = weight_shape
    ah = conv_axis(h, g.pad_top, r, g.stride[0], g.dilation[0], g.out_h)
    aw = conv_axis(w, g.pad_left, s, g.stride[1], g.dilation[1], g.out_w)
    kg = ConvGeometry((ah.stride, aw.stride), (ah.dilation, aw.dilation), ah.pad, 0, aw.pad, 0,
                      g.groups, g.out_h, g.out_w)
    return KernelPlan(kg, ah.rows, aw.rows)


def _kernel_shape(input_shape: Sequence[int], plan: KernelPlan) -> Shape:
    """The shape of the input the kernels read (see _kernel_input)."""
    n, c, h, w = input_shape
    return (n, c, h if plan.rows_h is None else plan.rows_h.size,
            w if plan.rows_w is None else plan.rows_w.size)


def _kernel_input(x4: FloatArray, plan: KernelPlan) -> FloatArray:
    """The input the kernels read: x4 itself, or its gathered rows/columns (zeros for padding)."""
    if not plan.gathered:
        return x4
    check_size(_kernel_shape(x4.shape, plan), x4.itemsize, "the gathered input")
    return gather(x4, plan.rows_h, plan.rows_w, 0)


def _tap_range(out_size: int, in_size: int, pad: int, offset: int, stride: int
               ) -> Tuple[int, int, int]:
    """Output positions ``lo..hi-1`` (along one axis) whose input position
    ``o * stride - pad + offset`` lies inside ``[0, in_size)``; the first such input position."""
    lo = max(0, -((offset - pad) // stride))           # ceil((pad - offset) / stride)
    hi = min(out_size, (in_size - 1 + pad - offset) // stride + 1)
    return lo, hi, lo * stride - pad + offset


def _grad_input_by_taps(go4: FloatArray, weight: FloatArray, input_shape: Sequence[int],
                        g: ConvGeometry) -> FloatArray:
    """grad_input summed over real (output position, tap) pairs only, as torch's col2im does.

    The compiled grad_input correlates a zero-padded grad_output with the flipped kernel, which
    is exact for a finite weight; but a non-finite weight times a padding zero is NaN, so every
    input position near a border or skipped by the stride would turn NaN. Here each tap
    ``(r, s)`` is a 1x1 grad_input (no padding involved) of the grad_output positions whose
    input position that tap reaches, added into those positions, taps in row-major order: the
    result does not depend on the thread count.
    """
    n, c, h, w = input_shape
    _, _, r_size, s_size = weight.shape
    (sh, sw), (dh, dw) = g.stride, g.dilation
    grad_input = np.zeros(input_shape, dtype=go4.dtype)
    for r in range(r_size):
        oh0, oh1, ih0 = _tap_range(g.out_h, h, g.pad_top, r * dh, sh)
        if oh0 >= oh1:
            continue
        for s in range(s_size):
            ow0, ow1, iw0 = _tap_range(g.out_w, w, g.pad_left, s * dw, sw)
            if ow0 >= ow1:
                continue
            go_tap = np.ascontiguousarray(go4[:, :, oh0:oh1, ow0:ow1])
            part = _kernels.empty((n, c, oh1 - oh0, ow1 - ow0), go4.dtype)
            tap = ConvGeometry((1, 1), (1, 1), 0, 0, 0, 0, g.groups, oh1 - oh0, ow1 - ow0)
            _kernels.conv2d_grad_input(go_tap, np.ascontiguousarray(weight[:, :, r:r + 1, s:s + 1]),
                                       part, tap)
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN, as in torch
                grad_input[:, :, ih0:ih0 + (oh1 - oh0 - 1) * sh + 1:sh,
                           iw0:iw0 + (ow1 - ow0 - 1) * sw + 1:sw] += part
    return grad_input


def _zero_gradients(input_shape: Shape, weight_shape: Shape, dtype: DTypeLike, needs: Needs
                    ) -> Tuple[Any, ...]:
    """The gradients of a convolution with an empty output (no image or no output channel):
    zeros, with no plan made for its geometry, which may be huge."""
    grads = (np.zeros(input_shape, dtype=dtype), np.zeros(weight_shape, dtype=dtype),
             np.zeros(weight_shape[0], dtype=dtype))
    return tuple(v if need else None for v, need in zip(grads, needs))


def forward(x4: FloatArray, weight: FloatArray, bias: Optional[FloatArray], g: ConvGeometry,
            epilogue: Epilogue = NONE) -> FloatArray:
    """conv2d of the 4-D ``x4``: an ``(N, K, OH, OW)`` array, activated by ``epilogue`` in the
    kernels' output epilogue."""
    out = _kernels.empty((x4.shape[0], weight.shape[0], g.out_h, g.out_w), x4.dtype)
    if out.size and weight.shape[1] == 0:  # no input channels: only the bias remains
        out[...] = 0 if bias is None else bias[None, :, None, None]
        activate_(out, epilogue)
    elif out.size:
        plan = kernel_plan(x4.shape, weight.shape, g)
        _kernels.conv2d_forward(_kernel_input(x4, plan), np.ascontiguousarray(weight),
                                None if bias is None else np.ascontiguousarray(bias), out,
                                plan.geometry, epilogue.code, epilogue.slope)
    return out


def _grad_input(go4: FloatArray, input_shape: Sequence[int], weight: FloatArray,
                g: ConvGeometry, plan: KernelPlan) -> FloatArray:
    """grad_input for an input of ``input_shape`` (only its shape matters), dtype of ``go4``."""
    dtype = go4.dtype
    runs = math.prod(input_shape) and go4.size and weight.size
    if runs and not np.isfinite(weight).all():
        check_size(input_shape, dtype.itemsize, "grad_input")
        return _grad_input_by_taps(go4, weight, input_shape, g)
    kg = plan.geometry
    shape = _kernel_shape(input_shape, plan)
    check_size(shape, dtype.itemsize, "grad_input")
    # with stride 1 the kernel writes every element; with a stride, the positions that no tap
    # reaches keep the zeros
    grad_input = _kernels.empty(shape, dtype, zero=not runs or kg.stride != (1, 1))
    if runs:
        _kernels.conv2d_grad_input(go4, np.ascontiguousarray(weight), grad_input, kg)
    if plan.gathered:  # back from the gathered rows to the input's, in a fixed order
        grad_input = scatter_add(input_shape, dtype, grad_input, plan.rows_h, plan.rows_w)
    return grad_input


def grad_input(go4: FloatArray, input_shape: Sequence[int], weight: FloatArray,
               g: ConvGeometry) -> FloatArray:
    """conv2d's grad_input alone, for an input of ``input_shape`` (its values play no part):
    the transposed convolution of the 4-D ``go4`` with ``weight``, an array of ``input_shape``
    in the dtype of ``go4``."""
    if not go4.size:
        return np.zeros(input_shape, dtype=go4.dtype)
    plan = kernel_plan(input_shape, weight.shape, g)
    return _grad_input(np.ascontiguousarray(go4), input_shape, weight, g, plan)


def grad_bias(go4: FloatArray) -> FloatArray:
    """``go4`` summed over N, H and W, in a fixed order: a ``(K,)`` array."""
    grad_bias = np.zeros(go4.shape[1], dtype=go4.dtype)
    if go4.size:
        _kernels.conv2d_grad_bias(np.ascontiguousarray(go4), grad_bias)
    return grad_bias


def backward(go4: FloatArray, x4: FloatArray, weight: FloatArray, g: ConvGeometry, needs: Needs
             ) -> Grads:
    """``(grad_input, grad_weight, grad_bias)`` of conv2d for the 4-D ``go4`` and ``x4``; an
    entry whose ``needs`` flag is False is None."""
    need_input, need_weight, need_bias = needs
    go4 = np.ascontiguousarray(go4)
    if not go4.size:
        return _zero_gradients(x4.shape, weight.shape, x4.dtype, needs)
    plan = kernel_plan(x4.shape, weight.shape, g)
    grad_input = _grad_input(go4, x4.shape, weight, g, plan) if need_input else None
    grad_weight = grad_bias = None
    if need_weight:
        grad_weight = np.zeros(weight.shape, dtype=x4.dtype)
        if weight.size:
            _kernels.conv2d_grad_weight(go4, _kernel_input(x4, plan), grad_weight, plan.geometry)
    if need_bias:
        grad_bias = np.zeros(weight.shape[0], dtype=x4.dtype)
        _kernels.conv2d_grad_bias(go4, grad_bias)
    return grad_input, grad_weight, grad_bias
