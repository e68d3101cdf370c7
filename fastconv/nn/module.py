"""The building blocks: :class:`Parameter`, :class:`Module` (parameters, children, train/eval,
dtype, state_dict and .npz save/load) and :class:`Sequential`."""
from __future__ import annotations

from collections import OrderedDict
from typing import (IO, TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, TypeVar, Union)

import numpy as np

from .._core.args import FLOAT_DTYPES, kernel_layout
from ._npz import npz_keys, open_npz, read_npz_array
from .init import float_dtype

if TYPE_CHECKING:
    import os

    from numpy.typing import ArrayLike, DTypeLike, NDArray

    from .._core.epilogue import Epilogue

    _M = TypeVar("_M", bound="Module")
    # a file name or path, or a binary file object
    FileLike = Union[str, "os.PathLike[str]", IO[bytes]]


class Parameter:
    """A trainable array: ``data`` (the values, updated in place by the optimisers) and ``grad``
    (None until a backward pass adds to it; same shape and dtype as ``data``)."""

    __slots__ = ("data", "grad")

    data: NDArray[Any]
    grad: Optional[NDArray[Any]]

    def __init__(self, data: ArrayLike) -> None:
        data = np.asarray(data)
        if not data.dtype.isnative:  # byte-swapped values: keep them in native order
            data = data.astype(data.dtype.newbyteorder("="))
        float_dtype(data.dtype)
        self.data = np.ascontiguousarray(data)
        self.grad = None

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.data.dtype

    def accumulate(self, grad: NDArray[Any]) -> None:
        """Add ``grad`` to ``self.grad`` (which becomes ``grad`` itself when it was None)."""
        if self.grad is None:
            self.grad = grad
        else:
            self.grad += grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _check_names(params: Mapping[str, Any], keys: Sequence[str], source: str, module: Module
                 ) -> None:
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

    ``module(x)`` runs ``forward(x)``, which returns the output and caches what the backward
    pass needs; ``backward(grad_output)`` then takes the gradient of the loss with respect to that
    output and returns the gradient with respect to ``x``, *adding* the gradients of the
    parameters to their ``.grad`` (clear them with :meth:`zero_grad` or the optimiser's).
    """

    _parameters: Dict[str, Parameter]
    _modules: Dict[str, Module]
    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
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
    def forward(self, x: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_output: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- parameters and sub-modules -----------------------------------------------------------
    def named_parameters(self, prefix: str = "") -> Iterator[Tuple[str, Parameter]]:
        """Yield ``(name, parameter)`` pairs, this module's first, then each child's in order."""
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def parameters(self) -> Iterator[Parameter]:
        """Yield every :class:`Parameter` (each one once), in :meth:`state_dict` order."""
        for _, p in self.named_parameters():
            yield p

    def children(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def modules(self) -> Iterator[Module]:
        """This module and all its descendants, depth first."""
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients: set them to None (default, as torch) or fill them with zeros."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def train(self: _M, mode: bool = True) -> _M:
        """Training mode (dropout active) for this module and its descendants; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self: _M) -> _M:
        """Evaluation mode (dropout is the identity); returns self."""
        return self.train(False)

    def astype(self: _M, dtype: DTypeLike) -> _M:
        """Convert every parameter to ``dtype`` (float32 or float64), in place; returns self."""
        dt = float_dtype(dtype)
        for p in self.parameters():
            p.data = p.data.astype(dt)
            p.grad = None
        return self

    @property
    def dtype(self) -> Optional[np.dtype[Any]]:
        """The dtype of the parameters (None for a module without any)."""
        for p in self.parameters():
            return p.dtype
        return None

    # -- saving and loading -------------------------------------------------------------------
    def state_dict(self) -> Dict[str, NDArray[Any]]:
        """An ordered ``{name: array}`` copy of every parameter (names as in torch)."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike], strict: bool = True) -> None:
        """Copy arrays into the parameters (keeping their dtype).

        Args:
            state_dict: a mapping ``{name: array}``, e.g. from :meth:`state_dict` or ``np.load``
                of a file written by :meth:`save` / ``np.savez(path, **model.state_dict())``.
            strict: if True (default) the names must match exactly; else missing and unexpected
                names are ignored.

        Raises:
            ValueError: naming the missing/unexpected keys, or the key and both shapes of a
                shape mismatch. Nothing is modified unless everything matches.
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

    def save(self, path: FileLike) -> None:
        """Write :meth:`state_dict` to ``path`` with ``np.savez`` (which appends ``.npz`` if the
        name has no such suffix)."""
        np.savez(path, **self.state_dict())  # type: ignore[arg-type]  # (numpy's stub)

    def load(self: _M, path: FileLike, strict: bool = True) -> _M:
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
            FileNotFoundError: no such file.
            IsADirectoryError: ``path`` is a directory.
            ValueError: (naming ``path``) not an ``.npz`` archive (not a zip, truncated,
                corrupt), a missing or unexpected name, an entry of another shape, an entry that
                is not a plain numeric ``.npy`` array. Nothing is modified unless everything
                matches.
        """
        params = OrderedDict(self.named_parameters())
        with open_npz(path) as npz:
            path = npz.path
            keys = npz_keys(npz)
            if strict:
                _check_names(params, keys, path, self)
            state = OrderedDict()
            for name, p in params.items():
                if name in keys:
                    state[name] = read_npz_array(
                        npz, path, name, shape=p.shape, kinds="fiu", what="a parameter"
                    )
        self.load_state_dict(state, strict=False)
        return self

    # -- printing and errors ------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        lines.append(")")
        return "\n".join(lines)

    def _check_input(self, x: ArrayLike, expected: str) -> NDArray[Any]:
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

    def _cached(self, name: str) -> Any:
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return value

    def _check_grad(self, grad_output: ArrayLike, shape: Sequence[int]) -> NDArray[Any]:
        if not isinstance(grad_output, np.ndarray):
            grad_output = np.asarray(grad_output)
        if grad_output.shape != tuple(shape):
            raise ValueError(
                f"{self!r}: grad_output has shape {grad_output.shape} but the "
                f"output of the last forward() had shape {tuple(shape)}"
            )
        return grad_output


class Sequential(Module):
    """Modules applied in order; ``backward`` runs them in reverse. Errors name the layer index."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
            setattr(self, str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def append(self, module: Module) -> Sequential:
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: {type(module).__name__} is not a Module")
        setattr(self, str(len(self)), module)
        return self

    @staticmethod
    def _fusions(layers: Sequence[Module]) -> Dict[int, Epilogue]:
        """``{i: epilogue}`` for every convolution ``layers[i]`` followed directly by an
        activation it can apply in its output epilogue (``Conv2d`` then ``ReLU``, ``ReLU6`` or
        ``LeakyReLU`` with a slope >= 0: see fastconv.nn.activations)."""
        fusions = {}
        for i in range(len(layers) - 1):
            conv_ok = getattr(layers[i], "_fusable_conv", None)
            epilogue_of = getattr(layers[i + 1], "_fused_epilogue", None)
            if conv_ok is not None and epilogue_of is not None and conv_ok():
                epilogue = epilogue_of()
                if epilogue is not None:
                    fusions[i] = epilogue
        return fusions

    def forward(self, x: ArrayLike) -> Any:
        """The layers in order. A convolution followed by an activation it can fuse runs as one
        convolution with the activation in its epilogue (one pass over the output instead of
        two); both layers then cache what they would have, so the numbers, the gradients and
        the layers' own state are those of running them one after the other."""
        layers: List[Any] = list(self)  # (their private fusion methods are called too)
        fusions = self._fusions(layers)
        object.__setattr__(self, "_fused", {})
        i = 0
        while i < len(layers):
            try:
                x = layers[i]._forward(x, fusions[i]) if i in fusions else layers[i](x)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"Sequential layer {i}: {exc}") from None
            if i in fusions:
                layers[i + 1]._set_output(x)
                i += 1
            i += 1
        object.__setattr__(self, "_fused", fusions)
        return x

    def backward(self, grad_output: ArrayLike) -> Any:
        """The layers' backward in reverse order; a pair fused in the last forward (and still
        fusable) runs as one convolution backward that masks the gradient once."""
        layers: List[Any] = list(self)
        fused, now = getattr(self, "_fused", {}), self._fusions(layers)
        g = grad_output
        i = len(layers) - 1
        while i >= 0:
            if i - 1 in fused and now.get(i - 1) is not None:
                try:
                    g_act, out = layers[i]._grad(g)
                except (ValueError, TypeError) as exc:
                    raise type(exc)(f"Sequential layer {i} (backward): {exc}") from None
                if g_act.dtype == out.dtype:  # else the activation converts it: run it alone
                    try:
                        g = layers[i - 1]._backward(g_act, now[i - 1], out)
                    except (ValueError, TypeError) as exc:
                        raise type(exc)(f"Sequential layer {i - 1} (backward): {exc}") from None
                    i -= 2
                    continue
            try:
                g = layers[i].backward(g)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"Sequential layer {i} (backward): {exc}") from None
            i -= 1
        return g
