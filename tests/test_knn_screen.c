/* test_knn_screen.c: knn_search's two screening GEMMs (OpenBLAS and xrank's AVX-512 kernel, chosen by the CPU
 * backend's rule, forced here with $XR_CPU_GEMM) and its vectorised top-k screen give the brute-force top-k
 * exactly, on rows long enough for the 64-wide screen and its tails, with planted ties, odd dims and tiles. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "knn.h"
#include "ops.h"
#include "testutil.h"

enum { NQ = 50, NP = 3001, DIM = 100 };

int main(void) {
    TuRng rng = {0x5DEECE66Dull};
    float *Q = tu_rng_vec(&rng, (size_t)NQ * DIM, 1.0f), *P = tu_rng_vec(&rng, (size_t)NP * DIM, 1.0f);
    /* unit rows, as mined embeddings are */
    for (size_t r = 0; r < NQ + NP; r++) {
        float *x = r < NQ ? Q + r * DIM : P + (r - NQ) * DIM;
        double n = 0;
        for (int i = 0; i < DIM; i++) n += (double)x[i] * x[i];
        for (int i = 0; i < DIM; i++) x[i] = (float)(x[i] / sqrt(n));
    }
    /* ties: 30 copies of passage 7 spread over the shard (some in the last, partial 64-score group), queries 0
     * and 1 on it; query 2 near it */
    for (int c = 0; c < 30; c++) memcpy(P + (size_t)(100 + 97 * c) * DIM, P + 7 * DIM, DIM * sizeof *P);
    memcpy(Q, P + 7 * DIM, DIM * sizeof *Q);
    memcpy(Q + DIM, P + 7 * DIM, DIM * sizeof *Q);
    for (int i = 0; i < DIM; i++) Q[2 * DIM + i] = P[7 * DIM + i] + (i % 2 ? 1e-4f : -1e-4f);

    const char *gemms[] = {"openblas", "avx512"};
    const int ks[] = {1, 10, 40};
    const KnnOpts opts[] = {{256, 4096, 16}, {30, 1000, 16}, {13, 77, 0}, {1, 64, 5}};
    int threads[] = {1, 2, 3};
    Backend *probe = ops_backend_cpu(1);
    size_t runs = 0;
    int64_t exhaustive = 0;
    for (int g = 0; g < 2; g++) {
        setenv("XR_CPU_GEMM", gemms[g], 1);
        ops_backend_free(probe);
        probe = ops_backend_cpu(1);
        const char *kernel = ops_cpu_gemm_kernel(probe);
        if (g == 1 && strcmp(kernel, "xrank-avx512") != 0) {
            printf("no AVX-512: xrank's kernel not available, OpenBLAS screen only\n");
            break;
        }
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            int k = ks[ki];
            size_t n = (size_t)NQ * k;
            float *want_s = malloc(n * sizeof(float)), *got_s = malloc(n * sizeof(float));
            int64_t *want_i = malloc(n * sizeof(int64_t)), *got_i = malloc(n * sizeof(int64_t));
            tu_knn_brute_force(Q, NQ, P, NP, DIM, 1000, k, want_s, want_i);
            for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++)
                for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
#ifdef _OPENMP
                    omp_set_num_threads(threads[t]);
#endif
                    KnnStats st;
                    XrErr e;
                    TU_CHECK(knn_search(Q, NQ, P, NP, DIM, 1000, k, &opts[o], got_s, got_i, &st, &e) == 0, "%s",
                             e.msg);
                    size_t d = tu_topk_diff(got_s, got_i, want_s, want_i, n);
                    TU_CHECK(d == 0, "%s screen, k=%d qblock=%zu tile=%zu guard=%d threads=%d: %zu of %zu slots differ",
                             kernel, k, opts[o].query_block, opts[o].passage_tile, opts[o].guard, threads[t], d, n);
                    exhaustive += st.n_exhaustive;
                    runs++;
                }
            if (k >= 10) /* queries 0 and 1: passage 7 and its 30 copies first, by index */
                TU_CHECK(want_i[0] == 1007 && want_i[1] == 1100 && want_i[k] == 1007 &&
                             want_s[0] == want_s[(k < 31 ? k : 31) - 1] && (k <= 31 || want_s[31] < want_s[0]),
                         "planted ties: %lld %lld", (long long)want_i[0], (long long)want_i[1]);
            free(want_s), free(got_s), free(want_i), free(got_i);
        }
        printf("%s screen: identical to brute force\n", kernel);
    }
    ops_backend_free(probe);
    unsetenv("XR_CPU_GEMM");
    TU_CHECK(exhaustive > 0, "exhaustive re-search never exercised");
    printf("%zu searches identical to brute force (scores bitwise, indices); exhaustive re-search %lld times\n", runs,
           (long long)exhaustive);
    free(Q), free(P);
    return tu_finish("test_knn_screen");
}
