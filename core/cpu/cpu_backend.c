/* cpu_backend.c: the CPU backend's state: thread count (OpenMP kernels + OpenBLAS GEMMs) and a grow-only
 * per-thread scratch area, so kernels allocate nothing per token or per call in steady state. */
#include "cpu_ops.h"

#include <stdlib.h>

#include <cblas.h>

#include "xr_common.h"

typedef struct {
    float *scratch;
    size_t scratch_floats;
} CpuState;

static int cpu_default_threads(void) {
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0) return atoi(env);
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void cpu_set_threads(Backend *be, int n) {
    be->threads = n > 0 ? n : cpu_default_threads();
    /* OpenBLAS keeps one process-wide count; the GEMMs run with the same number of threads as the kernels. */
    openblas_set_num_threads(be->threads);
}

void cpu_backend_init(Backend *be, int threads) {
    be->device = XR_DEV_CPU;
    be->impl = xr_calloc(1, sizeof(CpuState));
    cpu_set_threads(be, threads);
}

void cpu_backend_release(Backend *be) {
    CpuState *st = be->impl;
    if (!st) return;
    free(st->scratch);
    free(st);
    be->impl = NULL;
}

float *cpu_scratch(Backend *be, size_t floats_per_thread, int nthreads) {
    CpuState *st = be->impl;
    /* round each thread's slice to 64 bytes so threads never share a cache line */
    size_t per = (floats_per_thread + 15) & ~(size_t)15;
    size_t need = per * (size_t)nthreads;
    if (need > st->scratch_floats) {
        free(st->scratch);
        st->scratch = aligned_alloc(64, need * sizeof(float));
        if (!st->scratch) xr_die("out of memory allocating %zu bytes of CPU scratch", need * sizeof(float));
        st->scratch_floats = need;
    }
    return st->scratch;
}
