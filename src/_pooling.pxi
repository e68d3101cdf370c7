# Pooling (included by _kernels.pyx): OpenMP loops over the work items of src/pool_engine.h, on
# the SIMD path, threads and floating-point mode of the whole module. Arguments arrive validated
# and normalised by fastconv._pool.

cdef extern from "fc_kernels.h" nogil:
    int FC_POOL_MAX, FC_POOL_AVG, FC_POOL_FORWARD, FC_POOL_BACKWARD

    ctypedef struct fc_pool_job:
        int pass_ "pass"
        int op, f64, scalar
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
        int bad_index
    const fc_task fc_pool_task


# Force the scalar forward path (torch's loops verbatim): _testing_set_scalar.
cdef bint _force_scalar = False


cdef int _pool_init(fc_pool_job *job, int pass_, int op, bint f64, Py_ssize_t *in_shape,
               object g) except -1:
    """Geometry from a fastconv._pool.PoolGeometry; in_shape is the (N, C, H, W) input shape."""
    job.pass_ = pass_
    job.op = op
    job.f64 = f64
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
# the OpenMP team costs more than the work. The tests set it to 0 (_testing_set_serial_bytes) to
# run small cases threaded.
cdef double _serial_bytes = 128 * 1024


cdef int _pool_threads(const fc_pool_job *job) noexcept nogil:
    """Threads for a pooling call: get_num_threads(), or 1 below _serial_bytes."""
    cdef double touched = (<double>job.N * job.C * (job.H * job.W + job.OH * job.OW)
                           * (sizeof(double) if job.f64 else sizeof(float)))
    return 1 if touched < _serial_bytes else fc_get_max_threads()


cdef int _run_pool(fc_pool_job *job) except -1:
    return _run(job, &fc_pool_task, _pool_threads(job), "pooling")


def pool2d_forward(const floating[:, :, :, :] x, floating[:, :, :, ::1] out,
                   int64_t[:, :, :, ::1] indices, bint is_max, object g):
    """out (and indices, if not None, max only) = pool(x); x may have any strides; nothing empty."""
    cdef fc_pool_job job
    _pool_init(&job, FC_POOL_FORWARD, FC_POOL_MAX if is_max else FC_POOL_AVG, floating is double,
               x.shape, g)
    job.src = &x[0, 0, 0, 0]
    _strides(job.ss, x.strides, sizeof(floating))
    job.dst = &out[0, 0, 0, 0]
    if indices is not None:
        job.dst_ind = &indices[0, 0, 0, 0]
    _run_pool(&job)


def avg_pool2d_backward(const floating[:, :, :, :] grad_output, floating[:, :, :, ::1] grad_input,
                        object g):
    """grad_input = avg_pool2d backward of grad_output (any strides); grad_input need not be
    zeroed."""
    cdef fc_pool_job job
    _pool_init(&job, FC_POOL_BACKWARD, FC_POOL_AVG, floating is double, grad_input.shape, g)
    job.src = &grad_output[0, 0, 0, 0]
    _strides(job.ss, grad_output.strides, sizeof(floating))
    job.dst = &grad_input[0, 0, 0, 0]
    _run_pool(&job)


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
    _run_pool(&job)
    return not job.bad_index


# Adaptive pooling (src/pool_adaptive.h): the bins arrive as int64 tables from
# fastconv._core.adaptive_pool; the max backward is max_pool2d_backward above.

cdef extern from "fc_kernels.h" nogil:
    ctypedef struct fc_apool_job:
        int pass_ "pass"
        int op, f64
        fc_idx N, C, H, W, OH, OW
        const int64_t *hs
        const int64_t *he
        const int64_t *ws
        const int64_t *we
        const int64_t *ohlo
        const int64_t *ohhi
        const void *src
        fc_idx ss[4]
        void *dst
        int64_t *dst_ind
    const fc_task fc_apool_task


cdef int _run_apool(fc_apool_job *job, int pass_, int op, bint f64, Py_ssize_t *in_shape,
                    const int64_t[::1] hs, const int64_t[::1] he, const int64_t[::1] ws,
                    const int64_t[::1] we) except -1:
    """Run ``job`` (its arrays set) on (N, C, H, W) = in_shape and the bins; small calls (below
    _serial_bytes, as the other pooling calls) on the calling thread alone."""
    job.pass_ = pass_
    job.op = op
    job.f64 = f64
    job.N, job.C, job.H, job.W = in_shape[0], in_shape[1], in_shape[2], in_shape[3]
    job.OH, job.OW = hs.shape[0], ws.shape[0]
    job.hs, job.he, job.ws, job.we = &hs[0], &he[0], &ws[0], &we[0]
    cdef double touched = (<double>job.N * job.C * (job.H * job.W + job.OH * job.OW)
                           * (8 if f64 else 4))
    return _run(job, &fc_apool_task, 1 if touched < _serial_bytes else fc_get_max_threads(),
                "pooling")


def adaptive_pool2d_forward(const floating[:, :, :, :] x, floating[:, :, :, ::1] out,
                            int64_t[:, :, :, ::1] indices, bint is_max, const int64_t[::1] hs,
                            const int64_t[::1] he, const int64_t[::1] ws,
                            const int64_t[::1] we):
    """out (and indices, if not None, max only) = adaptive pooling of x over the bins
    [hs[oh], he[oh]) x [ws[ow], we[ow]); x may have any strides; nothing empty."""
    cdef fc_apool_job job
    job.src = &x[0, 0, 0, 0]
    _strides(job.ss, x.strides, sizeof(floating))
    job.dst = &out[0, 0, 0, 0]
    job.dst_ind = NULL if indices is None else &indices[0, 0, 0, 0]
    job.ohlo = job.ohhi = NULL
    _run_apool(&job, FC_POOL_FORWARD, FC_POOL_MAX if is_max else FC_POOL_AVG,
               floating is double, x.shape, hs, he, ws, we)


def adaptive_avg_pool2d_backward(const floating[:, :, :, :] grad_output,
                                 floating[:, :, :, ::1] grad_input, const int64_t[::1] hs,
                                 const int64_t[::1] he, const int64_t[::1] ws,
                                 const int64_t[::1] we, const int64_t[::1] ohlo,
                                 const int64_t[::1] ohhi):
    """grad_input (need not be zeroed) = adaptive average pooling backward of grad_output (any
    strides); input row ih lies in the bins of output rows [ohlo[ih], ohhi[ih])."""
    cdef fc_apool_job job
    job.src = &grad_output[0, 0, 0, 0]
    _strides(job.ss, grad_output.strides, sizeof(floating))
    job.dst = &grad_input[0, 0, 0, 0]
    job.dst_ind = NULL
    job.ohlo, job.ohhi = &ohlo[0], &ohhi[0]
    _run_apool(&job, FC_POOL_BACKWARD, FC_POOL_AVG, floating is double, grad_input.shape,
               hs, he, ws, we)
