/* test_select.c: mining/select. Each filter on hand-built scores (including the float32 boundary cases torch
 * decides), range_min counted after positives are removed, duplicates of positives, the range_max default rule,
 * the candidate count (range_max + max_positives + 1) for queries with few survivors, the query-text exclusion,
 * seeded sampling, FlagEmbedding style; then the output of sentence-transformers' real mine_hard_negatives (v6)
 * on 17 parameter sets (tests/fixtures/select, written by gen_select_fixtures.py), negatives and skip counts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "select.h"
#include "testutil.h"

/* run one query; returns count, fills idx */
static int run(const SelectOpts *o, const int64_t *ci, const float *cs, size_t nc, const int64_t *pi, const float *ps,
               size_t np, int64_t *out, SelectStats *st) {
    SelectQuery q = {0};
    q.key = 1;
    q.cand_index = ci, q.cand_score = cs, q.n_cand = nc;
    q.pos_index = pi, q.pos_score = ps, q.n_pos = np;
    float os[64];
    return select_query(o, &q, NULL, NULL, out, os, st);
}

static int same(const int64_t *got, int n, const int64_t *want, int nw) {
    if (n != nw) return 0;
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) return 0;
    return 1;
}

static void show(const char *what, const int64_t *got, int n) {
    fprintf(stderr, "  %s got %d:", what, n);
    for (int i = 0; i < n; i++) fprintf(stderr, " %lld", (long long)got[i]);
    fprintf(stderr, "\n");
}

#define EXPECT(what, got, n, ...)                                            \
    do {                                                                     \
        const int64_t want_[] = {__VA_ARGS__};                               \
        int nw_ = (int)(sizeof want_ / sizeof *want_);                       \
        if (want_[0] == -99) nw_ = 0;                                        \
        int ok_ = same(got, n, want_, nw_);                                  \
        TU_CHECK(ok_, "%s", what);                                           \
        if (!ok_) show(what, got, n);                                        \
    } while (0)

static SelectOpts st_opts(int nneg, int rmin, int rmax) {
    SelectOpts o;
    select_opts_default(&o);
    o.num_negatives = nneg, o.range_min = rmin, o.range_max = rmax;
    XrErr e;
    if (select_resolve(&o, 0, &e)) fprintf(stderr, "resolve: %s\n", e.msg);
    return o;
}

static void test_filters(void) {
    int64_t out[64];
    int n;
    /* candidates 10..17 in rank order; 12 is the positive */
    const int64_t ci[] = {10, 11, 12, 13, 14, 15, 16, 17};
    const float cs[] = {0.9f, 0.8f, 0.75f, 0.7f, 0.6f, 0.5f, 0.4f, 0.3f};
    const int64_t pi[] = {12};
    const float ps[] = {0.75f};
    SelectOpts o = st_opts(3, 0, 8);
    SelectStats st = {0};
    n = run(&o, ci, cs, 8, pi, ps, 1, out, &st);
    EXPECT("top 3, positive removed", out, n, 10, 11, 13);
    TU_CHECK(st.positive == 1 && st.candidates == 8 && st.negatives == 3 && st.short_queries == 0, "stats");

    /* range_min counts survivors: the positive at rank 2 does not use up a slot */
    o = st_opts(2, 2, 8);
    n = run(&o, ci, cs, 8, pi, ps, 1, out, NULL);
    EXPECT("range_min=2 after removing the positive", out, n, 13, 14);
    const int64_t pi0[] = {10};
    const float ps0[] = {0.9f};
    n = run(&o, ci, cs, 8, pi0, ps0, 1, out, NULL);
    EXPECT("positive at rank 0, range_min=2", out, n, 13, 14);

    /* range_max counts survivors too: window [1, 4) of survivors 10 11 13 14 15 16 17 */
    o = st_opts(3, 1, 4);
    memset(&st, 0, sizeof st);
    n = run(&o, ci, cs, 8, pi, ps, 1, out, &st);
    EXPECT("window [1,4)", out, n, 11, 13, 14);
    /* candidates considered: range_max + max_positives + 1 = 6 -> 10 .. 15, survivors 5, one past the window */
    TU_CHECK(st.range_min == 1 && st.range_max == 1 && st.candidates == 6, "range stats %lld %lld %lld",
             (long long)st.range_min, (long long)st.range_max, (long long)st.candidates);

    /* few survivors (issue 16): the margin (threshold 0.665) drops 10, 11 and 13, 12 is the positive;
     * range_max = 4 looks at 4 + 1 + 1 = 6 candidates (10 .. 15), so 15 fills the second slot, 16 is never seen */
    o = st_opts(3, 0, 4);
    o.relative_margin = 0.05;
    const float ps7[] = {0.7f};
    memset(&st, 0, sizeof st);
    n = run(&o, ci, cs, 8, pi, ps7, 1, out, &st);
    EXPECT("few survivors: candidate range_max + max_positives + 1 counts", out, n, 14, 15);
    TU_CHECK(st.candidates == 6 && st.relative_margin == 3 && st.positive == 1 && st.short_queries == 1,
             "few survivors stats: %lld candidates, %lld margin, %lld positive, %lld short",
             (long long)st.candidates, (long long)st.relative_margin, (long long)st.positive,
             (long long)st.short_queries);

    /* the passage equal to the query (excluded by the caller) uses up the extra slot */
    {
        o = st_opts(3, 0, 4);
        SelectQuery q = {0};
        const int64_t self[] = {10};
        float os[8];
        q.key = 1, q.cand_index = ci, q.cand_score = cs, q.n_cand = 8;
        q.pos_index = pi, q.pos_score = ps, q.n_pos = 1, q.exclude = self, q.n_exclude = 1;
        memset(&st, 0, sizeof st);
        n = select_query(&o, &q, NULL, NULL, out, os, &st);
        EXPECT("query text excluded", out, n, 11, 13, 14);
        TU_CHECK(st.excluded == 1 && st.candidates == 6, "exclusion stats %lld %lld", (long long)st.excluded,
                 (long long)st.candidates);
        /* include_positives keeps a positive even when it is the query's own text */
        o.include_positives = 1;
        const int64_t self12[] = {12};
        q.exclude = self12;
        n = select_query(&o, &q, NULL, NULL, out, os, NULL);
        EXPECT("include_positives keeps the query-text positive", out, n, 10, 11, 12);
        o.include_positives = 0;
        n = select_query(&o, &q, NULL, NULL, out, os, NULL);
        EXPECT("query-text positive removed without include_positives", out, n, 10, 11, 13);
    }

    /* absolute margin against the positive 0.75: drop s + 0.1 > 0.75 */
    o = st_opts(3, 0, 8);
    o.absolute_margin = 0.1;
    memset(&st, 0, sizeof st);
    n = run(&o, ci, cs, 8, pi, ps, 1, out, &st);
    EXPECT("absolute margin 0.1", out, n, 14, 15, 16);
    TU_CHECK(st.absolute_margin == 3 && st.positive == 1, "abs stats %lld", (long long)st.absolute_margin);
    /* margin 0: a negative scoring above the positive goes */
    o.absolute_margin = 0;
    n = run(&o, ci, cs, 8, pi, ps, 1, out, NULL);
    EXPECT("absolute margin 0", out, n, 13, 14, 15);

    /* float32 boundary, as torch: 0.4f + 0.1f rounds to 0.5f, which is not > 0.5f (in double it would be) */
    const int64_t bi[] = {1, 2, 3};
    const float bs[] = {0.4f, 0.3f, 0.2f};
    const int64_t bp[] = {9};
    const float bps[] = {0.5f};
    o = st_opts(3, 0, 4);
    o.absolute_margin = 0.1;
    n = run(&o, bi, bs, 3, bp, bps, 1, out, NULL);
    EXPECT("absolute margin float32 boundary keeps 0.4", out, n, 1, 2, 3);

    /* relative margin: threshold 0.75 - 0.75 * 0.1 = 0.675 -> drop 0.9 0.8 0.7 */
    o = st_opts(3, 0, 8);
    o.relative_margin = 0.1;
    memset(&st, 0, sizeof st);
    n = run(&o, ci, cs, 8, pi, ps, 1, out, &st);
    EXPECT("relative margin 0.1", out, n, 14, 15, 16);
    TU_CHECK(st.relative_margin == 3, "rel stats %lld", (long long)st.relative_margin);
    /* a negative positive score: threshold = pos - |pos| * m lies BELOW pos (-0.2 -> -0.3) */
    const int64_t ni[] = {1, 2, 3, 4};
    const float ns[] = {-0.1f, -0.25f, -0.3f, -0.35f};
    const int64_t np_[] = {9};
    const float nps[] = {-0.2f};
    o = st_opts(3, 0, 6);
    o.relative_margin = 0.5;
    n = run(&o, ni, ns, 4, np_, nps, 1, out, NULL);
    EXPECT("relative margin with a negative positive score", out, n, 3, 4);

    /* max_score / min_score, compared in float32: 0.7f is not < (float)0.7 although it is < 0.7 in double */
    o = st_opts(3, 0, 8);
    o.max_score = 0.7;
    o.min_score = 0.5;
    memset(&st, 0, sizeof st);
    n = run(&o, ci, cs, 8, pi, ps, 1, out, &st);
    EXPECT("max 0.7 keeps 0.7f, min 0.5 keeps 0.5f", out, n, 13, 14, 15);
    TU_CHECK(st.max_score == 2 && st.min_score == 2, "score stats %lld %lld", (long long)st.max_score,
             (long long)st.min_score);
    o.max_score = NAN;
    o.min_score = 0.7;
    n = run(&o, ci, cs, 8, pi, ps, 1, out, NULL);
    EXPECT("min 0.7 keeps 0.7f", out, n, 10, 11, 13);
    const float tenth[] = {0.1f};
    const int64_t one[] = {5};
    o = st_opts(1, 0, 3);
    o.max_score = 0.1;
    n = run(&o, one, tenth, 1, bp, bps, 1, out, NULL);
    EXPECT("max 0.1 keeps 0.1f", out, n, 5);

    /* the filters are applied in sentence-transformers' order, each counting what is still there */
    o = st_opts(2, 0, 8);
    o.absolute_margin = 0.0;
    o.relative_margin = 0.0;
    o.max_score = 0.65;
    memset(&st, 0, sizeof st);
    n = run(&o, ci, cs, 8, pi, ps, 1, out, &st);
    EXPECT("abs then rel then max", out, n, 14, 15);
    TU_CHECK(st.absolute_margin == 2 && st.relative_margin == 0 && st.max_score == 1, "order stats %lld %lld %lld",
             (long long)st.absolute_margin, (long long)st.relative_margin, (long long)st.max_score);

    /* several positives: margins use the LOWEST positive score (0.5 here) */
    const int64_t pi2[] = {12, 15};
    const float ps2[] = {0.75f, 0.5f};
    o = st_opts(3, 0, 8);
    o.absolute_margin = 0.05;
    n = run(&o, ci, cs, 8, pi2, ps2, 2, out, NULL);
    EXPECT("two positives, margin against the lower", out, n, 16, 17);
    memset(&st, 0, sizeof st);
    n = run(&o, ci, cs, 8, pi2, ps2, 2, out, &st);
    TU_CHECK(st.short_queries == 1 && st.negatives == 2, "short query counted");

    /* empty slots (-1) and -inf scores (torch's removed candidates) are not candidates */
    const int64_t ei[] = {3, -1, 4, 5, -1};
    const float es[] = {0.5f, -INFINITY, -INFINITY, 0.2f, -INFINITY};
    o = st_opts(3, 0, 4);
    memset(&st, 0, sizeof st);
    n = run(&o, ei, es, 5, bp, bps, 1, out, &st);
    EXPECT("empty slots", out, n, 3, 5);
    TU_CHECK(st.candidates == 2, "candidates %lld", (long long)st.candidates);

    /* include_positives keeps the positive in the ranking */
    o = st_opts(3, 0, 8);
    o.include_positives = 1;
    n = run(&o, ci, cs, 8, pi, ps, 1, out, NULL);
    EXPECT("include_positives", out, n, 10, 11, 12);

    /* rescored candidates (e.g. by a cross-encoder) are re-ranked by score, ties keeping retrieval order */
    const float rs[] = {0.1f, 0.9f, 0.75f, 0.5f, 0.9f, 0.2f, 0.95f, 0.0f};
    o = st_opts(4, 0, 8);
    n = run(&o, ci, rs, 8, pi, ps, 1, out, NULL);
    EXPECT("re-ranked by the new scores", out, n, 16, 11, 14, 13);
    o = st_opts(2, 1, 8);
    n = run(&o, ci, rs, 8, pi, ps, 1, out, NULL);
    EXPECT("range_min on the re-ranked list", out, n, 11, 14);

    /* ce_max_score drops on the separate cross-encoder score and keeps the retriever order */
    const float ce[] = {5.0f, -1.0f, 0.0f, 3.0f, -2.0f, 0.5f, 0.9f, -4.0f};
    SelectQuery q = {0};
    q.key = 1, q.cand_index = ci, q.cand_score = cs, q.cand_ce_score = ce, q.n_cand = 8;
    q.pos_index = pi, q.pos_score = ps, q.n_pos = 1;
    o = st_opts(3, 0, 8);
    o.ce_max_score = 1.0;
    float osc[8];
    memset(&st, 0, sizeof st);
    n = select_query(&o, &q, NULL, NULL, out, osc, &st);
    EXPECT("ce_max_score 1.0", out, n, 11, 14, 15);
    TU_CHECK(st.ce_max_score == 2 && osc[0] == 0.8f && osc[2] == 0.5f, "ce stats/scores");

    /* duplicates of a positive (canonical map) and an explicit exclusion */
    int64_t canon[20];
    for (int i = 0; i < 20; i++) canon[i] = i;
    canon[16] = 12; /* passage 16 is the same text as positive 12 */
    canon[10] = 3;  /* passage 10 is the same text as passage 3 (not a positive) */
    const int64_t excl[] = {11};
    q.cand_ce_score = NULL, q.exclude = excl, q.n_exclude = 1;
    o = st_opts(5, 0, 8);
    memset(&st, 0, sizeof st);
    n = select_query(&o, &q, select_canon_array, canon, out, osc, &st);
    EXPECT("duplicate of positive and exclusion removed", out, n, 10, 13, 14, 15, 17);
    TU_CHECK(st.positive == 2 && st.excluded == 1, "dup stats %lld %lld", (long long)st.positive,
             (long long)st.excluded);
    /* an exclusion given as a duplicate id also matches */
    const int64_t excl3[] = {3};
    q.exclude = excl3;
    n = select_query(&o, &q, select_canon_array, canon, out, osc, NULL);
    EXPECT("exclusion through the canonical map", out, n, 11, 13, 14, 15, 17);
    /* a copy of a higher-ranked candidate is dropped, the first copy stays */
    canon[14] = 11;
    q.exclude = NULL, q.n_exclude = 0;
    memset(&st, 0, sizeof st);
    n = select_query(&o, &q, select_canon_array, canon, out, osc, &st);
    EXPECT("duplicate candidate dropped", out, n, 10, 11, 13, 15, 17);
    TU_CHECK(st.duplicate == 1 && st.positive == 2, "duplicate stats %lld", (long long)st.duplicate);
}

static void test_resolve(void) {
    SelectOpts o;
    XrErr e;
    select_opts_default(&o);
    o.max_positives = 2;
    TU_CHECK(select_resolve(&o, 0, &e) == 0 && o.range_max == 0 + 3 + 2, "default rule: %d", o.range_max);
    TU_CHECK(select_candidate_count(&o) == 8, "candidates %zu (range_max + max_positives + 1)",
             select_candidate_count(&o));
    select_opts_default(&o);
    o.max_positives = 2, o.range_min = 4, o.num_negatives = 5, o.relative_margin = 0.05;
    TU_CHECK(select_resolve(&o, 0, &e) == 0 && o.range_max == 4 + 50 + 2, "margin rule: %d", o.range_max);
    select_opts_default(&o);
    o.max_score = 0.9;
    TU_CHECK(select_resolve(&o, 0, &e) == 0 && o.range_max == 31, "max_score rule: %d", o.range_max);
    select_opts_default(&o);
    o.min_score = 0.1;
    TU_CHECK(select_resolve(&o, 0, &e) == 0 && o.range_max == 4, "min_score alone: %d", o.range_max);
    select_opts_default(&o);
    o.min_score = 0.1;
    TU_CHECK(select_resolve(&o, 1, &e) == 0 && o.range_max == 31, "min_score + cross-encoder: %d", o.range_max);
    select_opts_default(&o);
    o.range_max = 12;
    o.absolute_margin = 0.1;
    TU_CHECK(select_resolve(&o, 0, &e) == 0 && o.range_max == 12, "explicit range_max kept");
    /* errors, as sentence-transformers raises them */
    select_opts_default(&o);
    o.num_negatives = 5, o.range_min = 3, o.range_max = 6;
    TU_CHECK(select_resolve(&o, 0, &e) == -1 && strstr(e.msg, "only 3 candidates remain"), "window: %s", e.msg);
    select_opts_default(&o);
    o.range_min = 6, o.range_max = 6;
    TU_CHECK(select_resolve(&o, 0, &e) == -1 && strstr(e.msg, "smaller than range_max"), "%s", e.msg);
    select_opts_default(&o);
    o.num_negatives = 0;
    TU_CHECK(select_resolve(&o, 0, &e) == -1, "num_negatives 0");
    select_opts_default(&o);
    o.range_min = -1;
    TU_CHECK(select_resolve(&o, 0, &e) == -1, "range_min -1");
    select_opts_default(&o);
    o.fill_from_corpus = 10;
    TU_CHECK(select_resolve(&o, 0, &e) == -1, "fill with ST style");
    select_opts_flag_default(&o);
    TU_CHECK(select_resolve(&o, 0, &e) == 0 && o.range_min == 10 && o.range_max == 210 && o.num_negatives == 15 &&
                 select_candidate_count(&o) == 210,
             "FlagEmbedding defaults");
    o.range_max = 0;
    TU_CHECK(select_resolve(&o, 0, &e) == -1, "FLAG needs a range");
}

static void test_random(void) {
    enum { NC = 40 };
    int64_t ci[NC];
    float cs[NC];
    for (int i = 0; i < NC; i++) ci[i] = 100 + i, cs[i] = 1.0f - 0.01f * (float)i;
    const int64_t pi[] = {5};
    const float ps[] = {2.0f};
    SelectOpts o = st_opts(5, 3, 33);
    o.sampling = SELECT_SAMPLE_RANDOM;
    o.seed = 1234;
    SelectQuery q = {0};
    q.cand_index = ci, q.cand_score = cs, q.n_cand = NC, q.pos_index = pi, q.pos_score = ps, q.n_pos = 1;
    int64_t a[8], b[8];
    float sa[8], sb[8];
    /* window = ranks 3..32 (30 candidates); 5 drawn, in window order; frequencies near uniform */
    int hits[NC] = {0};
    int in_window = 1, ordered = 1, reproducible = 1, differ_by_key = 0;
    const int trials = 3000;
    for (int t = 0; t < trials; t++) {
        q.key = (uint64_t)t;
        int n = select_query(&o, &q, NULL, NULL, a, sa, NULL);
        int m = select_query(&o, &q, NULL, NULL, b, sb, NULL);
        if (n != 5 || m != 5 || memcmp(a, b, sizeof a[0] * 5)) reproducible = 0;
        for (int i = 0; i < n; i++) {
            if (a[i] < 103 || a[i] > 132) in_window = 0;
            if (i && sa[i] >= sa[i - 1]) ordered = 0;
            hits[a[i] - 100]++;
        }
        if (t) {
            q.key = (uint64_t)t - 1;
            select_query(&o, &q, NULL, NULL, b, sb, NULL);
            if (memcmp(a, b, sizeof a[0] * 5)) differ_by_key++;
        }
    }
    TU_CHECK(reproducible, "same seed and key must give the same picks");
    TU_CHECK(in_window, "a pick outside the window [3, 33)");
    TU_CHECK(ordered, "picks must come in score order");
    TU_CHECK(differ_by_key > trials * 9 / 10, "keys should decorrelate: %d", differ_by_key);
    double expect = trials * 5.0 / 30, chi2 = 0;
    for (int i = 3; i < 33; i++) chi2 += (hits[i] - expect) * (hits[i] - expect) / expect;
    /* 29 degrees of freedom: chi2 > 70 has probability < 1e-4 */
    TU_CHECK(chi2 < 70, "pick frequencies not uniform: chi2 %.1f", chi2);
    /* another seed gives other picks */
    q.key = 7;
    select_query(&o, &q, NULL, NULL, a, sa, NULL);
    o.seed = 99;
    select_query(&o, &q, NULL, NULL, b, sb, NULL);
    TU_CHECK(memcmp(a, b, sizeof a[0] * 5), "seed has no effect");
    /* fewer valid than asked: all of them, in order */
    o = st_opts(5, 0, 8);
    o.sampling = SELECT_SAMPLE_RANDOM;
    o.min_score = 0.975;
    int n = select_query(&o, &q, NULL, NULL, a, sa, NULL);
    EXPECT("random with fewer valid than asked", a, n, 100, 101, 102);
    printf("random sampling: %d trials, chi2 %.1f over 30 window slots (29 dof)\n", trials, chi2);
}

static void test_flag(void) {
    /* ranks 0..11: passages 20..31; positives 23 and 27; query text equals passage 29 */
    int64_t ci[12];
    float cs[12];
    for (int i = 0; i < 12; i++) ci[i] = 20 + i, cs[i] = 0.9f - 0.05f * (float)i;
    const int64_t pi[] = {23, 27};
    const float ps[] = {0.8f, 0.5f};
    const int64_t ex[] = {29};
    SelectOpts o;
    select_opts_flag_default(&o);
    o.range_min = 2, o.range_max = 10, o.num_negatives = 4, o.sampling = SELECT_SAMPLE_TOP, o.max_positives = 2;
    XrErr e;
    TU_CHECK(select_resolve(&o, 0, &e) == 0, "%s", e.msg);
    SelectQuery q = {0};
    q.key = 3, q.cand_index = ci, q.cand_score = cs, q.n_cand = 12;
    q.pos_index = pi, q.pos_score = ps, q.n_pos = 2, q.exclude = ex, q.n_exclude = 1;
    int64_t out[16];
    float os[16];
    SelectStats st = {0};
    /* raw window ranks 2..9 = 22..29, minus 23, 27, 29 -> 22 24 25 26 28 (ranges BEFORE removing positives) */
    int n = select_query(&o, &q, NULL, NULL, out, os, &st);
    EXPECT("FLAG window on raw ranks", out, n, 22, 24, 25, 26);
    TU_CHECK(st.range_min == 2 && st.positive == 2 && st.excluded == 1 && st.not_sampled == 1, "flag stats");
    o.sampling = SELECT_SAMPLE_RANDOM;
    o.num_negatives = 3;
    int sub = 1;
    for (uint64_t k = 0; k < 50; k++) {
        q.key = k;
        n = select_query(&o, &q, NULL, NULL, out, os, NULL);
        for (int i = 0; i < n; i++)
            sub &= out[i] == 22 || out[i] == 24 || out[i] == 25 || out[i] == 26 || out[i] == 28;
        sub &= n == 3;
    }
    TU_CHECK(sub, "FLAG random picks must come from the filtered window");
    /* an empty slot ends the list (hn_mine breaks at -1) */
    ci[6] = -1;
    o.sampling = SELECT_SAMPLE_TOP, o.num_negatives = 6;
    n = select_query(&o, &q, NULL, NULL, out, os, NULL);
    EXPECT("FLAG stops at -1", out, n, 22, 24, 25);
    /* fill from the corpus: never a positive, an exclusion or a repeat; score NaN */
    o.fill_from_corpus = 40;
    memset(&st, 0, sizeof st);
    n = select_query(&o, &q, NULL, NULL, out, os, &st);
    int ok = n == 6 && out[0] == 22 && out[1] == 24 && out[2] == 25 && st.filled == 3 && st.short_queries == 0;
    for (int i = 3; i < n; i++) {
        ok &= out[i] >= 0 && out[i] < 40 && out[i] != 23 && out[i] != 27 && out[i] != 29 && isnan(os[i]);
        for (int j = 0; j < i; j++) ok &= out[i] != out[j];
    }
    TU_CHECK(ok, "fill from corpus");
    ci[6] = 26;
}

/* ---- the sentence-transformers fixture ---- */

typedef struct {
    int n_pos;
    int64_t pos[8];
    float pos_s[8];
    int64_t self; /* the passage whose text equals the query, -1 = none: excluded, as the caller does */
    int n_cand;
    int64_t *cand;
    float *cand_s;
} FxQuery;

static int read_tok(FILE *f, char *buf, size_t n) {
    int c;
    do c = fgetc(f);
    while (c == ' ' || c == '\n' || c == '\t');
    if (c == EOF) return 0;
    size_t k = 0;
    while (c != EOF && c != ' ' && c != '\n' && c != '\t') {
        if (k + 1 < n) buf[k++] = (char)c;
        c = fgetc(f);
    }
    buf[k] = 0;
    return 1;
}

static long tok_long(FILE *f) {
    char b[64];
    if (!read_tok(f, b, sizeof b)) return -1;
    return strtol(b, NULL, 10);
}

static double tok_num(FILE *f) {
    char b[64];
    if (!read_tok(f, b, sizeof b)) return NAN;
    return strtod(b, NULL); /* exact for the hex floats the script writes; "nan" -> NAN */
}

static void expect_tok(FILE *f, const char *want) {
    char b[64];
    if (!read_tok(f, b, sizeof b) || strcmp(b, want)) {
        fprintf(stderr, "fixture: expected '%s', got '%s'\n", want, b);
        exit(1);
    }
}

static void test_fixture(void) {
    FILE *f = fopen(tu_path("fixtures/select/cands.txt"), "r");
    if (!f) {
        fprintf(stderr, "missing fixture fixtures/select/cands.txt\n");
        exit(1);
    }
    expect_tok(f, "queries");
    int nq = (int)tok_long(f);
    expect_tok(f, "corpus");
    int nc = (int)tok_long(f);
    expect_tok(f, "max_positives");
    int maxpos = (int)tok_long(f);
    FxQuery *qs = calloc((size_t)nq, sizeof *qs);
    for (int q = 0; q < nq; q++) {
        expect_tok(f, "pos");
        tok_long(f);
        qs[q].n_pos = (int)tok_long(f);
        for (int i = 0; i < qs[q].n_pos; i++) qs[q].pos[i] = tok_long(f), qs[q].pos_s[i] = (float)tok_num(f);
        expect_tok(f, "self");
        tok_long(f);
        qs[q].self = tok_long(f);
        expect_tok(f, "cand");
        tok_long(f);
        qs[q].n_cand = (int)tok_long(f);
        qs[q].cand = malloc((size_t)qs[q].n_cand * sizeof(int64_t));
        qs[q].cand_s = malloc((size_t)qs[q].n_cand * sizeof(float));
        for (int i = 0; i < qs[q].n_cand; i++) qs[q].cand[i] = tok_long(f), qs[q].cand_s[i] = (float)tok_num(f);
    }
    fclose(f);

    f = fopen(tu_path("fixtures/select/expected.txt"), "r");
    if (!f) {
        fprintf(stderr, "missing fixture fixtures/select/expected.txt\n");
        exit(1);
    }
    char tok[64];
    int configs = 0, slots = 0, random_checked = 0;
    long short_queries = 0, excluded = 0;
    while (read_tok(f, tok, sizeof tok)) {
        if (strcmp(tok, "config")) {
            fprintf(stderr, "fixture: unexpected '%s'\n", tok);
            exit(1);
        }
        char name[64];
        read_tok(f, name, sizeof name);
        SelectOpts o;
        select_opts_default(&o);
        o.max_positives = maxpos;
        expect_tok(f, "negatives");
        o.num_negatives = (int)tok_long(f);
        expect_tok(f, "range_min");
        o.range_min = (int)tok_long(f);
        expect_tok(f, "range_max");
        o.range_max = (int)tok_long(f);
        expect_tok(f, "resolved_range_max");
        int want_rmax = (int)tok_long(f);
        expect_tok(f, "absolute_margin");
        o.absolute_margin = tok_num(f);
        expect_tok(f, "relative_margin");
        o.relative_margin = tok_num(f);
        expect_tok(f, "max_score");
        o.max_score = tok_num(f);
        expect_tok(f, "min_score");
        o.min_score = tok_num(f);
        expect_tok(f, "sampling");
        char samp[16];
        read_tok(f, samp, sizeof samp);
        o.sampling = strcmp(samp, "random") ? SELECT_SAMPLE_TOP : SELECT_SAMPLE_RANDOM;
        expect_tok(f, "include_positives");
        o.include_positives = (int)tok_long(f);
        expect_tok(f, "skipped");
        long want_skip[4];
        const char *keys[] = {"absolute_margin", "relative_margin", "max_score", "min_score"};
        for (int i = 0; i < 4; i++) expect_tok(f, keys[i]), want_skip[i] = tok_long(f);

        XrErr e;
        TU_CHECK(select_resolve(&o, 0, &e) == 0, "%s: %s", name, e.msg);
        TU_CHECK(o.range_max == want_rmax, "%s: range_max %d, sentence-transformers %d", name, o.range_max,
                 want_rmax);
        /* the whole window, to check random picks against */
        SelectOpts ow = o;
        ow.sampling = SELECT_SAMPLE_TOP;
        ow.num_negatives = o.range_max - o.range_min;
        SelectStats st = {0};
        int bad_queries = 0;
        for (int q = 0; q < nq; q++) {
            expect_tok(f, "neg");
            tok_long(f);
            int nw = (int)tok_long(f);
            int64_t want[64];
            for (int i = 0; i < nw; i++) want[i] = tok_long(f);
            SelectQuery sq = {0};
            sq.key = (uint64_t)q;
            sq.cand_index = qs[q].cand, sq.cand_score = qs[q].cand_s, sq.n_cand = (size_t)qs[q].n_cand;
            sq.pos_index = qs[q].pos, sq.pos_score = qs[q].pos_s, sq.n_pos = (size_t)qs[q].n_pos;
            if (qs[q].self >= 0) sq.exclude = &qs[q].self, sq.n_exclude = 1;
            int64_t got[512];
            float gs[512];
            int n = select_query(&o, &sq, NULL, NULL, got, gs, &st);
            if (o.sampling == SELECT_SAMPLE_TOP) {
                if (!same(got, n, want, nw)) {
                    bad_queries++;
                    fprintf(stderr, "%s query %d:\n", name, q);
                    show("xrank", got, n);
                    show("sentence-transformers", want, nw);
                }
            } else {
                /* Python's random picks differ from ours: both must be the right number drawn from the same
                 * window, in window order */
                int64_t win[512];
                float ws[512];
                int nwin = select_query(&ow, &sq, NULL, NULL, win, ws, NULL);
                int ok = n == nw;
                for (int pass = 0; pass < 2; pass++) {
                    const int64_t *pick = pass ? want : got;
                    int np = pass ? nw : n, at = 0;
                    for (int i = 0; i < np; i++) {
                        while (at < nwin && win[at] != pick[i]) at++;
                        ok &= at < nwin;
                    }
                }
                if (!ok) bad_queries++;
                random_checked += n;
            }
            slots += nw;
        }
        TU_CHECK(bad_queries == 0, "%s: %d queries differ from sentence-transformers", name, bad_queries);
        /* skip counts: sentence-transformers v6 counts, per rule, the candidates still present when it runs */
        TU_CHECK(st.absolute_margin == want_skip[0] && st.relative_margin == want_skip[1] &&
                     st.max_score == want_skip[2] && st.min_score == want_skip[3],
                 "%s: skipped abs %lld rel %lld max %lld min %lld, sentence-transformers %ld %ld %ld %ld", name,
                 (long long)st.absolute_margin, (long long)st.relative_margin, (long long)st.max_score,
                 (long long)st.min_score, want_skip[0], want_skip[1], want_skip[2], want_skip[3]);
        short_queries += st.short_queries;
        excluded += st.excluded;
        TU_CHECK((size_t)nc > select_candidate_count(&o), "corpus smaller than the candidate list");
        configs++;
    }
    fclose(f);
    /* the fixture must reach the edges it was made for: queries left short of num_negatives (their last slots
     * filled from beyond range_max + max_positives, or left empty) and query-text passages excluded */
    TU_CHECK(short_queries > 0 && excluded > 0, "fixture covers no short query (%ld) or no exclusion (%ld)",
             short_queries, excluded);
    printf("sentence-transformers fixture: %d parameter sets, %d queries each, %d negative slots compared "
           "(%d of them random picks checked against the window), %ld short queries, %ld query-text exclusions\n",
           configs, nq, slots, random_checked, short_queries, excluded);
    for (int q = 0; q < nq; q++) free(qs[q].cand), free(qs[q].cand_s);
    free(qs);
}

int main(void) {
    test_filters();
    test_resolve();
    test_random();
    test_flag();
    test_fixture();
    return tu_finish("test_select");
}
