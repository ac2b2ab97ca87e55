/* test_knn.c: mining/knn against a brute-force loop on random embeddings with planted exact ties (duplicate
 * passages), for many tile shapes, guards and thread counts, k > P, and sharded search + merge == unsharded. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "knn.h"
#include "testutil.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void random_unit_rows(float *x, size_t rows, size_t dim) {
    for (size_t r = 0; r < rows; r++) {
        double n = 0;
        for (size_t i = 0; i < dim; i++) {
            x[r * dim + i] = (float)(urand() * 2 - 1);
            n += (double)x[r * dim + i] * x[r * dim + i];
        }
        for (size_t i = 0; i < dim; i++) x[r * dim + i] = (float)(x[r * dim + i] / sqrt(n));
    }
}

enum { NQ = 61, NP = 900, DIM = 37 };

static float *Q, *P;

static void make_data(void) {
    Q = malloc((size_t)NQ * DIM * sizeof *Q);
    P = malloc((size_t)NP * DIM * sizeof *P);
    random_unit_rows(Q, NQ, DIM);
    random_unit_rows(P, NP, DIM);
    /* exact ties: copies of passages at other indices (a few pairs, and 40 copies of one row) */
    for (int c = 0; c < 60; c++) {
        int src = (int)(urand() * NP), dst = (int)(urand() * NP);
        memcpy(P + (size_t)dst * DIM, P + (size_t)src * DIM, DIM * sizeof *P);
    }
    for (int c = 0; c < 40; c++) memcpy(P + (size_t)(100 + 17 * c) * DIM, P + 5 * DIM, DIM * sizeof *P);
    /* queries 0..2 sit right on passage 5, so its 41 copies fill their top ranks: more ties than any guard */
    for (int a = 0; a < 3; a++) memcpy(Q + (size_t)a * DIM, P + 5 * DIM, DIM * sizeof *Q);
    /* a query equal to a passage that has a single copy */
    memcpy(Q + 3 * DIM, P + 7 * DIM, DIM * sizeof *Q);
}

static void test_against_brute_force(void) {
    const int ks[] = {1, 10, 50};
    const size_t qblocks[] = {1, 7, 256}, tiles[] = {1, 13, 64, 4096};
    const int guards[] = {0, 3, 16};
    int64_t exhaustive_total = 0, exhaustive_g16 = 0;
    size_t configs = 0;
    for (size_t ki = 0; ki < 3; ki++) {
        int k = ks[ki];
        float *want_s = malloc((size_t)NQ * k * sizeof(float)), *got_s = malloc((size_t)NQ * k * sizeof(float));
        int64_t *want_i = malloc((size_t)NQ * k * sizeof(int64_t)), *got_i = malloc((size_t)NQ * k * sizeof(int64_t));
        tu_knn_brute_force(Q, NQ, P, NP, DIM, 0, k, want_s, want_i);
        for (size_t a = 0; a < 3; a++)
            for (size_t b = 0; b < 4; b++)
                for (size_t g = 0; g < 3; g++) {
                    KnnOpts o = {qblocks[a], tiles[b], guards[g]};
                    KnnStats st;
                    XrErr e;
                    int rc = knn_search(Q, NQ, P, NP, DIM, 0, k, &o, got_s, got_i, &st, &e);
                    TU_CHECK(rc == 0, "knn_search: %s", e.msg);
                    size_t d = tu_topk_diff(got_s, got_i, want_s, want_i, (size_t)NQ * k);
                    TU_CHECK(d == 0, "k=%d qblock=%zu tile=%zu guard=%d: %zu of %d slots differ from brute force", k,
                             o.query_block, o.passage_tile, o.guard, d, NQ * k);
                    exhaustive_total += st.n_exhaustive;
                    if (guards[g] == 16) exhaustive_g16 += st.n_exhaustive;
                    configs++;
                }
        /* the planted ties really are ties, ordered by index */
        if (k >= 10) {
            TU_CHECK(want_i[0] == 5 && want_i[1] == 100 && want_i[2] == 117, "ties by index: %lld %lld %lld",
                     (long long)want_i[0], (long long)want_i[1], (long long)want_i[2]);
            if (k <= 41)
                TU_CHECK(want_s[0] == want_s[k - 1], "query 0: its top %d should all be copies of passage 5", k);
        }
        free(want_s), free(got_s), free(want_i), free(got_i);
    }
    /* the exhaustive path must have been taken (planted 41-way ties exceed every guard) and be rare otherwise */
    TU_CHECK(exhaustive_total > 0, "exhaustive re-search never exercised");
    printf("brute force: %zu configurations identical (scores bitwise, indices); exhaustive re-search taken %lld "
           "times in all, %lld with guard 16\n",
           configs, (long long)exhaustive_total, (long long)exhaustive_g16);
}

static void test_k_larger_than_p(void) {
    enum { SMALL = 6, K = 10 };
    float s[NQ * K], ws[NQ * K];
    int64_t ix[NQ * K], wi[NQ * K];
    XrErr e;
    KnnOpts o;
    knn_opts_default(&o);
    TU_CHECK(knn_search(Q, NQ, P + 40 * DIM, SMALL, DIM, 1000, K, &o, s, ix, NULL, &e) == 0, "%s", e.msg);
    tu_knn_brute_force(Q, NQ, P + 40 * DIM, SMALL, DIM, 1000, K, ws, wi);
    TU_CHECK(tu_topk_diff(s, ix, ws, wi, NQ * K) == 0, "k > P differs");
    int pads_ok = 1;
    for (int a = 0; a < NQ; a++)
        for (int j = 0; j < K; j++) {
            int pad = j >= SMALL;
            if (pad != (ix[a * K + j] == -1) || (pad && !(isinf(s[a * K + j]) && s[a * K + j] < 0))) pads_ok = 0;
            if (!pad && (ix[a * K + j] < 1000 || ix[a * K + j] >= 1000 + SMALL)) pads_ok = 0;
        }
    TU_CHECK(pads_ok, "slots past P must be (-1, -inf), real ones carry the global offset");
    /* an empty shard gives only pads */
    TU_CHECK(knn_search(Q, 2, P, 0, DIM, 0, 3, &o, s, ix, NULL, &e) == 0, "%s", e.msg);
    TU_CHECK(ix[0] == -1 && ix[5] == -1 && isinf(s[0]), "empty shard");
}

static void test_shards_merge(void) {
    enum { K = 25 };
    static float whole_s[NQ * K], parts_s[4][NQ * K], merged_s[NQ * K];
    static int64_t whole_i[NQ * K], parts_i[4][NQ * K], merged_i[NQ * K];
    XrErr e;
    KnnOpts o;
    knn_opts_default(&o);
    TU_CHECK(knn_search(Q, NQ, P, NP, DIM, 0, K, &o, whole_s, whole_i, NULL, &e) == 0, "%s", e.msg);
    /* uneven shards, including one smaller than k, each with its own tiling */
    const size_t bounds[][5] = {{0, 450, NP, 0, 0}, {0, 13, 400, NP, 0}, {0, 300, 311, 700, NP}};
    const size_t nshards[] = {2, 3, 4};
    for (int t = 0; t < 3; t++) {
        size_t ns = nshards[t];
        for (size_t sh = 0; sh < ns; sh++) {
            size_t lo = bounds[t][sh], hi = bounds[t][sh + 1];
            KnnOpts os = {(size_t)(5 + 3 * sh), (size_t)(11 + 50 * sh), (int)(sh * 7)};
            TU_CHECK(knn_search(Q, NQ, P + lo * DIM, hi - lo, DIM, (int64_t)lo, K, &os, parts_s[sh], parts_i[sh],
                                NULL, &e) == 0,
                     "%s", e.msg);
        }
        /* pack as an MPI gather would: [shard][query][k] */
        float *gs = malloc(ns * NQ * K * sizeof *gs);
        int64_t *gi = malloc(ns * NQ * K * sizeof *gi);
        for (size_t sh = 0; sh < ns; sh++) {
            memcpy(gs + sh * NQ * K, parts_s[sh], sizeof parts_s[sh]);
            memcpy(gi + sh * NQ * K, parts_i[sh], sizeof parts_i[sh]);
        }
        knn_merge_topk(NQ, K, ns, gs, gi, merged_s, merged_i);
        size_t d = tu_topk_diff(merged_s, merged_i, whole_s, whole_i, NQ * K);
        TU_CHECK(d == 0, "%zu shards: merged differs from unsharded in %zu slots", ns, d);
        free(gs), free(gi);
    }
    /* merging one list is the identity; merging a list with an all-empty list too */
    knn_merge_topk(NQ, K, 1, whole_s, whole_i, merged_s, merged_i);
    TU_CHECK(tu_topk_diff(merged_s, merged_i, whole_s, whole_i, NQ * K) == 0, "merge of one list");
    float *gs = malloc(2 * NQ * K * sizeof *gs);
    int64_t *gi = malloc(2 * NQ * K * sizeof *gi);
    for (size_t j = 0; j < NQ * K; j++) gs[j] = -INFINITY, gi[j] = -1;
    memcpy(gs + NQ * K, whole_s, sizeof whole_s);
    memcpy(gi + NQ * K, whole_i, sizeof whole_i);
    knn_merge_topk(NQ, K, 2, gs, gi, merged_s, merged_i);
    TU_CHECK(tu_topk_diff(merged_s, merged_i, whole_s, whole_i, NQ * K) == 0, "merge with an empty list");
    free(gs), free(gi);
    printf("shards: 2, 3 and 4 uneven shards (one smaller than k) merged == unsharded, k=%d\n", K);
}

static void test_threads(void) {
#ifdef _OPENMP
    enum { K = 20 };
    static float s1[NQ * K], s2[NQ * K];
    static int64_t i1[NQ * K], i2[NQ * K];
    XrErr e;
    KnnOpts o = {8, 100, 4};
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    knn_search(Q, NQ, P, NP, DIM, 0, K, &o, s1, i1, NULL, &e);
    omp_set_num_threads(3);
    knn_search(Q, NQ, P, NP, DIM, 0, K, &o, s2, i2, NULL, &e);
    omp_set_num_threads(saved);
    TU_CHECK(tu_topk_diff(s1, i1, s2, i2, NQ * K) == 0, "1 thread and 3 threads differ");
    printf("threads: 1 and 3 OpenMP threads identical\n");
#endif
}

static void test_errors(void) {
    float s[4];
    int64_t ix[4];
    XrErr e;
    TU_CHECK(knn_search(Q, 1, P, NP, DIM, 0, 0, NULL, s, ix, NULL, &e) == -1, "k=0 accepted");
    TU_CHECK(knn_search(Q, 1, P, NP, 0, 0, 1, NULL, s, ix, NULL, &e) == -1, "dim=0 accepted");
    float *bad = malloc(10 * DIM * sizeof *bad);
    memcpy(bad, P, 10 * DIM * sizeof *bad);
    bad[7 * DIM + 3] = NAN;
    TU_CHECK(knn_search(Q, 1, bad, 10, DIM, 500, 2, NULL, s, ix, NULL, &e) == -1 && strstr(e.msg, "passage vector 507"),
             "NaN passage: %s", e.msg);
    free(bad);
}

int main(void) {
    make_data();
    test_against_brute_force();
    test_k_larger_than_p();
    test_shards_merge();
    test_threads();
    test_errors();
    free(Q), free(P);
    return tu_finish("test_knn");
}
