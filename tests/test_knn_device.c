/* test_knn_device.c: the device search driver (mining/knn_device.c) on the CPU backend's knn_screen /
 * knn_rescore, against the CPU search (knn_search): identical indices and score bits with the passages
 * resident or streamed in tiles, tiles smaller than k + guard, query blocks smaller than the query count, no
 * guard (near-ties force the retry on a longer list), planted exact ties, and the shard split over 2 and 3
 * "ranks" merged with knn_merge_topk; the ops' contract on their own; and the errors (memory bound too small,
 * bf16 on the CPU, a non-finite passage). The same cases on a GPU: test_cuda_knn. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "knn_device.h"
#include "ops.h"
#include "testutil.h"

#include "knn_device_case.h"

static void test_cases(Backend *be) {
    TuRng r = {0x5EED16};
    const KnnDevCase cases[] = {
        /* dim   n   nq max_q tile mem  k guard bf16 shards */
        {64, 700, 37, 37, 4096, 0, 10, 16, 0, 1},
        {64, 700, 37, 8, 100, 0, 10, 16, 0, 1},   /* query blocks of 8, tiles of 100 */
        {64, 700, 37, 16, 50, 0, 1, 0, 0, 1},     /* k 1, no guard: near-ties screened again */
        {96, 900, 20, 20, 64, 0, 100, 0, 0, 1},   /* tile smaller than k */
        {96, 900, 20, 20, 256, 60000, 30, 4, 0, 1}, /* memory bound: streamed tiles */
        {48, 301, 11, 11, 40, 0, 400, 16, 0, 1},  /* k beyond the shard: -1 / -inf slots */
        {64, 700, 37, 37, 128, 0, 25, 16, 0, 2},  /* two ranks */
        {64, 701, 37, 10, 97, 50000, 25, 2, 0, 3}, /* three ranks, streamed */
        {16, 12000, 6, 4, 4096, 0, 10000, 16, 0, 2}, /* k 10,000 over 2 ranks, tiles smaller than k */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char label[64];
        snprintf(label, sizeof label, "cpu backend case %zu", i);
        long bad = knn_device_case(be, &cases[i], &r, label);
        TU_CHECK(bad == 0, "%s: %ld slots differ from knn_search", label, bad);
    }
    /* streamed when the bound says so */
    float P[8 * 4] = {0}, Q[4] = {1, 0, 0, 0};
    for (int j = 0; j < 8; j++) P[j * 4 + j % 4] = 1.0f - 0.1f * j;
    KnnDevOpts o;
    knn_dev_opts_default(&o);
    XrErr e;
    KnnShard *s = knn_shard_create(be, P, 8, 4, 0, 1, 2, &o, &e);
    TU_CHECK(s && knn_shard_resident(s), "8 passages without a bound stay resident");
    knn_shard_free(s);
    o.mem_limit = 300, o.passage_tile = 8; /* lists and queries take 240 bytes: tiles of 3 */
    s = knn_shard_create(be, P, 8, 4, 0, 1, 2, &o, &e);
    TU_CHECK(s && !knn_shard_resident(s) && knn_shard_tile(s) < 8 && knn_shard_bytes(s) <= 300,
             "a 300-byte bound streams (tile %zu, %zu bytes)", s ? knn_shard_tile(s) : 0,
             s ? knn_shard_bytes(s) : 0);
    float sc[2];
    int64_t ix[2];
    TU_CHECK(s && knn_shard_search(s, Q, 1, 2, sc, ix, NULL, &e) == 0 && ix[0] == 0 && ix[1] == 4,
             "streamed top-2: %lld %lld", (long long)ix[0], (long long)ix[1]);
    knn_shard_free(s);
}

static void test_errors(Backend *be) {
    float P[3 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
    KnnDevOpts o;
    knn_dev_opts_default(&o);
    XrErr e = {{0}};
    o.mem_limit = 64;
    TU_CHECK(!knn_shard_create(be, P, 3, 4, 0, 16, 2, &o, &e) && strstr(e.msg, "memory bound") &&
                 strstr(e.msg, "MiB"),
             "tiny bound: \"%s\"", e.msg);
    knn_dev_opts_default(&o);
    o.bf16 = 1;
    TU_CHECK(!knn_shard_create(be, P, 3, 4, 0, 16, 2, &o, &e) && strstr(e.msg, "bf16"), "bf16 on the CPU: \"%s\"",
             e.msg);
    knn_dev_opts_default(&o);
    P[6] = NAN;
    TU_CHECK(!knn_shard_create(be, P, 3, 4, 40, 16, 2, &o, &e) && strstr(e.msg, "passage vector 41"),
             "non-finite passage: \"%s\"", e.msg);
}

/* knn_screen keeps the kk best by screening score, real before empty; knn_rescore writes only its tile's
 * entries, with knn_score's bits */
static void test_ops(Backend *be) {
    const int dim = 5, n = 9, kk = 4;
    float Q[2 * 5], P[9 * 5];
    TuRng r = {77};
    for (int i = 0; i < 2 * dim; i++) Q[i] = (float)(tu_rng_unit(&r) - 0.5);
    for (int i = 0; i < n * dim; i++) P[i] = (float)(tu_rng_unit(&r) - 0.5);
    float ls[2 * 4];
    int64_t li[2 * 4];
    for (int i = 0; i < 2 * kk; i++) ls[i] = -INFINITY, li[i] = -1;
    ops_knn_screen(be, ls, li, kk, Q, 2, P, 2, 100, dim, 0); /* 2 passages: two slots stay empty */
    for (int q = 0; q < 2; q++) {
        int real = 0;
        for (int j = 0; j < kk; j++) real += li[q * kk + j] >= 0;
        TU_CHECK(real == 2, "query %d: %d real entries after a 2-passage tile", q, real);
    }
    ops_knn_screen(be, ls, li, kk, Q, 2, P + 2 * dim, n - 2, 102, dim, 0);
    for (int q = 0; q < 2; q++) {
        float kept_min = INFINITY;
        for (int j = 0; j < kk; j++) {
            TU_CHECK(li[q * kk + j] >= 100 && li[q * kk + j] < 100 + n, "index %lld", (long long)li[q * kk + j]);
            if (ls[q * kk + j] < kept_min) kept_min = ls[q * kk + j];
        }
        for (int p = 0; p < n; p++) {
            int kept = 0;
            for (int j = 0; j < kk; j++) kept |= li[q * kk + j] == 100 + p;
            float s = knn_score(Q + q * dim, P + p * dim, dim);
            if (!kept) TU_CHECK(s <= kept_min + 1e-5f, "dropped passage %d scores %g above kept %g", p, s, kept_min);
        }
    }
    float ex[2 * 4];
    for (int i = 0; i < 2 * kk; i++) ex[i] = 42.0f;
    ops_knn_rescore(be, ex, li, kk, Q, 2, P + 4 * dim, 5, 104, dim); /* passages 104..108 only */
    for (int i = 0; i < 2 * kk; i++) {
        int64_t p = li[i];
        if (p >= 104 && p < 109) {
            float want = knn_score(Q + (i / kk) * dim, P + (p - 100) * dim, dim);
            TU_CHECK(memcmp(&ex[i], &want, sizeof want) == 0, "rescore of %lld: %a vs %a", (long long)p, ex[i], want);
        } else {
            TU_CHECK(ex[i] == 42.0f, "entry %d outside the tile was written", i);
        }
    }
}

int main(void) {
    Backend *be = ops_backend_cpu(2);
    test_ops(be);
    test_cases(be);
    test_errors(be);
    ops_backend_free(be);
    return tu_finish("test_knn_device");
}
