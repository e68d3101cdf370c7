/* The channel-vectorised path of the forward and of grad_input, for small output planes:
 * included by conv_tmpl.h (T, TN, TF are its). fc_fwd_prepare and fc_gin_prepare hand a layer
 * here when fc_cv_wanted says so (fc_fwd_cv and fc_gin_cv there fill in the operands).
 *
 * Why: the implicit GEMM (gemm_tile) puts output pixels in the vector lanes and computes every
 * tap for every pixel, the padding's zeros included. On a 7x7 plane with a 3x3 kernel, 19% of
 * those products read padding; on 4x4, 31%; on 2x2, 56%. And a plane of 16 or 49 pixels leaves
 * the vectors of pixels few and partly empty. Here the lanes hold output channels instead (a
 * channel block of cv_nv vectors), and the pixels are broadcast: each pixel runs over the
 * valid taps of its class only.
 *
 * Data flow:
 * - A class is a set of output pixels whose kernel windows lie inside the input in the same
 *   kernel rows [r0, r1) and columns [s0, s1) (the interior, each border row and column, the
 *   corners). Its valid taps (c, r, s) are listed in tap order, with the input offset and the
 *   packed-weight offset of each, and where each sum block of FC_SUM_KC taps (counted over all
 *   taps) starts in the list.
 * - The weights are packed per (group, channel block) as [tap][channel] rows of cv_nv vectors
 *   (preparation items for large layers), zero past the last channel.
 * - grad_input (stride 1) is the same sum with the roles swapped: its "input" is grad_output,
 *   read at output row h + pt - r*dh for kernel row r (the kernel's flip is in the offsets), its
 *   taps (k, r, s) run over grad_output's channels as the GEMM's do (fc_gin_offsets), and its
 *   lanes are the input channels c, whose weights w[k][c][r][s] are packed the same way. With a
 *   stride s, each stride phase of grad_input's output (every s-th row and column from some
 *   offset) is such a sum over the taps of that phase, as in the GEMM (fc_phases_1d): a plan of
 *   its own, the phases' weights packed together (fc_cv_phases_pre_item).
 * - Item (image group, group, channel block): for each tap block of FC_CV_KC_BYTES of packed
 *   weights (it stays in the cache), for each class, for each register block of up to cv_np of its
 *   pixels, cv_kernel adds the sum blocks to a tile of running sums (pixels x channels, in
 *   L2), activating the finished sums as the GEMM does; then the tile is written out,
 *   transposed to (channel, pixel).
 * - The input is read where it lies (any strides): a valid tap never reads padding, so no padded
 *   copy is made.
 *
 * Exactness: every output is the chain of its sum blocks as in gemm_tile; the skipped taps would
 * have added w * 0 = +-0 to a chain started from +0, which changes nothing for a finite w. A
 * non-finite weight times a padding zero is NaN, though: the packing notes, per (channel,
 * class), whether a skipped tap holds one, and those outputs are set to NaN, as the GEMM's
 * would be. So this path gives gemm_tile's results, and which of the two runs a layer changes
 * no bit.
 */

#ifndef FC_CONV_CV_SHARED
#define FC_CONV_CV_SHARED /* what does not depend on the dtype: once */
/* Output pixels per plane of the layers that take this path, at most (14 x 14). */
#define FC_CV_MAX_P 196
/* Classes at most (a 3x3 kernel with padding 1 has 9). */
#define FC_CV_MAX_CLASSES 16
/* Bytes of an item's tile of running sums (its pixels x a channel block). */
#define FC_CV_TILE_BYTES 65536
/* Bytes of a tap block of a channel block's packed weights: read by every register block of
 * pixels of the item while it stays in the cache. */
#define FC_CV_KC_BYTES 32768

/* One axis: output o and kernel tap r read input o*a + b + r*c (c != 0) of n. */
typedef struct {
    fc_idx n, a, b, c;
} fc_cv_axis_map;

/* floor(a / b) for b > 0 */
static inline fc_idx fc_cv_floor_div(fc_idx a, fc_idx b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* The valid kernel taps [*r0, *r1) of output o along an axis of R taps: 0 <= o*a + b + r*c < n. */
static void fc_cv_range(const fc_cv_axis_map *m, fc_idx o, fc_idx R, fc_idx *r0, fc_idx *r1) {
    const fc_idx e = o * m->a + m->b;
    fc_idx lo, hi; /* lo <= r < hi */
    if (m->c > 0) {
        lo = -fc_cv_floor_div(e, m->c);
        hi = fc_cv_floor_div(m->n - 1 - e, m->c) + 1;
    } else {
        lo = -fc_cv_floor_div(m->n - 1 - e, -m->c);
        hi = fc_cv_floor_div(e, -m->c) + 1;
    }
    *r0 = FC_MIN(FC_MAX(lo, (fc_idx)0), R);
    *r1 = FC_MAX(FC_MIN(hi, R), *r0);
}

/* The distinct valid ranges of an axis of `no` outputs, in order of first use: ranges[2k],
 * ranges[2k+1] of class k, cls[o] of output o (unless cls is NULL). Returns the count, or
 * FC_CV_MAX_CLASSES + 1 when there are more. */
static fc_idx fc_cv_axis(const fc_cv_axis_map *m, fc_idx no, fc_idx R, fc_idx *ranges,
                         fc_idx *cls) {
    fc_idx count = 0;
    for (fc_idx o = 0; o < no; o++) {
        fc_idx r0, r1, k;
        fc_cv_range(m, o, R, &r0, &r1);
        for (k = 0; k < count; k++)
            if (ranges[2 * k] == r0 && ranges[2 * k + 1] == r1) break;
        if (k == count) {
            if (count == FC_CV_MAX_CLASSES) return FC_CV_MAX_CLASSES + 1;
            ranges[2 * count] = r0;
            ranges[2 * count + 1] = r1;
            count++;
        }
        if (cls) cls[o] = k;
    }
    return count;
}

#endif /* FC_CONV_CV_SHARED */

typedef struct {
    fc_idx r0, r1, s0, s1; /* the valid kernel rows and columns */
    fc_idx npx;            /* pixels per image */
    fc_idx *pos, *out;     /* [NB * npx], image by image: input offsets (from the item's
                            * input base) and output offsets (from its output base) */
    fc_idx ntaps;
    fc_idx *toff, *twoff;  /* [ntaps]: input and packed-weight offsets of the valid taps */
    fc_idx *bstart;        /* [nsb + 1]: where each sum block starts in them */
} TF(fc_cv_class);

typedef struct {
    /* the operands (conv_tmpl.h's fc_fwd_cv, fc_gin_cv) */
    fc_idx N, G, Cin, Cout, R, S, OH, OW; /* per group: Cin channels read, Cout computed */
    fc_cv_axis_map mh, mw;
    /* output pixel (oh, ow) is element (oh*sth + oh0) * ldo + ow*stw + ow0 of its channel's
     * plane of ocs elements (a stride phase of grad_input's output: every sth-th row, every
     * stw-th column) */
    fc_idx sth, stw, oh0, ow0, ldo, ocs;
    /* tap row i and column j are row rk[i] and column sk[j] of the Rw x Sw kernel (grad_input's
     * stride phase: a subset of them); NULL: the identity */
    const fc_idx *rk, *sk;
    fc_idx Rw, Sw;
    const T *x;        /* the input, element strides xs (channel gi * Cin + ci at xs[1]) */
    fc_idx xs[4];
    const T *w;
    int gin;           /* w is (Cin, Cout, R, S) per group, grad_input's view of the weights;
                        * else (Cout, Cin, R, S) */
    const T *bias;     /* (G * Cout) or NULL */
    T *out;            /* contiguous (N, G * Cout, OH, OW) */
    int act;
    T slope;
    void (*kernel)(int np, const TF(fc_cv_args) * a);
    int (*pack)(const T *w, fc_idx lds, fc_idx nt, fc_idx nk, T *Wp, fc_idx ldw);
    int np;            /* the most pixels of a register block */
    /* the plan */
    fc_idx TT, P;      /* taps (Cin x R x S) and output pixels per plane */
    fc_idx ocb, nocb;  /* channels per block (the kernel's vectors), blocks per group */
    fc_idx NB, ngroups; /* images per item, groups of them */
    fc_idx nsb, KC;    /* sum blocks of all taps; taps per tap block (whole sum blocks) */
    fc_idx ncls;
    TF(fc_cv_class) cls[FC_CV_MAX_CLASSES];
    T *Wp;             /* [G][nocb][TT][ocb] */
    size_t wp_bytes;
    T *biasp;          /* [G][nocb][ocb], or NULL */
    uint64_t *nan;     /* [G][nocb][ncls]: channels (bits) whose outputs in the class are NaN */
    fc_idx npre, nitems;
    fc_idx pre0, item0; /* where its preparation items and items start among those of a pass */
} TF(fc_cv_plan);

/* Whether a layer takes this path: a small output plane (FC_CV_MAX_P pixels), taps, channel
 * blocks (ocb lanes each) at least three quarters full, and few classes. Which path computes a
 * layer changes none of its bits: this only weighs speed. */
static int TF(fc_cv_wanted)(const TF(fc_cv_plan) * cv, fc_idx ocb) {
    const fc_idx P = cv->OH * cv->OW, nocb = FC_CEIL_DIV(cv->Cout, ocb);
    if (!fc_path_enabled[FC_PATH_CV] || P > FC_CV_MAX_P || P == 0 || cv->Cin == 0 || cv->R * cv->S == 0 ||
        4 * cv->Cout < 3 * nocb * ocb)
        return 0;
    fc_idx ranges[2 * FC_CV_MAX_CLASSES];
    return fc_cv_axis(&cv->mh, cv->OH, cv->R, ranges, NULL) *
               fc_cv_axis(&cv->mw, cv->OW, cv->S, ranges, NULL) <=
           FC_CV_MAX_CLASSES;
}

/* The classes (pixels of NB images, valid taps, sum blocks). */
static int TF(fc_cv_classes)(TF(fc_cv_plan) * cv) {
    const fc_idx OH = cv->OH, OW = cv->OW, R = cv->R, S = cv->S, RS = R * S;
    fc_idx rr[2 * FC_CV_MAX_CLASSES], cr[2 * FC_CV_MAX_CLASSES];
    fc_idx *rc = (fc_idx *)fc_malloc((size_t)(OH + OW) * sizeof(fc_idx)), *cc = rc + OH;
    if (!rc) return -1;
    fc_idx nrc = fc_cv_axis(&cv->mh, OH, R, rr, rc);
    fc_idx ncc = fc_cv_axis(&cv->mw, OW, S, cr, cc);
    const fc_idx out_img = cv->G * cv->Cout * cv->ocs;
    cv->ncls = nrc * ncc;
    int st = 0;
    for (fc_idx k = 0; k < cv->ncls; k++) {
        TF(fc_cv_class) *c = &cv->cls[k];
        c->r0 = rr[2 * (k / ncc)];
        c->r1 = rr[2 * (k / ncc) + 1];
        c->s0 = cr[2 * (k % ncc)];
        c->s1 = cr[2 * (k % ncc) + 1];
        c->npx = 0;
        for (fc_idx oh = 0; oh < OH; oh++)
            for (fc_idx ow = 0; ow < OW; ow++) c->npx += rc[oh] * ncc + cc[ow] == k;
        c->ntaps = cv->Cin * (c->r1 - c->r0) * (c->s1 - c->s0);
        c->pos = (fc_idx *)fc_malloc((size_t)(2 * cv->NB * c->npx) * sizeof(fc_idx));
        c->toff = (fc_idx *)fc_malloc((size_t)(2 * c->ntaps + 1) * sizeof(fc_idx));
        c->bstart = (fc_idx *)fc_malloc((size_t)(cv->nsb + 1) * sizeof(fc_idx));
        if (!c->pos || !c->toff || !c->bstart) {
            st = -1;
            break;
        }
        c->out = c->pos + cv->NB * c->npx;
        c->twoff = c->toff + c->ntaps;
        fc_idx i = 0;
        for (fc_idx img = 0; img < cv->NB; img++)
            for (fc_idx oh = 0; oh < OH; oh++)
                for (fc_idx ow = 0; ow < OW; ow++) {
                    if (rc[oh] * ncc + cc[ow] != k) continue;
                    c->pos[i] = img * cv->xs[0] + (oh * cv->mh.a + cv->mh.b) * cv->xs[2] +
                                (ow * cv->mw.a + cv->mw.b) * cv->xs[3];
                    c->out[i] = img * out_img + (oh * cv->sth + cv->oh0) * cv->ldo +
                                ow * cv->stw + cv->ow0;
                    i++;
                }
        fc_idx n = 0;
        for (fc_idx t = 0; t < cv->TT; t++) {
            if (t % FC_SUM_KC == 0) c->bstart[t / FC_SUM_KC] = n;
            fc_idx ch = t / RS, r = (t / S) % R, s = t % S;
            if (r < c->r0 || r >= c->r1 || s < c->s0 || s >= c->s1) continue;
            c->toff[n] = ch * cv->xs[1] + r * cv->mh.c * cv->xs[2] + s * cv->mw.c * cv->xs[3];
            c->twoff[n] = t * cv->ocb;
            n++;
        }
        c->bstart[cv->nsb] = n;
    }
    fc_free(rc);
    return st;
}

static void TF(fc_cv_nan_marks)(const TF(fc_cv_plan) * cv, fc_idx i, int nonfinite);

/* Preparation item i = (group, channel block): its weights packed [TT][ocb] (zero past the last
 * channel), and for each class the channels one of whose skipped taps holds an inf or NaN. */
static int TF(fc_cv_pre_item)(const TF(fc_cv_plan) * cv, fc_idx i) {
    const fc_idx gi = i / cv->nocb, b = i % cv->nocb, TT = cv->TT, ocb = cv->ocb;
    const fc_idx j0 = b * ocb, nk = FC_MIN(ocb, cv->Cout - j0), RS = cv->R * cv->S;
    T *Wp = cv->Wp + i * TT * ocb;
    int nonfinite = 0;
    if (!cv->gin) { /* rows of Cin * R * S taps, one per output channel */
        nonfinite = cv->pack(cv->w + (gi * cv->Cout + j0) * TT, TT, TT, nk, Wp, ocb);
    } else if (!cv->rk) { /* for each tap channel k, rows of R * S taps, one per output channel */
        for (fc_idx k = 0; k < cv->Cin; k++)
            nonfinite |= cv->pack(cv->w + ((gi * cv->Cin + k) * cv->Cout + j0) * RS, RS, RS, nk,
                                  Wp + k * RS * ocb, ocb);
    } else { /* a stride phase: fc_cv_phases_pre_item packs all phases */
        return -1;
    }
    TF(fc_cv_nan_marks)(cv, i, nonfinite);
    return 0;
}

/* The NaN marks of preparation item i (its weights packed): for each class, the channels one
 * of whose skipped taps holds an inf or NaN (none when no weight read was: `nonfinite`). */
static void TF(fc_cv_nan_marks)(const TF(fc_cv_plan) * cv, fc_idx i, int nonfinite) {
    const fc_idx TT = cv->TT, ocb = cv->ocb, nk = FC_MIN(ocb, cv->Cout - (i % cv->nocb) * ocb);
    const T *Wp = cv->Wp + i * TT * ocb;
    uint64_t *nan = cv->nan + i * cv->ncls;
    for (fc_idx k = 0; k < cv->ncls; k++) nan[k] = 0;
    if (!nonfinite) return;
    for (fc_idx t = 0; t < TT; t++)
        for (fc_idx j = 0; j < nk; j++) {
            const T v = Wp[t * ocb + j];
            if (v - v == 0) continue;
            const fc_idx r = (t / cv->S) % cv->R, s = t % cv->S;
            for (fc_idx k = 0; k < cv->ncls; k++) {
                const TF(fc_cv_class) *c = &cv->cls[k];
                if (r < c->r0 || r >= c->r1 || s < c->s0 || s >= c->s1)
                    nan[k] |= (uint64_t)1 << j;
            }
        }
}

/* The plan, once the operands are filled in and fc_cv_wanted said yes. */
static int TF(fc_cv_prepare)(TF(fc_cv_plan) * cv, const TF(fc_isa) * isa, int nthreads) {
    cv->kernel = isa->cv_kernel;
    cv->pack = isa->cv_pack;
    cv->np = isa->cv_np;
    cv->ocb = (fc_idx)isa->cv_nv * isa->vl;
    if (cv->ocb > 64) return -1; /* the NaN masks' bits */
    cv->TT = cv->Cin * cv->R * cv->S;
    cv->P = cv->OH * cv->OW;
    cv->nocb = FC_CEIL_DIV(cv->Cout, cv->ocb);
    cv->nsb = FC_CEIL_DIV(cv->TT, (fc_idx)FC_SUM_KC);
    cv->KC = FC_MAX((fc_idx)FC_SUM_KC, FC_CV_KC_BYTES / (cv->ocb * (fc_idx)sizeof(T)) /
                                           FC_SUM_KC * FC_SUM_KC);
    /* images per item: a tile of at most FC_CV_TILE_BYTES, and items enough for the threads */
    const fc_idx tile_img = cv->P * cv->ocb * (fc_idx)sizeof(T), nblk = cv->G * cv->nocb;
    cv->NB = FC_MAX((fc_idx)1, FC_MIN(cv->N, FC_CV_TILE_BYTES / tile_img));
    while (cv->NB > 1 && FC_CEIL_DIV(cv->N, cv->NB) * nblk < 4 * (fc_idx)nthreads) cv->NB--;
    cv->ngroups = FC_CEIL_DIV(cv->N, cv->NB);
    if (TF(fc_cv_classes)(cv)) return -1;
    cv->wp_bytes = (size_t)(nblk * cv->TT * cv->ocb) * sizeof(T);
    cv->Wp = (T *)fc_plan_alloc(cv->wp_bytes);
    cv->nan = (uint64_t *)fc_malloc((size_t)(nblk * cv->ncls) * sizeof(uint64_t));
    if (!cv->Wp || !cv->nan) return -1;
    if (cv->bias) {
        cv->biasp = (T *)fc_aligned_calloc((size_t)(nblk * cv->ocb) * sizeof(T));
        if (!cv->biasp) return -1;
        for (fc_idx gi = 0; gi < cv->G; gi++)
            for (fc_idx k = 0; k < cv->Cout; k++)
                cv->biasp[(gi * cv->nocb + k / cv->ocb) * cv->ocb + k % cv->ocb] =
                    cv->bias[gi * cv->Cout + k];
    }
    cv->npre = nblk;
    if (cv->G * cv->Cout * cv->TT < FC_PACK_PARALLEL_ELEMS && !cv->rk) {
        for (fc_idx i = 0; i < nblk; i++) TF(fc_cv_pre_item)(cv, i);
        cv->npre = 0;
    }
    cv->nitems = cv->ngroups * nblk;
    fc_path_taken(FC_PATH_CV);
    return 0;
}

static void TF(fc_cv_free)(TF(fc_cv_plan) * cv) {
    for (fc_idx k = 0; k < cv->ncls; k++) {
        fc_free(cv->cls[k].pos);
        fc_free(cv->cls[k].toff);
        fc_free(cv->cls[k].bstart);
    }
    cv->ncls = 0;
    fc_plan_free(cv->Wp, cv->wp_bytes);
    fc_free(cv->biasp);
    fc_free(cv->nan);
    cv->Wp = cv->biasp = NULL;
    cv->nan = NULL;
}

/* Frees n plans and the array that holds them. */
static void TF(fc_cv_free_all)(TF(fc_cv_plan) * cv, fc_idx n) {
    for (fc_idx f = 0; f < n; f++) TF(fc_cv_free)(&cv[f]);
    fc_free(cv);
}

/* Item (image group, group, channel block). */
static int TF(fc_cv_item)(const TF(fc_cv_plan) * cv, fc_idx item) {
    const fc_idx blk = item % (cv->G * cv->nocb), ng = item / (cv->G * cv->nocb);
    const fc_idx gi = blk / cv->nocb, b = blk % cv->nocb, ocb = cv->ocb;
    const fc_idx n0 = ng * cv->NB, nb = FC_MIN(cv->NB, cv->N - n0);
    const fc_idx nk = FC_MIN(ocb, cv->Cout - b * ocb);
    T *tile = (T *)fc_ws_get(1, (size_t)(nb * cv->P * ocb) * sizeof(T));
    if (!tile) return -1;
    const T *X = cv->x + n0 * cv->xs[0] + gi * cv->Cin * cv->xs[1];
    const T *Wp = cv->Wp + blk * cv->TT * ocb;
    const T *bias = cv->biasp ? cv->biasp + blk * ocb : NULL;
    for (fc_idx t0 = 0; t0 < cv->TT; t0 += cv->KC) {
        const fc_idx t1 = FC_MIN(cv->TT, t0 + cv->KC), sb0 = t0 / FC_SUM_KC;
        fc_idx row = 0; /* the tile's rows: class by class, each class's pixels image by image */
        for (fc_idx k = 0; k < cv->ncls; k++) {
            const TF(fc_cv_class) *c = &cv->cls[k];
            const fc_idx npix = nb * c->npx;
            for (fc_idx i = 0; i < npix; i += cv->np) {
                const int np = (int)FC_MIN((fc_idx)cv->np, npix - i);
                const TF(fc_cv_args) a = {X, c->pos + i, c->toff, c->twoff, c->bstart + sb0,
                                          FC_CEIL_DIV(t1 - t0, (fc_idx)FC_SUM_KC), Wp,
                                          tile + (row + i) * ocb, ocb, bias, t0 == 0,
                                          t1 == cv->TT ? cv->act : FC_ACT_NONE, cv->slope};
                cv->kernel(np, &a);
            }
            row += npix;
        }
    }
    /* the epilogue: NaN where a skipped tap's weight is not finite, transposed */
    T *out = cv->out + (n0 * cv->G * cv->Cout + gi * cv->Cout + b * ocb) * cv->ocs;
    const uint64_t *nan = cv->nan + blk * cv->ncls;
    fc_idx row = 0;
    for (fc_idx k = 0; k < cv->ncls; k++) {
        const TF(fc_cv_class) *c = &cv->cls[k];
        for (fc_idx i = 0; i < nb * c->npx; i++, row++) {
            const T *s = tile + row * ocb;
            T *o = out + c->out[i];
            for (fc_idx j = 0; j < nk; j++)
                o[j * cv->ocs] = (nan[k] >> j) & 1 ? (T)__builtin_nan("") : s[j];
        }
    }
    return 0;
}

/* Preparation item i = (group, channel block) of grad_input's n stride phases, all at once:
 * for each channel k, the block's weights of k (rows of Rw x Sw elements) are transposed once,
 * and each phase's taps copied from there. Then the NaN marks of every phase. */
static int TF(fc_cv_phases_pre_item)(const TF(fc_cv_plan) * phases, fc_idx n, fc_idx i) {
    const TF(fc_cv_plan) *cv = phases; /* a phase with items: all share the channel blocks */
    while (!cv->nitems) cv++;
    const fc_idx gi = i / cv->nocb, b = i % cv->nocb, ocb = cv->ocb, RSw = cv->Rw * cv->Sw;
    const fc_idx j0 = b * ocb, nk = FC_MIN(ocb, cv->Cout - j0);
    T *tmp = (T *)fc_malloc((size_t)(RSw * ocb) * sizeof(T));
    if (!tmp) return -1;
    int nonfinite = 0;
    for (fc_idx k = 0; k < cv->Cin; k++) {
        nonfinite |= cv->pack(cv->w + ((gi * cv->Cin + k) * cv->Cout + j0) * RSw, RSw, RSw, nk,
                              tmp, ocb);
        for (fc_idx f = 0; f < n; f++) {
            const TF(fc_cv_plan) *c = &phases[f];
            const fc_idx RS = c->R * c->S;
            if (!c->nitems) continue;
            T *Wp = c->Wp + i * c->TT * ocb + k * RS * ocb;
            for (fc_idx t = 0; t < RS; t++)
                memcpy(Wp + t * ocb, tmp + (c->rk[t / c->S] * c->Sw + c->sk[t % c->S]) * ocb,
                       (size_t)ocb * sizeof(T));
        }
    }
    fc_free(tmp);
    for (fc_idx f = 0; f < n; f++)
        if (phases[f].nitems) TF(fc_cv_nan_marks)(&phases[f], i, nonfinite);
    return 0;
}

/* The plans of a pass (one, or one per stride phase) run its items and preparation items in
 * turn: item i belongs to the plan whose range [item0, item0 + nitems) holds it. */
static int TF(fc_cv_run_pre_item)(const TF(fc_cv_plan) * cv, fc_idx n, fc_idx i) {
    if (cv[0].rk) return TF(fc_cv_phases_pre_item)(cv, n, i);
    for (fc_idx f = 0; f < n; f++)
        if (i >= cv[f].pre0 && i < cv[f].pre0 + cv[f].npre)
            return TF(fc_cv_pre_item)(&cv[f], i - cv[f].pre0);
    return -1;
}

static int TF(fc_cv_run_item)(const TF(fc_cv_plan) * cv, fc_idx n, fc_idx i) {
    for (fc_idx f = 0; f < n; f++)
        if (i >= cv[f].item0 && i < cv[f].item0 + cv[f].nitems)
            return TF(fc_cv_item)(&cv[f], i - cv[f].item0);
    return -1;
}
