/* knn.h: exact inner-product top-k of query vectors against one shard of passage vectors, and the merge of
 * per-shard top-k lists into the global top-k. Pure functions (no MPI, no files): the mining command feeds
 * them from the embedding cache and exchanges the lists between ranks.
 *
 * Order everywhere: score descending, then global passage index ascending. Empty slots (fewer than k passages)
 * hold index -1 and score -INFINITY and come last.
 *
 * Determinism: the GEMM that screens candidates rounds differently with the tile shape and the shard
 * boundaries (OpenBLAS does), so it is only a filter. Every reported score is knn_score() (a double-precision
 * dot product in a fixed order, rounded to float), whose value depends only on the two vectors. A query keeps
 * k + guard GEMM candidates; when the float-rounding bound D * FLT_EPSILON * |q| * max|p| cannot rule out that
 * a discarded passage belongs in the top k, that query is searched again exhaustively with knn_score. So the
 * result is the exact top-k under knn_score, identical for any tile size, thread count, shard split or BLAS. */
#ifndef XR_KNN_H
#define XR_KNN_H
#include <stddef.h>
#include <stdint.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    size_t query_block;  /* queries per GEMM, at most (default 256; on xrank's kernel cut to a multiple of 32) */
    size_t passage_tile; /* passages per GEMM (default 4096); the score tile is query_block * passage_tile * 4
                            bytes per thread, the only memory beyond O(n_queries * (k + guard)) */
    int guard;           /* GEMM candidates kept per query beyond k (default 16) */
} KnnOpts;

typedef struct {
    int64_t n_exhaustive; /* queries re-searched exhaustively because a near-tie straddled the k-th slot */
    /* knn_search's time split, seconds (the slowest thread's, for the parallel parts): the inputs' norm and
     * finite check, the screening GEMMs, the top-(k + guard) screen of their scores, the exact rescoring of the
     * survivors with the bound check (exhaustive retries included); the device search (knn_device.h): t_screen
     * the block's uploads, screening and list download, t_rescore the exact rescoring and the host's part, of
     * which t_select is the host's sort and bound check of each query's list */
    double t_norms, t_gemm, t_screen, t_rescore, t_select;
} KnnStats;

void knn_opts_default(KnnOpts *o);

/* The score knn_search reports: q . p accumulated in double in a fixed order (independent of any tiling),
 * rounded to float. */
float knn_score(const float *q, const float *p, size_t dim);

/* Top-k of every query (rows of `queries`, n_queries x dim, row-major f32) against the shard `passages`
 * (n_passages x dim) whose row j has global index passage_offset + j. out_scores / out_index are
 * n_queries x k. OpenMP threads split the queries; each screens its range tile by tile with a single-threaded
 * GEMM: xrank's AVX-512 kernel where the CPU backend runs it for ops_linear (OpenBLAS without AVX-512 kernels,
 * or $XR_CPU_GEMM=avx512), else OpenBLAS. stats may be NULL.
 * Fails (-1, e set) on k < 1, dim == 0, sizes beyond BLAS int range, or a non-finite vector element
 * (named by its global passage / query row). */
int knn_search(const float *queries, size_t n_queries, const float *passages, size_t n_passages, size_t dim,
               int64_t passage_offset, int k, const KnnOpts *opts, float *out_scores, int64_t *out_index,
               KnnStats *stats, XrErr *e);

/* Merge n_lists top-k lists per query into the global top-k. Input layout: list l, query q, slot j at
 * [(l * n_queries + q) * k + j] (what an MPI gather of each rank's out_scores / out_index produces); each list
 * sorted as above and the lists drawn from disjoint shards. Output n_queries x k, must not alias the input. */
void knn_merge_topk(size_t n_queries, int k, size_t n_lists, const float *scores, const int64_t *index,
                    float *out_scores, int64_t *out_index);

#ifdef __cplusplus
}
#endif
#endif
