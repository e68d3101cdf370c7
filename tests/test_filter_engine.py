"""fastconv.filters.filter2d on its filter engine: every dtype and padding mode against a float64
reference written here (numpy.pad + a sum of shifted slices), the separable path against the
direct one, banks against one call per kernel (bitwise), thread counts (bitwise), the argument
errors, and cross-checks against scipy.ndimage and OpenCV when they are installed."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _testing
from fastconv import filters as fl
from strategies import (FILTER_PADDING_MODES, filter_images, filter_kernels,
                        filter_padding_fits, float_box_images)

NUMPY_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
rng = np.random.default_rng(1)


def reference(img, k, padding_mode="reflect"):
    """Correlation of each channel of ``img`` with ``k`` in float64, the output pixel (i, j) at
    kernel element ((kh-1)//2, (kw-1)//2), the image extended by numpy.pad."""
    x = np.asarray(img, dtype=np.float64)
    x3 = x[:, :, None] if x.ndim == 2 else x
    kh, kw = k.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x3, ((top, kh - 1 - top), (left, kw - 1 - left), (0, 0)),
                mode=NUMPY_MODE[padding_mode])
    h, w = x3.shape[:2]
    out = np.zeros(x3.shape)
    mag = np.zeros(x3.shape)  # sum |k| |x|: the scale of the rounding errors
    for i in range(kh):
        for u in range(kw):
            out += k[i, u] * xp[i:i + h, u:u + w]
            mag += abs(k[i, u]) * np.abs(xp[i:i + h, u:u + w])
    return (out[..., 0], mag[..., 0]) if x.ndim == 2 else (out, mag)


def work_eps(img_dtype, out_dtype=None):
    f64 = np.float64 in (np.dtype(img_dtype).type, out_dtype)
    return np.finfo(np.float64 if f64 else np.float32).eps


def assert_close_to_reference(y, img, k, mode, eps):
    ref, mag = reference(img, k, mode)
    n = k.size
    assert y.shape == ref.shape
    err = np.abs(y.astype(np.float64) - ref)
    assert (err <= 2 * n * eps * mag + 1e-300).all(), err.max()


# ---- every dtype and padding mode against the reference ---------------------------------------
@settings(max_examples=150, deadline=None)
@given(img=filter_images(), k=filter_kernels(), mode=st.sampled_from(FILTER_PADDING_MODES),
       separable=st.sampled_from([None, False]))
def test_float_output_matches_padded_reference(img, k, mode, separable):
    if not filter_padding_fits(mode, img.shape, k.shape):
        with pytest.raises(ValueError, match="does not fit"):
            fl.filter2d(img, k, mode)
        return
    before = img.copy()
    y = fl.filter2d(img, k, mode, separable=separable, output_dtype="float")
    assert y.dtype == (np.float64 if img.dtype == np.float64 else np.float32)
    assert_close_to_reference(y, img, k, mode, work_eps(img.dtype))
    np.testing.assert_array_equal(img, before)


@settings(max_examples=60, deadline=None)
@given(img=filter_images(dtypes=(np.uint8, np.uint16)), k=filter_kernels(),
       mode=st.sampled_from(FILTER_PADDING_MODES))
def test_integer_output_is_the_rounded_saturated_reference(img, k, mode):
    if not filter_padding_fits(mode, img.shape, k.shape):
        return
    y = fl.filter2d(img, k, mode)
    assert y.dtype == img.dtype
    ref, mag = reference(img, k, mode)
    top = np.iinfo(img.dtype).max
    lo = np.clip(np.rint(ref - 2 * k.size * np.finfo(np.float32).eps * mag), 0, top)
    hi = np.clip(np.rint(ref + 2 * k.size * np.finfo(np.float32).eps * mag), 0, top)
    assert ((lo <= y) & (y <= hi)).all()


def test_integer_rounding_halves_to_even_and_saturation():
    img = np.array([[1, 2, 3, 2, 65535, 0]], dtype=np.uint16)
    out = fl.filter2d(img, np.array([[0.5, 0.5]]), "replicate")
    # (1+2)/2 = 1.5 -> 2, (2+3)/2 = 2.5 -> 2, (3+2)/2 = 2.5 -> 2, (2+65535)/2 = 32768.5 -> 32768
    np.testing.assert_array_equal(out, [[2, 2, 2, 32768, 32768, 0]])
    big = fl.filter2d(img, np.array([[2.0]]))
    np.testing.assert_array_equal(big, [[2, 4, 6, 4, 65535, 0]])
    neg = fl.filter2d(img, np.array([[-1.0]]))
    np.testing.assert_array_equal(neg, np.zeros_like(img))
    nan = fl.filter2d(np.array([[3]], np.uint8), np.array([[np.nan]]))
    np.testing.assert_array_equal(nan, [[0]])


def test_float16_and_output_dtypes():
    img = rng.random((9, 11)).astype(np.float16)
    ref, _ = reference(img, fl.sharpen)
    y = fl.filter2d(img, "sharpen")
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, ref, atol=1e-2)
    u8 = (rng.random((9, 11)) * 255).astype(np.uint8)
    assert fl.filter2d(u8, "sharpen", output_dtype="float").dtype == np.float32
    y64 = fl.filter2d(u8, "box_blur", output_dtype=np.float64)
    assert y64.dtype == np.float64
    ref, mag = reference(u8, fl.box_blur)
    np.testing.assert_allclose(y64, ref, rtol=0, atol=1e-12)
    y16 = fl.filter2d(u8, "box_blur", output_dtype="uint16")
    np.testing.assert_array_equal(y16, np.rint(ref).astype(np.uint16))
    f64 = u8.astype(np.float64)
    assert fl.filter2d(f64, "sharpen", output_dtype="float").dtype == np.float64
    y32 = fl.filter2d(f64, "box_blur", output_dtype=np.float32)  # computed in float64
    np.testing.assert_array_equal(y32, fl.filter2d(f64, "box_blur").astype(np.float32))


def test_reflect_is_the_mirror_without_the_edge():
    # a 1x5 kernel picking the pixel two to the left: out[j] = x[j - 2], read past the border
    row = np.array([[1.0, 2.0, 3.0, 4.0]])
    pick = np.array([[1.0, 0, 0, 0, 0]])
    expected = {"reflect": [3, 2, 1, 2], "replicate": [1, 1, 1, 2], "circular": [3, 4, 1, 2],
                "zeros": [0, 0, 1, 2]}
    for mode, want in expected.items():
        np.testing.assert_array_equal(fl.filter2d(row, pick, mode)[0], want)
        np.testing.assert_array_equal(fl.filter2d(row.T, pick.T, mode)[:, 0], want)


def test_kernels_larger_than_the_image():
    img = rng.random((3, 2, 2))
    k = rng.standard_normal((7, 9))
    for mode in ("zeros", "replicate"):
        assert_close_to_reference(fl.filter2d(img, k, mode), img, k, mode, work_eps(np.float64))


def test_zero_taps_are_skipped():
    img = np.zeros((5, 5))
    img[2, 2] = np.inf
    out = fl.filter2d(img, "sharpen", "zeros")
    assert np.isinf(out[2, 2]) and np.isinf(out[1, 2]) and np.isinf(out[2, 1])
    assert out[1, 1] == 0 and out[0, 0] == 0  # the diagonal taps are zero


# ---- the separable path -----------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(img=filter_images(dtypes=(np.float32, np.float64, np.uint8)),
       k=filter_kernels(rank1=True), mode=st.sampled_from(FILTER_PADDING_MODES))
def test_separable_path_matches_direct(img, k, mode):
    if not filter_padding_fits(mode, img.shape, k.shape):
        return
    sep = fl.filter2d(img, k, mode, separable=True, output_dtype="float")
    direct = fl.filter2d(img, k, mode, separable=False, output_dtype="float")
    eps = work_eps(img.dtype)
    _, mag = reference(img, k, mode)
    assert (np.abs(sep.astype(np.float64) - direct) <= 4 * k.size * eps * mag + 1e-300).all()
    assert_close_to_reference(sep, img, k, mode, eps)


@pytest.mark.parametrize("name", ["gaussian", "box_blur", "gaussian_blur", "sobel_x", "sobel_y",
                                  "identity"])
def test_rank1_kernels_are_detected(name):
    k = fl.get_kernel(name)
    kv, kx = fl._rank1(k, np.float64)
    np.testing.assert_allclose(np.outer(kv, kx), k, rtol=0, atol=1e-15)
    fl.filter2d(IMG, k, separable=True)  # no error
    for sigma in (0.5, 2.0, 5.0):
        assert fl._rank1(fl.gaussian(sigma), np.float64) is not None
    assert fl._rank1(np.ones((31, 31)) / 961, np.float32) is not None


def test_sobel_factors_are_exact():
    kv, kx = fl._rank1(fl.sobel_x, np.float32)
    np.testing.assert_array_equal(np.outer(kv, kx), fl.sobel_x)


@pytest.mark.parametrize("k", [
    np.eye(2), np.eye(3), [[1.0, 2.0], [3.0, 4.0]], fl.sharpen, fl.laplacian, fl.emboss,
    np.outer([1.0, 2.0, 1.0], [1.0, 0.0, -1.0]) + 1e-9 * np.eye(3),  # rank 2, far above rounding
])
def test_rank2_kernels_are_not_taken_as_separable(k):
    k = np.asarray(k, dtype=np.float64)
    assert fl._rank1(k, np.float64) is None
    with pytest.raises(ValueError, match="separable=True"):
        fl.filter2d(IMG, k, separable=True)
    img = rng.random((10, 12))
    assert_close_to_reference(fl.filter2d(img, k), img, k, "reflect", work_eps(np.float64))


def test_tiny_singular_values():
    # rank 2 only by far less than float64 rounding: separable, and as exact as the direct sum
    a, b = np.array([1.0, 2.0, 1.0]), np.array([1.0, 0.0, -1.0])
    k = np.outer(a, b) + 1e-300 * np.eye(3)
    assert fl._rank1(k, np.float64) is not None
    img = rng.random((8, 9))
    sep = fl.filter2d(img, k, separable=True)
    assert_close_to_reference(sep, img, k, "reflect", work_eps(np.float64))
    # 1e-9 relative is below float32 rounding only: separable for a float32 kernel and image,
    # not for float64
    k = np.outer(a, b) * (1 + 1e-9 * np.eye(3)[:, ::-1])
    assert fl._rank1(k, np.float64) is None
    assert fl._rank1(k.astype(np.float32), np.float32) is not None
    # zero and non-finite kernels are never separable
    assert fl._rank1(np.zeros((3, 3)), np.float64) is None
    assert fl._rank1(np.full((3, 3), np.inf), np.float64) is None
    np.testing.assert_array_equal(fl.filter2d(img, np.zeros((3, 3))), 0)


# ---- banks --------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(img=filter_images(), data=st.data(), mode=st.sampled_from(FILTER_PADDING_MODES),
       conv=st.sampled_from(["correlate", "convolve"]))
def test_bank_equals_one_call_per_kernel(img, data, mode, conv):
    f = data.draw(st.integers(1, 4))
    first = data.draw(filter_kernels())
    ks = [first] + [data.draw(filter_kernels()) for _ in range(f - 1)]
    ks = [np.resize(k, first.shape) if k.shape != first.shape else k for k in ks]
    bank = np.stack(ks)
    if not filter_padding_fits(mode, img.shape, first.shape):
        return
    out = fl.filter2d(img, bank, mode, conv)
    assert out.shape == (f,) + img.shape and out.dtype == img.dtype
    for i in range(f):
        np.testing.assert_array_equal(out[i], fl.filter2d(img, bank[i], mode, conv))


def test_bank_of_names_and_channels_last():
    img = rng.random((10, 13, 3)).astype(np.float32)
    names = ["sharpen", "sobel_x", "box_blur"]
    out = fl.filter2d(img, names)
    assert out.shape == (3, 10, 13, 3)
    for i, n in enumerate(names):
        np.testing.assert_array_equal(out[i], fl.filter2d(img, n))
    one = fl.filter2d(img, fl.sharpen[None])
    assert one.shape == (1, 10, 13, 3)


def test_bank_with_fft_and_empty_images():
    img = rng.random((12, 10))
    bank = np.stack([fl.gaussian(1.0), fl.gaussian(1.0) * 2])
    np.testing.assert_allclose(fl.filter2d(img, bank, algorithm="fft"), fl.filter2d(img, bank),
                               atol=1e-12)
    assert fl.filter2d(np.zeros((0, 4)), bank).shape == (2, 0, 4)
    assert fl.filter2d(np.zeros((3, 0, 2), np.uint8), bank).dtype == np.uint8


# ---- threads ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_thread_count_gives_bitwise_the_same(dtype):
    img = (rng.random((97, 301, 3)) * 200).astype(dtype)
    bank = np.stack([fl.gaussian(2.0, 9), rng.standard_normal((9, 9)), np.ones((9, 9)) / 81])
    results = _on_threads_and_paths(
        lambda: fl.filter2d(img, bank, "reflect", output_dtype="float"))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def _on_threads_and_paths(call, isas=(None,)):
    """call()'s results with 1, 2 and 3 threads (even small images split into work items) on
    each SIMD path of ``isas`` (None: the current one)."""
    from fastconv import _kernels
    before, threads = _kernels.get_isa(), fastconv.get_num_threads()
    serial = _testing.set_serial_bytes(0)
    results = []
    try:
        for isa in isas:
            if isa is not None:
                _kernels.set_isa(isa)
            for n in (1, 2, 3):
                fastconv.set_num_threads(n)
                results.append(call())
    finally:
        _kernels.set_isa(before)
        fastconv.set_num_threads(threads)
        _testing.set_serial_bytes(serial)
    return results


# ---- errors and inputs --------------------------------------------------------------------------
IMG = rng.random((7, 8))


@pytest.mark.parametrize("kernel,kw,exc,match", [
    (np.ones(3), {}, ValueError, "kernel"),
    (np.ones((2, 2, 3, 3)), {}, ValueError, "kernel"),
    (np.ones((0, 3, 3)), {}, ValueError, "kernel"),
    (np.ones((2, 3, 3), complex), {}, TypeError, "kernel"),
    ([np.ones((3, 3)), np.ones((5, 5))], {}, ValueError, "one shape"),
    (fl.sharpen, dict(separable=True), ValueError, "separable=True"),
    (fl.sharpen, dict(separable="yes"), TypeError, "separable"),
    (fl.sharpen, dict(output_dtype="int8"), ValueError, "output_dtype"),
    (fl.sharpen, dict(output_dtype="double-ish"), ValueError, "output_dtype"),
    (np.stack([fl.gaussian_blur, fl.sharpen]), dict(separable=True), ValueError, "kernel 1"),
])
def test_bad_arguments_are_named(kernel, kw, exc, match):
    with pytest.raises(exc, match=match):
        fl.filter2d(IMG, kernel, **kw)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint32, bool, np.complex64])
def test_unsupported_image_dtypes(dtype):
    with pytest.raises(TypeError, match="image must be a uint8, uint16"):
        fl.filter2d(np.zeros((4, 4), dtype), "sharpen")


def test_inputs_unchanged_and_read_only_inputs():
    img = (rng.random((9, 10, 3)) * 255).astype(np.uint8)
    bank = rng.standard_normal((2, 3, 3))
    img.setflags(write=False)
    bank.setflags(write=False)
    ic, kc = img.copy(), bank.copy()
    fl.filter2d(img, bank, mode="convolve")
    fl.filter2d(img[::-1, ::2], bank[0], "circular")
    np.testing.assert_array_equal(img, ic)
    np.testing.assert_array_equal(bank, kc)


# ---- other libraries ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,scipy_mode", [("reflect", "mirror"), ("zeros", "constant"),
                                             ("replicate", "nearest"), ("circular", "wrap")])
def test_equals_scipy_ndimage(mode, scipy_mode):
    ndi = pytest.importorskip("scipy.ndimage")
    img = rng.random((23, 31, 3))
    for k in (fl.gaussian(1.5), rng.standard_normal((5, 5)), fl.sobel_y):
        # scipy centres a kernel at k.shape // 2: the same as ours for odd sizes
        want = ndi.correlate(img, k[:, :, None], mode=scipy_mode)
        np.testing.assert_allclose(fl.filter2d(img, k, mode), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "zeros", "replicate"])
def test_equals_opencv(mode):
    cv2 = pytest.importorskip("cv2")
    border = {"reflect": cv2.BORDER_REFLECT_101, "zeros": cv2.BORDER_CONSTANT,
              "replicate": cv2.BORDER_REPLICATE}[mode]
    img = rng.random((40, 37, 3)).astype(np.float32)
    for k in (fl.gaussian(2.0), fl.sharpen, rng.standard_normal((5, 7))):
        want = cv2.filter2D(img, -1, k.astype(np.float32), borderType=border)
        np.testing.assert_allclose(fl.filter2d(img, k, mode), want, rtol=0, atol=2e-5)
    u8 = (img * 255).astype(np.uint8)
    want = cv2.filter2D(u8, cv2.CV_32F, fl.sharpen, borderType=border)
    np.testing.assert_allclose(fl.filter2d(u8, "sharpen", mode, output_dtype="float"), want,
                               atol=1e-4)


def test_every_simd_path_gives_bitwise_the_same():
    from fastconv import _kernels
    img = (rng.random((19, 45, 3)) * 300 - 20).astype(np.float32)
    bank = np.stack([fl.gaussian(1.0), rng.standard_normal((7, 7)), np.full((7, 7), 1 / 49)])
    u8 = np.clip(img, 0, 255).astype(np.uint8)
    before = _kernels.get_isa()
    try:
        outs = []
        for isa in _kernels.ISA_NAMES:
            _kernels.set_isa(isa)
            outs.append((fl.filter2d(img, bank), fl.filter2d(u8, bank),
                         fl.filter2d(img.astype(np.float64), bank, output_dtype=np.uint16)))
    finally:
        _kernels.set_isa(before)
    for o in outs[1:]:
        for a, b in zip(o, outs[0]):
            np.testing.assert_array_equal(a, b)


def _f32_taps(rows, weights):
    """The engine's sum over taps in float32, the first a multiply and the others fused
    multiply-adds in order, emulated in float64: exact for operands in [1, 2) and sums of a few
    hundred (every product and sum then fits float64's 53 bits), so each step rounds once, as
    an FMA does."""
    acc = (np.float64(weights[0]) * rows[0]).astype(np.float32)
    for w, x in zip(weights[1:], rows[1:]):
        acc = (np.float64(w) * x.astype(np.float64) + acc).astype(np.float32)
    return acc


@pytest.mark.parametrize("ntaps", [1, 2, 3, 5, 6, 9, 15, 16, 17, 25])
def test_taps_are_summed_in_their_documented_order(ntaps):
    """Direct sums of 1 to 25 taps (each tap count runs a body of its own up to 16) and
    separable ones with a zero in the vertical factor or without: bitwise the order the engine
    documents, on every SIMD path (float32 rounding after every step makes the order show)."""
    from fastconv import _kernels
    r = np.random.default_rng(ntaps)
    img = (1 + r.random((13, 75))).astype(np.float32)
    kh, kw = 5, 5
    k = np.zeros(kh * kw)
    k[:ntaps] = 1 + r.random(ntaps)
    k = k.reshape(kh, kw).astype(np.float32).astype(np.float64)
    xp = np.pad(img, ((2, 2), (2, 2)), mode="edge")
    taps = [(i, u) for i in range(kh) for u in range(kw) if k[i, u] != 0]
    want_direct = _f32_taps([xp[i:i + 13, u:u + 75] for i, u in taps],
                            [np.float32(k[i, u]) for i, u in taps])
    kv = np.ones(ntaps % 17 + 1)
    kv[1::3] = 0 if ntaps % 2 else 1  # zero taps in the vertical factor for odd counts
    kv[0] = 1.5
    kx = (1 + r.random(3)).astype(np.float32).astype(np.float64)
    ks = np.outer(kv, kx)
    fv, fx = (f.astype(np.float32) for f in fl._rank1(ks, np.float32))
    th, tl = (len(kv) - 1) // 2, 1
    xs = np.pad(img, ((th, len(kv) - 1 - th), (tl, tl)), mode="edge")
    vrows = [i for i in range(len(kv)) if fv[i] != 0]
    v = _f32_taps([xs[i:i + 13] for i in vrows], [fv[i] for i in vrows])
    want_sep = _f32_taps([v[:, u:u + 75] for u in range(3)], list(fx))
    before = _kernels.get_isa()
    try:
        for isa in _kernels.ISA_NAMES:
            _kernels.set_isa(isa)
            np.testing.assert_array_equal(
                fl.filter2d(img, k, "replicate", separable=False), want_direct, err_msg=isa)
            np.testing.assert_array_equal(
                fl.filter2d(img, ks, "replicate", separable=True), want_sep, err_msg=isa)
    finally:
        _kernels.set_isa(before)


@pytest.mark.parametrize("mode", FILTER_PADDING_MODES)
@pytest.mark.parametrize("shape", [(9, 700), (5, 2100, 3), (40, 130, 2)])
def test_image_read_in_place_equals_converted_copy(mode, shape):
    # a float64 image is read in place in the interior of each strip; a float32 one computed in
    # float64 (output_dtype) is converted row by row: the same values, so the same bits
    img32 = (rng.random(shape) * 4 - 2).astype(np.float32)
    img64 = img32.astype(np.float64)
    bank = np.stack([fl.gaussian(1.2, 5), rng.standard_normal((5, 5)),
                     np.outer([1.0, 2, 0, 2, 1], [-1.0, 0, 0, 0, 1])])
    for k in list(bank) + [bank]:
        for view in (img64, img64[::-1, ::-1]):
            src32 = img32 if view is img64 else img32[::-1, ::-1]
            a = fl.filter2d(view, k, mode)
            b = fl.filter2d(src32, k, mode, output_dtype=np.float64)
            np.testing.assert_array_equal(a, b)
        if k.ndim == 2:
            assert_close_to_reference(fl.filter2d(img64, k, mode), img64, k, mode,
                                      work_eps(np.float64))


def test_large_output_written_by_streaming_stores():
    # a 25 MB output (over the engine's 24 MB threshold) with rows not aligned to a vector:
    # the same bits as a small window of the image computed on its own (ordinary stores)
    img = rng.random((1500, 1401, 3), dtype=np.float32)
    for k in (fl.sharpen, fl.gaussian(1.0, 5)):
        big = fl.filter2d(img, k, "reflect")
        lo, hi = 700, 760
        window = fl.filter2d(img[lo - 2:hi + 2], k, "reflect")[2:-2]
        np.testing.assert_array_equal(big[lo:hi, 2:-2], window[:, 2:-2])
        np.testing.assert_array_equal(big[:4], fl.filter2d(img[:40], k, "reflect")[:4])


# ---- output windows (a chunk of a larger image, given with its halo) ---------------------------
@settings(max_examples=150, deadline=None)
@given(img=filter_images(max_side=40), data=st.data(), mode=st.sampled_from(FILTER_PADDING_MODES),
       conv=st.sampled_from(["correlate", "convolve"]))
def test_window_is_that_part_of_the_whole_result(img, data, mode, conv):
    # the engine computes only the window's outputs: bitwise the same elements of the whole
    # image's result, whatever band and strip they fall in
    ks = data.draw(st.one_of(filter_kernels(max_side=7),
                             st.tuples(filter_kernels(), filter_kernels()).map(
                                 lambda p: np.stack([p[0], np.resize(p[1], p[0].shape)]))))
    if not filter_padding_fits(mode, img.shape, ks.shape[-2:]):
        return
    out_dtype = data.draw(st.sampled_from([None, "float", np.uint8, np.float64]))
    h, w = img.shape[:2]
    oy, ox = data.draw(st.integers(0, h)), data.draw(st.integers(0, w))
    oh, ow = data.draw(st.integers(0, h - oy)), data.draw(st.integers(0, w - ox))
    plan = fl._filter_plan(img.dtype, ks, mode, conv, output_dtype=out_dtype)
    got = fl._apply_plan(plan, img, (oy, ox, oh, ow))
    want = fl.filter2d(img, ks, mode, conv, output_dtype=out_dtype)
    lead = (slice(None),) if ks.ndim == 3 else ()
    np.testing.assert_array_equal(got, want[lead + (slice(oy, oy + oh), slice(ox, ox + ow))])
    assert got.dtype == want.dtype


@pytest.mark.parametrize("nthreads", [1, 2])
def test_window_of_a_chunk_with_its_halo_equals_the_whole_image(nthreads):
    # the use the window is for: a chunk of a large image filtered with its neighbours' rows and
    # columns around it (many bands and strips, threads) gives the whole image's outputs
    img = rng.random((700, 2300), dtype=np.float32)
    bank = np.stack([fl.gaussian(1.5, 7), rng.standard_normal((7, 7))])
    whole = fl.filter2d(img, bank, "reflect")
    plan = fl._filter_plan(img.dtype, bank, "reflect")
    threads = fastconv.get_num_threads()
    serial = _testing.set_serial_bytes(0)
    try:
        fastconv.set_num_threads(nthreads)
        part = fl._apply_plan(plan, img[97:603, 1000:2300], (3, 3, 500, 1297))
    finally:
        fastconv.set_num_threads(threads)
        _testing.set_serial_bytes(serial)
    np.testing.assert_array_equal(part, whole[:, 100:600, 1003:2300])


@pytest.mark.parametrize("window", [(-1, 0, 2, 2), (0, 0, 6, 2), (4, 4, 1, 2), (0, 0, -1, 2)])
def test_window_outside_the_image_is_refused(window):
    plan = fl._filter_plan(np.float32, "sharpen")
    with pytest.raises(ValueError, match="window"):
        fl._apply_plan(plan, np.zeros((5, 5), np.float32), window)
    from fastconv import _kernels
    with pytest.raises(ValueError, match="window"):  # the extension checks too: never a bad write
        _kernels.filter_bank(np.zeros((5, 5, 1), np.float32), np.zeros((1, 2, 2, 1), np.float32),
                             np.zeros((1, 3, 3), np.float32), np.zeros((1, 3), np.float32),
                             np.zeros((1, 3), np.float32), np.zeros(1, np.int32), 0, 1, 1,
                             True, 4, 0)


# ---- box filters: exact window sums ------------------------------------------------------------
def _box_reference(img, kh, kw, weight, mode, out_dtype):
    """The window sums of an integer image (exact, in float64) times the weight in float64,
    rounded to the work dtype (one rounding where the sums stay below 2^24), then as filter2d
    converts to ``out_dtype``."""
    x = img.astype(np.float64)
    x3 = x[:, :, None] if x.ndim == 2 else x
    top, left = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x3, ((top, kh - 1 - top), (left, kw - 1 - left), (0, 0)), mode=NUMPY_MODE[mode])
    h, w = x3.shape[:2]
    total = sum(xp[i:i + h, u:u + w] for i in range(kh) for u in range(kw))
    work = np.float64 if np.float64 in (np.dtype(out_dtype).type,) else np.float32
    y = (total * np.float64(work(weight))).astype(work)  # exact products below 2^24
    y = y[..., 0] if img.ndim == 2 else y
    if np.dtype(out_dtype).kind == "u":
        return np.clip(np.rint(y), 0, np.iinfo(out_dtype).max).astype(out_dtype)
    return y.astype(out_dtype)


@settings(max_examples=120, deadline=None)
@given(img=filter_images(dtypes=(np.uint8, np.uint16), max_side=40), data=st.data(),
       mode=st.sampled_from(FILTER_PADDING_MODES))
def test_box_filter_is_the_exact_window_sum_times_the_weight(img, data, mode):
    kh, kw = data.draw(st.integers(1, 15)), data.draw(st.integers(1, 15))
    weight = data.draw(st.sampled_from([1.0 / (kh * kw), 1.0, 0.37, -2.0]))
    out_dtype = data.draw(st.sampled_from([img.dtype.type, np.float32, np.float64]))
    if not filter_padding_fits(mode, img.shape, (kh, kw)):
        return
    k = np.full((kh, kw), weight)
    work = np.float64 if out_dtype == np.float64 else np.float32
    fits_work = img.dtype == np.uint8 or kh * kw * 65535 < 2 ** (np.finfo(work).nmant + 1)
    assert fl._box_mode(img.dtype, k[None].astype(work)) == (
        fl._BOX_WORK if fits_work else fl._BOX_F64)
    got = fl.filter2d(img, k, mode, output_dtype=out_dtype)
    want = _box_reference(img, kh, kw, weight, mode, out_dtype)
    np.testing.assert_array_equal(got, want)


def test_box_filter_gives_the_same_bits_on_every_path_and_thread_count():
    from fastconv import _kernels
    img = rng.integers(0, 65536, (301, 257, 3)).astype(np.uint16)
    k = np.full((9, 13), 1 / 117)
    outs = _on_threads_and_paths(lambda: fl.filter2d(img, k, "reflect", output_dtype="float"),
                                 _kernels.ISA_NAMES)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 9, 17])
def test_box_filter_is_exact_for_every_width_and_channel_count_on_every_path(channels):
    """Widths across the base-4 levels of the row sums (1, 4, 16, 64 pixels and around), channel
    counts below, at and above a vector's lanes (the running sums take channels within a vector,
    the window levels the others), rows shorter than a vector, on every SIMD path."""
    from fastconv import _kernels
    img = rng.integers(0, 256, (11, 70, channels)).astype(np.uint8)
    cases = [(kw, mode, out) for kw in (1, 2, 3, 4, 5, 15, 16, 17, 31, 63, 64, 65)
             for mode, out in (("replicate", np.float32), ("zeros", np.uint8))]
    cases += [(3, "reflect", np.float64)]
    narrow = img[:, :3]  # fewer elements per row than a vector holds
    before = _kernels.get_isa()
    try:
        for isa in _kernels.ISA_NAMES:
            _kernels.set_isa(isa)
            for kw, mode, out in cases:
                k = np.full((3, kw), 1 / (3 * kw))
                np.testing.assert_array_equal(
                    fl.filter2d(img, k, mode, output_dtype=out),
                    _box_reference(img, 3, kw, 1 / (3 * kw), mode, out), err_msg=f"{isa} {kw}")
            np.testing.assert_array_equal(fl.filter2d(narrow, np.full((1, 2), 0.5), "zeros"),
                                          _box_reference(narrow, 1, 2, 0.5, "zeros", np.uint8))
    finally:
        _kernels.set_isa(before)


@pytest.mark.parametrize("dtype, k, work, mode", [
    (np.uint8, np.full((31, 31), 1 / 961), np.float32, fl._BOX_WORK),
    (np.uint16, np.full((15, 17), 0.5), np.float32, fl._BOX_WORK),    # 255 * 65535 < 2**24
    (np.uint16, np.full((17, 17), 0.5), np.float32, fl._BOX_F64),     # 289 * 65535 > 2**24
    (np.uint16, np.full((17, 17), 0.5), np.float64, fl._BOX_WORK),
    (np.float32, np.full((3, 3), 1 / 9), np.float32, fl._BOX_F64),
    (np.float32, np.full((3, 3), 1 / 9), np.float64, fl._BOX_F64),
    (np.float32, np.full((1, 2 ** 21), 1.0), np.float32, fl._BOX_NONE),  # too many to count
    (np.float64, np.full((3, 3), 1 / 9), np.float64, fl._BOX_NONE),
    (np.uint8, np.zeros((3, 3)), np.float32, fl._BOX_NONE),
    (np.uint8, np.full((3, 3), np.inf), np.float32, fl._BOX_NONE),
    (np.uint8, np.eye(3), np.float32, fl._BOX_NONE),
])
def test_box_path_only_where_its_sums_are_exact(dtype, k, work, mode):
    assert fl._box_mode(np.dtype(dtype), k[None].astype(work)) == mode
    assert fl._box_mode(np.dtype(dtype), np.stack([k, k]).astype(work)) == fl._BOX_NONE


def test_a_bank_runs_its_box_kernels_alone():
    """A box kernel gives the same bits in a bank as alone (the engine's box filters take one
    kernel): the bank runs it alone, its other kernels together."""
    assert fl._runs((0, 0, 1, 0, 2, 2, 0)) == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    assert fl._runs((0, 0)) == [(0, 2)] and fl._runs((1,)) == [(0, 1)]
    img = rng.standard_normal((40, 33)).astype(np.float32)
    bank = np.stack([np.full((5, 5), 1 / 25), rng.standard_normal((5, 5)), np.ones((5, 5))])
    out = fl.filter2d(img, bank)
    for i in range(3):
        np.testing.assert_array_equal(out[i], fl.filter2d(img, bank[i]))
    np.testing.assert_array_equal(out[0], _float_box_reference(img, 5, 5, 1 / 25, "reflect",
                                                               np.float32))


def _float_box_reference(img, kh, kw, weight, mode, out_dtype):
    """A box filter of a float32 image as filter2d computes it: each window's exact sum rounded
    to a double (math.fsum; nan for a nan or both infinities, else the infinity it holds), times
    the weight in the work dtype, rounded to a double and then to the work dtype, then converted
    to ``out_dtype``."""
    x3 = img[:, :, None] if img.ndim == 2 else img
    top, left = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x3.astype(np.float64), ((top, kh - 1 - top), (left, kw - 1 - left), (0, 0)),
                mode=NUMPY_MODE[mode])
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))
    flat = windows.reshape(-1, kh * kw)
    sums = np.empty(len(flat))
    for i, v in enumerate(flat):
        if np.isnan(v).any() or (np.inf in v and -np.inf in v):
            sums[i] = np.nan
        elif np.isinf(v).any():
            sums[i] = v[np.isinf(v)][0]
        else:
            sums[i] = math.fsum(v)
    work = np.float64 if out_dtype == np.float64 else np.float32
    with np.errstate(all="ignore"):
        y = (sums.reshape(x3.shape) * np.float64(work(weight))).astype(work)
    y = y[..., 0] if img.ndim == 2 else y
    if np.dtype(out_dtype).kind == "u":
        top_value = np.iinfo(out_dtype).max
        return np.clip(np.nan_to_num(np.rint(y), nan=0.0), 0, top_value).astype(out_dtype)
    with np.errstate(all="ignore"):  # beyond float16's range: inf
        return y.astype(out_dtype)


@pytest.mark.parametrize("out_dtype", [np.uint8, np.uint16])
def test_a_float32_box_filter_rounds_to_float32_before_an_integer_output(out_dtype):
    """198/255 + 57/255 in float32 is a little above 1: the exact mean, 0.5000000075, is 0.5 in
    float32, the work dtype of an integer output, and rounds to 0 (half to even) as the float32
    result does; the double rounded straight to an integer would give 1."""
    img = np.array([[198 / 255, 57 / 255]], np.float32)
    k = np.full((1, 2), 0.5)
    mean = (float(img[0, 0]) + float(img[0, 1])) / 2
    assert mean > 0.5 and np.float32(mean) == 0.5
    as_float = fl.filter2d(img, k, "zeros", output_dtype=np.float32)
    got = fl.filter2d(img, k, "zeros", output_dtype=out_dtype)
    np.testing.assert_array_equal(got, np.rint(as_float).astype(out_dtype))
    assert got[0, 0] == 0


@settings(max_examples=150, deadline=None)
@given(img=float_box_images(), data=st.data(), mode=st.sampled_from(FILTER_PADDING_MODES))
def test_float32_box_filter_is_the_weight_times_the_exact_window_sum(img, data, mode):
    """Whatever the pixels (few binades or many, subnormals, infinities, nans, sums beyond the
    float32 range): the weight times each window's exact sum, as the reference rounds it."""
    kh, kw = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    weight = data.draw(st.sampled_from([1.0 / (kh * kw), 1.0, -0.37]))
    out_dtype = data.draw(st.sampled_from([np.float32, np.float64, np.uint8, np.float16]))
    if not filter_padding_fits(mode, img.shape, (kh, kw)):
        return
    k = np.full((kh, kw), weight)
    with np.errstate(all="ignore"):
        got = fl.filter2d(img, k, mode, output_dtype=out_dtype)
    want = _float_box_reference(img, kh, kw, weight, mode, out_dtype)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["255ths", "multiples", "normal", "two scales", "finer below",
                                  "wide", "nan", "brighter"])
def test_float32_box_filter_is_exact_on_every_path_and_thread_count(kind):
    """Images that take each way of summing (doubles as they are, split in two parts, exact
    integers; t set from the first rows and then from the whole region), in work items of
    several sizes, on every SIMD path: the exact sums, the same bits every time."""
    from fastconv import _kernels
    r = np.random.default_rng(5)
    shape = (150, 90)
    img = {"255ths": r.integers(0, 256, shape) / 255,
           "multiples": r.random(shape, dtype=np.float32),
           "normal": r.standard_normal(shape),
           # whole numbers and pixels ten million times smaller: both count in the result
           "two scales": np.where(r.random(shape) < 0.2, r.standard_normal(shape) * 1e-7,
                                  r.integers(-2, 3, shape)),
           "wide": r.standard_normal(shape) * 10.0 ** r.integers(-30, 31, shape),
           "nan": np.where(r.random(shape) < 1e-3, np.nan, r.standard_normal(shape)),
           # whole numbers, and below row 100 pixels 1e12 times smaller too (finer pixels than
           # in a band's first rows), seen where the whole numbers of a window sum to 0
           "finer below": np.where((np.arange(shape[0]) >= 100)[:, None]
                                   & (r.random(shape) < 0.2), r.standard_normal(shape) * 1e-12,
                                   r.integers(-2, 3, shape)),
           # rows brighter further down than in any band's first rows
           "brighter": r.random(shape) * np.linspace(0.01, 50, shape[0])[:, None]}[kind]
    img = img.astype(np.float32)
    want = _float_box_reference(img, 9, 7, 1 / 63, "reflect", np.float32)
    outs = _on_threads_and_paths(lambda: fl.filter2d(img, np.full((9, 7), 1 / 63)),
                                 _kernels.ISA_NAMES)
    for y in outs:
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_float32_box_filter_of_pixels_of_several_channels(channels):
    """Rows of several channels are summed a pixel at a time, in segments summed side by side
    (rows of 64 pixels or more, each segment's last pixel stored alone): every pixel of every
    segment, at level 1 and at level 2, on every path and thread count."""
    from fastconv import _kernels
    r = np.random.default_rng(channels)
    for w, kind in ((64, "255ths"), (67, "normal"), (130, "255ths"), (131, "normal")):
        shape = (7, w, channels)
        img = (r.integers(0, 256, shape) / 255 if kind == "255ths"
               else r.standard_normal(shape)).astype(np.float32)
        for kh, kw, mode in ((3, 5, "reflect"), (1, 31, "zeros")):
            want = _float_box_reference(img, kh, kw, 1 / (kh * kw), mode, np.float32)
            outs = _on_threads_and_paths(
                lambda: fl.filter2d(img, np.full((kh, kw), 1 / (kh * kw)), mode),
                _kernels.ISA_NAMES)
            for y in outs:
                np.testing.assert_array_equal(y, want, err_msg=f"{w} {kind} {kw}")


@pytest.mark.parametrize("dtype, width", [(np.uint8, 32800), (np.float32, 16400)])
def test_box_filter_padding_from_beyond_its_strip(dtype, width):
    """Rows too long for one strip: circular padding copies pixels from the far end of the row,
    outside the first and last strips (gathered, not taken from the strip's own columns);
    reflect and replicate copy pixels within them."""
    r = np.random.default_rng(3)
    img = r.integers(0, 256, (3, width)).astype(dtype)
    if dtype == np.float32:
        img /= np.float32(255)
    for mode in ("circular", "reflect", "replicate"):
        got = fl.filter2d(img, np.full((3, 3), 1 / 9), mode)
        if dtype == np.float32:
            want = _float_box_reference(img, 3, 3, 1 / 9, mode, np.float32)
        else:
            want = _box_reference(img, 3, 3, 1 / 9, mode, np.uint8)
        np.testing.assert_array_equal(got, want, err_msg=mode)


def test_extension_refuses_a_box_it_cannot_sum_exactly():
    from fastconv import _kernels
    k = np.full((1, 3, 3), 1 / 9, np.float32)
    args = (np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32), np.ones(1, np.int32), 0,
            1, 1, True, 0, 0, True)
    with pytest.raises(ValueError, match="box"):
        _kernels.filter_bank(np.zeros((5, 5, 1), np.float32), np.zeros((1, 5, 5, 1), np.float32),
                             k, *args)
    with pytest.raises(ValueError, match="box"):  # sums in float64 of float64 pixels
        _kernels.filter_bank(np.zeros((5, 5, 1)), np.zeros((1, 5, 5, 1)), k.astype(np.float64),
                             *args[:-1], 2)
    with pytest.raises(ValueError, match="box must be"):
        _kernels.filter_bank(np.zeros((5, 5, 1), np.uint8), np.zeros((1, 5, 5, 1), np.float32),
                             k, *args[:-1], 3)
    with pytest.raises(ValueError, match="box"):
        _kernels.filter_bank(np.zeros((5, 5, 1), np.uint8), np.zeros((2, 5, 5, 1), np.float32),
                             np.concatenate([k, k]), np.zeros((2, 3), np.float32),
                             np.zeros((2, 3), np.float32), np.ones(2, np.int32), 0, 1, 1, True,
                             0, 0, True)
