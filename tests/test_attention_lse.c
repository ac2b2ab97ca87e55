/* test_attention_lse: the training attention that saves the softmax log-sum-exp instead of the probabilities
 * (ops_attention_train_lse / ops_attention_backward_lse, issue 13) on the CPU backend:
 * - against the probability-saving ops (attention_train / attention_backward) on packed ragged sequences of
 *   lengths 1, 63, 64, 65, 0 (empty), 127, 128, 129; heads 4 x dh 32 and 2 x dh 64; dropout p 0 and 0.1; all query
 *   rows and the first row only. The context is the same bits (the CPU forward is the same code, the softmax also
 *   writing m + log(sum)); the lse within the bound below of a double-precision reference; dq, dk, dv within the
 *   bound below of the saved-probability backward, and a deliberately wrong lse (+1e-3) must break that bound (the
 *   check can fail);
 * - the gradients against central finite differences of sum(w * out) in double (lengths 5, 0, 3; p 0 and 0.1);
 * - three AdamW steps of the tiny BERT fixture with dropout on: the LSE path's losses track the default path's.
 *
 * Bound (u = 2^-24). Both backward passes run the same GEMMs on the same inputs except the probabilities: the
 * saved P = exp(s - m) / sum and the recomputed P' = exp(s - lse), lse = fl(m + log sum), from the same scores
 * fl(s) (the same GEMM call). The exponent's argument differs by the rounding of s - m (u |s - m|), of lse
 * (u |lse|), of s - lse (u |s - lse|) and log's error for a sum carrying L u relative error (L u + u); exp adds a
 * few ulps each (xr_expf: a degree-7 polynomial, < 4 u), the division u. So |P' - P| <= eps_P P with
 * eps_P = (2 smax + 2 lmax + 2 L + 16) u (smax, lmax: the largest |s|, |lse|). A product over a row of length n
 * (L or dh) rounds differently for different inputs: <= n u of the sum of |terms| each time, counted twice (each
 * path). dS = P (dp - D), D = sum_j P dp: |dS' - dS| <= P (eps_P |dp - D| + (eps_P + 2 L u) B) with
 * B = sum_j P |dp| >= |D|. With dp's magnitude bounded by dscale |dO . v| (dscale = 1 / (1 - p)), per element:
 *   |dv' - dv| <= k sum_i dscale P_ij |dO_i|,        |dq' - dq| <= k scale sum_j P_ij (|dp_ij| + 2 B_i) |k_j|,
 *   |dk' - dk| <= k scale sum_i P_ij (|dp_ij| + 2 B_i) |q_i|,     k = eps_P + (2 L + 2 dh + 8) u,
 * the sums taken in double over the double reference's P. The lse itself: fl(s) is within
 * es = dh u scale sum_e |q_e k_e| of s; |lse - lse_double| <= max_j es_j + (2 smax + L + 8 + |lse|) u. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "testutil.h"

#define U (1.0 / 16777216.0)

static TuRng rng = {0x9E3779B97F4A7C15ull};

static float *urnd(size_t n, float lo, float hi) {
    float *p = xr_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * (float)tu_rng_unit(&rng);
    return p;
}

typedef struct {
    int S, N, max_len;
    int32_t off[16];
    const int *lens;
} Pk;

static Pk pack(const int *lens, int S) {
    Pk p = {S, 0, 0, {0}, lens};
    for (int s = 0; s < S; s++) {
        p.off[s + 1] = p.off[s] + lens[s];
        if (lens[s] > p.max_len) p.max_len = lens[s];
    }
    p.N = p.off[S];
    return p;
}

/* The double-precision reference's per-element bound magnitudes (see the head of the file), and the lse
 * tolerance per (row, head). Returns eps-independent magnitudes in aq (the q part of a [N, 3H] array), ak, av;
 * writes lse_d and its tolerance. Also returns smax, lmax. */
static void reference(const Pk *pk, const float *qkv, const float *dout, int NH, int dh, int first_only, float p,
                      double *mag, double *lse_d, double *lse_tol, double *smax, double *lmax) {
    int H = NH * dh, ld = 3 * H;
    double scale = 1.0 / sqrt((double)dh), dscale = 1.0 / (1.0 - p);
    memset(mag, 0, (size_t)pk->N * ld * sizeof(double));
    *smax = 0, *lmax = 0;
    double *P = xr_malloc((size_t)pk->max_len * sizeof(double)), *dpa = xr_malloc((size_t)pk->max_len * sizeof(double));
    for (int s = 0; s < pk->S; s++) {
        int b0 = pk->off[s], L = pk->lens[s], nq = first_only ? (L > 0) : L;
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < nq; i++) {
                const float *q = qkv + (size_t)(b0 + i) * ld + h * dh;
                int row = first_only ? s : b0 + i;
                const float *dO = dout + (size_t)row * H + h * dh;
                double m = -INFINITY, es = 0;
                for (int j = 0; j < L; j++) {
                    const float *k = qkv + (size_t)(b0 + j) * ld + H + h * dh;
                    double d = 0, a = 0;
                    for (int e = 0; e < dh; e++) d += (double)q[e] * k[e], a += fabs((double)q[e] * k[e]);
                    P[j] = d * scale;
                    es = fmax(es, dh * U * scale * a);
                    m = fmax(m, P[j]);
                    *smax = fmax(*smax, fabs(P[j]));
                }
                double sum = 0;
                for (int j = 0; j < L; j++) sum += exp(P[j] - m);
                double lse = m + log(sum);
                lse_d[(size_t)row * NH + h] = lse;
                *lmax = fmax(*lmax, fabs(lse));
                double B = 0;
                for (int j = 0; j < L; j++) {
                    double sj = P[j];
                    P[j] = exp(sj - lse);
                    const float *v = qkv + (size_t)(b0 + j) * ld + 2 * H + h * dh;
                    double d = 0;
                    for (int e = 0; e < dh; e++) d += (double)dO[e] * v[e];
                    dpa[j] = dscale * fabs(d);
                    B += P[j] * dpa[j];
                }
                lse_tol[(size_t)row * NH + h] = es + (2 * *smax + L + 8 + fabs(lse)) * U;
                for (int j = 0; j < L; j++) {
                    double w = P[j] * (dpa[j] + 2 * B);
                    const float *k = qkv + (size_t)(b0 + j) * ld + H + h * dh;
                    double *mq = mag + (size_t)(b0 + i) * ld + h * dh;
                    double *mk = mag + (size_t)(b0 + j) * ld + H + h * dh, *mv = mk + H;
                    for (int e = 0; e < dh; e++) {
                        mq[e] += scale * w * fabs(k[e]);
                        mk[e] += scale * w * fabs(q[e]);
                        mv[e] += dscale * P[j] * fabs(dO[e]);
                    }
                }
            }
    }
    free(P), free(dpa);
}

/* Elements of got off want by more than k * mag; prints the worst ratio when asked. */
static size_t over_bound(const float *got, const float *want, const double *mag, size_t n, double k, double *worst) {
    size_t bad = 0;
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]), b = k * mag[i];
        if (!(d <= b)) bad++;
        if (b > 0) *worst = fmax(*worst, d / b);
        else if (d > 0) *worst = INFINITY;
    }
    return bad;
}

static void check_vs_saved(Backend *be, const Pk *pk, int NH, int dh, int first_only, float p) {
    int S = pk->S, N = pk->N, H = NH * dh, nrow = first_only ? S : N;
    size_t natt = 0, nqkv = (size_t)N * 3 * H, nout = (size_t)nrow * H, nlse = (size_t)nrow * NH;
    for (int s = 0; s < S; s++) natt += (size_t)(first_only ? 1 : pk->lens[s]) * pk->lens[s];
    natt *= NH;
    uint64_t ids[16];
    for (int s = 0; s < S; s++) ids[s] = 7919u * (uint64_t)(s + 3);
    XrDropout d = {p, 0x0123456789ABCDEFull, ids};
    float *qkv = urnd(nqkv, -1.5f, 1.5f), *dout = urnd(nout, -1, 1);
    float *out = xr_malloc(nout * 4), *out2 = xr_malloc(nout * 4), *att = xr_malloc((natt + 1) * 4);
    float *lse = xr_malloc(nlse * 4), *dq = xr_malloc(nqkv * 4), *dq2 = xr_malloc(nqkv * 4), *dq3 = xr_malloc(nqkv * 4);
    for (size_t i = 0; i < nout; i++) out[i] = NAN, out2[i] = NAN; /* empty sequences' rows: written by neither */
    for (size_t i = 0; i < nlse; i++) lse[i] = NAN;
    for (size_t i = 0; i < nqkv; i++) dq2[i] = NAN, dq3[i] = NAN;
    ops_attention_train(be, out, att, qkv, pk->off, S, pk->max_len, NH, dh, first_only, &d);
    ops_attention_backward(be, dq, dout, qkv, att, pk->off, S, pk->max_len, NH, dh, first_only, &d);
    ops_attention_train_lse(be, out2, lse, qkv, pk->off, S, pk->max_len, NH, dh, first_only, &d);
    ops_attention_backward_lse(be, dq2, dout, qkv, lse, pk->off, S, pk->max_len, NH, dh, first_only, &d);
    char name[96];
    snprintf(name, sizeof name, "NH=%d dh=%d%s p=%.1f", NH, dh, first_only ? " first" : "", p);
    size_t diff = 0;
    for (size_t i = 0; i < nout; i++) diff += memcmp(out + i, out2 + i, 4) != 0;
    TU_CHECK(diff == 0, "%s: attention_train_lse's context differs from attention_train's in %zu of %zu", name, diff,
             nout);

    double *mag = xr_malloc(nqkv * sizeof(double)), *lse_d = xr_malloc(nlse * sizeof(double));
    double *lse_tol = xr_malloc(nlse * sizeof(double)), smax, lmax;
    for (size_t i = 0; i < nlse; i++) lse_d[i] = NAN; /* rows of empty sequences: written by neither */
    reference(pk, qkv, dout, NH, dh, first_only, p, mag, lse_d, lse_tol, &smax, &lmax);
    double lworst = 0;
    size_t lbad = 0;
    for (size_t i = 0; i < nlse; i++) {
        if (isnan(lse_d[i])) continue;
        double e = fabs((double)lse[i] - lse_d[i]);
        lbad += !(e <= lse_tol[i]);
        lworst = fmax(lworst, e / lse_tol[i]);
    }
    TU_CHECK(lbad == 0, "%s: %zu of %zu lse values off the double reference past the bound (worst %.3g of it)", name,
             lbad, nlse, lworst);
    double k = (2 * smax + 2 * lmax + 2 * pk->max_len + 16) * U + (2.0 * pk->max_len + 2 * dh + 8) * U, worst;
    size_t bad = over_bound(dq2, dq, mag, nqkv, k, &worst);
    TU_CHECK(bad == 0, "%s: %zu of %zu gradients (dq|dk|dv) off the saved-probability backward past the bound "
             "(worst %.3g of it)", name, bad, nqkv, worst);
    size_t nz = 0; /* first_only: the other rows' dq are 0 in both */
    for (size_t i = 0; i < nqkv; i++) nz += dq[i] == 0.0f && dq2[i] != 0.0f;
    TU_CHECK(nz == 0, "%s: %zu gradients are 0 in the saved path and not in the LSE path", name, nz);
    /* the check can fail: an lse 1e-3 too large scales every P by e^-1e-3 */
    for (size_t i = 0; i < nlse; i++) lse[i] += 1e-3f;
    ops_attention_backward_lse(be, dq3, dout, qkv, lse, pk->off, S, pk->max_len, NH, dh, first_only, &d);
    double w3;
    size_t bad3 = over_bound(dq3, dq, mag, nqkv, k, &w3);
    TU_CHECK(bad3 > 0, "%s: an lse off by 1e-3 passed the bound (worst %.3g of it): the bound is too loose", name, w3);
    printf("%-26s out bit-identical; lse worst %.2f of its bound; dqkv worst %.3f of bound k = %.2e "
           "(smax %.1f, lmax %.1f); lse + 1e-3: %zu elements over\n",
           name, lworst, worst, k, smax, lmax, bad3);
    free(qkv), free(dout), free(out), free(out2), free(att), free(lse), free(dq), free(dq2), free(dq3);
    free(mag), free(lse_d), free(lse_tol);
}

/* sum(w * out) of the LSE forward, in double. */
static double fd_loss(Backend *be, const Pk *pk, const float *qkv, const float *w, float *out, int NH, int dh,
                      int first_only, const XrDropout *d, float *lse) {
    int nrow = first_only ? pk->S : pk->N;
    ops_attention_train_lse(be, out, lse, qkv, pk->off, pk->S, pk->max_len, NH, dh, first_only, d);
    double l = 0;
    for (size_t i = 0; i < (size_t)nrow * NH * dh; i++) l += (double)w[i] * out[i];
    return l;
}

static void check_fd(Backend *be, int first_only, float p) {
    static const int lens[] = {5, 0, 3};
    Pk pk = pack(lens, 3);
    int NH = 2, dh = 32, H = NH * dh, nrow = first_only ? pk.S : pk.N;
    size_t nqkv = (size_t)pk.N * 3 * H, nout = (size_t)nrow * H;
    XrDropout d = {p, 0xABCDEF12345ull, NULL};
    float *qkv = urnd(nqkv, -1, 1), *w = urnd(nout, -1, 1), *out = xr_malloc(nout * 4), *lse = xr_malloc(pk.N * NH * 4);
    float *g = xr_malloc(nqkv * 4);
    memset(out, 0, nout * 4); /* the empty sequence's row (first_only) is never written: it must add 0 */
    fd_loss(be, &pk, qkv, w, out, NH, dh, first_only, &d, lse);
    ops_attention_backward_lse(be, g, w, qkv, lse, pk.off, pk.S, pk.max_len, NH, dh, first_only, &d);
    double gmax = 0, worst = 0;
    for (size_t i = 0; i < nqkv; i++) gmax = fmax(gmax, fabs(g[i]));
    /* central differences: truncation ~h^2 |f'''| / 6 ~ 1e-5, rounding ~ 1e-6 |loss| / h: 1e-3 of the largest */
    const float h = 1e-2f;
    size_t bad = 0;
    for (size_t i = 0; i < nqkv; i++) {
        float x = qkv[i];
        qkv[i] = x + h;
        double lp = fd_loss(be, &pk, qkv, w, out, NH, dh, first_only, &d, lse);
        qkv[i] = x - h;
        double lm = fd_loss(be, &pk, qkv, w, out, NH, dh, first_only, &d, lse);
        qkv[i] = x;
        double fd = (lp - lm) / (2.0 * ((double)(x + h) - (double)x));
        double e = fabs(fd - g[i]) / gmax;
        worst = fmax(worst, e);
        if (!(e <= 1e-3)) bad++;
    }
    TU_CHECK(gmax > 0 && bad == 0, "finite differences%s p=%.1f: %zu of %zu gradients off by more than 1e-3 of the "
             "largest (worst %.3g)", first_only ? " first" : "", p, bad, nqkv, worst);
    printf("finite differences%-6s p=%.1f: %zu gradients, worst %.2e of the largest (%.3g)\n",
           first_only ? " first" : "", p, nqkv, worst, gmax);
    free(qkv), free(w), free(out), free(lse), free(g);
}

/* STEPS AdamW steps of the tiny BERT fixture, dropout on, with the LSE path on or off: the losses. */
#define STEPS 3
static void train_losses(int lse, double *loss) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bert_cls", tu_path("fixtures/model"));
    XrErr e;
    Encoder *m = encoder_load(dir, &e);
    if (!m) xr_die("load %s: %s", dir, e.msg);
    encoder_set_threads(m, 2);
    encoder_set_attention_lse(m, lse);
    Backend *be = encoder_backend(m);
    size_t np = (size_t)encoder_num_params(m);
    AdamWConfig ac = adamw_defaults();
    AdamW *opt = adamw_create(be, 0, np, &ac);
    enum { B = 6, T = 24 };
    int32_t ids[B * T], mask[B * T];
    int lens[B] = {24, 1, 17, 9, 24, 3};
    float labels[B] = {1, 0, 1, 0, 0, 1}, lg[B], dl[B];
    TuRng r = {777};
    int vocab = encoder_config(m)->vocab_size;
    for (int i = 0; i < B; i++)
        for (int t = 0; t < T; t++) {
            ids[i * T + t] = t < lens[i] ? 5 + (int32_t)(tu_rng_unit(&r) * (vocab - 6)) : 0;
            mask[i * T + t] = t < lens[i];
        }
    uint64_t ex[B] = {0, 1, 2, 3, 4, 5};
    Batch b = {B, T, ids, NULL, mask};
    for (int s = 0; s < STEPS; s++) {
        encoder_zero_grads(m);
        EncoderTrainStep st = {11, (uint64_t)s, ex, 1};
        encoder_train_forward(m, &b, &st, lg);
        loss[s] = loss_bce_with_logits(lg, labels, B, 1.0f, 1.0f, dl);
        encoder_train_backward(m, dl);
        adamw_step(opt, encoder_params(m), encoder_grads(m), 1e-3);
        encoder_weights_updated(m);
    }
    adamw_free(opt);
    encoder_free(m);
}

static void check_training(void) {
    double a[STEPS], b[STEPS];
    train_losses(0, a);
    train_losses(1, b);
    /* the first step's logits: the context is the same bits on the CPU, so the forward is identical; later
     * steps differ by the gradients' rounding (relative ~1e-6, bounded above by k ~ 1e-4) moved through AdamW:
     * an update of lr per element at most, so the losses may part by lr-sized amounts: held to 1e-3 relative */
    TU_CHECK(memcmp(&a[0], &b[0], sizeof a[0]) == 0, "step 0: the LSE path's loss %.17g differs from %.17g", b[0],
             a[0]);
    for (int s = 0; s < STEPS; s++) {
        double rel = fabs(a[s] - b[s]) / fabs(a[s]);
        TU_CHECK(rel <= 1e-3, "step %d: loss %.9g with the LSE path, %.9g without (%.3g relative)", s, b[s], a[s],
                 rel);
        printf("training step %d: loss %.9f (probabilities saved) %.9f (lse), relative diff %.2e\n", s, a[s], b[s],
               rel);
    }
}

int main(void) {
    Backend *be = ops_backend_cpu(2);
    static const int lens[] = {1, 63, 64, 65, 0, 127, 128, 129};
    Pk pk = pack(lens, 8);
    for (int first = 0; first < 2; first++)
        for (int pi = 0; pi < 2; pi++) {
            float p = pi ? 0.1f : 0.0f;
            check_vs_saved(be, &pk, 4, 32, first, p);
            check_vs_saved(be, &pk, 2, 64, first, p);
        }
    for (int first = 0; first < 2; first++) {
        check_fd(be, first, 0.0f);
        check_fd(be, first, 0.1f);
    }
    ops_backend_free(be);
    check_training();
    return tu_finish("test_attention_lse");
}
