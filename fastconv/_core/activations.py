"""softmax / log_softmax: numerically stable (the maximum is subtracted first), as torch's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .args import as_float_array, as_int

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from .args import FloatArray


def _axis(x: NDArray[Any], dim: int) -> Optional[int]:
    dim = as_int(dim, "dim")
    if x.ndim == 0:
        if dim not in (0, -1):
            raise ValueError(f"dim must be 0 or -1 for a 0-D input, got {dim}")
        return None
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(
            f"dim must be in [{-x.ndim}, {x.ndim - 1}] for a {x.ndim}-D input, got {dim}"
        )
    return dim % x.ndim


def _row_max(x: NDArray[Any], axis: Optional[int]) -> NDArray[Any]:
    """The maximum along ``axis`` (kept), with -inf replaced by 0 so that a row of all -inf gives
    NaN like torch (``-inf - -inf``) only through the normalisation, never through the shift."""
    m = np.max(x, axis=axis, keepdims=True)
    return np.where(m == -np.inf, 0, m).astype(x.dtype, copy=False)


def log_softmax(input: ArrayLike, dim: int = -1) -> FloatArray:
    r"""``log(softmax(input))`` along ``dim``, as ``torch.nn.functional.log_softmax``.

    Args:
        input: array of any shape; float32 or float64.
        dim: the axis that is normalised. Default: -1 (torch requires it; here it defaults to the
            last axis, which is the class axis of an ``(N, classes)`` batch).

    Returns:
        An array of the shape and dtype of ``input``: ``x - max(x) - log(sum(exp(x - max(x))))``,
        so large logits never overflow. Rows containing ``+inf`` or NaN give NaN, as in torch.
    """
    x = as_float_array(input, "input")
    axis = _axis(x, dim)
    if x.ndim == 0:
        return log_softmax(x.reshape(1), 0).reshape(())
    if x.size == 0:
        return x.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = x - _row_max(x, axis)
        lse = np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
        return shifted - lse


def softmax(input: ArrayLike, dim: int = -1) -> FloatArray:
    r"""``exp(x) / sum(exp(x))`` along ``dim``, as ``torch.nn.functional.softmax``.

    Args:
        input: array of any shape; float32 or float64.
        dim: the axis that is normalised. Default: -1.

    Returns:
        An array of the shape and dtype of ``input`` whose slices along ``dim`` are non-negative
        and sum to 1; computed as ``exp(x - max(x)) / sum(exp(x - max(x)))``, so it never
        overflows.
    """
    x = as_float_array(input, "input")
    axis = _axis(x, dim)
    if x.ndim == 0:
        return softmax(x.reshape(1), 0).reshape(())
    if x.size == 0:
        return x.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.exp(x - _row_max(x, axis))
        return e / np.sum(e, axis=axis, keepdims=True)
