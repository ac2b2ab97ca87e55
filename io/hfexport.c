/* hfexport.c: the HF model directory writer of hfexport.h: config rewrite with cJSON, safetensors through
 * st_write, byte copies of the tokenizer files, then the temporary directory renamed over the target. */
#define _GNU_SOURCE
#include "hfexport.h"

#include <dirent.h>
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

static int hf_copy_file(const char *src, const char *dst, XrErr *e) {
    size_t len;
    char *data = xr_read_file(src, &len, e);
    if (!data) return -1;
    FILE *f = fopen(dst, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;
    if (f && fclose(f)) ok = 0;
    free(data);
    return ok ? 0 : xr_errf(e, "cannot write %s: %s", dst, strerror(errno));
}

/* tokenizer_config.json with model_max_length set to max_len: the length the model was trained with, so that
 * xrank, transformers and sentence-transformers (whose CrossEncoder saves its max_length the same way) default
 * to it when they load the export. Every other key is kept. */
static int hf_write_tokenizer_config(const char *src, const char *dst, int max_len, XrErr *e) {
    size_t len;
    char *text = xr_read_file(src, &len, e);
    if (!text) return -1;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return xr_errf(e, "%s: not a JSON object", src);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(j, "model_max_length");
    cJSON_AddItemToObject(j, "model_max_length", cJSON_CreateNumber(max_len));
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    if (!out) return xr_errf(e, "%s: cannot serialise JSON", dst);
    FILE *f = fopen(dst, "wb");
    size_t n = strlen(out);
    int ok = f && fwrite(out, 1, n, f) == n && fputc('\n', f) != EOF;
    if (f && fclose(f)) ok = 0;
    free(out);
    return ok ? 0 : xr_errf(e, "cannot write %s: %s", dst, strerror(errno));
}

/* Remove a flat directory of files (our own output: no subdirectories). */
static void hf_remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char *p = xr_path_join(dir, de->d_name);
            unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int hf_write_config(const char *base_dir, const char *path, const char *architecture, int num_labels,
                           XrErr *e) {
    char *src = xr_path_join(base_dir, "config.json");
    size_t len;
    char *text = xr_read_file(src, &len, e);
    if (!text) {
        free(src);
        return -1;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        int rc = xr_errf(e, "%s: not a JSON object", src);
        free(src);
        return rc;
    }
    free(src);
    cJSON_DeleteItemFromObjectCaseSensitive(j, "architectures");
    const char *arch[1] = {architecture};
    cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray(arch, 1));
    cJSON_DeleteItemFromObjectCaseSensitive(j, "id2label");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "label2id");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "num_labels");
    cJSON *id2 = cJSON_CreateObject(), *l2i = cJSON_CreateObject();
    for (int i = 0; i < num_labels; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "%d", i);
        snprintf(v, sizeof v, "LABEL_%d", i);
        cJSON_AddStringToObject(id2, k, v);
        cJSON_AddNumberToObject(l2i, v, i);
    }
    cJSON_AddItemToObject(j, "id2label", id2);
    cJSON_AddItemToObject(j, "label2id", l2i);
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    FILE *f = fopen(path, "wb");
    int ok = f && fputs(out, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f)) ok = 0;
    cJSON_free(out);
    return ok ? 0 : xr_errf(e, "cannot write %s: %s", path, strerror(errno));
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
                     ? hf_write_tokenizer_config(src, p, model_max_length, e)
                     : hf_copy_file(src, p, e);
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
        DIR *d = S_ISDIR(sb.st_mode) ? opendir(out) : NULL;
        int empty = 1;
        struct dirent *de;
        while (d && (de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
        if (d) closedir(d);
        if (!S_ISDIR(sb.st_mode) || (!model_dir && !empty))
            return xr_errf(e, "%s exists and is not a model directory: not replacing it", out);
    }
    size_t tn = strlen(out) + 48;
    char *tmp = xr_malloc(tn), *old = xr_malloc(tn);
    snprintf(tmp, tn, "%s.tmp.%ld", out, (long)getpid());
    snprintf(old, tn, "%s.old.%ld", out, (long)getpid());
    hf_remove_dir(tmp);
    int rc = 0;
    if (mkdir(tmp, 0755)) rc = xr_errf(e, "cannot create %s: %s", tmp, strerror(errno));
    if (rc == 0) rc = hf_write_model_files(tmp, base_dir, t, n, architecture, num_labels, model_max_length, e);
    if (rc == 0) {
        int had = stat(out, &sb) == 0;
        if (had && rename(out, old)) rc = xr_errf(e, "cannot move %s aside: %s", out, strerror(errno));
        if (rc == 0 && rename(tmp, out)) {
            rc = xr_errf(e, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
            if (had) rename(old, out);
        }
        if (rc == 0 && had) hf_remove_dir(old);
    }
    if (rc) hf_remove_dir(tmp);
    free(tmp), free(old);
    return rc;
}
