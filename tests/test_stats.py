"""fastconv.stats on synthetic images whose statistics are known."""
import numpy as np
import pytest

from fastconv import stats


def white(shape=(256, 256), seed=0, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def ar1_field(shape, rho, seed=0):
    """Separable AR(1) field: the correlation at distance d along an axis is rho**d."""
    x = np.random.default_rng(seed).standard_normal(shape)
    for axis in (0, 1):
        x = np.moveaxis(x, axis, 0).copy()
        for i in range(1, x.shape[0]):
            x[i] = rho * x[i - 1] + np.sqrt(1 - rho ** 2) * x[i]
        x = np.moveaxis(x, 0, axis)
    return x


# ---- power spectrum ---------------------------------------------------------------------------
@pytest.mark.parametrize("window", ["hann", None])
def test_white_noise_spectrum_is_flat_at_the_variance(window):
    img = white(scale=3.0)
    spec = stats.radial_power_spectrum(img, window)
    assert spec.power.mean() == pytest.approx(9.0, rel=0.05)
    assert abs(stats.spectrum_slope(img, window=window).slope) < 0.15


@pytest.mark.parametrize("exponent", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("window", ["hann", None])
def test_power_law_field_slope(exponent, window):
    slopes = [stats.spectrum_slope(stats.power_law_noise((256, 256), exponent, seed=s),
                                   window=window).slope for s in range(3)]
    assert np.mean(slopes) == pytest.approx(-exponent, abs=0.12)


def test_one_over_f_squared_non_square():
    img = stats.power_law_noise((160, 224), 2.0, seed=5)
    assert stats.spectrum_slope(img).slope == pytest.approx(-2.0, abs=0.2)
    assert img.std() == pytest.approx(1.0) and abs(img.mean()) < 1e-12


def test_parseval_without_window():
    img = white((32, 48), seed=1) + 5.0
    _, _, p = stats.power_spectrum(img, window=None)
    assert p.mean() == pytest.approx(img.var())
    assert p[16, 24] == pytest.approx(0.0, abs=1e-9)  # zero frequency (the mean) at the centre


def test_sine_grating_peaks_at_its_frequency():
    y, x = np.mgrid[0:128, 0:128]
    img = np.sin(2 * np.pi * (x * 10 / 128 + y * 6 / 128))
    fy, fx, p = stats.power_spectrum(img, window=None)
    iy, ix = np.unravel_index(p.argmax(), p.shape)
    assert abs(fx[ix]) == pytest.approx(10 / 128) and abs(fy[iy]) == pytest.approx(6 / 128)
    spec = stats.radial_power_spectrum(img, window=None)
    assert spec.frequency[spec.power.argmax()] == pytest.approx(np.hypot(10, 6) / 128, abs=1 / 128)


def test_radial_rings():
    spec = stats.radial_power_spectrum(white((64, 64)))
    assert 0.5 / 64 <= spec.frequency[0] < 1.5 / 64  # ring 1: |f| rounds to 1/64
    assert spec.frequency.max() <= 0.5 + 1 / 128
    assert np.all(np.diff(spec.frequency) > 0)
    assert spec.count.sum() <= 64 * 64 - 1
    assert spec.count[0] > 0 and len(spec.frequency) == len(spec.power) == len(spec.count)


def test_colour_and_uint8_images_are_averaged_to_grey():
    rgb = (np.random.default_rng(2).random((40, 50, 3)) * 255).astype(np.uint8)
    a = stats.radial_power_spectrum(rgb)
    b = stats.radial_power_spectrum(rgb.astype(np.float64).mean(axis=2))
    np.testing.assert_allclose(a.power, b.power)


# ---- fitting ----------------------------------------------------------------------------------
def test_fit_exact_power_law():
    f = np.linspace(0.01, 0.5, 50)
    fit = stats.fit_power_law(f, 3.0 * f ** -1.7)
    assert fit.slope == pytest.approx(-1.7) and fit.amplitude == pytest.approx(3.0)
    part = stats.fit_power_law(f, np.where(f < 0.1, 3.0 * f ** -1.7, 1.0), fmax=0.1)
    assert part.slope == pytest.approx(-1.7) and part.fmax <= 0.1
    w = stats.fit_power_law(f, 3.0 * f ** -1.7, weights=np.arange(50))
    assert w.slope == pytest.approx(-1.7)


@pytest.mark.parametrize("args,kw", [
    (([0.1], [1.0]), {}),
    (([0.1, 0.1], [1.0, 2.0]), {}),
    (([0.1, 0.2], [1.0]), {}),
    (([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]), dict(fmin=0.25)),
    (([0.0, -1.0], [1.0, 2.0]), {}),
    (([0.1, 0.2], [1.0, 2.0]), dict(weights=[1.0, -1.0])),
])
def test_fit_errors(args, kw):
    with pytest.raises(ValueError):
        stats.fit_power_law(*args, **kw)


# ---- correlation ------------------------------------------------------------------------------
def brute_force(img, max_d):
    x = img - img.mean()
    h, w = x.shape
    out = []
    for d in range(max_d + 1):
        a = [x[:, :w - d].ravel()] if d < w else []
        b = [x[:, d:].ravel()] if d < w else []
        if d < h:
            a.append(x[:h - d].ravel())
            b.append(x[d:].ravel())
        out.append(np.corrcoef(np.concatenate(a), np.concatenate(b))[0, 1])
    return np.array(out)


@pytest.mark.parametrize("shape,max_d", [((7, 11), 9), ((30, 20), 25), ((40, 40), 10)])
def test_correlation_equals_brute_force(shape, max_d):
    img = stats.power_law_noise(shape, 1.5, seed=1) + 3.0
    c = stats.correlation_vs_distance(img, max_d)
    np.testing.assert_allclose(c.correlation, brute_force(img, max_d), atol=1e-12)
    h, w = shape
    d = c.distance
    expected = np.where(d < w, h * (w - d), 0) + np.where(d < h, w * (h - d), 0)
    np.testing.assert_array_equal(c.n_pairs, expected)


def test_white_noise_is_uncorrelated_beyond_zero():
    c = stats.correlation_vs_distance(white(), 20)
    assert c.correlation[0] == 1.0
    floor = stats.correlation_noise_floor(c.n_pairs)
    assert np.all(np.abs(c.correlation[1:]) < 5 * floor[1:])
    assert floor[1] == pytest.approx(1 / np.sqrt(2 * 256 * 255))


def test_ar1_field_decays_exponentially():
    rho = 0.8
    curves = [stats.correlation_vs_distance(ar1_field((256, 256), rho, seed=s), 10).correlation
              for s in range(3)]
    np.testing.assert_allclose(np.mean(curves, axis=0), rho ** np.arange(11), atol=0.03)


def test_natural_like_images_decay_slowly():
    """A 1/f^2 field stays correlated far longer than an AR(1) field with the same neighbour
    correlation: power-law (slow) vs exponential (fast) decay, as in the notes."""
    field = stats.correlation_vs_distance(stats.power_law_noise((256, 256), 2.0, seed=3), 32)
    rho = field.correlation[1]
    assert field.correlation[16] > 3 * rho ** 16


def test_correlation_edge_cases():
    assert np.isnan(stats.correlation_vs_distance(np.ones((5, 5)), 2).correlation).all()
    c = stats.correlation_vs_distance(white((20, 30)))
    assert c.distance[-1] == 5
    with pytest.raises(ValueError):
        stats.correlation_vs_distance(white((20, 30)), 30)
    with pytest.raises(ValueError):
        stats.correlation_vs_distance(white((20, 30)), -1)


def test_autocorrelation_is_the_inverse_transform_of_the_power_spectrum():
    img = stats.power_law_noise((24, 40), 2.0, seed=4) + 0.5
    ac = stats.autocorrelation(img)
    x = img - img.mean()
    for dy, dx in [(0, 0), (0, 1), (1, 0), (3, 7), (23, 39)]:
        direct = np.mean(x * np.roll(x, (-dy, -dx), axis=(0, 1))) / np.mean(x * x)
        assert ac[dy, dx] == pytest.approx(direct)
    with pytest.raises(ValueError):
        stats.autocorrelation(np.ones((4, 4)))


# ---- synthetic images and input checks --------------------------------------------------------
def test_dead_leaves():
    img = stats.dead_leaves((96, 80), seed=1)
    assert img.shape == (96, 80) and np.isfinite(img).all()
    assert img.min() >= 0 and img.max() <= 1
    np.testing.assert_array_equal(img, stats.dead_leaves((96, 80), seed=1))
    assert -3.0 < stats.spectrum_slope(stats.dead_leaves((192, 192), seed=2)).slope < -1.5


@pytest.mark.parametrize("bad,exc", [
    (np.zeros(5), ValueError), (np.zeros((1, 5)), ValueError), (np.zeros((2, 3, 4, 5)), ValueError),
    (np.zeros((4, 4), complex), TypeError), (np.array([[1.0, np.nan], [0, 0]]), ValueError),
    (np.array([["a", "b"], ["c", "d"]]), TypeError),
])
def test_bad_images(bad, exc):
    with pytest.raises(exc):
        stats.radial_power_spectrum(bad)
    with pytest.raises(exc):
        stats.correlation_vs_distance(bad, 0)


def test_bad_window():
    with pytest.raises(ValueError, match="window"):
        stats.power_spectrum(white((8, 8)), window="hamming")
