/* checkpoint.h: the training-state side of checkpoints (the file format is io/ckpt.h). Called by the trainer at
 * step ends: saves every --save-steps and when a stop signal (SIGTERM, SIGUSR1) arrived on any rank, keeps the
 * last K, and resumes exactly. Saving copies the parameters and this rank's optimizer shard to host buffers and
 * writes them from a background thread while training goes on; the commit (manifest, rename, latest) happens at
 * the first step end after every rank has finished writing. Every rank writes its own files in parallel. */
#ifndef XR_CHECKPOINT_H
#define XR_CHECKPOINT_H
#include <stdint.h>

#include "comm.h"
#include "gradsync.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *output;      /* run directory: checkpoints are output/checkpoint-<step> (NULL: never save) */
    int64_t save_steps;      /* > 0: a checkpoint every N optimizer steps */
    int save_total_limit;    /* > 0: keep the newest K complete checkpoints (and the best one) */
    const char *resume;      /* a verified checkpoint directory to continue from (ckpt_resolve), or NULL */
    const char *base_model;  /* config.json and tokenizer files for the checkpoint's model directory */
    int max_len;             /* the export's model_max_length */
    const char *config_json; /* the resolved configuration (a JSON object), stored in the manifest */
    int sync;                /* 1: write in the step-end call (no background thread) */
} CkptOpts;

/* The trainer's plan: what must match on resume, and what locates the data position. */
typedef struct {
    int64_t total_steps, steps_per_epoch, global_batch;
    int per_device_batch, accumulation;
    uint64_t seed;
} CkptPlan;

/* Counters the loop carries from step to step, saved so logs and stats continue exactly. */
typedef struct {
    int64_t step; /* optimizer steps done */
    double log_loss, log_w;
    int64_t log_pairs, log_real, log_pad, log_from;
    int64_t pairs, real_tokens, padded_tokens;
    double best_value;
    int64_t best_step; /* -1: no evaluation yet */
} TrainCounters;

typedef struct TrainCkpt TrainCkpt;

/* Installs the SIGTERM / SIGUSR1 handlers (first signal: finish the step, checkpoint, exit 0; second: die). */
TrainCkpt *tckpt_create(Comm *c, const CkptOpts *o, const CkptPlan *p);
void tckpt_free(TrainCkpt *k);
/* Collective. Load parameters, this rank's optimizer slice (re-sliced from the saved shards' global offsets)
 * and the counters from o->resume; errors when the plan differs (global batch, steps, seed, parameters). */
int tckpt_resume(TrainCkpt *k, Encoder *m, GradSync *g, TrainCounters *tc, XrErr *e);
/* Collective, after each optimizer step: commits a finished background write, agrees on a stop request, and
 * starts a checkpoint when due (or requested: then written and committed before returning, and *stop = 1). */
int tckpt_step_end(TrainCkpt *k, Encoder *m, GradSync *g, const TrainCounters *tc, int *stop, XrErr *e);
/* Collective, at the end of training: waits for and commits a write still in flight. */
int tckpt_finish(TrainCkpt *k, XrErr *e);
/* Seconds the training loop was paused by checkpoints (copies to host, synchronous parts) on this rank, and
 * checkpoints committed. */
double tckpt_pause_seconds(const TrainCkpt *k);
int tckpt_count(const TrainCkpt *k);
/* This rank's checkpoint I/O: seconds in the writer (writes, fsyncs, crc read-back) and bytes of its files; seconds
 * and bytes read by tckpt_resume. */
void tckpt_io_stats(const TrainCkpt *k, double *write_s, int64_t *write_bytes, double *read_s, int64_t *read_bytes);
/* A stop signal has been received by this process. */
int tckpt_signalled(void);

#ifdef __cplusplus
}
#endif
#endif
