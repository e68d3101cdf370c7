"""The statistics of natural images that make convolution fit them: pixels correlate with their
neighbours, less with distance, alike everywhere in the image.

Computes with ``fastconv.stats`` and plots (saved as a PNG):

* the 2-D power spectrum and its radial average on log-log axes with the
  fitted power law ``P(f) ~ f^slope`` (natural images: slope near -2; the slope is printed);
* the correlation between two pixels as a function of their distance, against the
  ``1/sqrt(n)`` noise floor of the sample correlation, with white noise and a ``1/f^2`` field for
  comparison.

The image is scikit-image's "camera" photograph when scikit-image is installed, else the
digits embedded in fastconv, else a synthetic dead-leaves image (or ``--image PATH``).

    python3 examples/natural_image_statistics.py [--out natural_image_statistics.png] [--small]
"""
import os
import sys

import numpy as np

try:
    import fastconv  # noqa: F401
except ImportError:  # run from a source checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import fastconv  # noqa: F401
from fastconv import stats

from _sample_images import load_image, parse_example_args, pyplot


def main(argv=None):
    args = parse_example_args(__doc__, "natural_image_statistics.png", argv)
    plt = pyplot()

    image, source = load_image(args.image, args.small)
    print(f"image: {source}")
    fy, fx, p2 = stats.power_spectrum(image)
    spec = stats.radial_power_spectrum(image)
    fit = stats.spectrum_slope(image)
    low = stats.spectrum_slope(image, fmax=0.1)
    print(f"power spectrum: P(f) ~ f^{fit.slope:.2f} "
          f"(fitted over f in [{fit.fmin:.3f}, {fit.fmax:.3f}] cycles/pixel; natural images: ~ -2)")
    print(f"  low and middle frequencies only, f in [{low.fmin:.3f}, {low.fmax:.3f}]: "
          f"f^{low.slope:.2f}")
    maxd = min(image.shape) // 4
    corr = stats.correlation_vs_distance(image, maxd)
    white = stats.correlation_vs_distance(np.random.default_rng(0).standard_normal(image.shape), maxd)
    field = stats.correlation_vs_distance(stats.power_law_noise(image.shape, 2.0, seed=0), maxd)
    shown = [d for d in (1, 2, 4, 8, 16, 32) if d <= maxd]
    print("correlation at distance " + ", ".join(f"{d}: {corr.correlation[d]:.3f}" for d in shown))
    print(f"noise floor 1/sqrt(n) at distance 1: {stats.correlation_noise_floor(corr.n_pairs[1]):.4f}")

    dpi = 60 if args.small else 100
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.4), dpi=dpi)
    ax[0].imshow(image, cmap="gray")
    ax[0].set_title("image")
    ax[0].set_xlabel(source, fontsize=7)
    ax[0].set_xticks([])
    ax[0].set_yticks([])
    ax[1].imshow(np.log10(p2 + p2.max() * 1e-12), cmap="gray", origin="lower",
                 extent=(fx[0], fx[-1], fy[0], fy[-1]))
    ax[1].set_title("2-D power spectrum (log)")
    ax[1].set_xlabel("f_x (cycles/pixel)")
    ax[1].set_ylabel("f_y")
    ax[2].loglog(spec.frequency, spec.power, ".", ms=3, label="radial average")
    f = np.array([fit.fmin, fit.fmax])
    ax[2].loglog(f, fit.amplitude * f ** fit.slope, "r-", lw=2, label=f"fit: slope {fit.slope:.2f}")
    f_low = np.array([low.fmin, low.fmax])
    ax[2].loglog(f_low, low.amplitude * f_low ** low.slope, "g-", lw=1.5,
                 label=f"fit f <= 0.1: slope {low.slope:.2f}")
    mid = np.sqrt(fit.fmin * fit.fmax)  # a slope -2 guide through the fit's middle
    ax[2].loglog(f, fit.amplitude * mid ** fit.slope * (f / mid) ** -2.0, "k--", lw=1,
                 label="slope -2")
    ax[2].set_title("radially averaged power spectrum")
    ax[2].set_xlabel("spatial frequency f (cycles/pixel)")
    ax[2].set_ylabel("power")
    ax[2].legend(fontsize=8)
    ax[3].plot(corr.distance, corr.correlation, "o-", ms=3, label="this image")
    ax[3].plot(field.distance, field.correlation, "-", lw=1, label="1/f^2 random field")
    ax[3].plot(white.distance, white.correlation, "-", lw=1, label="white noise")
    floor = stats.correlation_noise_floor(corr.n_pairs)
    ax[3].fill_between(corr.distance, -floor, floor, color="0.8", label="1/sqrt(n) noise floor")
    ax[3].set_title("correlation of two pixels vs distance")
    ax[3].set_xlabel("distance (pixels)")
    ax[3].set_ylabel("correlation")
    ax[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
