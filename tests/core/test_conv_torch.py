"""fastconv against torch.nn.functional.conv2d and autograd, where torch is importable (it is
never a dependency: this module is skipped without it)."""
import numpy as np
import pytest
from hypothesis import given, settings

import fastconv
from fastconv import reference
from conv_helpers import assert_close, backward_terms, conv_case, f64abs, upper_scales
from strategies import conv_backward_cases

torch = pytest.importorskip("torch")
F = torch.nn.functional


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torch_conv(case, need_grads=True):
    """torch's forward and (x, w, b) gradients for ``case`` (a zero bias when it has none)."""
    x = torch.tensor(np.array(case.x), requires_grad=need_grads)
    w = torch.tensor(np.array(case.w), requires_grad=need_grads)
    b = torch.tensor(np.zeros(case.w.shape[0], case.dtype) if case.b is None else np.array(case.b),
                     requires_grad=need_grads)
    kw = dict(case.kwargs)
    for key in ("stride", "dilation"):
        kw[key] = tuple(kw[key]) if isinstance(kw[key], list) else kw[key]
    if isinstance(kw["padding"], list):
        kw["padding"] = tuple(kw["padding"])
    y = F.conv2d(x, w, b, **kw)
    if not need_grads:
        return y.detach().numpy(), None
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), torch.tensor(np.array(case.gy)))
    return y.detach().numpy(), (gx.numpy(), gw.numpy(), gb.numpy())


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@settings(max_examples=200)
@given(case=conv_backward_cases())
def test_matches_torch(case):
    """Forward and the three gradients, both dtypes, every argument form (groups, depthwise,
    dilation, 'same' with odd totals, unbatched, non-contiguous). Tolerances: the rounding bound
    of conv_helpers.assert_close, doubled since torch may use other algorithms (e.g. Winograd)."""
    y_t, grads_t = torch_conv(case)
    y = fastconv.conv2d(case.x, case.w, case.b, **case.kwargs)
    assert y.shape == y_t.shape
    scale = reference.conv2d(f64abs(case.x), f64abs(case.w), f64abs(case.b), **case.kwargs)
    cg, r, s = case.w.shape[1:]
    assert_close(y, y_t, 2 * scale, cg * r * s + 1, case.dtype, "conv2d vs torch")
    grads = fastconv.conv2d_backward(case.gy, case.x, case.w, **case.kwargs)
    scales = reference.conv2d_backward(f64abs(case.gy), f64abs(case.x), f64abs(case.w),
                                       **case.kwargs)
    k = case.w.shape[0]
    pixels = int(np.prod(case.out_shape)) // k
    nterms = ((k // case.groups) * r * s, pixels, pixels)
    for name, g, g_t, sc, n in zip(("grad_input", "grad_weight", "grad_bias"), grads, grads_t,
                                   scales, nterms):
        assert_close(g, g_t, 2 * sc, n, case.dtype, f"{name} vs torch")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", [
    dict(x=(8, 32, 28, 28), w=(64, 32, 3, 3), padding=1),
    dict(x=(4, 24, 31, 29), w=(48, 8, 5, 3), stride=2, padding=(2, 1), groups=3),
    dict(x=(4, 32, 20, 20), w=(32, 1, 3, 3), padding="same", groups=32),
    dict(x=(3, 16, 25, 22), w=(20, 16, 4, 2), padding="same", dilation=(2, 3)),
    dict(x=(2, 3, 64, 64), w=(16, 3, 7, 7), stride=2, padding=3),
], ids=["resnet-3x3", "grouped-stride2", "depthwise-same", "dilated-even-same", "stem-7x7"])
def test_realistic_layers_match_torch(config, dtype):
    """Layer shapes of real networks, larger than the property's: many register tiles and
    pixel blocks per call."""
    rng = np.random.default_rng(0)
    kw = {k: v for k, v in config.items() if k not in ("x", "w")}
    x = rng.standard_normal(config["x"]).astype(dtype)
    w = rng.standard_normal(config["w"]).astype(dtype)
    b = rng.standard_normal(config["w"][0]).astype(dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = F.conv2d(xt, wt, bt, **kw)
    gy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    grads_t = torch.autograd.grad(yt, (xt, wt, bt), torch.tensor(gy))
    y = fastconv.conv2d(x, w, b, **kw)
    grads = fastconv.conv2d_backward(gy, x, w, **kw)
    # the rounding bound, doubled as above, with upper bounds of the sums of magnitudes
    case = conv_case(x, w, b, gy=gy, **kw)
    nterms = backward_terms(case)
    nterms = [w.shape[1] * w.shape[2] * w.shape[3] + 1] + [nterms[k] for k in nterms]
    for name, got, want, scale, n in zip(["out", "grad_input", "grad_weight", "grad_bias"],
                                         (y,) + grads, (yt,) + grads_t, upper_scales(case),
                                         nterms):
        assert_close(got, want.detach().numpy(), 2 * scale, n, dtype, f"{name} vs torch")


@pytest.mark.parametrize("changes", [
    dict(x=(2, 3, 8, 8)),  # channels do not match the weight
    dict(groups=3),  # does not divide C = 4
    dict(w=(5, 2, 3, 3)),  # groups=2 does not divide K = 5
    dict(stride=0),
    dict(dilation=0),
    dict(padding=-1),
    dict(padding="same", stride=2),
    dict(padding="full"),
    dict(x=(2, 4, 2, 8)),  # output size < 1
    dict(b=(5,)),
], ids=str)
def test_rejects_what_torch_rejects(changes):
    """The geometric argument rules are torch's: a call torch rejects, fastconv rejects too."""
    spec = dict(x=(2, 4, 8, 8), w=(6, 2, 3, 3), b=(6,), groups=2)
    spec.update(changes)
    arrays = [np.zeros(spec.pop(k), np.float32) for k in ("x", "w", "b")]
    with pytest.raises((RuntimeError, ValueError)):
        F.conv2d(*(torch.tensor(a) for a in arrays), **spec)
    with pytest.raises(ValueError):
        fastconv.conv2d(*arrays, **spec)
