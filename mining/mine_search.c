/* mine_search.c: the mining run's search, rescoring and selection, one block of queries at a time: the block's
 * query embeddings go to every rank, each searches its shard of canonical passages, the per-rank lists are merged
 * on every rank, the cross-encoder rescores (mine_ce.c), each rank selects the negatives of a slice of the block
 * and sends rank 0 one MineRecord per query, from which rank 0 writes the block's group rows and metrics. */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "metrics.h"
#include "mine_internal.h"

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

static int64_t mine_npos(const Mine *m, int64_t q) { return m->pos_off[q + 1] - m->pos_off[q]; }

/* What one query's selection sends rank 0: its K negatives (-1 past the last picked), their retriever and
 * cross-encoder scores, and its positives' retriever and cross-encoder scores (NaN where none). Packed in a
 * byte buffer as [K int64][K float][K float][npos float][npos float], padded to 8 bytes so the next record's
 * int64s stay aligned; a MineRecord is a view into such a buffer. */
typedef struct {
    int64_t *neg;
    float *neg_score, *neg_ce;
    float *pos_score, *pos_ce;
} MineRecord;

static size_t mine_record_bytes(int K, int64_t npos) {
    size_t n = sizeof(int64_t) * (size_t)K + sizeof(float) * (2 * (size_t)K + 2 * (size_t)npos);
    return (n + 7) & ~(size_t)7;
}

static MineRecord mine_record_view(char *p, int K, int64_t npos) {
    MineRecord rec;
    rec.neg = (int64_t *)(void *)p;
    rec.neg_score = (float *)(void *)(p + sizeof(int64_t) * (size_t)K);
    rec.neg_ce = rec.neg_score + K;
    rec.pos_score = rec.neg_ce + K;
    rec.pos_ce = rec.pos_score + npos;
    return rec;
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

/* The search's sizes and buffers, allocated once for blocks of up to QB queries. */
typedef struct {
    int K, k, ncand, have_ce;
    int64_t QB;
    float *qb_send;     /* this rank's queries of the block */
    float *ls, *ms;     /* local and merged top-k scores, nb x k */
    int64_t *li, *mi;   /* local and merged top-k: canonical index, then (mi) passage row; -1 = none */
    int64_t grow;       /* next output row (rank 0) */
    MineMetrics mm;
    KnnShard *shard;    /* this rank's passages on the search device (NULL: CPU search) */
    double t_local, t_merge;
} MineSearch;

/* One block's queries and what the steps compute for them. */
typedef struct {
    const int64_t *qrows;
    int64_t nb;
    float *qb;             /* nb x dim query embeddings, every rank */
    int64_t npb;           /* positives of the block */
    int64_t *pos_first;    /* query t's positives are [pos_first[t], pos_first[t + 1]) of the block's */
    float *pos_ret;        /* retriever scores of the positives */
    float *ce_cand, *ce_pos; /* cross-encoder scores: nb x ncand candidates, npb positives */
} MineBlock;

static void mine_search_free(MineSearch *s) {
    knn_shard_free(s->shard);
    free(s->mm.per_query), free(s->qb_send), free(s->ls), free(s->li), free(s->ms), free(s->mi);
}

static void mine_block_free(MineBlock *b) {
    free(b->qb);
    free(b->pos_first);
    free(b->pos_ret);
    free(b->ce_cand);
    free(b->ce_pos);
}

/* The block's query embeddings to every rank (ranks own ascending row ranges: rank order = block order). */
static void mine_block_queries(Mine *m, MineSearch *s, MineBlock *b) {
    const int dim = m->dim;
    int64_t mycnt = 0;
    for (int64_t t = 0; t < b->nb; t++)
        if (b->qrows[t] >= m->qlo && b->qrows[t] < m->qhi)
            memcpy(s->qb_send + (size_t)(mycnt++) * dim, m->qemb + (size_t)(b->qrows[t] - m->qlo) * dim,
                   sizeof(float) * (size_t)dim);
    size_t got;
    b->qb = (float *)comm_allgather(m->c, s->qb_send, sizeof(float) * (size_t)mycnt * dim, &got, NULL);
    assert(got == sizeof(float) * (size_t)b->nb * dim);
}

/* Local top-k over this rank's canonical passages, merged on every rank into s->ms / s->mi (passage rows). */
static int mine_block_topk(Mine *m, MineSearch *s, MineBlock *b, XrErr *e) {
    const int64_t nb = b->nb;
    const int k = s->k;
    int st = 0;
    KnnStats ks = {0};
    double t0 = xr_now();
    if (s->shard) {
        st = knn_shard_search(s->shard, b->qb, (size_t)nb, k, s->ls, s->li, &ks, e);
    } else if (m->nlocal > 0) {
        st = knn_search(b->qb, (size_t)nb, m->pemb, (size_t)m->nlocal, (size_t)m->dim, m->coff, k, &m->o->knn, s->ls,
                        s->li, &ks, e);
    } else {
        for (int64_t t = 0; t < nb * k; t++) s->ls[t] = -INFINITY, s->li[t] = -1;
    }
    m->r->knn.n_exhaustive += ks.n_exhaustive;
    s->t_local += xr_now() - t0;
    if (comm_check(m->c, st, e)) return -1;
    t0 = xr_now();
    size_t got;
    float *ls_all = (float *)comm_allgather(m->c, s->ls, sizeof(float) * (size_t)nb * k, &got, NULL);
    int64_t *li_all = (int64_t *)comm_allgather(m->c, s->li, sizeof(int64_t) * (size_t)nb * k, &got, NULL);
    knn_merge_topk((size_t)nb, k, (size_t)m->size, ls_all, li_all, s->ms, s->mi);
    free(ls_all);
    free(li_all);
    for (int64_t t = 0; t < nb * k; t++) s->mi[t] = s->mi[t] >= 0 ? m->crow[s->mi[t]] : -1;
    s->t_merge += xr_now() - t0;
    return 0;
}

/* Retriever scores of the block's positives: computed by the rank that holds the passage's embedding. */
static void mine_block_positive_scores(Mine *m, MineBlock *b) {
    const int dim = m->dim;
    int64_t nb = b->nb, npb = 0;
    for (int64_t t = 0; t < nb; t++) npb += mine_npos(m, b->qrows[t]);
    float *ps_mine = xr_malloc(sizeof(float) * (size_t)(npb + 1));
    b->pos_first = xr_malloc(sizeof(int64_t) * (size_t)(nb + 1));
    for (int64_t t = 0, u = 0; t < nb; t++) {
        b->pos_first[t] = u;
        for (int64_t x = m->pos_off[b->qrows[t]]; x < m->pos_off[b->qrows[t] + 1]; x++, u++) {
            int64_t c = m->canon[m->pos_row[x]];
            ps_mine[u] = NAN;
            if (c >= m->plo && c < m->phi) {
                int64_t lp = mine_crow_find(m, c) - m->coff;
                ps_mine[u] = knn_score(b->qb + (size_t)t * dim, m->pemb + (size_t)lp * dim, (size_t)dim);
            }
        }
    }
    b->pos_first[nb] = npb;
    b->npb = npb;
    size_t got;
    float *ps_all = (float *)comm_allgather(m->c, ps_mine, sizeof(float) * (size_t)npb, &got, NULL);
    b->pos_ret = xr_malloc(sizeof(float) * (size_t)(npb + 1));
    for (int64_t u = 0; u < npb; u++) {
        b->pos_ret[u] = NAN;
        for (int r = 0; r < m->size; r++)
            if (!isnan(ps_all[(size_t)r * npb + u])) b->pos_ret[u] = ps_all[(size_t)r * npb + u];
    }
    free(ps_all);
    free(ps_mine);
}

/* Select the negatives of query t of the block and fill its record. */
static void mine_block_select_one(Mine *m, const MineSearch *s, const MineBlock *b, int64_t t, int64_t *negi,
                                  float *negs, MineRecord rec) {
    const int K = s->K, k = s->k, ncand = s->ncand, have_ce = s->have_ce;
    const int64_t q = b->qrows[t], npos = mine_npos(m, q);
    const float *pret = b->pos_ret + b->pos_first[t];
    const int64_t *cand = s->mi + t * k;
    const float *cand_ret = s->ms + t * k, *cand_ce = have_ce ? b->ce_cand + t * ncand : NULL;
    SelectQuery sq = {.key = (uint64_t)q,
                      .cand_index = cand,
                      .cand_score = have_ce ? cand_ce : cand_ret,
                      .cand_ce_score = cand_ce,
                      .n_cand = (size_t)ncand,
                      .pos_index = m->pos_row + m->pos_off[q],
                      .pos_score = have_ce ? b->ce_pos + b->pos_first[t] : pret,
                      .n_pos = (size_t)npos,
                      .exclude = m->qx_off ? m->qx_row + m->qx_off[q] : NULL,
                      .n_exclude = m->qx_off ? (size_t)(m->qx_off[q + 1] - m->qx_off[q]) : 0};
    int got_n = select_query(&m->sel, &sq, select_canon_array, m->canon, negi, negs, &m->r->stats);
    for (int j = 0; j < K; j++) {
        rec.neg[j] = j < got_n ? negi[j] : -1;
        float rs = NAN, ce = NAN;
        if (j < got_n)
            for (int x = 0; x < ncand; x++)
                if (cand[x] == negi[j]) {
                    rs = cand_ret[x];
                    if (have_ce) ce = cand_ce[x];
                    break;
                }
        rec.neg_score[j] = rs;
        rec.neg_ce[j] = ce;
    }
    for (int64_t x = 0; x < npos; x++) {
        rec.pos_score[x] = pret[x];
        rec.pos_ce[x] = have_ce ? b->ce_pos[b->pos_first[t] + x] : NAN;
    }
}

/* Each rank selects a contiguous slice of the block's queries; rank 0 gets all records in block order (the
 * gathered buffer, NULL elsewhere). */
static char *mine_block_select(Mine *m, const MineSearch *s, const MineBlock *b) {
    const int K = s->K;
    int64_t s0 = b->nb * m->rank / m->size, s1 = b->nb * (m->rank + 1) / m->size;
    size_t bytes = 0;
    for (int64_t t = s0; t < s1; t++) bytes += mine_record_bytes(K, mine_npos(m, b->qrows[t]));
    char *buf = xr_malloc(bytes + 1), *w = buf;
    int64_t *negi = xr_malloc(sizeof(int64_t) * (size_t)K);
    float *negs = xr_malloc(sizeof(float) * (size_t)K);
    for (int64_t t = s0; t < s1; t++) {
        int64_t npos = mine_npos(m, b->qrows[t]);
        mine_block_select_one(m, s, b, t, negi, negs, mine_record_view(w, K, npos));
        w += mine_record_bytes(K, npos);
    }
    assert((size_t)(w - buf) == bytes);
    free(negi);
    free(negs);
    size_t got;
    char *recs = comm_gather(m->c, buf, bytes, 0, &got, NULL);
    free(buf);
    return recs;
}

/* Rank 0: the block's group rows (one per (query, positive)) from the records, and its metrics. */
static void mine_block_store(Mine *m, MineSearch *s, const MineBlock *b, char *recs) {
    GroupSet *g = &m->r->groups;
    const int K = s->K;
    char *p = recs;
    for (int64_t t = 0; t < b->nb; t++) {
        int64_t q = b->qrows[t], npos = mine_npos(m, q);
        MineRecord rec = mine_record_view(p, K, npos);
        for (int64_t x = 0; x < npos; x++, s->grow++) {
            int64_t row = s->grow;
            g->query[row] = q;
            g->positive[row] = m->pos_row[m->pos_off[q] + x];
            memcpy(g->negatives + row * K, rec.neg, sizeof(int64_t) * (size_t)K);
            float *sc = g->scores + row * (K + 1);
            sc[0] = rec.pos_score[x];
            memcpy(sc + 1, rec.neg_score, sizeof(float) * (size_t)K);
            if (s->have_ce) {
                float *cc = g->ce_scores + row * (K + 1);
                cc[0] = rec.pos_ce[x];
                memcpy(cc + 1, rec.neg_ce, sizeof(float) * (size_t)K);
            }
        }
        p += mine_record_bytes(K, npos);
    }
    if (s->mm.per_query) mine_block_metrics(m, &s->mm, b->qrows, b->nb, s->mi, s->ms, s->k);
}

/* Rank 0: room for the output rows, one per (query, positive), in query order. */
static void mine_groups_alloc(Mine *m, int K, int have_ce) {
    GroupSet *g = &m->r->groups;
    int64_t nrows = 0;
    for (int64_t t = 0; t < m->nmined; t++) nrows += mine_npos(m, m->mined[t]);
    g->n = nrows;
    g->k = K;
    g->query = xr_malloc(sizeof(int64_t) * (size_t)(nrows + 1));
    g->positive = xr_malloc(sizeof(int64_t) * (size_t)(nrows + 1));
    g->negatives = xr_malloc(sizeof(int64_t) * (size_t)(nrows + 1) * (size_t)K);
    g->scores = xr_malloc(sizeof(float) * (size_t)(nrows + 1) * (size_t)(K + 1));
    if (have_ce) g->ce_scores = xr_malloc(sizeof(float) * (size_t)(nrows + 1) * (size_t)(K + 1));
}

/* Every rank's search memory and peak host memory, on every rank (collective). */
static void mine_rank_memory(Mine *m, const KnnShard *sh) {
    MineResult *r = m->r;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    getrusage(RUSAGE_SELF, &ru);
    KnnShardSetup su = {0, 0, 0};
    if (sh) su = knn_shard_setup(sh);
    /* the setup seconds travel as microseconds in the one int64 exchange */
    int64_t mine[6] = {sh ? (int64_t)knn_shard_bytes(sh) : 0, (int64_t)ru.ru_maxrss, sh ? knn_shard_resident(sh) : 0,
                       (int64_t)(su.t_check * 1e6), (int64_t)(su.t_upload * 1e6), (int64_t)(su.t_convert * 1e6)};
    size_t got;
    int64_t *all = (int64_t *)comm_allgather(m->c, mine, sizeof mine, &got, NULL);
    r->nranks = m->size;
    r->rank_search_bytes = xr_malloc(sizeof(int64_t) * (size_t)m->size);
    r->rank_rss_kib = xr_malloc(sizeof(int64_t) * (size_t)m->size);
    r->rank_resident = xr_malloc(sizeof(int) * (size_t)m->size);
    r->rank_setup_s = xr_malloc(sizeof(double) * 3 * (size_t)m->size);
    for (int i = 0; i < m->size; i++) {
        r->rank_search_bytes[i] = all[6 * i];
        r->rank_rss_kib[i] = all[6 * i + 1];
        r->rank_resident[i] = (int)all[6 * i + 2];
        for (int j = 0; j < 3; j++) r->rank_setup_s[3 * i + j] = (double)all[6 * i + 3 + j] * 1e-6;
    }
    free(all);
    const Backend *sb = m->o->search_be;
    r->search_where = !sb ? "cpu" : sb->device == XR_DEV_CPU ? "the cpu backend's device-search ops"
                                                              : ops_device_name(sb->device);
}

int mine_search(Mine *m, XrErr *e) {
    const MineOpts *o = m->o;
    MineResult *r = m->r;
    MineSearch s = {0};
    s.K = m->sel.num_negatives;
    s.have_ce = o->ce != NULL;
    size_t ncand_sel = select_candidate_count(&m->sel);
    int64_t kreq = (int64_t)ncand_sel;
    if (o->eval_depth > kreq) kreq = o->eval_depth;
    if (kreq > m->ncanon) kreq = m->ncanon > 0 ? m->ncanon : 1;
    s.k = (int)kreq;
    r->search_k = s.k;
    s.QB = o->query_block;
    s.ncand = (int)((int64_t)ncand_sel < s.k ? (int64_t)ncand_sel : s.k);
    if (m->rank == 0) mine_groups_alloc(m, s.K, s.have_ce);
    s.mm = (MineMetrics){{{METRIC_MRR, 10}, {METRIC_NDCG, 10}, {METRIC_RECALL, 10}, {METRIC_RECALL, o->eval_depth}},
                         NULL, 0};
    if (m->rank == 0 && o->eval_depth > 0) s.mm.per_query = xr_malloc(sizeof(double) * 4 * (size_t)(m->nmined + 1));
    s.qb_send = xr_malloc(sizeof(float) * (size_t)(s.QB + 1) * (size_t)m->dim);
    s.ls = xr_malloc(sizeof(float) * (size_t)(s.QB + 1) * (size_t)s.k);
    s.li = xr_malloc(sizeof(int64_t) * (size_t)(s.QB + 1) * (size_t)s.k);
    s.ms = xr_malloc(sizeof(float) * (size_t)(s.QB + 1) * (size_t)s.k);
    s.mi = xr_malloc(sizeof(int64_t) * (size_t)(s.QB + 1) * (size_t)s.k);
    if (o->search_be) {
        /* this rank's canonical passages on its device, once for every block */
        int st = 0;
        s.shard = knn_shard_create(o->search_be, m->pemb, (size_t)m->nlocal, (size_t)m->dim, m->coff, (size_t)s.QB,
                                   s.k, &o->knn_dev, e);
        if (!s.shard) st = -1;
        if (comm_check(m->c, st, e)) {
            mine_search_free(&s);
            return -1;
        }
    }

    double t_search = 0, t_ce = 0, t_sel = 0;
    mine_progress_begin(m, "searching queries", m->nmined);
    int rc = 0;
    for (int64_t b0 = 0; b0 < m->nmined && rc == 0; b0 += s.QB) {
        int64_t b1 = mine_min64(b0 + s.QB, m->nmined);
        MineBlock b = {.qrows = m->mined + b0, .nb = b1 - b0};
        double t0 = xr_now();
        mine_block_queries(m, &s, &b);
        if (mine_block_topk(m, &s, &b, e)) {
            mine_block_free(&b);
            rc = -1;
            break;
        }
        mine_block_positive_scores(m, &b);
        free(b.qb);
        b.qb = NULL;
        t_search += xr_now() - t0;
        if (s.have_ce) {
            t0 = xr_now();
            int st = mine_ce_rescore(m, b.qrows, b.nb, s.mi, s.k, s.ncand, b.npb, &b.ce_cand, &b.ce_pos, e);
            t_ce += xr_now() - t0;
            if (st) {
                mine_block_free(&b);
                rc = -1;
                break;
            }
        }
        t0 = xr_now();
        char *recs = mine_block_select(m, &s, &b);
        t_sel += xr_now() - t0;
        if (m->rank == 0) mine_block_store(m, &s, &b, recs);
        free(recs);
        mine_block_free(&b);
        mine_progress_line(m, b1, 0);
    }
    mine_progress_end(m);
    if (rc == 0 && m->rank == 0 && s.mm.per_query) {
        double mean[4];
        metrics_mean(s.mm.per_query, (size_t)s.mm.n, 4, mean);
        r->have_metrics = 1;
        r->mrr10 = mean[0];
        r->ndcg10 = mean[1];
        r->recall10 = mean[2];
        r->recall_depth = mean[3];
    }
    mine_rank_memory(m, s.shard);
    mine_search_free(&s);
    r->t_search = t_search - s.t_merge; /* the block's query exchange, local search and positives' scores */
    r->t_merge = s.t_merge;
    r->t_ce = t_ce;
    r->t_select = t_sel;
    return rc;
}
