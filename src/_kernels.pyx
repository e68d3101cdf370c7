# cython: language_level=3
"""Compiled convolution kernels: OpenMP loops over the work items of src/conv_tmpl.h.

Only the hot loops live here; arguments arrive validated and normalised by fastconv._conv.
The GIL is released for the whole computation of every function below.
"""
import os
import threading

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from cpython.pycapsule cimport PyCapsule_New

from cython cimport floating
from cython.parallel cimport parallel, prange

cdef extern from "conv_engine.h" nogil:
    ctypedef Py_ssize_t fc_idx
    int fc_get_max_threads()
    void fc_set_num_threads(int n)
    int fc_have_openmp()
    int fc_set_isa(int requested)
    int fc_isa_supported()
    const char *fc_isa_features(int level)
    void fc_threads_init()
    int fc_thread_cap
    void fc_register_fork_handler()
    long long fc_ws_bytes_total, fc_plan_bytes_peak, fc_ws_bytes_peak
    size_t fc_ws_release_all()
    int64_t fc_ws_set_cap(int64_t nbytes)
    int fc_ws_list(int64_t *held, int max)
    int64_t fc_ws_keep_bytes()
    int FC_PASS_FORWARD, FC_PASS_GRAD_INPUT, FC_PASS_GRAD_WEIGHT

    ctypedef struct fc_job:
        int pass_ "pass"
        int f64
        fc_idx geom[16]
        const void *a
        fc_idx a_strides[4]
        const void *b
        const void *bias
        void *out
        fc_idx nitems, nreduce, chunk
    int fc_job_prepare(fc_job *j, int nthreads)
    int fc_job_item(const fc_job *j, fc_idx i)
    int fc_job_reduce_item(const fc_job *j, fc_idx i)
    void fc_job_free(fc_job *j)
    void fc_grad_bias_item_f32(const float *dy, fc_idx N, fc_idx K, fc_idx P, fc_idx k, float *gb)
    void fc_grad_bias_item_f64(const double *dy, fc_idx N, fc_idx K, fc_idx P, fc_idx k,
                               double *gb)


include "_run_control.pxi"

cdef extern from "fc_common.h" nogil:
    int fc_flush_supported()
    unsigned fc_csr_get()


# ------------------------------------------------------------------------------ output buffers
cnp.import_array()

cdef extern from "fc_alloc.h" nogil:
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
_handler.name[:17] = b"fastconv_outputs\0"
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
ISA_NAMES = ("generic", "avx2", "avx512")
cdef int _isa_level = fc_set_isa(
    ISA_NAMES.index(os.environ["FASTCONV_ISA"])
    if os.environ.get("FASTCONV_ISA") in ISA_NAMES else -1
)


fc_threads_init()


def set_num_threads(int n):
    """Set the thread count (fastconv.set_num_threads validates; capped to max_num_threads())."""
    fc_set_num_threads(n)


def max_num_threads():
    """The most threads a kernel uses (see fc_thread_cap in src/fc_common.h)."""
    return fc_thread_cap


def get_num_threads():
    return fc_get_max_threads()


def openmp_enabled():
    """True when the extension was built with OpenMP."""
    return bool(fc_have_openmp())


def set_isa(name=None):
    """Select the SIMD code path: 'generic', 'avx2', 'avx512', or None for the best available.

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
    """The CPU features (GCC / /proc/cpuinfo names) that SIMD path ``name`` needs, all checked."""
    return tuple(fc_isa_features(ISA_NAMES.index(name)).decode().split())


# ------------------------------------------------------------------------------ floating-point mode
cdef bint _flush_denormal = False


def set_flush_denormal(bint on):
    """Flush subnormals to zero in every later kernel call (fastconv.set_flush_denormal); returns
    False, leaving it off, where the CPU cannot."""
    global _flush_denormal
    _flush_denormal = on and fc_flush_supported()
    return bool(fc_flush_supported())


def get_flush_denormal():
    return bool(_flush_denormal)


def _mxcsr():
    """Testing helper: this thread's MXCSR register (None without one)."""
    return int(fc_csr_get()) if fc_flush_supported() else None


def _threads_mxcsr():
    """Testing helper: the MXCSR of each thread of a team of get_num_threads() threads, between
    calls (the OpenMP workers persist from one call to the next)."""
    cdef int n = fc_get_max_threads(), t
    cdef unsigned[::1] csr = np.zeros(n, dtype=np.uintc)
    with nogil:
        for t in prange(n, schedule="static", num_threads=n):
            csr[t] = fc_csr_get()
    return [int(c) for c in csr] if fc_flush_supported() else [None] * n


def workspace_bytes(reset_plan=False):
    """(bytes held in the per-thread workspaces now, bytes of shared plan buffers allocated since
    the last reset). The benchmark resets, runs one call and reports the sum as its workspace."""
    global fc_plan_bytes_peak
    cdef long long plan = fc_plan_bytes_peak
    if reset_plan:
        fc_plan_bytes_peak = 0
    return int(fc_ws_bytes_total), int(plan)


def release_memory():
    """Free every thread's convolution workspaces and empty the output cache.

    Returns the number of bytes freed. A workspace in use by a call running in another thread
    is left to that thread, which frees it at its next work item (its bytes are not counted).
    """
    cdef size_t freed
    with nogil:
        freed = fc_ws_release_all() + fc_cache_release()
        fc_heap_trim()
    return int(freed)


def _set_workspace_cap(int64_t nbytes):
    """Testing hook: per-image buffers above ``nbytes`` switch a pass to row bands of about an
    eighth of it, and after a call no thread keeps more than three times it (default 16 MiB).
    Returns the previous cap."""
    if nbytes < 1:
        raise ValueError(f"nbytes must be >= 1, got {nbytes}")
    return int(fc_ws_set_cap(nbytes))


def _workspace_keep_bytes():
    """Bytes of workspace a thread may keep after a call."""
    return int(fc_ws_keep_bytes())


def _workspace_peak(reset=False):
    """Testing hook: the most bytes all threads' workspaces held together since the last reset
    (or the module's import); ``reset`` restarts it from the bytes held now."""
    global fc_ws_bytes_peak
    cdef long long peak = fc_ws_bytes_peak
    if reset:
        fc_ws_bytes_peak = fc_ws_bytes_total
    return int(peak)


def _workspace_sizes():
    """Testing hook: the bytes held by each thread's workspace (threads that have run a kernel
    and not exited)."""
    cdef int64_t held[1024]
    cdef int n = fc_ws_list(held, 1024)
    return [int(held[i]) for i in range(min(n, 1024))]


# ------------------------------------------------------------------------------ the job runner
cdef void _geometry(fc_job *job, Py_ssize_t *in_shape, Py_ssize_t *w_shape, object g):
    cdef fc_idx *v = job.geom
    v[0], v[1], v[2], v[3] = in_shape[0], in_shape[1], in_shape[2], in_shape[3]
    v[4], v[5], v[6] = w_shape[0], w_shape[2], w_shape[3]
    v[7] = g.groups
    v[8], v[9] = g.stride
    v[10], v[11] = g.dilation
    v[12], v[13] = g.pad_top, g.pad_left
    v[14], v[15] = g.out_h, g.out_w


# Below this many flops per thread a parallel region costs more than it saves (waking a team
# takes microseconds, much more when the cores are shared); the result is the same either way.
cdef double _grain = 2e6


def get_parallel_grain():
    """Flops (pooling: 16 per input element) a call needs per thread before it uses one more."""
    return _grain


def set_parallel_grain(double flops):
    """Set the grain (0: always use every thread, as the determinism tests do); returns the old one."""
    global _grain
    old, _grain = _grain, max(0.0, flops)
    return old


cdef int _threads_for(fc_job *job) noexcept nogil:
    cdef fc_idx *v = job.geom
    cdef double flops = 2.0 * v[0] * v[4] * v[14] * v[15] * (v[1] // v[7]) * v[5] * v[6]
    cdef int nthreads = fc_get_max_threads()
    if _grain <= 0:
        return nthreads
    cdef double useful = flops / _grain
    return nthreads if useful >= nthreads else (1 if useful < 1 else <int>useful)


cdef int _run(fc_job *job) except -1:
    """Prepare the job, run its items in parallel, then its reduction items.

    Items are independent, so the schedule cannot change any result; a dynamic schedule keeps
    both cores busy when the machine is shared, in chunks of the items that reuse one image's
    buffer. The call's fc_run (src/fc_common.h) sets every thread's floating-point mode, stops
    all threads at the first failure, and lets the calling thread, when it is Python's main
    thread, run the signal handlers every 20 ms between its items: an exception they raise
    (Ctrl-C: KeyboardInterrupt) is raised here, after the job is freed.
    """
    cdef fc_idx i, chunk
    cdef int status, nthreads = _threads_for(job)
    cdef unsigned mode = 0  # each thread's own (firstprivate)
    cdef fc_run run
    fc_run_init(&run, _flush_denormal, PyThread_get_thread_ident() == _main_thread,
                _check_signals)
    job.chunk = 1
    with nogil:
        status = fc_job_prepare(job, nthreads)
        chunk = job.chunk if job.chunk > 0 else 1
        if status == 0:
            with parallel(num_threads=nthreads):
                mode = fc_run_enter(&run)
                for i in prange(job.nitems, schedule="dynamic", chunksize=chunk):
                    if not fc_run_stopped(&run):
                        fc_run_done(&run, fc_job_item(job, i) if i != _fail_item else -1)
                fc_run_leave(mode)
        if status == 0 and job.nreduce > 0 and not fc_run_stopped(&run):
            # a region of its own: the reduction reads what every item wrote
            with parallel(num_threads=nthreads):
                mode = fc_run_enter(&run)
                for i in prange(job.nreduce, schedule="dynamic"):
                    if not fc_run_stopped(&run):
                        fc_run_done(&run, fc_job_reduce_item(job, i))
                fc_run_leave(mode)
        fc_job_free(job)
    if fc_run_state(&run) & FC_RUN_RAISED:
        return -1  # with the exception the signal handler raised
    if status != 0 or fc_run_stopped(&run):
        raise MemoryError("fastconv: out of memory for a kernel workspace")
    return 0


cdef void _set_strides(fc_job *job, Py_ssize_t *strides, Py_ssize_t itemsize):
    cdef int d
    for d in range(4):
        job.a_strides[d] = strides[d] // itemsize


def conv2d_forward(const floating[:, :, :, :] x, const floating[:, :, :, ::1] w,
                   const floating[::1] bias, floating[:, :, :, ::1] out, object g):
    """out = conv2d(x, w, bias); x may have any strides, out is C-contiguous and non-empty."""
    cdef fc_job job
    job.pass_ = FC_PASS_FORWARD
    job.f64 = floating is double
    _geometry(&job, x.shape, w.shape, g)
    job.a = &x[0, 0, 0, 0]
    _set_strides(&job, x.strides, sizeof(floating))
    job.b = &w[0, 0, 0, 0]
    job.bias = &bias[0] if bias is not None else NULL
    job.out = &out[0, 0, 0, 0]
    _run(&job)


def conv2d_grad_input(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                      floating[:, :, :, ::1] dx, object g):
    """dx = d conv2d / d x applied to dy; dx is C-contiguous and zero-filled on entry."""
    cdef fc_job job
    job.pass_ = FC_PASS_GRAD_INPUT
    job.f64 = floating is double
    _geometry(&job, dx.shape, w.shape, g)
    job.a = &dy[0, 0, 0, 0]
    job.b = &w[0, 0, 0, 0]
    job.bias = NULL
    job.out = &dx[0, 0, 0, 0]
    _run(&job)


def conv2d_grad_weight(const floating[:, :, :, ::1] dy, const floating[:, :, :, :] x,
                       floating[:, :, :, ::1] dw, object g):
    """dw = d conv2d / d w applied to dy; x may have any strides."""
    cdef fc_job job
    job.pass_ = FC_PASS_GRAD_WEIGHT
    job.f64 = floating is double
    _geometry(&job, x.shape, dw.shape, g)
    job.a = &x[0, 0, 0, 0]
    _set_strides(&job, x.strides, sizeof(floating))
    job.b = &dy[0, 0, 0, 0]
    job.bias = NULL
    job.out = &dw[0, 0, 0, 0]
    _run(&job)


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


# ------------------------------------------------------------------------------ FMA peak probe
cdef extern from "fma_probe.h" nogil:
    double fc_probe_flops_per_iter()
    float fc_probe_run(long iters)

cdef extern from *:
    """
    #ifdef _OPENMP
    static double fc_wtime(void) { return omp_get_wtime(); }
    #else
    #include <time.h>
    static double fc_wtime(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec;
    }
    #endif
    """
    double fc_wtime() nogil


def fma_peak_gflops(long iters=20_000_000 // 24, int repeats=7):
    """Measured fp32 FMA throughput (GFLOP/s) of all kernel threads together: each thread runs
    independent FMA chains in registers on the current ISA path; best of ``repeats``."""
    cdef int nthreads = fc_get_max_threads(), t, r
    cdef double best = 0, t0, t1
    cdef float sink = 0
    with nogil:  # wake the team and the cores' vector units before timing
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            sink += fc_probe_run(iters // 4)
    for r in range(repeats):
        with nogil:
            t0 = fc_wtime()
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                sink += fc_probe_run(iters)
            t1 = fc_wtime()
        best = max(best, nthreads * iters * fc_probe_flops_per_iter() / (t1 - t0) / 1e9)
    if sink == 12345.678:  # keep the result alive
        print(sink)
    return best
