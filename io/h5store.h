/* h5store.h: HDF5 token stores: flat int32 tokens + int64 offsets + string ids per store, sharded over files.
 * The writer puts one shard in one file (temp name, renamed when complete); the reader opens a dataset
 * directory (index.h5 + shards), an index.h5, or a single shard, and reads batches of rows with one H5Dread
 * per shard touched, never one per row. Layout: docs/FORMATS.md "Token stores". */
#ifndef XR_H5STORE_H
#define XR_H5STORE_H
#include <stdint.h>
#include <stdio.h>

#include "h5util.h" /* the generic HDF5 helpers (h5_*), declared here before the split */
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define H5STORE_FORMAT_VERSION 1
#define H5STORE_SHARD_FORMAT "xrank.tokens"    /* root attribute xrank_format of a shard file */
#define H5STORE_INDEX_FORMAT "xrank.dataset"   /* root attribute xrank_format of index.h5 */
#define H5STORE_INDEX_FILE "index.h5"

/* What a shard says about itself (attributes of the /<name> group). */
typedef struct {
    const char *name;                  /* "queries" or "passages": the group holding the datasets */
    const char *tokenizer_kind;        /* "wordpiece" / "sentencepiece" */
    const char *tokenizer_fingerprint; /* 16 hex digits */
    int64_t vocab_size;
    int64_t max_tokens;                /* truncation cap the rows were cut at, 0 = none */
    int64_t shard_index, num_shards;   /* this shard's position among the store's shards */
    int64_t row_start;                 /* global index of this shard's first row */
    int64_t num_rows_total;            /* rows of the whole store */
    const char *const *sources;        /* input files, for provenance */
    int nsources;
} H5ShardMeta;

/* Write one shard: rows [0, n) with tokens[offsets[i] - offsets[0], offsets[i+1] - offsets[0]) and ids[i]
 * (ids may be NULL: the decimal global row number is used). Written to path + ".tmp" and renamed over path
 * only when complete; on error nothing is left under either name. */
int h5store_write_shard(const char *path, const H5ShardMeta *m, const int32_t *tokens, const int64_t *offsets,
                        int64_t n, const char *const *ids, XrErr *e);

/* Write the group /<name> of a dataset's index.h5 (open file handle `file`): attributes num_rows,
 * num_tokens, num_shards and datasets shard_files [S] (names relative to the index's directory) and
 * shard_row_offsets [S+1] (global row of each shard's first row, then the row count). */
int h5store_index_write_store(int64_t file, const char *name, const char *const *shard_files,
                              const int64_t *row_offsets, int nshards, int64_t num_tokens, const char *path,
                              XrErr *e);

/* A batch of rows read from a store: row r's tokens are tokens[offsets[r], offsets[r+1]). Buffers grow as
 * needed and are reused across reads; zero-initialise, free with tokbatch_free. */
typedef struct {
    int64_t n;
    int64_t *offsets; /* [n+1], offsets[0] = 0 */
    int32_t *tokens;
    size_t cap_rows, cap_tokens;
} TokBatch;
void tokbatch_free(TokBatch *b);

typedef struct TokenStore TokenStore;

/* Open the store `name` ("queries" / "passages") of: a dataset directory, its index.h5, or one shard file
 * (then the store is that shard's rows alone). Loads every shard's offsets (8 bytes per row) and checks
 * them (monotonic, starting at 0, ending at the token count) and that all shards share one tokenizer. */
TokenStore *h5store_open(const char *path, const char *name, XrErr *e);
void h5store_close(TokenStore *s);

int64_t h5store_rows(const TokenStore *s);
int64_t h5store_tokens(const TokenStore *s);
int h5store_num_shards(const TokenStore *s);
const char *h5store_tokenizer_kind(const TokenStore *s);
const char *h5store_tokenizer_fingerprint(const TokenStore *s);
int64_t h5store_vocab_size(const TokenStore *s);
int64_t h5store_max_tokens(const TokenStore *s);
/* Token count of a row (from the offsets in memory: no I/O), e.g. for length bucketing. */
int64_t h5store_row_len(const TokenStore *s, int64_t row);

/* Rows [i, j) into b: one H5Dread per shard the range touches. */
int h5store_read_range(TokenStore *s, int64_t i, int64_t j, TokBatch *b, XrErr *e);
/* The listed rows (any order, repeats allowed) into b, in the order given: the rows are sorted, merged into
 * runs and read with one H5Dread per shard touched (a union of hyperslabs; split every 1024 runs, which HDF5
 * handles in quadratic time). Random rows still decompress every 1 MiB chunk they touch: for many passes
 * over a store that fits in memory, h5store_load it once. */
int h5store_read_rows(TokenStore *s, const int64_t *rows, int64_t n, TokBatch *b, XrErr *e);
/* The whole store into memory (rows [0, N)). */
int h5store_load(TokenStore *s, TokBatch *b, XrErr *e);
/* The ids of rows [i, j): returns a malloc'd array of j - i strings living in the same allocation (one free). */
char **h5store_read_ids(TokenStore *s, int64_t i, int64_t j, XrErr *e);

/* ---- inspection: read a shard or an index without trusting it (`xrank inspect`) ---- */

/* What h5store_scan_shard found in one shard file. Problems are counted and the first few described. */
typedef struct {
    char kind[64], fingerprint[64];
    int64_t rows, ntok, nids, row_start, shard_index, num_shards, num_rows_total, vocab_size, max_tokens;
    int64_t *lens; /* [rows] token count of each row (0 where the offsets are broken); free() it */
    int64_t tok_min, tok_max, tok_out_of_range; /* ids < 0 or >= vocab_size */
    int64_t offsets_backwards;                   /* rows whose end offset is below their start */
    int nproblems;
    char problems[8][320];
} ShardScan;
/* Read a shard's attributes, offsets, ids count and every token (in 4 MiB pieces) and check them: offsets
 * start at 0, never go back and end at the token count; ids count = rows; ids in [0, vocab_size). Returns
 * -1 only when the file cannot be read as a shard at all. */
int h5store_scan_shard(const char *path, const char *name, ShardScan *s, XrErr *e);
/* The shard table of store `name` in an index.h5: files (one allocation), row offsets [*ns + 1], tokens. */
int h5store_index_shards(const char *index_path, const char *name, char ***files, int64_t **row_off, int *ns,
                         int64_t *num_tokens, XrErr *e);

#ifdef __cplusplus
}
#endif
#endif
