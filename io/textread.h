/* textread.h: the text inputs `xrank tokenize` reads, parsed into one TextSet: queries and passages (texts
 * and ids) plus qrels, given negatives and labels as index triples. Inputs: a BEIR directory, pair files
 * (jsonl / csv / tsv, named or positional columns) and FlagEmbedding jsonl, each optionally .gz. Parsing is
 * deterministic (same input, same TextSet), so every rank of a job can parse alone. Every bad input is an
 * error naming the file and line. Formats and merge rules: docs/FORMATS.md "Text inputs". */
#ifndef XR_TEXTREAD_H
#define XR_TEXTREAD_H
#include <stddef.h>
#include <stdint.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Strings in one arena: text i is buf + start[i], NUL terminated, start[i+1] - start[i] - 1 bytes long. */
typedef struct {
    int64_t n;
    char *buf;
    int64_t *start; /* [n + 1] */
    size_t cap;
    int64_t cap_n;
} TextList;
int64_t textlist_add(TextList *l, const char *s, size_t len);
static inline const char *textlist_get(const TextList *l, int64_t i, size_t *len) {
    if (len) *len = (size_t)(l->start[i + 1] - l->start[i] - 1);
    return l->buf + l->start[i];
}
void textlist_free(TextList *l);

typedef enum { TR_AUTO = 0, TR_BEIR = 1, TR_PAIRS = 2, TR_FLAG = 3 } TrFormat;
const char *tr_format_name(TrFormat f);

typedef struct {
    TrFormat format;              /* TR_AUTO: a directory is BEIR; a jsonl whose first record has "query" and
                                   * "pos" is FlagEmbedding; anything else is a pair file */
    const char *split;            /* BEIR: qrels/<split>.tsv; NULL = "test", or the only file in qrels/ */
    const char *title_sep;        /* BEIR: passage = strip(title + sep + text); NULL = " " */
    int no_title;                 /* BEIR: passage = strip(text) */
    const char *query_column;     /* pair files: named columns; NULL = positional (first = query, second = */
    const char *positive_column;  /* positive, a column named label or score = label, the rest negatives) */
    const char *negative_columns; /* comma separated */
    const char *label_column;
    int no_header;                /* csv / tsv without a header line: columns are named 0, 1, 2, ... */
    int allow_empty;              /* keep empty texts (0 tokens) instead of failing */
    int utf8_replace;             /* invalid UTF-8: 0 = an error naming file:line (Python's strict decoding), 1 =
                                   * each maximal ill-formed subpart read as U+FFFD (errors='replace'), counted */
} TrOptions;

typedef struct {
    TrFormat format;
    TextList queries, passages;
    TextList query_ids, passage_ids; /* BEIR ids; empty (n = 0) for pair files: ids are the row numbers */
    /* qrels: sorted by query (stable: input order within a query); grade 1 for pair / FlagEmbedding positives;
     * score: FlagEmbedding pos_scores, NULL when no input gave any (NaN where a row gave none) */
    int64_t nqrels;
    int64_t *qrel_query, *qrel_passage;
    int32_t *qrel_grade;
    float *qrel_score;
    /* given negatives: sorted by query, input order within a query, never a positive of the same query */
    int64_t nneg;
    int64_t *neg_query, *neg_passage;
    float *neg_score;
    /* labeled pairs (a label / score column): sorted by query */
    int64_t nlab;
    int64_t *lab_query, *lab_passage;
    float *lab_label;
    char **sources; /* input files read */
    int nsources;
    /* what merging and de-duplication did, for the report */
    int64_t rows;                 /* records read (pair / FlagEmbedding rows, BEIR corpus + queries + qrels) */
    int64_t merged_query_rows;    /* rows whose query text was already seen (merged into that query) */
    int64_t dup_passage_texts;    /* passage texts seen again (stored once) */
    int64_t dup_qrels, dup_negatives, negatives_dropped_as_positive;
    int64_t queries_without_qrels; /* BEIR: queries.jsonl entries no qrel names (dropped, as BEIR does) */
    int64_t empty_texts;           /* kept because allow_empty */
    int64_t utf8_replaced, utf8_lines; /* utf8_replace: ill-formed sequences read as U+FFFD, lines holding one */
} TextSet;

/* Read the inputs (one BEIR directory, or pair / FlagEmbedding files of one format, concatenated in order). */
int tr_read(const char *const *inputs, int ninputs, const TrOptions *o, TextSet *ts, XrErr *e);
void textset_free(TextSet *ts);

/* Streaming line reader over a plain or gzip file (zlib reads both; a truncated or corrupt gzip stream is
 * an error). Lines exclude the newline and a trailing CR and are NUL terminated; valid until the next call. */
typedef struct {
    const char *path;
    void *gz;
    char *buf;
    size_t cap, beg, end;
    int64_t line; /* number of the line last returned, 1-based */
    int eof;
    /* Invalid UTF-8 in a line: an error naming path:line and the byte (utf8_replace 0, as lr_open sets it), or the
     * line returned with each maximal ill-formed subpart replaced by U+FFFD and counted. */
    int utf8_replace;
    int64_t utf8_replaced, utf8_lines;
    char *fix;
    size_t fix_cap;
} LineReader;
int lr_open(LineReader *r, const char *path, XrErr *e);
/* The same check for an input read whole (score, embed): each line of (*data)[0..*len) (split at '\n'). Strict
 * (replace 0): the first bad line is an error naming name:line, the byte and its value, worded as lr_next's.
 * replace: when a line holds a bad sequence, *data is replaced by a copy (NUL terminated; the old one freed)
 * whose bad lines have each maximal ill-formed subpart as U+FFFD; *replaced and *lines grow by the sequences
 * and the lines. 0 or -1. */
int tr_utf8_buffer(const char *name, char **data, size_t *len, int replace, int64_t *replaced, int64_t *lines,
                   XrErr *e);
/* 1: a line; 0: end of file; -1: read error (e names the file and the line reached). */
int lr_next(LineReader *r, char **line, size_t *len, XrErr *e);
void lr_close(LineReader *r);

#ifdef __cplusplus
}
#endif
#endif
