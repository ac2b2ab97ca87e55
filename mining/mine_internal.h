/* mine_internal.h: the state of one mining run (Mine) and what the pipeline's files share inside mining/: the
 * dedup (mine_dedup.c), the embeddings and their cache (mine_embed.c), the block-wise search and selection
 * (mine_search.c) and the cross-encoder rescoring (mine_ce.c); mine.c drives them. Not a public header. */
#ifndef XR_MINE_INTERNAL_H
#define XR_MINE_INTERNAL_H
#include <stdint.h>

#include "dataset.h"
#include "h5store.h"
#include "mine.h"
#include "xr_progress.h"

typedef struct {
    Comm *c;
    int rank, size;
    const MineOpts *o;
    MineResult *r;
    SelectOpts sel;
    DsIndex ix;
    int have_ix;
    TokenStore *qs, *ps;
    int64_t nq, np;
    int dim;
    /* positives per query (CSR), distinct by canonical passage, and the mined queries */
    int64_t *pos_off, *pos_row;
    int64_t *mined, nmined;
    /* all qrels per query (CSR, any grade) for the metrics */
    int64_t *qrel_off;
    /* passages: this rank's rows, hashes of all rows, duplicate map, canonical rows */
    int64_t plo, phi, qlo, qhi;
    uint64_t *phash, *qhash;
    int64_t *canon;
    int64_t *crow, ncanon, coff, nlocal;
    float *pemb, *qemb;
    /* canonical passages whose tokens equal each query's (CSR over queries): excluded from the negatives */
    int64_t *qx_off, *qx_row;
    /* progress */
    XrProgress prog;
    int64_t prog_base;
    int show;
} Mine;

/* rows read from a store at a time */
#define MINE_READ_ROWS 65536

static inline int64_t mine_min64(int64_t a, int64_t b) { return a < b ? a : b; }

static inline void mine_batch_stats_add(BatchRunStats *acc, const BatchRunStats *b) {
    acc->items += b->items;
    acc->batches += b->batches;
    acc->real_tokens += b->real_tokens;
    acc->padded_tokens += b->padded_tokens;
}

/* progress line on stderr (rank 0 with o->progress): mine.c */
void mine_progress_begin(Mine *m, const char *phase, int64_t total);
void mine_progress_line(Mine *m, int64_t done, int force);
void mine_progress_end(Mine *m);

/* ---- mine_dedup.c: partition, row hashes, the duplicate map ---- */

/* A row's hash with its index, sorted by (hash, row). */
typedef struct {
    uint64_t h;
    int64_t i;
} MineHashIdx;

/* Rows [*lo, *hi) of rank `rank`: whole windows of `window` rows counted from row 0, cut so that each rank gets
 * about the same number of tokens (specials included). Depends only on the store, window and size. */
/* Rows per embedding window of a store of n rows: batch_size * bucket_batches, made smaller (whole batches) for a
 * store of fewer than MINE_MIN_WINDOWS such windows, so that its rows still split over the ranks (a 2,000-row corpus
 * was one window of 2,048: rank 0 embedded it all while the others waited). Depends on n and the options only,
 * never on the rank count. */
#define MINE_MIN_WINDOWS 16
int64_t mine_window(const MineOpts *o, int64_t n);
void mine_partition(const TokenStore *s, int64_t window, int rank, int size, int64_t *lo, int64_t *hi);
/* Hash this rank's rows [lo, hi) of a store and share them: every rank gets all n hashes (collective). */
int mine_all_hashes(Mine *m, TokenStore *s, int64_t lo, int64_t hi, uint64_t **all, XrErr *e);
/* m->canon[i] = the first row whose tokens equal row i's; the hashes sorted by (hash, row) to *sorted_out if
 * not NULL (free it). */
int mine_canonical(Mine *m, MineHashIdx **sorted_out, XrErr *e);
/* Passages whose text equals the query (both peers drop them; select.h): m->qx_off / m->qx_row, from
 * mine_canonical's sorted hashes. */
int mine_query_equal_passages(Mine *m, const MineHashIdx *hs, XrErr *e);

/* ---- mine_embed.c ---- */

/* This rank's embeddings of a store (rows [lo, hi)), from the cache or the encoder; the cache is (re)written
 * after an embedding pass. which: 0 queries, 1 passages. Cache trouble is a warning, never a failure. */
int mine_embeddings(Mine *m, int which, TokenStore *s, int64_t lo, int64_t hi, uint64_t store_fp, float **out,
                    XrErr *e);

/* ---- mine_search.c ---- */

/* Search, rescore and select every mined query, block by block; rank 0 gets the groups and the metrics. */
int mine_search(Mine *m, XrErr *e);

/* ---- mine_ce.c ---- */

/* Cross-encoder scores of a block's candidates (the first ncand of each query's k merged rows cand_rows, -1 =
 * none) and of its positives (pos_first: each query's first slot in the block's npb positives). On success
 * *ce_cand (nb * ncand, NaN where no candidate) and *ce_pos (npb) are allocated on every rank. Collective. */
int mine_ce_rescore(Mine *m, const int64_t *qrows, int64_t nb, const int64_t *cand_rows, int k, int ncand,
                    int64_t npb, float **ce_cand, float **ce_pos, XrErr *e);

#endif
