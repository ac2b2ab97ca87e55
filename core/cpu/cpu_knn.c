/* cpu_knn.c: the CPU backend's device-search ops (knn_screen, knn_rescore, to_bf16): the reference the CUDA kernels are
 * tested against, and what lets mining's device search driver (mining/knn_device.c) run and be tested without a
 * GPU. The CPU search itself (mining/knn.c) uses knn_gemm; these favour plainness over speed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cpu_ops.h"
#include "bf16_bits.h" /* xr_bf16_bits */
#include "knn_exact.h"

typedef struct {
    float s;
    int64_t i;
} KnnCand;

/* best first: higher score, then real before empty, then smaller index (a fixed order: the CPU reference is
 * deterministic, though the contract lets ties go either way) */
static int knn_cand_cmp(const void *pa, const void *pb) {
    const KnnCand *a = pa, *b = pb;
    if ((a->i < 0) != (b->i < 0)) return a->i < 0 ? 1 : -1;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

void cpu_knn_screen(Backend *be, float *list_s, int64_t *list_i, int kk, const void *Q, int m, const void *P, int n,
                    int64_t base, int dim, int bf16) {
    if (bf16) xr_die("ops_knn_screen: bf16 operands need the CUDA backend (the CPU backend screens in fp32)");
    if (m <= 0 || n <= 0 || kk <= 0) return;
    float *S = cpu_scratch(be, (size_t)m * (size_t)n, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, dim, 1.0f, (const float *)Q, dim, (const float *)P, dim,
                0.0f, S, n);
    XR_OMP(omp parallel num_threads(ops_get_threads(be)) if ((size_t)m * (size_t)n > XR_PAR_MIN)) {
        KnnCand *c = xr_malloc(((size_t)kk + (size_t)n) * sizeof *c);
        XR_OMP(omp for schedule(static))
        for (int q = 0; q < m; q++) {
            float *ls = list_s + (size_t)q * kk;
            int64_t *li = list_i + (size_t)q * kk;
            const float *row = S + (size_t)q * n;
            /* the CUDA kernel's floor rule: with the list full, a tile score enters only above the list's
             * smallest (a tie with it is dropped); with an empty slot left, every tile score enters */
            int full = 1;
            float floor_s = INFINITY;
            for (int j = 0; j < kk; j++) {
                if (li[j] < 0) full = 0;
                else if (ls[j] < floor_s) floor_s = ls[j];
            }
            size_t nc = 0;
            for (int j = 0; j < kk; j++) c[nc++] = (KnnCand){li[j] >= 0 ? ls[j] : -INFINITY, li[j]};
            size_t nl = nc;
            for (int j = 0; j < n; j++)
                if (!full || row[j] > floor_s) c[nc++] = (KnnCand){row[j], base + j};
            if (nc == nl) continue; /* nothing in this tile enters the list */
            qsort(c, nc, sizeof *c, knn_cand_cmp);
            for (int j = 0; j < kk; j++) {
                ls[j] = c[j].i >= 0 ? c[j].s : -INFINITY;
                li[j] = c[j].i;
            }
        }
        free(c);
    }
}

void cpu_knn_rescore(Backend *be, float *out, const int64_t *idx, int kk, const float *Q, int m, const float *P, int n,
                     int64_t base, int dim) {
    XR_OMP(omp parallel for num_threads(ops_get_threads(be)) schedule(static) if ((size_t)m * kk * dim > XR_PAR_MIN))
    for (int q = 0; q < m; q++)
        for (int j = 0; j < kk; j++) {
            int64_t p = idx[(size_t)q * kk + j];
            if (p < base || p >= base + n) continue;
            out[(size_t)q * kk + j] = knn_exact_dot(Q + (size_t)q * dim, P + (size_t)(p - base) * dim, (size_t)dim);
        }
}

void cpu_to_bf16(Backend *be, uint16_t *out, const float *x, size_t n) {
    XR_OMP(omp parallel for num_threads(ops_get_threads(be)) schedule(static) if (n > XR_PAR_MIN))
    for (size_t i = 0; i < n; i++) out[i] = xr_bf16_bits(x[i]);
}
