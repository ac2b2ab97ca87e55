/* cuda_internal.cuh: what the CUDA backend's .cu files share (C++ only, never included from C): the error-check
 * macros, the grid size of grid-stride kernels, warp reductions, and access to a backend's stream and scratch
 * buffers for the kernels that live outside ops_cuda.cu (train_ops.cu: the training ops). */
#ifndef XR_CUDA_INTERNAL_CUH
#define XR_CUDA_INTERNAL_CUH
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>

#include "cuda/ops_cuda.h"
#include "ops.h"
#include "xr_common.h"

#define XR_CU(call)                                                                                         \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) xr_die("CUDA: %s failed at %s:%d: %s", #call, __FILE__, __LINE__,             \
                                      cudaGetErrorString(e_));                                              \
    } while (0)
#define XR_BLAS(call)                                                                                       \
    do {                                                                                                    \
        cublasStatus_t s_ = (call);                                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS) xr_die("cuBLAS: %s failed at %s:%d: %s", #call, __FILE__, __LINE__, \
                                                cublasGetStatusString(s_));                                 \
    } while (0)
/* A bad launch configuration shows here; a fault inside a kernel shows at the next synchronising call. */
#define XR_LAUNCHED() XR_CU(cudaGetLastError())

/* Blocks of a grid-stride kernel over n elements (capped: the kernels loop). */
static inline unsigned blocks_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535u * 32u ? 65535u * 32u : (b ? b : 1));
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The start of an op outside ops_cuda.cu: the backend's stream (ops_cuda.h's cuda_ops_stream, typed), and the op
 * counted. Call it once, first, in every entry point of the table (ops_cuda.cu's bf16 copies of an op's output are
 * valid only for the very next op); helpers inside an op take op_stream_in rather than counting again. */
static inline cudaStream_t op_stream(Backend *be) { return (cudaStream_t)cuda_ops_stream(be); }
/* The backend's stream for a helper inside an op (the GEMM attention's primitives): counts nothing. */
void *cuda_ops_stream_in_op(Backend *be);
static inline cudaStream_t op_stream_in(Backend *be) { return (cudaStream_t)cuda_ops_stream_in_op(be); }
/* Device scratch slot `slot` (0 .. XR_TRAIN_SCRATCH-1) of at least `bytes`, kept for the backend's life; growing
 * waits for the device. Contents are not kept between ops. */
#define XR_TRAIN_SCRATCH 3
void *cuda_ops_scratch(Backend *be, int slot, size_t bytes);
/* ---- bf16 training storage (ops_list.h, "training precision"); helpers inside an op, not ops themselves (they
 * do not count in the op counter that keeps a producer's bf16 copy valid for the next op) ---- */
/* v as the activations are stored: rnd 1 (ops_act_precision(BF16)): rounded to nearest-even bf16 and kept in an fp32
 * word, the CPU emulation's xr_bf16_round; rnd 0: v. */
static __device__ __forceinline__ float act_round(float v, int rnd) {
    return rnd ? __bfloat162float(__float2bfloat16_rn(v)) : v;
}
/* An activation as the kernels read and store it: fp32, or bf16 where packed (ops_act_pack; ops_act_region's regions;
 * rounded to nearest even where stored). Kernels are templated on it per argument where they read or write one. */
static __device__ __forceinline__ float ld_act(const float *p) { return *p; }
static __device__ __forceinline__ float ld_act(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ void st_act(float *p, float v) { *p = v; }
static __device__ __forceinline__ void st_act(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
/* Packed training storage (ops_act_region) is built op by op behind XR_CUDA_TRAIN_PACK=1: an op that does not read
 * or write bf16 storage yet calls this with its activation arguments (NULL: none) first, and dies naming the op and
 * the argument when one lies in a registered region, instead of reading bf16 words as fp32. */
void cuda_pk_refuse(Backend *be, const char *op, const void *a, const void *b, const void *c, const void *d);
/* 1 when p lies in a region registered with ops_act_region (act_pack's mode aside). */
int cuda_pk_region(const Backend *be, const void *p);
/* 1 when the forward ops store activations in bf16 (ops_act_precision(BF16)), else 0. */
int cuda_ops_act_bf16(Backend *be);
/* 1 while a working copy is registered (bf16 training: GEMMs and the training attention's products take bf16
 * operands, ops_list.h "training precision"), else 0. */
int cuda_ops_bf16_operands(Backend *be);
/* Rounds x[0, n) in place as the activations are stored (nothing in fp32): for outputs cuBLAS writes in fp32. */
void cuda_ops_act_store(Backend *be, float *x, size_t n);
/* W's view in the bf16 working copy (ops_bf16_weights), or NULL when W is not in the registered buffer. */
const __nv_bfloat16 *cuda_ops_working_weight(Backend *be, const float *W);
/* x[0, n) rounded to bf16 in the backend's operand scratch `slot` (0 or 1; contents valid until the next use of that
 * slot): a GEMM operand. */
const __nv_bfloat16 *cuda_ops_bf16_operand(Backend *be, const float *x, size_t n, int slot);
/* The bf16 copy of an op's n-float output for the very next op, when that op reads it as a GEMM operand
 * (ops_linear / ops_linear_gelu through the working copy): where to write it, or NULL when no copy is wanted (no
 * working copy, or activations stored in fp32). After the launch, cuda_ops_next_copy_written(be, out, n, upto)
 * registers it (upto 1: n is only an upper bound of what was written, the packed rows being known on the device
 * alone). Valid for the next op only: every op entry point counts. */
__nv_bfloat16 *cuda_ops_next_copy(Backend *be, size_t n);
void cuda_ops_next_copy_written(Backend *be, const float *out, size_t n, int upto);
/* The bf16 copy of x[0, n) that the op just before this one wrote, or NULL (call it from inside an op). */
const __nv_bfloat16 *cuda_ops_prev_copy(Backend *be, const float *x, size_t n);
/* Row-major C[M,N] = alpha op(A) op(B) + beta C with bf16 A and B, fp32 C and fp32 accumulation (cublasGemmEx,
 * CUBLAS_COMPUTE_32F: the products of bf16 values are exact in fp32); deterministic for a given GPU and shape. */
void cuda_ops_gemm_bf16(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                        const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B, int ldb, float beta, float *C,
                        int ldc);

/* The training attention's implementation, XR_CUDA_TRAIN_ATTENTION read once at backend creation: 1 = gemm (batched
 * cuBLAS GEMMs over padded blocks, att_gemm.cu), 0 = exact (the warp-per-row kernels of train_ops.cu, the default). */
int cuda_ops_train_att_gemm(Backend *be);
/* XR_CUDA_ATT_CHUNK > 0: at most that many (sequence, head) blocks per chunk of the GEMM attentions (tests); else 0. */
int cuda_ops_att_chunk(Backend *be);
/* ops_attention_train / ops_attention_backward on the GEMM path (att_gemm.cu): the ops' contracts, with the context
 * stored rounded under rnd and its bf16 copy in out16 (may be NULL), as the exact kernels. qkv16 / ctx16: qkv / the
 * context lie in packed regions (ops_act_region): read / stored as bf16 (ctx16 with out16 NULL). */
void cuda_att_gemm_forward(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                           int max_len, int NH, int dh, int first_only, const XrDropout *d, int rnd,
                           __nv_bfloat16 *out16, int qkv16, int ctx16);
void cuda_att_gemm_backward(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att,
                            const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                            const XrDropout *d, int qkv16);
/* ops_attention_train_lse / ops_attention_backward_lse on the GEMM path, as the two above. */
void cuda_att_gemm_forward_lse(Backend *be, float *out, float *lse, const float *qkv, const int32_t *seq_off, int S,
                               int max_len, int NH, int dh, int first_only, const XrDropout *d, int rnd,
                               __nv_bfloat16 *out16, int qkv16, int ctx16);
void cuda_att_gemm_backward_lse(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *lse,
                                const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                                const XrDropout *d, int qkv16);

/* The backend's cuBLAS handle (bound to its stream; math mode as the backend's precision) for ops outside
 * ops_cuda.cu that call cuBLAS with an explicit compute type (knn_search.cu, att_gemm.cu). A lookup: counts nothing. */
cublasHandle_t cuda_ops_blas(Backend *be);

#endif
