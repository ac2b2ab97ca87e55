/* tr_internal.h: what the text readers share inside io/ (not a public header): the builder that merges every
 * input's rows into one TextSet (tr_builder.c), the JSON helpers and the jsonl record loop (tr_json.c), and the
 * readers of each format (tr_pairs.c, tr_flag.c, tr_beir.c) that textread.c's tr_read dispatches to. */
#ifndef XR_TR_INTERNAL_H
#define XR_TR_INTERNAL_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "textread.h"

/* ---- tr_builder.c ---- */

/* Text -> index into a TextList (exact bytes). Slots hold index + 1, 0 = empty; hashes are kept for growth. */
typedef struct {
    int64_t *slot;
    uint64_t *hash;
    size_t cap, n;
} TrStrMap;
/* Index of s in l, or -1 (and *pos = the free slot to insert at, *h = the hash). */
int64_t tr_strmap_find(TrStrMap *m, const TextList *l, const char *s, size_t n, uint64_t *h, size_t *pos);
void tr_strmap_put(TrStrMap *m, size_t pos, uint64_t h, int64_t idx);
void tr_strmap_free(TrStrMap *m);

/* Set of (a, b) index pairs. */
typedef struct {
    int64_t *a, *b; /* a = -1: empty */
    size_t cap, n;
} TrPairSet;

typedef struct {
    TextSet *ts;
    const TrOptions *o;
    TrStrMap qmap, pmap; /* query / passage text (pair files) or id (BEIR) -> index */
    TrPairSet qrel_set, neg_set;
    int64_t cap_qrels, cap_neg, cap_lab;
    int any_qrel_score, any_neg_score;
} TrBuilder;

/* A text of a row (a span into the reader's buffers) with its score (NaN = none). */
typedef struct {
    const char *s;
    size_t n;
    float score;
} TrText;

typedef struct {
    TrText *v;
    int n, cap;
} TrTextVec;
void tr_tv_push(TrTextVec *t, const char *s, size_t n, float score);

int tr_is_blank(const char *s, size_t n);
/* Empty (or whitespace-only) texts are an error unless allowed; what names the field for the message. */
int tr_check_text(TrBuilder *b, const char *s, size_t n, const char *file, int64_t line, const char *what, XrErr *e);
void tr_add_qrel(TrBuilder *b, int64_t q, int64_t p, int32_t grade, float score);
/* One pair / FlagEmbedding row: a query, its positives, its negatives (with scores, NaN = none) or a
 * labeled pair. */
int tr_builder_row(TrBuilder *b, const char *file, int64_t line, const char *q, size_t qn, const TrTextVec *pos,
                   const TrTextVec *neg, int has_label, float label, XrErr *e);
/* After the last input: drop negatives that are positives of their query, sort the triples by query. */
void tr_builder_finish(TrBuilder *b);
void tr_builder_free(TrBuilder *b);

/* ---- tr_json.c ---- */

/* One jsonl line as a JSON object; NULL with e naming the file, line and column when it is not one. */
cJSON *tr_json_line(const char *line, size_t n, const char *file, int64_t lineno, XrErr *e);
/* A string field (an id may also be an integer, printed into numbuf[32]); NULL with e filled when missing or of
 * another type. */
const char *tr_json_str(const cJSON *o, const char *key, int allow_int, char *numbuf, const char *file, int64_t line,
                        XrErr *e);
/* A text cell of a jsonl row: a string, or (when lists are allowed) a list of strings. */
int tr_json_texts(const cJSON *v, const char *key, int allow_list, TrTextVec *out, const char *file, int64_t line,
                  XrErr *e);

/* Called for each record of a jsonl file: 0 to go on, 1 to stop after this record, -1 on error (e filled). */
typedef int (*TrJsonlFn)(void *ctx, const cJSON *j, const char *path, int64_t line, XrErr *e);
/* Each non-blank line of path (plain or gzip) parsed as a JSON object and given to fn, in order. Returns the
 * number of records fn took, or -1 (a file, JSON or fn error, in e). */
int64_t tr_jsonl_each(TrBuilder *b, const char *path, TrJsonlFn fn, void *ctx, XrErr *e);
/* Open a line reader with b's UTF-8 policy (b NULL: replace, uncounted: a peek); tr_lr_close adds its counts to
 * b's TextSet. */
int tr_lr_open(TrBuilder *b, LineReader *lr, const char *path, XrErr *e);
void tr_lr_close(TrBuilder *b, LineReader *lr);

/* ---- the readers: each adds one input to the builder ---- */

int tr_read_pairs_table(TrBuilder *b, const char *path, char delim, int quoting, XrErr *e); /* csv / tsv */
int tr_read_pairs_jsonl(TrBuilder *b, const char *path, XrErr *e);
int tr_read_flag_jsonl(TrBuilder *b, const char *path, XrErr *e);
int tr_read_beir(TrBuilder *b, const char *dir, XrErr *e);

#endif
