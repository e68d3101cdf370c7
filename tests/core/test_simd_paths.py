"""Every SIMD path gives the same bits: the portable path, AVX2 and AVX-512 (those this CPU runs)
compute conv2d forward and backward and max/avg pooling forward and backward bit for bit alike,
for any shapes and hyper-parameters, in float32 and float64, so that a result computed on a
laptop is the one computed on an AVX-512 server. The kernels fuse every multiply-add explicitly
and fix every summation order by the shapes alone (see src/fc_fma.h, dw_depthwise).

NaNs are compared as NaNs: which NaN a sum of two NaNs keeps (payload, sign) is the compiler's
choice; every other value, -0 and +0 included, must match bit for bit. Inputs include values
near overflow, where the order of a sum decides between a finite result, +-inf and NaN."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _kernels
from conv_helpers import (SUPPORTED_ISAS, assert_same_bits, cpu_isas, num_threads, using_isa,
                          workspace_cap)
from strategies import DTYPES, conv_problems, pool_cases, random_array

# The paths compared: every one this CPU has by its /proc/cpuinfo flags (independently of
# fastconv's own detection, so that a path it failed to select is an error, not a silent skip),
# or, without /proc/cpuinfo, those fastconv can select. On a CPU with one path there is nothing
# to compare, and the tests below pass trivially.
CPU_PATHS = cpu_isas() or SUPPORTED_ISAS

VALUES = st.sampled_from(["normal", "huge", "special"])


def test_every_path_of_this_cpu_is_compared():
    """The paths that fastconv selects are exactly those the CPU has: with AVX-512 in
    /proc/cpuinfo, the AVX-512 path runs (on_every_path checks, for every call, that each path
    was the one in use)."""
    assert CPU_PATHS[0] == "generic"
    assert SUPPORTED_ISAS == CPU_PATHS, (SUPPORTED_ISAS, CPU_PATHS)


def on_every_path(compute):
    """compute() on every SIMD path of this CPU; assert that all give the same bits as the
    portable path (its arrays in the same order; NaNs compared as NaNs), then return those
    results."""
    results = {}
    for name in CPU_PATHS:
        with using_isa(name):
            assert _kernels.get_isa() == name
            results[name] = compute()
    assert list(results) == CPU_PATHS
    first = CPU_PATHS[0]
    for name in CPU_PATHS[1:]:
        assert len(results[name]) == len(results[first])
        for i, (got, want) in enumerate(zip(results[name], results[first])):
            assert_same_bits(got, want, f"result {i} on {name} against {first}", any_nan=True)
    return results[first]


def scale_values(draw, arrs, kind):
    """Turn standard-normal arrays (in place, keeping their layouts) into the value kind drawn:
    'normal' as they are; 'huge' so that the products of two elements lie just under or over the
    largest finite value, where a sum overflows or not depending on its order; 'special' with a
    few +-inf and NaN (which the masked lanes past a row end must not pick up)."""
    arrs = [a for a in arrs if a is not None and a.size]
    if kind == "normal":
        return
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for a in arrs:
        if kind == "huge":
            big = np.sqrt(np.finfo(a.dtype).max) / 2.0 ** draw(st.integers(0, 3))
            np.multiply(a, a.dtype.type(big), out=a)
        else:
            u = rng.random(a.shape)
            a[u < 0.04] = np.inf
            a[(u >= 0.04) & (u < 0.08)] = -np.inf
            a[(u >= 0.08) & (u < 0.1)] = np.nan


def conv_everything(problem, grad_output):
    """conv2d's output, then grad_input, grad_weight and grad_bias (the compiled kernels)."""
    x, w, b, kwargs = problem["x"], problem["w"], problem["b"], problem["kwargs"]
    out = fastconv.conv2d(x, w, b, **kwargs, algorithm="direct")
    return (out,) + fastconv.conv2d_backward(grad_output, x, w, **kwargs, algorithm="direct")


def check_conv(draw, problem, threads):
    kind = draw(VALUES)
    scale_values(draw, [problem["x"], problem["w"], problem["b"]], kind)
    x, w, kwargs = problem["x"], problem["w"], problem["kwargs"]
    out = fastconv.conv2d(x, w, **kwargs, algorithm="direct")
    seed = draw(st.integers(0, 2**32 - 1))
    gy = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)
    scale_values(draw, [gy], kind)
    with num_threads(threads):
        on_every_path(lambda: conv_everything(problem, gy))


@st.composite
def depthwise_problems(draw, min_rows=0, max_rows=4):
    """groups == C == K (the depthwise weight gradient), with output rows up to 40 wide: none,
    one, two and more whole chunks of 16 float32 / 8 float64 pixels, and every tail."""
    dtype = draw(DTYPES)
    c, n = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    r, s = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = max(1, dilation[0] * (r - 1) + 1 - 2 * padding[0]) + draw(st.integers(min_rows, max_rows))
    w = max(1, dilation[1] * (s - 1) + 1 - 2 * padding[1]) + draw(st.integers(0, 40))
    x = random_array(draw, (n, c, h, w), dtype, readonly=False)
    weight = random_array(draw, (c, 1, r, s), dtype, readonly=False)
    return dict(x=x, w=weight, b=None, kwargs=dict(stride=stride, padding=padding,
                                                   dilation=dilation, groups=c))


THREADS = st.sampled_from([1, 2])


@settings(max_examples=80)
@given(problem=conv_problems(readonly=False), threads=THREADS, data=st.data())
def test_conv2d_forward_and_backward_agree_on_every_path(problem, threads, data):
    check_conv(data.draw, problem, threads)


@settings(max_examples=50)
@given(problem=depthwise_problems(), threads=THREADS, data=st.data())
def test_depthwise_conv2d_agrees_on_every_path(problem, threads, data):
    check_conv(data.draw, problem, threads)


@settings(max_examples=25)
@given(problem=depthwise_problems(min_rows=8, max_rows=64), threads=THREADS,
       cap=st.integers(64, 32768), data=st.data())
def test_depthwise_row_bands_agree_on_every_path(problem, threads, cap, data):
    # the depthwise weight gradient adds its sums band by band: the bands (whether to use them,
    # their height) must come from the shapes alone, the same on every path
    with workspace_cap(cap):
        check_conv(data.draw, problem, threads)


@settings(max_examples=15)
@given(problem=conv_problems(max_channels=30, max_size=20, max_kernel=3, readonly=False),
       threads=THREADS,
       data=st.data())
def test_many_channels_agree_on_every_path(problem, threads, data):
    """Enough output and input channels for several row blocks of the micro-kernels (12 or 6
    rows), which differ between the paths, and rows wide enough for panels across rows."""
    check_conv(data.draw, problem, threads)


def test_every_output_width_agrees_on_every_path():
    """Widths 1..40 of a depthwise, a many-channel and a strided convolution: every split of a
    row into vectors and into the fixed chunks of the depthwise weight gradient, on every path."""
    rng = np.random.default_rng(3)
    geometries = [((2, 1, 3, 3), dict(padding=1, groups=2)),
                  ((14, 3, 3, 3), dict(padding=1)),
                  ((5, 2, 2, 3), dict(stride=2, dilation=(1, 2)))]
    for width in range(1, 41):
        for dtype in (np.float32, np.float64):
            for wshape, kwargs in geometries:
                cin = wshape[1] * kwargs.get("groups", 1)
                problem = dict(x=rng.standard_normal((1, cin, 3, width + 4)).astype(dtype),
                               w=rng.standard_normal(wshape).astype(dtype),
                               b=rng.standard_normal(wshape[0]).astype(dtype), kwargs=kwargs)
                out = fastconv.conv2d(problem["x"], problem["w"], **kwargs)
                gy = rng.standard_normal(out.shape).astype(dtype)
                on_every_path(lambda: conv_everything(problem, gy))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_overflowing_sum_is_the_same_on_every_path(dtype):
    """1e300 * 1e300 + 1e300 * -1e300 (1e30 in float32): its value depends on the order and on
    fusion -- fused in tap order it is fma(1e300, -1e300, inf) = +inf; unfused, inf + -inf is
    NaN, which the portable path used to give. Every path now gives the same. The same for the
    weight gradients (the depthwise one sums 8 or 16 fixed partial sums) and grad_input."""
    big = dtype(1e300 if dtype == np.float64 else 1e30)
    x = np.array([[[[big, big]]]], dtype=dtype)
    w = np.array([[[[big, -big]]]], dtype=dtype)
    out, = on_every_path(lambda: (fastconv.conv2d(x, w),))
    assert out[0, 0, 0, 0] == np.inf
    # the weight gradient of a 1x1 depthwise convolution: grad_output [big, 0, 0, 0, -big] times
    # an input of big; pixels 0 and 4 were summed in one lane of 4-wide vectors (AVX2 float64,
    # the portable float32), in two lanes of wider ones, and the results differed (inf, NaN)
    x5 = np.full((1, 1, 1, 5), big, dtype=dtype)
    gy5 = np.array([[[[big, 0, 0, 0, -big]]]], dtype=dtype)
    w1 = np.ones((1, 1, 1, 1), dtype=dtype)
    on_every_path(lambda: fastconv.conv2d_backward(gy5, x5, w1))
    on_every_path(lambda: fastconv.conv2d_backward(gy5[:, :, :, :2], x5[:, :, :, :3],
                                                   np.array([[[[big, -big]]]], dtype=dtype)))


# ------------------------------------------------------------------------------------- pooling

def pool_everything(case, avg):
    """max_pool2d with indices and its backward (unless a window is empty), then avg_pool2d and
    its backward."""
    results = []
    if not case["empty"]:
        out, ind = fastconv.max_pool2d(case["x"], **case["kwargs"], return_indices=True)
        results += [out, ind, fastconv.max_pool2d(case["x"], **case["kwargs"]),
                    fastconv.max_pool2d_backward(case["g"], ind, case["x"].shape)]
    results += [fastconv.avg_pool2d(avg["x"], **avg["kwargs"]),
                fastconv.avg_pool2d_backward(avg["g"], avg["x"].shape, **avg["kwargs"])]
    return results


@settings(max_examples=60)
@given(case=pool_cases("max"), avg=pool_cases("avg"), threads=THREADS)
def test_pooling_agrees_on_every_path(case, avg, threads):
    """Max pooling with NaN, ties and -inf (values and indices), average pooling with
    count_include_pad, ceil_mode and divisor_override, and both backwards."""
    with num_threads(threads):
        on_every_path(lambda: pool_everything(case, avg))


@settings(max_examples=15)
@given(case=pool_cases("max", max_extra=48, max_n=2, max_c=2),
       avg=pool_cases("avg", max_extra=48, max_n=2, max_c=2), threads=THREADS)
def test_wide_pooling_agrees_on_every_path(case, avg, threads):
    """Rows of several vectors on every path, with the overlapping last chunk."""
    with num_threads(threads):
        on_every_path(lambda: pool_everything(case, avg))
