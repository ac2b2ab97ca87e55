/* cpu_backend.c: the CPU backend's state: the OpenMP thread count of every kernel and GEMM, and a grow-only
 * per-thread scratch area, so kernels allocate nothing per token or per call in steady state. */
#include "cpu_ops.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cblas.h>

#include "ops_table.h"
#include "xr_common.h"

typedef struct {
    float *scratch;
    size_t scratch_floats;
    int own_gemm; /* ops_linear runs xrank's AVX-512 kernel instead of OpenBLAS */
    float **worker_scratch; /* [n_workers]: each worker's GEMM scratch for ops_knn_gemm, made on first use */
    int n_workers;
    CpuPrecision prec; /* bf16 training emulation (cpu_precision.c) */
    CpuPack pack;      /* packed inference storage, a test capability (cpu_pack.c) */
} CpuState;

/* Kernel sets of OpenBLAS without AVX-512 that it uses, or falls back to on x86-64 CPUs it does not know. */
static int blas_core_lacks_avx512(const char *core) {
    static const char *const older[] = {"Haswell", "Zen", "Sandybridge", "Nehalem", "Prescott", "Core2",
                                        "Atom", "Barcelona", "Bulldozer", "Piledriver", "Steamroller",
                                        "Excavator", "Penryn", "Dunnington", "Opteron", "Katmai"};
    for (size_t i = 0; core && i < sizeof older / sizeof older[0]; i++)
        if (strcasecmp(core, older[i]) == 0) return 1;
    return 0;
}

/* $XR_CPU_GEMM = openblas | avx512 forces a choice; by default xrank's kernel runs where the CPU has AVX-512
 * and OpenBLAS's kernels do not (there it is ~1.5x faster; OpenBLAS's own AVX-512 kernels are faster still). */
static int choose_own_gemm(void) {
    const char *force = getenv("XR_CPU_GEMM");
    int avail = cpu_sgemm_avx512_available();
    if (force && strcmp(force, "openblas") == 0) return 0;
    if (force && strcmp(force, "avx512") == 0) return avail;
    return avail && blas_core_lacks_avx512(openblas_get_corename());
}

CpuPrecision *cpu_precision(Backend *be) { return &((CpuState *)be->impl)->prec; }
CpuPack *cpu_pack_state(Backend *be) { return &((CpuState *)be->impl)->pack; }

int cpu_use_own_gemm(const Backend *be) { return ((const CpuState *)be->impl)->own_gemm; }

const char *ops_cpu_gemm_kernel(const Backend *be) {
    if (be->device != XR_DEV_CPU) return "device";
    return cpu_use_own_gemm(be) ? "xrank-avx512" : "openblas";
}

static int cpu_default_threads(void) {
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0) return atoi(env);
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void free_workers(CpuState *st) {
    for (int i = 0; i < st->n_workers; i++) free(st->worker_scratch[i]);
    free(st->worker_scratch);
    st->worker_scratch = NULL;
    st->n_workers = 0;
}

void cpu_set_threads(Backend *be, int n) {
    be->threads = n > 0 ? n : cpu_default_threads();
    CpuState *st = be->impl;
    if (st->n_workers != be->threads) {
        free_workers(st);
        st->worker_scratch = xr_calloc((size_t)be->threads, sizeof *st->worker_scratch);
        st->n_workers = be->threads;
    }
    /* The GEMMs split their output over OpenMP threads and call OpenBLAS single-threaded in each (see
     * cpu_gemm.c); OpenBLAS's count is process-wide, so it is pinned to 1 here. */
    openblas_set_num_threads(1);
}

void cpu_backend_init(Backend *be, int threads) {
    be->device = XR_DEV_CPU;
    CpuState *st = xr_calloc(1, sizeof(CpuState));
    st->own_gemm = choose_own_gemm();
    be->impl = st;
    cpu_set_threads(be, threads);
}

void cpu_backend_release(Backend *be) {
    CpuState *st = be->impl;
    if (!st) return;
    cpu_precision_release(be);
    cpu_pack_release(be);
    free_workers(st);
    free(st->scratch);
    free(st);
    be->impl = NULL;
}

void *cpu_host_alloc(size_t bytes) {
    size_t n = (bytes + 63) & ~(size_t)63; /* aligned_alloc wants a multiple of the alignment */
    void *p = aligned_alloc(64, n ? n : 64);
    if (!p) xr_die("out of memory allocating %zu bytes", bytes);
    return p;
}

void *cpu_alloc(Backend *be, size_t bytes) {
    void *p = cpu_host_alloc(bytes);
    ops_mem_note_alloc(be, p, bytes);
    return p;
}

void cpu_free(Backend *be, void *p) {
    ops_mem_note_free(be, p);
    free(p);
}

void *cpu_pinned_alloc(Backend *be, size_t bytes) { return cpu_host_alloc(bytes); }

void cpu_pinned_free(Backend *be, void *p) { free(p); }

void cpu_to_device_async(Backend *be, void *dst, const void *src, size_t bytes) {
    if (dst != src) memcpy(dst, src, bytes);
}

void cpu_sync(Backend *be) {}

void cpu_to_device(Backend *be, void *dst, const void *src, size_t bytes) {
    if (dst != src) memcpy(dst, src, bytes);
}

void cpu_to_host(Backend *be, void *dst, const void *src, size_t bytes) {
    if (dst != src) memcpy(dst, src, bytes);
}

float *cpu_worker_scratch(Backend *be, int worker) {
    CpuState *st = be->impl;
    if (worker < 0 || worker >= st->n_workers)
        xr_die("ops_knn_gemm: worker %d out of range (the backend has %d threads)", worker, st->n_workers);
    /* only worker `worker` touches its slot, so the first use may allocate without a lock */
    if (!st->worker_scratch[worker]) st->worker_scratch[worker] = cpu_host_alloc(cpu_sgemm_avx512_scratch() * sizeof(float));
    return st->worker_scratch[worker];
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

const char *ops_cpu_blas_core(void) { return openblas_get_corename(); }

const char *ops_cpu_blas_better_core(void) {
    if (getenv("OPENBLAS_CORETYPE")) return NULL; /* the user chose */
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
          __builtin_cpu_supports("avx512vl")))
        return NULL;
    if (blas_core_lacks_avx512(openblas_get_corename())) return "SkylakeX";
#endif
    return NULL;
}
