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
 *
 * A box filter (one kernel, every tap the same weight) runs on exact window sums instead: column
 * sums kept up to date as rows enter and leave the window, then window sums along each row, the
 * output the weight times the sum (filter_isa_tmpl.h's box filters; for float32 pixels, the
 * exact sums below): rounded once in the work dtype where the sums are whole numbers it holds,
 * else in doubles and then to the output's type.
 */
#ifndef FC_FILTER_ENGINE_H
#define FC_FILTER_ENGINE_H

#include <math.h>

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
    int box;                  /* FC_FBOX_*: a box filter of exact window sums (filter_isa_tmpl.h):
                               * F = 1, every tap k2[0]. FC_FBOX_WORK: sums in the work dtype, an
                               * integer image whose window sums stay below 2^24 (float32 work) or
                               * 2^53 (float64); FC_FBOX_F64: sums in float64, an integer image
                               * whose window sums stay below 2^53, or a float32 one (any values);
                               * checked by the caller */
    double box_w;             /* set by fc_filter_prepare: the tap's weight */
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

/* ------------------------------------------------------- exact window sums of float32 pixels
 * A box filter of a float32 image (FC_FBOX_F64) gives w * S rounded to a double (then to the
 * output's type), S the exact sum of the window's pixels rounded to the nearest double (exact
 * where it fits one). Where the pixels of a
 * work item's region span few enough binades, every partial sum is a double and running sums in
 * doubles are exact (filter_isa_tmpl.h, box_item). Elsewhere (wider spans, inf or nan) the sums
 * are kept here, exactly, as integers: so the two ways give the same bits, and which way an item
 * takes (its region depends on the bands, strips and threads) never shows in the result.
 *
 * An exact sum ("xsum") is FC_XS_MAG digits of 32 bits, digit k worth 2^(32k - 181), held in
 * int64 (a running sum adds and subtracts whole digits: no carries until the value is read),
 * and a count of the non-finite pixels: nan + 2^21 (+inf) + 2^42 (-inf). A float32 pixel (its
 * bits 2^-149 .. 2^127, 24 of them set at most) touches two neighbouring digits. */
enum { FC_FBOX_NONE = 0, FC_FBOX_WORK = 1, FC_FBOX_F64 = 2 };
/* Why a box item of a float32 image changes its way (filter_isa_tmpl.h, box_fit). */
enum { FC_BOX_FINER = 1, FC_BOX_LARGER = 2, FC_BOX_NONFINITE = 3 };
/* A row index meaning "no row" (box filters' column sums: nothing added, or nothing taken). */
#define FC_FILTER_NO_ROW ((fc_idx)1 << 62)
#define FC_XS_MAG 11
#define FC_XS_CODE FC_XS_MAG
#define FC_XS_DIGITS (FC_XS_MAG + 1)
#define FC_XS_COUNT_BITS 21

/* acc += s * v (s = 1 or -1), v a float32 pixel read as a double: the conversion reads a
 * subnormal as 0 where the kernels flush them, as the vector path's conversion does. */
static inline void fc_xsum_put(int64_t *acc, double v, int64_t s) {
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    const uint64_t frac = b & ((UINT64_C(1) << 52) - 1);
    const int e = (int)((b >> 52) & 0x7ff);
    if (e == 0x7ff) {
        int64_t code = frac ? 1 : (b >> 63) ? INT64_C(1) << (2 * FC_XS_COUNT_BITS)
                                            : INT64_C(1) << FC_XS_COUNT_BITS;
        acc[FC_XS_CODE] += s * code;
        return;
    }
    if (e == 0) return; /* a zero (no float32 is a subnormal double) */
    /* v = m 2^(e - 1046), m of 24 bits (a float32's low 29 bits of the double's are 0); its
     * lowest bit is bit p of the digits (p = e - 865 >= 9 for 2^-149) */
    const uint64_t m = (frac | (UINT64_C(1) << 52)) >> 29;
    const int p = e - 865;
    const uint64_t t = m << (p & 31);
    int64_t lo = (int64_t)(t & 0xffffffffu), hi = (int64_t)(t >> 32);
    if (b >> 63) {
        lo = -lo;
        hi = -hi;
    }
    acc[p >> 5] += s * lo;
    acc[(p >> 5) + 1] += s * hi;
}

/* The value of an exact sum rounded to the nearest double (ties to even): nan for a nan or both
 * infinities, the infinity it holds, else the carried digits' value. */
static inline double fc_xsum_value(const int64_t *acc) {
    const int64_t code = acc[FC_XS_CODE], mask = (INT64_C(1) << FC_XS_COUNT_BITS) - 1;
    const int64_t nan = code & mask, pinf = (code >> FC_XS_COUNT_BITS) & mask;
    const int64_t ninf = code >> (2 * FC_XS_COUNT_BITS);
    if (nan || (pinf && ninf)) return (double)NAN;
    if (pinf) return (double)INFINITY;
    if (ninf) return -(double)INFINITY;
    uint64_t d[FC_XS_MAG + 2] = {0}; /* d[k + 2]: digit k, carried into [0, 2^32) */
    int64_t carry = 0;
    for (int k = 0; k < FC_XS_MAG; k++) {
        int64_t v = acc[k] + carry;
        d[k + 2] = (uint64_t)v & 0xffffffffu;
        carry = v >> 32; /* arithmetic: floor */
    }
    const int neg = carry < 0; /* |sum| < 2^21 2^128 < 2^171: carry is 0 or -1 */
    if (neg) {                 /* its magnitude: the digits' two's complement */
        uint64_t add = 1;
        for (int k = 2; k < FC_XS_MAG + 2; k++) {
            uint64_t v = (~d[k] & 0xffffffffu) + add;
            d[k] = v & 0xffffffffu;
            add = v >> 32;
        }
    }
    int t = FC_XS_MAG + 1;
    while (t >= 2 && !d[t]) t--;
    if (t < 2) return 0.0;
    /* the top 64 bits, the ones below folded into the lowest (a sticky bit: more bits than the
     * 53 + 2 that rounding to nearest reads), converted with one rounding */
    unsigned __int128 top = ((unsigned __int128)d[t] << 64) | ((unsigned __int128)d[t - 1] << 32) |
                            d[t - 2];
    uint64_t sticky = 0;
    for (int k = 2; k < t - 2; k++) sticky |= d[k];
    const int lz = __builtin_clzll(d[t]); /* d[t] < 2^32: top < 2^96, lz >= 32 */
    top <<= lz;
    const uint64_t x = (uint64_t)(top >> 64) | (uint64_t)(((uint64_t)top | sticky) != 0);
    /* top's lowest bit was digit t - 2's, worth 2^(32 (t - 4) - 181) */
    const double r = ldexp((double)x, 32 * (t - 4) - 181 + 64 - lz);
    return neg ? -r : r;
}

/* cs[e] += the pixels of row `in` minus those of row `out` (FC_FILTER_NO_ROW: none) of the padded
 * float32 image, over its pixels x0 .. x0 + npx - 1, as exact sums (FC_XS_DIGITS each). */
static void fc_filter_xbox_update(int64_t *cs, const fc_filter_job *j, fc_idx in, fc_idx out,
                                  fc_idx x0, fc_idx npx) {
    const fc_idx C = j->C, W = j->W;
    fc_idx ri = in == FC_FILTER_NO_ROW ? -1 : fc_filter_map(in, j->H, j->pad);
    fc_idx ro = out == FC_FILTER_NO_ROW ? -1 : fc_filter_map(out, j->H, j->pad);
    const float *a = ri < 0 ? NULL : (const float *)j->src + ri * j->src_rs;
    const float *b = ro < 0 ? NULL : (const float *)j->src + ro * j->src_rs;
    if (!a && !b) return;
    for (fc_idx p = 0; p < npx; p++) {
        fc_idx xs = fc_filter_map(x0 + p, W, j->pad);
        if (xs < 0) continue;
        for (fc_idx c = 0; c < C; c++) {
            int64_t *acc = cs + (p * C + c) * FC_XS_DIGITS;
            if (a) fc_xsum_put(acc, (double)a[xs * C + c], 1);
            if (b) fc_xsum_put(acc, (double)b[xs * C + c], -1);
        }
    }
}

/* out[i] = w * (the window sum of element i, rounded to a double) for i < n: the windows of kw
 * pixels along a row of exact column sums cs (n + (kw - 1) C elements), running sums in S
 * (C exact sums). */
static void fc_filter_xbox_row(double *out, const int64_t *cs, int64_t *S, fc_idx n, fc_idx C,
                               fc_idx kw, double w) {
    const fc_idx kc = kw * C;
    for (fc_idx c = 0; c < C && c < n; c++) {
        int64_t *s = S + c * FC_XS_DIGITS;
        memset(s, 0, FC_XS_DIGITS * sizeof(int64_t));
        for (fc_idx u = 0; u < kw; u++)
            for (int k = 0; k < FC_XS_DIGITS; k++) s[k] += cs[(c + u * C) * FC_XS_DIGITS + k];
        out[c] = w * fc_xsum_value(s);
    }
    for (fc_idx i = C; i < n; i++) {
        int64_t *s = S + (i % C) * FC_XS_DIGITS;
        const int64_t *add = cs + (i - C + kc) * FC_XS_DIGITS, *sub = cs + (i - C) * FC_XS_DIGITS;
        for (int k = 0; k < FC_XS_DIGITS; k++) s[k] += add[k] - sub[k];
        out[i] = w * fc_xsum_value(s);
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
    const size_t rb = j->box == FC_FBOX_F64 ? sizeof(double) : tb; /* bytes of a ring element */
    fc_idx elems = FC_FILTER_RING_BYTES / (fc_idx)rb / rows - (kw - 1) * C - FC_FILTER_SLACK;
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
    j->box_w = fc_filter_w(j, j->k2, 0);
    if (j->box == FC_FBOX_F64 || (j->box && j->f64))
        j->item = fc_filter_box_items_f64[level];
    else if (j->box)
        j->item = fc_filter_box_items_f32[level];
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
