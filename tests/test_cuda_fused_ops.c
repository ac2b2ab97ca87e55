/* test_cuda_fused_ops: the CUDA backend's fused training ops (core/cuda/train_ops.cu: dropout_add_layernorm, its
 * backward, gelu_bias_backward) through the op API against the CPU backend's, which are the unfused sequences
 * (test_fused_ops proves that bit for bit). Random inputs (never zeros), odd widths (33, 97, 389) and packed ragged
 * sequences of lengths 1, 63, 64, 65, 127, 128, 129, 300 and 512 with an empty one among them, and one row per
 * sequence (seq_off NULL); with and without a residual and dropout; outputs the op overwrites are poisoned with NaN
 * so an element it fails to write fails the comparison; accumulated ones start from random values. Within 1e-5
 * relative (cmp_rel); dropout masks identical to the CPU's (the same dropped elements); each GPU op run twice gives
 * the same bits. Then the time of each fused op against its unfused sequence on the GPU at the training shapes of
 * MiniLM and XLM-R large (printed, not checked). Skipped (77) without the CUDA backend or a visible GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"
#include "rng.h"
#include "testutil.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

#ifdef XR_HAVE_CUDA
#define XR_CUDA_TEST_SEED 0x5851F42D4C957F2Dull
#include "cuda_testutil.h"

#define RTOL 1e-5

static const int kLens[] = {1, 63, 64, 0, 65, 127, 128, 129, 300, 512};
#define NSEQ ((int)(sizeof kLens / sizeof kLens[0]))

typedef struct {
    int S, N;
    int32_t off[NSEQ + 1];
    int32_t *doff;
    uint64_t ids[NSEQ];
    uint64_t *dids;
} Packed;

static Packed packed(Backend *g) {
    Packed p;
    p.S = NSEQ, p.off[0] = 0;
    for (int s = 0; s < NSEQ; s++) {
        p.off[s + 1] = p.off[s] + kLens[s];
        p.ids[s] = 0x100000000ull * (uint64_t)(s + 5) + 7919u * (uint64_t)s; /* high bits too */
    }
    p.N = p.off[NSEQ];
    p.doff = up(g, p.off, sizeof p.off);
    p.dids = up(g, p.ids, sizeof p.ids);
    return p;
}

/* ---- dropout + residual + LayerNorm, forward and backward ---- */
static void check_ln(Backend *c, Backend *g, const Packed *pk, int packed_rows, int with_res, float p, int H) {
    int S = pk->S, n = packed_rows ? pk->N : S;
    const int32_t *so = packed_rows ? pk->off : NULL, *dso = packed_rows ? pk->doff : NULL;
    size_t nh = (size_t)n * H;
    XrDropout dc = {p, 0x0F1E2D3C4B5A6978ull, pk->ids}, dg = {p, 0x0F1E2D3C4B5A6978ull, pk->dids};
    const XrDropout *pc = p > 0 ? &dc : NULL, *pg = p > 0 ? &dg : NULL;
    float *x = rnd(nh, -2, 2), *res = with_res ? rnd(nh, -1, 1) : NULL, *gam = rnd(H, 0.5f, 1.5f);
    float *bet = rnd(H, -0.5f, 0.5f);
    float *out = xr_malloc(nh * 4), *v = xr_malloc(nh * 4), *mean = xr_malloc(n * 4), *rstd = xr_malloc(n * 4);
    float *gx = up(g, x, nh * 4), *gres = res ? up(g, res, nh * 4) : NULL, *ggam = up(g, gam, H * 4);
    float *gbet = up(g, bet, H * 4);
    float *go = dev_nan(g, nh), *gv = dev_nan(g, nh), *gmean = dev_nan(g, n), *grstd = dev_nan(g, n);
    float *go2 = dev_nan(g, nh), *gv2 = dev_nan(g, nh), *gmean2 = dev_nan(g, n), *grstd2 = dev_nan(g, n);
    char name[128];
#define NAME(what) (snprintf(name, sizeof name, "%s %s H=%d%s p=%.2f", what, packed_rows ? "packed" : "rows", H, \
                             with_res ? " res" : "", (double)p), name)
    ops_dropout_add_layernorm(c, out, v, mean, rstd, x, res, gam, bet, so, S, n, H, 1e-12f, pc);
    ops_dropout_add_layernorm(g, go, gv, gmean, grstd, gx, gres, ggam, gbet, dso, S, n, H, 1e-12f, pg);
    ops_dropout_add_layernorm(g, go2, gv2, gmean2, grstd2, gx, gres, ggam, gbet, dso, S, n, H, 1e-12f, pg);
    cmp_rel(g, NAME("dropout_add_layernorm out"), out, go, nh, RTOL);
    cmp_rel(g, NAME("dropout_add_layernorm v"), v, gv, nh, RTOL);
    cmp_rel(g, NAME("dropout_add_layernorm mean"), mean, gmean, (size_t)n, RTOL);
    cmp_rel(g, NAME("dropout_add_layernorm rstd"), rstd, grstd, (size_t)n, RTOL);
    same_bits(g, NAME("dropout_add_layernorm out"), go, go2, nh);
    same_bits(g, NAME("dropout_add_layernorm rstd"), grstd, grstd2, (size_t)n);
    if (!res && p == 0) cmp(g, NAME("dropout_add_layernorm v = x"), v, gv, nh, 0); /* a plain copy */
    if (!res && p > 0) { /* v = dropout(x): its zeros are the mask */
        size_t mm = zero_mismatch(g, v, gv, nh), dropped = 0;
        for (size_t i = 0; i < nh; i++) dropped += v[i] == 0.0f;
        TU_CHECK(mm == 0, "%s: %zu of %zu mask elements differ from the CPU's", NAME("dropout_add_layernorm"), mm, nh);
        TU_CHECK(nh < 1000 || (dropped > nh * p / 2 && dropped < nh * p * 2), "%s: %zu of %zu dropped",
                 NAME("dropout_add_layernorm"), dropped, nh);
    }
    /* v aliasing x and out aliasing res (out aliasing x without a residual) */
    float *ga = up(g, x, nh * 4), *gr = res ? up(g, res, nh * 4) : NULL;
    ops_dropout_add_layernorm(g, gr ? gr : ga, gr ? ga : gv2, gmean2, grstd2, ga, gr, ggam, gbet, dso, S, n, H, 1e-12f,
                              pg);
    cmp_rel(g, NAME("dropout_add_layernorm out aliasing an input"), out, gr ? gr : ga, nh, RTOL);
    if (gr) cmp_rel(g, NAME("dropout_add_layernorm v aliasing x"), v, ga, nh, RTOL);

    /* backward: from the CPU forward's saved values on both sides, so only the backward is compared */
    float *dout = rnd(nh, -1, 1), *dgam = rnd(H, -1, 1), *dbet = rnd(H, -1, 1);
    float *dres = xr_malloc(nh * 4), *dx = xr_malloc(nh * 4);
    float *gdout = up(g, dout, nh * 4), *gdgam = up(g, dgam, H * 4), *gdbet = up(g, dbet, H * 4);
    float *gdgam2 = up(g, dgam, H * 4), *gdbet2 = up(g, dbet, H * 4);
    float *hv = up(g, v, nh * 4), *hmean = up(g, mean, n * 4), *hrstd = up(g, rstd, n * 4);
    float *gdres = dev_nan(g, nh), *gdx = dev_nan(g, nh), *gdres2 = dev_nan(g, nh), *gdx2 = dev_nan(g, nh);
    ops_dropout_add_layernorm_backward(c, dres, dx, dgam, dbet, dout, v, mean, rstd, gam, so, S, n, H, pc);
    ops_dropout_add_layernorm_backward(g, gdres, gdx, gdgam, gdbet, gdout, hv, hmean, hrstd, ggam, dso, S, n, H, pg);
    ops_dropout_add_layernorm_backward(g, gdres2, gdx2, gdgam2, gdbet2, gdout, hv, hmean, hrstd, ggam, dso, S, n, H,
                                       pg);
    cmp_rel(g, NAME("dropout_add_layernorm_backward dres"), dres, gdres, nh, RTOL);
    cmp_rel(g, NAME("dropout_add_layernorm_backward dx"), dx, gdx, nh, RTOL);
    cmp_rel(g, NAME("dropout_add_layernorm_backward dg (+=)"), dgam, gdgam, (size_t)H, RTOL);
    cmp_rel(g, NAME("dropout_add_layernorm_backward db (+=)"), dbet, gdbet, (size_t)H, RTOL);
    if (p > 0) {
        size_t mm = zero_mismatch(g, dx, gdx, nh);
        TU_CHECK(mm == 0, "%s: %zu of %zu mask elements differ from the CPU's", NAME("backward dx"), mm, nh);
    }
    same_bits(g, NAME("dropout_add_layernorm_backward dx"), gdx, gdx2, nh);
    same_bits(g, NAME("dropout_add_layernorm_backward dg"), gdgam, gdgam2, (size_t)H);
    same_bits(g, NAME("dropout_add_layernorm_backward db"), gdbet, gdbet2, (size_t)H);
    /* dres aliasing dout */
    ops_dropout_add_layernorm_backward(c, dout, dx, dgam, dbet, dout, v, mean, rstd, gam, so, S, n, H, pc);
    ops_dropout_add_layernorm_backward(g, gdout, gdx, gdgam, gdbet, gdout, hv, hmean, hrstd, ggam, dso, S, n, H, pg);
    cmp_rel(g, NAME("dropout_add_layernorm_backward dres = dout"), dout, gdout, nh, RTOL);
    cmp_rel(g, NAME("dropout_add_layernorm_backward dx (dres = dout)"), dx, gdx, nh, RTOL);
    cmp_rel(g, NAME("dropout_add_layernorm_backward dg (2nd +=)"), dgam, gdgam, (size_t)H, RTOL);
#undef NAME
    float *gbufs[] = {gx, gres, ggam, gbet, go, gv, gmean, grstd, go2, gv2, gmean2, grstd2, ga, gr, gdout, gdgam,
                      gdbet, gdgam2, gdbet2, hv, hmean, hrstd, gdres, gdx, gdres2, gdx2};
    for (size_t i = 0; i < sizeof gbufs / sizeof gbufs[0]; i++) ops_free(g, gbufs[i]);
    free(x), free(res), free(gam), free(bet), free(out), free(v), free(mean), free(rstd), free(dout), free(dgam);
    free(dbet), free(dres), free(dx);
}

/* ---- bias + GELU backward ---- */
static void check_gelu_bias(Backend *c, Backend *g, int M, int N) {
    size_t mn = (size_t)M * N;
    float *x = rnd(mn, -5, 5), *dy = rnd(mn, -1, 1), *db = rnd(N, -1, 1), *dx = xr_malloc(mn * 4);
    float *gx = up(g, x, mn * 4), *gdy = up(g, dy, mn * 4), *gdb = up(g, db, N * 4), *gdb2 = up(g, db, N * 4);
    float *gdx = dev_nan(g, mn), *gdx2 = dev_nan(g, mn);
    char name[96];
    ops_gelu_bias_backward(c, dx, db, x, dy, M, N);
    ops_gelu_bias_backward(g, gdx, gdb, gx, gdy, M, N);
    ops_gelu_bias_backward(g, gdx2, gdb2, gx, gdy, M, N);
    snprintf(name, sizeof name, "gelu_bias_backward M=%d N=%d dx", M, N);
    cmp_rel(g, name, dx, gdx, mn, RTOL);
    same_bits(g, name, gdx, gdx2, mn);
    snprintf(name, sizeof name, "gelu_bias_backward M=%d N=%d db (+=)", M, N);
    cmp_rel(g, name, db, gdb, (size_t)N, RTOL);
    same_bits(g, name, gdb, gdb2, (size_t)N);
    /* dx aliasing dy, no bias */
    ops_gelu_bias_backward(g, gdy, NULL, gx, gdy, M, N);
    snprintf(name, sizeof name, "gelu_bias_backward M=%d N=%d dx = dy, db NULL", M, N);
    cmp_rel(g, name, dx, gdy, mn, RTOL);
    ops_free(g, gx), ops_free(g, gdy), ops_free(g, gdb), ops_free(g, gdb2), ops_free(g, gdx), ops_free(g, gdx2);
    free(x), free(dy), free(db), free(dx);
}

/* ---- time: fused against the unfused sequence on the GPU (ms per call, median of 5 x 10 calls) ---- */
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int dcmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    float *out, *v, *mean, *rstd, *x, *res, *g, *b, *dout, *dres, *dx, *dg, *db, *f, *dff, *dbi;
    int32_t *off;
    int S, n, H, I;
    XrDropout d;
} TimeBufs;

static void run_variant(Backend *g, TimeBufs *t, int which) {
    switch (which) {
    case 0:
        ops_dropout_add_layernorm(g, t->out, t->v, t->mean, t->rstd, t->x, t->res, t->g, t->b, t->off, t->S, t->n,
                                  t->H, 1e-12f, &t->d);
        break;
    case 1:
        ops_dropout_add(g, t->v, t->x, t->res, t->off, t->S, t->H, &t->d);
        ops_layernorm(g, t->out, t->mean, t->rstd, t->v, NULL, t->g, t->b, t->n, t->H, 1e-12f);
        break;
    case 2:
        ops_dropout_add_layernorm_backward(g, t->dres, t->dx, t->dg, t->db, t->dout, t->v, t->mean, t->rstd, t->g,
                                           t->off, t->S, t->n, t->H, &t->d);
        break;
    case 3:
        ops_layernorm_backward(g, t->dres, t->dg, t->db, t->dout, t->v, t->mean, t->rstd, t->g, t->n, t->H, 0);
        ops_dropout_add(g, t->dx, t->dres, NULL, t->off, t->S, t->H, &t->d);
        break;
    case 4:
        ops_gelu_bias_backward(g, t->dff, t->dbi, t->f, t->dff, t->n, t->I);
        break;
    default:
        ops_gelu_backward(g, t->dff, t->f, t->dff, (size_t)t->n * t->I);
        ops_linear_backward(g, NULL, NULL, t->dbi, t->dff, NULL, NULL, t->n, t->I, 1, 0);
        break;
    }
}

static void time_shape(Backend *g, const char *model, int S, int L, int H, int I) {
    TimeBufs t;
    memset(&t, 0, sizeof t);
    t.S = S, t.n = S * L, t.H = H, t.I = I;
    size_t nh = (size_t)t.n * H, ni = (size_t)t.n * I;
    int32_t *off = xr_malloc((size_t)(S + 1) * 4);
    for (int s = 0; s <= S; s++) off[s] = s * L;
    t.off = up(g, off, (size_t)(S + 1) * 4);
    float *h = rnd(ni, -1, 1); /* one random array serves every input */
    float **nhb[] = {&t.out, &t.v, &t.x, &t.res, &t.dout, &t.dres, &t.dx};
    for (size_t i = 0; i < sizeof nhb / sizeof nhb[0]; i++) *nhb[i] = up(g, h, nh * 4);
    t.f = up(g, h, ni * 4), t.dff = up(g, h, ni * 4);
    t.mean = up(g, h, (size_t)t.n * 4), t.rstd = up(g, h, (size_t)t.n * 4);
    t.g = up(g, h, (size_t)H * 4), t.b = up(g, h, (size_t)H * 4), t.dg = up(g, h, (size_t)H * 4);
    t.db = up(g, h, (size_t)H * 4), t.dbi = up(g, h, (size_t)I * 4);
    t.d.p = 0.1f, t.d.key = 99, t.d.seq_ids = NULL;
    const char *names[] = {"dropout_add_layernorm", "dropout_add_layernorm_backward", "gelu_bias_backward"};
    for (int op = 0; op < 3; op++) {
        double ms[2];
        for (int variant = 0; variant < 2; variant++) {
            int which = 2 * op + variant;
            run_variant(g, &t, which); /* warm-up */
            ops_sync(g);
            double r[5];
            for (int rep = 0; rep < 5; rep++) {
                double t0 = now_s();
                for (int k = 0; k < 10; k++) run_variant(g, &t, which);
                ops_sync(g);
                r[rep] = (now_s() - t0) * 100.0; /* ms per call */
            }
            qsort(r, 5, sizeof r[0], dcmp);
            ms[variant] = r[2];
        }
        printf("time %-8s %5d tokens: %-32s fused %.3f ms, unfused %.3f ms (%.2fx)\n", model, t.n, names[op], ms[0],
               ms[1], ms[1] / ms[0]);
    }
    float *bufs[] = {t.out, t.v, t.x, t.res, t.dout, t.dres, t.dx, t.f, t.dff, t.mean, t.rstd, t.g, t.b, t.dg, t.db,
                     t.dbi};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ops_free(g, bufs[i]);
    ops_free(g, t.off);
    free(off), free(h);
}
#endif

int main(void) {
#ifndef XR_HAVE_CUDA
    TU_SKIP("built without the CUDA backend (-DXRANK_CUDA=OFF or nvcc missing)");
#else
    if (ops_device_count(XR_DEV_CUDA) == 0) TU_SKIP("no GPU visible");
    XrErr e;
    Backend *c = ops_backend_cpu(2), *g = ops_backend_create(XR_DEV_CUDA, 0, XR_PREC_FP32, 0, &e);
    if (!g) xr_die("%s", e.msg);
    Packed pk = packed(g);
    const int widths[] = {389, 33, 97};
    for (int w = 0; w < 3; w++)
        for (int rows = 0; rows < 2; rows++)
            for (int with_res = 0; with_res < 2; with_res++) {
                check_ln(c, g, &pk, rows, with_res, 0.0f, widths[w]);
                check_ln(c, g, &pk, rows, with_res, 0.1f, widths[w]);
            }
    check_ln(c, g, &pk, 1, 1, 0.5f, 1024);
    check_gelu_bias(c, g, pk.N, 389);
    check_gelu_bias(c, g, 1, 7);
    check_gelu_bias(c, g, 65, 1);
    check_gelu_bias(c, g, 129, 1536);
    if (tu_failures == 0 && !cuemu_skip_timing("fused vs unfused")) { /* speed only once the results are right */
        time_shape(g, "MiniLM", 64, 128, 384, 1536);
        time_shape(g, "XLM-R-L", 16, 512, 1024, 4096);
    }
    cuda_ops_sync(g);
    ops_free(g, pk.doff), ops_free(g, pk.dids);
    ops_backend_free(g);
    ops_backend_free(c);
    return tu_finish("test_cuda_fused_ops");
#endif
}
