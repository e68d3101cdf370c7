/* fastconv's pooling engine: max and average pool2d, forward and backward, on NCHW planes.
 *
 * Work items are independent and write disjoint outputs, so any schedule gives bitwise the same
 * result:
 *   forward        (plane, block of output rows)  -- vector path (pool_isa_tmpl.h) or scalar;
 *   avg backward   (plane, block of input rows)   -- vector scatter into a row buffer;
 *   max backward   plane                          -- zero the plane, route each gradient to its
 *                                                    cached index, in output row-major order.
 * Blocks only split planes when there are too few planes for the threads or a plane's row
 * buffer would not fit in the cache budget; a block never changes any element's arithmetic.
 *
 * A job runs the item function of the SIMD path in use (fc_pool_isa, from the table that
 * fc_kernels.h resolves once per set_isa for both engines); the float32 max forward with indices
 * keeps 32-bit lane indices and falls back to the scalar path for planes that do not fit them.
 */
#ifndef FC_POOL_ENGINE_H
#define FC_POOL_ENGINE_H

#include <math.h>

#include "fc_common.h"

enum { FC_POOL_MAX = 0, FC_POOL_AVG = 1 };
enum { FC_POOL_FORWARD = 0, FC_POOL_BACKWARD = 1 };
/* The most lanes of any path's vectors (float32 on AVX-512): output rows and the phase rows of
 * the row buffer are padded to a multiple of it, so every path's vector loops run over whole
 * vectors. */
enum { FC_POOL_VL_MAX = 16 };

typedef struct fc_pool_job fc_pool_job;
typedef int (*fc_pool_item_fn)(const fc_pool_job *j, fc_idx item);

/* The item functions of one SIMD path for one dtype (pool_dtype.h). */
typedef struct {
    fc_pool_item_fn forward, avg_backward;        /* the path's vector code */
    fc_pool_item_fn forward_scalar, max_backward; /* the same on every path */
} fc_pool_isa;

struct fc_pool_job {
    /* filled by the caller */
    int pass, op, f64;
    int scalar;                      /* force the scalar forward path (tests) */
    fc_idx N, C, H, W, OH, OW;      /* input and output sizes */
    fc_idx kh, kw, sh, sw, ph, pw, dh, dw;
    int count_include_pad;
    fc_idx divisor;                  /* divisor_override, 0 if none */
    const void *src;                 /* forward: input; backward: grad_output */
    fc_idx ss[4];                    /* element strides of src (any sign) */
    const int64_t *ind;              /* max backward: indices */
    fc_idx is[4];                    /* element strides of ind */
    void *dst;                       /* forward: (N,C,OH,OW); backward: (N,C,H,W); C-contiguous */
    int64_t *dst_ind;                /* max forward: indices (N,C,OH,OW) C-contiguous, or NULL */
    /* set by fc_pool_prepare */
    fc_idx nitems, nblocks, rows_per_item;
    fc_idx OWP;                      /* OW rounded up to FC_POOL_VL_MAX (table length) */
    fc_idx LQ, LQS;                  /* phase length in use, phase stride of the row buffer */
    fc_idx *qoff;                    /* kw tap offsets into a phase-split row */
    fc_idx *rowtaps;                 /* forward: [i_lo, i_hi) of the in-bounds window rows of oh */
    fc_idx full_lo, full_hi;         /* forward: the output rows whose window rows are all inside */
    fc_idx *qrange;                  /* avg backward: [m_lo, m_hi) of the real columns of phase q */
    fc_idx *qtaps;                   /* avg backward: the taps ceil((kw - q) / sw) of phase q */
    fc_idx *rowsrc;                  /* avg backward: first output row and count of input row ih */
    fc_idx GP, LG;                   /* avg backward: zeros before / length of a gradient row */
    int prefetch;                    /* forward: software-prefetch the next plane (big inputs) */
    void *dcol, *drow;               /* divisor factors (T): divisor(oh, ow) = drow[oh]*dcol[ow] */
    void *colbase, *colfirst;        /* (int of T's width) ow*sw - pw; first in-bounds column */
    int bad_index;                   /* max backward: an index was outside its plane */
    fc_pool_item_fn item;            /* the function that runs an item of this job */
};

/* ---------------------------------------------------------------------------- instantiation */
/* pool_dtype.h instantiates the ISA paths and the passes for one dtype (T, TN, IT: the integer
 * type of a vector lane's index, VLN_*: lanes per vector of each ISA). */
#define T float
#define TN f32
#define IT int32_t
#define VLN_AVX512 16
#define VLN_AVX2 8
#define VLN_GENERIC 4
#include "pool_dtype.h"

#define T double
#define TN f64
#define IT int64_t
#define VLN_AVX512 8
#define VLN_AVX2 4
#define VLN_GENERIC 2
#include "pool_dtype.h"

/* ------------------------------------------------------------------------- the job API */
enum { FC_POOL_BUFFER_BUDGET = 256 * 1024 }; /* bytes of row buffer per work item: in L2 */
/* Inputs larger than this are read from DRAM: software prefetch of the next plane then pays,
 * while for an input in the last-level cache it costs more than it saves. */
#define FC_POOL_PREFETCH_BYTES (16.0 * 1024 * 1024)
/* When planes are fewer, split them so that each thread gets about this many items: a thread the
 * OS delays then holds up only a small share of the call. */
enum { FC_POOL_ITEMS_PER_THREAD = 4 };
/* Dynamic chunks of consecutive items, about this many per thread: few enough that handing them
 * out costs nothing, enough that a thread the OS delays (cores shared with other processes)
 * leaves its share to the others. */
enum { FC_POOL_CHUNKS_PER_THREAD = 8 };

/* No tables held: what fc_pool_prepare starts from and fc_pool_free leaves. */
static void fc_pool_no_tables(fc_pool_job *j) {
    j->qoff = j->rowtaps = j->qrange = j->qtaps = j->rowsrc = NULL;
    j->dcol = j->drow = j->colbase = j->colfirst = NULL;
}

static void fc_pool_free(fc_pool_job *j) {
    fc_free(j->qoff);
    fc_free(j->rowtaps);
    fc_free(j->qrange);
    fc_free(j->qtaps);
    fc_free(j->rowsrc);
    fc_free(j->dcol);
    fc_free(j->drow);
    fc_free(j->colbase);
    fc_free(j->colfirst);
    fc_pool_no_tables(j);
    fc_ws_trim(); /* after the parallel loop: see fc_common.h */
}

/* Rows per item so that there are about FC_POOL_ITEMS_PER_THREAD items per thread when planes are
 * few, and one item's row buffer stays within the budget: r rows of the item need
 * (r - 1) * step + 1 + extra buffer rows. */
static void fc_pool_blocks(fc_pool_job *j, fc_idx rows, fc_idx row_bytes, fc_idx step,
                           fc_idx extra, int nthreads) {
    fc_idx planes = j->N * j->C;
    fc_idx want = nthreads > 1 ? FC_POOL_ITEMS_PER_THREAD * (fc_idx)nthreads : 1;
    fc_idx nb = planes >= want ? 1 : FC_CEIL_DIV(want, FC_MAX(planes, 1));
    fc_idx rpi = FC_CEIL_DIV(rows, FC_MIN(nb, rows));
    fc_idx budget_rows = FC_MAX((fc_idx)1, (fc_idx)FC_POOL_BUFFER_BUDGET / row_bytes);
    fc_idx rpi_max = budget_rows > extra ? (budget_rows - extra - 1) / step + 1 : 1;
    rpi = FC_MAX((fc_idx)1, FC_MIN(rpi, rpi_max));
    j->rows_per_item = rpi;
    j->nblocks = FC_CEIL_DIV(rows, rpi);
    j->nitems = planes * j->nblocks;
}

/* The item function of the job (once prepared) on the path whose functions are `fns`, and the
 * schedule of its items. */
static void fc_pool_schedule(fc_pool_job *j, const fc_pool_isa *fns, int nthreads,
                             fc_schedule *s) {
    if (j->pass == FC_POOL_BACKWARD)
        j->item = j->op == FC_POOL_MAX ? fns->max_backward : fns->avg_backward;
    else
        j->item = j->scalar ? fns->forward_scalar : fns->forward;
    s->nitems = j->nitems;
    s->nreduce = 0;
    s->chunk = FC_MAX((fc_idx)1, j->nitems / (FC_POOL_CHUNKS_PER_THREAD * (fc_idx)nthreads));
}

/* Validate nothing (the Python layer did), derive the layout and tables, and pick the item
 * function among `fns` (the dtype's functions on the SIMD path in use). 0 or -1 (no memory). */
static int fc_pool_prepare(fc_pool_job *j, int nthreads, const fc_pool_isa *fns,
                           fc_schedule *s) {
    fc_idx tsize = j->f64 ? (fc_idx)sizeof(double) : (fc_idx)sizeof(float);
    fc_pool_no_tables(j);
    j->bad_index = 0;
    j->prefetch = 0;
    j->OWP = FC_ROUND_UP(j->OW, FC_POOL_VL_MAX);
    if (j->pass == FC_POOL_BACKWARD && j->op == FC_POOL_MAX) {
        j->nblocks = 1;
        j->rows_per_item = j->OH;
        j->nitems = j->N * j->C;
        fc_pool_schedule(j, fns, nthreads, s);
        return 0;
    }
    fc_idx max_off = ((j->kw - 1) * j->dw) / j->sw;
    /* the forward reads phase positions < max(OW, VL) + max_off; the average backward scatters
     * whole vectors (up to OWP) and then reads back every input column */
    if (j->pass == FC_POOL_FORWARD) {
        j->LQ = FC_MAX(j->OW, (fc_idx)FC_POOL_VL_MAX) + max_off;
    } else {
        /* the average backward gathers phase positions [m_lo, m_hi) (a short range as one whole
         * vector) from gradient rows read at m - a, a < ceil(kw / sw) */
        j->LQ = FC_CEIL_DIV(j->pw + j->W, j->sw) + FC_POOL_VL_MAX;
        j->GP = FC_CEIL_DIV(j->kw, j->sw) - 1;
        j->LG = FC_ROUND_UP(j->GP + FC_MAX(j->OWP, j->LQ) + FC_POOL_VL_MAX, FC_POOL_VL_MAX);
        j->qrange = (fc_idx *)fc_malloc((size_t)(2 * j->sw) * sizeof(fc_idx));
        j->qtaps = (fc_idx *)fc_malloc((size_t)j->sw * sizeof(fc_idx));
        j->rowsrc = (fc_idx *)fc_malloc((size_t)(2 * j->H) * sizeof(fc_idx));
        if (!j->qrange || !j->qtaps || !j->rowsrc) return -1;
        for (fc_idx q = 0; q < j->sw; q++) {
            j->qrange[2 * q] = j->pw >= q ? FC_CEIL_DIV(j->pw - q, j->sw) : 0;
            j->qrange[2 * q + 1] = FC_CEIL_DIV(j->pw + j->W - q, j->sw);
            j->qtaps[q] = q < j->kw ? FC_CEIL_DIV(j->kw - q, j->sw) : 0;
        }
        /* input row ih gets the output rows oh with oh*sh - ph <= ih < oh*sh - ph + kh */
        for (fc_idx ih = 0; ih < j->H; ih++) {
            fc_idx lo = ih + j->ph - j->kh + 1, oa = lo <= 0 ? 0 : FC_CEIL_DIV(lo, j->sh);
            fc_idx ob = FC_MIN(j->OH, (ih + j->ph) / j->sh + 1);
            j->rowsrc[2 * ih] = oa;
            j->rowsrc[2 * ih + 1] = FC_MAX(ob - oa, 0);
        }
    }
    j->LQS = FC_ROUND_UP(j->LQ, FC_POOL_VL_MAX);
    j->qoff = (fc_idx *)fc_malloc((size_t)j->kw * sizeof(fc_idx));
    if (!j->qoff) return -1;
    for (fc_idx t = 0; t < j->kw; t++) {
        fc_idx c = t * j->dw;
        j->qoff[t] = (c % j->sw) * j->LQS + c / j->sw;
    }
    j->rowtaps = (fc_idx *)fc_malloc((size_t)(2 * j->OH) * sizeof(fc_idx));
    if (!j->rowtaps) return -1;
    for (fc_idx oh = 0; oh < j->OH; oh++) {
        fc_idx hs = oh * j->sh - j->ph;
        j->rowtaps[2 * oh] = hs >= 0 ? 0 : FC_CEIL_DIV(-hs, j->dh);
        j->rowtaps[2 * oh + 1] = FC_MIN(j->kh, FC_CEIL_DIV(j->H - hs, j->dh));
    }
    j->full_lo = j->OH;
    j->full_hi = 0;
    for (fc_idx oh = 0; oh < j->OH; oh++) {
        if (j->rowtaps[2 * oh] == 0 && j->rowtaps[2 * oh + 1] == j->kh) {
            j->full_lo = FC_MIN(j->full_lo, oh);
            j->full_hi = oh + 1;
        }
    }
    int st = j->f64 ? fc_pool_tables_f64(j) : fc_pool_tables_f32(j);
    if (st) return st;
    fc_idx row_bytes = j->sw * j->LQS * tsize;
    j->prefetch = (double)j->N * j->C * j->H * j->W * tsize > (double)FC_POOL_PREFETCH_BYTES;
    if (j->pass == FC_POOL_FORWARD) {
        fc_pool_blocks(j, j->OH, row_bytes, j->sh, (j->kh - 1) * j->dh, nthreads);
        /* 32-bit lane indices: the largest candidate index must fit */
        if (!j->f64 && j->op == FC_POOL_MAX && j->dst_ind) {
            double big = (double)j->H * (double)j->W + (double)j->OWP * (double)j->sw +
                         (double)j->kw * (double)j->dw + (double)j->W;
            if (big >= (double)INT32_MAX) j->scalar = 1;
        }
    } else {
        fc_pool_blocks(j, j->H, row_bytes, 1, 0, nthreads);
    }
    fc_pool_schedule(j, fns, nthreads, s);
    return 0;
}

/* Items run with their thread's workspace marked busy (see fc_ws_enter). */
static inline int fc_pool_item(fc_pool_job *j, fc_idx i) {
    fc_workspace *ws = fc_ws_enter();
    int st = !ws ? -1 : j->item(j, i);
    fc_ws_leave(ws);
    return st;
}

#endif /* FC_POOL_ENGINE_H */
