/* Two-vector shuffles with constant index lists, for the ISA templates of the convolution and
 * pooling engines. The including template defines VLN (lanes per vector, as a literal) and VI
 * (the integer vector of as many lanes of T's width); it includes this once per (T, ISA), hence
 * no include guard, and #undefs these at its end.
 *   SHUF2(a, b, LIST): lane i of the result is lane LIST[i] of the 2*VLN lanes of (a, b);
 *   FC_EVEN / FC_ODD:  the even / odd lanes of (a, b)      (split column pairs);
 *   FC_ILO / FC_IHI:   a and b's low / high halves interleaved (transpose rounds).
 * clang (and GCC >= 12) spell the shuffle __builtin_shufflevector, with the indices as
 * arguments; older GCC __builtin_shuffle, with a mask vector of type VI. */
#if VLN == 2
#define FC_EVEN 0, 2
#define FC_ODD 1, 3
#define FC_ILO 0, 2
#define FC_IHI 1, 3
#elif VLN == 4
#define FC_EVEN 0, 2, 4, 6
#define FC_ODD 1, 3, 5, 7
#define FC_ILO 0, 4, 1, 5
#define FC_IHI 2, 6, 3, 7
#elif VLN == 8
#define FC_EVEN 0, 2, 4, 6, 8, 10, 12, 14
#define FC_ODD 1, 3, 5, 7, 9, 11, 13, 15
#define FC_ILO 0, 8, 1, 9, 2, 10, 3, 11
#define FC_IHI 4, 12, 5, 13, 6, 14, 7, 15
#elif VLN == 16
#define FC_EVEN 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define FC_ODD 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define FC_ILO 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define FC_IHI 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#else
#error "VLN must be 2, 4, 8 or 16"
#endif
#if defined(__clang__)
#define SHUF2(a, b, LIST) __builtin_shufflevector(a, b, LIST)
#else
#define SHUF2(a, b, LIST) __builtin_shuffle(a, b, (VI){LIST})
#endif
