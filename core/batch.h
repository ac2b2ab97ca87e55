/* batch.h: batch assembly for inference: token sequences stored flat without special tokens, items that are
 * one sequence or a pair, a plan that sorts items by assembled length inside fixed windows (length bucketing)
 * and cuts them into batches, and the fill of a padded Batch (dynamic padding: T = longest in the batch). */
#ifndef XR_BATCH_H
#define XR_BATCH_H
#include <stdint.h>

#include "model.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Token sequences without specials, flat: sequence i is tok[off[i] .. off[i+1]). */
typedef struct {
    int32_t *tok;
    int64_t *off;
    int64_t n;
    size_t tok_cap, off_cap;
    int32_t *scratch; /* tok_encode output before it is appended */
    size_t scratch_cap;
} SeqStore;

void seqs_init(SeqStore *s);
void seqs_free(SeqStore *s);
/* Tokenize text (len bytes) with tok_encode and append it; returns its sequence index. */
int64_t seqs_add_text(SeqStore *s, const Tokenizer *t, const char *text, size_t len);
/* Append an already tokenized sequence; returns its index. */
int64_t seqs_add_ids(SeqStore *s, const int32_t *ids, int64_t n);
static inline int64_t seqs_len(const SeqStore *s, int64_t i) { return s->off[i + 1] - s->off[i]; }

/* One model input: sequence a alone (b < 0) or the pair (a, b), indices into a SeqStore. */
typedef struct {
    int64_t a, b;
} BatchItem;

/* Length of the item once the template's specials are added and longest_first truncation to max_len
 * (<= 0: none) is applied: exactly what tok_single / tok_pair will return. */
int batch_item_len(const Tokenizer *t, const SeqStore *s, BatchItem it, int max_len);

/* The execution order: batch k holds the items order[start[k] .. start[k+1]). Items are sorted by length,
 * longest first (ties by index), inside each window passed to batch_plan_add, so a batch never mixes windows
 * and the batches' composition depends only on the windows, never on who else is in the plan. */
typedef struct {
    int64_t nitems, nbatches;
    int64_t *order;        /* [nitems] item indices */
    int64_t *start;        /* [nbatches + 1] */
    int64_t real_tokens;   /* sum of item lengths */
    int64_t padded_tokens; /* sum over batches of B * T: what the forward computes */
    int max_T, max_B;
    size_t order_cap, start_cap;
} BatchPlan;

void batch_plan_init(BatchPlan *p);
void batch_plan_free(BatchPlan *p);
/* Add the window of items first .. first+count-1 (their lengths len[first ..]) cut into batches of at
 * most batch_size. */
void batch_plan_add(BatchPlan *p, const int32_t *len, int64_t first, int64_t count, int batch_size);
static inline int batch_plan_size(const BatchPlan *p, int64_t k) { return (int)(p->start[k + 1] - p->start[k]); }

/* Reusable padded batch buffers. */
typedef struct {
    Batch b;
    size_t cap;                      /* capacity of b.ids / types / mask in tokens */
    int32_t *row_ids, *row_types;    /* one assembled sequence */
    int row_cap;
} BatchBuf;

void batch_buf_init(BatchBuf *bb);
void batch_buf_free(BatchBuf *bb);
/* Assemble the n items items[idx[0..n-1]] with the tokenizer's template, truncated to max_len, into bb->b:
 * B = n, T = longest assembled item, ids padded with the tokenizer's pad id, mask 1 on real tokens and
 * token types 0 on padding. Returns &bb->b. */
const Batch *batch_fill(BatchBuf *bb, const Tokenizer *t, const SeqStore *s, const BatchItem *items,
                        const int64_t *idx, int n, int max_len);

/* Run n items through fn in length-bucketed batches and scatter the results back to item order:
 * out[i * out_dim ..] = result of items[i]. Windows of window_items consecutive items are sorted longest first
 * (batch_plan_add) and cut into batches of batch_size, so the batches, and hence every float, depend only on
 * the items and these two numbers, never on who runs them. progress (may be NULL) is called after each batch
 * with the items done so far. Fills st (may be NULL) with the plan's batch and token counts. */
typedef void (*BatchForwardFn)(void *ctx, const Batch *b, float *out);
typedef struct {
    int64_t items, batches, real_tokens, padded_tokens;
} BatchRunStats;
void batch_run(const Tokenizer *t, const SeqStore *s, const BatchItem *items, int64_t n, int max_len, int batch_size,
               int64_t window_items, BatchForwardFn fn, void *ctx, int out_dim, float *out, BatchRunStats *st,
               void (*progress)(void *pctx, int64_t done), void *pctx);

#ifdef __cplusplus
}
#endif
#endif
