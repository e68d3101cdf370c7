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


# ---- convolution problems with every hyper-parameter (FFT vs direct, issue 6) ----------------
@st.composite
def conv_problems(draw, max_channels=6, max_size=12, max_kernel=5):
    """A valid conv2d problem: ``dict(x=..., w=..., b=..., kwargs=dict(stride, padding,
    dilation, groups))`` with random shapes, dtype and memory layouts (unbatched sometimes)."""
    dtype = draw(DTYPES)
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, max(1, max_channels // groups)))
    kg = draw(st.integers(1, max(1, max_channels // groups)))
    n = draw(st.integers(1, 3))
    r, s = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    same = draw(st.booleans()) and stride == (1, 1)
    padding = "same" if same else (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    pads = (0, 0) if same else padding
    # the input must hold at least one dilated kernel extent after padding
    lo_h = max(1, dilation[0] * (r - 1) + 1 - 2 * pads[0])
    lo_w = max(1, dilation[1] * (s - 1) + 1 - 2 * pads[1])
    h = draw(st.integers(lo_h, max(lo_h, max_size)))
    w = draw(st.integers(lo_w, max(lo_w, max_size)))
    x = arrays(draw, (n, cg * groups, h, w), dtype)
    if draw(st.booleans()):
        x = x[0]  # unbatched (C, H, W)
    weight = arrays(draw, (kg * groups, cg, r, s), dtype)
    bias = arrays(draw, (kg * groups,), dtype) if draw(st.booleans()) else None
    return dict(x=x, w=weight, b=bias,
                kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups))
