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
                   int max_len, int NH, int dh, int first_only);
void cpu_pool_first(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H);
void cpu_pool_mean(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H);
void cpu_l2norm(Backend *be, float *out, const float *x, int n, int H);

#endif
