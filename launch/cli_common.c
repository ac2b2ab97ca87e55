/* cli_common.c: setup, batched job driver, output files and the report shared by the model-running
 * subcommands (see cli_common.h). Every rank reads the same input bytes (rank 0 reads, then broadcasts),
 * validates every line, and takes a contiguous run of length-sorting windows; rank 0 gathers the outputs. */
#define _GNU_SOURCE
#include "cli_common.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <mpi.h>

#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
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
    if (!isfinite(v)) {
        cli_buf_puts(b, "null");
        return;
    }
    /* %g drops trailing zeros, so 6 digits already gives the shortest form of short values; 9 always
     * round-trips a float. */
    char tmp[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
        if (strtof(tmp, NULL) == v) break;
    }
    cli_buf_puts(b, tmp);
}

void cli_buf_free(CliBuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- setup ---- */

int cli_finish(CliCtx *cx, int code) {
    if (cx->enc) encoder_free(cx->enc);
    if (cx->be) ops_backend_free(cx->be);
    if (cx->tok) tok_free(cx->tok);
    free(cx->model_dir);
    free(cx->input_data);
    args_free(&cx->args);
    fflush(stdout);
    comm_finalize(cx->comm);
    memset(cx, 0, sizeof *cx);
    return code;
}

int cli_fail(CliCtx *cx, const XrErr *e, int code) {
    if (cx->rank == 0) fprintf(stderr, "xrank %s: error: %s\n", cx->cmd, e->msg);
    fflush(stderr);
    return cli_finish(cx, code);
}

static char *cli_temp_name(const char *path) {
    size_t n = strlen(path) + 32;
    char *t = xr_malloc(n);
    snprintf(t, n, "%s.tmp.%ld", path, (long)getpid());
    return t;
}

/* Outputs that exist and are not regular files (/dev/null, /dev/stdout, a FIFO) are written in place:
 * renaming a temporary file over them would replace the device or pipe itself. */
static int cli_output_is_special(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

/* Rank 0: refuse an existing output without --overwrite, and make sure a file can be created next to it
 * now rather than after the whole run. */
static int cli_check_output(const char *path, int overwrite, XrErr *e) {
    struct stat st;
    if (!strcmp(path, "-") || cli_output_is_special(path)) return 0;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return xr_errf(e, "output %s is a directory", path);
    if (xr_file_exists(path) && !overwrite)
        return xr_errf(e, "output %s exists (use --overwrite to replace it)", path);
    char *tmp = cli_temp_name(path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        xr_errf(e, "cannot create output %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    fclose(f);
    remove(tmp);
    free(tmp);
    return 0;
}

static char *cli_read_stdin(size_t *len, XrErr *e) {
    size_t cap = 1 << 16, n = 0;
    char *buf = xr_malloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xr_realloc(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n - 1, stdin);
        n += r;
        if (r == 0) break;
    }
    if (ferror(stdin)) {
        free(buf);
        xr_errf(e, "<stdin>: read error");
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int cli_count_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* --threads 0 keeps OMP_NUM_THREADS / the OpenMP default (all cores) on one rank per node, and splits the
 * cores between the ranks of a node otherwise (several ranks each using every core would thrash). The
 * encoder's backend takes the number when it is loaded (cli_run). */
static void cli_set_threads(CliCtx *cx, long threads) {
    if (threads == 0 && comm_local_size(cx->comm) > 1) {
        threads = cli_count_cpus() / comm_local_size(cx->comm);
        if (threads < 1) threads = 1;
    }
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
#endif
    cx->threads = (int)threads;
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

int cli_node_rank(int rank, int size) {
    static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    if (size <= 1) return 0;
    MPI_Comm node;
    int r = 0;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &r);
        MPI_Comm_free(&node);
    }
    return r;
}

int cli_setup(CliCtx *cx, const char *cmd, const ArgSpec *spec, int nspec, const ArgHelp *help, int argc,
              char **argv) {
    memset(cx, 0, sizeof *cx);
    cx->cmd = cmd;
    cx->comm = comm_init(&argc, &argv);
    cx->rank = comm_rank(cx->comm);
    cx->size = comm_size(cx->comm);
    XrErr e = {{0}};

    int rc = args_parse(&cx->args, cmd, spec, nspec, 0, argc, argv, &e);
    if (rc == 1) {
        if (cx->rank == 0) args_usage(stdout, cmd, spec, nspec, help);
        return cli_finish(cx, 0);
    }
    if (rc < 0) return cli_fail(cx, &e, 2);
    const Args *a = &cx->args;
    if (!args_str(a, "model")) {
        xr_errf(&e, "missing --model (a Hugging Face model directory or hub id; xrank %s --help)", cmd);
        return cli_fail(cx, &e, 2);
    }
    cx->cuda = !strcmp(args_str(a, "device"), "cuda");
    const char *prec = args_str(a, "precision");
    cx->bf16 = prec ? !strcmp(prec, "bf16") : cx->cuda;
    if (cx->bf16 && !cx->cuda) {
        xr_errf(&e, "--precision bf16 needs --device cuda (the CPU backend computes in fp32)");
        return cli_fail(cx, &e, 2);
    }
#ifdef XR_HAVE_CUDA
    if (cx->cuda && cuda_ops_device_count() < 1) {
        xr_errf(&e, "--device cuda: no GPU visible (driver missing or CUDA_VISIBLE_DEVICES empty); use --device cpu");
        return cli_fail(cx, &e, 2);
    }
#else
    if (cx->cuda) {
        xr_errf(&e, "--device cuda: the CUDA backend is not built yet in this xrank (configure with nvcc, cuBLAS, "
                    "cuDNN and NCCL present); use --device cpu");
        return cli_fail(cx, &e, 2);
    }
#endif
    cx->input = args_str(a, "input");
    cx->output = args_str(a, "output");
    cx->input_name = strcmp(cx->input, "-") ? cx->input : "<stdin>";
    cx->batch_size = (int)args_int(a, "batch-size");
    cx->bucket_batches = (int)args_int(a, "bucket-batches");
    cx->quiet = args_bool(a, "quiet");
    cli_set_threads(cx, args_int(a, "threads"));

    /* Model directory, config and tokenizer: the same files on every rank, so failures agree. */
    int st = 0;
    cx->model_dir = hf_resolve_model(args_str(a, "model"), &e);
    if (!cx->model_dir) st = -1;
    if (!st) st = hf_load_config(cx->model_dir, &cx->cfg, &e);
    if (!st && !(cx->tok = tok_load(cx->model_dir, &e))) st = -1;
    if (comm_check(cx->comm, st, &e)) return cli_fail(cx, &e, 1);

    /* XLM-R / RoBERTa positions start after the padding index: two positions are never used by tokens. */
    cx->max_len_cap = cx->cfg.family == ARCH_BERT ? cx->cfg.max_pos : cx->cfg.max_pos - 2;
    int min_len = tok_num_special(cx->tok, 1) + 2;
    if (args_is_set(a, "max-length")) {
        cx->max_len = (int)args_int(a, "max-length");
        if (cx->max_len > cx->max_len_cap) {
            xr_errf(&e, "--max-length %d exceeds what the model can take (%d tokens: %d positions%s)", cx->max_len,
                    cx->max_len_cap, cx->cfg.max_pos, cx->cfg.family == ARCH_BERT ? "" : " - 2");
            return cli_fail(cx, &e, 2);
        }
        if (cx->max_len < min_len) {
            xr_errf(&e, "--max-length %d is too short: at least %d (the template adds %d special tokens)", cx->max_len,
                    min_len, min_len - 2);
            return cli_fail(cx, &e, 2);
        }
    } else {
        int m = tok_model_max_length(cx->tok);
        cx->max_len = m > 0 && m < cx->max_len_cap ? m : cx->max_len_cap;
    }

    st = cx->rank == 0 ? cli_check_output(cx->output, args_bool(a, "overwrite"), &e) : 0;
    if (comm_check(cx->comm, st, &e)) return cli_fail(cx, &e, 1);

    st = 0;
    if (cx->rank == 0 && !strcmp(cx->input, "-") && isatty(0))
        st = xr_errf(&e, "no --input: give --input FILE, or pipe the input into xrank %s", cmd);
    if (comm_check(cx->comm, st, &e)) return cli_fail(cx, &e, 2);
    if (cx->rank == 0) {
        cx->input_data = strcmp(cx->input, "-") ? xr_read_file(cx->input, &cx->input_len, &e)
                                                : cli_read_stdin(&cx->input_len, &e);
        if (!cx->input_data) st = -1;
    }
    if (comm_check(cx->comm, st, &e)) return cli_fail(cx, &e, 1);
    comm_bcast_buf(cx->comm, &cx->input_data, &cx->input_len, 0);
    return -1;
}

/* ---- the job driver ---- */

typedef struct {
    int64_t off, len, line;
} CliRecord;

static CliRecord *cli_split_lines(const char *data, size_t n, int keep_blank, int64_t *nrec) {
    size_t cap = 1024;
    int64_t k = 0, line = 0;
    CliRecord *r = xr_malloc(sizeof(CliRecord) * cap);
    size_t pos = 0;
    while (pos < n) {
        const char *nl = memchr(data + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - data) : n, len = end - pos;
        line++;
        if (len && data[pos + len - 1] == '\r') len--;
        int blank = 1;
        for (size_t i = 0; i < len && blank; i++) blank = data[pos + i] == ' ' || data[pos + i] == '\t';
        if (keep_blank || !blank) {
            if ((size_t)k == cap) r = xr_realloc(r, sizeof(CliRecord) * (cap *= 2));
            r[k++] = (CliRecord){(int64_t)pos, (int64_t)len, line};
        }
        pos = end + 1;
    }
    *nrec = k;
    return r;
}

typedef struct {
    double records, items, real_tokens, padded_tokens, t_tokenize, t_forward, batches;
} CliStats;

static void cli_progress(const CliCtx *cx, const CliJob *job, int64_t k, int64_t nb, int64_t items, double t0,
                         int done) {
    double dt = xr_now() - t0;
    if (done) {
        fputs("\r\033[K", stderr);
    } else {
        fprintf(stderr, "\r\033[Kxrank %s: batch %lld/%lld, %lld %s, %.1f %s/s%s", cx->cmd, (long long)k,
                (long long)nb, (long long)items, job->unit, dt > 0 ? items / dt : 0.0, job->unit,
                cx->size > 1 ? " (rank 0)" : "");
    }
    fflush(stderr);
}

static int cli_write_stream(FILE *f, const CliBuf *head, const char *body, size_t body_n) {
    return (head->n && fwrite(head->p, 1, head->n, f) != head->n) || (body_n && fwrite(body, 1, body_n, f) != body_n) ||
                   fflush(f)
               ? -1
               : 0;
}

/* Write head + body to path atomically (temporary name in the same directory, then rename), so a file that
 * looks complete always is; "-" = stdout, and devices / pipes are written in place. Rank 0 only. */
static int cli_write_output(const char *path, const CliBuf *head, const char *body, size_t body_n, XrErr *e) {
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
    char *tmp = cli_temp_name(path);
    FILE *f = fopen(tmp, "wb");
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
    free(tmp);
    return ok ? 0 : -1;
}

static void cli_report(const CliCtx *cx, const CliJob *job, const CliStats *all, double t_load) {
    CliStats sum = {0};
    double slowest = 0, slowest_tok = 0, slowest_fwd = 0;
    for (int r = 0; r < cx->size; r++) {
        const CliStats *s = &all[r];
        sum.records += s->records;
        sum.items += s->items;
        sum.real_tokens += s->real_tokens;
        sum.padded_tokens += s->padded_tokens;
        sum.batches += s->batches;
        if (s->t_tokenize + s->t_forward > slowest) {
            slowest = s->t_tokenize + s->t_forward;
            slowest_tok = s->t_tokenize;
            slowest_fwd = s->t_forward;
        }
    }
    fprintf(stderr,
            "xrank %s: %.0f %s from %.0f records, %.0f batches (batch %d, max length %d), %d rank%s x %d thread%s\n",
            cx->cmd, sum.items, job->unit, sum.records, sum.batches, cx->batch_size, cx->max_len, cx->size,
            cx->size > 1 ? "s" : "", cx->threads, cx->threads > 1 ? "s" : "");
    fprintf(stderr, "  padding efficiency %.1f%% (%.0f real / %.0f computed tokens)\n",
            sum.padded_tokens > 0 ? 100.0 * sum.real_tokens / sum.padded_tokens : 100.0, sum.real_tokens,
            sum.padded_tokens);
    fprintf(stderr, "  throughput %.1f %s/s, %.0f tokens/s (slowest rank: tokenize %.2f s + forward %.2f s; "
                    "model load %.2f s)\n",
            slowest > 0 ? sum.items / slowest : 0.0, job->unit, slowest > 0 ? sum.real_tokens / slowest : 0.0,
            slowest_tok, slowest_fwd, t_load);
}

int cli_run(CliCtx *cx, const CliJob *job) {
    XrErr e = {{0}};
    int64_t nrec = 0;
    CliRecord *rec = cli_split_lines(cx->input_data, cx->input_len, job->keep_blank_lines, &nrec);

    /* Pass 1 on every rank over every line: the same bytes everywhere, so an error is found by all ranks
     * at the same line and reported once, before any model is loaded. */
    int64_t *nitems = xr_malloc(sizeof(int64_t) * (size_t)(nrec + 1));
    for (int64_t i = 0; i < nrec; i++) {
        if (job->count(job->ctx, cx->input_data + rec[i].off, (size_t)rec[i].len, &nitems[i], &e)) {
            XrErr where;
            xr_errf(&where, "%s:%lld: %s", cx->input_name, (long long)rec[i].line, e.msg);
            free(rec);
            free(nitems);
            return cli_fail(cx, &where, 1);
        }
    }

    /* Windows of consecutive records holding about bucket_batches batches: sorting happens inside a
     * window and a rank takes whole windows, so batches (and hence every float) do not depend on the
     * number of ranks. */
    int64_t window = (int64_t)cx->batch_size * cx->bucket_batches;
    int64_t *wstart = xr_malloc(sizeof(int64_t) * (size_t)(nrec + 2));
    int64_t nw = 0, acc = 0;
    for (int64_t i = 0; i < nrec; i++) {
        if (acc == 0) wstart[nw++] = i;
        acc += nitems[i];
        if (acc >= window) acc = 0;
    }
    wstart[nw] = nrec;
    int64_t w0 = nw * cx->rank / cx->size, w1 = nw * (cx->rank + 1) / cx->size;
    int64_t r0 = wstart[w0], r1 = wstart[w1], nloc = r1 - r0;

    double t_load0 = xr_now();
    int st = 0;
#ifdef XR_HAVE_CUDA
    if (cx->cuda) {
        cx->be = cuda_ops_backend(cli_node_rank(cx->rank, cx->size) % cuda_ops_device_count());
        cuda_ops_set_gemm_mode(cx->be, cx->bf16 ? XR_GEMM_BF16 : XR_GEMM_FP32);
    }
#endif
    if (!(cx->enc = cx->be ? encoder_load_on(cx->model_dir, cx->be, &e) : encoder_load(cx->model_dir, &e))) st = -1;
    if (comm_check(cx->comm, st, &e)) {
        free(rec);
        free(nitems);
        free(wstart);
        return cli_fail(cx, &e, 1);
    }
    double t_load = xr_now() - t_load0;
    if (cx->threads > 0) encoder_set_threads(cx->enc, cx->threads);
    cx->threads = ops_get_threads(encoder_backend(cx->enc));

    /* Pass 2 over this rank's records: tokenize. */
    double t0 = xr_now();
    int64_t *first = xr_malloc(sizeof(int64_t) * (size_t)(nloc + 1));
    first[0] = 0;
    for (int64_t i = 0; i < nloc; i++) first[i + 1] = first[i] + nitems[r0 + i];
    int64_t nit = first[nloc];
    BatchItem *items = xr_malloc(sizeof(BatchItem) * (size_t)(nit ? nit : 1));
    char **ids = xr_calloc((size_t)(nloc ? nloc : 1), sizeof(char *));
    int *kinds = xr_calloc((size_t)(nloc ? nloc : 1), sizeof(int));
    SeqStore seqs;
    seqs_init(&seqs);
    for (int64_t i = 0; i < nloc; i++) {
        const CliRecord *r = &rec[r0 + i];
        job->tokenize(job->ctx, cx->input_data + r->off, (size_t)r->len, &seqs, items + first[i], &ids[i], &kinds[i]);
    }
    int32_t *lens = xr_malloc(sizeof(int32_t) * (size_t)(nit ? nit : 1));
    for (int64_t j = 0; j < nit; j++) lens[j] = batch_item_len(cx->tok, &seqs, items[j], cx->max_len);
    BatchPlan plan;
    batch_plan_init(&plan);
    for (int64_t w = w0; w < w1; w++) {
        int64_t a = first[wstart[w] - r0], b = first[wstart[w + 1] - r0];
        batch_plan_add(&plan, lens, a, b - a, cx->batch_size);
    }
    double t_tok = xr_now() - t0;

    /* Forward, batch by batch, results scattered back to item order. */
    t0 = xr_now();
    int od = job->out_dim;
    float *res = xr_malloc(sizeof(float) * (size_t)(nit ? nit : 1) * (size_t)od);
    float *out = xr_malloc(sizeof(float) * (size_t)(plan.max_B ? plan.max_B : 1) * (size_t)od);
    BatchBuf bb;
    batch_buf_init(&bb);
    int progress = cx->rank == 0 && !cx->quiet && isatty(2);
    double last = 0;
    int64_t done_items = 0;
    for (int64_t k = 0; k < plan.nbatches; k++) {
        int n = batch_plan_size(&plan, k);
        const int64_t *idx = plan.order + plan.start[k];
        const Batch *b = batch_fill(&bb, cx->tok, &seqs, items, idx, n, cx->max_len);
        job->forward(job->ctx, cx->enc, b, out);
        for (int i = 0; i < n; i++) memcpy(res + idx[i] * od, out + (size_t)i * od, sizeof(float) * (size_t)od);
        done_items += n;
        if (progress && xr_now() - last > 0.25) {
            last = xr_now();
            cli_progress(cx, job, k + 1, plan.nbatches, done_items, t0, 0);
        }
    }
    if (progress) cli_progress(cx, job, plan.nbatches, plan.nbatches, done_items, t0, 1);
    double t_fwd = xr_now() - t0;
    batch_buf_free(&bb);
    free(out);

    CliBuf local = {0};
    for (int64_t i = 0; i < nloc; i++) {
        job->format(job->ctx, ids[i], kinds[i], res + first[i] * od, first[i + 1] - first[i], &local);
        free(ids[i]);
    }

    CliStats mine = {(double)nloc,        (double)nit, (double)plan.real_tokens, (double)plan.padded_tokens,
                     t_tok,               t_fwd,       (double)plan.nbatches};
    size_t total = 0, stats_n = 0;
    char *body = comm_gather(cx->comm, local.p, local.n, 0, &total, NULL);
    char *stats = comm_gather(cx->comm, &mine, sizeof mine, 0, &stats_n, NULL);
    st = 0;
    if (cx->rank == 0) {
        CliBuf head = {0};
        if (job->prologue) job->prologue(job->ctx, nrec, &head);
        st = cli_write_output(cx->output, &head, body, total, &e);
        cli_buf_free(&head);
        if (!st && !cx->quiet) cli_report(cx, job, (const CliStats *)stats, t_load);
    }
    free(body);
    free(stats);
    cli_buf_free(&local);
    batch_plan_free(&plan);
    seqs_free(&seqs);
    free(lens);
    free(res);
    free(items);
    free(ids);
    free(kinds);
    free(first);
    free(wstart);
    free(nitems);
    free(rec);
    if (comm_check(cx->comm, st, &e)) return cli_fail(cx, &e, 1);
    return cli_finish(cx, 0);
}
