/* embcache.c: the embedding cache (see embcache.h): content fingerprints, cache keys and paths, and the .npy
 * files written in place by several processes and committed by rename. */
#define _GNU_SOURCE
#include "embcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xr_tmpclean.h"

static inline uint64_t ec_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t ec_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t embcache_hash(const void *data, size_t n, uint64_t seed) {
    const unsigned char *p = data;
    uint64_t h = seed ^ (0x9E3779B97F4A7C15ull * (n + 1));
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = ec_rotl(h ^ (w * 0xC2B2AE3D27D4EB4Full), 31) * 0x9E3779B97F4A7C15ull;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    h = ec_rotl(h ^ (w * 0xC2B2AE3D27D4EB4Full), 31) * 0x9E3779B97F4A7C15ull;
    return ec_mix(h);
}

static int ec_name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ec_hash_file(const char *path, uint64_t *h, XrErr *e) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return xr_errf(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return xr_errf(e, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t n = (size_t)st.st_size;
    uint64_t v = 0;
    if (n > 0) {
        void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return xr_errf(e, "%s: cannot map: %s", path, strerror(errno));
        }
        madvise(m, n, MADV_SEQUENTIAL);
        v = embcache_hash(m, n, 0);
        munmap(m, n);
    }
    close(fd);
    *h = embcache_hash(&v, sizeof v, *h);
    return 0;
}

int embcache_model_fingerprint(const char *model_dir, uint64_t *fp, XrErr *e) {
    DIR *d = opendir(model_dir);
    if (!d) return xr_errf(e, "%s: cannot list: %s", model_dir, strerror(errno));
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (!strcmp(de->d_name, "config.json") || (l > 12 && !strcmp(de->d_name + l - 12, ".safetensors"))) {
            names = xr_realloc(names, sizeof(char *) * (n + 1));
            names[n++] = xr_strdup(de->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(char *), ec_name_cmp);
    uint64_t h = 0x6D6F64656C;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        h = embcache_hash(names[i], strlen(names[i]), h);
        char *p = xr_path_join(model_dir, names[i]);
        rc = ec_hash_file(p, &h, e);
        free(p);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    *fp = h;
    return rc;
}

uint64_t embcache_key(const EmbKey *k) {
    char buf[1024];
    int len = snprintf(buf, sizeof buf, "xrank-emb-v1|%016llx|%016llx|%s|%s|%d|%d|%s|", (unsigned long long)k->model_fp,
                       (unsigned long long)k->store_fp, k->store, k->pooling, k->normalize, k->max_len, k->precision);
    uint64_t h = embcache_hash(buf, (size_t)len, 0);
    return embcache_hash(k->prompt, strlen(k->prompt), h);
}

char *embcache_path(const char *dir, const EmbKey *k) {
    char name[96];
    snprintf(name, sizeof name, "%s-%016llx.npy", k->store, (unsigned long long)embcache_key(k));
    return xr_path_join(dir, name);
}

char *embcache_tmp_path(const char *path) {
    size_t n = strlen(path) + 8;
    char *t = xr_malloc(n);
    snprintf(t, n, "%s.tmp", path);
    return t;
}

/* The .npy v1.0 header for a float32 [rows, dim] C-order array, padded so the data starts 64-byte aligned. */
static size_t ec_header(int64_t rows, int dim, unsigned char *out, size_t cap) {
    char dict[160];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %d), }",
                     (long long)rows, dim);
    size_t total = 10 + (size_t)n + 1, pad = (64 - total % 64) % 64, hlen = (size_t)n + pad + 1;
    if (10 + hlen > cap) return 0;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                             (unsigned char)(hlen >> 8)};
    memcpy(out, pre, 10);
    memcpy(out + 10, dict, (size_t)n);
    memset(out + 10 + n, ' ', pad);
    out[10 + hlen - 1] = '\n';
    return 10 + hlen;
}

int embcache_lookup(const char *path, int64_t rows, int dim, XrErr *e) {
    if (e) e->msg[0] = 0;
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    unsigned char want[256], got[256];
    size_t hl = ec_header(rows, dim, want, sizeof want);
    FILE *f = fopen(path, "rb");
    int same = f && fread(got, 1, hl, f) == hl && !memcmp(got, want, hl) &&
               (int64_t)st.st_size == (int64_t)hl + rows * (int64_t)dim * 4;
    if (f) fclose(f);
    if (!same) {
        xr_errf(e, "%s: not an embedding matrix [%lld, %d]: it will be replaced", path, (long long)rows, dim);
        return 0;
    }
    return 1;
}

static int ec_io_rows(const char *path, int64_t rows, int dim, int64_t lo, int64_t hi, void *buf, int write,
                      XrErr *e) {
    if (lo < 0 || hi > rows || lo > hi) return xr_errf(e, "%s: rows [%lld, %lld) outside [0, %lld)", path,
                                                       (long long)lo, (long long)hi, (long long)rows);
    unsigned char hdr[256];
    size_t hl = ec_header(rows, dim, hdr, sizeof hdr);
    int fd = open(path, write ? O_WRONLY : O_RDONLY);
    if (fd < 0) return xr_errf(e, "%s: cannot open: %s", path, strerror(errno));
    size_t n = (size_t)(hi - lo) * (size_t)dim * 4, done = 0;
    off_t off = (off_t)hl + (off_t)lo * dim * 4;
    while (done < n) {
        ssize_t r = write ? pwrite(fd, (const char *)buf + done, n - done, off + (off_t)done)
                          : pread(fd, (char *)buf + done, n - done, off + (off_t)done);
        if (r <= 0) {
            int err = r < 0 ? errno : EIO;
            close(fd);
            return xr_errf(e, "%s: %s rows [%lld, %lld) failed: %s", path, write ? "writing" : "reading",
                           (long long)lo, (long long)hi, r == 0 ? "file too short" : strerror(err));
        }
        done += (size_t)r;
    }
    if (close(fd) != 0) return xr_errf(e, "%s: close failed: %s", path, strerror(errno));
    return 0;
}

int embcache_read_rows(const char *path, int64_t rows, int dim, int64_t lo, int64_t hi, float *out, XrErr *e) {
    return ec_io_rows(path, rows, dim, lo, hi, out, 0, e);
}

int embcache_create(const char *path, int64_t rows, int dim, XrErr *e) {
    char *tmp = embcache_tmp_path(path);
    unsigned char hdr[256];
    size_t hl = ec_header(rows, dim, hdr, sizeof hdr);
    xr_tmpclean_add(tmp); /* the creator's: SIGINT / SIGTERM / SIGHUP before the commit remove it */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = 0;
    if (fd < 0) {
        rc = xr_errf(e, "%s: cannot create: %s (set --cache-dir to a writable directory, or --no-cache)", tmp,
                     strerror(errno));
    } else {
        if (pwrite(fd, hdr, hl, 0) != (ssize_t)hl || ftruncate(fd, (off_t)hl + (off_t)rows * dim * 4) != 0)
            rc = xr_errf(e, "%s: cannot size the file: %s", tmp, strerror(errno));
        if (close(fd) != 0 && rc == 0) rc = xr_errf(e, "%s: close failed: %s", tmp, strerror(errno));
        if (rc) unlink(tmp);
    }
    if (rc) xr_tmpclean_forget(tmp);
    else xr_tmpclean_test_pause("embcache", tmp);
    free(tmp);
    return rc;
}

int embcache_write_rows(const char *path, int64_t rows, int dim, int64_t lo, int64_t hi, const float *in, XrErr *e) {
    char *tmp = embcache_tmp_path(path);
    int rc = ec_io_rows(tmp, rows, dim, lo, hi, (void *)in, 1, e);
    free(tmp);
    return rc;
}

int embcache_commit(const char *path, const char *desc_json, XrErr *e) {
    char *tmp = embcache_tmp_path(path);
    int rc = 0, fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) rc = xr_errf(e, "%s: fsync failed: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    if (rc == 0 && desc_json) {
        size_t n = strlen(path) + 8;
        char *jp = xr_malloc(n);
        snprintf(jp, n, "%.*s.json", (int)(strlen(path) - 4), path);
        FILE *f = fopen(jp, "w");
        int bad = !f || fputs(desc_json, f) < 0;
        if (f && fclose(f) != 0) bad = 1;
        if (bad) rc = xr_errf(e, "%s: cannot write", jp);
        free(jp);
    }
    if (rc == 0 && rename(tmp, path) != 0) rc = xr_errf(e, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (rc) unlink(tmp);
    xr_tmpclean_forget(tmp);
    free(tmp);
    return rc;
}

void embcache_abort(const char *path) {
    char *tmp = embcache_tmp_path(path);
    unlink(tmp);
    xr_tmpclean_forget(tmp);
    free(tmp);
}
