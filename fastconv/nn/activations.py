"""Element-wise activations."""
import numpy as np

from .module import Module


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
