/* knn_device_case.h: one case of the device search (mining/knn_device.h) against the CPU search (knn_search) on
 * random unit embeddings with planted ties, shared by test_knn_device (the CPU backend) and test_cuda_knn (a
 * GPU). Include after testutil.h and knn_device.h. */
#ifndef XR_KNN_DEVICE_CASE_H
#define XR_KNN_DEVICE_CASE_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t dim, n, nq, max_q, tile, mem_limit;
    int k, guard, bf16, shards; /* shards: the passages split over this many KnnShards (ranks), lists merged */
} KnnDevCase;

/* Unit rows with planted ties: exact copies of passages (score ties broken by index), passages one ulp away
 * from another (near-ties inside the screening's rounding), and queries equal to a passage with many copies. */
static void knn_case_data(TuRng *r, const KnnDevCase *c, float **Q, float **P) {
    size_t d = c->dim;
    *Q = tu_rng_vec(r, c->nq * d, 1.0f);
    *P = tu_rng_vec(r, c->n * d, 1.0f);
    float *rows[2] = {*Q, *P};
    size_t cnt[2] = {c->nq, c->n};
    for (int w = 0; w < 2; w++)
        for (size_t i = 0; i < cnt[w]; i++) {
            double s = 0;
            for (size_t j = 0; j < d; j++) s += (double)rows[w][i * d + j] * rows[w][i * d + j];
            for (size_t j = 0; j < d; j++) rows[w][i * d + j] = (float)(rows[w][i * d + j] / sqrt(s));
        }
    float *p = *P, *q = *Q;
    size_t copies = c->n / 50 + 2;
    for (size_t t = 0; t < copies; t++) {
        size_t src = (size_t)(tu_rng_unit(r) * c->n) % c->n, dst = (size_t)(tu_rng_unit(r) * c->n) % c->n;
        memcpy(p + dst * d, p + src * d, d * sizeof(float));
    }
    for (size_t t = 0; t < copies && t * 7 + 3 < c->n; t++) { /* many copies of passage 1 */
        memcpy(p + (t * 7 + 3) * d, p + 1 * d, d * sizeof(float));
    }
    for (size_t t = 0; t < copies; t++) { /* near-ties: one element one ulp up */
        size_t src = (size_t)(tu_rng_unit(r) * c->n) % c->n, dst = (size_t)(tu_rng_unit(r) * c->n) % c->n;
        memcpy(p + dst * d, p + src * d, d * sizeof(float));
        p[dst * d] = nextafterf(p[dst * d], 2.0f);
    }
    for (size_t a = 0; a < 2 && a < c->nq; a++) memcpy(q + a * d, p + 1 * d, d * sizeof(float));
}

/* Rows whose exact scores depend on the summation order (core/knn_exact.h), so that a kernel summing in any
 * other order differs in its bits: small random elements, and (dim >= 8) four planted elements of magnitude 2^20
 * at the fixed positions 1, 2, dim / 2 and dim - 1: the queries hold +2^20 there, each passage a random
 * arrangement of +-2^20 whose products cancel, so the partial sums pass through 2^40 and absorb the small
 * products' low bits differently in every order. */
static void knn_case_cancel_rows(TuRng *r, float *q, size_t nq, float *p, size_t np, size_t dim) {
    for (size_t i = 0; i < nq * dim; i++) q[i] = (float)(tu_rng_unit(r) - 0.5);
    for (size_t i = 0; i < np * dim; i++) p[i] = (float)(tu_rng_unit(r) - 0.5);
    if (dim < 8) return;
    const size_t pos[4] = {1, 2, dim / 2, dim - 1};
    const float B = 1048576.0f;
    for (size_t a = 0; a < nq; a++)
        for (int t = 0; t < 4; t++) q[a * dim + pos[t]] = B;
    for (size_t b = 0; b < np; b++) {
        float sg[4] = {B, B, -B, -B};
        for (int t = 3; t > 0; t--) { /* a random arrangement of two + and two - */
            int u = (int)(tu_rng_unit(r) * (t + 1)) % (t + 1);
            float x = sg[t];
            sg[t] = sg[u], sg[u] = x;
        }
        for (int t = 0; t < 4; t++) p[b * dim + pos[t]] = sg[t];
    }
}

/* n floats for the bf16 rounding checks: exact ties (even and odd low bf16 bit, both signs), one ulp either side
 * of a tie, subnormals, zeros, the largest floats (rounding up to inf), powers of two, then random values. */
static float *knn_case_bf16_values(TuRng *r, size_t n) {
    float *x = malloc(n * sizeof(float));
    const uint32_t fixed[] = {0x3F808000u, 0x3F818000u, 0xBF808000u, 0xBF818000u, 0x3F807FFFu, 0x3F808001u,
                              0x3F817FFFu, 0x3F818001u, 0x00000001u, 0x00008000u, 0x00018000u, 0x007FFFFFu,
                              0x80000001u, 0x00000000u, 0x80000000u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F7F7FFFu,
                              0x7F7F8000u, 0x3F800000u, 0x00800000u, 0x4B7FFFFFu};
    size_t nf = sizeof fixed / sizeof *fixed;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = i < nf ? fixed[i] : (uint32_t)(tu_rng_unit(r) * 4294967296.0);
        if (i >= nf && (u & 0x7F800000u) == 0x7F800000u) u &= 0xBFFFFFFFu; /* finite, as the search's inputs */
        memcpy(&x[i], &u, 4);
    }
    return x;
}

static long knn_case_again; /* the queries the last case screened again, over its shards */

/* Runs the case on be; returns the number of differing top-k slots (index or score bits), -1 on an error. */
static long knn_device_case(Backend *be, const KnnDevCase *c, TuRng *r, const char *label) {
    float *Q, *P;
    knn_case_data(r, c, &Q, &P);
    const int64_t off = 1000;
    size_t nk = c->nq * (size_t)c->k;
    float *ws = malloc(nk * sizeof(float)), *gs = malloc(nk * sizeof(float));
    int64_t *wi = malloc(nk * sizeof(int64_t)), *gi = malloc(nk * sizeof(int64_t));
    XrErr e;
    KnnOpts ko;
    knn_opts_default(&ko);
    if (knn_search(Q, c->nq, P, c->n, c->dim, off, c->k, &ko, ws, wi, NULL, &e)) {
        fprintf(stderr, "%s: cpu search: %s\n", label, e.msg);
        return -1;
    }
    KnnDevOpts o;
    knn_dev_opts_default(&o);
    o.mem_limit = c->mem_limit, o.passage_tile = c->tile, o.guard = c->guard, o.bf16 = c->bf16;
    int S = c->shards > 0 ? c->shards : 1;
    float *ls = malloc((size_t)S * nk * sizeof(float));
    int64_t *li = malloc((size_t)S * nk * sizeof(int64_t));
    long bad = 0, resident = 0, again = 0;
    size_t bytes = 0, tile = 0;
    for (int sh = 0; sh < S && bad >= 0; sh++) {
        size_t lo = c->n * (size_t)sh / (size_t)S, hi = c->n * (size_t)(sh + 1) / (size_t)S;
        KnnShard *s = knn_shard_create(be, P + lo * c->dim, hi - lo, c->dim, off + (int64_t)lo, c->max_q, c->k, &o, &e);
        KnnStats st = {0};
        if (!s || knn_shard_search(s, Q, c->nq, c->k, ls + (size_t)sh * nk, li + (size_t)sh * nk, &st, &e)) {
            fprintf(stderr, "%s: device search: %s\n", label, e.msg);
            bad = -1;
        } else {
            resident += knn_shard_resident(s);
            again += st.n_exhaustive;
            bytes += knn_shard_bytes(s);
            tile = knn_shard_tile(s);
        }
        knn_shard_free(s);
    }
    knn_case_again = again;
    if (bad == 0) {
        if (S > 1) knn_merge_topk(c->nq, c->k, (size_t)S, ls, li, gs, gi);
        else memcpy(gs, ls, nk * sizeof(float)), memcpy(gi, li, nk * sizeof(int64_t));
        bad = (long)tu_topk_diff(gs, gi, ws, wi, nk);
        printf("%-34s dim %4zu n %6zu q %4zu k %5d tile %6zu %s%s x%d: %ld of %zu slots differ, %ld queries screened "
               "again, %.1f MiB\n",
               label, c->dim, c->n, c->nq, c->k, tile, c->bf16 ? "bf16" : "fp32",
               resident == S ? " resident" : " streamed", S, bad, nk, again, bytes / 1048576.0);
    }
    free(Q), free(P), free(ws), free(gs), free(wi), free(gi), free(ls), free(li);
    return bad;
}

#endif
