"""fastconv bench --bf16 (fastconv.cli.bench_bf16): which cases it times, the closures it
times, its table and its judgement of the bfloat16 targets. No speed is asserted here."""
import json

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, cli
from fastconv.cli import bench, bench_bf16
from conv_helpers import num_threads

ml_dtypes = pytest.importorskip("ml_dtypes")
TINY_3X3 = bench.Case("tiny-3x3", "conv", (2, 16, 9, 8), 24, 3, pad=1)
TINY_1X1 = bench.Case("tiny-1x1", "conv", (2, 16, 5, 5), 24, 1)
TINY_5X5 = bench.Case("tiny-5x5", "conv", (2, 3, 9, 8), 4, 5)
TINY_MAX = bench.Case("tiny-max", "max", (2, 3, 9, 8), kernel=3, stride=2, pad=1)
ONE_CALL = ["--bf16", "--repeats", "1", "--no-torch", "--threads", "1"]


@pytest.fixture
def tiny_cases(monkeypatch):
    monkeypatch.setattr(bench, "CASES", [TINY_3X3, TINY_1X1, TINY_5X5, TINY_MAX])
    with num_threads(fastconv.get_num_threads()):
        yield


def test_only_3x3_and_1x1_convolutions_are_compared():
    assert [bench_bf16.eligible(c) for c in (TINY_3X3, TINY_1X1, TINY_5X5, TINY_MAX)] == [
        True, True, False, False]


def test_the_timed_closures_compute_what_they_say():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(TINY_3X3.shape).astype(np.float32)
    w = rng.standard_normal(TINY_3X3.weight_shape()).astype(np.float32)
    b = rng.standard_normal(TINY_3X3.k).astype(np.float32)
    bf16 = np.dtype(ml_dtypes.bfloat16)
    fns = bench_bf16._fns(TINY_3X3, x, w, b, None, bf16)
    assert set(fns) == {"fc f32", "fc bf16", "fc bf16 arr", "convert"}
    kw = TINY_3X3.conv_kwargs()
    assert np.array_equal(fns["fc f32"](), fastconv.conv2d(x, w, b, **kw))
    assert np.array_equal(fns["fc bf16"](), fastconv.conv2d(x, w, b, **kw, precision="bf16"))
    arr = fns["fc bf16 arr"]()
    assert arr.dtype == bf16
    assert np.array_equal(arr, fastconv.conv2d(x.astype(bf16), w.astype(bf16), b.astype(bf16),
                                               **kw))
    conv = fns["convert"]()
    assert conv.dtype == bf16
    assert np.allclose(conv.astype(np.float32), arr.astype(np.float32), rtol=2**-7, atol=1e-3)


def test_the_command_prints_the_table_and_writes_json(tiny_cases, tmp_path, capsys):
    out = tmp_path / "bf16.json"
    assert cli.main(["bench", "--json", str(out)] + ONE_CALL) == 0
    text = capsys.readouterr().out
    assert f"bfloat16 path {_kernels.get_bf16_path()}" in text
    assert "tiny-3x3 |" in text and "tiny-1x1 |" in text
    assert "tiny-5x5" not in text and "tiny-max" not in text
    result = json.loads(out.read_text())
    assert result["bf16_path"] == _kernels.get_bf16_path()
    assert set(result["bf16_ms"]) == {"tiny-3x3", "tiny-1x1"}
    assert set(result["bf16_ms"]["tiny-3x3"]) == {"fc f32", "fc bf16", "fc bf16 arr", "convert"}


def test_bf16_and_dask_do_not_mix(capsys):
    assert cli.main(["bench", "--dask", "--bf16"]) == 2
    assert "--bf16" in capsys.readouterr().err


ROWS = [("resnet-c64", {"fc f32": 10.0, "fc bf16": 2.4, "fc bf16 arr": 2.6, "convert": 11.0,
                        "torch bf16": 2.5}),
        ("deep", {"fc f32": 10.0, "fc bf16": 5.0, "fc bf16 arr": 5.5, "convert": 10.5,
                  "torch bf16": 4.0}),
        ("pointwise", {"fc f32": 1.0, "fc bf16": 0.6, "fc bf16 arr": 0.7, "convert": 1.2})]


def test_targets_of_each_path():
    amx = {d: ok for d, _, ok in bench_bf16.targets(ROWS, "amx")}
    assert amx == {"resnet-c64: bf16 >= 4.0x float32 (amx)": True,
                   "resnet-c64: bf16 no slower than torch's": True,
                   "deep: bf16 >= 4.0x float32 (amx)": False,
                   "deep: bf16 no slower than torch's": False,
                   "pointwise: bf16 >= 4.0x float32 (amx)": False}
    avx = {d: ok for d, _, ok in bench_bf16.targets(ROWS, "avx512_bf16")}
    assert avx == {"resnet-c64: bf16 >= 1.6x float32 (avx512_bf16)": True,
                   "deep: bf16 >= 1.6x float32 (avx512_bf16)": True,
                   "pointwise: bf16 >= 1.6x float32 (avx512_bf16)": True}
    (desc, measured, ok), = bench_bf16.targets(ROWS, "portable")
    assert ok and measured == "worst 0.58"
    slow = [("x", dict(ROWS[0][1], convert=2.0))]
    assert not bench_bf16.targets(slow, "portable")[0][2]
