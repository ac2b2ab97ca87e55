/* ops_cuda.cu: the CUDA backend of the op API (core/ops.h): backend state (device, stream, cuBLAS handles),
 * device memory, cuBLAS GEMMs and the token-wise, attention and pooling kernels. fp32 storage and fp32
 * accumulation throughout, so results match the CPU backend to float rounding (see tests/test_cuda_ops.c).
 * BF16 mode (opt-in) runs ops_linear as bf16 cuBLASLt GEMMs with a fused bias and inference attention as a
 * fused flash-style kernel (flash_attn.cu; head sizes 32 and 64), else as batched bf16 GEMMs over padded
 * per-(sequence, head) blocks plus a softmax kernel (see tests/test_cuda_bf16.c). bf16 training (ops_bf16_weights,
 * ops_act_precision): the weights' bf16 working copy that GEMMs read, and forward outputs rounded to bf16 values
 * (tests/test_cuda_bf16_train.c). Packed inference storage (ops_act_pack, XR_CUDA_ACT_PACK=1, BF16 mode): the INFER
 * kernels read and store 2-byte bf16 activations, ops_linear writes bf16 through cuBLASLt and reads the inference
 * weights' bf16 copy (ops_infer_weights) (tests/test_cuda_act_pack.c). */
#include "cuda/ops_cuda.h"
#include "cuda/flash_attn.h"
#include "cuda/cuda_internal.cuh"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops_table.h"
#include "xr_common.h"

/* BF16 mode's attention when no probabilities are saved, chosen by XR_CUDA_ATTENTION=flash (the default:
 * flash_attn.cu with the fastest tile measured on H100) | a tile's name (xr_flash_tile_name: flash64, flash128,
 * flash128w8, flash256 and the register-capped flash64x3, flash128x3, flash128w8x2; flash_attn.h) | gemm (padded
 * batched GEMMs + softmax) | exact (the fp32 kernel). Head sizes the flash kernel lacks take the gemm path. */
enum AttPath { ATT_FLASH, ATT_GEMM, ATT_EXACT };
#define XR_FLASH_DEFAULT XR_FLASH_128

/* Device scratch buffers of the BF16 paths and of the training ops (cuda_ops_scratch): grown on demand, kept
 * for the backend's life. */
enum {
    SCR_X, SCR_W, SCR_QKV, SCR_SCORES, SCR_P, SCR_CTX, SCR_LT, SCR_BIAS, SCR_SHADOW,
    SCR_OPND0, SCR_OPND1, /* bf16 training: the backward GEMMs' rounded operands (cuda_ops_bf16_operand) */
    SCR_B16, SCR_Y32,     /* packed linear: its bias cast to bf16; the fp32 product of its fallback GEMM */
    SCR_TRAIN0, SCR_COUNT = SCR_TRAIN0 + XR_TRAIN_SCRATCH
};

#define XR_LT_CACHE 64 /* cuBLASLt algorithms remembered per backend, keyed by the GEMM's shape */
typedef struct {
    int M, N, K, bias, fast, y16, valid;
    unsigned al_a, al_b, al_c; /* pointer alignments the algorithm was chosen for */
    cublasLtMatmulAlgo_t algo;
} LtAlgo;

typedef struct {
    int device;
    Backend *be; /* the handle this state belongs to (the allocation counter of its scratch) */
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    XrGemmMode mode;
    int bf16_fast;           /* XR_CUDA_BF16_GEMM=fast: fp32 operands rounded inside cuBLAS instead of by us */
    int att_path;            /* BF16 mode's inference attention, XR_CUDA_ATTENTION (AttPath) */
    XrFlashTile flash_tile;  /* its tile shape when att_path is ATT_FLASH */
    int att_chunk;           /* XR_CUDA_ATT_CHUNK > 0: at most that many (sequence, head) blocks per chunk (tests) */
    int train_att_gemm;      /* XR_CUDA_TRAIN_ATTENTION=gemm: training attention on batched GEMMs (att_gemm.cu) */
    void *scr[SCR_COUNT];
    size_t scr_bytes[SCR_COUNT];
    LtAlgo lt_cache[XR_LT_CACHE];
    int lt_next;
    /* BF16 mode: layernorm, gelu and attention also write a bf16 copy of their output (SCR_SHADOW), which the
     * very next op may use as its GEMM operand instead of converting again. It is valid only for the op right
     * after (ops: op_begin counts each op once, at its entry; lookups and helpers count nothing), so no other write
     * can come between; a producer taking the buffer (shadow_take) voids the copy registered before. */
    unsigned long long ops, shadow_op;
    const float *shadow_src;
    size_t shadow_n;
    int shadow_upto; /* shadow_n is an upper bound (attention: rows = the batch's tokens, unknown on the host) */
    /* bf16 training (ops_bf16_weights): the working copy of the master weights every GEMM reads */
    const float *wmaster;
    __nv_bfloat16 *wcopy;
    size_t wn;
    int64_t wrefreshes;
    int act_bf16; /* ops_act_precision(BF16): forward ops round what they store to bf16 (act_round) */
    unsigned long long act_casts; /* activation operands cast to bf16 for a GEMM (cuda_ops_act_casts) */
    unsigned long long pack_fallbacks; /* packed linears without a cuBLASLt algorithm (cuda_ops_packed_fallbacks) */
    /* Packed inference storage (ops_act_pack): XR_CUDA_ACT_PACK=1 lets act_pack pack in bf16 GEMM mode (off by
     * default until its GPU check, test_cuda_act_pack, has passed); the inference weights' bf16 copy
     * (ops_infer_weights) is kept under the same switch. */
    int act_pack_env;
    /* Packed training storage (ops_act_region): XR_CUDA_TRAIN_PACK=1 lets act_region accept regions (off by default:
     * the training ops are converted one by one, the others refuse packed arguments, cuda_pk_refuse) */
    int train_pack_env;
    const float *imaster;
    __nv_bfloat16 *icopy;
    size_t in;
} CudaState;

/* The backend's state. A lookup: counts nothing (queries, marks, helpers inside an op). */
static CudaState *st_of(Backend *be) {
    if (!be || be->device != XR_DEV_CUDA || !be->impl) xr_die("cuda_ops: handle is not a CUDA backend");
    return (CudaState *)be->impl;
}

/* The start of an op: every entry point of the table calls it (or op_stream, cuda_internal.cuh) once, first. It counts
 * the op, and only it does: a producer's bf16 copy serves the very next op (shadow_hit), whatever lookups and helpers
 * run inside an op or between two (the per-op times' marks, queries such as the free memory). */
static CudaState *op_begin(Backend *be) {
    CudaState *st = st_of(be);
    st->ops++;
    return st;
}

/* Scratch buffer `which` of at least `bytes`. Growing frees the old one: cudaFree waits for the device, so no
 * queued kernel still reads it. Contents are not kept. */
static void *scratch(CudaState *st, int which, size_t bytes) {
    if (st->scr_bytes[which] >= bytes) return st->scr[which];
    if (st->scr[which]) {
        ops_mem_note_free(st->be, st->scr[which]);
        XR_CU(cudaFree(st->scr[which]));
    }
    st->scr[which] = NULL;
    size_t want = bytes + bytes / 8; /* some headroom: batch shapes drift upwards */
    cudaError_t e = cudaMalloc(&st->scr[which], want);
    if (e != cudaSuccess) xr_die("CUDA: out of device memory allocating %zu bytes of scratch on GPU %d: %s", want,
                                 st->device, cudaGetErrorString(e));
    st->scr_bytes[which] = want;
    ops_mem_note_alloc(st->be, st->scr[which], want);
    return st->scr[which];
}

/* The copy's buffer for a producer about to write it: the registered copy is void from here (its buffer is about to
 * be overwritten, or reallocated), until the producer registers its own (shadow_set). A consumer asks shadow_hit
 * before any of this in its op. */
static __nv_bfloat16 *shadow_take(CudaState *st, size_t n) {
    st->shadow_src = NULL;
    return (__nv_bfloat16 *)scratch(st, SCR_SHADOW, n * 2);
}
/* Where a producer writes the bf16 copy of its n-float output, or NULL when no copy is wanted. */
static __nv_bfloat16 *shadow_for(CudaState *st, size_t n) {
    if (st->mode != XR_GEMM_BF16 || st->bf16_fast || st->be->act_packed) return NULL;
    return shadow_take(st, n);
}
static void shadow_set(CudaState *st, const float *out, size_t n, int upto) {
    st->shadow_src = out, st->shadow_n = n, st->shadow_op = st->ops, st->shadow_upto = upto;
}
/* The bf16 copy of x[n] when the op just before this one wrote it. */
static const __nv_bfloat16 *shadow_hit(CudaState *st, const float *x, size_t n) {
    int fits = st->shadow_upto ? n <= st->shadow_n : n == st->shadow_n;
    if (st->shadow_src == x && fits && st->shadow_op + 1 == st->ops)
        return (const __nv_bfloat16 *)st->scr[SCR_SHADOW];
    return NULL;
}

/* bf16 training: the training ops (train_ops.cu) whose output the next op reads as a GEMM operand write its bf16
 * copy too, so that GEMM does not cast it (cuda_internal.cuh). Wanted only with the working copy registered and
 * activations stored in bf16: the copy is then the stored values, exactly. */
__nv_bfloat16 *cuda_ops_next_copy(Backend *be, size_t n) {
    CudaState *st = (CudaState *)be->impl;
    if (!st->wmaster || !st->act_bf16 || !n) return NULL;
    return shadow_take(st, n);
}
void cuda_ops_next_copy_written(Backend *be, const float *out, size_t n, int upto) {
    shadow_set((CudaState *)be->impl, out, n, upto);
}
const __nv_bfloat16 *cuda_ops_prev_copy(Backend *be, const float *x, size_t n) {
    return shadow_hit((CudaState *)be->impl, x, n);
}

/* ---------------- backend and memory ---------------- */

extern "C" int cuda_ops_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver / no GPU: clear the sticky error, report none */
        return 0;
    }
    return n;
}

extern "C" Backend *cuda_ops_backend(int device) {
    int n = cuda_ops_device_count();
    if (device < 0 || device >= n) xr_die("cuda_ops: GPU %d requested but %d visible", device, n);
    Backend *be = (Backend *)xr_calloc(1, sizeof *be);
    CudaState *st = (CudaState *)xr_calloc(1, sizeof *st);
    st->device = device;
    st->be = be;
    st->mode = XR_GEMM_FP32;
    XR_CU(cudaSetDevice(device));
    XR_CU(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking));
    XR_BLAS(cublasCreate(&st->blas));
    XR_BLAS(cublasSetStream(st->blas, st->stream));
    /* exact fp32 unless the caller opts in: never let cuBLAS pick TF32 on its own */
    XR_BLAS(cublasSetMathMode(st->blas, CUBLAS_PEDANTIC_MATH));
    XR_BLAS(cublasLtCreate(&st->lt));
    const char *g = getenv("XR_CUDA_BF16_GEMM"), *at = getenv("XR_CUDA_ATTENTION");
    st->bf16_fast = g && !strcmp(g, "fast");
    st->att_path = ATT_FLASH;
    st->flash_tile = XR_FLASH_DEFAULT;
    if (at && *at && strcmp(at, "flash")) {
        if (!strcmp(at, "gemm")) st->att_path = ATT_GEMM;
        else if (!strcmp(at, "exact")) st->att_path = ATT_EXACT;
        else if (!xr_flash_tile_by_name(at, &st->flash_tile)) {
            char names[256] = "";
            size_t n = 0;
            for (int t = 0; t < XR_FLASH_TILES && n < sizeof names; t++)
                n += (size_t)snprintf(names + n, sizeof names - n, "%s, ", xr_flash_tile_name((XrFlashTile)t));
            xr_die("XR_CUDA_ATTENTION=%s: expected flash (the default tile, %s), a tile (%sin flash_attn.h), gemm or "
                   "exact", at, xr_flash_tile_name(XR_FLASH_DEFAULT), names);
        }
    }
    const char *ch = getenv("XR_CUDA_ATT_CHUNK");
    st->att_chunk = ch ? atoi(ch) : 0;
    /* the training attention (attention_train / attention_backward): exact by default until the GEMM path has passed
     * its GPU checks (tests/test_cuda_att_gemm.c) */
    const char *ta = getenv("XR_CUDA_TRAIN_ATTENTION");
    if (ta && *ta && strcmp(ta, "gemm") && strcmp(ta, "exact"))
        xr_die("XR_CUDA_TRAIN_ATTENTION=%s: expected gemm or exact", ta);
    st->train_att_gemm = ta && !strcmp(ta, "gemm");
    const char *ap = getenv("XR_CUDA_ACT_PACK");
    if (ap && *ap && strcmp(ap, "0") && strcmp(ap, "1")) xr_die("XR_CUDA_ACT_PACK=%s: expected 0 or 1", ap);
    st->act_pack_env = ap && !strcmp(ap, "1");
    const char *tp = getenv("XR_CUDA_TRAIN_PACK");
    if (tp && *tp && strcmp(tp, "0") && strcmp(tp, "1")) xr_die("XR_CUDA_TRAIN_PACK=%s: expected 0 or 1", tp);
    st->train_pack_env = tp && !strcmp(tp, "1");
    be->device = XR_DEV_CUDA;
    be->ops = cuda_ops_table();
    be->threads = 1;
    be->impl = st;
    return be;
}

extern "C" void cuda_ops_backend_free(Backend *be) {
    if (!be) return;
    CudaState *st = st_of(be);
    XR_CU(cudaStreamSynchronize(st->stream));
    for (int i = 0; i < SCR_COUNT; i++)
        if (st->scr[i]) XR_CU(cudaFree(st->scr[i]));
    if (st->wcopy) XR_CU(cudaFree(st->wcopy));
    if (st->icopy) XR_CU(cudaFree(st->icopy));
    XR_BLAS(cublasLtDestroy(st->lt));
    XR_BLAS(cublasDestroy(st->blas));
    XR_CU(cudaStreamDestroy(st->stream));
    free(st);
    be->impl = NULL;
    free(be);
}

extern "C" void cuda_ops_set_gemm_mode(Backend *be, XrGemmMode mode) {
    CudaState *st = st_of(be);
    st->mode = mode;
    XR_BLAS(cublasSetMathMode(st->blas, mode == XR_GEMM_FP32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH));
}

/* The public accessor counts as an op: whoever takes the stream (ops_native_stream: NCCL) may queue writes on it. */
extern "C" void *cuda_ops_stream(Backend *be) { return (void *)op_begin(be)->stream; }
void *cuda_ops_stream_in_op(Backend *be) { return (void *)st_of(be)->stream; }
extern "C" int cuda_ops_device_index(Backend *be) { return st_of(be)->device; }

void *cuda_ops_scratch(Backend *be, int slot, size_t bytes) {
    if (slot < 0 || slot >= XR_TRAIN_SCRATCH) xr_die("cuda_ops_scratch: slot %d out of range", slot);
    return scratch((CudaState *)be->impl, SCR_TRAIN0 + slot, bytes);
}

cublasHandle_t cuda_ops_blas(Backend *be) { return st_of(be)->blas; }
int cuda_ops_train_att_gemm(Backend *be) { return ((CudaState *)be->impl)->train_att_gemm; }
int cuda_ops_att_chunk(Backend *be) { return ((CudaState *)be->impl)->att_chunk; }

/* The marks are no ops: they must not count in st->ops (op_begin counts), or under XR_CUDA_OP_TIMES=1 the two marks
 * between a producer and the next op would void every bf16 copy the producer wrote for it (shadow_hit) and the timed
 * bf16 step would cast each such GEMM operand again. */
extern "C" void *cuda_ops_mark_create(Backend *be) {
    XR_CU(cudaSetDevice(((CudaState *)be->impl)->device));
    cudaEvent_t ev;
    XR_CU(cudaEventCreate(&ev));
    return (void *)ev;
}

extern "C" void cuda_ops_mark_record(Backend *be, void *mark) {
    XR_CU(cudaEventRecord((cudaEvent_t)mark, ((CudaState *)be->impl)->stream));
}

extern "C" float cuda_ops_mark_ms(void *start, void *end) {
    float ms = 0;
    XR_CU(cudaEventElapsedTime(&ms, (cudaEvent_t)start, (cudaEvent_t)end));
    return ms;
}

extern "C" void cuda_ops_mark_destroy(void *mark) { XR_CU(cudaEventDestroy((cudaEvent_t)mark)); }

extern "C" void cuda_ops_sync(Backend *be) { XR_CU(cudaStreamSynchronize(op_begin(be)->stream)); }

extern "C" void *cuda_ops_alloc(Backend *be, size_t bytes) {
    CudaState *st = op_begin(be);
    XR_CU(cudaSetDevice(st->device));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e != cudaSuccess) xr_die("CUDA: out of device memory allocating %zu bytes on GPU %d: %s", bytes, st->device,
                                 cudaGetErrorString(e));
    ops_mem_note_alloc(be, p, bytes);
    return p;
}

extern "C" size_t cuda_ops_mem_free(Backend *be) {
    CudaState *st = st_of(be);
    XR_CU(cudaSetDevice(st->device));
    size_t free_b = 0, total = 0;
    XR_CU(cudaMemGetInfo(&free_b, &total));
    return free_b;
}

extern "C" void cuda_ops_free(Backend *be, void *p) {
    if (!p) return;
    /* the stream may still use p: cudaFree waits for the device, but be explicit about this stream */
    XR_CU(cudaStreamSynchronize(op_begin(be)->stream));
    ops_mem_note_free(be, p);
    XR_CU(cudaFree(p));
}

extern "C" void *cuda_ops_pinned_alloc(Backend *be, size_t bytes) {
    XR_CU(cudaSetDevice(op_begin(be)->device));
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 64, cudaHostAllocDefault);
    if (e != cudaSuccess) xr_die("CUDA: cannot allocate %zu bytes of page-locked host memory: %s", bytes,
                                 cudaGetErrorString(e));
    return p;
}

extern "C" void cuda_ops_pinned_free(Backend *be, void *p) {
    if (!p) return;
    XR_CU(cudaStreamSynchronize(op_begin(be)->stream)); /* a queued copy may still read it */
    XR_CU(cudaFreeHost(p));
}

extern "C" void cuda_ops_to_device_async(Backend *be, void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    XR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, op_begin(be)->stream));
}

extern "C" void cuda_ops_to_device(Backend *be, void *dst, const void *src, size_t bytes) {
    CudaState *st = op_begin(be);
    if (!bytes) return;
    /* synchronous: the caller may reuse the host buffer as soon as this returns */
    XR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st->stream));
    XR_CU(cudaStreamSynchronize(st->stream));
}

extern "C" void cuda_ops_to_host(Backend *be, void *dst, const void *src, size_t bytes) {
    CudaState *st = op_begin(be);
    if (!bytes) return;
    XR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st->stream));
    XR_CU(cudaStreamSynchronize(st->stream));
}

extern "C" void cuda_ops_copy(Backend *be, void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return;
    XR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, op_begin(be)->stream));
}


/* ---------------- GEMMs (cuBLAS is column-major: a row-major C is C^T column-major) ---------------- */

static void gemm_rm(CudaState *st, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc) {
    /* row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T, with B^T, A^T being the stored arrays */
    cublasComputeType_t ct = st->mode == XR_GEMM_BF16   ? CUBLAS_COMPUTE_32F_FAST_16BF
                             : st->mode == XR_GEMM_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                        : CUBLAS_COMPUTE_32F_PEDANTIC;
    XR_BLAS(cublasGemmEx(st->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                         CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc, ct, CUBLAS_GEMM_DEFAULT));
}

extern "C" void cuda_ops_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                              int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    CudaState *st = op_begin(be);
    if (M <= 0 || N <= 0) return;
    gemm_rm(st, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

__global__ void k_bias_rows(float *y, const float *b, int M, int N) {
    size_t total = (size_t)M * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = b[i % N];
}

__global__ void k_to_bf16(__nv_bfloat16 *out, const float *x, size_t n, int vec) {
    size_t n4 = vec ? n / 4 : 0;
    const float4 *x4 = (const float4 *)x; /* cudaMalloc'd activations and weight views are 16-byte aligned */
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        float4 v = x4[i];
        __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
        ((__nv_bfloat162 *)out)[2 * i] = a;
        ((__nv_bfloat162 *)out)[2 * i + 1] = b;
    }
    for (size_t i = n4 * 4 + blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(x[i]);
}

static void to_bf16(CudaState *st, __nv_bfloat16 *out, const float *x, size_t n) {
    /* float4 loads need 16-byte alignment; weight views inside the flat parameter buffer may lack it */
    int vec = ((uintptr_t)x & 15) == 0 && ((uintptr_t)out & 7) == 0;
    k_to_bf16<<<blocks_for(vec ? n / 4 + 1 : n, 256), 256, 0, st->stream>>>(out, x, n, vec);
    XR_LAUNCHED();
}

#define XR_LT(call)                                                                                          \
    do {                                                                                                     \
        cublasStatus_t s_ = (call);                                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS) xr_die("cuBLASLt: %s failed at %s:%d: %s", #call, __FILE__, __LINE__, \
                                                cublasGetStatusString(s_));                                  \
    } while (0)
#define XR_LT_WORKSPACE ((size_t)32 << 20)

/* Largest power of two (at most 256) dividing the address: cuBLASLt assumes 256 unless told otherwise. */
static unsigned align_of(const void *p) {
    unsigned a = 256;
    while (a > 1 && ((uintptr_t)p % a) != 0) a >>= 1;
    return a;
}

/* y[M,N] = x[M,K] W[N,K]^T (+ b) on cuBLASLt with the bias fused into the epilogue. fast = 0: x and W are
 * bf16 copies; fast = 1: fp32 operands with CUBLAS_COMPUTE_32F_FAST_16BF. fp32 accumulation; y and b fp32, or with
 * y16 both bf16 (cuBLASLt's bias is of D's type outside its int8 / fp8 kernels: the packed inference linear gives it
 * the bias rounded to bf16, as PyTorch's autocast does), y rounded once from the fp32 sum with the bias.
 * Returns 0 when cuBLASLt has no algorithm for this case (the caller falls back to cublasGemmEx). */
static int lt_linear(CudaState *st, void *y, int y16, const void *x, const void *W, const void *b, int M, int N, int K,
                     int fast) {
    cudaDataType_t ab = fast ? CUDA_R_32F : CUDA_R_16BF, dt = y16 ? CUDA_R_16BF : CUDA_R_32F;
    size_t besz = y16 ? 2 : 4;
    cublasComputeType_t ct = fast ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    XR_LT(cublasLtMatmulDescCreate(&op, ct, CUDA_R_32F));
    cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
    XR_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
    XR_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB));
    if (b && align_of(b) < 256) {
        /* a bias view off the 256-byte grid: give the epilogue an aligned copy (N floats, stream-ordered) */
        void *bc = scratch(st, SCR_BIAS, (size_t)N * besz);
        XR_CU(cudaMemcpyAsync(bc, b, (size_t)N * besz, cudaMemcpyDeviceToDevice, st->stream));
        b = bc;
    }
    if (b) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = dt;
        XR_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        XR_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b));
        XR_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    /* column-major view: y^T [N, M] = W [K, N]^T x^T [K, M] */
    XR_LT(cublasLtMatrixLayoutCreate(&la, ab, K, N, K));
    XR_LT(cublasLtMatrixLayoutCreate(&lb, ab, K, M, K));
    XR_LT(cublasLtMatrixLayoutCreate(&lc, dt, N, M, N));
    unsigned al_a = align_of(W), al_b = align_of(x), al_c = align_of(y);
    LtAlgo *hit = NULL;
    for (int i = 0; i < XR_LT_CACHE; i++) {
        LtAlgo *c = &st->lt_cache[i];
        if (c->valid && c->M == M && c->N == N && c->K == K && c->bias == (b != NULL) && c->fast == fast &&
            c->y16 == y16 && c->al_a == al_a && c->al_b == al_b && c->al_c == al_c)
            hit = c;
    }
    void *ws = scratch(st, SCR_LT, XR_LT_WORKSPACE);
    int ok = 1;
    if (!hit) {
        cublasLtMatmulPreference_t pref;
        size_t wsb = XR_LT_WORKSPACE;
        XR_LT(cublasLtMatmulPreferenceCreate(&pref));
        XR_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
        uint32_t aa = al_a, ab_ = al_b, ac = al_c;
        XR_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa));
        XR_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab_, sizeof ab_));
        XR_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac));
        XR_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac));
        if (y16) {
            /* bf16 D: a split-K algorithm must sum its partial products in fp32 (the compute type, in the workspace),
             * never in D's type (the INPLACE and OUTPUT_TYPE schemes, cublasLt.h), which would round the partial sums
             * to bf16: y is bf16 of the fp32 sum, rounded once (ops_list.h act_pack) */
            uint32_t rmask = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
            XR_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &rmask,
                                                       sizeof rmask));
        }
        cublasLtMatmulHeuristicResult_t res;
        int nres = 0;
        cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(st->lt, op, la, lb, lc, lc, pref, 1, &res, &nres);
        XR_LT(cublasLtMatmulPreferenceDestroy(pref));
        if (hs != CUBLAS_STATUS_SUCCESS || nres < 1) {
            ok = 0;
        } else {
            hit = &st->lt_cache[st->lt_next];
            st->lt_next = (st->lt_next + 1) % XR_LT_CACHE;
            hit->M = M, hit->N = N, hit->K = K, hit->bias = b != NULL, hit->fast = fast, hit->y16 = y16, hit->valid = 1;
            hit->al_a = al_a, hit->al_b = al_b, hit->al_c = al_c;
            hit->algo = res.algo;
        }
    }
    if (ok) {
        float alpha = 1.0f, beta = 0.0f;
        XR_LT(cublasLtMatmul(st->lt, op, &alpha, W, la, x, lb, &beta, y, lc, y, lc, &hit->algo, ws, XR_LT_WORKSPACE,
                             st->stream));
    }
    XR_LT(cublasLtMatrixLayoutDestroy(la));
    XR_LT(cublasLtMatrixLayoutDestroy(lb));
    XR_LT(cublasLtMatrixLayoutDestroy(lc));
    XR_LT(cublasLtMatmulDescDestroy(op));
    return ok;
}

/* ---------------- bf16 training: the working copy of the weights ---------------- */

extern "C" void cuda_ops_bf16_weights(Backend *be, const float *master, size_t n) {
    CudaState *st = op_begin(be);
    if (st->wcopy) {
        XR_CU(cudaStreamSynchronize(st->stream)); /* a queued GEMM may still read it */
        ops_mem_note_free(be, st->wcopy);
        XR_CU(cudaFree(st->wcopy));
    }
    st->wcopy = NULL, st->wmaster = NULL, st->wn = 0, st->wrefreshes = 0;
    if (!master) return;
    cudaError_t e = cudaMalloc(&st->wcopy, (n ? n : 1) * 2);
    if (e != cudaSuccess) xr_die("CUDA: out of device memory allocating the bf16 working copy of %zu weights (%zu bytes) "
                                 "on GPU %d: %s", n, n * 2, st->device, cudaGetErrorString(e));
    ops_mem_note_alloc(be, st->wcopy, (n ? n : 1) * 2);
    st->wmaster = master, st->wn = n;
    cuda_ops_weights_refresh(be);
}

extern "C" int64_t cuda_ops_weights_refresh(Backend *be) {
    CudaState *st = op_begin(be);
    if (!st->wmaster) return 0;
    to_bf16(st, st->wcopy, st->wmaster, st->wn); /* the cast kernel: once per optimizer step */
    return ++st->wrefreshes;
}

/* Stepping stone (docs/DESIGN.md, "bf16 training"): activations stored in bf16 are fp32 words holding bf16 values, as
 * the CPU emulation's, so every op keeps its fp32 signature and the GPU's stored values can be checked against the
 * emulation's bit for bit. A GEMM reads a 2-byte copy of its activation operand: the one its producer wrote for it
 * when the producer is the op just before (dropout_add_layernorm, attention_train / _lse, linear_gelu: every GEMM of
 * an encoder layer's forward), else a cast (exact: the values are bf16 already). */
extern "C" void cuda_ops_act_precision(Backend *be, XrPrecision p) { op_begin(be)->act_bf16 = p == XR_PREC_BF16; }

/* not ops: they do not count in st->ops */
int cuda_ops_act_bf16(Backend *be) { return ((const CudaState *)be->impl)->act_bf16; }
int cuda_ops_bf16_operands(Backend *be) { return ((const CudaState *)be->impl)->wmaster != NULL; }
extern "C" unsigned long long cuda_ops_act_casts(Backend *be) { return ((const CudaState *)be->impl)->act_casts; }
extern "C" unsigned long long cuda_ops_packed_fallbacks(Backend *be) {
    return ((const CudaState *)be->impl)->pack_fallbacks;
}

__global__ void k_round_bf16(float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = act_round(x[i], 1);
}

static void act_store(CudaState *st, float *x, size_t n) {
    if (!st->act_bf16 || !n) return;
    k_round_bf16<<<blocks_for(n, 256), 256, 0, st->stream>>>(x, n);
    XR_LAUNCHED();
}

void cuda_ops_act_store(Backend *be, float *x, size_t n) { act_store((CudaState *)be->impl, x, n); }

const __nv_bfloat16 *cuda_ops_bf16_operand(Backend *be, const float *x, size_t n, int slot) {
    CudaState *st = (CudaState *)be->impl;
    if (slot < 0 || slot > 1) xr_die("cuda_ops_bf16_operand: slot %d out of range", slot);
    __nv_bfloat16 *o = (__nv_bfloat16 *)scratch(st, SCR_OPND0 + slot, (n ? n : 1) * 2);
    if (n) {
        to_bf16(st, o, x, n);
        st->act_casts++;
    }
    return o;
}

void cuda_ops_gemm_bf16(Backend *be, int ta, int tb, int M, int N, int K, float alpha, const __nv_bfloat16 *A,
                        int lda, const __nv_bfloat16 *B, int ldb, float beta, float *C, int ldc) {
    CudaState *st = (CudaState *)be->impl;
    if (M <= 0 || N <= 0) return;
    /* the handle's pedantic math mode (fp32 backends) would keep cuBLAS off the tensor cores; with bf16 operands
     * and CUBLAS_COMPUTE_32F the default mode changes no result's definition (exact products, fp32 sums) */
    cublasMath_t mm;
    XR_BLAS(cublasGetMathMode(st->blas, &mm));
    XR_BLAS(cublasSetMathMode(st->blas, CUBLAS_DEFAULT_MATH));
    /* row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T, as gemm_rm */
    XR_BLAS(cublasGemmEx(st->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                         CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT));
    XR_BLAS(cublasSetMathMode(st->blas, mm));
}

/* W's view in the working copy, or NULL when W is not in the registered master buffer. */
static const __nv_bfloat16 *working_weight(const CudaState *st, const float *W) {
    if (st->wmaster && W >= st->wmaster && W < st->wmaster + st->wn) return st->wcopy + (W - st->wmaster);
    return NULL;
}

/* p's view in the inference weights' bf16 copy (ops_infer_weights), or NULL when p is outside the held range. */
static const __nv_bfloat16 *infer_weight(const CudaState *st, const float *p) {
    if (st->imaster && p >= st->imaster && p < st->imaster + st->in) return st->icopy + (p - st->imaster);
    return NULL;
}

/* Kept only where ops_linear reads bf16 weights (bf16 GEMM mode, not fast) and under XR_CUDA_ACT_PACK=1 (with the
 * packed storage, until its GPU check has passed). The copy holds the values the per-call cast would make. */
extern "C" void cuda_ops_infer_weights(Backend *be, const float *w, size_t n) {
    CudaState *st = op_begin(be);
    if (w && n && w == st->imaster && n == st->in) return; /* held already */
    if (w && !n && w != st->imaster) return;              /* another range's forget: not the one held */
    if (st->icopy) {
        XR_CU(cudaStreamSynchronize(st->stream)); /* a queued GEMM may still read it */
        ops_mem_note_free(be, st->icopy);
        XR_CU(cudaFree(st->icopy));
    }
    st->icopy = NULL, st->imaster = NULL, st->in = 0;
    if (!w || !n || st->mode != XR_GEMM_BF16 || st->bf16_fast || !st->act_pack_env) return;
    cudaError_t e = cudaMalloc(&st->icopy, n * 2);
    if (e != cudaSuccess) xr_die("CUDA: out of device memory allocating the bf16 copy of %zu inference weights (%zu "
                                 "bytes) on GPU %d: %s", n, n * 2, st->device, cudaGetErrorString(e));
    ops_mem_note_alloc(be, st->icopy, n * 2);
    st->imaster = w, st->in = n;
    to_bf16(st, st->icopy, w, n);
}

/* The packed linear's fallback epilogue: y = bf16(acc + b) from the fp32 product acc [M, N] and the bf16 bias. */
__global__ void k_bias_store16(__nv_bfloat16 *y, const float *acc, const __nv_bfloat16 *b, size_t M, int N) {
    size_t total = M * (size_t)N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(acc[i] + (b ? __bfloat162float(b[i % N]) : 0.0f));
}

/* Packed (ops_act_pack): x and y bf16, W and b read as bf16 (the working or the inference copy, else cast here), fp32
 * accumulation with the bias, y rounded once, on cuBLASLt's bias epilogue; a GEMM into fp32 and k_bias_store16 where
 * cuBLASLt has no algorithm (the same definition). */
static void linear_packed(CudaState *st, float *y, const float *x, const float *W, const float *b, int M, int N,
                          int K) {
    const __nv_bfloat16 *xb = (const __nv_bfloat16 *)x, *wb = working_weight(st, W), *bb = NULL;
    if (!wb) wb = infer_weight(st, W);
    if (!wb) {
        __nv_bfloat16 *wc = (__nv_bfloat16 *)scratch(st, SCR_W, (size_t)N * K * 2);
        to_bf16(st, wc, W, (size_t)N * K);
        wb = wc;
    }
    if (b) {
        bb = working_weight(st, b);
        if (!bb) bb = infer_weight(st, b);
        if (!bb) {
            __nv_bfloat16 *bc = (__nv_bfloat16 *)scratch(st, SCR_B16, (size_t)N * 2);
            to_bf16(st, bc, b, (size_t)N);
            bb = bc;
        }
    }
    if (lt_linear(st, y, 1, xb, wb, bb, M, N, K, 0)) return;
    st->pack_fallbacks++;
    float *acc = (float *)scratch(st, SCR_Y32, (size_t)M * N * 4);
    cuda_ops_gemm_bf16(st->be, 0, 1, M, N, K, 1.0f, xb, K, wb, K, 0.0f, acc, N);
    size_t n = (size_t)M * N;
    k_bias_store16<<<blocks_for(n, 256), 256, 0, st->stream>>>((__nv_bfloat16 *)y, acc, bb, (size_t)M, N);
    XR_LAUNCHED();
}

/* not an op: does not count in st->ops (the bf16 copies of outputs stay valid across it) */
extern "C" int cuda_ops_in_working_copy(Backend *be, const float *W) {
    return working_weight((const CudaState *)be->impl, W) != NULL;
}

const __nv_bfloat16 *cuda_ops_working_weight(Backend *be, const float *W) {
    return working_weight((const CudaState *)be->impl, W);
}

extern "C" void cuda_ops_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N,
                                int K) {
    CudaState *st = op_begin(be);
    if (M <= 0) return;
    if (be->act_packed) {
        if (N > 0) linear_packed(st, y, x, W, b, M, N, K);
        return;
    }
    const __nv_bfloat16 *wc = working_weight(st, W);
    /* training regions: x and y each fp32 or packed by address; packed needs the working copy (bf16 training) */
    int px = cuda_pk_region(be, x), py = cuda_pk_region(be, y);
    if ((px || py) && !wc) cuda_pk_refuse(be, "linear (packed without the bf16 working copy)", y, x, NULL, NULL);
    if (wc) {
        /* bf16 training: the weights' working copy (cast once per step, not here), x rounded to bf16 (packed: x is
         * the operand itself), fp32 accumulation and output on cuBLASLt; a packed y is that fp32 output stored
         * rounded (the same bits as the unpacked storage's, not cuBLASLt's bf16 output, whose bias is rounded) */
        const __nv_bfloat16 *xb = px ? (const __nv_bfloat16 *)x : shadow_hit(st, x, (size_t)M * K);
        if (!xb) {
            __nv_bfloat16 *xc = (__nv_bfloat16 *)scratch(st, SCR_X, (size_t)M * K * 2);
            to_bf16(st, xc, x, (size_t)M * K);
            xb = xc, st->act_casts++;
        }
        float *yo = py ? (float *)scratch(st, SCR_Y32, (size_t)M * N * 4) : y;
        if (lt_linear(st, yo, 0, xb, wc, b, M, N, K, 0)) {
            act_store(st, yo, (size_t)M * N);
            if (py) to_bf16(st, (__nv_bfloat16 *)y, yo, (size_t)M * N);
            return;
        }
        xr_die("cuda_ops_linear: cuBLASLt has no bf16 algorithm for [%d x %d] x [%d x %d]^T", M, K, N, K);
    }
    if (st->mode == XR_GEMM_BF16) {
        if (st->bf16_fast) {
            if (lt_linear(st, y, 0, x, W, b, M, N, K, 1)) {
                act_store(st, y, (size_t)M * N);
                return;
            }
        } else {
            /* round the operands to bf16 once here, so cuBLAS runs its native bf16 kernels; x is often
             * already there (the previous op's bf16 copy of its output) */
            const __nv_bfloat16 *xb = shadow_hit(st, x, (size_t)M * K);
            if (!xb) {
                __nv_bfloat16 *xc = (__nv_bfloat16 *)scratch(st, SCR_X, (size_t)M * K * 2);
                to_bf16(st, xc, x, (size_t)M * K);
                xb = xc;
            }
            const __nv_bfloat16 *wb = infer_weight(st, W); /* the inference copy, else cast here */
            if (!wb) {
                __nv_bfloat16 *wc = (__nv_bfloat16 *)scratch(st, SCR_W, (size_t)N * K * 2);
                to_bf16(st, wc, W, (size_t)N * K);
                wb = wc;
            }
            if (lt_linear(st, y, 0, xb, wb, b, M, N, K, 0)) {
                act_store(st, y, (size_t)M * N);
                return;
            }
        }
    }
    float beta = 0.0f;
    if (b) {
        /* the bias goes into y first and the GEMM accumulates onto it (beta = 1), as the CPU backend does */
        k_bias_rows<<<blocks_for((size_t)M * N, 256), 256, 0, st->stream>>>(y, b, M, N);
        XR_LAUNCHED();
        beta = 1.0f;
    }
    gemm_rm(st, 0, 1, M, N, K, 1.0f, x, K, W, K, beta, y, N);
    act_store(st, y, (size_t)M * N);
}

/* Exact GELU (erf), as the GELU kernels have always computed it (the CPU: x Phi(x), the same up to fp32 rounding). */
static __device__ __forceinline__ float gelu_erf(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

/* ---------------- fused: linear + bias + GELU (the FFN's first layer; ops_linear_gelu) ---------------- */

/* f = store(fin + b) (fin: the GEMM's product without its bias; f itself, or an fp32 scratch when f is packed),
 * g = store(GELU(f)); g16 (when given) the bf16 copy of g for the next GEMM. Element-wise: each element is read, then
 * written, by one thread. */
template <typename TF>
__global__ void k_bias_gelu(float *g, TF *f, const float *fin, const float *b, size_t M, int N, __nv_bfloat16 *g16,
                            int rnd) {
    size_t total = M * (size_t)N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float v = act_round(b ? fin[i] + b[i % N] : fin[i], rnd);
        st_act(&f[i], v);
        float y = act_round(gelu_erf(v), rnd);
        g[i] = y;
        if (g16) g16[i] = __float2bfloat16_rn(y);
    }
}

extern "C" void cuda_ops_linear_gelu(Backend *be, float *g, float *f, const float *x, const float *W, const float *b,
                                     int M, int N, int K) {
    CudaState *st = op_begin(be);
    cuda_pk_refuse(be, "linear_gelu (packed g)", g, NULL, NULL, NULL);
    if (M <= 0 || N <= 0) return;
    if (g == f || f == x || g == x)
        xr_die("cuda_ops_linear_gelu: the outputs g %p and f %p may alias neither each other nor x %p", (void *)g,
               (void *)f, (const void *)x);
    const __nv_bfloat16 *wc = working_weight(st, W);
    int px = cuda_pk_region(be, x), pf = cuda_pk_region(be, f); /* training regions: a and f, by address */
    if ((px || pf) && !wc) cuda_pk_refuse(be, "linear_gelu (packed without the bf16 working copy)", f, x, NULL, NULL);
    if (!wc) {
        /* fp32 weights: the unfused pair, so fp32 training keeps its bits (the counter moves on: no stale copy) */
        cuda_ops_linear(be, f, x, W, b, M, N, K);
        cuda_ops_gelu(be, g, f, (size_t)M * N);
        return;
    }
    /* bf16 training: the product through the working copy without its bias, then bias + GELU in one pass that also
     * writes g's bf16 copy, which the next op (the FFN's second linear) reads instead of casting g again */
    const __nv_bfloat16 *xb = px ? (const __nv_bfloat16 *)x : shadow_hit(st, x, (size_t)M * K);
    if (!xb) {
        __nv_bfloat16 *xc = (__nv_bfloat16 *)scratch(st, SCR_X, (size_t)M * K * 2);
        to_bf16(st, xc, x, (size_t)M * K);
        xb = xc, st->act_casts++;
    }
    size_t n = (size_t)M * N;
    /* a packed f: the product in an fp32 scratch, f stored rounded by the bias + GELU pass */
    float *fin = pf ? (float *)scratch(st, SCR_Y32, n * 4) : f;
    if (!lt_linear(st, fin, 0, xb, wc, NULL, M, N, K, 0))
        xr_die("cuda_ops_linear_gelu: cuBLASLt has no bf16 algorithm for [%d x %d] x [%d x %d]^T", M, K, N, K);
    __nv_bfloat16 *g16 = cuda_ops_next_copy(be, n);
    if (pf)
        k_bias_gelu<<<blocks_for(n, 256), 256, 0, st->stream>>>(g, (__nv_bfloat16 *)f, fin, b, (size_t)M, N, g16,
                                                                st->act_bf16);
    else
        k_bias_gelu<<<blocks_for(n, 256), 256, 0, st->stream>>>(g, f, fin, b, (size_t)M, N, g16, st->act_bf16);
    XR_LAUNCHED();
    if (g16) shadow_set(st, g, n, 0);
}

/* ---------------- token-wise kernels ---------------- */

template <typename T>
__global__ void k_embed(T *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
                        const float *word, const float *pos, const float *type, int n, int H, int rnd) {
    size_t total = (size_t)n * H;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        size_t i = e / H, j = e % H;
        float t = type[(types ? (size_t)types[i] * H : 0) + j];
        st_act(&out[e], act_round(word[(size_t)ids[i] * H + j] + pos[(size_t)pos_ids[i] * H + j] + t, rnd));
    }
}

extern "C" void cuda_ops_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids,
                               const int32_t *types, const float *word, const float *pos, const float *type, int n,
                               int H) {
    CudaState *st = op_begin(be);
    if (n <= 0) return;
    if (be->act_packed || cuda_pk_region(be, out)) /* packed: the inference forward, or a training region */
        k_embed<<<blocks_for((size_t)n * H, 256), 256, 0, st->stream>>>((__nv_bfloat16 *)out, ids, pos_ids, types,
                                                                         word, pos, type, n, H, 0);
    else
        k_embed<<<blocks_for((size_t)n * H, 256), 256, 0, st->stream>>>(out, ids, pos_ids, types, word, pos, type, n,
                                                                         H, st->act_bf16);
    XR_LAUNCHED();
}

#define XR_ROWS_PER_BLOCK 8 /* one warp per row */

/* One warp per row, two-pass statistics as the CPU: v = x + res is stored in out first (out may alias x or res:
 * each lane reads and writes only its own columns), then the variance of out, then the affine map. */
__global__ void k_layernorm(float *out, float *mean, float *rstd, const float *x, const float *res, const float *g,
                            const float *b, int n, int H, float eps, __nv_bfloat16 *out16, int rnd) {
    int row = blockIdx.x * XR_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    size_t off = (size_t)row * H;
    float sum = 0.0f;
    for (int j = lane; j < H; j += 32) {
        float v = x[off + j] + (res ? res[off + j] : 0.0f);
        out[off + j] = v;
        sum += v;
    }
    float mu = warp_sum(sum) / (float)H;
    float var = 0.0f;
    for (int j = lane; j < H; j += 32) {
        float d = out[off + j] - mu;
        var += d * d;
    }
    float rs = 1.0f / sqrtf(warp_sum(var) / (float)H + eps);
    for (int j = lane; j < H; j += 32) {
        float v = act_round((out[off + j] - mu) * rs * g[j] + b[j], rnd);
        out[off + j] = v;
        if (out16) out16[off + j] = __float2bfloat16_rn(v);
    }
    if (lane == 0) {
        if (mean) mean[row] = mu;
        if (rstd) rstd[row] = rs;
    }
}

/* Packed (bf16 in and out): as k_layernorm, but v = x + res is recomputed from the inputs in each pass instead of
 * being stored in out first (a bf16 out would round it). out may alias x or res: each lane reads its own columns and
 * writes them only in the last pass. */
__global__ void k_layernorm16(__nv_bfloat16 *out, float *mean, float *rstd, const __nv_bfloat16 *x,
                              const __nv_bfloat16 *res, const float *g, const float *b, int n, int H, float eps) {
    int row = blockIdx.x * XR_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    size_t off = (size_t)row * H;
    float sum = 0.0f;
    for (int j = lane; j < H; j += 32) sum += ld_act(x + off + j) + (res ? ld_act(res + off + j) : 0.0f);
    float mu = warp_sum(sum) / (float)H;
    float var = 0.0f;
    for (int j = lane; j < H; j += 32) {
        float d = ld_act(x + off + j) + (res ? ld_act(res + off + j) : 0.0f) - mu;
        var += d * d;
    }
    float rs = 1.0f / sqrtf(warp_sum(var) / (float)H + eps);
    for (int j = lane; j < H; j += 32) {
        float v = ld_act(x + off + j) + (res ? ld_act(res + off + j) : 0.0f);
        st_act(out + off + j, (v - mu) * rs * g[j] + b[j]);
    }
    if (lane == 0) {
        if (mean) mean[row] = mu;
        if (rstd) rstd[row] = rs;
    }
}

extern "C" void cuda_ops_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x,
                                   const float *res, const float *g, const float *b, int n, int H, float eps) {
    CudaState *st = op_begin(be);
    if (n <= 0) return;
    /* packed: all activation arguments bf16 (the inference forward, or training regions: the embeddings' LayerNorm);
     * mixed widths are not built (the training step has none here) */
    int npk = cuda_pk_region(be, out) + cuda_pk_region(be, x) + (res ? cuda_pk_region(be, res) : 0);
    if (npk && npk != 2 + (res != NULL)) cuda_pk_refuse(be, "layernorm (mixed widths)", out, x, res, NULL);
    if (be->act_packed || npk) {
        k_layernorm16<<<(n + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK, 32 * XR_ROWS_PER_BLOCK, 0, st->stream>>>(
            (__nv_bfloat16 *)out, mean, rstd, (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)res, g, b, n, H, eps);
        XR_LAUNCHED();
        return;
    }
    __nv_bfloat16 *sh = shadow_for(st, (size_t)n * H);
    k_layernorm<<<(n + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK, 32 * XR_ROWS_PER_BLOCK, 0, st->stream>>>(
        out, mean, rstd, x, res, g, b, n, H, eps, sh, st->act_bf16);
    XR_LAUNCHED();
    if (sh) shadow_set(st, out, (size_t)n * H, 0);
}

template <typename TO, typename TI>
__global__ void k_gelu(TO *out, const TI *x, size_t n, __nv_bfloat16 *out16, int rnd) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = act_round(gelu_erf(ld_act(x + i)), rnd);
        st_act(out + i, v);
        if (out16) out16[i] = __float2bfloat16_rn(v);
    }
}

template <typename TO, typename TI>
__global__ void k_tanh(TO *out, const TI *x, size_t n, int rnd) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        st_act(out + i, act_round(tanhf(ld_act(x + i)), rnd));
}

extern "C" void cuda_ops_gelu(Backend *be, float *out, const float *x, size_t n) {
    CudaState *st = op_begin(be);
    if (!n) return;
    typedef __nv_bfloat16 B16;
    int po = cuda_pk_region(be, out), pi = cuda_pk_region(be, x); /* training regions: each argument by its address */
    if (po) { /* a packed output is itself the bf16 operand: no copy */
        if (pi)
            k_gelu<<<blocks_for(n, 256), 256, 0, st->stream>>>((B16 *)out, (const B16 *)x, n, (B16 *)NULL, 0);
        else
            k_gelu<<<blocks_for(n, 256), 256, 0, st->stream>>>((B16 *)out, x, n, (B16 *)NULL, 0);
        XR_LAUNCHED();
        return;
    }
    if (be->act_packed) {
        k_gelu<<<blocks_for(n, 256), 256, 0, st->stream>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)x, n,
                                                           (__nv_bfloat16 *)NULL, 0);
        XR_LAUNCHED();
        return;
    }
    __nv_bfloat16 *sh = shadow_for(st, n);
    /* bf16 training: the GELU recomputed in the backward is the x operand of the next op, the FFN's second linear's
     * backward, which reads this copy instead of casting (the copy of the stored value: the same bf16 numbers) */
    if (!sh && st->wmaster) sh = shadow_take(st, n);
    if (pi) /* the backward's recomputation from the saved, packed GELU input */
        k_gelu<<<blocks_for(n, 256), 256, 0, st->stream>>>(out, (const B16 *)x, n, sh, st->act_bf16);
    else
        k_gelu<<<blocks_for(n, 256), 256, 0, st->stream>>>(out, x, n, sh, st->act_bf16);
    XR_LAUNCHED();
    if (sh) shadow_set(st, out, n, 0);
}

extern "C" void cuda_ops_tanh(Backend *be, float *out, const float *x, size_t n) {
    CudaState *st = op_begin(be);
    if (!n) return;
    typedef __nv_bfloat16 B16;
    int po = be->act_packed || cuda_pk_region(be, out), pi = be->act_packed || cuda_pk_region(be, x);
    int rnd = be->act_packed ? 0 : st->act_bf16; /* a bf16 store rounds anyway */
    unsigned nb = blocks_for(n, 256);
    if (po && pi)
        k_tanh<<<nb, 256, 0, st->stream>>>((B16 *)out, (const B16 *)x, n, rnd);
    else if (po)
        k_tanh<<<nb, 256, 0, st->stream>>>((B16 *)out, x, n, rnd);
    else if (pi)
        k_tanh<<<nb, 256, 0, st->stream>>>(out, (const B16 *)x, n, rnd);
    else
        k_tanh<<<nb, 256, 0, st->stream>>>(out, x, n, rnd);
    XR_LAUNCHED();
}

/* ---------------- attention over packed sequences ---------------- */

#define XR_ATT_WARPS 4 /* query rows per block, one warp each */

/* Block (s*NH + h, y): warp w takes query row i = y*XR_ATT_WARPS + w of sequence s, head h (first_only: row 0,
 * warp 0). Lanes split the keys for the scores (kept in shared memory, max_len per warp), the softmax is reduced
 * across the warp, and lanes split the head dimension for p v. Exact softmax in fp32, no online rescaling. */
template <typename T>
__global__ void k_attention(T *out, float *att, const T *qkv, const int32_t *seq_off, int NH, int dh,
                            int first_only, int max_len, float scale, int rnd) {
    extern __shared__ float sh[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int s = blockIdx.x / NH, h = blockIdx.x % NH;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0;
    int i = first_only ? 0 : blockIdx.y * XR_ATT_WARPS + warp;
    if ((first_only && warp > 0) || i >= L) return;
    float *sc = sh + (size_t)warp * (max_len + dh), *qs = sc + max_len;
    size_t stride = (size_t)3 * NH * dh, HD = (size_t)NH * dh;
    const T *q = qkv + (size_t)(b0 + i) * stride + (size_t)h * dh;
    const T *k0 = qkv + (size_t)b0 * stride + HD + (size_t)h * dh;
    const T *v0 = k0 + HD;
    for (int d = lane; d < dh; d += 32) qs[d] = ld_act(q + d);
    __syncwarp();
    float mx = -INFINITY;
    for (int j = lane; j < L; j += 32) {
        const T *k = k0 + (size_t)j * stride;
        float dot = 0.0f;
        for (int d = 0; d < dh; d++) dot += qs[d] * ld_act(k + d);
        dot *= scale;
        sc[j] = dot;
        mx = fmaxf(mx, dot);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < L; j += 32) {
        float p = expf(sc[j] - mx);
        sc[j] = p;
        sum += p;
    }
    float inv = 1.0f / warp_sum(sum);
    __syncwarp();
    if (att) {
        /* sequence s's [NH, L, L] block starts after NH * sum_{r<s} L_r^2 probabilities */
        size_t before = 0;
        for (int r = lane; r < s; r += 32) {
            size_t lr = (size_t)(seq_off[r + 1] - seq_off[r]);
            before += lr * lr;
        }
        for (int o = 16; o > 0; o >>= 1) before += __shfl_xor_sync(0xffffffffu, before, o);
        float *a = att + before * NH + ((size_t)h * L + i) * L;
        for (int j = lane; j < L; j += 32) a[j] = sc[j] * inv;
    }
    T *o = out + (size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh;
    for (int d = lane; d < dh; d += 32) {
        float acc = 0.0f;
        for (int j = 0; j < L; j++) acc += sc[j] * ld_act(v0 + (size_t)j * stride + d);
        st_act(o + d, act_round(acc * inv, rnd));
    }
}

/* ---- BF16 attention: batched GEMMs over padded per-(sequence, head) blocks ----
 * q, k, v of sequence s, head h go to [Tp, dh] bf16 blocks (rows >= L zero), block index s*NH + h; scores
 * [Tp, Tp] fp32 = q k^T / sqrt(dh) by one strided-batched GEMM, a softmax kernel masks keys >= L and writes
 * bf16 probabilities, a second GEMM gives ctx [Tp, dh] fp32, and the real rows are copied back packed. */

/* Block (i, s): row i of sequence s (zeros past its length), all 3*H columns. */
template <typename T>
__global__ void k_pack_qkv(__nv_bfloat16 *qp, const T *qkv, const int32_t *seq_off, int S, int Tp, int NH,
                           int dh) {
    int i = blockIdx.x, s = blockIdx.y, H = NH * dh;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0;
    size_t blk = (size_t)Tp * dh, part = (size_t)S * NH * blk;
    const T *src = qkv + (size_t)(b0 + i) * 3 * H;
    for (int c = threadIdx.x; c < 3 * H; c += blockDim.x) {
        int which = c / H, t = c - which * H, h = t / dh, d = t - h * dh;
        float v = i < L ? ld_act(src + c) : 0.0f;
        qp[which * part + ((size_t)s * NH + h) * blk + (size_t)i * dh + d] = __float2bfloat16_rn(v);
    }
}

#define XR_SOFTMAX_REGS 32 /* rows up to 1024 keys are held in registers */

/* One warp per score row (block bh0 + bh, query i): softmax over keys j < L, zeros for j >= L and rows i >= L. */
__global__ void k_softmax_rows(__nv_bfloat16 *p, const float *sc, const int32_t *seq_off, int nrows, int bh0, int NH,
                               int Tp) {
    int row = blockIdx.x * XR_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= nrows) return;
    int bh = row / Tp, i = row % Tp, s = (bh0 + bh) / NH;
    int L = seq_off[s + 1] - seq_off[s];
    const float *r = sc + (size_t)row * Tp;
    __nv_bfloat16 *o = p + (size_t)row * Tp;
    if (i >= L) {
        for (int j = lane; j < Tp; j += 32) o[j] = __float2bfloat16_rn(0.0f);
        return;
    }
    float mx = -INFINITY;
    if (Tp <= 32 * XR_SOFTMAX_REGS) {
        /* the row stays in registers: one read of the scores */
        float v[XR_SOFTMAX_REGS];
#pragma unroll
        for (int k = 0; k < XR_SOFTMAX_REGS; k++) {
            int j = lane + 32 * k;
            v[k] = j < L ? r[j] : -INFINITY;
            mx = fmaxf(mx, v[k]);
        }
        mx = warp_max(mx);
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < XR_SOFTMAX_REGS; k++) {
            int j = lane + 32 * k;
            v[k] = j < L ? __expf(v[k] - mx) : 0.0f;
            sum += v[k];
        }
        float inv = 1.0f / warp_sum(sum);
#pragma unroll
        for (int k = 0; k < XR_SOFTMAX_REGS; k++) {
            int j = lane + 32 * k;
            if (j < Tp) o[j] = __float2bfloat16_rn(v[k] * inv);
        }
        return;
    }
    for (int j = lane; j < L; j += 32) mx = fmaxf(mx, r[j]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < L; j += 32) sum += __expf(r[j] - mx);
    float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < Tp; j += 32) o[j] = __float2bfloat16_rn(j < L ? __expf(r[j] - mx) * inv : 0.0f);
}

/* Block (i, s - s_first): ctx holds blocks bh0 .. bh0+nbh-1; row i of sequence s goes to out row seq_off[s] + i,
 * head h at columns h*dh (and to out16, the bf16 copy, when given). */
template <typename T>
__global__ void k_unpack_ctx(T *out, __nv_bfloat16 *out16, const float *ctx, const int32_t *seq_off, int bh0,
                             int nbh, int NH, int Tp, int dh) {
    int i = blockIdx.x, s = bh0 / NH + blockIdx.y, H = NH * dh;
    int b0 = seq_off[s];
    if (i >= seq_off[s + 1] - b0) return;
    for (int t = threadIdx.x; t < H; t += blockDim.x) {
        int h = t / dh, d = t - h * dh, bh = s * NH + h - bh0;
        if (bh < 0 || bh >= nbh) continue;
        float v = ctx[((size_t)bh * Tp + i) * dh + d];
        st_act(out + (size_t)(b0 + i) * H + t, v);
        if (out16) out16[(size_t)(b0 + i) * H + t] = __float2bfloat16_rn(v);
    }
}

#define XR_SCORES_MAX ((size_t)1 << 30) /* bytes of fp32 scores per chunk of (sequence, head) blocks */

/* T: the activations' storage (float, or __nv_bfloat16 while packed: no bf16 copy of the output then). */
template <typename T>
static void attention_bf16(CudaState *st, T *out, const T *qkv, const int32_t *seq_off, int S, int max_len, int NH,
                           int dh) {
    __nv_bfloat16 *sh = sizeof(T) == 4 ? shadow_for(st, (size_t)S * max_len * NH * dh) : NULL;
    int Tp = (max_len + 7) / 8 * 8; /* 16-byte aligned rows for the tensor-core GEMMs */
    size_t blk = (size_t)Tp * dh, nb = (size_t)S * NH;
    __nv_bfloat16 *qp = (__nv_bfloat16 *)scratch(st, SCR_QKV, 3 * nb * blk * 2);
    __nv_bfloat16 *kp = qp + nb * blk, *vp = kp + nb * blk;
    if (S > 65535) xr_die("cuda_ops_attention: %d sequences in one batch (at most 65535)", S);
    k_pack_qkv<<<dim3((unsigned)Tp, (unsigned)S), 256, 0, st->stream>>>(qp, qkv, seq_off, S, Tp, NH, dh);
    XR_LAUNCHED();
    size_t per = (size_t)Tp * Tp * 4;
    size_t chunk = XR_SCORES_MAX / per;
    if (chunk < 1) chunk = 1;
    if (st->att_chunk > 0 && chunk > (size_t)st->att_chunk) chunk = (size_t)st->att_chunk;
    if (chunk > nb) chunk = nb;
    float *sc = (float *)scratch(st, SCR_SCORES, chunk * per);
    __nv_bfloat16 *p = (__nv_bfloat16 *)scratch(st, SCR_P, chunk * (size_t)Tp * Tp * 2);
    float *ctx = (float *)scratch(st, SCR_CTX, chunk * blk * 4);
    float scale = 1.0f / sqrtf((float)dh), one = 1.0f, zero = 0.0f;
    for (size_t c0 = 0; c0 < nb; c0 += chunk) {
        int n = (int)(nb - c0 < chunk ? nb - c0 : chunk);
        /* row-major scores [Tp, Tp] = q k^T: column-major (k^T)^T-view, see gemm_rm */
        XR_BLAS(cublasGemmStridedBatchedEx(st->blas, CUBLAS_OP_T, CUBLAS_OP_N, Tp, Tp, dh, &scale, kp + c0 * blk,
                                           CUDA_R_16BF, dh, (long long)blk, qp + c0 * blk, CUDA_R_16BF, dh,
                                           (long long)blk, &zero, sc, CUDA_R_32F, Tp, (long long)Tp * Tp, n,
                                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        int rows = n * Tp;
        k_softmax_rows<<<(rows + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK, 32 * XR_ROWS_PER_BLOCK, 0, st->stream>>>(
            p, sc, seq_off, rows, (int)c0, NH, Tp);
        XR_LAUNCHED();
        /* row-major ctx [Tp, dh] = p [Tp, Tp] v [Tp, dh] */
        XR_BLAS(cublasGemmStridedBatchedEx(st->blas, CUBLAS_OP_N, CUBLAS_OP_N, dh, Tp, Tp, &one, vp + c0 * blk,
                                           CUDA_R_16BF, dh, (long long)blk, p, CUDA_R_16BF, Tp, (long long)Tp * Tp,
                                           &zero, ctx, CUDA_R_32F, dh, (long long)blk, n, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT));
        int nseq = (int)((c0 + n - 1) / NH - c0 / NH + 1);
        k_unpack_ctx<<<dim3((unsigned)Tp, (unsigned)nseq), 256, 0, st->stream>>>(out, sh, ctx, seq_off, (int)c0, n, NH,
                                                                                  Tp, dh);
        XR_LAUNCHED();
    }
    if (sh) shadow_set(st, (const float *)out, (size_t)S * max_len * NH * dh, 1); /* real rows: <= S * max_len */
}

/* The exact kernel's launch (its shared memory: max_len scores and a query row per warp). */
template <typename T>
static void attention_exact(CudaState *st, T *out, float *att, const T *qkv, const int32_t *seq_off, int S,
                            int max_len, int NH, int dh, int first_only, int rnd) {
    size_t shmem = (size_t)XR_ATT_WARPS * (max_len + dh) * sizeof(float);
    static const size_t kShmemMax = 200 * 1024; /* H100 allows 227 KB per block after opting in */
    if (shmem > kShmemMax) xr_die("cuda_ops_attention: max_len %d too long for the shared-memory scores", max_len);
    if (shmem > 48 * 1024) XR_CU(cudaFuncSetAttribute(k_attention<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                      (int)shmem));
    dim3 grid((unsigned)S * NH, first_only ? 1 : (unsigned)((max_len + XR_ATT_WARPS - 1) / XR_ATT_WARPS));
    k_attention<<<grid, 32 * XR_ATT_WARPS, shmem, st->stream>>>(out, att, qkv, seq_off, NH, dh, first_only, max_len,
                                                                1.0f / sqrtf((float)dh), rnd);
    XR_LAUNCHED();
}

/* Packed (bf16 qkv and out): the first row's attention on the exact kernel; all rows as the path the backend was
 * made with: the flash kernel on bf16 storage (head sizes it has, flash_attn.h), else the padded batched GEMMs, or the
 * exact kernel under XR_CUDA_ATTENTION=exact. */
static void attention_packed(CudaState *st, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                             int max_len, int NH, int dh, int first_only) {
    if (att) xr_die("cuda_ops_attention: saved probabilities (att) while activations are packed (ops_act_pack)");
    __nv_bfloat16 *o = (__nv_bfloat16 *)out;
    const __nv_bfloat16 *q = (const __nv_bfloat16 *)qkv;
    if (first_only || st->att_path == ATT_EXACT)
        attention_exact(st, o, (float *)NULL, q, seq_off, S, max_len, NH, dh, first_only, 0);
    else if (st->att_path == ATT_FLASH && xr_flash_supported_bf16(dh, q, o))
        XR_CU(xr_flash_attention_bf16(st->stream, st->flash_tile, o, q, seq_off, S, max_len, NH, dh));
    else
        attention_bf16(st, o, q, seq_off, S, max_len, NH, dh);
}

static void attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                      int max_len, int NH, int dh, int first_only) {
    CudaState *st = op_begin(be); /* the body of both ops (cuda_ops_attention, cuda_ops_attention_first) */
    cuda_pk_refuse(be, first_only ? "attention_first" : "attention", out, qkv, NULL, NULL);
    if (S <= 0 || max_len <= 0) return;
    if (be->act_packed) {
        attention_packed(st, out, att, qkv, seq_off, S, max_len, NH, dh, first_only);
        return;
    }
    /* the saved probabilities (att), the first-row variant and bf16 activation storage (the training contract,
     * rounded where the output is stored) keep the exact fp32 kernel */
    if (st->mode == XR_GEMM_BF16 && st->att_path != ATT_EXACT && !att && !first_only && !st->act_bf16) {
        if (st->att_path != ATT_GEMM && xr_flash_supported(dh, qkv, out)) {
            size_t n = (size_t)S * max_len * NH * dh; /* an upper bound of the batch's rows */
            __nv_bfloat16 *sh = shadow_for(st, n);
            XR_CU(xr_flash_attention(st->stream, st->flash_tile, out, sh, qkv, seq_off, S, max_len, NH, dh));
            if (sh) shadow_set(st, out, n, 1);
            return;
        }
        attention_bf16(st, out, qkv, seq_off, S, max_len, NH, dh);
        return;
    }
    attention_exact(st, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, st->act_bf16);
}

extern "C" void cuda_ops_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off,
                                   int S, int max_len, int NH, int dh) {
    attention(be, out, att, qkv, seq_off, S, max_len, NH, dh, 0);
}

extern "C" void cuda_ops_attention_first(Backend *be, float *out, const float *qkv, const int32_t *seq_off, int S,
                                         int max_len, int NH, int dh) {
    attention(be, out, NULL, qkv, seq_off, S, max_len, NH, dh, 1);
}

/* ---------------- pooling and normalisation ---------------- */

template <typename TO, typename TI>
__global__ void k_pool(TO *out, const TI *x, const int32_t *seq_off, int H, int mean, int rnd) {
    int s = blockIdx.x;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0;
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        if (!mean) {
            st_act(out + (size_t)s * H + j, act_round(ld_act(x + (size_t)b0 * H + j), rnd));
            continue;
        }
        float acc = 0.0f;
        for (int r = 0; r < L; r++) acc += ld_act(x + (size_t)(b0 + r) * H + j);
        st_act(out + (size_t)s * H + j, act_round(acc * (1.0f / (float)(L > 0 ? L : 1)), rnd));
    }
}

static void pool(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H, int mean) {
    CudaState *st = op_begin(be);
    if (S <= 0) return;
    typedef __nv_bfloat16 B16;
    int po = be->act_packed || cuda_pk_region(be, out), pi = be->act_packed || cuda_pk_region(be, x);
    int rnd = be->act_packed ? 0 : st->act_bf16; /* a bf16 store rounds anyway */
    if (po && pi)
        k_pool<<<S, 128, 0, st->stream>>>((B16 *)out, (const B16 *)x, seq_off, H, mean, rnd);
    else if (po)
        k_pool<<<S, 128, 0, st->stream>>>((B16 *)out, x, seq_off, H, mean, rnd);
    else if (pi) /* the last layer's residual: the first rows of the packed layer input */
        k_pool<<<S, 128, 0, st->stream>>>(out, (const B16 *)x, seq_off, H, mean, rnd);
    else
        k_pool<<<S, 128, 0, st->stream>>>(out, x, seq_off, H, mean, rnd);
    XR_LAUNCHED();
}

extern "C" void cuda_ops_pool_first(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    pool(be, out, x, seq_off, S, H, 0);
}

extern "C" void cuda_ops_pool_mean(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    pool(be, out, x, seq_off, S, H, 1);
}

template <typename T>
__global__ void k_l2norm(T *out, const T *x, int n, int H) {
    int row = blockIdx.x * XR_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    size_t off = (size_t)row * H;
    float ss = 0.0f;
    for (int j = lane; j < H; j += 32) ss += ld_act(x + off + j) * ld_act(x + off + j);
    float inv = 1.0f / fmaxf(sqrtf(warp_sum(ss)), 1e-12f);
    for (int j = lane; j < H; j += 32) st_act(out + off + j, ld_act(x + off + j) * inv);
}

extern "C" void cuda_ops_l2norm(Backend *be, float *out, const float *x, int n, int H) {
    CudaState *st = op_begin(be);
    cuda_pk_refuse(be, "l2norm", out, x, NULL, NULL);
    if (n <= 0) return;
    unsigned grid = (unsigned)((n + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK);
    if (be->act_packed)
        k_l2norm<<<grid, 32 * XR_ROWS_PER_BLOCK, 0, st->stream>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)x, n,
                                                                  H);
    else
        k_l2norm<<<grid, 32 * XR_ROWS_PER_BLOCK, 0, st->stream>>>(out, x, n, H);
    XR_LAUNCHED();
}

/* ---------------- packed activation storage of the inference forward (ops_act_pack) ---------------- */

/* Packs in bf16 GEMM mode only (the GEMMs read bf16 operands there anyway), not with XR_CUDA_BF16_GEMM=fast (fp32
 * operands) nor under bf16 training storage, and only with XR_CUDA_ACT_PACK=1 until test_cuda_act_pack has passed on a
 * GPU. */
extern "C" int cuda_ops_act_pack(Backend *be, int on) {
    CudaState *st = op_begin(be);
    be->act_packed = on && st->act_pack_env && st->mode == XR_GEMM_BF16 && !st->bf16_fast && !st->act_bf16;
    return be->act_packed ? 2 : 4;
}

/* Packed regions (bf16 training's saved activations in 2 bytes): accepted only with XR_CUDA_TRAIN_PACK=1 (default 0
 * until test_cuda_train_pack has passed on a GPU; an op not built for a packed argument refuses it, cuda_pk_refuse)
 * and only while the bf16 working copy is registered (bf16 training: the GEMMs read the packed activations as bf16
 * operands); declined otherwise, so GPU training keeps fp32 words holding bf16 values ("the storage, a stepping
 * stone", DESIGN.md). Forgetting is always accepted. */
extern "C" int cuda_ops_act_region(Backend *be, const void *base, size_t bytes) {
    CudaState *st = op_begin(be);
    if (base && !bytes) return ops_act_region_keep(be, base, 0);
    if (!st->train_pack_env || !st->wmaster || be->act_packed) return 4;
    return ops_act_region_keep(be, base, bytes);
}

int cuda_pk_region(const Backend *be, const void *p) {
    for (int i = 0; p && i < be->n_act_regions; i++)
        if ((const char *)p >= be->act_regions[i].lo && (const char *)p < be->act_regions[i].hi) return 1;
    return 0;
}

void cuda_pk_refuse(Backend *be, const char *op, const void *a, const void *b, const void *c, const void *d) {
    if (!be->n_act_regions) return;
    const void *p[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        if (cuda_pk_region(be, p[i]))
            xr_die("cuda_ops_%s: activation argument %d (%p) lies in a packed region (ops_act_region), and the CUDA %s "
                   "does not read or write bf16 storage yet (XR_CUDA_TRAIN_PACK=1 is built op by op: unset it)", op,
                   i + 1, p[i], op);
}

__global__ void k_widen_bf16(float *out, const __nv_bfloat16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __bfloat162float(x[i]);
}

extern "C" void cuda_ops_act_unpack(Backend *be, float *out, const float *x, size_t n) {
    CudaState *st = op_begin(be);
    int packed = ops_act_packed_at(be, x);
    size_t esz = packed ? 2 : 4;
    if (!n) return;
    if ((const char *)out < (const char *)x + n * esz && (const char *)x < (const char *)(out + n))
        xr_die("cuda_ops_act_unpack: out %p and x %p overlap (%zu elements)", (void *)out, (const void *)x, n);
    if (!packed) {
        XR_CU(cudaMemcpyAsync(out, x, n * sizeof(float), cudaMemcpyDeviceToDevice, st->stream));
        return;
    }
    k_widen_bf16<<<blocks_for(n, 256), 256, 0, st->stream>>>(out, (const __nv_bfloat16 *)x, n);
    XR_LAUNCHED();
}
