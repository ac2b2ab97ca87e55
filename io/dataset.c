/* dataset.c: from a parsed TextSet to an xrank dataset directory: byte-balanced slices, threaded
 * tokenization, the data-only shard plan, shard and index.h5 writers, the atomic output directory
 * (temp name, rename, guarded --overwrite), and the index reader the later stages use. */
#define _POSIX_C_SOURCE 200809L
#include "dataset.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5_internal.h"
#include "h5store.h"
#include "xr_fs.h"
#include "xr_tmpclean.h"

#ifdef _OPENMP
#define DS_OMP(x) _Pragma(#x)
#else
#define DS_OMP(x)
#endif

void ds_tok_info(const Tokenizer *t, DsTokInfo *ti) {
    memset(ti, 0, sizeof *ti);
    snprintf(ti->kind, sizeof ti->kind, "%s", tok_kind(t) == TOK_WORDPIECE ? "wordpiece" : "sentencepiece");
    snprintf(ti->fingerprint, sizeof ti->fingerprint, "%016llx", (unsigned long long)tok_fingerprint(t));
    ti->vocab_size = tok_vocab_size(t);
}

/* First row of part r of p over rows [lo, hi) with the text bytes split evenly. */
static int64_t byte_bound(const TextList *l, int64_t lo, int64_t hi, int r, int p) {
    if (r <= 0) return lo;
    if (r >= p) return hi;
    int64_t b0 = l->start[lo], total = l->start[hi] - b0;
    int64_t target = b0 + (int64_t)((double)total * r / p);
    int64_t a = lo, z = hi; /* smallest row i in [lo, hi] with start[i] >= target */
    while (a < z) {
        int64_t m = a + (z - a) / 2;
        if (l->start[m] >= target)
            z = m;
        else
            a = m + 1;
    }
    return a;
}

void ds_slice(const TextList *texts, int rank, int size, int64_t *lo, int64_t *hi) {
    if (texts->n == 0) {
        *lo = *hi = 0;
        return;
    }
    *lo = byte_bound(texts, 0, texts->n, rank, size);
    *hi = byte_bound(texts, 0, texts->n, rank + 1, size);
}

int32_t *ds_tokenize(const Tokenizer *t, const TextList *texts, int64_t lo, int64_t hi, int64_t max_tokens,
                     int threads, int64_t *lens, int64_t *ntok, int64_t *ntrunc) {
    int nb = threads < 1 ? 1 : threads;
    if (hi - lo < nb) nb = hi - lo > 0 ? (int)(hi - lo) : 1;
    int32_t **buf = xr_calloc((size_t)nb, sizeof(int32_t *));
    int64_t *bn = xr_calloc((size_t)nb, sizeof(int64_t)), *btr = xr_calloc((size_t)nb, sizeof(int64_t));
    /* one contiguous block of rows per thread, so the concatenation is in row order */
    DS_OMP(omp parallel for num_threads(nb) schedule(static, 1))
    for (int b = 0; b < nb; b++) {
        int64_t r0 = byte_bound(texts, lo, hi, b, nb), r1 = byte_bound(texts, lo, hi, b + 1, nb);
        size_t bcap = 0, scap = 0;
        int32_t *scratch = NULL, *out = NULL;
        for (int64_t r = r0; r < r1; r++) {
            size_t len;
            const char *s = textlist_get(texts, r, &len);
            int n = tok_encode(t, s, len, &scratch, &scap);
            assert(n >= 0);
            int64_t k = max_tokens > 0 && n > max_tokens ? max_tokens : n;
            if (k < n) btr[b]++;
            if ((size_t)(bn[b] + k) > bcap) {
                bcap = (size_t)(bn[b] + k) * 2 + 1024;
                out = xr_realloc(out, sizeof(int32_t) * bcap);
            }
            memcpy(out + bn[b], scratch, sizeof(int32_t) * (size_t)k);
            bn[b] += k;
            lens[r - lo] = k;
        }
        free(scratch);
        buf[b] = out;
    }
    int64_t total = 0, tr = 0;
    for (int b = 0; b < nb; b++) total += bn[b], tr += btr[b];
    int32_t *all = xr_malloc(sizeof(int32_t) * (size_t)(total ? total : 1));
    int64_t k = 0;
    for (int b = 0; b < nb; b++) {
        if (bn[b]) memcpy(all + k, buf[b], sizeof(int32_t) * (size_t)bn[b]);
        k += bn[b];
        free(buf[b]);
    }
    free(buf), free(bn), free(btr);
    *ntok = total;
    *ntrunc = tr;
    return all;
}

static int64_t digits(int64_t i) {
    int64_t d = 1;
    while (i >= 10) i /= 10, d++;
    return d;
}

int ds_plan_shards(const int64_t *lens, int64_t n, const TextList *ids, int64_t shard_bytes, int64_t **row_off) {
    if (shard_bytes <= 0) shard_bytes = DS_DEFAULT_SHARD_BYTES;
    int cap = 16, ns = 0;
    int64_t *off = xr_malloc(sizeof(int64_t) * (size_t)cap);
    off[0] = 0;
    int64_t cur = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t idlen = 0;
        if (ids && ids->n)
            textlist_get(ids, i, &idlen);
        else
            idlen = (size_t)digits(i);
        int64_t cost = 4 * lens[i] + 8 + (int64_t)idlen;
        if (i > off[ns] && cur + cost > shard_bytes) {
            if (ns + 2 >= cap) off = xr_realloc(off, sizeof(int64_t) * (size_t)(cap *= 2));
            off[++ns] = i;
            cur = 0;
        }
        cur += cost;
    }
    off[++ns] = n;
    *row_off = off;
    return ns;
}

void ds_shard_name(char *buf, size_t cap, const char *store, int k) { snprintf(buf, cap, "%s-%05d.h5", store, k); }

int ds_write_shard(const char *dir, const DsStore *s, int k, const int32_t *tokens, const int64_t *lens, XrErr *e) {
    int64_t r0 = s->row_off[k], n = s->row_off[k + 1] - r0;
    int64_t *off = xr_malloc(sizeof(int64_t) * (size_t)(n + 1));
    off[0] = 0;
    for (int64_t i = 0; i < n; i++) off[i + 1] = off[i] + lens[i];
    const char **ids = NULL;
    if (s->ids && s->ids->n) {
        ids = xr_malloc(sizeof(char *) * (size_t)(n ? n : 1));
        for (int64_t i = 0; i < n; i++) ids[i] = textlist_get(s->ids, r0 + i, NULL);
    }
    char name[64];
    ds_shard_name(name, sizeof name, s->name, k);
    char *path = xr_path_join(dir, name);
    H5ShardMeta m = {.name = s->name,
                     .tokenizer_kind = s->tok->kind,
                     .tokenizer_fingerprint = s->tok->fingerprint,
                     .vocab_size = s->tok->vocab_size,
                     .max_tokens = s->max_tokens,
                     .shard_index = k,
                     .num_shards = s->nshards,
                     .row_start = r0,
                     .num_rows_total = s->row_off[s->nshards],
                     .sources = (const char *const *)s->ts->sources,
                     .nsources = s->ts->nsources};
    int rc = h5store_write_shard(path, &m, tokens, off, n, ids, e);
    free(path);
    free(ids);
    free(off);
    return rc;
}

/* A group of index triples: /<group>/query, /<group>/passage, the column c3 (always written, also when
 * empty) and the optional column c4 (written when d4 is given). */
static int write_triples(hid_t f, const char *group, int64_t n, const int64_t *q, const int64_t *p, const char *c3,
                         hid_t t3, const void *d3, const char *c4, hid_t t4, const void *d4, const char *path,
                         XrErr *e) {
    assert(n == 0 || (q && p && d3));
    hid_t gcpl = h5_gcpl();
    hid_t g = gcpl >= 0 ? H5Gcreate2(f, group, H5P_DEFAULT, gcpl, H5P_DEFAULT) : -1;
    if (gcpl >= 0) H5Pclose(gcpl);
    if (g < 0) return h5_errf(e, "%s: cannot create group /%s", path, group);
    int rc = 0;
    if (h5_attr_write_i64(g, "count", n, path, e) < 0 || h5_write_1d(g, "query", H5T_NATIVE_INT64, q, n, path, e) < 0 ||
        h5_write_1d(g, "passage", H5T_NATIVE_INT64, p, n, path, e) < 0 ||
        h5_write_1d(g, c3, t3, d3, n, path, e) < 0 ||
        (c4 && d4 && h5_write_1d(g, c4, t4, d4, n, path, e) < 0))
        rc = -1;
    if (H5Gclose(g) < 0 && rc == 0) rc = h5_errf(e, "%s: cannot close /%s", path, group);
    return rc;
}

/* Negatives have no required third column: query, passage and the optional score. */
static int write_negatives(hid_t f, const TextSet *ts, const char *path, XrErr *e) {
    hid_t gcpl = h5_gcpl();
    hid_t g = gcpl >= 0 ? H5Gcreate2(f, "negatives", H5P_DEFAULT, gcpl, H5P_DEFAULT) : -1;
    if (gcpl >= 0) H5Pclose(gcpl);
    if (g < 0) return h5_errf(e, "%s: cannot create group /negatives", path);
    int rc = 0;
    if (h5_attr_write_i64(g, "count", ts->nneg, path, e) < 0 ||
        h5_write_1d(g, "query", H5T_NATIVE_INT64, ts->neg_query, ts->nneg, path, e) < 0 ||
        h5_write_1d(g, "passage", H5T_NATIVE_INT64, ts->neg_passage, ts->nneg, path, e) < 0 ||
        (ts->neg_score && h5_write_1d(g, "score", H5T_NATIVE_FLOAT, ts->neg_score, ts->nneg, path, e) < 0))
        rc = -1;
    if (H5Gclose(g) < 0 && rc == 0) rc = h5_errf(e, "%s: cannot close /negatives", path);
    return rc;
}

static int write_store_entry(hid_t f, const DsStore *s, int64_t ntok, int64_t ntrunc, const char *path, XrErr *e) {
    char **names = xr_malloc(sizeof(char *) * (size_t)s->nshards);
    for (int k = 0; k < s->nshards; k++) {
        names[k] = xr_malloc(64);
        ds_shard_name(names[k], 64, s->name, k);
    }
    int rc = h5store_index_write_store(f, s->name, (const char *const *)names, s->row_off, s->nshards, ntok, path, e);
    for (int k = 0; k < s->nshards; k++) free(names[k]);
    free(names);
    if (rc < 0) return -1;
    hid_t g = H5Gopen2(f, s->name, H5P_DEFAULT);
    if (g < 0) return h5_errf(e, "%s: cannot open /%s", path, s->name);
    rc = h5_attr_write_i64(g, "max_tokens", s->max_tokens, path, e) < 0 ||
                 h5_attr_write_i64(g, "num_truncated", ntrunc, path, e) < 0
             ? -1
             : 0;
    H5Gclose(g);
    return rc;
}

int ds_write_index(const char *dir, const TextSet *ts, const DsStore *queries, const DsStore *passages,
                   const int64_t *ntok, const int64_t *ntrunc, XrErr *e) {
    char *path = xr_path_join(dir, H5STORE_INDEX_FILE);
    char *tmp = xr_malloc(strlen(path) + 8);
    sprintf(tmp, "%s.tmp", path);
    const DsTokInfo *ti = queries->tok;
    hid_t f = h5_create(tmp, e);
    int ok = f >= 0 && h5_attr_write_str(f, "xrank_format", H5STORE_INDEX_FORMAT, path, e) == 0 &&
             h5_attr_write_i64(f, "format_version", H5STORE_FORMAT_VERSION, path, e) == 0 &&
             h5_attr_write_str(f, "tokenizer_kind", ti->kind, path, e) == 0 &&
             h5_attr_write_str(f, "tokenizer_fingerprint", ti->fingerprint, path, e) == 0 &&
             h5_attr_write_i64(f, "vocab_size", ti->vocab_size, path, e) == 0 &&
             h5_attr_write_str(f, "source_format", tr_format_name(ts->format), path, e) == 0 &&
             h5_attr_write_strs(f, "sources", (const char *const *)ts->sources, ts->nsources, path, e) == 0 &&
             write_store_entry(f, queries, ntok[0], ntrunc[0], path, e) == 0 &&
             write_store_entry(f, passages, ntok[1], ntrunc[1], path, e) == 0 &&
             write_triples(f, "qrels", ts->nqrels, ts->qrel_query, ts->qrel_passage, "grade", H5T_NATIVE_INT32,
                           ts->qrel_grade, "score", H5T_NATIVE_FLOAT, ts->qrel_score, path, e) == 0 &&
             write_negatives(f, ts, path, e) == 0 &&
             write_triples(f, "labels", ts->nlab, ts->lab_query, ts->lab_passage, "label", H5T_NATIVE_FLOAT,
                           ts->lab_label, NULL, 0, NULL, path, e) == 0;
    int rc = f >= 0 ? h5_commit(f, tmp, path, ok, e) : -1;
    free(tmp);
    free(path);
    return rc;
}

/* ---------------------------------------------------------------- output directory */

int ds_output_check(const char *out, int overwrite, XrErr *e) {
    if (!xr_file_exists(out)) return 0;
    if (!overwrite) return xr_errf(e, "output %s exists (use --overwrite to replace it)", out);
    if (!xr_is_dir(out)) return xr_errf(e, "output %s exists and is not a directory: not replacing it", out);
    char *ix = xr_path_join(out, H5STORE_INDEX_FILE);
    int ours = xr_file_exists(ix) || xr_dir_is_empty(out);
    free(ix);
    if (!ours)
        return xr_errf(e, "output %s is a directory but not an xrank dataset (no %s): not replacing it", out,
                       H5STORE_INDEX_FILE);
    return 0;
}

char *ds_output_begin(const char *out, XrErr *e) {
    char *tmp = xr_tmpclean_name(out);
    xr_tmpclean_add(tmp); /* before it exists: a Ctrl-C from here on removes it */
    if (mkdir(tmp, 0755) != 0) {
        xr_errf(e, "cannot create %s: %s", tmp, strerror(errno));
        xr_tmpclean_forget(tmp);
        free(tmp);
        return NULL;
    }
    return tmp;
}

void ds_output_abort(const char *tmpdir) {
    if (!tmpdir) return;
    xr_remove_flat_dir(tmpdir);
    xr_tmpclean_forget(tmpdir);
}

int ds_output_commit(const char *tmpdir, const char *out, int overwrite, XrErr *e) {
    if (ds_output_check(out, overwrite, e) < 0) return -1;
    return xr_tmpclean_commit_dir(tmpdir, out, e);
}

/* ---------------------------------------------------------------- one process */

int ds_build(const TextSet *ts, const Tokenizer *t, const DsOptions *o, const char *out, DsReport *rep, XrErr *e) {
    if (ds_output_check(out, o->overwrite, e) < 0) return -1;
    char *tmp = ds_output_begin(out, e);
    if (!tmp) return -1;
    DsTokInfo ti;
    ds_tok_info(t, &ti);
    DsStore st[2] = {{.name = "queries", .tok = &ti, .max_tokens = o->max_query_tokens, .ts = ts, .ids = &ts->query_ids},
                     {.name = "passages", .tok = &ti, .max_tokens = o->max_passage_tokens, .ts = ts,
                      .ids = &ts->passage_ids}};
    const TextList *texts[2] = {&ts->queries, &ts->passages};
    int64_t ntok[2] = {0, 0}, ntrunc[2] = {0, 0};
    int64_t *row_off[2] = {NULL, NULL};
    int rc = 0;
    if (rep) memset(rep, 0, sizeof *rep);
    for (int s = 0; s < 2 && rc == 0; s++) {
        int64_t n = texts[s]->n;
        int64_t *lens = xr_malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
        int32_t *tok = ds_tokenize(t, texts[s], 0, n, st[s].max_tokens, o->threads, lens, &ntok[s], &ntrunc[s]);
        st[s].nshards = ds_plan_shards(lens, n, st[s].ids, o->shard_bytes, &row_off[s]);
        st[s].row_off = row_off[s];
        int64_t t0 = 0;
        for (int k = 0; k < st[s].nshards && rc == 0; k++) {
            rc = ds_write_shard(tmp, &st[s], k, tok + t0, lens + row_off[s][k], e);
            for (int64_t r = row_off[s][k]; r < row_off[s][k + 1]; r++) t0 += lens[r];
        }
        if (rep) {
            rep->rows[s] = n, rep->tokens[s] = ntok[s], rep->truncated[s] = ntrunc[s], rep->shards[s] = st[s].nshards;
            rep->text_bytes += n ? (double)(texts[s]->start[n] - n) : 0;
        }
        free(tok);
        free(lens);
    }
    if (rc == 0) rc = ds_write_index(tmp, ts, &st[0], &st[1], ntok, ntrunc, e);
    if (rc == 0) rc = ds_output_commit(tmp, out, o->overwrite, e);
    if (rc < 0) ds_output_abort(tmp);
    free(tmp);
    free(row_off[0]);
    free(row_off[1]);
    return rc;
}

/* ---------------------------------------------------------------- index reader */

void ds_index_free(DsIndex *ix) {
    free(ix->qrel_query), free(ix->qrel_passage), free(ix->qrel_grade), free(ix->qrel_score);
    free(ix->neg_query), free(ix->neg_passage), free(ix->neg_score);
    free(ix->lab_query), free(ix->lab_passage), free(ix->lab_label);
    memset(ix, 0, sizeof *ix);
}

/* /<group>/<name> read as type; absent optional columns give NULL without error. The length must be n. */
static void *read_col(hid_t f, const char *group, const char *name, hid_t type, size_t elem, int64_t n, int optional,
                      const char *path, int *bad, XrErr *e) {
    char full[128];
    snprintf(full, sizeof full, "%s/%s", group, name);
    if (*bad) return NULL;
    if (!h5_exists(f, full)) {
        if (!optional) *bad = xr_errf(e, "%s: missing dataset /%s", path, full) < 0;
        return NULL;
    }
    int64_t got;
    void *d = h5_read_1d(f, full, type, elem, &got, path, e);
    if (!d) {
        *bad = 1;
        return NULL;
    }
    if (got != n) {
        *bad = xr_errf(e, "%s: /%s has %lld entries, /%s/query has %lld", path, full, (long long)got, group,
                       (long long)n) < 0;
        free(d);
        return NULL;
    }
    return d;
}

/* The index's numbers come from the file: mine, train and eval size tables by num_rows and index them with the
 * qrels', negatives' and labels' rows, so each is checked before use. num_rows must be the row count of the
 * store's shard table (the shards are checked against that table when opened), every row index must lie in
 * [0, num_rows) of its store, and the three tables must be sorted by query as the writer sorts them. */
static int ds_check_index(hid_t gq, hid_t gp, const DsIndex *ix, const char *file, XrErr *e) {
    const struct {
        hid_t g;
        const char *name;
        int64_t rows;
    } st[2] = {{gq, "queries", ix->num_queries}, {gp, "passages", ix->num_passages}};
    for (int k = 0; k < 2; k++) {
        int64_t n = 0;
        int64_t *off = h5_read_1d(st[k].g, "shard_row_offsets", H5T_NATIVE_INT64, sizeof(int64_t), &n, file, e);
        if (!off) return -1;
        int64_t total = n > 0 ? off[n - 1] : -1;
        free(off);
        if (st[k].rows < 0 || st[k].rows != total)
            return xr_errf(e, "%s: /%s num_rows is %lld but its shard table /%s/shard_row_offsets ends at %lld: "
                              "damaged file",
                           file, st[k].name, (long long)st[k].rows, st[k].name, (long long)total);
    }
    const struct {
        const char *name;
        int64_t n;
        const int64_t *q, *p;
    } t[3] = {{"qrels", ix->nqrels, ix->qrel_query, ix->qrel_passage},
              {"negatives", ix->nneg, ix->neg_query, ix->neg_passage},
              {"labels", ix->nlab, ix->lab_query, ix->lab_passage}};
    for (int k = 0; k < 3; k++)
        for (int64_t i = 0; i < t[k].n; i++) {
            if (t[k].q[i] < 0 || t[k].q[i] >= ix->num_queries)
                return xr_errf(e, "%s: /%s/query[%lld] = %lld is not a query row (the store has %lld): damaged file",
                               file, t[k].name, (long long)i, (long long)t[k].q[i], (long long)ix->num_queries);
            if (t[k].p[i] < 0 || t[k].p[i] >= ix->num_passages)
                return xr_errf(e,
                               "%s: /%s/passage[%lld] = %lld is not a passage row (the store has %lld): damaged file",
                               file, t[k].name, (long long)i, (long long)t[k].p[i], (long long)ix->num_passages);
            if (i > 0 && t[k].q[i] < t[k].q[i - 1])
                return xr_errf(e, "%s: /%s/query is not sorted by query at entry %lld (%lld after %lld): damaged file",
                               file, t[k].name, (long long)i, (long long)t[k].q[i], (long long)t[k].q[i - 1]);
        }
    return 0;
}

static int ds_read_index_opt(const char *path, DsIndex *ix, int check, XrErr *e) {
    h5_quiet();
    memset(ix, 0, sizeof *ix);
    size_t pl = strlen(path);
    char *file = pl > 3 && !strcmp(path + pl - 3, ".h5") ? xr_strdup(path) : xr_path_join(path, H5STORE_INDEX_FILE);
    hid_t f = h5_open_read(file, e);
    int bad = 0;
    char fmt[64];
    if (f < 0) {
        free(file);
        return -1;
    }
    if (h5_attr_read_str(f, "xrank_format", fmt, sizeof fmt, file, e) < 0 || strcmp(fmt, H5STORE_INDEX_FORMAT))
        bad = xr_errf(e, "%s: not an xrank dataset index (root attribute xrank_format should be \"%s\")", file,
                      H5STORE_INDEX_FORMAT) < 0;
    hid_t gq = -1, gp = -1;
    if (!bad &&
        (h5_attr_read_i64(f, "format_version", &ix->format_version, file, e) < 0 ||
         h5_attr_read_str(f, "tokenizer_kind", ix->tokenizer_kind, sizeof ix->tokenizer_kind, file, e) < 0 ||
         h5_attr_read_str(f, "tokenizer_fingerprint", ix->tokenizer_fingerprint, sizeof ix->tokenizer_fingerprint,
                          file, e) < 0 ||
         h5_attr_read_str(f, "source_format", ix->source_format, sizeof ix->source_format, file, e) < 0 ||
         h5_attr_read_i64(f, "vocab_size", &ix->vocab_size, file, e) < 0))
        bad = 1;
    if (!bad && ix->format_version > H5STORE_FORMAT_VERSION)
        bad = xr_errf(e, "%s: format_version %lld is newer than this xrank reads (%d)", file,
                      (long long)ix->format_version, H5STORE_FORMAT_VERSION) < 0;
    if (!bad && (!h5_exists(f, "queries") || !h5_exists(f, "passages")))
        bad = xr_errf(e, "%s: missing /queries or /passages", file) < 0;
    if (!bad) {
        gq = H5Gopen2(f, "queries", H5P_DEFAULT);
        gp = H5Gopen2(f, "passages", H5P_DEFAULT);
        if (h5_attr_read_i64(gq, "num_rows", &ix->num_queries, file, e) < 0 ||
            h5_attr_read_i64(gp, "num_rows", &ix->num_passages, file, e) < 0)
            bad = 1;
    }
    const char *groups[3] = {"qrels", "negatives", "labels"};
    int64_t *counts[3] = {&ix->nqrels, &ix->nneg, &ix->nlab};
    for (int k = 0; k < 3 && !bad; k++) {
        char full[64];
        snprintf(full, sizeof full, "%s/query", groups[k]);
        if (!h5_exists(f, full)) {
            bad = xr_errf(e, "%s: missing dataset /%s", file, full) < 0;
            break;
        }
        hid_t d = H5Dopen2(f, full, H5P_DEFAULT);
        if (d < 0 || h5_extent_1d(d, counts[k], file, full, e) < 0) {
            if (d < 0) h5_errf(e, "%s: cannot open /%s", file, full);
            bad = 1;
        }
        if (d >= 0) H5Dclose(d);
    }
    ix->qrel_query = read_col(f, "qrels", "query", H5T_NATIVE_INT64, 8, ix->nqrels, 0, file, &bad, e);
    ix->qrel_passage = read_col(f, "qrels", "passage", H5T_NATIVE_INT64, 8, ix->nqrels, 0, file, &bad, e);
    ix->qrel_grade = read_col(f, "qrels", "grade", H5T_NATIVE_INT32, 4, ix->nqrels, 0, file, &bad, e);
    ix->qrel_score = read_col(f, "qrels", "score", H5T_NATIVE_FLOAT, 4, ix->nqrels, 1, file, &bad, e);
    ix->neg_query = read_col(f, "negatives", "query", H5T_NATIVE_INT64, 8, ix->nneg, 0, file, &bad, e);
    ix->neg_passage = read_col(f, "negatives", "passage", H5T_NATIVE_INT64, 8, ix->nneg, 0, file, &bad, e);
    ix->neg_score = read_col(f, "negatives", "score", H5T_NATIVE_FLOAT, 4, ix->nneg, 1, file, &bad, e);
    ix->lab_query = read_col(f, "labels", "query", H5T_NATIVE_INT64, 8, ix->nlab, 0, file, &bad, e);
    ix->lab_passage = read_col(f, "labels", "passage", H5T_NATIVE_INT64, 8, ix->nlab, 0, file, &bad, e);
    ix->lab_label = read_col(f, "labels", "label", H5T_NATIVE_FLOAT, 4, ix->nlab, 0, file, &bad, e);
    if (!bad && check) bad = ds_check_index(gq, gp, ix, file, e) < 0;
    if (gq >= 0) H5Gclose(gq);
    if (gp >= 0) H5Gclose(gp);
    H5Fclose(f);
    free(file);
    if (bad) {
        ds_index_free(ix);
        return -1;
    }
    return 0;
}

int ds_read_index(const char *path, DsIndex *ix, XrErr *e) { return ds_read_index_opt(path, ix, 1, e); }

int ds_read_index_unchecked(const char *path, DsIndex *ix, XrErr *e) { return ds_read_index_opt(path, ix, 0, e); }
