/* xr_common.h: error reporting, logging and small helpers shared by every module.
 * Library functions that can meet bad user input return 0 / -1 and fill an XrErr with a message that
 * names the file, line, tensor or byte offset; the CLI prints it and exits non-zero. Internal bugs assert. */
#ifndef XR_COMMON_H
#define XR_COMMON_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char msg[2048];
} XrErr;

/* Format a message into e (if non-NULL) and return -1, so callers can `return xr_errf(e, ...)`. */
int xr_errf(XrErr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "xrank: error: ..." to stderr and exit(1) (MPI_Abort when MPI is running with several ranks). */
void xr_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Checked allocation: dies with the size on failure. */
void *xr_malloc(size_t n);
void *xr_calloc(size_t n, size_t sz);
void *xr_realloc(void *p, size_t n);
char *xr_strdup(const char *s);
/* Read a whole file; returns NULL and fills e on failure. *len excludes the terminating NUL that is added. */
char *xr_read_file(const char *path, size_t *len, XrErr *e);
/* The same for a file whose size the caller bounds (a vocabulary, a JSON config): a file over max bytes is
 * refused from its size before anything is read or allocated ("PATH: N bytes, more than the M a WHAT may
 * hold"), so a damaged or hostile file cannot make us allocate gigabytes. */
char *xr_read_file_max(const char *path, uint64_t max, const char *what, size_t *len, XrErr *e);
/* The bound for JSON files of a model directory (config.json, tokenizer.json, ...): 1 GiB, 30x the largest
 * tokenizer.json on the hub we know of. */
#define XR_JSON_MAX_BYTES (1ull << 30)
/* Path join into a fresh string. */
char *xr_path_join(const char *a, const char *b);
int xr_file_exists(const char *path);
/* Monotonic wall clock in seconds. */
double xr_now(void);
/* 32-bit FNV-1a style fingerprint helpers (64-bit): stable across runs and machines. */
uint64_t xr_hash64(const void *data, size_t n, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
