/* cli_common.h: what the subcommands share. Every command: the shared options block (model, output, overwrite,
 * max length, threads, device, precision, quiet, config) parsed and checked once by cli_start, the backend
 * (cli_backend), the max length (cli_max_len), output checks, and one wording for each error. score and embed
 * also share the batched job driver that splits input lines over ranks and gathers their output in input order,
 * atomic output files and the end-of-run report (padding efficiency, throughput). */
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
#include "ops.h"
#include "textread.h"
#include "tokenizer.h"

/* ---- the shared options block ----
 * Flags that mean the same in every command are written once here; a command puts the ones that apply to it in
 * its table (the help text of model / output / max-length may say what they are for that command) and
 * cli_start parses and checks them all the same way. To add a flag to one command, add a line to its table and
 * read it with args_*; a flag every command shares gets a CLI_FLAG_ macro here and a field in CliBase. */
#define CLI_FLAG_MODEL(help) {"model", ARG_STR, NULL, "DIR|ID", help, NULL, 0}
#define CLI_FLAG_OUTPUT(def, meta, help) {"output", ARG_STR, def, meta, help, NULL, 0}
#define CLI_FLAG_OVERWRITE(help) {"overwrite", ARG_SWITCH, NULL, "", help, NULL, 0}
#define CLI_FLAG_MAX_LENGTH(help) {"max-length", ARG_INT, NULL, "N", help, NULL, 1}
#define CLI_FLAG_THREADS                                                                                         \
    {"threads", ARG_INT, "0", "N",                                                                               \
     "CPU threads per rank; 0 = OMP_NUM_THREADS or all cores, split between the ranks of a node", NULL, 0}
#define CLI_FLAG_DEVICE                                                                                          \
    {"device", ARG_CHOICE, "cpu", "",                                                                            \
     "where the model runs; cuda: the GPU (node-local rank mod GPUs) of each rank", "cpu|cuda", 0}
#define CLI_FLAG_PRECISION                                                                                       \
    {"precision", ARG_CHOICE, NULL, "",                                                                          \
     "GEMM and attention precision (default: bf16 with --device cuda, fp32 on the cpu)", "fp32|bf16", 0}
#define CLI_FLAG_QUIET {"quiet", ARG_SWITCH, NULL, "", "no progress line and no report on stderr", NULL, 0}
/* --config and --print-config travel together: every command that reads a config file can show what it resolved
 * (each flag's value and where it came from: default, the file, the command line) and exit. */
#define CLI_FLAG_CONFIG(help)                                                                                    \
    {"config", ARG_STR, NULL, "FILE", help, NULL, 0},                                                            \
    {"print-config", ARG_SWITCH, NULL, "",                                                                       \
     "print every flag's resolved value and where it came from (default, config file, command line), then exit", \
     NULL, 0}
/* Where the model runs: every command that computes with a model has these three. */
#define CLI_FLAGS_COMPUTE CLI_FLAG_THREADS, CLI_FLAG_DEVICE, CLI_FLAG_PRECISION

/* Invalid UTF-8 in the text input (tokenize, score, embed; mine --text-from has its own wording). */
#define CLI_FLAG_UTF8_ERRORS                                                                                     \
    {"utf8-errors", ARG_CHOICE, "strict", "",                                                                    \
     "invalid UTF-8 in the input: strict = an error naming file:line (as Python's decoding); replace = each bad " \
     "sequence read as U+FFFD and counted (BERT-style tokenizers then drop it, as Hugging Face's do)",           \
     "strict|replace", 0}

/* The flags score and embed share, first in their tables. */
#define CLI_COMMON_FLAGS                                                                                         \
    CLI_FLAG_MODEL("Hugging Face model directory, or a hub id found in the local HF cache"),                    \
        {"input", ARG_STR, "-", "FILE", "input file, - for stdin", NULL, 0},                                     \
        CLI_FLAG_OUTPUT("-", "FILE", "output file, - for stdout; written under a temporary name, then renamed"), \
        CLI_FLAG_OVERWRITE("replace an existing output file"),                                                   \
        {"batch-size", ARG_INT, "32", "N", "sequences per forward batch", NULL, 1},                              \
        CLI_FLAG_MAX_LENGTH("tokens per sequence with specials, longer inputs are truncated (default: the "      \
                            "tokenizer's model_max_length capped by the model's positions)"),                    \
        CLI_FLAGS_COMPUTE,                                                                                       \
        {"bucket-batches", ARG_INT, "64", "N",                                                                   \
         "inputs are sorted by length within windows of N batches to cut padding; a window is also the unit "    \
         "of work a rank takes",                                                                                 \
         NULL, 1},                                                                                               \
        CLI_FLAG_UTF8_ERRORS, CLI_FLAG_QUIET, CLI_FLAG_CONFIG("JSON file of flag values")

/* A subcommand: its flags, its help page, and what it cannot do yet. */
typedef struct {
    const char *name;
    const ArgSpec *flags;
    int nflags;
    const ArgHelp *help;
    int max_positional;
    /* --device cuda is refused up front with this reason (NULL: the command runs on the GPU) */
    const char *no_gpu;
    /* The op sets (XrOpSet bits) the command needs of the device's backend besides BASE and INFER: with
     * --device cuda a build whose CUDA backend lacks one of them is refused up front, naming the ops. */
    unsigned opsets;
    /* --device cuda --precision bf16 is refused with this reason and the GPU default is fp32 (NULL: bf16 runs,
     * and is the default on the GPU; every command now runs it: train's refusal was lifted once
     * test_cuda_bf16_train passed on a GPU, docs/DESIGN.md "bf16 training"). */
    const char *no_bf16;
} CliCmd;

/* Every command's definition (in its cmd_<name>.c): a config file may hold any command's flags. */
extern const CliCmd CLI_CMD_SCORE, CLI_CMD_EMBED, CLI_CMD_TOKENIZE, CLI_CMD_MINE, CLI_CMD_TRAIN, CLI_CMD_EVAL,
    CLI_CMD_INSPECT, CLI_CMD_EXPORT, CLI_CMD_PLOT;

/* A command's run: the communicator, the parsed flags and the shared options, checked. */
typedef struct {
    const CliCmd *cmd;
    Comm *comm; /* NULL for commands that run on one process (inspect) */
    int rank, size;
    Args args;
    /* shared options (NULL / 0 where the command has no such flag) */
    const char *model, *output;
    int overwrite, quiet;
    XrDevice device;
    XrPrecision precision;
    int threads;    /* per rank after the node split: 0 = the backend's default (OMP_NUM_THREADS or all cores) */
    int max_length; /* --max-length as given, 0 = not given (cli_max_len resolves it against a model) */
    Backend *be;    /* cli_backend */
} CliBase;

/* Read the text inputs of a comma-separated list with the text flags tokenize and mine share (--split,
 * --title-sep, --no-title, the pair-file columns, --no-header, --allow-empty) into ts (tr_read). */
int cli_read_text(const Args *a, const char *list, TrFormat format, TextSet *ts, XrErr *e);

/* Start MPI (unless no_comm), parse the flags (a --config file included) and check the shared options: device
 * and precision (what the command or this build cannot do is refused here), threads (split between the ranks
 * of a node when 0; OpenMP set). Returns -1 when the command goes on, else the exit code to return (0 after
 * --help; an error was printed once and MPI is finalised). */
int cli_start(CliBase *b, const CliCmd *cmd, int no_comm, int argc, char **argv);
/* Print "xrank <cmd>: error: <msg>" once (rank 0), then cli_end. Collective like cli_end. */
int cli_fail_base(CliBase *b, const XrErr *e, int code);
/* Free the backend and the flags, finalise MPI; returns code. */
int cli_end(CliBase *b, int code);
/* Threads a rank actually uses when b->threads is 0 (OMP_NUM_THREADS or all cores). */
int cli_threads_resolved(const CliBase *b);
/* Make b->be for --device / --precision with ops_backend_create (cuda: GPU comm_local_rank % ops_device_count)
 * and --threads. Collective: every rank learns of a failure. */
int cli_backend(CliBase *b, XrErr *e);
/* The max length for a model: `given` (the flag's value, 0 = not given; flag names it in messages, e.g.
 * "max-length") checked against the model's positions and the pair template's special tokens, else
 * sentence-transformers' max_seq_length when st_dir has a sentence_bert_config.json, else the tokenizer's
 * model_max_length, capped by the positions. */
int cli_max_len(const char *flag, long given, const ModelConfig *cfg, const Tokenizer *tok, const char *st_dir,
                int *out, XrErr *e);
/* Resolve a model (directory or hub id) and read its config and tokenizer. */
int cli_load_model_files(const char *spec, char **dir, ModelConfig *cfg, Tokenizer **tok, XrErr *e);
/* Rank 0, before any work: refuse an existing output file without --overwrite, and make sure a file can be
 * created next to it. "-" passes, and devices / pipes when the writer writes them in place (in_place_ok). */
int cli_check_output(const char *path, int overwrite, int in_place_ok, XrErr *e);
/* Remove what runs of earlier commands writing path that died left (path.tmp.HOST.PID of a dead process on this
 * host: xr_tmpclean_sweep) and say so on stderr unless quiet, as "xrank CMD: ...". "-" and NULL: nothing. */
void cli_sweep_output(const char *cmd, const char *path, int quiet);
/* (A training output directory has its own rules: launch/run_dir.h.) */
/* Write text to path atomically (temporary name path.tmp.HOST.PID, removed if SIGINT / SIGTERM / SIGHUP ends
 * the process first, then rename); "-" = stdout, and devices / pipes are written in place. cli_write_output: head then body. Rank 0 only. */
int cli_write_file(const char *path, const char *text, size_t n, XrErr *e);


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
int cli_write_output(const char *path, const CliBuf *head, const char *body, size_t body_n, XrErr *e);

/* score and embed: a batched job over the lines of one input. */
typedef struct {
    CliBase b;
    const char *cmd;
    int rank, size;
    char *model_dir;
    ModelConfig cfg;
    Tokenizer *tok;
    Encoder *enc;
    int max_len, batch_size, bucket_batches, quiet;
    int threads; /* what the encoder's backend uses (the report) */
    const char *input, *output, *input_name; /* input_name: the file name used in messages */
    char *input_data;                        /* whole input, on every rank */
    int64_t utf8_replaced, utf8_lines;       /* --utf8-errors replace: sequences read as U+FFFD, their lines */
    size_t input_len;
} CliCtx;

/* cli_start, then resolve the model, read its config and tokenizer, pick the max length (st_max_len: take
 * sentence-transformers' max_seq_length as the default), make the backend, check the output path and read the
 * input on rank 0 (sent to every rank). Returns -1 when the command should go on, else the exit code (0 after
 * --help; errors are printed by rank 0 and MPI is already finalised). */
int cli_setup(CliCtx *cx, const CliCmd *cmd, int st_max_len, int argc, char **argv);
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
