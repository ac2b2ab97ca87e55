/* testutil.c: helpers behind testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "knn.h"

int tu_failures = 0;
int tu_checks = 0;

double tu_check_close(const char *what, const float *got, const float *want, size_t n, double tol) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(got[i]) != isnan(want[i])) d = INFINITY;
        if (d > worst) worst = d, wi = i;
    }
    tu_checks++;
    if (worst > tol) {
        tu_failures++;
        fprintf(stderr, "%s: max abs diff %.3g > %.3g at [%zu]: got %.7g want %.7g\n", what, worst, tol, wi,
                got[wi], want[wi]);
    }
    return worst;
}

const char *tu_path(const char *rel) {
    static char bufs[8][4096];
    static int k = 0;
    char *b = bufs[k++ & 7];
    snprintf(b, 4096, "%s/%s", XR_TEST_DIR, rel);
    return b;
}

static void *read_raw(const char *path, size_t elt, size_t *n) {
    XrErr e;
    size_t len;
    char *buf = xr_read_file(path, &len, &e);
    if (!buf) {
        fprintf(stderr, "fixture missing: %s\n", e.msg);
        exit(1);
    }
    if (len % elt) {
        fprintf(stderr, "fixture %s: size %zu not a multiple of %zu\n", path, len, elt);
        exit(1);
    }
    *n = len / elt;
    return buf;
}

float *tu_read_f32(const char *path, size_t *n) { return read_raw(path, 4, n); }
int32_t *tu_read_i32(const char *path, size_t *n) { return read_raw(path, 4, n); }

int tu_finish(const char *name) {
    if (tu_failures) {
        fprintf(stderr, "%s: %d of %d checks failed\n", name, tu_failures, tu_checks);
        return 1;
    }
    printf("%s: %d checks passed\n", name, tu_checks);
    return 0;
}

double tu_rng_unit(TuRng *r) {
    r->s ^= r->s >> 12, r->s ^= r->s << 25, r->s ^= r->s >> 27;
    return ((r->s * 2685821657736338717ULL >> 11) + 0.5) / 9007199254740992.0;
}

float *tu_rng_vec(TuRng *r, size_t n, float scale) {
    float *v = xr_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = (float)((2 * tu_rng_unit(r) - 1) * scale);
    return v;
}

int tu_pair_order(const void *pa, const void *pb) {
    const TuPair *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

void tu_knn_brute_force(const float *q, size_t nq, const float *p, size_t np, size_t dim, int64_t off, int k,
                        float *s, int64_t *idx) {
    TuPair *all = malloc((np ? np : 1) * sizeof *all);
    for (size_t a = 0; a < nq; a++) {
        for (size_t j = 0; j < np; j++) all[j] = (TuPair){knn_score(q + a * dim, p + j * dim, dim), off + (int64_t)j};
        qsort(all, np, sizeof *all, tu_pair_order);
        for (int j = 0; j < k; j++) {
            s[a * k + j] = (size_t)j < np ? all[j].s : -INFINITY;
            idx[a * k + j] = (size_t)j < np ? all[j].i : -1;
        }
    }
    free(all);
}

size_t tu_topk_diff(const float *s1, const int64_t *i1, const float *s2, const int64_t *i2, size_t n) {
    size_t d = 0;
    for (size_t j = 0; j < n; j++)
        if (i1[j] != i2[j] || memcmp(&s1[j], &s2[j], sizeof(float))) d++;
    return d;
}
