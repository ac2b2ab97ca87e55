/* ckpt.h: the checkpoint directory format (docs/FORMATS.md, "Checkpoints"). OUT/checkpoint-<step>/ holds a
 * Hugging Face model directory (config.json, model.safetensors, tokenizer files: loadable as it is), optimizer
 * shards (optimizer-<r>-of-<R>.safetensors, each a slice of the flat AdamW moments at its global offset) and
 * manifest.json (version, step, data position, counters, config, a table of every file with size and crc32).
 * Files are written into OUT/checkpoint-<step>.tmp, each fsynced; the manifest last; the directory is renamed
 * into place and OUT/latest (a one-line file) replaced after it, each step fsynced: a crash leaves either the
 * old or the new checkpoint complete. Knows nothing of MPI or the trainer (dist/checkpoint.h does). */
#ifndef XR_CKPT_H
#define XR_CKPT_H
#include <stdint.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKPT_VERSION 1
#define CKPT_MANIFEST "manifest.json"
#define CKPT_MODEL "model.safetensors"
#define CKPT_LATEST "latest"

typedef struct {
    char name[96];
    uint64_t size;
    uint32_t crc32;
} CkptFile;

typedef struct {
    char file[96];
    int64_t offset, count; /* [offset, offset + count) of the flat parameter buffer */
} CkptShard;

typedef struct {
    int version;
    int64_t step;            /* optimizer steps done */
    int64_t epoch, epoch_pos; /* the next step's epoch and its first example's place in that epoch's order */
    int64_t total_steps, steps_per_epoch, num_params, adamw_steps;
    uint64_t seed;           /* with (step, epoch) all the data order, sampling and dropout keys follow */
    int world_size, per_device_batch, accumulation, zero;
    int64_t global_batch;
    CkptShard *shards;       /* covering [0, num_params) */
    int nshards;
    CkptFile *files;         /* every file but the manifest */
    int nfiles;
    char *state_json;        /* the trainer's counters (an object), kept as text */
    char *config_json;       /* the resolved configuration (an object), kept as text */
} CkptManifest;

void ckpt_manifest_free(CkptManifest *m);

/* Names under out: checkpoint-<step> and its staging name checkpoint-<step>.tmp (malloc'd). */
char *ckpt_dir(const char *out, int64_t step);
char *ckpt_staging_dir(const char *out, int64_t step);
/* A fresh, empty staging directory (a leftover of a crashed write removed first). */
int ckpt_stage_begin(const char *out, int64_t step, XrErr *e);
/* fsync an already written file of dir and fill f with its name, size and crc32 (zlib) read back. */
int ckpt_seal_file(const char *dir, const char *name, CkptFile *f, XrErr *e);
/* Write the manifest into the staging directory (fsynced), fsync the directory, rename it to checkpoint-<step>
 * (replacing one of that step), fsync out, then replace out/latest. */
int ckpt_commit(const char *out, const CkptManifest *m, XrErr *e);

/* Read dir/manifest.json and check every file of its table (present, size; crc32 when verify != 0): an error
 * names the file. A manifest of another version is refused. */
int ckpt_open(const char *dir, CkptManifest *m, int verify, XrErr *e);
/* dir holds a manifest.json (a checkpoint, complete or not). */
int ckpt_is_checkpoint(const char *dir);

/* Resolve --resume: "latest" -> the checkpoint out/latest names, or when that one is missing or damaged the
 * newest complete checkpoint-<step> of out (note gets a line saying which it fell back to); anything else is a
 * checkpoint directory. Returns a malloc'd path of a verified checkpoint, or NULL with e filled. */
char *ckpt_resolve(const char *spec, const char *out, char *note, size_t note_len, XrErr *e);
/* Steps of the complete (renamed) checkpoints under out, ascending; returns the count (*steps malloc'd). */
int ckpt_list(const char *out, int64_t **steps);
/* Remove out/checkpoint-<step> (renamed away first, so a half-removed directory never looks complete). */
int ckpt_remove(const char *out, int64_t step, XrErr *e);

/* Test hook: with $XR_CKPT_KILL_AT equal to phase or phase:step (phases "files": this rank's files written;
 * "manifest": written, directory not renamed; "rename": renamed, latest not updated; "latest": latest.tmp
 * written, not renamed), the process SIGKILLs itself there (tests of atomicity). */
void ckpt_test_phase(const char *phase, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
