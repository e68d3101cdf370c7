/* ISA-specific hot loops of the convolution engine, written once with GCC vector extensions and
 * compiled once per (dtype, ISA) by conv_engine.h, which defines before including this file:
 *   T (float/double), TN (f32/f64), ISA (avx512/avx2/generic), VB (vector bytes),
 *   MR (GEMM rows per micro-kernel), NVW (vectors per pixel panel), TR (taps per
 *   weight-gradient micro-kernel), FC_TARGET.
 * All functions here are leaf loops over caller-prepared buffers: no allocation, no threading.
 * Their argument structs are declared in conv_isa_api.h.
 */
#include "conv_isa_api.h"

#define VL VLN
#define FN(name) FC_CAT(FC_CAT(name, TN), ISA)
#define VEC FN(vec)
#define VECU FN(vecu)
#define VI FN(veci)
#define PACKED_W FC_CAT(fc_packed_w, TN)
#define PIXELS FC_CAT(fc_pixels, TN)
#define TILE FC_CAT(fc_tile, TN)
#define DW_ARGS FC_CAT(fc_dw_args, TN)
#define ALWAYS_INLINE static inline __attribute__((always_inline)) FC_TARGET

typedef T VEC __attribute__((vector_size(VB)));
typedef T VECU __attribute__((vector_size(VB), aligned(sizeof(T))));
typedef IT VI __attribute__((vector_size(VB))); /* lane masks and shuffle indices */

/* Bytes of a packed panel's tap block (BLIS's rule: the B micro-panel fills half of L1 and stays
 * there while every row block of A streams past it). */
#define FC_PACKED_KC_BYTES 32768
/* Taps per block of a packed panel: 256 of float32 on AVX-512, 128 of float64. */
#define GEMM_KC (FC_PACKED_KC_BYTES / (NVW * VB))
/* Taps per block when every panel is read in place: such panels share most of their cache lines
 * between taps, so a long block costs no cache, and each micro-kernel call sets up its panel
 * once per block. */
#define FC_INPLACE_KC 1024
/* Taps per sum block: FC_SUM_KC (conv_isa_api.h). It divides GEMM_KC and FC_INPLACE_KC on every
 * path, so the tap blocks (multiples of it) start sum blocks. Each sum block costs a load, an add
 * and a store of the register tile (in L1), about 1 / FC_SUM_KC of its fused multiply-adds. */
_Static_assert(GEMM_KC % FC_SUM_KC == 0 && FC_INPLACE_KC % FC_SUM_KC == 0,
               "tap blocks must be whole sum blocks");
/* Pixels of the widest panel; a panel has at most this many row segments. */
#define FC_PANEL_MAXW (FC_PANEL_VECS * VL)

/* The packed-panel buffer of gemm_tile: (GEMM_KC + 1) taps (a spare row) of the widest panel.
 * The caller provides it from its thread's workspace, not the stack (65 KB: a Python thread
 * started with a small stack would overflow). */
static const fc_idx FN(gemm_bp_elems) = (GEMM_KC + 1) * FC_PANEL_MAXW;
/* This instantiation's sizes, for the ISA table (conv_tmpl.h): rows of a GEMM register block,
 * taps of a weight-gradient micro-kernel, lanes of a vector. */
static const int FN(isa_mr) = MR, FN(isa_tr) = TR, FN(isa_vl) = VL;

#define LOADU(p) (*(const VECU *)(p))
#define STOREU(p, v) (*(VECU *)(p) = (v))
#include "fc_shuffle.h"
#include "fc_fma.h"
_Static_assert(VLN * sizeof(T) == VB, "VLN lanes of T must fill a VB-byte vector");
_Static_assert((MR == 6 || MR == 12) && NVW <= FC_PANEL_VECS, "the micro-kernel table below");
_Static_assert(TR == 6 || TR == 12, "the weight-gradient kernel table below");
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

/* ---------- GEMM micro-kernels ---------- */

/* A pixel panel as a micro-kernel reads it (its mode, FC_PANEL_*): packed, vector v of tap t at
 * B + t*ldb + v*VL; in place in the wide buffer B, at B + off[t] + vofs[v]; split, as in place
 * but the lanes of vector v set in vmask[v] from a second load vgap[v] further on (a vector
 * across the end of an output row: the next row's pixels). */
typedef struct {
    const T *B;
    fc_idx ldb;
    const fc_idx *off;
    fc_idx vofs[FC_PANEL_VECS], vgap[FC_PANEL_VECS];
    VI vmask[FC_PANEL_VECS];
} FN(panel);

/* The forward's epilogue: the activation `act` (FC_ACT_*, conv_isa_api.h) of one vector of
 * finished outputs, with torch's rules, by lane selects (no arithmetic but leaky_relu's product):
 * relu y < 0 ? +0 : y and relu6 (hardtanh(0, 6)) y < 0 ? +0 : y > 6 ? 6 : y, so that NaN and
 * -0.0 pass unchanged as in torch; leaky_relu y > 0 ? y : y * slope. */
ALWAYS_INLINE VEC FN(activate)(VEC y, int act, T slope) {
    const VEC zero = {0}, six = zero + (T)6;
    VI pos, high;
    switch (act) {
    case FC_ACT_RELU:
        return (VEC)((VI)y & ~(y < zero));
    case FC_ACT_RELU6:
        y = (VEC)((VI)y & ~(y < zero));
        high = y > six;
        return (VEC)(((VI)y & ~high) | ((VI)six & high));
    case FC_ACT_LEAKY_RELU:
        pos = y > zero;
        return (VEC)(((VI)y & pos) | ((VI)(y * slope) & ~pos));
    default:
        return y;
    }
}

/* C[i][0:nv*VL] (+)= sum_t A[t][i] * (vector of tap t of the panel) for i < mr: a register block
 * of mr x nv vectors (C, ldc and the bias from `out`), activated by out->act before the store.
 * A is packed [kc][MR] (weights, broadcast).
 * The taps are summed in sum blocks of FC_SUM_KC (counted from the first tap of the whole sum:
 * the caller's tap blocks are whole sum blocks): each is one chain of fused multiply-adds over
 * its taps in order, from 0, then added to what the blocks before it left in C (when accumulate,
 * or after the call's first block), or else to the bias (or kept as it is). The sum blocks
 * depend on the tap count alone, so the register blocking, the vector width and the caller's
 * tap blocks change which lanes and calls compute an output, never its arithmetic: every path
 * gives its bits. Short chains and a chain of block sums round several times less than one chain
 * over all the taps (as long as C * R * S: thousands for a deep layer).
 * mr, nv and mode are compile-time constants in every specialisation (see FN(ukernels)), so the
 * accumulators stay in registers; each vector's base pointer is computed once, outside the tap
 * loop, so that the loop does not reload the panel's offsets every tap. */
ALWAYS_INLINE void FN(ukernel_body)(const int mr, const int nv, const int mode, fc_idx kc,
                                    const T *restrict A, const FN(panel) *restrict pn,
                                    const TILE *restrict out, int accumulate) {
    T *restrict C = out->C;
    const fc_idx ldc = out->ldc, ldb = pn->ldb;
    const T *bias = out->bias;
    const int stream = out->stream;
    const fc_idx *restrict off = pn->off;
    VEC c[MR][FC_PANEL_VECS];
    const T *base[FC_PANEL_VECS], *base2[FC_PANEL_VECS];
    FC_UNROLL
    for (int v = 0; v < nv; v++) {
        base[v] = mode != FC_PANEL_PACKED ? pn->B + pn->vofs[v] : pn->B + v * VL;
        base2[v] = mode == FC_PANEL_SPLIT ? base[v] + pn->vgap[v] : base[v];
        /* an in-place panel's bases are each a register of their own: left to itself, GCC
         * adds a vofs to the tap offset inside the loop for some blocks */
        if (mode != FC_PANEL_PACKED) __asm__("" : "+r"(base[v]));
        if (mode == FC_PANEL_SPLIT) __asm__("" : "+r"(base2[v]));
    }
    FC_UNROLL
    for (int i = 0; i < mr; i++)
        FC_UNROLL
        for (int v = 0; v < nv; v++) c[i][v] = (VEC){0};
    /* sum blocks of FC_SUM_KC taps (the call starts at a multiple of it: gemm_tap_block) */
    for (fc_idx t0 = 0; t0 < kc; t0 += FC_SUM_KC) {
        const fc_idx t1 = FC_MIN(kc, t0 + FC_SUM_KC);
        for (fc_idx t = t0; t < t1; t++) {
            const fc_idx o = mode != FC_PANEL_PACKED ? off[t] : t * ldb;
            const T *a = A + t * MR;
            VEC bv[FC_PANEL_VECS];
            FC_UNROLL
            for (int v = 0; v < nv; v++) {
                bv[v] = LOADU(base[v] + o);
                if (mode == FC_PANEL_SPLIT)
                    bv[v] = (VEC)(((VI)LOADU(base2[v] + o) & pn->vmask[v]) |
                                  ((VI)bv[v] & ~pn->vmask[v]));
            }
            FC_UNROLL
            for (int i = 0; i < mr; i++)
                FC_UNROLL
                for (int v = 0; v < nv; v++) c[i][v] = FN(fma1)(a[i], bv[v], c[i][v]);
        }
        /* the block's sum onto what the earlier blocks left in C, or onto the bias */
        if (accumulate || t0 > 0) {
            FC_UNROLL
            for (int i = 0; i < mr; i++)
                FC_UNROLL
                for (int v = 0; v < nv; v++) c[i][v] = LOADU(C + i * ldc + v * VL) + c[i][v];
        } else if (bias) {
            FC_UNROLL
            for (int i = 0; i < mr; i++)
                FC_UNROLL
                for (int v = 0; v < nv; v++) c[i][v] = bias[i] + c[i][v];
        }
        if (t1 < kc) {
            FC_UNROLL
            for (int i = 0; i < mr; i++)
                FC_UNROLL
                for (int v = 0; v < nv; v++) {
                    STOREU(C + i * ldc + v * VL, c[i][v]);
                    c[i][v] = (VEC){0};
                }
        }
    }
    /* the activation while the sums are in registers (only the last tap block has one) */
    const int act = out->act;
    if (act)
        FC_UNROLL
        for (int i = 0; i < mr; i++)
            FC_UNROLL
            for (int v = 0; v < nv; v++) c[i][v] = FN(activate)(c[i][v], act, out->slope);
    if (stream) {
        FC_UNROLL
        for (int i = 0; i < mr; i++)
            FC_UNROLL
            for (int v = 0; v < nv; v++) STREAM(C + i * ldc + v * VL, c[i][v]);
    } else {
        FC_UNROLL
        for (int i = 0; i < mr; i++)
            FC_UNROLL
            for (int v = 0; v < nv; v++) STOREU(C + i * ldc + v * VL, c[i][v]);
    }
}

typedef void (*FN(ukernel_fn))(fc_idx kc, const T *A, const FN(panel) *pn, const TILE *out,
                               int accumulate);

/* The register blocks (mr x nv) gemm_tile uses: every row count up to MR (fc_row_block balances
 * the last blocks), with nv from 1 to NVW vectors, or up to FC_PANEL_VECS when mr <= 4 (small row
 * blocks need wider panels to have enough independent accumulators). ROW2(m) / ROW4(m) stand for
 * row count m with 2 / 4 widths. */
#if NVW > 2
#define FC_UK_MID_ROWS(ROW2, ROW4) ROW4(5) ROW4(6)
#else
#define FC_UK_MID_ROWS(ROW2, ROW4) ROW2(5) ROW2(6)
#endif
#if MR > 6
#define FC_UK_TALL_ROWS(ROW2) ROW2(7) ROW2(8) ROW2(9) ROW2(10) ROW2(11) ROW2(12)
#else
#define FC_UK_TALL_ROWS(ROW2)
#endif
#define FC_UK_BLOCKS(ROW2, ROW4) \
    ROW4(1) ROW4(2) ROW4(3) ROW4(4) FC_UK_MID_ROWS(ROW2, ROW4) FC_UK_TALL_ROWS(ROW2)

/* One specialisation of the body per (register block, panel mode). */
#define FC_UK_DEFINE(m, v, mode, name)                                                         \
    static FC_TARGET void FN(name##_##m##x##v)(fc_idx kc, const T *A, const FN(panel) *pn,     \
                                               const TILE *out, int accumulate) {              \
        FN(ukernel_body)(m, v, mode, kc, A, pn, out, accumulate);                              \
    }
#define FC_UK_DEFINE_MODES(m, v)                                                               \
    FC_UK_DEFINE(m, v, FC_PANEL_PACKED, ukernel)                                               \
    FC_UK_DEFINE(m, v, FC_PANEL_INPLACE, ukernel_direct)                                       \
    FC_UK_DEFINE(m, v, FC_PANEL_SPLIT, ukernel_split)
#define FC_UK_DEFINE_ROW2(m) FC_UK_DEFINE_MODES(m, 1) FC_UK_DEFINE_MODES(m, 2)
#define FC_UK_DEFINE_ROW4(m) FC_UK_DEFINE_ROW2(m) FC_UK_DEFINE_MODES(m, 3) FC_UK_DEFINE_MODES(m, 4)
FC_UK_BLOCKS(FC_UK_DEFINE_ROW2, FC_UK_DEFINE_ROW4)

/* FN(ukernels)[mr - 1][nv - 1][mode]: the specialisation for an mr x nv block and a panel mode. */
#define FC_UK_MODES(m, v) \
    {FN(ukernel_##m##x##v), FN(ukernel_direct_##m##x##v), FN(ukernel_split_##m##x##v)}
#define FC_UK_ENTRY_ROW2(m) [m - 1] = {FC_UK_MODES(m, 1), FC_UK_MODES(m, 2)},
#define FC_UK_ENTRY_ROW4(m) \
    [m - 1] = {FC_UK_MODES(m, 1), FC_UK_MODES(m, 2), FC_UK_MODES(m, 3), FC_UK_MODES(m, 4)},
static const FN(ukernel_fn) FN(ukernels)[MR][FC_PANEL_VECS][FC_PANEL_MODES] = {
    FC_UK_BLOCKS(FC_UK_ENTRY_ROW2, FC_UK_ENTRY_ROW4)};
#undef FC_UK_MID_ROWS
#undef FC_UK_TALL_ROWS
#undef FC_UK_BLOCKS
#undef FC_UK_DEFINE
#undef FC_UK_DEFINE_MODES
#undef FC_UK_DEFINE_ROW2
#undef FC_UK_DEFINE_ROW4
#undef FC_UK_MODES
#undef FC_UK_ENTRY_ROW2
#undef FC_UK_ENTRY_ROW4

/* ---------- gemm_tile ----------
 * Ct[m][p - p0] = sum_t A[m][t] * B[off[t] + pos(p)] for m < M and output pixels p in [p0, p1)
 * (the operands: PACKED_W, PIXELS and TILE in conv_isa_api.h). Several images may sit side by
 * side, so that no panel is left mostly empty at the end of a small image; only pixels below P
 * are meaningful (the tile needs room up to p1 rounded up to VL). The tile starts from bias[m]
 * (or 0): it may be the output array itself. A's rows are in the blocks of fc_row_block.
 *
 * The taps are cut in equal blocks (gemm_tap_block). A panel of up to FC_PANEL_VECS vectors of
 * pixels whose every vector lies in one output row is read by the micro-kernel straight from the
 * wide buffer, at each tap's offset; so is one whose vectors lie in at most two rows, each such
 * vector by two loads merged by a lane mask (gemm_panel_mode). Any other panel (rows shorter
 * than half a vector) is first gathered into a contiguous [KC][panel] buffer -- an im2col of just
 * that panel, L1-resident, with no wasted columns at row ends (gemm_pack_panel) -- which the
 * micro-kernel then streams for every row block of A (gemm_row_blocks). Reading in place saves
 * the copy and its cache traffic; packing serves the panels whose rows are too short for it. */

/* A panel's row segments: its pixels may span several output rows (and images). Segment s holds
 * len[s] pixels, at src[s] in the wide buffers and dst[s] in the panel, in nv[s] vectors. */
typedef struct {
    fc_idx src[FC_PANEL_MAXW], dst[FC_PANEL_MAXW], len[FC_PANEL_MAXW];
    int nv[FC_PANEL_MAXW], n;
} FN(segments);

/* Taps per block, blocks of equal size rounded up to a multiple of FC_SUM_KC (so that every
 * call of the micro-kernel starts a sum block, see ukernel_body): at most GEMM_KC, or
 * FC_INPLACE_KC when every panel is read in place: rows of whole vectors or of at least one, one
 * long row, or a single row block (which never packs). Invariant: no panel is packed when the
 * blocks are longer than GEMM_KC (Bp holds GEMM_KC taps only). Panels start at multiples of VL
 * pixels of one image (p0 is a multiple of nr), so with whole-vector rows or a single long row
 * every vector lies in one row, with rows of at least a vector in at most two. */
ALWAYS_INLINE fc_idx FN(gemm_tap_block)(const PACKED_W *w, const PIXELS *px) {
    const fc_idx rowlen = px->rowlen, TT = w->TT;
    const int all_inplace = rowlen % VL == 0 || rowlen >= VL ||
                            (rowlen == px->Pimg && px->P <= px->Pimg) ||
                            FC_CEIL_DIV(w->M, MR) == 1;
    const fc_idx kcap = all_inplace ? FC_INPLACE_KC : (fc_idx)GEMM_KC;
    const fc_idx kb = FC_CEIL_DIV(TT, FC_MAX((fc_idx)1, FC_CEIL_DIV(TT, kcap)));
    return FC_MIN(kcap, FC_ROUND_UP(kb, (fc_idx)FC_SUM_KC));
}

/* The tap block from t0 of kc taps ends the sum: its stores may stream when the tile allows it
 * and the panel at column col is vector-aligned. */
ALWAYS_INLINE int FN(gemm_stream_at)(const TILE *tile, fc_idx t0, fc_idx kc, fc_idx TT,
                                     fc_idx col) {
    return tile->stream && t0 + kc == TT && col % VL == 0;
}

/* No taps: the tile is the bias (or 0), activated. */
ALWAYS_INLINE void FN(gemm_no_taps)(fc_idx M, fc_idx ncols, const TILE *tile) {
    for (fc_idx m = 0; m < M; m++) {
        VEC y = {0};
        y[0] = tile->bias ? tile->bias[m] : (T)0; /* as it is: a -0.0 bias stays -0.0 */
        y = FN(activate)(y, tile->act, tile->slope);
        for (fc_idx p = 0; p < ncols; p++) tile->C[m * tile->ldc + p] = y[0];
    }
}

/* The tile of the tap block from t0 of kc taps at column col, rows from m0 (bias from bias[m0]):
 * it streams (gemm_stream_at) and is activated when the block ends the sum. */
ALWAYS_INLINE TILE FN(gemm_block_tile)(const TILE *tile, fc_idx m0, fc_idx col, fc_idx t0,
                                      fc_idx kc, fc_idx TT) {
    const int last = t0 + kc == TT;
    TILE blk = {tile->C + m0 * tile->ldc + col, tile->ldc, tile->bias ? tile->bias + m0 : NULL,
                FN(gemm_stream_at)(tile, t0, kc, TT, col), last ? tile->act : FC_ACT_NONE,
                tile->slope};
    return blk;
}

/* One row block: nothing would reuse a packed panel, so the wide buffer is read in place, one row
 * segment at a time (lanes past the row end are computed, then overwritten by the next segment
 * or land in the tile's slack: ldc >= p1 - p0 + FC_PANEL_MAXW). */
ALWAYS_INLINE void FN(gemm_one_block)(const PACKED_W *w, const PIXELS *px, fc_idx p0,
                                      fc_idx pend, fc_idx KB, const TILE *tile) {
    const int nvmax = w->M <= 4 ? FC_PANEL_VECS : NVW;
    FN(panel) pn = {0};
    for (int v = 0; v < FC_PANEL_VECS; v++) pn.vofs[v] = (fc_idx)v * VL;
    for (fc_idx p = p0; p < pend;) {
        fc_idx img = p / px->Pimg, q = p - img * px->Pimg, oh = q / px->rowlen, ow = q % px->rowlen;
        fc_idx avail = FC_MIN(px->rowlen - ow, pend - p);
        int nv = (int)FC_MIN((fc_idx)nvmax, FC_CEIL_DIV(avail, (fc_idx)VL));
        pn.B = px->B + img * px->imgs + oh * px->Wq + ow;
        for (fc_idx t0 = 0; t0 < w->TT; t0 += KB) {
            fc_idx kc = FC_MIN(KB, w->TT - t0);
            pn.off = px->off + t0;
            TILE blk = FN(gemm_block_tile)(tile, 0, p - p0, t0, kc, w->TT);
            FN(ukernels)[w->M - 1][nv - 1][FC_PANEL_INPLACE](kc, w->A + t0 * MR, &pn, &blk, t0 > 0);
        }
        p += FC_MIN(avail, (fc_idx)nv * VL);
    }
}

/* The row segments of the panel of w pixels from p (pixels up to pend). */
ALWAYS_INLINE void FN(gemm_segments)(const PIXELS *px, fc_idx p, fc_idx pend, fc_idx w,
                                     FN(segments) *sg) {
    int n = 0;
    for (fc_idx q = p, d = 0; d < w && q < pend; n++) {
        fc_idx img = q / px->Pimg, qi = q - img * px->Pimg;
        fc_idx oh = qi / px->rowlen, ow = qi % px->rowlen;
        fc_idx len = FC_MIN(w - d, px->rowlen - ow);
        sg->src[n] = img * px->imgs + oh * px->Wq + ow;
        sg->dst[n] = d;
        sg->nv[n] = (int)FC_CEIL_DIV(len, (fc_idx)VL);
        sg->len[n] = len;
        d += len;
        q += len;
    }
    sg->n = n;
}

/* How to read a panel of nv vectors (`valid` pixels) with segments sg: in place when every
 * vector's pixels lie in one row segment (always for a panel within one row; e.g. two rows of 16
 * for a 16-wide output), or split when some lie in two: the lanes in the second then come from a
 * second load, at that segment's offset (always possible with rows of at least a vector, whose
 * middle segments are whole rows). Both save packing the panel; their offsets and masks are set
 * in pn. FC_PANEL_PACKED otherwise. */
ALWAYS_INLINE int FN(gemm_panel_mode)(const FN(segments) *sg, int nv, fc_idx valid,
                                      FN(panel) *pn) {
    int split = 0;
    for (int v = 0, s = 0; v < nv; v++) {
        const fc_idx start = (fc_idx)v * VL, end = FC_MIN(start + VL, valid);
        while (s + 1 < sg->n && start >= sg->dst[s] + sg->len[s]) s++;
        const fc_idx cut = sg->dst[s] + sg->len[s]; /* where segment s + 1 starts */
        pn->vofs[v] = sg->src[s] + (start - sg->dst[s]);
        pn->vgap[v] = 0;
        pn->vmask[v] = (VI){0};
        if (end <= cut) continue;
        if (!(s + 1 < sg->n && end <= cut + sg->len[s + 1])) return FC_PANEL_PACKED;
        pn->vgap[v] = (sg->src[s + 1] - cut) - (sg->src[s] - sg->dst[s]);
        for (int j = 0; j < VL; j++) pn->vmask[v][j] = start + j >= cut ? -1 : 0;
        split = 1;
    }
    return split ? FC_PANEL_SPLIT : FC_PANEL_INPLACE;
}

/* Bp[t][0:w] = the panel's pixels of the kc taps at off (the `valid` first ones; the rest 0, as
 * the micro-kernel reads them: keep them finite). Whole-vector copies in increasing destination
 * order: each segment's overrun (less than a vector) is overwritten by the next segment, or by
 * the next tap's row (Bp has a spare row). When every segment fits in half a vector (rows of 4
 * float32 on AVX-512, a vector across more than two of them), half vectors are copied instead:
 * whole ones would overlap and split cache lines there. */
ALWAYS_INLINE void FN(gemm_pack_panel)(const FN(segments) *sg, const T *restrict B,
                                       const fc_idx *restrict off, fc_idx kc, fc_idx w,
                                       fc_idx valid, T *restrict Bp) {
    fc_idx vsrc[FC_PANEL_MAXW], vdst[FC_PANEL_MAXW];
    int nvc = 0, half = 1;
    for (int s = 0; s < sg->n; s++) {
        half = half && sg->len[s] <= VL / 2;
        for (int v = 0; v < sg->nv[s]; v++, nvc++) {
            vsrc[nvc] = sg->src[s] + v * VL;
            vdst[nvc] = sg->dst[s] + v * VL;
        }
    }
    for (fc_idx t = 0; t < kc; t++) {
        const T *src = B + off[t];
        T *dst = Bp + t * w;
        if (half) {
            for (int i = 0; i < nvc; i++) memcpy(dst + vdst[i], src + vsrc[i], VL / 2 * sizeof(T));
        } else {
            for (int i = 0; i < nvc; i++) STOREU(dst + vdst[i], LOADU(src + vsrc[i]));
        }
        for (fc_idx q = valid; q < w; q++) dst[q] = 0;
    }
}

/* The micro-kernel over every row block of A, for the tap block [t0, t0 + kc) of the panel of nv
 * vectors at tile column col, read as `mode`. */
ALWAYS_INLINE void FN(gemm_row_blocks)(int mode, const PACKED_W *w, fc_idx t0, fc_idx kc,
                                       int nv, const FN(panel) *pn, const TILE *tile, fc_idx col) {
    const fc_idx nmb = FC_CEIL_DIV(w->M, MR);
    for (fc_idx mb = 0; mb < nmb; mb++) {
        fc_idx m0;
        int mr;
        fc_row_block(w->M, MR, mb, &m0, &mr);
        TILE blk = FN(gemm_block_tile)(tile, m0, col, t0, kc, w->TT);
        FN(ukernels)[mr - 1][nv - 1][mode](kc, w->A + (mb * w->TT + t0) * MR, pn, &blk, t0 > 0);
    }
}

static FC_TARGET void FN(gemm_tile)(const PACKED_W *restrict wp, const PIXELS *restrict pxp,
                                    fc_idx p0, fc_idx p1, const TILE *restrict out,
                                    T *restrict Bp) {
    /* local copies: the micro-kernel calls cannot then change them */
    const PACKED_W w = *wp;
    const PIXELS px = *pxp;
    TILE tile = *out;
    const fc_idx pend = FC_MIN(p1, px.P);
    /* stream the last tap block's stores where every vector store is aligned */
    tile.stream = tile.stream && ((uintptr_t)tile.C % VB == 0) &&
                  (tile.ldc * (fc_idx)sizeof(T)) % VB == 0;
    if (w.TT == 0) {
        FN(gemm_no_taps)(w.M, pend - p0, &tile);
        return;
    }
    const fc_idx KB = FN(gemm_tap_block)(&w, &px);
    if (FC_CEIL_DIV(w.M, MR) == 1) {
        FN(gemm_one_block)(&w, &px, p0, pend, KB, &tile);
        if (tile.stream) FC_SFENCE();
        return;
    }
    const int nvmax = w.M <= 4 ? FC_PANEL_VECS : NVW;
    FN(segments) sg;
    FN(panel) pn;
    for (fc_idx t0 = 0; t0 < w.TT; t0 += KB) {
        fc_idx kc = FC_MIN(KB, w.TT - t0);
        int nv;
        for (fc_idx p = p0; p < pend; p += nv * VL) {
            nv = (int)FC_MIN((fc_idx)nvmax, FC_CEIL_DIV(pend - p, (fc_idx)VL));
            const fc_idx width = nv * VL, valid = FC_MIN(width, pend - p);
            FN(gemm_segments)(&px, p, pend, width, &sg);
            const int mode = FN(gemm_panel_mode)(&sg, nv, valid, &pn);
            if (mode == FC_PANEL_PACKED) {
                FN(gemm_pack_panel)(&sg, px.B, px.off + t0, kc, width, valid, Bp);
                pn.B = Bp;
                pn.ldb = width;
            } else {
                pn.B = px.B;
                pn.off = px.off + t0;
            }
            FN(gemm_row_blocks)(mode, &w, t0, kc, nv, &pn, &tile, p - p0);
        }
    }
    if (tile.stream) FC_SFENCE();
}

/* ---------- weight-gradient kernels ---------- */

/* C[i][0:nv*VL] (= where a->fresh) += sum over images img and pixels (oh, ow) of
 * X[img*ximg + off[i] + oh*Wq + ow] * dy[img*dyimg + (oh*OW + ow)*ld + 0:nv*VL]
 * for i < tr (the operands in `a`, see DW_ARGS). X is the wide input buffer (taps broadcast), dy
 * the grad_output transposed to [pixel][channel], so the reduction over pixels runs in registers
 * and only valid pixels are visited. A lane is an output channel, summed in two levels whatever
 * the vector width: each block of sum_rows rows of an image is one chain of fused multiply-adds
 * over its pixels in order, from zero, then added to C. One chain over a whole image of
 * thousands of pixels would err about as many roundings; blocks of a few dozen pixels bound a
 * chain's, and the adds that join them are few, for a load, an add and a store per block.
 * tr and nv are compile-time constants in every specialisation (see FN(dw_kernels)). */
ALWAYS_INLINE void FN(dw_body)(const int tr, const int nv, const DW_ARGS *restrict a,
                               T *restrict C, fc_idx ldc) {
    const T *restrict X = a->X, *restrict DYT = a->dy;
    const fc_idx *restrict off = a->off;
    const fc_idx ldm = a->ld, OH = a->OH, OW = a->OW, Wq = a->Wq, rb = a->sum_rows;
    int store = a->fresh; /* the next block's sums are stored, not added to C */
    for (fc_idx img = 0; img < a->nimg; img++)
        for (fc_idx oh0 = 0; oh0 < OH; oh0 += rb) {
            VEC c0[TR], c1[TR];
            for (int i = 0; i < tr; i++) c0[i] = c1[i] = (VEC){0};
            for (fc_idx oh = oh0; oh < FC_MIN(OH, oh0 + rb); oh++) {
                const T *xrow = X + img * a->ximg + oh * Wq;
                const T *dy = DYT + img * a->dyimg + oh * OW * ldm;
                for (fc_idx ow = 0; ow < OW; ow++) {
                    VEC b0 = LOADU(dy + ow * ldm);
                    VEC b1 = nv > 1 ? LOADU(dy + ow * ldm + VL) : (VEC){0};
                    FC_UNROLL
                    for (int i = 0; i < tr; i++) {
                        T x = xrow[off[i] + ow];
                        c0[i] = FN(fma1)(x, b0, c0[i]);
                        if (nv > 1) c1[i] = FN(fma1)(x, b1, c1[i]);
                    }
                }
            }
            for (int i = 0; i < tr; i++) {
                T *ci = C + i * ldc;
                STOREU(ci, store ? c0[i] : LOADU(ci) + c0[i]);
                if (nv > 1) STOREU(ci + VL, store ? c1[i] : LOADU(ci + VL) + c1[i]);
            }
            store = 0;
        }
}

typedef void (*FN(dw_fn))(const DW_ARGS *a, T *C, fc_idx ldc);

/* One specialisation per (tr, nv): tr from 1 to TR taps, nv 1 or 2 vectors of channels. */
#if TR > 6
#define FC_DW_TAPS(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12)
#else
#define FC_DW_TAPS(X) X(1) X(2) X(3) X(4) X(5) X(6)
#endif
#define FC_DW_DEFINE(t, v)                                                                     \
    static FC_TARGET void FN(dw_kernel_##t##x##v)(const DW_ARGS *a, T *C, fc_idx ldc) {        \
        FN(dw_body)(t, v, a, C, ldc);                                                          \
    }
#define FC_DW_DEFINE_TAPS(t) FC_DW_DEFINE(t, 1) FC_DW_DEFINE(t, 2)
FC_DW_TAPS(FC_DW_DEFINE_TAPS)
/* FN(dw_kernels)[tr - 1][nv - 1] */
#define FC_DW_ENTRY(t) {FN(dw_kernel_##t##x1), FN(dw_kernel_##t##x2)},
static const FN(dw_fn) FN(dw_kernels)[TR][2] = {FC_DW_TAPS(FC_DW_ENTRY)};
#undef FC_DW_TAPS
#undef FC_DW_DEFINE
#undef FC_DW_DEFINE_TAPS
#undef FC_DW_ENTRY

/* The weight-gradient micro-kernel of tr taps (1..TR) and nv vectors of channels (1 or 2). */
static FC_TARGET void FN(dw_kernel)(int tr, int nv, const DW_ARGS *a, T *C, fc_idx ldc) {
    FN(dw_kernels)[tr - 1][nv > 1](a, C, ldc);
}

/* Depthwise weight gradient of one plane: res[t] += sum_{oh,ow valid} X[off[t] + oh*Wq + ow] *
 * dy[oh*ld + ow], vectorised along ow (the operands in `a`). dy rows are zero-padded to ld (a
 * multiple of VL) and the input lanes past OW are masked to zero, so a NaN or inf in a
 * neighbouring row never leaks in.
 *
 * The summation order is fixed by the shapes alone, the same on every path: RL partial sums
 * (RL = FC_WIDEST_VB bytes of T: 16 float32, 8 float64 -- one AVX-512 vector, two AVX2 vectors,
 * four portable ones), pixel ow of every row going to partial sum ow % RL in (oh, ow) order, then
 * the RL partials added by halving (l + RL/2 into l, and so on down to one), then added to res.
 * A sum in which a product overflows gives +-inf or NaN depending on that order; with one order
 * everywhere, every CPU gives the same. AVX-512 holds the RL partials of a tap in one vector and
 * takes 8 taps at once; AVX2 and the portable path hold them in NV vectors and take fewer taps at
 * once (the same number of accumulators). */
static FC_TARGET void FN(dw_depthwise)(fc_idx ntaps, const DW_ARGS *restrict a, T *restrict res) {
    enum { RL = FC_WIDEST_VB / (int)sizeof(T), NV = RL / VL, TB = NV == 1 ? 8 : NV == 2 ? 4 : 2 };
    _Static_assert(RL % VL == 0, "the partial sums fill whole vectors");
    const T *restrict X = a->X, *restrict DY = a->dy;
    const fc_idx *restrict off = a->off;
    const fc_idx ldy = a->ld, OH = a->OH, OW = a->OW, Wq = a->Wq;
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

/* Stride-2 column split of input rows (fc_split2, conv_isa_api.h: row h at src + h*lds, W
 * contiguous elements), in input order so that the reads stream. Every other column of the rows
 * written is zeroed, nothing past column Wq is written and nothing past a row's W elements read.
 * One pair of loads and two two-input shuffles per VL column pairs, instead of a scalar gather
 * per element; a row's last block overlaps the one before it instead of falling back to scalar
 * code. Rows are prefetched ahead, see fc_prefetch_row. */
static FC_TARGET void FN(split2_rows)(const T *restrict src, T *restrict dst,
                                      const fc_split2 *restrict sp) {
    const fc_idx lds = sp->lds, nrows = sp->nrows, W = sp->W, r0 = sp->r0, sh = sp->sh;
    const fc_idx phs = sp->phs, pws = sp->pws, qe = sp->qe, qo = sp->qo, Wq = sp->Wq;
    const int pe = sp->pe;
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

/* The VL x VL block v[0..VL) transposed in place, in registers: log2(VL) rounds of
 * perfect-shuffle interleaves (n log n two-input shuffles). */
ALWAYS_INLINE void FN(transpose_block)(VEC *v) {
    VEC w[VL];
    for (int stage = 1; stage < VL; stage *= 2) {
        for (int i = 0; i < VL / 2; i++) {
            w[2 * i] = SHUF2(v[i], v[i + VL / 2], FC_ILO);
            w[2 * i + 1] = SHUF2(v[i], v[i + VL / 2], FC_IHI);
        }
        for (int i = 0; i < VL; i++) v[i] = w[i];
    }
}

/* dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols: VL x VL blocks transposed in registers
 * (transpose_block), scalar edges: whole-vector stores, where a scalar transpose would store to
 * one cache line per element. */
static FC_TARGET void FN(transpose)(const T *restrict src, fc_idx lds, fc_idx rows, fc_idx cols,
                                    T *restrict dst, fc_idx ldd) {
    enum { n = VL };
    fc_idx r0 = 0;
    for (; r0 + n <= rows; r0 += n) {
        fc_idx c0 = 0;
        for (; c0 + n <= cols; c0 += n) {
            VEC v[n];
            for (int i = 0; i < n; i++) v[i] = LOADU(src + (r0 + i) * lds + c0);
            FN(transpose_block)(v);
            for (int i = 0; i < n; i++) STOREU(dst + (c0 + i) * ldd + r0, v[i]);
        }
        for (; c0 < cols; c0++)
            for (int i = 0; i < n; i++) dst[c0 * ldd + r0 + i] = src[(r0 + i) * lds + c0];
    }
    for (; r0 < rows; r0++)
        for (fc_idx c = 0; c < cols; c++) dst[c * ldd + r0] = src[r0 * lds + c];
}

#include "conv_cv_isa_tmpl.h"
#include "conv_dwd_isa_tmpl.h"

#undef VL
#undef FN
#undef VEC
#undef VECU
#undef VI
#undef LOADU
#undef STOREU
#undef STREAM
#undef GEMM_KC
#undef FC_PACKED_KC_BYTES
#undef FC_PANEL_MAXW
#undef PACKED_W
#undef PIXELS
#undef TILE
#undef DW_ARGS
#undef ALWAYS_INLINE
#undef SHUF2
#undef FC_EVEN
#undef FC_ODD
#undef FC_ILO
#undef FC_IHI
