/* knn.c: exact inner-product top-k by GEMM tiles with per-query bounded heaps, an exact re-scoring of the
 * survivors, and the k-way merge of per-shard lists. See knn.h for the ordering and determinism contract.
 * Parallelism follows core/cpu: OpenMP threads each own a block of queries and call single-threaded sgemm. */
#include "knn.h"

#include <assert.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#define XR_OMP(x) _Pragma(#x)
#else
#define XR_OMP(x)
#endif

typedef struct {
    float s;
    int64_t i;
} Cand;

/* a ranks below b: lower score, or equal score and larger index */
static inline int cand_worse(Cand a, Cand b) { return a.s < b.s || (a.s == b.s && a.i > b.i); }

static int cand_order(const void *pa, const void *pb) {
    Cand a = *(const Cand *)pa, b = *(const Cand *)pb;
    if (a.s != b.s) return a.s > b.s ? -1 : 1;
    return (a.i > b.i) - (a.i < b.i);
}

/* Min-heap with the worst candidate at the root. */
static void heap_sift_down(Cand *h, size_t n, size_t p) {
    Cand x = h[p];
    for (;;) {
        size_t c = 2 * p + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_worse(h[c + 1], h[c])) c++;
        if (!cand_worse(h[c], x)) break;
        h[p] = h[c];
        p = c;
    }
    h[p] = x;
}

static void heap_push(Cand *h, size_t *n, Cand x) {
    size_t p = (*n)++;
    while (p > 0) {
        size_t up = (p - 1) / 2;
        if (!cand_worse(x, h[up])) break;
        h[p] = h[up];
        p = up;
    }
    h[p] = x;
}

void knn_opts_default(KnnOpts *o) {
    o->query_block = 256;
    o->passage_tile = 4096;
    o->guard = 16;
}

float knn_score(const float *q, const float *p, size_t dim) {
    /* float x float is exact in double; four interleaved partial sums break the add latency chain. The order
     * is fixed by this code alone, which is all determinism needs. */
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= dim; i += 4) {
        a0 += (double)q[i] * (double)p[i];
        a1 += (double)q[i + 1] * (double)p[i + 1];
        a2 += (double)q[i + 2] * (double)p[i + 2];
        a3 += (double)q[i + 3] * (double)p[i + 3];
    }
    for (; i < dim; i++) a0 += (double)q[i] * (double)p[i];
    return (float)((a0 + a1) + (a2 + a3));
}

static int check_finite(const float *x, size_t rows, size_t dim, int64_t offset, const char *what, XrErr *e) {
    size_t bad = rows; /* first bad row */
    XR_OMP(omp parallel for schedule(static) reduction(min : bad) if (rows * dim > 65536))
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < dim; i++)
            if (!isfinite(x[r * dim + i]) && r < bad) bad = r;
    if (bad == rows) return 0;
    size_t i = 0;
    while (isfinite(x[bad * dim + i])) i++;
    return xr_errf(e, "knn: %s vector %lld has a non-finite value (%g) at element %zu; the embeddings are corrupt: "
                      "delete the embedding cache and re-embed",
                   what, (long long)(offset + (int64_t)bad), (double)x[bad * dim + i], i);
}

static double vec_norm(const float *x, size_t dim) {
    double s = 0;
    for (size_t i = 0; i < dim; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

/* Exhaustive exact top-k of one query over the shard, used when the GEMM screen could not decide. */
static size_t exhaustive_topk(const float *q, const float *passages, size_t n_passages, size_t dim,
                              int64_t offset, size_t k, Cand *heap) {
    size_t n = 0;
    for (size_t j = 0; j < n_passages; j++) {
        Cand c = {knn_score(q, passages + j * dim, dim), offset + (int64_t)j};
        if (n < k) heap_push(heap, &n, c);
        else if (cand_worse(heap[0], c)) {
            heap[0] = c;
            heap_sift_down(heap, n, 0);
        }
    }
    return n;
}

int knn_search(const float *queries, size_t n_queries, const float *passages, size_t n_passages, size_t dim,
               int64_t passage_offset, int k, const KnnOpts *opts, float *out_scores, int64_t *out_index,
               KnnStats *stats, XrErr *e) {
    KnnOpts o;
    if (opts) o = *opts;
    else knn_opts_default(&o);
    if (stats) stats->n_exhaustive = 0;
    if (k < 1) return xr_errf(e, "knn: k must be >= 1, got %d", k);
    if (dim == 0 || dim > INT_MAX) return xr_errf(e, "knn: embedding dimension %zu out of range", dim);
    if (o.query_block == 0 || o.passage_tile == 0 || o.query_block > INT_MAX || o.passage_tile > INT_MAX ||
        o.guard < 0)
        return xr_errf(e, "knn: bad tiling (query_block %zu, passage_tile %zu, guard %d)", o.query_block,
                       o.passage_tile, o.guard);
    if (passage_offset < 0) return xr_errf(e, "knn: negative passage offset %lld", (long long)passage_offset);
    if (check_finite(queries, n_queries, dim, 0, "query", e)) return -1;
    if (check_finite(passages, n_passages, dim, passage_offset, "passage", e)) return -1;
    if (n_queries == 0) return 0;

    size_t kk = (size_t)k + (size_t)o.guard;
    if (kk > n_passages) kk = n_passages ? n_passages : 1;
    /* largest passage norm: scales the bound on GEMM rounding error */
    double pmax = 0;
    XR_OMP(omp parallel for schedule(static) reduction(max : pmax) if (n_passages * dim > 65536))
    for (size_t j = 0; j < n_passages; j++) {
        double nrm = vec_norm(passages + j * dim, dim);
        if (nrm > pmax) pmax = nrm;
    }
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
    /* one sgemm per thread; OpenBLAS's own pool would fight the OpenMP workers (as in core/cpu) */
    openblas_set_num_threads(1);
#endif
    /* enough query blocks to keep every thread busy */
    size_t bq = o.query_block;
    if (nt > 1 && (n_queries + bq - 1) / bq < (size_t)nt) bq = (n_queries + (size_t)nt - 1) / (size_t)nt;
    if (bq < 1) bq = 1;
    size_t tp = o.passage_tile < n_passages ? o.passage_tile : (n_passages ? n_passages : 1);
    size_t n_blocks = (n_queries + bq - 1) / bq;
    int64_t n_exh = 0;

    XR_OMP(omp parallel num_threads(nt) reduction(+ : n_exh)) {
        float *tile = xr_malloc(bq * tp * sizeof *tile);
        Cand *heaps = xr_malloc(bq * kk * sizeof *heaps);
        size_t *counts = xr_malloc(bq * sizeof *counts);
        float *hmin = xr_malloc(bq * sizeof *hmin);
        XR_OMP(omp for schedule(dynamic, 1))
        for (size_t b = 0; b < n_blocks; b++) {
            size_t q0 = b * bq, m = n_queries - q0 < bq ? n_queries - q0 : bq;
            memset(counts, 0, m * sizeof *counts);
            /* screen: GEMM tiles in ascending passage order, so an incoming candidate always has the largest
             * index seen so far and loses ties; `>` against the root is the whole test */
            for (size_t p0 = 0; p0 < n_passages; p0 += tp) {
                size_t n = n_passages - p0 < tp ? n_passages - p0 : tp;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)dim, 1.0f,
                            queries + q0 * dim, (int)dim, passages + p0 * dim, (int)dim, 0.0f, tile, (int)n);
                for (size_t r = 0; r < m; r++) {
                    Cand *h = heaps + r * kk;
                    size_t cnt = counts[r];
                    const float *row = tile + r * n;
                    size_t j = 0;
                    for (; j < n && cnt < kk; j++)
                        heap_push(h, &cnt, (Cand){row[j], passage_offset + (int64_t)(p0 + j)});
                    float thr = cnt ? h[0].s : -INFINITY;
                    for (; j < n; j++) {
                        if (row[j] > thr) {
                            h[0] = (Cand){row[j], passage_offset + (int64_t)(p0 + j)};
                            heap_sift_down(h, cnt, 0);
                            thr = h[0].s;
                        }
                    }
                    counts[r] = cnt;
                }
            }
            /* exact scores for the survivors, then decide whether anything discarded could still rank */
            for (size_t r = 0; r < m; r++) {
                const float *q = queries + (q0 + r) * dim;
                Cand *h = heaps + r * kk;
                size_t cnt = counts[r];
                hmin[r] = cnt ? h[0].s : -INFINITY;
                for (size_t c = 0; c < cnt; c++)
                    h[c].s = knn_score(q, passages + (size_t)(h[c].i - passage_offset) * dim, dim);
                qsort(h, cnt, sizeof *h, cand_order);
                if (n_passages > cnt && cnt >= (size_t)k) {
                    /* |gemm - exact| <= dim * u * |q| * |p| for any summation order (u = FLT_EPSILON / 2), plus
                     * the float rounding of the exact score; doubled for slack */
                    double err = (double)dim * FLT_EPSILON * vec_norm(q, dim) * pmax +
                                 FLT_EPSILON * (fabs((double)hmin[r]) + fabs((double)h[k - 1].s)) + 1e-30;
                    if (!((double)hmin[r] + err < (double)h[k - 1].s)) {
                        cnt = exhaustive_topk(q, passages, n_passages, dim, passage_offset, (size_t)k, h);
                        qsort(h, cnt, sizeof *h, cand_order);
                        n_exh++;
                    }
                }
                float *os = out_scores + (q0 + r) * (size_t)k;
                int64_t *oi = out_index + (q0 + r) * (size_t)k;
                for (size_t j = 0; j < (size_t)k; j++) {
                    os[j] = j < cnt ? h[j].s : -INFINITY;
                    oi[j] = j < cnt ? h[j].i : -1;
                }
            }
        }
        free(tile);
        free(heaps);
        free(counts);
        free(hmin);
    }
    if (stats) stats->n_exhaustive = n_exh;
    return 0;
}

void knn_merge_topk(size_t n_queries, int k, size_t n_lists, const float *scores, const int64_t *index,
                    float *out_scores, int64_t *out_index) {
    assert(k >= 1);
    XR_OMP(omp parallel for schedule(static) if (n_queries * n_lists * (size_t)k > 65536))
    for (size_t q = 0; q < n_queries; q++) {
        size_t head[n_lists ? n_lists : 1];
        memset(head, 0, sizeof head);
        for (size_t j = 0; j < (size_t)k; j++) {
            /* best head among the lists; a list is exhausted at its first empty slot */
            size_t best = n_lists;
            Cand bc = {0, -1};
            for (size_t l = 0; l < n_lists; l++) {
                if (head[l] >= (size_t)k) continue;
                size_t at = (l * n_queries + q) * (size_t)k + head[l];
                if (index[at] < 0) continue;
                Cand c = {scores[at], index[at]};
                assert(best == n_lists || c.i != bc.i); /* shards are disjoint */
                if (best == n_lists || cand_worse(bc, c)) best = l, bc = c;
            }
            out_scores[q * (size_t)k + j] = best < n_lists ? bc.s : -INFINITY;
            out_index[q * (size_t)k + j] = best < n_lists ? bc.i : -1;
            if (best < n_lists) head[best]++;
        }
    }
}
