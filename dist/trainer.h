/* trainer.h: the data-parallel training loop on the CPU backend over MPI ranks. One global batch per optimizer
 * step = per_device_batch x ranks x accumulation examples, taken from one permutation of the examples per epoch
 * (from the seed); its examples are sorted by assembled length and cut into chunks of per_device_batch (length
 * bucketing), rank r runs chunks m * ranks + r (m < accumulation). Every chunk's loss gradient is scaled by its
 * share of the global batch, the flat gradient buffer is all-reduced (SUM), clipped, and AdamW steps on every
 * rank. So the parameters depend on the rank count only through float summation order. The exchange and the
 * step are dist/gradsync.h's: gradient buckets reduced while the last backward runs, ZeRO-1 optimizer shards. */
#ifndef XR_TRAINER_H
#define XR_TRAINER_H
#include <stdint.h>
#include <stdio.h>

#include "checkpoint.h"
#include "comm.h"
#include "data.h"
#include "gradsync.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int per_device_batch;  /* examples per rank per micro-batch: pairs (bce) or groups of G pairs (listwise) */
    int accumulation;      /* micro-batches per rank per optimizer step */
    double epochs;         /* used when max_steps <= 0 */
    int64_t max_steps;     /* > 0: exactly this many optimizer steps (epochs wrap around) */
    double lr, weight_decay, warmup_ratio, max_grad_norm; /* max_grad_norm <= 0: no clipping */
    SchedKind sched;
    float pos_weight;      /* bce */
    uint64_t seed;
    int dropout;           /* 0: no dropout (exactness tests) */
    int max_len;           /* tokens per pair with specials */
    int logging_steps;     /* log every N steps (and the last) */
    int eval_steps;        /* evaluate every N steps (0: only at the end) */
    int progress;          /* rank 0: progress line on stderr */
    FILE *metrics;         /* rank 0: metrics.jsonl (NULL: none); a line that cannot be written stops the run */
    const char *metrics_path; /* its name, for that error */
    /* Evaluation hook, called on every rank (collective) after step `step` (1-based) every eval_steps and after
     * the last; returns -1 on error, 1 to stop training here (early stopping; the same on every rank). May be
     * NULL. */
    int (*evaluate)(void *ctx, Encoder *m, int64_t step, double epoch, XrErr *e);
    void *eval_ctx;
    int zero;              /* ZeRO-1 optimizer shards: 1 on, 0 off, -1 (default): on with more than one rank */
    double bucket_mb;      /* gradient bucket size, MiB (default GS_DEFAULT_BUCKET_MB; <= 0: one bucket) */
    int overlap;           /* reduce buckets during the last backward (default 1) */
    CommImpl comm;         /* buffer collectives (default COMM_AUTO; see comm_attach) */
    int sparse_embedding;  /* exchange only the touched word-embedding rows (default 1; gradsync.h) */
    CkptOpts ckpt;         /* checkpoints (dist/checkpoint.h): saving, stop signals, resume; output NULL: none */
    double *best_value;    /* the evaluation's best so far (may be NULL): saved in checkpoints, restored on resume */
    int64_t *best_step;
    /* The loss: kind LOSS_BCE (default) means BCE on pairs and group CE on groups (G >= 2); the others need
     * groups (distill: teacher scores in the data). pos_weight above is the BCE's. */
    LossSpec loss;
    /* Guards (docs/TRAINING.md). Collapse: a logging window whose mean within-group score spread (standard
     * deviation) is below collapse_spread and whose loss is within collapse_tol of the constant-score loss
     * (loss_collapse_value; not checked when it has none) counts; collapse_windows (> 0) in a row warn, and stop
     * the run when stop_on_collapse. Non-finite loss or gradients stop the run naming the step and the first
     * non-finite tensor, or with nan_skip skip the step (no update) and count it. */
    int collapse_windows;
    double collapse_spread, collapse_tol;
    int stop_on_collapse, nan_skip;
    int64_t test_nan_step; /* test hook: step (1-based) whose first micro-batch on rank 0 gets a NaN ... */
    int test_nan_grad;     /* ... in its loss (0) or in d loss / d logits (1) */
    /* Memory, planned before the first step (encoder_train_plan + the optimizer's moments): printed on rank 0
     * unless quiet, and a run whose plan exceeds what the device can still give (ops_mem_available, shared by the
     * ranks of a node on one device) is refused naming the largest per_device_batch that fits. */
    int grad_ckpt;         /* --gradient-checkpointing: recompute each layer's activations in the backward */
    int att_lse;           /* --attention-lse: the attention keeps log-sum-exps, not probabilities */
    int eval_batch;        /* sequences per evaluation batch (with evaluate) */
    int quiet;
} TrainOpts;

void trainer_defaults(TrainOpts *o);

typedef struct {
    int64_t steps, total_steps, steps_per_epoch, global_batch;
    double last_loss, mean_loss_last_log, seconds;
    int64_t pairs, real_tokens, padded_tokens; /* over all ranks */
    int zero, buckets;                         /* as run */
    char exchange[32];                         /* how gradients travelled (gsync_exchange_name) */
    int64_t optimizer_bytes;                   /* per rank */
    /* step time over the logged steps, summed over steps, averaged over ranks (trainer.c TrSplit): batch
     * assembly, compute (forward, loss, backward, optimizer), communication exposed after the backward (waits
     * for peers included), the buckets' communication behind the backward and in flight (gradsync.h) */
    double data_s, compute_s, comm_exposed_s, comm_hidden_s, comm_inflight_s;
    int64_t timed_steps;
    int64_t sparse_rows, sparse_steps, vocab;  /* word-embedding rows exchanged over the steps (0: dense) */
    int64_t resumed_from;                      /* the checkpoint's step (0: a fresh start) */
    int stopped;                               /* 1: a stop signal ended training after a checkpoint */
    int checkpoints;                           /* committed by this run */
    double checkpoint_pause_s;                 /* rank 0: training paused by checkpoints */
    double ckpt_write_s, ckpt_read_s;          /* rank 0: checkpoint writer time, resume read time */
    int64_t ckpt_write_bytes, ckpt_read_bytes; /* rank 0: bytes written / read */
    int64_t skipped_steps;                     /* non-finite steps skipped (nan_skip) */
    int collapse_warned;                       /* the collapse detector fired */
    int stopped_early;                         /* the evaluation hook stopped the run */
    int64_t mem_plan, mem_available;           /* this rank: planned bytes, bytes its device could give */
    int64_t mem_peak;                          /* this rank: the backend's measured peak (ops_mem_stats) */
} TrainStats;

/* Train m (a seq-cls model with one label) on d. Collective: every rank calls it with the same data and options
 * (d and m identical on every rank). Returns 0, or -1 with e filled (the same on every rank). */
int trainer_run(Comm *c, Encoder *m, const Tokenizer *t, const TrainData *d, const TrainOpts *o, TrainStats *st,
                XrErr *e);

/* Write m as a Hugging Face *ForSequenceClassification directory out (io/hfexport.h): its tensors under the names
 * transformers saves, base_dir's config.json (architecture and labels set) and tokenizer files; max_length > 0
 * becomes the export's model_max_length (tokenizer_config.json), so loaders default to the training length.
 * A model with a non-finite weight is never written (an error naming the tensor). */
int trainer_export_hf(Encoder *m, const char *base_dir, const char *out, int max_length, XrErr *e);

#ifdef __cplusplus
}
#endif
#endif
