/* test_encoder.c: the C encoder against transformers on tiny random BERT / XLM-R models (fixtures written by
 * tests/gen_model_fixtures.py): logits of both heads (1 and 3 labels), last hidden states, CLS and masked-mean
 * embeddings, with padding inside the batch; results independent of batch padding; parameter names and
 * counts as transformers has them; and clear errors for missing or mis-shaped tensors and bad batches.
 * The tiny models run on the CPU backend, and on the CUDA backend too when a GPU is visible. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "safetensors.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif
#include "testutil.h"

#define TOL 1e-4

typedef struct {
    char dir[512];
    int B, T, H, NL;
    long long nparams;
    int32_t *ids, *types, *mask;
    float *hidden, *emb_cls, *emb_mean, *logits;
} Case;

static const char *fx(const Case *c, const char *file) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", c->dir, file);
    return b;
}

static void case_load(Case *c, const char *name) {
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s", tu_path("fixtures/model"));
    snprintf(c->dir + strlen(c->dir), sizeof c->dir - strlen(c->dir), "/%s", name);
    size_t n;
    int32_t *shape = tu_read_i32(fx(c, "shape.i32"), &n);
    if (n != 5) {
        fprintf(stderr, "%s: shape.i32 has %zu entries, expected 5\n", name, n);
        exit(1);
    }
    c->B = shape[0], c->T = shape[1], c->H = shape[2], c->NL = shape[3], c->nparams = shape[4];
    free(shape);
    c->ids = tu_read_i32(fx(c, "ids.i32"), &n);
    c->types = tu_read_i32(fx(c, "types.i32"), &n);
    c->mask = tu_read_i32(fx(c, "mask.i32"), &n);
    c->hidden = tu_read_f32(fx(c, "hidden.f32"), &n);
    c->emb_cls = tu_read_f32(fx(c, "emb_cls.f32"), &n);
    c->emb_mean = tu_read_f32(fx(c, "emb_mean.f32"), &n);
    if (c->NL) c->logits = tu_read_f32(fx(c, "logits.f32"), &n);
}

static void case_free(Case *c) {
    free(c->ids), free(c->types), free(c->mask), free(c->hidden), free(c->emb_cls), free(c->emb_mean);
    free(c->logits);
}

static int row_len(const Case *c, int r) {
    int L = 0;
    while (L < c->T && c->mask[(size_t)r * c->T + L]) L++;
    return L;
}

/* Our hidden states are 0 at padded positions (padding is never computed); transformers' are not meaningful
 * there. Compare real positions only. */
static double check_hidden(const char *what, const float *got, const Case *c, int r0, int B, int T) {
    size_t H = (size_t)c->H;
    double worst = 0;
    for (int r = 0; r < B; r++) {
        int L = row_len(c, r0 + r);
        char label[160];
        snprintf(label, sizeof label, "%s row %d", what, r0 + r);
        double d = tu_check_close(label, got + (size_t)r * T * H, c->hidden + (size_t)(r0 + r) * c->T * H,
                                  (size_t)L * H, TOL);
        if (d > worst) worst = d;
        for (size_t i = (size_t)L * H; i < (size_t)T * H; i++)
            TU_CHECK(got[(size_t)r * T * H + i] == 0.0f, "%s row %d: padded position not zero", what, r0 + r);
    }
    return worst;
}

/* Every output of one tiny model, on the fixture batch, then each row alone, then with extra padding. */
static void test_tiny(const char *name, const char *first_tensor, Backend *be) {
    Case c;
    case_load(&c, name);
    XrErr e;
    Encoder *m = encoder_load_on(c.dir, be, &e);
    TU_CHECK(m != NULL, "%s: encoder_load failed: %s", name, e.msg);
    if (!m) return;
    const ModelConfig *cfg = encoder_config(m);
    TU_CHECK(encoder_num_params(m) == c.nparams, "%s: %lld parameters, transformers counts %lld", name,
             (long long)encoder_num_params(m), c.nparams);
    TU_CHECK(cfg->hidden == c.H && cfg->is_seq_cls == (c.NL > 0) && (!c.NL || cfg->num_labels == c.NL),
             "%s: config hidden %d seq_cls %d labels %d", name, cfg->hidden, cfg->is_seq_cls, cfg->num_labels);
    TU_CHECK(strcmp(encoder_tensor(m, 0)->name, first_tensor) == 0, "%s: first tensor \"%s\", expected \"%s\"",
             name, encoder_tensor(m, 0)->name, first_tensor);

    /* the views tile the flat buffer in order */
    size_t off = 0;
    for (int i = 0; i < encoder_num_tensors(m); i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        TU_CHECK(t->offset == off, "%s: tensor %s at offset %zu, expected %zu", name, t->name, t->offset, off);
        off += t->numel;
    }
    TU_CHECK(off == (size_t)encoder_num_params(m), "%s: views cover %zu of %lld floats", name, off,
             (long long)encoder_num_params(m));

    size_t H = (size_t)c.H;
    Batch b = {c.B, c.T, c.ids, c.types, c.mask};
    float *hid = malloc((size_t)c.B * c.T * H * sizeof(float));
    float *emb = malloc((size_t)c.B * H * sizeof(float));
    float *lg = malloc((size_t)c.B * (c.NL ? c.NL : 1) * sizeof(float));
    char what[128];

    encoder_forward_hidden(m, &b, hid);
    snprintf(what, sizeof what, "%s hidden", name);
    double d_hid = check_hidden(what, hid, &c, 0, c.B, c.T);

    encoder_forward_embed(m, &b, POOL_CLS, 1, emb);
    snprintf(what, sizeof what, "%s emb_cls", name);
    double d_cls = tu_check_close(what, emb, c.emb_cls, (size_t)c.B * H, TOL);

    encoder_forward_embed(m, &b, POOL_MEAN, 1, emb);
    snprintf(what, sizeof what, "%s emb_mean", name);
    double d_mean = tu_check_close(what, emb, c.emb_mean, (size_t)c.B * H, TOL);

    double d_lg = 0;
    if (c.NL) {
        encoder_forward_score(m, &b, lg);
        snprintf(what, sizeof what, "%s logits", name);
        d_lg = tu_check_close(what, lg, c.logits, (size_t)c.B * c.NL, TOL);
    }

    /* Each row alone (T = its own length: the workspace shrinks and grows again) gives the batch's answer. */
    double d_alone = 0;
    for (int r = 0; r < c.B; r++) {
        int L = row_len(&c, r);
        size_t o = (size_t)r * c.T;
        Batch one = {1, L, c.ids + o, c.types + o, c.mask + o};
        encoder_forward_hidden(m, &one, hid);
        snprintf(what, sizeof what, "%s alone hidden", name);
        double d = check_hidden(what, hid, &c, r, 1, L);
        if (d > d_alone) d_alone = d;
        if (c.NL) {
            encoder_forward_score(m, &one, lg);
            snprintf(what, sizeof what, "%s alone logits row %d", name, r);
            d = tu_check_close(what, lg, c.logits + (size_t)r * c.NL, (size_t)c.NL, TOL);
            if (d > d_alone) d_alone = d;
        }
    }

    /* Seven more padding columns than needed change nothing. */
    int T2 = c.T + 7;
    int32_t *ids2 = calloc((size_t)c.B * T2, sizeof(int32_t)), *ty2 = calloc((size_t)c.B * T2, sizeof(int32_t));
    int32_t *mk2 = calloc((size_t)c.B * T2, sizeof(int32_t));
    for (int r = 0; r < c.B; r++) {
        memcpy(ids2 + (size_t)r * T2, c.ids + (size_t)r * c.T, (size_t)c.T * sizeof(int32_t));
        memcpy(ty2 + (size_t)r * T2, c.types + (size_t)r * c.T, (size_t)c.T * sizeof(int32_t));
        memcpy(mk2 + (size_t)r * T2, c.mask + (size_t)r * c.T, (size_t)c.T * sizeof(int32_t));
        for (int t = c.T; t < T2; t++) ids2[(size_t)r * T2 + t] = cfg->pad_id;
    }
    Batch b2 = {c.B, T2, ids2, ty2, mk2};
    encoder_forward_embed(m, &b2, POOL_MEAN, 1, emb);
    snprintf(what, sizeof what, "%s emb_mean extra padding", name);
    double d_pad = tu_check_close(what, emb, c.emb_mean, (size_t)c.B * H, TOL);
    if (c.NL) {
        encoder_forward_score(m, &b2, lg);
        snprintf(what, sizeof what, "%s logits extra padding", name);
        double d = tu_check_close(what, lg, c.logits, (size_t)c.B * c.NL, TOL);
        if (d > d_pad) d_pad = d;
    }
    printf("%-4s %-10s max abs diff: hidden %.2e  emb_cls %.2e  emb_mean %.2e  logits %.2e  row-alone %.2e  "
           "extra-pad %.2e\n",
           be->device == XR_DEV_CPU ? "cpu" : "cuda", name, d_hid, d_cls, d_mean, d_lg, d_alone, d_pad);
    free(ids2), free(ty2), free(mk2);
    free(hid), free(emb), free(lg);
    encoder_free(m);
    case_free(&c);
}

/* The view names are the names save_pretrained used, with the same shapes: an exported file will load. */
static void test_names_match_file(const char *name) {
    Case c;
    memset(&c, 0, sizeof c);
    snprintf(c.dir, sizeof c.dir, "%s/%s", tu_path("fixtures/model"), name);
    XrErr e;
    Encoder *m = encoder_load(c.dir, &e);
    TU_CHECK(m != NULL, "%s: %s", name, e.msg);
    if (!m) return;
    SafeTensors st;
    int rc = st_open(&st, fx(&c, "model.safetensors"), &e);
    TU_CHECK(rc == 0, "%s", e.msg);
    if (rc == 0) {
        TU_CHECK(st.n == encoder_num_tensors(m), "%s: file has %d tensors, encoder %d", name, st.n,
                 encoder_num_tensors(m));
        for (int i = 0; i < encoder_num_tensors(m); i++) {
            const EncoderTensor *t = encoder_tensor(m, i);
            const StTensor *s = st_find(&st, t->name);
            TU_CHECK(s != NULL, "%s: view %s not in the file", name, t->name);
            if (s) TU_CHECK(st_numel(s) == (int64_t)t->numel, "%s: %s numel differs", name, t->name);
        }
        st_close(&st);
    }
    encoder_free(m);
}

/* ---- bad models: written into a temporary directory from the bert_cls fixture ---- */

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* Copy bert_cls into dir, dropping tensor `drop` or giving tensor `reshape` its first dim minus one. */
static void write_variant(const char *dir, const char *drop, const char *reshape) {
    XrErr e;
    char *cfg = xr_read_file(tu_path("fixtures/model/bert_cls/config.json"), NULL, &e);
    char *cfg_path = xr_path_join(dir, "config.json");
    TU_CHECK(cfg && write_text(cfg_path, cfg) == 0, "cannot write %s", cfg_path);
    free(cfg), free(cfg_path);
    SafeTensors st;
    if (st_open(&st, tu_path("fixtures/model/bert_cls/model.safetensors"), &e)) {
        TU_CHECK(0, "%s", e.msg);
        return;
    }
    StWriteTensor *w = calloc((size_t)st.n, sizeof *w);
    float **bufs = calloc((size_t)st.n, sizeof *bufs);
    int n = 0;
    for (int i = 0; i < st.n; i++) {
        const StTensor *t = &st.tensors[i];
        if (drop && strcmp(t->name, drop) == 0) continue;
        bufs[n] = malloc((size_t)st_numel(t) * sizeof(float));
        st_to_f32(t, bufs[n], &e);
        w[n].name = t->name;
        w[n].ndim = t->ndim;
        memcpy(w[n].shape, t->shape, sizeof t->shape);
        if (reshape && strcmp(t->name, reshape) == 0) w[n].shape[0] -= 1; /* fewer elements, same buffer */
        w[n].data = bufs[n];
        n++;
    }
    char *path = xr_path_join(dir, "model.safetensors");
    TU_CHECK(st_write(path, w, n, NULL, 0, 0, &e) == 0, "st_write: %s", e.msg);
    free(path);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs), free(w);
    st_close(&st);
}

static void remove_variant(const char *dir) {
    char *a = xr_path_join(dir, "config.json"), *b = xr_path_join(dir, "model.safetensors");
    unlink(a), unlink(b);
    free(a), free(b);
}

static void test_bad_models(void) {
    char dir[] = "/tmp/xr_test_encoder_XXXXXX";
    if (!mkdtemp(dir)) {
        TU_CHECK(0, "mkdtemp failed");
        return;
    }
    XrErr e;
    const char *gone = "bert.encoder.layer.2.attention.self.key.weight";
    write_variant(dir, gone, NULL);
    Encoder *m = encoder_load(dir, &e);
    TU_CHECK(m == NULL, "a model without %s loaded", gone);
    if (!m) {
        TU_CHECK(strstr(e.msg, gone) != NULL, "the error does not name the missing tensor: %s", e.msg);
        printf("missing tensor -> %s\n", e.msg);
    }
    encoder_free(m);
    remove_variant(dir);

    const char *bad = "bert.encoder.layer.1.intermediate.dense.weight";
    write_variant(dir, NULL, bad);
    m = encoder_load(dir, &e);
    TU_CHECK(m == NULL, "a model with a mis-shaped %s loaded", bad);
    if (!m) {
        TU_CHECK(strstr(e.msg, bad) && strstr(e.msg, "[36, 32]") && strstr(e.msg, "[37, 32]"),
                 "the error does not name the tensor and both shapes: %s", e.msg);
        printf("mis-shaped tensor -> %s\n", e.msg);
    }
    encoder_free(m);
    remove_variant(dir);

    /* the pooler of a *ForSequenceClassification BERT is required (its head starts there) */
    write_variant(dir, "bert.pooler.dense.bias", NULL);
    m = encoder_load(dir, &e);
    TU_CHECK(m == NULL && strstr(e.msg, "bert.pooler.dense.bias"), "missing pooler bias: %s",
             m ? "loaded" : e.msg);
    encoder_free(m);
    remove_variant(dir);

    m = encoder_load(dir, &e);
    TU_CHECK(m == NULL, "an empty directory loaded");
    encoder_free(m);
    rmdir(dir);
}

/* Batches that do not fit the model are errors that say which row and why. */
static void test_bad_batches(void) {
    XrErr e;
    Encoder *m = encoder_load(tu_path("fixtures/model/bert_cls"), &e);
    TU_CHECK(m != NULL, "%s", e.msg);
    if (!m) return;
    int32_t ids[2 * 70], types[2 * 70], mask[2 * 70];
    for (int i = 0; i < 2 * 70; i++) ids[i] = 200, types[i] = 0, mask[i] = 1;
    Batch b = {2, 70, ids, types, mask};
    TU_CHECK(encoder_check_batch(m, &b, &e) != 0 && strstr(e.msg, "70 tokens"), "too long: %s", e.msg);
    b.T = 8;
    TU_CHECK(encoder_check_batch(m, &b, &e) == 0, "a good batch fails: %s", e.msg);
    ids[9] = 1124;
    TU_CHECK(encoder_check_batch(m, &b, &e) != 0 && strstr(e.msg, "row 1 position 1"), "id: %s", e.msg);
    ids[9] = 200;
    types[3] = 16;
    TU_CHECK(encoder_check_batch(m, &b, &e) != 0 && strstr(e.msg, "token type 16"), "type: %s", e.msg);
    types[3] = 0;
    mask[4] = 0;
    TU_CHECK(encoder_check_batch(m, &b, &e) != 0 && strstr(e.msg, "right-padded"), "mask: %s", e.msg);
    mask[4] = 1;
    mask[8] = 0;
    TU_CHECK(encoder_check_batch(m, &b, &e) != 0 && strstr(e.msg, "no real tokens"), "empty: %s", e.msg);
    encoder_free(m);
}

static void test_all_tiny(Backend *be) {
    test_tiny("bert_model", "embeddings.word_embeddings.weight", be);
    test_tiny("bert_cls", "bert.embeddings.word_embeddings.weight", be);
    test_tiny("xlmr_model", "embeddings.word_embeddings.weight", be);
    test_tiny("xlmr_cls", "roberta.embeddings.word_embeddings.weight", be);
    test_tiny("xlmr_cls3", "roberta.embeddings.word_embeddings.weight", be);
}

int main(void) {
    Backend *cpu = ops_backend_cpu(2);
    test_all_tiny(cpu);
    ops_backend_free(cpu);
#ifdef XR_HAVE_CUDA
    /* the same fixtures through the CUDA backend (exact fp32 GEMMs) when a GPU is visible */
    if (cuda_ops_device_count() > 0) {
        Backend *gpu = cuda_ops_backend(0);
        test_all_tiny(gpu);
        cuda_ops_backend_free(gpu);
    } else {
        printf("no GPU visible: the CUDA pass is skipped\n");
    }
#endif
    test_names_match_file("bert_cls");
    test_names_match_file("xlmr_cls");
    test_names_match_file("xlmr_model");
    test_bad_models();
    test_bad_batches();
    return tu_finish("test_encoder");
}
