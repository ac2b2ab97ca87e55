/* test_optim.c: the optimizer and loss math on its own: AdamW steps over decay / no-decay ranges against
 * torch's algorithm evaluated in double (lr 0 warmup step included), a sharded optimizer (ZeRO-1 style
 * slices with their base offsets) equal to one over the whole buffer, clip_grad_norm_'s rule, transformers'
 * schedules, and both losses against finite differences, with stability at extreme logits.
 * (test_grad_model checks the same pieces against PyTorch itself on a real model.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "optim.h"
#include "testutil.h"

#define PI 3.14159265358979323846

static uint64_t rng_state = 0x452821E638D01377ULL;
static double urand(void) {
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return ((rng_state * 2685821657736338717ULL >> 11) + 0.5) / 9007199254740992.0;
}
static float *rand_vec(size_t n, float scale) {
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = (float)((2 * urand() - 1) * scale);
    return v;
}

/* Three steps with lrs {0, 1e-2, 5e-3} (a warmup step first), weight decay 0.1 except on two ranges. */
static void test_adamw_ranges(Backend *be) {
    size_t n = 5000;
    float *p = rand_vec(n, 1), *g = rand_vec(n, 1);
    double *P = malloc(n * 8), *M = calloc(n, 8), *V = calloc(n, 8);
    for (size_t i = 0; i < n; i++) P[i] = p[i];
    AdamWConfig cfg = {0.9, 0.98, 1e-6, 0.1};
    AdamW *o = adamw_create(be, 0, n, &cfg);
    /* overlapping and touching ranges merge: no decay on [100, 400) and [4000, 5000) */
    adamw_no_decay(o, 300, 100);
    adamw_no_decay(o, 100, 250);
    adamw_no_decay(o, 4000, 500);
    adamw_no_decay(o, 4500, 500);
    double lrs[3] = {0.0, 1e-2, 5e-3}, worst = 0;
    for (int s = 0; s < 3; s++) {
        adamw_step(o, p, g, lrs[s]);
        int t = s + 1;
        for (size_t i = 0; i < n; i++) {
            int nd = (i >= 100 && i < 400) || i >= 4000;
            P[i] *= 1 - lrs[s] * (nd ? 0 : cfg.weight_decay);
            M[i] = cfg.beta1 * M[i] + (1 - cfg.beta1) * g[i];
            V[i] = cfg.beta2 * V[i] + (1 - cfg.beta2) * (double)g[i] * g[i];
            P[i] -= lrs[s] / (1 - pow(cfg.beta1, t)) * M[i] / (sqrt(V[i]) / sqrt(1 - pow(cfg.beta2, t)) + cfg.eps);
            worst = fmax(worst, fabs(p[i] - P[i]));
        }
        for (size_t i = 0; i < n; i++) g[i] = (float)(g[i] * 0.7 + 0.3 * (2 * urand() - 1));
    }
    TU_CHECK(worst < 1e-6, "AdamW with no-decay ranges vs double: %.3g", worst);
    TU_CHECK(adamw_steps(o) == 3, "steps %lld", (long long)adamw_steps(o));
    /* the lr-0 first step still moved the moments, as torch's does */
    double mdiff = 0;
    for (size_t i = 0; i < n; i++) mdiff = fmax(mdiff, fabs(adamw_exp_avg(o)[i] - M[i]));
    TU_CHECK(mdiff < 1e-6, "exp_avg vs double: %.3g", mdiff);
    printf("adamw: 3 steps (lr 0 first), 2 merged no-decay ranges: max abs diff %.2e vs double\n", worst);
    adamw_free(o);
    free(p), free(g), free(P), free(M), free(V);
}

/* Shards [0, k) and [k, n) (base offsets, one no-decay range crossing the cut) = one optimizer on [0, n). */
static void test_adamw_shards(Backend *be) {
    size_t n = 3001, k = 1234;
    float *p1 = rand_vec(n, 1), *g = rand_vec(n, 1), *p2 = malloc(n * 4);
    memcpy(p2, p1, n * 4);
    AdamWConfig cfg = adamw_defaults();
    cfg.weight_decay = 0.01;
    AdamW *all = adamw_create(be, 0, n, &cfg), *a = adamw_create(be, 0, k, &cfg), *b = adamw_create(be, k, n - k, &cfg);
    AdamW *os[3] = {all, a, b};
    for (int i = 0; i < 3; i++) adamw_no_decay(os[i], 1000, 500), adamw_no_decay(os[i], 2990, 11);
    for (int s = 0; s < 4; s++) {
        adamw_step(all, p1, g, 1e-3);
        adamw_step(a, p2, g, 1e-3);
        adamw_step(b, p2 + k, g + k, 1e-3);
    }
    TU_CHECK(memcmp(p1, p2, n * 4) == 0, "sharded AdamW differs from the whole");
    for (int i = 0; i < 3; i++) adamw_free(os[i]);
    free(p1), free(p2), free(g);
}

static void test_clip(Backend *be) {
    size_t n = 100000;
    float *g = rand_vec(n, 0.01f), *g0 = malloc(n * 4);
    memcpy(g0, g, n * 4);
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (double)g[i] * g[i];
    ref = sqrt(ref);
    double nrm = optim_clip_grad_norm(be, g, n, 10.0);
    TU_CHECK(fabs(nrm - ref) < 1e-12 * ref && memcmp(g, g0, n * 4) == 0, "clip above the norm: %.17g vs %.17g, "
             "gradients must be untouched", nrm, ref);
    nrm = optim_clip_grad_norm(be, g, n, 0.5);
    double after = optim_grad_norm(be, g, n), coef = 0.5 / (ref + 1e-6);
    TU_CHECK(fabs(after - 0.5 * ref / (ref + 1e-6)) < 1e-6 && fabs(g[7] - (float)coef * g0[7]) == 0,
             "clip to 0.5: norm after %.9g", after);
    printf("clip: norm %.6f -> %.6f (max_norm 0.5)\n", nrm, after);
    free(g), free(g0);
}

static void test_schedules(void) {
    /* transformers' lambdas: linear and cosine with warmup 2 of 10 steps, constant with warmup */
    TU_CHECK(sched_lr(SCHED_LINEAR, 1.0, 0, 2, 10) == 0.0 && sched_lr(SCHED_LINEAR, 1.0, 1, 2, 10) == 0.5 &&
                 sched_lr(SCHED_LINEAR, 1.0, 2, 2, 10) == 1.0 && sched_lr(SCHED_LINEAR, 1.0, 6, 2, 10) == 0.5 &&
                 sched_lr(SCHED_LINEAR, 1.0, 10, 2, 10) == 0.0 && sched_lr(SCHED_LINEAR, 1.0, 12, 2, 10) == 0.0,
             "linear schedule");
    TU_CHECK(fabs(sched_lr(SCHED_COSINE, 2.0, 6, 2, 10) - 1.0) < 1e-15 &&
                 fabs(sched_lr(SCHED_COSINE, 1.0, 4, 2, 10) - 0.5 * (1 + cos(PI * 0.25))) < 1e-15 &&
                 sched_lr(SCHED_COSINE, 1.0, 10, 2, 10) < 1e-15 && sched_lr(SCHED_COSINE, 1.0, 1, 2, 10) == 0.5,
             "cosine schedule");
    TU_CHECK(sched_lr(SCHED_CONSTANT, 3.0, 1, 2, 10) == 1.5 && sched_lr(SCHED_CONSTANT, 3.0, 9, 2, 10) == 3.0,
             "constant schedule");
    TU_CHECK(sched_lr(SCHED_LINEAR, 1.0, 0, 0, 4) == 1.0 && sched_lr(SCHED_LINEAR, 1.0, 3, 0, 4) == 0.25,
             "linear without warmup");
    TU_CHECK(sched_warmup_steps(0.1, 95) == 10 && sched_warmup_steps(0.0, 95) == 0, "warmup ratio");
    TU_CHECK(sched_parse("linear") == SCHED_LINEAR && sched_parse("cosine") == SCHED_COSINE &&
                 sched_parse("constant") == SCHED_CONSTANT && sched_parse("step") == -1,
             "schedule names");
}

/* Both losses: d loss / d logits by central differences in double, grad_scale, extreme logits. */
static void test_losses(void) {
    enum { NG = 3, G = 5, N = NG * G };
    float x[N], y[N], d[N], d2[N];
    for (int i = 0; i < N; i++) x[i] = (float)(4 * (2 * urand() - 1)), y[i] = i % G == 0 ? 1.0f : (i == 7 ? 0.3f : 0);
    double worst_b = 0, worst_c = 0;
    loss_bce_with_logits(x, y, N, 5.0f, 1.0f, d);
    loss_group_ce(x, NG, G, 1.0f, d2);
    for (int i = 0; i < N; i++) {
        float v = x[i];
        double h = 1e-3;
        x[i] = (float)(v + h);
        double bp = loss_bce_with_logits(x, y, N, 5.0f, 1, NULL), cp = loss_group_ce(x, NG, G, 1, NULL);
        double hp = (double)x[i] - v;
        x[i] = (float)(v - h);
        double bm = loss_bce_with_logits(x, y, N, 5.0f, 1, NULL), cm = loss_group_ce(x, NG, G, 1, NULL);
        double hm = v - (double)x[i];
        x[i] = v;
        worst_b = fmax(worst_b, fabs((bp - bm) / (hp + hm) - d[i]));
        worst_c = fmax(worst_c, fabs((cp - cm) / (hp + hm) - d2[i]));
    }
    TU_CHECK(worst_b < 1e-6 && worst_c < 1e-6, "loss gradients vs finite differences: bce %.3g ce %.3g", worst_b,
             worst_c);
    /* hand values: BCE of x = 0 is log 2 (times pos_weight for a positive); CE of equal logits is log G */
    float z[2] = {0, 0}, yl[2] = {1, 0};
    double b0 = loss_bce_with_logits(z, yl, 2, 5.0f, 1, NULL);
    TU_CHECK(fabs(b0 - 3 * log(2.0)) < 1e-12, "bce at 0: %.15g", b0);
    float e[G] = {1, 1, 1, 1, 1};
    TU_CHECK(fabs(loss_group_ce(e, 1, G, 1, NULL) - log((double)G)) < 1e-12, "ce of equal logits");
    /* grad_scale scales the gradient only */
    float ds[N];
    double l1 = loss_group_ce(x, NG, G, 0.25f, ds);
    TU_CHECK(fabs(l1 - loss_group_ce(x, NG, G, 1, NULL)) == 0 && fabs(ds[3] - 0.25f * d2[3]) < 1e-9,
             "grad_scale scales dlogits");
    /* extreme logits stay finite and exact */
    float big[4] = {1e4f, -1e4f, 80.0f, -80.0f}, yb[4] = {0, 1, 1, 0}, db[4];
    double lb = loss_bce_with_logits(big, yb, 4, 2.0f, 1, db);
    double want = (3e4 + 3 * log1p(exp(-80.0))) / 4;
    TU_CHECK(isfinite(lb) && fabs(lb - want) < 1e-9 * want && fabs(db[0] - 0.25f) < 1e-7 && fabs(db[1] + 0.5f) < 1e-7,
             "bce at extreme logits: %.17g (want %.17g), d %.9g %.9g", lb, want, db[0], db[1]);
    float ce_big[3] = {-1e4f, 1e4f, 0.0f}, dc[3];
    double lc = loss_group_ce(ce_big, 1, 3, 1, dc);
    TU_CHECK(fabs(lc - 2e4) < 1e-6 && fabs(dc[0] + 1) < 1e-7 && fabs(dc[1] - 1) < 1e-7, "ce at extreme logits: %.9g",
             lc);
    printf("losses: finite-difference gradient error bce %.1e ce %.1e; stable at |logit| 1e4\n", worst_b, worst_c);
}

int main(void) {
    Backend *be = ops_backend_cpu(2);
    test_adamw_ranges(be);
    test_adamw_shards(be);
    test_clip(be);
    test_schedules();
    test_losses();
    ops_backend_free(be);
    return tu_finish("test_optim");
}
