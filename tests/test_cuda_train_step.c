/* test_cuda_train_step: whole training steps of the encoder on the GPU (issue 10), with the tiny BERT and XLM-R
 * models the CPU trainer tests use:
 * - one step's logits and the gradient of every parameter against the Hugging Face fixtures (tests/fixtures/grad,
 *   gen_grad_fixtures.py; dropout off; the same bounds as test_grad_model: 1e-4 of each tensor's largest gradient);
 * - 10 AdamW steps with dropout on (clipping, warmup + linear decay, weight decay, two micro-batches accumulated
 *   per step) on the GPU against the same 10 steps of the CPU trainer's code path: parameters within 1e-5 (tensors
 *   whose true gradient is 0 within Adam's noise bound, as test_grad_model);
 * - the same 10 GPU steps twice: bit-identical parameters (no atomics in any reduction);
 * - --gradient-checkpointing on the GPU: the same bits as without it.
 * Through the op API only (ops_backend_create), so it compiles in every build; exit 77 (skipped) without a GPU.
 * The 2-rank runs (staged communicator on one GPU = 1 rank x accumulation 2) are the CLI's: train_cuda_ranks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grad_fixture.h"
#include "loss.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "testutil.h"

#define PARAM_TOL 1e-5
#define STEPS 10

static Encoder *load_on(const char *model, Backend *be) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), model);
    XrErr e;
    Encoder *m = encoder_load_on(dir, be, &e);
    if (!m) {
        fprintf(stderr, "encoder_load_on %s (%s): %s\n", dir, ops_device_name(be->device), e.msg);
        exit(1);
    }
    return m;
}

static float *to_host(Encoder *m, const float *dev) {
    size_t np = (size_t)encoder_num_params(m);
    float *h = xr_malloc(np * sizeof(float));
    ops_to_host(encoder_backend(m), h, dev, np * sizeof(float));
    return h;
}

static double case_loss(const Fix *f, const char *loss, const float *logits, int off, int n, float *dl) {
    return strcmp(loss, "bce") == 0
               ? loss_bce_with_logits(logits, f->labels + off, n, (float)jnum(f->info, "pos_weight"), 0.5f, dl)
               : loss_group_ce(logits, n / f->G, f->G, 0.5f, dl);
}

/* One step on the fixture's batch, dropout off: logits and every gradient against torch's. Fills zero[] (tensors
 * whose true gradient is 0). */
static void test_fixture_step(Backend *gpu, const char *name, int *zero) {
    Fix f;
    fix_load(&f, name);
    Encoder *m = load_on(jstr(f.info, "model"), gpu);
    Batch b = {f.B, f.T, f.ids, f.types, f.mask};
    EncoderTrainStep st = {1, 0, NULL, 0};
    float *lg = xr_malloc((size_t)f.B * sizeof(float)), *dl = xr_malloc((size_t)f.B * sizeof(float));
    encoder_zero_grads(m);
    encoder_train_forward(m, &b, &st, lg);
    const char *gl = jstr(f.info, "grad_loss");
    if (strcmp(gl, "bce") == 0)
        loss_bce_with_logits(lg, f.labels, f.B, (float)jnum(f.info, "pos_weight"), 1.0f, dl);
    else
        loss_group_ce(lg, f.B / f.G, f.G, 1.0f, dl);
    encoder_train_backward(m, dl);
    double d = tu_check_close("gpu logits", lg, f.logits, (size_t)f.B, GRAD_TOL);
    printf("%-15s GPU logits vs torch: max abs diff %.2e\n", name, d);
    float *g = to_host(m, encoder_grads(m));
    char label[64];
    snprintf(label, sizeof label, "%s (GPU)", name);
    check_grads(m, g, &f, label, zero);
    free(g), free(lg), free(dl);
    encoder_free(m);
    fix_free(&f);
}

/* STEPS optimizer steps on backend be, each two micro-batches (the fixture's batch halves) with dropout on; returns
 * the parameters (host). */
static float *train_steps(Backend *be, const Fix *f, int grad_ckpt) {
    Encoder *m = load_on(jstr(f->info, "model"), be);
    encoder_set_gradient_checkpointing(m, grad_ckpt);
    size_t np = (size_t)encoder_num_params(m);
    AdamWConfig cfg = {jnum(f->info, "beta1"), jnum(f->info, "beta2"), jnum(f->info, "eps"), jnum(f->info, "weight_decay")};
    AdamW *o = adamw_create(be, 0, np, &cfg);
    for (int i = 0; i < encoder_num_tensors(m); i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        if (!encoder_tensor_decays(t)) adamw_no_decay(o, t->offset, t->numel);
    }
    const char *gl = jstr(f->info, "grad_loss");
    int half = f->B / 2; /* whole groups: B is a multiple of 2G */
    float lg[64], dl[64];
    uint64_t ex[64];
    for (int s = 0; s < STEPS; s++) {
        encoder_zero_grads(m);
        for (int mb = 0; mb < 2; mb++) {
            int off = mb * half;
            Batch b = {half, f->T, f->ids + (size_t)off * f->T, f->types + (size_t)off * f->T,
                       f->mask + (size_t)off * f->T};
            for (int i = 0; i < half; i++) ex[i] = (uint64_t)(off + i);
            EncoderTrainStep st = {42, (uint64_t)s, ex, 1};
            encoder_train_forward(m, &b, &st, lg);
            case_loss(f, gl, lg, off, half, dl);
            encoder_train_backward(m, dl);
        }
        optim_clip_grad_norm(be, encoder_grads(m), np, jnum(f->info, "max_norm"));
        adamw_step(o, encoder_params(m), encoder_grads(m), sched_lr(SCHED_LINEAR, jnum(f->info, "lr"), s, 1, STEPS));
    }
    float *p = to_host(m, encoder_params(m));
    adamw_free(o);
    encoder_free(m);
    return p;
}

static void test_adamw_steps(Backend *cpu, Backend *gpu, const char *name, const int *zero) {
    Fix f;
    fix_load(&f, name);
    TU_CHECK(f.B % (2 * f.G) == 0 && f.B <= 64, "%s: batch %d does not split into two halves of whole groups", name,
             f.B);
    float *pc = train_steps(cpu, &f, 0), *pg = train_steps(gpu, &f, 0), *pg2 = train_steps(gpu, &f, 0);
    float *pk = train_steps(gpu, &f, 1);
    Encoder *m = load_on(jstr(f.info, "model"), cpu); /* the views */
    size_t np = (size_t)encoder_num_params(m), ndiff = 0, nckpt = 0;
    double worst = 0, zworst = 0, lr_sum = 0;
    const char *wn = "";
    for (int s = 0; s < STEPS; s++) lr_sum += sched_lr(SCHED_LINEAR, jnum(f.info, "lr"), s, 1, STEPS);
    for (int i = 0; i < encoder_num_tensors(m); i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        for (size_t k = t->offset; k < t->offset + t->numel; k++) {
            double d = fabs((double)pc[k] - (double)pg[k]);
            if (zero[i]) zworst = fmax(zworst, d);
            else if (d > worst) worst = d, wn = t->name;
        }
    }
    for (size_t k = 0; k < np; k++) {
        ndiff += memcmp(&pg[k], &pg2[k], sizeof(float)) != 0;
        nckpt += memcmp(&pg[k], &pk[k], sizeof(float)) != 0;
    }
    TU_CHECK(worst <= PARAM_TOL, "%s: after %d AdamW steps with dropout the GPU's parameters differ from the CPU's by "
             "%.3g (in %s)", name, STEPS, worst, wn);
    TU_CHECK(zworst <= 2.2 * lr_sum, "%s: zero-gradient tensors moved apart by %.3g, more than Adam's steps allow "
             "(2 x %.3g)", name, zworst, lr_sum);
    TU_CHECK(ndiff == 0, "%s: two GPU runs differ in %zu of %zu parameters", name, ndiff, np);
    TU_CHECK(nckpt == 0, "%s: gradient checkpointing on the GPU changed %zu of %zu parameters", name, nckpt, np);
    printf("%-15s %d AdamW steps, dropout on, 2 micro-batches: GPU vs CPU params max abs diff %.2e (zero-gradient "
           "tensors %.1e, bound %.1e); two GPU runs: %zu of %zu differ; with checkpointing: %zu differ\n",
           name, STEPS, worst, zworst, 2.2 * lr_sum, ndiff, np, nckpt);
    free(pc), free(pg), free(pg2), free(pk);
    encoder_free(m);
    fix_free(&f);
}

int main(void) {
    if (ops_device_count(XR_DEV_CUDA) == 0) TU_SKIP("no GPU visible (or built without the CUDA backend)");
    XrErr e;
    Backend *gpu = ops_backend_create(XR_DEV_CUDA, 0, XR_PREC_FP32, 0, &e);
    if (!gpu) {
        fprintf(stderr, "ops_backend_create(cuda): %s\n", e.msg);
        return 1;
    }
    Backend *cpu = ops_backend_cpu(2);
    const char *cases[] = {"bert_cls", "xlmr_cls"};
    for (int c = 0; c < 2; c++) {
        int zero[512] = {0};
        test_fixture_step(gpu, cases[c], zero);
        test_adamw_steps(cpu, gpu, cases[c], zero);
    }
    ops_backend_free(cpu);
    ops_backend_free(gpu);
    return tu_finish("test_cuda_train_step");
}
