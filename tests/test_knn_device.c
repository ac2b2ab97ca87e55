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
#include "knn_exact.h" /* knn_exact_dot / knn_exact_acc: the chunked order against the whole */
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
        /* 34.2 MiB resident: the upload through two 32 MiB staging buffers (knn_device.c) takes 2 chunks, and
         * the top 2,000 of each query hold passages of both */
        {128, 70000, 6, 6, 65536, 0, 2000, 16, 0, 1},
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

/* knn_exact_acc over consecutive chunks of 32 (how the CUDA knn_rescore kernel sums its staged rows) gives
 * knn_exact_dot's bits for every dim, on rows where the order matters: summed in one running double instead,
 * most of the same scores differ (so a kernel in another order could not pass test_cuda_knn). */
static void test_exact_chunks(void) {
    TuRng r = {4242};
    const size_t dims[] = {1, 3, 4, 5, 8, 31, 33, 37, 64, 383, 384, 766, 768, 1024};
    const size_t nq = 3, np = 40;
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
        const size_t dim = dims[di], dim4 = dim & ~(size_t)3;
        float *q = malloc(nq * dim * sizeof(float)), *p = malloc(np * dim * sizeof(float));
        knn_case_cancel_rows(&r, q, nq, p, np, dim);
        int bad = 0, other = 0;
        for (size_t a = 0; a < nq; a++)
            for (size_t b = 0; b < np; b++) {
                const float *qa = q + a * dim, *pb = p + b * dim;
                float want = knn_exact_dot(qa, pb, dim);
                double acc[4] = {0, 0, 0, 0}, one = 0;
                for (size_t d0 = 0; d0 < dim; d0 += 32)
                    knn_exact_acc(acc, qa + d0, pb + d0, d0, dim - d0 < 32 ? dim - d0 : 32, dim4);
                float got = knn_exact_finish(acc);
                bad += memcmp(&got, &want, sizeof got) != 0;
                for (size_t i = 0; i < dim; i++) one += (double)qa[i] * (double)pb[i];
                float alt = (float)one;
                other += memcmp(&alt, &want, sizeof alt) != 0;
            }
        TU_CHECK(bad == 0, "dim %zu: %d of %zu chunked exact scores differ from knn_exact_dot", dim, bad, nq * np);
        if (dim >= 64)
            TU_CHECK(other * 2 > (int)(nq * np), "dim %zu: only %d of %zu scores depend on the order; the data "
                     "cannot tell the orders apart", dim, other, nq * np);
        if (dim == 768) printf("exact chunks, dim 768: %d of %zu scores bit-equal; %d differ when summed in one double\n",
                               (int)(nq * np) - bad, nq * np, other);
        free(q), free(p);
    }
}

/* ops_to_bf16 (the CPU backend's) rounds to nearest with ties to even: known words for ties, near-ties,
 * subnormals and overflow, and for random values the nearest of the two bf16 neighbours (ties: the even one). */
static void test_to_bf16(Backend *be) {
    TuRng r = {99};
    const size_t n = 100000;
    float *x = knn_case_bf16_values(&r, n);
    uint16_t *b = malloc(n * sizeof *b);
    ops_to_bf16(be, b, x, n);
    const uint16_t want[] = {0x3F80, 0x3F82, 0xBF80, 0xBF82, 0x3F80, 0x3F81, 0x3F81, 0x3F82, 0x0000, 0x0000,
                             0x0002, 0x0080, 0x8000, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x7F7F, 0x7F80, 0x3F80, 0x0080,
                             0x4B80};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        TU_CHECK(b[i] == want[i], "to_bf16 of %a: 0x%04X, want 0x%04X", x[i], b[i], want[i]);
    size_t bad = 0;
    for (size_t i = sizeof want / sizeof *want; i < n; i++) {
        uint32_t u, lo, hi;
        memcpy(&u, &x[i], 4);
        lo = u & 0xFFFF0000u, hi = lo + 0x10000u;
        float flo, fhi;
        memcpy(&flo, &lo, 4), memcpy(&fhi, &hi, 4);
        /* past the largest bf16 the upper neighbour is 2^128 (IEEE: round as if unbounded, then overflow) */
        double vhi = (hi & 0x7F800000u) == 0x7F800000u ? copysign(ldexp(1.0, 128), (double)x[i]) : (double)fhi;
        double dlo = fabs((double)x[i] - flo), dhi = fabs(vhi - x[i]);
        uint32_t w = dlo < dhi ? lo : dhi < dlo ? hi : ((lo >> 16) & 1u) ? hi : lo, g = (uint32_t)b[i] << 16;
        if ((w & 0x7F800000u) == 0x7F800000u) w &= 0xFF800000u; /* rounded up to inf */
        bad += g != w;
    }
    TU_CHECK(bad == 0, "to_bf16: %zu of %zu random values not rounded to the nearest (ties even)", bad, n);
    free(x), free(b);
}

/* The CUDA selection kernel's algorithm (core/cuda/knn_search.cu, k_knn_select) run on the host one element at
 * a time, for the cases a GPU-less machine can still check: the floor filter (the query's running threshold),
 * with the tile elements above it compacted when at most `cap` pass (the kernel's KNN_CAND_CAP, in the order the
 * kernel's warps may append them: here reversed, to differ from the row order) or the row read in full, four
 * 8-bit radix passes to the kk-th largest key T, then every key above T and as many equal to T as slots remain. It
 * must keep kk entries, real before empty, none twice, and drop nothing that scores above something it keeps. (A
 * stand-in: the kernel's own code runs in test_cuda_knn on a GPU.) */
static uint32_t emu_key(float s) {
    uint32_t u;
    memcpy(&u, &s, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static void emu_select(const float *row, int n, int64_t base, const float *ls, const int64_t *li, int kk, float *os,
                       int64_t *oi, int cap) {
    uint32_t floor_key = 0xFFFFFFFFu;
    for (int e = 0; e < kk; e++) {
        uint32_t k = li[e] < 0 ? 0u : emu_key(ls[e]);
        floor_key = k < floor_key ? k : floor_key;
    }
    int above = 0;
    uint32_t *ck = malloc(sizeof(uint32_t) * (size_t)(n + 1));
    int *cp = malloc(sizeof(int) * (size_t)(n + 1));
    for (int j = n - 1; j >= 0; j--) /* appended in an order of their own */
        if (emu_key(row[j]) > floor_key) {
            if (above < cap) ck[above] = emu_key(row[j]), cp[above] = j;
            above++;
        }
    if (!above) {
        memcpy(os, ls, sizeof(float) * (size_t)kk), memcpy(oi, li, sizeof(int64_t) * (size_t)kk);
        free(ck), free(cp);
        return;
    }
    const int compact = above <= cap, total = kk + (compact ? above : n);
    uint32_t *key = malloc(sizeof(uint32_t) * (size_t)total);
    int *pos = malloc(sizeof(int) * (size_t)total), *in = malloc(sizeof(int) * (size_t)total);
    for (int e = 0; e < total; e++) { /* knn_elem */
        if (e < kk) key[e] = li[e] < 0 ? 0u : emu_key(ls[e]), pos[e] = -1, in[e] = 1;
        else if (compact) key[e] = ck[e - kk], pos[e] = cp[e - kk], in[e] = 1;
        else pos[e] = e - kk, key[e] = emu_key(row[e - kk]), in[e] = key[e] > floor_key;
    }
    uint32_t prefix = 0, mask = 0;
    int remaining = kk;
    for (int shift = 24; shift >= 0; shift -= 8) {
        unsigned hist[256] = {0};
        for (int e = 0; e < total; e++) {
            if (!in[e]) continue;
            if ((key[e] & mask) == prefix) hist[(key[e] >> shift) & 255u]++;
        }
        int b = 255;
        unsigned cum = 0;
        for (; b > 0; b--) {
            if (cum + hist[b] >= (unsigned)remaining) break;
            cum += hist[b];
        }
        remaining -= (int)cum;
        prefix |= (uint32_t)b << shift;
        mask |= 255u << shift;
    }
    const int take_gt = kk - remaining;
    int gt = 0, eq = 0;
    for (int e = 0; e < total; e++) {
        if (!in[e]) continue;
        int slot;
        if (key[e] > prefix) slot = gt++;
        else if (key[e] == prefix) {
            slot = take_gt + eq++;
            if (slot >= kk) continue;
        } else continue;
        TU_CHECK(slot < kk, "slot %d of %d", slot, kk);
        if (slot >= kk) break;
        os[slot] = pos[e] < 0 ? (li[e] < 0 ? -INFINITY : ls[e]) : row[pos[e]];
        oi[slot] = pos[e] < 0 ? li[e] : base + pos[e];
    }
    TU_CHECK(gt == take_gt, "%d keys above T, %d expected", gt, take_gt);
    free(key), free(pos), free(in), free(ck), free(cp);
}

static void test_select_algorithm(void) {
    TuRng r = {0x5E1EC7};
    long cases = 0;
    for (int it = 0; it < 400; it++) {
        int kk = 1 + (int)(tu_rng_unit(&r) * 40), n = 1 + (int)(tu_rng_unit(&r) * 90);
        int levels = 1 + (int)(tu_rng_unit(&r) * 6); /* few distinct scores: ties everywhere */
        float *ls = malloc(sizeof(float) * (size_t)kk), *row = malloc(sizeof(float) * (size_t)n);
        int64_t *li = malloc(sizeof(int64_t) * (size_t)kk);
        float *os = malloc(sizeof(float) * (size_t)kk);
        int64_t *oi = malloc(sizeof(int64_t) * (size_t)kk);
        int empty = (int)(tu_rng_unit(&r) * (kk + 1)) * (it % 3 == 0); /* some lists partly empty */
        for (int j = 0; j < kk; j++) {
            li[j] = j < kk - empty ? j : -1;
            ls[j] = li[j] < 0 ? -INFINITY : (float)((int)(tu_rng_unit(&r) * levels) - 2) * 0.25f;
        }
        for (int j = 0; j < n; j++) {
            int lv = (int)(tu_rng_unit(&r) * levels) - 2;
            row[j] = lv == 0 && j % 2 ? -0.0f : (float)lv * 0.25f; /* -0 and +0 both */
        }
        int cap = it % 4 == 0 ? 0 : it % 4 == 1 ? 3 : it % 4 == 2 ? 30 : 2048; /* full reads, both, compacted */
        emu_select(row, n, 1000, ls, li, kk, os, oi, cap);
        /* kk entries, real before empty counted, none twice, the dropped no better than the kept */
        int real = 0, dup = 0;
        float kept_min = INFINITY;
        for (int j = 0; j < kk; j++) {
            if (oi[j] < 0) continue;
            real++;
            if (os[j] < kept_min) kept_min = os[j];
            for (int u = 0; u < j; u++) dup += oi[u] == oi[j];
        }
        int avail = (kk - empty) + n;
        TU_CHECK(dup == 0, "case %d: %d duplicates", it, dup);
        TU_CHECK(real == (avail < kk ? avail : kk), "case %d: %d real entries, %d available, kk %d", it, real, avail, kk);
        for (int j = 0; j < kk + n; j++) {
            int64_t id = j < kk ? li[j] : 1000 + (j - kk);
            if (id < 0) continue;
            float sc = j < kk ? ls[j] : row[j - kk];
            int kept = 0;
            for (int u = 0; u < kk; u++) kept |= oi[u] == id;
            if (!kept) TU_CHECK(sc <= kept_min, "case %d: dropped %lld scores %g above the kept %g", it, (long long)id, sc, kept_min);
        }
        cases++;
        free(ls), free(row), free(li), free(os), free(oi);
    }
    printf("the CUDA selection algorithm on the host: %ld tie-heavy cases keep kk, real first, none dropped above a kept\n",
           cases);
}

/* bf16 round to nearest even, as the search's host conversion */
static double b16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* knn_dev_bound's bf16 operand term against the measured |q'.p' - q.p| (exact in double for these sizes'
 * purposes: the products of bf16 values are exact and a 768-term double sum errs by < 1e-13), on random unit
 * vectors and on adversarial ones (every element just below a rounding midpoint, signs aligned); and how much
 * tighter it is than the worst case 2^-6 |q| |p| used before (the reason bf16 k 1000 screened every query
 * again on the H200). */
static void test_bf16_bound(void) {
    TuRng r = {0xB16B};
    const size_t dim = 768, n = 400;
    float *P = tu_rng_vec(&r, n * dim, 1.0f), *Q = tu_rng_vec(&r, 8 * dim, 1.0f);
    for (size_t i = 0; i < dim; i++) { /* row 0: all elements at 1 + 2^-8 - 2^-20 (rounds down by ~2^-8) */
        P[i] = 1.0f + 1.0f / 256 - 1.0f / 1048576;
        Q[i] = 1.0f + 1.0f / 256 - 1.0f / 1048576;
    }
    double pmax = 0, pmax16 = 0, dpmax = 0, worst = 0, ratio_max = 0;
    for (size_t j = 0; j < n; j++) {
        double a = 0, b = 0, d = 0;
        for (size_t i = 0; i < dim; i++) {
            double v = P[j * dim + i], v16 = b16(P[j * dim + i]);
            a += v * v, b += v16 * v16, d += (v16 - v) * (v16 - v);
        }
        pmax = fmax(pmax, sqrt(a)), pmax16 = fmax(pmax16, sqrt(b)), dpmax = fmax(dpmax, sqrt(d));
    }
    double tighter = 0;
    for (size_t q = 0; q < 8; q++) {
        double qn = 0, qn16 = 0, dq = 0;
        for (size_t i = 0; i < dim; i++) {
            double v = Q[q * dim + i], v16 = b16(Q[q * dim + i]);
            qn += v * v, qn16 += v16 * v16, dq += (v16 - v) * (v16 - v);
        }
        qn = sqrt(qn), qn16 = sqrt(qn16), dq = sqrt(dq);
        double bound = knn_dev_bound(dim, qn, pmax, 1, qn16, dq, pmax16, dpmax, 0, 0);
        for (size_t j = 0; j < n; j++) {
            double exact = 0, rounded = 0;
            for (size_t i = 0; i < dim; i++) {
                exact += (double)Q[q * dim + i] * P[j * dim + i];
                rounded += b16(Q[q * dim + i]) * b16(P[j * dim + i]);
            }
            double err = fabs(rounded - exact);
            TU_CHECK(err <= bound, "query %zu passage %zu: bf16 operands err %g above the bound %g", q, j, err, bound);
            worst = fmax(worst, err);
            ratio_max = fmax(ratio_max, err / bound);
        }
        if (q > 0) tighter = fmax(tighter, bound / (4.0 / 256 * qn * pmax)); /* random rows only */
    }
    TU_CHECK(ratio_max > 0.5, "the adversarial row comes close to the bound (%.2f of it)", ratio_max);
    TU_CHECK(tighter < 0.5, "random unit rows: the measured bound is %.2f of the old 2^-6 |q| |p|", tighter);
    printf("bf16 bound: holds on %zu pairs (worst measured %.3g, %.2f of its bound on the adversarial row); random "
           "rows get %.2f of the old 2^-6 |q| max|p|\n",
           8 * n, worst, ratio_max, tighter);
    free(P), free(Q);
}

/* knn_dev_grow on lists cut from a sorted score sequence with a smooth density: the length it asks for covers the
 * threshold (all scores >= t), without asking for far more than needed */
static void test_grow(void) {
    TuRng r = {0x6207};
    const size_t N = 200000;
    float *all = malloc(N * sizeof *all), *tmp = malloc(N * sizeof *tmp);
    for (size_t i = 0; i < N; i++) all[i] = (float)(1.0 - sqrt((double)i / N)); /* density grows downwards */
    int covered = 0, tries = 0;
    for (int it = 0; it < 40; it++) {
        size_t k = 10 + (size_t)(tu_rng_unit(&r) * 900), kk = k + 1 + (size_t)(tu_rng_unit(&r) * k);
        /* the threshold lies this deep (a density that grows from 0 at the top, as this one, is extrapolated short
         * beyond ~3 kk: one more retry, never a wrong answer) */
        double need_rank = (double)kk * (1.2 + tu_rng_unit(&r) * 1.8);
        double t = all[(size_t)need_rank];
        size_t g = knn_dev_grow(all, kk, k, kk, t, tmp);
        size_t at = g < N ? g : N - 1;
        tries++;
        covered += all[at - 1] <= t || g >= 16 * kk;
        TU_CHECK(g <= 16 * kk && g >= kk + kk / 4, "grow %zu from kk %zu", g, kk);
        TU_CHECK(g < 4 * need_rank + 64, "grow %zu for a threshold at rank %.0f", g, need_rank);
    }
    TU_CHECK(covered == tries, "the grown list reaches the threshold in %d of %d lists", covered, tries);
    float ties[50];
    for (int i = 0; i < 50; i++) ties[i] = 0.5f;
    TU_CHECK(knn_dev_grow(ties, 50, 10, 50, 0.4, tmp) == 200, "all tied: four times the list");
    TU_CHECK(knn_dev_guard(-1, 1000, 0) == 47 && knn_dev_guard(-1, 100, 1) == 100 && knn_dev_guard(5, 1000, 1) == 5,
             "default guards");
    printf("knn_dev_grow: %d of %d lists grown past their threshold\n", covered, tries);
    free(all), free(tmp);
}

/* A guard far too short for the data (0, k 200 of 20,000 near-uniform scores): the first block's queries fail,
 * the rest of the pass learns the longer list, so few queries are screened again; and the answer is exact. */
static void test_adaptive(Backend *be) {
    TuRng r = {0xADA};
    KnnDevCase c = {32, 20000, 256, 16, 4096, 0, 200, 0, 0, 1};
    long bad = knn_device_case(be, &c, &r, "cpu guard 0, k 200");
    TU_CHECK(bad == 0, "guard 0: %ld slots differ", bad);
    TU_CHECK(knn_case_again > 0 && knn_case_again <= 16 + 8, "guard 0: %ld of 256 queries screened again (the "
             "first block of 16, then the learned list)", knn_case_again);
}

int main(void) {
    Backend *be = ops_backend_cpu(2);
    test_bf16_bound();
    test_grow();
    test_adaptive(be);
    test_select_algorithm();
    test_exact_chunks();
    test_to_bf16(be);
    test_ops(be);
    test_cases(be);
    test_errors(be);
    ops_backend_free(be);
    return tu_finish("test_knn_device");
}
