/* mine_embed.c: the mining run's embeddings of this rank's rows of a store (prompt tokens before each row's,
 * windows counted from row 0 so every float is the same for any rank count), read from or written to the
 * embedding cache (embcache.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "embcache.h"
#include "mine_internal.h"

static void mine_embed_fwd(void *ctx, const Batch *b, float *out) {
    const Mine *m = ctx;
    encoder_forward_embed(m->o->bi, b, m->o->pooling, m->o->normalize, out);
}

/* Embed rows [lo, hi) of s (lo a window boundary) with the prompt's tokens before each row's. */
static void mine_batch_progress(void *ctx, int64_t done) {
    Mine *m = ctx;
    mine_progress_line(m, m->prog_base + done, 0);
}

static int mine_embed_range(Mine *m, TokenStore *s, int64_t lo, int64_t hi, const char *prompt, float *out,
                            BatchRunStats *acc, XrErr *e) {
    const MineOpts *o = m->o;
    int64_t window = mine_window(o, h5store_rows(s));
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
        mine_batch_stats_add(acc, &bs);
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
int mine_embeddings(Mine *m, int which, TokenStore *s, int64_t lo, int64_t hi, uint64_t store_fp, float **out,
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
    for (int k = 0; k < m->size; k++) mine_batch_stats_add(&r->emb[which], &all[k]);
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
