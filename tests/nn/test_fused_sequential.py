"""nn's activations (ReLU, ReLU6, LeakyReLU: torch's rules bit for bit) and Sequential's fusion
of a Conv2d with the activation after it (conv2d's fused epilogue): the same numbers, gradients,
layer state and parameters as running the layers one after the other, and a training run that
ends with the same weights bit for bit."""
import numpy as np
import pytest

import fastconv.nn.layers
from fastconv import nn, optim
from fastconv.cli.demo import build_model
from conv_helpers import SUPPORTED_ISAS, assert_same_bits, num_threads, using_isa

ACTIVATION_LAYERS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky": lambda: nn.LeakyReLU(0.2),
    "leaky-zero": lambda: nn.LeakyReLU(0.0),
    "leaky-negative": lambda: nn.LeakyReLU(-0.3),  # not fused: computed as written
}


def specials(dtype):
    return np.array([0.0, -0.0, 6.0, 7.0, -2.0, 3.0, 1e-30, -1e-30, np.inf, -np.inf, np.nan,
                     -np.nan], dtype=dtype)


# ---------------------------------------------------------------------- the layers vs torch
@pytest.mark.parametrize("name", sorted(ACTIVATION_LAYERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_layers_are_torchs_bit_for_bit(name, dtype):
    torch = pytest.importorskip("torch")
    layer = ACTIVATION_LAYERS[name]()
    twin = {nn.ReLU: torch.nn.ReLU(), nn.ReLU6: torch.nn.ReLU6()}.get(type(layer)) or \
        torch.nn.LeakyReLU(layer.negative_slope)
    rng = np.random.default_rng(0)
    x = np.concatenate([specials(dtype), rng.standard_normal(500).astype(dtype) * 4])
    if type(layer) is nn.ReLU6:  # torch's relu6 gradient at NaN depends on the tensor length
        x = x[~np.isnan(x)]
    g = rng.standard_normal(x.shape).astype(dtype)
    t = torch.from_numpy(x.copy()).requires_grad_()
    y = twin(t)
    y.backward(torch.from_numpy(g))
    assert_same_bits(layer(x), y.detach().numpy(), f"{name} forward")
    assert_same_bits(layer.backward(g), t.grad.numpy(), f"{name} backward")


def test_relu_keeps_negative_zero_and_passes_the_gradient_at_nan_as_torch():
    # regressions: np.maximum(x, 0) turned -0.0 into +0.0, and the gradient was masked with
    # output > 0, which stops it at a NaN output where torch's threshold_backward passes it
    relu = nn.ReLU()
    y = relu(np.array([-0.0, np.nan, -1.0], np.float32))
    assert np.signbit(y[0]) and np.isnan(y[1]) and y[2] == 0 and not np.signbit(y[2])
    assert_same_bits(relu.backward(np.ones(3, np.float32)), np.array([0, 1, 0], np.float32))


def test_leaky_relu_slope_is_named():
    with pytest.raises(TypeError, match="negative_slope"):
        nn.LeakyReLU("0.1")
    with pytest.raises(TypeError, match="negative_slope"):
        nn.LeakyReLU(None)
    assert repr(nn.LeakyReLU(0.5)) == "LeakyReLU(negative_slope=0.5)"


# ---------------------------------------------------------------------- fused vs one by one
def one_by_one(model, x, g):
    """The layers run one after the other (no fusion): output and input gradient."""
    return _forward(model, x), _backward(model, g)


def model_with(activation, dtype, padding_mode="zeros", rng=0):
    rng = np.random.default_rng(rng)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, padding_mode=padding_mode, dtype=dtype, rng=rng),
        ACTIVATION_LAYERS[activation](),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False, dtype=dtype, rng=rng),
        ACTIVATION_LAYERS[activation](),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 4, dtype=dtype, rng=rng),
    )


def grads(model):
    return [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("activation", sorted(ACTIVATION_LAYERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_sequential_fused_is_bitwise_one_by_one(activation, dtype, padding_mode):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 12, 12)).astype(dtype)
    x[0, 0, :2] = np.nan  # non-finite values through the fused pair too
    x[1, 1, 3, 3] = np.inf
    g = rng.standard_normal((5, 4)).astype(dtype)
    fused_model, plain_model = (model_with(activation, dtype, padding_mode) for _ in range(2))
    out = fused_model(x)
    gin = fused_model.backward(g)
    want_out, want_gin = one_by_one(plain_model, x, g)
    expect_fused = [] if activation == "leaky-negative" else [0, 3]
    assert sorted(fused_model._fused) == expect_fused
    assert_same_bits(out, want_out, "output")
    assert_same_bits(gin, want_gin, "grad_input")
    for i, (a, e) in enumerate(zip(grads(fused_model), grads(plain_model))):
        assert_same_bits(a, e, f"parameter {i}")
    # each layer holds what it would hold had it run alone
    for a, e in zip(fused_model, plain_model):
        for name in ("_input", "_output"):
            if hasattr(e, name):
                assert_same_bits(getattr(a, name), getattr(e, name), f"{a!r}.{name}")


def test_fused_on_every_path_and_thread_count():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    g = rng.standard_normal((4, 4)).astype(np.float32)
    want_out, want_gin = one_by_one(model_with("relu", np.float32), x, g)
    for isa in SUPPORTED_ISAS:
        for threads in (1, 2):
            with using_isa(isa), num_threads(threads):
                model = model_with("relu", np.float32)
                out, gin = model(x), model.backward(g)
            assert_same_bits(out, want_out, f"output on {isa}, {threads} threads")
            assert_same_bits(gin, want_gin, f"grad_input on {isa}, {threads} threads")


def test_the_fused_path_is_taken(monkeypatch):
    calls = []
    conv2d, conv2d_backward = fastconv.nn.layers.F.conv2d, fastconv.nn.layers.F.conv2d_backward

    def spy(f):
        def wrapped(*args, **kwargs):
            calls.append((f.__name__, kwargs.get("activation")))
            return f(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(fastconv.nn.layers.F, "conv2d", spy(conv2d))
    monkeypatch.setattr(fastconv.nn.layers.F, "conv2d_backward", spy(conv2d_backward))
    model = model_with("relu6", np.float64)
    model(np.ones((2, 3, 12, 12)))
    model.backward(np.ones((2, 4)))
    assert calls == [("conv2d", "relu6"), ("conv2d", "relu6"),
                     ("conv2d_backward", "relu6"), ("conv2d_backward", "relu6")]


def test_layers_parameters_and_state_dict_unchanged_by_fusion():
    model = model_with("relu", np.float32)
    names, layers = list(model.state_dict()), list(model)
    text = repr(model)
    model(np.ones((1, 3, 12, 12), np.float32))
    model.backward(np.ones((1, 4), np.float32))
    assert list(model.state_dict()) == names and list(model) == layers and len(model) == 7
    assert repr(model) == text
    assert [type(m).__name__ for m in model] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU",
                                                 "Flatten", "Linear"]


def test_layers_called_alone_after_a_fused_forward():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    model = model_with("leaky", np.float32)
    model(x)
    conv, act = model[0], model[1]
    y = conv(x)
    assert_same_bits(act(y), model_with("leaky", np.float32)[1](y))
    g = rng.standard_normal(y.shape).astype(np.float32)
    assert_same_bits(act.backward(g), np.where(y > 0, g, g * np.float32(0.2)))


def test_replaced_or_subclassed_layers_are_not_fused():
    class MyReLU(nn.ReLU):
        def _mask(self, g, out):
            return g  # a straight-through gradient

    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), MyReLU())
    model(np.ones((1, 1, 5, 5), np.float32))
    assert model._fused == {}
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU())
    model[1].forward = lambda x: x + 1
    assert_same_bits(model(np.zeros((1, 1, 5, 5), np.float32)),
                     model[0](np.zeros((1, 1, 5, 5), np.float32)) + 1)
    assert model._fused == {}


def test_grad_of_another_dtype_runs_the_pair_as_written():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    g = rng.standard_normal((2, 4))  # float64 into a float32 model
    fused, plain = model_with("relu", np.float32), model_with("relu", np.float32)
    fused(x)
    gin = fused.backward(g)
    _, want = one_by_one(plain, x, g)
    assert_same_bits(gin, want)


def test_backward_errors_name_the_layer():
    model = model_with("relu", np.float32)
    model(np.ones((1, 3, 12, 12), np.float32))
    model[5].backward = lambda g: np.ones((1, 8, 3, 3), np.float32)  # a wrong shape for layer 4
    with pytest.raises(ValueError, match="Sequential layer 4 .backward"):
        model.backward(np.ones((1, 4), np.float32))


def test_demo_training_gives_the_same_weights_fused():
    def train(fused, steps=4):
        rng = np.random.default_rng(5)
        model = build_model((8, 8), rng=6)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(steps):
            x = rng.random((16, 1, 8, 8)).astype(np.float32)
            labels = rng.integers(0, 10, 16)
            model.zero_grad()
            if fused:
                loss_fn(model(x), labels)
                model.backward(loss_fn.backward())
                assert sorted(model._fused) == [0, 3]
            else:
                loss_fn(_forward(model, x), labels)
                _backward(model, loss_fn.backward())
            opt.step()
        return model.state_dict()

    fused, plain = train(True), train(False)
    assert list(fused) == list(plain)
    for k in fused:
        assert_same_bits(fused[k], plain[k], k)


def _forward(model, x):
    for m in model:
        x = m(x)
    return x


def _backward(model, g):
    for m in reversed(list(model)):
        g = m.backward(g)
    return g
