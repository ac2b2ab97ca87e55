/* data.h: training examples from a tokenized dataset (and optionally a mined group file): labeled pairs for the
 * pointwise BCE recipe (sentence-transformers: each (query, positive) labeled 1, each (query, negative) 0, or a
 * dataset's own labels) or groups for the listwise recipe (FlagEmbedding: 1 positive + G-1 negatives, sampled
 * with a seeded stream when more are available). Tokens of both stores are held in memory as one SeqStore
 * (queries first, then passages) and pairs are assembled at batch time with the model's template. */
#ifndef XR_DATA_H
#define XR_DATA_H
#include <stdint.h>

#include "batch.h"
#include "comm.h"
#include "tokenizer.h"
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TD_PAIRS = 0, TD_GROUPS = 1 } TdMode;

typedef struct {
    TdMode mode;
    int group_size;      /* G: sequences per example (1 for pairs) */
    int64_t nq, np;      /* rows of the query and passage stores; passage row p is sequence nq + p */
    SeqStore seqs;
    int64_t n;           /* examples */
    int64_t *q, *p;      /* [n] query row and passage row (pairs) or positive (groups) */
    float *label;        /* [n] pairs: target in [0, 1] */
    int64_t *neg_off;    /* [n + 1] groups: negatives of example i are neg[neg_off[i] .. neg_off[i+1]) */
    int64_t *neg;
    int64_t npos, nneg;  /* pairs labeled >= 0.5 / below (pairs); groups: negatives available in all */
    int64_t skipped;     /* groups without any negative (left out) */
    /* groups, when loaded with teacher scores (TdOptions.teacher): the teacher's score of the positive and of each
     * negative (parallel to neg), from the group file's ce_scores or the dataset's pos_scores / neg_scores */
    float *teacher_pos, *teacher_neg;
    float *pos_label;    /* [n] groups: the positive's relevance grade (qrels; 1 from a group file) */
    char source[64];     /* "groups", "qrels+negatives", "labels" */
} TrainData;

typedef struct {
    const char *dataset; /* dataset directory (xrank tokenize) */
    const char *groups;  /* group file of xrank mine, or NULL: the dataset's own negatives / labels */
    TdMode mode;
    int group_size;      /* listwise: G >= 2 */
    int skip_tokens;     /* 1: the index only, seqs left empty (td_load_node fills it from the node's copy) */
    int teacher;         /* groups: load teacher scores; a group without them is an error that counts them */
} TdOptions;

/* Read the dataset index, the group file (checked against the dataset) and both token stores. Pairs: from the
 * group file, every row's positive (1) and each found negative (0); without one, the dataset's labels when it
 * has any, else each qrel with grade > 0 (1) and each given negative (0). Groups: one per group-file row (or per
 * qrel positive with the query's given negatives); rows without negatives are skipped (counted). */
int td_load(TrainData *d, const TdOptions *o, XrErr *e);
void td_free(TrainData *d);

/* td_load with one copy of the token stores per node: the node's leader rank reads them, every rank of the node
 * reads the index and maps the leader's tokens (MPI-3 shared memory), so R ranks on a node hold the (large) token
 * stores once instead of R times. Collective; d->seqs is read-only. Free with td_free_node. */
/* Groups: how many examples have fewer than group_size - 1 negatives (their negatives repeat within a group,
 * FlagEmbedding's rule), and the fewest any example has (*min_negs; 0 when none is short). */
int64_t td_short_groups(const TrainData *d, int64_t *min_negs);

typedef struct TdShared TdShared;
int td_load_node(Comm *c, TrainData *d, const TdOptions *o, TdShared **sh, XrErr *e);
void td_free_node(Comm *c, TrainData *d, TdShared *sh);

/* The dataset was tokenized with t's tokenizer (fingerprints agree), else an error naming both. */
int td_check_tokenizer(const char *dataset, const Tokenizer *t, const char *model, XrErr *e);

/* Both stores of a dataset into s: query rows first, then passage rows (sequence nq + p); *nq / *np the rows. */
int td_load_tokens(SeqStore *s, const char *dataset, int64_t *nq, int64_t *np, XrErr *e);

/* The permutation of [0, n) that epoch `epoch` visits, from (seed, epoch) only. */
void td_epoch_order(int64_t n, uint64_t seed, int64_t epoch, int64_t *perm);

/* Example ex's model inputs in an epoch: pairs: 1 item; groups: G items, the positive first, then G-1 negatives
 * sampled without replacement from (seed, epoch, ex) (from the list repeated as FlagEmbedding does when fewer
 * are available). labels (may be NULL) get the pair label (pairs). Returns the item count. */
int td_example_items(const TrainData *d, int64_t ex, uint64_t seed, int64_t epoch, BatchItem *items, float *labels);
/* The same, groups also giving graded labels (the positive's grade, 0 for negatives) and, when loaded, the
 * teacher's scores of the G items (teacher may be NULL). */
int td_example_targets(const TrainData *d, int64_t ex, uint64_t seed, int64_t epoch, BatchItem *items,
                       float *labels, float *teacher);

#ifdef __cplusplus
}
#endif
#endif
