/* h5util.c: small typed HDF5 helpers shared by the token stores, the dataset index and `xrank inspect`:
 * quiet errors with the innermost HDF5 message, 1-D datasets and string datasets written chunked, shuffled and
 * deflated and read back whole or in part, attributes, reproducible file creation (no time tracking, a user block
 * for the checksum record of h5sum.c) and the commit of a file written under a temporary name (seal + rename), the
 * format sniff and h5ls-like listing. */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
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

int h5_check_stored(hid_t d, uint64_t nelem, const char *file, const char *name, XrErr *e) {
    /* The extent comes from the file: a damaged one must not make libhdf5 walk billions of chunks or us allocate
     * terabytes. Our datasets are written whole, and deflate packs at most ~1032 bytes into one, so the bytes the
     * dataset stores bound its element count. */
    hid_t ft = H5Dget_type(d);
    size_t elem = ft >= 0 ? H5Tget_size(ft) : 0;
    if (ft >= 0) H5Tclose(ft);
    uint64_t bytes = 0;
    if (elem == 0 || nelem > (uint64_t)INT64_MAX || __builtin_mul_overflow(nelem, (uint64_t)elem, &bytes) ||
        bytes > (uint64_t)INT64_MAX)
        return xr_errf(e, "%s: %s claims %llu elements of %zu bytes: damaged file", file, name,
                       (unsigned long long)nelem, elem);
    uint64_t stored = (uint64_t)H5Dget_storage_size(d);
    /* Unfiltered data (compact, contiguous, or chunks without a filter) is stored byte for byte: libhdf5 1.10
     * copies the extent's bytes out of a compact header or an unfiltered chunk without checking that they are
     * there (heap overflows found by fuzz_h5 with a filter pipeline removed from a deflated dataset). */
    hid_t dcpl = H5Dget_create_plist(d);
    H5D_layout_t layout = dcpl >= 0 ? H5Pget_layout(dcpl) : H5D_LAYOUT_ERROR;
    int nfilters = dcpl >= 0 && layout == H5D_CHUNKED ? H5Pget_nfilters(dcpl) : 0;
    if (dcpl >= 0) H5Pclose(dcpl);
    if (layout < 0 || nfilters < 0)
        return h5_errf(e, "%s: cannot read the storage layout of %s: damaged file", file, name);
    if (nfilters == 0 && stored < bytes)
        return xr_errf(e, "%s: %s claims %llu elements (%llu bytes) but stores %llu unfiltered bytes: damaged file",
                       file, name, (unsigned long long)nelem, (unsigned long long)bytes, (unsigned long long)stored);
    if (bytes > 0 && bytes / H5_MAX_DEFLATE_RATIO > stored)
        return xr_errf(e, "%s: %s claims %llu elements (%llu bytes) but the file stores %llu bytes of it: damaged file",
                       file, name, (unsigned long long)nelem, (unsigned long long)bytes, (unsigned long long)stored);
    return 0;
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
    if (h5_check_stored(d, dims[0], file, name, e) < 0) return -1;
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

/* Fixed-length UTF-8 string type of width bytes (NUL terminated: width counts the NUL). String attributes are written fixed-length: the
 * bytes live in the attribute message itself, while a variable-length string lives in a global heap whose
 * damaged collections can make libhdf5 spin forever or crash (H5HG_read). */
static hid_t h5_fixed_str_type(size_t width) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, width ? width : 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
                   H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
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
    size_t len = strlen(value);
    if (len > H5_ATTR_MAX_BYTES) return xr_errf(e, "%s: attribute %s is %zu bytes, more than %d", file, name, len,
                                                H5_ATTR_MAX_BYTES);
    hid_t t = h5_fixed_str_type(len + 1), sp = H5Screate(H5S_SCALAR);
    char *buf = xr_calloc(len + 1, 1);
    memcpy(buf, value, len);
    int rc = (t < 0 || sp < 0) ? h5_errf(e, "%s: cannot make attribute %s", file, name)
                               : h5_attr_write(obj, name, t, sp, buf, file, e);
    free(buf);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

int h5_attr_write_strs(int64_t obj, const char *name, const char *const *v, int n, const char *file, XrErr *e) {
    hsize_t dims = (hsize_t)n;
    size_t width = 1; /* the longest string + its NUL */
    for (int i = 0; i < n; i++)
        if (strlen(v[i]) + 1 > width) width = strlen(v[i]) + 1;
    if ((uint64_t)width * (uint64_t)(n > 0 ? n : 1) > H5_ATTR_MAX_BYTES)
        return xr_errf(e, "%s: attribute %s would be %d x %zu bytes, more than %d", file, name, n, width,
                       H5_ATTR_MAX_BYTES);
    char *buf = xr_calloc((size_t)(n > 0 ? n : 1), width);
    for (int i = 0; i < n; i++) memcpy(buf + (size_t)i * width, v[i], strlen(v[i]));
    hid_t t = h5_fixed_str_type(width), sp = H5Screate_simple(1, &dims, NULL);
    int rc = (t < 0 || sp < 0) ? h5_errf(e, "%s: cannot make attribute %s", file, name)
                               : h5_attr_write(obj, name, t, sp, buf, file, e);
    free(buf);
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

/* Elements of an attribute's dataspace; -1 when the dataspace cannot be read. */
static int64_t h5_attr_npoints(hid_t a) {
    hid_t sp = H5Aget_space(a);
    if (sp < 0) return -1;
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    return n < 0 ? -1 : (int64_t)n;
}

/* A variable-length string attribute (stores written before string attributes became fixed-length) is read in
 * a child process: libhdf5 follows the string into a global heap, and a damaged heap makes it loop forever or
 * crash. The child sends at most cap - 1 bytes back through a pipe; the parent gives it H5_VLEN_READ_SECONDS. */
static int h5_attr_read_vlen_isolated(hid_t a, const char *name, char *out, size_t cap, const char *file, XrErr *e) {
    int fds[2];
    if (pipe(fds) < 0) return xr_errf(e, "%s: attribute %s: pipe: %s", file, name, strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]), close(fds[1]);
        return xr_errf(e, "%s: attribute %s: fork: %s", file, name, strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        char *s = NULL;
        hid_t mt = h5_vlen_str_type();
        if (mt < 0 || H5Aread(a, mt, &s) < 0) _exit(3);
        size_t n = s ? strnlen(s, cap - 1) : 0;
        ssize_t w = n ? write(fds[1], s, n) : 0;
        _exit(w == (ssize_t)n ? 0 : 4);
    }
    close(fds[1]);
    size_t got = 0;
    int timed_out = 0;
    struct pollfd pf = {.fd = fds[0], .events = POLLIN};
    for (int waited_ms = 0;;) {
        int r = poll(&pf, 1, 100);
        if (r < 0 && errno == EINTR) continue;
        if (r > 0) {
            ssize_t k = read(fds[0], out + got, cap - 1 - got);
            if (k > 0) {
                got += (size_t)k;
                if (got < cap - 1) continue;
            }
            if (k < 0 && errno == EINTR) continue;
            break; /* EOF (child done), error or full */
        }
        waited_ms += 100;
        if (waited_ms >= H5_VLEN_READ_SECONDS * 1000) {
            timed_out = 1;
            break;
        }
    }
    close(fds[0]);
    out[got] = 0;
    if (timed_out) kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (timed_out)
        return xr_errf(e, "%s: attribute %s is damaged: libhdf5 did not finish reading it in %d s", file, name,
                       H5_VLEN_READ_SECONDS);
    if (WIFSIGNALED(st))
        return xr_errf(e, "%s: attribute %s is damaged: reading it crashed libhdf5 (signal %d)", file, name,
                       WTERMSIG(st));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return xr_errf(e, "%s: cannot read attribute %s (damaged variable-length string)", file, name);
    return 0;
}

/* Open attribute name of obj after checking its type class and that it holds one element (or, for want_n < 0,
 * any count up to the byte bound): a damaged dataspace must not make H5Aread write past our buffer. */
static hid_t h5_attr_open_checked(hid_t obj, const char *name, H5T_class_t cls, const char *what, hid_t *type,
                                  int64_t *npoints, const char *file, XrErr *e) {
    *type = -1;
    htri_t ex = H5Aexists(obj, name);
    if (ex < 0) {
        h5_errf(e, "%s: cannot look up attribute %s (damaged file?)", file, name);
        return -1;
    }
    if (ex == 0) {
        xr_errf(e, "%s: missing attribute %s", file, name);
        return -1;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) {
        h5_errf(e, "%s: cannot open attribute %s (damaged file?)", file, name);
        return -1;
    }
    hid_t t = H5Aget_type(a);
    *npoints = h5_attr_npoints(a);
    if (t < 0 || H5Tget_class(t) != cls) {
        xr_errf(e, "%s: attribute %s is not %s", file, name, what);
    } else if (*npoints < 0) {
        h5_errf(e, "%s: attribute %s has an unreadable shape (damaged file?)", file, name);
    } else {
        *type = t;
        return a;
    }
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return -1;
}

int h5_attr_read_str(int64_t obj, const char *name, char *out, size_t cap, const char *file, XrErr *e) {
    hid_t t;
    int64_t np;
    hid_t a = h5_attr_open_checked(obj, name, H5T_STRING, "a string", &t, &np, file, e);
    if (a < 0) return -1;
    int rc = -1;
    if (np != 1) {
        xr_errf(e, "%s: attribute %s holds %lld strings, 1 expected", file, name, (long long)np);
    } else if (H5Tis_variable_str(t) > 0) {
        rc = h5_attr_read_vlen_isolated(a, name, out, cap, file, e);
    } else {
        size_t w = H5Tget_size(t);
        if (w == 0 || w > H5_ATTR_MAX_BYTES) {
            xr_errf(e, "%s: attribute %s claims %zu bytes (at most %d expected): damaged file?", file, name, w,
                    H5_ATTR_MAX_BYTES);
        } else {
            char *buf = xr_calloc(w + 1, 1);
            hid_t mt = H5Tcopy(t);
            if (mt < 0 || H5Aread(a, mt, buf) < 0) {
                h5_errf(e, "%s: cannot read attribute %s", file, name);
            } else {
                snprintf(out, cap, "%s", buf);
                rc = 0;
            }
            if (mt >= 0) H5Tclose(mt);
            free(buf);
        }
    }
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}

int h5_attr_read_i64(int64_t obj, const char *name, int64_t *out, const char *file, XrErr *e) {
    hid_t t;
    int64_t np;
    hid_t a = h5_attr_open_checked(obj, name, H5T_INTEGER, "an integer", &t, &np, file, e);
    if (a < 0) return -1;
    int rc = -1;
    if (np != 1)
        xr_errf(e, "%s: attribute %s holds %lld values, 1 expected", file, name, (long long)np);
    else if (H5Aread(a, H5T_NATIVE_INT64, out) < 0)
        h5_errf(e, "%s: cannot read attribute %s", file, name);
    else
        rc = 0;
    H5Tclose(t);
    H5Aclose(a);
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
    if (fcpl < 0 || H5Pset_obj_track_times(fcpl, 0) < 0 || H5Pset_userblock(fcpl, H5_USERBLOCK_BYTES) < 0) {
        if (fcpl >= 0) H5Pclose(fcpl);
        h5_errf(e, "%s: cannot set up HDF5 file properties", tmp);
        return -1;
    }
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (f < 0) {
        h5_errf(e, "%s: cannot create (%s)", tmp, strerror(errno));
        unlink(tmp); /* a create that failed part-way (a full disk) can leave a file behind */
    }
    return f;
}

int h5_commit(int64_t f, const char *tmp, const char *path, int ok, XrErr *e) {
    int rc = ok ? 0 : -1;
    if (f >= 0 && H5Fclose(f) < 0 && rc == 0) rc = h5_errf(e, "%s: cannot close (disk full?)", tmp);
    if (rc == 0 && h5_seal(tmp, e) < 0) rc = -1; /* the checksum record, then fsync */
    if (rc == 0 && rename(tmp, path) < 0) rc = xr_errf(e, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (rc == 0) {
        char *d = xr_strdup(path);
        (void)xr_fsync_path(dirname(d)); /* best effort: some file systems refuse fsync on directories */
        free(d);
    }
    if (rc < 0) unlink(tmp);
    return rc;
}


int h5_file_format(const char *path, char *fmt, size_t cap, XrErr *e) {
    h5_quiet();
    fmt[0] = 0;
    XrErr ve = {{0}};
    H5SumState st;
    hid_t f = h5_open_checked(path, &st, &ve);
    if (st == H5SUM_NOT_HDF5) return 0;
    if (st == H5SUM_DAMAGED) {
        if (e) *e = ve;
        return -3;
    }
    if (f < 0) return -1;
    htri_t ex = H5Aexists(f, "xrank_format");
    int rc = 1;
    if (ex < 0) h5_errf(e, "%s: cannot look up attribute xrank_format", path);
    if (ex < 0 || (ex > 0 && h5_attr_read_str(f, "xrank_format", fmt, cap, path, e) < 0)) {
        fmt[0] = 0;
        rc = -2;
    }
    H5Fclose(f);
    return rc;
}

/* Attribute check: every attribute of every object read the way the readers would, each failure counted. */
typedef struct {
    const char *file;
    const char *obj;
    int nbad;
    XrErr *first;
} AttrCheck;

static void attr_check_bad(AttrCheck *c, const XrErr *e) {
    if (c->nbad++ == 0 && c->first) *c->first = *e;
}

/* Read a whole attribute of any shape: strings through the checked readers (scalar) or bounded buffers
 * (arrays; variable-length arrays in a child process), numbers into a buffer of the attribute's stored size. */
static herr_t attr_check_one(hid_t obj, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    AttrCheck *c = data;
    XrErr e = {{0}};
    char where[512];
    snprintf(where, sizeof where, "%s: %s", c->file, c->obj);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) {
        h5_errf(&e, "%s: cannot open attribute %s", where, name);
        attr_check_bad(c, &e);
        return 0;
    }
    hid_t t = H5Aget_type(a);
    int64_t np = h5_attr_npoints(a);
    H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    size_t w = t >= 0 ? H5Tget_size(t) : 0;
    int vlen = cls == H5T_STRING && H5Tis_variable_str(t) > 0;
    if (t < 0 || np < 0) {
        h5_errf(&e, "%s: attribute %s has an unreadable type or shape", where, name);
        attr_check_bad(c, &e);
    } else if (cls == H5T_STRING && np == 1) {
        char *buf = xr_malloc(H5_ATTR_MAX_BYTES + 1);
        if (h5_attr_read_str(obj, name, buf, H5_ATTR_MAX_BYTES + 1, where, &e) < 0) attr_check_bad(c, &e);
        free(buf);
    } else if (vlen) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            char **p = calloc((size_t)(np > 0 ? np : 1), sizeof(char *));
            hid_t mt = h5_vlen_str_type();
            _exit(p && mt >= 0 && (np == 0 || H5Aread(a, mt, p) >= 0) ? 0 : 3);
        }
        int st = 0, waited = 0;
        while (pid > 0 && waitpid(pid, &st, WNOHANG) == 0) {
            if (waited++ >= H5_VLEN_READ_SECONDS * 10) {
                kill(pid, SIGKILL);
                waitpid(pid, &st, 0);
                break;
            }
            nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
        }
        if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            xr_errf(&e, "%s: attribute %s (%lld variable-length strings) is damaged: libhdf5 %s reading it", where,
                    name, (long long)np,
                    pid < 0 ? "could not start" : WIFSIGNALED(st) ? "crashed or did not finish" : "failed");
            attr_check_bad(c, &e);
        }
    } else if (w == 0 || (uint64_t)w * (uint64_t)np > H5_ATTR_MAX_BYTES) {
        xr_errf(&e, "%s: attribute %s claims %lld x %zu bytes (at most %d expected): damaged file?", where, name,
                (long long)np, w, H5_ATTR_MAX_BYTES);
        attr_check_bad(c, &e);
    } else {
        void *buf = xr_calloc((size_t)(np > 0 ? np : 1), w + 1);
        if (np > 0 && H5Aread(a, t, buf) < 0) {
            h5_errf(&e, "%s: cannot read attribute %s", where, name);
            attr_check_bad(c, &e);
        }
        free(buf);
    }
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return 0;
}

static int attr_check_object(hid_t loc, const char *name, AttrCheck *c) {
    hid_t o = H5Oopen(loc, name, H5P_DEFAULT);
    XrErr e = {{0}};
    if (o < 0) {
        h5_errf(&e, "%s: cannot open object %s", c->file, name);
        attr_check_bad(c, &e);
        return 0;
    }
    c->obj = name;
    hsize_t idx = 0;
    if (H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_check_one, c) < 0) {
        h5_errf(&e, "%s: %s: cannot list its attributes", c->file, name);
        attr_check_bad(c, &e);
    }
    H5Oclose(o);
    return 0;
}

#if H5_VERSION_GE(1, 12, 0)
static herr_t attr_check_cb(hid_t loc, const char *name, const H5L_info2_t *info, void *data) {
#else
static herr_t attr_check_cb(hid_t loc, const char *name, const H5L_info_t *info, void *data) {
#endif
    (void)info;
    return attr_check_object(loc, name, data);
}

int h5_check_attrs(const char *path, XrErr *first) {
    h5_quiet();
    AttrCheck c = {.file = path, .first = first};
    hid_t f = h5_open_read(path, first);
    if (f < 0) return 1;
    attr_check_object(f, "/", &c);
#if H5_VERSION_GE(1, 12, 0)
    herr_t r = H5Lvisit2(f, H5_INDEX_NAME, H5_ITER_INC, attr_check_cb, &c);
#else
    herr_t r = H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, attr_check_cb, &c);
#endif
    if (r < 0) {
        XrErr e = {{0}};
        h5_errf(&e, "%s: cannot walk its groups (damaged file?)", path);
        attr_check_bad(&c, &e);
    }
    if (H5Fclose(f) < 0) {
        XrErr e = {{0}};
        h5_errf(&e, "%s: cannot close", path);
        attr_check_bad(&c, &e);
    }
    return c.nbad;
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
    hid_t f = h5_open_read(path, e);
    if (f < 0) return -1;
#if H5_VERSION_GE(1, 12, 0)
    herr_t r = H5Lvisit2(f, H5_INDEX_NAME, H5_ITER_INC, h5_list_cb, out);
#else
    herr_t r = H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, h5_list_cb, out);
#endif
    int rc = r < 0 ? h5_errf(e, "%s: cannot list", path) : 0;
    H5Fclose(f);
    return rc;
}
