/* textread.c: parsers for the text inputs of `xrank tokenize` (BEIR directories, pair files in jsonl / csv /
 * tsv, FlagEmbedding jsonl; plain or gzip through zlib) and the builder that merges rows into one TextSet:
 * passages de-duplicated by exact text, rows with the same query text merged into one query, qrels /
 * negatives / labels as index triples. Deterministic: no hash order or timing leaks into the result. */
#define _POSIX_C_SOURCE 200809L
#include "textread.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* ---------------------------------------------------------------- TextList */

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

/* ---------------------------------------------------------------- LineReader */

int lr_open(LineReader *r, const char *path, XrErr *e) {
    memset(r, 0, sizeof *r);
    r->path = path;
    struct stat st;
    if (stat(path, &st) != 0) return xr_errf(e, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return xr_errf(e, "%s: is a directory, a file was expected", path);
    gzFile g = gzopen(path, "rb"); /* reads plain files as they are (transparent mode) */
    if (!g) return xr_errf(e, "%s: cannot open: %s", path, errno ? strerror(errno) : "zlib out of memory");
    gzbuffer(g, 1 << 17);
    r->gz = g;
    r->cap = 1 << 16;
    r->buf = xr_malloc(r->cap);
    return 0;
}

void lr_close(LineReader *r) {
    if (r->gz) gzclose_r((gzFile)r->gz);
    free(r->buf);
    r->gz = NULL;
    r->buf = NULL;
}

int lr_next(LineReader *r, char **line, size_t *len, XrErr *e) {
    size_t scanned = r->beg;
    for (;;) {
        char *nl = memchr(r->buf + scanned, '\n', r->end - scanned);
        if (nl || (r->eof && r->beg < r->end)) {
            char *s = r->buf + r->beg;
            size_t n = nl ? (size_t)(nl - s) : r->end - r->beg;
            s[n] = 0; /* end < cap always leaves room for this NUL */
            r->beg = nl ? (size_t)(nl + 1 - r->buf) : r->end;
            if (n && s[n - 1] == '\r') s[--n] = 0;
            r->line++;
            *line = s;
            *len = n;
            return 1;
        }
        if (r->eof) return 0;
        if (r->beg > 0) {
            memmove(r->buf, r->buf + r->beg, r->end - r->beg);
            r->end -= r->beg;
            r->beg = 0;
        }
        scanned = r->end;
        if (r->end + 1 >= r->cap) r->buf = xr_realloc(r->buf, r->cap *= 2);
        size_t want = r->cap - r->end - 1;
        if (want > INT_MAX / 2) want = INT_MAX / 2;
        int got = gzread((gzFile)r->gz, r->buf + r->end, (unsigned)want);
        int zerr = Z_OK;
        const char *zmsg = got <= 0 ? gzerror((gzFile)r->gz, &zerr) : NULL;
        if (got < 0 || (got == 0 && zerr != Z_OK))
            return xr_errf(e, "%s: truncated or corrupt gzip data after line %lld (zlib: %s)", r->path,
                           (long long)r->line, zmsg && *zmsg ? zmsg : "read error");
        if (got == 0) r->eof = 1;
        r->end += (size_t)got;
    }
}

/* ---------------------------------------------------------------- hash maps */

/* Text -> index into a TextList (exact bytes). Slots hold index + 1, 0 = empty; hashes are kept for growth. */
typedef struct {
    int64_t *slot;
    uint64_t *hash;
    size_t cap, n;
} StrMap;

static uint64_t text_hash(const char *s, size_t n) { return xr_hash64(s, n, 0x7872616e6bULL); }

static void strmap_free(StrMap *m) {
    free(m->slot);
    free(m->hash);
    memset(m, 0, sizeof *m);
}

static void strmap_grow(StrMap *m) {
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
static int64_t strmap_find(StrMap *m, const TextList *l, const char *s, size_t n, uint64_t *h, size_t *pos) {
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

static void strmap_put(StrMap *m, size_t pos, uint64_t h, int64_t idx) {
    m->slot[pos] = idx + 1;
    m->hash[pos] = h;
    m->n++;
}

/* Set of (a, b) index pairs. */
typedef struct {
    int64_t *a, *b; /* a = -1: empty */
    size_t cap, n;
} PairSet;

static uint64_t pair_hash(int64_t a, int64_t b) {
    uint64_t x = (uint64_t)a * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)b + 0x632BE59BD9B4E019ULL);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ULL;
    return x ^ (x >> 29);
}

static void pairset_free(PairSet *s) {
    free(s->a);
    free(s->b);
    memset(s, 0, sizeof *s);
}

static int pairset_add(PairSet *s, int64_t a, int64_t b, int insert);

static void pairset_grow(PairSet *s) {
    PairSet t = {0};
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
static int pairset_add(PairSet *s, int64_t a, int64_t b, int insert) {
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

/* ---------------------------------------------------------------- builder */

typedef struct {
    TextSet *ts;
    const TrOptions *o;
    StrMap qmap, pmap; /* query / passage text (pair files) or id (BEIR) -> index */
    PairSet qrel_set, neg_set;
    int64_t cap_qrels, cap_neg, cap_lab;
    int any_qrel_score, any_neg_score;
} Builder;

static void grow_i64(int64_t **p, int64_t cap) { *p = xr_realloc(*p, sizeof(int64_t) * (size_t)cap); }

static void add_qrel(Builder *b, int64_t q, int64_t p, int32_t grade, float score) {
    TextSet *ts = b->ts;
    if (!pairset_add(&b->qrel_set, q, p, 1)) {
        ts->dup_qrels++;
        return;
    }
    if (ts->nqrels == b->cap_qrels) {
        b->cap_qrels = b->cap_qrels ? b->cap_qrels * 2 : 1024;
        grow_i64(&ts->qrel_query, b->cap_qrels);
        grow_i64(&ts->qrel_passage, b->cap_qrels);
        ts->qrel_grade = xr_realloc(ts->qrel_grade, sizeof(int32_t) * (size_t)b->cap_qrels);
        ts->qrel_score = xr_realloc(ts->qrel_score, sizeof(float) * (size_t)b->cap_qrels);
    }
    ts->qrel_query[ts->nqrels] = q;
    ts->qrel_passage[ts->nqrels] = p;
    ts->qrel_grade[ts->nqrels] = grade;
    ts->qrel_score[ts->nqrels] = score;
    ts->nqrels++;
}

static void add_neg(Builder *b, int64_t q, int64_t p, float score) {
    TextSet *ts = b->ts;
    if (!pairset_add(&b->neg_set, q, p, 1)) {
        ts->dup_negatives++;
        return;
    }
    if (ts->nneg == b->cap_neg) {
        b->cap_neg = b->cap_neg ? b->cap_neg * 2 : 1024;
        grow_i64(&ts->neg_query, b->cap_neg);
        grow_i64(&ts->neg_passage, b->cap_neg);
        ts->neg_score = xr_realloc(ts->neg_score, sizeof(float) * (size_t)b->cap_neg);
    }
    ts->neg_query[ts->nneg] = q;
    ts->neg_passage[ts->nneg] = p;
    ts->neg_score[ts->nneg] = score;
    ts->nneg++;
}

static void add_label(Builder *b, int64_t q, int64_t p, float label) {
    TextSet *ts = b->ts;
    if (ts->nlab == b->cap_lab) {
        b->cap_lab = b->cap_lab ? b->cap_lab * 2 : 1024;
        grow_i64(&ts->lab_query, b->cap_lab);
        grow_i64(&ts->lab_passage, b->cap_lab);
        ts->lab_label = xr_realloc(ts->lab_label, sizeof(float) * (size_t)b->cap_lab);
    }
    ts->lab_query[ts->nlab] = q;
    ts->lab_passage[ts->nlab] = p;
    ts->lab_label[ts->nlab] = label;
    ts->nlab++;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return 0;
    return 1;
}

/* Empty (or whitespace-only) texts are an error unless allowed; what names the field for the message. */
static int check_text(Builder *b, const char *s, size_t n, const char *file, int64_t line, const char *what, XrErr *e) {
    if (!is_blank(s, n)) return 0;
    if (b->o->allow_empty) {
        b->ts->empty_texts++;
        return 0;
    }
    return xr_errf(e, "%s:%lld: empty text in %s (use --allow-empty to keep empty texts)", file, (long long)line, what);
}

/* Query / passage by exact text: the index of the first occurrence, adding the text when new. */
static int64_t intern(StrMap *m, TextList *l, const char *s, size_t n, int64_t *dups) {
    uint64_t h;
    size_t pos;
    int64_t i = strmap_find(m, l, s, n, &h, &pos);
    if (i >= 0) {
        (*dups)++;
        return i;
    }
    i = textlist_add(l, s, n);
    strmap_put(m, pos, h, i);
    return i;
}

typedef struct {
    const char *s;
    size_t n;
    float score;
} Text;

typedef struct {
    Text *v;
    int n, cap;
} TextVec;

static void tv_push(TextVec *t, const char *s, size_t n, float score) {
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->v = xr_realloc(t->v, sizeof(Text) * (size_t)t->cap);
    }
    t->v[t->n++] = (Text){s, n, score};
}

/* One pair / FlagEmbedding row: a query, its positives, its negatives (with scores, NaN = none) or a
 * labeled pair. */
static int builder_row(Builder *b, const char *file, int64_t line, const char *q, size_t qn, const TextVec *pos,
                       const TextVec *neg, int has_label, float label, XrErr *e) {
    TextSet *ts = b->ts;
    if (check_text(b, q, qn, file, line, "the query", e) < 0) return -1;
    for (int i = 0; i < pos->n; i++)
        if (check_text(b, pos->v[i].s, pos->v[i].n, file, line, has_label ? "the passage" : "a positive", e) < 0)
            return -1;
    for (int i = 0; i < neg->n; i++)
        if (check_text(b, neg->v[i].s, neg->v[i].n, file, line, "a negative", e) < 0) return -1;
    ts->rows++;
    int64_t qi = intern(&b->qmap, &ts->queries, q, qn, &ts->merged_query_rows);
    for (int i = 0; i < pos->n; i++) {
        int64_t pi = intern(&b->pmap, &ts->passages, pos->v[i].s, pos->v[i].n, &ts->dup_passage_texts);
        if (has_label)
            add_label(b, qi, pi, label);
        else
            add_qrel(b, qi, pi, 1, pos->v[i].score);
    }
    for (int i = 0; i < neg->n; i++) {
        int64_t pi = intern(&b->pmap, &ts->passages, neg->v[i].s, neg->v[i].n, &ts->dup_passage_texts);
        add_neg(b, qi, pi, neg->v[i].score);
    }
    return 0;
}

/* ---------------------------------------------------------------- JSON helpers */

static cJSON *json_line(const char *line, size_t n, const char *file, int64_t lineno, XrErr *e) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(line, n, &end, 0);
    if (!j) {
        long col = end && end >= line ? (long)(end - line) + 1 : 1;
        xr_errf(e, "%s:%lld: malformed JSON near column %ld", file, (long long)lineno, col);
        return NULL;
    }
    while (end && end < line + n && (*end == ' ' || *end == '\t' || *end == '\r')) end++;
    if (end && end < line + n && *end) {
        cJSON_Delete(j);
        xr_errf(e, "%s:%lld: malformed JSON: text after the object at column %ld", file, (long long)lineno,
                (long)(end - line) + 1);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        xr_errf(e, "%s:%lld: expected a JSON object", file, (long long)lineno);
        return NULL;
    }
    return j;
}

/* A string field (an id may also be an integer); NULL with e filled when missing or of another type. */
static const char *json_str(const cJSON *o, const char *key, int allow_int, char *numbuf, const char *file,
                            int64_t line, XrErr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        xr_errf(e, "%s:%lld: missing field \"%s\"", file, (long long)line, key);
        return NULL;
    }
    if (cJSON_IsString(v)) return v->valuestring;
    if (allow_int && cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 9e15) {
        snprintf(numbuf, 32, "%lld", (long long)v->valuedouble);
        return numbuf;
    }
    xr_errf(e, "%s:%lld: field \"%s\" should be a string", file, (long long)line, key);
    return NULL;
}

/* A text cell of a jsonl row: a string, or (when lists are allowed) a list of strings. */
static int json_texts(const cJSON *v, const char *key, int allow_list, TextVec *out, const char *file, int64_t line,
                      XrErr *e) {
    if (cJSON_IsString(v)) {
        tv_push(out, v->valuestring, strlen(v->valuestring), NAN);
        return 0;
    }
    if (allow_list && cJSON_IsArray(v)) {
        const cJSON *x;
        cJSON_ArrayForEach(x, v) {
            if (!cJSON_IsString(x))
                return xr_errf(e, "%s:%lld: field \"%s\" should be a list of strings", file, (long long)line, key);
            tv_push(out, x->valuestring, strlen(x->valuestring), NAN);
        }
        return 0;
    }
    return xr_errf(e, "%s:%lld: field \"%s\" should be a string%s", file, (long long)line, key,
                   allow_list ? " or a list of strings" : "");
}

/* ---------------------------------------------------------------- csv / tsv records */

/* Fields of one record as spans into buf (unescaped). */
typedef struct {
    char *buf;
    size_t cap, len;
    size_t *off, *flen;
    int n, capf;
} Record;

static void rec_field_begin(Record *r) {
    if (r->n == r->capf) {
        r->capf = r->capf ? r->capf * 2 : 16;
        r->off = xr_realloc(r->off, sizeof(size_t) * (size_t)r->capf);
        r->flen = xr_realloc(r->flen, sizeof(size_t) * (size_t)r->capf);
    }
    r->off[r->n] = r->len;
    r->flen[r->n] = 0;
    r->n++;
}

static void rec_putc(Record *r, char c) {
    if (r->len + 2 > r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4096;
        r->buf = xr_realloc(r->buf, r->cap);
    }
    r->buf[r->len++] = c;
    r->flen[r->n - 1]++;
}

static void rec_field_end(Record *r) {
    if (r->len + 1 > r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4096;
        r->buf = xr_realloc(r->buf, r->cap);
    }
    r->buf[r->len++] = 0;
}

static void rec_free(Record *r) {
    free(r->buf);
    free(r->off);
    free(r->flen);
}

/* Next non-blank record. csv: RFC 4180 quoting ("..." fields may hold the delimiter, newlines and ""); tsv:
 * no quoting, a field ends at a tab. Returns 1 with *start_line set, 0 at the end, -1 on error. */
static int next_record(LineReader *lr, char delim, int quoting, Record *r, int64_t *start_line, XrErr *e) {
    char *line;
    size_t n;
    int got;
    do {
        got = lr_next(lr, &line, &n, e);
        if (got <= 0) return got;
    } while (n == 0);
    *start_line = lr->line;
    r->n = 0;
    r->len = 0;
    size_t i = 0;
    for (;;) { /* one field per iteration */
        rec_field_begin(r);
        if (quoting && i < n && line[i] == '"') {
            i++;
            for (;;) {
                if (i == n) { /* the quoted field goes on in the next line */
                    got = lr_next(lr, &line, &n, e);
                    if (got < 0) return -1;
                    if (got == 0)
                        return xr_errf(e, "%s:%lld: unterminated quoted field (the file ends inside it)", lr->path,
                                       (long long)*start_line);
                    rec_putc(r, '\n');
                    i = 0;
                    continue;
                }
                char c = line[i++];
                if (c != '"') {
                    rec_putc(r, c);
                } else if (i < n && line[i] == '"') {
                    rec_putc(r, '"');
                    i++;
                } else {
                    break;
                }
            }
            if (i < n && line[i] != delim)
                return xr_errf(e, "%s:%lld: unexpected character '%c' after a closing quote (column %zu)", lr->path,
                               (long long)lr->line, line[i], i + 1);
        } else {
            while (i < n && line[i] != delim) rec_putc(r, line[i++]);
        }
        rec_field_end(r);
        if (i >= n) return 1;
        i++; /* the delimiter: another field follows */
    }
}

/* ---------------------------------------------------------------- pair files */

enum { ROLE_IGNORE = 0, ROLE_QUERY, ROLE_POS, ROLE_NEG, ROLE_LABEL };

static int find_col(char *const *names, int ncol, const char *name) {
    for (int i = 0; i < ncol; i++)
        if (!strcmp(names[i], name)) return i;
    return -1;
}

static int col_missing(const char *file, const char *flag, const char *name, char *const *names, int ncol, XrErr *e) {
    char list[512] = "";
    for (int i = 0; i < ncol; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", names[i]);
    }
    return xr_errf(e, "%s: no column named \"%s\" (from %s); the columns are: %s", file, name, flag, list);
}

/* Decide what each column is (docs/FORMATS.md): named by the options, else sentence-transformers' rule:
 * a column called label or score is the label, the other columns in order are query, positive, negatives. */
static int resolve_roles(char *const *names, int ncol, const TrOptions *o, int *role, const char *file, XrErr *e) {
    for (int i = 0; i < ncol; i++) role[i] = ROLE_IGNORE;
    if (o->query_column || o->positive_column) {
        if (!o->query_column || !o->positive_column)
            return xr_errf(e, "%s: --query-column and --positive-column go together", file);
        int q = find_col(names, ncol, o->query_column), p = find_col(names, ncol, o->positive_column);
        if (q < 0) return col_missing(file, "--query-column", o->query_column, names, ncol, e);
        if (p < 0) return col_missing(file, "--positive-column", o->positive_column, names, ncol, e);
        role[q] = ROLE_QUERY;
        role[p] = ROLE_POS;
        if (o->label_column) {
            int l = find_col(names, ncol, o->label_column);
            if (l < 0) return col_missing(file, "--label-column", o->label_column, names, ncol, e);
            role[l] = ROLE_LABEL;
        }
        for (const char *s = o->negative_columns; s && *s;) {
            const char *c = strchr(s, ',');
            char nm[256];
            snprintf(nm, sizeof nm, "%.*s", (int)(c ? (size_t)(c - s) : strlen(s)), s);
            int k = find_col(names, ncol, nm);
            if (k < 0) return col_missing(file, "--negative-columns", nm, names, ncol, e);
            role[k] = ROLE_NEG;
            s = c ? c + 1 : NULL;
        }
    } else {
        if (o->label_column || o->negative_columns)
            return xr_errf(e, "%s: --label-column / --negative-columns need --query-column and --positive-column",
                           file);
        int ntext = 0;
        for (int i = 0; i < ncol; i++) {
            int is_label = !strcmp(names[i], "label") || !strcmp(names[i], "score");
            int have_label = 0;
            for (int k = 0; k < i; k++) have_label |= role[k] == ROLE_LABEL;
            if (is_label && !have_label) {
                role[i] = ROLE_LABEL;
            } else {
                role[i] = ntext == 0 ? ROLE_QUERY : ntext == 1 ? ROLE_POS : ROLE_NEG;
                ntext++;
            }
        }
        if (ntext < 2)
            return xr_errf(e, "%s: needs at least two text columns (query, positive), found %d", file, ntext);
    }
    int has_label = 0, has_neg = 0;
    for (int i = 0; i < ncol; i++) has_label |= role[i] == ROLE_LABEL, has_neg |= role[i] == ROLE_NEG;
    if (has_label && has_neg)
        return xr_errf(e, "%s: a label column goes with exactly two text columns (query, passage), not negatives",
                       file);
    return 0;
}

static int parse_label(const char *s, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ') end++;
    if (end == s || *end || errno || !isfinite(v)) return -1;
    *out = (float)v;
    return 0;
}

static int read_pairs_table(Builder *b, const char *path, char delim, int quoting, XrErr *e) {
    LineReader lr;
    if (lr_open(&lr, path, e) < 0) return -1;
    Record r = {0};
    int64_t line;
    int rc = -1, ncol = 0, *role = NULL;
    char **names = NULL;
    TextVec pos = {0}, neg = {0};
    int got = next_record(&lr, delim, quoting, &r, &line, e);
    if (got <= 0) {
        if (got == 0) xr_errf(e, "%s: empty file", path);
        goto done;
    }
    ncol = r.n;
    names = xr_calloc((size_t)ncol, sizeof(char *));
    int have_row = 0;
    for (int i = 0; i < ncol; i++) {
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        names[i] = xr_strdup(b->o->no_header ? num : r.buf + r.off[i]);
    }
    have_row = b->o->no_header;
    role = xr_malloc(sizeof(int) * (size_t)ncol);
    if (resolve_roles(names, ncol, b->o, role, path, e) < 0) goto done;
    int64_t rows = 0;
    for (;;) {
        if (!have_row) {
            got = next_record(&lr, delim, quoting, &r, &line, e);
            if (got < 0) goto done;
            if (got == 0) break;
        }
        have_row = 0;
        if (r.n != ncol) {
            xr_errf(e, "%s:%lld: %d fields, but the %s has %d (ragged row)", path, (long long)line, r.n,
                    b->o->no_header ? "first row" : "header", ncol);
            goto done;
        }
        pos.n = neg.n = 0;
        const char *q = NULL;
        size_t qn = 0;
        int has_label = 0;
        float label = 0;
        for (int i = 0; i < ncol; i++) {
            const char *s = r.buf + r.off[i];
            size_t n = r.flen[i];
            switch (role[i]) {
            case ROLE_QUERY: q = s, qn = n; break;
            case ROLE_POS: tv_push(&pos, s, n, NAN); break;
            case ROLE_NEG: tv_push(&neg, s, n, NAN); break;
            case ROLE_LABEL:
                if (parse_label(s, &label) < 0) {
                    xr_errf(e, "%s:%lld: label \"%s\" in column \"%s\" is not a number", path, (long long)line, s,
                            names[i]);
                    goto done;
                }
                has_label = 1;
                break;
            default: break;
            }
        }
        if (builder_row(b, path, line, q, qn, &pos, &neg, has_label, label, e) < 0) goto done;
        rows++;
    }
    if (rows == 0) {
        xr_errf(e, "%s: no rows%s", path, b->o->no_header ? "" : " after the header");
        goto done;
    }
    rc = 0;
done:
    for (int i = 0; names && i < ncol; i++) free(names[i]);
    free(names);
    free(role);
    free(pos.v);
    free(neg.v);
    rec_free(&r);
    lr_close(&lr);
    return rc;
}

static int read_pairs_jsonl(Builder *b, const char *path, XrErr *e) {
    LineReader lr;
    if (lr_open(&lr, path, e) < 0) return -1;
    int rc = -1, ncol = 0, *role = NULL;
    char **names = NULL;
    TextVec pos = {0}, neg = {0};
    cJSON *j = NULL;
    char *line;
    size_t n;
    int64_t rows = 0;
    int got;
    while ((got = lr_next(&lr, &line, &n, e)) > 0) {
        if (is_blank(line, n)) continue;
        if (!(j = json_line(line, n, path, lr.line, e))) goto done;
        if (!names) { /* the first record's keys, in order, are the columns */
            for (cJSON *c = j->child; c; c = c->next) ncol++;
            names = xr_calloc((size_t)(ncol ? ncol : 1), sizeof(char *));
            int k = 0;
            for (cJSON *c = j->child; c; c = c->next) names[k++] = xr_strdup(c->string);
            role = xr_malloc(sizeof(int) * (size_t)(ncol ? ncol : 1));
            if (resolve_roles(names, ncol, b->o, role, path, e) < 0) goto done;
        }
        pos.n = neg.n = 0;
        const char *q = NULL;
        int has_label = 0;
        float label = 0;
        for (int i = 0; i < ncol; i++) {
            if (role[i] == ROLE_IGNORE) continue;
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, names[i]);
            if (!v || cJSON_IsNull(v)) {
                xr_errf(e, "%s:%lld: missing field \"%s\"", path, (long long)lr.line, names[i]);
                goto done;
            }
            if (role[i] == ROLE_QUERY) {
                if (!cJSON_IsString(v)) {
                    xr_errf(e, "%s:%lld: field \"%s\" (the query) should be a string", path, (long long)lr.line,
                            names[i]);
                    goto done;
                }
                q = v->valuestring;
            } else if (role[i] == ROLE_LABEL) {
                if (cJSON_IsBool(v))
                    label = cJSON_IsTrue(v) ? 1.f : 0.f;
                else if (cJSON_IsNumber(v))
                    label = (float)v->valuedouble;
                else if (!cJSON_IsString(v) || parse_label(v->valuestring, &label) < 0) {
                    xr_errf(e, "%s:%lld: field \"%s\" (the label) should be a number", path, (long long)lr.line,
                            names[i]);
                    goto done;
                }
                has_label = 1;
            } else if (json_texts(v, names[i], 1, role[i] == ROLE_POS ? &pos : &neg, path, lr.line, e) < 0) {
                goto done;
            }
        }
        if (has_label && pos.n != 1) {
            int pc = 0;
            while (role[pc] != ROLE_POS) pc++;
            xr_errf(e, "%s:%lld: a labeled pair needs one passage, field \"%s\" holds %d", path, (long long)lr.line,
                    names[pc], pos.n);
            goto done;
        }
        if (builder_row(b, path, lr.line, q, strlen(q), &pos, &neg, has_label, label, e) < 0) goto done;
        cJSON_Delete(j);
        j = NULL;
        rows++;
    }
    if (got < 0) goto done;
    if (rows == 0) {
        xr_errf(e, "%s: no rows", path);
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(j);
    for (int i = 0; names && i < ncol; i++) free(names[i]);
    free(names);
    free(role);
    free(pos.v);
    free(neg.v);
    lr_close(&lr);
    return rc;
}

/* ---------------------------------------------------------------- FlagEmbedding jsonl */

/* "pos" / "neg" lists with their optional "pos_scores" / "neg_scores" of the same length. */
static int flag_list(const cJSON *j, const char *key, const char *score_key, int required, TextVec *out,
                     const char *file, int64_t line, int *any_score, XrErr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return xr_errf(e, "%s:%lld: missing field \"%s\"", file, (long long)line, key);
        return 0;
    }
    if (!cJSON_IsArray(v)) return xr_errf(e, "%s:%lld: field \"%s\" should be a list of strings", file, (long long)line, key);
    if (json_texts(v, key, 1, out, file, line, e) < 0) return -1;
    if (required && out->n == 0) return xr_errf(e, "%s:%lld: field \"%s\" is an empty list", file, (long long)line, key);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, score_key);
    if (!s || cJSON_IsNull(s)) return 0;
    if (!cJSON_IsArray(s) || cJSON_GetArraySize(s) != out->n)
        return xr_errf(e, "%s:%lld: field \"%s\" should be a list of %d numbers, one per entry of \"%s\"", file,
                       (long long)line, score_key, out->n, key);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, s) {
        if (!cJSON_IsNumber(x))
            return xr_errf(e, "%s:%lld: field \"%s\"[%d] is not a number", file, (long long)line, score_key, i);
        out->v[i++].score = (float)x->valuedouble;
    }
    *any_score = 1;
    return 0;
}

static int read_flag_jsonl(Builder *b, const char *path, XrErr *e) {
    LineReader lr;
    if (lr_open(&lr, path, e) < 0) return -1;
    TextVec pos = {0}, neg = {0};
    cJSON *j = NULL;
    char *line, num[32];
    size_t n;
    int64_t rows = 0;
    int got, rc = -1;
    while ((got = lr_next(&lr, &line, &n, e)) > 0) {
        if (is_blank(line, n)) continue;
        if (!(j = json_line(line, n, path, lr.line, e))) goto done;
        const char *q = json_str(j, "query", 0, num, path, lr.line, e);
        pos.n = neg.n = 0;
        if (!q || flag_list(j, "pos", "pos_scores", 1, &pos, path, lr.line, &b->any_qrel_score, e) < 0 ||
            flag_list(j, "neg", "neg_scores", 0, &neg, path, lr.line, &b->any_neg_score, e) < 0 ||
            builder_row(b, path, lr.line, q, strlen(q), &pos, &neg, 0, 0, e) < 0)
            goto done;
        cJSON_Delete(j);
        j = NULL;
        rows++;
    }
    if (got < 0) goto done;
    if (rows == 0) {
        xr_errf(e, "%s: no rows", path);
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(j);
    free(pos.v);
    free(neg.v);
    lr_close(&lr);
    return rc;
}

/* ---------------------------------------------------------------- BEIR */

/* dir/name, or dir/name.gz; NULL when neither exists. */
static char *find_input(const char *dir, const char *name) {
    char *p = xr_path_join(dir, name);
    if (xr_file_exists(p)) return p;
    char *gz = xr_malloc(strlen(p) + 4);
    sprintf(gz, "%s.gz", p);
    free(p);
    if (xr_file_exists(gz)) return gz;
    free(gz);
    return NULL;
}

static char *beir_qrels_path(const char *dir, const char *split, XrErr *e) {
    char *qdir = xr_path_join(dir, "qrels");
    char *found = NULL;
    char name[300];
    if (split) {
        snprintf(name, sizeof name, "%s.tsv", split);
        found = find_input(qdir, name);
        if (!found) xr_errf(e, "%s: no qrels/%s.tsv (--split %s)", dir, split, split);
        free(qdir);
        return found;
    }
    found = find_input(qdir, "test.tsv");
    if (found) {
        free(qdir);
        return found;
    }
    DIR *d = opendir(qdir);
    if (!d) {
        xr_errf(e, "%s: no qrels directory (a BEIR directory holds corpus.jsonl, queries.jsonl, qrels/<split>.tsv)",
                dir);
        free(qdir);
        return NULL;
    }
    char list[1024] = "";
    int n = 0;
    struct dirent *de;
    /* readdir order is arbitrary: keep the smallest name so the choice never depends on it */
    while ((de = readdir(d))) {
        const char *s = de->d_name;
        size_t l = strlen(s);
        if (!((l > 4 && !strcmp(s + l - 4, ".tsv")) || (l > 7 && !strcmp(s + l - 7, ".tsv.gz")))) continue;
        n++;
        size_t k = strlen(list);
        snprintf(list + k, sizeof list - k, "%s%s", k ? ", " : "", s);
        if (!found || strcmp(s, found) < 0) {
            free(found);
            found = xr_strdup(s);
        }
    }
    closedir(d);
    if (n != 1) {
        xr_errf(e, "%s: %s; pick one with --split", dir,
                n ? "several qrels files and no test.tsv" : "qrels/ holds no .tsv file");
        if (n) snprintf(e->msg + strlen(e->msg), sizeof e->msg - strlen(e->msg), " (%s)", list);
        free(found);
        free(qdir);
        return NULL;
    }
    char *p = xr_path_join(qdir, found);
    free(found);
    free(qdir);
    return p;
}

static void strip_ws(const char **s, size_t *n) {
    while (*n && is_blank(*s, 1)) (*s)++, (*n)--;
    while (*n && is_blank(*s + *n - 1, 1)) (*n)--;
}

static int read_beir(Builder *b, const char *dir, XrErr *e) {
    TextSet *ts = b->ts;
    const TrOptions *o = b->o;
    char *corpus = find_input(dir, "corpus.jsonl"), *queries = find_input(dir, "queries.jsonl");
    char *qrels = NULL;
    TextList aq = {0}, aqid = {0}; /* every query of queries.jsonl */
    StrMap aqmap = {0};
    int64_t *used = NULL, *final_of = NULL;
    int rc = -1;
    cJSON *j = NULL;
    LineReader lr = {0};
    char *line, num[32];
    size_t n;
    int got;
    char *joined = NULL;
    size_t joined_cap = 0;
    if (!corpus || !queries) {
        xr_errf(e, "%s: not a BEIR directory: no %s", dir, !corpus ? "corpus.jsonl" : "queries.jsonl");
        goto done;
    }
    if (!(qrels = beir_qrels_path(dir, o->split, e))) goto done;
    const char *sep = o->title_sep ? o->title_sep : " ";
    size_t seplen = strlen(sep);

    if (lr_open(&lr, corpus, e) < 0) goto done;
    while ((got = lr_next(&lr, &line, &n, e)) > 0) {
        if (is_blank(line, n)) continue;
        if (!(j = json_line(line, n, corpus, lr.line, e))) goto done;
        const char *id = json_str(j, "_id", 1, num, corpus, lr.line, e);
        const char *text = id ? json_str(j, "text", 0, num, corpus, lr.line, e) : NULL;
        if (!text) goto done;
        const cJSON *tv = cJSON_GetObjectItemCaseSensitive(j, "title");
        const char *title = !o->no_title && cJSON_IsString(tv) ? tv->valuestring : NULL;
        if (tv && !cJSON_IsNull(tv) && !cJSON_IsString(tv)) {
            xr_errf(e, "%s:%lld: field \"title\" should be a string", corpus, (long long)lr.line);
            goto done;
        }
        /* BEIR: (title + sep + text).strip() */
        size_t tl = title ? strlen(title) : 0, xl = strlen(text), need = tl + seplen + xl + 1;
        if (need > joined_cap) joined = xr_realloc(joined, joined_cap = need * 2);
        size_t k = 0;
        if (title) {
            memcpy(joined, title, tl);
            memcpy(joined + tl, sep, seplen);
            k = tl + seplen;
        }
        memcpy(joined + k, text, xl);
        k += xl;
        const char *s = joined;
        strip_ws(&s, &k);
        if (check_text(b, s, k, corpus, lr.line, "the document (title + text)", e) < 0) goto done;
        uint64_t h;
        size_t slot;
        if (strmap_find(&b->pmap, &ts->passage_ids, id, strlen(id), &h, &slot) >= 0) {
            xr_errf(e, "%s:%lld: duplicate _id \"%s\"", corpus, (long long)lr.line, id);
            goto done;
        }
        strmap_put(&b->pmap, slot, h, textlist_add(&ts->passage_ids, id, strlen(id)));
        textlist_add(&ts->passages, s, k);
        ts->rows++;
        cJSON_Delete(j);
        j = NULL;
    }
    if (got < 0) goto done;
    if (ts->passages.n == 0) {
        xr_errf(e, "%s: no documents", corpus);
        goto done;
    }
    lr_close(&lr);

    if (lr_open(&lr, queries, e) < 0) goto done;
    while ((got = lr_next(&lr, &line, &n, e)) > 0) {
        if (is_blank(line, n)) continue;
        if (!(j = json_line(line, n, queries, lr.line, e))) goto done;
        const char *id = json_str(j, "_id", 1, num, queries, lr.line, e);
        const char *text = id ? json_str(j, "text", 0, num, queries, lr.line, e) : NULL;
        if (!text || check_text(b, text, strlen(text), queries, lr.line, "the query", e) < 0) goto done;
        uint64_t h;
        size_t slot;
        if (strmap_find(&aqmap, &aqid, id, strlen(id), &h, &slot) >= 0) {
            xr_errf(e, "%s:%lld: duplicate _id \"%s\"", queries, (long long)lr.line, id);
            goto done;
        }
        strmap_put(&aqmap, slot, h, textlist_add(&aqid, id, strlen(id)));
        textlist_add(&aq, text, strlen(text));
        ts->rows++;
        cJSON_Delete(j);
        j = NULL;
    }
    if (got < 0) goto done;
    lr_close(&lr);

    /* qrels: query-id, corpus-id, score; the first line is a header when its score is not an integer */
    used = xr_calloc((size_t)(aq.n ? aq.n : 1), sizeof(int64_t));
    if (lr_open(&lr, qrels, e) < 0) goto done;
    while ((got = lr_next(&lr, &line, &n, e)) > 0) {
        if (is_blank(line, n)) continue;
        char *f[4] = {line, NULL, NULL, NULL};
        int nf = 1;
        for (char *p = line; *p; p++)
            if (*p == '\t') {
                *p = 0;
                if (nf < 4) f[nf] = p + 1;
                nf++;
            }
        char *end = NULL;
        long long grade = nf == 3 ? strtoll(f[2], &end, 10) : 0;
        int grade_ok = nf == 3 && end != f[2] && *end == 0;
        if (lr.line == 1 && !grade_ok) continue; /* header: query-id corpus-id score */
        if (nf != 3) {
            xr_errf(e, "%s:%lld: %d tab-separated fields, a qrels line has 3 (query-id, corpus-id, score)", qrels,
                    (long long)lr.line, nf);
            goto done;
        }
        if (!grade_ok || grade < INT32_MIN || grade > INT32_MAX) {
            xr_errf(e, "%s:%lld: score \"%s\" is not an integer", qrels, (long long)lr.line, f[2]);
            goto done;
        }
        uint64_t h;
        size_t slot;
        int64_t q = strmap_find(&aqmap, &aqid, f[0], strlen(f[0]), &h, &slot);
        if (q < 0) {
            xr_errf(e, "%s:%lld: query id \"%s\" is not in %s", qrels, (long long)lr.line, f[0], queries);
            goto done;
        }
        int64_t p = strmap_find(&b->pmap, &ts->passage_ids, f[1], strlen(f[1]), &h, &slot);
        if (p < 0) {
            xr_errf(e, "%s:%lld: corpus id \"%s\" is not in %s", qrels, (long long)lr.line, f[1], corpus);
            goto done;
        }
        used[q] = 1;
        add_qrel(b, q, p, (int32_t)grade, NAN);
        ts->rows++;
    }
    if (got < 0) goto done;
    if (ts->nqrels == 0) {
        xr_errf(e, "%s: no qrels", qrels);
        goto done;
    }
    /* keep the queries some qrel names, in queries.jsonl order (as BEIR's loader does) */
    final_of = xr_malloc(sizeof(int64_t) * (size_t)(aq.n ? aq.n : 1));
    for (int64_t i = 0; i < aq.n; i++) {
        final_of[i] = -1;
        if (!used[i]) {
            ts->queries_without_qrels++;
            continue;
        }
        size_t l;
        const char *s = textlist_get(&aq, i, &l);
        final_of[i] = textlist_add(&ts->queries, s, l);
        s = textlist_get(&aqid, i, &l);
        textlist_add(&ts->query_ids, s, l);
    }
    for (int64_t k = 0; k < ts->nqrels; k++) ts->qrel_query[k] = final_of[ts->qrel_query[k]];
    char *src[3] = {corpus, queries, qrels};
    for (int k = 0; k < 3; k++) {
        ts->sources = xr_realloc(ts->sources, sizeof(char *) * (size_t)(ts->nsources + 1));
        ts->sources[ts->nsources++] = src[k];
    }
    corpus = queries = qrels = NULL;
    rc = 0;
done:
    cJSON_Delete(j);
    lr_close(&lr);
    free(joined);
    free(corpus);
    free(queries);
    free(qrels);
    free(used);
    free(final_of);
    textlist_free(&aq);
    textlist_free(&aqid);
    strmap_free(&aqmap);
    return rc;
}

/* ---------------------------------------------------------------- driver */

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
static int sniff_flag(const char *path, int *is_flag, XrErr *e) {
    LineReader lr;
    if (lr_open(&lr, path, e) < 0) return -1;
    char *line;
    size_t n;
    int got;
    *is_flag = 0;
    while ((got = lr_next(&lr, &line, &n, e)) > 0) {
        if (is_blank(line, n)) continue;
        cJSON *j = json_line(line, n, path, lr.line, e);
        if (!j) {
            got = -1;
            break;
        }
        *is_flag = cJSON_GetObjectItemCaseSensitive(j, "query") &&
                   cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "pos"));
        cJSON_Delete(j);
        break;
    }
    lr_close(&lr);
    return got < 0 ? -1 : 0;
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

static void finish(Builder *b) {
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
    Builder b = {.ts = ts, .o = o};
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
        if (read_beir(&b, inputs[0], e) < 0) goto done;
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
            int r = f == TR_FLAG      ? read_flag_jsonl(&b, path, e)
                    : ft == FT_JSONL  ? read_pairs_jsonl(&b, path, e)
                    : ft == FT_CSV    ? read_pairs_table(&b, path, ',', 1, e)
                                      : read_pairs_table(&b, path, '\t', 0, e);
            if (r < 0) goto done;
            ts->sources = xr_realloc(ts->sources, sizeof(char *) * (size_t)(ts->nsources + 1));
            ts->sources[ts->nsources++] = xr_strdup(path);
        }
    }
    finish(&b);
    rc = 0;
done:
    strmap_free(&b.qmap);
    strmap_free(&b.pmap);
    pairset_free(&b.qrel_set);
    pairset_free(&b.neg_set);
    if (rc < 0) textset_free(ts);
    return rc;
}
