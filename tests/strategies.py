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
