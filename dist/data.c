/* data.c: training examples (labeled pairs or groups) from a dataset directory and an optional group file, the
 * epoch permutation and the seeded negative sampling of groups. Everything depends on (data, seed, epoch) only,
 * never on the rank count. */
#include "data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "groups.h"
#include "h5store.h"
#include "rng.h"

static void td_push(TrainData *d, int64_t *cap, int64_t q, int64_t p, float label) {
    if (d->n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        d->q = xr_realloc(d->q, sizeof(int64_t) * (size_t)*cap);
        d->p = xr_realloc(d->p, sizeof(int64_t) * (size_t)*cap);
        d->label = xr_realloc(d->label, sizeof(float) * (size_t)*cap);
    }
    d->q[d->n] = q, d->p[d->n] = p, d->label[d->n] = label;
    d->n++;
    if (label >= 0.5f) d->npos++;
    else d->nneg++;
}

/* Group rows: example i = (q[i], p[i]) and its negatives; neg_cap grows with the list. With teacher scores
 * (d->teacher_pos allocated), tp is the positive's and tn[k] the negatives'; a non-finite one counts the group in
 * *missing. */
static void td_push_group(TrainData *d, int64_t *cap, int64_t *neg_cap, int64_t q, int64_t p, const int64_t *negs,
                          int64_t k, float grade, float tp, const float *tn, int64_t *missing) {
    if (k == 0) {
        d->skipped++;
        return;
    }
    int64_t tot = d->neg_off[d->n];
    int teacher = d->teacher_pos != NULL;
    if (d->n + 1 >= *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        d->q = xr_realloc(d->q, sizeof(int64_t) * (size_t)*cap);
        d->p = xr_realloc(d->p, sizeof(int64_t) * (size_t)*cap);
        d->neg_off = xr_realloc(d->neg_off, sizeof(int64_t) * (size_t)(*cap + 1));
        d->pos_label = xr_realloc(d->pos_label, sizeof(float) * (size_t)*cap);
        if (teacher) d->teacher_pos = xr_realloc(d->teacher_pos, sizeof(float) * (size_t)*cap);
    }
    if (tot + k > *neg_cap) {
        while (tot + k > *neg_cap) *neg_cap = *neg_cap ? *neg_cap * 2 : 4096;
        d->neg = xr_realloc(d->neg, sizeof(int64_t) * (size_t)*neg_cap);
        if (teacher) d->teacher_neg = xr_realloc(d->teacher_neg, sizeof(float) * (size_t)*neg_cap);
    }
    memcpy(d->neg + tot, negs, sizeof(int64_t) * (size_t)k);
    if (teacher) {
        int bad = !isfinite(tp);
        for (int64_t j = 0; j < k; j++) bad |= !isfinite(tn[j]);
        *missing += bad;
        d->teacher_pos[d->n] = tp;
        memcpy(d->teacher_neg + tot, tn, sizeof(float) * (size_t)k);
    }
    d->q[d->n] = q, d->p[d->n] = p, d->pos_label[d->n] = grade;
    d->neg_off[++d->n] = tot + k;
    d->npos++;
    d->nneg += k;
}

/* (query, passage, index row) triples by query, then passage, then row: a total order, so qsort's result is
 * unique. */
static int cmp_pair(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    for (int i = 0; i < 3; i++)
        if (x[i] != y[i]) return (x[i] > y[i]) - (x[i] < y[i]);
    return 0;
}

static int td_load_store(TrainData *d, const char *dataset, const char *name, XrErr *e) {
    TokenStore *s = h5store_open(dataset, name, e);
    if (!s) return -1;
    TokBatch tb = {0};
    int rc = h5store_load(s, &tb, e);
    if (rc == 0)
        for (int64_t i = 0; i < tb.n; i++)
            seqs_add_ids(&d->seqs, tb.tokens + tb.offsets[i], tb.offsets[i + 1] - tb.offsets[i]);
    tokbatch_free(&tb);
    h5store_close(s);
    return rc;
}

int td_check_tokenizer(const char *dataset, const Tokenizer *t, const char *model, XrErr *e) {
    DsIndex ix;
    if (ds_read_index(dataset, &ix, e)) return -1;
    char fp[32];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)tok_fingerprint(t));
    int rc = strcmp(fp, ix.tokenizer_fingerprint)
                 ? xr_errf(e,
                           "%s was tokenized with another tokenizer (%s %s) than %s's (%s): tokenize it with xrank "
                           "tokenize --model %s",
                           dataset, ix.tokenizer_kind, ix.tokenizer_fingerprint, model, fp, model)
                 : 0;
    ds_index_free(&ix);
    return rc;
}

int td_load_tokens(SeqStore *s, const char *dataset, int64_t *nq, int64_t *np, XrErr *e) {
    TrainData d;
    memset(&d, 0, sizeof d);
    d.seqs = *s;
    int rc = td_load_store(&d, dataset, "queries", e);
    *nq = d.seqs.n;
    if (rc == 0) rc = td_load_store(&d, dataset, "passages", e);
    *np = d.seqs.n - *nq;
    *s = d.seqs;
    return rc;
}

int td_load(TrainData *d, const TdOptions *o, XrErr *e) {
    memset(d, 0, sizeof *d);
    seqs_init(&d->seqs);
    d->mode = o->mode;
    d->group_size = o->mode == TD_GROUPS ? o->group_size : 1;
    if (o->mode == TD_GROUPS && o->group_size < 2)
        return xr_errf(e, "--train-group-size %d: a group needs the positive and at least one negative (>= 2)",
                       o->group_size);
    DsIndex ix;
    if (ds_read_index(o->dataset, &ix, e)) return -1;
    d->nq = ix.num_queries, d->np = ix.num_passages;
    int rc = 0;
    int64_t cap = 0, neg_cap = 0;
    int64_t missing = 0; /* groups without teacher scores */
    if (o->mode == TD_GROUPS) {
        d->neg_off = xr_calloc(1, sizeof(int64_t));
        if (o->teacher) d->teacher_pos = xr_malloc(sizeof(float));
        cap = 0;
    }
    if (o->groups) {
        GroupSet g;
        if (groups_read(o->groups, &g, e)) rc = -1;
        else {
            rc = groups_check_dataset(&g, o->groups, ix.num_queries, ix.num_passages, ix.tokenizer_fingerprint, e);
            if (rc == 0 && d->teacher_pos && !g.ce_scores)
                rc = xr_errf(e,
                             "%s has no teacher scores (ce_scores): rescore its groups with xrank mine --cross-encoder "
                             "(the teacher), or train without --loss distill",
                             o->groups);
            for (int64_t r = 0; rc == 0 && r < g.n; r++) {
                int k = groups_row_negatives(&g, r);
                const int64_t *negs = g.negatives + r * g.k;
                if (o->mode == TD_PAIRS) {
                    td_push(d, &cap, g.query[r], g.positive[r], 1.0f);
                    for (int j = 0; j < k; j++) td_push(d, &cap, g.query[r], negs[j], 0.0f);
                } else {
                    const float *ce = d->teacher_pos ? g.ce_scores + r * (1 + g.k) : NULL;
                    td_push_group(d, &cap, &neg_cap, g.query[r], g.positive[r], negs, k, 1.0f, ce ? ce[0] : NAN,
                                  ce ? ce + 1 : NULL, &missing);
                }
            }
            snprintf(d->source, sizeof d->source, "groups");
            groups_free(&g);
        }
    } else if (o->mode == TD_PAIRS && ix.nlab > 0) {
        for (int64_t i = 0; i < ix.nlab; i++) {
            float l = ix.lab_label[i];
            if (!(l >= 0.0f && l <= 1.0f)) {
                rc = xr_errf(e, "%s: label %lld is %g: BCE targets must lie in [0, 1] (rescale the label column)",
                             o->dataset, (long long)i, (double)l);
                break;
            }
            td_push(d, &cap, ix.lab_query[i], ix.lab_passage[i], l);
        }
        snprintf(d->source, sizeof d->source, "labels");
    } else {
        /* qrels positives and the dataset's given negatives (sorted by query: their order in the index) */
        int64_t *nq = xr_malloc(sizeof(int64_t) * (size_t)(ix.nneg + 1)), nn = ix.nneg;
        /* (query, passage, row in the index) sorted by query and passage; the row finds the negative's score */
        int64_t *order = xr_malloc(sizeof(int64_t) * (size_t)(3 * ix.nneg + 1));
        for (int64_t i = 0; i < nn; i++)
            order[3 * i] = ix.neg_query[i], order[3 * i + 1] = ix.neg_passage[i], order[3 * i + 2] = i;
        qsort(order, (size_t)nn, 3 * sizeof(int64_t), cmp_pair);
        for (int64_t i = 0; i < nn; i++) nq[i] = order[3 * i];
        int64_t *negs = xr_malloc(sizeof(int64_t) * (size_t)(nn + 1));
        float *tneg = xr_malloc(sizeof(float) * (size_t)(nn + 1));
        if (nn == 0 && o->mode == TD_GROUPS)
            rc = xr_errf(e, "%s has no negatives: mine some with xrank mine and pass the group file (--groups)",
                         o->dataset);
        if (nn == 0 && o->mode == TD_PAIRS)
            rc = xr_errf(e,
                         "%s has no negatives and no labels: mine negatives with xrank mine and pass the group file "
                         "(--groups)",
                         o->dataset);
        for (int64_t i = 0; rc == 0 && i < ix.nqrels; i++) {
            if (ix.qrel_grade[i] <= 0) continue;
            int64_t q = ix.qrel_query[i], lo = 0, hi = nn;
            while (lo < hi) { /* first negative of q */
                int64_t mid = (lo + hi) / 2;
                if (nq[mid] < q) lo = mid + 1;
                else hi = mid;
            }
            int64_t k = 0;
            for (int64_t j = lo; j < nn && nq[j] == q; j++, k++) {
                negs[k] = order[3 * j + 1];
                tneg[k] = ix.neg_score ? ix.neg_score[order[3 * j + 2]] : NAN;
            }
            if (o->mode == TD_PAIRS) td_push(d, &cap, q, ix.qrel_passage[i], 1.0f);
            else
                td_push_group(d, &cap, &neg_cap, q, ix.qrel_passage[i], negs, k, (float)ix.qrel_grade[i],
                              ix.qrel_score ? ix.qrel_score[i] : NAN, tneg, &missing);
        }
        if (rc == 0 && o->mode == TD_PAIRS) /* each given negative once */
            for (int64_t j = 0; j < nn; j++) td_push(d, &cap, order[3 * j], order[3 * j + 1], 0.0f);
        snprintf(d->source, sizeof d->source, "qrels+negatives");
        free(nq), free(order), free(negs), free(tneg);
    }
    if (rc == 0 && missing > 0)
        rc = xr_errf(e,
                     "%lld of %lld groups of %s%s%s lack a teacher score for the positive or a negative: distillation "
                     "needs every one (xrank mine --cross-encoder writes them; FlagEmbedding jsonl: pos_scores / "
                     "neg_scores)",
                     (long long)missing, (long long)d->n, o->dataset, o->groups ? " + " : "", o->groups ? o->groups : "");
    if (rc == 0 && d->n == 0)
        rc = xr_errf(e, "%s%s%s: no training examples (%lld groups without negatives)", o->dataset,
                     o->groups ? " + " : "", o->groups ? o->groups : "", (long long)d->skipped);
    if (rc == 0 && !o->skip_tokens) rc = td_load_store(d, o->dataset, "queries", e);
    if (rc == 0 && !o->skip_tokens) rc = td_load_store(d, o->dataset, "passages", e);
    if (rc == 0 && !o->skip_tokens && d->seqs.n != d->nq + d->np)
        rc = xr_errf(e, "%s: stores hold %lld rows, the index says %lld queries + %lld passages", o->dataset,
                     (long long)d->seqs.n, (long long)d->nq, (long long)d->np);
    ds_index_free(&ix);
    if (rc) td_free(d);
    return rc;
}

void td_free(TrainData *d) {
    seqs_free(&d->seqs);
    free(d->q), free(d->p), free(d->label), free(d->neg_off), free(d->neg);
    free(d->teacher_pos), free(d->teacher_neg), free(d->pos_label);
    memset(d, 0, sizeof *d);
}

struct TdShared {
    CommShm *tok, *off;
};

int td_load_node(Comm *c, TrainData *d, const TdOptions *o, TdShared **sh, XrErr *e) {
    *sh = NULL;
    if (comm_local_size(c) <= 1) return comm_check(c, td_load(d, o, e), e);
    TdOptions oo = *o;
    int lead = comm_node_leader(c);
    oo.skip_tokens = !lead;
    int st = td_load(d, &oo, e);
    if (comm_check(c, st, e)) {
        if (st == 0) td_free(d);
        return -1;
    }
    TdShared *s = xr_calloc(1, sizeof *s);
    size_t nt = 0, no = 0;
    int64_t ntok = lead ? d->seqs.off[d->seqs.n] : 0;
    int32_t *tok = comm_node_share(c, d->seqs.tok, sizeof(int32_t) * (size_t)ntok, &nt, &s->tok);
    int64_t *off = comm_node_share(c, d->seqs.off, sizeof(int64_t) * (size_t)(d->seqs.n + 1), &no, &s->off);
    seqs_free(&d->seqs);
    d->seqs.tok = tok, d->seqs.off = off, d->seqs.n = (int64_t)(no / sizeof(int64_t)) - 1;
    *sh = s;
    return 0;
}

void td_free_node(Comm *c, TrainData *d, TdShared *sh) {
    if (sh) {
        d->seqs.tok = NULL, d->seqs.off = NULL; /* the node's copy: not ours to free */
        comm_node_share_free(c, sh->tok);
        comm_node_share_free(c, sh->off);
        free(sh);
    }
    td_free(d);
}

/* The j-th draw of a stream: a counter-based generator, so any draw is a pure function of (key, j). */
static inline uint64_t td_draw(uint64_t key, uint64_t j) { return rng_mix64(key ^ rng_mix64(j)); }

static inline uint64_t td_below(uint64_t key, uint64_t j, uint64_t n) {
    /* 64-bit draws: the modulo bias is below 2^-40 for any n a dataset has */
    return td_draw(key, j) % n;
}

void td_epoch_order(int64_t n, uint64_t seed, int64_t epoch, int64_t *perm) {
    uint64_t key = rng_key(seed, (uint64_t)epoch, 0x5348554646ull /* "SHUFF" */);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int64_t j = (int64_t)td_below(key, (uint64_t)i, (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
}

int td_example_items(const TrainData *d, int64_t ex, uint64_t seed, int64_t epoch, BatchItem *items, float *labels) {
    return td_example_targets(d, ex, seed, epoch, items, d->mode == TD_PAIRS ? labels : NULL, NULL);
}

int64_t td_short_groups(const TrainData *d, int64_t *min_negs) {
    int64_t n = 0, least = 0;
    if (d->mode == TD_GROUPS)
        for (int64_t i = 0; i < d->n; i++) {
            int64_t k = d->neg_off[i + 1] - d->neg_off[i];
            if (k >= d->group_size - 1) continue;
            least = n++ == 0 || k < least ? k : least;
        }
    *min_negs = least;
    return n;
}

int td_example_targets(const TrainData *d, int64_t ex, uint64_t seed, int64_t epoch, BatchItem *items,
                       float *labels, float *teacher) {
    if (d->mode == TD_PAIRS) {
        items[0] = (BatchItem){d->q[ex], d->nq + d->p[ex]};
        if (labels) labels[0] = d->label[ex];
        return 1;
    }
    int G = d->group_size;
    int64_t q = d->q[ex], lo = d->neg_off[ex], k = d->neg_off[ex + 1] - lo;
    items[0] = (BatchItem){q, d->nq + d->p[ex]};
    if (labels) {
        labels[0] = d->pos_label ? d->pos_label[ex] : 1.0f;
        for (int j = 1; j < G; j++) labels[j] = 0.0f;
    }
    if (teacher) teacher[0] = d->teacher_pos ? d->teacher_pos[ex] : NAN;
    /* candidates: the list, repeated ceil((G-1) / k) times when short (FlagEmbedding), then a partial
     * Fisher-Yates draw of G-1 of them on a virtual index array */
    int64_t reps = k >= G - 1 ? 1 : (G - 1 + k - 1) / k, m = k * reps;
    int64_t idx[256];
    int64_t *pool = m <= 256 ? idx : xr_malloc(sizeof(int64_t) * (size_t)m);
    for (int64_t i = 0; i < m; i++) pool[i] = i % k;
    uint64_t key = rng_key(seed, (uint64_t)epoch, 0x4E4547000000ull ^ (uint64_t)ex); /* "NEG" */
    for (int j = 0; j < G - 1; j++) {
        int64_t r = j + (int64_t)td_below(key, (uint64_t)j, (uint64_t)(m - j));
        int64_t t = pool[j];
        pool[j] = pool[r], pool[r] = t;
        items[1 + j] = (BatchItem){q, d->nq + d->neg[lo + pool[j]]};
        if (teacher) teacher[1 + j] = d->teacher_neg ? d->teacher_neg[lo + pool[j]] : NAN;
    }
    if (pool != idx) free(pool);
    return G;
}
