/* metrics.h: ranking metrics for one query (NDCG, MRR, MAP, Recall, Precision at a cutoff) with trec_eval's
 * conventions, checked against pytrec_eval, and the mean over queries. Pure functions: no I/O, no MPI.
 *
 * Conventions (trec_eval 9 / pytrec_eval, what BEIR and sentence-transformers' evaluators report):
 * - A ranking is ordered by score descending, ties broken by doc id in DESCENDING byte order (strcmp), whatever
 *   order the caller passes the hits in.
 * - A doc is relevant when its grade is > 0; grades <= 0 and unjudged docs count as non-relevant (gain 0).
 * - NDCG@k: gain = raw grade, discount log2(rank + 1) with rank from 1; the ideal ranking is built from ALL the
 *   query's judged relevant docs (not only the retrieved ones), cut at k.
 * - MRR@k: 1 / rank of the first relevant doc when that rank is <= k, else 0.
 * - MAP@k: sum of precision@rank over relevant docs at rank <= k, divided by ALL relevant docs of the query.
 * - Recall@k = relevant in top k / all relevant; Precision@k = relevant in top k / k (k even when fewer were
 *   retrieved).
 * - k = 0 means no cutoff (trec_eval's plain "ndcg", "recip_rank", "map"; P = relevant retrieved / retrieved).
 * - A query without relevant docs scores 0 on every metric.
 * - Means: plain average over the queries passed to metrics_mean. pytrec_eval/BEIR average over the queries that
 *   have qrels AND a ranking; xrank's evaluator passes every query that has qrels, a query with no candidates
 *   contributing 0 (trec_eval -c), which equals BEIR whenever every judged query was ranked. */
#ifndef XR_METRICS_H
#define XR_METRICS_H
#include <stddef.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { METRIC_NDCG, METRIC_MRR, METRIC_MAP, METRIC_RECALL, METRIC_PRECISION } MetricKind;

typedef struct {
    MetricKind kind;
    int k; /* cutoff; 0 = whole ranking */
} MetricSpec;

typedef struct {
    const char *doc_id;
    double score;
} MetricsHit;

typedef struct {
    const char *doc_id;
    int grade;
} MetricsJudgment;

/* Parse "ndcg@10", "mrr@10", "map", "map@100", "recall@100", "precision@5" / "p@5" (case-insensitive).
 * Returns 0, or -1 with e naming the bad spec. */
int metrics_parse_spec(const char *s, MetricSpec *out, XrErr *e);
/* Canonical name ("ndcg@10", "map") into buf. */
void metrics_spec_name(MetricSpec spec, char *buf, size_t n);
/* trec_eval order in place: score descending, then doc id descending (strcmp). */
void metrics_sort_hits(MetricsHit *hits, size_t n);
/* Evaluate one query: hits in any order (sorted internally on a copy), qrels of this query in any order.
 * out[i] = value of specs[i]. Fails (-1, e set) on a doc id repeated in hits or in qrels, or a negative k. */
int metrics_query(const MetricsHit *hits, size_t n_hits, const MetricsJudgment *qrels, size_t n_qrels,
                  const MetricSpec *specs, size_t n_specs, double *out, XrErr *e);
/* mean[j] = average over queries of per_query[q * n_specs + j], summed in query order (deterministic);
 * all zeros when n_queries = 0. */
void metrics_mean(const double *per_query, size_t n_queries, size_t n_specs, double *mean);

#ifdef __cplusplus
}
#endif
#endif
