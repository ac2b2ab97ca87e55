/* test_ops_prof: the per-op times' bookkeeping (ops.h, ops_prof_enable) on the CPU backend, whose marks are wall-clock
 * readings: every dispatched call is counted once under the phase set when it was made, an op called by another op
 * through the dispatch is not counted again, rows come slowest first, a call's time lies within the wall time
 * around it, more calls than the pending list holds are all counted, a reset forgets, and with times off nothing is
 * recorded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"
#include "ops_table.h"
#include "testutil.h"

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* the row of (phase, op), or NULL */
static const XrOpTime *row(const XrOpTime *r, int n, XrPhase ph, const char *op) {
    for (int i = 0; i < n; i++)
        if (r[i].phase == ph && !strcmp(r[i].op, op)) return &r[i];
    return NULL;
}

/* a zero that calls ops_scale through the dispatch: the nested call must not be counted */
static void zero_via_scale(Backend *be, float *x, size_t n) { ops_scale(be, x, n, 0.0f); }

int main(void) {
    Backend *be = ops_backend_cpu(1);
    enum { N = 192 };
    TuRng rng = {7};
    float *a = tu_rng_vec(&rng, (size_t)N * N, 1.0f), *b = tu_rng_vec(&rng, (size_t)N * N, 1.0f);
    float *c = calloc((size_t)N * N, sizeof *c), v[16];
    XrOpTime r[64];

    /* off: ops run, nothing is recorded */
    TU_CHECK(!ops_prof_active(be), "times on by default");
    ops_zero(be, v, 16);
    TU_CHECK(ops_prof_report(be, r, 64) == 0, "a report with times off has rows");

    ops_prof_enable(be, 1);
    TU_CHECK(ops_prof_active(be), "times not on after ops_prof_enable");
    ops_zero(be, v, 16); /* phase other */
    ops_prof_phase(be, XR_PHASE_FORWARD);
    double t0 = wall();
    for (int i = 0; i < 3; i++) ops_gemm(be, 0, 1, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
    double gemm_wall = 1e3 * (wall() - t0);
    ops_zero(be, v, 16);
    ops_zero(be, v, 16);
    ops_prof_phase(be, XR_PHASE_BACKWARD);
    ops_gemm(be, 1, 0, N, N, N, 1.0f, a, N, b, N, 1.0f, c, N);
    ops_scale(be, v, 16, 0.5f);
    int n = ops_prof_report(be, r, 64);
    TU_CHECK(n == 5, "%d rows, want 5 (other zero, forward gemm and zero, backward gemm and scale)", n);
    const XrOpTime *fg = row(r, n, XR_PHASE_FORWARD, "gemm"), *fz = row(r, n, XR_PHASE_FORWARD, "zero");
    const XrOpTime *bg = row(r, n, XR_PHASE_BACKWARD, "gemm"), *bs = row(r, n, XR_PHASE_BACKWARD, "scale");
    const XrOpTime *oz = row(r, n, XR_PHASE_OTHER, "zero");
    TU_CHECK(fg && fg->calls == 3, "forward gemm: %lld calls, want 3", fg ? (long long)fg->calls : -1LL);
    TU_CHECK(fz && fz->calls == 2, "forward zero: %lld calls, want 2", fz ? (long long)fz->calls : -1LL);
    TU_CHECK(bg && bg->calls == 1 && bs && bs->calls == 1 && oz && oz->calls == 1, "backward gemm / scale, other zero");
    /* slowest first (which row is slowest is the machine's business: on 2 loaded cores a 16-float zero's OpenMP
     * wake-up has outlasted three 192^3 GEMMs) */
    for (int i = 1; i < n; i++) TU_CHECK(r[i - 1].ms >= r[i].ms, "rows %d, %d out of order", i - 1, i);
    for (int i = 0; i < n; i++) TU_CHECK(r[i].ms >= 0, "row %d: %g ms", i, r[i].ms);
    /* the recorded time of the GEMMs is within the wall time around the three calls */
    TU_CHECK(fg && fg->ms > 0 && fg->ms <= gemm_wall + 1e-6, "forward gemm %.4f ms, wall %.4f ms", fg ? fg->ms : -1.0,
             gemm_wall);
    TU_CHECK(ops_prof_report(be, r, 2) == 5, "the count with a short row buffer");

    /* a nested dispatch is counted once, as the outer op */
    OpsTable t = *be->ops;
    t.zero = zero_via_scale;
    const struct OpsTable *orig = be->ops;
    be->ops = &t;
    ops_prof_reset(be);
    TU_CHECK(ops_prof_report(be, r, 64) == 0, "rows after a reset");
    ops_prof_phase(be, XR_PHASE_OPTIMIZER);
    v[0] = 3.0f;
    ops_zero(be, v, 16);
    n = ops_prof_report(be, r, 64);
    TU_CHECK(v[0] == 0.0f, "zero_via_scale did not run");
    TU_CHECK(n == 1 && r[0].phase == XR_PHASE_OPTIMIZER && !strcmp(r[0].op, "zero") && r[0].calls == 1,
             "nested: %d rows, first %s/%s", n, n ? ops_phase_name(r[0].phase) : "-", n ? r[0].op : "-");
    be->ops = orig;

    /* more calls than the pending list holds: all counted */
    ops_prof_reset(be);
    for (int i = 0; i < 20000; i++) ops_scale(be, v, 16, 1.0f);
    n = ops_prof_report(be, r, 64);
    TU_CHECK(n == 1 && r[0].calls == 20000, "20000 calls: %d rows, %lld calls", n, n ? (long long)r[0].calls : 0LL);
    TU_CHECK(!strcmp(ops_phase_name(XR_PHASE_BACKWARD), "backward"), "phase name %s",
             ops_phase_name(XR_PHASE_BACKWARD));

    ops_prof_enable(be, 0);
    TU_CHECK(!ops_prof_active(be) && ops_prof_report(be, r, 64) == 0, "times still on after ops_prof_enable(0)");
    ops_prof_enable(be, 1); /* left on: ops_backend_free releases it */
    ops_zero(be, v, 16);
    ops_backend_free(be);
    free(a), free(b), free(c);
    return tu_finish("test_ops_prof");
}
