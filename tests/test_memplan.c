/* test_memplan.c: memory planned, not discovered (issue 13), on the CPU backend with the tiny BERT and XLM-R models:
 * - the plan (encoder_train_plan + AdamW's moments) against the backend's allocation counter over a training step
 *   whose micro-batch reaches the plan's ceiling, a ragged second micro-batch and an evaluation batch: the
 *   measured peak within 10% below the plan, never above it;
 * - gradient checkpointing: the same gradients and updated parameters bit for bit (dropout on, two micro-batches
 *   accumulated), a lower measured peak, lower by what the plan says the activations shrink;
 * - bf16 precision (the CPU backend's emulation): the plan counts the weights' working copy (4 bytes a weight here,
 *   fp32 words holding bf16 values; 2 on a GPU) and nothing else changes: plan and measured peak both higher than
 *   the fp32 run's by exactly that, the peak still within 10% below the plan;
 * - the log-sum-exp training attention (encoder_set_attention_lse): plan and measured peak both lower by exactly
 *   the probabilities it no longer keeps (layers x S x L x NH x (L - 1) floats), the peak within 10% below the plan;
 * - bf16 with the saved activations packed (ops_act_region; the CPU backend's test capability stores them in 2 bytes
 *   as a GPU would): plan and measured peak both lower than the unpacked bf16 run's by exactly 2 bytes a saved
 *   activation element (emb, xs, qkv, ctx, v1, a, v2, f and the head's four at the ceiling), the peak within 10%
 *   below the plan;
 * - the counter itself: live bytes back to the weights after the workspaces are gone. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_ops.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "testutil.h"

enum { S = 6, L = 16, E = 4 };

static size_t fixture_layers_heads(const char *model);
static size_t fixture_saved_elems(const char *model);

typedef struct {
    size_t peak, plan, act_plan, copy;
    float *grads, *params;
} RunOut;

/* S sequences; lens[r] real tokens each (the rest padding), ids drawn from the vocabulary. */
static void make_batch(Batch *b, int32_t *ids, int32_t *mask, const int *lens, int n, TuRng *r, int vocab) {
    b->B = n, b->T = L, b->ids = ids, b->types = NULL, b->mask = mask;
    for (int i = 0; i < n; i++)
        for (int t = 0; t < L; t++) {
            ids[i * L + t] = t < lens[i] ? 5 + (int32_t)(tu_rng_unit(r) * (vocab - 6)) : 0;
            mask[i * L + t] = t < lens[i];
        }
}

static void run(const char *model, int ckpt, XrPrecision prec, int lse, int pack, RunOut *o) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), model);
    XrErr e;
    Encoder *m = encoder_load(dir, &e);
    TU_CHECK(m != NULL, "load %s: %s", dir, e.msg);
    if (!m) exit(1);
    encoder_set_threads(m, 2);
    Backend *be = encoder_backend(m);
    cpu_set_act_pack_able(be, pack);
    size_t np = (size_t)encoder_num_params(m);
    encoder_set_gradient_checkpointing(m, ckpt);
    encoder_set_attention_lse(m, lse);
    TU_CHECK(encoder_set_precision(m, prec, &e) == 0, "encoder_set_precision: %s", e.msg);
    encoder_set_batch_limits(m, S, E, L);
    EncoderMemPlan p;
    encoder_train_plan(m, S, E, L, &p);
    p.moments = 2 * np * sizeof(float);
    o->plan = encoder_plan_total(&p), o->act_plan = p.activations, o->copy = p.weights_copy;
    size_t want_copy = prec == XR_PREC_BF16 ? np * sizeof(float) : 0;
    TU_CHECK(p.weights_copy == want_copy, "%s: the plan counts %zu bytes of bf16 weights copy, want %zu (%zu weights)",
             model, p.weights_copy, want_copy, np);

    AdamWConfig ac = adamw_defaults();
    ac.weight_decay = 0.01;
    AdamW *opt = adamw_create(be, 0, np, &ac);
    TuRng r = {12345};
    int vocab = encoder_config(m)->vocab_size;
    int32_t ids[E > S ? E * L : S * L], mask[E > S ? E * L : S * L];
    int full[S], ragged[S] = {1, 16, 7, 15, 2, 9};
    for (int i = 0; i < S; i++) full[i] = L;
    uint64_t ex[S];
    float logits[S], dl[S];
    encoder_zero_grads(m);
    for (int mb = 0; mb < 2; mb++) { /* a full micro-batch (the plan's ceiling), then a ragged one */
        Batch b;
        make_batch(&b, ids, mask, mb == 0 ? full : ragged, S, &r, vocab);
        for (int i = 0; i < S; i++) ex[i] = (uint64_t)(mb * S + i);
        EncoderTrainStep st = {7, 3, ex, 1};
        encoder_train_forward(m, &b, &st, logits);
        for (int i = 0; i < S; i++) dl[i] = 0.1f * logits[i] - 0.05f * (float)i; /* any fixed d loss / d logits */
        encoder_train_backward(m, dl);
    }
    o->grads = malloc(np * sizeof(float));
    ops_to_host(be, o->grads, encoder_grads(m), np * sizeof(float));
    adamw_step(opt, encoder_params(m), encoder_grads(m), 1e-3);
    encoder_weights_updated(m);
    o->params = malloc(np * sizeof(float));
    ops_to_host(be, o->params, encoder_params(m), np * sizeof(float));
    { /* an evaluation batch at its ceiling */
        Batch b;
        int ev[E] = {L, L, L, L};
        make_batch(&b, ids, mask, ev, E, &r, vocab);
        float sc[E];
        encoder_forward_score(m, &b, sc);
    }
    XrMemStats ms;
    ops_mem_stats(be, &ms);
    o->peak = ms.peak;
    TU_CHECK(ms.peak <= o->plan && ms.peak >= o->plan - o->plan / 10,
             "%s%s%s: measured peak %zu bytes, plan %zu (weights %zu bf16 copy %zu moments %zu grads %zu activations "
             "%zu workspace %zu eval %zu): not within 10%% below it", model, ckpt ? " + checkpointing" : "",
             prec == XR_PREC_BF16 ? (pack ? " bf16 packed" : " bf16") : "", ms.peak, o->plan, p.weights, p.weights_copy, p.moments, p.grads,
             p.activations, p.workspace, p.eval);
    printf("%-9s %-22s plan %8zu B (activations %7zu), measured peak %8zu B (%.2f%% of the plan), %lld allocations\n",
           model, prec == XR_PREC_BF16 ? (pack ? "bf16, packed activations" : "bf16, activations kept")
                  : ckpt ? "gradient checkpointing" : "all activations kept",
           o->plan, p.activations, ms.peak, 100.0 * (double)ms.peak / (double)o->plan, (long long)ms.allocs);
    adamw_free(opt);
    encoder_free(m); /* its own backend goes with it: the counter is released too */
}

static void test_model(const char *model) {
    RunOut a, b, c, d, k;
    run(model, 0, XR_PREC_FP32, 0, 0, &a);
    run(model, 1, XR_PREC_FP32, 0, 0, &b);
    run(model, 0, XR_PREC_BF16, 0, 0, &c);
    run(model, 0, XR_PREC_FP32, 1, 0, &d);
    run(model, 0, XR_PREC_BF16, 0, 1, &k);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), model);
    XrErr e;
    Encoder *m = encoder_load(dir, &e);
    size_t np = (size_t)encoder_num_params(m);
    encoder_free(m);
    size_t gdiff = 0, pdiff = 0;
    for (size_t i = 0; i < np; i++) gdiff += memcmp(&a.grads[i], &b.grads[i], sizeof(float)) != 0,
                                     pdiff += memcmp(&a.params[i], &b.params[i], sizeof(float)) != 0;
    TU_CHECK(gdiff == 0 && pdiff == 0, "%s: gradient checkpointing changed %zu gradients and %zu parameters of %zu",
             model, gdiff, pdiff, np);
    TU_CHECK(b.peak < a.peak, "%s: checkpointing did not lower the peak (%zu vs %zu)", model, b.peak, a.peak);
    TU_CHECK(a.peak - b.peak == a.act_plan - b.act_plan,
             "%s: the peak fell by %zu bytes, the plan's activations by %zu", model, a.peak - b.peak,
             a.act_plan - b.act_plan);
    printf("%-9s checkpointing: gradients and parameters identical (%zu values), activations %zu -> %zu B (-%.0f%%)\n",
           model, np, a.act_plan, b.act_plan, 100.0 * (1.0 - (double)b.act_plan / (double)a.act_plan));
    TU_CHECK(c.copy > 0 && c.plan - a.plan == c.copy && c.peak - a.peak == c.copy,
             "%s: bf16 raised the plan by %zu bytes and the measured peak by %zu, the working copy is %zu", model,
             c.plan - a.plan, c.peak - a.peak, c.copy);
    printf("%-9s bf16: the weights' working copy %zu B, plan +%zu B, measured peak +%zu B\n", model, c.copy,
           c.plan - a.plan, c.peak - a.peak);
    /* the log-sum-exp attention: per layer NH floats a token instead of NH L (S L NH (L - 1) floats less) */
    size_t att_drop = (size_t)fixture_layers_heads(model) * S * L * (L - 1) * sizeof(float);
    TU_CHECK(a.act_plan - d.act_plan == att_drop && a.peak - d.peak == att_drop,
             "%s: attention lse lowered the plan's activations by %zu bytes and the peak by %zu, want %zu", model,
             a.act_plan - d.act_plan, a.peak - d.peak, att_drop);
    printf("%-9s attention lse: activations %zu -> %zu B (-%.0f%%), measured peak -%zu B\n", model, a.act_plan,
           d.act_plan, 100.0 * (1.0 - (double)d.act_plan / (double)a.act_plan), a.peak - d.peak);
    free(a.grads), free(a.params), free(b.grads), free(b.params), free(c.grads), free(c.params);
    free(d.grads), free(d.params);
    /* packed: 2 bytes less for every saved activation element */
    size_t pack_drop = fixture_saved_elems(model) * 2;
    TU_CHECK(c.act_plan - k.act_plan == pack_drop && c.peak - k.peak == pack_drop,
             "%s: packing the saved activations lowered the plan's activations by %zu bytes and the peak by %zu, want "
             "%zu", model, c.act_plan - k.act_plan, c.peak - k.peak, pack_drop);
    printf("%-9s bf16 packed: activations %zu -> %zu B (-%.0f%%), measured peak -%zu B\n", model, c.act_plan,
           k.act_plan, 100.0 * (1.0 - (double)k.act_plan / (double)c.act_plan), c.peak - k.peak);
    free(k.grads), free(k.params);
}

/* layers x heads of a fixture model */
static size_t fixture_layers_heads(const char *model) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), model);
    XrErr e;
    Encoder *m = encoder_load(dir, &e);
    if (!m) xr_die("load %s: %s", dir, e.msg);
    size_t r = (size_t)encoder_config(m)->layers * (size_t)encoder_config(m)->heads;
    encoder_free(m);
    return r;
}

/* The saved activations' elements of a fixture model at the plan's ceiling (S sequences of L tokens, every layer
 * kept): emb, xs per layer, qkv, ctx, v1, a, v2 and f per layer, and the head's h0, hd, y, yd. */
static size_t fixture_saved_elems(const char *model) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), model);
    XrErr e;
    Encoder *m = encoder_load(dir, &e);
    if (!m) xr_die("load %s: %s", dir, e.msg);
    const ModelConfig *c = encoder_config(m);
    size_t T = (size_t)S * L, H = (size_t)c->hidden, I = (size_t)c->intermediate, Ly = (size_t)c->layers;
    encoder_free(m);
    return T * H + Ly * T * H + Ly * (T * 3 * H + 4 * T * H + T * I) + 4 * (size_t)S * H;
}

/* The counter by itself: live goes up and down by what is allocated, peak stays, reset brings it to live. */
static void test_counter(void) {
    Backend *be = ops_backend_cpu(1);
    void *x = ops_alloc(be, 1000), *y = ops_alloc(be, 24);
    XrMemStats s;
    ops_mem_stats(be, &s);
    TU_CHECK(s.live == 1024 && s.peak == 1024 && s.allocs == 2, "live %zu peak %zu allocs %lld", s.live, s.peak,
             (long long)s.allocs);
    ops_free(be, x);
    void *many[600];
    for (int i = 0; i < 600; i++) many[i] = ops_alloc(be, (size_t)i + 1); /* grows the table, collides */
    for (int i = 0; i < 600; i += 2) ops_free(be, many[i]);
    ops_mem_stats(be, &s);
    size_t want = 24;
    for (int i = 1; i < 600; i += 2) want += (size_t)i + 1;
    TU_CHECK(s.live == want, "live %zu after frees, want %zu", s.live, want);
    for (int i = 1; i < 600; i += 2) ops_free(be, many[i]);
    ops_free(be, y);
    ops_mem_stats(be, &s);
    TU_CHECK(s.live == 0 && s.peak >= 1024, "live %zu peak %zu at the end", s.live, s.peak);
    ops_mem_reset_peak(be);
    ops_mem_stats(be, &s);
    TU_CHECK(s.peak == 0, "peak %zu after reset with nothing held", s.peak);
    TU_CHECK(ops_mem_available(be) > 0, "no memory available?");
    ops_backend_free(be);
}

int main(void) {
    test_counter();
    test_model("bert_cls");
    test_model("xlmr_cls");
    return tu_finish("test_memplan");
}
