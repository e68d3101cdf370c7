/* What differs between the C libraries the compiled core builds against: its heap, and fma.
 *
 * The heap. glibc and macOS free a posix_memalign'd block with free(), but Windows' C runtimes
 * have no posix_memalign and free an aligned block only with _aligned_free; a block from malloc
 * must not go there. Rather than track which of the two each pointer came from, every block of
 * the core comes from these functions and goes back through fc_free: on Windows all of them are
 * _aligned_malloc'd, at one alignment (_aligned_realloc may not change a block's alignment).
 * tests/test_build.py checks that no other allocator is called in src/.
 *
 * fma. The portable path multiplies and adds with the C library's fma (fc_fma.h), which must
 * round once, as the FMA instruction of the vector paths does, for every path to give the same
 * bits. MinGW-w64's fma and fmaf do not (a quarter of random operands differ in the last bit):
 * there fc_fma and fc_fmaf (fc_common.h) run the instruction where the CPU has it, else the
 * exact software ones below.
 *
 * The rest of what the core uses from the OS (pthreads, sched_yield) Windows builds get from
 * MinGW-w64's winpthreads, with which its GCC is built (pyproject.toml, [tool.cibuildwheel]).
 */
#ifndef FC_PLATFORM_H
#define FC_PLATFORM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The alignment of fc_malloc_aligned, and of every block on Windows: a cache line, which is
 * also the widest vector (AVX-512). */
#define FC_HEAP_ALIGN 64

#if defined(_WIN32)
#include <malloc.h>

static inline void *fc_malloc(size_t bytes) {
    return _aligned_malloc(bytes ? bytes : 1, FC_HEAP_ALIGN);
}

static inline void *fc_calloc(size_t nelem, size_t elsize) {
    if (elsize && nelem > SIZE_MAX / elsize) return NULL;
    void *p = fc_malloc(nelem * elsize);
    if (p) memset(p, 0, nelem * elsize);
    return p;
}

static inline void *fc_realloc(void *p, size_t bytes) {
    return _aligned_realloc(p, bytes ? bytes : 1, FC_HEAP_ALIGN);
}

static inline void fc_free(void *p) { _aligned_free(p); }

static inline void *fc_malloc_aligned(size_t bytes) { return fc_malloc(bytes); }

#else

static inline void *fc_malloc(size_t bytes) { return malloc(bytes); }
static inline void *fc_calloc(size_t nelem, size_t elsize) { return calloc(nelem, elsize); }
static inline void *fc_realloc(void *p, size_t bytes) { return realloc(p, bytes); }
static inline void fc_free(void *p) { free(p); }

/* A block of at least one byte aligned to FC_HEAP_ALIGN, or NULL. */
static inline void *fc_malloc_aligned(size_t bytes) {
    void *p = NULL;
    return posix_memalign(&p, FC_HEAP_ALIGN, bytes ? bytes : 1) == 0 ? p : NULL;
}

#endif

/* x * y + z rounded once, in software (tests/engine_smoke.c holds them to the C library's on every
 * platform). The sum of an exact product and z is rounded to odd at a precision at least two bits
 * wider than the result's: rounding that to nearest is then correct (Boldo and Melquiond,
 * "Emulation of FMA and correctly rounded sums", 2008). Knuth's TwoSum gives the sum's rounding
 * error e exactly; rounded to nearest, s with e != 0 becomes odd by moving one unit in its last
 * place towards e when its last bit is even. */
#define FC_ROUND_TO_ODD(s, e, INT)                                                        \
    do {                                                                                  \
        INT bits_;                                                                        \
        memcpy(&bits_, &(s), sizeof bits_);                                               \
        if ((e) != 0 && !(bits_ & 1)) {                                                   \
            bits_ += ((e) > 0) == ((s) > 0) ? 1 : -1; /* away from / towards zero */      \
            memcpy(&(s), &bits_, sizeof bits_);                                           \
        }                                                                                 \
    } while (0)

/* float: the product is exact in double (48 bits of 53), the double sum overflows never. */
static inline float fc_fmaf_soft(float x, float y, float z) {
    double p = (double)x * y, s = p + z;
    if (!(s - s == 0)) return (float)s; /* inf or NaN */
    double bp = s - z, e = (p - bp) + (z - (s - bp));
    FC_ROUND_TO_ODD(s, e, uint64_t);
    return (float)s;
}

#if defined(__SIZEOF_FLOAT128__) && defined(__SIZEOF_INT128__)
#define FC_HAVE_SOFT_FMA 1
/* double: the product is exact in binary128 (106 bits of 113), whose range no product or sum of
 * doubles leaves. */
static inline double fc_fma_soft(double x, double y, double z) {
    __float128 p = (__float128)x * y, s = p + z;
    if (!(s - s == 0)) return (double)s;
    __float128 bp = s - z, e = (p - bp) + (z - (s - bp));
    FC_ROUND_TO_ODD(s, e, unsigned __int128);
    return (double)s;
}
#endif

#if defined(__MINGW32__) && defined(FC_HAVE_SOFT_FMA)
#define FC_LIBM_FMA_INEXACT 1 /* fc_common.h then defines fc_fma and fc_fmaf */
#else
static inline double fc_fma(double x, double y, double z) { return __builtin_fma(x, y, z); }
static inline float fc_fmaf(float x, float y, float z) { return __builtin_fmaf(x, y, z); }
#endif

#endif /* FC_PLATFORM_H */
