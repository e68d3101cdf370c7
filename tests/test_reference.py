"""fastconv.reference, the oracle of every other test, checked on its own terms: hand-computed
cases, the convolution theorem (FFTs) for the forward and finite differences for the backward.
Nothing here uses the compiled kernels."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import reference
from strategies import conv_backward_cases, conv_cases

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
    x = case.x[None] if case.unbatched else case.x
    want = fft_conv2d(x, case.w, case.stride, case.pads, case.dilation, case.groups)
    if case.b is not None:
        want = want + case.b[None, :, None, None]
    if case.unbatched:
        want = want[0]
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
