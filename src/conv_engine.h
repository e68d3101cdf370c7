/* fastconv's convolution engine: instantiates conv_isa_tmpl.h for every (dtype, ISA) pair and
 * conv_tmpl.h for every dtype. See conv_tmpl.h for the design of the passes. */
#ifndef FC_CONV_ENGINE_H
#define FC_CONV_ENGINE_H

#include "fc_common.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FC_SFENCE() _mm_sfence() /* order the non-temporal stores before the item ends */
#else
#define FC_SFENCE() ((void)0)
#endif
/* Forward outputs at least this large are written with non-temporal stores: they cannot stay in
 * the cache for whoever reads them next, and the stores then skip the read for ownership. */
#define FC_STREAM_BYTES ((fc_idx)8 << 20)

/* One dtype: its three ISA instantiations, then the passes (conv_dtype.h). The AVX-512 register
 * block is 12 rows x 2 vectors for float32 and 6 x 4 for float64 (panels of the same width in
 * pixels); AVX2 and the portable path use 6 x 2 (16 vector registers). */
#define T float
#define TN f32
#define IT int32_t
#define VLN_AVX512 16
#define VLN_AVX2 8
#define VLN_GENERIC 4
#define MR_AVX512 12
#define NVW_AVX512 2
#include "conv_dtype.h"

#define T double
#define TN f64
#define IT int64_t
#define VLN_AVX512 8
#define VLN_AVX2 4
#define VLN_GENERIC 2
#define MR_AVX512 6
#define NVW_AVX512 4
#include "conv_dtype.h"

/* ---------------------------------------------------------------------------------------------
 * A dtype-agnostic job API for the Cython layer: fill an fc_job, prepare it for one pass, run
 * its items (in any order, on any threads), optionally run the reduction items, free it. */
#ifndef FC_CONV_API
#define FC_CONV_API
enum { FC_PASS_FORWARD = 0, FC_PASS_GRAD_INPUT = 1, FC_PASS_GRAD_WEIGHT = 2 };

typedef struct {
    int pass, f64;
    fc_idx geom[16];    /* N, C, H, W, K, R, S, G, sh, sw, dh, dw, pt, pl, OH, OW */
    const void *a;      /* forward: x; grad_input: dy; grad_weight: x */
    fc_idx a_strides[4];/* element strides of `a` (forward and grad_weight) */
    const void *b;      /* forward: w; grad_input: w; grad_weight: dy (contiguous) */
    const void *bias;   /* forward only, may be NULL */
    void *out;          /* forward: out; grad_input: dx (zeroed); grad_weight: dw */
    fc_idx nitems, nreduce;
    fc_idx chunk;       /* items handed out together: those that share one image's buffer */
    void *plan;
} fc_job;

#define FC_JOB_DTYPE(TN, T)                                                                   \
    static int FC_CAT(fc_job_prepare, TN)(fc_job * j, int nthreads) {                          \
        FC_CAT(fc_geom, TN) g;                                                                 \
        memcpy(&g, j->geom, sizeof g);                                                         \
        int st = 0;                                                                            \
        if (j->pass == FC_PASS_FORWARD) {                                                      \
            FC_CAT(fc_fwd_plan, TN) *p = calloc(1, sizeof *p);                                 \
            if (!p) return -1;                                                                 \
            p->g = g;                                                                          \
            p->x = (const T *)j->a;                                                            \
            memcpy(p->xs, j->a_strides, sizeof p->xs);                                         \
            p->w = (const T *)j->b;                                                            \
            p->bias = (const T *)j->bias;                                                      \
            p->out = (T *)j->out;                                                              \
            j->plan = p;                                                                       \
            st = FC_CAT(fc_fwd_prepare, TN)(p, nthreads);                                      \
            j->nitems = p->nitems;                                                             \
            j->nreduce = 0;                                                                    \
            j->chunk = p->nPB;                                                                 \
        } else if (j->pass == FC_PASS_GRAD_INPUT) {                                            \
            FC_CAT(fc_gin_plan, TN) *p = calloc(1, sizeof *p);                                 \
            if (!p) return -1;                                                                 \
            p->g = g;                                                                          \
            p->dy = (const T *)j->a;                                                           \
            p->w = (const T *)j->b;                                                            \
            p->dx = (T *)j->out;                                                               \
            j->plan = p;                                                                       \
            st = FC_CAT(fc_gin_prepare, TN)(p, nthreads);                                      \
            j->nitems = p->nitems;                                                             \
            j->nreduce = 0;                                                                    \
            j->chunk = p->nphase * p->nPB;                                                     \
        } else {                                                                               \
            FC_CAT(fc_gw_plan, TN) *p = calloc(1, sizeof *p);                                  \
            if (!p) return -1;                                                                 \
            p->g = g;                                                                          \
            p->x = (const T *)j->a;                                                            \
            memcpy(p->xs, j->a_strides, sizeof p->xs);                                         \
            p->dy = (const T *)j->b;                                                           \
            p->dw = (T *)j->out;                                                               \
            j->plan = p;                                                                       \
            st = FC_CAT(fc_gw_prepare, TN)(p);                                                 \
            j->nitems = p->nitems;                                                             \
            j->nreduce = p->depthwise ? 0 : FC_CAT(fc_gw_reduce_items, TN)(p);                               \
            j->chunk = 1;                                                                                    \
        }                                                                                      \
        return st;                                                                             \
    }                                                                                          \
    static int FC_CAT(fc_job_item, TN)(const fc_job *j, fc_idx i) {                            \
        if (j->pass == FC_PASS_FORWARD) return FC_CAT(fc_fwd_item, TN)(j->plan, i);            \
        if (j->pass == FC_PASS_GRAD_INPUT) return FC_CAT(fc_gin_item, TN)(j->plan, i);         \
        return FC_CAT(fc_gw_item, TN)(j->plan, i);                                             \
    }                                                                                          \
    static void FC_CAT(fc_job_free, TN)(fc_job * j) {                                          \
        if (!j->plan) return;                                                                  \
        if (j->pass == FC_PASS_FORWARD) FC_CAT(fc_fwd_free, TN)(j->plan);                      \
        else if (j->pass == FC_PASS_GRAD_INPUT) FC_CAT(fc_gin_free, TN)(j->plan);              \
        else FC_CAT(fc_gw_free, TN)(j->plan);                                                  \
        free(j->plan);                                                                         \
        j->plan = NULL;                                                                        \
    }

FC_JOB_DTYPE(f32, float)
FC_JOB_DTYPE(f64, double)

static inline int fc_job_prepare(fc_job *j, int nthreads) {
    j->plan = NULL;
    return j->f64 ? fc_job_prepare_f64(j, nthreads) : fc_job_prepare_f32(j, nthreads);
}
/* Items run with their thread's workspace marked busy (see fc_ws_enter). */
static inline int fc_job_item(const fc_job *j, fc_idx i) {
    fc_workspace *ws = fc_ws_enter();
    int st = !ws ? -1 : j->f64 ? fc_job_item_f64(j, i) : fc_job_item_f32(j, i);
    fc_ws_leave(ws);
    return st;
}
static inline int fc_job_reduce_item(const fc_job *j, fc_idx i) {
    fc_workspace *ws = fc_ws_enter();
    int st = !ws ? -1 : j->f64 ? fc_gw_reduce_item_f64(j->plan, i)
                               : fc_gw_reduce_item_f32(j->plan, i);
    fc_ws_leave(ws);
    return st;
}
static inline void fc_job_free(fc_job *j) {
    if (j->f64) fc_job_free_f64(j);
    else fc_job_free_f32(j);
}
#endif

#endif /* FC_CONV_ENGINE_H */
