/* test_act_pack: the inference forward with packed (2-byte bf16) activation storage (ops_act_pack) on the CPU
 * backend's test capability, on the tiny transformers fixtures (tests/fixtures/model):
 * - the packed forward (scores, CLS and mean embeddings, hidden states) equals, bit for bit, the same encoder's
 *   forward on a backend emulating bf16 storage in fp32 words (ops_act_precision(BF16)): the values must not change,
 *   only their width; the logits, which the packed forward keeps fp32, equal the emulation's once rounded to bf16;
 * - it differs from the fp32 forward (something was rounded), within the bf16 step bound of test_bf16_train;
 * - a backend without the capability answers 4 and its forward is the fp32 one, bit for bit;
 * - ops_act_unpack: a copy in fp32, the exact widening of bf16 words when packed; a training op dies while packed;
 * - an evaluation inside fp32 training on a packing backend (either order) gives the packed scores and leaves the
 *   training step's bits unchanged: no legitimate path meets the dispatch guard;
 * - with a bf16 working copy registered too (the GPU's packed arithmetic: bf16 GEMM operands), the fixtures stay within
 *   3/4 of test_cuda_act_pack's tolerance against transformers (measured: at most 9.8e-3, bert_cls's logits).
 * What this proves is the model's side (byte offsets, unpacking, turning packing off before the fp32 ops); the GPU's
 * packed kernels are held to the CPU's by test_cuda_act_pack. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bf16_bits.h"
#include "cpu/cpu_math.h"
#include "cpu/cpu_ops.h"
#include "model.h"
#include "ops.h"
#include "testutil.h"

#define U (1.0 / 256.0)

typedef struct {
    char dir[512];
    int B, T, H, NL;
    int32_t *ids, *types, *mask;
} Case;

static void case_load(Case *c, const char *name) {
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s/%s", tu_path("fixtures/model"), name);
    char p[640];
    size_t n;
    snprintf(p, sizeof p, "%s/shape.i32", c->dir);
    int32_t *shape = tu_read_i32(p, &n);
    if (n != 5) xr_die("%s: shape.i32 has %zu entries, expected 5", name, n);
    c->B = shape[0], c->T = shape[1], c->H = shape[2], c->NL = shape[3];
    free(shape);
    snprintf(p, sizeof p, "%s/ids.i32", c->dir);
    c->ids = tu_read_i32(p, &n);
    snprintf(p, sizeof p, "%s/types.i32", c->dir);
    c->types = tu_read_i32(p, &n);
    snprintf(p, sizeof p, "%s/mask.i32", c->dir);
    c->mask = tu_read_i32(p, &n);
}

static void case_free(Case *c) { free(c->ids), free(c->types), free(c->mask); }

/* What a forward gives: logits (NL > 0), CLS and mean embeddings (normalised), hidden states. */
typedef struct {
    float *logits, *cls, *mean, *hidden;
} Out;

enum { MODE_FP32, MODE_EMUL, MODE_PACKED };

static void run(const Case *c, int mode, Out *o) {
    Backend *be = ops_backend_cpu(0);
    if (mode == MODE_PACKED) cpu_set_act_pack_able(be, 1);
    XrErr e;
    Encoder *m = encoder_load_on(c->dir, be, &e);
    if (!m) xr_die("encoder_load_on %s: %s", c->dir, e.msg);
    if (mode == MODE_EMUL) ops_act_precision(be, XR_PREC_BF16);
    Batch b = {c->B, c->T, c->ids, c->types, c->mask};
    size_t H = (size_t)c->H;
    o->logits = c->NL ? xr_malloc((size_t)c->B * c->NL * sizeof(float)) : NULL;
    o->cls = xr_malloc((size_t)c->B * H * sizeof(float));
    o->mean = xr_malloc((size_t)c->B * H * sizeof(float));
    o->hidden = xr_malloc((size_t)c->B * c->T * H * sizeof(float));
    if (c->NL) encoder_forward_score(m, &b, o->logits);
    encoder_forward_embed(m, &b, POOL_CLS, 1, o->cls);
    encoder_forward_embed(m, &b, POOL_MEAN, 1, o->mean);
    encoder_forward_hidden(m, &b, o->hidden);
    TU_CHECK(!be->act_packed, "%s: packing still on after the forward", c->dir);
    encoder_free(m);
    ops_backend_free(be);
}

static void out_free(Out *o) { free(o->logits), free(o->cls), free(o->mean), free(o->hidden); }

/* Elements of a and b whose bits differ (after rounding a to bf16 when round_a). */
static size_t ndiff(const float *a, const float *b, size_t n, int round_a) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        float x = round_a ? xr_bf16_round(a[i]) : a[i];
        k += memcmp(&x, &b[i], 4) != 0;
    }
    return k;
}

static double rel(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) d += (a[i] - b[i]) * (double)(a[i] - b[i]), s += b[i] * (double)b[i];
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

static void test_case(const char *name) {
    Case c;
    case_load(&c, name);
    Out f, em, pk;
    run(&c, MODE_FP32, &f);
    run(&c, MODE_EMUL, &em);
    run(&c, MODE_PACKED, &pk);
    size_t nl = (size_t)c.B * c.NL, ne = (size_t)c.B * c.H, nh = (size_t)c.B * c.T * c.H;
    struct { const char *what; const float *p, *e, *f; size_t n; int round; } v[] = {
        {"logits", pk.logits, em.logits, f.logits, nl, 1},
        {"CLS embeddings", pk.cls, em.cls, f.cls, ne, 0},
        {"mean embeddings", pk.mean, em.mean, f.mean, ne, 0},
        {"hidden states", pk.hidden, em.hidden, f.hidden, nh, 0},
    };
    /* the step bound of test_bf16_train for the model's depth (a forward passes about half a step's roundings) */
    int layers = 0;
    {
        XrErr e;
        Encoder *m = encoder_load(c.dir, &e);
        if (!m) xr_die("encoder_load %s: %s", c.dir, e.msg);
        layers = encoder_config(m)->layers;
        encoder_free(m);
    }
    double bound = 4.0 * sqrt(24.0 * layers) * U;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (!v[i].n) continue;
        size_t d = ndiff(v[i].p, v[i].e, v[i].n, v[i].round);
        double r = rel(v[i].p, v[i].f, v[i].n);
        TU_CHECK(d == 0, "%s %s: %zu of %zu packed values differ from the bf16-storage emulation's%s (%.3g relative)",
                 name, v[i].what, d, v[i].n, v[i].round ? " once rounded to bf16" : "", rel(v[i].p, v[i].e, v[i].n));
        TU_CHECK(r > 0 && r <= bound, "%s %s: packed vs fp32 %.3g relative (want > 0: bf16 storage, and <= %.3g)",
                 name, v[i].what, r, bound);
        printf("%-12s %-16s packed = emulation%s in %zu of %zu; vs fp32 %.2e relative (bound %.3f)\n", name,
               v[i].what, v[i].round ? " (rounded)" : "", v[i].n - d, v[i].n, r, bound);
    }
    if (nl) {
        /* the logits are fp32: not all of them bf16 numbers (bf16 logits would tie in rankings) */
        size_t off_grid = nl - ndiff(pk.logits, pk.logits, nl, 1);
        TU_CHECK(off_grid < nl, "%s: every packed logit is a bf16 number: the classifier stored bf16", name);
    }
    out_free(&f), out_free(&em), out_free(&pk);
    case_free(&c);
}

/* Without the capability the CPU backend declines: act_pack answers 4 and the forward is the fp32 one. */
static void test_declines(void) {
    Case c;
    case_load(&c, "bert_cls");
    Backend *be = ops_backend_cpu(0);
    TU_CHECK(ops_act_pack(be, 1) == 4 && !be->act_packed, "a CPU backend without the capability packs");
    ops_act_pack(be, 0);
    Out f, d;
    run(&c, MODE_FP32, &f);
    XrErr e;
    Encoder *m = encoder_load_on(c.dir, be, &e);
    if (!m) xr_die("encoder_load_on: %s", e.msg);
    Batch b = {c.B, c.T, c.ids, c.types, c.mask};
    d.logits = xr_malloc((size_t)c.B * c.NL * sizeof(float));
    encoder_forward_score(m, &b, d.logits);
    TU_CHECK(ndiff(d.logits, f.logits, (size_t)c.B * c.NL, 0) == 0, "the declined forward differs from fp32");
    free(d.logits);
    encoder_free(m);
    ops_backend_free(be);
    out_free(&f);
    case_free(&c);
    printf("declined: act_pack answers 4, the forward is the fp32 one\n");
}

static int dies(void (*fn)(Backend *), Backend *be) {
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        freopen("/dev/null", "w", stderr);
        fn(be);
        _exit(0);
    }
    int st = 0;
    waitpid(p, &st, 0);
    return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static float g_buf[64];
static void train_op(Backend *be) { ops_scale(be, g_buf, 64, 2.0f); }
static void unpack_overlap(Backend *be) { ops_act_unpack(be, g_buf + 8, g_buf, 32); }

static void test_unpack_and_guard(void) {
    Backend *be = ops_backend_cpu(1);
    float x[40], y[40];
    for (int i = 0; i < 40; i++) x[i] = (float)(i * 0.37 - 5.1);
    ops_act_unpack(be, y, x, 40);
    TU_CHECK(memcmp(x, y, sizeof x) == 0, "act_unpack in fp32 is not a copy");
    cpu_set_act_pack_able(be, 1);
    TU_CHECK(ops_act_pack(be, 1) == 2 && be->act_packed, "act_pack(1) with the capability does not pack");
    uint16_t h[40];
    for (int i = 0; i < 40; i++) h[i] = xr_bf16_bits(x[i]);
    ops_act_unpack(be, y, (const float *)h, 40);
    size_t bad = 0;
    for (int i = 0; i < 40; i++) bad += y[i] != xr_bf16_round(x[i]);
    TU_CHECK(bad == 0, "act_unpack of bf16 words: %zu of 40 wrong", bad);
    TU_CHECK(dies(train_op, be), "a training op ran while packed");
    TU_CHECK(dies(unpack_overlap, be), "act_unpack accepted overlapping out and x");
    TU_CHECK(ops_act_pack(be, 0) == 4 && !be->act_packed, "act_pack(0) leaves packing on");
    TU_CHECK(!dies(train_op, be), "a training op died after packing was turned off");
    ops_backend_free(be);
    printf("act_unpack: fp32 copy, bf16 widening exact; training ops die while packed; overlap refused\n");
}

/* Evaluation inside training (dist/evaluate.c between steps) of an fp32 encoder on a backend that packs: the scoring
 * forward packs (a pure inference encoder) and must end unpacked, so the training ops after it run (the dispatch
 * guard kills TRAIN ops only while packed) and give the bits they give without the evaluation; the scores are the
 * packed forward's of a fresh encoder. Steps without dropout, one fixed d loss / d logits. */
static void train_step(Encoder *m, const Batch *b, float *lg, float *g) {
    EncoderTrainStep st = {7, 0, NULL, 0};
    float dl[256];
    int n = b->B * encoder_config(m)->num_labels;
    if (n > 256) xr_die("train_step: %d logits, at most 256", n);
    encoder_zero_grads(m);
    encoder_train_forward(m, b, &st, lg);
    for (int i = 0; i < n; i++) dl[i] = (i % 2 ? 0.5f : -0.25f) / (float)n;
    encoder_train_backward(m, dl);
    memcpy(g, encoder_grads(m), (size_t)encoder_num_params(m) * sizeof(float));
}

static void test_eval_in_training(const char *name) {
    Case c;
    case_load(&c, name);
    Batch b = {c.B, c.T, c.ids, c.types, c.mask};
    size_t nl = (size_t)c.B * c.NL;
    Backend *be = ops_backend_cpu(0);
    cpu_set_act_pack_able(be, 1);
    XrErr e;
    Encoder *m = encoder_load_on(c.dir, be, &e);
    if (!m) xr_die("encoder_load_on %s: %s", c.dir, e.msg);
    size_t np = (size_t)encoder_num_params(m);
    float *g1 = xr_malloc(np * 4), *g2 = xr_malloc(np * 4), *l1 = xr_malloc(nl * 4), *l2 = xr_malloc(nl * 4);
    float *s1 = xr_malloc(nl * 4), *s2 = xr_malloc(nl * 4);
    train_step(m, &b, l1, g1);
    encoder_forward_score(m, &b, s1); /* the evaluation: packs, must unpack */
    TU_CHECK(!be->act_packed, "%s: packing still on after an evaluation inside training", name);
    train_step(m, &b, l2, g2); /* dies here if packing were left on */
    size_t dg = ndiff(g2, g1, np, 0), dlg = ndiff(l2, l1, nl, 0);
    TU_CHECK(dg == 0 && dlg == 0, "%s: the training step after an evaluation differs from the one before it (%zu of "
             "%zu gradients, %zu of %zu logits)", name, dg, np, dlg, nl);
    encoder_free(m);
    Out pk;
    run(&c, MODE_PACKED, &pk);
    TU_CHECK(ndiff(s1, pk.logits, nl, 0) == 0, "%s: the evaluation's scores are not the packed forward's", name);
    /* and the other order: an evaluation first, then training */
    m = encoder_load_on(c.dir, be, &e);
    if (!m) xr_die("encoder_load_on %s: %s", c.dir, e.msg);
    encoder_forward_score(m, &b, s2);
    train_step(m, &b, l2, g2);
    TU_CHECK(ndiff(s2, pk.logits, nl, 0) == 0 && ndiff(g2, g1, np, 0) == 0 && ndiff(l2, l1, nl, 0) == 0,
             "%s: evaluation then training on a packing backend: scores or the step's bits differ", name);
    printf("%-12s evaluation inside fp32 training on a packing backend: packed scores, then the step's bits unchanged "
           "(%zu gradients)\n", name, np);
    encoder_free(m);
    ops_backend_free(be);
    out_free(&pk);
    free(g1), free(g2), free(l1), free(l2), free(s1), free(s2);
    case_free(&c);
}

/* The GPU's packed arithmetic emulated on the CPU: GEMMs on bf16 weights (a working copy registered, as the GPU's
 * packed linear reads them) and packed storage, against the transformers fixtures within the tolerance
 * test_cuda_act_pack holds the GPU to (2e-2 absolute), with a quarter of it left for the GPU's own rounding (P and
 * the biases in bf16) and summation order. */
static void test_emulated_gpu(const char *name) {
    Case c;
    case_load(&c, name);
    char p[640];
    size_t n;
    snprintf(p, sizeof p, "%s/emb_cls.f32", c.dir);
    float *want_cls = tu_read_f32(p, &n), *want_lg = NULL;
    if (c.NL) {
        snprintf(p, sizeof p, "%s/logits.f32", c.dir);
        want_lg = tu_read_f32(p, &n);
    }
    Backend *be = ops_backend_cpu(0);
    cpu_set_act_pack_able(be, 1);
    XrErr e;
    Encoder *m = encoder_load_on(c.dir, be, &e);
    if (!m) xr_die("encoder_load_on %s: %s", c.dir, e.msg);
    ops_bf16_weights(be, encoder_params(m), (size_t)encoder_num_params(m));
    Batch b = {c.B, c.T, c.ids, c.types, c.mask};
    float *emb = xr_malloc((size_t)c.B * c.H * sizeof(float)), *lg = xr_malloc((size_t)c.B * 4 * sizeof(float));
    encoder_forward_embed(m, &b, POOL_CLS, 1, emb);
    double dc = 0, dl = 0;
    for (size_t i = 0; i < (size_t)c.B * c.H; i++) dc = fmax(dc, fabs(emb[i] - want_cls[i]));
    if (c.NL) {
        encoder_forward_score(m, &b, lg);
        for (size_t i = 0; i < (size_t)c.B * c.NL; i++) dl = fmax(dl, fabs(lg[i] - want_lg[i]));
    }
    TU_CHECK(dc <= 1.5e-2 && dl <= 1.5e-2, "%s: bf16 weights + packed storage vs transformers: CLS %.3g, logits %.3g "
             "(want <= 1.5e-2: 3/4 of the GPU test's 2e-2)", name, dc, dl);
    printf("%-12s bf16 weights + packed storage (the GPU's arithmetic) vs transformers: CLS %.2e, logits %.2e "
           "(GPU test's tolerance 2e-2)\n", name, dc, dl);
    ops_bf16_weights(be, NULL, 0);
    encoder_free(m);
    ops_backend_free(be);
    free(emb), free(lg), free(want_cls), free(want_lg);
    case_free(&c);
}

int main(void) {
    test_unpack_and_guard();
    test_declines();
    const char *cases[] = {"bert_cls", "xlmr_cls3", "xlmr_model", "bert_model"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_case(cases[i]);
    for (size_t i = 0; i < 3; i++) test_emulated_gpu(cases[i]);
    test_eval_in_training("bert_cls");
    test_eval_in_training("xlmr_cls3");
    return tu_finish("test_act_pack");
}
