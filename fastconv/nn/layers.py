"""The layers with parameters or a geometry: convolution, pooling, flatten, linear, dropout."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .. import functional as F
from .._core.args import as_bool, as_int, positive_pair
from .._core.bf16 import check_precision, uses_bf16
from .._core.conv_geometry import (
    conv_groups,
    conv_hyperparameters,
    transpose_groups,
    transpose_hyperparameters,
    transpose_output_size,
)
from .._core.epilogue import NONE
from .._core.geometry import check_size
from .._core.pool_geometry import adaptive_output_param, pool_params
from ..filters import check_padding_mode, pad2d, pad2d_backward
from .init import float_dtype, generator, kaiming_uniform
from .module import Module, Parameter

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray

    from .._core.adaptive_pool import OutputSize
    from .._core.args import IntOrPair, IntPair, Padding
    from .._core.epilogue import Epilogue
    from .init import RngLike


def _layer_call(layer: Module, fn: Callable[..., Any], x: NDArray[Any], *args: Any,
                **kwargs: Any) -> Any:
    """``fn(x, *args, **kwargs)``, with a ValueError about the input restated as the layer's
    (which layer, on what input shape)."""
    try:
        return fn(x, *args, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{layer!r} on input of shape {x.shape}: {exc}") from None


def _init_conv_parameters(layer: Union[Conv2d, ConvTranspose2d], shape: Tuple[int, ...],
                          fan_in: int, bias: bool, dtype: DTypeLike, rng: RngLike) -> None:
    """torch's initialisation of a convolution's weight (of ``shape``) and bias: both uniform in
    +-1/sqrt(fan_in), drawn weight first."""
    dt, rng = float_dtype(dtype), generator(rng)
    check_size(shape, dt.itemsize, "the weight")
    layer.weight = Parameter(kaiming_uniform(rng, shape, fan_in, dt))
    out_channels = layer.out_channels
    layer.bias = Parameter(kaiming_uniform(rng, (out_channels,), fan_in, dt)) if bias else None
    layer._input = None


def _conv_repr(layer: Union[Conv2d, ConvTranspose2d], padding_repr: str,
               extras: Sequence[Tuple[str, str, str]] = ()) -> str:
    """torch's repr of a convolution: the channels, kernel and stride, then each setting that is
    not its default (``extras``: (name, value, default) after dilation)."""
    s = (
        f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, "
        f"stride={layer.stride}"
    )
    settings = (("padding", padding_repr, "(0, 0)"), ("dilation", str(layer.dilation), "(1, 1)"))
    for name, value, default in settings + tuple(extras):
        if value != default:
            s += f", {name}={value}"
    if layer.groups != 1:
        s += f", groups={layer.groups}"
    if layer.bias is None:
        s += ", bias=False"
    return s


class Conv2d(Module):
    """2-D convolution layer, as ``torch.nn.Conv2d``: ``padding`` an int, a pair, ``'same'`` or
    ``'valid'``; ``padding_mode`` ``'zeros'`` (default), ``'reflect'``, ``'replicate'`` or
    ``'circular'`` (torch's results, via :func:`fastconv.filters.pad2d`). ``weight``:
    ``(out_channels, in_channels // groups, kH, kW)``; ``bias``: ``(out_channels,)`` or None.
    Input ``(N, C, H, W)`` or ``(C, H, W)``. ``precision`` (keyword-only): the ``precision`` of
    :func:`fastconv.conv2d` for this layer's forward and backward, ``'ieee'``, ``'bf16'`` or
    ``None`` (the process-wide default, :func:`fastconv.set_precision`). Default: ``None``.

    The hyper-parameters follow the rules of :func:`fastconv.conv2d` (the same code checks
    them, here at construction): every value it accepts is accepted, every other one raises
    the same error."""

    _input: Optional[NDArray[Any]]
    weight: Parameter
    bias: Optional[Parameter]
    padding: Union[str, Tuple[int, ...]]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: Padding = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: DTypeLike = np.float32,
        rng: RngLike = None,
        precision: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.padding_mode = check_padding_mode(padding_mode)
        self.precision = check_precision(precision)
        if precision is not None:
            uses_bf16(precision, np.dtype(dtype))  # 'bf16' with float64 weights: an error now
        in_channels = as_int(in_channels, "in_channels")
        out_channels = as_int(out_channels, "out_channels")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.groups = conv_groups(groups, in_channels, out_channels)
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride, self.dilation, self._pads = conv_hyperparameters(
            self.kernel_size, stride, padding, dilation)
        self.padding = padding if isinstance(padding, str) else self._pads[::2]  # (top, left)
        kh, kw = self.kernel_size
        _init_conv_parameters(self, (out_channels, in_channels // self.groups, kh, kw),
                              in_channels // self.groups * kh * kw, bias, dtype, rng)

    def extra_repr(self) -> str:
        s = _conv_repr(self, repr(self.padding))
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        if self.precision is not None:
            s += f", precision={self.precision!r}"
        return s

    def _args(self) -> Dict[str, Any]:
        padding = self.padding if self.padding_mode == "zeros" else 0
        return dict(stride=self.stride, padding=padding, dilation=self.dilation, groups=self.groups,
                    precision=self.precision)

    def _explicit_pad(self) -> Tuple[int, int, int, int]:
        """(left, right, top, bottom), pad2d's order, of the non-zero padding modes: the
        padding conv2d would add (:func:`fastconv._core.conv_geometry.conv_padding`)."""
        top, bottom, left, right = self._pads
        return (left, right, top, bottom)

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        return self._forward(x)

    def _fusable_conv(self) -> bool:
        """Whether a :class:`Sequential` may run this layer with the next one's activation in
        its epilogue: the layer as written here, not a subclass or an instance whose forward or
        backward was replaced, which may compute otherwise."""
        return type(self) is Conv2d and not {"forward", "backward"} & vars(self).keys()

    def _forward(self, x: ArrayLike, epilogue: Epilogue = NONE) -> NDArray[Any]:
        """:meth:`forward`, the output activated by ``epilogue`` in the kernels' epilogue."""
        expected = f"(N, {self.in_channels}, H, W) or ({self.in_channels}, H, W)"
        x = self._check_input(x, expected)
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"{self!r}: expected input of shape {expected}, got {x.shape}")
        if self.padding_mode != "zeros":
            x = pad2d(x, self._explicit_pad(), self.padding_mode)
        bias = None if self.bias is None else self.bias.data
        out = _layer_call(self, F.conv2d, x, self.weight.data, bias, **self._args(),
                          activation=epilogue.name, negative_slope=epilogue.slope)
        self._input, self._out_shape = x, out.shape
        return out

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        return self._backward(grad_output)

    def _backward(self, grad_output: ArrayLike, epilogue: Epilogue = NONE,
                  output: Optional[NDArray[Any]] = None) -> NDArray[Any]:
        """:meth:`backward` of :meth:`_forward` with ``epilogue``, whose output was ``output``
        (``grad_output`` is then the gradient with respect to the activated output)."""
        x = self._cached("_input")
        g = self._check_grad(grad_output, self._out_shape)
        gi: Any  # (the gradients asked for are arrays, never None)
        gw: Any
        gb: Any
        gi, gw, gb = F.conv2d_backward(
            g, x, self.weight.data, **self._args(), needs=(True, True, self.bias is not None),
            activation=epilogue.name, negative_slope=epilogue.slope, output=output
        )
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        if self.padding_mode != "zeros":
            gi = pad2d_backward(gi, self._explicit_pad(), self.padding_mode)
        return gi


class ConvTranspose2d(Module):
    """2-D transposed convolution layer, as ``torch.nn.ConvTranspose2d`` (padding mode
    ``'zeros'`` only, as in torch). ``weight``: ``(in_channels, out_channels // groups, kH,
    kW)``; ``bias``: ``(out_channels,)`` or None. Input ``(N, C, H, W)`` or ``(C, H, W)``.
    ``forward(x, output_size=None)``: ``output_size`` (``(H, W)``, or the whole output shape)
    picks the output padding, as torch's does, among the sizes the stride leaves open.

    The hyper-parameters follow the rules of :func:`fastconv.conv_transpose2d` (the same code
    checks them, here at construction); weights and bias are initialised as torch's
    (Kaiming-uniform with ``fan_in = out_channels // groups * kH * kW``)."""

    _input: Optional[NDArray[Any]]
    weight: Parameter
    bias: Optional[Parameter]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrPair = 1,
        padding_mode: str = "zeros",
        *,
        dtype: DTypeLike = np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' for ConvTranspose2d (as in torch), "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode
        in_channels = as_int(in_channels, "in_channels")
        out_channels = as_int(out_channels, "out_channels")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.groups = transpose_groups(groups, in_channels)
        if out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the output channels out_channels={out_channels}"
            )
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride, self.padding, self.output_padding, self.dilation = \
            transpose_hyperparameters(self.kernel_size, stride, padding, output_padding, dilation)
        kh, kw = self.kernel_size
        # torch's fan_in is weight.shape[1] * kH * kW: the output channels per group here
        _init_conv_parameters(self, (in_channels, out_channels // self.groups, kh, kw),
                              out_channels // self.groups * kh * kw, bias, dtype, rng)

    def extra_repr(self) -> str:
        return _conv_repr(self, str(self.padding),
                          [("output_padding", str(self.output_padding), "(0, 0)")])

    def _output_padding(self, x: NDArray[Any], output_size: Optional[Sequence[int]]
                        ) -> Union[IntPair, Tuple[int, ...]]:
        """torch's rule: ``output_size`` (spatial, or the whole shape) fixes the output padding,
        which must leave it between the smallest output and that plus ``stride - 1``."""
        if output_size is None:
            return self.output_padding
        size = list(output_size) if isinstance(output_size, (tuple, list)) else output_size
        if not isinstance(size, list) or len(size) not in (2, x.ndim):
            raise ValueError(f"{self!r}: output_size must have 2 or {x.ndim} elements for a "
                             f"{x.ndim}-D input, got {output_size!r}")
        size = [as_int(v, "output_size") for v in size[-2:]]
        smallest = [transpose_output_size(n, p, k, s, d, 0) for n, p, k, s, d in
                    zip(x.shape[-2:], self.padding, self.kernel_size, self.stride, self.dilation)]
        largest = [lo + s - 1 for lo, s in zip(smallest, self.stride)]
        if any(not lo <= v <= hi for v, lo, hi in zip(size, smallest, largest)):
            raise ValueError(f"{self!r}: requested an output_size of {tuple(size)}, but valid "
                             f"sizes range from {tuple(smallest)} to {tuple(largest)} (for an "
                             f"input of {tuple(x.shape[-2:])})")
        return tuple(v - lo for v, lo in zip(size, smallest))

    def _args(self, output_padding: Sequence[int]) -> Dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, output_padding=output_padding,
                    groups=self.groups, dilation=self.dilation)

    def forward(self, x: ArrayLike, output_size: Optional[Sequence[int]] = None
                ) -> NDArray[Any]:
        expected = f"(N, {self.in_channels}, H, W) or ({self.in_channels}, H, W)"
        x = self._check_input(x, expected)
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"{self!r}: expected input of shape {expected}, got {x.shape}")
        args = self._args(self._output_padding(x, output_size))
        bias = None if self.bias is None else self.bias.data
        out = _layer_call(self, F.conv_transpose2d, x, self.weight.data, bias, **args)
        self._input, self._out_shape, self._last_args = x, out.shape, args
        return out

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        x = self._cached("_input")
        g = self._check_grad(grad_output, self._out_shape)
        gi: Any  # (the gradients asked for are arrays, never None)
        gw: Any
        gb: Any
        gi, gw, gb = F.conv_transpose2d_backward(
            g, x, self.weight.data, **self._last_args, needs=(True, True, self.bias is not None)
        )
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        return gi


def _check_pool_input(layer: Module, x: ArrayLike) -> NDArray[Any]:
    expected = "(N, C, H, W) or (C, H, W)"
    x = layer._check_input(x, expected)
    if x.ndim not in (3, 4):
        raise ValueError(f"{layer!r}: expected input of shape {expected}, got {x.shape}")
    return x


class MaxPool2d(Module):
    """Max pooling, as ``torch.nn.MaxPool2d``; ``stride=None`` means ``stride = kernel_size``.
    The forward caches the argmax indices, the backward routes each gradient to its argmax.
    The hyper-parameters follow the rules of :func:`fastconv.max_pool2d`, checked at
    construction by the same code."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False
                 ) -> None:
        super().__init__()
        p = pool_params(kernel_size, stride, padding, dilation, ceil_mode)
        self.kernel_size, self.stride, self.padding, self.dilation = p[:4]
        self.ceil_mode = p.ceil_mode
        self._indices = None

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        x = _check_pool_input(self, x)
        out, idx = _layer_call(self, F.max_pool2d, x, self.kernel_size, self.stride, self.padding,
                               self.dilation, self.ceil_mode, return_indices=True)
        self._indices, self._input_shape = idx, x.shape
        return out

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        idx = self._cached("_indices")
        g = self._check_grad(grad_output, idx.shape)
        return F.max_pool2d_backward(g, idx, self._input_shape)


class AvgPool2d(Module):
    """Average pooling, as ``torch.nn.AvgPool2d``; ``stride=None`` means
    ``stride = kernel_size``. The hyper-parameters follow the rules of
    :func:`fastconv.avg_pool2d`, checked at construction by the same code."""

    _input_shape: Optional[Tuple[int, ...]]

    def __init__(
        self,
        kernel_size: IntOrPair,
        stride: Optional[IntOrPair] = None,
        padding: IntOrPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: Optional[int] = None,
    ) -> None:
        super().__init__()
        p = pool_params(kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                        divisor_override)
        self.kernel_size, self.stride, self.padding = p[:3]
        self.ceil_mode, self.count_include_pad = p.ceil_mode, p.count_include_pad
        self.divisor_override = p.divisor_override
        self._input_shape = None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _args(self) -> Tuple[Any, ...]:
        return (
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        x = _check_pool_input(self, x)
        out = _layer_call(self, F.avg_pool2d, x, *self._args())
        self._input_shape, self._out_shape = x.shape, out.shape
        return out

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        shape = self._cached("_input_shape")
        g = self._check_grad(grad_output, self._out_shape)
        return F.avg_pool2d_backward(g, shape, *self._args())


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling, as ``torch.nn.AdaptiveAvgPool2d``: the output has the size
    ``output_size`` (an int for both axes, or a pair whose ``None`` entries keep the input's
    size) whatever the input's; ``AdaptiveAvgPool2d(1)`` is the global average pooling that ends
    most CNNs. output_size follows the rules of :func:`fastconv.adaptive_avg_pool2d`, checked at
    construction by the same code."""

    _input_shape: Optional[Tuple[int, ...]]

    def __init__(self, output_size: OutputSize) -> None:
        super().__init__()
        self.output_size = adaptive_output_param(output_size)
        self._input_shape = None

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        x = _check_pool_input(self, x)
        out = _layer_call(self, F.adaptive_avg_pool2d, x, self.output_size)
        self._input_shape, self._out_shape = x.shape, out.shape
        return out

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        shape = self._cached("_input_shape")
        g = self._check_grad(grad_output, self._out_shape)
        return F.adaptive_avg_pool2d_backward(g, shape)


class AdaptiveMaxPool2d(Module):
    """Adaptive max pooling, as ``torch.nn.AdaptiveMaxPool2d``: output_size as in
    :class:`AdaptiveAvgPool2d`. The forward caches the argmax indices, the backward routes each
    gradient to its argmax; with ``return_indices`` the forward returns ``(out, indices)``
    (torch's flat ``h * W + w`` positions) and the backward takes the gradient of ``out``."""

    def __init__(self, output_size: OutputSize, return_indices: bool = False) -> None:
        super().__init__()
        self.output_size = adaptive_output_param(output_size)
        self.return_indices = as_bool(return_indices, "return_indices")
        self._indices = None

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, x: ArrayLike
                ) -> Union[NDArray[Any], Tuple[NDArray[Any], NDArray[np.int64]]]:
        x = _check_pool_input(self, x)
        out, idx = _layer_call(self, F.adaptive_max_pool2d, x, self.output_size,
                               return_indices=True)
        self._indices, self._input_shape = idx, x.shape
        return (out, idx) if self.return_indices else out

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        idx = self._cached("_indices")
        g = self._check_grad(grad_output, idx.shape)
        return F.adaptive_max_pool2d_backward(g, idx, self._input_shape)


class Flatten(Module):
    """Flattens dimensions ``start_dim..end_dim`` into one, as ``torch.nn.Flatten``."""

    _input_shape: Optional[Tuple[int, ...]]

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = as_int(start_dim, "start_dim")
        self.end_dim = as_int(end_dim, "end_dim")
        self._input_shape = None

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        x = self._check_input(x, f"at least {max(self.start_dim, self.end_dim) + 1} dimensions")
        nd = max(x.ndim, 1)
        start, end = self.start_dim, self.end_dim
        if not (-nd <= start < nd and -nd <= end < nd) or start % nd > end % nd:
            raise ValueError(
                f"{self!r}: cannot flatten dimensions {start}..{end} of an input of shape {x.shape}"
            )
        start, end = start % nd, end % nd
        shape = x.shape[:start] + (int(np.prod(x.shape[start : end + 1])),) + x.shape[end + 1 :]
        self._input_shape = x.shape
        return x.reshape(shape)

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        shape = self._cached("_input_shape")
        return np.asarray(grad_output).reshape(shape)


class Linear(Module):
    """``y = x @ weight.T + bias``, as ``torch.nn.Linear``: ``weight`` ``(out_features,
    in_features)``, ``bias`` ``(out_features,)`` or None; input ``(..., in_features)``."""

    _input: Optional[NDArray[Any]]
    weight: Parameter
    bias: Optional[Parameter]

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: DTypeLike = np.float32, rng: RngLike = None) -> None:
        super().__init__()
        self.in_features = as_int(in_features, "in_features")
        self.out_features = as_int(out_features, "out_features")
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(
                f"in_features and out_features must be >= 1, got "
                f"{self.in_features}, {self.out_features}"
            )
        dt, rng = float_dtype(dtype), generator(rng)
        self.weight = Parameter(
            kaiming_uniform(rng, (self.out_features, self.in_features), self.in_features, dt)
        )
        self.bias = (
            Parameter(kaiming_uniform(rng, (self.out_features,), self.in_features, dt))
            if bias
            else None
        )
        self._input = None

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        expected = f"(..., {self.in_features})"
        x = self._check_input(x, expected)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape {expected}, got {x.shape}")
        out = x @ self.weight.data.T
        if self.bias is not None:
            out += self.bias.data
        self._input = x
        return out

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        x = self._cached("_input")
        g = self._check_grad(grad_output, x.shape[:-1] + (self.out_features,))
        g2 = g.reshape(-1, self.out_features)
        self.weight.accumulate(g2.T @ x.reshape(-1, self.in_features))
        if self.bias is not None:
            self.bias.accumulate(g2.sum(axis=0))
        return g @ self.weight.data


class Dropout(Module):
    """In training mode, zeroes each element with probability ``p`` and scales the others by
    ``1 / (1 - p)``; the identity in eval mode. The masks come from ``rng`` (seeded Generator)."""

    _mask: Optional[NDArray[Any]]

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__()
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
        self.p = p
        self.rng = generator(rng)
        self._mask = None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        x = self._check_input(x, "any shape")
        if not self.training or self.p == 0.0:
            self._mask = np.ones((), dtype=x.dtype)
            self._out_shape = x.shape
            return x
        if self.p == 1.0:
            mask = np.zeros(x.shape, dtype=x.dtype)
        else:
            mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype)
            mask *= x.dtype.type(1.0 / (1.0 - self.p))
        self._mask, self._out_shape = mask, x.shape
        return x * mask

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        mask = self._cached("_mask")
        g = self._check_grad(grad_output, self._out_shape)
        return g * mask
