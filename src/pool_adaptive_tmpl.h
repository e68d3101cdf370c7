/* Per-dtype part of adaptive pooling (included by pool_adaptive.h with T and TN defined; both are
 * undefined at the end). */
#define FD(name) FC_CAT(name, TN)
#define L ((fc_idx)(FC_APOOL_LANE_BYTES / sizeof(T)))

typedef T FD(fc_apool_vec) __attribute__((vector_size(FC_APOOL_LANE_BYTES)));
typedef T FD(fc_apool_vecu) __attribute__((vector_size(FC_APOOL_LANE_BYTES), aligned(sizeof(T))));
typedef T (*FD(fc_apool_gsum_fn))(const T *x, fc_idx n);

/* The partial sums added by halving: part[k] += part[k + h], h = L/2, ..., 1. */
static inline T FD(fc_apool_halve)(T *part) {
    for (fc_idx h = L / 2; h >= 1; h /= 2)
        for (fc_idx k = 0; k < h; k++) part[k] += part[k + h];
    return part[0];
}

/* Sum of the n contiguous elements of x, in the order of the file's comment. Inlined into one
 * function per SIMD path, which the compiler lowers to that path's vectors. */
static inline __attribute__((always_inline)) T FD(fc_apool_gsum_body)(const T *restrict x,
                                                                       fc_idx n) {
    FD(fc_apool_vec) acc = {0};
    fc_idx p = 0;
    for (; p + L <= n; p += L) acc += *(const FD(fc_apool_vecu) *)(x + p);
    T part[FC_APOOL_LANE_BYTES / sizeof(T)];
    memcpy(part, &acc, sizeof part);
    for (fc_idx k = 0; p < n; p++, k++) part[k] += x[p];
    return FD(fc_apool_halve)(part);
}

#ifdef FC_HAVE_X86_PATHS
static FC_TARGET_AVX512 T FD(fc_apool_gsum_avx512)(const T *x, fc_idx n) {
    return FD(fc_apool_gsum_body)(x, n);
}
static FC_TARGET_AVX2 T FD(fc_apool_gsum_avx2)(const T *x, fc_idx n) {
    return FD(fc_apool_gsum_body)(x, n);
}
#endif
static T FD(fc_apool_gsum_generic)(const T *x, fc_idx n) { return FD(fc_apool_gsum_body)(x, n); }

static const FD(fc_apool_gsum_fn) FD(fc_apool_gsums)[FC_ISA_COUNT] = {
    [FC_ISA_GENERIC] = FD(fc_apool_gsum_generic),
#ifdef FC_HAVE_X86_PATHS
    [FC_ISA_AVX2] = FD(fc_apool_gsum_avx2),
    [FC_ISA_AVX512] = FD(fc_apool_gsum_avx512),
#endif
};

/* The plane's first input element and the item's range [r0, r1) of rows (output rows forward,
 * input rows backward). */
static inline fc_idx FD(fc_apool_item_rows)(const fc_apool_job *j, fc_idx item, fc_idx rows,
                                            fc_idx *r0, fc_idx *r1) {
    const fc_idx plane = item / j->nblocks, blk = item % j->nblocks;
    *r0 = blk * j->rows_per_item;
    *r1 = FC_MIN(rows, *r0 + j->rows_per_item);
    return plane;
}

static int FD(fc_apool_max_fwd)(const fc_apool_job *j, fc_idx item) {
    const fc_idx W = j->W, OW = j->OW, xs2 = j->ss[2], xs3 = j->ss[3];
    fc_idx oh0, oh1;
    const fc_idx plane = FD(fc_apool_item_rows)(j, item, j->OH, &oh0, &oh1);
    const T *x = (const T *)j->src + (plane / j->C) * j->ss[0] + (plane % j->C) * j->ss[1];
    T *out = (T *)j->dst + plane * j->OH * OW;
    int64_t *oind = j->dst_ind ? j->dst_ind + plane * j->OH * OW : NULL;
    for (fc_idx oh = oh0; oh < oh1; oh++) {
        for (fc_idx ow = 0; ow < OW; ow++) {
            /* torch: maxval = -inf, maxindex = the bin's first position; a NaN always wins */
            T best = -(T)INFINITY;
            fc_idx bi = j->hs[oh] * W + j->ws[ow];
            for (fc_idx ih = j->hs[oh]; ih < j->he[oh]; ih++) {
                const T *row = x + ih * xs2;
                for (fc_idx iw = j->ws[ow]; iw < j->we[ow]; iw++) {
                    T v = row[iw * xs3];
                    if (v > best || v != v) {
                        best = v;
                        bi = ih * W + iw;
                    }
                }
            }
            out[oh * OW + ow] = best;
            if (oind) oind[oh * OW + ow] = bi;
        }
    }
    return 0;
}

static int FD(fc_apool_avg_fwd)(const fc_apool_job *j, fc_idx item) {
    const fc_idx OW = j->OW, xs2 = j->ss[2], xs3 = j->ss[3];
    fc_idx oh0, oh1;
    const fc_idx plane = FD(fc_apool_item_rows)(j, item, j->OH, &oh0, &oh1);
    const T *x = (const T *)j->src + (plane / j->C) * j->ss[0] + (plane % j->C) * j->ss[1];
    T *out = (T *)j->dst + plane * j->OH * OW;
    for (fc_idx oh = oh0; oh < oh1; oh++) {
        const T kh = (T)(j->he[oh] - j->hs[oh]);
        for (fc_idx ow = 0; ow < OW; ow++) {
            T s = 0;
            for (fc_idx ih = j->hs[oh]; ih < j->he[oh]; ih++) {
                const T *row = x + ih * xs2;
                for (fc_idx iw = j->ws[ow]; iw < j->we[ow]; iw++) s += row[iw * xs3];
            }
            out[oh * OW + ow] = s / kh / (T)(j->we[ow] - j->ws[ow]);
        }
    }
    return 0;
}

/* One plane's mean. A contiguous plane goes through the SIMD path's sum; any other layout adds
 * the same elements into the same partial sums in the same order. */
static int FD(fc_apool_global_fwd)(const fc_apool_job *j, fc_idx plane) {
    const fc_idx H = j->H, W = j->W, xs2 = j->ss[2], xs3 = j->ss[3];
    const T *x = (const T *)j->src + (plane / j->C) * j->ss[0] + (plane % j->C) * j->ss[1];
    T s;
    if (xs3 == 1 && (xs2 == W || H == 1)) {
        s = j->FD(gsum)(x, H * W);
    } else {
        T part[FC_APOOL_LANE_BYTES / sizeof(T)] = {0};
        fc_idx k = 0;
        for (fc_idx ih = 0; ih < H; ih++) {
            const T *row = x + ih * xs2;
            for (fc_idx iw = 0; iw < W; iw++) {
                part[k] += row[iw * xs3];
                k = k + 1 == L ? 0 : k + 1;
            }
        }
        s = FD(fc_apool_halve)(part);
    }
    ((T *)j->dst)[plane] = s / (T)(H * W);
    return 0;
}

static int FD(fc_apool_avg_bwd)(const fc_apool_job *j, fc_idx item) {
    const fc_idx W = j->W, OW = j->OW, gs2 = j->ss[2], gs3 = j->ss[3];
    fc_idx ih0, ih1;
    const fc_idx plane = FD(fc_apool_item_rows)(j, item, j->H, &ih0, &ih1);
    const T *go = (const T *)j->src + (plane / j->C) * j->ss[0] + (plane % j->C) * j->ss[1];
    T *gi = (T *)j->dst + plane * j->H * W;
    if (j->OH == 1 && j->OW == 1) { /* the mean's backward: one division */
        const T d = go[0] / (T)(j->H * W);
        for (fc_idx i = ih0 * W; i < ih1 * W; i++) gi[i] = d;
        return 0;
    }
    for (fc_idx ih = ih0; ih < ih1; ih++) {
        T *restrict row = gi + ih * W;
        memset(row, 0, (size_t)W * sizeof(T));
        for (fc_idx oh = j->ohlo[ih]; oh < j->ohhi[ih]; oh++) {
            const T kh = (T)(j->he[oh] - j->hs[oh]);
            const T *g = go + oh * gs2;
            for (fc_idx ow = 0; ow < OW; ow++) {
                const T d = g[ow * gs3] / kh / (T)(j->we[ow] - j->ws[ow]);
                for (fc_idx iw = j->ws[ow]; iw < j->we[ow]; iw++) row[iw] += d;
            }
        }
    }
    return 0;
}

#undef L
#undef FD
#undef T
#undef TN
