/* test_grad_ops.c: every backward op of the CPU backend against central finite differences of its forward op on
 * random inputs (never zeros), with the objective sum(w * out) accumulated in double; linear also against a
 * double-precision reference. Then what the trainer relies on: dropout masks that depend only on
 * (key, sequence id, position) (not on packing or threads, keep rate 1 - p, scale 1/(1-p)); bitwise-equal
 * gradients for 1 and 3 threads; and the op-level AdamW, scale and sum-of-squares arithmetic. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "rng.h"
#include "testutil.h"

static TuRng rng = {0x243F6A8885A308D3ULL};
static double urand(void) { return tu_rng_unit(&rng); }
static float *rand_vec(size_t n, float scale) { return tu_rng_vec(&rng, n, scale); }
static float *zeros(size_t n) { return calloc(n, sizeof(float)); }

static Backend *be;

/* ---- finite differences ---- */

typedef void (*FwdFn)(void *ctx);

static double objective(const float *out, const float *w, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * out[i];
    return s;
}

/* Central differences of sum(w * out) for every element of `in` (or `stride`-spaced ones), against `grad`.
 * Error measure: max |fd - grad| / max |grad| (normwise). Returns it after checking it against tol. */
static double fd_check(const char *what, float *in, size_t n_in, const float *grad, FwdFn fwd, void *ctx,
                       const float *out, const float *w, size_t n_out, double h, double tol, size_t stride) {
    double gmax = 0, worst = 0;
    size_t wi = 0;
    double wfd = 0;
    for (size_t i = 0; i < n_in; i++) gmax = fmax(gmax, fabs(grad[i]));
    for (size_t i = 0; i < n_in; i += stride) {
        float v = in[i], vp = (float)(v + h), vm = (float)(v - h);
        in[i] = vp;
        fwd(ctx);
        double lp = objective(out, w, n_out);
        in[i] = vm;
        fwd(ctx);
        double lm = objective(out, w, n_out);
        in[i] = v;
        double fd = (lp - lm) / ((double)vp - (double)vm);
        double e = fabs(fd - grad[i]);
        if (e > worst) worst = e, wi = i, wfd = fd;
    }
    fwd(ctx);
    double rel = worst / (gmax > 0 ? gmax : 1);
    TU_CHECK(rel <= tol, "%s: finite differences differ by %.3g (relative to max |grad| %.3g) at [%zu]: "
                         "analytic %.7g fd %.7g", what, rel, gmax, wi, grad[wi], wfd);
    TU_CHECK(gmax > 0, "%s: gradient is all zero", what);
    printf("  %-34s fd max rel err %.2e  (max |grad| %.3g)\n", what, rel, gmax);
    return rel;
}

#define FD_H 1e-2
#define FD_TOL 2e-3

/* ---- linear ---- */

typedef struct {
    int M, N, K;
    float *x, *W, *b, *y;
} LinCtx;
static void lin_fwd(void *p) {
    LinCtx *c = p;
    ops_linear(be, c->y, c->x, c->W, c->b, c->M, c->N, c->K);
}

static void test_linear(void) {
    LinCtx c = {13, 11, 9, NULL, NULL, NULL, NULL};
    int M = c.M, N = c.N, K = c.K;
    c.x = rand_vec((size_t)M * K, 1), c.W = rand_vec((size_t)N * K, 1), c.b = rand_vec(N, 1);
    c.y = zeros((size_t)M * N);
    float *w = rand_vec((size_t)M * N, 1);
    float *dx = rand_vec((size_t)M * K, 1), *dW0 = rand_vec((size_t)N * K, 1), *db0 = rand_vec(N, 1);
    float *dW = malloc((size_t)N * K * 4), *db = malloc((size_t)N * 4), *dx2 = malloc((size_t)M * K * 4);
    float *dx0 = malloc((size_t)M * K * 4);
    memcpy(dW, dW0, (size_t)N * K * 4), memcpy(db, db0, (size_t)N * 4), memcpy(dx2, dx, (size_t)M * K * 4);
    memcpy(dx0, dx, (size_t)M * K * 4);
    lin_fwd(&c);
    ops_linear_backward(be, dx, dW, db, w, c.x, c.W, M, N, K, 0);
    ops_linear_backward(be, dx2, NULL, NULL, w, c.x, c.W, M, N, K, 1);
    /* double reference; parameter gradients accumulate onto what was there */
    double e_dx = 0, e_dW = 0, e_db = 0, e_acc = 0;
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int j = 0; j < N; j++) s += (double)w[i * N + j] * c.W[j * K + k];
            e_dx = fmax(e_dx, fabs(dx[i * K + k] - s));
            e_acc = fmax(e_acc, fabs(dx2[i * K + k] - (dx0[i * K + k] + s)));
        }
    for (int j = 0; j < N; j++) {
        double sb = db0[j];
        for (int i = 0; i < M; i++) sb += w[i * N + j];
        e_db = fmax(e_db, fabs(db[j] - sb));
        for (int k = 0; k < K; k++) {
            double s = dW0[j * K + k];
            for (int i = 0; i < M; i++) s += (double)w[i * N + j] * c.x[i * K + k];
            e_dW = fmax(e_dW, fabs(dW[j * K + k] - s));
        }
    }
    TU_CHECK(e_dx < 1e-5 && e_dW < 1e-5 && e_db < 1e-5, "linear backward vs double: dx %.3g dW %.3g db %.3g", e_dx,
             e_dW, e_db);
    TU_CHECK(e_acc < 1e-5, "linear backward accumulate_dx: %.3g", e_acc);
    printf("  linear vs double reference          dx %.2e dW %.2e db %.2e\n", e_dx, e_dW, e_db);
    /* finite differences on the gradients alone (zeroed accumulators) */
    memset(dW, 0, (size_t)N * K * 4), memset(db, 0, (size_t)N * 4);
    ops_linear_backward(be, dx, dW, db, w, c.x, c.W, M, N, K, 0);
    fd_check("linear dx", c.x, (size_t)M * K, dx, lin_fwd, &c, c.y, w, (size_t)M * N, FD_H, FD_TOL, 1);
    fd_check("linear dW", c.W, (size_t)N * K, dW, lin_fwd, &c, c.y, w, (size_t)M * N, FD_H, FD_TOL, 1);
    fd_check("linear db", c.b, (size_t)N, db, lin_fwd, &c, c.y, w, (size_t)M * N, FD_H, FD_TOL, 1);
    free(c.x), free(c.W), free(c.b), free(c.y), free(w), free(dx), free(dW0), free(db0), free(dW), free(db);
    free(dx2), free(dx0);
}

/* ---- embeddings: repeated ids, positions and types ---- */

typedef struct {
    int n, H;
    int32_t *ids, *pos, *types;
    float *word, *posw, *type, *out;
} EmbCtx;
static void emb_fwd(void *p) {
    EmbCtx *c = p;
    ops_embed(be, c->out, c->ids, c->pos, c->types, c->word, c->posw, c->type, c->n, c->H);
}

static void test_embed(void) {
    EmbCtx c = {0};
    c.n = 19, c.H = 24;
    int V = 7, P = 6, T = 3, n = c.n, H = c.H;
    c.ids = malloc(n * 4), c.pos = malloc(n * 4), c.types = malloc(n * 4);
    for (int i = 0; i < n; i++) c.ids[i] = i % 5 == 0 ? 3 : (int)(urand() * V), c.pos[i] = i % P, c.types[i] = i % T;
    c.word = rand_vec((size_t)V * H, 1), c.posw = rand_vec((size_t)P * H, 1), c.type = rand_vec((size_t)T * H, 1);
    c.out = zeros((size_t)n * H);
    float *w = rand_vec((size_t)n * H, 1);
    float *dw = zeros((size_t)V * H), *dp = zeros((size_t)P * H), *dt = zeros((size_t)T * H);
    emb_fwd(&c);
    ops_embed_backward(be, dw, dp, dt, w, c.ids, c.pos, c.types, n, H);
    fd_check("embed dword", c.word, (size_t)V * H, dw, emb_fwd, &c, c.out, w, (size_t)n * H, FD_H, FD_TOL, 1);
    fd_check("embed dpos", c.posw, (size_t)P * H, dp, emb_fwd, &c, c.out, w, (size_t)n * H, FD_H, FD_TOL, 1);
    fd_check("embed dtype", c.type, (size_t)T * H, dt, emb_fwd, &c, c.out, w, (size_t)n * H, FD_H, FD_TOL, 1);
    free(c.ids), free(c.pos), free(c.types), free(c.word), free(c.posw), free(c.type), free(c.out), free(w);
    free(dw), free(dp), free(dt);
}

/* ---- LayerNorm with its fused residual ---- */

typedef struct {
    int n, H;
    float *x, *res, *g, *b, *out, *mean, *rstd;
} LnCtx;
static void ln_fwd(void *p) {
    LnCtx *c = p;
    ops_layernorm(be, c->out, c->mean, c->rstd, c->x, c->res, c->g, c->b, c->n, c->H, 1e-5f);
}

static void test_layernorm(void) {
    LnCtx c = {0};
    c.n = 7, c.H = 37;
    size_t nH = (size_t)c.n * c.H;
    c.x = rand_vec(nH, 1.5f), c.res = rand_vec(nH, 1), c.g = rand_vec(c.H, 1), c.b = rand_vec(c.H, 1);
    for (int j = 0; j < c.H; j++) c.g[j] += 1.0f;
    c.out = zeros(nH), c.mean = zeros(c.n), c.rstd = zeros(c.n);
    float *w = rand_vec(nH, 1), *in = zeros(nH), *dx = zeros(nH), *dg = zeros(c.H), *db = zeros(c.H);
    ln_fwd(&c);
    for (size_t i = 0; i < nH; i++) in[i] = c.x[i] + c.res[i];
    ops_layernorm_backward(be, dx, dg, db, w, in, c.mean, c.rstd, c.g, c.n, c.H, 0);
    fd_check("layernorm dx", c.x, nH, dx, ln_fwd, &c, c.out, w, nH, FD_H, FD_TOL, 1);
    fd_check("layernorm dres", c.res, nH, dx, ln_fwd, &c, c.out, w, nH, FD_H, FD_TOL, 1);
    fd_check("layernorm dgamma", c.g, c.H, dg, ln_fwd, &c, c.out, w, nH, FD_H, FD_TOL, 1);
    fd_check("layernorm dbeta", c.b, c.H, db, ln_fwd, &c, c.out, w, nH, FD_H, FD_TOL, 1);
    /* accumulate adds; dx may alias dout */
    float *acc = rand_vec(nH, 1), *acc0 = malloc(nH * 4), *alias = malloc(nH * 4);
    memcpy(acc0, acc, nH * 4), memcpy(alias, w, nH * 4);
    ops_layernorm_backward(be, acc, dg, db, w, in, c.mean, c.rstd, c.g, c.n, c.H, 1);
    ops_layernorm_backward(be, alias, dg, db, alias, in, c.mean, c.rstd, c.g, c.n, c.H, 0);
    double ea = 0, el = 0;
    for (size_t i = 0; i < nH; i++) {
        ea = fmax(ea, fabs(acc[i] - (acc0[i] + dx[i])));
        el = fmax(el, fabs(alias[i] - dx[i]));
    }
    TU_CHECK(ea < 1e-5 && el == 0, "layernorm backward: accumulate %.3g, aliased dout %.3g", ea, el);
    free(c.x), free(c.res), free(c.g), free(c.b), free(c.out), free(c.mean), free(c.rstd), free(w), free(in);
    free(dx), free(dg), free(db), free(acc), free(acc0), free(alias);
}

/* ---- elementwise: GELU, tanh ---- */

typedef struct {
    size_t n;
    float *x, *y;
    int which;
} EwCtx;
static void ew_fwd(void *p) {
    EwCtx *c = p;
    if (c->which == 0)
        ops_gelu(be, c->y, c->x, c->n);
    else
        ops_tanh(be, c->y, c->x, c->n);
}

static void test_elementwise(void) {
    EwCtx c = {0};
    c.n = 301;
    c.x = rand_vec(c.n, 4), c.y = zeros(c.n);
    float *w = rand_vec(c.n, 1), *dx = zeros(c.n);
    c.which = 0;
    ew_fwd(&c);
    ops_gelu_backward(be, dx, c.x, w, c.n);
    fd_check("gelu", c.x, c.n, dx, ew_fwd, &c, c.y, w, c.n, 1e-3, FD_TOL, 1);
    /* exact derivative over a wide range against the closed form in double */
    double worst = 0;
    for (int i = -800; i <= 800; i++) {
        float v = i / 100.0f, one = 1.0f, d;
        ops_gelu_backward(be, &d, &v, &one, 1);
        double ref = 0.5 * (1 + erf(v / sqrt(2.0))) + v * exp(-0.5 * (double)v * v) / sqrt(2 * 3.14159265358979323846);
        worst = fmax(worst, fabs(d - ref));
    }
    TU_CHECK(worst < 1e-6, "gelu derivative vs erf closed form: %.3g", worst);
    printf("  gelu' vs closed form on [-8, 8]     max abs err %.2e\n", worst);
    c.which = 1;
    ew_fwd(&c);
    ops_tanh_backward(be, dx, c.y, w, c.n);
    fd_check("tanh", c.x, c.n, dx, ew_fwd, &c, c.y, w, c.n, 1e-3, FD_TOL, 1);
    free(c.x), free(c.y), free(w), free(dx);
}

/* ---- attention over packed sequences, full and first-row, with and without dropout ---- */

typedef struct {
    int S, NH, dh, max_len, first_only;
    int32_t *off;
    float *qkv, *out, *att;
    XrDropout *d;
} AttCtx;
static void att_fwd(void *p) {
    AttCtx *c = p;
    ops_attention_train(be, c->out, c->att, c->qkv, c->off, c->S, c->max_len, c->NH, c->dh, c->first_only, c->d);
}

static void test_attention(void) {
    int32_t off[] = {0, 5, 22, 23, 31};
    uint64_t ids[] = {11, 7, 123456789012ull, 3};
    AttCtx c = {0};
    c.S = 4, c.NH = 2, c.dh = 8, c.max_len = 17, c.off = off;
    int N = off[c.S], H = c.NH * c.dh;
    c.qkv = rand_vec((size_t)N * 3 * H, 1.5f);
    c.out = zeros((size_t)N * H), c.att = zeros((size_t)c.NH * N * c.max_len);
    float *dqkv = zeros((size_t)N * 3 * H), *w = rand_vec((size_t)N * H, 1);
    XrDropout d = {0.3f, rng_key(5, 9, 1), ids};
    for (int first = 0; first < 2; first++)
        for (int drop = 0; drop < 2; drop++) {
            c.first_only = first, c.d = drop ? &d : NULL;
            int rows = first ? c.S : N;
            att_fwd(&c);
            ops_attention_backward(be, dqkv, w, c.qkv, c.att, off, c.S, c.max_len, c.NH, c.dh, first, c.d);
            char what[64];
            snprintf(what, sizeof what, "attention%s%s dqkv", first ? " first-row" : "", drop ? " dropout" : "");
            fd_check(what, c.qkv, (size_t)N * 3 * H, dqkv, att_fwd, &c, c.out, w, (size_t)rows * H, FD_H, FD_TOL, 1);
            /* the training forward gives what inference gives (no dropout) */
            if (!drop) {
                float *ref = zeros((size_t)N * H);
                if (first)
                    ops_attention_first(be, ref, c.qkv, off, c.S, c.max_len, c.NH, c.dh);
                else
                    ops_attention(be, ref, NULL, c.qkv, off, c.S, c.max_len, c.NH, c.dh);
                double e = tu_check_close("attention_train = attention", c.out, ref, (size_t)rows * H, 0);
                (void)e;
                free(ref);
            }
        }
    /* first-row dropout masks equal the full attention's row 0 masks: the last-layer shortcut changes nothing
     * (up to the GEMMs' rounding for a different row count) */
    float *full = zeros((size_t)N * H), *first = zeros((size_t)c.S * H);
    ops_attention_train(be, full, c.att, c.qkv, off, c.S, c.max_len, c.NH, c.dh, 0, &d);
    ops_attention_train(be, first, c.att, c.qkv, off, c.S, c.max_len, c.NH, c.dh, 1, &d);
    for (int s = 0; s < c.S; s++)
        tu_check_close("attention dropout: first-row = row 0 of full", first + (size_t)s * H,
                       full + (size_t)off[s] * H, (size_t)H, 1e-6);
    free(full), free(first);
    free(c.qkv), free(c.out), free(c.att), free(dqkv), free(w);
}

/* ---- poolings, L2 norm, dropout ---- */

typedef struct {
    int S, H, which;
    int32_t *off;
    float *x, *out, *res;
    XrDropout *d;
} PoolCtx;
static void pool_fwd(void *p) {
    PoolCtx *c = p;
    if (c->which == 0) ops_pool_first(be, c->out, c->x, c->off, c->S, c->H);
    if (c->which == 1) ops_pool_mean(be, c->out, c->x, c->off, c->S, c->H);
    if (c->which == 2) ops_l2norm(be, c->out, c->x, c->off[c->S], c->H);
    if (c->which == 3) ops_dropout_add(be, c->out, c->x, c->res, c->off, c->S, c->H, c->d);
}

static void test_pool_norm_dropout(void) {
    int32_t off[] = {0, 3, 4, 12};
    uint64_t ids[] = {5, 99, 1};
    PoolCtx c = {0};
    c.S = 3, c.H = 10, c.off = off;
    int N = off[c.S], H = c.H;
    c.x = rand_vec((size_t)N * H, 1), c.out = zeros((size_t)N * H), c.res = rand_vec((size_t)N * H, 1);
    float *w = rand_vec((size_t)N * H, 1), *dx = zeros((size_t)N * H);
    const char *names[] = {"pool_first", "pool_mean", "l2norm"};
    for (int k = 0; k < 3; k++) {
        c.which = k;
        pool_fwd(&c);
        memset(dx, 0, (size_t)N * H * 4);
        if (k == 0) ops_pool_first_backward(be, dx, w, off, c.S, H);
        if (k == 1) ops_pool_mean_backward(be, dx, w, off, c.S, H);
        if (k == 2) ops_l2norm_backward(be, dx, w, c.x, N, H);
        fd_check(names[k], c.x, (size_t)N * H, dx, pool_fwd, &c, c.out, w, (size_t)(k == 2 ? N : c.S) * H, FD_H,
                 FD_TOL, 1);
    }
    XrDropout d = {0.25f, rng_key(1, 2, 3), ids};
    c.which = 3, c.d = &d;
    pool_fwd(&c);
    ops_dropout_add(be, dx, w, NULL, off, c.S, H, &d);
    fd_check("dropout_add dx", c.x, (size_t)N * H, dx, pool_fwd, &c, c.out, w, (size_t)N * H, FD_H, FD_TOL, 1);
    fd_check("dropout_add dres", c.res, (size_t)N * H, w, pool_fwd, &c, c.out, w, (size_t)N * H, FD_H, FD_TOL, 1);
    free(c.x), free(c.out), free(c.res), free(w), free(dx);
}

/* Dropout masks: rate, scale, and a function of (key, id, position) only. */
static void test_dropout_mask(void) {
    int H = 64, S = 50, L = 40, N = S * L;
    int32_t *off = malloc((S + 1) * 4);
    uint64_t *ids = malloc(S * 8);
    for (int s = 0; s <= S; s++) off[s] = s * L;
    for (int s = 0; s < S; s++) ids[s] = 1000 + 17 * (uint64_t)s;
    float *x = malloc((size_t)N * H * 4), *y = zeros((size_t)N * H);
    for (size_t i = 0; i < (size_t)N * H; i++) x[i] = 1.0f;
    XrDropout d = {0.1f, rng_key(42, 7, 3), ids};
    ops_dropout_add(be, y, x, NULL, off, S, H, &d);
    size_t kept = 0, bad = 0;
    for (size_t i = 0; i < (size_t)N * H; i++) {
        kept += y[i] != 0;
        bad += y[i] != 0 && fabsf(y[i] - 1.0f / 0.9f) > 1e-6f;
    }
    double rate = (double)kept / ((double)N * H);
    TU_CHECK(fabs(rate - 0.9) < 0.005 && bad == 0, "dropout p=0.1 keeps %.4f, %zu kept values not 1/(1-p)", rate, bad);
    printf("  dropout p=0.1: keep rate %.4f over %d elements\n", rate, N * H);
    /* the kernels' masks are rng.h's definition: element j of position t of sequence id keeps when output j % 4
     * of Philox(key, {j / 4, t, id lo, id hi}) >= thr (checked on H = 64 + 7: vector blocks and scalar tail) */
    {
        int W = 71;
        float *ones = malloc(W * 4 * 3), *o = zeros((size_t)W * 3);
        for (int i = 0; i < W * 3; i++) ones[i] = 1.0f;
        int32_t off3[] = {0, 3};
        XrDropout d3 = {0.3f, rng_key(9, 9, 9), ids + 5};
        ops_dropout_add(be, o, ones, NULL, off3, 1, W, &d3);
        size_t wrong = 0;
        uint32_t thr = rng_drop_threshold(0.3f);
        for (int t = 0; t < 3; t++)
            for (int j = 0; j < W; j++) {
                uint32_t ctr[4] = {(uint32_t)(j / 4), (uint32_t)t, (uint32_t)ids[5], (uint32_t)(ids[5] >> 32)}, r[4];
                rng_philox(r, ctr, d3.key);
                wrong += (r[j % 4] >= thr) != (o[t * W + j] != 0.0f);
            }
        TU_CHECK(wrong == 0, "dropout mask differs from rng.h's definition in %zu elements", wrong);
        free(ones), free(o);
    }
    /* sequence 17 alone (its id, positions from 0) gets the same mask as inside the batch */
    int32_t one_off[] = {0, L};
    XrDropout d1 = {0.1f, d.key, ids + 17};
    float *y1 = zeros((size_t)L * H);
    ops_dropout_add(be, y1, x, NULL, one_off, 1, H, &d1);
    tu_check_close("dropout mask independent of packing", y1, y + (size_t)off[17] * H, (size_t)L * H, 0);
    /* first-token rows (seq_off NULL) = position 0 of the packed rows */
    float *xf = malloc((size_t)S * H * 4), *yf = zeros((size_t)S * H);
    for (size_t i = 0; i < (size_t)S * H; i++) xf[i] = 1.0f;
    ops_dropout_add(be, yf, xf, NULL, NULL, S, H, &d);
    for (int s = 0; s < S; s++)
        tu_check_close("dropout first-token rows = position 0", yf + (size_t)s * H, y + (size_t)off[s] * H,
                       (size_t)H, 0);
    /* another key, another mask; p = 0 is the identity (plus res) */
    XrDropout d2 = d;
    d2.key = rng_key(42, 8, 3);
    float *y2 = zeros((size_t)N * H);
    ops_dropout_add(be, y2, x, NULL, off, S, H, &d2);
    size_t same = 0;
    for (size_t i = 0; i < (size_t)N * H; i++) same += (y2[i] != 0) == (y[i] != 0);
    TU_CHECK(same < (size_t)N * H * 0.85, "dropout: next step's mask agrees on %zu of %d", same, N * H);
    XrDropout d0 = {0.0f, d.key, ids};
    ops_dropout_add(be, y2, x, x, off, S, H, &d0);
    size_t not2 = 0;
    for (size_t i = 0; i < (size_t)N * H; i++) not2 += y2[i] != 2.0f;
    TU_CHECK(not2 == 0, "dropout p=0 with res: %zu elements differ from x + res", not2);
    free(off), free(ids), free(x), free(y), free(y1), free(xf), free(yf), free(y2);
}

/* Gradients that sum over tokens are bitwise the same for 1 and 3 threads (sizes above the parallel cutoffs). */
static void test_thread_invariance(void) {
    int n = 1500, H = 96, V = 50;
    size_t nH = (size_t)n * H;
    float *dy = rand_vec(nH, 1), *x = rand_vec(nH, 1), *g = rand_vec(H, 1), *mean = rand_vec(n, 0.1f);
    float *rstd = rand_vec(n, 0.5f);
    for (int i = 0; i < n; i++) rstd[i] += 1.0f;
    int32_t *ids = malloc(n * 4), *pos = malloc(n * 4);
    for (int i = 0; i < n; i++) ids[i] = (int)(urand() * V), pos[i] = i % 37;
    float *out[2][5];
    double ssq[2];
    for (int t = 0; t < 2; t++) {
        ops_set_threads(be, t ? 3 : 1);
        out[t][0] = zeros(nH), out[t][1] = zeros(H), out[t][2] = zeros(H), out[t][3] = zeros((size_t)V * H);
        out[t][4] = zeros((size_t)40 * H);
        ops_layernorm_backward(be, out[t][0], out[t][1], out[t][2], dy, x, mean, rstd, g, n, H, 0);
        float *db = zeros(H);
        ops_linear_backward(be, NULL, NULL, db, dy, x, NULL, n, H, 0, 0);
        for (int j = 0; j < H; j++) out[t][2][j] += db[j];
        free(db);
        ops_embed_backward(be, out[t][3], out[t][4], NULL, dy, ids, pos, NULL, n, H);
        ssq[t] = ops_sum_squares(be, dy, nH);
    }
    ops_set_threads(be, 2);
    size_t sizes[5] = {nH, (size_t)H, (size_t)H, (size_t)V * H, (size_t)40 * H};
    const char *names[5] = {"layernorm dx", "layernorm dgamma", "layernorm dbeta + bias", "embed dword",
                            "embed dpos"};
    for (int k = 0; k < 5; k++) {
        TU_CHECK(memcmp(out[0][k], out[1][k], sizes[k] * 4) == 0, "%s differs between 1 and 3 threads", names[k]);
        free(out[0][k]), free(out[1][k]);
    }
    TU_CHECK(ssq[0] == ssq[1], "sum of squares differs between threads: %.17g %.17g", ssq[0], ssq[1]);
    double ref = 0;
    for (size_t i = 0; i < nH; i++) ref += (double)dy[i] * dy[i];
    TU_CHECK(fabs(ssq[0] - ref) < 1e-9 * ref, "sum of squares %.17g, reference %.17g", ssq[0], ref);
    free(dy), free(x), free(g), free(mean), free(rstd), free(ids), free(pos);
}

/* ops_adamw against torch's formula evaluated in double for two steps, weight decay on and off; ops_scale. */
static void test_adamw_op(void) {
    size_t n = 1000;
    float *p = rand_vec(n, 1), *g = rand_vec(n, 1), *m = zeros(n), *v = zeros(n);
    double *P = malloc(n * 8), *Mm = calloc(n, 8), *Vv = calloc(n, 8);
    for (size_t i = 0; i < n; i++) P[i] = p[i];
    double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    double worst = 0;
    for (int step = 1; step <= 2; step++) {
        double wd = step == 1 ? 0.01 : 0.0;
        ops_adamw(be, p, g, m, v, n, lr, b1, b2, eps, wd, step);
        for (size_t i = 0; i < n; i++) {
            P[i] *= 1 - lr * wd;
            Mm[i] = b1 * Mm[i] + (1 - b1) * g[i];
            Vv[i] = b2 * Vv[i] + (1 - b2) * (double)g[i] * g[i];
            P[i] -= lr / (1 - pow(b1, step)) * Mm[i] / (sqrt(Vv[i]) / sqrt(1 - pow(b2, step)) + eps);
            worst = fmax(worst, fabs(p[i] - P[i]));
        }
    }
    TU_CHECK(worst < 1e-6, "ops_adamw vs double formula: %.3g", worst);
    printf("  adamw op vs double formula (2 steps) max abs diff %.2e\n", worst);
    ops_scale(be, g, n, 0.5f);
    ops_zero(be, m, n);
    TU_CHECK(m[0] == 0 && m[n - 1] == 0, "ops_zero");
    free(p), free(g), free(m), free(v), free(P), free(Mm), free(Vv);
}

/* The backward passes' GEMMs (alpha 1, beta 0 or 1, any transposition) on both CPU GEMM paths, at sizes that
 * cut every block of xrank's AVX-512 kernel, against a double loop. */
static void test_backward_gemm(void) {
    const char *kinds[] = {"openblas", "avx512"};
    const int M = 181, N = 67, K = 300;
    for (int kind = 0; kind < 2; kind++) {
        setenv("XR_CPU_GEMM", kinds[kind], 1); /* read when a backend is made */
        Backend *b2 = ops_backend_cpu(2);
        unsetenv("XR_CPU_GEMM");
        if (kind == 1 && strcmp(ops_cpu_gemm_kernel(b2), "xrank-avx512") != 0) {
            printf("  no AVX-512 on this CPU: xrank's GEMM kernel not tested for the backward\n");
            ops_backend_free(b2);
            continue;
        }
        double worst = 0;
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int beta = 0; beta < 2; beta++) {
                    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
                    float *A = rand_vec((size_t)(ta ? K : M) * lda, 1), *B = rand_vec((size_t)(tb ? N : K) * ldb, 1);
                    float *C = rand_vec((size_t)M * ldc, 1), *C0 = malloc((size_t)M * ldc * 4);
                    memcpy(C0, C, (size_t)M * ldc * 4);
                    ops_gemm(b2, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, (float)beta, C, ldc);
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < ldc; j++) {
                            double ref = C0[(size_t)i * ldc + j];
                            if (j < N) {
                                double sum = 0;
                                for (int k = 0; k < K; k++)
                                    sum += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                                           (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                                ref = beta ? ref + sum : sum;
                            }
                            worst = fmax(worst, fabs(C[(size_t)i * ldc + j] - ref));
                        }
                    free(A), free(B), free(C), free(C0);
                }
        TU_CHECK(worst < 5e-5, "backward GEMMs (%s): max abs diff %.3g", ops_cpu_gemm_kernel(b2), worst);
        printf("  gemm alpha 1, beta 0/1, 4 transpositions (%s): max abs diff %.2e\n", ops_cpu_gemm_kernel(b2), worst);
        ops_backend_free(b2);
    }
}

int main(void) {
    be = ops_backend_cpu(2);
    test_backward_gemm();
    test_linear();
    test_embed();
    test_layernorm();
    test_elementwise();
    test_attention();
    test_pool_norm_dropout();
    test_dropout_mask();
    test_thread_invariance();
    test_adamw_op();
    ops_backend_free(be);
    return tu_finish("test_grad_ops");
}
