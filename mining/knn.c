/* knn.c: exact inner-product top-k by GEMM tiles with per-query bounded heaps, an exact re-scoring of the
 * survivors, and the k-way merge of per-shard lists. See knn.h for the ordering and determinism contract.
 * Parallelism follows core/cpu: OpenMP threads each own a block of queries and run a single-threaded GEMM
 * (OpenBLAS, or xrank's AVX-512 kernel where the CPU backend would pick it), then a vectorised top-k screen. */
#include "knn.h"
#include "knn_internal.h"

#include <assert.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "knn_exact.h" /* knn_exact_dot: the exact score, shared with the backends' knn_rescore */
#include "ops.h"       /* the screening GEMM: ops_knn_gemm on a CPU backend */

#include "xr_par.h" /* XR_OMP; XR_CLONES: the norm pass, compiled for three ISA levels */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define XR_KNN_X86 1
#else
#define XR_KNN_X86 0
#endif

int knn_cand_order(const void *pa, const void *pb) {
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
     * is fixed by core/knn_exact.h alone, which is all determinism needs (the GPU rescoring uses it too). */
    return knn_exact_dot(q, p, dim);
}

/* Sum of squares of a row in double (exact products, a fixed order of 8 interleaved partial sums, so the value
 * does not depend on the compiled ISA). It is non-finite exactly when an element is: a float squared cannot
 * overflow a double, nor can a sum of fewer than 2^900 of them. */
XR_CLONES static double row_sumsq(const float *x, size_t dim) {
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int u = 0; u < 8; u++) a[u] += (double)x[i + u] * (double)x[i + u];
    for (; i < dim; i++) a[0] += (double)x[i] * (double)x[i];
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* One pass over rows: the largest L2 norm (scales the bound on GEMM rounding error) and the finite check.
 * norms (optional) receives every row's norm. Fails naming the first bad row and element. */
int knn_rows_check_norms(const float *x, size_t rows, size_t dim, int64_t offset, const char *what,
                            double *norms, double *max_norm, XrErr *e) {
    size_t bad = rows; /* first bad row */
    double mx = 0;
    XR_OMP(omp parallel for schedule(static) reduction(min : bad) reduction(max : mx) if (rows * dim > 65536))
    for (size_t r = 0; r < rows; r++) {
        double s = row_sumsq(x + r * dim, dim);
        if (!isfinite(s)) {
            if (r < bad) bad = r;
            continue;
        }
        if (norms) norms[r] = sqrt(s);
        if (s > mx) mx = s;
    }
    *max_norm = sqrt(mx);
    if (bad == rows) return 0;
    size_t i = 0;
    while (isfinite(x[bad * dim + i])) i++;
    return xr_errf(e, "knn: %s vector %lld has a non-finite value (%g) at element %zu; the embeddings are corrupt: "
                      "delete the embedding cache and re-embed",
                   what, (long long)(offset + (int64_t)bad), (double)x[bad * dim + i], i);
}

/* Exhaustive exact top-k of one query over the shard, used when the GEMM screen could not decide. */
size_t knn_exhaustive_topk(const float *q, const float *passages, size_t n_passages, size_t dim,
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

/* The screen of one score tile: tile[j * m + r] = GEMM score of passage base + j against query r of a block of m
 * (passages down, queries across), offered in ascending passage order to the queries' heaps of kk candidates
 * (h + r * kk, counts[r]); thr[r] caches heap r's root score. Every query of a block has seen the same passages,
 * so all its heaps fill together: the first rows push, then a heap is full and an incoming candidate, having
 * the largest index seen so far, loses ties: `> root` is the whole test. Almost every score fails it, so the
 * portable screen compares 16 at a time and walks single scores only where one passed. Returns the first row
 * left for the full-heap screen (n when the heaps are still filling). */
static size_t screen_fill(const float *tile, size_t n, size_t m, int64_t base, Cand *h, size_t *counts, float *thr,
                          size_t kk) {
    size_t j = 0;
    for (; j < n && counts[0] < kk; j++)
        for (size_t r = 0; r < m; r++) heap_push(h + r * kk, &counts[r], (Cand){tile[j * m + r], base + (int64_t)j});
    if (counts[0] == kk)
        for (size_t r = 0; r < m; r++) thr[r] = h[r * kk].s;
    return j;
}

/* A score that passed `> thr[r]`: it replaces heap r's root. */
static inline void screen_take(Cand *h, size_t kk, float *thr, size_t r, float s, int64_t idx) {
    Cand *hr = h + r * kk;
    if (!(s > thr[r])) return; /* an earlier passage of this query raised the bar */
    hr[0] = (Cand){s, idx};
    heap_sift_down(hr, kk, 0);
    thr[r] = hr[0].s;
}

/* Rows [j0, j1) x queries [r0, r1) of a tile whose heaps are full. */
static void screen_tile(const float *tile, size_t j0, size_t j1, size_t m, size_t r0, size_t r1, int64_t base,
                        Cand *h, float *thr, size_t kk) {
    for (size_t j = j0; j < j1; j++) {
        const float *row = tile + j * m;
        size_t r = r0;
        for (; r + 16 <= r1; r += 16) {
            int any = 0;
            for (int u = 0; u < 16; u++) any |= row[r + u] > thr[r + u];
            if (!any) continue;
            for (size_t u = r; u < r + 16; u++) screen_take(h, kk, thr, u, row[u], base + (int64_t)j);
        }
        for (; r < r1; r++) screen_take(h, kk, thr, r, row[r], base + (int64_t)j);
    }
}

#if XR_KNN_X86
/* The same on AVX-512 for whole groups of 4 rows x 16 queries: the max of the 4 passages' scores against the
 * 16 thresholds, then each row in order where one passed. The ragged rest goes to the portable screen, after
 * (each query still sees its passages in ascending order). */
__attribute__((target("avx512f"))) static void screen_tile_avx512(const float *tile, size_t j0, size_t j1, size_t m,
                                                                   int64_t base, Cand *h, float *thr, size_t kk) {
    size_t j4 = j0 + (j1 - j0) / 4 * 4, m16 = m / 16 * 16;
    for (size_t j = j0; j < j4; j += 4) {
        const float *row = tile + j * m;
        for (size_t r = 0; r < m16; r += 16) {
            __m512 mx = _mm512_max_ps(_mm512_max_ps(_mm512_loadu_ps(row + r), _mm512_loadu_ps(row + m + r)),
                                      _mm512_max_ps(_mm512_loadu_ps(row + 2 * m + r), _mm512_loadu_ps(row + 3 * m + r)));
            if (!_mm512_cmp_ps_mask(mx, _mm512_loadu_ps(thr + r), _CMP_GT_OQ)) continue;
            for (size_t u = 0; u < 4; u++) {
                const float *ru = row + u * m;
                unsigned hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(ru + r), _mm512_loadu_ps(thr + r), _CMP_GT_OQ);
                while (hit) {
                    size_t q = r + (size_t)__builtin_ctz(hit);
                    hit &= hit - 1;
                    screen_take(h, kk, thr, q, ru[q], base + (int64_t)(j + u));
                }
            }
        }
    }
    screen_tile(tile, j0, j4, m, m16, m, base, h, thr, kk);
    screen_tile(tile, j4, j1, m, 0, m, base, h, thr, kk);
}
#endif

/* knn_score of the candidates h[0..cnt) against q, in place. On AVX2, four candidates at a time: lane u of a
 * candidate's accumulator is knn_score's partial sum a_u, added in the same order (the products of floats are
 * exact in double, so the sums match bit for bit); four independent chains instead of one hide the add
 * latency and the cache misses on the candidates' rows. */
#if XR_KNN_X86
__attribute__((target("avx2"))) static void score_cands_avx2(const float *q, const float *passages, size_t dim,
                                                              int64_t offset, Cand *h, size_t cnt) {
    size_t c = 0;
    for (; c + 4 <= cnt; c += 4) {
        const float *p[4];
        __m256d acc[4];
        for (int u = 0; u < 4; u++) p[u] = passages + (size_t)(h[c + u].i - offset) * dim, acc[u] = _mm256_setzero_pd();
        size_t i = 0;
        for (; i + 4 <= dim; i += 4) {
            __m256d qv = _mm256_cvtps_pd(_mm_loadu_ps(q + i));
            for (int u = 0; u < 4; u++)
                acc[u] = _mm256_add_pd(acc[u], _mm256_mul_pd(qv, _mm256_cvtps_pd(_mm_loadu_ps(p[u] + i))));
        }
        for (int u = 0; u < 4; u++) {
            double a[4];
            _mm256_storeu_pd(a, acc[u]);
            for (size_t j = i; j < dim; j++) a[0] += (double)q[j] * (double)p[u][j];
            h[c + u].s = (float)((a[0] + a[1]) + (a[2] + a[3]));
        }
    }
    for (; c < cnt; c++) h[c].s = knn_score(q, passages + (size_t)(h[c].i - offset) * dim, dim);
}
#endif

void knn_score_cands(int avx2, const float *q, const float *passages, size_t dim, int64_t offset, Cand *h,
                        size_t cnt) {
#if XR_KNN_X86
    if (avx2) {
        score_cands_avx2(q, passages, dim, offset, h, cnt);
        return;
    }
#endif
    for (size_t c = 0; c < cnt; c++) h[c].s = knn_score(q, passages + (size_t)(h[c].i - offset) * dim, dim);
}

int knn_search(const float *queries, size_t n_queries, const float *passages, size_t n_passages, size_t dim,
               int64_t passage_offset, int k, const KnnOpts *opts, float *out_scores, int64_t *out_index,
               KnnStats *stats, XrErr *e) {
    KnnOpts o;
    if (opts) o = *opts;
    else knn_opts_default(&o);
    if (stats) memset(stats, 0, sizeof *stats);
    if (k < 1) return xr_errf(e, "knn: k must be >= 1, got %d", k);
    if (dim == 0 || dim > INT_MAX) return xr_errf(e, "knn: embedding dimension %zu out of range", dim);
    if (o.query_block == 0 || o.passage_tile == 0 || o.query_block > INT_MAX || o.passage_tile > INT_MAX ||
        o.guard < 0)
        return xr_errf(e, "knn: bad tiling (query_block %zu, passage_tile %zu, guard %d)", o.query_block,
                       o.passage_tile, o.guard);
    if (passage_offset < 0) return xr_errf(e, "knn: negative passage offset %lld", (long long)passage_offset);
    double qmax, pmax, t_start = xr_now();
    double *qnorm = xr_malloc((n_queries ? n_queries : 1) * sizeof *qnorm);
    if (knn_rows_check_norms(queries, n_queries, dim, 0, "query", qnorm, &qmax, e) ||
        knn_rows_check_norms(passages, n_passages, dim, passage_offset, "passage", NULL, &pmax, e)) {
        free(qnorm);
        return -1;
    }
    if (stats) stats->t_norms = xr_now() - t_start;
    if (n_queries == 0) {
        free(qnorm);
        return 0;
    }

    size_t kk = (size_t)k + (size_t)o.guard;
    if (kk > n_passages) kk = n_passages ? n_passages : 1;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    /* the backend whose screening op each thread calls as worker t: a single-threaded GEMM per call, the
     * kernel ops_linear runs (xrank's AVX-512 kernel where OpenBLAS lacks AVX-512 kernels, else OpenBLAS) */
    Backend *be = ops_backend_cpu(nt);
    int own = strcmp(ops_cpu_gemm_kernel(be), "xrank-avx512") == 0;
    int vec = 0, avx2 = 0;
#if XR_KNN_X86
    __builtin_cpu_init();
    vec = __builtin_cpu_supports("avx512f") != 0;
    avx2 = __builtin_cpu_supports("avx2") != 0;
#endif
    /* Each thread owns a contiguous range of queries, cut into blocks of at most query_block, and walks the
     * shard tile by tile, every block of its range against a tile before the next tile: a tile is read from
     * memory once per thread and then from cache (block-major order read the whole shard once per block). The
     * heaps of all queries live through the pass: O(n_queries * (k + guard)), as knn.h says. Ranges and blocks
     * are cut at multiples of 32 queries for xrank's kernel (the columns of its register tile) when there are
     * enough queries; the result does not depend on any of this. */
    size_t al = own ? 32 : 8;
    if (n_queries < 2 * al * (size_t)nt) al = 1;
    size_t bq_max = o.query_block >= al ? o.query_block - o.query_block % al : o.query_block;
    size_t tp = o.passage_tile < n_passages ? o.passage_tile : (n_passages ? n_passages : 1);
    Cand *heaps = xr_malloc(n_queries * kk * sizeof *heaps);
    size_t *counts = xr_calloc(n_queries, sizeof *counts);
    float *thr = xr_malloc(n_queries * sizeof *thr);
    int64_t n_exh = 0;
    double t_gemm = 0, t_screen = 0, t_rescore = 0;

    XR_OMP(omp parallel num_threads(nt) reduction(+ : n_exh) reduction(max : t_gemm, t_screen, t_rescore)) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        size_t units = (n_queries + al - 1) / al;
        size_t lo = units * (size_t)t / (size_t)nt * al, hi = units * (size_t)(t + 1) / (size_t)nt * al;
        if (lo > n_queries) lo = n_queries;
        if (hi > n_queries) hi = n_queries;
        size_t len = hi - lo;
        /* equal blocks: as few as query_block allows, each a multiple of al */
        size_t nb = len ? (len + bq_max - 1) / bq_max : 0, bq = nb ? (len + nb - 1) / nb : 1;
        bq = (bq + al - 1) / al * al;
        if (bq > bq_max) bq = bq_max;
        float *tile = len ? xr_malloc(bq * tp * sizeof *tile) : NULL;
        double my_gemm = 0, t0 = xr_now();
        /* screen: tiles in ascending passage order; each heap keeps its query's kk best GEMM scores */
        for (size_t p0 = 0; p0 < n_passages && len; p0 += tp) {
            size_t n = n_passages - p0 < tp ? n_passages - p0 : tp;
            int64_t base = passage_offset + (int64_t)p0;
            for (size_t q0 = lo; q0 < hi; q0 += bq) {
                size_t m = hi - q0 < bq ? hi - q0 : bq;
                double tg = xr_now();
                ops_knn_gemm(be, tile, passages + p0 * dim, (int)n, queries + q0 * dim, (int)m, (int)dim, t);
                my_gemm += xr_now() - tg;
                Cand *h = heaps + q0 * kk;
                size_t j = screen_fill(tile, n, m, base, h, counts + q0, thr + q0, kk);
#if XR_KNN_X86
                if (vec) {
                    screen_tile_avx512(tile, j, n, m, base, h, thr + q0, kk);
                    continue;
                }
#endif
                screen_tile(tile, j, n, m, 0, m, base, h, thr + q0, kk);
            }
        }
        double t1 = xr_now();
        t_gemm = my_gemm;
        t_screen = t1 - t0 - my_gemm;
        /* exact scores for the survivors, then decide whether anything discarded could still rank */
        for (size_t qi = lo; qi < hi; qi++) {
            const float *q = queries + qi * dim;
            Cand *h = heaps + qi * kk;
            size_t cnt = counts[qi];
            float hmin = cnt ? h[0].s : -INFINITY;
            knn_score_cands(avx2, q, passages, dim, passage_offset, h, cnt);
            qsort(h, cnt, sizeof *h, knn_cand_order);
            if (n_passages > cnt && cnt >= (size_t)k) {
                /* |gemm - exact| <= dim * u * |q| * |p| for any summation order (u = FLT_EPSILON / 2), plus
                 * the float rounding of the exact score; doubled for slack */
                double err = (double)dim * FLT_EPSILON * qnorm[qi] * pmax +
                             FLT_EPSILON * (fabs((double)hmin) + fabs((double)h[k - 1].s)) + 1e-30;
                if (!((double)hmin + err < (double)h[k - 1].s)) {
                    cnt = knn_exhaustive_topk(q, passages, n_passages, dim, passage_offset, (size_t)k, h);
                    qsort(h, cnt, sizeof *h, knn_cand_order);
                    n_exh++;
                }
            }
            float *os = out_scores + qi * (size_t)k;
            int64_t *oi = out_index + qi * (size_t)k;
            for (size_t j = 0; j < (size_t)k; j++) {
                os[j] = j < cnt ? h[j].s : -INFINITY;
                oi[j] = j < cnt ? h[j].i : -1;
            }
        }
        t_rescore = xr_now() - t1;
        free(tile);
    }
    ops_backend_free(be);
    free(heaps);
    free(counts);
    free(thr);
    free(qnorm);
    if (stats) {
        stats->n_exhaustive = n_exh;
        stats->t_gemm = t_gemm, stats->t_screen = t_screen, stats->t_rescore = t_rescore;
    }
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
