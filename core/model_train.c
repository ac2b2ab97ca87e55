/* model_train.c: training: the workspace of saved activations (per layer, or one slot under gradient
 * checkpointing), the memory plan, the training forward with dropout and its backward into the flat gradient
 * buffer, training precision, the gradient-ready hook. */
#include "model_internal.h"

/* ---- training workspace ---- */

/* The saved activations: stored in t->esz bytes an element; packed (2), each buffer is a region registered with the
 * backend (ops_act_region), so every op reads and writes it as bf16 by its address. */
#define SAVED_ACTS(t) {&(t)->emb, &(t)->xs, &(t)->qkv, &(t)->ctx, &(t)->v1, &(t)->a, &(t)->v2, &(t)->f, \
                       &(t)->h0, &(t)->hd, &(t)->y, &(t)->yd}

void enc_train_free(Encoder *m) {
    EncTrain *t = &m->t;
    if (t->esz == 2) {
        float **saved[] = SAVED_ACTS(t);
        for (size_t i = 0; i < sizeof saved / sizeof saved[0]; i++)
            if (*saved[i]) ops_act_region(m->be, *saved[i], 0);
    }
    float *f[] = {t->emb, t->emb_mean, t->emb_rstd, t->xs, t->qkv, t->att, t->ctx, t->v1, t->a, t->v2, t->f,
                  t->stats, t->h0, t->hd, t->y, t->yd, t->logits, t->dx, t->dt, t->dctx, t->dqkv, t->dff,
                  t->gact, t->dh1, t->dh2, t->dlogits};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) ops_free(m->be, f[i]);
    int32_t *d[] = {t->ids, t->pos, t->types, t->off};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) ops_free(m->be, d[i]);
    ops_free(m->be, t->seq_ids);
    ops_pinned_free(m->be, t->h_seq_ids);
    memset(t, 0, sizeof *t);
}

#define FBYTES(n) ((size_t)(n) * sizeof(float))

/* The ceilings of the training workspace: tokens, sequences, attention floats per layer (0: none). */
static void train_limits(const Encoder *m, size_t *tok, size_t *seq, size_t *att) {
    size_t S = (size_t)m->lim_seqs, L = (size_t)m->lim_len;
    *tok = S * L, *seq = S, *att = S * L * (m->att_lse ? 1 : L) * (size_t)m->cfg.heads;
}

/* The storage of the saved activations in a step of precision prec: 2 bytes (packed bf16) in a bf16 step where the
 * backend agrees to hold packed regions (ops_act_region's question), else 4. fp32 training never packs. */
static int train_act_esz(const Encoder *m) {
    return m->prec == XR_PREC_BF16 ? ops_act_region(m->be, NULL, 0) : 4;
}

/* A saved activation's buffer of n elements in the workspace's storage, replacing old; packed, the new buffer is
 * registered in place of the old one. */
static float *act_grow(Encoder *m, float *old, size_t n) {
    Backend *be = m->be;
    int esz = m->t.esz;
    if (old && esz == 2) ops_act_region(be, old, 0);
    float *p = grow(be, old, n * (size_t)esz);
    if (esz == 2 && ops_act_region(be, p, n * 2) != 2)
        xr_die("encoder: the %s backend declined a packed activation region of %zu bytes it agreed to before",
               ops_device_name(be->device), n * 2);
    return p;
}

static void train_reserve(Encoder *m, int N, int S, size_t att) {
    EncTrain *t = &m->t;
    const ModelConfig *c = &m->cfg;
    /* with gradient checkpointing the per-layer activations have one slot, refilled by the backward */
    size_t H = (size_t)c->hidden, I = (size_t)c->intermediate, Ly = (size_t)c->layers, Lk = m->grad_ckpt ? 1 : Ly;
    Backend *be = m->be;
    size_t lim_tok, lim_seq, lim_att;
    train_limits(m, &lim_tok, &lim_seq, &lim_att);
    if (N > t->cap_tokens) {
        size_t cap = grow_cap((size_t)N, lim_tok, "tokens");
        t->cap_tokens = (int)cap;
        t->emb = act_grow(m, t->emb, cap * H);
        t->emb_mean = grow(be, t->emb_mean, FBYTES(cap));
        t->emb_rstd = grow(be, t->emb_rstd, FBYTES(cap));
        t->xs = act_grow(m, t->xs, Ly * cap * H);
        t->qkv = act_grow(m, t->qkv, Lk * cap * 3 * H);
        t->ctx = act_grow(m, t->ctx, Lk * cap * H);
        t->v1 = act_grow(m, t->v1, Lk * cap * H);
        t->a = act_grow(m, t->a, Lk * cap * H);
        t->v2 = act_grow(m, t->v2, Lk * cap * H);
        t->f = act_grow(m, t->f, Lk * cap * I);
        t->stats = grow(be, t->stats, FBYTES(Lk * 4 * cap));
        t->dx = grow(be, t->dx, FBYTES(cap * H));
        t->dt = grow(be, t->dt, FBYTES(cap * H));
        t->dctx = grow(be, t->dctx, FBYTES(cap * H));
        t->dqkv = grow(be, t->dqkv, FBYTES(cap * 3 * H));
        t->dff = grow(be, t->dff, FBYTES(cap * I));
        t->gact = grow(be, t->gact, FBYTES(cap * I));
        t->ids = grow(be, t->ids, cap * sizeof(int32_t));
        t->pos = grow(be, t->pos, cap * sizeof(int32_t));
        t->types = grow(be, t->types, cap * sizeof(int32_t));
    }
    if (S > t->cap_seqs) {
        size_t cap = grow_cap((size_t)S, lim_seq, "sequences"), NL = (size_t)c->num_labels;
        t->cap_seqs = (int)cap;
        t->h0 = act_grow(m, t->h0, cap * H);
        t->hd = act_grow(m, t->hd, cap * H);
        t->y = act_grow(m, t->y, cap * H);
        t->yd = act_grow(m, t->yd, cap * H);
        t->dh1 = grow(be, t->dh1, FBYTES(cap * H));
        t->dh2 = grow(be, t->dh2, FBYTES(cap * H));
        t->logits = grow(be, t->logits, FBYTES(cap * NL));
        t->dlogits = grow(be, t->dlogits, FBYTES(cap * NL));
        t->off = grow(be, t->off, (cap + 1) * sizeof(int32_t));
        t->seq_ids = grow(be, t->seq_ids, cap * sizeof(uint64_t));
        t->h_seq_ids = pinned_grow(be, t->h_seq_ids, cap * sizeof(uint64_t));
    }
    if (att > t->cap_att) {
        t->cap_att = grow_cap(att, lim_att, m->att_lse ? "attention log-sum-exps" : "attention probabilities");
        t->att = grow(be, t->att, FBYTES(Lk * t->cap_att));
    }
}

void encoder_set_gradient_checkpointing(Encoder *m, int on) {
    if (!!on == m->grad_ckpt) return;
    enc_train_free(m); /* the activations' layout changes: one slot instead of one per layer */
    m->grad_ckpt = !!on;
}

int encoder_gradient_checkpointing(const Encoder *m) { return m->grad_ckpt; }

void encoder_set_attention_lse(Encoder *m, int on) {
    if (!!on == m->att_lse) return;
    enc_train_free(m); /* att changes meaning and size: probabilities [NH, L, L] or log-sum-exps [L, NH] */
    m->att_lse = !!on;
}

int encoder_attention_lse(const Encoder *m) { return m->att_lse; }

void encoder_set_batch_limits(Encoder *m, int train_seqs, int eval_seqs, int max_len) {
    m->lim_seqs = train_seqs > 0 ? train_seqs : 0;
    m->lim_infer_seqs = eval_seqs > 0 ? eval_seqs : 0;
    m->lim_len = max_len > 0 ? max_len : 0;
}

/* The sizes train_reserve and work_reserve allocate at their ceilings (the same formulas: the plan is checked
 * against the allocation counter by test_memplan). The saved activations count train_act_esz's bytes an element. */
void encoder_train_plan(const Encoder *m, int train_seqs, int eval_seqs, int max_len, EncoderMemPlan *p) {
    const ModelConfig *c = &m->cfg;
    size_t H = (size_t)c->hidden, I = (size_t)c->intermediate, Ly = (size_t)c->layers, NH = (size_t)c->heads;
    size_t NL = (size_t)(c->num_labels > 0 ? c->num_labels : 1), Lk = m->grad_ckpt ? 1 : Ly, L = (size_t)max_len;
    /* attention: the probabilities [NH, L, L] per sequence, or with attention_lse one log-sum-exp per token and head */
    size_t S = (size_t)train_seqs, T = S * L, A = NH * S * L * (m->att_lse ? 1 : L), i32 = sizeof(int32_t);
    memset(p, 0, sizeof *p);
    p->weights = FBYTES(m->n_params);
    /* the bf16 working copy the backend keeps (ops_bf16_weights): __nv_bfloat16 on a GPU, fp32 words on the CPU */
    if (m->prec == XR_PREC_BF16) p->weights_copy = m->n_params * (m->be->device == XR_DEV_CPU ? sizeof(float) : 2);
    p->grads = FBYTES(m->n_params);
    /* saved for the backward: embeddings' LN input and stats, every layer's input, the per-layer slots, the head;
     * the saved activations (SAVED_ACTS) in train_act_esz's bytes, the statistics, probabilities and logits fp32 */
    size_t esz = (size_t)train_act_esz(m);
    p->activations = (T * H + Ly * T * H + Lk * (T * 3 * H + 4 * T * H + T * I) + 4 * S * H) * esz +
                     FBYTES(2 * T + Lk * 4 * T + Lk * A + S * NL);
    /* the backward's gradients of activations, the batch's device copies */
    p->workspace = FBYTES(3 * T * H + T * 3 * H + 2 * T * I + 2 * S * H + S * NL) + 3 * T * i32 + (S + 1) * i32 +
                   S * sizeof(uint64_t);
    if (m->be->device != XR_DEV_CPU) {
        /* the CUDA backend's own scratch, grown to 9/8 of a request: the training attention's (the backward's row sums
         * [S, max_len, NH], or the GEMM path's padded blocks, for the saved-probability or the log-sum-exp ops:
         * ops_attention_scratch) and the fixed-order column sums of the bias gradients (64-row blocks, doubles) */
        size_t rowd = ops_attention_scratch(m->be, train_seqs, max_len, (int)NH, (int)(H / NH), m->att_lse),
               cols = ((T + 63) / 64) * (I > 3 * H ? I : 3 * H) * sizeof(double) * 2;
        p->workspace += (rowd + cols) / 8 * 9;
        if (m->prec == XR_PREC_BF16) {
            /* bf16 training's scratch (core/cuda/ops_cuda.cu), each grown to 9/8 of its largest request: the forward
             * GEMMs' cast x [T, H] and the producers' bf16 copies of their outputs [T, I] at most, the backward's bf16
             * dy [T, max(I, 3H)] and x [T, I], an aligned bias [max(I, 3H)], and cuBLASLt's 32 MiB workspace */
            /* an evaluation batch's inference forward (model_forward.c) grows the same casts and copies (its
             * producers' copies [ET, I] at most) when it holds more tokens than a training micro-batch */
            size_t wide = I > 3 * H ? I : 3 * H, ET = (size_t)(eval_seqs > 0 ? eval_seqs : 0) * L, TF = T > ET ? T : ET;
            p->workspace += (TF * H * 2 + TF * I * 2 * 2 + T * wide * 2 + FBYTES(wide) + ((size_t)32 << 20)) / 8 * 9;
            /* the saved activations packed (train_act_esz 2): a packed GEMM output's fp32 product [T, max(3H, I)]
             * (ops_cuda.cu, SCR_Y32), grown to 9/8; the training attention reads the packed qkv and stores the packed
             * context as they lie (train_ops.cu, att_gemm.cu): no scratch of its own for them */
            if (esz == 2) p->workspace += FBYTES(T * (I > 3 * H ? I : 3 * H)) / 8 * 9;
        }
    }
    size_t E = (size_t)eval_seqs, ET = E * L;
    if (E > 0)
        p->eval = FBYTES(ET * H * 4 + ET * 3 * H + ET * I + 2 * E * H + E * NL) + 3 * ET * i32 + (E + 1) * i32;
}

size_t encoder_plan_total(const EncoderMemPlan *p) {
    return p->weights + p->weights_copy + p->moments + p->grads + p->activations + p->workspace + p->eval;
}

/* Per-layer slices of the workspace. Layer inputs (xs) are kept for every layer; the other activations have a
 * slot per layer, or one shared slot with gradient checkpointing (LS: the slot of layer l). */
#define LS(l) (m->grad_ckpt ? 0 : (size_t)(l))
/* element e of a saved activation's buffer, in the workspace's storage (t->esz bytes an element) */
#define ACT_AT(t, base, e) ((float *)((char *)(base) + (size_t)(e) * (size_t)(t)->esz))
#define T_XS(t, l) ACT_AT(t, (t)->xs, (size_t)(l) * (t)->cap_tokens * H)
#define T_QKV(t, l) ACT_AT(t, (t)->qkv, LS(l) * (t)->cap_tokens * 3 * H)
#define T_ATT(t, l) ((t)->att + LS(l) * (t)->cap_att)
#define T_CTX(t, l) ACT_AT(t, (t)->ctx, LS(l) * (t)->cap_tokens * H)
#define T_V1(t, l) ACT_AT(t, (t)->v1, LS(l) * (t)->cap_tokens * H)
#define T_A(t, l) ACT_AT(t, (t)->a, LS(l) * (t)->cap_tokens * H)
#define T_V2(t, l) ACT_AT(t, (t)->v2, LS(l) * (t)->cap_tokens * H)
#define T_F(t, l) ACT_AT(t, (t)->f, LS(l) * (t)->cap_tokens * I)
#define T_ST(t, l, k) ((t)->stats + (LS(l) * 4 + (k)) * (t)->cap_tokens)

/* Dropout sites: each gets its own key per step (rng_key(seed, step, site)). */
enum { SITE_EMB = 1, SITE_LAYER0 = 16, SITE_HEAD_IN = 0x7FFF0000, SITE_HEAD_OUT = 0x7FFF0001 };
#define SITE_ATT_PROBS(l) (SITE_LAYER0 + 4 * (l))
#define SITE_ATT_OUT(l) (SITE_LAYER0 + 4 * (l) + 1)
#define SITE_FFN_OUT(l) (SITE_LAYER0 + 4 * (l) + 2)

/* The dropout of one site for the current batch, or NULL when it is off. */
static const XrDropout *site_drop(const Encoder *m, XrDropout *d, float p, uint64_t site) {
    const EncTrain *t = &m->t;
    if (!t->use_drop || p <= 0.0f) return NULL;
    d->p = p;
    d->key = rng_key(t->seed, t->step, site);
    d->seq_ids = t->seq_ids;
    return d;
}

/* Gradient view of a parameter view. */
#define G(p) (m->grads + ((p) - m->params))

/* Layer l of the training forward from its input xs[l], saving what its backward reads in the layer's slot, and
 * writing its output to xs[l + 1] (the last layer: the first tokens' rows, to h0). Scratch: dt, gact, and for the
 * last layer dx. A pure function of xs[l], the weights and the dropout keys: run again from the same input (the
 * backward's recomputation under gradient checkpointing) it writes the same bits. */
static void layer_train_forward(Encoder *m, int l) {
    const ModelConfig *c = &m->cfg;
    Backend *be = m->be;
    EncTrain *t = &m->t;
    int N = t->N, S = t->S, max_len = t->max_len;
    int H = c->hidden, I = c->intermediate, NH = c->heads, dh = H / NH, Ly = c->layers;
    float eps = c->ln_eps;
    XrDropout dd;
    const EncoderDropout *p = &m->drop;
    const EncLayer *L = &m->layers[l];
    /* the last layer computes the first token of each sequence only: all the head reads */
    int last = l == Ly - 1, rows = last ? S : N;
    const int32_t *roff = last ? NULL : t->off;
    float *X = T_XS(t, l);
    ops_linear(be, T_QKV(t, l), X, L->qkv_w, L->qkv_b, N, 3 * H, H);
    if (m->att_lse)
        ops_attention_train_lse(be, T_CTX(t, l), T_ATT(t, l), T_QKV(t, l), t->off, S, max_len, NH, dh, last,
                                site_drop(m, &dd, p->attention, SITE_ATT_PROBS(l)));
    else
        ops_attention_train(be, T_CTX(t, l), T_ATT(t, l), T_QKV(t, l), t->off, S, max_len, NH, dh, last,
                            site_drop(m, &dd, p->attention, SITE_ATT_PROBS(l)));
    ops_linear(be, t->dt, T_CTX(t, l), L->ao_w, L->ao_b, rows, H, H);
    const float *res = X;
    if (last) {
        ops_pool_first(be, t->dx, X, t->off, S, H);
        res = t->dx;
    }
    /* residual + LayerNorm, fused: the LayerNorm's input (v1, v2) and statistics are saved for the backward */
    ops_dropout_add_layernorm(be, T_A(t, l), T_V1(t, l), T_ST(t, l, 0), T_ST(t, l, 1), t->dt, res, L->ln1_g,
                              L->ln1_b, roff, S, rows, H, eps, site_drop(m, &dd, p->hidden, SITE_ATT_OUT(l)));
    /* the FFN's first linear and its GELU, fused: F (the GELU's input) is saved for the backward */
    ops_linear_gelu(be, t->gact, T_F(t, l), T_A(t, l), L->fi_w, L->fi_b, rows, I, H);
    ops_linear(be, t->dt, t->gact, L->fo_w, L->fo_b, rows, H, I);
    ops_dropout_add_layernorm(be, last ? t->h0 : T_XS(t, l + 1), T_V2(t, l), T_ST(t, l, 2), T_ST(t, l, 3), t->dt,
                              T_A(t, l), L->ln2_g, L->ln2_b, roff, S, rows, H, eps,
                              site_drop(m, &dd, p->hidden, SITE_FFN_OUT(l)));
}

void encoder_train_forward(Encoder *m, const Batch *b, const EncoderTrainStep *step, float *logits) {
    const ModelConfig *c = &m->cfg;
    if (!c->is_seq_cls || !m->head_w || !m->out_w)
        xr_die("encoder_train_forward: %s has no sequence-classification head (encoder_init_head adds one)",
               c->architecture);
    if (b->B <= 0) xr_die("encoder_train_forward: empty batch");
    Backend *be = m->be;
    EncTrain *t = &m->t;
    enc_infer_weights_forget(m); /* training changes the weights from here: no inference copy of them */
    int max_len, N = enc_pack_host(m, b, &max_len), S = b->B;
    int H = c->hidden, NH = c->heads, NL = c->num_labels, Ly = c->layers;
    float eps = c->ln_eps;
    const int32_t *h_off = m->w.h_off;
    size_t att = 0;
    for (int s = 0; s < S; s++) {
        size_t L = (size_t)(h_off[s + 1] - h_off[s]);
        att += m->att_lse ? L : L * L;
    }
    att *= (size_t)NH;
    int esz = train_act_esz(m);
    if (esz != t->esz) { /* a new storage of the saved activations (precision, the backend's answer): a new layout */
        enc_train_free(m);
        t->esz = esz;
    }
    train_reserve(m, N, S, att);
    t->N = N, t->S = S, t->max_len = max_len;
    t->use_drop = step ? step->dropout : 0;
    t->seed = step ? step->seed : 0;
    t->step = step ? step->step : 0;
    for (int s = 0; s < S; s++) t->h_seq_ids[s] = step && step->example_ids ? step->example_ids[s] : (uint64_t)s;
    /* queued behind the previous micro-batch's backward, which may still run: the host does not wait */
    ops_to_device_async(be, t->ids, m->w.h_ids, (size_t)N * sizeof(int32_t));
    ops_to_device_async(be, t->pos, m->w.h_pos, (size_t)N * sizeof(int32_t));
    ops_to_device_async(be, t->types, m->w.h_types, (size_t)N * sizeof(int32_t));
    ops_to_device_async(be, t->off, h_off, (size_t)(S + 1) * sizeof(int32_t));
    ops_to_device_async(be, t->seq_ids, t->h_seq_ids, (size_t)S * sizeof(uint64_t));
    XrDropout dd;
    const EncoderDropout *p = &m->drop;
    if (m->prec == XR_PREC_BF16) ops_act_precision(be, XR_PREC_BF16);

    ops_embed(be, t->emb, t->ids, t->pos, t->types, m->word, m->pos, m->type, N, H);
    ops_layernorm(be, T_XS(t, 0), t->emb_mean, t->emb_rstd, t->emb, NULL, m->emb_ln_g, m->emb_ln_b, N, H, eps);
    ops_dropout_add(be, T_XS(t, 0), T_XS(t, 0), NULL, t->off, S, H, site_drop(m, &dd, p->hidden, SITE_EMB));
    for (int l = 0; l < Ly; l++) layer_train_forward(m, l);
    /* BERT: classifier(dropout(tanh(pooler(h0)))); XLM-R: out_proj(dropout(tanh(dense(dropout(h0))))) */
    const float *hin = t->h0;
    if (c->family != ARCH_BERT) {
        ops_dropout_add(be, t->hd, t->h0, NULL, NULL, S, H, site_drop(m, &dd, p->classifier, SITE_HEAD_IN));
        hin = t->hd;
    }
    ops_linear(be, t->y, hin, m->head_w, m->head_b, S, H, H);
    ops_tanh(be, t->y, t->y, (size_t)S * H);
    ops_dropout_add(be, t->yd, t->y, NULL, NULL, S, H, site_drop(m, &dd, p->classifier, SITE_HEAD_OUT));
    if (m->prec == XR_PREC_BF16) ops_act_precision(be, XR_PREC_FP32); /* the logits (and the loss) stay fp32 */
    ops_linear(be, t->logits, t->yd, m->out_w, m->out_b, S, NL, H);
    if (m->prec == XR_PREC_BF16) ops_act_precision(be, XR_PREC_BF16);
    ops_to_host(be, logits, t->logits, (size_t)S * NL * sizeof(float));
    t->ready = 1;
}

int encoder_set_precision(Encoder *m, XrPrecision prec, XrErr *e) {
    if (prec == m->prec) return 0;
    char missing[256];
    if (ops_backend_missing(m->be, XR_OPSET_TRAIN, missing, sizeof missing))
        return xr_errf(e, "bf16 training: the %s backend lacks training ops: %s", ops_device_name(m->be->device),
                       missing);
    m->prec = prec;
    enc_infer_weights_forget(m);
    ops_bf16_weights(m->be, prec == XR_PREC_BF16 ? m->params : NULL, m->n_params);
    ops_act_precision(m->be, prec);
    return 0;
}

XrPrecision encoder_precision(const Encoder *m) { return m->prec; }

int64_t encoder_weights_updated(Encoder *m) {
    enc_infer_weights_forget(m); /* an inference copy is made again at the next forward */
    return ops_weights_refresh(m->be);
}

void encoder_set_grad_hook(Encoder *m, EncoderGradReady fn, void *ctx) {
    m->grad_hook = fn;
    m->grad_hook_ctx = ctx;
}

/* The lowest flat offset among n views (NULL views skipped). */
static size_t views_lo(const Encoder *m, float *const *v, int n) {
    size_t lo = m->n_params;
    for (int i = 0; i < n; i++)
        if (v[i] && (size_t)(v[i] - m->params) < lo) lo = (size_t)(v[i] - m->params);
    return lo;
}

/* Tells the hook that everything from offset lo up to the previous mark is final; *mark moves down to lo. */
static void grads_final_from(Encoder *m, size_t lo, size_t *mark) {
    if (lo >= *mark) return;
    if (m->grad_hook) m->grad_hook(m->grad_hook_ctx, lo, *mark);
    *mark = lo;
}

void encoder_train_backward(Encoder *m, const float *dlogits) {
    const ModelConfig *c = &m->cfg;
    EncTrain *t = &m->t;
    if (!t->ready) xr_die("encoder_train_backward: no encoder_train_forward before it");
    t->ready = 0;
    encoder_grads(m);
    Backend *be = m->be;
    int N = t->N, S = t->S, max_len = t->max_len;
    int H = c->hidden, I = c->intermediate, NH = c->heads, dh = H / NH, NL = c->num_labels, Ly = c->layers;
    XrDropout dd;
    const EncoderDropout *p = &m->drop;
    /* bf16: gradients of activations stay fp32 (ops_list.h, "training precision"), so the backward stores in fp32 (the
     * dropouts it applies to gradients, the GELU recomputed as a GEMM operand, rounded there anyway); the activations
     * that checkpointing recomputes are stored in bf16 as the forward stored them */
    int bf16 = m->prec == XR_PREC_BF16;
    if (bf16) ops_act_precision(be, XR_PREC_FP32);
    ops_to_device(be, t->dlogits, dlogits, (size_t)S * NL * sizeof(float));

    /* head, back to d h0 in dh2 */
    ops_linear_backward(be, t->dh1, G(m->out_w), G(m->out_b), t->dlogits, t->yd, m->out_w, S, NL, H, 0);
    ops_dropout_add(be, t->dh1, t->dh1, NULL, NULL, S, H, site_drop(m, &dd, p->classifier, SITE_HEAD_OUT));
    ops_tanh_backward(be, t->dh1, t->y, t->dh1, (size_t)S * H);
    int bert = c->family == ARCH_BERT;
    ops_linear_backward(be, t->dh2, G(m->head_w), G(m->head_b), t->dh1, bert ? t->h0 : t->hd, m->head_w, S, H, H,
                        0);
    if (!bert) ops_dropout_add(be, t->dh2, t->dh2, NULL, NULL, S, H, site_drop(m, &dd, p->classifier, SITE_HEAD_IN));
    size_t mark = m->n_params;
    {
        float *const head[] = {m->out_w, m->out_b, m->head_w, m->head_b, m->pool_w, m->pool_b};
        grads_final_from(m, views_lo(m, head, 6), &mark);
    }

    for (int l = Ly - 1; l >= 0; l--) {
        const EncLayer *L = &m->layers[l];
        int last = l == Ly - 1, rows = last ? S : N;
        /* gradient checkpointing: refill the shared slot with this layer's activations (the same bits as the
         * forward's: same input, weights and dropout keys). It writes dt, gact (scratch here too), xs[l + 1] / h0
         * (the same values again); never dx, which holds the gradient. */
        if (m->grad_ckpt && !last) { /* the last layer's are still there */
            if (bf16) ops_act_precision(be, XR_PREC_BF16);
            layer_train_forward(m, l);
            if (bf16) ops_act_precision(be, XR_PREC_FP32);
        }
        const int32_t *roff = last ? NULL : t->off;
        /* dY: the gradient of this layer's output, turned in place into that of LN2's input, then (adding the
         * FFN's) of LN1's output, then of LN1's input */
        float *dY = last ? t->dh2 : t->dx;
        /* dY -> d v2 (the residual's part stays in dY), dt = its dropout: the FFN output's gradient */
        ops_dropout_add_layernorm_backward(be, dY, t->dt, G(L->ln2_g), G(L->ln2_b), dY, T_V2(t, l), T_ST(t, l, 2),
                                           T_ST(t, l, 3), L->ln2_g, roff, S, rows, H,
                                           site_drop(m, &dd, p->hidden, SITE_FFN_OUT(l)));
        ops_gelu(be, t->gact, T_F(t, l), (size_t)rows * I); /* recomputed: cheaper than keeping it */
        ops_linear_backward(be, t->dff, G(L->fo_w), G(L->fo_b), t->dt, t->gact, L->fo_w, rows, H, I, 0);
        /* GELU backward and the first FFN linear's bias gradient in one pass; its products after */
        ops_gelu_bias_backward(be, t->dff, G(L->fi_b), T_F(t, l), t->dff, rows, I);
        ops_linear_backward(be, dY, G(L->fi_w), NULL, t->dff, T_A(t, l), L->fi_w, rows, I, H, 1);
        ops_dropout_add_layernorm_backward(be, dY, t->dt, G(L->ln1_g), G(L->ln1_b), dY, T_V1(t, l), T_ST(t, l, 0),
                                           T_ST(t, l, 1), L->ln1_g, roff, S, rows, H,
                                           site_drop(m, &dd, p->hidden, SITE_ATT_OUT(l)));
        ops_linear_backward(be, t->dctx, G(L->ao_w), G(L->ao_b), t->dt, T_CTX(t, l), L->ao_w, rows, H, H, 0);
        if (m->att_lse)
            ops_attention_backward_lse(be, t->dqkv, t->dctx, T_QKV(t, l), T_ATT(t, l), t->off, S, max_len, NH, dh,
                                       last, site_drop(m, &dd, p->attention, SITE_ATT_PROBS(l)));
        else
            ops_attention_backward(be, t->dqkv, t->dctx, T_QKV(t, l), T_ATT(t, l), t->off, S, max_len, NH, dh, last,
                                   site_drop(m, &dd, p->attention, SITE_ATT_PROBS(l)));
        /* d X = residual (dY) + dqkv Wqkv; the last layer's residual reaches the first rows only */
        ops_linear_backward(be, t->dx, G(L->qkv_w), G(L->qkv_b), t->dqkv, T_XS(t, l), L->qkv_w, N, 3 * H, H, !last);
        if (last) ops_pool_first_backward(be, t->dx, dY, t->off, S, H);
        float *const lv[] = {L->qkv_w, L->qkv_b, L->ao_w, L->ao_b, L->ln1_g, L->ln1_b,
                             L->fi_w,  L->fi_b,  L->fo_w, L->fo_b, L->ln2_g, L->ln2_b};
        grads_final_from(m, views_lo(m, lv, 12), &mark);
    }
    ops_dropout_add(be, t->dx, t->dx, NULL, t->off, S, H, site_drop(m, &dd, p->hidden, SITE_EMB));
    ops_layernorm_backward(be, t->dx, G(m->emb_ln_g), G(m->emb_ln_b), t->dx, t->emb, t->emb_mean, t->emb_rstd,
                           m->emb_ln_g, N, H, 0);
    ops_embed_backward(be, G(m->word), G(m->pos), G(m->type), t->dx, t->ids, t->pos, t->types, N, H);
    /* torch's padding_idx: the padding id's word row (and XLM-R's padding position row) get no gradient */
    if (c->pad_id >= 0 && c->pad_id < c->vocab_size) ops_zero(be, G(m->word) + (size_t)c->pad_id * H, (size_t)H);
    if (c->family != ARCH_BERT && c->pad_id >= 0 && c->pad_id < c->max_pos)
        ops_zero(be, G(m->pos) + (size_t)c->pad_id * H, (size_t)H);
    if (bf16) ops_act_precision(be, XR_PREC_BF16);
    grads_final_from(m, 0, &mark);
}
