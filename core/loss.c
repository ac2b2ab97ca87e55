/* loss.c: BCE-with-logits (pos_weight) and group cross-entropy with their gradients, in double on the host
 * (a batch has at most thousands of logits: nothing to parallelise). */
#include "loss.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>

/* log(1 + e^z) without overflow or loss of precision. */
static double softplus(double z) { return (z > 0 ? z : 0) + log1p(exp(-fabs(z))); }

static double sigmoid(double z) {
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

double loss_bce_with_logits(const float *logits, const float *labels, int n, float pos_weight, float grad_scale,
                            float *dlogits) {
    assert(n > 0);
    double sum = 0, pw = pos_weight;
    for (int i = 0; i < n; i++) {
        double x = logits[i], y = labels[i], w = 1.0 + (pw - 1.0) * y;
        sum += (1.0 - y) * x + w * softplus(-x);
        /* d/dx: (1 - y) - w sigmoid(-x) */
        if (dlogits) dlogits[i] = (float)(grad_scale * ((1.0 - y) - w * sigmoid(-x)) / n);
    }
    return sum / n;
}

double loss_group_ce(const float *logits, int n_groups, int G, float grad_scale, float *dlogits) {
    assert(n_groups > 0 && G > 0);
    double sum = 0;
    for (int g = 0; g < n_groups; g++) {
        const float *z = logits + (size_t)g * G;
        double mx = z[0];
        for (int j = 1; j < G; j++) mx = z[j] > mx ? z[j] : mx;
        double se = 0;
        for (int j = 0; j < G; j++) se += exp(z[j] - mx);
        double lse = mx + log(se);
        sum += lse - z[0];
        if (dlogits)
            for (int j = 0; j < G; j++) {
                double pj = exp(z[j] - lse);
                dlogits[(size_t)g * G + j] = (float)(grad_scale * (pj - (j == 0)) / n_groups);
            }
    }
    return sum / n_groups;
}
