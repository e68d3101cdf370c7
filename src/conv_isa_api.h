/* What the convolution passes (conv_tmpl.h) and the ISA kernels (conv_isa_tmpl.h) share: the
 * sizes both reckon with and the argument structs of the ISA entry points, which the passes call
 * through the ISA table. The structs are per dtype, not per ISA (the table holds the three ISAs'
 * functions under one type), so they are declared here once for both dtypes; the first ISA
 * instantiation includes this file. */
#ifndef FC_CONV_ISA_API_H
#define FC_CONV_ISA_API_H

#include "fc_common.h"

/* Bytes of the widest vector (AVX-512). The sizes that decide a summation order (depthwise
 * partial sums, grad_weight's row bands) are reckoned with it on every path, so that every path
 * sums in the same order. */
#define FC_WIDEST_VB 64
/* The widest pixel panel of the GEMM micro-kernels, in vectors: row blocks of at most 4 rows
 * need 4 vectors of pixels to have enough independent accumulators to hide the FMA latency. */
#define FC_PANEL_VECS 4
/* Spare elements past the end of every buffer the kernels read by whole vectors (more than a
 * widest vector of either type): a read that starts at the last computed element stays inside. */
#define FC_SLACK 64

/* Taps per sum block: each output of the forward and grad_input is the sum of its blocks' sums,
 * in order, each block one chain of FMAs from 0 over its taps in order (conv_isa_tmpl.h's
 * ukernel_body, conv_cv_isa_tmpl.h's cv_body). Fixed, not tuned to a CPU: it sets the rounding,
 * the same on every path. */
#define FC_SUM_KC 64

/* How a micro-kernel reads its pixel panel: packed into a contiguous buffer, in place in the wide
 * buffer, or in place with vectors that straddle two output rows (two loads merged by a mask). */
enum { FC_PANEL_PACKED = 0, FC_PANEL_INPLACE = 1, FC_PANEL_SPLIT = 2, FC_PANEL_MODES = 3 };

/* The activation the forward applies to its finished outputs before storing them (the
 * epilogue, gemm_tile's last tap block): fastconv._core.epilogue holds the same codes. */
enum { FC_ACT_NONE = 0, FC_ACT_RELU = 1, FC_ACT_RELU6 = 2, FC_ACT_LEAKY_RELU = 3 };

/* split2_rows' geometry: input rows h < nrows, lds elements apart, W contiguous elements each;
 * row h goes to row (h + r0) / sh of row phase (h + r0) % sh (phase planes phs apart, rows Wq
 * long); its even columns 2j to column qe + j of the column phase at offset pe*pws, its odd ones
 * to column qo + j of the other. */
typedef struct {
    fc_idx lds, nrows, W, r0, sh, phs, pws, qe, qo, Wq;
    int pe;
} fc_split2;

#define FC_CONV_ARGS(TN, T)                                                                    \
    /* The weights of gemm_tile: A packed [ceil(M/MR)][TT][MR] (fc_pack_rows), M rows of TT    \
     * taps. */                                                                                \
    typedef struct {                                                                           \
        const T *A;                                                                            \
        fc_idx M, TT;                                                                          \
    } FC_CAT(fc_packed_w, TN);                                                                 \
    /* The pixels gemm_tile reads: output pixel p of image i = p / Pimg, row oh and column ow  \
     * of that image (p % Pimg = oh*rowlen + ow), tap t, sits at                               \
     * B[off[t] + i*imgs + oh*Wq + ow]; pixels at or past P are padding. */                    \
    typedef struct {                                                                           \
        const T *B;                                                                            \
        const fc_idx *off; /* [TT] */                                                          \
        fc_idx rowlen, Wq, Pimg, imgs, P;                                                      \
    } FC_CAT(fc_pixels, TN);                                                                   \
    /* Where gemm_tile writes: C[m*ldc + p - p0], rows starting from bias[m] (or 0 when bias   \
     * is NULL); stream: non-temporal stores where every vector store is aligned; act: the     \
     * activation (FC_ACT_*) of the finished sums, slope leaky_relu's negative slope. */       \
    typedef struct {                                                                           \
        T *C;                                                                                  \
        fc_idx ldc;                                                                            \
        const T *bias;                                                                         \
        int stream;                                                                            \
        int act;                                                                               \
        T slope;                                                                               \
    } FC_CAT(fc_tile, TN);                                                                     \
    /* The weight-gradient kernels' operands: the wide input X, read at the taps' offsets off  \
     * plus oh*Wq + ow, and the grad_output dy of OH x OW pixels: pixel (oh, ow) at            \
     * dy[(oh*OW + ow)*ld] transposed (channels contiguous, dw_kernel), or at dy[oh*ld + ow]   \
     * (one channel, rows padded to ld, dw_depthwise). dw_kernel sums nimg images, in order,   \
     * image i's X at X + i*ximg and dy at dy + i*dyimg, onto its sums in C, or onto 0 where   \
     * `fresh` (C not read: the first images of an item), each block of sum_rows rows of an    \
     * image summed on its own and then added to C (dw_depthwise: one image). */               \
    typedef struct {                                                                           \
        const T *X;                                                                            \
        const fc_idx *off;                                                                     \
        fc_idx Wq;                                                                             \
        const T *dy;                                                                           \
        fc_idx ld, OH, OW;                                                                     \
        fc_idx nimg, ximg, dyimg;                                                              \
        int fresh;                                                                             \
        fc_idx sum_rows;                                                                       \
    } FC_CAT(fc_dw_args, TN);                                                                  \
    /* The channel-vectorised micro-kernel's operands (cv_kernel, conv_cv_isa_tmpl.h): np      \
     * pixels of one class, pixel i's input of tap t at X[pos[i] + off(t)]; the class's valid  \
     * taps in order, the k-th at input offset toff[k] and weight offset twoff[k] (its vector  \
     * block of channels at W + twoff[k]), in sum blocks [bstart[b], bstart[b + 1]) for        \
     * b < nsb; pixel i's running sums at C + i*ldc. first: sum block 0 is the sum's first     \
     * (it starts from bias, or from nothing when bias is NULL); act (FC_ACT_*, slope): the     \
     * last sum block ends the sum, activated before it is stored. */                         \
    typedef struct {                                                                           \
        const T *X;                                                                            \
        const fc_idx *pos, *toff, *twoff, *bstart;                                             \
        fc_idx nsb;                                                                            \
        const T *W;                                                                            \
        T *C;                                                                                  \
        fc_idx ldc;                                                                            \
        const T *bias;                                                                         \
        int first, act;                                                                        \
        T slope;                                                                               \
    } FC_CAT(fc_cv_args, TN);                                                                  \
    /* The depthwise micro-kernel's operands (dwd_kernel, conv_dwd_isa_tmpl.h): output p of    \
     * the plane's n wide positions, out[p], is the sum over its ntaps taps t of w[t] *        \
     * B[off[t] + p], from *bias (NULL: none), activated (act, slope). */                      \
    typedef struct {                                                                           \
        const T *B;                                                                            \
        const fc_idx *off;                                                                     \
        fc_idx ntaps;                                                                          \
        const T *w, *bias;                                                                     \
        int act;                                                                               \
        T slope;                                                                               \
        fc_idx n;                                                                              \
        T *out;                                                                                \
    } FC_CAT(fc_dwd_args, TN);

FC_CONV_ARGS(f32, float)
FC_CONV_ARGS(f64, double)
#undef FC_CONV_ARGS

#endif /* FC_CONV_ISA_API_H */
