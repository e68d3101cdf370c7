/* bfloat16 for float32 convolutions (precision='bf16', and bfloat16 arrays): the rounding, and the
 * paths that multiply bfloat16.
 *
 * bfloat16 keeps float32's sign and exponent and the top 7 bits of its mantissa, so a float32
 * rounds to it by rounding its bit pattern at bit 16, and every bfloat16 is a float32 exactly.
 * The product of two bfloat16 values has at most 16 significant bits: float32 holds it exactly.
 * A convolution "with bfloat16 math" is therefore defined by its rounded inputs alone: every
 * path multiplies the rounded input and weight exactly and accumulates in float32, in its own
 * order (the error bound of a float32 sum, not bitwise agreement across paths).
 *
 * The paths, lowest first (FC_BF16_LIST; set_bf16_path or FASTCONV_BF16 force a lower one):
 *   portable     the inputs are rounded (fc_bf16_round) where the engine copies them anyway
 *                (the wide buffer of an image, the packed weights), then the float32 kernels
 *                run on them: any CPU, the float32 speed.
 *   avx512_bf16  vdpbf16ps (AVX512-BF16: Intel Cooper Lake and later, AMD Zen 4 and later):
 *                one instruction multiplies 16 pairs of bfloat16 and adds both products to 16
 *                float32 sums, twice the multiply-adds of a float32 FMA (conv_bf16.h). As the
 *                hardware defines it, it treats subnormal inputs as zero and flushes subnormal
 *                results, and its conversion does the same: only values below 2**-126 in
 *                magnitude are affected.
 *   amx          the AMX tiles (Intel Sapphire Rapids and later): TDPBF16PS multiplies a
 *                16 x 32 tile of bfloat16 by a 32 x 16 one into 16 x 16 float32 sums
 *                (conv_amx_tmpl.h), with the same subnormal rule. Linux must grant the
 *                process the tile state first (fc_amx_permitted); where it refuses, the path
 *                is not available.
 * A path runs only where the CPU has its features and the SIMD path in use (set_isa) includes
 * the AVX-512 it builds on: forcing set_isa('avx2') also keeps bfloat16 on the portable path. */
#ifndef FC_BF16_H
#define FC_BF16_H

#include "fc_common.h"

#define FC_FEATURES_AVX512_BF16(F) FC_FEATURES_AVX512(F) F("avx512bf16")
#define FC_FEATURES_AMX(F) FC_FEATURES_AVX512_BF16(F) F("amx-tile") F("amx-bf16")
/* Each path: id, name, the features its code is compiled for, those __builtin_cpu_supports
 * checks (not every compiler knows the AMX ones: fc_cpu_has_amx reads CPUID for them), and the
 * SIMD path it builds on. */
#define FC_BF16_LIST(X)                                                                        \
    X(PORTABLE, "portable", FC_FEATURES_GENERIC, FC_FEATURES_GENERIC, FC_ISA_GENERIC)           \
    X(AVX512_BF16, "avx512_bf16", FC_FEATURES_AVX512_BF16, FC_FEATURES_AVX512_BF16,            \
      FC_ISA_AVX512)                                                                           \
    X(AMX, "amx", FC_FEATURES_AMX, FC_FEATURES_AVX512_BF16, FC_ISA_AVX512)

#define FC_BF16_ID(id, name, features, checked, isa) FC_BF16_##id,
enum { FC_BF16_LIST(FC_BF16_ID) FC_BF16_COUNT };
#undef FC_BF16_ID

#define FC_FEATURE_WORD(f) f " "
#define FC_BF16_INFO(id, name, features, checked, isa) {name, "" features(FC_FEATURE_WORD)},
static const fc_isa_info fc_bf16_paths[FC_BF16_COUNT] = {FC_BF16_LIST(FC_BF16_INFO)};
#undef FC_BF16_INFO
#undef FC_FEATURE_WORD
/* The SIMD path (FC_ISA_*) each bfloat16 path builds on. */
#define FC_BF16_ISA(id, name, features, checked, isa) isa,
static const int fc_bf16_isa[FC_BF16_COUNT] = {FC_BF16_LIST(FC_BF16_ISA)};
#undef FC_BF16_ISA

#ifdef FC_HAVE_X86_PATHS
#define FC_TARGET_AVX512_BF16 FC_TARGET_OF(FC_FEATURES_AVX512_BF16)
#define FC_TARGET_AMX FC_TARGET_OF(FC_FEATURES_AMX)
#endif

/* AMX-TILE and AMX-BF16 (CPUID leaf 7: EDX bits 24 and 22), with the tile state enabled by the
 * OS (XCR0 bits 17 and 18). */
#ifdef FC_HAVE_X86_PATHS
#include <cpuid.h>
static int fc_cpu_has_amx(void) {
    unsigned a, b, c, d, lo, hi;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 24)) || !(d & (1u << 22))) return 0;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & (3u << 17)) == (3u << 17);
}
#else
static int fc_cpu_has_amx(void) { return 0; }
#endif

/* Linux gives a process the AMX tile data (8 KB of state per thread) only on request: a tile
 * instruction before it faults. Asked once; the answer holds for every thread of the process. */
#if defined(FC_HAVE_X86_PATHS) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define FC_ARCH_REQ_XCOMP_PERM 0x1023
#define FC_XFEATURE_XTILEDATA 18
static int fc_amx_permitted(void) {
    static int state = -1;
    if (state < 0)
        state = syscall(SYS_arch_prctl, FC_ARCH_REQ_XCOMP_PERM, FC_XFEATURE_XTILEDATA) == 0;
    return state;
}
#else
static int fc_amx_permitted(void) { return 0; }
#endif

/* The highest bfloat16 path whose every feature the CPU has. */
static inline int fc_bf16_supported(void) {
#ifdef FC_HAVE_X86_PATHS
    __builtin_cpu_init();
#endif
#define FC_BF16_CHECK(id, name, features, checked, isa) 1 checked(FC_CPU_HAS),
    int has[FC_BF16_COUNT] = {FC_BF16_LIST(FC_BF16_CHECK)};
#undef FC_BF16_CHECK
    has[FC_BF16_AMX] = has[FC_BF16_AMX] && fc_cpu_has_amx() && fc_amx_permitted();
    int best = FC_BF16_PORTABLE;
    for (int level = 1; level < FC_BF16_COUNT && has[level]; level++) best = level;
    return best;
}

/* The path asked for (-1: the best), and the one in use: the request capped by the CPU and by
 * the SIMD path in use (fc_bf16_resolve, called whenever either changes). */
static int fc_bf16_requested = -1;
static int fc_bf16_level = FC_BF16_PORTABLE;
/* Tests only: run the AMX code with its model of the tile instructions (conv_amx_tmpl.h) in place
 * of the avx512_bf16 path, on a CPU that has that one. */
static int fc_bf16_amx_model = 0;

static inline int fc_bf16_resolve(void) {
    int level = fc_bf16_supported();
    if (fc_bf16_requested >= 0) level = FC_MIN(level, fc_bf16_requested);
    while (level > FC_BF16_PORTABLE && fc_bf16_isa[level] > fc_isa_level) level--;
    fc_bf16_level = level;
    return level;
}

/* float32 x rounded to the nearest bfloat16, ties to even, as a float32 bit pattern (its low 16
 * bits zero): the rounding of torch's and ml_dtypes' conversions. Infinities stay; a value that
 * rounds past the largest bfloat16 becomes inf; NaN becomes the quiet NaN of its sign. */
static inline uint32_t fc_bf16_bits(uint32_t u) {
    const uint32_t nan = (u & 0x80000000u) | 0x7fc00000u;
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    return (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded; /* a select: the loops vectorise */
}

static inline float fc_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = fc_bf16_bits(u);
    memcpy(&x, &u, sizeof u);
    return x;
}

/* The array conversions are integer arithmetic, the same bits on every path: compiled for AVX2
 * and AVX-512 too, picked by the loader for the CPU (a memory-bound pass, 4 lanes wide on the
 * x86-64 baseline, costs a convolution on the portable bfloat16 path a fifth of its time). */
#if defined(FC_HAVE_X86_PATHS) && defined(__ELF__)
#define FC_BF16_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FC_BF16_CLONES
#endif

/* dst[i] = src[i] rounded to bfloat16 (as float32); dst may be src. */
FC_BF16_CLONES static void fc_bf16_round_f32(const float *src, float *dst, fc_idx n) {
    for (fc_idx i = 0; i < n; i++) dst[i] = fc_bf16_round(src[i]);
}

/* dst[i] = the bfloat16 of src[i] (its 16 bits). */
FC_BF16_CLONES static void fc_bf16_narrow(const float *restrict src, uint16_t *restrict dst,
                                          fc_idx n) {
    for (fc_idx i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, src + i, sizeof u);
        dst[i] = (uint16_t)(fc_bf16_bits(u) >> 16);
    }
}

/* dst[i] = the float32 of bfloat16 src[i] (exact). */
FC_BF16_CLONES static void fc_bf16_widen(const uint16_t *restrict src, float *restrict dst,
                                         fc_idx n) {
    for (fc_idx i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, sizeof u);
    }
}

#endif /* FC_BF16_H */
