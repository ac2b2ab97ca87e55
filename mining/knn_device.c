/* knn_device.c: exact top-k with a shard's passages on a backend's device (see knn_device.h): the memory plan,
 * the tile loop over ops_knn_screen, the exact rescoring (device or host) and the rounding-bound check with its
 * retry on a longer candidate list. Only ops.h reaches the device. */
#include "knn_device.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_bits.h" /* xr_bf16_bits: the rounding shared with the to_bf16 op */
#include "knn_internal.h"
#include "xr_par.h" /* XR_OMP */

struct KnnShard {
    Backend *be;
    const float *host_p; /* the caller's passages (rescoring on the host, streamed tiles) */
    size_t n, dim, max_q;
    int64_t offset;
    int max_k, guard, bf16, resident, keep32, avx2;
    double pmax;          /* max |p| over the shard */
    double pmax16, dpmax; /* bf16: max |p'| and max |p' - p| over the shard (p' = p rounded to bf16) */
    size_t tile, list_cap, bytes;
    void *dev_p;       /* resident: the shard (fp32 or bf16); streaming: one tile */
    void *dev_q;       /* the block's queries, as screened (fp32 or bf16) */
    float *dev_p32, *dev_q32; /* bf16 screening with room to spare: fp32 copies for rescoring on the device */
    float *dev_ls;     /* lists: screening scores, indices, exact scores (list_cap entries each) */
    int64_t *dev_li;
    float *dev_ex;
    uint16_t *host_b16; /* bf16 staging: a tile or a query block (bf16 without keep32) */
    KnnShardSetup setup;
    float *init_s;      /* list_cap x -INFINITY / -1, to reset the lists */
    int64_t *init_i;
};

void knn_dev_opts_default(KnnDevOpts *o) {
    o->mem_limit = 0;
    o->passage_tile = 65536;
    o->guard = -1;
    o->bf16 = 0;
}

/* float -> bf16, round to nearest even (the inputs are finite: checked before); the device's to_bf16 op uses
 * the same formula */
static inline uint16_t bf16_round(float x) { return xr_bf16_bits(x); }

static void to_bf16_host(uint16_t *out, const float *x, size_t n) {
    XR_OMP(omp parallel for schedule(static) if (n > 65536))
    for (size_t i = 0; i < n; i++) out[i] = bf16_round(x[i]);
}

static float bf16_val(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Per row of x (rows x dim) and its bf16 rounding x': |x'| and |x' - x| in double, the largest of each into
 * *max16 / *maxd (per-row values into n16 / nd when not NULL). */
static void bf16_row_errors(const float *x, size_t rows, size_t dim, double *n16, double *nd, double *max16,
                            double *maxd) {
    double m16 = 0, md = 0;
    XR_OMP(omp parallel for schedule(static) reduction(max : m16, md) if (rows * dim > 65536))
    for (size_t r = 0; r < rows; r++) {
        double a = 0, d = 0;
        for (size_t i = 0; i < dim; i++) {
            double v = bf16_val(bf16_round(x[r * dim + i])), dv = v - (double)x[r * dim + i];
            a += v * v, d += dv * dv;
        }
        a = sqrt(a), d = sqrt(d);
        if (n16) n16[r] = a;
        if (nd) nd[r] = d;
        if (a > m16) m16 = a;
        if (d > md) md = d;
    }
    *max16 = m16, *maxd = md;
}

/* rows of host fp32 data to the device buffer dst, converted to bf16 on the host when asked. */
static void upload_rows(KnnShard *s, void *dst, const float *src, size_t rows) {
    size_t cnt = rows * s->dim;
    if (!s->bf16) {
        ops_to_device(s->be, dst, src, cnt * sizeof(float));
        return;
    }
    to_bf16_host(s->host_b16, src, cnt);
    ops_to_device(s->be, dst, s->host_b16, cnt * sizeof(uint16_t));
}

#define KNN_STAGE_BYTES ((size_t)32 << 20) /* each of the two pinned staging buffers of a shard's upload */

/* cnt elements of host fp32 data to dst on the device (as bf16 rounded on the host with to16) through two pinned
 * staging buffers: the host fills one (a copy or the conversion, on all threads) while the device copies the
 * other, so the upload runs at pinned speed instead of a pageable copy's. Returns when the data is there. */
static void upload_staged(Backend *be, void *dst, const float *src, size_t cnt, int to16) {
    const size_t elt = to16 ? 2 : 4;
    size_t chunk = KNN_STAGE_BYTES / elt;
    if (chunk > cnt) chunk = cnt;
    if (chunk == 0) return;
    void *buf[2] = {ops_pinned_alloc(be, chunk * elt), cnt > chunk ? ops_pinned_alloc(be, chunk * elt) : NULL};
    for (size_t i = 0, c0 = 0; c0 < cnt; i++, c0 += chunk) {
        const size_t c = cnt - c0 < chunk ? cnt - c0 : chunk;
        void *b = buf[i & 1]; /* its last copy (chunk i - 2) finished at the previous iteration's sync */
        if (to16) {
            to_bf16_host((uint16_t *)b, src + c0, c);
        } else {
            const size_t blk = 262144; /* floats per thread's memcpy */
            XR_OMP(omp parallel for schedule(static) if (c > blk))
            for (size_t b0 = 0; b0 < c; b0 += blk)
                memcpy((float *)b + b0, src + c0 + b0, (c - b0 < blk ? c - b0 : blk) * sizeof(float));
        }
        ops_sync(be); /* chunk i - 1's copy, which ran while this one was filled */
        ops_to_device_async(be, (char *)dst + c0 * elt, b, c * elt);
    }
    ops_sync(be);
    ops_pinned_free(be, buf[0]);
    ops_pinned_free(be, buf[1]);
}

/* The query block to the device as screened; with keep32 its fp32 rows go up once (into dev_q32, which the
 * rescoring reads) and the bf16 copy is made there. */
static void upload_queries(KnnShard *s, const float *q, size_t m) {
    if (!s->keep32) {
        upload_rows(s, s->dev_q, q, m);
        return;
    }
    ops_to_device(s->be, s->dev_q32, q, m * s->dim * sizeof(float));
    ops_to_bf16(s->be, (uint16_t *)s->dev_q, s->dev_q32, m * s->dim);
}

static int knn_float_desc(const void *pa, const void *pb) {
    float a = *(const float *)pa, b = *(const float *)pb;
    return (a < b) - (a > b);
}

int knn_dev_guard(int guard, int k, int bf16) {
    if (guard >= 0) return guard;
    if (bf16) return k > 64 ? k : 64;
    return 16 + k / 32;
}

double knn_dev_bound(size_t dim, double qn, double pmax, int bf16, double qn16, double dq, double pmax16,
                     double dpmax, double hmin, double kth) {
    const double eps = FLT_EPSILON, tail = eps * (fabs(hmin) + fabs(kth)) + 1e-30;
    if (!bf16) return (double)dim * eps * qn * pmax + tail;
    /* the fp32 accumulation of the bf16 products (doubled: tensor cores may truncate), then the operands'
     * rounding, exactly: q'.p' - q.p = q'.(p' - p) + (q' - q).p */
    double acc = 2.0 * (double)dim * eps * qn16 * pmax16, ops = qn16 * dpmax + dq * pmax;
    return (acc + ops) * (1.0 + 1e-6) + tail;
}

size_t knn_dev_grow(const float *hs, size_t cnt, size_t k, size_t kk, double t, float *tmp) {
    /* the screening scores, descending; the lower half of the list gives the density of scores per unit near
     * its end, extrapolated (twice: the density grows further down) to the threshold t below its smallest */
    size_t u = 0;
    for (size_t j = 0; j < cnt; j++) tmp[u++] = hs[j];
    qsort(tmp, u, sizeof *tmp, knn_float_desc);
    if (u < 2 || u < k) return kk * 4;
    size_t h = u / 2;
    double span = (double)tmp[h - 1] - (double)tmp[u - 1], need = (double)tmp[u - 1] - t;
    if (!(span > 0) || !(need >= 0)) return kk * 4;
    double extra = 2.0 * (double)(u - h) * need / span + 16.0;
    if (extra > 1e15) return kk * 4;
    size_t grow = kk + (size_t)extra;
    return grow > kk * 16 ? kk * 16 : (grow < kk + kk / 4 ? kk + kk / 4 : grow);
}

KnnShard *knn_shard_create(Backend *be, const float *passages, size_t n, size_t dim, int64_t offset, size_t max_queries,
                           int max_k, const KnnDevOpts *opts, XrErr *e) {
    KnnDevOpts o;
    if (opts) o = *opts;
    else knn_dev_opts_default(&o);
    if (max_k < 1 || max_queries == 0 || dim == 0 || dim > (1u << 20) || n > (size_t)INT32_MAX * 64 || offset < 0) {
        xr_errf(e, "knn device shard: bad sizes (k %d, queries %zu, dim %zu, passages %zu, offset %lld)", max_k,
                max_queries, dim, n, (long long)offset);
        return NULL;
    }
    if (o.bf16 && be->device == XR_DEV_CPU) {
        xr_errf(e, "knn device shard: bf16 screening needs a GPU backend (--device cuda)");
        return NULL;
    }
    double pmax = 0, t0 = xr_now();
    if (knn_rows_check_norms(passages, n, dim, offset, "passage", NULL, &pmax, e)) return NULL;
    KnnShard *s = xr_calloc(1, sizeof *s);
    s->be = be, s->host_p = passages, s->n = n, s->dim = dim, s->offset = offset, s->max_q = max_queries;
    s->max_k = max_k, s->bf16 = o.bf16, s->pmax = pmax;
    if (o.bf16) bf16_row_errors(passages, n, dim, NULL, NULL, &s->pmax16, &s->dpmax);
    s->setup.t_check = xr_now() - t0;
    s->guard = o.guard;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    s->avx2 = __builtin_cpu_supports("avx2") != 0;
#endif
    size_t limit = o.mem_limit;
    if (!limit) {
        XrDeviceInfo info;
        ops_device_info(be->device, &info);
        limit = be->device == XR_DEV_CPU || !info.total_mem ? (size_t)1 << 46 : info.total_mem / 5 * 4;
    }
    size_t nn = n ? n : 1;
    size_t kk0 = (size_t)max_k + (size_t)knn_dev_guard(s->guard, max_k, s->bf16);
    if (kk0 > nn) kk0 = nn;
    size_t elt = o.bf16 ? 2 : 4;
    s->list_cap = max_queries * kk0;
    /* per block: the queries, three lists, and the screen op's own copy of the lists (its scratch) */
    size_t per_block = max_queries * dim * elt + s->list_cap * (3 * sizeof(float) + 2 * sizeof(int64_t));
    size_t tile = o.passage_tile ? o.passage_tile : 65536;
    if (tile > nn) tile = nn;
    size_t res = per_block + max_queries * tile * sizeof(float) + nn * dim * elt;
    size_t extra32 = nn * dim * 4 + max_queries * dim * 4; /* fp32 shard and queries beside the bf16 ones */
    if (res <= limit) {
        s->resident = 1;
        s->keep32 = o.bf16 && res + extra32 <= limit;
    } else {
        size_t per_row = max_queries * sizeof(float) + dim * elt; /* score scratch + tile buffer per tile row */
        size_t fit = limit > per_block ? (limit - per_block) / per_row : 0;
        if (fit < 1) {
            xr_errf(e,
                    "knn device search: the memory bound %.1f MiB is too small for blocks of %zu queries with k + guard "
                    "= %zu (at least %.1f MiB); raise the bound or lower the query block",
                    limit / 1048576.0, max_queries, kk0, (per_block + per_row) / 1048576.0);
            free(s);
            return NULL;
        }
        if (tile > fit) tile = fit;
    }
    s->tile = tile;
    s->bytes = per_block + max_queries * tile * sizeof(float) + (s->resident ? nn : tile) * dim * elt +
               (s->keep32 ? extra32 : 0);
    s->dev_p = ops_alloc(be, (s->resident ? nn : tile) * dim * elt);
    s->dev_q = ops_alloc(be, max_queries * dim * elt);
    s->dev_ls = ops_alloc(be, s->list_cap * sizeof(float));
    s->dev_li = ops_alloc(be, s->list_cap * sizeof(int64_t));
    s->dev_ex = ops_alloc(be, s->list_cap * sizeof(float));
    s->init_s = xr_malloc(s->list_cap * sizeof(float));
    s->init_i = xr_malloc(s->list_cap * sizeof(int64_t));
    for (size_t i = 0; i < s->list_cap; i++) s->init_s[i] = -INFINITY, s->init_i[i] = -1;
    if (s->keep32) {
        s->dev_p32 = ops_alloc(be, nn * dim * sizeof(float));
        s->dev_q32 = ops_alloc(be, max_queries * dim * sizeof(float));
    } else if (o.bf16) {
        s->host_b16 = xr_malloc((tile > max_queries ? tile : max_queries) * dim * sizeof(uint16_t));
    }
    double t1 = xr_now();
    if (s->keep32) {
        /* the fp32 shard goes up once; its bf16 copy is made on the device (the host's rounding, bit for bit) */
        upload_staged(be, s->dev_p32, passages, n * dim, 0);
        s->setup.t_upload = xr_now() - t1;
        ops_to_bf16(be, (uint16_t *)s->dev_p, s->dev_p32, n * dim);
        ops_sync(be);
        s->setup.t_convert = xr_now() - t1 - s->setup.t_upload;
    } else if (s->resident) {
        upload_staged(be, s->dev_p, passages, n * dim, s->bf16); /* bf16: rounded on the host */
        s->setup.t_upload = xr_now() - t1;
    }
    return s;
}

size_t knn_shard_bytes(const KnnShard *s) { return s->bytes; }
int knn_shard_resident(const KnnShard *s) { return s->resident; }
size_t knn_shard_tile(const KnnShard *s) { return s->tile; }
int knn_shard_keep32(const KnnShard *s) { return s->keep32; }
KnnShardSetup knn_shard_setup(const KnnShard *s) { return s->setup; }

void knn_shard_free(KnnShard *s) {
    if (!s) return;
    ops_free(s->be, s->dev_p);
    ops_free(s->be, s->dev_q);
    ops_free(s->be, s->dev_ls);
    ops_free(s->be, s->dev_li);
    ops_free(s->be, s->dev_ex);
    ops_free(s->be, s->dev_p32);
    ops_free(s->be, s->dev_q32);
    free(s->host_b16);
    free(s->init_s);
    free(s->init_i);
    free(s);
}

/* Screen m queries (host rows q, m * kk <= list_cap) against the whole shard and rescore the survivors
 * exactly: hi / hs / hx [m, kk] get the candidates' indices, screening scores and exact scores. */
static void screen_block(KnnShard *s, const float *q, size_t m, size_t kk, int64_t *hi, float *hs, float *hx,
                         KnnStats *st) {
    Backend *be = s->be;
    double t0 = xr_now();
    const size_t dim = s->dim, elt = s->bf16 ? 2 : 4, cnt = m * kk;
    upload_queries(s, q, m);
    ops_to_device(be, s->dev_ls, s->init_s, cnt * sizeof(float));
    ops_to_device(be, s->dev_li, s->init_i, cnt * sizeof(int64_t));
    for (size_t p0 = 0; p0 < s->n; p0 += s->tile) {
        size_t rows = s->n - p0 < s->tile ? s->n - p0 : s->tile;
        const void *P = (const char *)s->dev_p + p0 * dim * elt;
        if (!s->resident) {
            upload_rows(s, s->dev_p, s->host_p + p0 * dim, rows);
            P = s->dev_p;
        }
        ops_knn_screen(be, s->dev_ls, s->dev_li, (int)kk, s->dev_q, (int)m, P, (int)rows, s->offset + (int64_t)p0,
                       (int)dim, s->bf16);
    }
    ops_to_host(be, hi, s->dev_li, cnt * sizeof(int64_t));
    ops_to_host(be, hs, s->dev_ls, cnt * sizeof(float));
    double t1 = xr_now();
    st->t_screen += t1 - t0;
    if ((s->resident && !s->bf16) || s->keep32) {
        /* the fp32 shard is on the device: rescore there */
        const float *Q32 = (const float *)s->dev_q, *P32 = (const float *)s->dev_p;
        if (s->keep32) Q32 = s->dev_q32, P32 = s->dev_p32; /* dev_q32: uploaded for the screening above */
        ops_knn_rescore(be, s->dev_ex, s->dev_li, (int)kk, Q32, (int)m, P32, (int)s->n, s->offset, (int)dim);
        ops_to_host(be, hx, s->dev_ex, cnt * sizeof(float));
        st->t_rescore += xr_now() - t1;
        return;
    }
    /* streamed, or bf16 without room for an fp32 copy: the exact scores from the caller's fp32 passages */
    XR_OMP(omp parallel)
    {
        Cand *c = xr_malloc(kk * sizeof *c);
        XR_OMP(omp for schedule(dynamic, 4))
        for (size_t r = 0; r < m; r++) {
            size_t nc = 0;
            for (size_t j = 0; j < kk; j++)
                if (hi[r * kk + j] >= 0) c[nc++] = (Cand){0, hi[r * kk + j]};
            knn_score_cands(s->avx2, q + r * dim, s->host_p, dim, s->offset, c, nc);
            for (size_t j = 0, u = 0; j < kk; j++)
                if (hi[r * kk + j] >= 0) hx[r * kk + j] = c[u++].s;
        }
        free(c);
    }
    st->t_rescore += xr_now() - t1;
}

int knn_shard_search(KnnShard *s, const float *queries, size_t n_queries, int k, float *out_scores, int64_t *out_index,
                     KnnStats *stats, XrErr *e) {
    KnnStats st = {0};
    if (stats) *stats = st;
    if (k < 1 || k > s->max_k) return xr_errf(e, "knn device search: k %d outside 1..%d", k, s->max_k);
    double qmax;
    size_t nq1 = n_queries ? n_queries : 1;
    double *qnorm = xr_malloc(nq1 * sizeof *qnorm);
    if (knn_rows_check_norms(queries, n_queries, s->dim, 0, "query", qnorm, &qmax, e)) {
        free(qnorm);
        return -1;
    }
    const size_t dim = s->dim, n = s->n;
    /* bf16 screening: each query's |q'| and |q' - q| for its bound (knn_dev_bound) */
    double *qn16 = NULL, *qd16 = NULL;
    if (s->bf16) {
        double m16, md;
        qn16 = xr_malloc(nq1 * sizeof *qn16), qd16 = xr_malloc(nq1 * sizeof *qd16);
        bf16_row_errors(queries, n_queries, dim, qn16, qd16, &m16, &md);
    }
    int64_t *hi = xr_malloc(s->list_cap * sizeof *hi);
    float *hs = xr_malloc(s->list_cap * sizeof *hs), *hx = xr_malloc(s->list_cap * sizeof *hx);
    size_t *fail_g = xr_malloc((s->max_q + 1) * sizeof *fail_g);
    size_t *todo = xr_malloc((n_queries + 1) * sizeof *todo), *again = xr_malloc((n_queries + 1) * sizeof *again);
    float *qbuf = xr_malloc(s->max_q * dim * sizeof *qbuf);
    size_t ntodo = n_queries;
    for (size_t i = 0; i < n_queries; i++) todo[i] = i;
    size_t kk = (size_t)k + (size_t)knn_dev_guard(s->guard, k, s->bf16);
    if (kk > n) kk = n ? n : 1;
    if (kk > s->list_cap) kk = s->list_cap;
    int64_t n_again = 0;
    while (ntodo > 0) {
        size_t nagain = 0, kk_retry = kk;
        for (size_t b0 = 0; b0 < ntodo;) {
            size_t mq = s->list_cap / kk < s->max_q ? s->list_cap / kk : s->max_q;
            if (mq < 1) mq = 1;
            size_t m = ntodo - b0 < mq ? ntodo - b0 : mq, nfail = 0, kk_need = kk;
            for (size_t r = 0; r < m; r++) memcpy(qbuf + r * dim, queries + todo[b0 + r] * dim, dim * sizeof(float));
            if (n) screen_block(s, qbuf, m, kk, hi, hs, hx, &st);
            double tb = xr_now();
            /* each query of the block on its own (threads split them): sorted exact scores, the bound check, and
             * a list too short to prove it marked (fail_g: the list it asks for) for the serial pass below, which
             * keeps the retry order that of the queries */
            XR_OMP(omp parallel if (m * kk > 16384))
            {
                Cand *c = xr_malloc((kk > (size_t)k ? kk : (size_t)k) * sizeof *c);
                float *tmp = xr_malloc(kk * sizeof *tmp);
                XR_OMP(omp for schedule(dynamic, 8))
                for (size_t r = 0; r < m; r++) {
                    size_t qi = todo[b0 + r], cnt = 0;
                    float hmin = INFINITY;
                    fail_g[r] = 0;
                    for (size_t j = 0; n && j < kk; j++) {
                        size_t at = r * kk + j;
                        if (hi[at] < 0) continue;
                        tmp[cnt] = hs[at];
                        c[cnt++] = (Cand){hx[at], hi[at]};
                        if (hs[at] < hmin) hmin = hs[at];
                    }
                    qsort(c, cnt, sizeof *c, knn_cand_order);
                    if (n > cnt && cnt >= (size_t)k) {
                        /* the CPU search's bound (knn.c), for bf16 operands with their measured rounding */
                        double err = knn_dev_bound(dim, qnorm[qi], s->pmax, s->bf16, qn16 ? qn16[qi] : 0,
                                                   qd16 ? qd16[qi] : 0, s->pmax16, s->dpmax, hmin, c[k - 1].s);
                        if (!((double)hmin + err < (double)c[k - 1].s)) {
                            if (kk < n && kk < s->list_cap) {
                                /* screened again with a list long enough by the density of this one's scores */
                                fail_g[r] = knn_dev_grow(tmp, cnt, (size_t)k, kk, (double)c[k - 1].s - err, tmp);
                                continue;
                            }
                            cnt = knn_exhaustive_topk(queries + qi * dim, s->host_p, n, dim, s->offset, (size_t)k, c);
                            qsort(c, cnt, sizeof *c, knn_cand_order);
                        }
                    }
                    for (size_t j = 0; j < (size_t)k; j++) {
                        out_scores[qi * (size_t)k + j] = j < cnt ? c[j].s : -INFINITY;
                        out_index[qi * (size_t)k + j] = j < cnt ? c[j].i : -1;
                    }
                }
                free(c);
                free(tmp);
            }
            for (size_t r = 0; r < m; r++) {
                if (!fail_g[r]) continue;
                if (fail_g[r] > kk_need) kk_need = fail_g[r];
                nfail++;
                again[nagain++] = todo[b0 + r];
            }
            st.t_select += xr_now() - tb; /* the host's sort, bound check and exhaustive fallbacks */
            st.t_rescore += xr_now() - tb;
            b0 += m;
            if (kk_need > kk_retry) kk_retry = kk_need;
            /* more than 1 in 64 of the block failed: the guard is too short for this data; the rest of the pass
             * screens with the list its failures asked for */
            if (nfail >= 4 && nfail * 64 > m && kk_need > kk) {
                kk = kk_need < n ? kk_need : n;
                if (kk > s->list_cap) kk = s->list_cap;
            }
        }
        n_again += (int64_t)nagain;
        memcpy(todo, again, nagain * sizeof *todo);
        ntodo = nagain;
        if (kk_retry < kk * 2) kk_retry = kk * 2;
        kk = kk_retry < n ? kk_retry : n;
        if (kk > s->list_cap) kk = s->list_cap;
    }
    free(hi);
    free(hs);
    free(hx);
    free(fail_g);
    free(todo);
    free(again);
    free(qbuf);
    free(qnorm);
    free(qn16);
    free(qd16);
    st.n_exhaustive = n_again;
    if (stats) *stats = st;
    return 0;
}
