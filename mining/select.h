/* select.h: hard-negative selection for one query from its retrieved candidates, with the semantics of
 * sentence-transformers' mine_hard_negatives (util/hard_negatives.py, v5/v6) or of FlagEmbedding's hn_mine.
 * Pure functions: no MPI, no files, no global state; the mining command calls select_query per query.
 *
 * sentence-transformers style (SELECT_STYLE_ST), per query, in this order:
 *  1. Candidates: the first range_max + max_positives + 1 retrieved passages (max_positives = the largest number
 *     of positives of any query in the data set; the + 1 is the slot sentence-transformers (v6) reserves for the
 *     passage whose text equals the query, which it removes), index -1 = empty slot. range_max therefore counts
 *     survivors: up to max_positives + 1 removed candidates are made up for, and a query that loses more than
 *     that gets fewer than range_max survivors.
 *  2. Drop the query's positives (include_positives = 0) and any passage the caller's canonical map says is an
 *     exact duplicate of a positive (sentence-transformers dedups the corpus by exact text, so a duplicate is
 *     the same passage there); drop the caller's exclusions (the caller passes the passages whose text equals
 *     the query; with include_positives an exclusion that is one of the query's positives is kept, as
 *     sentence-transformers keeps the query's own text when it is a positive); drop a candidate that duplicates
 *     a higher-ranked candidate (a safety net: for results identical to sentence-transformers, search only
 *     canonical passages, as it searches a deduplicated corpus, so that the candidate count means the same).
 *  3. Filters against pos = the LOWEST score among the query's positives, in float32 arithmetic as torch does:
 *     absolute_margin: drop if (s + m) > pos; relative_margin: drop if s > pos - |pos| * m;
 *     max_score: drop if s > max; min_score: drop if s < min. Then (xrank's own) ce_max_score on the
 *     cross-encoder scores when given.
 *  4. The survivors, ordered by score descending (ties keep the candidate order, i.e. the retriever's rank):
 *     range_min and range_max count SURVIVORS, after steps 2-3: skip the first range_min, keep those before
 *     range_max. (A candidate dropped in steps 2-3 never uses up one of the range_min slots.)
 *  5. "top": the first num_negatives of that window; "random": num_negatives drawn uniformly from the window
 *     (all of them when there are fewer), returned in window order (score descending).
 * Skip counts are per rule, each counting only candidates still present when it runs (sentence-transformers
 * v6 prints the same numbers for the margins, max_score and min_score).
 * range_max default (select_resolve): range_min + num_negatives + max_positives, with 10 * num_negatives instead
 * when absolute_margin, relative_margin or max_score is set, or min_score together with a cross-encoder.
 *
 * FlagEmbedding style (SELECT_STYLE_FLAG, hn_mine.py): the window is the raw retrieval ranks
 * [range_min, range_max) BEFORE anything is removed; inside it, positives, their duplicates and the extra
 * exclusions (FlagEmbedding drops passages whose text equals the query: pass those) are removed, then the
 * optional filters of step 3, then num_negatives are sampled (random by default; FlagEmbedding returns them in
 * random order, xrank by score, which is rank order for retriever scores). When fewer remain and
 * fill_from_corpus = n > 0, random passages from [0, n) that are neither positives, duplicates of them,
 * exclusions nor already picked are added, with score NAN, as FlagEmbedding pads from its whole corpus.
 *
 * Randomness: one stream per query seeded from (seed, query key), so picks depend on neither the thread count
 * nor the rank count nor the order queries are processed in. The stream is xrank's own: the same seed does not
 * reproduce Python's random.sample picks, only their distribution. */
#ifndef XR_SELECT_H
#define XR_SELECT_H
#include <stddef.h>
#include <stdint.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SELECT_STYLE_ST, SELECT_STYLE_FLAG } SelectStyle;
typedef enum { SELECT_SAMPLE_TOP, SELECT_SAMPLE_RANDOM } SelectSampling;

typedef struct {
    SelectStyle style;
    int num_negatives;      /* >= 1 */
    int range_min;          /* ST: survivors skipped; FLAG: first raw rank of the window (0-based) */
    int range_max;          /* ST: end of the survivor window, 0 = default rule; FLAG: end raw rank (exclusive) */
    int max_positives;      /* largest positive count of any query; set it before select_resolve */
    double max_score;       /* NAN = unset (all four) */
    double min_score;
    double absolute_margin;
    double relative_margin;
    double ce_max_score;    /* NAN = unset: drop candidates whose cross-encoder score is above (likely positives) */
    SelectSampling sampling;
    uint64_t seed;
    int include_positives;  /* keep positives among the candidates (ST include_positives) */
    int64_t fill_from_corpus; /* FLAG only: pad short queries from passages [0, n); 0 = off */
} SelectOpts;

/* One query. Scores are what filters and ordering use: the retriever's, or the cross-encoder's after a
 * rescoring pass (then ce_score may be NULL, or carry them again for ce_max_score). */
typedef struct {
    uint64_t key;               /* stable query id (global query index): seeds the random stream */
    const int64_t *cand_index;  /* n_cand global passage indices in retrieval order, -1 = empty slot */
    const float *cand_score;
    const float *cand_ce_score; /* optional, for ce_max_score */
    size_t n_cand;
    const int64_t *pos_index;   /* the query's positives and their scores (same scorer as cand_score) */
    const float *pos_score;
    size_t n_pos;
    const int64_t *exclude;     /* optional passages never to pick */
    size_t n_exclude;
} SelectQuery;

/* Candidates dropped by each rule, and outcomes. All int64_t so that ranks can reduce the struct as an array
 * of SELECT_STATS_FIELDS int64 (select_stats_add does the same in-process). */
typedef struct {
    int64_t queries;
    int64_t candidates;      /* real (non-empty) candidate slots looked at */
    int64_t positive;        /* a positive of the query, or an exact duplicate of one */
    int64_t excluded;        /* in the caller's exclusion list */
    int64_t duplicate;       /* same text (canonical id) as a higher-ranked candidate */
    int64_t absolute_margin;
    int64_t relative_margin;
    int64_t max_score;
    int64_t min_score;
    int64_t ce_max_score;
    int64_t range_min;       /* ST: survivors skipped by range_min; FLAG: candidates ranked before range_min */
    int64_t range_max;       /* survivors (ST) / candidates (FLAG) at or beyond range_max */
    int64_t not_sampled;     /* left in the window after the pick */
    int64_t negatives;       /* picked (including filled) */
    int64_t filled;          /* FLAG fill_from_corpus picks */
    int64_t short_queries;   /* queries that got fewer than num_negatives */
} SelectStats;
#define SELECT_STATS_FIELDS (sizeof(SelectStats) / sizeof(int64_t))

/* Canonical id of a passage: two passages with the same canonical id are exact duplicates. NULL = identity. */
typedef int64_t (*SelectCanonFn)(int64_t passage, void *ctx);
/* Ready-made SelectCanonFn for a map held in an array: ctx = const int64_t *canon, canon[passage]. */
int64_t select_canon_array(int64_t passage, void *ctx);

/* sentence-transformers' defaults: ST style, 3 negatives, range 0..auto, no filters, top, seed 0. */
void select_opts_default(SelectOpts *o);
/* FlagEmbedding hn_mine's defaults: FLAG style, 15 negatives, ranks 10-210, random. */
void select_opts_flag_default(SelectOpts *o);
/* Apply the range_max default rule (ST) and validate, with sentence-transformers' error conditions:
 * num_negatives >= 1, range_min >= 0, range_min < range_max, num_negatives <= range_max - range_min (ST),
 * max_positives >= 1, fill only with FLAG. have_cross_encoder: a rescoring pass will set the scores. */
int select_resolve(SelectOpts *o, int have_cross_encoder, XrErr *e);
/* Candidates per query the search must return: range_max + max_positives + 1 (ST), range_max (FLAG). */
size_t select_candidate_count(const SelectOpts *o);

/* Pick the negatives of one query into neg_index / neg_score (room for num_negatives); returns how many.
 * Only the first select_candidate_count() candidates are considered. o must have passed select_resolve.
 * stats (may be NULL) is added to. */
int select_query(const SelectOpts *o, const SelectQuery *q, SelectCanonFn canon, void *canon_ctx,
                 int64_t *neg_index, float *neg_score, SelectStats *stats);

void select_stats_add(SelectStats *dst, const SelectStats *src);

#ifdef __cplusplus
}
#endif
#endif
