"""Kernel taps that read only padding: the direct backend drops the kernel rows and columns
whose every read, for every output position, falls in the zero padding (a dilation or padding
larger than the input, as in the atrous pyramids of DeepLab). Held to fastconv.reference over
geometries drawn to make such taps common, to the whole kernel bit for bit, and to torch where
an inf or NaN meets the padding."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference
from fastconv._core import direct
from fastconv._core.conv_geometry import conv_geometry
from fastconv._core.geometry import live_taps
from conv_helpers import (
    SUPPORTED_ISAS,
    assert_same_bits,
    check_backward,
    check_forward,
    conv_case,
    num_threads,
    using_isa,
)
from strategies import padded_conv_cases

THREADS = st.sampled_from([1, 2, 3])


def brute_live_taps(n, pad, taps, stride, dilation, out):
    """The taps that read row [0, n) for some output position, by enumeration."""
    return [t for t in range(taps)
            if any(0 <= o * stride + t * dilation - pad < n for o in range(out))]


def conv_case_pairs(kwargs, kernel_hw):
    """(dilation, leading padding) pairs of conv2d keyword arguments (torch's 'same' rule)."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    dilation = pair(kwargs.get("dilation", 1))
    padding = kwargs.get("padding", 0)
    if padding == "same":
        return dilation, tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel_hw))
    return dilation, pair(padding)


def plan_of(x_shape, w_shape, **kwargs):
    g = conv_geometry(x_shape, w_shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                      kwargs.get("dilation", 1), kwargs.get("groups", 1))
    return direct.kernel_plan(x_shape, w_shape, g)


def plan_of_case(case):
    return plan_of(case.x.shape, case.w.shape, **case.kwargs)


def all_results(case):
    out = fastconv.conv2d(case.x, case.w, case.b, **case.kwargs)
    return (out,) + tuple(fastconv.conv2d_backward(case.gy, case.x, case.w, **case.kwargs))


@contextlib.contextmanager
def whole_kernel():
    """Within the block, the kernels run every tap (the behaviour without the trimming)."""
    previous = direct.TRIM_DEAD_TAPS
    direct.TRIM_DEAD_TAPS = False
    try:
        yield
    finally:
        direct.TRIM_DEAD_TAPS = previous


# ------------------------------------------------------------------------------- live_taps
@settings(max_examples=300)
@given(n=st.integers(1, 8), pad=st.integers(0, 20), taps=st.integers(1, 6),
       stride=st.integers(1, 5), dilation=st.integers(1, 10))
def test_live_taps_brackets_the_taps_that_read_the_input(n, pad, taps, stride, dilation):
    out = (n + 2 * pad - dilation * (taps - 1) - 1) // stride + 1
    if out < 1:
        return
    live = brute_live_taps(n, pad, taps, stride, dilation, out)
    first, stop = live_taps(n, pad, taps, stride, dilation, out)
    assert (first, stop) == ((live[0], live[-1] + 1) if live else (0, 0))


def test_live_taps_of_huge_geometries_is_exact():
    # tap t reads row t * 2**40 - 2**40 for the one output: only tap 1 reads row 0
    assert live_taps(1, 2**40, 3, 2**50, 2**40, 1) == (1, 2)
    assert live_taps(5, 2**62, 4, 1, 1, 3) == (0, 0)
    assert live_taps(5, 2**62, 4, 2**62, 1, 2) == (0, 4)  # the second output reads rows 0..3


# --------------------------------------------------------------- the trim happens (ASPP)
@pytest.mark.parametrize("x_shape", [(2, 256, 14, 14), (2, 2048, 28, 28)])
@pytest.mark.parametrize("d", [6, 12, 18, 24, 36])
def test_aspp_branches_run_only_the_centre_tap_when_the_dilation_passes_the_map(x_shape, d):
    """DeepLab's 3x3 atrous branches with padding = dilation = d: for d >= the map size the
    outer rows and columns read only padding, and the kernels run a 1x1 convolution."""
    plan = plan_of(x_shape, (256, x_shape[1], 3, 3), padding=d, dilation=d)
    if d >= x_shape[2]:
        assert plan.taps == (1, 2, 1, 2)
        g = plan.geometry
        assert (g.pad_top, g.pad_left, g.dilation, g.stride) == (0, 0, (1, 1), (1, 1))
        assert (g.out_h, g.out_w) == x_shape[2:]
    else:
        assert plan.taps is None and plan.geometry.dilation == (d, d)


@pytest.mark.parametrize("x_hw,w_hw,kwargs,taps", [
    # 'same' with an even kernel (top 4, bottom 5): taps 0 and 3 dead, 1 and 2 kept
    ((3, 3), (4, 4), dict(padding="same", dilation=3), (1, 3, 1, 3)),
    # only the trailing tap dead ('same', even kernel: top 2, bottom 3)
    ((3, 3), (2, 2), dict(padding="same", dilation=5), (0, 1, 0, 1)),
    # rows only: the width keeps all its taps
    ((2, 9), (3, 3), dict(padding=(5, 1), dilation=(5, 1)), (1, 2, 0, 3)),
    # a stride: one output row, tap 1 alone reads row 0
    ((1, 6), (3, 2), dict(stride=(2, 1), padding=(2, 0), dilation=2), (1, 2, 0, 2)),
    # the first kept tap starts below the first column, which no kept tap reads
    ((1, 3), (1, 3), dict(padding=(0, 1), dilation=(1, 2)), (0, 1, 1, 2)),
    ((4, 4), (3, 3), dict(padding=3, dilation=4), (1, 2, 1, 2)),
    ((3, 4), (3, 3), dict(stride=(1, 2), padding=1, dilation=2), (1, 2, 1, 3)),
    # an ASPP branch with a dilation and padding of 2**40, and one whose stride skips rows
    ((5, 4), (3, 3), dict(padding=2**40, dilation=2**40), (1, 2, 1, 2)),
    ((5, 4), (3, 2), dict(stride=(2**41, 1), padding=(2**40, 1), dilation=(2**39, 3)),
     (2, 3, 0, 2)),
    # dilation 1, padding far beyond the input and a stride that steps over it: no tap left
    ((3, 3), (3, 3), dict(stride=7, padding=10), (0, 0, 0, 0)),
])
def test_partial_and_complete_trims(x_hw, w_hw, kwargs, taps):
    x_shape, w_shape = (1, 2) + x_hw, (3, 2) + w_hw
    plan = plan_of(x_shape, w_shape, **kwargs)
    assert plan.taps == taps
    assert plan.dead == (taps[0] == taps[1])
    if not plan.dead:  # the kept block starts at or after row and column 0 of the input
        (r0, _, s0, _), (ch, cw) = taps, plan.crop
        (dh, dw), (ph, pw) = conv_case_pairs(kwargs, w_hw)
        assert (ch, cw) == (max(0, r0 * dh - ph), max(0, s0 * dw - pw))
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(3)
    out = fastconv.conv2d(x, w, b, **kwargs)
    gy = rng.standard_normal(out.shape)
    case = conv_case(x, w, b, gy=gy, **kwargs)
    check_forward(case, out)
    check_backward(case, fastconv.conv2d_backward(gy, x, w, **kwargs))
    if plan.dead:  # the output is the bias; no kernel ran
        np.testing.assert_array_equal(out, np.broadcast_to(b[None, :, None, None], out.shape))


# ------------------------------------------------------------------ against the reference
@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@settings(max_examples=100)
@given(case=padded_conv_cases(), threads=THREADS)
def test_padded_geometries_match_reference(isa, case, threads):
    with using_isa(isa), num_threads(threads):
        out = fastconv.conv2d(case.x, case.w, case.b, **case.kwargs)
        grads = fastconv.conv2d_backward(case.gy, case.x, case.w, **case.kwargs)
    check_forward(case, out)
    check_backward(case, grads)


@settings(max_examples=100)
@given(case=padded_conv_cases())
def test_trimmed_results_are_the_whole_kernels_bit_for_bit(case):
    """Dropped taps add only +-0 to sums that start from +0 (or 0 + bias): every result, the
    sign of every zero included, is the whole kernel's, and the same for any thread count."""
    with num_threads(2):
        trimmed = all_results(case)
    with num_threads(1):
        trimmed_1 = all_results(case)
    with whole_kernel(), num_threads(2):
        assert plan_of_case(case).taps is None
        whole = all_results(case)
    for name, a, a1, b in zip(("output", "grad_input", "grad_weight", "grad_bias"),
                              trimmed, trimmed_1, whole):
        assert_same_bits(a, a1, f"{name}: 2 threads against 1")
        assert_same_bits(a, b, f"{name}: trimmed against the whole kernel")


def test_the_property_draws_trim_often():
    """The strategy is worth its examples only if the trim happens often, partly and wholly."""
    seen = {"none": 0, "partial": 0, "dead": 0}

    @settings(max_examples=200, database=None, derandomize=True)
    @given(case=padded_conv_cases())
    def count(case):
        plan = plan_of_case(case)
        seen["dead" if plan.dead else "none" if plan.taps is None else "partial"] += 1

    count()
    assert min(seen.values()) >= 10, seen


# ------------------------------------------------------------------------------ signed zeros
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_zeros_are_the_whole_kernels(dtype):
    """A bias of -0.0 with products of -0.0 (input -0.0, positive centre weight) and +0.0 from
    the dropped taps (negative outer weights times the padding's +0.0): the same bits as
    running every tap, the kept block and the all-dead case alike."""
    x = np.full((1, 1, 3, 3), -0.0, dtype)
    w = np.full((1, 1, 3, 3), -1.0, dtype)
    w[0, 0, 1, 1] = 1.0
    b = np.array([-0.0], dtype)
    cases = [dict(padding=4, dilation=4), dict(stride=7, padding=10)]  # kept centre, no tap
    trimmed = [fastconv.conv2d(x, w, b, **kw) for kw in cases]
    assert [plan_of(x.shape, w.shape, **kw).taps for kw in cases] == [(1, 2, 1, 2), (0, 0, 0, 0)]
    with whole_kernel():
        for kw, got in zip(cases, trimmed):
            assert_same_bits(got, fastconv.conv2d(x, w, b, **kw), str(kw))


# ------------------------------------------------------------------ inf and NaN, as torch
try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")


def torch_results(x, w, b, gy, kwargs):
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    y = torch.nn.functional.conv2d(xt, wt, None if b is None else torch.tensor(b), **kwargs)
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.tensor(gy))
    return y.detach().numpy(), gx.numpy(), gw.numpy()


def assert_like_torch(got, want, what):
    """The same NaN / +inf / -inf positions; the finite values within float64 tolerance."""
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(got), test(want), err_msg=f"{what}: {test.__name__}")
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-10, atol=1e-10, err_msg=what)


@needs_torch
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("kwargs", [dict(padding=4, dilation=4),   # centre kept
                                    dict(stride=7, padding=10)])    # every tap dead
def test_inf_or_nan_weight_in_a_dropped_tap(value, kwargs):
    """torch multiplies the padding zeros by the weight in the forward pass (NaN everywhere
    such a tap reaches, so the whole kernel runs), but grad_input sums real pairs only (a
    dropped tap adds nothing) and grad_weight never reads the weight."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    w[1, 0, 0, 2] = value  # a corner tap: dead in both geometries
    out = fastconv.conv2d(x, w, b, **kwargs)
    gy = rng.standard_normal(out.shape)
    grads = fastconv.conv2d_backward(gy, x, w, **kwargs)
    want = torch_results(x, w, b, gy, kwargs)
    assert np.isnan(out[:, 1]).all() and np.isfinite(grads[0]).all()
    for what, got, exp in zip(("output", "grad_input", "grad_weight"), (out,) + grads[:2], want):
        assert_like_torch(got, exp, what)


@needs_torch
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("value", [np.inf, np.nan])
@pytest.mark.parametrize("kwargs", [dict(padding=4, dilation=4), dict(stride=7, padding=10)])
def test_inf_or_nan_grad_output_reaches_the_dropped_taps_gradient(value, kwargs):
    """grad_weight of a dropped tap is grad_output times padding zeros: NaN for the output
    channel whose grad_output holds an inf or NaN, 0 for the others, as in torch."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((3, 2, 3, 3))
    out = fastconv.conv2d(x, w, **kwargs)
    gy = rng.standard_normal(out.shape)
    gy[1, 2, 0, 0] = value
    gw = fastconv.conv2d_backward(gy, x, w, needs=(False, True, False), **kwargs)[1]
    assert np.isnan(gw[2, :, 0]).all() and not np.isnan(gw[:2]).any()
    assert_like_torch(gw, torch_results(x, w, None, gy, kwargs)[2], "grad_weight")


@needs_torch
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@settings(max_examples=40)
@given(case=padded_conv_cases(dtypes=st.just(np.float64), max_n=2), data=st.data())
def test_non_finite_values_with_dropped_taps_match_torch(case, data):
    """inf and NaN in the weight and grad_output of padded geometries (float64): fastconv as
    torch."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w, gy = case.w.copy(), case.gy.copy()
    for a in (w, gy):
        if a.size and data.draw(st.booleans()):
            a.reshape(-1)[rng.integers(a.size)] = data.draw(st.sampled_from([np.inf, -np.inf,
                                                                              np.nan]))
    out = fastconv.conv2d(case.x, w, case.b, **case.kwargs)
    grads = fastconv.conv2d_backward(gy, case.x, w, **case.kwargs)
    want = torch_results(case.x, w, case.b, gy, case.kwargs)
    for what, got, exp in zip(("output", "grad_input", "grad_weight"), (out,) + grads[:2], want):
        assert_like_torch(got, exp, what)


# ------------------------------------------------------------- what shares the path, or not
@settings(max_examples=40)
@given(case=padded_conv_cases(max_stride=1))
def test_conv_transpose2d_with_dropped_taps_matches_reference(case):
    """conv_transpose2d is conv2d's grad_input (and its gradients conv2d's forward and
    grad_weight), so it runs the trimmed kernel too: held to fastconv.reference. The transposed
    convolution whose conv2d is ``case``: input gy, output the shape of case.x."""
    pads, (dh, dw) = case.pads, case.dilation
    if pads[0] != pads[1] or pads[2] != pads[3]:  # conv_transpose2d pads symmetrically
        return
    kwargs = dict(padding=(pads[0], pads[2]), dilation=(dh, dw), groups=case.groups)
    w = case.w  # (K, C/g, R, S) is conv_transpose2d's (C_in, C_out/g, kH, kW) with C_in = K
    out = fastconv.conv_transpose2d(case.gy, w, None, **kwargs)
    assert out.shape == case.x.shape
    want = reference.conv_transpose2d(case.gy.astype(np.float64), w.astype(np.float64),
                                      **kwargs)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max()))
    grads = fastconv.conv_transpose2d_backward(case.x, case.gy, w, **kwargs)
    wants = reference.conv_transpose2d_backward(case.x.astype(np.float64),
                                                case.gy.astype(np.float64),
                                                w.astype(np.float64), **kwargs)
    for got, exp in zip(grads, wants):
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-4 * (1 + np.abs(exp).max()))


def test_conv_transpose2d_of_an_aspp_branch_runs_the_trimmed_kernel():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    out = fastconv.conv_transpose2d(x, w, padding=8, dilation=8)
    assert plan_of(out.shape, (4, 3, 3, 3), padding=8, dilation=8).taps == (1, 2, 1, 2)
    np.testing.assert_allclose(out, reference.conv_transpose2d(x, w, padding=8, dilation=8),
                               rtol=1e-12, atol=1e-12)
    with whole_kernel():
        assert_same_bits(out, fastconv.conv_transpose2d(x, w, padding=8, dilation=8))


@needs_torch
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("mode,size,pad,dilation", [("replicate", 3, 3, 3), ("circular", 3, 3, 3),
                                                    ("reflect", 4, 3, 4)])  # reflect: pad < size
def test_layers_with_other_padding_modes_keep_every_tap(mode, size, pad, dilation):
    """Padding that is not zeros is added to the input before the kernels run, which then see
    padding 0: every tap reads the input for some output, nothing is dropped, and the layer
    gives torch's result though its zero-padded twin would drop taps."""
    from fastconv.nn import Conv2d

    rng = np.random.default_rng(6)
    kw = dict(padding=pad, dilation=dilation)
    layer = Conv2d(2, 3, 3, padding_mode=mode, dtype=np.float64, **kw)
    twin = torch.nn.Conv2d(2, 3, 3, padding_mode=mode, dtype=torch.float64, **kw)
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(layer.weight.data))
        twin.bias.copy_(torch.tensor(layer.bias.data))
    x = rng.standard_normal((2, 2, size, size))
    assert plan_of(x.shape, (3, 2, 3, 3), **kw).taps is not None  # with zeros: trimmed
    padded = (2, 2, size + 2 * pad, size + 2 * pad)
    assert plan_of(padded, (3, 2, 3, 3), dilation=dilation).taps is None
    xt = torch.tensor(x, requires_grad=True)
    y = twin(xt)
    gy = rng.standard_normal(tuple(y.shape))
    (gx,) = torch.autograd.grad(y, (xt,), torch.tensor(gy))
    np.testing.assert_allclose(layer.forward(x), y.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.backward(gy), gx.numpy(), rtol=1e-10, atol=1e-10)
