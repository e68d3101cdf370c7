# cython: language_level=3
"""fastconv's compiled core: the OpenMP loops over the work items of the convolution engine
(src/conv_engine.h) and the pooling engine (src/pool_engine.h, src/_pooling.pxi), and the
package-wide state they share (SIMD path, thread count, floating-point mode, workspaces, output
cache).

Only the hot loops live here; arguments arrive validated and normalised by fastconv._conv and
fastconv._pool. The GIL is released for the whole computation of every kernel. Hooks for the
tests only are in src/_testing.pxi (re-exported by fastconv._testing).
"""
import os
import threading

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from cpython.pycapsule cimport PyCapsule_New

from cython cimport floating
from cython.parallel cimport parallel, prange

cdef extern from "fc_kernels.h" nogil:
    ctypedef Py_ssize_t fc_idx
    int fc_get_max_threads()
    void fc_set_num_threads(int n)
    int fc_have_openmp()
    void fc_threads_init()
    int fc_thread_cap
    void fc_register_fork_handler()
    int fc_flush_supported()
    unsigned fc_csr_get()

    int FC_ISA_COUNT
    ctypedef struct fc_isa_info:
        const char *name
        const char *features
    const fc_isa_info fc_isas[]
    int fc_set_isa(int requested)

    long long fc_ws_bytes_total, fc_plan_bytes_peak, fc_ws_bytes_peak
    size_t fc_ws_release_all()
    int64_t fc_ws_set_cap(int64_t nbytes)
    int fc_ws_list(int64_t *held, int max)
    int64_t fc_ws_keep_bytes()


include "_run_control.pxi"


# ------------------------------------------------------------------------------ output buffers
cnp.import_array()

cdef extern from "fc_kernels.h" nogil:
    void *fc_handler_malloc(void *ctx, size_t size)
    void *fc_handler_calloc(void *ctx, size_t nelem, size_t elsize)
    void *fc_handler_realloc(void *ctx, void *ptr, size_t new_size)
    void fc_handler_free(void *ctx, void *ptr, size_t size)
    void fc_cache_set_limit(size_t limit)
    size_t fc_cache_held()
    size_t fc_cache_release()
    void fc_heap_trim()

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        unsigned char version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)

cdef PyDataMem_Handler _handler
_handler.name[:17] = b"fastconv_outputs\0"  # the name and its NUL
_handler.version = 1
_handler.allocator.ctx = NULL
_handler.allocator.malloc = fc_handler_malloc
_handler.allocator.calloc = fc_handler_calloc
_handler.allocator.realloc = fc_handler_realloc
_handler.allocator.free = fc_handler_free
_handler_capsule = PyCapsule_New(&_handler, "mem_handler", NULL)


def empty(shape, dtype, zero=False):
    """A new array for a kernel's output, from the recycling handler of src/fc_alloc.h (large
    blocks freed by earlier outputs are reused instead of page-faulted in again)."""
    old = PyDataMem_SetHandler(_handler_capsule)
    try:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    finally:
        PyDataMem_SetHandler(old)


def set_output_cache_limit(size_t nbytes):
    """Bytes of freed output buffers kept for reuse (default 512 MiB; 0 disables); empties it."""
    fc_cache_set_limit(nbytes)


def output_cache_bytes():
    """Bytes of freed output buffers currently kept for reuse."""
    return fc_cache_held()


# ------------------------------------------------------------------------------ threads and ISA
fc_register_fork_handler()
fc_threads_init()

ISA_NAMES = tuple(fc_isas[i].name.decode() for i in range(FC_ISA_COUNT))
cdef int _isa_level = fc_set_isa(
    ISA_NAMES.index(os.environ["FASTCONV_ISA"])
    if os.environ.get("FASTCONV_ISA") in ISA_NAMES else -1
)


def set_num_threads(int n):
    """Set the thread count (fastconv.set_num_threads validates; capped to max_num_threads())."""
    fc_set_num_threads(n)


cdef extern from *:
    """
    #ifdef _OPENMP
    static int fc_thread_limit(int n) {
        int old = omp_get_max_threads();
        if (n > 0) omp_set_num_threads(n);
        return old;
    }
    #else
    static int fc_thread_limit(int n) { (void)n; return 1; }
    #endif
    """
    int fc_thread_limit(int n) nogil


def thread_limit(int n=0):
    """The calling thread's own cap on the kernels' thread count (OpenMP's ``nthreads-var``, what
    ``threadpoolctl`` sets), as it was; set to ``n`` when ``n >= 1`` (other threads keep theirs)."""
    return fc_thread_limit(n)


def max_num_threads():
    """The most threads a kernel uses (see fc_thread_cap in src/fc_common.h)."""
    return fc_thread_cap


def get_num_threads():
    return fc_get_max_threads()


def openmp_enabled():
    """True when the extension was built with OpenMP."""
    return bool(fc_have_openmp())


def set_isa(name=None):
    """Select the SIMD code path of every kernel: 'generic', 'avx2', 'avx512', or None for the
    best available.

    A request above what the CPU supports is capped; returns the name of the path now in use.
    The tests use it to exercise every path; the FASTCONV_ISA variable sets it at import.
    """
    global _isa_level
    if name is not None and name not in ISA_NAMES:
        raise ValueError(f"isa must be one of {ISA_NAMES} or None, got {name!r}")
    _isa_level = fc_set_isa(-1 if name is None else ISA_NAMES.index(name))
    return ISA_NAMES[_isa_level]


def get_isa():
    """The SIMD code path in use."""
    return ISA_NAMES[_isa_level]


def isa_features(name):
    """The CPU features (GCC / /proc/cpuinfo names) that SIMD path ``name`` needs, all checked:
    its code is compiled for exactly these (FC_ISA_LIST in src/fc_common.h)."""
    return tuple(fc_isas[ISA_NAMES.index(name)].features.decode().split())


# ------------------------------------------------------------------------------ floating-point mode
def set_flush_denormal(bint on):
    """Flush subnormals to zero in every later kernel call (fastconv.set_flush_denormal); returns
    False, leaving it off, where the CPU cannot."""
    global _flush_denormal
    _flush_denormal = on and fc_flush_supported()
    return bool(fc_flush_supported())


def get_flush_denormal():
    return bool(_flush_denormal)


# ------------------------------------------------------------------------------ memory
def workspace_bytes(reset_plan=False):
    """(bytes held in the per-thread workspaces now, bytes of shared plan buffers allocated since
    the last reset). The benchmark resets, runs one call and reports the sum as its workspace."""
    global fc_plan_bytes_peak
    cdef long long plan = fc_plan_bytes_peak
    if reset_plan:
        fc_plan_bytes_peak = 0
    return int(fc_ws_bytes_total), int(plan)


def release_memory():
    """Free every thread's workspaces (convolution and pooling) and empty the output cache.

    Returns the number of bytes freed. A workspace in use by a call running in another thread
    is left to that thread, which frees it at its next work item (its bytes are not counted).
    """
    cdef size_t freed
    with nogil:
        freed = fc_ws_release_all() + fc_cache_release()
        fc_heap_trim()
    return int(freed)


# ------------------------------------------------------------------------------ convolution
cdef void _strides(fc_idx *dst, Py_ssize_t *strides, Py_ssize_t itemsize) noexcept:
    """dst = the 4 strides of an array, in elements."""
    cdef int d
    for d in range(4):
        dst[d] = strides[d] // itemsize


cdef extern from "fc_kernels.h" nogil:
    ctypedef struct fc_geom:
        fc_idx N, C, H, W, K, R, S, G, sh, sw, dh, dw, pt, pl, OH, OW
    int FC_PASS_FORWARD, FC_PASS_GRAD_INPUT, FC_PASS_GRAD_WEIGHT
    int FC_MATH_F32, FC_MATH_BF16_GEMM
    ctypedef struct fc_job:
        int pass_ "pass"
        int f64
        fc_geom geom
        const void *a
        fc_idx a_strides[4]
        const void *b
        const void *bias
        int act
        double slope
        int math
        void *out
    const fc_task fc_conv_task
    void fc_grad_bias_item_f32(const float *dy, fc_idx N, fc_idx K, fc_idx P, fc_idx k, float *gb)
    void fc_grad_bias_item_f64(const double *dy, fc_idx N, fc_idx K, fc_idx P, fc_idx k,
                               double *gb)


cdef void _geometry(fc_geom *g, Py_ssize_t *in_shape, Py_ssize_t *w_shape, object geometry):
    """Fill g from a fastconv._conv geometry; in_shape is (N, C, H, W), w_shape (K, C/G, R, S)."""
    g.N, g.C, g.H, g.W = in_shape[0], in_shape[1], in_shape[2], in_shape[3]
    g.K, g.R, g.S = w_shape[0], w_shape[2], w_shape[3]
    g.G = geometry.groups
    g.sh, g.sw = geometry.stride
    g.dh, g.dw = geometry.dilation
    g.pt, g.pl = geometry.pad_top, geometry.pad_left
    g.OH, g.OW = geometry.out_h, geometry.out_w


# Below this many flops per thread a parallel region costs more than it saves (waking a team
# takes microseconds, much more when the cores are shared); the result is the same either way.
# The tests set it to 0 (_testing_set_parallel_grain) to run small cases on every thread.
cdef double _grain = 2e6


cdef int _conv_threads(const fc_geom *g) noexcept nogil:
    """Threads for a convolution: one per _grain flops of it, at most get_num_threads()."""
    cdef double flops = 2.0 * g.N * g.K * g.OH * g.OW * (g.C // g.G) * g.R * g.S
    cdef int nthreads = fc_get_max_threads()
    if _grain <= 0:
        return nthreads
    cdef double useful = flops / _grain
    return nthreads if useful >= nthreads else (1 if useful < 1 else <int>useful)


cdef int _run_conv(fc_job *job) except -1:
    return _run(job, &fc_conv_task, _conv_threads(&job.geom), "kernel")


def conv2d_forward(const floating[:, :, :, :] x, const floating[:, :, :, ::1] w,
                   const floating[::1] bias, floating[:, :, :, ::1] out, object g,
                   int act=0, double slope=0.0, bint bf16=False):
    """out = activation(conv2d(x, w, bias)); x may have any strides, out is C-contiguous and
    non-empty; act is an FC_ACT_* code (fastconv._core.epilogue), applied in the epilogue; bf16
    (float32 only): the products of x and w rounded to bfloat16 (src/fc_bf16.h)."""
    if bf16 and floating is double:
        raise TypeError("bfloat16 products take float32 arrays")
    cdef fc_job job
    job.pass_ = FC_PASS_FORWARD
    job.f64 = floating is double
    _geometry(&job.geom, x.shape, w.shape, g)
    job.a = &x[0, 0, 0, 0]
    _strides(job.a_strides, x.strides, sizeof(floating))
    job.b = &w[0, 0, 0, 0]
    job.bias = &bias[0] if bias is not None else NULL
    job.act = act
    job.slope = slope
    job.math = FC_MATH_BF16_GEMM if bf16 else FC_MATH_F32
    job.out = &out[0, 0, 0, 0]
    _run_conv(&job)


def conv2d_grad_input(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                      floating[:, :, :, ::1] dx, object g, bint bf16=False):
    """dx = d conv2d / d x applied to dy; dx is C-contiguous and zero-filled on entry; bf16
    (float32 only): the products of dy and w rounded to bfloat16 (src/fc_bf16.h)."""
    if bf16 and floating is double:
        raise TypeError("bfloat16 products take float32 arrays")
    cdef fc_job job
    job.pass_ = FC_PASS_GRAD_INPUT
    job.f64 = floating is double
    _geometry(&job.geom, dx.shape, w.shape, g)
    job.a = &dy[0, 0, 0, 0]
    job.b = &w[0, 0, 0, 0]
    job.bias = NULL
    job.act = 0
    job.math = FC_MATH_BF16_GEMM if bf16 else FC_MATH_F32
    job.out = &dx[0, 0, 0, 0]
    _run_conv(&job)


def conv2d_grad_weight(const floating[:, :, :, ::1] dy, const floating[:, :, :, :] x,
                       floating[:, :, :, ::1] dw, object g):
    """dw = d conv2d / d w applied to dy; x may have any strides."""
    cdef fc_job job
    job.pass_ = FC_PASS_GRAD_WEIGHT
    job.f64 = floating is double
    _geometry(&job.geom, x.shape, dw.shape, g)
    job.a = &x[0, 0, 0, 0]
    _strides(job.a_strides, x.strides, sizeof(floating))
    job.b = &dy[0, 0, 0, 0]
    job.bias = NULL
    job.act = 0
    job.math = FC_MATH_F32
    job.out = &dw[0, 0, 0, 0]
    _run_conv(&job)


def conv2d_grad_bias(const floating[:, :, :, ::1] dy, floating[::1] gb):
    """gb[k] = sum of dy[:, k], in a fixed order."""
    cdef fc_idx k, N = dy.shape[0], K = dy.shape[1], P = dy.shape[2] * dy.shape[3]
    cdef int nthreads = fc_get_max_threads()
    cdef unsigned mode = 0  # each thread's own (firstprivate)
    cdef fc_run run
    fc_run_init(&run, _flush_denormal, 0, NULL)  # a pass over dy: too short to need interrupting
    with nogil, parallel(num_threads=nthreads):
        mode = fc_run_enter(&run)
        for k in prange(K, schedule="static"):
            if floating is float:
                fc_grad_bias_item_f32(&dy[0, 0, 0, 0], N, K, P, k, &gb[0])
            else:
                fc_grad_bias_item_f64(&dy[0, 0, 0, 0], N, K, P, k, &gb[0])
        fc_run_leave(mode)


# Below this many elements the activation's gradient runs on the calling thread alone.
cdef fc_idx _ACT_GRAIN = 1 << 16


def activation_grad(const floating[::1] grad, const floating[::1] out, int act, double slope,
                    floating[::1] result):
    """result = grad times the derivative of the activation act (FC_ACT_*, as conv2d_forward),
    read off that activation's output out: relu 0 where out <= 0 (NaN passes, as torch's
    threshold_backward), relu6 grad where 0 < out < 6, leaky_relu grad where out > 0, else
    grad * slope (slope rounded to the dtype first). One pass, element by element, so the result
    is the same for any thread count."""
    cdef fc_idx i, n = grad.shape[0]
    cdef floating s = <floating>slope
    cdef floating o
    cdef int nthreads = fc_get_max_threads() if n >= _ACT_GRAIN else 1
    cdef unsigned mode = 0  # each thread's own (firstprivate)
    cdef fc_run run
    if n == 0:
        return
    fc_run_init(&run, _flush_denormal, 0, NULL)  # one pass: too short to need interrupting
    with nogil, parallel(num_threads=nthreads):
        mode = fc_run_enter(&run)
        for i in prange(n, schedule="static"):
            o = out[i]
            if act == 1:
                result[i] = 0 if o <= 0 else grad[i]
            elif act == 2:
                result[i] = grad[i] if (o > 0 and o < 6) else 0
            else:
                result[i] = grad[i] if o > 0 else grad[i] * s
        fc_run_leave(mode)


include "_pooling.pxi"
include "_filters.pxi"
include "_bf16.pxi"
include "_testing.pxi"


# ------------------------------------------------------------------------------ FMA peak probe
cdef extern from "fc_kernels.h" nogil:
    int FC_PROBE_CHAINS
    ctypedef struct fc_probe:
        float (*run)(long iters) noexcept nogil
        int lanes
    double fc_probe_flops_per_iter(const fc_probe *probe)
    ctypedef struct fc_kernel_table:
        fc_probe probe
    fc_kernel_table fc_kernels

cdef extern from *:
    """
    #ifdef _OPENMP
    static double fc_wtime(void) { return omp_get_wtime(); }
    #else
    #include <time.h>
    static double fc_wtime(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + 1e-9 * ts.tv_nsec;
    }
    #endif
    """
    double fc_wtime() nogil

# Vector FMAs per thread in one timed run: tens of milliseconds, long against the clock's
# resolution and the team's wake-up.
_PROBE_FMAS = 20_000_000
# A sum the probe's chains never reach: comparing with it keeps the sums, and so the work, alive.
_PROBE_UNREACHED = 12345.678


def fma_peak_gflops(long iters=_PROBE_FMAS // FC_PROBE_CHAINS, int repeats=7):
    """Measured fp32 FMA throughput (GFLOP/s) of all kernel threads together: each thread runs
    independent FMA chains in registers on the current ISA path; best of ``repeats`` runs of
    ``iters`` iterations."""
    cdef int nthreads = fc_get_max_threads(), t, r
    cdef double best = 0, t0, t1
    cdef float sink = 0
    cdef fc_probe probe = fc_kernels.probe
    with nogil:  # wake the team and the cores' vector units before timing (a quarter run)
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            sink += probe.run(iters // 4)
    for r in range(repeats):
        with nogil:
            t0 = fc_wtime()
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                sink += probe.run(iters)
            t1 = fc_wtime()
        best = max(best, nthreads * iters * fc_probe_flops_per_iter(&probe) / (t1 - t0) / 1e9)
    if sink == _PROBE_UNREACHED:
        print(sink)
    return best
