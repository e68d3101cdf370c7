/* fastconv's convolution engine: a job API for the three passes (forward, grad_input,
 * grad_weight) over conv_isa_tmpl.h, instantiated for every (dtype, ISA) pair, and conv_tmpl.h,
 * instantiated for every dtype (conv_dtype.h). See conv_tmpl.h for the design of the passes. */
#ifndef FC_CONV_ENGINE_H
#define FC_CONV_ENGINE_H

#include "fc_common.h"
#include "fc_alloc.h"
#include "fc_bf16.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FC_SFENCE() _mm_sfence() /* order the non-temporal stores before the item ends */
#else
#define FC_SFENCE() ((void)0)
#endif
/* Forward outputs at least this large are written with non-temporal stores: they cannot stay in
 * the cache for whoever reads them next, and the stores then skip the read for ownership. */
#define FC_STREAM_BYTES ((fc_idx)8 << 20)

/* A convolution's geometry, by name (the Cython layer fills it; every pass's plan keeps a copy):
 * input N x C x H x W, K filters of R x S taps in G groups, strides, dilations, the zero rows
 * above and columns left of the input, output OH x OW. */
typedef struct {
    fc_idx N, C, H, W;
    fc_idx K, R, S, G;
    fc_idx sh, sw, dh, dw;
    fc_idx pt, pl;
    fc_idx OH, OW;
} fc_geom;

/* The forward's and grad_input's own paths for some layers, each taken where it applies: the
 * channel-vectorised one for small output planes (conv_cv_tmpl.h) and the depthwise one
 * (conv_dwd_tmpl.h). The tests turn each off to hold it to the GEMM's results, and count the
 * plans that took it to check which layers do (fastconv._testing.set_conv_path,
 * conv_path_plans). */
enum { FC_PATH_CV = 0, FC_PATH_DWD = 1, FC_PATH_COUNT };
static int fc_path_enabled[FC_PATH_COUNT] = {1, 1};
static long fc_path_plans[FC_PATH_COUNT];
static inline void fc_path_taken(int path) {
    __atomic_add_fetch(&fc_path_plans[path], 1, __ATOMIC_RELAXED);
}

/* A plan buffer (packed weights, partial sums) whose every element is written before it is
 * read, counted as the call's plan bytes: large ones come from the recycling cache of
 * fc_alloc.h, so that a layer called again does not page-fault megabytes in again.
 * fc_plan_free(p, bytes) gives it back. */
static inline void *fc_plan_alloc(size_t bytes) {
    __atomic_add_fetch(&fc_plan_bytes_peak, (int64_t)bytes, __ATOMIC_RELAXED);
    return fc_recycled_alloc(FC_ROUND_UP(bytes, FC_ALIGN));
}
static inline void fc_plan_free(void *p, size_t bytes) {
    fc_recycled_free(p, FC_ROUND_UP(bytes, FC_ALIGN));
}

enum { FC_PASS_FORWARD = 0, FC_PASS_GRAD_INPUT = 1, FC_PASS_GRAD_WEIGHT = 2, FC_PASS_COUNT };

/* A forward's or grad_input's products (fc_job.math): exact float32 ones, or those of its
 * inputs rounded to bfloat16 (fc_bf16.h), computed by rounding the copies the engine makes
 * (ROUND) or by the ISA's bfloat16 GEMM (GEMM; the plan chooses, the job asks for either). */
enum { FC_MATH_F32 = 0, FC_MATH_BF16_ROUND = 1, FC_MATH_BF16_GEMM = 2 };

typedef struct fc_job fc_job;

/* One pass for one dtype (conv_job_tmpl.h): `start` allocates the plan (j->plan), gives it the
 * dtype's ISA table `isa` (a TF(fc_isa), conv_tmpl.h), prepares it and fills the schedule; the
 * items and reduction items read the plan only. */
typedef struct {
    int (*start)(fc_job *j, const void *isa, int nthreads, fc_schedule *s);
    int (*pre_item)(const void *plan, fc_idx i); /* NULL: the pass has no preparation items */
    int (*item)(const void *plan, fc_idx i);
    int (*reduce_item)(const void *plan, fc_idx i); /* NULL: the pass has no reduction */
    void (*free_plan)(void *plan);
} fc_conv_pass;

/* Filled by the caller (pass, f64, geom and the operands), then prepared for the pass. */
struct fc_job {
    int pass, f64;
    fc_geom geom;
    const void *a;        /* forward: x; grad_input: dy; grad_weight: x */
    fc_idx a_strides[4];  /* element strides of `a` (forward and grad_weight) */
    const void *b;        /* forward: w; grad_input: w; grad_weight: dy (contiguous) */
    const void *bias;     /* forward only, may be NULL */
    int act;              /* forward only: the activation of its epilogue (FC_ACT_*, 0: none) */
    double slope;         /* forward only: leaky_relu's negative slope */
    int math;             /* forward, grad_input: FC_MATH_F32, or bfloat16 products (float32) */
    void *out;            /* forward: out; grad_input: dx (zeroed); grad_weight: dw */
    const fc_conv_pass *ops; /* set by fc_job_prepare */
    void *plan;
};

/* A zeroed plan of `size` bytes, owned by the job from now on (fc_job_free frees it). */
static void *fc_job_new_plan(fc_job *j, size_t size) {
    j->plan = fc_calloc(1, size);
    return j->plan;
}

/* One dtype: its three ISA instantiations, the passes (conv_tmpl.h) and their job functions
 * (conv_job_tmpl.h). The AVX-512 register block is 12 rows x 2 vectors for float32 and 6 x 4
 * for float64 (panels of the same width in pixels); AVX2 and the portable path use 6 x 2
 * (16 vector registers). */
#define T float
#define TN f32
#define IT int32_t
#define VLN_AVX512 16
#define VLN_AVX2 8
#define VLN_GENERIC 4
#define MR_AVX512 12
#define NVW_AVX512 2
#include "conv_dtype.h"
#include "conv_bf16.h"

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
 * The job API: fill an fc_job, prepare it with the ISA table of its dtype on the SIMD path in
 * use (fc_isa_f32 or fc_isa_f64: fc_kernels.h), run its items (in any order, on any threads),
 * then its reduction items if the schedule has any, and free it (also after a failed prepare). */
static int fc_job_prepare(fc_job *j, const void *isa, int nthreads, fc_schedule *s) {
    j->plan = NULL;
    j->ops = &(j->f64 ? fc_conv_passes_f64 : fc_conv_passes_f32)[j->pass];
    return j->ops->start(j, isa, nthreads, s);
}

/* Items run with their thread's workspace marked busy (see fc_ws_enter). */
static inline int fc_job_item(const fc_job *j, fc_idx i) {
    fc_workspace *ws = fc_ws_enter();
    int st = !ws ? -1 : j->ops->item(j->plan, i);
    fc_ws_leave(ws);
    return st;
}

/* Preparation items (the packing of a large layer's weights) need no workspace. */
static inline int fc_job_pre_item(const fc_job *j, fc_idx i) {
    return j->ops->pre_item(j->plan, i);
}

static inline int fc_job_reduce_item(const fc_job *j, fc_idx i) {
    fc_workspace *ws = fc_ws_enter();
    int st = !ws ? -1 : j->ops->reduce_item(j->plan, i);
    fc_ws_leave(ws);
    return st;
}

static void fc_job_free(fc_job *j) {
    if (!j->plan) return;
    j->ops->free_plan(j->plan);
    fc_free(j->plan);
    j->plan = NULL;
}

#endif /* FC_CONV_ENGINE_H */
