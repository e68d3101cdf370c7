"""adaptive_avg_pool2d / adaptive_max_pool2d and their backward passes: held to fastconv.reference
(Hypothesis properties) on every SIMD path of this CPU and several thread counts, the tie / NaN /
-inf rules, the global average's documented summation order, every argument error, thread-count
and SIMD-path determinism and, when torch is importable, agreement with torch's CPU kernels
(bitwise, except the global average's summation order)."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _testing, reference
from conv_helpers import (SUPPORTED_ISAS, TESTS_DIR, assert_close, assert_same_bits,
                          assert_unchanged, child_env, f64, f64abs, snapshot, using_isa)
from conv_helpers import num_threads as threads
from strategies import adaptive_pool_cases

THREADS = st.sampled_from([1, 2, 3])


def _bins(size, out):
    """torch's bins along one axis, written out here: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-(i + 1) * size // out)) for i in range(out)]


def _bin_counts(size, out):
    """The largest bin along one axis, and the most bins that hold one element."""
    bins = _bins(size, out)
    return (max(b - a for a, b in bins),
            max(sum(a <= k < b for a, b in bins) for k in range(size)))


def check_avg(out, x):
    """adaptive_avg_pool2d's ``out`` against the float64 reference: a sum of at most one bin's
    elements and two divisions, within the rounding bound of conv_helpers.assert_close."""
    (h, w), (oh, ow) = x.shape[-2:], out.shape[-2:]
    area = _bin_counts(h, oh)[0] * _bin_counts(w, ow)[0]
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in the kernels
        want = reference.adaptive_avg_pool2d(f64(x), (oh, ow))
    finite = np.where(np.isfinite(x), x, 0)
    scale = np.abs(reference.adaptive_avg_pool2d(f64abs(finite), (oh, ow)))
    assert_close(out, want, scale, area + 2, x.dtype, "adaptive_avg_pool2d", nonfinite=True)


def check_avg_backward(gi, g, shape):
    """adaptive_avg_pool2d_backward's ``gi``: each element a sum of g / bin area over the bins
    that hold it, two divisions each."""
    (h, w), (oh, ow) = shape[-2:], g.shape[-2:]
    terms = _bin_counts(h, oh)[1] * _bin_counts(w, ow)[1]
    want = reference.adaptive_avg_pool2d_backward(f64(g), shape)
    scale = np.abs(reference.adaptive_avg_pool2d_backward(f64abs(g), shape))
    assert_close(gi, want, scale, terms + 2, g.dtype, "adaptive_avg_pool2d_backward",
                 nonfinite=True)


def run_all(case):
    """Every adaptive pooling call on one case: max (with and without indices), its backward,
    avg and its backward."""
    x, size, g = case["x"], case["output_size"], case["g"]
    out, ind = fastconv.adaptive_max_pool2d(x, size, return_indices=True)
    return [out, ind, fastconv.adaptive_max_pool2d(x, size),
            fastconv.adaptive_max_pool2d_backward(g, ind, x.shape),
            fastconv.adaptive_avg_pool2d(x, size),
            fastconv.adaptive_avg_pool2d_backward(g, x.shape)]


# ------------------------------------------------------------------------ properties vs reference

@pytest.mark.parametrize("name", SUPPORTED_ISAS)
@settings(max_examples=120, deadline=None)
@given(case=adaptive_pool_cases(), nthreads=THREADS)
def test_adaptive_pooling_matches_reference(name, case, nthreads):
    x, size, g = case["x"], case["output_size"], case["g"]
    before = snapshot(x, g)
    with using_isa(name), threads(nthreads):
        out, ind, out_only, gi, avg, gavg = run_all(case)
    assert_unchanged(before, x, g)
    for a in (out, ind, avg):
        assert a.shape == case["out_shape"] and a.flags.c_contiguous
    assert out.dtype == avg.dtype == x.dtype and ind.dtype == np.int64
    for a in (gi, gavg):
        assert a.shape == x.shape and a.dtype == x.dtype and a.flags.c_contiguous
    # max is exact: values, NaNs and indices agree bit for bit, and so does the backward (it
    # adds in output row-major order, as np.add.at does)
    ref_out, ref_ind = reference.adaptive_max_pool2d(x, size, return_indices=True)
    assert_same_bits(out, ref_out, "adaptive_max_pool2d")
    assert_same_bits(ind, ref_ind, "indices")
    assert_same_bits(out_only, out, "adaptive_max_pool2d without indices")
    assert_same_bits(gi, reference.adaptive_max_pool2d_backward(g, ind, x.shape),
                     "adaptive_max_pool2d_backward")
    check_avg(avg, x)
    check_avg_backward(gavg, g, x.shape)


@settings(max_examples=30, deadline=None)
@given(case=adaptive_pool_cases(max_size=40, max_out=45, max_n=2, max_c=4, layout=False))
def test_bitwise_identical_for_any_thread_count_and_simd_path(case):
    """Every output is computed by one work item in a fixed order, the same on every SIMD path:
    1, 2 or 3 threads, any path, same bits (across paths a NaN only has to be a NaN: which of
    two NaN operands a sum passes on is the compiler's choice)."""
    results = []
    for name in SUPPORTED_ISAS:
        for n in (1, 2, 3):
            with using_isa(name), threads(n):
                results.append(run_all(case))
    for i, r in enumerate(results):
        for a, b, c in zip(results[i - i % 3], r, results[0]):
            assert_same_bits(b, a, f"run {i}: thread counts")
            assert_same_bits(b, c, f"run {i}: SIMD paths", any_nan=True)


def test_a_few_large_planes_split_into_row_blocks():
    """Few planes and several threads cut planes into blocks of output rows (forward) or input
    rows (average backward); the results do not change, and match the reference."""
    rng = np.random.default_rng(1)
    for shape, size in [((1, 1, 300, 50), (7, 5)), ((1, 2, 61, 70), (200, 3)),
                        ((1, 1, 97, 128), 1), ((2, 1, 33, 9), (None, 4))]:
        x = rng.standard_normal(shape)
        case = dict(x=x, output_size=size,
                    g=rng.standard_normal(reference.adaptive_avg_pool2d(x, size).shape))
        results = []
        for n in (1, 3):
            with threads(n):
                results.append(run_all(case))
        for what, a, b in zip(("max", "indices", "max only", "max backward", "avg",
                               "avg backward"), *results):
            assert_same_bits(b, a, f"{shape} -> {size}, {what}: 3 threads against 1")
        out, ind = reference.adaptive_max_pool2d(x, size, return_indices=True)
        assert_same_bits(results[0][0], out, "adaptive_max_pool2d")
        assert_same_bits(results[0][1], ind, "indices")
        check_avg(results[0][4], x)
        check_avg_backward(results[0][5], case["g"], x.shape)



CHILD = """
import hashlib, numpy as np, fastconv
from fastconv import _testing
_testing.set_serial_bytes(0)  # split even these small calls across every thread
rng, digest = np.random.default_rng(4), hashlib.sha256()
for dt in (np.float32, np.float64):
    for shape, size in [((2, 16, 7, 7), 1), ((1, 3, 37, 29), (5, 9)), ((3, 4, 9, 8), (13, None))]:
        x = rng.standard_normal(shape).astype(dt)
        out, ind = fastconv.adaptive_max_pool2d(x, size, return_indices=True)
        avg = fastconv.adaptive_avg_pool2d(x, size)
        for r in (out, ind, avg, fastconv.adaptive_max_pool2d_backward(avg, ind, shape),
                  fastconv.adaptive_avg_pool2d_backward(avg, shape)):
            digest.update(r.tobytes())
print(fastconv.get_num_threads(), digest.hexdigest())
"""


def test_same_bits_for_any_omp_num_threads():
    """Fresh interpreters with OMP_NUM_THREADS=1 and 3 compute the same bits."""
    runs = []
    for n in ("1", "3"):
        proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                              env=child_env(OMP_NUM_THREADS=n), timeout=120, cwd=TESTS_DIR)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(proc.stdout.split())
    assert [r[0] for r in runs] == ["1", "3"]
    assert runs[0][1] == runs[1][1]


# ---------------------------------------------------------------------------- the global average

@pytest.mark.parametrize("dtype, lanes", [(np.float32, 16), (np.float64, 8)])
def test_global_average_sums_in_fixed_partial_sums(dtype, lanes):
    """A 1x1 output is the documented reduction: element p = h * W + w into partial sum
    p mod lanes, in order, the partials added by halving, divided by H * W -- on every SIMD path,
    for any layout of the input (channels-last, negative strides) and any thread count."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 5, 7, 7)) * 10 ** rng.uniform(-3, 3, (3, 5, 7, 7))).astype(dtype)
    flat = x.reshape(3, 5, 49)
    want = np.empty((3, 5, 1, 1), dtype)
    for n in range(3):
        for c in range(5):
            part = [np.cumsum(flat[n, c, k::lanes], dtype=dtype)[-1] if k < 49 else dtype(0)
                    for k in range(lanes)]  # cumsum: additions in order
            half = lanes // 2
            while half:
                part = [part[k] + part[k + half] for k in range(half)]
                half //= 2
            want[n, c, 0, 0] = part[0] / dtype(49)
    views = [x, np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
             np.ascontiguousarray(x[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]]
    for name in SUPPORTED_ISAS:
        for view in views:
            for n in (1, 3):
                with using_isa(name), threads(n):
                    for size in (1, (1, 1), (1,), [1, 1]):
                        assert_same_bits(fastconv.adaptive_avg_pool2d(view, size), want,
                                         f"{name}, strides {view.strides}, {n} threads")


def test_global_average_of_a_resnet_head():
    """The shape that ends a ResNet-50 (batch 2): within rounding of the float64 mean, and its
    backward is g / (H * W) everywhere."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2048, 7, 7)).astype(np.float32)
    out = fastconv.adaptive_avg_pool2d(x, (1, 1))
    check_avg(out, x)
    g = rng.standard_normal(out.shape).astype(np.float32)
    gi = fastconv.adaptive_avg_pool2d_backward(g, x.shape)
    assert_same_bits(gi, np.broadcast_to(g / np.float32(49), x.shape).copy(), "global backward")



@pytest.mark.skipif(_testing.mxcsr() is None, reason="no MXCSR (not x86-64)")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_flush_setting_applies(dtype):
    """set_flush_denormal(True) reaches the adaptive kernels' threads: subnormal sums and
    gradients become zero (and stay themselves without it)."""
    t = np.finfo(dtype).tiny / 4  # subnormal
    x = np.full((2, 3, 8, 8), t, dtype)
    for flush in (False, True):
        assert fastconv.set_flush_denormal(flush) or not flush
        try:
            with threads(2):
                results = [fastconv.adaptive_avg_pool2d(x, 1), fastconv.adaptive_avg_pool2d(x, 3),
                           fastconv.adaptive_avg_pool2d_backward(x[:, :, :3, :5], x.shape)]
        finally:
            fastconv.set_flush_denormal(False)
        for r in results:
            assert (r == 0).all() if flush else (r > 0).all()


# --------------------------------------------------------------------- torch's rules, by example

def test_max_ties_nan_and_minus_inf():
    x = np.array([[[[2.0, 5.0], [5.0, 5.0]]]], dtype=np.float32)
    out, ind = fastconv.adaptive_max_pool2d(x, 1, return_indices=True)
    assert out[0, 0, 0, 0] == 5.0 and ind[0, 0, 0, 0] == 1  # the first maximum
    x = np.array([[[[1.0, np.nan, 3.0, np.nan]]]])
    out, ind = fastconv.adaptive_max_pool2d(x, (1, 1), return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and ind[0, 0, 0, 0] == 3  # the last NaN
    x = np.full((1, 1, 3, 3), -np.inf, dtype=np.float32)
    out, ind = fastconv.adaptive_max_pool2d(x, 2, return_indices=True)
    assert (out == -np.inf).all()
    np.testing.assert_array_equal(ind[0, 0], [[0, 1], [3, 4]])  # each bin's first position
    assert np.isnan(fastconv.adaptive_avg_pool2d(np.array([[[1.0, np.nan]]]), 1)).all()


def test_overlapping_bins_accumulate_in_the_backward():
    """W=3 pooled to 2: bins [0, 2) and [1, 3) share column 1; both maxima are there, and the
    average backward gives column 1 both halves."""
    x = np.array([[[[1.0, 3.0, 2.0]]]])
    out, ind = fastconv.adaptive_max_pool2d(x, (1, 2), return_indices=True)
    np.testing.assert_array_equal(out[0, 0], [[3.0, 3.0]])
    np.testing.assert_array_equal(ind[0, 0], [[1, 1]])
    g = np.array([[[[0.25, 0.5]]]])
    np.testing.assert_array_equal(fastconv.adaptive_max_pool2d_backward(g, ind, x.shape)[0, 0],
                                  [[0.0, 0.75, 0.0]])
    np.testing.assert_array_equal(fastconv.adaptive_avg_pool2d_backward(g, x.shape)[0, 0],
                                  [[0.125, 0.375, 0.25]])


def test_output_size_forms_and_sizes():
    x = np.arange(2 * 3 * 5 * 7, dtype=np.float64).reshape(2, 3, 5, 7)
    for size, shape in [(3, (3, 3)), ((3,), (3, 3)), ([2, 4], (2, 4)), ((None, 4), (5, 4)),
                        ((2, None), (2, 7)), ((None, None), (5, 7)), ((None,), (5, 7)),
                        (np.array([2, 3]), (2, 3)), ((np.int64(9), 11), (9, 11))]:
        assert fastconv.adaptive_avg_pool2d(x, size).shape == (2, 3) + shape
        assert fastconv.adaptive_max_pool2d(x, size).shape == (2, 3) + shape
    # the input's own size: the identity, and an index per element
    out, ind = fastconv.adaptive_max_pool2d(x, (None, None), return_indices=True)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(ind, np.broadcast_to(np.arange(35).reshape(5, 7), x.shape))
    np.testing.assert_array_equal(fastconv.adaptive_avg_pool2d(x, (5, 7)), x)


def test_unbatched_and_empty_batches():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)
    out, ind = fastconv.adaptive_max_pool2d(x, (4, 5), return_indices=True)
    o4, i4 = fastconv.adaptive_max_pool2d(x[None], (4, 5), return_indices=True)
    assert_same_bits(out, o4[0], "unbatched adaptive_max_pool2d")
    assert_same_bits(ind, i4[0], "unbatched indices")
    assert_same_bits(fastconv.adaptive_max_pool2d_backward(out, ind, x.shape),
                     fastconv.adaptive_max_pool2d_backward(o4, i4, (1,) + x.shape)[0], "backward")
    avg = fastconv.adaptive_avg_pool2d(x, 2)
    assert_same_bits(avg, fastconv.adaptive_avg_pool2d(x[None], 2)[0], "unbatched average")
    assert_same_bits(fastconv.adaptive_avg_pool2d_backward(avg, x.shape),
                     fastconv.adaptive_avg_pool2d_backward(avg[None], (1,) + x.shape)[0],
                     "unbatched average backward")
    empty = np.zeros((0, 3, 8, 8))
    out, ind = fastconv.adaptive_max_pool2d(empty, 3, return_indices=True)
    assert out.shape == ind.shape == (0, 3, 3, 3)
    assert fastconv.adaptive_max_pool2d_backward(out, ind, empty.shape).shape == empty.shape
    assert fastconv.adaptive_avg_pool2d(empty, 1).shape == (0, 3, 1, 1)
    assert fastconv.adaptive_avg_pool2d_backward(out, empty.shape).shape == empty.shape


# ------------------------------------------------------------------------------------- errors

X = np.zeros((2, 3, 8, 8), dtype=np.float32)
G = np.zeros((2, 3, 4, 4), dtype=np.float32)
IND = np.zeros((2, 3, 4, 4), dtype=np.int64)
avg, amax = fastconv.adaptive_avg_pool2d, fastconv.adaptive_max_pool2d
avg_bwd, max_bwd = fastconv.adaptive_avg_pool2d_backward, fastconv.adaptive_max_pool2d_backward

ERRORS = [
    # inputs
    (lambda: avg(X.astype(np.float16), 2), TypeError, "input must have dtype"),
    (lambda: amax(X.astype(np.int32), 2), TypeError, "input must have dtype"),
    (lambda: avg(X[0, 0], 2), ValueError, "input must be 4-D"),
    (lambda: amax(X[None], 2), ValueError, "input must be 4-D"),
    (lambda: avg(np.zeros((2, 0, 8, 8)), 2), ValueError, "non-zero C, H and W"),
    (lambda: amax(np.zeros((2, 3, 8, 0)), 2), ValueError, "non-zero C, H and W"),
    (lambda: avg(np.zeros((3, 0, 8)), 2), ValueError, "non-zero C, H and W"),
    # output_size
    (lambda: avg(X, 0), ValueError, r"output_size must be >= 1 \(or None"),
    (lambda: amax(X, (2, -1)), ValueError, "output_size must be >= 1"),
    (lambda: avg(X, (0, None)), ValueError, "output_size must be >= 1"),
    (lambda: avg(X, (2, 3, 4)), ValueError, "output_size must be an int or a pair"),
    (lambda: amax(X, ()), ValueError, "output_size must be an int or a pair"),
    (lambda: avg(X, 2.0), TypeError, "output_size must be an int"),
    (lambda: avg(X, (2, 1.5)), TypeError, "output_size must be an int"),
    (lambda: amax(X, (True, 2)), TypeError, "output_size must be an int"),
    (lambda: avg(X, None), TypeError, "output_size must be an int or a pair"),
    (lambda: avg(X, "2"), TypeError, "output_size must be an int"),
    (lambda: amax(X, 2**63), ValueError, "output_size must fit in a 64-bit"),
    (lambda: avg(X, (2**40, 2**40)), ValueError, "the output of shape"),
    # flags
    (lambda: amax(X, 2, return_indices=1), TypeError, "return_indices must be a bool"),
    # avg backward
    (lambda: avg_bwd(G.astype(np.float16), X.shape), TypeError, "grad_output must have dtype"),
    (lambda: avg_bwd(G, X.shape[1:]), ValueError, "grad_output must be 3-D"),
    (lambda: avg_bwd(G[0], X.shape), ValueError, "grad_output must be 4-D"),
    (lambda: avg_bwd(G[:1], X.shape), ValueError, "does not match input_shape"),
    (lambda: avg_bwd(G[:, :2], X.shape), ValueError, "does not match input_shape"),
    (lambda: avg_bwd(G[:, :, :0], X.shape), ValueError, "grad_output must have an output size"),
    (lambda: avg_bwd(G, (2, 3, 0, 8)), ValueError, "input_shape must"),
    (lambda: avg_bwd(G, (2, 3, 8.0, 8)), TypeError, "input_shape must be an int"),
    (lambda: avg_bwd(G, "2, 3, 8, 8"), TypeError, "input_shape must be a tuple"),
    # max backward
    (lambda: max_bwd(G.astype(np.int64), IND, X.shape), TypeError, "grad_output must have dtype"),
    (lambda: max_bwd(G, IND.astype(np.int32), X.shape), TypeError, "indices must have dtype int64"),
    (lambda: max_bwd(G, IND.tolist(), X.shape), TypeError, "indices must be a NumPy int64 array"),
    (lambda: max_bwd(G, IND[:, :, :3], X.shape), ValueError,
     "indices must have the shape of grad_output"),
    (lambda: max_bwd(G[:1], IND[:1], X.shape), ValueError, "does not match input_shape"),
    (lambda: max_bwd(G[:, :, :0], IND[:, :, :0], X.shape), ValueError,
     "grad_output must have an output size"),
    (lambda: max_bwd(G, IND, (2, 3, 8)), ValueError, "grad_output must be 3-D"),
    (lambda: max_bwd(G, IND + 64, X.shape), ValueError,
     r"indices must lie inside their 8x8 input plane \(0 <= index < 64\), found 64"),
    (lambda: max_bwd(G, IND - 1, X.shape), ValueError, "indices must lie inside"),
]


@pytest.mark.parametrize("call, exc, message", ERRORS)
def test_errors_name_the_argument(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


@pytest.mark.parametrize("size", [0, (2, -1), (2, 3, 4), 2.0, (True, 2), None, 2**63])
def test_the_reference_shares_the_rules_of_output_size(size):
    for f in (fastconv.adaptive_avg_pool2d, reference.adaptive_avg_pool2d,
              fastconv.adaptive_max_pool2d, reference.adaptive_max_pool2d):
        with pytest.raises((TypeError, ValueError), match="output_size"):
            f(X, size)


# ---------------------------------------------------------------------------------------- torch

@settings(max_examples=150, deadline=None)
@given(case=adaptive_pool_cases(), nthreads=THREADS)
def test_adaptive_pooling_agrees_with_torch(case, nthreads):
    """Bitwise torch's CPU kernels: max (values, indices, backward), the average backward, and
    the average forward except for a 1x1 output (torch's mean, summed in another order: within
    rounding of it)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, size, g = case["x"], case["output_size"], case["g"]
    if x.size == 0:
        return
    if isinstance(size, (tuple, list)) and len(size) == 1:
        size = (size[0], size[0])  # torch refuses a sequence of one entry; fastconv takes it
    gt = torch.from_numpy(np.array(g))
    xt = torch.from_numpy(np.array(x)).requires_grad_()
    t_out, t_ind = F.adaptive_max_pool2d(xt, size, return_indices=True)
    t_out.backward(gt)
    t_gi, xt.grad = xt.grad, None
    t_avg = F.adaptive_avg_pool2d(xt, size)
    t_avg.backward(gt)
    with threads(nthreads):
        out, ind, _, gi, avg, gavg = run_all(case)
    np.testing.assert_array_equal(out, t_out.detach().numpy(), strict=True)
    np.testing.assert_array_equal(ind, t_ind.numpy(), strict=True)
    assert_same_bits(gi, t_gi.numpy(), "adaptive_max_pool2d_backward against torch")
    assert_same_bits(gavg, xt.grad.numpy(), "adaptive_avg_pool2d_backward against torch")
    if out.shape[-2:] != (1, 1):
        # a window holding NaN and both infinities: which NaN its sum passes on (sign, payload)
        # is the compiler's choice of operand order, in torch as in fastconv
        assert_same_bits(avg, t_avg.detach().numpy(), "adaptive_avg_pool2d against torch",
                         any_nan=True)
    else:
        check_avg(t_avg.detach().numpy(), x)  # torch's own order, same bound
        check_avg(avg, x)
