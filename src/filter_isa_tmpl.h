/* The loops of the image-filter engine (filter_engine.h), written once with GCC vector extensions
 * and compiled once per (work dtype, ISA); filter_engine.h defines before including this file:
 *   T (float/double), TN (f32/f64), ISA (avx512/avx2/generic), VB (vector bytes), FC_TARGET.
 *
 * Every pass is one kernel, `taps`: out[j] = sum_t w[t] * src_t[j] over a list of taps (weight,
 * pointer), in the order of the list, the first a multiply and the others fused multiply-adds
 * (fc_fma.h). The horizontal pass of a separable filter reads one padded row at the offsets u*C,
 * the vertical pass kh rows at offset 0, the direct 2-D pass kh rows at u*C: a lane is one output
 * element whichever block of the loop computes it, so results never depend on the row bands,
 * column strips or thread count. */
#define FN(name) FC_CAT(FC_CAT(FC_CAT(flt, name), TN), ISA)
#define VL ((int)(VB / sizeof(T)))
#define VEC FN(vec)
#define VECU FN(vecu)
#define ALWAYS static inline __attribute__((always_inline)) FC_TARGET

typedef T VEC __attribute__((vector_size(VB)));
typedef T VECU __attribute__((vector_size(VB), aligned(sizeof(T))));
#define LOADU(p) (*(const VECU *)(p))
#define STOREU(p, v) (*(VECU *)(p) = (v))

#include "fc_fma.h"

/* Vectors per register block: enough independent accumulators to hide the FMA latency (AVX-512
 * has 32 registers, the others 16). */
#define NB (VB == 64 ? 8 : 4)

/* Store v at p (aligned to a whole vector) without reading its line into the caches first. */
ALWAYS void FN(stream)(T *p, VEC v) {
#if defined(__x86_64__) && defined(__GNUC__) && VB == 64
    if (sizeof(T) == 4) _mm512_stream_ps((float *)p, (__m512)v);
    else _mm512_stream_pd((double *)p, (__m512d)v);
#elif defined(__x86_64__) && defined(__GNUC__) && VB == 32
    if (sizeof(T) == 4) _mm256_stream_ps((float *)p, (__m256)v);
    else _mm256_stream_pd((double *)p, (__m256d)v);
#else
    *(VEC *)p = v;
#endif
}

/* Every lane s. */
ALWAYS VEC FN(splat)(T s) {
    VEC v;
    FC_UNROLL
    for (int l = 0; l < VL; l++) v[l] = s;
    return v;
}

/* Taps up to which `taps` runs a body compiled for their number: their pointers and broadcast
 * weights then stay in registers (or one stack slot) instead of being reloaded for every block. */
#define FC_TAPS_FIXED 16

/* out[j] = sum_t w[t] * p[t][j] for j < n, the body of `taps` below for nt taps: inlined with a
 * constant nt (1..FC_TAPS_FIXED) it keeps every pointer and weight out of the loop; any nt works
 * (the arrays hold the first FC_TAPS_FIXED, later taps are read from p and w). */
ALWAYS void FN(taps_body)(T *restrict out, fc_idx n, const T *const *p, const T *w, const int nt,
                          int stream) {
    const T *q[FC_TAPS_FIXED];
    VEC wv[FC_TAPS_FIXED];
    const int nh = nt < FC_TAPS_FIXED ? nt : FC_TAPS_FIXED;
    FC_UNROLL
    for (int t = 0; t < nh; t++) {
        q[t] = p[t];
        wv[t] = FN(splat)(w[t]);
    }
#define FC_TAP_PTR(t) ((t) < FC_TAPS_FIXED ? q[t] : p[t])
#define FC_TAP_W(t) ((t) < FC_TAPS_FIXED ? wv[t] : FN(splat)(w[t]))
    fc_idx j = 0;
    if (stream) {
        fc_idx head = (fc_idx)((VB - ((uintptr_t)out & (VB - 1))) & (VB - 1)) / (fc_idx)sizeof(T);
        if ((uintptr_t)out % sizeof(T)) head = n; /* never aligned: no streaming */
        head = FC_MIN(head, n);
        if (head) {
            VEC acc = FC_TAP_W(0) * LOADU(FC_TAP_PTR(0));
            FC_UNROLL
            for (int t = 1; t < nt; t++) acc = FN(fma)(FC_TAP_W(t), LOADU(FC_TAP_PTR(t)), acc);
            memcpy(out, &acc, (size_t)head * sizeof(T));
            j = head;
        }
        for (; j + NB * VL <= n; j += NB * VL) {
            VEC acc[NB];
            FC_UNROLL
            for (int b = 0; b < NB; b++) acc[b] = FC_TAP_W(0) * LOADU(FC_TAP_PTR(0) + j + b * VL);
            FC_UNROLL
            for (int t = 1; t < nt; t++) {
                FC_UNROLL
                for (int b = 0; b < NB; b++)
                    acc[b] = FN(fma)(FC_TAP_W(t), LOADU(FC_TAP_PTR(t) + j + b * VL), acc[b]);
            }
            FC_UNROLL
            for (int b = 0; b < NB; b++) FN(stream)(out + j + b * VL, acc[b]);
        }
    }
    for (; j + NB * VL <= n; j += NB * VL) {
        VEC acc[NB];
        FC_UNROLL
        for (int b = 0; b < NB; b++) acc[b] = FC_TAP_W(0) * LOADU(FC_TAP_PTR(0) + j + b * VL);
        FC_UNROLL
        for (int t = 1; t < nt; t++) {
            FC_UNROLL
            for (int b = 0; b < NB; b++)
                acc[b] = FN(fma)(FC_TAP_W(t), LOADU(FC_TAP_PTR(t) + j + b * VL), acc[b]);
        }
        FC_UNROLL
        for (int b = 0; b < NB; b++) STOREU(out + j + b * VL, acc[b]);
    }
    for (; j < n; j += VL) {
        VEC acc = FC_TAP_W(0) * LOADU(FC_TAP_PTR(0) + j);
        FC_UNROLL
        for (int t = 1; t < nt; t++) acc = FN(fma)(FC_TAP_W(t), LOADU(FC_TAP_PTR(t) + j), acc);
        if (j + VL <= n) STOREU(out + j, acc);
        else memcpy(out + j, &acc, (size_t)(n - j) * sizeof(T));
    }
#undef FC_TAP_PTR
#undef FC_TAP_W
}

/* out[j] = sum_t w[t] * p[t][j] for j < n (nt >= 1). Reads up to VL - 1 elements past n of every
 * p[t] (the buffers have slack); writes exactly n elements; with `stream`, the whole register
 * blocks by non-temporal stores (for outputs larger than the caches: no read of the lines they
 * overwrite), after a first vector written as far as the next vector-aligned element. The sum of
 * every element is the same (the first tap a multiply, the others fused multiply-adds in list
 * order) whichever body runs it. */
static FC_TARGET FC_NOCLONE void FN(taps)(T *restrict out, fc_idx n, const T *const *p,
                                          const T *w, int nt, int stream) {
    switch (nt) {
#define FC_TAPS_CASE(k)                                                                        \
    case k:                                                                                    \
        FN(taps_body)(out, n, p, w, k, stream);                                                \
        return;
        FC_TAPS_CASE(1) FC_TAPS_CASE(2) FC_TAPS_CASE(3) FC_TAPS_CASE(4) FC_TAPS_CASE(5)
        FC_TAPS_CASE(6) FC_TAPS_CASE(7) FC_TAPS_CASE(8) FC_TAPS_CASE(9) FC_TAPS_CASE(10)
        FC_TAPS_CASE(11) FC_TAPS_CASE(12) FC_TAPS_CASE(13) FC_TAPS_CASE(14) FC_TAPS_CASE(15)
        FC_TAPS_CASE(16)
#undef FC_TAPS_CASE
    default: /* nt > FC_TAPS_FIXED */
        if (nt > 0) FN(taps_body)(out, n, p, w, nt, stream);
    }
}

/* Rows of output a vertical pass computes at once: each input row vector loaded is used by up to
 * FC_VROWS outputs, so a pass of kh taps loads (FC_VROWS + kh - 1) / FC_VROWS vectors per output
 * vector instead of kh. */
#ifndef FC_VROWS
#define FC_VROWS 4
#endif
#define VNB (VB == 64 ? 4 : 2)

/* The body of vtaps (below) for kh taps, all non-zero when `dense`: inlined with a constant kh
 * and dense set, its loops unroll into straight code with the weights broadcast once. */
ALWAYS void FN(vtaps_body)(T *const *out, fc_idx n, const T *const *rows, const T *w,
                           const int kh, const int dense) {
    const int nq = FC_VROWS + kh - 1;
    VEC wv[FC_TAPS_FIXED];
    if (dense) {
        const int nw = kh < FC_TAPS_FIXED ? kh : FC_TAPS_FIXED;
        FC_UNROLL
        for (int i = 0; i < nw; i++) wv[i] = FN(splat)(w[i]);
    }
    fc_idx j = 0;
    for (; j < n; j += VNB * VL) {
        VEC acc[FC_VROWS][VNB];
        FC_UNROLL
        for (int r = 0; r < FC_VROWS; r++) {
            FC_UNROLL
            for (int b = 0; b < VNB; b++) acc[r][b] = (VEC){0};
        }
        FC_UNROLL
        for (int q = 0; q < nq; q++) {
            VEC v[VNB];
            FC_UNROLL
            for (int b = 0; b < VNB; b++) v[b] = LOADU(rows[q] + j + b * VL);
            FC_UNROLL
            for (int r = 0; r < FC_VROWS; r++) {
                int i = q - r;
                if (i < 0 || i >= kh) continue;
                if (dense) {
                    FC_UNROLL
                    for (int b = 0; b < VNB; b++) acc[r][b] = FN(fma)(wv[i], v[b], acc[r][b]);
                } else if (w[i] != 0) {
                    T wi = w[i];
                    FC_UNROLL
                    for (int b = 0; b < VNB; b++) acc[r][b] = FN(fma1)(wi, v[b], acc[r][b]);
                }
            }
        }
        FC_UNROLL
        for (int r = 0; r < FC_VROWS; r++) {
            FC_UNROLL
            for (int b = 0; b < VNB; b++) STOREU(out[r] + j + b * VL, acc[r][b]);
        }
    }
}

/* out[r][j] = sum_i w[i] * rows[r + i][j] for r < FC_VROWS, j < n, over the non-zero w[i] in
 * order of i, accumulated from +0 by fused multiply-adds (so every output row's arithmetic is
 * the same whichever of the FC_VROWS it is, and whichever body runs it). rows has
 * FC_VROWS + kh - 1 entries; an output row that is not wanted may be given any readable row (its
 * result is stored all the same). Reads and writes up to VNB * VL - 1 elements past n. */
static FC_TARGET void FN(vtaps)(T *const *out, fc_idx n, const T *const *rows, const T *w,
                                int kh) {
    int dense = kh <= FC_TAPS_FIXED;
    for (int i = 0; i < kh; i++) dense &= w[i] != 0;
    if (dense) {
        switch (kh) {
#define FC_VTAPS_CASE(k)                                                                       \
    case k:                                                                                    \
        FN(vtaps_body)(out, n, rows, w, k, 1);                                                 \
        return;
            FC_VTAPS_CASE(1) FC_VTAPS_CASE(2) FC_VTAPS_CASE(3) FC_VTAPS_CASE(4) FC_VTAPS_CASE(5)
            FC_VTAPS_CASE(6) FC_VTAPS_CASE(7) FC_VTAPS_CASE(8) FC_VTAPS_CASE(9)
            FC_VTAPS_CASE(10) FC_VTAPS_CASE(11) FC_VTAPS_CASE(12) FC_VTAPS_CASE(13)
            FC_VTAPS_CASE(14) FC_VTAPS_CASE(15) FC_VTAPS_CASE(16)
#undef FC_VTAPS_CASE
        }
    }
    FN(vtaps_body)(out, n, rows, w, kh, 0);
}

/* d[k] = (T)s[k] for k < n, from the image's element type. */
static FC_TARGET void FN(convert_in)(T *restrict d, const void *restrict s, fc_idx n, int type) {
    switch (type) {
    case FC_FT_U8: {
        const uint8_t *q = (const uint8_t *)s;
        for (fc_idx k = 0; k < n; k++) d[k] = (T)q[k];
        break;
    }
    case FC_FT_U16: {
        const uint16_t *q = (const uint16_t *)s;
        for (fc_idx k = 0; k < n; k++) d[k] = (T)q[k];
        break;
    }
    case FC_FT_F32: {
        const float *q = (const float *)s;
        for (fc_idx k = 0; k < n; k++) d[k] = (T)q[k];
        break;
    }
    default: {
        const double *q = (const double *)s;
        for (fc_idx k = 0; k < n; k++) d[k] = (T)q[k];
        break;
    }
    }
}

/* d[k] = s[k] in the output's element type: integers rounded half to even and saturated (NaN
 * gives 0), float64 to float32 rounded to nearest. */
static FC_TARGET void FN(convert_out)(void *restrict d, const T *restrict s, fc_idx n, int type) {
    fc_idx done = 0; /* elements converted in vectors */
#if defined(__x86_64__) && defined(__GNUC__) && VB == 64
    /* float32 to uint8/uint16 on AVX-512: max(v, 0) (0 for NaN: maxps returns its second operand
     * then), min(v, top), a conversion rounding as rint does (the current rounding mode, to
     * nearest even by default), a truncating pack of values already in range */
    if (sizeof(T) == 4 && (type == FC_FT_U8 || type == FC_FT_U16)) {
        const __m512 zero = _mm512_setzero_ps();
        const __m512 top = _mm512_set1_ps(type == FC_FT_U8 ? 255.0f : 65535.0f);
        for (; done + 16 <= n; done += 16) {
            __m512 v = _mm512_loadu_ps((const float *)s + done);
            __m512i i = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, zero), top));
            if (type == FC_FT_U8) _mm_storeu_si128((__m128i *)((uint8_t *)d + done),
                                                   _mm512_cvtepi32_epi8(i));
            else _mm256_storeu_si256((__m256i *)((uint16_t *)d + done), _mm512_cvtepi32_epi16(i));
        }
    }
#elif defined(__x86_64__) && defined(__GNUC__) && VB == 32
    /* the same on AVX2, 16 lanes at a time, with packs that saturate (the values are already in
     * range: the saturation changes nothing) */
    if (sizeof(T) == 4 && (type == FC_FT_U8 || type == FC_FT_U16)) {
        const __m256 zero = _mm256_setzero_ps();
        const __m256 top = _mm256_set1_ps(type == FC_FT_U8 ? 255.0f : 65535.0f);
        for (; done + 16 <= n; done += 16) {
            __m256 v0 = _mm256_loadu_ps((const float *)s + done);
            __m256 v1 = _mm256_loadu_ps((const float *)s + done + 8);
            __m256i i0 = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v0, zero), top));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v1, zero), top));
            /* packus works within 128-bit halves: lanes 0-3 of i0, 0-3 of i1, 4-7 of i0, 4-7 of
             * i1; the permute puts them back in order */
            __m256i w16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(i0, i1), 0xD8);
            if (type == FC_FT_U16) {
                _mm256_storeu_si256((__m256i *)((uint16_t *)d + done), w16);
            } else {
                __m128i lo = _mm256_castsi256_si128(w16), hi = _mm256_extracti128_si256(w16, 1);
                _mm_storeu_si128((__m128i *)((uint8_t *)d + done), _mm_packus_epi16(lo, hi));
            }
        }
    }
#endif
    if (done) { /* the rest one by one, below */
        if (done == n) return;
        d = (char *)d + done * (type == FC_FT_U8 ? 1 : 2);
        s += done;
        n -= done;
    }
    switch (type) {
    case FC_FT_U8: {
        uint8_t *q = (uint8_t *)d;
        for (fc_idx k = 0; k < n; k++) {
            T v = s[k];
            v = !(v > 0) ? (T)0 : v;
            v = v > (T)255 ? (T)255 : v;
            q[k] = (uint8_t)(int)(sizeof(T) == 4 ? __builtin_rintf((float)v)
                                                 : __builtin_rint((double)v));
        }
        break;
    }
    case FC_FT_U16: {
        uint16_t *q = (uint16_t *)d;
        for (fc_idx k = 0; k < n; k++) {
            T v = s[k];
            v = !(v > 0) ? (T)0 : v;
            v = v > (T)65535 ? (T)65535 : v;
            q[k] = (uint16_t)(int)(sizeof(T) == 4 ? __builtin_rintf((float)v)
                                                  : __builtin_rint((double)v));
        }
        break;
    }
    case FC_FT_F32: {
        float *q = (float *)d;
        for (fc_idx k = 0; k < n; k++) q[k] = (float)s[k];
        break;
    }
    default: {
        double *q = (double *)d;
        for (fc_idx k = 0; k < n; k++) q[k] = (double)s[k];
        break;
    }
    }
}

/* convert_in for the few elements of one padding pixel: inlined, no loop set up for vectors. */
ALWAYS void FN(convert_few)(T *restrict d, const void *restrict s, fc_idx n, int type) {
    for (fc_idx k = 0; k < n; k++)
        d[k] = type == FC_FT_U8    ? (T)((const uint8_t *)s)[k]
               : type == FC_FT_U16 ? (T)((const uint16_t *)s)[k]
               : type == FC_FT_F32 ? (T)((const float *)s)[k]
                                   : (T)((const double *)s)[k];
}

/* Pixels [pa, pb) of the padded row of pixels x0, x0 + 1, ... (mapped into the image by the
 * padding mode) of the image row at `row`, converted to T: at d + pa*C. */
static FC_TARGET void FN(build_pixels)(T *restrict d, const fc_filter_job *j, const char *row,
                                       fc_idx x0, fc_idx pa, fc_idx pb) {
    const fc_idx C = j->C, W = j->W, es = fc_filter_type_bytes(j->in_type);
    fc_idx lo = FC_MIN(pb, FC_MAX(pa, -x0)), hi = FC_MAX(lo, FC_MIN(pb, W - x0));
    if (hi > lo) FN(convert_in)(d + lo * C, row + (x0 + lo) * C * es, (hi - lo) * C, j->in_type);
    for (fc_idx p = pa; p < pb; p++) {
        if (p == lo) p = hi;
        if (p >= pb) break;
        fc_idx xs = fc_filter_map(x0 + p, W, j->pad);
        if (xs < 0) memset(d + p * C, 0, (size_t)C * sizeof(T));
        else FN(convert_few)(d + p * C, row + xs * C * es, C, j->in_type);
    }
}

/* Padded row ri (any integer; mapped into the image by the padding mode) of pixels x0 .. x0+npx-1
 * (also mapped), converted to T: npx*C elements at d (the FC_FILTER_SLACK after them the caller
 * zeroed once: nothing writes there). When the image
 * is of the work dtype and pl < pr, only pixels [0, pl) and [pr, npx) are built and the image
 * row is returned, to be read in place in between; else NULL. */
static FC_TARGET const T *FN(build_row)(T *restrict d, const fc_filter_job *j, fc_idx ri,
                                        fc_idx x0, fc_idx npx, fc_idx pl, fc_idx pr) {
    const fc_idx es = fc_filter_type_bytes(j->in_type);
    fc_idx rs = fc_filter_map(ri, j->H, j->pad);
    if (rs < 0) {
        memset(d, 0, (size_t)(npx * j->C) * sizeof(T));
        return NULL;
    }
    const char *row = (const char *)j->src + (rs * j->src_rs) * es;
    if (pl < pr && j->in_type == (sizeof(T) == 8 ? FC_FT_F64 : FC_FT_F32)) {
        FN(build_pixels)(d, j, row, x0, 0, pl);
        FN(build_pixels)(d, j, row, x0, pr, npx);
        return (const T *)row;
    }
    FN(build_pixels)(d, j, row, x0, 0, npx);
    return NULL;
}

/* One work item: the output rows of band `item / nstrips`, columns of strip `item % nstrips`,
 * of every filter. The padded input rows of the strip are kept in a ring of kh rows: each is
 * built once per item and read by every filter while in cache. A separable filter runs its
 * vertical pass first, over the whole padded width (a row V of npx*C elements), then its
 * horizontal pass on V: no horizontal work is spent on the rows above and below the band. */
static FC_TARGET int FN(item)(const fc_filter_job *j, fc_idx item) {
    const fc_idx kh = j->kh, C = j->C, NR = kh + FC_VROWS - 1;
    const fc_idx band = item / j->nstrips, strip = item % j->nstrips;
    /* rows [r0, r1) and columns [c0, c0 + npix) of the image's outputs */
    const fc_idx r0 = j->oy + band * j->band, r1 = FC_MIN(j->oy + j->OH, r0 + j->band);
    const fc_idx c0 = j->ox + strip * j->strip;
    const fc_idx npix = FC_MIN(j->ox + j->OW, c0 + j->strip) - c0;
    const fc_idx n = npix * C, npx = npix + j->kw - 1;
    const fc_idx LS = j->ring_stride; /* elements per ring row */
    fc_workspace *ws = fc_ws_enter();
    if (!ws) return -1;
    /* the ring, FC_VROWS rows of vertical passes (whole vector blocks: VNB*VL past npx*C),
     * a scratch row, pointer arrays */
    const fc_idx VS = FC_ROUND_UP(npx * C, 64) + FC_FILTER_SLACK;
    size_t bytes = ((size_t)(NR + 1) * (size_t)LS + (size_t)FC_VROWS * (size_t)VS) * sizeof(T) +
                   (size_t)(j->maxtaps + 4 * NR + 2 * FC_VROWS) * sizeof(T *) + FC_ALIGN;
    char *buf = (char *)fc_ws_get(0, bytes);
    if (!buf) {
        fc_ws_leave(ws);
        return -1;
    }
    T *P = (T *)buf;                    /* NR padded rows */
    T *scratch = P + NR * LS;           /* an output row before its conversion */
    T *V = scratch + LS;                /* FC_VROWS rows of a separable filter's vertical pass */
    const T **ptr = (const T **)(V + FC_VROWS * VS);
    const T **rows = ptr + j->maxtaps;
    const T **srows = rows + NR;       /* the image row of ring slot q read in place, or NULL */
    const T **slot_src = srows + NR;   /* per ring slot */
    const T **rq = slot_src + NR;
    T **vout = (T **)(rq + NR);
    T *vo[FC_VROWS];
    const T *wt = (const T *)j->tap_w;
    const fc_idx rbase = r0 - j->top; /* input row of ring slot 0 */
    const int direct_out = j->out_type == (j->f64 ? FC_FT_F64 : FC_FT_F32);
    const fc_idx es_out = fc_filter_type_bytes(j->out_type);
    const int stream = direct_out && j->stream;
    for (int r = 0; r < FC_VROWS; r++) {
        vout[r] = V + r * VS;
        memset(vout[r] + npx * C, 0, FC_FILTER_SLACK * sizeof(T));
    }
    for (fc_idx q = 0; q < NR; q++) memset(P + q * LS + npx * C, 0, FC_FILTER_SLACK * sizeof(T));
    fc_idx built = rbase; /* the next input row to build */
    /* An image of the work dtype is read in place in the interior of the strip: output elements
     * [oa, ob) of a direct pass, [va, vb) of a vertical pass, whose taps read no padding (with
     * M elements to spare for the whole vectors read past the end: vtaps' blocks of VNB vectors,
     * taps' single ones); only the pixels [0, pl) and
     * [pr, npx) of a ring row are then built. The results are the same bits either way. */
    const fc_idx x0 = c0 - j->left, x0c = x0 * C, M = VNB * VL;
    const fc_idx a = FC_MAX((fc_idx)0, j->left - c0);
    const fc_idx b = FC_MIN(npix, j->W - (j->kw - 1 - j->left) - c0);
    const fc_idx oa = a * C, ob = b * C - M;
    const fc_idx va = oa, vb = FC_MIN(npx, j->W - x0) * C - M;
    const fc_idx pl = FC_MIN(npx, FC_CEIL_DIV(oa + (j->kw - 1) * C + M, C));
    fc_idx pr = ob / C;
    const int inplace = j->inplace && ob - oa >= M && pl < pr;
    if (!inplace) pr = 0;

    for (fc_idx r = r0; r < r1; r += FC_VROWS) {
        const fc_idx nr = FC_MIN((fc_idx)FC_VROWS, r1 - r);
        const fc_idx last = r + nr - 1 - j->top + kh - 1; /* the last input row they read */
        for (; built <= last; built++) {
            fc_idx slot = (built - rbase) % NR;
            slot_src[slot] = FN(build_row)(P + slot * LS, j, built, x0, npx, pl, pr);
        }
        for (fc_idx q = 0; q < NR; q++) { /* rows past the last one built repeat it */
            fc_idx slot = (FC_MIN(r - j->top + q, last) - rbase) % NR;
            rows[q] = P + slot * LS;
            srows[q] = slot_src[slot];
        }
        for (fc_idx f = 0; f < j->F; f++) {
            const fc_filter_taps *tp = &j->taps[2 * f];
            const T *kvf = (const T *)j->kv + f * kh;
            if (j->sep[f] && !inplace) {
                FN(vtaps)(vout, npx * C, rows, kvf, (int)kh);
            } else if (j->sep[f]) { /* left edge, interior, right edge: each overwrites what the
                                     * whole vectors of the one before wrote past its end */
                if (va > 0) FN(vtaps)(vout, va, rows, kvf, (int)kh);
                for (fc_idx q = 0; q < NR; q++)
                    rq[q] = srows[q] ? srows[q] + x0c + va : rows[q] + va;
                for (int r2 = 0; r2 < FC_VROWS; r2++) vo[r2] = vout[r2] + va;
                FN(vtaps)(vo, vb - va, rq, kvf, (int)kh);
                for (fc_idx q = 0; q < NR; q++) rq[q] = rows[q] + vb;
                for (int r2 = 0; r2 < FC_VROWS; r2++) vo[r2] = vout[r2] + vb;
                FN(vtaps)(vo, npx * C - vb, rq, kvf, (int)kh);
            }
            for (fc_idx rr = 0; rr < nr; rr++) {
                char *drow =
                    (char *)j->dst +
                    (f * j->dst_fs + (r + rr - j->oy) * j->dst_rs + (c0 - j->ox) * C) * es_out;
                T *o = direct_out ? (T *)drow : scratch;
                if (!tp->n) {
                    memset(o, 0, (size_t)n * sizeof(T));
                } else if (j->sep[f]) {
                    for (int t = 0; t < tp->n; t++) ptr[t] = vout[rr] + j->tap_off[tp->first + t];
                    FN(taps)(o, n, ptr, wt + tp->first, tp->n, stream);
                } else if (!inplace) {
                    for (int t = 0; t < tp->n; t++)
                        ptr[t] = rows[rr + j->tap_row[tp->first + t]] + j->tap_off[tp->first + t];
                    FN(taps)(o, n, ptr, wt + tp->first, tp->n, stream);
                } else { /* left edge, interior (in place), right edge */
                    const fc_idx *tr = j->tap_row + tp->first, *to = j->tap_off + tp->first;
                    if (oa > 0) {
                        for (int t = 0; t < tp->n; t++) ptr[t] = rows[rr + tr[t]] + to[t];
                        FN(taps)(o, oa, ptr, wt + tp->first, tp->n, 0);
                    }
                    for (int t = 0; t < tp->n; t++) {
                        const T *sr = srows[rr + tr[t]];
                        ptr[t] = sr ? sr + (x0c + oa + to[t]) : rows[rr + tr[t]] + oa + to[t];
                    }
                    FN(taps)(o + oa, ob - oa, ptr, wt + tp->first, tp->n, stream);
                    for (int t = 0; t < tp->n; t++) ptr[t] = rows[rr + tr[t]] + ob + to[t];
                    FN(taps)(o + ob, n - ob, ptr, wt + tp->first, tp->n, 0);
                }
                if (!direct_out) FN(convert_out)(drow, scratch, n, j->out_type);
            }
        }
    }
#if defined(__x86_64__) && defined(__GNUC__)
    if (stream) _mm_sfence(); /* the non-temporal stores are seen by whoever reads the output */
#endif
    fc_ws_leave(ws);
    return 0;
}

/* ---------------------------------------------------------------------------- box filters
 * A box filter (one kernel, every tap the same weight w) runs on exact window sums. Of an integer
 * image: the pixels are whole numbers and the caller checked that every window sum stays below
 * 2^24 (float32) or 2^53 (float64), so every partial sum below is an exact integer in T. Of a
 * float32 image: in doubles, where they hold every partial sum exactly, else as integers (see
 * "box filters of float32 images" below). So any order of adding them (running sums, segments,
 * bands, strips, threads, SIMD paths) gives the same value. The output is w * sum, one
 * rounding: its cost hardly grows with the kernel's size. */
/* Sum blocks of a box row: windows of 4^k pixels, each level built from four of the one below
 * (half the passes, and stores, of windows of 2^k), and up to 3 of them per base-4 digit of kw
 * added in the last pass: kw < 4^16. */
#define FC_BOX_RADIX 4
#define FC_BOX_PARTS (3 * 16)

/* out[i] = w * sum_{u < kw} cs[i + u*C] for i < n (cs holds m >= n + (kw - 1) C elements), in
 * whole-row vector passes: the windows of 4^k pixels, level[k][i] = sum_{q < 4} level[k-1][i +
 * q 4^(k-1) C] (level[0] is cs; level[k] for k >= 1 at lv + (k - 1) * LS), then one pass adding
 * the windows of kw's base-4 digits side by side and multiplying the sum by w. Reads up to
 * VL - 1 elements past the end of every level (the rows have slack). */
static FC_TARGET void FN(box_row)(T *restrict out, const T *cs, T *lv, fc_idx LS, fc_idx n,
                                  fc_idx m, fc_idx C, fc_idx kw, T w) {
    const T *parts[FC_BOX_PARTS];
    int np = 0;
    const T *level = cs;
    fc_idx valid = m, off = 0; /* level[i] is a whole window for i < valid */
    for (fc_idx k = 0, width = 1; width <= kw; k++, width *= FC_BOX_RADIX) {
        for (fc_idx digit = (kw / width) % FC_BOX_RADIX; digit > 0; digit--) {
            parts[np++] = level + off * C;
            off += width;
        }
        if (FC_BOX_RADIX * width <= kw) {
            T *restrict next = lv + k * LS;
            const fc_idx d = width * C;
            valid -= 3 * d;
            for (fc_idx i = 0; i < valid; i++)
                next[i] = level[i] + level[i + d] + level[i + 2 * d] + level[i + 3 * d];
            level = next;
        }
    }
    const VEC wv = FN(splat)(w);
    fc_idx j = 0;
    for (; j + NB * VL <= n; j += NB * VL) {
        VEC acc[NB];
        FC_UNROLL
        for (int b = 0; b < NB; b++) acc[b] = LOADU(parts[0] + j + b * VL);
        for (int t = 1; t < np; t++) {
            const T *pt = parts[t] + j;
            FC_UNROLL
            for (int b = 0; b < NB; b++) acc[b] += LOADU(pt + b * VL);
        }
        FC_UNROLL
        for (int b = 0; b < NB; b++) STOREU(out + j + b * VL, acc[b] * wv);
    }
    for (; j < n; j += VL) {
        VEC acc = LOADU(parts[0] + j);
        for (int t = 1; t < np; t++) acc += LOADU(parts[t] + j);
        acc *= wv;
        if (j + VL <= n) STOREU(out + j, acc);
        else memcpy(out + j, &acc, (size_t)(n - j) * sizeof(T));
    }
}

/* Lane indices of a vector of T, and masks of whole lanes (the result of comparing vectors). */
typedef __typeof__((VEC){0} < (VEC){0}) FN(ivec);

/* The entry of a `permute` index vector that takes lane s (AVX2 has a variable permutation of
 * 32-bit lanes only: a double's lane holds the indices of its two halves). */
static inline int64_t FN(lane_index)(int s) {
#if defined(__x86_64__) && defined(__GNUC__) && VB == 32
    if (sizeof(T) == 8) return (int64_t)(2 * s) | ((int64_t)(2 * s + 1) << 32);
#endif
    return s;
}

/* Lane l of the result is lane idx[l] of v (idx of lane_index entries), for indices known only
 * at run time (GCC's and clang's vector shuffles want constants, or differ). */
ALWAYS VEC FN(permute)(VEC v, FN(ivec) idx) {
#if defined(__x86_64__) && defined(__GNUC__) && VB == 64
    if (sizeof(T) == 4) return (VEC)_mm512_permutexvar_ps((__m512i)idx, (__m512)v);
    return (VEC)_mm512_permutexvar_pd((__m512i)idx, (__m512d)v);
#elif defined(__x86_64__) && defined(__GNUC__) && VB == 32
    return (VEC)_mm256_permutevar8x32_ps((__m256)v, (__m256i)idx);
#else
    VEC r;
    for (int l = 0; l < VL; l++) r[l] = v[idx[l]];
    return r;
#endif
}

/* box_row by running sums, for C <= VL: the window sum S(i) = sum_{u < kw} cs[i + u*C] is
 * S(i - C) + cs[i - C + kw*C] - cs[i - C], so a vector of S is the previous vector's S of each
 * lane's channel (a lane permutation: `carry`) plus the strided prefix sums, within the vector,
 * of those differences (nshift = log2(VL / C) rounded up shifted adds: `shift`, `keep`): two
 * loads per vector whatever kw. Every value on the way (a window sum, a difference of two) is an
 * integer of magnitude below the largest window sum, so exact, and the result the same bits as
 * box_row's. out[i] = w * S(i) for i < n; reads up to VL - 1 elements past m = n + (kw - 1) C of
 * cs (slack). Inlined with a constant nshift (box_row_scan). */
ALWAYS void FN(box_scan_body)(T *restrict out, const T *cs, fc_idx n, fc_idx C, fc_idx kw,
                              T w, const int nshift, const FN(ivec) *shift,
                              const FN(ivec) *keep, FN(ivec) carry) {
    typedef FN(ivec) IVEC;
    const VEC wv = FN(splat)(w);
    const fc_idx kc = kw * C;
    VEC S = LOADU(cs); /* the first vector directly */
    for (fc_idx u = 1; u < kw; u++) S += LOADU(cs + u * C);
    VEC o = S * wv;
    if (n < VL) {
        memcpy(out, &o, (size_t)n * sizeof(T));
        return;
    }
    STOREU(out, o);
    for (fc_idx b = VL; b < n; b += VL) {
        VEC d = LOADU(cs + b - C + kc) - LOADU(cs + b - C);
        FC_UNROLL
        for (int k = 0; k < nshift; k++)
            d += (VEC)((IVEC)FN(permute)(d, shift[k]) & keep[k]);
        S = FN(permute)(S, carry) + d;
        if (b + VL <= n) {
            STOREU(out + b, S * wv);
        } else {
            o = S * wv;
            memcpy(out + b, &o, (size_t)(n - b) * sizeof(T));
        }
    }
}

/* box_row_scan's lane tables for C (built once per work item, used by every row). */
typedef struct {
    FN(ivec) shift[4], keep[4], carry; /* VL <= 16: 4 shifts at most */
    int nshift;
} FN(scan_tables);

static FC_TARGET void FN(scan_tables_init)(FN(scan_tables) *t, fc_idx C) {
    t->nshift = 0;
    for (fc_idx s = C; s < VL; s *= 2, t->nshift++) {
        for (int l = 0; l < VL; l++) {
            t->shift[t->nshift][l] = FN(lane_index)(l >= s ? (int)(l - s) : 0);
            t->keep[t->nshift][l] = l >= s ? -1 : 0;
        }
    }
    for (int l = 0; l < VL; l++) t->carry[l] = FN(lane_index)((int)(VL - C + l % C));
}

/* box_scan_body for the tables' number of shifts. */
static FC_TARGET void FN(box_row_scan)(T *restrict out, const T *cs, fc_idx n, fc_idx C,
                                       fc_idx kw, T w, const FN(scan_tables) *t) {
    switch (t->nshift) {
    case 0: FN(box_scan_body)(out, cs, n, C, kw, w, 0, t->shift, t->keep, t->carry); break;
    case 1: FN(box_scan_body)(out, cs, n, C, kw, w, 1, t->shift, t->keep, t->carry); break;
    case 2: FN(box_scan_body)(out, cs, n, C, kw, w, 2, t->shift, t->keep, t->carry); break;
    case 3: FN(box_scan_body)(out, cs, n, C, kw, w, 3, t->shift, t->keep, t->carry); break;
    default: FN(box_scan_body)(out, cs, n, C, kw, w, 4, t->shift, t->keep, t->carry); break;
    }
}

/* Channels up to which a row is summed by box_row_q (one channel) or box_row_px (2 to 4). */
#define FC_BOX_QC 4
/* Elements [i, i + cnt) of the row out (cnt <= VL) = v: of T, or of float32 where `half`. */
ALWAYS void FN(put)(void *restrict out, const int half, fc_idx i, VEC v, fc_idx cnt) {
    typedef float FV __attribute__((vector_size(VL * sizeof(float)), aligned(sizeof(float))));
    if (half) {
        FV f = __builtin_convertvector(v, FV);
        if (cnt == VL) *(FV *)((float *)out + i) = f;
        else memcpy((float *)out + i, &f, (size_t)cnt * sizeof(float));
    } else if (cnt == VL) {
        STOREU((T *)out + i, v);
    } else {
        memcpy((T *)out + i, &v, (size_t)cnt * sizeof(T));
    }
}

/* box_row for one channel, by blocks of VL elements: the window sum S(e) = sum_{u < kw} cs[e + u]
 * is S(e - VL) + Q(e - VL + kw) - Q(e - VL), Q(x) = sum_{t < VL} cs[x + t] (a window of VL
 * pixels, one pass into q), so each vector is the one before plus a difference of two loads: no
 * lane permutations. Every value on the way is a window sum of kw or VL pixels, or a difference
 * of two: exact where the caller made them so (box_item), and any order of adding them gives
 * the same bits. out[e] = w * S(e) for e < n, of T, or of float32 where `half`; reads up to
 * VL - 2 elements past m = n + kw - 1 of cs. */
ALWAYS void FN(box_q_body)(void *restrict out, const int half, const T *cs, T *restrict q,
                           fc_idx n, fc_idx kw, T w) {
    const VEC wv = FN(splat)(w);
    VEC S = LOADU(cs); /* the first block directly */
    for (fc_idx u = 1; u < kw; u++) S += LOADU(cs + u);
    FN(put)(out, half, 0, S * wv, FC_MIN((fc_idx)VL, n));
    if (n <= VL) return;
    const fc_idx nq = n - VL + kw; /* Q(x) for x < nq */
    for (fc_idx x = 0; x < nq; x += VL) {
        VEC a = LOADU(cs + x);
        FC_UNROLL
        for (int t = 1; t < VL; t++) a += LOADU(cs + x + t);
        STOREU(q + x, a);
    }
    fc_idx b = VL;
    for (; b + VL <= n; b += VL) {
        S += LOADU(q + b - VL + kw) - LOADU(q + b - VL);
        FN(put)(out, half, b, S * wv, VL);
    }
    if (b < n)
        FN(put)(out, half, b, (S + (LOADU(q + b - VL + kw) - LOADU(q + b - VL))) * wv, n - b);
}

/* box_q_body: out of T, or of float32 where `half` (T double). */
static FC_TARGET void FN(box_row_q)(void *restrict out, int half, const T *cs, T *restrict q,
                                    fc_idx n, fc_idx kw, T w) {
    if (half) FN(box_q_body)(out, 1, cs, q, n, kw, w);
    else FN(box_q_body)(out, 0, cs, q, n, kw, w);
}

/* box_row by pixels, for 2 <= C <= 4: a vector of 4 lanes holds one pixel's C channels (the
 * others are spare), and the window sum of pixel p is S(p) = S(p - 1) + cs[(p - 1 + kw) C] -
 * cs[(p - 1) C], lane by lane: two loads a pixel whatever kw, and no lane moves across. The row
 * is cut in nch segments, each with its own running sum (its first pixel summed directly), so
 * that the additions of the segments overlap. Every value on the way is a window sum or the
 * difference of two column sums: exact where the caller made them so (box_item), the same bits
 * as box_row's. out[p C + c] = w S(p)[c] for the npix pixels, of T, or of float32 where `half`;
 * reads up to 4 - C elements past the end of cs (slack). A pixel's spare lanes are stored over
 * the next pixel's, before that one is: the last pixel of a segment is stored alone. */
typedef T FN(pxv) __attribute__((vector_size(4 * sizeof(T))));
typedef T FN(pxvu) __attribute__((vector_size(4 * sizeof(T)), aligned(sizeof(T))));
#define FC_BOX_CHAINS 4

/* Pixel *v (cnt = 4 lanes, or its C alone) at element e of the row out: of T, or of float32.
 * (By address: a vector wider than the ISA's registers is passed differently by GCC versions.) */
ALWAYS void FN(put_px)(void *restrict out, const int half, fc_idx e, const FN(pxv) *v,
                       fc_idx cnt) {
    typedef float F4 __attribute__((vector_size(4 * sizeof(float)), aligned(sizeof(float))));
    if (half) {
        F4 f = __builtin_convertvector(*v, F4);
        if (cnt == 4) *(F4 *)((float *)out + e) = f;
        else memcpy((float *)out + e, &f, (size_t)cnt * sizeof(float));
    } else if (cnt == 4) {
        *(FN(pxvu) *)((T *)out + e) = *v;
    } else {
        memcpy((T *)out + e, v, (size_t)cnt * sizeof(T));
    }
}

ALWAYS void FN(box_px_body)(void *restrict out, const int half, const T *cs, fc_idx npix,
                            const fc_idx C, fc_idx kw, T w, const int nch) {
    typedef FN(pxv) PV;
#define FC_PX(p) (*(const FN(pxvu) *)(cs + (p) * C))
    const PV wv = {w, w, w, w};
    const fc_idx len = npix / nch, tail = npix - (nch - 1) * len; /* the last one the longest */
    PV S[FC_BOX_CHAINS];
    FC_UNROLL
    for (int k = 0; k < nch; k++) {
        S[k] = FC_PX(k * len);
        for (fc_idx u = 1; u < kw; u++) S[k] += FC_PX(k * len + u);
        const PV o = S[k] * wv;
        FN(put_px)(out, half, k * len * C, &o, len > 1 ? 4 : C);
    }
    fc_idx i = 1;
    for (; i + 1 < len; i++) {
        FC_UNROLL
        for (int k = 0; k < nch; k++) {
            const fc_idx p = k * len + i;
            S[k] += FC_PX(p - 1 + kw) - FC_PX(p - 1);
            const PV o = S[k] * wv;
            FN(put_px)(out, half, p * C, &o, 4);
        }
    }
    if (i < len) { /* the last pixel of every segment but the last one */
        FC_UNROLL
        for (int k = 0; k + 1 < nch; k++) {
            const fc_idx p = k * len + i;
            S[k] += FC_PX(p - 1 + kw) - FC_PX(p - 1);
            const PV o = S[k] * wv;
            FN(put_px)(out, half, p * C, &o, C);
        }
    }
    for (; i < tail; i++) {
        const fc_idx p = (nch - 1) * len + i;
        S[nch - 1] += FC_PX(p - 1 + kw) - FC_PX(p - 1);
        const PV o = S[nch - 1] * wv;
        FN(put_px)(out, half, p * C, &o, i + 1 < tail ? 4 : C);
    }
#undef FC_PX
}

/* box_px_body with the segments' number fixed: FC_BOX_CHAINS for rows long enough. */
static FC_TARGET void FN(box_row_px)(void *restrict out, int half, const T *cs, fc_idx npix,
                                     fc_idx C, fc_idx kw, T w) {
    const int many = npix >= 16 * FC_BOX_CHAINS;
    if (half && many) FN(box_px_body)(out, 1, cs, npix, C, kw, w, FC_BOX_CHAINS);
    else if (half) FN(box_px_body)(out, 1, cs, npix, C, kw, w, 1);
    else if (many) FN(box_px_body)(out, 0, cs, npix, C, kw, w, FC_BOX_CHAINS);
    else FN(box_px_body)(out, 0, cs, npix, C, kw, w, 1);
}

/* cs[e] += (T)a[e] - (T)b[e] for e < n, a and b elements of the image's integer type, either
 * NULL for a row of zeros (nothing added, or nothing subtracted). */
#define FC_BOX_UPDATE(IT)                                                                      \
    do {                                                                                       \
        const IT *restrict A = (const IT *)a, *restrict B = (const IT *)b;                     \
        if (A && B)                                                                            \
            for (fc_idx e = 0; e < n; e++) cs[e] += (T)A[e] - (T)B[e];                         \
        else if (A)                                                                            \
            for (fc_idx e = 0; e < n; e++) cs[e] += (T)A[e];                                   \
        else if (B)                                                                            \
            for (fc_idx e = 0; e < n; e++) cs[e] -= (T)B[e];                                   \
    } while (0)
ALWAYS void FN(box_update_span)(T *restrict cs, const char *a, const char *b, fc_idx n,
                                int type) {
    if (type == FC_FT_U8) FC_BOX_UPDATE(uint8_t);
    else FC_BOX_UPDATE(uint16_t);
}
#undef FC_BOX_UPDATE

typedef uint32_t FN(u32v) __attribute__((vector_size(VB)));

/* Lanewise unsigned max of VL 32-bit lanes, or min where `least` (one instruction where the ISA
 * has it). */
typedef uint32_t FN(uvl) __attribute__((vector_size(VL * 4)));
ALWAYS FN(uvl) FN(uext)(FN(uvl) a, FN(uvl) b, const int least) {
#if defined(__x86_64__) && defined(__GNUC__) && (VB == 32 || VB == 64)
#define FC_UEXT(bytes, V, vmin, vmax)                                                          \
    if (VL * 4 == bytes) {                                                                     \
        V x, y;                                                                                \
        memcpy(&x, &a, bytes);                                                                 \
        memcpy(&y, &b, bytes);                                                                 \
        x = least ? vmin(x, y) : vmax(x, y);                                                   \
        memcpy(&a, &x, bytes);                                                                 \
        return a;                                                                              \
    }
    FC_UEXT(16, __m128i, _mm_min_epu32, _mm_max_epu32)
    FC_UEXT(32, __m256i, _mm256_min_epu32, _mm256_max_epu32)
#undef FC_UEXT
#endif
    FN(uvl) pick = least ? (FN(uvl))(a < b) : (FN(uvl))(a > b);
    return (a & pick) | (b & ~pick);
}

/* The magnitude bits of VL pixels folded into the running max vh (0x7f800000 and up: an inf or
 * a nan) and the running min vl of the non-zero ones less 1 (0xffffffff: none), lane by lane. */
ALWAYS void FN(range_fold)(FN(uvl) *vh, FN(uvl) *vl, FN(uvl) bits) {
    bits &= 0x7fffffffu;
    *vh = FN(uext)(*vh, bits, 0);
    *vl = FN(uext)(*vl, bits - 1u, 1); /* a zero: the largest */
}

/* range_fold's lanes folded into *hi and *lo, then the pixels x[i], i < n, one by one. */
ALWAYS void FN(range_finish)(FN(uvl) vh, FN(uvl) vl, const float *x, fc_idx n, uint32_t *hi,
                             uint32_t *lo) {
    uint32_t h = *hi, w = *lo;
    for (int l = 0; l < VL; l++) {
        h = FC_MAX(h, vh[l]);
        w = FC_MIN(w, vl[l]);
    }
    for (fc_idx i = 0; i < n; i++) {
        uint32_t a;
        memcpy(&a, x + i, sizeof a);
        a &= 0x7fffffffu;
        h = FC_MAX(h, a);
        w = FC_MIN(w, a - 1u);
    }
    *hi = h;
    *lo = w;
}

/* max(*hi, the bits of |x[i]|) for i < n: the largest |x[i]| (0x7f800000 and up: an inf or a
 * nan); min(*lo, the bits of the smallest non-zero |x[i]|, less 1) (0xffffffff: none). */
static FC_TARGET void FN(f32_range)(const float *x, fc_idx n, uint32_t *hi, uint32_t *lo) {
    typedef FN(uvl) U;
    typedef U UU __attribute__((aligned(4)));
    U vh = {0}, vl = {0};
    vh += *hi;
    vl += *lo;
    fc_idx i = 0;
    for (; i + VL <= n; i += VL) FN(range_fold)(&vh, &vl, *(const UU *)(x + i));
    FN(range_finish)(vh, vl, x + i, n - i, hi, lo);
}

/* How the column sums of a float32 image's box filter take its pixels (T double; box_item).
 * Every pixel entering the window updates hi and lo (f32_range); once `known` (t set for pixels
 * below 2^top, be_max = top + 126 their largest biased exponent), an entering pixel sets `bad`:
 * FC_BOX_NONFINITE for an inf or a nan, FC_BOX_LARGER above 2^top, FC_BOX_FINER where it is
 * not a whole multiple of 2^t (checked where a pixel is below `sure`, 2^(t + 23): those of at
 * least sure all are).
 * `magic` (0: none): each pixel x is split into hi = (x + magic) - magic, a multiple of the
 * unit of magic, and lo = x - hi, each summed exactly in its own column sums. */
typedef struct {
    int t, bad, known;
    uint32_t hi, lo, sure, be_max;
    T magic;
} FN(box_fit);

/* Whether every x[i], i < n, is a whole multiple of 2^t: the bits of its significand (the
 * implicit one included) below 2^t are 0 (any float32 is a multiple of 2^-149). */
static FC_TARGET int FN(f32_multiples)(const float *x, fc_idx n, int t) {
    typedef FN(u32v) U;
    typedef U UU __attribute__((aligned(4)));
    typedef int32_t I __attribute__((vector_size(VB)));
    enum { L = VB / 4 };
    U any = {0}, one = {0};
    one += 1u;
    I shift0 = {0};
    shift0 += t + 150;
    fc_idx i = 0;
    for (; i + L <= n; i += L) {
        U a = *(const UU *)(x + i);
        I be = (I)((a >> 23) & 0xffu);
        U m = (a & 0x7fffffu) | ((U)(be != 0) & 0x800000u);
        /* the bits of m below 2^t, m's unit being 2^(max(be, 1) - 150): none where that is
         * negative, all 24 where it is more */
        I sh = shift0 - (be - (I)(be == 0));
        sh &= (I)(sh > 0);
        sh -= (sh - 24) & (I)(sh > 24);
        any |= m & ((one << (U)sh) - 1u);
    }
    uint32_t r = 0;
    for (int l = 0; l < L; l++) r |= any[l];
    for (; i < n; i++) {
        uint32_t a;
        memcpy(&a, x + i, sizeof a);
        int be = (int)((a >> 23) & 0xffu), sh = t + 150 - (be ? be : 1);
        uint32_t m = (a & 0x7fffffu) | (be ? 0x800000u : 0);
        r |= sh <= 0 ? 0 : m & ((1u << FC_MIN(sh, 24)) - 1u);
    }
    return r == 0;
}

/* VL float32 lanes converted to T (one instruction where GCC would split it in halves). */
typedef float FN(fvl) __attribute__((vector_size(VL * sizeof(float)), aligned(sizeof(float))));
ALWAYS VEC FN(widen)(FN(fvl) f) {
#if defined(__x86_64__) && defined(__GNUC__) && (VB == 32 || VB == 64)
    if (sizeof(T) == 8) { /* (copies: the casts would not compile for T float) */
#if VB == 32
        __m128 x;
        __m256d d;
#else
        __m256 x;
        __m512d d;
#endif
        VEC r;
        memcpy(&x, &f, sizeof x);
#if VB == 32
        d = _mm256_cvtps_pd(x);
#else
        d = _mm512_cvtps_pd(x);
#endif
        memcpy(&r, &d, sizeof r);
        return r;
    }
#endif
    return __builtin_convertvector(f, VEC);
}

/* box_update_span for float32 pixels (T double), splitting them as fit says, and checking the
 * entering ones: their range (f32_range's, taken in the same loop, as they are converted), then
 * as fit says. A bad pixel leaves the column sums updated all the same: box_item starts them
 * over. */
ALWAYS void FN(box_update_f32)(T *restrict cs, T *restrict lo, const float *a, const float *b,
                               fc_idx n, FN(box_fit) *fit) {
    typedef FN(fvl) FV;
    typedef FN(uvl) UV;
    const VEC mv = FN(splat)(fit->magic), zero = FN(splat)(0);
    const int split = fit->magic != 0;
    UV vh = {0}, vl = {0};
    vl -= 1u; /* 0xffffffff: no non-zero pixel yet */
    fc_idx e = 0;
    for (; e + VL <= n; e += VL) {
        VEC xa = zero, xb = b ? FN(widen)(*(const FV *)(b + e)) : zero;
        if (a) {
            const FV fa = *(const FV *)(a + e);
            UV bits;
            memcpy(&bits, &fa, sizeof bits);
            FN(range_fold)(&vh, &vl, bits);
            xa = FN(widen)(fa);
        }
        if (split) {
            VEC ha = (xa + mv) - mv, hb = (xb + mv) - mv;
            STOREU(cs + e, LOADU(cs + e) + (ha - hb));
            STOREU(lo + e, LOADU(lo + e) + ((xa - ha) - (xb - hb)));
        } else {
            STOREU(cs + e, LOADU(cs + e) + (xa - xb));
        }
    }
    uint32_t hi = 0, low = 0xffffffffu;
    if (a) FN(range_finish)(vh, vl, a + e, n - e, &hi, &low);
    for (; e < n; e++) {
        T xa = a ? (T)a[e] : 0, xb = b ? (T)b[e] : 0;
        if (split) {
            T ha = (xa + fit->magic) - fit->magic, hb = (xb + fit->magic) - fit->magic;
            cs[e] += ha - hb;
            lo[e] += (xa - ha) - (xb - hb);
        } else {
            cs[e] += xa - xb;
        }
    }
    if (!a) return;
    fit->hi = FC_MAX(fit->hi, hi);
    fit->lo = FC_MIN(fit->lo, low);
    if (!fit->known) return;
    int bad = 0; /* the worst of the item's so far is kept: it decides the way the item takes */
    if (hi >= 0x7f800000u) bad = FC_BOX_NONFINITE;
    else if ((hi >> 23) > fit->be_max) bad = FC_BOX_LARGER;
    else if (!fit->bad && low + 1u < fit->sure && !FN(f32_multiples)(a, n, fit->t))
        bad = FC_BOX_FINER;
    fit->bad = FC_MAX(fit->bad, bad);
}

/* box_update_span or box_update_f32 on the n elements of the column sums from element e. */
ALWAYS void FN(box_update_any)(T *restrict cs, T *restrict lo, FN(box_fit) *fit, int type,
                               fc_idx e, const char *a, const char *b, fc_idx n) {
    if (type == FC_FT_F32)
        FN(box_update_f32)(cs + e, lo ? lo + e : NULL, (const float *)a, (const float *)b, n, fit);
    else
        FN(box_update_span)(cs + e, a, b, n, type);
}

/* A box item's padding: the elements [0, plo C) and [phi C, m) of its rows (the pixels left and
 * right of the image, the pixels inside being [plo, phi)), src[e] the element of the image's
 * row each copies, in that order (-1: a zero). `mirror` where every one it copies is one of
 * the item's: their column sums are then copies of those columns', and taken from them. */
typedef struct {
    fc_idx plo, phi, n;
    const fc_idx *src;
    int mirror;
    char *g; /* elements of two rows of the image's type (box_update's gathered pixels) */
} FN(box_pads);

/* The padding of the item's pixels x0 .. x0 + npx - 1 (src: room for m entries). */
static FC_TARGET FN(box_pads) FN(box_pads_of)(const fc_filter_job *j, fc_idx x0, fc_idx npx,
                                             fc_idx *src, char *g) {
    const fc_idx C = j->C;
    FN(box_pads) pd;
    pd.plo = FC_MIN(npx, FC_MAX((fc_idx)0, -x0));
    pd.phi = FC_MAX(pd.plo, FC_MIN(npx, j->W - x0));
    pd.n = 0;
    pd.src = src;
    pd.mirror = 1;
    pd.g = g;
    for (fc_idx p = 0; p < npx; p++) {
        if (p == pd.plo) p = pd.phi;
        if (p >= npx) break;
        const fc_idx xs = fc_filter_map(x0 + p, j->W, j->pad);
        if (xs >= 0 && (xs - x0 < pd.plo || xs - x0 >= pd.phi)) pd.mirror = 0;
        for (fc_idx c = 0; c < C; c++) src[pd.n++] = xs < 0 ? -1 : xs * C + c;
    }
    return pd;
}

/* g[i] = row[src[i]] (0 where src[i] < 0) for i < n, elements of es bytes. */
static FC_TARGET void FN(box_gather)(char *restrict g, const char *row, const fc_idx *src,
                                     fc_idx n, fc_idx es) {
    if (es == 4) {
        for (fc_idx i = 0; i < n; i++)
            ((float *)g)[i] = src[i] < 0 ? 0 : ((const float *)row)[src[i]];
    } else if (es == 2) {
        for (fc_idx i = 0; i < n; i++)
            ((uint16_t *)g)[i] = src[i] < 0 ? 0 : ((const uint16_t *)row)[src[i]];
    } else {
        for (fc_idx i = 0; i < n; i++)
            ((uint8_t *)g)[i] = src[i] < 0 ? 0 : ((const uint8_t *)row)[src[i]];
    }
}

/* Moves a box item's column sums down a row: cs[e] += the row `in` of the padded image minus the
 * row `out` (any integers, mapped by the padding mode; FC_FILTER_NO_ROW for none), over its pixels
 * x0 .. x0 + npx - 1 (also mapped), channels interleaved. The pixels inside the image are read
 * where they are, and converted as they are added. The padding's column sums are then copied
 * from the columns they mirror (pd->mirror), or else its pixels gathered first, each side's
 * added as one span. Float32 pixels go through box_update_f32 (`lo`: the column sums of their
 * low parts, where fit splits them). */
static FC_TARGET void FN(box_update)(T *restrict cs, T *restrict lo, FN(box_fit) *fit,
                                     const fc_filter_job *j, fc_idx in, fc_idx out, fc_idx x0,
                                     const FN(box_pads) *pd) {
    const fc_idx C = j->C, es = fc_filter_type_bytes(j->in_type);
    fc_idx ri = in == FC_FILTER_NO_ROW ? -1 : fc_filter_map(in, j->H, j->pad);
    fc_idx ro = out == FC_FILTER_NO_ROW ? -1 : fc_filter_map(out, j->H, j->pad);
    const char *a = ri < 0 ? NULL : (const char *)j->src + ri * j->src_rs * es;
    const char *b = ro < 0 ? NULL : (const char *)j->src + ro * j->src_rs * es;
    if (!a && !b) return;
    const fc_idx plo = pd->plo, phi = pd->phi, nlo = plo * C;
    if (phi > plo) {
        const fc_idx at = (x0 + plo) * C * es;
        FN(box_update_any)(cs, lo, fit, j->in_type, nlo, a ? a + at : NULL, b ? b + at : NULL,
                           (phi - plo) * C);
    }
    if (pd->mirror) {
        const fc_idx shift = x0 * C; /* an image element's index in the item's row */
        for (fc_idx i = 0; i < pd->n; i++) {
            if (pd->src[i] < 0) continue;
            const fc_idx e = i < nlo ? i : i - nlo + phi * C;
            cs[e] = cs[pd->src[i] - shift];
            if (lo) lo[e] = lo[pd->src[i] - shift];
        }
        return;
    }
    const fc_idx sides[2][2] = {{0, nlo}, {nlo, pd->n}}; /* entries of src, and elements */
    for (int side = 0; side < 2; side++) {
        const fc_idx i0 = sides[side][0], cnt = sides[side][1] - i0;
        if (cnt <= 0) continue;
        char *ga = pd->g, *gb = pd->g + cnt * es;
        if (a) FN(box_gather)(ga, a, pd->src + i0, cnt, es);
        if (b) FN(box_gather)(gb, b, pd->src + i0, cnt, es);
        FN(box_update_any)(cs, lo, fit, j->in_type, side ? phi * C : 0, a ? ga : NULL,
                           b ? gb : NULL, cnt);
    }
}

/* ------------------------------------------------- box filters of float32 images, in doubles
 * (FC_FBOX_F64; see filter_engine.h). Sums of float32 pixels are exact in doubles where every
 * value on the way (a window sum of at most kh * max(kw, 16) pixels, or the difference of two,
 * box_row_q's, box_row_px's and box_row_scan's included) is a whole multiple of some power of
 * 2, 2^t, and below 2^53 of them. box_item sets t from the largest pixel of the window's first
 * kh rows (with room for twice as large), and box_update checks each pixel as it enters the
 * window (a larger one: t from the largest of the rest of the item's region, box_region, and
 * the item again from that row). Level 1: the pixels summed as they are; where one is not a
 * multiple of 2^t, level 2: every pixel split into a multiple of 2^t and a remainder, each
 * summed exactly (a window sum is then the two sums added, rounded once: the exact sum rounded
 * to a double). Where level 2 fails too, or a pixel is an inf or a nan, xbox_item keeps the
 * sums exactly as integers. Every way gives the same bits, so the way an item takes, which
 * depends on its region (the bands, strips and threads), never shows. */
/* Over the float32 image's `rows` rows from `in` (mapped by the padding mode) and its pixels
 * x0 .. x0 + npx - 1 (also mapped): f32_range into *hi and *lo (from 0 and 0xffffffff) where hi
 * is given, else whether every pixel is a whole multiple of 2^t (f32_multiples). */
static FC_TARGET int FN(box_region)(const fc_filter_job *j, fc_idx in, fc_idx rows, fc_idx x0,
                                    fc_idx npx, uint32_t *hi, uint32_t *lo, int t) {
    const fc_idx C = j->C, W = j->W;
    if (hi) {
        *hi = 0;
        *lo = 0xffffffffu;
    }
    const fc_idx plo = FC_MIN(npx, FC_MAX((fc_idx)0, -x0)), phi = FC_MAX(plo, FC_MIN(npx, W - x0));
    for (fc_idx r = 0; r < rows; r++) {
        fc_idx ri = fc_filter_map(in + r, j->H, j->pad);
        if (ri < 0) continue;
        const float *row = (const float *)j->src + ri * j->src_rs;
        for (fc_idx p = 0; p < npx; p++) {
            /* the pixels inside the image as one span, the padding pixels one by one */
            const int span = p == plo && plo < phi;
            fc_idx xs = span ? x0 + p : fc_filter_map(x0 + p, W, j->pad);
            const fc_idx count = span ? (phi - plo) * C : C;
            if (span) p = phi - 1;
            if (xs < 0) continue;
            if (hi) FN(f32_range)(row + xs * C, count, hi, lo);
            else if (!FN(f32_multiples)(row + xs * C, count, t)) return 0;
        }
    }
    return 1;
}

/* The box_fit of `level` (1 or 2) for pixels below 2^top (see above). */
static FC_TARGET FN(box_fit) FN(box_fit_of)(const fc_filter_job *j, int top, int level) {
    int bits = 0; /* log2 of 2 kh max(kw, 16), rounded up */
    while (((fc_idx)1 << bits) < 2 * j->kh * FC_MAX(j->kw, (fc_idx)16)) bits++;
    const int t1 = top + bits - 53; /* level 1: every pixel a multiple of 2^t1 */
    FN(box_fit) fit;
    memset(&fit, 0, sizeof fit);
    fit.lo = 0xffffffffu;
    fit.known = 1;
    fit.be_max = (uint32_t)(top + 126);
    fit.t = level == 1 ? t1 : t1 + bits - 54; /* level 2: the remainders, below 2^(t1 - 1) */
    fit.magic = level == 1 ? 0 : (T)ldexp(1.5, t1 + 52);
    const int be = fit.t + 23 + 127; /* the float32 bits of 2^(t + 23), or of inf */
    fit.sure = be >= 255 ? 0x7f800000u : be <= 0 ? 0u : (uint32_t)be << 23;
    return fit;
}

/* Box results s[0..n) (scratch, changed) into the output row d, of the output's type. Doubles
 * (a float32 image, or sums beyond float32's exact range) go to an integer output through
 * float32 where that is the work dtype (every output but float64), as every other filter's
 * result does: a double rounded straight to an integer can differ at a float32 tie
 * (0.5000000075 gives 1, its float32 0.5 gives 0). */
ALWAYS void FN(box_out)(const fc_filter_job *j, void *restrict d, T *restrict s, fc_idx n) {
    if (sizeof(T) == 8 && !j->f64 && (j->out_type == FC_FT_U8 || j->out_type == FC_FT_U16))
        for (fc_idx e = 0; e < n; e++) s[e] = (T)(float)s[e];
    FN(convert_out)(d, s, n, j->out_type);
}

/* box_item for an item whose sums do not fit doubles: exact column sums and window sums
 * (filter_engine.h's xsum), each output w * (its sum rounded to a double), as box_item's. */
static FC_TARGET int FN(xbox_item)(const fc_filter_job *j, fc_idx r0, fc_idx r1, fc_idx c0,
                                   fc_idx npix) {
    const fc_idx kh = j->kh, kw = j->kw, C = j->C;
    const fc_idx n = npix * C, npx = npix + kw - 1, m = npx * C;
    const fc_idx x0 = c0 - j->left, rbase = r0 - j->top;
    fc_workspace *ws = fc_ws_enter();
    if (!ws) return -1;
    const size_t digits = (size_t)(m + C) * FC_XS_DIGITS;
    int64_t *cs = (int64_t *)fc_ws_get(0, digits * sizeof(int64_t) + (size_t)n * sizeof(double) +
                                              FC_ALIGN);
    if (!cs) {
        fc_ws_leave(ws);
        return -1;
    }
    int64_t *S = cs + (size_t)m * FC_XS_DIGITS;
    double *scratch = (double *)(cs + digits);
    const fc_idx es_out = fc_filter_type_bytes(j->out_type);
    memset(cs, 0, (size_t)m * FC_XS_DIGITS * sizeof(int64_t));
    for (fc_idx i = 0; i < kh; i++)
        fc_filter_xbox_update(cs, j, rbase + i, FC_FILTER_NO_ROW, x0, npx);
    for (fc_idx r = r0; r < r1; r++) {
        if (r > r0) {
            const fc_idx in = r - j->top + kh - 1;
            fc_filter_xbox_update(cs, j, in, in - kh, x0, npx);
        }
        char *drow = (char *)j->dst + ((r - j->oy) * j->dst_rs + (c0 - j->ox) * C) * es_out;
        const int direct_out = j->out_type == FC_FT_F64;
        fc_filter_xbox_row(direct_out ? (double *)drow : scratch, cs, S, n, C, kw, j->box_w);
        if (!direct_out) FN(box_out)(j, drow, (T *)scratch, n);
    }
    fc_ws_leave(ws);
    return 0;
}

/* The window sums along one row, times w, from its column sums cs (box_row_q, box_row_px,
 * box_row_scan or box_row by the channels; q, lv, LS, m and the tables as they need): of T, or
 * of float32 where `half` (T double, C <= FC_BOX_QC). */
ALWAYS void FN(box_sums)(void *restrict out, int half, const T *cs, T *q, T *lv, fc_idx LS,
                         fc_idx n, fc_idx m, fc_idx C, fc_idx kw, T w,
                         const FN(scan_tables) *tables) {
    if (C == 1) FN(box_row_q)(out, half, cs, q, n, kw, w);
    else if (C <= FC_BOX_QC) FN(box_row_px)(out, half, cs, n / C, C, kw, w);
    else if (C <= VL) FN(box_row_scan)((T *)out, cs, n, C, kw, w, tables);
    else FN(box_row)((T *)out, cs, lv, LS, n, m, C, kw, w);
}

/* One work item of a box filter (see above): the band's output rows and the strip's columns.
 * Column sums over the kh rows of the window, kept up to date row by row (the entering row
 * added, the leaving one subtracted, both read in the image), then the window sums along each
 * row (box_sums). A float32 image's item runs at level 1, else 2, else in xbox_item. */
static FC_TARGET int FN(box_item)(const fc_filter_job *j, fc_idx item) {
    const fc_idx kh = j->kh, kw = j->kw, C = j->C;
    const fc_idx band = item / j->nstrips, strip = item % j->nstrips;
    const fc_idx r0 = j->oy + band * j->band, r1 = FC_MIN(j->oy + j->OH, r0 + j->band);
    const fc_idx c0 = j->ox + strip * j->strip;
    const fc_idx npix = FC_MIN(j->ox + j->OW, c0 + j->strip) - c0;
    const fc_idx n = npix * C, npx = npix + kw - 1, m = npx * C;
    const fc_idx LS = FC_ROUND_UP(m + FC_FILTER_SLACK, 16);
    const fc_idx x0 = c0 - j->left;
    fc_idx rs = r0; /* the first row still to compute: a change of way starts over from it */
    const int f32 = sizeof(T) == 8 && j->in_type == FC_FT_F32;
    /* float32 pixels: level 1 (else 2) for pixels below 2^top; `known` once top is the whole
     * region's (else the first kh rows') */
    int level = f32, top = 0, known = 0;
    fc_workspace *ws = fc_ws_enter();
    if (!ws) return -1;
    int levels = 0; /* box_row's window levels above 1 pixel: floor(log4(kw)) */
    for (fc_idx width = FC_BOX_RADIX; C > VL && width <= kw; width *= FC_BOX_RADIX) levels++;
    FN(scan_tables) tables;
    memset(&tables, 0, sizeof tables);
    if (C > FC_BOX_QC && C <= VL) FN(scan_tables_init)(&tables, C);
    /* the column sums (and those of the low parts), two rows of sums, q, box_row's levels; then
     * the padding's sources (m entries) and its gathered pixels (two rows, m elements of 4 bytes
     * at most) */
    const size_t rows_bytes = (size_t)(5 + levels) * (size_t)LS * sizeof(T) + VB;
    T *cs = (T *)fc_ws_get(0, rows_bytes + (size_t)m * (sizeof(fc_idx) + 8) + FC_ALIGN);
    if (!cs) {
        fc_ws_leave(ws);
        return -1;
    }
    fc_idx *padsrc = (fc_idx *)((char *)cs + FC_ROUND_UP(rows_bytes, FC_ALIGN));
    const FN(box_pads) pads = FN(box_pads_of)(j, x0, npx, padsrc, (char *)(padsrc + m));
    /* the column sums of the pixels in the image start on a whole vector: their updates store
     * whole vectors, never one across two cache lines */
    cs += (VL - pads.plo * C % VL) % VL;
    T *lows = cs + LS, *scratch = lows + LS, *scratch2 = scratch + LS, *qrow = scratch2 + LS;
    T *win = qrow + LS;
    const T w = (T)j->box_w;
    const int direct_out = j->out_type == (sizeof(T) == 8 ? FC_FT_F64 : FC_FT_F32);
    const int half = sizeof(T) == 8 && j->out_type == FC_FT_F32 && C <= FC_BOX_QC;
    const fc_idx es_out = fc_filter_type_bytes(j->out_type);
    FN(box_fit) fit;
restart:
    memset(&fit, 0, sizeof fit);
    fit.lo = 0xffffffffu;
    if (known) fit = FN(box_fit_of)(j, top, level);
    T *lo = level == 2 ? lows : NULL;
    memset(cs, 0, (size_t)LS * sizeof(T));
    if (lo) memset(lo, 0, (size_t)LS * sizeof(T));
    for (fc_idx i = 0; i < kh; i++)
        FN(box_update)(cs, lo, &fit, j, rs - j->top + i, FC_FILTER_NO_ROW, x0, &pads);
    if (f32 && !known) { /* t from the first kh rows, optimistically; the others checked */
        const FN(box_fit) first = fit;
        /* room for pixels up to twice as large (a 1.0 below rows of 0.9s), which would
         * otherwise cost a scan of the region and the rows' work again; a bit of room is one
         * binade less of the pixels the level takes below the largest (29 - b at level 1,
         * 83 - 2 b at level 2, b as in box_fit_of) */
        top = (int)FC_MAX(first.hi >> 23, 1u) - 126 + 1;
        fit = FN(box_fit_of)(j, top, level);
        if (first.hi >= 0x7f800000u) fit.bad = FC_BOX_NONFINITE;
        else if (first.lo + 1u < fit.sure &&
                 !FN(box_region)(j, rs - j->top, kh, x0, npx, NULL, NULL, fit.t))
            fit.bad = FC_BOX_FINER; /* a pixel below sure that is not a multiple */
    }
    for (fc_idx r = rs; r < r1; r++) {
        if (r > rs && !fit.bad) { /* the row entering the window, and the one leaving it */
            const fc_idx in = r - j->top + kh - 1;
            FN(box_update)(cs, lo, &fit, j, in, in - kh, x0, &pads);
        }
        if (fit.bad) {
            /* an inf or a nan, or finer pixels than level 2 takes: exact integer sums; larger
             * pixels, or finer ones than level 1 takes: the level for the rest of the region */
            if (fit.bad == FC_BOX_NONFINITE || (fit.bad == FC_BOX_FINER && level == 2)) {
                fc_ws_leave(ws);
                return FN(xbox_item)(j, r, r1, c0, npix);
            }
            if (fit.bad == FC_BOX_FINER) level = 2;
            if (!known) {
                uint32_t hi, lo_bits;
                FN(box_region)(j, r - j->top, r1 - r + kh - 1, x0, npx, &hi, &lo_bits, 0);
                if (hi >= 0x7f800000u) {
                    fc_ws_leave(ws);
                    return FN(xbox_item)(j, r, r1, c0, npix);
                }
                top = (int)FC_MAX(hi >> 23, 1u) - 126;
                known = 1;
            }
            rs = r; /* the rows above are done, and exact */
            goto restart;
        }
        char *drow = (char *)j->dst + ((r - j->oy) * j->dst_rs + (c0 - j->ox) * C) * es_out;
        T *o = direct_out ? (T *)drow : scratch;
        if (lo) { /* the two exact sums added: rounded once, then times w */
            FN(box_sums)(scratch, 0, cs, qrow, win, LS, n, m, C, kw, (T)1, &tables);
            FN(box_sums)(scratch2, 0, lo, qrow, win, LS, n, m, C, kw, (T)1, &tables);
            for (fc_idx e = 0; e < n; e++) o[e] = (scratch[e] + scratch2[e]) * w;
        } else if (half) { /* float32 out of doubles: rounded as they are stored */
            FN(box_sums)(drow, 1, cs, qrow, win, LS, n, m, C, kw, w, &tables);
            continue;
        } else {
            FN(box_sums)(o, 0, cs, qrow, win, LS, n, m, C, kw, w, &tables);
        }
        if (!direct_out) FN(box_out)(j, drow, scratch, n);
    }
    fc_ws_leave(ws);
    return 0;
}

#undef FC_BOX_RADIX
#undef FC_BOX_PARTS
#undef FC_BOX_QC
#undef FC_BOX_CHAINS
#undef FN
#undef VL
#undef VEC
#undef VECU
#undef ALWAYS
#undef LOADU
#undef STOREU
#undef NB
#undef VNB
