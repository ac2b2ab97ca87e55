/* tr_builder.c: the builder that merges the rows of every text input into one TextSet: texts interned by exact
 * bytes (hash maps that never leak their order), qrels / negatives / labels as index triples de-duplicated by
 * pair sets, and the final pass (negatives that are positives dropped, stable sort by query). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tr_internal.h"

static uint64_t text_hash(const char *s, size_t n) { return xr_hash64(s, n, 0x7872616e6bULL); }

void tr_strmap_free(TrStrMap *m) {
    free(m->slot);
    free(m->hash);
    memset(m, 0, sizeof *m);
}

static void strmap_grow(TrStrMap *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    int64_t *slot = xr_calloc(cap, sizeof(int64_t));
    uint64_t *hash = xr_calloc(cap, sizeof(uint64_t));
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slot[i]) continue;
        size_t p = m->hash[i] & (cap - 1);
        while (slot[p]) p = (p + 1) & (cap - 1);
        slot[p] = m->slot[i];
        hash[p] = m->hash[i];
    }
    free(m->slot);
    free(m->hash);
    m->slot = slot, m->hash = hash, m->cap = cap;
}

/* Index of s in l, or -1 (and *pos = the free slot to insert at, *h = the hash). */
int64_t tr_strmap_find(TrStrMap *m, const TextList *l, const char *s, size_t n, uint64_t *h, size_t *pos) {
    if ((m->n + 1) * 2 > m->cap) strmap_grow(m);
    *h = text_hash(s, n);
    size_t p = *h & (m->cap - 1);
    for (; m->slot[p]; p = (p + 1) & (m->cap - 1)) {
        if (m->hash[p] != *h) continue;
        size_t len;
        const char *t = textlist_get(l, m->slot[p] - 1, &len);
        if (len == n && !memcmp(t, s, n)) return m->slot[p] - 1;
    }
    *pos = p;
    return -1;
}

void tr_strmap_put(TrStrMap *m, size_t pos, uint64_t h, int64_t idx) {
    m->slot[pos] = idx + 1;
    m->hash[pos] = h;
    m->n++;
}


static uint64_t pair_hash(int64_t a, int64_t b) {
    uint64_t x = (uint64_t)a * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)b + 0x632BE59BD9B4E019ULL);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ULL;
    return x ^ (x >> 29);
}

static void pairset_free(TrPairSet *s) {
    free(s->a);
    free(s->b);
    memset(s, 0, sizeof *s);
}

static int pairset_add(TrPairSet *s, int64_t a, int64_t b, int insert);

static void pairset_grow(TrPairSet *s) {
    TrPairSet t = {0};
    t.cap = s->cap ? s->cap * 2 : 1024;
    t.a = xr_malloc(sizeof(int64_t) * t.cap);
    t.b = xr_malloc(sizeof(int64_t) * t.cap);
    for (size_t i = 0; i < t.cap; i++) t.a[i] = -1;
    for (size_t i = 0; i < s->cap; i++)
        if (s->a[i] >= 0) pairset_add(&t, s->a[i], s->b[i], 1);
    pairset_free(s);
    *s = t;
}

/* Returns 1 when (a, b) was absent (and inserts it when insert), 0 when present. */
static int pairset_add(TrPairSet *s, int64_t a, int64_t b, int insert) {
    if ((s->n + 1) * 2 > s->cap) pairset_grow(s);
    size_t p = pair_hash(a, b) & (s->cap - 1);
    for (; s->a[p] >= 0; p = (p + 1) & (s->cap - 1))
        if (s->a[p] == a && s->b[p] == b) return 0;
    if (insert) {
        s->a[p] = a, s->b[p] = b;
        s->n++;
    }
    return 1;
}

/* Append (q, p, x) to three parallel arrays of n entries, growing them (and *cap) when full. */
static void triple_push(int64_t n, int64_t *cap, int64_t **q, int64_t **p, float **x, int64_t qv, int64_t pv,
                        float xv) {
    if (n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *q = xr_realloc(*q, sizeof(int64_t) * (size_t)*cap);
        *p = xr_realloc(*p, sizeof(int64_t) * (size_t)*cap);
        *x = xr_realloc(*x, sizeof(float) * (size_t)*cap);
    }
    (*q)[n] = qv;
    (*p)[n] = pv;
    (*x)[n] = xv;
}

void tr_add_qrel(TrBuilder *b, int64_t q, int64_t p, int32_t grade, float score) {
    TextSet *ts = b->ts;
    if (!pairset_add(&b->qrel_set, q, p, 1)) {
        ts->dup_qrels++;
        return;
    }
    int64_t cap = b->cap_qrels;
    triple_push(ts->nqrels, &b->cap_qrels, &ts->qrel_query, &ts->qrel_passage, &ts->qrel_score, q, p, score);
    if (b->cap_qrels != cap) ts->qrel_grade = xr_realloc(ts->qrel_grade, sizeof(int32_t) * (size_t)b->cap_qrels);
    ts->qrel_grade[ts->nqrels++] = grade;
}

static void add_neg(TrBuilder *b, int64_t q, int64_t p, float score) {
    TextSet *ts = b->ts;
    if (!pairset_add(&b->neg_set, q, p, 1)) {
        ts->dup_negatives++;
        return;
    }
    triple_push(ts->nneg++, &b->cap_neg, &ts->neg_query, &ts->neg_passage, &ts->neg_score, q, p, score);
}

static void add_label(TrBuilder *b, int64_t q, int64_t p, float label) {
    TextSet *ts = b->ts;
    triple_push(ts->nlab++, &b->cap_lab, &ts->lab_query, &ts->lab_passage, &ts->lab_label, q, p, label);
}

int tr_is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return 0;
    return 1;
}

/* Empty (or whitespace-only) texts are an error unless allowed; what names the field for the message. */
int tr_check_text(TrBuilder *b, const char *s, size_t n, const char *file, int64_t line, const char *what, XrErr *e) {
    if (!tr_is_blank(s, n)) return 0;
    if (b->o->allow_empty) {
        b->ts->empty_texts++;
        return 0;
    }
    return xr_errf(e, "%s:%lld: empty text in %s (use --allow-empty to keep empty texts)", file, (long long)line, what);
}

/* Query / passage by exact text: the index of the first occurrence, adding the text when new. */
static int64_t intern(TrStrMap *m, TextList *l, const char *s, size_t n, int64_t *dups) {
    uint64_t h;
    size_t pos;
    int64_t i = tr_strmap_find(m, l, s, n, &h, &pos);
    if (i >= 0) {
        (*dups)++;
        return i;
    }
    i = textlist_add(l, s, n);
    tr_strmap_put(m, pos, h, i);
    return i;
}

void tr_tv_push(TrTextVec *t, const char *s, size_t n, float score) {
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->v = xr_realloc(t->v, sizeof(TrText) * (size_t)t->cap);
    }
    t->v[t->n++] = (TrText){s, n, score};
}

/* One pair / FlagEmbedding row: a query, its positives, its negatives (with scores, NaN = none) or a
 * labeled pair. */
int tr_builder_row(TrBuilder *b, const char *file, int64_t line, const char *q, size_t qn, const TrTextVec *pos,
                       const TrTextVec *neg, int has_label, float label, XrErr *e) {
    TextSet *ts = b->ts;
    if (tr_check_text(b, q, qn, file, line, "the query", e) < 0) return -1;
    for (int i = 0; i < pos->n; i++)
        if (tr_check_text(b, pos->v[i].s, pos->v[i].n, file, line, has_label ? "the passage" : "a positive", e) < 0)
            return -1;
    for (int i = 0; i < neg->n; i++)
        if (tr_check_text(b, neg->v[i].s, neg->v[i].n, file, line, "a negative", e) < 0) return -1;
    ts->rows++;
    int64_t qi = intern(&b->qmap, &ts->queries, q, qn, &ts->merged_query_rows);
    for (int i = 0; i < pos->n; i++) {
        int64_t pi = intern(&b->pmap, &ts->passages, pos->v[i].s, pos->v[i].n, &ts->dup_passage_texts);
        if (has_label)
            add_label(b, qi, pi, label);
        else
            tr_add_qrel(b, qi, pi, 1, pos->v[i].score);
    }
    for (int i = 0; i < neg->n; i++) {
        int64_t pi = intern(&b->pmap, &ts->passages, neg->v[i].s, neg->v[i].n, &ts->dup_passage_texts);
        add_neg(b, qi, pi, neg->v[i].score);
    }
    return 0;
}


typedef struct {
    int64_t key, pos;
} SortKey;

static int sortkey_cmp(const void *a, const void *b) {
    const SortKey *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Stable sort of n triples by query: permute q, p and the optional 4-byte column (grade / score / label). */
static void sort_by_query(int64_t n, int64_t *q, int64_t *p, void *c1, void *c2) {
    if (n == 0) return; /* q and p may be NULL (no negatives): memcpy of NULL is undefined even for 0 bytes */
    SortKey *k = xr_malloc(sizeof(SortKey) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) k[i] = (SortKey){q[i], i};
    qsort(k, (size_t)n, sizeof *k, sortkey_cmp);
    int64_t *tq = xr_malloc(sizeof(int64_t) * (size_t)(n ? n : 1)), *tp = xr_malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    uint32_t *t1 = xr_malloc(sizeof(uint32_t) * (size_t)(n ? n : 1)), *t2 = xr_malloc(sizeof(uint32_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        tq[i] = q[k[i].pos];
        tp[i] = p[k[i].pos];
        if (c1) t1[i] = ((uint32_t *)c1)[k[i].pos];
        if (c2) t2[i] = ((uint32_t *)c2)[k[i].pos];
    }
    memcpy(q, tq, sizeof(int64_t) * (size_t)n);
    memcpy(p, tp, sizeof(int64_t) * (size_t)n);
    if (c1) memcpy(c1, t1, sizeof(uint32_t) * (size_t)n);
    if (c2) memcpy(c2, t2, sizeof(uint32_t) * (size_t)n);
    free(k), free(tq), free(tp), free(t1), free(t2);
}

void tr_builder_finish(TrBuilder *b) {
    TextSet *ts = b->ts;
    /* a query's positive is never one of its negatives, whichever row named it first */
    int64_t k = 0;
    for (int64_t i = 0; i < ts->nneg; i++) {
        if (!pairset_add(&b->qrel_set, ts->neg_query[i], ts->neg_passage[i], 0)) {
            ts->negatives_dropped_as_positive++;
            continue;
        }
        ts->neg_query[k] = ts->neg_query[i];
        ts->neg_passage[k] = ts->neg_passage[i];
        ts->neg_score[k] = ts->neg_score[i];
        k++;
    }
    ts->nneg = k;
    sort_by_query(ts->nqrels, ts->qrel_query, ts->qrel_passage, ts->qrel_grade, ts->qrel_score);
    sort_by_query(ts->nneg, ts->neg_query, ts->neg_passage, ts->neg_score, NULL);
    sort_by_query(ts->nlab, ts->lab_query, ts->lab_passage, ts->lab_label, NULL);
    if (!b->any_qrel_score) {
        free(ts->qrel_score);
        ts->qrel_score = NULL;
    }
    if (!b->any_neg_score) {
        free(ts->neg_score);
        ts->neg_score = NULL;
    }
}

void tr_builder_free(TrBuilder *b) {
    tr_strmap_free(&b->qmap);
    tr_strmap_free(&b->pmap);
    pairset_free(&b->qrel_set);
    pairset_free(&b->neg_set);
}
