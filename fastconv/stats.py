r"""Statistics of natural images that make convolution fit them: neighbouring pixels are strongly
correlated, more weakly the further apart they are, and these statistics are the same everywhere
in the image -- so a small filter, the same at every position, is the natural operator. This
module measures both: the power spectrum and the correlation between pixels as a function of
their distance.

* :func:`radial_power_spectrum` -- ``|F[image]|^2`` averaged over rings of equal spatial
  frequency (a straight line on log-log axes); natural images follow a power law ``P(f) ~ A f^slope`` with
  ``slope`` close to -2 (Ruderman 1994): low frequencies dominate, high ones are still present.
  :func:`fit_power_law` fits ``slope`` on log-log axes, :func:`spectrum_slope` does both.
* :func:`correlation_vs_distance` -- the Pearson correlation of two pixels ``d`` apart
  (horizontally or vertically): local correlation that decays with distance, slowly (as a power)
  for natural images, fast (exponentially) for e.g. an AR(1) field, and not at all beyond
  ``d = 0`` for white noise. :func:`correlation_noise_floor` is the ``1/sqrt(n)`` standard
  error below which a measured correlation cannot be told from zero with ``n`` pairs (so it
  also says how many samples it takes to learn that two pixels are unrelated).
* :func:`autocorrelation` -- the other side of the Wiener-Khinchin theorem: the (circular)
  autocorrelation is the inverse Fourier transform of the power spectrum.
* Synthetic test images with known statistics: :func:`power_law_noise` (a Gaussian random
  field with ``P(f) ~ f^-exponent``) and :func:`dead_leaves` (occluding discs with a power-law
  size distribution, a classic model of natural images).

Images may be ``(H, W)``, or ``(H, W, C)`` (averaged over channels); any real dtype.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray

    F64Array = NDArray[np.float64]
    # what numpy.random.default_rng accepts
    SeedLike = Union[None, int, Sequence[int], np.random.SeedSequence, np.random.BitGenerator,
                     np.random.Generator]

__all__ = [
    "power_spectrum", "radial_power_spectrum", "fit_power_law", "spectrum_slope",
    "correlation_vs_distance", "correlation_noise_floor", "autocorrelation",
    "power_law_noise", "dead_leaves", "PowerLawFit", "Correlation", "RadialSpectrum",
]


def _gray(image: ArrayLike) -> F64Array:
    x = np.asarray(image)
    if x.ndim == 3:
        x = x.mean(axis=2)
    if x.ndim != 2:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {np.shape(image)}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise TypeError(f"image must be real numbers, got dtype {x.dtype}")
    if min(x.shape) < 2:
        raise ValueError(f"image must be at least 2x2, got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("image contains NaN or infinite values")
    return x


def _window(shape: Sequence[int], window: Optional[str]) -> Optional[F64Array]:
    if window is None:
        return None
    if window != "hann":
        raise ValueError(f"window must be 'hann' or None, got {window!r}")
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def power_spectrum(image: ArrayLike, window: Optional[str] = "hann"
                   ) -> Tuple[F64Array, F64Array, F64Array]:
    r"""The 2-D power spectrum ``|DFT(image - mean)|^2``, zero frequency at the centre.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``.
        window: ``'hann'`` (default) tapers the image to zero at its border first, so that the
            jump between opposite edges (the DFT treats the image as periodic) does not add a
            spurious ``f^-2`` cross to the spectrum; ``None`` for a periodic image.

    Returns:
        ``(fy, fx, power)``: the frequencies in cycles per pixel along the rows (``H``) and the
        columns (``W``), increasing, and the ``(H, W)`` power, normalised so that white noise of
        variance ``s^2`` has a flat spectrum of height ``s^2``.
    """
    x = _gray(image)
    x = x - x.mean()
    win = _window(x.shape, window)
    if win is not None:
        x = x * win
        norm = float(np.sum(win ** 2))
    else:
        norm = float(x.size)
    p = np.abs(np.fft.fft2(x)) ** 2 / norm
    fy = np.fft.fftshift(np.fft.fftfreq(x.shape[0]))
    fx = np.fft.fftshift(np.fft.fftfreq(x.shape[1]))
    return fy, fx, np.fft.fftshift(p)


class RadialSpectrum(NamedTuple):
    frequency: F64Array   #: mean spatial frequency of each ring, cycles per pixel
    power: F64Array       #: mean power in the ring
    count: NDArray[np.intp]  # type: ignore[assignment]  # (shadows tuple.count, as it always did)


def radial_power_spectrum(image: ArrayLike, window: Optional[str] = "hann") -> RadialSpectrum:
    r"""The power spectrum averaged over rings of equal spatial frequency ``|f|``.

    Rings are ``1 / min(H, W)`` cycles per pixel wide, from the first non-zero frequency up to
    the Nyquist frequency 0.5 (the corners beyond it are left out, and so is ``f = 0``).

    Returns:
        :class:`RadialSpectrum` ``(frequency, power, count)``.
    """
    fy, fx, p = power_spectrum(image, window)
    r = np.hypot(fy[:, None], fx[None, :])
    step = 1.0 / min(p.shape)
    ring = np.rint(r / step).astype(np.int64).ravel()
    nring = min(p.shape) // 2 + 1
    keep = (ring >= 1) & (ring < nring)
    count = np.bincount(ring[keep], minlength=nring)[1:]
    total = np.bincount(ring[keep], weights=p.ravel()[keep], minlength=nring)[1:]
    fsum = np.bincount(ring[keep], weights=r.ravel()[keep], minlength=nring)[1:]
    ok = count > 0
    return RadialSpectrum(fsum[ok] / count[ok], total[ok] / count[ok], count[ok])


class PowerLawFit(NamedTuple):
    slope: float      #: the exponent: power ~ amplitude * frequency ** slope
    amplitude: float  #: the power extrapolated to frequency 1 (cycle per pixel)
    fmin: float       #: the frequency range that was fitted
    fmax: float


def fit_power_law(frequency: ArrayLike, power: ArrayLike, fmin: Optional[float] = None,
                  fmax: Optional[float] = None, weights: Optional[ArrayLike] = None
                  ) -> PowerLawFit:
    r"""Fit ``power = amplitude * frequency ** slope`` by weighted least squares on log-log axes.

    Args:
        frequency, power: 1-D arrays, e.g. from :func:`radial_power_spectrum`.
        fmin, fmax: the frequency range fitted (inclusive). Default: all positive frequencies.
        weights: optional 1-D array, one weight per point. For a radially averaged spectrum pass
            the ring sizes (``RadialSpectrum.count``): the variance of the log of a ring's mean
            power is about ``1 / count``, so this is the most precise fit (as
            :func:`spectrum_slope` does). Default: equal weights.

    Returns:
        :class:`PowerLawFit` ``(slope, amplitude, fmin, fmax)``.
    """
    f = np.asarray(frequency, dtype=np.float64).ravel()
    p = np.asarray(power, dtype=np.float64).ravel()
    if f.shape != p.shape:
        raise ValueError(f"frequency and power must have the same length, got {f.size} and {p.size}")
    wt = np.ones_like(f) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if wt.shape != f.shape or (wt < 0).any():
        raise ValueError("weights must be non-negative, one per frequency")
    keep = (f > 0) & (p > 0) & np.isfinite(f) & np.isfinite(p) & (wt > 0)
    if fmin is not None:
        keep &= f >= fmin
    if fmax is not None:
        keep &= f <= fmax
    if np.count_nonzero(keep) < 2 or np.ptp(f[keep]) == 0:
        raise ValueError("need at least two distinct positive frequencies with positive power "
                         f"in [{fmin}, {fmax}] to fit a power law")
    lf, lp = np.log(f[keep]), np.log(p[keep])
    sw = np.sqrt(wt[keep])
    a = np.stack([lf, np.ones_like(lf)], axis=1) * sw[:, None]
    (slope, intercept), *_ = np.linalg.lstsq(a, lp * sw, rcond=None)
    return PowerLawFit(float(slope), float(np.exp(intercept)), float(f[keep].min()),
                       float(f[keep].max()))


def spectrum_slope(image: ArrayLike, fmin: Optional[float] = None, fmax: Optional[float] = 0.4,
                   window: Optional[str] = "hann") -> PowerLawFit:
    r"""The power-law exponent of the radially averaged power spectrum of ``image``.

    ``fmin`` defaults to 3 rings (``3 / min(H, W)`` cycles per pixel: the lowest rings are
    blurred by the window and hold few coefficients); ``fmax`` to 0.4 (the highest frequencies of
    a photograph carry sensor noise, demosaicing and compression). About 0 for white noise, -2
    for natural images (and for :func:`power_law_noise` with ``exponent=2``).

    Returns:
        :class:`PowerLawFit`.
    """
    spec = radial_power_spectrum(image, window)
    if fmin is None:
        fmin = 3.0 / min(_gray(image).shape)
    return fit_power_law(spec.frequency, spec.power, fmin, fmax, weights=spec.count)


class Correlation(NamedTuple):
    distance: NDArray[Any]     #: pixel distances 0, 1, ..., max_distance
    correlation: F64Array      #: Pearson correlation of the pixel pairs at each distance
    n_pairs: NDArray[Any]      #: number of pairs behind each value


def correlation_vs_distance(image: ArrayLike, max_distance: Optional[int] = None
                            ) -> Correlation:
    r"""The correlation between two pixels as a function of their distance.

    For each distance ``d``, all pixel pairs ``d`` apart along a row or along a column are
    collected and their Pearson correlation computed (no wrap-around, no window). The sums over
    pairs come from the linear autocorrelation of each row and column, computed by FFT (the
    Wiener-Khinchin theorem), so every distance costs the same ``O(H W log)`` work in total.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``.
        max_distance: the largest ``d``. Default: ``min(H, W) // 4``.

    Returns:
        :class:`Correlation` ``(distance, correlation, n_pairs)``; ``correlation[0] == 1`` for
        any image that is not constant (NaN for a constant one).
    """
    x = _gray(image)
    h, w = x.shape
    if max_distance is None:
        max_distance = min(h, w) // 4
    max_distance = int(max_distance)
    if not 0 <= max_distance < max(h, w):
        raise ValueError(f"max_distance must be in [0, {max(h, w) - 1}] for a {h}x{w} image, "
                         f"got {max_distance}")
    x = x - x.mean()
    dist = np.arange(max_distance + 1)
    sums = np.zeros((5, dist.size))  # sum a, sum b, sum a^2, sum b^2, sum ab over all pairs
    npairs = np.zeros(dist.size, dtype=np.int64)
    for axis in (1, 0):  # pairs along rows (horizontal distance), then along columns
        n = x.shape[axis]
        ds = dist[dist < n]
        line = x.sum(axis=1 - axis)             # per column (axis 1) or per row (axis 0) sums
        line2 = (x * x).sum(axis=1 - axis)
        pre = np.concatenate([[0.0], np.cumsum(line)])
        pre2 = np.concatenate([[0.0], np.cumsum(line2)])
        # sum over pairs of x[k] * x[k + d] along the axis, for every d at once: the linear
        # autocorrelation of each line, by FFT (zero-padded to 2n: no wrap-around)
        spec = np.fft.rfft(x, n=2 * n, axis=axis)
        ac = np.fft.irfft(np.abs(spec) ** 2, n=2 * n, axis=axis).sum(axis=1 - axis)[:n]
        sums[0, ds] += pre[n - ds]                # first elements: positions 0 .. n-d-1
        sums[1, ds] += pre[n] - pre[ds]           # second elements: positions d .. n-1
        sums[2, ds] += pre2[n - ds]
        sums[3, ds] += pre2[n] - pre2[ds]
        sums[4, ds] += ac[ds]
        npairs[ds] += (n - ds) * x.shape[1 - axis]
    sa, sb, saa, sbb, sab = sums
    cov = sab - sa * sb / npairs
    var_a = saa - sa * sa / npairs
    var_b = sbb - sb * sb / npairs
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt(var_a * var_b)
        corr = np.where(den > 0, cov / np.where(den > 0, den, 1), np.nan)
    corr[0] = 1.0 if (x != 0).any() else np.nan  # exactly, not up to rounding
    return Correlation(dist, np.clip(corr, -1.0, 1.0), npairs)


def correlation_noise_floor(n_pairs: ArrayLike) -> F64Array:
    r"""``1 / sqrt(n_pairs)``: the standard deviation of the sample correlation of ``n_pairs``
    independent pairs. A measured correlation of this size is indistinguishable from zero; to
    resolve a correlation of ``1e-3`` takes ``1e6`` samples."""
    return 1.0 / np.sqrt(np.asarray(n_pairs, dtype=np.float64))


def autocorrelation(image: ArrayLike) -> F64Array:
    r"""The circular autocorrelation of ``image - mean``, normalised to 1 at zero lag, computed
    from the power spectrum (Wiener-Khinchin: ``irfft2(|rfft2(x)|^2)``).

    ``result[dy, dx]`` is ``mean(x * roll(x, (-dy, -dx))) / var(x)`` (lags modulo the size);
    it approximates :func:`correlation_vs_distance` for lags small against the image size.
    """
    x = _gray(image)
    x = x - x.mean()
    spec = np.fft.rfft2(x)
    ac = np.fft.irfft2(np.abs(spec) ** 2, s=x.shape)
    if ac[0, 0] <= 0:
        raise ValueError("the autocorrelation of a constant image is undefined")
    return ac / ac[0, 0]


# ----------------------------------------------------------------------------------------------
# synthetic images with known statistics
# ----------------------------------------------------------------------------------------------
def power_law_noise(shape: Sequence[int], exponent: float = 2.0, seed: SeedLike = None,
                    dtype: DTypeLike = np.float64) -> NDArray[Any]:
    r"""A periodic Gaussian random field whose power spectrum is ``f^-exponent``.

    White noise is shaped in the frequency domain by ``f^(-exponent / 2)`` (zero at ``f = 0``),
    so that ``exponent=0`` is white noise and ``exponent=2`` has the ``1/f^2`` spectrum of
    natural images. The result has mean 0 and standard deviation 1.

    Args:
        shape: ``(H, W)``.
        exponent: the power-law exponent (the spectrum slope is ``-exponent``). Default: 2.
        seed: for ``numpy.random.default_rng``.
    """
    h, w = (int(v) for v in shape)
    rng = np.random.default_rng(seed)
    noise = np.fft.rfft2(rng.standard_normal((h, w)))
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    f[0, 0] = 1.0
    amp = f ** (-exponent / 2.0)
    amp[0, 0] = 0.0
    x = np.fft.irfft2(noise * amp, s=(h, w))
    x /= x.std()
    return x.astype(dtype)


def dead_leaves(shape: Sequence[int], n_discs: Optional[int] = None, seed: SeedLike = None,
                rmin: float = 1.0, rmax: Optional[float] = None) -> F64Array:
    r"""A "dead leaves" image: opaque discs of random grey levels dropped one over another,
    radii drawn from ``p(r) ~ r^-3`` in ``[rmin, rmax]`` (scale invariant). It has the
    occlusions, flat regions and sharp edges of natural images and a power spectrum close to
    ``f^-2``; used when no photograph is available.

    Returns:
        ``(H, W)`` float64 in ``[0, 1]``.
    """
    h, w = (int(v) for v in shape)
    rng = np.random.default_rng(seed)
    rmax = max(h, w) / 4 if rmax is None else float(rmax)
    if n_discs is None:
        n_discs = int(8 * h * w / rmin ** 2 / 50)
    img = np.full((h, w), np.nan)
    # inverse-CDF sampling of p(r) ~ r^-3 on [rmin, rmax]
    u = rng.random(n_discs)
    radii = 1.0 / np.sqrt(1.0 / rmin ** 2 - u * (1.0 / rmin ** 2 - 1.0 / rmax ** 2))
    cy = rng.uniform(-rmax, h + rmax, n_discs)
    cx = rng.uniform(-rmax, w + rmax, n_discs)
    grey = rng.random(n_discs)
    for r, y0, x0, v in zip(radii, cy, cx, grey):  # front to back: paint only what is empty
        y1, y2 = max(int(y0 - r), 0), min(int(y0 + r) + 1, h)
        x1, x2 = max(int(x0 - r), 0), min(int(x0 + r) + 1, w)
        if y1 >= y2 or x1 >= x2:
            continue
        yy, xx = np.ogrid[y1:y2, x1:x2]
        patch = img[y1:y2, x1:x2]
        inside = ((yy - y0) ** 2 + (xx - x0) ** 2 <= r * r) & np.isnan(patch)
        patch[inside] = v
    hole = np.isnan(img)
    img[hole] = rng.random() if hole.any() else 0
    return img
