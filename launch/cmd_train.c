/* cmd_train.c: `xrank train`: data-parallel cross-encoder fine-tuning over MPI ranks (dist/trainer.h) on labeled
 * pairs (BCE) or groups (listwise CE) from a tokenized dataset and an optional mined group file, evaluation on a
 * dev set every --eval-steps (dist/evaluate.h), and the output directory: final/ and best/ as Hugging Face model
 * directories (io/hfexport.h) plus metrics.jsonl. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ckpt.h"
#include "cli.h"
#include "cli_common.h"
#include "comm.h"
#include "data.h"
#include "evaluate.h"
#include "hfmodel.h"
#include "model.h"
#include "run_dir.h"
#include "tokenizer.h"
#include "trainer.h"

/* Flags marked TRAINER_DEFAULT take their default from trainer_defaults (dist/trainer.c, the one place they are
 * written): train_fill_defaults puts its values into the table before parsing, so --help shows them. To add a
 * flag: a line here, and where cmd_train fills TrainOpts, a line reading it. */
#define TRAINER_DEFAULT NULL
static ArgSpec TRAIN_FLAGS[] = {
    CLI_FLAG_MODEL("start from this Hugging Face model: a cross-encoder (seq-cls, one label) or a plain encoder (a "
                   "new head)"),
    {"data", ARG_STR, NULL, "DIR", "training dataset directory (xrank tokenize)", NULL, 0},
    {"groups", ARG_STR, NULL, "FILE",
     "mined group file of --data (xrank mine); without it the dataset's own negatives or labels are used", NULL, 0},
    {"eval-data", ARG_STR, NULL, "DIR", "dev dataset directory: evaluated every --eval-steps and at the end", NULL, 0},
    {"eval-groups", ARG_STR, NULL, "FILE", "the dev set's candidates: a group file mined from --eval-data", NULL, 0},
    CLI_FLAG_OUTPUT(NULL, "DIR", "output directory: final/, best/ (HF model dirs) and metrics.jsonl"),
    CLI_FLAG_OVERWRITE("reuse an existing output directory"),
    {"loss", ARG_CHOICE, "bce", "",
     "bce: pointwise BCE on labeled pairs (sentence-transformers); listwise: group CE, 1 positive + G-1 negatives "
     "(FlagEmbedding); distill: learn the teacher's scores of the groups (--distill-mode); listnet, lambdaloss: "
     "listwise ranking losses on graded labels (docs/TRAINING.md)",
     "bce|listwise|distill|listnet|lambdaloss", 0},
    {"distill-mode", ARG_CHOICE, "kl", "",
     "distill: kl = soft CE against the teacher's group softmax (FlagEmbedding knowledge_distillation); margin_mse / "
     "mse = sentence-transformers MarginMSELoss / MSELoss",
     "kl|margin_mse|mse", 0},
    {"distill-temperature", ARG_FLOAT, TRAINER_DEFAULT, "T", "distill kl: both softmaxes at temperature T", NULL, 0},
    {"hard-label-weight", ARG_FLOAT, TRAINER_DEFAULT, "W",
     "distill: add W x the hard-label group CE (FlagEmbedding's recipe: 1)", NULL, 0},
    {"stop-on-collapse", ARG_SWITCH, NULL, "",
     "stop when the collapse detector fires (scores constant within groups, loss at ln G / ln 2)", NULL, 0},
    {"collapse-windows", ARG_INT, TRAINER_DEFAULT, "N", "logging windows in a row that make a collapse (0: detector off)", NULL, 0},
    {"nan-policy", ARG_CHOICE, "stop", "",
     "a step with a non-finite loss or gradient: stop naming it (and the first non-finite tensor), or skip it",
     "stop|skip", 0},
    {"early-stopping-patience", ARG_INT, "0", "N",
     "stop after N evaluations without a better --metric-for-best-model (0: never)", NULL, 0},
    {"pos-weight", ARG_FLOAT, TRAINER_DEFAULT, "X", "bce: weight of positive pairs (torch BCEWithLogitsLoss pos_weight)",
     NULL, 0},
    {"train-group-size", ARG_INT, "8", "G", "listwise: pairs per group (1 positive + G-1 sampled negatives)", NULL, 2},
    {"num-train-epochs", ARG_FLOAT, TRAINER_DEFAULT, "X", "epochs (fractions allowed) when --max-steps is not given",
     NULL, 0},
    {"max-steps", ARG_INT, "0", "N", "optimizer steps (overrides --num-train-epochs; 0 = from the epochs)", NULL, 0},
    {"learning-rate", ARG_FLOAT, TRAINER_DEFAULT, "X", "peak learning rate (AdamW)", NULL, 0},
    {"lr", ARG_FLOAT, NULL, "X", "alias of --learning-rate", NULL, 0},
    {"weight-decay", ARG_FLOAT, TRAINER_DEFAULT, "X", "decoupled weight decay (not on biases and LayerNorm weights)",
     NULL, 0},
    {"warmup-ratio", ARG_FLOAT, TRAINER_DEFAULT, "X", "fraction of the steps with a linear warmup", NULL, 0},
    {"lr-scheduler-type", ARG_CHOICE, TRAINER_DEFAULT, "", "decay after the warmup", "linear|cosine|constant", 0},
    {"max-grad-norm", ARG_FLOAT, TRAINER_DEFAULT, "X", "clip the global gradient norm (0 = off)", NULL, 0},
    {"per-device-train-batch-size", ARG_INT, TRAINER_DEFAULT, "N",
     "per rank and micro-batch: N pairs (bce) or N groups of G pairs (listwise); the global batch is N x ranks x "
     "accumulation",
     NULL, 1},
    {"gradient-accumulation-steps", ARG_INT, TRAINER_DEFAULT, "N", "micro-batches per rank per optimizer step", NULL,
     1},
    {"seed", ARG_INT, "42", "N", "shuffle, negative sampling, dropout and new-head seed", NULL, 0},
    {"dropout", ARG_CHOICE, TRAINER_DEFAULT, "", "dropout as the model's config.json gives it, or none", "on|off", 0},
    {"eval-steps", ARG_INT, "0", "N", "evaluate every N steps (0: at the end only)", NULL, 0},
    {"logging-steps", ARG_INT, TRAINER_DEFAULT, "N", "a metrics.jsonl line every N steps", NULL, 1},
    {"metric-for-best-model", ARG_STR, "ndcg@10", "NAME", "reranked metric that picks best/", NULL, 0},
    {"metrics", ARG_STR, "mrr@10,ndcg@10,map@100,recall@10,recall@100", "LIST", "evaluation metrics", NULL, 0},
    {"eval-batch-size", ARG_INT, "32", "N", "pairs per evaluation batch", NULL, 1},
    CLI_FLAG_MAX_LENGTH("tokens per pair with specials, longest_first truncation (default: the tokenizer's "
                        "model_max_length capped by the positions)"),
    {"gradient-checkpointing", ARG_SWITCH, NULL, "",
     "keep only each layer's input in the forward and recompute its activations in the backward (the same "
     "gradients, bit for bit; less memory, about a third more compute)", NULL, 0},
    {"attention-lse", ARG_SWITCH, NULL, "",
     "the training attention keeps each row's softmax log-sum-exp instead of the probabilities and recomputes them "
     "in the backward (heads x tokens floats a layer instead of heads x tokens x length; gradients equal to fp32 "
     "rounding, not bit for bit; slower on the GPU so far)", NULL, 0},
    CLI_FLAGS_COMPUTE,
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
     "for ranks sharing a GPU), shm (CPU ranks on one node: the peers sum each other's gradients in node-shared "
     "memory, ZeRO-1 parameters one copy per node); auto picks (shm where it can, on the CPU)",
     "auto|mpi|nccl|staged|shm", 0},
    {"comm-timeout", ARG_FLOAT, "60", "S",
     "stop the job when a rank is dead or stopped (its liveness heartbeat silent; from other nodes relayed over UDP "
     "by the node leaders) this long, naming it (0: never)", NULL, 0},
    {"comm-stall-timeout", ARG_FLOAT, "1800", "S",
     "stop the job when a wait lasts this long for ranks that are alive but late (hung), or for ranks on other nodes "
     "whose heartbeat does not arrive (UDP blocked) (0: wait forever)", NULL, 0},
    {"save-steps", ARG_INT, "0", "N",
     "write OUTPUT/checkpoint-<step> every N steps (model, optimizer shards, data position; 0: only on SIGTERM / "
     "SIGUSR1)", NULL, 0},
    {"save-total-limit", ARG_INT, "0", "K", "keep the newest K checkpoints (and the best one; 0: all)", NULL, 0},
    {"resume", ARG_STR, NULL, "DIR|latest|auto",
     "continue exactly from a checkpoint (latest: the one OUTPUT/latest names, else the newest complete one; auto: "
     "latest when OUTPUT holds a checkpoint, else start a new run: for a batch job that may be requeued)",
     NULL, 0},
    CLI_FLAG_QUIET,
    CLI_FLAG_CONFIG("JSON file of flag values (configs/demo.json)"),
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
    "evaluation. With --device cuda the default --precision is bf16: fp32 master weights and AdamW moments, a\n"
    "bf16 working copy of the weights cast once per step, bf16 activations, fp32 accumulation, logits and loss;\n"
    "checkpoints and final/ / best/ hold the fp32 weights (a run resumes in either precision, on either device).\n"
    "Evaluation takes the inference path (as xrank eval --precision bf16). --precision fp32: fp32 throughout (the\n"
    "CPU's only mode).",
    "  xrank train --model all-MiniLM-L6-v2 --data train.h5d --groups train_groups.h5 --output run1\n"
    "  mpirun -np 2 xrank train --config configs/demo.json --model M --data D --groups G --output R \\\n"
    "      --eval-data dev.h5d --eval-groups dev_groups.h5\n"
    "  xrank train --model BAAI/bge-reranker-base --data D --groups G --loss listwise --train-group-size 16 --output R",
};

const CliCmd CLI_CMD_TRAIN = {"train", TRAIN_FLAGS, NFLAGS, &TRAIN_HELP, 0, NULL, XR_OPSET_TRAIN, NULL};

/* The shortest text that reads back as the same double. */
static void train_num_text(char *buf, size_t n, double v) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* The TRAINER_DEFAULT entries of the table get trainer_defaults' values (once per process). */
static void train_fill_defaults(void) {
    static char text[16][32];
    static const char *const sched[] = {"linear", "cosine", "constant"};
    TrainOpts o;
    trainer_defaults(&o);
    int k = 0;
    for (int i = 0; i < NFLAGS; i++) {
        ArgSpec *f = &TRAIN_FLAGS[i];
        const char *nm = f->name;
        double v;
        if (!strcmp(nm, "pos-weight")) v = o.pos_weight;
        else if (!strcmp(nm, "num-train-epochs")) v = o.epochs;
        else if (!strcmp(nm, "learning-rate")) v = o.lr;
        else if (!strcmp(nm, "weight-decay")) v = o.weight_decay;
        else if (!strcmp(nm, "warmup-ratio")) v = o.warmup_ratio;
        else if (!strcmp(nm, "max-grad-norm")) v = o.max_grad_norm;
        else if (!strcmp(nm, "per-device-train-batch-size")) v = o.per_device_batch;
        else if (!strcmp(nm, "gradient-accumulation-steps")) v = o.accumulation;
        else if (!strcmp(nm, "logging-steps")) v = o.logging_steps;
        else if (!strcmp(nm, "distill-temperature")) v = o.loss.temperature;
        else if (!strcmp(nm, "hard-label-weight")) v = o.loss.hard_weight;
        else if (!strcmp(nm, "collapse-windows")) v = o.collapse_windows;
        else if (!strcmp(nm, "lr-scheduler-type")) {
            f->def = sched[o.sched];
            continue;
        } else if (!strcmp(nm, "dropout")) {
            f->def = o.dropout ? "on" : "off";
            continue;
        } else {
            continue;
        }
        train_num_text(text[k], sizeof text[k], v);
        f->def = text[k++];
    }
}

typedef struct {
    CliBase b;
    Comm *c;
    int rank, size;
    char *model_dir, *out, *resume_dir, *config_json;
    ModelConfig cfg;
    Tokenizer *tok;
    Encoder *m;
    TrainData d;
    int have_d;
    TdShared *dsh; /* the node-shared token stores (NULL with one rank per node) */
    EvalSet es;
    int have_es;
    FILE *metrics;
    char *metrics_path;
    int dir_ready; /* rank 0: run_dir_prepare done (a failure from here on calls run_dir_abandon) */
} TrainCli;

static int tc_finish(TrainCli *x, int code) {
    comm_leave(x->c, code); /* before the node-shared data's collective free: a peer still waiting stops at once */
    if (x->metrics) fclose(x->metrics);
    if (x->have_es) evalset_free(&x->es);
    if (x->have_d) td_free_node(x->c, &x->d, x->dsh);
    if (x->m) encoder_free(x->m);
    if (x->tok) tok_free(x->tok);
    free(x->model_dir);
    free(x->out);
    free(x->resume_dir);
    free(x->config_json);
    free(x->metrics_path);
    return cli_end(&x->b, code);
}

static int tc_fail(TrainCli *x, const XrErr *e, int code) {
    if (x->rank == 0) fprintf(stderr, "xrank train: error: %s\n", e->msg);
    if (x->rank == 0 && x->dir_ready) { /* the output directory: no half run mixed with an earlier one */
        if (x->metrics) fclose(x->metrics);
        x->metrics = NULL;
        char note[1024];
        run_dir_abandon(x->out, note, sizeof note);
        if (note[0]) fprintf(stderr, "xrank train: %s\n", note);
    }
    fflush(stderr);
    return tc_finish(x, code);
}

/* Rank 0: the lines written to metrics.jsonl so far reached the file (a full disk fails here, at the first
 * logging step that cannot be written, not after the last step). */
static int tc_metrics_flushed(TrainCli *x, XrErr *e) {
    if (!x->metrics || (fflush(x->metrics) == 0 && !ferror(x->metrics))) return 0;
    return xr_errf(e, "cannot write %s: %s", x->metrics_path, strerror(errno ? errno : EIO));
}

/* The hyperparameters' ranges, the flag that broke one named (as the user spelled it: --lr or --learning-rate). */
static int train_check_opts(const Args *a, const TrainOpts *o, XrErr *e) {
    const char *lr_flag = args_is_set(a, "lr") ? "lr" : "learning-rate";
    if (!(o->lr > 0)) return xr_errf(e, "--%s must be > 0, got %g", lr_flag, o->lr);
    if (!(o->warmup_ratio >= 0 && o->warmup_ratio <= 1))
        return xr_errf(e, "--warmup-ratio must be in [0, 1], got %g", o->warmup_ratio);
    if (o->weight_decay < 0) return xr_errf(e, "--weight-decay must be >= 0, got %g", o->weight_decay);
    if (!(o->pos_weight > 0)) return xr_errf(e, "--pos-weight must be > 0, got %g", (double)o->pos_weight);
    if (o->max_steps <= 0 && !(o->epochs > 0))
        return xr_errf(e, "--num-train-epochs must be > 0 (or give --max-steps N), got %g", o->epochs);
    return 0;
}

typedef struct {
    TrainCli *x;
    EvalResult proto;
    const char *best_metric;
    double best;
    int64_t best_step;
    int max_len, batch_size, quiet;
    int patience, stale; /* early stopping: evaluations allowed without a better metric / seen so far */
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
            fprintf(x->metrics,
                    "{\"type\": \"eval\", \"step\": %lld, \"epoch\": %.4f, \"eval_seconds\": %.2f, \"eval_ranks\": %d, "
                    "\"eval_rank_pairs\": [%lld, %lld], \"eval_rank_seconds_max\": %.2f, \"eval\": ",
                    (long long)step, epoch, r.seconds, r.ranks, (long long)r.rank_pairs_min, (long long)r.rank_pairs_max,
                    r.rank_seconds_max);
            eval_print_json(x->metrics, &r);
            fprintf(x->metrics, "}\n");
            st = tc_metrics_flushed(x, e);
        }
        if (!v->quiet) {
            fprintf(stderr, "eval at step %lld (epoch %.2f): %s %.4f%s\n", (long long)step, epoch, v->best_metric, val,
                    better ? " (best so far)" : "");
            eval_print_table(stderr, &r);
        }
        if (better && st == 0) {
            char *p = xr_path_join(x->out, "best");
            st = trainer_export_hf(m, x->model_dir, p, v->max_len, e);
            free(p);
        }
    }
    if (better) v->best = val, v->best_step = step;
    v->stale = better ? 0 : v->stale + 1;
    if (comm_check(x->c, st, e)) return -1;
    if (v->patience > 0 && v->stale >= v->patience) { /* the same on every rank: the metrics are broadcast */
        if (x->rank == 0 && !v->quiet)
            fprintf(stderr, "early stopping at step %lld: %s not better for %d evaluations (best %.4f at step %lld)\n",
                    (long long)step, v->best_metric, v->stale, v->best, (long long)v->best_step);
        return 1;
    }
    return 0;
}

/* --resume: rank 0 resolves and verifies the checkpoint (a fallback from a damaged `latest` is said), every rank
 * gets its path; the global batch is kept: on another rank count the accumulation is recomputed, or refused. */
static int tc_resume_plan(TrainCli *x, TrainOpts *o, int64_t *step, int quiet, XrErr *e) {
    char note[2048] = "";
    char *rd = NULL;
    size_t rl = 0;
    int st = 0;
    const char *spec = args_str(&x->b.args, "resume");
    int fresh = 0; /* --resume auto in an output without checkpoints: a new run */
    if (x->rank == 0) {
        if (!strcmp(spec, "auto")) {
            int64_t *steps = NULL;
            char *lp = xr_path_join(x->out, CKPT_LATEST);
            fresh = ckpt_list(x->out, &steps) == 0 && access(lp, F_OK) != 0;
            free(steps), free(lp);
            spec = "latest";
            if (fresh) rd = xr_strdup(""); /* broadcast as an empty path */
        }
        if (!fresh) {
            rd = ckpt_resolve(spec, x->out, note, sizeof note, e);
            if (!rd) st = -1;
            else rl = strlen(rd);
            if (rd && note[0]) fprintf(stderr, "xrank train: %s\n", note);
        }
    }
    if (comm_check(x->c, st, e)) return -1;
    comm_bcast_buf(x->c, &rd, &rl, 0);
    if (!rl) { /* auto found nothing to resume */
        free(rd);
        if (x->rank == 0 && !quiet) fprintf(stderr, "xrank train: --resume auto: no checkpoint in %s, a new run\n", x->out);
        return 0;
    }
    x->resume_dir = rd;
    CkptManifest mf;
    if (ckpt_open(rd, &mf, 0, e)) return -1;
    int64_t br = (int64_t)o->per_device_batch * x->size, gb = br * o->accumulation;
    if (mf.global_batch != gb) {
        if (mf.global_batch % br)
            st = xr_errf(e, "%s was trained with a global batch of %lld; with %d ranks x per-device batch %d it cannot "
                            "be kept (pick --per-device-train-batch-size so that ranks x it divides %lld)", rd,
                         (long long)mf.global_batch, x->size, o->per_device_batch, (long long)mf.global_batch);
        else {
            o->accumulation = (int)(mf.global_batch / br);
            if (x->rank == 0 && !quiet)
                fprintf(stderr, "xrank train: %s was written by %d ranks x accumulation %d; continuing on %d ranks x "
                                "accumulation %d (global batch %lld kept)\n", rd, mf.world_size, mf.accumulation,
                        x->size, o->accumulation, (long long)mf.global_batch);
        }
    }
    *step = mf.step;
    if (st == 0 && x->rank == 0 && !quiet)
        fprintf(stderr, "xrank train: resuming from %s (step %lld)\n", rd, (long long)mf.step);
    ckpt_manifest_free(&mf);
    return st;
}

/* Keep the lines of metrics.jsonl up to step `step` (a resumed run appends what follows). */
static int tc_metrics_upto(const char *path, int64_t step, XrErr *e) {
    if (!xr_file_exists(path)) return 0;
    size_t len;
    char *text = xr_read_file(path, &len, e);
    if (!text) return -1;
    FILE *f = fopen(path, "w");
    if (!f) {
        free(text);
        return xr_errf(e, "cannot write %s: %s", path, strerror(errno));
    }
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) + 1 : strlen(line);
        const char *k = strstr(line, "\"step\": ");
        if (k && (!nl || k < nl) && atoll(k + 8) <= step) fwrite(line, 1, n, f);
        line += n;
    }
    free(text);
    return fclose(f) ? xr_errf(e, "cannot write %s: %s", path, strerror(errno)) : 0;
}

/* The resolved configuration stored in each checkpoint's manifest. */
static char *tc_config_json(const TrainCli *x, const TrainOpts *o) {
    const Args *a = &x->b.args;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", x->model_dir);
    cJSON_AddStringToObject(j, "data", args_str(a, "data"));
    if (args_str(a, "groups")) cJSON_AddStringToObject(j, "groups", args_str(a, "groups"));
    cJSON_AddStringToObject(j, "loss", args_str(a, "loss"));
    cJSON_AddNumberToObject(j, "train_group_size", (double)args_int(a, "train-group-size"));
    cJSON_AddNumberToObject(j, "learning_rate", o->lr);
    cJSON_AddNumberToObject(j, "weight_decay", o->weight_decay);
    cJSON_AddNumberToObject(j, "warmup_ratio", o->warmup_ratio);
    cJSON_AddNumberToObject(j, "max_grad_norm", o->max_grad_norm);
    cJSON_AddStringToObject(j, "lr_scheduler_type", args_str(a, "lr-scheduler-type"));
    cJSON_AddNumberToObject(j, "pos_weight", o->pos_weight);
    cJSON_AddNumberToObject(j, "per_device_train_batch_size", o->per_device_batch);
    cJSON_AddNumberToObject(j, "gradient_accumulation_steps", o->accumulation);
    cJSON_AddNumberToObject(j, "num_train_epochs", o->epochs);
    cJSON_AddNumberToObject(j, "max_steps", (double)o->max_steps);
    cJSON_AddNumberToObject(j, "max_length", o->max_len);
    cJSON_AddBoolToObject(j, "dropout", o->dropout);
    cJSON_AddNumberToObject(j, "logging_steps", o->logging_steps);
    cJSON_AddNumberToObject(j, "eval_steps", o->eval_steps);
    cJSON_AddNumberToObject(j, "save_steps", (double)o->ckpt.save_steps);
    cJSON_AddNumberToObject(j, "save_total_limit", o->ckpt.save_total_limit);
    cJSON_AddStringToObject(j, "zero", args_str(a, "zero"));
    char *t = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return t;
}

int cmd_train(int argc, char **argv) {
    TrainCli x = {0};
    train_fill_defaults();
    int code = cli_start(&x.b, &CLI_CMD_TRAIN, 0, argc, argv);
    if (code >= 0) return code;
    x.c = x.b.comm;
    x.rank = x.b.rank;
    x.size = x.b.size;
    XrErr e = {{0}};
    const Args *a = &x.b.args;
    int quiet = x.b.quiet;
    TrainOpts o;
    trainer_defaults(&o);
    const char *data = args_str(a, "data"), *out = x.b.output;
    if (!x.b.model || !data || !out) xr_errf(&e, "--model, --data and --output are required (xrank train --help)");
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
    o.loss.kind = (LossKind)loss_kind_parse(args_str(a, "loss"));
    o.loss.distill = (DistillMode)loss_distill_parse(args_str(a, "distill-mode"));
    o.loss.temperature = (float)args_float(a, "distill-temperature");
    o.loss.hard_weight = (float)args_float(a, "hard-label-weight");
    o.stop_on_collapse = args_bool(a, "stop-on-collapse");
    o.collapse_windows = (int)args_int(a, "collapse-windows");
    o.nan_skip = !strcmp(args_str(a, "nan-policy"), "skip");
    o.grad_ckpt = args_bool(a, "gradient-checkpointing");
    o.att_lse = args_bool(a, "attention-lse");
    o.eval_batch = (int)args_int(a, "eval-batch-size");
    o.quiet = quiet;
    if (!(o.loss.temperature > 0)) xr_errf(&e, "--distill-temperature must be > 0");
    else if (!(o.loss.hard_weight >= 0)) xr_errf(&e, "--hard-label-weight must be >= 0");
    else if (o.collapse_windows < 0) xr_errf(&e, "--collapse-windows must be >= 0 (0: off)");
    else if (args_int(a, "early-stopping-patience") < 0) xr_errf(&e, "--early-stopping-patience must be >= 0");
    else if (args_int(a, "early-stopping-patience") > 0 && !args_str(a, "eval-data"))
        xr_errf(&e, "--early-stopping-patience needs --eval-data (it watches --metric-for-best-model)");
    if (e.msg[0]) return tc_fail(&x, &e, 2);
    const char *hook = getenv("XR_TEST_NAN"); /* tests: "STEP:loss" or "STEP:grad" puts a NaN there */
    if (hook) {
        o.test_nan_step = atoll(hook);
        o.test_nan_grad = strstr(hook, ":grad") != NULL;
    }
    o.zero = !strcmp(args_str(a, "zero"), "auto") ? -1 : atoi(args_str(a, "zero"));
    o.bucket_mb = args_float(a, "bucket-size-mb");
    o.overlap = !strcmp(args_str(a, "overlap"), "on");
    o.sparse_embedding = !strcmp(args_str(a, "sparse-embedding"), "on");
    o.comm = (CommImpl)comm_impl_parse(args_str(a, "comm"));
    if (o.bucket_mb < 0) xr_errf(&e, "--bucket-size-mb must be >= 0 (0: one bucket)");
    if (args_float(a, "comm-timeout") < 0) xr_errf(&e, "--comm-timeout must be >= 0 (0: never)");
    if (args_float(a, "comm-stall-timeout") < 0) xr_errf(&e, "--comm-stall-timeout must be >= 0 (0: wait forever)");
    if (e.msg[0]) return tc_fail(&x, &e, 2);
    comm_set_timeout(x.c, args_float(a, "comm-timeout"));
    comm_set_stall_timeout(x.c, args_float(a, "comm-stall-timeout"));
    train_check_opts(a, &o, &e);
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

    /* model, tokenizer, output directory */
    int st = cli_load_model_files(x.b.model, &x.model_dir, &x.cfg, &x.tok, &e);
    if (st == 0 && cli_max_len("max-length", x.b.max_length, &x.cfg, x.tok, NULL, &o.max_len, &e))
        return tc_fail(&x, &e, 2);
    if (st == 0 && x.cfg.is_seq_cls && x.cfg.num_labels != 1)
        st = xr_errf(&e, "%s has %d labels: a reranker has one (start from a plain encoder or a one-label model)",
                     x.model_dir, x.cfg.num_labels);
    if (st == 0) st = td_check_tokenizer(data, x.tok, x.model_dir, &e);
    if (st == 0 && args_str(a, "eval-data")) st = td_check_tokenizer(args_str(a, "eval-data"), x.tok, x.model_dir, &e);
    x.out = xr_strdup(out);
    int64_t resume_step = 0;
    if (comm_check(x.c, st, &e)) return tc_fail(&x, &e, 1);
    if (args_str(a, "resume") && tc_resume_plan(&x, &o, &resume_step, quiet, &e)) return tc_fail(&x, &e, 1);
    if (st == 0 && x.rank == 0) {
        char *mj = x.metrics_path = xr_path_join(out, "metrics.jsonl"), note[2048];
        st = run_dir_prepare(out, x.b.overwrite, x.resume_dir != NULL, note, sizeof note, &e);
        x.dir_ready = st == 0;
        if (note[0] && !quiet) fprintf(stderr, "xrank train: %s\n", note); /* also on a refusal: what was put back */
        if (st == 0 && x.resume_dir) st = tc_metrics_upto(mj, resume_step, &e); /* a resumed run appends */
        if (st == 0 && !(x.metrics = fopen(mj, x.resume_dir ? "a" : "w")))
            st = xr_errf(&e, "cannot write %s: %s", mj, strerror(errno));
    }
    if (comm_check(x.c, st, &e)) return tc_fail(&x, &e, 1);

    /* data (every rank reads the same index; the node's leader the token stores, shared with the node) */
    TdOptions to = {.dataset = data, .groups = args_str(a, "groups"),
                    .mode = o.loss.kind != LOSS_BCE ? TD_GROUPS : TD_PAIRS,
                    .group_size = (int)args_int(a, "train-group-size"), .teacher = o.loss.kind == LOSS_DISTILL};
    st = td_load_node(x.c, &x.d, &to, &x.dsh, &e); /* token stores: one copy per node */
    x.have_d = st == 0;
    if (st == 0 && args_str(a, "eval-data")) {
        st = evalset_load(&x.es, args_str(a, "eval-data"), args_str(a, "eval-groups"), &e);
        x.have_es = st == 0;
    }
    if (comm_check(x.c, st, &e) || cli_backend(&x.b, &e)) return tc_fail(&x, &e, 1);
    int64_t min_negs, short_groups = td_short_groups(&x.d, &min_negs);
    if (short_groups && x.rank == 0) /* said even with --quiet: the groups are not what the flag suggests */
        fprintf(stderr, "xrank train: warning: --train-group-size %d takes %d negatives per group, but %lld of %lld "
                        "groups have fewer (as few as %lld): their negatives repeat within a group (as FlagEmbedding "
                        "does); mine more (xrank mine --num-negatives) or lower --train-group-size\n",
                x.d.group_size, x.d.group_size - 1, (long long)short_groups, (long long)x.d.n, (long long)min_negs);
    if (!(x.m = encoder_load_on(x.model_dir, x.b.be, &e))) st = -1;
    int new_head = 0;
    if (st == 0 && !x.cfg.is_seq_cls) {
        st = encoder_init_head(x.m, 1, o.seed, &e);
        new_head = 1;
    }
    /* --precision bf16 (the GPU default): the parameters stay the fp32 master copy (optimizer, checkpoints, export),
     * GEMMs read a bf16 working copy the optimizer refreshes once a step (gsync_step), activations are stored in
     * bf16; after the new head, so the copy starts from the weights the first step reads */
    if (st == 0 && x.b.precision == XR_PREC_BF16) st = encoder_set_precision(x.m, XR_PREC_BF16, &e);
    if (comm_check(x.c, st, &e)) return tc_fail(&x, &e, 1);

    o.progress = !quiet && x.rank == 0; /* a line in place on a terminal, plain lines in a log */
    o.metrics = x.metrics;
    o.metrics_path = x.metrics_path;
    TcEval ev = {&x, proto, args_str(a, "metric-for-best-model"), -INFINITY, -1, o.max_len,
                 (int)args_int(a, "eval-batch-size"), quiet, (int)args_int(a, "early-stopping-patience"), 0};
    if (x.have_es) {
        o.evaluate = tc_evaluate;
        o.eval_ctx = &ev;
    }
    o.best_value = &ev.best;
    o.best_step = &ev.best_step;
    o.ckpt.output = out;
    o.ckpt.save_steps = args_int(a, "save-steps");
    o.ckpt.save_total_limit = (int)args_int(a, "save-total-limit");
    o.ckpt.resume = x.resume_dir;
    o.ckpt.base_model = x.model_dir;
    o.ckpt.max_len = o.max_len;
    o.ckpt.config_json = x.config_json = tc_config_json(&x, &o);
    if (x.rank == 0 && !quiet) {
        int64_t gb = (int64_t)o.per_device_batch * x.size * o.accumulation;
        char where[64]; /* what each rank computes on */
        if (x.b.be->device == XR_DEV_CPU) snprintf(where, sizeof where, "%d threads", ops_get_threads(x.b.be));
        else snprintf(where, sizeof where, "GPU %d (%s)", ops_device_index(x.b.be),
                      encoder_precision(x.m) == XR_PREC_BF16 ? "bf16, fp32 master weights" : "fp32");
        fprintf(stderr,
                "xrank train: %s%s, %s loss on %lld %s from %s (%lld positive, %lld negative%s), %d rank%s x "
                "%s, global batch %lld %s (%d per rank x %d accumulation), max length %d, lr %g, dropout %s\n",
                x.model_dir, new_head ? " + new head" : "",
                o.loss.kind == LOSS_DISTILL ? (o.loss.distill == DISTILL_KL ? "distill kl" : o.loss.distill == DISTILL_MSE ? "distill mse" : "distill margin_mse") : loss_kind_name(o.loss.kind),
                (long long)x.d.n, to.mode == TD_GROUPS ? "groups" : "pairs", x.d.source, (long long)x.d.npos,
                (long long)x.d.nneg, x.d.skipped ? ", some groups without negatives skipped" : "", x.size,
                x.size > 1 ? "s" : "", where,
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
    const char *leave = getenv("XR_TEST_LEAVE"); /* tests: "ok" / "fail": the last rank skips training and ends */
    if (leave && x.size > 1 && x.rank == x.size - 1) {
        int fail = !strcmp(leave, "fail");
        fprintf(stderr, "xrank train: XR_TEST_LEAVE=%s: rank %d skips training and ends (exit %d)\n", leave, x.rank, fail);
        fflush(stderr);
        if (fail) xr_errf(&e, "XR_TEST_LEAVE=fail");
        return fail ? tc_fail(&x, &e, 1) : tc_finish(&x, 0);
    }
    TrainStats ts;
    st = trainer_run(x.c, x.m, x.tok, &x.d, &o, &ts, &e);
    if (st) return tc_fail(&x, &e, 1);
    st = 0;
    if (ts.stopped) {
        if (x.rank == 0)
            fprintf(stderr, "xrank train: stopped by a signal after step %lld of %lld: wrote %s/checkpoint-%lld; "
                            "continue with --resume latest\n", (long long)ts.steps, (long long)ts.total_steps, out,
                    (long long)ts.steps);
        return tc_finish(&x, 0);
    }
    if (x.rank == 0) {
        char *p = xr_path_join(out, "final");
        st = tc_metrics_flushed(&x, &e);
        if (st == 0) st = trainer_export_hf(x.m, x.model_dir, p, o.max_len, &e);
        if (st == 0) st = run_dir_commit(out, &e); /* the run is complete: the one it replaced goes */
        free(p);
        if (st == 0 && !quiet) {
            fprintf(stderr,
                    "xrank train: %lld steps (%.2f epochs) in %.1f s: %.1f pairs/s, %.0f tokens/s, padding efficiency "
                    "%.1f%%, last loss %.4f\n",
                    (long long)ts.steps, (double)ts.steps / (double)ts.steps_per_epoch, ts.seconds,
                    (double)ts.pairs / ts.seconds, (double)ts.real_tokens / ts.seconds,
                    100.0 * (double)ts.real_tokens / (double)(ts.padded_tokens ? ts.padded_tokens : 1), ts.last_loss);
            if (ts.timed_steps > 0) {
                double k = 1.0 / (double)ts.timed_steps;
                fprintf(stderr, "  step time: compute %.3f s, exposed communication %.3f s, data %.3f s per step "
                        "(mean over ranks)\n", ts.compute_s * k, ts.comm_exposed_s * k, ts.data_s * k);
            }
            if (x.size > 1) {
                double tot = ts.comm_hidden_s + ts.comm_exposed_s;
                fprintf(stderr, "  gradients: %s, %d bucket%s%s, %s; communication hidden behind the backward: "
                        "%.1f%% (%.3f s per step hidden, %.3f s exposed)\n", ts.exchange, ts.buckets,
                        ts.buckets > 1 ? "s" : "", o.overlap ? " reduced during the backward" : " reduced after it",
                        ts.zero ? "ZeRO-1" : "ZeRO off", tot > 0 ? 100.0 * ts.comm_hidden_s / tot : 0.0,
                        ts.comm_hidden_s / (double)(ts.timed_steps ? ts.timed_steps : 1),
                        ts.comm_exposed_s / (double)(ts.timed_steps ? ts.timed_steps : 1));
            }
            if (x.size > 1 && ts.sparse_steps > 0)
                fprintf(stderr, "  word embeddings: %.0f of %lld rows exchanged per step (%.1f%%)\n",
                        (double)ts.sparse_rows / (double)ts.sparse_steps, (long long)ts.vocab,
                        100.0 * (double)ts.sparse_rows / (double)ts.sparse_steps / (double)(ts.vocab ? ts.vocab : 1));
            if (ts.checkpoints)
                fprintf(stderr, "  %d checkpoint%s written; training paused %.3f s for them; rank 0 wrote %.1f MB in "
                        "%.3f s (%.1f MB/s with fsync and crc32)\n", ts.checkpoints, ts.checkpoints > 1 ? "s" : "",
                        ts.checkpoint_pause_s, (double)ts.ckpt_write_bytes / 1e6, ts.ckpt_write_s,
                        (double)ts.ckpt_write_bytes / 1e6 / (ts.ckpt_write_s > 0 ? ts.ckpt_write_s : 1e-9));
            if (ts.resumed_from)
                fprintf(stderr, "  resumed from step %lld: rank 0 read %.1f MB in %.3f s (%.1f MB/s)\n",
                        (long long)ts.resumed_from, (double)ts.ckpt_read_bytes / 1e6, ts.ckpt_read_s,
                        (double)ts.ckpt_read_bytes / 1e6 / (ts.ckpt_read_s > 0 ? ts.ckpt_read_s : 1e-9));
            fprintf(stderr, "  memory: peak %.1f MiB held on the device by rank 0 (plan %.1f MiB)\n",
                    (double)ts.mem_peak / 1048576.0, (double)ts.mem_plan / 1048576.0);
            if (ts.skipped_steps > 0)
                fprintf(stderr, "  %lld step%s skipped for a non-finite loss or gradient (--nan-policy skip)\n",
                        (long long)ts.skipped_steps, ts.skipped_steps > 1 ? "s" : "");
            if (ts.stopped_early) fprintf(stderr, "  stopped early (--early-stopping-patience)\n");
            if (ts.collapse_warned)
                fprintf(stderr, "  warning: the collapse detector fired during this run (see the warnings above)\n");
            fprintf(stderr, "  wrote %s/final%s and %s/metrics.jsonl\n", out, x.have_es ? ", best" : "", out);
            if (x.have_es) fprintf(stderr, "  best %s %.4f at step %lld\n", ev.best_metric, ev.best, (long long)ev.best_step);
        }
    }
    if (comm_check(x.c, st, &e)) return tc_fail(&x, &e, 1);
    return tc_finish(&x, 0);
}
