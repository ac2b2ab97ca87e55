/* ops_cuda.h: the CUDA backend of the op API in core/ops.h (C linkage, callable from C). Each cuda_ops_<name>
 * takes the arguments of ops_<name>, with every pointer (seq_off and token ids included) in device memory.
 * fp32 in and out with fp32 accumulation; GEMMs run on cuBLAS, exact fp32 by default (TF32 off). */
#ifndef XR_OPS_CUDA_H
#define XR_OPS_CUDA_H
#include <stddef.h>
#include <stdint.h>

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How GEMMs use the tensor cores. FP32: exact fp32 products (the default; matches the CPU to ~1e-5).
 * TF32 / BF16: inputs rounded to tf32 / bf16 inside cuBLAS, products accumulated in fp32 (opt-in speed). */
typedef enum { XR_GEMM_FP32 = 0, XR_GEMM_TF32 = 1, XR_GEMM_BF16 = 2 } XrGemmMode;

/* A CUDA backend on GPU `device`: its own stream and cuBLAS handle. Dies when the device cannot be used;
 * call cuda_ops_device_count first to find out whether one is there. */
Backend *cuda_ops_backend(int device);
void cuda_ops_backend_free(Backend *be);
/* Number of visible GPUs (0 when there is no GPU or no driver; never dies). */
int cuda_ops_device_count(void);
void cuda_ops_set_gemm_mode(Backend *be, XrGemmMode mode);
/* The backend's stream (cudaStream_t) and GPU index (ops_native_stream / ops_device_index). */
void *cuda_ops_stream(Backend *be);
int cuda_ops_device_index(Backend *be);
/* Waits for every op queued on the backend's stream; dies with the CUDA error of a failed kernel. */
void cuda_ops_sync(Backend *be);

/* Device memory. Allocation failure dies with the size. to_device / to_host are synchronous. */
void *cuda_ops_alloc(Backend *be, size_t bytes);
void cuda_ops_free(Backend *be, void *p);
void cuda_ops_to_device(Backend *be, void *dst, const void *src, size_t bytes);
void cuda_ops_to_host(Backend *be, void *dst, const void *src, size_t bytes);
/* Device-to-device copy on the backend's stream. */
void cuda_ops_copy(Backend *be, void *dst, const void *src, size_t bytes);

void cuda_ops_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc);
void cuda_ops_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K);
void cuda_ops_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
                    const float *word, const float *pos, const float *type, int n, int H);
void cuda_ops_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res,
                        const float *g, const float *b, int n, int H, float eps);
void cuda_ops_gelu(Backend *be, float *out, const float *x, size_t n);
void cuda_ops_tanh(Backend *be, float *out, const float *x, size_t n);
void cuda_ops_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                        int max_len, int NH, int dh);
void cuda_ops_attention_first(Backend *be, float *out, const float *qkv, const int32_t *seq_off, int S, int max_len,
                              int NH, int dh);
void cuda_ops_pool_first(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H);
void cuda_ops_pool_mean(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H);
void cuda_ops_l2norm(Backend *be, float *out, const float *x, int n, int H);

/* Training (train_ops.cu): dropout with the CPU's masks, the backward passes and the optimizer arithmetic.
 * Deterministic: fixed-order reductions, no atomics. sum_squares waits for the stream (it returns a value). */
void cuda_ops_dropout_add(Backend *be, float *out, const float *x, const float *res, const int32_t *seq_off, int S,
                          int H, const XrDropout *d);
void cuda_ops_attention_train(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                              int max_len, int NH, int dh, int first_only, const XrDropout *d);
void cuda_ops_attention_backward(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att,
                                 const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                                 const XrDropout *d);
void cuda_ops_linear_backward(Backend *be, float *dx, float *dW, float *db, const float *dy, const float *x,
                              const float *W, int M, int N, int K, int accumulate_dx);
void cuda_ops_embed_backward(Backend *be, float *dword, float *dpos, float *dtype, const float *dout,
                             const int32_t *ids, const int32_t *pos_ids, const int32_t *types, int n, int H);
void cuda_ops_layernorm_backward(Backend *be, float *dx, float *dg, float *db, const float *dout, const float *x,
                                 const float *mean, const float *rstd, const float *g, int n, int H, int accumulate);
void cuda_ops_gelu_backward(Backend *be, float *dx, const float *x, const float *dy, size_t n);
void cuda_ops_tanh_backward(Backend *be, float *dx, const float *y, const float *dy, size_t n);
void cuda_ops_pool_first_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H);
void cuda_ops_pool_mean_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H);
void cuda_ops_l2norm_backward(Backend *be, float *dx, const float *dy, const float *x, int n, int H);
void cuda_ops_zero(Backend *be, float *x, size_t n);
void cuda_ops_scale(Backend *be, float *x, size_t n, float alpha);
double cuda_ops_sum_squares(Backend *be, const float *x, size_t n);
void cuda_ops_adamw(Backend *be, float *p, const float *g, float *m, float *v, size_t n, double lr, double beta1,
                    double beta2, double eps, double wd, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
