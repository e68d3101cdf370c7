"""max_pool2d / avg_pool2d and their backward passes: held to fastconv.reference (Hypothesis
properties) on every SIMD path of this CPU and on the scalar path, plus the tie / NaN / -inf
rules, gradient identities, every argument error, thread-count determinism and, when torch is
importable, bitwise agreement with torch's CPU kernels."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _kernels, _testing, reference
from conv_helpers import (SUPPORTED_ISAS, assert_close, assert_same_bits, assert_unchanged, f64,
                          f64abs, snapshot, with_batch)
from conv_helpers import num_threads as threads
from strategies import pool_cases

# every SIMD path this CPU runs, and the scalar path (torch's loops, used for huge planes)
PATHS = SUPPORTED_ISAS + ["scalar"]
THREADS = st.sampled_from([1, 2, 3])


def _kernel_taps(kw):
    """kH * kW of any form of kernel_size (an int, a pair, a 1-tuple)."""
    k = kw["kernel_size"]
    return k[0] * k[-1] if isinstance(k, (tuple, list)) else k * k


def check_avg(out, x, kw):
    """avg_pool2d's ``out`` against the float64 reference: a sum of at most kH * kW terms and a
    division (or a multiply by a rounded reciprocal: two roundings), within the rounding bound of
    conv_helpers.assert_close; NaN and +-inf where the reference has them."""
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in the kernels
        want = reference.avg_pool2d(f64(x), **kw)
    finite = np.where(np.isfinite(x), x, 0)
    scale = np.abs(reference.avg_pool2d(f64abs(finite), **kw))  # sum |x| / |divisor|
    assert_close(out, want, scale, _kernel_taps(kw) + 2, x.dtype, "avg_pool2d", nonfinite=True)


def check_avg_backward(gi, g, shape, kw):
    """avg_pool2d_backward's ``gi``: each element is a sum of g / divisor over the windows that
    hold it (at most kH * kW of them), one division each."""
    want = reference.avg_pool2d_backward(f64(g), shape, **kw)
    scale = np.abs(reference.avg_pool2d_backward(f64abs(g), shape, **kw))
    assert_close(gi, want, scale, _kernel_taps(kw) + 2, g.dtype, "avg_pool2d_backward",
                 nonfinite=True)


@contextlib.contextmanager
def path(name):
    """Run the pooling kernels on SIMD path ``name`` (or the scalar path), then restore."""
    previous = _kernels.get_isa()
    if name == "scalar":
        _testing.set_scalar(True)
    else:
        assert _kernels.set_isa(name) == name
    try:
        yield
    finally:
        _testing.set_scalar(False)
        _kernels.set_isa(previous)


# ------------------------------------------------------------------------ properties vs reference

@pytest.mark.parametrize("name", PATHS)
@settings(max_examples=200)
@given(case=pool_cases("max"), nthreads=THREADS)
def test_max_pool2d_matches_reference(name, case, nthreads):
    x, kw = case["x"], case["kwargs"]
    if case["empty"]:
        with pytest.raises(ValueError, match="holds no input element"):
            fastconv.max_pool2d(x, **kw)
        with pytest.raises(ValueError, match="holds no input element"):
            reference.max_pool2d(x, **kw)
        return
    before = snapshot(x, case["g"])
    with path(name), threads(nthreads):
        out, ind = fastconv.max_pool2d(x, **kw, return_indices=True)
        out_only = fastconv.max_pool2d(x, **kw)
        gi = fastconv.max_pool2d_backward(case["g"], ind, x.shape)
    assert_unchanged(before, x, case["g"])
    ref_out, ref_ind = reference.max_pool2d(x, **kw, return_indices=True)
    assert out.shape == ind.shape == case["out_shape"] and out.dtype == x.dtype
    assert ind.dtype == np.int64 and out.flags.c_contiguous and ind.flags.c_contiguous
    # max is exact: values, NaNs and indices agree bit for bit
    assert_same_bits(out, ref_out, "max_pool2d")
    assert_same_bits(ind, ref_ind, "indices")
    assert_same_bits(out_only, out, "max_pool2d without indices")
    # the backward adds in output row-major order, as np.add.at does: exact too
    ref_gi = reference.max_pool2d_backward(case["g"], ind, x.shape)
    assert gi.shape == x.shape and gi.dtype == x.dtype and gi.flags.c_contiguous
    assert_same_bits(gi, ref_gi, "max_pool2d_backward")
    # indices in any layout too (here: Fortran order, and negative strides on the last axis)
    for ind_view in (np.asfortranarray(ind), np.ascontiguousarray(ind[..., ::-1])[..., ::-1]):
        with path(name), threads(nthreads):
            gi_view = fastconv.max_pool2d_backward(case["g"], ind_view, x.shape)
        assert_same_bits(gi_view, gi, "max_pool2d_backward, indices in another layout")


@pytest.mark.parametrize("name", PATHS)
@settings(max_examples=200)
@given(case=pool_cases("avg"), nthreads=THREADS)
def test_avg_pool2d_matches_reference(name, case, nthreads):
    x, kw, g = case["x"], case["kwargs"], case["g"]
    before = snapshot(x, g)
    with path(name), threads(nthreads):
        out = fastconv.avg_pool2d(x, **kw)
        gi = fastconv.avg_pool2d_backward(g, x.shape, **kw)
    assert_unchanged(before, x, g)
    assert out.shape == case["out_shape"] and out.dtype == x.dtype and out.flags.c_contiguous
    assert gi.shape == x.shape and gi.dtype == x.dtype and gi.flags.c_contiguous
    check_avg(out, x, kw)
    check_avg_backward(gi, g, x.shape, kw)


# Wider rows: the vector deinterleave (W >= 2 vectors), several vector chunks per output row
# with an overlapping last one, groups of 4 output rows. Fewer examples, larger shapes.
MEDIUM = dict(max_extra=48, max_n=2, max_c=2)


@pytest.mark.parametrize("name", PATHS)
@settings(max_examples=40)
@given(case=pool_cases("max", **MEDIUM), avg=pool_cases("avg", **MEDIUM), nthreads=THREADS)
def test_medium_shapes_match_reference(name, case, avg, nthreads):
    with path(name), threads(nthreads):
        if not case["empty"]:
            out, ind = fastconv.max_pool2d(case["x"], **case["kwargs"], return_indices=True)
            gi = fastconv.max_pool2d_backward(case["g"], ind, case["x"].shape)
        aout = fastconv.avg_pool2d(avg["x"], **avg["kwargs"])
        agi = fastconv.avg_pool2d_backward(avg["g"], avg["x"].shape, **avg["kwargs"])
    if not case["empty"]:
        ref_out, ref_ind = reference.max_pool2d(case["x"], **case["kwargs"], return_indices=True)
        assert_same_bits(out, ref_out, "max_pool2d")
        assert_same_bits(ind, ref_ind, "indices")
        assert_same_bits(gi, reference.max_pool2d_backward(case["g"], ind, case["x"].shape),
                         "max_pool2d_backward")
    check_avg(aout, avg["x"], avg["kwargs"])
    check_avg_backward(agi, avg["g"], avg["x"].shape, avg["kwargs"])


@pytest.mark.parametrize("name", PATHS)
def test_every_row_width(name):
    """Widths 1..70 under the common geometries: every split of a row into vector chunks, the
    scalar edges of the deinterleave and of its inverse, on every path."""
    rng = np.random.default_rng(7)
    geometries = [dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2, padding=1),
                  dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=(1, 3), stride=(1, 3)),
                  dict(kernel_size=2, stride=(1, 2), padding=1, ceil_mode=True)]
    for width in range(1, 71):
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((1, 2, 6, width)).astype(dtype)
            for kw in geometries:
                try:
                    ref_out, ref_ind = reference.max_pool2d(x, **kw, return_indices=True)
                except ValueError:
                    continue
                g = rng.standard_normal(ref_out.shape).astype(dtype)
                with path(name):
                    out, ind = fastconv.max_pool2d(x, **kw, return_indices=True)
                    gi = fastconv.max_pool2d_backward(g, ind, x.shape)
                    aout = fastconv.avg_pool2d(x, **kw)
                    agi = fastconv.avg_pool2d_backward(g, x.shape, **kw)
                assert_same_bits(out, ref_out, "max_pool2d")
                assert_same_bits(ind, ref_ind, "indices")
                assert_same_bits(gi, reference.max_pool2d_backward(g, ind, x.shape), "backward")
                check_avg(aout, x, kw)
                check_avg_backward(agi, g, x.shape, kw)


# ------------------------------------------------------------------------------ gradient identities

@settings(max_examples=150)
@given(case=pool_cases("avg", dtypes=st.just(np.float64), values=("normal",)))
def test_avg_backward_is_the_adjoint_of_forward(case):
    """avg_pool2d is linear, its backward must be its adjoint: <avg(x), g> == <x, avg_bwd(g)>."""
    x, kw, g = case["x"], case["kwargs"], case["g"]
    lhs = np.vdot(fastconv.avg_pool2d(x, **kw), g)
    rhs = np.vdot(x, fastconv.avg_pool2d_backward(g, x.shape, **kw))
    scale = np.vdot(np.abs(reference.avg_pool2d(np.abs(x), **kw)), np.abs(g)) + 1.0
    assert abs(lhs - rhs) <= 1e-12 * scale


@settings(max_examples=150)
@given(case=pool_cases("max", dtypes=st.just(np.float64)))
def test_max_backward_puts_each_gradient_on_an_argmax(case):
    """Every index lies in its window and points at the window's maximum (or a NaN); the
    gradient of a plane is conserved and lands only on those positions."""
    x, kw, g = case["x"], case["kwargs"], case["g"]
    if case["empty"] or x.size == 0:
        return
    out, ind = fastconv.max_pool2d(x, **kw, return_indices=True)
    x4, _ = with_batch(x)
    (o4, _), (i4, _), (g4, _) = with_batch(out), with_batch(ind), with_batch(g)
    h, w = x4.shape[2:]
    assert ((i4 >= 0) & (i4 < h * w)).all()
    picked = np.take_along_axis(x4.reshape(x4.shape[0], x4.shape[1], -1),
                                i4.reshape(i4.shape[0], i4.shape[1], -1), axis=2).reshape(o4.shape)
    np.testing.assert_array_equal(picked, o4)  # NaN where the output is NaN
    win = reference.max_pool2d(x4, **kw)  # the window maxima, independently
    np.testing.assert_array_equal(o4, win)
    gi = fastconv.max_pool2d_backward(g, ind, x.shape).reshape(x4.shape)
    np.testing.assert_allclose(gi.sum(axis=(2, 3)), g4.sum(axis=(2, 3)), rtol=1e-12, atol=1e-12)
    hit = np.zeros(gi.shape, dtype=bool).reshape(gi.shape[0], gi.shape[1], -1)
    np.put_along_axis(hit, i4.reshape(i4.shape[0], i4.shape[1], -1), True, axis=2)
    assert not gi.reshape(hit.shape)[~hit].any()


# --------------------------------------------------------------------- torch's rules, by example

def test_max_ties_go_to_the_first_position_in_row_major_order():
    x = np.array([[[[2.0, 5.0], [5.0, 5.0]]]], dtype=np.float32)
    out, ind = fastconv.max_pool2d(x, 2, return_indices=True)
    assert out[0, 0, 0, 0] == 5.0 and ind[0, 0, 0, 0] == 1
    x = np.zeros((1, 1, 3, 3))
    _, ind = fastconv.max_pool2d(x, 2, stride=1, return_indices=True)
    np.testing.assert_array_equal(ind[0, 0], [[0, 1], [3, 4]])


def test_max_nan_propagates_with_the_index_of_the_last_nan():
    x = np.array([[[[1.0, np.nan, 3.0, np.nan]]]])
    out, ind = fastconv.max_pool2d(x, (1, 4), return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and ind[0, 0, 0, 0] == 3
    x = np.array([[[[np.nan, 5.0, 1.0, 2.0]]]], dtype=np.float32)
    out, ind = fastconv.max_pool2d(x, (1, 4), return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and ind[0, 0, 0, 0] == 0
    assert np.isnan(fastconv.max_pool2d(x, (1, 4))[0, 0, 0, 0])


def test_max_all_minus_inf_window_reports_its_first_in_bounds_position():
    x = np.full((1, 1, 3, 3), -np.inf, dtype=np.float32)
    out, ind = fastconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    assert (out == -np.inf).all()
    np.testing.assert_array_equal(ind[0, 0], [[0, 1], [3, 4]])


def test_ceil_mode_drops_a_last_window_that_starts_in_the_right_padding():
    # H=5, k=2, s=2, p=1: floor gives 3, ceil would give 4 but the 4th window starts at 5 >= H
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    assert fastconv.max_pool2d(x, 2, 2, 1).shape == (1, 1, 3, 3)
    assert fastconv.max_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)
    # H=4, k=2, s=3: floor gives 1, ceil gives 2 (the second window starts at 3 < H)
    out = fastconv.max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2, 3, ceil_mode=True)
    np.testing.assert_array_equal(out[0, 0], [[5.0, 7.0], [13.0, 15.0]])


def test_avg_divisor_rules_with_ceil_mode_and_padding():
    ones = np.ones((1, 1, 4, 4))
    # count_include_pad: padding counts, the part past the padded edge (ceil_mode) does not
    out = fastconv.avg_pool2d(ones, 3, 2, 1, ceil_mode=True)
    np.testing.assert_allclose(out[0, 0], [[4 / 9, 6 / 9, 2 / 6], [6 / 9, 1, 3 / 6],
                                           [2 / 6, 3 / 6, 1 / 4]])
    out = fastconv.avg_pool2d(ones, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_allclose(out, 1.0)
    out = fastconv.avg_pool2d(ones, 2, divisor_override=-3)
    np.testing.assert_allclose(out, -4 / 3)


def test_windows_with_no_input_element_are_rejected():
    # H=1, kernel 2, dilation 2, padding 1: the taps are at -1 and 1, both outside (torch: -inf)
    with pytest.raises(ValueError, match="holds no input element"):
        fastconv.max_pool2d(np.ones((1, 1, 1, 5)), 2, stride=1, padding=1, dilation=2)
    with pytest.raises(ValueError, match="output column 0 holds no input element"):
        fastconv.max_pool2d(np.ones((1, 1, 5, 2)), 2, stride=1, padding=1, dilation=3)
    # W=1, taps at columns -1 and 1: torch reports -inf with indices 1, 2, 3 -- the next row's
    # element, then one past the plane -- which a backward pass would follow
    with pytest.raises(ValueError, match="output column 0 holds no input element"):
        fastconv.max_pool2d(np.arange(3.0).reshape(1, 1, 3, 1), (1, 2), stride=1,
                            padding=(0, 1), dilation=(1, 2), return_indices=True)


def test_unbatched_and_empty_batches():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)
    out, ind = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    o4, i4 = fastconv.max_pool2d(x[None], 3, 2, 1, return_indices=True)
    assert_same_bits(out, o4[0], "unbatched max_pool2d")
    assert_same_bits(ind, i4[0], "unbatched indices")
    assert fastconv.max_pool2d_backward(out, ind, x.shape).shape == x.shape
    assert fastconv.avg_pool2d(x, 2).shape == (3, 3, 3)
    assert fastconv.avg_pool2d_backward(np.ones((3, 3, 3), np.float32), x.shape, 2).shape == x.shape
    empty = np.zeros((0, 3, 8, 8))
    out, ind = fastconv.max_pool2d(empty, 2, return_indices=True)
    assert out.shape == ind.shape == (0, 3, 4, 4)
    assert fastconv.max_pool2d_backward(out, ind, empty.shape).shape == empty.shape
    assert fastconv.avg_pool2d(empty, 2).shape == (0, 3, 4, 4)
    assert fastconv.avg_pool2d_backward(out, empty.shape, 2).shape == empty.shape


def test_a_few_large_planes_split_into_row_blocks():
    """Few planes and many threads, or rows too wide for the row-buffer budget, cut planes into
    row blocks; the results do not change."""
    rng = np.random.default_rng(1)
    for shape, kw in [((1, 1, 61, 700), dict(kernel_size=3, stride=2, padding=1)),
                      ((1, 2, 40, 9000), dict(kernel_size=(2, 3), stride=(1, 2))),
                      ((2, 1, 37, 33), dict(kernel_size=2, stride=1, dilation=2))]:
        x = rng.standard_normal(shape)
        results = []
        for n in (1, 3):
            with threads(n):
                out, ind = fastconv.max_pool2d(x, **kw, return_indices=True)
                gi = fastconv.max_pool2d_backward(out, ind, x.shape)
                akw = {k: v for k, v in kw.items() if k != "dilation"}
                avg = fastconv.avg_pool2d(x, **akw)
                gavg = fastconv.avg_pool2d_backward(avg, x.shape, **akw)
            results.append((out, ind, gi, avg, gavg))
        ref_out, ref_ind = reference.max_pool2d(x, **kw, return_indices=True)
        np.testing.assert_array_equal(results[0][0], ref_out)
        np.testing.assert_array_equal(results[0][1], ref_ind)
        check_avg(results[0][3], x, akw)
        check_avg_backward(results[0][4], results[0][3], x.shape, akw)
        for what, a, b in zip(("max", "indices", "max backward", "avg", "avg backward"),
                              *results):
            assert_same_bits(b, a, f"{what}: 3 threads against 1")


# -------------------------------------------------------------------------------- determinism

@settings(max_examples=60)
@given(case=pool_cases("max", max_n=2, max_c=4, max_extra=40, layout=False),
       avg=pool_cases("avg", max_n=2, max_c=4, max_extra=40, layout=False))
def test_bitwise_identical_for_any_thread_count_and_simd_path(case, avg):
    """Every element is computed by one work item in a fixed order, and every SIMD path does the
    same arithmetic in the same order: 1, 2 or 3 threads, any path, same bits -- except that
    which of two NaN operands a sum passes on (and so a NaN's sign) is the compiler's choice of
    operand order, not ours (IEEE 754 leaves it open; clang and GCC differ on the portable path),
    so across paths NaNs only have to be NaNs."""
    results = []
    for name in PATHS:
        for n in (1, 2, 3):
            with path(name), threads(n):
                r = []
                if not case["empty"]:
                    out, ind = fastconv.max_pool2d(case["x"], **case["kwargs"], return_indices=True)
                    r += [out, ind, fastconv.max_pool2d_backward(case["g"], ind, case["x"].shape)]
                r.append(fastconv.avg_pool2d(avg["x"], **avg["kwargs"]))
                r.append(fastconv.avg_pool2d_backward(avg["g"], avg["x"].shape, **avg["kwargs"]))
            results.append(r)
    for i, r in enumerate(results):
        first_of_path = results[i - i % 3]
        for a, b, c in zip(first_of_path, r, results[0]):
            assert_same_bits(b, a, f"run {i}: thread counts")  # every bit
            assert_same_bits(b, c, f"run {i}: SIMD paths", any_nan=True)


def test_concurrent_calls_from_python_threads():
    """The GIL is released and every workspace is per thread: calls from several Python threads
    at once give the results of the same calls made one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((4, 8, 40, 40 + i)).astype(np.float32) for i in range(8)]

    def work(x):
        out, ind = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
        avg = fastconv.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return (out, ind, fastconv.max_pool2d_backward(out, ind, x.shape),
                avg, fastconv.avg_pool2d_backward(avg, x.shape, 3, 1, 1, count_include_pad=False))

    serial = [work(x) for x in xs]
    with threads(2), ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(work, xs * 2))
    for a, b in zip(serial * 2, concurrent):
        for u, v in zip(a, b):
            assert_same_bits(v, u, "concurrent against serial")


# ------------------------------------------------------------------------------------- errors

X = np.zeros((2, 3, 8, 8), dtype=np.float32)
G = np.zeros((2, 3, 4, 4), dtype=np.float32)
IND = np.zeros((2, 3, 4, 4), dtype=np.int64)

ERRORS = [
    # inputs
    (lambda: fastconv.max_pool2d(X.astype(np.float16), 2), TypeError, "input must have dtype"),
    (lambda: fastconv.avg_pool2d(X.astype(np.int32), 2), TypeError, "input must have dtype"),
    (lambda: fastconv.max_pool2d(X[0, 0], 2), ValueError, "input must be 4-D"),
    (lambda: fastconv.avg_pool2d(X[None], 2), ValueError, "input must be 4-D"),
    (lambda: fastconv.max_pool2d(np.zeros((2, 0, 8, 8)), 2), ValueError, "non-zero C, H and W"),
    (lambda: fastconv.avg_pool2d(np.zeros((2, 3, 0, 8)), 2), ValueError, "non-zero C, H and W"),
    # sizes
    (lambda: fastconv.max_pool2d(X, 0), ValueError, "kernel_size must be >= 1"),
    (lambda: fastconv.max_pool2d(X, (2, 2, 2)), ValueError, "kernel_size must be an int or a pair"),
    (lambda: fastconv.max_pool2d(X, 2.0), TypeError, "kernel_size must be an int"),
    (lambda: fastconv.max_pool2d(X, True), TypeError, "kernel_size must be an int"),
    (lambda: fastconv.avg_pool2d(X, (2, 1.5)), TypeError, "kernel_size must be an int"),
    (lambda: fastconv.max_pool2d(X, 2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: fastconv.avg_pool2d(X, 2, stride=(1, -1)), ValueError, "stride must be >= 1"),
    (lambda: fastconv.max_pool2d(X, 2, stride=False), TypeError, "stride must be an int"),
    (lambda: fastconv.max_pool2d(X, 2, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: fastconv.max_pool2d(X, 3, padding=2), ValueError, "padding must be at most half"),
    (lambda: fastconv.max_pool2d(X, 2, padding=(0, 2), dilation=3), ValueError,
     "padding must be at most half"),
    (lambda: fastconv.avg_pool2d(X, 1, padding=1), ValueError, "padding must be at most half"),
    (lambda: fastconv.max_pool2d(X, 2, padding=1.0), TypeError, "padding must be an int"),
    (lambda: fastconv.max_pool2d(X, 2, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda: fastconv.max_pool2d(X, 2, dilation=(1, 2.0)), TypeError, "dilation must be an int"),
    (lambda: fastconv.max_pool2d(X, 9), ValueError, r"output size \(0, 0\) is < 1"),
    (lambda: fastconv.max_pool2d(X, 3, dilation=4), ValueError, "output size"),
    (lambda: fastconv.avg_pool2d(X, (2, 9)), ValueError, "output size"),
    (lambda: fastconv.max_pool2d(np.ones((1, 1, 1, 5)), 2, 1, 1, 2), ValueError,
     "holds no input element"),
    # flags
    (lambda: fastconv.max_pool2d(X, 2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (lambda: fastconv.max_pool2d(X, 2, return_indices=None), TypeError,
     "return_indices must be a bool"),
    (lambda: fastconv.avg_pool2d(X, 2, count_include_pad=0), TypeError,
     "count_include_pad must be a bool"),
    (lambda: fastconv.avg_pool2d(X, 2, divisor_override=0), ValueError,
     "divisor_override must not be zero"),
    (lambda: fastconv.avg_pool2d(X, 2, divisor_override=2.0), TypeError,
     "divisor_override must be an int"),
    (lambda: fastconv.avg_pool2d(X, 2, divisor_override=True), TypeError,
     "divisor_override must be an int"),
    # max backward
    (lambda: fastconv.max_pool2d_backward(G.astype(np.int64), IND, X.shape), TypeError,
     "grad_output must have dtype"),
    (lambda: fastconv.max_pool2d_backward(G, IND.astype(np.int32), X.shape), TypeError,
     "indices must have dtype int64"),
    (lambda: fastconv.max_pool2d_backward(G, IND.tolist(), X.shape), TypeError,
     "indices must be a NumPy int64 array"),
    (lambda: fastconv.max_pool2d_backward(G, IND[:, :, :3], X.shape), ValueError,
     "indices must have the shape of grad_output"),
    (lambda: fastconv.max_pool2d_backward(G[:1], IND[:1], X.shape), ValueError,
     "does not match input_shape"),
    (lambda: fastconv.max_pool2d_backward(G, IND, X.shape[1:]), ValueError,
     "grad_output must be 3-D"),
    (lambda: fastconv.max_pool2d_backward(G, IND, (2, 3, 8)), ValueError, "grad_output must be 3-D"),
    (lambda: fastconv.max_pool2d_backward(G, IND, (2, 3, 8, 8, 1)), ValueError,
     "input_shape must be"),
    (lambda: fastconv.max_pool2d_backward(G, IND, (2, 3, 0, 8)), ValueError, "input_shape must"),
    (lambda: fastconv.max_pool2d_backward(G, IND, (2, 3, 8.0, 8)), TypeError,
     "input_shape must be an int"),
    (lambda: fastconv.max_pool2d_backward(G, IND, "2, 3, 8, 8"), TypeError,
     "input_shape must be a tuple"),
    (lambda: fastconv.max_pool2d_backward(G, IND + 64, X.shape), ValueError,
     r"indices must lie inside their 8x8 input plane \(0 <= index < 64\), found 64"),
    (lambda: fastconv.max_pool2d_backward(G, IND - 1, X.shape), ValueError,
     "indices must lie inside"),
    # avg backward
    (lambda: fastconv.avg_pool2d_backward(G.astype(np.float16), X.shape, 2), TypeError,
     "grad_output must have dtype"),
    (lambda: fastconv.avg_pool2d_backward(G, X.shape, 3), ValueError,
     r"grad_output must have shape \(2, 3, 2, 2\)"),
    (lambda: fastconv.avg_pool2d_backward(G[0], X.shape, 2), ValueError, "grad_output must have"),
    (lambda: fastconv.avg_pool2d_backward(G, X.shape, 2, padding=2), ValueError,
     "padding must be at most half"),
    (lambda: fastconv.avg_pool2d_backward(G, X.shape, 2, divisor_override=0), ValueError,
     "divisor_override"),
    (lambda: fastconv.avg_pool2d_backward(G, (2, 3, 8), 2), ValueError, "grad_output must have"),
]


@pytest.mark.parametrize("call, exc, message", ERRORS)
def test_errors_name_the_argument(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_an_out_of_plane_index_is_never_written():
    """Bad indices among good ones: ValueError, and the caller's arrays are untouched."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((2, 3, 4, 4))
    ind = rng.integers(0, 64, size=g.shape)
    ind[1, 2, 3, 3] = 1 << 40
    before = snapshot(g, ind)
    with pytest.raises(ValueError, match="found 1099511627776"):
        fastconv.max_pool2d_backward(g, ind, (2, 3, 8, 8))
    assert_unchanged(before, g, ind)


# ---------------------------------------------------------------------------------------- torch

@settings(max_examples=150)
@given(case=pool_cases("max"), nthreads=THREADS)
def test_max_pool2d_is_bitwise_torch(case, nthreads):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, kw = case["x"], case["kwargs"]
    if case["empty"] or x.size == 0:
        return
    xt = torch.from_numpy(np.array(x)).requires_grad_()
    t_out, t_ind = F.max_pool2d(xt, **kw, return_indices=True)
    t_out.backward(torch.from_numpy(np.array(case["g"])))
    with threads(nthreads):
        out, ind = fastconv.max_pool2d(x, **kw, return_indices=True)
        gi = fastconv.max_pool2d_backward(case["g"], ind, x.shape)
    np.testing.assert_array_equal(out, t_out.detach().numpy(), strict=True)
    np.testing.assert_array_equal(ind, t_ind.numpy(), strict=True)
    assert_same_bits(gi, xt.grad.numpy(), "max_pool2d_backward against torch")


@settings(max_examples=150)
@given(case=pool_cases("avg"), nthreads=THREADS)
def test_avg_pool2d_is_bitwise_torch(case, nthreads):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, kw = case["x"], case["kwargs"]
    if x.size == 0:
        return
    xt = torch.from_numpy(np.array(x)).requires_grad_()
    t_out = F.avg_pool2d(xt, **kw)
    t_out.backward(torch.from_numpy(np.array(case["g"])))
    with threads(nthreads):
        out = fastconv.avg_pool2d(x, **kw)
        gi = fastconv.avg_pool2d_backward(case["g"], x.shape, **kw)
    np.testing.assert_array_equal(out, t_out.detach().numpy(), strict=True)
    assert_same_bits(gi, xt.grad.numpy(), "avg_pool2d_backward against torch")


def test_errors_match_torch_where_torch_raises():
    """The geometry torch rejects, fastconv rejects (the messages are fastconv's own)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = torch.zeros(1, 1, 6, 6)
    cases = [dict(kernel_size=3, padding=2), dict(kernel_size=2, padding=2, dilation=3),
             dict(kernel_size=7), dict(kernel_size=1, padding=1), dict(kernel_size=3, dilation=3)]
    for kw in cases:
        with pytest.raises(RuntimeError):
            F.max_pool2d(x, **kw)
        with pytest.raises(ValueError):
            fastconv.max_pool2d(x.numpy(), **kw)
    with pytest.raises(RuntimeError):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(ValueError):
        fastconv.avg_pool2d(x.numpy(), 2, divisor_override=0)


def test_kept_pool_geometries_do_not_let_bad_arguments_through():
    # pool_geometry keeps the geometry of plain arguments: an int where a bool is required, a
    # bool where an int is, or an invalid call, must still be refused after valid calls
    x = np.ones((1, 2, 6, 6))
    for _ in range(2):
        fastconv.max_pool2d(x, (2, 2), None, (0, 0), (1, 1), False)
        fastconv.avg_pool2d(x, 2, 2, 0, False, True, None)
    with pytest.raises(TypeError, match="ceil_mode"):
        fastconv.max_pool2d(x, (2, 2), None, (0, 0), (1, 1), 0)
    with pytest.raises(TypeError, match="kernel_size"):
        fastconv.max_pool2d(x, (True, True), None, (0, 0), (1, 1), False)
    with pytest.raises(TypeError, match="count_include_pad"):
        fastconv.avg_pool2d(x, 2, 2, 0, False, 1, None)
    for _ in range(2):
        with pytest.raises(ValueError, match="padding"):
            fastconv.max_pool2d(x, 2, None, 2)
    np.testing.assert_array_equal(fastconv.avg_pool2d(x, 2, 2, 0, False, True, 3),
                                  np.full((1, 2, 3, 3), 4 / 3))
