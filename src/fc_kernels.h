/* The C side of fastconv's compiled module (src/_kernels.pyx): both engines, the output
 * allocator and the FMA probe in one translation unit, so that they share one copy of the
 * state of fc_common.h (SIMD path, thread count, workspaces); the function table of the SIMD path
 * in use; and the two engines' jobs behind the one interface of the run loop (fc_task). */
#ifndef FC_KERNELS_H
#define FC_KERNELS_H

/* <complex.h>'s imaginary unit, a macro NumPy's headers bring in before this file: the engines
 * use I as a variable name. */
#undef I

#include "conv_engine.h"
#include "pool_engine.h"
#include "pool_adaptive.h"
#include "filter_engine.h"
#include "fma_probe.h"
#include "fc_alloc.h"

/* The functions of the SIMD path in use, per dtype, resolved once by fc_set_isa (at import and
 * by set_isa) as NumPy's dispatch and PyTorch's REGISTER_DISPATCH do. A job copies what it needs
 * when it is prepared (a convolution plan its ISA table, a pooling job its item function), so a
 * set_isa from another thread never changes a call half-way; dispatch then costs an indirect
 * call or two per work item (a block of rows of a plane at least, where the branches it replaces
 * cost as much), never per element. */
typedef struct {
    fc_isa_f32 conv; /* conv_tmpl.h's ISA table (fc_isa_table_f32 builds it for fc_isa_level) */
    fc_pool_isa pool;
} fc_kernels_f32;

typedef struct {
    fc_isa_f64 conv;
    fc_pool_isa pool;
} fc_kernels_f64;

typedef struct {
    int level; /* FC_ISA_* */
    fc_kernels_f32 f32;
    fc_kernels_f64 f64;
    fc_probe probe;
} fc_kernel_table;

static fc_kernel_table fc_kernels;

/* The bfloat16 GEMM of the path fc_bf16_resolve picks for the SIMD path in use (fc_bf16.h), into
 * the float32 table; the portable path has none (the engine rounds its copies instead). */
static void fc_install_bf16(void) {
    fc_isa_f32 *t = &fc_kernels.f32.conv;
    t->gemm_bf16 = NULL;
    t->pack_bf16 = NULL;
    t->bf16_mr = t->bf16_nr = 0;
    t->bf16_a_elems = NULL;
#ifdef FC_HAVE_X86_PATHS
    const int level = fc_bf16_resolve();
    if (level == FC_BF16_AMX || (level >= FC_BF16_AVX512_BF16 && fc_bf16_amx_model)) {
        t->gemm_bf16 = level == FC_BF16_AMX && !fc_bf16_amx_model
                           ? fc_gemm_tile_bf16_amx
                           : fc_gemm_tile_bf16_amx_model;
        t->pack_bf16 = fc_bf16_pack_rows_amx;
        t->bf16_mr = AMX_ROWS;
        t->bf16_nr = 2 * BF_VL;
        t->bf16_a_elems = fc_bf16_amx_words;
    } else if (level == FC_BF16_AVX512_BF16) {
        t->gemm_bf16 = fc_gemm_tile_bf16_avx512;
        t->pack_bf16 = fc_bf16_pack_rows;
        t->bf16_mr = BF_MR;
        t->bf16_nr = BF_NV * BF_VL;
        t->bf16_a_elems = fc_bf16_avx512_words;
    }
#else
    fc_bf16_resolve();
#endif
}

/* Turn one of the convolutions' own paths (FC_PATH_*, conv_engine.h) on or off (tests);
 * returns the previous setting, or -1 for no such path. */
static int fc_set_conv_path(int path, int on) {
    if (path < 0 || path >= FC_PATH_COUNT) return -1;
    int old = fc_path_enabled[path];
    fc_path_enabled[path] = on;
    return old;
}

/* Convolution plans that took that path so far (tests); -1 for no such path. */
static long fc_conv_path_plans(int path) {
    if (path < 0 || path >= FC_PATH_COUNT) return -1;
    return __atomic_load_n(&fc_path_plans[path], __ATOMIC_RELAXED);
}

/* Tests only: the AMX code on its model of the tile instructions (on), or not (off); returns
 * whether the model is now in use (it needs the avx512_bf16 path). */
static int fc_set_bf16_amx_model(int on) {
    fc_bf16_amx_model = on;
    fc_install_bf16();
    return on && fc_bf16_level >= FC_BF16_AVX512_BF16;
}

/* Select the bfloat16 path: `requested` (an FC_BF16_* level), capped as fc_bf16_resolve says, or
 * the best one if negative. Returns the level now in use. */
static int fc_set_bf16(int requested) {
    fc_bf16_requested = requested < 0 ? -1 : requested;
    fc_install_bf16();
    return fc_bf16_level;
}

/* Select the SIMD path: `requested` (an FC_ISA_* level), capped to what the CPU supports, or the
 * best one if negative. Returns the level now in use. */
static int fc_set_isa(int requested) {
    int best = fc_isa_supported();
    int level = requested < 0 ? best : FC_MIN(requested, best);
    fc_isa_level = level;
    fc_kernels.level = level;
    fc_isa_table_f32(&fc_kernels.f32.conv);
    fc_isa_table_f64(&fc_kernels.f64.conv);
    fc_install_bf16();
    fc_kernels.f32.pool = fc_pool_isas_f32[level];
    fc_kernels.f64.pool = fc_pool_isas_f64[level];
    fc_kernels.probe = fc_probes[level];
    return level;
}

/* ---- the jobs as tasks of the run loop ---- */
static int fc_conv_task_prepare(void *job, int nthreads, fc_schedule *s) {
    fc_job *j = (fc_job *)job;
    const void *isa = j->f64 ? (const void *)&fc_kernels.f64.conv
                             : (const void *)&fc_kernels.f32.conv;
    int st = fc_job_prepare(j, isa, nthreads, s);
    s->chunk = FC_MAX(s->chunk, (fc_idx)1);
    return st;
}
static int fc_conv_task_pre_item(void *job, fc_idx i) {
    return fc_job_pre_item((fc_job *)job, i);
}
static int fc_conv_task_item(void *job, fc_idx i) { return fc_job_item((fc_job *)job, i); }
static int fc_conv_task_reduce_item(void *job, fc_idx i) {
    return fc_job_reduce_item((fc_job *)job, i);
}
static void fc_conv_task_finish(void *job) { fc_job_free((fc_job *)job); }

static const fc_task fc_conv_task = {fc_conv_task_prepare, fc_conv_task_pre_item,
                                     fc_conv_task_item,
                                     fc_conv_task_reduce_item, fc_conv_task_finish};

static int fc_pool_task_prepare(void *job, int nthreads, fc_schedule *s) {
    fc_pool_job *j = (fc_pool_job *)job;
    return fc_pool_prepare(j, nthreads, j->f64 ? &fc_kernels.f64.pool : &fc_kernels.f32.pool, s);
}
static int fc_pool_task_item(void *job, fc_idx i) { return fc_pool_item((fc_pool_job *)job, i); }
static void fc_pool_task_finish(void *job) { fc_pool_free((fc_pool_job *)job); }

static const fc_task fc_pool_task = {fc_pool_task_prepare, fc_task_no_items, fc_pool_task_item,
                                     fc_task_no_items, fc_pool_task_finish};

#endif /* FC_KERNELS_H */
