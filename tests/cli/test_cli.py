"""fastconv.cli: one exit policy for every sub-command (cli.guard): user errors and Ctrl-C end with
a one-line message on stderr and a documented status, never a traceback."""
import errno

import numpy as np
import pytest

import fastconv
from fastconv import cli
from fastconv.cli import bench, demo, example
from fastconv.cli import filter as filter_cmd

pytest.importorskip("PIL")

# where each sub-command spends its time: an exception raised there stands for anything raised
# while the command works
WORK = {
    "example": (example, "conv2d", []),
    "bench": (bench, "run_case", ["--case", "lenet-conv1", "--repeats", "1", "--no-torch"]),
    "filter": (filter_cmd.filters, "filter2d", ["{img}", "{tmp}/o.png", "--kernel", "sharpen"]),
    "demo": (demo, "load_data", ["--out", "{tmp}/out", "--quiet"]),
}


def _argv(command, tmp_path):
    module, name, extra = WORK[command]
    img = tmp_path / "g.png"
    if not img.exists():
        from PIL import Image

        Image.fromarray(np.zeros((5, 5), np.uint8)).save(img)
    return [command] + [a.format(img=img, tmp=tmp_path) for a in extra]


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize("command", list(WORK))
@pytest.mark.parametrize("exc,status,message", [
    (KeyboardInterrupt(), 130, "{prog}: interrupted"),
    (MemoryError(), 1, "{prog}: error: not enough memory"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/x"), 1,
     "{prog}: error: /data/x: Permission denied"),
])
def test_every_command_ends_with_one_line_and_a_status(command, exc, status, message, tmp_path,
                                                        monkeypatch, capsys):
    module, name, _ = WORK[command]
    if command == "demo":
        pytest.importorskip("matplotlib")
        pytest.importorskip("tqdm")
    monkeypatch.setattr(module, name, _raise(exc))
    if command == "bench":
        monkeypatch.setattr(bench._kernels, "fma_peak_gflops", lambda: 1.0)
    assert cli.main(_argv(command, tmp_path)) == status
    err = capsys.readouterr().err
    assert err.strip() == message.format(prog=f"fastconv {command}")
    assert "Traceback" not in err


def test_ctrl_c_while_starting(monkeypatch, capsys):
    monkeypatch.setattr(cli, "build_parser", _raise(KeyboardInterrupt()))
    assert cli.main(["bench"]) == cli.INTERRUPTED == 130
    assert capsys.readouterr().err.strip() == "fastconv: interrupted"


def test_a_bug_still_shows_its_traceback(monkeypatch, tmp_path):
    # only user errors are turned into messages
    monkeypatch.setattr(example, "conv2d", _raise(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):
        cli.main(_argv("example", tmp_path))


def test_check_output_file(tmp_path):
    cli.check_output_file(tmp_path / "new.json", "--json")
    (tmp_path / "old.json").write_text("{}")
    cli.check_output_file(tmp_path / "old.json", "--json")
    with pytest.raises(cli.CommandError, match="--json .*: is a directory"):
        cli.check_output_file(tmp_path, "--json")
    with pytest.raises(cli.CommandError, match="the directory .*nowhere does not exist"):
        cli.check_output_file(tmp_path / "nowhere" / "x.json", "--json")


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"fastconv {fastconv.__version__}\n"


def test_no_command_prints_the_help_and_exits_2(monkeypatch, capsys):
    """Bare `fastconv` ran `example` silently. It is a usage error now, answered with the help
    (which lists the commands) on stderr and status 2: argparse's own answer to a missing required
    argument (git prints its help and exits 1, but 1 is fastconv's status for runtime errors)."""
    monkeypatch.setattr(example, "run", _raise(AssertionError("example must not run")))
    assert cli.main([]) == cli.USAGE_ERROR == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: fastconv")
    for command in cli.COMMANDS:
        assert f"\n    {command} " in err, command
