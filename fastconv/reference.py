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
