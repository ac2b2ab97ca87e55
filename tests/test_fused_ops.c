/* test_fused_ops: the fused training ops (ops_list.h, "fused training ops") on the CPU backend:
 * - each equals, bit for bit, the unfused sequence of ops that defines it, on ragged packed rows (an empty sequence
 *   included) and on one row per sequence (seq_off NULL), with and without a residual and dropout, with the outputs
 *   aliasing their inputs where the contract allows, in fp32 and with bf16 activation storage (ops_act_precision);
 *   parameter gradients accumulate onto random values;
 * - the backward passes against central finite differences of the fused forward: dropout + residual + LayerNorm
 *   (dropout on: the gradient of x, of res, of gamma and of beta) and GELU over a biased input (x and the bias);
 * - linear_gelu (the FFN's linear + bias + GELU) equals ops_linear then ops_gelu bit for bit, with and without a
 *   bias, in fp32 and bf16 storage, in bf16 also through the weights' working copy;
 * - a row count that does not match the sequences dies naming the op.
 * The CUDA kernels are held to these same ops by test_cuda_fused_ops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>
#include <unistd.h>

#include "ops.h"
#include "rng.h"
#include "testutil.h"

static TuRng rng = {0x9E3779B97F4A7C15ULL};
static float *rand_vec(size_t n, float scale) { return tu_rng_vec(&rng, n, scale); }
static float *copy_of(const float *x, size_t n) {
    float *c = malloc(n * sizeof(float));
    memcpy(c, x, n * sizeof(float));
    return c;
}

static Backend *be;

/* Packed rows: lengths with an empty sequence, H wide enough for rng.h's 64-element blocks and a tail. */
static const int kLens[] = {5, 0, 17, 1, 33, 2};
#define NS ((int)(sizeof kLens / sizeof kLens[0]))

static void same_bits(const char *what, const float *got, const float *want, size_t n) {
    size_t diff = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(got + i, want + i, sizeof(float)) != 0 && diff++ == 0) first = i;
    TU_CHECK(diff == 0, "%s: %zu of %zu values differ from the unfused sequence's (first [%zu]: %.9g vs %.9g)", what,
             diff, n, first, diff ? got[first] : 0.0f, diff ? want[first] : 0.0f);
}

/* ---- dropout + residual + LayerNorm: forward and backward against the unfused sequence ---- */
static void check_ln_case(int packed, int with_res, float p, int H, const char *prec) {
    int32_t off[NS + 1];
    off[0] = 0;
    for (int s = 0; s < NS; s++) off[s + 1] = off[s] + kLens[s];
    int S = NS, n = packed ? off[S] : S;
    const int32_t *so = packed ? off : NULL;
    size_t nh = (size_t)n * H;
    uint64_t ids[NS];
    for (int s = 0; s < S; s++) ids[s] = 0x100000000ull * (uint64_t)(s + 1) + 31u * (uint64_t)s;
    XrDropout d = {p, rng_key(7, 3, 17), ids};
    const XrDropout *dp = p > 0 ? &d : NULL;
    float *x = rand_vec(nh, 1.5f), *res = with_res ? rand_vec(nh, 1) : NULL, *g = rand_vec(H, 0.5f);
    float *b = rand_vec(H, 0.5f);
    for (int j = 0; j < H; j++) g[j] += 1.0f;
    float *out = malloc(nh * 4), *v = malloc(nh * 4), *mean = malloc(n * 4 + 4), *rstd = malloc(n * 4 + 4);
    float *out2 = malloc(nh * 4), *v2 = malloc(nh * 4), *mean2 = malloc(n * 4 + 4), *rstd2 = malloc(n * 4 + 4);
    char what[160];
    const char *lay = packed ? "packed" : "rows";
#define NAME(s) (snprintf(what, sizeof what, "%s %s H=%d %s p=%.2f %s: %s", prec, lay, H, with_res ? "res" : "no res", \
                          (double)p, "dropout_add_layernorm", s), what)
    ops_dropout_add_layernorm(be, out, v, mean, rstd, x, res, g, b, so, S, n, H, 1e-12f, dp);
    ops_dropout_add(be, v2, x, res, so, S, H, dp);
    ops_layernorm(be, out2, mean2, rstd2, v2, NULL, g, b, n, H, 1e-12f);
    same_bits(NAME("out"), out, out2, nh);
    same_bits(NAME("v"), v, v2, nh);
    same_bits(NAME("mean"), mean, mean2, (size_t)n);
    same_bits(NAME("rstd"), rstd, rstd2, (size_t)n);
    /* v aliasing x, out aliasing res (or x when there is none) */
    float *xa = copy_of(x, nh), *ra = res ? copy_of(res, nh) : NULL;
    ops_dropout_add_layernorm(be, ra ? ra : out, xa, mean, rstd, xa, ra, g, b, so, S, n, H, 1e-12f, dp);
    same_bits(NAME("v aliasing x"), xa, v2, nh);
    if (ra) same_bits(NAME("out aliasing res"), ra, out2, nh);

    /* backward: dres (overwrite), dx = dropout(dres), dg and db accumulating onto random values */
    float *dout = rand_vec(nh, 1), *dg = rand_vec(H, 1), *db = rand_vec(H, 1), *dg2 = copy_of(dg, H);
    float *db2 = copy_of(db, H), *dres = malloc(nh * 4), *dx = malloc(nh * 4), *dres2 = malloc(nh * 4);
    float *dx2 = malloc(nh * 4);
    ops_dropout_add_layernorm_backward(be, dres, dx, dg, db, dout, v, mean, rstd, g, so, S, n, H, dp);
    ops_layernorm_backward(be, dres2, dg2, db2, dout, v2, mean2, rstd2, g, n, H, 0);
    ops_dropout_add(be, dx2, dres2, NULL, so, S, H, dp);
    same_bits(NAME("backward dres"), dres, dres2, nh);
    same_bits(NAME("backward dx"), dx, dx2, nh);
    same_bits(NAME("backward dg (+=)"), dg, dg2, (size_t)H);
    same_bits(NAME("backward db (+=)"), db, db2, (size_t)H);
    /* dres aliasing dout */
    float *da = copy_of(dout, nh);
    ops_dropout_add_layernorm_backward(be, da, dx, dg, db, da, v, mean, rstd, g, so, S, n, H, dp);
    ops_layernorm_backward(be, dres2, dg2, db2, dout, v2, mean2, rstd2, g, n, H, 0);
    same_bits(NAME("backward dres aliasing dout"), da, dres2, nh);
    same_bits(NAME("backward dx (dres aliasing dout)"), dx, dx2, nh);
    same_bits(NAME("backward dg (2nd +=)"), dg, dg2, (size_t)H);
#undef NAME
    free(x), free(res), free(g), free(b), free(out), free(v), free(mean), free(rstd), free(out2), free(v2), free(mean2);
    free(rstd2), free(xa), free(ra), free(dout), free(dg), free(db), free(dg2), free(db2), free(dres), free(dx);
    free(dres2), free(dx2), free(da);
}

/* ---- bias + GELU backward against gelu_backward then linear_backward's bias sums ---- */
static void check_gelu_case(int M, int N, const char *prec) {
    size_t mn = (size_t)M * N;
    float *x = rand_vec(mn, 4), *dy = rand_vec(mn, 1), *db = rand_vec(N, 1), *db2 = copy_of(db, N);
    float *dx = malloc(mn * 4), *dx2 = malloc(mn * 4);
    char what[128];
    ops_gelu_bias_backward(be, dx, db, x, dy, M, N);
    ops_gelu_backward(be, dx2, x, dy, mn);
    ops_linear_backward(be, NULL, NULL, db2, dx2, NULL, NULL, M, N, 1, 0);
    snprintf(what, sizeof what, "%s gelu_bias_backward M=%d N=%d dx", prec, M, N);
    same_bits(what, dx, dx2, mn);
    snprintf(what, sizeof what, "%s gelu_bias_backward M=%d N=%d db (+=)", prec, M, N);
    same_bits(what, db, db2, (size_t)N);
    /* dx aliasing dy; db NULL */
    float *a = copy_of(dy, mn);
    ops_gelu_bias_backward(be, a, NULL, x, a, M, N);
    snprintf(what, sizeof what, "%s gelu_bias_backward M=%d N=%d dx aliasing dy, no db", prec, M, N);
    same_bits(what, a, dx2, mn);
    free(x), free(dy), free(db), free(db2), free(dx), free(dx2), free(a);
}

/* ---- linear + bias + GELU forward against ops_linear then ops_gelu; with bf16 storage also through a working copy
 * of the weights (W and b views inside a registered master buffer, W at an unaligned offset) ---- */
static void check_linear_gelu_case(int M, int N, int K, int copy, const char *prec) {
    size_t mn = (size_t)M * N, nm = 5 + (size_t)N * K + N;
    float *x = rand_vec((size_t)M * K, 2), *master = rand_vec(nm, 0.5f), *W = master + 5, *b = W + (size_t)N * K;
    float *g = malloc(mn * 4), *f = malloc(mn * 4), *g2 = malloc(mn * 4), *f2 = malloc(mn * 4);
    char what[160];
    if (copy) ops_bf16_weights(be, master, nm);
    ops_linear_gelu(be, g, f, x, W, b, M, N, K);
    ops_linear(be, f2, x, W, b, M, N, K);
    ops_gelu(be, g2, f2, mn);
    snprintf(what, sizeof what, "%s%s linear_gelu M=%d N=%d K=%d f", prec, copy ? " (working copy)" : "", M, N, K);
    same_bits(what, f, f2, mn);
    snprintf(what, sizeof what, "%s%s linear_gelu M=%d N=%d K=%d g", prec, copy ? " (working copy)" : "", M, N, K);
    same_bits(what, g, g2, mn);
    /* no bias */
    ops_linear_gelu(be, g, f, x, W, NULL, M, N, K);
    ops_linear(be, f2, x, W, NULL, M, N, K);
    ops_gelu(be, g2, f2, mn);
    snprintf(what, sizeof what, "%s%s linear_gelu M=%d N=%d K=%d no bias g", prec, copy ? " (working copy)" : "", M,
             N, K);
    same_bits(what, g, g2, mn);
    if (copy) ops_bf16_weights(be, NULL, 0);
    free(x), free(master), free(g), free(f), free(g2), free(f2);
}

static void test_equal_to_sequence(void) {
    const char *precs[] = {"fp32", "bf16"};
    for (int pr = 0; pr < 2; pr++) {
        ops_act_precision(be, pr ? XR_PREC_BF16 : XR_PREC_FP32);
        int cases = 0;
        for (int packed = 0; packed < 2; packed++)
            for (int with_res = 0; with_res < 2; with_res++)
                for (int k = 0; k < 3; k++) {
                    float p = k == 0 ? 0.0f : k == 1 ? 0.1f : 0.5f;
                    check_ln_case(packed, with_res, p, 97, precs[pr]);
                    check_ln_case(packed, with_res, p, 1, precs[pr]);
                    cases += 2;
                }
        check_gelu_case(300, 211, precs[pr]); /* past XR_PAR_MIN: the threads' column ranges */
        check_gelu_case(1, 7, precs[pr]);
        check_gelu_case(65, 1, precs[pr]);
        int lg[][3] = {{300, 211, 67}, {1, 7, 1}, {65, 1, 33}};
        for (int k = 0; k < 3; k++)
            for (int copy = 0; copy <= pr; copy++)
                check_linear_gelu_case(lg[k][0], lg[k][1], lg[k][2], copy, precs[pr]);
        printf("%s: dropout_add_layernorm (+ backward) equal to the unfused ops bit for bit in %d cases; "
               "gelu_bias_backward in 3 shapes; linear_gelu in 3 shapes%s\n", precs[pr], cases,
               pr ? " (with and without the weights' working copy)" : "");
    }
    ops_act_precision(be, XR_PREC_FP32);
}

/* ---- finite differences of sum(w * out) ---- */

typedef void (*FwdFn)(void *ctx);

static double objective(const float *out, const float *w, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * out[i];
    return s;
}

/* Central differences for every element of `in` against `grad`: max |fd - grad| / max |grad| <= tol. */
static void fd_check(const char *what, float *in, size_t n_in, const float *grad, FwdFn fwd, void *ctx,
                     const float *out, const float *w, size_t n_out, double h, double tol) {
    double gmax = 0, worst = 0, wfd = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n_in; i++) gmax = fmax(gmax, fabs(grad[i]));
    for (size_t i = 0; i < n_in; i++) {
        float v0 = in[i], vp = (float)(v0 + h), vm = (float)(v0 - h);
        in[i] = vp;
        fwd(ctx);
        double lp = objective(out, w, n_out);
        in[i] = vm;
        fwd(ctx);
        double lm = objective(out, w, n_out);
        in[i] = v0;
        double fd = (lp - lm) / ((double)vp - (double)vm), e = fabs(fd - grad[i]);
        if (e > worst) worst = e, wi = i, wfd = fd;
    }
    fwd(ctx);
    double rel = worst / (gmax > 0 ? gmax : 1);
    TU_CHECK(gmax > 0, "%s: gradient is all zero", what);
    TU_CHECK(rel <= tol, "%s: finite differences differ by %.3g (relative to max |grad| %.3g) at [%zu]: analytic %.7g "
             "fd %.7g", what, rel, gmax, wi, grad[wi], wfd);
    printf("  %-44s fd max rel err %.2e (max |grad| %.3g)\n", what, rel, gmax);
}

#define FD_H 1e-2
#define FD_TOL 2e-3

typedef struct {
    int S, n, H;
    const int32_t *off;
    const XrDropout *d;
    float *x, *res, *g, *b, *out, *v, *mean, *rstd;
} LnCtx;

static void ln_fwd(void *p) {
    LnCtx *c = p;
    ops_dropout_add_layernorm(be, c->out, c->v, c->mean, c->rstd, c->x, c->res, c->g, c->b, c->off, c->S, c->n, c->H,
                              1e-5f, c->d);
}

static void test_ln_finite_differences(void) {
    int32_t off[] = {0, 3, 3, 7, 8};
    uint64_t ids[] = {11, 2, 40, 9};
    XrDropout d = {0.2f, rng_key(5, 1, 2), ids};
    LnCtx c = {4, 8, 37, off, &d, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t nh = (size_t)c.n * c.H;
    c.x = rand_vec(nh, 1.5f), c.res = rand_vec(nh, 1), c.g = rand_vec(c.H, 0.5f), c.b = rand_vec(c.H, 0.5f);
    for (int j = 0; j < c.H; j++) c.g[j] += 1.0f;
    c.out = calloc(nh, 4), c.v = calloc(nh, 4), c.mean = calloc(c.n, 4), c.rstd = calloc(c.n, 4);
    float *w = rand_vec(nh, 1), *dres = calloc(nh, 4), *dx = calloc(nh, 4), *dg = calloc(c.H, 4);
    float *db = calloc(c.H, 4);
    ln_fwd(&c);
    ops_dropout_add_layernorm_backward(be, dres, dx, dg, db, w, c.v, c.mean, c.rstd, c.g, c.off, c.S, c.n, c.H, &d);
    size_t dropped = 0;
    for (size_t i = 0; i < nh; i++) dropped += dx[i] == 0.0f;
    TU_CHECK(dropped > nh / 10 && dropped < nh / 3, "dropout_add_layernorm: %zu of %zu gradients dropped at p = 0.2",
             dropped, nh);
    fd_check("dropout_add_layernorm dx (dropout 0.2)", c.x, nh, dx, ln_fwd, &c, c.out, w, nh, FD_H, FD_TOL);
    fd_check("dropout_add_layernorm dres", c.res, nh, dres, ln_fwd, &c, c.out, w, nh, FD_H, FD_TOL);
    fd_check("dropout_add_layernorm dgamma", c.g, (size_t)c.H, dg, ln_fwd, &c, c.out, w, nh, FD_H, FD_TOL);
    fd_check("dropout_add_layernorm dbeta", c.b, (size_t)c.H, db, ln_fwd, &c, c.out, w, nh, FD_H, FD_TOL);
    free(c.x), free(c.res), free(c.g), free(c.b), free(c.out), free(c.v), free(c.mean), free(c.rstd), free(w);
    free(dres), free(dx), free(dg), free(db);
}

typedef struct {
    int M, N;
    float *x, *bias, *z, *out;
} GeluCtx;

/* out = GELU(x + bias), the bias broadcast over rows: what a linear layer's bias feeds into the GELU */
static void gelu_fwd(void *p) {
    GeluCtx *c = p;
    for (int i = 0; i < c->M; i++)
        for (int j = 0; j < c->N; j++) c->z[(size_t)i * c->N + j] = c->x[(size_t)i * c->N + j] + c->bias[j];
    ops_gelu(be, c->out, c->z, (size_t)c->M * c->N);
}

static void test_gelu_finite_differences(void) {
    GeluCtx c = {9, 23, NULL, NULL, NULL, NULL};
    size_t mn = (size_t)c.M * c.N;
    c.x = rand_vec(mn, 3), c.bias = rand_vec(c.N, 1), c.z = calloc(mn, 4), c.out = calloc(mn, 4);
    float *w = rand_vec(mn, 1), *dx = calloc(mn, 4), *db = calloc(c.N, 4);
    gelu_fwd(&c);
    ops_gelu_bias_backward(be, dx, db, c.z, w, c.M, c.N);
    fd_check("gelu_bias_backward dx", c.x, mn, dx, gelu_fwd, &c, c.out, w, mn, 1e-3, FD_TOL);
    fd_check("gelu_bias_backward db", c.bias, (size_t)c.N, db, gelu_fwd, &c, c.out, w, mn, 1e-3, FD_TOL);
    free(c.x), free(c.bias), free(c.z), free(c.out), free(w), free(dx), free(db);
}

/* A row count that does not match the sequences is a caller's bug: the op dies naming itself. */
static void test_rows_mismatch(void) {
    int fd[2];
    if (pipe(fd) != 0) xr_die("pipe failed");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        int32_t off[] = {0, 2, 5};
        float buf[64] = {0}, g[4] = {1, 1, 1, 1}, st[8];
        ops_dropout_add_layernorm(be, buf, buf + 32, st, st + 4, buf, NULL, g, g, off, 2, 4, 4, 1e-5f, NULL);
        _exit(0);
    }
    close(fd[1]);
    char out[1024];
    size_t got = 0;
    for (ssize_t k; got < sizeof out - 1 && (k = read(fd[0], out + got, sizeof out - 1 - got)) > 0;) got += (size_t)k;
    out[got] = '\0';
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    TU_CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "4 rows for sequences of 5 rows were accepted");
    TU_CHECK(strstr(out, "dropout_add_layernorm") && strstr(out, "rows"), "the message does not name the op: \"%s\"",
             out);
    printf("rows mismatch refused: %s", out);
}

int main(void) {
    be = ops_backend_cpu(2);
    test_equal_to_sequence();
    test_ln_finite_differences();
    test_gelu_finite_differences();
    test_rows_mismatch();
    ops_backend_free(be);
    return tu_finish("test_fused_ops");
}
