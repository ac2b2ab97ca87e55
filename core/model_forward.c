/* model_forward.c: batches (checked, packed to their real tokens before the first op, so padding costs nothing)
 * and the inference forward pass (embeddings, post-LN layers, heads, poolings) written against the op API. */
#include "model_internal.h"

void enc_work_free(Encoder *m) {
    EncWork *w = &m->w;
    float *f[] = {w->x, w->qkv, w->ctx, w->tmp, w->ffn, w->first, w->pooled, w->logits};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) ops_free(m->be, f[i]);
    int32_t *d[] = {w->ids, w->pos, w->types, w->off};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) ops_free(m->be, d[i]);
    ops_pinned_free(m->be, w->h_ids);
    ops_pinned_free(m->be, w->h_pos);
    ops_pinned_free(m->be, w->h_types);
    ops_pinned_free(m->be, w->h_off);
    memset(w, 0, sizeof *w);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Batches                                                                                                */

static int row_len(const Batch *b, int r) {
    const int32_t *mk = b->mask + (size_t)r * b->T;
    int L = 0;
    while (L < b->T && mk[L]) L++;
    return L;
}

int encoder_check_batch(const Encoder *m, const Batch *b, XrErr *e) {
    const ModelConfig *c = &m->cfg;
    if (b->B < 0 || b->T < 0 || (b->B > 0 && (!b->ids || !b->mask)))
        return xr_errf(e, "batch: bad shape B=%d T=%d or missing ids/mask", b->B, b->T);
    for (int r = 0; r < b->B; r++) {
        const int32_t *id = b->ids + (size_t)r * b->T, *mk = b->mask + (size_t)r * b->T;
        const int32_t *ty = b->types ? b->types + (size_t)r * b->T : NULL;
        int L = row_len(b, r);
        if (L == 0) return xr_errf(e, "batch row %d has no real tokens (attention mask starts with 0)", r);
        for (int t = L; t < b->T; t++)
            if (mk[t])
                return xr_errf(e, "batch row %d: attention mask is not right-padded (0 at position %d, 1 at %d)",
                               r, L, t);
        int max_pid = c->family == ARCH_BERT ? L - 1 : L + c->pad_id;
        if (max_pid >= c->max_pos)
            return xr_errf(e, "batch row %d has %d tokens, more than the model's %d positions allow "
                              "(truncate to max_length %d)",
                           r, L, c->max_pos, c->family == ARCH_BERT ? c->max_pos : c->max_pos - c->pad_id - 1);
        for (int t = 0; t < L; t++) {
            if (id[t] < 0 || id[t] >= c->vocab_size)
                return xr_errf(e, "batch row %d position %d: token id %d is outside the vocabulary (vocab_size "
                                  "%d): the tokenizer does not match the model",
                               r, t, id[t], c->vocab_size);
            if (ty && (ty[t] < 0 || ty[t] >= c->type_vocab))
                return xr_errf(e, "batch row %d position %d: token type %d is outside type_vocab_size %d", r, t,
                               ty[t], c->type_vocab);
        }
    }
    return 0;
}

static void work_reserve(Encoder *m, int N, int S, int max_len) {
    EncWork *w = &m->w;
    const ModelConfig *c = &m->cfg;
    size_t H = (size_t)c->hidden, I = (size_t)c->intermediate;
    size_t lim_seq = (size_t)m->lim_infer_seqs, lim_tok = lim_seq * (size_t)m->lim_len;
    if (N > w->cap_tokens) {
        int cap = (int)grow_cap((size_t)N, lim_tok, "tokens");
        w->x = grow(m->be, w->x, (size_t)cap * H * sizeof(float));
        w->qkv = grow(m->be, w->qkv, (size_t)cap * 3 * H * sizeof(float));
        w->ctx = grow(m->be, w->ctx, (size_t)cap * H * sizeof(float));
        w->tmp = grow(m->be, w->tmp, (size_t)cap * H * sizeof(float));
        w->ffn = grow(m->be, w->ffn, (size_t)cap * I * sizeof(float));
        w->ids = grow(m->be, w->ids, (size_t)cap * sizeof(int32_t));
        w->pos = grow(m->be, w->pos, (size_t)cap * sizeof(int32_t));
        w->types = grow(m->be, w->types, (size_t)cap * sizeof(int32_t));
        w->cap_tokens = cap;
    }
    if (S > w->cap_seqs) {
        int cap = (int)grow_cap((size_t)S, lim_seq, "sequences");
        size_t NL = (size_t)(c->num_labels > 0 ? c->num_labels : 1);
        w->first = grow(m->be, w->first, (size_t)cap * H * sizeof(float));
        w->pooled = grow(m->be, w->pooled, (size_t)cap * H * sizeof(float));
        w->logits = grow(m->be, w->logits, (size_t)cap * NL * sizeof(float));
        w->off = grow(m->be, w->off, (size_t)(cap + 1) * sizeof(int32_t));
        w->cap_seqs = cap;
    }
    if (max_len > w->cap_len) w->cap_len = max_len;
}

/* Validate, then pack the real tokens of the batch into the host staging arrays with their position ids
 * (BERT: 0..L-1; XLM-R/RoBERTa: cumsum(id != pad) * (id != pad) + pad, exactly as transformers derives them
 * from the ids). Returns the number of real tokens; fills the max length. */
int enc_pack_host(Encoder *m, const Batch *b, int *max_len_out) {
    XrErr e;
    if (encoder_check_batch(m, b, &e)) xr_die("%s", e.msg);
    const ModelConfig *c = &m->cfg;
    int N = 0, max_len = 0;
    for (int r = 0; r < b->B; r++) {
        int L = row_len(b, r);
        N += L;
        if (L > max_len) max_len = L;
    }
    EncWork *w = &m->w;
    if (N > w->cap_h_tokens) {
        int cap = N + N / 2;
        /* pinned staging: the uploads below are queued without waiting (ops_to_device_async). Every forward ends
         * with a synchronous read of its output, so no copy from these is pending when they are rewritten. */
        w->h_ids = pinned_grow(m->be, w->h_ids, (size_t)cap * sizeof(int32_t));
        w->h_pos = pinned_grow(m->be, w->h_pos, (size_t)cap * sizeof(int32_t));
        w->h_types = pinned_grow(m->be, w->h_types, (size_t)cap * sizeof(int32_t));
        w->cap_h_tokens = cap;
    }
    if (b->B > w->cap_h_seqs) {
        int cap = b->B + b->B / 2;
        w->h_off = pinned_grow(m->be, w->h_off, (size_t)(cap + 1) * sizeof(int32_t));
        w->cap_h_seqs = cap;
    }
    int k = 0;
    for (int r = 0; r < b->B; r++) {
        const int32_t *id = b->ids + (size_t)r * b->T;
        const int32_t *ty = b->types ? b->types + (size_t)r * b->T : NULL;
        int L = row_len(b, r), nonpad = 0;
        w->h_off[r] = k;
        for (int t = 0; t < L; t++, k++) {
            w->h_ids[k] = id[t];
            w->h_types[k] = ty ? ty[t] : 0;
            if (c->family == ARCH_BERT) {
                w->h_pos[k] = t;
            } else {
                nonpad += id[t] != c->pad_id;
                w->h_pos[k] = id[t] != c->pad_id ? nonpad + c->pad_id : c->pad_id;
            }
        }
    }
    w->h_off[b->B] = k;
    *max_len_out = max_len;
    return N;
}

/* enc_pack_host, then the inference workspace's device copies. */
static int pack_batch(Encoder *m, const Batch *b, int *max_len_out) {
    int max_len, N = enc_pack_host(m, b, &max_len);
    work_reserve(m, N, b->B, max_len);
    EncWork *w = &m->w;
    ops_to_device_async(m->be, w->ids, w->h_ids, (size_t)N * sizeof(int32_t));
    ops_to_device_async(m->be, w->pos, w->h_pos, (size_t)N * sizeof(int32_t));
    ops_to_device_async(m->be, w->types, w->h_types, (size_t)N * sizeof(int32_t));
    ops_to_device_async(m->be, w->off, w->h_off, (size_t)(b->B + 1) * sizeof(int32_t));
    *max_len_out = max_len;
    return N;
}
/* ------------------------------------------------------------------------------------------------------ */
/* Forward                                                                                                */

/* The weights the inference GEMMs read: from layer 0's first tensor (after the embeddings) to the end of the buffer
 * (layers, pooler, head). */
static const float *infer_weights_start(const Encoder *m) {
    return m->cfg.layers > 0 && m->layers ? m->layers[0].qkv_w : NULL;
}

void enc_infer_weights_forget(Encoder *m) {
    const float *w = infer_weights_start(m);
    if (w && m->be) ops_infer_weights(m->be, w, 0);
}

/* Runs embeddings and all layers on the packed batch. With first_only, the last layer computes only each
 * sequence's first token (its keys and values still come from every token), leaving those rows in w.first;
 * otherwise all final hidden states are in w.x. Returns the bytes per element the activations were stored in:
 * 2 when the backend packs them as bf16 (ops_act_pack; asked for a pure inference encoder only), else 4. Packing
 * stays on for the caller's next ops on them; packing_end turns it off. The workspaces stay fp32-sized either way
 * (packed, they use half of each buffer), so the memory plan does not change. */
static int encoder_run(Encoder *m, int N, int S, int max_len, int first_only) {
    const ModelConfig *c = &m->cfg;
    EncWork *w = &m->w;
    Backend *be = m->be;
    int H = c->hidden, I = c->intermediate, NH = c->heads, dh = H / NH;
    float eps = c->ln_eps;
    /* A bf16-training encoder's inference forward (evaluation during a run) takes the inference path: GEMMs read
     * the working copy (the same bf16 values a bf16 backend's inference casts), activations are not rounded where
     * they are stored, so the GPU's attention is the flash kernel, not the training contract's exact one. The
     * storage setting comes back when the forward ends (infer_end). It is not packed: its evaluation keeps that
     * contract (test_bf16_train). */
    int esz = 4;
    if (m->prec == XR_PREC_BF16) {
        ops_act_precision(be, XR_PREC_FP32);
    } else {
        /* a pure inference encoder: the backend may keep a bf16 copy of the GEMMs' weights (held until
         * enc_infer_weights_forget; the same range again costs nothing) and pack the activations */
        const float *w0 = infer_weights_start(m);
        if (w0) ops_infer_weights(be, w0, (size_t)(m->params + m->n_params - w0));
        esz = ops_act_pack(be, 1);
    }
    ops_embed(be, w->x, w->ids, w->pos, w->types, m->word, m->pos, m->type, N, H);
    ops_layernorm(be, w->x, NULL, NULL, w->x, NULL, m->emb_ln_g, m->emb_ln_b, N, H, eps);
    for (int l = 0; l < c->layers; l++) {
        const EncLayer *L = &m->layers[l];
        ops_linear(be, w->qkv, w->x, L->qkv_w, L->qkv_b, N, 3 * H, H);
        if (first_only && l == c->layers - 1) {
            /* Only the first token's row of the last layer reaches a CLS pooling or a head. */
            ops_attention_first(be, w->ctx, w->qkv, w->off, S, max_len, NH, dh);
            ops_linear(be, w->tmp, w->ctx, L->ao_w, L->ao_b, S, H, H);
            ops_pool_first(be, w->first, w->x, w->off, S, H);
            ops_layernorm(be, w->first, NULL, NULL, w->first, w->tmp, L->ln1_g, L->ln1_b, S, H, eps);
            ops_linear(be, w->ffn, w->first, L->fi_w, L->fi_b, S, I, H);
            ops_gelu(be, w->ffn, w->ffn, (size_t)S * I);
            ops_linear(be, w->tmp, w->ffn, L->fo_w, L->fo_b, S, H, I);
            ops_layernorm(be, w->first, NULL, NULL, w->first, w->tmp, L->ln2_g, L->ln2_b, S, H, eps);
            return esz;
        }
        ops_attention(be, w->ctx, NULL, w->qkv, w->off, S, max_len, NH, dh);
        ops_linear(be, w->tmp, w->ctx, L->ao_w, L->ao_b, N, H, H);
        ops_layernorm(be, w->x, NULL, NULL, w->x, w->tmp, L->ln1_g, L->ln1_b, N, H, eps);
        ops_linear(be, w->ffn, w->x, L->fi_w, L->fi_b, N, I, H);
        ops_gelu(be, w->ffn, w->ffn, (size_t)N * I);
        ops_linear(be, w->tmp, w->ffn, L->fo_w, L->fo_b, N, H, I);
        ops_layernorm(be, w->x, NULL, NULL, w->x, w->tmp, L->ln2_g, L->ln2_b, N, H, eps);
    }
    if (first_only) ops_pool_first(be, w->first, w->x, w->off, S, H);
    return esz;
}

/* The end of the packed storage: the fp32 values of the n activations at x, stored in esz bytes each (x itself when
 * fp32, else unpacked into buf, which must not overlap x), and packing off, before the caller's last ops that need
 * fp32 (the classifier, the L2 normalisation, the copies to the host). */
static float *packing_end(Encoder *m, int esz, float *buf, float *x, size_t n) {
    if (m->prec == XR_PREC_BF16) return x; /* never packed */
    float *r = x;
    if (esz != 4) {
        ops_act_unpack(m->be, buf, x, n);
        r = buf;
    }
    ops_act_pack(m->be, 0);
    return r;
}

/* After an inference forward: a bf16-training encoder's activation storage is bf16 again (the training contract). */
static void infer_end(Encoder *m) {
    if (m->prec == XR_PREC_BF16) ops_act_precision(m->be, XR_PREC_BF16);
}

void encoder_forward_hidden(Encoder *m, const Batch *b, float *hidden) {
    if (b->B == 0) return;
    int max_len, N = pack_batch(m, b, &max_len);
    int esz = encoder_run(m, N, b->B, max_len, 0);
    size_t H = (size_t)m->cfg.hidden;
    /* packed: all hidden states unpacked into tmp ([N, H] fp32, free after the last layer) */
    const float *x = packing_end(m, esz, m->w.tmp, m->w.x, (size_t)N * H);
    /* unpack: sequence r's rows go to the first L positions of its padded row, zeros after */
    memset(hidden, 0, (size_t)b->B * b->T * H * sizeof(float));
    for (int r = 0; r < b->B; r++) {
        int off = m->w.h_off[r], L = m->w.h_off[r + 1] - off;
        ops_to_host(m->be, hidden + (size_t)r * b->T * H, x + (size_t)off * H, (size_t)L * H * sizeof(float));
    }
    infer_end(m);
}

void encoder_forward_score(Encoder *m, const Batch *b, float *logits) {
    const ModelConfig *c = &m->cfg;
    if (!c->is_seq_cls || !m->head_w || !m->out_w)
        xr_die("encoder_forward_score: %s has no sequence-classification head", c->architecture);
    if (b->B == 0) return;
    int max_len, N = pack_batch(m, b, &max_len), S = b->B, H = c->hidden, NL = c->num_labels;
    int esz = encoder_run(m, N, S, max_len, 1);
    EncWork *w = &m->w;
    /* BERT: tanh(pooler(h0)) -> classifier; XLM-R: tanh(classifier.dense(h0)) -> out_proj: the same shape. The
     * classifier reads fp32 (packed: tanh's output unpacked into first), so the logits keep fp32 precision (bf16
     * logits would tie in rankings). */
    ops_linear(m->be, w->pooled, w->first, m->head_w, m->head_b, S, H, H);
    ops_tanh(m->be, w->pooled, w->pooled, (size_t)S * H);
    const float *y = packing_end(m, esz, w->first, w->pooled, (size_t)S * H);
    ops_linear(m->be, w->logits, y, m->out_w, m->out_b, S, NL, H);
    ops_to_host(m->be, logits, w->logits, (size_t)S * NL * sizeof(float));
    infer_end(m);
}

void encoder_forward_embed(Encoder *m, const Batch *b, PoolingMode pool, int normalize, float *emb) {
    if (b->B == 0) return;
    int max_len, N = pack_batch(m, b, &max_len), S = b->B, H = m->cfg.hidden, esz;
    EncWork *w = &m->w;
    if (pool == POOL_CLS) {
        esz = encoder_run(m, N, S, max_len, 1);
    } else {
        esz = encoder_run(m, N, S, max_len, 0);
        ops_pool_mean(m->be, w->first, w->x, w->off, S, H);
    }
    /* packed: the pooled rows unpacked into pooled, normalised in fp32 */
    float *e = packing_end(m, esz, w->pooled, w->first, (size_t)S * H);
    if (normalize) ops_l2norm(m->be, e, e, S, H);
    ops_to_host(m->be, emb, e, (size_t)S * H * sizeof(float));
    infer_end(m);
}
