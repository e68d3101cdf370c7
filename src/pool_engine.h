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
 * The ISA level is chosen per job (fastconv._kernels.set_isa drives it, so one switch selects
 * the SIMD path of every kernel); the float32 max forward with indices keeps 32-bit lane indices
 * and falls back to the scalar path for planes that do not fit them.
 */
#ifndef FC_POOL_ENGINE_H
#define FC_POOL_ENGINE_H

#include <math.h>

#include "fc_common.h"

enum { FC_POOL_MAX = 0, FC_POOL_AVG = 1 };
enum { FC_POOL_FORWARD = 0, FC_POOL_BACKWARD = 1 };

typedef struct {
    /* filled by the caller */
    int pass, op, f64, isa, scalar; /* scalar: force the scalar forward path (tests) */
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
    fc_idx OWP;                      /* OW rounded up to 16 (table length) */
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
} fc_pool_job;

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
enum { FC_POOL_BUFFER_BUDGET = 256 * 1024 }; /* bytes of row buffer per work item */
#define FC_POOL_PREFETCH_BYTES (16.0 * 1024 * 1024)

/* No tables held: what fc_pool_prepare starts from and fc_pool_free leaves. */
static void fc_pool_no_tables(fc_pool_job *j) {
    j->qoff = j->rowtaps = j->qrange = j->qtaps = j->rowsrc = NULL;
    j->dcol = j->drow = j->colbase = j->colfirst = NULL;
}

static void fc_pool_free(fc_pool_job *j) {
    free(j->qoff);
    free(j->rowtaps);
    free(j->qrange);
    free(j->qtaps);
    free(j->rowsrc);
    free(j->dcol);
    free(j->drow);
    free(j->colbase);
    free(j->colfirst);
    fc_pool_no_tables(j);
    fc_ws_trim(); /* after the parallel loop: see fc_common.h */
}

/* Rows per item so that there are about 4 items per thread when planes are few, and one item's
 * row buffer stays within the budget. `span(r)` = buffer rows needed by r rows of the item. */
static void fc_pool_blocks(fc_pool_job *j, fc_idx rows, fc_idx row_bytes, fc_idx step,
                           fc_idx extra, int nthreads) {
    fc_idx planes = j->N * j->C;
    fc_idx want = nthreads > 1 ? 4 * (fc_idx)nthreads : 1;
    fc_idx nb = planes >= want ? 1 : FC_CEIL_DIV(want, FC_MAX(planes, 1));
    fc_idx rpi = FC_CEIL_DIV(rows, FC_MIN(nb, rows));
    fc_idx budget_rows = FC_MAX((fc_idx)1, (fc_idx)FC_POOL_BUFFER_BUDGET / row_bytes);
    fc_idx rpi_max = budget_rows > extra ? (budget_rows - extra - 1) / step + 1 : 1;
    rpi = FC_MAX((fc_idx)1, FC_MIN(rpi, rpi_max));
    j->rows_per_item = rpi;
    j->nblocks = FC_CEIL_DIV(rows, rpi);
    j->nitems = planes * j->nblocks;
}

/* Validate nothing (the Python layer did), derive the layout and tables. 0 or -1 (no memory). */
static int fc_pool_prepare(fc_pool_job *j, int nthreads) {
    fc_idx tsize = j->f64 ? 8 : 4;
    fc_pool_no_tables(j);
    j->bad_index = 0;
    j->prefetch = 0;
    j->OWP = FC_ROUND_UP(j->OW, 16);
    if (j->pass == FC_POOL_BACKWARD && j->op == FC_POOL_MAX) {
        j->nblocks = 1;
        j->rows_per_item = j->OH;
        j->nitems = j->N * j->C;
        return 0;
    }
    fc_idx max_off = ((j->kw - 1) * j->dw) / j->sw;
    /* the forward reads phase positions < max(OW, VL) + max_off; the average backward scatters
     * whole vectors (up to OWP) and then reads back every input column */
    if (j->pass == FC_POOL_FORWARD) {
        j->LQ = FC_MAX(j->OW, 16) + max_off;
    } else {
        /* the average backward gathers phase positions [m_lo, m_hi) (a short range as one whole
         * vector) from gradient rows read at m - a, a < ceil(kw / sw) */
        j->LQ = FC_CEIL_DIV(j->pw + j->W, j->sw) + 16;
        j->GP = FC_CEIL_DIV(j->kw, j->sw) - 1;
        j->LG = FC_ROUND_UP(j->GP + FC_MAX(j->OWP, j->LQ) + 16, 16);
        j->qrange = (fc_idx *)malloc((size_t)(2 * j->sw) * sizeof(fc_idx));
        j->qtaps = (fc_idx *)malloc((size_t)j->sw * sizeof(fc_idx));
        j->rowsrc = (fc_idx *)malloc((size_t)(2 * j->H) * sizeof(fc_idx));
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
    j->LQS = FC_ROUND_UP(j->LQ, 16);
    j->qoff = (fc_idx *)malloc((size_t)j->kw * sizeof(fc_idx));
    if (!j->qoff) return -1;
    for (fc_idx t = 0; t < j->kw; t++) {
        fc_idx c = t * j->dw;
        j->qoff[t] = (c % j->sw) * j->LQS + c / j->sw;
    }
    j->rowtaps = (fc_idx *)malloc((size_t)(2 * j->OH) * sizeof(fc_idx));
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
    /* measured: a win of up to 40% once the input is out of the last-level cache, a loss of up
     * to 20% (small planes) while it is in */
    j->prefetch = (double)j->N * j->C * j->H * j->W * tsize > (double)FC_POOL_PREFETCH_BYTES;
    if (j->pass == FC_POOL_FORWARD) {
        fc_pool_blocks(j, j->OH, row_bytes, j->sh, (j->kh - 1) * j->dh, nthreads);
        /* 32-bit lane indices: the largest candidate index must fit */
        if (!j->f64 && j->op == FC_POOL_MAX && j->dst_ind) {
            double big = (double)j->H * (double)j->W + (double)j->OWP * (double)j->sw +
                         (double)j->kw * (double)j->dw + (double)j->W;
            if (big >= 2147483647.0) j->scalar = 1;
        }
    } else {
        fc_pool_blocks(j, j->H, row_bytes, 1, 0, nthreads);
    }
    return 0;
}

/* Items run with their thread's workspace marked busy (see fc_ws_enter). */
static inline int fc_pool_item(fc_pool_job *j, fc_idx i) {
    fc_workspace *ws = fc_ws_enter();
    int st = !ws ? -1 : j->f64 ? fc_pool_item_f64(j, i) : fc_pool_item_f32(j, i);
    fc_ws_leave(ws);
    return st;
}

#endif /* FC_POOL_ENGINE_H */
