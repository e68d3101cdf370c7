/* The depthwise micro-kernel (conv_dwd_tmpl.h), included by conv_isa_tmpl.h inside each (dtype,
 * ISA) instantiation (T, VL, VEC, FN, FC_TARGET, LOADU, STOREU, ALWAYS_INLINE, fma1 and
 * activate are its).
 *
 * A depthwise layer's channel is a GEMM of one row: gemm_tile would keep one accumulator row of
 * its register block busy and pay its per-call setup for each plane (a 7 x 7 plane is 49
 * outputs). Here a whole plane of one channel is one call: its wide positions in vectors of
 * pixels, each tap's weight broadcast once per register block. */

#define DWD_ARGS FC_CAT(fc_dwd_args, TN)
/* Vectors of a register block: 8 chains of FMAs, as many as two FMA units with a latency of 4
 * cycles keep busy (8 accumulators and a broadcast weight fit the 16 registers of AVX2 too). */
#define DWD_NV 8

/* out[p .. p + nv*VL) (only `valid` of the last vector's lanes stored): each output one chain of
 * fused multiply-adds per sum block of FC_SUM_KC taps, in tap order from 0, the blocks' sums
 * added in order onto the bias (kept as it is without one), activated: ukernel_body's arithmetic
 * for one row. */
ALWAYS_INLINE void FN(dwd_body)(const int nv, const DWD_ARGS *restrict a, fc_idx p, int valid) {
    const T *restrict b = a->B + p;
    const T *restrict w = a->w;
    const fc_idx *restrict off = a->off;
    const fc_idx ntaps = a->ntaps;
    VEC s[DWD_NV];
    FC_UNROLL
    for (int v = 0; v < nv; v++) s[v] = (VEC){0}; /* every lane set below: for the compiler */
    for (fc_idx t0 = 0; t0 < ntaps; t0 += FC_SUM_KC) {
        const fc_idx t1 = FC_MIN(ntaps, t0 + FC_SUM_KC);
        VEC c[DWD_NV];
        FC_UNROLL
        for (int v = 0; v < nv; v++) c[v] = (VEC){0};
        for (fc_idx t = t0; t < t1; t++) {
            const T *bt = b + off[t];
            const T wt = w[t];
            FC_UNROLL
            for (int v = 0; v < nv; v++) c[v] = FN(fma1)(wt, LOADU(bt + v * VL), c[v]);
        }
        FC_UNROLL
        for (int v = 0; v < nv; v++) {
            if (t0 > 0)
                s[v] = s[v] + c[v];
            else
                s[v] = a->bias ? *a->bias + c[v] : c[v];
        }
    }
    if (ntaps == 0) /* as gemm_no_taps: the bias as it is (a -0.0 stays -0.0), or 0 */
        FC_UNROLL
        for (int v = 0; v < nv; v++)
            for (int l = 0; l < VL; l++) s[v][l] = a->bias ? *a->bias : (T)0;
    FC_UNROLL
    for (int v = 0; v < nv; v++) {
        if (a->act) s[v] = FN(activate)(s[v], a->act, a->slope);
        T *o = a->out + p + v * VL;
        if (v + 1 < nv || valid == VL) {
            STOREU(o, s[v]);
        } else {
            T lanes[VL];
            STOREU(lanes, s[v]);
            memcpy(o, lanes, (size_t)valid * sizeof(T));
        }
    }
}

/* out[0:n) of one channel plane (DWD_ARGS, conv_isa_api.h): register blocks of DWD_NV vectors,
 * the rest in one block of as many vectors as it needs (each block's chains are independent:
 * one vector at a time would wait on the FMA latency); nothing past out[n - 1] is written. */
static FC_TARGET void FN(dwd_kernel)(const DWD_ARGS *restrict a) {
    const fc_idx n = a->n;
    fc_idx p = 0;
    for (; p + DWD_NV * VL <= n; p += DWD_NV * VL) FN(dwd_body)(DWD_NV, a, p, VL);
    if (p == n) return;
    const int nv = (int)FC_CEIL_DIV(n - p, (fc_idx)VL), last = (int)(n - p - (nv - 1) * VL);
    switch (nv) {
#define FC_DWD_TAIL(k)                                                                         \
    case k:                                                                                    \
        FN(dwd_body)(k, a, p, last);                                                           \
        break;
        FC_DWD_TAIL(1) FC_DWD_TAIL(2) FC_DWD_TAIL(3) FC_DWD_TAIL(4) FC_DWD_TAIL(5) FC_DWD_TAIL(6)
        FC_DWD_TAIL(7)
#undef FC_DWD_TAIL
    default:
        FN(dwd_body)(DWD_NV, a, p, last);
    }
}

/* dst[0, Hq*Wq) = a plane of Hq rows of Wq with src's nh x nw elements (rows lds apart) at row
 * pt, column pl (nh <= Hq - pt, nw <= Wq - pl), zeros elsewhere: the plane zeroed by whole
 * vectors, then each row copied by whole vectors and a last one of zeros past the row's end.
 * Rows go in order, so that what a row's last vector spills past it (zeros) lands in the
 * padding or in a row written after it: up to VL - 1 elements past the plane may be zeroed.
 * Nothing past a row of src is read. Vector stores instead of a memcpy and a memset per row:
 * a 7 x 7 plane's rows are 28 bytes. */
static FC_TARGET void FN(dwd_pad_plane)(const T *restrict src, fc_idx lds, fc_idx nh, fc_idx nw,
                                        T *restrict dst, fc_idx Hq, fc_idx Wq, fc_idx pt,
                                        fc_idx pl) {
    const fc_idx total = Hq * Wq;
    fc_idx i = 0;
    for (; i + VL <= total; i += VL) STOREU(dst + i, (VEC){0});
    for (; i < total; i++) dst[i] = 0;
    for (fc_idx h = 0; h < nh; h++) {
        const T *s = src + h * lds;
        T *d = dst + (pt + h) * Wq + pl;
        fc_idx j = 0;
        for (; j + VL <= nw; j += VL) STOREU(d + j, LOADU(s + j));
        if (j < nw) STOREU(d + j, FN(cv_load_first)(s + j, nw - j));
    }
}

#undef DWD_ARGS
#undef DWD_NV
