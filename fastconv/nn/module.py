"""A thin layer API over :mod:`fastconv.functional`: enough to train the CNN of the notes.

No autograd: every layer caches in :meth:`Module.forward` what its :meth:`Module.backward` needs
(the conv input, the max-pool argmax indices, the ReLU output, the dropout mask) and
``backward(grad_output)`` returns the gradient with respect to the layer's input while *adding* the
gradients of its parameters to their ``.grad`` (as torch accumulates them; clear them with
``zero_grad()``). A :class:`Sequential` chains both directions::

    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 4 * 4, 10, rng=rng))
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(model(x), labels)          # forward, caches
    model.zero_grad()
    model.backward(loss_fn.backward())        # gradients into p.grad for p in model.parameters()
    optimizer.step()

Parameters are float32 by default (``dtype=np.float64`` on request, or ``model.astype(...)``) and
initialised as torch does (Kaiming-uniform: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and
biases) from a seeded ``np.random.Generator`` (``rng``: a Generator, an int seed, or None).
Names in :meth:`Module.state_dict` are torch's (``"0.weight"``, ``"3.bias"``, ...).
"""

import math
import os
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from . import functional as F
from .filters import PADDING_MODES, pad2d, pad2d_backward
from ._validation import FLOAT_DTYPES, as_int, kernel_layout, nonnegative_pair, positive_pair

__all__ = [
    "Parameter",
    "Module",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "ReLU",
    "Flatten",
    "Linear",
    "Dropout",
    "Sequential",
    "CrossEntropyLoss",
]


def _generator(rng):
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}"
    )


def _float_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _kaiming_uniform(rng, shape, fan_in, dtype):
    """torch's default init: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Parameter:
    """A trainable array: ``data`` (the values, updated in place by the optimisers) and ``grad``
    (None until a backward pass adds to it; same shape and dtype as ``data``)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        data = np.asarray(data)
        if not data.dtype.isnative:  # byte-swapped values: keep them in native order
            data = data.astype(data.dtype.newbyteorder("="))
        _float_dtype(data.dtype)
        self.data = np.ascontiguousarray(data)
        self.grad = None

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def accumulate(self, grad):
        """Add ``grad`` to ``self.grad`` (which becomes ``grad`` itself when it was None)."""
        if self.grad is None:
            self.grad = grad
        else:
            self.grad += grad

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _check_names(params, keys, source, module):
    """ValueError naming ``source`` unless ``keys`` are exactly the parameter names."""
    missing = [k for k in params if k not in keys]
    unexpected = [k for k in keys if k not in params]
    if missing or unexpected:
        raise ValueError(f"{source} does not match {type(module).__name__}: missing keys "
                         f"{missing}, unexpected keys {unexpected}")


class Module:
    """Base class: sub-modules and :class:`Parameter` attributes are registered by assignment.

    Subclasses implement ``forward(x)`` and ``backward(grad_output) -> grad_input`` and call
    ``super().__init__()`` before assigning attributes.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}.__init__ must call super().__init__() "
                "before assigning attributes"
            )
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    # -- the protocol -------------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- parameters and sub-modules -----------------------------------------------------------
    def named_parameters(self, prefix=""):
        """Yield ``(name, parameter)`` pairs, this module's first, then each child's in order."""
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def parameters(self):
        """Yield every :class:`Parameter` (each one once), in :meth:`state_dict` order."""
        for _, p in self.named_parameters():
            yield p

    def children(self):
        return iter(self._modules.values())

    def modules(self):
        """This module and all its descendants, depth first."""
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def zero_grad(self, set_to_none=True):
        """Clear the gradients: set them to None (default, as torch) or fill them with zeros."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def train(self, mode=True):
        """Training mode (dropout active) for this module and its descendants; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode (dropout is the identity); returns self."""
        return self.train(False)

    def astype(self, dtype):
        """Convert every parameter to ``dtype`` (float32 or float64), in place; returns self."""
        dt = _float_dtype(dtype)
        for p in self.parameters():
            p.data = p.data.astype(dt)
            p.grad = None
        return self

    @property
    def dtype(self):
        """The dtype of the parameters (None for a module without any)."""
        for p in self.parameters():
            return p.dtype
        return None

    # -- saving and loading -------------------------------------------------------------------
    def state_dict(self):
        """An ordered ``{name: array}`` copy of every parameter (names as in torch)."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters (keeping their dtype).

        Args:
            state_dict: a mapping ``{name: array}``, e.g. from :meth:`state_dict` or ``np.load``
                of a file written by :meth:`save` / ``np.savez(path, **model.state_dict())``.
            strict: if True (default) the names must match exactly; else missing and unexpected
                names are ignored.

        Raises:
            ValueError naming the missing/unexpected keys, or the key and both shapes of a shape
            mismatch. Nothing is modified unless everything matches.
        """
        params = OrderedDict(self.named_parameters())
        keys = list(state_dict.keys())
        if strict:
            _check_names(params, keys, "state_dict", self)
        updates = []
        for name, p in params.items():
            if name not in keys:
                continue
            value = np.asarray(state_dict[name])
            if value.shape != p.shape:
                raise ValueError(
                    f"state_dict[{name!r}] has shape {value.shape} but the "
                    f"parameter has shape {p.shape}"
                )
            if not (
                np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)
            ):
                raise TypeError(f"state_dict[{name!r}] has dtype {value.dtype}, not a number")
            updates.append((p, value))
        for p, value in updates:
            p.data = value.astype(p.dtype, copy=True)
            p.grad = None

    def save(self, path):
        """Write :meth:`state_dict` to ``path`` with ``np.savez`` (which appends ``.npz`` if the
        name has no such suffix)."""
        np.savez(path, **self.state_dict())

    def load(self, path, strict=True):
        """Load parameters saved by :meth:`save` (or ``np.savez(path, **model.state_dict())``).

        The file is read defensively: each array's ``.npy`` header is checked against the
        parameter of its name (shape, and a real number type) *before* its data is read, so a
        forged or corrupt file costs no more memory than the model itself; nothing is ever
        unpickled. Entries are matched by name as in :meth:`load_state_dict`.

        Args:
            path: the ``.npz`` file (str or path-like; no suffix is added), or a binary file
                object open for reading.
            strict: if True (default) the names must match exactly; else missing and unexpected
                names are ignored.

        Returns:
            self.

        Raises:
            FileNotFoundError / IsADirectoryError: no such file, or a directory.
            ValueError naming ``path``: not an ``.npz`` archive (not a zip, truncated, corrupt), a
            missing or unexpected name, an entry of another shape, an entry that is not a plain
            numeric ``.npy`` array. Nothing is modified unless everything matches.
        """
        params = OrderedDict(self.named_parameters())
        with _open_npz(path) as npz:
            path = npz.path
            keys = _npz_keys(npz)
            if strict:
                _check_names(params, keys, path, self)
            state = OrderedDict()
            for name, p in params.items():
                if name in keys:
                    state[name] = _read_npz_array(
                        npz, path, name, shape=p.shape, kinds="fiu", what="a parameter"
                    )
        self.load_state_dict(state, strict=False)
        return self

    # -- printing and errors ------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        lines.append(")")
        return "\n".join(lines)

    def _check_input(self, x, expected):
        """``x`` as a float ndarray whose dtype is that of the parameters (if any)."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.dtype.newbyteorder("=") not in FLOAT_DTYPES:
            raise TypeError(
                f"{self!r}: input must be float32 or float64, got {x.dtype} "
                f"(shape {x.shape}; expected {expected})"
            )
        x = kernel_layout(x)  # byte-swapped or misaligned arrays: a native, aligned copy
        dt = self.dtype
        if dt is not None and x.dtype != dt:
            raise TypeError(
                f"{self!r}: input has dtype {x.dtype} but the parameters are {dt}; "
                f"convert the input with .astype(np.{dt}) or the model with "
                f".astype(np.{x.dtype})"
            )
        return x

    def _cached(self, name):
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return value

    def _check_grad(self, grad_output, shape):
        if not isinstance(grad_output, np.ndarray):
            grad_output = np.asarray(grad_output)
        if grad_output.shape != tuple(shape):
            raise ValueError(
                f"{self!r}: grad_output has shape {grad_output.shape} but the "
                f"output of the last forward() had shape {tuple(shape)}"
            )
        return grad_output


class Conv2d(Module):
    """2-D convolution layer, as ``torch.nn.Conv2d``: ``padding`` an int, a pair, ``'same'`` or
    ``'valid'``; ``padding_mode`` ``'zeros'`` (default), ``'reflect'``, ``'replicate'`` or
    ``'circular'`` (torch's results, via :func:`fastconv.filters.pad2d`). ``weight``:
    ``(out_channels, in_channels // groups, kH, kW)``; ``bias``: ``(out_channels,)`` or None.
    Input ``(N, C, H, W)`` or ``(C, H, W)``."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        *,
        dtype=np.float32,
        rng=None,
    ):
        super().__init__()
        if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
            raise ValueError(
                f"padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, "
                f"got {padding_mode!r}"
            )
        self.padding_mode = padding_mode
        in_channels = as_int(in_channels, "in_channels")
        out_channels = as_int(out_channels, "out_channels")
        groups = as_int(groups, "groups")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}"
            )
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must be >= 1 and divide in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride = positive_pair(stride, "stride")
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        self.padding = padding if isinstance(padding, str) else nonnegative_pair(padding, "padding")
        self.dilation = positive_pair(dilation, "dilation")
        if self.padding == "same" and self.stride != (1, 1):
            raise ValueError(f"padding='same' requires stride 1, got stride={self.stride}")
        dt, rng = _float_dtype(dtype), _generator(rng)
        kh, kw = self.kernel_size
        fan_in = in_channels // groups * kh * kw
        self.weight = Parameter(
            _kaiming_uniform(rng, (out_channels, in_channels // groups, kh, kw), fan_in, dt)
        )
        self.bias = Parameter(_kaiming_uniform(rng, (out_channels,), fan_in, dt)) if bias else None
        self._input = None

    def extra_repr(self):
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s

    def _args(self):
        padding = self.padding if self.padding_mode == "zeros" else 0
        return dict(stride=self.stride, padding=padding, dilation=self.dilation, groups=self.groups)

    def _explicit_pad(self):
        """(left, right, top, bottom) for the non-zero padding modes, as torch computes it."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            pad = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):  # W first
                total = d * (k - 1)
                pad += [total // 2, total - total // 2]
            return tuple(pad)
        ph, pw = self.padding
        return (pw, pw, ph, ph)

    def forward(self, x):
        expected = f"(N, {self.in_channels}, H, W) or ({self.in_channels}, H, W)"
        x = self._check_input(x, expected)
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"{self!r}: expected input of shape {expected}, got {x.shape}")
        if self.padding_mode != "zeros":
            x = pad2d(x, self._explicit_pad(), self.padding_mode)
        try:
            out = F.conv2d(
                x, self.weight.data, None if self.bias is None else self.bias.data, **self._args()
            )
        except ValueError as exc:
            raise ValueError(f"{self!r} on input of shape {x.shape}: {exc}") from None
        self._input, self._out_shape = x, out.shape
        return out

    def backward(self, grad_output):
        x = self._cached("_input")
        g = self._check_grad(grad_output, self._out_shape)
        gi, gw, gb = F.conv2d_backward(
            g, x, self.weight.data, **self._args(), needs=(True, True, self.bias is not None)
        )
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        if self.padding_mode != "zeros":
            gi = pad2d_backward(gi, self._explicit_pad(), self.padding_mode)
        return gi


def _check_pool_input(layer, x):
    expected = "(N, C, H, W) or (C, H, W)"
    x = layer._check_input(x, expected)
    if x.ndim not in (3, 4):
        raise ValueError(f"{layer!r}: expected input of shape {expected}, got {x.shape}")
    return x


class MaxPool2d(Module):
    """Max pooling, as ``torch.nn.MaxPool2d``; ``stride=None`` means ``stride = kernel_size``.
    The forward caches the argmax indices, the backward routes each gradient to its argmax."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else positive_pair(stride, "stride")
        self.padding = nonnegative_pair(padding, "padding")
        self.dilation = positive_pair(dilation, "dilation")
        self.ceil_mode = bool(ceil_mode)
        self._indices = None

    def extra_repr(self):
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )

    def forward(self, x):
        x = _check_pool_input(self, x)
        try:
            out, idx = F.max_pool2d(
                x,
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
                self.ceil_mode,
                return_indices=True,
            )
        except ValueError as exc:
            raise ValueError(f"{self!r} on input of shape {x.shape}: {exc}") from None
        self._indices, self._input_shape = idx, x.shape
        return out

    def backward(self, grad_output):
        idx = self._cached("_indices")
        g = self._check_grad(grad_output, idx.shape)
        return F.max_pool2d_backward(g, idx, self._input_shape)


class AvgPool2d(Module):
    """Average pooling, as ``torch.nn.AvgPool2d``; ``stride=None`` means
    ``stride = kernel_size``."""

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ):
        super().__init__()
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else positive_pair(stride, "stride")
        self.padding = nonnegative_pair(padding, "padding")
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override
        self._input_shape = None

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _args(self):
        return (
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def forward(self, x):
        x = _check_pool_input(self, x)
        try:
            out = F.avg_pool2d(x, *self._args())
        except ValueError as exc:
            raise ValueError(f"{self!r} on input of shape {x.shape}: {exc}") from None
        self._input_shape, self._out_shape = x.shape, out.shape
        return out

    def backward(self, grad_output):
        shape = self._cached("_input_shape")
        g = self._check_grad(grad_output, self._out_shape)
        return F.avg_pool2d_backward(g, shape, *self._args())


class ReLU(Module):
    """``max(x, 0)`` elementwise; the gradient passes where the output is > 0."""

    def __init__(self):
        super().__init__()
        self._output = None

    def forward(self, x):
        x = self._check_input(x, "any shape")
        out = np.maximum(x, 0)
        self._output = out
        return out

    def backward(self, grad_output):
        out = self._cached("_output")
        g = self._check_grad(grad_output, out.shape)
        return np.where(out > 0, g, 0).astype(out.dtype, copy=False)


class Flatten(Module):
    """Flattens dimensions ``start_dim..end_dim`` into one, as ``torch.nn.Flatten``."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = as_int(start_dim, "start_dim")
        self.end_dim = as_int(end_dim, "end_dim")
        self._input_shape = None

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x):
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

    def backward(self, grad_output):
        shape = self._cached("_input_shape")
        return np.asarray(grad_output).reshape(shape)


class Linear(Module):
    """``y = x @ weight.T + bias``, as ``torch.nn.Linear``: ``weight`` ``(out_features,
    in_features)``, ``bias`` ``(out_features,)`` or None; input ``(..., in_features)``."""

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = as_int(in_features, "in_features")
        self.out_features = as_int(out_features, "out_features")
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(
                f"in_features and out_features must be >= 1, got "
                f"{self.in_features}, {self.out_features}"
            )
        dt, rng = _float_dtype(dtype), _generator(rng)
        self.weight = Parameter(
            _kaiming_uniform(rng, (self.out_features, self.in_features), self.in_features, dt)
        )
        self.bias = (
            Parameter(_kaiming_uniform(rng, (self.out_features,), self.in_features, dt))
            if bias
            else None
        )
        self._input = None

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )

    def forward(self, x):
        expected = f"(..., {self.in_features})"
        x = self._check_input(x, expected)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape {expected}, got {x.shape}")
        out = x @ self.weight.data.T
        if self.bias is not None:
            out += self.bias.data
        self._input = x
        return out

    def backward(self, grad_output):
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

    def __init__(self, p=0.5, *, rng=None):
        super().__init__()
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
        self.p = p
        self.rng = _generator(rng)
        self._mask = None

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
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

    def backward(self, grad_output):
        mask = self._cached("_mask")
        g = self._check_grad(grad_output, self._out_shape)
        return g * mask


class Sequential(Module):
    """Modules applied in order; ``backward`` runs them in reverse. Errors name the layer index."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
            setattr(self, str(i), m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: {type(module).__name__} is not a Module")
        setattr(self, str(len(self)), module)
        return self

    def forward(self, x):
        for i, m in enumerate(self):
            try:
                x = m(x)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"Sequential layer {i}: {exc}") from None
        return x

    def backward(self, grad_output):
        g = grad_output
        for i, m in reversed(list(enumerate(self))):
            try:
                g = m.backward(g)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"Sequential layer {i} (backward): {exc}") from None
        return g


class CrossEntropyLoss(Module):
    """log-softmax + negative log-likelihood over integer class labels, as
    ``torch.nn.CrossEntropyLoss`` (``reduction='mean'`` over the batch by default).

    ``loss = criterion(logits, labels)`` with ``logits`` ``(N, C)`` (or ``(C,)`` with a scalar
    label) and ``labels`` integers in ``[0, C)``; then ``criterion.backward()`` returns
    ``d loss / d logits`` (``(softmax(logits) - onehot(labels)) / N`` for the mean).
    """

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        self._logp = None

    def extra_repr(self):
        return f"reduction={self.reduction!r}"

    def forward(self, input, target):
        x = self._check_input(input, "(N, C) logits")
        t = np.asarray(target)
        if x.ndim not in (1, 2):
            raise ValueError(f"{self!r}: expected logits of shape (N, C) or (C,), got {x.shape}")
        if t.dtype.kind not in "iu":
            raise TypeError(f"{self!r}: target must hold integer class labels, got dtype {t.dtype}")
        if t.shape != x.shape[:-1]:
            raise ValueError(
                f"{self!r}: target has shape {t.shape} but logits have shape "
                f"{x.shape}; expected target shape {x.shape[:-1]}"
            )
        x2, t1 = x.reshape(-1, x.shape[-1]), t.reshape(-1).astype(np.int64)
        c = x.shape[-1]
        if t1.size and (t1.min() < 0 or t1.max() >= c):
            bad = t1[(t1 < 0) | (t1 >= c)][0]
            raise ValueError(f"{self!r}: target label {bad} is outside [0, {c}) for {c} classes")
        logp = F.log_softmax(x2, dim=1)
        per_sample = -logp[np.arange(len(t1)), t1]
        self._logp, self._target, self._shape = logp, t1, x.shape
        if self.reduction == "none":
            return per_sample.reshape(t.shape)
        if self.reduction == "sum":
            return per_sample.sum(dtype=x.dtype)
        return per_sample.mean(dtype=x.dtype) if len(t1) else x.dtype.type(np.nan)

    def backward(self, grad_output=1.0):
        """``d loss / d logits`` times ``grad_output`` (a scalar, or ``(N,)`` for 'none')."""
        logp = self._cached("_logp")
        n = len(self._target)
        g = np.asarray(grad_output, dtype=logp.dtype)
        if self.reduction == "none":
            g = self._check_grad(g, self._shape[:-1]).reshape(-1, 1)
        elif g.size != 1:
            raise ValueError(f"{self!r}: grad_output must be a scalar, got shape {g.shape}")
        else:
            g = g.reshape(())
            if self.reduction == "mean":
                g = g / logp.dtype.type(max(n, 1))
        grad = np.exp(logp)
        grad[np.arange(n), self._target] -= 1
        grad *= g
        return grad.reshape(self._shape)


# -- reading .npz files without trusting them ---------------------------------------------------
# np.load reads a whole member before anyone can look at its shape, and a 1 MB archive can hold a
# member that expands to gigabytes; these read the .npy header first and the data only once the
# caller has accepted the shape and type the header declares.

_NPZ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError)


def _not_npz(path, exc):
    return ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})")


class _Npz:
    """An open .npz archive (a zip of .npy files); use as a context manager."""

    def __init__(self, file):
        if hasattr(file, "read"):  # an open binary file, as np.load accepts
            self.path = str(getattr(file, "name", "<file object>"))
            path = file
        else:
            path = self.path = os.fspath(file)
        if isinstance(path, (str, bytes)) and os.path.isdir(path):
            raise IsADirectoryError(f"{self.path}: is a directory, not an .npz file")
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            hint = ""
            if isinstance(path, str) and os.path.isfile(path + ".npz"):  # as np.savez does
                hint = f" (but {path + '.npz'} exists: save() adds .npz to a name without it)"
            raise FileNotFoundError(f"no such file: {self.path}{hint}") from None
        except PermissionError:
            raise
        except (*_NPZ_ERRORS, OSError, ValueError) as exc:
            raise ValueError(
                f"{self.path} is not a fastconv weights file (an .npz archive of .npy arrays, as "
                f"Module.save and np.savez write): {type(exc).__name__}: {exc}"
            ) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()


def _open_npz(file):
    """Open ``file`` (a path or an open binary file) as an .npz archive."""
    return _Npz(file)


def _npz_keys(npz):
    """The array names of the archive, in file order (the member names without ``.npy``)."""
    return [
        info.filename[: -len(".npy")] if info.filename.endswith(".npy") else info.filename
        for info in npz.zip.infolist()
    ]


def _read_exactly(stream, n):
    """``n`` bytes of ``stream`` into a new uint8 array, or None if the stream ends first. The
    array's pages are touched only as data arrives."""
    out = np.empty(n, dtype=np.uint8)
    view, got = memoryview(out), 0
    while got < n:
        k = stream.readinto(view[got : got + (1 << 20)])
        if not k:
            return None
        got += k
    return out


def _read_npz_array(npz, path, key, *, shape=None, kinds="fiu", max_bytes=None, what="an array"):
    """Entry ``key`` of the open archive ``npz``, its header checked before its data is read.

    Args:
        npz: an archive opened by :func:`_open_npz`.
        path: its name, for messages.
        key: the array name (the member is ``key + '.npy'``).
        shape: the shape the entry must have, or None for any shape.
        kinds: the accepted ``dtype.kind`` letters (``'f'`` float, ``'i'``/``'u'`` integers,
            ``'U'`` text); object and structured arrays are always refused.
        max_bytes: with ``shape=None``, the largest data size accepted.
        what: what the entry is, for messages (``'a parameter'``).

    Raises:
        ValueError naming ``path`` and ``key`` for anything but a matching, complete array.
    """
    where = f"{path}: entry {key!r}"
    try:
        info = npz.zip.getinfo(key + ".npy")
    except KeyError:
        raise ValueError(f"{where} is missing (no member {key + '.npy'!r})") from None
    try:
        with npz.zip.open(info) as stream:
            try:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0(stream)
                elif version == (2, 0):
                    header = np.lib.format.read_array_header_2_0(stream)
                else:
                    raise ValueError(f".npy format version {version} is not supported here")
            except ValueError as exc:
                raise ValueError(f"{where} is not a valid .npy array ({exc})") from None
            got_shape, fortran, dtype = header
            if dtype.hasobject or dtype.fields is not None or dtype.kind not in kinds:
                raise ValueError(f"{where} has dtype {dtype}, which is not {what}'s type")
            if shape is not None and tuple(got_shape) != tuple(shape):
                raise ValueError(
                    f"{where} has shape {tuple(got_shape)} but {what} of shape {tuple(shape)} "
                    "was expected"
                )
            nbytes = math.prod(got_shape) * dtype.itemsize
            if max_bytes is not None and nbytes > max_bytes:
                raise ValueError(
                    f"{where} declares {nbytes:,} bytes of data, more than the {max_bytes:,} bytes "
                    f"{what} may hold"
                )
            header_size = stream.tell()
            if info.file_size != header_size + nbytes:
                raise ValueError(
                    f"{where} is corrupt: its header declares {nbytes:,} bytes of data but the "
                    f"archive stores {info.file_size - header_size:,}"
                )
            data = _read_exactly(stream, nbytes)
            # Reading to the end of the member makes zipfile check its CRC.
            if data is None or stream.read(1):
                raise ValueError(f"{where} is truncated or corrupt")
    except (*_NPZ_ERRORS, OSError) as exc:
        raise ValueError(f"{where} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    shape = tuple(got_shape)
    if fortran:
        return data.view(dtype).reshape(shape[::-1]).T
    return data.view(dtype).reshape(shape)
