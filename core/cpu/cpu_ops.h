/* cpu_ops.h: the CPU backend's implementation of the op API (fp32, OpenBLAS + OpenMP), called by the
 * dispatch in core/ops.c. Internal to core/: model code calls ops_*, never these. */
#ifndef XR_CPU_OPS_H
#define XR_CPU_OPS_H
#include "ops.h"

#ifdef _OPENMP
#include <omp.h>
#define XR_OMP(x) _Pragma(#x)
#else
#define XR_OMP(x)
#endif

/* Hot row kernels are compiled for three ISA levels and picked at load time (the build targets x86-64-v2). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define XR_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define XR_CLONES
#endif

/* Below this many scalar operations a kernel runs on one thread: a parallel region costs more. */
#define XR_PAR_MIN 32768

/* Elementwise ops split the array into one contiguous span per thread (aligned to 16 floats). */
#define XR_SPANS(nt, n, body)                                                          \
    do {                                                                               \
        int nspan_ = ((n) > XR_PAR_MIN) ? (nt) : 1;                                    \
        size_t chunk_ = (((n) + nspan_ - 1) / nspan_ + 15) & ~(size_t)15;              \
        XR_OMP(omp parallel for num_threads(nspan_) schedule(static))                 \
        for (int s_ = 0; s_ < nspan_; s_++) {                                          \
            size_t lo = (size_t)s_ * chunk_, hi = lo + chunk_ > (n) ? (n) : lo + chunk_; \
            if (lo < hi) body;                                                         \
        }                                                                              \
    } while (0)

void cpu_backend_init(Backend *be, int threads);
void cpu_backend_release(Backend *be);
void cpu_set_threads(Backend *be, int n);
/* 64-byte aligned host memory; dies with the size on failure. */
void *cpu_alloc(size_t bytes);
/* Per-thread scratch of at least `floats` floats each, valid until the next call (grow-only). */
float *cpu_scratch(Backend *be, size_t floats_per_thread, int nthreads);

/* The GEMM behind ops_linear: xrank's AVX-512 kernel (cpu_sgemm_avx512.c) or OpenBLAS; see cpu_backend.c. */
int cpu_use_own_gemm(const Backend *be);
int cpu_sgemm_avx512_available(void);
size_t cpu_sgemm_avx512_scratch(void);
void cpu_sgemm_avx512_nt(int M, int N, int K, const float *x, size_t ldx, const float *W, size_t ldw, float *y,
                         size_t ldy, int accumulate, float *scratch);
/* The same with either operand stored transposed (x_t: x is [K, M]; w_t: W is [K, N]). */
void cpu_sgemm_avx512(int M, int N, int K, const float *x, size_t ldx, int x_t, const float *W, size_t ldw, int w_t,
                      float *y, size_t ldy, int accumulate, float *scratch);

void cpu_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
void cpu_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K);
void cpu_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
               const float *word, const float *pos, const float *type, int n, int H);
void cpu_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res,
                   const float *g, const float *b, int n, int H, float eps);
void cpu_gelu(Backend *be, float *out, const float *x, size_t n);
void cpu_tanh(Backend *be, float *out, const float *x, size_t n);
void cpu_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                   int max_len, int NH, int dh, int first_only, const XrDropout *d);
void cpu_pool_first(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H);
void cpu_pool_mean(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H);
void cpu_l2norm(Backend *be, float *out, const float *x, int n, int H);

/* training (cpu_train.c, cpu_attention.c) */
void cpu_dropout_add(Backend *be, float *out, const float *x, const float *res, const int32_t *seq_off, int S,
                     int H, const XrDropout *d);
void cpu_attention_backward(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att,
                            const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                            const XrDropout *d);
/* db[j] += sum_i dy[i, j] over M rows of width N. */
void cpu_colsum_add(Backend *be, float *db, const float *dy, int M, int N);
void cpu_linear_backward(Backend *be, float *dx, float *dW, float *db, const float *dy, const float *x,
                         const float *W, int M, int N, int K, int accumulate_dx);
void cpu_embed_backward(Backend *be, float *dword, float *dpos, float *dtype, const float *dout, const int32_t *ids,
                        const int32_t *pos_ids, const int32_t *types, int n, int H);
void cpu_layernorm_backward(Backend *be, float *dx, float *dg, float *db, const float *dout, const float *x,
                            const float *mean, const float *rstd, const float *g, int n, int H, int accumulate);
void cpu_gelu_backward(Backend *be, float *dx, const float *x, const float *dy, size_t n);
void cpu_tanh_backward(Backend *be, float *dx, const float *y, const float *dy, size_t n);
void cpu_pool_first_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H);
void cpu_pool_mean_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H);
void cpu_l2norm_backward(Backend *be, float *dx, const float *dy, const float *x, int n, int H);
void cpu_zero(Backend *be, float *x, size_t n);
void cpu_scale(Backend *be, float *x, size_t n, float alpha);
double cpu_sum_squares(Backend *be, const float *x, size_t n);
void cpu_adamw(Backend *be, float *p, const float *g, float *m, float *v, size_t n, double lr, double beta1,
               double beta2, double eps, double wd, int64_t step);

#endif
