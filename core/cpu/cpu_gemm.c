/* cpu_gemm.c: matrix products on the CPU: OpenBLAS's single-threaded sgemm on blocks of the output, one block
 * per OpenMP thread. All CPU parallelism is OpenMP's: OpenBLAS's own thread pool (pthreads) would compete
 * with the OpenMP workers for the same cores between ops, which on few cores costs more than it gains. */
#include <string.h>

#include <cblas.h>

#include "cpu_ops.h"

/* Below this many multiply-adds one call on one thread is faster than a parallel region. */
#define XR_GEMM_PAR_MIN (1 << 18)

/* Part p of [0, n) split in parts, boundaries at multiples of align (the sgemm kernels' blocking). */
static void split_range(int n, int parts, int p, int align, int *lo, int *hi) {
    int units = (n + align - 1) / align;
    int u0 = (int)((long long)units * p / parts), u1 = (int)((long long)units * (p + 1) / parts);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}

/* Threads to use and whether to split rows (else columns): rows when there are enough for every thread. */
static int gemm_plan(const Backend *be, int M, int N, int K, int *split_rows) {
    int nt = be->threads;
    if (nt < 2 || (long long)M * N * K < XR_GEMM_PAR_MIN) nt = 1;
    *split_rows = M >= 32 * nt || M >= N;
    return nt;
}

void cpu_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    int rows, nt = gemm_plan(be, M, N, K, &rows);
    if (cpu_use_own_gemm(be) && alpha == 1.0f && (beta == 0.0f || beta == 1.0f)) {
        /* the backward passes' products (alpha 1, overwrite or accumulate) on xrank's kernel too: C = x W^T with
         * x = op(A) and W = op(B)^T, each read transposed or not by the packing */
        size_t per = (cpu_sgemm_avx512_scratch() + 15) & ~(size_t)15;
        float *scratch = cpu_scratch(be, per, nt);
        XR_OMP(omp parallel for num_threads(nt) schedule(static) if (nt > 1))
        for (int p = 0; p < nt; p++) {
            int lo, hi;
            split_range(rows ? M : N, nt, p, rows ? 12 : 32, &lo, &hi);
            if (lo >= hi) continue;
            int m0 = rows ? lo : 0, m1 = rows ? hi : M, n0 = rows ? 0 : lo, n1 = rows ? N : hi;
            const float *a = trans_a ? A + m0 : A + (size_t)m0 * lda;
            const float *w = trans_b ? B + (size_t)n0 * ldb : B + n0;
            cpu_sgemm_avx512(m1 - m0, n1 - n0, K, a, (size_t)lda, trans_a, w, (size_t)ldb, !trans_b,
                             C + (size_t)m0 * ldc + n0, (size_t)ldc, beta == 1.0f, scratch + per * (size_t)p);
        }
        return;
    }
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if (nt > 1))
    for (int p = 0; p < nt; p++) {
        int lo, hi;
        split_range(rows ? M : N, nt, p, 16, &lo, &hi);
        if (lo >= hi) continue;
        if (rows) {
            const float *a = trans_a ? A + lo : A + (size_t)lo * lda;
            cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                        hi - lo, N, K, alpha, a, lda, B, ldb, beta, C + (size_t)lo * ldc, ldc);
        } else {
            const float *b = trans_b ? B + (size_t)lo * ldb : B + lo;
            cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M,
                        hi - lo, K, alpha, A, lda, b, ldb, beta, C + lo, ldc);
        }
    }
}

static void linear_f32(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K) {
    int rows, nt = gemm_plan(be, M, N, K, &rows);
    if (cpu_use_own_gemm(be)) {
        size_t per = (cpu_sgemm_avx512_scratch() + 15) & ~(size_t)15;
        float *scratch = cpu_scratch(be, per, nt);
        XR_OMP(omp parallel for num_threads(nt) schedule(static) if (nt > 1))
        for (int p = 0; p < nt; p++) {
            int lo, hi;
            split_range(rows ? M : N, nt, p, rows ? 12 : 32, &lo, &hi);
            if (lo >= hi) continue;
            int m0 = rows ? lo : 0, m1 = rows ? hi : M, n0 = rows ? 0 : lo, n1 = rows ? N : hi;
            if (b)
                for (int i = m0; i < m1; i++)
                    memcpy(y + (size_t)i * N + n0, b + n0, (size_t)(n1 - n0) * sizeof(float));
            cpu_sgemm_avx512_nt(m1 - m0, n1 - n0, K, x + (size_t)m0 * K, (size_t)K, W + (size_t)n0 * K, (size_t)K,
                                y + (size_t)m0 * N + n0, (size_t)N, b != NULL, scratch + per * (size_t)p);
        }
        return;
    }
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if (nt > 1))
    for (int p = 0; p < nt; p++) {
        int lo, hi;
        split_range(rows ? M : N, nt, p, 16, &lo, &hi);
        if (lo >= hi) continue;
        int m0 = rows ? lo : 0, m1 = rows ? hi : M, n0 = rows ? 0 : lo, n1 = rows ? N : hi;
        /* the bias is broadcast into this block of y and the GEMM accumulates onto it (beta = 1) while the
         * block is still in cache */
        if (b)
            for (int i = m0; i < m1; i++) memcpy(y + (size_t)i * N + n0, b + n0, (size_t)(n1 - n0) * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m1 - m0, n1 - n0, K, 1.0f, x + (size_t)m0 * K, K,
                    W + (size_t)n0 * K, K, b ? 1.0f : 0.0f, y + (size_t)m0 * N + n0, N);
    }
}

/* With a bf16 working copy (cpu_precision.c) the product reads bf16 operands and accumulates in fp32, as the
 * GPU's bf16 GEMM; the output is stored in the activations' precision. */
void cpu_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K) {
    if (M <= 0 || N <= 0) return;
    if (cpu_pk_live(be)) { cpu_packed_linear(be, y, x, W, b, M, N, K); return; }
    linear_f32(be, y, cpu_gemm_operand(be, x, (size_t)M * K, 0), cpu_gemm_weight(be, W), b, M, N, K);
    cpu_act_store(be, y, (size_t)M * N);
}

void cpu_knn_gemm(Backend *be, float *S, const float *P, int n, const float *Q, int m, int dim, int worker) {
    if (n <= 0 || m <= 0) return;
    /* passages down and queries across: the operand xrank's kernel re-packs per call (W, here the queries) is
     * the small one, and the passages go through its fast row-panel packing */
    if (cpu_use_own_gemm(be)) {
        cpu_sgemm_avx512_nt(n, m, dim, P, (size_t)dim, Q, (size_t)dim, S, (size_t)m, 0, cpu_worker_scratch(be, worker));
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, dim, 1.0f, P, dim, Q, dim, 0.0f, S, m);
}
