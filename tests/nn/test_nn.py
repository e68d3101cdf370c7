"""fastconv.nn: finite-difference gradient checks of every layer and the loss (float64), one
training step against torch (same weights, same batch), state_dict round-trips, init, errors."""

import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import nn, optim

from bomb_helpers import MB, peak_memory_growth, write_npz


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: these calls are tiny and the machine is shared (that results do not depend on
    the thread count is tested by the kernels' own tests, and by test_demo)."""
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)


# -- finite differences --------------------------------------------------------------------------
def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of x (in place)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def check_module_grads(module, x, before_forward=lambda: None, rtol=1e-6, atol=1e-8, seed=0):
    """d sum(module(x) * g) / d(x, parameters) by backward() == by finite differences."""
    x = x.astype(np.float64)
    before_forward()
    out = module(x)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    module.zero_grad()
    gx = module.backward(g)
    assert gx.shape == x.shape and gx.dtype == np.float64

    def loss():
        before_forward()
        return float(np.sum(module(x) * g))

    np.testing.assert_allclose(gx, numeric_grad(loss, x), rtol=rtol, atol=atol)
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.shape == p.data.shape and p.grad.dtype == np.float64
        np.testing.assert_allclose(
            p.grad, numeric_grad(loss, p.data), rtol=rtol, atol=atol, err_msg=name
        )


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 6, 5)),
        (dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, stride=2), (2, 2, 7, 6)),
        (
            dict(
                in_channels=4, out_channels=6, kernel_size=(2, 3), dilation=2, groups=2, bias=False
            ),
            (1, 4, 7, 8),
        ),
        (
            dict(in_channels=2, out_channels=2, kernel_size=3, padding="same"),
            (2, 6, 5),
        ),  # unbatched
    ],
)
def test_conv2d_gradients(kwargs, shape):
    layer = nn.Conv2d(**kwargs, dtype=np.float64, rng=1)
    check_module_grads(layer, rand(*shape))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=(2, 3), stride=1),  # overlapping windows: gradients add up
        dict(kernel_size=2, stride=1, dilation=2),
    ],
)
def test_max_pool2d_gradients(kwargs):
    # distinct values far apart: no ties and no argmax switch within +-eps
    x = np.random.default_rng(3).permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.01
    check_module_grads(nn.MaxPool2d(**kwargs), x)


def test_max_pool2d_ceil_mode_gradients():
    x = np.random.default_rng(3).permutation(2 * 2 * 7 * 7).reshape(2, 2, 7, 7) * 0.01
    check_module_grads(nn.MaxPool2d(2, ceil_mode=True), x)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=1, padding=1, divisor_override=5),
    ],
)
def test_avg_pool2d_gradients(kwargs):
    check_module_grads(nn.AvgPool2d(**kwargs), rand(2, 3, 6, 7))


def test_relu_gradients():
    x = rand(3, 4, 5)
    x[np.abs(x) < 1e-3] = 0.5  # away from the kink
    check_module_grads(nn.ReLU(), x)


def test_flatten_gradients_and_shapes():
    layer = nn.Flatten()
    check_module_grads(layer, rand(2, 3, 4, 5))
    assert layer(rand(2, 3, 4, 5)).shape == (2, 60)
    assert nn.Flatten(0, 1)(rand(2, 3, 4)).shape == (6, 4)
    assert nn.Flatten(1, 2)(rand(2, 3, 4, 5)).shape == (2, 12, 5)


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (7,)])
def test_linear_gradients(shape):
    check_module_grads(nn.Linear(7, 4, dtype=np.float64, rng=2), rand(*shape))
    check_module_grads(nn.Linear(7, 3, bias=False, dtype=np.float64, rng=2), rand(*shape))


def test_dropout_gradients_and_scaling():
    layer = nn.Dropout(0.3)

    def same_mask():
        layer.rng = np.random.default_rng(7)

    check_module_grads(layer, rand(4, 50), before_forward=same_mask)
    same_mask()
    x = np.ones((200, 200))
    y = layer(x)
    kept = y != 0
    assert set(np.unique(y)) == {0.0, 1 / 0.7}
    assert abs(kept.mean() - 0.7) < 0.01
    layer.eval()
    assert layer(x) is x and np.array_equal(layer.backward(x), x)
    assert np.array_equal(nn.Dropout(1.0)(x), np.zeros_like(x))


def small_cnn(dtype=np.float64, rng=0):
    rng = np.random.default_rng(rng)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=dtype, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, dtype=dtype, rng=rng),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 5, dtype=dtype, rng=rng),
    )


def test_sequential_cnn_gradients():
    check_module_grads(small_cnn(), rand(3, 2, 8, 8), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradients(reduction):
    logits = rand(6, 5) * 3
    target = np.array([0, 4, 2, 2, 1, 3])
    loss_fn = nn.CrossEntropyLoss(reduction)
    g = rand(6, seed=1) if reduction == "none" else np.float64(1.7)
    loss_fn(logits, target)
    analytic = loss_fn.backward(g)
    numeric = numeric_grad(lambda: float(np.sum(loss_fn(logits, target) * g)), logits)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_cross_entropy_values():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    loss = nn.CrossEntropyLoss()(logits, np.array([0, 2]))
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss, np.log(3) / 2, rtol=1e-6)  # no overflow on the 1000s
    unbatched = nn.CrossEntropyLoss()(np.array([0.0, 1.0, 2.0]), np.int64(2))
    np.testing.assert_allclose(unbatched, -np.log(np.exp(2) / np.exp([0, 1, 2]).sum()))


# -- against torch -------------------------------------------------------------------------------
def _torch_twin(model, torch):
    """The torch Sequential with the same layers and a copy of the same weights."""
    t = torch.nn
    layers = []
    for m in model:
        if isinstance(m, nn.Conv2d):
            layers.append(
                t.Conv2d(
                    m.in_channels,
                    m.out_channels,
                    m.kernel_size,
                    m.stride,
                    m.padding,
                    m.dilation,
                    m.groups,
                    m.bias is not None,
                )
            )
        elif isinstance(m, nn.Linear):
            layers.append(t.Linear(m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.MaxPool2d):
            layers.append(t.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation))
        elif isinstance(m, nn.AvgPool2d):
            layers.append(t.AvgPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.ReLU):
            layers.append(t.ReLU())
        elif isinstance(m, nn.Flatten):
            layers.append(t.Flatten())
    twin = t.Sequential(*layers).to(getattr(torch, str(model.dtype)))
    assert list(twin.state_dict()) == list(model.state_dict())  # same names as torch
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opt", ["sgd", "sgd-nesterov", "adam", "adam-amsgrad"])
def test_training_steps_match_torch(dtype, opt):
    torch = pytest.importorskip("torch")
    model = small_cnn(dtype, rng=4)
    twin = _torch_twin(model, torch)
    make = {
        "sgd": lambda ps, o: o.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
        "sgd-nesterov": lambda ps, o: o.SGD(ps, lr=0.1, momentum=0.8, nesterov=True),
        "adam": lambda ps, o: o.Adam(ps, lr=0.01, weight_decay=1e-3),
        "adam-amsgrad": lambda ps, o: o.Adam(ps, lr=0.01, betas=(0.8, 0.9), amsgrad=True),
    }[opt]
    ours_opt, their_opt = (
        make(list(model.parameters()), optim),
        make(twin.parameters(), torch.optim),
    )
    loss_fn, their_loss_fn = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    tight = np.dtype(dtype) == np.float64
    rtol, atol = (1e-10, 1e-12) if tight else (2e-4, 2e-6)
    rng = np.random.default_rng(5)
    for step in range(3):  # several steps, so that momentum and Adam's moments matter
        x = rng.standard_normal((8, 2, 8, 8)).astype(dtype)
        y = rng.integers(0, 5, size=8)
        loss = loss_fn(model(x), y)
        ours_opt.zero_grad()
        model.backward(loss_fn.backward())
        ours_opt.step()
        their_opt.zero_grad()
        their_loss = their_loss_fn(twin(torch.from_numpy(x)), torch.from_numpy(y))
        their_loss.backward()
        their_opt.step()
        np.testing.assert_allclose(loss, their_loss.item(), rtol=rtol, atol=atol)
        for (name, p), tp in zip(model.named_parameters(), twin.parameters()):
            np.testing.assert_allclose(
                p.grad,
                tp.grad.numpy(),
                rtol=rtol,
                atol=atol,
                err_msg=f"grad of {name}, step {step}",
            )
            np.testing.assert_allclose(
                p.data,
                tp.detach().numpy(),
                rtol=rtol,
                atol=atol,
                err_msg=f"{name} after step {step}",
            )


def test_default_init_is_torch_kaiming_uniform():
    conv = nn.Conv2d(6, 8, (3, 5), groups=2, rng=0)
    fan_in = 3 * 3 * 5
    for p in (conv.weight, conv.bias):
        assert p.dtype == np.float32
        assert np.all(np.abs(p.data) <= 1 / np.sqrt(fan_in))
    assert np.abs(conv.weight.data).max() > 0.9 / np.sqrt(fan_in)
    lin = nn.Linear(400, 300, rng=0)
    b = 1 / np.sqrt(400)
    assert np.all(np.abs(lin.weight.data) <= b) and np.all(np.abs(lin.bias.data) <= b)
    np.testing.assert_allclose(lin.weight.data.std(), b / np.sqrt(3), rtol=0.02)  # U(-b, b)
    # seeded: same seed, same weights; a shared Generator gives each layer its own draws
    assert np.array_equal(nn.Linear(4, 3, rng=7).weight.data, nn.Linear(4, 3, rng=7).weight.data)
    g = np.random.default_rng(7)
    assert not np.array_equal(
        nn.Linear(4, 3, rng=g).weight.data, nn.Linear(4, 3, rng=g).weight.data
    )
    torch = pytest.importorskip("torch")
    tl = torch.nn.Linear(400, 300)
    assert abs(tl.weight.detach().numpy().std() - lin.weight.data.std()) < 0.02 * b


def test_float64_on_request_and_astype():
    model = small_cnn(np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model(rand(2, 2, 8, 8)).dtype == np.float64
    model.astype(np.float32)
    assert model.dtype == np.float32
    assert model(rand(2, 2, 8, 8).astype(np.float32)).dtype == np.float32
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Linear(2, 2, dtype=np.int32)


def test_gradients_accumulate_until_zero_grad():
    layer = nn.Linear(3, 2, dtype=np.float64, rng=0)
    x, g = rand(4, 3), rand(4, 2)
    layer(x)
    layer.backward(g)
    first = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * first)
    layer.zero_grad(set_to_none=False)
    assert np.all(layer.weight.grad == 0)
    layer.zero_grad()
    assert layer.weight.grad is None


def test_train_eval_propagate():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.Sequential(nn.Dropout(0.5), nn.ReLU()))
    assert all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


# -- state_dict ----------------------------------------------------------------------------------
def test_state_dict_round_trip(tmp_path):
    model = small_cnn(np.float32, rng=1)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"]
    x = rand(3, 2, 8, 8).astype(np.float32)
    expected = model(x)
    path = tmp_path / "w.npz"
    np.savez(path, **model.state_dict())
    other = small_cnn(np.float32, rng=2)
    assert not np.array_equal(other(x), expected)
    with np.load(path) as npz:
        other.load_state_dict(npz)
    assert np.array_equal(other(x), expected)
    # the convenience pair, and a copy that does not alias
    model.save(tmp_path / "m.npz")
    third = small_cnn(np.float32, rng=3).load(tmp_path / "m.npz")
    assert np.array_equal(third(x), expected)
    state = model.state_dict()
    state["0.weight"][...] = 0
    assert np.array_equal(model(x), expected)


def test_load_state_dict_errors_leave_model_unchanged():
    model = small_cnn(np.float32, rng=1)
    before = model.state_dict()
    state = model.state_dict()
    del state["3.bias"]
    state["extra"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"missing keys \['3.bias'\].*unexpected keys \['extra'\]"):
        model.load_state_dict(state)
    state = {k: v + 1 for k, v in before.items()}
    state["7.weight"] = np.zeros((5, 23))
    with pytest.raises(ValueError, match=r"'7.weight'.*\(5, 23\).*\(5, 24\)"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        assert np.array_equal(v, before[k])
    model.load_state_dict({"0.bias": np.ones(4)}, strict=False)
    assert np.array_equal(model[0].bias.data, np.ones(4, np.float32))


# -- Module.load on forged and corrupt files --------------------------------------------------
def test_load_npz_bomb_is_refused_before_reading_the_data(tmp_path):
    # 'bias' declares 16 Mi float32 (64 MiB of zeros, a 64 KB deflated member) where the
    # parameter has 4: refused from the .npy header, before any data is decompressed.
    path = tmp_path / "bomb.npz"
    write_npz(path, {"weight": np.zeros((4, 3), np.float32)}, "bias", (16 * MB,))
    assert path.stat().st_size < MB
    growth, message = peak_memory_growth(
        "from fastconv import nn; model = nn.Linear(3, 4)", f"model.load({str(path)!r})"
    )
    assert growth < 16 * MB, f"peak memory grew by {growth / MB:.0f} MiB"
    assert message.startswith("ValueError") and str(path) in message
    assert "entry 'bias' has shape (16777216,) but a parameter of shape (4,)" in message


def test_load_round_trips_any_layout_and_byte_order(tmp_path):
    model = nn.Linear(3, 4, rng=0)
    w = np.asfortranarray(np.arange(12.0).reshape(4, 3)).astype(">f8")
    np.savez(tmp_path / "m.npz", weight=w, bias=np.arange(4, dtype=np.int16))
    model.load(tmp_path / "m.npz")
    assert model.weight.data.dtype == np.float32 and model.bias.data.dtype == np.float32
    np.testing.assert_array_equal(model.weight.data, np.arange(12.0).reshape(4, 3))
    np.testing.assert_array_equal(model.bias.data, np.arange(4))
    with open(tmp_path / "m.npz", "rb") as f:  # an open file, as np.load accepts
        np.testing.assert_array_equal(model.load(f).bias.data, np.arange(4))
    # compressed archives too
    np.savez_compressed(tmp_path / "c.npz", weight=np.ones((4, 3)), bias=np.ones(4))
    np.testing.assert_array_equal(model.load(str(tmp_path / "c.npz")).weight.data, 1)


def _saved(tmp_path):
    model = nn.Linear(3, 4, rng=0)
    model.save(tmp_path / "m.npz")
    return model, tmp_path / "m.npz"


def test_load_errors_name_the_file_and_leave_the_model_unchanged(tmp_path):
    model, path = _saved(tmp_path)
    data = path.read_bytes()
    before = model.state_dict()
    cases = []
    for name, content in [
        ("garbage.npz", b"this is not an archive"),
        ("truncated.npz", data[: len(data) // 2]),
        ("cut.npz", data[:-30]),  # the end of the central directory is missing
    ]:
        (tmp_path / name).write_bytes(content)
        cases.append((tmp_path / name, "not a fastconv weights file"))
    # a flipped data byte: the archive's CRC does not match
    i = data.index(b"\x93NUMPY", data.index(b"bias.npy")) + 128 + 4
    bad = bytearray(data)
    bad[i] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(bad))
    cases.append((tmp_path / "crc.npz", "entry 'bias' is truncated or corrupt.*CRC"))
    # an object array is never unpickled
    np.savez(tmp_path / "obj.npz", weight=np.array([[None] * 3] * 4, dtype=object),
             bias=np.zeros(4))
    cases.append((tmp_path / "obj.npz", "entry 'weight' has dtype object"))
    # text where numbers are expected
    np.savez(tmp_path / "txt.npz", weight=np.full((4, 3), "x"), bias=np.zeros(4))
    cases.append((tmp_path / "txt.npz", "entry 'weight' has dtype <U1"))
    # names that do not match
    np.savez(tmp_path / "names.npz", weight=np.zeros((4, 3)), b=np.zeros(4))
    cases.append((tmp_path / "names.npz",
                  r"missing keys \['bias'\], unexpected keys \['b'\]"))
    for bad_path, match in cases:
        with pytest.raises(ValueError, match=match) as exc:
            model.load(bad_path)
        assert str(bad_path) in str(exc.value), exc.value
        for k, v in model.state_dict().items():
            assert np.array_equal(v, before[k])
    model.load(tmp_path / "names.npz", strict=False)  # 'weight' only
    assert np.array_equal(model.weight.data, np.zeros((4, 3)))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        model.load(tmp_path / "missing.npz")
    model.save(tmp_path / "noext")  # written as noext.npz, as np.savez does
    with pytest.raises(FileNotFoundError, match=r"no such file: .*noext \(but .*noext.npz exists"):
        model.load(tmp_path / "noext")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        model.load(tmp_path)


# -- errors --------------------------------------------------------------------------------------
def test_wrong_input_shape_errors_name_layer_and_shapes():
    conv = nn.Conv2d(1, 16, 3, padding=1, rng=0)
    with pytest.raises(
        ValueError, match=r"Conv2d\(1, 16, kernel_size=\(3, 3\).*\(N, 1, H, W\).*\(4, 3, 8, 8\)"
    ):
        conv(np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d\(1, 4.*\(1, 1, 2, 2\).*output size"):
        nn.Conv2d(1, 4, 5, rng=0)(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(
        ValueError, match=r"Linear\(in_features=128, out_features=10.*\(\.\.\., 128\).*\(2, 64\)"
    ):
        nn.Linear(128, 10, rng=0)(np.zeros((2, 64), np.float32))
    with pytest.raises(
        ValueError, match=r"MaxPool2d\(kernel_size=\(2, 2\).*\(N, C, H, W\).*\(8, 8\)"
    ):
        nn.MaxPool2d(2)(np.zeros((8, 8), np.float32))
    model = small_cnn(np.float32)
    with pytest.raises(ValueError, match=r"Sequential layer 0: Conv2d\(2, 4.*got \(5, 1, 8, 8\)"):
        model(np.zeros((5, 1, 8, 8), np.float32))
    with pytest.raises(
        ValueError, match=r"Sequential layer 7: Linear\(in_features=24.*got \(5, 54\)"
    ):
        model(np.zeros((5, 2, 12, 12), np.float32))


def test_dtype_errors():
    conv = nn.Conv2d(1, 2, 3, rng=0)
    with pytest.raises(
        TypeError, match=r"Conv2d.*input has dtype float64 but the parameters are float32"
    ):
        conv(np.zeros((1, 1, 5, 5)))
    with pytest.raises(TypeError, match=r"ReLU.*float32 or float64, got uint8"):
        nn.ReLU()(np.zeros((2, 2), np.uint8))


def test_backward_errors():
    with pytest.raises(RuntimeError, match=r"Linear.*backward\(\) called before forward\(\)"):
        nn.Linear(2, 3, rng=0).backward(np.zeros((1, 3), np.float32))
    relu = nn.ReLU()
    relu(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"ReLU.*grad_output has shape \(3, 2\).*\(2, 3\)"):
        relu.backward(np.zeros((3, 2), np.float32))


def test_cross_entropy_errors():
    loss_fn = nn.CrossEntropyLoss()
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"target label 4 is outside \[0, 4\)"):
        loss_fn(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"target has shape \(2,\).*\(3, 4\)"):
        loss_fn(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="integer class labels"):
        loss_fn(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss("avg")


def test_constructor_errors():
    with pytest.raises(ValueError, match="groups=3"):
        nn.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(1, 1, 0)
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)
    with pytest.raises(TypeError, match="rng"):
        nn.Linear(1, 1, rng="seed")
    with pytest.raises(TypeError, match="argument 1"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_repr():
    r = repr(small_cnn(np.float32))
    assert "(0): Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))" in r
    assert "(7): Linear(in_features=24, out_features=5, bias=True)" in r


# -- softmax / log_softmax -----------------------------------------------------------------------
def test_softmax_log_softmax():
    x = np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]], dtype=np.float32)
    s, ls = F.softmax(x, dim=1), F.log_softmax(x, dim=1)
    assert s.dtype == ls.dtype == np.float32 and np.all(np.isfinite(ls[1]))
    np.testing.assert_allclose(s.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(ls[0], [0, -1e4, -2e4])
    np.testing.assert_allclose(np.exp(ls), s, rtol=1e-6)
    np.testing.assert_allclose(F.softmax(x.T, dim=0), s.T)
    with pytest.raises(ValueError, match="dim"):
        F.softmax(x, dim=2)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.log_softmax(np.array([1, 2]))
    torch = pytest.importorskip("torch")
    special = np.array([[-np.inf, 0, 1], [-np.inf, -np.inf, -np.inf], [np.inf, 1, 2]])
    for arr in (rand(4, 7) * 10, special):
        for dim in (0, 1, -1):
            np.testing.assert_allclose(
                F.log_softmax(arr, dim), torch.log_softmax(torch.tensor(arr), dim).numpy()
            )
            np.testing.assert_allclose(
                F.softmax(arr, dim), torch.softmax(torch.tensor(arr), dim).numpy()
            )


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding, shape", [(1, (2, 2, 6, 5)), ((2, 1), (1, 2, 7, 6)),
                                            ("same", (2, 6, 5))])
def test_conv2d_padding_modes_gradients(mode, padding, shape):
    layer = nn.Conv2d(2, 3, (3, 2), padding=padding, padding_mode=mode, dtype=np.float64, rng=2)
    check_module_grads(layer, rand(*shape))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv2d_padding_modes_match_torch(mode):
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(3, 4, 3, padding=(1, 2), dilation=(1, 2), padding_mode=mode,
                      dtype=np.float64, rng=3)
    ref = torch.nn.Conv2d(3, 4, 3, padding=(1, 2), dilation=(1, 2), padding_mode=mode,
                          dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.weight.data))
        ref.bias.copy_(torch.from_numpy(layer.bias.data))
    x = rand(2, 3, 7, 9, seed=4)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out = layer(x)
    out_t = ref(xt)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rand(*out.shape, seed=5)
    gi = layer.backward(g)
    out_t.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gi, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(padding_mode="mirror"), "padding_mode"),
    (dict(padding_mode=None), "padding_mode"),
    (dict(padding="full"), "padding"),
    (dict(padding="same", stride=2), "stride"),
])
def test_conv2d_padding_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.Conv2d(2, 3, 3, **kwargs)


# -- the layers follow the functional API's argument rules ---------------------------------------
def _outcome(call):
    """What call() returns, or the TypeError/ValueError it raises."""
    try:
        return call()
    except (TypeError, ValueError) as exc:
        return exc


def assert_same_outcome(layer_call, functional_call, name):
    """The layer (construction and forward) and the functional accept alike with equal results,
    or reject alike: the same error type, the layer's message holding the functional's, which
    names the argument ``name``."""
    got, want = _outcome(layer_call), _outcome(functional_call)
    if isinstance(want, Exception):
        assert isinstance(got, Exception), f"the layer accepts what the functional rejects: {want}"
        # a forward error quotes the layer's normalised arguments: compare up to the first colon
        assert type(got) is type(want) and str(want).split(":")[0] in str(got), (got, want)
        assert name in str(want) and name in str(got), (got, want)
    else:
        assert not isinstance(got, Exception), f"the layer rejects what the functional accepts: {got}"
        assert name is None
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


CONV_X_SHAPE = (2, 4, 7, 8)   # in_channels 4; the layers below have 6 output channels


@pytest.mark.parametrize("kwargs, name", [
    (dict(), None),
    (dict(stride=2), None),
    (dict(stride=(1, 2)), None),
    (dict(stride=[2, 1]), None),
    (dict(stride=np.int64(2)), None),
    (dict(stride=np.array([1, 2])), None),
    (dict(stride=2**63 - 1), None),
    (dict(padding=1), None),
    (dict(padding=(2, 0)), None),
    (dict(padding="valid"), None),
    (dict(padding="same"), None),
    (dict(padding="same", dilation=(1, 3)), None),
    (dict(dilation=2), None),
    (dict(dilation=(2, 1)), None),
    (dict(groups=2), None),
    (dict(groups=np.int32(2)), None),
    (dict(stride=(2,)), None),
    (dict(padding=[1]), None),
    (dict(stride=0), "stride"),
    (dict(stride=-1), "stride"),
    (dict(stride=(1, 2, 3)), "stride"),
    (dict(stride=1.5), "stride"),
    (dict(stride=True), "stride"),
    (dict(stride="2"), "stride"),
    (dict(stride=2**63), "stride"),
    (dict(padding=-1), "padding"),
    (dict(padding=(0, -1)), "padding"),
    (dict(padding=1.0), "padding"),
    (dict(padding="full"), "padding"),
    (dict(padding="SAME"), "padding"),
    (dict(padding="same", stride=2), "stride"),
    (dict(padding=(0, 2**40)), "padding"),     # the output would not fit in memory
    (dict(dilation=0), "dilation"),
    (dict(dilation=(1, 0)), "dilation"),
    (dict(dilation=4), "dilation"),            # the output would be empty: known at forward
    (dict(groups=0), "groups"),
    (dict(groups=3), "groups"),                # does not divide the 4 input channels
    (dict(groups=4), "groups"),                # does not divide the 6 output channels
    (dict(groups=2.0), "groups"),
    (dict(groups=True), "groups"),
])
def test_conv2d_layer_follows_functional_rules(kwargs, name):
    x = rand(*CONV_X_SHAPE, seed=6)
    groups = kwargs.get("groups", 1)
    groups = int(groups) if isinstance(groups, (int, np.integer)) and groups > 0 else 1
    weight, bias = rand(6, 4 // groups, 3, 2, seed=7), rand(6, seed=8)

    def layer_call():
        layer = nn.Conv2d(4, 6, (3, 2), dtype=np.float64, **kwargs)
        layer.weight.data[...], layer.bias.data[...] = weight, bias
        return [layer(x)]

    assert_same_outcome(layer_call, lambda: [F.conv2d(x, weight, bias, **kwargs)], name)


def test_conv2d_layer_rejects_a_weight_larger_than_memory():
    with pytest.raises(ValueError, match=r"the weight of shape \(1, 1, 2147483648, 1048576\)"):
        nn.Conv2d(1, 1, (2**31, 2**20))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("kernel_size, dilation", [((2, 3), 1), ((4, 3), (1, 2)), (3, 2)])
def test_conv2d_same_padding_modes_match_torch(mode, kernel_size, dilation):
    # an even kernel extent pads one more row/column at the bottom/right, in every mode
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(2, 3, kernel_size, padding="same", dilation=dilation, padding_mode=mode,
                      dtype=np.float64, rng=3)
    ref = torch.nn.Conv2d(2, 3, kernel_size, padding="same", dilation=dilation,
                          padding_mode=mode, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.weight.data))
        ref.bias.copy_(torch.from_numpy(layer.bias.data))
    x = rand(2, 2, 7, 9, seed=4)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out, out_t = layer(x), ref(xt)
    assert out.shape == x.shape[:1] + (3,) + x.shape[2:]
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rand(*out.shape, seed=5)
    out_t.backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


POOL_X_SHAPE = (2, 3, 7, 6)

# hyper-parameters every pooling shares: (kwargs, the argument named by the error or None)
POOL_CASES = [
    (dict(kernel_size=2), None),
    (dict(kernel_size=(2,)), None),                # a 1-sequence is an int, as in torch
    (dict(kernel_size=[2, 3]), None),
    (dict(kernel_size=np.int64(3)), None),
    (dict(kernel_size=np.array([2, 3])), None),
    (dict(kernel_size=2, stride=()), None),        # empty: the kernel size, as in torch
    (dict(kernel_size=2, stride=(1,)), None),
    (dict(kernel_size=3, stride=(1, 2)), None),
    (dict(kernel_size=3, stride=2**63 - 1), None),
    (dict(kernel_size=3, padding=(1,)), None),
    (dict(kernel_size=(3, 2), padding=(1, 1)), None),
    (dict(kernel_size=2, ceil_mode=True), None),
    (dict(kernel_size=2, ceil_mode=np.bool_(True)), None),
    (dict(kernel_size=0), "kernel_size"),
    (dict(kernel_size=(0, 2)), "kernel_size"),
    (dict(kernel_size=(2, 2, 2)), "kernel_size"),
    (dict(kernel_size=()), "kernel_size"),
    (dict(kernel_size=2.0), "kernel_size"),
    (dict(kernel_size=True), "kernel_size"),
    (dict(kernel_size=2**63), "kernel_size"),
    (dict(kernel_size=8), "kernel"),               # the output would be empty: known at forward
    (dict(kernel_size=2, stride=0), "stride"),
    (dict(kernel_size=2, stride=(1, 0)), "stride"),
    (dict(kernel_size=2, stride=1.0), "stride"),
    (dict(kernel_size=3, padding=-1), "padding"),
    (dict(kernel_size=3, padding=2), "padding"),   # more than half the kernel
    (dict(kernel_size=3, padding=(1, 1, 1)), "padding"),
    (dict(kernel_size=2, ceil_mode=1), "ceil_mode"),
    (dict(kernel_size=2, ceil_mode=None), "ceil_mode"),
]


def assert_pool_layer_is_functional(layer_class, kwargs, functional_call, name):
    """The pooling layer built with ``kwargs`` gives what ``functional_call(x)`` gives (output
    and input gradient for a gradient of ones), or fails as it does, naming ``name``."""
    x = rand(*POOL_X_SHAPE, seed=6)

    def layer_call():
        layer = layer_class(**kwargs)
        out = layer(x)
        return [out, layer.backward(np.ones_like(out))]

    assert_same_outcome(layer_call, lambda: functional_call(x), name)


@pytest.mark.parametrize("kwargs, name", POOL_CASES + [
    (dict(kernel_size=2, dilation=(2,)), None),
    (dict(kernel_size=(2, 3), dilation=(1, 2), padding=1), None),
    (dict(kernel_size=2, dilation=0), "dilation"),
    (dict(kernel_size=2, dilation=(2, -1)), "dilation"),
    (dict(kernel_size=2, return_indices=1), "return_indices"),  # the layer has no such argument
])
def test_max_pool2d_layer_follows_functional_rules(kwargs, name):
    if "return_indices" in kwargs:
        with pytest.raises(TypeError, match="return_indices"):
            nn.MaxPool2d(**kwargs)
        return
    def functional_call(x):
        out, idx = F.max_pool2d(x, **kwargs, return_indices=True)
        return [out, F.max_pool2d_backward(np.ones_like(out), idx, x.shape)]

    assert_pool_layer_is_functional(nn.MaxPool2d, kwargs, functional_call, name)


def test_max_pool2d_layer_rejects_windows_of_padding_only_as_functional():
    x = rand(1, 2, 1, 5)
    kwargs = dict(kernel_size=(2, 1), dilation=(2, 1), padding=(1, 0))
    assert_same_outcome(lambda: [nn.MaxPool2d(**kwargs)(x)],
                        lambda: [F.max_pool2d(x, **kwargs)], "holds no input element")


@pytest.mark.parametrize("kwargs, name", POOL_CASES + [
    (dict(kernel_size=3, padding=1, count_include_pad=False), None),
    (dict(kernel_size=3, divisor_override=5), None),
    (dict(kernel_size=3, divisor_override=-2), None),
    (dict(kernel_size=3, divisor_override=np.int64(4)), None),
    (dict(kernel_size=3, count_include_pad=0), "count_include_pad"),
    (dict(kernel_size=3, divisor_override=0), "divisor_override"),
    (dict(kernel_size=3, divisor_override=2.5), "divisor_override"),
    (dict(kernel_size=3, divisor_override=2**63), "divisor_override"),
])
def test_avg_pool2d_layer_follows_functional_rules(kwargs, name):
    def functional_call(x):
        out = F.avg_pool2d(x, **kwargs)
        return [out, F.avg_pool2d_backward(np.ones_like(out), x.shape, **kwargs)]

    assert_pool_layer_is_functional(nn.AvgPool2d, kwargs, functional_call, name)


@pytest.mark.parametrize("layer, kwargs, name", [
    (nn.MaxPool2d, dict(kernel_size=(2,)), None),
    (nn.MaxPool2d, dict(kernel_size=0), "kernel_size"),
    (nn.MaxPool2d, dict(kernel_size=3, padding=2), "padding"),
    (nn.MaxPool2d, dict(kernel_size=2, ceil_mode=1), "ceil_mode"),
    (nn.AvgPool2d, dict(kernel_size=2, divisor_override=0), "divisor_override"),
    (nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=3, groups=3), "groups"),
    (nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=3, padding="same", stride=2),
     "stride"),
    (nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=3, dilation=(1, 2, 3)), "dilation"),
    (nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=(3,), dilation=(2,)), None),
])
def test_layers_check_hyperparameters_at_construction(layer, kwargs, name):
    # a layer fails where it is built, as torch's do, not at its first forward
    if name is None:
        layer(**kwargs)
        return
    with pytest.raises((TypeError, ValueError), match=name):
        layer(**kwargs)


# -- adaptive pooling ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, (3, 4), (None, 2), (9, 8), (2,)])
def test_adaptive_avg_pool2d_gradients(size):
    check_module_grads(nn.AdaptiveAvgPool2d(size), rand(2, 3, 6, 7))


@pytest.mark.parametrize("size", [1, (3, 4), (4, None), (9, 8)])
def test_adaptive_max_pool2d_gradients(size):
    # distinct values far apart: no ties and no argmax switch within +-eps; (9, 8) overlaps bins
    x = np.random.default_rng(3).permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7) * 0.01
    check_module_grads(nn.AdaptiveMaxPool2d(size), x)


def test_adaptive_pool_layers_follow_functional_rules():
    x = rand(2, 3, 7, 5, seed=4)
    for size in [1, (2, 3), (None, 4), (9,)]:
        layer = nn.AdaptiveAvgPool2d(size)
        out = layer(x)
        np.testing.assert_array_equal(out, F.adaptive_avg_pool2d(x, size))
        np.testing.assert_array_equal(layer.backward(np.ones_like(out)),
                                      F.adaptive_avg_pool2d_backward(np.ones_like(out), x.shape))
        layer = nn.AdaptiveMaxPool2d(size, return_indices=True)
        out, idx = layer(x)
        want, want_idx = F.adaptive_max_pool2d(x, size, return_indices=True)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(idx, want_idx)
        gi = F.adaptive_max_pool2d_backward(np.ones_like(out), idx, x.shape)
        np.testing.assert_array_equal(layer.backward(np.ones_like(out)), gi)
    assert repr(nn.AdaptiveAvgPool2d(1)) == "AdaptiveAvgPool2d(output_size=(1, 1))"
    assert nn.AdaptiveMaxPool2d((None, 3))(x[0]).shape == (3, 7, 3)  # unbatched


@pytest.mark.parametrize("layer, args, name", [
    (nn.AdaptiveAvgPool2d, (0,), "output_size"),
    (nn.AdaptiveAvgPool2d, ((2, 3, 4),), "output_size"),
    (nn.AdaptiveAvgPool2d, (2.0,), "output_size"),
    (nn.AdaptiveAvgPool2d, (None,), "output_size"),
    (nn.AdaptiveMaxPool2d, ((1, -1),), "output_size"),
    (nn.AdaptiveMaxPool2d, (2, 1), "return_indices"),
])
def test_adaptive_pool_layers_check_arguments_at_construction(layer, args, name):
    with pytest.raises((TypeError, ValueError), match=name):
        layer(*args)


def test_adaptive_pool_layer_errors_name_the_layer():
    layer = nn.AdaptiveAvgPool2d(2)
    with pytest.raises(RuntimeError, match=r"AdaptiveAvgPool2d.*backward\(\) called before"):
        layer.backward(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d.*expected input of shape"):
        layer(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"AdaptiveMaxPool2d.*non-zero C, H and W"):
        nn.AdaptiveMaxPool2d(2)(np.zeros((1, 1, 0, 4)))
    layer(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"grad_output has shape \(1, 1, 3, 3\)"):
        layer.backward(np.zeros((1, 1, 3, 3)))


def test_small_cnn_ending_in_global_average_pooling_trains():
    """conv -> ReLU -> AdaptiveAvgPool2d(1) -> Flatten -> Linear: gradients by backward() match
    finite differences through the whole model."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64, rng=0), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(3, 2, dtype=np.float64, rng=1))
    check_module_grads(model, rand(2, 2, 5, 6, seed=2), rtol=1e-5, atol=1e-7)
