/* ops.c: the op API's dispatch: each ops_* call goes to the backend that owns the Backend handle.
 * Only the CPU backend exists yet; a CUDA build adds its branch here. */
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_ops.h"
#include "xr_common.h"

/* Checked at every op: a handle of a backend this build lacks is a programming error, not user input. */
#define XR_CPU_ONLY(be) \
    do { \
        if ((be)->device != XR_DEV_CPU) xr_die("ops: device %d has no backend in this build", (int)(be)->device); \
    } while (0)

Backend *ops_backend_cpu(int threads) {
    Backend *be = xr_calloc(1, sizeof *be);
    cpu_backend_init(be, threads);
    return be;
}

void ops_backend_free(Backend *be) {
    if (!be) return;
    if (be->device == XR_DEV_CPU) cpu_backend_release(be);
    free(be);
}

void ops_set_threads(Backend *be, int n) {
    XR_CPU_ONLY(be);
    cpu_set_threads(be, n);
}

int ops_get_threads(const Backend *be) { return be->threads; }

void *ops_alloc(Backend *be, size_t bytes) {
    XR_CPU_ONLY(be);
    size_t n = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n ? n : 64);
    if (!p) xr_die("out of memory allocating %zu bytes", bytes);
    return p;
}

void ops_free(Backend *be, void *p) {
    (void)be;
    free(p);
}

void ops_to_device(Backend *be, void *dst, const void *src, size_t bytes) {
    XR_CPU_ONLY(be);
    if (dst != src) memcpy(dst, src, bytes);
}

void ops_to_host(Backend *be, void *dst, const void *src, size_t bytes) {
    XR_CPU_ONLY(be);
    if (dst != src) memcpy(dst, src, bytes);
}

void ops_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    XR_CPU_ONLY(be);
    cpu_gemm(be, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void ops_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K) {
    XR_CPU_ONLY(be);
    cpu_linear(be, y, x, W, b, M, N, K);
}

void ops_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
               const float *word, const float *pos, const float *type, int n, int H) {
    XR_CPU_ONLY(be);
    cpu_embed(be, out, ids, pos_ids, types, word, pos, type, n, H);
}

void ops_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res,
                   const float *g, const float *b, int n, int H, float eps) {
    XR_CPU_ONLY(be);
    cpu_layernorm(be, out, mean, rstd, x, res, g, b, n, H, eps);
}

void ops_gelu(Backend *be, float *out, const float *x, size_t n) {
    XR_CPU_ONLY(be);
    cpu_gelu(be, out, x, n);
}

void ops_tanh(Backend *be, float *out, const float *x, size_t n) {
    XR_CPU_ONLY(be);
    cpu_tanh(be, out, x, n);
}

void ops_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                   int max_len, int NH, int dh) {
    XR_CPU_ONLY(be);
    cpu_attention(be, out, att, qkv, seq_off, S, max_len, NH, dh, 0);
}

void ops_attention_first(Backend *be, float *out, const float *qkv, const int32_t *seq_off, int S, int max_len,
                         int NH, int dh) {
    XR_CPU_ONLY(be);
    cpu_attention(be, out, NULL, qkv, seq_off, S, max_len, NH, dh, 1);
}

void ops_pool_first(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    XR_CPU_ONLY(be);
    cpu_pool_first(be, out, x, seq_off, S, H);
}

void ops_pool_mean(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    XR_CPU_ONLY(be);
    cpu_pool_mean(be, out, x, seq_off, S, H);
}

void ops_l2norm(Backend *be, float *out, const float *x, int n, int H) {
    XR_CPU_ONLY(be);
    cpu_l2norm(be, out, x, n, H);
}
