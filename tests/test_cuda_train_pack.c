/* test_cuda_train_pack: packed training storage on the GPU (issue 13, ops_act_region under XR_CUDA_TRAIN_PACK=1),
 * the ops converted so far, each against the same op on the same GPU with the same bf16 values in fp32 words (the
 * unpacked bf16 storage, itself held to the CPU by test_cuda_bf16_train): a layout change, so the same bits.
 * - act_region: declined with XR_CUDA_TRAIN_PACK=0 and without the bf16 working copy, accepted with =1 and the copy;
 * - dropout_add (dropout on, ragged rows, H not a multiple of 4) with packed out / x / res in the model's mixes: the
 *   stored bf16 words equal the unpacked output (stored rounded under act_precision BF16), guards untouched;
 * - linear_backward with a packed saved x: dx, dW, db the same bits, one activation cast fewer (x is the operand);
 * - layernorm_backward, gelu_backward, gelu_bias_backward, tanh_backward, dropout_add_layernorm_backward with their
 *   saved activation packed: the same bits;
 * - embed, layernorm (out, x, res packed), gelu, tanh, pool_first in the forward's mixes, and the backward's GELU
 *   recomputation (packed f, fp32 g): the same bits;
 * - linear through the working copy, packed x into an fp32 or a packed y (one cast fewer), and linear_gelu with a
 *   and f packed: the same bits;
 * - dropout_add_layernorm with out and v packed, x fp32, the residual packed or fp32: out, v, mean, rstd the same;
 * - the training attention, exact and GEMM paths (the GEMMs also in chunks of 5 blocks), saved probabilities and
 *   log-sum-exps, all rows and the first row, dropout on, lengths 1, 63, 64, 65, 127, 128, 129: with qkv and the
 *   context packed, qkv alone and the context alone, context, att / lse and the backward's dqkv the same bits;
 * - act_unpack of a region: the exact widening;
 * - an op not built for a mix (layernorm, packed x into an fp32 out) dies instead of reading bf16 words as fp32;
 * - the model's bf16 step (bert_cls, xlmr_cls fixtures; 2 AdamW steps of 2 ragged micro-batches, dropout on; with and
 *   without gradient checkpointing and the log-sum-exp attention): every logit, the gradients and the parameters
 *   the same bits packed as unpacked, 12 regions held, a lower measured peak (test_cuda_bf16_train holds the packed
 *   peak to the plan).
 * Skipped without a GPU. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bf16_bits.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "testutil.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

#ifdef XR_HAVE_CUDA
#define XR_CUDA_TEST_SEED 0x243F6A8885A308D3ull
#include "cuda_testutil.h"

#define GUARD 32         /* poisoned bf16 words after each packed output */
#define POISON 0x7fc0u   /* a bf16 quiet NaN */

enum { S = 5, H = 100, NO = 72 };
static const int32_t lens[S] = {1, 63, 64, 65, 107};

static float wide(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* An activation of n elements with random bf16 values in [lo, hi): packed (a registered region of n bf16 words and
 * GUARD poisoned ones after it) and unpacked (fp32 words holding the same values) on the device, and on the host. */
typedef struct {
    size_t n;
    uint16_t *h16;
    float *h32;
    void *d16;
    float *d32;
} Act;

static void act_make(Backend *g, Act *a, size_t n, float lo, float hi) {
    a->n = n;
    a->h16 = xr_malloc((n + GUARD) * 2);
    a->h32 = xr_malloc(n * 4);
    for (size_t i = 0; i < n + GUARD; i++) a->h16[i] = i < n ? xr_bf16_bits(urand(lo, hi)) : POISON;
    for (size_t i = 0; i < n; i++) a->h32[i] = wide(a->h16[i]);
    a->d16 = up(g, a->h16, (n + GUARD) * 2);
    a->d32 = up(g, a->h32, n * 4);
    TU_CHECK(ops_act_region(g, a->d16, n * 2) == 2, "act_region declined %zu bytes", n * 2);
}

static void act_free(Backend *g, Act *a) {
    ops_act_region(g, a->d16, 0);
    ops_free(g, a->d16), ops_free(g, a->d32);
    free(a->h16), free(a->h32);
}

/* The packed output's first n words, widened, against the unpacked output's fp32 words: the same bits; the guard
 * words past the region still poisoned. */
static void same_packed(Backend *g, const char *what, const Act *p, const float *d32, size_t n) {
    uint16_t *h = xr_malloc((p->n + GUARD) * 2);
    float *f = xr_malloc(n * 4);
    ops_to_host(g, h, p->d16, (p->n + GUARD) * 2);
    ops_to_host(g, f, d32, n * 4);
    size_t diff = 0, guard = 0, first = n;
    for (size_t i = 0; i < n; i++) {
        float w = wide(h[i]);
        if (memcmp(&w, &f[i], 4) != 0) diff++, first = first < n ? first : i;
    }
    for (size_t i = p->n; i < p->n + GUARD; i++) guard += h[i] != POISON;
    TU_CHECK(diff == 0, "%s: %zu of %zu packed words differ from the unpacked output (first at %zu: %.9g vs %.9g)",
             what, diff, n, first, first < n ? (double)wide(h[first]) : 0.0, first < n ? (double)f[first] : 0.0);
    TU_CHECK(guard == 0, "%s: %zu guard words past the packed output were written", what, guard);
    printf("%-52s n=%-7zu packed == unpacked: %zu differ\n", what, n, diff);
    free(h), free(f);
}

static void same(Backend *g, const char *what, const float *a, const float *b, size_t n) {
    same_bits(g, what, a, b, n);
    printf("%-52s n=%-7zu packed == unpacked (same_bits)\n", what, n);
}

/* A bf16-mode backend with XR_CUDA_TRAIN_PACK=pack (read when the backend is made). */
static Backend *backend(int pack, XrGemmMode mode) {
    setenv("XR_CUDA_TRAIN_PACK", pack ? "1" : "0", 1);
    Backend *g = cuda_ops_backend(0);
    cuda_ops_set_gemm_mode(g, mode);
    unsetenv("XR_CUDA_TRAIN_PACK");
    return g;
}

/* The training attention (the backend's path: exact or the GEMMs) on packed storage, forward and backward, saved
 * probabilities and log-sum-exps, all rows and the first row only, dropout on, in bf16 training (working copy
 * registered, storage BF16 in the forward), on ragged lengths around the kernels' 32-lane and 4-warp steps and the GEMM
 * path's 8-row padding (1, 63, 64, 65, 127, 128, 129): every mix of qkv and the context (qkv packed and the context
 * packed, qkv alone, the context alone) against the op on the unpacked values: context, att / lse and dqkv the same
 * bits. The kernels read qkv and store the context as they lie (no widened copy). */
static void check_attention(Backend *g, const char *path) {
    enum { NH = 4, DH = 25, SA = 7 };
    static const int32_t alens[SA] = {1, 63, 64, 65, 127, 128, 129};
    int32_t off[SA + 1] = {0};
    size_t sq = 0;
    int max_len = 0;
    for (int s = 0; s < SA; s++) {
        off[s + 1] = off[s] + alens[s];
        sq += (size_t)alens[s] * alens[s];
        max_len = alens[s] > max_len ? alens[s] : max_len;
    }
    int N = off[SA];
    int32_t *doff = up(g, off, sizeof off);
    uint64_t ids[SA] = {21, 22, 23, 24, 25, 26, 27};
    uint64_t *dids = up(g, ids, sizeof ids);
    XrDropout d = {0.1f, 0x5678, dids};
    float *hw = rnd(64, -1, 1), *dw = up(g, hw, 64 * 4);
    ops_bf16_weights(g, dw, 64); /* bf16 training: the attention's products take bf16 operands */
    size_t nq = (size_t)N * 3 * H;
    Act q, o;
    act_make(g, &q, nq, -2, 2), act_make(g, &o, (size_t)N * H, -1, 1);
    uint16_t *poison = xr_malloc(((size_t)N * H + GUARD) * 2);
    for (size_t i = 0; i < (size_t)N * H + GUARD; i++) poison[i] = POISON;
    float *hdo = rnd((size_t)N * H, -1, 1), *dout = up(g, hdo, (size_t)N * H * 4);
    static const char *mix[4] = {"", " qkv+ctx packed", " qkv packed", " ctx packed"};
    for (int lse = 0; lse < 2; lse++)
        for (int fo = 0; fo < 2; fo++) {
            size_t na = lse ? (size_t)(fo ? SA : N) * NH : (size_t)NH * (fo ? (size_t)N : sq);
            size_t no = (size_t)(fo ? SA : N) * H;
            float *a[4], *o32[4], *dq[2];
            char what[128];
            /* k: 0 unpacked, 1 qkv and the context packed, 2 qkv packed, 3 the context packed */
            ops_act_precision(g, XR_PREC_BF16);
            for (int k = 0; k < 4; k++) {
                int pq = k == 1 || k == 2, po = k == 1 || k == 3;
                a[k] = dev_nan(g, na), o32[k] = po ? NULL : dev_nan(g, no);
                if (po) /* nothing left from before */
                    cuda_ops_to_device(g, o.d16, poison, ((size_t)N * H + GUARD) * 2);
                float *out = po ? (float *)o.d16 : o32[k];
                const float *qv = pq ? (const float *)q.d16 : q.d32;
                if (lse)
                    ops_attention_train_lse(g, out, a[k], qv, doff, SA, max_len, NH, DH, fo, &d);
                else
                    ops_attention_train(g, out, a[k], qv, doff, SA, max_len, NH, DH, fo, &d);
                if (!k) continue;
                snprintf(what, sizeof what, "%s attention%s%s%s: context", path, lse ? " lse" : "", fo ? " first" : "",
                         mix[k]);
                if (po)
                    same_packed(g, what, &o, o32[0], no);
                else
                    same(g, what, o32[k], o32[0], no);
                snprintf(what, sizeof what, "%s attention%s%s%s: %s", path, lse ? " lse" : "", fo ? " first" : "",
                         mix[k], lse ? "lse" : "att");
                same(g, what, a[k], a[0], na);
            }
            ops_act_precision(g, XR_PREC_FP32);
            for (int k = 0; k < 2; k++) {
                dq[k] = dev_nan(g, nq);
                const float *qv = k ? (const float *)q.d16 : q.d32;
                if (lse)
                    ops_attention_backward_lse(g, dq[k], dout, qv, a[0], doff, SA, max_len, NH, DH, fo, &d);
                else
                    ops_attention_backward(g, dq[k], dout, qv, a[0], doff, SA, max_len, NH, DH, fo, &d);
            }
            snprintf(what, sizeof what, "%s attention%s%s backward: dqkv", path, lse ? " lse" : "", fo ? " first" : "");
            same(g, what, dq[1], dq[0], nq);
            for (int k = 0; k < 4; k++) {
                ops_free(g, a[k]);
                if (o32[k]) ops_free(g, o32[k]);
            }
            for (int k = 0; k < 2; k++) ops_free(g, dq[k]);
        }
    act_free(g, &q), act_free(g, &o);
    ops_bf16_weights(g, NULL, 0);
    ops_free(g, dw), ops_free(g, dout), ops_free(g, doff), ops_free(g, dids);
    free(hw), free(hdo), free(poison);
}

/* The model's step on the GPU: two AdamW steps of two ragged micro-batches (dropout on) in bf16 on a fresh bf16-mode
 * backend, the saved activations packed (XR_CUDA_TRAIN_PACK=1) or not: every forward's logits, the first step's
 * gradients, the parameters after the second, the regions held during the run, the measured peak. */
enum { MS = 6, ML = 16 };
typedef struct {
    float logits[4 * MS], *grads, *params;
    int regions;
    size_t np, peak;
} ModelRun;

static void model_run(const char *model, int pack, int ckpt, int lse, ModelRun *o) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), model);
    XrErr e;
    setenv("XR_CUDA_TRAIN_PACK", pack ? "1" : "0", 1);
    Backend *be = ops_backend_create(XR_DEV_CUDA, 0, XR_PREC_BF16, 0, &e);
    unsetenv("XR_CUDA_TRAIN_PACK");
    if (!be) xr_die("ops_backend_create(cuda): %s", e.msg);
    Encoder *m = encoder_load_on(dir, be, &e);
    if (!m) xr_die("encoder_load_on %s: %s", dir, e.msg);
    encoder_set_gradient_checkpointing(m, ckpt);
    encoder_set_attention_lse(m, lse);
    TU_CHECK(encoder_set_precision(m, XR_PREC_BF16, &e) == 0, "encoder_set_precision: %s", e.msg);
    size_t np = (size_t)encoder_num_params(m);
    AdamWConfig ac = adamw_defaults();
    AdamW *opt = adamw_create(be, 0, np, &ac);
    TuRng r = {4242};
    int vocab = encoder_config(m)->vocab_size, lens[2][MS] = {{16, 16, 16, 16, 16, 16}, {1, 16, 7, 15, 2, 9}};
    int32_t ids[MS * ML], mask[MS * ML];
    uint64_t ex[MS];
    float dl[MS];
    o->np = np, o->regions = -1;
    for (int s = 0; s < 2; s++) {
        encoder_zero_grads(m);
        for (int mb = 0; mb < 2; mb++) {
            for (int i = 0; i < MS; i++) {
                for (int t = 0; t < ML; t++) {
                    ids[i * ML + t] = t < lens[mb][i] ? 5 + (int32_t)(tu_rng_unit(&r) * (vocab - 6)) : 0;
                    mask[i * ML + t] = t < lens[mb][i];
                }
                ex[i] = (uint64_t)(mb * MS + i);
            }
            Batch b = {MS, ML, ids, NULL, mask};
            EncoderTrainStep st = {9, (uint64_t)s, ex, 1};
            float *lg = o->logits + (s * 2 + mb) * MS;
            encoder_train_forward(m, &b, &st, lg);
            if (o->regions < 0) o->regions = be->n_act_regions;
            for (int i = 0; i < MS; i++) dl[i] = 0.1f * lg[i] - 0.05f * (float)i;
            encoder_train_backward(m, dl);
        }
        if (s == 0) {
            o->grads = xr_malloc(np * 4);
            ops_to_host(be, o->grads, encoder_grads(m), np * 4);
        }
        adamw_step(opt, encoder_params(m), encoder_grads(m), 1e-3);
        encoder_weights_updated(m);
    }
    o->params = xr_malloc(np * 4);
    ops_to_host(be, o->params, encoder_params(m), np * 4);
    ops_sync(be);
    XrMemStats ms;
    ops_mem_stats(be, &ms);
    o->peak = ms.peak;
    adamw_free(opt);
    encoder_free(m);
    ops_backend_free(be);
}

static size_t differ(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], 4) != 0;
    return d;
}

static void check_model(const char *model) {
    for (int ck = 0; ck < 2; ck++)
        for (int lse = 0; lse < 2; lse++) {
            ModelRun u, p;
            model_run(model, 0, ck, lse, &u);
            model_run(model, 1, ck, lse, &p);
            size_t dlg = differ(u.logits, p.logits, 4 * MS), dg = differ(u.grads, p.grads, u.np),
                   dp = differ(u.params, p.params, u.np);
            const char *how = ck ? (lse ? "checkpointing + lse" : "checkpointing") : (lse ? "lse" : "all kept");
            TU_CHECK(u.regions == 0 && p.regions == 12, "%s %s: packed regions %d unpacked, %d packed (want 0, 12)",
                     model, how, u.regions, p.regions);
            TU_CHECK(dlg == 0 && dg == 0 && dp == 0, "%s %s: the packed GPU step differs from the unpacked one: %zu of "
                     "%d logits, %zu of %zu gradients, %zu of %zu parameters", model, how, dlg, 4 * MS, dg, u.np, dp,
                     u.np);
            TU_CHECK(p.peak < u.peak, "%s %s: packed peak %zu bytes, not below the unpacked %zu", model, how, p.peak,
                     u.peak);
            printf("model %-9s %-20s packed step: %zu of %d logits, %zu of %zu gradients, %zu of %zu parameters "
                   "differ; peak %zu -> %zu B\n", model, how, dlg, 4 * MS, dg, u.np, dp, u.np, u.peak, p.peak);
            free(u.grads), free(u.params), free(p.grads), free(p.params);
        }
}

static void check_answers(void) {
    Backend *off = backend(0, XR_GEMM_BF16), *on = backend(1, XR_GEMM_BF16);
    float *w = ops_alloc(on, 64 * 4), *w2 = ops_alloc(off, 64 * 4);
    ops_zero(on, w, 64), ops_zero(off, w2, 64);
    TU_CHECK(ops_act_region(on, NULL, 0) == 4, "XR_CUDA_TRAIN_PACK=1 without a working copy: act_region agrees");
    ops_bf16_weights(on, w, 64), ops_bf16_weights(off, w2, 64);
    TU_CHECK(ops_act_region(off, NULL, 0) == 4, "XR_CUDA_TRAIN_PACK=0: act_region agrees to pack");
    TU_CHECK(ops_act_region(on, NULL, 0) == 2, "XR_CUDA_TRAIN_PACK=1 with a working copy: act_region declines");
    printf("act_region: 4 with XR_CUDA_TRAIN_PACK=0, 4 without a working copy, 2 with =1 and the copy\n");
    ops_bf16_weights(on, NULL, 0), ops_bf16_weights(off, NULL, 0);
    ops_free(on, w), ops_free(off, w2);
    ops_backend_free(off), ops_backend_free(on);
}

static void check_ops(Backend *g) {
    int32_t off[S + 1] = {0};
    for (int s = 0; s < S; s++) off[s + 1] = off[s] + lens[s];
    int N = off[S];
    size_t nh = (size_t)N * H;
    int32_t *doff = up(g, off, sizeof off);
    uint64_t ids[S] = {11, 12, 13, 14, 15};
    uint64_t *dids = up(g, ids, sizeof ids);
    XrDropout d = {0.1f, 0x1234, dids};
    /* the working copy: bf16 training (linear_backward's products read it) */
    size_t nw = (size_t)NO * H;
    float *hw = xr_malloc(nw * 4);
    for (size_t i = 0; i < nw; i++) hw[i] = wide(xr_bf16_bits(urand(-0.2f, 0.2f)));
    float *dw = up(g, hw, nw * 4);
    ops_bf16_weights(g, dw, nw);

    /* dropout_add in the forward (act_precision BF16): in place on a packed x (the embeddings' dropout), packed x into
     * a packed out (the head's), packed x with a packed residual */
    ops_act_precision(g, XR_PREC_BF16);
    {
        Act x, r, o;
        act_make(g, &x, nh, -2, 2), act_make(g, &r, nh, -2, 2), act_make(g, &o, nh, -1, 1);
        float *o32 = dev_nan(g, nh);
        ops_dropout_add(g, o32, x.d32, r.d32, doff, S, H, &d);
        ops_dropout_add(g, o.d16, x.d16, r.d16, doff, S, H, &d);
        same_packed(g, "dropout_add out, x, res packed", &o, o32, nh);
        ops_dropout_add(g, o32, x.d32, NULL, NULL, S, H, &d);
        ops_dropout_add(g, o.d16, x.d16, NULL, NULL, S, H, &d);
        same_packed(g, "dropout_add first rows, out, x packed", &o, o32, (size_t)S * H);
        ops_dropout_add(g, x.d32, x.d32, NULL, doff, S, H, &d);
        ops_dropout_add(g, x.d16, x.d16, NULL, doff, S, H, &d);
        same_packed(g, "dropout_add in place, packed", &x, x.d32, nh);
        float *o2 = dev_nan(g, nh);
        ops_dropout_add(g, o32, r.d32, NULL, doff, S, H, &d);
        ops_dropout_add(g, o2, r.d16, NULL, doff, S, H, &d);
        same(g, "dropout_add packed x -> fp32 out", o2, o32, nh);
        ops_free(g, o32), ops_free(g, o2);
        act_free(g, &x), act_free(g, &r), act_free(g, &o);
    }
    { /* embed, layernorm, gelu, tanh, pool_first with their activations packed, as the training forward runs them */
        Act x, r, o;
        act_make(g, &x, nh, -3, 3), act_make(g, &r, nh, -1, 1), act_make(g, &o, nh, -1, 1);
        enum { V = 50 };
        int32_t *hid = xr_malloc((size_t)N * 4), *hpos = xr_malloc((size_t)N * 4);
        for (int i = 0; i < N; i++) hid[i] = (int32_t)(urand(0, V - 0.01f)), hpos[i] = i % 107;
        int32_t *did = up(g, hid, (size_t)N * 4), *dpos = up(g, hpos, (size_t)N * 4);
        float *hwd = rnd((size_t)V * H, -1, 1), *hps = rnd((size_t)107 * H, -1, 1), *hty = rnd(H, -1, 1);
        float *wd = up(g, hwd, (size_t)V * H * 4), *ps = up(g, hps, (size_t)107 * H * 4), *ty = up(g, hty, H * 4);
        float *hgam = rnd(H, 0.5f, 1.5f), *hbet = rnd(H, -0.5f, 0.5f);
        float *gam = up(g, hgam, H * 4), *bet = up(g, hbet, H * 4);
        float *o32 = dev_nan(g, nh), *m[2], *rs[2];
        ops_embed(g, o32, did, dpos, NULL, wd, ps, ty, N, H);
        ops_embed(g, (float *)o.d16, did, dpos, NULL, wd, ps, ty, N, H);
        same_packed(g, "embed, packed out", &o, o32, nh);
        for (int k = 0; k < 2; k++) {
            m[k] = dev_nan(g, (size_t)N), rs[k] = dev_nan(g, (size_t)N);
            if (k)
                ops_layernorm(g, (float *)o.d16, m[k], rs[k], x.d16, r.d16, gam, bet, N, H, 1e-5f);
            else
                ops_layernorm(g, o32, m[k], rs[k], x.d32, r.d32, gam, bet, N, H, 1e-5f);
        }
        same_packed(g, "layernorm out, x, res packed", &o, o32, nh);
        same(g, "layernorm mean, packed x", m[1], m[0], (size_t)N);
        same(g, "layernorm rstd, packed x", rs[1], rs[0], (size_t)N);
        ops_gelu(g, o32, x.d32, nh);
        ops_gelu(g, (float *)o.d16, x.d16, nh);
        same_packed(g, "gelu out, x packed", &o, o32, nh);
        ops_tanh(g, o32, x.d32, nh);
        ops_tanh(g, (float *)o.d16, x.d16, nh);
        same_packed(g, "tanh out, x packed", &o, o32, nh);
        float *f2 = dev_nan(g, nh);
        ops_pool_first(g, o32, x.d32, doff, S, H);
        ops_pool_first(g, f2, x.d16, doff, S, H);
        same(g, "pool_first packed x -> fp32 out", f2, o32, (size_t)S * H);
        ops_act_precision(g, XR_PREC_FP32); /* the backward's GELU recomputation: packed f -> fp32 g, not rounded */
        ops_gelu(g, o32, x.d32, nh);
        ops_gelu(g, f2, x.d16, nh);
        same(g, "gelu packed x -> fp32 out (backward)", f2, o32, nh);
        ops_act_precision(g, XR_PREC_BF16);
        for (int k = 0; k < 2; k++) ops_free(g, m[k]), ops_free(g, rs[k]);
        ops_free(g, o32), ops_free(g, f2), ops_free(g, did), ops_free(g, dpos), ops_free(g, wd), ops_free(g, ps);
        ops_free(g, ty), ops_free(g, gam), ops_free(g, bet);
        free(hid), free(hpos), free(hwd), free(hps), free(hty), free(hgam), free(hbet);
        act_free(g, &x), act_free(g, &r), act_free(g, &o);
    }
    { /* linear and linear_gelu through the working copy with packed activations: x packed into an fp32 y (ctx -> the
       * attention output's projection, yd -> the logits), into a packed y (the layer input -> qkv), and the FFN's
       * first linear (a packed, f packed, g fp32) */
        size_t ny = (size_t)N * NO;
        Act x, y, f;
        act_make(g, &x, nh, -2, 2), act_make(g, &y, ny, -1, 1), act_make(g, &f, ny, -1, 1);
        float *bias = up(g, hw, NO * 4), *y32 = dev_nan(g, ny), *y2 = dev_nan(g, ny), *g32 = dev_nan(g, ny),
              *g2 = dev_nan(g, ny);
        unsigned long long c0 = cuda_ops_act_casts(g);
        ops_linear(g, y32, x.d32, dw, bias, N, NO, H);
        unsigned long long c1 = cuda_ops_act_casts(g);
        ops_linear(g, y2, x.d16, dw, bias, N, NO, H);
        unsigned long long c2 = cuda_ops_act_casts(g);
        same(g, "linear packed x -> fp32 y", y2, y32, ny);
        TU_CHECK(c1 - c0 == 1 && c2 - c1 == 0, "linear: %llu casts unpacked, %llu packed (want 1, 0)", c1 - c0, c2 - c1);
        ops_linear(g, (float *)y.d16, x.d16, dw, bias, N, NO, H);
        same_packed(g, "linear x, y packed", &y, y32, ny);
        ops_linear_gelu(g, g32, y32, x.d32, dw, bias, N, NO, H);
        ops_linear_gelu(g, g2, (float *)f.d16, x.d16, dw, bias, N, NO, H);
        same_packed(g, "linear_gelu f packed (x packed)", &f, y32, ny);
        same(g, "linear_gelu g fp32 (x, f packed)", g2, g32, ny);
        printf("linear activation casts: %llu unpacked, %llu packed\n", c1 - c0, c2 - c1);
        ops_free(g, bias), ops_free(g, y32), ops_free(g, y2), ops_free(g, g32), ops_free(g, g2);
        act_free(g, &x), act_free(g, &y), act_free(g, &f);
    }
    { /* the residual + LayerNorm as the training forward runs it: out and v packed, x (the sublayer's output) fp32, the
       * residual packed (the layer input) or fp32 (the last layer's pooled rows) */
        Act r, o, v;
        act_make(g, &r, nh, -2, 2), act_make(g, &o, nh, -1, 1), act_make(g, &v, nh, -1, 1);
        float *hx = rnd(nh, -2, 2), *hgam = rnd(H, 0.5f, 1.5f), *hbet = rnd(H, -0.5f, 0.5f);
        float *x32 = up(g, hx, nh * 4), *gam = up(g, hgam, H * 4), *bet = up(g, hbet, H * 4);
        float *o32 = dev_nan(g, nh), *v32 = dev_nan(g, nh), *m[2], *rs[2];
        for (int pr = 1; pr >= 0; pr--) {
            for (int k = 0; k < 2; k++) {
                m[k] = dev_nan(g, (size_t)N), rs[k] = dev_nan(g, (size_t)N);
                const float *res = pr ? (k ? (const float *)r.d16 : r.d32) : r.d32;
                if (k)
                    ops_dropout_add_layernorm(g, (float *)o.d16, (float *)v.d16, m[k], rs[k], x32, res, gam, bet, doff,
                                              S, N, H, 1e-5f, &d);
                else
                    ops_dropout_add_layernorm(g, o32, v32, m[k], rs[k], x32, res, gam, bet, doff, S, N, H, 1e-5f, &d);
            }
            same_packed(g, pr ? "dropout_add_layernorm out (res packed)" : "dropout_add_layernorm out (res fp32)", &o,
                        o32, nh);
            same_packed(g, pr ? "dropout_add_layernorm v (res packed)" : "dropout_add_layernorm v (res fp32)", &v, v32,
                        nh);
            same(g, "dropout_add_layernorm mean", m[1], m[0], (size_t)N);
            same(g, "dropout_add_layernorm rstd", rs[1], rs[0], (size_t)N);
            for (int k = 0; k < 2; k++) ops_free(g, m[k]), ops_free(g, rs[k]);
        }
        ops_free(g, x32), ops_free(g, gam), ops_free(g, bet), ops_free(g, o32), ops_free(g, v32);
        free(hx), free(hgam), free(hbet);
        act_free(g, &r), act_free(g, &o), act_free(g, &v);
    }
    /* the backward: gradients fp32, the saved activations packed */
    ops_act_precision(g, XR_PREC_FP32);
    float *hdy = rnd(nh > (size_t)N * NO ? nh : (size_t)N * NO, -1, 1);
    float *dy = up(g, hdy, (size_t)N * (NO > H ? NO : H) * 4);
    {
        Act x;
        act_make(g, &x, nh, -2, 2);
        float *dx[2], *dW[2], *db[2];
        unsigned long long casts[2];
        for (int k = 0; k < 2; k++) {
            dx[k] = dev_nan(g, nh);
            dW[k] = up(g, hw, nw * 4), db[k] = up(g, hw, NO * 4); /* accumulate into the same start */
            unsigned long long c0 = cuda_ops_act_casts(g);
            ops_linear_backward(g, dx[k], dW[k], db[k], dy, k ? (const float *)x.d16 : x.d32, dw, N, NO, H, 0);
            casts[k] = cuda_ops_act_casts(g) - c0;
        }
        same(g, "linear_backward dx, packed x", dx[1], dx[0], nh);
        same(g, "linear_backward dW, packed x", dW[1], dW[0], nw);
        same(g, "linear_backward db, packed x", db[1], db[0], NO);
        TU_CHECK(casts[1] + 1 == casts[0], "linear_backward: %llu activation casts with a packed x, %llu unpacked: want "
                 "one fewer (x is the operand)", casts[1], casts[0]);
        printf("linear_backward activation casts: %llu unpacked, %llu packed\n", casts[0], casts[1]);
        for (int k = 0; k < 2; k++) ops_free(g, dx[k]), ops_free(g, dW[k]), ops_free(g, db[k]);
        act_free(g, &x);
    }
    {
        Act x;
        act_make(g, &x, nh, -3, 3);
        float *hm = rnd((size_t)N, -0.5f, 0.5f), *hr = rnd((size_t)N, 0.5f, 2.0f), *hg = rnd(H, 0.5f, 1.5f);
        float *mean = up(g, hm, (size_t)N * 4), *rstd = up(g, hr, (size_t)N * 4), *gam = up(g, hg, H * 4);
        float *dx[2], *dg[2], *dbb[2], *dz[2];
        for (int k = 0; k < 2; k++) {
            const float *xv = k ? (const float *)x.d16 : x.d32;
            dx[k] = dev_nan(g, nh), dz[k] = dev_nan(g, nh);
            dg[k] = up(g, hg, H * 4), dbb[k] = up(g, hg, H * 4);
            ops_layernorm_backward(g, dx[k], dg[k], dbb[k], dy, xv, mean, rstd, gam, N, H, 0);
        }
        same(g, "layernorm_backward dx, packed x", dx[1], dx[0], nh);
        same(g, "layernorm_backward dg, packed x", dg[1], dg[0], H);
        same(g, "layernorm_backward db, packed x", dbb[1], dbb[0], H);
        for (int k = 0; k < 2; k++) {
            const float *xv = k ? (const float *)x.d16 : x.d32;
            ops_free(g, dg[k]), ops_free(g, dbb[k]);
            dg[k] = up(g, hg, H * 4), dbb[k] = up(g, hg, H * 4);
            ops_dropout_add_layernorm_backward(g, dx[k], dz[k], dg[k], dbb[k], dy, xv, mean, rstd, gam, doff, S, N, H,
                                               &d);
        }
        same(g, "dropout_add_layernorm_backward dres, packed v", dx[1], dx[0], nh);
        same(g, "dropout_add_layernorm_backward dx, packed v", dz[1], dz[0], nh);
        same(g, "dropout_add_layernorm_backward dg, packed v", dg[1], dg[0], H);
        same(g, "dropout_add_layernorm_backward db, packed v", dbb[1], dbb[0], H);
        for (int k = 0; k < 2; k++) {
            const float *xv = k ? (const float *)x.d16 : x.d32;
            ops_gelu_backward(g, dx[k], xv, dy, nh);
            ops_tanh_backward(g, dz[k], xv, dy, nh);
        }
        same(g, "gelu_backward, packed x", dx[1], dx[0], nh);
        same(g, "tanh_backward, packed y", dz[1], dz[0], nh);
        for (int k = 0; k < 2; k++) {
            const float *xv = k ? (const float *)x.d16 : x.d32;
            ops_free(g, dbb[k]);
            dbb[k] = up(g, hg, H * 4);
            ops_gelu_bias_backward(g, dx[k], dbb[k], xv, dy, N, H);
        }
        same(g, "gelu_bias_backward dx, packed x", dx[1], dx[0], nh);
        same(g, "gelu_bias_backward db, packed x", dbb[1], dbb[0], H);
        /* act_unpack of a region: the exact widening */
        ops_act_unpack(g, dx[0], x.d16, nh);
        float *hu = xr_malloc(nh * 4);
        ops_to_host(g, hu, dx[0], nh * 4);
        TU_CHECK(memcmp(hu, x.h32, nh * 4) == 0, "act_unpack of a packed region is not the widening");
        printf("act_unpack of a packed region: the widening, %zu values\n", nh);
        free(hu);
        /* an op not built for a mix refuses it (layernorm: packed x, fp32 out): in a child, which must die with the
         * refusal (not with some CUDA error of a forked process: the message is checked) */
        fflush(stdout);
        int fd[2];
        TU_CHECK(pipe(fd) == 0, "pipe");
        pid_t pid = fork();
        if (pid == 0) {
            close(fd[0]);
            dup2(fd[1], 2);
            ops_layernorm(g, dx[0], NULL, NULL, x.d16, NULL, gam, gam, N, H, 1e-5f);
            _exit(0);
        }
        close(fd[1]);
        char msg[1024];
        size_t got = 0;
        ssize_t r;
        while (got < sizeof msg - 1 && (r = read(fd[0], msg + got, sizeof msg - 1 - got)) > 0) got += (size_t)r;
        msg[got] = 0;
        close(fd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        TU_CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0 && strstr(msg, "cuda_ops_layernorm") &&
                     strstr(msg, "packed region"),
                 "layernorm, packed x into an fp32 out: status %d, message '%s'", status, msg);
        printf("layernorm, packed x into an fp32 out (not built): refused, exit %d\n",
               WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        for (int k = 0; k < 2; k++) ops_free(g, dx[k]), ops_free(g, dz[k]), ops_free(g, dg[k]), ops_free(g, dbb[k]);
        ops_free(g, mean), ops_free(g, rstd), ops_free(g, gam);
        free(hm), free(hr), free(hg);
        act_free(g, &x);
    }
    TU_CHECK(g->n_act_regions == 0, "%d packed regions left registered", g->n_act_regions);
    ops_bf16_weights(g, NULL, 0);
    ops_free(g, dw), ops_free(g, dy), ops_free(g, doff), ops_free(g, dids);
    free(hw), free(hdy);
}
#endif

int main(void) {
#ifndef XR_HAVE_CUDA
    TU_SKIP("built without the CUDA backend");
#else
    if (cuda_ops_device_count() <= 0) TU_SKIP("no GPU visible");
    check_answers();
    Backend *g = backend(1, XR_GEMM_BF16);
    check_ops(g);
    check_attention(g, "exact");
    ops_backend_free(g);
    setenv("XR_CUDA_TRAIN_ATTENTION", "gemm", 1);
    g = backend(1, XR_GEMM_BF16);
    check_attention(g, "gemm");
    ops_backend_free(g);
    setenv("XR_CUDA_ATT_CHUNK", "5", 1); /* chunks starting inside a sequence's heads: the blocks' offsets */
    g = backend(1, XR_GEMM_BF16);
    unsetenv("XR_CUDA_ATT_CHUNK");
    unsetenv("XR_CUDA_TRAIN_ATTENTION");
    check_attention(g, "gemm chunk 5");
    ops_backend_free(g);
    check_model("bert_cls");
    check_model("xlmr_cls");
    return tu_finish("test_cuda_train_pack");
#endif
}
