/* groups.h: the training-group file `xrank mine` writes and `xrank train` reads: one row per (query, positive)
 * with the query's mined negatives and their scores, all as row indices into a dataset's token stores (never
 * copies of tokens). Writer (temp name + rename) and a reader that checks every index and shape, so a group
 * file that points outside its stores, or at another dataset, is a clear error. Layout: docs/FORMATS.md
 * "Training groups". */
#ifndef XR_GROUPS_H
#define XR_GROUPS_H
#include <stdint.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GROUPS_FORMAT "xrank.groups" /* root attribute xrank_format */
#define GROUPS_FORMAT_VERSION 1

typedef struct {
    int64_t n;          /* rows: one per (query, positive) */
    int k;              /* negative slots per row (num_negatives) */
    int64_t *query;     /* [n] query row */
    int64_t *positive;  /* [n] passage row of the positive */
    int64_t *negatives; /* [n * k] passage rows, best first; -1 = slot not filled (fewer negatives found) */
    float *scores;      /* [n * (1 + k)] retriever scores: the positive's, then each negative's; NaN = empty slot */
    float *ce_scores;   /* [n * (1 + k)] cross-encoder scores, same layout; NULL when no rescoring pass ran */
    /* what the indices point into */
    int64_t num_queries, num_passages;  /* rows of the dataset's stores */
    char tokenizer_fingerprint[32];     /* the stores' tokenizer (16 hex digits) */
    char dataset[4096];                 /* the dataset directory, as an absolute path when known */
    char *meta_json;                    /* how it was mined (models, options, counts): JSON text, may be NULL */
} GroupSet;

/* Check indices and shapes (queries in [0, num_queries), positives and negatives in [0, num_passages) or -1
 * for negatives, a filled slot never after an empty one). Returns 0, or -1 with e naming the row. */
int groups_validate(const GroupSet *g, const char *where, XrErr *e);
/* Validate, then write path (as path.tmp, fsync'd and renamed: a complete file or none). */
int groups_write(const char *path, const GroupSet *g, XrErr *e);
/* Read and validate a group file; g is filled (free with groups_free). */
int groups_read(const char *path, GroupSet *g, XrErr *e);
/* The group file was mined from a dataset with these store sizes and tokenizer: check it was this one. */
int groups_check_dataset(const GroupSet *g, const char *group_path, int64_t num_queries, int64_t num_passages,
                         const char *tokenizer_fingerprint, XrErr *e);
/* Negatives actually found in row r (the filled slots). */
int groups_row_negatives(const GroupSet *g, int64_t r);
void groups_free(GroupSet *g);

#ifdef __cplusplus
}
#endif
#endif
