"""conv_transpose2d and its gradients, as ``torch.nn.functional.conv_transpose2d``, on the
convolution kernels: a transposed convolution is conv2d's grad_input, and its gradients are
conv2d's forward (for its input) and conv2d's grad_weight with the roles of the two arrays
swapped (for its weight). The argument rules are in ``conv_geometry``; the computation is the
direct backend's (the compiled kernels), so every result is bitwise identical for any number of
threads and on every SIMD path, as conv2d's are."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from . import direct
from .args import restore_batch
from .bf16 import accepts_bfloat16
from .conv_geometry import (
    check_transpose_arrays,
    check_transpose_backward_args,
    check_transpose_bias,
    conv_transpose_geometry,
)
from .geometry import check_size

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .args import FloatArray, Grads, IntOrPair
    from .conv_geometry import TransposeGeometry


def _as_conv_output(x4: FloatArray, t: TransposeGeometry) -> FloatArray:
    """``x4`` as the grad_output of the conv2d ``t.conv``: as it is, or with zero rows/columns
    at the bottom/right when that conv2d's output is larger (an output padding of at least the
    stride, which a larger dilation allows, adds output positions that no input reaches)."""
    n, c, h, w = x4.shape
    if (t.conv.out_h, t.conv.out_w) == (h, w):
        return x4
    check_size((n, c, t.conv.out_h, t.conv.out_w), x4.itemsize, "the padded input")
    padded = np.zeros((n, c, t.conv.out_h, t.conv.out_w), dtype=x4.dtype)
    padded[:, :, :h, :w] = x4
    return padded


@accepts_bfloat16("input", "weight", "bias")
def conv_transpose2d(input: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None,
                     stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1,
                     dilation: IntOrPair = 1) -> FloatArray:
    r"""2-D transposed convolution over an NCHW batch, as ``torch.nn.functional.conv_transpose2d``
    (the gradient of :func:`fastconv.conv2d` with respect to its input; sometimes called
    "deconvolution").

    Args:
        input: array of shape ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``; float32 or
            float64, or bfloat16 (``ml_dtypes``: then weight and bias too; computed in float32
            on the exact widened values, the result rounded to bfloat16, as the gradients of
            :func:`conv_transpose2d_backward`).
        weight: array of shape ``(C_in, C_out // groups, kH, kW)``, same dtype as ``input``.
        bias: optional array of shape ``(C_out,)``. Default: ``None``.
        stride: int or pair ``(sH, sW)``, >= 1. Default: 1.
        padding: int or pair ``(pH, pW)``, >= 0: ``dilation * (kernel_size - 1) - padding``
            zeros are implicitly added to both sides of the input, i.e. ``padding`` rows and
            columns are cut from each side of the full output. Strings ('same', 'valid') are
            not accepted, as in torch. Default: 0.
        output_padding: int or pair, extra rows/columns added to the bottom/right of the
            output; each must be smaller than the stride or than the dilation of its axis.
            Default: 0.
        groups: int, splits the input channels and the output channels into ``groups``
            blocks, each transposed-convolved on its own. Default: 1.
        dilation: int or pair, spacing between kernel elements, >= 1. Default: 1.

    Returns:
        ``(N, C_out, OH, OW)`` (or ``(C_out, OH, OW)`` for unbatched input), dtype of ``input``,
        with ``OH = (H - 1) * sH - 2 * pH + dH * (kH - 1) + output_padding_H + 1`` (likewise OW).

    Inputs are never modified. The result is bitwise identical for any number of threads. As in
    torch, an output sums only the real (input position, kernel tap) products that reach it: an
    inf or NaN in the weight affects only the outputs its tap reaches.
    """
    x4, unbatched, weight, bias = check_transpose_arrays(input, weight, bias)
    t = conv_transpose_geometry(x4.shape, weight.shape, stride, padding, output_padding,
                                dilation, groups)
    check_transpose_bias(bias, weight, t.groups)
    out_shape = (x4.shape[0], weight.shape[1] * t.groups, t.out_h, t.out_w)
    check_size(out_shape, x4.itemsize, "the output")
    out = direct.grad_input(_as_conv_output(x4, t), out_shape, weight, t.conv)
    if bias is not None and out.size:
        out += bias[None, :, None, None]
    return restore_batch(out, unbatched)


@accepts_bfloat16("grad_output", "input", "weight")
def conv_transpose2d_backward(grad_output: ArrayLike, input: ArrayLike, weight: ArrayLike,
                              stride: IntOrPair = 1, padding: IntOrPair = 0,
                              output_padding: IntOrPair = 0, groups: int = 1,
                              dilation: IntOrPair = 1,
                              needs: Sequence[bool] = (True, True, True)) -> Grads:
    r"""Gradients of :func:`conv_transpose2d` with respect to its input, weight and bias.

    Args:
        grad_output: ``(N, C_out, OH, OW)`` (or ``(C_out, OH, OW)`` with unbatched ``input``),
            the gradient of the loss with respect to the output of ``conv_transpose2d``.
        input: the ``(N, C_in, H, W)`` / ``(C_in, H, W)`` input given to ``conv_transpose2d``.
        weight: the ``(C_in, C_out // groups, kH, kW)`` weight given to ``conv_transpose2d``.
        stride, padding, output_padding, groups, dilation: as in :func:`conv_transpose2d`.
        needs: three booleans ``(input, weight, bias)``; an entry that is False is not computed
            and returned as ``None``. Default: ``(True, True, True)``.

    Returns:
        ``(grad_input, grad_weight, grad_bias)`` with the shapes of ``input``, ``weight`` and
        ``(C_out,)``, dtype of ``input``: grad_input is ``conv2d(grad_output, weight, stride,
        padding, dilation, groups)``, grad_weight conv2d's grad_weight with ``grad_output`` as
        its input and ``input`` as its grad_output, grad_bias ``grad_output`` summed over N, OH
        and OW. Each result is bitwise identical for any number of threads.
    """
    go4, x4, unbatched, weight, t, needs = check_transpose_backward_args(
        grad_output, input, weight, stride, padding, output_padding, dilation, groups, needs)
    need_input, need_weight, need_bias = needs
    grad_input = grad_weight = grad_bias = None
    if need_input:
        n, c, h, w = x4.shape
        full = direct.forward(go4, weight, None, t.conv)
        if full.shape[2:] != (h, w):  # the rows/columns of _as_conv_output's zero padding
            full = np.ascontiguousarray(full[:, :, :h, :w])
        grad_input = restore_batch(full, unbatched)
    if need_weight:
        grad_weight = direct.backward(_as_conv_output(x4, t), go4, weight, t.conv,
                                      (False, True, False))[1]
    if need_bias:
        grad_bias = direct.grad_bias(go4)
    return grad_input, grad_weight, grad_bias
