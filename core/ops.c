/* ops.c: the op API's dispatch: each ops_* call goes to the backend that owns the Backend handle: core/cpu
 * always, core/cuda (cuda_ops_*, same arguments, device pointers) in builds with the CUDA backend. */
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_ops.h"
#include "xr_common.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#define XR_CALL(be, cpu_call, cuda_call) \
    do {                                 \
        if ((be)->device == XR_DEV_CUDA) \
            cuda_call;                   \
        else                             \
            cpu_call;                    \
    } while (0)
#else
/* A handle of a backend this build lacks is a programming error, not user input. */
#define XR_CALL(be, cpu_call, cuda_call)                                                                     \
    do {                                                                                                     \
        if ((be)->device != XR_DEV_CPU) xr_die("ops: device %d has no backend in this build", (int)(be)->device); \
        cpu_call;                                                                                            \
    } while (0)
#endif

Backend *ops_backend_cpu(int threads) {
    Backend *be = xr_calloc(1, sizeof *be);
    cpu_backend_init(be, threads);
    return be;
}

void ops_backend_free(Backend *be) {
    if (!be) return;
    if (be->device == XR_DEV_CPU) {
        cpu_backend_release(be);
        free(be);
        return;
    }
    XR_CALL(be, (void)0, cuda_ops_backend_free(be));
}

void ops_set_threads(Backend *be, int n) {
    /* GPU kernels have no thread count to set */
    if (be->device == XR_DEV_CPU) cpu_set_threads(be, n);
}

int ops_get_threads(const Backend *be) { return be->threads; }

void *ops_alloc(Backend *be, size_t bytes) {
    void *p = NULL;
    XR_CALL(be, p = cpu_alloc(bytes), p = cuda_ops_alloc(be, bytes));
    return p;
}

void ops_free(Backend *be, void *p) {
    if (!p) return;
    XR_CALL(be, free(p), cuda_ops_free(be, p));
}

void ops_to_device(Backend *be, void *dst, const void *src, size_t bytes) {
    XR_CALL(be, if (dst != src) memcpy(dst, src, bytes), cuda_ops_to_device(be, dst, src, bytes));
}

void ops_to_host(Backend *be, void *dst, const void *src, size_t bytes) {
    XR_CALL(be, if (dst != src) memcpy(dst, src, bytes), cuda_ops_to_host(be, dst, src, bytes));
}

void ops_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    XR_CALL(be, cpu_gemm(be, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc),
            cuda_ops_gemm(be, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc));
}

void ops_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K) {
    XR_CALL(be, cpu_linear(be, y, x, W, b, M, N, K), cuda_ops_linear(be, y, x, W, b, M, N, K));
}

void ops_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
               const float *word, const float *pos, const float *type, int n, int H) {
    XR_CALL(be, cpu_embed(be, out, ids, pos_ids, types, word, pos, type, n, H),
            cuda_ops_embed(be, out, ids, pos_ids, types, word, pos, type, n, H));
}

void ops_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res,
                   const float *g, const float *b, int n, int H, float eps) {
    XR_CALL(be, cpu_layernorm(be, out, mean, rstd, x, res, g, b, n, H, eps),
            cuda_ops_layernorm(be, out, mean, rstd, x, res, g, b, n, H, eps));
}

void ops_gelu(Backend *be, float *out, const float *x, size_t n) {
    XR_CALL(be, cpu_gelu(be, out, x, n), cuda_ops_gelu(be, out, x, n));
}

void ops_tanh(Backend *be, float *out, const float *x, size_t n) {
    XR_CALL(be, cpu_tanh(be, out, x, n), cuda_ops_tanh(be, out, x, n));
}

void ops_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                   int max_len, int NH, int dh) {
    XR_CALL(be, cpu_attention(be, out, att, qkv, seq_off, S, max_len, NH, dh, 0),
            cuda_ops_attention(be, out, att, qkv, seq_off, S, max_len, NH, dh));
}

void ops_attention_first(Backend *be, float *out, const float *qkv, const int32_t *seq_off, int S, int max_len,
                         int NH, int dh) {
    XR_CALL(be, cpu_attention(be, out, NULL, qkv, seq_off, S, max_len, NH, dh, 1),
            cuda_ops_attention_first(be, out, qkv, seq_off, S, max_len, NH, dh));
}

void ops_pool_first(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    XR_CALL(be, cpu_pool_first(be, out, x, seq_off, S, H), cuda_ops_pool_first(be, out, x, seq_off, S, H));
}

void ops_pool_mean(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    XR_CALL(be, cpu_pool_mean(be, out, x, seq_off, S, H), cuda_ops_pool_mean(be, out, x, seq_off, S, H));
}

void ops_l2norm(Backend *be, float *out, const float *x, int n, int H) {
    XR_CALL(be, cpu_l2norm(be, out, x, n, H), cuda_ops_l2norm(be, out, x, n, H));
}
