/* ops.h: the op API that model code calls. One Backend handle per device; every pointer given to an op
 * lives on that backend's device (host memory for the CPU backend). core/cpu implements the ops in fp32
 * with OpenBLAS GEMMs and OpenMP kernels; a CUDA backend implements the same calls (core/cuda).
 * Forward ops are pure: they write only their outputs, and optionally save what a backward pass needs. */
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

typedef struct {
    XrDevice device;
    int threads;  /* CPU: OpenMP threads of the kernels and OpenBLAS threads of the GEMMs */
    void *impl;   /* backend-private state (CPU: per-thread scratch) */
} Backend;

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
void ops_backend_free(Backend *be);
/* The backend's native handles, opaque above core: the CUDA stream its ops are queued on (a cudaStream_t) and
 * its GPU index; NULL and -1 on the CPU backend. For a communicator that orders its transfers after the ops
 * on the GPU (dist/comm_nccl.c) without including a backend header. */
void *ops_native_stream(Backend *be);
int ops_device_index(Backend *be);
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

/* ---- training: dropout, backward passes, optimizer arithmetic ----
 * Backward ops take the gradient of the op's output (d<out>) and what the forward saved. Gradients of
 * parameters always accumulate (+=) into their buffers, so micro-batches add up; gradients of activations
 * overwrite unless an `accumulate` flag says otherwise. Results depend only on the inputs, never on the
 * number of threads or the launch configuration: reductions over tokens run per column in a fixed order, never
 * with atomics. Both backends implement them (core/cpu/cpu_train.c, core/cuda/train_ops.cu). */

/* Where dropout draws its mask (rng.h, rng_dropout_span): element j of a row of sequence s at position t
 * keeps with probability 1 - p from Philox(key, {j/4, t, id, id >> 32}), id = seq_ids[s] (s when seq_ids is
 * NULL). So a mask depends on (key, example, position) only: not on packing, batch order or threads. */
typedef struct {
    float p;                  /* drop probability in [0, 1); 0: no dropout */
    uint64_t key;             /* rng_key(seed, step, site): one key per dropout site and step */
    const uint64_t *seq_ids;  /* [S] in device memory, or NULL */
} XrDropout;

/* out = res + dropout(x) over token rows: with seq_off, the packed rows seq_off[0] .. seq_off[S]-1 (row k of
 * sequence s has position k - seq_off[s]); with seq_off NULL, S rows, row s being sequence s's first token
 * (position 0). res may be NULL (out = dropout(x)); d NULL or d->p == 0: no dropout. out may alias x or res.
 * Applied to a gradient with the same d it is its own backward pass. */
void ops_dropout_add(Backend *be, float *out, const float *x, const float *res, const int32_t *seq_off, int S,
                     int H, const XrDropout *d);

/* Attention for training: like ops_attention (first_only 0) or ops_attention_first (first_only 1) with the
 * probabilities saved in att for the backward pass, and dropout on them (d may be NULL) as transformers does
 * (ctx = dropout(softmax) v, mask position: query row | head << 16 per sequence). att holds the probabilities
 * before dropout, sequence s's block [NH, nq, L] (nq = L, or 1 with first_only) at offset
 * NH * sum_{r<s} nq_r L_r. out is [N, H] or, with first_only, [S, H]. */
void ops_attention_train(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                         int max_len, int NH, int dh, int first_only, const XrDropout *d);
/* Its backward: dqkv [N, 3H] (overwritten; with first_only the query part of non-first rows is 0) from
 * dout ([N, H], or [S, H] with first_only), the forward's qkv and att, and the same dropout d. */
void ops_attention_backward(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att,
                            const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                            const XrDropout *d);

/* nn.Linear backward for y = x W^T + b: dx[M,K] = dy W (overwrite, or += with accumulate_dx; dx NULL: skip),
 * dW[N,K] += dy^T x, db[N] += column sums of dy (db NULL: no bias). */
void ops_linear_backward(Backend *be, float *dx, float *dW, float *db, const float *dy, const float *x,
                         const float *W, int M, int N, int K, int accumulate_dx);
/* Embedding backward: dword[ids[i]] += dout[i], dpos[pos_ids[i]] += dout[i], dtype[types[i]] += dout[i]
 * (types NULL: row 0; dtype NULL: skipped). Column ranges per thread: deterministic, no atomics. */
void ops_embed_backward(Backend *be, float *dword, float *dpos, float *dtype, const float *dout, const int32_t *ids,
                        const int32_t *pos_ids, const int32_t *types, int n, int H);
/* LayerNorm backward. x is the LayerNorm's input (x + res of the forward, which the caller keeps), mean/rstd
 * what the forward saved. dx = d(out)/d(input) (overwrite, or += with accumulate); dg, db accumulate.
 * dx may alias dout. */
void ops_layernorm_backward(Backend *be, float *dx, float *dg, float *db, const float *dout, const float *x,
                            const float *mean, const float *rstd, const float *g, int n, int H, int accumulate);
/* dx = dy * GELU'(x) with the exact derivative Phi(x) + x phi(x); dx may alias dy. */
void ops_gelu_backward(Backend *be, float *dx, const float *x, const float *dy, size_t n);
/* dx = dy * (1 - y^2) from the forward's output y; dx may alias dy. */
void ops_tanh_backward(Backend *be, float *dx, const float *y, const float *dy, size_t n);
/* Pooling backward: dx[seq_off[s]] += dout[s] (first token), dx[rows of s] += dout[s] / L_s (mean). */
void ops_pool_first_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H);
void ops_pool_mean_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H);
/* L2 normalisation backward from the forward's input x: dx = (dy - y (y . dy)) / max(||x||, 1e-12)
 * (dy / 1e-12 where the norm is clamped); dx may alias dy. */
void ops_l2norm_backward(Backend *be, float *dx, const float *dy, const float *x, int n, int H);

/* x[0..n) = 0. */
void ops_zero(Backend *be, float *x, size_t n);
/* x *= alpha. */
void ops_scale(Backend *be, float *x, size_t n, float alpha);
/* Sum of squares in double, summed in fixed chunks and a fixed order (independent of threads). */
double ops_sum_squares(Backend *be, const float *x, size_t n);
/* One torch.optim.AdamW step (single-tensor path, torch's order of operations) on n parameters:
 * p *= 1 - lr*wd (when wd != 0); m = lerp(m, g, 1 - beta1); v = v*beta2 + (1 - beta2) g^2;
 * p += (-lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), bc1 = 1 - beta1^step, bc2 = 1 - beta2^step (step >= 1,
 * counted including this one). Scalars are computed in double as Python does, then used as fp32. */
void ops_adamw(Backend *be, float *p, const float *g, float *m, float *v, size_t n, double lr, double beta1,
               double beta2, double eps, double wd, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
