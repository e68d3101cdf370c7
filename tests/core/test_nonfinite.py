"""inf and NaN against torch float64 (CPU: slow_conv2d / col2im, the pooling kernels): the same
outputs are non-finite, the others agree. A product with a padding zero is not a real term.

What torch does, and fastconv with it:
- conv2d forward and grad_weight multiply padding zeros by the weight / grad_output (im2col
  materialises the zeros): an inf there gives NaN in both.
- grad_input sums only real (output position, tap) pairs (col2im drops the padding columns): an
  input position that no window reaches is exactly 0 whatever the weight holds.
- pooling forward and backward: bitwise torch's.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv._core import direct
from conv_helpers import SUPPORTED_ISAS, assert_same_bits, num_threads, using_isa

torch = pytest.importorskip("torch")
F = torch.nn.functional

SPECIAL = [np.inf, -np.inf, np.nan]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_like_torch(got, want, rtol=1e-10, atol=1e-10):
    """The same NaN / +inf / -inf positions; the finite values within float64 tolerance."""
    want = np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(got), test(want), err_msg=test.__name__)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=atol)


def torch_conv(x, w, go, kw):
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    y = F.conv2d(xt, wt, **kw)
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.tensor(go))
    return y.detach().numpy(), gx.numpy(), gw.numpy()


@st.composite
def nonfinite_conv(draw):
    """A float64 conv2d problem (strides, dilations, paddings, groups) with inf/NaN placed in the
    weight, the input or grad_output, and zeros in grad_output (0 * inf)."""
    groups = draw(st.integers(1, 2))
    cg, kg, n = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    r, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = max(1, dilation[0] * (r - 1) + 1 - 2 * padding[0]) + draw(st.integers(0, 4))
    w = max(1, dilation[1] * (s - 1) + 1 - 2 * padding[1]) + draw(st.integers(0, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, cg * groups, h, w))
    weight = rng.standard_normal((kg * groups, cg, r, s))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    go = rng.standard_normal(fastconv.conv2d(x, weight, **kw).shape)
    for a in draw(st.lists(st.sampled_from(["x", "w", "go"]), min_size=1, max_size=3)):
        arr = {"x": x, "w": weight, "go": go}[a]
        arr.flat[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from(SPECIAL))
    if draw(st.booleans()):
        go.flat[draw(st.integers(0, go.size - 1))] = 0.0
    return x, weight, go, kw


@settings(max_examples=150)
@given(nonfinite_conv())
def test_conv_nonfinite_like_torch(problem):
    x, w, go, kw = problem
    y_t, gx_t, gw_t = torch_conv(x, w, go, kw)
    assert_like_torch(fastconv.conv2d(x, w, **kw, algorithm="direct"), y_t)
    gx, gw, _ = fastconv.conv2d_backward(go, x, w, **kw, algorithm="direct")
    assert_like_torch(gx, gx_t)
    assert_like_torch(gw, gw_t)


def test_unreached_input_positions_are_zero_with_an_inf_weight():
    # stride 2 over a 5x5 input with a 2x2 kernel never reaches row 4 / column 4
    x, w = np.zeros((1, 1, 5, 5)), np.ones((1, 1, 2, 2))
    w[0, 0, 0, 0] = np.inf
    gx, _, _ = fastconv.conv2d_backward(np.ones((1, 1, 2, 2)), x, w, stride=2)
    np.testing.assert_array_equal(gx[0, 0, 4], 0.0)
    np.testing.assert_array_equal(gx[0, 0, :, 4], 0.0)
    np.testing.assert_array_equal(gx[0, 0, :4, :4], [[np.inf, 1, np.inf, 1], [1, 1, 1, 1]] * 2)


@pytest.mark.parametrize("special", SPECIAL)
def test_border_rows_stay_finite_with_stride_1(special):
    # stride 1, no padding: the top-left input element is reached by tap (0, 0) only, so it is
    # finite though tap (1, 1) holds inf/NaN; the padded correlation gave NaN there
    x = np.zeros((1, 1, 4, 4))
    w = np.ones((1, 1, 2, 2))
    w[0, 0, 1, 1] = special
    gx, _, _ = fastconv.conv2d_backward(np.ones((1, 1, 3, 3)), x, w)
    assert gx[0, 0, 0, 0] == 1.0
    assert np.isfinite(gx[0, 0, 0]).all() and np.isfinite(gx[0, 0, :, 0]).all()
    _, gx_t, _ = torch_conv(x, w, np.ones((1, 1, 3, 3)), {})
    assert_like_torch(gx, gx_t)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_weight_grad_input_deterministic(isa, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 23, 19)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 4)).astype(dtype)
    w[1, 0, 2, 1] = np.inf
    kw = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2)
    go = rng.standard_normal(fastconv.conv2d(x, w, **kw).shape).astype(dtype)
    with using_isa(isa):
        results = []
        for threads in (1, 2):
            with num_threads(threads):
                results.append(fastconv.conv2d_backward(go, x, w, **kw, needs=(1, 0, 0))[0])
    assert_same_bits(results[1], results[0], "2 threads against 1")
    _, gx_t, _ = torch_conv(x.astype(np.float64), w.astype(np.float64),
                            go.astype(np.float64), kw)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert_like_torch(results[0].astype(np.float64), gx_t, rtol=tol, atol=tol)


def test_finite_weight_keeps_the_padded_kernel(monkeypatch):
    # the per-tap path runs only for a non-finite weight: the usual path (and its bits) is kept
    monkeypatch.setattr(direct, "_grad_input_by_taps",
                        lambda *a: pytest.fail("per-tap grad_input for a finite weight"))
    x, w = np.ones((1, 2, 6, 6)), np.ones((3, 2, 3, 3))
    x[0, 0, 0, 0] = np.inf
    fastconv.conv2d_backward(np.full((1, 3, 4, 4), np.nan), x, w)


@settings(max_examples=80)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.booleans(), st.booleans())
def test_pool_backward_nonfinite_like_torch(seed, k, s, p, ceil_mode, count_include_pad):
    rng = np.random.default_rng(seed)
    p = min(p, k // 2)
    x = rng.standard_normal((2, 2, 7, 6))
    x[rng.random(x.shape) < 0.2] = rng.choice(SPECIAL)
    xt = torch.tensor(x, requires_grad=True)
    out, idx = fastconv.max_pool2d(x, k, s, p, ceil_mode=ceil_mode, return_indices=True)
    go = rng.standard_normal(out.shape)
    go[rng.random(go.shape) < 0.3] = rng.choice(SPECIAL)
    want, = torch.autograd.grad(F.max_pool2d(xt, k, s, p, ceil_mode=ceil_mode), xt,
                                torch.tensor(go))
    np.testing.assert_array_equal(fastconv.max_pool2d_backward(go, idx, x.shape), want.numpy())
    out = fastconv.avg_pool2d(x, k, s, p, ceil_mode, count_include_pad)
    go = rng.standard_normal(out.shape)
    go[rng.random(go.shape) < 0.3] = rng.choice(SPECIAL)
    want, = torch.autograd.grad(F.avg_pool2d(xt, k, s, p, ceil_mode, count_include_pad), xt,
                                torch.tensor(go))
    np.testing.assert_array_equal(
        fastconv.avg_pool2d_backward(go, x.shape, k, s, p, ceil_mode, count_include_pad),
        want.numpy())
