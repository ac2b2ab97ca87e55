/* bench_train_step.c: one GPU's training step (forward, backward, clipping, AdamW and, in bf16, the working copy's
 * refresh) on B random full-length sequences of T tokens, through the library (the CLI refuses --precision bf16
 * until the GPU check passes): loads a model directory on a CUDA backend, adds a one-label head when it has none,
 * runs 2 warm-up steps then STEPS timed ones, and prints one JSON line: ms per step, pairs/s, tokens/s, the
 * backend's measured peak memory and, in bf16, the activation casts a step. The number issue 13 compares with
 * PyTorch's autocast step (benchmarks/peer_gpu.py train-bf16 at the same T and B).
 * With $XR_CUDA_OP_TIMES=1 the backend times every op (ops.h, ops_prof_enable: CUDA events around each call) and
 * after the first JSON line comes one line per (phase, op), slowest first: calls and ms per step, and the share of the
 * timed step's wall time; then one "xrank_op_total" line. Event recording slows a step down: the ms_per_step of such a
 * run is the timed one's, not the speed to quote.
 * STEPS 0: no step, only the memory plan (encoder_train_plan) for B x T, on a CPU backend: no GPU needed.
 * ATTENTION lse: the training attention saves the log-sum-exp and recomputes in the backward (--attention-lse);
 * saved (the default, the CLI's): it saves the probabilities. $XR_CUDA_TRAIN_ATTENTION=gemm|exact (ops_cuda.cu) picks
 * the saved path's CUDA implementation; every JSON line says which ("train_attention": exact, gemm or lse).
 * Usage: bench_train_step MODEL_DIR T B STEPS fp32|bf16 [dropout 0|1 [saved|lse]]
 * Built by benchmarks/CMakeLists.txt (target bench_train_step, not part of `all`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loss.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

#ifdef XR_HAVE_CUDA
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
#endif

static double mib(size_t b) { return b / 1048576.0; }

/* The memory plan of a B x T training step, on a CPU backend (fp32 weights; a GPU's bf16 working copy takes 2 bytes
 * a weight where the CPU's emulation takes 4: the plan printed counts the GPU's 2). */
static int plan_only(const char *dir, int T, int B, int bf16) {
    XrErr e;
    Backend *be = ops_backend_cpu(1);
    Encoder *m = encoder_load_on(dir, be, &e);
    if (!m || (!encoder_config(m)->is_seq_cls && encoder_init_head(m, 1, 42, &e) != 0) ||
        (bf16 && encoder_set_precision(m, XR_PREC_BF16, &e) != 0)) {
        fprintf(stderr, "bench_train_step: %s\n", e.msg);
        return 1;
    }
    EncoderMemPlan p;
    encoder_train_plan(m, B, 0, T, &p);
    size_t np = (size_t)encoder_num_params(m);
    if (bf16) p.weights_copy = 2 * np;
    p.moments = 8 * np; /* one rank: AdamW's two fp32 moments of every parameter */
    printf("{\"kind\": \"xrank_train_plan\", \"precision\": \"%s\", \"max_len\": %d, \"batch\": %d, \"params\": %zu, "
           "\"weights_mib\": %.1f, \"weights_copy_mib\": %.1f, \"moments_mib\": %.1f, \"grads_mib\": %.1f, "
           "\"activations_mib\": %.1f, \"workspace_mib\": %.1f, \"total_mib\": %.1f}\n",
           bf16 ? "bf16" : "fp32", T, B, np, mib(p.weights), mib(p.weights_copy), mib(p.moments), mib(p.grads),
           mib(p.activations), mib(p.workspace), mib(encoder_plan_total(&p)));
    encoder_free(m);
    ops_backend_free(be);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL_DIR T B STEPS fp32|bf16 [dropout 0|1 [saved|lse]]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int T = atoi(argv[2]), B = atoi(argv[3]), steps = atoi(argv[4]), bf16 = !strcmp(argv[5], "bf16");
    int dropout = argc > 6 ? atoi(argv[6]) : 1, lse = argc > 7 && !strcmp(argv[7], "lse");
    if (T < 3 || B < 1 || steps < 0) {
        fprintf(stderr, "bench_train_step: bad T / B / STEPS\n");
        return 2;
    }
    if (steps == 0) return plan_only(dir, T, B, bf16);
#ifndef XR_HAVE_CUDA
    (void)dropout, (void)lse;
    fprintf(stderr, "bench_train_step: built without the CUDA backend\n");
    return 77;
#else
    XrErr e;
    /* the saved-probability attention's CUDA implementation, as the backend reads it (ops_cuda.cu) */
    const char *ta = getenv("XR_CUDA_TRAIN_ATTENTION");
    const char *tatt = lse ? "lse" : ta && !strcmp(ta, "gemm") ? "gemm" : "exact";
    if (cuda_ops_device_count() < 1) {
        fprintf(stderr, "bench_train_step: no GPU visible\n");
        return 77;
    }
    /* the backend the CLI makes for the precision (bf16: bf16 GEMM mode) */
    Backend *be = ops_backend_create(XR_DEV_CUDA, 0, bf16 ? XR_PREC_BF16 : XR_PREC_FP32, 0, &e);
    Encoder *m = be ? encoder_load_on(dir, be, &e) : NULL;
    if (!m || (!encoder_config(m)->is_seq_cls && encoder_init_head(m, 1, 42, &e) != 0) ||
        encoder_set_precision(m, bf16 ? XR_PREC_BF16 : XR_PREC_FP32, &e) != 0) {
        fprintf(stderr, "bench_train_step: %s\n", e.msg);
        return 1;
    }
    encoder_set_attention_lse(m, lse);
    encoder_set_batch_limits(m, B, 0, T);
    size_t np = (size_t)encoder_num_params(m);
    AdamWConfig ac = adamw_defaults();
    AdamW *opt = adamw_create(be, 0, np, &ac);
    for (int i = 0; i < encoder_num_tensors(m); i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        if (!encoder_tensor_decays(t)) adamw_no_decay(opt, t->offset, t->numel);
    }
    /* ids in [5, 1000), the first and last tokens special, no padding; labels alternate */
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T), *mask = malloc(sizeof(int32_t) * (size_t)B * T);
    float *labels = malloc(sizeof(float) * (size_t)B), *lg = malloc(sizeof(float) * (size_t)B);
    float *dl = malloc(sizeof(float) * (size_t)B);
    uint64_t *ex = malloc(sizeof(uint64_t) * (size_t)B), r = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < (size_t)B * T; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        ids[i] = 5 + (int32_t)(r % 995);
        mask[i] = 1;
    }
    for (int b = 0; b < B; b++) {
        ids[(size_t)b * T] = 0, ids[(size_t)b * T + T - 1] = 2;
        labels[b] = (float)(b % 2), ex[b] = (uint64_t)b;
    }
    Batch batch = {B, T, ids, NULL, mask};
    unsigned long long casts = 0;
    double t0 = 0, loss = 0;
    for (int s = 0; s < steps + 2; s++) {
        if (s == 2) {
            ops_sync(be);
            ops_prof_reset(be); /* the warm-up steps' op times are forgotten */
            casts = cuda_ops_act_casts(be);
            t0 = now();
        }
        EncoderTrainStep st = {42, (uint64_t)s, ex, dropout};
        ops_prof_phase(be, XR_PHASE_OPTIMIZER);
        encoder_zero_grads(m);
        ops_prof_phase(be, XR_PHASE_FORWARD);
        encoder_train_forward(m, &batch, &st, lg); /* ends with the logits on the host: synchronised */
        loss = loss_bce_with_logits(lg, labels, B, 1.0f, 1.0f, dl);
        ops_prof_phase(be, XR_PHASE_BACKWARD);
        encoder_train_backward(m, dl);
        ops_prof_phase(be, XR_PHASE_OPTIMIZER);
        optim_clip_grad_norm(be, encoder_grads(m), np, 1.0);
        adamw_step(opt, encoder_params(m), encoder_grads(m), 2e-5);
        encoder_weights_updated(m);
    }
    ops_sync(be);
    double dt = now() - t0;
    casts = cuda_ops_act_casts(be) - casts;
    XrMemStats ms;
    ops_mem_stats(be, &ms);
    printf("{\"kind\": \"xrank_train_step\", \"precision\": \"%s\", \"max_len\": %d, \"batch\": %d, \"steps\": %d, "
           "\"dropout\": %d, \"attention_lse\": %d, \"ms_per_step\": %.2f, \"pairs_per_s\": %.1f, "
           "\"tokens_per_s\": %.0f, \"peak_mib\": %.1f, \"act_casts_per_step\": %.1f, \"last_loss\": %.4f, "
           "\"params\": %zu, \"op_times\": %d, \"train_attention\": \"%s\", \"train_pack\": %d}\n",
           bf16 ? "bf16" : "fp32", T, B, steps, dropout, lse, 1e3 * dt / steps, B * steps / dt,
           (double)B * T * steps / dt, ms.peak / 1048576.0, (double)casts / steps, loss, np, ops_prof_active(be), tatt,
           ops_act_region(be, NULL, 0) == 2); /* the saved activations packed (XR_CUDA_TRAIN_PACK=1, bf16) */
    if (ops_prof_active(be)) {
        XrOpTime rows[256];
        int n = ops_prof_report(be, rows, 256), k = n < 256 ? n : 256;
        double step_ms = 1e3 * dt / steps, sum = 0;
        for (int i = 0; i < k; i++) {
            sum += rows[i].ms / steps;
            printf("{\"kind\": \"xrank_op_time\", \"precision\": \"%s\", \"max_len\": %d, \"batch\": %d, "
                   "\"phase\": \"%s\", \"op\": \"%s\", \"calls_per_step\": %.1f, \"ms_per_step\": %.3f, "
                   "\"share\": %.4f, \"train_attention\": \"%s\"}\n",
                   bf16 ? "bf16" : "fp32", T, B, ops_phase_name(rows[i].phase), rows[i].op,
                   (double)rows[i].calls / steps, rows[i].ms / steps, rows[i].ms / steps / step_ms, tatt);
        }
        printf("{\"kind\": \"xrank_op_total\", \"precision\": \"%s\", \"max_len\": %d, \"batch\": %d, "
               "\"rows\": %d, \"timed_step_ms\": %.2f, \"ops_ms\": %.2f, \"ops_share\": %.4f, "
               "\"train_attention\": \"%s\"}\n",
               bf16 ? "bf16" : "fp32", T, B, n, step_ms, sum, sum / step_ms, tatt);
    }
    encoder_set_precision(m, XR_PREC_FP32, &e);
    adamw_free(opt);
    encoder_free(m);
    ops_backend_free(be);
    free(ids), free(mask), free(labels), free(lg), free(dl), free(ex);
    return 0;
#endif
}
