"""Helpers shared by the test modules (Hypothesis strategies live in strategies.py): the SIMD
paths and thread counts to run on, the batch dimension of 3-D inputs (with_batch /
without_batch), the one tolerance scheme of every kernel-against-reference comparison
(assert_close: a rounding-error bound), bitwise comparison (assert_same_bits), and the conv2d
checks against fastconv.reference."""
import contextlib
import functools
import os
import subprocess
import sys

import numpy as np

import fastconv
from fastconv import _kernels, _testing, reference
from strategies import ConvCase, conv_output_size, same_padding


def _selectable(names, select, current):
    """The paths among ``names`` that ``select`` (set_isa, set_bf16_path) accepts as they are
    (the CPU runs them), with the path in use (``current()``) restored."""
    previous = current()
    try:
        return [name for name in names if select(name) == name]
    finally:
        select(previous)


def supported_isas():
    """The SIMD paths this CPU can run ('generic' always; 'avx2', 'avx512' when present)."""
    return _selectable(_kernels.ISA_NAMES, _kernels.set_isa, _kernels.get_isa)


def supported_bf16_paths():
    """The bfloat16 paths this CPU can run ('portable' always; 'avx512_bf16', 'amx')."""
    return _selectable(_kernels.BF16_PATHS, _kernels.set_bf16_path, _kernels.get_bf16_path)


SUPPORTED_ISAS = supported_isas()

# GCC's spelling of a feature -> the kernel's in /proc/cpuinfo, where they differ
CPUINFO_NAMES = {"avx512bf16": "avx512_bf16", "amx-tile": "amx_tile", "amx-bf16": "amx_bf16"}


def _cpu_paths(names, features):
    """The paths among ``names`` whose every feature (``features(name)``, GCC's spelling) the
    flags of /proc/cpuinfo list (the kernel lists only the features the OS enables),
    independently of fastconv's own detection; None where there is no /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    need = lambda name: {CPUINFO_NAMES.get(f, f) for f in features(name)}  # noqa: E731
    return [name for name in names if need(name) <= set(flags)]


def cpu_isas():
    """The SIMD paths this CPU has by /proc/cpuinfo (see _cpu_paths)."""
    return _cpu_paths(_kernels.ISA_NAMES, _kernels.isa_features)


def cpu_bf16_paths():
    """The bfloat16 paths this CPU has by /proc/cpuinfo (see _cpu_paths)."""
    return _cpu_paths(_kernels.BF16_PATHS, _kernels.bf16_path_features)


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
def testing_setting(setter, value):
    """A fastconv._testing setting (``setter`` returns the previous value) within the block."""
    previous = setter(value)
    try:
        yield
    finally:
        setter(previous)


def workspace_cap(nbytes):
    """Per-image buffers above ``nbytes`` take the row-band path while in this block."""
    return testing_setting(_testing.set_workspace_cap, nbytes)


def conv_path(name, on):
    """One of the convolutions' own paths ('cv': channel-vectorised, 'dwd': depthwise) allowed
    where it applies (True, the default) or never taken (False), within the block."""
    return testing_setting(functools.partial(_testing.set_conv_path, name), on)


def path_plans_taken(name, compute):
    """How many plans of compute() took the convolutions' own path ``name`` (see conv_path)."""
    before = _testing.conv_path_plans(name)
    compute()
    return _testing.conv_path_plans(name) - before


def forward_and_grad_input(p):
    """conv2d's output (with the problem's activation) and grad_input, for a problem of
    strategies.small_plane_conv_problems or depthwise_conv_problems."""
    out = fastconv.conv2d(p["x"], p["w"], p["b"], **p["kwargs"], activation=p["activation"])
    gx, _, _ = fastconv.conv2d_backward(p["gy"], p["x"], p["w"], **p["kwargs"],
                                        needs=(True, False, False))
    return out, gx


def assert_path_gives_gemm_bits(path, p, isas):
    """On each SIMD path of ``isas``, the convolutions' own path ``path`` (see conv_path) gives
    the GEMM's bits for problem ``p`` (forward_and_grad_input; NaNs compared as NaNs)."""
    for isa in isas:
        with using_isa(isa):
            with conv_path(path, False):
                want = forward_and_grad_input(p)
            with conv_path(path, True):
                got = forward_and_grad_input(p)
        for name, g, w in zip(("output", "grad_input"), got, want):
            assert_same_bits(g, w, f"{name} on {isa}", any_nan=True)


def assert_path_holds_to_reference(path, p, bias):
    """The output and grad_input of problem ``p`` on path ``path``, with its bias or none, are
    the reference's within rounding."""
    b = p["b"] if bias else None
    case = conv_case(p["x"], p["w"], b, gy=p["gy"], needs=(True, False, False), **p["kwargs"])
    with conv_path(path, True):
        check_forward(case, fastconv.conv2d(p["x"], p["w"], b, **p["kwargs"]))
        check_backward(case, fastconv.conv2d_backward(p["gy"], p["x"], p["w"], **p["kwargs"],
                                                      needs=(True, False, False)))


def assert_path_same_bits_for_one_and_two_threads(path, p):
    with conv_path(path, True):
        with num_threads(1):
            want = forward_and_grad_input(p)
        with num_threads(2):
            got = forward_and_grad_input(p)
    for name, g, w in zip(("output", "grad_input"), got, want):
        assert_same_bits(g, w, name, any_nan=True)


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


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------- the batch dim
def with_batch(a):
    """``(a4, unbatched)``: a 3-D (C, H, W) array as a batch of one (N, C, H, W), else as is."""
    return (a[None], True) if a.ndim == 3 else (a, False)


def without_batch(a, unbatched):
    """Undo :func:`with_batch` on a result (drop the batch of one)."""
    return a[0] if unbatched else a


# ------------------------------------------------------------------------ one tolerance scheme
# Every comparison of a kernel with the reference uses the classic forward error bound of a sum
# (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eqs. 3.4-3.5): a sum of n
# terms t_i (each a product or a plain value), computed in any order with rounding to nearest,
# fused multiply-adds or not, satisfies
#     |fl(sum t_i) - sum t_i| <= gamma_n * sum |t_i|,   gamma_n = n u / (1 - n u),  u = eps / 2,
# since each term is touched by at most n roundings of relative size <= u (one per product, one
# per addition it goes through; a fused multiply-add has one rounding where the pair had two).
# A final division by a divisor or a bias addition is one more term/rounding: callers count it
# in n. The expected value is the reference on the same inputs cast to float64, which is within
# gamma_n(float64) * sum |t_i| of the exact sum; so the kernel's result, computed in ``dtype``,
# must lie within (gamma_n(dtype) + gamma_n(float64)) * sum |t_i| of it. That bound is linear
# in n times the absolute scale, and tight enough that a missing, extra or wrong term of the
# size of the others fails it (tests/test_helpers.py checks that it rejects such results).
def gamma(n, dtype):
    """Higham's gamma_n = n u / (1 - n u) for unit roundoff u = eps(dtype) / 2."""
    nu = np.asarray(n, dtype=np.float64) * (np.finfo(dtype).eps / 2)
    return nu / (1 - nu)


def rounding_bound(scale, nterms, dtype):
    """The largest |kernel result - float64 reference| that rounding explains for a sum of
    ``nterms`` terms whose magnitudes sum to ``scale`` (elementwise, broadcast), computed in
    ``dtype``; ``nterms`` tiny values on top cover underflow to subnormals."""
    scale = np.asarray(scale, dtype=np.float64)
    return ((gamma(nterms, dtype) + gamma(nterms, np.float64)) * scale
            + nterms * float(np.finfo(dtype).tiny))


def assert_close(actual, expected, scale, nterms, dtype, what="", nonfinite=False):
    """``actual`` (computed in ``dtype``) lies within the rounding bound of ``expected`` (the
    reference on the same inputs, in float64): see :func:`rounding_bound`. NaN never passes,
    unless ``nonfinite``: then where ``expected`` is NaN or +-inf (a NaN or an inf among the
    terms), ``actual`` must be the same (NaN as NaN), and the bound applies elsewhere."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == np.dtype(dtype), (what, actual.dtype)
    expected = np.asarray(expected, dtype=np.float64)
    bound = np.broadcast_to(rounding_bound(scale, nterms, dtype), expected.shape)
    with np.errstate(invalid="ignore"):
        err = np.abs(actual.astype(np.float64) - expected)
    bad = ~(err <= bound)  # also catches NaN
    if nonfinite:
        special = ~np.isfinite(expected)
        same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
        bad = np.where(special, ~same, bad)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements differ beyond the rounding bound; "
            f"first at {idx}: actual {actual[idx]!r}, expected {expected[idx]!r}, "
            f"bound {bound[idx]:.3g}, max error {np.nanmax(err):.3g}"
        )


def assert_same_bits(actual, expected, what="", any_nan=False):
    """``actual`` and ``expected`` are the same array bit for bit: dtype, shape and every byte
    (so -0.0 differs from 0.0, and NaNs must have the same sign and payload). For the tests that
    promise bitwise identical results (thread counts, repeated calls); None matches None.

    ``any_nan=True`` (across SIMD paths, kernel paths, or against torch): a NaN must be a NaN at
    the same place, but which NaN (sign, payload) a sum of two NaNs passes on is the compiler's
    choice of operand order, which IEEE 754 leaves open; every other value must still match bit
    for bit."""
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{what}: {actual!r} against {expected!r}"
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if any_nan and actual.dtype.kind in "fc":
        nan = np.isnan(expected)
        where = np.argwhere(np.isnan(actual) != nan)
        assert not where.size, f"{what}: NaN in one result only, first at {tuple(where[0])}"
        actual, expected = np.where(nan, np.nan, actual), np.where(nan, np.nan, expected)
    if actual.tobytes() != expected.tobytes():
        a = np.ascontiguousarray(actual).reshape(-1).view(np.uint8).reshape(actual.size, -1)
        e = np.ascontiguousarray(expected).reshape(-1).view(np.uint8).reshape(expected.size, -1)
        differ = (a != e).any(axis=1)
        first = np.unravel_index(int(np.argmax(differ)), actual.shape)
        raise AssertionError(
            f"{what}: {int(differ.sum())} of {actual.size} elements differ in their bits; first "
            f"at {tuple(int(i) for i in first)}: {actual[first]!r} against {expected[first]!r}")


# --------------------------------------------------------------------- conv2d vs the reference
def conv_case(x, w, b=None, gy=None, needs=(True, True, True), **kwargs):
    """A ConvCase for hand-made arrays, its output shape from torch's formula (strategies.py),
    independently of fastconv, for :func:`check_forward` / :func:`check_backward`."""
    x4, unbatched = with_batch(x)
    k, _, r, s = w.shape
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    (sh, sw), (dh, dw) = pair(kwargs.get("stride", 1)), pair(kwargs.get("dilation", 1))
    padding = kwargs.get("padding", 0)
    if padding == "same":
        pads = same_padding(r, dh) + same_padding(s, dw)
    elif padding == "valid":
        pads = (0, 0, 0, 0)
    else:
        ph, pw = pair(padding)
        pads = (ph, ph, pw, pw)
    oh = conv_output_size(x4.shape[2], pads[0], pads[1], r, sh, dh)
    ow = conv_output_size(x4.shape[3], pads[2], pads[3], s, sw, dw)
    out_shape = (k, oh, ow) if unbatched else (x4.shape[0], k, oh, ow)
    return ConvCase(x=x, w=w, b=b, gy=gy, needs=needs, kwargs=kwargs, out_shape=out_shape,
                    dtype=x.dtype, groups=kwargs.get("groups", 1), unbatched=unbatched)


def upper_scales(case):
    """Cheap upper bounds of the sums of magnitudes of every result of ``case`` (forward,
    grad_input, grad_weight, grad_bias), broadcastable to the results, for shapes where the
    reference on the magnitudes would double a costly reference call: every term is a product
    of an element of one array and one of the other, so bounding one factor by its maximum
    leaves a sum over the other's elements."""
    x, w = f64abs(case.x), f64abs(case.w)
    k, cg = w.shape[:2]
    kg = k // case.groups
    per_k = w.sum(axis=(1, 2, 3))  # sum |w[k]|
    forward = x.max(initial=0.0) * per_k + (0.0 if case.b is None else f64abs(case.b))
    forward = forward[:, None, None]
    scales = [forward, None, None, None]
    if getattr(case, "gy", None) is not None:
        gy, _ = with_batch(f64abs(case.gy))
        # grad_input of channel g * cg + c: the weights of group g's filters at c
        per_c = w.sum(axis=(2, 3)).reshape(case.groups, kg, cg).sum(axis=1).reshape(-1)
        scales[1] = (gy.max(initial=0.0) * per_c)[:, None, None]
        per_k_gy = gy.sum(axis=(0, 2, 3))  # sum |gy[:, k]|
        scales[2] = (x.max(initial=0.0) * per_k_gy)[:, None, None, None]
        scales[3] = per_k_gy
    return scales


def check_forward(case, out):
    """``out`` (fastconv's result for ``case``) against the reference, within rounding bounds."""
    assert out.shape == case.out_shape and out.dtype == case.dtype
    expected = reference.conv2d(f64(case.x), f64(case.w), f64(case.b), **case.kwargs)
    scale = reference.conv2d(f64abs(case.x), f64abs(case.w), f64abs(case.b), **case.kwargs)
    cg, r, s = case.w.shape[1:]
    assert_close(out, expected, scale, cg * r * s + 1, case.dtype, "conv2d")


def backward_terms(case):
    """The number of terms of each gradient's sums: grad_input K/groups * R * S, grad_weight and
    grad_bias N * OH * OW."""
    k, _, r, s = case.w.shape
    pixels = int(np.prod(case.out_shape)) // k if k else 0  # N * OH * OW
    return {"grad_input": (k // case.groups) * r * s, "grad_weight": pixels, "grad_bias": pixels}


def check_backward(case, grads):
    """``grads`` (fastconv's conv2d_backward for ``case``) against the reference."""
    gx, gw, gb = grads
    want = reference.conv2d_backward(f64(case.gy), f64(case.x), f64(case.w), **case.kwargs)
    scale = reference.conv2d_backward(f64abs(case.gy), f64abs(case.x), f64abs(case.w),
                                      **case.kwargs)
    nterms = backward_terms(case)
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


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def child_env(**extra):
    """The environment of a child interpreter: this same fastconv first, then the test helpers
    (children start in a tests folder, never in the source folder: see conftest.py)."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    path = [package_parent, TESTS_DIR, os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    env.update(extra)
    return env


def run_to_deadline(cmd, timeout, what, **popen):
    """Run ``cmd`` in a process group of its own, so that it and every process it starts are
    killed together at the deadline: ``(returncode, stdout, stderr)``, text (``stdout`` piped;
    ``stderr`` as ``popen`` says). At the deadline the test fails with the output so far."""
    import signal

    import pytest
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True,
                            **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{what} did not finish in {timeout} s; output so far: {out!r} {err!r}")
    return proc.returncode, out, err


def run_isolated(code):
    """Run ``code`` in a fresh interpreter with this same fastconv, so that a crash of the
    kernels fails one test instead of killing the whole session."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), timeout=120, cwd=TESTS_DIR)
