/* groups.c: the training-group file (see groups.h): writer through the shared HDF5 helpers of h5store.h plus
 * 2-D chunked datasets, and a reader that trusts nothing it reads. */
#include "groups.h"

#include <assert.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "h5_internal.h"
#include "h5store.h"
#include "xr_tmpclean.h"

void groups_free(GroupSet *g) {
    free(g->query);
    free(g->positive);
    free(g->negatives);
    free(g->scores);
    free(g->ce_scores);
    free(g->meta_json);
    memset(g, 0, sizeof *g);
}

int groups_row_negatives(const GroupSet *g, int64_t r) {
    int c = 0;
    while (c < g->k && g->negatives[r * g->k + c] >= 0) c++;
    return c;
}

int groups_validate(const GroupSet *g, const char *where, XrErr *e) {
    if (g->n < 0 || g->k < 1) return xr_errf(e, "%s: %lld rows of %d negatives: need n >= 0, k >= 1", where,
                                             (long long)g->n, g->k);
    if (g->num_queries < 0 || g->num_passages < 0)
        return xr_errf(e, "%s: negative store sizes (%lld queries, %lld passages)", where, (long long)g->num_queries,
                       (long long)g->num_passages);
    for (int64_t r = 0; r < g->n; r++) {
        if (g->query[r] < 0 || g->query[r] >= g->num_queries)
            return xr_errf(e, "%s: row %lld: query %lld is outside the query store (%lld rows)", where, (long long)r,
                           (long long)g->query[r], (long long)g->num_queries);
        if (g->positive[r] < 0 || g->positive[r] >= g->num_passages)
            return xr_errf(e, "%s: row %lld: positive %lld is outside the passage store (%lld rows)", where,
                           (long long)r, (long long)g->positive[r], (long long)g->num_passages);
        int empty = 0;
        for (int j = 0; j < g->k; j++) {
            int64_t p = g->negatives[r * g->k + j];
            if (p == -1) {
                empty = 1;
                continue;
            }
            if (p < 0 || p >= g->num_passages)
                return xr_errf(e, "%s: row %lld: negative %d = %lld is outside the passage store (%lld rows)", where,
                               (long long)r, j, (long long)p, (long long)g->num_passages);
            if (empty)
                return xr_errf(e, "%s: row %lld: negative slot %d is filled after an empty slot", where, (long long)r,
                               j);
        }
    }
    return 0;
}

/* A 2-D chunked, shuffled, deflated dataset [n, m] with timestamps off, written from a row-major buffer. */
static int groups_write_2d(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, const void *data, int64_t n,
                           int m, const char *path, XrErr *e) {
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)m}, maxd[2] = {H5S_UNLIMITED, (hsize_t)m};
    size_t row_bytes = H5Tget_size(mem_type) * (size_t)m;
    hsize_t rows = (hsize_t)((1 << 20) / (row_bytes ? row_bytes : 1));
    if (rows < 1) rows = 1;
    if ((hsize_t)n < rows) rows = n > 0 ? (hsize_t)n : 1;
    hsize_t chunk[2] = {rows, (hsize_t)m};
    hid_t sp = H5Screate_simple(2, dims, maxd), p = H5Pcreate(H5P_DATASET_CREATE), d = -1;
    int ok = sp >= 0 && p >= 0 && H5Pset_chunk(p, 2, chunk) >= 0 && H5Pset_shuffle(p) >= 0 &&
             H5Pset_deflate(p, H5STORE_DEFLATE_LEVEL) >= 0 && H5Pset_obj_track_times(p, 0) >= 0;
    if (ok) d = H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, p, H5P_DEFAULT);
    ok = ok && d >= 0 && (n == 0 || H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    int rc = ok ? 0 : h5_errf(e, "%s: cannot write /%s [%lld, %d]", path, name, (long long)n, m);
    if (d >= 0) H5Dclose(d);
    if (p >= 0) H5Pclose(p);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

int groups_write(const char *path, const GroupSet *g, XrErr *e) {
    if (groups_validate(g, path, e)) return -1;
    size_t tl = strlen(path) + 8;
    char *tmp = xr_malloc(tl);
    snprintf(tmp, tl, "%s.tmp", path);
    xr_tmpclean_add(tmp); /* before it exists: SIGINT / SIGTERM / SIGHUP from here on remove it */
    hid_t f = (hid_t)h5_create(tmp, e);
    if (f < 0) {
        xr_tmpclean_forget(tmp);
        free(tmp);
        return -1;
    }
    xr_tmpclean_test_pause("groups", tmp);
    int m = 1 + g->k;
    const char *meta = g->meta_json ? g->meta_json : "{}";
    int ok = h5_attr_write_str(f, "xrank_format", GROUPS_FORMAT, tmp, e) == 0 &&
             h5_attr_write_i64(f, "format_version", GROUPS_FORMAT_VERSION, tmp, e) == 0 &&
             h5_attr_write_i64(f, "num_queries", g->num_queries, tmp, e) == 0 &&
             h5_attr_write_i64(f, "num_passages", g->num_passages, tmp, e) == 0 &&
             h5_attr_write_i64(f, "num_negatives", g->k, tmp, e) == 0 &&
             h5_attr_write_i64(f, "num_rows", g->n, tmp, e) == 0 &&
             h5_attr_write_str(f, "tokenizer_fingerprint", g->tokenizer_fingerprint, tmp, e) == 0 &&
             h5_attr_write_str(f, "dataset", g->dataset, tmp, e) == 0 &&
             h5_write_strings(f, "meta", &meta, 1, tmp, e) == 0 &&
             h5_write_1d(f, "query", H5T_NATIVE_INT64, g->query, g->n, tmp, e) == 0 &&
             h5_write_1d(f, "positive", H5T_NATIVE_INT64, g->positive, g->n, tmp, e) == 0 &&
             groups_write_2d(f, "negatives", H5T_STD_I64LE, H5T_NATIVE_INT64, g->negatives, g->n, g->k, tmp, e) == 0 &&
             groups_write_2d(f, "scores", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, g->scores, g->n, m, tmp, e) == 0 &&
             (!g->ce_scores ||
              groups_write_2d(f, "ce_scores", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, g->ce_scores, g->n, m, tmp, e) == 0);
    int rc = h5_commit(f, tmp, path, ok, ok ? e : NULL);
    xr_tmpclean_forget(tmp);
    free(tmp);
    return rc;
}

/* Read a whole 2-D dataset [n, m] of the given memory type; checks the shape. */
static void *groups_read_2d(hid_t f, const char *name, hid_t mem_type, int64_t n, int m, const char *path, XrErr *e) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) {
        h5_errf(e, "%s: missing dataset /%s (not an xrank group file?)", path, name);
        return NULL;
    }
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    void *buf = NULL;
    if (nd != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        h5_errf(e, "%s: /%s must be 2-dimensional", path, name);
    } else if ((int64_t)dims[0] != n || (int64_t)dims[1] != m) {
        xr_errf(e, "%s: /%s has shape [%llu, %llu], expected [%lld, %d]", path, name, (unsigned long long)dims[0],
                (unsigned long long)dims[1], (long long)n, m);
    } else if (dims[1] > 0 && dims[0] > UINT64_MAX / dims[1]) {
        xr_errf(e, "%s: /%s has shape [%llu, %llu]: damaged file", path, name, (unsigned long long)dims[0],
                (unsigned long long)dims[1]);
    } else if (h5_check_stored(d, (uint64_t)dims[0] * (uint64_t)dims[1], path, name, e) == 0) {
        buf = xr_malloc(H5Tget_size(mem_type) * (size_t)(n > 0 ? n : 1) * (size_t)m);
        if (n > 0 && H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            h5_errf(e, "%s: cannot read /%s", path, name);
            free(buf);
            buf = NULL;
        }
    }
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    return buf;
}

int groups_read(const char *path, GroupSet *g, XrErr *e) {
    memset(g, 0, sizeof *g);
    h5_quiet();
    char fmt[64] = "";
    int kind = h5_file_format(path, fmt, sizeof fmt, e);
    if (kind == -2 || kind == -3) return -1;
    if (kind < 0) return xr_errf(e, "%s: cannot read", path);
    if (kind == 0) return xr_errf(e, "%s: not an HDF5 file", path);
    if (strcmp(fmt, GROUPS_FORMAT))
        return xr_errf(e, "%s: not an xrank group file (xrank_format \"%s\", expected \"%s\")", path, fmt,
                       GROUPS_FORMAT);
    hid_t f = h5_open_read(path, e); /* verified already by h5_file_format: not read again */
    if (f < 0) return -1;
    int64_t ver = 0, k = 0, n = 0, nq = 0;
    int ok = h5_attr_read_i64(f, "format_version", &ver, path, e) == 0;
    if (ok && ver != GROUPS_FORMAT_VERSION)
        ok = !xr_errf(e, "%s: group file format version %lld, this xrank reads version %d", path, (long long)ver,
                      GROUPS_FORMAT_VERSION);
    ok = ok && h5_attr_read_i64(f, "num_queries", &g->num_queries, path, e) == 0 &&
         h5_attr_read_i64(f, "num_passages", &g->num_passages, path, e) == 0 &&
         h5_attr_read_i64(f, "num_negatives", &k, path, e) == 0 &&
         h5_attr_read_str(f, "tokenizer_fingerprint", g->tokenizer_fingerprint, sizeof g->tokenizer_fingerprint, path,
                          e) == 0 &&
         h5_attr_read_str(f, "dataset", g->dataset, sizeof g->dataset, path, e) == 0;
    if (ok && (k < 1 || k > 1000000)) ok = !xr_errf(e, "%s: num_negatives %lld out of range", path, (long long)k);
    if (ok) {
        g->k = (int)k;
        int64_t nm = 0;
        char **meta = h5_exists(f, "meta") ? h5_read_strings(f, "meta", &nm, path, NULL) : NULL;
        if (meta && nm == 1) g->meta_json = xr_strdup(meta[0]);
        free(meta);
        g->query = h5_read_1d(f, "query", H5T_NATIVE_INT64, sizeof(int64_t), &n, path, e);
        ok = g->query != NULL;
    }
    if (ok) {
        g->n = n;
        g->positive = h5_read_1d(f, "positive", H5T_NATIVE_INT64, sizeof(int64_t), &nq, path, e);
        ok = g->positive != NULL;
        if (ok && nq != n)
            ok = !xr_errf(e, "%s: /positive has %lld rows but /query has %lld", path, (long long)nq, (long long)n);
    }
    ok = ok && (g->negatives = groups_read_2d(f, "negatives", H5T_NATIVE_INT64, n, g->k, path, e)) != NULL;
    ok = ok && (g->scores = groups_read_2d(f, "scores", H5T_NATIVE_FLOAT, n, g->k + 1, path, e)) != NULL;
    if (ok && h5_exists(f, "ce_scores"))
        ok = (g->ce_scores = groups_read_2d(f, "ce_scores", H5T_NATIVE_FLOAT, n, g->k + 1, path, e)) != NULL;
    H5Fclose(f);
    if (ok && groups_validate(g, path, e)) ok = 0;
    if (!ok) {
        groups_free(g);
        return -1;
    }
    return 0;
}

int groups_check_dataset(const GroupSet *g, const char *group_path, int64_t num_queries, int64_t num_passages,
                         const char *tokenizer_fingerprint, XrErr *e) {
    if (strcmp(g->tokenizer_fingerprint, tokenizer_fingerprint))
        return xr_errf(e, "%s: mined from stores of tokenizer %s, but the dataset was tokenized with %s", group_path,
                       g->tokenizer_fingerprint, tokenizer_fingerprint);
    if (g->num_queries != num_queries || g->num_passages != num_passages)
        return xr_errf(e,
                       "%s: mined from a dataset of %lld queries and %lld passages (%s), but this one has %lld and "
                       "%lld: its indices would point at other rows",
                       group_path, (long long)g->num_queries, (long long)g->num_passages, g->dataset,
                       (long long)num_queries, (long long)num_passages);
    return 0;
}
