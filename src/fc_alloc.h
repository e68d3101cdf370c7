/* A NumPy memory handler that recycles large output buffers.
 *
 * glibc returns every block above its mmap threshold (at most 32 MiB) to the OS on free, so a
 * large output allocated on every call pays for the OS to zero all its pages again, which can
 * take as long as the kernel that fills it. fastconv allocates its large outputs through this
 * handler: a freed block of at least FC_CACHE_MIN bytes is kept (up to fc_cache_limit bytes in
 * FC_CACHE_SLOTS blocks, the oldest evicted first) and handed out again for a request of the same
 * size or slightly less.
 * Everything else is plain malloc/calloc/realloc/free, so any block can be freed or resized by
 * NumPy as usual. Only arrays that fastconv itself allocates use it.
 */
#ifndef FC_ALLOC_H
#define FC_ALLOC_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fc_platform.h"

/* Blocks kept at most: a network's few output sizes of a training step. */
enum { FC_CACHE_SLOTS = 8 };
/* Smaller blocks come from glibc's arenas, which already reuse them without page faults. */
#define FC_CACHE_MIN ((size_t)8 << 20)
/* A cached block serves a request smaller than itself by at most an eighth of the request: the
 * outputs of a layer whose batch or image size varies a little reuse one block, wasting little. */
#define FC_CACHE_SLACK(size) ((size) / 8)
/* The default of fc_cache_limit (fastconv._kernels.set_output_cache_limit). */
#define FC_CACHE_LIMIT_DEFAULT ((size_t)512 << 20)

static struct {
    void *ptr[FC_CACHE_SLOTS];
    size_t size[FC_CACHE_SLOTS];
    unsigned long stamp[FC_CACHE_SLOTS]; /* when the block was kept: the oldest goes first */
    size_t held;
    unsigned long clock;
} fc_cache;
static size_t fc_cache_limit = FC_CACHE_LIMIT_DEFAULT;
static pthread_mutex_t fc_cache_lock = PTHREAD_MUTEX_INITIALIZER;

/* A cached block of at least `size` bytes and at most FC_CACHE_SLACK(size) more, or NULL. */
static void *fc_cache_take(size_t size) {
    void *p = NULL;
    int best = -1;
    pthread_mutex_lock(&fc_cache_lock);
    for (int i = 0; i < FC_CACHE_SLOTS; i++)
        if (fc_cache.ptr[i] && fc_cache.size[i] >= size &&
            fc_cache.size[i] <= size + FC_CACHE_SLACK(size) &&
            (best < 0 || fc_cache.size[i] < fc_cache.size[best]))
            best = i;
    if (best >= 0) {
        p = fc_cache.ptr[best];
        fc_cache.held -= fc_cache.size[best];
        fc_cache.ptr[best] = NULL;
    }
    pthread_mutex_unlock(&fc_cache_lock);
    return p;
}

/* Keep a freed block, evicting the blocks kept longest ago until it fits (so the cache follows
 * the sizes in use now); returns 0 if the caller must free it (larger than the limit). */
static int fc_cache_keep(void *p, size_t size) {
    void *evicted[FC_CACHE_SLOTS];
    int nev = 0, slot = -1;
    pthread_mutex_lock(&fc_cache_lock);
    if (size <= fc_cache_limit) {
        for (;;) {
            slot = -1;
            int oldest = -1;
            for (int i = 0; i < FC_CACHE_SLOTS; i++) {
                if (!fc_cache.ptr[i]) {
                    if (slot < 0) slot = i;
                } else if (oldest < 0 || fc_cache.stamp[i] < fc_cache.stamp[oldest]) {
                    oldest = i;
                }
            }
            if (slot >= 0 && fc_cache.held + size <= fc_cache_limit) break;
            evicted[nev++] = fc_cache.ptr[oldest]; /* oldest >= 0: something is held */
            fc_cache.held -= fc_cache.size[oldest];
            fc_cache.ptr[oldest] = NULL;
        }
        fc_cache.ptr[slot] = p;
        fc_cache.size[slot] = size;
        fc_cache.stamp[slot] = ++fc_cache.clock;
        fc_cache.held += size;
    }
    pthread_mutex_unlock(&fc_cache_lock);
    for (int i = 0; i < nev; i++) fc_free(evicted[i]);
    return slot >= 0;
}

/* A plan buffer of `bytes` that is written before it is read, from the cache when it is large
 * (grad_weight's partial sums: tens of MiB, which a fresh allocation page-faults in on every
 * call), else 64-byte aligned from the heap; NULL if out of memory. fc_recycled_free gives it
 * back. */
static void *fc_recycled_alloc(size_t bytes) {
    void *p = bytes >= FC_CACHE_MIN ? fc_cache_take(bytes) : NULL;
    if (!p) p = fc_malloc_aligned(bytes);
    return p;
}

static void fc_recycled_free(void *p, size_t bytes) {
    if (p && !(bytes >= FC_CACHE_MIN && fc_cache_keep(p, bytes))) fc_free(p);
}

/* Release every cached block (and set the limit: 0 disables the cache). */
static void fc_cache_set_limit(size_t limit) {
    pthread_mutex_lock(&fc_cache_lock);
    fc_cache_limit = limit;
    for (int i = 0; i < FC_CACHE_SLOTS; i++) {
        fc_free(fc_cache.ptr[i]);
        fc_cache.ptr[i] = NULL;
    }
    fc_cache.held = 0;
    pthread_mutex_unlock(&fc_cache_lock);
}

/* Free every cached block, keeping the limit; returns the bytes freed. */
static size_t fc_cache_release(void) {
    void *blocks[FC_CACHE_SLOTS];
    int nb = 0;
    pthread_mutex_lock(&fc_cache_lock);
    size_t held = fc_cache.held;
    for (int i = 0; i < FC_CACHE_SLOTS; i++)
        if (fc_cache.ptr[i]) {
            blocks[nb++] = fc_cache.ptr[i];
            fc_cache.ptr[i] = NULL;
        }
    fc_cache.held = 0;
    pthread_mutex_unlock(&fc_cache_lock);
    for (int i = 0; i < nb; i++) fc_free(blocks[i]);
    return held;
}

/* Give the C heap's free memory back to the operating system (glibc keeps freed blocks below
 * its mmap threshold, which rises to 32 MiB as large blocks are freed, in its arenas). */
#if defined(__GLIBC__)
#include <malloc.h>
static void fc_heap_trim(void) { malloc_trim(0); }
#else
static void fc_heap_trim(void) {}
#endif

static size_t fc_cache_held(void) {
    pthread_mutex_lock(&fc_cache_lock);
    size_t h = fc_cache.held;
    pthread_mutex_unlock(&fc_cache_lock);
    return h;
}

/* Large blocks are 64-byte aligned (glibc's mmap'd blocks start 16 bytes into a page): whole
 * cache lines per vector, so the forward can write them with non-temporal stores. */
static void *fc_handler_malloc(void *ctx, size_t size) {
    (void)ctx;
    if (size < FC_CACHE_MIN) return fc_malloc(size ? size : 1);
    return fc_recycled_alloc(size);
}

static void *fc_handler_calloc(void *ctx, size_t nelem, size_t elsize) {
    (void)ctx;
    size_t size = nelem * elsize;
    void *p = size >= FC_CACHE_MIN ? fc_cache_take(size) : NULL;
    if (p) return memset(p, 0, size);
    return fc_calloc(nelem ? nelem : 1, elsize ? elsize : 1);
}

static void *fc_handler_realloc(void *ctx, void *ptr, size_t new_size) {
    (void)ctx;
    return fc_realloc(ptr, new_size ? new_size : 1);
}

static void fc_handler_free(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    fc_recycled_free(ptr, size);
}
#endif
