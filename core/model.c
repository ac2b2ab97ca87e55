/* model.c: the BERT / XLM-R / RoBERTa encoder: loading Hugging Face weights into one flat parameter buffer
 * with named views, and the forward pass (embeddings, post-LN layers, heads, poolings) written against the
 * op API. Batches are packed to their real tokens before the first op, so padding costs nothing. */
#define _POSIX_C_SOURCE 200809L
#include "model.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "rng.h"
#include "safetensors.h"

typedef struct {
    float *qkv_w, *qkv_b; /* [3H, H], [3H]: query, key, value adjacent */
    float *ao_w, *ao_b, *ln1_g, *ln1_b;
    float *fi_w, *fi_b, *fo_w, *fo_b, *ln2_g, *ln2_b;
} EncLayer;

/* Activation workspace for one batch, grown to the largest batch seen (tokens, sequences, length). */
typedef struct {
    int cap_tokens, cap_seqs, cap_len;
    float *x, *qkv, *ctx, *tmp, *ffn;  /* [N,H] [N,3H] [N,H] [N,H] [N,I] */
    float *first, *pooled, *logits;    /* [S,H] [S,H] [S,NL] */
    int32_t *ids, *pos, *types, *off;  /* device copies of the packed batch */
    int32_t *h_ids, *h_pos, *h_types, *h_off; /* host staging (shared with training, own capacities) */
    int cap_h_tokens, cap_h_seqs;
} EncWork;

/* Training workspace: every activation the backward pass reads, per layer, for the last training forward's
 * batch; grown to the largest batch seen (tokens, sequences, attention probabilities) and reused. */
typedef struct {
    int cap_tokens, cap_seqs;
    size_t cap_att;                          /* floats of saved probabilities per layer */
    int N, S, max_len, ready;                /* the batch of the last training forward */
    int use_drop;                            /* its dropout switch */
    uint64_t seed, step;
    int32_t *ids, *pos, *types, *off;        /* device copies of the packed batch */
    uint64_t *seq_ids, *h_seq_ids;           /* dropout ids per sequence (device, host) */
    float *emb, *emb_mean, *emb_rstd;        /* embeddings LayerNorm input [N,H], stats [N] */
    float *xs;                               /* layer inputs [layers][N,H]: xs[0] = dropout(LN(emb)) */
    float *qkv, *att, *ctx;                  /* [layers][N,3H] [layers][cap_att] [layers][N,H] */
    float *v1, *a, *v2, *f;                  /* LN1 input, LN1 output, LN2 input [layers][N,H]; FFN [layers][N,I] */
    float *stats;                            /* [layers][4][N]: mean1, rstd1, mean2, rstd2 */
    float *h0, *hd, *y, *yd, *logits;        /* head [S,H] x4 (first-token output, its dropout, tanh, dropout) */
    float *dx, *dt, *dctx, *dqkv, *dff, *gact; /* backward: [N,H] x3, [N,3H], [N,I] x2 */
    float *dh1, *dh2, *dlogits;              /* head gradients [S,H] x2, [S,NL] */
} EncTrain;

struct Encoder {
    ModelConfig cfg;
    EncoderDropout drop;      /* dropout probabilities (config.json; settable) */
    float init_range;         /* config.json initializer_range: std of a new head's weights */
    float *grads;             /* flat gradient buffer, same layout as params (allocated on first use) */
    EncoderGradReady grad_hook; /* encoder_set_grad_hook */
    void *grad_hook_ctx;
    EncTrain t;
    int grad_ckpt;            /* encoder_set_gradient_checkpointing: one layer's activations kept, recomputed */
    XrPrecision prec;         /* encoder_set_precision: bf16 working copy and bf16 activations (ops_list.h) */
    int lim_seqs, lim_len, lim_infer_seqs; /* encoder_set_batch_limits (0: none): the workspaces' ceilings */
    Backend *be;
    int own_be;
    int lent_params, lent_grads; /* the buffers belong to the caller (encoder_use_buffers): not freed here */
    float *params;
    size_t n_params;
    EncoderTensor *tensors;
    int n_tensors;
    float *word, *pos, *type, *emb_ln_g, *emb_ln_b;
    EncLayer *layers;
    float *pool_w, *pool_b;   /* BERT pooler (NULL when absent); XLM-R head's dense layer lives in head_* */
    float *head_w, *head_b;   /* the first head layer: BERT pooler (same pointers) or XLM-R classifier.dense */
    float *out_w, *out_b;     /* classifier [NL, H] (BERT) / classifier.out_proj (XLM-R) */
    EncWork w;
};

/* ------------------------------------------------------------------------------------------------------ */
/* Loading                                                                                                */

/* A tensor the model expects: its name without the base-model prefix and where its view is stored. */
typedef struct {
    char base[96];   /* e.g. "encoder.layer.3.attention.self.query.weight" or "classifier.weight" */
    int in_base;     /* part of the base model: saved with the "bert." / "roberta." prefix under a head */
    int optional;    /* the BERT pooler of a bare model */
    int ndim;
    int64_t shape[2];
    float **slot;    /* where the view pointer goes */
    const StTensor *src;
} ExpTensor;

typedef struct {
    ExpTensor *v;
    int n, cap;
} ExpList;

static void exp_add(ExpList *l, float **slot, int in_base, int optional, int64_t d0, int64_t d1,
                    const char *fmt, int layer) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = xr_realloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    ExpTensor *t = &l->v[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->base, sizeof t->base, fmt, layer);
    t->in_base = in_base;
    t->optional = optional;
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->slot = slot;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

typedef struct {
    SafeTensors *st;
    int n;
} StSet;

static void stset_close(StSet *s) {
    for (int i = 0; i < s->n; i++) st_close(&s->st[i]);
    free(s->st);
    s->st = NULL;
    s->n = 0;
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Open every *.safetensors file of the directory in name order (a single file or the shards of one). */
static int stset_open(StSet *s, const char *dir, XrErr *e) {
    memset(s, 0, sizeof *s);
    DIR *d = opendir(dir);
    if (!d) return xr_errf(e, "%s: cannot open the model directory", dir);
    char **names = NULL;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        /* a checkpoint directory (io/ckpt.h) also holds optimizer-*.safetensors shards: not weights */
        if (len > 12 && strcmp(de->d_name + len - 12, ".safetensors") == 0 && strncmp(de->d_name, "optimizer-", 10)) {
            names = xr_realloc(names, (size_t)(n + 1) * sizeof *names);
            names[n++] = xr_strdup(de->d_name);
        }
    }
    closedir(d);
    if (n == 0) {
        free(names);
        return xr_errf(e, "%s: no *.safetensors weights in the model directory (pytorch_model.bin is not read: "
                          "save the model with safe_serialization=True)", dir);
    }
    qsort(names, (size_t)n, sizeof *names, str_cmp);
    s->st = xr_calloc((size_t)n, sizeof *s->st);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char *path = xr_path_join(dir, names[i]);
        if (rc == 0) {
            if (st_open(&s->st[s->n], path, e) == 0)
                s->n++;
            else
                rc = -1;
        }
        free(path);
        free(names[i]);
    }
    free(names);
    if (rc) stset_close(s);
    return rc;
}

static const StTensor *stset_find(const StSet *s, const char *name, const char **file) {
    for (int i = 0; i < s->n; i++) {
        const StTensor *t = st_find(&s->st[i], name);
        if (t) {
            *file = s->st[i].path;
            return t;
        }
    }
    return NULL;
}

/* Find a tensor under the names checkpoints use for it: with or without "bert." / "roberta.", and LayerNorm
 * .gamma/.beta for .weight/.bias in files written by old versions of transformers. */
static const StTensor *find_tensor(const StSet *s, const ExpTensor *x, const char **file, char *found,
                                   size_t found_len) {
    static const char *prefixes[] = {"", "bert.", "roberta."};
    int np = x->in_base ? 3 : 1;
    char legacy[96];
    snprintf(legacy, sizeof legacy, "%s", x->base);
    size_t len = strlen(legacy);
    int has_legacy = 0;
    if (len >= 16 && strcmp(legacy + len - 16, "LayerNorm.weight") == 0) {
        strcpy(legacy + len - 6, "gamma");
        has_legacy = 1;
    } else if (len >= 14 && strcmp(legacy + len - 14, "LayerNorm.bias") == 0) {
        strcpy(legacy + len - 4, "beta");
        has_legacy = 1;
    }
    for (int form = 0; form < 1 + has_legacy; form++) {
        for (int p = 0; p < np; p++) {
            snprintf(found, found_len, "%s%s", prefixes[p], form ? legacy : x->base);
            const StTensor *t = stset_find(s, found, file);
            if (t) return t;
        }
    }
    return NULL;
}

static void build_expected(Encoder *m, ExpList *l, int with_pooler) {
    const ModelConfig *c = &m->cfg;
    int64_t H = c->hidden, I = c->intermediate;
    exp_add(l, &m->word, 1, 0, c->vocab_size, H, "embeddings.word_embeddings.weight", 0);
    exp_add(l, &m->pos, 1, 0, c->max_pos, H, "embeddings.position_embeddings.weight", 0);
    exp_add(l, &m->type, 1, 0, c->type_vocab, H, "embeddings.token_type_embeddings.weight", 0);
    exp_add(l, &m->emb_ln_g, 1, 0, H, 0, "embeddings.LayerNorm.weight", 0);
    exp_add(l, &m->emb_ln_b, 1, 0, H, 0, "embeddings.LayerNorm.bias", 0);
    /* q, k, v weights then their biases: adjacent in the buffer, read as one [3H, H] matrix and [3H] bias;
     * the key and value views have no pointer of their own */
    for (int i = 0; i < c->layers; i++) {
        EncLayer *L = &m->layers[i];
        exp_add(l, &L->qkv_w, 1, 0, H, H, "encoder.layer.%d.attention.self.query.weight", i);
        exp_add(l, NULL, 1, 0, H, H, "encoder.layer.%d.attention.self.key.weight", i);
        exp_add(l, NULL, 1, 0, H, H, "encoder.layer.%d.attention.self.value.weight", i);
        exp_add(l, &L->qkv_b, 1, 0, H, 0, "encoder.layer.%d.attention.self.query.bias", i);
        exp_add(l, NULL, 1, 0, H, 0, "encoder.layer.%d.attention.self.key.bias", i);
        exp_add(l, NULL, 1, 0, H, 0, "encoder.layer.%d.attention.self.value.bias", i);
        exp_add(l, &L->ao_w, 1, 0, H, H, "encoder.layer.%d.attention.output.dense.weight", i);
        exp_add(l, &L->ao_b, 1, 0, H, 0, "encoder.layer.%d.attention.output.dense.bias", i);
        exp_add(l, &L->ln1_g, 1, 0, H, 0, "encoder.layer.%d.attention.output.LayerNorm.weight", i);
        exp_add(l, &L->ln1_b, 1, 0, H, 0, "encoder.layer.%d.attention.output.LayerNorm.bias", i);
        exp_add(l, &L->fi_w, 1, 0, I, H, "encoder.layer.%d.intermediate.dense.weight", i);
        exp_add(l, &L->fi_b, 1, 0, I, 0, "encoder.layer.%d.intermediate.dense.bias", i);
        exp_add(l, &L->fo_w, 1, 0, H, I, "encoder.layer.%d.output.dense.weight", i);
        exp_add(l, &L->fo_b, 1, 0, H, 0, "encoder.layer.%d.output.dense.bias", i);
        exp_add(l, &L->ln2_g, 1, 0, H, 0, "encoder.layer.%d.output.LayerNorm.weight", i);
        exp_add(l, &L->ln2_b, 1, 0, H, 0, "encoder.layer.%d.output.LayerNorm.bias", i);
    }
    int bert_head = c->is_seq_cls && c->family == ARCH_BERT;
    if (bert_head || with_pooler) {
        exp_add(l, &m->pool_w, 1, !bert_head, H, H, "pooler.dense.weight", 0);
        exp_add(l, &m->pool_b, 1, !bert_head, H, 0, "pooler.dense.bias", 0);
    }
    if (c->is_seq_cls) {
        int64_t NL = c->num_labels;
        if (c->family == ARCH_BERT) {
            exp_add(l, &m->out_w, 0, 0, NL, H, "classifier.weight", 0);
            exp_add(l, &m->out_b, 0, 0, NL, 0, "classifier.bias", 0);
        } else {
            exp_add(l, &m->head_w, 0, 0, H, H, "classifier.dense.weight", 0);
            exp_add(l, &m->head_b, 0, 0, H, 0, "classifier.dense.bias", 0);
            exp_add(l, &m->out_w, 0, 0, NL, H, "classifier.out_proj.weight", 0);
            exp_add(l, &m->out_b, 0, 0, NL, 0, "classifier.out_proj.bias", 0);
        }
    }
}

/* The training-only keys of config.json that ModelConfig does not carry: the dropout probabilities
 * (classifier_dropout null or absent: hidden_dropout_prob, as transformers' heads do) and initializer_range. */
static float json_prob(const cJSON *root, const char *key, float dflt, int *bad) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return dflt;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= 1) {
        *bad = 1;
        return dflt;
    }
    return (float)v->valuedouble;
}

static int load_train_config(Encoder *m, const char *dir, XrErr *e) {
    char *path = xr_path_join(dir, "config.json");
    char *text = xr_read_file(path, NULL, e);
    if (!text) {
        free(path);
        return -1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    int bad = 0, rc = 0;
    m->drop.hidden = json_prob(root, "hidden_dropout_prob", 0.1f, &bad);
    if (!bad) m->drop.attention = json_prob(root, "attention_probs_dropout_prob", 0.1f, &bad);
    if (!bad) m->drop.classifier = json_prob(root, "classifier_dropout", m->drop.hidden, &bad);
    const cJSON *ir = cJSON_GetObjectItemCaseSensitive(root, "initializer_range");
    m->init_range = cJSON_IsNumber(ir) && ir->valuedouble > 0 ? (float)ir->valuedouble : 0.02f;
    if (!root)
        rc = xr_errf(e, "%s: not valid JSON", path);
    else if (bad)
        rc = xr_errf(e, "%s: hidden_dropout_prob, attention_probs_dropout_prob and classifier_dropout must be "
                        "numbers in [0, 1) (or null for classifier_dropout)", path);
    cJSON_Delete(root);
    free(path);
    return rc;
}

Encoder *encoder_load(const char *model_dir, XrErr *e) { return encoder_load_on(model_dir, NULL, e); }

Encoder *encoder_load_on(const char *model_dir, Backend *be, XrErr *e) {
    Encoder *m = xr_calloc(1, sizeof *m);
    ExpList l = {0};
    StSet s = {0};
    float *host = NULL;
    if (hf_load_config(model_dir, &m->cfg, e)) goto fail;
    if (load_train_config(m, model_dir, e)) goto fail;
    const ModelConfig *c = &m->cfg;
    if (c->layers < 1 || c->hidden < 1 || c->heads < 1 || c->intermediate < 1)
        goto fail_cfg;
    if (stset_open(&s, model_dir, e)) goto fail;

    m->layers = xr_calloc((size_t)c->layers, sizeof *m->layers);
    /* A bare BertModel / XLMRobertaModel checkpoint may carry a pooler: keep it when present so the
     * parameter set round-trips, though no output uses it. */
    int with_pooler = 0;
    if (!c->is_seq_cls || c->family == ARCH_BERT) {
        ExpTensor probe = {0};
        snprintf(probe.base, sizeof probe.base, "pooler.dense.weight");
        probe.in_base = 1;
        const char *file;
        char found[128];
        with_pooler = find_tensor(&s, &probe, &file, found, sizeof found) != NULL;
    }
    build_expected(m, &l, with_pooler);

    /* Resolve every tensor and its shape before allocating anything large. */
    size_t total = 0;
    for (int i = 0; i < l.n; i++) {
        ExpTensor *x = &l.v[i];
        const char *file = NULL;
        char found[128];
        x->src = find_tensor(&s, x, &file, found, sizeof found);
        if (!x->src) {
            if (x->optional) continue;
            xr_errf(e, "%s: tensor \"%s%s\" is missing from the weights (%d file%s: %s%s); the config says %s",
                    model_dir, x->in_base && c->is_seq_cls ? (c->family == ARCH_BERT ? "bert." : "roberta.") : "",
                    x->base, s.n, s.n > 1 ? "s" : "", s.st[0].path, s.n > 1 ? ", ..." : "", c->architecture);
            goto fail;
        }
        if (!st_is_float(x->src->dtype)) {
            xr_errf(e, "%s: tensor \"%s\" has dtype %s, expected a float type", file, found,
                    st_dtype_name(x->src->dtype));
            goto fail;
        }
        int same = x->src->ndim == x->ndim;
        for (int d = 0; same && d < x->ndim; d++) same = x->src->shape[d] == x->shape[d];
        if (!same) {
            char got[128], want[128];
            shape_str(got, sizeof got, x->src->ndim, x->src->shape);
            shape_str(want, sizeof want, x->ndim, x->shape);
            xr_errf(e, "%s: tensor \"%s\" has shape %s, expected %s from config.json (hidden_size %d, "
                       "intermediate_size %d, vocab_size %d, max_position_embeddings %d, type_vocab_size %d, "
                       "num_labels %d)",
                    file, found, got, want, c->hidden, c->intermediate, c->vocab_size, c->max_pos,
                    c->type_vocab, c->num_labels);
            goto fail;
        }
        total += (size_t)st_numel(x->src);
    }

    /* One flat buffer in the expected order; views are named as save_pretrained names them. */
    m->be = be ? be : ops_backend_cpu(0);
    m->own_be = !be;
    m->n_params = total;
    m->params = ops_alloc(m->be, total * sizeof(float));
    host = m->be->device == XR_DEV_CPU ? m->params : xr_malloc(total * sizeof(float));
    m->tensors = xr_calloc((size_t)l.n, sizeof *m->tensors);
    const char *prefix = c->is_seq_cls ? (c->family == ARCH_BERT ? "bert." : "roberta.") : "";
    size_t off = 0;
    for (int i = 0; i < l.n; i++) {
        ExpTensor *x = &l.v[i];
        if (!x->src) continue;
        EncoderTensor *t = &m->tensors[m->n_tensors++];
        snprintf(t->name, sizeof t->name, "%s%s", x->in_base ? prefix : "", x->base);
        t->ndim = x->ndim;
        t->shape[0] = x->shape[0];
        t->shape[1] = x->shape[1];
        t->offset = off;
        t->numel = (size_t)st_numel(x->src);
        if (st_to_f32(x->src, host + off, e)) goto fail;
        if (x->slot) *x->slot = m->params + off;
        off += t->numel;
    }
    if (host != m->params) {
        ops_to_device(m->be, m->params, host, total * sizeof(float));
        free(host);
    }
    host = NULL;
    if (c->family == ARCH_BERT && m->pool_w) {
        if (c->is_seq_cls) m->head_w = m->pool_w, m->head_b = m->pool_b;
    }
    free(l.v);
    stset_close(&s);
    return m;

fail_cfg:
    xr_errf(e, "%s: config.json has a non-positive size", model_dir);
fail:
    if (host && m->be && host != m->params) free(host);
    free(l.v);
    stset_close(&s);
    encoder_free(m);
    return NULL;
}

static void train_free(Encoder *m);

static void work_free(Encoder *m) {
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

void encoder_free(Encoder *m) {
    if (!m) return;
    if (m->be) {
        work_free(m);
        train_free(m);
        if (!m->lent_grads) ops_free(m->be, m->grads);
        if (!m->lent_params) ops_free(m->be, m->params);
        if (m->own_be) ops_backend_free(m->be);
    }
    free(m->tensors);
    free(m->layers);
    free(m);
}

const ModelConfig *encoder_config(const Encoder *m) { return &m->cfg; }
int64_t encoder_num_params(const Encoder *m) { return (int64_t)m->n_params; }
int encoder_num_tensors(const Encoder *m) { return m->n_tensors; }
const EncoderTensor *encoder_tensor(const Encoder *m, int i) {
    return (i >= 0 && i < m->n_tensors) ? &m->tensors[i] : NULL;
}
float *encoder_params(Encoder *m) { return m->params; }
Backend *encoder_backend(Encoder *m) { return m->be; }
void encoder_set_threads(Encoder *m, int n) { ops_set_threads(m->be, n); }

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

static void *grow(Backend *be, void *p, size_t bytes) {
    ops_free(be, p);
    return ops_alloc(be, bytes);
}

/* The same for pinned host staging (contents not kept: the callers rewrite them whole). */
static void *pinned_grow(Backend *be, void *p, size_t bytes) {
    ops_pinned_free(be, p);
    return ops_pinned_alloc(be, bytes);
}

/* A workspace capacity for n: half again (so slowly growing batches do not reallocate every time), but never
 * past the ceiling of encoder_set_batch_limits (lim > 0), which the memory plan counted. */
static size_t grow_cap(size_t n, size_t lim, const char *what) {
    size_t cap = n + n / 2;
    if (lim == 0) return cap;
    if (n > lim) xr_die("encoder: a batch of %zu %s is larger than the memory plan allows (%zu)", n, what, lim);
    return cap < lim ? cap : lim;
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
static int pack_host(Encoder *m, const Batch *b, int *max_len_out) {
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

/* pack_host, then the inference workspace's device copies. */
static int pack_batch(Encoder *m, const Batch *b, int *max_len_out) {
    int max_len, N = pack_host(m, b, &max_len);
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

/* Runs embeddings and all layers on the packed batch. With first_only, the last layer computes only each
 * sequence's first token (its keys and values still come from every token), leaving those rows in w.first;
 * otherwise all final hidden states are in w.x. */
static void encoder_run(Encoder *m, int N, int S, int max_len, int first_only) {
    const ModelConfig *c = &m->cfg;
    EncWork *w = &m->w;
    Backend *be = m->be;
    int H = c->hidden, I = c->intermediate, NH = c->heads, dh = H / NH;
    float eps = c->ln_eps;
    if (m->prec == XR_PREC_BF16) ops_act_precision(be, XR_PREC_BF16);
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
            return;
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
}

void encoder_forward_hidden(Encoder *m, const Batch *b, float *hidden) {
    if (b->B == 0) return;
    int max_len, N = pack_batch(m, b, &max_len);
    encoder_run(m, N, b->B, max_len, 0);
    size_t H = (size_t)m->cfg.hidden;
    /* unpack: sequence r's rows go to the first L positions of its padded row, zeros after */
    memset(hidden, 0, (size_t)b->B * b->T * H * sizeof(float));
    for (int r = 0; r < b->B; r++) {
        int off = m->w.h_off[r], L = m->w.h_off[r + 1] - off;
        ops_to_host(m->be, hidden + (size_t)r * b->T * H, m->w.x + (size_t)off * H, (size_t)L * H * sizeof(float));
    }
}

void encoder_forward_score(Encoder *m, const Batch *b, float *logits) {
    const ModelConfig *c = &m->cfg;
    if (!c->is_seq_cls || !m->head_w || !m->out_w)
        xr_die("encoder_forward_score: %s has no sequence-classification head", c->architecture);
    if (b->B == 0) return;
    int max_len, N = pack_batch(m, b, &max_len), S = b->B, H = c->hidden, NL = c->num_labels;
    encoder_run(m, N, S, max_len, 1);
    EncWork *w = &m->w;
    /* BERT: tanh(pooler(h0)) -> classifier; XLM-R: tanh(classifier.dense(h0)) -> out_proj: the same shape */
    ops_linear(m->be, w->pooled, w->first, m->head_w, m->head_b, S, H, H);
    ops_tanh(m->be, w->pooled, w->pooled, (size_t)S * H);
    ops_linear(m->be, w->logits, w->pooled, m->out_w, m->out_b, S, NL, H);
    ops_to_host(m->be, logits, w->logits, (size_t)S * NL * sizeof(float));
}

void encoder_forward_embed(Encoder *m, const Batch *b, PoolingMode pool, int normalize, float *emb) {
    if (b->B == 0) return;
    int max_len, N = pack_batch(m, b, &max_len), S = b->B, H = m->cfg.hidden;
    EncWork *w = &m->w;
    if (pool == POOL_CLS) {
        encoder_run(m, N, S, max_len, 1);
    } else {
        encoder_run(m, N, S, max_len, 0);
        ops_pool_mean(m->be, w->first, w->x, w->off, S, H);
    }
    if (normalize) ops_l2norm(m->be, w->first, w->first, S, H);
    ops_to_host(m->be, emb, w->first, (size_t)S * H * sizeof(float));
}

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
    if (!m->lent_params) ops_free(m->be, old);
    m->params = to;
    m->lent_params = lent;
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
    work_free(m);
    train_free(m);
    c->is_seq_cls = 1;
    c->num_labels = num_labels;
    snprintf(c->architecture, sizeof c->architecture, "%s",
             bert ? "BertForSequenceClassification"
                  : (c->family == ARCH_XLMR ? "XLMRobertaForSequenceClassification"
                                            : "RobertaForSequenceClassification"));
    return 0;
}

/* ---- training workspace ---- */

static void train_free(Encoder *m) {
    EncTrain *t = &m->t;
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
    *tok = S * L, *seq = S, *att = S * L * L * (size_t)m->cfg.heads;
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
        t->emb = grow(be, t->emb, FBYTES(cap * H));
        t->emb_mean = grow(be, t->emb_mean, FBYTES(cap));
        t->emb_rstd = grow(be, t->emb_rstd, FBYTES(cap));
        t->xs = grow(be, t->xs, FBYTES(Ly * cap * H));
        t->qkv = grow(be, t->qkv, FBYTES(Lk * cap * 3 * H));
        t->ctx = grow(be, t->ctx, FBYTES(Lk * cap * H));
        t->v1 = grow(be, t->v1, FBYTES(Lk * cap * H));
        t->a = grow(be, t->a, FBYTES(Lk * cap * H));
        t->v2 = grow(be, t->v2, FBYTES(Lk * cap * H));
        t->f = grow(be, t->f, FBYTES(Lk * cap * I));
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
        t->h0 = grow(be, t->h0, FBYTES(cap * H));
        t->hd = grow(be, t->hd, FBYTES(cap * H));
        t->y = grow(be, t->y, FBYTES(cap * H));
        t->yd = grow(be, t->yd, FBYTES(cap * H));
        t->dh1 = grow(be, t->dh1, FBYTES(cap * H));
        t->dh2 = grow(be, t->dh2, FBYTES(cap * H));
        t->logits = grow(be, t->logits, FBYTES(cap * NL));
        t->dlogits = grow(be, t->dlogits, FBYTES(cap * NL));
        t->off = grow(be, t->off, (cap + 1) * sizeof(int32_t));
        t->seq_ids = grow(be, t->seq_ids, cap * sizeof(uint64_t));
        t->h_seq_ids = pinned_grow(be, t->h_seq_ids, cap * sizeof(uint64_t));
    }
    if (att > t->cap_att) {
        t->cap_att = grow_cap(att, lim_att, "attention probabilities");
        t->att = grow(be, t->att, FBYTES(Lk * t->cap_att));
    }
}

void encoder_set_gradient_checkpointing(Encoder *m, int on) {
    if (!!on == m->grad_ckpt) return;
    train_free(m); /* the activations' layout changes: one slot instead of one per layer */
    m->grad_ckpt = !!on;
}

int encoder_gradient_checkpointing(const Encoder *m) { return m->grad_ckpt; }

void encoder_set_batch_limits(Encoder *m, int train_seqs, int eval_seqs, int max_len) {
    m->lim_seqs = train_seqs > 0 ? train_seqs : 0;
    m->lim_infer_seqs = eval_seqs > 0 ? eval_seqs : 0;
    m->lim_len = max_len > 0 ? max_len : 0;
}

/* The sizes train_reserve and work_reserve allocate at their ceilings (the same formulas: the plan is checked
 * against the allocation counter by test_memplan). */
void encoder_train_plan(const Encoder *m, int train_seqs, int eval_seqs, int max_len, EncoderMemPlan *p) {
    const ModelConfig *c = &m->cfg;
    size_t H = (size_t)c->hidden, I = (size_t)c->intermediate, Ly = (size_t)c->layers, NH = (size_t)c->heads;
    size_t NL = (size_t)(c->num_labels > 0 ? c->num_labels : 1), Lk = m->grad_ckpt ? 1 : Ly, L = (size_t)max_len;
    size_t S = (size_t)train_seqs, T = S * L, A = NH * S * L * L, i32 = sizeof(int32_t);
    memset(p, 0, sizeof *p);
    p->weights = FBYTES(m->n_params);
    p->grads = FBYTES(m->n_params);
    /* saved for the backward: embeddings' LN input and stats, every layer's input, the per-layer slots, the head */
    p->activations = FBYTES(T * H + 2 * T + Ly * T * H + Lk * (T * 3 * H + 4 * T * H + T * I + 4 * T) + Lk * A +
                            4 * S * H + S * NL);
    /* the backward's gradients of activations, the batch's device copies */
    p->workspace = FBYTES(3 * T * H + T * 3 * H + 2 * T * I + 2 * S * H + S * NL) + 3 * T * i32 + (S + 1) * i32 +
                   S * sizeof(uint64_t);
    if (m->be->device != XR_DEV_CPU) {
        /* the CUDA backend's own scratch, grown to 9/8 of a request: the attention backward's row sums
         * [S, max_len, NH] and the fixed-order column sums of the bias gradients (64-row blocks, doubles) */
        size_t rowd = FBYTES(S * L * NH), cols = ((T + 63) / 64) * (I > 3 * H ? I : 3 * H) * sizeof(double) * 2;
        p->workspace += (rowd + cols) / 8 * 9;
    }
    size_t E = (size_t)eval_seqs, ET = E * L;
    if (E > 0)
        p->eval = FBYTES(ET * H * 4 + ET * 3 * H + ET * I + 2 * E * H + E * NL) + 3 * ET * i32 + (E + 1) * i32;
}

size_t encoder_plan_total(const EncoderMemPlan *p) {
    return p->weights + p->master + p->moments + p->grads + p->activations + p->workspace + p->eval;
}

/* Per-layer slices of the workspace. Layer inputs (xs) are kept for every layer; the other activations have a
 * slot per layer, or one shared slot with gradient checkpointing (LS: the slot of layer l). */
#define LS(l) (m->grad_ckpt ? 0 : (size_t)(l))
#define T_XS(t, l) ((t)->xs + (size_t)(l) * (t)->cap_tokens * H)
#define T_QKV(t, l) ((t)->qkv + LS(l) * (t)->cap_tokens * 3 * H)
#define T_ATT(t, l) ((t)->att + LS(l) * (t)->cap_att)
#define T_CTX(t, l) ((t)->ctx + LS(l) * (t)->cap_tokens * H)
#define T_V1(t, l) ((t)->v1 + LS(l) * (t)->cap_tokens * H)
#define T_A(t, l) ((t)->a + LS(l) * (t)->cap_tokens * H)
#define T_V2(t, l) ((t)->v2 + LS(l) * (t)->cap_tokens * H)
#define T_F(t, l) ((t)->f + LS(l) * (t)->cap_tokens * I)
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
    ops_attention_train(be, T_CTX(t, l), T_ATT(t, l), T_QKV(t, l), t->off, S, max_len, NH, dh, last,
                        site_drop(m, &dd, p->attention, SITE_ATT_PROBS(l)));
    ops_linear(be, t->dt, T_CTX(t, l), L->ao_w, L->ao_b, rows, H, H);
    const float *res = X;
    if (last) {
        ops_pool_first(be, t->dx, X, t->off, S, H);
        res = t->dx;
    }
    ops_dropout_add(be, T_V1(t, l), t->dt, res, roff, S, H, site_drop(m, &dd, p->hidden, SITE_ATT_OUT(l)));
    ops_layernorm(be, T_A(t, l), T_ST(t, l, 0), T_ST(t, l, 1), T_V1(t, l), NULL, L->ln1_g, L->ln1_b, rows, H, eps);
    ops_linear(be, T_F(t, l), T_A(t, l), L->fi_w, L->fi_b, rows, I, H);
    ops_gelu(be, t->gact, T_F(t, l), (size_t)rows * I);
    ops_linear(be, t->dt, t->gact, L->fo_w, L->fo_b, rows, H, I);
    ops_dropout_add(be, T_V2(t, l), t->dt, T_A(t, l), roff, S, H, site_drop(m, &dd, p->hidden, SITE_FFN_OUT(l)));
    ops_layernorm(be, last ? t->h0 : T_XS(t, l + 1), T_ST(t, l, 2), T_ST(t, l, 3), T_V2(t, l), NULL, L->ln2_g,
                  L->ln2_b, rows, H, eps);
}

void encoder_train_forward(Encoder *m, const Batch *b, const EncoderTrainStep *step, float *logits) {
    const ModelConfig *c = &m->cfg;
    if (!c->is_seq_cls || !m->head_w || !m->out_w)
        xr_die("encoder_train_forward: %s has no sequence-classification head (encoder_init_head adds one)",
               c->architecture);
    if (b->B <= 0) xr_die("encoder_train_forward: empty batch");
    Backend *be = m->be;
    EncTrain *t = &m->t;
    int max_len, N = pack_host(m, b, &max_len), S = b->B;
    int H = c->hidden, NH = c->heads, NL = c->num_labels, Ly = c->layers;
    float eps = c->ln_eps;
    const int32_t *h_off = m->w.h_off;
    size_t att = 0;
    for (int s = 0; s < S; s++) {
        size_t L = (size_t)(h_off[s + 1] - h_off[s]);
        att += L * L;
    }
    att *= (size_t)NH;
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
    ops_bf16_weights(m->be, prec == XR_PREC_BF16 ? m->params : NULL, m->n_params);
    ops_act_precision(m->be, prec);
    return 0;
}

XrPrecision encoder_precision(const Encoder *m) { return m->prec; }

int64_t encoder_weights_updated(Encoder *m) { return ops_weights_refresh(m->be); }

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
        if (m->grad_ckpt && !last) layer_train_forward(m, l); /* the last layer's are still there */
        const int32_t *roff = last ? NULL : t->off;
        /* dY: the gradient of this layer's output, turned in place into that of LN2's input, then (adding the
         * FFN's) of LN1's output, then of LN1's input */
        float *dY = last ? t->dh2 : t->dx;
        ops_layernorm_backward(be, dY, G(L->ln2_g), G(L->ln2_b), dY, T_V2(t, l), T_ST(t, l, 2), T_ST(t, l, 3),
                               L->ln2_g, rows, H, 0);
        ops_dropout_add(be, t->dt, dY, NULL, roff, S, H, site_drop(m, &dd, p->hidden, SITE_FFN_OUT(l)));
        ops_gelu(be, t->gact, T_F(t, l), (size_t)rows * I); /* recomputed: cheaper than keeping it */
        ops_linear_backward(be, t->dff, G(L->fo_w), G(L->fo_b), t->dt, t->gact, L->fo_w, rows, H, I, 0);
        ops_gelu_backward(be, t->dff, T_F(t, l), t->dff, (size_t)rows * I);
        ops_linear_backward(be, dY, G(L->fi_w), G(L->fi_b), t->dff, T_A(t, l), L->fi_w, rows, I, H, 1);
        ops_layernorm_backward(be, dY, G(L->ln1_g), G(L->ln1_b), dY, T_V1(t, l), T_ST(t, l, 0), T_ST(t, l, 1),
                               L->ln1_g, rows, H, 0);
        ops_dropout_add(be, t->dt, dY, NULL, roff, S, H, site_drop(m, &dd, p->hidden, SITE_ATT_OUT(l)));
        ops_linear_backward(be, t->dctx, G(L->ao_w), G(L->ao_b), t->dt, T_CTX(t, l), L->ao_w, rows, H, H, 0);
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
    grads_final_from(m, 0, &mark);
}
