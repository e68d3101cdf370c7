"""Filter an image file (PNG, JPEG, or anything Pillow reads) with one of the classic
image-processing kernels of fastconv.filters: sharpen, blur, edges, emboss. Colour images are filtered channel by
channel (an alpha channel is kept as it is); 8-bit results are rounded and clipped to 0..255, so
the negative half of an edge detector (sobel_x, sobel_y, laplacian) is clipped to black.

Example: fastconv filter photo.png edges.png --kernel sobel_x --padding-mode replicate
"""
import os
import sys

import numpy as np

from .. import filters
from . import USAGE_ERROR, CommandError, guard

PROG = "fastconv filter"
_Error = CommandError


def add_arguments(parser):
    parser.add_argument("input", metavar="IN", help="the image to read (PNG, JPEG, ...)")
    parser.add_argument("output", metavar="OUT",
                        help="the image to write; its format follows the extension (.png, .jpg, ...)")
    parser.add_argument("--kernel", required=True, metavar="NAME",
                        help="one of: " + ", ".join(filters.KERNEL_NAMES))
    parser.add_argument("--sigma", type=float, default=None, metavar="S",
                        help="standard deviation in pixels of --kernel gaussian (default 1.0)")
    parser.add_argument("--padding-mode", default="reflect", metavar="M",
                        help="how the border is extended: " + ", ".join(filters.PADDING_MODES)
                        + " (default: reflect)")
    parser.add_argument("--mode", default="correlate", choices=["correlate", "convolve"],
                        help="correlate (as CNN layers, default) or convolve (kernel flipped, as "
                        "in the mathematical definition of convolution)")


def _kernel(args):
    """The kernel the options ask for, every option checked before any file is touched."""
    if args.kernel not in filters.KERNEL_NAMES:
        raise _Error(f"unknown kernel {args.kernel!r}; choose one of: "
                     + ", ".join(filters.KERNEL_NAMES), status=USAGE_ERROR)
    if args.sigma is not None and args.kernel != "gaussian":
        raise _Error(f"--sigma applies to --kernel gaussian only, not to {args.kernel!r}",
                     USAGE_ERROR)
    if args.padding_mode not in filters.PADDING_MODES:
        raise _Error(f"unknown padding mode {args.padding_mode!r}; choose one of: "
                     + ", ".join(filters.PADDING_MODES), status=USAGE_ERROR)
    try:
        return filters.get_kernel(args.kernel, sigma=args.sigma)
    except ValueError as exc:  # sigma <= 0, or so large that the kernel would not fit in memory
        raise _Error(f"--sigma {args.sigma}: {exc}", status=USAGE_ERROR) from None


def _read(path, Image):
    if not os.path.exists(path):
        raise _Error(f"cannot read {path!r}: no such file")
    if os.path.isdir(path):
        raise _Error(f"cannot read {path!r}: it is a directory")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as exc:  # PIL.UnidentifiedImageError, truncated files, permissions
        raise _Error(f"cannot read {path!r} as an image: {exc}") from None


def _to_array(im):
    """(pixels to filter as an (H, W) or (H, W, C) array, alpha or None)."""
    if im.mode.startswith("I;16"):
        return np.asarray(im, dtype=np.uint16), None
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("1", "I", "F"):
        im = im.convert("L")
    elif im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    a = np.asarray(im)
    if im.mode in ("LA", "RGBA"):
        return a[..., :-1].copy(), a[..., -1:].copy()
    return a, None


def _filter(pixels, kernel, args):
    if pixels.dtype == np.uint16:  # 16-bit grayscale: filter in float, round and clip
        y = filters.filter2d(pixels.astype(np.float64), kernel, args.padding_mode, args.mode)
        return np.clip(np.rint(y), 0, 65535).astype(np.uint16)
    return filters.filter2d(pixels, kernel, args.padding_mode, args.mode)


def _write(path, out, alpha, Image):
    """Save ``out`` (and ``alpha``) to ``path``; returns the mode of the image written."""
    ext = os.path.splitext(path)[1].lower()
    if alpha is not None and ext in (".jpg", ".jpeg"):
        print(f"{PROG}: note: JPEG has no alpha channel; it is dropped", file=sys.stderr)
        alpha = None
    if alpha is not None:
        out = np.concatenate([out if out.ndim == 3 else out[..., None], alpha], axis=2)
    elif out.ndim == 3 and out.shape[2] == 1:
        out = out[..., 0]
    # Pillow reads the mode off the array: L, LA, RGB or RGBA from a uint8 array's channels,
    # I;16 from uint16 (its `mode` argument is deprecated)
    im = Image.fromarray(out)
    try:
        im.save(path)
    except (ValueError, KeyError) as exc:  # unknown extension, mode the format cannot store
        raise _Error(f"cannot write {path!r}: {exc} (use e.g. .png or .jpg)") from None
    except OSError as exc:
        raise _Error(f"cannot write {path!r}: {exc}") from None
    return im.mode


def run(args):
    """Run ``fastconv filter``; the exit status follows :func:`fastconv.cli.guard`."""
    return guard(PROG, _run, args)


def _run(args):
    try:
        from PIL import Image
    except ImportError:
        raise _Error("reading and writing images needs Pillow; install it with "
                     'pip install "fastconv[demo]"') from None
    kernel = _kernel(args)
    ext = os.path.splitext(args.output)[1].lower()
    if ext not in Image.registered_extensions():
        raise _Error(f"cannot write {args.output!r}: unknown image file extension "
                     f"{ext or '(none)'!r}; use e.g. .png or .jpg", status=USAGE_ERROR)
    im = _read(args.input, Image)
    pixels, alpha = _to_array(im)
    try:
        out = _filter(pixels, kernel, args)
    except ValueError as exc:  # e.g. reflect padding wider than a tiny image
        raise _Error(str(exc)) from None
    # the mode written, not the input's: P, CMYK, 1, ... are filtered as RGB(A) or L
    mode = _write(args.output, out, alpha, Image)
    h, w = pixels.shape[:2]
    extra = f", sigma {1.0 if args.sigma is None else args.sigma:g}" if args.kernel == "gaussian" else ""
    print(f"wrote {args.output}: {w}x{h} {mode}, kernel {args.kernel}{extra}, "
          f"padding {args.padding_mode}, {args.mode}")
    return 0
