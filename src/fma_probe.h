/* A register-only fp32 FMA throughput probe: the machine's practical peak, against which the
 * benchmark reports each convolution's GFLOP/s. Every thread runs 24 independent FMA chains
 * (enough to cover FMA latency x pipes on current cores) on the widest vectors the ISA level has.
 * The extension is built with -ffp-contract=off, so the AVX paths spell the FMA (MADD) and the
 * portable one, whose peak is a multiply and an add (SSE2), writes them out. */
#ifndef FC_FMA_PROBE_H
#define FC_FMA_PROBE_H
#include "fc_common.h"

#define FC_PROBE_BODY(VBYTES, MADD)                                                           \
    typedef float pv __attribute__((vector_size(VBYTES)));                                   \
    pv acc[24];                                                                              \
    pv m = (pv){0} + 0.999999f, a = (pv){0} + 1e-7f;                                         \
    for (int i = 0; i < 24; i++) acc[i] = (pv){0} + (float)i;                                \
    for (long it = 0; it < iters; it++) {                                                    \
        _Pragma("GCC unroll 24") for (int i = 0; i < 24; i++) acc[i] = MADD(acc[i], m, a);    \
    }                                                                                        \
    float s = 0;                                                                             \
    for (int i = 0; i < 24; i++) s += acc[i][0];                                             \
    return s;

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FC_MADD512(x, m, a) (pv) _mm512_fmadd_ps((__m512)(x), (__m512)(m), (__m512)(a))
#define FC_MADD256(x, m, a) (pv) _mm256_fmadd_ps((__m256)(x), (__m256)(m), (__m256)(a))
__attribute__((target("avx512f,fma"))) static float fc_probe_avx512(long iters) {
    FC_PROBE_BODY(64, FC_MADD512)
}
__attribute__((target("avx2,fma"))) static float fc_probe_avx2(long iters) {
    FC_PROBE_BODY(32, FC_MADD256)
}
#endif
#define FC_MADD_PLAIN(x, m, a) ((x) * (m) + (a))
static float fc_probe_generic(long iters) { FC_PROBE_BODY(16, FC_MADD_PLAIN) }

/* Flops per iteration of the probe loop on one thread at the current ISA level. */
static inline double fc_probe_flops_per_iter(void) {
    int lanes = fc_isa_level == FC_ISA_AVX512 ? 16 : fc_isa_level == FC_ISA_AVX2 ? 8 : 4;
    return 24.0 * 2.0 * lanes;
}

static inline float fc_probe_run(long iters) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (fc_isa_level == FC_ISA_AVX512) return fc_probe_avx512(iters);
    if (fc_isa_level == FC_ISA_AVX2) return fc_probe_avx2(iters);
#endif
    return fc_probe_generic(iters);
}
#endif
