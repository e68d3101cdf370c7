/* The compiled core on its own, as a program: every convolution pass, in float32 and float64, on
 * every SIMD path this CPU has and on 1 and 2 threads, held to a direct sum (tolerance) and to
 * one another (bitwise); then the output allocator's large blocks and the workspaces' release.
 * tests/test_build.py builds it for platforms whose Python this machine cannot run (Windows,
 * with MinGW-w64's GCC, run under Wine). Prints one line per failure; exits 0 when all pass. */
#include <math.h>
#include <stdio.h>

#include "fc_kernels.h"

static int fc_no_signal(void) { return 0; }

/* One parallel region of the run loop: items [0, n) of fn, `chunk` at a time. */
static void run_items(void *job, int (*fn)(void *, fc_idx), fc_idx n, fc_idx chunk, fc_run *run,
                      int nthreads) {
#pragma omp parallel num_threads(nthreads)
    {
        unsigned mode = fc_run_enter(run);
#pragma omp for schedule(dynamic, chunk)
        for (fc_idx i = 0; i < n; i++)
            if (!fc_run_stopped(run)) fc_run_done(run, fn(job, i));
        fc_run_leave(mode);
    }
}

/* The run loop of src/_run_control.pxi, without Python. */
static int run_task(void *job, const fc_task *task, int nthreads) {
    fc_run run;
    fc_schedule s = {0, 0, 0, 1};
    fc_run_init(&run, 0, 0, fc_no_signal);
    int status = task->prepare(job, nthreads, &s);
    if (status == 0 && s.npre > 0) run_items(job, task->pre_item, s.npre, 1, &run, nthreads);
    if (status == 0 && !fc_run_stopped(&run))
        run_items(job, task->item, s.nitems, s.chunk, &run, nthreads);
    if (status == 0 && s.nreduce > 0 && !fc_run_stopped(&run))
        run_items(job, task->reduce_item, s.nreduce, 1, &run, nthreads);
    task->finish(job);
    return status != 0 || fc_run_stopped(&run);
}

typedef struct {
    fc_idx N, C, H, W, K, R, S, G, sh, sw, dh, dw, ph, pw;
} shape;

/* The kernels' paths: a small direct one, the GEMM with packed weights (large), strides,
 * dilation, groups, depthwise, pointwise. */
static const shape SHAPES[] = {
    {2, 3, 9, 11, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},    {2, 16, 20, 20, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {1, 8, 17, 15, 8, 5, 5, 1, 2, 2, 1, 1, 2, 2},   {1, 6, 16, 16, 6, 3, 3, 1, 1, 1, 2, 2, 2, 2},
    {2, 8, 12, 12, 12, 3, 3, 4, 1, 1, 1, 1, 1, 1},  {1, 16, 14, 14, 16, 3, 3, 16, 1, 1, 1, 1, 1, 1},
    {2, 32, 7, 7, 24, 1, 1, 1, 1, 1, 1, 1, 0, 0},
};

static fc_geom geometry(const shape *s) {
    fc_geom g;
    g.N = s->N, g.C = s->C, g.H = s->H, g.W = s->W, g.K = s->K, g.R = s->R, g.S = s->S;
    g.G = s->G, g.sh = s->sh, g.sw = s->sw, g.dh = s->dh, g.dw = s->dw, g.pt = s->ph, g.pl = s->pw;
    g.OH = (s->H + 2 * s->ph - s->dh * (s->R - 1) - 1) / s->sh + 1;
    g.OW = (s->W + 2 * s->pw - s->dw * (s->S - 1) - 1) / s->sw + 1;
    return g;
}

static unsigned long long rng_state = 12345;
static double uniform(void) { /* in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 4503599627370496.0 - 1.0;
}

static int failures = 0;
static void fail(const char *what, const char *dtype, int shape_no, int isa, int threads) {
    printf("FAIL %s %s shape %d isa %s threads %d\n", what, dtype, shape_no, fc_isas[isa].name,
           threads);
    failures++;
}

/* The direct sums, in double: y[n,k,oh,ow] += x[n,c,ih,iw] * w[k,c',r,s] over the taps. */
#define DIRECT(T)                                                                            \
    static void direct_##T(const fc_geom *g, const T *x, const T *w, const T *dy, double *y,  \
                           double *dx, double *dw) {                                          \
        fc_idx Cg = g->C / g->G, Kg = g->K / g->G;                                            \
        for (fc_idx n = 0; n < g->N; n++)                                                     \
            for (fc_idx k = 0; k < g->K; k++)                                                 \
                for (fc_idx oh = 0; oh < g->OH; oh++)                                         \
                    for (fc_idx ow = 0; ow < g->OW; ow++) {                                   \
                        fc_idx o = ((n * g->K + k) * g->OH + oh) * g->OW + ow;                \
                        for (fc_idx c = 0; c < Cg; c++)                                       \
                            for (fc_idx r = 0; r < g->R; r++)                                 \
                                for (fc_idx s = 0; s < g->S; s++) {                           \
                                    fc_idx ih = oh * g->sh - g->pt + r * g->dh;               \
                                    fc_idx iw = ow * g->sw - g->pl + s * g->dw;               \
                                    if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)         \
                                        continue;                                             \
                                    fc_idx ci = (k / Kg) * Cg + c;                            \
                                    fc_idx xi = ((n * g->C + ci) * g->H + ih) * g->W + iw;    \
                                    fc_idx wi = ((k * Cg + c) * g->R + r) * g->S + s;         \
                                    y[o] += (double)x[xi] * w[wi];                            \
                                    dx[xi] += (double)dy[o] * w[wi];                          \
                                    dw[wi] += (double)dy[o] * x[xi];                          \
                                }                                                             \
                    }                                                                         \
    }
DIRECT(float)
DIRECT(double)

/* max |got - want| <= tol * (max |want| + 1) */
static int close_to(const void *got, int f64, const double *want, fc_idx n, double tol) {
    double err = 0, scale = 1;
    for (fc_idx i = 0; i < n; i++) {
        double v = f64 ? ((const double *)got)[i] : ((const float *)got)[i];
        err = FC_MAX(err, fabs(v - want[i]));
        scale = FC_MAX(scale, fabs(want[i]) + 1);
    }
    return err <= tol * scale;
}

#define CHECK_DTYPE(T, F64, TOL)                                                                 \
    static void check_##T(int shape_no) {                                                        \
        const char *name = F64 ? "float64" : "float32";                                          \
        fc_geom g = geometry(&SHAPES[shape_no]);                                                 \
        fc_idx nx = g.N * g.C * g.H * g.W, nw = g.K * (g.C / g.G) * g.R * g.S;                   \
        fc_idx ny = g.N * g.K * g.OH * g.OW;                                                     \
        T *x = fc_malloc(nx * sizeof(T)), *w = fc_malloc(nw * sizeof(T));                         \
        T *dy = fc_malloc(ny * sizeof(T)), *bias = fc_malloc(g.K * sizeof(T));                    \
        double *y = fc_calloc(ny, sizeof(double)), *dx = fc_calloc(nx, sizeof(double));          \
        double *dw = fc_calloc(nw, sizeof(double));                                              \
        T *first[3] = {fc_malloc(ny * sizeof(T)), fc_malloc(nx * sizeof(T)),                     \
                       fc_malloc(nw * sizeof(T))};                                               \
        T *out[3] = {fc_malloc(ny * sizeof(T)), fc_malloc(nx * sizeof(T)),                       \
                     fc_malloc(nw * sizeof(T))};                                                 \
        fc_idx count[3] = {ny, nx, nw};                                                          \
        const double *want[3] = {y, dx, dw};                                                     \
        for (fc_idx i = 0; i < nx; i++) x[i] = (T)uniform();                                     \
        for (fc_idx i = 0; i < nw; i++) w[i] = (T)uniform();                                     \
        for (fc_idx i = 0; i < ny; i++) dy[i] = (T)uniform();                                    \
        for (fc_idx k = 0; k < g.K; k++) bias[k] = (T)uniform();                                 \
        direct_##T(&g, x, w, dy, y, dx, dw);                                                     \
        for (fc_idx i = 0; i < ny; i++) y[i] += bias[i / (g.OH * g.OW) % g.K];                    \
        for (int isa = 0; isa <= fc_isa_supported(); isa++) {                                    \
            fc_set_isa(isa);                                                                     \
            for (int threads = 1; threads <= 2; threads++)                                       \
                for (int pass = 0; pass < 3; pass++) {                                           \
                    fc_job j;                                                                    \
                    memset(&j, 0, sizeof j);                                                     \
                    j.pass = pass, j.f64 = F64, j.geom = g, j.out = out[pass];                   \
                    j.a_strides[3] = 1, j.a_strides[2] = g.W, j.a_strides[1] = g.H * g.W;        \
                    j.a_strides[0] = g.C * g.H * g.W;                                            \
                    j.a = pass == FC_PASS_GRAD_INPUT ? (const void *)dy : x;                     \
                    j.b = pass == FC_PASS_GRAD_WEIGHT ? (const void *)dy : w;                    \
                    j.bias = pass == FC_PASS_FORWARD ? bias : NULL;                              \
                    memset(out[pass], 0, count[pass] * sizeof(T));                               \
                    static const char *what[3] = {"forward", "grad_input", "grad_weight"};       \
                    if (run_task(&j, &fc_conv_task, threads)) {                                  \
                        fail("out of memory", name, shape_no, isa, threads);                     \
                        continue;                                                                \
                    }                                                                            \
                    if (!close_to(out[pass], F64, want[pass], count[pass], TOL))                 \
                        fail(what[pass], name, shape_no, isa, threads);                          \
                    if (isa == 0 && threads == 1)                                                \
                        memcpy(first[pass], out[pass], count[pass] * sizeof(T));                 \
                    else if (memcmp(first[pass], out[pass], count[pass] * sizeof(T)))            \
                        fail("not bitwise the generic path's 1-thread result", name, shape_no,   \
                             isa, threads);                                                      \
                }                                                                                \
        }                                                                                        \
        void *blocks[] = {x, w, dy, bias, y, dx, dw, first[0], first[1], first[2], out[0],       \
                          out[1], out[2]};                                                       \
        for (size_t i = 0; i < sizeof blocks / sizeof *blocks; i++) fc_free(blocks[i]);          \
    }
CHECK_DTYPE(float, 0, 1e-5)
CHECK_DTYPE(double, 1, 1e-12)

/* The software fma against the one the portable path uses (the C library's, or the FMA
 * instruction where the C library's is inexact): the same bits, on operands of every magnitude,
 * results that cancel, overflow or fall below the normal range, and infinities, NaNs and zeros. */
static int same_bits(double a, double b) {
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}
static void check_fma(void) {
    static const double special[] = {0.0, -0.0, 1.0, -1.0, INFINITY, -INFINITY, NAN, 0x1p-1074,
                                     0x1p-149, 0x1.fffffffffffffp+1023, 0x1.fffffep+127};
    const int ns = (int)(sizeof special / sizeof *special);
    long bad = 0, badf = 0;
    for (long i = 0; i < 2000000; i++) {
        double v[3];
        for (int k = 0; k < 3; k++) {
            v[k] = ldexp(uniform(), (int)(uniform() * 80));
            if (i % 7 == 0 && k == 2) v[2] = -v[0] * v[1]; /* cancellation */
            if (i % 11 == 0) v[k] = ldexp(uniform(), (int)(uniform() * 1100));
            if (i % 13 == 0) v[k] = special[(i / 13 + k) % ns];
        }
        float f[3] = {(float)v[0], (float)v[1], (float)v[2]};
        if (i % 3 == 0) f[0] = (float)ldexp(uniform(), -60), f[1] = (float)ldexp(uniform(), -70);
        if (i % 5 == 0) { /* just below a halfway point, which a rounding of the sum would reach */
            int odd = 2 * (int)(i % 1000) + 1, sign = i % 10 ? 1 : -1;
            v[0] = 0x1p-26 * (1 + 0x1p-52), v[1] = 0x1p-27 * (1 - 0x1p-52);
            v[2] = sign * (1 + odd * 0x1p-52);
            f[0] = 0x1p-12f * (1 + 0x1p-23f), f[1] = 0x1p-12f * (1 - 0x1p-23f);
            f[2] = sign * (1 + odd * 0x1p-23f);
        }
#ifdef FC_HAVE_SOFT_FMA
        bad += !same_bits(fc_fma_soft(v[0], v[1], v[2]), fc_fma(v[0], v[1], v[2]));
#endif
        badf += !same_bits(fc_fmaf_soft(f[0], f[1], f[2]), fc_fmaf(f[0], f[1], f[2]));
    }
    if (bad) fail("software fma", "float64", -1, 0, 1);
    if (badf) fail("software fma", "float32", -1, 0, 1);
}

/* NumPy's view of the output allocator: large blocks kept for reuse, resized, released. */
static void check_allocator(void) {
    size_t big = (size_t)FC_CACHE_MIN + 4096;
    char *p = fc_handler_malloc(NULL, big);
    if (!p || ((uintptr_t)p % FC_ALIGN)) fail("large block", "-", -1, 0, 1);
    if (!p) return;
    memset(p, 7, big);
    fc_handler_free(NULL, p, big);
    if (fc_cache_held() < big) fail("large block not kept", "-", -1, 0, 1);
    char *q = fc_handler_calloc(NULL, big, 1);
    if (!q || q[big - 1] != 0) fail("calloc of a kept block", "-", -1, 0, 1);
    q = fc_handler_realloc(NULL, q, 2 * big);
    if (!q) fail("realloc", "-", -1, 0, 1);
    fc_handler_free(NULL, q, 2 * big);
    fc_cache_release();
    if (fc_cache_held() != 0) fail("cache release", "-", -1, 0, 1);
    fc_handler_free(NULL, fc_handler_malloc(NULL, 100), 100);
}

int main(void) {
    fc_threads_init();
    printf("SIMD paths: generic to %s; OpenMP %d\n", fc_isas[fc_isa_supported()].name,
           fc_have_openmp());
    for (int s = 0; s < (int)(sizeof SHAPES / sizeof *SHAPES); s++) {
        check_float(s);
        check_double(s);
    }
    check_fma();
    check_allocator();
    fc_ws_release_all();
    int64_t held[64];
    int n = fc_ws_list(held, 64);
    for (int i = 0; i < n && i < 64; i++)
        if (held[i]) fail("workspace kept after release", "-", -1, 0, 1);
    printf("%d failures\n", failures);
    return failures != 0;
}
