r"""fastconv behind PyTorch: operators, functions, modules, and a one-call swap for CPU models.

Needs PyTorch 2.4 or later (CPU build or not); fastconv itself never depends on it. Three layers::

    import fastconv.torch as fct

    y = fct.conv2d(x, w, b, stride=1, padding=1)     # like torch.nn.functional.conv2d
    conv = fct.Conv2d(3, 16, 3, padding=1)           # a torch.nn.Conv2d running on fastconv
    up = fct.ConvTranspose2d(16, 8, 4, stride=2, padding=1)  # a torch.nn.ConvTranspose2d
    model = fct.swap_modules(model)                  # every supported layer of a model, in place
    # equivalently: model.apply(fct.swap_modules)

- :func:`conv2d`, :func:`conv_transpose2d`, :func:`max_pool2d`, :func:`avg_pool2d`,
  :func:`adaptive_avg_pool2d`, :func:`adaptive_max_pool2d` have the signatures of their
  ``torch.nn.functional`` namesakes. They check their tensors, turn the hyper-parameters into
  the operators' int lists, and call the torch operators this module registers:
  ``torch.ops.fastconv.conv2d``, ``conv_transpose2d``, ``max_pool2d`` and
  ``adaptive_max_pool2d`` (both return the output and the int64 indices), ``avg_pool2d``,
  ``adaptive_avg_pool2d`` (output sizes as ints) and their ``*_backward`` ops, each with a fake
  (meta) implementation and, for the forward ops, an autograd formula. Gradients flow to every
  input that requires one, and ``torch.no_grad()`` / ``torch.inference_mode()`` skip the
  bookkeeping. Second derivatives are not implemented: a backward pass with
  ``create_graph=True`` through them raises instead of silently dropping the second-order
  terms. :class:`Conv2dFunction`, ... remain as aliases with an autograd function's ``apply``.
  In eager mode, on plain tensors, a call runs the operator's kernels without torch's
  dispatcher (a few microseconds less per call, which counts in small models); whenever
  something may be watching -- torch.compile, torch.export, ``torch.jit.trace``, FakeTensor,
  ``make_fx``, torch function or dispatch modes, ``torch.func`` transforms, tensor subclasses
  -- it calls the operator, so that the graph records it.
- :class:`Conv2d`, :class:`ConvTranspose2d`, :class:`MaxPool2d`, :class:`AvgPool2d`,
  :class:`AdaptiveAvgPool2d`, :class:`AdaptiveMaxPool2d` subclass ``torch.nn.Conv2d``, ... and
  add no state: same constructor, parameters, buffers, ``state_dict`` keys, hooks; a state_dict
  saved from either class loads into the other.
- :func:`swap_modules` changes the class of every ``torch.nn.Conv2d`` / ``ConvTranspose2d`` /
  ``MaxPool2d`` / ``AvgPool2d`` / ``AdaptiveAvgPool2d`` / ``AdaptiveMaxPool2d`` in a model to
  its fastconv subclass, in place (the parameters stay the same objects, so an optimizer built
  before the swap keeps working). :func:`unswap_modules` undoes it.
  Left on torch: subclasses of those modules (they may override ``forward``), convolutions with
  ``padding_mode != 'zeros'`` or parameters that are not float32/float64/bfloat16 CPU tensors, and
  convolutions called through ``torch.nn.functional`` inside a custom ``forward``.

Compilers and serialisation:

- ``torch.compile(model, fullgraph=True)`` of a swapped model compiles without graph breaks
  (the operators are opaque nodes of the graph, forward and backward; dynamic shapes work).
- ``torch.jit.trace`` records the operators; ``torch.jit.save`` / ``torch.jit.load`` keep them
  (with their gradients), and a process that loads such a model must ``import fastconv.torch``
  first, which registers them (otherwise torch reports an unknown ``fastconv::`` operator).
- ``torch.jit.script`` of a swapped layer is refused with a ``RuntimeError``: trace the model
  instead, or script torch's layers after ``fastconv.torch.unswap_modules(model)``.

Tensors must be float32, float64 or bfloat16 (with ``ml_dtypes`` installed: fastconv's bfloat16
arrays, products accumulated in float32, see :func:`fastconv.set_precision`), strided, on the
CPU: a CUDA (or other device) tensor raises ``RuntimeError``, another dtype raises
``TypeError``, both saying so (unswap a model before moving it to a GPU). No copies are made at
the boundary: CPU tensors of any strides are viewed as NumPy arrays (``Tensor.numpy()``),
channels_last (NHWC-strided) ones included, and results are the kernels' fresh arrays wrapped
with ``torch.from_numpy`` -- gradients become ``.grad`` as they are. Results have the memory
format torch's CPU ops give: a convolution's output, grad_input and grad_weight are
channels_last when its input or weight is, a pooling's output and grad_input when its input is;
as the kernels write NCHW, such a result costs one reorder.

fastconv's kernels use their own OpenMP runtime: set their threads with
``fastconv.set_num_threads`` or ``threadpoolctl.threadpool_limits(n, user_api='openmp')`` (which
also limits torch's); ``torch.set_num_threads`` does not reach them. Several processes on one
machine (``torchrun``, ``DistributedDataParallel``): :func:`threads_per_rank` gives each its share
of the cores (examples/ddp_train.py).
"""
try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "fastconv.torch needs PyTorch, which is not installed (pip install torch). The rest of "
        "fastconv (fastconv.functional, fastconv.compat.cs231n) works without it."
    ) from exc

import os
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
from numpy.typing import NDArray

from .. import functional as F
from .._core.args import as_bool, as_int, pair
from .._core.conv_geometry import conv_output_size
from .._core.pool_geometry import adaptive_output_param, pool_output_size

if not hasattr(torch.library, "register_fake"):  # pragma: no cover - torch < 2.4
    raise ImportError(
        f"fastconv.torch needs PyTorch 2.4 or later (torch.library.register_fake), found "
        f"{torch.__version__}."
    )

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
    "threads_per_rank",
]

_Model = TypeVar("_Model", bound=torch.nn.Module)  # swap_modules returns the model it was given

SUPPORTED_DTYPES = (torch.float32, torch.float64)
_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
           np.dtype(np.int64): torch.int64}
_BFLOAT16 = torch.bfloat16


def _bfloat16_numpy() -> Optional[np.dtype[Any]]:
    """NumPy's bfloat16 (``ml_dtypes``, imported on the first bfloat16 tensor), or None where
    it is not installed: bfloat16 tensors then stay on torch."""
    global _BF16_NUMPY
    if _BF16_NUMPY is False:
        try:
            import ml_dtypes
            _BF16_NUMPY = np.dtype(ml_dtypes.bfloat16)
            _DTYPES[_BF16_NUMPY] = torch.bfloat16
        except ImportError:
            _BF16_NUMPY = None
    return _BF16_NUMPY


_BF16_NUMPY: Any = False  # not looked up yet


# ------------------------------------------------------------------------------ tensor <-> array
def _check_tensor(t: object, name: str) -> None:
    if _takes(t):
        return
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
    if t.dtype is _BFLOAT16:
        raise TypeError(f"fastconv.torch: {name} has dtype torch.bfloat16, which needs the "
                        "ml_dtypes package (pip install ml_dtypes)")
    raise TypeError(
        f"fastconv.torch: {name} has dtype {t.dtype}; fastconv supports torch.float32 and "
        "torch.float64, and torch.bfloat16 with ml_dtypes installed (convert with .float() / "
        ".double(), or keep torch's layer)."
    )


def _takes(t: object) -> bool:
    """Whether ``t`` is a dense float32/float64 (or bfloat16, with ml_dtypes) CPU tensor
    (``is_cpu``: without building a device object, a third of a microsecond per tensor and
    call)."""
    return isinstance(t, torch.Tensor) and t.is_cpu and (
        t.dtype in SUPPORTED_DTYPES or (t.dtype is _BFLOAT16 and _bfloat16_numpy() is not None)
    ) and t.layout is _STRIDED


_STRIDED = torch.strided


def _refuse_double_backward(name: str, *tensors: Optional[torch.Tensor]) -> None:
    """Backward runs with grad mode on only under create_graph=True; the gradients computed here
    are not differentiable, so refuse instead of silently dropping second-order terms."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError(
            f"fastconv.torch.{name}: double backward (create_graph=True) is not implemented; use "
            f"torch.nn.functional.{name} where second derivatives are needed."
        )


# ------------------------------------------------------------------------------ memory format
# torch's CPU convolution and pooling return channels_last (NHWC-strided) results for a
# channels_last input (a convolution: input or weight), and contiguous ones otherwise; fastconv's
# kernels read any strides but write NCHW, so a channels_last result costs one reorder.
_CHANNELS_LAST = torch.channels_last

try:  # DDE-safe on symbolic shapes (the fake implementations); recent torch only
    from torch._prims_common import suggest_memory_format as _suggest_memory_format
except ImportError:  # pragma: no cover - older torch
    _suggest_memory_format = None  # type: ignore[assignment]


def _strides_like_channels_last(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """torch's ``is_channels_last_strides_2d`` (c10/core/MemoryFormat.h), which
    ``Tensor.suggest_memory_format()`` reads: NHWC-ordered strides; ambiguous cases (a trivial
    channel axis, N111) count as NCHW."""
    if strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if shape[d] == 0 or strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * shape[d] if shape[d] > 1 else strides[d]
    return True


def _is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t.suggest_memory_format()`` is ``torch.channels_last`` (a real tensor)."""
    if t.dim() != 4:
        return False
    if t.is_contiguous() and not t.is_contiguous(memory_format=_CHANNELS_LAST):
        return False  # the common case, without reading the strides in Python
    return _strides_like_channels_last(t.shape, t.stride())


def _fake_is_channels_last(t: torch.Tensor) -> bool:
    """:func:`_is_channels_last` for a fake tensor, whose sizes may be symbolic."""
    if t.dim() != 4:
        return False
    if _suggest_memory_format is not None:
        return _suggest_memory_format(t) == _CHANNELS_LAST
    return _strides_like_channels_last(t.shape, t.stride())  # pragma: no cover - older torch


def _conv_channels_last(input: torch.Tensor, weight: torch.Tensor,
                        is_channels_last: Callable[[torch.Tensor], bool] = _is_channels_last
    ) -> bool:
    """torch's rule for a CPU convolution's output, grad_input and grad_weight: channels_last
    when the input or the weight is (an unbatched input counts as its batch of one)."""
    x4 = input if input.dim() == 4 else input.unsqueeze(0)
    return is_channels_last(x4) or is_channels_last(weight)


def _channels_last_strides(shape: Sequence[int]) -> Tuple[int, ...]:
    """The strides of ``torch.empty(shape, memory_format=torch.channels_last)`` (c10's
    get_channels_last_strides_2d); an unbatched (C, H, W) shape: those of its batch of one."""
    c, h, w = shape[-3:]
    strides = (h * w * c, 1, w * c, c)
    return strides if len(shape) == 4 else strides[1:]


def _result(array: "NDArray[Any]", channels_last: bool) -> torch.Tensor:
    """A fresh NCHW (or CHW) array from the kernels as a tensor in the memory format torch's
    op would return: the array itself, or one reorder to channels_last. Never a view of
    another tensor (autograd refuses in-place changes, such as ReLU(inplace=True), to an
    operator's output that is one)."""
    if not channels_last:
        return _tensor(array)
    strides = _channels_last_strides(array.shape)
    itemsize = array.itemsize
    if all(n == 1 or a == b * itemsize for n, a, b in zip(array.shape, array.strides, strides)):
        # a trivial channel or plane: the bytes are in place, only size-1 axes' strides differ
        return _tensor(np.lib.stride_tricks.as_strided(
            array, strides=[b * itemsize for b in strides]))
    out = torch.empty_strided(array.shape, strides, dtype=_DTYPES[array.dtype])
    return out.copy_(_tensor(array))


def _tensor(array: "NDArray[Any]") -> torch.Tensor:
    """``torch.from_numpy(array)``, bfloat16 arrays (which it does not know) included."""
    if array.dtype.kind == "V" and array.dtype.name == "bfloat16":  # float32/64: kind 'f'
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _empty(like: torch.Tensor, shape: Sequence[int], channels_last: bool) -> torch.Tensor:
    """The fake counterpart of :func:`_result`: an empty tensor with the strides it would have."""
    if not channels_last:
        return like.new_empty(shape)
    return like.new_empty_strided(shape, _channels_last_strides(shape))


def _view(t: torch.Tensor) -> "NDArray[Any]":
    """A NumPy view of a CPU tensor for a kernel call (no copy, any strides). The operators
    receive tensors that may require grad (the autograd layer is above them) or carry a
    negative bit (a lazy negation, resolved only then)."""
    if t.requires_grad:
        t = t.detach()
    if t.is_neg():
        t = t.resolve_neg()
    if t.dtype is _BFLOAT16:  # the same bytes, as ml_dtypes' bfloat16 (_takes checked it)
        return t.view(torch.int16).numpy().view(_bfloat16_numpy())  # type: ignore[arg-type]
    return t.numpy()


def _pair2(v: Sequence[int]) -> Sequence[int]:
    """A one-int list as a pair (torch's lists of one int), in the fake implementations."""
    return (v[0], v[0]) if len(v) == 1 else v


def _none_if_empty_stride(stride: List[int]) -> Optional[List[int]]:
    return None if len(stride) == 0 else stride


# ------------------------------------------------------------------------------ custom operators
_LIBRARY = torch.library.Library("fastconv", "DEF")  # noqa: TOR901 - lives as long as the module
_AFTER_AUTOGRAD = torch._C._after_autograd_keyset
_infer_schema: Any = getattr(torch.library, "infer_schema", None)
if _infer_schema is None:  # pragma: no cover - torch 2.4
    from torch._library.infer_schema import infer_schema as _infer_schema


def _register_op(name: str, impl: Callable[..., Any], fake: Callable[..., Any],
                 setup_context: Any = None,
                 backward: Optional[Callable[..., Any]] = None) -> Any:
    """Define the operator ``torch.ops.fastconv.<name>`` and return it (its default overload).

    ``impl`` is its CPU kernel: its type annotations give the schema (``torch.Tensor``,
    ``Optional[torch.Tensor]``, ``int``, ``bool``, ``List[int]``, ``List[bool]``; returns a
    Tensor or a ``Tuple`` of Tensors, fresh ones: never an input or a view of one). ``fake``
    computes the outputs' shapes, dtypes and strides without data (torch.compile, meta
    tensors); it must give the strides ``impl`` gives. ``setup_context(ctx, inputs, output)``
    and ``backward(ctx, *grad_outputs)`` make it differentiable, as
    ``torch.library.register_autograd`` would: the backward returns one gradient (or None)
    per argument of the operator, computed by a backward operator called as
    ``ctx.run(backward_op, *args)``: through the dispatcher when the forward went through it
    (so that torch.compile records it), its CPU kernel directly on the eager path.

    The autograd kernel is registered directly (not with ``torch.library.custom_op``'s
    wrappers, which cost tens of microseconds per call); the operator is the same to torch's
    dispatcher, torch.compile, ``torch.jit.trace`` and ``torch.library.opcheck``. A forward
    operator also gets an eager call (:func:`_eager_call`, used through :func:`_caller`).
    """
    _LIBRARY.define(name + _infer_schema(impl, mutates_args=()))
    _LIBRARY.impl(name, impl, "CPU")
    torch.library.register_fake(f"fastconv::{name}", fake, lib=_LIBRARY)
    op = getattr(torch.ops.fastconv, name).default
    _IMPLS[op] = impl
    if backward is not None:
        _LIBRARY.impl(name, _autograd_kernel(op, setup_context, backward), "Autograd",
                      with_keyset=True)
        _EAGER[op] = _eager_call(op, impl, setup_context, backward)
    return op


_IMPLS: Dict[Any, Callable[..., Any]] = {}  # operator -> its CPU kernel (a Python function)
_EAGER: Dict[Any, Callable[..., Any]] = {}  # forward operator -> its eager call (_eager_call)


def _via_dispatcher(op: Any, *args: Any) -> Any:
    return op(*args)


def _direct(op: Any, *args: Any) -> Any:
    return _IMPLS[op](*args)


def _autograd_kernel(op: Any, setup_context: Callable[..., None], backward: Callable[..., Any]
    ) -> Callable[..., Any]:
    """The Autograd dispatch kernel of ``op``: an autograd.Function around the operator's
    kernels below autograd when an input requires grad, else those kernels directly. Its
    backward calls the backward operators (``ctx.run``), which torch.compile records."""

    def forward(ctx: Any, keyset: Any, *args: Any) -> Any:
        with torch._C._AutoDispatchBelowAutograd():
            output = op.redispatch(keyset & _AFTER_AUTOGRAD, *args)
        setup_context(ctx, args, output)
        ctx.run = _via_dispatcher
        return output

    def backward_(ctx: Any, *grads: Any) -> Tuple[Any, ...]:
        needs_input_grad = ctx.needs_input_grad
        ctx.needs_input_grad = needs_input_grad[1:]  # the operator's arguments, not the keyset
        try:
            return (None, *backward(ctx, *grads))
        finally:  # a backward pass may run again (retain_graph)
            ctx.needs_input_grad = needs_input_grad

    function: Any = type(f"{op._opname}_autograd", (torch.autograd.Function,),
                         {"forward": staticmethod(forward), "backward": staticmethod(backward_)})

    def kernel(keyset: Any, *args: Any) -> Any:
        if torch._C.is_grad_enabled() and torch._C._any_requires_grad(*args):
            return function.apply(keyset, *args)
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & _AFTER_AUTOGRAD, *args)

    return kernel


def _eager_call(op: Any, impl: Callable[..., Any], setup_context: Callable[..., None],
                backward: Callable[..., Any]) -> Callable[..., Any]:
    """``op``'s computation without torch's dispatcher, for eager calls on plain tensors (see
    :func:`_call`): the CPU kernel itself, or with an input that requires grad, a lean
    autograd.Function around it whose backward calls the backward kernels directly. Same
    results, tensors and memory formats as the operator; a few microseconds per call less."""

    def forward(ctx: Any, *args: Any) -> Any:
        output = impl(*args)
        setup_context(ctx, args, output)
        ctx.run = _direct
        return output

    function: Any = type(f"{op._opname}_eager", (torch.autograd.Function,),
                         {"forward": staticmethod(forward), "backward": staticmethod(backward)})
    apply = function.apply
    grad_enabled, any_requires_grad = torch._C.is_grad_enabled, torch._C._any_requires_grad

    def call(*args: Any) -> Any:
        if grad_enabled() and any_requires_grad(*args):
            return apply(*args)
        return impl(*args)

    return call


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
_is_compiling = torch.compiler.is_compiling
_is_tracing = torch._C._is_tracing
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_modes = torch._C._is_torch_function_mode_enabled
_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def _traced(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether a call must go through the registered operator, so that whatever is watching
    sees it: torch.compile / torch.export (dynamo), torch.jit.trace, a dispatch mode (FakeTensor,
    make_fx, functionalization), a torch function mode, torch.func transforms, or a tensor
    subclass. Otherwise (plain tensors in eager mode) the operator's kernels run directly."""
    if _is_compiling() or _is_tracing() or _dispatch_modes() or _function_modes() \
            or _functorch_active():
        return True
    for t in tensors:
        if t is not None and type(t) not in _PLAIN_TENSORS:
            return True
    return False


# conv2d ----------------------------------------------------------------------------------------
def _conv2d_impl(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 stride: List[int], padding: List[int], dilation: List[int], groups: int,
                 same: bool) -> torch.Tensor:
    out = F.conv2d(_view(input), _view(weight), None if bias is None else _view(bias), stride,
                   "same" if same else padding, dilation, groups)
    return _result(out, _conv_channels_last(input, weight))


def _conv2d_fake(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 stride: List[int], padding: List[int], dilation: List[int], groups: int, same: bool
    ) -> torch.Tensor:
    batch, (h, w) = input.shape[:-3], input.shape[-2:]
    k, _, r, s = weight.shape
    if same:
        out_h, out_w = h, w
    else:
        (sh, sw), (ph, pw), (dh, dw) = _pair2(stride), _pair2(padding), _pair2(dilation)
        out_h = conv_output_size(h, ph, ph, r, sh, dh)
        out_w = conv_output_size(w, pw, pw, s, sw, dw)
    return _empty(input, (*batch, k, out_h, out_w),
                  _conv_channels_last(input, weight, _fake_is_channels_last))


def _conv2d_backward_impl(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                          stride: List[int], padding: List[int], dilation: List[int],
                          groups: int, same: bool,
                          output_mask: List[bool]) -> Tuple[torch.Tensor, torch.Tensor,
                                                            torch.Tensor]:
    # the kernels read grad_output C-contiguous: torch reorders another layout fastest
    grads = F.conv2d_backward(_view(grad_output.contiguous()), _view(input), _view(weight),
                              stride, "same" if same else padding, dilation, groups,
                              needs=tuple(output_mask))
    return _conv_grads(grads, input, weight)


def _conv2d_backward_fake(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                          stride: List[int], padding: List[int], dilation: List[int], groups: int,
                          same: bool, output_mask: List[bool]) -> Tuple[torch.Tensor, ...]:
    return _conv_grads_fake(input, weight, output_mask, weight.shape[0])


def _conv2d_setup_context(ctx: Any, inputs: Tuple[Any, ...], output: torch.Tensor) -> None:
    input, weight, bias, *conf = inputs
    ctx.save_for_backward(input, weight)
    ctx.conf = conf
    ctx.has_bias = bias is not None


def _conv2d_backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
    input, weight = ctx.saved_tensors
    _refuse_double_backward("conv2d", grad_output, input, weight)
    needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
             ctx.has_bias and ctx.needs_input_grad[2]]
    grads = ctx.run(_conv2d_backward_op, grad_output, input, weight, *ctx.conf, needs)
    return (*(g if need else None for g, need in zip(grads, needs)),) + (None,) * 5


_conv2d_backward_op = _register_op("conv2d_backward", _conv2d_backward_impl,
                                   _conv2d_backward_fake)
_conv2d_op = _register_op("conv2d", _conv2d_impl, _conv2d_fake, _conv2d_setup_context,
                          _conv2d_backward)


# max_pool2d ------------------------------------------------------------------------------------
def _max_pool2d_impl(input: torch.Tensor, kernel_size: List[int], stride: List[int],
                     padding: List[int], dilation: List[int],
                     ceil_mode: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    out, indices = F.max_pool2d(_view(input), kernel_size, _none_if_empty_stride(stride),
                                padding, dilation, ceil_mode, return_indices=True)
    channels_last = _is_channels_last(input)
    return _result(out, channels_last), _result(indices, channels_last)


def _pool_fake(input: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool) -> torch.Tensor:
    kernel = _pair2(kernel_size)
    stride = kernel if len(stride) == 0 else _pair2(stride)
    sizes = [pool_output_size(n, k, s, p, d, ceil_mode)
             for n, k, s, p, d in zip(input.shape[-2:], kernel, stride, _pair2(padding),
                                      _pair2(dilation))]
    return _empty(input, (*input.shape[:-2], *sizes), _fake_is_channels_last(input))


def _max_pool2d_fake(input: torch.Tensor, kernel_size: List[int], stride: List[int],
                     padding: List[int], dilation: List[int], ceil_mode: bool
    ) -> Tuple[torch.Tensor, torch.Tensor]:
    out = _pool_fake(input, kernel_size, stride, padding, dilation, ceil_mode)
    return out, torch.empty_like(out, dtype=torch.int64)


def _max_pool2d_backward_impl(grad_output: torch.Tensor, input: torch.Tensor,
                              indices: torch.Tensor) -> torch.Tensor:
    grad_input = F.max_pool2d_backward(_view(grad_output), indices.numpy(), tuple(input.shape))
    return _result(grad_input, _is_channels_last(input))


def _max_pool2d_backward_fake(grad_output: torch.Tensor, input: torch.Tensor, indices: torch.Tensor
    ) -> torch.Tensor:
    return _empty(input, input.shape, _fake_is_channels_last(input))


def _max_pool2d_setup_context(ctx: Any, inputs: Tuple[Any, ...],
                              output: Tuple[torch.Tensor, torch.Tensor]) -> None:
    ctx.save_for_backward(inputs[0], output[1])


def _max_pool2d_backward(ctx: Any, grad_output: torch.Tensor, grad_indices: Optional[torch.Tensor]
    ) -> Tuple[Optional[torch.Tensor], ...]:
    _refuse_double_backward("max_pool2d", grad_output)
    input, indices = ctx.saved_tensors
    return (ctx.run(_max_pool2d_backward_op, grad_output, input, indices),) + (None,) * 5


_max_pool2d_backward_op = _register_op("max_pool2d_backward", _max_pool2d_backward_impl,
                                       _max_pool2d_backward_fake)
_max_pool2d_op = _register_op("max_pool2d", _max_pool2d_impl, _max_pool2d_fake,
                              _max_pool2d_setup_context, _max_pool2d_backward)


# avg_pool2d ------------------------------------------------------------------------------------
def _avg_pool2d_impl(input: torch.Tensor, kernel_size: List[int], stride: List[int],
                     padding: List[int], ceil_mode: bool, count_include_pad: bool,
                     divisor_override: Optional[int]) -> torch.Tensor:
    out = F.avg_pool2d(_view(input), kernel_size, _none_if_empty_stride(stride), padding,
                       ceil_mode, count_include_pad, divisor_override)
    return _result(out, _is_channels_last(input))


def _avg_pool2d_fake(input: torch.Tensor, kernel_size: List[int], stride: List[int],
                     padding: List[int], ceil_mode: bool, count_include_pad: bool,
                     divisor_override: Optional[int]) -> torch.Tensor:
    return _pool_fake(input, kernel_size, stride, padding, (1,), ceil_mode)


def _avg_pool2d_backward_impl(grad_output: torch.Tensor, input: torch.Tensor,
                              kernel_size: List[int], stride: List[int], padding: List[int],
                              ceil_mode: bool, count_include_pad: bool,
                              divisor_override: Optional[int]) -> torch.Tensor:
    grad_input = F.avg_pool2d_backward(_view(grad_output), tuple(input.shape), kernel_size,
                                       _none_if_empty_stride(stride), padding, ceil_mode,
                                       count_include_pad, divisor_override)
    return _result(grad_input, _is_channels_last(input))


def _avg_pool2d_backward_fake(grad_output: torch.Tensor, input: torch.Tensor, *conf: Any
    ) -> torch.Tensor:
    return _empty(input, input.shape, _fake_is_channels_last(input))


def _avg_pool2d_setup_context(ctx: Any, inputs: Tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(inputs[0])
    ctx.conf = inputs[1:]


def _avg_pool2d_backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
    _refuse_double_backward("avg_pool2d", grad_output)
    (input,) = ctx.saved_tensors
    return (ctx.run(_avg_pool2d_backward_op, grad_output, input, *ctx.conf),) + (None,) * 6


_avg_pool2d_backward_op = _register_op("avg_pool2d_backward", _avg_pool2d_backward_impl,
                                       _avg_pool2d_backward_fake)
_avg_pool2d_op = _register_op("avg_pool2d", _avg_pool2d_impl, _avg_pool2d_fake,
                              _avg_pool2d_setup_context, _avg_pool2d_backward)


# conv_transpose2d ------------------------------------------------------------------------------
def _conv_transpose2d_impl(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           stride: List[int], padding: List[int], output_padding: List[int],
                           groups: int, dilation: List[int]) -> torch.Tensor:
    out = F.conv_transpose2d(_view(input), _view(weight), None if bias is None else _view(bias),
                             stride, padding, output_padding, groups, dilation)
    return _result(out, _conv_channels_last(input, weight))


def _conv_transpose2d_fake(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           stride: List[int], padding: List[int], output_padding: List[int],
                           groups: int, dilation: List[int]) -> torch.Tensor:
    batch, (h, w) = input.shape[:-3], input.shape[-2:]
    _, k, r, s = weight.shape
    (sh, sw), (ph, pw) = _pair2(stride), _pair2(padding)
    (oph, opw), (dh, dw) = _pair2(output_padding), _pair2(dilation)
    out_h = (h - 1) * sh - 2 * ph + dh * (r - 1) + oph + 1
    out_w = (w - 1) * sw - 2 * pw + dw * (s - 1) + opw + 1
    return _empty(input, (*batch, k * groups, out_h, out_w),
                  _conv_channels_last(input, weight, _fake_is_channels_last))


def _exact_channels_last_weight(input: torch.Tensor, is_float32: bool,
                                is_channels_last: Callable[[torch.Tensor], bool]) -> bool:
    """Whether torch gives a convolution's grad_weight channels_last strides even on its size-1
    axes (float32 with a channels_last input: the oneDNN path), rather than the strides of
    ``contiguous(memory_format=torch.channels_last)``, which keeps those of size-1 axes."""
    return is_float32 and is_channels_last(input if input.dim() == 4 else input.unsqueeze(0))


def _conv_grads(grads: Sequence[Any], input: torch.Tensor, weight: torch.Tensor) -> Any:
    """A convolution's (grad_input, grad_weight, grad_bias) arrays as the backward operators'
    tensors, in torch's memory formats; an empty tensor for each one not computed."""
    channels_last = _conv_channels_last(input, weight)
    grad_input, grad_weight, grad_bias = grads
    grad_input = None if grad_input is None else _result(grad_input, channels_last)
    if grad_weight is not None:
        if _exact_channels_last_weight(input, grad_weight.dtype == np.float32, _is_channels_last):
            grad_weight = _result(grad_weight, True)
        else:
            grad_weight = _tensor(grad_weight)
            if channels_last:
                grad_weight = grad_weight.contiguous(memory_format=_CHANNELS_LAST)
    grad_bias = None if grad_bias is None else _tensor(grad_bias)
    return tuple(input.new_empty(0) if g is None else g
                 for g in (grad_input, grad_weight, grad_bias))


def _conv_grads_fake(input: torch.Tensor, weight: torch.Tensor, output_mask: List[bool],
                     bias_size: int) -> Tuple[torch.Tensor, ...]:
    channels_last = _conv_channels_last(input, weight, _fake_is_channels_last)
    grad_input = _empty(input, input.shape, channels_last)
    grad_weight = weight.new_empty(weight.shape)
    if _exact_channels_last_weight(input, weight.dtype == torch.float32, _fake_is_channels_last):
        grad_weight = _empty(weight, weight.shape, True)
    elif channels_last:
        grad_weight = grad_weight.contiguous(memory_format=_CHANNELS_LAST)
    grad_bias = weight.new_empty((bias_size,))
    return tuple(g if need else input.new_empty(0)
                 for g, need in zip((grad_input, grad_weight, grad_bias), output_mask))


def _conv_transpose2d_backward_impl(grad_output: torch.Tensor, input: torch.Tensor,
                                    weight: torch.Tensor, stride: List[int], padding: List[int],
                                    output_padding: List[int], groups: int, dilation: List[int],
                                    output_mask: List[bool]) -> Tuple[torch.Tensor, torch.Tensor,
                                                                      torch.Tensor]:
    grads = F.conv_transpose2d_backward(_view(grad_output), _view(input), _view(weight), stride,
                                        padding, output_padding, groups, dilation,
                                        needs=tuple(output_mask))
    return _conv_grads(grads, input, weight)


def _conv_transpose2d_backward_fake(grad_output: torch.Tensor, input: torch.Tensor,
                                    weight: torch.Tensor, stride: List[int], padding: List[int],
                                    output_padding: List[int], groups: int, dilation: List[int],
                                    output_mask: List[bool]) -> Tuple[torch.Tensor, ...]:
    return _conv_grads_fake(input, weight, output_mask, weight.shape[1] * groups)


def _conv_transpose2d_setup_context(ctx: Any, inputs: Tuple[Any, ...], output: torch.Tensor
    ) -> None:
    input, weight, bias, *conf = inputs
    ctx.save_for_backward(input, weight)
    ctx.conf = conf
    ctx.has_bias = bias is not None


def _conv_transpose2d_backward(ctx: Any, grad_output: torch.Tensor
    ) -> Tuple[Optional[torch.Tensor], ...]:
    input, weight = ctx.saved_tensors
    _refuse_double_backward("conv_transpose2d", grad_output, input, weight)
    needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
             ctx.has_bias and ctx.needs_input_grad[2]]
    grads = ctx.run(_conv_transpose2d_backward_op, grad_output, input, weight, *ctx.conf, needs)
    return (*(g if need else None for g, need in zip(grads, needs)),) + (None,) * 5


_conv_transpose2d_backward_op = _register_op(
    "conv_transpose2d_backward", _conv_transpose2d_backward_impl, _conv_transpose2d_backward_fake)
_conv_transpose2d_op = _register_op(
    "conv_transpose2d", _conv_transpose2d_impl, _conv_transpose2d_fake,
    _conv_transpose2d_setup_context, _conv_transpose2d_backward)


# adaptive_avg_pool2d, adaptive_max_pool2d ------------------------------------------------------
def _is_global(output_size: Sequence[int]) -> bool:
    return output_size[0] == 1 and output_size[1] == 1


def _adaptive_avg_pool2d_impl(input: torch.Tensor, output_size: List[int]) -> torch.Tensor:
    out = F.adaptive_avg_pool2d(_view(input), output_size)
    return _result(out, _is_channels_last(input))


def _adaptive_fake(input: torch.Tensor, output_size: List[int]) -> torch.Tensor:
    shape = (*input.shape[:-2], *_pair2(output_size))
    return _empty(input, shape, _fake_is_channels_last(input))


def _adaptive_avg_pool2d_backward_impl(grad_output: torch.Tensor,
                                       input: torch.Tensor) -> torch.Tensor:
    grad_input = F.adaptive_avg_pool2d_backward(_view(grad_output), tuple(input.shape))
    # torch computes a 1x1 output as a mean, whose gradient is contiguous
    channels_last = not _is_global(grad_output.shape[-2:]) and _is_channels_last(input)
    return _result(grad_input, channels_last)


def _adaptive_avg_pool2d_backward_fake(grad_output: torch.Tensor, input: torch.Tensor
    ) -> torch.Tensor:
    channels_last = not _is_global(grad_output.shape[-2:]) and _fake_is_channels_last(input)
    return _empty(input, input.shape, channels_last)


def _adaptive_avg_pool2d_setup_context(ctx: Any, inputs: Tuple[Any, ...], output: torch.Tensor
    ) -> None:
    ctx.save_for_backward(inputs[0])


def _adaptive_avg_pool2d_backward(ctx: Any, grad_output: torch.Tensor
    ) -> Tuple[Optional[torch.Tensor], ...]:
    _refuse_double_backward("adaptive_avg_pool2d", grad_output)
    (input,) = ctx.saved_tensors
    return ctx.run(_adaptive_avg_pool2d_backward_op, grad_output, input), None


_adaptive_avg_pool2d_backward_op = _register_op(
    "adaptive_avg_pool2d_backward", _adaptive_avg_pool2d_backward_impl,
    _adaptive_avg_pool2d_backward_fake)
_adaptive_avg_pool2d_op = _register_op(
    "adaptive_avg_pool2d", _adaptive_avg_pool2d_impl, _adaptive_fake,
    _adaptive_avg_pool2d_setup_context, _adaptive_avg_pool2d_backward)


def _adaptive_max_pool2d_impl(input: torch.Tensor,
                              output_size: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    out, indices = F.adaptive_max_pool2d(_view(input), output_size, return_indices=True)
    channels_last = _is_channels_last(input)
    return _result(out, channels_last), _result(indices, channels_last)


def _adaptive_max_pool2d_fake(input: torch.Tensor, output_size: List[int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
    out = _adaptive_fake(input, output_size)
    return out, torch.empty_like(out, dtype=torch.int64)


def _adaptive_max_pool2d_backward_impl(grad_output: torch.Tensor, input: torch.Tensor,
                                       indices: torch.Tensor) -> torch.Tensor:
    grad_input = F.adaptive_max_pool2d_backward(_view(grad_output), indices.numpy(),
                                                tuple(input.shape))
    return _result(grad_input, _is_channels_last(input))


def _adaptive_max_pool2d_setup_context(ctx: Any, inputs: Tuple[Any, ...],
                                       output: Tuple[torch.Tensor, torch.Tensor]) -> None:
    ctx.save_for_backward(inputs[0], output[1])


def _adaptive_max_pool2d_backward(ctx: Any, grad_output: torch.Tensor,
                                  grad_indices: Optional[torch.Tensor]
    ) -> Tuple[Optional[torch.Tensor], ...]:
    _refuse_double_backward("adaptive_max_pool2d", grad_output)
    input, indices = ctx.saved_tensors
    return ctx.run(_adaptive_max_pool2d_backward_op, grad_output, input, indices), None


_adaptive_max_pool2d_backward_op = _register_op(
    "adaptive_max_pool2d_backward", _adaptive_max_pool2d_backward_impl,
    _max_pool2d_backward_fake)
_adaptive_max_pool2d_op = _register_op(
    "adaptive_max_pool2d", _adaptive_max_pool2d_impl, _adaptive_max_pool2d_fake,
    _adaptive_max_pool2d_setup_context, _adaptive_max_pool2d_backward)


# ------------------------------------------------------------------------------ calls
def _caller(op: Any, n_tensors: int) -> Callable[..., Any]:
    """A call of ``op`` whose first ``n_tensors`` arguments are its (optional) tensors: through
    the operator when :func:`_traced`, else its eager call (no dispatcher)."""
    eager = _EAGER[op]

    def call(*args: Any) -> Any:
        if _traced(*args[:n_tensors]):
            return op(*args)
        return eager(*args)

    return call


_conv2d_call = _caller(_conv2d_op, 3)
_max_pool2d_call = _caller(_max_pool2d_op, 1)
_avg_pool2d_call = _caller(_avg_pool2d_op, 1)
_conv_transpose2d_call = _caller(_conv_transpose2d_op, 3)
_adaptive_avg_pool2d_call = _caller(_adaptive_avg_pool2d_op, 1)
_adaptive_max_pool2d_call = _caller(_adaptive_max_pool2d_op, 1)


# ------------------------------------------------------------------------------ argument lists
def _conv_padding(padding: Union[int, Sequence[int], str]) -> Tuple[Tuple[int, int], bool]:
    """The operators' ``(padding, same)``: 'valid' is padding 0; 'same' (which may pad one more
    row or column at the bottom/right) is a flag."""
    if isinstance(padding, str):
        if padding == "same":
            return (0, 0), True
        if padding == "valid":
            return (0, 0), False
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    return pair(padding, "padding"), False


def _stride(stride: Optional[Union[int, Sequence[int]]]) -> Tuple[int, ...]:
    # torch accepts None or an empty list for "stride = kernel_size"; the operators take [].
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        return ()
    return pair(stride, "stride")


def _conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
            stride: Union[int, Sequence[int]], padding: Union[int, Sequence[int], str],
            dilation: Union[int, Sequence[int]], groups: int) -> torch.Tensor:
    """conv2d of checked tensors: the arguments as the operator's lists (errors name them)."""
    padding, same = _conv_padding(padding)
    return _conv2d_call(input, weight, bias, pair(stride, "stride"), padding,
                      pair(dilation, "dilation"), as_int(groups, "groups"), same)


def _max_pool2d(input: torch.Tensor, kernel_size: Union[int, Sequence[int]],
                stride: Optional[Union[int, Sequence[int]]], padding: Union[int, Sequence[int]],
                dilation: Union[int, Sequence[int]], ceil_mode: bool, return_indices: bool
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    out, indices = _max_pool2d_call(input, pair(kernel_size, "kernel_size"), _stride(stride),
                                  pair(padding, "padding"), pair(dilation, "dilation"),
                                  as_bool(ceil_mode, "ceil_mode"))
    return (out, indices) if as_bool(return_indices, "return_indices") else out


def _avg_pool2d(input: torch.Tensor, kernel_size: Union[int, Sequence[int]],
                stride: Optional[Union[int, Sequence[int]]], padding: Union[int, Sequence[int]],
                ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int]
    ) -> torch.Tensor:
    if divisor_override is not None:
        divisor_override = as_int(divisor_override, "divisor_override")
    return _avg_pool2d_call(input, pair(kernel_size, "kernel_size"), _stride(stride),
                          pair(padding, "padding"), as_bool(ceil_mode, "ceil_mode"),
                          as_bool(count_include_pad, "count_include_pad"), divisor_override)


def _conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      stride: Union[int, Sequence[int]], padding: Union[int, Sequence[int]],
                      output_padding: Union[int, Sequence[int]], groups: int,
                      dilation: Union[int, Sequence[int]]) -> torch.Tensor:
    """conv_transpose2d of checked tensors: the arguments as the operator's lists."""
    if isinstance(padding, str):
        raise ValueError(
            f"padding must be an int or a pair for a transposed convolution (as in torch, no "
            f"string), got {padding!r}")
    return _conv_transpose2d_call(input, weight, bias, pair(stride, "stride"),
                                  pair(padding, "padding"),
                                  pair(output_padding, "output_padding"),
                                  as_int(groups, "groups"), pair(dilation, "dilation"))


def _adaptive_size(input: torch.Tensor, output_size: Union[int, None, Sequence[Optional[int]]]
    ) -> List[int]:
    """The operators' output size: ``output_size`` checked, its ``None`` entries (the input's
    size along that axis) replaced."""
    oh, ow = adaptive_output_param(output_size)
    if (oh is None or ow is None) and input.dim() >= 2:  # else the kernels refuse the input
        oh = input.shape[-2] if oh is None else oh
        ow = input.shape[-1] if ow is None else ow
    return [1 if oh is None else oh, 1 if ow is None else ow]


# ------------------------------------------------------------------------------ functional
def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           stride: Union[int, Sequence[int]] = 1, padding: Union[int, Sequence[int], str] = 0,
           dilation: Union[int, Sequence[int]] = 1, groups: int = 1) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` on fastconv (padding may be an int, a pair, 'valid' or
    'same'): the operator ``torch.ops.fastconv.conv2d``."""
    _check_tensor(input, "input")
    _check_tensor(weight, "weight")
    if bias is not None:
        _check_tensor(bias, "bias")
    return _conv2d(input, weight, bias, stride, padding, dilation, groups)


def max_pool2d(input: torch.Tensor, kernel_size: Union[int, Sequence[int]],
               stride: Optional[Union[int, Sequence[int]]] = None,
               padding: Union[int, Sequence[int]] = 0, dilation: Union[int, Sequence[int]] = 1,
               ceil_mode: bool = False, return_indices: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """``torch.nn.functional.max_pool2d`` on fastconv (``torch.ops.fastconv.max_pool2d``); the
    indices (if returned) are torch's: int64 flat positions ``h * W + w`` in each input plane."""
    _check_tensor(input, "input")
    return _max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool2d(input: torch.Tensor, kernel_size: Union[int, Sequence[int]],
               stride: Optional[Union[int, Sequence[int]]] = None,
               padding: Union[int, Sequence[int]] = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None
    ) -> torch.Tensor:
    """``torch.nn.functional.avg_pool2d`` on fastconv (``torch.ops.fastconv.avg_pool2d``)."""
    _check_tensor(input, "input")
    return _avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override)


def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     stride: Union[int, Sequence[int]] = 1, padding: Union[int, Sequence[int]] = 0,
                     output_padding: Union[int, Sequence[int]] = 0, groups: int = 1,
                     dilation: Union[int, Sequence[int]] = 1) -> torch.Tensor:
    """``torch.nn.functional.conv_transpose2d`` on fastconv (weight ``(C_in, C_out // groups,
    kH, kW)``): the operator ``torch.ops.fastconv.conv_transpose2d``."""
    _check_tensor(input, "input")
    _check_tensor(weight, "weight")
    if bias is not None:
        _check_tensor(bias, "bias")
    return _conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups,
                             dilation)


def adaptive_avg_pool2d(input: torch.Tensor, output_size: Union[int, None, Sequence[Optional[int]]]
    ) -> torch.Tensor:
    """``torch.nn.functional.adaptive_avg_pool2d`` on fastconv (output_size: an int, or a pair
    whose ``None`` entries keep the input's size): ``torch.ops.fastconv.adaptive_avg_pool2d``."""
    _check_tensor(input, "input")
    return _adaptive_avg_pool2d_call(input, _adaptive_size(input, output_size))


def adaptive_max_pool2d(input: torch.Tensor, output_size: Union[int, None, Sequence[Optional[int]]],
                        return_indices: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """``torch.nn.functional.adaptive_max_pool2d`` on fastconv
    (``torch.ops.fastconv.adaptive_max_pool2d``); the indices (if returned) are torch's: int64
    flat positions ``h * W + w`` in each input plane."""
    _check_tensor(input, "input")
    return_indices = as_bool(return_indices, "return_indices")
    out, indices = _adaptive_max_pool2d_call(input, _adaptive_size(input, output_size))
    return (out, indices) if return_indices else out


# ------------------------------------------------------------------------------ autograd Functions
class Conv2dFunction:
    """:func:`conv2d` under its earlier name, an autograd function's interface.

    ``Conv2dFunction.apply(input, weight, bias, stride, padding, dilation, groups)``; use
    :func:`conv2d` for torch's defaults.
    """

    @staticmethod
    def apply(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              stride: Union[int, Sequence[int]], padding: Union[int, Sequence[int], str],
              dilation: Union[int, Sequence[int]], groups: int) -> torch.Tensor:
        return conv2d(input, weight, bias, stride, padding, dilation, groups)


class ConvTranspose2dFunction:
    """:func:`conv_transpose2d` under its earlier name, an autograd function's interface.

    ``ConvTranspose2dFunction.apply(input, weight, bias, stride, padding, output_padding, groups,
    dilation)``; use :func:`conv_transpose2d` for torch's defaults.
    """

    @staticmethod
    def apply(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              stride: Union[int, Sequence[int]], padding: Union[int, Sequence[int]],
              output_padding: Union[int, Sequence[int]], groups: int,
              dilation: Union[int, Sequence[int]]) -> torch.Tensor:
        return conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups,
                                dilation)


class MaxPool2dFunction:
    """:func:`max_pool2d` under its earlier name, an autograd function's interface.

    ``MaxPool2dFunction.apply(input, kernel_size, stride, padding, dilation, ceil_mode,
    return_indices)``; use :func:`max_pool2d` for torch's defaults.
    """

    @staticmethod
    def apply(input: torch.Tensor, kernel_size: Union[int, Sequence[int]],
              stride: Optional[Union[int, Sequence[int]]], padding: Union[int, Sequence[int]],
              dilation: Union[int, Sequence[int]], ceil_mode: bool, return_indices: bool
              ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode,
                          return_indices)


class AvgPool2dFunction:
    """:func:`avg_pool2d` under its earlier name, an autograd function's interface.

    ``AvgPool2dFunction.apply(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
    divisor_override)``; use :func:`avg_pool2d` for torch's defaults.
    """

    @staticmethod
    def apply(input: torch.Tensor, kernel_size: Union[int, Sequence[int]],
              stride: Optional[Union[int, Sequence[int]]], padding: Union[int, Sequence[int]],
              ceil_mode: bool, count_include_pad: bool,
              divisor_override: Optional[int]) -> torch.Tensor:
        return avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)


class AdaptiveAvgPool2dFunction:
    """:func:`adaptive_avg_pool2d` under its earlier name, an autograd function's interface.

    ``AdaptiveAvgPool2dFunction.apply(input, output_size)``; same as :func:`adaptive_avg_pool2d`.
    """

    @staticmethod
    def apply(input: torch.Tensor, output_size: Union[int, None, Sequence[Optional[int]]]
              ) -> torch.Tensor:
        return adaptive_avg_pool2d(input, output_size)


class AdaptiveMaxPool2dFunction:
    """:func:`adaptive_max_pool2d` under its earlier name, an autograd function's interface.

    ``AdaptiveMaxPool2dFunction.apply(input, output_size, return_indices)``; use
    :func:`adaptive_max_pool2d` for torch's defaults.
    """

    @staticmethod
    def apply(input: torch.Tensor, output_size: Union[int, None, Sequence[Optional[int]]],
              return_indices: bool) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        return adaptive_max_pool2d(input, output_size, return_indices)


# ------------------------------------------------------------------------------ modules
def _fastconv_takes(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether fastconv computes with these tensors (None is skipped): dense float32, float64
    or bfloat16 CPU tensors. A swapped layer called with others (a float16 model, a model moved
    to another device after the swap) runs on torch, so that a swap never breaks a model."""
    for t in tensors:
        if t is not None and not _takes(t):
            return False
    return True


def _refuse_scripting(module: torch.nn.Module) -> NoReturn:
    raise RuntimeError(
        f"torch.jit.script cannot compile fastconv.torch.{type(module).__name__} (its forward "
        "is Python). Trace the model instead (torch.jit.trace; saved models load after "
        "`import fastconv.torch`), or script torch's layers: "
        "fastconv.torch.unswap_modules(model) first."
    )


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed by fastconv (same constructor, parameters and state_dict).

    ``padding_mode`` other than ``'zeros'``, and tensors fastconv does not take (other dtypes
    or devices), run on torch, as ``torch.nn.Conv2d`` would.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
        ) -> torch.Tensor:
        if self.padding_mode != "zeros" or not _fastconv_takes(input, weight, bias):
            return super()._conv_forward(input, weight, bias)
        # the module's hyper-parameters are already ints and pairs (torch checked them)
        padding, same = _conv_padding(self.padding)
        return _conv2d_call(input, weight, bias, self.stride, padding, self.dilation,
                            self.groups, same)

    __prepare_scriptable__ = _refuse_scripting


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` computed by fastconv (same constructor, parameters and
    state_dict; ``forward(input, output_size=None)`` picks the output padding by torch's rule).

    ``padding_mode`` other than ``'zeros'`` (which torch refuses), and tensors fastconv does
    not take (other dtypes or devices), run on torch, as ``torch.nn.ConvTranspose2d`` would.
    """

    def forward(self, input: torch.Tensor, output_size: Optional[List[int]] = None
                ) -> torch.Tensor:
        if self.padding_mode != "zeros" or not _fastconv_takes(input, self.weight, self.bias):
            return super().forward(input, output_size)
        # (torch's annotations of its own method say lists; its attributes are tuples)
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding,  # type: ignore[arg-type]
            self.kernel_size, 2, self.dilation)  # type: ignore[arg-type]
        return _conv_transpose2d_call(input, self.weight, self.bias, self.stride, self.padding,
                                      output_padding, self.groups, self.dilation)

    __prepare_scriptable__ = _refuse_scripting


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` computed by fastconv (same constructor and behaviour); inputs
    fastconv does not take (other dtypes or devices) run on torch."""

    def forward(self, input: torch.Tensor
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        if not _fastconv_takes(input):
            return super().forward(input)
        return _max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                           self.ceil_mode, self.return_indices)

    __prepare_scriptable__ = _refuse_scripting


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` computed by fastconv (same constructor and behaviour); inputs
    fastconv does not take (other dtypes or devices) run on torch."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _fastconv_takes(input):
            return super().forward(input)
        return _avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                           self.count_include_pad, self.divisor_override)

    __prepare_scriptable__ = _refuse_scripting


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` computed by fastconv (same constructor and behaviour);
    inputs fastconv does not take (other dtypes or devices) run on torch."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _fastconv_takes(input):
            return super().forward(input)
        return _adaptive_avg_pool2d_call(input, _adaptive_size(input, self.output_size))

    __prepare_scriptable__ = _refuse_scripting


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d):
    """``torch.nn.AdaptiveMaxPool2d`` computed by fastconv (same constructor and behaviour);
    inputs fastconv does not take (other dtypes or devices) run on torch."""

    def forward(self, input: torch.Tensor
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        if not _fastconv_takes(input):
            return super().forward(input)
        out, indices = _adaptive_max_pool2d_call(input, _adaptive_size(input, self.output_size))
        return (out, indices) if self.return_indices else out

    __prepare_scriptable__ = _refuse_scripting


_TO_FASTCONV = {torch.nn.Conv2d: Conv2d, torch.nn.ConvTranspose2d: ConvTranspose2d,
                torch.nn.MaxPool2d: MaxPool2d, torch.nn.AvgPool2d: AvgPool2d,
                torch.nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
                torch.nn.AdaptiveMaxPool2d: AdaptiveMaxPool2d}
_TO_TORCH = {v: k for k, v in _TO_FASTCONV.items()}


def _swappable(module: torch.nn.Module) -> bool:
    if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        if module.padding_mode != "zeros":
            return False
        return _fastconv_takes(*module.parameters(recurse=False))
    return True


def swap_modules(model: _Model, *, example_input: Any = None, training: Optional[bool] = None
    ) -> _Model:
    """Run every supported layer of ``model`` on fastconv; returns ``model`` (changed in place).

    Each ``torch.nn.Conv2d``, ``torch.nn.ConvTranspose2d``, ``torch.nn.MaxPool2d``,
    ``torch.nn.AvgPool2d``, ``torch.nn.AdaptiveAvgPool2d`` and ``torch.nn.AdaptiveMaxPool2d`` in
    ``model`` (the model itself included; exact classes only, not subclasses) becomes an
    instance of its fastconv subclass of the same name. Nothing else changes: parameters,
    buffers, hooks, state_dict keys and the optimizer's references are the same objects. A
    convolution with ``padding_mode != 'zeros'`` or with parameters that are not float32,
    float64 or bfloat16 CPU tensors stays on torch, and a swapped layer called with tensors
    fastconv does not take (float16, another device) computes on torch for that call: a swap
    never breaks a model. A bfloat16 model (``model.to(torch.bfloat16)``, with ``ml_dtypes``
    installed) runs on fastconv's bfloat16 kernels: products of bfloat16 accumulated in
    float32, results rounded to bfloat16, as torch computes it. Call it after moving the model
    to its final device and dtype; ``model.apply(swap_modules)`` is equivalent.

    With ``example_input``, each layer is then timed once on torch and on fastconv, and stays on
    the faster (fastconv only if it is more than 5% faster): the model runs once on
    ``example_input`` without gradients (its buffers, training flags and random number
    generator are restored afterwards), and every swapped layer's forward -- forward and
    backward if ``training`` -- runs a few times with each class on the input it received.
    Then the whole model, with the layers so chosen, is timed the same way against the model
    with all of them on torch (its hooks run on those calls); unless it is faster by more than
    5%, every layer goes back to torch, so that a model swapped with an example input is not
    slower than torch on inputs like it. :func:`swap_report` lists each layer's times and
    choice.

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


def swap_report(model: torch.nn.Module) -> List[Any]:
    """What :func:`swap_modules` chose for each layer of ``model`` given an ``example_input``: a
    list of ``(name, layer, torch_ms, fastconv_ms, choice)`` named tuples, one per swapped layer,
    ``choice`` being ``'torch'`` or ``'fastconv'`` (empty if no choice was made)."""
    from ._layer_choice import swap_report as report
    return report(model)


def unswap_modules(model: _Model) -> _Model:
    """Undo :func:`swap_modules`: every fastconv module in ``model`` becomes torch's again (in
    place); returns ``model``."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"unswap_modules expects a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        cls = _TO_TORCH.get(type(module))
        if cls is not None:
            module.__class__ = cls
    return model


# ------------------------------------------------------------------------------ processes
def _usable_cores() -> int:
    """The processors this process may run on: its CPU affinity (a container's or ``taskset``'s
    share, which is also OpenMP's default thread count), else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _local_world_size_from_env() -> int:
    text = os.environ.get("LOCAL_WORLD_SIZE")
    if text is None:
        return 1
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"the LOCAL_WORLD_SIZE environment variable must be an integer >= 1, "
                         f"got {text!r}") from None


def threads_per_rank(local_world_size: Optional[int] = None) -> int:
    """The threads each of ``local_world_size`` processes on this machine should use, so that
    together they use every core once: ``max(1, cores // local_world_size)``.

    For training with ``torch.nn.parallel.DistributedDataParallel``, one process (rank) per
    share of the cores. Set both libraries' thread pools with it in every rank::

        n = fastconv.torch.threads_per_rank()
        fastconv.set_num_threads(n)
        torch.set_num_threads(n)

    (``torchrun`` starts its processes with ``OMP_NUM_THREADS=1`` when it starts more than one
    per machine, which leaves both libraries on one thread unless told otherwise.)

    Args:
        local_world_size (int, optional): the number of processes sharing this machine's cores.
            Default: ``None``, the ``LOCAL_WORLD_SIZE`` environment variable that ``torchrun``
            sets (its ``--nproc_per_node``), or 1 when it is not set.

    Returns:
        int >= 1. ``cores`` is the number of processors this process may run on
        (``len(os.sched_getaffinity(0))``: a container's or ``taskset``'s share; where that is not
        available, ``os.cpu_count()``). A launcher that already pins each rank to its own cores
        leaves each rank its share in ``cores``: pass ``local_world_size=1`` then.

    Raises:
        TypeError if ``local_world_size`` is not an int; ValueError if it (or
        ``LOCAL_WORLD_SIZE``) is not >= 1.
    """
    if local_world_size is None:
        local_world_size = _local_world_size_from_env()
        name = "the LOCAL_WORLD_SIZE environment variable"
    else:
        local_world_size = as_int(local_world_size, "local_world_size")
        name = "local_world_size"
    if local_world_size < 1:
        raise ValueError(f"{name} must be >= 1, got {local_world_size}")
    return max(1, _usable_cores() // local_world_size)
