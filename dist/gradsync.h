/* gradsync.h: the gradient exchange and optimizer step of data-parallel training. The flat gradient is cut into
 * buckets of whole tensors (about bucket_mb each) in the order the backward finishes them (head, last layer
 * first, embeddings last); on the last micro-batch of a step each bucket's reduction starts as soon as the
 * model's backward says its gradients are final (encoder_set_grad_hook) and runs while the backward goes on.
 * With ZeRO-1 the reduction is a reduce-scatter onto contiguous shards of the flat buffer (one per rank): each
 * rank clips and steps AdamW on its shard only (moments for its shard only), the global gradient norm being the
 * sum of the shards' squares, and the updated parameters are all-gathered. Without it, an all-reduce and every
 * rank steps every parameter. The update is the same up to float summation order either way.
 * Sparse word embeddings: a step touches a few percent of the vocabulary, so instead of the dense [V, H] gradient
 * only the rows touched anywhere in the global batch are summed (their ids all-gathered first, rows packed,
 * all-reduced, unpacked); the other rows' gradients are 0 on every rank, so the sum and the AdamW update (moment
 * decay and weight decay of untouched rows included) are exactly the dense ones. CPU backend (host rows). */
#ifndef XR_GRADSYNC_H
#define XR_GRADSYNC_H
#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GS_DEFAULT_BUCKET_MB 25.0

typedef struct {
    int zero;         /* 1: ZeRO-1 shards; 0: all-reduce, full optimizer on every rank */
    double bucket_mb; /* bucket size in MiB of fp32 gradients (<= 0: one bucket, the whole buffer) */
    int overlap;      /* 1: start each bucket from the backward's hook; 0: all at the end of the step */
    int sparse_embedding; /* 1: exchange only the touched word-embedding rows (gsync_touch) */
    int node_shm;     /* 1: when every rank is on one node and computes on the CPU, exchange through node-shared
                       * memory instead of MPI messages (gradsync.c: the peers sum each other's gradients in
                       * place; with ZeRO-1 one copy of the parameters per node, nothing to all-gather) */
} GsOpts;

typedef struct GradSync GradSync;

/* For m's flat buffer over c's ranks; AdamW with cfg, weight decay off where encoder_tensor_decays says so. */
GradSync *gsync_create(Comm *c, Encoder *m, const GsOpts *o, const AdamWConfig *cfg);
void gsync_free(GradSync *g);
/* Call before the backward of a step's last micro-batch: from then on the backward's hook starts the buckets. */
void gsync_arm(GradSync *g);
/* The token ids of a micro-batch of this step (any superset of the ids whose embedding rows get a gradient). */
void gsync_touch(GradSync *g, const int32_t *ids, size_t n);
/* After the step's backward passes: starts what is left, waits for all; returns the global gradient norm
 * (before clipping). The reduced gradients are then in encoder_grads (ZeRO-1: this rank's shard only). */
double gsync_reduce(GradSync *g);
/* Clip to max_norm (<= 0: no clipping) with the norm gsync_reduce returned, step AdamW with lr, and (ZeRO-1)
 * all-gather the parameters. */
void gsync_step(GradSync *g, double norm, double max_norm, double lr);

/* This rank's optimizer shard [*lo, *hi) of the flat buffer and its AdamW (for checkpoints). */
void gsync_shard(const GradSync *g, size_t *lo, size_t *hi);
AdamW *gsync_optimizer(GradSync *g);
int gsync_num_buckets(const GradSync *g);
/* How the gradients travel: "node shared memory" or the communicator's name ("mpi", "nccl", "staged"). */
const char *gsync_exchange_name(const GradSync *g);
/* 1 when the ranks of the node share one copy of the parameters (then only the node leader may write them
 * outside gsync_step, followed by a barrier). */
int gsync_params_shared(const GradSync *g);
/* Word-embedding rows exchanged over the run so far (0 when the exchange is dense) and the steps. */
void gsync_sparse_stats(const GradSync *g, int64_t *rows, int64_t *steps, int64_t *vocab);
/* Communication time of this rank over the run so far. exposed_s: time the step stood still for the exchange
 * after the backward (gsync_reduce's waits, the sparse exchange, the ZeRO-1 norm reduction and parameter
 * all-gather); a peer that is still computing (a straggler) counts here too. inflight_s: the union of the buckets'
 * start-to-completion intervals; hidden_s: its part before the backward ended (the communication that ran behind
 * the backward). Completion is seen only at a poll (once per layer of the backward), so both are upper bounds;
 * hidden / (hidden + exposed) is the share of the exchange kept off the step's critical path. */
void gsync_times(const GradSync *g, double *exposed_s, double *hidden_s, double *inflight_s);

/* Bytes of optimizer state per rank for n parameters over R ranks: the AdamW moments (2 x 4 bytes per parameter
 * of the shard), plus fp32 master weights (4 bytes) when master != 0 (a bf16 GPU model). ZeRO-1 shards it by R. */
int64_t gsync_optimizer_bytes(int64_t n, int R, int zero, int master);

#ifdef __cplusplus
}
#endif
#endif
