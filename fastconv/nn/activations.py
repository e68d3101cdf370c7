"""Element-wise activations, with torch's rules bit for bit (NaN and -0.0 included).

A :class:`~fastconv.nn.Sequential` runs a :class:`~fastconv.nn.Conv2d` followed directly by one
of these (of its own class, not a subclass) as one convolution with the activation in its
epilogue (``conv2d(..., activation=...)``), forward and backward, with the same numbers and
gradients; each layer alone, or called by itself, computes as written here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Tuple

import numpy as np

from .._core.epilogue import Epilogue, activate_, check_activation
from .module import Module

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray


class _Activation(Module):
    """An element-wise activation that caches its output, from which its gradient is read."""

    _output: Optional[NDArray[Any]]

    def __init__(self) -> None:
        super().__init__()
        self._output = None

    def _epilogue(self) -> Epilogue:
        raise NotImplementedError

    def _mask(self, grad_output: NDArray[Any], out: NDArray[Any]) -> NDArray[Any]:
        raise NotImplementedError

    def _fused_epilogue(self) -> Optional[Epilogue]:
        """The epilogue a preceding convolution may apply for this layer (None: it may not):
        only for the layers as written here, not a subclass or an instance whose forward or
        backward was replaced, which may compute otherwise."""
        replaced = {"forward", "backward"} & vars(self).keys()
        if type(self) not in (ReLU, ReLU6, LeakyReLU) or replaced:
            return None
        return self._epilogue()

    def _set_output(self, out: NDArray[Any]) -> None:
        """Cache ``out`` as this layer's output, as :meth:`forward` does (a fused convolution
        computed it)."""
        self._output = out

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        x = self._check_input(x, "any shape")
        out = activate_(np.array(x, copy=True), self._epilogue())
        self._output = out
        return out

    def _grad(self, grad_output: ArrayLike) -> Tuple[NDArray[Any], NDArray[Any]]:
        """(grad_output checked against the cached output, that output)."""
        out = self._cached("_output")
        return self._check_grad(grad_output, out.shape), out

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        g, out = self._grad(grad_output)
        return self._mask(g, out).astype(out.dtype, copy=False)


class ReLU(_Activation):
    """``torch.nn.ReLU``: ``0 if x < 0 else x`` elementwise (NaN and -0.0 pass unchanged); the
    gradient is 0 where the output is <= 0, passes elsewhere (at NaN too, as torch's)."""

    def _epilogue(self) -> Epilogue:
        return check_activation("relu", 0.01)

    def _mask(self, g: NDArray[Any], out: NDArray[Any]) -> NDArray[Any]:
        return np.where(out <= 0, 0, g)


class ReLU6(_Activation):
    """``torch.nn.ReLU6``, ``hardtanh(x, 0, 6)``: ``0 if x < 0 else 6 if x > 6 else x``
    elementwise (NaN and -0.0 pass unchanged); the gradient passes where ``0 < output < 6``."""

    def _epilogue(self) -> Epilogue:
        return check_activation("relu6", 0.01)

    def _mask(self, g: NDArray[Any], out: NDArray[Any]) -> NDArray[Any]:
        return np.where((out > 0) & (out < 6), g, 0)


class LeakyReLU(_Activation):
    """``torch.nn.LeakyReLU``: ``x if x > 0 else x * negative_slope`` elementwise (the slope
    rounded to the dtype, as torch); the gradient is 1 where the output is > 0, else
    ``negative_slope``.

    Args:
        negative_slope: a real number. Default: 0.01. A :class:`~fastconv.nn.Sequential` fuses
            the layer into a preceding convolution only when it is >= 0 (see
            :func:`fastconv.conv2d`).
    """

    _positive: Optional[NDArray[np.bool_]]

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self._positive = None  # x > 0 of the last forward, kept when its slope was negative
        if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(
                negative_slope, (int, float, np.integer, np.floating)):
            raise TypeError(f"negative_slope must be a real number, got "
                            f"{type(negative_slope).__name__}")
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def _epilogue(self) -> Epilogue:
        return Epilogue("leaky_relu", 3, self.negative_slope)

    def _fused_epilogue(self) -> Optional[Epilogue]:
        if not self.negative_slope >= 0:  # its gradient cannot be read off the output
            return None
        return super()._fused_epilogue()

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        out = super().forward(x)
        # the output's sign is the input's only for a slope >= 0; otherwise keep the input's
        self._positive = None if self.negative_slope >= 0 else np.asarray(x) > 0
        return out

    def _set_output(self, out: NDArray[Any]) -> None:
        super()._set_output(out)
        self._positive = None

    def _mask(self, g: NDArray[Any], out: NDArray[Any]) -> NDArray[Any]:
        positive = out > 0 if self._positive is None else self._positive
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            return np.where(positive, g, g * out.dtype.type(self.negative_slope))

