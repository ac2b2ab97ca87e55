/* model.c: the BERT / XLM-R / RoBERTa encoder: loading Hugging Face weights into one flat parameter buffer
 * with named views, and the forward pass (embeddings, post-LN layers, heads, poolings) written against the
 * op API. Batches are packed to their real tokens before the first op, so padding costs nothing. */
#define _POSIX_C_SOURCE 200809L
#include "model.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
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
    int32_t *h_ids, *h_pos, *h_types, *h_off; /* host staging */
} EncWork;

struct Encoder {
    ModelConfig cfg;
    Backend *be;
    int own_be;
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
        if (len > 12 && strcmp(de->d_name + len - 12, ".safetensors") == 0) {
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

Encoder *encoder_load(const char *model_dir, XrErr *e) { return encoder_load_on(model_dir, NULL, e); }

Encoder *encoder_load_on(const char *model_dir, Backend *be, XrErr *e) {
    Encoder *m = xr_calloc(1, sizeof *m);
    ExpList l = {0};
    StSet s = {0};
    float *host = NULL;
    if (hf_load_config(model_dir, &m->cfg, e)) goto fail;
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

static void work_free(Encoder *m) {
    EncWork *w = &m->w;
    float *f[] = {w->x, w->qkv, w->ctx, w->tmp, w->ffn, w->first, w->pooled, w->logits};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) ops_free(m->be, f[i]);
    int32_t *d[] = {w->ids, w->pos, w->types, w->off};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) ops_free(m->be, d[i]);
    free(w->h_ids);
    free(w->h_pos);
    free(w->h_types);
    free(w->h_off);
    memset(w, 0, sizeof *w);
}

void encoder_free(Encoder *m) {
    if (!m) return;
    if (m->be) {
        work_free(m);
        ops_free(m->be, m->params);
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

static void work_reserve(Encoder *m, int N, int S, int max_len) {
    EncWork *w = &m->w;
    const ModelConfig *c = &m->cfg;
    size_t H = (size_t)c->hidden, I = (size_t)c->intermediate;
    if (N > w->cap_tokens) {
        /* grow by half again so a run of slowly growing batches does not reallocate every time */
        int cap = N + N / 2;
        w->x = grow(m->be, w->x, (size_t)cap * H * sizeof(float));
        w->qkv = grow(m->be, w->qkv, (size_t)cap * 3 * H * sizeof(float));
        w->ctx = grow(m->be, w->ctx, (size_t)cap * H * sizeof(float));
        w->tmp = grow(m->be, w->tmp, (size_t)cap * H * sizeof(float));
        w->ffn = grow(m->be, w->ffn, (size_t)cap * I * sizeof(float));
        w->ids = grow(m->be, w->ids, (size_t)cap * sizeof(int32_t));
        w->pos = grow(m->be, w->pos, (size_t)cap * sizeof(int32_t));
        w->types = grow(m->be, w->types, (size_t)cap * sizeof(int32_t));
        w->h_ids = xr_realloc(w->h_ids, (size_t)cap * sizeof(int32_t));
        w->h_pos = xr_realloc(w->h_pos, (size_t)cap * sizeof(int32_t));
        w->h_types = xr_realloc(w->h_types, (size_t)cap * sizeof(int32_t));
        w->cap_tokens = cap;
    }
    if (S > w->cap_seqs) {
        int cap = S + S / 2;
        size_t NL = (size_t)(c->num_labels > 0 ? c->num_labels : 1);
        w->first = grow(m->be, w->first, (size_t)cap * H * sizeof(float));
        w->pooled = grow(m->be, w->pooled, (size_t)cap * H * sizeof(float));
        w->logits = grow(m->be, w->logits, (size_t)cap * NL * sizeof(float));
        w->off = grow(m->be, w->off, (size_t)(cap + 1) * sizeof(int32_t));
        w->h_off = xr_realloc(w->h_off, (size_t)(cap + 1) * sizeof(int32_t));
        w->cap_seqs = cap;
    }
    if (max_len > w->cap_len) w->cap_len = max_len;
}

/* Validate, then pack the real tokens of the batch with their position ids (BERT: 0..L-1; XLM-R/RoBERTa:
 * cumsum(id != pad) * (id != pad) + pad, exactly as transformers derives them from the ids).
 * Returns the number of real tokens; fills the max length. */
static int pack_batch(Encoder *m, const Batch *b, int *max_len_out) {
    XrErr e;
    if (encoder_check_batch(m, b, &e)) xr_die("%s", e.msg);
    const ModelConfig *c = &m->cfg;
    int N = 0, max_len = 0;
    for (int r = 0; r < b->B; r++) {
        int L = row_len(b, r);
        N += L;
        if (L > max_len) max_len = L;
    }
    work_reserve(m, N, b->B, max_len);
    EncWork *w = &m->w;
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
    ops_to_device(m->be, w->ids, w->h_ids, (size_t)N * sizeof(int32_t));
    ops_to_device(m->be, w->pos, w->h_pos, (size_t)N * sizeof(int32_t));
    ops_to_device(m->be, w->types, w->h_types, (size_t)N * sizeof(int32_t));
    ops_to_device(m->be, w->off, w->h_off, (size_t)(b->B + 1) * sizeof(int32_t));
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
