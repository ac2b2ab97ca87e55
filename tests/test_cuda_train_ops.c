/* test_cuda_train_ops: every training op of the CUDA backend (core/cuda/train_ops.cu) through the op API against
 * the CPU backend, on random inputs (never zeros), odd widths and packed ragged sequences of lengths 1, 63, 64, 65,
 * 127, 128, 129, 300 and 512; outputs that an op overwrites are poisoned with NaN before the call, so an element
 * it fails to write fails the comparison; outputs it accumulates into start from random values. Within 1e-5
 * relative in fp32 (cmp_rel); dropout masks must be identical (same dropped elements); every GPU op run twice
 * gives the same bits. Skipped (77) when built without the CUDA backend or when no GPU is visible. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "testutil.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

#ifdef XR_HAVE_CUDA
#define XR_CUDA_TEST_SEED 0xD1B54A32D192ED03ull
#include "cuda_testutil.h"

#define RTOL 1e-5

static const int kLens[] = {1, 63, 64, 65, 127, 128, 129, 300, 512};
#define NSEQ ((int)(sizeof kLens / sizeof kLens[0]))

static float *host_copy(const float *h, size_t n) {
    float *c = xr_malloc(n * sizeof(float));
    memcpy(c, h, n * sizeof(float));
    return c;
}

/* Packed sequences: seq_off on the host and the device. */
typedef struct {
    int S, N, max_len;
    int32_t off[NSEQ + 1];
    int32_t *doff;
} Packed;

static Packed packed(Backend *g) {
    Packed p;
    p.S = NSEQ, p.off[0] = 0, p.max_len = 0;
    for (int s = 0; s < NSEQ; s++) {
        p.off[s + 1] = p.off[s] + kLens[s];
        if (kLens[s] > p.max_len) p.max_len = kLens[s];
    }
    p.N = p.off[NSEQ];
    p.doff = up(g, p.off, sizeof p.off);
    return p;
}

/* ---- element-wise ops, zero, scale, sum of squares, AdamW ---- */
static void check_elementwise(Backend *c, Backend *g) {
    size_t n = 100003;
    float *x = rnd(n, -4, 4), *dy = rnd(n, -1, 1), *y = xr_malloc(n * 4), *dx = xr_malloc(n * 4);
    float *dX = up(g, x, n * 4), *dDY = up(g, dy, n * 4), *d1 = dev_nan(g, n), *d2 = dev_nan(g, n);
    ops_gelu_backward(c, dx, x, dy, n);
    ops_gelu_backward(g, d1, dX, dDY, n);
    cmp_rel(g, "gelu_backward", dx, d1, n, RTOL);
    ops_gelu_backward(g, d2, dX, dDY, n);
    same_bits(g, "gelu_backward", d1, d2, n);
    /* dx aliasing dy */
    float *dA = up(g, dy, n * 4);
    ops_gelu_backward(g, dA, dX, dA, n);
    cmp_rel(g, "gelu_backward (dx = dy)", dx, dA, n, RTOL);

    for (size_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
    float *dY = up(g, y, n * 4);
    ops_tanh_backward(c, dx, y, dy, n);
    ops_tanh_backward(g, d1, dY, dDY, n);
    cmp_rel(g, "tanh_backward", dx, d1, n, RTOL);
    ops_to_device(g, dA, dy, n * 4);
    ops_tanh_backward(g, dA, dY, dA, n);
    cmp_rel(g, "tanh_backward (dx = dy)", dx, dA, n, RTOL);

    float *s = host_copy(x, n);
    ops_scale(c, s, n, -0.37f);
    ops_to_device(g, d1, x, n * 4);
    ops_scale(g, d1, n, -0.37f);
    cmp_rel(g, "scale", s, d1, n, 0);
    ops_zero(g, d1, n - 1); /* the last element stays: zero writes exactly n */
    memset(s, 0, (n - 1) * 4);
    s[n - 1] = x[n - 1] * -0.37f;
    cmp(g, "zero", s, d1, n, 0);

    /* sum of squares: double, fixed order; compared in double */
    size_t big = 3 * 16384 + 777;
    float *v = rnd(big, -2, 2), *dV = up(g, v, big * 4);
    double sc = ops_sum_squares(c, v, big), sg = ops_sum_squares(g, dV, big), sg2 = ops_sum_squares(g, dV, big);
    TU_CHECK(fabs(sc - sg) <= 1e-12 * sc, "sum_squares: cpu %.17g gpu %.17g", sc, sg);
    TU_CHECK(memcmp(&sg, &sg2, sizeof sg) == 0, "sum_squares: two GPU runs %.17g %.17g", sg, sg2);
    double s1c = ops_sum_squares(c, v, 5), s1g = ops_sum_squares(g, dV, 5);
    TU_CHECK(fabs(s1c - s1g) <= 1e-12 * s1c, "sum_squares (5): cpu %.17g gpu %.17g", s1c, s1g);
    printf("%-48s n=%-8zu cpu %.17g gpu %.17g\n", "sum_squares", big, sc, sg);

    /* AdamW: three steps with weight decay, then one without; parameters, moments after each */
    float *p = rnd(n, -1, 1), *m = rnd(n, -0.01f, 0.01f), *v2 = rnd(n, 1e-6f, 1e-4f);
    float *dP = up(g, p, n * 4), *dM = up(g, m, n * 4), *dV2 = up(g, v2, n * 4);
    float *dP2 = up(g, p, n * 4), *dM2 = up(g, m, n * 4), *dV22 = up(g, v2, n * 4);
    for (int step = 1; step <= 4; step++) {
        double wd = step < 4 ? 0.01 : 0.0;
        ops_adamw(c, p, dy, m, v2, n, 2e-5, 0.9, 0.999, 1e-8, wd, step);
        ops_adamw(g, dP, dDY, dM, dV2, n, 2e-5, 0.9, 0.999, 1e-8, wd, step);
        ops_adamw(g, dP2, dDY, dM2, dV22, n, 2e-5, 0.9, 0.999, 1e-8, wd, step);
    }
    cmp_rel(g, "adamw p (4 steps)", p, dP, n, RTOL);
    cmp_rel(g, "adamw m", m, dM, n, RTOL);
    cmp_rel(g, "adamw v", v2, dV2, n, RTOL);
    same_bits(g, "adamw p", dP, dP2, n);
    same_bits(g, "adamw v", dV2, dV22, n);
    ops_free(g, dP), ops_free(g, dM), ops_free(g, dV2), ops_free(g, dP2), ops_free(g, dM2), ops_free(g, dV22);
    ops_free(g, dX), ops_free(g, dDY), ops_free(g, d1), ops_free(g, d2), ops_free(g, dA), ops_free(g, dY);
    ops_free(g, dV);
    free(x), free(dy), free(y), free(dx), free(s), free(v), free(p), free(m), free(v2);
}

/* ---- linear backward: dX (overwrite and accumulate), dW and db accumulate ---- */
static void check_linear_backward(Backend *c, Backend *g, const Packed *pk) {
    int M = pk->N, N = 97, K = 389;
    size_t mn = (size_t)M * N, mk = (size_t)M * K, nk = (size_t)N * K;
    float *dy = rnd(mn, -1, 1), *x = rnd(mk, -1, 1), *W = rnd(nk, -0.2f, 0.2f);
    float *dW = rnd(nk, -1, 1), *db = rnd(N, -1, 1), *dx0 = rnd(mk, -1, 1), *dx = xr_malloc(mk * 4);
    float *gdy = up(g, dy, mn * 4), *gx = up(g, x, mk * 4), *gW = up(g, W, nk * 4);
    float *gdW = up(g, dW, nk * 4), *gdb = up(g, db, N * 4), *gdx = dev_nan(g, mk);
    float *gdW2 = up(g, dW, nk * 4), *gdb2 = up(g, db, N * 4), *gdx2 = dev_nan(g, mk);
    ops_linear_backward(c, dx, dW, db, dy, x, W, M, N, K, 0);
    ops_linear_backward(g, gdx, gdW, gdb, gdy, gx, gW, M, N, K, 0);
    ops_linear_backward(g, gdx2, gdW2, gdb2, gdy, gx, gW, M, N, K, 0);
    cmp_rel(g, "linear_backward dx", dx, gdx, mk, RTOL);
    cmp_rel(g, "linear_backward dW (+=)", dW, gdW, nk, RTOL);
    cmp_rel(g, "linear_backward db (+=)", db, gdb, N, RTOL);
    same_bits(g, "linear_backward dx", gdx, gdx2, mk);
    same_bits(g, "linear_backward dW", gdW, gdW2, nk);
    same_bits(g, "linear_backward db", gdb, gdb2, N);
    /* accumulate into dx, no bias, no dW */
    memcpy(dx, dx0, mk * 4);
    ops_to_device(g, gdx, dx0, mk * 4);
    ops_linear_backward(c, dx, NULL, NULL, dy, x, W, M, N, K, 1);
    ops_linear_backward(g, gdx, NULL, NULL, gdy, gx, gW, M, N, K, 1);
    cmp_rel(g, "linear_backward dx (+=, no dW/db)", dx, gdx, mk, RTOL);
    /* odd small shapes: one row, one output */
    ops_linear_backward(c, dx, dW, db, dy, x, W, 1, 1, K, 0);
    ops_linear_backward(g, gdx, gdW, gdb, gdy, gx, gW, 1, 1, K, 0);
    cmp_rel(g, "linear_backward M=1 N=1 dW", dW, gdW, nk, RTOL);
    cmp_rel(g, "linear_backward M=1 N=1 db", db, gdb, N, RTOL);
    ops_free(g, gdy), ops_free(g, gx), ops_free(g, gW), ops_free(g, gdW), ops_free(g, gdb), ops_free(g, gdx);
    ops_free(g, gdW2), ops_free(g, gdb2), ops_free(g, gdx2);
    free(dy), free(x), free(W), free(dW), free(db), free(dx0), free(dx);
}

/* ---- LayerNorm backward, from a real forward's statistics ---- */
static void check_layernorm_backward(Backend *c, Backend *g, const Packed *pk) {
    int n = pk->N, H = 389;
    size_t nh = (size_t)n * H;
    float *x = rnd(nh, -3, 3), *gam = rnd(H, 0.5f, 1.5f), *bet = rnd(H, -0.5f, 0.5f), *y = xr_malloc(nh * 4);
    float *mean = xr_malloc(n * 4), *rstd = xr_malloc(n * 4);
    ops_layernorm(c, y, mean, rstd, x, NULL, gam, bet, n, H, 1e-12f);
    float *dout = rnd(nh, -1, 1), *dg = rnd(H, -1, 1), *db = rnd(H, -1, 1), *dx = xr_malloc(nh * 4);
    float *gx = up(g, x, nh * 4), *gmean = up(g, mean, n * 4), *grstd = up(g, rstd, n * 4), *ggam = up(g, gam, H * 4);
    float *gdout = up(g, dout, nh * 4), *gdg = up(g, dg, H * 4), *gdb = up(g, db, H * 4), *gdx = dev_nan(g, nh);
    float *gdg2 = up(g, dg, H * 4), *gdb2 = up(g, db, H * 4), *gdx2 = dev_nan(g, nh);
    ops_layernorm_backward(c, dx, dg, db, dout, x, mean, rstd, gam, n, H, 0);
    ops_layernorm_backward(g, gdx, gdg, gdb, gdout, gx, gmean, grstd, ggam, n, H, 0);
    ops_layernorm_backward(g, gdx2, gdg2, gdb2, gdout, gx, gmean, grstd, ggam, n, H, 0);
    cmp_rel(g, "layernorm_backward dx", dx, gdx, nh, RTOL);
    cmp_rel(g, "layernorm_backward dg (+=)", dg, gdg, H, RTOL);
    cmp_rel(g, "layernorm_backward db (+=)", db, gdb, H, RTOL);
    same_bits(g, "layernorm_backward dx", gdx, gdx2, nh);
    same_bits(g, "layernorm_backward dg", gdg, gdg2, H);
    same_bits(g, "layernorm_backward db", gdb, gdb2, H);
    /* accumulate, with dx aliasing dout (the parameter sums must read dout before dx overwrites it) */
    float *acc = rnd(nh, -1, 1), *dxa = host_copy(dout, nh);
    ops_layernorm_backward(c, dxa, dg, db, dxa, x, mean, rstd, gam, n, H, 0);
    ops_to_device(g, gdx, dout, nh * 4);
    ops_layernorm_backward(g, gdx, gdg, gdb, gdx, gx, gmean, grstd, ggam, n, H, 0);
    cmp_rel(g, "layernorm_backward dx = dout", dxa, gdx, nh, RTOL);
    cmp_rel(g, "layernorm_backward dg (2nd +=)", dg, gdg, H, RTOL);
    memcpy(dx, acc, nh * 4);
    ops_to_device(g, gdx, acc, nh * 4);
    ops_layernorm_backward(c, dx, dg, db, dout, x, mean, rstd, gam, n, H, 1);
    ops_layernorm_backward(g, gdx, gdg, gdb, gdout, gx, gmean, grstd, ggam, n, H, 1);
    cmp_rel(g, "layernorm_backward dx (+=)", dx, gdx, nh, RTOL);
    cmp_rel(g, "layernorm_backward db (3rd +=)", db, gdb, H, RTOL);
    ops_free(g, gx), ops_free(g, gmean), ops_free(g, grstd), ops_free(g, ggam), ops_free(g, gdout);
    ops_free(g, gdg), ops_free(g, gdb), ops_free(g, gdx), ops_free(g, gdg2), ops_free(g, gdb2), ops_free(g, gdx2);
    free(x), free(gam), free(bet), free(y), free(mean), free(rstd), free(dout), free(dg), free(db), free(dx);
    free(acc), free(dxa);
}

/* ---- pooling and L2 norm backward ---- */
static void check_pool_l2norm(Backend *c, Backend *g, const Packed *pk) {
    int S = pk->S, N = pk->N, H = 389;
    size_t nh = (size_t)N * H, sh = (size_t)S * H;
    float *dx = rnd(nh, -1, 1), *dout = rnd(sh, -1, 1);
    float *gdx = up(g, dx, nh * 4), *gdout = up(g, dout, sh * 4);
    ops_pool_first_backward(c, dx, dout, pk->off, S, H);
    ops_pool_first_backward(g, gdx, gdout, pk->doff, S, H);
    cmp_rel(g, "pool_first_backward (+=)", dx, gdx, nh, RTOL);
    ops_pool_mean_backward(c, dx, dout, pk->off, S, H);
    ops_pool_mean_backward(g, gdx, gdout, pk->doff, S, H);
    cmp_rel(g, "pool_mean_backward (+=)", dx, gdx, nh, RTOL);
    /* an empty sequence in the middle: its first-token gradient lands on the next sequence's first row */
    int32_t off2[4] = {0, 3, 3, 7};
    int32_t *goff2 = up(g, off2, sizeof off2);
    ops_pool_first_backward(c, dx, dout, off2, 3, H);
    ops_pool_first_backward(g, gdx, gdout, goff2, 3, H);
    cmp_rel(g, "pool_first_backward (empty sequence)", dx, gdx, nh, RTOL);
    ops_pool_mean_backward(c, dx, dout, off2, 3, H);
    ops_pool_mean_backward(g, gdx, gdout, goff2, 3, H);
    cmp_rel(g, "pool_mean_backward (empty sequence)", dx, gdx, nh, RTOL);

    /* L2 norm backward; row 5 is all zeros (the clamped norm's branch) */
    int n = N;
    float *x = rnd(nh, -1, 1), *dy = rnd(nh, -1, 1), *o = xr_malloc(nh * 4);
    memset(x + 5 * (size_t)H, 0, (size_t)H * 4);
    float *gx = up(g, x, nh * 4), *gdy = up(g, dy, nh * 4), *go = dev_nan(g, nh), *go2 = dev_nan(g, nh);
    ops_l2norm_backward(c, o, dy, x, n, H);
    ops_l2norm_backward(g, go, gdy, gx, n, H);
    ops_l2norm_backward(g, go2, gdy, gx, n, H);
    cmp_rel(g, "l2norm_backward", o, go, nh, RTOL);
    same_bits(g, "l2norm_backward", go, go2, nh);
    ops_l2norm_backward(g, gdy, gdy, gx, n, H);
    cmp_rel(g, "l2norm_backward (dx = dy)", o, gdy, nh, RTOL);
    ops_free(g, gdx), ops_free(g, gdout), ops_free(g, goff2), ops_free(g, gx), ops_free(g, gdy), ops_free(g, go);
    ops_free(g, go2);
    free(dx), free(dout), free(x), free(dy), free(o);
}

/* ---- embedding backward: repeated ids summed in token order, on three tables ---- */
static void check_embed_backward(Backend *c, Backend *g, const Packed *pk) {
    int n = pk->N, H = 389, V = 101, P = 513, T = 2;
    int32_t *ids = xr_malloc(n * 4), *pos = xr_malloc(n * 4), *types = xr_malloc(n * 4);
    for (int s = 0; s < pk->S; s++)
        for (int k = pk->off[s]; k < pk->off[s + 1]; k++) pos[k] = k - pk->off[s];
    for (int i = 0; i < n; i++) ids[i] = (int)(urand(0, 1) * V) % V, types[i] = (i / 7) % T;
    ids[0] = V - 1, ids[n - 1] = 0; /* both ends of the table */
    size_t nh = (size_t)n * H;
    float *dout = rnd(nh, -1, 1), *w = rnd((size_t)V * H, -1, 1), *pe = rnd((size_t)P * H, -1, 1);
    float *te = rnd((size_t)T * H, -1, 1);
    int32_t *gids = up(g, ids, n * 4), *gpos = up(g, pos, n * 4), *gtypes = up(g, types, n * 4);
    float *gdout = up(g, dout, nh * 4);
    float *gw = up(g, w, (size_t)V * H * 4), *gpe = up(g, pe, (size_t)P * H * 4), *gte = up(g, te, (size_t)T * H * 4);
    float *gw2 = up(g, w, (size_t)V * H * 4), *gpe2 = up(g, pe, (size_t)P * H * 4);
    float *gte2 = up(g, te, (size_t)T * H * 4);
    ops_embed_backward(c, w, pe, te, dout, ids, pos, types, n, H);
    ops_embed_backward(g, gw, gpe, gte, gdout, gids, gpos, gtypes, n, H);
    ops_embed_backward(g, gw2, gpe2, gte2, gdout, gids, gpos, gtypes, n, H);
    cmp_rel(g, "embed_backward word (+=)", w, gw, (size_t)V * H, RTOL);
    cmp_rel(g, "embed_backward pos (+=)", pe, gpe, (size_t)P * H, RTOL);
    cmp_rel(g, "embed_backward type (+=)", te, gte, (size_t)T * H, RTOL);
    same_bits(g, "embed_backward word", gw, gw2, (size_t)V * H);
    same_bits(g, "embed_backward pos", gpe, gpe2, (size_t)P * H);
    same_bits(g, "embed_backward type", gte, gte2, (size_t)T * H);
    /* types NULL: every token on type row 0 */
    ops_embed_backward(c, w, pe, te, dout, ids, pos, NULL, n, H);
    ops_embed_backward(g, gw, gpe, gte, gdout, gids, gpos, NULL, n, H);
    cmp_rel(g, "embed_backward type (types NULL)", te, gte, (size_t)T * H, RTOL);
    /* dtype NULL: the type table untouched */
    ops_embed_backward(c, w, pe, NULL, dout, ids, pos, types, 77, H);
    ops_embed_backward(g, gw, gpe, NULL, gdout, gids, gpos, gtypes, 77, H);
    cmp_rel(g, "embed_backward word (77 tokens, no type)", w, gw, (size_t)V * H, RTOL);
    cmp_rel(g, "embed_backward type untouched", te, gte, (size_t)T * H, RTOL);
    ops_free(g, gids), ops_free(g, gpos), ops_free(g, gtypes), ops_free(g, gdout), ops_free(g, gw), ops_free(g, gpe);
    ops_free(g, gte), ops_free(g, gw2), ops_free(g, gpe2), ops_free(g, gte2);
    free(ids), free(pos), free(types), free(dout), free(w), free(pe), free(te);
}

/* ---- dropout: the same dropped elements as the CPU ---- */
static void check_dropout(Backend *c, Backend *g, const Packed *pk) {
    int S = pk->S, N = pk->N, H = 389;
    size_t nh = (size_t)N * H;
    uint64_t ids[NSEQ];
    for (int s = 0; s < S; s++) ids[s] = 0x100000000ull * (uint64_t)(s + 3) + 977u * (uint64_t)s; /* high bits too */
    uint64_t *gids = up(g, ids, sizeof ids);
    XrDropout dc = {0.1f, 0x0123456789ABCDEFull, ids}, dg = {0.1f, 0x0123456789ABCDEFull, gids};
    float *x = rnd(nh, 0.5f, 1.5f), *res = rnd(nh, -1, 1), *out = xr_malloc(nh * 4);
    float *gx = up(g, x, nh * 4), *gres = up(g, res, nh * 4), *go = dev_nan(g, nh), *go2 = dev_nan(g, nh);
    ops_dropout_add(c, out, x, res, pk->off, S, H, &dc);
    ops_dropout_add(g, go, gx, gres, pk->doff, S, H, &dg);
    ops_dropout_add(g, go2, gx, gres, pk->doff, S, H, &dg);
    cmp_rel(g, "dropout_add (res, packed)", out, go, nh, RTOL);
    same_bits(g, "dropout_add", go, go2, nh);
    ops_dropout_add(c, out, x, NULL, pk->off, S, H, &dc);
    ops_to_device(g, go, x, nh * 4);
    ops_dropout_add(g, go, go, NULL, pk->doff, S, H, &dg); /* out = x in place */
    size_t dropped = 0;
    for (size_t i = 0; i < nh; i++) dropped += out[i] == 0.0f;
    size_t mm = zero_mismatch(g, out, go, nh);
    TU_CHECK(mm == 0, "dropout_add: %zu of %zu mask elements differ from the CPU's", mm, nh);
    TU_CHECK(dropped > nh / 20 && dropped < nh / 5, "dropout_add: %zu of %zu dropped at p = 0.1", dropped, nh);
    cmp_rel(g, "dropout_add (no res, in place)", out, go, nh, RTOL);
    printf("%-48s %zu of %zu dropped, %zu differ from the CPU\n", "dropout_add mask", dropped, nh, mm);
    /* seq_off NULL: S rows, each its sequence's first token; seq_ids NULL */
    XrDropout dc0 = {0.25f, 42, NULL}, dg0 = {0.25f, 42, NULL};
    ops_to_device(g, go, out, (size_t)S * H * 4); /* rows past S must stay as they are */
    float *o2 = host_copy(out, nh);
    ops_dropout_add(c, o2, x, res, NULL, S, H, &dc0);
    ops_dropout_add(g, go, gx, gres, NULL, S, H, &dg0);
    cmp_rel(g, "dropout_add (rows, ids NULL)", o2, go, (size_t)S * H, RTOL);
    /* p = 0: plain residual add, and a copy */
    XrDropout off0 = {0.0f, 7, NULL};
    ops_dropout_add(c, out, x, res, pk->off, S, H, &off0);
    ops_dropout_add(g, go, gx, gres, pk->doff, S, H, NULL);
    cmp_rel(g, "dropout_add (p = 0)", out, go, nh, 0);
    ops_dropout_add(c, out, x, NULL, pk->off, S, H, NULL);
    ops_to_device(g, go, res, nh * 4);
    ops_dropout_add(g, go, gx, NULL, pk->doff, S, H, &off0);
    cmp_rel(g, "dropout_add (p = 0, copy)", out, go, nh, 0);
    ops_free(g, gids), ops_free(g, gx), ops_free(g, gres), ops_free(g, go), ops_free(g, go2);
    free(x), free(res), free(out), free(o2);
}

/* ---- attention for training and its backward, full and first row, with and without dropout ---- */
static void check_attention(Backend *c, Backend *g, const Packed *pk, int NH, int dh, int first_only, float p) {
    int S = pk->S, N = pk->N, H = NH * dh, nq_rows = first_only ? S : N;
    size_t natt = 0;
    for (int s = 0; s < S; s++) natt += (size_t)(first_only ? 1 : kLens[s]) * kLens[s];
    natt *= NH;
    size_t nqkv = (size_t)N * 3 * H, nout = (size_t)nq_rows * H;
    uint64_t ids[NSEQ];
    for (int s = 0; s < S; s++) ids[s] = 1000003u * (uint64_t)(s + 1) << 20;
    uint64_t *gids = up(g, ids, sizeof ids);
    XrDropout dc = {p, 0xFEEDFACECAFEBEEFull, ids}, dg = {p, 0xFEEDFACECAFEBEEFull, gids};
    float *qkv = rnd(nqkv, -1.5f, 1.5f), *out = xr_malloc(nout * 4), *att = xr_malloc(natt * 4);
    float *dout = rnd(nout, -1, 1), *dqkv = xr_malloc(nqkv * 4);
    float *gqkv = up(g, qkv, nqkv * 4), *gdout = up(g, dout, nout * 4);
    float *go = dev_nan(g, nout), *gatt = dev_nan(g, natt), *gd = dev_nan(g, nqkv);
    float *go2 = dev_nan(g, nout), *gatt2 = dev_nan(g, natt), *gd2 = dev_nan(g, nqkv);
    ops_attention_train(c, out, att, qkv, pk->off, S, pk->max_len, NH, dh, first_only, &dc);
    ops_attention_train(g, go, gatt, gqkv, pk->doff, S, pk->max_len, NH, dh, first_only, &dg);
    ops_attention_train(g, go2, gatt2, gqkv, pk->doff, S, pk->max_len, NH, dh, first_only, &dg);
    ops_attention_backward(c, dqkv, dout, qkv, att, pk->off, S, pk->max_len, NH, dh, first_only, &dc);
    ops_attention_backward(g, gd, gdout, gqkv, gatt, pk->doff, S, pk->max_len, NH, dh, first_only, &dg);
    ops_attention_backward(g, gd2, gdout, gqkv, gatt, pk->doff, S, pk->max_len, NH, dh, first_only, &dg);
    char name[96];
    snprintf(name, sizeof name, "attention_train out NH=%d dh=%d%s p=%.2f", NH, dh, first_only ? " first" : "", p);
    cmp_rel(g, name, out, go, nout, RTOL);
    snprintf(name, sizeof name, "attention_train att NH=%d dh=%d%s p=%.2f", NH, dh, first_only ? " first" : "", p);
    cmp_rel(g, name, att, gatt, natt, RTOL);
    snprintf(name, sizeof name, "attention_backward NH=%d dh=%d%s p=%.2f", NH, dh, first_only ? " first" : "", p);
    cmp_rel(g, name, dqkv, gd, nqkv, RTOL);
    same_bits(g, "attention_train out", go, go2, nout);
    same_bits(g, "attention_train att", gatt, gatt2, natt);
    same_bits(g, "attention_backward", gd, gd2, nqkv);
    ops_free(g, gids), ops_free(g, gqkv), ops_free(g, gdout), ops_free(g, go), ops_free(g, gatt), ops_free(g, gd);
    ops_free(g, go2), ops_free(g, gatt2), ops_free(g, gd2);
    free(qkv), free(out), free(att), free(dout), free(dqkv);
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
    check_elementwise(c, g);
    check_linear_backward(c, g, &pk);
    check_layernorm_backward(c, g, &pk);
    check_pool_l2norm(c, g, &pk);
    check_embed_backward(c, g, &pk);
    check_dropout(c, g, &pk);
    for (int first = 0; first < 2; first++) {
        check_attention(c, g, &pk, 4, 32, first, 0.0f);
        check_attention(c, g, &pk, 4, 32, first, 0.1f);
        check_attention(c, g, &pk, 3, 64, first, 0.1f);
        check_attention(c, g, &pk, 2, 20, first, 0.3f); /* a head size that is no multiple of 32 */
    }
    cuda_ops_sync(g);
    ops_free(g, pk.doff);
    ops_backend_free(g);
    ops_backend_free(c);
    return tu_finish("test_cuda_train_ops");
#endif
}
