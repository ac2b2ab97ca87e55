/* bf16_curve.h: the loss curve of LC_STEPS AdamW steps on a gradient fixture (tests/grad_fixture.h), the fixture's
 * whole batch a step, dropout off, the fixture's lr held constant, clipping at its max_norm: in fp32 (on an fp32-mode
 * backend) and in bf16 (on the backend given: on the GPU the CLI's bf16-mode one). Issue 13: "training in bf16 on the
 * tiny fixtures tracks the fp32 run's loss curve within bf16 tolerance over 50 steps". Shared by test_bf16_train (the
 * CPU emulation, run everywhere) and test_cuda_bf16_train (the GPU, the backend the CLI trains with).
 *
 * The tolerance. A per-example loss l(z) of a logit z moves, to first order, by |l'(z)| |dz|, and both losses bound
 * their slope by their value: BCE (with a positive weight) is w softplus(-+z), whose slope w sigmoid(-+z) <= w
 * softplus(-+z) since log(1 + t) >= t / (1 + t); group cross-entropy -log p_y has slopes p_j - y_j summing to
 * 2 (1 - p_y) <= 2 (-log p_y). So |L_bf16 - L_fp32| <= c L max_i |dz_i| (c = 1 BCE, 2 CE), and max_i |dz_i| <=
 * ||dz||_2 <= GRAD_BOUND ||z||_2 (test_bf16_train's derived bound on the logits' relative error, 0.171 for 5
 * layers). At step 0 that is all (equal weights); later the weights drift apart too, which this does not bound a
 * priori: Adam moves each weight by about lr a step whatever its gradient's error and both runs descend the same
 * loss, and the printout shows the measured gap (about 1% of the band on the CPU emulation when this was written).
 * So: |L_bf16(s) - L_fp32(s)| <= c GRAD_BOUND L_fp32(s) ||z_fp32(s)||_2 at every step s. The band must not be
 * vacuous: the fp32 run must learn (its loss falls below half its start), and a bf16 run at lr 0, which does not
 * learn, must leave the band (checked by the tests with the same code). */
#ifndef XR_BF16_CURVE_H
#define XR_BF16_CURVE_H

#include <math.h>
#include <string.h>

#include "grad_fixture.h"
#include "loss.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "testutil.h"

#define LC_STEPS 50

/* AdamW with the fixture's betas, eps and weight decay over m's flat buffer, no decay where the model says so (the
 * trainer's rule); shared by the fixture tests' training loops. */
static AdamW *fixture_adamw(Backend *be, const Fix *f, Encoder *m) {
    AdamWConfig cfg = {jnum(f->info, "beta1"), jnum(f->info, "beta2"), jnum(f->info, "eps"),
                       jnum(f->info, "weight_decay")};
    AdamW *o = adamw_create(be, 0, (size_t)encoder_num_params(m), &cfg);
    for (int i = 0; i < encoder_num_tensors(m); i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        if (!encoder_tensor_decays(t)) adamw_no_decay(o, t->offset, t->numel);
    }
    return o;
}

/* losses[LC_STEPS] and the 2-norm of each step's logits, training from the fixture's model in precision p at lr. */
static void lc_run(Backend *be, const Fix *f, XrPrecision p, double lr, double *losses, double *norm) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), jstr(f->info, "model"));
    XrErr e;
    Encoder *m = encoder_load_on(dir, be, &e);
    if (!m) xr_die("encoder_load_on %s (%s): %s", dir, ops_device_name(be->device), e.msg);
    if (encoder_set_precision(m, p, &e)) xr_die("encoder_set_precision: %s", e.msg);
    size_t np = (size_t)encoder_num_params(m);
    AdamW *o = fixture_adamw(be, f, m);
    Batch b = {f->B, f->T, f->ids, f->types, f->mask};
    float lg[64], dl[64];
    for (int s = 0; s < LC_STEPS; s++) {
        EncoderTrainStep st = {1, (uint64_t)s, NULL, 0};
        encoder_zero_grads(m);
        encoder_train_forward(m, &b, &st, lg);
        if (strcmp(jstr(f->info, "grad_loss"), "bce") == 0)
            losses[s] = loss_bce_with_logits(lg, f->labels, f->B, (float)jnum(f->info, "pos_weight"), 1.0f, dl);
        else
            losses[s] = loss_group_ce(lg, f->B / f->G, f->G, 1.0f, dl);
        double r = 0;
        for (int i = 0; i < f->B; i++) r += lg[i] * (double)lg[i];
        norm[s] = sqrt(r);
        encoder_train_backward(m, dl);
        optim_clip_grad_norm(be, encoder_grads(m), np, jnum(f->info, "max_norm"));
        adamw_step(o, encoder_params(m), encoder_grads(m), lr);
        encoder_weights_updated(m);
    }
    if (encoder_set_precision(m, XR_PREC_FP32, &e)) xr_die("encoder_set_precision: %s", e.msg);
    adamw_free(o);
    encoder_free(m);
}

/* The widest gap of the bf16 curve (trained at lr16) from the fp32 one in units of its band (<= 1: within), and
 * the fp32 run's last loss over its first (learned: < 0.5); prints a line. */
static double lc_compare(Backend *be32, Backend *be16, const char *name, const Fix *f, double grad_bound, double lr16,
                         double *fall) {
    double l32[LC_STEPS], r32[LC_STEPS], l16[LC_STEPS], r16[LC_STEPS];
    double lr = jnum(f->info, "lr"), c = strcmp(jstr(f->info, "grad_loss"), "bce") == 0 ? 1.0 : 2.0;
    lc_run(be32, f, XR_PREC_FP32, lr, l32, r32);
    lc_run(be16, f, XR_PREC_BF16, lr16, l16, r16);
    double worst = 0, gap = 0;
    int ws = 0;
    for (int s = 0; s < LC_STEPS; s++) {
        double band = c * grad_bound * l32[s] * r32[s], d = fabs(l16[s] - l32[s]);
        if (!(d / band <= worst)) worst = d / band, ws = s, gap = d;
    }
    *fall = l32[LC_STEPS - 1] / l32[0];
    printf("%-15s %d steps on %s, lr %g (bf16 at %g): loss fp32 %.4f -> %.4f, bf16 %.4f -> %.4f; widest gap %.2e at "
           "step %d, %.3f of its band (%.0f x %.3f x loss x ||logits||)\n",
           name, LC_STEPS, ops_device_name(be16->device), lr, lr16, l32[0], l32[LC_STEPS - 1], l16[0],
           l16[LC_STEPS - 1], gap, ws, worst, c, grad_bound);
    return worst;
}

#endif
