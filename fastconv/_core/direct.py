"""The direct backend of a convolution: the compiled kernels (``fastconv._kernels``).

``forward`` and ``backward`` take validated 4-D arrays and a :class:`ConvGeometry`; before any
kernel runs, the geometry is reduced axis by axis to an equivalent small one (``kernel_plan``,
see ``geometry``), so that a huge stride, padding or dilation costs no memory, and the kernel is
trimmed to the taps that read the input for some output position (``geometry.live_taps``): the
others multiply only padding zeros. Dropping them leaves every result as it was:

* forward: a dropped tap adds ``w * 0`` (+-0) to its outputs' chain over the taps, which
  leaves a nonzero partial sum unchanged; the chain over the kept taps, in the same order, gives
  the same value. Only an inf or NaN weight makes such a product nonzero (NaN, as in torch), so
  a dropped tap holding one keeps the whole kernel (``_forward_plan``). With every tap dropped,
  no kernel runs: the output is the bias.
* grad_input: a dropped tap has no (output, input) pair, and the sum runs over real pairs only.
* grad_weight: a dropped tap's gradient sums grad_output times padding zeros: 0, or NaN where
  that output channel's grad_output holds an inf or NaN (``_dropped_weight_grads``).

Not even the sign of a zero changes: adding +-0 could only turn a -0.0 partial sum into +0.0,
but the kernels' sums start from ``0 + bias`` (+0.0 for a bias of -0.0) or from +0.0, and a sum
from +0.0 never becomes -0.0 (``x + -x`` is +0.0); the output of a kernel with no tap left is
``0 + bias`` likewise. So the results are those of the whole kernel, bit for bit, but for
one: a depthwise grad_weight computed in row bands (an image whose buffer passes the workspace
cap) rounds by band, and the bands follow the (smaller) buffer of the trimmed kernel.
``TRIM_DEAD_TAPS = False`` runs the whole kernel (for the tests that compare).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .. import _kernels
from .conv_geometry import ConvGeometry
from .epilogue import NONE, activate_
from .geometry import check_size, conv_axis, gather, live_taps, scatter_add

# Whether kernel_plan drops the taps that read only padding (see the module's docstring).
TRIM_DEAD_TAPS = True

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
    per gathered axis, the source row of every row of the gathered input (None: not gathered);
    ``taps``, the kernel block ``(r0, r1, s0, s1)`` the kernels run (rows ``r0:r1``, columns
    ``s0:s1``) when taps reading only padding were dropped, else None; ``crop``, the leading
    input rows and columns that no kept tap reads (the kernels run on the rest). A plan with no
    tap left (``dead``) has no geometry: no kernel runs."""

    geometry: Optional[ConvGeometry]  # None: no tap reads the input (``dead``)
    rows_h: Optional[IndexArray]
    rows_w: Optional[IndexArray]
    taps: Optional[Tuple[int, int, int, int]] = None
    crop: Tuple[int, int] = (0, 0)

    @property
    def gathered(self) -> bool:
        return self.rows_h is not None or self.rows_w is not None

    @property
    def dead(self) -> bool:
        return self.geometry is None


_PLANS: Dict[Any, KernelPlan] = {}  # (H, W, R, S, geometry) -> its KernelPlan, if not gathered
_MAX_PLANS = 1024


def kernel_plan(input_shape: Sequence[int], weight_shape: Sequence[int], g: ConvGeometry,
                trim: bool = True) -> KernelPlan:
    """Reduce the validated geometry ``g`` axis by axis to what the kernels should run; with
    ``trim`` (and ``TRIM_DEAD_TAPS``), for the kernel block of the taps that read the input.

    A model calls a layer with the same shapes again and again, and the reduction costs
    microseconds, as much as a small kernel: plans that gather no rows (every usual geometry)
    are kept, at most ``_MAX_PLANS`` of them (a plan is a few small tuples)."""
    trim = bool(trim and TRIM_DEAD_TAPS)
    key = (input_shape[2], input_shape[3], weight_shape[2], weight_shape[3], g, trim)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _kernel_plan(input_shape, weight_shape, g, trim)
        if not plan.gathered and len(_PLANS) < _MAX_PLANS:
            _PLANS[key] = plan
    return plan


def _kernel_plan(input_shape: Sequence[int], weight_shape: Sequence[int], g: ConvGeometry,
                 trim: bool) -> KernelPlan:
    _, _, h, w = input_shape
    _, _, r, s = weight_shape
    (sh, sw), (dh, dw) = g.stride, g.dilation
    r0, r1, s0, s1 = 0, r, 0, s
    if trim:
        r0, r1 = live_taps(h, g.pad_top, r, sh, dh, g.out_h)
        s0, s1 = live_taps(w, g.pad_left, s, sw, dw, g.out_w)
        if r0 >= r1 or s0 >= s1:
            return KernelPlan(None, None, None, (r0, r1, s0, s1))
    taps = None if (r0, r1, s0, s1) == (0, r, 0, s) else (r0, r1, s0, s1)
    # the first kept tap may start below the input's first row (its padding would be negative):
    # the rows above are read by no kept tap, so the kernels run on the input without them
    ch, cw = max(0, r0 * dh - g.pad_top), max(0, s0 * dw - g.pad_left)
    # one tap left along an axis: its dilation plays no part (1 lets the kernels read rows and
    # columns as a 1x1 kernel's)
    dh, dw = (1 if r1 - r0 == 1 else dh), (1 if s1 - s0 == 1 else dw)
    ah = conv_axis(h - ch, g.pad_top - r0 * g.dilation[0] + ch, r1 - r0, sh, dh, g.out_h)
    aw = conv_axis(w - cw, g.pad_left - s0 * g.dilation[1] + cw, s1 - s0, sw, dw, g.out_w)
    kg = ConvGeometry((ah.stride, aw.stride), (ah.dilation, aw.dilation), ah.pad, 0, aw.pad, 0,
                      g.groups, g.out_h, g.out_w)
    return KernelPlan(kg, ah.rows, aw.rows, taps, (ch, cw))


def _kept_taps(weight: FloatArray, plan: KernelPlan) -> FloatArray:
    """The block of ``weight`` the kernels run under ``plan`` (a view)."""
    if plan.taps is None:
        return weight
    r0, r1, s0, s1 = plan.taps
    return weight[:, :, r0:r1, s0:s1]


def _dropped_taps(weight: FloatArray, plan: KernelPlan) -> Tuple[FloatArray, ...]:
    """The parts of ``weight`` (views) outside the kept block: the rows above and below it, and
    beside it in its rows."""
    if plan.taps is None:
        return ()
    r0, r1, s0, s1 = plan.taps
    return (weight[:, :, :r0], weight[:, :, r1:], weight[:, :, r0:r1, :s0],
            weight[:, :, r0:r1, s1:])


def _all_finite(a: FloatArray) -> bool:
    """Whether every element of ``a`` is finite: one pass that makes no temporary array when the
    sum is finite (a sum holding inf or NaN is not; a finite one may still overflow)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if bool(np.isfinite(a.sum())):
            return True
    return bool(np.isfinite(a).all())


def _forward_plan(input_shape: Sequence[int], weight: FloatArray, g: ConvGeometry
                  ) -> KernelPlan:
    """The forward pass's plan: the trimmed one, unless a dropped tap holds an inf or NaN,
    whose products with the padding are NaN (as in torch), not zero."""
    plan = kernel_plan(input_shape, weight.shape, g)
    if plan.taps is not None and not _all_finite(weight) and not all(
            _all_finite(part) for part in _dropped_taps(weight, plan)):
        plan = kernel_plan(input_shape, weight.shape, g, trim=False)
    return plan


def _cropped_shape(input_shape: Sequence[int], plan: KernelPlan) -> Shape:
    """``input_shape`` less the leading rows and columns no kept tap reads (``plan.crop``)."""
    n, c, h, w = input_shape
    return (n, c, h - plan.crop[0], w - plan.crop[1])


def _kernel_shape(input_shape: Sequence[int], plan: KernelPlan) -> Shape:
    """The shape of the input the kernels read (see _kernel_input)."""
    n, c, h, w = _cropped_shape(input_shape, plan)
    return (n, c, h if plan.rows_h is None else plan.rows_h.size,
            w if plan.rows_w is None else plan.rows_w.size)


def _kernel_input(x4: FloatArray, plan: KernelPlan) -> FloatArray:
    """The input the kernels read: x4 itself (a view without the rows and columns no kept tap
    reads), or its gathered rows/columns (zeros for padding)."""
    shape = _kernel_shape(x4.shape, plan)
    ch, cw = plan.crop
    if ch or cw:
        x4 = x4[:, :, ch:, cw:]
    if not plan.gathered:
        return x4
    check_size(shape, x4.itemsize, "the gathered input")
    return gather(x4, plan.rows_h, plan.rows_w, 0)


def _tap_range(out_size: int, in_size: int, pad: int, offset: int, stride: int
               ) -> Tuple[int, int, int]:
    """Output positions ``lo..hi-1`` (along one axis) whose input position
    ``o * stride - pad + offset`` lies inside ``[0, in_size)``; the first such input position."""
    lo = max(0, -((offset - pad) // stride))           # ceil((pad - offset) / stride)
    hi = min(out_size, (in_size - 1 + pad - offset) // stride + 1)
    return lo, hi, lo * stride - pad + offset


def _grad_input_by_taps(go4: FloatArray, weight: FloatArray, input_shape: Sequence[int],
                        g: ConvGeometry, bf16: bool = False) -> FloatArray:
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
                                       part, tap, bf16)
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
            epilogue: Epilogue = NONE, bf16: bool = False) -> FloatArray:
    """conv2d of the 4-D ``x4``: an ``(N, K, OH, OW)`` array, activated by ``epilogue`` in the
    kernels' output epilogue; ``bf16`` (float32): with the products of the input and weight
    rounded to bfloat16 (:mod:`fastconv._core.bf16`)."""
    out = _kernels.empty((x4.shape[0], weight.shape[0], g.out_h, g.out_w), x4.dtype)
    plan = _forward_plan(x4.shape, weight, g) if out.size and weight.shape[1] else None
    if out.size and (plan is None or plan.geometry is None):  # no input channel or no tap: bias
        out[...] = 0 if bias is None else bias[None, :, None, None]
        if plan is not None:  # as the kernels' sums, which start from 0 + bias: -0.0 -> +0.0
            out += out.dtype.type(0)
        activate_(out, epilogue)
    elif plan is not None and plan.geometry is not None:
        _kernels.conv2d_forward(_kernel_input(x4, plan),
                                np.ascontiguousarray(_kept_taps(weight, plan)),
                                None if bias is None else np.ascontiguousarray(bias), out,
                                plan.geometry, epilogue.code, epilogue.slope, bf16)
    return out


def _grad_input(go4: FloatArray, input_shape: Sequence[int], weight: FloatArray,
                g: ConvGeometry, plan: KernelPlan, bf16: bool = False) -> FloatArray:
    """grad_input for an input of ``input_shape`` (only its shape matters), dtype of ``go4``;
    ``bf16``: with the products of ``go4`` and ``weight`` rounded to bfloat16."""
    dtype = go4.dtype
    runs = math.prod(input_shape) and go4.size and weight.size
    kg = plan.geometry
    if kg is None:  # every tap reads only padding: no input position gets a gradient
        check_size(input_shape, dtype.itemsize, "grad_input")
        return np.zeros(input_shape, dtype=dtype)
    if runs and not _all_finite(_kept_taps(weight, plan)):
        check_size(input_shape, dtype.itemsize, "grad_input")
        return _grad_input_by_taps(go4, weight, input_shape, g, bf16)  # skips the dropped taps
    weight = _kept_taps(weight, plan)
    shape = _kernel_shape(input_shape, plan)
    check_size(shape, dtype.itemsize, "grad_input")
    # with stride 1 the kernel writes every element; with a stride, the positions that no tap
    # reaches keep the zeros
    grad_input = _kernels.empty(shape, dtype, zero=not runs or kg.stride != (1, 1))
    if runs:
        _kernels.conv2d_grad_input(go4, np.ascontiguousarray(weight), grad_input, kg, bf16)
    if plan.gathered:  # back from the gathered rows to the input's, in a fixed order
        grad_input = scatter_add(_cropped_shape(input_shape, plan), dtype, grad_input,
                                 plan.rows_h, plan.rows_w)
    ch, cw = plan.crop
    if ch or cw:  # the rows and columns no tap reads have no gradient
        full = np.zeros(input_shape, dtype=dtype)
        full[:, :, ch:, cw:] = grad_input
        grad_input = full
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


def _grad_weight(go4: FloatArray, x4: FloatArray, weight: FloatArray, plan: KernelPlan
                 ) -> FloatArray:
    """conv2d's grad_weight, an array of ``weight``'s shape, dtype of ``x4``."""
    grad_weight = np.zeros(weight.shape, dtype=x4.dtype)
    if not weight.size:
        return grad_weight
    if plan.geometry is not None:
        kept = grad_weight if plan.taps is None else np.zeros(
            _kept_taps(weight, plan).shape, dtype=x4.dtype)
        _kernels.conv2d_grad_weight(go4, _kernel_input(x4, plan), kept, plan.geometry)
        if plan.taps is not None:
            _kept_taps(grad_weight, plan)[...] = kept
    if plan.taps is not None:
        _dropped_weight_grads(grad_weight, go4, plan)
    return grad_weight


def _dropped_weight_grads(grad_weight: FloatArray, go4: FloatArray, plan: KernelPlan) -> None:
    """The gradient of the dropped taps (zero in ``grad_weight``): grad_output times padding
    zeros, summed; NaN for an output channel whose grad_output holds an inf or NaN (0 * inf),
    as the whole kernel (and torch) gives."""
    if _all_finite(go4):
        return
    bad = ~np.isfinite(go4).all(axis=(0, 2, 3))
    for part in _dropped_taps(grad_weight, plan):
        part[bad] = np.nan


def grad_bias(go4: FloatArray) -> FloatArray:
    """``go4`` summed over N, H and W, in a fixed order: a ``(K,)`` array."""
    grad_bias = np.zeros(go4.shape[1], dtype=go4.dtype)
    if go4.size:
        _kernels.conv2d_grad_bias(np.ascontiguousarray(go4), grad_bias)
    return grad_bias


def backward(go4: FloatArray, x4: FloatArray, weight: FloatArray, g: ConvGeometry, needs: Needs,
             bf16_input: bool = False) -> Grads:
    """``(grad_input, grad_weight, grad_bias)`` of conv2d for the 4-D ``go4`` and ``x4``; an
    entry whose ``needs`` flag is False is None. ``bf16_input``: grad_input with the products
    of ``go4`` and ``weight`` rounded to bfloat16 (the kernels round or convert them)."""
    need_input, need_weight, need_bias = needs
    go4 = np.ascontiguousarray(go4)
    if not go4.size:
        return _zero_gradients(x4.shape, weight.shape, x4.dtype, needs)
    plan = kernel_plan(x4.shape, weight.shape, g)
    grad_input = _grad_input(go4, x4.shape, weight, g, plan, bf16_input) if need_input else None
    grad_weight = _grad_weight(go4, x4, weight, plan) if need_weight else None
    grad_bias = None
    if need_bias:
        grad_bias = np.zeros(weight.shape[0], dtype=x4.dtype)
        _kernels.conv2d_grad_bias(go4, grad_bias)
    return grad_input, grad_weight, grad_bias
