"""conv2d and its gradients: the argument rules of ``torch.nn.functional.conv2d``
(``conv_geometry``), then the backend the dispatcher picks (``dispatch``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from . import bf16, dispatch
from .args import restore_batch
from .conv_geometry import check_backward_args, check_conv_arrays, conv_geometry
from .epilogue import NONE, check_activation, check_output, masked_grad
from .geometry import check_size

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .args import FloatArray, Grads, IntOrPair, Padding
    from .epilogue import Epilogue


def _forward(algorithm: str, input: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike],
             stride: object, padding: object, dilation: object, groups: object,
             epilogue: Epilogue = NONE, precision: Optional[str] = None) -> FloatArray:
    x4, unbatched, weight, bias = check_conv_arrays(input, weight, bias)
    g = conv_geometry(x4.shape, weight.shape, stride, padding, dilation, groups)
    check_size((x4.shape[0], weight.shape[0], g.out_h, g.out_w), x4.itemsize, "the output")
    use_bf16 = bf16.uses_bf16(precision, x4.dtype)
    return restore_batch(dispatch.forward(algorithm, x4, weight, bias, g, epilogue, use_bf16),
                         unbatched)


def _backward(algorithm: str, grad_output: ArrayLike, input: ArrayLike, weight: ArrayLike,
              stride: object, padding: object, dilation: object, groups: object,
              needs: Sequence[bool], epilogue: Epilogue = NONE,
              output: Optional[ArrayLike] = None, precision: Optional[str] = None) -> Grads:
    go4, x4, unbatched, weight, g, needs = check_backward_args(
        grad_output, input, weight, stride, padding, dilation, groups, needs)
    out4 = check_output(output, go4, unbatched, epilogue)
    if out4 is not None:
        go4 = masked_grad(go4, out4, epilogue)
    use_bf16 = bf16.uses_bf16(precision, x4.dtype)
    grad_input, grad_weight, grad_bias = dispatch.backward(algorithm, go4, x4, weight, g, needs,
                                                           use_bf16)
    return restore_batch(grad_input, unbatched), grad_weight, grad_bias


def conv2d(input: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None,
           stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1,
           groups: int = 1, *, algorithm: str = "auto", activation: Optional[str] = None,
           negative_slope: float = 0.01, precision: Optional[str] = None) -> FloatArray:
    r"""2-D convolution (cross-correlation) over an NCHW batch, as ``torch.nn.functional.conv2d``.

    Args:
        input: array of shape ``(N, C, H, W)`` or unbatched ``(C, H, W)``; float32, float64 or
            bfloat16 (``ml_dtypes.bfloat16``: then weight and bias too, and the result is
            bfloat16, accumulated in float32 and rounded once).
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
        activation: keyword-only; ``None``, ``'relu'``, ``'relu6'`` or ``'leaky_relu'``: applied
            to every output in the kernels' epilogue, where the bias is added, before the output
            is stored (no second pass over it). The result is bitwise that of
            ``torch.relu`` / ``torch.nn.functional.relu6`` / ``leaky_relu(..., negative_slope)``
            of the plain convolution, NaN and -0.0 included (``algorithm='fft'`` applies it
            after its own output). Default: ``None``.
        negative_slope: keyword-only; ``leaky_relu``'s slope for ``y <= 0``, a real number
            >= 0 (rounded to the dtype, as in torch): :func:`conv2d_backward` reads the
            activation's gradient off its output, which a negative slope would make ambiguous.
            Ignored by the other activations. Default: 0.01.
        precision: keyword-only; ``'ieee'`` (exact float32), ``'bf16'`` (float32 arrays: the
            input and weight rounded to bfloat16, their products accumulated in float32; about
            twice as fast on CPUs with AVX512-BF16, within a float32 sum's rounding of the
            exact result for the rounded inputs: see :func:`fastconv.set_precision`) or ``None``,
            the process-wide default of :func:`fastconv.set_precision` (``'ieee'`` unless set;
            it leaves float64 alone). ``'bf16'`` on float64 arrays, or with
            ``algorithm='fft'``, is a ``ValueError``. Default: ``None``.

    Returns:
        ``(N, K, OH, OW)`` (or ``(K, OH, OW)`` for unbatched input), dtype of ``input``, with
        ``OH = (H + pT + pB - dilation*(R-1) - 1) // stride + 1`` (likewise OW).

    Inputs are never modified; any array NumPy can describe is accepted (views, transposes,
    negative or zero strides, read-only arrays, memmaps; byte-swapped or unaligned arrays are
    copied to native order first). As in torch, the zero padding takes part in the products: an
    inf or NaN weight makes the outputs whose window overlaps the padding NaN.

    Like torch, stride, padding and dilation take any value up to ``2**63 - 1`` (a larger one
    is a ``ValueError``): the kernels run an equivalent small geometry (see
    ``fastconv._core.geometry``), so a huge stride or padding costs no memory. A result larger
    than the machine's physical memory is a ``ValueError`` raised before anything is allocated.

    With :func:`fastconv.set_flush_denormal` on, ``leaky_relu``'s products that would be
    subnormal are zero, as every other result of the kernels.
    """
    dispatch.check_algorithm(algorithm)
    epilogue = check_activation(activation, negative_slope)
    bf16.check_precision(precision)
    wide = bf16.widen_operands(input=input, weight=weight, bias=bias)
    if wide is not None:
        y = _forward(algorithm, wide["input"], wide["weight"], wide["bias"], stride, padding,
                     dilation, groups, epilogue, precision or bf16.arrays_precision())
        return bf16.narrow(y)
    return _forward(algorithm, input, weight, bias, stride, padding, dilation, groups, epilogue,
                    precision)


def conv2d_backward(grad_output: ArrayLike, input: ArrayLike, weight: ArrayLike,
                    stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1,
                    groups: int = 1, needs: Sequence[bool] = (True, True, True), *,
                    algorithm: str = "auto", activation: Optional[str] = None,
                    negative_slope: float = 0.01, output: Optional[ArrayLike] = None,
                    precision: Optional[str] = None) -> Grads:
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
        activation: keyword-only; the ``activation`` given to :func:`conv2d` (``None``,
            ``'relu'``, ``'relu6'`` or ``'leaky_relu'``): ``grad_output`` is then the gradient
            with respect to the activated output, and is multiplied by the activation's
            derivative, read off ``output``: relu ``0 if output <= 0 else 1`` (torch's rule,
            NaN passes), relu6 ``1 if 0 < output < 6 else 0``, leaky_relu ``1 if output > 0
            else negative_slope`` -- torch's gradients bit for bit (see
            ``fastconv._core.epilogue`` for why reading the output is equivalent). Default:
            ``None``.
        negative_slope: keyword-only; as in :func:`conv2d`. Default: 0.01.
        output: keyword-only; the activated output :func:`conv2d` returned, shape and dtype of
            ``grad_output``; required with an activation, not accepted without one. Default:
            ``None``.
        precision: keyword-only; as in :func:`conv2d`: with ``'bf16'``, grad_input multiplies
            ``grad_output`` and ``weight`` rounded to bfloat16, grad_weight ``grad_output`` and
            ``input`` rounded so, accumulating in float32 (grad_bias multiplies nothing and sums
            ``grad_output`` as it is). With bfloat16 arrays (all of ``grad_output``, ``input``,
            ``weight`` and ``output``), the gradients are bfloat16. Default: ``None``.

    Returns:
        ``(grad_input, grad_weight, grad_bias)`` with the shapes of ``input``, ``weight`` and
        ``(K,)``; grad_bias is ``grad_output`` (times the activation's derivative) summed over
        N, OH and OW. Each result is bitwise identical for any number of threads.

    Non-finite values behave as in torch (float64 CPU): grad_input sums only the real (output
    position, kernel tap) pairs, so when the weight holds inf or NaN an input position that no
    window reaches is 0, and one that only finite taps reach stays finite; grad_weight, like
    the forward pass, multiplies the zero padding too, so an inf or NaN in ``grad_output`` next
    to the padding gives NaN, in torch as here.

    With an activation, the masked gradient is formed once, in one compiled pass over
    ``grad_output`` and ``output`` (neither is modified), and read by the three gradients.
    """
    dispatch.check_algorithm(algorithm)
    epilogue = check_activation(activation, negative_slope)
    bf16.check_precision(precision)
    wide = bf16.widen_operands(grad_output=grad_output, input=input, weight=weight,
                               output=output)
    if wide is not None:
        grads = _backward(algorithm, wide["grad_output"], wide["input"], wide["weight"], stride,
                          padding, dilation, groups, needs, epilogue, wide["output"],
                          precision or bf16.arrays_precision())
        return bf16.narrow_all(*grads)
    return _backward(algorithm, grad_output, input, weight, stride, padding, dilation, groups,
                     needs, epilogue, output, precision)


def conv2d_fft(input: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None,
               stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1,
               groups: int = 1) -> FloatArray:
    r"""2-D convolution (cross-correlation) computed with FFTs, as :func:`fastconv.conv2d`.

    Same arguments, validation and result (within float tolerance) as
    ``fastconv.conv2d(..., algorithm='direct')``; this is what ``algorithm='fft'`` runs.

    Args:
        input: array of shape ``(N, C, H, W)`` or unbatched ``(C, H, W)``; float32 or float64.
        weight: array of shape ``(K, C // groups, R, S)``, same dtype as ``input``.
        bias: optional array of shape ``(K,)``. Default: ``None``.
        stride: int or pair ``(sH, sW)``, >= 1. Default: 1.
        padding: int or pair ``(pH, pW)`` of zeros added on both sides, or ``'valid'`` or
            ``'same'``. Default: 0.
        dilation: int or pair, spacing between kernel elements, >= 1. Default: 1.
        groups: int, number of blocked connections from input to output channels. Default: 1.

    Returns:
        ``(N, K, OH, OW)`` (or ``(K, OH, OW)``), dtype of ``input``.

    The work is ``O((N*C + K*C/g + N*K) * FH*FW*log(FH*FW) + N*K*C/g * FH*FW)`` with
    ``FH x FW`` the padded input size (rounded up to a fast FFT size), independent of the kernel
    size; a stride does not reduce it (the full-resolution correlation is computed, then
    subsampled), so the direct kernels are the better choice for strided and small kernels.
    """
    return _forward("fft", input, weight, bias, stride, padding, dilation, groups)


def conv2d_backward_fft(grad_output: ArrayLike, input: ArrayLike, weight: ArrayLike,
                        stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1,
                        groups: int = 1, needs: Sequence[bool] = (True, True, True)) -> Grads:
    r"""Gradients of :func:`conv2d_fft` (and of :func:`fastconv.conv2d`), computed with FFTs.

    Same arguments, validation and results (within float tolerance) as
    ``fastconv.conv2d_backward(..., algorithm='direct')``; this is what ``algorithm='fft'`` runs.

    Args:
        grad_output: ``(N, K, OH, OW)`` (or ``(K, OH, OW)`` with unbatched ``input``).
        input: the ``(N, C, H, W)`` / ``(C, H, W)`` input that was given to ``conv2d``.
        weight: the ``(K, C // groups, R, S)`` weight that was given to ``conv2d``.
        stride, padding, dilation, groups: as in :func:`fastconv.conv2d`.
        needs: three booleans ``(input, weight, bias)``; an entry that is False is not computed
            and returned as ``None``. Default: ``(True, True, True)``.

    Returns:
        ``(grad_input, grad_weight, grad_bias)`` with the shapes of ``input``, ``weight`` and
        ``(K,)``, dtype of ``input``.
    """
    return _backward("fft", grad_output, input, weight, stride, padding, dilation, groups, needs)
