/* mine_jsonl.c: mined groups as jsonl (mine_write_jsonl in mine.h), in the sentence-transformers output formats
 * (triplet, n-tuple, labeled-pair, labeled-list) or FlagEmbedding's, written under a temporary name and renamed. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mine.h"
#include "xr_fs.h"
#include "xr_tmpclean.h"

int mine_jsonl_parse_format(const char *s, MineJsonlFormat *f) {
    static const char *names[] = {"triplet", "n-tuple", "labeled-pair", "labeled-list", "flagembedding"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) {
            *f = (MineJsonlFormat)i;
            return 0;
        }
    return -1;
}

static void mj_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') fputs("\\\"", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void mj_float(FILE *f, float v) {
    char tmp[32];
    fputs(xr_float_str(tmp, v), f);
}

static void mj_key(FILE *f, const MineTexts *t, const char *key, int first) {
    fprintf(f, "%s\"%s%s\": ", first ? "" : ", ", key, t->ids ? "_id" : "");
}

static void mj_q(FILE *f, const MineTexts *t, int64_t row) {
    size_t n;
    const char *s = t->query(t->ctx, row, &n);
    mj_str(f, s, n);
}

static void mj_p(FILE *f, const MineTexts *t, int64_t row) {
    size_t n;
    const char *s = t->passage(t->ctx, row, &n);
    mj_str(f, s, n);
}

static void mine_jsonl_body(FILE *f, const GroupSet *g, MineJsonlFormat fmt, int os, const MineTexts *t) {
    const float *sc = g->ce_scores ? g->ce_scores : g->scores;
    const int K = g->k;
    for (int64_t i = 0; i < g->n;) {
        int64_t end = i; /* rows of one query: [i, end) */
        while (end < g->n && g->query[end] == g->query[i]) end++;
        int64_t q = g->query[i];
        if (fmt == MINE_JSONL_FLAG) {
            int nn = groups_row_negatives(g, i);
            fprintf(f, "{");
            mj_key(f, t, "query", 1);
            mj_q(f, t, q);
            fprintf(f, ", \"pos%s\": [", t->ids ? "_ids" : "");
            for (int64_t r = i; r < end; r++) {
                if (r > i) fputs(", ", f);
                mj_p(f, t, g->positive[r]);
            }
            fprintf(f, "], \"neg%s\": [", t->ids ? "_ids" : "");
            for (int j = 0; j < nn; j++) {
                if (j) fputs(", ", f);
                mj_p(f, t, g->negatives[i * K + j]);
            }
            fputs("]", f);
            if (os) {
                fputs(", \"pos_scores\": [", f);
                for (int64_t r = i; r < end; r++) {
                    if (r > i) fputs(", ", f);
                    mj_float(f, sc[r * (K + 1)]);
                }
                fputs("], \"neg_scores\": [", f);
                for (int j = 0; j < nn; j++) {
                    if (j) fputs(", ", f);
                    mj_float(f, sc[i * (K + 1) + 1 + j]);
                }
                fputs("]", f);
            }
            fputs("}\n", f);
        } else if (fmt == MINE_JSONL_LABELED_PAIR) {
            for (int64_t r = i; r < end; r++) {
                fputs("{", f);
                mj_key(f, t, "anchor", 1);
                mj_q(f, t, q);
                mj_key(f, t, "positive", 0);
                mj_p(f, t, g->positive[r]);
                if (os) fputs(", \"score\": ", f), mj_float(f, sc[r * (K + 1)]);
                else fputs(", \"label\": 1", f);
                fputs("}\n", f);
            }
            int nn = groups_row_negatives(g, i);
            for (int j = 0; j < nn; j++) {
                fputs("{", f);
                mj_key(f, t, "anchor", 1);
                mj_q(f, t, q);
                mj_key(f, t, "positive", 0);
                mj_p(f, t, g->negatives[i * K + j]);
                if (os) fputs(", \"score\": ", f), mj_float(f, sc[i * (K + 1) + 1 + j]);
                else fputs(", \"label\": 0", f);
                fputs("}\n", f);
            }
        } else {
            for (int64_t r = i; r < end; r++) {
                int nn = groups_row_negatives(g, r);
                const float *rs = sc + r * (K + 1);
                if (fmt == MINE_JSONL_TRIPLET) {
                    for (int j = 0; j < nn; j++) {
                        fputs("{", f);
                        mj_key(f, t, "anchor", 1);
                        mj_q(f, t, q);
                        mj_key(f, t, "positive", 0);
                        mj_p(f, t, g->positive[r]);
                        mj_key(f, t, "negative", 0);
                        mj_p(f, t, g->negatives[r * K + j]);
                        if (os) fputs(", \"scores\": [", f), mj_float(f, rs[0]), fputs(", ", f), mj_float(f, rs[1 + j]),
                                fputs("]", f);
                        fputs("}\n", f);
                    }
                } else if (fmt == MINE_JSONL_NTUPLE) {
                    if (nn < K) continue; /* sentence-transformers keeps only complete tuples */
                    fputs("{", f);
                    mj_key(f, t, "anchor", 1);
                    mj_q(f, t, q);
                    mj_key(f, t, "positive", 0);
                    mj_p(f, t, g->positive[r]);
                    for (int j = 0; j < K; j++) {
                        char key[32];
                        snprintf(key, sizeof key, "negative_%d", j + 1);
                        mj_key(f, t, key, 0);
                        mj_p(f, t, g->negatives[r * K + j]);
                    }
                    if (os) {
                        fputs(", \"scores\": [", f);
                        for (int j = 0; j <= K; j++) {
                            if (j) fputs(", ", f);
                            mj_float(f, rs[j]);
                        }
                        fputs("]", f);
                    }
                    fputs("}\n", f);
                } else { /* labeled-list */
                    if (nn == 0) continue;
                    fputs("{", f);
                    mj_key(f, t, "anchor", 1);
                    mj_q(f, t, q);
                    fprintf(f, ", \"positive%s\": [", t->ids ? "_ids" : "");
                    mj_p(f, t, g->positive[r]);
                    for (int j = 0; j < nn; j++) fputs(", ", f), mj_p(f, t, g->negatives[r * K + j]);
                    fputs(os ? "], \"scores\": [" : "], \"labels\": [1", f);
                    for (int j = os ? 0 : 1; j <= nn; j++) {
                        if (j) fputs(", ", f);
                        if (os) mj_float(f, rs[j]);
                        else fputs("0", f);
                    }
                    fputs("]}\n", f);
                }
            }
        }
        i = end;
    }
}

int mine_write_jsonl(const GroupSet *g, MineJsonlFormat fmt, int output_scores, const MineTexts *t, const char *path,
                     XrErr *e) {
    if (!strcmp(path, "-")) {
        mine_jsonl_body(stdout, g, fmt, output_scores, t);
        return fflush(stdout) == 0 ? 0 : xr_errf(e, "writing to stdout failed: %s", strerror(errno));
    }
    char *tmp = xr_tmpclean_name(path);
    xr_tmpclean_add(tmp); /* before it exists: SIGINT / SIGTERM / SIGHUP from here on remove it */
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        xr_errf(e, "cannot create %s: %s", tmp, strerror(errno));
        xr_tmpclean_forget(tmp);
        free(tmp);
        return -1;
    }
    xr_tmpclean_test_pause("jsonl", tmp);
    mine_jsonl_body(f, g, fmt, output_scores, t);
    int ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, err = errno;
    if (!ok) {
        remove(tmp);
        xr_errf(e, "writing %s failed: %s", path, strerror(err));
    }
    xr_tmpclean_forget(tmp);
    free(tmp);
    return ok ? 0 : -1;
}
