/* guards.c: the collapse detector and the non-finite tensor search of guards.h. */
#include "guards.h"

#include <math.h>

#include "ops.h"

void collapse_init(CollapseDetector *d, int windows, double spread_max, double tol, double ref) {
    *d = (CollapseDetector){windows, spread_max, tol, ref, 0};
}

static double sd(const float *v, int n) {
    double m = 0, ss = 0;
    for (int i = 0; i < n; i++) m += v[i];
    m /= n;
    for (int i = 0; i < n; i++) ss += (v[i] - m) * (v[i] - m);
    return sqrt(ss / n);
}

double collapse_spread_sum(const float *logits, int n_groups, int G) {
    if (n_groups <= 0) return 0;
    if (G == 1) return sd(logits, n_groups) * n_groups;
    double s = 0;
    for (int g = 0; g < n_groups; g++) s += sd(logits + (size_t)g * G, G);
    return s;
}

int collapse_window(CollapseDetector *d, double spread, double loss) {
    if (d->windows <= 0) return 0;
    int collapsed = spread < d->spread_max && (isnan(d->ref) || fabs(loss - d->ref) <= d->tol);
    d->run = collapsed ? d->run + 1 : 0;
    return d->run == d->windows; /* once per collapsed stretch */
}

int guard_first_nonfinite(Encoder *m, const float *v, size_t lo, size_t hi) {
    Backend *be = encoder_backend(m);
    for (int i = 0; i < encoder_num_tensors(m); i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        size_t a = t->offset > lo ? t->offset : lo, b = t->offset + t->numel < hi ? t->offset + t->numel : hi;
        if (a < b && !isfinite(ops_sum_squares(be, v + a, b - a))) return i;
    }
    return -1;
}
