/* fastconv's image-filter engine (fastconv.filters.filter2d): a bank of F 2-D filters applied to
 * an (H, W) image or an (H, W, C) channels-last one, every filter separable (a vertical then a
 * horizontal 1-D pass) or direct (all its 2-D taps), output the size of the input ("same").
 *
 * A work item is a band of output rows times a strip of columns. It converts the input rows it
 * needs (uint8/uint16/float32/float64 to the work dtype, float32 or float64) and extends them by
 * the padding mode only there (no padded copy of the image is ever made), one row at a time into
 * a ring of kh + 3 rows that stays in the L2 cache, and applies all F filters to each while it is
 * there. Channels stay interleaved: a horizontal tap u is the offset u*C, so the passes run along
 * whole rows of W*C elements.
 *
 * Items write disjoint outputs and an output element's arithmetic does not depend on where the
 * bands or strips fall (filter_isa_tmpl.h), so any schedule and any thread count give bitwise
 * the same result. Kernel taps equal to zero are left out of the sums.
 */
#ifndef FC_FILTER_ENGINE_H
#define FC_FILTER_ENGINE_H

#include "fc_common.h"

/* Element types of the image and of the output. */
enum { FC_FT_U8 = 0, FC_FT_U16 = 1, FC_FT_F32 = 2, FC_FT_F64 = 3 };
/* Padding modes (fastconv.filters.PADDING_MODES, in that order). */
enum { FC_FPAD_ZEROS = 0, FC_FPAD_REFLECT = 1, FC_FPAD_REPLICATE = 2, FC_FPAD_CIRCULAR = 3 };
/* Zeroed elements after every row of the rings: more than the widest vector, so that the last
 * vector of a row, read whole, stays inside. */
#define FC_FILTER_SLACK 64
/* Bytes of rings per work item: they stay in a core's L2 cache. */
#define FC_FILTER_RING_BYTES (512 * 1024)
/* A strip is never narrower than this many elements (where rows are longer): each strip
 * re-reads kw - 1 columns of its neighbours. */
#define FC_FILTER_MIN_STRIP 512

/* Outputs larger than this (bytes) are written by non-temporal stores: they would not stay in the
 * last-level cache anyway, and the stores then do not read every line before overwriting it. */
#define FC_FILTER_STREAM_BYTES (24.0 * 1024 * 1024)

typedef struct {
    int first, n; /* taps [first, first + n) of the tap arrays */
} fc_filter_taps;

typedef struct fc_filter_job fc_filter_job;
typedef int (*fc_filter_item_fn)(const fc_filter_job *j, fc_idx item);

struct fc_filter_job {
    /* filled by the caller */
    int f64;                  /* work dtype: float64 (else float32) */
    int in_type, out_type;    /* FC_FT_* */
    int pad;                  /* FC_FPAD_* */
    fc_idx H, W, C;           /* image (C = 1 for a 2-D one) */
    const void *src;          /* element (y, x, c) at src[y*src_rs + x*C + c] */
    fc_idx src_rs;
    void *dst;                /* filter f, element (y, x, c) at dst[f*dst_fs + y*dst_rs + x*C + c] */
    fc_idx dst_fs, dst_rs;
    fc_idx F, kh, kw, top, left; /* bank size, kernel size, padding before the first row/column */
    /* The output window: rows [oy, oy + OH) and columns [ox, ox + OW) of the image's outputs,
     * the window's (0, 0) at dst (0, 0, H, W: all of them). A chunk of a larger image, passed
     * with the halo its outputs read, gets only its own outputs: no crop copy. */
    fc_idx oy, ox, OH, OW;
    const void *k2;           /* (F, kh, kw) work dtype: the kernels (correlation) */
    const void *kv, *kx;      /* (F, kh), (F, kw): factors of the separable ones, k = kv kx^T */
    const int *sep;           /* (F): filter f runs separable (int32) */
    int inplace;              /* read an image of the work dtype in place where it can */
    int box;                  /* a box filter of exact window sums (filter_isa_tmpl.h): F = 1,
                               * every tap k2[0], an integer image, every window sum below 2^24
                               * (float32 work) or 2^53 (float64), checked by the caller */
    /* set by fc_filter_prepare */
    fc_filter_taps *taps;     /* [2f]: horizontal (separable) or 2-D taps; [2f+1]: vertical */
    void *tap_w;              /* weights (T) */
    fc_idx *tap_row, *tap_off; /* row i of a tap; element offset u*C in its row */
    int maxtaps, nsep;
    int stream;               /* the output is larger than the caches: non-temporal stores */
    fc_idx band, strip, nbands, nstrips, ring_stride;
    fc_filter_item_fn item;
};

static inline fc_idx fc_filter_type_bytes(int type) {
    return type == FC_FT_U8 ? 1 : type == FC_FT_U16 ? 2 : type == FC_FT_F32 ? 4 : 8;
}

/* Index x of an axis of size n extended by the padding mode: the element it copies, or -1 for a
 * zero. The caller keeps the padding within the mode's limits (reflect < n, circular <= n). */
static inline fc_idx fc_filter_map(fc_idx x, fc_idx n, int pad) {
    if (x >= 0 && x < n) return x;
    switch (pad) {
    case FC_FPAD_REFLECT: return x < 0 ? -x : 2 * n - 2 - x;
    case FC_FPAD_REPLICATE: return x < 0 ? 0 : n - 1;
    case FC_FPAD_CIRCULAR: return x < 0 ? x + n : x - n;
    default: return -1;
    }
}

/* ---------------------------------------------------------------------------- instantiation */
/* filter_dtype.h compiles the loops for one work dtype on every SIMD path. */
#define T float
#define TN f32
#include "filter_dtype.h"
#define T double
#define TN f64
#include "filter_dtype.h"

/* ------------------------------------------------------------------------- the job API */
static void fc_filter_free(fc_filter_job *j) {
    fc_free(j->taps);
    fc_free(j->tap_w);
    fc_free(j->tap_row);
    fc_free(j->tap_off);
    j->taps = NULL;
    j->tap_w = NULL;
    j->tap_row = j->tap_off = NULL;
}

static inline double fc_filter_w(const fc_filter_job *j, const void *a, fc_idx i) {
    return j->f64 ? ((const double *)a)[i] : (double)((const float *)a)[i];
}

/* The tap lists (non-zero weights only, row-major), the sizes of bands and strips. */
static int fc_filter_prepare(fc_filter_job *j, int nthreads, fc_schedule *s) {
    const fc_idx F = j->F, kh = j->kh, kw = j->kw, C = j->C;
    const size_t tb = j->f64 ? sizeof(double) : sizeof(float);
    fc_idx cap = F * (kh * kw + kh + kw);
    j->taps = (fc_filter_taps *)fc_calloc((size_t)(2 * F), sizeof(fc_filter_taps));
    j->tap_w = fc_malloc((size_t)cap * tb);
    j->tap_row = (fc_idx *)fc_malloc((size_t)cap * sizeof(fc_idx));
    j->tap_off = (fc_idx *)fc_malloc((size_t)cap * sizeof(fc_idx));
    if (!j->taps || !j->tap_w || !j->tap_row || !j->tap_off) return -1;
    int nt = 0;
    j->maxtaps = 1;
    j->nsep = 0;
#define FC_FILTER_ADD(wsrc, widx, row, off)                                                    \
    do {                                                                                       \
        double w_ = fc_filter_w(j, wsrc, widx);                                                \
        if (w_ != 0) {                                                                         \
            if (j->f64) ((double *)j->tap_w)[nt] = w_;                                         \
            else ((float *)j->tap_w)[nt] = (float)w_;                                          \
            j->tap_row[nt] = (row);                                                            \
            j->tap_off[nt] = (off);                                                            \
            nt++;                                                                              \
        }                                                                                      \
    } while (0)
    for (fc_idx f = 0; f < F; f++) {
        fc_filter_taps *a = &j->taps[2 * f], *b = &j->taps[2 * f + 1];
        a->first = nt;
        if (j->sep[f]) {
            j->nsep++;
            for (fc_idx u = 0; u < kw; u++) FC_FILTER_ADD(j->kx, f * kw + u, 0, u * C);
            a->n = nt - a->first;
            b->first = nt;
            for (fc_idx i = 0; i < kh; i++) FC_FILTER_ADD(j->kv, f * kh + i, i, 0);
            b->n = nt - b->first;
        } else {
            for (fc_idx i = 0; i < kh; i++)
                for (fc_idx u = 0; u < kw; u++)
                    FC_FILTER_ADD(j->k2, (f * kh + i) * kw + u, i, u * C);
            a->n = nt - a->first;
            b->first = nt;
            b->n = 0;
        }
        j->maxtaps = FC_MAX(j->maxtaps, FC_MAX(a->n, b->n));
    }
#undef FC_FILTER_ADD
    /* strips: the ring of kh + 3 input rows and the 4 rows of vertical passes (a box filter's
     * column sums, a scratch row and its window levels: about 4) within FC_FILTER_RING_BYTES */
    fc_idx rows = j->box ? 4 : kh + 8;
    fc_idx elems = FC_FILTER_RING_BYTES / (fc_idx)tb / rows - (kw - 1) * C - FC_FILTER_SLACK;
    elems = FC_MAX(elems, (fc_idx)FC_FILTER_MIN_STRIP);
    fc_idx strip = FC_MAX((fc_idx)1, elems / C);
    j->nstrips = FC_CEIL_DIV(j->OW, strip);
    j->strip = FC_CEIL_DIV(j->OW, j->nstrips); /* strips of even widths */
    /* bands: each re-reads kh - 1 rows, so at least 4 kh rows, unless the threads need more
     * items */
    fc_idx band = FC_MAX(4 * kh, (fc_idx)32);
    fc_idx want = 4 * (fc_idx)nthreads;
    if (nthreads > 1 && FC_CEIL_DIV(j->OH, band) * j->nstrips < want)
        band = FC_MAX(FC_MAX(kh, (fc_idx)8), FC_CEIL_DIV(j->OH * j->nstrips, want));
    band = FC_MIN(band, j->OH);
    j->nbands = FC_CEIL_DIV(j->OH, band);
    j->band = FC_CEIL_DIV(j->OH, j->nbands);
    j->ring_stride = FC_ROUND_UP((j->strip + kw - 1) * C + FC_FILTER_SLACK, 16);
    j->stream = (double)F * (double)j->OH * (double)j->OW * (double)C *
                    (double)fc_filter_type_bytes(j->out_type) > FC_FILTER_STREAM_BYTES;
    s->nitems = j->nbands * j->nstrips;
    s->nreduce = 0;
    s->chunk = 1;
    int level = fc_isa_level;
    if (j->box)
        j->item = j->f64 ? fc_filter_box_items_f64[level] : fc_filter_box_items_f32[level];
    else
        j->item = j->f64 ? fc_filter_items_f64[level] : fc_filter_items_f32[level];
    return 0;
}

static int fc_filter_task_prepare(void *job, int nthreads, fc_schedule *s) {
    return fc_filter_prepare((fc_filter_job *)job, nthreads, s);
}
static int fc_filter_task_item(void *job, fc_idx i) {
    fc_filter_job *j = (fc_filter_job *)job;
    return j->item(j, i);
}
static void fc_filter_task_finish(void *job) { fc_filter_free((fc_filter_job *)job); }

static const fc_task fc_filter_task = {fc_filter_task_prepare, fc_task_no_items,
                                       fc_filter_task_item, fc_task_no_items,
                                       fc_filter_task_finish};

#endif /* FC_FILTER_ENGINE_H */
