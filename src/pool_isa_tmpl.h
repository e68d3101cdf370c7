/* ISA-specific loops of the pooling engine, written once with GCC vector extensions and compiled
 * once per (dtype, ISA) by pool_engine.h, which defines before including this file:
 *   T (float/double), TN (f32/f64), IT (the integer type of T's width: int32_t/int64_t),
 *   ISA (avx512/avx2/generic), VB (vector bytes), VLN (= VB / sizeof(T), as a literal), FC_TARGET.
 *
 * Every pass works on a per-thread "row buffer": input rows split into `sw` phases (column
 * c = m*sw + q of the padded row goes to phase q, position m) and padded with the pad value
 * (-inf for max, 0 for average). Window tap (i, j) of the output columns ow..ow+VL-1 is then ONE
 * contiguous vector load, whatever the stride, dilation or padding, and no lane needs a bounds
 * check. Reductions run over the taps in row-major order with one accumulator per output, which
 * is exactly torch's order, so the results are bitwise identical to torch's CPU kernels -- and,
 * a lane being one output whatever the vector width, on every SIMD path. (Pooling has no
 * multiply-add: its sums are plain additions, then one division; nothing here to fuse.)
 */
#define VL VLN
#define FN(name) FC_CAT(FC_CAT(name, TN), ISA)
#define VEC FN(vec)
#define VECU FN(vecu)
#define VI FN(veci)
#define VIU FN(veciu)
#define VL64 FN(vecl)
#define VL64U FN(veclu)
#define ALWAYS static inline __attribute__((always_inline)) FC_TARGET

typedef T VEC __attribute__((vector_size(VB)));
typedef T VECU __attribute__((vector_size(VB), aligned(sizeof(T))));
typedef IT VI __attribute__((vector_size(VB)));
typedef IT VIU __attribute__((vector_size(VB), aligned(sizeof(IT))));
typedef int64_t VL64 __attribute__((vector_size(VLN * 8)));
typedef int64_t VL64U __attribute__((vector_size(VLN * 8), aligned(8)));

#define LOADU(p) (*(const VECU *)(p))
#define STOREU(p, v) (*(VECU *)(p) = (v))
#define LOADI(p) (*(const VIU *)(p))
/* m ? a : b for a lane mask m (all ones / all zeros per lane) */
#define SEL(m, a, b) ((VEC)(((VI)(a) & (m)) | ((VI)(b) & ~(m))))
#define SELI(m, a, b) (((a) & (m)) | ((b) & ~(m)))

#include "fc_shuffle.h"

/* Spare bytes past the row buffers (a widest vector): a vector load that starts inside the last
 * row stays inside the buffer. */
#define FC_POOL_SLACK 64

/* Store the first nv (1..VL) lanes of v at p. */
ALWAYS void FN(store_lanes)(T *p, VEC v, fc_idx nv) {
    if (nv >= VL) STOREU(p, v);
    else memcpy(p, &v, (size_t)nv * sizeof(T));
}

ALWAYS void FN(store_index_lanes)(int64_t *p, VI v, fc_idx nv) {
    VL64 w = __builtin_convertvector(v, VL64);
    if (nv >= VL) *(VL64U *)p = w;
    else memcpy(p, &w, (size_t)nv * sizeof(int64_t));
}

/* One row of the row buffer: dst[q*LQS + m] = padded column m*sw + q of the input row
 * (src[(m*sw + q - pw) * cs] when 0 <= m*sw + q - pw < W, else pad), for m < LQ. */
static FC_TARGET void FN(build_row)(T *restrict dst, const T *restrict src, fc_idx cs, fc_idx W,
                                    fc_idx pw, fc_idx sw, fc_idx LQ, fc_idx LQS, T pad) {
    if (sw == 1) {
        fc_idx lo = FC_MIN(pw, LQ), hi = FC_MIN(pw + W, LQ), m = 0;
        for (; m < lo; m++) dst[m] = pad;
        if (cs == 1) {
            if (hi > lo) memcpy(dst + lo, src, (size_t)(hi - lo) * sizeof(T));
        } else {
            for (; m < hi; m++) dst[m] = src[(m - pw) * cs];
        }
        for (m = hi; m < LQ; m++) dst[m] = pad;
        return;
    }
    if (sw == 2 && cs == 1 && W >= 2 * VL) {
        /* Deinterleave pairs of vectors: the body covers m in [m0, m1] where both columns of the
         * pair are inside the row; the last step overlaps the previous one (same values). */
        T *restrict d0 = dst, *restrict d1 = dst + LQS;
        fc_idx m0 = (pw + 1) / 2;               /* first m with 2m - pw >= 0 */
        fc_idx mend = FC_MIN(LQ, (W + pw) / 2); /* m < mend: 2m + 1 - pw <= W - 1 */
        fc_idx m = 0;
        for (; m < FC_MIN(m0, LQ); m++) {
            fc_idx c0 = 2 * m - pw;
            d0[m] = c0 >= 0 ? src[c0] : pad;
            d1[m] = c0 + 1 >= 0 ? src[c0 + 1] : pad;
        }
        if (mend - m0 >= VL) {
            for (m = m0; m + VL <= mend; m += VL) {
                VEC a = LOADU(src + 2 * m - pw), b = LOADU(src + 2 * m - pw + VL);
                STOREU(d0 + m, SHUF2(a, b, FC_EVEN));
                STOREU(d1 + m, SHUF2(a, b, FC_ODD));
            }
            if (m < mend) {
                fc_idx mt = mend - VL;
                VEC a = LOADU(src + 2 * mt - pw), b = LOADU(src + 2 * mt - pw + VL);
                STOREU(d0 + mt, SHUF2(a, b, FC_EVEN));
                STOREU(d1 + mt, SHUF2(a, b, FC_ODD));
                m = mend;
            }
        }
        for (; m < LQ; m++) {
            fc_idx c0 = 2 * m - pw;
            d0[m] = (c0 >= 0 && c0 < W) ? src[c0] : pad;
            d1[m] = (c0 + 1 >= 0 && c0 + 1 < W) ? src[c0 + 1] : pad;
        }
        return;
    }
    for (fc_idx q = 0; q < sw; q++) {
        T *restrict d = dst + q * LQS;
        for (fc_idx m = 0; m < LQ; m++) {
            fc_idx col = m * sw + q - pw;
            d[m] = (col >= 0 && col < W) ? src[col * cs] : pad;
        }
    }
}

/* The inverse for the real columns: dst[iw] = src[q*LQS + m] with m*sw + q = iw + pw, iw < W. */
static FC_TARGET void FN(unsplit_row)(T *restrict dst, const T *restrict src, fc_idx W, fc_idx pw,
                                      fc_idx sw, fc_idx LQS) {
    if (sw == 1) {
        memcpy(dst, src + pw, (size_t)W * sizeof(T));
        return;
    }
    if (sw == 2 && W >= 2 * VL) {
        const T *restrict s0 = src, *restrict s1 = src + LQS;
        fc_idx iw = 0;
        if (pw & 1) { /* column 0 is phase 1 */
            dst[0] = s1[(pw - 1) / 2];
            iw = 1;
        }
        /* iw + pw even from here: pairs (s0[m], s1[m]) with m = (iw + pw) / 2 */
        for (; iw + 2 * VL <= W; iw += 2 * VL) {
            fc_idx m = (iw + pw) / 2;
            VEC a = LOADU(s0 + m), b = LOADU(s1 + m);
            STOREU(dst + iw, SHUF2(a, b, FC_ILO));
            STOREU(dst + iw + VL, SHUF2(a, b, FC_IHI));
        }
        for (; iw < W; iw++) {
            fc_idx c = iw + pw;
            dst[iw] = src[(c & 1) * LQS + c / 2];
        }
        return;
    }
    for (fc_idx iw = 0; iw < W; iw++) {
        fc_idx c = iw + pw;
        dst[iw] = src[(c % sw) * LQS + c / sw];
    }
}

/* ---- forward row kernels ----------------------------------------------------------------
 * Chunks of VL outputs along the row; when OW is not a multiple of VL the last chunk is moved
 * back to end at OW (recomputing a few outputs identically) so that every store is a full
 * vector inside the row. G output rows at once: G independent accumulator chains hide the
 * latency of each chain. KW > 0: the number of taps per row as a compile-time constant (0: the
 * runtime kw). G and KW are compile-time constants in every expansion (see FN(fwd_rows)). */

/* Rows output at once where every window row is inside the input. */
#define FC_GROUP 4

/* A row kernel's operands: output rows g < G at out + g*OW; row g reads the buffer rows
 * p0 + g*gstep + r*rstep, r < nr, at the tap offsets qoff[t], t < kw. */
typedef struct {
    const T *p0;
    fc_idx gstep, rstep, nr, kw;
    const fc_idx *qoff;
    fc_idx OW;
    T *out;
    const T *drow, *dcol; /* average: the divisor of output (g, ow) is drow[g] * dcol[ow] */
    /* max with indices: see max_rows_body */
    IT cand, gcand, rowinc, dw;
    const IT *colbase, *colfirst;
    int64_t *oind;
} FN(rows);

/* The row kernels: average, max, max with indices. */
#define FC_ROWS_AVG 0
#define FC_ROWS_MAX 1
#define FC_ROWS_MAXIDX 2

/* The max of every window, and with IDX also the flat index ih*W + iw of its maximum: cand is
 * ih0*W for the first window row of output row 0 (gcand = sh*W more per output row, rowinc =
 * dh*W more per window row), colbase[ow] = ow*sw - pw, colfirst[ow] the window's first
 * in-bounds column: cand + colfirst is the index torch reports for a window whose values are all
 * -inf. IDX is a compile-time constant: without it the index code is not generated. */
ALWAYS void FN(max_rows_body)(const int G, const int KW, const int IDX,
                              const FN(rows) *restrict a) {
    const T *restrict p0 = a->p0;
    const fc_idx *restrict qoff = a->qoff;
    const IT *restrict colbase = a->colbase, *restrict colfirst = a->colfirst;
    T *restrict out = a->out;
    int64_t *restrict oind = a->oind;
    const fc_idx gstep = a->gstep, rstep = a->rstep, nr = a->nr, OW = a->OW;
    const IT cand = a->cand, gcand = a->gcand, rowinc = a->rowinc, dw = a->dw;
    const fc_idx nk = KW ? KW : a->kw;
    const VEC ninf = (VEC){0} - (T)INFINITY;
    for (fc_idx ow = 0; ow < OW; ow += VL) {
        if (ow + VL > OW && OW >= VL) ow = OW - VL; /* last chunk overlaps: full stores */
        VEC best[FC_GROUP];
        VI bi[FC_GROUP];
        VI cb = (VI){0}, cf = (VI){0};
        if (IDX) {
            cb = LOADI(colbase + ow);
            cf = LOADI(colfirst + ow);
        }
        for (int g = 0; g < G; g++) {
            best[g] = ninf;
            if (IDX) bi[g] = cf + (cand + (IT)g * gcand);
        }
        for (fc_idx r = 0; r < nr; r++) {
            const T *p = p0 + r * rstep + ow;
            const VI rb = cb + (cand + (IT)r * rowinc);
            for (fc_idx t = 0; t < nk; t++) {
                for (int g = 0; g < G; g++) {
                    VEC v = LOADU(p + g * gstep + qoff[t]);
                    VI m = (v > best[g]) | (v != v); /* torch: val > maxval || isnan(val) */
                    best[g] = SEL(m, v, best[g]);
                    if (IDX) bi[g] = SELI(m, rb + ((IT)g * gcand + (IT)t * dw), bi[g]);
                }
            }
        }
        for (int g = 0; g < G; g++) {
            FN(store_lanes)(out + g * OW + ow, best[g], OW - ow);
            if (IDX) FN(store_index_lanes)(oind + g * OW + ow, bi[g], OW - ow);
        }
    }
}

/* sum over the taps in row-major order, then / (drow[g] * dcol[ow]) -- torch's arithmetic. */
ALWAYS void FN(avg_rows_body)(const int G, const int KW, const FN(rows) *restrict a) {
    const T *restrict p0 = a->p0;
    const fc_idx *restrict qoff = a->qoff;
    const T *restrict drow = a->drow, *restrict dcol = a->dcol;
    T *restrict out = a->out;
    const fc_idx gstep = a->gstep, rstep = a->rstep, nr = a->nr, OW = a->OW;
    const fc_idx nk = KW ? KW : a->kw;
    for (fc_idx ow = 0; ow < OW; ow += VL) {
        if (ow + VL > OW && OW >= VL) ow = OW - VL; /* last chunk overlaps: full stores */
        VEC s[FC_GROUP];
        for (int g = 0; g < G; g++) s[g] = (VEC){0};
        for (fc_idx r = 0; r < nr; r++) {
            const T *p = p0 + r * rstep + ow;
            for (fc_idx t = 0; t < nk; t++)
                for (int g = 0; g < G; g++) s[g] += LOADU(p + g * gstep + qoff[t]);
        }
        const VEC dc = LOADU(dcol + ow);
        for (int g = 0; g < G; g++)
            FN(store_lanes)(out + g * OW + ow, s[g] / (drow[g] * dc), OW - ow);
    }
}

/* The row kernel of `kind` (FC_ROWS_*) with G rows and KW taps. */
ALWAYS void FN(rows_kernel)(const int kind, const int G, const int KW, const FN(rows) *a) {
    if (kind == FC_ROWS_AVG) FN(avg_rows_body)(G, KW, a);
    else FN(max_rows_body)(G, KW, kind == FC_ROWS_MAXIDX, a);
}

/* The same with the tap count a compile-time constant for the common windows (kw <= 3). */
ALWAYS void FN(rows_kernel_kw)(const int kind, const int G, const FN(rows) *a) {
    switch (a->kw) {
        case 1: FN(rows_kernel)(kind, G, 1, a); break;
        case 2: FN(rows_kernel)(kind, G, 2, a); break;
        case 3: FN(rows_kernel)(kind, G, 3, a); break;
        default: FN(rows_kernel)(kind, G, 0, a); break;
    }
}

/* What the output rows of one forward item share: the row buffer (from input row r_lo, rows RS
 * apart) and the plane's output and indices. */
typedef struct {
    const fc_pool_job *j;
    const T *buf;
    fc_idx r_lo, RS;
    T *out;
    int64_t *oind;
} FN(fwd_plane);

/* Output rows [oh, oh + G) (G = 1 or FC_GROUP; when G > 1 all their window rows are inside). */
ALWAYS void FN(fwd_rows)(const int G, const FN(fwd_plane) *pp, fc_idx oh) {
    const fc_pool_job *j = pp->j;
    const fc_idx hs = oh * j->sh - j->ph, W = j->W;
    const fc_idx i_lo = j->rowtaps[2 * oh], i_hi = j->rowtaps[2 * oh + 1];
    const fc_idx ih0 = hs + i_lo * j->dh;
    FN(rows) a = {.p0 = pp->buf + (ih0 - pp->r_lo) * pp->RS, .gstep = j->sh * pp->RS,
                  .rstep = j->dh * pp->RS, .nr = i_hi - i_lo, .kw = j->kw, .qoff = j->qoff,
                  .OW = j->OW, .out = pp->out + oh * j->OW};
    if (j->op != FC_POOL_MAX) {
        a.drow = (const T *)j->drow + oh;
        a.dcol = (const T *)j->dcol;
        FN(rows_kernel_kw)(FC_ROWS_AVG, G, &a);
    } else if (!pp->oind) {
        FN(rows_kernel_kw)(FC_ROWS_MAX, G, &a);
    } else {
        a.cand = (IT)(ih0 * W);
        a.gcand = (IT)(j->sh * W);
        a.rowinc = (IT)(j->dh * W);
        a.dw = (IT)j->dw;
        a.colbase = (const IT *)j->colbase;
        a.colfirst = (const IT *)j->colfirst;
        a.oind = pp->oind + oh * j->OW;
        FN(rows_kernel_kw)(FC_ROWS_MAXIDX, G, &a);
    }
}

/* Forward work item: output rows [oh0, oh1) of one (n, c) plane. */
static FC_TARGET int FN(pool_fwd_item)(const fc_pool_job *j, fc_idx item) {
    const fc_idx H = j->H, W = j->W, OH = j->OH, OW = j->OW, kh = j->kh;
    const fc_idx sh = j->sh, sw = j->sw, ph = j->ph, pw = j->pw, dh = j->dh;
    const fc_idx LQ = j->LQ, LQS = j->LQS, RS = sw * LQS;
    const fc_idx plane = item / j->nblocks, blk = item % j->nblocks;
    const fc_idx n = plane / j->C, c = plane % j->C;
    const fc_idx oh0 = blk * j->rows_per_item, oh1 = FC_MIN(OH, oh0 + j->rows_per_item);
    const fc_idx r_lo = FC_MAX(0, oh0 * sh - ph);
    const fc_idx r_hi = FC_MIN(H, (oh1 - 1) * sh - ph + (kh - 1) * dh + 1);
    const int is_max = j->op == FC_POOL_MAX;
    T *buf = (T *)fc_ws_get(0, (size_t)FC_MAX(r_hi - r_lo, 1) * RS * sizeof(T) + FC_POOL_SLACK);
    unsigned char *built = (unsigned char *)fc_ws_get(1, (size_t)FC_MAX(r_hi - r_lo, 1));
    if (!buf || !built) return -1;
    memset(built, 0, (size_t)FC_MAX(r_hi - r_lo, 0));
    const T *x = (const T *)j->src + n * j->ss[0] + c * j->ss[1];
    const T pad = is_max ? -(T)INFINITY : (T)0;
    T *out = (T *)j->dst + plane * OH * OW;
    int64_t *oind = j->dst_ind ? j->dst_ind + plane * OH * OW : NULL;

    /* Build every buffer row some window of the block reads, in one streaming pass. */
    for (fc_idx oh = oh0; oh < oh1; oh++) {
        const fc_idx hs = oh * sh - ph;
        for (fc_idx i = j->rowtaps[2 * oh]; i < j->rowtaps[2 * oh + 1]; i++)
            built[hs + i * dh - r_lo] = 1;
    }
    /* For inputs too large to stay in the cache, the next item's plane (same rows) is fetched
     * a row at a time alongside, so that memory stays busy while this item computes. */
    const T *xn = NULL;
    if (j->prefetch && j->ss[3] == 1 && plane + 1 < j->N * j->C && blk == j->nblocks - 1) {
        fc_idx pn = plane + 1;
        xn = (const T *)j->src + (pn / j->C) * j->ss[0] + (pn % j->C) * j->ss[1];
    }
    for (fc_idx r = 0; r < r_hi - r_lo; r++) {
        if (xn) fc_prefetch_row(xn + r * j->ss[2], W * (fc_idx)sizeof(T));
        if (built[r])
            FN(build_row)(buf + r * RS, x + (r + r_lo) * j->ss[2], j->ss[3], W, pw, sw, LQ, LQS,
                          pad);
    }

    /* rows whose whole window is inside go FC_GROUP at a time */
    const FN(fwd_plane) pp = {j, buf, r_lo, RS, out, oind};
    const fc_idx full_lo = FC_MAX(oh0, j->full_lo), full_hi = FC_MIN(oh1, j->full_hi);
    for (fc_idx oh = oh0; oh < oh1;) {
        if (j->rowtaps[2 * oh + 1] <= j->rowtaps[2 * oh]) {
            /* no input row: rejected by the Python layer, kept safe here */
            for (fc_idx ow = 0; ow < OW; ow++) {
                out[oh * OW + ow] = is_max ? pad : (T)0;
                if (oind) oind[oh * OW + ow] = 0;
            }
            oh++;
        } else if (oh >= full_lo && oh + FC_GROUP <= full_hi) {
            FN(fwd_rows)(FC_GROUP, &pp, oh);
            oh += FC_GROUP;
        } else {
            FN(fwd_rows)(1, &pp, oh);
            oh++;
        }
    }
    return 0;
}

/* ---- average backward ---------------------------------------------------------------------
 * A gather: every input element sums grad/divisor of the windows that contain it, in the
 * (oh, ow) row-major order of torch's scatter loop (so the result is bitwise torch's). Along a
 * row, input column c = m*sw + q (padded coordinates) is in window ow iff c - ow*sw = a*sw + q is
 * a tap, i.e. ow = m - a for a < ceil((kw - q) / sw): for phase q, the terms of positions
 * m..m+VL-1 are contiguous loads of the scaled gradient row, shifted by a. */

/* Gather tasks waiting to run together (up to FC_GROUP: independent accumulator chains hide each
 * other's latency): task g sums into dst[g] (nv lanes), over the no gradient rows (LG apart) and
 * a = A-1..0, the terms src[g][o*LG - a]. The n queued tasks share no, A and nv; these counts
 * are kept apart from the task arrays so that they stay in registers. */
typedef struct {
    int n;
    fc_idx no, A, nv, LG;
} FN(gather_batch);
typedef struct {
    const T *src[FC_GROUP];
    T *dst[FC_GROUP];
} FN(gather_tasks);

/* The first G tasks (G a compile-time constant in each expansion, see gather_flush). */
ALWAYS void FN(gather_body)(const int G, const FN(gather_batch) *b, const FN(gather_tasks) *q) {
    const fc_idx no = b->no, A = b->A, LG = b->LG;
    VEC acc[FC_GROUP];
    for (int g = 0; g < G; g++) acc[g] = (VEC){0};
    for (fc_idx o = 0; o < no; o++)
        for (fc_idx a = A - 1; a >= 0; a--)
            for (int g = 0; g < G; g++) acc[g] += LOADU(q->src[g] + o * LG - a);
    for (int g = 0; g < G; g++) FN(store_lanes)(q->dst[g], acc[g], b->nv);
}

/* Run the queued tasks and empty the queue. */
ALWAYS void FN(gather_flush)(FN(gather_batch) *b, const FN(gather_tasks) *q) {
    switch (b->n) {
        case 0: break;
        case 1: FN(gather_body)(1, b, q); break;
        case 2: FN(gather_body)(2, b, q); break;
        case 3: FN(gather_body)(3, b, q); break;
        default: FN(gather_body)(FC_GROUP, b, q); break;
    }
    b->n = 0;
}

/* Queue a task, first running the queue when it is full or its tasks' counts differ. */
ALWAYS void FN(gather_push)(FN(gather_batch) *b, FN(gather_tasks) *q, const T *src, T *dst,
                            fc_idx no, fc_idx A, fc_idx nv) {
    if (b->n == FC_GROUP || (b->n && (no != b->no || A != b->A || nv != b->nv)))
        FN(gather_flush)(b, q);
    q->src[b->n] = src;
    q->dst[b->n] = dst;
    b->no = no;
    b->A = A;
    b->nv = nv;
    b->n++;
}

/* Average backward work item: input rows [r0, r1) of one plane. */
static FC_TARGET int FN(avg_bwd_item)(const fc_pool_job *j, fc_idx item) {
    const fc_idx H = j->H, W = j->W, OH = j->OH, OW = j->OW, kh = j->kh;
    const fc_idx sh = j->sh, sw = j->sw, ph = j->ph, pw = j->pw;
    const fc_idx LQS = j->LQS, LG = j->LG, GP = j->GP;
    const fc_idx plane = item / j->nblocks, blk = item % j->nblocks;
    const fc_idx n = plane / j->C, c = plane % j->C;
    const fc_idx r0 = blk * j->rows_per_item, r1 = FC_MIN(H, r0 + j->rows_per_item);
    /* outputs whose rows [oh*sh - ph, oh*sh - ph + kh) meet [r0, r1) */
    const fc_idx oh_lo = r0 + ph - kh + 1 <= 0 ? 0 : FC_CEIL_DIV(r0 + ph - kh + 1, sh);
    const fc_idx oh_hi = FC_MIN(OH, (r1 - 1 + ph) / sh + 1);
    T *gdb = (T *)fc_ws_get(1, (size_t)FC_MAX(oh_hi - oh_lo, 1) * LG * sizeof(T) + FC_POOL_SLACK);
    T *pb = (T *)fc_ws_get(0, (size_t)(sw * LQS) * sizeof(T) + FC_POOL_SLACK);
    if (!gdb || !pb) return -1;
    const T *go = (const T *)j->src + n * j->ss[0] + c * j->ss[1];
    const fc_idx gs2 = j->ss[2], gs3 = j->ss[3];
    const T *drow = (const T *)j->drow, *dcol = (const T *)j->dcol;

    /* 1. the scaled gradient rows grad/divisor, with GP zeros before and zeros after */
    for (fc_idx oh = oh_lo; oh < oh_hi; oh++) {
        T *gr = gdb + (oh - oh_lo) * LG;
        const T *g = go + oh * gs2;
        const VEC dr = (VEC){0} + drow[oh];
        for (fc_idx i = 0; i < LG; i += VL) STOREU(gr + i, (VEC){0});
        if (gs3 == 1 && OW >= VL) {
            for (fc_idx ow = 0; ow < OW; ow += VL) {
                if (ow + VL > OW) ow = OW - VL; /* overlapping last chunk: same values */
                STOREU(gr + GP + ow, LOADU(g + ow) / (dr * LOADU(dcol + ow)));
            }
        } else {
            for (fc_idx ow = 0; ow < OW; ow++) gr[GP + ow] = g[ow * gs3];
            for (fc_idx ow = 0; ow < OW; ow += VL)
                STOREU(gr + GP + ow, LOADU(gr + GP + ow) / (dr * LOADU(dcol + ow)));
        }
    }
    T *gi = (T *)j->dst + plane * H * W;
    if (kh == sh && j->kw == sw) {
        /* The windows tile the padded input: each input element lies in at most one window and
         * its gradient is 0 + grad/divisor of that window (0 + turns -0 into +0, as torch's
         * zero-initialised sum does). Expand each gradient row along the width once (I[c] for
         * padded columns c), then copy it to the sh input rows of its windows. */
        T *I = pb;
        fc_idx oh_prev = -1;
        for (fc_idx ih = r0; ih < r1; ih++) {
            const fc_idx oh = (ih + ph) / sh;
            T *girow = gi + ih * W;
            if (oh >= OH) {
                memset(girow, 0, (size_t)W * sizeof(T));
                continue;
            }
            if (oh != oh_prev) {
                const T *gr = gdb + (oh - oh_lo) * LG + GP;
                if (sw == 2) {
                    for (fc_idx ow = 0; 2 * ow < pw + W; ow += VL) {
                        VEC a = LOADU(gr + ow) + (T)0;
                        STOREU(I + 2 * ow, SHUF2(a, a, FC_ILO));
                        STOREU(I + 2 * ow + VL, SHUF2(a, a, FC_IHI));
                    }
                } else {
                    for (fc_idx col = 0; col < pw + W; col++) I[col] = gr[col / sw] + (T)0;
                }
                oh_prev = oh;
            }
            const T *src = I + pw;
            if (W >= VL) {
                for (fc_idx iw = 0; iw < W; iw += VL) {
                    if (iw + VL > W) iw = W - VL;
                    STOREU(girow + iw, LOADU(src + iw));
                }
            } else {
                memcpy(girow, src, (size_t)W * sizeof(T));
            }
        }
        return 0;
    }
    /* 2. the vector chunks of each phase's real columns [m_lo, m_hi): VL apart, the last one
     * moved back to end at m_hi (rewriting identical values); a short range is one chunk of nv */
    fc_idx *chunks = (fc_idx *)fc_ws_get(2, (size_t)(j->LQS / VL + 2) * (size_t)sw * sizeof(fc_idx));
    fc_idx *nch = (fc_idx *)fc_ws_get(3, (size_t)sw * 2 * sizeof(fc_idx));
    if (!chunks || !nch) return -1;
    const fc_idx cstride = j->LQS / VL + 2;
    for (fc_idx q = 0; q < sw; q++) {
        const fc_idx m_lo = j->qrange[2 * q], m_hi = j->qrange[2 * q + 1];
        fc_idx k = 0;
        for (fc_idx m = m_lo; m < m_hi; m += VL)
            chunks[q * cstride + k++] = (m + VL > m_hi && m_hi - m_lo >= VL) ? m_hi - VL : m;
        nch[2 * q] = k;
        nch[2 * q + 1] = FC_MIN((fc_idx)VL, m_hi - m_lo);
    }
    /* 3. every input row gathers from its output rows, oldest first. Tasks (one vector chunk
     * of one phase of one row) with the same term counts run FC_GROUP at a time. */
    FN(gather_batch) batch = {.n = 0, .LG = LG};
    FN(gather_tasks) tasks;
    for (fc_idx ih = r0; ih < r1; ih++) {
        const fc_idx oa = j->rowsrc[2 * ih], no = j->rowsrc[2 * ih + 1];
        const T *g0 = gdb + (oa - oh_lo) * LG + GP;
        T *girow = gi + ih * W;
        for (fc_idx q = 0; q < sw; q++) {
            const fc_idx A = j->qtaps[q], k_end = nch[2 * q], nv = nch[2 * q + 1];
            const fc_idx *ms = chunks + q * cstride;
            /* sw == 1: straight into the grad_input row (m = iw + pw) */
            T *dst = sw == 1 ? girow - pw : pb + q * LQS;
            if (no == 0 || A == 0) {
                for (fc_idx m = j->qrange[2 * q]; m < j->qrange[2 * q + 1]; m++) dst[m] = 0;
                continue;
            }
            for (fc_idx k = 0; k < k_end; k++)
                FN(gather_push)(&batch, &tasks, g0 + ms[k], dst + ms[k], no, A, nv);
        }
        if (sw > 1) {
            FN(gather_flush)(&batch, &tasks); /* the phase buffer is reused by the next row */
            FN(unsplit_row)(girow, pb, W, pw, sw, LQS);
        }
    }
    FN(gather_flush)(&batch, &tasks);
    return 0;
}

#undef FC_GROUP
#undef FC_ROWS_AVG
#undef FC_ROWS_MAX
#undef FC_ROWS_MAXIDX
#undef FC_POOL_SLACK
#undef FC_EVEN
#undef FC_ODD
#undef FC_ILO
#undef FC_IHI
#undef SHUF2
#undef SEL
#undef SELI
#undef LOADU
#undef STOREU
#undef LOADI
#undef ALWAYS
#undef VL
#undef FN
#undef VEC
#undef VECU
#undef VI
#undef VIU
#undef VL64
#undef VL64U
