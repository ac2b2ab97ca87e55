/* optim.c: AdamW over decay / no-decay ranges of a flat buffer, learning-rate schedules and gradient
 * clipping; the elementwise work is the backend's (ops_adamw, ops_sum_squares, ops_scale). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xr_common.h"

typedef struct {
    size_t lo, hi; /* [lo, hi) in global offsets */
} Range;

struct AdamW {
    Backend *be;
    AdamWConfig cfg;
    size_t base, n;
    int64_t steps;
    float *m, *v;
    Range *nd; /* sorted, disjoint, merged no-decay ranges */
    int n_nd, cap_nd;
};

AdamWConfig adamw_defaults(void) {
    AdamWConfig c = {0.9, 0.999, 1e-8, 0.0};
    return c;
}

AdamW *adamw_create(Backend *be, size_t base, size_t n, const AdamWConfig *cfg) {
    AdamW *o = xr_calloc(1, sizeof *o);
    o->be = be;
    o->cfg = cfg ? *cfg : adamw_defaults();
    o->base = base;
    o->n = n;
    o->m = ops_alloc(be, (n ? n : 1) * sizeof(float));
    o->v = ops_alloc(be, (n ? n : 1) * sizeof(float));
    ops_zero(be, o->m, n);
    ops_zero(be, o->v, n);
    return o;
}

void adamw_free(AdamW *o) {
    if (!o) return;
    ops_free(o->be, o->m);
    ops_free(o->be, o->v);
    free(o->nd);
    free(o);
}

static int range_cmp(const void *a, const void *b) {
    const Range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

void adamw_no_decay(AdamW *o, size_t offset, size_t numel) {
    if (numel == 0) return;
    if (o->n_nd == o->cap_nd) {
        o->cap_nd = o->cap_nd ? 2 * o->cap_nd : 64;
        o->nd = xr_realloc(o->nd, (size_t)o->cap_nd * sizeof *o->nd);
    }
    o->nd[o->n_nd++] = (Range){offset, offset + numel};
    qsort(o->nd, (size_t)o->n_nd, sizeof *o->nd, range_cmp);
    /* merge overlapping and touching ranges: fewer, longer ops_adamw calls */
    int k = 0;
    for (int i = 1; i < o->n_nd; i++) {
        if (o->nd[i].lo <= o->nd[k].hi) {
            if (o->nd[i].hi > o->nd[k].hi) o->nd[k].hi = o->nd[i].hi;
        } else {
            o->nd[++k] = o->nd[i];
        }
    }
    o->n_nd = k + 1;
}

/* ops_adamw on the slice [lo, hi) of global offsets (clipped to the optimizer's own range). */
static void step_range(AdamW *o, float *params, const float *grads, size_t lo, size_t hi, double lr, double wd) {
    size_t a = lo > o->base ? lo : o->base, b = hi < o->base + o->n ? hi : o->base + o->n;
    if (a >= b) return;
    size_t i = a - o->base, len = b - a;
    ops_adamw(o->be, params + i, grads + i, o->m + i, o->v + i, len, lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps, wd,
              o->steps);
}

void adamw_step(AdamW *o, float *params, const float *grads, double lr) {
    o->steps++;
    size_t cur = o->base, end = o->base + o->n;
    for (int r = 0; r < o->n_nd && cur < end; r++) {
        if (o->nd[r].hi <= cur) continue;
        step_range(o, params, grads, cur, o->nd[r].lo, lr, o->cfg.weight_decay);
        step_range(o, params, grads, o->nd[r].lo > cur ? o->nd[r].lo : cur, o->nd[r].hi, lr, 0.0);
        cur = o->nd[r].hi;
    }
    if (cur < end) step_range(o, params, grads, cur, end, lr, o->cfg.weight_decay);
}

int64_t adamw_steps(const AdamW *o) { return o->steps; }
void adamw_set_steps(AdamW *o, int64_t steps) { o->steps = steps; }
float *adamw_exp_avg(AdamW *o) { return o->m; }
float *adamw_exp_avg_sq(AdamW *o) { return o->v; }

double sched_lr(SchedKind kind, double base_lr, int64_t step, int64_t warmup, int64_t total) {
    if (step < warmup) return base_lr * (double)step / (double)(warmup > 1 ? warmup : 1);
    int64_t span = total - warmup > 1 ? total - warmup : 1;
    double f;
    switch (kind) {
    case SCHED_LINEAR:
        f = (double)(total - step) / (double)span;
        break;
    case SCHED_COSINE: {
        double progress = (double)(step - warmup) / (double)span;
        f = 0.5 * (1.0 + cos(3.14159265358979323846 * 0.5 * 2.0 * progress));
        break;
    }
    default:
        f = 1.0;
        break;
    }
    return base_lr * (f > 0.0 ? f : 0.0);
}

int64_t sched_warmup_steps(double ratio, int64_t total) { return (int64_t)ceil(ratio * (double)total); }

int sched_parse(const char *name) {
    if (!name) return -1;
    if (strcmp(name, "linear") == 0) return SCHED_LINEAR;
    if (strcmp(name, "cosine") == 0) return SCHED_COSINE;
    if (strcmp(name, "constant") == 0) return SCHED_CONSTANT;
    return -1;
}

double optim_grad_norm(Backend *be, const float *grads, size_t n) { return sqrt(ops_sum_squares(be, grads, n)); }

void optim_clip_with_norm(Backend *be, float *grads, size_t n, double max_norm, double total_norm) {
    double coef = max_norm / (total_norm + 1e-6);
    if (coef < 1.0) ops_scale(be, grads, n, (float)coef);
}

double optim_clip_grad_norm(Backend *be, float *grads, size_t n, double max_norm) {
    double total = optim_grad_norm(be, grads, n);
    optim_clip_with_norm(be, grads, n, max_norm, total);
    return total;
}
