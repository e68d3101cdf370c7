"""conv2d / conv2d_backward: argument rules of torch.nn.functional.conv2d, then the compiled kernels."""
from typing import NamedTuple

import numpy as np

from . import _kernels
from ._geometry import check_size, conv_axis, gather, scatter_add
from ._validation import (
    as_float_array,
    as_int64,
    batched,
    check_same_dtype,
    nonnegative_pair,
    positive_pair,
)


class ConvGeometry(NamedTuple):
    """Everything a conv kernel needs besides the arrays; padding may be asymmetric ('same')."""

    stride: tuple
    dilation: tuple
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    groups: int
    out_h: int
    out_w: int


def conv_output_size(size, pad_lo, pad_hi, kernel, stride, dilation):
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def _resolve_padding(padding, stride, dilation, kernel_hw):
    """Return (top, bottom, left, right) following torch's rules for ints, pairs, 'valid' and 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' requires stride 1, got stride={stride}")
            pads = []
            for d, k in zip(dilation, kernel_hw):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]  # the odd extra goes bottom/right
            return tuple(pads)
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = nonnegative_pair(padding, "padding")
    return (ph, ph, pw, pw)


def conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups):
    """Validate shapes and hyper-parameters (both 4-D shapes); return a ConvGeometry."""
    n, c, h, w = input_shape
    k, cg, r, s = weight_shape
    groups = as_int64(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if c % groups:
        raise ValueError(f"groups={groups} must divide the input channels C={c}")
    if k % groups:
        raise ValueError(f"groups={groups} must divide the output channels K={k} (weight.shape[0])")
    if cg * groups != c:
        raise ValueError(
            f"weight.shape[1]={cg} times groups={groups} must equal the input channels C={c} "
            f"(input shape {tuple(input_shape)}, weight shape {tuple(weight_shape)})"
        )
    if r < 1 or s < 1:
        raise ValueError(f"weight must have a non-empty kernel, got shape {tuple(weight_shape)}")
    if h < 1 or w < 1:  # as torch: only the batch or channel dimensions may be empty
        raise ValueError(f"input must have non-empty spatial dimensions, got shape {tuple(input_shape)}")
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    pt, pb, pl, pr = _resolve_padding(padding, stride, dilation, (r, s))
    oh = conv_output_size(h, pt, pb, r, stride[0], dilation[0])
    ow = conv_output_size(w, pl, pr, s, stride[1], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"output size ({oh}, {ow}) is < 1: input {h}x{w} with padding {padding!r} is too small "
            f"for a {r}x{s} kernel with dilation {dilation}"
        )
    return ConvGeometry(stride, dilation, pt, pb, pl, pr, groups, oh, ow)


class KernelPlan(NamedTuple):
    """The equivalent small problem the kernels run (see fastconv._geometry): its geometry and,
    per gathered axis, the source row of every row of the gathered input (None: not gathered)."""

    geometry: ConvGeometry
    rows_h: object
    rows_w: object

    @property
    def gathered(self):
        return self.rows_h is not None or self.rows_w is not None


def kernel_plan(input_shape, weight_shape, g):
    """Reduce the validated geometry ``g`` axis by axis to what the kernels should run."""
    _, _, h, w = input_shape
    _, _, r, s = weight_shape
    ah = conv_axis(h, g.pad_top, r, g.stride[0], g.dilation[0], g.out_h)
    aw = conv_axis(w, g.pad_left, s, g.stride[1], g.dilation[1], g.out_w)
    kg = ConvGeometry((ah.stride, aw.stride), (ah.dilation, aw.dilation), ah.pad, 0, aw.pad, 0,
                      g.groups, g.out_h, g.out_w)
    return KernelPlan(kg, ah.rows, aw.rows)


def fft_grid_fits(input_shape, weight_shape, g):
    """Whether the FFT's grid (the whole padded input) stays near the size of the problem: not
    so with paddings far beyond what the windows read, where the FFT path hands the call to the
    direct kernels (same result, without a grid of the padding's size)."""
    for n, lo, hi, taps, out in ((input_shape[2], g.pad_top, g.pad_bottom, weight_shape[2], g.out_h),
                                 (input_shape[3], g.pad_left, g.pad_right, weight_shape[3], g.out_w)):
        if n + lo + hi > 2 * (n + out * taps) + 64:
            return False
    return True


def _kernel_shape(input_shape, plan):
    """The shape of the input the kernels read (see _kernel_input)."""
    n, c, h, w = input_shape
    return (n, c, h if plan.rows_h is None else plan.rows_h.size,
            w if plan.rows_w is None else plan.rows_w.size)


def _kernel_input(x4, plan):
    """The input the kernels read: x4 itself, or its gathered rows/columns (zeros for padding)."""
    if not plan.gathered:
        return x4
    check_size(_kernel_shape(x4.shape, plan), x4.itemsize, "the gathered input")
    return gather(x4, plan.rows_h, plan.rows_w, 0)


def _check_conv_arrays(input, weight, bias):
    input = as_float_array(input, "input")
    weight = as_float_array(weight, "weight")
    check_same_dtype("input", input, weight=weight)
    if bias is not None:
        bias = as_float_array(bias, "bias")
        check_same_dtype("input", input, bias=bias)
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D (K, C // groups, R, S), got shape {weight.shape}")
    x4, unbatched = batched(input, "input")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
    return x4, unbatched, weight, bias


def _check_algorithm(algorithm):
    if not (isinstance(algorithm, str) and algorithm in ("auto", "direct", "fft")):
        raise ValueError(f"algorithm must be 'auto', 'direct' or 'fft', got {algorithm!r}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto"):
    r"""2-D convolution (cross-correlation) over an NCHW batch, as ``torch.nn.functional.conv2d``.

    Args:
        input: array of shape ``(N, C, H, W)`` or unbatched ``(C, H, W)``; float32 or float64.
        weight: array of shape ``(K, C // groups, R, S)``, same dtype as ``input``.
        bias: optional array of shape ``(K,)``. Default: ``None``.
        stride: int or pair ``(sH, sW)``, >= 1. Default: 1.
        padding: int or pair ``(pH, pW)`` of zeros added on both sides, or ``'valid'`` (no
            padding) or ``'same'`` (output size = input size; needs stride 1; an odd total padding
            puts the extra row/column at the bottom/right). Default: 0.
        dilation: int or pair, spacing between kernel elements, >= 1. Default: 1.
        groups: int, splits the input channels and the output channels into ``groups`` blocks,
            each convolved on its own (``groups == C == K`` is a depthwise convolution). Default: 1.
        algorithm: keyword-only; ``'direct'`` (the compiled kernels), ``'fft'`` (the convolution
            theorem, :func:`fastconv.fft.conv2d_fft`) or ``'auto'``, which is ``'direct'``. The
            FFT is opt-in because it can be less exact on the data it is given: its rounding
            error at every output scales with the largest values of the whole image (one
            outlier of 1e8 in N(0, 1) float32 data puts errors in the tens on outputs far from
            it, where the direct kernels err by less than 1e-3), and one inf or NaN makes every
            output of its image non-finite (the direct kernels, as torch: only the outputs that
            see it). For large kernels on well-scaled, finite data it can be much faster
            (:func:`fastconv.fft.prefer_fft` predicts where). Default: ``'auto'``.

    Returns:
        ``(N, K, OH, OW)`` (or ``(K, OH, OW)`` for unbatched input), dtype of ``input``, with
        ``OH = (H + pT + pB - dilation*(R-1) - 1) // stride + 1`` (likewise OW).

    Inputs are never modified; any array NumPy can describe is accepted (views, transposes,
    negative or zero strides, read-only arrays, memmaps; byte-swapped or unaligned arrays are
    copied to native order first). As in torch, the zero padding takes part in the products: an
    inf or NaN weight makes the outputs whose window overlaps the padding NaN.

    Like torch, stride, padding and dilation take any value up to ``2**63 - 1`` (a larger one
    is a ``ValueError``): the kernels run an equivalent small geometry (see
    ``fastconv._geometry``), so a huge stride or padding costs no memory. A result larger
    than the machine's physical memory is a ``ValueError`` raised before anything is allocated.
    """
    _check_algorithm(algorithm)
    if algorithm == "fft":
        from . import fft  # lazy: fastconv.fft imports this module
        return fft.conv2d_fft(input, weight, bias, stride, padding, dilation, groups)
    x4, unbatched, weight, bias = _check_conv_arrays(input, weight, bias)
    g = conv_geometry(x4.shape, weight.shape, stride, padding, dilation, groups)
    shape = (x4.shape[0], weight.shape[0], g.out_h, g.out_w)
    check_size(shape, x4.itemsize, "the output")
    out = _kernels.empty(shape, x4.dtype)
    if out.size and weight.shape[1] == 0:  # no input channels: only the bias remains
        out[...] = 0 if bias is None else bias[None, :, None, None]
    elif out.size:
        plan = kernel_plan(x4.shape, weight.shape, g)
        _kernels.conv2d_forward(_kernel_input(x4, plan), np.ascontiguousarray(weight),
                                None if bias is None else np.ascontiguousarray(bias), out,
                                plan.geometry)
    return out[0] if unbatched else out


def check_backward_args(grad_output, input, weight, stride, padding, dilation, groups, needs):
    """Validate the arguments of a conv2d backward pass (any algorithm).

    Returns ``(grad_output4, input4, unbatched, weight, geometry, (need_input, need_weight,
    need_bias))`` with 4-D views of grad_output and input.
    """
    if len(needs) != 3:
        raise ValueError(f"needs must be three booleans (input, weight, bias), got {needs!r}")
    needs = tuple(bool(v) for v in needs)
    grad_output = as_float_array(grad_output, "grad_output")
    x4, unbatched, weight, _ = _check_conv_arrays(input, weight, None)
    check_same_dtype("input", x4, grad_output=grad_output)
    g = conv_geometry(x4.shape, weight.shape, stride, padding, dilation, groups)
    check_size((x4.shape[0], weight.shape[0], g.out_h, g.out_w), x4.itemsize, "the output")
    go4, go_unbatched = batched(grad_output, "grad_output")
    expected = (x4.shape[0], weight.shape[0], g.out_h, g.out_w)
    if go4.shape != expected or go_unbatched != unbatched:
        want = expected[1:] if unbatched else expected
        raise ValueError(f"grad_output must have shape {want}, got {grad_output.shape}")
    return go4, x4, unbatched, weight, g, needs


def _tap_range(out_size, in_size, pad, offset, stride):
    """Output positions ``lo..hi-1`` (along one axis) whose input position
    ``o * stride - pad + offset`` lies inside ``[0, in_size)``; the first such input position."""
    lo = max(0, -((offset - pad) // stride))           # ceil((pad - offset) / stride)
    hi = min(out_size, (in_size - 1 + pad - offset) // stride + 1)
    return lo, hi, lo * stride - pad + offset


def _grad_input_by_taps(go4, weight, input_shape, g):
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


def _zero_gradients(input_shape, unbatched, weight_shape, dtype, needs):
    """The gradients of a convolution with an empty output (no image or no output channel):
    zeros, with no plan made for its geometry, which may be huge."""
    grad_input = np.zeros(input_shape[1:] if unbatched else input_shape, dtype=dtype)
    grads = (grad_input, np.zeros(weight_shape, dtype=dtype), np.zeros(weight_shape[0], dtype))
    return tuple(v if need else None for v, need in zip(grads, needs))


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1,
                    needs=(True, True, True), *, algorithm="auto"):
    r"""Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Args:
        grad_output: ``(N, K, OH, OW)`` (or ``(K, OH, OW)`` with unbatched ``input``), the
            gradient of the loss with respect to the output of ``conv2d``.
        input: the ``(N, C, H, W)`` / ``(C, H, W)`` input that was given to ``conv2d``.
        weight: the ``(K, C // groups, R, S)`` weight that was given to ``conv2d``.
        stride, padding, dilation, groups: as in :func:`conv2d`.
        needs: three booleans ``(input, weight, bias)``; an entry that is False is not computed
            and returned as ``None``. Default: ``(True, True, True)``.
        algorithm: keyword-only, ``'auto'`` (meaning ``'direct'``), ``'direct'`` or ``'fft'``
            (:func:`fastconv.fft.conv2d_backward_fft`, opt-in: see :func:`conv2d` for when it
            is less exact). Default: ``'auto'``.

    Returns:
        ``(grad_input, grad_weight, grad_bias)`` with the shapes of ``input``, ``weight`` and
        ``(K,)``; grad_bias is ``grad_output`` summed over N, OH and OW. Each result is bitwise
        identical for any number of threads.

    Non-finite values behave as in torch (float64 CPU): grad_input sums only the real (output
    position, kernel tap) pairs, so when the weight holds inf or NaN an input position that no
    window reaches is 0, and one that only finite taps reach stays finite; grad_weight, like
    the forward pass, multiplies the zero padding too, so an inf or NaN in ``grad_output`` next
    to the padding gives NaN, in torch as here.
    """
    _check_algorithm(algorithm)
    if algorithm == "fft":
        from . import fft  # lazy: fastconv.fft imports this module
        return fft.conv2d_backward_fft(grad_output, input, weight, stride, padding, dilation,
                                       groups, needs)
    go4, x4, unbatched, weight, g, (need_input, need_weight, need_bias) = check_backward_args(
        grad_output, input, weight, stride, padding, dilation, groups, needs)
    grad_input = grad_weight = grad_bias = None
    go4 = np.ascontiguousarray(go4)
    if not go4.size:
        return _zero_gradients(x4.shape, unbatched, weight.shape, x4.dtype,
                               (need_input, need_weight, need_bias))
    plan = kernel_plan(x4.shape, weight.shape, g)
    kg = plan.geometry
    xk = _kernel_input(x4, plan) if need_weight and go4.size and weight.size else x4
    if need_input:
        runs = x4.size and go4.size and weight.size
        if runs and not np.isfinite(weight).all():
            check_size(x4.shape, x4.itemsize, "grad_input")
            grad_input = _grad_input_by_taps(go4, weight, x4.shape, g)
        else:
            shape = _kernel_shape(x4.shape, plan)
            check_size(shape, x4.itemsize, "grad_input")
            # with stride 1 the kernel writes every element; with a stride, the positions that no
            # tap reaches keep the zeros
            grad_input = _kernels.empty(shape, x4.dtype, zero=not runs or kg.stride != (1, 1))
            if runs:
                _kernels.conv2d_grad_input(go4, np.ascontiguousarray(weight), grad_input, kg)
            if plan.gathered:  # back from the gathered rows to the input's, in a fixed order
                grad_input = scatter_add(x4.shape, x4.dtype, grad_input, plan.rows_h,
                                         plan.rows_w)
        if unbatched:
            grad_input = grad_input[0]
    if need_weight:
        grad_weight = np.zeros(weight.shape, dtype=x4.dtype)
        if go4.size and weight.size:
            _kernels.conv2d_grad_weight(go4, xk, grad_weight, kg)
    if need_bias:
        grad_bias = np.zeros(weight.shape[0], dtype=x4.dtype)
        if go4.size:
            _kernels.conv2d_grad_bias(go4, grad_bias)
    return grad_input, grad_weight, grad_bias
