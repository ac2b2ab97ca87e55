/* loss.c: the training losses of loss.h with their gradients, in double on the host (a batch has at most
 * thousands of logits: nothing to parallelise): BCE, group CE, soft CE (distillation, ListNet), MarginMSE, MSE,
 * LambdaLoss, and the dispatch of a LossSpec. */
#include "loss.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "xr_common.h"

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

/* softmax(v / T) of one group into p (double), returning logsumexp(v / T). */
static double group_softmax(const float *v, int G, double T, double *p) {
    double mx = v[0] / T;
    for (int j = 1; j < G; j++) mx = v[j] / T > mx ? v[j] / T : mx;
    double se = 0;
    for (int j = 0; j < G; j++) se += (p[j] = exp(v[j] / T - mx));
    for (int j = 0; j < G; j++) p[j] /= se;
    return mx + log(se);
}

double loss_soft_ce(const float *logits, const float *targets, int n_groups, int G, float temperature,
                    float grad_scale, float *dlogits) {
    assert(n_groups > 0 && G > 0 && temperature > 0);
    double T = temperature, sum = 0, ps[256], pt[256];
    double *p = G <= 256 ? ps : xr_malloc(sizeof(double) * (size_t)G);
    double *q = G <= 256 ? pt : xr_malloc(sizeof(double) * (size_t)G);
    for (int g = 0; g < n_groups; g++) {
        const float *z = logits + (size_t)g * G, *t = targets + (size_t)g * G;
        double lse = group_softmax(z, G, T, p);
        group_softmax(t, G, T, q);
        for (int j = 0; j < G; j++) sum -= q[j] * (z[j] / T - lse);
        if (dlogits)
            for (int j = 0; j < G; j++)
                dlogits[(size_t)g * G + j] = (float)(grad_scale * (p[j] - q[j]) / (T * n_groups));
    }
    if (p != ps) free(p), free(q);
    return sum / n_groups;
}

double loss_margin_mse(const float *logits, const float *teacher, int n_groups, int G, float grad_scale,
                       float *dlogits) {
    assert(n_groups > 0 && G >= 2);
    double N = (double)n_groups * (G - 1), sum = 0;
    for (int g = 0; g < n_groups; g++) {
        const float *z = logits + (size_t)g * G, *t = teacher + (size_t)g * G;
        double d0 = 0;
        for (int j = 1; j < G; j++) {
            double r = ((double)z[0] - z[j]) - ((double)t[0] - t[j]);
            sum += r * r;
            d0 += 2 * r / N;
            if (dlogits) dlogits[(size_t)g * G + j] = (float)(-grad_scale * 2 * r / N);
        }
        if (dlogits) dlogits[(size_t)g * G] = (float)(grad_scale * d0);
    }
    return sum / N;
}

double loss_mse(const float *logits, const float *teacher, int n, float grad_scale, float *dlogits) {
    assert(n > 0);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double r = (double)logits[i] - teacher[i];
        sum += r * r;
        if (dlogits) dlogits[i] = (float)(grad_scale * 2 * r / n);
    }
    return sum / n;
}

/* Positions by descending logit, ties by index: the stable order (torch.sort(stable=True, descending=True)). */
typedef struct {
    double z;
    int i;
} LsPos;

static int ls_cmp(const void *a, const void *b) {
    const LsPos *x = a, *y = b;
    if (x->z != y->z) return x->z < y->z ? 1 : -1;
    return (x->i > y->i) - (x->i < y->i);
}

static int ls_cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

double loss_lambda(const float *logits, const float *labels, int n_groups, int G, float grad_scale, float *dlogits) {
    assert(n_groups > 0 && G >= 1);
    const double mu = 10.0, sigma = 1.0, eps = 1e-10, ln2 = log(2.0);
    LsPos *pos = xr_malloc(sizeof(LsPos) * (size_t)G);
    double *ys = xr_malloc(sizeof(double) * (size_t)G), *gain = xr_malloc(sizeof(double) * (size_t)G);
    double *ideal = xr_malloc(sizeof(double) * (size_t)G), *dz = xr_malloc(sizeof(double) * (size_t)G);
    double *invD = xr_malloc(sizeof(double) * (size_t)(G + 1)); /* invD[r] = 1 / log2(1 + r), r = 1..G */
    for (int r = 1; r <= G; r++) invD[r] = 1.0 / log2(1.0 + r);
    double sum = 0;
    for (int g = 0; g < n_groups; g++) {
        const float *z = logits + (size_t)g * G, *y = labels + (size_t)g * G;
        for (int j = 0; j < G; j++) pos[j] = (LsPos){z[j], j}, ideal[j] = y[j] > 0 ? y[j] : 0, dz[j] = 0;
        qsort(pos, (size_t)G, sizeof *pos, ls_cmp);
        qsort(ideal, (size_t)G, sizeof *ideal, ls_cmp_desc);
        double maxdcg = 0;
        for (int r = 0; r < G; r++) maxdcg += (exp2(ideal[r]) - 1) * invD[r + 1];
        if (maxdcg < eps) maxdcg = eps;
        for (int r = 0; r < G; r++) {
            ys[r] = y[pos[r].i];
            gain[r] = (exp2(ys[r] > 0 ? ys[r] : 0) - 1) / maxdcg;
        }
        double gl = 0;
        int npairs = 0;
        for (int r = 0; r < G; r++)
            for (int s = 0; s < G; s++) {
                if (!(ys[r] - ys[s] > 0)) continue;
                int d = r > s ? r - s : s - r;
                double dg = fabs(gain[r] - gain[s]);
                double w = mu * fabs(invD[d] - invD[d + 1]) * dg + fabs(invD[r + 1] - invD[s + 1]) * dg;
                double diff = pos[r].z - pos[s].z;
                diff = diff > 1e8 ? 1e8 : diff < -1e8 ? -1e8 : diff;
                /* ln sigmoid(x) and 1 - sigmoid(x), stable for either sign of x (no clamp: a badly ordered
                 * pair keeps its gradient, as in sentence-transformers' logsigmoid form) */
                double x = sigma * diff, ex = exp(-fabs(x));
                double lsig = (x < 0 ? x : 0.0) - log1p(ex), omsig = x < 0 ? 1.0 / (1.0 + ex) : ex / (1.0 + ex);
                npairs++;
                gl -= w * lsig / ln2;
                double gd = -w * sigma * omsig / ln2; /* d pair / d diff */
                dz[pos[r].i] += gd, dz[pos[s].i] -= gd;
            }
        if (npairs > 0) sum += gl / npairs;
        if (dlogits)
            for (int j = 0; j < G; j++)
                dlogits[(size_t)g * G + j] = (float)(npairs > 0 ? grad_scale * dz[j] / npairs / n_groups : 0.0);
    }
    free(pos), free(ys), free(gain), free(ideal), free(dz), free(invD);
    return sum / n_groups;
}

static const char *const LOSS_NAMES[] = {"bce", "listwise", "distill", "listnet", "lambdaloss"};
static const char *const DISTILL_NAMES[] = {"kl", "margin_mse", "mse"};

int loss_kind_parse(const char *s) {
    for (int i = 0; i < (int)(sizeof LOSS_NAMES / sizeof *LOSS_NAMES); i++)
        if (!strcmp(s, LOSS_NAMES[i])) return i;
    return -1;
}

int loss_distill_parse(const char *s) {
    for (int i = 0; i < (int)(sizeof DISTILL_NAMES / sizeof *DISTILL_NAMES); i++)
        if (!strcmp(s, DISTILL_NAMES[i])) return i;
    return -1;
}

const char *loss_kind_name(LossKind k) { return LOSS_NAMES[k]; }

double loss_collapse_value(const LossSpec *s, int G) {
    switch (s->kind) {
    case LOSS_BCE: return log(2.0);
    case LOSS_LISTWISE:
    case LOSS_LISTNET: return log((double)G);
    case LOSS_DISTILL:
        return s->distill == DISTILL_KL ? (1.0 + s->hard_weight) * log((double)G) : NAN;
    default: return NAN;
    }
}

double loss_compute(const LossSpec *s, const float *logits, const float *labels, const float *teacher, int n_groups,
                    int G, float grad_scale, float *dlogits, float *scratch) {
    switch (s->kind) {
    case LOSS_BCE: return loss_bce_with_logits(logits, labels, n_groups * G, s->pos_weight, grad_scale, dlogits);
    case LOSS_LISTWISE: return loss_group_ce(logits, n_groups, G, grad_scale, dlogits);
    case LOSS_LISTNET: return loss_soft_ce(logits, labels, n_groups, G, 1.0f, grad_scale, dlogits);
    case LOSS_LAMBDA: return loss_lambda(logits, labels, n_groups, G, grad_scale, dlogits);
    case LOSS_DISTILL: break;
    }
    double l = s->distill == DISTILL_KL ? loss_soft_ce(logits, teacher, n_groups, G, s->temperature, grad_scale, dlogits)
               : s->distill == DISTILL_MARGIN_MSE ? loss_margin_mse(logits, teacher, n_groups, G, grad_scale, dlogits)
                                                  : loss_mse(logits, teacher, n_groups * G, grad_scale, dlogits);
    if (s->hard_weight > 0) {
        l += s->hard_weight * loss_group_ce(logits, n_groups, G, grad_scale, dlogits ? scratch : NULL);
        if (dlogits)
            for (int i = 0; i < n_groups * G; i++) dlogits[i] += s->hard_weight * scratch[i];
    }
    return l;
}
