"""fastconv.filters: the notes' kernels, filter2d (correlate/convolve, dtypes, channels) and the
padding modes (pad2d / pad2d_backward equal torch's F.pad and its gradient)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import filters as fl

MODES = fl.PADDING_MODES
FIXED = [n for n in fl.KERNEL_NAMES if n != "gaussian"]
rng = np.random.default_rng(0)
IMG = rng.random((13, 17))
RGB = rng.random((11, 9, 3))


def ramp(h=12, w=14, a=0.5, b=0.0):
    """Image a*x + b*y (x = column index, y = row index)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return a * x + b * y


# ---- the kernels -----------------------------------------------------------------------------
def test_kernels_of_the_notes():
    np.testing.assert_array_equal(fl.sharpen, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    np.testing.assert_array_equal(fl.box_blur * 9, np.ones((3, 3)))
    np.testing.assert_array_equal(fl.gaussian_blur * 16, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    for name in FIXED:
        k = fl.get_kernel(name)
        assert k.shape == (3, 3) and k.dtype == np.float64
        np.testing.assert_array_equal(k, getattr(fl, name))
    sums = {n: fl.get_kernel(n).sum() for n in FIXED}
    for n in ("identity", "sharpen", "box_blur", "gaussian_blur", "emboss"):
        assert sums[n] == pytest.approx(1.0)
    for n in ("sobel_x", "sobel_y", "laplacian"):
        assert sums[n] == 0


def test_kernels_are_read_only_and_get_kernel_copies():
    with pytest.raises(ValueError):
        fl.sharpen[0, 0] = 3
    k = fl.get_kernel("sharpen")
    k[0, 0] = 3
    assert fl.sharpen[0, 0] == 0


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_gaussian(sigma):
    k = fl.gaussian(sigma)
    n = 2 * int(np.ceil(3 * sigma)) + 1
    assert k.shape == (n, n)
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    assert k.argmax() == (n * n) // 2
    u = np.arange(n) - n // 2
    var = (k.sum(axis=0) * u ** 2).sum()
    assert var == pytest.approx(sigma ** 2, rel=0.05 if sigma >= 1 else 0.2)
    assert fl.gaussian(sigma, size=5).shape == (5, 5)


@pytest.mark.parametrize("bad", [dict(sigma=0), dict(sigma=-1), dict(sigma=float("nan")),
                                 dict(sigma=1, size=4), dict(sigma=1, size=0),
                                 dict(sigma="1")])
def test_gaussian_errors(bad):
    with pytest.raises((ValueError, TypeError)):
        fl.gaussian(**bad)


def test_gaussian_too_large_is_refused_before_allocating():
    # sigma=1e6 would be a 6000001x6000001 kernel (288 TB): a MemoryError before
    with pytest.raises(ValueError, match=r"sigma=1000000.0 asks for a 6000001x6000001 kernel.*"
                                         r"at most 682"):
        fl.gaussian(1e6)
    with pytest.raises(ValueError, match="size must be at most 4097, got 4099"):
        fl.gaussian(1.0, size=4099)
    with pytest.raises(ValueError, match="asks for a 4099x4099 kernel"):
        fl.gaussian(683.0)
    assert fl.gaussian(1e6, size=3).shape == (3, 3)


def test_get_kernel_errors_list_names():
    with pytest.raises(ValueError) as e:
        fl.get_kernel("blur")
    for name in fl.KERNEL_NAMES:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="gaussian"):
        fl.get_kernel("sharpen", sigma=2)
    np.testing.assert_allclose(fl.get_kernel("gaussian", sigma=2), fl.gaussian(2))
    np.testing.assert_allclose(fl.get_kernel("gaussian"), fl.gaussian(1))


# ---- what each kernel does to an image --------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_identity_is_exact(mode):
    for img in (IMG, RGB, IMG.astype(np.float32), (IMG * 255).astype(np.uint8)):
        out = fl.filter2d(img, "identity", mode)
        assert out.dtype == img.dtype and out.shape == img.shape
        np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("name", ["box_blur", "gaussian_blur", "sharpen", "emboss", "gaussian"])
def test_kernels_summing_to_one_keep_a_constant_image(mode, name):
    img = np.full((9, 10), 0.3)
    np.testing.assert_allclose(fl.filter2d(img, name, mode), img, atol=1e-12)


def test_blur_keeps_the_mean_of_a_periodic_image():
    for name in ("box_blur", "gaussian_blur", "gaussian"):
        out = fl.filter2d(IMG, name, "circular")
        assert out.mean() == pytest.approx(IMG.mean(), abs=1e-12)
        assert out.std() < IMG.std()  # and smooths it


def test_zero_padding_darkens_the_border_only():
    img = np.ones((8, 8))
    out = fl.filter2d(img, "box_blur", "zeros")
    np.testing.assert_allclose(out[1:-1, 1:-1], 1)
    assert out[0, 0] == pytest.approx(4 / 9) and out[0, 3] == pytest.approx(6 / 9)


def test_sobel_on_ramps():
    horizontal = ramp(a=0.5)  # brighter to the right
    vertical = ramp(a=0.0, b=0.25)  # brighter downwards
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(fl.filter2d(horizontal, "sobel_x")[inner], 8 * 0.5)
    np.testing.assert_allclose(fl.filter2d(horizontal, "sobel_y")[inner], 0, atol=1e-12)
    np.testing.assert_allclose(fl.filter2d(vertical, "sobel_y")[inner], 8 * 0.25)
    np.testing.assert_allclose(fl.filter2d(vertical, "sobel_x")[inner], 0, atol=1e-12)
    # convolution flips the kernel: the sign of a derivative kernel flips
    np.testing.assert_allclose(fl.filter2d(horizontal, "sobel_x", mode="convolve")[inner], -4.0)
    # replicate padding: the ramp is flat beyond the border, the derivative halves there
    out = fl.filter2d(horizontal, "sobel_x", "replicate")
    np.testing.assert_allclose(out[1:-1, 0], 4 * 0.5)


def test_laplacian_zero_on_ramps_and_two_on_a_parabola():
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(fl.filter2d(ramp(a=0.3, b=-0.7), "laplacian")[inner], 0, atol=1e-12)
    y, x = np.mgrid[0:10, 0:10].astype(np.float64)
    np.testing.assert_allclose(fl.filter2d(x ** 2, "laplacian")[inner], 2.0)
    np.testing.assert_allclose(fl.filter2d(x ** 2 + y ** 2, "laplacian")[inner], 4.0)


def test_sharpen_is_image_minus_laplacian():
    for mode in MODES:
        np.testing.assert_allclose(fl.filter2d(IMG, "sharpen", mode),
                                   IMG - fl.filter2d(IMG, "laplacian", mode), atol=1e-12)


def test_emboss_responds_to_a_diagonal_edge():
    img = np.zeros((10, 10))
    img[np.add.outer(np.arange(10), np.arange(10)) >= 10] = 1.0  # bright lower-right half
    out = fl.filter2d(img, "emboss", "replicate")
    assert out.max() > 1 and out.min() >= 0  # the edge is lifted, towards the light


# ---- correlate vs convolve --------------------------------------------------------------------
def test_impulse_response():
    """Convolving a unit impulse gives the kernel, correlating gives it turned by a half turn."""
    k = rng.standard_normal((3, 5))
    img = np.zeros((9, 11))
    img[4, 5] = 1.0
    conv = fl.filter2d(img, k, "zeros", mode="convolve")
    corr = fl.filter2d(img, k, "zeros", mode="correlate")
    np.testing.assert_allclose(conv[3:6, 3:8], k, atol=1e-15)
    np.testing.assert_allclose(corr[3:6, 3:8], k[::-1, ::-1], atol=1e-15)


@pytest.mark.parametrize("mode", MODES)
def test_convolve_is_correlate_with_the_flipped_kernel(mode):
    k = rng.standard_normal((3, 3))
    np.testing.assert_allclose(fl.filter2d(RGB, k, mode, mode="convolve"),
                               fl.filter2d(RGB, k[::-1, ::-1], mode), atol=1e-12)
    for name in ("sharpen", "box_blur", "gaussian_blur", "laplacian", "identity"):  # symmetric
        np.testing.assert_array_equal(fl.filter2d(IMG, name, mode, mode="convolve"),
                                      fl.filter2d(IMG, name, mode))


def test_convolution_theorem_with_circular_padding():
    """Circular padding makes filter2d the periodic convolution: the product of the DFTs."""
    k = rng.standard_normal((3, 3))
    out = fl.filter2d(IMG, k, "circular", mode="convolve")
    kk = np.zeros_like(IMG)
    kk[:3, :3] = k
    kk = np.roll(kk, (-1, -1), axis=(0, 1))  # the kernel's centre at the origin
    expected = np.real(np.fft.ifft2(np.fft.fft2(IMG) * np.fft.fft2(kk)))
    np.testing.assert_allclose(out, expected, atol=1e-12)


# ---- images: channels, dtypes, sizes ----------------------------------------------------------
def test_channels_are_filtered_independently():
    k = rng.standard_normal((3, 3))
    out = fl.filter2d(RGB, k)
    assert out.shape == RGB.shape
    for c in range(3):
        np.testing.assert_allclose(out[..., c], fl.filter2d(np.ascontiguousarray(RGB[..., c]), k),
                                   atol=1e-14)


def test_dtypes():
    assert fl.filter2d(IMG.astype(np.float32), "sharpen").dtype == np.float32
    out16 = fl.filter2d(IMG.astype(np.float16), "box_blur")
    assert out16.dtype == np.float16
    np.testing.assert_allclose(out16, fl.filter2d(IMG, "box_blur"), atol=2e-3)
    np.testing.assert_allclose(fl.filter2d(IMG.astype(np.float32), "sharpen"),
                               fl.filter2d(IMG, "sharpen"), atol=1e-5)


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_byte_swapped_image_gives_the_native_result(dtype):
    swapped = IMG.astype(dtype)
    out = fl.filter2d(swapped, "gaussian_blur")
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, fl.filter2d(IMG.astype(out.dtype), "gaussian_blur"))


def test_uint8_is_rounded_and_clipped():
    img = np.array([[0, 255, 0, 255], [10, 20, 30, 40], [250, 5, 128, 129]], dtype=np.uint8)
    for name in ("sharpen", "sobel_x", "emboss", "box_blur"):
        out = fl.filter2d(img, name, "replicate")
        exact = fl.filter2d(img.astype(np.float64), name, "replicate")
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, np.clip(np.rint(exact), 0, 255))
    assert fl.filter2d(img, "sharpen").max() == 255 and fl.filter2d(img, "sharpen").min() == 0
    # halves round to even: (1 + 2) / 2 = 1.5 -> 2, (3 + 2) / 2 = 2.5 -> 2
    half = np.array([[0.5, 0.5]])
    out = fl.filter2d(np.array([[1, 2, 3, 2]], dtype=np.uint8), half, "replicate")
    np.testing.assert_array_equal(out, [[2, 2, 2, 2]])


def test_even_kernel_alignment_matches_same_padding():
    k = rng.standard_normal((2, 4))
    out = fl.filter2d(IMG, k, "zeros")
    direct = fastconv.conv2d(IMG[None, None], k[None, None], padding="same")[0, 0]
    np.testing.assert_allclose(out, direct, atol=1e-14)
    out = fl.filter2d(IMG, k, "replicate")
    padded = fl.pad2d(IMG[None, None], (1, 2, 0, 1), "replicate")
    np.testing.assert_allclose(out, fastconv.conv2d(padded, k[None, None])[0, 0], atol=1e-14)


def test_fft_algorithm_gives_the_same_filter():
    k = fl.gaussian(3.0)
    img = rng.random((30, 25, 3))
    np.testing.assert_allclose(fl.filter2d(img, k, algorithm="fft"),
                               fl.filter2d(img, k, algorithm="direct"), atol=1e-12)


def test_non_contiguous_image_and_input_untouched():
    big = rng.random((20, 30, 4))
    view = big[::2, ::3, 1:]
    copy = view.copy()
    np.testing.assert_allclose(fl.filter2d(view, "sharpen"), fl.filter2d(copy, "sharpen"))
    np.testing.assert_array_equal(view, copy)


@pytest.mark.parametrize("image,kernel,kw,exc,match", [
    (np.zeros(5), "sharpen", {}, ValueError, "image"),
    (np.zeros((2, 3, 4, 5)), "sharpen", {}, ValueError, "image"),
    (np.zeros((5, 5), np.int16), "sharpen", {}, TypeError, "uint8"),
    (np.zeros((5, 5), bool), "sharpen", {}, TypeError, "uint8"),
    (np.zeros((5, 5)), np.ones(3), {}, ValueError, "kernel"),
    (np.zeros((5, 5)), np.ones((0, 3)), {}, ValueError, "kernel"),
    (np.zeros((5, 5)), np.ones((3, 3), complex), {}, TypeError, "kernel"),
    (np.zeros((5, 5)), "blur", {}, ValueError, "box_blur"),
    (np.zeros((5, 5)), "sharpen", dict(mode="conv"), ValueError, "mode"),
    (np.zeros((5, 5)), "sharpen", dict(padding_mode="mirror"), ValueError, "padding_mode"),
    (np.zeros((5, 5)), "sharpen", dict(padding_mode="constant"), ValueError, "padding_mode"),
    (np.zeros((1, 5)), "sharpen", dict(padding_mode="reflect"), ValueError, "does not fit"),
    (np.zeros((5, 5)), "sharpen", dict(algorithm="fastest"), ValueError, "algorithm"),
])
def test_filter2d_errors(image, kernel, kw, exc, match):
    with pytest.raises(exc, match=match):
        fl.filter2d(image, kernel, **kw)


def test_a_kept_plan_follows_the_kernel_and_the_arguments():
    """filter2d keeps the plans of recent calls: a changed kernel, or an argument equal but of
    another type, must not get an old plan."""
    img = np.random.default_rng(3).random((9, 11)).astype(np.float32)
    k = np.array(fl.sharpen)
    first = fl.filter2d(img, k)
    k[1, 1] = 4.0  # the same array object, new content
    np.testing.assert_array_equal(fl.filter2d(img, k), fl.filter2d(img, k, separable=False))
    assert not np.array_equal(fl.filter2d(img, k), first)
    fl.filter2d(img, "gaussian_blur", separable=True)
    with pytest.raises(TypeError, match="separable"):
        fl.filter2d(img, "gaussian_blur", separable=1)
    fl.filter2d(img, "sharpen", output_dtype="float")
    with pytest.raises(ValueError, match="output_dtype"):
        fl.filter2d(img, "sharpen", output_dtype="float128")
    assert fl.filter2d(img.astype(np.float64), "sharpen").dtype == np.float64
    assert fl.filter2d(img, "sharpen", mode="convolve").dtype == np.float32
    for seed in range(2 * fl._PLANS_MAX):  # many kernels: the kept plans stay bounded
        fl.filter2d(img, np.random.default_rng(seed).random((3, 3)))
    assert len(fl._PLANS) <= fl._PLANS_MAX


def test_a_kept_bank_of_names_follows_the_names(monkeypatch):
    """A bank given as a list of kernel names is planned once (its plan is kept, as a name's is),
    and the same list with other names gets a new plan."""
    img = np.random.default_rng(4).random((9, 11)).astype(np.float32)
    names = ["sobel_x", "sharpen"]
    first = fl.filter2d(img, names)
    plans = []
    make_plan = fl._filter_plan
    monkeypatch.setattr(fl, "_filter_plan", lambda *a, **kw: plans.append(a) or make_plan(*a, **kw))
    np.testing.assert_array_equal(fl.filter2d(img, names), first)
    np.testing.assert_array_equal(fl.filter2d(img, tuple(names)), first)
    assert plans == []
    names[1] = "emboss"  # the same list object, new content
    np.testing.assert_array_equal(fl.filter2d(img, names),
                                  fl.filter2d(img, np.stack([fl.sobel_x, fl.emboss])))
    assert len(plans) == 2


@pytest.mark.parametrize("mode, fits, too_tall", [
    ("reflect", 5, 6), ("circular", 7, 8), ("zeros", 9, None), ("replicate", 9, None)])
def test_kernels_taller_than_the_image(mode, fits, too_tall):
    """The padding limits of a kernel taller than a 3-row image: reflect pads fewer rows than the
    image has, circular at most as many, zeros and replicate any number."""
    img = ramp(3, 4, b=1.0)
    out = fl.filter2d(img, np.ones((fits, 1)), mode)
    pad = (fits - 1) // 2, fits - 1 - (fits - 1) // 2
    padded = np.pad(img, (pad, (0, 0)), {"reflect": "reflect", "circular": "wrap",
                                         "zeros": "constant", "replicate": "edge"}[mode])
    np.testing.assert_allclose(out, sum(padded[i:i + 3] for i in range(fits)), rtol=1e-12)
    if too_tall is not None:
        with pytest.raises(ValueError, match="does not fit"):
            fl.filter2d(img, np.ones((too_tall, 1)), mode)


def test_tiny_images():
    one = np.array([[0.7]])
    for mode in ("zeros", "replicate", "circular"):
        assert fl.filter2d(one, "box_blur", mode).shape == (1, 1)
    assert fl.filter2d(one, "box_blur", "replicate")[0, 0] == pytest.approx(0.7)
    assert fl.filter2d(np.zeros((0, 4)), "sharpen").shape == (0, 4)


# ---- padding modes ----------------------------------------------------------------------------
ROW = np.array([[[[1.0, 2.0, 3.0, 4.0]]]])
KNOWN = {
    "zeros": [0, 0, 1, 2, 3, 4, 0, 0],
    "constant": [0, 0, 1, 2, 3, 4, 0, 0],
    "reflect": [3, 2, 1, 2, 3, 4, 3, 2],
    "replicate": [1, 1, 1, 2, 3, 4, 4, 4],
    "circular": [3, 4, 1, 2, 3, 4, 1, 2],
}


@pytest.mark.parametrize("mode", list(KNOWN))
def test_pad2d_known_rows(mode):
    np.testing.assert_array_equal(fl.pad2d(ROW, (2, 2), mode)[0, 0, 0], KNOWN[mode])
    column = ROW.transpose(0, 1, 3, 2)  # the same values down a column: (top, bottom) pads it
    out = fl.pad2d(column, (0, 0, 2, 2), mode)  # (left, right, top, bottom)
    assert out.shape == (1, 1, 8, 1)
    np.testing.assert_array_equal(out[0, 0, :, 0], KNOWN[mode])


def test_pad2d_order_is_left_right_top_bottom():
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    out = fl.pad2d(x, (1, 2, 3, 4))
    assert out.shape == (1, 1, 2 + 3 + 4, 3 + 1 + 2)
    np.testing.assert_array_equal(out[0, 0, 3:5, 1:4], x[0, 0])
    assert fl.pad2d(x, (1, 2, 3, 4), value=-1.0)[0, 0, 0, 0] == -1.0
    assert fl.pad2d(x[0], (1, 1, 1, 1), "reflect").shape == (1, 4, 5)  # (C, H, W) too
    u8 = fl.pad2d(np.ones((1, 1, 2, 2), np.uint8), (1, 1, 1, 1), "replicate")
    assert u8.dtype == np.uint8


def test_pad2d_backward_folds_the_gradient_back():
    g = np.ones((1, 1, 1, 8))
    np.testing.assert_array_equal(fl.pad2d_backward(g, (2, 2), "zeros")[0, 0, 0], [1, 1, 1, 1])
    np.testing.assert_array_equal(fl.pad2d_backward(g, (2, 2), "replicate")[0, 0, 0], [3, 1, 1, 3])
    np.testing.assert_array_equal(fl.pad2d_backward(g, (2, 2), "reflect")[0, 0, 0], [1, 3, 3, 1])
    np.testing.assert_array_equal(fl.pad2d_backward(g, (2, 2), "circular")[0, 0, 0], [2, 2, 2, 2])


@pytest.mark.parametrize("x,pad,mode,match", [
    (ROW, (4, 0), "reflect", "reflect"),
    (ROW, (0, 5), "circular", "circular"),
    (ROW, (1, 1, 1, 1), "reflect", "reflect"),  # H = 1
    (ROW, (1, -1), "zeros", ">= 0"),
    (ROW, (1, 1, 1), "zeros", "pad must be"),
    (ROW, 1, "zeros", "pad must be"),
    (ROW, (1, 1), "edge", "mode"),
    (np.zeros(3), (1, 1, 1, 1), "zeros", "dimensions"),
    (np.zeros((1, 1, 0, 3)), (0, 0, 1, 1), "replicate", "non-empty"),
])
def test_pad2d_errors(x, pad, mode, match):
    with pytest.raises(ValueError, match=match):
        fl.pad2d(x, pad, mode)


def _torch():
    return pytest.importorskip("torch")


@settings(max_examples=60)
@given(st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
       st.tuples(*[st.integers(1, 6)] * 4), st.tuples(*[st.integers(0, 6)] * 4),
       st.integers(0, 2**32 - 1))
def test_pad2d_and_backward_equal_torch(mode, shape, pad, seed):
    torch = _torch()
    import torch.nn.functional as F

    x = np.random.default_rng(seed).standard_normal(shape)
    tmode = "constant" if mode == "zeros" else mode
    t = torch.tensor(x, requires_grad=True)
    try:
        y = F.pad(t, pad, mode=tmode)
    except (RuntimeError, ValueError, NotImplementedError):
        with pytest.raises(ValueError):  # torch refuses: so do we (pad too large for the size)
            fl.pad2d(x, pad, mode)
        return
    np.testing.assert_array_equal(fl.pad2d(x, pad, mode), y.detach().numpy())
    go = np.random.default_rng(seed + 1).standard_normal(tuple(y.shape))
    y.backward(torch.tensor(go))
    np.testing.assert_allclose(fl.pad2d_backward(go, pad, mode), t.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_filter2d_equals_torch(mode):
    torch = _torch()
    import torch.nn.functional as F

    for k in [fl.get_kernel(n) for n in FIXED] + [fl.gaussian(1.5), rng.standard_normal((4, 3))]:
        r, s = k.shape
        t = torch.tensor(RGB).permute(2, 0, 1)[None]
        tp = F.pad(t, ((s - 1) // 2, s - 1 - (s - 1) // 2, (r - 1) // 2, r - 1 - (r - 1) // 2),
                   mode="constant" if mode == "zeros" else mode)
        ref = F.conv2d(tp, torch.tensor(k)[None, None].repeat(3, 1, 1, 1), groups=3)
        np.testing.assert_allclose(fl.filter2d(RGB, k, mode), ref[0].permute(1, 2, 0).numpy(),
                                   atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_conv2d_with_padding_mode_recipe_equals_torch():
    """The recipe for nn.Conv2d(padding_mode=...): pad2d, then conv2d with padding 0; and in
    backward, conv2d_backward's grad_input folded back by pad2d_backward."""
    torch = _torch()
    import torch.nn as nn

    x = rng.standard_normal((2, 3, 9, 8))
    for mode in ("reflect", "replicate", "circular", "zeros"):
        for padding in ((1, 2), "same"):
            layer = nn.Conv2d(3, 4, (3, 4), padding=padding, padding_mode=mode, dtype=torch.float64)
            w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
            rev = layer._reversed_padding_repeated_twice  # torch's (left, right, top, bottom)
            pad = conv_pad(padding, w.shape[2:])
            assert tuple(pad) == tuple(rev)
            xp = fl.pad2d(x, pad, "constant" if mode == "zeros" else mode)
            y = fastconv.conv2d(xp, w, b)
            tx = torch.tensor(x, requires_grad=True)
            ty = layer(tx)
            np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-12)
            go = rng.standard_normal(y.shape)
            ty.backward(torch.tensor(go))
            gxp, gw, gb = fastconv.conv2d_backward(go, xp, w)
            gx = fl.pad2d_backward(gxp, pad, "constant" if mode == "zeros" else mode)
            np.testing.assert_allclose(gx, tx.grad.numpy(), atol=1e-12)
            np.testing.assert_allclose(gw, layer.weight.grad.numpy(), atol=1e-12)


def conv_pad(padding, kernel_hw):
    """torch's ``_reversed_padding_repeated_twice`` for ints/pairs and 'same' (dilation 1)."""
    if padding == "same":
        out = []
        for k in reversed(kernel_hw):
            total = k - 1
            out += [total // 2, total - total // 2]
        return tuple(out)
    ph, pw = padding
    return (pw, pw, ph, ph)
