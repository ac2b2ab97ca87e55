/* cmd_tokenize.c: `xrank tokenize`: text (BEIR / pair files / FlagEmbedding jsonl) -> an HDF5 dataset
 * directory (token stores + index.h5). Under mpirun every rank parses the text (deterministic), tokenizes a
 * byte-balanced contiguous slice, the row lengths are all-gathered so every rank knows the data-only shard
 * plan, each shard's tokens are gathered on its writer (shard k on rank k % N), and rank 0 writes the index
 * and renames the directory into place: the bytes written are the same for any N. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"
#include "comm.h"
#include "dataset.h"
#include "hfmodel.h"
#include "textread.h"
#include "tokenizer.h"
#include "xr_tmpclean.h"

static const ArgSpec TOKENIZE_FLAGS[] = {
    {"input", ARG_STR, NULL, "PATH[,PATH]",
     "a BEIR directory, or pair / FlagEmbedding files (.jsonl .json .csv .tsv .txt, each optionally .gz), "
     "comma separated",
     NULL, 0},
    CLI_FLAG_OUTPUT(NULL, "DIR", "dataset directory to write (written as DIR.tmp.HOST.PID, renamed when complete; removed on Ctrl-C)"),
    CLI_FLAG_MODEL("the model whose tokenizer to use: HF directory or hub id in the local cache"),
    CLI_FLAG_OVERWRITE("replace an existing output dataset directory"),
    {"format", ARG_CHOICE, "auto", "",
     "input format; auto: a directory is BEIR, a jsonl whose first record has \"query\" and a list \"pos\" is "
     "FlagEmbedding, anything else pairs",
     "auto|beir|pairs|flagembedding", 0},
    {"split", ARG_STR, NULL, "NAME", "BEIR: qrels/NAME.tsv (default: test, or the only file in qrels/)", NULL, 0},
    {"title-sep", ARG_STR, " ", "TEXT", "BEIR: a passage is strip(title + TEXT + text), as BEIR's models join them",
     NULL, 0},
    {"no-title", ARG_SWITCH, NULL, "", "BEIR: a passage is the text alone", NULL, 0},
    {"query-column", ARG_STR, NULL, "NAME", "pair files: the query column (default: positional)", NULL, 0},
    {"positive-column", ARG_STR, NULL, "NAME", "pair files: the positive column (with --query-column)", NULL, 0},
    {"negative-columns", ARG_STR, NULL, "A,B", "pair files: negative columns (with --query-column)", NULL, 0},
    {"label-column", ARG_STR, NULL, "NAME", "pair files: a label / score column (with --query-column)", NULL, 0},
    {"no-header", ARG_SWITCH, NULL, "", "csv / tsv files have no header line: columns are 0, 1, 2, ...", NULL, 0},
    {"allow-empty", ARG_SWITCH, NULL, "", "keep empty texts as 0-token rows instead of failing", NULL, 0},
    CLI_FLAG_UTF8_ERRORS,
    {"max-query-tokens", ARG_INT, "0", "N", "keep the first N tokens of a query; 0 = all", NULL, 0},
    {"max-passage-tokens", ARG_INT, "0", "N", "keep the first N tokens of a passage; 0 = all", NULL, 0},
    {"shard-size", ARG_STR, "256M", "BYTES", "target bytes of a shard file before compression (K, M, G suffixes)",
     NULL, 0},
    CLI_FLAG_THREADS,
    {"quiet", ARG_SWITCH, NULL, "", "no report on stderr", NULL, 0},
    CLI_FLAG_CONFIG("JSON file of flag values"),
};
#define NFLAGS ((int)(sizeof TOKENIZE_FLAGS / sizeof TOKENIZE_FLAGS[0]))

static const ArgHelp TOKENIZE_HELP = {
    "Tokenize text into an HDF5 dataset: token stores (queries, passages) + qrels / negatives / labels.",
    "inputs:\n"
    "  BEIR directory   corpus.jsonl {_id,title,text}, queries.jsonl {_id,text}, qrels/<split>.tsv\n"
    "  pair files       jsonl / csv / tsv: query, positive[, negatives...] or query, passage, label (columns\n"
    "                   named label or score are the label; others are positional unless --query-column)\n"
    "  FlagEmbedding    jsonl {query, pos: [..], neg: [..], pos_scores, neg_scores}\n"
    "Passages are de-duplicated by exact text and rows with the same query text become one query (pair and\n"
    "FlagEmbedding files; BEIR keeps its ids). Sequences are stored without special tokens. Any bad input\n"
    "stops the run with file:line and leaves no output. The output directory holds index.h5 and shard files\n"
    "queries-NNNNN.h5 / passages-NNNNN.h5 (docs/FORMATS.md); it is the same, byte for byte, for any number\n"
    "of ranks and threads.",
    "  xrank tokenize --model sentence-transformers/all-MiniLM-L6-v2 --input data/scifact --output scifact.h5d\n"
    "  mpirun -np 8 xrank tokenize --model BAAI/bge-reranker-v2-m3 --input train.jsonl.gz --output train.h5d\n"
    "  xrank tokenize --model ./minilm --input triples.tsv --no-header --output msmarco --max-passage-tokens 256",
};

static int parse_size(const char *s, int64_t *out) {
    char *end;
    double v = strtod(s, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1024, end++;
    else if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'b') end++;
    if (end == s || *end || v <= 0 || v * mul > 64.0 * 1024 * 1024 * 1024) return -1;
    *out = (int64_t)(v * mul);
    return *out > 0 ? 0 : -1;
}

const CliCmd CLI_CMD_TOKENIZE = {"tokenize", TOKENIZE_FLAGS, NFLAGS, &TOKENIZE_HELP, 0, NULL, 0, NULL};

typedef struct {
    CliBase b;
    Comm *c;
    int rank, size;
    Tokenizer *tok;
    char *model_dir;
    char *tmpdir;
    TextSet ts;
    int have_ts;
} TokCtx;

static int tok_finish(TokCtx *x, int code) {
    if (x->tok) tok_free(x->tok);
    free(x->model_dir);
    if (x->tmpdir) xr_tmpclean_forget(x->tmpdir);
    free(x->tmpdir);
    if (x->have_ts) textset_free(&x->ts);
    return cli_end(&x->b, code);
}

/* Collective: every rank passes its status; on failure rank 0 prints the (lowest rank's) message, removes the
 * temporary directory, and all ranks return the exit code. */
static int tok_check(TokCtx *x, int status, XrErr *e) {
    if (comm_check(x->c, status, e) == 0) return 0;
    if (x->rank == 0) {
        fprintf(stderr, "xrank tokenize: error: %s\n", e->msg);
        if (x->tmpdir) ds_output_abort(x->tmpdir);
    }
    return -1;
}

/* One store over the ranks: tokenize this rank's slice, share the lengths, gather each shard on its writer,
 * write the shards this rank owns. Fills st (nshards, row_off: caller frees *row_off), *ntok and *ntrunc. */
static int tokenize_store(TokCtx *x, DsStore *st, const TextList *texts, int threads, int64_t shard_bytes,
                          int64_t **row_off, int64_t *ntok, int64_t *ntrunc, double *t_tok, XrErr *e) {
    int64_t lo, hi, n = texts->n;
    ds_slice(texts, x->rank, x->size, &lo, &hi);
    int64_t *mylens = xr_malloc(sizeof(int64_t) * (size_t)(hi - lo + 1)), myntok, mytrunc;
    double t0 = xr_now();
    int32_t *mytok = ds_tokenize(x->tok, texts, lo, hi, st->max_tokens, threads, mylens, &myntok, &mytrunc);
    double mine_t = xr_now() - t0;
    size_t got;
    /* the slowest rank's tokenization time: what the job waited for */
    double *ts = (double *)comm_allgather(x->c, &mine_t, sizeof mine_t, &got, NULL);
    for (int r = 0; r < x->size; r++)
        if (ts[r] > *t_tok) *t_tok = ts[r];
    free(ts);
    int64_t *lens = (int64_t *)comm_allgather(x->c, mylens, sizeof(int64_t) * (size_t)(hi - lo), &got, NULL);
    int64_t *tr = (int64_t *)comm_allgather(x->c, &mytrunc, sizeof mytrunc, &got, NULL);
    *ntrunc = 0;
    for (int r = 0; r < x->size; r++) *ntrunc += tr[r];
    free(tr);
    free(mylens);
    /* token offset of every row: where a shard's or a slice's tokens start */
    int64_t *tokoff = xr_malloc(sizeof(int64_t) * (size_t)(n + 1));
    tokoff[0] = 0;
    for (int64_t i = 0; i < n; i++) tokoff[i + 1] = tokoff[i] + lens[i];
    *ntok = tokoff[n];
    st->nshards = ds_plan_shards(lens, n, st->ids, shard_bytes, row_off);
    st->row_off = *row_off;
    int32_t **mine = xr_calloc((size_t)st->nshards, sizeof(int32_t *));
    for (int k = 0; k < st->nshards; k++) {
        int64_t a = st->row_off[k], b = st->row_off[k + 1];
        int64_t s0 = a > lo ? a : lo, s1 = b < hi ? b : hi;
        size_t bytes = s1 > s0 ? sizeof(int32_t) * (size_t)(tokoff[s1] - tokoff[s0]) : 0;
        const int32_t *src = s1 > s0 ? mytok + (tokoff[s0] - tokoff[lo]) : mytok;
        mine[k] = (int32_t *)comm_gather(x->c, src, bytes, k % x->size, &got, NULL);
        if (mine[k] && got != sizeof(int32_t) * (size_t)(tokoff[b] - tokoff[a])) {
            fprintf(stderr, "xrank tokenize: internal error: shard %d gathered %zu bytes\n", k, got);
            abort();
        }
    }
    free(mytok);
    int status = 0;
    static int paused; /* test hook: once per process, after this rank's first shard (tokenize_interrupted) */
    for (int k = x->rank; k < st->nshards && status == 0; k += x->size) {
        status = ds_write_shard(x->tmpdir, st, k, mine[k], lens + st->row_off[k], e);
        if (status == 0 && !paused) paused = 1, xr_tmpclean_test_pause("shard", x->tmpdir);
    }
    for (int k = 0; k < st->nshards; k++) free(mine[k]);
    free(mine);
    free(tokoff);
    free(lens);
    return status;
}

int cmd_tokenize(int argc, char **argv) {
    TokCtx x = {0};
    int pr = cli_start(&x.b, &CLI_CMD_TOKENIZE, 0, argc, argv);
    if (pr >= 0) return pr;
    x.c = x.b.comm;
    x.rank = x.b.rank;
    x.size = x.b.size;
    XrErr e = {{0}};
    const Args *a = &x.b.args;
    const char *input = args_str(a, "input"), *output = x.b.output, *model = x.b.model;
    int64_t shard_bytes = 0;
    if (!input || !output || !model)
        xr_errf(&e, "--input, --output and --model are required (xrank tokenize --help)");
    else if (parse_size(args_str(a, "shard-size"), &shard_bytes) < 0)
        xr_errf(&e, "--shard-size %s: expected a positive size such as 256M, 1G or 65536", args_str(a, "shard-size"));
    if (e.msg[0]) return cli_fail_base(&x.b, &e, 2);
    int quiet = x.b.quiet, overwrite = x.b.overwrite;
    int threads = cli_threads_resolved(&x.b);
    double t_start = xr_now();

    /* tokenizer on every rank; the output checked by rank 0 before any work */
    int status = 0;
    x.model_dir = hf_resolve_model(model, &e);
    if (!x.model_dir) status = -1;
    if (status == 0 && !(x.tok = tok_load(x.model_dir, &e))) status = -1;
    if (status == 0 && x.rank == 0) { /* what killed runs left (SIGKILL, a crash: no handler ran), before the output
                                         * check: an earlier output put back from OUT.old.* counts as existing */
        char note[4096];
        xr_tmpclean_sweep(output, note, sizeof note);
        if (note[0] && !quiet) fprintf(stderr, "xrank tokenize: %s\n", note);
    }
    if (status == 0 && x.rank == 0) status = ds_output_check(output, overwrite, &e);
    if (tok_check(&x, status, &e)) return tok_finish(&x, 1);

    /* every rank parses the text: deterministic, so all hold the same TextSet */
    static const TrFormat fmts[] = {TR_AUTO, TR_BEIR, TR_PAIRS, TR_FLAG};
    const char *fname = args_str(a, "format");
    int fi = !strcmp(fname, "beir") ? 1 : !strcmp(fname, "pairs") ? 2 : !strcmp(fname, "flagembedding") ? 3 : 0;
    status = cli_read_text(a, input, fmts[fi], &x.ts, &e);
    x.have_ts = status == 0;
    if (tok_check(&x, status, &e)) return tok_finish(&x, 1);
    if (x.rank == 0 && x.ts.utf8_replaced) /* said even with --quiet: the text is not what the file holds */
        fprintf(stderr, "xrank tokenize: warning: %lld invalid UTF-8 sequence%s on %lld line%s read as U+FFFD "
                        "(--utf8-errors replace)\n", (long long)x.ts.utf8_replaced,
                x.ts.utf8_replaced > 1 ? "s" : "", (long long)x.ts.utf8_lines, x.ts.utf8_lines > 1 ? "s" : "");
    double t_parsed = xr_now();

    /* the temporary directory: made by rank 0, its name sent to all */
    status = 0;
    size_t tn = 0;
    if (x.rank == 0) {
        x.tmpdir = ds_output_begin(output, &e);
        if (!x.tmpdir) status = -1;
    }
    if (tok_check(&x, status, &e)) return tok_finish(&x, 1);
    if (x.rank == 0) tn = strlen(x.tmpdir);
    comm_bcast_buf(x.c, &x.tmpdir, &tn, 0);
    /* every rank writes shards into it, so every rank removes it on a signal (mpirun forwards one to all): the
     * last to die finds what the others wrote */
    if (x.rank != 0) xr_tmpclean_add(x.tmpdir);

    DsTokInfo ti;
    ds_tok_info(x.tok, &ti);
    DsStore st[2] = {{.name = "queries", .tok = &ti, .max_tokens = args_int(a, "max-query-tokens"), .ts = &x.ts,
                      .ids = &x.ts.query_ids},
                     {.name = "passages", .tok = &ti, .max_tokens = args_int(a, "max-passage-tokens"), .ts = &x.ts,
                      .ids = &x.ts.passage_ids}};
    const TextList *texts[2] = {&x.ts.queries, &x.ts.passages};
    int64_t *row_off[2] = {NULL, NULL}, ntok[2] = {0, 0}, ntrunc[2] = {0, 0};
    double t_phase = xr_now(), t_tok = 0, tt[2] = {0, 0};
    int rc = 0;
    for (int s = 0; s < 2 && rc == 0; s++) {
        status = tokenize_store(&x, &st[s], texts[s], threads, shard_bytes, &row_off[s], &ntok[s], &ntrunc[s], &tt[s],
                                &e);
        if (tok_check(&x, status, &e)) rc = 1;
        t_tok += tt[s];
    }
    t_phase = xr_now() - t_phase;
    /* every shard is written: rank 0 alone owns the temporary directory now (another rank's handler must not empty
     * it while rank 0 renames it into place) */
    if (rc == 0 && x.rank != 0) xr_tmpclean_forget(x.tmpdir);
    if (rc == 0) {
        status = x.rank == 0 ? ds_write_index(x.tmpdir, &x.ts, &st[0], &st[1], ntok, ntrunc, &e) : 0;
        if (status == 0 && x.rank == 0) status = ds_output_commit(x.tmpdir, output, overwrite, &e);
        if (tok_check(&x, status, &e)) rc = 1;
    }
    if (rc == 0 && x.rank == 0 && !quiet) {
        const TextSet *ts = &x.ts;
        double bytes = 0;
        for (int s = 0; s < 2; s++)
            if (texts[s]->n) bytes += (double)(texts[s]->start[texts[s]->n] - texts[s]->n);
        double t_end = xr_now();
        fprintf(stderr,
                "xrank tokenize: %s -> %s (%s, %s %s)\n"
                "  queries  %lld rows, %lld tokens, %d shard%s\n"
                "  passages %lld rows, %lld tokens, %d shard%s\n"
                "  qrels %lld, negatives %lld, labels %lld\n",
                input, output, tr_format_name(ts->format), ti.kind, ti.fingerprint, (long long)texts[0]->n,
                (long long)ntok[0], st[0].nshards, st[0].nshards == 1 ? "" : "s", (long long)texts[1]->n,
                (long long)ntok[1], st[1].nshards, st[1].nshards == 1 ? "" : "s", (long long)ts->nqrels,
                (long long)ts->nneg, (long long)ts->nlab);
        if (ntrunc[0] || ntrunc[1])
            fprintf(stderr, "  truncated: %lld queries at %lld tokens, %lld passages at %lld tokens\n",
                    (long long)ntrunc[0], (long long)st[0].max_tokens, (long long)ntrunc[1],
                    (long long)st[1].max_tokens);
        if (ts->merged_query_rows || ts->dup_passage_texts || ts->dup_qrels || ts->dup_negatives ||
            ts->negatives_dropped_as_positive || ts->queries_without_qrels || ts->empty_texts)
            fprintf(stderr,
                    "  merged: %lld rows into earlier queries, %lld repeated passage texts; dropped: %lld repeated "
                    "qrels, %lld repeated negatives, %lld negatives that are positives, %lld queries without "
                    "qrels; %lld empty texts kept\n",
                    (long long)ts->merged_query_rows, (long long)ts->dup_passage_texts, (long long)ts->dup_qrels,
                    (long long)ts->dup_negatives, (long long)ts->negatives_dropped_as_positive,
                    (long long)ts->queries_without_qrels, (long long)ts->empty_texts);
        int cores = x.size * threads;
        fprintf(stderr,
                "  %.2f MB of text on %d rank%s x %d thread%s: parse %.2fs, tokenize %.3fs (%.2f MB/s, %.2f MB/s per "
                "core), gather + write %.3fs, total %.2fs\n",
                bytes / 1e6, x.size, x.size == 1 ? "" : "s", threads, threads == 1 ? "" : "s", t_parsed - t_start,
                t_tok, t_tok > 0 ? bytes / 1e6 / t_tok : 0.0, t_tok > 0 ? bytes / 1e6 / t_tok / cores : 0.0,
                t_phase - t_tok, t_end - t_start);
    }
    free(row_off[0]);
    free(row_off[1]);
    return tok_finish(&x, rc);
}
