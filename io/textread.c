/* textread.c: the entry point of the text inputs of `xrank tokenize` (tr_read): which format each input is,
 * the reader for it (tr_beir.c, tr_pairs.c, tr_flag.c) into one builder (tr_builder.c), and TextList. Readers
 * are deterministic: no hash order or timing leaks into the result. */
#define _POSIX_C_SOURCE 200809L
#include "textread.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tr_internal.h"

int64_t textlist_add(TextList *l, const char *s, size_t len) {
    if (l->n + 2 > l->cap_n) {
        l->cap_n = l->cap_n ? l->cap_n * 2 : 1024;
        l->start = xr_realloc(l->start, sizeof(int64_t) * (size_t)l->cap_n);
    }
    if (l->n == 0) l->start[0] = 0;
    size_t used = (size_t)l->start[l->n];
    if (used + len + 1 > l->cap) {
        size_t c = l->cap ? l->cap : 1 << 16;
        while (used + len + 1 > c) c *= 2;
        l->buf = xr_realloc(l->buf, c);
        l->cap = c;
    }
    memcpy(l->buf + used, s, len);
    l->buf[used + len] = 0;
    l->start[l->n + 1] = (int64_t)(used + len + 1);
    return l->n++;
}

void textlist_free(TextList *l) {
    free(l->buf);
    free(l->start);
    memset(l, 0, sizeof *l);
}

const char *tr_format_name(TrFormat f) {
    switch (f) {
    case TR_BEIR: return "beir";
    case TR_PAIRS: return "pairs";
    case TR_FLAG: return "flagembedding";
    default: return "auto";
    }
}


typedef enum { FT_JSONL, FT_CSV, FT_TSV, FT_UNKNOWN } FileType;

static FileType file_type(const char *path) {
    size_t n = strlen(path);
    if (n > 3 && !strcmp(path + n - 3, ".gz")) n -= 3;
    struct {
        const char *ext;
        FileType t;
    } m[] = {{".jsonl", FT_JSONL}, {".json", FT_JSONL}, {".csv", FT_CSV}, {".tsv", FT_TSV}, {".txt", FT_TSV}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        size_t l = strlen(m[i].ext);
        if (n > l && !strncmp(path + n - l, m[i].ext, l)) return m[i].t;
    }
    return FT_UNKNOWN;
}

/* A jsonl file whose first record has "query" and a list "pos" is FlagEmbedding data. */
static int sniff_record(void *ctx, const cJSON *j, const char *path, int64_t line, XrErr *e) {
    (void)path, (void)line, (void)e;
    *(int *)ctx = cJSON_GetObjectItemCaseSensitive(j, "query") &&
                  cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "pos"));
    return 1; /* the first record decides */
}

static int sniff_flag(const char *path, int *is_flag, XrErr *e) {
    *is_flag = 0;
    return tr_jsonl_each(NULL, path, sniff_record, is_flag, e) < 0 ? -1 : 0;
}

void textset_free(TextSet *ts) {
    textlist_free(&ts->queries);
    textlist_free(&ts->passages);
    textlist_free(&ts->query_ids);
    textlist_free(&ts->passage_ids);
    free(ts->qrel_query), free(ts->qrel_passage), free(ts->qrel_grade), free(ts->qrel_score);
    free(ts->neg_query), free(ts->neg_passage), free(ts->neg_score);
    free(ts->lab_query), free(ts->lab_passage), free(ts->lab_label);
    for (int i = 0; i < ts->nsources; i++) free(ts->sources[i]);
    free(ts->sources);
    memset(ts, 0, sizeof *ts);
}

int tr_read(const char *const *inputs, int ninputs, const TrOptions *o, TextSet *ts, XrErr *e) {
    memset(ts, 0, sizeof *ts);
    if (ninputs < 1) return xr_errf(e, "no input given");
    TrBuilder b = {.ts = ts, .o = o};
    int rc = -1;
    struct stat st;
    if (stat(inputs[0], &st) != 0) {
        xr_errf(e, "%s: cannot open: %s", inputs[0], strerror(errno));
        goto done;
    }
    TrFormat fmt = o->format;
    if (fmt == TR_AUTO && S_ISDIR(st.st_mode)) fmt = TR_BEIR;
    if (fmt == TR_BEIR) {
        if (ninputs != 1 || !S_ISDIR(st.st_mode)) {
            xr_errf(e, "%s: BEIR input is one directory (corpus.jsonl, queries.jsonl, qrels/)", inputs[0]);
            goto done;
        }
        ts->format = TR_BEIR;
        if (tr_read_beir(&b, inputs[0], e) < 0) goto done;
    } else {
        for (int i = 0; i < ninputs; i++) {
            const char *path = inputs[i];
            FileType ft = file_type(path);
            if (ft == FT_UNKNOWN) {
                xr_errf(e, "%s: cannot tell the format from the name (.jsonl, .json, .csv, .tsv, .txt, each "
                           "optionally .gz), or a directory for BEIR",
                        path);
                goto done;
            }
            TrFormat f = fmt;
            if (f == TR_AUTO) {
                int is_flag = 0;
                if (ft == FT_JSONL && sniff_flag(path, &is_flag, e) < 0) goto done;
                f = is_flag ? TR_FLAG : TR_PAIRS;
            }
            if (f == TR_FLAG && ft != FT_JSONL) {
                xr_errf(e, "%s: FlagEmbedding data is jsonl", path);
                goto done;
            }
            if (ts->format && ts->format != f) {
                xr_errf(e, "%s: is %s data but %s is %s: give files of one format", path, tr_format_name(f),
                        inputs[0], tr_format_name(ts->format));
                goto done;
            }
            ts->format = f;
            int r = f == TR_FLAG      ? tr_read_flag_jsonl(&b, path, e)
                    : ft == FT_JSONL  ? tr_read_pairs_jsonl(&b, path, e)
                    : ft == FT_CSV    ? tr_read_pairs_table(&b, path, ',', 1, e)
                                      : tr_read_pairs_table(&b, path, '\t', 0, e);
            if (r < 0) goto done;
            ts->sources = xr_realloc(ts->sources, sizeof(char *) * (size_t)(ts->nsources + 1));
            ts->sources[ts->nsources++] = xr_strdup(path);
        }
    }
    tr_builder_finish(&b);
    rc = 0;
done:
    tr_builder_free(&b);
    if (rc < 0) textset_free(ts);
    return rc;
}
