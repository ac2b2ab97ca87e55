/* test_bf16_train: the bf16 training step (issue 13) on the CPU backend's emulation of bf16 storage, with the tiny
 * BERT and XLM-R fixtures of test_grad_model:
 * - the rounding itself: nearest, ties to even, inf and NaN kept, against hand-worked values;
 * - one step's logits and every parameter gradient in bf16 against the fp32 step: within the bound derived below,
 *   and NOT equal to it (the emulation really rounds);
 * - STEPS AdamW steps in bf16 (dropout on, two micro-batches a step): the master weights stay fp32 (values that are
 *   not bf16 numbers remain), the working copy equals the master rounded to bf16 after every step and was filled
 *   exactly once per step (plus the first fill), the parameters track the fp32 run's;
 * - the same bf16 steps twice: bit-identical; with and without gradient checkpointing: the same gradients;
 * - the working copy follows the parameters into a lent buffer and back, and goes with an encoder freed on a shared
 *   backend;
 * - evaluation during a bf16 run takes the inference path (test_eval_path);
 * - 50 steps in bf16 track the fp32 loss curve (bf16_curve.h; test_cuda_bf16_train runs the same on the GPU);
 * - the saved activations packed in 2 bytes (ops_act_region, the CPU backend's test capability) change no bit: logits,
 *   gradients and parameters of STEPS AdamW steps equal the unpacked run's, with and without gradient checkpointing
 *   and the log-sum-exp attention (test_packed).
 * Bound: bf16 keeps 8 significant bits, unit roundoff u = 2^-8. A value stored in bf16 carries relative error <= u;
 * a GEMM over bf16 operands with fp32 accumulation adds <= 2u |x||W| per product (each operand rounded once) plus
 * the fp32 sum's K 2^-24, negligible here. Between the input and a parameter's gradient a value passes about 12
 * roundings per layer and direction (forward: qkv, ctx, ao, v1, a, f, gact, fo, v2, the layer output; backward:
 * the operands dy, x and W of the GEMMs), k = 24 L for L layers (the fixtures have 5: k = 120). The attention's
 * own operands (ops_list.h: Pd in the forward, dO, Pd and dS in the backward) make it about 13 a direction; the
 * bound keeps k = 24 L (sqrt(26 / 24) = 1.04, and the measured errors stay below a third of it). Independent
 * errors add in quadrature: a gradient tensor's expected relative error is ~ sqrt(k) u / sqrt(3) (a uniform
 * rounding error has standard deviation u / sqrt(3)) = 0.025 for L = 5; LayerNorm's division by a small standard
 * deviation and the softmax amplify it by a small factor. Bound per tensor, ||g_bf16 - g_fp32|| / ||g_fp32||:
 * 4 sqrt(k) u = 0.17 for L = 5 (a worst case; the printout shows the measured error), and the emulation must move
 * the model's gradient by more than u / 64 relative (fp32 rounding alone moves it by ~1e-7). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_curve.h"
#include "cpu/cpu_math.h"
#include "cpu/cpu_ops.h"
#include "grad_fixture.h"
#include "loss.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "testutil.h"

#define U (1.0 / 256.0)
/* the bound derived above for a model of L layers */
#define GRAD_BOUND_L(L) (4.0 * sqrt(24.0 * (L)) * U)
#define STEPS 6

static Encoder *load_on(const char *model, Backend *be) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), model);
    XrErr e;
    Encoder *m = encoder_load_on(dir, be, &e);
    if (!m) xr_die("encoder_load_on %s: %s", dir, e.msg);
    return m;
}

static void set_prec(Encoder *m, XrPrecision p) {
    XrErr e;
    TU_CHECK(encoder_set_precision(m, p, &e) == 0, "encoder_set_precision: %s", e.msg);
}

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_rounding(void) {
    /* spacing of bf16 at 1 is 2^-7: 1 + 2^-8 is a tie (to 1, even), 1 + 3 2^-8 a tie (to 1 + 2^-6, even) */
    struct { float in, want; } c[] = {
        {1.0f + 0x1p-8f, 1.0f},           {1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-6f},
        {1.0f + 0x1p-8f + 0x1p-20f, 1.0f + 0x1p-7f}, {-(1.0f + 0x1p-9f), -1.0f},
        {3.14159265f, 3.140625f},         {1e-40f, bits_f(0x00010000u)}, /* subnormal 0x00011704: nearest */
        {bits_f(0x7f7fffffu), INFINITY},  {INFINITY, INFINITY},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        float r = xr_bf16_round(c[i].in);
        TU_CHECK(memcmp(&r, &c[i].want, 4) == 0, "bf16 round of %.9g: got %.9g, want %.9g", (double)c[i].in,
                 (double)r, (double)c[i].want);
    }
    TU_CHECK(isnan(xr_bf16_round(NAN)), "bf16 round of NaN is not NaN");
    printf("rounding: %zu hand-worked cases, NaN kept\n", sizeof c / sizeof c[0]);
}

/* One step on the fixture's batch, dropout off, in precision p: logits [B] and gradients (host copies). */
static void one_step(Backend *be, const Fix *f, XrPrecision p, float *lg, float **g) {
    Encoder *m = load_on(jstr(f->info, "model"), be);
    set_prec(m, p);
    Batch b = {f->B, f->T, f->ids, f->types, f->mask};
    EncoderTrainStep st = {1, 0, NULL, 0};
    float dl[64];
    encoder_zero_grads(m);
    encoder_train_forward(m, &b, &st, lg);
    if (strcmp(jstr(f->info, "grad_loss"), "bce") == 0)
        loss_bce_with_logits(lg, f->labels, f->B, (float)jnum(f->info, "pos_weight"), 1.0f, dl);
    else
        loss_group_ce(lg, f->B / f->G, f->G, 1.0f, dl);
    encoder_train_backward(m, dl);
    size_t np = (size_t)encoder_num_params(m);
    *g = xr_malloc(np * sizeof(float));
    memcpy(*g, encoder_grads(m), np * sizeof(float));
    set_prec(m, XR_PREC_FP32);
    encoder_free(m);
}

static void test_step_vs_fp32(Backend *be, const char *name) {
    Fix f;
    fix_load(&f, name);
    TU_CHECK(f.B <= 64, "%s: batch too large", name);
    float lf[64], lb[64], *gf, *gb;
    one_step(be, &f, XR_PREC_FP32, lf, &gf);
    one_step(be, &f, XR_PREC_BF16, lb, &gb);
    Encoder *m = load_on(jstr(f.info, "model"), be); /* the views */
    const double GRAD_BOUND = GRAD_BOUND_L(encoder_config(m)->layers);
    double ld = 0, ln = 0;
    for (int i = 0; i < f.B; i++) ld += (lb[i] - lf[i]) * (double)(lb[i] - lf[i]), ln += lf[i] * (double)lf[i];
    TU_CHECK(sqrt(ld) <= GRAD_BOUND * sqrt(ln), "%s: bf16 logits off the fp32 ones by %.3g relative (bound %.3g)",
             name, sqrt(ld / ln), GRAD_BOUND);
    /* Tensors whose true gradient is 0 (attention key biases: softmax ignores a constant added to a row's scores;
     * the output bias under group cross-entropy: each group's dlogits sum to 0) carry rounding noise only, in fp32
     * ~1e-7 and in bf16 ~u of the gradients they come from: they are held to GRAD_BOUND of the largest tensor's
     * gradient instead of their own. A tensor counts as such when its fp32 gradient is below 1e-4 of the largest. */
    int nt = encoder_num_tensors(m), nzero = 0;
    double *dn = xr_malloc((size_t)nt * 2 * sizeof(double)), gmax = 0, zworst = 0;
    for (int i = 0; i < nt; i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        double d = 0, n = 0;
        for (size_t k = t->offset; k < t->offset + t->numel; k++)
            d += (gb[k] - gf[k]) * (double)(gb[k] - gf[k]), n += gf[k] * (double)gf[k];
        dn[2 * i] = sqrt(d), dn[2 * i + 1] = sqrt(n);
        gmax = fmax(gmax, sqrt(n));
    }
    double worst = 0, td = 0, tn = 0;
    const char *wn = "";
    for (int i = 0; i < nt; i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        td += dn[2 * i] * dn[2 * i], tn += dn[2 * i + 1] * dn[2 * i + 1];
        if (dn[2 * i + 1] < 1e-4 * gmax) {
            nzero++;
            zworst = fmax(zworst, dn[2 * i] / gmax);
            TU_CHECK(dn[2 * i] <= GRAD_BOUND * gmax, "%s: %s (true gradient 0): bf16 noise %.3g of the largest "
                     "gradient (bound %.3g)", name, t->name, dn[2 * i] / gmax, GRAD_BOUND);
            continue;
        }
        if (dn[2 * i] / dn[2 * i + 1] > worst) worst = dn[2 * i] / dn[2 * i + 1], wn = t->name;
    }
    free(dn);
    TU_CHECK(worst <= GRAD_BOUND, "%s: bf16 gradient of %s off the fp32 one by %.3g relative (bound %.3g)", name, wn,
             worst, GRAD_BOUND);
    TU_CHECK(sqrt(td / tn) > U / 64, "%s: bf16 gradients equal the fp32 ones (%.3g relative): nothing was rounded",
             name, sqrt(td / tn));
    printf("%-15s one step, bf16 vs fp32: logits %.2e, all gradients %.2e, worst tensor %.2e (%s); bound %.3f; "
           "%d zero-gradient tensors: noise %.1e of the largest gradient\n",
           name, sqrt(ld / ln), sqrt(td / tn), worst, wn, GRAD_BOUND, nzero, zworst);
    free(gf), free(gb);
    encoder_free(m);
    fix_free(&f);
}

/* STEPS AdamW steps (dropout on, two micro-batches) in precision p; checks the working copy after every step in
 * bf16; returns the parameters. */
static float *train_steps(Backend *be, const Fix *f, XrPrecision p) {
    Encoder *m = load_on(jstr(f->info, "model"), be);
    set_prec(m, p);
    size_t np = (size_t)encoder_num_params(m);
    AdamW *o = fixture_adamw(be, f, m);
    const char *gl = jstr(f->info, "grad_loss");
    int half = f->B / 2;
    float lg[64], dl[64];
    uint64_t ex[64];
    CpuPrecision *cp = cpu_precision(be);
    for (int s = 0; s < STEPS; s++) {
        encoder_zero_grads(m);
        for (int mb = 0; mb < 2; mb++) {
            int off = mb * half;
            Batch b = {half, f->T, f->ids + (size_t)off * f->T, f->types + (size_t)off * f->T,
                       f->mask + (size_t)off * f->T};
            for (int i = 0; i < half; i++) ex[i] = (uint64_t)(off + i);
            EncoderTrainStep st = {42, (uint64_t)s, ex, 1};
            encoder_train_forward(m, &b, &st, lg);
            if (strcmp(gl, "bce") == 0)
                loss_bce_with_logits(lg, f->labels + off, half, (float)jnum(f->info, "pos_weight"), 0.5f, dl);
            else
                loss_group_ce(lg, half / f->G, f->G, 0.5f, dl);
            encoder_train_backward(m, dl);
        }
        optim_clip_grad_norm(be, encoder_grads(m), np, jnum(f->info, "max_norm"));
        adamw_step(o, encoder_params(m), encoder_grads(m), sched_lr(SCHED_LINEAR, jnum(f->info, "lr"), s, 1, STEPS));
        int64_t fills = encoder_weights_updated(m); /* what gsync_step does after the optimizer */
        if (p != XR_PREC_BF16) {
            TU_CHECK(fills == 0, "fp32 run: the working copy was filled (%lld)", (long long)fills);
            continue;
        }
        TU_CHECK(fills == s + 2, "step %d: the working copy was filled %lld times, want %d (once at start, once a "
                 "step)", s, (long long)fills, s + 2);
        const float *w = encoder_params(m);
        size_t bad = 0, not_bf16 = 0;
        TU_CHECK(cp->master == w && cp->n == np, "the working copy does not cover the parameter buffer");
        for (size_t k = 0; k < np; k++) {
            float r = xr_bf16_round(w[k]);
            bad += memcmp(&r, &cp->copy[k], 4) != 0;
            not_bf16 += r != w[k];
        }
        TU_CHECK(bad == 0, "step %d: %zu of %zu working-copy values are not the master rounded to bf16", s, bad, np);
        TU_CHECK(not_bf16 > np / 2, "step %d: only %zu of %zu master weights are off the bf16 grid: the master is "
                 "not fp32", s, not_bf16, np);
    }
    float *out = xr_malloc(np * sizeof(float));
    memcpy(out, encoder_params(m), np * sizeof(float));
    adamw_free(o);
    encoder_free(m);
    return out;
}

static void test_steps(Backend *be, const char *name) {
    Fix f;
    fix_load(&f, name);
    float *pf = train_steps(be, &f, XR_PREC_FP32), *pb = train_steps(be, &f, XR_PREC_BF16);
    float *pb2 = train_steps(be, &f, XR_PREC_BF16);
    Encoder *m = load_on(jstr(f.info, "model"), be);
    size_t np = (size_t)encoder_num_params(m), ndiff = 0;
    /* Adam moves each weight by at most ~lr a step whatever the gradient's error, so the two runs stay within
     * 2 lr STEPS of each other: the bf16 run must stay on that leash, and far from it on average */
    double lr_sum = 0, worst = 0, mean = 0;
    for (int s = 0; s < STEPS; s++) lr_sum += sched_lr(SCHED_LINEAR, jnum(f.info, "lr"), s, 1, STEPS);
    for (size_t k = 0; k < np; k++) {
        double d = fabs((double)pb[k] - pf[k]);
        worst = fmax(worst, d), mean += d;
        ndiff += memcmp(&pb[k], &pb2[k], 4) != 0;
    }
    mean /= (double)np;
    TU_CHECK(worst <= 2.2 * lr_sum, "%s: bf16 parameters %.3g from the fp32 run's, more than Adam allows (%.3g)",
             name, worst, 2.2 * lr_sum);
    TU_CHECK(ndiff == 0, "%s: two bf16 runs differ in %zu of %zu parameters", name, ndiff, np);
    printf("%-15s %d AdamW steps, dropout on: bf16 vs fp32 params max %.2e mean %.2e (Adam bound %.2e); working "
           "copy = bf16(master) after every step, filled once a step; two bf16 runs: %zu of %zu differ\n",
           name, STEPS, worst, mean, 2.2 * lr_sum, ndiff, np);
    free(pf), free(pb), free(pb2);
    encoder_free(m);
    fix_free(&f);
}

/* Gradient checkpointing in bf16: the recomputed activations are stored in bf16 as the forward stored them, and the
 * gradients of activations stay fp32 in both runs, so the gradients are the same bits (dropout on, 2 micro-batches). */
static void test_ckpt_bf16(Backend *be, const char *name) {
    Fix f;
    fix_load(&f, name);
    float *g[2];
    size_t np = 0;
    int half = f.B / 2;
    for (int ck = 0; ck < 2; ck++) {
        Encoder *m = load_on(jstr(f.info, "model"), be);
        encoder_set_gradient_checkpointing(m, ck);
        set_prec(m, XR_PREC_BF16);
        np = (size_t)encoder_num_params(m);
        float lg[64], dl[64];
        uint64_t ex[64];
        encoder_zero_grads(m);
        for (int mb = 0; mb < 2; mb++) {
            int off = mb * half;
            Batch b = {half, f.T, f.ids + (size_t)off * f.T, f.types + (size_t)off * f.T, f.mask + (size_t)off * f.T};
            for (int i = 0; i < half; i++) ex[i] = (uint64_t)(off + i);
            EncoderTrainStep st = {42, 3, ex, 1};
            encoder_train_forward(m, &b, &st, lg);
            loss_group_ce(lg, half / f.G, f.G, 0.5f, dl);
            encoder_train_backward(m, dl);
        }
        g[ck] = xr_malloc(np * sizeof(float));
        memcpy(g[ck], encoder_grads(m), np * sizeof(float));
        set_prec(m, XR_PREC_FP32);
        encoder_free(m);
    }
    size_t diff = 0;
    for (size_t k = 0; k < np; k++) diff += memcmp(&g[0][k], &g[1][k], 4) != 0;
    TU_CHECK(diff == 0, "%s: bf16 with gradient checkpointing changed %zu of %zu gradients", name, diff, np);
    printf("%-15s bf16 + gradient checkpointing: %zu of %zu gradients differ from the run without\n", name, diff, np);
    free(g[0]), free(g[1]);
    fix_free(&f);
}

/* The working copy is registered on the parameter buffer itself: when the encoder moves its parameters into a
 * lent buffer (encoder_use_buffers, as gradsync does) and back (encoder_private_buffers), the copy follows and is
 * refilled from the new buffer; when the encoder is freed on a backend that outlives it, the copy is dropped (it
 * would otherwise be refreshed from freed memory). */
static void test_copy_follows_buffers(Backend *be) {
    Encoder *m = load_on("bert_cls", be);
    set_prec(m, XR_PREC_BF16);
    size_t np = (size_t)encoder_num_params(m);
    CpuPrecision *cp = cpu_precision(be);
    float *lent = ops_alloc(be, np * sizeof(float));
    const char *stage[] = {"lent buffer", "private buffer again"};
    for (int k = 0; k < 2; k++) {
        if (k == 0)
            encoder_use_buffers(m, lent, 1, NULL);
        else
            encoder_private_buffers(m);
        const float *w = encoder_params(m);
        TU_CHECK((k == 0) == (w == lent), "%s: the parameters are not where they were moved", stage[k]);
        TU_CHECK(cp->master == w && cp->n == np, "%s: the working copy is registered on %p, the parameters are at %p",
                 stage[k], (const void *)cp->master, (const void *)w);
        size_t bad = 0;
        for (size_t i = 0; cp->copy && i < np; i++) {
            float r = xr_bf16_round(w[i]);
            bad += memcmp(&r, &cp->copy[i], 4) != 0;
        }
        TU_CHECK(cp->copy && bad == 0, "%s: %zu of %zu working-copy values are not the parameters rounded", stage[k],
                 bad, np);
    }
    encoder_free(m);
    TU_CHECK(cp->master == NULL && cp->copy == NULL, "encoder_free left the working copy registered on the freed "
             "parameters of a backend that outlives it");
    ops_free(be, lent);
    printf("working copy follows the parameters into a lent buffer and back, and is dropped with the encoder\n");
}

/* Evaluation inside a bf16 run (encoder_forward_score on a bf16-precision encoder) takes the inference path: GEMMs
 * read the working copy, but activations are not rounded where they are stored (on the GPU: the flash attention
 * kernel, as xrank eval --precision bf16), and the training contract's bf16 storage is back when it ends. Checked:
 * its scores are bit-identical to a plain (fp32-precision) encoder's on a second backend that holds only a working
 * copy of that encoder's weights (GEMM operands rounded, storage not: the inference path), which they are not when
 * the evaluation keeps bf16 storage (measured when this test was written: 2.4e-02 relative apart on bert_cls); they
 * are within the step bound of the fp32 encoder's; the training forward after it gives the same bits as before it,
 * and the backend's storage setting is bf16 again. */
static void test_eval_path(Backend *be, const char *name) {
    Fix f;
    fix_load(&f, name);
    TU_CHECK(f.B <= 64, "%s: batch too large", name);
    Batch b = {f.B, f.T, f.ids, f.types, f.mask};
    EncoderTrainStep st = {1, 0, NULL, 0};
    float s32[64], s16[64], sref[64], t1[64], t2[64];
    Encoder *m = load_on(jstr(f.info, "model"), be);
    const double BOUND = GRAD_BOUND_L(encoder_config(m)->layers);
    encoder_forward_score(m, &b, s32);
    set_prec(m, XR_PREC_BF16);
    encoder_train_forward(m, &b, &st, t1);
    encoder_forward_score(m, &b, s16);
    TU_CHECK(cpu_precision(be)->act_bf16 == 1, "%s: an evaluation left a bf16 run's activation storage in fp32", name);
    encoder_train_forward(m, &b, &st, t2);
    TU_CHECK(memcmp(t1, t2, (size_t)f.B * sizeof(float)) == 0,
             "%s: the bf16 training forward after an evaluation differs from the one before it", name);
    /* the reference: the same weights on a backend with only the working copy registered */
    Backend *be2 = ops_backend_cpu(0);
    Encoder *r = load_on(jstr(f.info, "model"), be2);
    ops_bf16_weights(be2, encoder_params(r), (size_t)encoder_num_params(r));
    encoder_forward_score(r, &b, sref);
    ops_bf16_weights(be2, NULL, 0);
    encoder_free(r);
    ops_backend_free(be2);
    size_t ndiff = 0;
    double d32 = 0, n32 = 0, dr = 0;
    for (int i = 0; i < f.B; i++) {
        ndiff += memcmp(&s16[i], &sref[i], 4) != 0;
        d32 += (s16[i] - s32[i]) * (double)(s16[i] - s32[i]), n32 += s32[i] * (double)s32[i];
        dr += (s16[i] - sref[i]) * (double)(s16[i] - sref[i]);
    }
    TU_CHECK(ndiff == 0, "%s: evaluation in a bf16 run: %zu of %d scores differ from the inference path's (%.3g "
             "relative): it does not take the inference path", name, ndiff, f.B, sqrt(dr / n32));
    TU_CHECK(sqrt(d32) <= BOUND * sqrt(n32) && d32 > 0,
             "%s: evaluation in a bf16 run vs the fp32 encoder: %.3g relative (want > 0: the working copy is read, "
             "and <= %.3g)", name, sqrt(d32 / n32), BOUND);
    printf("%-15s evaluation in a bf16 run: %zu of %d scores differ from the inference path's (a plain encoder on the "
           "working copy); vs the fp32 encoder %.2e relative (bound %.3f); training forward after it: the same bits\n",
           name, ndiff, f.B, sqrt(d32 / n32), BOUND);
    set_prec(m, XR_PREC_FP32);
    encoder_free(m);
    fix_free(&f);
}

/* 50 steps in bf16 track the fp32 run's loss curve within the band bf16_curve.h derives; the band is not vacuous:
 * the fp32 run learns (its loss halves at least), and a bf16 run at lr 0 (a run that does not learn) leaves it. */
static void test_curve(Backend *be, const char *name) {
    Fix f;
    fix_load(&f, name);
    Encoder *m = load_on(jstr(f.info, "model"), be);
    const double BOUND = GRAD_BOUND_L(encoder_config(m)->layers);
    encoder_free(m);
    double fall, fall0;
    double worst = lc_compare(be, be, name, &f, BOUND, jnum(f.info, "lr"), &fall);
    TU_CHECK(worst <= 1.0, "%s: the bf16 loss curve leaves the fp32 one's band (%.3g of it)", name, worst);
    TU_CHECK(fall < 0.5, "%s: the fp32 loss only falls to %.2f of its start over %d steps: nothing to track", name,
             fall, LC_STEPS);
    double worst0 = lc_compare(be, be, name, &f, BOUND, 0.0, &fall0);
    TU_CHECK(worst0 > 1.0, "%s: a bf16 run at lr 0 stays within the fp32 curve's band (%.3g of it): the band is "
             "vacuous", name, worst0);
    fix_free(&f);
}

/* One bf16 run of STEPS AdamW steps (dropout on, two micro-batches), the saved activations packed (the CPU
 * backend's test capability on: ops_act_region agrees) or not: every forward's logits, every step's gradients, the
 * parameters after the last step, and the packed regions the backend held during the run and after it. */
typedef struct {
    float *logits, *grads, *params;
    int regions, regions_after;
} PackRun;

static void packed_run(Backend *be, const Fix *f, int ckpt, int lse, int pack, PackRun *r) {
    cpu_set_act_pack_able(be, pack);
    Encoder *m = load_on(jstr(f->info, "model"), be);
    encoder_set_gradient_checkpointing(m, ckpt);
    encoder_set_attention_lse(m, lse);
    set_prec(m, XR_PREC_BF16);
    size_t np = (size_t)encoder_num_params(m);
    AdamW *o = fixture_adamw(be, f, m);
    int half = f->B / 2;
    float dl[64];
    uint64_t ex[64];
    r->logits = xr_malloc((size_t)STEPS * f->B * sizeof(float));
    r->grads = xr_malloc((size_t)STEPS * np * sizeof(float));
    r->regions = -1;
    for (int s = 0; s < STEPS; s++) {
        encoder_zero_grads(m);
        for (int mb = 0; mb < 2; mb++) {
            int off = mb * half;
            Batch b = {half, f->T, f->ids + (size_t)off * f->T, f->types + (size_t)off * f->T,
                       f->mask + (size_t)off * f->T};
            for (int i = 0; i < half; i++) ex[i] = (uint64_t)(off + i);
            EncoderTrainStep st = {42, (uint64_t)s, ex, 1};
            float *lg = r->logits + (size_t)s * f->B + off;
            encoder_train_forward(m, &b, &st, lg);
            if (r->regions < 0) r->regions = be->n_act_regions;
            TU_CHECK(be->n_act_regions == r->regions, "step %d: the backend holds %d packed regions, %d before", s,
                     be->n_act_regions, r->regions);
            loss_group_ce(lg, half / f->G, f->G, 0.5f, dl);
            encoder_train_backward(m, dl);
        }
        memcpy(r->grads + (size_t)s * np, encoder_grads(m), np * sizeof(float));
        optim_clip_grad_norm(be, encoder_grads(m), np, jnum(f->info, "max_norm"));
        adamw_step(o, encoder_params(m), encoder_grads(m), sched_lr(SCHED_LINEAR, jnum(f->info, "lr"), s, 1, STEPS));
        encoder_weights_updated(m);
    }
    r->params = xr_malloc(np * sizeof(float));
    memcpy(r->params, encoder_params(m), np * sizeof(float));
    adamw_free(o);
    encoder_free(m);
    r->regions_after = be->n_act_regions;
    cpu_set_act_pack_able(be, 0);
}

static size_t bits_differ(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], 4) != 0;
    return d;
}

/* Packed bf16 training storage (ops_list.h, act_region): a layout change only. The packed run's bits equal the
 * unpacked emulation's (which stores the same bf16 values in fp32 words) for every combination of gradient
 * checkpointing and the log-sum-exp attention; the packed run held the 12 saved activations as regions while it
 * trained and none after the encoder was freed; an fp32 step on the same capable backend packs nothing. */
static void test_packed(Backend *be, const char *name) {
    Fix f;
    fix_load(&f, name);
    Encoder *m = load_on(jstr(f.info, "model"), be);
    size_t np = (size_t)encoder_num_params(m);
    { /* fp32 never packs, even where the backend could */
        cpu_set_act_pack_able(be, 1);
        Batch b = {f.B, f.T, f.ids, f.types, f.mask};
        EncoderTrainStep st = {1, 0, NULL, 0};
        float lg[64];
        encoder_train_forward(m, &b, &st, lg);
        TU_CHECK(be->n_act_regions == 0, "%s: an fp32 training forward registered %d packed regions", name,
                 be->n_act_regions);
        cpu_set_act_pack_able(be, 0);
    }
    encoder_free(m);
    for (int ck = 0; ck < 2; ck++)
        for (int lse = 0; lse < 2; lse++) {
            PackRun u, p;
            packed_run(be, &f, ck, lse, 0, &u);
            packed_run(be, &f, ck, lse, 1, &p);
            size_t dlg = bits_differ(u.logits, p.logits, (size_t)STEPS * f.B);
            size_t dg = bits_differ(u.grads, p.grads, (size_t)STEPS * np), dp = bits_differ(u.params, p.params, np);
            const char *how = ck ? (lse ? "checkpointing + lse" : "checkpointing") : (lse ? "lse" : "all kept");
            TU_CHECK(u.regions == 0 && p.regions == 12 && p.regions_after == 0,
                     "%s %s: packed regions unpacked %d, packed %d (want 12), after the run %d", name, how, u.regions,
                     p.regions, p.regions_after);
            TU_CHECK(dlg == 0 && dg == 0 && dp == 0,
                     "%s %s: the packed bf16 run differs from the unpacked one: %zu of %d logits, %zu of %zu gradients, "
                     "%zu of %zu parameters", name, how, dlg, STEPS * f.B, dg, (size_t)STEPS * np, dp, np);
            printf("%-15s packed storage (%s): %d regions; %d steps: %zu of %d logits, %zu of %zu gradients, %zu of %zu "
                   "parameters differ from the unpacked run\n", name, how, p.regions, STEPS, dlg, STEPS * f.B, dg,
                   (size_t)STEPS * np, dp, np);
            free(u.logits), free(u.grads), free(u.params), free(p.logits), free(p.grads), free(p.params);
        }
    fix_free(&f);
}

int main(void) {
    test_rounding();
    Backend *be = ops_backend_cpu(0);
    const char *cases[] = {"bert_cls", "xlmr_cls"};
    for (int c = 0; c < 2; c++) {
        test_step_vs_fp32(be, cases[c]);
        test_steps(be, cases[c]);
        test_ckpt_bf16(be, cases[c]);
        test_eval_path(be, cases[c]);
        test_curve(be, cases[c]);
        test_packed(be, cases[c]);
    }
    test_copy_follows_buffers(be);
    ops_backend_free(be);
    return tu_finish("test_bf16_train");
}
