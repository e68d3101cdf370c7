/* Instantiates the image-filter loops (filter_isa_tmpl.h) for one work dtype on every SIMD path:
 * filter_engine.h defines T and TN, includes this file, and T and TN are undefined at the end.
 * Each ISA instantiation is compiled for its path's features (FC_TARGET_*, fc_common.h). */
#ifdef FC_HAVE_X86_PATHS
#define ISA avx512
#define VB 64
#define FC_TARGET FC_TARGET_AVX512
#include "filter_isa_tmpl.h"
#undef ISA
#undef VB
#undef FC_TARGET

#define ISA avx2
#define VB 32
#define FC_TARGET FC_TARGET_AVX2
#include "filter_isa_tmpl.h"
#undef ISA
#undef VB
#undef FC_TARGET
#endif

#define ISA generic
#define VB 16
#define FC_TARGET
#include "filter_isa_tmpl.h"
#undef ISA
#undef VB
#undef FC_TARGET

/* The table of one item function of this dtype on each SIMD path (fc_filter_prepare picks the
 * one in use): flt_item, and the box filter's flt_box_item (filter_isa_tmpl.h's box_item). */
#ifdef FC_HAVE_X86_PATHS
#define FC_FILTER_ISA_TABLE(fn)                                                                \
    {[FC_ISA_GENERIC] = FC_CAT(FC_CAT(fn, TN), generic),                                       \
     [FC_ISA_AVX2] = FC_CAT(FC_CAT(fn, TN), avx2), [FC_ISA_AVX512] = FC_CAT(FC_CAT(fn, TN), avx512)}
#else
#define FC_FILTER_ISA_TABLE(fn) {[FC_ISA_GENERIC] = FC_CAT(FC_CAT(fn, TN), generic)}
#endif
static const fc_filter_item_fn FC_CAT(fc_filter_items, TN)[FC_ISA_COUNT] =
    FC_FILTER_ISA_TABLE(flt_item);
static const fc_filter_item_fn FC_CAT(fc_filter_box_items, TN)[FC_ISA_COUNT] =
    FC_FILTER_ISA_TABLE(flt_box_item);
#undef FC_FILTER_ISA_TABLE
#undef T
#undef TN
