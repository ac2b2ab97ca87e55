/* cmd_eval.c: `xrank eval`: rerank each query's candidates of a tokenized dataset (the retriever's list from a
 * mined group file, or the dataset's given negatives + positives) with a cross-encoder, the pairs spread over MPI
 * ranks, and report MRR / NDCG / MAP / Recall for the retriever's order and the reranked order, with and without
 * all positives added (dist/evaluate.h); a table on stdout, or JSON. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "args.h"
#include "cli.h"
#include "comm.h"
#include "data.h"
#include "evaluate.h"
#include "hfmodel.h"
#include "model.h"
#include "tokenizer.h"

static const ArgSpec EVAL_FLAGS[] = {
    {"model", ARG_STR, NULL, "DIR|ID", "cross-encoder: HF model directory (e.g. a train run's best/ or final/)", NULL,
     0},
    {"data", ARG_STR, NULL, "DIR", "dataset directory (xrank tokenize) with the qrels", NULL, 0},
    {"groups", ARG_STR, NULL, "FILE",
     "the retriever's candidates: a group file mined from --data (default: the dataset's given negatives)", NULL, 0},
    {"metrics", ARG_STR, "mrr@10,ndcg@10,map@100,recall@10,recall@100", "LIST", "metrics (trec_eval conventions)",
     NULL, 0},
    {"json", ARG_SWITCH, NULL, "", "print JSON instead of the table", NULL, 0},
    {"output", ARG_STR, NULL, "FILE", "also write the JSON result to FILE", NULL, 0},
    {"batch-size", ARG_INT, "32", "N", "pairs per forward batch", NULL, 1},
    {"max-length", ARG_INT, NULL, "N",
     "tokens per pair with specials (default: the tokenizer's model_max_length capped by the positions)", NULL, 1},
    {"threads", ARG_INT, "0", "N", "CPU threads per rank; 0 = OMP_NUM_THREADS or the node's cores split between ranks",
     NULL, 0},
    {"quiet", ARG_SWITCH, NULL, "", "no report on stderr", NULL, 0},
    {"config", ARG_STR, NULL, "FILE", "JSON file of flag values", NULL, 0},
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

static int ev_count_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int cmd_eval(int argc, char **argv) {
    Comm *c = comm_init(&argc, &argv);
    int rank = comm_rank(c);
    Args a = {0};
    XrErr e = {{0}};
    char *model_dir = NULL;
    ModelConfig cfg;
    Tokenizer *tok = NULL;
    Encoder *m = NULL;
    EvalSet es;
    int have_es = 0, code = 0, st = 0;
    EvalResult r = {0};
    int pr = args_parse(&a, "eval", EVAL_FLAGS, NFLAGS, 0, argc, argv, &e);
    if (pr == 1) {
        if (rank == 0) args_usage(stdout, "eval", EVAL_FLAGS, NFLAGS, &EVAL_HELP);
        goto done;
    }
    if (pr < 0) {
        code = 2;
        goto fail;
    }
    const char *data = args_str(&a, "data");
    if (!args_str(&a, "model") || !data) {
        xr_errf(&e, "--model and --data are required (xrank eval --help)");
        code = 2;
        goto fail;
    }
    if (eval_parse_specs(args_str(&a, "metrics"), &r, &e)) {
        code = 2;
        goto fail;
    }
    long threads = args_int(&a, "threads");
    if (threads == 0 && comm_local_size(c) > 1) {
        threads = ev_count_cpus() / comm_local_size(c);
        if (threads < 1) threads = 1;
    }
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
#endif
    int max_len = 0;
    if (!(model_dir = hf_resolve_model(args_str(&a, "model"), &e))) st = -1;
    if (st == 0) st = hf_load_config(model_dir, &cfg, &e);
    if (st == 0 && (!cfg.is_seq_cls || cfg.num_labels != 1))
        st = xr_errf(&e, "%s is not a sequence-classification model with one label (a cross-encoder)", model_dir);
    if (st == 0 && !(tok = tok_load(model_dir, &e))) st = -1;
    if (st == 0) {
        int cap = cfg.family == ARCH_BERT ? cfg.max_pos : cfg.max_pos - 2;
        if (args_is_set(&a, "max-length")) {
            long g = args_int(&a, "max-length");
            if (g > cap) st = xr_errf(&e, "--max-length %ld exceeds what the model can take (%d tokens)", g, cap);
            else if (g < tok_num_special(tok, 1) + 2)
                st = xr_errf(&e, "--max-length %ld is too short for a pair: at least %d", g, tok_num_special(tok, 1) + 2);
            max_len = (int)g;
        } else {
            int mm = tok_model_max_length(tok);
            max_len = mm > 0 && mm < cap ? mm : cap;
        }
    }
    if (st == 0) st = td_check_tokenizer(data, tok, model_dir, &e);
    if (st == 0) {
        st = evalset_load(&es, data, args_str(&a, "groups"), &e);
        have_es = st == 0;
    }
    if (st == 0 && !(m = encoder_load(model_dir, &e))) st = -1;
    if (comm_check(c, st, &e)) {
        code = 1;
        goto fail;
    }
    if (threads > 0) encoder_set_threads(m, (int)threads);
    if (eval_run(c, m, tok, &es, max_len, (int)args_int(&a, "batch-size"), &r, &e)) {
        code = 1;
        goto fail;
    }
    st = 0;
    if (rank == 0) {
        if (args_bool(&a, "json")) {
            eval_print_json(stdout, &r);
            printf("\n");
        } else {
            eval_print_table(stdout, &r);
        }
        const char *outp = args_str(&a, "output");
        if (outp) {
            size_t n = strlen(outp) + 32;
            char *tmp = xr_malloc(n);
            snprintf(tmp, n, "%s.tmp.%ld", outp, (long)getpid());
            FILE *f = fopen(tmp, "w");
            if (!f) st = xr_errf(&e, "cannot write %s", outp);
            else {
                eval_print_json(f, &r);
                fputc('\n', f);
                if (fclose(f) || rename(tmp, outp)) st = xr_errf(&e, "cannot write %s", outp);
            }
            if (st) remove(tmp);
            free(tmp);
        }
        if (!args_bool(&a, "quiet"))
            fprintf(stderr, "xrank eval: %lld queries, %lld pairs (%s) scored in %.1f s (%.1f pairs/s), max length %d\n",
                    (long long)r.queries, (long long)r.pairs, es.source, r.seconds, (double)r.pairs / r.seconds, max_len);
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
    args_free(&a);
    fflush(stdout);
    fflush(stderr);
    comm_finalize(c);
    return code;
}
