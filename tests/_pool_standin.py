"""A slow NumPy stand-in for fastconv's pooling API (issue 3), for the adapter tests only.

The drop-in adapters (fastconv.compat.cs231n, fastconv.torch) call ``fastconv.functional``'s
pooling functions. Until the compiled pooling kernels exist (``fastconv._pool`` raises
NotImplementedError), :func:`use_if_missing` monkeypatches these plain-loop versions in, with the
same signatures and torch 2.x semantics, so that the adapters' plumbing can be tested. Once the
kernels land, the fixture does nothing and the tests run on the real thing.
"""
import math

import numpy as np

import fastconv
import fastconv._pool
import fastconv.functional


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _out_size(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1
    o = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1
    return o


def _geometry(shape, kernel_size, stride, padding, dilation, ceil_mode):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    h, w = shape[-2:]
    oh = _out_size(h, kh, sh, ph, dh, ceil_mode)
    ow = _out_size(w, kw, sw, pw, dw, ceil_mode)
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw), oh, ow


def _batched(x):
    return (x[None], True) if x.ndim == 3 else (x, False)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    x, unb = _batched(np.asarray(input))
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), oh, ow = _geometry(
        x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow), x.dtype)
    idx = np.empty((n, c, oh, ow), np.int64)
    for i in range(oh):
        rows = [r for r in range(i * sh - ph, i * sh - ph + dh * kh, dh) if 0 <= r < h]
        for j in range(ow):
            cols = [q for q in range(j * sw - pw, j * sw - pw + dw * kw, dw) if 0 <= q < w]
            win = x[:, :, rows][:, :, :, cols].reshape(n, c, -1)
            a = np.argmax(win, axis=2)
            out[:, :, i, j] = np.take_along_axis(win, a[..., None], 2)[..., 0]
            idx[:, :, i, j] = np.array(rows)[a // len(cols)] * w + np.array(cols)[a % len(cols)]
    if unb:
        out, idx = out[0], idx[0]
    return (out, idx) if return_indices else out


def max_pool2d_backward(grad_output, indices, input_shape):
    g = np.asarray(grad_output)
    shape = tuple(input_shape)
    planes = int(np.prod(shape[:-2]))
    gx = np.zeros((planes, shape[-2] * shape[-1]), g.dtype)
    gflat, iflat = g.reshape(planes, -1), np.asarray(indices).reshape(planes, -1)
    for p in range(planes):
        np.add.at(gx[p], iflat[p], gflat[p])
    return gx.reshape(shape)


def _avg_windows(shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override):
    (kh, kw), (sh, sw), (ph, pw), _, oh, ow = _geometry(shape, kernel_size, stride, padding, 1,
                                                         ceil_mode)
    h, w = shape[-2:]
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            pool = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            div = divisor_override or (pool if count_include_pad else (h1 - h0) * (w1 - w0))
            yield i, j, slice(h0, h1), slice(w0, w1), div
    return oh, ow


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    x, unb = _batched(np.asarray(input))
    *_, oh, ow = _geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode)
    out = np.empty(x.shape[:2] + (oh, ow), x.dtype)
    for i, j, rs, cs, div in _avg_windows(x.shape, kernel_size, stride, padding, ceil_mode,
                                          count_include_pad, divisor_override):
        out[:, :, i, j] = x[:, :, rs, cs].sum(axis=(2, 3)) / div
    return out[0] if unb else out


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    g, unb = _batched(np.asarray(grad_output))
    shape = tuple(input_shape)
    gx = np.zeros(g.shape[:2] + shape[-2:], g.dtype)
    for i, j, rs, cs, div in _avg_windows(shape, kernel_size, stride, padding, ceil_mode,
                                          count_include_pad, divisor_override):
        gx[:, :, rs, cs] += (g[:, :, i, j] / div)[:, :, None, None]
    return gx[0] if unb else gx


NAMES = ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward")


def real_pooling_available():
    try:
        fastconv._pool.max_pool2d(np.zeros((1, 1, 2, 2)), 2)
    except NotImplementedError:
        return False
    return True


def use_if_missing(monkeypatch):
    """Patch the stand-in into fastconv if its pooling kernels are still a stub; returns
    'fastconv' or 'standin'."""
    if real_pooling_available():
        return "fastconv"
    for name in NAMES:
        for mod in (fastconv, fastconv.functional, fastconv._pool):
            monkeypatch.setattr(mod, name, globals()[name])
    return "standin"
