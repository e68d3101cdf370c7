r"""fastconv behind PyTorch's autograd: functions, modules, and a one-call swap for CPU models.

Needs PyTorch (any 2.x, CPU build or not); fastconv itself never depends on it. Three layers::

    import fastconv.torch as fct

    y = fct.conv2d(x, w, b, stride=1, padding=1)     # like torch.nn.functional.conv2d
    conv = fct.Conv2d(3, 16, 3, padding=1)           # a torch.nn.Conv2d running on fastconv
    up = fct.ConvTranspose2d(16, 8, 4, stride=2, padding=1)  # a torch.nn.ConvTranspose2d
    model = fct.swap_modules(model)                  # every supported layer of a model, in place
    # equivalently: model.apply(fct.swap_modules)

- :func:`conv2d`, :func:`conv_transpose2d`, :func:`max_pool2d`, :func:`avg_pool2d`,
  :func:`adaptive_avg_pool2d`, :func:`adaptive_max_pool2d` have the signatures of their
  ``torch.nn.functional`` namesakes and are ``torch.autograd.Function``\ s
  (:class:`Conv2dFunction`, ...): gradients flow to every input that requires one, and
  ``torch.no_grad()`` / ``torch.inference_mode()`` skip the bookkeeping. Second derivatives are
  not implemented: a backward pass with ``create_graph=True`` through them raises instead of
  silently dropping the second-order terms.
- :class:`Conv2d`, :class:`ConvTranspose2d`, :class:`MaxPool2d`, :class:`AvgPool2d`,
  :class:`AdaptiveAvgPool2d`, :class:`AdaptiveMaxPool2d` subclass ``torch.nn.Conv2d``, ... and
  add no state: same constructor, parameters, buffers, ``state_dict`` keys, hooks; a state_dict
  saved from either class loads into the other.
- :func:`swap_modules` changes the class of every ``torch.nn.Conv2d`` / ``ConvTranspose2d`` /
  ``MaxPool2d`` / ``AvgPool2d`` / ``AdaptiveAvgPool2d`` / ``AdaptiveMaxPool2d`` in a model to
  its fastconv subclass, in place (the parameters stay the same objects, so an optimizer built
  before the swap keeps working). :func:`unswap_modules` undoes it.
  Left on torch: subclasses of those modules (they may override ``forward``), convolutions with
  ``padding_mode != 'zeros'`` or parameters that are not float32/float64 CPU tensors, and
  convolutions called through ``torch.nn.functional`` inside a custom ``forward``.

Tensors must be float32 or float64, strided, on the CPU: a CUDA (or other device) tensor raises
``RuntimeError``, another dtype raises ``TypeError``, both saying so (unswap a model before moving
it to a GPU). No copies are made at the boundary: CPU tensors are viewed as NumPy arrays
(``Tensor.numpy()``, any strides) and results are wrapped with ``torch.from_numpy``.

fastconv's kernels use their own OpenMP runtime: set their threads with
``fastconv.set_num_threads`` or ``threadpoolctl.threadpool_limits(n, user_api='openmp')`` (which
also limits torch's); ``torch.set_num_threads`` does not reach them.
"""
try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "fastconv.torch needs PyTorch, which is not installed (pip install torch). The rest of "
        "fastconv (fastconv.functional, fastconv.compat.cs231n) works without it."
    ) from exc

from .. import functional as F

__all__ = [
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "Conv2dFunction",
    "ConvTranspose2dFunction",
    "MaxPool2dFunction",
    "AvgPool2dFunction",
    "AdaptiveAvgPool2dFunction",
    "AdaptiveMaxPool2dFunction",
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "swap_modules",
    "unswap_modules",
    "swap_report",
]

SUPPORTED_DTYPES = (torch.float32, torch.float64)


# ------------------------------------------------------------------------------ tensor <-> array
def _check_tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fastconv.torch: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise RuntimeError(
            f"fastconv.torch: {name} is on {t.device}, but fastconv runs on the CPU only. Keep "
            "torch's own layer for this device (fastconv.torch.unswap_modules(model) undoes "
            "swap_modules) or move the tensor with .cpu()."
        )
    if t.layout != torch.strided:
        raise TypeError(f"fastconv.torch: {name} must be a dense (strided) tensor, got {t.layout}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"fastconv.torch: {name} has dtype {t.dtype}; fastconv supports torch.float32 and "
            "torch.float64 only (convert with .float() / .double(), or keep torch's layer)."
        )


def _array(t, name):
    """A NumPy view of a CPU tensor (no copy, any strides)."""
    _check_tensor(t, name)
    return t.detach().resolve_neg().numpy()


def _tensor(a):
    return None if a is None else torch.from_numpy(a)


def _refuse_double_backward(name, *tensors):
    """Backward runs with grad mode on only under create_graph=True; the gradients computed here
    are not differentiable, so refuse instead of silently dropping second-order terms."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError(
            f"fastconv.torch.{name}: double backward (create_graph=True) is not implemented; use "
            f"torch.nn.functional.{name} where second derivatives are needed."
        )


def _default_stride(stride):
    # torch accepts None or an empty list for "stride = kernel_size".
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        return None
    return stride


# ------------------------------------------------------------------------------ autograd Functions
class Conv2dFunction(torch.autograd.Function):
    """``conv2d`` with fastconv's forward and backward kernels.

    ``Conv2dFunction.apply(input, weight, bias, stride, padding, dilation, groups)``; use
    :func:`conv2d` for torch's defaults.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, groups):
        x = _array(input, "input")
        w = _array(weight, "weight")
        b = None if bias is None else _array(bias, "bias")
        out = F.conv2d(x, w, b, stride, padding, dilation, groups)
        ctx.save_for_backward(input, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        _refuse_double_backward("conv2d", grad_output, input, weight)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx, gw, gb = F.conv2d_backward(
            _array(grad_output, "grad_output"), _array(input, "input"), _array(weight, "weight"),
            *ctx.conf, needs=(need_x, need_w, need_b and ctx.has_bias),
        )
        return _tensor(gx), _tensor(gw), _tensor(gb), None, None, None, None


class ConvTranspose2dFunction(torch.autograd.Function):
    """``conv_transpose2d`` with fastconv's kernels (forward: conv2d's grad_input; backward:
    conv2d's forward and grad_weight).

    ``ConvTranspose2dFunction.apply(input, weight, bias, stride, padding, output_padding, groups,
    dilation)``; use :func:`conv_transpose2d` for torch's defaults.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, output_padding, groups, dilation):
        x = _array(input, "input")
        w = _array(weight, "weight")
        b = None if bias is None else _array(bias, "bias")
        out = F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
        ctx.save_for_backward(input, weight)
        ctx.conf = (stride, padding, output_padding, groups, dilation)
        ctx.has_bias = bias is not None
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        _refuse_double_backward("conv_transpose2d", grad_output, input, weight)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx, gw, gb = F.conv_transpose2d_backward(
            _array(grad_output, "grad_output"), _array(input, "input"), _array(weight, "weight"),
            *ctx.conf, needs=(need_x, need_w, need_b and ctx.has_bias),
        )
        return _tensor(gx), _tensor(gw), _tensor(gb), None, None, None, None, None


class MaxPool2dFunction(torch.autograd.Function):
    """``max_pool2d`` with fastconv's kernels; the backward routes through the cached argmax.

    ``MaxPool2dFunction.apply(input, kernel_size, stride, padding, dilation, ceil_mode,
    return_indices)``; use :func:`max_pool2d` for torch's defaults.
    """

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
        x = _array(input, "input")
        out, indices = F.max_pool2d(x, kernel_size, _default_stride(stride), padding, dilation,
                                    ceil_mode, return_indices=True)
        indices = torch.from_numpy(indices)
        ctx.save_for_backward(indices)
        ctx.input_shape = x.shape
        out = torch.from_numpy(out)
        if return_indices:
            ctx.mark_non_differentiable(indices)
            return out, indices
        return out

    @staticmethod
    def backward(ctx, grad_output, *unused):
        _refuse_double_backward("max_pool2d", grad_output)
        (indices,) = ctx.saved_tensors
        gx = F.max_pool2d_backward(_array(grad_output, "grad_output"), indices.numpy(),
                                   ctx.input_shape)
        return torch.from_numpy(gx), None, None, None, None, None, None


class AvgPool2dFunction(torch.autograd.Function):
    """``avg_pool2d`` with fastconv's kernels.

    ``AvgPool2dFunction.apply(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
    divisor_override)``; use :func:`avg_pool2d` for torch's defaults.
    """

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
        x = _array(input, "input")
        conf = (kernel_size, _default_stride(stride), padding, ceil_mode, count_include_pad,
                divisor_override)
        out = F.avg_pool2d(x, *conf)
        ctx.conf = conf
        ctx.input_shape = x.shape
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_output):
        _refuse_double_backward("avg_pool2d", grad_output)
        gx = F.avg_pool2d_backward(_array(grad_output, "grad_output"), ctx.input_shape, *ctx.conf)
        return torch.from_numpy(gx), None, None, None, None, None, None


class AdaptiveAvgPool2dFunction(torch.autograd.Function):
    """``adaptive_avg_pool2d`` with fastconv's kernels.

    ``AdaptiveAvgPool2dFunction.apply(input, output_size)``; same as
    :func:`adaptive_avg_pool2d`.
    """

    @staticmethod
    def forward(ctx, input, output_size):
        x = _array(input, "input")
        out = F.adaptive_avg_pool2d(x, output_size)
        ctx.input_shape = x.shape
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_output):
        _refuse_double_backward("adaptive_avg_pool2d", grad_output)
        gx = F.adaptive_avg_pool2d_backward(_array(grad_output, "grad_output"), ctx.input_shape)
        return torch.from_numpy(gx), None


class AdaptiveMaxPool2dFunction(torch.autograd.Function):
    """``adaptive_max_pool2d`` with fastconv's kernels; the backward routes through the cached
    argmax.

    ``AdaptiveMaxPool2dFunction.apply(input, output_size, return_indices)``; use
    :func:`adaptive_max_pool2d` for torch's defaults.
    """

    @staticmethod
    def forward(ctx, input, output_size, return_indices):
        x = _array(input, "input")
        out, indices = F.adaptive_max_pool2d(x, output_size, return_indices=True)
        indices = torch.from_numpy(indices)
        ctx.save_for_backward(indices)
        ctx.input_shape = x.shape
        out = torch.from_numpy(out)
        if return_indices:
            ctx.mark_non_differentiable(indices)
            return out, indices
        return out

    @staticmethod
    def backward(ctx, grad_output, *unused):
        _refuse_double_backward("adaptive_max_pool2d", grad_output)
        (indices,) = ctx.saved_tensors
        gx = F.adaptive_max_pool2d_backward(_array(grad_output, "grad_output"), indices.numpy(),
                                            ctx.input_shape)
        return torch.from_numpy(gx), None, None


# ------------------------------------------------------------------------------ functional
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d`` on fastconv (padding may be an int, a pair, 'valid' or
    'same')."""
    return Conv2dFunction.apply(input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """``torch.nn.functional.conv_transpose2d`` on fastconv (weight ``(C_in, C_out // groups,
    kH, kW)``)."""
    return ConvTranspose2dFunction.apply(input, weight, bias, stride, padding, output_padding,
                                         groups, dilation)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool2d`` on fastconv; the indices (if returned) are torch's:
    int64 flat positions ``h * W + w`` in each input plane."""
    return MaxPool2dFunction.apply(input, kernel_size, stride, padding, dilation, ceil_mode,
                                   return_indices)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` on fastconv."""
    return AvgPool2dFunction.apply(input, kernel_size, stride, padding, ceil_mode,
                                   count_include_pad, divisor_override)


def adaptive_avg_pool2d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d`` on fastconv (output_size: an int, or a pair
    whose ``None`` entries keep the input's size)."""
    return AdaptiveAvgPool2dFunction.apply(input, output_size)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """``torch.nn.functional.adaptive_max_pool2d`` on fastconv; the indices (if returned) are
    torch's: int64 flat positions ``h * W + w`` in each input plane."""
    return AdaptiveMaxPool2dFunction.apply(input, output_size, return_indices)


# ------------------------------------------------------------------------------ modules
def _fastconv_takes(*tensors):
    """Whether fastconv computes with these tensors (None is skipped): dense float32 or float64
    CPU tensors. A swapped layer called with others (a half-precision model, a model moved to
    another device after the swap) runs on torch, so that a swap never breaks a model."""
    return all(t is None or (t.device.type == "cpu" and t.dtype in SUPPORTED_DTYPES and
                             t.layout == torch.strided) for t in tensors)


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed by fastconv (same constructor, parameters and state_dict).

    ``padding_mode`` other than ``'zeros'``, and tensors fastconv does not take (other dtypes
    or devices), run on torch, as ``torch.nn.Conv2d`` would.
    """

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros" or not _fastconv_takes(input, weight, bias):
            return super()._conv_forward(input, weight, bias)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` computed by fastconv (same constructor, parameters and
    state_dict; ``forward(input, output_size=None)`` picks the output padding by torch's rule).

    ``padding_mode`` other than ``'zeros'`` (which torch refuses), and tensors fastconv does
    not take (other dtypes or devices), run on torch, as ``torch.nn.ConvTranspose2d`` would.
    """

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros" or not _fastconv_takes(input, self.weight, self.bias):
            return super().forward(input, output_size)
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                output_padding, self.groups, self.dilation)


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` computed by fastconv (same constructor and behaviour); inputs
    fastconv does not take (other dtypes or devices) run on torch."""

    def forward(self, input):
        if not _fastconv_takes(input):
            return super().forward(input)
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` computed by fastconv (same constructor and behaviour); inputs
    fastconv does not take (other dtypes or devices) run on torch."""

    def forward(self, input):
        if not _fastconv_takes(input):
            return super().forward(input)
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` computed by fastconv (same constructor and behaviour);
    inputs fastconv does not take (other dtypes or devices) run on torch."""

    def forward(self, input):
        if not _fastconv_takes(input):
            return super().forward(input)
        return adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d):
    """``torch.nn.AdaptiveMaxPool2d`` computed by fastconv (same constructor and behaviour);
    inputs fastconv does not take (other dtypes or devices) run on torch."""

    def forward(self, input):
        if not _fastconv_takes(input):
            return super().forward(input)
        return adaptive_max_pool2d(input, self.output_size, self.return_indices)


_TO_FASTCONV = {torch.nn.Conv2d: Conv2d, torch.nn.ConvTranspose2d: ConvTranspose2d,
                torch.nn.MaxPool2d: MaxPool2d, torch.nn.AvgPool2d: AvgPool2d,
                torch.nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
                torch.nn.AdaptiveMaxPool2d: AdaptiveMaxPool2d}
_TO_TORCH = {v: k for k, v in _TO_FASTCONV.items()}


def _swappable(module):
    if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        if module.padding_mode != "zeros":
            return False
        return _fastconv_takes(*module.parameters(recurse=False))
    return True


def swap_modules(model, *, example_input=None, training=None):
    """Run every supported layer of ``model`` on fastconv; returns ``model`` (changed in place).

    Each ``torch.nn.Conv2d``, ``torch.nn.ConvTranspose2d``, ``torch.nn.MaxPool2d``,
    ``torch.nn.AvgPool2d``, ``torch.nn.AdaptiveAvgPool2d`` and ``torch.nn.AdaptiveMaxPool2d`` in
    ``model`` (the model itself included; exact classes only, not subclasses) becomes an
    instance of its fastconv subclass of the same name. Nothing else changes: parameters,
    buffers, hooks, state_dict keys and the optimizer's references are the same objects. A
    convolution with ``padding_mode != 'zeros'`` or with parameters that are not float32/float64
    CPU tensors stays on torch, and a swapped layer called with tensors fastconv does not take
    (half precision, another device) computes on torch for that call: a swap never breaks a
    model. Call it after moving the model to its final device and dtype;
    ``model.apply(swap_modules)`` is equivalent.

    With ``example_input``, each layer is then timed once on torch and on fastconv, and stays on
    the faster (fastconv unless torch is more than 5% faster): the model runs once on
    ``example_input`` without gradients (its buffers, training flags and random number
    generator are restored afterwards), and every swapped layer's forward -- forward and
    backward if ``training`` -- runs a few times with each class on the input it received.
    :func:`swap_report` lists each layer's times and choice.

    Args:
        model (torch.nn.Module): the model, changed in place.
        example_input (torch.Tensor or tuple, optional): an input of the model -- a tensor, or a
            tuple of positional arguments for ``model(*example_input)`` -- of the shapes it will
            run on. Default: ``None``, every supported layer on fastconv.
        training (bool, optional): choose for training steps (forward and backward) or for
            inference (forward only). Default: ``None``, ``model.training``. Used only with
            ``example_input``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"swap_modules expects a torch.nn.Module, got {type(model).__name__}")
    if example_input is not None:  # runs the model once, before anything changes
        from . import _layer_choice
        captured = _layer_choice.capture(model, example_input, training,
                                         kinds=(*_TO_FASTCONV, *_TO_TORCH))
    for module in model.modules():
        cls = _TO_FASTCONV.get(type(module))
        if cls is not None and _swappable(module):
            module.__class__ = cls
    if example_input is not None:
        _layer_choice.choose_layers(model, captured, to_torch=_TO_TORCH)
    return model


def swap_report(model):
    """What :func:`swap_modules` chose for each layer of ``model`` given an ``example_input``: a
    list of ``(name, layer, torch_ms, fastconv_ms, choice)`` named tuples, one per swapped layer,
    ``choice`` being ``'torch'`` or ``'fastconv'`` (empty if no choice was made)."""
    from ._layer_choice import swap_report as report
    return report(model)


def unswap_modules(model):
    """Undo :func:`swap_modules`: every fastconv module in ``model`` becomes torch's again (in
    place); returns ``model``."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"unswap_modules expects a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        cls = _TO_TORCH.get(type(module))
        if cls is not None:
            module.__class__ = cls
    return model
