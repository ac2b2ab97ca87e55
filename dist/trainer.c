/* trainer.c: the data-parallel training loop (see trainer.h): global batches from one permutation per epoch,
 * length-sorted examples dealt to ranks and micro-batches in snake order (even token loads), share-weighted loss gradients, an all-reduce of the flat
 * gradient buffer, clipping, the schedule and AdamW; logging to the terminal and metrics.jsonl on rank 0. */
#include "trainer.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "guards.h"
#include "xr_progress.h"
#include "hfexport.h"
#include "loss.h"

void trainer_defaults(TrainOpts *o) {
    memset(o, 0, sizeof *o);
    o->per_device_batch = 16;
    o->accumulation = 1;
    o->epochs = 1;
    o->lr = 2e-5;
    o->weight_decay = 0.01;
    o->warmup_ratio = 0.1;
    o->max_grad_norm = 1.0;
    o->sched = SCHED_LINEAR;
    o->pos_weight = 1.0f;
    o->dropout = 1;
    o->max_len = 512;
    o->logging_steps = 10;
    o->zero = -1;
    o->bucket_mb = GS_DEFAULT_BUCKET_MB;
    o->overlap = 1;
    o->comm = COMM_AUTO;
    o->sparse_embedding = 1;
    o->loss = (LossSpec){LOSS_BCE, 1.0f, DISTILL_KL, 1.0f, 0.0f};
    o->collapse_windows = 3;
    o->collapse_spread = 1e-2;
    o->collapse_tol = 1e-2;
}

/* Sort key of the length bucketing: longest first, ties by position in the global batch (a total order). */
typedef struct {
    int32_t len;
    int32_t pos;
} TrLen;

static int tr_cmp_len(const void *a, const void *b) {
    const TrLen *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* A logging window's step time split, per step, averaged over ranks (compute_max: the slowest rank's compute,
 * so compute_max - compute is the imbalance the others waited for, inside their exposed communication). */
typedef struct {
    double data, compute, compute_max, exposed, hidden, inflight, steps;
    double cpu; /* process CPU seconds (all threads) per step, summed over ranks */
} TrSplit;

#define TR_WIN 7
static double tr_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void tr_split_window(Comm *c, const double win[TR_WIN], TrSplit *sp) {
    size_t got = 0;
    double *all = (double *)comm_allgather(c, win, TR_WIN * sizeof(double), &got, NULL);
    int R = (int)(got / (TR_WIN * sizeof(double)));
    memset(sp, 0, sizeof *sp);
    double steps = win[5] > 0 ? win[5] : 1;
    for (int r = 0; r < R; r++) {
        const double *w = all + TR_WIN * r;
        sp->cpu += w[6] / steps;
        sp->data += w[0] / steps / R, sp->compute += w[1] / steps / R, sp->exposed += w[2] / steps / R;
        sp->hidden += w[3] / steps / R, sp->inflight += w[4] / steps / R;
        if (w[1] / steps > sp->compute_max) sp->compute_max = w[1] / steps;
    }
    sp->steps = win[5];
    free(all);
}

/* The error of a step whose loss or gradients are not finite: the step, and the first tensor (model order) whose
 * reduced gradient is not finite over all ranks' shards. Collective. */
static int tr_nonfinite_error(Comm *c, Encoder *m, GradSync *gs, int64_t step, double bad_losses, double loss,
                              double norm, XrErr *e) {
    size_t lo, hi;
    gsync_shard(gs, &lo, &hi);
    int mine = guard_first_nonfinite(m, encoder_grads(m), lo, hi), first = -1;
    size_t got = 0;
    int *all = (int *)comm_allgather(c, &mine, sizeof mine, &got, NULL);
    for (size_t r = 0; r < got / sizeof(int); r++)
        if (all[r] >= 0 && (first < 0 || all[r] < first)) first = all[r];
    free(all);
    char where[160] = "";
    if (first >= 0) snprintf(where, sizeof where, "; first non-finite gradient: %s", encoder_tensor(m, first)->name);
    return xr_errf(e,
                   "step %lld: %s (loss %g, gradient norm %g%s): training stopped before the update (lower "
                   "--learning-rate, or --nan-policy skip to skip such steps)",
                   (long long)step, bad_losses > 0 ? "the loss is not finite" : "a gradient is not finite", loss, norm,
                   where);
}

/* The plan of one rank at `seqs` sequences per micro-batch: the encoder's part and the optimizer's moments. */
static size_t tr_plan(Encoder *m, int seqs, int eval_seqs, int max_len, int R, int zero, EncoderMemPlan *p) {
    encoder_train_plan(m, seqs, eval_seqs, max_len, p);
    p->moments = (size_t)gsync_optimizer_bytes(encoder_num_params(m), R, zero, 0);
    return encoder_plan_total(p);
}

#define MIB(x) ((double)(x) / 1048576.0)

/* Memory planned, not discovered: before the first step, what this rank will hold at the largest micro-batch
 * (B x G sequences of max_len tokens) against what its device can still give, shared by the ranks of the node
 * that use it. Refuses a batch that cannot fit, naming the largest that would; then caps the workspaces at the
 * plan (encoder_set_batch_limits) so the run never takes more. Collective. */
/* Examples in the largest micro-batch at per-device batch b: at most b, and at most a chunk's share of a global
 * batch, which the dataset's n examples may cut short (chunks: ranks x accumulation, dealt round-robin). */
static int tr_chunk_max(int b, int R, int A, int64_t n) {
    int64_t C = (int64_t)R * A, gb = (int64_t)b * C, gn = n < gb ? n : gb, k = (gn + C - 1) / C;
    return k < b ? (int)(k > 0 ? k : 1) : b;
}

static int tr_memory_plan(Comm *c, Encoder *m, const TrainOpts *o, int G, int64_t n, int zero, TrainStats *st,
                          XrErr *e) {
    Backend *be = encoder_backend(m);
    int R = comm_size(c), B = o->per_device_batch, A = o->accumulation, L = o->max_len;
    int eb = o->evaluate ? o->eval_batch : 0, Bm = tr_chunk_max(B, R, A, n);
    encoder_set_gradient_checkpointing(m, o->grad_ckpt);
    encoder_set_attention_lse(m, o->att_lse);
    EncoderMemPlan p;
    size_t total = tr_plan(m, Bm * G, eb, L, R, zero, &p);
    XrMemStats ms;
    ops_mem_stats(be, &ms); /* what is already held (weights, moments) is part of the plan */
    size_t more = total > ms.live ? total - ms.live : 0;
    int local = comm_local_size(c), sharing = local;
    if (be->device != XR_DEV_CPU) { /* ranks of a node share its GPUs round-robin */
        int ndev = ops_device_count(be->device);
        sharing = ndev > 0 ? (local + ndev - 1) / ndev : 1;
    }
    size_t avail = ops_mem_available(be) / (size_t)(sharing > 0 ? sharing : 1);
    st->mem_plan = (int64_t)total, st->mem_available = (int64_t)avail;
    int rc = 0;
    char dev[32];
    if (be->device == XR_DEV_CPU) snprintf(dev, sizeof dev, "host memory");
    else snprintf(dev, sizeof dev, "GPU %d", ops_device_index(be));
    if (more > avail) {
        int lo = 0, hi = B - 1; /* the largest b < B that fits (0: none) */
        while (lo < hi) {
            int mid = lo + (hi - lo + 1) / 2;
            EncoderMemPlan q;
            size_t t = tr_plan(m, tr_chunk_max(mid, R, A, n) * G, eb, L, R, zero, &q);
            if ((t > ms.live ? t - ms.live : 0) <= avail) lo = mid;
            else hi = mid - 1;
        }
        char fits[160];
        if (lo > 0) snprintf(fits, sizeof fits, "the largest that fits is --per-device-train-batch-size %d", lo);
        else if (G > 1)
            snprintf(fits, sizeof fits, "not even a batch of 1 fits (a group is %d sequences: lower --train-group-size)", G);
        else snprintf(fits, sizeof fits, "not even a batch of 1 fits");
        rc = xr_errf(e,
                     "memory: --per-device-train-batch-size %d (%d x %d sequences in the largest micro-batch) at "
                     "--max-length %d needs %.1f MiB per rank (weights "
                     "%.1f, bf16 weights copy %.1f, moments %.1f, gradients %.1f, activations %.1f, workspace %.1f, "
                     "eval %.1f), %.1f MiB more "
                     "than is held now, but %s can give %.1f MiB%s: %s (or use --gradient-checkpointing, a shorter "
                     "--max-length, more --gradient-accumulation-steps)",
                     B, Bm, G, L, MIB(total), MIB(p.weights), MIB(p.weights_copy), MIB(p.moments), MIB(p.grads),
                     MIB(p.activations), MIB(p.workspace), MIB(p.eval), MIB(more), dev, MIB(avail),
                     sharing > 1 ? " (its share for this rank)" : "", fits);
    }
    if (comm_check(c, rc, e)) return -1;
    encoder_set_batch_limits(m, Bm * G, eb, L);
    if (comm_rank(c) == 0 && !o->quiet)
        fprintf(stderr,
                "  memory plan per rank: %.1f MiB on %s (weights %.1f, bf16 weights copy %.1f, moments %.1f, gradients "
                "%.1f, activations %.1f%s, workspace %.1f, eval %.1f) for micro-batches of %d sequences x %d tokens; "
                "%.1f MiB available\n",
                MIB(total), dev, MIB(p.weights), MIB(p.weights_copy), MIB(p.moments), MIB(p.grads), MIB(p.activations),
                o->grad_ckpt ? " with gradient checkpointing" : "", MIB(p.workspace), MIB(p.eval), Bm * G, L,
                MIB(avail));
    return 0;
}

int trainer_run(Comm *c, Encoder *m, const Tokenizer *t, const TrainData *d, const TrainOpts *o, TrainStats *st,
                XrErr *e) {
    const ModelConfig *cfg = encoder_config(m);
    if (!cfg->is_seq_cls || cfg->num_labels != 1)
        return xr_errf(e, "training needs a sequence-classification model with one label (got %s with %d labels)",
                       cfg->is_seq_cls ? "a classifier" : "a bare encoder", cfg->num_labels);
    if (o->per_device_batch < 1 || o->accumulation < 1) return xr_errf(e, "batch size and accumulation must be >= 1");
    int R = comm_size(c), rank = comm_rank(c);
    int B = o->per_device_batch, A = o->accumulation, G = d->group_size;
    int64_t GB = (int64_t)B * R * A, n = d->n;
    int64_t spe = (n + GB - 1) / GB;
    int64_t total = o->max_steps > 0 ? o->max_steps : (int64_t)ceil(o->epochs * (double)spe - 1e-9);
    if (total < 1) total = 1;
    int64_t warmup = sched_warmup_steps(o->warmup_ratio, total);
    memset(st, 0, sizeof *st);
    st->total_steps = total, st->steps_per_epoch = spe, st->global_batch = GB;

    Backend *be = encoder_backend(m);
    if (comm_attach(c, be, o->comm, e)) return -1;
    AdamWConfig ac = adamw_defaults();
    ac.weight_decay = o->weight_decay;
    GsOpts gso = {o->zero < 0 ? R > 1 : o->zero, o->bucket_mb, o->overlap, o->sparse_embedding,
                  o->comm == COMM_AUTO || o->comm == COMM_SHM};
    GradSync *gs = gsync_create(c, m, &gso, &ac);
    st->zero = gso.zero && R > 1;
    st->buckets = gsync_num_buckets(gs);
    snprintf(st->exchange, sizeof st->exchange, "%s", gsync_exchange_name(gs));
    if (o->comm == COMM_SHM && R > 1 && strcmp(st->exchange, "node shared memory") && rank == 0)
        fprintf(stderr, "xrank train: --comm shm needs every rank on one node: gradients go over MPI\n");
    st->optimizer_bytes = gsync_optimizer_bytes(encoder_num_params(m), R, st->zero, 0);
    if (tr_memory_plan(c, m, o, G, n, st->zero, st, e)) {
        gsync_free(gs);
        return -1;
    }

    TrainCkpt *ck = NULL;
    TrainCounters tcn = {0};
    tcn.best_step = -1;
    if (o->ckpt.output || o->ckpt.resume) {
        CkptPlan plan = {total, spe, GB, B, A, o->seed};
        ck = tckpt_create(c, &o->ckpt, &plan);
    }
    if (ck && o->ckpt.resume && tckpt_resume(ck, m, gs, &tcn, e)) {
        tckpt_free(ck);
        gsync_free(gs);
        return -1;
    }
    if (o->best_step && tcn.best_step >= 0) *o->best_step = tcn.best_step, *o->best_value = tcn.best_value;
    st->resumed_from = tcn.step;
    st->steps = tcn.step;
    st->pairs = tcn.pairs, st->real_tokens = tcn.real_tokens, st->padded_tokens = tcn.padded_tokens;

    int64_t *perm = xr_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    BatchItem *items = xr_malloc(sizeof(BatchItem) * (size_t)(GB * G));
    float *labels = xr_malloc(sizeof(float) * (size_t)(GB * G));
    int32_t *item_len = xr_malloc(sizeof(int32_t) * (size_t)(GB * G));
    TrLen *order = xr_malloc(sizeof(TrLen) * (size_t)GB);
    int64_t *dealt = xr_malloc(sizeof(int64_t) * (size_t)B); /* this chunk's positions in order[] */
    int64_t *cidx = xr_malloc(sizeof(int64_t) * (size_t)(B * G));
    uint64_t *exid = xr_malloc(sizeof(uint64_t) * (size_t)(B * G));
    float *clab = xr_malloc(sizeof(float) * (size_t)(B * G));
    float *logits = xr_malloc(sizeof(float) * (size_t)(B * G));
    float *dlogits = xr_malloc(sizeof(float) * (size_t)(B * G));
    /* the loss: pairs are BCE; groups the chosen loss (default: group CE) with graded labels / teacher scores */
    LossSpec ls = o->loss;
    ls.pos_weight = o->pos_weight;
    if (G == 1) ls.kind = LOSS_BCE;
    else if (ls.kind == LOSS_BCE) ls.kind = LOSS_LISTWISE;
    float *teach = xr_malloc(sizeof(float) * (size_t)(GB * G)), *cteach = xr_malloc(sizeof(float) * (size_t)(B * G));
    float *scratch = xr_malloc(sizeof(float) * (size_t)(B * G));
    CollapseDetector cd;
    collapse_init(&cd, o->collapse_windows, o->collapse_spread, o->collapse_tol, loss_collapse_value(&ls, G));
    double log_spread = 0;
    BatchBuf bb;
    batch_buf_init(&bb);
    int64_t cur_epoch = -1;
    double t0 = xr_now(), t_log = t0, log_loss = tcn.log_loss, log_w = tcn.log_w;
    int64_t log_pairs = tcn.log_pairs, log_real = tcn.log_real, log_pad = tcn.log_pad, log_from = tcn.log_from;
    int rc = 0;
    /* progress counts this run's steps (a resumed run's rate and time left start from the resume) */
    XrProgress prog;
    xr_progress_begin(&prog, rank == 0 && o->progress, "xrank train: step", "steps", total);
    prog.base = tcn.step;
    /* step time split of this rank over the logging window: data (batch assembly), exposed communication (the
     * waits of the gradient exchange and the step's scalar reduction), compute (the rest: forward, loss,
     * backward, optimizer); the buckets' communication behind the backward (hidden) and in flight
     * (gsync_times). [0] data, [1] compute, [2] exposed, [3] hidden, [4] in flight, [5] steps, [6] process CPU
     * seconds (every thread of the rank: spinning waits count, so it shows work and waste). */
    double win[TR_WIN] = {0, 0, 0, 0, 0, 0, 0};
    double gx0, gh0, gi0;

    for (int64_t s = tcn.step; s < total && rc == 0; s++) {
        double t_step = xr_now(), t_data = 0, t_comm = 0, cpu0 = tr_cpu_seconds();
        gsync_times(gs, &gx0, &gh0, &gi0);
        int64_t epoch = s / spe, pos = (s % spe) * GB, gn = n - pos < GB ? n - pos : GB;
        if (epoch != cur_epoch) {
            td_epoch_order(n, o->seed, epoch, perm);
            cur_epoch = epoch;
        }
        for (int64_t i = 0; i < gn; i++) {
            td_example_targets(d, perm[pos + i], o->seed, epoch, items + i * G, labels + i * G, teach + i * G);
            int32_t l = 0;
            for (int j = 0; j < G; j++) {
                item_len[i * G + j] = batch_item_len(t, &d->seqs, items[i * G + j], o->max_len);
                l += item_len[i * G + j];
            }
            order[i] = (TrLen){l, (int32_t)i};
        }
        qsort(order, (size_t)gn, sizeof *order, tr_cmp_len);
        t_data += xr_now() - t_step;

        encoder_zero_grads(m);
        /* loss x examples, examples, real tokens, padded tokens, score spread x examples, non-finite losses */
        double loc[6] = {0, 0, 0, 0, 0, 0};
        for (int mi = 0; mi < A; mi++) {
            /* Chunk c of C = ranks x accumulation takes the length-sorted examples in snake order (round r of C
             * examples goes to chunks 0..C-1, the next round C-1..0), so every rank carries about the same
             * number of tokens (the model packs sequences: mixing lengths in a chunk costs no padding). The
             * split depends on C only, not on how it factors into ranks and micro-batches. */
            int64_t C = (int64_t)A * R, c = (int64_t)mi * R + rank;
            int cnt = 0;
            for (int64_t r = 0; r * C < gn; r++) {
                int64_t at = r * C + (r % 2 ? C - 1 - c : c);
                if (at < gn) {
                    assert(cnt < B);
                    dealt[cnt++] = at;
                }
            }
            if (cnt == 0) continue;
            double t_fill = xr_now();
            for (int k = 0; k < cnt; k++) {
                int64_t i = order[dealt[k]].pos;
                for (int j = 0; j < G; j++) {
                    cidx[k * G + j] = i * G + j;
                    exid[k * G + j] = (uint64_t)(i * G + j); /* position in the global batch: rank-independent */
                    clab[k * G + j] = labels[i * G + j];
                    cteach[k * G + j] = teach[i * G + j];
                    loc[2] += item_len[i * G + j];
                }
            }
            const Batch *b = batch_fill(&bb, t, &d->seqs, items, cidx, cnt * G, o->max_len);
            gsync_touch(gs, b->ids, (size_t)b->B * (size_t)b->T);
            t_data += xr_now() - t_fill;
            EncoderTrainStep ts = {o->seed, (uint64_t)s, exid, o->dropout};
            if (mi == A - 1) gsync_arm(gs); /* the last backward starts the reductions as it goes */
            encoder_train_forward(m, b, &ts, logits);
            float share = (float)((double)cnt / (double)gn);
            int hook = o->test_nan_step == s + 1 && rank == 0 && mi == 0; /* tests: a NaN where asked */
            if (hook && !o->test_nan_grad) logits[0] = NAN;
            double l = loss_compute(&ls, logits, clab, cteach, cnt, G, share, dlogits, scratch);
            if (hook && o->test_nan_grad) dlogits[0] = NAN;
            encoder_train_backward(m, dlogits);
            loc[4] += collapse_spread_sum(logits, cnt, G);
            loc[5] += !isfinite(l);
            loc[0] += l * cnt;
            loc[1] += cnt;
            loc[3] += (double)b->B * b->T;
        }
        double norm = gsync_reduce(gs);
        double t_loc = xr_now();
        comm_allreduce_sum_f64(c, loc, 6);
        if (R > 1) t_comm += xr_now() - t_loc; /* one rank: no communication, only the timer's own cost */
        double lr = sched_lr(o->sched, o->lr, s, warmup, total);
        double loss = loc[0] / (loc[1] > 0 ? loc[1] : 1);
        int skip = loc[5] > 0 || !isfinite(norm); /* the same on every rank: loc and norm are global */
        if (skip && !o->nan_skip) {
            rc = tr_nonfinite_error(c, m, gs, s + 1, loc[5], loss, norm, e);
            break;
        }
        if (skip) { /* no update, nothing counted; logging and evaluation go on */
            st->skipped_steps++;
            xr_progress_clear(&prog);
            if (rank == 0) fprintf(stderr, "xrank train: warning: step %lld skipped: loss %g, gradient norm %g\n",
                                   (long long)s + 1, loss, norm);
            memset(loc, 0, sizeof loc);
        } else {
            gsync_step(gs, norm, o->max_grad_norm, lr);
            st->last_loss = loss;
        }
        {
            double gx, gh, gi, dt_step = xr_now() - t_step;
            gsync_times(gs, &gx, &gh, &gi);
            t_comm += gx - gx0;
            win[0] += t_data, win[1] += dt_step - t_data - t_comm, win[2] += t_comm;
            win[3] += gh - gh0, win[4] += gi - gi0, win[5] += 1, win[6] += tr_cpu_seconds() - cpu0;
        }
        st->steps = s + 1;
        st->pairs += (int64_t)loc[1] * G;
        st->real_tokens += (int64_t)loc[2];
        st->padded_tokens += (int64_t)loc[3];
        log_loss += loc[0], log_w += loc[1], log_spread += loc[4];
        log_pairs += (int64_t)loc[1] * G, log_real += (int64_t)loc[2], log_pad += (int64_t)loc[3];
        int last = s + 1 == total;
        double now = xr_now(), ep = (double)(s + 1) / (double)spe;
        if (prog.on) {
            char extra[160];
            snprintf(extra, sizeof extra, "epoch %.2f, loss %.4f, lr %.2e, %.1f pairs/s", ep, loss, lr,
                     (double)st->pairs / (now - t0));
            xr_progress_update(&prog, s + 1, extra);
        }
        if ((o->logging_steps > 0 && (s + 1) % o->logging_steps == 0) || last) {
            double dt = now - t_log > 1e-9 ? now - t_log : 1e-9;
            st->mean_loss_last_log = log_loss / (log_w > 0 ? log_w : 1);
            /* every rank's window split (collective: every rank logs at the same steps) */
            TrSplit sp;
            tr_split_window(c, win, &sp);
            st->data_s += sp.data * sp.steps, st->compute_s += sp.compute * sp.steps;
            st->comm_exposed_s += sp.exposed * sp.steps, st->comm_hidden_s += sp.hidden * sp.steps;
            st->comm_inflight_s += sp.inflight * sp.steps, st->timed_steps += (int64_t)sp.steps;
            memset(win, 0, sizeof win);
            int wst = 0;
            errno = 0;
            if (rank == 0 && o->metrics) {
                char comm[160] = "";
                if (R > 1)
                    snprintf(comm, sizeof comm, ", \"comm_hidden_s\": %.4g, \"comm_hidden_frac\": %.4f", sp.hidden,
                             sp.hidden + sp.exposed > 0 ? sp.hidden / (sp.hidden + sp.exposed) : 0.0);
                fprintf(o->metrics,
                        "{\"type\": \"train\", \"step\": %lld, \"epoch\": %.4f, \"loss\": %.6g, \"learning_rate\": %.6g, "
                        "\"grad_norm\": %.6g, \"pairs_per_s\": %.2f, \"tokens_per_s\": %.1f, "
                        "\"padding_efficiency\": %.4f, \"score_std\": %.4g, \"steps_logged\": %lld, \"elapsed_s\": %.2f, "
                        "\"step_s\": %.4g, \"data_s\": %.4g, \"compute_s\": %.4g, \"compute_max_s\": %.4g, "
                        "\"comm_exposed_s\": %.4g, \"cpu_s\": %.4g%s}\n",
                        (long long)s + 1, ep, st->mean_loss_last_log, lr, norm, (double)log_pairs / dt,
                        (double)log_real / dt, log_pad > 0 ? (double)log_real / (double)log_pad : 1.0,
                        log_spread / (log_w > 0 ? log_w : 1), (long long)(s + 1 - log_from), now - t0,
                        sp.data + sp.compute + sp.exposed, sp.data, sp.compute, sp.compute_max, sp.exposed, sp.cpu, comm);
                if (fflush(o->metrics) || ferror(o->metrics))
                    wst = xr_errf(e, "step %lld: cannot write %s: %s", (long long)s + 1,
                                  o->metrics_path ? o->metrics_path : "metrics.jsonl", strerror(errno ? errno : EIO));
            }
            if (comm_check(c, wst, e)) { /* a full disk stops the run at the first line it cannot log */
                rc = -1;
                break;
            }
            double spread = log_spread / (log_w > 0 ? log_w : 1);
            if (collapse_window(&cd, spread, st->mean_loss_last_log)) {
                st->collapse_warned = 1;
                if (rank == 0) {
                    xr_progress_clear(&prog);
                    fprintf(stderr,
                            "xrank train: warning: step %lld: the model looks collapsed: scores nearly constant within "
                            "groups (mean standard deviation %.3g) and loss %.4f at its constant-score value for %d "
                            "logging windows (learning rate too high? see docs/TRAINING.md)\n",
                            (long long)s + 1, spread, st->mean_loss_last_log, cd.run);
                    if (o->metrics)
                        fprintf(o->metrics, "{\"type\": \"collapse\", \"step\": %lld, \"score_std\": %.6g, \"loss\": %.6g}\n",
                                (long long)s + 1, spread, st->mean_loss_last_log);
                }
                if (o->stop_on_collapse) {
                    rc = xr_errf(e, "step %lld: stopped on collapse (--stop-on-collapse): scores constant within groups "
                                 "for %d logging windows", (long long)s + 1, cd.run);
                    break;
                }
            }
            t_log = now, log_loss = 0, log_w = 0, log_spread = 0, log_pairs = log_real = log_pad = 0, log_from = s + 1;
        }
        if (o->evaluate && ((o->eval_steps > 0 && (s + 1) % o->eval_steps == 0) || last)) {
            xr_progress_clear(&prog);
            double te = xr_now();
            rc = o->evaluate(o->eval_ctx, m, s + 1, ep, e);
            t0 += xr_now() - te; /* throughput and ETA count training time only */
            t_log += xr_now() - te;
            if (rc > 0) { /* early stopping */
                st->stopped_early = 1, rc = 0;
                break;
            }
        }
        if (ck && rc == 0) {
            TrainCounters now_c = {s + 1, log_loss, log_w, log_pairs, log_real, log_pad, log_from, st->pairs,
                                   st->real_tokens, st->padded_tokens, o->best_value ? *o->best_value : 0,
                                   o->best_step ? *o->best_step : -1};
            int stop = 0;
            double tc0 = xr_now();
            if (tckpt_signalled()) xr_progress_clear(&prog);
            rc = tckpt_step_end(ck, m, gs, &now_c, &stop, e);
            t0 += xr_now() - tc0;
            t_log += xr_now() - tc0;
            if (stop) {
                st->stopped = 1;
                break;
            }
        }
    }
    if (ck) {
        if (rc == 0) rc = tckpt_finish(ck, e);
        st->checkpoints = tckpt_count(ck);
        st->checkpoint_pause_s = tckpt_pause_seconds(ck);
        tckpt_io_stats(ck, &st->ckpt_write_s, &st->ckpt_write_bytes, &st->ckpt_read_s, &st->ckpt_read_bytes);
        tckpt_free(ck);
    }
    xr_progress_end(&prog);
    st->seconds = xr_now() - t0;
    XrMemStats ms;
    ops_mem_stats(be, &ms);
    st->mem_peak = (int64_t)ms.peak;
    gsync_sparse_stats(gs, &st->sparse_rows, &st->sparse_steps, &st->vocab);
    batch_buf_free(&bb);
    free(perm), free(items), free(labels), free(item_len), free(order), free(dealt), free(cidx), free(exid), free(clab);
    free(logits), free(dlogits), free(teach), free(cteach), free(scratch);
    gsync_free(gs);
    return rc;
}

int trainer_export_hf(Encoder *m, const char *base_dir, const char *out, int max_length, XrErr *e) {
    const ModelConfig *cfg = encoder_config(m);
    const char *arch = hf_seq_cls_architecture(cfg->model_type);
    if (!arch) return xr_errf(e, "cannot export a model of type %s", cfg->model_type);
    int n = encoder_num_tensors(m);
    const float *pv = encoder_params(m);
    int bad = guard_first_nonfinite(m, pv, 0, (size_t)encoder_num_params(m));
    if (bad >= 0)
        return xr_errf(e, "%s not written: %s holds a non-finite value (NaN or Inf); the model is unusable",
                       out, encoder_tensor(m, bad)->name);
    StWriteTensor *t = xr_calloc((size_t)n, sizeof *t);
    const float *p = encoder_params(m);
    Backend *be = encoder_backend(m);
    float *host = NULL;
    if (be->device != XR_DEV_CPU) {
        /* the writer reads host memory: bring the weights back from the device */
        size_t np = encoder_num_params(m);
        host = xr_malloc(np * sizeof(float));
        ops_to_host(be, host, p, np * sizeof(float));
        p = host;
    }
    for (int i = 0; i < n; i++) {
        const EncoderTensor *v = encoder_tensor(m, i);
        t[i].name = v->name;
        t[i].ndim = v->ndim;
        for (int k = 0; k < v->ndim; k++) t[i].shape[k] = v->shape[k];
        t[i].data = p + v->offset;
    }
    int rc = hf_export_dir(out, base_dir, t, n, arch, cfg->num_labels, max_length, e);
    free(t);
    free(host);
    return rc;
}
