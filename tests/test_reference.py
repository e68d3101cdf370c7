"""fastconv.reference, the oracle of every other test, checked on its own terms: for conv2d,
hand-computed cases, the convolution theorem (FFTs) for the forward and finite differences for
the backward; for pooling, hand-computed cases, torch's documented examples and brute-force loops
over every window. Nothing here uses the compiled kernels."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import reference
from conv_helpers import assert_close, assert_same_bits, with_batch, without_batch
from strategies import conv_backward_cases, conv_cases, pool_cases, pool_output_size

F64 = st.just(np.float64)


# ------------------------------------------------------------------------------ by hand
def test_is_a_cross_correlation_not_a_convolution():
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    w = np.array([[[[1.0, 10.0]]]])  # out[i, j] = x[i, j] + 10 * x[i, j + 1]
    out = reference.conv2d(x, w)
    np.testing.assert_array_equal(out[0, 0], x[0, 0, :, :-1] + 10 * x[0, 0, :, 1:])


def test_hand_computed_stride_padding_dilation_bias():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    w = np.ones((1, 1, 2, 2))
    # padding 1 then 2x2 windows at stride 2: corners of the padded 5x5 image
    out = reference.conv2d(x, w, np.array([100.0]), stride=2, padding=1)
    np.testing.assert_array_equal(out[0, 0], [[101, 105], [111, 128]])
    # dilation 2: the 2x2 kernel taps the four corners of the 3x3 image
    np.testing.assert_array_equal(reference.conv2d(x, w, dilation=2)[0, 0], [[1 + 3 + 7 + 9]])


def test_hand_computed_groups():
    x = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 2.0), np.full((2, 2), 3.0),
                  np.full((2, 2), 4.0)])[None]  # channels 1, 2, 3, 4
    # group 0 weighs channels 1, 2 by 1, 10; group 1 weighs channels 3, 4 by 100, 1000
    w = np.array([1.0, 10.0, 100.0, 1000.0]).reshape(2, 2, 1, 1)
    out = reference.conv2d(x, w, groups=2)
    np.testing.assert_array_equal(out[0, :, 0, 0], [1 * 1 + 10 * 2, 100 * 3 + 1000 * 4])


def test_hand_computed_same_padding_even_kernel():
    """torch's 'same' with a 2-wide kernel pads 0 before and 1 after: out[j] = x[j] + 2 x[j+1]."""
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
    w = np.array([1.0, 2.0]).reshape(1, 1, 1, 2)
    np.testing.assert_array_equal(reference.conv2d(x, w, padding="same")[0, 0, 0], [5, 8, 3])


def test_hand_computed_backward():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    gy = np.ones((1, 1, 2, 2))
    gx, gw, gb = reference.conv2d_backward(gy, x, w)
    # every 2x2 window of x summed with its weight: each x pixel receives the weights covering it
    np.testing.assert_array_equal(gx[0, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]])
    np.testing.assert_array_equal(gw[0, 0], [[1 + 2 + 4 + 5, 2 + 3 + 5 + 6],
                                             [4 + 5 + 7 + 8, 5 + 6 + 8 + 9]])
    np.testing.assert_array_equal(gb, [4])


# ------------------------------------------------------------------------------ FFTs
def fft_full_convolution(x, w):
    """Full 2-D *convolution* (kernel flipped) of every (image, channel) with every (filter,
    channel), summed over channels: the inverse FFT of the product of zero-padded FFTs."""
    r, s = w.shape[-2:]
    shape = (x.shape[-2] + r - 1, x.shape[-1] + s - 1)
    xf = np.fft.rfft2(x, s=shape)  # (N, C, ...)
    wf = np.fft.rfft2(w, s=shape)  # (K, C, ...)
    return np.fft.irfft2(np.einsum("nchw,kchw->nkhw", xf, wf), s=shape)


def fft_conv2d(x, w, stride, pads, dilation, groups):
    """conv2d built from fft_full_convolution alone: explicit zero padding, the kernel dilated by
    zero insertion and flipped (correlation = convolution with the flipped kernel), the 'valid'
    part of the full result, then every stride-th output, group by group."""
    (sh, sw), (dh, dw) = stride, dilation
    xp = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    k, cg, r, s = w.shape
    wd = np.zeros((k, cg, dh * (r - 1) + 1, dw * (s - 1) + 1))
    wd[:, :, ::dh, ::dw] = w
    rd, sd = wd.shape[-2:]
    kg = k // groups
    outs = []
    for g in range(groups):
        flipped = wd[g * kg:(g + 1) * kg, :, ::-1, ::-1]
        full = fft_full_convolution(xp[:, g * cg:(g + 1) * cg], flipped)
        valid = full[:, :, rd - 1:xp.shape[2], sd - 1:xp.shape[3]]
        outs.append(valid[:, :, ::sh, ::sw])
    return np.concatenate(outs, axis=1)


def abs_scale(x, w):
    """Sum of |x| |w| over each output's window: the size of the rounding errors."""
    return reference.conv2d(np.abs(x), np.abs(w), padding=(w.shape[2] - 1, w.shape[3] - 1))


@settings(max_examples=150)
@given(case=conv_cases(dtypes=F64, allow_unbatched=False, max_kernel=6))
def test_full_correlation_is_the_convolution_theorem(case):
    """Stride 1, padding kernel-1 ('full'):
    reference.conv2d(x, w) == irfft2(rfft2(x) * rfft2(flip(w)))
    summed over channels, for each group."""
    x, w = case.x, case.w
    r, s = w.shape[2:]
    out = reference.conv2d(x, w, padding=(r - 1, s - 1), groups=case.groups)
    cg, kg = w.shape[1], w.shape[0] // case.groups
    fft = np.concatenate([fft_full_convolution(x[:, g * cg:(g + 1) * cg],
                                               w[g * kg:(g + 1) * kg, :, ::-1, ::-1])
                          for g in range(case.groups)], axis=1)
    assert out.shape == fft.shape
    scale = np.concatenate([abs_scale(x[:, g * cg:(g + 1) * cg], w[g * kg:(g + 1) * kg])
                            for g in range(case.groups)], axis=1)
    np.testing.assert_array_less(np.abs(out - fft), 1e-12 * (scale + 1))


@settings(max_examples=200)
@given(case=conv_cases(dtypes=F64))
def test_every_argument_form_through_the_fft(case):
    """Stride, padding (ints, pairs, 'valid', 'same' with its odd extra after), dilation, groups,
    bias and unbatched input, each derived from the FFT convolution independently."""
    x, unbatched = with_batch(case.x)
    want = fft_conv2d(x, case.w, case.stride, case.pads, case.dilation, case.groups)
    if case.b is not None:
        want = want + case.b[None, :, None, None]
    want = without_batch(want, unbatched)
    out = reference.conv2d(case.x, case.w, case.b, **case.kwargs)
    assert out.shape == case.out_shape == want.shape
    np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_is_input_dtype(dtype):
    x = np.ones((1, 2, 4, 4), dtype)
    w = np.ones((3, 2, 3, 3), dtype)
    assert reference.conv2d(x, w, np.ones(3, dtype)).dtype == dtype
    grads = reference.conv2d_backward(np.ones((1, 3, 2, 2), dtype), x, w)
    assert all(g.dtype == dtype for g in grads)


# ------------------------------------------------------------------------------ finite differences
def loss(case, x, w, b):
    """L = sum(conv2d(x, w, b) * gy): its gradients are exactly what conv2d_backward returns."""
    return float(np.sum(reference.conv2d(x, w, b, **case.kwargs) * case.gy))


def central_differences(f, a, h=1e-3):
    """dL/da[i] = (L(a + h e_i) - L(a - h e_i)) / 2h for every element i of ``a``."""
    grad = np.zeros(a.shape)
    for i in np.ndindex(a.shape):
        plus, minus = a.copy(), a.copy()
        plus[i] += h
        minus[i] -= h
        grad[i] = (f(plus) - f(minus)) / (2 * h)
    return grad


@settings(max_examples=100)
@given(case=conv_backward_cases(dtypes=F64, max_n=2, max_channels=2, max_groups=2, max_kernel=3,
                                max_stride=3, max_dilation=2, max_extra=3))
def test_backward_matches_finite_differences(case):
    """The forward is linear in x, in w and in b, so central differences are exact up to
    rounding: a 1e-6 relative tolerance is very loose and any wrong gradient entry fails it."""
    x, w = np.array(case.x), np.array(case.w)
    b = np.zeros(w.shape[0])
    gx, gw, gb = reference.conv2d_backward(case.gy, case.x, case.w, **case.kwargs)
    tol = 1e-6 * (np.abs(case.gy).sum() + 1)
    np.testing.assert_allclose(gx, central_differences(lambda a: loss(case, a, w, b), x), atol=tol)
    np.testing.assert_allclose(gw, central_differences(lambda a: loss(case, x, a, b), w), atol=tol)
    np.testing.assert_allclose(gb, central_differences(lambda a: loss(case, x, w, a), b), atol=tol)


@settings(max_examples=50)
@given(case=conv_backward_cases(dtypes=F64, max_n=2), direction=st.integers(0, 2**32 - 1))
def test_backward_matches_directional_differences(case, direction):
    """The same on larger shapes, along one random direction per argument (<grad, d> against
    (L(a + h d) - L(a - h d)) / 2h), which checks all entries at once."""
    rng = np.random.default_rng(direction)
    x, w = np.array(case.x), np.array(case.w)
    b = np.zeros(w.shape[0])
    grads = reference.conv2d_backward(case.gy, case.x, case.w, **case.kwargs)
    h = 1e-3
    for k, (a, g) in enumerate(zip((x, w, b), grads)):
        d = rng.standard_normal(a.shape)
        args = [x, w, b]
        args[k] = a + h * d
        plus = loss(case, *args)
        args[k] = a - h * d
        minus = loss(case, *args)
        scale = np.abs(case.gy).sum() * (np.abs(a).max(initial=0) + 1) * (np.abs(d).sum() + 1)
        assert abs(np.vdot(g, d) - (plus - minus) / (2 * h)) <= 1e-9 * scale


@settings(max_examples=50)
@given(case=conv_backward_cases(dtypes=F64, max_n=2))
def test_backward_needs_selects_outputs(case):
    full = reference.conv2d_backward(case.gy, case.x, case.w, **case.kwargs)
    part = reference.conv2d_backward(case.gy, case.x, case.w, needs=case.needs, **case.kwargs)
    for want, f, p in zip(case.needs, full, part):
        if want:
            np.testing.assert_array_equal(p, f)
        else:
            assert p is None


# ====================================================================================== pooling
# fastconv.reference's pooling, checked on its own terms like the convolution above: values and
# indices worked out by hand, the examples of torch's documentation, and an independent
# brute-force loop over every window written here from torch's definitions (aten's CPU loops),
# never fastconv's code.
def brute_max_pool(x, kernel, stride, padding, dilation, ceil_mode):
    """max_pool2d of a 4-D array by loops over every output and tap: the taps of a window in
    row-major order, in bounds only (padding is -inf and never picked); ``val > max or
    isnan(val)`` takes a tap, so the first maximum wins and a NaN (the last one) beats all; the
    index starts at the first in-bounds tap (an all -inf window reports it)."""
    n, c, h, w = x.shape
    oh = pool_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    out, ind = np.zeros((n, c, oh, ow), x.dtype), np.zeros((n, c, oh, ow), np.int64)
    for b, ch, i, j in np.ndindex(n, c, oh, ow):
        taps = [(r, s) for r in (i * stride[0] - padding[0] + u * dilation[0]
                                 for u in range(kernel[0]))
                for s in (j * stride[1] - padding[1] + v * dilation[1] for v in range(kernel[1]))
                if 0 <= r < h and 0 <= s < w]
        best, where = -np.inf, taps[0][0] * w + taps[0][1]
        for r, s in taps:
            val = x[b, ch, r, s]
            if val > best or np.isnan(val):
                best, where = val, r * w + s
        out[b, ch, i, j], ind[b, ch, i, j] = best, where
    return out, ind


def avg_windows(h, w, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """For every output (i, j): its in-bounds taps and its divisor, by torch's definition: the
    window [start, start + k) is clipped to the padded input [-p, size + p) for the count that
    includes padding, to the input [0, size) for the taps and the count that does not."""
    oh = pool_output_size(h, kernel[0], stride[0], padding[0], 1, ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], padding[1], 1, ceil_mode)
    windows = {}
    for i, j in np.ndindex(oh, ow):
        r0, c0 = i * stride[0] - padding[0], j * stride[1] - padding[1]
        r1, c1 = min(r0 + kernel[0], h + padding[0]), min(c0 + kernel[1], w + padding[1])
        with_pad = (r1 - r0) * (c1 - c0)
        rows, cols = range(max(r0, 0), min(r1, h)), range(max(c0, 0), min(c1, w))
        taps = [(r, s) for r in rows for s in cols]
        divisor = (divisor_override if divisor_override is not None
                   else with_pad if count_include_pad else len(taps))
        windows[i, j] = taps, divisor
    return (oh, ow), windows


def brute_avg_pool(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """avg_pool2d by loops, in float64: the sum of each window's in-bounds taps over its divisor."""
    n, c, h, w = x.shape
    (oh, ow), windows = avg_windows(h, w, kernel, stride, padding, ceil_mode, count_include_pad,
                                    divisor_override)
    out = np.zeros((n, c, oh, ow))
    for b, ch, i, j in np.ndindex(n, c, oh, ow):
        taps, divisor = windows[i, j]
        out[b, ch, i, j] = sum(float(x[b, ch, r, s]) for r, s in taps) / divisor
    return out


def brute_avg_pool_backward(g, shape, kernel, stride, padding, ceil_mode, count_include_pad,
                            divisor_override):
    """avg_pool2d_backward by loops, in float64: each output's gradient over its divisor, added
    to each of its window's in-bounds taps (padding taps take their share away)."""
    n, c, h, w = shape
    _, windows = avg_windows(h, w, kernel, stride, padding, ceil_mode, count_include_pad,
                             divisor_override)
    grad = np.zeros(shape)
    for b, ch, i, j in np.ndindex(g.shape):
        taps, divisor = windows[i, j]
        for r, s in taps:
            grad[b, ch, r, s] += float(g[b, ch, i, j]) / divisor
    return grad


def brute_max_pool_backward(g, ind, shape):
    """max_pool2d_backward by loops: each gradient added onto the element its index names, in
    output row-major order, in the gradient's dtype."""
    n, c, h, w = shape
    grad = np.zeros((n, c, h * w), g.dtype)
    for b, ch, i, j in np.ndindex(g.shape):
        grad[b, ch, ind[b, ch, i, j]] += g[b, ch, i, j]
    return grad.reshape(shape)


def pool_args(kwargs, is_max):
    """The pairs and flags of a pool_cases() draw, for the brute-force loops."""
    def pair(v):
        return (v[0], v[-1]) if isinstance(v, (tuple, list)) else (v, v)
    kernel = pair(kwargs["kernel_size"])
    stride = pair(kwargs["stride"]) if kwargs.get("stride") is not None else kernel
    padding = pair(kwargs.get("padding", 0))
    if is_max:
        return kernel, stride, padding, pair(kwargs.get("dilation", 1)), kwargs["ceil_mode"]
    return (kernel, stride, padding, kwargs["ceil_mode"], kwargs["count_include_pad"],
            kwargs["divisor_override"])


# ------------------------------------------------------------------------------ by hand
def test_max_pool_hand_computed_values_and_indices():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out, ind = reference.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(ind[0, 0], [[5, 7], [13, 15]])  # flat h * W + w in the plane
    # stride 1, dilation 2: the taps of window (i, j) are (i, j), (i, j+2), (i+2, j), (i+2, j+2)
    out = reference.max_pool2d(x, 2, stride=1, dilation=2)
    np.testing.assert_array_equal(out[0, 0], [[10, 11], [14, 15]])


def test_max_pool_pads_with_minus_inf_not_zero():
    """All-negative input, padding 1: every window's maximum is an input element, never the
    padding (zero padding would give 0 on the border)."""
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[-1 -2 -3] [-4 -5 -6] [-7 -8 -9]]
    out, ind = reference.max_pool2d(x, 2, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(out[0, 0], [[-1, -1, -2, -3], [-1, -1, -2, -3],
                                              [-4, -4, -5, -6], [-7, -7, -8, -9]])
    np.testing.assert_array_equal(ind[0, 0], [[0, 0, 1, 2], [0, 0, 1, 2], [3, 3, 4, 5],
                                              [6, 6, 7, 8]])


def test_max_pool_ties_nan_and_all_minus_inf_indices():
    # ties: the first maximum in row-major order
    _, ind = reference.max_pool2d(np.array([[[[2.0, 5.0], [5.0, 5.0]]]]), 2, return_indices=True)
    assert ind[0, 0, 0, 0] == 1
    # a NaN wins, the last of several
    out, ind = reference.max_pool2d(np.array([[[[1.0, np.nan, 3.0, np.nan]]]]), (1, 4),
                                    return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and ind[0, 0, 0, 0] == 3
    # a window of -inf only reports its first in-bounds position
    out, ind = reference.max_pool2d(np.full((1, 1, 3, 3), -np.inf), 3, stride=2, padding=1,
                                    return_indices=True)
    assert (out == -np.inf).all()
    np.testing.assert_array_equal(ind[0, 0], [[0, 1], [3, 4]])


def test_ceil_mode_hand_computed():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    # H = 5, k = 2, s = 2: floor gives 2 windows, ceil 3 (the third starts at 4 < 5, half out)
    assert reference.max_pool2d(x, 2).shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(reference.max_pool2d(x, 2, ceil_mode=True)[0, 0],
                                  [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    # the partial windows of ceil_mode divide by their in-input part (it lies past the padding)
    np.testing.assert_array_equal(reference.avg_pool2d(x, 2, ceil_mode=True)[0, 0],
                                  [[3, 5, 6.5], [13, 15, 16.5], [20.5, 22.5, 24]])
    # with padding 1, ceil would give 4, but a window starting in the right padding is dropped
    assert reference.max_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)


def test_avg_pool_count_include_pad_and_divisor_override_hand_computed():
    ones = np.ones((1, 1, 3, 3))
    # kernel 2, stride 2, padding 1: windows hold 1, 2, 2 and 4 input cells of 4
    np.testing.assert_array_equal(reference.avg_pool2d(ones, 2, 2, 1)[0, 0],
                                  [[0.25, 0.5], [0.5, 1.0]])
    np.testing.assert_array_equal(
        reference.avg_pool2d(ones, 2, 2, 1, count_include_pad=False)[0, 0], [[1, 1], [1, 1]])
    ones4 = np.ones((1, 1, 4, 4))
    np.testing.assert_allclose(reference.avg_pool2d(ones4, 2, divisor_override=3), 4 / 3)
    np.testing.assert_allclose(reference.avg_pool2d(ones4, 2, divisor_override=-3), -4 / 3)
    # count_include_pad with ceil_mode: the padding counts, the part past the padded edge not
    np.testing.assert_allclose(reference.avg_pool2d(ones4, 3, 2, 1, ceil_mode=True)[0, 0],
                               [[4 / 9, 6 / 9, 2 / 6], [6 / 9, 1, 3 / 6], [2 / 6, 3 / 6, 1 / 4]])


def test_max_backward_routes_to_the_argmax_and_adds_overlaps():
    # torch's MaxUnpool2d example: the pooled values go back to where they came from
    x = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    out, ind = reference.max_pool2d(x, 2, stride=2, return_indices=True)
    grad = reference.max_pool2d_backward(out, ind, x.shape)
    np.testing.assert_array_equal(grad[0, 0], [[0, 0, 0, 0], [0, 6, 0, 8], [0, 0, 0, 0],
                                               [0, 14, 0, 16]])
    # overlapping windows with the same argmax add their gradients there
    x = np.array([[[[1.0, 3.0, 2.0]]]])
    out, ind = reference.max_pool2d(x, (1, 2), stride=1, return_indices=True)
    np.testing.assert_array_equal(ind[0, 0, 0], [1, 1])
    grad = reference.max_pool2d_backward(np.array([[[[1.0, 10.0]]]]), ind, x.shape)
    np.testing.assert_array_equal(grad[0, 0, 0], [0, 11, 0])


def test_avg_backward_spreads_each_gradient_over_its_window():
    g = np.ones((1, 1, 2, 2))
    # padding taps take their share: every cell lies in one window, and gets 1/4
    np.testing.assert_array_equal(reference.avg_pool2d_backward(g, (1, 1, 3, 3), 2, 2, 1)[0, 0],
                                  np.full((3, 3), 0.25))
    # without them, a window of 1, 2 or 4 cells gives each 1, 1/2 or 1/4
    np.testing.assert_array_equal(
        reference.avg_pool2d_backward(g, (1, 1, 3, 3), 2, 2, 1, count_include_pad=False)[0, 0],
        [[1, 0.5, 0.5], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
    # overlapping windows (stride 1) add: the middle of 1 x 3 gets both halves
    np.testing.assert_array_equal(
        reference.avg_pool2d_backward(np.array([[[[2.0, 4.0]]]]), (1, 1, 1, 3), (1, 2), 1)[0, 0],
        [[1, 3, 2]])


def test_torch_documented_examples():
    """torch.nn.MaxPool2d / AvgPool2d's documentation examples (an input of 20 x 16 x 50 x 32;
    a square window of 3 at stride 2, a 3 x 2 window at stride (2, 1)), with the output sizes of
    the documented formula floor((H + 2 p - d (k - 1) - 1) / s + 1) worked out by hand; the
    MaxUnpool2d example is in test_max_backward_routes_to_the_argmax_and_adds_overlaps."""
    x = np.random.default_rng(0).standard_normal((20, 16, 50, 32))
    assert reference.max_pool2d(x, 3, stride=2).shape == (20, 16, 24, 15)
    assert reference.max_pool2d(x, (3, 2), stride=(2, 1)).shape == (20, 16, 24, 31)
    assert reference.avg_pool2d(x, 3, stride=2).shape == (20, 16, 24, 15)
    assert reference.avg_pool2d(x, (3, 2), stride=(2, 1)).shape == (20, 16, 24, 31)


def test_window_of_padding_only_is_rejected():
    """torch gives -inf with an index outside the window there; the reference refuses."""
    with pytest.raises(ValueError, match="holds no input element"):
        reference.max_pool2d(np.ones((1, 1, 1, 5)), 2, stride=1, padding=1, dilation=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_output_dtype_is_input_dtype(dtype):
    x = np.ones((1, 2, 4, 4), dtype)
    out, ind = reference.max_pool2d(x, 2, return_indices=True)
    assert out.dtype == dtype and ind.dtype == np.int64
    assert reference.avg_pool2d(x, 2).dtype == dtype
    assert reference.max_pool2d_backward(out, ind, x.shape).dtype == dtype
    assert reference.avg_pool2d_backward(out, x.shape, 2).dtype == dtype


# ------------------------------------------------------------------------------ brute force
@settings(max_examples=80)
@given(case=pool_cases("max", max_extra=5, max_n=2, max_c=2, layout=False))
def test_max_pool_is_the_brute_force_loop(case):
    """Values (NaN, ties and -inf included), indices and the backward's additions, bit for bit."""
    x, kw = case["x"], case["kwargs"]
    if case["empty"]:
        with pytest.raises(ValueError, match="holds no input element"):
            reference.max_pool2d(x, **kw)
        return
    x4, unbatched = with_batch(x)
    want_out, want_ind = brute_max_pool(x4, *pool_args(kw, is_max=True))
    out, ind = reference.max_pool2d(x, **kw, return_indices=True)
    assert_same_bits(out, without_batch(want_out, unbatched), "max_pool2d")
    assert_same_bits(ind, without_batch(want_ind, unbatched), "indices")
    g4, _ = with_batch(case["g"])
    want_grad = brute_max_pool_backward(g4, want_ind, x4.shape)
    assert_same_bits(reference.max_pool2d_backward(case["g"], ind, x.shape),
                     without_batch(want_grad, unbatched), "max_pool2d_backward")


@settings(max_examples=80)
@given(case=pool_cases("avg", max_extra=5, max_n=2, max_c=2, layout=False))
def test_avg_pool_is_the_brute_force_loop(case):
    """Values and the backward within the rounding bound (sums of at most kH * kW terms and a
    division, in the input's dtype), NaN and +-inf where the loop has them."""
    x, kw, g = case["x"], case["kwargs"], case["g"]
    x4, unbatched = with_batch(x)
    g4, _ = with_batch(g)
    args = pool_args(kw, is_max=False)
    nterms = args[0][0] * args[0][1] + 2
    with np.errstate(invalid="ignore"):
        want = without_batch(brute_avg_pool(x4, *args), unbatched)
        out = reference.avg_pool2d(x, **kw)
    finite = np.where(np.isfinite(x4), x4, 0)
    scale = without_batch(np.abs(brute_avg_pool(np.abs(finite), *args)), unbatched)
    assert_close(out, want, scale, nterms, x.dtype, "avg_pool2d", nonfinite=True)
    want_grad = without_batch(brute_avg_pool_backward(g4, x4.shape, *args), unbatched)
    scale = without_batch(np.abs(brute_avg_pool_backward(np.abs(g4), x4.shape, *args)), unbatched)
    assert_close(reference.avg_pool2d_backward(g, x.shape, **kw), want_grad, scale, nterms,
                 x.dtype, "avg_pool2d_backward")


def test_pooling_of_infinities_is_nan_without_a_warning():
    """+inf and -inf in one window (or gradients meeting on one input) sum to NaN, and float32
    sums overflow to inf, as in torch and in fastconv's kernels: silently. The oracle warned
    "invalid value encountered in reduce"."""
    x = np.array([[[[np.inf, -np.inf, 1.0, 2.0], [3.0, 4.0, 3e38, 3e38]]]], np.float32)
    g = np.array([[[[np.inf, -np.inf, 1.0]]]], np.float32)  # two windows overlap on column 1
    idx = np.array([[[[0, 0, 2]]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = reference.avg_pool2d(x, (1, 2))
        adaptive = reference.adaptive_avg_pool2d(x, (1, 2))
        grad = reference.avg_pool2d_backward(g, (1, 1, 1, 4), (1, 2), stride=1)
        adaptive_grad = reference.adaptive_avg_pool2d_backward(g[..., :2], (1, 1, 1, 3))
        max_grad = reference.max_pool2d_backward(g, idx, (1, 1, 1, 4))
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 1, 1] == np.inf
    assert np.isnan(adaptive[0, 0, 0, 0]) and adaptive[0, 0, 0, 1] == np.inf
    assert np.isnan(grad[0, 0, 0, 1]) and np.isnan(adaptive_grad[0, 0, 0, 1])
    assert np.isnan(max_grad[0, 0, 0, 0])
