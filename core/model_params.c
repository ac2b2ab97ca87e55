/* model_params.c: the training side of the parameter buffer: dropout settings, which tensors decay, the flat
 * gradient buffer, buffers lent by a data-parallel caller, and a new classification head. */
#include <assert.h>

#include "model_internal.h"

/* ------------------------------------------------------------------------------------------------------ */
/* Training                                                                                               */

EncoderDropout encoder_dropout(const Encoder *m) { return m->drop; }
void encoder_set_dropout(Encoder *m, EncoderDropout d) { m->drop = d; }

int encoder_tensor_decays(const EncoderTensor *t) {
    /* transformers' Trainer: no decay for parameters whose lower-cased name matches bias, layernorm, rmsnorm,
     * (^|.)norm($|.) or _norm($|.) (its nn.LayerNorm modules are all named LayerNorm here) */
    char low[sizeof t->name];
    size_t n = strlen(t->name);
    for (size_t i = 0; i <= n; i++) low[i] = (char)(t->name[i] >= 'A' && t->name[i] <= 'Z' ? t->name[i] + 32 : t->name[i]);
    if (strstr(low, "bias") || strstr(low, "layernorm") || strstr(low, "rmsnorm")) return 0;
    for (const char *p = strstr(low, "norm"); p; p = strstr(p + 1, "norm")) {
        int start = p == low || p[-1] == '.' || p[-1] == '_', end = p[4] == '\0' || p[4] == '.';
        if (start && end) return 0;
    }
    return 1;
}

float *encoder_grads(Encoder *m) {
    if (!m->grads) {
        m->grads = ops_alloc(m->be, m->n_params * sizeof(float));
        ops_zero(m->be, m->grads, m->n_params);
    }
    return m->grads;
}

void encoder_zero_grads(Encoder *m) { ops_zero(m->be, encoder_grads(m), m->n_params); }

static void rebase_views(Encoder *m, float *from, float *to);

/* Moves the parameters to `to` (copying them when copy), freeing the old buffer when the encoder owned it. */
static void move_params(Encoder *m, float *to, int copy, int lent) {
    enc_infer_weights_forget(m);
    if (copy) { /* device to device through the host: a one-off at setup */
        size_t bytes = m->n_params * sizeof(float);
        if (m->be->device == XR_DEV_CPU) {
            memcpy(to, m->params, bytes);
        } else {
            void *h = xr_malloc(bytes);
            ops_to_host(m->be, h, m->params, bytes);
            ops_to_device(m->be, to, h, bytes);
            free(h);
        }
    }
    float *old = m->params;
    rebase_views(m, old, to);
    /* bf16: the working copy is registered on the buffer itself; it moves with it (else it would go on reading, and
     * refreshing from, the old one) */
    if (m->prec == XR_PREC_BF16) ops_bf16_weights(m->be, NULL, 0);
    if (!m->lent_params) ops_free(m->be, old);
    m->params = to;
    m->lent_params = lent;
    if (m->prec == XR_PREC_BF16) ops_bf16_weights(m->be, m->params, m->n_params);
}

void encoder_use_buffers(Encoder *m, float *params, int copy_params, float *grads) {
    if (params && params != m->params) move_params(m, params, copy_params, 1);
    if (grads && grads != m->grads) {
        if (!m->lent_grads) ops_free(m->be, m->grads);
        m->grads = grads;
        m->lent_grads = 1;
        ops_zero(m->be, m->grads, m->n_params);
    }
}

void encoder_private_buffers(Encoder *m) {
    if (m->lent_params) move_params(m, ops_alloc(m->be, m->n_params * sizeof(float)), 1, 0);
    if (m->lent_grads) m->grads = NULL, m->lent_grads = 0; /* allocated again (zeroed) on first use */
}

/* ---- a new head ---- */

/* Moves every view pointer from one parameter buffer to another with the same layout (plus a tail). */
static void rebase_views(Encoder *m, float *from, float *to) {
#define XR_REBASE(p) \
    if (p) p = to + ((p) - from)
    XR_REBASE(m->word);
    XR_REBASE(m->pos);
    XR_REBASE(m->type);
    XR_REBASE(m->emb_ln_g);
    XR_REBASE(m->emb_ln_b);
    for (int l = 0; l < m->cfg.layers; l++) {
        EncLayer *L = &m->layers[l];
        XR_REBASE(L->qkv_w);
        XR_REBASE(L->qkv_b);
        XR_REBASE(L->ao_w);
        XR_REBASE(L->ao_b);
        XR_REBASE(L->ln1_g);
        XR_REBASE(L->ln1_b);
        XR_REBASE(L->fi_w);
        XR_REBASE(L->fi_b);
        XR_REBASE(L->fo_w);
        XR_REBASE(L->fo_b);
        XR_REBASE(L->ln2_g);
        XR_REBASE(L->ln2_b);
    }
    XR_REBASE(m->pool_w);
    XR_REBASE(m->pool_b);
    XR_REBASE(m->head_w);
    XR_REBASE(m->head_b);
    XR_REBASE(m->out_w);
    XR_REBASE(m->out_b);
#undef XR_REBASE
}

int encoder_init_head(Encoder *m, int num_labels, uint64_t seed, XrErr *e) {
    ModelConfig *c = &m->cfg;
    if (c->is_seq_cls)
        return xr_errf(e, "encoder_init_head: the model (%s) already has a classification head", c->architecture);
    assert(!m->lent_params); /* a new head reallocates the parameters: before encoder_use_buffers */
    if (num_labels < 1) return xr_errf(e, "encoder_init_head: num_labels must be >= 1, got %d", num_labels);
    int bert = c->family == ARCH_BERT;
    int64_t H = c->hidden, NL = num_labels;
    /* the new tensors, in the order build_expected gives a seq-cls checkpoint */
    typedef struct {
        const char *name;
        int64_t d0, d1;
    } NewTensor;
    NewTensor nt[4];
    int n_new = 0;
    if (bert) {
        if (!m->pool_w) {
            nt[n_new++] = (NewTensor){"bert.pooler.dense.weight", H, H};
            nt[n_new++] = (NewTensor){"bert.pooler.dense.bias", H, 0};
        }
        nt[n_new++] = (NewTensor){"classifier.weight", NL, H};
        nt[n_new++] = (NewTensor){"classifier.bias", NL, 0};
    } else {
        nt[n_new++] = (NewTensor){"classifier.dense.weight", H, H};
        nt[n_new++] = (NewTensor){"classifier.dense.bias", H, 0};
        nt[n_new++] = (NewTensor){"classifier.out_proj.weight", NL, H};
        nt[n_new++] = (NewTensor){"classifier.out_proj.bias", NL, 0};
    }
    size_t add = 0;
    for (int i = 0; i < n_new; i++) add += (size_t)(nt[i].d0 * (nt[i].d1 > 0 ? nt[i].d1 : 1));
    size_t old_n = m->n_params;
    if (!bert && m->pool_w) {
        /* XLM-R / RoBERTa sequence classifiers have no pooler (transformers builds them without one and
         * from_pretrained ignores a bare checkpoint's): drop it; it is the base model's last tensor pair */
        assert(m->n_tensors >= 2 && m->tensors[m->n_tensors - 2].offset == (size_t)(m->pool_w - m->params));
        old_n = m->tensors[m->n_tensors - 2].offset;
        m->n_tensors -= 2;
        m->pool_w = m->pool_b = NULL;
    }
    size_t total = old_n + add;
    float *host = xr_malloc(total * sizeof(float));
    ops_to_host(m->be, host, m->params, old_n * sizeof(float));
    /* base-model tensors take the prefix save_pretrained gives them under a head */
    const char *prefix = bert ? "bert." : "roberta.";
    for (int i = 0; i < m->n_tensors; i++) {
        char tmp[sizeof m->tensors[i].name + 16];
        if (strncmp(m->tensors[i].name, prefix, strlen(prefix)) == 0) continue;
        snprintf(tmp, sizeof tmp, "%s%s", prefix, m->tensors[i].name);
        if (strlen(tmp) >= sizeof m->tensors[i].name) xr_die("encoder_init_head: tensor name %s too long", tmp);
        memcpy(m->tensors[i].name, tmp, sizeof m->tensors[i].name);
    }
    m->tensors = xr_realloc(m->tensors, (size_t)(m->n_tensors + n_new) * sizeof *m->tensors);
    size_t off = old_n;
    for (int i = 0; i < n_new; i++) {
        EncoderTensor *t = &m->tensors[m->n_tensors++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", nt[i].name);
        t->ndim = nt[i].d1 > 0 ? 2 : 1;
        t->shape[0] = nt[i].d0;
        t->shape[1] = nt[i].d1 > 0 ? nt[i].d1 : 0;
        t->offset = off;
        t->numel = (size_t)(nt[i].d0 * (nt[i].d1 > 0 ? nt[i].d1 : 1));
        if (t->ndim == 2)
            rng_normal_fill(host + off, t->numel, rng_key(seed, 0, 0x4845414400ull + (uint64_t)i), 0.0f,
                            m->init_range);
        else
            memset(host + off, 0, t->numel * sizeof(float));
        off += t->numel;
    }
    float *old = m->params;
    enc_infer_weights_forget(m);
    m->params = ops_alloc(m->be, total * sizeof(float));
    ops_to_device(m->be, m->params, host, total * sizeof(float));
    free(host);
    rebase_views(m, old, m->params);
    if (m->prec == XR_PREC_BF16) ops_bf16_weights(m->be, NULL, 0); /* the copy followed the old buffer */
    ops_free(m->be, old);
    m->n_params = total;
    if (m->prec == XR_PREC_BF16) ops_bf16_weights(m->be, m->params, m->n_params);
    /* views of the new tensors */
    const EncoderTensor *T = &m->tensors[m->n_tensors - n_new];
    int k = 0;
    if (bert) {
        if (n_new == 4) {
            m->pool_w = m->params + T[k++].offset;
            m->pool_b = m->params + T[k++].offset;
        }
        m->head_w = m->pool_w, m->head_b = m->pool_b;
    } else {
        m->head_w = m->params + T[k++].offset;
        m->head_b = m->params + T[k++].offset;
    }
    m->out_w = m->params + T[k++].offset;
    m->out_b = m->params + T[k++].offset;
    /* buffers sized by the parameter count or the label count start again */
    ops_free(m->be, m->grads);
    m->grads = NULL;
    enc_work_free(m);
    enc_train_free(m);
    c->is_seq_cls = 1;
    c->num_labels = num_labels;
    snprintf(c->architecture, sizeof c->architecture, "%s",
             bert ? "BertForSequenceClassification"
                  : (c->family == ARCH_XLMR ? "XLMRobertaForSequenceClassification"
                                            : "RobertaForSequenceClassification"));
    return 0;
}
