"""The benchmark's other engines (fastconv.cli.bench_peers): each one, where it is installed,
computes the very layer fastconv computes (forward; JAX's forward+backward the same gradients),
and the benchmark times it beside fastconv and judges against the fastest."""
import importlib.util

import numpy as np
import pytest

from fastconv import functional
from fastconv.cli import bench, bench_peers

CASES = [
    bench.Case("conv", "conv", (2, 4, 9, 8), 6, 3, stride=2, pad=1, dilation=2, groups=2),
    bench.Case("conv-relu", "conv", (2, 3, 9, 8), 4, 3, pad=1, activation="relu"),
    bench.Case("conv-t", "conv_transpose", (2, 4, 5, 4), 6, 3, stride=2, pad=1, output_padding=1,
               groups=2),
    bench.Case("max", "max", (2, 3, 9, 8), kernel=3, stride=2, pad=1),
    bench.Case("avg-exclude-pad", "avg", (2, 3, 9, 8), kernel=3, pad=1, count_include_pad=False),
    bench.Case("avg", "avg", (2, 3, 9, 8), kernel=2, stride=2, pad=1),
]
ENGINES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx"),
           "jax": ("jax",)}


def installed(name):
    return all(importlib.util.find_spec(m) for m in ENGINES[name])


def peer(name):
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    return next(p for p in bench_peers.available_peers(1) if p.name == name)


def inputs(case):
    return bench._case_inputs(case, np.random.default_rng(0))


def fastconv_gradients(case, x, w, b, y):
    """fastconv's gradients of sum(y): (input, weight, bias) or (input,)."""
    ones = np.ones_like(y)
    if case.kind == "conv" and case.activation:
        kw = dict(case.conv_kwargs(), activation=case.activation)
        return functional.conv2d_backward(ones, x, w, **kw, output=y)
    if case.kind == "conv":
        return functional.conv2d_backward(ones, x, w, **case.conv_kwargs())
    if case.kind == "conv_transpose":
        return functional.conv_transpose2d_backward(ones, x, w, **case.conv_kwargs())
    if case.kind == "avg":
        return (functional.avg_pool2d_backward(ones, x.shape, **case.pool_kwargs()),)
    _, idx = functional.max_pool2d(x, return_indices=True, **case.pool_kwargs())
    return (functional.max_pool2d_backward(ones, idx, x.shape),)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("name", list(ENGINES))
def test_each_engine_computes_the_layer(name, case):
    x, w, b = inputs(case)
    fwd, fwd_bwd = peer(name).make(case, x, w, b)
    want = bench._fastconv_fns(case, x, w, b, functional)[0]()
    np.testing.assert_allclose(np.asarray(fwd()), want, rtol=1e-5, atol=1e-5)
    if name != "jax":  # inference engines: forward only
        assert fwd_bwd is None
        return
    got = fwd_bwd()
    for g, e in zip(got, fastconv_gradients(case, x, w, b, want), strict=True):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-5, atol=1e-5)


def test_only_installed_engines_are_offered_and_skip_leaves_some_out():
    names = [p.name for p in bench_peers.available_peers(2)]
    assert names == [n for n in ENGINES if installed(n)]
    assert "jax" not in [p.name for p in bench_peers.available_peers(2, skip=("jax",))]


def fake_peer(name, fails=False):
    """An engine whose closures do nothing (the test sets the times), or that cannot build."""
    def make(case, x, w, b):
        if fails:
            raise RuntimeError("unsupported operator\nsecond line")
        return (lambda: None), None
    return bench_peers.Peer(name, "1.0", make)


def test_run_case_times_the_engines_and_names_the_fastest(monkeypatch, capsys):
    medians = {"fastconv": 2.0, "onnxruntime": 4.0, "jax": 1.0}
    monkeypatch.setattr(bench, "_time_in_blocks", lambda fns, repeats: {
        n: medians.get(n, 8.0) / 1e3 for n in fns})
    peers = [fake_peer("onnxruntime"), fake_peer("jax"), fake_peer("openvino", fails=True)]
    row = bench.run_case(CASES[0], None, repeats=1, with_reference=False, peak=100.0,
                         rng=np.random.default_rng(0), peers=peers)
    assert row.ms["onnxruntime fwd"] == 4.0 and row.ms["jax fwd"] == 1.0
    assert "jax fwd+bwd" not in row.ms  # a peer without a backward is timed forward only
    assert (row.peer_fwd, row.ratio_peer_fwd) == ("jax", 2.0)
    assert row.peer_fwd_bwd == "" and np.isnan(row.ratio_peer_fwd_bwd)
    assert "(openvino cannot run conv: RuntimeError: unsupported operator)" in \
        capsys.readouterr().out


def test_the_table_has_a_column_per_engine_and_marks_pooling_without_indices():
    rows = [bench.Row("m", "max", ms={"fastconv fwd": 1.0, "fastconv fwd+bwd": 2.0,
                                      "onnxruntime fwd": 0.5, "jax fwd": 3.0,
                                      "jax fwd+bwd": 4.0},
                      peer_fwd="onnxruntime", ratio_peer_fwd=2.0, peer_fwd_bwd="jax",
                      ratio_peer_fwd_bwd=0.5, other_load=0.0)]
    table = bench.format_table(rows, have_torch=False, with_reference=False)
    header, _, line, note = table.splitlines()
    assert "ort fwd" in header and "jax fwd" in header and "jax f+b" in header
    assert "ov fwd" not in header and "best fwd" in header
    assert "0.50*" in line and "3.00*" in line and "| ort | 2.00 | jax | 0.50 |" in line
    assert note.startswith("* max pooling: onnxruntime, jax return no indices")
