/* h5inspect.c: reading a shard or an index without trusting it, for `xrank inspect`: every attribute, offset,
 * id and token of a shard checked (problems counted and the first few described), and an index's shard table. */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5_internal.h"
#include "h5store.h"

static void scan_problem(ShardScan *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void scan_problem(ShardScan *s, const char *fmt, ...) {
    if (s->nproblems < (int)(sizeof s->problems / sizeof s->problems[0])) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->problems[s->nproblems], sizeof s->problems[0], fmt, ap);
        va_end(ap);
    }
    s->nproblems++;
}

int h5store_scan_shard(const char *path, const char *name, ShardScan *s, XrErr *e) {
    h5_quiet();
    memset(s, 0, sizeof *s);
    s->tok_min = INT64_MAX;
    s->tok_max = INT64_MIN;
    hid_t f = h5_open_read(path, e), g = -1, d = -1;
    if (f < 0) return -1;
    int rc = -1;
    XrErr ae;
    if (!h5_exists(f, name)) {
        xr_errf(e, "%s: has no /%s group", path, name);
        goto done;
    }
    g = H5Gopen2(f, name, H5P_DEFAULT);
    struct {
        const char *attr;
        int64_t *v;
    } ints[] = {{"row_start", &s->row_start},   {"shard_index", &s->shard_index}, {"num_shards", &s->num_shards},
                {"num_rows_total", &s->num_rows_total}, {"vocab_size", &s->vocab_size}, {"max_tokens", &s->max_tokens}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (h5_attr_read_i64(g, ints[i].attr, ints[i].v, path, &ae) < 0) scan_problem(s, "%s", ae.msg);
    if (h5_attr_read_str(g, "tokenizer_kind", s->kind, sizeof s->kind, path, &ae) < 0) scan_problem(s, "%s", ae.msg);
    if (h5_attr_read_str(g, "tokenizer_fingerprint", s->fingerprint, sizeof s->fingerprint, path, &ae) < 0)
        scan_problem(s, "%s", ae.msg);
    int64_t noff = 0;
    int64_t *off = h5_read_1d(g, "offsets", H5T_NATIVE_INT64, sizeof(int64_t), &noff, path, e);
    if (!off) goto done;
    d = H5Dopen2(g, "tokens", H5P_DEFAULT);
    if (d < 0 || h5_extent_1d(d, &s->ntok, path, "tokens", e) < 0) {
        if (d < 0) h5_errf(e, "%s: missing dataset /%s/tokens", path, name);
        free(off);
        goto done;
    }
    s->rows = noff > 0 ? noff - 1 : 0;
    if (noff < 1) scan_problem(s, "/%s/offsets is empty (it holds rows + 1 entries)", name);
    if (noff >= 1 && off[0] != 0) scan_problem(s, "/%s/offsets[0] = %lld, should be 0", name, (long long)off[0]);
    s->lens = xr_calloc((size_t)(s->rows ? s->rows : 1), sizeof(int64_t));
    for (int64_t i = 0; i < s->rows; i++) {
        if (off[i + 1] < off[i]) {
            if (s->offsets_backwards++ == 0)
                scan_problem(s, "/%s/offsets not monotonic at row %lld: %lld then %lld", name, (long long)i,
                             (long long)off[i], (long long)off[i + 1]);
        } else {
            s->lens[i] = off[i + 1] - off[i];
        }
    }
    if (noff >= 1 && off[s->rows] != s->ntok)
        scan_problem(s, "/%s/offsets end at %lld but /%s/tokens holds %lld tokens", name, (long long)off[s->rows], name,
                     (long long)s->ntok);
    free(off);
    hid_t ids = H5Dopen2(g, "ids", H5P_DEFAULT);
    if (ids < 0 || h5_extent_1d(ids, &s->nids, path, "ids", &ae) < 0)
        scan_problem(s, "/%s/ids missing or unreadable", name);
    else if (s->nids != s->rows)
        scan_problem(s, "/%s/ids has %lld entries for %lld rows", name, (long long)s->nids, (long long)s->rows);
    if (ids >= 0) H5Dclose(ids);
    /* every token, in pieces that keep memory flat */
    const int64_t piece = 1 << 20;
    int32_t *buf = xr_malloc(sizeof(int32_t) * (size_t)piece);
    for (int64_t a = 0; a < s->ntok; a += piece) {
        int64_t b = a + piece < s->ntok ? a + piece : s->ntok;
        if (h5_read_tokens(d, a, b, buf, path, e) < 0) {
            free(buf);
            goto done;
        }
        for (int64_t k = 0; k < b - a; k++) {
            int64_t v = buf[k];
            if (v < s->tok_min) s->tok_min = v;
            if (v > s->tok_max) s->tok_max = v;
            if (v < 0 || (s->vocab_size > 0 && v >= s->vocab_size)) {
                if (s->tok_out_of_range++ == 0)
                    scan_problem(s, "token id %lld at /%s/tokens[%lld] is outside the vocabulary [0, %lld)",
                                 (long long)v, name, (long long)(a + k), (long long)s->vocab_size);
            }
        }
    }
    free(buf);
    rc = 0;
done:
    if (d >= 0) H5Dclose(d);
    if (g >= 0) H5Gclose(g);
    H5Fclose(f);
    if (rc < 0) {
        free(s->lens);
        s->lens = NULL;
    }
    return rc;
}

int h5store_index_shards(const char *index_path, const char *name, char ***files, int64_t **row_off, int *ns,
                         int64_t *num_tokens, XrErr *e) {
    h5_quiet();
    hid_t f = h5_open_read(index_path, e);
    if (f < 0) return -1;
    int rc = -1;
    hid_t g = -1;
    *files = NULL;
    *row_off = NULL;
    if (!h5_exists(f, name)) {
        xr_errf(e, "%s: has no /%s group", index_path, name);
        goto done;
    }
    g = H5Gopen2(f, name, H5P_DEFAULT);
    int64_t nf, no;
    if (h5_attr_read_i64(g, "num_tokens", num_tokens, index_path, e) < 0) goto done;
    if (!(*files = h5_read_strings(g, "shard_files", &nf, index_path, e))) goto done;
    if (!(*row_off = h5_read_1d(g, "shard_row_offsets", H5T_NATIVE_INT64, sizeof(int64_t), &no, index_path, e)))
        goto done;
    if (no != nf + 1) {
        xr_errf(e, "%s: /%s/shard_row_offsets has %lld entries for %lld shard files (should be one more)", index_path,
                name, (long long)no, (long long)nf);
        goto done;
    }
    if (nf > INT_MAX) { /* shard numbers are ints */
        xr_errf(e, "%s: /%s/shard_files lists %lld shards, more than %d: damaged file", index_path, name,
                (long long)nf, INT_MAX);
        goto done;
    }
    *ns = (int)nf;
    rc = 0;
done:
    if (rc < 0) {
        free(*files);
        free(*row_off);
        *files = NULL;
        *row_off = NULL;
    }
    if (g >= 0) H5Gclose(g);
    H5Fclose(f);
    return rc;
}

