"""The examples that reproduce the notes' figures run (small inputs, temporary directory)."""
import os
import subprocess
import sys

import pytest

import fastconv

pytest.importorskip("matplotlib")

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")


def run_example(name, tmp_path):
    out = tmp_path / (name + ".png")
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [
                   os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__))),
                   os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name + ".py"), "--small",
                           "--out", str(out)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return proc.stdout


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_kernels_gallery(tmp_path):
    stdout = run_example("kernels_gallery", tmp_path)
    assert "image:" in stdout
    for name in ("sharpen", "box blur", "sobel_x", "emboss"):
        assert name in stdout


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_natural_image_statistics(tmp_path):
    stdout = run_example("natural_image_statistics", tmp_path)
    assert "P(f) ~ f^-" in stdout and "correlation at distance 1:" in stdout
