"""The ``fastconv filter IN OUT --kernel NAME`` command (Pillow)."""
import argparse
import sys

import numpy as np
import pytest

from fastconv import cli, filters
from fastconv.cli import filter as filter_cmd

Image = pytest.importorskip("PIL.Image")


def run(*argv):
    parser = argparse.ArgumentParser(prog="fastconv filter")
    filter_cmd.add_arguments(parser)
    return filter_cmd.run(parser.parse_args([str(a) for a in argv]))


def _load(path):
    """The image in ``path``, read, its file closed (an image only opened keeps it open)."""
    with Image.open(path) as im:
        im.load()
        return im.copy()


@pytest.fixture
def gray(tmp_path):
    a = (np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(a).save(path)
    return path, a


@pytest.fixture
def rgba(tmp_path):
    a = (np.random.default_rng(1).random((16, 12, 4)) * 255).astype(np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(a).save(path)  # (H, W, 4) uint8: RGBA
    return path, a


def test_registered_in_the_cli(monkeypatch, gray, tmp_path, capsys):
    assert cli.COMMANDS["filter"][0] == "fastconv.cli.filter"
    # through fastconv.cli.main (only this sub-command registered: the others live elsewhere)
    monkeypatch.setattr(cli, "COMMANDS", {"filter": cli.COMMANDS["filter"]})
    out = tmp_path / "out.png"
    assert cli.main(["filter", str(gray[0]), str(out), "--kernel", "box_blur"]) == 0
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("kernel", filters.KERNEL_NAMES)
def test_grayscale_png_equals_filter2d(gray, tmp_path, kernel):
    path, a = gray
    out = tmp_path / f"{kernel}.png"
    assert run(path, out, "--kernel", kernel) == 0
    b = np.asarray(_load(out))
    assert b.dtype == np.uint8 and b.shape == a.shape
    np.testing.assert_array_equal(b, filters.filter2d(a, filters.get_kernel(kernel)))


def test_options(gray, tmp_path):
    path, a = gray
    out = tmp_path / "o.png"
    assert run(path, out, "--kernel", "gaussian", "--sigma", "2.5", "--padding-mode", "circular") == 0
    np.testing.assert_array_equal(np.asarray(_load(out)),
                                  filters.filter2d(a, filters.gaussian(2.5), "circular"))
    assert run(path, out, "--kernel", "sobel_x", "--mode", "convolve", "--padding-mode", "zeros") == 0
    np.testing.assert_array_equal(np.asarray(_load(out)),
                                  filters.filter2d(a, filters.sobel_x, "zeros", mode="convolve"))


def test_colour_with_alpha_keeps_alpha(rgba, tmp_path):
    path, a = rgba
    out = tmp_path / "o.png"
    assert run(path, out, "--kernel", "sharpen") == 0
    b = np.asarray(_load(out))
    assert _load(out).mode == "RGBA"
    np.testing.assert_array_equal(b[..., 3], a[..., 3])
    np.testing.assert_array_equal(b[..., :3], filters.filter2d(a[..., :3], filters.sharpen))


def test_jpeg_in_and_out(rgba, tmp_path, capsys):
    path, a = rgba
    jpg = tmp_path / "in.jpg"
    Image.fromarray(a[..., :3]).save(jpg)
    assert run(jpg, tmp_path / "o.jpeg", "--kernel", "box_blur") == 0
    assert _load(tmp_path / "o.jpeg").size == (12, 16)
    assert run(path, tmp_path / "o2.jpg", "--kernel", "box_blur") == 0  # RGBA -> JPEG
    assert "alpha" in capsys.readouterr().err
    assert _load(tmp_path / "o2.jpg").mode == "RGB"


def test_sixteen_bit_and_palette(tmp_path):
    a16 = (np.random.default_rng(2).random((10, 11)) * 65535).astype(np.uint16)
    p16 = tmp_path / "g16.png"
    Image.fromarray(a16).save(p16)
    assert run(p16, tmp_path / "o16.png", "--kernel", "box_blur") == 0
    b = np.asarray(_load(tmp_path / "o16.png"))
    expected = np.clip(np.rint(filters.filter2d(a16.astype(np.float64), filters.box_blur)), 0, 65535)
    np.testing.assert_array_equal(b, expected)
    pal = tmp_path / "p.png"
    colours = (np.random.default_rng(3).random((9, 9, 3)) * 255).astype(np.uint8)
    Image.fromarray(colours).convert("P").save(pal)
    assert run(pal, tmp_path / "op.png", "--kernel", "emboss") == 0
    assert _load(tmp_path / "op.png").mode == "RGB"


def _made(mode):
    """A 6x7 image of ``mode``, converted by Pillow from random pixels."""
    rng = np.random.default_rng(4)
    if mode == "1":
        return Image.fromarray(rng.random((6, 7)) > 0.5)
    return Image.fromarray((rng.random((6, 7, 3)) * 255).astype(np.uint8)).convert(mode)


@pytest.mark.parametrize("mode,ext,written", [
    ("P", ".png", "RGB"),
    ("CMYK", ".tiff", "RGB"),
    ("CMYK", ".jpg", "RGB"),
    ("1", ".png", "L"),
    ("LA", ".png", "LA"),
])
def test_reports_the_mode_it_writes(tmp_path, capsys, mode, ext, written):
    """The summary line named the input's mode (P, CMYK, 1) although the file written is RGB or
    L; it names the mode of the file written."""
    path = tmp_path / f"in{ext}"
    _made(mode).save(path)
    assert _load(path).mode == mode  # the input is really of that mode
    out = tmp_path / "out.png"
    assert run(path, out, "--kernel", "box_blur") == 0
    assert _load(out).mode == written
    assert capsys.readouterr().out.startswith(f"wrote {out}: 7x6 {written}, kernel box_blur,")


@pytest.mark.parametrize("make,argv,status,message", [
    (None, ["missing.png", "o.png", "--kernel", "sharpen"], 1, "no such file"),
    ("text", ["bad.png", "o.png", "--kernel", "sharpen"], 1, "cannot read"),
    ("dir", ["adir", "o.png", "--kernel", "sharpen"], 1, "directory"),
    ("gray", ["g.png", "o.png", "--kernel", "blurry"], 2, "box_blur, gaussian_blur"),
    ("gray", ["g.png", "o.png", "--kernel", "sharpen", "--sigma", "2"], 2, "gaussian only"),
    ("gray", ["g.png", "o.png", "--kernel", "gaussian", "--sigma", "0"], 2, "sigma"),
    ("gray", ["g.png", "o.png", "--kernel", "gaussian", "--sigma", "1e6"], 2,
     "--sigma 1000000.0: sigma=1000000.0 asks for a 6000001x6000001 kernel"),
    ("gray", ["g.png", "o.png", "--kernel", "sharpen", "--padding-mode", "mirror"], 2, "reflect"),
    ("gray", ["g.png", "o.xyz", "--kernel", "sharpen"], 2, "extension"),
    ("gray", ["g.png", "nodir/o.png", "--kernel", "sharpen"], 1, "cannot write"),
    ("tiny", ["t.png", "o.png", "--kernel", "sharpen"], 1, "does not fit"),
])
def test_errors(tmp_path, monkeypatch, capsys, make, argv, status, message):
    monkeypatch.chdir(tmp_path)
    if make == "text":
        (tmp_path / "bad.png").write_text("not an image")
    elif make == "dir":
        (tmp_path / "adir").mkdir()
    elif make == "gray":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "g.png")
    elif make == "tiny":
        Image.fromarray(np.zeros((1, 5), np.uint8)).save(tmp_path / "t.png")
    assert run(*argv) == status
    err = capsys.readouterr().err
    assert err.startswith("fastconv filter: error:") and message in err
    assert not (tmp_path / "o.png").exists()


def test_unknown_kernel_lists_every_name(gray, tmp_path, capsys):
    assert run(gray[0], tmp_path / "o.png", "--kernel", "nope") == 2
    err = capsys.readouterr().err
    for name in filters.KERNEL_NAMES:
        assert name in err


def test_missing_pillow_names_the_extra(monkeypatch, gray, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert run(gray[0], tmp_path / "o.png", "--kernel", "sharpen") == 1
    assert 'pip install "fastconv[demo]"' in capsys.readouterr().err


def test_kernel_argument_is_required(capsys):
    with pytest.raises(SystemExit):
        run("a.png", "b.png")
