/* ops.h: the op API that model code calls. One Backend handle per device; every pointer given to an op
 * lives on that backend's device (host memory for the CPU backend). core/cpu implements the ops in fp32
 * with OpenBLAS GEMMs and OpenMP kernels; a CUDA backend implements the same calls (core/cuda).
 * Forward ops are pure: they write only their outputs, and optionally save what a backward pass needs. */
#ifndef XR_OPS_H
#define XR_OPS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { XR_DEV_CPU = 0, XR_DEV_CUDA = 1 } XrDevice;

typedef struct {
    XrDevice device;
    int threads;  /* CPU: OpenMP threads of the kernels and OpenBLAS threads of the GEMMs */
    void *impl;   /* backend-private state (CPU: per-thread scratch) */
} Backend;

/* The CPU backend. threads <= 0: $OMP_NUM_THREADS when set, else the OpenMP default (all cores).
 * All its parallelism is OpenMP's: OpenBLAS is pinned to one thread per call (process-wide), and the GEMMs
 * split their output over the OpenMP threads. One Backend is used by one thread at a time. */
Backend *ops_backend_cpu(int threads);
void ops_backend_free(Backend *be);
/* Sets the kernel and GEMM thread count (n <= 0: default as above). OpenBLAS's count is process-wide. */
void ops_set_threads(Backend *be, int n);
int ops_get_threads(const Backend *be);

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

/* Device memory (CPU: 64-byte aligned host memory). Allocation failure dies with the size. */
void *ops_alloc(Backend *be, size_t bytes);
void ops_free(Backend *be, void *p);
void ops_to_device(Backend *be, void *dst, const void *src, size_t bytes);
void ops_to_host(Backend *be, void *dst, const void *src, size_t bytes);

/* ---- dense algebra (row-major everywhere) ---- */

/* C[M,N] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; lda/ldb/ldc are row strides as stored. */
void ops_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
/* nn.Linear: y[M,N] = x[M,K] W[N,K]^T + b[N] (b may be NULL). y must not alias x. */
void ops_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K);

/* ---- token-wise ops (n rows of width H) ---- */

/* out[i] = word[ids[i]] + pos[pos_ids[i]] + type[types[i]] (types may be NULL: row 0). Indices are trusted:
 * the model validates them against the table sizes before calling. */
void ops_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
               const float *word, const float *pos, const float *type, int n, int H);
/* out = LayerNorm(x + res) * g + b per row (res may be NULL; out may alias x or res). mean/rstd [n] are saved
 * for the backward pass when non-NULL. Biased variance, eps inside the square root, as torch. */
void ops_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res,
                   const float *g, const float *b, int n, int H, float eps);
/* Exact GELU 0.5 x (1 + erf(x / sqrt 2)), elementwise; out may alias x. */
void ops_gelu(Backend *be, float *out, const float *x, size_t n);
void ops_tanh(Backend *be, float *out, const float *x, size_t n);

/* ---- attention over packed (unpadded) sequences ----
 * Sequence s owns rows seq_off[s] .. seq_off[s+1]-1 (seq_off has S+1 entries, seq_off[0] = 0); only tokens of
 * the same sequence attend to each other, so padding never enters the computation.
 * qkv [N, 3*NH*dh]: each row is q | k | v, head h at columns h*dh of each part (one fused QKV projection).
 * out [N, NH*dh]: softmax(q k^T / sqrt(dh)) v per head. att: when non-NULL, the probabilities are saved for
 * the backward pass, sequence s's [NH, L, L] block at offset NH * sum_{r<s} L_r^2. max_len = max_s L_s. */
void ops_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                   int max_len, int NH, int dh);

/* The same for the first query row of each sequence only (its [CLS] / <s>), all rows as keys and values:
 * out [S, NH*dh]. The last layer uses it when only the first token's output is needed (scores, CLS
 * pooling), which is exact and skips most of that layer's work. */
void ops_attention_first(Backend *be, float *out, const float *qkv, const int32_t *seq_off, int S, int max_len,
                         int NH, int dh);

/* ---- pooling over packed sequences (rows seq_off[s] .. seq_off[s+1]-1) ---- */

/* out[s] = x[seq_off[s]] (the first token: [CLS] / <s>). */
void ops_pool_first(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H);
/* out[s] = mean of the rows of sequence s. */
void ops_pool_mean(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H);
/* out[i] = x[i] / max(||x[i]||_2, 1e-12) per row, as torch.nn.functional.normalize; out may alias x. */
void ops_l2norm(Backend *be, float *out, const float *x, int n, int H);

#ifdef __cplusplus
}
#endif
#endif
