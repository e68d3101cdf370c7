"""Plain NumPy implementations: the oracle of the tests and the baseline of the benchmarks.

Written for clarity, not speed: the forward gathers every tap of every window by index
arithmetic (an im2col, no padded copy, so huge paddings, strides and dilations cost nothing) and
contracts it with ``einsum``; the backward adds each tap's term back with ``np.add.at``.

Which arguments are accepted is decided by the same rules as :mod:`fastconv.functional`
(``fastconv._core.conv_geometry`` and ``pool_geometry``: plain Python), so that both raise the
same errors. Everything that shapes the numbers is the oracle's own, written from torch's
documentation: the output sizes, the 'same' padding, ceil_mode's last window, the average
pooling divisors and the arithmetic. Importing this module loads no compiled code.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._core.args import as_bool, as_float_array, batched, restore_batch
from ._core.conv_geometry import (
    check_conv_arrays,
    check_transpose_arrays,
    check_transpose_bias,
    conv_geometry,
    conv_transpose_geometry,
)
from ._core.geometry import check_size
from ._core.pool_geometry import (adaptive_output_size, check_input, check_input_shape,
                                  pool_geometry)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray

    from ._core.adaptive_pool import OutputSize
    from ._core.args import FloatArray, Grads, IndexArray, IntOrPair, IntPair, Padding
    from ._core.conv_geometry import ConvGeometry
    from ._core.pool_geometry import PoolGeometry

    BoolArray = NDArray[np.bool_]


def _conv_shape(input_shape: Sequence[int], weight_shape: Sequence[int], stride: object,
                padding: object, dilation: object, groups: object) -> ConvGeometry:
    """The shared rules' validated geometry with the oracle's own padding and output size:
    torch.nn.functional.conv2d's formula; 'same' pads d*(k-1) in total per axis, the odd one at
    the end (bottom/right)."""
    g = conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups)
    extents = [d * (k - 1) + 1 for d, k in zip(g.dilation, weight_shape[2:])]
    if isinstance(padding, str):
        totals = [0, 0] if padding == "valid" else [e - 1 for e in extents]
        pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right)]
    out = [(size + lo + hi - e) // s + 1
           for size, (lo, hi), e, s in zip(input_shape[2:], pads, extents, g.stride)]
    return g._replace(pad_top=pads[0][0], pad_bottom=pads[0][1], pad_left=pads[1][0],
                      pad_right=pads[1][1], out_h=out[0], out_w=out[1])


def _pool_out(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool
              ) -> int:
    """torch's pooling output size: floor (or ceil) of (size + 2*pad - dilation*(kernel-1) - 1)
    / stride, plus one; with ceil_mode a last window that would start past the input and its
    left padding is dropped."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = -(-span // stride) + 1 if ceil_mode else span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_shape(input_shape: Sequence[int], kernel_size: object, stride: object,
                padding: object, dilation: object, ceil_mode: object,
                count_include_pad: object = True, divisor_override: object = None,
                is_max: bool = True) -> PoolGeometry:
    """The shared rules' validated geometry with the oracle's own output size."""
    g = pool_geometry(input_shape, kernel_size, stride, padding, dilation, ceil_mode,
                      count_include_pad, divisor_override, is_max)
    out = [_pool_out(n, k, s, p, d, g.ceil_mode)
           for n, k, s, p, d in zip(input_shape[2:], g.kernel, g.stride, g.padding, g.dilation)]
    return g._replace(out_h=out[0], out_w=out[1])


def _big(*values: int) -> Union[type, DTypeLike]:
    """int64 while the position arithmetic cannot wrap around, else Python ints (object)."""
    return np.int64 if max(abs(int(v)) for v in values) < 2**61 else object


def _conv_taps(size: int, out: int, taps: int, stride: int, dilation: int, pad: int
               ) -> Tuple[IndexArray, BoolArray]:
    """(out, taps) input index of each tap of each window along one axis (i*stride + r*dilation
    - pad) clipped into [0, size), and whether it is inside (else it reads the zero padding)."""
    dt = _big(out * stride, taps * dilation, pad, size)
    pos = (np.arange(out, dtype=dt) * stride)[:, None] + np.arange(taps, dtype=dt) * dilation - pad
    inside = ((pos >= 0) & (pos < size)).astype(bool)
    return np.where(inside, pos, 0).astype(np.int64), inside


def _conv_windows(x4: NDArray[Any], g: ConvGeometry, r: int, s: int
                  ) -> Tuple[NDArray[Any], IndexArray, IndexArray, BoolArray]:
    """(N, C, OH, OW, R, S) input values of every tap of every window (zeros for padding), and
    the index arrays: an im2col by index arithmetic, no padded copy."""
    _, _, h, w = x4.shape
    rows, in_r = _conv_taps(h, g.out_h, r, g.stride[0], g.dilation[0], g.pad_top)
    cols, in_c = _conv_taps(w, g.out_w, s, g.stride[1], g.dilation[1], g.pad_left)
    win = x4[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # (N, C, OH, OW, R, S)
    inside = in_r[:, None, :, None] & in_c[None, :, None, :]
    return np.where(inside, win, 0).astype(x4.dtype, copy=False), rows, cols, inside


def conv2d(input: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None,
           stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1,
           groups: int = 1) -> FloatArray:
    """Reference of :func:`fastconv.functional.conv2d` (same arguments, same result)."""
    x4, unbatched, weight, bias = check_conv_arrays(input, weight, bias)
    g = _conv_shape(x4.shape, weight.shape, stride, padding, dilation, groups)
    n, c, _, _ = x4.shape
    k, cg, r, s = weight.shape
    if n * k == 0:  # an empty result has no window to gather, however many positions it has
        return restore_batch(np.zeros((n, k, g.out_h, g.out_w), dtype=x4.dtype), unbatched)
    check_size((n, c, g.out_h, g.out_w, r, s), x4.itemsize, "the reference's window array")
    win, _, _, _ = _conv_windows(x4, g, r, s)
    win = win.reshape(n, g.groups, cg, g.out_h, g.out_w, r, s)
    wg = weight.reshape(g.groups, k // g.groups, cg, r, s)
    out = np.einsum("ngchwrs,gkcrs->ngkhw", win, wg, optimize=True)
    out = out.reshape(n, k, g.out_h, g.out_w).astype(x4.dtype, copy=False)
    if bias is not None:
        out += bias[None, :, None, None]
    return restore_batch(out, unbatched)


def conv2d_backward(grad_output: ArrayLike, input: ArrayLike, weight: ArrayLike,
                    stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1,
                    groups: int = 1, needs: Sequence[bool] = (True, True, True)) -> Grads:
    """Reference of :func:`fastconv.functional.conv2d_backward` (einsums over the windows, then
    ``np.add.at`` of every tap's term onto the input element it read)."""
    x4, unbatched, weight, _ = check_conv_arrays(input, weight, None)
    grad_output = as_float_array(grad_output, "grad_output")
    go, _ = batched(grad_output, "grad_output")
    g = _conv_shape(x4.shape, weight.shape, stride, padding, dilation, groups)
    n, c, h, w = x4.shape
    k, cg, r, s = weight.shape
    kg = k // g.groups
    go_g = go.reshape(n, g.groups, kg, g.out_h, g.out_w)
    w_g = weight.reshape(g.groups, kg, cg, r, s)
    if n * k == 0:  # no output, so every gradient is zero (and no window is gathered)
        grads = (np.zeros(x4.shape, dtype=x4.dtype), np.zeros(weight.shape, dtype=x4.dtype),
                 np.zeros(k, dtype=x4.dtype))
        grads = (restore_batch(grads[0], unbatched),) + grads[1:]
        return tuple(v if want else None for v, want in zip(grads, needs))
    check_size((n, c, g.out_h, g.out_w, r, s), x4.itemsize, "the reference's window array")
    win, rows, cols, inside = _conv_windows(x4, g, r, s)
    win = win.reshape(n, g.groups, cg, g.out_h, g.out_w, r, s)
    gw = np.einsum("ngkhw,ngchwrs->gkcrs", go_g, win)
    gx_win = np.einsum("ngkhw,gkcrs->ngchwrs", go_g, w_g).reshape(n, c, g.out_h, g.out_w, r, s)
    # every tap that reads the input adds its term there, in (OH, OW, R, S) order
    grad_input = np.zeros(x4.shape, dtype=x4.dtype)
    ri = np.broadcast_to(rows[:, None, :, None], inside.shape)[inside]
    ci = np.broadcast_to(cols[None, :, None, :], inside.shape)[inside]
    np.add.at(grad_input, (slice(None), slice(None), ri, ci),  # type: ignore[arg-type]
              gx_win[:, :, inside])  # (numpy's stub allows no slice in the index)
    grad_input = restore_batch(grad_input, unbatched)
    grad_weight = gw.reshape(weight.shape)
    grad_bias = go.sum(axis=(0, 2, 3))
    return tuple(v if want else None for v, want in zip((grad_input, grad_weight, grad_bias), needs))


# ---------------------------------------------------------------------- transposed convolution
# Scatter-add form, straight from the definition: input element (n, c_in, i, j) times tap (r, s)
# of its filters lands on output (i * stride - padding + r * dilation, j * ... ); a position
# outside the output (cut by the padding) is dropped. The backward passes gather the same pairs.


def _transpose_shape(input_shape: Sequence[int], weight_shape: Sequence[int], stride: object,
                     padding: object, output_padding: object, dilation: object, groups: object
                     ) -> Tuple[IntPair, IntPair, IntPair, int, List[int]]:
    """The shared rules' validated hyper-parameters with the oracle's own output size:
    torch.nn.functional.conv_transpose2d's formula."""
    t = conv_transpose_geometry(input_shape, weight_shape, stride, padding, output_padding,
                                dilation, groups)
    st, dl, pad = t.conv.stride, t.conv.dilation, (t.conv.pad_top, t.conv.pad_left)
    out = [(size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, s, p, d, k, op in
           zip(input_shape[2:], st, pad, dl, weight_shape[2:], t.output_padding)]
    return st, dl, pad, t.groups, out


def _transpose_targets(size: int, out: int, tap: int, stride: int, dilation: int, pad: int
                       ) -> Tuple[IndexArray, BoolArray]:
    """Output index of every input position along one axis for kernel tap ``tap``, and which of
    them land inside ``[0, out)``."""
    dt = _big(size * stride, tap * dilation, pad, out)
    pos = np.arange(size, dtype=dt) * stride + tap * dilation - pad
    inside = ((pos >= 0) & (pos < out)).astype(bool)
    return np.where(inside, pos, 0).astype(np.int64), inside


def _transpose_taps(x4: NDArray[Any], weight: NDArray[Any], stride: IntPair, dilation: IntPair,
                    pad: IntPair, out: Sequence[int]) -> Iterator[Tuple[Any, ...]]:
    """Every tap ``(r, s)`` with the (input rows, input cols) it uses and the output (rows, cols)
    they land on; taps that reach no output are skipped."""
    _, _, h, w = x4.shape
    for r in range(weight.shape[2]):
        rows, in_r = _transpose_targets(h, out[0], r, stride[0], dilation[0], pad[0])
        for s in range(weight.shape[3]):
            cols, in_c = _transpose_targets(w, out[1], s, stride[1], dilation[1], pad[1])
            if in_r.any() and in_c.any():
                yield r, s, (np.flatnonzero(in_r), np.flatnonzero(in_c)), (rows[in_r], cols[in_c])


def conv_transpose2d(input: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None,
                     stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1,
                     dilation: IntOrPair = 1) -> FloatArray:
    """Reference of :func:`fastconv.functional.conv_transpose2d`: every tap's products added
    onto the output positions they reach (same arguments, same result)."""
    x4, unbatched, weight, bias = check_transpose_arrays(input, weight, bias)
    st, dl, pad, groups, out = _transpose_shape(x4.shape, weight.shape, stride, padding,
                                                output_padding, dilation, groups)
    check_transpose_bias(bias, weight, groups)
    n, c_in, _, _ = x4.shape
    cg_out = weight.shape[1]
    check_size((n, cg_out * groups) + tuple(out), x4.itemsize, "the output")
    y: NDArray[Any] = np.zeros((n, groups, cg_out, out[0], out[1]), dtype=x4.dtype)
    xg = x4.reshape(n, groups, c_in // groups, x4.shape[2], x4.shape[3])
    wg = weight.reshape(groups, c_in // groups, cg_out, weight.shape[2], weight.shape[3])
    if y.size and xg.size:
        for r, s, (ri, ci), (ro, co) in _transpose_taps(x4, weight, st, dl, pad, out):
            part = np.einsum("ngkhw,gkc->ngchw", xg[:, :, :, ri][..., ci], wg[:, :, :, r, s])
            y[:, :, :, ro[:, None], co[None, :]] += part  # one tap reaches each position once
    y = y.reshape(n, groups * cg_out, out[0], out[1])
    if bias is not None:
        y += bias[None, :, None, None]
    return restore_batch(y, unbatched)


def conv_transpose2d_backward(grad_output: ArrayLike, input: ArrayLike, weight: ArrayLike,
                              stride: IntOrPair = 1, padding: IntOrPair = 0,
                              output_padding: IntOrPair = 0, groups: int = 1,
                              dilation: IntOrPair = 1,
                              needs: Sequence[bool] = (True, True, True)) -> Grads:
    """Reference of :func:`fastconv.functional.conv_transpose2d_backward`: for each tap, the
    output gradients at the positions it reached, multiplied back onto the input (grad_input)
    or the input onto them (grad_weight)."""
    x4, unbatched, weight, _ = check_transpose_arrays(input, weight, None)
    grad_output = as_float_array(grad_output, "grad_output")
    go, _ = batched(grad_output, "grad_output")
    st, dl, pad, groups, out = _transpose_shape(x4.shape, weight.shape, stride, padding,
                                                output_padding, dilation, groups)
    n, c_in, h, w = x4.shape
    cg_in, cg_out = c_in // groups, weight.shape[1]
    if go.shape != (n, cg_out * groups, out[0], out[1]):
        raise ValueError(f"grad_output must have shape {(n, cg_out * groups, *out)}, got "
                         f"{grad_output.shape}")
    xg = x4.reshape(n, groups, cg_in, h, w)
    wg = weight.reshape(groups, cg_in, cg_out, weight.shape[2], weight.shape[3])
    gog = go.reshape(n, groups, cg_out, out[0], out[1])
    gx = np.zeros(xg.shape, dtype=x4.dtype)
    gw = np.zeros(wg.shape, dtype=x4.dtype)
    if go.size and x4.size:
        for r, s, (ri, ci), (ro, co) in _transpose_taps(x4, weight, st, dl, pad, out):
            g_tap = gog[:, :, :, ro][..., co]  # (N, G, C_out/g, H', W')
            gx[:, :, :, ri[:, None], ci[None, :]] += np.einsum(
                "ngchw,gkc->ngkhw", g_tap, wg[:, :, :, r, s])
            gw[:, :, :, r, s] += np.einsum("ngchw,ngkhw->gkc", g_tap, xg[:, :, :, ri][..., ci])
    grads = (restore_batch(gx.reshape(x4.shape), unbatched), gw.reshape(weight.shape),
             go.sum(axis=(0, 2, 3)))
    return tuple(v if want else None for v, want in zip(grads, needs))


# ------------------------------------------------------------------------------------ pooling
# Plain NumPy over a (N, C, OH, OW, kH', kW') gather of the window taps that fall inside the
# input (kH' <= H: a window's padding taps never matter, and the kernel size may be up to
# 2**63 - 1), in row-major order.


def _pool_taps(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int
               ) -> Tuple[IndexArray, BoolArray]:
    """(out, K') input coordinates of the in-bounds taps of every window along one axis, in
    order (clipped to 0 past a window's count), and whether each is a real tap."""
    dt = _big(out * stride, pad, size, kernel, dilation)
    start = np.arange(out, dtype=dt) * stride - pad
    first = np.where(start < 0, (-start + dilation - 1) // dilation, 0)  # first tap inside
    stop = np.minimum((size - start + dilation - 1) // dilation, kernel)  # past the last one
    count = np.maximum(stop - first, 0).astype(np.int64)
    width = max(int(count.max()), 1)
    j = np.arange(width)
    real = j < count[:, None]
    pos = (start + first * dilation)[:, None] + j.astype(dt) * dilation
    return np.where(real, pos, 0).astype(np.int64), real


def _pool_gather(x4: NDArray[Any], g: PoolGeometry, fill: float
                 ) -> Tuple[NDArray[Any], IndexArray, BoolArray]:
    """(N, C, OH, OW, K'h, K'w) tap values (``fill`` where no real tap), flat h*W+w indices and
    the real-tap mask (OH, OW, K'h, K'w)."""
    _, _, h, w = x4.shape
    rows, real_r = _pool_taps(h, g.out_h, g.kernel[0], g.stride[0], g.padding[0], g.dilation[0])
    cols, real_c = _pool_taps(w, g.out_w, g.kernel[1], g.stride[1], g.padding[1], g.dilation[1])
    ri, ci = rows[:, None, :, None], cols[None, :, None, :]
    real = real_r[:, None, :, None] & real_c[None, :, None, :]
    vals = np.where(real, x4[:, :, ri, ci], fill).astype(x4.dtype, copy=False)
    flat = np.broadcast_to(ri * w + ci, real.shape)
    return vals, flat, real


def _avg_divisor(shape: Sequence[int], g: PoolGeometry) -> NDArray[Any]:
    """(OH, OW) divisors of avg_pool2d, torch's rule, as exact Python integers."""
    if g.divisor_override is not None:
        return np.full((g.out_h, g.out_w), g.divisor_override, dtype=object)
    counts = []
    for size, out, k, s, p in zip(shape[2:], (g.out_h, g.out_w), g.kernel, g.stride, g.padding):
        start = [i * s - p for i in range(out)]
        if g.count_include_pad:  # padding cells count, cells past the padded edge do not
            counts.append([min(a + k, size + p) - a for a in start])
        else:
            counts.append([min(a + k, size) - max(a, 0) for a in start])
    return np.array([[a * b for b in counts[1]] for a in counts[0]], dtype=object)


def _as_float(divisor: NDArray[Any], dtype: DTypeLike) -> NDArray[Any]:
    return np.array([float(v) for v in divisor.ravel()], dtype).reshape(divisor.shape)


def _nonfinite_quietly() -> Any:
    """Sums of +inf and -inf are NaN and sums of large values overflow to inf, silently, as in
    torch and in fastconv's kernels: no NumPy RuntimeWarning from the oracle either."""
    return np.errstate(invalid="ignore", over="ignore")


def max_pool2d(input: ArrayLike, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False
               ) -> Union[FloatArray, Tuple[FloatArray, IndexArray]]:
    """Reference of :func:`fastconv.functional.max_pool2d`: a NaN wins (the last one), else the
    first maximum among the in-bounds positions (padding is -inf and never reported)."""
    x4, unbatched = check_input(input)
    return_indices = as_bool(return_indices, "return_indices")
    g = _pool_shape(x4.shape, kernel_size, stride, padding, dilation, ceil_mode, is_max=True)
    n, c, h, w = x4.shape
    oh, ow = g.out_h, g.out_w
    vals, flat, inside = _pool_gather(x4, g, -np.inf)
    taps = inside.shape[2] * inside.shape[3]
    vals = vals.reshape(n, c, oh, ow, taps)
    flat, inside = flat.reshape(oh, ow, taps), inside.reshape(oh, ow, taps)
    is_nan = np.isnan(vals)
    has_nan = is_nan.any(axis=-1)
    last_nan = taps - 1 - np.argmax(is_nan[..., ::-1], axis=-1)
    best = np.where(is_nan, -np.inf, vals).max(axis=-1)
    first_best = np.argmax((vals == best[..., None]) & inside, axis=-1)
    choice = np.where(has_nan, last_nan, first_best)
    out = np.where(has_nan, np.nan, best).astype(x4.dtype)
    indices = np.take_along_axis(np.broadcast_to(flat, vals.shape), choice[..., None], axis=-1)[..., 0]
    indices = indices.astype(np.int64)
    out, indices = restore_batch(out, unbatched), restore_batch(indices, unbatched)
    return (out, indices) if return_indices else out


def max_pool2d_backward(grad_output: ArrayLike, indices: ArrayLike, input_shape: Sequence[int]
                        ) -> FloatArray:
    """Reference of :func:`fastconv.functional.max_pool2d_backward`: ``np.add.at`` of every
    gradient onto its index, in output row-major order."""
    grad_output = as_float_array(grad_output, "grad_output")
    shape4, unbatched = check_input_shape(input_shape)
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
    with _nonfinite_quietly():
        np.add.at(grad, (nn[:, :, None], cc[:, :, None], ind.reshape(n, c, per_plane)),
                  go.reshape(n, c, per_plane))
    return restore_batch(grad.reshape(shape4), unbatched)


def avg_pool2d(input: ArrayLike, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None
               ) -> FloatArray:
    """Reference of :func:`fastconv.functional.avg_pool2d`: sums of the in-bounds taps divided
    by torch's divisor."""
    x4, unbatched = check_input(input)
    g = _pool_shape(x4.shape, kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                    divisor_override, is_max=False)
    vals, _, _ = _pool_gather(x4, g, 0)
    with _nonfinite_quietly():
        sums = vals.sum(axis=(-2, -1))
        out = (sums / _as_float(_avg_divisor(x4.shape, g), sums.dtype)).astype(x4.dtype)
    return restore_batch(out, unbatched)


def avg_pool2d_backward(grad_output: ArrayLike, input_shape: Sequence[int],
                        kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                        padding: IntOrPair = 0, ceil_mode: bool = False,
                        count_include_pad: bool = True, divisor_override: Optional[int] = None
                        ) -> FloatArray:
    """Reference of :func:`fastconv.functional.avg_pool2d_backward`: grad / divisor added to every
    in-bounds tap of every window (``np.add.at``, output row-major order)."""
    grad_output = as_float_array(grad_output, "grad_output")
    shape4, unbatched = check_input_shape(input_shape)
    g = _pool_shape(shape4, kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                    divisor_override, is_max=False)
    go, _ = batched(grad_output, "grad_output")
    n, c, h, w = shape4
    scaled = go / _as_float(_avg_divisor(shape4, g), go.dtype)
    grad = np.zeros((n, c, h * w), dtype=go.dtype)
    _, flat, real = _pool_gather(np.zeros((1, 1, h, w), go.dtype), g, 0)
    terms = np.broadcast_to(scaled[..., None, None], (n, c) + real.shape)[:, :, real]
    with _nonfinite_quietly():
        np.add.at(grad, (slice(None), slice(None), flat[real]),  # type: ignore[arg-type]
                  terms)  # (numpy's stub allows no slice in the index)
    return restore_batch(grad.reshape(shape4), unbatched)


# --------------------------------------------------------------------------- adaptive pooling
# A loop over the output positions, each reducing its own bin: torch's bins, start =
# floor(i * size / out) and end = ceil((i + 1) * size / out), in Python integers.


def _adaptive_bins(size: int, out: int) -> List[Tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool2d(input: ArrayLike, output_size: OutputSize) -> FloatArray:
    """Reference of :func:`fastconv.functional.adaptive_avg_pool2d`: the mean of every bin."""
    x4, unbatched = check_input(input)
    oh, ow = adaptive_output_size(x4.shape, output_size)
    n, c, h, w = x4.shape
    out = np.empty((n, c, oh, ow), x4.dtype)
    if out.size == 0:
        return restore_batch(out, unbatched)
    for i, (h0, h1) in enumerate(_adaptive_bins(h, oh)):
        for j, (w0, w1) in enumerate(_adaptive_bins(w, ow)):
            with _nonfinite_quietly():
                bin_sum = x4[:, :, h0:h1, w0:w1].sum(axis=(2, 3))
            out[:, :, i, j] = bin_sum / ((h1 - h0) * (w1 - w0))
    return restore_batch(out, unbatched)


def adaptive_max_pool2d(input: ArrayLike, output_size: OutputSize, return_indices: bool = False
                        ) -> Union[FloatArray, Tuple[FloatArray, IndexArray]]:
    """Reference of :func:`fastconv.functional.adaptive_max_pool2d`: per bin, the last NaN if
    there is one, else the first maximum in row-major order."""
    x4, unbatched = check_input(input)
    return_indices = as_bool(return_indices, "return_indices")
    oh, ow = adaptive_output_size(x4.shape, output_size)
    n, c, h, w = x4.shape
    out = np.empty((n, c, oh, ow), x4.dtype)
    indices = np.empty((n, c, oh, ow), np.int64)
    for i, (h0, h1) in (enumerate(_adaptive_bins(h, oh)) if out.size else ()):
        for j, (w0, w1) in enumerate(_adaptive_bins(w, ow)):
            vals = x4[:, :, h0:h1, w0:w1].reshape(n, c, (h1 - h0) * (w1 - w0))
            nan = np.isnan(vals)
            last_nan = vals.shape[2] - 1 - np.argmax(nan[..., ::-1], axis=-1)
            best = np.where(nan, -np.inf, vals).max(axis=-1)
            first_best = np.argmax(vals == best[..., None], axis=-1)
            k = np.where(nan.any(axis=-1), last_nan, first_best)
            out[:, :, i, j] = np.where(nan.any(axis=-1), np.nan, best)
            indices[:, :, i, j] = (h0 + k // (w1 - w0)) * w + w0 + k % (w1 - w0)
    out, indices = restore_batch(out, unbatched), restore_batch(indices, unbatched)
    return (out, indices) if return_indices else out


def adaptive_avg_pool2d_backward(grad_output: ArrayLike, input_shape: Sequence[int]
                                 ) -> FloatArray:
    """Reference of :func:`fastconv.functional.adaptive_avg_pool2d_backward`: grad / bin area
    added to every element of its bin, in output row-major order."""
    grad_output = as_float_array(grad_output, "grad_output")
    shape4, unbatched = check_input_shape(input_shape)
    go, _ = batched(grad_output, "grad_output")
    n, c, h, w = shape4
    grad = np.zeros(shape4, go.dtype)
    for i, (h0, h1) in enumerate(_adaptive_bins(h, go.shape[2])):
        for j, (w0, w1) in enumerate(_adaptive_bins(w, go.shape[3])):
            with _nonfinite_quietly():
                grad[:, :, h0:h1, w0:w1] += (go[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
    return restore_batch(grad, unbatched)


def adaptive_max_pool2d_backward(grad_output: ArrayLike, indices: ArrayLike,
                                 input_shape: Sequence[int]) -> FloatArray:
    """Reference of :func:`fastconv.functional.adaptive_max_pool2d_backward`: every gradient
    added onto its index, in output row-major order (as :func:`max_pool2d_backward`)."""
    return max_pool2d_backward(grad_output, indices, input_shape)
