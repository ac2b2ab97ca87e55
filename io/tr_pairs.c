/* tr_pairs.c: pair files (jsonl, csv with RFC 4180 quoting, tsv; named or positional columns, see
 * docs/FORMATS.md): which column is what, and each row into the builder. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tr_internal.h"

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

/* What both pair readers keep over the rows: the columns, their roles, and the row's positives / negatives. */
typedef struct {
    TrBuilder *b;
    int ncol;
    char **names;
    int *role;
    TrTextVec pos, neg;
} PairReader;

/* Take the column names (owned from now on) and decide their roles. */
static int pair_reader_columns(PairReader *pr, char **names, int ncol, const char *path, XrErr *e) {
    pr->names = names;
    pr->ncol = ncol;
    pr->role = xr_malloc(sizeof(int) * (size_t)(ncol ? ncol : 1));
    return resolve_roles(names, ncol, pr->b->o, pr->role, path, e);
}

static void pair_reader_free(PairReader *pr) {
    for (int i = 0; pr->names && i < pr->ncol; i++) free(pr->names[i]);
    free(pr->names);
    free(pr->role);
    free(pr->pos.v);
    free(pr->neg.v);
}

/* One csv / tsv record (r.n == the column count) into the builder. */
static int pairs_table_row(PairReader *pr, const Record *r, const char *path, int64_t line, XrErr *e) {
    pr->pos.n = pr->neg.n = 0;
    const char *q = NULL;
    size_t qn = 0;
    int has_label = 0;
    float label = 0;
    for (int i = 0; i < pr->ncol; i++) {
        const char *s = r->buf + r->off[i];
        size_t n = r->flen[i];
        switch (pr->role[i]) {
        case ROLE_QUERY: q = s, qn = n; break;
        case ROLE_POS: tr_tv_push(&pr->pos, s, n, NAN); break;
        case ROLE_NEG: tr_tv_push(&pr->neg, s, n, NAN); break;
        case ROLE_LABEL:
            if (parse_label(s, &label) < 0)
                return xr_errf(e, "%s:%lld: label \"%s\" in column \"%s\" is not a number", path, (long long)line, s,
                               pr->names[i]);
            has_label = 1;
            break;
        default: break;
        }
    }
    return tr_builder_row(pr->b, path, line, q, qn, &pr->pos, &pr->neg, has_label, label, e);
}

int tr_read_pairs_table(TrBuilder *b, const char *path, char delim, int quoting, XrErr *e) {
    LineReader lr;
    if (tr_lr_open(b, &lr, path, e) < 0) return -1;
    PairReader pr = {.b = b};
    Record r = {0};
    int64_t line, rows = 0;
    int rc = -1;
    int got = next_record(&lr, delim, quoting, &r, &line, e);
    if (got <= 0) {
        if (got == 0) xr_errf(e, "%s: empty file", path);
        goto done;
    }
    char **names = xr_calloc((size_t)r.n, sizeof(char *));
    for (int i = 0; i < r.n; i++) {
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        names[i] = xr_strdup(b->o->no_header ? num : r.buf + r.off[i]);
    }
    if (pair_reader_columns(&pr, names, r.n, path, e) < 0) goto done;
    int have_row = b->o->no_header; /* without a header the first record is a row */
    for (;;) {
        if (!have_row) {
            got = next_record(&lr, delim, quoting, &r, &line, e);
            if (got < 0) goto done;
            if (got == 0) break;
        }
        have_row = 0;
        if (r.n != pr.ncol) {
            xr_errf(e, "%s:%lld: %d fields, but the %s has %d (ragged row)", path, (long long)line, r.n,
                    b->o->no_header ? "first row" : "header", pr.ncol);
            goto done;
        }
        if (pairs_table_row(&pr, &r, path, line, e) < 0) goto done;
        rows++;
    }
    if (rows == 0) {
        xr_errf(e, "%s: no rows%s", path, b->o->no_header ? "" : " after the header");
        goto done;
    }
    rc = 0;
done:
    pair_reader_free(&pr);
    rec_free(&r);
    tr_lr_close(b, &lr);
    return rc;
}

static int pairs_jsonl_record(void *ctx, const cJSON *j, const char *path, int64_t line, XrErr *e) {
    PairReader *pr = ctx;
    if (!pr->names) { /* the first record's keys, in order, are the columns */
        int ncol = 0;
        for (cJSON *c = j->child; c; c = c->next) ncol++;
        char **names = xr_calloc((size_t)(ncol ? ncol : 1), sizeof(char *));
        int k = 0;
        for (cJSON *c = j->child; c; c = c->next) names[k++] = xr_strdup(c->string);
        if (pair_reader_columns(pr, names, ncol, path, e) < 0) return -1;
    }
    const int ncol = pr->ncol, *role = pr->role;
    char *const *names = pr->names;
    pr->pos.n = pr->neg.n = 0;
    const char *q = NULL;
    int has_label = 0;
    float label = 0;
    for (int i = 0; i < ncol; i++) {
        if (role[i] == ROLE_IGNORE) continue;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, names[i]);
        if (!v || cJSON_IsNull(v)) return xr_errf(e, "%s:%lld: missing field \"%s\"", path, (long long)line, names[i]);
        if (role[i] == ROLE_QUERY) {
            if (!cJSON_IsString(v))
                return xr_errf(e, "%s:%lld: field \"%s\" (the query) should be a string", path, (long long)line,
                               names[i]);
            q = v->valuestring;
        } else if (role[i] == ROLE_LABEL) {
            if (cJSON_IsBool(v))
                label = cJSON_IsTrue(v) ? 1.f : 0.f;
            else if (cJSON_IsNumber(v))
                label = (float)v->valuedouble;
            else if (!cJSON_IsString(v) || parse_label(v->valuestring, &label) < 0)
                return xr_errf(e, "%s:%lld: field \"%s\" (the label) should be a number", path, (long long)line,
                               names[i]);
            has_label = 1;
        } else if (tr_json_texts(v, names[i], 1, role[i] == ROLE_POS ? &pr->pos : &pr->neg, path, line, e) < 0) {
            return -1;
        }
    }
    if (has_label && pr->pos.n != 1) {
        int pc = 0;
        while (role[pc] != ROLE_POS) pc++;
        return xr_errf(e, "%s:%lld: a labeled pair needs one passage, field \"%s\" holds %d", path, (long long)line,
                       names[pc], pr->pos.n);
    }
    return tr_builder_row(pr->b, path, line, q, strlen(q), &pr->pos, &pr->neg, has_label, label, e) < 0 ? -1 : 0;
}

int tr_read_pairs_jsonl(TrBuilder *b, const char *path, XrErr *e) {
    PairReader pr = {.b = b};
    int64_t rows = tr_jsonl_each(b, path, pairs_jsonl_record, &pr, e);
    pair_reader_free(&pr);
    if (rows < 0) return -1;
    return rows == 0 ? xr_errf(e, "%s: no rows", path) : 0;
}
