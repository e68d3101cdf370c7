/* A register-only fp32 FMA throughput probe: the machine's practical peak, against which the
 * benchmark reports each convolution's GFLOP/s. Every thread runs FC_PROBE_CHAINS independent
 * FMA chains on the widest vectors its SIMD path has. The extension is built with
 * -ffp-contract=off, so the AVX paths spell the FMA (MADD) and the portable one, whose peak is a
 * multiply and an add (SSE2), writes them out. */
#ifndef FC_FMA_PROBE_H
#define FC_FMA_PROBE_H
#include "fc_common.h"

/* Independent chains per thread: more than FMA latency x FMA pipes on current cores (4 x 2 to
 * 5 x 2 in flight), so that the pipes never wait for a result, and no more than the vector
 * registers hold beside the factor and the addend: 24 of AVX-512's 32; 12 of the 16 of AVX2 and
 * SSE2 (with 24 there, the compiler spills chains to the stack and the probe times its loads and
 * stores: half the peak measured on an AVX2-only Zen 1). The unroll pragma below covers both, as
 * a pragma takes no macro. */
#define FC_PROBE_CHAINS 24
#define FC_PROBE_CHAINS_16REGS 12
/* The chains' factor and addend: x * M + A stays finite and normal for any iteration count. */
#define FC_PROBE_M 0.999999f
#define FC_PROBE_A 1e-7f

#define FC_PROBE_BODY(VBYTES, MADD, CHAINS)                                                   \
    typedef float pv __attribute__((vector_size(VBYTES)));                                   \
    pv acc[CHAINS];                                                                          \
    pv m = (pv){0} + FC_PROBE_M, a = (pv){0} + FC_PROBE_A;                                   \
    for (int i = 0; i < CHAINS; i++) acc[i] = (pv){0} + (float)i;                            \
    for (long it = 0; it < iters; it++) {                                                    \
        _Pragma("GCC unroll 24") for (int i = 0; i < CHAINS; i++) acc[i] =                   \
            MADD(acc[i], m, a);                                                              \
    }                                                                                        \
    float s = 0;                                                                             \
    for (int i = 0; i < CHAINS; i++) s += acc[i][0];                                         \
    return s;

#ifdef FC_HAVE_X86_PATHS
#include <immintrin.h>
#define FC_MADD512(x, m, a) (pv) _mm512_fmadd_ps((__m512)(x), (__m512)(m), (__m512)(a))
#define FC_MADD256(x, m, a) (pv) _mm256_fmadd_ps((__m256)(x), (__m256)(m), (__m256)(a))
FC_TARGET_AVX512 static float fc_probe_avx512(long iters) {
    FC_PROBE_BODY(64, FC_MADD512, FC_PROBE_CHAINS)
}
FC_TARGET_AVX2 static float fc_probe_avx2(long iters) {
    FC_PROBE_BODY(32, FC_MADD256, FC_PROBE_CHAINS_16REGS)
}
#endif
#define FC_MADD_PLAIN(x, m, a) ((x) * (m) + (a))
static float fc_probe_generic(long iters) {
    FC_PROBE_BODY(16, FC_MADD_PLAIN, FC_PROBE_CHAINS_16REGS)
}

/* The probe of one SIMD path: run(iters) runs iters x `chains` vector FMAs of `lanes` float32
 * lanes each on the calling thread. */
typedef struct {
    float (*run)(long iters);
    int lanes, chains;
} fc_probe;

static const fc_probe fc_probes[FC_ISA_COUNT] = {
    [FC_ISA_GENERIC] = {fc_probe_generic, 16 / sizeof(float), FC_PROBE_CHAINS_16REGS},
#ifdef FC_HAVE_X86_PATHS
    [FC_ISA_AVX2] = {fc_probe_avx2, 32 / sizeof(float), FC_PROBE_CHAINS_16REGS},
    [FC_ISA_AVX512] = {fc_probe_avx512, 64 / sizeof(float), FC_PROBE_CHAINS},
#endif
};

/* Flops of one iteration of `probe` on one thread (an FMA is two). */
static inline double fc_probe_flops_per_iter(const fc_probe *probe) {
    return probe->chains * 2.0 * probe->lanes;
}
#endif
