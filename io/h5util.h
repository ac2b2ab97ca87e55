/* h5util.h: small typed HDF5 helpers shared by the token stores, the dataset index and `xrank inspect`
 * (hid_t passed as int64_t so that callers need not include hdf5.h): errors, 1-D and string datasets,
 * attributes, reproducible file creation and the temp-name commit, the format sniff and a listing. */
#ifndef XR_H5UTIL_H
#define XR_H5UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Datasets h5_write_1d / h5_write_strings make (the token stores' layout). */
/* Elements per chunk: 256 Ki int32 tokens or 128 Ki int64 offsets = 1 MiB, the size the chunk cache and
 * deflate handle well; strings get as many rows as fit in 1 MiB. */
#define H5STORE_CHUNK_BYTES (1 << 20)
#define H5STORE_DEFLATE_LEVEL 1
/* Bound on what deflate can pack into one stored byte (its format's limit is ~1032:1): a dataset claiming more
 * elements than its stored bytes allow is damaged. */
#define H5_MAX_DEFLATE_RATIO 1100
/* Largest attribute xrank writes or reads (bytes of one string attribute, or of a string array). */
#define H5_ATTR_MAX_BYTES (1 << 20)
/* Time given to libhdf5 to read one old-style variable-length string attribute (in a child process). */
#define H5_VLEN_READ_SECONDS 5

/* Silence HDF5's automatic error stack printing; our messages name the file and dataset instead. */
void h5_quiet(void);
/* Fill e with "msg: <innermost HDF5 error>" and return -1. */
int h5_errf(XrErr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Create a 1-D chunked, shuffled, deflated dataset of n elements of type (H5T_NATIVE_*) and write data. */
int h5_write_1d(int64_t loc, const char *name, int64_t type, const void *data, int64_t n, const char *file,
                XrErr *e);
/* Fixed-length UTF-8 string dataset (NUL padded to the longest string). */
int h5_write_strings(int64_t loc, const char *name, const char *const *s, int64_t n, const char *file, XrErr *e);
/* Read a whole 1-D dataset converted to type (elem bytes each): returns malloc'd data, *n its length. */
void *h5_read_1d(int64_t loc, const char *name, int64_t type, size_t elem, int64_t *n, const char *file, XrErr *e);
/* Read a 1-D string dataset (fixed or variable length): malloc'd array of *n strings in one allocation. */
char **h5_read_strings(int64_t loc, const char *name, int64_t *n, const char *file, XrErr *e);
int h5_attr_write_str(int64_t obj, const char *name, const char *value, const char *file, XrErr *e);
int h5_attr_write_i64(int64_t obj, const char *name, int64_t value, const char *file, XrErr *e);
int h5_attr_write_strs(int64_t obj, const char *name, const char *const *v, int n, const char *file, XrErr *e);
/* String attributes are written fixed-length (no global heap). Reads check the class, the element count (1) and
 * the width (<= H5_ATTR_MAX_BYTES) before H5Aread; old variable-length strings are read in a child process with
 * a time limit. Return -1 with e filled when absent, of the wrong class or shape, or damaged. */
int h5_attr_read_str(int64_t obj, const char *name, char *out, size_t cap, const char *file, XrErr *e);
int h5_attr_read_i64(int64_t obj, const char *name, int64_t *out, const char *file, XrErr *e);
int h5_exists(int64_t loc, const char *path);
/* Group / object creation property list with time tracking off, so identical content gives identical bytes. */
int64_t h5_gcpl(void);
/* Create (truncate) an HDF5 file with time tracking off and a H5_USERBLOCK_BYTES user block for the checksum
 * record; -1 with e filled on failure. */
int64_t h5_create(const char *tmp, XrErr *e);
/* Close f (created at tmp), seal it (h5_seal: checksum record + fsync) and rename it over path when ok != 0 and
 * all went well; otherwise (or on any failure) remove tmp. Returns 0 when path now holds the complete file. */
int h5_commit(int64_t f, const char *tmp, const char *path, int ok, XrErr *e);

/* The checksum record (docs/FORMATS.md, "Checksum record"). libhdf5 1.10 is not safe on damaged files (faults
 * and overflows inside it, docs/RELIABILITY.md), and it parses a file before any check of ours can run: so every
 * HDF5 file xrank writes carries, in its user block (bytes libhdf5 skips), the crc32 of all the bytes after the
 * block, and readers check it with plain reads before libhdf5 opens the file. Little-endian layout:
 *   [0, 8) magic "XRANKSUM" · [8, 12) version (1) · [12, 16) record bytes (40) · [16, 24) user block bytes (512)
 *   · [24, 32) bytes covered (file size - 512) · [32, 36) their crc32 (zlib) · [36, 40) crc32 of the whole
 *   512-byte block with these 4 bytes taken as zero · [40, 512) zero. */
#define H5_USERBLOCK_BYTES 512
#define H5SUM_MAGIC "XRANKSUM"
#define H5SUM_VERSION 1
#define H5SUM_RECORD_BYTES 40
/* What h5_verify found. */
typedef enum {
    H5SUM_DAMAGED = -1, /* refused: damaged or unreadable (e names the file and says how) */
    H5SUM_NONE = 0,     /* no record: an HDF5 file that starts with its superblock (written by an older xrank, or
                         * not by xrank); left to the structural checks */
    H5SUM_OK = 1,       /* the record and every byte it covers check out */
    H5SUM_NOT_HDF5 = 2, /* neither a record nor an HDF5 file (e says so) */
} H5SumState;
typedef struct {
    H5SumState state;
    uint32_t crc32;   /* H5SUM_OK: the crc32 of the covered bytes */
    uint64_t covered; /* H5SUM_OK: bytes covered (file size - H5_USERBLOCK_BYTES) */
    int cached;       /* 1: this file (same device, inode, size, times and record) was verified earlier */
} H5SumCheck;
/* Write the checksum record into the user block of path (a closed file made by h5_create) and fsync it. */
int h5_seal(const char *path, XrErr *e);
/* Check path's checksum record and the bytes it covers with plain reads, libhdf5 untouched. Returns the state
 * (also in *c when c is not NULL); H5SUM_DAMAGED and H5SUM_NOT_HDF5 fill e, naming the file ("damaged: crc32 X,
 * written as Y"). A file verified once is remembered by device, inode, size, modification and change times and its
 * record, and not read again in this process, unless it was modified less than 2 s before the check (file times
 * advance in clock ticks: such a file is checked at every open). */
H5SumState h5_verify(const char *path, H5SumCheck *c, XrErr *e);
/* The one way xrank opens an HDF5 file it reads: h5_verify, then H5Fopen read-only of the very inode verified
 * (through /proc/self/fd). -1 with e filled. */
int64_t h5_open_read(const char *path, XrErr *e);
/* h5_open_read that also says what the check found (*state; H5SUM_NOT_HDF5 and H5SUM_DAMAGED give -1). */
int64_t h5_open_checked(const char *path, H5SumState *state, XrErr *e);

/* 1: an HDF5 file, *fmt = its root xrank_format attribute ("" when none); 0: not HDF5; -1: unreadable;
 * -2: HDF5 with an xrank_format attribute that cannot be read (damaged; e says why); -3: refused by its checksum
 * record before libhdf5 read it (h5_verify; e says why). */
int h5_file_format(const char *path, char *fmt, size_t cap, XrErr *e);
/* Read every attribute of every object in the file (as h5dump -A would, but bounded and without trusting the
 * file): returns how many could not be read, the first one described in *first. */
int h5_check_attrs(const char *path, XrErr *first);
/* List every group and dataset (shape, type) and the root attributes, like h5ls -r. */
int h5_list(const char *path, FILE *out, XrErr *e);

#ifdef __cplusplus
}
#endif
#endif
