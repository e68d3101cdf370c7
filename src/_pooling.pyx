# cython: language_level=3
"""Compiled pooling kernels: OpenMP loops over the work items of src/pool_engine.h.

Only the parallel loops live here; arguments arrive validated and normalised by fastconv._pool.
The GIL is released for the whole computation of every function below. The SIMD path is the one
selected for the convolution kernels (fastconv._kernels.set_isa / FASTCONV_ISA), read per call.
"""
import threading

from libc.stdint cimport int64_t

from cython cimport floating
from cython.parallel cimport parallel, prange

from . import _kernels

cdef extern from "pool_engine.h" nogil:
    ctypedef Py_ssize_t fc_idx
    int fc_get_max_threads()
    int FC_POOL_MAX, FC_POOL_AVG, FC_POOL_FORWARD, FC_POOL_BACKWARD

    ctypedef struct fc_pool_job:
        int pass_ "pass"
        int op, f64, isa, scalar
        fc_idx N, C, H, W, OH, OW
        fc_idx kh, kw, sh, sw, ph, pw, dh, dw
        int count_include_pad
        fc_idx divisor
        const void *src
        fc_idx ss[4]
        const int64_t *ind
        fc_idx is_ "is"[4]
        void *dst
        int64_t *dst_ind
        fc_idx nitems
        int bad_index
    int fc_pool_prepare(fc_pool_job *j, int nthreads)
    int fc_pool_item(fc_pool_job *j, fc_idx i)
    void fc_pool_free(fc_pool_job *j)
    size_t fc_ws_release_all()
    long long fc_ws_bytes_total


include "_run_control.pxi"


ISA_NAMES = ("generic", "avx2", "avx512")
cdef bint _force_scalar = False


def set_scalar(bint on):
    """Testing hook: run the forward passes on the scalar path (torch's loops verbatim)."""
    global _force_scalar
    _force_scalar = on


def release_workspaces():
    """Free every thread's pooling workspaces (this extension's own; see
    fastconv._kernels.release_memory); returns the bytes freed."""
    cdef size_t freed
    with nogil:
        freed = fc_ws_release_all()
    return int(freed)


def workspace_bytes():
    """Bytes held in this extension's per-thread pooling workspaces now."""
    return int(fc_ws_bytes_total)


cdef int _init(fc_pool_job *job, int pass_, int op, bint f64, Py_ssize_t *in_shape,
               object g) except -1:
    """Geometry from a fastconv._pool.PoolGeometry; in_shape is the (N, C, H, W) input shape."""
    job.pass_ = pass_
    job.op = op
    job.f64 = f64
    job.isa = ISA_NAMES.index(_kernels.get_isa())
    job.scalar = _force_scalar
    job.N, job.C, job.H, job.W = in_shape[0], in_shape[1], in_shape[2], in_shape[3]
    job.OH, job.OW = g.out_h, g.out_w
    job.kh, job.kw = g.kernel
    job.sh, job.sw = g.stride
    job.ph, job.pw = g.padding
    job.dh, job.dw = g.dilation
    job.count_include_pad = g.count_include_pad
    job.divisor = 0 if g.divisor_override is None else g.divisor_override
    job.ind = NULL
    job.dst_ind = NULL
    return 0


# Below this many bytes touched (input + output) a call runs on the calling thread alone: waking
# the OpenMP team costs more than the work (tests lower it to run small cases threaded).
cdef double _serial_bytes = 128 * 1024


def set_serial_bytes(double nbytes):
    """Testing hook: calls touching fewer bytes run single-threaded; returns the previous value."""
    global _serial_bytes
    previous, _serial_bytes = _serial_bytes, nbytes
    return previous


cdef int _run(fc_pool_job *job) except -1:
    """Prepare the job, run its items in parallel (dynamic chunks), free it.

    The thread count and the floating-point mode are the convolution module's: one setting for
    the package (this extension has its own copy of the C globals, so it asks fastconv._kernels).
    As there (src/fc_common.h, fc_run), the first failure stops every thread, and the calling
    thread, when it is Python's main thread, runs the signal handlers every 20 ms between its
    items: an exception they raise (Ctrl-C: KeyboardInterrupt) is raised here.
    """
    cdef fc_idx i, chunk
    cdef int status
    cdef int nthreads = _kernels.get_num_threads()
    cdef double touched = (<double>job.N * job.C * (job.H * job.W + job.OH * job.OW)
                           * (8 if job.f64 else 4))
    cdef unsigned mode = 0  # each thread's own (firstprivate)
    cdef fc_run run
    fc_run_init(&run, _kernels.get_flush_denormal(),
                PyThread_get_thread_ident() == _main_thread, _check_signals)
    if touched < _serial_bytes:
        nthreads = 1
    with nogil:
        status = fc_pool_prepare(job, nthreads)
        # dynamic chunks of consecutive items (about 8 per thread): a thread the OS delays
        # (cores shared with other processes) leaves its share to the others
        chunk = max(1, job.nitems // (8 * nthreads))
        if status == 0:
            with parallel(num_threads=nthreads):
                mode = fc_run_enter(&run)
                for i in prange(job.nitems, schedule="dynamic", chunksize=chunk):
                    if not fc_run_stopped(&run):
                        fc_run_done(&run, fc_pool_item(job, i) if i != _fail_item else -1)
                fc_run_leave(mode)
        fc_pool_free(job)
    if fc_run_state(&run) & FC_RUN_RAISED:
        return -1  # with the exception the signal handler raised
    if status != 0 or fc_run_stopped(&run):
        raise MemoryError("fastconv: out of memory for a pooling workspace")
    return 0


cdef void _strides(fc_idx *dst, Py_ssize_t *strides, Py_ssize_t itemsize):
    cdef int d
    for d in range(4):
        dst[d] = strides[d] // itemsize


def pool2d_forward(const floating[:, :, :, :] x, floating[:, :, :, ::1] out,
                   int64_t[:, :, :, ::1] indices, bint is_max, object g):
    """out (and indices, if not None, max only) = pool(x); x may have any strides; nothing empty."""
    cdef fc_pool_job job
    _init(&job, FC_POOL_FORWARD, FC_POOL_MAX if is_max else FC_POOL_AVG, floating is double,
          x.shape, g)
    job.src = &x[0, 0, 0, 0]
    _strides(job.ss, x.strides, sizeof(floating))
    job.dst = &out[0, 0, 0, 0]
    if indices is not None:
        job.dst_ind = &indices[0, 0, 0, 0]
    _run(&job)


def avg_pool2d_backward(const floating[:, :, :, :] grad_output, floating[:, :, :, ::1] grad_input,
                        object g):
    """grad_input = avg_pool2d backward of grad_output (any strides); grad_input need not be zeroed."""
    cdef fc_pool_job job
    _init(&job, FC_POOL_BACKWARD, FC_POOL_AVG, floating is double, grad_input.shape, g)
    job.src = &grad_output[0, 0, 0, 0]
    _strides(job.ss, grad_output.strides, sizeof(floating))
    job.dst = &grad_input[0, 0, 0, 0]
    _run(&job)


def max_pool2d_backward(const floating[:, :, :, :] grad_output, const int64_t[:, :, :, :] indices,
                        floating[:, :, :, ::1] grad_input):
    """grad_input[n, c].flat[indices[n, c, i, j]] += grad_output[n, c, i, j]; any input strides.

    Returns False (grad_input then is garbage) if an index lies outside its plane; such an index
    is never written through.
    """
    cdef fc_pool_job job
    cdef Py_ssize_t *s = grad_input.shape
    job.pass_ = FC_POOL_BACKWARD
    job.op = FC_POOL_MAX
    job.f64 = floating is double
    job.isa = 0
    job.scalar = 0
    job.N, job.C, job.H, job.W = s[0], s[1], s[2], s[3]
    job.OH, job.OW = grad_output.shape[2], grad_output.shape[3]
    job.kh = job.kw = job.sh = job.sw = job.dh = job.dw = 1
    job.ph = job.pw = 0
    job.count_include_pad = 0
    job.divisor = 0
    job.src = &grad_output[0, 0, 0, 0]
    _strides(job.ss, grad_output.strides, sizeof(floating))
    job.ind = &indices[0, 0, 0, 0]
    _strides(job.is_, indices.strides, sizeof(int64_t))
    job.dst = &grad_input[0, 0, 0, 0]
    job.dst_ind = NULL
    _run(&job)
    return not job.bad_index
