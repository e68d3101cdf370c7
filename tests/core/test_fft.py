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

from strategies import conv_problems, tolerance


def close(a, b, dtype, scale=1.0):
    rtol, atol = tolerance(dtype)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale)


@settings(max_examples=80)
@given(conv_problems())
def test_forward_fft_equals_direct(p):
    direct = fastconv.conv2d(p["x"], p["w"], p["b"], **p["kwargs"], algorithm="direct")
    out = fastconv.conv2d(p["x"], p["w"], p["b"], **p["kwargs"], algorithm="fft")
    assert out.dtype == p["x"].dtype and out.shape == direct.shape
    close(out, direct, out.dtype)
    np.testing.assert_array_equal(out, fft.conv2d_fft(p["x"], p["w"], p["b"], **p["kwargs"]))


@settings(max_examples=60)
@given(conv_problems(), st.tuples(st.booleans(), st.booleans(), st.booleans()),
       st.integers(0, 2**32 - 1))
def test_backward_fft_equals_direct(p, needs, seed):
    y = fastconv.conv2d(p["x"], p["w"], **p["kwargs"], algorithm="direct")
    go = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    kw = dict(p["kwargs"], needs=needs)
    direct = fastconv.conv2d_backward(go, p["x"], p["w"], **kw, algorithm="direct")
    out = fastconv.conv2d_backward(go, p["x"], p["w"], **kw, algorithm="fft")
    for name, a, b, shape in zip(("input", "weight", "bias"), out, direct,
                                 (p["x"].shape, p["w"].shape, p["w"].shape[:1])):
        if b is None:
            assert a is None, name
            continue
        assert a.shape == shape and a.dtype == p["x"].dtype, name
        close(a, b, a.dtype, scale=4.0)  # grad_weight sums over the batch and positions too


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_matches_reference(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 21, 17)).astype(dtype)
    w = rng.standard_normal((6, 2, 7, 9)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kw = dict(stride=(2, 1), padding=(3, 4), dilation=(1, 2), groups=2)
    y = fft.conv2d_fft(x, w, b, **kw)
    assert y.dtype == dtype
    close(y, reference.conv2d(x, w, b, **kw), dtype)
    go = rng.standard_normal(y.shape).astype(dtype)
    grads = fft.conv2d_backward_fft(go, x, w, **kw)
    for g, ref in zip(grads, reference.conv2d_backward(go, x, w, **kw)):
        assert g.dtype == dtype
        close(g, ref, dtype, scale=4.0)


def test_large_kernel_float32_accuracy():
    """A 31x31 kernel: the FFT error does not grow with the kernel like a long float32 sum."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 48, 48))
    w = rng.standard_normal((4, 3, 31, 31))
    exact = reference.conv2d(x, w, padding=15)
    y32 = fft.conv2d_fft(x.astype(np.float32), w.astype(np.float32), padding=15)
    assert y32.dtype == np.float32
    rel = np.abs(y32 - exact).max() / np.abs(exact).max()
    assert rel < 1e-5


def test_fft_is_bitwise_reproducible_across_thread_counts():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 40, 40)).astype(np.float32)
    w = rng.standard_normal((8, 8, 9, 9)).astype(np.float32)
    go = rng.standard_normal((4, 8, 40, 40)).astype(np.float32)
    before = fastconv.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            fastconv.set_num_threads(threads)
            results.append((fft.conv2d_fft(x, w, padding=4),)
                           + fft.conv2d_backward_fft(go, x, w, padding=4))
    finally:
        fastconv.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("xs,ws", [((0, 4, 6, 6), (2, 4, 3, 3)),   # empty batch
                                   ((2, 0, 6, 6), (3, 0, 3, 3)),   # no input channels
                                   ((2, 4, 6, 6), (0, 4, 3, 3))])  # no output channels
def test_empty_dimensions_match_reference(xs, ws):
    x, w = np.ones(xs), np.ones(ws)
    b = np.ones(ws[0])
    np.testing.assert_array_equal(fft.conv2d_fft(x, w, b), reference.conv2d(x, w, b))
    go = np.ones((xs[0], ws[0], 4, 4))
    for a, ref in zip(fft.conv2d_backward_fft(go, x, w), reference.conv2d_backward(go, x, w)):
        np.testing.assert_array_equal(a, ref)


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
    assert y.tobytes() == fastconv.conv2d(x, w, padding=12, algorithm="direct").tobytes()
    for got, want in zip(fastconv.conv2d_backward(y, x, w, padding=12),
                         fastconv.conv2d_backward(y, x, w, padding=12, algorithm="direct")):
        assert got.tobytes() == want.tobytes()


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
    assert auto.tobytes() == direct.tobytes()
    np.testing.assert_array_equal(np.isfinite(auto[0, 0]), far)  # as torch
    # what the FFT would give: every output non-finite
    with np.errstate(invalid="ignore"):
        assert not np.isfinite(fastconv.conv2d(x, w, padding=BIG["padding"], algorithm="fft")).any()
    go = np.ones_like(auto)
    go[0, 0, 100, 10] = special
    got = fastconv.conv2d_backward(go, x, w, padding=BIG["padding"])
    want = fastconv.conv2d_backward(go, x, w, padding=BIG["padding"], algorithm="direct")
    for g, d in zip(got, want):
        assert g.tobytes() == d.tobytes()
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
