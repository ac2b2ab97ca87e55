/* model_load.c: the encoder (BERT / XLM-R / RoBERTa) loaded from a Hugging Face model directory: config.json,
 * the tensors it expects, every *.safetensors file of the directory into one flat parameter buffer with named
 * views; freeing it; the accessors. The other concerns: model_forward.c (batches, inference), model_params.c
 * (gradient buffers, lent buffers, a new head), model_train.c (training forward / backward, memory plan). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>

#include "model_internal.h"
#include "safetensors.h"

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
    /* num_hidden_layers comes from config.json: every layer is 16 tensors of the weights, so a count the files
     * cannot hold is refused here, before anything is allocated per layer. */
    int64_t ntensors = 0;
    for (int i = 0; i < s.n; i++) ntensors += s.st[i].n;
    if ((int64_t)c->layers > ntensors / 16) {
        xr_errf(e, "%s/config.json: num_hidden_layers is %d, but the weights (%s%s) hold %lld tensors, enough for "
                   "at most %lld layers of 16",
                model_dir, c->layers, s.st[0].path, s.n > 1 ? ", ..." : "", (long long)ntensors,
                (long long)(ntensors / 16));
        goto fail;
    }

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

void encoder_free(Encoder *m) {
    if (!m) return;
    if (m->be) {
        enc_infer_weights_forget(m);
        enc_work_free(m);
        enc_train_free(m);
        /* a backend that outlives the encoder must not keep a working copy of parameters about to be freed */
        if (m->prec == XR_PREC_BF16 && !m->own_be) ops_bf16_weights(m->be, NULL, 0);
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
