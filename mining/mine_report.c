/* mine_report.c: the report of a mining run (mine_report in mine.h): counts, the positive / negative score table
 * sentence-transformers prints, skip counts per filter, queries short of negatives, metrics and timings. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "mine.h"

static int mine_float_cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* torch.quantile's linear interpolation on sorted values */
static double mine_quantile(const float *s, int64_t n, double q) {
    double pos = q * (double)(n - 1);
    int64_t i = (int64_t)floor(pos);
    double f = pos - (double)i;
    return i + 1 < n ? s[i] + f * ((double)s[i + 1] - s[i]) : s[i];
}

static void mine_describe(float *v, int64_t n, double out[9]) {
    out[0] = (double)n;
    for (int i = 1; i < 9; i++) out[i] = NAN;
    if (n == 0) return;
    qsort(v, (size_t)n, sizeof(float), mine_float_cmp);
    double sum = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) sum += v[i];
    double mean = sum / (double)n;
    for (int64_t i = 0; i < n; i++) ss += ((double)v[i] - mean) * ((double)v[i] - mean);
    out[1] = mean;
    out[2] = v[(n - 1) / 2]; /* torch.median: the lower of the two middle values */
    out[3] = n > 1 ? sqrt(ss / (double)(n - 1)) : NAN;
    out[4] = v[0];
    out[5] = mine_quantile(v, n, 0.25);
    out[6] = mine_quantile(v, n, 0.5);
    out[7] = mine_quantile(v, n, 0.75);
    out[8] = v[n - 1];
}

static void mine_pct(FILE *f, const char *what, int64_t n, int64_t of) {
    if (n) fprintf(f, "    %-16s %12lld  (%.2f%% of %lld candidates)\n", what, (long long)n, of ? 100.0 * n / of : 0.0,
                   (long long)of);
}

void mine_report(FILE *f, const MineOpts *o, const MineResult *r) {
    const GroupSet *g = &r->groups;
    const SelectStats *s = &r->stats;
    const SelectOpts *so = &r->sel;
    fprintf(f, "xrank mine: %lld queries (%lld with positives), %lld passages (%lld duplicates searched once), "
               "%lld positives; top %lld retrieved per query\n",
            (long long)r->num_queries, (long long)r->mined_queries, (long long)r->num_passages,
            (long long)r->duplicate_passages, (long long)r->positives, (long long)r->search_k);
    if (so->style == SELECT_STYLE_ST)
        fprintf(f, "  selection: sentence-transformers style: %d negatives from survivors ranked %d..%d, sampling %s\n",
                so->num_negatives, so->range_min, so->range_max,
                so->sampling == SELECT_SAMPLE_TOP ? "top" : "random");
    else
        fprintf(f, "  selection: FlagEmbedding style: %d negatives sampled from retrieval ranks %d-%d, %s\n",
                so->num_negatives, so->range_min, so->range_max,
                so->sampling == SELECT_SAMPLE_TOP ? "top" : "random");
    /* the table sentence-transformers prints (triplet view: each negative once per positive of its query) */
    const float *sc = g->ce_scores ? g->ce_scores : g->scores;
    int K = g->k;
    float *pos = xr_malloc(sizeof(float) * (size_t)(g->n + 1));
    float *neg = xr_malloc(sizeof(float) * (size_t)(g->n * K + 1));
    float *dif = xr_malloc(sizeof(float) * (size_t)(g->n * K + 1));
    int64_t nn = 0;
    for (int64_t i = 0; i < g->n; i++) {
        const float *row = sc + i * (K + 1);
        pos[i] = row[0];
        for (int j = 0; j < K && g->negatives[i * K + j] >= 0; j++) {
            if (isnan(row[1 + j])) continue; /* FlagEmbedding fill: no score */
            neg[nn] = row[1 + j];
            dif[nn++] = row[0] - row[1 + j];
        }
    }
    double dp[9], dn[9], dd[9];
    mine_describe(pos, g->n, dp);
    mine_describe(neg, nn, dn);
    mine_describe(dif, nn, dd);
    free(pos);
    free(neg);
    free(dif);
    fprintf(f, "  scores: %s\n", g->ce_scores ? "cross-encoder" : "bi-encoder (retriever)");
    fprintf(f, "  %-6s %14s %14s %14s\n", "Metric", "Positive", "Negative", "Difference");
    fprintf(f, "  %-6s %14lld %14lld %14s\n", "Count", (long long)dp[0], (long long)dn[0], "");
    static const char *names[] = {"", "Mean", "Median", "Std", "Min", "25%", "50%", "75%", "Max"};
    for (int i = 1; i < 9; i++) fprintf(f, "  %-6s %14.4f %14.4f %14.4f\n", names[i], dp[i], dn[i], dd[i]);
    fprintf(f, "  candidates looked at: %lld; skipped by rule:\n", (long long)s->candidates);
    mine_pct(f, "positive", s->positive, s->candidates);
    mine_pct(f, "query text", s->excluded, s->candidates);
    mine_pct(f, "duplicate", s->duplicate, s->candidates);
    mine_pct(f, "absolute_margin", s->absolute_margin, s->candidates);
    mine_pct(f, "relative_margin", s->relative_margin, s->candidates);
    mine_pct(f, "max_score", s->max_score, s->candidates);
    mine_pct(f, "min_score", s->min_score, s->candidates);
    mine_pct(f, "ce_max_score", s->ce_max_score, s->candidates);
    mine_pct(f, "range_min", s->range_min, s->candidates);
    mine_pct(f, "range_max", s->range_max, s->candidates);
    mine_pct(f, "not sampled", s->not_sampled, s->candidates);
    fprintf(f, "  negatives: %lld picked%s", (long long)s->negatives, s->filled ? "" : "\n");
    if (s->filled) fprintf(f, " (%lld filled from the corpus)\n", (long long)s->filled);
    if (s->short_queries)
        fprintf(f,
                "  Could not find enough negatives for %lld of %lld queries (%.2f%%): consider range_max%s%s%s%s\n",
                (long long)s->short_queries, (long long)s->queries, 100.0 * s->short_queries / (double)s->queries,
                so->range_min ? ", range_min" : "", isnan(so->absolute_margin) ? "" : ", absolute_margin",
                isnan(so->relative_margin) ? "" : ", relative_margin", isnan(so->max_score) ? "" : ", max_score");
    if (r->have_metrics)
        fprintf(f, "  retrieval by the bi-encoder (%lld queries, distinct passages): MRR@10 %.4f  NDCG@10 %.4f  "
                   "Recall@10 %.4f  Recall@%d %.4f\n",
                (long long)r->mined_queries, r->mrr10, r->ndcg10, r->recall10, o->eval_depth, r->recall_depth);
    static const char *which[] = {"queries", "passages"};
    for (int w = 0; w < 2; w++) {
        if (r->cache_hit[w])
            fprintf(f, "  %s: embeddings read from the cache %s (%.2f s)\n", which[w], r->cache_path[w], r->t_embed[w]);
        else
            fprintf(f, "  %s: %lld embedded in %.2f s (%.1f/s, padding efficiency %.1f%%)%s%s\n", which[w],
                    (long long)r->embedded[w], r->t_embed[w],
                    r->t_embed[w] > 0 ? r->embedded[w] / r->t_embed[w] : 0.0,
                    r->emb[w].padded_tokens ? 100.0 * r->emb[w].real_tokens / r->emb[w].padded_tokens : 100.0,
                    r->cache_path[w][0] ? ", cached in " : "", r->cache_path[w]);
        if (r->warnings[w][0]) fprintf(f, "  warning: %s\n", r->warnings[w]);
    }
    if (o->ce)
        fprintf(f, "  cross-encoder: %lld pairs scored in %.2f s (%.1f pairs/s)\n", (long long)r->ce_pairs, r->t_ce,
                r->t_ce > 0 ? r->ce_pairs / r->t_ce : 0.0);
    /* the split, slowest rank's seconds each: embed (queries + passages), search (this rank's shard), merge
     * (the per-rank lists exchanged and merged), rescore (cross-encoder), select */
    fprintf(f,
            "  time: hashing %.2f s, embed %.2f s, search %.2f s on %s (%lld queries searched again: near-ties at the "
            "k-th slot), merge %.2f s, rescore %.2f s, select %.2f s, total %.2f s\n",
            r->t_hash, r->t_embed[0] + r->t_embed[1], r->t_search, r->search_where ? r->search_where : "cpu",
            (long long)r->knn.n_exhaustive, r->t_merge, r->t_ce, r->t_select, r->t_total);
    for (int i = 0; i < r->nranks && r->rank_rss_kib; i++) {
        if (r->rank_search_bytes[i])
            fprintf(f,
                    "  memory, rank %d: search %.1f MiB on the device (passages %s), host peak %.1f MiB; shard setup "
                    "%.2f s (check %.2f s, upload %.2f s, bf16 on the device %.2f s)\n",
                    i, r->rank_search_bytes[i] / 1048576.0, r->rank_resident[i] ? "resident" : "streamed in tiles",
                    r->rank_rss_kib[i] / 1024.0, r->rank_setup_s[3 * i] + r->rank_setup_s[3 * i + 1] +
                    r->rank_setup_s[3 * i + 2], r->rank_setup_s[3 * i], r->rank_setup_s[3 * i + 1],
                    r->rank_setup_s[3 * i + 2]);
        else
            fprintf(f, "  memory, rank %d: host peak %.1f MiB\n", i, r->rank_rss_kib[i] / 1024.0);
    }
}
