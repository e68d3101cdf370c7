/* ISA-specific hot loops of the convolution engine, written once with GCC vector extensions and
 * compiled once per (dtype, ISA) by conv_engine.h, which defines before including this file:
 *   T (float/double), TN (f32/f64), ISA (avx512/avx2/generic), VB (vector bytes),
 *   MR (GEMM rows per micro-kernel), TR (taps per weight-gradient micro-kernel), FC_TARGET.
 * All functions here are leaf loops over caller-prepared buffers: no allocation, no threading.
 */
#define VL ((int)(VB / sizeof(T)))
#define NR (2 * VL)
#define FN(name) FC_CAT(FC_CAT(name, TN), ISA)
#define VEC FN(vec)
#define VECU FN(vecu)

typedef T VEC __attribute__((vector_size(VB)));
typedef T VECU __attribute__((vector_size(VB), aligned(sizeof(T))));

#define LOADU(p) (*(const VECU *)(p))
#define STOREU(p, v) (*(VECU *)(p) = (v))

/* C[i][0:NR] (+)= sum_t A[t][i] * B[off[t] + 0:NR] for i < mr.
 * A: packed [kc][MR] (weights, broadcast), B: a wide-layout image buffer read at the offsets of
 * the kc taps, so no im2col matrix is ever formed. */
static inline __attribute__((always_inline)) void FN(ukernel_body)(
    const int mr, fc_idx kc, const T *restrict A, const T *restrict B, const fc_idx *restrict off,
    T *restrict C, fc_idx ldc, int accumulate) {
    VEC c0[MR], c1[MR];
    for (int i = 0; i < mr; i++) {
        if (accumulate) {
            c0[i] = LOADU(C + i * ldc);
            c1[i] = LOADU(C + i * ldc + VL);
        } else {
            c0[i] = (VEC){0};
            c1[i] = (VEC){0};
        }
    }
    for (fc_idx t = 0; t < kc; t++) {
        const T *b = B + off[t];
        VEC b0 = LOADU(b), b1 = LOADU(b + VL);
        const T *a = A + t * MR;
#pragma GCC unroll 16
        for (int i = 0; i < mr; i++) {
            c0[i] += a[i] * b0;
            c1[i] += a[i] * b1;
        }
    }
    for (int i = 0; i < mr; i++) {
        STOREU(C + i * ldc, c0[i]);
        STOREU(C + i * ldc + VL, c1[i]);
    }
}

#define FC_UK_CASE(m) \
    case m: FN(ukernel_body)(m, kc, A, B, off, C, ldc, accumulate); break;

static FC_TARGET void FN(ukernel)(int mr, fc_idx kc, const T *restrict A, const T *restrict B,
                                  const fc_idx *restrict off, T *restrict C, fc_idx ldc,
                                  int accumulate) {
    switch (mr) {
        FC_UK_CASE(1) FC_UK_CASE(2) FC_UK_CASE(3) FC_UK_CASE(4) FC_UK_CASE(5) FC_UK_CASE(6)
#if MR > 6
        FC_UK_CASE(7) FC_UK_CASE(8) FC_UK_CASE(9) FC_UK_CASE(10) FC_UK_CASE(11) FC_UK_CASE(12)
#endif
        default: break;
    }
}
#undef FC_UK_CASE

/* Ct[m][p - p0] = sum_t A[m][t] * B[off[t] + pos(p)] for m < M and output pixels p in [p0, p1)
 * (p1 - p0 a multiple of NR; pixels at or past P are don't-cares), where pixel p = (p / rowlen,
 * p % rowlen) sits at pos(p) = (p / rowlen) * Wq + p % rowlen of the wide buffer B.
 * A is packed [ceil(M/MR)][TT][MR]. The taps are cut in blocks of KC; for each block and panel of
 * NR pixels the B values are first gathered into a contiguous [KC][NR] panel -- an im2col of just
 * that panel, L1-resident, with no wasted columns at row ends. The gather has no dependency
 * chain, so its cache misses overlap; the micro-kernel then streams it for every row block. */
static FC_TARGET void FN(gemm_tile)(const T *restrict A, fc_idx M, fc_idx TT, const T *restrict B,
                                    const fc_idx *restrict off, fc_idx rowlen, fc_idx Wq,
                                    fc_idx P, fc_idx p0, fc_idx p1, T *restrict Ct, fc_idx ldc) {
    enum { KC = 128, MAXSEG = NR };
    const fc_idx nmb = FC_CEIL_DIV(M, MR);
    T Bp[(KC + 1) * NR] __attribute__((aligned(64)));
    fc_idx panel_off[KC], seg_src[MAXSEG], seg_dst[MAXSEG];
    if (TT == 0) {
        for (fc_idx m = 0; m < M; m++) memset(Ct + m * ldc, 0, (size_t)(p1 - p0) * sizeof(T));
        return;
    }
    memset(Bp, 0, sizeof Bp); /* pixels past P read this: keep them finite */
    for (fc_idx t = 0; t < KC; t++) panel_off[t] = t * NR;
    for (fc_idx t0 = 0; t0 < TT; t0 += KC) {
        fc_idx kc = FC_MIN((fc_idx)KC, TT - t0);
        for (fc_idx p = p0; p < p1; p += NR) {
            /* the panel's row segments: NR pixels may span several output rows */
            int nseg = 0;
            for (fc_idx q = p, d = 0; d < NR && q < P; nseg++) {
                fc_idx oh = q / rowlen, ow = q % rowlen;
                fc_idx len = FC_MIN((fc_idx)NR - d, rowlen - ow);
                seg_src[nseg] = oh * Wq + ow;
                seg_dst[nseg] = d;
                d += len;
                q += len;
            }
            /* full-width copies, in increasing destination order: each segment's overrun is
             * overwritten by the next segment (or the next tap's row; Bp has a spare row) */
            for (fc_idx t = 0; t < kc; t++) {
                const T *src = B + off[t0 + t];
                T *dst = Bp + t * NR;
                for (int sg = 0; sg < nseg; sg++) {
                    STOREU(dst + seg_dst[sg], LOADU(src + seg_src[sg]));
                    STOREU(dst + seg_dst[sg] + VL, LOADU(src + seg_src[sg] + VL));
                }
            }
            for (fc_idx mb = 0; mb < nmb; mb++) {
                int mr = (int)FC_MIN((fc_idx)MR, M - mb * MR);
                FN(ukernel)(mr, kc, A + (mb * TT + t0) * MR, Bp, panel_off,
                            Ct + mb * MR * ldc + (p - p0), ldc, t0 > 0);
            }
        }
    }
}

/* Weight-gradient micro-kernel: C[i][0:nv*VL] += sum over valid (oh, ow) of
 * X[off[i] + oh*Wq + ow] * DYT[(oh*OW + ow)*ldm + 0:nv*VL] for i < tr.
 * X is the wide input buffer (taps broadcast), DYT the grad_output transposed to [pixel][channel],
 * so the reduction over pixels runs in registers and only valid pixels are visited. */
static inline __attribute__((always_inline)) void FN(dw_body)(
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
#pragma GCC unroll 16
            for (int i = 0; i < tr; i++) {
                T a = xrow[off[i] + ow];
                c0[i] += a * b0;
                if (nv > 1) c1[i] += a * b1;
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
 * input lanes past OW are masked to zero, so a NaN or inf in a neighbouring row never leaks in. */
static FC_TARGET void FN(dw_depthwise)(fc_idx ntaps, const T *restrict X,
                                       const fc_idx *restrict off, const T *restrict DY,
                                       fc_idx ldy, fc_idx OH, fc_idx OW, fc_idx Wq,
                                       T *restrict res) {
    typedef int64_t FN(ivec) __attribute__((vector_size(VB)));
    enum { TB = 8 };
    T lane_mask_src[64];
    fc_idx tail = OW % VL;
    for (int l = 0; l < VL; l++) lane_mask_src[l] = (l < tail || tail == 0) ? (T)1 : (T)0;
    VEC keep = LOADU(lane_mask_src);
    for (fc_idx t0 = 0; t0 < ntaps; t0 += TB) {
        int nt = (int)FC_MIN((fc_idx)TB, ntaps - t0);
        VEC acc[TB];
        for (int i = 0; i < TB; i++) acc[i] = (VEC){0};
        for (fc_idx oh = 0; oh < OH; oh++) {
            const T *xrow = X + oh * Wq;
            const T *dy = DY + oh * ldy;
            fc_idx ow = 0;
            for (; ow + VL <= OW; ow += VL) {
                VEC g = LOADU(dy + ow);
                for (int i = 0; i < nt; i++) acc[i] += g * LOADU(xrow + off[t0 + i] + ow);
            }
            if (ow < OW) {
                VEC g = LOADU(dy + ow);
                for (int i = 0; i < nt; i++) {
                    VEC x = LOADU(xrow + off[t0 + i] + ow);
                    /* select, not multiply: 0 * inf would be NaN */
                    x = (VEC)((FN(ivec))x & (FN(ivec))(keep != (VEC){0}));
                    acc[i] += g * x;
                }
            }
        }
        for (int i = 0; i < nt; i++) {
            T lanes[64];
            STOREU(lanes, acc[i]);
            T s = 0;
            for (int l = 0; l < VL; l++) s += lanes[l];
            res[t0 + i] += s;
        }
    }
}

#undef VL
#undef NR
#undef FN
#undef VEC
#undef VECU
#undef LOADU
#undef STOREU
