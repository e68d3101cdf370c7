/* Adaptive pooling (torch's adaptive_avg_pool2d / adaptive_max_pool2d) on NCHW planes: output
 * (oh, ow) pools the bin of input rows [hs[oh], he[oh]) and columns [ws[ow], we[ow]), torch's
 * start = floor(oh * H / OH), end = ceil((oh + 1) * H / OH). The Python layer computes the bin
 * tables (exact integers) and, for the average backward, the output rows whose bins hold each
 * input row; neighbouring bins may overlap.
 *
 * Work items write disjoint outputs, each in a fixed order, so any schedule and any thread count
 * give the same bits:
 *   forward       (plane, block of output rows): max -- torch's loop (ties go to the first
 *                 position in row-major order, the last NaN wins); average -- the bin's sum in
 *                 row-major order, then / kh / kw (torch's arithmetic); the global average (a 1x1
 *                 output, torch's mean) -- the plane's sum in FC_APOOL_LANES fixed partial sums,
 *                 added by halving, then / (H * W);
 *   avg backward  (plane, block of input rows): each row zeroed, then g / kh / kw added over the
 *                 bin's columns for every output (oh, ow) whose bin holds it, oh then ow
 *                 ascending: torch's scatter order for every element (the global case: g / (H*W),
 *                 as the mean's backward).
 * The max backward routes through the indices: pool_engine.h's, shared with max_pool2d.
 *
 * The global sum is the one vector loop: partial sum k takes the elements p = h * W + w with
 * p % FC_APOOL_LANES == k, in increasing p, whatever the strides (64 bytes of lanes: one AVX-512
 * vector, two AVX2, four SSE2 ones), so every SIMD path and the strided loop give the same bits.
 */
#ifndef FC_POOL_ADAPTIVE_H
#define FC_POOL_ADAPTIVE_H

#include <math.h>

#include "fc_common.h"
#include "pool_engine.h" /* FC_POOL_MAX, FC_POOL_FORWARD, ... */

typedef struct fc_apool_job fc_apool_job;
typedef int (*fc_apool_item_fn)(const fc_apool_job *j, fc_idx item);

struct fc_apool_job {
    /* filled by the caller (FC_POOL_MAX / FC_POOL_AVG, FC_POOL_FORWARD / FC_POOL_BACKWARD) */
    int pass, op, f64;
    fc_idx N, C, H, W, OH, OW;
    const int64_t *hs, *he, *ws, *we; /* the bins: OH row and OW column ranges */
    const int64_t *ohlo, *ohhi;       /* avg backward: bins [ohlo[ih], ohhi[ih]) hold row ih */
    const void *src;                  /* forward: input; backward: grad_output */
    fc_idx ss[4];                     /* element strides of src (any sign) */
    void *dst;                        /* forward: (N,C,OH,OW); backward: (N,C,H,W); C-contiguous */
    int64_t *dst_ind;                 /* max forward: indices (N,C,OH,OW) C-contiguous, or NULL */
    /* set by fc_apool_prepare */
    fc_idx nblocks, rows_per_item;
    fc_apool_item_fn item;
    /* the global average's sum on the SIMD path in use (of the job's dtype) */
    float (*gsum_f32)(const float *x, fc_idx n);
    double (*gsum_f64)(const double *x, fc_idx n);
};

/* Bytes of the global sum's partial sums: the widest vector (AVX-512). */
#define FC_APOOL_LANE_BYTES 64

#define T float
#define TN f32
#include "pool_adaptive_tmpl.h"
#define T double
#define TN f64
#include "pool_adaptive_tmpl.h"

/* When planes are fewer than this many per thread, split them into blocks of rows. */
enum { FC_APOOL_ITEMS_PER_THREAD = 4, FC_APOOL_CHUNKS_PER_THREAD = 8 };

static int fc_apool_prepare(fc_apool_job *j, int nthreads, fc_schedule *s) {
    const int level = fc_isa_level;
    const int global = j->OH == 1 && j->OW == 1;
    const fc_idx planes = j->N * j->C;
    const fc_idx rows = j->pass == FC_POOL_FORWARD ? j->OH : j->H;
    fc_idx want = nthreads > 1 ? FC_APOOL_ITEMS_PER_THREAD * (fc_idx)nthreads : 1;
    fc_idx nb = planes >= want ? 1 : FC_CEIL_DIV(want, FC_MAX(planes, 1));
    nb = FC_MIN(nb, rows);
    j->rows_per_item = FC_CEIL_DIV(rows, nb);
    j->nblocks = FC_CEIL_DIV(rows, j->rows_per_item);
    if (j->f64) {
        j->gsum_f64 = fc_apool_gsums_f64[level];
        j->item = j->pass == FC_POOL_BACKWARD ? fc_apool_avg_bwd_f64
                  : j->op == FC_POOL_MAX      ? fc_apool_max_fwd_f64
                  : global                    ? fc_apool_global_fwd_f64
                                              : fc_apool_avg_fwd_f64;
    } else {
        j->gsum_f32 = fc_apool_gsums_f32[level];
        j->item = j->pass == FC_POOL_BACKWARD ? fc_apool_avg_bwd_f32
                  : j->op == FC_POOL_MAX      ? fc_apool_max_fwd_f32
                  : global                    ? fc_apool_global_fwd_f32
                                              : fc_apool_avg_fwd_f32;
    }
    s->nitems = planes * j->nblocks;
    s->nreduce = 0;
    s->chunk = FC_MAX((fc_idx)1, s->nitems / (FC_APOOL_CHUNKS_PER_THREAD * (fc_idx)nthreads));
    return 0;
}

static int fc_apool_task_prepare(void *job, int nthreads, fc_schedule *s) {
    return fc_apool_prepare((fc_apool_job *)job, nthreads, s);
}
static int fc_apool_task_item(void *job, fc_idx i) {
    const fc_apool_job *j = (const fc_apool_job *)job;
    return j->item(j, i);
}
static void fc_apool_task_finish(void *job) { (void)job; /* no tables: Python owns them */ }

static const fc_task fc_apool_task = {fc_apool_task_prepare, fc_task_no_items,
                                      fc_apool_task_item, fc_task_no_items,
                                      fc_apool_task_finish};

#endif /* FC_POOL_ADAPTIVE_H */
