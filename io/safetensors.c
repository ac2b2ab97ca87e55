/* safetensors.c: mmap-based safetensors reader with the reference reader's validation, dtype conversion
 * to f32, and an atomic writer (F32 or BF16) whose output Python safetensors and transformers load.
 * Format: u64 LE header length N, N bytes of JSON, then the data buffer that the tensors tile exactly. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "xr_fs.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference reader's bound on the header, so a lying length cannot make us parse gigabytes. */
#define ST_MAX_HEADER 100000000ULL

static const struct {
    const char *name;
    StDtype dtype;
    size_t size;
} st_dtypes[] = {
    {"F32", ST_F32, 4}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2}, {"F64", ST_F64, 8}, {"I64", ST_I64, 8},
    {"I32", ST_I32, 4}, {"I16", ST_I16, 2}, {"I8", ST_I8, 1},     {"U8", ST_U8, 1},   {"BOOL", ST_BOOL, 1},
};
#define ST_NDTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

size_t st_dtype_size(StDtype d) {
    for (size_t i = 0; i < ST_NDTYPES; i++)
        if (st_dtypes[i].dtype == d) return st_dtypes[i].size;
    assert(!"bad StDtype");
    return 0;
}

const char *st_dtype_name(StDtype d) {
    for (size_t i = 0; i < ST_NDTYPES; i++)
        if (st_dtypes[i].dtype == d) return st_dtypes[i].name;
    assert(!"bad StDtype");
    return "?";
}

int st_is_float(StDtype d) { return d == ST_F32 || d == ST_F16 || d == ST_BF16 || d == ST_F64; }

static int st_dtype_parse(const char *s, StDtype *d) {
    for (size_t i = 0; i < ST_NDTYPES; i++)
        if (strcmp(st_dtypes[i].name, s) == 0) {
            *d = st_dtypes[i].dtype;
            return 0;
        }
    return -1;
}

int64_t st_numel(const StTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Shape as "[a,b,c]" for messages. */
static void st_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* A JSON number that is a non-negative integer exactly representable in a double. */
static int st_json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static void st_free_partial(SafeTensors *st) {
    if (st->tensors)
        for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->metadata_json);
    free(st->path);
    if (st->map) munmap(st->map, st->map_len);
    memset(st, 0, sizeof *st);
}

static int st_cmp_offset(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Parse one tensor entry of the header into t (name already set). */
static int st_parse_entry(const char *path, const cJSON *item, StTensor *t, XrErr *e) {
    if (!cJSON_IsObject(item))
        return xr_errf(e, "%s: tensor '%s': header entry is not a JSON object", path, t->name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt)) return xr_errf(e, "%s: tensor '%s': missing or non-string \"dtype\"", path, t->name);
    if (st_dtype_parse(dt->valuestring, &t->dtype))
        return xr_errf(e,
                       "%s: tensor '%s': unknown dtype \"%s\" (supported: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)",
                       path, t->name, dt->valuestring);
    if (!cJSON_IsArray(sh)) return xr_errf(e, "%s: tensor '%s': missing or non-array \"shape\"", path, t->name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return xr_errf(e, "%s: tensor '%s': %d dimensions, at most %d supported", path, t->name, nd, ST_MAX_DIMS);
    t->ndim = nd;
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, sh) {
        uint64_t u;
        if (st_json_uint(v, &u) || u > (uint64_t)INT64_MAX)
            return xr_errf(e, "%s: tensor '%s': shape[%d] is not a non-negative integer", path, t->name, i);
        t->shape[i++] = (int64_t)u;
    }
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return xr_errf(e, "%s: tensor '%s': \"data_offsets\" must be an array [begin, end]", path, t->name);
    uint64_t b, en;
    if (st_json_uint(cJSON_GetArrayItem(off, 0), &b) || st_json_uint(cJSON_GetArrayItem(off, 1), &en))
        return xr_errf(e, "%s: tensor '%s': data_offsets are not non-negative integers", path, t->name);
    if (en < b)
        return xr_errf(e, "%s: tensor '%s': data_offsets [%llu, %llu) end before they begin", path, t->name,
                       (unsigned long long)b, (unsigned long long)en);
    t->begin = b;
    t->end = en;
    /* numel * dtype size with overflow checks: a lying shape must not wrap around to a plausible size. */
    uint64_t need = st_dtype_size(t->dtype);
    int overflow = 0;
    for (int k = 0; k < nd; k++) {
        uint64_t d = (uint64_t)t->shape[k];
        if (d && need > UINT64_MAX / d) overflow = 1;
        need *= d;
    }
    if (overflow || need != en - b) {
        char s[256];
        st_shape_str(t->shape, nd, s, sizeof s);
        if (overflow)
            return xr_errf(e, "%s: tensor '%s': shape %s %s overflows 64-bit byte counts", path, t->name, s,
                           dt->valuestring);
        return xr_errf(e, "%s: tensor '%s': data_offsets [%llu, %llu) hold %llu bytes but shape %s %s needs %llu",
                       path, t->name, (unsigned long long)b, (unsigned long long)en, (unsigned long long)(en - b), s,
                       dt->valuestring, (unsigned long long)need);
    }
    return 0;
}

static int st_parse_metadata(SafeTensors *st, const cJSON *md, XrErr *e) {
    if (cJSON_IsNull(md)) return 0;
    if (!cJSON_IsObject(md)) return xr_errf(e, "%s: \"__metadata__\" is not a JSON object", st->path);
    const cJSON *v;
    cJSON_ArrayForEach(v, md) {
        if (!cJSON_IsString(v))
            return xr_errf(e, "%s: \"__metadata__\" value for key '%s' is not a string", st->path, v->string);
    }
    st->metadata_json = cJSON_PrintUnformatted(md);
    if (!st->metadata_json) return xr_errf(e, "%s: out of memory printing __metadata__", st->path);
    return 0;
}

int st_open(SafeTensors *st, const char *path, XrErr *e) {
    memset(st, 0, sizeof *st);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return xr_errf(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return xr_errf(e, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return xr_errf(e, "%s: not a regular file", path);
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    if (fsize < 8) {
        close(fd);
        return xr_errf(e, "%s: truncated: %llu bytes, a safetensors file starts with an 8-byte header length", path,
                       (unsigned long long)fsize);
    }
    void *map = mmap(NULL, (size_t)fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_err = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) return xr_errf(e, "%s: cannot mmap %llu bytes: %s", path, (unsigned long long)fsize,
                                          strerror(map_err));
    st->map = map;
    st->map_len = (size_t)fsize;
    st->path = xr_strdup(path);
    const unsigned char *p = map;

    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | p[i];
    if (n > ST_MAX_HEADER) {
        xr_errf(e, "%s: header length %llu exceeds the 100,000,000-byte limit (corrupt or not a safetensors file)",
                path, (unsigned long long)n);
        goto fail;
    }
    if (n + 8 > fsize) {
        xr_errf(e, "%s: truncated: header length %llu needs %llu bytes but the file has %llu", path,
                (unsigned long long)n, (unsigned long long)(n + 8), (unsigned long long)fsize);
        goto fail;
    }
    if (n < 2 || p[8] != '{') {
        xr_errf(e, "%s: header (bytes 8..%llu) is not a JSON object: it must start with '{'", path,
                (unsigned long long)(8 + n));
        goto fail;
    }
    const char *json_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)p + 8, (size_t)n, &json_end, 0);
    if (!root) {
        const char *ep = cJSON_GetErrorPtr();
        long long at = ep ? (long long)(ep - (const char *)p) : -1;
        xr_errf(e, "%s: header is not valid JSON (error near file byte %lld of header bytes 8..%llu)", path, at,
                (unsigned long long)(8 + n));
        goto fail;
    }
    /* Only padding spaces may follow the JSON object inside the header. */
    for (const char *q = json_end; q < (const char *)p + 8 + n; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            xr_errf(e, "%s: header has non-space bytes after the JSON object at file byte %lld", path,
                    (long long)(q - (const char *)p));
            cJSON_Delete(root);
            goto fail;
        }
    }
    if (!cJSON_IsObject(root)) {
        xr_errf(e, "%s: header is JSON but not an object", path);
        cJSON_Delete(root);
        goto fail;
    }
    int count = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) count++;
    st->tensors = xr_calloc((size_t)(count ? count : 1), sizeof(StTensor));
    int seen_md = 0;
    cJSON_ArrayForEach(it, root) {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (seen_md++) {
                xr_errf(e, "%s: \"__metadata__\" appears twice in the header", path);
                cJSON_Delete(root);
                goto fail;
            }
            if (st_parse_metadata(st, it, e)) {
                cJSON_Delete(root);
                goto fail;
            }
            continue;
        }
        StTensor *t = &st->tensors[st->n++];
        t->name = xr_strdup(it->string);
        if (st_parse_entry(path, it, t, e)) {
            cJSON_Delete(root);
            goto fail;
        }
    }
    cJSON_Delete(root);

    /* Duplicate names would make st_find ambiguous; the reference's map would silently keep one. */
    for (int i = 0; i < st->n; i++)
        for (int j = i + 1; j < st->n; j++)
            if (strcmp(st->tensors[i].name, st->tensors[j].name) == 0) {
                xr_errf(e, "%s: tensor '%s' appears twice in the header", path, st->tensors[i].name);
                goto fail;
            }

    qsort(st->tensors, (size_t)st->n, sizeof(StTensor), st_cmp_offset);
    uint64_t data_len = fsize - 8 - n;
    uint64_t pos = 0;
    for (int i = 0; i < st->n; i++) {
        StTensor *t = &st->tensors[i];
        if (t->begin != pos) {
            if (t->begin > pos && i == 0)
                xr_errf(e, "%s: tensor '%s': data_offsets [%llu, %llu) leave a gap: the data buffer starts at 0",
                        path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
            else if (t->begin > pos)
                xr_errf(e,
                        "%s: tensor '%s': data_offsets [%llu, %llu) leave a gap: the previous tensor '%s' ends at %llu",
                        path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                        st->tensors[i - 1].name, (unsigned long long)pos);
            else
                xr_errf(e, "%s: tensor '%s': data_offsets [%llu, %llu) overlap tensor '%s' which ends at %llu", path,
                        t->name, (unsigned long long)t->begin, (unsigned long long)t->end, st->tensors[i - 1].name,
                        (unsigned long long)pos);
            goto fail;
        }
        if (t->end > data_len) {
            xr_errf(e,
                    "%s: tensor '%s': data_offsets [%llu, %llu) run past the end of the data buffer (%llu bytes after "
                    "the %llu-byte header): file truncated?",
                    path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                    (unsigned long long)data_len, (unsigned long long)(8 + n));
            goto fail;
        }
        pos = t->end;
        t->data = p + 8 + n + t->begin;
    }
    if (pos != data_len) {
        xr_errf(e,
                "%s: the tensors' data ends at byte %llu of the data buffer but the file holds %llu data bytes "
                "(%llu bytes of trailing garbage, file size %llu)",
                path, (unsigned long long)pos, (unsigned long long)data_len, (unsigned long long)(data_len - pos),
                (unsigned long long)fsize);
        goto fail;
    }
    return 0;
fail:
    st_free_partial(st);
    return -1;
}

void st_close(SafeTensors *st) {
    if (st) st_free_partial(st);
}

const StTensor *st_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

static float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            /* subnormal: value = man * 2^-24; normalise into an f32 exponent */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13); /* inf, or nan with its payload kept */
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int st_to_f32(const StTensor *t, float *out, XrErr *e) {
    int64_t n = st_numel(t);
    const unsigned char *src = t->data;
    /* memcpy per element: tensor data need not be aligned when a writer did not pad the header. */
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, src, (size_t)n * 4);
        return 0;
    case ST_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = st_f16_to_f32(h);
        }
        return 0;
    case ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, 4);
        }
        return 0;
    case ST_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    default:
        return xr_errf(e, "tensor '%s': dtype %s is not a floating-point type, cannot convert to F32", t->name,
                       st_dtype_name(t->dtype));
    }
}

/* ---- writer ---- */

typedef struct {
    char *buf;
    size_t len, cap;
} StBuf;

static void sb_put(StBuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 1024;
        b->buf = xr_realloc(b->buf, b->cap);
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}
static void sb_puts(StBuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_json_str(StBuf *b, const char *s) {
    sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char tmp[8];
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\', tmp[1] = (char)*p;
            sb_put(b, tmp, 2);
        } else if (*p < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", *p);
            sb_puts(b, tmp);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_puts(b, "\"");
}

static uint16_t st_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* keep NaN a (quiet) NaN */
    uint32_t round = 0x7fffu + ((x >> 16) & 1);                               /* round half to even */
    return (uint16_t)((x + round) >> 16);
}

static int st_write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int st_write(const char *path, const StWriteTensor *t, int n, const char *const *meta_kv, int n_meta, int bf16,
             XrErr *e) {
    size_t esz = bf16 ? 2 : 4;
    StBuf h = {0};
    sb_puts(&h, "{\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
        if (i) sb_puts(&h, ",");
        sb_json_str(&h, meta_kv[2 * i]);
        sb_puts(&h, ":");
        sb_json_str(&h, meta_kv[2 * i + 1]);
    }
    sb_puts(&h, "}");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const StWriteTensor *w = &t[i];
        if (!w->name || !w->name[0] || strcmp(w->name, "__metadata__") == 0) {
            free(h.buf);
            return xr_errf(e, "%s: tensor #%d has an invalid name", path, i);
        }
        if (w->ndim < 0 || w->ndim > ST_MAX_DIMS) {
            free(h.buf);
            return xr_errf(e, "%s: tensor '%s': %d dimensions (0..%d allowed)", path, w->name, w->ndim, ST_MAX_DIMS);
        }
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, w->name) == 0) {
                free(h.buf);
                return xr_errf(e, "%s: tensor '%s' given twice", path, w->name);
            }
        uint64_t numel = 1;
        char num[64];
        sb_puts(&h, ",");
        sb_json_str(&h, w->name);
        sb_puts(&h, bf16 ? ":{\"dtype\":\"BF16\",\"shape\":[" : ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < w->ndim; d++) {
            if (w->shape[d] < 0) {
                free(h.buf);
                return xr_errf(e, "%s: tensor '%s': negative shape[%d]", path, w->name, d);
            }
            numel *= (uint64_t)w->shape[d];
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)w->shape[d]);
            sb_puts(&h, num);
        }
        if (numel && !w->data) {
            free(h.buf);
            return xr_errf(e, "%s: tensor '%s': no data", path, w->name);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + numel * esz));
        sb_puts(&h, num);
        off += numel * esz;
    }
    sb_puts(&h, "}");
    /* Pad with spaces so the data buffer starts 8-byte aligned: readers may then use it in place. */
    while ((8 + h.len) % 8) sb_puts(&h, " ");

    size_t plen = strlen(path);
    char *tmp = xr_malloc(plen + 5);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        xr_errf(e, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        free(h.buf);
        return -1;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    int bad = st_write_all(fd, len8, 8) || st_write_all(fd, h.buf, h.len);
    free(h.buf);
    /* Convert in chunks so a large tensor needs no second full-size buffer. */
    enum { CHUNK = 1 << 16 };
    unsigned char *cbuf = xr_malloc(CHUNK * 4);
    for (int i = 0; i < n && !bad; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (uint64_t)t[i].shape[d];
        for (uint64_t s = 0; s < numel && !bad; s += CHUNK) {
            size_t m = (size_t)(numel - s < CHUNK ? numel - s : CHUNK);
            const float *src = t[i].data + s;
            if (bf16) {
                for (size_t k = 0; k < m; k++) {
                    uint16_t v = st_f32_to_bf16(src[k]);
                    cbuf[2 * k] = (unsigned char)v;
                    cbuf[2 * k + 1] = (unsigned char)(v >> 8);
                }
            } else {
                for (size_t k = 0; k < m; k++) {
                    uint32_t v;
                    memcpy(&v, &src[k], 4);
                    for (int q = 0; q < 4; q++) cbuf[4 * k + q] = (unsigned char)(v >> (8 * q));
                }
            }
            bad = st_write_all(fd, cbuf, m * esz);
        }
    }
    free(cbuf);
    int err = errno;
    if (!bad && fsync(fd) != 0) bad = 1, err = errno;
    if (close(fd) != 0 && !bad) bad = 1, err = errno;
    if (bad) {
        unlink(tmp);
        xr_errf(e, "%s: write failed: %s", tmp, strerror(err));
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        xr_errf(e, "%s: cannot rename to %s: %s", tmp, path, strerror(err));
        free(tmp);
        return -1;
    }
    free(tmp);
    /* fsync the directory so the rename itself survives a crash. */
    char *dcopy = xr_strdup(path);
    (void)xr_fsync_path(dirname(dcopy)); /* best effort: some filesystems refuse fsync on directories */
    free(dcopy);
    return 0;
}
