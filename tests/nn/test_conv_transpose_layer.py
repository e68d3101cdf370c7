"""fastconv.nn.ConvTranspose2d: finite-difference gradients (float64), torch's output_size rule,
init and state_dict, one forward/backward against torch.nn.ConvTranspose2d, errors."""
import math

import numpy as np
import pytest

import fastconv.functional as F
from fastconv import nn
from test_nn import check_module_grads, rand


@pytest.fixture(autouse=True)
def _one_thread():
    import fastconv

    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)


@pytest.mark.parametrize("kwargs, shape, output_size", [
    (dict(in_channels=3, out_channels=2, kernel_size=3), (2, 3, 4, 3), None),
    (dict(in_channels=2, out_channels=3, kernel_size=4, stride=2, padding=1), (2, 2, 3, 4),
     None),
    (dict(in_channels=4, out_channels=6, kernel_size=(2, 3), stride=(2, 1), groups=2,
          output_padding=(1, 0), dilation=(1, 2), bias=False), (1, 4, 3, 4), None),
    (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1), (2, 3, 3),
     (6, 5)),  # unbatched, output_size picks the output padding
])
def test_gradients(kwargs, shape, output_size):
    layer = nn.ConvTranspose2d(**kwargs, dtype=np.float64, rng=1)
    forward = layer.forward
    layer.forward = lambda x: forward(x, output_size=output_size)
    check_module_grads(layer, rand(*shape))


def test_output_size_picks_the_output_padding():
    layer = nn.ConvTranspose2d(2, 3, 3, stride=3, padding=1, rng=0)
    x = rand(1, 2, 4, 5).astype(np.float32)
    smallest = (4 - 1) * 3 - 2 + 2 + 1, (5 - 1) * 3 - 2 + 2 + 1
    for extra in ((0, 0), (1, 2), (2, 1)):
        size = (smallest[0] + extra[0], smallest[1] + extra[1])
        out = layer(x, output_size=size)
        want = F.conv_transpose2d(x, layer.weight.data, layer.bias.data, stride=3, padding=1,
                                  output_padding=extra)
        np.testing.assert_array_equal(out, want)
        assert layer(x, output_size=(1, 3) + size).shape == (1, 3) + size  # the whole shape
        gx = layer.backward(np.ones_like(out))  # the backward uses the same output padding
        assert gx.shape == x.shape
    assert layer(x[0], output_size=(3,) + smallest).shape == (3,) + smallest
    assert smallest == (10, 13)
    with pytest.raises(ValueError, match=r"ConvTranspose2d.*output_size of \(9, 13\).*from "
                                         r"\(10, 13\) to \(12, 15\)"):
        layer(x, output_size=(9, 13))
    with pytest.raises(ValueError, match=r"valid sizes range from \(10, 13\) to \(12, 15\)"):
        layer(x, output_size=(10, 16))
    with pytest.raises(ValueError, match="output_size must have 2 or 4 elements"):
        layer(x, output_size=(1, 10, 13))
    with pytest.raises(TypeError, match="output_size"):
        layer(x, output_size=(10.0, 13))


def test_init_and_state_as_torch():
    layer = nn.ConvTranspose2d(4, 6, (3, 2), groups=2, rng=0)
    assert layer.weight.shape == (4, 3, 3, 2) and layer.bias.shape == (6,)
    bound = 1 / math.sqrt(3 * 3 * 2)  # fan_in = out_channels // groups * kH * kW, as in torch
    for p in (layer.weight.data, layer.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.8 * bound
    assert list(layer.state_dict()) == ["weight", "bias"]
    other = nn.ConvTranspose2d(4, 6, (3, 2), groups=2, rng=1)
    other.load_state_dict(layer.state_dict())
    x = rand(2, 4, 3, 3).astype(np.float32)
    np.testing.assert_array_equal(other(x), layer(x))
    assert repr(layer) == "ConvTranspose2d(4, 6, kernel_size=(3, 2), stride=(1, 1), groups=2)"


def test_matches_torch():
    torch = pytest.importorskip("torch")
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=(1, 2))
    ours = nn.ConvTranspose2d(4, 6, 3, dtype=np.float64, rng=2, **kw)
    theirs = torch.nn.ConvTranspose2d(4, 6, 3, **kw).double()
    assert repr(ours) == repr(theirs)
    assert list(theirs.state_dict()) == list(ours.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = rand(2, 4, 5, 4)
    g = rand(2, 6, 10, 10, seed=1)
    out = ours(x)
    ours.zero_grad()
    gx = ours.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(groups=3), ValueError, "groups"),
    (dict(out_channels=5, groups=2), ValueError, "groups"),
    (dict(groups=1.5), TypeError, "groups"),
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(stride=0), ValueError, "stride"),
    (dict(padding="same"), ValueError, "padding"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(output_padding=2, stride=2), ValueError, "output_padding"),
    (dict(output_padding=-1), ValueError, "output_padding"),
    (dict(dilation=(1, 2, 3)), ValueError, "dilation"),
    (dict(padding_mode="reflect"), ValueError, "padding_mode"),
    (dict(in_channels=0), ValueError, "in_channels"),
    (dict(out_channels=2.0), TypeError, "out_channels"),
])
def test_constructor_errors_name_the_argument(kwargs, exc, name):
    args = dict(in_channels=4, out_channels=6, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        nn.ConvTranspose2d(**args)


def test_forward_errors():
    layer = nn.ConvTranspose2d(2, 3, 3, padding=2, rng=0)
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(2, 3.*\(N, 2, H, W\)"):
        layer(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(2, 3.*output size"):
        layer(np.zeros((1, 2, 1, 1), np.float32))
    with pytest.raises(TypeError, match="float64 but the parameters are float32"):
        layer(np.zeros((1, 2, 4, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.ConvTranspose2d(2, 3, 3, rng=0).backward(np.zeros((1, 3, 6, 6), np.float32))
