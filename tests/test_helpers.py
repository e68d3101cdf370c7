"""The test helpers themselves (tests/conv_helpers.py): the rounding bound rejects the errors it
exists to catch and passes the kernels' results; assert_same_bits tells apart what value
comparisons do not; the output-shape formula of conv_case matches hand-computed shapes."""
import numpy as np
import pytest

import fastconv
from conv_helpers import (assert_close, assert_same_bits, conv_case, f64, gamma, rounding_bound,
                          with_batch, without_batch)


# ------------------------------------------------------------------------------ rounding bound
def grad_bias_case(seed):
    """A float32 conv2d_backward whose grad_bias sums N * OH * OW = 10 * 28 * 28 = 7,840 terms."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((10, 3, 30, 30)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((10, 4, 28, 28)).astype(np.float32)
    return x, w, gy


def test_bound_passes_the_kernel_and_rejects_28_missing_terms_of_7840():
    """A float32 grad_bias of 7,840 terms: the kernel's result passes; the same result without
    the last output row of the last image (28 terms of 7,840: a loop that stops one row early)
    fails. The bound here is gamma_7840(float32) * sum|gy| ~ 2.9 per channel; the 28 dropped
    terms (N(0, 1) values) sum to -0.6, -0.6, 6.1 and 11.2 in the four channels. (The bound
    used before, 2 (n + 2) eps sum|t| against a float32 reference, was ~11.7 and let it pass.)"""
    x, w, gy = grad_bias_case(0)
    gb = fastconv.conv2d_backward(gy, x, w, needs=(False, False, True))[2]
    exact = f64(gy).sum(axis=(0, 2, 3))
    scale = np.abs(f64(gy)).sum(axis=(0, 2, 3))
    assert_close(gb, exact, scale, 7840, np.float32, "grad_bias")
    dropped = f64(gy[-1, :, -1, :]).sum(axis=-1)
    mutated = (f64(gb) - dropped).astype(np.float32)
    with pytest.raises(AssertionError, match="beyond the rounding bound"):
        assert_close(mutated, exact, scale, 7840, np.float32, "grad_bias")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_rejects_one_wrong_term(dtype):
    """A forward output with one term doubled (a tap read twice) fails, one computed in another
    summation order passes."""
    rng = np.random.default_rng(1)
    terms = rng.standard_normal(300).astype(dtype)
    exact = f64(terms).sum()
    scale = np.abs(f64(terms)).sum()
    in_order = np.zeros((), dtype)
    for t in terms:
        in_order = dtype(in_order + t)
    reversed_order = np.zeros((), dtype)
    for t in terms[::-1]:
        reversed_order = dtype(reversed_order + t)
    for result in (in_order, reversed_order, terms.sum(dtype=dtype)):
        assert_close(np.asarray(result), np.asarray(exact), scale, 300, dtype)
    with pytest.raises(AssertionError):
        assert_close(np.asarray(dtype(in_order + terms[7])), np.asarray(exact), scale, 300, dtype)


def test_bound_is_gamma_n_and_linear_in_n():
    """gamma_n = n u / (1 - n u) with u = eps / 2: for n u << 1, n u, so twice the terms give
    twice the bound for the same sum of magnitudes."""
    u32 = np.finfo(np.float32).eps / 2
    assert gamma(1, np.float32) == pytest.approx(u32 / (1 - u32))
    b1 = rounding_bound(1.0, 1000, np.float32)
    b2 = rounding_bound(1.0, 2000, np.float32)
    assert b2 / b1 == pytest.approx(2.0, rel=1e-3)
    assert b1 == pytest.approx(1000 * u32, rel=1e-3)


def test_bound_never_passes_nan_unless_asked():
    exact = np.array([1.0, np.nan, np.inf])
    got = np.array([1.0, np.nan, np.inf], np.float32)
    with pytest.raises(AssertionError):
        assert_close(got, exact, np.ones(3), 1, np.float32)
    assert_close(got, exact, np.ones(3), 1, np.float32, nonfinite=True)
    with pytest.raises(AssertionError):
        assert_close(np.array([1.0, 0.0, np.inf], np.float32), exact, np.ones(3), 1, np.float32,
                     nonfinite=True)
    with pytest.raises(AssertionError):
        assert_close(np.array([1.0, np.nan, -np.inf], np.float32), exact, np.ones(3), 1,
                     np.float32, nonfinite=True)


# ------------------------------------------------------------------------------ same bits
def test_same_bits_tells_apart_what_equality_does_not():
    a = np.array([0.0, 1.0, np.nan])
    assert_same_bits(a, a.copy())
    assert_same_bits(None, None)
    with pytest.raises(AssertionError):  # -0.0 == 0.0 as values
        assert_same_bits(np.array([-0.0, 1.0, np.nan]), a)
    other_nan = a.copy()
    other_nan.view(np.uint64)[2] ^= 1  # another NaN payload
    assert np.isnan(other_nan[2])
    with pytest.raises(AssertionError):
        assert_same_bits(other_nan, a)
    assert_same_bits(other_nan, a, any_nan=True)  # across SIMD paths: a NaN is a NaN
    with pytest.raises(AssertionError):  # but -0.0 still differs there
        assert_same_bits(np.array([-0.0, 1.0, np.nan]), a, any_nan=True)
    with pytest.raises(AssertionError):  # the dtype counts, not only the values
        assert_same_bits(a.astype(np.float32), a.astype(np.float32).astype(np.float64))
    with pytest.raises(AssertionError):
        assert_same_bits(a[None], a)
    with pytest.raises(AssertionError):
        assert_same_bits(a, None)


# ------------------------------------------------------------------------------ shapes, batches
@pytest.mark.parametrize("x_shape,w_shape,kwargs,out_shape", [
    ((2, 3, 7, 8), (4, 3, 3, 3), {}, (2, 4, 5, 6)),
    ((2, 3, 7, 8), (4, 3, 3, 2), dict(padding=1, stride=2), (2, 4, 4, 5)),
    ((3, 7, 8), (4, 3, 2, 2), dict(padding="same", dilation=(2, 3)), (4, 7, 8)),
    ((1, 2, 9, 9), (2, 1, 3, 3), dict(padding="valid", dilation=2, groups=2), (1, 2, 5, 5)),
    ((1, 1, 5, 6), (1, 1, 2, 3), dict(padding=(0, 2), stride=(1, 3)), (1, 1, 4, 3)),
])
def test_conv_case_shape_is_torchs_formula(x_shape, w_shape, kwargs, out_shape):
    """Shapes worked out by hand: floor((H + 2p - d (k - 1) - 1) / s) + 1."""
    case = conv_case(np.zeros(x_shape), np.zeros(w_shape), **kwargs)
    assert case.out_shape == out_shape
    assert case.unbatched == (len(x_shape) == 3)


def test_batch_helpers_round_trip():
    a3, a4 = np.zeros((2, 3, 4)), np.zeros((5, 2, 3, 4))
    b, unbatched = with_batch(a3)
    assert b.shape == (1, 2, 3, 4) and unbatched and np.shares_memory(b, a3)
    assert without_batch(b, unbatched).shape == a3.shape
    b, unbatched = with_batch(a4)
    assert b is a4 and not unbatched and without_batch(b, unbatched) is a4
