"""fastconv bench (fastconv.cli.bench), the benchmark suite. No speed is asserted here (timings belong to the
benchmark run): these tests hold its statistics, its judgement of the bar and every option of
`fastconv bench` to what they say, with tiny cases, one timed call per contender."""
import dataclasses
import json
import math
import time

import numpy as np
import pytest

import fastconv
from fastconv import cli
from fastconv.cli import bench
from conv_helpers import num_threads

TINY_CONV = bench.Case("tiny-conv", "conv", (2, 3, 9, 8), 4, 3, pad=1)
TINY_MAX = bench.Case("tiny-max", "max", (2, 3, 9, 8), kernel=3, stride=2, pad=1)
TINY_CONVT = bench.Case("tiny-convt", "conv_transpose", (2, 4, 5, 4), 6, 3, stride=2, pad=1,
                        output_padding=1, groups=2)
TINY_AVG = bench.Case("tiny-avg", "avg", (2, 3, 9, 8), kernel=3, stride=1, pad=1,
                      count_include_pad=False)
ONE_CALL = ["--repeats", "1", "--no-reference", "--no-torch", "--no-peers", "--threads", "1"]


@pytest.fixture
def tiny_cases(monkeypatch):
    """The suite with three tiny cases in place of the real ones: runs in well under a second."""
    monkeypatch.setattr(bench, "CASES", [TINY_CONV, TINY_MAX, TINY_AVG])
    monkeypatch.setattr(bench, "QUICK", ("tiny-max",))
    monkeypatch.setattr(bench, "BLAS_COOLDOWN_S", 0.0)
    with num_threads(fastconv.get_num_threads()):  # --threads changes the count: restore it
        yield


class FakeClock:
    """perf_counter for closures that each take a fixed number of fake seconds."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        self.calls = []
        monkeypatch.setattr(bench.time, "perf_counter", lambda: self.now)

    def closure(self, name, seconds):
        def call():
            self.calls.append(name)
            self.now += seconds(len(self.calls)) if callable(seconds) else seconds
        return call


# ------------------------------------------------------------------------------ statistics
def test_time_in_blocks_takes_medians_of_alternating_blocks(monkeypatch):
    clock = FakeClock(monkeypatch)
    costs = iter([1, 9, 1, 1, 1] * 10)  # an outlier per block of `a`: the median ignores it
    fns = {"a": clock.closure("a", lambda _: next(costs)), "b": clock.closure("b", 2.0)}
    med = bench._time_in_blocks(fns, repeats=10, warmup=1, rounds=2)
    assert med == {"a": 1, "b": 2.0}
    # a warm-up call and 5 timed calls of one contender, then of the other, twice
    assert clock.calls == (["a"] * 6 + ["b"] * 6) * 2


def test_ratio_in_rounds_pairs_blocks_and_alternates_their_order(monkeypatch):
    clock = FakeClock(monkeypatch)
    # the machine slows down 10x halfway through the 30 calls: the pairs after it see the same
    # slowdown on both sides, and the one round it splits is outvoted by the median
    slow = lambda n: 10.0 if n > 15 else 1.0  # noqa: E731
    num = clock.closure("num", lambda n: 2.0 * slow(n))
    den = clock.closure("den", lambda n: slow(n))
    assert bench._ratio_in_rounds(num, den, calls=2, rounds=5, warmup=1) == pytest.approx(2.0)
    firsts = clock.calls[::6]  # each round: 1 + 2 calls of one closure, then of the other
    assert firsts == ["den", "num", "den", "num", "den"]


def test_ratio_in_rounds_is_the_median_over_rounds(monkeypatch):
    clock = FakeClock(monkeypatch)
    per_round = iter([3.0, 1.5, 1.0, 2.0, 2.5])  # num's cost in each round; den's is 1
    num = clock.closure("num", lambda _: next(per_round))
    den = clock.closure("den", 1.0)
    assert bench._ratio_in_rounds(num, den, calls=1, rounds=5, warmup=0) == 2.0


def test_geomean_ignores_missing_values():
    assert bench.geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert bench.geomean([0.5, float("nan"), 2.0]) == pytest.approx(1.0)
    assert math.isnan(bench.geomean([]))


# ------------------------------------------------------------------------------ the bar
def passing_rows():
    """Rows for the suite's cases that meet every criterion, every other engine timed."""
    rows = []
    for case in bench.CASES:
        r = bench.Row(case.name, case.kind, workspace_mb=2.0, batch_im2col_mb=100.0,
                      peer_fwd="openvino", ratio_peer_fwd=0.7, peer_fwd_bwd="torch",
                      ratio_peer_fwd_bwd=0.4)
        r.ms = {f"{n} fwd": 1.0 for n in bench.PEERS}
        if case.name in bench.LARGE:
            r.peak_fraction, r.peak_fraction_fwd_bwd, r.f64_peak_fraction = 0.9, 0.8, 0.85
        rows.append(r)
    return rows


SPEEDUPS = {name: 1.9 for name in bench.LARGE}
EXACT = {name: {p: (1e-7, 2e-7) for p in ("forward", "grad_input", "grad_weight")}
         for name in bench.EXACTNESS_CASES}


def verdicts(rows, scaling=SPEEDUPS, exactness=EXACT):
    return {desc: ok for desc, _, ok in bench.check_bar(rows, scaling, exactness)}


def test_the_bar_passes_when_every_criterion_holds():
    v = verdicts(passing_rows())
    # engines installed; forward: worst, mean; forward+backward: worst, mean; 5 large layers x
    # (forward, forward+backward, float64) peak fractions; 5 speed-ups; 3 exactness; workspace
    assert len(v) == 1 + 2 + 2 + 15 + 5 + 3 + 1 and all(v.values())


FWD_WORST = "forward: every case at most 1.0x the fastest other engine"
FWD_BWD_WORST = "forward+backward: every case at most 0.9x the faster of torch and jax"


@pytest.mark.parametrize("case,field,value,criterion", [
    ("pointwise", "ratio_peer_fwd", 1.01, FWD_WORST),
    ("max-3x3-s2-p1", "ratio_peer_fwd", 1.2, FWD_WORST),
    ("lenet-conv1", "ratio_peer_fwd_bwd", 0.91, FWD_BWD_WORST),
    ("deep", "peak_fraction", 0.84, "deep: forward at >= 85% of the FMA peak"),
    ("dilated", "peak_fraction_fwd_bwd", 0.74, "dilated: forward+backward at >= 75% of the FMA peak"),
    ("alexnet-first", "f64_peak_fraction", 0.79,
     "alexnet-first: float64 forward at >= 80% of the float64 FMA peak"),
    ("strided", "workspace_mb", 80.0, "workspace bounded (well below the batch im2col)"),
])
def test_one_case_past_its_limit_fails_its_criterion_only(case, field, value, criterion):
    rows = passing_rows()
    setattr(next(r for r in rows if r.case == case), field, value)
    v = verdicts(rows)
    assert v.pop(criterion) is False
    assert all(v.values())


def test_the_geometric_means_are_judged_over_all_cases():
    rows = passing_rows()
    for r in rows:
        r.ratio_peer_fwd = 0.81
    v = verdicts(rows)
    assert not v["forward: geometric mean of fastconv / the fastest other engine <= 0.8"]
    assert v[FWD_WORST]
    assert v["forward+backward: geometric mean of fastconv / the faster of torch and jax <= 0.5"]


def test_a_missing_engine_fails_the_bar():
    rows = passing_rows()
    for r in rows:
        del r.ms["openvino fwd"]
    v = verdicts(rows)
    assert v.pop("every other engine installed and timed (torch, onnxruntime, openvino, jax)") \
        is False
    assert all(v.values())


def test_a_slow_thread_speed_up_fails():
    v = verdicts(passing_rows(), dict(SPEEDUPS, strided=1.79))
    assert not v["strided: 1 -> 2 thread speed-up >= 1.8x"]
    assert v["deep: 1 -> 2 thread speed-up >= 1.8x"]


@pytest.mark.parametrize("pass_name", ["forward", "grad_input", "grad_weight"])
def test_a_layer_less_exact_than_torch_fails_its_pass(pass_name):
    exact = {name: dict(e) for name, e in EXACT.items()}
    exact["deep"][pass_name] = (3e-7, 2e-7)
    v = verdicts(passing_rows(), exactness=exact)
    criterion = f"float32 {pass_name} error against float64 no larger than torch's"
    assert v.pop(criterion) is False
    assert all(v.values())
    measured = {d: m for d, m, _ in bench.check_bar(passing_rows(), SPEEDUPS, exact)}[criterion]
    assert measured.startswith("worst 1.50x torch's (deep")


def test_without_the_whole_suite_or_torch_only_fastconv_criteria_are_judged():
    v = verdicts(passing_rows()[:3], {}, exactness={})
    assert list(v) == ["workspace bounded (well below the batch im2col)"]
    rows = [r for r in passing_rows() if r.case in bench.LARGE]
    assert len(verdicts(rows, {}, exactness={})) == 15 + 1


def test_the_exit_status_says_whether_the_bar_held(tiny_cases, monkeypatch, capsys):
    argv = ["bench"] + ONE_CALL
    monkeypatch.setattr(bench, "check_bar", lambda *a: [("a criterion", "1", True)])
    assert cli.main(argv) == 0
    monkeypatch.setattr(bench, "check_bar", lambda *a: [("a criterion", "1", True),
                                                        ("another", "2", False)])
    assert cli.main(argv) == bench.BAR_MISSED == 3
    assert "[FAIL] another: 2" in capsys.readouterr().out


# ------------------------------------------------------------------------------ the suite
def test_run_case_times_every_contender_and_measures_the_rest():
    rng = np.random.default_rng(0)
    row = bench.run_case(TINY_CONV, None, repeats=1, with_reference=True, peak=100.0, rng=rng)
    assert set(row.ms) == {"fastconv fwd", "fastconv fwd+bwd", "reference fwd",
                           "reference fwd+bwd"}
    assert all(ms > 0 for ms in row.ms.values())
    flops = 2 * 2 * 4 * 9 * 8 * 3 * 9
    assert row.gflops["fastconv fwd"] == pytest.approx(flops / row.ms["fastconv fwd"] / 1e6)
    assert row.gflops["fastconv fwd+bwd"] == pytest.approx(
        3 * flops / row.ms["fastconv fwd+bwd"] / 1e6)
    assert row.peak_fraction == pytest.approx(row.gflops["fastconv fwd"] / 100.0)
    assert row.f64_over_f32 > 0 and row.workspace_mb > 0
    assert row.batch_im2col_mb == pytest.approx(2 * 9 * 8 * 3 * 9 * 4 / 2**20)  # MiB
    assert math.isnan(row.ratio_fwd)  # no torch


@pytest.mark.parametrize("case", [TINY_CONV, TINY_MAX], ids=["conv", "max"])
def test_float64_is_timed_against_float32_on_the_same_forward(case, monkeypatch):
    pairs = []
    monkeypatch.setattr(bench, "_ratio_in_rounds", lambda num, den, calls: pairs.append(
        (num(), den())) or 2.0)
    row = bench.run_case(case, None, repeats=7, with_reference=False, peak=100.0,
                         rng=np.random.default_rng(0))
    (y64, y32), = pairs
    assert y64.dtype == np.float64 and y32.dtype == np.float32 and row.f64_over_f32 == 2.0
    np.testing.assert_allclose(y64, y32, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [TINY_MAX, TINY_AVG], ids=["max", "avg"])
def test_run_case_times_pooling(case):
    row = bench.run_case(case, None, repeats=1, with_reference=False, peak=100.0,
                         rng=np.random.default_rng(0))
    assert set(row.ms) == {"fastconv fwd", "fastconv fwd+bwd"}
    assert not row.gflops and math.isnan(row.peak_fraction) and row.f64_over_f32 > 0


@pytest.mark.parametrize("case", [TINY_CONV, TINY_CONVT, TINY_MAX, TINY_AVG],
                         ids=["conv", "conv_transpose", "max", "avg"])
def test_the_timed_closures_compute_what_they_time(case):
    """fastconv's and the reference's closures agree: each contender does the same work."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(case.shape)
    w = b = None
    if case.kind in bench.CONV_KINDS:
        w, b = rng.standard_normal(case.weight_shape()), rng.standard_normal(case.k)
    fast = bench._fastconv_fns(case, x, w, b, fastconv.functional)
    ref = bench._fastconv_fns(case, x, w, b, fastconv.reference)
    for f, r in zip(fast, ref):
        got, want = f(), r()
        for g, e in zip(*(v if isinstance(v, tuple) else (v,) for v in (got, want))):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)


def test_run_case_times_a_transposed_convolution():
    row = bench.run_case(TINY_CONVT, None, repeats=1, with_reference=True, peak=100.0,
                         rng=np.random.default_rng(0))
    assert set(row.ms) == {"fastconv fwd", "fastconv fwd+bwd", "reference fwd",
                           "reference fwd+bwd"}
    flops = 2 * 2 * 4 * 5 * 4 * 3 * 9  # every input element times its 3 filters' 9 taps
    assert row.gflops["fastconv fwd"] == pytest.approx(flops / row.ms["fastconv fwd"] / 1e6)
    assert row.batch_im2col_mb == pytest.approx(2 * 5 * 4 * 6 * 9 * 4 / 2**20)
    assert row.f64_over_f32 > 0 and row.workspace_mb > 0


def test_transposed_cases_are_compared_with_torch(monkeypatch):
    torch = pytest.importorskip("torch")
    calls = []
    real = torch.nn.functional.conv_transpose2d
    monkeypatch.setattr(torch.nn.functional, "conv_transpose2d",
                        lambda *a, **k: calls.append(k) or real(*a, **k))
    row = bench.run_case(TINY_CONVT, torch, repeats=1, with_reference=False, peak=100.0,
                         rng=np.random.default_rng(0))
    assert calls and all(k == TINY_CONVT.conv_kwargs() for k in calls)
    assert row.ratio_fwd > 0 and row.ratio_fwd_bwd > 0


def test_thread_scaling_reports_each_case():
    speedups = bench.thread_scaling([TINY_CONV], 2, repeats=1, rng=np.random.default_rng(0))
    assert list(speedups) == ["tiny-conv"] and speedups["tiny-conv"] > 0


# ------------------------------------------------------------------------------ the command
def test_bench_runs_the_cases_asked_and_writes_json(tiny_cases, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--case", "tiny-max", "--case", "tiny-conv", "--json", str(out)] + ONE_CALL
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "tiny-conv" in text and "tiny-max" in text and "tiny-avg" not in text
    assert "1 threads" in text and "fp32 FMA peak" in text
    result = json.loads(out.read_text())
    assert [r["case"] for r in result["rows"]] == ["tiny-conv", "tiny-max"]  # suite order
    assert result["threads"] == 1 and result["torch"] is None and result["fma_peak_gflops"] > 0
    assert result["thread_speedup"] == {}
    assert {b["criterion"] for b in result["bar"]} == {
        "workspace bounded (well below the batch im2col)"}


def test_quick_runs_the_quick_subset(tiny_cases, capsys):
    assert cli.main(["bench", "--quick"] + ONE_CALL) == 0
    text = capsys.readouterr().out
    assert "tiny-max:" in text and "tiny-conv:" not in text


def test_reference_runs_unless_no_reference(tiny_cases, capsys):
    argv = ["bench", "--case", "tiny-conv", "--repeats", "1", "--no-torch"]
    assert cli.main(argv) == 0
    assert "ref fwd" in capsys.readouterr().out
    assert cli.main(argv + ["--no-reference"]) == 0
    assert "ref fwd" not in capsys.readouterr().out


def test_repeats_sets_the_number_of_timed_calls(tiny_cases, monkeypatch):
    seen = []
    real = bench.run_case
    monkeypatch.setattr(bench, "run_case", lambda case, torch, repeats, *a: seen.append(repeats)
                        or real(case, torch, 1, *a))
    argv = ["bench", "--case", "tiny-max", "--no-reference", "--no-torch"]
    for extra in (["--repeats", "4"], [], ["--quick"]):
        assert cli.main(argv + extra) == 0
    assert seen == [4, 7, 3]


def test_seed_sets_the_inputs(tiny_cases, monkeypatch):
    drawn = []
    monkeypatch.setattr(bench, "run_case",
                        lambda case, torch, repeats, with_ref, peak, rng, peers: drawn.append(rng.random())
                        or bench.Row(case.name, case.kind, ms={"fastconv fwd": 1.0,
                                                               "fastconv fwd+bwd": 1.0}))
    for seed in ("3", "3", "4"):
        assert cli.main(["bench", "--case", "tiny-max", "--seed", seed] + ONE_CALL) == 0
    assert drawn[0] == drawn[1] != drawn[2]


def test_threads_sets_fastconv_threads(tiny_cases, capsys):
    assert cli.main(["bench", "--case", "tiny-max", "--threads", "2", "--repeats", "1",
                     "--no-reference", "--no-torch"]) == 0
    assert "2 threads" in capsys.readouterr().out
    assert fastconv.get_num_threads() == 2


def test_torch_is_timed_side_by_side_unless_no_torch(tiny_cases, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--case", "tiny-conv", "--case", "tiny-avg", "--repeats", "1",
                     "--no-reference", "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["torch"] == torch.__version__
    for r in result["rows"]:
        assert r["ratio_fwd"] > 0 and r["ratio_fwd_bwd"] > 0
        assert r["ratio_fwd"] == pytest.approx(r["ms"]["fastconv fwd"] / r["ms"]["torch fwd"])
    capsys.readouterr()
    assert cli.main(["bench", "--case", "tiny-conv"] + ONE_CALL) == 0
    assert "torch fwd" not in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--threads", "0"], ["--repeats", "0"], ["--repeats", "-2"],
                                 ["--threads", "two"]])
def test_bad_counts_are_rejected(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench"] + bad)
    assert exc.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_an_unknown_case_is_rejected_with_the_names(capsys):
    assert cli.main(["bench", "--case", "resnet-c65"] + ONE_CALL) == 2
    out, text = capsys.readouterr()
    assert text.startswith("fastconv bench: error: --case: unknown case(s) ['resnet-c65']")
    assert all(c.name in text for c in bench.CASES) and out == ""


@pytest.mark.parametrize("where", ["missing-dir/x.json", "a-dir"])
def test_an_unwritable_json_path_fails_before_the_run(where, tmp_path, monkeypatch, capsys):
    (tmp_path / "a-dir").mkdir()

    def never(*args):
        raise AssertionError("the suite ran")

    monkeypatch.setattr(bench, "run_case", never)
    monkeypatch.setattr(bench._kernels, "fma_peak_gflops", never)
    path = tmp_path / where
    assert cli.main(["bench", "--case", "lenet-conv1", "--json", str(path)] + ONE_CALL) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"fastconv bench: error: --json {path}: ") and out == ""
    assert ("does not exist" if "missing" in where else "is a directory") in err


def test_every_performance_case_is_in_the_suite():
    names = [c.name for c in bench.CASES]
    assert names == ["lenet-conv1", "lenet-conv2", "cifar-first", "resnet-c16", "resnet-c64",
                     "strided", "deep", "pointwise", "alexnet-first", "depthwise", "dilated",
                     "aspp-d24", "resnet-c64-relu", "max-2x2-s2", "max-3x3-s2-p1", "avg-2x2-s2",
                     "avg-3x3-s1-p1-nopad", "dcgan-up", "unet-up"]
    assert set(bench.QUICK) <= set(names) and set(bench.LARGE) <= set(names)
    assert set(bench.EXACTNESS_CASES) <= set(names)


def test_the_exactness_table_measures_both_against_float64(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(bench, "EXACTNESS_CASES", ("tiny-conv",))
    table = bench.exactness_table([TINY_CONV, TINY_MAX], torch, np.random.default_rng(0))
    assert list(table) == ["tiny-conv"]  # pooling and the other cases are not measured
    for pass_name in ("forward", "grad_input", "grad_weight"):
        ours, theirs = table["tiny-conv"][pass_name]
        assert 0 < ours < 1e-6 and 0 < theirs < 1e-6, (pass_name, ours, theirs)
    assert bench._relative_error(np.float32([1, 3]), np.array([1.0, 4.0])) == 0.25
    text = bench.format_exactness(table)
    assert text.splitlines()[-1].startswith("tiny-conv | ") and text.count("e-") == 6


def test_conv_flops_count_only_the_taps_that_read_the_input():
    """A rate-24 atrous branch on a 14x14 map reads the input through its centre tap only: its
    flops are a 1x1 convolution's; an ordinary padded 3x3 counts all nine taps."""
    aspp = next(c for c in bench.CASES if c.name == "aspp-d24")
    n, c, h, w = aspp.shape
    assert bench._conv_flops(aspp, (n, aspp.k, h, w)) == 2.0 * n * aspp.k * h * w * c
    deep = next(c for c in bench.CASES if c.name == "deep")
    n, c, h, w = deep.shape
    assert bench._conv_flops(deep, (n, deep.k, h, w)) == 2.0 * n * deep.k * h * w * c * 9


TINY_RELU = bench.Case("tiny-relu", "conv", (2, 3, 9, 8), 4, 3, pad=1, activation="relu")


def test_conv_relu_case_times_fused_unfused_and_torch(monkeypatch):
    """The convolution + ReLU case: fastconv fused, fastconv unfused (a ReLU pass after the
    convolution) and torch's conv2d + relu, all computing the same numbers; the full suite has
    resnet-c64 + ReLU."""
    assert [c for c in bench.CASES if c.activation] == [
        bench.Case("resnet-c64-relu", "conv", (64, 64, 32, 32), 64, 3, pad=1, activation="relu")]
    rng = np.random.default_rng(0)
    x, w, b = bench._case_inputs(TINY_RELU, rng)
    fused = bench._fastconv_fns(TINY_RELU, x, w, b, fastconv.functional)
    unfused = bench._unfused_fns(TINY_RELU, x, w, b, fastconv.functional)
    reference = bench._fastconv_fns(TINY_RELU, x, w, b, fastconv.reference)
    want = np.maximum(fastconv.conv2d(x, w, b, padding=1), 0)
    assert (want == 0).any() and (want > 0).any()
    for fwd, fwd_bwd in (fused, unfused, reference):
        np.testing.assert_allclose(fwd(), want, rtol=1e-5, atol=1e-5)
    for got, expected in zip(fused[1](), unfused[1]()):
        np.testing.assert_array_equal(got, expected)
    for got, expected in zip(reference[1](), unfused[1]()):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    row = bench.run_case(TINY_RELU, None, 1, False, 100.0, rng)
    assert set(row.ms) == {"fastconv fwd", "fastconv fwd+bwd", "fastconv unfused fwd",
                           "fastconv unfused fwd+bwd"}


def test_conv_relu_case_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, w, b = bench._case_inputs(TINY_RELU, rng)
    fwd, fwd_bwd = bench._torch_fns(torch, TINY_RELU, x, w, b)
    np.testing.assert_allclose(fwd().numpy(), fastconv.conv2d(x, w, b, padding=1,
                                                              activation="relu"),
                               rtol=1e-5, atol=1e-5)
    fwd_bwd()


def test_conv_relu_case_runs_from_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(bench, "CASES", [TINY_CONV, TINY_RELU])
    monkeypatch.setattr(bench, "BLAS_COOLDOWN_S", 0.0)
    with num_threads(fastconv.get_num_threads()):
        assert cli.main(["bench", "--case", "tiny-relu", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "tiny-relu: fastconv" in out and "unfused (a relu pass)" in out


# ------------------------------------------------------------------------------ other load
def test_other_load_counts_another_process_busy_on_a_core():
    import subprocess
    import sys

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        with bench.OtherLoad() as load:
            time.sleep(1.0)
    finally:
        busy.kill()
        busy.wait()
    assert load.cores >= 0.3, load.cores  # about a core, less on a machine this test shares


def test_other_load_is_unknown_without_the_machine_counters(monkeypatch):
    monkeypatch.setattr(bench, "_machine_busy_seconds", lambda: None)
    with bench.OtherLoad() as load:
        pass
    assert math.isnan(load.cores)


def load_report(capsys, field, values):
    """What _print_load says of the suite's rows with ``field`` set to ``values`` in order, and
    the rows."""
    rows = passing_rows()
    for r, v in zip(rows, values):
        setattr(r, field, v)
    bench._print_load(rows)
    return capsys.readouterr().out, [r.case for r in rows]


def test_a_busy_case_is_flagged(capsys):
    out, cases = load_report(capsys, "other_load", [0.5, 0.05])
    assert f"{cases[0]} (0.50)" in out and cases[1] not in out and "ran slow" not in out


def test_a_case_after_which_the_machine_ran_slow_is_flagged(capsys):
    nan = float("nan")
    out, cases = load_report(capsys, "machine_speed", [nan, nan, 0.6, 0.9])
    assert f"{cases[2]} (60%)" in out and cases[3] not in out and "busy" not in out
    # judged against the fastest reading: a run that started in a slow spell
    out, cases = load_report(capsys, "machine_speed", [nan, nan, 0.6, 0.9, 2.0])
    assert f"{cases[2]} (30%)" in out and f"{cases[3]} (45%)" in out and cases[4] not in out


def test_peak_fractions_are_of_the_fastest_reading_of_the_run():
    rows = [r for r in passing_rows() if r.case in bench.LARGE]
    for r, speed in zip(rows, [1.25, 0.8]):  # the others have no reading
        r.machine_speed = speed
    assert bench.peak_of_run(rows, 40.0) == pytest.approx(50.0)
    assert [r.peak_fraction for r in rows] == pytest.approx([0.9 / 1.25] * len(rows))
    assert [r.f64_peak_fraction for r in rows] == pytest.approx([0.85 / 1.25] * len(rows))
    assert rows[0].machine_speed == pytest.approx(1.0)
    assert rows[1].machine_speed == pytest.approx(0.64)
    # a run whose start was its fastest reading keeps its peak
    rows = [r for r in passing_rows() if r.case in bench.LARGE]
    rows[0].machine_speed = 0.9
    assert bench.peak_of_run(rows, 40.0) == 40.0 and rows[0].peak_fraction == 0.9


def test_run_case_reruns_the_probe_after_the_timings(monkeypatch):
    calls = []
    monkeypatch.setattr(bench._kernels, "fma_peak_gflops",
                        lambda iters, repeats: calls.append((iters, repeats)) or 40.0)
    row = bench.run_case(TINY_MAX, None, repeats=1, with_reference=False, peak=50.0,
                         rng=np.random.default_rng(0))
    assert calls == [(bench.SENTINEL_ITERS, 3)] and row.machine_speed == 0.8
    row = bench.run_case(TINY_MAX, None, repeats=1, with_reference=False, peak=0.0,
                         rng=np.random.default_rng(0))
    assert math.isnan(row.machine_speed) and len(calls) == 1  # no peak: no probe
