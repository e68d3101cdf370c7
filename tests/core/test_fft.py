"""FFT convolution (fastconv.fft, conv2d(..., algorithm=...)): the same results as the direct
kernels within float tolerance, for every hyper-parameter; dtypes; the cost model; 'auto' is
the direct path (the FFT is opt-in: it can be less exact)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import fft, reference
from fastconv._core import fft as fft_backend
from fastconv._core.conv_geometry import conv_geometry

from conv_helpers import (assert_close, assert_same_bits, backward_terms, conv_case, f64, f64abs,
                          num_threads, with_batch)
from strategies import conv_problems


# ---- the FFT's rounding bound --------------------------------------------------------------------
# The same scheme as every kernel test (conv_helpers.assert_close: gamma_n times a sum of
# magnitudes, against the float64 reference), with the FFT's error model: each level of a
# transform of M points adds a relative error of a few u, normwise over the WHOLE plane (Higham,
# Accuracy and Stability of Numerical Algorithms, 2nd ed., sec. 24.1), so an output carries an
# error of about log2(M) u times the magnitudes of its whole input plane and kernel, not of its
# window alone (docstring of fastconv.fft). Hence: n = 4 log2(M) roundings (forward transform,
# product, inverse, with room), and per (image, output channel) plane the scale
#     sum over input channels c of  max |x[n, c]| * sum |w[k, c]|,
# which is at least every output's own sum of magnitudes and is not zero on outputs that only see
# padding. (Measured on the property tests below: the errors stay under 0.6 log2(M) u * scale.)
def fft_terms(x, w, kwargs):
    """4 log2 of an upper bound of the transform size (padded input plus the dilated kernel)."""
    x4, _ = with_batch(x)
    pad = kwargs.get("padding", 0)
    pad = (0, 0) if isinstance(pad, str) else (pad if isinstance(pad, tuple) else (pad, pad))
    dil = kwargs.get("dilation", (1, 1))
    dil = dil if isinstance(dil, tuple) else (dil, dil)
    m = 1
    for size, p, d, k in zip(x4.shape[2:], pad, dil, w.shape[2:]):
        m *= size + 2 * p + 2 * d * (k - 1) + 1
    return 4 * int(np.ceil(np.log2(m)))


def plane_max(a):
    """(A, B) maxima of |a| over each plane of the (A, B, H, W) ``a``."""
    return np.abs(f64(a)).max(axis=(2, 3), initial=0.0)


def fft_scales(x, w, gy, groups):
    """Per-plane scales (see above): forward (N, K), grad_input (N, C), grad_weight (K, C/g)."""
    x4, _ = with_batch(x)
    g4, _ = with_batch(gy)
    n, k, (_, cg) = x4.shape[0], w.shape[0], w.shape[:2]
    kg = k // groups
    wa = f64abs(w).sum(axis=(2, 3)).reshape(groups, kg, cg)
    xm = plane_max(x4).reshape(n, groups, cg)
    gm = plane_max(g4).reshape(n, groups, kg)
    gs = f64abs(g4).sum(axis=(2, 3)).reshape(n, groups, kg)
    return (np.einsum("ngc,gkc->ngk", xm, wa).reshape(n, k),
            np.einsum("ngk,gkc->ngc", gm, wa).reshape(n, groups * cg),
            np.einsum("ngc,ngk->gkc", xm, gs).reshape(k, cg))


def plane_scale(scale, shape):
    """A per-plane (A, B) scale broadcast over an (A, B, H, W) or unbatched (B, H, W) result."""
    return scale[0][:, None, None] if len(shape) == 3 else scale[:, :, None, None]


def check_fft_forward(out, x, w, b, kwargs):
    """conv2d_fft's ``out`` against the float64 reference, within the FFT's rounding bound."""
    want = reference.conv2d(f64(x), f64(w), f64(b), **kwargs)
    gy = np.zeros(out.shape, out.dtype)
    scale = plane_scale(fft_scales(x, w, gy, kwargs.get("groups", 1))[0], out.shape)
    if b is not None:
        scale = scale + f64abs(b)[:, None, None]
    assert_close(out, want, scale, fft_terms(x, w, kwargs), x.dtype, "conv2d_fft")


def check_fft_backward(grads, gy, x, w, kwargs, needs=(True, True, True)):
    """conv2d_backward_fft's ``grads`` against the float64 reference; grad_bias (a plain sum)
    within the direct bound."""
    want = reference.conv2d_backward(f64(gy), f64(x), f64(w), **kwargs)
    s_in, s_w = fft_scales(x, w, gy, kwargs.get("groups", 1))[1:]
    n = fft_terms(x, w, kwargs)
    if needs[0]:
        assert_close(grads[0], want[0], plane_scale(s_in, x.shape), n, x.dtype, "grad_input")
    if needs[1]:
        assert_close(grads[1], want[1], s_w[:, :, None, None], n, x.dtype, "grad_weight")
    if needs[2]:
        case = conv_case(x, w, gy=gy, **kwargs)
        scale = f64abs(with_batch(gy)[0]).sum(axis=(0, 2, 3))
        assert_close(grads[2], want[2], scale, backward_terms(case)["grad_bias"], x.dtype,
                     "grad_bias")
    for g, need in zip(grads, needs):
        assert (g is None) == (not need)


@settings(max_examples=80)
@given(conv_problems())
def test_forward_fft_matches_reference(p):
    out = fastconv.conv2d(p["x"], p["w"], p["b"], **p["kwargs"], algorithm="fft")
    assert out.dtype == p["x"].dtype
    check_fft_forward(out, p["x"], p["w"], p["b"], p["kwargs"])
    assert_same_bits(out, fft.conv2d_fft(p["x"], p["w"], p["b"], **p["kwargs"]))


@settings(max_examples=60)
@given(conv_problems(), st.tuples(st.booleans(), st.booleans(), st.booleans()),
       st.integers(0, 2**32 - 1))
def test_backward_fft_matches_reference(p, needs, seed):
    case = conv_case(p["x"], p["w"], **p["kwargs"])  # the output shape from torch's formula
    go = np.random.default_rng(seed).standard_normal(case.out_shape).astype(p["x"].dtype)
    kw = dict(p["kwargs"], needs=needs)
    out = fastconv.conv2d_backward(go, p["x"], p["w"], **kw, algorithm="fft")
    for name, a, shape in zip(("input", "weight", "bias"), out,
                              (p["x"].shape, p["w"].shape, p["w"].shape[:1])):
        if a is not None:
            assert a.shape == shape and a.dtype == p["x"].dtype, name
    check_fft_backward(out, go, p["x"], p["w"], p["kwargs"], needs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_matches_reference(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 21, 17)).astype(dtype)
    w = rng.standard_normal((6, 2, 7, 9)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kw = dict(stride=(2, 1), padding=(3, 4), dilation=(1, 2), groups=2)
    y = fft.conv2d_fft(x, w, b, **kw)
    assert y.dtype == dtype
    check_fft_forward(y, x, w, b, kw)
    go = rng.standard_normal(y.shape).astype(dtype)
    grads = fft.conv2d_backward_fft(go, x, w, **kw)
    assert all(g.dtype == dtype for g in grads)
    check_fft_backward(grads, go, x, w, kw)


def test_large_kernel_float32_accuracy():
    """A 31x31 kernel: the FFT's bound has log2 of the transform size in it, not the 961 taps
    of a long float32 sum."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 48, 48))
    w = rng.standard_normal((4, 3, 31, 31))
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    y32 = fft.conv2d_fft(x32, w32, padding=15)
    assert y32.dtype == np.float32
    assert fft_terms(x32, w32, dict(padding=15)) < 100 < 3 * 31 * 31
    check_fft_forward(y32, x32, w32, None, dict(padding=15))


def test_fft_is_bitwise_reproducible_across_thread_counts():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 40, 40)).astype(np.float32)
    w = rng.standard_normal((8, 8, 9, 9)).astype(np.float32)
    go = rng.standard_normal((4, 8, 40, 40)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        with num_threads(threads):
            results.append((fft.conv2d_fft(x, w, padding=4),)
                           + fft.conv2d_backward_fft(go, x, w, padding=4))
    for n, other in zip((2, 3), results[1:]):
        for what, a, b in zip(("out", "grad_input", "grad_weight", "grad_bias"), results[0], other):
            assert_same_bits(b, a, f"{what} with {n} threads against 1")


@pytest.mark.parametrize("xs,ws", [((0, 4, 6, 6), (2, 4, 3, 3)),   # empty batch
                                   ((2, 0, 6, 6), (3, 0, 3, 3)),   # no input channels
                                   ((2, 4, 6, 6), (0, 4, 3, 3))])  # no output channels
def test_empty_dimensions_match_reference(xs, ws):
    x, w = np.ones(xs), np.ones(ws)
    b = np.ones(ws[0])
    assert_same_bits(fft.conv2d_fft(x, w, b), reference.conv2d(x, w, b))
    go = np.ones((xs[0], ws[0], 4, 4))
    for a, ref in zip(fft.conv2d_backward_fft(go, x, w), reference.conv2d_backward(go, x, w)):
        assert_same_bits(a, ref)


def test_inputs_not_modified():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    go = rng.standard_normal((2, 4, 9, 9))
    copies = [a.copy() for a in (x, w, go)]
    fft.conv2d_fft(x, w, padding=1)
    fft.conv2d_backward_fft(go, x, w, padding=1)
    for a, c in zip((x, w, go), copies):
        np.testing.assert_array_equal(a, c)


# ---- validation: the same rules and messages as the direct path -----------------------------
BAD = [
    (lambda: (np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3), np.float32)), {}, TypeError),
    (lambda: (np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))), dict(groups=2), ValueError),
    (lambda: (np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))), dict(stride=0), ValueError),
    (lambda: (np.ones((1, 2, 5, 5)), np.ones((3, 2, 9, 9))), {}, ValueError),
    (lambda: (np.ones((1, 2, 5, 5)), np.ones((3, 2, 3))), {}, ValueError),
    (lambda: (np.ones((1, 2, 5, 5), np.int64), np.ones((3, 2, 3, 3))), {}, TypeError),
    (lambda: (np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))), dict(padding="same", stride=2),
     ValueError),
]


@pytest.mark.parametrize("make,kw,exc", BAD)
def test_invalid_arguments_same_errors_as_direct(make, kw, exc):
    x, w = make()
    with pytest.raises(exc) as direct:
        fastconv.conv2d(x, w, **kw, algorithm="direct")
    for call in (lambda: fft.conv2d_fft(x, w, **kw),
                 lambda: fastconv.conv2d(x, w, **kw, algorithm="fft"),
                 lambda: fastconv.conv2d(x, w, **kw, algorithm="auto")):
        with pytest.raises(exc) as e:
            call()
        assert str(e.value) == str(direct.value)


def test_backward_grad_output_shape_checked():
    x, w = np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3))
    with pytest.raises(ValueError, match="grad_output must have shape"):
        fft.conv2d_backward_fft(np.ones((2, 4, 5, 5)), x, w)
    with pytest.raises(ValueError, match="needs"):
        fft.conv2d_backward_fft(np.ones((2, 4, 6, 6)), x, w, needs=(True, True))


@pytest.mark.parametrize("bad", ["FFT", "winograd", "", None, 1, ("fft",)])
def test_algorithm_value_validated(bad):
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    with pytest.raises(ValueError, match="algorithm"):
        fastconv.conv2d(x, w, algorithm=bad)
    with pytest.raises(ValueError, match="algorithm"):
        fastconv.conv2d_backward(np.ones((1, 3, 3, 3)), x, w, algorithm=bad)


def test_algorithm_is_keyword_only():
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    with pytest.raises(TypeError):
        fastconv.conv2d(x, w, None, 1, 0, 1, 1, "fft")
    with pytest.raises(TypeError):
        fastconv.conv2d_backward(np.ones((1, 3, 3, 3)), x, w, 1, 0, 1, 1, (True,) * 3, "fft")


# ---- the cost model (prefer_fft) -----------------------------------------------------------
def _decide(xs, ws, stride=1, padding=None, dilation=1, groups=1, backward=False):
    padding = ws[2] // 2 if padding is None else padding
    g = conv_geometry(xs, ws, stride, padding, dilation, groups)
    return fft.prefer_fft(xs, ws, g, backward=backward)


@pytest.mark.parametrize("backward", [False, True])
def test_prefer_fft_keeps_small_and_medium_kernels_direct(backward):
    # the benchmark layer of bench/fft_crossover.py: the FFT is not measurably faster up to 15x15
    for k in (1, 3, 5, 7, 9, 11, 13, 15):
        assert not _decide((8, 16, 64, 64), (16, 16, k, k), backward=backward), k
    assert not _decide((64, 256, 56, 56), (256, 256, 3, 3), backward=backward)  # a ResNet layer
    assert not _decide((1, 3, 512, 512), (3, 1, 5, 5), groups=3, backward=backward)  # a blur


@pytest.mark.parametrize("backward", [False, True])
def test_prefer_fft_for_large_kernels(backward):
    assert _decide((8, 16, 64, 64), (16, 16, 25, 25), backward=backward)
    assert _decide((8, 16, 128, 128), (16, 16, 31, 31), backward=backward)
    assert _decide((1, 3, 512, 512), (3, 1, 51, 51), groups=3, backward=backward)


def test_prefer_fft_stride_and_cost_monotonic():
    # a stride divides the direct work but not the FFT's
    assert not _decide((8, 16, 64, 64), (16, 16, 25, 25), stride=4)
    # the predicted advantage of the FFT grows with the kernel
    ratios = []
    for k in range(3, 40, 4):
        ws = (16, 16, k, k)
        d, f = fft_backend._costs((8, 16, 64, 64), ws, conv_geometry((8, 16, 64, 64), ws, 1, k // 2, 1, 1))
        ratios.append(d / f)
    assert ratios == sorted(ratios)


# ---- 'auto' is the direct path ---------------------------------------------------------------
def test_auto_never_runs_the_fft(monkeypatch):
    # even where the cost model prefers the FFT, 'auto' runs the direct kernels (bitwise)
    monkeypatch.setattr(fft_backend, "prefer_fft", lambda *a, **k: True)
    monkeypatch.setattr(fft_backend, "MIN_FFT_TAPS", 1)
    monkeypatch.setattr(fft_backend, "forward", lambda *a, **k: pytest.fail("'auto' ran the FFT"))
    monkeypatch.setattr(fft_backend, "backward",
                        lambda *a, **k: pytest.fail("'auto' ran the FFT"))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 40, 40)), rng.standard_normal((3, 2, 25, 25))
    y = fastconv.conv2d(x, w, padding=12)
    assert_same_bits(y, fastconv.conv2d(x, w, padding=12, algorithm="direct"))
    for got, want in zip(fastconv.conv2d_backward(y, x, w, padding=12),
                         fastconv.conv2d_backward(y, x, w, padding=12, algorithm="direct")):
        assert_same_bits(got, want)


# A layer where the cost model prefers the FFT (where 'auto' used to switch to it)
BIG = dict(x=(1, 1, 128, 128), w=(1, 1, 51, 51), padding=25)


def _big_layer(dtype):
    assert _decide(BIG["x"], BIG["w"]) and _decide(BIG["x"], BIG["w"], backward=True)
    rng = np.random.default_rng(7)
    return (rng.standard_normal(BIG["x"]).astype(dtype),
            rng.standard_normal(BIG["w"]).astype(dtype))


def _far_from(shape, row, col, reach):
    """Outputs whose window (``reach`` either side) does not hold input (row, col)."""
    rows, cols = np.indices(shape[-2:])
    return (abs(rows - row) > reach) | (abs(cols - col) > reach)


@pytest.mark.parametrize("special", [np.inf, np.nan])
def test_auto_keeps_a_nonfinite_value_local(special):
    x, w = _big_layer(np.float64)
    x[0, 0, 5, 70] = special
    far = _far_from(x.shape, 5, 70, BIG["padding"])
    auto = fastconv.conv2d(x, w, padding=BIG["padding"])
    direct = fastconv.conv2d(x, w, padding=BIG["padding"], algorithm="direct")
    assert_same_bits(auto, direct)
    np.testing.assert_array_equal(np.isfinite(auto[0, 0]), far)  # as torch
    # what the FFT would give: every output non-finite
    with np.errstate(invalid="ignore"):
        assert not np.isfinite(fastconv.conv2d(x, w, padding=BIG["padding"], algorithm="fft")).any()
    go = np.ones_like(auto)
    go[0, 0, 100, 10] = special
    got = fastconv.conv2d_backward(go, x, w, padding=BIG["padding"])
    want = fastconv.conv2d_backward(go, x, w, padding=BIG["padding"], algorithm="direct")
    for g, d in zip(got, want):
        assert_same_bits(g, d)
    np.testing.assert_array_equal(np.isfinite(got[0][0, 0]), _far_from(x.shape, 100, 10, 25))


def test_auto_is_as_exact_as_direct_with_an_outlier():
    x, w = _big_layer(np.float32)
    x[0, 0, 5, 70] = 1e8
    far = _far_from(x.shape, 5, 70, BIG["padding"])
    exact = fastconv.conv2d(x.astype(np.float64), w.astype(np.float64), padding=BIG["padding"],
                            algorithm="direct")

    def far_error(alg):
        y = fastconv.conv2d(x, w, padding=BIG["padding"], algorithm=alg)
        return np.abs(y - exact)[0, 0][far].max()

    assert far_error("auto") == far_error("direct") < 1e-2
    assert far_error("fft") > 100 * far_error("direct")  # why the FFT is opt-in


def test_fft_size():
    assert [fft.fft_size(n) for n in (1, 2, 11, 13, 17, 64, 65, 97, 121)] == \
        [1, 2, 12, 14, 18, 64, 70, 98, 125]
    for n in range(1, 300):
        m = fft.fft_size(n)
        assert m >= n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        assert m == 1
