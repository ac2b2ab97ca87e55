/* cli_common.c: the shared options block (cli_start: flags, device, precision, threads), the backend, the max
 * length, output checks and atomic output files used by every subcommand, and score / embed's setup (model,
 * input read on rank 0 and broadcast). The batched job driver is in cli_job.c. See cli_common.h. */
#define _GNU_SOURCE
#include "cli_common.h"
#include "xr_fs.h"
#include "xr_tmpclean.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- byte buffer ---- */

void cli_buf_put(CliBuf *b, const void *data, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        b->p = xr_realloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
}

void cli_buf_puts(CliBuf *b, const char *s) { cli_buf_put(b, s, strlen(s)); }

void cli_buf_printf(CliBuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    assert(n >= 0);
    if ((size_t)n < sizeof tmp) {
        cli_buf_put(b, tmp, (size_t)n);
        return;
    }
    char *big = xr_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    cli_buf_put(b, big, (size_t)n);
    free(big);
}

void cli_buf_float(CliBuf *b, float v) {
    char tmp[32];
    cli_buf_puts(b, xr_float_str(tmp, v));
}

void cli_buf_free(CliBuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- the shared options block ---- */

static const CliCmd *const CLI_ALL[] = {&CLI_CMD_SCORE, &CLI_CMD_EMBED, &CLI_CMD_TOKENIZE, &CLI_CMD_MINE,
                                        &CLI_CMD_TRAIN, &CLI_CMD_EVAL,  &CLI_CMD_INSPECT,
                                        &CLI_CMD_EXPORT};
enum { CLI_NCMD = sizeof CLI_ALL / sizeof CLI_ALL[0] };

static int cli_has_flag(const CliCmd *c, const char *name) {
    for (int i = 0; i < c->nflags; i++)
        if (!strcmp(c->flags[i].name, name)) return 1;
    return 0;
}

int cli_end(CliBase *b, int code) {
    /* first: the teardown below may block (NCCL's destroy waits for its stream) while a peer waits for this rank */
    if (b->comm) comm_leave(b->comm, code);
    if (b->comm) comm_detach(b->comm); /* its staging buffers belong to the backend */
    if (b->be) ops_backend_free(b->be);
    args_free(&b->args);
    fflush(stdout);
    fflush(stderr);
    if (b->comm) comm_finalize(b->comm);
    memset(b, 0, sizeof *b);
    return code;
}

int cli_fail_base(CliBase *b, const XrErr *e, int code) {
    if (b->rank == 0) fprintf(stderr, "xrank %s: error: %s\n", b->cmd->name, e->msg);
    fflush(stderr);
    return cli_end(b, code);
}

static int cli_count_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int cli_threads_resolved(const CliBase *b) {
    if (b->threads > 0) return b->threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int cli_start(CliBase *b, const CliCmd *cmd, int no_comm, int argc, char **argv) {
    memset(b, 0, sizeof *b);
    b->cmd = cmd;
    /* A file size limit (ulimit -f) makes writes fail with EFBIG, reported like a full disk, instead of a silent
     * kill by SIGXFSZ. */
    signal(SIGXFSZ, SIG_IGN);
    b->size = 1;
    if (!no_comm) {
        b->comm = comm_init(&argc, &argv);
        b->rank = comm_rank(b->comm);
        b->size = comm_size(b->comm);
    }
    XrErr e = {{0}};
    ArgTable all[CLI_NCMD];
    for (int i = 0; i < CLI_NCMD; i++) all[i] = (ArgTable){CLI_ALL[i]->name, CLI_ALL[i]->flags, CLI_ALL[i]->nflags};
    int rc = args_parse(&b->args, cmd->name, cmd->flags, cmd->nflags, cmd->max_positional, all, CLI_NCMD, argc, argv,
                        &e);
    if (rc == 1) {
        if (b->rank == 0) args_usage(stdout, cmd->name, cmd->flags, cmd->nflags, cmd->help);
        return cli_end(b, 0);
    }
    if (rc < 0) return cli_fail_base(b, &e, 2);
    const Args *a = &b->args;
    if (cli_has_flag(cmd, "print-config") && args_bool(a, "print-config")) {
        if (b->rank == 0) args_print_config(stdout, a);
        return cli_end(b, 0);
    }
    b->model = cli_has_flag(cmd, "model") ? args_str(a, "model") : NULL;
    b->output = cli_has_flag(cmd, "output") ? args_str(a, "output") : NULL;
    b->overwrite = cli_has_flag(cmd, "overwrite") && args_bool(a, "overwrite");
    b->quiet = cli_has_flag(cmd, "quiet") && args_bool(a, "quiet");
    b->max_length = cli_has_flag(cmd, "max-length") && args_is_set(a, "max-length") ? (int)args_int(a, "max-length")
                                                                                     : 0;
    if (cli_has_flag(cmd, "device")) {
        b->device = !strcmp(args_str(a, "device"), "cuda") ? XR_DEV_CUDA : XR_DEV_CPU;
        const char *prec = args_str(a, "precision");
        int gpu_bf16 = b->device == XR_DEV_CUDA && !cmd->no_bf16; /* the GPU default */
        b->precision = (prec ? !strcmp(prec, "bf16") : gpu_bf16) ? XR_PREC_BF16 : XR_PREC_FP32;
        if (b->device == XR_DEV_CUDA && cmd->no_gpu) {
            xr_errf(&e, "--device cuda: %s; use --device cpu", cmd->no_gpu);
            return cli_fail_base(b, &e, 2);
        }
        if (b->precision == XR_PREC_BF16 && b->device == XR_DEV_CPU) {
            xr_errf(&e, "--precision bf16 needs --device cuda (the CPU backend computes in fp32)");
            return cli_fail_base(b, &e, 2);
        }
        if (b->precision == XR_PREC_BF16 && cmd->no_bf16) {
            xr_errf(&e, "--precision bf16: %s; use --precision fp32 (the default)", cmd->no_bf16);
            return cli_fail_base(b, &e, 2);
        }
        /* the ops the command needs, before any GPU is touched: a build without the CUDA backend says so, a
         * backend lacking an op names it */
        char what[64];
        snprintf(what, sizeof what, "xrank %s", cmd->name);
        if (b->device == XR_DEV_CUDA &&
            ops_device_require(XR_DEV_CUDA, XR_OPSET_BASE | XR_OPSET_INFER | cmd->opsets, what, &e))
            return cli_fail_base(b, &e, 2);
        if (b->device == XR_DEV_CUDA && ops_device_count(XR_DEV_CUDA) < 1) {
            /* ops_backend_create names the reason: no CUDA in this build, or no GPU visible */
            Backend *be = ops_backend_create(XR_DEV_CUDA, 0, b->precision, 0, &e);
            if (be) ops_backend_free(be);
            else return cli_fail_base(b, &e, 2);
        }
    }
    /* --threads 0 keeps OMP_NUM_THREADS / the OpenMP default (all cores) on one rank per node, and splits the
     * cores between the ranks of a node otherwise (several ranks each using every core would thrash). */
    if (cli_has_flag(cmd, "threads")) {
        long threads = args_int(a, "threads");
        int local = b->comm ? comm_local_size(b->comm) : 1;
        if (threads == 0 && local > 1) {
            threads = cli_count_cpus() / local;
            if (threads < 1) threads = 1;
        }
#ifdef _OPENMP
        if (threads > 0) omp_set_num_threads((int)threads);
#endif
        b->threads = (int)threads;
    }
    return -1;
}

int cli_backend(CliBase *b, XrErr *e) {
    int index = b->device == XR_DEV_CUDA ? comm_device_index(b->comm) : 0;
    b->be = ops_backend_create(b->device, index, b->precision, b->threads, e);
    return comm_check(b->comm, b->be ? 0 : -1, e);
}

int cli_max_len(const char *flag, long given, const ModelConfig *cfg, const Tokenizer *tok, const char *st_dir,
                int *out, XrErr *e) {
    /* XLM-R / RoBERTa positions start after the padding index: two positions are never used by tokens. */
    int cap = cfg->family == ARCH_BERT ? cfg->max_pos : cfg->max_pos - 2;
    int min_len = tok_num_special(tok, 1) + 2;
    if (given > 0) {
        if (given > cap)
            return xr_errf(e, "--%s %ld exceeds what the model can take (%d tokens: %d positions%s)", flag, given, cap,
                           cfg->max_pos, cfg->family == ARCH_BERT ? "" : " - 2");
        if (given < min_len)
            return xr_errf(e, "--%s %ld is too short: at least %d (the template adds %d special tokens)", flag, given,
                           min_len, min_len - 2);
        *out = (int)given;
        return 0;
    }
    int m = tok_model_max_length(tok);
    *out = m > 0 && m < cap ? m : cap;
    if (st_dir) { /* sentence-transformers' max_seq_length is the tokenizer's max_length: specials included */
        cJSON *sb = cli_dir_json(st_dir, "sentence_bert_config.json");
        const cJSON *v = sb ? cJSON_GetObjectItemCaseSensitive(sb, "max_seq_length") : NULL;
        if (cJSON_IsNumber(v) && v->valueint > 0) *out = v->valueint < cap ? v->valueint : cap;
        cJSON_Delete(sb);
    }
    return 0;
}

/* ---- score / embed setup ---- */

int cli_finish(CliCtx *cx, int code) {
    if (cx->enc) encoder_free(cx->enc);
    if (cx->tok) tok_free(cx->tok);
    free(cx->model_dir);
    free(cx->input_data);
    code = cli_end(&cx->b, code);
    memset(cx, 0, sizeof *cx);
    return code;
}

int cli_fail(CliCtx *cx, const XrErr *e, int code) {
    if (cx->rank == 0) fprintf(stderr, "xrank %s: error: %s\n", cx->cmd, e->msg);
    fflush(stderr);
    return cli_finish(cx, code);
}

/* Outputs that exist and are not regular files (/dev/null, /dev/stdout, a FIFO) are written in place:
 * renaming a temporary file over them would replace the device or pipe itself. */
static int cli_output_is_special(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

int cli_check_output(const char *path, int overwrite, int in_place_ok, XrErr *e) {
    struct stat st;
    if (!strcmp(path, "-") || (in_place_ok && cli_output_is_special(path))) return 0;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return xr_errf(e, "output %s is a directory", path);
    if (xr_file_exists(path) && !overwrite)
        return xr_errf(e, "output %s exists (use --overwrite to replace it)", path);
    char *tmp = xr_tmpclean_name(path);
    xr_tmpclean_add(tmp);
    FILE *f = fopen(tmp, "wb");
    int err = errno;
    if (f) fclose(f), remove(tmp);
    xr_tmpclean_forget(tmp);
    if (!f) xr_errf(e, "cannot create output %s: %s", tmp, strerror(err));
    free(tmp);
    return f ? 0 : -1;
}

void cli_sweep_output(const char *cmd, const char *path, int quiet) {
    if (!path || !strcmp(path, "-")) return;
    char note[4096];
    xr_tmpclean_sweep(path, note, sizeof note);
    if (note[0] && !quiet) fprintf(stderr, "xrank %s: %s\n", cmd, note);
}

cJSON *cli_dir_json(const char *dir, const char *name) {
    char *path = xr_path_join(dir, name);
    cJSON *j = NULL;
    if (xr_file_exists(path)) {
        XrErr e;
        size_t len;
        char *text = xr_read_file(path, &len, &e);
        if (text) j = cJSON_ParseWithLength(text, len);
        free(text);
    }
    free(path);
    return j;
}

cJSON *cli_model_json(const CliCtx *cx, const char *name) { return cli_dir_json(cx->model_dir, name); }

/* The model's files on every rank (the same files, so failures agree). */
int cli_load_model_files(const char *spec, char **dir, ModelConfig *cfg, Tokenizer **tok, XrErr *e) {
    if (!(*dir = hf_resolve_model(spec, e))) return -1;
    if (hf_load_config(*dir, cfg, e)) return -1;
    if (!(*tok = tok_load(*dir, e))) return -1;
    return 0;
}

int cli_setup(CliCtx *cx, const CliCmd *cmd, int st_max_len, int argc, char **argv) {
    memset(cx, 0, sizeof *cx);
    int rc = cli_start(&cx->b, cmd, 0, argc, argv);
    if (rc >= 0) return rc;
    cx->cmd = cmd->name;
    cx->rank = cx->b.rank;
    cx->size = cx->b.size;
    XrErr e = {{0}};
    const Args *a = &cx->b.args;
    if (!cx->b.model) {
        xr_errf(&e, "--model is required (a Hugging Face model directory or hub id; xrank %s --help)", cmd->name);
        return cli_fail(cx, &e, 2);
    }
    cx->input = args_str(a, "input");
    cx->output = cx->b.output;
    cx->input_name = strcmp(cx->input, "-") ? cx->input : "<stdin>";
    cx->batch_size = (int)args_int(a, "batch-size");
    cx->bucket_batches = (int)args_int(a, "bucket-batches");
    cx->quiet = cx->b.quiet;

    int st = cli_load_model_files(cx->b.model, &cx->model_dir, &cx->cfg, &cx->tok, &e);
    if (comm_check(cx->b.comm, st, &e)) return cli_fail(cx, &e, 1);
    st = cli_max_len("max-length", cx->b.max_length, &cx->cfg, cx->tok, st_max_len ? cx->model_dir : NULL,
                     &cx->max_len, &e);
    if (st) return cli_fail(cx, &e, 2);

    st = cx->rank == 0 ? cli_check_output(cx->output, cx->b.overwrite, 1, &e) : 0;
    if (st == 0 && cx->rank == 0) cli_sweep_output(cmd->name, cx->output, cx->quiet);
    if (comm_check(cx->b.comm, st, &e)) return cli_fail(cx, &e, 1);

    st = 0;
    if (cx->rank == 0 && !strcmp(cx->input, "-") && isatty(0))
        st = xr_errf(&e, "no --input: give --input FILE, or pipe the input into xrank %s", cmd->name);
    if (comm_check(cx->b.comm, st, &e)) return cli_fail(cx, &e, 2);
    if (cx->rank == 0) {
        cx->input_data = strcmp(cx->input, "-") ? xr_read_file(cx->input, &cx->input_len, &e)
                                                : xr_read_stream(stdin, "<stdin>", &cx->input_len, &e);
        if (!cx->input_data) st = -1;
        /* invalid UTF-8 is refused naming the line, or read as U+FFFD and counted: never repaired silently */
        if (st == 0 && tr_utf8_buffer(cx->input_name, &cx->input_data, &cx->input_len,
                                      !strcmp(args_str(a, "utf8-errors"), "replace"), &cx->utf8_replaced,
                                      &cx->utf8_lines, &e))
            st = -1;
        if (st == 0 && cx->utf8_replaced) /* said even with --quiet: the text is not what the file holds */
            fprintf(stderr, "xrank %s: warning: %lld invalid UTF-8 sequence%s on %lld line%s of %s read as U+FFFD "
                            "(--utf8-errors replace)\n", cx->cmd, (long long)cx->utf8_replaced,
                    cx->utf8_replaced > 1 ? "s" : "", (long long)cx->utf8_lines, cx->utf8_lines > 1 ? "s" : "",
                    cx->input_name);
    }
    if (comm_check(cx->b.comm, st, &e)) return cli_fail(cx, &e, 1);
    comm_bcast_buf(cx->b.comm, &cx->input_data, &cx->input_len, 0);
    return -1;
}

/* ---- output files ---- */

static int cli_write_stream(FILE *f, const CliBuf *head, const char *body, size_t body_n) {
    return (head->n && fwrite(head->p, 1, head->n, f) != head->n) || (body_n && fwrite(body, 1, body_n, f) != body_n) ||
                   fflush(f)
               ? -1
               : 0;
}

/* Write head + body to path atomically (temporary name in the same directory, then rename), so a file that
 * looks complete always is; "-" = stdout, and devices / pipes are written in place. Rank 0 only. */
int cli_write_output(const char *path, const CliBuf *head, const char *body, size_t body_n, XrErr *e) {
    if (!strcmp(path, "-")) {
        if (cli_write_stream(stdout, head, body, body_n))
            return xr_errf(e, "writing to stdout failed: %s", strerror(errno));
        return 0;
    }
    if (cli_output_is_special(path)) {
        FILE *f = fopen(path, "wb");
        int bad = !f || cli_write_stream(f, head, body, body_n);
        int err = errno;
        if (f && fclose(f) != 0 && !bad) bad = 1, err = errno;
        return bad ? xr_errf(e, "writing %s failed: %s", path, strerror(err)) : 0;
    }
    char *tmp = xr_tmpclean_name(path);
    xr_tmpclean_add(tmp); /* before it exists: SIGINT / SIGTERM / SIGHUP from here on remove it */
    FILE *f = fopen(tmp, "wb");
    if (f) xr_tmpclean_test_pause("output", tmp);
    int ok = f != NULL && cli_write_stream(f, head, body, body_n) == 0;
    if (ok) ok = fsync(fileno(f)) == 0;
    int err = errno;
    if (f && fclose(f) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        err = errno;
    }
    if (!ok) {
        remove(tmp);
        xr_errf(e, "writing %s failed: %s", path, strerror(err));
    }
    xr_tmpclean_forget(tmp);
    free(tmp);
    return ok ? 0 : -1;
}

int cli_write_file(const char *path, const char *text, size_t n, XrErr *e) {
    CliBuf none = {0};
    return cli_write_output(path, &none, text, n, e);
}

int cli_read_text(const Args *a, const char *list, TrFormat format, TextSet *ts, XrErr *e) {
    char **inputs = NULL;
    int n = 0;
    for (const char *p = list; p && *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        inputs = xr_realloc(inputs, sizeof(char *) * (size_t)(n + 1));
        inputs[n] = xr_malloc(l + 1);
        memcpy(inputs[n], p, l);
        inputs[n++][l] = 0;
        p = c ? c + 1 : NULL;
    }
    TrOptions to = {.format = format,
                    .split = args_str(a, "split"),
                    .title_sep = args_str(a, "title-sep"),
                    .no_title = args_bool(a, "no-title"),
                    .query_column = args_str(a, "query-column"),
                    .positive_column = args_str(a, "positive-column"),
                    .negative_columns = args_str(a, "negative-columns"),
                    .label_column = args_str(a, "label-column"),
                    .no_header = args_bool(a, "no-header"),
                    .allow_empty = args_bool(a, "allow-empty"),
                    .utf8_replace = !strcmp(args_str(a, "utf8-errors"), "replace")};
    int rc = tr_read((const char *const *)inputs, n, &to, ts, e);
    for (int i = 0; i < n; i++) free(inputs[i]);
    free(inputs);
    return rc;
}
