/* h5store.c: the HDF5 token store writer (one shard per file, temp name + rename) and the batched reader
 * (offsets held in memory, token rows read as hyperslab unions: one H5Dread per shard per batch). The generic
 * HDF5 helpers are in h5util.c, the checks of `xrank inspect` in h5inspect.c. */
#define _POSIX_C_SOURCE 200809L
#include "h5store.h"

#include <assert.h>
#include <hdf5.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "h5_internal.h"


/* Read side chunk cache: 1 MiB chunks, so 16 of them; HDF5's default (1 MiB) would hold a single chunk and
 * decompress it again for every row that straddles into the next. */
#define H5STORE_CACHE_BYTES (16u << 20)
#define H5STORE_CACHE_SLOTS 1021
/* HDF5 1.10 handles a union of many hyperslabs in time quadratic in their number (10,000 runs: 0.2 s, 50,000:
 * 5 s); reads of more runs are split into this many per H5Dread, which keeps the cost linear. */
#define H5STORE_MAX_RUNS 1024

/* ---------------------------------------------------------------- writer */

static int shard_write_attrs(hid_t g, const H5ShardMeta *m, const char *file, XrErr *e) {
    if (h5_attr_write_str(g, "tokenizer_kind", m->tokenizer_kind ? m->tokenizer_kind : "", file, e) < 0 ||
        h5_attr_write_str(g, "tokenizer_fingerprint", m->tokenizer_fingerprint ? m->tokenizer_fingerprint : "", file,
                          e) < 0 ||
        h5_attr_write_i64(g, "vocab_size", m->vocab_size, file, e) < 0 ||
        h5_attr_write_i64(g, "max_tokens", m->max_tokens, file, e) < 0 ||
        h5_attr_write_i64(g, "shard_index", m->shard_index, file, e) < 0 ||
        h5_attr_write_i64(g, "num_shards", m->num_shards, file, e) < 0 ||
        h5_attr_write_i64(g, "row_start", m->row_start, file, e) < 0 ||
        h5_attr_write_i64(g, "num_rows_total", m->num_rows_total, file, e) < 0 ||
        h5_attr_write_strs(g, "sources", m->sources, m->nsources, file, e) < 0)
        return -1;
    return 0;
}

int h5store_write_shard(const char *path, const H5ShardMeta *m, const int32_t *tokens, const int64_t *offsets,
                        int64_t n, const char *const *ids, XrErr *e) {
    assert(n >= 0 && offsets && m && m->name);
    char *tmp = xr_malloc(strlen(path) + 8);
    sprintf(tmp, "%s.tmp", path);
    int64_t base = offsets[0], ntok = offsets[n] - base;
    int64_t *off = xr_malloc(sizeof(int64_t) * (size_t)(n + 1));
    for (int64_t i = 0; i <= n; i++) {
        off[i] = offsets[i] - base;
        assert(i == 0 || off[i] >= off[i - 1]);
    }
    char **gen = NULL;
    if (!ids) { /* decimal global row numbers */
        size_t *lens = xr_malloc(sizeof(size_t) * (size_t)(n > 0 ? n : 1));
        char(*num)[24] = xr_malloc(sizeof *num * (size_t)(n > 0 ? n : 1));
        const char **src = xr_malloc(sizeof(char *) * (size_t)(n > 0 ? n : 1));
        for (int64_t i = 0; i < n; i++) {
            lens[i] = (size_t)snprintf(num[i], sizeof num[i], "%lld", (long long)(m->row_start + i));
            src[i] = num[i];
        }
        gen = h5_pack_strings(n, lens, src);
        free(lens), free(num), free(src);
        ids = (const char *const *)gen;
    }
    int ok = 0;
    hid_t g = -1, gcpl = h5_gcpl();
    hid_t f = h5_create(tmp, e);
    if (f < 0) goto done;
    if (gcpl < 0) {
        h5_errf(e, "%s: cannot set up group properties", path);
        goto done;
    }
    if (h5_attr_write_str(f, "xrank_format", H5STORE_SHARD_FORMAT, path, e) < 0 ||
        h5_attr_write_i64(f, "format_version", H5STORE_FORMAT_VERSION, path, e) < 0)
        goto done;
    g = H5Gcreate2(f, m->name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (g < 0) {
        h5_errf(e, "%s: cannot create group /%s", path, m->name);
        goto done;
    }
    if (shard_write_attrs(g, m, path, e) < 0 ||
        h5_write_1d(g, "tokens", H5T_NATIVE_INT32, tokens, ntok, path, e) < 0 ||
        h5_write_1d(g, "offsets", H5T_NATIVE_INT64, off, n + 1, path, e) < 0 ||
        h5_write_strings(g, "ids", ids, n, path, e) < 0)
        goto done;
    ok = 1;
done:
    if (g >= 0 && H5Gclose(g) < 0 && ok) {
        h5_errf(e, "%s: cannot close group", path);
        ok = 0;
    }
    if (gcpl >= 0) H5Pclose(gcpl);
    int rc = f >= 0 ? h5_commit(f, tmp, path, ok, e) : -1;
    free(gen);
    free(off);
    free(tmp);
    return rc;
}

int h5store_index_write_store(int64_t file, const char *name, const char *const *shard_files,
                              const int64_t *row_offsets, int nshards, int64_t num_tokens, const char *path,
                              XrErr *e) {
    hid_t gcpl = h5_gcpl();
    hid_t g = gcpl >= 0 ? H5Gcreate2(file, name, H5P_DEFAULT, gcpl, H5P_DEFAULT) : -1;
    if (gcpl >= 0) H5Pclose(gcpl);
    if (g < 0) return h5_errf(e, "%s: cannot create group /%s", path, name);
    int rc = 0;
    if (h5_attr_write_i64(g, "num_rows", row_offsets[nshards], path, e) < 0 ||
        h5_attr_write_i64(g, "num_tokens", num_tokens, path, e) < 0 ||
        h5_attr_write_i64(g, "num_shards", nshards, path, e) < 0 ||
        h5_write_strings(g, "shard_files", shard_files, nshards, path, e) < 0 ||
        h5_write_1d(g, "shard_row_offsets", H5T_NATIVE_INT64, row_offsets, nshards + 1, path, e) < 0)
        rc = -1;
    if (H5Gclose(g) < 0 && rc == 0) rc = h5_errf(e, "%s: cannot close group /%s", path, name);
    return rc;
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    char *path;
    hid_t file, group, tokens;
    int64_t row_start, rows, ntok;
    int64_t *off; /* [rows + 1], shard-local */
} Shard;

struct TokenStore {
    char *name;
    int ns;
    Shard *sh;
    int64_t rows, ntok;
    char kind[64], fingerprint[64];
    int64_t vocab, max_tokens;
};

void tokbatch_free(TokBatch *b) {
    free(b->offsets);
    free(b->tokens);
    memset(b, 0, sizeof *b);
}

static void batch_reserve(TokBatch *b, int64_t rows, int64_t tokens) {
    if ((size_t)rows + 1 > b->cap_rows) {
        b->cap_rows = (size_t)rows + 1;
        b->offsets = xr_realloc(b->offsets, sizeof(int64_t) * b->cap_rows);
    }
    if ((size_t)tokens > b->cap_tokens || !b->tokens) {
        b->cap_tokens = (size_t)tokens > b->cap_tokens ? (size_t)tokens : b->cap_tokens;
        b->tokens = xr_realloc(b->tokens, sizeof(int32_t) * (b->cap_tokens ? b->cap_tokens : 1));
    }
}

static void shard_close(Shard *s) {
    if (s->tokens >= 0) H5Dclose(s->tokens);
    if (s->group >= 0) H5Gclose(s->group);
    if (s->file >= 0) H5Fclose(s->file);
    free(s->off);
    free(s->path);
}

void h5store_close(TokenStore *s) {
    if (!s) return;
    for (int i = 0; i < s->ns; i++) shard_close(&s->sh[i]);
    free(s->sh);
    free(s->name);
    free(s);
}

/* Open one shard file, load and check its offsets; the store's tokenizer is taken from the first shard and
 * every later one must agree. */
static int shard_open(TokenStore *st, Shard *s, const char *path, XrErr *e) {
    memset(s, 0, sizeof *s);
    s->file = s->group = s->tokens = -1;
    s->path = xr_strdup(path);
    char fmt[64];
    s->file = h5_open_read(path, e);
    if (s->file < 0) return -1;
    if (h5_attr_read_str(s->file, "xrank_format", fmt, sizeof fmt, path, e) < 0 || strcmp(fmt, H5STORE_SHARD_FORMAT))
        return xr_errf(e, "%s: not an xrank token store shard (root attribute xrank_format should be \"%s\")", path,
                       H5STORE_SHARD_FORMAT);
    if (!h5_exists(s->file, st->name)) return xr_errf(e, "%s: has no /%s group", path, st->name);
    s->group = H5Gopen2(s->file, st->name, H5P_DEFAULT);
    if (s->group < 0) return h5_errf(e, "%s: cannot open /%s", path, st->name);
    char kind[64], fp[64];
    int64_t vocab, cap;
    if (h5_attr_read_str(s->group, "tokenizer_kind", kind, sizeof kind, path, e) < 0 ||
        h5_attr_read_str(s->group, "tokenizer_fingerprint", fp, sizeof fp, path, e) < 0 ||
        h5_attr_read_i64(s->group, "vocab_size", &vocab, path, e) < 0 ||
        h5_attr_read_i64(s->group, "max_tokens", &cap, path, e) < 0 ||
        h5_attr_read_i64(s->group, "row_start", &s->row_start, path, e) < 0)
        return -1;
    if (!st->kind[0]) {
        snprintf(st->kind, sizeof st->kind, "%s", kind);
        snprintf(st->fingerprint, sizeof st->fingerprint, "%s", fp);
        st->vocab = vocab;
        st->max_tokens = cap;
    } else if (strcmp(st->kind, kind) || strcmp(st->fingerprint, fp)) {
        return xr_errf(e, "%s: tokenizer %s %s differs from the other shards' %s %s", path, kind, fp, st->kind,
                       st->fingerprint);
    }
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0) H5Pset_chunk_cache(dapl, H5STORE_CACHE_SLOTS, H5STORE_CACHE_BYTES, 1.0);
    s->tokens = H5Dopen2(s->group, "tokens", dapl);
    if (dapl >= 0) H5Pclose(dapl);
    if (s->tokens < 0) return h5_errf(e, "%s: missing dataset /%s/tokens", path, st->name);
    if (h5_extent_1d(s->tokens, &s->ntok, path, "tokens", e) < 0) return -1;
    int64_t noff;
    s->off = h5_read_1d(s->group, "offsets", H5T_NATIVE_INT64, sizeof(int64_t), &noff, path, e);
    if (!s->off) return -1;
    if (noff < 1) return xr_errf(e, "%s: /%s/offsets is empty (it holds rows + 1 entries)", path, st->name);
    s->rows = noff - 1;
    if (s->off[0] != 0) return xr_errf(e, "%s: /%s/offsets[0] = %lld, should be 0", path, st->name, (long long)s->off[0]);
    for (int64_t i = 0; i < s->rows; i++)
        if (s->off[i + 1] < s->off[i])
            return xr_errf(e, "%s: /%s/offsets not monotonic at row %lld: %lld then %lld", path, st->name,
                           (long long)i, (long long)s->off[i], (long long)s->off[i + 1]);
    if (s->off[s->rows] != s->ntok)
        return xr_errf(e, "%s: /%s/offsets end at %lld but /%s/tokens holds %lld tokens", path, st->name,
                       (long long)s->off[s->rows], st->name, (long long)s->ntok);
    return 0;
}

TokenStore *h5store_open(const char *path, const char *name, XrErr *e) {
    h5_quiet();
    TokenStore *st = xr_calloc(1, sizeof *st);
    st->name = xr_strdup(name);
    char *file = NULL, *dir = NULL;
    char **shard_files = NULL;
    int64_t *row_off = NULL;
    hid_t f = -1, g = -1;
    int ok = 0;
    size_t pl = strlen(path);
    if (pl > 3 && !strcmp(path + pl - 3, ".h5")) {
        file = xr_strdup(path);
    } else {
        file = xr_path_join(path, H5STORE_INDEX_FILE);
    }
    char fmt[64];
    f = h5_open_read(file, e);
    if (f < 0) goto fail;
    if (h5_attr_read_str(f, "xrank_format", fmt, sizeof fmt, file, e) < 0) goto fail;
    if (!strcmp(fmt, H5STORE_SHARD_FORMAT)) {
        H5Fclose(f);
        f = -1;
        st->ns = 1;
        st->sh = xr_calloc(1, sizeof(Shard));
        if (shard_open(st, &st->sh[0], file, e) < 0) goto fail;
        st->sh[0].row_start = 0; /* a lone shard is a store of its own rows */
    } else if (!strcmp(fmt, H5STORE_INDEX_FORMAT)) {
        if (!h5_exists(f, name)) {
            xr_errf(e, "%s: has no /%s store", file, name);
            goto fail;
        }
        g = H5Gopen2(f, name, H5P_DEFAULT);
        int64_t nfiles, nrow_off;
        shard_files = h5_read_strings(g, "shard_files", &nfiles, file, e);
        if (!shard_files) goto fail;
        row_off = h5_read_1d(g, "shard_row_offsets", H5T_NATIVE_INT64, sizeof(int64_t), &nrow_off, file, e);
        if (!row_off) goto fail;
        if (nrow_off != nfiles + 1) {
            xr_errf(e, "%s: /%s/shard_row_offsets has %lld entries for %lld shard files (should be one more)", file,
                    name, (long long)nrow_off, (long long)nfiles);
            goto fail;
        }
        if (nfiles > INT_MAX) { /* shard numbers are ints */
            xr_errf(e, "%s: /%s/shard_files lists %lld shards, more than %d: damaged file", file, name,
                    (long long)nfiles, INT_MAX);
            goto fail;
        }
        char *fcopy = xr_strdup(file);
        dir = xr_strdup(dirname(fcopy));
        free(fcopy);
        st->sh = xr_calloc(nfiles > 0 ? (size_t)nfiles : 1, sizeof(Shard));
        for (int64_t i = 0; i < nfiles; i++) {
            char *sp = xr_path_join(dir, shard_files[i]);
            st->ns = (int)i + 1;
            int rc = shard_open(st, &st->sh[i], sp, e);
            free(sp);
            if (rc < 0) goto fail;
            Shard *s = &st->sh[i];
            if (s->row_start != row_off[i] || s->rows != row_off[i + 1] - row_off[i]) {
                xr_errf(e, "%s: holds rows [%lld, %lld) but %s lists [%lld, %lld)", s->path, (long long)s->row_start,
                        (long long)(s->row_start + s->rows), file, (long long)row_off[i], (long long)row_off[i + 1]);
                goto fail;
            }
        }
    } else {
        xr_errf(e, "%s: xrank_format \"%s\" is not a token store (expected %s or %s)", file, fmt,
                H5STORE_INDEX_FORMAT, H5STORE_SHARD_FORMAT);
        goto fail;
    }
    for (int i = 0; i < st->ns; i++) {
        st->rows += st->sh[i].rows;
        st->ntok += st->sh[i].ntok;
    }
    ok = 1;
fail:
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    free(shard_files);
    free(row_off);
    free(file);
    free(dir);
    if (!ok) {
        h5store_close(st);
        st = NULL;
    }
    return st;
}

int64_t h5store_rows(const TokenStore *s) { return s->rows; }
int64_t h5store_tokens(const TokenStore *s) { return s->ntok; }
int h5store_num_shards(const TokenStore *s) { return s->ns; }
const char *h5store_tokenizer_kind(const TokenStore *s) { return s->kind; }
const char *h5store_tokenizer_fingerprint(const TokenStore *s) { return s->fingerprint; }
int64_t h5store_vocab_size(const TokenStore *s) { return s->vocab; }
int64_t h5store_max_tokens(const TokenStore *s) { return s->max_tokens; }

/* Shard holding global row r (binary search on row_start). */
static int shard_of(const TokenStore *s, int64_t r) {
    int lo = 0, hi = s->ns - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->sh[mid].row_start <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

int64_t h5store_row_len(const TokenStore *s, int64_t row) {
    assert(row >= 0 && row < s->rows);
    const Shard *sh = &s->sh[shard_of(s, row)];
    int64_t k = row - sh->row_start;
    return sh->off[k + 1] - sh->off[k];
}

int h5_read_tokens(int64_t tokens, int64_t a, int64_t b, int32_t *dst, const char *file, XrErr *e) {
    if (b <= a) return 0;
    hsize_t start = (hsize_t)a, count = (hsize_t)(b - a);
    hid_t fsp = H5Dget_space(tokens), msp = H5Screate_simple(1, &count, NULL);
    int rc = 0;
    if (fsp < 0 || msp < 0 || H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
        H5Dread(tokens, H5T_NATIVE_INT32, msp, fsp, H5P_DEFAULT, dst) < 0)
        rc = h5_errf(e, "%s: cannot read tokens [%lld, %lld)", file, (long long)a, (long long)b);
    if (fsp >= 0) H5Sclose(fsp);
    if (msp >= 0) H5Sclose(msp);
    return rc;
}

int h5store_read_range(TokenStore *s, int64_t i, int64_t j, TokBatch *b, XrErr *e) {
    if (i < 0 || j < i || j > s->rows)
        return xr_errf(e, "rows [%lld, %lld) out of range: the store has %lld rows", (long long)i, (long long)j,
                       (long long)s->rows);
    int64_t n = j - i, ntok = 0;
    batch_reserve(b, n, 0);
    b->n = n;
    b->offsets[0] = 0;
    /* offsets first (from memory), so the token buffer is sized once */
    for (int64_t r = i; r < j;) {
        Shard *sh = &s->sh[shard_of(s, r)];
        int64_t lo = r - sh->row_start, hi = j - sh->row_start;
        if (hi > sh->rows) hi = sh->rows;
        for (int64_t k = lo; k < hi; k++) {
            ntok += sh->off[k + 1] - sh->off[k];
            b->offsets[r - i + (k - lo) + 1] = ntok;
        }
        r += hi - lo;
    }
    batch_reserve(b, n, ntok);
    for (int64_t r = i; r < j;) {
        Shard *sh = &s->sh[shard_of(s, r)];
        int64_t lo = r - sh->row_start, hi = j - sh->row_start;
        if (hi > sh->rows) hi = sh->rows;
        if (h5_read_tokens(sh->tokens, sh->off[lo], sh->off[hi], b->tokens + b->offsets[r - i], sh->path, e) < 0)
            return -1;
        r += hi - lo;
    }
    return 0;
}

int h5store_load(TokenStore *s, TokBatch *b, XrErr *e) { return h5store_read_range(s, 0, s->rows, b, e); }

typedef struct {
    int64_t row, pos;
} RowPos;

static int rowpos_cmp(const void *a, const void *b) {
    const RowPos *x = a, *y = b;
    return x->row < y->row ? -1 : x->row > y->row ? 1 : (x->pos > y->pos) - (x->pos < y->pos);
}

int h5store_read_rows(TokenStore *s, const int64_t *rows, int64_t n, TokBatch *b, XrErr *e) {
    for (int64_t k = 0; k < n; k++)
        if (rows[k] < 0 || rows[k] >= s->rows)
            return xr_errf(e, "row %lld (entry %lld of the list) out of range: the store has %lld rows",
                           (long long)rows[k], (long long)k, (long long)s->rows);
    RowPos *rp = xr_malloc(sizeof(RowPos) * (size_t)(n > 0 ? n : 1));
    for (int64_t k = 0; k < n; k++) rp[k] = (RowPos){rows[k], k};
    qsort(rp, (size_t)n, sizeof *rp, rowpos_cmp);
    /* Unique rows in file order with their start in the staging buffer; requested offsets from lengths. */
    int64_t *ustart = xr_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1)); /* staging start of rp[k]'s row */
    batch_reserve(b, n, 0);
    b->n = n;
    int64_t staged = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t len = h5store_row_len(s, rp[k].row);
        if (k > 0 && rp[k].row == rp[k - 1].row) {
            ustart[k] = ustart[k - 1];
        } else {
            ustart[k] = staged;
            staged += len;
        }
        b->offsets[rp[k].pos + 1] = len;
    }
    b->offsets[0] = 0;
    for (int64_t k = 0; k < n; k++) b->offsets[k + 1] += b->offsets[k];
    int32_t *stage = xr_malloc(sizeof(int32_t) * (size_t)(staged > 0 ? staged : 1));
    int rc = 0;
    /* One read per shard (per H5STORE_MAX_RUNS runs of consecutive rows): a union of hyperslabs. */
    int64_t k = 0, spos = 0;
    while (k < n && rc == 0) {
        Shard *sh = &s->sh[shard_of(s, rp[k].row)];
        int64_t shard_end = sh->row_start + sh->rows;
        hid_t fsp = H5Dget_space(sh->tokens);
        int nsel = 0;
        int64_t cnt = 0;
        while (k < n && rp[k].row < shard_end && nsel < H5STORE_MAX_RUNS) {
            int64_t a = rp[k].row, z = a; /* run [a, z] of consecutive rows */
            while (k + 1 < n && (rp[k + 1].row == z || rp[k + 1].row == z + 1) && rp[k + 1].row < shard_end) z = rp[++k].row;
            k++;
            hsize_t start = (hsize_t)sh->off[a - sh->row_start], count = (hsize_t)(sh->off[z + 1 - sh->row_start] - start);
            if (!count) continue;
            if (H5Sselect_hyperslab(fsp, nsel ? H5S_SELECT_OR : H5S_SELECT_SET, &start, NULL, &count, NULL) < 0) {
                rc = h5_errf(e, "%s: cannot select token rows", sh->path);
                break;
            }
            nsel++;
            cnt += (int64_t)count;
        }
        if (rc == 0 && nsel) {
            hsize_t mc = (hsize_t)cnt;
            hid_t msp = H5Screate_simple(1, &mc, NULL);
            if (msp < 0 || H5Dread(sh->tokens, H5T_NATIVE_INT32, msp, fsp, H5P_DEFAULT, stage + spos) < 0)
                rc = h5_errf(e, "%s: cannot read %d runs of token rows", sh->path, nsel);
            if (msp >= 0) H5Sclose(msp);
            spos += cnt;
        }
        H5Sclose(fsp);
    }
    if (rc == 0) {
        assert(spos == staged);
        batch_reserve(b, n, b->offsets[n]);
        for (int64_t q = 0; q < n; q++) {
            int64_t len = b->offsets[rp[q].pos + 1] - b->offsets[rp[q].pos];
            memcpy(b->tokens + b->offsets[rp[q].pos], stage + ustart[q], sizeof(int32_t) * (size_t)len);
        }
    }
    free(stage);
    free(ustart);
    free(rp);
    return rc;
}

char **h5store_read_ids(TokenStore *s, int64_t i, int64_t j, XrErr *e) {
    if (i < 0 || j < i || j > s->rows) {
        xr_errf(e, "ids [%lld, %lld) out of range: the store has %lld rows", (long long)i, (long long)j,
                (long long)s->rows);
        return NULL;
    }
    int64_t n = j - i;
    char ***parts = xr_calloc((size_t)s->ns, sizeof(char **));
    size_t *lens = xr_malloc(sizeof(size_t) * (size_t)(n > 0 ? n : 1));
    const char **src = xr_malloc(sizeof(char *) * (size_t)(n > 0 ? n : 1));
    char **out = NULL;
    int64_t r = i;
    int ok = 1;
    while (r < j) {
        int si = shard_of(s, r);
        Shard *sh = &s->sh[si];
        int64_t lo = r - sh->row_start, hi = j - sh->row_start;
        if (hi > sh->rows) hi = sh->rows;
        hid_t d = H5Dopen2(sh->group, "ids", H5P_DEFAULT);
        if (d < 0) {
            h5_errf(e, "%s: missing dataset /%s/ids", sh->path, s->name);
            ok = 0;
            break;
        }
        int64_t nids = -1;
        int bad = h5_extent_1d(d, &nids, sh->path, "ids", e) < 0;
        if (!bad && nids != sh->rows)
            bad = xr_errf(e, "%s: /%s/ids has %lld entries for %lld rows", sh->path, s->name, (long long)nids,
                          (long long)sh->rows) < 0;
        if (bad) {
            H5Dclose(d);
            ok = 0;
            break;
        }
        parts[si] = h5_read_strings_sel(d, lo, hi - lo, sh->path, "ids", e);
        H5Dclose(d);
        if (!parts[si]) {
            ok = 0;
            break;
        }
        for (int64_t k = lo; k < hi; k++) {
            src[r - i + k - lo] = parts[si][k - lo];
            lens[r - i + k - lo] = strlen(parts[si][k - lo]);
        }
        r += hi - lo;
    }
    if (ok) out = h5_pack_strings(n, lens, src);
    for (int q = 0; q < s->ns; q++) free(parts[q]);
    free(parts);
    free(lens);
    free(src);
    return out;
}

