/* xr_fs.c: file and directory helpers (xr_fs.h). */
#define _POSIX_C_SOURCE 200809L
#include "xr_fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *xr_read_stream(FILE *f, const char *name, size_t *len, XrErr *e) {
    size_t cap = 1 << 16, n = 0;
    char *buf = xr_malloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xr_realloc(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        xr_errf(e, "%s: read error", name);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int xr_write_file(const char *path, const void *data, size_t n, int sync, XrErr *e) {
    FILE *f = fopen(path, "wb");
    if (!f) return xr_errf(e, "cannot write %s: %s", path, strerror(errno));
    int ok = fwrite(data, 1, n, f) == n;
    if (ok && sync && (fflush(f) || fsync(fileno(f)))) ok = 0;
    int err = errno;
    if (fclose(f)) ok = 0, err = errno;
    return ok ? 0 : xr_errf(e, "cannot write %s: %s", path, strerror(err ? err : EIO));
}

int xr_copy_file(const char *src, const char *dst, int sync, XrErr *e) {
    size_t len;
    char *data = xr_read_file(src, &len, e);
    if (!data) return -1;
    int rc = xr_write_file(dst, data, len, sync, e);
    free(data);
    return rc;
}

int xr_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int xr_dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *de;
    int empty = 1;
    while (empty && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

int xr_remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char *p = xr_path_join(dir, de->d_name);
            unlink(p);
            free(p);
        }
        closedir(d);
    }
    return rmdir(dir);
}

/* Empty the open directory dfd (taken over: closed on return), depth levels below the tree's top. Each entry is
 * unlinked; one that is a directory (EISDIR) is opened relative to dfd with O_NOFOLLOW, emptied the same way and
 * removed. So a symbolic link is removed, never entered, even one put in place of a directory meanwhile (openat
 * then fails with ELOOP or ENOTDIR), and nothing outside the tree is touched. 0, or -1 with errno of the first
 * failure (the removal goes on past it). */
static int rm_inside(int dfd, int depth) {
    DIR *d = fdopendir(dfd);
    if (!d) {
        int err = errno;
        close(dfd);
        errno = err;
        return -1;
    }
    int rc = 0, err = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
        if (unlinkat(dirfd(d), name, 0) == 0 || errno == ENOENT) continue;
        if (errno == EISDIR || errno == EPERM) { /* a directory (EPERM is POSIX's word for it) */
            int sub = depth < 256 ? openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
            if (sub < 0 && depth >= 256) errno = ELOOP;
            if (sub >= 0 && rm_inside(sub, depth + 1) == 0 &&
                (unlinkat(dirfd(d), name, AT_REMOVEDIR) == 0 || errno == ENOENT))
                continue;
        }
        if (!err) err = errno;
        rc = -1;
    }
    closedir(d);
    errno = err;
    return rc;
}

int xr_remove_tree(const char *path) {
    if (unlink(path) == 0 || errno == ENOENT) return 0; /* a file or a link: gone */
    if (errno != EISDIR && errno != EPERM) return -1;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    int rc = rm_inside(fd, 0), err = errno;
    if (rmdir(path) == 0 || errno == ENOENT) return rc == 0 ? 0 : (errno = err, -1);
    if (rc) errno = err; /* the first failure inside says more than ENOTEMPTY */
    return -1;
}

int xr_fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    errno = err;
    return rc;
}

char *xr_float_str(char buf[32], float v) {
    if (!isfinite(v)) {
        strcpy(buf, "null");
        return buf;
    }
    /* %g drops trailing zeros, so 6 digits already gives the shortest form of short values; 9 always
     * round-trips a float. */
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, 32, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}
