"""Hypothesis strategies shared by every test module (one place, so that all kernels are held to
the reference over the same kinds of inputs)."""
import numpy as np
from hypothesis import strategies as st

DTYPES = st.sampled_from([np.float32, np.float64])


# --------------------------------------------------------------------------------- conv2d cases
# Small shapes, every argument form: the properties run hundreds of examples each, so an example
# must cost well under a millisecond of arithmetic.

def conv_output_size(size, pad_lo, pad_hi, kernel, stride, dilation):
    """torch's output-size formula, written out here independently of fastconv."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(kernel, dilation):
    """(before, after) of torch's padding='same': an odd total puts the extra after."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def int_or_pair(draw, h, w):
    """``(h, w)`` in any form the functions accept, as torch's do: an int (when equal,
    sometimes), a tuple, a list or, when equal, a 1-tuple."""
    if h == w:
        form = draw(st.sampled_from(["int", "tuple", "list", "one"]))
        if form == "int":
            return h
        if form == "one":
            return (h,)
    return draw(st.sampled_from([tuple, list]))((h, w))


def maybe_unbatched(draw, shape, allow=True, chance=5):
    """``(shape, unbatched)``: the 4-D ``shape`` (N, C, H, W), or (one draw in ``chance``) its
    unbatched (C, H, W) form. The one place where the strategies drop the batch dimension."""
    unbatched = allow and draw(st.integers(0, chance - 1)) == 0
    return (tuple(shape[1:]) if unbatched else tuple(shape)), unbatched


def any_layout(draw, a, readonly=True):
    """The values of ``a`` in a layout drawn at random: C order, Fortran order, a strided slice of
    a bigger buffer, negative strides on every axis, a transposed view, all optionally read-only."""
    kind = draw(st.sampled_from(["c", "f", "sliced", "negative", "transposed"]))
    if kind == "f":
        a = np.asfortranarray(a)
    elif kind == "sliced":
        fill = np.nan if np.issubdtype(a.dtype, np.inexact) else 0
        big = np.full(tuple(2 * s + 1 for s in a.shape), fill, dtype=a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        a = view
    elif kind == "negative":
        flip = tuple(slice(None, None, -1) for _ in a.shape)
        a = np.ascontiguousarray(a[flip])[flip]
    elif kind == "transposed" and a.ndim > 1:
        order = draw(st.permutations(range(a.ndim)))
        inverse = np.argsort(order)
        a = np.ascontiguousarray(a.transpose(order)).transpose(inverse)
    if readonly and draw(st.booleans()):
        a.flags.writeable = False
    return a


def random_array(draw, shape, dtype, layout=True, readonly=True):
    """THE array strategy of the tests: a standard-normal array of ``shape`` (values from a drawn
    seed), in a drawn layout (see any_layout) unless ``layout`` is False."""
    seed = draw(st.integers(0, 2**32 - 1))
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return any_layout(draw, a, readonly) if layout else a


class ConvCase:
    """One drawn conv2d call: arrays, keyword arguments and the expected output shape."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __repr__(self):
        arr = lambda a: None if a is None else f"{a.dtype}{a.shape} strides={a.strides}"
        return (f"ConvCase(x={arr(self.x)}, w={arr(self.w)}, b={arr(self.b)}, "
                f"kwargs={self.kwargs}, out_shape={self.out_shape})")


@st.composite
def conv_cases(draw, dtypes=DTYPES, max_n=5, max_channels=3, max_groups=4, max_kernel=5,
               max_stride=3, max_dilation=3, max_extra=6, layout=True, allow_unbatched=True,
               allow_bias=True, min_extra_width=0, min_stride_width=1):
    """A valid conv2d call. N may be 0; groups include depthwise (C == K == groups) and depthwise
    with a multiplier; kernels are non-square; stride, padding and dilation are ints, pairs,
    'valid' or 'same' (including an odd total padding); inputs may be unbatched, non-contiguous
    or read-only. The input size is drawn from the smallest one that gives an output of >= 1,
    plus 0..max_extra (min_extra_width..max_extra for the width); the width's stride is at least
    min_stride_width."""
    dtype = np.dtype(draw(dtypes))
    groups = draw(st.integers(1, max_groups))
    if draw(st.integers(0, 3)) == 0:  # depthwise, sometimes with a channel multiplier
        cg, kg = 1, draw(st.sampled_from([1, 1, 2]))
    else:
        cg, kg = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    c, k = cg * groups, kg * groups
    r, s = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(min_stride_width, max_stride))
    dh, dw = draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation))
    pad_kind = draw(st.sampled_from(["int", "pair", "valid", "same"]))
    if pad_kind == "same":
        sh = sw = 1
        pads = same_padding(r, dh) + same_padding(s, dw)
        padding = "same"
    elif pad_kind == "valid":
        pads = (0, 0, 0, 0)
        padding = "valid"
    else:
        ph = draw(st.integers(0, 3))
        pw = ph if pad_kind == "int" else draw(st.integers(0, 3))
        pads = (ph, ph, pw, pw)
        padding = ph if pad_kind == "int" else draw(st.sampled_from([tuple, list]))((ph, pw))
    h = max(1, dh * (r - 1) + 1 - pads[0] - pads[1]) + draw(st.integers(0, max_extra))
    w = max(1, dw * (s - 1) + 1 - pads[2] - pads[3]) + draw(
        st.integers(min_extra_width, max(min_extra_width, max_extra)))
    oh = conv_output_size(h, pads[0], pads[1], r, sh, dh)
    ow = conv_output_size(w, pads[2], pads[3], s, sw, dw)
    assert oh >= 1 and ow >= 1
    n = draw(st.integers(0, max_n))
    x_shape, unbatched = maybe_unbatched(draw, (n, c, h, w), allow_unbatched)
    out_shape = (k, oh, ow) if unbatched else (n, k, oh, ow)
    x = random_array(draw, x_shape, dtype, layout)
    wt = random_array(draw, (k, cg, r, s), dtype, layout)
    b = random_array(draw, (k,), dtype, layout) if allow_bias and draw(st.booleans()) else None
    kwargs = {"stride": int_or_pair(draw, sh, sw), "padding": padding,
              "dilation": int_or_pair(draw, dh, dw)}
    if groups > 1 or draw(st.booleans()):
        kwargs["groups"] = groups
    return ConvCase(x=x, w=wt, b=b, kwargs=kwargs, out_shape=out_shape, dtype=dtype, groups=groups,
                    pads=pads, stride=(sh, sw), dilation=(dh, dw), unbatched=unbatched)


@st.composite
def conv_backward_cases(draw, **kwargs):
    """A conv_cases() draw plus a grad_output of the output's shape (any layout) and ``needs``."""
    case = draw(conv_cases(**kwargs))
    case.gy = random_array(draw, case.out_shape, case.dtype, kwargs.get("layout", True))
    case.needs = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    return case



@st.composite
def padded_conv_cases(draw, dtypes=DTYPES, max_n=3, max_channels=2, max_groups=3, max_kernel=4,
                      max_stride=3, max_dilation=9, max_pad=12, max_size=6):
    """A valid conv2d call (a ConvCase with a grad_output ``gy`` and ``needs``) whose padding or
    dilation is large against a small input, so that whole kernel rows or columns often read
    only padding for every output position (leading, trailing or all of them): sizes 1..max_size,
    paddings up to max_pad (ints, pairs or 'same', which with an even kernel is asymmetric),
    dilations up to max_dilation, strides, groups and depthwise as in conv_cases."""
    dtype = np.dtype(draw(dtypes))
    groups = draw(st.integers(1, max_groups))
    if draw(st.integers(0, 2)) == 0:  # depthwise, sometimes with a channel multiplier
        cg, kg = 1, draw(st.sampled_from([1, 2]))
    else:
        cg, kg = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    c, k = cg * groups, kg * groups
    r, s = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    dh, dw = draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    if draw(st.integers(0, 2)) == 0:
        sh = sw = 1
        pads = same_padding(r, dh) + same_padding(s, dw)
        padding = "same"
    else:
        ph, pw = draw(st.integers(0, max_pad)), draw(st.integers(0, max_pad))
        pads = (ph, ph, pw, pw)
        padding = (ph, pw)
    h = max(1, dh * (r - 1) + 1 - pads[0] - pads[1]) + draw(st.integers(0, max_size - 1))
    w = max(1, dw * (s - 1) + 1 - pads[2] - pads[3]) + draw(st.integers(0, max_size - 1))
    oh = conv_output_size(h, pads[0], pads[1], r, sh, dh)
    ow = conv_output_size(w, pads[2], pads[3], s, sw, dw)
    n = draw(st.integers(1, max_n))
    out_shape = (n, k, oh, ow)
    x = random_array(draw, (n, c, h, w), dtype, layout=False)
    wt = random_array(draw, (k, cg, r, s), dtype, layout=False)
    b = random_array(draw, (k,), dtype, layout=False) if draw(st.booleans()) else None
    kwargs = {"stride": (sh, sw), "padding": padding, "dilation": (dh, dw), "groups": groups}
    return ConvCase(x=x, w=wt, b=b, kwargs=kwargs, out_shape=out_shape, dtype=dtype,
                    groups=groups, pads=pads, stride=(sh, sw), dilation=(dh, dw),
                    unbatched=False, gy=random_array(draw, out_shape, dtype, layout=False),
                    needs=(True, True, True))


# ---- transposed convolution cases ------------------------------------------------------------
def transpose_output_size(size, pad, kernel, stride, dilation, output_padding):
    """torch's conv_transpose2d output-size formula, written out independently of fastconv."""
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1


@st.composite
def conv_transpose_cases(draw, dtypes=DTYPES, max_n=3, max_channels=3, max_groups=3,
                         max_kernel=4, max_stride=3, max_dilation=3, max_pad=3, max_extra=4,
                         layout=True, allow_unbatched=True, backward=False):
    """A valid conv_transpose2d call (a ConvCase whose ``w`` is ``(C_in, C_out // groups, kH,
    kW)``): N may be 0; groups include depthwise; strides, dilations, paddings and output
    paddings (below the stride or the dilation, so sometimes at or above the stride) in every
    form (int, tuple, list, 1-tuple); inputs unbatched, non-contiguous or read-only. The input
    size is the smallest one with an output of >= 1, plus 0..max_extra. With ``backward``, a
    grad_output of the output's shape and ``needs`` too."""
    dtype = np.dtype(draw(dtypes))
    groups = draw(st.integers(1, max_groups))
    if draw(st.integers(0, 3)) == 0:  # depthwise, sometimes with a channel multiplier
        cg_in, cg_out = 1, draw(st.sampled_from([1, 1, 2]))
    else:
        cg_in, cg_out = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    c_in, c_out = cg_in * groups, cg_out * groups
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    dilation = (draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation)))
    pad = (draw(st.integers(0, max_pad)), draw(st.integers(0, max_pad)))
    out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    sizes = []
    for p, k, s, d, op in zip(pad, kernel, stride, dilation, out_pad):
        low = 1
        while transpose_output_size(low, p, k, s, d, op) < 1:
            low += 1
        sizes.append(low + draw(st.integers(0, max_extra)))
    out_hw = tuple(transpose_output_size(*a) for a in zip(sizes, pad, kernel, stride, dilation,
                                                           out_pad))
    n = draw(st.integers(0, max_n))
    x_shape, unbatched = maybe_unbatched(draw, (n, c_in) + tuple(sizes), allow_unbatched)
    out_shape = ((c_out,) if unbatched else (n, c_out)) + out_hw
    x = random_array(draw, x_shape, dtype, layout)
    w = random_array(draw, (c_in, cg_out) + kernel, dtype, layout)
    b = random_array(draw, (c_out,), dtype, layout) if draw(st.booleans()) else None
    kwargs = {"stride": int_or_pair(draw, *stride), "padding": int_or_pair(draw, *pad),
              "output_padding": int_or_pair(draw, *out_pad),
              "dilation": int_or_pair(draw, *dilation)}
    if groups > 1 or draw(st.booleans()):
        kwargs["groups"] = groups
    case = ConvCase(x=x, w=w, b=b, kwargs=kwargs, out_shape=out_shape, dtype=dtype,
                    groups=groups, unbatched=unbatched, gy=None, needs=(True, True, True))
    if backward:
        case.gy = random_array(draw, out_shape, dtype, layout)
        case.needs = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    return case


# ---- convolution problems with every hyper-parameter (FFT vs direct) --------------------------
def padding_and_size(draw, r, s, stride, dilation, max_size):
    """A padding (a pair of 0 to 3, or 'same' at stride 1) and an input size ``(h, w)`` of at most
    ``max_size`` (more where the kernel needs it): the padded input holds at least one dilated
    kernel extent."""
    same = draw(st.booleans()) and tuple(stride) == (1, 1)
    padding = "same" if same else (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    pads = (0, 0) if same else padding
    lo_h = max(1, dilation[0] * (r - 1) + 1 - 2 * pads[0])
    lo_w = max(1, dilation[1] * (s - 1) + 1 - 2 * pads[1])
    return padding, draw(st.integers(lo_h, max(lo_h, max_size))), \
        draw(st.integers(lo_w, max(lo_w, max_size)))


@st.composite
def conv_problems(draw, max_channels=6, max_size=12, max_kernel=5, readonly=True):
    """A valid conv2d problem: ``dict(x=..., w=..., b=..., kwargs=dict(stride, padding,
    dilation, groups))`` with random shapes, dtype and memory layouts (unbatched sometimes;
    read-only sometimes unless ``readonly`` is False)."""
    dtype = draw(DTYPES)
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, max(1, max_channels // groups)))
    kg = draw(st.integers(1, max(1, max_channels // groups)))
    n = draw(st.integers(1, 3))
    r, s = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding, h, w = padding_and_size(draw, r, s, stride, dilation, max_size)
    x_shape, _ = maybe_unbatched(draw, (n, cg * groups, h, w), chance=2)
    x = random_array(draw, x_shape, dtype, readonly=readonly)
    weight = random_array(draw, (kg * groups, cg, r, s), dtype, readonly=readonly)
    bias = random_array(draw, (kg * groups,), dtype, readonly=readonly) \
        if draw(st.booleans()) else None
    return dict(x=x, w=weight, b=bias,
                kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


VALUE_KINDS = st.sampled_from(["normal", "huge", "special"])


def _path_problem(draw, dtype, n, cg, kg, groups, r, s, stride, dilation, max_size, values):
    """The conv2d problem of small_plane_conv_problems and depthwise_conv_problems from its
    shapes: padding and input size drawn (padding_and_size), arrays in drawn layouts with
    ``values`` of a drawn kind, a bias sometimes, an activation and a grad_output."""
    padding, h, w = padding_and_size(draw, r, s, stride, dilation, max_size)
    same = padding == "same"
    pads = (0, 0) if same else padding
    shapes = [(n, cg * groups, h, w), (kg * groups, cg, r, s)]
    if draw(st.booleans()):
        shapes.append((kg * groups,))
    arrays = [random_array(draw, shape, dtype, layout=False) for shape in shapes]
    kind = draw(values)
    if kind != "normal":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        for a in arrays:
            if kind == "huge":
                a *= a.dtype.type(np.sqrt(np.finfo(a.dtype).max) / 2)
            else:
                u = rng.random(a.shape)
                a[u < 0.02] = np.inf
                a[(u >= 0.02) & (u < 0.04)] = -np.inf
                a[(u >= 0.04) & (u < 0.05)] = np.nan
    x, weight, *rest = [any_layout(draw, a) for a in arrays]
    bias = rest[0] if rest else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    activation = draw(st.sampled_from([None, "relu", "relu6", "leaky_relu"]))
    oh = conv_output_size(h, *(same_padding(r, dilation[0]) if same else (pads[0],) * 2), r,
                          stride[0], dilation[0])
    ow = conv_output_size(w, *(same_padding(s, dilation[1]) if same else (pads[1],) * 2), s,
                          stride[1], dilation[1])
    gy = random_array(draw, (n, kg * groups, oh, ow), dtype)
    return dict(x=x, w=weight, b=bias, gy=gy, kwargs=kwargs, activation=activation, values=kind)


@st.composite
def small_plane_conv_problems(draw, values=VALUE_KINDS):
    """A conv2d problem shaped like the late layers of a CNN, which the engine may run with
    channels in the vector lanes (src/conv_cv_tmpl.h): small output planes (up to 10 x 10
    outputs), 16 to 128 output channels per group and sometimes 64 input channels, every stride,
    dilation and padding form. As
    :func:`conv_problems`, plus ``activation`` and ``gy`` (a grad_output), and ``values``: the
    kind of numbers in every array, 'normal' (standard normal), 'huge' (products near the
    largest float: a sum overflows or not by its order) or 'special' (a few +-inf and NaN)."""
    dtype = draw(DTYPES)
    groups = draw(st.integers(1, 2))
    # many input channels sometimes: grad_input's lanes are the input channels
    wide = draw(st.integers(0, 3)) == 0
    cg = 64 if wide else draw(st.integers(1, 12))
    kg = draw(st.sampled_from([16, 24, 32, 48, 64, 80, 96, 128]))
    n = draw(st.integers(1, 2 if wide else 4))
    # a wide one mostly 3x3: grad_input takes the path with padding within the kernel's reach
    r, s = (3, 3) if wide and draw(st.integers(0, 3)) else \
        (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return _path_problem(draw, dtype, n, cg, kg, groups, r, s, stride, dilation, 10, values)


@st.composite
def depthwise_conv_problems(draw, values=VALUE_KINDS):
    """A depthwise conv2d problem (one input and one output channel per group, src/
    conv_dwd_tmpl.h): 1 to 40 channels, planes up to 24 x 24 (many register blocks of pixels
    and a partial last one), kernels up to 5 x 5 and sometimes 9 x 9 (81 taps: two sum
    blocks), strides 1 to 3 (grad_input's stride phases, some without taps), every dilation
    and padding form. The fields of :func:`small_plane_conv_problems`."""
    dtype = draw(DTYPES)
    channels = draw(st.integers(1, 40))
    n = draw(st.integers(1, 3))
    big = draw(st.integers(0, 7)) == 0
    r, s = (9, 9) if big else (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return _path_problem(draw, dtype, n, 1, 1, channels, r, s, stride, dilation, 24, values)


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
    shape, unbatched = maybe_unbatched(draw, (n, c, h, w))
    kind = draw(st.sampled_from(values))
    x = pool_values(draw, shape, dtype, kind)
    if layout:
        x = any_layout(draw, x)
    oh = pool_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, dw, ceil_mode)
    kwargs = dict(kernel_size=int_or_pair(draw, kh, kw), ceil_mode=ceil_mode)
    if stride is not None:
        kwargs["stride"] = int_or_pair(draw, sh, sw)
    if (ph, pw) != (0, 0) or draw(st.booleans()):
        kwargs["padding"] = int_or_pair(draw, ph, pw)
    if op == "max":
        if (dh, dw) != (1, 1) or draw(st.booleans()):
            kwargs["dilation"] = int_or_pair(draw, dh, dw)
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(
            st.one_of(st.none(), st.integers(-6, 9).filter(lambda v: v != 0)))
    empty = op == "max" and (has_empty_window(h, oh, kh, sh, ph, dh)
                             or has_empty_window(w, ow, kw, sw, pw, dw))
    out_shape = (c, oh, ow) if unbatched else (n, c, oh, ow)
    g = None if empty else random_array(draw, out_shape, dtype, layout)
    return dict(x=x, kwargs=kwargs, g=g, out_shape=out_shape, empty=empty, kind=kind)



# ---------------------------------------------------------------------- adaptive pooling cases
# Small planes pooled to output sizes below, equal to and above the input's (non-divisible ones
# included, so that neighbouring bins overlap), every accepted form of output_size (an int, a
# pair, a 1-sequence, None entries) and the value kinds of pool_values.

def adaptive_output_form(draw, h, w, oh, ow):
    """output_size for an (h, w) input pooled to (oh, ow) in a drawn form: None where the size
    equals the input's (sometimes), an int or a 1-tuple when equal (sometimes), else a pair."""
    eh = None if oh == h and draw(st.booleans()) else oh
    ew = None if ow == w and draw(st.booleans()) else ow
    if eh is not None and eh == ew:
        return int_or_pair(draw, eh, ew)
    return draw(st.sampled_from([tuple, list]))((eh, ew))


@st.composite
def adaptive_pool_cases(draw, dtypes=DTYPES, values=("normal", "ties", "special"), max_size=12,
                        max_out=14, max_n=3, max_c=3, layout=True, allow_unbatched=True):
    """A dict: ``x`` (input), ``output_size`` (for adaptive_avg_pool2d / adaptive_max_pool2d),
    ``out_shape``, ``g`` (a gradient of the output's shape), ``kind`` (of values)."""
    dtype = draw(dtypes)
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    size = lambda n: st.one_of(st.just(1), st.just(n), st.integers(1, max_out))
    oh, ow = draw(size(h)), draw(size(w))
    if draw(st.integers(0, 4)) == 0:
        oh = ow = 1  # the global average / max
    n, c = draw(st.integers(0, max_n)), draw(st.integers(1, max_c))
    shape, unbatched = maybe_unbatched(draw, (n, c, h, w), allow_unbatched)
    kind = draw(st.sampled_from(values))
    x = pool_values(draw, shape, dtype, kind)
    if layout:
        x = any_layout(draw, x)
    out_shape = (c, oh, ow) if unbatched else (n, c, oh, ow)
    g = random_array(draw, out_shape, dtype, layout)
    return dict(x=x, output_size=adaptive_output_form(draw, h, w, oh, ow), out_shape=out_shape,
                g=g, kind=kind)


# ------------------------------------------------------------------------ fuzz candidates
# Plain seeded generators (no Hypothesis): tests/core/test_fuzz.py rebuilds candidate i in a worker
# process from (seed, i) alone, so a candidate that kills the worker can be named and replayed.

FUZZ_FUNCTIONS = ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
                  "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d",
                  "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
                  "adaptive_max_pool2d_backward")

# geometry values: mostly small, then the int64 edges, then out of range / wrong types
_SMALL_INTS = (0, 1, 1, 1, 2, 2, 3, 5)
_BIG_INTS = (2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, -1, -2**63, -2**63 - 1)
_ODD_VALUES = (None, 2.0, True, "1", "same", "valid", (), (1,), (1, 2, 3), [2, 2], object())


def fuzz_int(rng, small=_SMALL_INTS):
    """A geometry integer: small (70%), an int64 edge or beyond (25%), a NumPy integer (5%)."""
    u = rng.random()
    if u < 0.7:
        return int(rng.choice(small))
    if u < 0.95:
        return _BIG_INTS[rng.integers(len(_BIG_INTS))]
    return np.int64(rng.choice(small))


def fuzz_geometry(rng, small=_SMALL_INTS):
    """stride/padding/... value: an int, a pair (tuple or list), or an odd value (5%)."""
    u = rng.random()
    if u < 0.05:
        return _ODD_VALUES[rng.integers(len(_ODD_VALUES))]
    if u < 0.5:
        return fuzz_int(rng, small)
    pair = (fuzz_int(rng, small), fuzz_int(rng, small))
    return list(pair) if rng.random() < 0.2 else pair


def misaligned_view(a):
    """The values of ``a`` as a field of a packed structured array: strides that are not a
    multiple of the itemsize."""
    packed = np.zeros(a.shape, dtype=np.dtype([("pad", "u1"), ("v", a.dtype)]))
    packed["v"] = a
    return packed["v"]


def fuzz_layout(rng, a, misaligned=True):
    """``a``'s values in a random memory layout (C, Fortran, strided slice, negative strides,
    transposed, misaligned strides) or, for a scalar-valued array, broadcast with zero strides."""
    kinds = ["c", "c", "f", "sliced", "negative", "transposed", "broadcast"]
    if misaligned:
        kinds.append("misaligned")
    kind = kinds[rng.integers(len(kinds))]
    if a.ndim == 0 or a.size == 0:
        return a
    if kind == "f":
        return np.asfortranarray(a)
    if kind == "sliced":
        fill = np.nan if np.issubdtype(a.dtype, np.inexact) else 0
        big = np.full(tuple(2 * s + 1 for s in a.shape), fill, dtype=a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if kind == "negative":
        flip = tuple(slice(None, None, -1) for _ in a.shape)
        return np.ascontiguousarray(a[flip])[flip]
    if kind == "transposed":
        order = rng.permutation(a.ndim)
        return np.ascontiguousarray(a.transpose(order)).transpose(np.argsort(order))
    if kind == "broadcast":
        return np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * a.ndim), a.shape)
    if kind == "misaligned" and a.dtype.kind == "f":
        return misaligned_view(a)
    return a


_DTYPES = ("float32", "float32", "float64", "float64", "float16", "int64", "bool", "complex64",
           "object")


def fuzz_values(rng, shape, dtype):
    """Standard-normal values with, sometimes, NaN, +-inf, -0.0 and huge ones sprinkled in."""
    a = rng.standard_normal(shape)
    if a.size and rng.random() < 0.3:
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, 1e38, -1e300])
        hit = rng.random(shape) < 0.2
        a[hit] = rng.choice(specials, size=int(hit.sum()))
    with np.errstate(all="ignore"):
        return a.astype(dtype)


def fuzz_array(rng, shape, dtype=None, misaligned=True, container=True):
    """An argument that should be an array of ``shape``: usually one (random dtype and layout),
    sometimes a nested list/tuple, a scalar, None, a string or an object."""
    if np.prod(shape, dtype=float) > 2**18:  # keep every candidate to a few MB
        shape = tuple(min(int(d), 3) for d in shape)
    if container and rng.random() < 0.06:
        odd = [None, "abc", object(), 1.5, [], [[1.0]]][rng.integers(6)]
        return odd
    if dtype is None:
        dtype = _DTYPES[rng.integers(len(_DTYPES))] if rng.random() < 0.25 else "float64"
    a = fuzz_values(rng, shape, dtype)
    if container and rng.random() < 0.05:
        return a.tolist() if rng.random() < 0.5 else tuple(a.tolist())
    return fuzz_layout(rng, a, misaligned)


def fuzz_dim(rng, small=(0, 1, 1, 2, 3, 4, 5, 7)):
    """A dimension: small (incl. 0) mostly, sometimes a few hundred."""
    return int(rng.choice(small)) if rng.random() < 0.95 else int(rng.integers(64, 400))


def _out_size(n, k, s, p, d, ceil=False):
    """torch's output size (pool_output_size), or None when the arguments are not plain ints."""
    try:
        n, k, s, p, d = (int(v) for v in (n, k, s, p, d))
        return pool_output_size(n, k, s, p, d, ceil)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _as_pair(v):
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return tuple(v)
    if isinstance(v, (list, tuple)) and len(v) == 1:
        return (v[0], v[0])
    return (v, v)


def _plain(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _grad_shape(rng, batch, channels, sizes):
    """The shape a gradient of the forward output should have (usually), or a wrong one."""
    if rng.random() < 0.1 or len(sizes) != 2 or any(s is None or s < 0 or s > 4096 for s in sizes) or \
            batch * channels * sizes[0] * sizes[1] > 2**18:
        return tuple(int(rng.choice((0, 1, 2, 3))) for _ in range(4))
    return (batch, channels) + tuple(sizes)


def _fuzz_adaptive(rng, name, dtype, n, c, h, w, misaligned):
    """A call of one of the adaptive pooling functions: output_size mostly a pair of small ints
    or None, sometimes any geometry value (int64 edges, odd types)."""
    x_shape = (n, c, h, w) if rng.random() < 0.9 else (c, h, w)
    if rng.random() < 0.6:
        size = tuple(None if rng.random() < 0.2 else fuzz_int(rng, (1, 1, 2, 3, 4, 7, 9))
                     for _ in range(2))
        output_size = size if rng.random() < 0.8 else list(size)
    else:
        output_size = fuzz_geometry(rng, (0, 1, 1, 2, 3, 5))
    if name == "adaptive_avg_pool2d":
        return name, (fuzz_array(rng, x_shape, dtype, misaligned), output_size), {}
    if name == "adaptive_max_pool2d":
        return name, (fuzz_array(rng, x_shape, dtype, misaligned), output_size), dict(
            return_indices=bool(rng.random() < 0.5))
    sizes = [full if s is None else int(s) if _plain(s) else None
             for s, full in zip(_as_pair(output_size), (h, w))]
    g_shape = _grad_shape(rng, n, c, sizes)[4 - len(x_shape):]
    go = fuzz_array(rng, g_shape, dtype, misaligned)
    shape = x_shape if rng.random() < 0.9 else tuple(fuzz_int(rng) for _ in x_shape)
    if name == "adaptive_avg_pool2d_backward":
        return name, (go, shape), {}
    hw = max(h * w, 1)
    ind = rng.integers(0, hw, g_shape) if rng.random() < 0.9 else rng.integers(-2, hw + 2, g_shape)
    ind = fuzz_layout(rng, ind.astype(np.int64 if rng.random() < 0.95 else np.int32), misaligned)
    return name, (go, ind, shape), {}


def fuzz_candidate(seed, index, misaligned=True):
    """Candidate ``index`` of the seeded stream: ``(function name, args, kwargs)`` for one call
    of a fastconv function (the same call is made on fastconv.reference)."""
    rng = np.random.default_rng([seed, index])
    name = FUZZ_FUNCTIONS[index % len(FUZZ_FUNCTIONS)]
    dtype = ("float32", "float64")[rng.integers(2)]
    n, c, h, w = (fuzz_dim(rng) for _ in range(4))
    if rng.random() < 0.1:  # a tall or wide plane: huge strides then still give small outputs
        h, w = ((rng.integers(500, 5000), w) if rng.random() < 0.5 else (h, rng.integers(500, 5000)))
        h, w = int(h), int(w)
    while n * c * h * w > 2**18:  # at most a few MB per array, whichever dimensions grew
        n, c = max(n // 4, 1), max(c // 2, 1)
        h, w = (h, max(w // 2, 1)) if h > w else (max(h // 2, 1), w)
    if name.startswith("adaptive"):
        return _fuzz_adaptive(rng, name, dtype, n, c, h, w, misaligned)
    if name in ("conv2d", "conv2d_backward"):
        groups = fuzz_int(rng, (1, 1, 1, 2, 3)) if rng.random() < 0.95 else fuzz_geometry(rng)
        g = groups if _plain(groups) and 0 < groups <= 8 else 1
        c = g * max(c // g, 1) if rng.random() < 0.9 else c
        k = g * int(rng.integers(1, 4)) if rng.random() < 0.9 else fuzz_dim(rng)
        r, s = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        x_shape = (n, c, h, w) if rng.random() < 0.9 else (c, h, w)
        w_shape = (k, max(c // g, 0), r, s) if rng.random() < 0.9 else \
            tuple(fuzz_dim(rng) for _ in range(int(rng.integers(3, 6))))
        x = fuzz_array(rng, x_shape, dtype, misaligned)
        weight = fuzz_array(rng, w_shape, dtype if rng.random() < 0.95 else None, misaligned)
        kwargs = dict(stride=fuzz_geometry(rng), padding=fuzz_geometry(rng, (0, 0, 1, 2)),
                      dilation=fuzz_geometry(rng), groups=groups)
        if name == "conv2d":
            if rng.random() < 0.3:
                kwargs["bias"] = fuzz_array(rng, (w_shape[0],), dtype, misaligned)
            return name, (x, weight), kwargs
        st_, pd, dl = (_as_pair(kwargs[a]) for a in ("stride", "padding", "dilation"))
        sizes = [_out_size(size, kk, ss, pp, dd) if all(map(_plain, (ss, pp, dd))) else None
                 for size, kk, ss, pp, dd in zip((h, w), w_shape[2:4], st_, pd, dl)]
        go = fuzz_array(rng, _grad_shape(rng, n, w_shape[0], sizes)[4 - len(x_shape):], dtype,
                        misaligned)
        needs = tuple(bool(v) for v in rng.integers(0, 2, 3)) if rng.random() < 0.3 else \
            (True, True, True)
        kwargs["needs"] = needs
        return name, (go, x, weight), kwargs
    kernel = fuzz_geometry(rng, (1, 1, 2, 2, 3, 5))
    stride = None if rng.random() < 0.2 else fuzz_geometry(rng)
    kp = _as_pair(kernel)
    padding = (0 if rng.random() < 0.5 else
               tuple(int(v) // 2 if _plain(v) and rng.random() < 0.8 else fuzz_int(rng)
                     for v in kp))
    ceil_mode = bool(rng.random() < 0.5) if rng.random() < 0.97 else 1
    x_shape = (n, c, h, w) if rng.random() < 0.9 else (c, h, w)
    sp, pp = _as_pair(kernel if stride is None else stride), _as_pair(padding)
    if name.startswith("max"):
        dilation = fuzz_geometry(rng) if rng.random() < 0.5 else 1
        dp = _as_pair(dilation)
        sizes = [_out_size(size, kk, ss, p_, dd, ceil_mode) if all(map(_plain, (kk, ss, p_, dd)))
                 else None for size, kk, ss, p_, dd in zip((h, w), kp, sp, pp, dp)]
        if name == "max_pool2d":
            x = fuzz_array(rng, x_shape, dtype, misaligned)
            return name, (x, kernel), dict(stride=stride, padding=padding, dilation=dilation,
                                           ceil_mode=ceil_mode,
                                           return_indices=bool(rng.random() < 0.5))
        g_shape = _grad_shape(rng, n, c, sizes)[4 - len(x_shape):]
        go = fuzz_array(rng, g_shape, dtype, misaligned)
        hw = max(h * w, 1)
        ind = rng.integers(0, hw, g_shape) if rng.random() < 0.9 else \
            rng.integers(-2, hw + 2, g_shape)
        ind = fuzz_layout(rng, ind.astype(np.int64 if rng.random() < 0.95 else np.int32),
                          misaligned)
        shape = x_shape if rng.random() < 0.9 else tuple(fuzz_int(rng) for _ in x_shape)
        return name, (go, ind, shape), {}
    kwargs = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=bool(rng.random() < 0.5),
                  divisor_override=None if rng.random() < 0.7 else fuzz_int(rng))
    if name == "avg_pool2d":
        return name, (fuzz_array(rng, x_shape, dtype, misaligned), kernel), kwargs
    sizes = [_out_size(size, kk, ss, p_, 1, ceil_mode) if all(map(_plain, (kk, ss, p_)))
             else None for size, kk, ss, p_ in zip((h, w), kp, sp, pp)]
    go = fuzz_array(rng, _grad_shape(rng, n, c, sizes)[4 - len(x_shape):], dtype, misaligned)
    shape = x_shape if rng.random() < 0.9 else tuple(fuzz_int(rng) for _ in x_shape)
    return name, (go, shape, kernel), kwargs


def describe(value):
    """A short, reproducible description of a fuzz argument (arrays by dtype/shape/strides)."""
    if isinstance(value, np.ndarray):
        return f"ndarray({value.dtype}, shape={value.shape}, strides={value.strides})"
    if isinstance(value, (list, tuple)) and len(repr(value)) > 80:
        return f"{type(value).__name__}(len={len(value)})"
    return repr(value)


# ------------------------------------------------------------ conv2d's fused activation epilogue
FUSED_ACTIVATIONS = ("relu", "relu6", "leaky_relu")


@st.composite
def fused_activations(draw):
    """``(activation, negative_slope)`` as conv2d takes them: a name and a slope >= 0 (0, the
    default 0.01, 1, slopes above 1, and any float in between)."""
    name = draw(st.sampled_from(FUSED_ACTIVATIONS))
    slope = draw(st.one_of(st.sampled_from([0.0, 0.01, 1.0, 3.0]),
                           st.floats(0, 10, allow_nan=False, allow_subnormal=False)))
    return name, slope


# ---------------------------------------------------------------------------- filter2d cases
FILTER_IMAGE_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
FILTER_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def filter_padding_fits(mode, shape, kshape):
    """Whether ``mode`` can extend an (H, W, ...) image for a kernel of ``kshape`` (reflect needs
    each pad < the size, circular <= it), from the definition of the modes."""
    for size, k in zip(shape[:2], kshape):
        lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2
        if mode == "reflect" and max(lo, hi) >= size:
            return False
        if mode == "circular" and max(lo, hi) > size:
            return False
    return True


@st.composite
def filter_images(draw, dtypes=FILTER_IMAGE_DTYPES, max_side=12):
    """An (H, W) or (H, W, C) image of a dtype drawn from ``dtypes``, values in the dtype's range
    (float images in [-2, 2]), in a layout drawn by any_layout."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    c = draw(st.sampled_from([None, 1, 3]))
    shape = (h, w) if c is None else (h, w, c)
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if np.issubdtype(dtype, np.integer):
        img = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    else:
        img = (rng.random(shape) * 4 - 2).astype(dtype)
    return any_layout(draw, img)


# The kinds of float32 images box filters sum in different ways: pixels of few binades (k/255),
# whole multiples of a small power of 2 (numpy's float32 random numbers), normal ones, whole
# numbers among pixels ten million times smaller, pixels from 1e-30 to 1e30, normal ones among
# zeros, subnormals, infinities and nans, and pixels near the float32 maximum (whose window sums
# overflow float32) among small ones.
BOX_IMAGE_KINDS = ("255ths", "multiples", "normal", "two scales", "wide", "specials", "huge")


@st.composite
def float_box_images(draw, max_side=14):
    """An (H, W) or (H, W, C) float32 image of a kind drawn from BOX_IMAGE_KINDS."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    c = draw(st.sampled_from([None, 1, 2, 3, 5]))
    shape = (h, w) if c is None else (h, w, c)
    kind = draw(st.sampled_from(BOX_IMAGE_KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "255ths":
        img = rng.integers(0, 256, shape) / np.float32(255)
    elif kind == "multiples":
        img = rng.random(shape, dtype=np.float32) - np.float32(0.5)
    elif kind == "normal":
        img = rng.standard_normal(shape)
    elif kind == "two scales":
        img = np.where(rng.random(shape) < 0.2, rng.standard_normal(shape) * 1e-7,
                       rng.integers(-2, 3, shape))
    elif kind == "wide":
        img = rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 31, shape)
    elif kind == "huge":
        img = rng.choice([-3e38, 3e38, 1.0, 2.5e-38], shape)
    else:
        img = rng.standard_normal(shape)
        specials = np.array([0.0, -0.0, 1e-45, -3e-41, np.inf, -np.inf, np.nan, 3.4e38])
        where = rng.random(shape) < 0.1
        img[where] = rng.choice(specials, int(where.sum()))
    return any_layout(draw, img.astype(np.float32))


@st.composite
def filter_kernels(draw, max_side=5, rank1=None):
    """A (kh, kw) float64 kernel: of rank 1 (an outer product of small integer-valued vectors,
    so exactly rank 1) when ``rank1`` is True, a random one (rank > 1 almost surely) when False,
    either when None; some elements are zero."""
    kh, kw = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if rank1 is None:
        rank1 = draw(st.booleans())
    if rank1:
        a = rng.integers(-3, 4, kh).astype(np.float64)
        b = rng.integers(-3, 4, kw).astype(np.float64) / 4
        a[rng.integers(kh)] = 1.0 + rng.integers(3)  # not all zero
        b[rng.integers(kw)] = -0.5
        return np.outer(a, b)
    k = rng.standard_normal((kh, kw))
    k[rng.random((kh, kw)) < 0.2] = 0.0
    return k


# ------------------------------------------------------------------------------- dask chunkings
@st.composite
def chunkings(draw, shape, max_chunks=4):
    """A Dask chunking of ``shape``: per axis, sizes adding up to the axis, in up to
    ``max_chunks`` chunks of any sizes (ones of 1, uneven last ones: smaller than any halo)."""
    out = []
    for n in shape:
        if n == 0:
            out.append((0,))
            continue
        cuts = draw(st.sets(st.integers(1, n - 1), max_size=max_chunks - 1)) if n > 1 else set()
        edges = [0, *sorted(cuts), n]
        out.append(tuple(b - a for a, b in zip(edges, edges[1:])))
    return tuple(out)
