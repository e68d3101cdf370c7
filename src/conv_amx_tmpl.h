/* The forward GEMM with bfloat16 products on AMX (Intel Sapphire Rapids and later), written
 * once over six tile operations and compiled twice by conv_bf16.h: with the AMX instructions
 * (AMX_NAME fc_gemm_tile_bf16_amx), and with a plain-C model of them (fc_gemm_tile_bf16_amx_model,
 * below) that the tests run on any CPU, so that everything but the instructions themselves --
 * the weight layout, the tiles' addresses and strides, the padding of the last tap pairs, the
 * epilogue -- is exercised where no AMX exists. The including file defines AMX_NAME, AMX_TARGET
 * and the TILE_* operations (on tiles numbered 0-7, all configured as 16 rows of 64 bytes),
 * which the end of this file undefines.
 *
 * A TDPBF16PS multiplies a 16 x 16 tile of bfloat16 pairs of A (rows: output channels; columns:
 * 16 tap pairs) by a 16 x 16 tile of pairs of B (rows: tap pairs; columns: pixels) into a 16 x 16
 * tile of float32 sums: the panels conv_bf16.h packs ([pair][pixel] words) are B tiles as they
 * are, 16 pairs at a time. The weights are packed [16-row block][16-pair block][row][pair]
 * (fc_bf16_pack_rows_amx), zero past the last row and pair; a block of taps is padded to whole
 * pair blocks with zero pixels, so the padding adds exact zeros. A register block is 2 x 2 tiles
 * (32 channels x 32 pixels: tiles 0-3), two A tiles (4, 5) and two B tiles (6, 7).
 *
 * The sums of a tap block leave the tiles through a scratch block of 4 tiles, then take the
 * AVX-512 kernel's epilogue (conv_bf16.h): added to the previous blocks' sums in C or to the
 * bias, activated, stored or streamed. Each output is thus the sum of its tap blocks' sums, each
 * one chain of products in tap order (as the instruction defines it): the same for any thread
 * count. */

static AMX_TARGET void AMX_NAME(const fc_packed_w_f32 *restrict wp,
                                const fc_pixels_f32 *restrict pxp, fc_idx p0, fc_idx p1,
                                const fc_tile_f32 *restrict out, float *restrict Bpf) {
    const fc_packed_w_f32 w = *wp;
    const fc_pixels_f32 px = *pxp;
    fc_tile_f32 tile = *out;
    fc_idx pend;
    if (fc_bf16_gemm_begin(&w, &px, p0, p1, &tile, &pend)) return;
    TILE_DECLARE();
    TILE_BEGIN();
    const fc_idx TP = (w.TT + 1) / 2, NPB = FC_CEIL_DIV(TP, AMX_PAIRS);
    const fc_idx nrt = FC_CEIL_DIV(w.M, AMX_ROWS); /* row tiles */
    /* tap blocks: whole pair blocks (2 * AMX_PAIRS taps), equal, at most BF_KC taps */
    const fc_idx KB = FC_ROUND_UP(FC_CEIL_DIV(w.TT, FC_CEIL_DIV(w.TT, BF_KC)), 2 * AMX_PAIRS);
    const uint32_t *A = (const uint32_t *)(const void *)w.A;
    uint32_t *Bp = (uint32_t *)(void *)Bpf;
    F5(segments) sg;
    float sums[2][2][AMX_ROWS * BF_VL] __attribute__((aligned(64)));
    for (fc_idx t0 = 0; t0 < w.TT; t0 += KB) {
        const fc_idx kc = FC_MIN(KB, w.TT - t0), kp = (kc + 1) / 2;
        const fc_idx nblk = FC_CEIL_DIV(kp, AMX_PAIRS), pb0 = t0 / (2 * AMX_PAIRS);
        int nv;
        for (fc_idx p = p0; p < pend; p += nv * BF_VL) {
            nv = (int)FC_MIN((fc_idx)2, FC_CEIL_DIV(pend - p, (fc_idx)BF_VL));
            const fc_idx width = nv * BF_VL, valid = FC_MIN(width, pend - p);
            F5(gemm_segments)(&px, p, pend, width, &sg);
            fc_bf16_pack_panel(&sg, px.B, px.off + t0, kc, width, valid, Bp);
            /* the pairs past the block's last, up to a whole pair block: zero */
            memset(Bp + kp * width, 0, (size_t)((nblk * AMX_PAIRS - kp) * width) * sizeof *Bp);
            TILE_PACKED();
            for (fc_idx rt = 0; rt < nrt; rt += 2) {
                const int two = rt + 1 < nrt;
                TILE_ZERO(0);
                TILE_ZERO(1);
                TILE_ZERO(2);
                TILE_ZERO(3);
                for (fc_idx b = 0; b < nblk; b++) {
                    const uint32_t *bt = Bp + b * AMX_PAIRS * width;
                    TILE_LOAD(4, A + (rt * NPB + pb0 + b) * AMX_TILE_WORDS, 64);
                    TILE_LOAD(6, bt, width * 4);
                    TILE_DP(0, 4, 6);
                    if (nv > 1) {
                        TILE_LOAD(7, bt + BF_VL, width * 4);
                        TILE_DP(1, 4, 7);
                    }
                    if (two) {
                        TILE_LOAD(5, A + ((rt + 1) * NPB + pb0 + b) * AMX_TILE_WORDS, 64);
                        TILE_DP(2, 5, 6);
                        if (nv > 1) TILE_DP(3, 5, 7);
                    }
                }
                TILE_STORE(0, sums[0][0], 64);
                TILE_STORE(1, sums[0][1], 64);
                TILE_STORE(2, sums[1][0], 64);
                TILE_STORE(3, sums[1][1], 64);
                for (int r = 0; r <= two; r++) {
                    const fc_idx m0 = (rt + r) * AMX_ROWS;
                    const int mr = (int)FC_MIN((fc_idx)AMX_ROWS, w.M - m0);
                    fc_tile_f32 blk = F5(gemm_block_tile)(&tile, m0, p - p0, t0, kc, w.TT);
                    fc_bf16_epilogue((const float(*)[AMX_ROWS * BF_VL])sums[r], mr, nv, &blk,
                                 t0 > 0);
                }
            }
        }
    }
    TILE_END();
    if (tile.stream) FC_SFENCE();
}

#undef AMX_NAME
#undef AMX_TARGET
#undef TILE_DECLARE
#undef TILE_BEGIN
#undef TILE_END
#undef TILE_ZERO
#undef TILE_LOAD
#undef TILE_STORE
#undef TILE_DP
#undef TILE_PACKED
