/* mine.c: the hard-negative mining pipeline (see mine.h), driving its steps in order: the dataset and its
 * tokenizer check, the partition and duplicate map (mine_dedup.c), the positives, the embeddings (mine_embed.c),
 * the block-wise search, rescoring and selection (mine_search.c, mine_ce.c), and the sums over the ranks. */
#define _GNU_SOURCE
#include "mine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embcache.h"
#include "mine_internal.h"

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
    knn_dev_opts_default(&o->knn_dev);
    o->query_block = 1024;
}

void mine_result_free(MineResult *r) {
    groups_free(&r->groups);
    free(r->rank_search_bytes);
    free(r->rank_rss_kib);
    free(r->rank_resident);
    free(r->rank_setup_s);
    memset(r, 0, sizeof *r);
}

void mine_progress_line(Mine *m, int64_t done, int force) {
    (void)force; /* xr_progress paces the lines */
    xr_progress_update(&m->prog, done, NULL);
}

void mine_progress_begin(Mine *m, const char *phase, int64_t total) {
    char what[64];
    snprintf(what, sizeof what, "xrank mine: %s%s", phase, m->size > 1 ? " (rank 0's share)" : "");
    xr_progress_begin(&m->prog, m->show, what, strncmp(phase, "embedding", 9) ? "queries" : "texts", total);
    m->prog_base = 0;
}

void mine_progress_end(Mine *m) { xr_progress_end(&m->prog); }

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
    mine_partition(m.ps, mine_window(o, m.np), m.rank, m.size, &m.plo, &m.phi);
    mine_partition(m.qs, mine_window(o, m.nq), m.rank, m.size, &m.qlo, &m.qhi);
    if (mine_all_hashes(&m, m.ps, m.plo, m.phi, &m.phash, e)) goto done;
    if (mine_all_hashes(&m, m.qs, m.qlo, m.qhi, &m.qhash, e)) goto done;
    MineHashIdx *sorted = NULL;
    int flag = m.sel.style == SELECT_STYLE_FLAG;
    /* both styles drop the passages whose text is the query's (sentence-transformers v6 reserves a candidate
     * slot for it, FlagEmbedding filters it) */
    st = mine_canonical(&m, &sorted, e);
    if (st == 0) st = mine_query_equal_passages(&m, sorted, e);
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
    double mine_t[7] = {r->t_hash, r->t_embed[0], r->t_embed[1], r->t_search, r->t_ce, r->t_select, r->t_merge};
    double *ts = (double *)comm_allgather(c, mine_t, sizeof mine_t, &got, NULL);
    for (int s = 0; s < m.size; s++) {
        const double *x = ts + 7 * s;
        if (x[6] > r->t_merge) r->t_merge = x[6];
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
    if (rc) mine_result_free(r);
    return rc;
}
