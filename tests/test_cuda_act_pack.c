/* test_cuda_act_pack: the CUDA backend's packed inference storage (ops_act_pack, XR_CUDA_ACT_PACK=1, bf16 GEMM mode):
 * - every packed op against the CPU backend's packed op (its test capability: the fp32 op on the widened inputs,
 *   rounded once) on the same bf16 inputs, outputs NaN-poisoned with a poisoned guard after them, ragged packed
 *   sequences (1, 63, 64, 65, 127, 128, 129, 300): each GPU value within the fp32 op's own GPU-vs-CPU bound (atol)
 *   plus one bf16 step of the larger value (a rounding that went the other way), the guard untouched, and where the
 *   two sides compute the same fp32 sums in the same order (embed, pool_first, pool_mean), every value equal;
 * - linear with bf16-valued weights and biases (the GPU reads them rounded to bf16, the CPU in fp32: equal values);
 *   and on inputs whose fp32 sums are exact (check_linear_exact), every word the exact sum rounded once: no split-K
 *   part summed in bf16, at shapes cuBLASLt splits, and with W / b views at odd offsets of the inference copy;
 * - the tiny fixture models' logits and CLS / mean embeddings against transformers within test_cuda_bf16's tolerance;
 * - the packed GPU forward (those and the hidden states) against the unpacked bf16 GPU forward within the storage
 *   bound below, and not equal to it;
 *   two packed runs bit-identical; the inference weights' bf16 copy held once across forwards and forgotten by
 *   encoder_weights_updated.
 * Storage bound: packing stores about 8 activations a layer in bf16 (qkv, context, attention output, LN1, FFN in,
 * GELU, FFN out, LN2), each a relative error <= u = 2^-8; independent errors add in quadrature, so over L layers the
 * outputs move by ~sqrt(8 L) u / sqrt(3); the bound allows 4 sqrt(8 L) u (LayerNorm and softmax amplify by a small
 * factor): 0.099 for the 5-layer fixtures.
 * Skipped (77) when built without the CUDA backend or when no GPU is visible. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_bits.h"
#include "cpu/cpu_ops.h"
#include "model.h"
#include "ops.h"
#include "testutil.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

#ifdef XR_HAVE_CUDA
#define XR_CUDA_TEST_SEED 0x9E3779B97F4A7C15ull
#include "cuda_testutil.h"

#define GUARD 64            /* poisoned bf16 words after each output */
#define POISON 0x7fc0u      /* a bf16 quiet NaN */
#define U (1.0 / 256.0)

static float wide(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* n random bf16 values in [lo, hi) (host words). */
static uint16_t *bvals(size_t n, float lo, float hi) {
    uint16_t *p = xr_malloc(n * 2);
    for (size_t i = 0; i < n; i++) p[i] = xr_bf16_bits(urand(lo, hi));
    return p;
}

/* fp32 numbers that are bf16 values (weights the GPU reads rounded: the rounding must not change them). */
static float *fvals_bf16(size_t n, float lo, float hi) {
    float *p = xr_malloc(n * 4);
    for (size_t i = 0; i < n; i++) p[i] = wide(xr_bf16_bits(urand(lo, hi)));
    return p;
}

/* A device output of n bf16 words plus the guard, all poisoned; and its host twin for the CPU op. */
static uint16_t *dev_out(Backend *g, size_t n) {
    uint16_t *h = xr_malloc((n + GUARD) * 2);
    for (size_t i = 0; i < n + GUARD; i++) h[i] = POISON;
    uint16_t *d = up(g, h, (n + GUARD) * 2);
    free(h);
    return d;
}
static uint16_t *host_out(size_t n) {
    uint16_t *h = xr_malloc((n + GUARD) * 2);
    for (size_t i = 0; i < n + GUARD; i++) h[i] = POISON;
    return h;
}

/* The packed GPU output d against the packed CPU output c (n bf16 words): |g - c| <= atol + 2^-7 max(|g|, |c|) (one
 * bf16 step, 2^-7 relative at most: a rounding that went the other way), no NaN, the guard untouched; exact 1: every
 * word equal. Returns the words that differ. */
static size_t cmp16(Backend *g, const char *what, const uint16_t *c, const uint16_t *d, size_t n, double atol,
                    int exact) {
    uint16_t *h = xr_malloc((n + GUARD) * 2);
    cuda_ops_to_host(g, h, d, (n + GUARD) * 2);
    size_t ndiff = 0, bad = 0, wi = 0, guard = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        float a = wide(h[i]), b = wide(c[i]);
        ndiff += h[i] != c[i];
        double dd = fabs((double)a - b), lim = atol + 0x1p-7 * fmax(fabs(a), fabs(b));
        if (isnan(a) || isnan(b) || dd > lim) {
            if (!bad) wi = i;
            bad++;
        }
        if (dd > worst) worst = dd;
    }
    for (size_t i = n; i < n + GUARD; i++) guard += h[i] != POISON;
    TU_CHECK(bad == 0, "%s: %zu of %zu packed values off the CPU's beyond %.1e + one bf16 step (first [%zu]: gpu "
             "%.9g cpu %.9g)", what, bad, n, atol, wi, (double)wide(h[wi]), (double)wide(c[wi]));
    TU_CHECK(guard == 0, "%s: %zu bf16 words written past the output's end", what, guard);
    TU_CHECK(!exact || ndiff == 0, "%s: %zu of %zu words differ where GPU and CPU sum in the same order", what, ndiff,
             n);
    printf("%-44s n=%-8zu %zu words differ, max abs diff %.3g (atol %.0e%s)\n", what, n, ndiff, worst, atol,
           exact ? ", exact" : "");
    free(h);
    return ndiff;
}

/* The CPU's packed output h (n bf16 words, guard after them) against the exact answer: every word equal. */
static void cmp16_host(const char *what, const uint16_t *want, const uint16_t *h, size_t n) {
    size_t ndiff = 0, first = 0, guard = 0;
    for (size_t i = 0; i < n; i++)
        if (h[i] != want[i]) first = ndiff++ ? first : i;
    for (size_t i = n; i < n + GUARD; i++) guard += h[i] != POISON;
    TU_CHECK(ndiff == 0, "%s: %zu of %zu words differ from the exact sum rounded once (first [%zu]: %.9g, want %.9g)",
             what, ndiff, n, first, (double)wide(h[first]), (double)wide(want[first]));
    TU_CHECK(guard == 0, "%s: %zu bf16 words written past the output's end", what, guard);
    printf("%-44s n=%-8zu %zu words differ (exact)\n", what, n, ndiff);
}

/* Ragged packed sequences as the model packs them (tile edges included). */
static const int kLens[] = {1, 63, 64, 65, 127, 128, 129, 300};
enum { NSEQ = sizeof kLens / sizeof kLens[0] };

static int seq_offsets(int32_t *off) {
    off[0] = 0;
    for (int s = 0; s < NSEQ; s++) off[s + 1] = off[s] + kLens[s];
    return off[NSEQ];
}

static void check_tokenwise(Backend *c, Backend *g) {
    int32_t off[NSEQ + 1];
    int N = seq_offsets(off), H = 97, V = 50, P = 310;
    size_t nh = (size_t)N * H;
    char name[96];
    /* embed: word + pos + type in the same order on both: the same fp32 sum, the same bf16 */
    {
        int32_t *ids = xr_malloc((size_t)N * 4), *pos = xr_malloc((size_t)N * 4), *ty = xr_malloc((size_t)N * 4);
        for (int i = 0; i < N; i++) ids[i] = (int)urand(0, V - 0.01f), pos[i] = (int)urand(0, P - 0.01f),
                                    ty[i] = (int)urand(0, 1.99f);
        float *wd = rnd((size_t)V * H, -1, 1), *ps = rnd((size_t)P * H, -1, 1), *tt = rnd((size_t)2 * H, -1, 1);
        uint16_t *ho = host_out(nh), *dout = dev_out(g, nh);
        int32_t *dids = up(g, ids, (size_t)N * 4), *dpos = up(g, pos, (size_t)N * 4), *dty = up(g, ty, (size_t)N * 4);
        float *dwd = up(g, wd, (size_t)V * H * 4), *dps = up(g, ps, (size_t)P * H * 4), *dtt = up(g, tt, 2 * H * 4);
        ops_embed(c, (float *)ho, ids, pos, ty, wd, ps, tt, N, H);
        ops_embed(g, (float *)dout, dids, dpos, dty, dwd, dps, dtt, N, H);
        cmp16(g, "embed packed", ho, dout, nh, 0, 1);
        cuda_ops_free(g, dids), cuda_ops_free(g, dpos), cuda_ops_free(g, dty), cuda_ops_free(g, dwd);
        cuda_ops_free(g, dps), cuda_ops_free(g, dtt), cuda_ops_free(g, dout);
        free(ids), free(pos), free(ty), free(wd), free(ps), free(tt), free(ho);
    }
    /* layernorm with and without the residual, out aliasing x; the statistics stay fp32 */
    for (int withres = 0; withres < 2; withres++) {
        uint16_t *x = bvals(nh, -3, 3), *r = bvals(nh, -1, 1);
        float *gm = rnd((size_t)H, 0.5f, 1.5f), *bt = rnd((size_t)H, -0.5f, 0.5f);
        uint16_t *hx = host_out(nh);
        memcpy(hx, x, nh * 2);
        uint16_t *dx = dev_out(g, nh);
        cuda_ops_to_device(g, dx, x, nh * 2);
        uint16_t *dr = up(g, r, nh * 2);
        float *dg = up(g, gm, (size_t)H * 4), *db = up(g, bt, (size_t)H * 4);
        float *mean = xr_malloc((size_t)N * 4), *rstd = xr_malloc((size_t)N * 4);
        float *dmean = dev_nan(g, (size_t)N), *drstd = dev_nan(g, (size_t)N);
        ops_layernorm(c, (float *)hx, mean, rstd, (float *)hx, withres ? (float *)r : NULL, gm, bt, N, H, 1e-5f);
        ops_layernorm(g, (float *)dx, dmean, drstd, (float *)dx, withres ? (float *)dr : NULL, dg, db, N, H, 1e-5f);
        snprintf(name, sizeof name, "layernorm packed%s, out = x", withres ? " + residual" : "");
        cmp16(g, name, hx, dx, nh, 2e-5, 0);
        snprintf(name, sizeof name, "layernorm packed%s: mean (fp32)", withres ? " + residual" : "");
        cmp(g, name, mean, dmean, (size_t)N, 1e-5);
        snprintf(name, sizeof name, "layernorm packed%s: rstd (fp32)", withres ? " + residual" : "");
        cmp_rel(g, name, rstd, drstd, (size_t)N, 1e-5);
        cuda_ops_free(g, dx), cuda_ops_free(g, dr), cuda_ops_free(g, dg), cuda_ops_free(g, db);
        cuda_ops_free(g, dmean), cuda_ops_free(g, drstd);
        free(x), free(r), free(gm), free(bt), free(hx), free(mean), free(rstd);
    }
    /* gelu, tanh in place */
    for (int op = 0; op < 2; op++) {
        size_t n = 10007;
        uint16_t *x = bvals(n, -5, 5), *hx = host_out(n);
        memcpy(hx, x, n * 2);
        uint16_t *dx = dev_out(g, n);
        cuda_ops_to_device(g, dx, x, n * 2);
        if (op == 0) {
            ops_gelu(c, (float *)hx, (float *)hx, n);
            ops_gelu(g, (float *)dx, (float *)dx, n);
        } else {
            ops_tanh(c, (float *)hx, (float *)hx, n);
            ops_tanh(g, (float *)dx, (float *)dx, n);
        }
        cmp16(g, op == 0 ? "gelu packed, out = x" : "tanh packed, out = x", hx, dx, n, 1e-6, 0);
        cuda_ops_free(g, dx);
        free(x), free(hx);
    }
    /* poolings over the ragged rows, then l2norm in place */
    {
        uint16_t *x = bvals(nh, -2, 2);
        uint16_t *dx = up(g, x, nh * 2);
        int32_t *doff = up(g, off, sizeof off);
        size_t ns = (size_t)NSEQ * H;
        for (int mean = 0; mean < 2; mean++) {
            uint16_t *ho = host_out(ns), *dout = dev_out(g, ns);
            if (mean) {
                ops_pool_mean(c, (float *)ho, (float *)x, off, NSEQ, H);
                ops_pool_mean(g, (float *)dout, (float *)dx, doff, NSEQ, H);
            } else {
                ops_pool_first(c, (float *)ho, (float *)x, off, NSEQ, H);
                ops_pool_first(g, (float *)dout, (float *)dx, doff, NSEQ, H);
            }
            cmp16(g, mean ? "pool_mean packed (ragged)" : "pool_first packed (ragged)", ho, dout, ns, 0, 1);
            ops_l2norm(c, (float *)ho, (float *)ho, NSEQ, H);
            ops_l2norm(g, (float *)dout, (float *)dout, NSEQ, H);
            cmp16(g, mean ? "l2norm packed (of the means), out = x" : "l2norm packed (of the firsts), out = x", ho,
                  dout, ns, 1e-6, 0);
            cuda_ops_free(g, dout);
            free(ho);
        }
        /* act_unpack: the exact widening */
        float *dwide = dev_nan(g, nh), *want = xr_malloc(nh * 4);
        for (size_t i = 0; i < nh; i++) want[i] = wide(x[i]);
        ops_act_unpack(g, dwide, (float *)dx, nh);
        float *got = xr_malloc(nh * 4);
        cuda_ops_to_host(g, got, dwide, nh * 4);
        TU_CHECK(memcmp(got, want, nh * 4) == 0, "act_unpack on the GPU is not the exact widening of bf16 words");
        printf("act_unpack packed: %zu words widened exactly\n", nh);
        cuda_ops_free(g, dx), cuda_ops_free(g, doff), cuda_ops_free(g, dwide);
        free(x), free(want), free(got);
    }
}

static void check_linear(Backend *c, Backend *g) {
    static const int Ms[] = {1, 65, 300};
    int N = 97, K = 384;
    float *W = fvals_bf16((size_t)N * K, -0.1f, 0.1f), *b = fvals_bf16((size_t)N, -1, 1);
    float *dW = up(g, W, (size_t)N * K * 4), *db = up(g, b, (size_t)N * 4);
    char name[96];
    for (size_t k = 0; k < sizeof Ms / sizeof Ms[0]; k++) {
        int M = Ms[k];
        size_t ny = (size_t)M * N;
        uint16_t *x = bvals((size_t)M * K, -1, 1);
        uint16_t *dx = up(g, x, (size_t)M * K * 2);
        for (int bias = 1; bias >= 0; bias--) {
            uint16_t *hy = host_out(ny), *dy = dev_out(g, ny);
            ops_linear(c, (float *)hy, (float *)x, W, bias ? b : NULL, M, N, K);
            unsigned long long fb = cuda_ops_packed_fallbacks(g);
            ops_linear(g, (float *)dy, (float *)dx, dW, bias ? db : NULL, M, N, K);
            /* fp32 sums in another order: <= K 2^-24 sum |x||w| ~ 384 * 6e-8 * 5 */
            snprintf(name, sizeof name, "linear packed M=%d %s (%s)", M, bias ? "+bias" : "no bias",
                     cuda_ops_packed_fallbacks(g) > fb ? "fallback" : "cuBLASLt");
            cmp16(g, name, hy, dy, ny, 1e-4, 0);
            cuda_ops_free(g, dy);
            free(hy);
        }
        cuda_ops_free(g, dx);
        free(x);
    }
    cuda_ops_free(g, dW), cuda_ops_free(g, db);
    free(W), free(b);
}

/* linear rounds once: y = bf16(fp32 sum + b). With x integers in [-16, 16], W multiples of 2^-8 in [-1/16, 1/16] and
 * b multiples of 2^-4 (all bf16 values), every product and partial sum is a multiple of 2^-8 below 2^14 (K <= 16384):
 * exact in fp32 whatever the order or split, so the packed result has one right answer, the exact sum rounded to
 * bf16, every word equal. A GEMM that adds split-K parts in bf16 (cuBLASLt's INPLACE / OUTPUT_TYPE reduction schemes
 * with a bf16 D) rounds partial sums and fails it; so does a bias rounded twice. Shapes where cuBLASLt splits K (few
 * rows, long K: a score forward's last layer, M = the batch's sequences), and one with W and b views at odd offsets
 * inside a registered inference copy (2-byte aligned A, the bias copied to an aligned buffer). The CPU's packed op
 * must give the same words (it sums in fp32 too). */
static void check_linear_exact(Backend *c, Backend *g) {
    static const int shapes[][4] = {/* M, N, K, inside a registered inference copy at an odd offset */
                                    {1, 256, 16384, 0}, {64, 1024, 4096, 0}, {8, 384, 1536, 0}, {16, 97, 2048, 1}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int M = shapes[t][0], N = shapes[t][1], K = shapes[t][2], inside = shapes[t][3];
        size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N, off = inside ? 1 : 0;
        uint16_t *x = xr_malloc(nx * 2);
        for (size_t i = 0; i < nx; i++) x[i] = xr_bf16_bits((float)((int)urand(0, 33 - 1e-3f) - 16));
        /* one buffer: [off pad][W N*K][b N] */
        float *buf = xr_malloc((off + nw + (size_t)N) * 4), *W = buf + off, *b = W + nw;
        if (off) buf[0] = 0.0f;
        for (size_t i = 0; i < nw; i++) W[i] = (float)((int)urand(0, 33 - 1e-3f) - 16) * 0x1p-8f;
        for (int j = 0; j < N; j++) b[j] = (float)((int)urand(0, 511 - 1e-3f) - 255) * 0x1p-4f;
        uint16_t *want = xr_malloc(ny * 2);
        float *xf = xr_malloc(nx * 4);
        for (size_t i = 0; i < nx; i++) xf[i] = wide(x[i]);
        size_t rounded = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                const float *xr = xf + (size_t)i * K, *wr = W + (size_t)j * K;
                double s = b[j];
                for (int k = 0; k < K; k++) s += (double)xr[k] * wr[k];
                want[(size_t)i * N + j] = xr_bf16_bits((float)s); /* s is exact in fp32 */
                rounded += (double)wide(want[(size_t)i * N + j]) != s;
            }
        uint16_t *dx = up(g, x, nx * 2);
        float *dbuf = up(g, buf, (off + nw + (size_t)N) * 4), *dW = dbuf + off, *db = dW + nw;
        if (inside) ops_infer_weights(g, dbuf, off + nw + (size_t)N);
        uint16_t *hy = host_out(ny), *dy = dev_out(g, ny);
        ops_linear(c, (float *)hy, (float *)x, W, b, M, N, K);
        unsigned long long fb = cuda_ops_packed_fallbacks(g);
        ops_linear(g, (float *)dy, (float *)dx, dW, db, M, N, K);
        int fell = cuda_ops_packed_fallbacks(g) > fb;
        if (inside) ops_infer_weights(g, dbuf, 0);
        char name[128];
        snprintf(name, sizeof name, "linear packed exact sums M=%d N=%d K=%d%s (CPU)", M, N, K,
                 inside ? " W, b at odd offsets" : "");
        cmp16_host(name, want, hy, ny);
        snprintf(name, sizeof name, "linear packed exact sums M=%d N=%d K=%d%s (%s)", M, N, K,
                 inside ? " W, b at odd offsets of the inference copy" : "", fell ? "fallback" : "cuBLASLt");
        cmp16(g, name, want, dy, ny, 0, 1);
        TU_CHECK(rounded > ny / 2, "%s: only %zu of %zu sums needed rounding (the check would not see a bf16 partial "
                 "sum)", name, rounded, ny);
        cuda_ops_free(g, dx), cuda_ops_free(g, dbuf), cuda_ops_free(g, dy);
        free(x), free(xf), free(buf), free(want), free(hy);
    }
}

/* Attention over the ragged sequences: the first row (exact kernel) and all rows (tag: the path the backend takes). */
static void check_attention(Backend *c, Backend *g, const char *tag, int NH, int dh, double atol_all) {
    int32_t off[NSEQ + 1];
    int N = seq_offsets(off), max_len = 300;
    size_t HD = (size_t)NH * dh, nq = (size_t)N * 3 * HD;
    uint16_t *qkv = bvals(nq, -2, 2);
    uint16_t *dqkv = up(g, qkv, nq * 2);
    int32_t *doff = up(g, off, sizeof off);
    char name[96];
    for (int first = 1; first >= 0; first--) {
        size_t no = (first ? (size_t)NSEQ : (size_t)N) * HD;
        uint16_t *ho = host_out(no), *dout = dev_out(g, no);
        if (first) {
            ops_attention_first(c, (float *)ho, (float *)qkv, off, NSEQ, max_len, NH, dh);
            ops_attention_first(g, (float *)dout, (float *)dqkv, doff, NSEQ, max_len, NH, dh);
        } else {
            ops_attention(c, (float *)ho, NULL, (float *)qkv, off, NSEQ, max_len, NH, dh);
            ops_attention(g, (float *)dout, NULL, (float *)dqkv, doff, NSEQ, max_len, NH, dh);
        }
        snprintf(name, sizeof name, "attention%s packed %s NH=%d dh=%d", first ? "_first" : "", first ? "exact" : tag,
                 NH, dh);
        cmp16(g, name, ho, dout, no, first ? 1e-4 : atol_all, 0);
        cuda_ops_free(g, dout);
        free(ho);
    }
    cuda_ops_free(g, dqkv), cuda_ops_free(g, doff);
    free(qkv);
}

/* A bf16-mode backend; pack 1: with XR_CUDA_ACT_PACK=1 (read when the backend is made). */
static Backend *backend(int pack, const char *att) {
    setenv("XR_CUDA_ACT_PACK", pack ? "1" : "0", 1);
    if (att) setenv("XR_CUDA_ATTENTION", att, 1); else unsetenv("XR_CUDA_ATTENTION");
    Backend *g = cuda_ops_backend(0);
    cuda_ops_set_gemm_mode(g, XR_GEMM_BF16);
    unsetenv("XR_CUDA_ACT_PACK"), unsetenv("XR_CUDA_ATTENTION");
    return g;
}

typedef struct {
    int B, T, H, NL, layers;
    int32_t *ids, *types, *mask;
    float *logits, *cls, *mean;
} Fx;

static void fx_load(Fx *f, const char *dir) {
    char p[700];
    size_t n;
    snprintf(p, sizeof p, "%s/shape.i32", dir);
    int32_t *shape = tu_read_i32(p, &n);
    f->B = shape[0], f->T = shape[1], f->H = shape[2], f->NL = shape[3];
    free(shape);
    snprintf(p, sizeof p, "%s/ids.i32", dir);
    f->ids = tu_read_i32(p, &n);
    snprintf(p, sizeof p, "%s/types.i32", dir);
    f->types = tu_read_i32(p, &n);
    snprintf(p, sizeof p, "%s/mask.i32", dir);
    f->mask = tu_read_i32(p, &n);
    snprintf(p, sizeof p, "%s/emb_cls.f32", dir);
    f->cls = tu_read_f32(p, &n);
    snprintf(p, sizeof p, "%s/emb_mean.f32", dir);
    f->mean = tu_read_f32(p, &n);
    f->logits = NULL;
    if (f->NL) {
        snprintf(p, sizeof p, "%s/logits.f32", dir);
        f->logits = tu_read_f32(p, &n);
    }
}

/* One forward of each kind on backend g: logits (NL), CLS and mean embeddings, hidden states into o (4 arrays). */
static void forwards(Backend *g, const char *dir, const Fx *f, float **o, int *layers) {
    XrErr e;
    Encoder *m = encoder_load_on(dir, g, &e);
    if (!m) xr_die("encoder_load_on %s: %s", dir, e.msg);
    *layers = encoder_config(m)->layers;
    Batch b = {f->B, f->T, f->ids, f->types, f->mask};
    if (f->NL) encoder_forward_score(m, &b, o[0]);
    encoder_forward_embed(m, &b, POOL_CLS, 1, o[1]);
    encoder_forward_embed(m, &b, POOL_MEAN, 1, o[2]);
    encoder_forward_hidden(m, &b, o[3]);
    TU_CHECK(!g->act_packed, "%s: packing still on after the forward", dir);
    encoder_free(m);
}

static double rel(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) d += (a[i] - b[i]) * (double)(a[i] - b[i]), s += b[i] * (double)b[i];
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

static void check_model(Backend *gp, Backend *gu, const char *name) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), name);
    Fx f;
    fx_load(&f, dir);
    size_t nl = (size_t)f.B * (f.NL ? f.NL : 1), ne = (size_t)f.B * f.H;
    float *p[4], *p2[4], *u[4];
    size_t sz[4] = {nl, ne, ne, (size_t)f.B * f.T * f.H};
    for (int k = 0; k < 4; k++) p[k] = xr_malloc(sz[k] * 4), p2[k] = xr_malloc(sz[k] * 4), u[k] = xr_malloc(sz[k] * 4);
    int layers = 0;
    forwards(gp, dir, &f, p, &layers);
    forwards(gp, dir, &f, p2, &layers);
    forwards(gu, dir, &f, u, &layers);
    const float *want[4] = {f.logits, f.cls, f.mean, NULL};
    const char *what[4] = {"logits", "CLS embeddings", "mean embeddings", "hidden states"};
    double bound = 4.0 * sqrt(8.0 * layers) * U;
    for (int k = 0; k < 4; k++) {
        if (k == 0 && !f.NL) continue;
        char label[160];
        snprintf(label, sizeof label, "%s packed %s vs transformers", name, what[k]);
        /* hidden states: against the unpacked forward only (bf16 steps at |h| ~ 4 exceed 2e-2 absolute) */
        double dt = want[k] ? tu_check_close(label, p[k], want[k], sz[k], 2e-2) : 0;
        size_t nd = 0;
        for (size_t i = 0; i < sz[k]; i++) nd += memcmp(&p[k][i], &p2[k][i], 4) != 0;
        TU_CHECK(nd == 0, "%s %s: two packed GPU runs differ in %zu of %zu values", name, what[k], nd, sz[k]);
        double r = rel(p[k], u[k], sz[k]);
        TU_CHECK(r > 0 && r <= bound, "%s %s: packed vs unpacked bf16 GPU forward %.3g relative (want > 0 and <= "
                 "%.3g)", name, what[k], r, bound);
        char vt[64] = "not compared";
        if (want[k]) snprintf(vt, sizeof vt, "max abs %.2e (tol 2e-2)", dt);
        printf("model %-10s %-16s packed: vs transformers %s; vs unpacked bf16 %.2e relative (bound %.3f); two runs "
               "the same bits\n", name, what[k], vt, r, bound);
    }
    for (int k = 0; k < 4; k++) free(p[k]), free(p2[k]), free(u[k]);
    free(f.ids), free(f.types), free(f.mask), free(f.logits), free(f.cls), free(f.mean);
}

/* The inference weights' bf16 copy: made at the first packed forward (2 bytes a weight from layer 0 on), held across
 * forwards (no second copy), forgotten by encoder_weights_updated and made again by the next forward. */
static void check_infer_weights(Backend *gp) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), "bert_cls");
    Fx f;
    fx_load(&f, dir);
    XrErr e;
    Encoder *m = encoder_load_on(dir, gp, &e);
    if (!m) xr_die("encoder_load_on %s: %s", dir, e.msg);
    Batch b = {f.B, f.T, f.ids, f.types, f.mask};
    float *lg = xr_malloc((size_t)f.B * f.NL * 4);
    XrMemStats s0, s1, s2, s3, s4;
    encoder_forward_score(m, &b, lg); /* workspaces and scratch grown */
    encoder_weights_updated(m);
    ops_mem_stats(gp, &s0);
    encoder_forward_score(m, &b, lg);
    ops_mem_stats(gp, &s1);
    encoder_forward_score(m, &b, lg);
    ops_mem_stats(gp, &s2);
    encoder_weights_updated(m);
    ops_mem_stats(gp, &s3);
    encoder_forward_score(m, &b, lg);
    ops_mem_stats(gp, &s4);
    const EncoderTensor *t0 = NULL;
    for (int i = 0; i < encoder_num_tensors(m); i++)
        if (strstr(encoder_tensor(m, i)->name, "layer.0.")) {
            t0 = encoder_tensor(m, i);
            break;
        }
    size_t want = t0 ? ((size_t)encoder_num_params(m) - t0->offset) * 2 : 0;
    TU_CHECK(t0 && s1.live - s0.live == want, "inference weights' copy: %zu bytes after a forward, want %zu",
             s1.live - s0.live, want);
    TU_CHECK(s2.live == s1.live, "inference weights' copy: a second forward changed the memory held (%zu -> %zu)",
             s1.live, s2.live);
    TU_CHECK(s3.live == s0.live, "encoder_weights_updated did not forget the inference copy (%zu held, want %zu)",
             s3.live, s0.live);
    TU_CHECK(s4.live == s1.live, "the forward after encoder_weights_updated did not make the copy again");
    printf("inference weights' bf16 copy: %zu bytes, held across forwards, forgotten by encoder_weights_updated\n",
           want);
    encoder_free(m);
    free(lg);
    free(f.ids), free(f.types), free(f.mask), free(f.logits), free(f.cls), free(f.mean);
}
#endif

int main(void) {
#ifndef XR_HAVE_CUDA
    TU_SKIP("built without the CUDA backend");
#else
    if (cuda_ops_device_count() <= 0) TU_SKIP("no GPU visible");
    Backend *c = ops_backend_cpu(2);
    cpu_set_act_pack_able(c, 1);
    TU_CHECK(ops_act_pack(c, 1) == 2, "the CPU reference does not pack");
    Backend *gp = backend(1, NULL), *gx = backend(1, "exact"), *gg = backend(1, "gemm"), *gu = backend(0, NULL);
    TU_CHECK(ops_act_pack(gu, 1) == 4 && !gu->act_packed, "XR_CUDA_ACT_PACK=0: the backend packs");
    ops_act_pack(gu, 0);
    TU_CHECK(ops_act_pack(gp, 1) == 2 && gp->act_packed, "XR_CUDA_ACT_PACK=1 in bf16 mode: the backend does not pack");
    TU_CHECK(ops_act_pack(gx, 1) == 2, "XR_CUDA_ATTENTION=exact: the backend does not pack");
    TU_CHECK(ops_act_pack(gg, 1) == 2, "XR_CUDA_ATTENTION=gemm: the backend does not pack");
    check_tokenwise(c, gp);
    check_linear(c, gp);
    check_linear_exact(c, gp);
    /* all rows: the flash kernel on bf16 storage (dh 64, 32; dh 20 falls back to the GEMMs), the padded batched GEMMs
     * (P rounded to bf16: test_cuda_bf16's tolerance for both) or the exact kernel */
    check_attention(c, gp, "flash", 4, 64, 3e-2);
    check_attention(c, gp, "flash", 6, 32, 3e-2);
    check_attention(c, gp, "gemm (no flash for dh 20)", 3, 20, 3e-2);
    check_attention(c, gg, "gemm", 4, 64, 3e-2);
    check_attention(c, gx, "exact", 4, 64, 1e-4);
    check_attention(c, gx, "exact", 3, 20, 1e-4);
    ops_act_pack(gp, 0), ops_act_pack(gx, 0), ops_act_pack(gg, 0), ops_act_pack(c, 0);
    unsigned long long fb = cuda_ops_packed_fallbacks(gp);
    check_model(gp, gu, "bert_cls");
    check_model(gp, gu, "xlmr_cls");
    check_model(gp, gu, "xlmr_cls3");
    check_model(gp, gu, "xlmr_model");
    /* which path the fixtures' packed linears took (H 32, I 37: odd widths; bf16 outputs with ld 37) */
    printf("model fixtures: %llu packed linears took the fallback (fp32 GEMM + bias-and-round kernel)\n",
           cuda_ops_packed_fallbacks(gp) - fb);
    check_infer_weights(gp);
    cuda_ops_sync(gp);
    cuda_ops_backend_free(gp), cuda_ops_backend_free(gx), cuda_ops_backend_free(gg), cuda_ops_backend_free(gu);
    ops_backend_free(c);
    return tu_finish("test_cuda_act_pack");
#endif
}
