/* cmd_train.c: `xrank train`: data-parallel cross-encoder fine-tuning over MPI ranks (dist/trainer.h) on labeled
 * pairs (BCE) or groups (listwise CE) from a tokenized dataset and an optional mined group file, evaluation on a
 * dev set every --eval-steps (dist/evaluate.h), and the output directory: final/ and best/ as Hugging Face model
 * directories (io/hfexport.h) plus metrics.jsonl. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
#include "trainer.h"

static const ArgSpec TRAIN_FLAGS[] = {
    {"model", ARG_STR, NULL, "DIR|ID",
     "start from this Hugging Face model: a cross-encoder (seq-cls, one label) or a plain encoder (a new head)", NULL,
     0},
    {"data", ARG_STR, NULL, "DIR", "training dataset directory (xrank tokenize)", NULL, 0},
    {"groups", ARG_STR, NULL, "FILE",
     "mined group file of --data (xrank mine); without it the dataset's own negatives or labels are used", NULL, 0},
    {"eval-data", ARG_STR, NULL, "DIR", "dev dataset directory: evaluated every --eval-steps and at the end", NULL, 0},
    {"eval-groups", ARG_STR, NULL, "FILE", "the dev set's candidates: a group file mined from --eval-data", NULL, 0},
    {"output", ARG_STR, NULL, "DIR", "output directory: final/, best/ (HF model dirs) and metrics.jsonl", NULL, 0},
    {"overwrite", ARG_SWITCH, NULL, "", "reuse an existing output directory", NULL, 0},
    {"loss", ARG_CHOICE, "bce", "",
     "bce: pointwise BCE on labeled pairs (sentence-transformers); listwise: group CE, 1 positive + G-1 negatives "
     "(FlagEmbedding)",
     "bce|listwise", 0},
    {"pos-weight", ARG_FLOAT, "1", "X", "bce: weight of positive pairs (torch BCEWithLogitsLoss pos_weight)", NULL, 0},
    {"train-group-size", ARG_INT, "8", "G", "listwise: pairs per group (1 positive + G-1 sampled negatives)", NULL, 2},
    {"num-train-epochs", ARG_FLOAT, "1", "X", "epochs (fractions allowed) when --max-steps is not given", NULL, 0},
    {"max-steps", ARG_INT, "0", "N", "optimizer steps (overrides --num-train-epochs; 0 = from the epochs)", NULL, 0},
    {"learning-rate", ARG_FLOAT, "2e-5", "X", "peak learning rate (AdamW)", NULL, 0},
    {"lr", ARG_FLOAT, NULL, "X", "alias of --learning-rate", NULL, 0},
    {"weight-decay", ARG_FLOAT, "0.01", "X", "decoupled weight decay (not on biases and LayerNorm weights)", NULL, 0},
    {"warmup-ratio", ARG_FLOAT, "0.1", "X", "fraction of the steps with a linear warmup", NULL, 0},
    {"lr-scheduler-type", ARG_CHOICE, "linear", "", "decay after the warmup", "linear|cosine|constant", 0},
    {"max-grad-norm", ARG_FLOAT, "1", "X", "clip the global gradient norm (0 = off)", NULL, 0},
    {"per-device-train-batch-size", ARG_INT, "16", "N",
     "per rank and micro-batch: N pairs (bce) or N groups of G pairs (listwise); the global batch is N x ranks x "
     "accumulation",
     NULL, 1},
    {"gradient-accumulation-steps", ARG_INT, "1", "N", "micro-batches per rank per optimizer step", NULL, 1},
    {"seed", ARG_INT, "42", "N", "shuffle, negative sampling, dropout and new-head seed", NULL, 0},
    {"dropout", ARG_CHOICE, "on", "", "dropout as the model's config.json gives it, or none", "on|off", 0},
    {"eval-steps", ARG_INT, "0", "N", "evaluate every N steps (0: at the end only)", NULL, 0},
    {"logging-steps", ARG_INT, "10", "N", "a metrics.jsonl line every N steps", NULL, 1},
    {"metric-for-best-model", ARG_STR, "ndcg@10", "NAME", "reranked metric that picks best/", NULL, 0},
    {"metrics", ARG_STR, "mrr@10,ndcg@10,map@100,recall@10,recall@100", "LIST", "evaluation metrics", NULL, 0},
    {"eval-batch-size", ARG_INT, "32", "N", "pairs per evaluation batch", NULL, 1},
    {"max-length", ARG_INT, NULL, "N",
     "tokens per pair with specials, longest_first truncation (default: the tokenizer's model_max_length capped by "
     "the positions)",
     NULL, 1},
    {"threads", ARG_INT, "0", "N", "CPU threads per rank; 0 = OMP_NUM_THREADS or the node's cores split between ranks",
     NULL, 0},
    {"zero", ARG_CHOICE, "auto", "",
     "ZeRO-1: each rank keeps and steps the AdamW state of 1/ranks of the parameters (auto: on with > 1 rank)",
     "auto|0|1", 0},
    {"bucket-size-mb", ARG_FLOAT, "25", "X",
     "gradient bucket size in MiB: each bucket's reduction starts once the backward has finished it (0: one bucket)",
     NULL, 0},
    {"overlap", ARG_CHOICE, "on", "", "reduce gradient buckets during the last backward of a step, or after it",
     "on|off", 0},
    {"sparse-embedding", ARG_CHOICE, "on", "",
     "exchange only the word-embedding rows the global batch touched (the same update as the dense exchange)",
     "on|off", 0},
    {"comm", ARG_CHOICE, "auto", "",
     "gradient communicator: mpi (host memory), nccl (GPU memory), staged (GPU memory through host copies over MPI; "
     "for ranks sharing a GPU); auto picks",
     "auto|mpi|nccl|staged", 0},
    {"comm-timeout", ARG_FLOAT, "600", "S",
     "stop the job when a collective waits this long for a dead or hung rank (0: wait forever)", NULL, 0},
    {"quiet", ARG_SWITCH, NULL, "", "no progress line and no report on stderr", NULL, 0},
    {"config", ARG_STR, NULL, "FILE", "JSON file of flag values (configs/demo.json)", NULL, 0},
};
#define NFLAGS ((int)(sizeof TRAIN_FLAGS / sizeof TRAIN_FLAGS[0]))

static const ArgHelp TRAIN_HELP = {
    "Fine-tune a cross-encoder on a tokenized dataset (mined hard negatives or given pairs) over MPI ranks.",
    "Examples come from --groups (rows of xrank mine) or the dataset's own negatives / labels. --loss bce: every\n"
    "(query, positive) is a pair labeled 1 and every (query, negative) a pair labeled 0 (or the dataset's labels);\n"
    "--loss listwise: a group is the positive and G-1 negatives sampled per epoch from the row's negatives.\n"
    "Each epoch visits the examples in one permutation drawn from --seed. A global batch (per-device batch x\n"
    "ranks x accumulation examples) is sorted by length and cut into micro-batches; gradients are all-reduced,\n"
    "so the result depends on the rank count only through float rounding. AdamW (torch), linear/cosine decay after\n"
    "a warmup, clipping by global norm, dropout from a counter-based seeded generator. A plain encoder gets a new\n"
    "classification head (one label). OUTPUT/final and OUTPUT/best (best --metric-for-best-model on --eval-data)\n"
    "are Hugging Face model directories; OUTPUT/metrics.jsonl holds one JSON object per logging step and per\n"
    "evaluation.",
    "  xrank train --model /work/models/all-MiniLM-L6-v2 --data train.h5d --groups train_groups.h5 --output run1\n"
    "  mpirun -np 2 xrank train --config configs/demo.json --eval-data dev.h5d --eval-groups dev_groups.h5\n"
    "  xrank train --model BAAI/bge-reranker-base --data D --groups G --loss listwise --train-group-size 16 --output R",
};

typedef struct {
    Comm *c;
    int rank, size;
    Args a;
    char *model_dir, *out;
    ModelConfig cfg;
    Tokenizer *tok;
    Encoder *m;
    TrainData d;
    int have_d;
    TdShared *dsh; /* the node-shared token stores (NULL with one rank per node) */
    EvalSet es;
    int have_es;
    FILE *metrics;
} TrainCli;

static int tc_finish(TrainCli *x, int code) {
    if (x->metrics) fclose(x->metrics);
    if (x->have_es) evalset_free(&x->es);
    if (x->have_d) td_free_node(x->c, &x->d, x->dsh);
    if (x->m) encoder_free(x->m);
    if (x->tok) tok_free(x->tok);
    free(x->model_dir);
    free(x->out);
    args_free(&x->a);
    fflush(stdout);
    comm_finalize(x->c);
    return code;
}

static int tc_fail(TrainCli *x, const XrErr *e, int code) {
    if (x->rank == 0) fprintf(stderr, "xrank train: error: %s\n", e->msg);
    fflush(stderr);
    return tc_finish(x, code);
}

static int cli_count_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The max length: given (checked against the positions), else the tokenizer's capped by the positions. */
static int cli_pair_max_len(const ModelConfig *cfg, const Tokenizer *tok, const Args *a, int *out, XrErr *e) {
    int cap = cfg->family == ARCH_BERT ? cfg->max_pos : cfg->max_pos - 2;
    int min_len = tok_num_special(tok, 1) + 2;
    if (args_is_set(a, "max-length")) {
        long g = args_int(a, "max-length");
        if (g > cap) return xr_errf(e, "--max-length %ld exceeds what the model can take (%d tokens)", g, cap);
        if (g < min_len) return xr_errf(e, "--max-length %ld is too short for a pair: at least %d", g, min_len);
        *out = (int)g;
        return 0;
    }
    int mm = tok_model_max_length(tok);
    *out = mm > 0 && mm < cap ? mm : cap;
    return 0;
}

typedef struct {
    TrainCli *x;
    EvalResult proto;
    const char *best_metric;
    double best;
    int64_t best_step;
    int max_len, batch_size, quiet;
} TcEval;

static int tc_evaluate(void *ctx, Encoder *m, int64_t step, double epoch, XrErr *e) {
    TcEval *v = ctx;
    TrainCli *x = v->x;
    EvalResult r = v->proto;
    if (eval_run(x->c, m, x->tok, &x->es, v->max_len, v->batch_size, &r, e)) return -1;
    double val = eval_metric(&r, v->best_metric, 0);
    int better = v->best_step < 0 || val > v->best;
    int st = 0;
    if (x->rank == 0) {
        if (x->metrics) {
            fprintf(x->metrics, "{\"type\": \"eval\", \"step\": %lld, \"epoch\": %.4f, \"eval_seconds\": %.2f, \"eval\": ",
                    (long long)step, epoch, r.seconds);
            eval_print_json(x->metrics, &r);
            fprintf(x->metrics, "}\n");
            fflush(x->metrics);
        }
        if (!v->quiet) {
            fprintf(stderr, "eval at step %lld (epoch %.2f): %s %.4f%s\n", (long long)step, epoch, v->best_metric, val,
                    better ? " (best so far)" : "");
            eval_print_table(stderr, &r);
        }
        if (better) {
            char *p = xr_path_join(x->out, "best");
            st = trainer_export_hf(m, x->model_dir, p, v->max_len, e);
            free(p);
        }
    }
    if (better) v->best = val, v->best_step = step;
    return comm_check(x->c, st, e);
}

int cmd_train(int argc, char **argv) {
    TrainCli x = {0};
    x.c = comm_init(&argc, &argv);
    x.rank = comm_rank(x.c);
    x.size = comm_size(x.c);
    XrErr e = {{0}};
    int pr = args_parse(&x.a, "train", TRAIN_FLAGS, NFLAGS, 0, argc, argv, &e);
    if (pr == 1) {
        if (x.rank == 0) args_usage(stdout, "train", TRAIN_FLAGS, NFLAGS, &TRAIN_HELP);
        return tc_finish(&x, 0);
    }
    if (pr < 0) return tc_fail(&x, &e, 2);
    const Args *a = &x.a;
    int quiet = args_bool(a, "quiet");
    TrainOpts o;
    trainer_defaults(&o);
    const char *data = args_str(a, "data"), *out = args_str(a, "output");
    if (!args_str(a, "model") || !data || !out) xr_errf(&e, "--model, --data and --output are required (xrank train --help)");
    else if (args_is_set(a, "lr") && args_is_set(a, "learning-rate") && args_float(a, "lr") != args_float(a, "learning-rate"))
        xr_errf(&e, "--lr %g and --learning-rate %g disagree (they are the same setting)", args_float(a, "lr"),
                args_float(a, "learning-rate"));
    else if (args_str(a, "eval-groups") && !args_str(a, "eval-data"))
        xr_errf(&e, "--eval-groups needs --eval-data (the dataset it was mined from)");
    if (e.msg[0]) return tc_fail(&x, &e, 2);
    o.lr = args_is_set(a, "lr") ? args_float(a, "lr") : args_float(a, "learning-rate");
    o.weight_decay = args_float(a, "weight-decay");
    o.warmup_ratio = args_float(a, "warmup-ratio");
    o.max_grad_norm = args_float(a, "max-grad-norm");
    o.sched = (SchedKind)sched_parse(args_str(a, "lr-scheduler-type"));
    o.pos_weight = (float)args_float(a, "pos-weight");
    o.per_device_batch = (int)args_int(a, "per-device-train-batch-size");
    o.accumulation = (int)args_int(a, "gradient-accumulation-steps");
    o.epochs = args_float(a, "num-train-epochs");
    o.max_steps = args_int(a, "max-steps");
    o.seed = (uint64_t)args_int(a, "seed");
    o.dropout = !strcmp(args_str(a, "dropout"), "on");
    o.logging_steps = (int)args_int(a, "logging-steps");
    o.eval_steps = (int)args_int(a, "eval-steps");
    o.zero = !strcmp(args_str(a, "zero"), "auto") ? -1 : atoi(args_str(a, "zero"));
    o.bucket_mb = args_float(a, "bucket-size-mb");
    o.overlap = !strcmp(args_str(a, "overlap"), "on");
    o.sparse_embedding = !strcmp(args_str(a, "sparse-embedding"), "on");
    o.comm = (CommImpl)comm_impl_parse(args_str(a, "comm"));
    if (o.bucket_mb < 0) xr_errf(&e, "--bucket-size-mb must be >= 0 (0: one bucket)");
    if (args_float(a, "comm-timeout") < 0) xr_errf(&e, "--comm-timeout must be >= 0 (0: wait forever)");
    if (e.msg[0]) return tc_fail(&x, &e, 2);
    comm_set_timeout(x.c, args_float(a, "comm-timeout"));
    if (!(o.lr > 0) || !(o.warmup_ratio >= 0 && o.warmup_ratio <= 1) || o.weight_decay < 0 || !(o.pos_weight > 0) ||
        (o.max_steps <= 0 && !(o.epochs > 0)))
        xr_errf(&e, "bad hyperparameters: --learning-rate > 0, --warmup-ratio in [0, 1], --weight-decay >= 0, "
                    "--pos-weight > 0, and --num-train-epochs > 0 or --max-steps > 0");
    EvalResult proto = {0};
    if (!e.msg[0]) eval_parse_specs(args_str(a, "metrics"), &proto, &e);
    MetricSpec best_spec;
    if (!e.msg[0] && metrics_parse_spec(args_str(a, "metric-for-best-model"), &best_spec, &e) == 0) {
        char nm[32];
        metrics_spec_name(best_spec, nm, sizeof nm);
        int found = 0;
        for (int i = 0; i < proto.nspecs; i++) found |= !strcmp(proto.names[i], nm);
        if (!found) xr_errf(&e, "--metric-for-best-model %s is not in --metrics %s", nm, args_str(a, "metrics"));
    }
    if (e.msg[0]) return tc_fail(&x, &e, 2);

    long threads = args_int(a, "threads");
    if (threads == 0 && comm_local_size(x.c) > 1) {
        threads = cli_count_cpus() / comm_local_size(x.c);
        if (threads < 1) threads = 1;
    }
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
#endif
    /* model, tokenizer, output directory */
    int st = 0;
    if (!(x.model_dir = hf_resolve_model(args_str(a, "model"), &e))) st = -1;
    if (st == 0) st = hf_load_config(x.model_dir, &x.cfg, &e);
    if (st == 0 && !(x.tok = tok_load(x.model_dir, &e))) st = -1;
    if (st == 0) st = cli_pair_max_len(&x.cfg, x.tok, a, &o.max_len, &e);
    if (st == 0 && x.cfg.is_seq_cls && x.cfg.num_labels != 1)
        st = xr_errf(&e, "%s has %d labels: a reranker has one (start from a plain encoder or a one-label model)",
                     x.model_dir, x.cfg.num_labels);
    if (st == 0) st = td_check_tokenizer(data, x.tok, x.model_dir, &e);
    if (st == 0 && args_str(a, "eval-data")) st = td_check_tokenizer(args_str(a, "eval-data"), x.tok, x.model_dir, &e);
    x.out = xr_strdup(out);
    if (st == 0 && x.rank == 0) {
        struct stat sb;
        char *mj = xr_path_join(out, "metrics.jsonl");
        if (stat(out, &sb) == 0 && !S_ISDIR(sb.st_mode)) st = xr_errf(&e, "--output %s is a file, not a directory", out);
        else if (xr_file_exists(mj) && !args_bool(a, "overwrite"))
            st = xr_errf(&e, "--output %s already holds a run (use --overwrite to replace it)", out);
        else if (mkdir(out, 0755) && errno != EEXIST)
            st = xr_errf(&e, "cannot create --output %s: %s", out, strerror(errno));
        else if (!(x.metrics = fopen(mj, "w")))
            st = xr_errf(&e, "cannot write %s: %s", mj, strerror(errno));
        free(mj);
    }
    if (comm_check(x.c, st, &e)) return tc_fail(&x, &e, 1);

    /* data (every rank reads the same index; the node's leader the token stores, shared with the node) */
    TdOptions to = {data, args_str(a, "groups"), !strcmp(args_str(a, "loss"), "listwise") ? TD_GROUPS : TD_PAIRS,
                    (int)args_int(a, "train-group-size"), 0};
    st = td_load_node(x.c, &x.d, &to, &x.dsh, &e); /* token stores: one copy per node */
    x.have_d = st == 0;
    if (st == 0 && args_str(a, "eval-data")) {
        st = evalset_load(&x.es, args_str(a, "eval-data"), args_str(a, "eval-groups"), &e);
        x.have_es = st == 0;
    }
    if (st == 0 && !(x.m = encoder_load(x.model_dir, &e))) st = -1;
    int new_head = 0;
    if (st == 0 && !x.cfg.is_seq_cls) {
        st = encoder_init_head(x.m, 1, o.seed, &e);
        new_head = 1;
    }
    if (comm_check(x.c, st, &e)) return tc_fail(&x, &e, 1);
    if (threads > 0) encoder_set_threads(x.m, (int)threads);

    o.progress = !quiet && x.rank == 0 && isatty(2);
    o.metrics = x.metrics;
    TcEval ev = {&x, proto, args_str(a, "metric-for-best-model"), -INFINITY, -1, o.max_len,
                 (int)args_int(a, "eval-batch-size"), quiet};
    if (x.have_es) {
        o.evaluate = tc_evaluate;
        o.eval_ctx = &ev;
    }
    if (x.rank == 0 && !quiet) {
        int64_t gb = (int64_t)o.per_device_batch * x.size * o.accumulation;
        fprintf(stderr,
                "xrank train: %s%s, %s loss on %lld %s from %s (%lld positive, %lld negative%s), %d rank%s x %d "
                "threads, global batch %lld %s (%d per rank x %d accumulation), max length %d, lr %g, dropout %s\n",
                x.model_dir, new_head ? " + new head" : "", to.mode == TD_GROUPS ? "listwise" : "bce",
                (long long)x.d.n, to.mode == TD_GROUPS ? "groups" : "pairs", x.d.source, (long long)x.d.npos,
                (long long)x.d.nneg, x.d.skipped ? ", some groups without negatives skipped" : "", x.size,
                x.size > 1 ? "s" : "", encoder_backend(x.m) ? (int)(threads > 0 ? threads : cli_count_cpus()) : 1,
                (long long)gb, to.mode == TD_GROUPS ? "groups" : "pairs", o.per_device_batch, o.accumulation,
                o.max_len, o.lr, o.dropout ? "on" : "off");
        int zero = o.zero < 0 ? x.size > 1 : o.zero && x.size > 1;
        int64_t n = encoder_num_params(x.m);
        fprintf(stderr, "  optimizer: AdamW state %.1f MiB per rank (%s; %.1f MiB unsharded)\n",
                (double)gsync_optimizer_bytes(n, x.size, zero, 0) / 1048576.0,
                zero ? "ZeRO-1 shards" : x.size > 1 ? "ZeRO off" : "one rank",
                (double)gsync_optimizer_bytes(n, 1, 0, 0) / 1048576.0);
        if (x.have_es)
            fprintf(stderr, "  eval: %lld queries, %lld candidate pairs (%s; %lld positives retrieved, %lld not)\n",
                    (long long)x.es.nq, (long long)x.es.cand_off[x.es.nq], x.es.source, (long long)x.es.retrieved_pos,
                    (long long)x.es.missed_pos);
    }
    TrainStats ts;
    st = trainer_run(x.c, x.m, x.tok, &x.d, &o, &ts, &e);
    if (st) return tc_fail(&x, &e, 1);
    st = 0;
    if (x.rank == 0) {
        char *p = xr_path_join(out, "final");
        st = trainer_export_hf(x.m, x.model_dir, p, o.max_len, &e);
        free(p);
        if (st == 0 && !quiet) {
            fprintf(stderr,
                    "xrank train: %lld steps (%.2f epochs) in %.1f s: %.1f pairs/s, %.0f tokens/s, padding efficiency "
                    "%.1f%%, last loss %.4f\n",
                    (long long)ts.steps, (double)ts.steps / (double)ts.steps_per_epoch, ts.seconds,
                    (double)ts.pairs / ts.seconds, (double)ts.real_tokens / ts.seconds,
                    100.0 * (double)ts.real_tokens / (double)(ts.padded_tokens ? ts.padded_tokens : 1), ts.last_loss);
            if (x.size > 1)
                fprintf(stderr, "  gradients: %s, %d bucket%s%s, %s; rank 0 waited %.2f s for reductions (%.1f%% of "
                        "the time)\n", comm_impl_name(x.c), ts.buckets, ts.buckets > 1 ? "s" : "",
                        o.overlap ? " reduced during the backward" : " reduced after it",
                        ts.zero ? "ZeRO-1" : "ZeRO off", ts.comm_wait_s, 100.0 * ts.comm_wait_s / ts.seconds);
            if (x.size > 1 && ts.sparse_steps > 0)
                fprintf(stderr, "  word embeddings: %.0f of %lld rows exchanged per step (%.1f%%)\n",
                        (double)ts.sparse_rows / (double)ts.sparse_steps, (long long)ts.vocab,
                        100.0 * (double)ts.sparse_rows / (double)ts.sparse_steps / (double)(ts.vocab ? ts.vocab : 1));
            fprintf(stderr, "  wrote %s/final%s and %s/metrics.jsonl\n", out, x.have_es ? ", best" : "", out);
            if (x.have_es) fprintf(stderr, "  best %s %.4f at step %lld\n", ev.best_metric, ev.best, (long long)ev.best_step);
        }
    }
    if (comm_check(x.c, st, &e)) return tc_fail(&x, &e, 1);
    return tc_finish(&x, 0);
}
