/* The forward GEMM of a float32 convolution with bfloat16 products on AVX512-BF16 (fc_bf16.h's
 * avx512_bf16 path): gemm_tile's contract (conv_isa_tmpl.h) with the weights packed in pairs of
 * taps by fc_bf16_pack_rows. conv_engine.h includes it after the float32 instantiations, whose
 * AVX-512 helpers (row segments, tiles, the activation) it reuses.
 *
 * vdpbf16ps multiplies the pairs of bfloat16 in each 32-bit lane of two vectors and adds both
 * products to the float32 lane of a third: the lanes are output pixels, as in the float32
 * kernels, and the pair is two consecutive taps. So a panel of pixels is packed as
 * Bp[tap pair][pixel] = (tap 2j, tap 2j + 1) of that pixel, rounded to bfloat16 as it is packed
 * (vcvtne2ps2bf16, ties to even), and each weight pair is broadcast from A[pair][row]. A 12 x 2
 * register block (12 rows of weights, 32 pixels) then does 24 instructions, 1536 products, per
 * pair of taps: twice the float32 kernel's work per instruction.
 *
 * Every panel is packed (the conversion must happen somewhere), once per tap block, and reused
 * by every row block of the weights: the plan uses this GEMM only for two or more row blocks.
 * Each output is the sum of its tap blocks' sums (blocks of the tap count alone), each one chain
 * of vdpbf16ps over its tap pairs in order: the same for any thread count and register block. */
#ifndef FC_CONV_BF16_H
#define FC_CONV_BF16_H

#include <math.h>

#include "fc_bf16.h"

/* Taps 2j and 2j + 1 of a row of TT taps as a pair of bfloat16 in one 32-bit word: the first in
 * the low half, the second (0 past the last tap) in the high half. */
static inline uint32_t fc_bf16_pair(const float *row, fc_idx j, fc_idx TT) {
    uint32_t lo, hi = 0;
    memcpy(&lo, row + 2 * j, sizeof lo);
    if (2 * j + 1 < TT) {
        memcpy(&hi, row + 2 * j + 1, sizeof hi);
        hi = fc_bf16_bits(hi);
    }
    return (fc_bf16_bits(lo) >> 16) | hi;
}

/* The weights for the bf16 GEMM: A[mb][pair][MR] 32-bit words, the bfloat16 of tap 2j of row
 * m0 + i in the low half and of tap 2j + 1 (0 past the last tap) in the high half, for the row
 * blocks of fc_row_block; ceil(TT / 2) * MR words per block, no more than fc_pack_rows' floats. */
static void fc_bf16_pack_rows(const float *restrict w, fc_idx M, fc_idx TT, int MR,
                              float *restrict Af) {
    uint32_t *restrict A = (uint32_t *)(void *)Af;
    const fc_idx TP = (TT + 1) / 2;
    for (fc_idx mb = 0; mb < FC_CEIL_DIV(M, MR); mb++) {
        fc_idx m0;
        int mr;
        fc_row_block(M, MR, mb, &m0, &mr);
        for (fc_idx tp = 0; tp < TP; tp++)
            for (int i = 0; i < mr; i++)
                A[(mb * TP + tp) * MR + i] = fc_bf16_pair(w + (m0 + i) * TT, tp, TT);
    }
}


#ifdef FC_HAVE_X86_PATHS
#define F5(name) FC_CAT(FC_CAT(name, f32), avx512)
#define BF_TARGET FC_TARGET_AVX512_BF16
#define BF_INLINE static inline __attribute__((always_inline)) BF_TARGET
/* The register block: BF_MR rows of weights by BF_NV vectors of pixels (16 each), or up to 4
 * vectors for blocks of at most 4 rows (which need a wide panel for enough independent sums). */
#define BF_MR 8
#define BF_NV 3
#define BF_VL 16
/* Taps per block (an even count): 128 pairs, a 2-vector panel of 16 KB (4 vectors: 32 KB) that
 * stays in L1 while every row block of the weights streams past it. */
#define BF_KC 256
/* The most pixel vectors of a panel (a row segment each, at worst). */
#define FC_PANEL_MAXW_F32 64
/* Elements (32-bit words) of fc_bf16_pack_rows' weights for this GEMM: M rows of TT taps. */
static fc_idx fc_bf16_avx512_words(fc_idx M, fc_idx TT) {
    return FC_CEIL_DIV(M, BF_MR) * BF_MR * ((TT + 1) / 2);
}

/* Tap pairs ahead that the panel packing prefetches (fc_bf16_pack_panel). */
#define BF_PREFETCH 8

/* Bp[pair][0:w] = the panel's pixels (row segments sg, `valid` of them) of taps 2j and 2j + 1 of
 * the kc taps at off, as bfloat16 pairs (the lanes past `valid`: 0). */
BF_INLINE void fc_bf16_pack_panel(const F5(segments) * sg, const float *restrict B,
                                  const fc_idx *restrict off, fc_idx kc, fc_idx w, fc_idx valid,
                                  uint32_t *restrict Bp) {
    /* word 2j of a pair vector is word j of the converted first tap, word 2j + 1 word j of the
     * second (vcvtne2ps2bf16 puts its second operand in words 0-15, its first in 16-31) */
    static const uint16_t pairs[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,
                                       21, 6,  22, 7,  23, 8,  24, 9,  25, 10, 26,
                                       11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i interleave = _mm512_loadu_si512(pairs);
    /* the vectors of the panel, once: source and destination offsets, lanes in use */
    fc_idx vsrc[FC_PANEL_MAXW_F32], vdst[FC_PANEL_MAXW_F32];
    __mmask16 vmask[FC_PANEL_MAXW_F32];
    int nvec = 0;
    for (int s = 0; s < sg->n; s++)
        for (fc_idx j = 0; j < sg->len[s]; j += BF_VL, nvec++) {
            const fc_idx left = sg->len[s] - j;
            vsrc[nvec] = sg->src[s] + j;
            vdst[nvec] = sg->dst[s] + j;
            vmask[nvec] = left >= BF_VL ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        }
    const __mmask16 tail = valid % BF_VL ? (__mmask16)(0xffffu << (valid % BF_VL)) : 0;
    const fc_idx kp = (kc + 1) / 2;
    for (fc_idx tp = 0; tp < kp; tp++) {
        const float *s0 = B + off[2 * tp];
        const int second = 2 * tp + 1 < kc;
        const float *s1 = second ? B + off[2 * tp + 1] : s0;
        /* each tap's pixels are a short run far from the previous tap's (a channel plane
         * apart): too scattered for the hardware prefetcher, and the packing has no
         * arithmetic to hide the misses behind, so the taps BF_PREFETCH pairs on are fetched
         * now */
        const fc_idx ta = 2 * FC_MIN(tp + BF_PREFETCH, kp - 1);
        const float *a0 = B + off[ta], *a1 = B + off[FC_MIN(ta + 1, kc - 1)];
        uint32_t *dst = Bp + tp * w;
        for (int k = 0; k < nvec; k++) {
            _mm_prefetch((const char *)(a0 + vsrc[k]), _MM_HINT_T0);
            _mm_prefetch((const char *)(a1 + vsrc[k]), _MM_HINT_T0);
            const __m512 x0 = _mm512_maskz_loadu_ps(vmask[k], s0 + vsrc[k]);
            const __m512 x1 = _mm512_maskz_loadu_ps(second ? vmask[k] : 0, s1 + vsrc[k]);
            const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
            _mm512_mask_storeu_epi32(dst + vdst[k], vmask[k],
                                     _mm512_permutexvar_epi16(interleave, v));
        }
        /* the lanes past the last pixel: zero (finite) */
        if (tail)
            _mm512_mask_storeu_epi32(dst + valid - valid % BF_VL, tail, _mm512_setzero_si512());
        for (fc_idx q = FC_ROUND_UP(valid, (fc_idx)BF_VL); q < w; q += BF_VL)
            _mm512_storeu_si512(dst + q, _mm512_setzero_si512());
    }
}

/* The end of a tap block for one vector y of sums of row i of the tile `out`, stored at dst: as
 * ukernel_body (conv_isa_tmpl.h) ends one, onto what the earlier blocks left there (accumulate)
 * or onto the bias, activated when the block ends the sum, stored or streamed. */
BF_INLINE void fc_bf16_finish(F5(vec) y, float *dst, const fc_tile_f32 *restrict out, int i,
                              int accumulate) {
    if (accumulate)
        y = *(const F5(vecu) *)dst + y;
    else if (out->bias)
        y = out->bias[i] + y;
    if (out->act) y = F5(activate)(y, out->act, out->slope);
    if (out->stream)
        _mm512_stream_ps(dst, (__m512)y);
    else
        *(F5(vecu) *)dst = y;
}

/* C[i][0:nv*16] (+)= the kp tap pairs of A (packed [kp][BF_MR]) times the panel (ldb words a
 * pair), for i < mr, then as ukernel_body (conv_isa_tmpl.h) ends a tap block: onto what the
 * earlier blocks left in C (accumulate) or onto the bias, activated and stored (streamed) as the
 * tile says. mr and nv are compile-time constants in every specialisation. */
BF_INLINE void fc_bf16_ukernel_body(const int mr, const int nv, fc_idx kp,
                                    const uint32_t *restrict A, const uint32_t *restrict B,
                                    fc_idx ldb, const fc_tile_f32 *restrict out, int accumulate) {
    typedef F5(vec) VEC;
    float *C = out->C;
    const fc_idx ldc = out->ldc;
    __m512 c[BF_MR][4];
    FC_UNROLL
    for (int i = 0; i < mr; i++)
        FC_UNROLL
        for (int v = 0; v < nv; v++) c[i][v] = _mm512_setzero_ps();
    for (fc_idx tp = 0; tp < kp; tp++) {
        __m512i b[4];
        FC_UNROLL
        for (int v = 0; v < nv; v++) b[v] = _mm512_loadu_si512(B + tp * ldb + v * BF_VL);
        const uint32_t *a = A + tp * BF_MR;
        FC_UNROLL
        for (int i = 0; i < mr; i++) {
            const __m512i ai = _mm512_set1_epi32((int)a[i]);
            FC_UNROLL
            for (int v = 0; v < nv; v++)
                c[i][v] = _mm512_dpbf16_ps(c[i][v], (__m512bh)ai, (__m512bh)b[v]);
        }
    }
    FC_UNROLL
    for (int i = 0; i < mr; i++)
        FC_UNROLL
        for (int v = 0; v < nv; v++)
            fc_bf16_finish((VEC)c[i][v], C + i * ldc + v * BF_VL, out, i, accumulate);
}

typedef void (*fc_bf16_ukernel_fn)(fc_idx kp, const uint32_t *A, const uint32_t *B, fc_idx ldb,
                                   const fc_tile_f32 *out, int accumulate);

#define FC_BF_DEFINE(m, v)                                                                     \
    static BF_TARGET void fc_bf16_ukernel_##m##x##v(fc_idx kp, const uint32_t *A,              \
                                                    const uint32_t *B, fc_idx ldb,             \
                                                    const fc_tile_f32 *out, int accumulate) {  \
        fc_bf16_ukernel_body(m, v, kp, A, B, ldb, out, accumulate);                            \
    }
#define FC_BF_ROW2(m) FC_BF_DEFINE(m, 1) FC_BF_DEFINE(m, 2)
#define FC_BF_ROW4(m) FC_BF_ROW2(m) FC_BF_DEFINE(m, 3) FC_BF_DEFINE(m, 4)
#define FC_BF_ROW3(m) FC_BF_ROW2(m) FC_BF_DEFINE(m, 3)
/* every row count up to BF_MR with 1 to BF_NV vectors of pixels, up to 4 for at most 4 rows */
#if BF_MR == 8 && BF_NV == 3
#define FC_BF_BLOCKS(ROWN, ROW4) \
    ROW4(1) ROW4(2) ROW4(3) ROW4(4) ROWN(5) ROWN(6) ROWN(7) ROWN(8)
#define FC_BF_ROWN FC_BF_ROW3
#define FC_BF_ENTRYN FC_BF_ENTRY3
#elif BF_MR == 12 && BF_NV == 2
#define FC_BF_BLOCKS(ROWN, ROW4)                                                               \
    ROW4(1) ROW4(2) ROW4(3) ROW4(4) ROWN(5) ROWN(6) ROWN(7) ROWN(8) ROWN(9) ROWN(10) ROWN(11) \
        ROWN(12)
#define FC_BF_ROWN FC_BF_ROW2
#define FC_BF_ENTRYN FC_BF_ENTRY2
#else
#error "no micro-kernel table for this BF_MR x BF_NV"
#endif
FC_BF_BLOCKS(FC_BF_ROWN, FC_BF_ROW4)
#define FC_BF_ENTRY2(m) [m - 1] = {fc_bf16_ukernel_##m##x1, fc_bf16_ukernel_##m##x2},
#define FC_BF_ENTRY3(m) \
    [m - 1] = {fc_bf16_ukernel_##m##x1, fc_bf16_ukernel_##m##x2, fc_bf16_ukernel_##m##x3},
#define FC_BF_ENTRY4(m)                                                                        \
    [m - 1] = {fc_bf16_ukernel_##m##x1, fc_bf16_ukernel_##m##x2, fc_bf16_ukernel_##m##x3,     \
               fc_bf16_ukernel_##m##x4},
static const fc_bf16_ukernel_fn fc_bf16_ukernels[BF_MR][4] = {
    FC_BF_BLOCKS(FC_BF_ENTRYN, FC_BF_ENTRY4)};
#undef FC_BF_DEFINE
#undef FC_BF_ROW2
#undef FC_BF_ROW4
#undef FC_BF_BLOCKS
#undef FC_BF_ENTRY2
#undef FC_BF_ENTRY3
#undef FC_BF_ENTRYN
#undef FC_BF_ROW3
#undef FC_BF_ROWN
#undef FC_BF_ENTRY4

/* The start of a bfloat16 GEMM (as gemm_tile's): the end of its pixels (pend), the tile's
 * stores streamed only where every vector store is aligned; with no taps, the tile is the bias
 * (or 0), activated, and the GEMM is done (1). */
BF_INLINE int fc_bf16_gemm_begin(const fc_packed_w_f32 *w, const fc_pixels_f32 *px, fc_idx p0,
                                 fc_idx p1, fc_tile_f32 *tile, fc_idx *pend) {
    *pend = FC_MIN(p1, px->P);
    tile->stream = tile->stream && ((uintptr_t)tile->C % 64 == 0) &&
                   (tile->ldc * (fc_idx)sizeof(float)) % 64 == 0;
    if (w->TT) return 0;
    F5(gemm_no_taps)(w->M, *pend - p0, tile);
    return 1;
}

/* gemm_tile (conv_isa_tmpl.h) with bfloat16 products: the same operands, A packed by
 * fc_bf16_pack_rows, Bp the same workspace (a tap block of the widest panel takes BF_KC / 2 *
 * 64 words, within gemm_tile's buffer). */
static BF_TARGET void fc_gemm_tile_bf16_avx512(const fc_packed_w_f32 *restrict wp,
                                               const fc_pixels_f32 *restrict pxp, fc_idx p0,
                                               fc_idx p1, const fc_tile_f32 *restrict out,
                                               float *restrict Bpf) {
    const fc_packed_w_f32 w = *wp;
    const fc_pixels_f32 px = *pxp;
    fc_tile_f32 tile = *out;
    fc_idx pend;
    if (fc_bf16_gemm_begin(&w, &px, p0, p1, &tile, &pend)) return;
    const fc_idx TP = (w.TT + 1) / 2, nmb = FC_CEIL_DIV(w.M, BF_MR);
    const fc_idx KB = FC_ROUND_UP(FC_CEIL_DIV(w.TT, FC_CEIL_DIV(w.TT, BF_KC)), 2);
    const int nvmax = w.M <= 4 ? 4 : BF_NV;
    const uint32_t *A = (const uint32_t *)(const void *)w.A;
    uint32_t *Bp = (uint32_t *)(void *)Bpf;
    F5(segments) sg;
    for (fc_idx t0 = 0; t0 < w.TT; t0 += KB) {
        const fc_idx kc = FC_MIN(KB, w.TT - t0);
        int nv;
        for (fc_idx p = p0; p < pend; p += nv * BF_VL) {
            nv = (int)FC_MIN((fc_idx)nvmax, FC_CEIL_DIV(pend - p, (fc_idx)BF_VL));
            const fc_idx width = nv * BF_VL, valid = FC_MIN(width, pend - p);
            F5(gemm_segments)(&px, p, pend, width, &sg);
            fc_bf16_pack_panel(&sg, px.B, px.off + t0, kc, width, valid, Bp);
            for (fc_idx mb = 0; mb < nmb; mb++) {
                fc_idx m0;
                int mr;
                fc_row_block(w.M, BF_MR, mb, &m0, &mr);
                fc_tile_f32 blk = F5(gemm_block_tile)(&tile, m0, p - p0, t0, kc, w.TT);
                fc_bf16_ukernels[mr - 1][nv - 1]((kc + 1) / 2, A + (mb * TP + t0 / 2) * BF_MR,
                                                 Bp, width, &blk, t0 > 0);
            }
        }
    }
    if (tile.stream) FC_SFENCE();
}
/* ---------- AMX (conv_amx_tmpl.h) ---------- */
#define AMX_ROWS 16  /* rows of a tile: output channels */
#define AMX_PAIRS 16 /* tap pairs of an A tile's row (64 bytes) */
#define AMX_TILE_WORDS (AMX_ROWS * AMX_PAIRS)

/* Elements (32-bit words) of fc_bf16_pack_rows_amx's weights for M rows of TT taps. */
static fc_idx fc_bf16_amx_words(fc_idx M, fc_idx TT) {
    return FC_CEIL_DIV(M, AMX_ROWS) * FC_CEIL_DIV((TT + 1) / 2, AMX_PAIRS) * AMX_TILE_WORDS;
}

/* The weights as A tiles: A[row tile][pair block][row][pair], the pair words of
 * fc_bf16_pair, 0 past the last row and the last pair. MR is AMX_ROWS. */
static void fc_bf16_pack_rows_amx(const float *restrict w, fc_idx M, fc_idx TT, int MR,
                                  float *restrict Af) {
    (void)MR;
    uint32_t *restrict A = (uint32_t *)(void *)Af;
    const fc_idx TP = (TT + 1) / 2, NPB = FC_CEIL_DIV(TP, AMX_PAIRS);
    memset(A, 0, (size_t)fc_bf16_amx_words(M, TT) * sizeof *A);
    for (fc_idx m = 0; m < M; m++)
        for (fc_idx tp = 0; tp < TP; tp++) {
            const fc_idx rt = m / AMX_ROWS, pb = tp / AMX_PAIRS;
            A[(rt * NPB + pb) * AMX_TILE_WORDS + (m % AMX_ROWS) * AMX_PAIRS + tp % AMX_PAIRS] =
                fc_bf16_pair(w + m * TT, tp, TT);
        }
}

/* Rows 0..mr-1 of a 2-tile-wide block of sums (sums[v]: 16 rows of 16 pixels, rows 64 bytes
 * apart) finished into the tile `out` (fc_bf16_finish). */
BF_INLINE void fc_bf16_epilogue(const float (*sums)[AMX_ROWS * BF_VL], int mr, int nv,
                                const fc_tile_f32 *restrict out, int accumulate) {
    for (int i = 0; i < mr; i++)
        for (int v = 0; v < nv; v++)
            fc_bf16_finish(*(const F5(vec) *)(sums[v] + i * BF_VL),
                           out->C + i * out->ldc + v * BF_VL, out, i, accumulate);
}

/* The model of the tile operations: 8 tiles of 16 x 16 words in memory, and TDPBF16PS as the
 * Intel SDM defines it -- for each row m, pair k, column n: c += a[2k] * b[2k], then
 * c += a[2k+1] * b[2k+1], each rounded to nearest even (the products are exact), subnormal
 * inputs as zero and subnormal results flushed. */
typedef struct {
    uint32_t tile[8][AMX_ROWS][16];
} fc_amx_model;

static inline float fc_amx_model_daz(uint32_t bf16) {
    uint32_t u = (bf16 & 0x7f80u) ? bf16 << 16 : (bf16 & 0x8000u) << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float fc_amx_model_ftz(float f) {
    return fabsf(f) < 0x1p-126f ? copysignf(0.0f, f) : f;
}

static void fc_amx_model_dp(fc_amx_model *t, int c, int a, int b) {
    for (int m = 0; m < AMX_ROWS; m++)
        for (int k = 0; k < AMX_PAIRS; k++)
            for (int n = 0; n < 16; n++) {
                const uint32_t aw = t->tile[a][m][k], bw = t->tile[b][k][n];
                float acc;
                memcpy(&acc, &t->tile[c][m][n], sizeof acc);
                acc = fc_amx_model_ftz(fc_fmaf(fc_amx_model_daz(aw & 0xffffu),
                                               fc_amx_model_daz(bw & 0xffffu), acc));
                acc = fc_amx_model_ftz(fc_fmaf(fc_amx_model_daz(aw >> 16),
                                               fc_amx_model_daz(bw >> 16), acc));
                memcpy(&t->tile[c][m][n], &acc, sizeof acc);
            }
}

static void fc_amx_model_load(fc_amx_model *t, int i, const void *p, fc_idx stride) {
    for (int r = 0; r < AMX_ROWS; r++) memcpy(t->tile[i][r], (const char *)p + r * stride, 64);
}

static void fc_amx_model_store(const fc_amx_model *t, int i, void *p, fc_idx stride) {
    for (int r = 0; r < AMX_ROWS; r++) memcpy((char *)p + r * stride, t->tile[i][r], 64);
}

#define AMX_NAME fc_gemm_tile_bf16_amx_model
#define AMX_TARGET BF_TARGET
#define TILE_DECLARE() fc_amx_model tiles_
#define TILE_BEGIN() ((void)0)
#define TILE_END() ((void)0)
#define TILE_ZERO(i) memset(tiles_.tile[i], 0, sizeof tiles_.tile[i])
#define TILE_LOAD(i, p, stride) fc_amx_model_load(&tiles_, i, p, stride)
#define TILE_STORE(i, p, stride) fc_amx_model_store(&tiles_, i, p, stride)
#define TILE_DP(c, a, b) fc_amx_model_dp(&tiles_, c, a, b)
#define TILE_PACKED() ((void)0)
#include "conv_amx_tmpl.h"

/* The tile configuration (palette 1): the 8 tiles, each 16 rows of 64 bytes. In read-only
 * memory, so that LDTILECFG reads all 64 bytes as written. */
typedef struct __attribute__((aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} fc_amx_config;
_Static_assert(sizeof(fc_amx_config) == 64, "LDTILECFG reads 64 bytes");
static const fc_amx_config fc_amx_tiles = {1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64},
                                           {16, 16, 16, 16, 16, 16, 16, 16}};

#define AMX_NAME fc_gemm_tile_bf16_amx
#define AMX_TARGET FC_TARGET_AMX
#define TILE_DECLARE() ((void)0)
#define TILE_BEGIN() _tile_loadconfig(&fc_amx_tiles)
#define TILE_END() _tile_release()
#define TILE_ZERO(i) _tile_zero(i)
#if defined(_WIN32) && !defined(__clang__)
/* GCC's <amxtileintrin.h> passes the row stride as a long, 32 bits on Windows, and the assembler
 * refuses a 32-bit index register: its instructions, with a 64-bit stride. */
#define TILE_LOAD(i, p, stride)                                                             \
    __asm__ volatile("{tileloadd\t(%0,%1,1), %%tmm" #i "|tileloadd\t%%tmm" #i ", [%0+%1*1]}" \
                     ::"r"((const void *)(p)), "r"((int64_t)(stride)))
#define TILE_STORE(i, p, stride)                                                              \
    __asm__ volatile("{tilestored\t%%tmm" #i ", (%0,%1,1)|tilestored\t[%0+%1*1], %%tmm" #i "}" \
                     ::"r"((void *)(p)), "r"((int64_t)(stride))                                \
                     : "memory")
#else
#define TILE_LOAD(i, p, stride) _tile_loadd(i, p, stride)
#define TILE_STORE(i, p, stride) _tile_stored(i, p, stride)
#endif
#define TILE_DP(c, a, b) _tile_dpbf16ps(c, a, b)
/* GCC's tile loads do not tell the compiler that they read memory: a compiler barrier after
 * the packing, so that its stores are all issued before the tiles load the panel */
#define TILE_PACKED() __asm__ volatile("" ::: "memory")
#include "conv_amx_tmpl.h"

#undef F5
#undef BF_TARGET
#undef BF_INLINE
#endif /* FC_HAVE_X86_PATHS */

#endif /* FC_CONV_BF16_H */
