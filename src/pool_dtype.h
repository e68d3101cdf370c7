/* Instantiates the pooling engine for one dtype: pool_engine.h defines T, TN, IT and the lane
 * counts VLN_AVX512, VLN_AVX2, VLN_GENERIC, includes this file, and everything defined here is
 * undefined again at the end. Each ISA instantiation is compiled for its path's features
 * (FC_TARGET_*, fc_common.h). */
#ifdef FC_HAVE_X86_PATHS
#define ISA avx512
#define VB 64
#define VLN VLN_AVX512
#define FC_TARGET FC_TARGET_AVX512
#include "pool_isa_tmpl.h"
#undef ISA
#undef VB
#undef VLN
#undef FC_TARGET

#define ISA avx2
#define VB 32
#define VLN VLN_AVX2
#define FC_TARGET FC_TARGET_AVX2
#include "pool_isa_tmpl.h"
#undef ISA
#undef VB
#undef VLN
#undef FC_TARGET
#endif

#define ISA generic
#define VB 16
#define VLN VLN_GENERIC
#define FC_TARGET
#include "pool_isa_tmpl.h"
#undef ISA
#undef VB
#undef VLN
#undef FC_TARGET

#include "pool_tmpl.h"

/* The max backward records a bad index in the job (atomically): the one item function that
 * writes to it; the job itself is never const. */
static int FC_CAT(fc_pool_maxbwd, TN)(const fc_pool_job *j, fc_idx plane) {
    return FC_CAT(fc_pool_maxbwd_item, TN)((fc_pool_job *)j, plane);
}

/* This dtype's item functions on each SIMD path (fc_kernels.h resolves the row in use). */
#define FC_POOL_ROW(isa)                                                                        \
    {FC_CAT(FC_CAT(pool_fwd_item, TN), isa), FC_CAT(FC_CAT(avg_bwd_item, TN), isa),             \
     FC_CAT(fc_pool_fwd_item_scalar, TN), FC_CAT(fc_pool_maxbwd, TN)}
static const fc_pool_isa FC_CAT(fc_pool_isas, TN)[FC_ISA_COUNT] = {
    [FC_ISA_GENERIC] = FC_POOL_ROW(generic),
#ifdef FC_HAVE_X86_PATHS
    [FC_ISA_AVX2] = FC_POOL_ROW(avx2),
    [FC_ISA_AVX512] = FC_POOL_ROW(avx512),
#endif
};
#undef FC_POOL_ROW
#undef T
#undef TN
#undef IT
#undef VLN_AVX512
#undef VLN_AVX2
#undef VLN_GENERIC
