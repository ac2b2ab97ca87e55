/* select.c: per-query hard-negative selection (sentence-transformers mine_hard_negatives or FlagEmbedding
 * hn_mine semantics, see select.h), with per-rule skip counts and a per-query seeded random stream. */
#include "select.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t select_canon_array(int64_t passage, void *ctx) { return ((const int64_t *)ctx)[passage]; }

void select_opts_default(SelectOpts *o) {
    memset(o, 0, sizeof *o);
    o->style = SELECT_STYLE_ST;
    o->num_negatives = 3;
    o->range_min = 0;
    o->range_max = 0;
    o->max_positives = 1;
    o->max_score = o->min_score = o->absolute_margin = o->relative_margin = o->ce_max_score = NAN;
    o->sampling = SELECT_SAMPLE_TOP;
}

void select_opts_flag_default(SelectOpts *o) {
    select_opts_default(o);
    o->style = SELECT_STYLE_FLAG;
    o->num_negatives = 15;
    o->range_min = 10;
    o->range_max = 210;
    o->sampling = SELECT_SAMPLE_RANDOM;
}

int select_resolve(SelectOpts *o, int have_cross_encoder, XrErr *e) {
    const int lim = 100000000;
    if (o->num_negatives < 1 || o->num_negatives > lim)
        return xr_errf(e, "num_negatives must be between 1 and %d, got %d", lim, o->num_negatives);
    if (o->max_positives < 1 || o->max_positives > lim)
        return xr_errf(e, "max_positives must be between 1 and %d, got %d", lim, o->max_positives);
    if (o->range_min < 0 || o->range_min > lim)
        return xr_errf(e, "range_min must be non-negative (and below %d), got %d", lim, o->range_min);
    if (o->range_max < 0 || o->range_max > lim)
        return xr_errf(e, "range_max must be positive (0 = default) and below %d, got %d", lim, o->range_max);
    if (o->style == SELECT_STYLE_ST) {
        if (o->fill_from_corpus) return xr_errf(e, "fill_from_corpus is a FlagEmbedding-style option");
        if (o->range_max == 0) {
            int wide = !isnan(o->absolute_margin) || !isnan(o->relative_margin) || !isnan(o->max_score) ||
                       (have_cross_encoder && !isnan(o->min_score));
            /* room for the positives, and tenfold when filters are expected to reject candidates */
            o->range_max = o->range_min + (wide ? 10 : 1) * o->num_negatives + o->max_positives;
        }
        if (o->range_min >= o->range_max)
            return xr_errf(e, "range_min must be smaller than range_max, got range_min=%d and range_max=%d",
                           o->range_min, o->range_max);
        if (o->num_negatives > o->range_max - o->range_min)
            return xr_errf(e,
                           "cannot mine %d negatives per query: only %d candidates remain after skipping the first "
                           "range_min=%d of range_max=%d; decrease num_negatives or range_min, or increase range_max",
                           o->num_negatives, o->range_max - o->range_min, o->range_min, o->range_max);
    } else {
        if (o->range_max == 0)
            return xr_errf(e, "FlagEmbedding-style mining needs the rank range, e.g. range_min=10 range_max=210");
        if (o->range_min >= o->range_max)
            return xr_errf(e, "range_min must be smaller than range_max, got range_min=%d and range_max=%d",
                           o->range_min, o->range_max);
        if (o->fill_from_corpus < 0) return xr_errf(e, "fill_from_corpus must be >= 0");
    }
    return 0;
}

size_t select_candidate_count(const SelectOpts *o) {
    assert(o->range_max > 0);
    /* ST: room for the positives and for the passage equal to the query, both removed before the window */
    return o->style == SELECT_STYLE_ST ? (size_t)o->range_max + (size_t)o->max_positives + 1 : (size_t)o->range_max;
}

/* ---- per-query random stream (splitmix64) ---- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, n), n >= 1, without modulo bias */
static uint64_t rand_below(uint64_t *s, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = splitmix64(s);
    while (x >= limit);
    return x % n;
}

static int64_t canon_of(SelectCanonFn canon, void *ctx, int64_t p) { return canon ? canon(p, ctx) : p; }

static int in_set(const int64_t *set, size_t n, int64_t v) {
    for (size_t i = 0; i < n; i++)
        if (set[i] == v) return 1;
    return 0;
}

typedef struct {
    int64_t c;
    size_t pos;
} CanonPos;

static int canon_pos_cmp(const void *pa, const void *pb) {
    const CanonPos *a = pa, *b = pb;
    if (a->c != b->c) return a->c < b->c ? -1 : 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

/* is_dup[i] = 1 when candidate i has the same text (canonical id) as a higher-ranked real candidate: the
 * reference implementations search a text-deduplicated corpus, where such a copy does not exist. */
static unsigned char *mark_duplicates(const SelectQuery *q, size_t n, int flag, SelectCanonFn canon, void *ctx) {
    CanonPos *cp = xr_malloc((n + 1) * sizeof *cp);
    unsigned char *is_dup = xr_calloc(n + 1, 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (q->cand_index[i] < 0) {
            if (flag) break;
            continue;
        }
        if (isnan(q->cand_score[i]) || q->cand_score[i] == -INFINITY) continue;
        cp[m++] = (CanonPos){canon(q->cand_index[i], ctx), i};
    }
    qsort(cp, m, sizeof *cp, canon_pos_cmp);
    for (size_t j = 1; j < m; j++)
        if (cp[j].c == cp[j - 1].c) is_dup[cp[j].pos] = 1;
    free(cp);
    return is_dup;
}

/* stable merge sort of candidate positions by score descending (ties keep the rank order) */
static void sort_by_score(const float *score, size_t *pos, size_t *tmp, size_t n) {
    int sorted = 1;
    for (size_t i = 1; i < n && sorted; i++)
        if (score[pos[i]] > score[pos[i - 1]]) sorted = 0;
    if (sorted) return;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi) tmp[k++] = score[pos[b]] > score[pos[a]] ? pos[b++] : pos[a++];
            while (a < mid) tmp[k++] = pos[a++];
            while (b < hi) tmp[k++] = pos[b++];
        }
        memcpy(pos, tmp, n * sizeof *pos);
    }
}

int select_query(const SelectOpts *o, const SelectQuery *q, SelectCanonFn canon, void *canon_ctx,
                 int64_t *neg_index, float *neg_score, SelectStats *stats) {
    assert(o->num_negatives >= 1 && o->range_max > o->range_min);
    SelectStats st;
    memset(&st, 0, sizeof st);
    st.queries = 1;
    const int flag = o->style == SELECT_STYLE_FLAG;
    /* ST with include_positives: a positive stays a candidate even when the caller excludes it as query text */
    const int keep_pos_excl = !flag && o->include_positives;
    size_t n = q->n_cand < select_candidate_count(o) ? q->n_cand : select_candidate_count(o);
    size_t N = (size_t)o->num_negatives;

    int64_t *pc = xr_malloc((q->n_pos + q->n_exclude + 1) * sizeof *pc);
    int64_t *xc = pc + q->n_pos;
    for (size_t i = 0; i < q->n_pos; i++) pc[i] = canon_of(canon, canon_ctx, q->pos_index[i]);
    for (size_t i = 0; i < q->n_exclude; i++) xc[i] = canon_of(canon, canon_ctx, q->exclude[i]);

    /* float32 thresholds, computed as torch does on float32 tensors with Python scalars */
    int have_pos = q->n_pos > 0;
    float pmin = INFINITY;
    for (size_t i = 0; i < q->n_pos; i++)
        if (q->pos_score[i] < pmin) pmin = q->pos_score[i];
    const float abs_m = (float)o->absolute_margin;
    float rel_thr = 0;
    if (!isnan(o->relative_margin) && have_pos) {
        /* volatile: the product is rounded to float before the subtraction, as in torch (no fused multiply-add) */
        volatile float prod = fabsf(pmin) * (float)o->relative_margin;
        rel_thr = pmin - prod;
    }
    const float max_s = (float)o->max_score, min_s = (float)o->min_score, ce_max = (float)o->ce_max_score;

    size_t *surv = xr_malloc(2 * (n + 1) * sizeof *surv), *tmp = surv + n + 1;
    size_t S = 0;
    unsigned char *is_dup = canon ? mark_duplicates(q, n, flag, canon, canon_ctx) : NULL;
    for (size_t i = 0; i < n; i++) {
        int64_t idx = q->cand_index[i];
        float s = q->cand_score[i];
        /* an empty slot; FlagEmbedding stops at the first one. A -inf or NaN score is what torch's masking
         * produces for a removed candidate: treat it as empty as well. */
        if (idx < 0) {
            if (flag) break;
            continue;
        }
        if (isnan(s) || s == -INFINITY) continue;
        st.candidates++;
        if (flag && i < (size_t)o->range_min) {
            st.range_min++;
            continue;
        }
        int64_t c = canon_of(canon, canon_ctx, idx);
        if (!o->include_positives && in_set(pc, q->n_pos, c)) {
            st.positive++;
            continue;
        }
        if (in_set(xc, q->n_exclude, c) && !(keep_pos_excl && in_set(pc, q->n_pos, c))) {
            st.excluded++;
            continue;
        }
        if (is_dup && is_dup[i]) {
            st.duplicate++;
            continue;
        }
        if (have_pos && !isnan(o->absolute_margin)) {
            float t = s + abs_m;
            if (t > pmin) {
                st.absolute_margin++;
                continue;
            }
        }
        if (have_pos && !isnan(o->relative_margin) && s > rel_thr) {
            st.relative_margin++;
            continue;
        }
        if (!isnan(o->max_score) && s > max_s) {
            st.max_score++;
            continue;
        }
        if (!isnan(o->min_score) && s < min_s) {
            st.min_score++;
            continue;
        }
        if (!isnan(o->ce_max_score) && q->cand_ce_score && q->cand_ce_score[i] > ce_max) {
            st.ce_max_score++;
            continue;
        }
        surv[S++] = i;
    }
    sort_by_score(q->cand_score, surv, tmp, S);

    /* the window of survivors to pick from */
    size_t w0 = 0, w1 = S;
    if (!flag) {
        w0 = (size_t)o->range_min < S ? (size_t)o->range_min : S;
        w1 = (size_t)o->range_max < S ? (size_t)o->range_max : S;
        if (w1 < w0) w1 = w0;
        st.range_min += (int64_t)w0;
        st.range_max += (int64_t)(S - w1);
    }
    size_t V = w1 - w0;
    size_t *win = surv + w0;

    uint64_t rs = o->seed ^ 0x5DEECE66Dull;
    uint64_t mix = q->key;
    rs ^= splitmix64(&mix);
    size_t got = 0;
    if (o->sampling == SELECT_SAMPLE_RANDOM && V > N) {
        /* partial Fisher-Yates over window positions, then back into window (score) order */
        for (size_t i = 0; i < N; i++) {
            size_t j = i + (size_t)rand_below(&rs, V - i);
            size_t t = win[i];
            win[i] = win[j];
            win[j] = t;
        }
        /* back to window order: by candidate rank, then stably by score */
        for (size_t i = 1; i < N; i++)
            for (size_t j = i; j > 0 && win[j] < win[j - 1]; j--) {
                size_t t = win[j];
                win[j] = win[j - 1];
                win[j - 1] = t;
            }
        sort_by_score(q->cand_score, win, tmp, N);
        got = N;
    } else {
        got = V < N ? V : N;
    }
    for (size_t i = 0; i < got; i++) {
        neg_index[i] = q->cand_index[win[i]];
        neg_score[i] = q->cand_score[win[i]];
    }
    st.not_sampled += (int64_t)(V - got);

    if (flag && got < N && o->fill_from_corpus > 0) {
        /* FlagEmbedding pads from the whole corpus; skip positives, exclusions and passages already picked */
        size_t attempts = 100 * N + 1000;
        while (got < N && attempts--) {
            int64_t r = (int64_t)rand_below(&rs, (uint64_t)o->fill_from_corpus);
            int64_t c = canon_of(canon, canon_ctx, r);
            if (in_set(pc, q->n_pos, c) || in_set(xc, q->n_exclude, c)) continue;
            int dup = 0;
            for (size_t i = 0; i < got && !dup; i++) dup = canon_of(canon, canon_ctx, neg_index[i]) == c;
            if (dup) continue;
            neg_index[got] = r;
            neg_score[got] = NAN;
            got++;
            st.filled++;
        }
    }
    st.negatives = (int64_t)got;
    st.short_queries = got < N;
    if (stats) select_stats_add(stats, &st);
    free(is_dup);
    free(surv);
    free(pc);
    return (int)got;
}

_Static_assert(sizeof(SelectStats) == 16 * sizeof(int64_t), "SelectStats must stay an array of int64");

void select_stats_add(SelectStats *dst, const SelectStats *src) {
    int64_t *d = (int64_t *)dst;
    const int64_t *s = (const int64_t *)src;
    for (size_t i = 0; i < SELECT_STATS_FIELDS; i++) d[i] += s[i];
}
