/* ISA-specific hot loops of the convolution engine, written once with GCC vector extensions and
 * compiled once per (dtype, ISA) by conv_engine.h, which defines before including this file:
 *   T (float/double), TN (f32/f64), ISA (avx512/avx2/generic), VB (vector bytes),
 *   MR (GEMM rows per micro-kernel), NVW (vectors per pixel panel), TR (taps per
 *   weight-gradient micro-kernel), FC_TARGET.
 * All functions here are leaf loops over caller-prepared buffers: no allocation, no threading.
 */
#define VL VLN
#define NR (2 * VL)
#define FN(name) FC_CAT(FC_CAT(name, TN), ISA)
#define VEC FN(vec)
#define VECU FN(vecu)
#define VI FN(veci)

typedef T VEC __attribute__((vector_size(VB)));
typedef T VECU __attribute__((vector_size(VB), aligned(sizeof(T))));
typedef IT VI __attribute__((vector_size(VB))); /* lane masks and shuffle indices */

/* The packed-panel buffer of gemm_tile: (GEMM_KC + 1) taps (a spare row) of up to 4 vectors.
 * The caller provides it from its thread's workspace, not the stack (65 KB: a Python thread
 * started with a small stack would overflow). */
#define GEMM_KC (32768 / (NVW * VB))
static const fc_idx FN(gemm_bp_elems) = (GEMM_KC + 1) * 4 * VL;

#define LOADU(p) (*(const VECU *)(p))
#define STOREU(p, v) (*(VECU *)(p) = (v))
#include "fc_shuffle.h"
#include "fc_fma.h"
_Static_assert(VLN * sizeof(T) == VB, "VLN lanes of T must fill a VB-byte vector");
/* A non-temporal store of a whole aligned vector (no read for ownership, no cache pollution):
 * for the final write of outputs too large to be read back from the cache. */
#if defined(__x86_64__) && defined(__GNUC__)
#if VB == 64
#define STREAM(p, v) (sizeof(T) == 4 ? _mm512_stream_ps((float *)(p), (__m512)(v)) \
                                     : _mm512_stream_pd((double *)(p), (__m512d)(v)))
#elif VB == 32
#define STREAM(p, v) (sizeof(T) == 4 ? _mm256_stream_ps((float *)(p), (__m256)(v)) \
                                     : _mm256_stream_pd((double *)(p), (__m256d)(v)))
#else
#define STREAM(p, v) (sizeof(T) == 4 ? _mm_stream_ps((float *)(p), (__m128)(v)) \
                                     : _mm_stream_pd((double *)(p), (__m128d)(v)))
#endif
#else
#define STREAM(p, v) STOREU(p, v)
#endif

/* C[i][0:nv*VL] (+)= sum_t A[t][i] * B[t*ldb + 0:nv*VL] for i < mr: a register block of
 * mr x nv vectors. A is packed [kc][MR] (weights, broadcast), B a packed pixel panel -- or, when
 * `direct`, the wide image buffer read at the taps' offsets, vector v at B + off[t] + vofs[v];
 * with direct == 2, the lanes of vector v set in vmask[v] come from a second load, vgap[v]
 * further on (a vector across the end of an output row: the next row's pixels).
 * Each C[i][j] is one chain of fused multiply-adds over the taps in order, from its start value
 * (C, the bias or 0): the register blocking, the vector width and the tap blocks of the caller
 * change which lanes and calls compute it, never its arithmetic, so every path gives its bits.
 * mr, nv and direct are compile-time constants in every instantiation (see ukernel), and each
 * vector's base pointer is computed once, outside the tap loop: with 4 vectors, reloading vofs
 * every tap cost float64 a tenth of its time on the 1x1 layer. */
static inline __attribute__((always_inline)) FC_TARGET void FN(ukernel_body)(
    const int mr, const int nv, const int direct, fc_idx kc, const T *restrict A,
    const T *restrict B, fc_idx ldb, const fc_idx *restrict off, const fc_idx *restrict vofs,
    const fc_idx *restrict vgap, const VI *restrict vmask, T *restrict C, fc_idx ldc,
    int accumulate, const T *bias, int stream) {
    VEC c[MR][4];
    for (int i = 0; i < mr; i++)
        for (int v = 0; v < nv; v++)
            c[i][v] = accumulate ? LOADU(C + i * ldc + v * VL) : (VEC){0} + (bias ? bias[i] : (T)0);
    const T *base[4], *base2[4];
    for (int v = 0; v < nv; v++) {
        base[v] = direct ? B + vofs[v] : B + v * VL;
        base2[v] = direct == 2 ? base[v] + vgap[v] : base[v];
    }
    for (fc_idx t = 0; t < kc; t++) {
        const fc_idx o = direct ? off[t] : t * ldb;
        const T *a = A + t * MR;
        VEC bv[4];
        for (int v = 0; v < nv; v++) {
            bv[v] = LOADU(base[v] + o);
            if (direct == 2)
                bv[v] = (VEC)(((VI)LOADU(base2[v] + o) & vmask[v]) | ((VI)bv[v] & ~vmask[v]));
        }
        FC_UNROLL
        for (int i = 0; i < mr; i++)
            FC_UNROLL
            for (int v = 0; v < nv; v++) c[i][v] = FN(fma1)(a[i], bv[v], c[i][v]);
    }
    if (stream) {
        for (int i = 0; i < mr; i++)
            for (int v = 0; v < nv; v++) STREAM(C + i * ldc + v * VL, c[i][v]);
    } else {
        for (int i = 0; i < mr; i++)
            for (int v = 0; v < nv; v++) STOREU(C + i * ldc + v * VL, c[i][v]);
    }
}

#define FC_UK(m, v) \
    FN(ukernel_body)(m, v, direct, kc, A, B, ldb, off, vofs, vgap, vmask, C, ldc, accumulate, \
                     bias, stream)
#define FC_UK_CASE(m) \
    case m: if (nv == 1) FC_UK(m, 1); else FC_UK(m, 2); break;
#define FC_UK_CASE4(m) \
    case m: if (nv == 1) FC_UK(m, 1); else if (nv == 2) FC_UK(m, 2); else if (nv == 3) FC_UK(m, 3); \
            else FC_UK(m, 4); \
        break;
#if MR > 6
#define FC_UK_MORE FC_UK_CASE(7) FC_UK_CASE(8) FC_UK_CASE(9) FC_UK_CASE(10) FC_UK_CASE(11) FC_UK_CASE(12)
#else
#define FC_UK_MORE
#endif
#if NVW > 2
#define FC_UK_5_6 FC_UK_CASE4(5) FC_UK_CASE4(6)
#else
#define FC_UK_5_6 FC_UK_CASE(5) FC_UK_CASE(6)
#endif
#define FC_UK_SWITCH \
    switch (mr) { \
        FC_UK_CASE4(1) FC_UK_CASE4(2) FC_UK_CASE4(3) FC_UK_CASE4(4) FC_UK_5_6 \
        FC_UK_MORE \
        default: break; \
    }

/* nv (vectors per panel) is 1 to NVW, or up to 4 when mr <= 4: small row blocks need wider
 * panels to have enough independent accumulators to hide the FMA latency. */
static FC_TARGET void FN(ukernel)(int mr, int nv, fc_idx kc, const T *restrict A,
                                  const T *restrict B, fc_idx ldb, T *restrict C, fc_idx ldc,
                                  int accumulate, const T *bias, int stream) {
    const fc_idx *off = NULL, *vofs = NULL, *vgap = NULL;
    const VI *vmask = NULL;
    const int direct = 0;
    FC_UK_SWITCH
}

/* The same, reading B directly from the wide buffer: vector v of tap t at B + off[t] + vofs[v]
 * (no packing). */
static FC_TARGET void FN(ukernel_direct)(int mr, int nv, fc_idx kc, const T *restrict A,
                                         const T *restrict B, const fc_idx *restrict off,
                                         const fc_idx *restrict vofs, T *restrict C, fc_idx ldc,
                                         int accumulate, const T *bias, int stream) {
    const fc_idx ldb = 0, *vgap = NULL;
    const VI *vmask = NULL;
    const int direct = 1;
    FC_UK_SWITCH
}

/* The same for panels with vectors across the end of an output row: the lanes of vector v set
 * in vmask[v] are read vgap[v] further on (no packing). */
static FC_TARGET void FN(ukernel_split)(int mr, int nv, fc_idx kc, const T *restrict A,
                                        const T *restrict B, const fc_idx *restrict off,
                                        const fc_idx *restrict vofs, const fc_idx *restrict vgap,
                                        const VI *restrict vmask, T *restrict C, fc_idx ldc,
                                        int accumulate, const T *bias, int stream) {
    const fc_idx ldb = 0;
    const int direct = 2;
    FC_UK_SWITCH
}
#undef FC_UK
#undef FC_UK_SWITCH
#undef FC_UK_MORE
#undef FC_UK_5_6
#undef FC_UK_CASE
#undef FC_UK_CASE4

/* Ct[m][p - p0] = sum_t A[m][t] * B[off[t] + pos(p)] for m < M and output pixels p in [p0, p1),
 * where pixel p of image i = p / Pimg, row oh and column ow of that image (q = p % Pimg =
 * oh*rowlen + ow) sits at pos(p) = i*imgs + oh*Wq + ow of the wide buffers B (several images
 * side by side, so that no panel is left mostly empty at the end of a small image); only pixels
 * below P are meaningful (Ct needs room up to p1 rounded up to VL).
 * Ct starts from bias[m] (or 0 without bias): Ct may be the output array itself.
 * A is packed [ceil(M/MR)][TT][MR], rows in the blocks of fc_row_block. The taps are cut in equal
 * blocks of at most KC. A panel of up to 4 vectors of pixels whose every vector lies in one output
 * row is read by the micro-kernel straight from the wide buffer, at each tap's offset (measured
 * 4-10% faster than packing it on the large 3x3 layers); so is one whose vectors lie in at most
 * two rows, each such vector by two loads merged by a lane mask. Any other panel (rows shorter
 * than half a vector) is first gathered into a contiguous [KC][panel] buffer -- an im2col of
 * just that panel, L1-resident, with no wasted columns at row ends -- which the micro-kernel
 * then streams for every row block of A. */
static FC_TARGET void FN(gemm_tile)(const T *restrict A, fc_idx M, fc_idx TT, const T *restrict B,
                                    const fc_idx *restrict off, fc_idx rowlen, fc_idx Wq,
                                    fc_idx Pimg, fc_idx imgs, fc_idx P, fc_idx p0, fc_idx p1,
                                    T *restrict Ct, fc_idx ldc, const T *bias, int stream,
                                    T *restrict Bp) {
    /* Tap blocks. A packed panel's block is at most 32 KB (BLIS's rule: the B micro-panel fills
     * half of L1 and stays there while every row block of A streams past it): 256 taps of
     * float32 on AVX-512, 128 of float64. Panels read in place share most of their lines between
     * taps, so when every panel is (rows of whole vectors or of at least one, or one long row),
     * blocks are up to 1024 taps for either type: fewer micro-kernel calls, each filling and draining its FMA
     * chains once (576 taps in one block, not 3 x 192: resnet-c64 -6% in float32, -7% in
     * float64). Blocks are of equal size. */
    enum { KC = GEMM_KC, MAXW = 4 * VL };
    const fc_idx nmb = FC_CEIL_DIV(M, MR);
    const int nvmax = M <= 4 ? 4 : NVW;
    /* Invariant: no panel is packed when all_inplace (Bp holds KC taps only). Panels start at
     * multiples of VL pixels of one image (p0 is a multiple of nr), so with whole-vector rows or
     * a single long row every vector lies in one row, with rows of at least a vector in at most
     * two; nmb == 1 never packs. */
    const int all_inplace = rowlen % VL == 0 || rowlen >= VL || (rowlen == Pimg && P <= Pimg) ||
                            nmb == 1;
    const fc_idx kcap = all_inplace ? 1024 : (fc_idx)KC;
    const fc_idx KB = FC_CEIL_DIV(TT, FC_MAX((fc_idx)1, FC_CEIL_DIV(TT, kcap)));
    fc_idx seg_src[MAXW], seg_dst[MAXW], seg_len[MAXW], vofs[4], vsrc[MAXW], vdst[MAXW];
    const fc_idx row_vofs[4] = {0, VL, 2 * VL, 3 * VL};
    int seg_nv[MAXW];
    fc_idx pend = FC_MIN(p1, P);
    /* stream the last tap block's stores where every vector store is aligned */
    stream = stream && ((uintptr_t)Ct % VB == 0) && (ldc * (fc_idx)sizeof(T)) % VB == 0;
#define FC_STREAM_AT(t0, kc, p) (stream && (t0) + (kc) == TT && ((p) - p0) % VL == 0)
    if (TT == 0) {
        for (fc_idx m = 0; m < M; m++)
            for (fc_idx p = p0; p < pend; p++) Ct[m * ldc + p - p0] = bias ? bias[m] : (T)0;
        return;
    }
    if (nmb == 1) {
        /* One row block: nothing would reuse a packed panel, so read the wide buffer directly,
         * one row segment at a time (lanes past the row end are computed, then overwritten by
         * the next segment or land in Ct's slack: ldc >= p1 - p0 + 4*VL). */
        for (fc_idx p = p0; p < pend;) {
            fc_idx img = p / Pimg, q = p - img * Pimg, oh = q / rowlen, ow = q % rowlen;
            fc_idx avail = FC_MIN(rowlen - ow, pend - p);
            int nv = (int)FC_MIN((fc_idx)nvmax, FC_CEIL_DIV(avail, (fc_idx)VL));
            const T *b = B + img * imgs + oh * Wq + ow;
            for (fc_idx t0 = 0; t0 < TT; t0 += KB) {
                fc_idx kc = FC_MIN(KB, TT - t0);
                FN(ukernel_direct)((int)M, nv, kc, A + t0 * MR, b, off + t0, row_vofs,
                                   Ct + (p - p0), ldc, t0 > 0, bias, FC_STREAM_AT(t0, kc, p));
            }
            p += FC_MIN(avail, (fc_idx)nv * VL);
        }
        if (stream) FC_SFENCE();
        return;
    }
    for (fc_idx t0 = 0; t0 < TT; t0 += KB) {
        fc_idx kc = FC_MIN(KB, TT - t0);
        int nv;
        for (fc_idx p = p0; p < pend; p += nv * VL) {
            nv = (int)FC_MIN((fc_idx)nvmax, FC_CEIL_DIV(pend - p, (fc_idx)VL));
            const fc_idx w = nv * VL;
            /* the panel's row segments: its pixels may span several output rows */
            int nseg = 0;
            for (fc_idx q = p, d = 0; d < w && q < pend; nseg++) {
                fc_idx img = q / Pimg, qi = q - img * Pimg, oh = qi / rowlen, ow = qi % rowlen;
                fc_idx len = FC_MIN(w - d, rowlen - ow);
                seg_src[nseg] = img * imgs + oh * Wq + ow;
                seg_dst[nseg] = d;
                seg_nv[nseg] = (int)FC_CEIL_DIV(len, (fc_idx)VL);
                seg_len[nseg] = len;
                d += len;
                q += len;
            }
            /* read in place when every vector's pixels lie in one row segment (always for a
             * panel within one row; e.g. two rows of 16 for a 16-wide output), or in two: the
             * lanes in the second then come from a second load, at that segment's offset
             * (always possible with rows of at least a vector, whose middle segments are whole
             * rows). Against packing such panels, float32 forward: a 28-wide output -24%,
             * lenet-conv2 (rows of 8, two to a vector) -24%, alexnet-first -7%. */
            const fc_idx valid = FC_MIN(w, pend - p);
            int inplace = 1, split = 0;
            fc_idx vgap[4];
            VI vmask[4];
            for (int v = 0, sg = 0; v < nv && inplace; v++) {
                const fc_idx start = (fc_idx)v * VL, end = FC_MIN(start + VL, valid);
                while (sg + 1 < nseg && start >= seg_dst[sg] + seg_len[sg]) sg++;
                const fc_idx cut = seg_dst[sg] + seg_len[sg]; /* where segment sg + 1 starts */
                vofs[v] = seg_src[sg] + (start - seg_dst[sg]);
                vgap[v] = 0;
                vmask[v] = (VI){0};
                if (end <= cut) continue;
                inplace = sg + 1 < nseg && end <= cut + seg_len[sg + 1];
                vgap[v] = (seg_src[sg + 1] - cut) - (seg_src[sg] - seg_dst[sg]);
                for (int j = 0; j < VL; j++) vmask[v][j] = start + j >= cut ? -1 : 0;
                split = 1;
            }
            if (inplace) {
                for (fc_idx mb = 0; mb < nmb; mb++) {
                    fc_idx m0;
                    int mr;
                    fc_row_block(M, MR, mb, &m0, &mr);
                    if (split)
                        FN(ukernel_split)(mr, nv, kc, A + (mb * TT + t0) * MR, B, off + t0, vofs,
                                          vgap, vmask, Ct + m0 * ldc + (p - p0), ldc, t0 > 0,
                                          bias ? bias + m0 : NULL, FC_STREAM_AT(t0, kc, p));
                    else
                        FN(ukernel_direct)(mr, nv, kc, A + (mb * TT + t0) * MR, B, off + t0, vofs,
                                           Ct + m0 * ldc + (p - p0), ldc, t0 > 0,
                                           bias ? bias + m0 : NULL, FC_STREAM_AT(t0, kc, p));
                }
                continue;
            }
            /* whole-vector copies in increasing destination order: each segment's overrun (less
             * than a vector) is overwritten by the next segment, or by the next tap's row (Bp
             * has a spare row); lanes past the last pixel are zeroed (the micro-kernel reads
             * them: keep them finite). When every segment fits in half a vector (rows of 4
             * float32 on AVX-512, a vector across more than two of them), half vectors are
             * copied instead: whole ones overlapped and split cache lines there (forward of a
             * 4x4 output: -6 to -11%). */
            int nvc = 0, half = 1;
            for (int sg = 0; sg < nseg; sg++) {
                half = half && seg_len[sg] <= VL / 2;
                for (int v = 0; v < seg_nv[sg]; v++, nvc++) {
                    vsrc[nvc] = seg_src[sg] + v * VL;
                    vdst[nvc] = seg_dst[sg] + v * VL;
                }
            }
            for (fc_idx t = 0; t < kc; t++) {
                const T *src = B + off[t0 + t];
                T *dst = Bp + t * w;
                if (half) {
                    for (int i = 0; i < nvc; i++)
                        memcpy(dst + vdst[i], src + vsrc[i], VL / 2 * sizeof(T));
                } else {
                    for (int i = 0; i < nvc; i++) STOREU(dst + vdst[i], LOADU(src + vsrc[i]));
                }
                for (fc_idx q = valid; q < w; q++) dst[q] = 0;
            }
            for (fc_idx mb = 0; mb < nmb; mb++) {
                fc_idx m0;
                int mr;
                fc_row_block(M, MR, mb, &m0, &mr);
                FN(ukernel)(mr, nv, kc, A + (mb * TT + t0) * MR, Bp, w, Ct + m0 * ldc + (p - p0),
                            ldc, t0 > 0, bias ? bias + m0 : NULL, FC_STREAM_AT(t0, kc, p));
            }
        }
    }
    if (stream) FC_SFENCE();
#undef FC_STREAM_AT
}

/* Weight-gradient micro-kernel: C[i][0:nv*VL] += sum over valid (oh, ow) of
 * X[off[i] + oh*Wq + ow] * DYT[(oh*OW + ow)*ldm + 0:nv*VL] for i < tr.
 * X is the wide input buffer (taps broadcast), DYT the grad_output transposed to [pixel][channel],
 * so the reduction over pixels runs in registers and only valid pixels are visited. A lane is an
 * output channel: each C[i][m] is one chain of fused multiply-adds over the pixels in order,
 * whatever the vector width. */
static inline __attribute__((always_inline)) FC_TARGET void FN(dw_body)(
    const int tr, const int nv, const T *restrict X, const fc_idx *restrict off,
    const T *restrict DYT, fc_idx ldm, fc_idx OH, fc_idx OW, fc_idx Wq, T *restrict C, fc_idx ldc) {
    VEC c0[TR], c1[TR];
    for (int i = 0; i < tr; i++) {
        c0[i] = LOADU(C + i * ldc);
        c1[i] = nv > 1 ? LOADU(C + i * ldc + VL) : (VEC){0};
    }
    for (fc_idx oh = 0; oh < OH; oh++) {
        const T *xrow = X + oh * Wq;
        const T *dy = DYT + oh * OW * ldm;
        for (fc_idx ow = 0; ow < OW; ow++) {
            VEC b0 = LOADU(dy + ow * ldm);
            VEC b1 = nv > 1 ? LOADU(dy + ow * ldm + VL) : (VEC){0};
            FC_UNROLL
            for (int i = 0; i < tr; i++) {
                T a = xrow[off[i] + ow];
                c0[i] = FN(fma1)(a, b0, c0[i]);
                if (nv > 1) c1[i] = FN(fma1)(a, b1, c1[i]);
            }
        }
    }
    for (int i = 0; i < tr; i++) {
        STOREU(C + i * ldc, c0[i]);
        if (nv > 1) STOREU(C + i * ldc + VL, c1[i]);
    }
}

#define FC_DW_CASE(t) \
    case t: \
        if (nv > 1) FN(dw_body)(t, 2, X, off, DYT, ldm, OH, OW, Wq, C, ldc); \
        else FN(dw_body)(t, 1, X, off, DYT, ldm, OH, OW, Wq, C, ldc); \
        break;

static FC_TARGET void FN(dw_kernel)(int tr, int nv, const T *restrict X, const fc_idx *restrict off,
                                    const T *restrict DYT, fc_idx ldm, fc_idx OH, fc_idx OW,
                                    fc_idx Wq, T *restrict C, fc_idx ldc) {
    switch (tr) {
        FC_DW_CASE(1) FC_DW_CASE(2) FC_DW_CASE(3) FC_DW_CASE(4) FC_DW_CASE(5) FC_DW_CASE(6)
#if TR > 6
        FC_DW_CASE(7) FC_DW_CASE(8) FC_DW_CASE(9) FC_DW_CASE(10) FC_DW_CASE(11) FC_DW_CASE(12)
#endif
        default: break;
    }
}
#undef FC_DW_CASE

/* Depthwise weight gradient of one plane: res[t] += sum_{oh,ow valid} X[off[t] + oh*Wq + ow] *
 * DY[oh*ldy + ow], vectorised along ow. DY rows are zero-padded to ldy (a multiple of VL) and the
 * input lanes past OW are masked to zero, so a NaN or inf in a neighbouring row never leaks in.
 *
 * The summation order is fixed by the shapes alone, the same on every path: RL partial sums
 * (RL = 64 bytes of T: 16 float32, 8 float64 -- one AVX-512 vector, two AVX2 vectors, four
 * portable ones), pixel ow of every row going to partial sum ow % RL in (oh, ow) order, then
 * the RL partials added by halving (l + RL/2 into l, and so on down to one), then added to res.
 * A sum in which a product overflows gives +-inf or NaN depending on that order; with one order
 * everywhere, every CPU gives the same. On AVX-512 this is the loop it always was (one vector, 8
 * taps at once); AVX2 and the portable path hold a chunk of RL pixels in NV vectors and take
 * fewer taps at once (the same number of accumulators). */
static FC_TARGET void FN(dw_depthwise)(fc_idx ntaps, const T *restrict X,
                                       const fc_idx *restrict off, const T *restrict DY,
                                       fc_idx ldy, fc_idx OH, fc_idx OW, fc_idx Wq,
                                       T *restrict res) {
    enum { RL = 64 / (int)sizeof(T), NV = RL / VL, TB = NV == 1 ? 8 : NV == 2 ? 4 : 2 };
    _Static_assert(RL % VL == 0, "the partial sums fill whole vectors");
    /* the last chunk of a row: tv whole vectors of pixels, then one of part < VL pixels (its
     * other lanes masked), then vectors wholly past the row end */
    const int tv = (int)(OW % RL / VL), part = (int)(OW % VL);
    VI keep = {0};
    for (int l = 0; l < VL; l++) keep[l] = l < part ? -1 : 0;
    for (fc_idx t0 = 0; t0 < ntaps; t0 += TB) {
        int nt = (int)FC_MIN((fc_idx)TB, ntaps - t0);
        VEC acc[TB][NV];
        for (int i = 0; i < TB; i++)
            for (int j = 0; j < NV; j++) acc[i][j] = (VEC){0};
        for (fc_idx oh = 0; oh < OH; oh++) {
            const T *xrow = X + oh * Wq;
            const T *dy = DY + oh * ldy;
            fc_idx ow = 0;
            for (; ow + RL <= OW; ow += RL)
                for (int j = 0; j < NV; j++) {
                    VEC g = LOADU(dy + ow + j * VL);
                    for (int i = 0; i < nt; i++)
                        acc[i][j] = FN(fma)(g, LOADU(xrow + off[t0 + i] + ow + j * VL), acc[i][j]);
                }
            if (ow == OW) continue;
            for (int j = 0; j < NV; j++, ow += VL) {
                if (j < tv) {
                    VEC g = LOADU(dy + ow);
                    for (int i = 0; i < nt; i++)
                        acc[i][j] = FN(fma)(g, LOADU(xrow + off[t0 + i] + ow), acc[i][j]);
                } else if (j == tv && part) {
                    VEC g = LOADU(dy + ow);
                    for (int i = 0; i < nt; i++) {
                        VEC x = LOADU(xrow + off[t0 + i] + ow);
                        /* select, not multiply: 0 * inf would be NaN */
                        x = (VEC)((VI)x & keep);
                        acc[i][j] = FN(fma)(g, x, acc[i][j]);
                    }
                } else {
                    /* lanes wholly past the row end, whose term is fma(0, 0, acc) as in a
                     * masked vector: acc + 0 (it turns a -0 into +0), without the loads */
                    for (int i = 0; i < nt; i++) acc[i][j] += (T)0;
                }
            }
        }
        for (int i = 0; i < nt; i++) {
            T lanes[RL];
            for (int j = 0; j < NV; j++) STOREU(lanes + j * VL, acc[i][j]);
            for (int h = RL / 2; h > 0; h /= 2)
                for (int l = 0; l < h; l++) lanes[l] += lanes[l + h];
            res[t0 + i] += lanes[0];
        }
    }
}

/* Stride-2 column split of input rows h < nrows (row h at src + h*lds, W contiguous elements),
 * in input order so that the reads stream: row h lands in row qh = (h + r0) / sh of row phase
 * ph = (h + r0) % sh, at dst + ph*phs + qh*Wq, even input columns 2j in the column-phase plane
 * of offset pe*pws at column qe + j and odd ones in the other at qo + j. Every other column of
 * those rows is zeroed, nothing past column Wq is written and nothing past a row's W elements
 * read. One pair of loads and two two-input shuffles per VL column pairs; a row's last block
 * overlaps the one before it instead of falling back to scalar code. (The per-row scalar gather
 * this replaces took a sixth of the strided layer's forward.) Rows are prefetched ahead, see
 * fc_prefetch_row. */
static FC_TARGET void FN(split2_rows)(const T *restrict src, fc_idx lds, fc_idx nrows, fc_idx W,
                                      T *restrict dst, fc_idx r0, fc_idx sh, fc_idx phs,
                                      fc_idx pws, int pe, fc_idx qe, fc_idx qo, fc_idx Wq) {
    const fc_idx np = W / 2;
    const fc_idx ne = FC_MAX((fc_idx)0, FC_MIN((W + 1) / 2, Wq - qe));
    const fc_idx no = FC_MAX((fc_idx)0, FC_MIN(np, Wq - qo));
    const fc_idx nev = FC_MIN(ne, np), qe0 = FC_MIN(qe, Wq), qo0 = FC_MIN(qo, Wq);
    const fc_idx ahead = fc_prefetch_ahead(W * (fc_idx)sizeof(T));
    for (fc_idx h = 0; h < nrows; h++) {
        const T *s = src + h * lds;
        fc_prefetch_row(s + ahead * lds, W * (fc_idx)sizeof(T));
        T *row = dst + ((h + r0) % sh) * phs + ((h + r0) / sh) * Wq;
        T *restrict e = row + (pe ? pws : 0), *restrict o = row + (pe ? 0 : pws);
        for (fc_idx q = 0; q < qe0; q++) e[q] = 0;
        for (fc_idx q = 0; q < qo0; q++) o[q] = 0;
        if (np < VL) {
            for (fc_idx j = 0; j < nev; j++) e[qe + j] = s[2 * j];
            for (fc_idx j = 0; j < no; j++) o[qo + j] = s[2 * j + 1];
        } else {
            for (fc_idx j = 0;; j += VL) {
                if (j + VL > np) j = np - VL;
                VEC a = LOADU(s + 2 * j), b = LOADU(s + 2 * j + VL);
                VEC ve = SHUF2(a, b, FC_EVEN), vo = SHUF2(a, b, FC_ODD);
                T lanes[VL];
                if (j + VL <= nev) {
                    STOREU(e + qe + j, ve);
                } else if (j < nev) {
                    STOREU(lanes, ve);
                    for (fc_idx l = 0; l < nev - j; l++) e[qe + j + l] = lanes[l];
                }
                if (j + VL <= no) {
                    STOREU(o + qo + j, vo);
                } else if (j < no) {
                    STOREU(lanes, vo);
                    for (fc_idx l = 0; l < no - j; l++) o[qo + j + l] = lanes[l];
                }
                if (j + VL >= np) break;
            }
        }
        if (ne > np) e[qe + np] = s[2 * np]; /* odd W: the last even column */
        for (fc_idx q = qe0 + ne; q < Wq; q++) e[q] = 0;
        for (fc_idx q = qo0 + no; q < Wq; q++) o[q] = 0;
    }
}

/* dst[0:n] = src[0:n] (dst aligned to T), the whole VB-aligned vectors of dst written with
 * non-temporal stores and the partial ones at either end with plain stores: the write-back of a
 * forward output too large to stay in the cache (FC_STREAM_BYTES), when it goes through a scratch
 * tile. The caller fences (FC_SFENCE) when its item is done. */
static FC_TARGET void FN(stream_copy)(T *restrict dst, const T *restrict src, fc_idx n) {
    fc_idx i = FC_MIN(n, (fc_idx)(((VB - (uintptr_t)dst % VB) % VB) / sizeof(T)));
    memcpy(dst, src, (size_t)i * sizeof(T));
    for (; i + VL <= n; i += VL) STREAM(dst + i, LOADU(src + i));
    memcpy(dst + i, src + i, (size_t)(n - i) * sizeof(T));
}

/* dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols: VL x VL blocks transposed in registers
 * by log2(VL) rounds of perfect-shuffle interleaves (n log n two-input shuffles), scalar edges.
 * Strided scalar stores (one cache line per element) are what this replaces. */
static FC_TARGET void FN(transpose)(const T *restrict src, fc_idx lds, fc_idx rows, fc_idx cols,
                                    T *restrict dst, fc_idx ldd) {
    enum { n = VL };
    fc_idx r0 = 0;
    for (; r0 + n <= rows; r0 += n) {
        fc_idx c0 = 0;
        for (; c0 + n <= cols; c0 += n) {
            VEC v[n], w[n];
            for (int i = 0; i < n; i++) v[i] = LOADU(src + (r0 + i) * lds + c0);
            for (int stage = 1; stage < n; stage *= 2) {
                for (int i = 0; i < n / 2; i++) {
                    w[2 * i] = SHUF2(v[i], v[i + n / 2], FC_ILO);
                    w[2 * i + 1] = SHUF2(v[i], v[i + n / 2], FC_IHI);
                }
                for (int i = 0; i < n; i++) v[i] = w[i];
            }
            for (int i = 0; i < n; i++) STOREU(dst + (c0 + i) * ldd + r0, v[i]);
        }
        for (; c0 < cols; c0++)
            for (int i = 0; i < n; i++) dst[c0 * ldd + r0 + i] = src[(r0 + i) * lds + c0];
    }
    for (; r0 < rows; r0++)
        for (fc_idx c = 0; c < cols; c++) dst[c * ldd + r0] = src[r0 * lds + c];
}

#undef VL
#undef NR
#undef FN
#undef VEC
#undef VECU
#undef VI
#undef LOADU
#undef STOREU
#undef STREAM
#undef GEMM_KC
#undef SHUF2
#undef FC_EVEN
#undef FC_ODD
#undef FC_ILO
#undef FC_IHI
