"""The test image of the examples: a real photograph when scikit-image is installed, else the
digits embedded in fastconv, else a synthetic "dead leaves" image (fastconv.stats.dead_leaves).

Also ``--image PATH`` for your own picture (needs Pillow).
"""
import numpy as np


def _photograph(small):
    from skimage import data  # optional: pip install scikit-image

    img = data.camera().astype(np.float64) / 255.0  # 512x512 grayscale photograph
    if small:
        img = img[::4, ::4]  # 128x128
    return img, f"scikit-image's 'camera' photograph ({img.shape[1]}x{img.shape[0]})"


def _digits(small):
    from fastconv.datasets import load_digits  # the embedded 8x8 digits (values 0..16)

    images, _ = load_digits("all")
    side = 8 if small else 16  # a side x side mosaic of digits
    tiles = images[: side * side].astype(np.float64) / 16.0
    mosaic = tiles.reshape(side, side, 8, 8).transpose(0, 2, 1, 3).reshape(side * 8, side * 8)
    mosaic = np.kron(mosaic, np.ones((2, 2)))  # 2x larger, so that 3x3 kernels read as thin lines
    return mosaic, f"a mosaic of {side * side} embedded 8x8 digits ({mosaic.shape[1]}x{mosaic.shape[0]})"


def _synthetic(small):
    from fastconv.stats import dead_leaves

    side = 128 if small else 384
    img = dead_leaves((side, side), seed=0)
    return img, f"a synthetic dead-leaves image ({side}x{side}; no photograph or digits available)"


def _from_file(path, small):
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit('--image needs Pillow: pip install "fastconv[demo]"') from None
    with Image.open(path) as im:
        img = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    if small:
        step = max(1, max(img.shape) // 128)
        img = img[::step, ::step]
    return img, f"{path} ({img.shape[1]}x{img.shape[0]}, as grayscale)"


def load_image(path=None, small=False):
    """``(image, description)``: a float64 ``(H, W)`` image in [0, 1] and where it comes from."""
    if path:
        return _from_file(path, small)
    for source in (_photograph, _digits):
        try:
            return source(small)
        except Exception:  # not installed, no data file, a download that failed, a changed API
            continue
    return _synthetic(small)


def parse_example_args(doc, default_out, argv=None):
    """The options both examples share: --out, --small, --image."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=default_out, help="PNG file to write")
    ap.add_argument("--small", action="store_true", help="a small image (fast; for tests)")
    ap.add_argument("--image", default=None, help="use this image file instead (needs Pillow)")
    return ap.parse_args(argv)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
