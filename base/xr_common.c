/* xr_common.c: error reporting, checked allocation and file helpers. */
#define _POSIX_C_SOURCE 200809L
#include "xr_common.h"
#include "xr_fs.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <errno.h>

int xr_errf(XrErr *e, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The CLI installs an abort hook when MPI runs with several ranks, so one rank's error stops the job. */
void (*xr_abort_hook)(int code) = NULL;

void xr_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("xrank: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    if (xr_abort_hook) xr_abort_hook(1);
    exit(1);
}

void *xr_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) xr_die("out of memory allocating %zu bytes", n);
    return p;
}

void *xr_calloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) xr_die("out of memory allocating %zu x %zu bytes", n, sz);
    return p;
}

void *xr_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) xr_die("out of memory reallocating %zu bytes", n);
    return q;
}

char *xr_strdup(const char *s) {
    size_t n = strlen(s);
    char *d = xr_malloc(n + 1);
    memcpy(d, s, n + 1);
    return d;
}

char *xr_read_file(const char *path, size_t *len, XrErr *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        xr_errf(e, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = xr_read_stream(f, path, len, e);
    fclose(f);
    return buf;
}

char *xr_read_file_max(const char *path, uint64_t max, const char *what, size_t *len, XrErr *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        xr_errf(e, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
        xr_errf(e, "%s: %llu bytes, more than the %llu a %s may hold: damaged file?", path,
                (unsigned long long)st.st_size, (unsigned long long)max, what);
        fclose(f);
        return NULL;
    }
    size_t n = 0;
    char *buf = xr_read_stream(f, path, &n, e);
    fclose(f);
    if (buf && (uint64_t)n > max) { /* not a regular file: its size was known only after reading */
        xr_errf(e, "%s: more than the %llu bytes a %s may hold", path, (unsigned long long)max, what);
        free(buf);
        return NULL;
    }
    if (len) *len = n;
    return buf;
}

char *xr_path_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *p = xr_malloc(na + nb + 2);
    memcpy(p, a, na);
    size_t k = na;
    if (na && a[na - 1] != '/') p[k++] = '/';
    memcpy(p + k, b, nb + 1);
    return p;
}

int xr_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

double xr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint64_t xr_hash64(const void *data, size_t n, uint64_t seed) {
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}
