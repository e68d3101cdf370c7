"""The scale-out benchmark (fastconv.cli.scale_out, bench/scale_out.py, ``fastconv bench --dask``).
No speed is asserted (timings belong to the benchmark run): a tiny run goes end to end on real
local clusters, and the tables say what the numbers they are given mean."""
import numpy as np
import pytest

from fastconv.cli import bench, scale_out


def test_filter_table_rates_speedups_and_chunk_with_halo():
    args = scale_out._defaults(scale_out.build_parser().parse_args(
        ["--size", "1000", "--chunk", "100"]))
    clustered = {1: {("gaussian 9x9", "fastconv.dask"): (0.5, 3 * 2**20),
                     ("sobel 3x3", "fastconv.dask"): (0.25, 0)},
                 2: {("gaussian 9x9", "fastconv.dask"): (0.2, 2**20),
                     ("sobel 3x3", "fastconv.dask"): (0.5, 0)}}
    local = {("gaussian 9x9", "scipy.ndimage.correlate"): 4.0}
    lines = scale_out.filter_table(args, clustered, local).splitlines()
    # 1,000 x 1,000 pixels = 1 MPx; in 0.5 s: 2 MPx/s; 2 workers 0.2 s: 5 MPx/s, 2.5x
    # chunk 100 + a halo of 4 on each side for 9x9: 108^2 float32 = 0.0445 MB; 3x3: 102^2, 0.0397
    assert "gaussian 9x9 | fastconv.dask | 1 | 2 |  | 3 | 0.0445" in lines
    assert "gaussian 9x9 | fastconv.dask | 2 | 5 | 2.50x | 1 | 0.0445" in lines
    assert "gaussian 9x9 | scipy.ndimage.correlate | - (this process) | 0.25 | | - | -" in lines
    assert "sobel 3x3 | fastconv.dask | 2 | 2 | 0.50x | 0 | 0.0397" in lines


def test_predict_table_rates_and_speedup():
    args = scale_out._defaults(scale_out.build_parser().parse_args(["--images", "1000"]))
    clustered = {1: {"fastconv.dask.predict": (0.5, 0)}, 2: {"fastconv.dask.predict": (0.25, 0)}}
    lines = scale_out.predict_table(args, clustered, 2.0).splitlines()
    assert "fastconv.dask.predict | 1 | 2,000 |  | 0" in lines
    assert "fastconv.dask.predict | 2 | 4,000 | 2.00x | 0" in lines
    assert "fastconv.nn model, 1 thread | - (this process) | 500 | | -" in lines


def test_quick_defaults_and_explicit_options_win():
    args = scale_out._defaults(scale_out.build_parser().parse_args(["--quick", "--size", "64"]))
    assert (args.size, args.chunk, args.rounds) == (64, scale_out.QUICK["chunk"], 1)
    args = scale_out._defaults(scale_out.build_parser().parse_args([]))
    assert (args.size, args.images) == (scale_out.DEFAULT_SIZE, scale_out.DEFAULT_IMAGES)


@pytest.mark.parametrize("option", ["--size", "--chunk", "--images", "--rounds"])
def test_counts_must_be_positive(option, capsys):
    with pytest.raises(SystemExit) as exc:
        scale_out.main([option, "0"])
    assert exc.value.code == 2
    assert option in capsys.readouterr().err


def test_bench_dask_runs_the_scale_out_benchmark(monkeypatch):
    seen = []
    monkeypatch.setattr(scale_out, "main", lambda argv: seen.append(argv) or 0)
    assert bench.main(["--dask", "--quick", "--repeats", "3"]) == 0
    assert bench.main(["--dask"]) == 0
    assert seen == [["--quick", "--rounds", "3"], []]


@pytest.mark.parametrize("extra", [["--case", "deep"], ["--json", "x.json"], ["--threads", "2"],
                                   ["--no-torch"], ["--no-reference"]])
def test_bench_dask_refuses_the_suites_options(monkeypatch, capsys, extra):
    monkeypatch.setattr(scale_out, "main", lambda argv: pytest.fail("ran"))
    assert bench.main(["--dask", *extra]) == 2
    assert f"--dask takes only --quick and --repeats, got {extra[0]}" in capsys.readouterr().err


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_quick_run_end_to_end_on_local_clusters(capsys):
    pytest.importorskip("distributed")
    pytest.importorskip("psutil")
    pytest.importorskip("fastconv.dask")
    status = scale_out.main(["--quick", "--size", "96", "--chunk", "48", "--images", "300",
                             "--image-chunk", "100"])
    out = capsys.readouterr().out
    assert status == 0, out
    for kname in ("gaussian 9x9", "sobel 3x3"):
        for workers in (1, 2):
            assert f"{kname} | fastconv.dask | {workers} | " in out, out
        assert f"{kname} | fastconv.filters, 1 thread(s) | - (this process) | " in out
    assert "fastconv.dask.predict | 2 | " in out
    # every rate is a number > 0
    rows = [line.split(" | ") for line in out.splitlines() if line.count(" | ") >= 4
            and not line.startswith(("filter", "implementation", "---"))]
    assert len(rows) >= 8
    for row in rows:
        rate = float(row[3 if row[0] in ("gaussian 9x9", "sobel 3x3") else 2].replace(",", ""))
        assert rate > 0 and np.isfinite(rate), row
