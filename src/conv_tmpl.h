/* The convolution engine for one dtype; conv_engine.h includes it with T = float and double.
 *
 * Every pass is a set of independent work items; _kernels.pyx runs them in an OpenMP prange.
 * An item writes only its own part of the result, always in the same order, so results are
 * bitwise identical for any number of threads.
 *
 * forward      item (image group, g, p-block): build the "wide" buffer of each image of the
 *              group (usually one image; a few for small images whose pixels do not fill whole
 *              vectors), group g (zero padding applied, the stride split into phase planes so
 *              every tap reads a contiguous run), then an implicit GEMM
 *              out[k][p] = sum_t W[k][t] * buf[off[t] + p] over a tile of output pixels p, with
 *              register-blocked micro-kernels (gemm_tile, conv_isa_tmpl.h; its operands are the
 *              structs of conv_isa_api.h).
 * grad_input   the same GEMM on the padded grad_output with the kernel flipped and transposed,
 *              once per stride phase of the input (a transposed convolution without zero
 *              insertion): item (n, g, phase, p-block).
 * grad_weight  item (g, channel group, batch chunk): reduction over the chunk's pixels in
 *              registers (dw_kernel) into a partial weight gradient of that chunk; the chunks are
 *              then added in chunk order. Chunking depends on the shapes only, never on threads.
 * row bands    an image whose buffer for a pass (wide input, padded grad_output, transposed
 *              grad_output) would exceed fc_ws_cap_bytes() is processed in bands of output rows
 *              instead (fc_band_rows): forward and grad_input items are (image, group, [phase,]
 *              band), each building the buffer of its own band only; grad_weight loops over the
 *              bands of each image inside its item. Every output element is the same sum in the
 *              same order as on the whole-image path, so the results are identical.
 */
#define TF(name) FC_CAT(name, TN)

typedef fc_geom TF(fc_geom); /* conv_engine.h: one geometry type for both dtypes */

/* ---------- ISA function table ---------- */
typedef struct {
    int mr, nr, tr, vl;
    fc_idx bp_elems; /* size of gemm_tile's packed-panel buffer */
    /* the argument structs: conv_isa_api.h */
    void (*gemm_tile)(const TF(fc_packed_w) * w, const TF(fc_pixels) * px, fc_idx p0, fc_idx p1,
                      const TF(fc_tile) * out, T *Bp);
    void (*dw_kernel)(int tr, int nv, const TF(fc_dw_args) * a, T *C, fc_idx ldc);
    void (*dw_depthwise)(fc_idx ntaps, const TF(fc_dw_args) * a, T *res);
    void (*transpose)(const T *src, fc_idx lds, fc_idx rows, fc_idx cols, T *dst, fc_idx ldd);
    void (*split2_rows)(const T *src, T *dst, const fc_split2 *sp);
    void (*stream_copy)(T *dst, const T *src, fc_idx n);
    /* bfloat16 products (float32 only; NULL elsewhere and on the portable bfloat16 path, see
     * fc_bf16.h): gemm_tile's contract with the weights packed by pack_bf16 (conv_bf16.h) */
    void (*gemm_bf16)(const TF(fc_packed_w) * w, const TF(fc_pixels) * px, fc_idx p0, fc_idx p1,
                      const TF(fc_tile) * out, T *Bp);
    void (*pack_bf16)(const T *w, fc_idx M, fc_idx TT, int MR, T *A);
    int bf16_mr, bf16_nr; /* rows and pixels of the bfloat16 GEMM's register blocks */
    fc_idx (*bf16_a_elems)(fc_idx M, fc_idx TT); /* elements of pack_bf16's weights */
    /* the channel-vectorised path of the forward and grad_input (conv_cv_tmpl.h): its
     * micro-kernel of np pixels, its packing of the weights, the vectors of channels and the
     * most pixels of its register blocks */
    void (*cv_kernel)(int np, const TF(fc_cv_args) * a);
    int (*cv_pack)(const T *w, fc_idx lds, fc_idx nt, fc_idx nk, T *Wp, fc_idx ldw);
    int cv_nv, cv_np;
    /* the depthwise path of the forward and grad_input (conv_dwd_tmpl.h): one channel plane */
    void (*dwd_kernel)(const TF(fc_dwd_args) * a);
    void (*dwd_pad_plane)(const T *src, fc_idx lds, fc_idx nh, fc_idx nw, T *dst, fc_idx Hq,
                          fc_idx Wq, fc_idx pt, fc_idx pl);
} TF(fc_isa);

/* The entry points and sizes of one ISA instantiation (conv_isa_tmpl.h); pixel blocks are
 * multiples of two vectors (nr). */
#define FC_ISA_ENTRY(isa)                                                                      \
    (TF(fc_isa)){FC_CAT(isa_mr, FC_CAT(TN, isa)), 2 * FC_CAT(isa_vl, FC_CAT(TN, isa)),          \
                 FC_CAT(isa_tr, FC_CAT(TN, isa)), FC_CAT(isa_vl, FC_CAT(TN, isa)),              \
                 FC_CAT(gemm_bp_elems, FC_CAT(TN, isa)), FC_CAT(gemm_tile, FC_CAT(TN, isa)),   \
                 FC_CAT(dw_kernel, FC_CAT(TN, isa)), FC_CAT(dw_depthwise, FC_CAT(TN, isa)),    \
                 FC_CAT(transpose, FC_CAT(TN, isa)), FC_CAT(split2_rows, FC_CAT(TN, isa)),     \
                 FC_CAT(stream_copy, FC_CAT(TN, isa)), NULL, NULL, 0, 0, NULL,               \
                 FC_CAT(cv_kernel, FC_CAT(TN, isa)), FC_CAT(cv_pack, FC_CAT(TN, isa)),         \
                 FC_CAT(isa_cv_nv, FC_CAT(TN, isa)),                                           \
                 FC_CAT(isa_cv_np, FC_CAT(TN, isa)), FC_CAT(dwd_kernel, FC_CAT(TN, isa)),   \
                 FC_CAT(dwd_pad_plane, FC_CAT(TN, isa))}

static void TF(fc_isa_table)(TF(fc_isa) * t) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (fc_isa_level >= FC_ISA_AVX512) {
        *t = FC_ISA_ENTRY(avx512);
        return;
    }
    if (fc_isa_level >= FC_ISA_AVX2) {
        *t = FC_ISA_ENTRY(avx2);
        return;
    }
#endif
    *t = FC_ISA_ENTRY(generic);
}
#undef FC_ISA_ENTRY

/* ---------- the wide input buffer ----------
 * Channel c, stride phase (ph, pw), phase row qh, column qw holds padded input
 * (qh*sh + ph, qw*sw + pw), i.e. x[c][qh*sh + ph - pt][qw*sw + pw - pl] or 0 outside the image.
 * Tap (c, r, s) of output pixel p = oh*Wq + ow then sits at off[c, r, s] + p. */
typedef struct {
    fc_idx Hq, Wq, plane, chstride;
} TF(fc_wide);

static void TF(fc_wide_layout)(const TF(fc_geom) * g, TF(fc_wide) * wl) {
    fc_idx hneed = (g->OH - 1) * g->sh + (g->R - 1) * g->dh + 1;
    fc_idx wneed = (g->OW - 1) * g->sw + (g->S - 1) * g->dw + 1;
    wl->Hq = FC_CEIL_DIV(hneed, g->sh);
    wl->Wq = FC_CEIL_DIV(wneed, g->sw);
    wl->plane = wl->Hq * wl->Wq;
    wl->chstride = g->sh * g->sw * wl->plane;
}

static void TF(fc_tap_offsets)(const TF(fc_geom) * g, const TF(fc_wide) * wl, fc_idx channels,
                               fc_idx *off) {
    fc_idx RS = g->R * g->S;
    for (fc_idx c = 0; c < channels; c++)
        for (fc_idx r = 0; r < g->R; r++)
            for (fc_idx s = 0; s < g->S; s++) {
                fc_idx rh = r * g->dh, sw_ = s * g->dw;
                off[c * RS + r * g->S + s] =
                    c * wl->chstride + ((rh % g->sh) * g->sw + sw_ % g->sw) * wl->plane +
                    (rh / g->sh) * wl->Wq + sw_ / g->sw;
            }
}

/* Zero row[0, min(a, Wq)) and row[b, Wq) (b >= a): the padding columns of a phase row. */
static inline void TF(fc_zero_outside)(T *row, fc_idx a, fc_idx b, fc_idx Wq) {
    a = FC_MIN(a, Wq);
    b = FC_MIN(FC_MAX(b, a), Wq);
    for (fc_idx q = 0; q < a; q++) row[q] = 0; /* a column or two: no memset call */
    for (fc_idx q = b; q < Wq; q++) row[q] = 0;
}

/* Channel plane xc (rows hs apart, contiguous) split for sw == 2 into dst's sh * 2 phase planes:
 * input column w = 2j lands in column phase pl % 2 at column j + pl / 2, w = 2j + 1 in the other
 * phase at j + (pl + 1) / 2; the rows of padding are zeroed. */
static void TF(fc_wide_s2)(const TF(fc_isa) * isa, const TF(fc_geom) * g, const TF(fc_wide) * wl,
                           const T *xc, fc_idx hs, T *dst) {
    fc_idx Wq = wl->Wq, plane = wl->plane;
    for (fc_idx ph = 0; ph < g->sh; ph++) {
        fc_idx q_lo = g->pt - ph > 0 ? FC_CEIL_DIV(g->pt - ph, g->sh) : 0;
        fc_idx q_hi = g->H - 1 + g->pt - ph >= 0 ? (g->H - 1 + g->pt - ph) / g->sh + 1 : 0;
        q_lo = FC_MIN(q_lo, wl->Hq);
        q_hi = FC_MAX(FC_MIN(q_hi, wl->Hq), q_lo);
        for (fc_idx pw = 0; pw < 2; pw++) {
            T *p = dst + (ph * 2 + pw) * plane;
            memset(p, 0, (size_t)(q_lo * Wq) * sizeof(T));
            memset(p + q_hi * Wq, 0, (size_t)((wl->Hq - q_hi) * Wq) * sizeof(T));
        }
    }
    fc_idx nrows = FC_MIN(g->H, wl->Hq * g->sh - g->pt); /* input rows that land in a phase row */
    const fc_split2 sp = {.lds = hs, .nrows = nrows, .W = g->W, .r0 = g->pt, .sh = g->sh,
                          .phs = 2 * plane, .pws = plane, .qe = g->pl / 2, .qo = (g->pl + 1) / 2,
                          .Wq = Wq, .pe = (int)(g->pl & 1)};
    if (nrows > 0) isa->split2_rows(xc, dst, &sp);
}

/* Fill buf with channels [c0, c0 + nc) of image n (x has element strides xs), zero the slack. */
static void TF(fc_build_wide)(const TF(fc_isa) * isa, const TF(fc_geom) * g,
                              const TF(fc_wide) * wl, const T *x, const fc_idx *xs, fc_idx n,
                              fc_idx c0, fc_idx nc, T *buf, fc_idx bufsize) {
    const fc_idx pf_rows = fc_prefetch_ahead(g->W * (fc_idx)sizeof(T));
    for (fc_idx c = 0; c < nc; c++) {
        const T *xc = x + n * xs[0] + (c0 + c) * xs[1];
        if (g->sw == 2 && xs[3] == 1) {
            TF(fc_wide_s2)(isa, g, wl, xc, xs[2], buf + c * wl->chstride);
            continue;
        }
        for (fc_idx ph = 0; ph < g->sh; ph++)
            for (fc_idx pw = 0; pw < g->sw; pw++) {
                T *dst = buf + c * wl->chstride + (ph * g->sw + pw) * wl->plane;
                /* columns qw with 0 <= qw*sw + pw - pl < W */
                fc_idx q_lo = 0, q_hi;
                if (g->pl - pw > 0) q_lo = FC_CEIL_DIV(g->pl - pw, g->sw);
                q_hi = (g->W - 1 + g->pl - pw) >= 0 ? (g->W - 1 + g->pl - pw) / g->sw + 1 : 0;
                q_lo = FC_MIN(q_lo, wl->Wq);
                q_hi = FC_MAX(FC_MIN(q_hi, wl->Wq), q_lo);
                for (fc_idx qh = 0; qh < wl->Hq; qh++) {
                    T *row = dst + qh * wl->Wq;
                    fc_idx h = qh * g->sh + ph - g->pt;
                    if (h < 0 || h >= g->H || q_hi == q_lo) {
                        memset(row, 0, (size_t)wl->Wq * sizeof(T));
                        continue;
                    }
                    const T *src = xc + h * xs[2];
                    fc_idx w0 = q_lo * g->sw + pw - g->pl;
                    if (g->sw == 1 && xs[3] == 1) {
                        fc_prefetch_row(src + pf_rows * xs[2], g->W * (fc_idx)sizeof(T));
                        memcpy(row + q_lo, src + w0, (size_t)(q_hi - q_lo) * sizeof(T));
                    } else {
                        fc_idx step = g->sw * xs[3];
                        const T *sp = src + w0 * xs[3];
                        for (fc_idx q = q_lo; q < q_hi; q++, sp += step) row[q] = *sp;
                    }
                    TF(fc_zero_outside)(row, q_lo, q_hi, wl->Wq);
                }
            }
    }
    fc_idx used = nc * wl->chstride;
    if (bufsize > used) memset(buf + used, 0, (size_t)(bufsize - used) * sizeof(T));
}

/* When the wide layout of channels [c0, ...) of image n is the input itself (no padding, stride
 * 1, contiguous planes), return a pointer into x instead of building a copy -- provided the
 * `need` elements read from there (slack for whole-vector reads included) stay inside x. */
static const T *TF(fc_wide_view)(const TF(fc_geom) * g, const TF(fc_wide) * wl, const T *x,
                                 const fc_idx *xs, fc_idx n, fc_idx c0, fc_idx need) {
    fc_idx hw = g->H * g->W;
    if (g->pt || g->pl || g->sh != 1 || g->sw != 1 || wl->Hq != g->H || wl->Wq != g->W ||
        xs[3] != 1 || xs[2] != g->W || xs[1] != hw || xs[0] != g->C * hw)
        return NULL;
    fc_idx start = n * xs[0] + c0 * hw;
    return start + need <= g->N * xs[0] ? x + start : NULL;
}

/* ---------- row bands ----------
 * A band of output rows [r0, r0 + rows) is a contiguous range of pixels p = oh*OW + ow. Its wide
 * buffer is that of an image of band_rows output rows (the same for every band, so one set of
 * tap offsets serves all) cut from the input at the rows its taps read. */

/* Rows per band of a buffer of per_row elements per row, `halo` rows more than the band has
 * (those its taps reach beyond it), next to another of row_elems per row (0: none): the most
 * that fit in fc_ws_band_bytes() (built and consumed in cache), but at least FC_BAND_MIN_HALOS
 * halos while that fits in the cap (the halo, copied once more per band, then adds at most a
 * quarter); at least one (a single row may need more) and at most `limit`. */
#define FC_BAND_MIN_HALOS 4
static fc_idx TF(fc_band_rows_for)(fc_idx per_row, fc_idx halo, fc_idx row_elems, fc_idx limit) {
    fc_idx fit[2];
    int64_t budget[2] = {fc_ws_band_bytes(), fc_ws_cap_bytes()};
    for (int i = 0; i < 2; i++) {
        fc_idx elems = (fc_idx)(budget[i] / (int64_t)sizeof(T));
        fit[i] = elems / FC_MAX(per_row, (fc_idx)1) - halo;
        if (row_elems > 0) fit[i] = FC_MIN(fit[i], elems / row_elems);
    }
    fc_idx rows = FC_MAX(fit[0], FC_MIN(FC_BAND_MIN_HALOS * halo, fit[1]));
    return FC_MAX((fc_idx)1, FC_MIN(rows, limit));
}

/* Output rows per band of the wide buffer of `channels` channels (phase rows Hq(rows) =
 * rows + halo), next to row_elems elements per output row of grad_output. */
static fc_idx TF(fc_band_rows)(const TF(fc_geom) * g, const TF(fc_wide) * wl, fc_idx channels,
                               fc_idx row_elems) {
    fc_idx halo = FC_CEIL_DIV((g->R - 1) * g->dh + 1, g->sh) - 1;
    return TF(fc_band_rows_for)(channels * g->sh * g->sw * wl->Wq, halo, row_elems, g->OH);
}

/* The geometry seen by the band of `rows` output rows from row r0: the input from row *shift on
 * (the first row its taps read, or row 0 while that lies in the top padding), with the padding
 * left above it. fc_build_wide of it, from x + *shift rows, fills the band's wide buffer. */
static void TF(fc_band_geom)(const TF(fc_geom) * g, fc_idx r0, fc_idx rows, TF(fc_geom) * bg,
                             fc_idx *shift) {
    fc_idx top = r0 * g->sh - g->pt;
    *bg = *g;
    *shift = FC_MIN(FC_MAX(top, (fc_idx)0), g->H); /* past the image: every row is padding */
    bg->pt = FC_MAX(-top, (fc_idx)0);
    bg->H = g->H - *shift;
    bg->OH = rows;
}

/* The band layout: band rows, its wide layout, the tap offsets of `channels` channels in it
 * (off, [channels*R*S]) and the largest of the first `first` of them. */
static fc_idx TF(fc_band_layout)(const TF(fc_geom) * g, fc_idx band_rows, fc_idx channels,
                                 fc_idx first, TF(fc_wide) * bwl, fc_idx *off) {
    TF(fc_geom) bg;
    fc_idx shift, max_off = 0;
    TF(fc_band_geom)(g, 0, band_rows, &bg, &shift);
    TF(fc_wide_layout)(&bg, bwl);
    TF(fc_tap_offsets)(&bg, bwl, channels, off);
    for (fc_idx t = 0; t < first; t++) max_off = FC_MAX(max_off, off[t]);
    return max_off;
}

/* Build the band of output rows from r0 (band_rows of them in the layout bwl) of channels
 * [c0, c0 + nc) of image n into buf. */
static void TF(fc_build_band)(const TF(fc_isa) * isa, const TF(fc_geom) * g,
                              const TF(fc_wide) * bwl, fc_idx band_rows, const T *x,
                              const fc_idx *xs, fc_idx n, fc_idx c0, fc_idx nc, fc_idx r0, T *buf,
                              fc_idx bufsize) {
    TF(fc_geom) bg;
    fc_idx shift;
    TF(fc_band_geom)(g, r0, band_rows, &bg, &shift);
    TF(fc_build_wide)(isa, &bg, bwl, x + shift * xs[2], xs, n, c0, nc, buf, bufsize);
}

typedef void (*TF(fc_copy_fn))(T *, const T *, fc_idx);
static void TF(fc_copy)(T *dst, const T *src, fc_idx n) { memcpy(dst, src, (size_t)n * sizeof(T)); }

/* Where the pixels of a tile go (fc_writeback): tile row m, pixel (oh, ow) of image i (images of
 * OHv rows of rowlen pixels) lands at out[i*imgs + m*ocs + (row0 + oh*rstep)*ors + col0 +
 * ow*cstep]; contiguous runs are written by `copy` (fc_copy, or the ISA's stream_copy for outputs
 * too large to stay in the cache). The forward writes its plain layout (row0 = col0 = 0, steps
 * 1), grad_input one stride phase. */
typedef struct {
    T *out;
    fc_idx imgs, ocs, ors;
    fc_idx rowlen, OHv;
    fc_idx row0, rstep, col0, cstep;
    TF(fc_copy_fn) copy;
} TF(fc_out_view);

/* Pixels p = oh*rowlen + ow of [p0, min(p1, OHv*rowlen)) of one image, tile Ct (rows ldc apart,
 * column p - p0), to that image's output `out` in the layout of view v. */
static void TF(fc_writeback_image)(const T *Ct, fc_idx ldc, fc_idx M, fc_idx p0, fc_idx p1,
                                   const TF(fc_out_view) * v, T *out) {
    const fc_idx rowlen = v->rowlen, ocs = v->ocs, ors = v->ors, cstep = v->cstep;
    p1 = FC_MIN(p1, v->OHv * rowlen);
    if (cstep == 1 && v->rstep == 1 && v->col0 == 0 && ors == rowlen) { /* whole rows: one run */
        for (fc_idx m = 0; m < M; m++)
            v->copy(out + m * ocs + v->row0 * ors + p0, Ct + m * ldc, p1 - p0);
        return;
    }
    for (fc_idx m = 0; m < M; m++) {
        const T *crow = Ct + m * ldc - p0;
        T *oc = out + m * ocs;
        for (fc_idx p = p0; p < p1;) {
            fc_idx oh = p / rowlen, ow0 = p % rowlen;
            fc_idx ow1 = FC_MIN(rowlen, p1 - oh * rowlen);
            T *orow = oc + (v->row0 + oh * v->rstep) * ors + v->col0;
            const T *src = crow + oh * rowlen;
            if (cstep == 1)
                v->copy(orow + ow0, src + ow0, ow1 - ow0);
            else
                for (fc_idx ow = ow0; ow < ow1; ow++) orow[ow * cstep] = src[ow];
            p = oh * rowlen + ow1;
        }
    }
}

/* A scratch tile Ct of pixels [p0, p1) of images side by side, P pixels each, written back
 * image by image through the view v. */
static void TF(fc_writeback)(const T *Ct, fc_idx ldc, fc_idx M, fc_idx p0, fc_idx p1, fc_idx P,
                             const TF(fc_out_view) * v) {
    for (fc_idx p = p0; p < p1;) {
        fc_idx i = p / P, q = p - i * P, len = FC_MIN(P - q, p1 - p);
        TF(fc_writeback_image)(Ct + (p - p0), ldc, M, q, q + len, v, v->out + i * v->imgs);
        p += len;
    }
}

/* Bytes of an output tile: it stays in L2 while every tap block passes over it. */
#define FC_TILE_BYTES 131072
/* Choose the pixel-block width: a [M][PB] tile of about FC_TILE_BYTES, and enough items to keep
 * the threads busy. */
static fc_idx TF(fc_pixel_block)(fc_idx M, fc_idx Pr, int nr, fc_idx outer_items, int nthreads) {
    fc_idx nblk = FC_CEIL_DIV(M * Pr * (fc_idx)sizeof(T), (fc_idx)FC_TILE_BYTES);
    if (nblk < 1) nblk = 1;
    while (outer_items * nblk < 4 * (fc_idx)nthreads && nblk * 2 * nr <= Pr) nblk++;
    return FC_ROUND_UP(FC_CEIL_DIV(Pr, nblk), nr);
}

/* Weights of at least this many elements are packed by the call's threads, as its preparation
 * items (a row block each, or a group for the bfloat16 GEMM); smaller ones by the calling thread
 * in prepare, as a parallel region of its own would cost more than it saves. Packing is a copy:
 * who does it changes no result. */
#define FC_PACK_PARALLEL_ELEMS ((fc_idx)1 << 16)

#include "conv_cv_tmpl.h"

/* =============================== forward =============================== */
/* How many images one item puts side by side in its pixel range: 1, unless an image's P pixels
 * leave more than 1% of the lanes of its vectors empty (196 = 12.25 x 16 for a 14 x 14 output)
 * and a few images fill whole vectors (4 x 196 = 49 x 16), with their wide buffers (bufsize
 * elements each) together at most 4 MiB. */
#define FC_GROUP_MAX_IMAGES 8 /* beyond this, an image's lanes are too few to matter */
#define FC_GROUP_MAX_BYTES ((fc_idx)4 << 20) /* the group's buffers stay in L2/L3 */
#define FC_GROUP_EMPTY_LANES 100 /* group when more than 1 in this many lanes are empty */
static fc_idx TF(fc_images_per_item)(fc_idx P, int vl, fc_idx N, fc_idx bufsize) {
    const fc_idx lanes = FC_ROUND_UP(P, (fc_idx)vl);
    if (P <= 0 || FC_GROUP_EMPTY_LANES * (lanes - P) <= lanes) return 1;
    const fc_idx cap = FC_GROUP_MAX_BYTES / (fc_idx)sizeof(T);
    for (fc_idx k = 2; k <= FC_GROUP_MAX_IMAGES && k <= N && k * bufsize <= cap; k++)
        if ((k * P) % vl == 0) return k;
    return 1;
}
typedef struct {
    TF(fc_geom) g;
    TF(fc_isa) isa;
    const T *x;
    fc_idx xs[4];
    const T *w; /* contiguous (K, Cg, R, S) */
    const T *bias;
    T *out; /* contiguous (N, K, OH, OW) */
    fc_idx Cg, Kg, TT, nmb, P, Pr, PB, nPB, nitems, bufsize;
    fc_idx NB, ngroups; /* images side by side in one item's pixel range, groups of them */
    int stream;         /* non-temporal final stores (large outputs) */
    int act;            /* the epilogue's activation (FC_ACT_*) and leaky_relu's slope */
    T slope;
    int math;           /* FC_MATH_*: float32 products, or bfloat16 ones (fc_fwd_math) */
    int nr;             /* pixel blocks are multiples of this: the GEMM's widest panel */
    fc_idx npre;        /* preparation items: the packing of A (fc_fwd_pre_item) */
    /* gemm_tile, or the ISA's bfloat16 GEMM (math FC_MATH_BF16_GEMM) */
    void (*gemm)(const TF(fc_packed_w) * w, const TF(fc_pixels) * px, fc_idx p0, fc_idx p1,
                 const TF(fc_tile) * out, T *Bp);
    TF(fc_wide) wl;
    T *A;        /* per group a_group elements: [nmb][TT][MR] (pack_rows) or pack_bf16's */
    fc_idx a_group;
    size_t a_bytes;
    fc_idx *off; /* [TT] */
    uint64_t call;
    /* row bands (band_rows > 0): layout and tap offsets of a band's wide buffer; max_off is
     * the largest of off (a band read straight from the input uses off) */
    fc_idx band_rows, nbands, bbufsize, max_off;
    TF(fc_wide) bwl;
    fc_idx *boff; /* [TT] */
    TF(fc_cv_plan) * cv; /* the channel-vectorised path (conv_cv_tmpl.h) runs the layer, or NULL */
    fc_idx dwd_cb;       /* the depthwise path (conv_dwd_tmpl.h) runs it: channels per item; or 0 */
} TF(fc_fwd_plan);

static int TF(fc_fwd_dwd)(TF(fc_fwd_plan) * pl, int nthreads);
static int TF(fc_fwd_dwd_item)(const TF(fc_fwd_plan) * pl, fc_idx item);

/* A[mb][t][i] = w[m0 + i][t] for the rows m0 + i of each balanced row block mb (fc_row_block)
 * of the M x TT matrix w, MR lanes per tap (those past a short block are left alone: never
 * read). Written in order, reading the block's rows in step, so that the stores are sequential:
 * it runs on the calling thread, before the parallel items, so its time is not shared out. */
static void TF(fc_pack_row_block)(const T *restrict w, fc_idx M, fc_idx TT, int MR, fc_idx mb,
                                  T *restrict A) {
    fc_idx m0;
    int mr;
    fc_row_block(M, MR, mb, &m0, &mr);
    const T *restrict wm = w + m0 * TT;
    T *restrict a = A + mb * TT * MR;
    for (fc_idx t = 0; t < TT; t++)
        for (int i = 0; i < mr; i++) a[t * MR + i] = wm[i * TT + t];
}

static void TF(fc_pack_rows)(const T *restrict w, fc_idx M, fc_idx TT, int MR, T *restrict A) {
    for (fc_idx mb = 0; mb < FC_CEIL_DIV(M, MR); mb++) TF(fc_pack_row_block)(w, M, TT, MR, mb, A);
}

/* a[0:n] rounded to bfloat16 in place (float32 only: the job refuses bfloat16 math otherwise) */
static void TF(fc_round_bf16)(T *a, fc_idx n) {
    if (sizeof(T) == sizeof(float))
        fc_bf16_round_f32((const float *)(void *)a, (float *)(void *)a, n);
}

/* Preparation item i of a forward: the weights of group i (bfloat16 GEMM), or of row block
 * i % nmb of group i / nmb, packed (and rounded to bfloat16 where the plan rounds). */
static int TF(fc_fwd_pre_item)(const TF(fc_fwd_plan) * pl, fc_idx i) {
    if (pl->cv) return TF(fc_cv_pre_item)(pl->cv, i);
    const int gemm = pl->math == FC_MATH_BF16_GEMM, MRv = gemm ? pl->isa.bf16_mr : pl->isa.mr;
    const fc_idx nmb = FC_CEIL_DIV(pl->Kg, MRv), gi = gemm ? i : i / nmb, mb = i % nmb;
    const T *w = pl->w + gi * pl->Kg * pl->TT;
    T *A = pl->A + gi * pl->a_group;
    if (gemm) {
        pl->isa.pack_bf16(w, pl->Kg, pl->TT, MRv, A);
        return 0;
    }
    TF(fc_pack_row_block)(w, pl->Kg, pl->TT, MRv, mb, A);
    if (pl->math == FC_MATH_BF16_ROUND) TF(fc_round_bf16)(A + mb * pl->TT * MRv, pl->TT * MRv);
    return 0;
}

/* How a forward asked for bfloat16 products (math != FC_MATH_F32) gets them: from the ISA's
 * bfloat16 GEMM, which converts the pixels as it packs them, where there is one and at least two
 * row blocks of weights share each packed panel; otherwise by rounding the weights and every
 * wide buffer as they are built (no buffer is read straight from the input then), for the
 * float32 kernels. Also picks the GEMM and packs the weights. */
static int TF(fc_fwd_math)(TF(fc_fwd_plan) * pl) {
    const TF(fc_geom) *g = &pl->g;
    const int bmr = pl->isa.bf16_mr;
    if (pl->math != FC_MATH_F32)
        pl->math = pl->isa.gemm_bf16 && pl->isa.pack_bf16 && pl->Kg > bmr ? FC_MATH_BF16_GEMM
                                                                          : FC_MATH_BF16_ROUND;
    const int gemm = pl->math == FC_MATH_BF16_GEMM;
    const int MRv = gemm ? bmr : pl->isa.mr;
    pl->nr = gemm ? pl->isa.bf16_nr : pl->isa.nr;
    pl->a_group = gemm ? pl->isa.bf16_a_elems(pl->Kg, pl->TT) : pl->nmb * MRv * pl->TT;
    /* not zeroed: the micro-kernels read only the rows of their blocks, all written below */
    pl->a_bytes = (size_t)(g->G * pl->a_group) * sizeof(T);
    pl->A = (T *)fc_plan_alloc(pl->a_bytes);
    if (!pl->A) return -1;
    pl->gemm = gemm ? pl->isa.gemm_bf16 : pl->isa.gemm_tile;
    pl->npre = g->G * (gemm ? 1 : FC_CEIL_DIV(pl->Kg, MRv));
    if (g->G * pl->Kg * pl->TT < FC_PACK_PARALLEL_ELEMS) {
        for (fc_idx i = 0; i < pl->npre; i++) TF(fc_fwd_pre_item)(pl, i);
        pl->npre = 0;
    }
    return 0;
}

/* Row bands, for an image whose wide buffer would exceed the cap: item (image, group, band), the
 * band's pixels in blocks of PB. */
static int TF(fc_fwd_bands)(TF(fc_fwd_plan) * pl, int nthreads) {
    const TF(fc_geom) *g = &pl->g;
    int nr = pl->nr;
    pl->band_rows = TF(fc_band_rows)(g, &pl->wl, pl->Cg, 0);
    pl->nbands = FC_CEIL_DIV(g->OH, pl->band_rows);
    pl->boff = (fc_idx *)fc_aligned_calloc((size_t)pl->TT * sizeof(fc_idx));
    if (!pl->boff) return -1;
    fc_idx bmax = TF(fc_band_layout)(g, pl->band_rows, pl->Cg, pl->TT, &pl->bwl, pl->boff);
    pl->bbufsize = FC_MAX(pl->Cg * pl->bwl.chstride,
                          bmax + pl->band_rows * pl->bwl.Wq + FC_PANEL_VECS * pl->isa.vl) +
                   FC_SLACK;
    pl->NB = 1;
    pl->ngroups = g->N;
    pl->Pr = FC_ROUND_UP(pl->band_rows * g->OW, nr);
    pl->nitems = g->N * g->G * pl->nbands;
    pl->PB = TF(fc_pixel_block)(pl->Kg, pl->Pr, nr, pl->nitems, nthreads);
    pl->nPB = 1; /* items handed out together: no two share a buffer */
    return 0;
}

/* The layer on the channel-vectorised path (conv_cv_tmpl.h) where it applies: 1 (pl->cv
 * prepared), 0 (the GEMM's path), -1 (out of memory). */
static int TF(fc_fwd_cv)(TF(fc_fwd_plan) * pl, int nthreads) {
    const TF(fc_geom) *g = &pl->g;
    TF(fc_cv_plan) *cv = (TF(fc_cv_plan) *)fc_calloc(1, sizeof *cv);
    if (!cv) return -1;
    *cv = (TF(fc_cv_plan)){.N = g->N, .G = g->G, .Cin = pl->Cg, .Cout = pl->Kg, .R = g->R,
                           .S = g->S, .OH = g->OH, .OW = g->OW,
                           .mh = {g->H, g->sh, -g->pt, g->dh}, .mw = {g->W, g->sw, -g->pl, g->dw},
                           .sth = 1, .stw = 1, .ldo = g->OW, .ocs = pl->P, .Rw = g->R, .Sw = g->S,
                           .x = pl->x, .w = pl->w, .gin = 0, .bias = pl->bias, .out = pl->out,
                           .act = pl->act, .slope = pl->slope};
    memcpy(cv->xs, pl->xs, sizeof cv->xs);
    if (!TF(fc_cv_wanted)(cv, (fc_idx)pl->isa.cv_nv * pl->isa.vl)) {
        fc_free(cv);
        return 0;
    }
    pl->cv = cv; /* freed with the plan, prepared or not */
    if (TF(fc_cv_prepare)(cv, &pl->isa, nthreads)) return -1;
    pl->npre = cv->npre;
    pl->nitems = cv->nitems;
    return 1;
}

static int TF(fc_fwd_prepare)(TF(fc_fwd_plan) * pl, int nthreads) {
    TF(fc_geom) *g = &pl->g;
    int MRv = pl->isa.mr;
    pl->Cg = g->C / g->G;
    pl->Kg = g->K / g->G;
    fc_idx RS = g->R * g->S;
    pl->TT = pl->Cg * RS;
    pl->nmb = FC_CEIL_DIV(pl->Kg, MRv);
    TF(fc_wide_layout)(g, &pl->wl);
    pl->P = g->OH * g->OW;
    if (pl->math == FC_MATH_F32) {
        int st = TF(fc_fwd_cv)(pl, nthreads);
        if (st) return st < 0 ? -1 : 0;
    }
    pl->off = (fc_idx *)fc_aligned_calloc((size_t)pl->TT * sizeof(fc_idx));
    if (!pl->off) return -1;
    TF(fc_tap_offsets)(g, &pl->wl, pl->Cg, pl->off);
    fc_idx max_off = 0;
    for (fc_idx t = 0; t < pl->TT; t++) max_off = FC_MAX(max_off, pl->off[t]);
    pl->bufsize = FC_MAX(pl->Cg * pl->wl.chstride,
                         max_off + g->OH * pl->wl.Wq + FC_PANEL_VECS * pl->isa.vl) + FC_SLACK;
    pl->call = fc_next_call_id();
    pl->stream = g->N * g->K * pl->P * (fc_idx)sizeof(T) >= FC_STREAM_BYTES;
    const int banded = (int64_t)pl->bufsize * (int64_t)sizeof(T) > fc_ws_cap_bytes();
    if (!banded && TF(fc_fwd_dwd)(pl, nthreads)) return 0;
    if (TF(fc_fwd_math)(pl)) return -1;
    if (banded) {
        pl->max_off = max_off;
        return TF(fc_fwd_bands)(pl, nthreads);
    }
    pl->NB = TF(fc_images_per_item)(pl->P, pl->isa.vl, g->N, pl->bufsize);
    pl->ngroups = FC_CEIL_DIV(g->N, pl->NB);
    pl->Pr = FC_ROUND_UP(pl->NB * pl->P, pl->nr);
    pl->PB = TF(fc_pixel_block)(pl->Kg, pl->Pr, pl->nr, pl->ngroups * g->G, nthreads);
    pl->nPB = FC_CEIL_DIV(pl->Pr, pl->PB);
    pl->nitems = pl->ngroups * g->G * pl->nPB;
    return 0;
}

static void TF(fc_fwd_free)(TF(fc_fwd_plan) * pl) {
    if (pl->cv) {
        TF(fc_cv_free_all)(pl->cv, 1);
        pl->cv = NULL;
    }
    fc_plan_free(pl->A, pl->a_bytes);
    fc_free(pl->off);
    fc_free(pl->boff);
    pl->A = NULL;
    pl->off = pl->boff = NULL;
    fc_ws_trim(); /* after the parallel loops: see fc_common.h */
}

/* Forward of one band: item = (image n, group gi, band). The band is read straight from the
 * input where the whole-image path would (fc_wide_view), at the input's own tap offsets from
 * the band's first row; otherwise its own wide buffer is built. */
static int TF(fc_fwd_band_item)(const TF(fc_fwd_plan) * pl, fc_idx item) {
    const TF(fc_geom) *g = &pl->g;
    const int vl = pl->isa.vl;
    fc_idx band = item % pl->nbands, ng = item / pl->nbands;
    fc_idx gi = ng % g->G, n = ng / g->G;
    fc_idx r0 = band * pl->band_rows, rows = FC_MIN(pl->band_rows, g->OH - r0);
    fc_idx P = rows * g->OW, ocs = g->OH * g->OW, Wq = pl->wl.Wq;
    const fc_idx *off = pl->off;
    const T *src = pl->math == FC_MATH_BF16_ROUND
                       ? NULL
                       : TF(fc_wide_view)(g, &pl->wl, pl->x, pl->xs, n, gi * pl->Cg,
                                          (r0 + rows) * Wq + pl->max_off + FC_PANEL_VECS * vl +
                                              FC_SLACK);
    if (src) {
        src += r0 * Wq;
    } else {
        T *buf = (T *)fc_ws_get(0, (size_t)pl->bbufsize * sizeof(T));
        if (!buf) return -1;
        fc_ws()->cached_call = 0; /* slot 0 now holds a band */
        TF(fc_build_band)(&pl->isa, g, &pl->bwl, pl->band_rows, pl->x, pl->xs, n, gi * pl->Cg,
                          pl->Cg, r0, buf, pl->bbufsize);
        if (pl->math == FC_MATH_BF16_ROUND) TF(fc_round_bf16)(buf, pl->bbufsize);
        src = buf;
        off = pl->boff;
        Wq = pl->bwl.Wq;
    }
    /* written straight into the output when no vector store can run past the band (see
     * fc_fwd_item) */
    const int direct = pl->nmb > 1 ? P % vl == 0 : g->OW % vl == 0;
    T *out = pl->out + (n * g->K + gi * pl->Kg) * ocs + r0 * g->OW;
    const T *bias = pl->bias ? pl->bias + gi * pl->Kg : NULL;
    fc_idx ldc = direct ? ocs : pl->PB + FC_PANEL_VECS * vl;
    T *Ct = direct ? NULL : (T *)fc_ws_get(1, (size_t)(pl->Kg * ldc) * sizeof(T));
    T *Bp = (T *)fc_ws_get(3, (size_t)pl->isa.bp_elems * sizeof(T));
    if ((!direct && !Ct) || !Bp) return -1;
    const TF(fc_packed_w) wts = {pl->A + gi * pl->a_group, pl->Kg, pl->TT};
    const TF(fc_pixels) px = {.B = src, .off = off, .rowlen = Wq == g->OW ? P : g->OW, .Wq = Wq,
                              .Pimg = P, .imgs = 0, .P = P};
    const TF(fc_out_view) view = {.out = out, .imgs = 0, .ocs = ocs, .ors = g->OW,
                                  .rowlen = g->OW, .OHv = rows, .rstep = 1, .cstep = 1,
                                  .copy = pl->stream ? pl->isa.stream_copy : TF(fc_copy)};
    for (fc_idx p0 = 0; p0 < P; p0 += pl->PB) {
        fc_idx p1 = FC_MIN(FC_ROUND_UP(P, (fc_idx)pl->nr), p0 + pl->PB);
        const TF(fc_tile) tile = {direct ? out + p0 : Ct, ldc, bias, direct && pl->stream,
                                  pl->act, pl->slope};
        pl->gemm(&wts, &px, p0, p1, &tile, Bp);
        if (!direct) {
            TF(fc_writeback)(Ct, ldc, pl->Kg, p0, FC_MIN(p1, P), P, &view);
            if (pl->stream) FC_SFENCE();
        }
    }
    return 0;
}

/* Returns -1 if this thread's workspace cannot be allocated. */
static int TF(fc_fwd_item)(const TF(fc_fwd_plan) * pl, fc_idx item) {
    if (pl->cv) return TF(fc_cv_item)(pl->cv, item);
    if (pl->dwd_cb) return TF(fc_fwd_dwd_item)(pl, item);
    if (pl->band_rows) return TF(fc_fwd_band_item)(pl, item);
    const TF(fc_geom) *g = &pl->g;
    fc_idx pb = item % pl->nPB, ng = item / pl->nPB;
    fc_idx gi = ng % g->G, n0 = (ng / g->G) * pl->NB, nb = FC_MIN(pl->NB, g->N - n0);
    fc_idx P = pl->P, Ptot = nb * P, p0 = pb * pl->PB, p1 = FC_MIN(pl->Pr, p0 + pl->PB);
    if (p0 >= Ptot) return 0; /* a block past the pixels of a last, smaller group */
    const T *view = pl->math == FC_MATH_BF16_ROUND
                        ? NULL
                        : TF(fc_wide_view)(g, &pl->wl, pl->x, pl->xs, n0, gi * pl->Cg, pl->bufsize);
    if (view && nb > 1 &&
        !TF(fc_wide_view)(g, &pl->wl, pl->x, pl->xs, n0 + nb - 1, gi * pl->Cg, pl->bufsize))
        view = NULL;
    fc_idx imgs = view ? pl->xs[0] : pl->bufsize; /* image stride in the wide buffers */
    T *buf = view ? NULL : (T *)fc_ws_get(0, (size_t)(pl->NB * pl->bufsize) * sizeof(T));
    /* When no vector store can run past the plane (see gemm_tile's two modes), the tile is
     * written straight into the output, bias as the accumulators' start value; otherwise into a
     * scratch tile with room for the overrun, then copied. */
    const int direct =
        pl->NB == 1 && (pl->nmb > 1 ? P % pl->isa.vl == 0 : g->OW % pl->isa.vl == 0);
    fc_idx ocs = g->OH * g->OW;
    T *out = pl->out + (n0 * g->K + gi * pl->Kg) * ocs;
    const T *bias = pl->bias ? pl->bias + gi * pl->Kg : NULL;
    fc_idx ldc = direct ? ocs : pl->PB + FC_PANEL_VECS * pl->isa.vl;
    T *Ct = direct ? out + p0 : (T *)fc_ws_get(1, (size_t)(pl->Kg * ldc) * sizeof(T));
    T *Bp = (T *)fc_ws_get(3, (size_t)pl->isa.bp_elems * sizeof(T));
    if ((!view && !buf) || !Ct || !Bp) return -1;
    fc_workspace *ws = fc_ws();
    if (!view && (ws->cached_call != pl->call || ws->cached_key != ng)) {
        for (fc_idx i = 0; i < nb; i++)
            TF(fc_build_wide)(&pl->isa, g, &pl->wl, pl->x, pl->xs, n0 + i, gi * pl->Cg, pl->Cg,
                              buf + i * pl->bufsize, pl->bufsize);
        if (pl->math == FC_MATH_BF16_ROUND) TF(fc_round_bf16)(buf, nb * pl->bufsize);
        ws->cached_call = pl->call;
        ws->cached_key = ng;
    }
    const T *src = view ? view : buf;
    /* rows without gaps between them (Wq == OW, e.g. a 1x1 kernel) make one long row: every
     * panel is then read in place */
    const TF(fc_packed_w) wts = {pl->A + gi * pl->a_group, pl->Kg, pl->TT};
    const TF(fc_pixels) px = {.B = src, .off = pl->off, .rowlen = pl->wl.Wq == g->OW ? P : g->OW,
                              .Wq = pl->wl.Wq, .Pimg = P, .imgs = imgs, .P = Ptot};
    const TF(fc_tile) tile = {Ct, ldc, bias, direct && pl->stream, pl->act, pl->slope};
    pl->gemm(&wts, &px, p0, p1, &tile, Bp);
    if (!direct) {
        const TF(fc_out_view) view = {.out = out, .imgs = g->K * ocs, .ocs = ocs, .ors = g->OW,
                                      .rowlen = g->OW, .OHv = g->OH, .rstep = 1, .cstep = 1,
                                      .copy = pl->stream ? pl->isa.stream_copy : TF(fc_copy)};
        TF(fc_writeback)(Ct, ldc, pl->Kg, p0, FC_MIN(p1, Ptot), P, &view);
        if (pl->stream) FC_SFENCE();
    }
    return 0;
}

/* =============================== grad_input ===============================
 * Along one axis, with stride s, dilation d, padding p and R taps: padded input row hp = j*s + phi
 * receives sum over taps r with (r*d) % s == phi of W[r] * dy[j - (r*d)/s]. For each phase phi
 * this is a stride-1 correlation of the padded grad_output with the taps of that phase. */
typedef struct {
    fc_idx ntaps, *taps, *u; /* taps r of this phase and their row shifts (r*d)/s (R slots each) */
    fc_idx j0, J;            /* first phase row with a real input row, number of them */
} TF(fc_phase1d);

static void TF(fc_phases_1d)(fc_idx R, fc_idx s, fc_idx d, fc_idx p, fc_idx H, fc_idx phi,
                             TF(fc_phase1d) * ph, fc_idx *slots) {
    ph->taps = slots;
    ph->u = slots + R;
    ph->ntaps = 0;
    for (fc_idx r = 0; r < R; r++)
        if ((r * d) % s == phi) {
            ph->taps[ph->ntaps] = r;
            ph->u[ph->ntaps] = (r * d) / s;
            ph->ntaps++;
        }
    ph->j0 = p - phi > 0 ? FC_CEIL_DIV(p - phi, s) : 0;
    fc_idx last = H - 1 + p - phi;
    ph->J = last >= 0 ? FC_MAX((fc_idx)0, last / s - ph->j0 + 1) : 0;
}

typedef struct {
    TF(fc_geom) g;
    TF(fc_isa) isa;
    const T *dy; /* contiguous (N, K, OH, OW) */
    const T *w;  /* contiguous (K, Cg, R, S) */
    T *dx;       /* contiguous (N, C, H, W), zero-filled */
    fc_idx Cg, Kg, nmb, Uh, Uw, Hb, Wb, bufsize, Pr, PB, nPB, nphase, nitems;
    fc_idx NB, ngroups; /* images side by side (stride 1 only, as in the forward) */
    TF(fc_phase1d) *ph_h, *ph_w; /* [sh], [sw] */
    fc_idx *tap_start;           /* [phase] -> first tap of that phase in off / A; [nphase + 1] */
    fc_idx *slots;               /* storage of the phases' tap lists */
    T *A;                  /* [G][phase taps...][nmb][Tphi][MR], or pack_bf16's per (g, phase) */
    size_t a_bytes;
    fc_idx *a_off;         /* [G * nphase]: where (g, phase)'s weights start in A */
    fc_idx *off;
    uint64_t call;
    int math, nr; /* as the forward's (fc_fwd_math) */
    fc_idx npre;  /* preparation items: the packing of A (fc_gin_pre_item) */
    void (*gemm)(const TF(fc_packed_w) * w, const TF(fc_pixels) * px, fc_idx p0, fc_idx p1,
                 const TF(fc_tile) * out, T *Bp);
    /* row bands (band_rows > 0): bands of band_rows phase rows, each in a buffer of
     * band_rows + Uh rows of every plane; boff are the tap offsets in it */
    fc_idx band_rows, nbands, bbufsize;
    fc_idx *boff;
    /* the channel-vectorised path (conv_cv_tmpl.h) runs the layer: a plan per stride phase
     * (ncv of them), or NULL */
    TF(fc_cv_plan) * cv;
    fc_idx ncv;
    /* the depthwise path (conv_dwd_tmpl.h) runs the layer: channels per item (or 0), the
     * weights gathered per phase ([C][taps in tap_start's order]), the elements of a phase's
     * results (slot 1 holds two: stride 2 across writes two column phases together) */
    fc_idx dwd_cb;
    T *dwd_w;
    fc_idx dwd_scratch;
} TF(fc_gin_plan);

static int TF(fc_gin_dwd)(TF(fc_gin_plan) * pl, int nthreads);
static int TF(fc_gin_dwd_item)(const TF(fc_gin_plan) * pl, fc_idx item);

/* The tap offsets of every phase, in tap_start's order, into a padded grad_output buffer of
 * planes `plane` elements apart: tap (k, i, j) of phase (a, b) reads plane k at row
 * row0 + Uh - u_i and column j0 + Uw - u_j of its phases' shifts, where row0 is the phase's first
 * row j0 in the whole-image buffer and 0 in a band's (whose rows start there). Returns the
 * largest offset. */
static fc_idx TF(fc_gin_offsets)(const TF(fc_gin_plan) * pl, fc_idx plane, int band, fc_idx *off) {
    const TF(fc_geom) *g = &pl->g;
    fc_idx t = 0, max_off = 0;
    for (fc_idx a = 0; a < g->sh; a++)
        for (fc_idx b = 0; b < g->sw; b++) {
            const TF(fc_phase1d) *hh = &pl->ph_h[a], *ww = &pl->ph_w[b];
            const fc_idx row0 = band ? 0 : hh->j0;
            for (fc_idx k = 0; k < pl->Kg; k++)
                for (fc_idx i = 0; i < hh->ntaps; i++)
                    for (fc_idx j = 0; j < ww->ntaps; j++, t++) {
                        off[t] = k * plane + (row0 + pl->Uh - hh->u[i]) * pl->Wb +
                                 (ww->j0 + pl->Uw - ww->u[j]);
                        max_off = FC_MAX(max_off, off[t]);
                    }
        }
    return max_off;
}

/* Row bands, for an image whose padded grad_output would exceed the cap: item (image, group,
 * band, phase), the band's rows of its phase in pixel blocks of PB. Band row i of a phase's band
 * from phase row J0 holds padded row j0 + J0 + i of the whole-image buffer (the rows its taps
 * read: i < band_rows + Uh). */
static int TF(fc_gin_bands)(TF(fc_gin_plan) * pl, int nthreads, fc_idx Jh, fc_idx Jw) {
    const TF(fc_geom) *g = &pl->g;
    int nr = pl->nr;
    pl->band_rows = TF(fc_band_rows_for)(pl->Kg * pl->Wb, pl->Uh, 0, Jh);
    pl->nbands = FC_CEIL_DIV(FC_MAX(Jh, (fc_idx)1), pl->band_rows);
    fc_idx TTall = pl->Kg * g->R * g->S, plane = (pl->band_rows + pl->Uh) * pl->Wb;
    pl->boff = (fc_idx *)fc_aligned_calloc((size_t)TTall * sizeof(fc_idx));
    if (!pl->boff) return -1;
    fc_idx bmax = TF(fc_gin_offsets)(pl, plane, 1, pl->boff);
    pl->bbufsize =
        FC_MAX(pl->Kg * plane, bmax + pl->band_rows * pl->Wb + FC_PANEL_VECS * pl->isa.vl) +
        FC_SLACK;
    pl->NB = 1;
    pl->ngroups = g->N;
    pl->Pr = FC_ROUND_UP(FC_MAX(pl->band_rows * Jw, (fc_idx)1), nr);
    pl->nitems = g->N * g->G * pl->nbands * pl->nphase;
    pl->PB = TF(fc_pixel_block)(pl->Cg, pl->Pr, nr, pl->nitems, nthreads);
    pl->nPB = 1; /* the phases of one band are handed out together (they read the same rows) */
    return 0;
}

/* The phases of both axes (fc_phases_1d), where each phase's taps start in off and A
 * (tap_start), the largest number of phase rows and columns (*Jh, *Jw), the row shifts Uh, Uw
 * and the padded grad_output's plane (Hb x Wb). */
static int TF(fc_gin_phase_tables)(TF(fc_gin_plan) * pl, fc_idx *Jh, fc_idx *Jw) {
    const TF(fc_geom) *g = &pl->g;
    pl->ph_h = (TF(fc_phase1d) *)fc_aligned_calloc((size_t)g->sh * sizeof(TF(fc_phase1d)));
    pl->ph_w = (TF(fc_phase1d) *)fc_aligned_calloc((size_t)g->sw * sizeof(TF(fc_phase1d)));
    pl->tap_start = (fc_idx *)fc_aligned_calloc((size_t)(pl->nphase + 1) * sizeof(fc_idx));
    pl->slots = (fc_idx *)fc_aligned_calloc(
        (size_t)(2 * (g->sh * g->R + g->sw * g->S)) * sizeof(fc_idx));
    if (!pl->ph_h || !pl->ph_w || !pl->tap_start || !pl->slots) return -1;
    pl->Uh = ((g->R - 1) * g->dh) / g->sh;
    pl->Uw = ((g->S - 1) * g->dw) / g->sw;
    fc_idx lastj_h = 0, lastj_w = 0;
    *Jh = *Jw = 0;
    for (fc_idx a = 0; a < g->sh; a++) {
        TF(fc_phases_1d)(g->R, g->sh, g->dh, g->pt, g->H, a, &pl->ph_h[a],
                         pl->slots + 2 * a * g->R);
        lastj_h = FC_MAX(lastj_h, pl->ph_h[a].j0 + pl->ph_h[a].J);
        *Jh = FC_MAX(*Jh, pl->ph_h[a].J);
    }
    for (fc_idx b = 0; b < g->sw; b++) {
        TF(fc_phases_1d)(g->S, g->sw, g->dw, g->pl, g->W, b, &pl->ph_w[b],
                         pl->slots + 2 * (g->sh * g->R + b * g->S));
        lastj_w = FC_MAX(lastj_w, pl->ph_w[b].j0 + pl->ph_w[b].J);
        *Jw = FC_MAX(*Jw, pl->ph_w[b].J);
    }
    pl->Hb = pl->Uh + FC_MAX(lastj_h, g->OH) + 1;
    /* a spare zero column between rows, except where no tap reaches across a row end (Uw == 0):
     * rows without gaps are one long row for gemm_tile */
    pl->Wb = pl->Uw + FC_MAX(lastj_w, g->OW) + (pl->Uw > 0);
    fc_idx t = 0;
    for (fc_idx f = 0; f < pl->nphase; f++) {
        pl->tap_start[f] = t;
        t += pl->Kg * pl->ph_h[f / g->sw].ntaps * pl->ph_w[f % g->sw].ntaps;
    }
    pl->tap_start[pl->nphase] = t;
    return 0;
}

/* The layer on the channel-vectorised path (conv_cv_tmpl.h) where it applies, as fc_fwd_cv: a
 * plan per stride phase of dx, from the phase tables (a phase with no taps gets no items: its dx
 * stays 0), for all phases or none. Not with padding beyond the kernel's reach (the padded
 * grad_output's would be negative), nor for a 1x1 kernel: with no padding to skip, the GEMM,
 * which reads grad_output in place, measured faster. */
static int TF(fc_gin_cv)(TF(fc_gin_plan) * pl, int nthreads) {
    const TF(fc_geom) *g = &pl->g;
    if (g->pt > (g->R - 1) * g->dh || g->pl > (g->S - 1) * g->dw || g->R * g->S == 1) return 0;
    const fc_idx nph = pl->nphase, ocb = (fc_idx)pl->isa.cv_nv * pl->isa.vl;
    const int phased = nph > 1;
    TF(fc_cv_plan) *cv = (TF(fc_cv_plan) *)fc_calloc((size_t)nph, sizeof *cv);
    if (!cv) return -1;
    for (fc_idx f = 0; f < nph; f++) {
        const TF(fc_phase1d) *hh = &pl->ph_h[f / g->sw], *ww = &pl->ph_w[f % g->sw];
        /* phase row o is dx row (j0 + o)*sh + a - pt and reads grad_output row j0 + o - u_i for
         * its tap i, where u_i = (r_i * dh) / sh steps evenly */
        const fc_idx a = f / g->sw, b = f % g->sw;
        const fc_idx duh = hh->ntaps > 1 ? hh->u[1] - hh->u[0] : 1;
        const fc_idx duw = ww->ntaps > 1 ? ww->u[1] - ww->u[0] : 1;
        cv[f] = (TF(fc_cv_plan)){
            .N = g->N, .G = g->G, .Cin = pl->Kg, .Cout = pl->Cg, .R = hh->ntaps,
            .S = ww->ntaps, .OH = hh->J, .OW = ww->J,
            .mh = {g->OH, 1, hh->j0 - (hh->ntaps ? hh->u[0] : 0), -duh},
            .mw = {g->OW, 1, ww->j0 - (ww->ntaps ? ww->u[0] : 0), -duw},
            .sth = g->sh, .stw = g->sw, .oh0 = hh->j0 * g->sh + a - g->pt,
            .ow0 = ww->j0 * g->sw + b - g->pl, .ldo = g->W, .ocs = g->H * g->W,
            .rk = phased ? hh->taps : NULL, .sk = phased ? ww->taps : NULL, .Rw = g->R,
            .Sw = g->S, .x = pl->dy, .xs = {g->K * g->OH * g->OW, g->OH * g->OW, g->OW, 1},
            .w = pl->w, .gin = 1, .bias = NULL, .out = pl->dx, .act = FC_ACT_NONE};
        if (hh->J > 0 && ww->J > 0 && hh->ntaps > 0 && ww->ntaps > 0 &&
            !TF(fc_cv_wanted)(&cv[f], ocb)) {
            fc_free(cv);
            return 0;
        }
    }
    pl->cv = cv; /* freed with the plan, prepared or not */
    pl->ncv = nph;
    fc_idx pre = 0, items = 0;
    for (fc_idx f = 0; f < nph; f++) {
        cv[f].pre0 = pre;
        cv[f].item0 = items;
        if (cv[f].OH * cv[f].OW * cv[f].R * cv[f].S == 0) continue; /* dx stays 0 */
        if (TF(fc_cv_prepare)(&cv[f], &pl->isa, nthreads)) return -1;
        pre += cv[f].npre;
        items += cv[f].nitems;
    }
    if (phased) { /* the phases are packed together (fc_cv_phases_pre_item) */
        pre = items ? g->G * FC_CEIL_DIV(pl->Cg, ocb) : 0;
        if (pl->Kg * g->C * g->R * g->S < FC_PACK_PARALLEL_ELEMS) {
            for (fc_idx i = 0; i < pre; i++)
                if (TF(fc_cv_run_pre_item)(cv, nph, i)) return -1;
            pre = 0;
        }
    }
    pl->npre = pre;
    pl->nitems = items;
    return 1;
}

/* A for (group gi, phase f): rows c (input channels), columns the phase's taps (k, r, s) in that
 * order, packed as gemm_tile reads it ([nmb][Tf][MR], rows in the blocks of fc_row_block), or,
 * for the bfloat16 GEMM, gathered into the row-major Cg x Tf matrix `rows` and packed by
 * pack_bf16. The float32 packing walks the weights a row block and an output channel k at a
 * time: the block's rows of k (a cache line or two each) are read once for every phase, and
 * each phase's packed block is written in order. */
static void TF(fc_gin_pack_f32)(const TF(fc_gin_plan) * pl, fc_idx gi, fc_idx mb) {
    const TF(fc_geom) *g = &pl->g;
    const int MRv = pl->isa.mr;
    const fc_idx RS = g->R * g->S;
    {
        fc_idx c0;
        int mr;
        fc_row_block(pl->Cg, MRv, mb, &c0, &mr);
        if (RS == 1) { /* a 1x1 kernel: the block's weights of each k are contiguous */
            const T *wk = pl->w + gi * pl->Kg * pl->Cg + c0;
            T *Ab = pl->A + pl->a_off[gi * pl->nphase] + mb * pl->Kg * MRv;
            for (fc_idx k = 0; k < pl->Kg; k++)
                memcpy(Ab + k * MRv, wk + k * pl->Cg, (size_t)mr * sizeof(T));
            return;
        }
        for (fc_idx k = 0; k < pl->Kg; k++) {
            const T *wk = pl->w + ((gi * pl->Kg + k) * pl->Cg + c0) * RS;
            for (fc_idx f = 0; f < pl->nphase; f++) {
                const TF(fc_phase1d) *hh = &pl->ph_h[f / g->sw], *ww = &pl->ph_w[f % g->sw];
                const fc_idx Tf = pl->tap_start[f + 1] - pl->tap_start[f];
                T *Ab = pl->A + pl->a_off[gi * pl->nphase + f] + mb * Tf * MRv;
                fc_idx tt = k * hh->ntaps * ww->ntaps;
                for (fc_idx i = 0; i < hh->ntaps; i++)
                    for (fc_idx j = 0; j < ww->ntaps; j++, tt++) {
                        const T *src = wk + hh->taps[i] * g->S + ww->taps[j];
                        for (int lane = 0; lane < mr; lane++)
                            Ab[tt * MRv + lane] = src[lane * RS];
                    }
            }
        }
    }
}

/* The bfloat16 GEMM's weights of (group gi, phase f). */
static int TF(fc_gin_pack_bf16)(const TF(fc_gin_plan) * pl, fc_idx gi, fc_idx f) {
    const TF(fc_geom) *g = &pl->g;
    const TF(fc_phase1d) *hh = &pl->ph_h[f / g->sw], *ww = &pl->ph_w[f % g->sw];
    const fc_idx Tf = pl->tap_start[f + 1] - pl->tap_start[f];
    T *rows = (T *)fc_malloc((size_t)FC_MAX(pl->Cg * Tf, (fc_idx)1) * sizeof(T));
    if (!rows) return -1;
    fc_idx tt = 0;
    for (fc_idx k = 0; k < pl->Kg; k++)
        for (fc_idx i = 0; i < hh->ntaps; i++)
            for (fc_idx j = 0; j < ww->ntaps; j++, tt++)
                for (fc_idx c = 0; c < pl->Cg; c++)
                    rows[c * Tf + tt] = pl->w[(((gi * pl->Kg + k) * pl->Cg + c) * g->R +
                                               hh->taps[i]) * g->S + ww->taps[j]];
    pl->isa.pack_bf16(rows, pl->Cg, Tf, pl->isa.bf16_mr, pl->A + pl->a_off[gi * pl->nphase + f]);
    fc_free(rows);
    return 0;
}

/* Preparation item i of grad_input: the weights of (group, phase) i (bfloat16 GEMM), or of row
 * block i % nmb of group i / nmb in every phase, packed (and rounded where the plan rounds). */
static int TF(fc_gin_pre_item)(const TF(fc_gin_plan) * pl, fc_idx i) {
    if (pl->cv) return TF(fc_cv_run_pre_item)(pl->cv, pl->ncv, i);
    if (pl->math == FC_MATH_BF16_GEMM)
        return TF(fc_gin_pack_bf16)(pl, i / pl->nphase, i % pl->nphase);
    const fc_idx gi = i / pl->nmb, mb = i % pl->nmb;
    TF(fc_gin_pack_f32)(pl, gi, mb);
    if (pl->math == FC_MATH_BF16_ROUND)
        for (fc_idx f = 0; f < pl->nphase; f++) {
            const fc_idx Tf = pl->tap_start[f + 1] - pl->tap_start[f];
            TF(fc_round_bf16)(pl->A + pl->a_off[gi * pl->nphase + f] + mb * Tf * pl->isa.mr,
                              Tf * pl->isa.mr);
        }
    return 0;
}

/* The weights' layout and room (a_off, A) for the products pl->math asks for: the bfloat16 GEMM
 * where the ISA has one and it has at least two row blocks (as the forward), else the float32
 * layout, rounded to bfloat16 when asked (then so is every padded grad_output buffer). */
static int TF(fc_gin_math)(TF(fc_gin_plan) * pl) {
    const TF(fc_geom) *g = &pl->g;
    if (pl->math != FC_MATH_F32)
        pl->math = pl->isa.gemm_bf16 && pl->isa.pack_bf16 && pl->Cg > pl->isa.bf16_mr
                       ? FC_MATH_BF16_GEMM
                       : FC_MATH_BF16_ROUND;
    const int gemm = pl->math == FC_MATH_BF16_GEMM;
    pl->gemm = gemm ? pl->isa.gemm_bf16 : pl->isa.gemm_tile;
    pl->nr = gemm ? pl->isa.bf16_nr : pl->isa.nr;
    pl->a_off = (fc_idx *)fc_aligned_calloc((size_t)(g->G * pl->nphase + 1) * sizeof(fc_idx));
    if (!pl->a_off) return -1;
    fc_idx total = 0;
    for (fc_idx gi = 0; gi < g->G; gi++)
        for (fc_idx f = 0; f < pl->nphase; f++) {
            const fc_idx Tf = pl->tap_start[f + 1] - pl->tap_start[f];
            pl->a_off[gi * pl->nphase + f] = total;
            total += gemm ? pl->isa.bf16_a_elems(pl->Cg, Tf) : pl->nmb * Tf * pl->isa.mr;
        }
    pl->a_bytes = (size_t)total * sizeof(T);
    pl->A = (T *)fc_plan_alloc(pl->a_bytes); /* as the forward's A */
    if (!pl->A) return -1;
    pl->npre = g->G * (gemm ? pl->nphase : pl->nmb);
    if (pl->Kg * g->C * g->R * g->S < FC_PACK_PARALLEL_ELEMS) {
        for (fc_idx i = 0; i < pl->npre; i++)
            if (TF(fc_gin_pre_item)(pl, i)) return -1;
        pl->npre = 0;
    }
    return 0;
}

static int TF(fc_gin_prepare)(TF(fc_gin_plan) * pl, int nthreads) {
    TF(fc_geom) *g = &pl->g;
    int MRv = pl->isa.mr;
    pl->Cg = g->C / g->G;
    pl->Kg = g->K / g->G;
    pl->nmb = FC_CEIL_DIV(pl->Cg, MRv);
    pl->nphase = g->sh * g->sw;
    fc_idx Jh, Jw;
    if (TF(fc_gin_phase_tables)(pl, &Jh, &Jw)) return -1;
    if (pl->math == FC_MATH_F32) {
        int st = TF(fc_gin_cv)(pl, nthreads);
        if (st) return st < 0 ? -1 : 0;
    }
    fc_idx TTall = pl->Kg * g->R * g->S, plane = pl->Hb * pl->Wb;
    pl->off = (fc_idx *)fc_aligned_calloc((size_t)TTall * sizeof(fc_idx));
    if (!pl->off) return -1;
    fc_idx max_off = TF(fc_gin_offsets)(pl, plane, 0, pl->off);
    fc_idx P = Jh * Jw;
    pl->bufsize =
        FC_MAX(pl->Kg * plane, max_off + Jh * pl->Wb + FC_PANEL_VECS * pl->isa.vl) + FC_SLACK;
    pl->call = fc_next_call_id();
    const int banded = (int64_t)pl->bufsize * (int64_t)sizeof(T) > fc_ws_cap_bytes();
    if (!banded) {
        int st = TF(fc_gin_dwd)(pl, nthreads);
        if (st) return st < 0 ? -1 : 0;
    }
    if (TF(fc_gin_math)(pl)) return -1;
    if (banded) return TF(fc_gin_bands)(pl, nthreads, Jh, Jw);
    pl->NB = pl->nphase == 1 ? TF(fc_images_per_item)(P, pl->isa.vl, g->N, pl->bufsize) : 1;
    pl->ngroups = FC_CEIL_DIV(g->N, pl->NB);
    pl->Pr = FC_ROUND_UP(FC_MAX(pl->NB * P, (fc_idx)1), pl->nr);
    pl->PB = TF(fc_pixel_block)(pl->Cg, pl->Pr, pl->nr, pl->ngroups * g->G * pl->nphase,
                                nthreads);
    pl->nPB = FC_CEIL_DIV(pl->Pr, pl->PB);
    pl->nitems = pl->ngroups * g->G * pl->nphase * pl->nPB;
    return 0;
}

static void TF(fc_gin_free)(TF(fc_gin_plan) * pl) {
    if (pl->cv) {
        TF(fc_cv_free_all)(pl->cv, pl->ncv);
        pl->cv = NULL;
    }
    fc_plan_free(pl->A, pl->a_bytes);
    fc_free(pl->a_off);
    fc_free(pl->dwd_w);
    pl->a_off = NULL;
    pl->dwd_w = NULL;
    fc_free(pl->off);
    fc_free(pl->ph_h);
    fc_free(pl->ph_w);
    fc_free(pl->tap_start);
    fc_free(pl->slots);
    fc_free(pl->boff);
    pl->A = NULL;
    pl->off = pl->boff = NULL;
    pl->ph_h = pl->ph_w = NULL;
    pl->tap_start = pl->slots = NULL;
    fc_ws_trim(); /* after the parallel loops: see fc_common.h */
}

/* Image n's grad_output planes of group gi, each in a plane of Hb x Wb with Uh rows and Uw
 * columns of zeros before it, zeros after it (Wb - OW between rows), and the rest of buf
 * zeroed: every element written once. */
static void TF(fc_build_padded_dy)(const TF(fc_gin_plan) * pl, fc_idx n, fc_idx gi, T *buf) {
    const TF(fc_geom) *g = &pl->g;
    const fc_idx plane = pl->Hb * pl->Wb, Wb = pl->Wb, OW = g->OW, gap = Wb - OW;
    for (fc_idx k = 0; k < pl->Kg; k++) {
        const T *src = pl->dy + (n * g->K + gi * pl->Kg + k) * g->OH * OW;
        T *p = buf + k * plane, *dst = p + pl->Uh * Wb + pl->Uw;
        memset(p, 0, (size_t)(dst - p) * sizeof(T));
        for (fc_idx oh = 0; oh < g->OH; oh++) {
            memcpy(dst + oh * Wb, src + oh * OW, (size_t)OW * sizeof(T));
            memset(dst + oh * Wb + OW, 0, (size_t)gap * sizeof(T));
        }
        T *end = dst + g->OH * Wb; /* past the last row's gap */
        memset(end, 0, (size_t)(p + plane - end) * sizeof(T));
    }
    memset(buf + pl->Kg * plane, 0, (size_t)(pl->bufsize - pl->Kg * plane) * sizeof(T));
}

/* Rows [b0, b0 + nrows) of image n's padded grad_output (group gi; fc_build_padded_dy's layout)
 * into buf, row b0 + i at row i of planes `plane` apart; the rest of buf zeroed. */
static void TF(fc_build_padded_dy_rows)(const TF(fc_gin_plan) * pl, fc_idx n, fc_idx gi,
                                        fc_idx b0, fc_idx nrows, fc_idx plane, T *buf) {
    const TF(fc_geom) *g = &pl->g;
    memset(buf, 0, (size_t)pl->bbufsize * sizeof(T));
    fc_idx i0 = FC_MAX((fc_idx)0, pl->Uh - b0), i1 = FC_MIN(nrows, g->OH + pl->Uh - b0);
    for (fc_idx k = 0; k < pl->Kg; k++) {
        const T *src = pl->dy + (n * g->K + gi * pl->Kg + k) * g->OH * g->OW;
        T *dst = buf + k * plane + pl->Uw;
        for (fc_idx i = i0; i < i1; i++)
            memcpy(dst + i * pl->Wb, src + (b0 + i - pl->Uh) * g->OW, (size_t)g->OW * sizeof(T));
    }
}

/* grad_input of one band of one phase: item = (image n, group gi, band, phase f). */
static int TF(fc_gin_band_item)(const TF(fc_gin_plan) * pl, fc_idx item) {
    const TF(fc_geom) *g = &pl->g;
    fc_idx f = item % pl->nphase, rest = item / pl->nphase;
    fc_idx band = rest % pl->nbands, ng = rest / pl->nbands;
    fc_idx gi = ng % g->G, n = ng / g->G;
    const TF(fc_phase1d) *hh = &pl->ph_h[f / g->sw], *ww = &pl->ph_w[f % g->sw];
    fc_idx J0 = band * pl->band_rows, t0 = pl->tap_start[f], Tf = pl->tap_start[f + 1] - t0;
    if (J0 >= hh->J || ww->J == 0 || Tf == 0) return 0; /* nothing, or only zeros */
    fc_idx rows = FC_MIN(pl->band_rows, hh->J - J0), P = rows * ww->J;
    T *buf = (T *)fc_ws_get(0, (size_t)pl->bbufsize * sizeof(T));
    fc_idx ldc = pl->PB + FC_PANEL_VECS * pl->isa.vl;
    T *Ct = (T *)fc_ws_get(1, (size_t)(pl->Cg * ldc) * sizeof(T));
    T *Bp = (T *)fc_ws_get(3, (size_t)pl->isa.bp_elems * sizeof(T));
    if (!buf || !Ct || !Bp) return -1;
    fc_ws()->cached_call = 0; /* slot 0 now holds a band */
    TF(fc_build_padded_dy_rows)(pl, n, gi, hh->j0 + J0, rows + pl->Uh,
                                (pl->band_rows + pl->Uh) * pl->Wb, buf);
    if (pl->math == FC_MATH_BF16_ROUND) TF(fc_round_bf16)(buf, pl->bbufsize);
    const TF(fc_packed_w) wts = {pl->A + pl->a_off[gi * pl->nphase + f], pl->Cg, Tf};
    const TF(fc_pixels) px = {.B = buf, .off = pl->boff + t0, .rowlen = pl->Wb == ww->J ? P : ww->J,
                              .Wq = pl->Wb, .Pimg = P, .imgs = 0, .P = P};
    const TF(fc_tile) tile = {Ct, ldc, NULL, 0};
    fc_idx a = f / g->sw, b = f % g->sw;
    fc_idx ocs = g->H * g->W;
    const TF(fc_out_view) view = {.out = pl->dx + (n * g->C + gi * pl->Cg) * ocs, .imgs = 0,
                                  .ocs = ocs, .ors = g->W, .rowlen = ww->J, .OHv = rows,
                                  .row0 = (hh->j0 + J0) * g->sh + a - g->pt, .rstep = g->sh,
                                  .col0 = ww->j0 * g->sw + b - g->pl, .cstep = g->sw,
                                  .copy = TF(fc_copy)};
    for (fc_idx p0 = 0; p0 < P; p0 += pl->PB) {
        fc_idx p1 = FC_MIN(FC_ROUND_UP(P, (fc_idx)pl->nr), p0 + pl->PB);
        pl->gemm(&wts, &px, p0, p1, &tile, Bp);
        TF(fc_writeback)(Ct, ldc, pl->Cg, p0, FC_MIN(p1, P), P, &view);
    }
    return 0;
}

static int TF(fc_gin_item)(const TF(fc_gin_plan) * pl, fc_idx item) {
    if (pl->cv) return TF(fc_cv_run_item)(pl->cv, pl->ncv, item);
    if (pl->dwd_cb) return TF(fc_gin_dwd_item)(pl, item);
    if (pl->band_rows) return TF(fc_gin_band_item)(pl, item);
    const TF(fc_geom) *g = &pl->g;
    fc_idx pb = item % pl->nPB, rest = item / pl->nPB;
    fc_idx f = rest % pl->nphase, ng = rest / pl->nphase;
    fc_idx gi = ng % g->G, n0 = (ng / g->G) * pl->NB, nb = FC_MIN(pl->NB, g->N - n0);
    const TF(fc_phase1d) *hh = &pl->ph_h[f / g->sw], *ww = &pl->ph_w[f % g->sw];
    fc_idx P = hh->J * ww->J, p0 = pb * pl->PB;
    fc_idx p1 = FC_MIN(FC_ROUND_UP(nb * P, (fc_idx)pl->nr), p0 + pl->PB);
    fc_idx t0 = pl->tap_start[f], Tf = pl->tap_start[f + 1] - t0;
    if (p0 >= p1 || ww->J == 0 || Tf == 0) return 0; /* nothing, or only zeros (dx is zeroed) */
    T *buf = (T *)fc_ws_get(0, (size_t)(pl->NB * pl->bufsize) * sizeof(T));
    fc_idx ldc = pl->PB + FC_PANEL_VECS * pl->isa.vl;
    T *Ct = (T *)fc_ws_get(1, (size_t)(pl->Cg * ldc) * sizeof(T));
    T *Bp = (T *)fc_ws_get(3, (size_t)pl->isa.bp_elems * sizeof(T));
    if (!buf || !Ct || !Bp) return -1;
    fc_workspace *ws = fc_ws();
    if (ws->cached_call != pl->call || ws->cached_key != ng) {
        for (fc_idx i = 0; i < nb; i++)
            TF(fc_build_padded_dy)(pl, n0 + i, gi, buf + i * pl->bufsize);
        if (pl->math == FC_MATH_BF16_ROUND) TF(fc_round_bf16)(buf, nb * pl->bufsize);
        ws->cached_call = pl->call;
        ws->cached_key = ng;
    }
    const TF(fc_packed_w) wts = {pl->A + pl->a_off[gi * pl->nphase + f], pl->Cg, Tf};
    /* rows without gaps: one long row */
    const TF(fc_pixels) px = {.B = buf, .off = pl->off + t0, .rowlen = pl->Wb == ww->J ? P : ww->J,
                              .Wq = pl->Wb, .Pimg = P, .imgs = pl->bufsize, .P = nb * P};
    const TF(fc_tile) tile = {Ct, ldc, NULL, 0};
    pl->gemm(&wts, &px, p0, p1, &tile, Bp);
    fc_idx a = f / g->sw, b = f % g->sw;
    fc_idx ocs = g->H * g->W;
    const TF(fc_out_view) view = {.out = pl->dx + (n0 * g->C + gi * pl->Cg) * ocs,
                                  .imgs = g->C * ocs, .ocs = ocs, .ors = g->W, .rowlen = ww->J,
                                  .OHv = hh->J, .row0 = hh->j0 * g->sh + a - g->pt,
                                  .rstep = g->sh, .col0 = ww->j0 * g->sw + b - g->pl,
                                  .cstep = g->sw, .copy = TF(fc_copy)};
    TF(fc_writeback)(Ct, ldc, pl->Cg, p0, FC_MIN(p1, nb * P), P, &view);
    return 0;
}

#include "conv_dwd_tmpl.h"

/* =============================== grad_weight =============================== */
typedef struct {
    TF(fc_geom) g;
    TF(fc_isa) isa;
    const T *x;
    fc_idx xs[4];
    const T *dy; /* contiguous (N, K, OH, OW) */
    T *dw;       /* contiguous (K, Cg, R, S) */
    fc_idx Cg, Kg, RS, ldm, ncg, cgs, nchunk, chunk, nitems, bufsize, ldy;
    fc_idx gw_images; /* images whose buffers an item builds before the kernels read them */
    fc_idx sum_rows;  /* rows of an image that dw_kernel sums on their own (see dw_body) */
    int depthwise;
    TF(fc_wide) wl;
    fc_idx *off; /* [Cg*RS] */
    T *partial;  /* [nchunk][G][Cg*RS][ldm] */
    size_t partial_bytes;
    /* row bands (band_rows > 0): layout and tap offsets of a band's wide buffer; max_off is the
     * largest offset of a channel block in off */
    fc_idx band_rows, bbufsize, max_off;
    TF(fc_wide) bwl;
    fc_idx *boff; /* [Cg*RS] */
} TF(fc_gw_plan);

/* grad_weight's work split: enough items for a few threads, few enough partial sums to add. */
#define FC_GW_CHANNEL_GROUPS 4
#define FC_GW_ITEMS 8
/* Bytes of the wide buffers and transposed grad_output of the images an item builds before
 * its kernels pass over them (in L2 with room to spare). */
#define FC_GW_GROUP_BYTES ((fc_idx)512 << 10)
/* dw_kernel sums whole rows of at least this many pixels on their own (see dw_body). */
#define FC_GW_SUM_PIXELS 64
/* Spare bytes past an item's table of tap offsets: a margin (no kernel reads past the table). */
#define FC_TABLE_SLACK_BYTES 64
static int TF(fc_gw_prepare)(TF(fc_gw_plan) * pl) {
    TF(fc_geom) *g = &pl->g;
    int vl = pl->isa.vl;
    pl->Cg = g->C / g->G;
    pl->Kg = g->K / g->G;
    pl->RS = g->R * g->S;
    pl->depthwise = (pl->Cg == 1 && pl->Kg == 1);
    pl->ldm = FC_ROUND_UP(pl->Kg, vl);
    TF(fc_wide_layout)(g, &pl->wl);
    pl->off = (fc_idx *)fc_aligned_calloc((size_t)(pl->Cg * pl->RS) * sizeof(fc_idx));
    if (!pl->off) return -1;
    TF(fc_tap_offsets)(g, &pl->wl, pl->Cg, pl->off);
    /* Work split from the shapes alone (never the thread count), so the reduction order is fixed:
     * up to FC_GW_CHANNEL_GROUPS channel groups, and batch chunks until there are FC_GW_ITEMS
     * items. */
    pl->ncg = g->G == 1 ? FC_MIN(pl->Cg, (fc_idx)FC_GW_CHANNEL_GROUPS) : 1;
    pl->cgs = FC_CEIL_DIV(pl->Cg, pl->ncg);
    pl->ncg = FC_CEIL_DIV(pl->Cg, pl->cgs);
    fc_idx per = g->G * pl->ncg;
    pl->nchunk = pl->depthwise ? 1
                               : FC_MAX((fc_idx)1, FC_MIN(g->N, FC_CEIL_DIV(FC_GW_ITEMS, per)));
    pl->chunk = FC_CEIL_DIV(g->N, pl->nchunk);
    pl->nchunk = FC_CEIL_DIV(g->N, pl->chunk);
    pl->nitems = per * pl->nchunk;
    fc_idx max_off = 0;
    for (fc_idx t = 0; t < pl->cgs * pl->RS && t < pl->Cg * pl->RS; t++)
        max_off = FC_MAX(max_off, pl->off[t]);
    pl->bufsize = FC_MAX(pl->cgs * pl->wl.chstride, max_off + g->OH * pl->wl.Wq + vl) + FC_SLACK;
    pl->ldy = FC_ROUND_UP(g->OW, vl);
    pl->sum_rows = FC_CEIL_DIV((fc_idx)FC_GW_SUM_PIXELS, g->OW);
    /* row bands when the wide input of a channel block or the grad_output buffer (transposed,
     * or rows padded to ldy for depthwise) of an image would exceed the cap. Whether to band
     * and how high a band is are reckoned with the widest vector (FC_WIDEST_VB) on every path:
     * depthwise grad_weight adds its sums band by band, so its bits depend on the bands, which
     * must then depend on the shapes alone, never on the SIMD path. */
    const fc_idx vlw = FC_WIDEST_VB / (fc_idx)sizeof(T);
    fc_idx bufw =
        FC_MAX(pl->cgs * pl->wl.chstride, max_off + g->OH * pl->wl.Wq + vlw) + FC_SLACK;
    fc_idx dy_row = pl->depthwise ? FC_ROUND_UP(g->OW, vlw) : g->OW * FC_ROUND_UP(pl->Kg, vlw);
    int64_t cap = fc_ws_cap_bytes();
    pl->band_rows = 0;
    pl->boff = NULL;
    if ((int64_t)bufw * (int64_t)sizeof(T) > cap ||
        (int64_t)(g->OH * dy_row) * (int64_t)sizeof(T) > cap) {
        pl->max_off = max_off;
        pl->band_rows = TF(fc_band_rows)(g, &pl->wl, pl->cgs, dy_row);
        /* whole blocks of sum_rows (or the whole image) per band: the blocks, and so the
         * sums, are then those of the whole-image path */
        if (!pl->depthwise)
            pl->band_rows = FC_MIN(g->OH, FC_MAX(pl->sum_rows,
                                                 pl->band_rows / pl->sum_rows * pl->sum_rows));
        pl->boff = (fc_idx *)fc_aligned_calloc((size_t)(pl->Cg * pl->RS) * sizeof(fc_idx));
        if (!pl->boff) return -1;
        fc_idx bmax = TF(fc_band_layout)(g, pl->band_rows, pl->Cg,
                                         FC_MIN(pl->cgs, pl->Cg) * pl->RS, &pl->bwl, pl->boff);
        pl->bbufsize =
            FC_MAX(pl->cgs * pl->bwl.chstride, bmax + pl->band_rows * pl->bwl.Wq + vl) +
            FC_SLACK;
    }
    /* as many images of a chunk as FC_GW_GROUP_BYTES of buffers hold (no sum depends on it) */
    const fc_idx per_image = (pl->bufsize + g->OH * g->OW * pl->ldm) * (fc_idx)sizeof(T);
    pl->gw_images = FC_MAX((fc_idx)1, FC_MIN(pl->chunk, FC_GW_GROUP_BYTES / per_image));
    pl->partial = NULL;
    if (!pl->depthwise) {
        /* not zeroed: each item's first images store its sums (fresh); recycled, as the
         * outputs are, so that a layer called again does not page-fault its sums in again */
        pl->partial_bytes = (size_t)(pl->nchunk * g->G * pl->Cg * pl->RS * pl->ldm) * sizeof(T);
        pl->partial = (T *)fc_plan_alloc(pl->partial_bytes);
        if (!pl->partial) return -1;
    }
    return 0;
}

static void TF(fc_gw_free)(TF(fc_gw_plan) * pl) {
    fc_free(pl->off);
    fc_plan_free(pl->partial, pl->partial_bytes);
    fc_free(pl->boff);
    pl->off = pl->boff = NULL;
    pl->partial = NULL;
    fc_ws_trim(); /* after the parallel loops: see fc_common.h */
}

/* DYT[p][m] = dy[n][gi*Kg + m][p] for the OH*OW pixels, m padded with zeros to ldm. */
static void TF(fc_transpose_dy)(const TF(fc_gw_plan) * pl, fc_idx n, fc_idx gi, T *DYT) {
    const TF(fc_geom) *g = &pl->g;
    fc_idx P = g->OH * g->OW;
    const T *src = pl->dy + (n * g->K + gi * pl->Kg) * P;
    pl->isa.transpose(src, P, pl->Kg, P, DYT, pl->ldm);
    if (pl->ldm > pl->Kg)
        for (fc_idx p = 0; p < P; p++)
            memset(DYT + p * pl->ldm + pl->Kg, 0, (size_t)(pl->ldm - pl->Kg) * sizeof(T));
}

/* fc_gw_item over row bands: for each image, band after band, the band's wide input (read from
 * the input itself where possible, as in fc_fwd_band_item) and its grad_output rows. dw_kernel
 * starts from the partial sums in memory and adds the band's pixels in order, so every sum sees
 * the same pixels in the same order as on the whole-image path: the same bits. (dw_depthwise
 * sums a band in lanes before adding it to res: there bands change the rounding, not the
 * determinism.) */
/* Add one image's (or band's) products into the partial grad_weight Cp [taps][ldm]: the
 * register-blocked kernel over blocks of TR taps times two vectors of output channels. `a` holds
 * the input view and the transposed grad_output; its tap offsets and grad_output start move per
 * block. */
static inline __attribute__((always_inline)) void TF(fc_gw_accumulate)(
    const TF(fc_gw_plan) * pl, const TF(fc_dw_args) * a, fc_idx Tn, T *Cp) {
    const int TRv = pl->isa.tr, vl = pl->isa.vl;
    TF(fc_dw_args) blk = *a;
    for (fc_idx tb = 0; tb < Tn; tb += TRv) {
        int tr = (int)FC_MIN((fc_idx)TRv, Tn - tb);
        blk.off = a->off + tb;
        for (fc_idx mb = 0; mb < pl->ldm; mb += 2 * vl) {
            int nv = (int)FC_MIN((fc_idx)2, (pl->ldm - mb) / vl);
            blk.dy = a->dy + mb;
            pl->isa.dw_kernel(tr, nv, &blk, Cp + tb * pl->ldm + mb, pl->ldm);
        }
    }
}

static int TF(fc_gw_band_item)(const TF(fc_gw_plan) * pl, fc_idx item) {
    const TF(fc_geom) *g = &pl->g;
    fc_idx chunk = item % pl->nchunk, rest = item / pl->nchunk;
    fc_idx cgi = rest % pl->ncg, gi = rest / pl->ncg;
    fc_idx c0 = cgi * pl->cgs, nc = FC_MIN(pl->cgs, pl->Cg - c0);
    fc_idx n0 = chunk * pl->chunk, n1 = FC_MIN(g->N, n0 + pl->chunk);
    fc_idx T0 = c0 * pl->RS, Tn = nc * pl->RS, P = g->OH * g->OW;
    fc_idx dy_row = pl->depthwise ? pl->ldy : g->OW * pl->ldm;
    const int vl = pl->isa.vl;
    fc_idx *off = (fc_idx *)fc_ws_get(2, (size_t)(2 * Tn) * sizeof(fc_idx) + FC_TABLE_SLACK_BYTES);
    T *dyb = (T *)fc_ws_get(1, (size_t)(pl->band_rows * dy_row + FC_SLACK) * sizeof(T));
    if (!off || !dyb) return -1;
    fc_idx *boff = off + Tn; /* off: in the input's layout, boff: in the band's */
    for (fc_idx t = 0; t < Tn; t++) {
        off[t] = pl->off[T0 + t] - c0 * pl->wl.chstride;
        boff[t] = pl->boff[T0 + t] - c0 * pl->bwl.chstride;
    }
    fc_ws()->cached_call = 0; /* slot 0 is about to hold a band */
    T *Cp = pl->depthwise
                ? NULL
                : pl->partial + ((chunk * g->G + gi) * pl->Cg * pl->RS + T0) * pl->ldm;
    for (fc_idx n = n0; n < n1; n++)
        for (fc_idx r0 = 0; r0 < g->OH; r0 += pl->band_rows) {
            fc_idx rows = FC_MIN(pl->band_rows, g->OH - r0), Wq = pl->wl.Wq;
            const fc_idx *o = off;
            const T *src = TF(fc_wide_view)(g, &pl->wl, pl->x, pl->xs, n, gi * pl->Cg + c0,
                                            (r0 + rows) * Wq + pl->max_off + vl + FC_SLACK);
            if (src) {
                src += r0 * Wq;
            } else {
                T *buf = (T *)fc_ws_get(0, (size_t)pl->bbufsize * sizeof(T));
                if (!buf) return -1;
                TF(fc_build_band)(&pl->isa, g, &pl->bwl, pl->band_rows, pl->x, pl->xs, n,
                                  gi * pl->Cg + c0, nc, r0, buf, pl->bbufsize);
                src = buf;
                o = boff;
                Wq = pl->bwl.Wq;
            }
            const T *dy = pl->dy + (n * g->K + gi * pl->Kg) * P + r0 * g->OW;
            if (pl->depthwise) {
                for (fc_idx oh = 0; oh < rows; oh++) {
                    memcpy(dyb + oh * pl->ldy, dy + oh * g->OW, (size_t)g->OW * sizeof(T));
                    memset(dyb + oh * pl->ldy + g->OW, 0, (size_t)(pl->ldy - g->OW) * sizeof(T));
                }
                const TF(fc_dw_args) a = {src, o, Wq, dyb, pl->ldy, rows, g->OW};
                pl->isa.dw_depthwise(pl->RS, &a, pl->dw + gi * pl->RS);
                continue;
            }
            /* the band's DYT, as fc_transpose_dy */
            pl->isa.transpose(dy, P, pl->Kg, rows * g->OW, dyb, pl->ldm);
            if (pl->ldm > pl->Kg)
                for (fc_idx p = 0; p < rows * g->OW; p++)
                    memset(dyb + p * pl->ldm + pl->Kg, 0, (size_t)(pl->ldm - pl->Kg) * sizeof(T));
            const TF(fc_dw_args) a = {src, o, Wq, dyb, pl->ldm, rows, g->OW, 1, 0, 0,
                                      n == n0 && r0 == 0, pl->sum_rows};
            TF(fc_gw_accumulate)(pl, &a, Tn, Cp);
        }
    return 0;
}

static int TF(fc_gw_item)(const TF(fc_gw_plan) * pl, fc_idx item) {
    if (pl->band_rows) return TF(fc_gw_band_item)(pl, item);
    const TF(fc_geom) *g = &pl->g;
    fc_idx chunk = item % pl->nchunk, rest = item / pl->nchunk;
    fc_idx cgi = rest % pl->ncg, gi = rest / pl->ncg;
    fc_idx c0 = cgi * pl->cgs, nc = FC_MIN(pl->cgs, pl->Cg - c0);
    fc_idx n0 = chunk * pl->chunk, n1 = FC_MIN(g->N, n0 + pl->chunk);
    fc_idx T0 = c0 * pl->RS, Tn = nc * pl->RS;
    T *buf = (T *)fc_ws_get(0, (size_t)pl->bufsize * sizeof(T));
    fc_idx *off = (fc_idx *)fc_ws_get(2, (size_t)Tn * sizeof(fc_idx) + FC_TABLE_SLACK_BYTES);
    if (!buf || !off) return -1;
    fc_workspace *ws = fc_ws();
    ws->cached_call = 0; /* this pass reuses slot 0 for another layout */
    for (fc_idx t = 0; t < Tn; t++) off[t] = pl->off[T0 + t] - c0 * pl->wl.chstride;
    if (pl->depthwise) {
        T *dyp = (T *)fc_ws_get(1, (size_t)(g->OH * pl->ldy + FC_SLACK) * sizeof(T));
        if (!dyp) return -1;
        T *res = pl->dw + gi * pl->RS;
        for (fc_idx n = n0; n < n1; n++) {
            TF(fc_dwd_build)(&pl->isa, g, &pl->wl, pl->x, pl->xs, pl->bufsize, n, gi, 1, buf);
            /* grad_output's rows padded with zeros to ldy */
            pl->isa.dwd_pad_plane(pl->dy + (n * g->K + gi) * g->OH * g->OW, g->OW, g->OH, g->OW,
                                  dyp, g->OH, pl->ldy, 0, 0);
            const TF(fc_dw_args) a = {buf, off, pl->wl.Wq, dyp, pl->ldy, g->OH, g->OW};
            pl->isa.dw_depthwise(pl->RS, &a, res);
        }
        return 0;
    }
    /* images in groups of pl->gw_images, whose buffers are built before the kernels pass over
     * them all: each kernel call then loads and stores its block of partial sums once per
     * group, not once per image (the sums see the same pixels in the same order) */
    const fc_idx dyimg = g->OH * g->OW * pl->ldm, nbg = pl->gw_images;
    T *DYT = (T *)fc_ws_get(1, (size_t)(nbg * dyimg) * sizeof(T));
    T *bufs = nbg > 1 ? (T *)fc_ws_get(0, (size_t)(nbg * pl->bufsize) * sizeof(T)) : buf;
    if (!DYT || !bufs) return -1;
    T *Cp = pl->partial + ((chunk * g->G + gi) * pl->Cg * pl->RS + T0) * pl->ldm;
    for (fc_idx n = n0; n < n1; n += nbg) {
        const fc_idx nb = FC_MIN(nbg, n1 - n), c = gi * pl->Cg + c0;
        const T *src = TF(fc_wide_view)(g, &pl->wl, pl->x, pl->xs, n, c, pl->bufsize);
        fc_idx ximg = pl->xs[0];
        if (!src || !TF(fc_wide_view)(g, &pl->wl, pl->x, pl->xs, n + nb - 1, c, pl->bufsize)) {
            for (fc_idx i = 0; i < nb; i++)
                TF(fc_build_wide)(&pl->isa, g, &pl->wl, pl->x, pl->xs, n + i, c, nc,
                                  bufs + i * pl->bufsize, pl->bufsize);
            src = bufs;
            ximg = pl->bufsize;
        }
        for (fc_idx i = 0; i < nb; i++) TF(fc_transpose_dy)(pl, n + i, gi, DYT + i * dyimg);
        const TF(fc_dw_args) a = {src, off,  pl->wl.Wq, DYT,     pl->ldm,     g->OH,
                                  g->OW, nb, ximg,      dyimg,   n == n0, pl->sum_rows};
        TF(fc_gw_accumulate)(pl, &a, Tn, Cp);
    }
    return 0;
}

/* dw[gi*Kg + m][t] = sum over chunks, in chunk order, of partial[chunk][gi][t][m].
 * Item = (gi, block of 64 taps): the sum is formed in a [64][ldm] scratch, then transposed. */
#ifndef FC_GW_REDUCE_TB
#define FC_GW_REDUCE_TB 64
#endif
static fc_idx TF(fc_gw_reduce_items)(const TF(fc_gw_plan) * pl) {
    return pl->g.G * FC_CEIL_DIV(pl->Cg * pl->RS, (fc_idx)FC_GW_REDUCE_TB);
}

static int TF(fc_gw_reduce_item)(const TF(fc_gw_plan) * pl, fc_idx item) {
    const TF(fc_geom) *g = &pl->g;
    fc_idx TT = pl->Cg * pl->RS, nb = FC_CEIL_DIV(TT, (fc_idx)FC_GW_REDUCE_TB);
    fc_idx gi = item / nb, t0 = (item % nb) * FC_GW_REDUCE_TB;
    fc_idx nt = FC_MIN((fc_idx)FC_GW_REDUCE_TB, TT - t0);
    T *sum = (T *)fc_ws_get(3, (size_t)(FC_GW_REDUCE_TB * pl->ldm) * sizeof(T));
    if (!sum) return -1;
    const T *first = pl->partial + (gi * TT + t0) * pl->ldm;
    memcpy(sum, first, (size_t)(nt * pl->ldm) * sizeof(T));
    for (fc_idx ch = 1; ch < pl->nchunk; ch++) {
        const T *part = pl->partial + ((ch * g->G + gi) * TT + t0) * pl->ldm;
        for (fc_idx i = 0; i < nt * pl->ldm; i++) sum[i] += part[i];
    }
    pl->isa.transpose(sum, pl->ldm, nt, pl->Kg, pl->dw + gi * pl->Kg * TT + t0, TT);
    return 0;
}

/* grad_bias[k] = sum over n, then pixels in blocks of FC_BIAS_LANES lanes, in a fixed order (the
 * same on every path: a lane count that every vector width divides or fills). */
#define FC_BIAS_LANES 8
static void TF(fc_grad_bias_item)(const T *dy, fc_idx N, fc_idx K, fc_idx P, fc_idx k, T *gb) {
    T acc[FC_BIAS_LANES] = {0};
    for (fc_idx n = 0; n < N; n++) {
        const T *src = dy + (n * K + k) * P;
        fc_idx p = 0;
        for (; p + FC_BIAS_LANES <= P; p += FC_BIAS_LANES)
            for (int l = 0; l < FC_BIAS_LANES; l++) acc[l] += src[p + l];
        for (int l = 0; p < P; p++, l++) acc[l] += src[p];
    }
    gb[k] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

#undef TF
#undef FC_TILE_BYTES
#undef FC_BAND_MIN_HALOS
#undef FC_GROUP_MAX_IMAGES
#undef FC_GROUP_EMPTY_LANES
#undef FC_GROUP_MAX_BYTES
#undef FC_GW_CHANNEL_GROUPS
#undef FC_GW_ITEMS
#undef FC_GW_SUM_PIXELS
#undef FC_TABLE_SLACK_BYTES
#undef FC_BIAS_LANES
