/* cmd_mine.c: `xrank mine`: hard-negative mining over a tokenized dataset with a bi-encoder, the corpus sharded
 * over MPI ranks (mining/mine.h), optional cross-encoder rescoring, and the output: the HDF5 group file
 * (io/groups.h) and on request jsonl in the sentence-transformers / FlagEmbedding formats, with the original
 * text when --text-from gives the input the dataset was tokenized from (checked token by token), else ids. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cli_common.h"
#include "comm.h"
#include "dataset.h"
#include "embcache.h"
#include "groups.h"
#include "h5store.h"
#include "h5util.h"
#include "hfmodel.h"
#include "mine.h"
#include "model.h"
#include "textread.h"
#include "tokenizer.h"

static const ArgSpec MINE_FLAGS[] = {
    {"input", ARG_STR, NULL, "DIR", "dataset directory written by `xrank tokenize` (queries, passages, qrels)", NULL,
     0},
    CLI_FLAG_OUTPUT(NULL, "FILE", "HDF5 group file to write (temporary name, renamed when complete)"),
    CLI_FLAG_MODEL("bi-encoder: Hugging Face model directory, or a hub id in the local HF cache"),
    CLI_FLAG_OVERWRITE("replace existing output files"),
    {"batch-size", ARG_INT, "32", "N", "sequences per embedding batch", NULL, 1},
    CLI_FLAG_MAX_LENGTH("bi-encoder tokens per sequence with specials (default: max_seq_length of "
                        "sentence_bert_config.json, else the tokenizer's model_max_length capped by the positions)"),
    {"bucket-batches", ARG_INT, "64", "N",
     "rows are sorted by length within windows of N batches; a rank embeds whole windows", NULL, 1},
    CLI_FLAGS_COMPUTE,
    {"pooling", ARG_CHOICE, NULL, "", "token pooling (default: the model's sentence-transformers Pooling, else cls)",
     "cls|mean", 0},
    {"normalize", ARG_BOOL, NULL, "0|1",
     "L2-normalise embeddings (default: 1 when the modules include Normalize or there is no sentence-transformers "
     "config)",
     NULL, 0},
    {"query-prompt", ARG_STR, "", "TEXT", "text put before every query, e.g. \"query: \"", NULL, 0},
    {"corpus-prompt", ARG_STR, "", "TEXT", "text put before every passage, e.g. \"passage: \"", NULL, 0},
    {"style", ARG_CHOICE, NULL, "",
     "selection semantics: st = sentence-transformers mine_hard_negatives, flagembedding = hn_mine (default: "
     "flagembedding when --range-for-sampling or --negative-number is given, else st)",
     "st|flagembedding", 0},
    {"num-negatives", ARG_INT, NULL, "N", "negatives per query (default 3; flagembedding style 15)", NULL, 1},
    {"negative-number", ARG_INT, NULL, "N", "FlagEmbedding's name for --num-negatives", NULL, 1},
    {"range-min", ARG_INT, NULL, "N",
     "st: skip the N best surviving candidates; flagembedding: first retrieval rank of the window (0-based)", NULL,
     0},
    {"range-max", ARG_INT, NULL, "N",
     "st: end of the survivor window (default range-min + num-negatives + max positives, x10 negatives with a "
     "margin or max-score); flagembedding: end rank (exclusive)",
     NULL, 1},
    {"range-for-sampling", ARG_STR, NULL, "A-B", "FlagEmbedding: sample from retrieval ranks A..B-1 (e.g. 10-210)",
     NULL, 0},
    {"max-score", ARG_FLOAT, NULL, "X", "drop candidates scoring above X", NULL, 0},
    {"min-score", ARG_FLOAT, NULL, "X", "drop candidates scoring below X", NULL, 0},
    {"absolute-margin", ARG_FLOAT, NULL, "M", "drop candidates with score + M > the query's lowest positive score",
     NULL, 0},
    {"relative-margin", ARG_FLOAT, NULL, "M",
     "drop candidates with score > pos - |pos| * M (pos: the query's lowest positive score)", NULL, 0},
    {"sampling-strategy", ARG_CHOICE, NULL, "", "take the best candidates, or sample (default: top; flagembedding: "
     "random)", "top|random", 0},
    {"seed", ARG_INT, "0", "N", "random sampling seed (one stream per query: rank-count independent)", NULL, 0},
    {"include-positives", ARG_SWITCH, NULL, "", "st: keep the query's positives among the candidates", NULL, 0},
    {"fill-from-corpus", ARG_SWITCH, NULL, "",
     "flagembedding: pad queries with too few negatives with random passages, as hn_mine does", NULL, 0},
    {"cross-encoder", ARG_STR, NULL, "DIR|ID",
     "rescore every candidate and positive with this cross-encoder (pairs spread over the ranks); its scores then "
     "drive the filters and the order, as in sentence-transformers",
     NULL, 0},
    {"ce-max-score", ARG_FLOAT, NULL, "X", "drop candidates the cross-encoder scores above X (likely positives)",
     NULL, 0},
    {"ce-batch-size", ARG_INT, "32", "N", "pairs per cross-encoder batch", NULL, 1},
    {"ce-max-length", ARG_INT, NULL, "N", "cross-encoder tokens per pair (default: its tokenizer's, capped)", NULL,
     1},
    {"ce-activation", ARG_CHOICE, "sigmoid", "",
     "applied to the cross-encoder's logit (sentence-transformers CrossEncoder.predict: sigmoid for one label)",
     "sigmoid|none", 0},
    {"cache-dir", ARG_STR, NULL, "DIR",
     "embedding cache (default: DATASET/embeddings); must be visible to every rank", NULL, 0},
    {"no-cache", ARG_SWITCH, NULL, "", "neither read nor write cached embeddings", NULL, 0},
    {"query-block", ARG_INT, "1024", "N",
     "queries searched together: their embeddings are all-gathered, each rank searches its shard, the per-rank "
     "top-k lists are all-gathered and merged",
     NULL, 1},
    {"passage-tile", ARG_INT, "4096", "N",
     "passages per search GEMM: a score tile holds min(query-block, 256) x N floats (per search thread)", NULL, 1},
    {"search-device", ARG_CHOICE, "auto", "",
     "where the k-NN search runs: auto = the --device (with --device cuda each rank's shard of passage embeddings "
     "goes to its GPU: GEMM screening in the --precision, exact fp32 rescoring), cpu = on the CPU, backend = the "
     "device search (tiles screened and rescored by the --device's ops, bounded by --search-memory) on any device: "
     "with --device cpu the CPU backend's reference ops, which checks the GPU path's tiling and streaming without a GPU",
     "auto|cpu|backend", 0},
    {"search-memory", ARG_FLOAT, "0", "MIB",
     "device search: memory the search may hold per rank, in MiB (fractions allowed; 0 = 80% of the GPU's, "
     "unbounded on the CPU backend); a shard that does not fit streams through in tiles",
     NULL, 0},
    {"search-tile", ARG_INT, "65536", "N", "device search: passages per screening GEMM (lowered to fit --search-memory)",
     NULL, 1},
    {"eval-depth", ARG_INT, "100", "N",
     "report MRR@10, NDCG@10, Recall@10 and Recall@N of the bi-encoder on the qrels (0 = off)", NULL, 0},
    {"jsonl", ARG_STR, NULL, "FILE", "also write the mined set as jsonl (- for stdout)", NULL, 0},
    {"jsonl-format", ARG_CHOICE, "triplet", "", "jsonl layout (sentence-transformers output formats, or FlagEmbedding)",
     "triplet|n-tuple|labeled-pair|labeled-list|flagembedding", 0},
    {"output-scores", ARG_SWITCH, NULL, "", "jsonl: add the scores (cross-encoder's when computed)", NULL, 0},
    {"text-from", ARG_STR, NULL, "PATH[,PATH]",
     "jsonl: the input the dataset was tokenized from (with the same --split / --title-sep / --no-title / column "
     "flags), for the texts; every text written is checked against the stored tokens. Without it the jsonl holds ids",
     NULL, 0},
    {"split", ARG_STR, NULL, "NAME", "--text-from BEIR: qrels split (as given to xrank tokenize)", NULL, 0},
    {"title-sep", ARG_STR, " ", "TEXT", "--text-from BEIR: title separator (as given to xrank tokenize)", NULL, 0},
    {"no-title", ARG_SWITCH, NULL, "", "--text-from BEIR: passages without titles (as given to xrank tokenize)", NULL,
     0},
    {"no-header", ARG_SWITCH, NULL, "", "--text-from csv / tsv: no header line (as given to xrank tokenize)", NULL, 0},
    {"query-column", ARG_STR, NULL, "NAME", "--text-from pair files: as given to xrank tokenize", NULL, 0},
    {"positive-column", ARG_STR, NULL, "NAME", "--text-from pair files: as given to xrank tokenize", NULL, 0},
    {"negative-columns", ARG_STR, NULL, "A,B", "--text-from pair files: as given to xrank tokenize", NULL, 0},
    {"label-column", ARG_STR, NULL, "NAME", "--text-from pair files: as given to xrank tokenize", NULL, 0},
    {"allow-empty", ARG_SWITCH, NULL, "", "--text-from: as given to xrank tokenize", NULL, 0},
    {"utf8-errors", ARG_CHOICE, "strict", "", "--text-from: as given to xrank tokenize", "strict|replace", 0},
    {"groups-in", ARG_STR, NULL, "FILE",
     "do not mine: read this group file, check it against --input, and write --jsonl from it", NULL, 0},
    CLI_FLAG_QUIET,
    CLI_FLAG_CONFIG("JSON file of flag values"),
};
#define NFLAGS ((int)(sizeof MINE_FLAGS / sizeof MINE_FLAGS[0]))

static const ArgHelp MINE_HELP = {
    "Mine hard negatives for every query of a tokenized dataset with a bi-encoder, the corpus sharded over ranks.",
    "Each rank embeds a contiguous shard of the passages and queries (whole length-sorting windows, so the result\n"
    "does not depend on the number of ranks); embeddings are cached on disk (--cache-dir) keyed by model, store,\n"
    "prompt, pooling, normalisation, max length and precision. Queries travel to every rank in blocks of\n"
    "--query-block: a block's embeddings are all-gathered, each rank computes an exact inner-product top-k over\n"
    "its shard with GEMM tiles (memory: query-block x passage-tile floats for the tile, plus the rank's shard of\n"
    "embeddings; the full query x corpus matrix is never built), and the per-rank lists are all-gathered and\n"
    "merged (score descending, then passage row ascending). Passages with identical tokens are searched once.\n"
    "With --device cuda each rank's shard of embeddings goes to its GPU (streamed in tiles when it exceeds\n"
    "--search-memory), is screened by GEMM in the --precision and the survivors are rescored exactly: the same\n"
    "lists as the CPU search, bit for bit.\n"
    "Positives are the qrels with grade > 0; queries without one are not mined. Selection follows\n"
    "sentence-transformers' mine_hard_negatives (--style st) or FlagEmbedding's hn_mine (--style flagembedding):\n"
    "see mining/select.h. Output: --output, an HDF5 file with one row per (query, positive): query and passage\n"
    "row indices, negatives [K] (-1 = not found), retriever scores [1+K] and cross-encoder scores [1+K] when\n"
    "rescored (docs/FORMATS.md \"Training groups\"). --jsonl writes the same rows in a sentence-transformers\n"
    "format or FlagEmbedding's; texts come from --text-from (the stores hold token ids only), else ids.",
    "  xrank mine --model all-MiniLM-L6-v2 --input scifact.h5d --output groups.h5\n"
    "  mpirun -np 4 xrank mine --model M --input D --output g.h5 --num-negatives 5 --relative-margin 0.05 \\\n"
    "      --jsonl train.jsonl --jsonl-format n-tuple --text-from data/scifact\n"
    "  xrank mine --model M --input D --output g.h5 --range-for-sampling 2-200 --negative-number 15\n"
    "  mpirun -np 8 xrank mine --model M --input D --output g.h5 --cross-encoder BAAI/bge-reranker-v2-m3 \\\n"
    "      --ce-max-score 0.9 --device cuda",
};

const CliCmd CLI_CMD_MINE = {"mine", MINE_FLAGS, NFLAGS, &MINE_HELP, 0, NULL, 0, NULL};

typedef struct {
    CliBase b;
    Comm *c;
    int rank, size;
    char *model_dir, *ce_dir;
    ModelConfig cfg, ce_cfg;
    Tokenizer *tok, *ce_tok;
    Encoder *bi, *ce;
    char *cache_dir;
    TextSet ts;
    int have_ts;
    char **qids, **pids;
} MineCli;

static int mc_finish(MineCli *x, int code) {
    if (x->ce) encoder_free(x->ce);
    if (x->bi) encoder_free(x->bi);
    if (x->tok) tok_free(x->tok);
    if (x->ce_tok) tok_free(x->ce_tok);
    free(x->model_dir);
    free(x->ce_dir);
    free(x->cache_dir);
    if (x->have_ts) textset_free(&x->ts);
    free(x->qids);
    free(x->pids);
    return cli_end(&x->b, code);
}

static int mc_fail(MineCli *x, const XrErr *e, int code) {
    if (x->rank == 0) fprintf(stderr, "xrank mine: error: %s\n", e->msg);
    fflush(stderr);
    return mc_finish(x, code);
}

/* ---- texts for the jsonl ---- */

typedef struct {
    const TextList *q, *p;
    char **qid, **pid;
} McTexts;

static const char *mc_text_q(void *ctx, int64_t row, size_t *len) {
    const McTexts *t = ctx;
    if (t->q) return textlist_get(t->q, row, len);
    *len = strlen(t->qid[row]);
    return t->qid[row];
}

static const char *mc_text_p(void *ctx, int64_t row, size_t *len) {
    const McTexts *t = ctx;
    if (t->p) return textlist_get(t->p, row, len);
    *len = strlen(t->pid[row]);
    return t->pid[row];
}

/* Every text the jsonl will hold must tokenize to the stored row (cut at the store's max_tokens). */
static int mc_check_texts(TokenStore *s, const TextList *texts, const Tokenizer *tok, const int64_t *rows, int64_t n,
                          const char *what, const char *src, XrErr *e) {
    TokBatch tb = {0};
    if (h5store_read_rows(s, rows, n, &tb, e)) return -1;
    int64_t cut = h5store_max_tokens(s);
    int32_t *ids = NULL;
    size_t cap = 0;
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i++) {
        size_t len;
        const char *t = textlist_get(texts, rows[i], &len);
        int64_t k = tok_encode(tok, t, len, &ids, &cap);
        if (cut > 0 && k > cut) k = cut;
        int64_t want = tb.offsets[i + 1] - tb.offsets[i];
        if (k != want || memcmp(ids, tb.tokens + tb.offsets[i], sizeof(int32_t) * (size_t)k))
            rc = xr_errf(e,
                         "--text-from %s: %s row %lld does not tokenize to the stored tokens (%lld ids, stored %lld): "
                         "give the input and the --split / --title-sep / --no-title / column flags used with xrank "
                         "tokenize",
                         src, what, (long long)rows[i], (long long)k, (long long)want);
    }
    free(ids);
    tokbatch_free(&tb);
    return rc;
}

static int mc_load_texts(MineCli *x, const GroupSet *g, const char *dataset, McTexts *t, XrErr *e) {
    const Args *a = &x->b.args;
    const char *from = args_str(a, "text-from");
    TokenStore *qs = h5store_open(dataset, "queries", e), *ps = qs ? h5store_open(dataset, "passages", e) : NULL;
    int rc = qs && ps ? 0 : -1;
    if (rc == 0 && !from) { /* ids */
        x->qids = h5store_read_ids(qs, 0, h5store_rows(qs), e);
        x->pids = x->qids ? h5store_read_ids(ps, 0, h5store_rows(ps), e) : NULL;
        if (!x->pids) rc = -1;
        *t = (McTexts){NULL, NULL, x->qids, x->pids};
    } else if (rc == 0) {
        rc = cli_read_text(a, from, TR_AUTO, &x->ts, e);
        x->have_ts = rc == 0;
        if (rc == 0 && (x->ts.queries.n != h5store_rows(qs) || x->ts.passages.n != h5store_rows(ps)))
            rc = xr_errf(e,
                         "--text-from %s gives %lld queries and %lld passages, but %s holds %lld and %lld: give the "
                         "input (and flags) the dataset was tokenized from",
                         from, (long long)x->ts.queries.n, (long long)x->ts.passages.n, dataset,
                         (long long)h5store_rows(qs), (long long)h5store_rows(ps));
        if (rc == 0) { /* the rows the jsonl names */
            int64_t *qr = xr_malloc(sizeof(int64_t) * (size_t)(g->n + 1));
            int64_t *pr = xr_malloc(sizeof(int64_t) * (size_t)(g->n * (g->k + 1) + 1));
            int64_t nq = 0, npr = 0;
            for (int64_t i = 0; i < g->n; i++) {
                if (i == 0 || g->query[i] != g->query[i - 1]) qr[nq++] = g->query[i];
                pr[npr++] = g->positive[i];
                for (int j = 0; j < g->k && g->negatives[i * g->k + j] >= 0; j++)
                    pr[npr++] = g->negatives[i * g->k + j];
            }
            rc = mc_check_texts(qs, &x->ts.queries, x->tok, qr, nq, "query", from, e);
            if (rc == 0) rc = mc_check_texts(ps, &x->ts.passages, x->tok, pr, npr, "passage", from, e);
            free(qr);
            free(pr);
        }
        *t = (McTexts){&x->ts.queries, &x->ts.passages, NULL, NULL};
    }
    if (qs) h5store_close(qs);
    if (ps) h5store_close(ps);
    return rc;
}

static int mc_parse_range(const char *s, int *a, int *b) {
    char *end;
    long x = strtol(s, &end, 10);
    if (end == s || *end != '-') return -1;
    const char *p = end + 1;
    long y = strtol(p, &end, 10);
    if (end == p || *end || x < 0 || y <= x || y > 100000000) return -1;
    *a = (int)x;
    *b = (int)y;
    return 0;
}

/* Selection options from the flags: the style's defaults, then what was given. */
static int mc_select_opts(const Args *a, MineOpts *o, XrErr *e) {
    int flag = args_is_set(a, "style") ? !strcmp(args_str(a, "style"), "flagembedding")
                                       : args_is_set(a, "range-for-sampling") || args_is_set(a, "negative-number");
    SelectOpts *s = &o->sel;
    if (flag) select_opts_flag_default(s);
    else select_opts_default(s);
    if (args_is_set(a, "num-negatives") && args_is_set(a, "negative-number") &&
        args_int(a, "num-negatives") != args_int(a, "negative-number"))
        return xr_errf(e, "--num-negatives %ld and --negative-number %ld disagree (they are the same setting)",
                       args_int(a, "num-negatives"), args_int(a, "negative-number"));
    if (args_is_set(a, "num-negatives")) s->num_negatives = (int)args_int(a, "num-negatives");
    if (args_is_set(a, "negative-number")) s->num_negatives = (int)args_int(a, "negative-number");
    if (args_is_set(a, "range-for-sampling")) {
        if (!flag) return xr_errf(e, "--range-for-sampling is FlagEmbedding-style (drop --style st)");
        if (args_is_set(a, "range-min") || args_is_set(a, "range-max"))
            return xr_errf(e, "give either --range-for-sampling A-B or --range-min / --range-max, not both");
        if (mc_parse_range(args_str(a, "range-for-sampling"), &s->range_min, &s->range_max))
            return xr_errf(e, "--range-for-sampling %s: expected A-B with 0 <= A < B, e.g. 10-210",
                           args_str(a, "range-for-sampling"));
    }
    if (args_is_set(a, "range-min")) s->range_min = (int)args_int(a, "range-min");
    if (args_is_set(a, "range-max")) s->range_max = (int)args_int(a, "range-max");
    if (args_is_set(a, "max-score")) s->max_score = args_float(a, "max-score");
    if (args_is_set(a, "min-score")) s->min_score = args_float(a, "min-score");
    if (args_is_set(a, "absolute-margin")) s->absolute_margin = args_float(a, "absolute-margin");
    if (args_is_set(a, "relative-margin")) s->relative_margin = args_float(a, "relative-margin");
    if (args_is_set(a, "ce-max-score")) {
        if (!args_str(a, "cross-encoder")) return xr_errf(e, "--ce-max-score needs --cross-encoder");
        s->ce_max_score = args_float(a, "ce-max-score");
    }
    if (args_is_set(a, "sampling-strategy"))
        s->sampling = !strcmp(args_str(a, "sampling-strategy"), "random") ? SELECT_SAMPLE_RANDOM : SELECT_SAMPLE_TOP;
    s->seed = (uint64_t)args_int(a, "seed");
    s->include_positives = args_bool(a, "include-positives");
    if (s->include_positives && flag) return xr_errf(e, "--include-positives is a sentence-transformers-style option");
    o->fill_from_corpus = args_bool(a, "fill-from-corpus");
    if (o->fill_from_corpus && !flag) return xr_errf(e, "--fill-from-corpus is a FlagEmbedding-style option");
    return 0;
}

int cmd_mine(int argc, char **argv) {
    MineCli x = {0};
    int pr = cli_start(&x.b, &CLI_CMD_MINE, 0, argc, argv);
    if (pr >= 0) return pr;
    x.c = x.b.comm;
    x.rank = x.b.rank;
    x.size = x.b.size;
    XrErr e = {{0}};
    const Args *a = &x.b.args;
    const char *input = args_str(a, "input"), *output = x.b.output, *groups_in = args_str(a, "groups-in");
    const char *jsonl = args_str(a, "jsonl");
    int quiet = x.b.quiet, overwrite = x.b.overwrite;
    MineOpts o;
    mine_opts_default(&o);
    if (!input || !args_str(a, "model") || (!output && !groups_in))
        xr_errf(&e, "--input, --model and --output are required (xrank mine --help)");
    else if (groups_in && !jsonl)
        xr_errf(&e, "--groups-in re-exports a group file: give --jsonl");
    else if (args_str(a, "text-from") && !jsonl)
        xr_errf(&e, "--text-from is for the jsonl output: give --jsonl");
    else
        mc_select_opts(a, &o, &e);
    if (e.msg[0]) return mc_fail(&x, &e, 2);
    /* models (config + tokenizer) on every rank; output paths on rank 0 */
    int st = cli_load_model_files(x.b.model, &x.model_dir, &x.cfg, &x.tok, &e);
    if (st == 0 && cli_max_len("max-length", x.b.max_length, &x.cfg, x.tok, x.model_dir, &o.max_len, &e))
        return mc_fail(&x, &e, 2);
    const char *ce_spec = args_str(a, "cross-encoder");
    if (st == 0 && ce_spec && !groups_in) {
        st = cli_load_model_files(ce_spec, &x.ce_dir, &x.ce_cfg, &x.ce_tok, &e);
        if (st == 0 && (!x.ce_cfg.is_seq_cls || x.ce_cfg.num_labels != 1))
            st = xr_errf(&e, "--cross-encoder %s: expected a sequence-classification model with one label (got %s, %d "
                             "labels)",
                         ce_spec, x.ce_cfg.is_seq_cls ? "a classifier" : "a bare encoder", x.ce_cfg.num_labels);
        if (st == 0 && cli_max_len("ce-max-length", args_is_set(a, "ce-max-length") ? args_int(a, "ce-max-length") : 0,
                                   &x.ce_cfg, x.ce_tok, NULL, &o.ce_max_len, &e))
            return mc_fail(&x, &e, 2);
    }
    if (st == 0 && x.rank == 0 && output && !groups_in) st = cli_check_output(output, overwrite, 0, &e);
    if (st == 0 && x.rank == 0 && output && !groups_in && overwrite && xr_file_exists(output)) {
        /* --overwrite replaces an earlier group file, never some other file given as --output by mistake */
        char fmt[64] = "";
        XrErr fe = {{0}};
        int h = h5_file_format(output, fmt, sizeof fmt, &fe);
        if (h != 1 || strcmp(fmt, GROUPS_FORMAT))
            st = xr_errf(&e, "output %s exists and is not an xrank group file (%s): --overwrite only replaces group "
                             "files; remove it yourself if it should go",
                         output,
                         h == 0   ? "not HDF5"
                         : h == 1 ? (fmt[0] ? fmt : "HDF5 without xrank_format")
                         : h == -3 ? fe.msg
                                   : "unreadable");
    }
    if (st == 0 && x.rank == 0 && jsonl) st = cli_check_output(jsonl, overwrite, 0, &e);
    if (st == 0 && x.rank == 0) cli_sweep_output("mine", jsonl, quiet); /* the group file's F.tmp has no PID */
    if (comm_check(x.c, st, &e)) return mc_fail(&x, &e, 1);

    /* re-export: read a group file, check it against the dataset, write the jsonl */
    if (groups_in) {
        GroupSet g;
        DsIndex ix;
        st = 0;
        if (x.rank == 0) {
            st = groups_read(groups_in, &g, &e);
            if (st == 0) {
                st = ds_read_index(input, &ix, &e);
                if (st == 0) {
                    st = groups_check_dataset(&g, groups_in, ix.num_queries, ix.num_passages, ix.tokenizer_fingerprint,
                                              &e);
                    ds_index_free(&ix);
                }
                MineJsonlFormat jf = MINE_JSONL_TRIPLET;
                mine_jsonl_parse_format(args_str(a, "jsonl-format"), &jf);
                McTexts t;
                if (st == 0) st = mc_load_texts(&x, &g, input, &t, &e);
                MineTexts mt = {mc_text_q, mc_text_p, &t, !args_str(a, "text-from")};
                if (st == 0) st = mine_write_jsonl(&g, jf, args_bool(a, "output-scores"), &mt, jsonl, &e);
                if (st == 0 && !quiet)
                    fprintf(stderr, "xrank mine: %lld groups from %s written to %s\n", (long long)g.n, groups_in,
                            jsonl);
                groups_free(&g);
            }
        }
        if (comm_check(x.c, st, &e)) return mc_fail(&x, &e, 1);
        return mc_finish(&x, 0);
    }

    /* pooling and normalisation as sentence-transformers would use them */
    if (args_is_set(a, "pooling")) o.pooling = !strcmp(args_str(a, "pooling"), "mean") ? POOL_MEAN : POOL_CLS;
    else o.pooling = x.cfg.has_pooling_config ? x.cfg.pooling : POOL_CLS;
    if (args_is_set(a, "normalize")) o.normalize = args_bool(a, "normalize");
    else o.normalize = x.cfg.has_pooling_config ? x.cfg.normalize : 1;
    o.dataset = input;
    o.tok = x.tok;
    o.query_prompt = args_str(a, "query-prompt");
    o.corpus_prompt = args_str(a, "corpus-prompt");
    o.batch_size = (int)args_int(a, "batch-size");
    o.bucket_batches = (int)args_int(a, "bucket-batches");
    o.ce_batch_size = (int)args_int(a, "ce-batch-size");
    o.ce_sigmoid = !strcmp(args_str(a, "ce-activation"), "sigmoid");
    o.query_block = args_int(a, "query-block");
    o.knn.passage_tile = (size_t)args_int(a, "passage-tile");
    o.knn.query_block = (size_t)(o.query_block < 256 ? o.query_block : 256);
    o.eval_depth = (int)args_int(a, "eval-depth");
    knn_dev_opts_default(&o.knn_dev);
    double smem = args_float(a, "search-memory");
    if (!(smem >= 0 && smem < 1e9)) {
        xr_errf(&e, "--search-memory %g: expected MiB >= 0 (0 = the default)", smem);
        return mc_fail(&x, &e, 2);
    }
    o.knn_dev.mem_limit = (size_t)(smem * 1048576.0);
    if (smem > 0 && o.knn_dev.mem_limit == 0) o.knn_dev.mem_limit = 1;
    o.knn_dev.passage_tile = (size_t)args_int(a, "search-tile");
    o.knn_dev.bf16 = x.b.precision == XR_PREC_BF16;
    o.progress = !quiet && x.rank == 0; /* a line in place on a terminal, plain lines in a log */
    o.model_desc = args_str(a, "model");
    o.precision = x.b.device == XR_DEV_CUDA ? (x.b.precision == XR_PREC_BF16 ? "bf16-cuda" : "fp32-cuda") : "fp32-cpu";
    if (!args_bool(a, "no-cache")) {
        const char *cd = args_str(a, "cache-dir");
        x.cache_dir = cd ? xr_strdup(cd) : xr_path_join(input, "embeddings");
        o.cache_dir = x.cache_dir;
    }
    if (x.rank == 0 && !quiet) {
        for (int w = 0; w < 2; w++) {
            const char *p = w ? o.corpus_prompt : o.query_prompt;
            size_t l = strlen(p);
            if (l && p[l - 1] != ' ')
                fprintf(stderr,
                        "xrank mine: note: the %s prompt's tokens are put before the stored tokens; this equals "
                        "tokenizing prompt + text only when the prompt ends at a word boundary (e.g. with a space)\n",
                        w ? "corpus" : "query");
        }
        fprintf(stderr, "xrank mine: %s pooling, normalize %d, max length %d, %d rank%s\n",
                o.pooling == POOL_MEAN ? "mean" : "cls", o.normalize, o.max_len, x.size, x.size > 1 ? "s" : "");
    }

    /* encoders on every rank */
    st = cli_backend(&x.b, &e);
    if (st == 0 && !(x.bi = encoder_load_on(x.model_dir, x.b.be, &e))) st = -1;
    if (st == 0 && x.ce_dir && !(x.ce = encoder_load_on(x.ce_dir, x.b.be, &e))) st = -1;
    if (st == 0 && o.cache_dir && x.rank == 0) st = embcache_model_fingerprint(x.model_dir, &o.model_fp, &e);
    if (comm_check(x.c, st, &e)) return mc_fail(&x, &e, 1);
    comm_bcast(x.c, &o.model_fp, sizeof o.model_fp, 0);
    o.bi = x.bi;
    o.ce = x.ce;
    const char *sdev = args_str(a, "search-device");
    if (!strcmp(sdev, "backend") || (x.b.device != XR_DEV_CPU && !strcmp(sdev, "auto"))) o.search_be = x.b.be;
    o.ce_tok = x.ce_tok;

    MineResult r;
    if (mine_run(x.c, &o, &r, &e)) return mc_fail(&x, &e, 1);

    /* rank 0: the group file, the jsonl, the report */
    st = 0;
    if (x.rank == 0) {
        char meta[2048];
        snprintf(meta, sizeof meta,
                 "{\"model\": \"%s\", \"cross_encoder\": \"%s\", \"style\": \"%s\", \"num_negatives\": %d, "
                 "\"range_min\": %d, \"range_max\": %d, \"sampling\": \"%s\", \"seed\": %llu}",
                 x.model_dir, x.ce_dir ? x.ce_dir : "", r.sel.style == SELECT_STYLE_ST ? "st" : "flagembedding",
                 r.sel.num_negatives, r.sel.range_min, r.sel.range_max,
                 r.sel.sampling == SELECT_SAMPLE_TOP ? "top" : "random", (unsigned long long)r.sel.seed);
        r.groups.meta_json = xr_strdup(meta);
        /* texts first (they may not match), then both files; a failed jsonl takes the group file with it */
        McTexts t;
        if (jsonl) st = mc_load_texts(&x, &r.groups, input, &t, &e);
        if (st == 0) st = groups_write(output, &r.groups, &e);
        if (st == 0 && jsonl) {
            MineJsonlFormat jf = MINE_JSONL_TRIPLET;
            mine_jsonl_parse_format(args_str(a, "jsonl-format"), &jf);
            MineTexts mt = {mc_text_q, mc_text_p, &t, !args_str(a, "text-from")};
            st = mine_write_jsonl(&r.groups, jf, args_bool(a, "output-scores"), &mt, jsonl, &e);
            if (st) unlink(output);
        }
        if (st == 0 && !quiet) {
            mine_report(stderr, &o, &r);
            fprintf(stderr, "  wrote %s (%lld groups of 1 positive + %d negative slots)%s%s\n", output,
                    (long long)r.groups.n, r.groups.k, jsonl ? " and " : "", jsonl ? jsonl : "");
        }
    }
    mine_result_free(&r);
    if (comm_check(x.c, st, &e)) return mc_fail(&x, &e, 1);
    return mc_finish(&x, 0);
}
