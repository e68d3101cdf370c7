"""Hypothesis strategies shared by every test module (one place, so that all kernels are held to
the reference over the same kinds of inputs)."""
import numpy as np
from hypothesis import strategies as st

DTYPES = st.sampled_from([np.float32, np.float64])


def tolerance(dtype):
    """(rtol, atol) for comparing a kernel with the reference in ``dtype``."""
    return (2e-4, 2e-4) if np.dtype(dtype) == np.float32 else (1e-10, 1e-10)


def arrays(draw, shape, dtype, layout="any"):
    """A standard-normal array of ``shape``; with layout 'any' sometimes a non-contiguous view
    (transposed copy viewed back, or a strided slice) with the same values."""
    seed = draw(st.integers(0, 2**32 - 1))
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    kind = draw(st.sampled_from(["c", "f", "sliced", "negative"])) if layout == "any" else "c"
    if kind == "f":
        a = np.asfortranarray(a)
    elif kind == "sliced":
        big = np.zeros(tuple(2 * s for s in shape), dtype=dtype)
        big[tuple(slice(None, None, 2) for _ in shape)] = a
        a = big[tuple(slice(None, None, 2) for _ in shape)]
    elif kind == "negative" and a.ndim:
        a = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return a


# -------------------------------------------------------------------------------- pooling cases
# Small planes, every argument form of max_pool2d / avg_pool2d, and value kinds that exercise the
# tie, NaN and -inf rules. The geometry is computed here independently of fastconv.

def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """torch's pooling_output_shape, written out independently of fastconv."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def has_empty_window(size, out, kernel, stride, padding, dilation):
    """True when some window (along one axis) holds only padding (torch gives -inf there)."""
    for o in range(out):
        taps = [o * stride - padding + i * dilation for i in range(kernel)]
        if not any(0 <= t < size for t in taps):
            return True
    return False


def pool_values(draw, shape, dtype, kind):
    """'normal' values, 'ties' (a few small integers), or 'special' (normal with NaN, -inf and
    +inf sprinkled in, sometimes whole regions of -inf)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "ties":
        return rng.integers(-2, 3, size=shape).astype(dtype)
    a = rng.standard_normal(shape).astype(dtype)
    if kind == "special":
        u = rng.random(shape)
        a[u < 0.25] = -np.inf
        a[(u >= 0.25) & (u < 0.3)] = np.nan
        a[(u >= 0.3) & (u < 0.33)] = np.inf
        if a.ndim == 4 and a.shape[2] > 1 and draw(st.booleans()):
            a[:, :, : a.shape[2] // 2] = -np.inf
    return a


def pool_layout(draw, a):
    """The values of ``a`` in a random layout: C order, Fortran order, a strided slice, negative
    strides, the last two axes transposed (column stride != 1), or read-only."""
    kind = draw(st.sampled_from(["c", "f", "sliced", "negative", "transposed", "readonly"]))
    if kind == "f":
        a = np.asfortranarray(a)
    elif kind == "sliced":
        big = np.full(tuple(2 * s + 1 for s in a.shape), 7.0, dtype=a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        a = view
    elif kind == "negative":
        flip = tuple(slice(None, None, -1) for _ in a.shape)
        a = np.ascontiguousarray(a[flip])[flip]
    elif kind == "transposed" and a.ndim >= 2:
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    elif kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
    return a


def int_or_pair_form(draw, h, w):
    """``(h, w)`` as an int (when equal, sometimes), a tuple, a list, or a 1-tuple."""
    if h == w:
        form = draw(st.sampled_from(["int", "tuple", "list", "one"]))
        if form == "int":
            return h
        if form == "one":
            return (h,)
    return draw(st.sampled_from([tuple, list]))((h, w))


@st.composite
def pool_cases(draw, op="max", dtypes=DTYPES, values=("normal", "ties", "special"), max_kernel=4,
               max_stride=4, max_dilation=3, max_extra=9, max_n=3, max_c=3, layout=True):
    """A dict: ``x`` (input), ``kwargs`` (for max_pool2d / avg_pool2d), ``g`` (a gradient of the
    output's shape, or None when the geometry is invalid), ``out_shape``, ``empty`` (max only:
    some window holds only padding, which fastconv rejects)."""
    dtype = draw(dtypes)
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    if draw(st.booleans()):
        kw = kh
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, max_stride), st.integers(1, max_stride))))
    sh, sw = (kh, kw) if stride is None else stride
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    if op == "max":
        dh, dw = draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation))
    else:
        dh = dw = 1
    ceil_mode = draw(st.booleans())
    # an input just large enough for one window, plus a little
    h = max(1, dh * (kh - 1) + 1 - 2 * ph) + draw(st.integers(0, max_extra))
    w = max(1, dw * (kw - 1) + 1 - 2 * pw) + draw(st.integers(0, max_extra))
    n, c = draw(st.integers(0, max_n)), draw(st.integers(1, max_c))
    unbatched = draw(st.integers(0, 4)) == 0
    shape = (c, h, w) if unbatched else (n, c, h, w)
    kind = draw(st.sampled_from(values))
    x = pool_values(draw, shape, dtype, kind)
    if layout:
        x = pool_layout(draw, x)
    oh = pool_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, dw, ceil_mode)
    kwargs = dict(kernel_size=int_or_pair_form(draw, kh, kw), ceil_mode=ceil_mode)
    if stride is not None:
        kwargs["stride"] = int_or_pair_form(draw, sh, sw)
    if (ph, pw) != (0, 0) or draw(st.booleans()):
        kwargs["padding"] = int_or_pair_form(draw, ph, pw)
    if op == "max":
        if (dh, dw) != (1, 1) or draw(st.booleans()):
            kwargs["dilation"] = int_or_pair_form(draw, dh, dw)
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(
            st.one_of(st.none(), st.integers(-6, 9).filter(lambda v: v != 0)))
    empty = op == "max" and (has_empty_window(h, oh, kh, sh, ph, dh)
                             or has_empty_window(w, ow, kw, sw, pw, dw))
    out_shape = (c, oh, ow) if unbatched else (n, c, oh, ow)
    g = None
    if not empty:
        g = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(out_shape)
        g = g.astype(dtype)
        if layout:
            g = pool_layout(draw, g)
    return dict(x=x, kwargs=kwargs, g=g, out_shape=out_shape, empty=empty, kind=kind)
