/* cmd_eval.c: `xrank eval`: rerank each query's candidates of a tokenized dataset (the retriever's list from a
 * mined group file, or the dataset's given negatives + positives) with a cross-encoder, the pairs spread over MPI
 * ranks, and report MRR / NDCG / MAP / Recall for the retriever's order and the reranked order, with and without
 * all positives added (dist/evaluate.h); a table on stdout, or JSON. */
#define _GNU_SOURCE /* open_memstream */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"
#include "comm.h"
#include "data.h"
#include "evaluate.h"
#include "hfmodel.h"
#include "model.h"
#include "tokenizer.h"

static const ArgSpec EVAL_FLAGS[] = {
    CLI_FLAG_MODEL("cross-encoder: HF model directory (e.g. a train run's best/ or final/)"),
    {"data", ARG_STR, NULL, "DIR", "dataset directory (xrank tokenize) with the qrels", NULL, 0},
    {"groups", ARG_STR, NULL, "FILE",
     "the retriever's candidates: a group file mined from --data (default: the dataset's given negatives)", NULL, 0},
    {"metrics", ARG_STR, "mrr@10,ndcg@10,map@100,recall@10,recall@100", "LIST", "metrics (trec_eval conventions)",
     NULL, 0},
    {"json", ARG_SWITCH, NULL, "", "print JSON instead of the table", NULL, 0},
    CLI_FLAG_OUTPUT(NULL, "FILE", "also write the JSON result to FILE"),
    CLI_FLAG_OVERWRITE("replace an existing --output file"),
    {"batch-size", ARG_INT, "32", "N", "pairs per forward batch", NULL, 1},
    CLI_FLAG_MAX_LENGTH("tokens per pair with specials (default: the tokenizer's model_max_length capped by the "
                        "positions)"),
    CLI_FLAGS_COMPUTE,
    {"quiet", ARG_SWITCH, NULL, "", "no report on stderr", NULL, 0},
    CLI_FLAG_CONFIG("JSON file of flag values"),
};
#define NFLAGS ((int)(sizeof EVAL_FLAGS / sizeof EVAL_FLAGS[0]))

static const ArgHelp EVAL_HELP = {
    "Rerank each query's candidates with a cross-encoder and report ranking metrics (base vs reranked).",
    "Queries are those with a relevant passage (grade > 0). Candidates: from --groups, the negatives of the query's\n"
    "rows (the retriever's best non-positive passages) and its positives; a positive counts as retrieved when its\n"
    "retriever score reaches the lowest negative's. The realistic view ranks retrieved candidates only; the\n"
    "+pos view adds every positive (sentence-transformers' always_rerank_positives; in the base order added\n"
    "positives come last). Metrics follow trec_eval (core/metrics.h); a query contributes 0 where it has no\n"
    "relevant candidate. Pairs are split over the ranks in contiguous slices and gathered on rank 0.",
    "  xrank eval --model run1/best --data dev.h5d --groups dev_groups.h5\n"
    "  mpirun -np 2 xrank eval --model run1/final --data dev.h5d --groups g.h5 --json --output eval.json",
};

const CliCmd CLI_CMD_EVAL = {"eval", EVAL_FLAGS, NFLAGS, &EVAL_HELP, 0, NULL, 0, NULL};

int cmd_eval(int argc, char **argv) {
    CliBase b;
    int code = cli_start(&b, &CLI_CMD_EVAL, 0, argc, argv);
    if (code >= 0) return code;
    code = 0;
    Comm *c = b.comm;
    int rank = b.rank;
    const Args *a = &b.args;
    XrErr e = {{0}};
    char *model_dir = NULL;
    ModelConfig cfg;
    Tokenizer *tok = NULL;
    Encoder *m = NULL;
    EvalSet es;
    int have_es = 0, st = 0;
    EvalResult r = {0};
    const char *data = args_str(a, "data");
    if (!b.model || !data) {
        xr_errf(&e, "--model and --data are required (xrank eval --help)");
        code = 2;
        goto fail;
    }
    if (eval_parse_specs(args_str(a, "metrics"), &r, &e)) {
        code = 2;
        goto fail;
    }
    int max_len = 0;
    /* refused before any work, like every other command's output (an existing file needs --overwrite) */
    if (rank == 0 && b.output && cli_check_output(b.output, b.overwrite, 1, &e)) st = -1;
    if (comm_check(c, st, &e)) {
        code = 1;
        goto fail;
    }
    st = cli_load_model_files(b.model, &model_dir, &cfg, &tok, &e);
    if (st == 0 && (!cfg.is_seq_cls || cfg.num_labels != 1))
        st = xr_errf(&e, "%s is not a sequence-classification model with one label (a cross-encoder)", model_dir);
    if (st == 0 && cli_max_len("max-length", b.max_length, &cfg, tok, NULL, &max_len, &e)) {
        code = 2;
        goto fail;
    }
    if (st == 0) st = td_check_tokenizer(data, tok, model_dir, &e);
    if (st == 0) {
        st = evalset_load(&es, data, args_str(a, "groups"), &e);
        have_es = st == 0;
    }
    if (comm_check(c, st, &e) || cli_backend(&b, &e)) {
        code = 1;
        goto fail;
    }
    if (!(m = encoder_load_on(model_dir, b.be, &e))) st = -1;
    if (comm_check(c, st, &e)) {
        code = 1;
        goto fail;
    }
    if (eval_run(c, m, tok, &es, max_len, (int)args_int(a, "batch-size"), &r, &e)) {
        code = 1;
        goto fail;
    }
    st = 0;
    if (rank == 0) {
        if (args_bool(a, "json")) {
            eval_print_json(stdout, &r);
            printf("\n");
        } else {
            eval_print_table(stdout, &r);
        }
        if (b.output) {
            char *text = NULL;
            size_t n = 0;
            FILE *f = open_memstream(&text, &n);
            eval_print_json(f, &r);
            fputc('\n', f);
            fclose(f);
            st = cli_write_file(b.output, text, n, &e);
            free(text);
        }
        if (!b.quiet)
            fprintf(stderr,
                    "xrank eval: %lld queries, %lld pairs (%s) scored in %.1f s (%.1f pairs/s), max length %d; %d ranks "
                    "scored %lld-%lld pairs each (slowest %.1f s)\n",
                    (long long)r.queries, (long long)r.pairs, es.source, r.seconds, (double)r.pairs / r.seconds, max_len,
                    r.ranks, (long long)r.rank_pairs_min, (long long)r.rank_pairs_max, r.rank_seconds_max);
    }
    if (comm_check(c, st, &e)) {
        code = 1;
        goto fail;
    }
    goto done;
fail:
    if (rank == 0) fprintf(stderr, "xrank eval: error: %s\n", e.msg);
done:
    if (have_es) evalset_free(&es);
    if (m) encoder_free(m);
    if (tok) tok_free(tok);
    free(model_dir);
    return cli_end(&b, code);
}
