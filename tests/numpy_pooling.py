"""A small NumPy pooling (no ceil_mode) used by the nn/demo tests only while the compiled pooling
kernels of issue 3 are not on main: :func:`use_numpy_pooling_if_missing` patches it into
``fastconv.functional`` when ``fastconv.functional.max_pool2d`` still raises NotImplementedError.
Same API and conventions as issue 3 (flat ``h * W + w`` int64 argmax indices per plane)."""
import numpy as np

import fastconv.functional as F


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _geometry(shape, kernel_size, stride, padding, dilation):
    (kh, kw), (ph, pw), (dh, dw) = _pair(kernel_size), _pair(padding), _pair(dilation)
    sh, sw = _pair(kernel_size if stride is None else stride)
    h, w = shape[-2:]
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return kh, kw, sh, sw, ph, pw, dh, dw, oh, ow


def _offsets(x, kernel_size, stride, padding, dilation, fill):
    """Yield (row index grid, col index grid, window values) for each kernel offset."""
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = _geometry(x.shape, kernel_size, stride, padding, dilation)
    xp = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)], constant_values=fill)
    for i in range(kh):
        for j in range(kw):
            rows = np.arange(oh) * sh + i * dh
            cols = np.arange(ow) * sw + j * dw
            yield rows - ph, cols - pw, xp[..., rows[:, None], cols[None, :]]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    assert not ceil_mode
    x = np.asarray(input)
    w = x.shape[-1]
    best = idx = None
    for r, c, v in _offsets(x, kernel_size, stride, padding, dilation, -np.inf):
        flat = np.broadcast_to(r[:, None] * w + c[None, :], v.shape).astype(np.int64)
        if best is None:
            best, idx = v.copy(), flat.copy()
        else:
            better = v > best
            best[better], idx[better] = v[better], flat[better]
    return (best, idx) if return_indices else best


def max_pool2d_backward(grad_output, indices, input_shape):
    g = np.asarray(grad_output)
    plane = input_shape[-2] * input_shape[-1]
    n_planes = int(np.prod(input_shape[:-2]))
    flat = indices.reshape(n_planes, -1) + (np.arange(n_planes) * plane)[:, None]
    summed = np.bincount(flat.ravel(), weights=g.reshape(-1), minlength=n_planes * plane)
    return summed.astype(g.dtype).reshape(input_shape)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    assert not ceil_mode and count_include_pad
    x = np.asarray(input)
    kh, kw = _pair(kernel_size)
    total = sum(v for _, _, v in _offsets(x, kernel_size, stride, padding, 1, 0))
    div = divisor_override or kh * kw
    return (total / x.dtype.type(div)).astype(x.dtype)


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    assert not ceil_mode and count_include_pad
    g = np.asarray(grad_output)
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = _geometry(input_shape, kernel_size, stride, padding, 1)
    div = divisor_override or kh * kw
    gp = np.zeros(tuple(input_shape[:-2]) + (input_shape[-2] + 2 * ph, input_shape[-1] + 2 * pw),
                  dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            gp[..., i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += g / g.dtype.type(div)
    return gp[..., ph:ph + input_shape[-2], pw:pw + input_shape[-1]].copy()


def compiled_pooling_available():
    try:
        F.max_pool2d(np.zeros((1, 1, 2, 2), np.float32), 2)
    except NotImplementedError:
        return False
    return True


def use_numpy_pooling_if_missing(monkeypatch):
    """Patch the NumPy pooling into fastconv.functional if the compiled one is still a stub."""
    if compiled_pooling_available():
        return False
    for name in ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"):
        monkeypatch.setattr(F, name, globals()[name])
    return True
