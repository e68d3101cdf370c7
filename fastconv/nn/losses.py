"""Losses: the last layer of a classifier."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .. import functional as F
from .module import Module

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray


class CrossEntropyLoss(Module):
    """log-softmax + negative log-likelihood over integer class labels, as
    ``torch.nn.CrossEntropyLoss`` (``reduction='mean'`` over the batch by default).

    ``loss = criterion(logits, labels)`` with ``logits`` ``(N, C)`` (or ``(C,)`` with a scalar
    label) and ``labels`` integers in ``[0, C)``; then ``criterion.backward()`` returns
    ``d loss / d logits`` (``(softmax(logits) - onehot(labels)) / N`` for the mean).
    """

    _logp: Optional[NDArray[Any]]

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        self._logp = None

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def forward(self, input: ArrayLike,  # type: ignore[override]  # a loss takes the targets
                target: ArrayLike) -> Union[np.floating[Any], NDArray[Any]]:
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

    def backward(self, grad_output: ArrayLike = 1.0) -> NDArray[Any]:
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
