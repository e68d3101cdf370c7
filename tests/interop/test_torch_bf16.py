"""fastconv.torch with bfloat16 tensors: a model moved to torch.bfloat16 swaps, computes on
fastconv's bfloat16 kernels (fastconv._core.bf16) and trains, with torch's bfloat16 results
within bfloat16's rounding; without ml_dtypes its layers stay on torch."""
import copy
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")
import torch.nn as nn  # noqa: E402

import fastconv  # noqa: E402
import fastconv.torch as fct  # noqa: E402
from conv_helpers import child_env  # noqa: E402


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(24, 40, 3, padding=1, groups=2), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True),
        nn.Conv2d(40, 40, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(40, 10)).to(torch.bfloat16)


def close_in_bf16(ours, theirs, what, sums=1):
    """Two bfloat16 results of the same computation in float32 with different summation orders:
    they may differ by the rounding of each to bfloat16 (2**-8 relative) plus float32 rounding
    of the sums, amplified through ``sums`` layers."""
    ours, theirs = ours.float(), theirs.float()
    scale = theirs.abs().max().clamp_min(1e-30)
    err = (ours - theirs).abs().max() / scale
    assert err <= sums * 2**-7, f"{what}: relative error {err.item():.3g}"


def test_a_bfloat16_model_swaps_and_matches_torch():
    model = small_cnn()
    swapped = fct.swap_modules(copy.deepcopy(model))
    assert [type(m) for m in swapped if not isinstance(m, (nn.ReLU, nn.Flatten, nn.Linear))] == [
        fct.Conv2d, fct.MaxPool2d, fct.Conv2d, fct.AvgPool2d, fct.Conv2d, fct.AdaptiveAvgPool2d]
    x = torch.randn(4, 3, 17, 17).to(torch.bfloat16)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xm = x.contiguous(memory_format=memory_format)
        ref, out = model(xm), swapped(xm)
        assert out.dtype == torch.bfloat16
        close_in_bf16(out, ref, f"output ({memory_format})", sums=4)
        first = swapped[:2](xm)  # a convolution's output keeps torch's memory format
        assert first.dtype == torch.bfloat16
        assert first.is_contiguous(memory_format=memory_format)
        ref.float().square().sum().backward()
        out.float().square().sum().backward()
        for (name, p), q in zip(model.named_parameters(), swapped.parameters()):
            assert q.grad.dtype == torch.bfloat16
            close_in_bf16(q.grad, p.grad, f"grad of {name} ({memory_format})", sums=8)
            p.grad = q.grad = None


def test_a_bfloat16_model_trains_like_torch():
    model = small_cnn()
    swapped = fct.swap_modules(copy.deepcopy(model))
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (model, swapped)]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 12, 12, generator=gen).to(torch.bfloat16)  # one batch, fitted
    y = torch.randint(0, 10, (8,), generator=gen)
    losses = {0: [], 1: []}
    for step in range(6):
        for i, (m, opt) in enumerate(zip((model, swapped), opts)):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x).float(), y)
            loss.backward()
            opt.step()
            losses[i].append(loss.item())
    np.testing.assert_allclose(losses[1], losses[0], rtol=0.05)
    assert losses[1][-1] < losses[1][0]
    for (name, p), q in zip(model.named_parameters(), swapped.parameters()):
        assert q.dtype == torch.bfloat16
        close_in_bf16(q, p, f"trained {name}", sums=4)


def test_a_bfloat16_model_with_a_transposed_convolution():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(4, 16, 3, stride=2, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(16, 4, 4, stride=2, padding=1)).to(torch.bfloat16)
    swapped = fct.swap_modules(copy.deepcopy(model))
    assert type(swapped[2]) is fct.ConvTranspose2d
    x = torch.randn(2, 4, 10, 10).to(torch.bfloat16)
    ref, out = model(x), swapped(x)
    assert out.dtype == torch.bfloat16
    close_in_bf16(out, ref, "output", sums=4)
    ref.float().sum().backward()
    out.float().sum().backward()
    for (name, p), q in zip(model.named_parameters(), swapped.parameters()):
        close_in_bf16(q.grad, p.grad, f"grad of {name}", sums=8)


def test_bfloat16_functional_ops_are_fastconvs():
    """fct.conv2d on bfloat16 tensors is fastconv.conv2d on the same bits as bfloat16 arrays."""
    import ml_dtypes
    torch.manual_seed(2)
    x = torch.randn(2, 16, 9, 9).to(torch.bfloat16)
    w = torch.randn(24, 16, 3, 3).to(torch.bfloat16)
    out = fct.conv2d(x, w, padding=1)
    as_np = lambda t: t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)  # noqa: E731
    want = fastconv.conv2d(as_np(x), as_np(w), padding=1)
    assert out.dtype == torch.bfloat16
    assert np.array_equal(as_np(out).view(np.uint16), want.view(np.uint16))
    pooled, idx = fct.max_pool2d(x, 2, return_indices=True)
    ref, ref_idx = nn.functional.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(pooled, ref) and torch.equal(idx, ref_idx)


def test_without_ml_dtypes_bfloat16_stays_on_torch(tmp_path):
    """Where ml_dtypes is missing, a bfloat16 model still runs (on torch) after a swap, and the
    functional ops say what is missing."""
    code = (
        "import sys; sys.modules['ml_dtypes'] = None\n"
        "import torch, torch.nn as nn, fastconv.torch as fct\n"
        "m = nn.Sequential(nn.Conv2d(2, 4, 3), nn.MaxPool2d(2)).to(torch.bfloat16)\n"
        "ref = m(torch.ones(1, 2, 8, 8, dtype=torch.bfloat16))\n"
        "s = fct.swap_modules(m)\n"
        "assert type(s[0]) is nn.Conv2d, type(s[0])\n"
        "assert torch.equal(s(torch.ones(1, 2, 8, 8, dtype=torch.bfloat16)), ref)\n"
        "try:\n"
        "    fct.conv2d(torch.ones(1, 2, 4, 4, dtype=torch.bfloat16),\n"
        "               torch.ones(1, 2, 3, 3, dtype=torch.bfloat16))\n"
        "except TypeError as e:\n"
        "    assert 'ml_dtypes' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
        "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env(), cwd=tmp_path, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
