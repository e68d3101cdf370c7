/* The channel-vectorised micro-kernel of the forward (conv_cv_tmpl.h), included by
 * conv_isa_tmpl.h inside each (dtype, ISA) instantiation (T, VL, VEC, FN, FC_TARGET, LOADU,
 * STOREU, ALWAYS_INLINE and fma1 are its).
 *
 * gemm_tile's vectors run along output pixels and broadcast weights. On a small output plane
 * (4x4, 7x7) a vector of pixels spans rows whose taps differ: border pixels read the padding,
 * so every pixel computes every tap, and most of a plane is border. Here a vector holds CV_NV *
 * VL output channels of one pixel and the pixel's input is broadcast instead, so each pixel
 * can skip the taps that would read padding: the pixels of one class (the same valid rows and
 * columns of the kernel) share the list of its valid taps. A skipped tap's product with a finite
 * weight is a zero, which leaves a sum started from +0 unchanged; each output is the same chain
 * of fused multiply-adds, in the same sum blocks, as in ukernel_body (the caller deals with
 * non-finite weights, whose products with the padding are NaN). */

/* Vectors of output channels per register block (a channel block is CV_NV * VL channels), and
 * the most pixels per register block: CV_NP x CV_NV accumulators and CV_NV weight vectors in
 * the 32 registers of AVX-512, the 16 of the others. */
#if VB == 64
#define CV_NV 4
#else
#define CV_NV 2
#endif
#define CV_NP 6
#define CV_ARGS FC_CAT(fc_cv_args, TN)

/* C[i][0:CV_NV*VL] for the np pixels: the class's sum blocks 0..nsb-1, each one chain of fused
 * multiply-adds over its valid taps in order, from 0, then added to what the blocks before it
 * left in C, or to the bias for the sum's first block (kept as it is without a bias); the last
 * block activated as ukernel_body does when a->act says the sum ends there. */
ALWAYS_INLINE void FN(cv_body)(const int np, const CV_ARGS *restrict a) {
    const T *restrict X = a->X;
    const T *restrict W = a->W;
    const fc_idx *restrict toff = a->toff, *restrict twoff = a->twoff;
    T *restrict C = a->C;
    const fc_idx ldc = a->ldc;
    /* each pixel's base: its input of tap k at xb[i][toff[k]] (the base itself may lie in the
     * padding, outside the input: only valid taps are added to it) */
    const T *xb[CV_NP];
    FC_UNROLL
    for (int i = 0; i < np; i++) xb[i] = X + a->pos[i];
    for (fc_idx b = 0; b < a->nsb; b++) {
        VEC c[CV_NP][CV_NV];
        FC_UNROLL
        for (int i = 0; i < np; i++)
            FC_UNROLL
            for (int v = 0; v < CV_NV; v++) c[i][v] = (VEC){0};
        for (fc_idx k = a->bstart[b]; k < a->bstart[b + 1]; k++) {
            const fc_idx o = toff[k];
            const T *w = W + twoff[k];
            VEC wv[CV_NV];
            FC_UNROLL
            for (int v = 0; v < CV_NV; v++) wv[v] = LOADU(w + v * VL);
            FC_UNROLL
            for (int i = 0; i < np; i++) {
                const T x = xb[i][o];
                FC_UNROLL
                for (int v = 0; v < CV_NV; v++) c[i][v] = FN(fma1)(x, wv[v], c[i][v]);
            }
        }
        if (b > 0 || !a->first) {
            FC_UNROLL
            for (int i = 0; i < np; i++)
                FC_UNROLL
                for (int v = 0; v < CV_NV; v++) c[i][v] = LOADU(C + i * ldc + v * VL) + c[i][v];
        } else if (a->bias) {
            FC_UNROLL
            for (int i = 0; i < np; i++)
                FC_UNROLL
                for (int v = 0; v < CV_NV; v++) c[i][v] = LOADU(a->bias + v * VL) + c[i][v];
        }
        if (a->act && b + 1 == a->nsb) {
            FC_UNROLL
            for (int i = 0; i < np; i++)
                FC_UNROLL
                for (int v = 0; v < CV_NV; v++) c[i][v] = FN(activate)(c[i][v], a->act, a->slope);
        }
        FC_UNROLL
        for (int i = 0; i < np; i++)
            FC_UNROLL
            for (int v = 0; v < CV_NV; v++) STOREU(C + i * ldc + v * VL, c[i][v]);
    }
}

typedef void (*FN(cv_fn))(const CV_ARGS *a);
#define FC_CV_DEFINE(np) \
    static FC_TARGET void FN(cv_kernel_##np)(const CV_ARGS *a) { FN(cv_body)(np, a); }
FC_CV_DEFINE(1)
FC_CV_DEFINE(2)
FC_CV_DEFINE(3)
FC_CV_DEFINE(4)
FC_CV_DEFINE(5)
FC_CV_DEFINE(6)
#undef FC_CV_DEFINE
static const FN(cv_fn) FN(cv_kernels)[CV_NP] = {FN(cv_kernel_1), FN(cv_kernel_2), FN(cv_kernel_3),
                                               FN(cv_kernel_4), FN(cv_kernel_5), FN(cv_kernel_6)};

/* The first n (0 < n < VL) elements at p, the other lanes 0, reading nothing past p[n - 1]. */
ALWAYS_INLINE VEC FN(cv_load_first)(const T *p, fc_idx n) {
#if defined(__x86_64__) && defined(__GNUC__) && VB == 64
    const __mmask16 m = (__mmask16)((1u << n) - 1);
    if (sizeof(T) == 4) return (VEC)_mm512_maskz_loadu_ps(m, (const float *)p);
    return (VEC)_mm512_maskz_loadu_pd((__mmask8)m, (const double *)p);
#elif defined(__x86_64__) && defined(__GNUC__) && VB == 32
    VI lane, m;
    for (int l = 0; l < VL; l++) lane[l] = l;
    m = lane < (IT)n; /* all ones where l < n */
    if (sizeof(T) == 4) return (VEC)_mm256_maskload_ps((const float *)p, (__m256i)m);
    return (VEC)_mm256_maskload_pd((const double *)p, (__m256i)m);
#else
    VEC v = {0};
    for (fc_idx l = 0; l < n; l++) v[l] = p[l];
    return v;
#endif
}

/* Wp[t*ldw + j] = w[j*lds + t] for t < nt, j < nk (nk <= ldw rows of nt weights each, lds
 * apart) and 0 for nk <= j < ldw: VL x VL blocks transposed in registers as FN(transpose) does,
 * scalar edges. Returns whether any weight read is inf or NaN (x - x is 0 for every finite x),
 * checked on the vectors as they pass: one read of the weights for both. */
static FC_TARGET int FN(cv_pack)(const T *restrict w, fc_idx lds, fc_idx nt, fc_idx nk,
                                 T *restrict Wp, fc_idx ldw) {
    enum { n = VL };
    const VEC zero = {0};
    VI bad = {0};
    const fc_idx tv = nt / n * n; /* weights of whole blocks */
    /* a block of n rows at a time along all its weights: n read streams, which the prefetchers
     * follow (all ldw rows at once would be more streams than they track) */
    for (fc_idx j0 = 0; j0 < ldw; j0 += n)
        for (fc_idx t0 = 0; t0 < tv; t0 += n) {
            VEC v[n];
            for (int i = 0; i < n; i++) {
                v[i] = j0 + i < nk ? LOADU(w + (j0 + i) * lds + t0) : zero;
                bad |= (VI)(v[i] - v[i] != zero);
            }
            FN(transpose_block)(v);
            for (int i = 0; i < n; i++) STOREU(Wp + (t0 + i) * ldw + j0, v[i]);
        }
    if (tv == 0 && nt > 0) { /* rows shorter than a vector (grad_input's R x S): each row
                                * loaded by a masked load, the block transposed, its first nt
                                * rows stored */
        for (fc_idx j0 = 0; j0 < ldw; j0 += n) {
            VEC v[n];
            for (int i = 0; i < n; i++) {
                v[i] = j0 + i < nk ? FN(cv_load_first)(w + (j0 + i) * lds, nt) : zero;
                bad |= (VI)(v[i] - v[i] != zero);
            }
            FN(transpose_block)(v);
            for (fc_idx t = 0; t < nt; t++) STOREU(Wp + t * ldw + j0, v[t]);
        }
        int nonfinite = 0;
        for (int l = 0; l < VL; l++) nonfinite |= bad[l] != 0;
        return nonfinite;
    }
    int nonfinite = 0;
    for (int l = 0; l < VL; l++) nonfinite |= bad[l] != 0;
    for (fc_idx j = 0; j < ldw; j++)
        for (fc_idx t = tv; t < nt; t++) {
            T x = j < nk ? w[j * lds + t] : (T)0;
            nonfinite |= x - x != 0;
            Wp[t * ldw + j] = x;
        }
    return nonfinite;
}

/* The register blocks of np (1..CV_NP) pixels, for the ISA table (conv_tmpl.h). */
static FC_TARGET void FN(cv_kernel)(int np, const CV_ARGS *a) { FN(cv_kernels)[np - 1](a); }
static const int FN(isa_cv_nv) = CV_NV, FN(isa_cv_np) = CV_NP;

#undef CV_NV
#undef CV_NP
#undef CV_ARGS
