/* Fused multiply-adds on the vectors of one ISA instantiation. The including template defines T,
 * VB (vector bytes), VL (lanes), VEC (its vector of T), FN (its name mangler) and FC_TARGET; it
 * includes this once per (T, ISA), hence no include guard.
 *   FN(fma)(a, b, c)   a*b + c, lane by lane, rounded once;
 *   FN(fma1)(s, b, c)  the same with the scalar s in every lane of a.
 *
 * Why explicit: every multiply-add of the kernels goes through these, and the extension is
 * compiled with -ffp-contract=off (setup.py), so the compiler fuses nothing on its own. Each
 * result is then a function of the inputs and of the order of operations written in the kernels
 * only -- the same bits on every SIMD path, every x86-64 CPU and with GCC or clang. (Left to the
 * compiler, `c += a * b` becomes an FMA on the AVX paths and a multiply then an add on the
 * portable one, whose results differ in the last bit, and at overflow in more: 1e300 * 1e300 +
 * -1e300 * 1e300 summed from zero is +inf fused, NaN unfused.)
 *   AVX-512 / AVX2: the FMA intrinsics (the same instructions the contraction gave);
 *   portable path: fc_fma per lane, the C library's fma (where that is inexact, the FMA
 *   instruction or an exact software fma: fc_platform.h). glibc runs the FMA instruction there
 *   on CPUs that have one and an exact software fma on the others: slower than a multiply and an
 *   add, but the same result as the vector paths. */
#define FC_FMA_FN static inline __attribute__((always_inline)) FC_TARGET VEC
#if defined(__x86_64__) && defined(__GNUC__) && VB == 64
FC_FMA_FN FN(fma)(VEC a, VEC b, VEC c) {
    if (sizeof(T) == 4) return (VEC)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
    return (VEC)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
}
FC_FMA_FN FN(fma1)(T s, VEC b, VEC c) {
    if (sizeof(T) == 4) return FN(fma)((VEC)_mm512_set1_ps((float)s), b, c);
    return FN(fma)((VEC)_mm512_set1_pd((double)s), b, c);
}
#elif defined(__x86_64__) && defined(__GNUC__) && VB == 32
FC_FMA_FN FN(fma)(VEC a, VEC b, VEC c) {
    if (sizeof(T) == 4) return (VEC)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
    return (VEC)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
}
FC_FMA_FN FN(fma1)(T s, VEC b, VEC c) {
    if (sizeof(T) == 4) return FN(fma)((VEC)_mm256_set1_ps((float)s), b, c);
    return FN(fma)((VEC)_mm256_set1_pd((double)s), b, c);
}
#else
/* Where fma is a library call (x86-64 without -mfma), each lane's call clobbers every vector
 * register: inlined into the unrolled kernels, the spills around the calls made the portable
 * path 38% of the compiled module, most of it float32's (4 lanes a vector). Its float32 fma is
 * therefore one out-of-line call per vector: the module is 12% smaller and compiles about 10%
 * faster, and the portable path runs as fast. Float64's (2 lanes) stays inline: out of line, its
 * convolutions ran 45% slower. Where fma is an instruction (the compiler's __FP_FAST_FMA, or
 * ACLE's __ARM_FEATURE_FMA on aarch64) both stay inline. */
#if (defined(__FP_FAST_FMA) && defined(__FP_FAST_FMAF)) || defined(__ARM_FEATURE_FMA)
#define FC_FMA_OUT_OF_LINE 0
#else
#define FC_FMA_OUT_OF_LINE (sizeof(T) == 4)
#endif
#define FC_FMA_LANE(a, b, c)                                                                   \
    (sizeof(T) == 4 ? (T)fc_fmaf((float)(a), (float)(b), (float)(c))                           \
                    : (T)fc_fma((double)(a), (double)(b), (double)(c)))
static __attribute__((noinline)) FC_TARGET VEC FN(fma_lanes)(VEC a, VEC b, VEC c) {
    for (int l = 0; l < VL; l++) c[l] = FC_FMA_LANE(a[l], b[l], c[l]);
    return c;
}
FC_FMA_FN FN(fma)(VEC a, VEC b, VEC c) {
    if (FC_FMA_OUT_OF_LINE) return FN(fma_lanes)(a, b, c);
    for (int l = 0; l < VL; l++) c[l] = FC_FMA_LANE(a[l], b[l], c[l]);
    return c;
}
FC_FMA_FN FN(fma1)(T s, VEC b, VEC c) {
    if (FC_FMA_OUT_OF_LINE) {
        VEC a = b;
        for (int l = 0; l < VL; l++) a[l] = s;
        return FN(fma_lanes)(a, b, c);
    }
    for (int l = 0; l < VL; l++) c[l] = FC_FMA_LANE(s, b[l], c[l]);
    return c;
}
#undef FC_FMA_LANE
#undef FC_FMA_OUT_OF_LINE
#endif
#undef FC_FMA_FN
