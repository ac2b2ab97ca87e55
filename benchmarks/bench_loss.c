/* bench_loss.c: host time of one micro-batch's loss and gradient (core/loss.h) for each training loss, on the
 * demo recipe's micro-batch (4 groups of 8 pairs) or given sizes: what the recipe losses can add to a step.
 *   bench_loss [GROUPS G ITERS]   ->  one JSON line per loss: microseconds per call */
#include <stdio.h>
#include <stdlib.h>

#include "loss.h"
#include "xr_common.h"

int main(int argc, char **argv) {
    int ng = argc > 1 ? atoi(argv[1]) : 4, G = argc > 2 ? atoi(argv[2]) : 8, it = argc > 3 ? atoi(argv[3]) : 20000;
    int n = ng * G;
    float *z = xr_malloc(sizeof(float) * (size_t)n), *y = xr_malloc(sizeof(float) * (size_t)n);
    float *t = xr_malloc(sizeof(float) * (size_t)n), *d = xr_malloc(sizeof(float) * (size_t)n);
    float *sc = xr_malloc(sizeof(float) * (size_t)n);
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        z[i] = (float)((s >> 11) * 0x1.0p-53 * 8 - 4), t[i] = z[i] * 0.5f + 1, y[i] = (float)(i % G == 0);
    }
    struct {
        const char *name;
        LossSpec s;
    } cases[] = {
        {"bce", {LOSS_BCE, 1, DISTILL_KL, 1, 0}},
        {"listwise", {LOSS_LISTWISE, 1, DISTILL_KL, 1, 0}},
        {"distill_kl", {LOSS_DISTILL, 1, DISTILL_KL, 1, 0}},
        {"distill_kl_hard1", {LOSS_DISTILL, 1, DISTILL_KL, 1, 1}},
        {"distill_margin_mse", {LOSS_DISTILL, 1, DISTILL_MARGIN_MSE, 1, 0}},
        {"distill_mse", {LOSS_DISTILL, 1, DISTILL_MSE, 1, 0}},
        {"listnet", {LOSS_LISTNET, 1, DISTILL_KL, 1, 0}},
        {"lambdaloss", {LOSS_LAMBDA, 1, DISTILL_KL, 1, 0}},
    };
    double sink = 0;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int g = cases[c].s.kind == LOSS_BCE ? n : ng, gs = cases[c].s.kind == LOSS_BCE ? 1 : G;
        double t0 = xr_now();
        for (int i = 0; i < it; i++) sink += loss_compute(&cases[c].s, z, y, t, g, gs, 1.0f, d, sc) + d[i % n];
        double us = (xr_now() - t0) / it * 1e6;
        printf("{\"loss\": \"%s\", \"groups\": %d, \"G\": %d, \"us_per_call\": %.3f}\n", cases[c].name, ng, G, us);
    }
    fprintf(stderr, "(checksum %g)\n", sink);
    free(z), free(y), free(t), free(d), free(sc);
    return 0;
}
