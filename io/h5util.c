/* h5util.c: small typed HDF5 helpers shared by the token stores, the dataset index and `xrank inspect`:
 * quiet errors with the innermost HDF5 message, 1-D datasets and string datasets written chunked, shuffled and
 * deflated and read back whole or in part, attributes, reproducible file creation (no time tracking) and the
 * commit of a file written under a temporary name (fsync + rename), the format sniff and h5ls-like listing. */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5_internal.h"
#include "xr_fs.h"

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

int h5_extent_1d(hid_t d, int64_t *n, const char *file, const char *name, XrErr *e) {
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
char **h5_pack_strings(int64_t n, const size_t *lens, const char *const *src) {
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
char **h5_read_strings_sel(hid_t d, int64_t i, int64_t cnt, const char *file, const char *name, XrErr *e) {
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
            out = h5_pack_strings(cnt, lens, (const char *const *)raw);
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
            out = h5_pack_strings(cnt, lens, src);
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
    if (rc == 0 && xr_fsync_path(tmp) < 0) rc = xr_errf(e, "%s: fsync failed: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) < 0) rc = xr_errf(e, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (rc == 0) {
        char *d = xr_strdup(path);
        (void)xr_fsync_path(dirname(d)); /* best effort: some file systems refuse fsync on directories */
        free(d);
    }
    if (rc < 0) unlink(tmp);
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
