"""fastconv.conv2d / conv2d_backward held to fastconv.reference (property tests), on every SIMD
path this CPU supports, plus the edge cases that a random draw rarely hits."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference
from conv_helpers import (
    SUPPORTED_ISAS,
    assert_close,
    assert_same_bits,
    assert_unchanged,
    backward_terms,
    check_backward,
    check_forward,
    conv_case,
    cpu_isas,
    f64,
    f64abs,
    num_threads,
    run_isolated,
    snapshot,
    upper_scales,
    using_isa,
    with_batch,
    without_batch,
)
from strategies import conv_backward_cases, conv_cases

THREADS = st.sampled_from([1, 2, 3])


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@settings(max_examples=300)
@given(case=conv_cases(), threads=THREADS)
def test_conv2d_matches_reference(isa, case, threads):
    before = snapshot(case.x, case.w, case.b)
    with using_isa(isa), num_threads(threads):
        out = fastconv.conv2d(case.x, case.w, case.b, **case.kwargs)
    assert_unchanged(before, case.x, case.w, case.b)
    assert out.flags.c_contiguous and out.flags.writeable
    check_forward(case, out)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@settings(max_examples=300)
@given(case=conv_backward_cases(), threads=THREADS)
def test_conv2d_backward_matches_reference(isa, case, threads):
    before = snapshot(case.gy, case.x, case.w)
    with using_isa(isa), num_threads(threads):
        grads = fastconv.conv2d_backward(case.gy, case.x, case.w, needs=case.needs, **case.kwargs)
    assert_unchanged(before, case.gy, case.x, case.w)
    check_backward(case, grads)


# Medium shapes: channel counts past the register tiles (MR = 6/12 rows, NR = 2 vectors), several
# pixel blocks, more than 256 taps (the GEMM's tap blocking), grad_weight channel groups and
# batch chunks. Fewer examples: the reference costs milliseconds here.
MEDIUM = dict(max_n=10, max_channels=40, max_groups=2, max_kernel=4, max_stride=2, max_dilation=2,
              max_extra=20)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@settings(max_examples=100)
@given(case=conv_backward_cases(**MEDIUM), threads=THREADS)
def test_medium_shapes_match_reference(isa, case, threads):
    with using_isa(isa), num_threads(threads):
        out = fastconv.conv2d(case.x, case.w, case.b, **case.kwargs)
        grads = fastconv.conv2d_backward(case.gy, case.x, case.w, needs=case.needs, **case.kwargs)
    check_forward(case, out)
    check_backward(case, grads)


# Contiguous rows wide enough for the whole-vector stride-2 split of the input (a vector of pairs
# is 32 float32 on AVX-512): widths around the block sizes, every padding parity, odd and even
# widths, row strides 1 and 2.
WIDE_ROWS = dict(max_n=2, max_channels=3, max_groups=2, max_kernel=4, max_stride=2,
                 min_stride_width=2, max_dilation=2, min_extra_width=20, max_extra=75,
                 layout=False)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@settings(max_examples=60)
@given(case=conv_backward_cases(**WIDE_ROWS))
def test_wide_rows_match_reference(isa, case):
    with using_isa(isa):
        out = fastconv.conv2d(case.x, case.w, case.b, **case.kwargs)
        grads = fastconv.conv2d_backward(case.gy, case.x, case.w, needs=case.needs, **case.kwargs)
    check_forward(case, out)
    check_backward(case, grads)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_narrow_rows_match_reference(isa, dtype):
    """Output rows of 1 to 10 pixels and 20 channels (several row blocks): gemm_tile reads a
    panel whose vectors each lie in one or two rows in place (two loads and a lane mask), and
    packs any other from pieces of rows, as half vectors when every piece fits in one, as whole
    vectors from one pixel more; grad_input likewise. Wider odd rows (28, 55, ...) cross a row
    end in one vector of a panel."""
    rng = np.random.default_rng(7)
    for ow in list(range(1, 11)) + [15, 17, 28, 34, 55]:
        x = rng.standard_normal((3, 20, 4, ow + 2)).astype(dtype)
        w = rng.standard_normal((20, 20, 3, 3)).astype(dtype)
        gy = rng.standard_normal((3, 20, 2, ow)).astype(dtype)
        with using_isa(isa):
            out = fastconv.conv2d(x, w)
            gx = fastconv.conv2d_backward(gy, x, w, needs=(True, False, False))
        case = conv_case(x, w, gy=gy, needs=(True, False, False))
        check_forward(case, out)
        check_backward(case, gx)


@settings(max_examples=100)
@given(case=conv_backward_cases(dtypes=st.just(np.float64), layout=False))
def test_backward_is_the_adjoint_of_forward(case):
    """<conv2d(x, w), gy> = <x, grad_input> = <w, grad_weight>: each gradient is the adjoint of a
    linear map, which ties fastconv's backward to its own forward with no reference involved."""
    y = fastconv.conv2d(case.x, case.w, **case.kwargs)
    gx, gw, gb = fastconv.conv2d_backward(case.gy, case.x, case.w, **case.kwargs)
    inner = np.vdot(y, case.gy)
    scale = np.vdot(np.abs(y), np.abs(case.gy)) + 1e-300
    assert abs(np.vdot(case.x, gx) - inner) <= 1e-10 * max(scale, 1.0)
    assert abs(np.vdot(case.w, gw) - inner) <= 1e-10 * max(scale, 1.0)
    ones = np.ones(case.w.shape[0])
    y_bias = fastconv.conv2d(case.x, case.w, ones, **case.kwargs) - y  # = 1 on every output
    np.testing.assert_allclose(np.vdot(y_bias, case.gy), gb.sum(), rtol=1e-9, atol=1e-9)


def test_every_simd_path_is_exercised():
    """The property tests are parametrized over the paths that exist here: generic always, and
    every path whose features /proc/cpuinfo lists (AVX-512 on a CPU that has it)."""
    assert SUPPORTED_ISAS[0] == "generic"
    if cpu_isas() is not None:
        assert SUPPORTED_ISAS == cpu_isas()
    if os.environ.get("FASTCONV_ISA") is None:  # by default the best path is in use
        assert fastconv._kernels.get_isa() == SUPPORTED_ISAS[-1]


# ------------------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch(dtype):
    x = np.zeros((0, 4, 7, 6), dtype)
    w = np.ones((6, 2, 3, 2), dtype)
    b = np.ones(6, dtype)
    out = fastconv.conv2d(x, w, b, padding=1, groups=2)
    assert out.shape == (0, 6, 7, 7) and out.dtype == dtype
    gy = np.zeros(out.shape, dtype)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, padding=1, groups=2)
    assert gx.shape == x.shape and gx.dtype == dtype
    np.testing.assert_array_equal(gw, np.zeros_like(w), strict=True)
    np.testing.assert_array_equal(gb, np.zeros(6, dtype), strict=True)


def test_zero_output_channels():
    x = np.ones((2, 3, 5, 5))
    w = np.ones((0, 3, 3, 3))
    out = fastconv.conv2d(x, w, np.ones(0))
    assert out.shape == (2, 0, 3, 3)
    gx, gw, gb = fastconv.conv2d_backward(np.ones(out.shape), x, w)
    np.testing.assert_array_equal(gx, np.zeros_like(x), strict=True)
    assert gw.shape == w.shape and gb.shape == (0,)


def test_zero_input_channels_forward():
    """C = 0: every output is the bias alone (an empty sum)."""
    out = fastconv.conv2d(np.ones((2, 0, 5, 5)), np.ones((3, 0, 3, 3)), np.arange(3.0))
    np.testing.assert_array_equal(out, np.broadcast_to(np.arange(3.0)[:, None, None], (2, 3, 3, 3)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_input_channels_backward(dtype):
    proc = run_isolated(
        "import numpy as np, fastconv\n"
        f"gy, x, w = np.ones((1, 2, 3, 3), '{dtype}'), np.ones((1, 0, 5, 5), '{dtype}'), "
        f"np.ones((2, 0, 3, 3), '{dtype}')\n"
        "gx, gw, gb = fastconv.conv2d_backward(gy, x, w)\n"
        "assert gx.shape == x.shape and gw.shape == w.shape and gb.tolist() == [9, 9]\n")
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr[-500:]}"


@pytest.mark.parametrize("xs,ws,kw", [
    ((1, 2, 40, 41), (3, 2, 3, 3), dict(stride=17)),
    ((1, 2, 40, 41), (3, 2, 2, 3), dict(stride=(2, 20), padding=1)),
    ((2, 1, 4, 70), (2, 1, 1, 65), dict()),
    ((1, 1, 70, 3), (1, 1, 66, 2), dict(padding=(1, 0))),
], ids=["stride17", "stride20", "kernel65", "kernel66"])
def test_large_strides_and_kernels(xs, ws, kw):
    """torch has no limit on stride or kernel size; neither has fastconv."""
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    out = fastconv.conv2d(x, w, **kw)
    check_forward(conv_case(x, w, **kw), out)
    gy = rng.standard_normal(out.shape)
    for needs in [(False, True, True), (True, False, False)]:
        grads = fastconv.conv2d_backward(gy, x, w, needs=needs, **kw)
        check_backward(conv_case(x, w, gy=gy, needs=needs, **kw), grads)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@pytest.mark.parametrize("dtype,x_shape,k", [
    (np.float32, (64, 1, 34, 34), 32),   # several row blocks, bias
    (np.float64, (32, 1, 34, 34), 32),
    (np.float32, (8, 1, 514, 514), 1),   # one row block, written row by row
    (np.float32, (1, 1, 1452, 1452), 1),  # rows of 1450: through a scratch tile, streamed out
    (np.float64, (1, 1, 1027, 1027), 1),
    (np.float32, (600, 2, 16, 16), 20),  # 4 images of 14 x 14 side by side in the tile
], ids=["f32-blocks", "f64-blocks", "f32-rows", "f32-tile", "f64-tile", "f32-tile-images"])
def test_outputs_of_8mib_and_more_match_reference(isa, dtype, x_shape, k):
    """Forward outputs of at least 8 MiB are written with non-temporal stores: aligned vectors in
    the last tap block when the tile is the output itself, else the scratch tile's write-back
    (aligned vectors streamed, the partial ones at either end of a run stored)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((k, x_shape[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    with using_isa(isa), num_threads(2):
        out = fastconv.conv2d(x, w, b)
    assert out.nbytes >= 8 << 20 and out.ctypes.data % 64 == 0
    want = reference.conv2d(f64(x), f64(w), f64(b))
    scale = upper_scales(conv_case(x, w, b))[0]  # the reference on |x| would double the cost
    assert_close(out, want, scale, x_shape[1] * 9 + 1, dtype, "conv2d")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unbatched_is_batch_of_one(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 9, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    kw = dict(stride=(2, 1), padding="valid", dilation=(1, 2))
    out = fastconv.conv2d(x, w, b, **kw)
    x4, unbatched = with_batch(x)
    assert_same_bits(out, without_batch(fastconv.conv2d(x4, w, b, **kw), unbatched))
    gy = rng.standard_normal(out.shape).astype(dtype)
    g1 = fastconv.conv2d_backward(gy, x, w, **kw)
    g4 = fastconv.conv2d_backward(with_batch(gy)[0], x4, w, **kw)
    assert_same_bits(g1[0], without_batch(g4[0], unbatched), "grad_input")
    assert_same_bits(g1[1], g4[1], "grad_weight")
    assert_same_bits(g1[2], g4[2], "grad_bias")


@pytest.mark.parametrize("needs", [(False, False, False), (True, False, False),
                                   (False, True, False), (False, False, True)])
def test_needs_returns_none_for_what_is_not_asked(needs):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((2, 4, 3, 3))
    gy = rng.standard_normal((2, 2, 4, 4))
    full = fastconv.conv2d_backward(gy, x, w)
    part = fastconv.conv2d_backward(gy, x, w, needs=needs)
    for want, f, p in zip(needs, full, part):
        assert_same_bits(p, f if want else None)


@pytest.mark.parametrize("padding", ["same", "valid", 0, 2, (1, 3), [0, 2]])
def test_argument_forms_agree(padding):
    """An int, a tuple, a list and a NumPy integer pair mean the same thing."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 2, 9, 10)), rng.standard_normal((3, 2, 4, 3))
    ref = fastconv.conv2d(x, w, stride=1, padding=padding, dilation=2)
    for stride, dilation in [((1, 1), [2, 2]), (np.int64(1), np.array([2, 2])), ([1, 1], (2, 2))]:
        out = fastconv.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=1)
        assert_same_bits(out, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,dilation", [((2, 2), (1, 1)), ((4, 3), (1, 2)), ((2, 5), (3, 1))])
def test_same_padding_with_odd_total_puts_the_extra_bottom_right(dtype, kernel, dilation):
    """'same' = explicit asymmetric zero padding (total // 2 before, the rest after), stride 1."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    w = rng.standard_normal((2, 3) + kernel).astype(dtype)
    tot = [d * (k - 1) for k, d in zip(kernel, dilation)]
    before = [(t // 2, t - t // 2) for t in tot]
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(before))
    out = fastconv.conv2d(x, w, padding="same", dilation=dilation)
    assert out.shape == (2, 2, 7, 8)
    # the reference on the explicitly padded input is the expected value
    padded = conv_case(xp, w, dilation=dilation)
    check_forward(padded, out)
    gy = rng.standard_normal(out.shape).astype(dtype)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, padding="same", dilation=dilation)
    want = reference.conv2d_backward(f64(gy), f64(xp), f64(w), dilation=dilation)
    scale = reference.conv2d_backward(f64abs(gy), f64abs(xp), f64abs(w), dilation=dilation)
    crop = (slice(None), slice(None), slice(before[0][0], before[0][0] + 7),
            slice(before[1][0], before[1][0] + 8))
    nterms = backward_terms(padded)
    assert_close(gx, want[0][crop], scale[0][crop], nterms["grad_input"], dtype, "grad_input")
    assert_close(gw, want[1], scale[1], nterms["grad_weight"], dtype, "grad_weight")
    assert_close(gb, want[2], scale[2], nterms["grad_bias"], dtype, "grad_bias")


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_values_stay_local(isa, dtype):
    """An inf in the input reaches only the outputs whose window covers it: the kernels' padded
    buffers and vector lanes past the image edge must never mix it into other outputs."""
    x = np.ones((2, 3, 11, 13), dtype)
    x[1, 2, 4, 12] = np.inf  # on the right edge
    x[0, 0, 10, 0] = -np.inf  # bottom-left corner
    w = np.full((6, 3, 3, 2), 0.5, dtype)
    gy = np.ones((2, 6, 11, 14), dtype)
    with using_isa(isa):
        out = fastconv.conv2d(x, w, padding=1)
        gw = fastconv.conv2d_backward(gy, x, w, padding=1)[1]
        dw_depth = fastconv.conv2d_backward(gy[:, :3], x, w[:3, :1], padding=1, groups=3)[1]
    ref = reference.conv2d(x, w, padding=1)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(ref))
    np.testing.assert_array_equal(out[np.isfinite(ref)], ref[np.isfinite(ref)])
    ref_gw = reference.conv2d_backward(gy, x, w, padding=1)[1]
    np.testing.assert_array_equal(np.isfinite(gw), np.isfinite(ref_gw))
    ref_dw = reference.conv2d_backward(gy[:, :3], x, w[:3, :1], padding=1, groups=3)[1]
    np.testing.assert_array_equal(np.isfinite(dw_depth), np.isfinite(ref_dw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_does_not_alias_inputs(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 5, 5)).astype(dtype)
    w = np.zeros((2, 2, 1, 1), dtype)
    w[0, 0] = w[1, 1] = 1  # identity
    out = fastconv.conv2d(x, w)
    np.testing.assert_array_equal(out, x, strict=True)
    assert not np.shares_memory(out, x)
    gx = fastconv.conv2d_backward(x, x, w)[0]
    np.testing.assert_array_equal(gx, x, strict=True)
    assert not np.shares_memory(gx, x)


@settings(max_examples=60)
@given(case=conv_backward_cases(layout=False, max_n=2))
def test_read_only_inputs_are_accepted(case):
    """writeable=False arrays (e.g. np.broadcast_to views, memory-mapped weights) work as-is."""
    for a in (case.x, case.w, case.gy, case.b):
        if a is not None:
            a.flags.writeable = False
    before = snapshot(case.x, case.w, case.b, case.gy)
    out = fastconv.conv2d(case.x, case.w, case.b, **case.kwargs)
    grads = fastconv.conv2d_backward(case.gy, case.x, case.w, needs=case.needs, **case.kwargs)
    assert_unchanged(before, case.x, case.w, case.b, case.gy)
    check_forward(case, out)
    check_backward(case, grads)


def test_broadcast_input_with_zero_strides():
    """A view with zero strides (np.broadcast_to) is a legal input too."""
    rng = np.random.default_rng(6)
    plane = rng.standard_normal((1, 1, 8, 9))
    x = np.broadcast_to(plane, (3, 4, 8, 9))
    w = rng.standard_normal((5, 4, 3, 3))
    gy = rng.standard_normal((3, 5, 6, 7))
    case = conv_case(np.array(x), w, gy=gy)
    check_forward(case, fastconv.conv2d(x, w))
    check_backward(case, fastconv.conv2d_backward(gy, x, w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_larger_shapes_against_reference(dtype):
    """A few shapes past the small ones of the properties: several pixel blocks, micro-kernel
    edges (K, C not multiples of the register tile), grad_weight batch chunks, strides 2 and 4."""
    rng = np.random.default_rng(7)
    configs = [
        ((5, 19, 23, 29), (29, 19, 3, 3), dict(padding=1)),
        ((3, 16, 33, 17), (24, 8, 5, 3), dict(stride=2, padding=(2, 1), groups=2)),
        ((2, 12, 30, 30), (12, 1, 3, 3), dict(stride=(1, 2), padding="valid", groups=12)),
        ((9, 7, 20, 21), (13, 7, 2, 4), dict(dilation=(2, 3), padding="same")),
        ((2, 6, 37, 41), (10, 6, 7, 7), dict(stride=4, padding=3)),
        ((2, 40, 12, 13), (41, 40, 3, 3), dict(padding=(0, 1))),  # 360 taps, K > 2 vectors
        ((13, 1, 10, 9), (3, 1, 3, 3), dict(padding=1)),  # many batch chunks in grad_weight
        ((11, 4, 7, 8), (6, 2, 2, 3), dict(groups=2, stride=(2, 1))),
    ]
    for xs, ws, kw in configs:
        x = random_like(rng, xs, dtype)
        w = random_like(rng, ws, dtype)
        b = random_like(rng, ws[:1], dtype)
        case = conv_case(x, w, b, **kw)  # the output shape from torch's formula
        out = fastconv.conv2d(x, w, b, **kw)
        check_forward(case, out)
        case.gy = random_like(rng, case.out_shape, dtype)
        gy = case.gy
        check_backward(case, fastconv.conv2d_backward(gy, x, w, **kw))


def random_like(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)
