"""Helpers shared by the conv test modules (not strategies: those live in strategies.py)."""
import contextlib
import os
import subprocess
import sys

import numpy as np

import fastconv
from fastconv import _kernels, _testing, reference


def supported_isas():
    """The SIMD paths this CPU can run ('generic' always; 'avx2', 'avx512' when present)."""
    previous = _kernels.get_isa()
    try:
        return [name for name in _kernels.ISA_NAMES if _kernels.set_isa(name) == name]
    finally:
        _kernels.set_isa(previous)


SUPPORTED_ISAS = supported_isas()


@contextlib.contextmanager
def using_isa(name):
    """Run the kernels on SIMD path ``name``, then restore the path in use before."""
    previous = _kernels.get_isa()
    assert _kernels.set_isa(name) == name
    try:
        yield
    finally:
        _kernels.set_isa(previous)


@contextlib.contextmanager
def num_threads(n):
    """Run the kernels (convolution and pooling) with exactly ``n`` OpenMP threads, then restore:
    the size below which they would run serially is set to 0, so that even small test shapes
    are split across all ``n`` threads."""
    previous = fastconv.get_num_threads()
    fastconv.set_num_threads(n)
    grain = _testing.set_parallel_grain(0)
    serial = _testing.set_serial_bytes(0)
    try:
        yield
    finally:
        fastconv.set_num_threads(previous)
        _testing.set_parallel_grain(grain)
        _testing.set_serial_bytes(serial)


@contextlib.contextmanager
def workspace_cap(nbytes):
    """Per-image buffers above ``nbytes`` take the row-band path while in this block."""
    previous = _testing.set_workspace_cap(nbytes)
    try:
        yield
    finally:
        _testing.set_workspace_cap(previous)


def snapshot(*arrays):
    """Copies (with flags) of the arrays, to check later that a call left them as they were."""
    return [None if a is None else (a.copy(), a.strides, a.flags.writeable) for a in arrays]


def assert_unchanged(before, *arrays):
    for saved, a in zip(before, arrays):
        if a is None:
            continue
        values, strides, writeable = saved
        assert a.strides == strides and a.flags.writeable == writeable
        np.testing.assert_array_equal(a, values, strict=True)


def f64abs(a):
    return None if a is None else np.abs(np.asarray(a, dtype=np.float64))


def assert_close(actual, expected, scale, nterms, dtype, what=""):
    """Both results are sums of ``nterms`` products, each computed in ``dtype`` in some order, so
    each lies within ``nterms * eps * scale`` of the exact value, where ``scale`` is the same sum
    over absolute values (a standard rounding-error bound for any summation order, FMA or not).
    A wrong, missing or extra term is orders of magnitude above this bound for the small sums of
    the tests."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == np.dtype(dtype), (what, actual.dtype)
    eps = np.finfo(dtype).eps
    bound = 2.0 * (nterms + 2) * eps * np.asarray(scale, dtype=np.float64) + np.finfo(dtype).tiny
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = ~(err <= bound)  # also catches NaN
    if bad.any():
        idx = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements differ beyond the rounding bound; "
            f"first at {idx}: actual {actual[idx]!r}, expected {expected[idx]!r}, "
            f"bound {bound[idx]:.3g}, max error {np.nanmax(err):.3g}"
        )


def check_forward(case, out):
    """``out`` (fastconv's result for ``case``) against the reference, within rounding bounds."""
    assert out.shape == case.out_shape and out.dtype == case.dtype
    expected = reference.conv2d(case.x, case.w, case.b, **case.kwargs)
    scale = reference.conv2d(f64abs(case.x), f64abs(case.w), f64abs(case.b), **case.kwargs)
    cg, r, s = case.w.shape[1:]
    assert_close(out, expected, scale, cg * r * s + 1, case.dtype, "conv2d")


def check_backward(case, grads):
    """``grads`` (fastconv's conv2d_backward for ``case``) against the reference."""
    gx, gw, gb = grads
    want = reference.conv2d_backward(case.gy, case.x, case.w, **case.kwargs)
    scale = reference.conv2d_backward(f64abs(case.gy), f64abs(case.x), f64abs(case.w),
                                      **case.kwargs)
    k, cg, r, s = case.w.shape
    pixels = int(np.prod(case.out_shape)) // k if k else 0  # N * OH * OW
    nterms = {"grad_input": (k // case.groups) * r * s, "grad_weight": pixels, "grad_bias": pixels}
    for name, got, exp, sc, need in zip(nterms, grads, want, scale, case.needs):
        if not need:
            assert got is None, f"{name} was not asked for but returned"
            continue
        assert got is not None, f"{name} was asked for but is None"
        assert_close(got, exp, sc, nterms[name], case.dtype, name)
    if gx is not None:
        assert gx.shape == case.x.shape
    if gw is not None:
        assert gw.shape == case.w.shape
    if gb is not None:
        assert gb.shape == (case.w.shape[0],)


def run_isolated(code):
    """Run ``code`` in a fresh interpreter with this same fastconv, so that a crash of the
    kernels fails one test instead of killing the whole session."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastconv.__file__)))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, cwd=os.path.dirname(os.path.abspath(__file__)))
