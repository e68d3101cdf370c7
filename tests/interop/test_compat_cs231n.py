"""fastconv.compat.cs231n: each layer against the naive loops of CS231n's layers.py, and a
three-layer ConvNet written against the drop-in functions (SGD steps, numeric gradient check)."""
import numpy as np
import pytest

from fastconv.compat import cs231n as L


# ------------------------------------------------------------------------- naive layers (oracle)
def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param["stride"], conv_param["pad"]
    n, c, h, wd = x.shape
    f, _, hh, ww = w.shape
    oh, ow = 1 + (h + 2 * p - hh) // s, 1 + (wd + 2 * p - ww) // s
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, f, oh, ow))
    for i in range(n):
        for k in range(f):
            for r in range(oh):
                for q in range(ow):
                    out[i, k, r, q] = np.sum(xp[i, :, r * s:r * s + hh, q * s:q * s + ww] * w[k]) + b[k]
    return out


def conv_backward_naive(dout, x, w, conv_param):
    s, p = conv_param["stride"], conv_param["pad"]
    f, _, hh, ww = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dxp, dw = np.zeros_like(xp, dtype=np.float64), np.zeros_like(w, dtype=np.float64)
    for i in range(x.shape[0]):
        for k in range(f):
            for r in range(dout.shape[2]):
                for q in range(dout.shape[3]):
                    win = (i, slice(None), slice(r * s, r * s + hh), slice(q * s, q * s + ww))
                    dw[k] += xp[win] * dout[i, k, r, q]
                    dxp[win] += w[k] * dout[i, k, r, q]
    dx = dxp[:, :, p:p + x.shape[2], p:p + x.shape[3]]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def pool_windows(x_shape, pool_param):
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    oh, ow = 1 + (x_shape[2] - ph) // s, 1 + (x_shape[3] - pw) // s
    for r in range(oh):
        for q in range(ow):
            yield r, q, (slice(None), slice(None), slice(r * s, r * s + ph), slice(q * s, q * s + pw))


def max_pool_forward_naive(x, pool_param):
    n, c, h, w = x.shape
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    out = np.zeros((n, c, 1 + (h - ph) // s, 1 + (w - pw) // s))
    for r, q, win in pool_windows(x.shape, pool_param):
        out[:, :, r, q] = x[win].max(axis=(2, 3))
    return out


def max_pool_backward_naive(dout, x, pool_param):
    dx = np.zeros_like(x, dtype=np.float64)
    for r, q, win in pool_windows(x.shape, pool_param):
        for i in range(x.shape[0]):
            for c in range(x.shape[1]):
                patch = x[win][i, c]
                a, b = np.unravel_index(np.argmax(patch), patch.shape)  # first maximum
                dx[win][i, c, a, b] += dout[i, c, r, q]
    return dx


def avg_pool_forward_naive(x, pool_param):
    out = np.zeros((x.shape[0], x.shape[1]) + max_pool_forward_naive(x, pool_param).shape[2:])
    for r, q, win in pool_windows(x.shape, pool_param):
        out[:, :, r, q] = x[win].mean(axis=(2, 3))
    return out


def avg_pool_backward_naive(dout, x, pool_param):
    dx = np.zeros_like(x, dtype=np.float64)
    size = pool_param["pool_height"] * pool_param["pool_width"]
    for r, q, win in pool_windows(x.shape, pool_param):
        dx[win] += dout[:, :, r, q][:, :, None, None] / size
    return dx


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------- layer by layer
CONV_CASES = [  # x shape, w shape, conv_param
    ((2, 3, 7, 7), (4, 3, 3, 3), {"stride": 1, "pad": 1}),
    ((2, 3, 8, 9), (5, 3, 3, 3), {"stride": 2, "pad": 1}),  # does not tile: floor, like torch
    ((1, 2, 9, 9), (3, 2, 5, 5), {"stride": 2, "pad": 2}),
    ((3, 1, 6, 5), (2, 1, 1, 1), {"stride": 1, "pad": 0}),
    ((2, 4, 5, 5), (2, 4, 5, 5), {"stride": 3, "pad": 0}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, ws, conv_param", CONV_CASES)
def test_conv_forward_backward_match_naive(xs, ws, conv_param, dtype):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    out, cache = L.conv_forward_fast(x, w, b, conv_param)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, conv_forward_naive(x, w, b, conv_param), **tol(dtype))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = L.conv_backward_fast(dout, cache)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    assert dx.dtype == dw.dtype == db.dtype == dtype
    for got, want in zip((dx, dw, db), conv_backward_naive(dout, x, w, conv_param)):
        np.testing.assert_allclose(got, want, **tol(dtype))


POOL_CASES = [
    ((2, 3, 8, 8), {"pool_height": 2, "pool_width": 2, "stride": 2}),
    ((2, 2, 7, 9), {"pool_height": 3, "pool_width": 2, "stride": 2}),  # does not tile
    ((1, 3, 6, 6), {"pool_height": 3, "pool_width": 3, "stride": 1}),  # overlapping windows
    ((2, 1, 5, 4), {"pool_height": 1, "pool_width": 4, "stride": 1}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, pool_param", POOL_CASES)
def test_max_pool_matches_naive(xs, pool_param, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(dtype)
    out, cache = L.max_pool_forward_fast(x, pool_param)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, max_pool_forward_naive(x, pool_param))
    # the cache holds the argmax (torch's convention), not the input or a mask
    indices = cache[-1]
    assert indices.dtype == np.int64 and indices.shape == out.shape
    assert not any(isinstance(c, np.ndarray) and c.shape == x.shape for c in cache)
    np.testing.assert_array_equal(
        np.take_along_axis(x.reshape(*xs[:2], -1), indices.reshape(*xs[:2], -1), 2), out.reshape(*xs[:2], -1))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = L.max_pool_backward_fast(dout, cache)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, max_pool_backward_naive(dout, x, pool_param), **tol(dtype))


def test_max_pool_ties_go_to_the_first_maximum():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 5.0
    out, cache = L.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dx = L.max_pool_backward_fast(np.ones_like(out), cache)
    assert dx[0, 0, 0, 1] == 1 and dx[0, 0, 1, 1] == 0 and dx.sum() == 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs, pool_param", POOL_CASES)
def test_avg_pool_matches_naive(xs, pool_param, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(xs).astype(dtype)
    out, cache = L.avg_pool_forward_fast(x, pool_param)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, avg_pool_forward_naive(x, pool_param), **tol(dtype))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = L.avg_pool_backward_fast(dout, cache)
    np.testing.assert_allclose(dx, avg_pool_backward_naive(dout, x, pool_param), **tol(dtype))


def test_padded_pooling():
    """The optional 'pad' key (the original fast layers cannot pad) follows torch: -inf padding
    for max, zeros counted in the divisor for average."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 5, 5))
    pp = {"pool_height": 3, "pool_width": 3, "stride": 2, "pad": 1}
    out, cache = L.max_pool_forward_fast(x, pp)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    np.testing.assert_array_equal(out, max_pool_forward_naive(xp, pp))
    assert L.max_pool_backward_fast(np.ones_like(out), cache).sum() == out.size
    out, cache = L.avg_pool_forward_fast(x, pp)
    np.testing.assert_allclose(out, avg_pool_forward_naive(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), pp))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sandwich_layers_match_naive(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    cp, pp = {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}
    a = conv_forward_naive(x, w, b, cp)
    relu = np.maximum(a, 0)

    out, cache = L.conv_relu_forward(x, w, b, cp)
    np.testing.assert_allclose(out, relu, **tol(dtype))
    dout = rng.standard_normal(out.shape).astype(dtype)
    for got, want in zip(L.conv_relu_backward(dout, cache), conv_backward_naive(dout * (a > 0), x, w, cp)):
        np.testing.assert_allclose(got, want, **tol(dtype))

    out, cache = L.conv_relu_pool_forward(x, w, b, cp, pp)
    assert len(cache) == 3  # (conv_cache, relu_cache, pool_cache), as in layer_utils.py
    np.testing.assert_allclose(out, max_pool_forward_naive(relu, pp), **tol(dtype))
    dout = rng.standard_normal(out.shape).astype(dtype)
    drelu = max_pool_backward_naive(dout, relu, pp)
    for got, want in zip(L.conv_relu_pool_backward(dout, cache),
                         conv_backward_naive(drelu * (a > 0), x, w, cp)):
        np.testing.assert_allclose(got, want, **tol(dtype))


def test_dtypes_follow_the_original_code():
    rng = np.random.default_rng(5)
    x32 = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w32 = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    b32 = np.zeros(2, np.float32)
    cp = {"stride": 1, "pad": 1}
    assert L.conv_forward_fast(x32, w32, b32, cp)[0].dtype == np.float32
    # mixed precision or integer data promote to float64, as NumPy arithmetic would
    assert L.conv_forward_fast(x32, w32.astype(np.float64), b32, cp)[0].dtype == np.float64
    out, cache = L.conv_forward_fast(np.ones((1, 2, 4, 4), int), w32, b32, cp)
    assert out.dtype == np.float64
    assert L.conv_backward_fast(np.ones(out.shape), cache)[1].dtype == np.float64
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    assert L.max_pool_forward_fast(np.ones((1, 1, 4, 4), np.int32), pp)[0].dtype == np.float64
    assert L.avg_pool_forward_fast(x32, pp)[0].dtype == np.float32


def test_argument_errors():
    x, w, b = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1)
    with pytest.raises(KeyError, match="pad"):
        L.conv_forward_fast(x, w, b, {"stride": 1})
    with pytest.raises(KeyError, match="pool_width"):
        L.max_pool_forward_fast(x, {"pool_height": 2, "stride": 2})
    with pytest.raises(TypeError, match="dict"):
        L.avg_pool_forward_fast(x, (2, 2, 2))
    with pytest.raises(ValueError, match="4-D"):
        L.max_pool_forward_fast(x[0], {"pool_height": 2, "pool_width": 2, "stride": 2})
    with pytest.raises(ValueError, match="weight"):
        L.conv_forward_fast(x, np.zeros((1, 2, 3, 3)), b, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r"b must have shape \(F,\) = \(1,\).*got \(\)"):
        L.conv_forward_fast(x, w, 0.0, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r"b must have shape \(F,\) = \(1,\).*got \(2,\)"):
        L.conv_forward_fast(x, w, np.zeros(2), {"stride": 1, "pad": 0})


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_without_bias(dtype):
    # b=None is no bias, as in torch: the same as zeros, dtype kept, db None
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    param = {"stride": 1, "pad": 1}
    out, cache = L.conv_forward_fast(x, w, None, param)
    want, want_cache = L.conv_forward_fast(x, w, np.zeros(4, dtype), param)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, want)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = L.conv_backward_fast(dout, cache)
    wdx, wdw, _ = L.conv_backward_fast(dout, want_cache)
    assert db is None
    np.testing.assert_array_equal(dx, wdx)
    np.testing.assert_array_equal(dw, wdw)
    out, cache = L.conv_relu_pool_forward(x, w, None, param,
                                          {"pool_height": 2, "pool_width": 2, "stride": 2})
    assert L.conv_relu_pool_backward(np.ones_like(out), cache)[2] is None


# ------------------------------------------------------------------------- a three-layer ConvNet
class ThreeLayerConvNet:
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax, as in CS231n's cnn.py."""

    def __init__(self, input_dim=(3, 8, 8), num_filters=4, filter_size=3, hidden_dim=10,
                 num_classes=5, weight_scale=0.1, reg=0.01, seed=0):
        rng = np.random.default_rng(seed)
        c, h, w = input_dim
        self.reg = reg
        self.params = {
            "W1": weight_scale * rng.standard_normal((num_filters, c, filter_size, filter_size)),
            "b1": np.zeros(num_filters),
            "W2": weight_scale * rng.standard_normal((num_filters * (h // 2) * (w // 2), hidden_dim)),
            "b2": np.zeros(hidden_dim),
            "W3": weight_scale * rng.standard_normal((hidden_dim, num_classes)),
            "b3": np.zeros(num_classes),
        }

    def loss(self, X, y):
        p = self.params
        conv_param = {"stride": 1, "pad": (p["W1"].shape[2] - 1) // 2}
        pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        a1, cache1 = L.conv_relu_pool_forward(X, p["W1"], p["b1"], conv_param, pool_param)
        flat = a1.reshape(a1.shape[0], -1)
        z2 = flat @ p["W2"] + p["b2"]
        a2 = np.maximum(z2, 0)
        scores = a2 @ p["W3"] + p["b3"]

        shifted = scores - scores.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        n = X.shape[0]
        loss = -np.log(probs[np.arange(n), y]).mean()
        loss += 0.5 * self.reg * sum(np.sum(p[k] ** 2) for k in ("W1", "W2", "W3"))

        dscores = probs.copy()
        dscores[np.arange(n), y] -= 1
        dscores /= n
        grads = {"W3": a2.T @ dscores + self.reg * p["W3"], "b3": dscores.sum(axis=0)}
        dz2 = (dscores @ p["W3"].T) * (z2 > 0)
        grads["W2"] = flat.T @ dz2 + self.reg * p["W2"]
        grads["b2"] = dz2.sum(axis=0)
        da1 = (dz2 @ p["W2"].T).reshape(a1.shape)
        _, grads["W1"], grads["b1"] = L.conv_relu_pool_backward(da1, cache1)
        grads["W1"] += self.reg * p["W1"]
        return loss, grads


def small_data(seed=1, n=6):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)), rng.integers(0, 5, n)


def test_convnet_sgd_reduces_the_loss():
    X, y = small_data(n=16)
    net = ThreeLayerConvNet()
    losses = []
    for _ in range(15):
        loss, grads = net.loss(X, y)
        losses.append(loss)
        for k in net.params:
            net.params[k] -= 0.3 * grads[k]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.75 * losses[0], losses
    assert np.all(np.diff(losses) < 0), losses


def test_convnet_numeric_gradient_check(one_thread):
    """Centered differences of the loss against the analytic gradients of every parameter (all
    entries of the conv layer, a random sample of the 640 entries of W2)."""
    X, y = small_data()
    net = ThreeLayerConvNet(weight_scale=0.3)
    net.params["b1"][:] = 0.05  # move ReLU inputs off zero
    _, grads = net.loss(X, y)
    rng = np.random.default_rng(7)
    h = 1e-6
    for name, param in net.params.items():
        entries = list(np.ndindex(param.shape))
        if len(entries) > 100:
            entries = [entries[i] for i in rng.choice(len(entries), 60, replace=False)]
        for i in entries:
            old = param[i]
            param[i] = old + h
            plus, _ = net.loss(X, y)
            param[i] = old - h
            minus, _ = net.loss(X, y)
            param[i] = old
            numeric = (plus - minus) / (2 * h)
            np.testing.assert_allclose(grads[name][i], numeric, rtol=1e-5, atol=1e-8,
                                       err_msg=f"{name}{i}")
