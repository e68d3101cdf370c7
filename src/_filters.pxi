# Image filters (included by _kernels.pyx): the OpenMP loop over the work items of
# src/filter_engine.h, on the SIMD path, threads and floating-point mode of the whole module.
# Arguments arrive validated and normalised by fastconv.filters.

cdef extern from "fc_kernels.h" nogil:
    int FC_FT_U8, FC_FT_U16, FC_FT_F32, FC_FT_F64
    int FC_FBOX_NONE, FC_FBOX_WORK, FC_FBOX_F64
    ctypedef struct fc_filter_job:
        int f64, in_type, out_type, pad
        fc_idx H, W, C
        const void *src
        fc_idx src_rs
        void *dst
        fc_idx dst_fs, dst_rs
        fc_idx F, kh, kw, top, left
        fc_idx oy, ox, OH, OW
        const void *k2
        const void *kv
        const void *kx
        const int *sep
        int inplace
        int box
    const fc_task fc_filter_task


cdef int _filter_type(cnp.ndarray a) except -1:
    cdef int num = cnp.PyArray_TYPE(a)
    if num == cnp.NPY_UINT8:
        return FC_FT_U8
    if num == cnp.NPY_UINT16:
        return FC_FT_U16
    if num == cnp.NPY_FLOAT32:
        return FC_FT_F32
    if num == cnp.NPY_FLOAT64:
        return FC_FT_F64
    raise TypeError(f"unsupported dtype {a.dtype}")


def filter_bank(cnp.ndarray src, cnp.ndarray dst, cnp.ndarray k2, cnp.ndarray kv,
                cnp.ndarray kx, cnp.ndarray sep, int pad, fc_idx top, fc_idx left,
                bint inplace=True, fc_idx oy=0, fc_idx ox=0, int box=0):
    """dst[f] = filter f of the bank applied to src, an (H, W, C) image whose rows are contiguous
    (any row stride); dst is (F, OH, OW, C) C-contiguous: the outputs of rows [oy, oy + OH) and
    columns [ox, ox + OW) (the caller keeps them inside the image; all of it: (F, H, W, C)).
    k2 (F, kh, kw), kv (F, kh), kx (F, kw) are C-contiguous in the work dtype (float32 or
    float64); sep (F,) int32; pad an FC_FPAD_* mode whose limits the caller checked; top/left the
    padding before the first row/column. box: run the one kernel (every tap k2[0, 0, 0]) by
    exact window sums: 1 (FC_FBOX_WORK), in the work dtype, src uint8 or uint16 and every window
    sum within the work dtype's mantissa; 2 (FC_FBOX_F64), in float64, src uint8 or uint16 and
    every window sum below 2^53, or src float32 and fewer than 2^21 taps (the caller checks
    these; see filter_engine.h)."""
    cdef fc_filter_job job
    job.f64 = cnp.PyArray_TYPE(k2) == cnp.NPY_FLOAT64
    job.in_type = _filter_type(src)
    job.out_type = _filter_type(dst)
    job.pad = pad
    job.H, job.W, job.C = src.shape[0], src.shape[1], src.shape[2]
    job.src = cnp.PyArray_DATA(src)
    job.src_rs = src.strides[0] // src.itemsize
    job.dst = cnp.PyArray_DATA(dst)
    job.dst_fs = dst.strides[0] // dst.itemsize
    job.dst_rs = dst.strides[1] // dst.itemsize
    job.F, job.kh, job.kw = k2.shape[0], k2.shape[1], k2.shape[2]
    job.top, job.left = top, left
    job.oy, job.ox, job.OH, job.OW = oy, ox, dst.shape[1], dst.shape[2]
    if oy < 0 or ox < 0 or oy + job.OH > job.H or ox + job.OW > job.W:  # memory safety
        raise ValueError(f"output window {(oy, ox, job.OH, job.OW)} outside the "
                         f"{job.H}x{job.W} image")
    job.k2 = cnp.PyArray_DATA(k2)
    job.kv = cnp.PyArray_DATA(kv)
    job.kx = cnp.PyArray_DATA(kx)
    job.sep = <const int *>cnp.PyArray_DATA(sep)
    job.inplace = inplace
    job.box = box
    if box not in (FC_FBOX_NONE, FC_FBOX_WORK, FC_FBOX_F64):
        raise ValueError(f"box must be 0, 1 or 2, got {box}")
    if box == FC_FBOX_WORK and (job.F != 1 or job.in_type not in (FC_FT_U8, FC_FT_U16)):
        raise ValueError("a box filter in the work dtype takes one kernel and a uint8 or uint16 "
                         "image")
    if box == FC_FBOX_F64 and (job.F != 1 or job.in_type == FC_FT_F64
                               or job.kh * job.kw >= 1 << 21):
        raise ValueError("a box filter in float64 takes one kernel of fewer than 2^21 taps and "
                         "a uint8, uint16 or float32 image")
    cdef double touched = (<double>job.OH * job.OW * job.C * (src.itemsize + job.F * dst.itemsize))
    cdef int nthreads = 1 if touched < _serial_bytes else fc_get_max_threads()
    _run(&job, &fc_filter_task, nthreads, "filter")
