/* The convolution job's passes for one dtype: conv_dtype.h includes it after conv_tmpl.h, with
 * T and TN defined. Each pass's `start` builds its plan from the job (fc_job, conv_engine.h) and
 * the ISA table resolved for the SIMD path in use, and prepares it; its item, reduction item and
 * free forward to conv_tmpl.h. */
#define FJ(name) FC_CAT(name, TN)

/* The input the forward and grad_weight passes read: x and its element strides (any sign). */
static void FJ(fc_job_input)(const fc_job *j, const T **x, fc_idx xs[4]) {
    *x = (const T *)j->a;
    memcpy(xs, j->a_strides, 4 * sizeof *xs);
}

static int FJ(fc_fwd_start)(fc_job *j, const void *isa, int nthreads, fc_schedule *s) {
    FJ(fc_fwd_plan) *p = fc_job_new_plan(j, sizeof *p);
    if (!p) return -1;
    p->isa = *(const FJ(fc_isa) *)isa;
    p->g = j->geom;
    FJ(fc_job_input)(j, &p->x, p->xs);
    p->w = (const T *)j->b;
    p->bias = (const T *)j->bias;
    p->act = j->act;
    p->slope = (T)j->slope; /* rounded to T once, as torch converts its scalar */
    p->math = j->math;
    if (p->math != FC_MATH_F32 && sizeof(T) != sizeof(float)) return -1;
    p->out = (T *)j->out;
    int st = FJ(fc_fwd_prepare)(p, nthreads);
    s->npre = p->npre;
    s->nitems = p->nitems;
    s->nreduce = 0;
    /* the items of one image group, which share its wide buffer (one by one on the
     * channel-vectorised and depthwise paths) */
    s->chunk = p->cv || p->dwd_cb ? 1 : p->nPB;
    return st;
}

static int FJ(fc_gin_start)(fc_job *j, const void *isa, int nthreads, fc_schedule *s) {
    FJ(fc_gin_plan) *p = fc_job_new_plan(j, sizeof *p);
    if (!p) return -1;
    p->isa = *(const FJ(fc_isa) *)isa;
    p->g = j->geom;
    p->dy = (const T *)j->a;
    p->w = (const T *)j->b;
    p->dx = (T *)j->out;
    p->math = j->math;
    if (p->math != FC_MATH_F32 && sizeof(T) != sizeof(float)) return -1;
    int st = FJ(fc_gin_prepare)(p, nthreads);
    s->npre = p->npre;
    s->nitems = p->nitems;
    s->nreduce = 0;
    /* the items of one image group (all its stride phases; one by one on the
     * channel-vectorised and depthwise paths) */
    s->chunk = p->cv || p->dwd_cb ? 1 : p->nphase * p->nPB;
    return st;
}

static int FJ(fc_gw_start)(fc_job *j, const void *isa, int nthreads, fc_schedule *s) {
    (void)nthreads; /* the work split depends on the shapes only, so the sums are fixed */
    FJ(fc_gw_plan) *p = fc_job_new_plan(j, sizeof *p);
    if (!p) return -1;
    p->isa = *(const FJ(fc_isa) *)isa;
    p->g = j->geom;
    FJ(fc_job_input)(j, &p->x, p->xs);
    p->dy = (const T *)j->b;
    p->dw = (T *)j->out;
    int st = FJ(fc_gw_prepare)(p);
    s->nitems = p->nitems;
    s->nreduce = p->depthwise ? 0 : FJ(fc_gw_reduce_items)(p);
    s->chunk = 1;
    return st;
}

static int FJ(fc_fwd_pre_item_of)(const void *plan, fc_idx i) {
    return FJ(fc_fwd_pre_item)(plan, i);
}
static int FJ(fc_gin_pre_item_of)(const void *plan, fc_idx i) {
    return FJ(fc_gin_pre_item)(plan, i);
}
static int FJ(fc_fwd_item_of)(const void *plan, fc_idx i) { return FJ(fc_fwd_item)(plan, i); }
static int FJ(fc_gin_item_of)(const void *plan, fc_idx i) { return FJ(fc_gin_item)(plan, i); }
static int FJ(fc_gw_item_of)(const void *plan, fc_idx i) { return FJ(fc_gw_item)(plan, i); }
static int FJ(fc_gw_reduce_item_of)(const void *plan, fc_idx i) {
    return FJ(fc_gw_reduce_item)(plan, i);
}
static void FJ(fc_fwd_free_of)(void *plan) { FJ(fc_fwd_free)(plan); }
static void FJ(fc_gin_free_of)(void *plan) { FJ(fc_gin_free)(plan); }
static void FJ(fc_gw_free_of)(void *plan) { FJ(fc_gw_free)(plan); }

static const fc_conv_pass FJ(fc_conv_passes)[FC_PASS_COUNT] = {
    [FC_PASS_FORWARD] = {FJ(fc_fwd_start), FJ(fc_fwd_pre_item_of), FJ(fc_fwd_item_of), NULL,
                         FJ(fc_fwd_free_of)},
    [FC_PASS_GRAD_INPUT] = {FJ(fc_gin_start), FJ(fc_gin_pre_item_of), FJ(fc_gin_item_of), NULL,
                            FJ(fc_gin_free_of)},
    [FC_PASS_GRAD_WEIGHT] = {FJ(fc_gw_start), NULL, FJ(fc_gw_item_of), FJ(fc_gw_reduce_item_of),
                             FJ(fc_gw_free_of)},
};

#undef FJ
