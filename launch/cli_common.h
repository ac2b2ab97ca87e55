/* cli_common.h: what the model-running subcommands (score, embed, ...) share: the common flags, setup
 * (MPI, model, tokenizer, max length, threads), reading the input on rank 0, the batched job driver that
 * splits records over ranks and gathers their output in input order, atomic output files and the
 * end-of-run report (padding efficiency, throughput). */
#ifndef XR_CLI_COMMON_H
#define XR_CLI_COMMON_H
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "args.h"
#include "batch.h"
#include "comm.h"
#include "hfmodel.h"
#include "model.h"
#include "tokenizer.h"

/* The flags every model-running command shares (DESIGN.md), first in each command's table. */
#define CLI_COMMON_FLAGS                                                                                         \
    {"model", ARG_STR, NULL, "DIR|ID", "Hugging Face model directory, or a hub id found in the local HF cache", \
     NULL, 0},                                                                                                   \
        {"input", ARG_STR, "-", "FILE", "input file, - for stdin", NULL, 0},                                     \
        {"output", ARG_STR, "-", "FILE", "output file, - for stdout; written under a temporary name, then renamed", \
         NULL, 0},                                                                                               \
        {"overwrite", ARG_SWITCH, NULL, "", "replace an existing output file", NULL, 0},                         \
        {"batch-size", ARG_INT, "32", "N", "sequences per forward batch", NULL, 1},                              \
        {"max-length", ARG_INT, NULL, "N",                                                                       \
         "tokens per sequence with specials, longer inputs are truncated (default: the tokenizer's "             \
         "model_max_length capped by the model's positions)",                                                     \
         NULL, 1},                                                                                               \
        {"threads", ARG_INT, "0", "N",                                                                           \
         "CPU threads per rank; 0 = OMP_NUM_THREADS or all cores, split between the ranks of a node", NULL, 0},   \
        {"device", ARG_CHOICE, "cpu", "", "where the model runs", "cpu|cuda", 0},                                \
        {"precision", ARG_CHOICE, NULL, "",                                                                      \
         "GEMM and attention precision (default: bf16 with --device cuda, fp32 on the cpu)", "fp32|bf16", 0},     \
        {"bucket-batches", ARG_INT, "64", "N",                                                                   \
         "inputs are sorted by length within windows of N batches to cut padding; a window is also the unit "    \
         "of work a rank takes",                                                                                 \
         NULL, 1},                                                                                               \
        {"quiet", ARG_SWITCH, NULL, "", "no progress line and no report on stderr", NULL, 0},                    \
        {"config", ARG_STR, NULL, "FILE", "JSON file of flag values", NULL, 0}

/* Growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} CliBuf;
void cli_buf_put(CliBuf *b, const void *data, size_t n);
void cli_buf_puts(CliBuf *b, const char *s);
void cli_buf_printf(CliBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Shortest decimal that reads back as the same float (JSON number; null for NaN / inf). */
void cli_buf_float(CliBuf *b, float v);
void cli_buf_free(CliBuf *b);

typedef struct {
    const char *cmd;
    Comm *comm;
    int rank, size;
    Args args;
    char *model_dir;
    ModelConfig cfg;
    Tokenizer *tok;
    Encoder *enc;
    Backend *be; /* --device cuda: the GPU backend the encoder runs on (NULL: the encoder's own CPU one) */
    int cuda, bf16;
    int max_len, max_len_cap, batch_size, bucket_batches, quiet;
    int threads; /* requested per rank (0 = default) until the encoder is loaded, then what it uses */
    const char *input, *output, *input_name; /* input_name: the file name used in messages */
    char *input_data;                        /* whole input, on every rank */
    size_t input_len;
} CliCtx;

/* Start MPI, parse the flags, resolve the model, read its config and tokenizer, pick the max length and the
 * threads, check the output path and read the input on rank 0 (sent to every rank). Returns -1 when the
 * command should go on, else the exit code (0 after --help; errors are printed by rank 0 and MPI is
 * already finalised). */
int cli_setup(CliCtx *cx, const char *cmd, const ArgSpec *spec, int nspec, const ArgHelp *help, int argc,
              char **argv);
/* Print e once (rank 0), finalise and return the exit code to give back from main. Collective: every rank
 * must call it with the same decision (the failures it reports are the same on every rank, or agreed with
 * comm_check). */
int cli_fail(CliCtx *cx, const XrErr *e, int code);
/* Free everything and finalise MPI; returns code. */
int cli_finish(CliCtx *cx, int code);
/* Parse an optional JSON file dir/name (NULL when absent or not JSON); cJSON_Delete it. cli_model_json: of the
 * command's model directory. */
cJSON *cli_dir_json(const char *dir, const char *name);
cJSON *cli_model_json(const CliCtx *cx, const char *name);
/* This rank's index among the ranks of its node (for picking a GPU): the launcher's variable when set
 * (Open MPI, MPICH, Slurm), else an MPI shared-memory split of the world. Collective in that last case. */
int cli_node_rank(int rank, int size);

/* One command's part of a batched job. A record is one input line; it yields nitems model inputs. */
typedef struct {
    const char *unit;     /* "pairs", "texts": for the report */
    int keep_blank_lines; /* text input: a blank line is an (empty) record; jsonl skips them */
    int out_dim;          /* floats the forward writes per item */
    void *ctx;
    /* Pass 1, on every rank over every record: validate the line and count its items. The message in e
     * needs no file:line prefix, the driver adds it. */
    int (*count)(void *ctx, const char *line, size_t len, int64_t *nitems, XrErr *e);
    /* Pass 2, over this rank's records: tokenize into s and fill items[0 .. nitems-1]; *id_json: the record's
     * id as JSON text (malloc'd) or NULL; *kind: a small tag handed back to format. */
    void (*tokenize)(void *ctx, const char *line, size_t len, SeqStore *s, BatchItem *items, char **id_json,
                     int *kind);
    /* Run one padded batch; out holds B * out_dim floats. */
    void (*forward)(void *ctx, Encoder *enc, const Batch *b, float *out);
    /* Append the output of one record (its items' results, input order). */
    void (*format)(void *ctx, const char *id_json, int kind, const float *res, int64_t nitems, CliBuf *out);
    /* Optional, rank 0: bytes written before all records (e.g. a .npy header), given the record count. */
    void (*prologue)(void *ctx, int64_t nrecords, CliBuf *out);
} CliJob;

/* Load the encoder (every rank), run the job over the input and write the output on rank 0; prints the
 * report unless --quiet. Returns the exit code (0 or 1; errors printed once). */
int cli_run(CliCtx *cx, const CliJob *job);

#endif
