/* Instantiates the convolution engine for one dtype: conv_engine.h defines T, TN, IT (the integer
 * type of T's width), the lane counts VLN_AVX512, VLN_AVX2, VLN_GENERIC, and MR_AVX512,
 * NVW_AVX512, includes this file, and everything defined here is undefined again at the end.
 * Each ISA instantiation is compiled for its path's features (FC_TARGET_*, fc_common.h). */
#ifdef FC_HAVE_X86_PATHS
#define ISA avx512
#define VB 64
#define VLN VLN_AVX512
#define MR MR_AVX512
#define NVW NVW_AVX512
#define TR 12
#define FC_TARGET FC_TARGET_AVX512
#include "conv_isa_tmpl.h"
#undef ISA
#undef VB
#undef VLN
#undef MR
#undef NVW
#undef TR
#undef FC_TARGET

#define ISA avx2
#define VB 32
#define VLN VLN_AVX2
#define MR 6
#define NVW 2
#define TR 6
#define FC_TARGET FC_TARGET_AVX2
#include "conv_isa_tmpl.h"
#undef ISA
#undef VB
#undef VLN
#undef MR
#undef NVW
#undef TR
#undef FC_TARGET
#endif

#define ISA generic
#define VB 16
#define VLN VLN_GENERIC
#define MR 6
#define NVW 2
#define TR 6
#define FC_TARGET
#include "conv_isa_tmpl.h"
#undef ISA
#undef VB
#undef VLN
#undef MR
#undef NVW
#undef TR
#undef FC_TARGET

#include "conv_tmpl.h"
#include "conv_job_tmpl.h"
#undef T
#undef TN
#undef IT
#undef VLN_AVX512
#undef VLN_AVX2
#undef VLN_GENERIC
#undef MR_AVX512
#undef NVW_AVX512
