/* dataset.h: xrank dataset directories: a TextSet tokenized into token stores (queries-NNNNN.h5,
 * passages-NNNNN.h5) cut into shards by a rule that depends only on the data, plus index.h5 (shard table,
 * qrels, given negatives, labels). The steps are separate functions so `xrank tokenize` can spread them
 * over MPI ranks; ds_build runs them all in one process. Layout: docs/FORMATS.md "Token stores". */
#ifndef XR_DATASET_H
#define XR_DATASET_H
#include <stdint.h>

#include "textread.h"
#include "tokenizer.h"
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DS_DEFAULT_SHARD_BYTES (256LL << 20)

/* Tokenizer identity written into every file: kind name, fingerprint as 16 hex digits, vocabulary size. */
typedef struct {
    char kind[32];
    char fingerprint[24];
    int64_t vocab_size;
} DsTokInfo;
void ds_tok_info(const Tokenizer *t, DsTokInfo *ti);

/* Rows [*lo, *hi) of n rows for rank r of size ranks, balanced by text bytes (contiguous, in rank order). */
void ds_slice(const TextList *texts, int rank, int size, int64_t *lo, int64_t *hi);

/* Tokenize rows [lo, hi) without special tokens, each cut to its first max_tokens ids (0 = no cap), on
 * `threads` OpenMP threads (the result does not depend on it). Returns a malloc'd token array (*ntok ids) and
 * fills lens[hi - lo]; *ntrunc = rows that were cut. */
int32_t *ds_tokenize(const Tokenizer *t, const TextList *texts, int64_t lo, int64_t hi, int64_t max_tokens,
                     int threads, int64_t *lens, int64_t *ntok, int64_t *ntrunc);

/* Cut n rows into shards of about shard_bytes (4 bytes a token + 8 an offset + the id's bytes), never
 * an empty shard unless n = 0 (then one empty shard). Depends on the lengths and ids only. Returns the
 * shard count; *row_off (malloc'd, [count + 1]) the first row of each shard, then n. ids may be empty
 * (n = 0 texts): the decimal row numbers are the ids. */
int ds_plan_shards(const int64_t *lens, int64_t n, const TextList *ids, int64_t shard_bytes, int64_t **row_off);

/* "queries-00003.h5" */
void ds_shard_name(char *buf, size_t cap, const char *store, int k);

/* What one store says in every shard and in the index. */
typedef struct {
    const char *name; /* "queries" / "passages" */
    const DsTokInfo *tok;
    int64_t max_tokens;
    const TextSet *ts; /* for ids and sources */
    const TextList *ids;
    int nshards;
    const int64_t *row_off; /* [nshards + 1] */
} DsStore;

/* Write shard k of a store into dir: tokens = the shard's tokens, lens = its rows' lengths. */
int ds_write_shard(const char *dir, const DsStore *s, int k, const int32_t *tokens, const int64_t *lens, XrErr *e);

/* Write dir/index.h5 (temp name + rename): root attributes, the two stores' shard tables, qrels, negatives,
 * labels. ntok[2] / ntrunc[2]: token and truncated-row counts of queries and passages. */
int ds_write_index(const char *dir, const TextSet *ts, const DsStore *queries, const DsStore *passages,
                   const int64_t *ntok, const int64_t *ntrunc, XrErr *e);

/* Output directory: written as <out>.tmp.<host>.<pid> and renamed to <out> when complete; removed if SIGINT,
 * SIGTERM or SIGHUP ends the process first (base/xr_tmpclean.h). An existing <out> is an error unless overwrite,
 * and even then only an xrank dataset directory (index.h5 inside) or an empty directory is replaced. */
int ds_output_check(const char *out, int overwrite, XrErr *e);
char *ds_output_begin(const char *out, XrErr *e); /* creates and returns the temporary directory */
int ds_output_commit(const char *tmpdir, const char *out, int overwrite, XrErr *e);
void ds_output_abort(const char *tmpdir);          /* removes the temporary directory and what is in it */
/* Temporary directories of earlier runs that died without cleaning up: xr_tmpclean_sweep (base/xr_tmpclean.h). */

typedef struct {
    int64_t max_query_tokens, max_passage_tokens; /* 0 = no cap */
    int64_t shard_bytes;                          /* 0 = DS_DEFAULT_SHARD_BYTES */
    int threads;
    int overwrite;
} DsOptions;

typedef struct {
    int64_t rows[2], tokens[2], truncated[2];
    int shards[2];
    double text_bytes;
} DsReport;

/* Everything in one process: tokenize both stores, write shards and index into out (atomically). */
int ds_build(const TextSet *ts, const Tokenizer *t, const DsOptions *o, const char *out, DsReport *rep, XrErr *e);

/* The index of a dataset (directory or its index.h5), for mining / training / inspect. */
typedef struct {
    char tokenizer_kind[32], tokenizer_fingerprint[32], source_format[32];
    int64_t vocab_size, num_queries, num_passages, format_version;
    int64_t nqrels;
    int64_t *qrel_query, *qrel_passage;
    int32_t *qrel_grade;
    float *qrel_score; /* NULL when absent */
    int64_t nneg;
    int64_t *neg_query, *neg_passage;
    float *neg_score; /* NULL when absent */
    int64_t nlab;
    int64_t *lab_query, *lab_passage;
    float *lab_label;
} DsIndex;
/* Read and check the index (num_rows against the shard tables, every row index inside its store, the tables
 * sorted by query): what mine, train and eval may index with. */
int ds_read_index(const char *path, DsIndex *ix, XrErr *e);
/* The same read without those checks, for `xrank inspect`, which reports each problem itself. */
int ds_read_index_unchecked(const char *path, DsIndex *ix, XrErr *e);
void ds_index_free(DsIndex *ix);

#ifdef __cplusplus
}
#endif
#endif
