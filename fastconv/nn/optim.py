"""Optimisers with torch's update rules (``torch.optim.SGD`` and ``torch.optim.Adam``, the
single-tensor CPU code path), updating :class:`fastconv.nn.Parameter` ``.data`` in place.

A parameter whose ``.grad`` is None is skipped, as in torch. All arithmetic is done in the
parameter's dtype, in torch's order of operations.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Tuple

import numpy as np

from .module import Parameter

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Optimizer", "SGD", "Adam"]


def _nonnegative(value: float, name: str) -> float:
    value = float(value)
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


class Optimizer:
    """Base class: holds the parameter list and a per-parameter ``state`` dict.

    ``step()`` updates every parameter from its ``.grad`` (skipping those whose ``.grad`` is
    None); ``zero_grad()`` clears the gradients before the next backward pass.
    """

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"{type(self).__name__}: parameter {i} is a {type(p).__name__}, "
                    "not a fastconv.nn.Parameter (pass model.parameters())"
                )
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{type(self).__name__}: some parameters appear more than once")
        self.lr = _nonnegative(lr, "lr")
        self.state: List[Dict[str, Any]] = [dict() for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of the parameters (None by default, as torch)."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def step(self) -> None:
        raise NotImplementedError

    def _grads(self) -> Iterator[Tuple[Parameter, NDArray[Any], Dict[str, Any]]]:
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            if p.grad.shape != p.data.shape:
                raise ValueError(
                    f"{type(self).__name__}: gradient of shape {p.grad.shape} for a "
                    f"parameter of shape {p.data.shape}"
                )
            yield p, p.grad.astype(p.data.dtype, copy=False), state


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``::

        g = grad + weight_decay * p
        buf = g (first step) | momentum * buf + (1 - dampening) * g
        g = g + momentum * buf (nesterov) | buf (momentum != 0)
        p -= lr * g

    Args:
        params: the parameters to update, e.g. ``model.parameters()`` (a non-empty iterable of
            :class:`fastconv.nn.Parameter`, each at most once).
        lr: the learning rate (>= 0; may be changed between steps through ``.lr``). Default: 1e-3.
        momentum: the momentum factor (>= 0; 0 turns momentum off). Default: 0.
        dampening: the dampening of the momentum. Default: 0.
        weight_decay: the L2 penalty added to the gradient (>= 0). Default: 0.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening = 0``).
            Default: False.
    """

    def __init__(
        self, params: Iterable[Parameter], lr: float = 1e-3, momentum: float = 0.0,
        dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False
    ) -> None:
        super().__init__(params, lr)
        self.momentum = _nonnegative(momentum, "momentum")
        self.dampening = float(dampening)
        self.weight_decay = _nonnegative(weight_decay, "weight_decay")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0")

    def step(self) -> None:
        for p, g, state in self._grads():
            if self.weight_decay != 0:
                g = g + self.weight_decay * p.data
            if self.momentum != 0:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.copy()
                else:
                    buf *= self.momentum
                    buf += (1 - self.dampening) * g
                g = g + self.momentum * buf if self.nesterov else buf
            p.data -= self.lr * g


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (``weight_decay`` is added to the gradient, L2 style)::

        g = grad + weight_decay * p
        m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    With ``amsgrad`` the running maximum of ``v`` replaces ``v`` in the denominator.

    Args:
        params: the parameters to update, e.g. ``model.parameters()`` (a non-empty iterable of
            :class:`fastconv.nn.Parameter`, each at most once).
        lr: the learning rate (>= 0; may be changed between steps through ``.lr``). Default: 1e-3.
        betas: ``(beta1, beta2)``, the decay rates of the running averages of the gradient and of
            its square (each in [0, 1)). Default: (0.9, 0.999).
        eps: added to the denominator (>= 0). Default: 1e-8.
        weight_decay: the L2 penalty added to the gradient (>= 0). Default: 0.
        amsgrad: use the running maximum of ``v`` (AMSGrad). Default: False.
    """

    def __init__(
        self, params: Iterable[Parameter], lr: float = 1e-3,
        betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0, amsgrad: bool = False
    ) -> None:
        super().__init__(params, lr)
        beta1, beta2 = (float(b) for b in betas)
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.betas = (beta1, beta2)
        self.eps = _nonnegative(eps, "eps")
        self.weight_decay = _nonnegative(weight_decay, "weight_decay")
        self.amsgrad = bool(amsgrad)

    def step(self) -> None:
        beta1, beta2 = self.betas
        for p, g, state in self._grads():
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
                if self.amsgrad:
                    state["max_exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]
            if self.weight_decay != 0:
                g = g + self.weight_decay * p.data
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * (g * g)
            step_size = self.lr / (1 - beta1**t)
            bias_correction2_sqrt = math.sqrt(1 - beta2**t)
            if self.amsgrad:
                np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                v = state["max_exp_avg_sq"]
            denom = np.sqrt(v) / bias_correction2_sqrt
            denom += self.eps
            p.data -= step_size * (m / denom)
