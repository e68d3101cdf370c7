"""`fastconv demo` end to end (in-process, short runs): files written, --load, --quiet, --data,
the same numbers for any --threads, clear errors, and the default run's accuracy."""

import argparse
import io
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from test_datasets import fake_mnist

import fastconv
from conv_helpers import assert_same_bits
from fastconv import cli
from fastconv.cli import demo as demo_cmd

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

PNG = b"\x89PNG\r\n\x1a\n"
TIMING = re.compile(r"\d+\.\d+ s(/epoch)?|[\d.]+ s\)|total [\d.]+ s")


@pytest.fixture
def no_pictures(monkeypatch):
    """The demo's run without its three pictures (matplotlib's layout of the feature maps takes
    seconds, the training of an epoch a tenth of one), for tests of everything else: the
    pictures are tested by the tests that do not take this fixture."""
    monkeypatch.setattr(demo_cmd, "_draw_model_pictures", lambda *args: None)
    monkeypatch.setattr(demo_cmd, "draw_training", lambda *args: None)


def demo(*argv):
    parser = argparse.ArgumentParser(prog="fastconv demo")
    demo_cmd.add_arguments(parser)
    return demo_cmd.run(parser.parse_args([str(a) for a in argv]))


def test_short_run_writes_weights_and_pictures(tmp_path, capsys):
    out = tmp_path / "out"
    assert demo("--epochs", 1, "--batch-size", 64, "--out", out) == 0
    stdout, stderr = capsys.readouterr()
    assert "embedded UCI digits: 1,438 train / 359 test images of 8x8; threads: 1" in stdout
    assert "conv3x3(1->16) -> relu -> maxpool2 -> conv3x3(16->32)" in stdout
    assert re.search(
        r"epoch 1/1  train loss \d\.\d{4}  train acc +\d+\.\d\d%  test acc +\d+\.\d\d%", stdout
    )
    assert re.search(r"test accuracy \d+\.\d\d% \(\d+/359\) after 1 epoch;", stdout)
    assert stderr == ""  # not a terminal: no progress bar (see test_progress_bar_*)
    for name in ("filters.png", "feature_maps.png", "training.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    with np.load(out / "weights.npz") as npz:
        assert sorted(npz.files) == sorted(
            ["__meta__", "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"]
        )
        assert npz["0.weight"].shape == (16, 1, 3, 3) and npz["7.weight"].shape == (10, 128)

    # --load evaluates the saved model: the same test accuracy as the run's last epoch
    acc = re.search(r"test accuracy (\d+\.\d\d%) \((\d+)/359\)", stdout).group(1, 2)
    assert demo("--load", out / "weights.npz", "--out", tmp_path / "eval") == 0
    stdout = capsys.readouterr().out
    assert f"test accuracy {acc[0]} ({acc[1]}/359) of {out / 'weights.npz'}" in stdout
    assert (tmp_path / "eval" / "filters.png").exists()


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_same_seed_same_numbers_whatever_threads(tmp_path, capsys, no_pictures):
    runs = []
    for threads in (1, 2):
        before = fastconv.get_num_threads()
        out = tmp_path / f"t{threads}"
        assert (
            demo(
                "--epochs",
                1,
                "--batch-size",
                128,
                "--seed",
                5,
                "--threads",
                threads,
                "--optimizer",
                "adam",
                "--out",
                out,
            )
            == 0
        )
        assert fastconv.get_num_threads() == before  # restored
        text = capsys.readouterr().out
        assert f"threads: {threads}" in text
        with np.load(out / "weights.npz") as npz:
            text = text.replace(f"threads: {threads}", "").replace(str(out), "OUT")
            runs.append((TIMING.sub("", text), {k: npz[k] for k in npz.files}))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        assert_same_bits(runs[1][1][k], v, k)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_progress_bar_on_a_terminal(tmp_path, monkeypatch, capsys, no_pictures):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert demo("--epochs", 1, "--batch-size", 256, "--out", tmp_path) == 0
    bar = sys.stderr.getvalue()
    assert "epoch 1/1:" in bar and "batch/s" in bar and "\r" in bar
    assert "\r" not in capsys.readouterr().out


# `python -m fastconv demo ARGS...` without the pictures (see no_pictures)
NO_PICTURES_DEMO = """
import sys
from fastconv import cli
from fastconv.cli import demo
demo._draw_model_pictures = demo.draw_training = lambda *args: None
raise SystemExit(cli.main(["demo", *sys.argv[1:]]))
"""


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_progress_bar_left_out_of_logs(tmp_path):
    """Output to a file or a pipe (a log) has clean epoch lines: tqdm's carriage returns and
    half-drawn bars were written to stderr whatever it was. A real process, stdout and stderr
    redirected to pipes."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.path.dirname(os.path.dirname(fastconv.__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", NO_PICTURES_DEMO, "--epochs", "2", "--batch-size", "256",
         "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "\r" not in proc.stdout and "%|" not in proc.stdout
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line[:10] for line in epochs] == ["epoch 1/2 ", "epoch 2/2 "]


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_quiet_prints_only_the_summary(tmp_path, capsys, no_pictures):
    assert demo("--epochs", 1, "--batch-size", 256, "--quiet", "--out", tmp_path) == 0
    stdout, stderr = capsys.readouterr()
    lines = stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("test accuracy") and lines[1].startswith("wrote")
    assert stderr == ""


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_mnist_format_data_dir(tmp_path, capsys, no_pictures):
    data = tmp_path / "mnist"
    data.mkdir()
    fake_mnist(data, n_train=64, n_test=16, size=(12, 12), gz=True)
    assert demo("--data", data, "--epochs", 1, "--out", tmp_path / "out", "--quiet") == 0
    assert re.search(r"test accuracy [\d.]+% \(\d+/16\)", capsys.readouterr().out)
    with np.load(tmp_path / "out" / "weights.npz") as npz:
        assert npz["7.weight"].shape == (10, 32 * 3 * 3)
    # the 12x12 model cannot evaluate the 8x8 digits
    assert demo("--load", tmp_path / "out" / "weights.npz", "--out", tmp_path / "e") == 1
    assert "is for (12, 12) images but the data has (8, 8)" in capsys.readouterr().err


def test_errors(tmp_path, capsys):
    assert demo("--data", tmp_path / "nowhere", "--out", tmp_path) == 1
    assert "fastconv demo: error: MNIST directory not found" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    assert demo("--load", bad, "--out", tmp_path) == 1
    assert "has no __meta__ entry" in capsys.readouterr().err
    assert demo("--load", tmp_path / "missing.npz", "--out", tmp_path) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo("--epochs", 0)
    assert "must be >= 1" in capsys.readouterr().err


def test_missing_extras_message(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert demo("--out", tmp_path) == 1
    err = capsys.readouterr().err
    assert "needs tqdm" in err and 'pip install "fastconv[demo]"' in err


def test_registered_with_help():
    assert cli.COMMANDS["demo"][0] == "fastconv.cli.demo"
    parser = argparse.ArgumentParser(prog="fastconv demo", description=demo_cmd.__doc__)
    demo_cmd.add_arguments(parser)
    text = parser.format_help()
    for option in (
        "--epochs",
        "--batch-size",
        "--lr",
        "--optimizer",
        "--threads",
        "--seed",
        "--data",
        "--out",
        "--quiet",
        "--load",
        "pip install",
    ):
        assert option in text


def test_console_help(tmp_path):
    """`python -m fastconv demo --help`, run on the copy of fastconv under test, from elsewhere."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = dict(os.environ, PYTHONPATH=package_parent)
    for argv in (["--help"], ["demo", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", "fastconv", *argv],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
            env=env,
        ).stdout
        assert "demo" in out
    assert "--optimizer" in out and "3x3 convolution -> ReLU -> 2x2 max" in out and 'pip install "fastconv[demo]"' in out


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_default_run_reaches_97_percent(tmp_path, capsys, no_pictures):
    """The main job: default options on the embedded digits, >= 97 % test accuracy (its time,
    under a minute, is measured by bench/demo_default_run.py)."""
    assert demo("--out", tmp_path, "--quiet") == 0
    stdout = capsys.readouterr().out
    m = re.search(r"test accuracy (\d+\.\d\d)% .*after 15 epochs.*total [\d.]+ s", stdout)
    assert m, stdout
    assert float(m.group(1)) >= 97.0, stdout


def _weights(path, **meta_changes):
    """A weights file as the demo writes it for the 8x8 digits, its __meta__ changed."""
    model = demo_cmd.build_model((8, 8), rng=0)
    meta = dict(image_size=[8, 8], in_channels=1, num_classes=10, channels=list(demo_cmd.CHANNELS))
    meta.update(meta_changes)
    demo_cmd._save_weights(model, path, meta)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b"garbage, not weights"), "is not a fastconv weights file"),
    (lambda p: p.write_bytes(_weights(p).read_bytes()[:700]), "is not a fastconv weights file"),
    (lambda p: np.savez(p, __meta__=np.array("{not json"), x=np.zeros(3)),
     "corrupt __meta__ entry (not JSON"),
    (lambda p: np.savez(p, __meta__=np.array("[1, 2]")), "corrupt __meta__ entry (a JSON list"),
    (lambda p: _weights(p, channels="16,32"), "channels must be a list of some ints >= 1"),
    (lambda p: _weights(p, image_size=[8, 8, 1]), "image_size must be a list of 2 ints"),
    (lambda p: _weights(p, num_classes=True), "num_classes must be an int >= 1"),
    # a description of an enormous model is refused before anything is allocated
    (lambda p: _weights(p, channels=[100_000, 100_000]), "a model of 90,005,100,010 parameters"),
    (lambda p: _weights(p, image_size=[28, 28]), "is for (28, 28) images but the data has (8, 8)"),
    (lambda p: np.savez(p, __meta__=np.zeros(3)), "entry '__meta__' has dtype float64"),
    (lambda p: np.savez(p, __meta__=np.array("x" * 70_000)), "more than the 65,536 bytes"),
])
def test_load_rejects_bad_weight_files_with_a_clear_message(tmp_path, capsys, make, message):
    path = tmp_path / "w.npz"
    make(path)
    assert demo("--load", path, "--out", tmp_path / "out", "--quiet") == 1
    err = capsys.readouterr().err
    assert err.startswith("fastconv demo: error: --load: ") and str(path) in err, err
    assert message in err and "allow_pickle" not in err
    assert len(err.strip().splitlines()) == 1


def test_load_rejects_parameters_of_another_shape(tmp_path, capsys):
    path = _weights(tmp_path / "w.npz")
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["7.weight"] = np.zeros((10, 129), np.float32)
    np.savez(path, **arrays)
    assert demo("--load", path, "--out", tmp_path / "out", "--quiet") == 1
    assert "entry '7.weight' has shape (10, 129) but a parameter of shape (10, 128)" in (
        capsys.readouterr().err
    )


def test_out_must_be_a_usable_directory(tmp_path, capsys):
    # checked before loading anything; a file where the directory should be was a traceback
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    assert demo("--out", a_file, "--epochs", 1, "--quiet") == 1
    err = capsys.readouterr().err
    assert err == f"fastconv demo: error: --out {a_file}: exists and is not a directory\n"
    assert a_file.read_text() == "keep me"
    assert demo("--out", a_file / "sub", "--epochs", 1, "--quiet") == 1
    assert f"--out {a_file / 'sub'}: cannot create the directory" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_ctrl_c_exits_130_without_a_traceback(tmp_path):
    """SIGINT once training has started (its first epoch line): one line on stderr, status 130,
    as other Unix tools; run as a real process, as a user would. (Not earlier: a SIGINT that
    lands while an extension module's import runs code through PyRun_String makes CPython end
    the process by SIGINT at exit even when the KeyboardInterrupt was handled.)"""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.path.dirname(os.path.dirname(fastconv.__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastconv", "demo", "--epochs", "1000", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=os.path.dirname(os.path.abspath(__file__)),  # not the source folder, if run from it
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("data: "), first + proc.stderr.read()
        line = first
        while line and not line.startswith("epoch "):
            line = proc.stdout.readline()
        assert line.startswith("epoch ") and "/1000 " in line, line  # (stderr: still running)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.rstrip().endswith("fastconv demo: interrupted")
    assert "wrote" not in out


@pytest.mark.parametrize("options,named", [
    (["--epochs", 3], "--epochs has"),
    (["--epochs", demo_cmd.DEFAULT_EPOCHS], "--epochs has"),  # given, even if equal to the default
    (["--batch-size", 8, "--lr", 0.1], "--batch-size, --lr have"),
    (["--optimizer", "adam"], "--optimizer has"),
    (["--seed", 3], "--seed has"),
])
def test_load_refuses_the_training_options(tmp_path, capsys, options, named):
    """--load trains nothing: a training option given with it was silently ignored; it is a
    usage error (status 2) now, reported before any work."""
    weights = _weights(tmp_path / "w.npz")
    out = tmp_path / "out"
    assert demo("--load", weights, "--out", out, "--quiet", *options) == 2
    assert capsys.readouterr().err == (
        f"fastconv demo: error: {named} no effect with --load, which evaluates a saved model "
        "without training it\n"
    )
    assert not out.exists()


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_load_takes_the_options_that_apply_to_it(tmp_path, capsys):
    weights = _weights(tmp_path / "w.npz")
    before = fastconv.get_num_threads()
    assert demo("--load", weights, "--out", tmp_path / "out", "--quiet", "--threads", 2) == 0
    assert fastconv.get_num_threads() == before
    assert re.search(r"test accuracy [\d.]+% \(\d+/359\) of ", capsys.readouterr().out)
    assert (tmp_path / "out" / "feature_maps.png").exists()


def test_inactive_maps_are_the_maps_zero_everywhere():
    maps = np.ones((4, 3, 3), np.float32)
    maps[1] = 0
    maps[2, :2] = 0  # partly zero: active
    maps[3] = -0.5  # negative (a conv without ReLU): active
    assert demo_cmd.inactive_maps(maps).tolist() == [False, True, False, False]


def _model_with_dead_filters(dead):
    """The demo's model with the first-layer filters ``dead`` zeroed (bias -1: their ReLU output
    is zero on any image), and a test digit."""
    model = demo_cmd.build_model((8, 8), rng=0)
    model[0].weight.data[dead] = 0
    model[0].bias.data[dead] = -1
    _, _, _, xte, yte = demo_cmd.load_data(None)
    return model, xte[0], int(yte[0])


def _texts(ax):
    return [t.get_text() for t in ax.texts]


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_feature_maps_label_inactive_maps_and_have_a_colour_scale(tmp_path):
    model, image, label = _model_with_dead_filters([2, 5])
    conv1 = model[1](model[0](image[None]))[0]  # the maps after conv1 + ReLU, computed here
    expected = [i for i in range(len(conv1)) if not np.any(conv1[i])]
    assert 2 in expected and 5 in expected
    fig = demo_cmd.feature_maps_figure(model, image, label)
    stage = fig.subfigs[1]
    maps = [ax for ax in stage.axes if ax.images]
    assert len(maps) == 16 and [ax.get_title() for ax in maps] == [str(i) for i in range(16)]
    assert [i for i, ax in enumerate(maps) if "inactive" in _texts(ax)] == expected
    assert f"{len(expected)} inactive" in stage._suptitle.get_text()
    # one colour scale per layer: the same limits on every map, and a colour bar
    assert len({ax.images[0].get_clim() for ax in maps}) == 1
    assert any(ax.get_ylabel() == "activation" for ax in stage.axes if not ax.images)
    demo_cmd.draw_feature_maps(model, image, label, tmp_path / "fm.png")
    assert (tmp_path / "fm.png").read_bytes().startswith(PNG)


@pytest.mark.slow  # end to end, seconds: the main CI run only (see pyproject.toml)
def test_feature_maps_layout(tmp_path):
    """The layer titles clear the bar chart's tick labels, and the maps use the figure's width
    (the first layer's title touched the digits 0..9; a sixth of the width was margin)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    model, image, label = _model_with_dead_filters([])
    fig = demo_cmd.feature_maps_figure(model, image, label)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    bar_chart = fig.subfigs[0].axes[1]
    under_bars = min(t.get_window_extent(renderer).y0
                     for t in bar_chart.get_xticklabels() + [bar_chart.xaxis.label])
    title = fig.subfigs[1]._suptitle.get_window_extent(renderer)
    assert under_bars - title.y1 > title.height / 2  # a visible gap (it was 3 pixels)
    width = fig.bbox.width
    for sf in fig.subfigs[1:]:
        boxes = [ax.get_window_extent(renderer) for ax in sf.axes]
        assert min(b.x0 for b in boxes) < 0.04 * width
        assert max(b.x1 for b in boxes) > 0.94 * width
