/* Per-dtype part of the pooling engine (included by pool_engine.h with T, TN and IT defined):
 * the geometry tables, the scalar path, the max-pool backward, and the ISA dispatch. */
#define FD(name) FC_CAT(name, TN)

/* Tables shared (read-only) by every work item of a job; see fc_pool_job. */
static int FD(fc_pool_tables)(fc_pool_job *j) {
    const fc_idx OWP = j->OWP, OH = j->OH, OW = j->OW;
    T *dcol = (T *)fc_aligned_calloc((size_t)OWP * sizeof(T));
    T *drow = (T *)fc_aligned_calloc((size_t)OH * sizeof(T));
    IT *colbase = (IT *)fc_aligned_calloc((size_t)OWP * sizeof(IT));
    IT *colfirst = (IT *)fc_aligned_calloc((size_t)OWP * sizeof(IT));
    j->dcol = dcol;
    j->drow = drow;
    j->colbase = colbase;
    j->colfirst = colfirst;
    if (!dcol || !drow || !colbase || !colfirst) return -1;
    for (fc_idx ow = 0; ow < OWP; ow++) {
        fc_idx ws = ow * j->sw - j->pw;
        colbase[ow] = (IT)ws;
        /* torch: iw0 = wstart; while (iw0 < 0) iw0 += dilation */
        colfirst[ow] = (IT)(ws >= 0 ? ws : ws + FC_CEIL_DIV(-ws, j->dw) * j->dw);
        if (ow >= OW) dcol[ow] = 1;
        else if (j->divisor) dcol[ow] = (T)j->divisor;
        else if (j->count_include_pad) dcol[ow] = (T)(FC_MIN(ws + j->kw, j->W + j->pw) - ws);
        else dcol[ow] = (T)(FC_MIN(ws + j->kw, j->W) - FC_MAX(ws, 0));
    }
    for (fc_idx oh = 0; oh < OH; oh++) {
        fc_idx hs = oh * j->sh - j->ph;
        if (j->divisor) drow[oh] = 1;
        else if (j->count_include_pad) drow[oh] = (T)(FC_MIN(hs + j->kh, j->H + j->ph) - hs);
        else drow[oh] = (T)(FC_MIN(hs + j->kh, j->H) - FC_MAX(hs, 0));
    }
    return 0;
}

/* The scalar path: torch's loops verbatim (int64 indices, any plane size, any strides). Used
 * for float32 planes too large for the vector path's 32-bit indices, and by the tests. */
static int FD(fc_pool_fwd_item_scalar)(const fc_pool_job *j, fc_idx item) {
    const fc_idx H = j->H, W = j->W, OH = j->OH, OW = j->OW;
    const fc_idx plane = item / j->nblocks, blk = item % j->nblocks;
    const fc_idx n = plane / j->C, c = plane % j->C;
    const fc_idx oh0 = blk * j->rows_per_item, oh1 = FC_MIN(OH, oh0 + j->rows_per_item);
    const T *x = (const T *)j->src + n * j->ss[0] + c * j->ss[1];
    const fc_idx xs2 = j->ss[2], xs3 = j->ss[3];
    const T *drow = (const T *)j->drow, *dcol = (const T *)j->dcol;
    T *out = (T *)j->dst + plane * OH * OW;
    int64_t *oind = j->dst_ind ? j->dst_ind + plane * OH * OW : NULL;
    for (fc_idx oh = oh0; oh < oh1; oh++) {
        const fc_idx hs = oh * j->sh - j->ph;
        for (fc_idx ow = 0; ow < OW; ow++) {
            const fc_idx ws = ow * j->sw - j->pw;
            if (j->op == FC_POOL_MAX) {
                fc_idx ih0 = hs, iw0 = ws;
                const fc_idx ih1 = FC_MIN(hs + (j->kh - 1) * j->dh + 1, H);
                const fc_idx iw1 = FC_MIN(ws + (j->kw - 1) * j->dw + 1, W);
                while (ih0 < 0) ih0 += j->dh;
                while (iw0 < 0) iw0 += j->dw;
                T best = -(T)INFINITY;
                fc_idx bi = ih0 * W + iw0;
                for (fc_idx ih = ih0; ih < ih1; ih += j->dh) {
                    for (fc_idx iw = iw0; iw < iw1; iw += j->dw) {
                        T v = x[ih * xs2 + iw * xs3];
                        if (v > best || v != v) {
                            best = v;
                            bi = ih * W + iw;
                        }
                    }
                }
                out[oh * OW + ow] = best;
                if (oind) oind[oh * OW + ow] = bi;
            } else {
                T s = 0;
                for (fc_idx ih = FC_MAX(hs, 0); ih < FC_MIN(hs + j->kh, H); ih++)
                    for (fc_idx iw = FC_MAX(ws, 0); iw < FC_MIN(ws + j->kw, W); iw++)
                        s += x[ih * xs2 + iw * xs3];
                out[oh * OW + ow] = s / (drow[oh] * dcol[ow]);
            }
        }
    }
    return 0;
}

/* Max backward of one plane: zero it, then grad_input[idx] += grad_output in output row-major
 * order (torch's order). An index outside [0, H*W) is skipped and reported, never written. */
static int FD(fc_pool_maxbwd_item)(fc_pool_job *j, fc_idx plane) {
    const fc_idx HW = j->H * j->W, OH = j->OH, OW = j->OW;
    const fc_idx n = plane / j->C, c = plane % j->C;
    T *gi = (T *)j->dst + plane * HW;
    const T *go = (const T *)j->src + n * j->ss[0] + c * j->ss[1];
    const int64_t *ind = j->ind + n * j->is[0] + c * j->is[1];
    int bad = 0;
    memset(gi, 0, (size_t)HW * sizeof(T));
    if (j->ss[3] == 1 && j->is[3] == 1) {
        /* check a row (a vectorisable reduction), then scatter it without a branch per element */
        for (fc_idx oh = 0; oh < OH; oh++) {
            const T *restrict g = go + oh * j->ss[2];
            const int64_t *restrict id = ind + oh * j->is[2];
            uint64_t out_of_plane = 0;
            for (fc_idx ow = 0; ow < OW; ow++) out_of_plane |= (uint64_t)id[ow] >= (uint64_t)HW;
            if (out_of_plane) {
                for (fc_idx ow = 0; ow < OW; ow++) {
                    uint64_t k = (uint64_t)id[ow];
                    if (k < (uint64_t)HW) gi[k] += g[ow];
                }
                bad = 1;
                continue;
            }
            for (fc_idx ow = 0; ow < OW; ow++) gi[id[ow]] += g[ow];
        }
    } else {
        for (fc_idx oh = 0; oh < OH; oh++) {
            for (fc_idx ow = 0; ow < OW; ow++) {
                uint64_t k = (uint64_t)ind[oh * j->is[2] + ow * j->is[3]];
                if (k < (uint64_t)HW) gi[k] += go[oh * j->ss[2] + ow * j->ss[3]];
                else bad = 1;
            }
        }
    }
    if (bad) __atomic_store_n(&j->bad_index, 1, __ATOMIC_RELAXED);
    return 0;
}

#undef FD
