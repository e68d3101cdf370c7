"""The `example` job (`python -m fastconv`): runs, checks, reports, and fails on a mismatch."""
import os
import subprocess
import sys

import pytest

import fastconv
from fastconv import cli, reference
from conv_helpers import num_threads

SMALL = ["--shape", "2", "3", "9", "8", "--out-channels", "4", "--repeats", "1"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_example_runs_and_agrees(dtype, capsys):
    with num_threads(fastconv.get_num_threads()):  # --threads changes the count: restore it
        assert cli.main(["example", "--dtype", dtype, "--threads", "1", "--seed", "7"] + SMALL) == 0
    out = capsys.readouterr().out
    assert f"input (2, 3, 9, 8) {dtype}" in out and "1 thread(s)" in out
    for line in ("max abs error vs reference", "fastconv.conv2d:", "reference.conv2d:",
                 "speed-up:", "OK"):
        assert line in out


def test_example_fails_on_a_mismatch(monkeypatch, capsys):
    real = reference.conv2d
    monkeypatch.setattr(reference, "conv2d", lambda x, w, b=None, **kw: real(x, w, b, **kw) + 1e-2)
    assert cli.main(["example"] + SMALL) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_bad_options_are_rejected(capsys):
    for bad in (["--threads", "0"], ["--dtype", "float16"], ["--shape", "1", "2", "3"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(["example"] + bad)
        assert exc.value.code == 2


def test_python_m_fastconv_example_runs_the_default_batch():
    """`python -m fastconv example` with its default (32, 16, 32, 32) batch; run in a subprocess
    against this same fastconv. (Without a command, fastconv prints its help: test_cli.py.)"""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastconv.__file__)),
               OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "fastconv", "example"], capture_output=True,
                          text=True, env=env, cwd=os.path.dirname(__file__), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "input (32, 16, 32, 32) float32, weight (32, 16, 3, 3)" in proc.stdout
    assert proc.stdout.rstrip().endswith("OK")
