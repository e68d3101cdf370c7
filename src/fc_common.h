/* fastconv: pieces shared by every kernel -- per-thread workspaces, small helpers, the SIMD
 * paths, the thread count, and the run control of one call. Its state (static) exists once: the
 * whole compiled core is one translation unit (fc_kernels.h, included by src/_kernels.pyx).
 *
 * Per-thread workspaces: each OS thread (OpenMP worker or the calling thread) keeps a few
 * 64-byte-aligned buffers that grow to the largest size it has been asked for and are reused
 * across calls, so a steady training loop allocates (and page-faults) nothing per call. No buffer
 * grows with the image: a pass whose per-image buffer would exceed fc_ws_cap bytes works in row
 * bands (conv_tmpl.h); after every call no thread keeps more than fc_ws_keep_bytes(), and
 * fc_ws_release_all() frees them all (fastconv.release_memory()).
 */
#ifndef FC_COMMON_H
#define FC_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <sched.h>

#include "fc_platform.h"

typedef ptrdiff_t fc_idx;

#define FC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define FC_CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
#define FC_ROUND_UP(a, b) (FC_CEIL_DIV(a, b) * (b))
/* Before a loop over a register block (a trip count that inlining makes a compile-time
 * constant): unroll it fully, so that the block's accumulators live in registers; a block left
 * in memory costs a load and a store per FMA. GCC needs the hint at -O3 (16: more than the
 * largest block's trip count, 12); clang ignores GCC's spelling and needs its own. */
#if defined(__clang__)
#define FC_UNROLL _Pragma("unroll")
#else
#define FC_UNROLL _Pragma("GCC unroll 16")
#endif
/* On a function with a body per constant argument (a switch over inlined bodies): no copy of it
 * per constant a caller passes. GCC's cloning would duplicate every body; clang does not clone. */
#if defined(__clang__)
#define FC_NOCLONE
#else
#define FC_NOCLONE __attribute__((noclone))
#endif
#define FC_CACHE_LINE 64
/* Alignment of every buffer the kernels allocate: a cache line, which is also the widest vector
 * (AVX-512), so that an aligned vector never straddles two lines. */
#define FC_ALIGN FC_CACHE_LINE
_Static_assert(FC_ALIGN == FC_HEAP_ALIGN, "fc_malloc_aligned gives FC_ALIGN");
#define FC_CAT2(a, b) a##_##b
#define FC_CAT(a, b) FC_CAT2(a, b)

enum { FC_WS_SLOTS = 4 };
/* A workspace is busy while a work item runs on it (fc_ws_enter .. fc_ws_leave) and locked while
 * another thread frees its buffers; only an idle one may be locked. */
enum { FC_WS_IDLE = 0, FC_WS_BUSY = 1, FC_WS_LOCKED = 2 };

typedef struct fc_workspace {
    void *ptr[FC_WS_SLOTS];
    size_t size[FC_WS_SLOTS];
    /* Which (call, image, group) the input buffer currently holds, so consecutive work items of
     * one thread on the same image do not rebuild it. */
    uint64_t cached_call;
    fc_idx cached_key;
    int state;
    int release_pending; /* a release found it busy: its owner frees it when it next enters */
    int64_t held;        /* sum of size[], readable by other threads */
    struct fc_workspace *prev, *next; /* the registry of every thread's workspace */
} fc_workspace;

static uint64_t fc_call_counter = 0;
/* Bytes held by all threads' workspaces, and by the current call's shared plan buffers (packed
 * weights, offsets, partial sums): what the benchmark reports as workspace. */
static int64_t fc_ws_bytes_total = 0;
static int64_t fc_plan_bytes_peak = 0;
static int64_t fc_ws_bytes_peak = 0; /* the most fc_ws_bytes_total has been since its reset */

/* A pass whose buffer for one image (wide input, padded grad_output, transposed grad_output)
 * would exceed the cap works in row bands of about FC_WS_BAND_SHARE of it (more when the rows a
 * band's taps reach beyond it would be a large part of it; see fc_band_rows_for). 16 MiB keeps
 * every layer of the common ImageNet networks at 224 x 224 in float32 (VGG's 64-channel layers
 * have the largest buffers) on the whole-image path, while a band (2 MiB) is built and consumed
 * in the last-level cache. */
#define FC_WS_CAP_DEFAULT ((int64_t)16 << 20)
enum { FC_WS_BAND_SHARE = 8 };
/* After a call no thread keeps more than this many caps (48 MiB by default): the two large
 * buffers of the whole-image path, each up to 1.25 times the cap (FC_WS_GROWN), and
 * the small ones, so trimming never frees what a steady loop of ordinary layers reuses. */
enum { FC_WS_KEEP_CAPS = 3 };
static int64_t fc_ws_cap = FC_WS_CAP_DEFAULT;
static inline int64_t fc_ws_cap_bytes(void) {
    return __atomic_load_n(&fc_ws_cap, __ATOMIC_RELAXED);
}
static inline int64_t fc_ws_band_bytes(void) { return fc_ws_cap_bytes() / FC_WS_BAND_SHARE; }
static inline int64_t fc_ws_keep_bytes(void) { return FC_WS_KEEP_CAPS * fc_ws_cap_bytes(); }

/* The workspace lives as long as its thread: a pthread key's destructor frees it when the thread
 * exits (a short-lived Python thread must not leak its buffers); the __thread pointer is only a
 * fast path to it. Every workspace is also linked into a registry, so that one thread can free
 * the idle buffers of all (the workers of OpenMP teams included). */
static pthread_key_t fc_ws_key;
static pthread_once_t fc_ws_key_once = PTHREAD_ONCE_INIT;
static __thread fc_workspace *fc_tls_ws = NULL;
static pthread_mutex_t fc_ws_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static fc_workspace *fc_ws_registry = NULL;

/* Free slot i of ws (its owner, or a thread that holds it locked). */
static size_t fc_ws_free_slot(fc_workspace *ws, int i) {
    size_t bytes = ws->size[i];
    fc_free(ws->ptr[i]);
    ws->ptr[i] = NULL;
    ws->size[i] = 0;
    __atomic_add_fetch(&ws->held, -(int64_t)bytes, __ATOMIC_RELAXED);
    __atomic_add_fetch(&fc_ws_bytes_total, -(int64_t)bytes, __ATOMIC_RELAXED);
    ws->cached_call = 0;
    return bytes;
}

/* Free the largest slots of ws until it holds at most `keep` bytes; returns the bytes freed. */
static size_t fc_ws_shrink(fc_workspace *ws, int64_t keep) {
    size_t freed = 0;
    while (__atomic_load_n(&ws->held, __ATOMIC_RELAXED) > keep) {
        int big = 0;
        for (int i = 1; i < FC_WS_SLOTS; i++)
            if (ws->size[i] > ws->size[big]) big = i;
        if (!ws->size[big]) break;
        freed += fc_ws_free_slot(ws, big);
    }
    return freed;
}

static void fc_ws_destroy(void *p) {
    fc_workspace *ws = (fc_workspace *)p;
    pthread_mutex_lock(&fc_ws_registry_lock);
    if (ws->prev) ws->prev->next = ws->next;
    else fc_ws_registry = ws->next;
    if (ws->next) ws->next->prev = ws->prev;
    pthread_mutex_unlock(&fc_ws_registry_lock);
    fc_ws_shrink(ws, 0);
    fc_free(ws);
}

/* A fork while another thread holds the registry lock would leave it locked in the child. */
static void fc_ws_registry_acquire(void) { pthread_mutex_lock(&fc_ws_registry_lock); }
static void fc_ws_registry_release(void) { pthread_mutex_unlock(&fc_ws_registry_lock); }

static void fc_ws_key_create(void) {
    pthread_key_create(&fc_ws_key, fc_ws_destroy);
    pthread_atfork(fc_ws_registry_acquire, fc_ws_registry_release, fc_ws_registry_release);
}

/* This thread's workspace (NULL if out of memory). */
static inline fc_workspace *fc_ws(void) {
    fc_workspace *ws = fc_tls_ws;
    if (!ws) {
        pthread_once(&fc_ws_key_once, fc_ws_key_create);
        ws = (fc_workspace *)fc_calloc(1, sizeof *ws);
        if (!ws) return NULL;
        pthread_mutex_lock(&fc_ws_registry_lock);
        ws->next = fc_ws_registry;
        if (fc_ws_registry) fc_ws_registry->prev = ws;
        fc_ws_registry = ws;
        pthread_mutex_unlock(&fc_ws_registry_lock);
        pthread_setspecific(fc_ws_key, ws);
        fc_tls_ws = ws;
    }
    return ws;
}

/* Mark this thread's workspace busy for one work item (NULL if out of memory): no other thread
 * frees its buffers until fc_ws_leave. Waits while another thread is freeing them, and frees
 * them first if a release found them busy. */
static inline fc_workspace *fc_ws_enter(void) {
    fc_workspace *ws = fc_ws();
    if (!ws) return NULL;
    int expected = FC_WS_IDLE;
    while (!__atomic_compare_exchange_n(&ws->state, &expected, FC_WS_BUSY, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
        expected = FC_WS_IDLE;
        sched_yield(); /* a few fc_free() calls */
    }
    if (__atomic_load_n(&ws->release_pending, __ATOMIC_RELAXED) &&
        __atomic_exchange_n(&ws->release_pending, 0, __ATOMIC_RELAXED))
        fc_ws_shrink(ws, 0);
    return ws;
}

static inline void fc_ws_leave(fc_workspace *ws) {
    if (ws) __atomic_store_n(&ws->state, FC_WS_IDLE, __ATOMIC_RELEASE);
}

/* Free the buffers of every idle workspace holding more than `keep` bytes, down to `keep` (0:
 * all of them); a busy one (a call running in another thread) is left alone, or with `defer`
 * is marked to free its buffers at its next work item. Returns the bytes freed now. */
static size_t fc_ws_shrink_all(int64_t keep, int defer) {
    size_t freed = 0;
    if (__atomic_load_n(&fc_ws_bytes_total, __ATOMIC_RELAXED) <= keep) return 0;
    pthread_mutex_lock(&fc_ws_registry_lock);
    for (fc_workspace *ws = fc_ws_registry; ws; ws = ws->next) {
        if (__atomic_load_n(&ws->held, __ATOMIC_RELAXED) <= keep) continue;
        int expected = FC_WS_IDLE;
        if (__atomic_compare_exchange_n(&ws->state, &expected, FC_WS_LOCKED, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
            freed += fc_ws_shrink(ws, keep);
            __atomic_store_n(&ws->state, FC_WS_IDLE, __ATOMIC_RELEASE);
        } else if (defer) {
            __atomic_store_n(&ws->release_pending, 1, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&fc_ws_registry_lock);
    return freed;
}

/* After a call (on the calling thread, once its parallel loops are done): no thread keeps more
 * than fc_ws_keep_bytes(). */
static inline void fc_ws_trim(void) { fc_ws_shrink_all(fc_ws_keep_bytes(), 0); }

/* Every thread's buffers: the bytes freed now (a busy workspace frees its own at its next item). */
static inline size_t fc_ws_release_all(void) { return fc_ws_shrink_all(0, 1); }

/* The bytes held by each registered workspace (at most `max` of them); returns their number. */
static int fc_ws_list(int64_t *held, int max) {
    int n = 0;
    pthread_mutex_lock(&fc_ws_registry_lock);
    for (fc_workspace *ws = fc_ws_registry; ws; ws = ws->next, n++)
        if (n < max) held[n] = __atomic_load_n(&ws->held, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&fc_ws_registry_lock);
    return n;
}

/* Set the cap (bytes; see fc_ws_cap), returning the previous one. */
static inline int64_t fc_ws_set_cap(int64_t bytes) {
    return __atomic_exchange_n(&fc_ws_cap, bytes, __ATOMIC_RELAXED);
}

/* A buffer that grows is allocated a quarter larger than asked, in whole pages, so that requests
 * growing a little at a time (one more image row, one more channel) do not reallocate it each
 * time. */
#define FC_WS_GROWN(bytes) FC_ROUND_UP((bytes) + (bytes) / 4, FC_PAGE_BYTES)
#define FC_PAGE_BYTES 4096

/* A buffer of at least `bytes` in slot `slot` of this thread's workspace (NULL if out of memory).
 * Only between fc_ws_enter and fc_ws_leave. */
static inline void *fc_ws_get(int slot, size_t bytes) {
    fc_workspace *ws = fc_ws();
    if (!ws) return NULL;
    if (ws->size[slot] < bytes) {
        size_t want = FC_WS_GROWN(bytes);
        fc_ws_free_slot(ws, slot);
        void *p = fc_malloc_aligned(want);
        if (!p) return NULL;
        ws->ptr[slot] = p;
        ws->size[slot] = want;
        __atomic_add_fetch(&ws->held, (int64_t)want, __ATOMIC_RELAXED);
        int64_t total = __atomic_add_fetch(&fc_ws_bytes_total, (int64_t)want, __ATOMIC_RELAXED);
        int64_t peak = __atomic_load_n(&fc_ws_bytes_peak, __ATOMIC_RELAXED);
        while (total > peak && !__atomic_compare_exchange_n(&fc_ws_bytes_peak, &peak, total, 1,
                                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
        ws->cached_call = 0;
    }
    return ws->ptr[slot];
}

/* The GEMM's row blocks: M rows in blocks of MR, except that a remainder under MR/2 is merged
 * with the block before it and the two split evenly (64 = 5*12 + 4 runs as 4*12 + 8 + 8): a
 * block of a few rows has too few accumulators to hide the FMA latency. Block mb starts at
 * row *start and has *rows rows. */
static inline void fc_row_block(fc_idx M, int MR, fc_idx mb, fc_idx *start, int *rows) {
    fc_idx nmb = (M + MR - 1) / MR, rem = M % MR;
    if (rem && 2 * rem < MR && nmb >= 2 && mb >= nmb - 2) {
        fc_idx base = (nmb - 2) * MR, first = (MR + rem + 1) / 2;
        *start = mb == nmb - 2 ? base : base + first;
        *rows = (int)(mb == nmb - 2 ? first : MR + rem - first);
        return;
    }
    *start = mb * MR;
    *rows = (int)(M - mb * MR < MR ? M - mb * MR : MR);
}

/* The block holding row k, and k's lane in it. */
static inline fc_idx fc_row_slot(fc_idx M, int MR, fc_idx k, int *lane) {
    fc_idx mb = k / MR, start;
    int rows;
    for (mb = mb > 0 ? mb - 1 : 0;; mb++) { /* balancing moves rows by less than one block */
        fc_row_block(M, MR, mb, &start, &rows);
        if (k < start + rows) break;
    }
    *lane = (int)(k - start);
    return mb;
}

/* Software prefetch of one row of `bytes` bytes at p, a line at a time. The input copies
 * prefetch the row fc_prefetch_ahead(row bytes) rows ahead of the one they copy: about
 * FC_PREFETCH_AHEAD_BYTES, and at least FC_PREFETCH_AHEAD_ROWS rows, keep more misses in flight
 * than the hardware prefetcher alone does on an input read from DRAM once. */
#define FC_PREFETCH_AHEAD_BYTES 2048
#define FC_PREFETCH_AHEAD_ROWS 4
static inline void fc_prefetch_row(const void *p, fc_idx bytes) {
    for (fc_idx b = 0; b < bytes; b += FC_CACHE_LINE)
        __builtin_prefetch((const char *)p + b, 0 /* read */, 3 /* keep in every level */);
}
static inline fc_idx fc_prefetch_ahead(fc_idx row_bytes) {
    return FC_MAX((fc_idx)FC_PREFETCH_AHEAD_ROWS,
                  FC_PREFETCH_AHEAD_BYTES / FC_MAX((fc_idx)1, row_bytes));
}

static inline uint64_t fc_next_call_id(void) {
    return __atomic_add_fetch(&fc_call_counter, 1, __ATOMIC_RELAXED);
}

/* A plan buffer of `bytes` whose every element is written before it is read (the packed
 * weights: a large layer's are megabytes, which zeroing would cost a pass over on every call).
 * At least one line, so that 0 bytes is not an error. */
static inline void *fc_aligned_alloc(size_t bytes) {
    if (bytes == 0) bytes = FC_ALIGN;
    __atomic_add_fetch(&fc_plan_bytes_peak, (int64_t)bytes, __ATOMIC_RELAXED);
    return fc_malloc_aligned(FC_ROUND_UP(bytes, FC_ALIGN));
}

/* A zeroed plan buffer of `bytes` (at least one line, so that 0 bytes is not an error). */
static inline void *fc_aligned_calloc(size_t bytes) {
    void *p = fc_aligned_alloc(bytes);
    return p ? memset(p, 0, bytes) : NULL;
}

/* ---- the SIMD paths --------------------------------------------------------------------------
 * FC_ISA_LIST is the one table of the paths, lowest first: each path's id, its name (FASTCONV_ISA,
 * set_isa) and the CPU features its code is compiled for, as GCC and /proc/cpuinfo spell them.
 * The rest is derived from it:
 *  - the `target` attribute of every function of a path (FC_TARGET_AVX2, FC_TARGET_AVX512: used by
 *    conv_dtype.h, pool_dtype.h and fma_probe.h), so no path is compiled for a feature that the
 *    run-time check does not test;
 *  - the run-time check (fc_isa_supported): a path runs only on a CPU with every one of its
 *    features, as NumPy's dispatch checks (__builtin_cpu_supports also reports a feature absent
 *    when the OS does not save its registers, XCR0);
 *  - the names and feature strings the Python layer reports (fc_isas).
 * A path's features include those of every path below it, so a supported level implies the ones
 * below. The generic path is portable C (SSE2, the x86-64 baseline, on x86-64). The lists are of
 * string literals because __builtin_cpu_supports and `target` take nothing else. fc_kernels.h
 * resolves the level chosen into the table of functions that both engines call. */
#define FC_FEATURES_GENERIC(F)
#define FC_FEATURES_AVX2(F) F("avx2") F("fma")
#define FC_FEATURES_AVX512(F) \
    FC_FEATURES_AVX2(F) F("avx512f") F("avx512vl") F("avx512dq") F("avx512bw")
#define FC_ISA_LIST(X)                         \
    X(GENERIC, "generic", FC_FEATURES_GENERIC) \
    X(AVX2, "avx2", FC_FEATURES_AVX2)          \
    X(AVX512, "avx512", FC_FEATURES_AVX512)

#define FC_ISA_ID(id, name, features) FC_ISA_##id,
enum { FC_ISA_LIST(FC_ISA_ID) FC_ISA_COUNT };
#undef FC_ISA_ID

typedef struct {
    const char *name;     /* FASTCONV_ISA's spelling */
    const char *features; /* space-separated */
} fc_isa_info;
#define FC_FEATURE_WORD(f) f " "
#define FC_ISA_INFO(id, name, features) {name, "" features(FC_FEATURE_WORD)},
static const fc_isa_info fc_isas[FC_ISA_COUNT] = {FC_ISA_LIST(FC_ISA_INFO)};
#undef FC_ISA_INFO
#undef FC_FEATURE_WORD

#if defined(__x86_64__) && defined(__GNUC__)
#define FC_HAVE_X86_PATHS 1
/* "sse2" (part of x86-64 anyway) heads the string so that every listed feature follows a comma
 * (clang ignores a target string with an empty item) */
#define FC_TARGET_FEATURE(f) "," f
#define FC_TARGET_OF(features) __attribute__((target("sse2" features(FC_TARGET_FEATURE))))
#define FC_TARGET_AVX2 FC_TARGET_OF(FC_FEATURES_AVX2)
#define FC_TARGET_AVX512 FC_TARGET_OF(FC_FEATURES_AVX512)
#define FC_CPU_HAS(f) &&__builtin_cpu_supports(f)
#else
#define FC_CPU_HAS(f) &&0 /* only the generic path is compiled */
#endif

/* The SIMD path in use (fc_kernels.h's fc_set_isa sets it; conv_tmpl.h builds its ISA table
 * from it). */
static int fc_isa_level = FC_ISA_GENERIC;

/* The highest level whose every feature the CPU has. */
static inline int fc_isa_supported(void) {
#ifdef FC_HAVE_X86_PATHS
    __builtin_cpu_init();
#endif
#define FC_ISA_CHECK(id, name, features) 1 features(FC_CPU_HAS),
    const int has[FC_ISA_COUNT] = {FC_ISA_LIST(FC_ISA_CHECK)};
#undef FC_ISA_CHECK
    int best = FC_ISA_GENERIC;
    for (int level = 1; level < FC_ISA_COUNT && has[level]; level++) best = level;
    return best;
}

/* The portable path's fma where the C library's is inexact (fc_platform.h): the FMA
 * instruction of the AVX2 path where the CPU has it, else the exact software one. */
#ifdef FC_LIBM_FMA_INEXACT
#include <immintrin.h>
FC_TARGET_AVX2 static double fc_fma_insn(double x, double y, double z) {
    return _mm_cvtsd_f64(_mm_fmadd_sd(_mm_set_sd(x), _mm_set_sd(y), _mm_set_sd(z)));
}
FC_TARGET_AVX2 static float fc_fmaf_insn(float x, float y, float z) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(x), _mm_set_ss(y), _mm_set_ss(z)));
}
static int fc_cpu_fma = -1; /* set once; threads that race set the same value */
static inline int fc_have_fma_insn(void) {
    if (fc_cpu_fma < 0) fc_cpu_fma = fc_isa_supported() >= FC_ISA_AVX2;
    return fc_cpu_fma;
}
static inline double fc_fma(double x, double y, double z) {
    return fc_have_fma_insn() ? fc_fma_insn(x, y, z) : fc_fma_soft(x, y, z);
}
static inline float fc_fmaf(float x, float y, float z) {
    return fc_have_fma_insn() ? fc_fmaf_insn(x, y, z) : fc_fmaf_soft(x, y, z);
}
#endif

/* ---- OpenMP shims: the extension also builds (single-threaded) without OpenMP ---- */
/* The thread count: the process-wide value of set_num_threads() (0 = not set), capped by the
 * calling thread's OpenMP setting, which OMP_NUM_THREADS and threadpoolctl control. A global,
 * because omp_set_num_threads() alone would only reach the Python thread that called it. */
static int fc_num_threads = 0;
/* In a forked child, the thread that called fork() inherits libgomp's bookkeeping of a worker
 * pool whose threads were not copied: a parallel region of more than one thread on it would wait
 * for them forever (libgomp has no fork handler). That thread runs the kernels on one thread. */
static int fc_forked = 0;
static pthread_t fc_fork_thread;
static void fc_after_fork_in_child(void) {
    fc_fork_thread = pthread_self();
    fc_forked = 1;
}
static inline void fc_register_fork_handler(void) {
    pthread_atfork(NULL, NULL, fc_after_fork_in_child);
}
/* The largest team a kernel asks for: FC_THREADS_MAX, or the number of processors if that is
 * more, and never more than OpenMP's thread limit (OMP_THREAD_LIMIT). Larger requests (through
 * set_num_threads, OMP_NUM_THREADS or threadpoolctl) are capped to it: libgomp reserves room on
 * the calling thread's stack for every worker it starts (100000 threads overflow an 8 MiB stack:
 * a segfault) and ends the process when the OS refuses a thread; far below those limits, more
 * threads than cores only add switching. fc_threads_init sets it once, at import. */
#define FC_THREADS_MAX 1024
static int fc_thread_cap = FC_THREADS_MAX;
#ifdef _OPENMP
#include <omp.h>
static inline void fc_threads_init(void) {
    int cap = FC_MAX(FC_THREADS_MAX, omp_get_num_procs()), limit = omp_get_thread_limit();
    fc_thread_cap = FC_MAX(1, FC_MIN(cap, limit));
}
static inline int fc_get_max_threads(void) {
    if (fc_forked && pthread_equal(pthread_self(), fc_fork_thread)) return 1;
    int m = FC_MIN(omp_get_max_threads(), fc_thread_cap);
    int n = __atomic_load_n(&fc_num_threads, __ATOMIC_RELAXED);
    return n > 0 && n < m ? n : m;
}
static inline void fc_set_num_threads(int n) {
    n = FC_MAX(1, FC_MIN(n, fc_thread_cap));
    __atomic_store_n(&fc_num_threads, n, __ATOMIC_RELAXED);
    omp_set_num_threads(n); /* lets this thread go above the default, e.g. to oversubscribe */
}
static inline int fc_have_openmp(void) { return 1; }
#else
static inline void fc_threads_init(void) { fc_thread_cap = 1; }
static inline int fc_get_max_threads(void) { return 1; }
static inline void fc_set_num_threads(int n) { (void)n; }
static inline int fc_have_openmp(void) { return 0; }
#endif

/* ---- one kernel call: floating-point mode, failures, interruption -----------------------------
 * An fc_run is what the threads of one call share besides the job (the run loop, `_run` in
 * src/_run_control.pxi, uses it):
 *  - the floating-point mode (fastconv.set_flush_denormal): every thread sets the FTZ and DAZ bits
 *    of its MXCSR as the call asks when it joins the call's parallel region, and puts back its
 *    own when it leaves, so the OpenMP workers (they persist between calls) and the caller come
 *    out as they went in. The bits are set even when off: a thread with FTZ left on by another
 *    library could otherwise make a result depend on which thread ran which item. Only these two
 *    bits are touched (the exception flags stay as the arithmetic left them);
 *  - failures: the first one (out of memory, or an exception raised by a signal handler) is
 *    recorded, and every thread then skips the items it has not started;
 *  - interruption: when the caller is Python's main thread (the only one that runs signal
 *    handlers), it checks for pending signals between its own items, every FC_POLL_SECONDS:
 *    check_signals (from the Cython layer) takes the GIL and runs the handlers, so Ctrl-C raises
 *    KeyboardInterrupt within about one work item. The other threads never wait for it, a call
 *    shorter than FC_POLL_SECONDS never takes the GIL, and as items are independent a skipped
 *    item cannot change a result -- which is thrown away anyway, as the call then raises. */
#define FC_POLL_SECONDS 0.02
enum { FC_RUN_NOMEM = 1, FC_RUN_RAISED = 2 };
enum { FC_MXCSR_DAZ = 1 << 6, FC_MXCSR_FTZ = 1 << 15, FC_FP_FLUSH = FC_MXCSR_FTZ | FC_MXCSR_DAZ };

#if defined(__x86_64__) && defined(__GNUC__)
#include <xmmintrin.h>
static inline unsigned fc_csr_get(void) { return _mm_getcsr(); }
static inline void fc_csr_set(unsigned csr) { _mm_setcsr(csr); }
/* DAZ is missing on the first x86-64 CPUs, where setting it faults: FXSAVE's MXCSR_MASK says
 * (a zero mask means the default one, without DAZ). The FXSAVE area is 512 bytes, 16-aligned,
 * with MXCSR_MASK at byte 28 (Intel SDM, FXSAVE). */
enum { FC_FXSAVE_BYTES = 512, FC_FXSAVE_MXCSR_MASK = 28 };
#define FC_MXCSR_MASK_DEFAULT 0xFFBFu
static inline int fc_flush_supported(void) {
    unsigned char area[FC_FXSAVE_BYTES] __attribute__((aligned(16)));
    uint32_t mask;
    memset(area, 0, sizeof area);
    __asm__ volatile("fxsave %0" : "=m"(area));
    memcpy(&mask, area + FC_FXSAVE_MXCSR_MASK, sizeof mask);
    return ((mask ? mask : FC_MXCSR_MASK_DEFAULT) & FC_MXCSR_DAZ) != 0;
}
#else /* no MXCSR: the mode is a no-op (set_flush_denormal returns False) */
static inline unsigned fc_csr_get(void) { return 0; }
static inline void fc_csr_set(unsigned csr) { (void)csr; }
static inline int fc_flush_supported(void) { return 0; }
#endif

/* Set this thread's FTZ/DAZ bits to `mode` (0 or FC_FP_FLUSH); returns the bits it had. */
static inline unsigned fc_fp_mode(unsigned mode) {
    unsigned csr = fc_csr_get(), old = csr & FC_FP_FLUSH;
    if (old != mode) fc_csr_set((csr & ~(unsigned)FC_FP_FLUSH) | mode);
    return old;
}

typedef struct {
    int (*check_signals)(void); /* nonzero: a signal handler raised (the exception is set) */
    int poll;                   /* the caller checks for signals */
    pthread_t caller;
    unsigned mode, caller_mode; /* FTZ/DAZ bits of the call; the caller's own */
    int state;                  /* FC_RUN_* bits, set atomically by any thread */
    double next, last;          /* caller only: time of the next check, of the last clock read */
    long every, countdown;      /* caller only: its items between two clock reads */
} fc_run;

static inline double fc_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* flush: set_flush_denormal's setting (only ever on where fc_flush_supported); poll: the caller
 * is Python's main thread. */
static inline void fc_run_init(fc_run *r, int flush, int poll, int (*check_signals)(void)) {
    r->check_signals = check_signals;
    r->poll = poll && check_signals;
    r->caller = pthread_self();
    r->mode = flush ? FC_FP_FLUSH : 0;
    r->caller_mode = fc_csr_get() & FC_FP_FLUSH;
    r->state = 0;
    r->every = r->countdown = 1;
    r->last = r->poll ? fc_monotonic() : 0;
    r->next = r->last + FC_POLL_SECONDS;
}

/* Every thread, on joining / leaving the call's parallel region (leave gets enter's value). */
static inline unsigned fc_run_enter(const fc_run *r) { return fc_fp_mode(r->mode); }
static inline void fc_run_leave(unsigned saved) { fc_fp_mode(saved); }

static inline int fc_run_state(const fc_run *r) {
    return __atomic_load_n(&r->state, __ATOMIC_RELAXED);
}
static inline int fc_run_stopped(const fc_run *r) { return fc_run_state(r) != 0; }

/* The caller, now and then: read the clock about every FC_CLOCK_SECONDS of its items (they last
 * from a microsecond to many milliseconds; the number of items between two reads adapts, up to
 * FC_CLOCK_ITEMS_MAX), and every FC_POLL_SECONDS run Python's signal handlers, in the caller's
 * own floating-point mode. */
#define FC_CLOCK_SECONDS 1e-3
#define FC_CLOCK_ITEMS_MAX 4096L
static void fc_run_poll(fc_run *r) {
    double now = fc_monotonic(), dt = now - r->last;
    r->last = now;
    if (dt < FC_CLOCK_SECONDS / 2) r->every = FC_MIN(2 * r->every, FC_CLOCK_ITEMS_MAX);
    else if (dt > 2 * FC_CLOCK_SECONDS)
        r->every = FC_MAX(1L, (long)((double)r->every * FC_CLOCK_SECONDS / dt));
    r->countdown = r->every;
    if (now < r->next) return;
    unsigned mode = fc_fp_mode(r->caller_mode);
    int raised = r->check_signals();
    fc_fp_mode(mode);
    r->next = fc_monotonic() + FC_POLL_SECONDS;
    if (raised) __atomic_or_fetch(&r->state, FC_RUN_RAISED, __ATOMIC_RELAXED);
}

/* Every thread, after each item (status: the item's, nonzero when out of memory). */
static inline void fc_run_done(fc_run *r, int status) {
    if (status != 0) __atomic_or_fetch(&r->state, FC_RUN_NOMEM, __ATOMIC_RELAXED);
    else if (r->poll && pthread_equal(pthread_self(), r->caller) && --r->countdown <= 0)
        fc_run_poll(r);
}


/* ---- one kernel call as the run loop (src/_run_control.pxi) sees it --------------------------
 * The job of either engine: `prepare` plans it for `nthreads` threads and fills its schedule,
 * `pre_item` runs one of the preparation items (a large convolution's packing of its weights),
 * which all run before any item, `item` runs one item (in any order, on any thread),
 * `reduce_item` one of the reduction items, which run once every item is done, and `finish`
 * frees what `prepare` allocated, whether it succeeded or not. Each returns 0, or -1 when out
 * of memory. */
typedef struct {
    fc_idx npre, nitems, nreduce; /* preparation, work and reduction items (0: none) */
    fc_idx chunk;                 /* >= 1: consecutive items a thread takes at once */
} fc_schedule;

/* For the tasks without preparation or reduction items. */
static inline int fc_task_no_items(void *job, fc_idx i) {
    (void)job;
    (void)i;
    return 0;
}

typedef struct {
    int (*prepare)(void *job, int nthreads, fc_schedule *s);
    int (*pre_item)(void *job, fc_idx i);
    int (*item)(void *job, fc_idx i);
    int (*reduce_item)(void *job, fc_idx i);
    void (*finish)(void *job);
} fc_task;

#endif
