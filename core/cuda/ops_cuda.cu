/* ops_cuda.cu: the CUDA backend of the op API (core/ops.h): backend state (device, stream, cuBLAS handle),
 * device memory, cuBLAS GEMMs and the token-wise, attention and pooling kernels. fp32 storage and fp32
 * accumulation throughout, so results match the CPU backend to float rounding (see tests/test_cuda_ops.c). */
#include "cuda/ops_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>

#include "xr_common.h"

typedef struct {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    XrGemmMode mode;
} CudaState;

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

static CudaState *st_of(Backend *be) {
    if (!be || be->device != XR_DEV_CUDA || !be->impl) xr_die("cuda_ops: handle is not a CUDA backend");
    return (CudaState *)be->impl;
}

static unsigned blocks_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535u * 32u ? 65535u * 32u : (b ? b : 1)); /* kernels below are grid-stride loops */
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
    st->mode = XR_GEMM_FP32;
    XR_CU(cudaSetDevice(device));
    XR_CU(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking));
    XR_BLAS(cublasCreate(&st->blas));
    XR_BLAS(cublasSetStream(st->blas, st->stream));
    /* exact fp32 unless the caller opts in: never let cuBLAS pick TF32 on its own */
    XR_BLAS(cublasSetMathMode(st->blas, CUBLAS_PEDANTIC_MATH));
    be->device = XR_DEV_CUDA;
    be->threads = 1;
    be->impl = st;
    return be;
}

extern "C" void cuda_ops_backend_free(Backend *be) {
    if (!be) return;
    CudaState *st = st_of(be);
    XR_CU(cudaStreamSynchronize(st->stream));
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

extern "C" void cuda_ops_sync(Backend *be) { XR_CU(cudaStreamSynchronize(st_of(be)->stream)); }

extern "C" void *cuda_ops_alloc(Backend *be, size_t bytes) {
    CudaState *st = st_of(be);
    XR_CU(cudaSetDevice(st->device));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e != cudaSuccess) xr_die("CUDA: out of device memory allocating %zu bytes on GPU %d: %s", bytes, st->device,
                                 cudaGetErrorString(e));
    return p;
}

extern "C" void cuda_ops_free(Backend *be, void *p) {
    if (!p) return;
    /* the stream may still use p: cudaFree waits for the device, but be explicit about this stream */
    XR_CU(cudaStreamSynchronize(st_of(be)->stream));
    XR_CU(cudaFree(p));
}

extern "C" void cuda_ops_to_device(Backend *be, void *dst, const void *src, size_t bytes) {
    CudaState *st = st_of(be);
    if (!bytes) return;
    /* synchronous: the caller may reuse the host buffer as soon as this returns */
    XR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st->stream));
    XR_CU(cudaStreamSynchronize(st->stream));
}

extern "C" void cuda_ops_to_host(Backend *be, void *dst, const void *src, size_t bytes) {
    CudaState *st = st_of(be);
    if (!bytes) return;
    XR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st->stream));
    XR_CU(cudaStreamSynchronize(st->stream));
}

extern "C" void cuda_ops_copy(Backend *be, void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return;
    XR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st_of(be)->stream));
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
    CudaState *st = st_of(be);
    if (M <= 0 || N <= 0) return;
    gemm_rm(st, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

__global__ void k_bias_rows(float *y, const float *b, int M, int N) {
    size_t total = (size_t)M * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = b[i % N];
}

extern "C" void cuda_ops_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N,
                                int K) {
    CudaState *st = st_of(be);
    if (M <= 0) return;
    float beta = 0.0f;
    if (b) {
        /* the bias goes into y first and the GEMM accumulates onto it (beta = 1), as the CPU backend does */
        k_bias_rows<<<blocks_for((size_t)M * N, 256), 256, 0, st->stream>>>(y, b, M, N);
        XR_LAUNCHED();
        beta = 1.0f;
    }
    gemm_rm(st, 0, 1, M, N, K, 1.0f, x, K, W, K, beta, y, N);
}

/* ---------------- token-wise kernels ---------------- */

__global__ void k_embed(float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
                        const float *word, const float *pos, const float *type, int n, int H) {
    size_t total = (size_t)n * H;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        size_t i = e / H, j = e % H;
        float t = type[(types ? (size_t)types[i] * H : 0) + j];
        out[e] = word[(size_t)ids[i] * H + j] + pos[(size_t)pos_ids[i] * H + j] + t;
    }
}

extern "C" void cuda_ops_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids,
                               const int32_t *types, const float *word, const float *pos, const float *type, int n,
                               int H) {
    CudaState *st = st_of(be);
    if (n <= 0) return;
    k_embed<<<blocks_for((size_t)n * H, 256), 256, 0, st->stream>>>(out, ids, pos_ids, types, word, pos, type, n, H);
    XR_LAUNCHED();
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#define XR_ROWS_PER_BLOCK 8 /* one warp per row */

/* One warp per row, two-pass statistics as the CPU: v = x + res is stored in out first (out may alias x or res:
 * each lane reads and writes only its own columns), then the variance of out, then the affine map. */
__global__ void k_layernorm(float *out, float *mean, float *rstd, const float *x, const float *res, const float *g,
                            const float *b, int n, int H, float eps) {
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
    for (int j = lane; j < H; j += 32) out[off + j] = (out[off + j] - mu) * rs * g[j] + b[j];
    if (lane == 0) {
        if (mean) mean[row] = mu;
        if (rstd) rstd[row] = rs;
    }
}

extern "C" void cuda_ops_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x,
                                   const float *res, const float *g, const float *b, int n, int H, float eps) {
    CudaState *st = st_of(be);
    if (n <= 0) return;
    k_layernorm<<<(n + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK, 32 * XR_ROWS_PER_BLOCK, 0, st->stream>>>(
        out, mean, rstd, x, res, g, b, n, H, eps);
    XR_LAUNCHED();
}

__global__ void k_gelu(float *out, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

__global__ void k_tanh(float *out, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = tanhf(x[i]);
}

extern "C" void cuda_ops_gelu(Backend *be, float *out, const float *x, size_t n) {
    CudaState *st = st_of(be);
    if (!n) return;
    k_gelu<<<blocks_for(n, 256), 256, 0, st->stream>>>(out, x, n);
    XR_LAUNCHED();
}

extern "C" void cuda_ops_tanh(Backend *be, float *out, const float *x, size_t n) {
    CudaState *st = st_of(be);
    if (!n) return;
    k_tanh<<<blocks_for(n, 256), 256, 0, st->stream>>>(out, x, n);
    XR_LAUNCHED();
}

/* ---------------- attention over packed sequences ---------------- */

#define XR_ATT_WARPS 4 /* query rows per block, one warp each */

/* Block (s*NH + h, y): warp w takes query row i = y*XR_ATT_WARPS + w of sequence s, head h (first_only: row 0,
 * warp 0). Lanes split the keys for the scores (kept in shared memory, max_len per warp), the softmax is reduced
 * across the warp, and lanes split the head dimension for p v. Exact softmax in fp32, no online rescaling. */
__global__ void k_attention(float *out, float *att, const float *qkv, const int32_t *seq_off, int NH, int dh,
                            int first_only, int max_len, float scale) {
    extern __shared__ float sh[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int s = blockIdx.x / NH, h = blockIdx.x % NH;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0;
    int i = first_only ? 0 : blockIdx.y * XR_ATT_WARPS + warp;
    if ((first_only && warp > 0) || i >= L) return;
    float *sc = sh + (size_t)warp * (max_len + dh), *qs = sc + max_len;
    size_t stride = (size_t)3 * NH * dh, HD = (size_t)NH * dh;
    const float *q = qkv + (size_t)(b0 + i) * stride + (size_t)h * dh;
    const float *k0 = qkv + (size_t)b0 * stride + HD + (size_t)h * dh;
    const float *v0 = k0 + HD;
    for (int d = lane; d < dh; d += 32) qs[d] = q[d];
    __syncwarp();
    float mx = -INFINITY;
    for (int j = lane; j < L; j += 32) {
        const float *k = k0 + (size_t)j * stride;
        float dot = 0.0f;
        for (int d = 0; d < dh; d++) dot += qs[d] * k[d];
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
    float *o = out + (size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh;
    for (int d = lane; d < dh; d += 32) {
        float acc = 0.0f;
        for (int j = 0; j < L; j++) acc += sc[j] * v0[(size_t)j * stride + d];
        o[d] = acc * inv;
    }
}

static void attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                      int max_len, int NH, int dh, int first_only) {
    CudaState *st = st_of(be);
    if (S <= 0 || max_len <= 0) return;
    size_t shmem = (size_t)XR_ATT_WARPS * (max_len + dh) * sizeof(float);
    static const size_t kShmemMax = 200 * 1024; /* H100 allows 227 KB per block after opting in */
    if (shmem > kShmemMax) xr_die("cuda_ops_attention: max_len %d too long for the shared-memory scores", max_len);
    if (shmem > 48 * 1024) XR_CU(cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                      (int)shmem));
    dim3 grid((unsigned)S * NH, first_only ? 1 : (unsigned)((max_len + XR_ATT_WARPS - 1) / XR_ATT_WARPS));
    k_attention<<<grid, 32 * XR_ATT_WARPS, shmem, st->stream>>>(out, att, qkv, seq_off, NH, dh, first_only, max_len,
                                                                1.0f / sqrtf((float)dh));
    XR_LAUNCHED();
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

__global__ void k_pool(float *out, const float *x, const int32_t *seq_off, int H, int mean) {
    int s = blockIdx.x;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0;
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        if (!mean) {
            out[(size_t)s * H + j] = x[(size_t)b0 * H + j];
            continue;
        }
        float acc = 0.0f;
        for (int r = 0; r < L; r++) acc += x[(size_t)(b0 + r) * H + j];
        out[(size_t)s * H + j] = acc * (1.0f / (float)(L > 0 ? L : 1));
    }
}

extern "C" void cuda_ops_pool_first(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    CudaState *st = st_of(be);
    if (S <= 0) return;
    k_pool<<<S, 128, 0, st->stream>>>(out, x, seq_off, H, 0);
    XR_LAUNCHED();
}

extern "C" void cuda_ops_pool_mean(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    CudaState *st = st_of(be);
    if (S <= 0) return;
    k_pool<<<S, 128, 0, st->stream>>>(out, x, seq_off, H, 1);
    XR_LAUNCHED();
}

__global__ void k_l2norm(float *out, const float *x, int n, int H) {
    int row = blockIdx.x * XR_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    size_t off = (size_t)row * H;
    float ss = 0.0f;
    for (int j = lane; j < H; j += 32) ss += x[off + j] * x[off + j];
    float inv = 1.0f / fmaxf(sqrtf(warp_sum(ss)), 1e-12f);
    for (int j = lane; j < H; j += 32) out[off + j] = x[off + j] * inv;
}

extern "C" void cuda_ops_l2norm(Backend *be, float *out, const float *x, int n, int H) {
    CudaState *st = st_of(be);
    if (n <= 0) return;
    k_l2norm<<<(n + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK, 32 * XR_ROWS_PER_BLOCK, 0, st->stream>>>(out, x, n, H);
    XR_LAUNCHED();
}
