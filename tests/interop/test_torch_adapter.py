"""fastconv.torch: autograd Functions, modules and swap_modules against torch itself.

Runs only where torch is importable (torch is never a dependency of fastconv).
"""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as TF  # noqa: E402

import fastconv  # noqa: E402
import fastconv.functional  # noqa: E402
import fastconv.torch as fct  # noqa: E402


def rand(*shape, dtype=torch.float64, grad=True):
    return torch.randn(*shape, dtype=dtype).requires_grad_(grad)


# ----------------------------------------------------------------------------- gradcheck (float64)
CONV_CONFIGS = [  # input shape, weight shape, kwargs
    ((2, 3, 5, 5), (3, 3, 3, 3), dict()),
    ((2, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, padding=1, groups=2)),
    ((1, 3, 7, 7), (2, 3, 3, 3), dict(stride=(1, 2), padding=(2, 1), dilation=2)),
    ((2, 2, 5, 6), (3, 2, 2, 3), dict(padding="same", dilation=(2, 1))),
    ((3, 5, 5), (2, 3, 3, 3), dict(padding="valid")),  # unbatched
]


@pytest.mark.parametrize("xs, ws, kw", CONV_CONFIGS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_gradcheck(xs, ws, kw, bias, one_thread):
    x, w = rand(*xs), rand(*ws)
    b = rand(ws[0]) if bias else None
    fn = lambda x, w, b: fct.conv2d(x, w, b, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


MAX_CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=3, stride=1),  # overlapping windows: gradients add up
]


@pytest.mark.parametrize("kw", MAX_CONFIGS)
def test_max_pool2d_gradcheck(kw, one_thread):
    x = rand(2, 3, 7, 8)
    assert torch.autograd.gradcheck(lambda x: fct.max_pool2d(x, **kw), (x,))


AVG_CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=1, divisor_override=5),
]


@pytest.mark.parametrize("kw", AVG_CONFIGS)
def test_avg_pool2d_gradcheck(kw, one_thread):
    x = rand(2, 3, 7, 8)
    assert torch.autograd.gradcheck(lambda x: fct.avg_pool2d(x, **kw), (x,))


# ----------------------------------------------------------------------------- float32 vs torch
def forward_backward(fn, *inputs):
    inputs = [None if t is None else t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
    return out.detach(), [None if t is None else t.grad for t in inputs]


def assert_close_all(a, b, **tol):
    for u, v in zip(a, b):
        if u is None:
            assert v is None
        else:
            torch.testing.assert_close(u, v, **tol)


@pytest.mark.parametrize("xs, ws, kw", CONV_CONFIGS)
def test_conv2d_float32_matches_torch(xs, ws, kw):
    x, w, b = rand(*xs, dtype=torch.float32), rand(*ws, dtype=torch.float32), rand(ws[0], dtype=torch.float32)
    ours = forward_backward(lambda x, w, b: fct.conv2d(x, w, b, **kw), x, w, b)
    theirs = forward_backward(lambda x, w, b: TF.conv2d(x, w, b, **kw), x, w, b)
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[0], theirs[0], **tol)
    assert_close_all(ours[1], theirs[1], **tol)


@pytest.mark.parametrize("kw", MAX_CONFIGS)
def test_max_pool2d_float32_matches_torch(kw):
    x = rand(2, 3, 7, 8, dtype=torch.float32)
    out, idx = fct.max_pool2d(x, **kw, return_indices=True)
    ref, ref_idx = TF.max_pool2d(x, **kw, return_indices=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert idx.dtype == torch.int64 and torch.equal(idx, ref_idx)
    assert not idx.requires_grad
    ours = forward_backward(lambda x: fct.max_pool2d(x, **kw), x)
    theirs = forward_backward(lambda x: TF.max_pool2d(x, **kw), x)
    assert_close_all(ours[1], theirs[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw", AVG_CONFIGS)
def test_avg_pool2d_float32_matches_torch(kw):
    x = rand(2, 3, 7, 8, dtype=torch.float32)
    ours = forward_backward(lambda x: fct.avg_pool2d(x, **kw), x)
    theirs = forward_backward(lambda x: TF.avg_pool2d(x, **kw), x)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-6, atol=1e-6)
    assert_close_all(ours[1], theirs[1], rtol=1e-6, atol=1e-6)


def test_non_contiguous_inputs_and_grads():
    x = rand(2, 8, 6, 3, dtype=torch.float32).permute(0, 1, 3, 2)[:, ::2]  # strided view
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = rand(4, 4, 3, 3, dtype=torch.float32)
    for inp in (x, xc):
        out = fct.conv2d(inp, w, padding=1)
        torch.testing.assert_close(out, TF.conv2d(inp, w, padding=1), rtol=1e-5, atol=1e-5)
        out.sum().backward()  # the gradient arrives as an expanded (stride 0) tensor
    torch.testing.assert_close(xc.grad, torch.autograd.grad(TF.conv2d(xc, w, padding=1).sum(), xc)[0],
                               rtol=1e-5, atol=1e-5)


def test_needs_input_grad_is_respected(monkeypatch):
    seen = {}
    real = fastconv.functional.conv2d_backward

    def spy(*args, needs, **kw):
        seen["needs"] = needs
        return real(*args, needs=needs, **kw)

    monkeypatch.setattr(fastconv.functional, "conv2d_backward", spy)
    x, w = rand(1, 2, 5, 5, grad=False), rand(3, 2, 3, 3)
    fct.conv2d(x, w, rand(3, grad=False)).sum().backward()
    assert seen["needs"] == (False, True, False)
    assert w.grad is not None


def test_double_backward_is_refused():
    x, w = rand(1, 2, 5, 5), rand(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(fct.conv2d(x, w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad((fct.max_pool2d(x, 2) ** 2).sum(), x, create_graph=True)
    # without create_graph, or where nothing needs a second derivative, all is well
    torch.autograd.grad(fct.conv2d(x, w).sum(), x)
    torch.autograd.grad(fct.avg_pool2d(x, 2).sum(), x, create_graph=True)


# ----------------------------------------------------------------------------- no_grad, zero-copy
def test_no_grad_and_inference_mode():
    x, w, b = rand(2, 3, 6, 6), rand(4, 3, 3, 3), rand(4)
    with_grad = fct.conv2d(x, w, b, padding=1)
    assert with_grad.requires_grad and with_grad.grad_fn is not None
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            out = fct.conv2d(x, w, b, padding=1)
            pooled = fct.max_pool2d(out, 2)
            avg = fct.avg_pool2d(out, 2)
        assert not out.requires_grad and out.grad_fn is None and not pooled.requires_grad
        assert not avg.requires_grad
        torch.testing.assert_close(out, with_grad.detach(), rtol=0, atol=0)


def test_zero_copy_at_the_boundary(monkeypatch):
    captured = {}
    real = fastconv.functional.conv2d

    def spy(x, w, b, *args):
        captured["x"] = x
        captured["out"] = real(x, w, b, *args)
        return captured["out"]

    monkeypatch.setattr(fastconv.functional, "conv2d", spy)
    x = torch.randn(2, 3, 8, 8)[:, :, 1:, ::2]  # a non-contiguous view: still no copy
    out = fct.conv2d(x, torch.randn(4, 3, 3, 3))
    assert captured["x"].__array_interface__["data"][0] == x.data_ptr()
    assert captured["x"].strides == tuple(s * 4 for s in x.stride())
    assert out.data_ptr() == captured["out"].__array_interface__["data"][0]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("dtype", [torch.float16, torch.int64, torch.complex64])
def test_unsupported_dtypes_are_refused(dtype):
    x = torch.ones(1, 2, 5, 5, dtype=dtype)
    w = torch.ones(3, 2, 3, 3, dtype=dtype)
    with pytest.raises(TypeError, match=rf"input has dtype {dtype}.*float32 and torch.float64"):
        fct.conv2d(x, w)
    with pytest.raises(TypeError, match="float32 and torch.float64"):
        fct.max_pool2d(x, 2)
    with pytest.raises(TypeError, match="float32 and torch.float64"):
        fct.avg_pool2d(x, 2)


def test_mixed_dtypes_and_non_tensors_are_refused():
    with pytest.raises(TypeError, match="dtype"):
        fct.conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fct.conv2d(np.ones((1, 2, 5, 5)), torch.ones(3, 2, 3, 3))
    with pytest.raises(TypeError, match="dense"):
        fct.max_pool2d(torch.ones(1, 2, 4, 4).to_sparse(), 2)


def test_non_cpu_devices_are_refused():
    x = torch.ones(1, 2, 5, 5, device="meta")
    with pytest.raises(RuntimeError, match="input is on meta.*CPU only"):
        fct.conv2d(x, torch.ones(3, 2, 3, 3, device="meta"))
    with pytest.raises(RuntimeError, match="weight is on meta"):
        fct.conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3, device="meta"))
    with pytest.raises(RuntimeError, match="CPU only"):
        fct.max_pool2d(x, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_are_refused():  # pragma: no cover - no GPU in CI
    x = torch.ones(1, 2, 5, 5, device="cuda")
    with pytest.raises(RuntimeError, match="cuda.*CPU only"):
        fct.conv2d(x, torch.ones(3, 2, 3, 3, device="cuda"))


def test_fastconv_argument_errors_come_through():
    with pytest.raises(ValueError, match="groups"):
        fct.conv2d(torch.ones(1, 3, 5, 5), torch.ones(2, 3, 3, 3), groups=2)


# ----------------------------------------------------------------------------- modules and swap
class Block(nn.Conv2d):
    """A user subclass: may override forward, so swap_modules leaves it alone."""


def lenet(dtype=torch.float64):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(8, 16, 5, bias=False), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True),
        Block(16, 16, 1), nn.MaxPool2d(3, stride=1, padding=1),
        nn.Flatten(), nn.Linear(16 * 3 * 3, 10),
    ).to(dtype)


def test_swap_modules_changes_exactly_the_supported_layers():
    model = lenet()
    params = list(model.parameters())
    assert fct.swap_modules(model) is model
    kinds = [type(m) for m in model]
    assert kinds[0] is fct.Conv2d and kinds[2] is fct.MaxPool2d
    assert kinds[3] is nn.Conv2d  # padding_mode='reflect' stays on torch
    assert kinds[5] is fct.Conv2d and kinds[7] is fct.AvgPool2d and kinds[9] is fct.MaxPool2d
    assert kinds[8] is Block
    assert all(isinstance(m, nn.Conv2d) for m in (model[0], model[5]))  # still torch modules
    assert all(a is b for a, b in zip(params, model.parameters()))

    assert fct.unswap_modules(model) is model
    assert [type(m) for m in model] == [type(m) for m in lenet()]

    model.apply(fct.swap_modules)  # the equivalent spelling
    assert type(model[0]) is fct.Conv2d and type(model[7]) is fct.AvgPool2d
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fct.swap_modules([model])


def test_swap_leaves_unsupported_parameters_on_torch():
    half = nn.Conv2d(2, 2, 3).half()
    meta = nn.Conv2d(2, 2, 3, device="meta")
    fct.swap_modules(half)
    fct.swap_modules(meta)
    assert type(half) is nn.Conv2d and type(meta) is nn.Conv2d


@pytest.mark.parametrize("dtype", [torch.float16])
def test_a_swap_never_breaks_a_half_precision_model(dtype):
    # its convolutions stay on torch; its pooling layers are swapped (they have no parameters)
    # and, called with tensors fastconv does not take, compute on torch: torch's exact result
    original = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.AvgPool2d(2, ceil_mode=True)).to(dtype)
    swapped = fct.swap_modules(copy.deepcopy(original))
    assert type(swapped[0]) is nn.Conv2d and type(swapped[2]) is fct.MaxPool2d
    x = torch.randn(3, 2, 9, 9).to(dtype)
    assert torch.equal(swapped(x), original(x))
    assert swapped(x).dtype == dtype


def test_swapped_layers_leave_other_devices_and_dtypes_to_torch():
    # a model swapped in float32 on the CPU, then moved or called with other tensors
    layers = [fct.swap_modules(m) for m in (nn.Conv2d(2, 4, 3), nn.MaxPool2d(2),
                                             nn.AvgPool2d(2))]
    assert [type(m) for m in layers] == [fct.Conv2d, fct.MaxPool2d, fct.AvgPool2d]
    meta = torch.ones(1, 2, 6, 6, device="meta")
    for layer in layers:
        out = copy.deepcopy(layer).to("meta")(meta)
        assert out.device.type == "meta"
        half = torch.randn(1, 2, 6, 6).half()
        torch_layer = fct.unswap_modules(copy.deepcopy(layer)).half()
        assert torch.equal(copy.deepcopy(layer).half()(half), torch_layer(half))


def test_functions_take_a_one_int_sequence_as_torch_does():
    x, w = rand(1, 2, 9, 9, grad=False), rand(3, 2, 3, 3, grad=False)
    torch.testing.assert_close(fct.conv2d(x, w, stride=(2,), padding=[1], dilation=(2,)),
                               TF.conv2d(x, w, stride=(2,), padding=[1], dilation=(2,)))
    torch.testing.assert_close(fct.max_pool2d(x, (3,), stride=(2,), padding=(1,)),
                               TF.max_pool2d(x, (3,), stride=(2,), padding=(1,)))
    torch.testing.assert_close(fct.avg_pool2d(x, (3,), stride=[2], padding=(1,)),
                               TF.avg_pool2d(x, (3,), stride=[2], padding=(1,)))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_swapped_model_gives_the_same_outputs_and_grads(dtype, tol):
    original = lenet(dtype)
    swapped = fct.swap_modules(copy.deepcopy(original))
    x = torch.randn(4, 1, 20, 20, dtype=dtype)
    target = torch.randint(0, 10, (4,))
    results = []
    for model in (original, swapped):
        inp = x.clone().requires_grad_(True)
        loss = TF.cross_entropy(model(inp), target)
        loss.backward()
        results.append((loss.detach(), inp.grad, [p.grad for p in model.parameters()]))
    (l0, gx0, gp0), (l1, gx1, gp1) = results
    torch.testing.assert_close(l1, l0, rtol=tol, atol=tol)
    torch.testing.assert_close(gx1, gx0, rtol=tol, atol=tol)
    for a, b in zip(gp1, gp0):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), original(x), rtol=tol, atol=tol)


def test_optimizer_built_before_the_swap_keeps_training():
    model = lenet(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    fct.swap_modules(model)
    x, y = torch.randn(16, 1, 20, 20), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = TF.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_state_dict_compatibility():
    torch_model, fast_model = lenet(), fct.swap_modules(lenet())
    assert list(torch_model.state_dict()) == list(fast_model.state_dict())
    fast_model.load_state_dict(torch_model.state_dict(), strict=True)
    x = torch.randn(2, 1, 20, 20, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast_model(x), torch_model(x), rtol=1e-12, atol=1e-12)

    theirs = nn.Conv2d(3, 4, 3, groups=1, bias=True)
    ours = fct.Conv2d(3, 4, 3)
    assert isinstance(ours, nn.Conv2d) and repr(ours) == repr(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert list(ours.state_dict()) == ["weight", "bias"]


def test_modules_match_torch_modules():
    x = torch.randn(2, 3, 9, 9)
    for ours, theirs in [
        (fct.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1), None),
        (fct.Conv2d(3, 6, 3, padding="same", groups=3, bias=False), None),
        (fct.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), None),  # runs on torch
        (fct.MaxPool2d(3, 2, 1, ceil_mode=True), nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
        (fct.AvgPool2d(3, 2, 1, count_include_pad=False), nn.AvgPool2d(3, 2, 1, count_include_pad=False)),
    ]:
        if theirs is None:
            theirs = copy.deepcopy(ours)
            fct.unswap_modules(theirs)
            assert type(theirs) is nn.Conv2d
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    out, idx = fct.MaxPool2d(2, return_indices=True)(x)
    ref, ref_idx = nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(nn.MaxUnpool2d(2)(out, idx, output_size=x.shape),
                               nn.MaxUnpool2d(2)(ref, ref_idx, output_size=x.shape))


# ----------------------------------------------------------------------------- adaptive pooling
ADAPTIVE_SIZES = [1, (3, 4), (None, 2), (9, 11), [2, None]]


@pytest.mark.parametrize("size", ADAPTIVE_SIZES)
def test_adaptive_pool2d_gradcheck(size, one_thread):
    x = rand(2, 3, 7, 8)
    assert torch.autograd.gradcheck(lambda x: fct.adaptive_avg_pool2d(x, size), (x,))
    assert torch.autograd.gradcheck(lambda x: fct.adaptive_max_pool2d(x, size), (x,))


@pytest.mark.parametrize("size", ADAPTIVE_SIZES)
def test_adaptive_pool2d_float32_matches_torch(size):
    x = rand(2, 3, 7, 8, dtype=torch.float32)
    out, idx = fct.adaptive_max_pool2d(x, size, return_indices=True)
    ref, ref_idx = TF.adaptive_max_pool2d(x, size, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx) and not idx.requires_grad
    for ours, theirs in [(fct.adaptive_max_pool2d, TF.adaptive_max_pool2d),
                         (fct.adaptive_avg_pool2d, TF.adaptive_avg_pool2d)]:
        a = forward_backward(lambda x: ours(x, size), x)
        b = forward_backward(lambda x: theirs(x, size), x)
        torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-6)
        assert_close_all(a[1], b[1], rtol=1e-6, atol=1e-6)


def test_adaptive_pool_modules_match_torch_modules_and_swap():
    x = torch.randn(2, 3, 9, 10)
    for ours, theirs in [(fct.AdaptiveAvgPool2d((1, 1)), nn.AdaptiveAvgPool2d((1, 1))),
                         (fct.AdaptiveAvgPool2d((4, None)), nn.AdaptiveAvgPool2d((4, None))),
                         (fct.AdaptiveMaxPool2d(5), nn.AdaptiveMaxPool2d(5))]:
        assert isinstance(ours, type(theirs)) and repr(ours) == repr(theirs)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    out, idx = fct.AdaptiveMaxPool2d((3, 4), return_indices=True)(x)
    ref, ref_idx = nn.AdaptiveMaxPool2d((3, 4), return_indices=True)(x)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    layers = [fct.swap_modules(m) for m in (nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(2))]
    assert [type(m) for m in layers] == [fct.AdaptiveAvgPool2d, fct.AdaptiveMaxPool2d]
    half = torch.randn(1, 2, 6, 6).half()  # fastconv does not take it: computed on torch
    for layer in layers:
        torch_layer = fct.unswap_modules(copy.deepcopy(layer))
        assert type(torch_layer) in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
        assert torch.equal(layer(half), torch_layer(half))


def small_resnet_like(dtype):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d((5, 6)),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(16, 10)).to(dtype)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_swapped_model_ending_in_global_average_pooling_matches_torch(dtype, tol):
    original = small_resnet_like(dtype)
    swapped = fct.swap_modules(copy.deepcopy(original))
    assert type(swapped[5]) is fct.AdaptiveMaxPool2d and type(swapped[8]) is fct.AdaptiveAvgPool2d
    x = torch.randn(4, 3, 21, 19, dtype=dtype)
    target = torch.randint(0, 10, (4,))
    results = []
    for model in (original, swapped):
        inp = x.clone().requires_grad_(True)
        loss = TF.cross_entropy(model(inp), target)
        loss.backward()
        results.append((loss.detach(), inp.grad, [p.grad for p in model.parameters()]))
    (l0, gx0, gp0), (l1, gx1, gp1) = results
    torch.testing.assert_close(l1, l0, rtol=tol, atol=tol)
    torch.testing.assert_close(gx1, gx0, rtol=tol, atol=tol)
    for a, b in zip(gp1, gp0):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    fct.unswap_modules(swapped)
    assert [type(m) for m in swapped] == [type(m) for m in original]
