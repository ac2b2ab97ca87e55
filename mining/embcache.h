/* embcache.h: the on-disk embedding cache of `xrank mine`, so re-mining with other filters does not re-embed.
 * One float32 .npy matrix [rows, dim] per (model, store, prompt, pooling, normalisation, max length,
 * precision), named <dir>/<store>-<key>.npy with a .json beside it saying what the key stands for. The file is
 * created under a temporary name, every rank writes its rows in place (pwrite: one file, any rank count), and
 * it is renamed only when all rows are there, so a file with the final name is always complete. */
#ifndef XR_EMBCACHE_H
#define XR_EMBCACHE_H
#include <stdint.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fast 64-bit content hash (8 bytes a step); not cryptographic, stable across machines. */
uint64_t embcache_hash(const void *data, size_t n, uint64_t seed);
/* Fingerprint of a model directory's content: config.json and every *.safetensors file (sorted by name). */
int embcache_model_fingerprint(const char *model_dir, uint64_t *fp, XrErr *e);

/* What identifies a set of embeddings. */
typedef struct {
    uint64_t model_fp, store_fp;
    const char *store;     /* "queries" / "passages" */
    const char *prompt;    /* "" = none */
    const char *pooling;   /* "cls" / "mean" */
    int normalize, max_len;
    const char *precision; /* "fp32-cpu", "bf16-cuda", ... */
} EmbKey;
uint64_t embcache_key(const EmbKey *k);
/* <dir>/<store>-<key as 16 hex>.npy (malloc'd). */
char *embcache_path(const char *dir, const EmbKey *k);

/* 1: a complete cache file of exactly rows x dim float32 is there; 0: none (or one of another shape, which is
 * reported in e->msg as a note and will be replaced). */
int embcache_lookup(const char *path, int64_t rows, int dim, XrErr *e);
/* Rows [lo, hi) of a cache file (or of the temporary file while it is written) into out. */
int embcache_read_rows(const char *path, int64_t rows, int dim, int64_t lo, int64_t hi, float *out, XrErr *e);

/* Writing, in three steps: one process creates <path>.tmp with the .npy header and full size; every writer
 * puts its rows; one process commits (fsync + rename) and writes the .json description (desc_json). */
char *embcache_tmp_path(const char *path);
int embcache_create(const char *path, int64_t rows, int dim, XrErr *e);
int embcache_write_rows(const char *path, int64_t rows, int dim, int64_t lo, int64_t hi, const float *in, XrErr *e);
int embcache_commit(const char *path, const char *desc_json, XrErr *e);
void embcache_abort(const char *path);

#ifdef __cplusplus
}
#endif
#endif
