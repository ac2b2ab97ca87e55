/* cli_job.c: the batched job driver of score and embed (see cli_common.h, CliJob): every rank reads the same
 * input bytes (rank 0 reads, then broadcasts), validates every line, and takes a contiguous run of
 * length-sorting windows; rank 0 gathers the outputs, writes them and reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "xr_progress.h"

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
    int st = cli_backend(&cx->b, &e);
    if (!st && !(cx->enc = encoder_load_on(cx->model_dir, cx->b.be, &e))) st = -1;
    if (comm_check(cx->b.comm, st, &e)) {
        free(rec);
        free(nitems);
        free(wstart);
        return cli_fail(cx, &e, 1);
    }
    double t_load = xr_now() - t_load0;
    cx->threads = ops_get_threads(cx->b.be);

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
    /* batches of rank 0's share: a line in place on a terminal, plain lines in a log */
    XrProgress prog;
    char what[64];
    snprintf(what, sizeof what, "xrank %s: batch%s", cx->cmd, cx->size > 1 ? " (rank 0's share)" : "");
    xr_progress_begin(&prog, cx->rank == 0 && !cx->quiet, what, "batches", plan.nbatches);
    int64_t done_items = 0;
    for (int64_t k = 0; k < plan.nbatches; k++) {
        int n = batch_plan_size(&plan, k);
        const int64_t *idx = plan.order + plan.start[k];
        const Batch *b = batch_fill(&bb, cx->tok, &seqs, items, idx, n, cx->max_len);
        job->forward(job->ctx, cx->enc, b, out);
        for (int i = 0; i < n; i++) memcpy(res + idx[i] * od, out + (size_t)i * od, sizeof(float) * (size_t)od);
        done_items += n;
        if (prog.on) {
            char extra[64];
            double dt = xr_now() - t0;
            snprintf(extra, sizeof extra, "%.1f %s/s", dt > 0 ? (double)done_items / dt : 0.0, job->unit);
            xr_progress_update(&prog, k + 1, extra);
        }
    }
    xr_progress_end(&prog);
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
    char *body = comm_gather(cx->b.comm, local.p, local.n, 0, &total, NULL);
    char *stats = comm_gather(cx->b.comm, &mine, sizeof mine, 0, &stats_n, NULL);
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
    if (comm_check(cx->b.comm, st, &e)) return cli_fail(cx, &e, 1);
    return cli_finish(cx, 0);
}
