/* test_hfmodel.c: config.json parsing on configs that transformers / sentence-transformers wrote (MiniLM,
 * tiny BERT and XLM-R classifiers), bad configs generated from a good one (each a clear error), pooling
 * files, and hub-id resolution in a fake Hugging Face cache built in a temp dir. */
#define _XOPEN_SOURCE 700
#include "hfmodel.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];

static char *tmp_join(const char *rel) { return xr_path_join(tmpdir, rel); }

static void put_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void mkdirs(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    mkdir(buf, 0755);
}

static void check_minilm(const char *dir) {
    ModelConfig c;
    XrErr e;
    int rc = hf_load_config(dir, &c, &e);
    TU_CHECK(rc == 0, "%s: %s", dir, e.msg);
    if (rc) return;
    TU_CHECK(c.family == ARCH_BERT && !c.is_seq_cls && strcmp(c.model_type, "bert") == 0 &&
                 strcmp(c.architecture, "BertModel") == 0,
             "minilm family/arch: %d %d %s %s", c.family, c.is_seq_cls, c.model_type, c.architecture);
    TU_CHECK(c.vocab_size == 30522 && c.hidden == 384 && c.layers == 6 && c.heads == 12 && c.intermediate == 1536 &&
                 c.max_pos == 512 && c.type_vocab == 2 && c.pad_id == 0,
             "minilm sizes: V%d H%d L%d A%d I%d P%d T%d pad%d", c.vocab_size, c.hidden, c.layers, c.heads,
             c.intermediate, c.max_pos, c.type_vocab, c.pad_id);
    TU_CHECK(c.ln_eps == 1e-12f && strcmp(c.hidden_act, "gelu") == 0, "minilm eps %g act %s", c.ln_eps, c.hidden_act);
    TU_CHECK(c.pooling == POOL_MEAN && c.has_pooling_config && c.normalize, "minilm pooling %d/%d normalize %d",
             c.pooling, c.has_pooling_config, c.normalize);
    TU_CHECK(c.num_labels == 2, "bare model num_labels defaults to 2 like transformers, got %d", c.num_labels);
}

static void test_real_configs(void) {
    check_minilm(tu_path("fixtures/st/minilm"));
    const char *real = getenv("XR_MINILM_DIR");
    if (!real) real = "/work/models/all-MiniLM-L6-v2";
    if (xr_file_exists(real)) check_minilm(real);
    else printf("note: %s absent, real MiniLM directory not checked (fixture copy was)\n", real);

    ModelConfig c;
    XrErr e;
    int rc = hf_load_config(tu_path("fixtures/st/tiny_bert_cls"), &c, &e);
    TU_CHECK(rc == 0, "tiny_bert_cls: %s", e.msg);
    if (rc == 0) {
        TU_CHECK(c.family == ARCH_BERT && c.is_seq_cls && c.num_labels == 1 &&
                     strcmp(c.architecture, "BertForSequenceClassification") == 0,
                 "tiny bert head: fam %d cls %d labels %d", c.family, c.is_seq_cls, c.num_labels);
        TU_CHECK(c.vocab_size == 99 && c.hidden == 32 && c.intermediate == 37 && c.layers == 5 && c.heads == 4 &&
                     c.max_pos == 40 && c.type_vocab == 2 && c.pad_id == 0,
                 "tiny bert sizes");
        TU_CHECK(c.pooling == POOL_CLS && !c.has_pooling_config && !c.normalize, "defaults: CLS, no normalize");
    }
    rc = hf_load_config(tu_path("fixtures/st/tiny_xlmr_cls"), &c, &e);
    TU_CHECK(rc == 0, "tiny_xlmr_cls: %s", e.msg);
    if (rc == 0) {
        TU_CHECK(c.family == ARCH_XLMR && c.is_seq_cls && c.num_labels == 3 && strcmp(c.model_type, "xlm-roberta") == 0,
                 "tiny xlmr head: fam %d cls %d labels %d", c.family, c.is_seq_cls, c.num_labels);
        TU_CHECK(c.vocab_size == 101 && c.hidden == 32 && c.intermediate == 37 && c.layers == 5 && c.heads == 4 &&
                     c.max_pos == 42 && c.type_vocab == 1 && c.pad_id == 1,
                 "tiny xlmr sizes V%d P%d T%d pad%d", c.vocab_size, c.max_pos, c.type_vocab, c.pad_id);
    }
    rc = hf_load_config(tu_path("fixtures/st/tiny_bert_model"), &c, &e);
    TU_CHECK(rc == 0 && !c.is_seq_cls && c.num_labels == 2 && c.hidden == 32, "tiny_bert_model: %s",
             rc ? e.msg : "wrong values");
}

/* Write <tmp>/<name>/config.json = tiny_bert_cls's config with `edit` applied. */
static char *variant(const char *name, void (*edit)(cJSON *)) {
    XrErr e;
    size_t len;
    char *txt = xr_read_file(tu_path("fixtures/st/tiny_bert_cls/config.json"), &len, &e);
    if (!txt) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    if (edit) edit(j);
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    char *dir = tmp_join(name);
    mkdirs(dir);
    char *p = xr_path_join(dir, "config.json");
    put_file(p, out);
    free(p);
    free(out);
    return dir;
}

static void set_str(cJSON *j, const char *k, const char *v) {
    if (cJSON_GetObjectItem(j, k)) cJSON_ReplaceItemInObject(j, k, cJSON_CreateString(v));
    else cJSON_AddStringToObject(j, k, v);
}
static void set_num(cJSON *j, const char *k, double v) {
    if (cJSON_GetObjectItem(j, k)) cJSON_ReplaceItemInObject(j, k, cJSON_CreateNumber(v));
    else cJSON_AddNumberToObject(j, k, v);
}
static void ed_gpt2(cJSON *j) { set_str(j, "model_type", "gpt2"); }
static void ed_no_hidden(cJSON *j) { cJSON_DeleteItemFromObject(j, "hidden_size"); }
static void ed_heads(cJSON *j) { set_num(j, "hidden_size", 30); }
static void ed_relu(cJSON *j) { set_str(j, "hidden_act", "relu"); }
static void ed_relpos(cJSON *j) { set_str(j, "position_embedding_type", "relative_key"); }
static void ed_hidden_str(cJSON *j) { set_str(j, "hidden_size", "32"); }
static void ed_layers_frac(cJSON *j) { set_num(j, "num_hidden_layers", 2.5); }
static void ed_arch_mismatch(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "architectures", cJSON_CreateStringArray((const char *[]){"GPT2LMHeadModel"}, 1));
}
static void ed_no_model_type(cJSON *j) { cJSON_DeleteItemFromObject(j, "model_type"); }
static void ed_labels_disagree(cJSON *j) { set_num(j, "num_labels", 4); }
static void ed_pad_oob(cJSON *j) { set_num(j, "pad_token_id", 99); }
/* Accepted variants */
static void ed_no_arch_no_labels(cJSON *j) {
    cJSON_DeleteItemFromObject(j, "architectures");
    cJSON_DeleteItemFromObject(j, "id2label");
    cJSON_DeleteItemFromObject(j, "label2id");
}
static void ed_cls_no_labels(cJSON *j) {
    cJSON_DeleteItemFromObject(j, "id2label");
    cJSON_DeleteItemFromObject(j, "label2id");
}
static void ed_cls_num_labels5(cJSON *j) {
    ed_cls_no_labels(j);
    set_num(j, "num_labels", 5);
}
static void ed_roberta(cJSON *j) {
    set_str(j, "model_type", "roberta");
    cJSON_ReplaceItemInObject(j, "architectures",
                              cJSON_CreateStringArray((const char *[]){"RobertaForSequenceClassification"}, 1));
    set_num(j, "pad_token_id", 1);
}
static void ed_mlm(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "architectures", cJSON_CreateStringArray((const char *[]){"BertForMaskedLM"}, 1));
    cJSON_DeleteItemFromObject(j, "pad_token_id");
    cJSON_DeleteItemFromObject(j, "layer_norm_eps");
    cJSON_DeleteItemFromObject(j, "type_vocab_size");
}

static void expect_bad_cfg(const char *what, const char *dir, const char *const *needles) {
    ModelConfig c;
    XrErr e = {{0}};
    int rc = hf_load_config(dir, &c, &e);
    TU_CHECK(rc == -1, "%s: accepted a bad config", what);
    if (rc == 0) return;
    for (int i = 0; needles[i]; i++)
        TU_CHECK(strstr(e.msg, needles[i]) != NULL, "%s: message lacks \"%s\": %s", what, needles[i], e.msg);
    printf("  %-22s -> %s\n", what, e.msg);
}
#define EXPECT_BAD(what, dir, ...) expect_bad_cfg(what, dir, (const char *const[]){__VA_ARGS__, NULL})

static void test_config_variants(void) {
    char *d;
#define BAD(what, name, edit, ...)                                \
    d = variant(name, edit);                                      \
    EXPECT_BAD(what, d, "config.json", __VA_ARGS__);              \
    free(d)
    BAD("unknown model_type", "gpt2", ed_gpt2, "model_type \"gpt2\"", "bert, xlm-roberta, roberta");
    BAD("no model_type", "nomt", ed_no_model_type, "model_type", "bert, xlm-roberta, roberta");
    BAD("missing hidden_size", "nohidden", ed_no_hidden, "hidden_size", "missing");
    BAD("hidden % heads", "heads", ed_heads, "hidden_size 30", "num_attention_heads 4");
    BAD("hidden_act relu", "relu", ed_relu, "hidden_act \"relu\"", "gelu");
    BAD("relative positions", "relpos", ed_relpos, "relative_key", "absolute");
    BAD("hidden_size string", "hstr", ed_hidden_str, "hidden_size", "integer");
    BAD("fractional layers", "lfrac", ed_layers_frac, "num_hidden_layers", "integer");
    BAD("arch mismatch", "archmis", ed_arch_mismatch, "GPT2LMHeadModel", "bert");
    BAD("labels disagree", "labels", ed_labels_disagree, "num_labels 4", "id2label");
    BAD("pad outside vocab", "padoob", ed_pad_oob, "pad_token_id 99", "vocab_size 99");
#undef BAD
    char *dir = tmp_join("notjson");
    mkdirs(dir);
    char *p = xr_path_join(dir, "config.json");
    put_file(p, "{\n  \"model_type\": \"bert\",\n  \"hidden_size\": 32,,\n}\n");
    EXPECT_BAD("config not JSON", dir, "config.json:3", "not valid JSON");
    free(p);
    free(dir);
    dir = tmp_join("empty-dir");
    mkdirs(dir);
    EXPECT_BAD("no config.json", dir, "config.json", "cannot open");
    free(dir);

    ModelConfig c;
    XrErr e;
    d = variant("noarch", ed_no_arch_no_labels);
    int rc = hf_load_config(d, &c, &e);
    TU_CHECK(rc == 0 && !c.is_seq_cls && c.num_labels == 2 && strcmp(c.architecture, "BertModel") == 0,
             "no architectures = bare encoder: %s", rc ? e.msg : c.architecture);
    free(d);
    d = variant("cls2", ed_cls_no_labels);
    rc = hf_load_config(d, &c, &e);
    TU_CHECK(rc == 0 && c.is_seq_cls && c.num_labels == 2, "seq-cls without id2label: 2 labels like transformers (%d)",
             rc ? -1 : c.num_labels);
    free(d);
    d = variant("cls5", ed_cls_num_labels5);
    rc = hf_load_config(d, &c, &e);
    TU_CHECK(rc == 0 && c.num_labels == 5, "num_labels without id2label (%s)", rc ? e.msg : "");
    free(d);
    d = variant("roberta", ed_roberta);
    rc = hf_load_config(d, &c, &e);
    TU_CHECK(rc == 0 && c.family == ARCH_ROBERTA && c.is_seq_cls && c.pad_id == 1, "roberta: %s", rc ? e.msg : "");
    free(d);
    d = variant("mlm", ed_mlm);
    rc = hf_load_config(d, &c, &e);
    TU_CHECK(rc == 0 && !c.is_seq_cls && c.pad_id == 0 && c.type_vocab == 2 && c.ln_eps == 1e-12f &&
                 strcmp(c.architecture, "BertForMaskedLM") == 0,
             "BertForMaskedLM = bare encoder with BertConfig defaults: %s", rc ? e.msg : "");
    free(d);
}

/* modules.json + pooling config variants on top of the tiny BERT config. */
static void test_pooling(void) {
    struct {
        const char *name, *modules, *pool;
        int ok, pooling, normalize;
        const char *err;
    } cases[] = {
        {"pool_cls",
         "[{\"idx\":0,\"name\":\"0\",\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
         "{\"idx\":1,\"name\":\"1\",\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"}]",
         "{\"word_embedding_dimension\":32,\"pooling_mode_cls_token\":true,\"pooling_mode_mean_tokens\":false}", 1,
         POOL_CLS, 0, NULL},
        {"pool_mean_norm",
         "[{\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
         "{\"path\":\"p\",\"type\":\"sentence_transformers.models.Pooling\"},"
         "{\"path\":\"2_Normalize\",\"type\":\"sentence_transformers.models.Normalize\"}]",
         "{\"pooling_mode_cls_token\":false,\"pooling_mode_mean_tokens\":true,\"pooling_mode_max_tokens\":false}", 1,
         POOL_MEAN, 1, NULL},
        {"pool_max", "[{\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"}]",
         "{\"pooling_mode_cls_token\":false,\"pooling_mode_max_tokens\":true}", 0, 0, 0, "pooling_mode_max_tokens"},
        {"pool_both", "[{\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"}]",
         "{\"pooling_mode_cls_token\":true,\"pooling_mode_mean_tokens\":true}", 0, 0, 0, "both"},
        {"pool_missing", "[{\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"}]", NULL, 0, 0, 0,
         "1_Pooling/config.json"},
        {"modules_bad", "{\"not\":\"an array\"}", NULL, 0, 0, 0, "modules.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *d = variant(cases[i].name, NULL);
        char *p = xr_path_join(d, "modules.json");
        put_file(p, cases[i].modules);
        free(p);
        if (cases[i].pool) {
            const char *sub = strstr(cases[i].modules, "\"path\":\"p\"") ? "p" : "1_Pooling";
            char *pd = xr_path_join(d, sub);
            mkdirs(pd);
            p = xr_path_join(pd, "config.json");
            put_file(p, cases[i].pool);
            free(p);
            free(pd);
        }
        ModelConfig c;
        XrErr e = {{0}};
        int rc = hf_load_config(d, &c, &e);
        if (cases[i].ok) {
            TU_CHECK(rc == 0 && c.pooling == (PoolingMode)cases[i].pooling && c.has_pooling_config &&
                         c.normalize == cases[i].normalize,
                     "%s: rc %d pooling %d normalize %d %s", cases[i].name, rc, c.pooling, c.normalize, e.msg);
        } else {
            TU_CHECK(rc == -1 && strstr(e.msg, cases[i].err), "%s: want error with \"%s\", got: %s", cases[i].name,
                     cases[i].err, rc ? e.msg : "success");
            if (rc) printf("  %-22s -> %s\n", cases[i].name, e.msg);
        }
        free(d);
    }
}

static void set_mtime(const char *path, time_t t) {
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    utimensat(AT_FDCWD, path, ts, 0);
}

/* A fake hub cache: models--org--name/snapshots/<hash>/ with refs/main, resolved without any network. */
static void test_resolve(void) {
    XrErr e;
    char *home = tmp_join("hfhome");
    char *snaps = tmp_join("hfhome/hub/models--acme--tiny-reranker/snapshots");
    char *old = xr_path_join(snaps, "1111aaaa"), *newer = xr_path_join(snaps, "2222bbbb");
    mkdirs(old);
    mkdirs(newer);
    set_mtime(old, 1000000000);
    set_mtime(newer, 1100000000);
    unsetenv("HF_HUB_CACHE");
    setenv("HF_HOME", home, 1);

    char want[PATH_MAX];
    /* no refs/main: newest snapshot by mtime */
    char *r = hf_resolve_model("acme/tiny-reranker", &e);
    TU_CHECK(r && realpath(newer, want) && strcmp(r, want) == 0, "newest snapshot: got %s", r ? r : e.msg);
    free(r);
    /* refs/main wins over mtimes */
    char *refs = tmp_join("hfhome/hub/models--acme--tiny-reranker/refs");
    mkdirs(refs);
    char *refmain = xr_path_join(refs, "main");
    put_file(refmain, "1111aaaa\n");
    r = hf_resolve_model("acme/tiny-reranker", &e);
    TU_CHECK(r && realpath(old, want) && strcmp(r, want) == 0, "refs/main snapshot: got %s", r ? r : e.msg);
    free(r);
    /* refs/main naming a missing snapshot falls back to the newest */
    put_file(refmain, "deadbeef");
    r = hf_resolve_model("acme/tiny-reranker", &e);
    TU_CHECK(r && realpath(newer, want) && strcmp(r, want) == 0, "stale refs/main: got %s", r ? r : e.msg);
    free(r);
    /* HF_HUB_CACHE takes precedence over HF_HOME */
    char *hubcache = tmp_join("othercache");
    char *snap2 = tmp_join("othercache/models--acme--tiny-reranker/snapshots/3333cccc");
    mkdirs(snap2);
    setenv("HF_HUB_CACHE", hubcache, 1);
    r = hf_resolve_model("acme/tiny-reranker", &e);
    TU_CHECK(r && realpath(snap2, want) && strcmp(r, want) == 0, "HF_HUB_CACHE: got %s", r ? r : e.msg);
    free(r);
    unsetenv("HF_HUB_CACHE");
    /* not downloaded: the error says where it looked and that nothing is downloaded */
    r = hf_resolve_model("BAAI/bge-reranker-v2-m3", &e);
    TU_CHECK(r == NULL && strstr(e.msg, "models--BAAI--bge-reranker-v2-m3") && strstr(e.msg, home) &&
                 strstr(e.msg, "Nothing is downloaded"),
             "missing hub model: %s", r ? r : e.msg);
    if (!r) printf("  %-22s -> %s\n", "hub id not cached", e.msg);
    free(r);
    /* a local directory is returned as its real path; a file or a missing path is an error */
    r = hf_resolve_model(tu_path("fixtures/st/minilm/1_Pooling/.."), &e);
    TU_CHECK(r && realpath(tu_path("fixtures/st/minilm"), want) && strcmp(r, want) == 0, "local dir: %s",
             r ? r : e.msg);
    free(r);
    r = hf_resolve_model(tu_path("fixtures/st/minilm/config.json"), &e);
    TU_CHECK(r == NULL && strstr(e.msg, "is a file"), "file as model: %s", r ? r : e.msg);
    free(r);
    r = hf_resolve_model("./no/such/dir", &e);
    TU_CHECK(r == NULL && strstr(e.msg, "no such model directory"), "missing path: %s", r ? r : e.msg);
    free(r);
    unsetenv("HF_HOME");
    free(home);
    free(snaps);
    free(old);
    free(newer);
    free(refs);
    free(refmain);
    free(hubcache);
    free(snap2);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/xr_hf_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_real_configs();
    test_config_variants();
    test_pooling();
    test_resolve();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", tmpdir);
    return tu_finish("test_hfmodel");
}
