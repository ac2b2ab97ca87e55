/* mine_dedup.c: the mining run's partition of the stores over the ranks (whole batching windows, balanced by
 * tokens), the row hashes every rank shares, the duplicate map (identical token sequences are one passage) and
 * the passages equal to each query. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "embcache.h"
#include "mine_internal.h"

int64_t mine_window(const MineOpts *o, int64_t n) {
    int64_t b = o->batch_size, full = b * o->bucket_batches;
    if (n >= full * MINE_MIN_WINDOWS) return full;
    int64_t w = (n + MINE_MIN_WINDOWS - 1) / MINE_MIN_WINDOWS; /* rows per window for MINE_MIN_WINDOWS windows */
    w = (w + b - 1) / b * b;                                    /* whole batches */
    return w < b ? b : w > full ? full : w;
}

void mine_partition(const TokenStore *s, int64_t window, int rank, int size, int64_t *lo, int64_t *hi) {
    int64_t n = h5store_rows(s), nw = (n + window - 1) / window;
    double *pre = xr_malloc(sizeof(double) * (size_t)(nw + 1));
    pre[0] = 0;
    for (int64_t w = 0; w < nw; w++) {
        double c = 0;
        for (int64_t i = w * window; i < mine_min64((w + 1) * window, n); i++) c += (double)h5store_row_len(s, i) + 2;
        pre[w + 1] = pre[w] + c;
    }
    int64_t b[2];
    for (int t = 0; t < 2; t++) {
        int r = rank + t;
        if (r <= 0) b[t] = 0;
        else if (r >= size) b[t] = nw;
        else {
            double target = pre[nw] * r / size;
            int64_t w = 0;
            while (w < nw && pre[w] < target) w++;
            b[t] = w;
        }
    }
    free(pre);
    *lo = mine_min64(b[0] * window, n);
    *hi = mine_min64(b[1] * window, n);
}

static uint64_t mine_row_hash(const int32_t *tok, int64_t len) {
    return embcache_hash(tok, sizeof(int32_t) * (size_t)len, (uint64_t)len * 0x9E3779B97F4A7C15ull + 1);
}


static int mine_hash_rows(TokenStore *s, int64_t lo, int64_t hi, uint64_t *out, XrErr *e) {
    TokBatch b = {0};
    int rc = 0;
    for (int64_t i = lo; i < hi && rc == 0; i += MINE_READ_ROWS) {
        int64_t j = mine_min64(i + MINE_READ_ROWS, hi);
        rc = h5store_read_range(s, i, j, &b, e);
        for (int64_t r = 0; rc == 0 && r < j - i; r++)
            out[i - lo + r] = mine_row_hash(b.tokens + b.offsets[r], b.offsets[r + 1] - b.offsets[r]);
    }
    tokbatch_free(&b);
    return rc;
}

/* Hash this rank's rows of a store and share them: every rank gets all n hashes. */
int mine_all_hashes(Mine *m, TokenStore *s, int64_t lo, int64_t hi, uint64_t **all, XrErr *e) {
    uint64_t *mine = xr_malloc(sizeof(uint64_t) * (size_t)(hi - lo + 1));
    int st = mine_hash_rows(s, lo, hi, mine, e);
    if (comm_check(m->c, st, e)) {
        free(mine);
        return -1;
    }
    size_t got = 0;
    *all = (uint64_t *)comm_allgather(m->c, mine, sizeof(uint64_t) * (size_t)(hi - lo), &got, NULL);
    free(mine);
    assert(got == sizeof(uint64_t) * (size_t)h5store_rows(s));
    return 0;
}

static int mine_hash_idx_cmp(const void *pa, const void *pb) {
    const MineHashIdx *a = pa, *b = pb;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

static int mine_same_tokens(const TokBatch *b, int64_t x, int64_t y) {
    int64_t lx = b->offsets[x + 1] - b->offsets[x], ly = b->offsets[y + 1] - b->offsets[y];
    return lx == ly && !memcmp(b->tokens + b->offsets[x], b->tokens + b->offsets[y], sizeof(int32_t) * (size_t)lx);
}

/* canon[i] = the first row whose tokens equal row i's. Equal hashes are confirmed by comparing the tokens. */
int mine_canonical(Mine *m, MineHashIdx **sorted_out, XrErr *e) {
    int64_t n = m->np;
    MineHashIdx *hs = xr_malloc(sizeof(MineHashIdx) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) hs[i] = (MineHashIdx){m->phash[i], i};
    qsort(hs, (size_t)n, sizeof(MineHashIdx), mine_hash_idx_cmp);
    m->canon = xr_malloc(sizeof(int64_t) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) m->canon[i] = i;
    /* rows that share a hash with another row: read them all at once */
    int64_t nd = 0;
    int64_t *rows = xr_malloc(sizeof(int64_t) * (size_t)(n + 1));
    for (int64_t a = 0, b; a < n; a = b) {
        for (b = a + 1; b < n && hs[b].h == hs[a].h; b++) {
        }
        if (b - a > 1)
            for (int64_t t = a; t < b; t++) rows[nd++] = hs[t].i;
    }
    int rc = 0;
    if (nd > 0) {
        TokBatch tb = {0};
        rc = h5store_read_rows(m->ps, rows, nd, &tb, e);
        int64_t pos = 0; /* rows[] follows hs order, so group members are consecutive */
        for (int64_t a = 0, b; rc == 0 && a < n; a = b) {
            for (b = a + 1; b < n && hs[b].h == hs[a].h; b++) {
            }
            if (b - a == 1) continue;
            for (int64_t t = a; t < b; t++) {
                for (int64_t u = a; u < t; u++) { /* earlier members (smaller rows): the first equal one wins */
                    if (m->canon[hs[u].i] != hs[u].i) continue;
                    if (mine_same_tokens(&tb, pos + (t - a), pos + (u - a))) {
                        m->canon[hs[t].i] = hs[u].i;
                        break;
                    }
                }
            }
            pos += b - a;
        }
        tokbatch_free(&tb);
    }
    free(rows);
    if (sorted_out) *sorted_out = hs;
    else free(hs);
    return rc;
}

/* Both peers drop passages whose text equals the query: here, canonical passages with the query's tokens. */
int mine_query_equal_passages(Mine *m, const MineHashIdx *hs, XrErr *e) {
    m->qx_off = xr_calloc((size_t)m->nq + 1, sizeof(int64_t));
    int64_t cap = 16, n = 0;
    int64_t *pq = xr_malloc(sizeof(int64_t) * (size_t)cap), *pp = xr_malloc(sizeof(int64_t) * (size_t)cap);
    for (int64_t q = 0; q < m->nq; q++) {
        MineHashIdx key = {m->qhash[q], -1};
        size_t lo = 0, hi = (size_t)m->np;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (mine_hash_idx_cmp(&hs[mid], &key) < 0) lo = mid + 1;
            else hi = mid;
        }
        for (size_t t = lo; t < (size_t)m->np && hs[t].h == key.h; t++) {
            if (m->canon[hs[t].i] != hs[t].i) continue;
            if (n == cap) {
                cap *= 2;
                pq = xr_realloc(pq, sizeof(int64_t) * (size_t)cap);
                pp = xr_realloc(pp, sizeof(int64_t) * (size_t)cap);
            }
            pq[n] = q;
            pp[n++] = hs[t].i;
        }
    }
    int rc = 0;
    m->qx_row = xr_malloc(sizeof(int64_t) * (size_t)(n + 1));
    if (n > 0) {
        TokBatch tq = {0}, tp = {0};
        rc = h5store_read_rows(m->qs, pq, n, &tq, e);
        if (rc == 0) rc = h5store_read_rows(m->ps, pp, n, &tp, e);
        int64_t k = 0;
        for (int64_t t = 0; rc == 0 && t < n; t++) {
            int64_t lq = tq.offsets[t + 1] - tq.offsets[t], lp = tp.offsets[t + 1] - tp.offsets[t];
            if (lq != lp || memcmp(tq.tokens + tq.offsets[t], tp.tokens + tp.offsets[t], sizeof(int32_t) * (size_t)lq))
                continue;
            m->qx_off[pq[t] + 1]++;
            m->qx_row[k++] = pp[t];
        }
        tokbatch_free(&tq);
        tokbatch_free(&tp);
    }
    for (int64_t q = 0; q < m->nq; q++) m->qx_off[q + 1] += m->qx_off[q];
    free(pq);
    free(pp);
    return rc;
}
