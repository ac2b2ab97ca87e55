/* ops_prof.c: per-op times (ops.h, ops_prof_enable). The dispatch (ops.c) calls ops_prof_begin / ops_prof_end around
 * every op while be->prof is set; each timed call takes two marks (CUDA events on the backend's stream, or wall-clock
 * readings on the CPU) and a pending entry. Pending entries are resolved, and their times added to the (phase, op)
 * totals, only when the report is asked for or the pending list is full: both wait for the device first, so
 * recording never waits for the GPU between ops. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"
#include "ops_table.h"
#include "xr_common.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

static const char *const op_names[] = {
#define XR_OP(set, name, params, args) #name,
#define XR_OP_RET(set, type, name, params, args) #name,
#include "ops_list.h"
#undef XR_OP
#undef XR_OP_RET
};
enum { NOPS = (int)(sizeof op_names / sizeof op_names[0]) };
enum { PEND_MAX = 8192 }; /* calls recorded between two resolutions (XLM-R large's training step makes ~1,500) */

typedef struct OpsProf {
    XrPhase phase;
    int depth;        /* >0 inside a timed call: ops it calls through the dispatch are not timed again */
    int npend;
    struct {
        short op, phase;
    } pend[PEND_MAX];
    int nmarks;       /* CUDA events created so far (reused after each resolution); 2 per pending call */
    void *marks[2 * PEND_MAX];
    double t[2 * PEND_MAX]; /* CPU: seconds */
    int64_t calls[XR_PHASE_COUNT][NOPS];
    double ms[XR_PHASE_COUNT][NOPS];
} OpsProf;

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#ifdef XR_HAVE_CUDA
static int is_cuda(const Backend *be) { return be->device == XR_DEV_CUDA; }
#endif

/* Waits for the device, adds the pending calls' times to the totals and empties the pending list. */
static void resolve(Backend *be) {
    OpsProf *p = be->prof;
    be->ops->sync(be); /* not through the dispatch: the wait is no op of the step */
    for (int i = 0; i < p->npend; i++) {
        double ms;
#ifdef XR_HAVE_CUDA
        if (is_cuda(be))
            ms = cuda_ops_mark_ms(p->marks[2 * i], p->marks[2 * i + 1]);
        else
#endif
            ms = 1e3 * (p->t[2 * i + 1] - p->t[2 * i]);
        p->calls[p->pend[i].phase][p->pend[i].op]++;
        p->ms[p->pend[i].phase][p->pend[i].op] += ms;
    }
    p->npend = 0;
}

static void take_mark(Backend *be, int k) {
    OpsProf *p = be->prof;
#ifdef XR_HAVE_CUDA
    if (is_cuda(be)) {
        if (k >= p->nmarks) p->marks[p->nmarks++] = cuda_ops_mark_create(be);
        cuda_ops_mark_record(be, p->marks[k]);
        return;
    }
#endif
    p->t[k] = wall();
}

int ops_prof_begin(Backend *be, int op) {
    OpsProf *p = be->prof;
    if (p->depth++ > 0) return -1;
    if (op < 0 || op >= NOPS) xr_die("ops_prof: op number %d out of range (%d ops)", op, NOPS);
    if (p->npend == PEND_MAX) resolve(be);
    int i = p->npend++;
    p->pend[i].op = (short)op, p->pend[i].phase = (short)p->phase;
    take_mark(be, 2 * i);
    return i;
}

void ops_prof_end(Backend *be, int mark) {
    OpsProf *p = be->prof;
    p->depth--;
    if (mark >= 0) take_mark(be, 2 * mark + 1);
}

void ops_prof_enable(Backend *be, int on) {
    if (!on) {
        if (!be->prof) return;
#ifdef XR_HAVE_CUDA
        if (is_cuda(be)) {
            be->ops->sync(be);
            for (int i = 0; i < be->prof->nmarks; i++) cuda_ops_mark_destroy(be->prof->marks[i]);
        }
#endif
        free(be->prof);
        be->prof = NULL;
        return;
    }
    if (be->prof) {
        ops_prof_reset(be);
        return;
    }
    be->prof = xr_calloc(1, sizeof *be->prof);
}

int ops_prof_active(const Backend *be) { return be->prof != NULL; }

void ops_prof_phase(Backend *be, XrPhase phase) {
    if (phase < 0 || phase >= XR_PHASE_COUNT) xr_die("ops_prof_phase: phase %d out of range", (int)phase);
    if (be->prof) be->prof->phase = phase;
}

void ops_prof_reset(Backend *be) {
    OpsProf *p = be->prof;
    if (!p) return;
    resolve(be);
    memset(p->calls, 0, sizeof p->calls);
    memset(p->ms, 0, sizeof p->ms);
}

static int by_ms_desc(const void *a, const void *b) {
    double x = ((const XrOpTime *)a)->ms, y = ((const XrOpTime *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

int ops_prof_report(Backend *be, XrOpTime *rows, int max) {
    OpsProf *p = be->prof;
    if (!p) return 0;
    resolve(be);
    XrOpTime all[XR_PHASE_COUNT * NOPS];
    int n = 0;
    for (int ph = 0; ph < XR_PHASE_COUNT; ph++)
        for (int op = 0; op < NOPS; op++)
            if (p->calls[ph][op]) all[n++] = (XrOpTime){op_names[op], (XrPhase)ph, p->calls[ph][op], p->ms[ph][op]};
    qsort(all, (size_t)n, sizeof all[0], by_ms_desc);
    for (int i = 0; i < n && i < max; i++) rows[i] = all[i];
    return n;
}

const char *ops_phase_name(XrPhase phase) {
    static const char *const names[XR_PHASE_COUNT] = {"other", "forward", "backward", "optimizer"};
    return phase >= 0 && phase < XR_PHASE_COUNT ? names[phase] : "?";
}
