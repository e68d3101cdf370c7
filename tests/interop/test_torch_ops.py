"""fastconv.torch as torch operators: torch.ops.fastconv.*, torch.compile, TorchScript, memory
formats (channels_last), and no copies at the boundary.

Runs only where torch is importable (torch is never a dependency of fastconv).
"""
import copy
import io
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as TF  # noqa: E402

import fastconv  # noqa: E402
import fastconv.functional  # noqa: E402
import fastconv.torch as fct  # noqa: E402

CL = torch.channels_last
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))  # the copy under test
HERE = os.path.dirname(os.path.abspath(__file__))


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding="same", bias=False), nn.ReLU(),
        nn.AvgPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(6 * 2 * 2, 5),
    )


def run_model(model, x):
    """Output, input gradient and parameter gradients of one forward and backward pass."""
    x = x.detach().clone().requires_grad_(True)
    model.zero_grad()
    out = model(x)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    return out.detach(), x.grad, [p.grad.clone() for p in model.parameters()]


def assert_same_results(a, b):
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = a, b
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    torch.testing.assert_close(gx_a, gx_b, rtol=0, atol=0)
    for u, v in zip(gp_a, gp_b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


# ----------------------------------------------------------------------------- the operators
def test_the_operators_are_registered():
    for name in ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
                 "avg_pool2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
                 "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
                 "adaptive_max_pool2d_backward"):
        assert isinstance(getattr(torch.ops.fastconv, name).default, torch._ops.OpOverload)
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    out = torch.ops.fastconv.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1, False)
    torch.testing.assert_close(out, TF.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)
    out, idx = torch.ops.fastconv.max_pool2d(x, [2, 2], [], [0, 0], [1, 1], False)
    ref, ref_idx = TF.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


def _x(*shape, cl=False, grad=True):
    x = torch.randn(*shape, dtype=torch.float64)
    if cl:
        x = x.contiguous(memory_format=CL)
    return x.requires_grad_(grad)


OPCHECK_CASES = [
    ("conv2d", lambda: (_x(2, 3, 6, 7), _x(4, 3, 3, 3), _x(4), [1, 1], [1, 1], [1, 1], 1, False)),
    ("conv2d", lambda: (_x(2, 4, 7, 6, cl=True), _x(6, 2, 3, 2), None, [2, 1], [0, 1], [1, 2], 2,
                        False)),
    ("conv2d", lambda: (_x(3, 6, 6), _x(2, 3, 2, 3, cl=True), None, [1, 1], [0, 0], [2, 1], 1,
                        True)),
    ("max_pool2d", lambda: (_x(2, 3, 7, 8, cl=True), [3, 3], [2, 2], [1, 1], [1, 1], True)),
    ("max_pool2d", lambda: (_x(3, 7, 8), [2, 3], [], [0, 1], [2, 1], False)),
    ("avg_pool2d", lambda: (_x(2, 3, 7, 8), [3, 2], [2, 2], [1, 1], True, False, None)),
    ("avg_pool2d", lambda: (_x(2, 3, 7, 8, cl=True), [2, 2], [], [0, 0], False, True, 3)),
    ("conv2d_backward", lambda: (_x(2, 4, 5, 5, grad=False), _x(2, 3, 5, 5, grad=False),
                                 _x(4, 3, 3, 3, grad=False), [1, 1], [1, 1], [1, 1], 1, False,
                                 [True, False, True])),
    ("conv2d_backward", lambda: (_x(2, 4, 5, 5, grad=False), _x(2, 4, 5, 5, grad=False, cl=True),
                                 _x(4, 1, 3, 3, grad=False), [1, 1], [1, 1], [1, 1], 4, False,
                                 [True, True, False])),
    ("conv2d_backward", lambda: (_x(2, 4, 5, 5, grad=False).float(),
                                 _x(2, 4, 5, 5, grad=False, cl=True).float(),
                                 _x(4, 1, 3, 3, grad=False).float(), [1, 1], [1, 1], [1, 1], 4,
                                 False, [True, True, True])),
    ("max_pool2d_backward", lambda: (_x(2, 3, 3, 4, grad=False),
                                     _x(2, 3, 7, 8, cl=True, grad=False),
                                     torch.zeros(2, 3, 3, 4, dtype=torch.int64))),
    ("avg_pool2d_backward", lambda: (_x(2, 3, 4, 4, grad=False),
                                     _x(2, 3, 7, 8, cl=True, grad=False),
                                     [2, 2], [], [0, 0], True, True, None)),
    ("conv_transpose2d", lambda: (_x(2, 4, 4, 5), _x(4, 3, 3, 3), _x(6), [2, 2], [1, 0], [1, 0],
                                  2, [1, 1])),
    ("conv_transpose2d", lambda: (_x(2, 3, 4, 4, cl=True), _x(3, 2, 2, 3), None, [2, 1], [0, 0],
                                  [0, 0], 1, [1, 2])),
    ("conv_transpose2d", lambda: (_x(3, 4, 4), _x(3, 2, 3, 3, cl=True), _x(2), [1, 1], [1, 1],
                                  [0, 0], 1, [2, 2])),
    ("conv_transpose2d_backward", lambda: (_x(2, 4, 8, 6, grad=False), _x(2, 3, 4, 4, grad=False),
                                           _x(3, 4, 2, 2, grad=False, cl=True), [2, 2], [0, 1],
                                           [0, 0], 1, [1, 1], [True, True, False])),
    ("adaptive_avg_pool2d", lambda: (_x(2, 3, 7, 8), [3, 5])),
    ("adaptive_avg_pool2d", lambda: (_x(2, 3, 7, 8, cl=True), [1, 1])),
    ("adaptive_avg_pool2d", lambda: (_x(2, 3, 7, 8, cl=True), [9, 4])),
    ("adaptive_avg_pool2d", lambda: (_x(3, 7, 8), [2, 8])),
    ("adaptive_max_pool2d", lambda: (_x(2, 3, 7, 8, cl=True), [3, 5])),
    ("adaptive_max_pool2d", lambda: (_x(3, 7, 8), [1, 1])),
    ("adaptive_avg_pool2d_backward", lambda: (_x(2, 3, 3, 4, grad=False),
                                              _x(2, 3, 7, 8, cl=True, grad=False))),
    ("adaptive_max_pool2d_backward", lambda: (_x(2, 3, 3, 4, grad=False),
                                              _x(2, 3, 7, 8, cl=True, grad=False),
                                              torch.zeros(2, 3, 3, 4, dtype=torch.int64))),
]


@pytest.mark.parametrize("name, make_args", OPCHECK_CASES)
def test_opcheck(name, make_args):
    # schema, fake (meta) implementation, autograd registration, and AOT dispatch: torch's own
    # checks of a custom operator
    torch.library.opcheck(getattr(torch.ops.fastconv, name).default, make_args())


# ----------------------------------------------------------------------------- torch.compile
def test_compile_fullgraph_matches_eager():
    model = fct.swap_modules(small_cnn())
    x = torch.randn(3, 3, 8, 8)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert_same_results(run_model(compiled, x), run_model(model, x))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)


def test_compile_with_dynamic_shapes_and_channels_last():
    model = fct.swap_modules(small_cnn())
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    for x in (torch.randn(2, 3, 8, 8), torch.randn(5, 3, 8, 8).contiguous(memory_format=CL)):
        assert_same_results(run_model(compiled, x), run_model(model, x))


def small_decoder():
    return nn.Sequential(
        nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.AdaptiveMaxPool2d((5, 3)), nn.Conv2d(4, 6, 3, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(6, 5),
    )


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_of_transposed_convolution_and_adaptive_pooling(dynamic):
    original = small_decoder()
    model = fct.swap_modules(copy.deepcopy(original))
    assert {fct.ConvTranspose2d, fct.AdaptiveMaxPool2d, fct.AdaptiveAvgPool2d} <= {
        type(m) for m in model}
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    for x in (torch.randn(3, 3, 6, 5), torch.randn(2, 3, 7, 6).contiguous(memory_format=CL)):
        ours = run_model(model, x)
        assert_same_results(run_model(compiled, x), ours)
        theirs = run_model(original, x)
        for a, b in zip(ours[:2] + tuple(ours[2]), theirs[:2] + tuple(theirs[2])):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_dynamo_explain_finds_no_graph_break():
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fct.swap_modules(small_cnn()))(torch.randn(2, 3, 8, 8))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_export_keeps_the_operators():
    model = fct.swap_modules(small_cnn())
    x = torch.randn(2, 3, 8, 8)
    exported = torch.export.export(model, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"fastconv.conv2d.default", "fastconv.max_pool2d.default",
            "fastconv.avg_pool2d.default"} <= targets
    torch.testing.assert_close(exported.module()(x), model(x), rtol=0, atol=0)
    exported = torch.export.export(fct.swap_modules(small_decoder()), (x[:, :, :6, :5],))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"fastconv.conv_transpose2d.default", "fastconv.adaptive_max_pool2d.default",
            "fastconv.adaptive_avg_pool2d.default"} <= targets


def _layers(x, w):
    y = fct.conv2d(x, w, padding=1)
    y = fct.max_pool2d(y, 2)
    y = fct.conv_transpose2d(y, w, stride=2)
    y = fct.adaptive_max_pool2d(y, (3, 2))
    return fct.avg_pool2d(y, 1) + fct.adaptive_avg_pool2d(y, 1)


FORWARD_OPS = {"fastconv.conv2d.default", "fastconv.max_pool2d.default",
               "fastconv.conv_transpose2d.default", "fastconv.adaptive_max_pool2d.default",
               "fastconv.avg_pool2d.default", "fastconv.adaptive_avg_pool2d.default"}


@pytest.mark.parametrize("tracing_mode", ["real", "fake", "symbolic"])
def test_make_fx_records_the_operators(tracing_mode):
    # eager calls skip the dispatcher; under make_fx's dispatch mode they must not
    from torch.fx.experimental.proxy_tensor import make_fx
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    graph = make_fx(_layers, tracing_mode=tracing_mode)(x, w)
    assert {str(n.target) for n in graph.graph.nodes} >= FORWARD_OPS
    torch.testing.assert_close(graph(x, w), _layers(x, w), rtol=0, atol=0)


def test_dispatch_modes_and_fake_tensors_see_the_operators_forward_and_backward():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func))
            return func(*args, **(kwargs or {}))

    x, w = _x(2, 3, 6, 6), _x(4, 3, 3, 3)
    with Log() as log:
        out = _layers(x, w)
        grads = torch.autograd.grad(out.sum(), (x, w))
    assert log.ops >= FORWARD_OPS | {op.replace(".default", "_backward.default")
                                     for op in FORWARD_OPS}
    eager_grads = torch.autograd.grad(_layers(x, w).sum(), (x, w))
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with FakeTensorMode():
        fake = _layers(torch.empty(2, 3, 6, 6), torch.empty(4, 3, 3, 3))
    assert type(fake).__name__ == "FakeTensor" and fake.shape == out.shape


@pytest.mark.skipif(os.environ.get("FASTCONV_TEST_INDUCTOR") != "1",
                    reason="inductor's first compilation takes tens of seconds on a 2-core CI "
                           "machine; FASTCONV_TEST_INDUCTOR=1 runs it")
def test_compile_with_inductor_matches_eager():  # pragma: no cover - opt-in
    model = fct.swap_modules(small_cnn())
    x = torch.randn(3, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True)
    ours, theirs = run_model(compiled, x), run_model(model, x)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-6, atol=1e-6)  # inductor fuses
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-6, atol=1e-6)  # the torch ops
    for a, b in zip(ours[2], theirs[2]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_double_backward_is_still_refused_after_compile():
    compiled = torch.compile(lambda x, w: fct.conv2d(x, w, padding=1), backend="aot_eager",
                             fullgraph=True)
    x, w = _x(1, 2, 5, 5), _x(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(fct.conv2d(x, w).sum(), x, create_graph=True)
    gx, = torch.autograd.grad(compiled(x, w).sum(), x)  # a first derivative is fine
    torch.testing.assert_close(gx, torch.autograd.grad(TF.conv2d(x, w, padding=1).sum(), x)[0])


# ----------------------------------------------------------------------------- TorchScript
# torch.jit is deprecated in recent torch releases, and still works
jit_test = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@jit_test
def test_trace_save_and_load_run_the_operators():
    model = fct.swap_modules(small_cnn())
    x = torch.randn(2, 3, 8, 8)
    traced = torch.jit.trace(model, x)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    graph = str(loaded.inlined_graph)
    assert "fastconv::conv2d" in graph and "fastconv::max_pool2d" in graph
    assert "fastconv::avg_pool2d" in graph and "aten::_convolution" not in graph
    assert_same_results(run_model(loaded, x), run_model(model, x))  # gradients flow too


@jit_test
def test_trace_save_and_load_run_the_new_operators():
    model = fct.swap_modules(small_decoder())
    x = torch.randn(2, 3, 6, 5)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(model, x), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    graph = str(loaded.inlined_graph)
    for name in ("conv_transpose2d", "adaptive_max_pool2d", "adaptive_avg_pool2d"):
        assert f"fastconv::{name}" in graph
    assert "aten::_convolution" not in graph and "aten::adaptive" not in graph
    assert_same_results(run_model(loaded, x), run_model(model, x))


@jit_test
def test_loading_a_traced_model_needs_fastconv_torch(tmp_path):
    path = str(tmp_path / "traced.pt")
    model = fct.swap_modules(small_cnn())
    x = torch.randn(2, 3, 8, 8)
    torch.jit.save(torch.jit.trace(model, x), path)
    torch.save(x, str(tmp_path / "x.pt"))
    expected = model(x).detach()
    code = textwrap.dedent(f"""
        import torch
        try:
            torch.jit.load({path!r})
        except RuntimeError as exc:
            print("without:", "fastconv::" in str(exc))
        import fastconv.torch
        out = torch.jit.load({path!r})(torch.load({str(tmp_path / "x.pt")!r}))
        torch.save(out, {str(tmp_path / "out.pt")!r})
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=HERE, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "without: True" in proc.stdout
    torch.testing.assert_close(torch.load(str(tmp_path / "out.pt")), expected, rtol=0, atol=0)


@jit_test
@pytest.mark.parametrize("layer", [nn.Conv2d(2, 3, 3), nn.MaxPool2d(2), nn.AvgPool2d(2),
                                   nn.ConvTranspose2d(2, 2, 3), nn.AdaptiveAvgPool2d((1, 1)),
                                   nn.AdaptiveMaxPool2d(3)])
def test_script_is_refused_with_a_clear_message(layer):
    model = fct.swap_modules(nn.Sequential(layer, nn.ReLU()))
    with pytest.raises(RuntimeError, match=r"torch.jit.script.*fastconv.torch.unswap_modules"):
        torch.jit.script(model)
    scripted = torch.jit.script(fct.unswap_modules(model))  # torch's layers script as usual
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(scripted(x), model(x))


# ----------------------------------------------------------------------------- memory format
def formats(*tensors):
    return [None if t is None else (t.is_contiguous(), t.is_contiguous(memory_format=CL))
            for t in tensors]


def conv_grads(fn, x, w, b):
    x, w = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    out = fn(x, w, b)
    gx, gw = torch.autograd.grad(out, (x, w), torch.ones_like(out))
    return out, gx, gw


CONV_LAYOUTS = [  # input shape, weight shape, kwargs
    ((2, 4, 7, 6), (6, 4, 3, 3), dict(padding=1)),
    ((2, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, groups=2, dilation=(1, 2))),
    ((2, 4, 7, 6), (4, 1, 3, 3), dict(groups=4, padding="same")),  # depthwise: (K,1,R,S) weight
    ((4, 7, 6), (6, 4, 3, 3), dict()),  # unbatched
    ((2, 4, 1, 1), (6, 4, 1, 1), dict()),  # 1x1 planes: both layouts at once
    ((2, 1, 5, 6), (1, 1, 3, 3), dict(padding=(0, 1))),  # one channel in and out
]


@pytest.mark.parametrize("xs, ws, kw", CONV_LAYOUTS)
@pytest.mark.parametrize("x_cl, w_cl", [(False, False), (True, False), (False, True),
                                        (True, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv2d_returns_torch_memory_format(xs, ws, kw, x_cl, w_cl, dtype):
    # float32 and float64 take different paths in torch (oneDNN or not), with different strides
    # on a grad_weight's size-1 axes
    x, w, b = (_x(*shape, grad=False).to(dtype) for shape in (xs, ws, ws[:1]))
    if x_cl and x.dim() == 4:
        x = x.contiguous(memory_format=CL)
    if w_cl:
        w = w.contiguous(memory_format=CL)
    ours = conv_grads(lambda x, w, b: fct.conv2d(x, w, b, **kw), x, w, b)
    theirs = conv_grads(lambda x, w, b: TF.conv2d(x, w, b, **kw), x, w, b)
    assert formats(*ours) == formats(*theirs)
    assert [t.stride() for t in ours] == [t.stride() for t in theirs]
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


TRANSPOSE_LAYOUTS = [  # input shape, weight shape (C_in, C_out // groups, kH, kW), kwargs
    ((2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((2, 4, 5, 6), (4, 1, 3, 2), dict(groups=4, dilation=(2, 1))),  # depthwise
    ((4, 5, 6), (4, 3, 3, 3), dict()),  # unbatched
    ((2, 4, 1, 1), (4, 6, 1, 1), dict()),  # 1x1 planes
    ((2, 1, 5, 6), (1, 1, 3, 3), dict(padding=(0, 1))),
]


@pytest.mark.parametrize("xs, ws, kw", TRANSPOSE_LAYOUTS)
@pytest.mark.parametrize("x_cl, w_cl", [(False, False), (True, False), (False, True),
                                        (True, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv_transpose2d_returns_torch_memory_format(xs, ws, kw, x_cl, w_cl, dtype):
    x, w = _x(*xs, grad=False).to(dtype), _x(*ws, grad=False).to(dtype)
    b = _x(ws[1] * kw.get("groups", 1), grad=False).to(dtype)
    if x_cl and x.dim() == 4:
        x = x.contiguous(memory_format=CL)
    if w_cl:
        w = w.contiguous(memory_format=CL)
    ours = conv_grads(lambda x, w, b: fct.conv_transpose2d(x, w, b, **kw), x, w, b)
    theirs = conv_grads(lambda x, w, b: TF.conv_transpose2d(x, w, b, **kw), x, w, b)
    assert [t.stride() for t in ours] == [t.stride() for t in theirs]
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _global_average(x):
    return fct.adaptive_avg_pool2d(x, 1)


GLOBAL_AVERAGES = (_global_average,)
POOLS = [
    (lambda x: fct.max_pool2d(x, 3, 2, 1), lambda x: TF.max_pool2d(x, 3, 2, 1)),
    (lambda x: fct.max_pool2d(x, 2, return_indices=True),
     lambda x: TF.max_pool2d(x, 2, return_indices=True)),
    (lambda x: fct.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
     lambda x: TF.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
    (lambda x: fct.adaptive_avg_pool2d(x, (3, 2)), lambda x: TF.adaptive_avg_pool2d(x, (3, 2))),
    (_global_average, lambda x: TF.adaptive_avg_pool2d(x, 1)),
    (lambda x: fct.adaptive_max_pool2d(x, (2, 4), return_indices=True),
     lambda x: TF.adaptive_max_pool2d(x, (2, 4), return_indices=True)),
    (lambda x: fct.adaptive_max_pool2d(x, 1), lambda x: TF.adaptive_max_pool2d(x, 1)),
]


def _strided(kind):
    base = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    return {
        "contiguous": base,
        "channels_last": base.contiguous(memory_format=CL),
        "permuted": base.permute(0, 1, 3, 2),  # neither
        "nhwc_view": torch.randn(2, 6, 5, 3, dtype=torch.float64).permute(0, 3, 1, 2)[:, :, 1:],
        "c1": torch.randn(2, 6, 5, 1, dtype=torch.float64).permute(0, 3, 1, 2),
        "hw1": torch.randn(2, 1, 1, 3, dtype=torch.float64).permute(0, 3, 1, 2),
        "unbatched": base[0],
    }[kind]


@pytest.mark.parametrize("ours, theirs", POOLS)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "permuted", "nhwc_view", "c1",
                                  "hw1", "unbatched"])
def test_pooling_returns_torch_memory_format(ours, theirs, kind):
    x = _strided(kind)
    if x.shape[-1] < 3:  # 1x1 planes: a window that fits
        ours_fn, theirs_fn = (lambda x: fct.max_pool2d(x, 1)), (lambda x: TF.max_pool2d(x, 1))
    else:
        ours_fn, theirs_fn = ours, theirs
    results = []
    for fn in (ours_fn, theirs_fn):
        xg = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype).copy_(x).requires_grad_()
        out = fn(xg)
        first = out[0] if isinstance(out, tuple) else out
        gx, = torch.autograd.grad(first, xg, torch.ones_like(first))
        results.append([*(out if isinstance(out, tuple) else (out,)), gx])
    assert [t.stride() for t in results[0]] == [t.stride() for t in results[1]]
    # a global average pooling sums in another order than torch's mean: within rounding
    tol = 1e-15 if x.shape[-1] >= 3 and ours in GLOBAL_AVERAGES else 0
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("xs, ws, x_cl, w_cl", [
    ((2, 3, 5, 5), (1, 3, 3, 3), True, False),  # one output channel: channels_last in place
    ((3, 5, 5), (4, 3, 3, 3), False, True),  # unbatched, channels_last weight
    ((2, 3, 5, 5), (4, 3, 3, 3), True, False),
])
def test_results_take_in_place_changes(xs, ws, x_cl, w_cl):
    # an operator's output that is a view of another tensor cannot be changed in place under
    # autograd (nn.ReLU(inplace=True) after a convolution)
    x, w = _x(*xs, cl=x_cl, grad=False), _x(*ws, cl=w_cl, grad=False)
    grads = []
    for conv in (fct.conv2d, TF.conv2d):
        xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out = conv(xg, wg, padding=1)
        out.relu_()
        grads.append(torch.autograd.grad(out.sum(), (xg, wg)))
        assert conv is TF.conv2d or not out._is_view()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    pooled, idx = fct.max_pool2d(_x(2, 1, 4, 4, cl=True), 2, return_indices=True)
    pooled.mul_(2)
    assert not pooled._is_view() and not idx._is_view()


def test_fake_strides_are_the_real_ones():
    # meta tensors run the fake implementations: the layout torch.compile plans with
    x, w = _x(2, 4, 7, 6, cl=True, grad=False), _x(6, 4, 3, 3, grad=False)
    cases = [
        (torch.ops.fastconv.conv2d, (x, w, None, [1, 1], [1, 1], [1, 1], 1, False)),
        (torch.ops.fastconv.conv2d, (x[0], w.contiguous(memory_format=CL), None, [2, 1], [0, 0],
                                     [1, 1], 1, False)),
        (torch.ops.fastconv.max_pool2d, (x, [3, 3], [2, 2], [1, 1], [1, 1], True)),
        (torch.ops.fastconv.avg_pool2d, (x, [2, 2], [], [0, 0], False, True, None)),
        (torch.ops.fastconv.conv_transpose2d, (x, w.transpose(0, 1), None, [2, 1], [1, 0],
                                               [1, 0], 1, [1, 2])),
        (torch.ops.fastconv.adaptive_avg_pool2d, (x, [1, 1])),
        (torch.ops.fastconv.adaptive_avg_pool2d, (x, [3, 4])),
        (torch.ops.fastconv.adaptive_max_pool2d, (x[0], [3, 4])),
        (torch.ops.fastconv.adaptive_avg_pool2d_backward, (x[:, :, :1, :1], x)),
    ]
    for op, args in cases:
        real = op(*args)
        fake = op(*[a.to("meta") if isinstance(a, torch.Tensor) else a for a in args])
        real, fake = (real, fake) if isinstance(real, tuple) else ((real,), (fake,))
        assert [(t.shape, t.stride(), t.dtype) for t in fake] == [
            (t.shape, t.stride(), t.dtype) for t in real]


# ----------------------------------------------------------------------------- copies
def test_channels_last_input_and_gradients_are_not_copied(monkeypatch):
    captured = {}
    forward, backward = fastconv.functional.conv2d, fastconv.functional.conv2d_backward

    def spy_forward(x, *args):
        captured["x"] = x
        return forward(x, *args)

    def spy_backward(*args, **kw):
        captured["grads"] = backward(*args, **kw)
        return captured["grads"]

    monkeypatch.setattr(fastconv.functional, "conv2d", spy_forward)
    monkeypatch.setattr(fastconv.functional, "conv2d_backward", spy_backward)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=CL).requires_grad_(True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    out = fct.conv2d(x, w, padding=1)
    assert captured["x"].__array_interface__["data"][0] == x.data_ptr()  # NHWC read in place
    assert out.is_contiguous(memory_format=CL)
    x2 = torch.randn(2, 3, 8, 8, requires_grad=True)
    fct.conv2d(x2, w, padding=1).backward(torch.ones(2, 4, 8, 8))
    gx, gw, _ = captured["grads"]
    # the kernels' fresh arrays become the .grad tensors themselves
    assert x2.grad.data_ptr() == gx.__array_interface__["data"][0]
    assert w.grad.data_ptr() == gw.__array_interface__["data"][0]


def test_the_function_classes_remain():
    x, w = _x(1, 2, 6, 6), _x(3, 2, 3, 3)
    torch.testing.assert_close(fct.Conv2dFunction.apply(x, w, None, 1, 1, 1, 1),
                               TF.conv2d(x, w, None, 1, 1, 1, 1))
    torch.testing.assert_close(fct.MaxPool2dFunction.apply(x, 2, None, 0, 1, False, False),
                               TF.max_pool2d(x, 2))
    torch.testing.assert_close(fct.AvgPool2dFunction.apply(x, 2, None, 0, False, True, None),
                               TF.avg_pool2d(x, 2))
    torch.testing.assert_close(
        fct.ConvTranspose2dFunction.apply(x, w.transpose(0, 1), None, 2, 1, 1, 1, 1),
        TF.conv_transpose2d(x, w.transpose(0, 1), None, 2, 1, 1, 1, 1))
    torch.testing.assert_close(fct.AdaptiveAvgPool2dFunction.apply(x, (3, None)),
                               TF.adaptive_avg_pool2d(x, (3, None)))
    out, idx = fct.AdaptiveMaxPool2dFunction.apply(x, 4, True)
    ref, ref_idx = TF.adaptive_max_pool2d(x, 4, True)
    torch.testing.assert_close(out, ref)
    assert torch.equal(idx, ref_idx)


def test_argument_errors_name_the_argument():
    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    with pytest.raises(TypeError, match="stride"):
        fct.conv2d(x, w, stride=1.5)
    with pytest.raises(ValueError, match="padding"):
        fct.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match="padding='same' requires stride 1"):
        fct.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(TypeError, match="ceil_mode"):
        fct.max_pool2d(x, 2, ceil_mode=1)
    with pytest.raises(TypeError, match="kernel_size"):
        fct.avg_pool2d(x, "2")
    with pytest.raises(ValueError, match="divisor_override"):
        fct.avg_pool2d(x, 2, divisor_override=0)
