r"""Drop-in replacements for the layer functions of CS231n-style NumPy CNN code.

Course code of the CS231n kind (``layers.py``, ``fast_layers.py``, ``layer_utils.py``) calls its
layers as ``out, cache = layer_forward(x, ..., param_dict)`` and ``grads = layer_backward(dout,
cache)``. The functions below have exactly those names, arguments and return values, so::

    from fastconv.compat.cs231n import conv_forward_fast, conv_backward_fast  # etc.

replaces ``from cs231n.fast_layers import ...`` (whose ``im2col_cython`` extension no longer builds
under Cython 3). Shapes follow that code:

- ``x``: ``(N, C, H, W)``; ``w``: ``(F, C, HH, WW)``; ``b``: ``(F,)``, or None for no bias.
- ``conv_param = {'stride': s, 'pad': p}``: zero padding ``p`` on every side;
  output ``(N, F, 1 + (H + 2p - HH) // s, 1 + (W + 2p - WW) // s)``.
- ``pool_param = {'pool_height': ph, 'pool_width': pw, 'stride': s}`` (an optional ``'pad'``,
  default 0, pads with -inf for max pooling and zeros counted in the divisor for average pooling);
  output ``(N, C, 1 + (H + 2pad - ph) // s, 1 + (W + 2pad - pw) // s)``.

Unlike the original, sizes need not tile exactly (the last partial window is dropped, as in every
framework), and any stride, padding or window shape is fast.

Dtypes: float64 unless every array argument is float32 (then float32). Other inputs (integers,
float16, lists) are converted to float64, as NumPy arithmetic in the original code would do.

The caches hold only what fastconv's backward passes read: the inputs of the convolution, and the
argmax indices of max pooling (an int64 array of the output's shape, the flat position ``h * W + w``
of each maximum in its input plane). Where several inputs of a window share the maximum, the
gradient goes to the first of them in row-major order (like ``np.argmax`` in the naive layers,
unlike the reshape-based fast layer, which gives it to all of them).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from .. import functional as F

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

__all__ = [
    "conv_forward_fast",
    "conv_backward_fast",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "avg_pool_forward_fast",
    "avg_pool_backward_fast",
    "conv_relu_forward",
    "conv_relu_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
]


def _as_arrays(*arrays: Any) -> List[NDArray[Any]]:
    """The arrays in one dtype: float32 if all of them are float32, else float64."""
    arrays = [np.asarray(a) for a in arrays]  # type: ignore[assignment]  # (a list now)
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    return [a.astype(dtype, copy=False) for a in arrays]


def _get(param: Dict[str, Any], key: str, name: str, default: Any = None) -> Any:
    if not isinstance(param, dict):
        raise TypeError(f"{name} must be a dict, got {type(param).__name__}")
    if key in param:
        return param[key]
    if default is not None:
        return default
    raise KeyError(f"{name} has no key {key!r} (keys: {sorted(param)})")


def _check_4d(x: NDArray[Any], name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {x.shape}")


# ------------------------------------------------------------------------------------ conv
def conv_forward_fast(x: ArrayLike, w: ArrayLike, b: Optional[ArrayLike], conv_param: Dict[str, Any]
    ) -> Tuple[NDArray[Any], Tuple[Any, ...]]:
    """Convolution layer forward pass.

    Args:
        x: input of shape ``(N, C, H, W)``.
        w: filters of shape ``(F, C, HH, WW)``.
        b: biases of shape ``(F,)``, or None for no bias (as in torch; then
            :func:`conv_backward_fast` returns None for ``db``).
        conv_param: ``{'stride': s, 'pad': p}``, ints.

    Returns:
        ``(out, cache)``: ``out`` of shape ``(N, F, H', W')``,
        ``H' = 1 + (H + 2p - HH) // s``; ``cache`` for :func:`conv_backward_fast`.
    """
    if b is None:
        x, w = _as_arrays(x, w)
    else:
        x, w, b = _as_arrays(x, w, b)
    _check_4d(x, "x")
    if b is not None and w.ndim == 4 and b.shape != (w.shape[0],):
        raise ValueError(
            f"b must have shape (F,) = ({w.shape[0]},) for w of shape {w.shape}, got {b.shape}"
        )
    stride = _get(conv_param, "stride", "conv_param")
    pad = _get(conv_param, "pad", "conv_param")
    out = F.conv2d(x, w, b, stride=stride, padding=pad)
    return out, (x, w, stride, pad, b is not None)


def conv_backward_fast(dout: ArrayLike, cache: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """Convolution layer backward pass.

    Args:
        dout: upstream gradient of shape ``(N, F, H', W')``.
        cache: the cache returned by :func:`conv_forward_fast`.

    Returns:
        ``(dx, dw, db)``, gradients with the shapes of ``x``, ``w`` and ``b`` (``db`` is None
        when the forward pass had no bias).
    """
    x, w, stride, pad, has_bias = cache
    dout = np.asarray(dout, dtype=x.dtype)
    return F.conv2d_backward(dout, x, w, stride=stride, padding=pad,
                             needs=(True, True, has_bias))


# ------------------------------------------------------------------------------------ pooling
def _pool_geometry(x: NDArray[Any], pool_param: Dict[str, Any]) -> Tuple[Tuple[int, int], int, int]:
    _check_4d(x, "x")
    ph = _get(pool_param, "pool_height", "pool_param")
    pw = _get(pool_param, "pool_width", "pool_param")
    stride = _get(pool_param, "stride", "pool_param")
    pad = _get(pool_param, "pad", "pool_param", default=0)
    return (ph, pw), stride, pad


def max_pool_forward_fast(x: ArrayLike, pool_param: Dict[str, Any]
    ) -> Tuple[NDArray[Any], Tuple[Any, ...]]:
    """Max-pooling layer forward pass.

    Args:
        x: input of shape ``(N, C, H, W)``.
        pool_param: ``{'pool_height': ph, 'pool_width': pw, 'stride': s}`` and optionally
            ``'pad'`` (default 0, at most half the window).

    Returns:
        ``(out, cache)``: ``out`` of shape ``(N, C, H', W')``, ``H' = 1 + (H + 2pad - ph) // s``;
        ``cache`` (input shape and argmax indices) for :func:`max_pool_backward_fast`.
    """
    (x,) = _as_arrays(x)
    kernel, stride, pad = _pool_geometry(x, pool_param)
    out, indices = F.max_pool2d(x, kernel, stride=stride, padding=pad, return_indices=True)
    return out, (x.shape, x.dtype, indices)


def max_pool_backward_fast(dout: ArrayLike, cache: Tuple[Any, ...]) -> NDArray[Any]:
    """Max-pooling layer backward pass: each gradient goes to the argmax of its window.

    Args:
        dout: upstream gradient of shape ``(N, C, H', W')``.
        cache: the cache returned by :func:`max_pool_forward_fast`.

    Returns:
        ``dx`` of the shape of ``x``.
    """
    shape, dtype, indices = cache
    dout = np.asarray(dout, dtype=dtype)
    return F.max_pool2d_backward(dout, indices, shape)


def avg_pool_forward_fast(x: ArrayLike, pool_param: Dict[str, Any]
    ) -> Tuple[NDArray[Any], Tuple[Any, ...]]:
    """Average-pooling layer forward pass (same arguments as :func:`max_pool_forward_fast`).

    Returns:
        ``(out, cache)``: ``out`` of shape ``(N, C, H', W')``; ``cache`` for
        :func:`avg_pool_backward_fast`.
    """
    (x,) = _as_arrays(x)
    kernel, stride, pad = _pool_geometry(x, pool_param)
    out = F.avg_pool2d(x, kernel, stride=stride, padding=pad)
    return out, (x.shape, x.dtype, kernel, stride, pad)


def avg_pool_backward_fast(dout: ArrayLike, cache: Tuple[Any, ...]) -> NDArray[Any]:
    """Average-pooling layer backward pass.

    Args:
        dout: upstream gradient of shape ``(N, C, H', W')``.
        cache: the cache returned by :func:`avg_pool_forward_fast`.

    Returns:
        ``dx`` of the shape of ``x``.
    """
    shape, dtype, kernel, stride, pad = cache
    dout = np.asarray(dout, dtype=dtype)
    return F.avg_pool2d_backward(dout, shape, kernel, stride=stride, padding=pad)


# ------------------------------------------------------------------------------------ sandwiches
def conv_relu_forward(x: ArrayLike, w: ArrayLike, b: Optional[ArrayLike], conv_param: Dict[str, Any]
    ) -> Tuple[NDArray[Any], Tuple[Any, ...]]:
    """Convolution followed by a ReLU. Returns ``(out, cache)``, ``cache = (conv_cache, relu_cache)``
    as in ``layer_utils.py`` (``relu_cache`` is the convolution's output)."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out = np.maximum(a, 0)
    return out, (conv_cache, a)


def conv_relu_backward(dout: ArrayLike, cache: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """Backward pass of :func:`conv_relu_forward`. Returns ``(dx, dw, db)``."""
    conv_cache, a = cache
    da = np.where(a > 0, dout, 0).astype(a.dtype, copy=False)
    return conv_backward_fast(da, conv_cache)


def conv_relu_pool_forward(x: ArrayLike, w: ArrayLike, b: Optional[ArrayLike],
                           conv_param: Dict[str, Any], pool_param: Dict[str, Any]
    ) -> Tuple[NDArray[Any], Tuple[Any, ...]]:
    """Convolution, ReLU, then max pooling. Returns ``(out, cache)``,
    ``cache = (conv_cache, relu_cache, pool_cache)`` as in ``layer_utils.py``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s = np.maximum(a, 0)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, a, pool_cache)


def conv_relu_pool_backward(dout: ArrayLike, cache: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """Backward pass of :func:`conv_relu_pool_forward`. Returns ``(dx, dw, db)``."""
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_relu_backward(ds, (conv_cache, relu_cache))
