"""Every public function on every array layout NumPy can describe: strides that are not a multiple
of the itemsize (a field of a packed structured array), unaligned data (``np.frombuffer`` at an
odd offset), byte-swapped dtypes, read-only arrays, memmaps, zero strides (``np.broadcast_to``)
and negative strides. The result must be bitwise that of a native C-contiguous copy, and the
input must not change."""
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import fft, nn, reference
from fastconv._core import args

from conv_helpers import assert_same_bits
from strategies import conv_problems

KINDS = ["packed_field", "unaligned", "byteswapped", "readonly", "memmap", "broadcast",
         "negative", "swapped_packed_reversed", "unaligned_transposed"]


def _packed_field(a):
    rec = np.zeros(a.shape, dtype=[("pad", "u1"), ("v", a.dtype)])
    rec["v"] = a
    return rec["v"]


def _unaligned(a):
    buf = bytearray(a.nbytes + 1)
    view = np.frombuffer(buf, dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    view[...] = a
    return view


def _memmap(a):
    # the map holds its own descriptor: closing the file (else a ResourceWarning) keeps it valid
    with tempfile.TemporaryFile() as f:
        np.ascontiguousarray(a).tofile(f)
        f.flush()
        return np.memmap(f, dtype=a.dtype, mode="r", shape=a.shape)


def _reverse(a):
    return a[tuple(slice(None, None, -1) for _ in a.shape)]


def layout(kind, a, axis=0):
    """The values of ``a`` (for 'broadcast': of ``a`` with ``axis`` collapsed to its first
    entry) in the layout ``kind``."""
    if kind == "packed_field":
        return _packed_field(a)
    if kind == "unaligned":
        return _unaligned(a)
    if kind == "byteswapped":
        return a.astype(a.dtype.newbyteorder("S"))
    if kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if kind == "memmap":
        return _memmap(a)
    if kind == "broadcast":
        if a.ndim == 0:
            return a
        first = np.take(a, [0], axis=axis)
        return np.broadcast_to(first, a.shape)
    if kind == "negative":
        return _reverse(np.ascontiguousarray(_reverse(a)))
    if kind == "swapped_packed_reversed":
        swapped = a.astype(a.dtype.newbyteorder("S"))
        return _reverse(_packed_field(_reverse(swapped)))
    if kind == "unaligned_transposed":
        order = tuple(range(a.ndim))[::-1]
        return _unaligned(np.ascontiguousarray(a.transpose(order))).transpose(order)
    raise AssertionError(kind)


def plain(a):
    """A native-endian, C-contiguous, writeable copy of ``a``'s values."""
    return None if a is None else np.array(a, dtype=a.dtype.newbyteorder("="), order="C")


@st.composite
def layouts(draw, a):
    return layout(draw(st.sampled_from(KINDS)), a, axis=draw(st.integers(0, max(a.ndim - 1, 0))))


def assert_bitwise(got, want):
    """conv_helpers.assert_same_bits, through tuples of results; results in native byte order."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_bitwise(g, w)
        return
    assert got is None or got.dtype.isnative
    assert_same_bits(got, want)


def check(func, args, draw):
    """``func`` on ``args`` (arrays put in drawn layouts, each with probability 3/4) gives
    bitwise the result of ``func`` on plain copies, and leaves its arguments unchanged."""
    plain_args = [plain(a) if isinstance(a, np.ndarray) else a for a in args]
    odd = [draw(layouts(a)) if isinstance(a, np.ndarray) and draw(st.integers(0, 3)) else a
           for a in plain_args]
    before = [plain(a) if isinstance(a, np.ndarray) else None for a in odd]
    want = func(*[plain(a) if isinstance(a, np.ndarray) else a for a in odd])
    got = func(*odd)
    assert_bitwise(got, want)
    for a, b in zip(odd, before):
        if b is not None:
            assert_same_bits(plain(a), b, "an argument after the call")


CONV = st.sampled_from(["forward", "backward", "forward_fft", "backward_fft"])


@settings(max_examples=60)
@given(conv_problems(max_channels=4, max_size=8, max_kernel=3), CONV, st.data())
def test_conv_any_layout(p, which, data):
    x, w, b, kw = plain(p["x"]), plain(p["w"]), plain(p["b"]), p["kwargs"]
    y = fastconv.conv2d(x, w, b, **kw)
    go = np.random.default_rng(0).standard_normal(y.shape).astype(y.dtype)
    if which == "forward":
        check(lambda x, w, b: fastconv.conv2d(x, w, b, **kw, algorithm="direct"), (x, w, b),
              data.draw)
    elif which == "forward_fft":
        check(lambda x, w, b: fft.conv2d_fft(x, w, b, **kw), (x, w, b), data.draw)
    elif which == "backward":
        check(lambda go, x, w: fastconv.conv2d_backward(go, x, w, **kw, algorithm="direct"),
              (go, x, w), data.draw)
    else:
        check(lambda go, x, w: fft.conv2d_backward_fft(go, x, w, **kw), (go, x, w), data.draw)


POOL = st.sampled_from(["max", "max_backward", "avg", "avg_backward"])


@settings(max_examples=60)
@given(POOL, st.sampled_from([np.float32, np.float64]), st.integers(1, 2), st.integers(1, 3),
       st.integers(2, 7), st.integers(2, 7), st.integers(1, 3), st.integers(1, 2), st.data())
def test_pool_any_layout(which, dtype, n, c, h, w, k, s, data):
    k = min(k, h, w)
    x = np.random.default_rng(h * w).standard_normal((n, c, h, w)).astype(dtype)
    if which == "max":
        check(lambda x: fastconv.max_pool2d(x, k, s, return_indices=True), (x,), data.draw)
    elif which == "avg":
        check(lambda x: fastconv.avg_pool2d(x, k, s, ceil_mode=True), (x,), data.draw)
    elif which == "max_backward":
        out, idx = fastconv.max_pool2d(x, k, s, return_indices=True)
        go = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        check(lambda go, idx: fastconv.max_pool2d_backward(go, idx, x.shape), (go, idx),
              data.draw)
    else:
        out = fastconv.avg_pool2d(x, k, s)
        go = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        check(lambda go: fastconv.avg_pool2d_backward(go, x.shape, k, s), (go,), data.draw)


@settings(max_examples=30)
@given(st.sampled_from(["conv", "max", "avg"]), st.sampled_from(KINDS), st.sampled_from(KINDS),
       st.sampled_from([np.float32, np.float64]))
def test_nn_layers_any_layout(kind, x_layout, g_layout, dtype):
    layer = {"conv": lambda: nn.Conv2d(2, 3, 3, padding=1, dtype=dtype, rng=0),
             "max": lambda: nn.MaxPool2d(2), "avg": lambda: nn.AvgPool2d(2)}[kind]
    x = np.random.default_rng(2).standard_normal((2, 2, 6, 6)).astype(dtype)
    want_layer, got_layer = layer(), layer()
    xo = layout(x_layout, x)
    want = want_layer.forward(plain(xo))
    assert_bitwise(got_layer.forward(xo), want)
    go = layout(g_layout, np.random.default_rng(3).standard_normal(want.shape).astype(dtype))
    assert_bitwise(got_layer.backward(go), want_layer.backward(plain(go)))
    if kind == "conv":
        assert_bitwise(got_layer.weight.grad, want_layer.weight.grad)


# ---- regressions, one per layout -------------------------------------------------------------
def test_packed_structured_field_conv_and_pool():
    # strides of 9 bytes for float64: the kernels took them as 9 // 8 = 1 element (~1e222 out)
    rng = np.random.default_rng(0)
    x = _packed_field(rng.standard_normal((2, 3, 6, 6)))
    w = rng.standard_normal((4, 3, 3, 3))
    assert x.strides[-1] == 9
    np.testing.assert_allclose(fastconv.conv2d(x, w), reference.conv2d(plain(x), w),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, 2), fastconv.max_pool2d(plain(x), 2))
    np.testing.assert_array_equal(fastconv.avg_pool2d(x, 2), fastconv.avg_pool2d(plain(x), 2))


def test_byteswapped_arrays_are_accepted():
    x = np.arange(2 * 9 * 9, dtype=">f8").reshape(1, 2, 9, 9)
    w = np.ones((3, 2, 3, 3), dtype=">f8")
    y = fastconv.conv2d(x, w)
    assert y.dtype == np.float64 and y.dtype.isnative
    np.testing.assert_array_equal(y, fastconv.conv2d(plain(x), plain(w)))
    out, idx = fastconv.max_pool2d(x.astype(">f4"), 3, return_indices=True)
    gi = fastconv.max_pool2d_backward(out.astype(">f4"), idx.astype(">i8"), x.shape)
    assert gi.dtype == np.float32 and gi.dtype.isnative


def test_byteswapped_mixed_with_native_counts_as_the_same_dtype():
    x, w = np.ones((1, 1, 4, 4), dtype="<f4"), np.ones((1, 1, 2, 2), dtype=">f4")
    np.testing.assert_array_equal(fastconv.conv2d(x, w), np.full((1, 1, 3, 3), 4, np.float32))
    with pytest.raises(TypeError, match="weight"):
        fastconv.conv2d(x, np.ones((1, 1, 2, 2), dtype=">f8"))
    with pytest.raises(TypeError, match="indices"):
        fastconv.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), ">i4"),
                                     (1, 1, 4, 4))


def test_well_behaved_arrays_are_not_copied():
    a = np.zeros((2, 3, 4, 5))
    views = [a, a[:, :, ::2, ::-1], a.transpose(0, 1, 3, 2), np.broadcast_to(a[:1], a.shape),
             np.asfortranarray(a)]
    ro = a.copy()
    ro.flags.writeable = False
    views.append(ro)
    for v in views:
        assert args.as_float_array(v, "input") is v
    idx = np.zeros((2, 2), np.int64)[::-1]
    assert args.as_index_array(idx, "indices") is idx
    for odd in (_packed_field(a), _unaligned(a), a.astype(">f8")):
        fixed = args.as_float_array(odd, "input")
        assert fixed is not odd and fixed.dtype.isnative and fixed.flags.c_contiguous
        assert fixed.flags.aligned


def test_nn_parameter_and_layer_accept_byteswapped_values():
    p = nn.Parameter(np.arange(6, dtype=">f4").reshape(2, 3))
    assert p.dtype == np.float32 and p.dtype.isnative
    np.testing.assert_array_equal(p.data, np.arange(6, dtype=np.float32).reshape(2, 3))
    layer = nn.Conv2d(1, 1, 2, bias=False, dtype=np.float64, rng=0)
    layer.weight = nn.Parameter(np.ones((1, 1, 2, 2), dtype=">f8"))
    out = layer.forward(np.ones((1, 1, 3, 3), dtype=">f8"))
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), 4.0))
