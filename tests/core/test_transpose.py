"""fastconv.conv_transpose2d / conv_transpose2d_backward: held to fastconv.reference (property
tests, every SIMD path), to torch where importable, bitwise identical for any thread count, and
every bad argument raising an error that names it."""
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference
from conv_helpers import (
    SUPPORTED_ISAS,
    TESTS_DIR,
    assert_close,
    assert_same_bits,
    assert_unchanged,
    child_env,
    f64,
    f64abs,
    num_threads,
    snapshot,
    using_isa,
)
from strategies import conv_transpose_cases

THREADS = st.sampled_from([1, 2, 3])


def nterms(case):
    """The number of terms of each result's sums: an output sums C_in/groups * kH * kW products
    and the bias, grad_input C_out/groups * kH * kW (a conv2d of grad_output), grad_weight
    N * H * W, grad_bias N * OH * OW."""
    c_in, cg_out, r, s = case.w.shape
    x_pixels = case.x.size // c_in if c_in else 0
    out_pixels = int(np.prod(case.out_shape)) // (cg_out * case.groups) if cg_out else 0
    return {"output": c_in // case.groups * r * s + 1, "grad_input": cg_out * r * s,
            "grad_weight": x_pixels, "grad_bias": out_pixels}


def check_forward(case, out):
    assert out.shape == case.out_shape and out.dtype == case.dtype
    assert out.flags.c_contiguous and out.flags.writeable
    expected = reference.conv_transpose2d(f64(case.x), f64(case.w), f64(case.b), **case.kwargs)
    scale = reference.conv_transpose2d(f64abs(case.x), f64abs(case.w), f64abs(case.b),
                                       **case.kwargs)
    assert_close(out, expected, scale, nterms(case)["output"], case.dtype, "conv_transpose2d")


def check_backward(case, grads):
    want = reference.conv_transpose2d_backward(f64(case.gy), f64(case.x), f64(case.w),
                                               **case.kwargs)
    scale = reference.conv_transpose2d_backward(f64abs(case.gy), f64abs(case.x), f64abs(case.w),
                                                **case.kwargs)
    terms = nterms(case)
    shapes = (case.x.shape, case.w.shape, (case.w.shape[1] * case.groups,))
    for name, got, exp, sc, need, shape in zip(("grad_input", "grad_weight", "grad_bias"), grads,
                                               want, scale, case.needs, shapes):
        if not need:
            assert got is None, f"{name} was not asked for but returned"
            continue
        assert got is not None and got.shape == shape, name
        assert_close(got, exp, sc, terms[name], case.dtype, name)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@settings(max_examples=150)
@given(case=conv_transpose_cases(), threads=THREADS)
def test_forward_matches_reference(isa, case, threads):
    before = snapshot(case.x, case.w, case.b)
    with using_isa(isa), num_threads(threads):
        out = fastconv.conv_transpose2d(case.x, case.w, case.b, **case.kwargs)
    assert_unchanged(before, case.x, case.w, case.b)
    check_forward(case, out)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@settings(max_examples=150)
@given(case=conv_transpose_cases(backward=True), threads=THREADS)
def test_backward_matches_reference(isa, case, threads):
    before = snapshot(case.gy, case.x, case.w)
    with using_isa(isa), num_threads(threads):
        grads = fastconv.conv_transpose2d_backward(case.gy, case.x, case.w, needs=case.needs,
                                                   **case.kwargs)
    assert_unchanged(before, case.gy, case.x, case.w)
    check_backward(case, grads)


def test_output_padding_beyond_the_stride():
    # allowed by a larger dilation: output rows that no input reaches (zeros, plus the bias)
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 2, 4, 5)), rng.standard_normal((2, 3, 3, 2)), np.ones(3)
    kw = dict(stride=1, dilation=(3, 1), output_padding=(2, 0), padding=(0, 1))
    out = fastconv.conv_transpose2d(x, w, b, **kw)
    assert out.shape == (2, 3, (4 - 1) + 3 * 2 + 2 + 1, (5 - 1) - 2 + 1 + 1)
    np.testing.assert_allclose(out, reference.conv_transpose2d(x, w, b, **kw), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_array_equal(out[:, :, -2:], 1.0)
    gy = rng.standard_normal(out.shape)
    for got, want in zip(fastconv.conv_transpose2d_backward(gy, x, w, **kw),
                         reference.conv_transpose2d_backward(gy, x, w, **kw)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_is_the_gradient_of_conv2d():
    # conv_transpose2d(y, w) = d conv2d(x, w) / dx applied to y, and the adjoint identity
    # <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 3, 2))
    kw = dict(stride=2, padding=1, dilation=(1, 2), groups=2)
    y = rng.standard_normal(fastconv.conv2d(x, w, **kw).shape)
    gx = fastconv.conv2d_backward(y, x, w, needs=(True, False, False), **kw)[0]
    op = tuple(a - b for a, b in zip(x.shape[2:], fastconv.conv_transpose2d(y, w, **kw).shape[2:]))
    t = fastconv.conv_transpose2d(y, w, output_padding=op, **kw)
    assert_same_bits(t, gx, "conv_transpose2d against conv2d's grad_input")
    np.testing.assert_allclose(np.vdot(fastconv.conv2d(x, w, **kw), y), np.vdot(x, t))


def test_non_finite_weights_reach_only_their_taps():
    # as torch: an output sums only the (input, tap) products that reach it, so an inf tap
    # does not turn the positions it never reaches (stride gaps) into NaN
    x = np.ones((1, 1, 3, 3))
    w = np.array([[[[np.inf, 1.0], [1.0, 1.0]]]])
    out = fastconv.conv_transpose2d(x, w, stride=3)
    np.testing.assert_array_equal(out, reference.conv_transpose2d(x, w, stride=3))
    assert np.isinf(out[0, 0, ::3, ::3]).all() and np.isfinite(out[0, 0, 1::3, :]).all()


def test_empty_batch_and_channels():
    x = np.zeros((0, 4, 3, 3), np.float32)
    w = np.ones((4, 2, 2, 2), np.float32)
    assert fastconv.conv_transpose2d(x, w, stride=2).shape == (0, 2, 6, 6)
    gx, gw, gb = fastconv.conv_transpose2d_backward(np.zeros((0, 2, 6, 6), np.float32), x, w,
                                                    stride=2)
    assert gx.shape == x.shape and not gw.any() and not gb.any() and gb.shape == (2,)
    out = fastconv.conv_transpose2d(np.ones((1, 4, 3, 3), np.float32),
                                    np.ones((4, 0, 2, 2), np.float32), stride=2)
    assert out.shape == (1, 0, 6, 6)


@pytest.mark.parametrize("x_shape, kwargs", [
    ((1, 2, 1, 1), dict(stride=2**40)),
    ((1, 2, 1, 2), dict(stride=(2**62, 1), padding=(0, 1))),
    ((1, 2, 2, 3), dict(dilation=(2**40, 1), padding=(2**39, 0))),
    ((1, 2, 3, 3), dict(dilation=(2**61, 1), padding=(2**60, 0), output_padding=(5, 0))),
])
def test_huge_geometry_costs_nothing(x_shape, kwargs):
    # strides, dilations and paddings up to int64 with a small output: the kernels run the
    # equivalent small geometry, as conv2d's do
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal((2, 3, 2, 3)), np.ones(3)
    out = fastconv.conv_transpose2d(x, w, b, **kwargs)
    np.testing.assert_allclose(out, reference.conv_transpose2d(x, w, b, **kwargs), rtol=1e-12,
                               atol=1e-12)
    gy = rng.standard_normal(out.shape)
    for got, want in zip(fastconv.conv_transpose2d_backward(gy, x, w, **kwargs),
                         reference.conv_transpose2d_backward(gy, x, w, **kwargs)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------ bitwise determinism
DETERMINISM_CASES = {
    "dcgan": ((4, 16, 6, 6), (16, 8, 4, 4), dict(stride=2, padding=1)),
    "unet": ((2, 12, 10, 9), (12, 6, 2, 2), dict(stride=2)),
    "grouped-dilated": ((3, 6, 7, 8), (6, 4, 3, 2),
                        dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=3,
                             dilation=(1, 2))),
}


def all_passes(name, dtype):
    xs, ws, kw = DETERMINISM_CASES[name]
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[1] * kw.get("groups", 1)).astype(dtype)
    out = fastconv.conv_transpose2d(x, w, b, **kw)
    gy = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    return (out,) + fastconv.conv_transpose2d_backward(gy, x, w, **kw)


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(DETERMINISM_CASES))
def test_bitwise_identical_for_any_thread_count(name, dtype, isa):
    with using_isa(isa):
        results = {}
        for n in (1, 2, 3):
            with num_threads(n):
                results[n] = all_passes(name, dtype)
    for n in (2, 3):
        for what, one, many in zip(("out", "grad_input", "grad_weight", "grad_bias"),
                                   results[1], results[n]):
            assert_same_bits(many, one, f"{name} {what}: {n} threads against 1")


def test_bitwise_identical_under_omp_num_threads():
    # the thread count as a user sets it, before the runtime starts, in fresh interpreters
    code = ("import json, sys, numpy as np, test_transpose as t\n"
            "print(json.dumps({n: [a.tobytes().hex() for a in t.all_passes(n, np.float32)]"
            " for n in sorted(t.DETERMINISM_CASES)}))\n")
    runs = []
    for threads in ("1", "2"):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, cwd=TESTS_DIR + "/core",
                              env=child_env(OMP_NUM_THREADS=threads))
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    assert runs[0] == runs[1]
    here = {n: [a.tobytes().hex() for a in all_passes(n, np.float32)] for n in DETERMINISM_CASES}
    assert runs[0] == here


# ------------------------------------------------------------------------------ argument errors
F32 = np.float32


def good():
    """A valid call: input (2, 4, 5, 5), weight (4, 3, 3, 3) with groups=2 (C_out = 6), bias
    (6,), stride 2, output (2, 6, 10, 10)."""
    return dict(input=np.zeros((2, 4, 5, 5), F32), weight=np.zeros((4, 3, 3, 3), F32),
                bias=np.zeros(6, F32), stride=2, padding=1, output_padding=1, groups=2,
                dilation=1)


def call_forward(fn=fastconv.conv_transpose2d, **changes):
    kw = good()
    kw.update(changes)
    return fn(kw.pop("input"), kw.pop("weight"), **kw)


def call_backward(fn=fastconv.conv_transpose2d_backward, **changes):
    kw = good()
    kw["grad_output"] = np.zeros((2, 6, 10, 10), F32)
    kw.update(changes)
    kw.pop("bias", None)  # the backward has no bias argument
    return fn(kw.pop("grad_output"), kw.pop("input"), kw.pop("weight"), **kw)


def test_the_base_calls_are_valid():
    assert call_forward().shape == (2, 6, 10, 10)
    assert [g.shape for g in call_backward()] == [(2, 4, 5, 5), (4, 3, 3, 3), (6,)]


TYPE_ERRORS = [
    (dict(input=np.zeros((2, 4, 5, 5), np.int64)), "input"),
    (dict(input=np.zeros((2, 4, 5, 5), np.float16)), "input"),
    (dict(input=None), "input"),
    (dict(weight=np.zeros((4, 3, 3, 3), np.float64)), "weight"),
    (dict(weight=np.zeros((4, 3, 3, 3), bool)), "weight"),
    (dict(stride=2.0), "stride"),
    (dict(stride=(True, 1)), "stride"),
    (dict(padding=1.0), "padding"),
    (dict(output_padding=1.0), "output_padding"),
    (dict(output_padding=None), "output_padding"),
    (dict(dilation="1"), "dilation"),
    (dict(groups=2.0), "groups"),
    (dict(groups=None), "groups"),
]
VALUE_ERRORS = [
    (dict(input=np.zeros((4, 5, 5, 1, 1), F32)), "input"),
    (dict(input=np.zeros((5, 5), F32)), "input"),
    (dict(input=np.zeros((2, 3, 5, 5), F32)), "weight.shape.0.=4 must equal the input channels"),
    (dict(input=np.zeros((2, 4, 0, 5), F32)), "input"),
    (dict(weight=np.zeros((4, 3, 3), F32)), "weight"),
    (dict(weight=np.zeros((4, 3, 0, 3), F32)), "weight"),
    (dict(stride=0), "stride"),
    (dict(stride=(1, 2, 3)), "stride"),
    (dict(padding=-1), "padding"),
    (dict(padding="same"), "padding"),
    (dict(padding="valid"), "padding"),
    (dict(padding=2**63), "padding"),
    (dict(output_padding=-1), "output_padding"),
    (dict(output_padding=2), "output_padding must be smaller than either stride or dilation"),
    (dict(output_padding=(1, 2)), "output_padding"),
    (dict(dilation=0), "dilation"),
    (dict(groups=0), "groups"),
    (dict(groups=3), "groups=3 must divide the input channels"),
    (dict(padding=20), r"output size \(-28, -28\) is < 1"),
]


@pytest.mark.parametrize("fn", [fastconv.conv_transpose2d, reference.conv_transpose2d])
@pytest.mark.parametrize("changes, match", TYPE_ERRORS)
def test_forward_type_errors(fn, changes, match):
    with pytest.raises(TypeError, match=match):
        call_forward(fn, **changes)


@pytest.mark.parametrize("fn", [fastconv.conv_transpose2d, reference.conv_transpose2d])
@pytest.mark.parametrize("changes, match", VALUE_ERRORS)
def test_forward_value_errors(fn, changes, match):
    with pytest.raises(ValueError, match=match):
        call_forward(fn, **changes)


@pytest.mark.parametrize("changes, match", TYPE_ERRORS)
def test_backward_type_errors(changes, match):
    with pytest.raises(TypeError, match=match):
        call_backward(**changes)


@pytest.mark.parametrize("changes, match", VALUE_ERRORS)
def test_backward_value_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        call_backward(**changes)


@pytest.mark.parametrize("bias, exc, match", [
    (np.zeros(4, F32), ValueError, r"bias must have shape \(6,\)"),
    (np.zeros((6, 1), F32), ValueError, "bias"),
    (np.zeros(6, np.float64), TypeError, "bias"),
    (np.zeros(6, np.int32), TypeError, "bias"),
])
def test_bias_errors(bias, exc, match):
    with pytest.raises(exc, match=match):
        call_forward(bias=bias)


@pytest.mark.parametrize("grad_output, exc", [
    (np.zeros((2, 6, 9, 10), F32), ValueError),
    (np.zeros((6, 10, 10), F32), ValueError),
    (np.zeros((2, 6, 10, 10), np.float64), TypeError),
    (np.zeros((2, 6, 10, 10), np.int32), TypeError),
])
def test_grad_output_errors(grad_output, exc):
    with pytest.raises(exc, match="grad_output"):
        call_backward(grad_output=grad_output)


@pytest.mark.parametrize("needs", [(True,), (True, True, True, True)])
def test_needs_must_have_three_entries(needs):
    with pytest.raises(ValueError, match="needs"):
        call_backward(needs=needs)


def test_needs_leaves_out_gradients():
    gx, gw, gb = call_backward(needs=(False, True, False))
    assert gx is None and gw is not None and gb is None


def test_a_huge_output_is_refused_before_allocating():
    with pytest.raises(ValueError, match="output"):
        call_forward(stride=2**40)


def test_one_int_sequences_and_numpy_ints_count_as_ints():
    want = call_forward()
    got = call_forward(stride=(2,), padding=[np.int64(1)], output_padding=(1,),
                       dilation=np.int32(1), groups=np.int8(2))
    assert_same_bits(got, want)


# ------------------------------------------------------------------------------- against torch
@pytest.mark.usefixtures("one_torch_thread")
@settings(max_examples=60)
@given(case=conv_transpose_cases(backward=True))
def test_matches_torch(case):
    """Forward and the three gradients against torch's conv_transpose2d and autograd; the
    rounding bound doubled, since torch may sum in another order."""
    torch = pytest.importorskip("torch")
    tensor = lambda a, grad: torch.tensor(np.array(a), requires_grad=grad)  # noqa: E731
    x, w = tensor(case.x, True), tensor(case.w, True)
    b = tensor(np.zeros(case.out_shape[-3], case.dtype) if case.b is None else case.b, True)
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in case.kwargs.items()}
    y = torch.nn.functional.conv_transpose2d(x, w, b, **kw)
    grads_t = torch.autograd.grad(y, (x, w, b), tensor(case.gy, False))
    check_forward(case, fastconv.conv_transpose2d(case.x, case.w, case.b, **case.kwargs))
    scale = reference.conv_transpose2d(f64abs(case.x), f64abs(case.w), f64abs(case.b),
                                       **case.kwargs)
    terms = nterms(case)
    out = fastconv.conv_transpose2d(case.x, case.w, case.b, **case.kwargs)
    assert_close(out, y.detach().numpy(), 2 * scale, terms["output"], case.dtype, "vs torch")
    grads = fastconv.conv_transpose2d_backward(case.gy, case.x, case.w, **case.kwargs)
    scales = reference.conv_transpose2d_backward(f64abs(case.gy), f64abs(case.x), f64abs(case.w),
                                                 **case.kwargs)
    for name, g, g_t, sc in zip(("grad_input", "grad_weight", "grad_bias"), grads, grads_t,
                                scales):
        assert_close(g, g_t.numpy(), 2 * sc, terms[name], case.dtype, f"{name} vs torch")


@pytest.mark.parametrize("changes", [
    dict(output_padding=2), dict(padding=20), dict(groups=3), dict(stride=0),
    dict(input=np.zeros((2, 3, 5, 5), F32)), dict(bias=np.zeros(4, F32)),
])
def test_rejects_what_torch_rejects(changes):
    torch = pytest.importorskip("torch")
    kw = good()
    kw.update(changes)
    tkw = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    with pytest.raises(RuntimeError):
        torch.nn.functional.conv_transpose2d(**tkw)
    with pytest.raises(ValueError):
        fastconv.conv_transpose2d(**kw)
