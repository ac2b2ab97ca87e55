/* test_grad_model.c: the C trainer's math against PyTorch / transformers (fixtures from tests/gen_grad_fixtures.py)
 * on the tiny BERT and XLM-R sequence-classification models, dropout off: logits, both losses and their
 * d loss / d logits, the gradient of every parameter (1e-4 of each tensor's largest gradient), the
 * no-decay set, and the parameters after 3 AdamW steps with warmup + linear decay and clipping (1e-5).
 * A bare BertModel given a new head (its values loaded from the fixture) has the same gradients as
 * transformers'. Then, with dropout on: masks reproducible from (seed, step, example id), independent of
 * batch order, and the gradients still those of the loss (finite differences). New heads are drawn as
 * transformers initialises them. (Schedules, clipping and the losses alone: test_optim.c.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "loss.h"
#include "model.h"
#include "optim.h"
#include "grad_fixture.h"
#include "testutil.h"

#define PARAM_TOL 1e-5

static Encoder *load_model(const char *model) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), model);
    XrErr e;
    Encoder *m = encoder_load(dir, &e);
    if (!m) {
        fprintf(stderr, "encoder_load %s: %s\n", dir, e.msg);
        exit(1);
    }
    encoder_set_threads(m, 2);
    return m;
}

/* Forward + loss (the case's gradient loss) + backward into zeroed gradients; returns the loss. */
static double loss_and_grads(Encoder *m, const Fix *f, const char *loss, const EncoderTrainStep *st, float *logits) {
    Batch b = {f->B, f->T, f->ids, f->types, f->mask};
    float *dl = malloc((size_t)f->B * sizeof(float));
    encoder_zero_grads(m);
    encoder_train_forward(m, &b, st, logits);
    double l = strcmp(loss, "bce") == 0
                   ? loss_bce_with_logits(logits, f->labels, f->B, (float)jnum(f->info, "pos_weight"), 1.0f, dl)
                   : loss_group_ce(logits, f->B / f->G, f->G, 1.0f, dl);
    encoder_train_backward(m, dl);
    free(dl);
    return l;
}

static void test_case(const char *name, int family_bert) {
    Fix f;
    fix_load(&f, name);
    Encoder *m = load_model(jstr(f.info, "model"));
    TU_CHECK(encoder_config(m)->family == (family_bert ? ARCH_BERT : ARCH_XLMR), "%s: family", name);
    EncoderTrainStep st = {1, 0, NULL, 0};
    float *lg = malloc((size_t)f.B * sizeof(float)), *dl = malloc((size_t)f.B * sizeof(float));
    const char *gl = jstr(f.info, "grad_loss");
    loss_and_grads(m, &f, gl, &st, lg);
    double d_lg = tu_check_close("logits", lg, f.logits, (size_t)f.B, GRAD_TOL);

    /* both losses: on torch's logits (the loss functions alone) and on ours (the whole forward) */
    float pw = (float)jnum(f.info, "pos_weight");
    double want_bce = jnum(f.info, "loss_bce"), want_ce = jnum(f.info, "loss_ce");
    double l_bce = loss_bce_with_logits(f.logits, f.labels, f.B, pw, 1.0f, dl);
    double e_dbce = tu_check_close("dlogits bce", dl, f.dl_bce, (size_t)f.B, 1e-7);
    double l_ce = loss_group_ce(f.logits, f.B / f.G, f.G, 1.0f, dl);
    double e_dce = tu_check_close("dlogits ce", dl, f.dl_ce, (size_t)f.B, 1e-7);
    TU_CHECK(fabs(l_bce - want_bce) < 1e-6 && fabs(l_ce - want_ce) < 1e-6, "%s: losses on torch's logits: bce %.8f "
             "(want %.8f) ce %.8f (want %.8f)", name, l_bce, want_bce, l_ce, want_ce);
    double o_bce = loss_bce_with_logits(lg, f.labels, f.B, pw, 1.0f, NULL), o_ce = loss_group_ce(lg, f.B / f.G, f.G,
                                                                                                 1.0f, NULL);
    TU_CHECK(fabs(o_bce - want_bce) < 1e-5 * want_bce && fabs(o_ce - want_ce) < 1e-5 * want_ce,
             "%s: losses on our logits: bce %.8f (want %.8f) ce %.8f (want %.8f)", name, o_bce, want_bce, o_ce,
             want_ce);
    printf("%-15s logits %.2e; loss bce %.7f (torch %.7f) ce %.7f (torch %.7f); dlogits %.1e %.1e\n", name, d_lg,
           o_bce, want_bce, o_ce, want_ce, e_dbce, e_dce);
    int *zero = calloc((size_t)encoder_num_tensors(m), sizeof(int));
    check_grads(m, encoder_grads(m), &f, name, zero);

    /* gradients accumulate: a second backward of the same forward adds the same again */
    {
        Batch b = {f.B, f.T, f.ids, f.types, f.mask};
        size_t np = (size_t)encoder_num_params(m);
        float *g1 = malloc(np * sizeof(float));
        memcpy(g1, encoder_grads(m), np * sizeof(float));
        encoder_train_forward(m, &b, &st, lg);
        if (strcmp(gl, "bce") == 0)
            loss_bce_with_logits(lg, f.labels, f.B, pw, 1.0f, dl);
        else
            loss_group_ce(lg, f.B / f.G, f.G, 1.0f, dl);
        encoder_train_backward(m, dl);
        double worst = 0, gm = 0;
        for (size_t i = 0; i < np; i++) {
            worst = fmax(worst, fabs(encoder_grads(m)[i] - 2 * g1[i]));
            gm = fmax(gm, fabs(g1[i]));
        }
        TU_CHECK(worst <= 1e-6 * gm, "%s: accumulated gradients differ from twice one backward by %.3g", name, worst);
        free(g1);
    }

    /* the Trainer's no-decay set */
    const cJSON *nd = cJSON_GetObjectItemCaseSensitive(f.info, "no_decay");
    int n_nd = 0;
    for (int i = 0; i < encoder_num_tensors(m); i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        int listed = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, nd) listed |= strcmp(it->valuestring, t->name) == 0;
        TU_CHECK(listed == !encoder_tensor_decays(t), "%s: %s: decay %d, transformers' Trainer %s", name, t->name,
                 encoder_tensor_decays(t), listed ? "excludes it" : "decays it");
        n_nd += listed;
    }

    /* 3 AdamW steps: clip, step with the scheduled lr, as the Trainer does */
    int steps = (int)jnum(f.info, "steps");
    if (steps > 0) {
        AdamWConfig cfg = {jnum(f.info, "beta1"), jnum(f.info, "beta2"), jnum(f.info, "eps"),
                           jnum(f.info, "weight_decay")};
        size_t np = (size_t)encoder_num_params(m), n;
        AdamW *o = adamw_create(encoder_backend(m), 0, np, &cfg);
        for (int i = 0; i < encoder_num_tensors(m); i++) {
            const EncoderTensor *t = encoder_tensor(m, i);
            if (!encoder_tensor_decays(t)) adamw_no_decay(o, t->offset, t->numel);
        }
        float *norms = tu_read_f32(fpath(&f, "grad_norms.f32"), &n);
        float *lrs = tu_read_f32(fpath(&f, "lrs.f32"), &n);
        int warmup = (int)jnum(f.info, "warmup"), total = (int)jnum(f.info, "total");
        double max_norm = jnum(f.info, "max_norm"), base_lr = jnum(f.info, "lr");
        for (int s = 0; s < steps; s++) {
            loss_and_grads(m, &f, gl, &st, lg);
            double nrm = optim_clip_grad_norm(encoder_backend(m), encoder_grads(m), np, max_norm);
            double lr = sched_lr(SCHED_LINEAR, base_lr, s, warmup, total);
            TU_CHECK(fabs(nrm - norms[s]) <= 1e-5 * norms[s], "%s step %d: grad norm %.8g, torch %.8g", name, s, nrm,
                     norms[s]);
            TU_CHECK(fabs(lr - lrs[s]) <= 1e-7 * base_lr, "%s step %d: lr %.8g, torch %.8g", name, s, lr, lrs[s]);
            adamw_step(o, encoder_params(m), encoder_grads(m), lr);
        }
        float *want = tu_read_f32(fpath(&f, "params3.f32"), &n);
        const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(f.info, "tensors");
        const cJSON *it;
        size_t pos = 0;
        double worst = 0, zworst = 0, lr_sum = 0;
        for (int s = 0; s < steps; s++) lr_sum += sched_lr(SCHED_LINEAR, base_lr, s, warmup, total);
        const char *wn = "";
        cJSON_ArrayForEach(it, tensors) {
            const char *tn = cJSON_GetArrayItem(it, 0)->valuestring;
            const EncoderTensor *t = find_view(m, tn);
            size_t numel = (size_t)cJSON_GetArrayItem(it, 1)->valuedouble;
            /* Adam divides a gradient by its own magnitude: where it is rounding noise on both sides the update
             * is noise of size lr. Those tensors can only be held to that bound. */
            int z = t ? zero[t - encoder_tensor(m, 0)] : 0;
            if (t)
                for (size_t i = 0; i < numel; i++) {
                    double d = fabs(encoder_params(m)[t->offset + i] - want[pos + i]);
                    if (z)
                        zworst = fmax(zworst, d);
                    else if (d > worst)
                        worst = d, wn = tn;
                }
            pos += numel;
        }
        TU_CHECK(worst <= PARAM_TOL, "%s: parameters after %d AdamW steps differ by %.3g (in %s)", name, steps, worst,
                 wn);
        TU_CHECK(zworst <= 2.2 * lr_sum, "%s: zero-gradient tensors moved apart by %.3g, more than Adam's steps allow "
                 "(2 x %.3g)", name, zworst, lr_sum);
        printf("%-15s after %d AdamW steps (lr %.0e, wd %.2g, %d no-decay tensors, clip %.1f at norms %.4f %.4f "
               "%.4f): params max abs diff %.2e (zero-gradient tensors: %.1e, Adam noise bound %.1e)\n",
               name, steps, base_lr, cfg.weight_decay, n_nd, max_norm, norms[0], norms[1], norms[2], worst, zworst,
               2 * lr_sum);
        free(norms), free(lrs), free(want);
        adamw_free(o);
    }
    free(lg), free(dl), free(zero);
    encoder_free(m);
    fix_free(&f);
}

/* A bare BertModel given a new head by encoder_init_head (values overwritten by torch's from the fixture). */
static void test_bare_head(void) {
    Fix f;
    fix_load(&f, "bert_bare_head");
    Encoder *m = load_model(jstr(f.info, "model"));
    XrErr e;
    TU_CHECK(!encoder_config(m)->is_seq_cls, "bert_model is not a seq-cls model");
    TU_CHECK(encoder_init_head(m, 1, 11, &e) == 0, "encoder_init_head: %s", e.msg);
    TU_CHECK(encoder_init_head(m, 1, 11, &e) != 0, "a second head must be refused");
    const ModelConfig *c = encoder_config(m);
    TU_CHECK(c->is_seq_cls && c->num_labels == 1 && strcmp(c->architecture, "BertForSequenceClassification") == 0,
             "config after init_head: seq_cls %d labels %d %s", c->is_seq_cls, c->num_labels, c->architecture);
    const EncoderTensor *w = find_view(m, "classifier.weight"), *b = find_view(m, "classifier.bias");
    TU_CHECK(w && b && b->offset == w->offset + w->numel && b->offset + b->numel == (size_t)encoder_num_params(m),
             "classifier views at the end of the buffer");
    size_t n;
    float *head = tu_read_f32(fpath(&f, "head.f32"), &n);
    if (w && b && n == w->numel + b->numel) memcpy(encoder_params(m) + w->offset, head, n * sizeof(float));
    free(head);
    EncoderTrainStep st = {1, 0, NULL, 0};
    float *lg = malloc((size_t)f.B * sizeof(float));
    loss_and_grads(m, &f, jstr(f.info, "grad_loss"), &st, lg);
    double d = tu_check_close("bare+head logits", lg, f.logits, (size_t)f.B, GRAD_TOL);
    printf("%-15s logits %.2e\n", "bert_bare_head", d);
    int *zero = calloc((size_t)encoder_num_tensors(m), sizeof(int));
    check_grads(m, encoder_grads(m), &f, "bert_bare_head", zero); /* also: every name is the seq-cls name transformers uses */
    free(zero);
    free(lg);
    encoder_free(m);
    fix_free(&f);
}

/* New XLM-R head: normal(0, 0.02) weights, zero biases, reproducible from the seed; the model trains. */
static void test_init_head_xlmr(void) {
    Encoder *m = load_model("xlmr_model");
    int64_t before = encoder_num_params(m);
    XrErr e;
    TU_CHECK(encoder_init_head(m, 1, 7, &e) == 0, "encoder_init_head: %s", e.msg);
    int32_t H = encoder_config(m)->hidden;
    /* the checkpoint's pooler goes (XLMRobertaForSequenceClassification has none), the head comes */
    TU_CHECK(encoder_num_params(m) == before + H + 1, "params %lld after the head, %lld before",
             (long long)encoder_num_params(m), (long long)before);
    for (int i = 0; i < encoder_num_tensors(m); i++)
        TU_CHECK(strstr(encoder_tensor(m, i)->name, "pooler") == NULL, "XLM-R head: %s kept",
                 encoder_tensor(m, i)->name);
    const EncoderTensor *dw = find_view(m, "classifier.dense.weight"), *db = find_view(m, "classifier.dense.bias");
    const EncoderTensor *ow = find_view(m, "classifier.out_proj.weight"), *ob = find_view(m, "classifier.out_proj.bias");
    TU_CHECK(dw && db && ow && ob, "XLM-R head tensors");
    TU_CHECK(find_view(m, "roberta.embeddings.word_embeddings.weight") && find_view(m, "roberta.encoder.layer.0.output."
                                                                                         "LayerNorm.bias"),
             "base tensors renamed with roberta.");
    if (!dw || !db || !ow || !ob) {
        encoder_free(m);
        return;
    }
    const float *p = encoder_params(m);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < dw->numel; i++) s += p[dw->offset + i], s2 += (double)p[dw->offset + i] * p[dw->offset + i];
    double mean = s / dw->numel, sd = sqrt(s2 / dw->numel - mean * mean);
    int zero_b = 1;
    for (size_t i = 0; i < db->numel; i++) zero_b &= p[db->offset + i] == 0.0f;
    zero_b &= p[ob->offset] == 0.0f;
    TU_CHECK(fabs(mean) < 0.003 && fabs(sd - 0.02) < 0.002 && zero_b, "new dense weights mean %.4f std %.4f, biases "
             "zero %d", mean, sd, zero_b);
    printf("xlmr new head   dense weights mean %+.4f std %.4f (normal(0, 0.02)), biases 0\n", mean, sd);
    float first = p[dw->offset];
    Encoder *m2 = load_model("xlmr_model");
    encoder_init_head(m2, 1, 7, &e);
    TU_CHECK(memcmp(encoder_params(m2) + dw->offset, p + dw->offset, dw->numel * sizeof(float)) == 0,
             "same seed, same head");
    encoder_free(m2);
    m2 = load_model("xlmr_model");
    encoder_init_head(m2, 1, 8, &e);
    TU_CHECK(encoder_params(m2)[dw->offset] != first, "another seed, another head");
    encoder_free(m2);
    /* it trains: the training forward equals the inference forward with dropout off, gradients reach the head
     * and the embeddings */
    Fix f;
    fix_load(&f, "xlmr_cls");
    Batch b = {f.B, f.T, f.ids, f.types, f.mask};
    float *lg = malloc((size_t)f.B * 4), *sc = malloc((size_t)f.B * 4);
    EncoderTrainStep st = {1, 0, NULL, 0};
    loss_and_grads(m, &f, "ce", &st, lg);
    encoder_forward_score(m, &b, sc);
    double d = tu_check_close("new head: train forward = score", lg, sc, (size_t)f.B, 1e-5);
    const float *g = encoder_grads(m);
    double gw = 0, ge = 0;
    for (size_t i = 0; i < dw->numel; i++) gw = fmax(gw, fabs(g[dw->offset + i]));
    for (size_t i = 0; i < encoder_tensor(m, 0)->numel; i++) ge = fmax(ge, fabs(g[i]));
    TU_CHECK(gw > 0 && ge > 0 && isfinite(gw) && isfinite(ge), "new head gradients: dense %.3g embeddings %.3g", gw,
             ge);
    printf("xlmr new head   trains: logits = inference %.1e, max |grad| dense %.2e, word embeddings %.2e\n", d, gw, ge);
    free(lg), free(sc);
    fix_free(&f);
    encoder_free(m);
}

/* Dropout on: reproducible, a function of (seed, step, example id) not of batch order; gradients by finite
 * differences of the same (deterministic) loss. */
static void test_dropout(const char *name) {
    Fix f;
    fix_load(&f, name);
    Encoder *m = load_model(jstr(f.info, "model"));
    EncoderDropout dp = encoder_dropout(m);
    TU_CHECK(dp.hidden == 0.1f && dp.attention == 0.1f && dp.classifier == 0.1f, "%s: dropout from config.json %g %g "
             "%g", name, dp.hidden, dp.attention, dp.classifier);
    dp.hidden = dp.attention = dp.classifier = 0.2f; /* more dropped elements: a stronger test */
    encoder_set_dropout(m, dp);
    int B = f.B, T = f.T;
    uint64_t *ids = malloc((size_t)B * 8);
    for (int i = 0; i < B; i++) ids[i] = 1000 + 7 * (uint64_t)i;
    EncoderTrainStep st = {42, 3, ids, 1};
    Batch b = {B, T, f.ids, f.types, f.mask};
    float *l1 = malloc(B * 4), *l2 = malloc(B * 4), *l0 = malloc(B * 4);
    encoder_train_forward(m, &b, &st, l1);
    encoder_train_forward(m, &b, &st, l2);
    TU_CHECK(memcmp(l1, l2, B * 4) == 0, "%s: dropout forward not reproducible", name);
    EncoderTrainStep off = {42, 3, ids, 0};
    encoder_train_forward(m, &b, &off, l0);
    double moved = 0;
    for (int i = 0; i < B; i++) moved = fmax(moved, fabs(l1[i] - l0[i]));
    TU_CHECK(moved > 1e-3, "%s: dropout changes nothing (%.3g)", name, moved);
    EncoderTrainStep st4 = {42, 4, ids, 1};
    encoder_train_forward(m, &b, &st4, l2);
    double moved4 = 0;
    for (int i = 0; i < B; i++) moved4 = fmax(moved4, fabs(l1[i] - l2[i]));
    TU_CHECK(moved4 > 1e-4, "%s: the next step draws the same masks", name);
    /* rows 5, 2 alone in another batch, with their ids: the same logits */
    int pick[2] = {5, 2};
    int32_t *i2 = malloc((size_t)2 * T * 4), *t2 = malloc((size_t)2 * T * 4), *m2 = malloc((size_t)2 * T * 4);
    uint64_t id2[2];
    for (int k = 0; k < 2; k++) {
        memcpy(i2 + k * T, f.ids + pick[k] * T, T * 4);
        memcpy(t2 + k * T, f.types + pick[k] * T, T * 4);
        memcpy(m2 + k * T, f.mask + pick[k] * T, T * 4);
        id2[k] = ids[pick[k]];
    }
    Batch b2 = {2, T, i2, t2, m2};
    EncoderTrainStep s2 = {42, 3, id2, 1};
    encoder_train_forward(m, &b2, &s2, l2);
    double d_order = fmax(fabs(l2[0] - l1[5]), fabs(l2[1] - l1[2]));
    TU_CHECK(d_order < 1e-5, "%s: dropout depends on batch composition: %.3g", name, d_order);

    /* finite differences of the dropout loss for the largest gradient of every tensor */
    const char *gl = jstr(f.info, "grad_loss");
    loss_and_grads(m, &f, gl, &st, l1);
    size_t np = (size_t)encoder_num_params(m);
    float *g = malloc(np * 4);
    memcpy(g, encoder_grads(m), np * 4);
    float *p = encoder_params(m);
    double worst = 0, gmax = 0;
    const char *wn = "";
    int nchecked = 0;
    for (size_t j = 0; j < np; j++) gmax = fmax(gmax, fabs(g[j]));
    for (int i = 0; i < encoder_num_tensors(m); i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        size_t k = t->offset;
        for (size_t j = t->offset; j < t->offset + t->numel; j++)
            if (fabs(g[j]) > fabs(g[k])) k = j;
        /* the key biases' gradient is 0 in exact arithmetic (see check_grads): differences would measure noise */
        if (fabs(g[k]) < ZERO_REL * gmax) continue;
        nchecked++;
        float v = p[k];
        double h = 1e-2 * fmax(1.0, fabs(v));
        p[k] = (float)(v + h);
        encoder_train_forward(m, &b, &st, l2);
        double lp = strcmp(gl, "bce") == 0 ? loss_bce_with_logits(l2, f.labels, B, 5.0f, 1, NULL)
                                           : loss_group_ce(l2, B / f.G, f.G, 1, NULL);
        double hp = (double)p[k] - v;
        p[k] = (float)(v - h);
        encoder_train_forward(m, &b, &st, l2);
        double lm = strcmp(gl, "bce") == 0 ? loss_bce_with_logits(l2, f.labels, B, 5.0f, 1, NULL)
                                           : loss_group_ce(l2, B / f.G, f.G, 1, NULL);
        double hm = v - (double)p[k];
        p[k] = v;
        double fd = (lp - lm) / (hp + hm), err = fabs(fd - g[k]) / (fabs(g[k]) + 1e-3);
        if (err > worst) worst = err, wn = t->name;
    }
    TU_CHECK(worst < 5e-3, "%s: dropout gradients vs finite differences: relative error %.3g (in %s)", name, worst,
             wn);
    printf("%-15s dropout 0.2: reproducible, batch-order independent (%.1e), fd rel err over %d tensors %.2e (%s)\n",
           name, d_order, nchecked, worst, wn);
    free(g), free(ids), free(l0), free(l1), free(l2), free(i2), free(t2), free(m2);
    encoder_free(m);
    fix_free(&f);
}

/* The whole backward on 1 and 3 threads: every gradient bitwise equal where the GEMMs are xrank's own kernel
 * (it sums each output along k in one order whatever the split); reported otherwise. */
static void test_threads(void) {
    Fix f;
    fix_load(&f, "xlmr_cls");
    Encoder *m = load_model(jstr(f.info, "model"));
    EncoderTrainStep st = {3, 1, NULL, 1};
    float *lg = malloc((size_t)f.B * sizeof(float));
    size_t np = (size_t)encoder_num_params(m);
    float *g1 = malloc(np * sizeof(float));
    encoder_set_threads(m, 1);
    loss_and_grads(m, &f, "ce", &st, lg);
    memcpy(g1, encoder_grads(m), np * sizeof(float));
    encoder_set_threads(m, 3);
    loss_and_grads(m, &f, "ce", &st, lg);
    size_t differ = 0;
    for (size_t i = 0; i < np; i++) differ += g1[i] != encoder_grads(m)[i];
    const char *kernel = ops_cpu_gemm_kernel(encoder_backend(m));
    if (strcmp(kernel, "xrank-avx512") == 0)
        TU_CHECK(differ == 0, "gradients differ between 1 and 3 threads in %zu of %zu", differ, np);
    printf("threads 1 vs 3 (%s GEMMs, dropout on): %zu of %zu gradients differ\n", kernel, differ, np);
    free(lg), free(g1);
    encoder_free(m);
    fix_free(&f);
}

int main(void) {
    test_case("bert_cls", 1);
    test_case("xlmr_cls", 0);
    test_bare_head();
    test_init_head_xlmr();
    test_dropout("bert_cls");
    test_dropout("xlmr_cls");
    test_threads();
    return tu_finish("test_grad_model");
}
