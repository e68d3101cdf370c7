"""fastconv.torch's transposed convolution: ConvTranspose2dFunction / conv_transpose2d against
torch's autograd, the ConvTranspose2d module (output_size, state_dict, what stays on torch) and
swap_modules on a small decoder. Runs only where torch is importable."""
import copy

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as TF  # noqa: E402

import fastconv  # noqa: E402
import fastconv.functional  # noqa: E402
import fastconv.torch as fct  # noqa: E402


def rand(*shape, dtype=torch.float64, grad=True):
    return torch.randn(*shape, dtype=dtype).requires_grad_(grad)


CONFIGS = [  # input shape, weight shape (C_in, C_out // groups, kH, kW), kwargs
    ((2, 3, 4, 4), (3, 2, 3, 3), dict()),
    ((2, 4, 3, 4), (4, 3, 4, 4), dict(stride=2, padding=1, groups=2)),
    ((1, 2, 3, 3), (2, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
                                      dilation=(1, 2))),
    ((1, 2, 3, 3), (2, 3, 3, 3), dict(stride=1, dilation=2, output_padding=1)),
    ((3, 4, 4), (3, 2, 2, 2), dict(stride=2)),  # unbatched
]


@pytest.mark.parametrize("xs, ws, kw", CONFIGS)
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(xs, ws, kw, bias, one_thread):
    x, w = rand(*xs), rand(*ws)
    b = rand(ws[1] * kw.get("groups", 1)) if bias else None
    fn = lambda x, w, b: fct.conv_transpose2d(x, w, b, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("xs, ws, kw", CONFIGS)
def test_float32_matches_torch(xs, ws, kw):
    x, w = rand(*xs, dtype=torch.float32), rand(*ws, dtype=torch.float32)
    b = rand(ws[1] * kw.get("groups", 1), dtype=torch.float32)
    results = []
    for fn in (fct.conv_transpose2d, TF.conv_transpose2d):
        y = fn(x, w, b, **kw)
        results.append((y,) + torch.autograd.grad(y, (x, w, b), torch.ones_like(y)))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_needs_input_grad_is_respected(monkeypatch):
    calls = []
    real = fastconv.functional.conv_transpose2d_backward

    def spy(*args, **kwargs):
        calls.append(kwargs["needs"])
        return real(*args, **kwargs)

    monkeypatch.setattr(fastconv.functional, "conv_transpose2d_backward", spy)
    x, w = rand(1, 2, 3, 3, grad=False), rand(2, 2, 2, 2)
    fct.conv_transpose2d(x, w, stride=2).sum().backward()
    assert calls == [(False, True, False)]


def test_double_backward_is_refused():
    x, w = rand(1, 2, 3, 3), rand(2, 2, 2, 2)
    y = fct.conv_transpose2d(x, w, stride=2)
    with pytest.raises(RuntimeError, match="conv_transpose2d.*double backward"):
        torch.autograd.grad(y.sum(), x, create_graph=True)


def test_argument_errors_come_through():
    x, w = rand(1, 2, 3, 3, grad=False), rand(2, 2, 2, 2, grad=False)
    with pytest.raises(ValueError, match="output_padding"):
        fct.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="padding"):
        fct.conv_transpose2d(x, w, padding="same")
    with pytest.raises(TypeError, match="float16"):
        fct.conv_transpose2d(x.half(), w.half())


def test_functional_takes_one_int_sequences_as_torch_does():
    x, w = rand(1, 2, 4, 4, grad=False), rand(2, 3, 3, 3, grad=False)
    kw = dict(stride=(2,), padding=[1], output_padding=(1,), dilation=(1,))
    torch.testing.assert_close(fct.conv_transpose2d(x, w, **kw), TF.conv_transpose2d(x, w, **kw))


# ------------------------------------------------------------------------------------- modules
def test_module_matches_torch_with_output_size():
    theirs = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    ours = copy.deepcopy(theirs)
    assert fct.swap_modules(ours) is ours and type(ours) is fct.ConvTranspose2d
    assert isinstance(ours, nn.ConvTranspose2d) and repr(ours) == repr(theirs)
    x = rand(2, 4, 5, 5)
    for size in (None, (9, 9), (10, 9), [2, 6, 10, 10]):
        torch.testing.assert_close(ours(x, output_size=size), theirs(x, output_size=size),
                                   rtol=1e-12, atol=1e-12)
        unbatched = size[-2:] if size else size
        torch.testing.assert_close(ours(x[0], unbatched), theirs(x[0], unbatched), rtol=1e-12,
                                   atol=1e-12)
    with pytest.raises(ValueError, match="requested an output size"):
        ours(x, output_size=(12, 12))


def test_module_state_dict_compatibility():
    theirs = nn.ConvTranspose2d(3, 4, 2, stride=2, bias=False)
    ours = fct.ConvTranspose2d(3, 4, 2, stride=2, bias=False)
    assert list(ours.state_dict()) == ["weight"] and repr(ours) == repr(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)


def test_module_leaves_what_fastconv_does_not_take_to_torch():
    layer = fct.swap_modules(nn.ConvTranspose2d(2, 4, 3, stride=2))
    assert type(layer) is fct.ConvTranspose2d
    half = torch.randn(1, 2, 5, 5).half()
    torch_layer = fct.unswap_modules(copy.deepcopy(layer)).half()
    assert type(torch_layer) is nn.ConvTranspose2d
    assert torch.equal(copy.deepcopy(layer).half()(half), torch_layer(half))
    meta = copy.deepcopy(layer).to("meta")(torch.ones(1, 2, 5, 5, device="meta"))
    assert meta.device.type == "meta"
    # parameters fastconv does not take: not swapped at all
    assert type(fct.swap_modules(nn.ConvTranspose2d(2, 2, 3).half())) is nn.ConvTranspose2d


# ------------------------------------------------------------------------ swap on a decoder
class Up(nn.Module):
    """A U-Net style up step: a 2x2 stride-2 transposed convolution, then a 3x3 convolution."""

    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x, size):
        return TF.relu(self.conv(self.up(x, output_size=size)))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(  # a DCGAN-style generator front: 1x1 -> 4x4 -> 8x8
            nn.ConvTranspose2d(8, 16, 4, stride=1, padding=0, bias=False), nn.ReLU(),
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU())
        self.up = Up(8, 4)
        self.head = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1,
                                       groups=2)

    def forward(self, z):
        h = self.stem(z)
        return torch.tanh(self.head(self.up(h, (17, 17))))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_swapped_decoder_gives_the_same_outputs_and_grads(dtype, tol):
    original = Decoder().to(dtype)
    swapped = fct.swap_modules(copy.deepcopy(original))
    kinds = [type(m) for m in swapped.modules()]
    assert kinds.count(fct.ConvTranspose2d) == 4 and kinds.count(fct.Conv2d) == 1
    assert nn.ConvTranspose2d not in kinds
    z = torch.randn(3, 8, 1, 1, dtype=dtype)
    results = []
    for model in (original, swapped):
        inp = z.clone().requires_grad_(True)
        out = model(inp)
        assert out.shape == (3, 2, 34, 34)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape)).sum()
        loss.backward()
        results.append((out.detach(), inp.grad, [p.grad for p in model.parameters()]))
    (o0, gz0, gp0), (o1, gz1, gp1) = results
    torch.testing.assert_close(o1, o0, rtol=tol, atol=tol)
    torch.testing.assert_close(gz1, gz0, rtol=tol, atol=tol)
    for a, b in zip(gp1, gp0):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    fct.unswap_modules(swapped)
    assert [type(m) for m in swapped.modules()] == [type(m) for m in original.modules()]
