/* h5sum.c: the checksum record of the HDF5 files xrank writes (h5util.h, docs/FORMATS.md "Checksum record"):
 * sealing a closed file (crc32 of every byte after the user block, written into the block) and verifying one
 * with plain reads before libhdf5 parses it, remembering the files already verified in this process. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "h5_internal.h"

/* The 8 bytes every HDF5 superblock starts with. */
static const unsigned char H5_SIGNATURE[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
enum { H5SUM_PIECE = 4 << 20, H5SUM_CRC_AT = 36 };

static void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* crc32 of the whole user block with its own crc field taken as zero: a flip anywhere in the block shows. */
static uint32_t block_crc(const unsigned char *b) {
    static const unsigned char zero[4];
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, b, H5SUM_CRC_AT);
    c = crc32(c, zero, 4);
    c = crc32(c, b + H5SUM_CRC_AT + 4, H5_USERBLOCK_BYTES - H5SUM_CRC_AT - 4);
    return (uint32_t)c;
}

static ssize_t pread_full(int fd, void *buf, size_t n, off_t at) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, at + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* crc32 of bytes [from, from + n) of fd, read in 4 MiB pieces. */
static int crc_range(int fd, uint64_t from, uint64_t n, uint32_t *out, const char *path, XrErr *e) {
    unsigned char *buf = xr_malloc(H5SUM_PIECE);
    uLong c = crc32(0L, Z_NULL, 0);
    int rc = 0;
    for (uint64_t done = 0; done < n;) {
        size_t want = n - done < H5SUM_PIECE ? (size_t)(n - done) : H5SUM_PIECE;
        ssize_t r = pread_full(fd, buf, want, (off_t)(from + done));
        if (r != (ssize_t)want) {
            rc = xr_errf(e, "%s: read failed at byte %llu: %s", path, (unsigned long long)(from + done),
                         r < 0 ? strerror(errno) : "file shorter than when it was opened");
            break;
        }
        c = crc32(c, buf, (uInt)want);
        done += want;
    }
    free(buf);
    *out = (uint32_t)c;
    return rc;
}

int h5_seal(const char *path, XrErr *e) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return xr_errf(e, "%s: cannot open to seal: %s", path, strerror(errno));
    struct stat sb;
    unsigned char head[8];
    int rc = 0;
    if (fstat(fd, &sb) != 0) {
        rc = xr_errf(e, "%s: cannot stat: %s", path, strerror(errno));
    } else if (sb.st_size < H5_USERBLOCK_BYTES + 8 || pread_full(fd, head, 8, H5_USERBLOCK_BYTES) != 8 ||
               memcmp(head, H5_SIGNATURE, 8)) {
        /* an internal error: every writer goes through h5_create */
        rc = xr_errf(e, "%s: no HDF5 superblock after a %d-byte user block: not made by h5_create", path,
                     H5_USERBLOCK_BYTES);
    }
    uint64_t covered = rc == 0 ? (uint64_t)sb.st_size - H5_USERBLOCK_BYTES : 0;
    uint32_t crc = 0;
    if (rc == 0) rc = crc_range(fd, H5_USERBLOCK_BYTES, covered, &crc, path, e);
    if (rc == 0) {
        unsigned char b[H5_USERBLOCK_BYTES] = {0};
        memcpy(b, H5SUM_MAGIC, 8);
        put_le(b + 8, H5SUM_VERSION, 4);
        put_le(b + 12, H5SUM_RECORD_BYTES, 4);
        put_le(b + 16, H5_USERBLOCK_BYTES, 8);
        put_le(b + 24, covered, 8);
        put_le(b + 32, crc, 4);
        put_le(b + H5SUM_CRC_AT, block_crc(b), 4);
        ssize_t w;
        do {
            w = pwrite(fd, b, sizeof b, 0);
        } while (w < 0 && errno == EINTR);
        if (w != (ssize_t)sizeof b)
            rc = xr_errf(e, "%s: cannot write the checksum record: %s", path, w < 0 ? strerror(errno) : "short write");
    }
    if (rc == 0 && fsync(fd) != 0) rc = xr_errf(e, "%s: fsync failed: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == 0) rc = xr_errf(e, "%s: close failed: %s", path, strerror(errno));
    return rc;
}

/* ---- files verified in this process: a train or inspect run opens index.h5 several times (the index, then each
 * store) and each shard once per reader; a second check of unchanged bytes would only cost a read. Process-wide
 * like libhdf5's own open-file table; the lock covers threads that open stores concurrently. A file is known by
 * device, inode, size, modification and change times and its record. File times advance in clock ticks (a few
 * ms), so a file changed in place within the tick of its last change could keep them all: as git does with its
 * index ("racy git"), a file modified less than H5SUM_RACY_SECONDS before its check is not remembered (checked
 * again at each open; the files a run reads were written long before it). */
#define H5SUM_RACY_SECONDS 2
typedef struct {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    unsigned char record[H5SUM_RECORD_BYTES];
} Verified;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static Verified *g_seen;
static size_t g_nseen, g_capseen;

static Verified verified_key(const struct stat *sb, const unsigned char *record) {
    Verified v;
    memset(&v, 0, sizeof v);
    v.dev = sb->st_dev, v.ino = sb->st_ino, v.size = sb->st_size, v.mtime = sb->st_mtim, v.ctime = sb->st_ctim;
    memcpy(v.record, record, H5SUM_RECORD_BYTES);
    return v;
}

static int same_file(const Verified *a, const Verified *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
           a->ctime.tv_nsec == b->ctime.tv_nsec && !memcmp(a->record, b->record, H5SUM_RECORD_BYTES);
}

static int verified_before(const Verified *k) {
    pthread_mutex_lock(&g_lock);
    int hit = 0;
    for (size_t i = 0; i < g_nseen && !hit; i++) hit = same_file(&g_seen[i], k);
    pthread_mutex_unlock(&g_lock);
    return hit;
}

static void verified_add(const Verified *k) {
    pthread_mutex_lock(&g_lock);
    if (g_nseen == g_capseen) {
        g_capseen = g_capseen ? 2 * g_capseen : 16;
        g_seen = xr_realloc(g_seen, sizeof *g_seen * g_capseen);
    }
    g_seen[g_nseen++] = *k;
    pthread_mutex_unlock(&g_lock);
}

/* No record: an HDF5 file that starts with its superblock has none by design (older xrank, h5py); one whose
 * superblock sits after a user block that holds no record is an xrank file with its record damaged (or a foreign
 * file with a user block of its own: refused the same, xrank reads only its own formats). H5Fis_hdf5 only looks
 * for the signature, it parses nothing. */
static H5SumState no_record(const char *path, const unsigned char *head, ssize_t got, XrErr *e) {
    if (got >= 8 && !memcmp(head, H5_SIGNATURE, 8)) return H5SUM_NONE;
    h5_quiet();
    htri_t is = H5Fis_hdf5(path);
    H5Eclear2(H5E_DEFAULT);
    if (is > 0) {
        xr_errf(e, "%s: damaged: an HDF5 file with a user block that holds no valid xrank checksum record (it should "
                   "start with \"%s\"): its record is damaged, or it was not written by xrank",
                path, H5SUM_MAGIC);
        return H5SUM_DAMAGED;
    }
    xr_errf(e, "%s: cannot open as HDF5 (not an HDF5 file%s)", path, got == 0 ? ": empty" : "");
    return H5SUM_NOT_HDF5;
}

static H5SumState verify_fd(int fd, const char *path, H5SumCheck *c, XrErr *e) {
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        xr_errf(e, "%s: cannot stat: %s", path, strerror(errno));
        return H5SUM_DAMAGED;
    }
    if (!S_ISREG(sb.st_mode)) {
        xr_errf(e, "%s: not a regular file", path);
        return H5SUM_DAMAGED;
    }
    unsigned char b[H5_USERBLOCK_BYTES];
    ssize_t got = pread_full(fd, b, sizeof b, 0);
    if (got < 0) {
        xr_errf(e, "%s: cannot read: %s", path, strerror(errno));
        return H5SUM_DAMAGED;
    }
    int cut_in_magic = got > 0 && got < 8 && !memcmp(b, H5SUM_MAGIC, (size_t)got);
    if (!cut_in_magic && (got < 8 || memcmp(b, H5SUM_MAGIC, 8))) return no_record(path, b, got, e);
    if (got < H5_USERBLOCK_BYTES) {
        xr_errf(e, "%s: damaged: %lld bytes, shorter than its %d-byte checksum record block (truncated)", path,
                (long long)got, H5_USERBLOCK_BYTES);
        return H5SUM_DAMAGED;
    }
    uint32_t version = (uint32_t)get_le(b + 8, 4);
    if (version != H5SUM_VERSION) { /* a later version may lay the record out otherwise: checked first */
        xr_errf(e, "%s: checksum record version %u; this xrank reads version %d (written by a newer xrank, or the "
                   "record is damaged)",
                path, version, H5SUM_VERSION);
        return H5SUM_DAMAGED;
    }
    uint32_t rec_stored = (uint32_t)get_le(b + H5SUM_CRC_AT, 4), rec_crc = block_crc(b);
    if (rec_crc != rec_stored) {
        xr_errf(e, "%s: damaged: its checksum record (the first %d bytes) fails its own crc32 (%08x, written as %08x)",
                path, H5_USERBLOCK_BYTES, rec_crc, rec_stored);
        return H5SUM_DAMAGED;
    }
    uint64_t block = get_le(b + 16, 8), covered = get_le(b + 24, 8);
    uint32_t want = (uint32_t)get_le(b + 32, 4);
    if (block != H5_USERBLOCK_BYTES || get_le(b + 12, 4) != H5SUM_RECORD_BYTES) {
        xr_errf(e, "%s: checksum record of %llu bytes in a %llu-byte block; version %d has %d in %d", path,
                (unsigned long long)get_le(b + 12, 4), (unsigned long long)block, H5SUM_VERSION, H5SUM_RECORD_BYTES,
                H5_USERBLOCK_BYTES);
        return H5SUM_DAMAGED;
    }
    uint64_t size = (uint64_t)sb.st_size, written = covered + H5_USERBLOCK_BYTES;
    if (covered > (uint64_t)INT64_MAX - H5_USERBLOCK_BYTES || size != written) {
        xr_errf(e, "%s: damaged: %llu bytes, written as %llu (%s)", path, (unsigned long long)size,
                (unsigned long long)written, size < written ? "truncated" : "bytes added at the end");
        return H5SUM_DAMAGED;
    }
    Verified key = verified_key(&sb, b);
    if (c) c->crc32 = want, c->covered = covered;
    if (verified_before(&key)) {
        if (c) c->cached = 1;
        return H5SUM_OK;
    }
    (void)posix_fadvise(fd, H5_USERBLOCK_BYTES, 0, POSIX_FADV_SEQUENTIAL);
    uint32_t crc;
    if (crc_range(fd, H5_USERBLOCK_BYTES, covered, &crc, path, e) < 0) return H5SUM_DAMAGED;
    if (crc != want) {
        xr_errf(e, "%s: damaged: crc32 %08x, written as %08x (over its %llu bytes after the %d-byte user block)", path,
                crc, want, (unsigned long long)covered, H5_USERBLOCK_BYTES);
        return H5SUM_DAMAGED;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (sb.st_mtim.tv_sec + H5SUM_RACY_SECONDS < now.tv_sec) verified_add(&key);
    return H5SUM_OK;
}

/* Opens path and checks it (verify_fd); *fd is the open descriptor (the caller closes it) or -1. */
static H5SumState open_verify(const char *path, H5SumCheck *c, int *fd, XrErr *e) {
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        xr_errf(e, "%s: cannot open as HDF5 (%s)", path, errno == ENOENT ? "no such file" : strerror(errno));
        return H5SUM_DAMAGED;
    }
    return verify_fd(*fd, path, c, e);
}

H5SumState h5_verify(const char *path, H5SumCheck *c, XrErr *e) {
    if (c) memset(c, 0, sizeof *c);
    int fd;
    H5SumState st = open_verify(path, c, &fd, e);
    if (fd >= 0) close(fd);
    if (c) c->state = st;
    return st;
}

int64_t h5_open_checked(const char *path, H5SumState *state, XrErr *e) {
    hid_t f = -1;
    int fd;
    H5SumState st = open_verify(path, NULL, &fd, e);
    if (st == H5SUM_OK || st == H5SUM_NONE) {
        /* libhdf5 opens the inode just verified, through the descriptor's /proc link, not whatever the path names
         * by now (another process may have renamed a new file onto it); the path where /proc is not mounted */
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        h5_quiet();
        f = H5Fopen(access(proc, R_OK) == 0 ? proc : path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) h5_errf(e, "%s: cannot open as HDF5", path);
    }
    if (fd >= 0) close(fd);
    if (state) *state = st;
    return f;
}

int64_t h5_open_read(const char *path, XrErr *e) { return h5_open_checked(path, NULL, e); }
