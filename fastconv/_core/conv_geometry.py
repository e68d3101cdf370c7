"""The argument rules of a convolution, shared by every backend: the arrays (dtype, shapes),
the hyper-parameters (stride, padding -- ints, pairs, 'valid', 'same' --, dilation, groups) and the
output size, as ``torch.nn.functional.conv2d`` defines them. Plain Python; no kernel is loaded."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Sequence, Tuple

from .args import (
    as_float_array,
    as_int64,
    batched,
    check_same_dtype,
    nonnegative_pair,
    positive_pair,
)
from .geometry import check_size

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from .args import FloatArray, IntOrPair, IntPair, Needs, Padding, Shape


class ConvGeometry(NamedTuple):
    """Everything a conv kernel needs besides the arrays; padding may be asymmetric ('same')."""

    stride: IntPair
    dilation: IntPair
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    groups: int
    out_h: int
    out_w: int


def conv_output_size(size: int, pad_lo: int, pad_hi: int, kernel: int, stride: int,
                     dilation: int) -> int:
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def conv_padding(padding: object, stride: IntPair, dilation: IntPair,
                 kernel_hw: Sequence[int]) -> Tuple[int, ...]:
    """(top, bottom, left, right) zero padding following torch's rules for an int, a pair,
    'valid' and 'same' (the output keeps the input size: needs stride 1, and an odd total puts
    the extra row/column at the bottom/right). ``stride`` and ``dilation`` are normalised pairs,
    ``kernel_hw`` the kernel's (height, width); the layers use this rule too, so that padding
    modes other than zeros pad exactly as the functional API would."""
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


def conv_groups(groups: object, in_channels: int, out_channels: int) -> int:
    """``groups`` as an int, or TypeError/ValueError naming it when it is not >= 1 or does not
    divide the input channels and the output channels."""
    groups = as_int64(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if in_channels % groups:
        raise ValueError(f"groups={groups} must divide the input channels C={in_channels}")
    if out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide the output channels K={out_channels} (weight.shape[0])"
        )
    return groups


def conv_hyperparameters(kernel_hw: Sequence[int], stride: object, padding: object,
                         dilation: object) -> Tuple[IntPair, IntPair, Tuple[int, ...]]:
    """The rules of stride, dilation and padding, which do not depend on the input: returns
    ``(stride, dilation, (top, bottom, left, right))`` with stride and dilation as pairs."""
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    return stride, dilation, conv_padding(padding, stride, dilation, kernel_hw)


_GEOMETRIES: Dict[Any, ConvGeometry] = {}  # (shapes, hyper-parameters) -> ConvGeometry
_MAX_GEOMETRIES = 1024


def _is_plain(value: object) -> bool:
    """An int, or a tuple of two ints: exact ``int`` objects (not bool, which hashes as an int
    and must still be refused by the checks)."""
    if type(value) is int:
        return True
    return type(value) is tuple and len(value) == 2 and type(value[0]) is int \
        and type(value[1]) is int


def conv_geometry(input_shape: Sequence[int], weight_shape: Sequence[int], stride: object,
                  padding: object, dilation: object, groups: object) -> ConvGeometry:
    """Validate shapes and hyper-parameters (both 4-D shapes); return a ConvGeometry.

    A model calls a layer with the same arguments again and again, and the checks cost
    microseconds, as much as a small kernel: the geometry of valid plain arguments (ints, pairs
    of ints, 'same' or 'valid') is kept, at most ``_MAX_GEOMETRIES`` of them. Anything else, and
    every invalid call, runs the checks."""
    if type(groups) is int and _is_plain(stride) and _is_plain(dilation) and (
            type(padding) is str or _is_plain(padding)):
        key = (tuple(input_shape), tuple(weight_shape), stride, padding, dilation, groups)
        g = _GEOMETRIES.get(key)
        if g is None:
            g = _conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups)
            if len(_GEOMETRIES) < _MAX_GEOMETRIES:
                _GEOMETRIES[key] = g
        return g
    return _conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups)


def _conv_geometry(input_shape: Sequence[int], weight_shape: Sequence[int], stride: object,
                   padding: object, dilation: object, groups: object) -> ConvGeometry:
    n, c, h, w = input_shape
    k, cg, r, s = weight_shape
    groups = conv_groups(groups, c, k)
    if cg * groups != c:
        raise ValueError(
            f"weight.shape[1]={cg} times groups={groups} must equal the input channels C={c} "
            f"(input shape {tuple(input_shape)}, weight shape {tuple(weight_shape)})"
        )
    if r < 1 or s < 1:
        raise ValueError(f"weight must have a non-empty kernel, got shape {tuple(weight_shape)}")
    if h < 1 or w < 1:  # as torch: only the batch or channel dimensions may be empty
        raise ValueError(f"input must have non-empty spatial dimensions, got shape {tuple(input_shape)}")
    stride, dilation, (pt, pb, pl, pr) = conv_hyperparameters((r, s), stride, padding, dilation)
    oh = conv_output_size(h, pt, pb, r, stride[0], dilation[0])
    ow = conv_output_size(w, pl, pr, s, stride[1], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"output size ({oh}, {ow}) is < 1: input {h}x{w} with padding {padding!r} is too small "
            f"for a {r}x{s} kernel with dilation {dilation}"
        )
    return ConvGeometry(stride, dilation, pt, pb, pl, pr, groups, oh, ow)


def _float_operands(input: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike],
                    weight_layout: str
                    ) -> Tuple[FloatArray, bool, FloatArray, Optional[FloatArray]]:
    """``(input4, unbatched, weight, bias)``: float arrays of one dtype, a 4-D weight (described
    as ``weight_layout`` in the error) and the input as a batch."""
    input = as_float_array(input, "input")
    weight = as_float_array(weight, "weight")
    check_same_dtype("input", input, weight=weight)
    if bias is not None:
        bias = as_float_array(bias, "bias")
        check_same_dtype("input", input, bias=bias)
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D {weight_layout}, got shape {weight.shape}")
    x4, unbatched = batched(input, "input")
    return x4, unbatched, weight, bias


def check_conv_arrays(input: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike]
                      ) -> Tuple[FloatArray, bool, FloatArray, Optional[FloatArray]]:
    x4, unbatched, weight, bias = _float_operands(input, weight, bias, "(K, C // groups, R, S)")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
    return x4, unbatched, weight, bias


def check_backward_args(grad_output: ArrayLike, input: ArrayLike, weight: ArrayLike,
                        stride: object, padding: object, dilation: object, groups: object,
                        needs: Sequence[Any]
                        ) -> Tuple[FloatArray, FloatArray, bool, FloatArray, ConvGeometry, Needs]:
    """Validate the arguments of a conv2d backward pass (any algorithm).

    Returns ``(grad_output4, input4, unbatched, weight, geometry, (need_input, need_weight,
    need_bias))`` with 4-D views of grad_output and input.
    """
    if len(needs) != 3:
        raise ValueError(f"needs must be three booleans (input, weight, bias), got {needs!r}")
    needs = tuple(bool(v) for v in needs)
    grad_output = as_float_array(grad_output, "grad_output")
    x4, unbatched, weight, _ = check_conv_arrays(input, weight, None)
    check_same_dtype("input", x4, grad_output=grad_output)
    g = conv_geometry(x4.shape, weight.shape, stride, padding, dilation, groups)
    expected = (x4.shape[0], weight.shape[0], g.out_h, g.out_w)
    check_size(expected, x4.itemsize, "the output")
    go4, go_unbatched = batched(grad_output, "grad_output")
    if go4.shape != expected or go_unbatched != unbatched:
        want = expected[1:] if unbatched else expected
        raise ValueError(f"grad_output must have shape {want}, got {grad_output.shape}")
    return go4, x4, unbatched, weight, g, needs




# ---------------------------------------------------------------------- transposed convolution
# conv_transpose2d is the adjoint of conv2d: its input plays conv2d's grad_output, its output
# conv2d's input, and its weight (C_in, C_out // groups, kH, kW) is conv2d's weight as it is.
# The rules below are torch.nn.functional.conv_transpose2d's; the stride, padding and dilation
# rules are conv2d's (conv_hyperparameters), except that padding is never a string.


class TransposeGeometry(NamedTuple):
    """A validated transposed convolution: its output size and groups, and the conv2d whose
    grad_input it is (``conv``: the geometry of conv2d from the output back to the input;
    ``conv.out_h`` may exceed the input height, by ``output_padding // stride`` when the
    output padding is allowed by the dilation only; those rows of the input count as zeros)."""

    out_h: int
    out_w: int
    output_padding: IntPair
    groups: int
    conv: ConvGeometry


def transpose_groups(groups: object, in_channels: int) -> int:
    """``groups`` as an int, or TypeError/ValueError naming it when it is not >= 1 or does not
    divide the input channels (``input.shape[1] == weight.shape[0]``)."""
    groups = as_int64(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if in_channels % groups:
        raise ValueError(f"groups={groups} must divide the input channels C_in={in_channels}")
    return groups


def transpose_hyperparameters(kernel_hw: Sequence[int], stride: object, padding: object,
                              output_padding: object, dilation: object
                              ) -> Tuple[IntPair, IntPair, IntPair, IntPair]:
    """The rules of stride, padding, output_padding and dilation, which do not depend on the
    input: returns ``(stride, (pH, pW), output_padding, dilation)``, all pairs. The output
    padding must be smaller than the stride or than the dilation (per axis), as in torch."""
    if isinstance(padding, str):
        raise ValueError(f"padding must be an int or a pair of ints for a transposed "
                         f"convolution ('valid' and 'same' are not defined), got {padding!r}")
    stride, dilation, (ph, _, pw, _) = conv_hyperparameters(kernel_hw, stride, padding, dilation)
    output_padding = nonnegative_pair(output_padding, "output_padding")
    for op, s, d in zip(output_padding, stride, dilation):
        if not (op < s or op < d):
            raise ValueError(f"output_padding must be smaller than either stride or dilation, got "
                             f"output_padding={output_padding}, stride={stride}, "
                             f"dilation={dilation}")
    return stride, (ph, pw), output_padding, dilation


def transpose_output_size(size: int, pad: int, kernel: int, stride: int, dilation: int,
                          output_padding: int) -> int:
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1


def conv_transpose_geometry(input_shape: Sequence[int], weight_shape: Sequence[int],
                            stride: object, padding: object, output_padding: object,
                            dilation: object, groups: object) -> TransposeGeometry:
    """Validate shapes and hyper-parameters (both 4-D shapes); return a TransposeGeometry."""
    n, c, h, w = input_shape
    cw, cg_out, r, s = weight_shape
    if cw != c:
        raise ValueError(
            f"weight.shape[0]={cw} must equal the input channels C_in={c} (input shape "
            f"{tuple(input_shape)}, weight shape {tuple(weight_shape)}; the weight of a "
            "transposed convolution is (C_in, C_out // groups, kH, kW))")
    groups = transpose_groups(groups, c)
    if r < 1 or s < 1:
        raise ValueError(f"weight must have a non-empty kernel, got shape {tuple(weight_shape)}")
    if h < 1 or w < 1:
        raise ValueError(f"input must have non-empty spatial dimensions, got shape "
                         f"{tuple(input_shape)}")
    stride, pads, ops, dilation = transpose_hyperparameters((r, s), stride, padding,
                                                            output_padding, dilation)
    oh, ow = (transpose_output_size(*a) for a in zip((h, w), pads, (r, s), stride, dilation, ops))
    if oh < 1 or ow < 1:
        raise ValueError(
            f"output size ({oh}, {ow}) is < 1: input {h}x{w} with padding {pads} is too small "
            f"for a {r}x{s} kernel with stride {stride} and dilation {dilation}")
    conv = conv_geometry((n, cg_out * groups, oh, ow), (c, cg_out, r, s), stride, pads,
                         dilation, groups)
    return TransposeGeometry(oh, ow, ops, groups, conv)


def check_transpose_arrays(input: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike]
                           ) -> Tuple[FloatArray, bool, FloatArray, Optional[FloatArray]]:
    """``(input4, unbatched, weight, bias)`` of a transposed convolution; the bias's shape is
    checked by :func:`check_transpose_bias` once the groups are known."""
    return _float_operands(input, weight, bias, "(C_in, C_out // groups, kH, kW)")


def check_transpose_bias(bias: Optional[NDArray[Any]], weight: NDArray[Any], groups: int) -> None:
    out_channels = weight.shape[1] * groups
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},) (C_out = weight.shape[1] * "
                         f"groups), got {bias.shape}")


def check_transpose_backward_args(grad_output: ArrayLike, input: ArrayLike, weight: ArrayLike,
                                  stride: object, padding: object, output_padding: object,
                                  dilation: object, groups: object, needs: Sequence[Any]
                                  ) -> Tuple[FloatArray, FloatArray, bool, FloatArray,
                                             TransposeGeometry, Needs]:
    """Validate the arguments of a conv_transpose2d backward pass. Returns ``(grad_output4,
    input4, unbatched, weight, geometry, needs)`` with 4-D views of grad_output and input."""
    if len(needs) != 3:
        raise ValueError(f"needs must be three booleans (input, weight, bias), got {needs!r}")
    needs = tuple(bool(v) for v in needs)
    grad_output = as_float_array(grad_output, "grad_output")
    x4, unbatched, weight, _ = check_transpose_arrays(input, weight, None)
    check_same_dtype("input", x4, grad_output=grad_output)
    t = conv_transpose_geometry(x4.shape, weight.shape, stride, padding, output_padding,
                                dilation, groups)
    expected = (x4.shape[0], weight.shape[1] * t.groups, t.out_h, t.out_w)
    check_size(expected, x4.itemsize, "the output")
    go4, go_unbatched = batched(grad_output, "grad_output")
    if go4.shape != expected or go_unbatched != unbatched:
        want = expected[1:] if unbatched else expected
        raise ValueError(f"grad_output must have shape {want}, got {grad_output.shape}")
    return go4, x4, unbatched, weight, t, needs
