/* test_dataset.c: text -> token stores -> read back. The BEIR fixture tokenized with the real BERT vocab
 * (tests/fixtures/tok/bert) must give, for every query and passage, exactly the ids of the Hugging Face fast
 * tokenizer (expected/beir_tokens.json), with the ids, qrels and shard table of the documented layout;
 * output bytes must not depend on the thread count; truncation, --overwrite guards, the shard plan and
 * the rank slices are checked too.
 * `test_dataset --check DIR` runs the same content check on a directory `xrank tokenize` wrote, and
 * `test_dataset --make-bad DIR OUT` writes damaged copies of it for `xrank inspect` to catch (tests/h5.cmake). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "h5store.h"
#include "testutil.h"

static cJSON *load_json(const char *path) {
    XrErr e;
    size_t n;
    char *s = xr_read_file(path, &n, &e);
    if (!s) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (!j) {
        fprintf(stderr, "%s: bad JSON\n", path);
        exit(1);
    }
    return j;
}

/* Every row of store `name` equals the expected ids (cut to max_tokens when > 0); ids match. */
static void check_store(const char *dir, const char *name, const cJSON *want_tok, const cJSON *want_ids,
                        int64_t max_tokens, const char *fp) {
    XrErr e = {{0}};
    TokenStore *s = h5store_open(dir, name, &e);
    TU_CHECK(s != NULL, "open %s/%s: %s", dir, name, e.msg);
    if (!s) return;
    int n = cJSON_GetArraySize(want_tok);
    TU_CHECK(h5store_rows(s) == n, "%s: %lld rows, want %d", name, (long long)h5store_rows(s), n);
    TU_CHECK(!strcmp(h5store_tokenizer_fingerprint(s), fp), "%s: fingerprint %s, want %s", name,
             h5store_tokenizer_fingerprint(s), fp);
    TU_CHECK(h5store_max_tokens(s) == max_tokens, "%s: max_tokens %lld", name, (long long)h5store_max_tokens(s));
    TokBatch b = {0};
    int rc = h5store_load(s, &b, &e);
    TU_CHECK(rc == 0, "load %s: %s", name, e.msg);
    int bad = 0, ntrunc = 0;
    for (int i = 0; rc == 0 && i < n && i < b.n; i++) {
        const cJSON *row = cJSON_GetArrayItem(want_tok, i);
        int64_t len = b.offsets[i + 1] - b.offsets[i], wl = cJSON_GetArraySize(row);
        if (max_tokens > 0 && wl > max_tokens) wl = max_tokens, ntrunc++;
        int ok = len == wl;
        for (int k = 0; ok && k < wl; k++) ok = b.tokens[b.offsets[i] + k] == cJSON_GetArrayItem(row, k)->valueint;
        if (!ok && bad++ < 3)
            fprintf(stderr, "%s row %d: %lld tokens, want %lld (first %d vs %d)\n", name, i, (long long)len,
                    (long long)wl, len ? b.tokens[b.offsets[i]] : -1,
                    wl ? cJSON_GetArrayItem(row, 0)->valueint : -1);
    }
    TU_CHECK(bad == 0, "%s: %d of %d rows differ from the Hugging Face tokenizer", name, bad, n);
    char **ids = h5store_read_ids(s, 0, h5store_rows(s), &e);
    TU_CHECK(ids != NULL, "%s ids: %s", name, e.msg);
    int nid = want_ids ? cJSON_GetArraySize(want_ids) : 0;
    for (int i = 0; ids && i < n; i++) {
        char num[32];
        snprintf(num, sizeof num, "%d", i);
        const char *want = nid ? cJSON_GetArrayItem(want_ids, i)->valuestring : num;
        if (strcmp(ids[i], want)) {
            TU_CHECK(0, "%s id %d: %s, want %s", name, i, ids[i], want);
            break;
        }
    }
    free(ids);
    tokbatch_free(&b);
    h5store_close(s);
    (void)ntrunc;
}

/* The content check of a BEIR-fixture dataset directory. */
static void check_dir(const char *dir, int64_t max_q, int64_t max_p) {
    cJSON *tok = load_json(tu_path("fixtures/h5/expected/beir_tokens.json"));
    cJSON *set = load_json(tu_path("fixtures/h5/expected/beir.json"));
    XrErr e;
    Tokenizer *t = tok_load(tu_path("fixtures/tok/bert"), &e);
    if (!t) {
        fprintf(stderr, "tokenizer: %s\n", e.msg);
        exit(1);
    }
    DsTokInfo ti;
    ds_tok_info(t, &ti);
    check_store(dir, "queries", cJSON_GetObjectItem(tok, "queries"), cJSON_GetObjectItem(set, "query_ids"), max_q,
                ti.fingerprint);
    check_store(dir, "passages", cJSON_GetObjectItem(tok, "passages"), cJSON_GetObjectItem(set, "passage_ids"), max_p,
                ti.fingerprint);
    DsIndex ix;
    int rc = ds_read_index(dir, &ix, &e);
    TU_CHECK(rc == 0, "index: %s", e.msg);
    if (rc == 0) {
        const cJSON *qr = cJSON_GetObjectItem(set, "qrels");
        int n = cJSON_GetArraySize(qr), bad = 0;
        TU_CHECK(ix.nqrels == n, "qrels: %lld, want %d", (long long)ix.nqrels, n);
        for (int i = 0; i < n && i < ix.nqrels; i++) {
            const cJSON *r = cJSON_GetArrayItem(qr, i);
            bad += ix.qrel_query[i] != cJSON_GetArrayItem(r, 0)->valueint ||
                   ix.qrel_passage[i] != cJSON_GetArrayItem(r, 1)->valueint ||
                   ix.qrel_grade[i] != cJSON_GetArrayItem(r, 2)->valueint;
        }
        TU_CHECK(bad == 0, "%d qrels differ", bad);
        TU_CHECK(ix.qrel_score == NULL && ix.nneg == 0 && ix.nlab == 0 && !strcmp(ix.source_format, "beir") &&
                     !strcmp(ix.tokenizer_fingerprint, ti.fingerprint) && ix.vocab_size == 30522 &&
                     ix.num_queries == cJSON_GetArraySize(cJSON_GetObjectItem(set, "queries")) && ix.num_passages == 50,
                 "index header: %s %s %lld q %lld p %lld", ix.source_format, ix.tokenizer_fingerprint,
                 (long long)ix.vocab_size, (long long)ix.num_queries, (long long)ix.num_passages);
        ds_index_free(&ix);
    }
    tok_free(t);
    cJSON_Delete(tok);
    cJSON_Delete(set);
}

static int same_files(const char *a, const char *b) {
    XrErr e;
    size_t na, nb;
    char *x = xr_read_file(a, &na, &e), *y = xr_read_file(b, &nb, &e);
    int eq = x && y && na == nb && !memcmp(x, y, na);
    free(x), free(y);
    return eq;
}

/* Every file of a equals the same-named file of b, and they hold the same names. */
static int same_dirs(const char *a, const char *b, int *nfiles) {
    DIR *d = opendir(a);
    if (!d) return 0;
    struct dirent *de;
    int ok = 1, n = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *pa = xr_path_join(a, de->d_name), *pb = xr_path_join(b, de->d_name);
        if (!same_files(pa, pb)) {
            fprintf(stderr, "%s and %s differ\n", pa, pb);
            ok = 0;
        }
        n++;
        free(pa), free(pb);
    }
    closedir(d);
    d = opendir(b);
    int m = 0;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') m++;
    if (d) closedir(d);
    *nfiles = n;
    return ok && n == m;
}

static int count_files(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) n += !strncmp(de->d_name, prefix, strlen(prefix));
    if (d) closedir(d);
    return n;
}

/* Copy a flat directory. */
static int copy_dir(const char *src, const char *dst) {
    if (mkdir(dst, 0755) != 0) return -1;
    DIR *d = opendir(src);
    struct dirent *de;
    int rc = d ? 0 : -1;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *a = xr_path_join(src, de->d_name), *b = xr_path_join(dst, de->d_name);
        XrErr e;
        size_t n;
        char *data = xr_read_file(a, &n, &e);
        FILE *f = data ? fopen(b, "wb") : NULL;
        if (!f || fwrite(data, 1, n, f) != n) rc = -1;
        if (f) fclose(f);
        free(data), free(a), free(b);
    }
    if (d) closedir(d);
    return rc;
}

/* Overwrite element i of an integer dataset in place and seal the file again. */
static int patch(const char *dir, const char *file, const char *dset, hsize_t i, long long v) {
    char *p = xr_path_join(dir, file);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, dset, H5P_DEFAULT) : -1;
    hid_t fs = d >= 0 ? H5Dget_space(d) : -1;
    hsize_t one = 1;
    hid_t ms = H5Screate_simple(1, &one, NULL);
    int rc = fs >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, &i, NULL, &one, NULL) >= 0 &&
                     H5Dwrite(d, H5T_NATIVE_LLONG, ms, fs, H5P_DEFAULT, &v) >= 0
                 ? 0
                 : -1;
    H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    XrErr e = {{0}};
    /* sealed again, as a writer bug would leave it: the checks inspect runs after the checksum must find it */
    if (rc == 0 && h5_seal(p, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        rc = -1;
    }
    free(p);
    if (rc) fprintf(stderr, "cannot patch %s/%s %s\n", dir, file, dset);
    return rc;
}

/* Damaged copies of a good dataset (tokenized from the BEIR fixture with several passage shards). */
static int make_bad(const char *src, const char *out) {
    struct {
        const char *name, *file, *dset;
        hsize_t i;
        long long v;
    } cases[] = {
        {"dangling_qrels", "index.h5", "qrels/passage", 0, 1000000},
        {"token_out_of_vocab", "passages-00000.h5", "passages/tokens", 5, 40000},
        {"offsets_backwards", "passages-00000.h5", "passages/offsets", 3, 0},
        {"shard_table", "index.h5", "passages/shard_row_offsets", 1, 3},
    };
    if (mkdir(out, 0755) != 0 && !xr_file_exists(out)) return 1;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *d = xr_path_join(out, cases[k].name);
        if (copy_dir(src, d) || patch(d, cases[k].file, cases[k].dset, cases[k].i, cases[k].v)) return 1;
        free(d);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--make-bad")) return make_bad(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "--check")) {
        check_dir(argv[2], 0, 0);
        return tu_finish("test_dataset --check");
    }
    if (argc == 5 && !strcmp(argv[1], "--check")) {
        check_dir(argv[2], atoll(argv[3]), atoll(argv[4]));
        return tu_finish("test_dataset --check");
    }
    char root[] = "/tmp/xr_test_dataset_XXXXXX";
    if (!mkdtemp(root)) return 1;
    char out1[300], out2[300], out3[300];
    snprintf(out1, sizeof out1, "%s/t3", root);
    snprintf(out2, sizeof out2, "%s/t1", root);
    snprintf(out3, sizeof out3, "%s/cut", root);
    XrErr e = {{0}};
    Tokenizer *t = tok_load(tu_path("fixtures/tok/bert"), &e);
    TU_CHECK(t != NULL, "tokenizer: %s", e.msg);
    if (!t) return tu_finish("test_dataset");
    char beir_dir[600]; /* tu_path's buffers rotate: keep a copy */
    snprintf(beir_dir, sizeof beir_dir, "%s", tu_path("fixtures/h5/beir"));
    const char *in[1] = {beir_dir};
    TrOptions to = {0};
    TextSet ts;
    int rc = tr_read(in, 1, &to, &ts, &e);
    TU_CHECK(rc == 0, "read beir: %s", e.msg);
    if (rc) return tu_finish("test_dataset");

    /* 3 threads, 4 KiB shards -> several passage shards */
    DsOptions o = {.shard_bytes = 4096, .threads = 3};
    DsReport rep;
    rc = ds_build(&ts, t, &o, out1, &rep, &e);
    TU_CHECK(rc == 0, "build: %s", e.msg);
    TU_CHECK(rep.shards[1] >= 3 && rep.shards[0] == 1 && count_files(out1, "passages-") == rep.shards[1],
             "shards: %d queries, %d passages", rep.shards[0], rep.shards[1]);
    check_dir(out1, 0, 0);
    /* 1 thread: the same bytes, file by file */
    o.threads = 1;
    rc = ds_build(&ts, t, &o, out2, &rep, &e);
    int nf = 0;
    TU_CHECK(rc == 0 && same_dirs(out1, out2, &nf) && nf == rep.shards[0] + rep.shards[1] + 1,
             "1 vs 3 threads: outputs differ (%d files)", nf);

    /* truncation at a cap */
    o = (DsOptions){.max_query_tokens = 5, .max_passage_tokens = 16, .threads = 2};
    rc = ds_build(&ts, t, &o, out3, &rep, &e);
    TU_CHECK(rc == 0 && rep.truncated[1] > 0 && rep.truncated[0] > 0, "cut: %s (%lld %lld)", e.msg,
             (long long)rep.truncated[0], (long long)rep.truncated[1]);
    check_dir(out3, 5, 16);

    /* an existing output: refused, replaced with overwrite, never a directory that is not a dataset */
    rc = ds_build(&ts, t, &o, out3, &rep, &e);
    TU_CHECK(rc < 0 && strstr(e.msg, "exists (use --overwrite"), "existing output: %s", e.msg);
    o = (DsOptions){.overwrite = 1};
    rc = ds_build(&ts, t, &o, out3, &rep, &e);
    TU_CHECK(rc == 0, "overwrite: %s", e.msg);
    check_dir(out3, 0, 0);
    char other[300];
    snprintf(other, sizeof other, "%s/notours", root);
    mkdir(other, 0755);
    char keep[320];
    snprintf(keep, sizeof keep, "%s/precious.txt", other);
    FILE *f = fopen(keep, "w");
    fputs("x", f);
    fclose(f);
    rc = ds_build(&ts, t, &o, other, &rep, &e);
    TU_CHECK(rc < 0 && strstr(e.msg, "not an xrank dataset") && xr_file_exists(keep), "non-dataset dir: %s", e.msg);
    rc = ds_build(&ts, t, &o, "/tmp/xr_no_such_parent_dir/out", &rep, &e);
    TU_CHECK(rc < 0 && strstr(e.msg, "cannot create"), "missing parent: %s", e.msg);
    TU_CHECK(count_files(root, "t3.tmp") + count_files(root, "cut.") == 0, "temporary directories left behind");
    textset_free(&ts);

    /* FlagEmbedding: scores and negatives go to the index */
    const char *fin[1] = {tu_path("fixtures/h5/flag.jsonl.gz")};
    rc = tr_read(fin, 1, &to, &ts, &e);
    char out4[300];
    snprintf(out4, sizeof out4, "%s/flag", root);
    o = (DsOptions){0};
    if (rc == 0) rc = ds_build(&ts, t, &o, out4, &rep, &e);
    TU_CHECK(rc == 0, "flag: %s", e.msg);
    DsIndex ix;
    rc = rc ? rc : ds_read_index(out4, &ix, &e);
    TU_CHECK(rc == 0 && ix.nqrels == ts.nqrels && ix.nneg == ts.nneg && ix.qrel_score && ix.neg_score &&
                 !strcmp(ix.source_format, "flagembedding") && ix.num_queries == ts.queries.n,
             "flag index: %s", e.msg);
    if (rc == 0) {
        int bad = 0;
        for (int64_t i = 0; i < ix.nneg; i++)
            bad += ix.neg_passage[i] != ts.neg_passage[i] ||
                   !(ix.neg_score[i] == ts.neg_score[i] || (isnan(ix.neg_score[i]) && isnan(ts.neg_score[i])));
        for (int64_t i = 0; i < ix.nqrels; i++)
            bad += ix.qrel_passage[i] != ts.qrel_passage[i] ||
                   !(ix.qrel_score[i] == ts.qrel_score[i] || (isnan(ix.qrel_score[i]) && isnan(ts.qrel_score[i])));
        TU_CHECK(bad == 0, "flag index: %d entries differ", bad);
        ds_index_free(&ix);
    }
    textset_free(&ts);

    /* shard plan: data-only cuts, never empty shards */
    int64_t lens[6] = {10, 0, 300, 5, 5, 1000}, *off = NULL;
    int ns = ds_plan_shards(lens, 6, NULL, 100, &off);
    /* costs 4*len + 8 + 1 digit: 49, 9, 1209, 29, 29, 4009 */
    int64_t want[] = {0, 2, 3, 5, 6};
    TU_CHECK(ns == 4 && !memcmp(off, want, sizeof want), "plan: %d shards [%lld %lld %lld %lld %lld]", ns,
             (long long)off[0], (long long)off[1], (long long)off[2], (long long)off[3], (long long)off[4]);
    free(off);
    ns = ds_plan_shards(lens, 0, NULL, 100, &off);
    TU_CHECK(ns == 1 && off[0] == 0 && off[1] == 0, "empty plan: %d", ns);
    free(off);

    /* XLM-R SentencePiece: every stored row is the tokenizer's own encoding of its text */
    Tokenizer *x = tok_load(tu_path("fixtures/tok/xlmr"), &e);
    TU_CHECK(x != NULL, "xlmr tokenizer: %s", e.msg);
    rc = x ? tr_read(in, 1, &to, &ts, &e) : -1;
    char out5[300];
    snprintf(out5, sizeof out5, "%s/xlmr", root);
    o = (DsOptions){.shard_bytes = 3000, .threads = 2};
    if (rc == 0) rc = ds_build(&ts, x, &o, out5, &rep, &e);
    TU_CHECK(rc == 0 && rep.shards[1] > 1, "xlmr build: %s", e.msg);
    const TextList *tl[2] = {&ts.queries, &ts.passages};
    const char *names[2] = {"queries", "passages"};
    for (int k = 0; rc == 0 && k < 2; k++) {
        TokenStore *st = h5store_open(out5, names[k], &e);
        TokBatch all = {0};
        int bad = st && h5store_load(st, &all, &e) == 0 ? 0 : -1;
        int32_t *ids = NULL;
        size_t cap = 0;
        for (int64_t i = 0; bad >= 0 && i < tl[k]->n; i++) {
            size_t len;
            const char *text = textlist_get(tl[k], i, &len);
            int m = tok_encode(x, text, len, &ids, &cap);
            bad += m != all.offsets[i + 1] - all.offsets[i] || memcmp(ids, all.tokens + all.offsets[i], 4 * (size_t)m);
        }
        TU_CHECK(bad == 0 && all.n == tl[k]->n, "xlmr %s: %d rows differ from tok_encode (%s)", names[k], bad,
                 bad < 0 ? e.msg : "");
        TU_CHECK(st && !strcmp(h5store_tokenizer_kind(st), "sentencepiece"), "xlmr kind %s",
                 st ? h5store_tokenizer_kind(st) : "");
        free(ids);
        tokbatch_free(&all);
        h5store_close(st);
    }
    if (rc == 0) textset_free(&ts);
    if (x) tok_free(x);

    /* rank slices tile the rows in order for any rank count */
    rc = tr_read(in, 1, &to, &ts, &e);
    for (int p = 1; p <= 7 && rc == 0; p++) {
        int64_t prev = 0, lo, hi;
        int ok = 1;
        for (int r = 0; r < p; r++) {
            ds_slice(&ts.passages, r, p, &lo, &hi);
            ok &= lo == prev && hi >= lo;
            prev = hi;
        }
        TU_CHECK(ok && prev == ts.passages.n, "slices for %d ranks do not tile [0, %lld)", p, (long long)ts.passages.n);
    }
    if (rc == 0) textset_free(&ts);
    tok_free(t);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (getenv("XR_TEST_KEEP"))
        printf("kept %s\n", root);
    else if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return tu_finish("test_dataset");
}
