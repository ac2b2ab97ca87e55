/* evaluate.h: reranking evaluation over MPI ranks: each query's candidates (the retriever's list from a mined
 * group file, or a dataset's given negatives + positives) are scored by a cross-encoder, the pairs sliced over
 * the ranks, and ranked with trec_eval conventions (core/metrics.h) in the retriever's order ("base") and the
 * reranked order, in the realistic mode (only retrieved candidates) and with all positives added
 * (sentence-transformers' always_rerank_positives). */
#ifndef XR_EVALUATE_H
#define XR_EVALUATE_H
#include <stdint.h>
#include <stdio.h>

#include "batch.h"
#include "comm.h"
#include "metrics.h"
#include "model.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EVAL_MAX_SPECS 16

typedef struct {
    int64_t nq;          /* evaluated queries: those with a qrel of grade > 0 */
    int64_t *qrow;       /* [nq] query rows */
    int64_t *cand_off;   /* [nq + 1] candidates of query i: cand[cand_off[i] .. cand_off[i+1]) */
    int64_t *cand;       /* passage rows: the retrieved candidates, then the positives that were not retrieved */
    float *base;         /* retriever score per candidate (NaN: none; such candidates rank after the scored ones) */
    uint8_t *retrieved;  /* 1: in the retriever's list (realistic mode) */
    int64_t *qrel_off;   /* [nq + 1] judged passages of query i (all grades) */
    int64_t *qrel_p;
    int32_t *qrel_g;
    int64_t num_queries, num_passages; /* dataset store rows */
    char **pid;          /* passage ids (trec_eval ties are broken by id) */
    SeqStore seqs;       /* queries, then passages */
    char source[32];     /* "groups" / "negatives" */
    int64_t retrieved_pos, missed_pos; /* positives in / out of the retriever's lists */
} EvalSet;

/* Build from a dataset directory and a group file (NULL: the dataset's given negatives). Candidates of a query
 * from a group file: the negatives of all its rows (deduplicated) and its positives; a positive counts as
 * retrieved when its retriever score is at least the lowest negative score of the query (the negatives being the
 * retriever's best non-positive candidates). Without a group file, given negatives and positives are all
 * "retrieved" and ordered by their stored scores when present. */
int evalset_load(EvalSet *es, const char *dataset, const char *groups, XrErr *e);
void evalset_free(EvalSet *es);

typedef struct {
    int nspecs;
    MetricSpec specs[EVAL_MAX_SPECS];
    char names[EVAL_MAX_SPECS][32];
    double base[EVAL_MAX_SPECS], rerank[EVAL_MAX_SPECS];         /* realistic mode */
    double base_all[EVAL_MAX_SPECS], rerank_all[EVAL_MAX_SPECS]; /* all positives added */
    int64_t queries, pairs;
    double seconds;
    /* The sharding, as measured: ranks, the fewest and most pairs one rank's encoder scored, and the longest
     * per-rank scoring time (pairs in, scores out, before the gather). */
    int ranks;
    int64_t rank_pairs_min, rank_pairs_max;
    double rank_seconds_max;
} EvalResult;

/* "mrr@10,ndcg@10,map@100,recall@10,recall@100" -> r->specs. */
int eval_parse_specs(const char *list, EvalResult *r, XrErr *e);

/* Score every (query, candidate) pair with m (no dropout), pairs sliced over the ranks in contiguous ranges,
 * gathered on rank 0, and fill r's metrics and sharding numbers on every rank (broadcast). r->specs must be set.
 * Collective. */
int eval_run(Comm *c, Encoder *m, const Tokenizer *t, const EvalSet *es, int max_len, int batch_size,
             EvalResult *r, XrErr *e);

/* The value of a metric by name in the reranked realistic results; NaN when absent. */
double eval_metric(const EvalResult *r, const char *name, int all_positives);
/* Table (stdout style) and JSON object text (no newline) of a result. */
void eval_print_table(FILE *f, const EvalResult *r);
void eval_print_json(FILE *f, const EvalResult *r);

#ifdef __cplusplus
}
#endif
#endif
