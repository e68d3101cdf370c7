"""An image and what each classic image-processing kernel does to it: the feature maps that
convolution with hand-made kernels (blur, sharpen, edge detectors, emboss) produces.

Every kernel of ``fastconv.filters`` (plus a 13x13 ``gaussian(2)``) is applied with
``fastconv.filters.filter2d`` (reflect padding, so the output keeps the image's size); the
results are shown side by side, each with its kernel, and saved as a PNG.

    python3 examples/kernels_gallery.py [--out kernels_gallery.png] [--small] [--image PATH]
"""
import os
import sys

import numpy as np

try:
    import fastconv  # noqa: F401
except ImportError:  # run from a source checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import fastconv  # noqa: F401
from fastconv import filters

from _sample_images import load_image, parse_example_args, pyplot

PANELS = [  # (title, kernel)
    ("identity", filters.identity),
    ("sharpen", filters.sharpen),
    ("box blur (normalized)", filters.box_blur),
    ("Gaussian blur (approximation)", filters.gaussian_blur),
    ("gaussian(sigma=2), 13x13", filters.gaussian(2.0)),
    ("sobel_x", filters.sobel_x),
    ("sobel_y", filters.sobel_y),
    ("laplacian", filters.laplacian),
    ("emboss", filters.emboss),
]


def kernel_text(k):
    if k.shape != (3, 3):
        return f"{k.shape[0]}x{k.shape[1]}, sums to {k.sum():.2g}"
    scale = {9: "1/9 ", 16: "1/16 "}.get(int(round(1 / abs(k).min()))) if k.min() > 0 else None
    shown = np.rint(k / k.min()).astype(int) if scale else k.astype(int)
    rows = ["[" + " ".join(f"{v:>2d}" for v in row) + "]" for row in shown]
    return (scale or "") + "\n".join(rows)


def main(argv=None):
    args = parse_example_args(__doc__, "kernels_gallery.png", argv)
    plt = pyplot()

    image, source = load_image(args.image, args.small)
    print(f"image: {source}")
    results = [(title, k, filters.filter2d(image, k, padding_mode="reflect")) for title, k in PANELS]

    ncol = 5
    fig, axes = plt.subplots(2, ncol, figsize=(3.0 * ncol, 8.0), dpi=60 if args.small else 100)
    axes = axes.ravel()
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input")
    axes[0].set_xlabel(source.split(" (")[0], fontsize=7)
    for ax, (title, k, out) in zip(axes[1:], results):
        if abs(k.sum()) < 1e-9:  # derivative kernels: signed response, 0 is mid-grey
            m = float(np.percentile(np.abs(out), 99.5)) or 1.0
            ax.imshow(out, cmap="gray", vmin=-m, vmax=m)
        else:
            ax.imshow(np.clip(out, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(kernel_text(k), fontsize=7, family="monospace")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("feature maps obtained by convolution with classic kernels "
                 "(fastconv.filters.filter2d, reflect padding, correlate)", fontsize=10)
    fig.tight_layout(h_pad=2.5)
    fig.savefig(args.out)
    plt.close(fig)
    for title, k, out in results:
        print(f"  {title:<30} output mean {out.mean():+.4f}  std {out.std():.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
