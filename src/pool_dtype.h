/* Instantiates the pooling engine for one dtype: pool_engine.h defines T, TN, IT and the lane
 * counts VLN_AVX512, VLN_AVX2, VLN_GENERIC, includes this file, and everything defined here is
 * undefined again at the end. */
#if defined(__x86_64__) && defined(__GNUC__)
#define ISA avx512
#define VB 64
#define VLN VLN_AVX512
#define FC_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#include "pool_isa_tmpl.h"
#undef ISA
#undef VB
#undef VLN
#undef FC_TARGET

#define ISA avx2
#define VB 32
#define VLN VLN_AVX2
#define FC_TARGET __attribute__((target("avx2,fma")))
#include "pool_isa_tmpl.h"
#undef ISA
#undef VB
#undef VLN
#undef FC_TARGET
#endif

#define ISA generic
#define VB 16
#define VLN VLN_GENERIC
#define FC_TARGET
#include "pool_isa_tmpl.h"
#undef ISA
#undef VB
#undef VLN
#undef FC_TARGET

#include "pool_tmpl.h"
#undef T
#undef TN
#undef IT
#undef VLN_AVX512
#undef VLN_AVX2
#undef VLN_GENERIC
