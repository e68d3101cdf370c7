"""conv2d's fused activation (``activation=``, applied in the kernels' output epilogue) and
conv2d_backward's (``activation=``, ``output=``): bitwise the plain convolution followed by
torch's activation, on every SIMD path and thread count, for every kernel path (scratch tile,
direct stores, non-temporal stores, row bands, several tap blocks, images side by side), NaN,
+-inf and -0.0 included; the gradients bitwise those of torch's activation; bad arguments named.

The expected values come from the plain conv2d and the activation written out below from
torch's documented rules (and from torch itself where it is installed)."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from conv_helpers import (SUPPORTED_ISAS, TESTS_DIR, assert_same_bits, assert_unchanged,
                          child_env, num_threads, snapshot, using_isa, workspace_cap)
from strategies import FUSED_ACTIVATIONS, conv_problems, fused_activations


def torch_rule(y, activation, slope):
    """torch's activation of y, written out: relu ``0 if y < 0 else y``, relu6
    ``hardtanh(y, 0, 6)``, leaky_relu ``y if y > 0 else y * slope`` (slope in y's dtype)."""
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        if activation == "relu":
            return np.where(y < 0, y.dtype.type(0), y)
        if activation == "relu6":
            return np.where(y < 0, y.dtype.type(0), np.where(y > 6, y.dtype.type(6), y))
        return np.where(y > 0, y, y * y.dtype.type(slope))


def torch_rule_grad(y, g, activation, slope):
    """torch's gradient of the activation at its input y (relu: threshold_backward of the
    result; relu6: hardtanh_backward's vectorised rule; leaky_relu_backward)."""
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        if activation == "relu":
            return np.where(torch_rule(y, "relu", 0) <= 0, g.dtype.type(0), g)
        if activation == "relu6":
            return np.where((y > 0) & (y < 6), g, g.dtype.type(0))
        return np.where(y > 0, g, g * g.dtype.type(slope))


def special_values(rng, a, fraction=0.1):
    """Put +-inf, NaN and -0.0 at random places of ``a`` (in place)."""
    u = rng.random(a.shape)
    a[u < fraction / 4] = np.inf
    a[(u >= fraction / 4) & (u < fraction / 2)] = -np.inf
    a[(u >= fraction / 2) & (u < 3 * fraction / 4)] = np.nan
    a[(u >= 3 * fraction / 4) & (u < fraction)] = -0.0


def fused_and_unfused(x, w, b, activation, slope, **kwargs):
    fused = fastconv.conv2d(x, w, b, **kwargs, activation=activation, negative_slope=slope)
    plain = fastconv.conv2d(x, w, b, **kwargs)
    return fused, torch_rule(plain, activation, slope)


# ---------------------------------------------------------------------------- forward
@settings(max_examples=60, deadline=None)
@given(problem=conv_problems(readonly=False), act=fused_activations(),
       special=st.booleans(), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_fused_forward_is_conv2d_then_the_activation_on_every_path(problem, act, special,
                                                                    threads, seed):
    x, w, b, kwargs = problem["x"], problem["w"], problem["b"], problem["kwargs"]
    if special:
        rng = np.random.default_rng(seed)
        for a in (x, w, b):
            if a is not None and a.size:
                special_values(rng, a, 0.05)
    before = snapshot(x, w, b)
    with num_threads(threads):
        for isa in SUPPORTED_ISAS:
            with using_isa(isa):
                fused, want = fused_and_unfused(x, w, b, *act, **kwargs)
            # NaN as NaN: which NaN a sum of two NaNs passes on is the compiler's choice
            assert_same_bits(fused, want, f"{act} on {isa}", any_nan=True)
    assert_unchanged(before, x, w, b)


# Shapes that take each way the forward writes its output: a scratch tile (OW not a multiple of
# a vector), stores straight into the output, non-temporal stores (an output of 8 MiB and more),
# several tap blocks (more than 1024 taps: only the last one may activate), packed panels (rows
# shorter than half a vector), images side by side (14 x 14 outputs), one row block and many.
KERNEL_PATHS = {
    "scratch-tile": ((2, 3, 9, 11), (5, 3, 3, 3), dict(padding=1)),
    "direct-stores": ((2, 4, 16, 32), (20, 4, 3, 3), dict(padding=1)),
    "streamed": ((2, 2, 128, 128), (64, 2, 3, 3), dict(padding=1)),
    "tap-blocks": ((1, 130, 6, 16), (14, 130, 3, 3), dict(padding=1)),
    "packed-panels": ((2, 3, 12, 5), (20, 3, 3, 3), dict(padding=(1, 0))),
    "packed-tap-blocks": ((1, 40, 6, 5), (14, 40, 3, 3), dict(padding=(1, 0))),
    "images-side-by-side": ((4, 3, 16, 16), (8, 3, 3, 3), dict()),
    "strided-grouped": ((2, 6, 17, 19), (9, 2, 3, 2), dict(stride=2, groups=3, padding=1)),
    "one-row-block": ((3, 2, 7, 40), (3, 2, 1, 3), dict(dilation=2)),
}


@pytest.mark.parametrize("name", sorted(KERNEL_PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_forward_on_every_kernel_path(name, dtype):
    xs, ws, kwargs = KERNEL_PATHS[name]
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) * 3
    for activation in FUSED_ACTIVATIONS:
        results = []
        for isa in SUPPORTED_ISAS:
            for threads in (1,) if name == "streamed" else (1, 2):  # a large one: once
                with using_isa(isa), num_threads(threads):
                    fused, want = fused_and_unfused(x, w, b, activation, 0.1, **kwargs)
                assert_same_bits(fused, want, f"{name} {activation} on {isa}, {threads} threads")
                results.append(fused)
        assert (results[0] != 0).any() and (results[0] == 0).any() or activation == "leaky_relu"


@pytest.mark.parametrize("activation", FUSED_ACTIVATIONS)
def test_fused_forward_in_row_bands(activation):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 60, 40)).astype(np.float32)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    want = torch_rule(fastconv.conv2d(x, w, padding=1), activation, 0.3)
    with workspace_cap(4096):
        for isa in SUPPORTED_ISAS:
            with using_isa(isa):
                got = fastconv.conv2d(x, w, padding=1, activation=activation, negative_slope=0.3)
            assert_same_bits(got, want, f"{activation} in bands on {isa}")


def test_nan_inf_and_zeros_follow_torch():
    # zero weights: every output is its bias (as +0.0 + bias: the kernels' sums never end in
    # -0.0, which reaches the activation only where no input channel is read, below)
    biases = np.array([-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, -3.0, 2.0, 6.0, 7.5, -1e-30,
                       1e-300], dtype=np.float64)
    for dtype in (np.float32, np.float64):
        b = biases.astype(dtype)
        x = np.ones((1, 2, 4, 21), dtype=dtype)
        w = np.full((b.size, 2, 3, 3), -0.0, dtype=dtype)
        plain = fastconv.conv2d(x, w, b, padding=1)
        want = np.broadcast_to(b[None, :, None, None] + dtype(0), plain.shape)
        assert_same_bits(plain, want.astype(dtype), any_nan=True)
        for activation in FUSED_ACTIVATIONS:
            for slope in (0.0, 0.01, 2.0):
                for isa in SUPPORTED_ISAS:
                    with using_isa(isa):
                        got = fastconv.conv2d(x, w, b, padding=1, activation=activation,
                                              negative_slope=slope)
                    assert_same_bits(got, torch_rule(plain, activation, slope),
                                     f"{dtype.__name__} {activation} {slope} {isa}")


def test_no_input_channel_is_the_activated_bias():
    b = np.array([-0.0, -2.0, np.nan, 8.0], dtype=np.float32)
    x = np.ones((2, 0, 5, 5), np.float32)
    w = np.ones((4, 0, 3, 3), np.float32)
    for activation in FUSED_ACTIVATIONS:
        got = fastconv.conv2d(x, w, b, activation=activation, negative_slope=0.5)
        assert_same_bits(got, torch_rule(fastconv.conv2d(x, w, b), activation, 0.5))


def test_matches_torch_bit_for_bit():
    torch = pytest.importorskip("torch")
    functions = {"relu": torch.relu, "relu6": torch.nn.functional.relu6,
                 "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.2)}
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 3, 20, 19)).astype(dtype)
        w = rng.standard_normal((7, 3, 3, 3)).astype(dtype) * 2
        b = np.array([-0.0, np.nan, np.inf, -np.inf, 0, 1, -1], dtype=dtype)
        x[0, 0, 3, :] = np.nan
        plain = fastconv.conv2d(x, w, b, padding=1)
        for activation, f in functions.items():
            got = fastconv.conv2d(x, w, b, padding=1, activation=activation, negative_slope=0.2)
            assert_same_bits(got, f(torch.from_numpy(plain)).numpy(), activation)


@pytest.mark.parametrize("activation", FUSED_ACTIVATIONS)
def test_fft_applies_the_same_activation(activation):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 12, 12))
    w = rng.standard_normal((3, 2, 5, 5))
    b = rng.standard_normal(3)
    plain = fastconv.conv2d(x, w, b, algorithm="fft")
    got = fastconv.conv2d(x, w, b, algorithm="fft", activation=activation, negative_slope=0.1)
    assert_same_bits(got, torch_rule(plain, activation, 0.1))


ISA_SCRIPT = r"""
import sys
import numpy as np
import fastconv
from fastconv import _kernels
assert _kernels.get_isa() == sys.argv[1], _kernels.get_isa()
rng = np.random.default_rng(7)
x = rng.standard_normal((2, 5, 13, 18)).astype(np.float32)
w = rng.standard_normal((11, 5, 3, 3)).astype(np.float32)
b = rng.standard_normal(11).astype(np.float32)
x[0, 1, 4, 5:9] = [np.nan, np.inf, -np.inf, -0.0]
out = {}
for a in ("relu", "relu6", "leaky_relu"):
    out[a] = fastconv.conv2d(x, w, b, padding=1, activation=a, negative_slope=0.05)
    y = fastconv.conv2d(x, w, b, padding=1)
    g = rng.standard_normal(y.shape).astype(np.float32)
    out[a + "_grads"] = np.concatenate([r.ravel() for r in fastconv.conv2d_backward(
        g, x, w, padding=1, activation=a, negative_slope=0.05, output=out[a])])
np.savez(sys.argv[2], **out)
"""


def test_forced_paths_give_the_same_bits(tmp_path):
    """FASTCONV_ISA=generic|avx2|avx512 in a fresh interpreter (the path picked at import)."""
    results = {}
    for isa in SUPPORTED_ISAS:
        path = tmp_path / f"{isa}.npz"
        proc = subprocess.run([sys.executable, "-c", ISA_SCRIPT, isa, str(path)],
                              env=child_env(FASTCONV_ISA=isa), cwd=TESTS_DIR,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with np.load(path) as f:
            results[isa] = {k: f[k] for k in f.files}
    first = SUPPORTED_ISAS[0]
    for isa in SUPPORTED_ISAS[1:]:
        for key, want in results[first].items():
            assert_same_bits(results[isa][key], want, f"{key} on {isa}", any_nan=True)


# ---------------------------------------------------------------------------- backward
@settings(max_examples=40, deadline=None)
@given(problem=conv_problems(readonly=False), act=fused_activations(),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_fused_backward_is_the_masked_gradient(problem, act, threads, seed):
    """conv2d_backward(g, ..., activation, output) is conv2d_backward of torch's activation
    gradient at the convolution's output y (read off y, torch's way), bit for bit."""
    x, w, b, kwargs = problem["x"], problem["w"], problem["b"], problem["kwargs"]
    activation, slope = act
    rng = np.random.default_rng(seed)
    y = fastconv.conv2d(x, w, b, **kwargs)
    y.ravel()[rng.random(y.size) < 0.2] = 0.0  # outputs exactly at 0, 6 and -0.0 as well
    y.ravel()[rng.random(y.size) < 0.1] = 6.0
    y.ravel()[rng.random(y.size) < 0.1] = -0.0
    out = torch_rule(y, activation, slope)
    g = rng.standard_normal(y.shape).astype(y.dtype)
    before = snapshot(g, out, x, w)
    want = fastconv.conv2d_backward(torch_rule_grad(y, g, activation, slope), x, w, **kwargs)
    with num_threads(threads):
        for isa in SUPPORTED_ISAS:
            with using_isa(isa):
                got = fastconv.conv2d_backward(g, x, w, **kwargs, activation=activation,
                                               negative_slope=slope, output=out)
            for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
                assert_same_bits(a, e, f"{name} {act} on {isa}")
    assert_unchanged(before, g, out, x, w)


@pytest.mark.parametrize("activation", FUSED_ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_gradient_is_torchs_bit_for_bit(activation, dtype):
    """The masked gradient (read here through grad_bias of a 1x1 convolution with one input
    channel, which is that gradient summed in a fixed order, and through grad_input with a unit
    weight, which is the gradient itself) against torch's autograd of the activation at the
    convolution's output: 0, -0.0, 6, +-inf and NaN included (relu6 at NaN aside: torch's own
    answer there depends on the tensor's length)."""
    torch = pytest.importorskip("torch")
    functions = {"relu": torch.relu, "relu6": torch.nn.functional.relu6,
                 "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.3)}
    rng = np.random.default_rng(8)
    y = rng.standard_normal((2, 1, 40, 41)).astype(dtype) * 4
    specials = [0.0, -0.0, 6.0, np.inf, -np.inf] + ([] if activation == "relu6" else [np.nan])
    y.ravel()[:len(specials) * 30] = np.repeat(specials, 30)
    rng.shuffle(y.ravel())
    g = rng.standard_normal(y.shape).astype(dtype)
    t = torch.from_numpy(y.copy()).requires_grad_()
    out_t = functions[activation](t)
    out_t.backward(torch.from_numpy(g))
    out = out_t.detach().numpy()
    w = np.ones((1, 1, 1, 1), dtype)
    gi, _, _ = fastconv.conv2d_backward(g, y, w, activation=activation, negative_slope=0.3,
                                        output=out, needs=(True, False, False))
    assert_same_bits(gi, t.grad.numpy(), activation)


def test_fused_backward_close_to_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 10, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    for activation, f in {"relu": torch.relu, "relu6": torch.nn.functional.relu6,
                          "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.1)}.items():
        xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
        yt = f(torch.nn.functional.conv2d(xt, wt, bt, padding=1) * 3)
        g = rng.standard_normal(tuple(yt.shape))
        yt.backward(torch.from_numpy(g))
        out = fastconv.conv2d(x, w * 3, b * 3, padding=1, activation=activation,
                              negative_slope=0.1)
        np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
        gi, gw, gb = fastconv.conv2d_backward(g, x, w * 3, padding=1, activation=activation,
                                              negative_slope=0.1, output=out)
        np.testing.assert_allclose(gi, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gw * 3, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gb * 3, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_masked_gradient_is_the_same_for_any_thread_count():
    rng = np.random.default_rng(10)
    y = rng.standard_normal((4, 8, 64, 64)).astype(np.float32)  # above the serial grain
    x = rng.standard_normal((4, 2, 64, 64)).astype(np.float32)
    w = rng.standard_normal((8, 2, 1, 1)).astype(np.float32)
    g = rng.standard_normal(y.shape).astype(np.float32)
    for activation in FUSED_ACTIVATIONS:
        out = torch_rule(y, activation, 0.1)
        results = []
        for threads in (1, 2, 3):
            with num_threads(threads):
                results.append(fastconv.conv2d_backward(g, x, w, activation=activation,
                                                        negative_slope=0.1, output=out))
        for r in results[1:]:
            for a, e in zip(r, results[0]):
                assert_same_bits(a, e, activation)


def test_unbatched_and_any_layout():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    out = fastconv.conv2d(x, w, activation="relu")
    assert out.shape == (4, 7, 6)
    g = rng.standard_normal((6, 7, 4)).transpose(2, 1, 0)  # a non-contiguous grad_output
    got = fastconv.conv2d_backward(g, x, w, activation="relu", output=out[:, ::-1][:, ::-1])
    want = fastconv.conv2d_backward(np.where(out <= 0, 0.0, g), x, w)
    for a, e in zip(got, want):
        assert_same_bits(a, e)


# ---------------------------------------------------------------------------- bad arguments
X = np.ones((1, 2, 5, 5), np.float32)
W = np.ones((3, 2, 3, 3), np.float32)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(activation="gelu"), ValueError, ["activation", "'relu'", "'relu6'", "'leaky_relu'"]),
    (dict(activation="ReLU"), ValueError, ["activation"]),
    (dict(activation=1), TypeError, ["activation"]),
    (dict(activation=np.str_("relu").encode()), TypeError, ["activation"]),
    (dict(activation="leaky_relu", negative_slope=-0.1), ValueError, ["negative_slope", ">= 0"]),
    (dict(activation="leaky_relu", negative_slope=float("nan")), ValueError, ["negative_slope"]),
    (dict(activation="leaky_relu", negative_slope="0.1"), TypeError, ["negative_slope"]),
    (dict(activation="relu", negative_slope=None), TypeError, ["negative_slope"]),
    (dict(activation="leaky_relu", negative_slope=True), TypeError, ["negative_slope"]),
])
def test_bad_arguments_are_named(kwargs, error, words):
    for call in (lambda: fastconv.conv2d(X, W, **kwargs),
                 lambda: fastconv.conv2d_backward(np.ones((1, 3, 3, 3), np.float32), X, W,
                                                  output=np.ones((1, 3, 3, 3), np.float32),
                                                  **kwargs)):
        with pytest.raises(error) as info:
            call()
        for word in words:
            assert word in str(info.value)


G = np.ones((1, 3, 3, 3), np.float32)


@pytest.mark.parametrize("kwargs, error", [
    (dict(activation="relu"), ValueError),                                   # output missing
    (dict(output=G), ValueError),                                            # no activation
    (dict(activation="relu", output=G[0]), ValueError),                      # unbatched
    (dict(activation="relu", output=np.ones((1, 3, 3, 2), np.float32)), ValueError),
    (dict(activation="relu", output=G.astype(np.float64)), TypeError),
    (dict(activation="relu", output=G.astype(np.int32)), TypeError),
    (dict(activation="relu", output="x"), TypeError),
])
def test_bad_output_is_named(kwargs, error):
    with pytest.raises(error, match="output"):
        fastconv.conv2d_backward(G, X, W, **kwargs)


def test_negative_slope_is_free_without_leaky_relu_and_integers_are_accepted():
    y = fastconv.conv2d(X, W, activation="relu", negative_slope=-5)
    assert_same_bits(y, torch_rule(fastconv.conv2d(X, W), "relu", 0))
    z = fastconv.conv2d(X - 2, W, activation="leaky_relu", negative_slope=2)
    assert_same_bits(z, torch_rule(fastconv.conv2d(X - 2, W), "leaky_relu", 2.0))
