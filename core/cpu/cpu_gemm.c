/* cpu_gemm.c: matrix products on the CPU through OpenBLAS (cblas_sgemm, row-major), and nn.Linear on top. */
#include <string.h>

#include <cblas.h>

#include "cpu_ops.h"

void cpu_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    (void)be;
    if (M <= 0 || N <= 0) return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}

void cpu_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K) {
    if (M <= 0) return;
    float beta = 0.0f;
    if (b) {
        /* broadcast the bias into y and let the GEMM accumulate onto it: one pass fewer than adding after */
        int nt = be->threads;
        XR_OMP(omp parallel for num_threads(nt) schedule(static) if ((size_t)M * N > XR_PAR_MIN))
        for (int i = 0; i < M; i++) memcpy(y + (size_t)i * N, b, (size_t)N * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K, beta, y, N);
}
