/* test_loss.c: core/loss.c's recipe losses (distillation soft CE / MarginMSE / MSE with and without the hard-label
 * term, ListNet, LambdaLoss, group CE) and their gradients against tests/fixtures/loss/cases.txt, written by
 * tests/gen_loss_fixtures.py from the published formulas (float64 numpy, gradients checked there by central
 * differences), on groups with tied logits, tied and all-equal teacher scores, graded labels and saturated pairs.
 * Also: the gradient scale, a micro-batch split summing to the whole batch's gradient (what rank invariance
 * rests on), and the collapse reference value (constant scores give ln G). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "testutil.h"

#define MAXV 256

typedef struct {
    char name[64], loss[32], mode[32];
    int n, G, fd;
    double T, hw, want;
    float z[MAXV], y[MAXV], t[MAXV], dz[MAXV];
} Case;

static int read_vec(FILE *f, const char *key, float *v, int n) {
    char k[32];
    if (fscanf(f, "%31s", k) != 1 || strcmp(k, key)) return -1;
    for (int i = 0; i < n; i++) {
        double x;
        if (fscanf(f, "%lf", &x) != 1) return -1;
        v[i] = (float)x;
    }
    return 0;
}

static int read_case(FILE *f, Case *c) {
    char k[32];
    if (fscanf(f, "%31s", k) != 1) return 0;
    if (strcmp(k, "case") ||
        fscanf(f, "%63s %31s %31s %d %d %lf %lf %d", c->name, c->loss, c->mode, &c->n, &c->G, &c->T, &c->hw, &c->fd) != 8 ||
        c->n * c->G > MAXV)
        return -1;
    int n = c->n * c->G;
    if (read_vec(f, "logits", c->z, n) || read_vec(f, "labels", c->y, n) || read_vec(f, "teacher", c->t, n)) return -1;
    if (fscanf(f, "%31s %lf", k, &c->want) != 2 || strcmp(k, "loss")) return -1;
    return read_vec(f, "dlogits", c->dz, n) ? -1 : 1;
}

static LossSpec case_spec(const Case *c) {
    LossSpec s = {(LossKind)loss_kind_parse(c->loss), 1.0f, DISTILL_KL, (float)c->T, (float)c->hw};
    if (!strcmp(c->loss, "distill")) s.distill = (DistillMode)loss_distill_parse(c->mode);
    return s;
}

static void check_case(const Case *c) {
    int n = c->n * c->G;
    LossSpec s = case_spec(c);
    TU_CHECK((int)s.kind >= 0, "%s: loss %s parses", c->name, c->loss);
    float d[MAXV], scratch[MAXV], d2[MAXV];
    double l = loss_compute(&s, c->z, c->y, c->t, c->n, c->G, 0.5f, d, scratch);
    TU_CHECK(fabs(l - c->want) <= 1e-5 * (1 + fabs(c->want)), "%s: loss %.9g, reference %.9g", c->name, l, c->want);
    float want[MAXV];
    for (int i = 0; i < n; i++) want[i] = 0.5f * c->dz[i];
    char what[96];
    snprintf(what, sizeof what, "%s: dlogits (scale 0.5)", c->name);
    TU_CHECK(tu_check_close(what, d, want, (size_t)n, 2e-6) <= 2e-6, "%s", what);
    /* split into two micro-batches, each scaled by its share: the sum is the whole batch's gradient */
    int n1 = c->n / 2, n2 = c->n - n1;
    double l1 = loss_compute(&s, c->z, c->y, c->t, n1, c->G, (float)n1 / c->n, d2, scratch);
    double l2 = loss_compute(&s, c->z + n1 * c->G, c->y + n1 * c->G, c->t + n1 * c->G, n2, c->G, (float)n2 / c->n,
                             d2 + n1 * c->G, scratch);
    TU_CHECK(fabs((l1 * n1 + l2 * n2) / c->n - c->want) <= 1e-5 * (1 + fabs(c->want)),
             "%s: micro-batch losses weighted by share %.9g vs %.9g", c->name, (l1 * n1 + l2 * n2) / c->n, c->want);
    snprintf(what, sizeof what, "%s: split micro-batches' gradient", c->name);
    TU_CHECK(tu_check_close(what, d2, c->dz, (size_t)n, 2e-6) <= 2e-6, "%s", what);
    /* no gradient requested: same loss */
    TU_CHECK(loss_compute(&s, c->z, c->y, c->t, c->n, c->G, 1.0f, NULL, NULL) == l || c->hw == 0 ||
                 fabs(loss_compute(&s, c->z, c->y, c->t, c->n, c->G, 1.0f, NULL, NULL) - l) < 1e-12,
             "%s: loss without gradient", c->name);
}

static void test_collapse_value(void) {
    float z[12], t[12], y[12], d[12];
    for (int i = 0; i < 12; i++) z[i] = 0.7f, t[i] = (float)(i % 4), y[i] = (float)(i % 4 == 0);
    LossSpec s = {LOSS_DISTILL, 1.0f, DISTILL_KL, 2.0f, 0.0f};
    double l = loss_compute(&s, z, y, t, 3, 4, 1.0f, d, NULL);
    TU_CHECK(fabs(l - loss_collapse_value(&s, 4)) < 1e-12 && fabs(l - log(4.0)) < 1e-12,
             "distill kl of constant scores is ln G: %.12g", l);
    LossSpec ln = {LOSS_LISTNET, 1.0f, DISTILL_KL, 1.0f, 0.0f}, lw = {LOSS_LISTWISE, 1.0f, DISTILL_KL, 1.0f, 0.0f};
    TU_CHECK(fabs(loss_compute(&ln, z, t, NULL, 3, 4, 1.0f, d, NULL) - log(4.0)) < 1e-12, "listnet constant: ln G");
    TU_CHECK(fabs(loss_compute(&lw, z, y, NULL, 3, 4, 1.0f, d, NULL) - log(4.0)) < 1e-12, "group CE constant: ln G");
    LossSpec b = {LOSS_BCE, 1.0f, DISTILL_KL, 1.0f, 0.0f};
    float z0[4] = {0, 0, 0, 0}, yb[4] = {1, 0, 1, 0};
    TU_CHECK(fabs(loss_compute(&b, z0, yb, NULL, 4, 1, 1.0f, d, NULL) - loss_collapse_value(&b, 1)) < 1e-12,
             "bce of zero logits is ln 2");
    LossSpec m = {LOSS_DISTILL, 1.0f, DISTILL_MSE, 1.0f, 0.0f};
    TU_CHECK(isnan(loss_collapse_value(&m, 4)), "mse has no label-free collapse value");
    TU_CHECK(loss_kind_parse("lambdaloss") == LOSS_LAMBDA && loss_kind_parse("nope") < 0 &&
                 loss_distill_parse("margin_mse") == DISTILL_MARGIN_MSE && loss_distill_parse("kd") < 0,
             "names parse");
}

int main(void) {
    FILE *f = fopen(tu_path("fixtures/loss/cases.txt"), "r");
    if (!f) {
        fprintf(stderr, "cannot open fixtures/loss/cases.txt\n");
        return 1;
    }
    Case *c = xr_malloc(sizeof *c);
    int n = 0, r;
    while ((r = read_case(f, c)) == 1) {
        check_case(c);
        n++;
    }
    fclose(f);
    free(c);
    TU_CHECK(r == 0 && n >= 12, "read every case (%d, status %d)", n, r);
    test_collapse_value();
    return tu_finish("test_loss");
}
