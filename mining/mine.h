/* mine.h: the hard-negative mining pipeline behind `xrank mine`, as library code over a Comm: embed each rank's
 * contiguous shard of the passage and query stores (or read them from the embedding cache), search every query
 * against the whole corpus in blocks (knn_search per shard, knn_merge_topk of the per-rank lists), optionally
 * rescore the candidates with a cross-encoder (pairs spread over the ranks), select negatives (select_query) and
 * gather the training groups, statistics and retrieval metrics on rank 0.
 *
 * Determinism: rows are embedded in windows of batch_size * bucket_batches rows counted from row 0 of the store
 * (fewer whole batches for a store of under 16 such windows, so small stores still split over the ranks; the
 * window depends on the store's size, not the rank count), and a rank takes whole windows, so every batch (hence every float) is the same for any number of ranks; the
 * search is exact (knn.h), the selection per query seeded by the query's row; cross-encoder pairs are batched
 * in windows counted from the start of each query block. The mined groups are identical for any rank count.
 *
 * Duplicates: passages with identical token sequences are one passage (sentence-transformers searches a corpus
 * deduplicated by exact text; identical tokens are what the model sees, so they score identically). Only the
 * first row of each such set (its canonical row) is searched, and a positive's duplicates are never negatives.
 *
 * Memory per rank: its shard of passage embeddings (rows / ranks * dim * 4 bytes), the query embeddings of its
 * shard, 8 bytes a passage for the row hashes and 8 for the canonical map, and per query block
 * query_block * (dim + ranks * k * 3) * 4 bytes; the search tile is query_block x passage_tile floats. */
#ifndef XR_MINE_H
#define XR_MINE_H
#include <stdint.h>
#include <stdio.h>

#include "batch.h"
#include "comm.h"
#include "groups.h"
#include "knn.h"
#include "knn_device.h"
#include "model.h"
#include "select.h"
#include "tokenizer.h"
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *dataset; /* dataset directory written by `xrank tokenize` (or its index.h5) */
    /* bi-encoder */
    Encoder *bi;
    const Tokenizer *tok; /* the bi-encoder's tokenizer; the stores must have been made with it */
    PoolingMode pooling;
    int normalize;
    int max_len;                              /* tokens per sequence with the specials */
    const char *query_prompt, *corpus_prompt; /* "" = none; tokenized and put before every row's tokens */
    int batch_size, bucket_batches;
    /* embedding cache: NULL dir = off */
    const char *cache_dir;
    uint64_t model_fp;
    const char *model_desc; /* the model as given, for the cache's .json */
    const char *precision;  /* part of the cache key: "fp32-cpu", "bf16-cuda" */
    /* optional cross-encoder rescoring: scores of (query, candidate) and (query, positive) pairs replace the
     * retriever's for the selection (as in sentence-transformers) and feed ce_max_score */
    Encoder *ce;
    const Tokenizer *ce_tok;
    int ce_max_len, ce_batch_size, ce_sigmoid;
    /* selection; mine_run sets max_positives, the fill range and resolves it */
    SelectOpts sel;
    int fill_from_corpus; /* FlagEmbedding style: pad short queries with random passages */
    /* search: on the CPU (knn_search), or with each rank's shard on search_be's device (knn_device.h) */
    KnnOpts knn;
    Backend *search_be; /* NULL: CPU search */
    KnnDevOpts knn_dev;
    int64_t query_block; /* queries searched together: bounds the memory of the merge */
    int eval_depth;      /* > 0: retrieval metrics of the bi-encoder on the qrels, ranking this deep */
    int progress;        /* a progress line on stderr (rank 0) */
} MineOpts;

void mine_opts_default(MineOpts *o);

typedef struct {
    GroupSet groups; /* rank 0: one row per (query, positive) */
    SelectOpts sel;  /* as resolved */
    SelectStats stats; /* summed over ranks */
    int64_t num_queries, num_passages;
    int64_t mined_queries;       /* queries with at least one positive */
    int64_t queries_no_positive; /* queries without a positive (qrels grade > 0): not mined */
    int64_t positives;           /* distinct (query, positive) pairs */
    int64_t duplicate_passages;  /* rows whose tokens repeat an earlier row */
    int64_t search_k;            /* candidates per query returned by the search */
    int cache_hit[2];            /* [0] queries, [1] passages */
    char cache_path[2][1024];    /* "" when the cache is off */
    int64_t embedded[2];         /* rows embedded this run (0 on a cache hit) */
    BatchRunStats emb[2];        /* summed over ranks */
    double t_hash, t_embed[2], t_search, t_merge, t_ce, t_select, t_total; /* slowest rank's seconds */
    /* per rank (rank_* arrays of nranks, every rank): device bytes the search held (0 = CPU search), whether
     * the shard stayed on the device, the process's peak resident host memory (KiB), and the device shard's
     * setup seconds (3 a rank: check, upload, device bf16 conversion; knn_shard_setup; 0 for the CPU search) */
    int nranks;
    int64_t *rank_search_bytes, *rank_rss_kib;
    int *rank_resident;
    double *rank_setup_s;
    const char *search_where; /* "cpu" or the search backend's device name */
    int64_t ce_pairs;
    BatchRunStats ce;
    KnnStats knn;
    int have_metrics;
    double mrr10, ndcg10, recall10, recall_depth;
    char warnings[2][2112];
} MineResult;

/* The whole pipeline; collective (every rank calls it with the same options). Returns 0, or -1 with the same
 * message in e on every rank. On rank 0 r->groups holds the mined rows (free with mine_result_free). */
int mine_run(Comm *c, const MineOpts *o, MineResult *r, XrErr *e);
void mine_result_free(MineResult *r);

/* Print the report (counts, the positive / negative score table sentence-transformers prints, skip counts per
 * filter, queries with fewer negatives, metrics and timings). */
void mine_report(FILE *f, const MineOpts *o, const MineResult *r);

/* jsonl in the sentence-transformers output formats or FlagEmbedding's. */
typedef enum {
    MINE_JSONL_TRIPLET,
    MINE_JSONL_NTUPLE,
    MINE_JSONL_LABELED_PAIR,
    MINE_JSONL_LABELED_LIST,
    MINE_JSONL_FLAG
} MineJsonlFormat;
int mine_jsonl_parse_format(const char *s, MineJsonlFormat *f);

/* Texts (or ids) of the rows a group file names. */
typedef struct {
    const char *(*query)(void *ctx, int64_t row, size_t *len);
    const char *(*passage)(void *ctx, int64_t row, size_t *len);
    void *ctx;
    int ids; /* 1: the strings are ids, written under "..._id" keys; 0: texts */
} MineTexts;

/* Write g as jsonl to path (temporary name + rename; "-" = stdout). Scores (with output_scores): the
 * cross-encoder's when g has them, else the retriever's. */
int mine_write_jsonl(const GroupSet *g, MineJsonlFormat fmt, int output_scores, const MineTexts *t, const char *path,
                     XrErr *e);

#ifdef __cplusplus
}
#endif
#endif
