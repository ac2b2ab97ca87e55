/* batch.c: flat token-sequence storage, length-bucketed batch plans and padded batch assembly with the
 * tokenizer's single / pair templates (see batch.h). */
#include "batch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void seqs_init(SeqStore *s) {
    memset(s, 0, sizeof *s);
    s->off_cap = 64;
    s->off = xr_malloc(sizeof(int64_t) * s->off_cap);
    s->off[0] = 0;
}

void seqs_free(SeqStore *s) {
    free(s->tok);
    free(s->off);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

static void seqs_grow_off(SeqStore *s) {
    if ((size_t)s->n + 2 > s->off_cap) {
        s->off_cap *= 2;
        s->off = xr_realloc(s->off, sizeof(int64_t) * s->off_cap);
    }
}

int64_t seqs_add_text(SeqStore *s, const Tokenizer *t, const char *text, size_t len) {
    /* tok_encode fills a buffer it may grow; keep one scratch buffer for all texts. */
    int k = tok_encode(t, text, len, &s->scratch, &s->scratch_cap);
    assert(k >= 0);
    return seqs_add_ids(s, s->scratch, k);
}

int64_t seqs_add_ids(SeqStore *s, const int32_t *ids, int64_t n) {
    seqs_grow_off(s);
    size_t have = (size_t)s->off[s->n];
    if (have + (size_t)n > s->tok_cap) {
        size_t cap = s->tok_cap ? s->tok_cap : 1024;
        while (cap < have + (size_t)n) cap *= 2;
        s->tok = xr_realloc(s->tok, sizeof(int32_t) * cap);
        s->tok_cap = cap;
    }
    if (n) memcpy(s->tok + have, ids, sizeof(int32_t) * (size_t)n);
    s->off[s->n + 1] = (int64_t)have + n;
    return s->n++;
}

int batch_item_len(const Tokenizer *t, const SeqStore *s, BatchItem it, int max_len) {
    int64_t na = seqs_len(s, it.a), nb = it.b >= 0 ? seqs_len(s, it.b) : -1;
    assert(na <= INT32_MAX && nb <= INT32_MAX);
    return tok_seq_len(t, (int)na, (int)nb, max_len);
}

void batch_plan_init(BatchPlan *p) {
    memset(p, 0, sizeof *p);
    p->start_cap = 16;
    p->start = xr_malloc(sizeof(int64_t) * p->start_cap);
    p->start[0] = 0;
}

void batch_plan_free(BatchPlan *p) {
    free(p->order);
    free(p->start);
    memset(p, 0, sizeof *p);
}

/* qsort has no context argument in C11: sort (length, index) keys instead of indices. */
typedef struct {
    int32_t len;
    int64_t idx;
} PlanKey;

static int plan_key_cmp(const void *x, const void *y) {
    const PlanKey *a = x, *b = y;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

void batch_plan_add(BatchPlan *p, const int32_t *len, int64_t first, int64_t count, int batch_size) {
    assert(batch_size > 0 && count >= 0);
    if (count == 0) return;
    PlanKey *keys = xr_malloc(sizeof(PlanKey) * (size_t)count);
    for (int64_t i = 0; i < count; i++) keys[i] = (PlanKey){len[first + i], first + i};
    qsort(keys, (size_t)count, sizeof(PlanKey), plan_key_cmp);

    if ((size_t)(p->nitems + count) > p->order_cap) {
        size_t cap = p->order_cap ? p->order_cap : 256;
        while (cap < (size_t)(p->nitems + count)) cap *= 2;
        p->order = xr_realloc(p->order, sizeof(int64_t) * cap);
        p->order_cap = cap;
    }
    int64_t nb = (count + batch_size - 1) / batch_size;
    if ((size_t)(p->nbatches + nb + 1) > p->start_cap) {
        size_t cap = p->start_cap;
        while (cap < (size_t)(p->nbatches + nb + 1)) cap *= 2;
        p->start = xr_realloc(p->start, sizeof(int64_t) * cap);
        p->start_cap = cap;
    }
    for (int64_t i = 0; i < count; i++) {
        p->order[p->nitems + i] = keys[i].idx;
        p->real_tokens += keys[i].len;
    }
    for (int64_t k = 0; k < nb; k++) {
        int64_t lo = k * batch_size, hi = lo + batch_size < count ? lo + batch_size : count;
        int T = keys[lo].len; /* sorted longest first */
        p->padded_tokens += (int64_t)T * (hi - lo);
        if (T > p->max_T) p->max_T = T;
        if (hi - lo > p->max_B) p->max_B = (int)(hi - lo);
        p->start[p->nbatches + k + 1] = p->nitems + hi;
    }
    p->nitems += count;
    p->nbatches += nb;
    free(keys);
}

void batch_buf_init(BatchBuf *bb) { memset(bb, 0, sizeof *bb); }

void batch_buf_free(BatchBuf *bb) {
    free(bb->b.ids);
    free(bb->b.types);
    free(bb->b.mask);
    free(bb->row_ids);
    free(bb->row_types);
    memset(bb, 0, sizeof *bb);
}

const Batch *batch_fill(BatchBuf *bb, const Tokenizer *t, const SeqStore *s, const BatchItem *items,
                        const int64_t *idx, int n, int max_len) {
    int T = 0, need_row = 0;
    for (int i = 0; i < n; i++) {
        BatchItem it = items[idx[i]];
        int len = batch_item_len(t, s, it, max_len);
        if (len > T) T = len;
        /* tok_single / tok_pair may write the untruncated length before cutting: size the row for that. */
        int64_t full = seqs_len(s, it.a) + (it.b >= 0 ? seqs_len(s, it.b) : 0) + tok_num_special(t, it.b >= 0);
        if (full > need_row) need_row = (int)full;
    }
    if (max_len > need_row) need_row = max_len;
    if (need_row > bb->row_cap) {
        bb->row_cap = need_row;
        bb->row_ids = xr_realloc(bb->row_ids, sizeof(int32_t) * (size_t)need_row);
        bb->row_types = xr_realloc(bb->row_types, sizeof(int32_t) * (size_t)need_row);
    }
    size_t cells = (size_t)n * (size_t)T;
    if (cells > bb->cap) {
        bb->cap = cells;
        bb->b.ids = xr_realloc(bb->b.ids, sizeof(int32_t) * cells);
        bb->b.types = xr_realloc(bb->b.types, sizeof(int32_t) * cells);
        bb->b.mask = xr_realloc(bb->b.mask, sizeof(int32_t) * cells);
    }
    bb->b.B = n;
    bb->b.T = T;
    int32_t pad = tok_pad_id(t);
    for (int i = 0; i < n; i++) {
        BatchItem it = items[idx[i]];
        const int32_t *a = s->tok + s->off[it.a];
        int na = (int)seqs_len(s, it.a), len;
        if (it.b >= 0)
            len = tok_pair(t, a, na, s->tok + s->off[it.b], (int)seqs_len(s, it.b), max_len, bb->row_ids,
                           bb->row_types);
        else
            len = tok_single(t, a, na, max_len, bb->row_ids, bb->row_types);
        assert(len == batch_item_len(t, s, it, max_len));
        int32_t *ids = bb->b.ids + (size_t)i * T, *types = bb->b.types + (size_t)i * T,
                *mask = bb->b.mask + (size_t)i * T;
        memcpy(ids, bb->row_ids, sizeof(int32_t) * (size_t)len);
        memcpy(types, bb->row_types, sizeof(int32_t) * (size_t)len);
        for (int j = 0; j < len; j++) mask[j] = 1;
        for (int j = len; j < T; j++) {
            ids[j] = pad;
            types[j] = 0;
            mask[j] = 0;
        }
    }
    return &bb->b;
}

void batch_run(const Tokenizer *t, const SeqStore *s, const BatchItem *items, int64_t n, int max_len, int batch_size,
               int64_t window_items, BatchForwardFn fn, void *ctx, int out_dim, float *out, BatchRunStats *st,
               void (*progress)(void *pctx, int64_t done), void *pctx) {
    assert(batch_size > 0 && window_items > 0 && out_dim > 0);
    if (st) memset(st, 0, sizeof *st);
    if (n <= 0) return;
    int32_t *lens = xr_malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) lens[i] = batch_item_len(t, s, items[i], max_len);
    BatchPlan plan;
    batch_plan_init(&plan);
    for (int64_t w = 0; w < n; w += window_items)
        batch_plan_add(&plan, lens, w, w + window_items < n ? window_items : n - w, batch_size);
    float *tmp = xr_malloc(sizeof(float) * (size_t)plan.max_B * (size_t)out_dim);
    BatchBuf bb;
    batch_buf_init(&bb);
    int64_t done = 0;
    for (int64_t k = 0; k < plan.nbatches; k++) {
        int m = batch_plan_size(&plan, k);
        const int64_t *idx = plan.order + plan.start[k];
        fn(ctx, batch_fill(&bb, t, s, items, idx, m, max_len), tmp);
        for (int i = 0; i < m; i++)
            memcpy(out + idx[i] * out_dim, tmp + (size_t)i * out_dim, sizeof(float) * (size_t)out_dim);
        done += m;
        if (progress) progress(pctx, done);
    }
    if (st) *st = (BatchRunStats){n, plan.nbatches, plan.real_tokens, plan.padded_tokens};
    batch_buf_free(&bb);
    free(tmp);
    batch_plan_free(&plan);
    free(lens);
}
