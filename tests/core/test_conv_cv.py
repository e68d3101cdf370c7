"""The channel-vectorised path of the forward and grad_input (src/conv_cv_tmpl.h): layers with
small output planes and many channels run with channels in the vector lanes, each output pixel
summing only the taps that do not read padding (grad_input a stride phase of its output at a
time). Which path runs a layer must
change nothing but the time: the same bits as the GEMM on every SIMD path and thread count
(NaNs compared as NaNs, as in test_simd_paths), and the reference's numbers within rounding."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from conv_helpers import (SUPPORTED_ISAS, assert_path_gives_gemm_bits,
                          assert_path_holds_to_reference,
                          assert_path_same_bits_for_one_and_two_threads, assert_same_bits,
                          conv_path, cpu_isas, forward_and_grad_input, path_plans_taken, using_isa)
from strategies import small_plane_conv_problems

CPU_PATHS = cpu_isas() or SUPPORTED_ISAS


@settings(max_examples=120, deadline=None)
@given(small_plane_conv_problems())
def test_both_paths_give_the_same_bits_on_every_simd_path(p):
    assert_path_gives_gemm_bits("cv", p, CPU_PATHS)


@settings(max_examples=40, deadline=None)
@given(small_plane_conv_problems(values=st.just("normal")), st.booleans())
def test_the_path_holds_to_the_reference(p, bias):
    assert_path_holds_to_reference("cv", p, bias)


@settings(max_examples=30, deadline=None)
@given(small_plane_conv_problems())
def test_same_bits_for_one_and_two_threads(p):
    assert_path_same_bits_for_one_and_two_threads("cv", p)


def plans_taken(compute):
    """How many calls of compute() took the channel-vectorised path."""
    return path_plans_taken("cv", compute)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs, forward, grad_input", [
    # a ResNet's last stage, a VGG's 4 x 4 layers: both passes (grad_input's lanes are the
    # input channels, the forward's the output channels)
    ((2, 64, 7, 7), (64, 64, 3, 3), dict(padding=1), 1, 1),
    ((3, 64, 4, 4), (128, 64, 3, 3), dict(padding=1), 1, 1),
    # strided: grad_input is a plan per stride phase of its output (rows x columns: 2 x 2)
    ((2, 64, 8, 8), (64, 64, 3, 3), dict(stride=2, padding=1), 1, 4),
    ((2, 64, 9, 8), (64, 64, 3, 3), dict(stride=(2, 1), padding=1), 1, 2),
    ((2, 64, 7, 7), (64, 64, 1, 1), {}, 1, 0),  # grad_input of a 1x1 kernel: the GEMM
    ((2, 8, 16, 16), (64, 8, 3, 3), dict(padding=1), 0, 0),  # a 16 x 16 plane: the GEMM
    # two channels each way (either fills no vector on any SIMD path): the GEMM
    ((2, 2, 4, 4), (2, 2, 3, 3), dict(padding=1), 0, 0),
])
def test_the_path_is_taken_where_it_applies(dtype, x_shape, w_shape, kwargs, forward,
                                            grad_input):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    y = fastconv.conv2d(x, w, **kwargs)
    assert plans_taken(lambda: fastconv.conv2d(x, w, **kwargs)) == forward
    assert plans_taken(lambda: fastconv.conv2d_backward(y, x, w, **kwargs,
                                                        needs=(True, False, False))) == grad_input
    with conv_path("cv", False):
        assert plans_taken(lambda: fastconv.conv2d(x, w, **kwargs)) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 64, 4, 4), (64, 64, 3, 3), dict(padding=1)),
    ((3, 128, 5, 6), (128, 64, 3, 2), dict(padding=(2, 1), dilation=(2, 1), groups=2)),
    ((1, 64, 3, 3), (64, 64, 5, 5), dict(padding="same")),
])
def test_special_values_give_the_gemm_bits_in_both_passes(dtype, x_shape, w_shape, kwargs):
    """Layers that take the path in both passes on every SIMD path, with inf and NaN in the
    input and grad_output and huge values in every operand (a deterministic complement of the
    property above; a non-finite weight sends grad_input to its tap-by-tap sum, see
    fastconv._core.direct, and is tested on the forward below)."""
    rng = np.random.default_rng(2)
    p = dict(kwargs=kwargs, activation="relu")
    big = np.sqrt(np.finfo(dtype).max) / 2
    x, w, b = (rng.standard_normal(shape) for shape in (x_shape, w_shape, w_shape[:1]))
    gy = rng.standard_normal(fastconv.conv2d(x, w, **kwargs).shape)
    for a in (x, w, gy):
        u = rng.random(a.shape)
        a[u < 0.1] *= big
        if a is not w:
            a[u < 0.01] = np.inf
            a[(u >= 0.01) & (u < 0.02)] = np.nan
    p.update(x=x.astype(dtype), w=w.astype(dtype), b=b.astype(dtype), gy=gy.astype(dtype))
    for isa in CPU_PATHS:
        with using_isa(isa):
            with conv_path("cv", False):
                want = forward_and_grad_input(p)
            with conv_path("cv", True):
                assert plans_taken(lambda: forward_and_grad_input(p)) == 2
                got = forward_and_grad_input(p)
        for name, g, w_ in zip(("output", "grad_input"), got, want):
            assert_same_bits(g, w_, f"{name} on {isa}", any_nan=True)


def test_bfloat16_products_stay_on_the_gemm():
    x = np.ones((2, 32, 4, 4), np.float32)
    w = np.ones((64, 32, 3, 3), np.float32)
    assert plans_taken(lambda: fastconv.conv2d(x, w, padding=1, precision="bf16")) == 0


def test_a_nonfinite_weight_meets_the_padding_as_in_the_gemm():
    """A weight of inf times a padding zero is NaN in the GEMM's sums, which read the padding: on
    this path, which skips those taps, the outputs whose window puts that weight on padding are
    NaN all the same, and only those."""
    rng = np.random.default_rng(1)
    x = rng.uniform(1, 2, (2, 16, 4, 4)).astype(np.float32)
    w = rng.uniform(1, 2, (64, 16, 3, 3)).astype(np.float32)
    w[5, 3, 0, 0] = np.inf  # the top-left tap: on padding for the first row and column
    with conv_path("cv", True):
        assert plans_taken(lambda: fastconv.conv2d(x, w, padding=1)) == 1
        got = fastconv.conv2d(x, w, padding=1)
    with conv_path("cv", False):
        want = fastconv.conv2d(x, w, padding=1)
    assert_same_bits(got, want, "output", any_nan=True)
    nan = np.zeros(got.shape, bool)
    nan[:, 5, 0, :] = nan[:, 5, :, 0] = True
    np.testing.assert_array_equal(np.isnan(got), nan)
    assert np.isposinf(got[:, 5, 1:, 1:]).all()
    assert np.isfinite(np.delete(got, 5, axis=1)).all()
