/* test_cuda_knn.c: exact top-k with the shard on the GPU (mining/knn_device.c over the CUDA backend's
 * knn_screen / knn_rescore) against the CPU search (knn_search): random unit embeddings with planted ties
 * (knn_device_case.h), dims 384 / 768 / 1024, k 1 / 100 / 5000, shards of several tiles, resident and streamed
 * under a memory bound, fp32 and bf16 screening, 1 and 2 "ranks" (two backends on the one GPU, lists merged),
 * k 10,000 (beyond FAISS's GPU limit of 2,048), and k 1,000 of 100,000 with few queries screened again:
 * identical indices and identical score bits (the survivors are rescored exactly, so even bf16 screening
 * reports the CPU's scores). Also the ops alone: knn_rescore bit-equal to the CPU backend's on order-sensitive
 * rows, and to_bf16 bit-equal to the CPU backend's. Skipped (77) without the CUDA backend or a GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "knn_device.h"
#include "ops.h"
#include "testutil.h"

#include "knn_device_case.h"

/* The rescoring kernel alone against the CPU backend's knn_rescore, bit for bit, on rows whose scores depend on
 * the summation order (knn_case_cancel_rows): dims not a multiple of 4 or 32, candidate lists not a multiple of
 * 32 (up to 2,000 per query), -1 entries, indices below and above the tile (left as they were). */
static void rescore_case(Backend *g, Backend *cpu, TuRng *r, int m, int kk, int n, int dim) {
    const int64_t base = 3000;
    float *Q = malloc(sizeof(float) * (size_t)m * dim), *P = malloc(sizeof(float) * (size_t)n * dim);
    knn_case_cancel_rows(r, Q, (size_t)m, P, (size_t)n, (size_t)dim);
    size_t cnt = (size_t)m * kk;
    int64_t *idx = malloc(sizeof(int64_t) * cnt);
    for (size_t i = 0; i < cnt; i++) {
        double u = tu_rng_unit(r);
        int64_t p = base + (int64_t)(tu_rng_unit(r) * n) % n;
        idx[i] = u < 0.05 ? -1 : u < 0.08 ? base - 1 - p % 7 : u < 0.11 ? base + n + p % 7 : p;
    }
    float *want = malloc(sizeof(float) * cnt), *got = malloc(sizeof(float) * cnt);
    for (size_t i = 0; i < cnt; i++) want[i] = got[i] = -1.0f - (float)(i % 5);
    ops_knn_rescore(cpu, want, idx, kk, Q, m, P, n, base, dim);
    float *dQ = ops_alloc(g, sizeof(float) * (size_t)m * dim), *dP = ops_alloc(g, sizeof(float) * (size_t)n * dim);
    float *dO = ops_alloc(g, sizeof(float) * cnt);
    int64_t *dI = ops_alloc(g, sizeof(int64_t) * cnt);
    ops_to_device(g, dQ, Q, sizeof(float) * (size_t)m * dim);
    ops_to_device(g, dP, P, sizeof(float) * (size_t)n * dim);
    ops_to_device(g, dI, idx, sizeof(int64_t) * cnt);
    ops_to_device(g, dO, got, sizeof(float) * cnt);
    ops_knn_rescore(g, dO, dI, kk, dQ, m, dP, n, base, dim);
    ops_to_host(g, got, dO, sizeof(float) * cnt);
    size_t diff = 0, first = cnt;
    for (size_t i = 0; i < cnt; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && diff++ == 0) first = i;
    TU_CHECK(diff == 0,
             "knn_rescore m %d kk %d n %d dim %d: %zu of %zu scores differ in their bits from the CPU backend's "
             "(first: entry %zu, index %lld, %a vs %a)",
             m, kk, n, dim, diff, cnt, first, first < cnt ? (long long)idx[first] : -1LL,
             first < cnt ? got[first] : 0.0f, first < cnt ? want[first] : 0.0f);
    ops_free(g, dQ), ops_free(g, dP), ops_free(g, dO), ops_free(g, dI);
    free(Q), free(P), free(idx), free(want), free(got);
}

static void test_rescore_op(Backend *g, Backend *cpu) {
    TuRng r = {1234};
    const int cases[][4] = {/* m, kk, n, dim */
                            {33, 70, 500, 768},  {5, 2000, 3000, 768}, {17, 1, 40, 1024}, {9, 33, 300, 383},
                            {12, 95, 200, 37},   {3, 31, 50, 5},       {4, 64, 90, 1},    {2, 1000, 5000, 1024},
                            {64, 300, 4000, 384}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        rescore_case(g, cpu, &r, cases[c][0], cases[c][1], cases[c][2], cases[c][3]);
    printf("knn_rescore on the GPU: %zu cases (order-sensitive rows), bit-identical to the CPU backend's\n",
           sizeof cases / sizeof *cases);
}

/* The device's to_bf16 (the bf16 screening operands of a keep32 shard) has the CPU backend's bits. */
static void test_to_bf16_op(Backend *g, Backend *cpu) {
    TuRng r = {555};
    const size_t n = 1000003;
    float *x = knn_case_bf16_values(&r, n);
    uint16_t *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    ops_to_bf16(cpu, want, x, n);
    float *dx = ops_alloc(g, n * sizeof(float));
    uint16_t *db = ops_alloc(g, n * sizeof(uint16_t));
    ops_to_device(g, dx, x, n * sizeof(float));
    ops_to_bf16(g, db, dx, n);
    ops_to_host(g, got, db, n * sizeof(uint16_t));
    size_t diff = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i] && diff++ == 0) first = i;
    TU_CHECK(diff == 0, "to_bf16: %zu of %zu values differ from the CPU backend's (first %a: 0x%04X vs 0x%04X)", diff,
             n, first < n ? x[first] : 0.0f, first < n ? got[first] : 0, first < n ? want[first] : 0);
    printf("to_bf16 on the GPU: %zu values, bit-identical to the CPU backend's\n", n);
    ops_free(g, dx), ops_free(g, db);
    free(x), free(want), free(got);
}

int main(void) {
    if (ops_device_count(XR_DEV_CUDA) < 1) TU_SKIP("no GPU visible (or a build without the CUDA backend)");
    XrErr e;
    Backend *g = ops_backend_create(XR_DEV_CUDA, 0, XR_PREC_FP32, 0, &e);
    if (!g) TU_SKIP("no CUDA backend: %s", e.msg);
    Backend *cpu = ops_backend_cpu(0);
    test_rescore_op(g, cpu);
    test_to_bf16_op(g, cpu);
    TuRng r = {0xC0DA16};
    const size_t dims[] = {384, 768, 1024};
    const int ks[] = {1, 100, 5000};
    for (int di = 0; di < 3; di++)
        for (int ki = 0; ki < 3; ki++)
            for (int bf = 0; bf < 2; bf++) {
                /* 12,000 passages in tiles of 4,096 (k 5000: tiles of 8,192), 96 queries in blocks of 64 */
                KnnDevCase c = {dims[di], 12000, 96, 64, ks[ki] >= 5000 ? 8192 : 4096, 0, ks[ki], -1, bf, 1};
                long bad = knn_device_case(g, &c, &r, "gpu 1 shard");
                TU_CHECK(bad == 0, "dim %zu k %d %s: %ld slots differ from the CPU search", c.dim, c.k,
                         bf ? "bf16" : "fp32", bad);
            }
    /* k beyond FAISS's GPU limit (2,048): 10,000 of 30,000 passages in tiles of 16,384, fp32 and bf16 */
    for (int bf = 0; bf < 2; bf++) {
        KnnDevCase c = {384, 30000, 24, 16, 16384, 0, 10000, -1, bf, 1};
        long bad = knn_device_case(g, &c, &r, "gpu k 10000");
        TU_CHECK(bad == 0, "k 10000 %s: %ld slots differ from the CPU search", bf ? "bf16" : "fp32", bad);
    }
    /* k 1,000 of 100,000 random unit rows (the score gaps near rank 1000 are small: the bench's 10M corpus at
     * k 1000 screened 538 fp32 queries and every bf16 one again with the fixed guard and the worst-case bf16
     * bound), planted ties included (queries 0 and 1 tie with ~2,000 copies: screened again): exact, and the
     * guard / measured bf16 bound make the other re-screens rare */
    for (int bf = 0; bf < 2; bf++) {
        KnnDevCase c = {768, 100000, 256, 64, 65536, 0, 1000, -1, bf, 1};
        long bad = knn_device_case(g, &c, &r, "gpu k 1000 of 100k");
        TU_CHECK(bad == 0, "k 1000 of 100k %s: %ld slots differ from the CPU search", bf ? "bf16" : "fp32", bad);
        TU_CHECK(knn_case_again <= 2 + 256 / 32, "k 1000 of 100k %s: %ld of 256 queries screened again",
                 bf ? "bf16" : "fp32", knn_case_again);
    }
    /* two ranks' shards on the one GPU, lists merged as across ranks (the two-process run on one GPU is the
     * device check's mpirun -np 2 --device cuda); and a shard streamed under a memory bound, on a second backend */
    Backend *g2 = ops_backend_create(XR_DEV_CUDA, 0, XR_PREC_FP32, 0, &e);
    for (int ki = 0; ki < 3 && g2; ki++) {
        KnnDevCase c = {768, 20000, 64, 64, 4096, 0, ks[ki], -1, 0, 2};
        long bad = knn_device_case(g, &c, &r, "gpu 2 shards merged");
        TU_CHECK(bad == 0, "2 shards k %d: %ld slots differ", c.k, bad);
        c.shards = 1;
        c.mem_limit = (size_t)48 << 20; /* 20,000 x 768 fp32 = 58.6 MiB: streamed */
        bad = knn_device_case(g2, &c, &r, "gpu streamed (48 MiB bound)");
        TU_CHECK(bad == 0, "streamed k %d: %ld slots differ", c.k, bad);
    }
    if (g2) ops_backend_free(g2);
    ops_backend_free(cpu);
    ops_backend_free(g);
    return tu_finish("test_cuda_knn");
}
