"""The depthwise path of the forward and grad_input (src/conv_dwd_tmpl.h): a layer whose groups
have one input and one output channel runs a plane at a time through its own kernel instead of
the GEMM's one-row blocks. Which path runs a layer must change nothing but the time: the same
bits as the GEMM on every SIMD path and thread count (NaNs compared as NaNs, as in
test_simd_paths), and the reference's numbers within rounding."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from conv_helpers import (SUPPORTED_ISAS, assert_path_gives_gemm_bits,
                          assert_path_holds_to_reference,
                          assert_path_same_bits_for_one_and_two_threads, assert_same_bits,
                          check_backward, conv_case, conv_path, cpu_isas, forward_and_grad_input,
                          path_plans_taken, workspace_cap)
from strategies import depthwise_conv_problems

CPU_PATHS = cpu_isas() or SUPPORTED_ISAS


def plans_taken(compute):
    """How many plans of compute() took the depthwise path."""
    return path_plans_taken("dwd", compute)


@settings(max_examples=120, deadline=None)
@given(depthwise_conv_problems())
def test_both_paths_give_the_same_bits_on_every_simd_path(p):
    assert_path_gives_gemm_bits("dwd", p, CPU_PATHS)


@settings(max_examples=40, deadline=None)
@given(depthwise_conv_problems(values=st.just("normal")), st.booleans())
def test_the_path_holds_to_the_reference(p, bias):
    assert_path_holds_to_reference("dwd", p, bias)


@settings(max_examples=30, deadline=None)
@given(depthwise_conv_problems())
def test_same_bits_for_one_and_two_threads(p):
    assert_path_same_bits_for_one_and_two_threads("dwd", p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs, taken", [
    # MobileNet's: 3x3, stride 1 and 2 (grad_input's four stride phases: one plan)
    ((2, 96, 14, 14), (96, 1, 3, 3), dict(padding=1, groups=96), 1),
    ((2, 96, 15, 15), (96, 1, 3, 3), dict(stride=2, padding=1, groups=96), 1),
    ((1, 8, 30, 30), (8, 1, 5, 5), dict(padding=4, dilation=2, groups=8), 1),
    ((2, 1, 9, 9), (1, 1, 3, 3), {}, 1),  # one channel, one group: a depthwise layer too
    ((2, 8, 9, 9), (16, 1, 3, 3), dict(groups=8), 0),  # two outputs per group: the GEMM
    ((2, 8, 9, 9), (4, 2, 3, 3), dict(groups=4), 0),  # two inputs per group: the GEMM
])
def test_the_path_is_taken_where_it_applies(dtype, x_shape, w_shape, kwargs, taken):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    y = fastconv.conv2d(x, w, **kwargs)
    assert plans_taken(lambda: fastconv.conv2d(x, w, **kwargs)) == taken
    assert plans_taken(lambda: fastconv.conv2d_backward(y, x, w, **kwargs,
                                                        needs=(True, False, False))) == taken
    with conv_path("dwd", False):
        assert plans_taken(lambda: fastconv.conv2d(x, w, **kwargs)) == 0


def test_bfloat16_products_stay_on_the_gemm():
    x = np.ones((2, 32, 8, 8), np.float32)
    w = np.ones((32, 1, 3, 3), np.float32)
    assert plans_taken(lambda: fastconv.conv2d(x, w, padding=1, groups=32,
                                               precision="bf16")) == 0


def test_planes_beyond_the_workspace_cap_take_the_gemms_row_bands():
    """A plane whose buffer exceeds the per-image workspace cap goes to the GEMM's row bands
    (the path builds whole planes), with the same bits."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 40, 40)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 4, 40, 40)).astype(np.float32)
    p = dict(x=x, w=w, b=None, gy=gy, kwargs=dict(padding=1, groups=4), activation=None)
    want = forward_and_grad_input(p)
    with workspace_cap(2048):
        assert plans_taken(lambda: forward_and_grad_input(p)) == 0
        got = forward_and_grad_input(p)
    for name, g, w_ in zip(("output", "grad_input"), got, want):
        assert_same_bits(g, w_, name)


def test_a_nonfinite_weight_meets_the_padding_as_in_the_gemm():
    """A weight of inf times a padding zero is NaN in the GEMM's sums, which read the padding;
    this path reads it too: the outputs whose window puts that weight on padding are NaN, and
    only those."""
    rng = np.random.default_rng(1)
    x = rng.uniform(1, 2, (2, 6, 5, 5)).astype(np.float32)
    w = rng.uniform(1, 2, (6, 1, 3, 3)).astype(np.float32)
    w[4, 0, 0, 0] = np.inf  # the top-left tap: on padding for the first row and column
    assert plans_taken(lambda: fastconv.conv2d(x, w, padding=1, groups=6)) == 1
    got = fastconv.conv2d(x, w, padding=1, groups=6)
    with conv_path("dwd", False):
        want = fastconv.conv2d(x, w, padding=1, groups=6)
    assert_same_bits(got, want, "output", any_nan=True)
    nan = np.zeros(got.shape, bool)
    nan[:, 4, 0, :] = nan[:, 4, :, 0] = True
    np.testing.assert_array_equal(np.isnan(got), nan)
    assert np.isposinf(got[:, 4, 1:, 1:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, k, kwargs", [
    ((2, 6, 37, 41), (3, 3), dict(stride=2, padding=1)),
    ((1, 4, 20, 40), (3, 4), dict(stride=(1, 2), padding=(0, 2))),
    ((1, 3, 33, 45), (5, 3), dict(stride=(3, 2), padding=(2, 1), dilation=(1, 2))),
    ((1, 3, 33, 44), (1, 1), dict(stride=2)),  # one column phase without taps
])
def test_wide_rows_at_stride_two_across_give_the_gemm_bits(dtype, x_shape, k, kwargs):
    """grad_input at stride 2 across with rows of 16 columns and more writes both column
    phases of a row together (the property test's planes are narrower): the GEMM's bits, and
    the reference's numbers."""
    rng = np.random.default_rng(4)
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((c, 1, *k)).astype(dtype)
    kwargs = dict(kwargs, groups=c)
    gy = rng.standard_normal(fastconv.conv2d(x, w, **kwargs).shape).astype(dtype)
    p = dict(x=x, w=w, b=None, gy=gy, kwargs=kwargs, activation=None)
    with conv_path("dwd", False):
        want = forward_and_grad_input(p)
    assert plans_taken(lambda: forward_and_grad_input(p)) == 2
    got = forward_and_grad_input(p)
    for name, g, w_ in zip(("output", "grad_input"), got, want):
        assert_same_bits(g, w_, name)
    case = conv_case(x, w, None, gy=gy, needs=(True, False, False), **kwargs)
    check_backward(case, fastconv.conv2d_backward(gy, x, w, **kwargs, needs=(True, False, False)))
