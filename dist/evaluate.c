/* evaluate.c: the reranking evaluator of evaluate.h: candidate lists from a group file or a dataset's negatives,
 * pair scoring sliced over ranks (batch_run, gathered on rank 0), metrics in four views, table and JSON. */
#include "evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data.h"
#include "dataset.h"
#include "groups.h"
#include "h5store.h"

typedef struct {
    int64_t qi, p;
    float score;
    int pos; /* 0 negative, 1 a positive of the group file (with its score), 2 a qrel positive */
} EvCand;

static int ev_cmp(const void *a, const void *b) {
    const EvCand *x = a, *y = b;
    if (x->qi != y->qi) return (x->qi > y->qi) - (x->qi < y->qi);
    if (x->p != y->p) return (x->p > y->p) - (x->p < y->p);
    static const int rank_of[3] = {1, 0, 2}; /* group positive, then negative, then the bare qrel record */
    return rank_of[x->pos] - rank_of[y->pos];
}

static void ev_push(EvCand **v, int64_t *n, int64_t *cap, EvCand c) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *v = xr_realloc(*v, sizeof(EvCand) * (size_t)*cap);
    }
    (*v)[(*n)++] = c;
}

int evalset_load(EvalSet *es, const char *dataset, const char *groups, XrErr *e) {
    memset(es, 0, sizeof *es);
    seqs_init(&es->seqs);
    DsIndex ix;
    if (ds_read_index(dataset, &ix, e)) return -1;
    /* num_rows (checked against the shard table) sizes qmap: opening the store proves the shards hold them */
    TokenStore *qs = h5store_open(dataset, "queries", e);
    if (!qs) {
        ds_index_free(&ix);
        return -1;
    }
    h5store_close(qs);
    es->num_queries = ix.num_queries, es->num_passages = ix.num_passages;
    int rc = 0;
    /* evaluated queries: those with a positive, in row order */
    int64_t *qmap = xr_malloc(sizeof(int64_t) * (size_t)(ix.num_queries + 1));
    for (int64_t q = 0; q < ix.num_queries; q++) qmap[q] = -1;
    for (int64_t i = 0; i < ix.nqrels; i++)
        if (ix.qrel_grade[i] > 0) qmap[ix.qrel_query[i]] = 0;
    for (int64_t q = 0; q < ix.num_queries; q++)
        if (qmap[q] == 0) qmap[q] = es->nq++;
    es->qrow = xr_malloc(sizeof(int64_t) * (size_t)(es->nq + 1));
    for (int64_t q = 0; q < ix.num_queries; q++)
        if (qmap[q] >= 0) es->qrow[qmap[q]] = q;
    /* judgments grouped by query */
    es->qrel_off = xr_calloc((size_t)es->nq + 1, sizeof(int64_t));
    for (int64_t i = 0; i < ix.nqrels; i++)
        if (qmap[ix.qrel_query[i]] >= 0) es->qrel_off[qmap[ix.qrel_query[i]] + 1]++;
    for (int64_t i = 0; i < es->nq; i++) es->qrel_off[i + 1] += es->qrel_off[i];
    es->qrel_p = xr_malloc(sizeof(int64_t) * (size_t)(es->qrel_off[es->nq] + 1));
    es->qrel_g = xr_malloc(sizeof(int32_t) * (size_t)(es->qrel_off[es->nq] + 1));
    int64_t *fill = xr_calloc((size_t)es->nq + 1, sizeof(int64_t));
    for (int64_t i = 0; i < ix.nqrels; i++) {
        int64_t qi = qmap[ix.qrel_query[i]];
        if (qi < 0) continue;
        int64_t at = es->qrel_off[qi] + fill[qi]++;
        es->qrel_p[at] = ix.qrel_passage[i], es->qrel_g[at] = ix.qrel_grade[i];
    }
    free(fill);

    EvCand *v = NULL;
    int64_t nv = 0, cap = 0;
    if (groups) {
        GroupSet g;
        rc = groups_read(groups, &g, e);
        if (rc == 0) {
            rc = groups_check_dataset(&g, groups, ix.num_queries, ix.num_passages, ix.tokenizer_fingerprint, e);
            for (int64_t r = 0; rc == 0 && r < g.n; r++) {
                int64_t qi = qmap[g.query[r]];
                if (qi < 0) continue;
                const float *sc = g.scores + r * (1 + g.k);
                ev_push(&v, &nv, &cap, (EvCand){qi, g.positive[r], sc[0], 1});
                int k = groups_row_negatives(&g, r);
                for (int j = 0; j < k; j++) ev_push(&v, &nv, &cap, (EvCand){qi, g.negatives[r * g.k + j], sc[1 + j], 0});
            }
            groups_free(&g);
        }
        snprintf(es->source, sizeof es->source, "groups");
    } else {
        for (int64_t i = 0; i < ix.nneg; i++) {
            int64_t qi = qmap[ix.neg_query[i]];
            if (qi >= 0) ev_push(&v, &nv, &cap, (EvCand){qi, ix.neg_passage[i], ix.neg_score ? ix.neg_score[i] : NAN, 0});
        }
        snprintf(es->source, sizeof es->source, "negatives");
    }
    /* positives of every evaluated query (so "all positives" has them all) */
    for (int64_t i = 0; rc == 0 && i < ix.nqrels; i++) {
        int64_t qi = qmap[ix.qrel_query[i]];
        if (qi >= 0 && ix.qrel_grade[i] > 0)
            ev_push(&v, &nv, &cap, (EvCand){qi, ix.qrel_passage[i], ix.qrel_score && !groups ? ix.qrel_score[i] : NAN, 2});
    }
    if (rc == 0) {
        qsort(v, (size_t)nv, sizeof *v, ev_cmp);
        es->cand_off = xr_calloc((size_t)es->nq + 1, sizeof(int64_t));
        es->cand = xr_malloc(sizeof(int64_t) * (size_t)(nv + 1));
        es->base = xr_malloc(sizeof(float) * (size_t)(nv + 1));
        es->retrieved = xr_malloc((size_t)nv + 1);
        int64_t out = 0;
        for (int64_t lo = 0; lo < nv;) {
            int64_t qi = v[lo].qi, hi = lo;
            while (hi < nv && v[hi].qi == qi) hi++;
            float minneg = INFINITY;
            int any_neg = 0;
            for (int64_t i = lo; i < hi; i++)
                if (v[i].pos == 0 && !isnan(v[i].score)) minneg = fminf(minneg, v[i].score), any_neg = 1;
            int64_t first = out;
            /* one entry per passage: the group-file record (with its score) sorts before the qrel record */
            for (int pass = 0; pass < 2; pass++)
                for (int64_t i = lo; i < hi; i++) {
                    if (i > lo && v[i].p == v[i - 1].p) continue;
                    int is_pos = 0;
                    for (int64_t j = i; j < hi && v[j].p == v[i].p; j++) is_pos |= v[j].pos > 0;
                    int ret = !groups ? 1 : (v[i].pos == 0 || (v[i].pos == 1 && any_neg && v[i].score >= minneg));
                    if (ret != (pass == 0)) continue;
                    if (is_pos) ret ? es->retrieved_pos++ : es->missed_pos++;
                    es->cand[out] = v[i].p, es->base[out] = v[i].score, es->retrieved[out] = (uint8_t)ret;
                    out++;
                }
            (void)first;
            es->cand_off[qi + 1] = out;
            lo = hi;
        }
        for (int64_t i = 0; i < es->nq; i++)
            if (es->cand_off[i + 1] < es->cand_off[i]) es->cand_off[i + 1] = es->cand_off[i];
    }
    free(v);
    free(qmap);
    if (rc == 0 && es->nq == 0) rc = xr_errf(e, "%s: no query has a relevant passage (grade > 0): nothing to evaluate", dataset);
    if (rc == 0) {
        TokenStore *ps = h5store_open(dataset, "passages", e);
        if (!ps) rc = -1;
        else {
            es->pid = h5store_read_ids(ps, 0, h5store_rows(ps), e);
            if (!es->pid) rc = -1;
            h5store_close(ps);
        }
    }
    int64_t nq, np;
    if (rc == 0) rc = td_load_tokens(&es->seqs, dataset, &nq, &np, e);
    ds_index_free(&ix);
    if (rc) evalset_free(es);
    return rc;
}

void evalset_free(EvalSet *es) {
    free(es->qrow), free(es->cand_off), free(es->cand), free(es->base), free(es->retrieved);
    free(es->qrel_off), free(es->qrel_p), free(es->qrel_g), free(es->pid);
    seqs_free(&es->seqs);
    memset(es, 0, sizeof *es);
}

int eval_parse_specs(const char *list, EvalResult *r, XrErr *e) {
    r->nspecs = 0;
    for (const char *p = list; p && *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        char buf[64];
        if (l == 0 || l >= sizeof buf) return xr_errf(e, "metric list '%s': empty or overlong entry", list);
        memcpy(buf, p, l);
        buf[l] = 0;
        if (r->nspecs == EVAL_MAX_SPECS) return xr_errf(e, "metric list '%s': at most %d metrics", list, EVAL_MAX_SPECS);
        if (metrics_parse_spec(buf, &r->specs[r->nspecs], e)) return -1;
        metrics_spec_name(r->specs[r->nspecs], r->names[r->nspecs], sizeof r->names[0]);
        r->nspecs++;
        p = c ? c + 1 : NULL;
    }
    if (r->nspecs == 0) return xr_errf(e, "no metrics given");
    return 0;
}

/* The encoder and the pairs it scored on this rank: counted where the forward runs, so the per-rank numbers in
 * EvalResult measure the sharding rather than restate the slice arithmetic. */
typedef struct {
    Encoder *m;
    int64_t pairs;
} EvForward;

static void ev_forward(void *ctx, const Batch *b, float *out) {
    EvForward *f = ctx;
    encoder_forward_score(f->m, b, out);
    f->pairs += b->B;
}

int eval_run(Comm *c, Encoder *m, const Tokenizer *t, const EvalSet *es, int max_len, int batch_size,
             EvalResult *r, XrErr *e) {
    double t0 = xr_now();
    int R = comm_size(c), rank = comm_rank(c);
    int64_t n = es->cand_off[es->nq];
    int64_t lo = n * rank / R, hi = n * (rank + 1) / R;
    BatchItem *items = xr_malloc(sizeof(BatchItem) * (size_t)(hi - lo + 1));
    int64_t qi = 0;
    for (int64_t i = lo; i < hi; i++) {
        while (es->cand_off[qi + 1] <= i) qi++;
        items[i - lo] = (BatchItem){es->qrow[qi], es->num_queries + es->cand[i]};
    }
    float *sc = xr_malloc(sizeof(float) * (size_t)(hi - lo + 1));
    EvForward fw = {m, 0};
    batch_run(t, &es->seqs, items, hi - lo, max_len, batch_size, (int64_t)batch_size * 16, ev_forward, &fw, 1, sc, NULL,
              NULL, NULL);
    free(items);
    struct {
        int64_t pairs;
        double seconds;
    } mine = {fw.pairs, xr_now() - t0}, *per = NULL;
    size_t per_n = 0;
    per = (void *)comm_gather(c, &mine, sizeof mine, 0, &per_n, NULL);
    if (rank == 0) {
        r->rank_pairs_min = r->rank_pairs_max = per[0].pairs;
        r->rank_seconds_max = 0;
        for (int i = 0; i < R; i++) {
            if (per[i].pairs < r->rank_pairs_min) r->rank_pairs_min = per[i].pairs;
            if (per[i].pairs > r->rank_pairs_max) r->rank_pairs_max = per[i].pairs;
            if (per[i].seconds > r->rank_seconds_max) r->rank_seconds_max = per[i].seconds;
        }
    }
    free(per);
    size_t got = 0;
    float *scores = (float *)comm_gather(c, sc, sizeof(float) * (size_t)(hi - lo), 0, &got, NULL);
    free(sc);
    int st = 0;
    if (rank == 0) {
        int K = r->nspecs;
        double *pq = xr_calloc((size_t)es->nq * (size_t)K * 4, sizeof(double));
        int64_t maxc = 0, maxj = 0;
        for (int64_t q = 0; q < es->nq; q++) {
            if (es->cand_off[q + 1] - es->cand_off[q] > maxc) maxc = es->cand_off[q + 1] - es->cand_off[q];
            if (es->qrel_off[q + 1] - es->qrel_off[q] > maxj) maxj = es->qrel_off[q + 1] - es->qrel_off[q];
        }
        MetricsHit *hits = xr_malloc(sizeof(MetricsHit) * (size_t)(maxc + 1));
        MetricsJudgment *judg = xr_malloc(sizeof(MetricsJudgment) * (size_t)(maxj + 1));
        for (int64_t q = 0; q < es->nq && st == 0; q++) {
            int64_t nj = 0;
            for (int64_t j = es->qrel_off[q]; j < es->qrel_off[q + 1]; j++)
                judg[nj++] = (MetricsJudgment){es->pid[es->qrel_p[j]], es->qrel_g[j]};
            for (int view = 0; view < 4 && st == 0; view++) { /* base, rerank, base_all, rerank_all */
                int all = view >= 2, ce = view & 1;
                int64_t nh = 0;
                for (int64_t i = es->cand_off[q]; i < es->cand_off[q + 1]; i++) {
                    if (!all && !es->retrieved[i]) continue;
                    double s = ce ? scores[i] : (isnan(es->base[i]) || !es->retrieved[i] ? -1e30 : es->base[i]);
                    hits[nh++] = (MetricsHit){es->pid[es->cand[i]], s};
                }
                st = metrics_query(hits, (size_t)nh, judg, (size_t)nj, r->specs, (size_t)K,
                                   pq + ((size_t)view * (size_t)es->nq + (size_t)q) * (size_t)K, e);
            }
        }
        double *dst[4] = {r->base, r->rerank, r->base_all, r->rerank_all};
        for (int view = 0; view < 4; view++)
            metrics_mean(pq + (size_t)view * (size_t)es->nq * (size_t)K, (size_t)es->nq, (size_t)K, dst[view]);
        free(pq), free(hits), free(judg);
    }
    free(scores);
    r->queries = es->nq;
    r->pairs = n;
    r->ranks = R;
    if (comm_check(c, st, e)) return -1;
    comm_bcast(c, r, sizeof *r, 0);
    r->seconds = xr_now() - t0;
    return 0;
}

double eval_metric(const EvalResult *r, const char *name, int all_positives) {
    for (int i = 0; i < r->nspecs; i++)
        if (!strcasecmp(r->names[i], name)) return all_positives ? r->rerank_all[i] : r->rerank[i];
    return NAN;
}

void eval_print_table(FILE *f, const EvalResult *r) {
    fprintf(f, "%-14s %10s %10s %10s %10s\n", "metric", "base", "reranked", "base+pos", "rerank+pos");
    for (int i = 0; i < r->nspecs; i++)
        fprintf(f, "%-14s %10.4f %10.4f %10.4f %10.4f\n", r->names[i], r->base[i], r->rerank[i], r->base_all[i],
                r->rerank_all[i]);
    fprintf(f, "(%lld queries, %lld pairs scored; base = retriever order; +pos = all positives added)\n",
            (long long)r->queries, (long long)r->pairs);
}

void eval_print_json(FILE *f, const EvalResult *r) {
    const char *view[4] = {"base", "reranked", "base_all_positives", "reranked_all_positives"};
    const double *val[4] = {r->base, r->rerank, r->base_all, r->rerank_all};
    fprintf(f, "{\"queries\": %lld, \"pairs\": %lld", (long long)r->queries, (long long)r->pairs);
    for (int v = 0; v < 4; v++) {
        fprintf(f, ", \"%s\": {", view[v]);
        for (int i = 0; i < r->nspecs; i++) fprintf(f, "%s\"%s\": %.6f", i ? ", " : "", r->names[i], val[v][i]);
        fprintf(f, "}");
    }
    fprintf(f, "}");
}
