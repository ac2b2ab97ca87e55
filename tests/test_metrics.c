/* test_metrics.c: core/metrics against values worked out by hand on small rankings with ties, and against
 * pytrec_eval's numbers on 188 random queries (tests/fixtures/metrics, written by gen_metrics_fixtures.py). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "testutil.h"

static double eval1(const MetricsHit *h, size_t nh, const MetricsJudgment *j, size_t nj, const char *spec) {
    MetricSpec s;
    XrErr e;
    if (metrics_parse_spec(spec, &s, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return NAN;
    }
    double v = NAN;
    if (metrics_query(h, nh, j, nj, &s, 1, &v, &e)) fprintf(stderr, "%s\n", e.msg);
    return v;
}

#define CLOSE(got, want) \
    TU_CHECK(fabs((got) - (want)) < 1e-12, "%s: got %.15g want %.15g", #got, (double)(got), (double)(want))

static void test_hand(void) {
    /* all scores tied: trec_eval ranks c, b, a (doc id descending); only a is relevant -> rank 3 */
    MetricsHit h1[] = {{"a", 1.0}, {"b", 1.0}, {"c", 1.0}};
    MetricsJudgment j1[] = {{"a", 1}, {"b", 0}, {"c", 0}};
    CLOSE(eval1(h1, 3, j1, 3, "mrr@10"), 1.0 / 3);
    CLOSE(eval1(h1, 3, j1, 3, "mrr@2"), 0.0);
    CLOSE(eval1(h1, 3, j1, 3, "precision@1"), 0.0);
    CLOSE(eval1(h1, 3, j1, 3, "map"), 1.0 / 3);
    CLOSE(eval1(h1, 3, j1, 3, "ndcg@10"), 1.0 / log2(4.0));
    CLOSE(eval1(h1, 3, j1, 3, "recall@2"), 0.0);
    CLOSE(eval1(h1, 3, j1, 3, "recall@3"), 1.0);

    /* string order, not numeric: d9 > d10 > D9 (uppercase sorts below lowercase) */
    MetricsHit h2[] = {{"d10", 0.5}, {"D9", 0.5}, {"d9", 0.5}};
    MetricsJudgment j2[] = {{"d9", 1}};
    CLOSE(eval1(h2, 3, j2, 1, "mrr"), 1.0);
    MetricsJudgment j2b[] = {{"D9", 1}};
    CLOSE(eval1(h2, 3, j2b, 1, "mrr"), 1.0 / 3);
    MetricsJudgment j2c[] = {{"d10", 1}};
    CLOSE(eval1(h2, 3, j2c, 1, "mrr"), 0.5);

    /* graded: ranking b(-1) a(2) c(1) x(unjudged); z(3) judged but not retrieved; 3 relevant docs */
    MetricsHit h3[] = {{"x", 0.5}, {"c", 1.0}, {"a", 2.0}, {"b", 3.0}};
    MetricsJudgment j3[] = {{"a", 2}, {"b", -1}, {"c", 1}, {"z", 3}};
    double l3 = log2(3.0);
    CLOSE(eval1(h3, 4, j3, 4, "ndcg@2"), (2 / l3) / (3 + 2 / l3));
    CLOSE(eval1(h3, 4, j3, 4, "ndcg@10"), (2 / l3 + 1 / 2.0) / (3 + 2 / l3 + 1 / 2.0));
    CLOSE(eval1(h3, 4, j3, 4, "ndcg"), (2 / l3 + 1 / 2.0) / (3 + 2 / l3 + 1 / 2.0));
    CLOSE(eval1(h3, 4, j3, 4, "ndcg@1"), 0.0);
    CLOSE(eval1(h3, 4, j3, 4, "map"), (1 / 2.0 + 2 / 3.0) / 3);
    CLOSE(eval1(h3, 4, j3, 4, "map@2"), (1 / 2.0) / 3);
    CLOSE(eval1(h3, 4, j3, 4, "mrr@10"), 0.5);
    CLOSE(eval1(h3, 4, j3, 4, "precision@2"), 0.5);
    CLOSE(eval1(h3, 4, j3, 4, "p@10"), 0.2); /* divided by k, not by the 4 retrieved */
    CLOSE(eval1(h3, 4, j3, 4, "precision"), 0.5);
    CLOSE(eval1(h3, 4, j3, 4, "recall@2"), 1.0 / 3);
    CLOSE(eval1(h3, 4, j3, 4, "recall@100"), 2.0 / 3);
    /* these numbers are pytrec_eval's (ndcg_cut_2, map, ndcg) for the same input */
    TU_CHECK(fabs(eval1(h3, 4, j3, 4, "ndcg@2") - 0.2960819109658652) < 1e-12, "ndcg@2 vs pytrec_eval");
    TU_CHECK(fabs(eval1(h3, 4, j3, 4, "map") - 0.38888888888888884) < 1e-12, "map vs pytrec_eval");
    TU_CHECK(fabs(eval1(h3, 4, j3, 4, "ndcg") - 0.36999401273810767) < 1e-12, "ndcg vs pytrec_eval");

    /* a tie between a relevant and a non-relevant doc in the middle of the ranking */
    MetricsHit h4[] = {{"p1", 0.9}, {"n1", 0.7}, {"r1", 0.7}, {"n0", 0.1}};
    MetricsJudgment j4[] = {{"p1", 1}, {"r1", 2}};
    /* order p1, r1 ("r1" > "n1"), n1, n0 */
    CLOSE(eval1(h4, 4, j4, 2, "map"), 1.0);
    CLOSE(eval1(h4, 4, j4, 2, "ndcg@2"), (1 + 2 / l3) / (2 + 1 / l3));

    /* nothing relevant (grades 0 and -1): every metric is 0; empty ranking too */
    MetricsJudgment j5[] = {{"a", 0}, {"b", -1}};
    const char *all[] = {"ndcg@10", "mrr@10", "map", "map@5", "recall@5", "precision@5", "ndcg", "mrr"};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        CLOSE(eval1(h1, 3, j5, 2, all[i]), 0.0);
        CLOSE(eval1(NULL, 0, j1, 3, all[i]), 0.0);
        CLOSE(eval1(h1, 3, NULL, 0, all[i]), 0.0);
    }

    /* several specs in one call give the same as one at a time */
    MetricSpec specs[4];
    XrErr e;
    const char *names[] = {"ndcg@10", "MRR@10", "map", "Recall@3"};
    for (int i = 0; i < 4; i++) TU_CHECK(metrics_parse_spec(names[i], &specs[i], &e) == 0, "parse %s", names[i]);
    double out[4];
    TU_CHECK(metrics_query(h3, 4, j3, 4, specs, 4, out, &e) == 0, "multi");
    for (int i = 0; i < 4; i++) CLOSE(out[i], eval1(h3, 4, j3, 4, names[i]));

    /* errors: duplicate doc in the ranking or in the qrels, bad specs */
    MetricsHit hd[] = {{"a", 1.0}, {"b", 0.5}, {"a", 0.2}};
    TU_CHECK(metrics_query(hd, 3, j1, 3, specs, 1, out, &e) == -1 && strstr(e.msg, "'a'"), "dup hit: %s", e.msg);
    MetricsJudgment jd[] = {{"a", 1}, {"b", 1}, {"a", 0}};
    TU_CHECK(metrics_query(h1, 3, jd, 3, specs, 1, out, &e) == -1 && strstr(e.msg, "twice"), "dup qrel: %s", e.msg);
    MetricSpec s;
    const char *bad[] = {"ndcg@0", "ndcg@", "ndcg@x", "foo@10", "ndcg@10x", "map@-1", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        TU_CHECK(metrics_parse_spec(bad[i], &s, &e) == -1, "'%s' should not parse", bad[i]);
    char buf[32];
    metrics_parse_spec("P@5", &s, &e);
    metrics_spec_name(s, buf, sizeof buf);
    TU_CHECK(!strcmp(buf, "precision@5"), "name %s", buf);
    metrics_parse_spec("map", &s, &e);
    metrics_spec_name(s, buf, sizeof buf);
    TU_CHECK(!strcmp(buf, "map") && s.k == 0, "name %s", buf);

    double pq[] = {1, 0.5, 0, 0.25, 0.5, 1};
    double mean[2];
    metrics_mean(pq, 3, 2, mean);
    CLOSE(mean[0], 1.5 / 3);
    CLOSE(mean[1], 1.75 / 3);
    metrics_mean(pq, 0, 2, mean);
    CLOSE(mean[0], 0.0);
}

/* ---- pytrec_eval fixture ---- */

typedef struct {
    char *q, *doc;
    double v;
} Row;

/* Split a TSV of "q \t doc \t number" lines in place. */
static Row *read_tsv(const char *rel, size_t *n) {
    XrErr e;
    size_t len;
    char *buf = xr_read_file(tu_path(rel), &len, &e);
    if (!buf) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    size_t cap = 1024, k = 0;
    Row *rows = xr_malloc(cap * sizeof *rows);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char *t1 = strchr(line, '\t');
        char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2) {
            fprintf(stderr, "%s: bad line '%s'\n", rel, line);
            exit(1);
        }
        *t1 = *t2 = 0;
        if (k == cap) rows = xr_realloc(rows, (cap *= 2) * sizeof *rows);
        rows[k].q = line;
        rows[k].doc = t1 + 1;
        rows[k].v = strtod(t2 + 1, NULL);
        k++;
    }
    *n = k;
    return rows; /* buf lives as long as the process */
}

static void test_fixture(void) {
    size_t nq, nr, nx;
    Row *qr = read_tsv("fixtures/metrics/qrels.tsv", &nq);
    Row *rn = read_tsv("fixtures/metrics/run.tsv", &nr);
    Row *ex = read_tsv("fixtures/metrics/expected.tsv", &nx);
    enum { MAXQ = 256, MAXSPEC = 32 };
    MetricSpec specs[MAXSPEC];
    char spec_names[MAXSPEC][32];
    size_t n_specs = 0;
    /* collect the spec names from the MEAN lines */
    for (size_t i = 0; i < nx; i++) {
        if (strcmp(ex[i].q, "MEAN")) continue;
        XrErr e;
        TU_CHECK(metrics_parse_spec(ex[i].doc, &specs[n_specs], &e) == 0, "%s", e.msg);
        snprintf(spec_names[n_specs], 32, "%s", ex[i].doc);
        n_specs++;
    }
    TU_CHECK(n_specs >= 15, "only %zu specs in the fixture", n_specs);
    /* per-query values for the queries pytrec_eval evaluated (those in both qrels and run) */
    static double got[MAXQ][MAXSPEC];
    static int evaluated[MAXQ];
    double *rows = xr_malloc(MAXQ * MAXSPEC * sizeof *rows);
    size_t n_eval = 0;
    size_t max_docs = nr > nq ? nr : nq;
    MetricsHit *hits = xr_malloc(max_docs * sizeof *hits);
    MetricsJudgment *js = xr_malloc(max_docs * sizeof *js);
    for (int q = 0; q < MAXQ; q++) {
        char qid[16];
        snprintf(qid, sizeof qid, "q%d", q);
        size_t nh = 0, nj = 0;
        for (size_t i = 0; i < nr; i++)
            if (!strcmp(rn[i].q, qid)) hits[nh++] = (MetricsHit){rn[i].doc, rn[i].v};
        for (size_t i = 0; i < nq; i++)
            if (!strcmp(qr[i].q, qid)) js[nj++] = (MetricsJudgment){qr[i].doc, (int)qr[i].v};
        if (!nh || !nj) continue;
        XrErr e;
        TU_CHECK(metrics_query(hits, nh, js, nj, specs, n_specs, got[q], &e) == 0, "%s: %s", qid, e.msg);
        evaluated[q] = 1;
        memcpy(rows + n_eval * n_specs, got[q], n_specs * sizeof *rows);
        n_eval++;
    }
    double worst = 0;
    size_t compared = 0;
    for (size_t i = 0; i < nx; i++) {
        if (!strcmp(ex[i].q, "MEAN")) continue;
        int q = atoi(ex[i].q + 1);
        size_t s = 0;
        while (s < n_specs && strcmp(spec_names[s], ex[i].doc)) s++;
        if (s == n_specs) {
            /* mrr@k lines not in the MEAN list */
            MetricSpec one;
            XrErr e;
            TU_CHECK(metrics_parse_spec(ex[i].doc, &one, &e) == 0, "%s", e.msg);
            size_t nh = 0, nj = 0;
            for (size_t r = 0; r < nr; r++)
                if (!strcmp(rn[r].q, ex[i].q)) hits[nh++] = (MetricsHit){rn[r].doc, rn[r].v};
            for (size_t r = 0; r < nq; r++)
                if (!strcmp(qr[r].q, ex[i].q)) js[nj++] = (MetricsJudgment){qr[r].doc, (int)qr[r].v};
            double v;
            metrics_query(hits, nh, js, nj, &one, 1, &v, &e);
            double d = fabs(v - ex[i].v);
            if (d > worst) worst = d;
            TU_CHECK(d < 1e-6, "%s %s: got %.10g want %.10g", ex[i].q, ex[i].doc, v, ex[i].v);
            compared++;
            continue;
        }
        TU_CHECK(q >= 0 && q < MAXQ && evaluated[q], "%s: not evaluated here", ex[i].q);
        if (q < 0 || q >= MAXQ || !evaluated[q]) continue;
        double d = fabs(got[q][s] - ex[i].v);
        if (d > worst) worst = d;
        TU_CHECK(d < 1e-6, "%s %s: got %.10g want %.10g", ex[i].q, ex[i].doc, got[q][s], ex[i].v);
        compared++;
    }
    double mean[MAXSPEC];
    metrics_mean(rows, n_eval, n_specs, mean);
    size_t m = 0;
    for (size_t i = 0; i < nx; i++) {
        if (strcmp(ex[i].q, "MEAN")) continue;
        double d = fabs(mean[m] - ex[i].v);
        if (d > worst) worst = d;
        TU_CHECK(d < 1e-6, "mean %s: got %.10g want %.10g", ex[i].doc, mean[m], ex[i].v);
        m++;
    }
    printf("pytrec_eval fixture: %zu queries, %zu per-query values + %zu means, max abs diff %.3g\n", n_eval,
           compared, m, worst);
    free(rows);
    free(hits);
    free(js);
}

int main(void) {
    test_hand();
    test_fixture();
    return tu_finish("test_metrics");
}
