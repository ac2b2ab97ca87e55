/* mine.c: the hard-negative mining pipeline (see mine.h): store partition by whole batching windows, row hashes
 * and the duplicate map, embeddings (cache or encoder), block-wise sharded exact search with the merge on every
 * rank, cross-encoder rescoring spread over the ranks, per-query selection, and the gather of the groups. */
#define _GNU_SOURCE
#include "mine.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "embcache.h"
#include "h5store.h"
#include "metrics.h"

void mine_opts_default(MineOpts *o) {
    memset(o, 0, sizeof *o);
    o->pooling = POOL_MEAN;
    o->normalize = 1;
    o->max_len = 512;
    o->query_prompt = o->corpus_prompt = "";
    o->batch_size = 32;
    o->bucket_batches = 64;
    o->precision = "fp32-cpu";
    o->model_desc = "";
    o->ce_max_len = 512;
    o->ce_batch_size = 32;
    o->ce_sigmoid = 1;
    select_opts_default(&o->sel);
    knn_opts_default(&o->knn);
    o->query_block = 1024;
}

void mine_result_free(MineResult *r) {
    groups_free(&r->groups);
    memset(r, 0, sizeof *r);
}

/* ---- state of one run ---- */

typedef struct {
    Comm *c;
    int rank, size;
    const MineOpts *o;
    MineResult *r;
    SelectOpts sel;
    DsIndex ix;
    int have_ix;
    TokenStore *qs, *ps;
    int64_t nq, np;
    int dim;
    /* positives per query (CSR), distinct by canonical passage, and the mined queries */
    int64_t *pos_off, *pos_row;
    int64_t *mined, nmined;
    /* all qrels per query (CSR, any grade) for the metrics */
    int64_t *qrel_off;
    /* passages: this rank's rows, hashes of all rows, duplicate map, canonical rows */
    int64_t plo, phi, qlo, qhi;
    uint64_t *phash, *qhash;
    int64_t *canon;
    int64_t *crow, ncanon, coff, nlocal;
    float *pemb, *qemb;
    /* FlagEmbedding style: canonical passages whose tokens equal each query's (CSR over queries) */
    int64_t *qx_off, *qx_row;
    /* progress */
    const char *phase;
    int64_t prog_total, prog_base;
    double prog_t0, prog_last;
    int show;
} Mine;

static int64_t mine_min64(int64_t a, int64_t b) { return a < b ? a : b; }

static void mine_progress_line(Mine *m, int64_t done, int force) {
    if (!m->show) return;
    double now = xr_now();
    if (!force && now - m->prog_last < 0.25) return;
    m->prog_last = now;
    double dt = now - m->prog_t0;
    fprintf(stderr, "\r\033[Kxrank mine: %s %lld/%lld%s, %.1f/s", m->phase, (long long)done, (long long)m->prog_total,
            m->size > 1 ? " (rank 0)" : "", dt > 0 ? done / dt : 0.0);
    fflush(stderr);
}

static void mine_progress_begin(Mine *m, const char *phase, int64_t total) {
    m->phase = phase;
    m->prog_total = total;
    m->prog_base = 0;
    m->prog_t0 = xr_now();
    m->prog_last = 0;
}

static void mine_progress_end(Mine *m) {
    if (m->show) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

static void mine_batch_progress(void *ctx, int64_t done) {
    Mine *m = ctx;
    mine_progress_line(m, m->prog_base + done, 0);
}

/* Rows [*lo, *hi) of rank `rank`: whole windows of `window` rows counted from row 0, cut so that each rank gets
 * about the same number of tokens (specials included). Depends only on the store, window and size. */
static void mine_partition(const TokenStore *s, int64_t window, int rank, int size, int64_t *lo, int64_t *hi) {
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

#define MINE_READ_ROWS 65536

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
static int mine_all_hashes(Mine *m, TokenStore *s, int64_t lo, int64_t hi, uint64_t **all, XrErr *e) {
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

typedef struct {
    uint64_t h;
    int64_t i;
} HashIdx;

static int hash_idx_cmp(const void *pa, const void *pb) {
    const HashIdx *a = pa, *b = pb;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

static int mine_same_tokens(const TokBatch *b, int64_t x, int64_t y) {
    int64_t lx = b->offsets[x + 1] - b->offsets[x], ly = b->offsets[y + 1] - b->offsets[y];
    return lx == ly && !memcmp(b->tokens + b->offsets[x], b->tokens + b->offsets[y], sizeof(int32_t) * (size_t)lx);
}

/* canon[i] = the first row whose tokens equal row i's. Equal hashes are confirmed by comparing the tokens. */
static int mine_canonical(Mine *m, HashIdx **sorted_out, XrErr *e) {
    int64_t n = m->np;
    HashIdx *hs = xr_malloc(sizeof(HashIdx) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) hs[i] = (HashIdx){m->phash[i], i};
    qsort(hs, (size_t)n, sizeof(HashIdx), hash_idx_cmp);
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

/* FlagEmbedding drops passages whose text equals the query: here, canonical passages with the query's tokens. */
static int mine_query_equal_passages(Mine *m, const HashIdx *hs, XrErr *e) {
    m->qx_off = xr_calloc((size_t)m->nq + 1, sizeof(int64_t));
    int64_t cap = 16, n = 0;
    int64_t *pq = xr_malloc(sizeof(int64_t) * (size_t)cap), *pp = xr_malloc(sizeof(int64_t) * (size_t)cap);
    for (int64_t q = 0; q < m->nq; q++) {
        HashIdx key = {m->qhash[q], -1};
        size_t lo = 0, hi = (size_t)m->np;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (hash_idx_cmp(&hs[mid], &key) < 0) lo = mid + 1;
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

/* ---- embeddings ---- */

static void mine_embed_fwd(void *ctx, const Batch *b, float *out) {
    const Mine *m = ctx;
    encoder_forward_embed(m->o->bi, b, m->o->pooling, m->o->normalize, out);
}

/* Embed rows [lo, hi) of s (lo a window boundary) with the prompt's tokens before each row's. */
static int mine_embed_range(Mine *m, TokenStore *s, int64_t lo, int64_t hi, const char *prompt, float *out,
                            BatchRunStats *acc, XrErr *e) {
    const MineOpts *o = m->o;
    int64_t window = (int64_t)o->batch_size * o->bucket_batches;
    int64_t chunk = window * (MINE_READ_ROWS / window > 0 ? MINE_READ_ROWS / window : 1);
    int32_t *pids = NULL;
    size_t pcap = 0;
    int np = prompt[0] ? tok_encode(o->tok, prompt, strlen(prompt), &pids, &pcap) : 0;
    TokBatch tb = {0};
    int32_t *row = NULL;
    size_t row_cap = 0;
    BatchItem *items = xr_malloc(sizeof(BatchItem) * (size_t)(chunk + 1));
    int rc = 0;
    memset(acc, 0, sizeof *acc);
    for (int64_t i = lo; i < hi && rc == 0; i += chunk) {
        int64_t j = mine_min64(i + chunk, hi);
        if ((rc = h5store_read_range(s, i, j, &tb, e))) break;
        SeqStore seqs;
        seqs_init(&seqs);
        for (int64_t r = 0; r < j - i; r++) {
            int64_t len = tb.offsets[r + 1] - tb.offsets[r];
            if ((size_t)(np + len) > row_cap) {
                row_cap = (size_t)(np + len) * 2;
                row = xr_realloc(row, sizeof(int32_t) * row_cap);
            }
            if (np) memcpy(row, pids, sizeof(int32_t) * (size_t)np);
            memcpy(row + np, tb.tokens + tb.offsets[r], sizeof(int32_t) * (size_t)len);
            items[r] = (BatchItem){seqs_add_ids(&seqs, row, np + len), -1};
        }
        BatchRunStats bs;
        m->prog_base = i - lo;
        batch_run(o->tok, &seqs, items, j - i, o->max_len, o->batch_size, window, mine_embed_fwd, m, m->dim,
                  out + (size_t)(i - lo) * (size_t)m->dim, &bs, m->show ? mine_batch_progress : NULL, m);
        acc->items += bs.items;
        acc->batches += bs.batches;
        acc->real_tokens += bs.real_tokens;
        acc->padded_tokens += bs.padded_tokens;
        seqs_free(&seqs);
    }
    free(items);
    free(row);
    free(pids);
    tokbatch_free(&tb);
    return rc;
}

static int mine_mkdirs(const char *path, XrErr *e) {
    char *p = xr_strdup(path);
    for (char *s = p + 1;; s++) {
        int end = *s == 0;
        if (*s == '/' || end) {
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int err = errno;
                xr_errf(e, "cannot create the cache directory %s: %s", p, strerror(err));
                free(p);
                return -1;
            }
            if (end) break;
            *s = '/';
        }
    }
    free(p);
    return 0;
}

/* This rank's embeddings of a store (rows [lo, hi)), from the cache or the encoder; the cache is (re)written
 * after an embedding pass. which: 0 queries, 1 passages. Cache trouble is a warning, never a failure. */
static int mine_embeddings(Mine *m, int which, TokenStore *s, int64_t lo, int64_t hi, uint64_t store_fp, float **out,
                           XrErr *e) {
    const MineOpts *o = m->o;
    MineResult *r = m->r;
    const char *store = which ? "passages" : "queries", *prompt = which ? o->corpus_prompt : o->query_prompt;
    int64_t n = h5store_rows(s);
    *out = xr_malloc(sizeof(float) * (size_t)(hi - lo + 1) * (size_t)m->dim);
    char *path = NULL;
    EmbKey key = {o->model_fp,  store_fp,     store,         prompt, o->pooling == POOL_MEAN ? "mean" : "cls",
                  o->normalize, o->max_len, o->precision};
    int hit = 0;
    XrErr w = {{0}};
    if (o->cache_dir) {
        path = embcache_path(o->cache_dir, &key);
        snprintf(r->cache_path[which], sizeof r->cache_path[which], "%s", path);
        if (m->rank == 0) hit = embcache_lookup(path, n, m->dim, &w);
        comm_bcast(m->c, &hit, sizeof hit, 0);
    }
    double t0 = xr_now();
    int st;
    if (hit) {
        st = embcache_read_rows(path, n, m->dim, lo, hi, *out, e);
        if (comm_check(m->c, st, e)) {
            free(path);
            return -1;
        }
        r->cache_hit[which] = 1;
        r->t_embed[which] = xr_now() - t0;
        free(path);
        return 0;
    }
    mine_progress_begin(m, which ? "embedding passages" : "embedding queries", hi - lo);
    BatchRunStats bs;
    st = mine_embed_range(m, s, lo, hi, prompt, *out, &bs, e);
    mine_progress_end(m);
    if (comm_check(m->c, st, e)) {
        free(path);
        return -1;
    }
    r->t_embed[which] = xr_now() - t0;
    r->embedded[which] = n;
    size_t got;
    BatchRunStats *all = (BatchRunStats *)comm_allgather(m->c, &bs, sizeof bs, &got, NULL);
    memset(&r->emb[which], 0, sizeof r->emb[which]);
    for (int k = 0; k < m->size; k++) {
        r->emb[which].items += all[k].items;
        r->emb[which].batches += all[k].batches;
        r->emb[which].real_tokens += all[k].real_tokens;
        r->emb[which].padded_tokens += all[k].padded_tokens;
    }
    free(all);
    if (!path) return 0;
    /* write the cache: create (rank 0), rows (every rank), commit (rank 0); stop at the first failure */
    st = m->rank == 0 ? (mine_mkdirs(o->cache_dir, &w) || embcache_create(path, n, m->dim, &w) ? -1 : 0) : 0;
    if (comm_check(m->c, st, &w) == 0) {
        st = embcache_write_rows(path, n, m->dim, lo, hi, *out, &w);
        if (comm_check(m->c, st, &w) == 0 && m->rank == 0) {
            char desc[4096];
            char *mj = xr_strdup(o->model_desc), *pj = xr_strdup(prompt);
            for (char *c = mj; *c; c++)
                if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = '_';
            for (char *c = pj; *c; c++)
                if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = '_';
            snprintf(desc, sizeof desc,
                     "{\"model\": \"%s\", \"model_fingerprint\": \"%016llx\", \"store\": \"%s\", "
                     "\"store_fingerprint\": \"%016llx\", \"prompt\": \"%s\", \"pooling\": \"%s\", \"normalize\": %d, "
                     "\"max_length\": %d, \"precision\": \"%s\", \"rows\": %lld, \"dim\": %d}\n",
                     mj, (unsigned long long)o->model_fp, store, (unsigned long long)store_fp, pj, key.pooling,
                     o->normalize, o->max_len, o->precision, (long long)n, m->dim);
            free(mj);
            free(pj);
            if (embcache_commit(path, desc, &w)) snprintf(r->warnings[which], sizeof r->warnings[which],
                                                          "embedding cache not written: %s", w.msg);
        } else if (m->rank == 0) {
            embcache_abort(path);
            snprintf(r->warnings[which], sizeof r->warnings[which], "embedding cache not written: %s", w.msg);
        }
    } else if (m->rank == 0) {
        snprintf(r->warnings[which], sizeof r->warnings[which], "embedding cache not written: %s", w.msg);
    }
    comm_barrier(m->c);
    free(path);
    return 0;
}

/* ---- cross-encoder ---- */

static void mine_ce_fwd(void *ctx, const Batch *b, float *out) {
    const Mine *m = ctx;
    encoder_forward_score(m->o->ce, b, out);
    if (m->o->ce_sigmoid)
        for (int i = 0; i < b->B; i++) out[i] = 1.0f / (1.0f + expf(-out[i]));
}

/* Score the pairs (block query pq[t], passage pp[t]) of this block: windows of ce_batch_size * bucket_batches
 * pairs counted from the block's first pair, whole windows per rank; every rank gets all scores. */
static int mine_ce_block(Mine *m, const int64_t *qrows, int64_t nb, const int64_t *pq, const int64_t *pp,
                         int64_t npairs, float **scores, BatchRunStats *acc, XrErr *e) {
    const MineOpts *o = m->o;
    int64_t window = (int64_t)o->ce_batch_size * o->bucket_batches;
    int64_t nw = (npairs + window - 1) / window;
    int64_t a = mine_min64(nw * m->rank / m->size * window, npairs),
            b = mine_min64(nw * (m->rank + 1) / m->size * window, npairs);
    float *mine = xr_malloc(sizeof(float) * (size_t)(b - a + 1));
    int st = 0;
    if (b > a) {
        TokBatch tq = {0}, tp = {0};
        st = h5store_read_rows(m->qs, qrows, nb, &tq, e);
        if (st == 0) st = h5store_read_rows(m->ps, pp + a, b - a, &tp, e);
        if (st == 0) {
            SeqStore seqs;
            seqs_init(&seqs);
            for (int64_t i = 0; i < nb; i++)
                seqs_add_ids(&seqs, tq.tokens + tq.offsets[i], tq.offsets[i + 1] - tq.offsets[i]);
            BatchItem *items = xr_malloc(sizeof(BatchItem) * (size_t)(b - a));
            for (int64_t t = 0; t < b - a; t++) {
                int64_t s = seqs_add_ids(&seqs, tp.tokens + tp.offsets[t], tp.offsets[t + 1] - tp.offsets[t]);
                items[t] = (BatchItem){pq[a + t], s};
            }
            BatchRunStats bs;
            batch_run(o->ce_tok, &seqs, items, b - a, o->ce_max_len, o->ce_batch_size, window, mine_ce_fwd, m, 1, mine,
                      &bs, NULL, NULL);
            acc->items += bs.items;
            acc->batches += bs.batches;
            acc->real_tokens += bs.real_tokens;
            acc->padded_tokens += bs.padded_tokens;
            free(items);
            seqs_free(&seqs);
        }
        tokbatch_free(&tq);
        tokbatch_free(&tp);
    }
    if (comm_check(m->c, st, e)) {
        free(mine);
        return -1;
    }
    size_t got;
    *scores = (float *)comm_allgather(m->c, mine, sizeof(float) * (size_t)(b - a), &got, NULL);
    assert(got == sizeof(float) * (size_t)npairs);
    free(mine);
    return 0;
}

/* ---- search, rescoring and selection, one block of queries at a time ---- */

static int64_t mine_crow_find(const Mine *m, int64_t row) {
    int64_t lo = 0, hi = m->ncanon;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (m->crow[mid] < row) lo = mid + 1;
        else hi = mid;
    }
    assert(lo < m->ncanon && m->crow[lo] == row);
    return lo;
}

/* What each query sends to rank 0: negatives, their retriever and cross-encoder scores, its positives' scores. */
static size_t mine_record_bytes(const Mine *m, int64_t q) {
    int K = m->sel.num_negatives;
    int64_t npos = m->pos_off[q + 1] - m->pos_off[q];
    size_t n = sizeof(int64_t) * (size_t)K + sizeof(float) * (2 * (size_t)K + 2 * (size_t)npos);
    return (n + 7) & ~(size_t)7; /* the next record's int64s stay aligned */
}

typedef struct {
    MetricSpec spec[4];
    double *per_query;
    int64_t n;
} MineMetrics;

static void mine_block_metrics(Mine *m, MineMetrics *mm, const int64_t *qrows, int64_t nb, const int64_t *rows,
                               const float *sc, int k) {
    int depth = m->o->eval_depth < k ? m->o->eval_depth : k;
    MetricsHit *hits = xr_malloc(sizeof(MetricsHit) * (size_t)(depth + 1));
    char(*ids)[24] = xr_malloc(sizeof *ids * (size_t)(depth + 1));
    for (int64_t qi = 0; qi < nb; qi++) {
        int64_t q = qrows[qi];
        int nh = 0;
        for (int j = 0; j < depth; j++) {
            int64_t p = rows[qi * k + j];
            if (p < 0) break;
            snprintf(ids[nh], sizeof ids[nh], "%lld", (long long)p);
            hits[nh] = (MetricsHit){ids[nh], sc[qi * k + j]};
            nh++;
        }
        int64_t a = m->qrel_off[q], b = m->qrel_off[q + 1];
        MetricsJudgment *jd = xr_malloc(sizeof(MetricsJudgment) * (size_t)(b - a + 1));
        char(*jid)[24] = xr_malloc(sizeof *jid * (size_t)(b - a + 1));
        int nj = 0;
        for (int64_t t = a; t < b; t++) {
            int64_t p = m->canon[m->ix.qrel_passage[t]];
            int g = m->ix.qrel_grade[t], dup = 0;
            for (int u = 0; u < nj && !dup; u++)
                if (strtoll(jid[u], NULL, 10) == p) {
                    if (g > jd[u].grade) jd[u].grade = g;
                    dup = 1;
                }
            if (dup) continue;
            snprintf(jid[nj], sizeof jid[nj], "%lld", (long long)p);
            jd[nj] = (MetricsJudgment){jid[nj], g};
            nj++;
        }
        XrErr e;
        double *out = mm->per_query + (size_t)mm->n * 4;
        if (metrics_query(hits, (size_t)nh, jd, (size_t)nj, mm->spec, 4, out, &e) == 0) mm->n++;
        free(jd);
        free(jid);
    }
    free(hits);
    free(ids);
}

static int mine_search(Mine *m, XrErr *e) {
    const MineOpts *o = m->o;
    MineResult *r = m->r;
    const int K = m->sel.num_negatives, dim = m->dim;
    const int have_ce = o->ce != NULL;
    size_t ncand_sel = select_candidate_count(&m->sel);
    int64_t kreq = (int64_t)ncand_sel;
    if (o->eval_depth > kreq) kreq = o->eval_depth;
    if (kreq > m->ncanon) kreq = m->ncanon > 0 ? m->ncanon : 1;
    const int k = (int)kreq;
    r->search_k = k;
    int64_t QB = o->query_block;
    int ncand = (int)((int64_t)ncand_sel < k ? (int64_t)ncand_sel : k);

    /* rank 0: the output rows, one per (query, positive), in query order */
    GroupSet *g = &r->groups;
    int64_t nrows = 0;
    for (int64_t t = 0; t < m->nmined; t++) nrows += m->pos_off[m->mined[t] + 1] - m->pos_off[m->mined[t]];
    if (m->rank == 0) {
        g->n = nrows;
        g->k = K;
        g->query = xr_malloc(sizeof(int64_t) * (size_t)(nrows + 1));
        g->positive = xr_malloc(sizeof(int64_t) * (size_t)(nrows + 1));
        g->negatives = xr_malloc(sizeof(int64_t) * (size_t)(nrows + 1) * (size_t)K);
        g->scores = xr_malloc(sizeof(float) * (size_t)(nrows + 1) * (size_t)(K + 1));
        if (have_ce) g->ce_scores = xr_malloc(sizeof(float) * (size_t)(nrows + 1) * (size_t)(K + 1));
    }
    MineMetrics mm = {{{METRIC_MRR, 10}, {METRIC_NDCG, 10}, {METRIC_RECALL, 10}, {METRIC_RECALL, o->eval_depth}},
                      NULL, 0};
    if (m->rank == 0 && o->eval_depth > 0) mm.per_query = xr_malloc(sizeof(double) * 4 * (size_t)(m->nmined + 1));

    float *qb_send = xr_malloc(sizeof(float) * (size_t)(QB + 1) * (size_t)dim);
    float *ls = xr_malloc(sizeof(float) * (size_t)(QB + 1) * (size_t)k);
    int64_t *li = xr_malloc(sizeof(int64_t) * (size_t)(QB + 1) * (size_t)k);
    float *ms = xr_malloc(sizeof(float) * (size_t)(QB + 1) * (size_t)k);
    int64_t *mi = xr_malloc(sizeof(int64_t) * (size_t)(QB + 1) * (size_t)k);
    int64_t grow = 0; /* next output row (rank 0) */
    double t_search = 0, t_ce = 0, t_sel = 0;
    mine_progress_begin(m, "searching queries", m->nmined);
    int rc = 0;
    for (int64_t b0 = 0; b0 < m->nmined && rc == 0; b0 += QB) {
        int64_t b1 = mine_min64(b0 + QB, m->nmined), nb = b1 - b0;
        const int64_t *qrows = m->mined + b0;
        double t0 = xr_now();
        /* 1. the block's query embeddings to every rank (ranks own ascending row ranges: rank order = block order) */
        int64_t mycnt = 0;
        for (int64_t t = 0; t < nb; t++)
            if (qrows[t] >= m->qlo && qrows[t] < m->qhi)
                memcpy(qb_send + (size_t)(mycnt++) * dim, m->qemb + (size_t)(qrows[t] - m->qlo) * dim,
                       sizeof(float) * (size_t)dim);
        size_t got;
        float *qb = (float *)comm_allgather(m->c, qb_send, sizeof(float) * (size_t)mycnt * dim, &got, NULL);
        assert(got == sizeof(float) * (size_t)nb * dim);
        /* 2. local top-k over this rank's canonical passages, 3. merged on every rank */
        int st = 0;
        KnnStats ks = {0};
        if (m->nlocal > 0) {
            st = knn_search(qb, (size_t)nb, m->pemb, (size_t)m->nlocal, (size_t)dim, m->coff, k, &o->knn, ls, li, &ks,
                            e);
        } else {
            for (int64_t t = 0; t < nb * k; t++) ls[t] = -INFINITY, li[t] = -1;
        }
        r->knn.n_exhaustive += ks.n_exhaustive;
        if (comm_check(m->c, st, e)) {
            free(qb);
            rc = -1;
            break;
        }
        float *ls_all = (float *)comm_allgather(m->c, ls, sizeof(float) * (size_t)nb * k, &got, NULL);
        int64_t *li_all = (int64_t *)comm_allgather(m->c, li, sizeof(int64_t) * (size_t)nb * k, &got, NULL);
        knn_merge_topk((size_t)nb, k, (size_t)m->size, ls_all, li_all, ms, mi);
        free(ls_all);
        free(li_all);
        for (int64_t t = 0; t < nb * k; t++) mi[t] = mi[t] >= 0 ? m->crow[mi[t]] : -1;
        /* 4. retriever scores of the positives: computed by the rank that holds the passage's embedding */
        int64_t npb = 0;
        for (int64_t t = 0; t < nb; t++) npb += m->pos_off[qrows[t] + 1] - m->pos_off[qrows[t]];
        float *ps_mine = xr_malloc(sizeof(float) * (size_t)(npb + 1));
        int64_t *pos_first = xr_malloc(sizeof(int64_t) * (size_t)(nb + 1));
        for (int64_t t = 0, u = 0; t < nb; t++) {
            pos_first[t] = u;
            for (int64_t x = m->pos_off[qrows[t]]; x < m->pos_off[qrows[t] + 1]; x++, u++) {
                int64_t c = m->canon[m->pos_row[x]];
                ps_mine[u] = NAN;
                if (c >= m->plo && c < m->phi) {
                    int64_t lp = mine_crow_find(m, c) - m->coff;
                    ps_mine[u] = knn_score(qb + (size_t)t * dim, m->pemb + (size_t)lp * dim, (size_t)dim);
                }
            }
        }
        pos_first[nb] = npb;
        float *ps_all = (float *)comm_allgather(m->c, ps_mine, sizeof(float) * (size_t)npb, &got, NULL);
        float *pos_ret = xr_malloc(sizeof(float) * (size_t)(npb + 1));
        for (int64_t u = 0; u < npb; u++) {
            pos_ret[u] = NAN;
            for (int s = 0; s < m->size; s++)
                if (!isnan(ps_all[(size_t)s * npb + u])) pos_ret[u] = ps_all[(size_t)s * npb + u];
        }
        free(ps_all);
        free(ps_mine);
        free(qb);
        t_search += xr_now() - t0;

        /* 5. cross-encoder scores of every candidate the selection may look at and of the positives */
        float *ce_cand = NULL, *ce_pos = NULL;
        if (have_ce) {
            t0 = xr_now();
            int64_t cap = nb * ncand + npb + 1, npairs = 0;
            int64_t *pq = xr_malloc(sizeof(int64_t) * (size_t)cap), *pp = xr_malloc(sizeof(int64_t) * (size_t)cap);
            int64_t *slot = xr_malloc(sizeof(int64_t) * (size_t)(nb * ncand + 1));
            for (int64_t t = 0; t < nb; t++) {
                for (int j = 0; j < ncand; j++) {
                    int64_t p = mi[t * k + j];
                    slot[t * ncand + j] = p >= 0 ? npairs : -1;
                    if (p >= 0) pq[npairs] = t, pp[npairs++] = p;
                }
            }
            int64_t pos0 = npairs;
            for (int64_t t = 0; t < nb; t++)
                for (int64_t x = m->pos_off[qrows[t]]; x < m->pos_off[qrows[t] + 1]; x++)
                    pq[npairs] = t, pp[npairs++] = m->pos_row[x];
            float *all = NULL;
            st = mine_ce_block(m, qrows, nb, pq, pp, npairs, &all, &r->ce, e);
            if (st == 0) {
                r->ce_pairs += npairs;
                ce_cand = xr_malloc(sizeof(float) * (size_t)(nb * ncand + 1));
                for (int64_t t = 0; t < nb * ncand; t++) ce_cand[t] = slot[t] >= 0 ? all[slot[t]] : NAN;
                ce_pos = xr_malloc(sizeof(float) * (size_t)(npb + 1));
                memcpy(ce_pos, all + pos0, sizeof(float) * (size_t)npb);
            }
            free(all);
            free(pq);
            free(pp);
            free(slot);
            t_ce += xr_now() - t0;
            if (st) {
                free(pos_ret);
                free(pos_first);
                rc = -1;
                break;
            }
        }

        /* 6. selection: each rank takes a contiguous slice of the block's queries */
        t0 = xr_now();
        int64_t s0 = nb * m->rank / m->size, s1 = nb * (m->rank + 1) / m->size;
        size_t bytes = 0;
        for (int64_t t = s0; t < s1; t++) bytes += mine_record_bytes(m, qrows[t]);
        char *rec = xr_malloc(bytes + 1), *w = rec;
        int64_t *negi = xr_malloc(sizeof(int64_t) * (size_t)K);
        float *negs = xr_malloc(sizeof(float) * (size_t)K);
        for (int64_t t = s0; t < s1; t++) {
            int64_t q = qrows[t], npos = m->pos_off[q + 1] - m->pos_off[q];
            const float *pret = pos_ret + pos_first[t];
            SelectQuery sq = {.key = (uint64_t)q,
                              .cand_index = mi + t * k,
                              .cand_score = have_ce ? ce_cand + t * ncand : ms + t * k,
                              .cand_ce_score = have_ce ? ce_cand + t * ncand : NULL,
                              .n_cand = (size_t)ncand,
                              .pos_index = m->pos_row + m->pos_off[q],
                              .pos_score = have_ce ? ce_pos + pos_first[t] : pret,
                              .n_pos = (size_t)npos,
                              .exclude = m->qx_off ? m->qx_row + m->qx_off[q] : NULL,
                              .n_exclude = m->qx_off ? (size_t)(m->qx_off[q + 1] - m->qx_off[q]) : 0};
            int got_n = select_query(&m->sel, &sq, select_canon_array, m->canon, negi, negs, &r->stats);
            int64_t *wi = (int64_t *)w;
            float *wf = (float *)(w + sizeof(int64_t) * (size_t)K);
            for (int j = 0; j < K; j++) {
                wi[j] = j < got_n ? negi[j] : -1;
                float rs = NAN, ce = NAN;
                if (j < got_n)
                    for (int x = 0; x < ncand; x++)
                        if (mi[t * k + x] == negi[j]) {
                            rs = ms[t * k + x];
                            if (have_ce) ce = ce_cand[t * ncand + x];
                            break;
                        }
                wf[j] = rs;
                wf[K + j] = ce;
            }
            for (int64_t x = 0; x < npos; x++) {
                wf[2 * K + x] = pret[x];
                wf[2 * K + npos + x] = have_ce ? ce_pos[pos_first[t] + x] : NAN;
            }
            w += mine_record_bytes(m, q);
        }
        assert((size_t)(w - rec) == bytes);
        free(negi);
        free(negs);
        char *recs = comm_gather(m->c, rec, bytes, 0, &got, NULL);
        free(rec);
        t_sel += xr_now() - t0;
        /* 7. rank 0: the block's rows and metrics */
        if (m->rank == 0) {
            const char *p = recs;
            for (int64_t t = 0; t < nb; t++) {
                int64_t q = qrows[t], npos = m->pos_off[q + 1] - m->pos_off[q];
                const int64_t *ri = (const int64_t *)p;
                const float *rf = (const float *)(p + sizeof(int64_t) * (size_t)K);
                for (int64_t x = 0; x < npos; x++, grow++) {
                    g->query[grow] = q;
                    g->positive[grow] = m->pos_row[m->pos_off[q] + x];
                    memcpy(g->negatives + grow * K, ri, sizeof(int64_t) * (size_t)K);
                    float *sc = g->scores + grow * (K + 1);
                    sc[0] = rf[2 * K + x];
                    memcpy(sc + 1, rf, sizeof(float) * (size_t)K);
                    if (have_ce) {
                        float *cc = g->ce_scores + grow * (K + 1);
                        cc[0] = rf[2 * K + npos + x];
                        memcpy(cc + 1, rf + K, sizeof(float) * (size_t)K);
                    }
                }
                p += mine_record_bytes(m, q);
            }
            if (mm.per_query) mine_block_metrics(m, &mm, qrows, nb, mi, ms, k);
        }
        free(recs);
        free(ce_cand);
        free(ce_pos);
        free(pos_ret);
        free(pos_first);
        mine_progress_line(m, b1, 0);
    }
    mine_progress_end(m);
    if (rc == 0 && m->rank == 0 && mm.per_query) {
        double mean[4];
        metrics_mean(mm.per_query, (size_t)mm.n, 4, mean);
        r->have_metrics = 1;
        r->mrr10 = mean[0];
        r->ndcg10 = mean[1];
        r->recall10 = mean[2];
        r->recall_depth = mean[3];
    }
    free(mm.per_query);
    free(qb_send);
    free(ls);
    free(li);
    free(ms);
    free(mi);
    r->t_search = t_search;
    r->t_ce = t_ce;
    r->t_select = t_sel;
    return rc;
}

/* ---- the pipeline ---- */

static void mine_free(Mine *m) {
    if (m->have_ix) ds_index_free(&m->ix);
    if (m->qs) h5store_close(m->qs);
    if (m->ps) h5store_close(m->ps);
    free(m->pos_off);
    free(m->pos_row);
    free(m->mined);
    free(m->qrel_off);
    free(m->phash);
    free(m->qhash);
    free(m->canon);
    free(m->crow);
    free(m->pemb);
    free(m->qemb);
    free(m->qx_off);
    free(m->qx_row);
}

/* Positives: qrels with grade > 0, distinct by canonical passage (a duplicate of a positive is the same
 * positive, as in sentence-transformers' text-deduplicated corpus), first row kept. */
static void mine_positives(Mine *m) {
    const DsIndex *ix = &m->ix;
    m->pos_off = xr_calloc((size_t)m->nq + 1, sizeof(int64_t));
    m->qrel_off = xr_calloc((size_t)m->nq + 1, sizeof(int64_t));
    m->pos_row = xr_malloc(sizeof(int64_t) * (size_t)(ix->nqrels + 1));
    int64_t n = 0;
    for (int64_t t = 0; t < ix->nqrels; t++) m->qrel_off[ix->qrel_query[t] + 1]++;
    for (int64_t q = 0; q < m->nq; q++) m->qrel_off[q + 1] += m->qrel_off[q];
    /* qrels are sorted by query (docs/FORMATS.md) */
    for (int64_t q = 0; q < m->nq; q++) {
        int64_t start = n;
        for (int64_t t = m->qrel_off[q]; t < m->qrel_off[q + 1]; t++) {
            if (ix->qrel_grade[t] <= 0) continue;
            int64_t p = ix->qrel_passage[t], dup = 0;
            for (int64_t u = start; u < n && !dup; u++) dup = m->canon[m->pos_row[u]] == m->canon[p];
            if (!dup) m->pos_row[n++] = p;
        }
        m->pos_off[q + 1] = n;
    }
    m->mined = xr_malloc(sizeof(int64_t) * (size_t)(m->nq + 1));
    int maxp = 0;
    for (int64_t q = 0; q < m->nq; q++) {
        int64_t c = m->pos_off[q + 1] - m->pos_off[q];
        if (c > 0) m->mined[m->nmined++] = q;
        if (c > maxp) maxp = (int)c;
    }
    m->r->positives = n;
    m->r->mined_queries = m->nmined;
    m->r->queries_no_positive = m->nq - m->nmined;
    m->sel.max_positives = maxp > 0 ? maxp : 1;
}

int mine_run(Comm *c, const MineOpts *o, MineResult *r, XrErr *e) {
    memset(r, 0, sizeof *r);
    Mine m = {0};
    m.c = c;
    m.rank = comm_rank(c);
    m.size = comm_size(c);
    m.o = o;
    m.r = r;
    m.sel = o->sel;
    m.show = o->progress && m.rank == 0;
    m.dim = encoder_config(o->bi)->hidden;
    double t_start = xr_now();
    int rc = -1;

    /* the dataset, on every rank; its tokenizer must be the models' */
    int st = ds_read_index(o->dataset, &m.ix, e);
    m.have_ix = st == 0;
    if (st == 0 && !(m.qs = h5store_open(o->dataset, "queries", e))) st = -1;
    if (st == 0 && !(m.ps = h5store_open(o->dataset, "passages", e))) st = -1;
    if (st == 0) {
        char fp[24];
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)tok_fingerprint(o->tok));
        if (strcmp(fp, m.ix.tokenizer_fingerprint))
            st = xr_errf(e,
                         "%s was tokenized with another tokenizer (%s %s) than the bi-encoder's (%s %s): run xrank "
                         "tokenize with this --model, or mine with the model the dataset was made for",
                         o->dataset, m.ix.tokenizer_kind, m.ix.tokenizer_fingerprint,
                         tok_kind(o->tok) == TOK_WORDPIECE ? "wordpiece" : "sentencepiece", fp);
        if (st == 0 && o->ce_tok) {
            snprintf(fp, sizeof fp, "%016llx", (unsigned long long)tok_fingerprint(o->ce_tok));
            if (strcmp(fp, m.ix.tokenizer_fingerprint))
                st = xr_errf(e,
                             "the cross-encoder's tokenizer (%s) is not the one %s was tokenized with (%s): the "
                             "stores hold one tokenizer's ids, so the bi-encoder and the cross-encoder must share it",
                             fp, o->dataset, m.ix.tokenizer_fingerprint);
        }
    }
    if (comm_check(c, st, e)) goto done;
    m.nq = h5store_rows(m.qs);
    m.np = h5store_rows(m.ps);
    r->num_queries = m.nq;
    r->num_passages = m.np;
    if (m.np == 0) {
        xr_errf(e, "%s: the passage store is empty: nothing to mine from", o->dataset);
        goto done;
    }

    /* rows of each rank, hashes of all rows, the duplicate map */
    double t0 = xr_now();
    int64_t window = (int64_t)o->batch_size * o->bucket_batches;
    mine_partition(m.ps, window, m.rank, m.size, &m.plo, &m.phi);
    mine_partition(m.qs, window, m.rank, m.size, &m.qlo, &m.qhi);
    if (mine_all_hashes(&m, m.ps, m.plo, m.phi, &m.phash, e)) goto done;
    if (mine_all_hashes(&m, m.qs, m.qlo, m.qhi, &m.qhash, e)) goto done;
    HashIdx *sorted = NULL;
    int flag = m.sel.style == SELECT_STYLE_FLAG;
    st = mine_canonical(&m, flag ? &sorted : NULL, e);
    if (st == 0 && flag) st = mine_query_equal_passages(&m, sorted, e);
    free(sorted);
    if (comm_check(c, st, e)) goto done;
    m.crow = xr_malloc(sizeof(int64_t) * (size_t)(m.np + 1));
    for (int64_t i = 0; i < m.np; i++) {
        if (m.canon[i] != i) continue;
        if (i < m.plo) m.coff++;
        m.crow[m.ncanon++] = i;
    }
    r->duplicate_passages = m.np - m.ncanon;
    uint64_t tfp = tok_fingerprint(o->tok);
    uint64_t pfp = embcache_hash(m.phash, sizeof(uint64_t) * (size_t)m.np, tfp ^ 0x70617373);
    uint64_t qfp = embcache_hash(m.qhash, sizeof(uint64_t) * (size_t)m.nq, tfp ^ 0x71756572);
    r->t_hash = xr_now() - t0;

    /* positives and the selection window */
    mine_positives(&m);
    if (m.nmined == 0) {
        xr_errf(e, "%s: no query has a positive (a qrel with grade > 0): nothing to mine", o->dataset);
        goto done;
    }
    if (flag && o->fill_from_corpus) m.sel.fill_from_corpus = m.np;
    if (select_resolve(&m.sel, o->ce != NULL, e)) goto done;
    r->sel = m.sel;

    /* embeddings: queries, then passages (kept: this rank's canonical rows, compacted in row order) */
    if (mine_embeddings(&m, 0, m.qs, m.qlo, m.qhi, qfp, &m.qemb, e)) goto done;
    if (mine_embeddings(&m, 1, m.ps, m.plo, m.phi, pfp, &m.pemb, e)) goto done;
    for (int64_t i = m.plo; i < m.phi; i++) {
        if (m.canon[i] != i) continue;
        if (m.nlocal != i - m.plo)
            memmove(m.pemb + (size_t)m.nlocal * m.dim, m.pemb + (size_t)(i - m.plo) * m.dim,
                    sizeof(float) * (size_t)m.dim);
        m.nlocal++;
    }

    if (mine_search(&m, e)) goto done;

    /* skip counts and timings over the ranks */
    size_t got;
    SelectStats *all = (SelectStats *)comm_allgather(c, &r->stats, sizeof r->stats, &got, NULL);
    memset(&r->stats, 0, sizeof r->stats);
    for (int s = 0; s < m.size; s++) select_stats_add(&r->stats, &all[s]);
    free(all);
    double mine_t[6] = {r->t_hash, r->t_embed[0], r->t_embed[1], r->t_search, r->t_ce, r->t_select};
    double *ts = (double *)comm_allgather(c, mine_t, sizeof mine_t, &got, NULL);
    for (int s = 0; s < m.size; s++) {
        const double *x = ts + 6 * s;
        if (x[0] > r->t_hash) r->t_hash = x[0];
        if (x[1] > r->t_embed[0]) r->t_embed[0] = x[1];
        if (x[2] > r->t_embed[1]) r->t_embed[1] = x[2];
        if (x[3] > r->t_search) r->t_search = x[3];
        if (x[4] > r->t_ce) r->t_ce = x[4];
        if (x[5] > r->t_select) r->t_select = x[5];
    }
    free(ts);
    int64_t kx[2] = {r->knn.n_exhaustive, r->ce.items};
    int64_t *ka = (int64_t *)comm_allgather(c, kx, sizeof kx, &got, NULL);
    r->knn.n_exhaustive = 0;
    r->ce.items = 0;
    for (int s = 0; s < m.size; s++) r->knn.n_exhaustive += ka[2 * s], r->ce.items += ka[2 * s + 1];
    free(ka);

    if (m.rank == 0) {
        GroupSet *g = &r->groups;
        g->num_queries = m.nq;
        g->num_passages = m.np;
        snprintf(g->tokenizer_fingerprint, sizeof g->tokenizer_fingerprint, "%s", m.ix.tokenizer_fingerprint);
        char *real = realpath(o->dataset, NULL);
        snprintf(g->dataset, sizeof g->dataset, "%s", real ? real : o->dataset);
        free(real);
    }
    r->t_total = xr_now() - t_start;
    rc = 0;
done:
    mine_free(&m);
    if (rc) groups_free(&r->groups);
    return rc;
}

/* ---- report ---- */

static int mine_float_cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* torch.quantile's linear interpolation on sorted values */
static double mine_quantile(const float *s, int64_t n, double q) {
    double pos = q * (double)(n - 1);
    int64_t i = (int64_t)floor(pos);
    double f = pos - (double)i;
    return i + 1 < n ? s[i] + f * ((double)s[i + 1] - s[i]) : s[i];
}

static void mine_describe(float *v, int64_t n, double out[9]) {
    out[0] = (double)n;
    for (int i = 1; i < 9; i++) out[i] = NAN;
    if (n == 0) return;
    qsort(v, (size_t)n, sizeof(float), mine_float_cmp);
    double sum = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) sum += v[i];
    double mean = sum / (double)n;
    for (int64_t i = 0; i < n; i++) ss += ((double)v[i] - mean) * ((double)v[i] - mean);
    out[1] = mean;
    out[2] = v[(n - 1) / 2]; /* torch.median: the lower of the two middle values */
    out[3] = n > 1 ? sqrt(ss / (double)(n - 1)) : NAN;
    out[4] = v[0];
    out[5] = mine_quantile(v, n, 0.25);
    out[6] = mine_quantile(v, n, 0.5);
    out[7] = mine_quantile(v, n, 0.75);
    out[8] = v[n - 1];
}

static void mine_pct(FILE *f, const char *what, int64_t n, int64_t of) {
    if (n) fprintf(f, "    %-16s %12lld  (%.2f%% of %lld candidates)\n", what, (long long)n, of ? 100.0 * n / of : 0.0,
                   (long long)of);
}

void mine_report(FILE *f, const MineOpts *o, const MineResult *r) {
    const GroupSet *g = &r->groups;
    const SelectStats *s = &r->stats;
    const SelectOpts *so = &r->sel;
    fprintf(f, "xrank mine: %lld queries (%lld with positives), %lld passages (%lld duplicates searched once), "
               "%lld positives; top %lld retrieved per query\n",
            (long long)r->num_queries, (long long)r->mined_queries, (long long)r->num_passages,
            (long long)r->duplicate_passages, (long long)r->positives, (long long)r->search_k);
    if (so->style == SELECT_STYLE_ST)
        fprintf(f, "  selection: sentence-transformers style: %d negatives from survivors ranked %d..%d, sampling %s\n",
                so->num_negatives, so->range_min, so->range_max,
                so->sampling == SELECT_SAMPLE_TOP ? "top" : "random");
    else
        fprintf(f, "  selection: FlagEmbedding style: %d negatives sampled from retrieval ranks %d-%d, %s\n",
                so->num_negatives, so->range_min, so->range_max,
                so->sampling == SELECT_SAMPLE_TOP ? "top" : "random");
    /* the table sentence-transformers prints (triplet view: each negative once per positive of its query) */
    const float *sc = g->ce_scores ? g->ce_scores : g->scores;
    int K = g->k;
    float *pos = xr_malloc(sizeof(float) * (size_t)(g->n + 1));
    float *neg = xr_malloc(sizeof(float) * (size_t)(g->n * K + 1));
    float *dif = xr_malloc(sizeof(float) * (size_t)(g->n * K + 1));
    int64_t nn = 0;
    for (int64_t i = 0; i < g->n; i++) {
        const float *row = sc + i * (K + 1);
        pos[i] = row[0];
        for (int j = 0; j < K && g->negatives[i * K + j] >= 0; j++) {
            if (isnan(row[1 + j])) continue; /* FlagEmbedding fill: no score */
            neg[nn] = row[1 + j];
            dif[nn++] = row[0] - row[1 + j];
        }
    }
    double dp[9], dn[9], dd[9];
    mine_describe(pos, g->n, dp);
    mine_describe(neg, nn, dn);
    mine_describe(dif, nn, dd);
    free(pos);
    free(neg);
    free(dif);
    fprintf(f, "  scores: %s\n", g->ce_scores ? "cross-encoder" : "bi-encoder (retriever)");
    fprintf(f, "  %-6s %14s %14s %14s\n", "Metric", "Positive", "Negative", "Difference");
    fprintf(f, "  %-6s %14lld %14lld %14s\n", "Count", (long long)dp[0], (long long)dn[0], "");
    static const char *names[] = {"", "Mean", "Median", "Std", "Min", "25%", "50%", "75%", "Max"};
    for (int i = 1; i < 9; i++) fprintf(f, "  %-6s %14.4f %14.4f %14.4f\n", names[i], dp[i], dn[i], dd[i]);
    fprintf(f, "  candidates looked at: %lld; skipped by rule:\n", (long long)s->candidates);
    mine_pct(f, "positive", s->positive, s->candidates);
    mine_pct(f, "query text", s->excluded, s->candidates);
    mine_pct(f, "duplicate", s->duplicate, s->candidates);
    mine_pct(f, "absolute_margin", s->absolute_margin, s->candidates);
    mine_pct(f, "relative_margin", s->relative_margin, s->candidates);
    mine_pct(f, "max_score", s->max_score, s->candidates);
    mine_pct(f, "min_score", s->min_score, s->candidates);
    mine_pct(f, "ce_max_score", s->ce_max_score, s->candidates);
    mine_pct(f, "range_min", s->range_min, s->candidates);
    mine_pct(f, "range_max", s->range_max, s->candidates);
    mine_pct(f, "not sampled", s->not_sampled, s->candidates);
    fprintf(f, "  negatives: %lld picked%s", (long long)s->negatives, s->filled ? "" : "\n");
    if (s->filled) fprintf(f, " (%lld filled from the corpus)\n", (long long)s->filled);
    if (s->short_queries)
        fprintf(f,
                "  Could not find enough negatives for %lld of %lld queries (%.2f%%): consider range_max%s%s%s%s\n",
                (long long)s->short_queries, (long long)s->queries, 100.0 * s->short_queries / (double)s->queries,
                so->range_min ? ", range_min" : "", isnan(so->absolute_margin) ? "" : ", absolute_margin",
                isnan(so->relative_margin) ? "" : ", relative_margin", isnan(so->max_score) ? "" : ", max_score");
    if (r->have_metrics)
        fprintf(f, "  retrieval by the bi-encoder (%lld queries, distinct passages): MRR@10 %.4f  NDCG@10 %.4f  "
                   "Recall@10 %.4f  Recall@%d %.4f\n",
                (long long)r->mined_queries, r->mrr10, r->ndcg10, r->recall10, o->eval_depth, r->recall_depth);
    static const char *which[] = {"queries", "passages"};
    for (int w = 0; w < 2; w++) {
        if (r->cache_hit[w])
            fprintf(f, "  %s: embeddings read from the cache %s (%.2f s)\n", which[w], r->cache_path[w], r->t_embed[w]);
        else
            fprintf(f, "  %s: %lld embedded in %.2f s (%.1f/s, padding efficiency %.1f%%)%s%s\n", which[w],
                    (long long)r->embedded[w], r->t_embed[w],
                    r->t_embed[w] > 0 ? r->embedded[w] / r->t_embed[w] : 0.0,
                    r->emb[w].padded_tokens ? 100.0 * r->emb[w].real_tokens / r->emb[w].padded_tokens : 100.0,
                    r->cache_path[w][0] ? ", cached in " : "", r->cache_path[w]);
        if (r->warnings[w][0]) fprintf(f, "  warning: %s\n", r->warnings[w]);
    }
    if (o->ce)
        fprintf(f, "  cross-encoder: %lld pairs scored in %.2f s (%.1f pairs/s)\n", (long long)r->ce_pairs, r->t_ce,
                r->t_ce > 0 ? r->ce_pairs / r->t_ce : 0.0);
    fprintf(f, "  time: hashing %.2f s, search %.2f s (%lld queries re-searched exhaustively), selection %.2f s, "
               "total %.2f s\n",
            r->t_hash, r->t_search, (long long)r->knn.n_exhaustive, r->t_select, r->t_total);
}

/* ---- jsonl ---- */

int mine_jsonl_parse_format(const char *s, MineJsonlFormat *f) {
    static const char *names[] = {"triplet", "n-tuple", "labeled-pair", "labeled-list", "flagembedding"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) {
            *f = (MineJsonlFormat)i;
            return 0;
        }
    return -1;
}

static void mj_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') fputs("\\\"", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void mj_float(FILE *f, float v) {
    if (!isfinite(v)) {
        fputs("null", f);
        return;
    }
    char tmp[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
        if (strtof(tmp, NULL) == v) break;
    }
    fputs(tmp, f);
}

static void mj_key(FILE *f, const MineTexts *t, const char *key, int first) {
    fprintf(f, "%s\"%s%s\": ", first ? "" : ", ", key, t->ids ? "_id" : "");
}

static void mj_q(FILE *f, const MineTexts *t, int64_t row) {
    size_t n;
    const char *s = t->query(t->ctx, row, &n);
    mj_str(f, s, n);
}

static void mj_p(FILE *f, const MineTexts *t, int64_t row) {
    size_t n;
    const char *s = t->passage(t->ctx, row, &n);
    mj_str(f, s, n);
}

static void mine_jsonl_body(FILE *f, const GroupSet *g, MineJsonlFormat fmt, int os, const MineTexts *t) {
    const float *sc = g->ce_scores ? g->ce_scores : g->scores;
    const int K = g->k;
    for (int64_t i = 0; i < g->n;) {
        int64_t end = i; /* rows of one query: [i, end) */
        while (end < g->n && g->query[end] == g->query[i]) end++;
        int64_t q = g->query[i];
        if (fmt == MINE_JSONL_FLAG) {
            int nn = groups_row_negatives(g, i);
            fprintf(f, "{");
            mj_key(f, t, "query", 1);
            mj_q(f, t, q);
            fprintf(f, ", \"pos%s\": [", t->ids ? "_ids" : "");
            for (int64_t r = i; r < end; r++) {
                if (r > i) fputs(", ", f);
                mj_p(f, t, g->positive[r]);
            }
            fprintf(f, "], \"neg%s\": [", t->ids ? "_ids" : "");
            for (int j = 0; j < nn; j++) {
                if (j) fputs(", ", f);
                mj_p(f, t, g->negatives[i * K + j]);
            }
            fputs("]", f);
            if (os) {
                fputs(", \"pos_scores\": [", f);
                for (int64_t r = i; r < end; r++) {
                    if (r > i) fputs(", ", f);
                    mj_float(f, sc[r * (K + 1)]);
                }
                fputs("], \"neg_scores\": [", f);
                for (int j = 0; j < nn; j++) {
                    if (j) fputs(", ", f);
                    mj_float(f, sc[i * (K + 1) + 1 + j]);
                }
                fputs("]", f);
            }
            fputs("}\n", f);
        } else if (fmt == MINE_JSONL_LABELED_PAIR) {
            for (int64_t r = i; r < end; r++) {
                fputs("{", f);
                mj_key(f, t, "anchor", 1);
                mj_q(f, t, q);
                mj_key(f, t, "positive", 0);
                mj_p(f, t, g->positive[r]);
                if (os) fputs(", \"score\": ", f), mj_float(f, sc[r * (K + 1)]);
                else fputs(", \"label\": 1", f);
                fputs("}\n", f);
            }
            int nn = groups_row_negatives(g, i);
            for (int j = 0; j < nn; j++) {
                fputs("{", f);
                mj_key(f, t, "anchor", 1);
                mj_q(f, t, q);
                mj_key(f, t, "positive", 0);
                mj_p(f, t, g->negatives[i * K + j]);
                if (os) fputs(", \"score\": ", f), mj_float(f, sc[i * (K + 1) + 1 + j]);
                else fputs(", \"label\": 0", f);
                fputs("}\n", f);
            }
        } else {
            for (int64_t r = i; r < end; r++) {
                int nn = groups_row_negatives(g, r);
                const float *rs = sc + r * (K + 1);
                if (fmt == MINE_JSONL_TRIPLET) {
                    for (int j = 0; j < nn; j++) {
                        fputs("{", f);
                        mj_key(f, t, "anchor", 1);
                        mj_q(f, t, q);
                        mj_key(f, t, "positive", 0);
                        mj_p(f, t, g->positive[r]);
                        mj_key(f, t, "negative", 0);
                        mj_p(f, t, g->negatives[r * K + j]);
                        if (os) fputs(", \"scores\": [", f), mj_float(f, rs[0]), fputs(", ", f), mj_float(f, rs[1 + j]),
                                fputs("]", f);
                        fputs("}\n", f);
                    }
                } else if (fmt == MINE_JSONL_NTUPLE) {
                    if (nn < K) continue; /* sentence-transformers keeps only complete tuples */
                    fputs("{", f);
                    mj_key(f, t, "anchor", 1);
                    mj_q(f, t, q);
                    mj_key(f, t, "positive", 0);
                    mj_p(f, t, g->positive[r]);
                    for (int j = 0; j < K; j++) {
                        char key[32];
                        snprintf(key, sizeof key, "negative_%d", j + 1);
                        mj_key(f, t, key, 0);
                        mj_p(f, t, g->negatives[r * K + j]);
                    }
                    if (os) {
                        fputs(", \"scores\": [", f);
                        for (int j = 0; j <= K; j++) {
                            if (j) fputs(", ", f);
                            mj_float(f, rs[j]);
                        }
                        fputs("]", f);
                    }
                    fputs("}\n", f);
                } else { /* labeled-list */
                    if (nn == 0) continue;
                    fputs("{", f);
                    mj_key(f, t, "anchor", 1);
                    mj_q(f, t, q);
                    fprintf(f, ", \"positive%s\": [", t->ids ? "_ids" : "");
                    mj_p(f, t, g->positive[r]);
                    for (int j = 0; j < nn; j++) fputs(", ", f), mj_p(f, t, g->negatives[r * K + j]);
                    fputs(os ? "], \"scores\": [" : "], \"labels\": [1", f);
                    for (int j = os ? 0 : 1; j <= nn; j++) {
                        if (j) fputs(", ", f);
                        if (os) mj_float(f, rs[j]);
                        else fputs("0", f);
                    }
                    fputs("]}\n", f);
                }
            }
        }
        i = end;
    }
}

int mine_write_jsonl(const GroupSet *g, MineJsonlFormat fmt, int output_scores, const MineTexts *t, const char *path,
                     XrErr *e) {
    if (!strcmp(path, "-")) {
        mine_jsonl_body(stdout, g, fmt, output_scores, t);
        return fflush(stdout) == 0 ? 0 : xr_errf(e, "writing to stdout failed: %s", strerror(errno));
    }
    size_t n = strlen(path) + 32;
    char *tmp = xr_malloc(n);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        xr_errf(e, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    mine_jsonl_body(f, g, fmt, output_scores, t);
    int ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, err = errno;
    if (!ok) {
        remove(tmp);
        xr_errf(e, "writing %s failed: %s", path, strerror(err));
    }
    free(tmp);
    return ok ? 0 : -1;
}
