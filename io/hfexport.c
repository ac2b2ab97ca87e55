/* hfexport.c: the HF model directory writer of hfexport.h: config rewrite with cJSON, safetensors through
 * st_write, byte copies of the tokenizer files, then the temporary directory renamed over the target. */
#define _GNU_SOURCE
#include "hfexport.h"
#include "xr_fs.h"
#include "xr_tmpclean.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

/* What AutoTokenizer reads for the BERT / XLM-R / RoBERTa families, copied when the base has them. */
static const char *const HF_TOKENIZER_FILES[] = {
    "tokenizer.json",  "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "sentencepiece.bpe.model", "added_tokens.json", "vocab.json", "merges.txt", "spiece.model",
};

const char *hf_seq_cls_architecture(const char *model_type) {
    if (!strcmp(model_type, "bert")) return "BertForSequenceClassification";
    if (!strcmp(model_type, "xlm-roberta")) return "XLMRobertaForSequenceClassification";
    if (!strcmp(model_type, "roberta")) return "RobertaForSequenceClassification";
    return NULL;
}

/* The JSON object of src, changed by edit, written to dst with a final newline (as transformers writes it);
 * every key edit does not touch is kept. */
static int hf_edit_json(const char *src, const char *dst, void (*edit)(cJSON *j, const void *ctx), const void *ctx,
                        XrErr *e) {
    size_t len;
    char *text = xr_read_file(src, &len, e);
    if (!text) return -1;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return xr_errf(e, "%s: not a JSON object", src);
    }
    edit(j, ctx);
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    if (!out) return xr_errf(e, "%s: cannot serialise JSON", dst);
    size_t n = strlen(out);
    char *buf = xr_malloc(n + 1);
    memcpy(buf, out, n);
    buf[n] = '\n';
    cJSON_free(out);
    int rc = xr_write_file(dst, buf, n + 1, 0, e);
    free(buf);
    return rc;
}

static void hf_replace(cJSON *j, const char *key, cJSON *value) {
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    cJSON_AddItemToObject(j, key, value);
}

/* tokenizer_config.json: model_max_length = the length the model was trained with, so that xrank, transformers
 * and sentence-transformers (whose CrossEncoder saves its max_length the same way) default to it. */
static void hf_edit_max_length(cJSON *j, const void *ctx) {
    hf_replace(j, "model_max_length", cJSON_CreateNumber(*(const int *)ctx));
}

typedef struct {
    const char *architecture;
    int num_labels;
} HfHead;

static void hf_edit_activation(cJSON *j, const void *ctx);

/* config.json: the sequence-classification architecture and its labels, and the CrossEncoder activation
 * Identity, so that CrossEncoder(dir).predict gives the raw logit as xrank score does (without the key it
 * applies a sigmoid to a one-label head); xrank export may name Sigmoid instead. */
static void hf_edit_head(cJSON *j, const void *ctx) {
    const HfHead *h = ctx;
    const char *arch[1] = {h->architecture};
    hf_replace(j, "architectures", cJSON_CreateStringArray(arch, 1));
    cJSON_DeleteItemFromObjectCaseSensitive(j, "num_labels");
    cJSON *id2 = cJSON_CreateObject(), *l2i = cJSON_CreateObject();
    for (int i = 0; i < h->num_labels; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "%d", i);
        snprintf(v, sizeof v, "LABEL_%d", i);
        cJSON_AddStringToObject(id2, k, v);
        cJSON_AddNumberToObject(l2i, v, i);
    }
    hf_replace(j, "id2label", id2);
    hf_replace(j, "label2id", l2i);
    const int identity = 0;
    hf_edit_activation(j, &identity);
}

/* config.json: the activation sentence-transformers' CrossEncoder applies (v4+ key and the older one). */
static void hf_edit_activation(cJSON *j, const void *ctx) {
    const char *act = *(const int *)ctx ? "torch.nn.modules.activation.Sigmoid" : "torch.nn.modules.linear.Identity";
    cJSON *st = cJSON_CreateObject();
    cJSON_AddStringToObject(st, "activation_fn", act);
    hf_replace(j, "sentence_transformers", st);
    hf_replace(j, "sbert_ce_default_activation_function", cJSON_CreateString(act));
}

int hf_write_st_activation(const char *src, const char *dst, int sigmoid, XrErr *e) {
    return hf_edit_json(src, dst, hf_edit_activation, &sigmoid, e);
}

static int hf_write_config(const char *base_dir, const char *path, const char *architecture, int num_labels,
                           XrErr *e) {
    char *src = xr_path_join(base_dir, "config.json");
    HfHead h = {architecture, num_labels};
    int rc = hf_edit_json(src, path, hf_edit_head, &h, e);
    free(src);
    return rc;
}

int hf_write_model_files(const char *dir, const char *base_dir, const StWriteTensor *t, int n,
                         const char *architecture, int num_labels, int model_max_length, XrErr *e) {
    int rc = 0;
    char *p = NULL;
    if (rc == 0) {
        p = xr_path_join(dir, "config.json");
        rc = hf_write_config(base_dir, p, architecture, num_labels, e);
        free(p);
    }
    if (rc == 0) {
        const char *meta[2] = {"format", "pt"};
        p = xr_path_join(dir, "model.safetensors");
        rc = st_write(p, t, n, meta, 1, 0, e);
        free(p);
    }
    for (size_t i = 0; rc == 0 && i < sizeof HF_TOKENIZER_FILES / sizeof HF_TOKENIZER_FILES[0]; i++) {
        char *src = xr_path_join(base_dir, HF_TOKENIZER_FILES[i]);
        if (xr_file_exists(src)) {
            p = xr_path_join(dir, HF_TOKENIZER_FILES[i]);
            rc = model_max_length > 0 && !strcmp(HF_TOKENIZER_FILES[i], "tokenizer_config.json")
                     ? hf_edit_json(src, p, hf_edit_max_length, &model_max_length, e)
                     : xr_copy_file(src, p, 0, e);
            free(p);
        }
        free(src);
    }
    return rc;
}

int hf_export_dir(const char *out, const char *base_dir, const StWriteTensor *t, int n, const char *architecture,
                  int num_labels, int model_max_length, XrErr *e) {
    struct stat sb;
    if (stat(out, &sb) == 0) {
        char *cj = xr_path_join(out, "config.json");
        int model_dir = S_ISDIR(sb.st_mode) && xr_file_exists(cj);
        free(cj);
        int empty = xr_dir_is_empty(out);
        if (!S_ISDIR(sb.st_mode) || (!model_dir && !empty))
            return xr_errf(e, "%s exists and is not a model directory: not replacing it", out);
    }
    char *tmp = xr_tmpclean_name(out);
    xr_tmpclean_add(tmp); /* before it exists: SIGINT / SIGTERM / SIGHUP from here on remove it */
    xr_remove_flat_dir(tmp);
    int rc = 0;
    if (mkdir(tmp, 0755)) rc = xr_errf(e, "cannot create %s: %s", tmp, strerror(errno));
    if (rc == 0) rc = hf_write_model_files(tmp, base_dir, t, n, architecture, num_labels, model_max_length, e);
    if (rc == 0) rc = xr_tmpclean_commit_dir(tmp, out, e);
    if (rc) xr_remove_flat_dir(tmp); /* nothing when it is in place already */
    xr_tmpclean_forget(tmp);
    free(tmp);
    return rc;
}
