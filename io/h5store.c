/* h5store.c: the HDF5 token store writer (one shard per file, temp name + rename) and the batched reader
 * (offsets held in memory, token rows read as hyperslab unions: one H5Dread per shard per batch), plus the
 * small typed dataset/attribute helpers the dataset index and `xrank inspect` share. */
#define _POSIX_C_SOURCE 200809L
#include "h5store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read side chunk cache: 1 MiB chunks, so 16 of them; HDF5's default (1 MiB) would hold a single chunk and
 * decompress it again for every row that straddles into the next. */
#define H5STORE_CACHE_BYTES (16u << 20)
#define H5STORE_CACHE_SLOTS 1021
/* HDF5 1.10 handles a union of many hyperslabs in time quadratic in their number (10,000 runs: 0.2 s, 50,000:
 * 5 s); reads of more runs are split into this many per H5Dread, which keeps the cost linear. */
#define H5STORE_MAX_RUNS 1024

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static herr_t h5_walk_first(unsigned n, const H5E_error2_t *err, void *data) {
    char *buf = data;
    if (n == 0 && err->desc) snprintf(buf, 256, "%s", err->desc);
    return 0;
}

int h5_errf(XrErr *e, const char *fmt, ...) {
    char detail[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk_first, detail);
    H5Eclear2(H5E_DEFAULT);
    if (!e) return -1;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (detail[0] && k >= 0 && (size_t)k < sizeof e->msg)
        snprintf(e->msg + k, sizeof e->msg - k, " (HDF5: %s)", detail);
    return -1;
}

int64_t h5_gcpl(void) {
    hid_t p = H5Pcreate(H5P_GROUP_CREATE);
    if (p >= 0) H5Pset_obj_track_times(p, 0);
    return p;
}

/* The little-endian file type for a native memory type: files read the same on any machine. */
static hid_t h5_file_type(hid_t mem) {
    if (H5Tequal(mem, H5T_NATIVE_INT32) > 0) return H5T_STD_I32LE;
    if (H5Tequal(mem, H5T_NATIVE_INT64) > 0) return H5T_STD_I64LE;
    if (H5Tequal(mem, H5T_NATIVE_FLOAT) > 0) return H5T_IEEE_F32LE;
    if (H5Tequal(mem, H5T_NATIVE_DOUBLE) > 0) return H5T_IEEE_F64LE;
    if (H5Tequal(mem, H5T_NATIVE_UINT8) > 0) return H5T_STD_U8LE;
    assert(!"h5_file_type: unsupported memory type");
    return -1;
}

/* Chunked (unlimited max size, so empty datasets are legal) + shuffle + deflate, no timestamps. */
static hid_t h5_dcpl(int64_t n, size_t elem) {
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    if (p < 0) return -1;
    hsize_t chunk = H5STORE_CHUNK_BYTES / (elem ? elem : 1);
    if (chunk < 1) chunk = 1;
    if ((hsize_t)n < chunk) chunk = n > 0 ? (hsize_t)n : 1;
    if (H5Pset_chunk(p, 1, &chunk) < 0 || H5Pset_shuffle(p) < 0 || H5Pset_deflate(p, H5STORE_DEFLATE_LEVEL) < 0 ||
        H5Pset_obj_track_times(p, 0) < 0) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

static int h5_write_typed(hid_t loc, const char *name, hid_t ftype, hid_t mtype, size_t elem, const void *data,
                          int64_t n, const char *file, XrErr *e) {
    hsize_t dims = (hsize_t)n, maxdims = H5S_UNLIMITED;
    hid_t space = H5Screate_simple(1, &dims, &maxdims);
    hid_t dcpl = h5_dcpl(n, elem);
    hid_t d = -1;
    int rc = -1;
    if (space < 0 || dcpl < 0) {
        h5_errf(e, "%s: cannot set up dataset %s", file, name);
        goto done;
    }
    d = H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d < 0) {
        h5_errf(e, "%s: cannot create dataset %s", file, name);
        goto done;
    }
    if (n > 0 && H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        h5_errf(e, "%s: cannot write dataset %s (%lld elements)", file, name, (long long)n);
        goto done;
    }
    rc = 0;
done:
    if (d >= 0 && H5Dclose(d) < 0 && rc == 0) rc = h5_errf(e, "%s: cannot close dataset %s", file, name);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return rc;
}

int h5_write_1d(int64_t loc, const char *name, int64_t type, const void *data, int64_t n, const char *file,
                XrErr *e) {
    size_t elem = H5Tget_size(type);
    return h5_write_typed(loc, name, h5_file_type(type), type, elem, data, n, file, e);
}

int h5_write_strings(int64_t loc, const char *name, const char *const *s, int64_t n, const char *file, XrErr *e) {
    size_t width = 1;
    for (int64_t i = 0; i < n; i++) {
        size_t l = strlen(s[i]);
        if (l > width) width = l;
    }
    char *buf = xr_calloc(n > 0 ? (size_t)n : 1, width);
    for (int64_t i = 0; i < n; i++) memcpy(buf + (size_t)i * width, s[i], strlen(s[i]));
    hid_t t = H5Tcopy(H5T_C_S1);
    int rc;
    if (t < 0 || H5Tset_size(t, width) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0)
        rc = h5_errf(e, "%s: cannot make a string type for %s", file, name);
    else
        rc = h5_write_typed(loc, name, t, t, width, buf, n, file, e);
    if (t >= 0) H5Tclose(t);
    free(buf);
    return rc;
}

static int h5_extent_1d(hid_t d, int64_t *n, const char *file, const char *name, XrErr *e) {
    hid_t sp = H5Dget_space(d);
    if (sp < 0) return h5_errf(e, "%s: cannot read the shape of %s", file, name);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[8] = {0};
    if (nd != 1 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        H5Sclose(sp);
        return xr_errf(e, "%s: %s should be 1-D but has %d dimensions", file, name, nd);
    }
    H5Sclose(sp);
    *n = (int64_t)dims[0];
    return 0;
}

void *h5_read_1d(int64_t loc, const char *name, int64_t type, size_t elem, int64_t *n, const char *file,
                 XrErr *e) {
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) {
        h5_errf(e, "%s: missing dataset %s", file, name);
        return NULL;
    }
    void *buf = NULL;
    if (h5_extent_1d(d, n, file, name, e) < 0) goto fail;
    hid_t ft = H5Dget_type(d);
    H5T_class_t cls = ft >= 0 ? H5Tget_class(ft) : H5T_NO_CLASS;
    if (ft >= 0) H5Tclose(ft);
    H5T_class_t want = H5Tget_class(type);
    if (cls != want) {
        xr_errf(e, "%s: dataset %s has the wrong type class (%s expected)", file, name,
                want == H5T_INTEGER ? "integer" : "float");
        goto fail;
    }
    buf = xr_malloc((size_t)*n * elem + 1);
    if (*n > 0 && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        h5_errf(e, "%s: cannot read dataset %s", file, name);
        goto fail;
    }
    H5Dclose(d);
    return buf;
fail:
    free(buf);
    H5Dclose(d);
    return NULL;
}

/* Pack n strings (lengths lens, sources src[i] of lens[i] bytes) into one allocation: pointers then bytes. */
static char **pack_strings(int64_t n, const size_t *lens, const char *const *src) {
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) total += lens[i] + 1;
    char **out = xr_malloc(sizeof(char *) * (size_t)(n > 0 ? n : 1) + total);
    char *p = (char *)(out + (n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        out[i] = p;
        memcpy(p, src[i], lens[i]);
        p[lens[i]] = 0;
        p += lens[i] + 1;
    }
    return out;
}

/* Read elements [i, i + cnt) of a 1-D string dataset (fixed or variable length) as C strings. */
static char **h5_read_strings_sel(hid_t d, int64_t i, int64_t cnt, const char *file, const char *name, XrErr *e) {
    hid_t ft = H5Dget_type(d), fsp = H5Dget_space(d), msp = -1, mt = -1;
    char **out = NULL;
    if (ft < 0 || fsp < 0 || H5Tget_class(ft) != H5T_STRING) {
        xr_errf(e, "%s: dataset %s is not a string dataset", file, name);
        goto done;
    }
    hsize_t start = (hsize_t)i, count = (hsize_t)cnt;
    if (cnt > 0 && H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0) {
        h5_errf(e, "%s: cannot select rows of %s", file, name);
        goto done;
    }
    msp = H5Screate_simple(1, &count, NULL);
    size_t *lens = xr_malloc(sizeof(size_t) * (size_t)(cnt > 0 ? cnt : 1));
    if (H5Tis_variable_str(ft) > 0) {
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        char **raw = xr_calloc(cnt > 0 ? (size_t)cnt : 1, sizeof(char *));
        if (cnt > 0 && H5Dread(d, mt, msp, fsp, H5P_DEFAULT, raw) < 0) {
            h5_errf(e, "%s: cannot read %s", file, name);
        } else {
            for (int64_t k = 0; k < cnt; k++) {
                if (!raw[k]) raw[k] = "";
                lens[k] = strlen(raw[k]);
            }
            out = pack_strings(cnt, lens, (const char *const *)raw);
            for (int64_t k = 0; k < cnt; k++)
                if (raw[k][0]) H5free_memory(raw[k]);
        }
        free(raw);
    } else {
        size_t w = H5Tget_size(ft);
        mt = H5Tcopy(ft);
        char *raw = xr_calloc(cnt > 0 ? (size_t)cnt : 1, w + 1);
        if (cnt > 0 && H5Dread(d, mt, msp, fsp, H5P_DEFAULT, raw) < 0) {
            h5_errf(e, "%s: cannot read %s", file, name);
        } else {
            const char **src = xr_malloc(sizeof(char *) * (size_t)(cnt > 0 ? cnt : 1));
            for (int64_t k = 0; k < cnt; k++) {
                src[k] = raw + (size_t)k * w;
                size_t l = 0;
                while (l < w && src[k][l]) l++;
                lens[k] = l;
            }
            out = pack_strings(cnt, lens, src);
            free(src);
        }
        free(raw);
    }
    free(lens);
done:
    if (mt >= 0) H5Tclose(mt);
    if (msp >= 0) H5Sclose(msp);
    if (fsp >= 0) H5Sclose(fsp);
    if (ft >= 0) H5Tclose(ft);
    return out;
}

char **h5_read_strings(int64_t loc, const char *name, int64_t *n, const char *file, XrErr *e) {
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) {
        h5_errf(e, "%s: missing dataset %s", file, name);
        return NULL;
    }
    char **out = NULL;
    if (h5_extent_1d(d, n, file, name, e) == 0) out = h5_read_strings_sel(d, 0, *n, file, name, e);
    H5Dclose(d);
    return out;
}

static hid_t h5_vlen_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static int h5_attr_write(hid_t obj, const char *name, hid_t type, hid_t space, const void *data, const char *file,
                         XrErr *e) {
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return h5_errf(e, "%s: cannot create attribute %s", file, name);
    herr_t w = H5Awrite(a, type, data);
    herr_t c = H5Aclose(a);
    if (w < 0 || c < 0) return h5_errf(e, "%s: cannot write attribute %s", file, name);
    return 0;
}

int h5_attr_write_str(int64_t obj, const char *name, const char *value, const char *file, XrErr *e) {
    hid_t t = h5_vlen_str_type(), sp = H5Screate(H5S_SCALAR);
    int rc = (t < 0 || sp < 0) ? h5_errf(e, "%s: cannot make attribute %s", file, name)
                               : h5_attr_write(obj, name, t, sp, &value, file, e);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

int h5_attr_write_strs(int64_t obj, const char *name, const char *const *v, int n, const char *file, XrErr *e) {
    hsize_t dims = (hsize_t)n;
    hid_t t = h5_vlen_str_type(), sp = H5Screate_simple(1, &dims, NULL);
    int rc = (t < 0 || sp < 0) ? h5_errf(e, "%s: cannot make attribute %s", file, name)
                               : h5_attr_write(obj, name, t, sp, v, file, e);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

int h5_attr_write_i64(int64_t obj, const char *name, int64_t value, const char *file, XrErr *e) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return h5_errf(e, "%s: cannot make attribute %s", file, name);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = 0;
    if (a < 0 || H5Awrite(a, H5T_NATIVE_INT64, &value) < 0) rc = h5_errf(e, "%s: cannot write attribute %s", file, name);
    if (a >= 0 && H5Aclose(a) < 0 && rc == 0) rc = h5_errf(e, "%s: cannot close attribute %s", file, name);
    H5Sclose(sp);
    return rc;
}

int h5_attr_read_str(int64_t obj, const char *name, char *out, size_t cap, const char *file, XrErr *e) {
    if (H5Aexists(obj, name) <= 0) return xr_errf(e, "%s: missing attribute %s", file, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1;
    int rc = -1;
    if (t < 0 || H5Tget_class(t) != H5T_STRING) {
        xr_errf(e, "%s: attribute %s is not a string", file, name);
    } else if (H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        hid_t mt = h5_vlen_str_type();
        if (H5Aread(a, mt, &s) < 0) {
            h5_errf(e, "%s: cannot read attribute %s", file, name);
        } else {
            snprintf(out, cap, "%s", s ? s : "");
            if (s) H5free_memory(s);
            rc = 0;
        }
        H5Tclose(mt);
    } else {
        size_t w = H5Tget_size(t);
        char *buf = xr_calloc(w + 1, 1);
        if (H5Aread(a, t, buf) < 0) {
            h5_errf(e, "%s: cannot read attribute %s", file, name);
        } else {
            snprintf(out, cap, "%s", buf);
            rc = 0;
        }
        free(buf);
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return rc;
}

int h5_attr_read_i64(int64_t obj, const char *name, int64_t *out, const char *file, XrErr *e) {
    if (H5Aexists(obj, name) <= 0) return xr_errf(e, "%s: missing attribute %s", file, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1;
    int rc = -1;
    if (t < 0 || H5Tget_class(t) != H5T_INTEGER)
        xr_errf(e, "%s: attribute %s is not an integer", file, name);
    else if (H5Aread(a, H5T_NATIVE_INT64, out) < 0)
        h5_errf(e, "%s: cannot read attribute %s", file, name);
    else
        rc = 0;
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return rc;
}

int h5_exists(int64_t loc, const char *path) {
    /* H5Lexists fails (rather than answering no) when an intermediate group is missing: check each prefix. */
    char buf[1024];
    size_t n = strlen(path);
    if (n >= sizeof buf) return 0;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        htri_t ok = H5Lexists(loc, buf, H5P_DEFAULT);
        buf[i] = c;
        if (ok <= 0) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- writer */

/* fsync a file or directory by path: the rename that publishes a shard must not outrun its data. */
static int fsync_path(const char *path, int dir) {
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

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

int64_t h5_create(const char *tmp, XrErr *e) {
    h5_quiet();
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (fcpl < 0 || H5Pset_obj_track_times(fcpl, 0) < 0) {
        if (fcpl >= 0) H5Pclose(fcpl);
        h5_errf(e, "%s: cannot set up HDF5 file properties", tmp);
        return -1;
    }
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (f < 0) h5_errf(e, "%s: cannot create (%s)", tmp, strerror(errno));
    return f;
}

int h5_commit(int64_t f, const char *tmp, const char *path, int ok, XrErr *e) {
    int rc = ok ? 0 : -1;
    if (f >= 0 && H5Fclose(f) < 0 && rc == 0) rc = h5_errf(e, "%s: cannot close (disk full?)", tmp);
    if (rc == 0 && fsync_path(tmp, 0) < 0) rc = xr_errf(e, "%s: fsync failed: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) < 0) rc = xr_errf(e, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (rc == 0) {
        char *d = xr_strdup(path);
        fsync_path(dirname(d), 1); /* best effort: some file systems refuse fsync on directories */
        free(d);
    }
    if (rc < 0) unlink(tmp);
    return rc;
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
        gen = pack_strings(n, lens, src);
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
    s->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s->file < 0) return h5_errf(e, "%s: cannot open as HDF5", path);
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
    size_t pl = strlen(path);
    if (pl > 3 && !strcmp(path + pl - 3, ".h5")) {
        file = xr_strdup(path);
    } else {
        file = xr_path_join(path, H5STORE_INDEX_FILE);
    }
    char fmt[64];
    f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        h5_errf(e, "%s: cannot open as HDF5 (%s)", file, xr_file_exists(file) ? "not an HDF5 file?" : "no such file");
        goto fail;
    }
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
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    free(shard_files);
    free(row_off);
    free(file);
    free(dir);
    return st;
fail:
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    free(shard_files);
    free(row_off);
    free(file);
    free(dir);
    h5store_close(st);
    return NULL;
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

/* Read tokens [a, b) of a shard into dst. */
static int shard_read_tokens(Shard *sh, int64_t a, int64_t b, int32_t *dst, XrErr *e) {
    if (b <= a) return 0;
    hsize_t start = (hsize_t)a, count = (hsize_t)(b - a);
    hid_t fsp = H5Dget_space(sh->tokens), msp = H5Screate_simple(1, &count, NULL);
    int rc = 0;
    if (fsp < 0 || msp < 0 || H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
        H5Dread(sh->tokens, H5T_NATIVE_INT32, msp, fsp, H5P_DEFAULT, dst) < 0)
        rc = h5_errf(e, "%s: cannot read tokens [%lld, %lld)", sh->path, (long long)a, (long long)b);
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
        if (shard_read_tokens(sh, sh->off[lo], sh->off[hi], b->tokens + b->offsets[r - i], e) < 0) return -1;
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
    if (ok) out = pack_strings(n, lens, src);
    for (int q = 0; q < s->ns; q++) free(parts[q]);
    free(parts);
    free(lens);
    free(src);
    return out;
}

/* ---------------------------------------------------------------- inspection */

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
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), g = -1, d = -1;
    if (f < 0) return h5_errf(e, "%s: cannot open as HDF5", path);
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
    Shard tmp = {.path = (char *)path, .tokens = d};
    for (int64_t a = 0; a < s->ntok; a += piece) {
        int64_t b = a + piece < s->ntok ? a + piece : s->ntok;
        if (shard_read_tokens(&tmp, a, b, buf, e) < 0) {
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
    hid_t f = H5Fopen(index_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return h5_errf(e, "%s: cannot open as HDF5", index_path);
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

int h5_file_format(const char *path, char *fmt, size_t cap) {
    h5_quiet();
    fmt[0] = 0;
    htri_t is = H5Fis_hdf5(path);
    if (is < 0) return -1;
    if (is == 0) return 0;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    XrErr e;
    if (H5Aexists(f, "xrank_format") > 0 && h5_attr_read_str(f, "xrank_format", fmt, cap, path, &e) < 0) fmt[0] = 0;
    H5Fclose(f);
    return 1;
}

/* Link visitor; the object kind comes from H5Iget_type so the code is the same for the 1.10 and 1.12+ APIs,
 * whose link info structs differ. */
static herr_t h5_list_one(hid_t loc, const char *name, FILE *out) {
    hid_t o = H5Oopen(loc, name, H5P_DEFAULT);
    if (o < 0) return 0;
    H5I_type_t kind = H5Iget_type(o);
    if (kind == H5I_GROUP) {
        fprintf(out, "  /%s/\n", name);
    } else if (kind == H5I_DATASET) {
        hid_t sp = H5Dget_space(o), t = H5Dget_type(o);
        hsize_t dims[8] = {0};
        int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
        if (nd > 0 && nd <= 8) H5Sget_simple_extent_dims(sp, dims, NULL);
        H5T_class_t c = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
        const char *cn = c == H5T_INTEGER ? "int" : c == H5T_FLOAT ? "float" : c == H5T_STRING ? "string" : "other";
        size_t sz = t >= 0 ? H5Tget_size(t) : 0;
        if (c == H5T_STRING && H5Tis_variable_str(t) > 0)
            fprintf(out, "  /%s  string (variable) [", name);
        else
            fprintf(out, "  /%s  %s%zu [", name, cn, c == H5T_STRING ? sz : sz * 8);
        for (int i = 0; i < nd && i < 8; i++) fprintf(out, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
        fprintf(out, "]\n");
        if (t >= 0) H5Tclose(t);
        if (sp >= 0) H5Sclose(sp);
    }
    H5Oclose(o);
    return 0;
}

#if H5_VERSION_GE(1, 12, 0)
static herr_t h5_list_cb(hid_t loc, const char *name, const H5L_info2_t *info, void *data) {
#else
static herr_t h5_list_cb(hid_t loc, const char *name, const H5L_info_t *info, void *data) {
#endif
    (void)info;
    return h5_list_one(loc, name, data);
}

int h5_list(const char *path, FILE *out, XrErr *e) {
    h5_quiet();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return h5_errf(e, "%s: cannot open as HDF5", path);
#if H5_VERSION_GE(1, 12, 0)
    herr_t r = H5Lvisit2(f, H5_INDEX_NAME, H5_ITER_INC, h5_list_cb, out);
#else
    herr_t r = H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, h5_list_cb, out);
#endif
    int rc = r < 0 ? h5_errf(e, "%s: cannot list", path) : 0;
    H5Fclose(f);
    return rc;
}
