/* The depthwise path of the forward and of grad_input: included by conv_tmpl.h (T, TN, TF are
 * its) after both passes' plans. fc_fwd_prepare and fc_gin_prepare hand a layer here
 * (fc_fwd_dwd, fc_gin_dwd) when each of its groups has one input and one output channel.
 *
 * Why: such a group is a GEMM of one row. gemm_tile keeps one accumulator row of its register
 * blocks busy and pays its setup (weights packed, a tile, a write-back) once per group and
 * image: a 7 x 7 plane is 49 outputs, and the setup then costs several times the products.
 *
 * Data flow: item (image, block of channels; fc_dwd_block). For each channel of the block:
 * - its wide buffer, as the GEMM reads it, in the thread's workspace slot 0: for the forward
 *   fc_build_wide of the one channel (or the input itself, fc_wide_view), for grad_input the
 *   channel's padded grad_output plane (fc_build_padded_dy);
 * - per stride phase (grad_input; the forward has one), dwd_kernel (conv_dwd_isa_tmpl.h) over
 *   the wide positions o*Wq + q of the phase's rows, into slot 1;
 * - the valid positions of each row copied out (the forward writes straight into its output
 *   when the rows have no gaps, Wq == OW).
 * grad_input's weights are gathered per phase once, in prepare (dwd_w: the GEMM's tap order).
 *
 * Exactness: each output is gemm_tile's chain: the same taps (the padding's zeros included,
 * which keeps a non-finite weight's NaN), in the same order and sum blocks, from the bias,
 * activated alike. Which of the two runs a layer changes no bit.
 */

/* Outputs an item computes, at least, where the layer has enough of them for four items per
 * thread: a plane of 7 x 7 is then a block of some 300 channels. */
#define FC_DWD_ITEM_ELEMS 16384
/* grad_input with stride 2 across writes its two column phases together from rows of this
 * many columns (shorter ones measured faster a phase at a time). */
#define FC_DWD_INTERLEAVE_MIN 16
/* Bytes of the wide buffers an item builds at a time (in L1 with the outputs they give). */
#define FC_DWD_BUILD_BYTES 16384

/* Channels per item for N images of C channel planes of `plane` outputs each. The blocks
 * decide no sum, so they may follow the thread count. */
static fc_idx TF(fc_dwd_block)(fc_idx N, fc_idx C, fc_idx plane, int nthreads) {
    fc_idx cb = FC_MAX((fc_idx)1, FC_MIN(C, FC_DWD_ITEM_ELEMS / FC_MAX(plane, (fc_idx)1)));
    while (cb > 1 && N * FC_CEIL_DIV(C, cb) < 4 * (fc_idx)nthreads) cb = FC_CEIL_DIV(cb, 2);
    return cb;
}

/* Whether a pass with Cg input and Kg output channels per group and products `math` takes the
 * depthwise path; counts it if so. */
static int TF(fc_dwd_applies)(fc_idx Cg, fc_idx Kg, int math) {
    if (!fc_path_enabled[FC_PATH_DWD] || Cg != 1 || Kg != 1 || math != FC_MATH_F32) return 0;
    fc_path_taken(FC_PATH_DWD);
    return 1;
}

/* ---------- forward ---------- */

/* The forward on the depthwise path where it applies (its tap offsets and wide buffer size are
 * set): 1 (the items are set), 0 (the GEMM's path). */
static int TF(fc_fwd_dwd)(TF(fc_fwd_plan) * pl, int nthreads) {
    const TF(fc_geom) *g = &pl->g;
    if (!TF(fc_dwd_applies)(pl->Cg, pl->Kg, pl->math)) return 0;
    pl->dwd_cb = TF(fc_dwd_block)(g->N, g->G, g->OH * g->OW, nthreads);
    pl->nPB = 1;
    pl->nitems = g->N * FC_CEIL_DIV(g->G, pl->dwd_cb);
    return 1;
}

/* The wide buffers of channels [c0, c0 + nc) of image n of x (element strides xs), chstride
 * apart in buf, and the slack after them zeroed (buf holds (nc - 1) chstride + bufsize): by
 * dwd_pad_plane at stride 1 (rows of the input contiguous), else fc_build_wide. The depthwise
 * grad_weight builds its buffers here too. */
static void TF(fc_dwd_build)(const TF(fc_isa) * isa, const TF(fc_geom) * g, const TF(fc_wide) * wl,
                             const T *x, const fc_idx *xs, fc_idx bufsize, fc_idx n, fc_idx c0,
                             fc_idx nc, T *buf) {
    const fc_idx size = (nc - 1) * wl->chstride + bufsize;
    if (g->sh != 1 || g->sw != 1 || xs[3] != 1) {
        TF(fc_build_wide)(isa, g, wl, x, xs, n, c0, nc, buf, size);
        return;
    }
    const fc_idx nh = FC_MAX((fc_idx)0, FC_MIN(g->H, wl->Hq - g->pt));
    const fc_idx nw = FC_MAX((fc_idx)0, FC_MIN(g->W, wl->Wq - g->pl));
    for (fc_idx c = 0; c < nc; c++)
        isa->dwd_pad_plane(x + n * xs[0] + (c0 + c) * xs[1], xs[2], nh, nw,
                           buf + c * wl->chstride, wl->Hq, wl->Wq, g->pt, g->pl);
    const fc_idx used = nc * wl->chstride;
    memset(buf + used, 0, (size_t)(size - used) * sizeof(T));
}

/* Item (image n, block of channels). The wide buffers of FC_DWD_BUILD_BYTES of its channels
 * are built before any is read: a plane read right after it is written would be read from
 * stores still in flight, which the loads cannot take over when they span several. Returns -1
 * if the thread's workspace cannot be had. */
static int TF(fc_fwd_dwd_item)(const TF(fc_fwd_plan) * pl, fc_idx item) {
    const TF(fc_geom) *g = &pl->g;
    const fc_idx nblk = FC_CEIL_DIV(g->G, pl->dwd_cb), n = item / nblk;
    const fc_idx c0 = item % nblk * pl->dwd_cb, c1 = FC_MIN(g->G, c0 + pl->dwd_cb);
    const fc_idx Wq = pl->wl.Wq, OW = g->OW, ocs = g->OH * OW, RS = g->R * g->S;
    const fc_idx chs = pl->wl.chstride;
    const fc_idx nb = FC_MAX((fc_idx)1, FC_DWD_BUILD_BYTES / (chs * (fc_idx)sizeof(T)));
    const int direct = Wq == OW; /* rows without gaps: the wide positions are the output's */
    /* the input read in place when it can be for the block's last channel (then for all) */
    const int view = TF(fc_wide_view)(g, &pl->wl, pl->x, pl->xs, n, c1 - 1, pl->bufsize) != NULL;
    T *scratch = direct ? NULL : (T *)fc_ws_get(1, (size_t)(g->OH * Wq) * sizeof(T));
    T *buf = view ? NULL : (T *)fc_ws_get(0, (size_t)((nb - 1) * chs + pl->bufsize) * sizeof(T));
    if ((!direct && !scratch) || (!view && !buf)) return -1;
    if (!view) fc_ws()->cached_call = 0; /* slot 0 no longer holds a GEMM item's buffer */
    const TF(fc_copy_fn) copy = pl->stream ? pl->isa.stream_copy : TF(fc_copy);
    for (fc_idx cb = c0; cb < c1; cb += nb) {
        const fc_idx nc = FC_MIN(nb, c1 - cb);
        if (!view)
            TF(fc_dwd_build)(&pl->isa, g, &pl->wl, pl->x, pl->xs, pl->bufsize, n, cb, nc, buf);
        for (fc_idx c = cb; c < cb + nc; c++) {
            const T *src = view ? TF(fc_wide_view)(g, &pl->wl, pl->x, pl->xs, n, c, pl->bufsize)
                                : buf + (c - cb) * chs;
            if (!src) return -1; /* not reached: see view */
            T *out = pl->out + (n * g->K + c) * ocs;
            const TF(fc_dwd_args) a = {.B = src, .off = pl->off, .ntaps = RS,
                                       .w = pl->w + c * RS, .bias = pl->bias ? pl->bias + c : NULL,
                                       .act = pl->act, .slope = pl->slope,
                                       .n = (g->OH - 1) * Wq + OW, .out = direct ? out : scratch};
            pl->isa.dwd_kernel(&a);
            if (!direct)
                for (fc_idx oh = 0; oh < g->OH; oh++) copy(out + oh * OW, scratch + oh * Wq, OW);
        }
    }
    if (pl->stream && !direct) FC_SFENCE();
    return 0;
}

/* ---------- grad_input ---------- */

/* grad_input on the depthwise path where it applies (phase tables, tap offsets and buffer size
 * set): 1 (its weights gathered and items set), 0 (the GEMM's path), -1 (out of memory). */
static int TF(fc_gin_dwd)(TF(fc_gin_plan) * pl, int nthreads) {
    const TF(fc_geom) *g = &pl->g;
    if (!TF(fc_dwd_applies)(pl->Cg, pl->Kg, pl->math)) return 0;
    const fc_idx RS = g->R * g->S;
    pl->dwd_w = (T *)fc_aligned_alloc((size_t)FC_MAX(g->C * RS, (fc_idx)1) * sizeof(T));
    if (!pl->dwd_w) return -1;
    fc_idx rows = 0;
    for (fc_idx f = 0; f < pl->nphase; f++) {
        const TF(fc_phase1d) *hh = &pl->ph_h[f / g->sw], *ww = &pl->ph_w[f % g->sw];
        rows = FC_MAX(rows, hh->J);
        for (fc_idx c = 0; c < g->C; c++) {
            T *wf = pl->dwd_w + c * RS + pl->tap_start[f];
            for (fc_idx i = 0; i < hh->ntaps; i++)
                for (fc_idx j = 0; j < ww->ntaps; j++)
                    *wf++ = pl->w[c * RS + hh->taps[i] * g->S + ww->taps[j]];
        }
    }
    pl->dwd_scratch = rows * pl->Wb;
    pl->dwd_cb = TF(fc_dwd_block)(g->N, g->C, g->H * g->W, nthreads);
    pl->nPB = 1;
    pl->nitems = g->N * FC_CEIL_DIV(g->C, pl->dwd_cb);
    return 1;
}

/* The J phase rows of column phase b (stride sw) computed in src (rows Wb apart) into their
 * columns of dx rows row0, row0 + sh, ... of the plane dxc. */
static void TF(fc_dwd_scatter)(const TF(fc_gin_plan) * pl, T *dxc, fc_idx row0, fc_idx J, fc_idx b,
                               const T *src) {
    const TF(fc_geom) *g = &pl->g;
    const TF(fc_phase1d) *ww = &pl->ph_w[b];
    const fc_idx col0 = ww->j0 * g->sw + b - g->pl;
    for (fc_idx o = 0; o < J; o++) {
        T *dst = dxc + (row0 + o * g->sh) * g->W + col0;
        const T *s = src + o * pl->Wb;
        if (g->sw == 1)
            memcpy(dst, s, (size_t)ww->J * sizeof(T));
        else
            for (fc_idx q = 0; q < ww->J; q++) dst[q * g->sw] = s[q];
    }
}

/* Stride 2 across: the two column phases of a row phase (those done, in scratch and
 * scratch + half) written into their rows of dx together: column 2j + b - pl from phase b's
 * entry j - j0_b, where both phases have column j in one interleaving pass (which the compiler
 * vectorizes; a column at a time, the stores were most of a strided layer's grad_input). */
static void TF(fc_dwd_interleave)(const TF(fc_gin_plan) * pl, T *dxc, fc_idx row0, fc_idx J,
                                  const T *scratch, fc_idx half, const int *done) {
    const TF(fc_geom) *g = &pl->g;
    if (!done[0] || !done[1]) {
        for (fc_idx b = 0; b < 2; b++)
            if (done[b]) TF(fc_dwd_scatter)(pl, dxc, row0, J, b, scratch + b * half);
        return;
    }
    const TF(fc_phase1d) *w0 = &pl->ph_w[0], *w1 = &pl->ph_w[1];
    const fc_idx lo = FC_MAX(w0->j0, w1->j0), hi = FC_MIN(w0->j0 + w0->J, w1->j0 + w1->J);
    for (fc_idx o = 0; o < J; o++) {
        T *drow = dxc + (row0 + o * g->sh) * g->W; /* column 2j + b - pl */
        const T *s0 = scratch + o * pl->Wb, *s1 = scratch + half + o * pl->Wb;
        for (fc_idx b = 0; b < 2; b++) { /* the columns of one phase only: at either end */
            const TF(fc_phase1d) *ww = b ? w1 : w0;
            const T *sb = b ? s1 : s0;
            const fc_idx end = ww->j0 + ww->J, cut = FC_MAX(ww->j0, FC_MIN(lo, end));
            for (fc_idx j = ww->j0; j < cut; j++) drow[2 * j + b - g->pl] = sb[j - ww->j0];
            for (fc_idx j = FC_MAX(hi, cut); j < end; j++) drow[2 * j + b - g->pl] = sb[j - ww->j0];
        }
        if (lo < hi) {
            T *d = drow + 2 * lo - g->pl;
            const T *p0 = s0 + (lo - w0->j0), *p1 = s1 + (lo - w1->j0);
            for (fc_idx i = 0; i < hi - lo; i++) {
                d[2 * i] = p0[i];
                d[2 * i + 1] = p1[i];
            }
        }
    }
}

/* Item (image n, block of channels); dx is zero-filled, and stays so where no tap reaches. */
static int TF(fc_gin_dwd_item)(const TF(fc_gin_plan) * pl, fc_idx item) {
    const TF(fc_geom) *g = &pl->g;
    const fc_idx nblk = FC_CEIL_DIV(g->C, pl->dwd_cb), n = item / nblk;
    const fc_idx c0 = item % nblk * pl->dwd_cb, c1 = FC_MIN(g->C, c0 + pl->dwd_cb);
    const fc_idx RS = g->R * g->S, Wb = pl->Wb, half = pl->dwd_scratch;
    T *buf = (T *)fc_ws_get(0, (size_t)pl->bufsize * sizeof(T));
    T *scratch = (T *)fc_ws_get(1, (size_t)FC_MAX(2 * half, (fc_idx)1) * sizeof(T));
    if (!buf || !scratch) return -1;
    fc_ws()->cached_call = 0; /* slot 0 no longer holds a GEMM item's buffer */
    const fc_idx plane = pl->Hb * Wb, ocs = g->OH * g->OW;
    memset(buf + plane, 0, (size_t)(pl->bufsize - plane) * sizeof(T)); /* the slack */
    for (fc_idx c = c0; c < c1; c++) {
        /* fc_build_padded_dy's plane */
        pl->isa.dwd_pad_plane(pl->dy + (n * g->K + c) * ocs, g->OW, g->OH, g->OW, buf, pl->Hb, Wb,
                              pl->Uh, pl->Uw);
        T *dxc = pl->dx + (n * g->C + c) * g->H * g->W;
        for (fc_idx a = 0; a < g->sh; a++) {
            const TF(fc_phase1d) *hh = &pl->ph_h[a];
            const fc_idx row0 = hh->j0 * g->sh + a - g->pt;
            /* stride 2 across with rows of at least FC_DWD_INTERLEAVE_MIN columns: both
             * column phases first, then written together */
            const int pair = g->sw == 2 && pl->ph_w[0].J >= FC_DWD_INTERLEAVE_MIN;
            int done[2] = {0, 0};
            for (fc_idx b = 0; b < g->sw && hh->J > 0; b++) {
                const fc_idx f = a * g->sw + b;
                const TF(fc_phase1d) *ww = &pl->ph_w[b];
                const fc_idx t0 = pl->tap_start[f], Tf = pl->tap_start[f + 1] - t0;
                if (ww->J == 0 || Tf == 0) continue; /* no tap: those columns stay 0 */
                T *out = scratch + (pair ? b * half : 0);
                const TF(fc_dwd_args) args = {.B = buf, .off = pl->off + t0, .ntaps = Tf,
                                              .w = pl->dwd_w + c * RS + t0, .bias = NULL,
                                              .act = FC_ACT_NONE, .slope = 0,
                                              .n = (hh->J - 1) * Wb + ww->J, .out = out};
                pl->isa.dwd_kernel(&args);
                if (pair) {
                    done[b] = 1;
                    continue;
                }
                TF(fc_dwd_scatter)(pl, dxc, row0, hh->J, b, out);
            }
            if (pair) TF(fc_dwd_interleave)(pl, dxc, row0, hh->J, scratch, half, done);
        }
    }
    return 0;
}
