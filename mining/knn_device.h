/* knn_device.h: exact inner-product top-k with the passages of one shard held on a backend's device (a GPU;
 * the CPU backend runs the same code, which is how it is tested without one). Same contract as knn_search
 * (knn.h): score descending then global index ascending, every reported score knn_score's bits, -1 / -INFINITY
 * past the last passage; so a device shard and the CPU search give identical lists, and the per-rank lists
 * merge with knn_merge_topk as before.
 *
 * How: the query block and the shard meet tile by tile in ops_knn_screen (a GEMM, fp32 accumulation; operands
 * fp32, or bf16 with bf16 = 1) that keeps each query's k + guard best screening scores; the survivors are
 * rescored exactly (ops_knn_rescore on the device when the fp32 shard is resident, with bf16 screening when an
 * fp32 copy fits beside the bf16 one, "keep32": then the fp32 shard and query blocks are uploaded once and their
 * bf16 operands made on the device by ops_to_bf16; else knn_score on the host from the caller's passages); the
 * host sorts each query's survivors and checks its bound on all threads; a query whose
 * rounding bound (knn.h; for bf16 operands the measured rounding of the query and of the shard, knn_dev_bound)
 * cannot rule out a dropped passage is screened again with a list as long as the density of its screening
 * scores says it needs (knn_dev_grow), until the bound holds or the list holds the whole shard; when more than 1
 * in 64 queries of a block (and at least 4) fail, the rest of the pass uses the longer list.
 *
 * Memory: the shard stays on the device when it fits in mem_limit together with the per-block buffers (query
 * block, lists, the m x tile score scratch); otherwise tiles are uploaded one after another for every block of
 * queries (a shard larger than the device works, slower). knn_shard_bytes says what the shard holds. A resident
 * shard goes up through two 32 MiB pinned host buffers, one filled while the other is copied. */
#ifndef XR_KNN_DEVICE_H
#define XR_KNN_DEVICE_H
#include <stddef.h>
#include <stdint.h>

#include "knn.h"
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    size_t mem_limit;    /* device bytes the search may hold; 0 = 80% of the device's memory (CPU: unbounded) */
    size_t passage_tile; /* passages per screening GEMM (default 65536, lowered to fit mem_limit) */
    int guard;           /* screening candidates kept per query beyond k (-1 = default, knn_dev_guard) */
    int bf16;            /* screen with bf16 operands (CUDA only) */
} KnnDevOpts;

typedef struct KnnShard KnnShard;

/* What a shard's setup took, seconds: the passages' finite / norm check (and, for bf16, their measured
 * rounding), the upload (fp32, or bf16 rounded on the host), and with keep32 the bf16 copy made on the device
 * from the uploaded fp32 rows (ops_to_bf16). */
typedef struct {
    double t_check, t_upload, t_convert;
} KnnShardSetup;

void knn_dev_opts_default(KnnDevOpts *o);

/* A shard of n passages (row j = global index offset + j; host memory that must stay valid and unchanged for
 * the shard's life) prepared on be's device for blocks of up to max_queries queries and k up to max_k.
 * Checks the passages (finite) and the memory plan; NULL with e on failure (a bound too small for one tile
 * names the bytes it needs). */
KnnShard *knn_shard_create(Backend *be, const float *passages, size_t n, size_t dim, int64_t offset, size_t max_queries,
                           int max_k, const KnnDevOpts *o, XrErr *e);
/* Top-k of n_queries (host, row-major n_queries x dim, any count: blocks of max_queries) into out_scores /
 * out_index (host, n_queries x k), 1 <= k <= max_k. stats->n_exhaustive counts the queries screened again. */
int knn_shard_search(KnnShard *s, const float *queries, size_t n_queries, int k, float *out_scores, int64_t *out_index,
                     KnnStats *stats, XrErr *e);
/* Device bytes the shard holds at most (shard or tile buffer + per-block buffers + scratch), whether the
 * passages stay resident, and the tile in use; whether an fp32 copy sits beside a bf16 shard; the setup's times. */
size_t knn_shard_bytes(const KnnShard *s);
int knn_shard_resident(const KnnShard *s);
size_t knn_shard_tile(const KnnShard *s);
/* bf16 screening with an fp32 copy of the shard beside it on the device (rescoring there; the bf16 operands made
 * on the device from it) */
int knn_shard_keep32(const KnnShard *s);
KnnShardSetup knn_shard_setup(const KnnShard *s);
void knn_shard_free(KnnShard *s);

/* The pieces of the search's bound check, exposed for the tests.
 * knn_dev_guard: the screening candidates kept beyond k (guard >= 0: that; -1: fp32 16 + k / 32, bf16 max(64, k)).
 * knn_dev_bound: how far a passage's screening score can lie below its exact score. fp32:
 *   D eps |q| max|p| + eps (|hmin| + |kth|); bf16 (q', p' the operands rounded to bf16, measured per query and
 *   over the shard): 2 D eps |q'| max|p'| + |q'| max|p' - p| + |q' - q| max|p| (times 1 + 1e-6) + the same tail,
 *   since q'.p' - q.p = q'.(p' - p) + (q' - q).p exactly (Cauchy-Schwarz on each term).
 * knn_dev_grow: the list length for a query whose list of kk (cnt screening scores hs) stopped above the
 *   threshold t its bound needs: the density of the lower half of the list extrapolated to t, twice over,
 *   + 16; between 1.25 kk and 16 kk (4 kk without a usable density). tmp has room for cnt floats. */
int knn_dev_guard(int guard, int k, int bf16);
double knn_dev_bound(size_t dim, double qn, double pmax, int bf16, double qn16, double dq, double pmax16,
                     double dpmax, double hmin, double kth);
size_t knn_dev_grow(const float *hs, size_t cnt, size_t k, size_t kk, double t, float *tmp);

#ifdef __cplusplus
}
#endif
#endif
