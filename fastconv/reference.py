"""Plain NumPy implementations: the oracle of the tests and the baseline of the benchmarks.

Written for clarity, not speed: the forward is ``sliding_window_view`` + ``einsum`` (an im2col in
disguise), the backward loops over the R x S kernel offsets. Argument rules are those of
:mod:`fastconv.functional` (the same validation is reused), so only the arithmetic differs.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._conv import _check_conv_arrays, conv_geometry
from ._validation import as_float_array, batched


def _pad(x, g):
    return np.pad(x, ((0, 0), (0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right)))


def _kernel_window(xp, r, s, g):
    """The (N, C, OH, OW) slice of padded input that kernel offset (r, s) multiplies."""
    (sh, sw), (dh, dw) = g.stride, g.dilation
    h0, w0 = r * dh, s * dw
    return xp[:, :, h0:h0 + sh * (g.out_h - 1) + 1:sh, w0:w0 + sw * (g.out_w - 1) + 1:sw]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Reference of :func:`fastconv.functional.conv2d` (same arguments, same result)."""
    x4, unbatched, weight, bias = _check_conv_arrays(input, weight, bias)
    g = conv_geometry(x4.shape, weight.shape, stride, padding, dilation, groups)
    n, c, _, _ = x4.shape
    k, cg, r, s = weight.shape
    xp = _pad(x4, g)
    (sh, sw), (dh, dw) = g.stride, g.dilation
    # windows: (N, C, H', W', R', S') over the dilated kernel extent, then stride and dilate.
    win = sliding_window_view(xp, (dh * (r - 1) + 1, dw * (s - 1) + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :g.out_h, :g.out_w]
    win = win.reshape(n, g.groups, cg, g.out_h, g.out_w, r, s)
    wg = weight.reshape(g.groups, k // g.groups, cg, r, s)
    out = np.einsum("ngchwrs,gkcrs->ngkhw", win, wg, optimize=True)
    out = out.reshape(n, k, g.out_h, g.out_w).astype(x4.dtype, copy=False)
    if bias is not None:
        out += bias[None, :, None, None]
    return out[0] if unbatched else out


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1,
                    needs=(True, True, True)):
    """Reference of :func:`fastconv.functional.conv2d_backward` (loops over kernel offsets)."""
    x4, unbatched, weight, _ = _check_conv_arrays(input, weight, None)
    grad_output = as_float_array(grad_output, "grad_output")
    go, _ = batched(grad_output, "grad_output")
    g = conv_geometry(x4.shape, weight.shape, stride, padding, dilation, groups)
    n, c, h, w = x4.shape
    k, cg, r, s = weight.shape
    kg = k // g.groups
    go_g = go.reshape(n, g.groups, kg, g.out_h, g.out_w)
    w_g = weight.reshape(g.groups, kg, cg, r, s)
    xp = _pad(x4, g)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w_g)
    for i in range(r):
        for j in range(s):
            x_win = _kernel_window(xp, i, j, g).reshape(n, g.groups, cg, g.out_h, g.out_w)
            gw[:, :, :, i, j] = np.einsum("ngkhw,ngchw->gkc", go_g, x_win)
            gx_win = np.einsum("ngkhw,gkc->ngchw", go_g, w_g[:, :, :, i, j])
            _kernel_window(gxp, i, j, g)[...] += gx_win.reshape(n, c, g.out_h, g.out_w)
    grad_input = gxp[:, :, g.pad_top:g.pad_top + h, g.pad_left:g.pad_left + w]
    grad_input = np.ascontiguousarray(grad_input[0] if unbatched else grad_input)
    grad_weight = gw.reshape(weight.shape)
    grad_bias = go.sum(axis=(0, 2, 3))
    return tuple(v if want else None for v, want in zip((grad_input, grad_weight, grad_bias), needs))


# ------------------------------------------------------------------------------------ pooling
# Same argument rules as fastconv.functional (the validation of fastconv._pool is reused); the
# arithmetic is plain NumPy over a (N, C, OH, OW, kH, kW) view of the padded windows.
from ._pool import _check_input, _check_input_shape, pool_geometry  # noqa: E402
from ._validation import as_bool  # noqa: E402


def _pool_windows(x4, g, fill):
    """The windows of ``x4`` padded with ``fill`` (plus, for ceil_mode, the cells a last window
    needs past the padded edge, also ``fill``): a view of shape (N, C, OH, OW, kH, kW)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.padding, g.dilation
    _, _, h, w = x4.shape
    ext_h, ext_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    extra_h = max(0, (g.out_h - 1) * sh + ext_h - (h + 2 * ph))
    extra_w = max(0, (g.out_w - 1) * sw + ext_w - (w + 2 * pw))
    xp = np.pad(x4, ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w)), constant_values=fill)
    win = sliding_window_view(xp, (ext_h, ext_w), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :g.out_h, :g.out_w]


def _window_positions(size, out, kernel, stride, pad, dilation):
    """(out, kernel) input coordinates of every window tap along one axis (may be outside)."""
    return (np.arange(out) * stride - pad)[:, None] + np.arange(kernel) * dilation


def _avg_divisor(shape, g):
    """(OH, OW) divisors of avg_pool2d, torch's rule."""
    if g.divisor_override is not None:
        return np.full((g.out_h, g.out_w), g.divisor_override)
    counts = []
    for size, out, k, s, p in zip(shape[2:], (g.out_h, g.out_w), g.kernel, g.stride, g.padding):
        start = np.arange(out) * s - p
        if g.count_include_pad:  # padding cells count, cells past the padded edge do not
            counts.append(np.minimum(start + k, size + p) - start)
        else:
            counts.append(np.minimum(start + k, size) - np.maximum(start, 0))
    return counts[0][:, None] * counts[1][None, :]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Reference of :func:`fastconv.functional.max_pool2d`: windows padded with -inf; a NaN wins
    (the last one), else the first maximum among the in-bounds positions."""
    x4, unbatched = _check_input(input)
    return_indices = as_bool(return_indices, "return_indices")
    g = pool_geometry(x4.shape, kernel_size, stride, padding, dilation, ceil_mode, is_max=True)
    n, c, h, w = x4.shape
    (kh, kw), oh, ow = g.kernel, g.out_h, g.out_w
    vals = _pool_windows(x4, g, -np.inf).reshape(n, c, oh, ow, kh * kw)
    rows = _window_positions(h, oh, kh, g.stride[0], g.padding[0], g.dilation[0])
    cols = _window_positions(w, ow, kw, g.stride[1], g.padding[1], g.dilation[1])
    flat = (rows[:, None, :, None] * w + cols[None, :, None, :]).reshape(oh, ow, kh * kw)
    inside = (((rows >= 0) & (rows < h))[:, None, :, None]
              & ((cols >= 0) & (cols < w))[None, :, None, :]).reshape(oh, ow, kh * kw)
    is_nan = np.isnan(vals)
    has_nan = is_nan.any(axis=-1)
    last_nan = kh * kw - 1 - np.argmax(is_nan[..., ::-1], axis=-1)
    best = np.where(is_nan, -np.inf, vals).max(axis=-1)
    first_best = np.argmax((vals == best[..., None]) & inside, axis=-1)
    choice = np.where(has_nan, last_nan, first_best)
    out = np.where(has_nan, np.nan, best).astype(x4.dtype)
    indices = np.take_along_axis(np.broadcast_to(flat, vals.shape), choice[..., None], axis=-1)[..., 0]
    indices = indices.astype(np.int64)
    if unbatched:
        out, indices = out[0], indices[0]
    return (out, indices) if return_indices else out


def max_pool2d_backward(grad_output, indices, input_shape):
    """Reference of :func:`fastconv.functional.max_pool2d_backward`: ``np.add.at`` of every
    gradient onto its index, in output row-major order."""
    grad_output = as_float_array(grad_output, "grad_output")
    shape4, unbatched = _check_input_shape(input_shape)
    go, _ = batched(grad_output, "grad_output")
    ind, _ = batched(np.asarray(indices), "indices")
    n, c, h, w = shape4
    if ind.shape != go.shape or go.shape[:2] != (n, c):
        raise ValueError(f"grad_output {grad_output.shape} / indices {np.shape(indices)} do not "
                         f"match input_shape {tuple(input_shape)}")
    if ind.size and (ind.min() < 0 or ind.max() >= h * w):
        raise ValueError(f"indices must lie inside their {h}x{w} input plane")
    grad = np.zeros((n, c, h * w), dtype=go.dtype)
    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    per_plane = ind.shape[2] * ind.shape[3]
    np.add.at(grad, (nn[:, :, None], cc[:, :, None], ind.reshape(n, c, per_plane)),
              go.reshape(n, c, per_plane))
    grad = grad.reshape(shape4)
    return grad[0] if unbatched else grad


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Reference of :func:`fastconv.functional.avg_pool2d`: window sums over zero padding,
    divided by torch's divisor."""
    x4, unbatched = _check_input(input)
    g = pool_geometry(x4.shape, kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                      divisor_override, is_max=False)
    sums = _pool_windows(x4, g, 0).sum(axis=(-2, -1))
    out = (sums / _avg_divisor(x4.shape, g)).astype(x4.dtype)
    return out[0] if unbatched else out


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Reference of :func:`fastconv.functional.avg_pool2d_backward`: grad / divisor added to every
    tap of every window (a loop over the kernel offsets), then the padding cropped."""
    grad_output = as_float_array(grad_output, "grad_output")
    shape4, unbatched = _check_input_shape(input_shape)
    g = pool_geometry(shape4, kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                      divisor_override, is_max=False)
    go, _ = batched(grad_output, "grad_output")
    n, c, h, w = shape4
    (kh, kw), (sh, sw), (ph, pw) = g.kernel, g.stride, g.padding
    scaled = go / _avg_divisor(shape4, g)
    hp = max(h + 2 * ph, (g.out_h - 1) * sh + kh)
    wp = max(w + 2 * pw, (g.out_w - 1) * sw + kw)
    gxp = np.zeros((n, c, hp, wp), dtype=go.dtype)
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, i:i + sh * (g.out_h - 1) + 1:sh, j:j + sw * (g.out_w - 1) + 1:sw] += scaled
    grad = np.ascontiguousarray(gxp[:, :, ph:ph + h, pw:pw + w])
    return grad[0] if unbatched else grad
