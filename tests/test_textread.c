/* test_textread.c: the text readers against tests/fixtures/h5/expected (an independent Python reading of
 * the same files by tests/gen_h5_fixtures.py): BEIR (two splits, numeric ids, titles), pair files in csv
 * (quoting, CRLF), tsv (header / none), jsonl (named columns, list negatives, labels), FlagEmbedding jsonl
 * plain and gzipped; then every bad input must fail with its file:line and message. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "textread.h"

static cJSON *load_json(const char *rel) {
    XrErr e;
    size_t n;
    char *s = xr_read_file(tu_path(rel), &n, &e);
    if (!s) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (!j) {
        fprintf(stderr, "%s: bad JSON\n", rel);
        exit(1);
    }
    return j;
}

static void check_texts(const char *what, const TextList *l, const cJSON *arr) {
    int n = cJSON_GetArraySize(arr);
    TU_CHECK(l->n == n, "%s: %lld texts, want %d", what, (long long)l->n, n);
    int bad = 0, first = -1;
    for (int i = 0; i < n && i < l->n; i++) {
        const char *want = cJSON_GetArrayItem(arr, i)->valuestring;
        if (strcmp(textlist_get(l, i, NULL), want)) bad++, first = first < 0 ? i : first;
    }
    TU_CHECK(bad == 0, "%s: %d texts differ, first [%d]: got \"%s\" want \"%s\"", what, bad, first,
             first >= 0 ? textlist_get(l, first, NULL) : "", first >= 0 ? cJSON_GetArrayItem(arr, first)->valuestring : "");
}

static int same_f(float got, const cJSON *want) {
    if (cJSON_IsNull(want)) return isnan(got);
    return fabs(got - want->valuedouble) < 1e-6;
}

/* Triples [q, p, c3, c4?]: c3 int (grade) or float; c4 optional float column (NULL array: absent). */
static void check_triples(const char *what, int64_t n, const int64_t *q, const int64_t *p, const int32_t *grade,
                          const float *f3, const float *f4, const cJSON *arr) {
    int want = cJSON_GetArraySize(arr);
    TU_CHECK(n == want, "%s: %lld entries, want %d", what, (long long)n, want);
    int bad = 0;
    for (int i = 0; i < want && i < n; i++) {
        const cJSON *t = cJSON_GetArrayItem(arr, i);
        int k = cJSON_GetArraySize(t);
        int ok = q[i] == (int64_t)cJSON_GetArrayItem(t, 0)->valuedouble &&
                 p[i] == (int64_t)cJSON_GetArrayItem(t, 1)->valuedouble;
        int col = 2;
        if (grade) ok &= grade[i] == (int32_t)cJSON_GetArrayItem(t, col++)->valuedouble;
        if (f3) ok &= col < k && same_f(f3[i], cJSON_GetArrayItem(t, col++));
        if (f4) ok &= col < k && same_f(f4[i], cJSON_GetArrayItem(t, col++));
        ok &= col == k; /* no score column expected where we have none */
        if (!ok && bad++ == 0) {
            char *s = cJSON_PrintUnformatted(t);
            fprintf(stderr, "%s[%d]: got q %lld p %lld, want %s\n", what, i, (long long)q[i], (long long)p[i], s);
            free(s);
        }
    }
    TU_CHECK(bad == 0, "%s: %d entries differ", what, bad);
}

static void check_count(const char *what, const cJSON *counts, const char *key, int64_t got) {
    const cJSON *v = cJSON_GetObjectItem(counts, key);
    if (!v) return;
    TU_CHECK(got == (int64_t)v->valuedouble, "%s: %s = %lld, want %lld", what, key, (long long)got,
             (long long)v->valuedouble);
}

static void check_set(const char *what, const TextSet *ts, const char *expected) {
    cJSON *x = load_json(expected);
    TU_CHECK(!strcmp(tr_format_name(ts->format), cJSON_GetObjectItem(x, "format")->valuestring), "%s: format %s",
             what, tr_format_name(ts->format));
    char w[256];
    snprintf(w, sizeof w, "%s queries", what);
    check_texts(w, &ts->queries, cJSON_GetObjectItem(x, "queries"));
    snprintf(w, sizeof w, "%s passages", what);
    check_texts(w, &ts->passages, cJSON_GetObjectItem(x, "passages"));
    snprintf(w, sizeof w, "%s query ids", what);
    check_texts(w, &ts->query_ids, cJSON_GetObjectItem(x, "query_ids"));
    snprintf(w, sizeof w, "%s passage ids", what);
    check_texts(w, &ts->passage_ids, cJSON_GetObjectItem(x, "passage_ids"));
    snprintf(w, sizeof w, "%s qrels", what);
    check_triples(w, ts->nqrels, ts->qrel_query, ts->qrel_passage, ts->qrel_grade, ts->qrel_score, NULL,
                  cJSON_GetObjectItem(x, "qrels"));
    snprintf(w, sizeof w, "%s negatives", what);
    check_triples(w, ts->nneg, ts->neg_query, ts->neg_passage, NULL, ts->neg_score, NULL,
                  cJSON_GetObjectItem(x, "negatives"));
    snprintf(w, sizeof w, "%s labels", what);
    check_triples(w, ts->nlab, ts->lab_query, ts->lab_passage, NULL, ts->lab_label, NULL, cJSON_GetObjectItem(x, "labels"));
    const cJSON *c = cJSON_GetObjectItem(x, "counts");
    check_count(what, c, "rows", ts->rows);
    check_count(what, c, "merged_query_rows", ts->merged_query_rows);
    check_count(what, c, "dup_passage_texts", ts->dup_passage_texts);
    check_count(what, c, "dup_qrels", ts->dup_qrels);
    check_count(what, c, "dup_negatives", ts->dup_negatives);
    check_count(what, c, "negatives_dropped_as_positive", ts->negatives_dropped_as_positive);
    check_count(what, c, "queries_without_qrels", ts->queries_without_qrels);
    cJSON_Delete(x);
}

static void read_ok(const char *what, const char *input, const TrOptions *o, const char *expected) {
    const char *in[1] = {tu_path(input)};
    TextSet ts;
    XrErr e = {{0}};
    int rc = tr_read(in, 1, o, &ts, &e);
    TU_CHECK(rc == 0, "%s: %s", what, e.msg);
    if (rc == 0) {
        check_set(what, &ts, expected);
        textset_free(&ts);
    }
}

static void read_bad(const char *input, const TrOptions *o, const char *want_where, const char *want_msg) {
    const char *in[1] = {tu_path(input)};
    TextSet ts;
    XrErr e = {{0}};
    int rc = tr_read(in, 1, o, &ts, &e);
    TU_CHECK(rc < 0, "%s: read but should fail with '%s'", input, want_msg);
    if (rc == 0) {
        textset_free(&ts);
        return;
    }
    TU_CHECK(strstr(e.msg, want_where) && strstr(e.msg, want_msg), "%s: error '%s', want '%s' ... '%s'", input, e.msg,
             want_where, want_msg);
}

static void line_reader(void) {
    /* a line longer than the buffer, CRLF, an empty line, a last line without a newline */
    char path[] = "/tmp/xr_test_lr_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    for (int i = 0; i < 200000; i++) fputc('a' + i % 26, f);
    fputs("\r\n\nlast", f);
    fclose(f);
    LineReader lr;
    XrErr e;
    char *s;
    size_t n;
    TU_CHECK(lr_open(&lr, path, &e) == 0, "%s", e.msg);
    TU_CHECK(lr_next(&lr, &s, &n, &e) == 1 && n == 200000 && s[199999] == 'a' + 199999 % 26 && s[n] == 0,
             "long line: %zu bytes", n);
    TU_CHECK(lr_next(&lr, &s, &n, &e) == 1 && n == 0, "empty line: %zu", n);
    TU_CHECK(lr_next(&lr, &s, &n, &e) == 1 && n == 4 && !strcmp(s, "last") && lr.line == 3, "last line '%s'", s);
    TU_CHECK(lr_next(&lr, &s, &n, &e) == 0, "end of file");
    lr_close(&lr);
    unlink(path);
    TU_CHECK(lr_open(&lr, "/tmp/xr_no_such_file.jsonl", &e) < 0 && strstr(e.msg, "cannot open"), "%s", e.msg);
}

/* Invalid UTF-8 inside text fields (a Latin-1 é, a stray 0xFF 0xFE, a line ending mid-sequence): refused naming
 * file:line and the byte, as Python's strict decoding refuses it (json.loads / open(..., encoding="utf-8"):
 * "can't decode byte 0xe9 in position 14"); with utf8_replace each maximal ill-formed subpart becomes U+FFFD and
 * is counted: 4, as Python's bytes.decode("utf-8", "replace") gives for these two lines. */
static void invalid_utf8(void) {
    static const char text[] = "{\"query\": \"caf\xe9 ok\", \"pos\": [\"good \xff\xfe text\"], \"neg\": [\"fine\"]}\n"
                               "{\"query\": \"two\", \"pos\": [\"x\"], \"neg\": [\"y \xc3\"]}\n";
    static const char tsv[] = "query\tpositive\nok\tfine\nq\tbad \xed\xa0\x80 surrogate\n";
    char dir[] = "/tmp/xr_test_utf8_XXXXXX", path[64], tpath[64];
    TU_CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
    snprintf(path, sizeof path, "%s/bad.jsonl", dir);
    snprintf(tpath, sizeof tpath, "%s/bad.tsv", dir);
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, sizeof text - 1, f);
    fclose(f);
    f = fopen(tpath, "wb");
    fwrite(tsv, 1, sizeof tsv - 1, f);
    fclose(f);
    const char *in[1] = {path}, *tin[1] = {tpath};
    TrOptions o = {.format = TR_FLAG};
    TextSet ts;
    XrErr e = {{0}};
    char want[128];
    snprintf(want, sizeof want, "%s:1: invalid UTF-8 at byte 15 of the line (0xE9)", path);
    TU_CHECK(tr_read(in, 1, &o, &ts, &e) < 0 && strstr(e.msg, want), "strict: %s", e.msg);
    snprintf(want, sizeof want, "%s:3: invalid UTF-8 at byte 7 of the line (0xED)", tpath);
    o.format = TR_PAIRS;
    TU_CHECK(tr_read(tin, 1, &o, &ts, &e) < 0 && strstr(e.msg, want), "strict tsv: %s", e.msg);
    o = (TrOptions){.format = TR_FLAG, .utf8_replace = 1};
    int rc = tr_read(in, 1, &o, &ts, &e);
    TU_CHECK(rc == 0 && ts.utf8_replaced == 4 && ts.utf8_lines == 2, "replace: %s, %lld replaced on %lld lines",
             rc ? e.msg : "", (long long)ts.utf8_replaced, (long long)ts.utf8_lines);
    if (rc == 0) {
        TU_CHECK(!strcmp(textlist_get(&ts.queries, 0, NULL), "caf\xef\xbf\xbd ok"), "query 0: %s",
                 textlist_get(&ts.queries, 0, NULL));
        textset_free(&ts);
    }
    o = (TrOptions){.format = TR_PAIRS, .utf8_replace = 1};
    rc = tr_read(tin, 1, &o, &ts, &e); /* a surrogate's encoding: 3 maximal subparts (Python: 3 U+FFFD) */
    TU_CHECK(rc == 0 && ts.utf8_replaced == 3 && ts.utf8_lines == 1, "replace tsv: %s, %lld replaced",
             rc ? e.msg : "", (long long)ts.utf8_replaced);
    if (rc == 0) textset_free(&ts);
    unlink(path);
    unlink(tpath);
    rmdir(dir);
}

/* tr_utf8_buffer (score / embed read their input whole): the line numbers and byte positions lr_next gives, a last
 * line without a newline, CRLF lines, a valid buffer left as it is (same pointer), replacement keeping every
 * newline and the valid lines byte for byte. */
static void utf8_buffer(void) {
    XrErr e;
    int64_t nrep = 0, nlines = 0;
    const char valid[] = "caf\xc3\xa9\r\n\nok";
    char *d = xr_strdup(valid), *d0 = d;
    size_t n = strlen(d);
    TU_CHECK(tr_utf8_buffer("v.txt", &d, &n, 0, &nrep, &nlines, &e) == 0 && d == d0 && n == strlen(valid) &&
                 nrep == 0 && nlines == 0, "valid: %s", e.msg);
    free(d);
    const char bad[] = "ok\r\n\n\xff\xfe" "ab\nfine\nx\xe2\x82"; /* line 3: FF FE; line 5 (no newline): a cut E2 82 */
    d = xr_strdup(bad);
    n = strlen(bad);
    TU_CHECK(tr_utf8_buffer("b.txt", &d, &n, 0, &nrep, &nlines, &e) < 0 &&
                 strstr(e.msg, "b.txt:3: invalid UTF-8 at byte 1 of the line (0xFF)"), "strict: %s", e.msg);
    TU_CHECK(!memcmp(d, bad, sizeof bad), "strict: the buffer changed");
    TU_CHECK(tr_utf8_buffer("b.txt", &d, &n, 1, &nrep, &nlines, &e) == 0, "replace: %s", e.msg);
    const char want[] = "ok\r\n\n\xef\xbf\xbd\xef\xbf\xbd" "ab\nfine\nx\xef\xbf\xbd";
    TU_CHECK(n == strlen(want) && !memcmp(d, want, sizeof want) && nrep == 3 && nlines == 2,
             "replace: %zu bytes '%s', %lld replaced on %lld lines", n, d, (long long)nrep, (long long)nlines);
    free(d);
    d = xr_strdup("a\n\x80");
    n = 3;
    TU_CHECK(tr_utf8_buffer("-", &d, &n, 0, &nrep, &nlines, &e) < 0 && strstr(e.msg, "-:2: invalid UTF-8 at byte 1"),
             "last line: %s", e.msg);
    free(d);
}

int main(void) {
    line_reader();
    invalid_utf8();
    utf8_buffer();
    TrOptions o = {0};
    read_ok("beir", "fixtures/h5/beir", &o, "fixtures/h5/expected/beir.json");
    o.split = "dev";
    read_ok("beir dev", "fixtures/h5/beir", &o, "fixtures/h5/expected/beir_dev.json");
    o = (TrOptions){0};
    read_ok("pairs.csv", "fixtures/h5/pairs.csv", &o, "fixtures/h5/expected/pairs_csv.json");
    read_ok("pairs.tsv", "fixtures/h5/pairs.tsv", &o, "fixtures/h5/expected/pairs_tsv.json");
    o.no_header = 1;
    read_ok("triples_noheader.tsv", "fixtures/h5/triples_noheader.tsv", &o, "fixtures/h5/expected/triples_noheader.json");
    o = (TrOptions){.query_column = "question", .positive_column = "answer", .negative_columns = "hard"};
    read_ok("named.jsonl", "fixtures/h5/named.jsonl", &o, "fixtures/h5/expected/named.json");
    o = (TrOptions){0};
    read_ok("labeled.jsonl", "fixtures/h5/labeled.jsonl", &o, "fixtures/h5/expected/labeled.json");
    read_ok("flag.jsonl", "fixtures/h5/flag.jsonl", &o, "fixtures/h5/expected/flag.json");
    read_ok("flag.jsonl.gz", "fixtures/h5/flag.jsonl.gz", &o, "fixtures/h5/expected/flag.json");

    /* BEIR options: no title; a title separator */
    const char *beir[1] = {tu_path("fixtures/h5/beir")};
    TextSet ts;
    XrErr e = {{0}};
    o = (TrOptions){.no_title = 1};
    int rc = tr_read(beir, 1, &o, &ts, &e); /* t-4 is a title alone: empty without it */
    TU_CHECK(rc < 0 && strstr(e.msg, "corpus.jsonl:50: empty text in the document"), "no title: %s", e.msg);
    o.allow_empty = 1;
    rc = tr_read(beir, 1, &o, &ts, &e);
    TU_CHECK(rc == 0 && !strncmp(textlist_get(&ts.passages, 46, NULL), "Ünïcödé", strlen("Ünïcödé")) &&
                 ts.passages.n == 50 && ts.empty_texts == 1,
             "no title: %s", rc ? e.msg : textlist_get(&ts.passages, 46, NULL));
    if (rc == 0) textset_free(&ts);
    o = (TrOptions){.title_sep = " | "};
    rc = tr_read(beir, 1, &o, &ts, &e);
    TU_CHECK(rc == 0 && !strncmp(textlist_get(&ts.passages, 46, NULL), "Café naïve | Ünïcödé", strlen("Café naïve | Ünïcödé")),
             "title sep: %s", rc ? e.msg : textlist_get(&ts.passages, 46, NULL));
    if (rc == 0) textset_free(&ts);
    /* two files of one format concatenate; formats do not mix */
    const char *two[2] = {tu_path("fixtures/h5/flag.jsonl"), tu_path("fixtures/h5/flag.jsonl.gz")};
    o = (TrOptions){0};
    rc = tr_read(two, 2, &o, &ts, &e);
    TU_CHECK(rc == 0 && ts.queries.n == 8 && ts.nsources == 2 && ts.rows == 18 && ts.merged_query_rows == 10,
             "two files: %s queries %lld rows %lld merged %lld", e.msg, (long long)ts.queries.n, (long long)ts.rows,
             (long long)ts.merged_query_rows);
    if (rc == 0) textset_free(&ts);
    const char *mix[2] = {tu_path("fixtures/h5/flag.jsonl"), tu_path("fixtures/h5/pairs.csv")};
    rc = tr_read(mix, 2, &o, &ts, &e);
    TU_CHECK(rc < 0 && strstr(e.msg, "give files of one format"), "mixed formats: %s", e.msg);

    /* bad inputs: file:line and what is wrong */
    o = (TrOptions){0};
    read_bad("fixtures/h5/bad/malformed.jsonl", &o, "malformed.jsonl:3:", "malformed JSON");
    read_bad("fixtures/h5/bad/missing_field.jsonl", &o, "missing_field.jsonl:2:", "missing field \"pos\"");
    read_bad("fixtures/h5/bad/not_object.jsonl", &o, "not_object.jsonl:3:", "expected a JSON object");
    read_bad("fixtures/h5/bad/scores_mismatch.jsonl", &o, "scores_mismatch.jsonl:1:", "\"pos_scores\" should be a list of 2");
    read_bad("fixtures/h5/bad/empty_text.csv", &o, "empty_text.csv:3:", "empty text in a positive");
    read_bad("fixtures/h5/bad/ragged.csv", &o, "ragged.csv:4:", "2 fields, but the header has 3");
    read_bad("fixtures/h5/bad/unterminated.csv", &o, "unterminated.csv:3:", "unterminated quoted field");
    read_bad("fixtures/h5/bad/bad_quote.csv", &o, "bad_quote.csv:2:", "unexpected character 'x' after a closing quote");
    read_bad("fixtures/h5/bad/bad_label.csv", &o, "bad_label.csv:3:", "label \"high\" in column \"label\" is not a number");
    read_bad("fixtures/h5/bad/header_only.csv", &o, "header_only.csv", "no rows after the header");
    read_bad("fixtures/h5/bad/truncated.jsonl.gz", &o, "truncated.jsonl.gz", "truncated or corrupt gzip data after line");
    read_bad("fixtures/h5/bad/beir_dangling", &o, "test.tsv:3:", "corpus id \"d999\" is not in");
    read_bad("fixtures/h5/bad/beir_unknown_query", &o, "test.tsv:3:", "query id \"q7\" is not in");
    read_bad("fixtures/h5/bad/beir_dup_id", &o, "corpus.jsonl:3:", "duplicate _id \"d1\"");
    read_bad("fixtures/h5/bad/beir_bad_score", &o, "test.tsv:3:", "score \"high\" is not an integer");
    read_bad("fixtures/h5/bad/beir_empty_doc", &o, "corpus.jsonl:3:", "empty text in the document");
    read_bad("fixtures/h5/bad/beir_short_qrels", &o, "test.tsv:3:", "2 tab-separated fields");
    read_bad("fixtures/h5/beir/corpus.jsonl", &(TrOptions){.format = TR_BEIR}, "corpus.jsonl", "BEIR input is one directory");
    read_bad("fixtures/h5/bad", &o, "bad", "not a BEIR directory");
    read_bad("fixtures/h5/pairs.csv", &(TrOptions){.query_column = "anchor", .positive_column = "pos"}, "pairs.csv",
             "no column named \"pos\" (from --positive-column); the columns are: anchor, positive, negative");
    read_bad("fixtures/h5/beir", &(TrOptions){.split = "train"}, "beir", "no qrels/train.tsv");
    read_bad("fixtures/h5/expected", &o, "expected", "not a BEIR directory");
    /* allow_empty keeps the empty text and counts it */
    o = (TrOptions){.allow_empty = 1};
    const char *empty[1] = {tu_path("fixtures/h5/bad/empty_text.csv")};
    rc = tr_read(empty, 1, &o, &ts, &e);
    TU_CHECK(rc == 0 && ts.empty_texts == 1 && ts.passages.n == 3, "allow_empty: %s", e.msg);
    if (rc == 0) textset_free(&ts);
    return tu_finish("test_textread");
}
