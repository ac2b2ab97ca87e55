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

int ops_device_count(XrDevice dev) {
    if (dev == XR_DEV_CPU) return 1;
#ifdef XR_HAVE_CUDA
    if (dev == XR_DEV_CUDA) return cuda_ops_device_count();
#endif
    return 0;
}

const char *ops_device_name(XrDevice dev) { return dev == XR_DEV_CUDA ? "cuda" : "cpu"; }

Backend *ops_backend_create(XrDevice dev, int index, XrPrecision prec, int threads, XrErr *e) {
    if (dev == XR_DEV_CPU) {
        if (prec != XR_PREC_FP32) {
            xr_errf(e, "--precision bf16 needs --device cuda (the CPU backend computes in fp32)");
            return NULL;
        }
        return ops_backend_cpu(threads);
    }
#ifdef XR_HAVE_CUDA
    int n = cuda_ops_device_count();
    if (n < 1) {
        xr_errf(e, "--device cuda: no GPU is visible (CUDA_VISIBLE_DEVICES='%s')",
                getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "");
        return NULL;
    }
    if (index < 0 || index >= n) {
        xr_errf(e, "--device cuda: GPU index %d is out of range (%d visible)", index, n);
        return NULL;
    }
    Backend *be = cuda_ops_backend(index);
    cuda_ops_set_gemm_mode(be, prec == XR_PREC_BF16 ? XR_GEMM_BF16 : XR_GEMM_FP32);
    return be;
#else
    (void)index;
    (void)prec;
    (void)threads;
    xr_errf(e, "--device cuda: this xrank was built without the CUDA backend (nvcc, cuBLAS, cuDNN and NCCL are "
               "needed at build time)");
    return NULL;
#endif
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

void *ops_native_stream(Backend *be) {
    void *s = NULL;
    XR_CALL(be, (void)0, s = cuda_ops_stream(be));
    return s;
}

int ops_device_index(Backend *be) {
    int i = -1;
    XR_CALL(be, (void)0, i = cuda_ops_device_index(be));
    return i;
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
    XR_CALL(be, cpu_attention(be, out, att, qkv, seq_off, S, max_len, NH, dh, 0, NULL),
            cuda_ops_attention(be, out, att, qkv, seq_off, S, max_len, NH, dh));
}

void ops_attention_first(Backend *be, float *out, const float *qkv, const int32_t *seq_off, int S, int max_len,
                         int NH, int dh) {
    XR_CALL(be, cpu_attention(be, out, NULL, qkv, seq_off, S, max_len, NH, dh, 1, NULL),
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

/* ---- training ops ---- */

void ops_dropout_add(Backend *be, float *out, const float *x, const float *res, const int32_t *seq_off, int S,
                     int H, const XrDropout *d) {
    XR_CALL(be, cpu_dropout_add(be, out, x, res, seq_off, S, H, d),
            cuda_ops_dropout_add(be, out, x, res, seq_off, S, H, d));
}

void ops_attention_train(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                         int max_len, int NH, int dh, int first_only, const XrDropout *d) {
    XR_CALL(be, cpu_attention(be, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, d),
            cuda_ops_attention_train(be, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, d));
}

void ops_attention_backward(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att,
                            const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                            const XrDropout *d) {
    XR_CALL(be, cpu_attention_backward(be, dqkv, dout, qkv, att, seq_off, S, max_len, NH, dh, first_only, d),
            cuda_ops_attention_backward(be, dqkv, dout, qkv, att, seq_off, S, max_len, NH, dh, first_only, d));
}

void ops_linear_backward(Backend *be, float *dx, float *dW, float *db, const float *dy, const float *x,
                         const float *W, int M, int N, int K, int accumulate_dx) {
    XR_CALL(be, cpu_linear_backward(be, dx, dW, db, dy, x, W, M, N, K, accumulate_dx),
            cuda_ops_linear_backward(be, dx, dW, db, dy, x, W, M, N, K, accumulate_dx));
}

void ops_embed_backward(Backend *be, float *dword, float *dpos, float *dtype, const float *dout, const int32_t *ids,
                        const int32_t *pos_ids, const int32_t *types, int n, int H) {
    XR_CALL(be, cpu_embed_backward(be, dword, dpos, dtype, dout, ids, pos_ids, types, n, H),
            cuda_ops_embed_backward(be, dword, dpos, dtype, dout, ids, pos_ids, types, n, H));
}

void ops_layernorm_backward(Backend *be, float *dx, float *dg, float *db, const float *dout, const float *x,
                            const float *mean, const float *rstd, const float *g, int n, int H, int accumulate) {
    XR_CALL(be, cpu_layernorm_backward(be, dx, dg, db, dout, x, mean, rstd, g, n, H, accumulate),
            cuda_ops_layernorm_backward(be, dx, dg, db, dout, x, mean, rstd, g, n, H, accumulate));
}

void ops_gelu_backward(Backend *be, float *dx, const float *x, const float *dy, size_t n) {
    XR_CALL(be, cpu_gelu_backward(be, dx, x, dy, n), cuda_ops_gelu_backward(be, dx, x, dy, n));
}

void ops_tanh_backward(Backend *be, float *dx, const float *y, const float *dy, size_t n) {
    XR_CALL(be, cpu_tanh_backward(be, dx, y, dy, n), cuda_ops_tanh_backward(be, dx, y, dy, n));
}

void ops_pool_first_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H) {
    XR_CALL(be, cpu_pool_first_backward(be, dx, dout, seq_off, S, H),
            cuda_ops_pool_first_backward(be, dx, dout, seq_off, S, H));
}

void ops_pool_mean_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H) {
    XR_CALL(be, cpu_pool_mean_backward(be, dx, dout, seq_off, S, H),
            cuda_ops_pool_mean_backward(be, dx, dout, seq_off, S, H));
}

void ops_l2norm_backward(Backend *be, float *dx, const float *dy, const float *x, int n, int H) {
    XR_CALL(be, cpu_l2norm_backward(be, dx, dy, x, n, H), cuda_ops_l2norm_backward(be, dx, dy, x, n, H));
}

void ops_zero(Backend *be, float *x, size_t n) { XR_CALL(be, cpu_zero(be, x, n), cuda_ops_zero(be, x, n)); }

void ops_scale(Backend *be, float *x, size_t n, float alpha) {
    XR_CALL(be, cpu_scale(be, x, n, alpha), cuda_ops_scale(be, x, n, alpha));
}

double ops_sum_squares(Backend *be, const float *x, size_t n) {
    double r = 0;
    XR_CALL(be, r = cpu_sum_squares(be, x, n), r = cuda_ops_sum_squares(be, x, n));
    return r;
}

void ops_adamw(Backend *be, float *p, const float *g, float *m, float *v, size_t n, double lr, double beta1,
               double beta2, double eps, double wd, int64_t step) {
    XR_CALL(be, cpu_adamw(be, p, g, m, v, n, lr, beta1, beta2, eps, wd, step),
            cuda_ops_adamw(be, p, g, m, v, n, lr, beta1, beta2, eps, wd, step));
}
