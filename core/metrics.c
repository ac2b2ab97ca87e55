/* metrics.c: trec_eval-convention ranking metrics for one query and their mean (see metrics.h for the rules).
 * Each query is sorted on a private copy, judged docs are looked up by binary search, and every metric is a
 * single pass over the sorted ranking. */
#include "metrics.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const metric_names[] = {"ndcg", "mrr", "map", "recall", "precision"};

int metrics_parse_spec(const char *s, MetricSpec *out, XrErr *e) {
    char name[32];
    size_t n = 0;
    while (s[n] && s[n] != '@' && n < sizeof name - 1) {
        name[n] = (char)tolower((unsigned char)s[n]);
        n++;
    }
    name[n] = 0;
    int k = 0;
    if (s[n] == '@') {
        char *end = NULL;
        long v = strtol(s + n + 1, &end, 10);
        if (end == s + n + 1 || *end || v < 1 || v > 1000000000L)
            return xr_errf(e, "metric '%s': the cutoff after '@' must be a positive integer (e.g. ndcg@10)", s);
        k = (int)v;
    } else if (s[n]) {
        return xr_errf(e, "metric '%s': name too long", s);
    }
    MetricKind kind;
    if (!strcmp(name, "ndcg")) kind = METRIC_NDCG;
    else if (!strcmp(name, "mrr")) kind = METRIC_MRR;
    else if (!strcmp(name, "map")) kind = METRIC_MAP;
    else if (!strcmp(name, "recall")) kind = METRIC_RECALL;
    else if (!strcmp(name, "precision") || !strcmp(name, "p")) kind = METRIC_PRECISION;
    else
        return xr_errf(e, "metric '%s': unknown name; use ndcg@k, mrr@k, map, map@k, recall@k or precision@k", s);
    out->kind = kind;
    out->k = k;
    return 0;
}

void metrics_spec_name(MetricSpec spec, char *buf, size_t n) {
    assert(spec.kind >= METRIC_NDCG && spec.kind <= METRIC_PRECISION);
    if (spec.k > 0) snprintf(buf, n, "%s@%d", metric_names[spec.kind], spec.k);
    else snprintf(buf, n, "%s", metric_names[spec.kind]);
}

/* trec_eval (form_res_rels): higher score first; on equal scores the larger docno (strcmp) comes first.
 * A NaN score ranks below every number so that the comparison stays a total order. */
static int hit_cmp(const void *a, const void *b) {
    const MetricsHit *x = a, *y = b;
    if (isnan(x->score) != isnan(y->score)) return isnan(x->score) ? 1 : -1;
    if (x->score > y->score) return -1;
    if (x->score < y->score) return 1;
    return strcmp(y->doc_id, x->doc_id);
}

void metrics_sort_hits(MetricsHit *hits, size_t n) {
    if (n > 1) qsort(hits, n, sizeof *hits, hit_cmp);
}

static int judgment_cmp(const void *a, const void *b) {
    const MetricsJudgment *x = a, *y = b;
    return strcmp(x->doc_id, y->doc_id);
}

static int judgment_find(const MetricsJudgment *sorted, size_t n, const char *doc_id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(sorted[mid].doc_id, doc_id);
        if (c == 0) return sorted[mid].grade;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

static int str_ptr_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int grade_desc_cmp(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

/* log2(rank + 1) for a 1-based rank, as trec_eval writes it (natural logs). */
static double rank_discount(size_t rank) { return log((double)rank + 1.0) / log(2.0); }

int metrics_query(const MetricsHit *hits, size_t n_hits, const MetricsJudgment *qrels, size_t n_qrels,
                  const MetricSpec *specs, size_t n_specs, double *out, XrErr *e) {
    for (size_t i = 0; i < n_specs; i++)
        if (specs[i].k < 0) return xr_errf(e, "metric cutoff must be >= 0, got %d", specs[i].k);

    MetricsJudgment *qs = xr_malloc((n_qrels ? n_qrels : 1) * sizeof *qs);
    if (n_qrels) memcpy(qs, qrels, n_qrels * sizeof *qs);
    qsort(qs, n_qrels, sizeof *qs, judgment_cmp);
    for (size_t i = 1; i < n_qrels; i++) {
        if (!strcmp(qs[i - 1].doc_id, qs[i].doc_id)) {
            int rc = xr_errf(e, "qrels: doc '%s' is judged twice for the same query", qs[i].doc_id);
            free(qs);
            return rc;
        }
    }
    MetricsHit *hs = xr_malloc((n_hits ? n_hits : 1) * sizeof *hs);
    if (n_hits) memcpy(hs, hits, n_hits * sizeof *hs);
    metrics_sort_hits(hs, n_hits);
    /* trec_eval refuses a run that lists a doc twice for a query; so do we. */
    {
        const char **ids = xr_malloc((n_hits ? n_hits : 1) * sizeof *ids);
        for (size_t i = 0; i < n_hits; i++) ids[i] = hs[i].doc_id;
        qsort(ids, n_hits, sizeof *ids, str_ptr_cmp);
        for (size_t i = 1; i < n_hits; i++) {
            if (!strcmp(ids[i - 1], ids[i])) {
                int rc = xr_errf(e, "ranking: doc '%s' appears twice for the same query", ids[i]);
                free(ids);
                free(hs);
                free(qs);
                return rc;
            }
        }
        free(ids);
    }

    /* relevant docs of the query, their grades sorted for the ideal DCG */
    size_t n_rel = 0;
    int *ideal = xr_malloc((n_qrels ? n_qrels : 1) * sizeof *ideal);
    for (size_t i = 0; i < n_qrels; i++)
        if (qs[i].grade > 0) ideal[n_rel++] = qs[i].grade;
    qsort(ideal, n_rel, sizeof *ideal, grade_desc_cmp);

    int *grade = xr_malloc((n_hits ? n_hits : 1) * sizeof *grade);
    for (size_t i = 0; i < n_hits; i++) {
        int g = judgment_find(qs, n_qrels, hs[i].doc_id);
        grade[i] = g > 0 ? g : 0;
    }

    for (size_t s = 0; s < n_specs; s++) {
        size_t k = specs[s].k > 0 ? (size_t)specs[s].k : 0;
        size_t cut = (k && k < n_hits) ? k : n_hits; /* ranks looked at */
        double v = 0;
        if (n_rel == 0) {
            out[s] = 0;
            continue;
        }
        switch (specs[s].kind) {
        case METRIC_NDCG: {
            double dcg = 0, idcg = 0;
            for (size_t i = 0; i < cut; i++)
                if (grade[i]) dcg += grade[i] / rank_discount(i + 1);
            size_t icut = (k && k < n_rel) ? k : n_rel;
            for (size_t i = 0; i < icut; i++) idcg += ideal[i] / rank_discount(i + 1);
            v = idcg > 0 ? dcg / idcg : 0;
            break;
        }
        case METRIC_MRR:
            for (size_t i = 0; i < cut; i++)
                if (grade[i]) {
                    v = 1.0 / (double)(i + 1);
                    break;
                }
            break;
        case METRIC_MAP: {
            size_t found = 0;
            double sum = 0;
            for (size_t i = 0; i < cut; i++)
                if (grade[i]) {
                    found++;
                    sum += (double)found / (double)(i + 1);
                }
            v = sum / (double)n_rel;
            break;
        }
        case METRIC_RECALL:
        case METRIC_PRECISION: {
            size_t found = 0;
            for (size_t i = 0; i < cut; i++) found += grade[i] != 0;
            if (specs[s].kind == METRIC_RECALL) v = (double)found / (double)n_rel;
            else if (k) v = (double)found / (double)k;
            else v = n_hits ? (double)found / (double)n_hits : 0;
            break;
        }
        default: assert(0 && "unknown metric kind");
        }
        out[s] = v;
    }
    free(grade);
    free(ideal);
    free(hs);
    free(qs);
    return 0;
}

void metrics_mean(const double *per_query, size_t n_queries, size_t n_specs, double *mean) {
    for (size_t j = 0; j < n_specs; j++) {
        double sum = 0;
        for (size_t q = 0; q < n_queries; q++) sum += per_query[q * n_specs + j];
        mean[j] = n_queries ? sum / (double)n_queries : 0;
    }
}
