/* ops.h: the op API that model code calls. One Backend handle per device; every pointer given to an op
 * lives on that backend's device (host memory for the CPU backend). core/cpu implements the ops in fp32
 * with OpenBLAS GEMMs and OpenMP kernels; a CUDA backend implements the same calls (core/cuda).
 *
 * How an op is declared once: core/ops_list.h lists every op (its contract, its op set, its parameters) and
 * everything else is generated from it: the ops_<name> declarations below, each backend's table of function
 * pointers (OpsTable, core/ops_table.h), the dispatch ops_<name> -> be->ops-><name> (ops.c), the CPU
 * prototypes cpu_<name> and the CUDA prototypes cuda_ops_<name> (same arguments as ops_<name>). The CPU
 * backend's table is filled from the whole list, so a missing cpu_<name> fails the link; the CUDA backend's
 * table names the kernels it has (core/cuda/ops_cuda_table.cu, one line per op), and what it lacks is asked
 * up front with ops_backend_missing / ops_device_missing (a command refuses a device that lacks an op of the
 * set it needs, naming the ops) instead of failing in the middle of a run. ops_backend_create checks BASE
 * and INFER. */
#ifndef XR_OPS_H
#define XR_OPS_H
#include <stddef.h>
#include <stdint.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { XR_DEV_CPU = 0, XR_DEV_CUDA = 1 } XrDevice;
/* What GEMMs and attention compute in. FP32: exact fp32 products. BF16: bf16 inputs, fp32 accumulation
 * (CUDA only). */
typedef enum { XR_PREC_FP32 = 0, XR_PREC_BF16 = 1 } XrPrecision;

/* The op sets of ops_list.h, as bits: what a command needs of a backend. */
typedef enum {
    XR_OPSET_BASE = 1,   /* memory: alloc, free, copies */
    XR_OPSET_INFER = 2,  /* forward ops: scoring and embedding */
    XR_OPSET_TRAIN = 4,  /* dropout, backward passes, optimizer arithmetic */
    XR_OPSET_SEARCH = 8, /* exact k-NN search: the CPU screening product, the device tile screen and rescoring */
} XrOpSet;
#define XR_OPSET_ALL (XR_OPSET_BASE | XR_OPSET_INFER | XR_OPSET_TRAIN | XR_OPSET_SEARCH)

struct OpsTable; /* ops_table.h: one function pointer per op, NULL where the backend lacks it */
struct OpsMem;   /* ops_mem.c: the allocation counter */
struct OpsProf;  /* ops_prof.c: per-op times, when switched on (ops_prof_enable) */

#define XR_ACT_REGIONS 32 /* packed activation regions a backend holds at once (ops_act_region) */

typedef struct {
    XrDevice device;
    const struct OpsTable *ops; /* the backend's ops (set at creation) */
    int threads;  /* CPU: OpenMP threads of the kernels and OpenBLAS threads of the GEMMs */
    void *impl;   /* backend-private state (CPU: per-thread scratch) */
    struct OpsMem *mem; /* what ops_alloc and the backend's scratch hold (ops_mem_stats) */
    struct OpsProf *prof; /* NULL (the default): ops are dispatched untimed; see ops_prof_enable */
    int act_packed; /* ops_act_pack answered 2: INFER activations are bf16, TRAIN ops die (set by the backend) */
    /* ops_act_region's registered packed regions [lo, hi) (kept by ops_act_region_keep for the backend) */
    struct { const char *lo, *hi; } act_regions[XR_ACT_REGIONS];
    int n_act_regions;
} Backend;

/* 1 when an activation argument at address p is stored as bf16 (2 bytes): anywhere while ops_act_pack is on, else
 * inside a region registered with ops_act_region (ops_list.h: one rule for inference and training). p NULL: 0. */
static inline int ops_act_packed_at(const Backend *be, const void *p) {
    if (!p) return 0;
    if (be->act_packed) return 1;
    for (int i = 0; i < be->n_act_regions; i++)
        if ((const char *)p >= be->act_regions[i].lo && (const char *)p < be->act_regions[i].hi) return 1;
    return 0;
}
/* The region bookkeeping of ops_act_region for a backend that packs (base NULL: the question, nothing kept; bytes
 * 0: forget; else register, dying on an overlap or a full table). Returns 2. */
int ops_act_region_keep(Backend *be, const void *base, size_t bytes);

/* The CPU backend. threads <= 0: $OMP_NUM_THREADS when set, else the OpenMP default (all cores).
 * All its parallelism is OpenMP's: OpenBLAS is pinned to one thread per call (process-wide), and the GEMMs
 * split their output over the OpenMP threads. One Backend is used by one thread at a time. */
Backend *ops_backend_cpu(int threads);
/* The one way code above core makes a backend. CPU: `threads` as ops_backend_cpu, index ignored, precision must
 * be FP32. CUDA: GPU `index` (0 .. ops_device_count(XR_DEV_CUDA) - 1), its own stream, GEMMs in `prec`.
 * Returns NULL with e filled (what is missing: a build without CUDA, no GPU visible, an index out of range,
 * bf16 on the CPU) instead of dying. */
Backend *ops_backend_create(XrDevice dev, int index, XrPrecision prec, int threads, XrErr *e);
/* Devices of this kind visible to this build: CPU 1; CUDA the visible GPUs (0 without the CUDA backend or a
 * GPU; never dies). */
int ops_device_count(XrDevice dev);
const char *ops_device_name(XrDevice dev); /* "cpu", "cuda" */
/* What a device kind offers in this build, for `xrank version` and reports. Never dies, needs no GPU. */
typedef struct {
    int built;                  /* this build has the backend */
    int count;                  /* devices visible, as ops_device_count */
    char name[256];             /* device 0 ("" when none visible) */
    int cc_major, cc_minor;     /* CUDA compute capability of device 0 */
    size_t total_mem;           /* bytes of device 0's memory */
    int sm_count;
    int runtime_version, driver_version; /* CUDA runtime / driver */
    int blas_version;           /* cuBLAS (0 unless a GPU is visible) */
    size_t dnn_version;         /* cuDNN */
} XrDeviceInfo;
void ops_device_info(XrDevice dev, XrDeviceInfo *info);
void ops_backend_free(Backend *be);
/* The backend's native handles, opaque above core: the CUDA stream its ops are queued on (a cudaStream_t) and
 * its GPU index; NULL and -1 on the CPU backend. For a communicator that orders its transfers after the ops
 * on the GPU (dist/comm_nccl.c) without including a backend header. */
void *ops_native_stream(Backend *be);
int ops_device_index(Backend *be);
/* Sets the kernel and GEMM thread count (n <= 0: default as above). OpenBLAS's count is process-wide. */
void ops_set_threads(Backend *be, int n);
int ops_get_threads(const Backend *be);

/* The ops of `sets` (XrOpSet bits) that a backend, or the backend of a device kind in this build, lacks: their
 * number, and their names in list order, comma-separated, in buf (cut to n bytes; buf may be NULL). A device
 * kind without a backend in this build lacks every op. Needs no GPU: the tables are static. */
int ops_backend_missing(const Backend *be, unsigned sets, char *buf, size_t n);
int ops_device_missing(XrDevice dev, unsigned sets, char *buf, size_t n);
/* 0 when the device's backend has every op of `sets`; else -1 with e: "--device cuda: the CUDA backend of
 * this build lacks ops that <what> needs: a, b, ...". */
int ops_device_require(XrDevice dev, unsigned sets, const char *what, XrErr *e);

/* The backend's allocation counter: every ops_alloc / ops_free, and the backend's own scratch (CUDA: cuBLAS and
 * attention workspaces; both: the bf16 working copy of ops_bf16_weights; CPU: the kernels' per-thread scratch is not
 * counted, it is small and host-side). live: bytes held now; peak: the most held at once since creation or the last
 * ops_mem_reset_peak. A training run checks its memory plan (encoder_train_plan) against it. */
typedef struct {
    size_t live, peak;
    int64_t allocs;
} XrMemStats;
void ops_mem_stats(const Backend *be, XrMemStats *s);
void ops_mem_reset_peak(Backend *be);
/* Bytes the backend's device can still give: the GPU's free memory (cudaMemGetInfo), or on the CPU the host's
 * MemAvailable bounded by this process's cgroup v2 limit (memory.max - memory.current). Tests set
 * $XR_TEST_MEM_AVAILABLE (bytes) to pretend a smaller device. */
size_t ops_mem_available(Backend *be);
/* Bytes of device scratch the backend's training attention requests at most for S sequences of at most max_len
 * tokens, NH heads of dh: the saved-probability ops (ops_attention_train / ops_attention_backward, lse 0) or the
 * log-sum-exp ones (ops_attention_train_lse / ops_attention_backward_lse, lse 1); what a memory plan counts for it
 * (a backend grows scratch to 9/8 of a request). CUDA: the backward's row sums [S, max_len, NH] of the exact kernels
 * (either kind), or the GEMM path's chunk of padded blocks (XR_CUDA_TRAIN_ATTENTION=gemm, core/att_gemm.h; lse adds
 * the recomputed P block); CPU: 0 (its per-thread score blocks are host scratch). */
size_t ops_attention_scratch(Backend *be, int S, int max_len, int NH, int dh, int lse);

/* Per-op times, for finding where a step's time goes (benchmarks/gpu/bench_train_step prints them). Off by default:
 * the dispatch then only tests be->prof. On, every ops_<name> call made at nesting depth 0 is bracketed by two marks
 * (CUDA: events recorded on the backend's stream, so the time is the device's, kernels and any idle gap between
 * them inside the op; CPU: the wall clock around the synchronous call) and its time added to (phase, op). The phase
 * is the caller's label (ops_prof_phase), so the forward and backward passes' calls of one op are told apart.
 * A CUDA backend is made with times on when $XR_CUDA_OP_TIMES=1 (ops_backend_create). Recording costs a few
 * microseconds of host time per call, so a timed step runs slower than an untimed one: measure speed without it. */
typedef enum { XR_PHASE_OTHER = 0, XR_PHASE_FORWARD, XR_PHASE_BACKWARD, XR_PHASE_OPTIMIZER, XR_PHASE_COUNT } XrPhase;
typedef struct {
    const char *op;   /* the op's name in ops_list.h */
    XrPhase phase;
    int64_t calls;
    double ms;        /* summed over the calls */
} XrOpTime;
/* on = 1: start recording (from zero); on = 0: stop and release the marks. */
void ops_prof_enable(Backend *be, int on);
int ops_prof_active(const Backend *be);
/* The phase the following calls are counted under (XR_PHASE_OTHER until set). */
void ops_prof_phase(Backend *be, XrPhase phase);
/* Forgets what was recorded so far (after warm-up steps, say); waits for the queued ops first. */
void ops_prof_reset(Backend *be);
/* Waits for the queued ops, then writes up to max rows (every (phase, op) with calls), slowest first, and returns
 * how many there are (possibly more than max). 0 when times are off. */
int ops_prof_report(Backend *be, XrOpTime *rows, int max);
const char *ops_phase_name(XrPhase phase); /* "other", "forward", "backward", "optimizer" */
/* Used by the dispatch (ops.c) only: a mark before the call (-1 when nested in another timed call) and after it. */
int ops_prof_begin(Backend *be, int op);
void ops_prof_end(Backend *be, int mark);

/* OpenBLAS picks its kernels once, when the library loads, from the CPU it recognises or $OPENBLAS_CORETYPE.
 * Releases that predate a CPU fall back to an older kernel set: OpenBLAS 0.3.21 (Debian 12) runs AMD Zen 5
 * on its AVX2 "Haswell" kernels, half the fp32 GEMM speed of its AVX-512 "SkylakeX" kernels on that CPU.
 * ops_cpu_blas_core: the kernel set in use. ops_cpu_blas_better_core: the core type to ask for ("SkylakeX")
 * when the CPU has AVX-512 (F, CD, BW, DQ, VL) but the kernels in use do not, and $OPENBLAS_CORETYPE is
 * unset; NULL otherwise. Acting on it needs a fresh process: set OPENBLAS_CORETYPE and re-exec. */
const char *ops_cpu_blas_core(void);
const char *ops_cpu_blas_better_core(void);
/* Where OpenBLAS would run AVX2 kernels on an AVX-512 CPU, ops_linear (every encoder GEMM) runs xrank's own
 * AVX-512 kernel instead ($XR_CPU_GEMM=openblas|avx512 forces either). Says which: "xrank-avx512" or
 * "openblas" ("device" for a GPU backend). */
const char *ops_cpu_gemm_kernel(const Backend *be);

/* Where dropout draws its mask (rng.h, rng_dropout_span): element j of a row of sequence s at position t
 * keeps with probability 1 - p from Philox(key, {j/4, t, id, id >> 32}), id = seq_ids[s] (s when seq_ids is
 * NULL). So a mask depends on (key, example, position) only: not on packing, batch order or threads. */
typedef struct {
    float p;                  /* drop probability in [0, 1); 0: no dropout */
    uint64_t key;             /* rng_key(seed, step, site): one key per dropout site and step */
    const uint64_t *seq_ids;  /* [S] in device memory, or NULL */
} XrDropout;

/* The ops themselves: ops_<name>(Backend *be, ...) for every entry of ops_list.h, where each op's contract
 * (shapes, aliasing, accumulation, determinism) is written. */
#define XR_OP(set, name, params, args) void ops_##name params;
#define XR_OP_RET(set, type, name, params, args) type ops_##name params;
#include "ops_list.h"
#undef XR_OP
#undef XR_OP_RET

#ifdef __cplusplus
}
#endif
#endif
