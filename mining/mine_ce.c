/* mine_ce.c: cross-encoder rescoring of a block of queries' candidates and positives, the pairs spread over the
 * ranks in whole batching windows counted from the block's first pair (the scores are the same for any rank
 * count), every rank getting all scores. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mine_internal.h"

static void mine_ce_fwd(void *ctx, const Batch *b, float *out) {
    const Mine *m = ctx;
    encoder_forward_score(m->o->ce, b, out);
    if (m->o->ce_sigmoid)
        for (int i = 0; i < b->B; i++) out[i] = 1.0f / (1.0f + expf(-out[i]));
}

/* Score the pairs (block query pq[t], passage pp[t]) of this block: windows of ce_batch_size * bucket_batches
 * pairs counted from the block's first pair, whole windows per rank; every rank gets all scores. */
static int mine_ce_block(Mine *m, const int64_t *qrows, int64_t nb, const int64_t *pq, const int64_t *pp,
                         int64_t npairs, float **scores, BatchRunStats *acc, XrErr *e) {
    const MineOpts *o = m->o;
    int64_t window = (int64_t)o->ce_batch_size * o->bucket_batches;
    int64_t nw = (npairs + window - 1) / window;
    int64_t a = mine_min64(nw * m->rank / m->size * window, npairs),
            b = mine_min64(nw * (m->rank + 1) / m->size * window, npairs);
    float *mine = xr_malloc(sizeof(float) * (size_t)(b - a + 1));
    int st = 0;
    if (b > a) {
        TokBatch tq = {0}, tp = {0};
        st = h5store_read_rows(m->qs, qrows, nb, &tq, e);
        if (st == 0) st = h5store_read_rows(m->ps, pp + a, b - a, &tp, e);
        if (st == 0) {
            SeqStore seqs;
            seqs_init(&seqs);
            for (int64_t i = 0; i < nb; i++)
                seqs_add_ids(&seqs, tq.tokens + tq.offsets[i], tq.offsets[i + 1] - tq.offsets[i]);
            BatchItem *items = xr_malloc(sizeof(BatchItem) * (size_t)(b - a));
            for (int64_t t = 0; t < b - a; t++) {
                int64_t s = seqs_add_ids(&seqs, tp.tokens + tp.offsets[t], tp.offsets[t + 1] - tp.offsets[t]);
                items[t] = (BatchItem){pq[a + t], s};
            }
            BatchRunStats bs;
            batch_run(o->ce_tok, &seqs, items, b - a, o->ce_max_len, o->ce_batch_size, window, mine_ce_fwd, m, 1, mine,
                      &bs, NULL, NULL);
            mine_batch_stats_add(acc, &bs);
            free(items);
            seqs_free(&seqs);
        }
        tokbatch_free(&tq);
        tokbatch_free(&tp);
    }
    if (comm_check(m->c, st, e)) {
        free(mine);
        return -1;
    }
    size_t got;
    *scores = (float *)comm_allgather(m->c, mine, sizeof(float) * (size_t)(b - a), &got, NULL);
    assert(got == sizeof(float) * (size_t)npairs);
    free(mine);
    return 0;
}

int mine_ce_rescore(Mine *m, const int64_t *qrows, int64_t nb, const int64_t *cand_rows, int k, int ncand,
                    int64_t npb, float **ce_cand, float **ce_pos, XrErr *e) {
    int64_t cap = nb * ncand + npb + 1, npairs = 0;
    int64_t *pq = xr_malloc(sizeof(int64_t) * (size_t)cap), *pp = xr_malloc(sizeof(int64_t) * (size_t)cap);
    int64_t *slot = xr_malloc(sizeof(int64_t) * (size_t)(nb * ncand + 1));
    for (int64_t t = 0; t < nb; t++) {
        for (int j = 0; j < ncand; j++) {
            int64_t p = cand_rows[t * k + j];
            slot[t * ncand + j] = p >= 0 ? npairs : -1;
            if (p >= 0) pq[npairs] = t, pp[npairs++] = p;
        }
    }
    int64_t pos0 = npairs;
    for (int64_t t = 0; t < nb; t++)
        for (int64_t x = m->pos_off[qrows[t]]; x < m->pos_off[qrows[t] + 1]; x++)
            pq[npairs] = t, pp[npairs++] = m->pos_row[x];
    float *all = NULL;
    int st = mine_ce_block(m, qrows, nb, pq, pp, npairs, &all, &m->r->ce, e);
    if (st == 0) {
        m->r->ce_pairs += npairs;
        *ce_cand = xr_malloc(sizeof(float) * (size_t)(nb * ncand + 1));
        for (int64_t t = 0; t < nb * ncand; t++) (*ce_cand)[t] = slot[t] >= 0 ? all[slot[t]] : NAN;
        *ce_pos = xr_malloc(sizeof(float) * (size_t)(npb + 1));
        memcpy(*ce_pos, all + pos0, sizeof(float) * (size_t)npb);
    }
    free(all);
    free(pq);
    free(pp);
    free(slot);
    return st;
}
