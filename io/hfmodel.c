/* hfmodel.c: Hugging Face model directories: resolving a path or hub id in the local HF cache (nothing is
 * downloaded), parsing config.json the way transformers does for the BERT / XLM-R / RoBERTa families, and
 * reading the sentence-transformers modules.json + pooling config. */
#define _XOPEN_SOURCE 700
#include "hfmodel.h"

#include "ckpt.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int hf_is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* A hub id is "org/name" (or a bare "name"): no leading '/' or '.', at most one '/', no "..". */
static int hf_looks_like_hub_id(const char *s) {
    if (!s[0] || s[0] == '/' || s[0] == '.' || s[0] == '~') return 0;
    if (strstr(s, "..")) return 0;
    int slashes = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '/') slashes++;
        else if (!(((*p | 32) >= 'a' && (*p | 32) <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
                   *p == '.'))
            return 0;
    }
    return slashes <= 1 && s[strlen(s) - 1] != '/';
}

/* The hub cache the way huggingface_hub picks it: HF_HUB_CACHE, else HF_HOME/hub, else
 * XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. */
static char *hf_hub_cache_dir(void) {
    const char *v = getenv("HF_HUB_CACHE");
    if (v && v[0]) return xr_strdup(v);
    v = getenv("HF_HOME");
    if (v && v[0]) return xr_path_join(v, "hub");
    v = getenv("XDG_CACHE_HOME");
    if (v && v[0]) return xr_path_join(v, "huggingface/hub");
    v = getenv("HOME");
    return xr_path_join(v && v[0] ? v : "/root", ".cache/huggingface/hub");
}

static char *hf_realpath_dup(const char *p, XrErr *e) {
    char *r = realpath(p, NULL);
    if (!r) {
        xr_errf(e, "%s: cannot resolve path: %s", p, strerror(errno));
        return NULL;
    }
    return r;
}

/* Newest directory under snapshots/ by mtime, or NULL. */
static char *hf_newest_snapshot(const char *snapdir) {
    DIR *d = opendir(snapdir);
    if (!d) return NULL;
    char *best = NULL;
    struct timespec best_t = {0, 0};
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *p = xr_path_join(snapdir, de->d_name);
        struct stat sb;
        if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode) &&
            (!best || sb.st_mtim.tv_sec > best_t.tv_sec ||
             (sb.st_mtim.tv_sec == best_t.tv_sec && sb.st_mtim.tv_nsec > best_t.tv_nsec))) {
            free(best);
            best = p;
            best_t = sb.st_mtim;
        } else {
            free(p);
        }
    }
    closedir(d);
    return best;
}

char *hf_resolve_model(const char *spec, XrErr *e) {
    if (!spec || !spec[0]) {
        xr_errf(e, "no model given: pass a model directory or a hub id such as BAAI/bge-reranker-v2-m3");
        return NULL;
    }
    if (hf_is_dir(spec)) {
        /* a training checkpoint is a model directory too, used only when its manifest's files check out */
        CkptManifest m;
        if (ckpt_is_checkpoint(spec)) {
            if (ckpt_open(spec, &m, 1, e)) return NULL;
            ckpt_manifest_free(&m);
        }
        return hf_realpath_dup(spec, e);
    }
    if (xr_file_exists(spec)) {
        xr_errf(e, "%s: is a file, a model must be a directory (with config.json) or a hub id", spec);
        return NULL;
    }
    if (!hf_looks_like_hub_id(spec)) {
        xr_errf(e, "%s: no such model directory", spec);
        return NULL;
    }
    char *cache = hf_hub_cache_dir();
    /* models--org--name: '/' becomes "--" */
    size_t n = strlen(spec);
    char *repo = xr_malloc(8 + 2 * n + 1);
    strcpy(repo, "models--");
    char *q = repo + 8;
    for (const char *p = spec; *p; p++) {
        if (*p == '/') *q++ = '-', *q++ = '-';
        else *q++ = *p;
    }
    *q = 0;
    char *repodir = xr_path_join(cache, repo);
    char *snapdir = xr_path_join(repodir, "snapshots");
    char *result = NULL;
    if (hf_is_dir(snapdir)) {
        /* refs/main names the commit the hub client last resolved: prefer it over mtimes. */
        char *refp = xr_path_join(repodir, "refs/main");
        size_t rl;
        char *ref = xr_file_exists(refp) ? xr_read_file(refp, &rl, NULL) : NULL;
        if (ref) {
            char *s = ref + strspn(ref, " \t\r\n");
            s[strcspn(s, " \t\r\n")] = 0;
            if (s[0] && !strchr(s, '/')) {
                char *cand = xr_path_join(snapdir, s);
                if (hf_is_dir(cand)) result = cand;
                else free(cand);
            }
            free(ref);
        }
        free(refp);
        if (!result) result = hf_newest_snapshot(snapdir);
    }
    if (!result) {
        xr_errf(e,
                "model '%s' is neither a local directory nor in the Hugging Face cache: looked for %s (cache dir "
                "from HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else "
                "~/.cache/huggingface/hub). Nothing is downloaded at run time: download it first (e.g. "
                "`huggingface-cli download %s`) or pass the model directory",
                spec, snapdir, spec);
    } else {
        char *r = hf_realpath_dup(result, e);
        free(result);
        result = r;
    }
    free(snapdir);
    free(repodir);
    free(repo);
    free(cache);
    return result;
}

/* ---- config.json ---- */

/* Read a JSON file into a cJSON tree; NULL with e filled. */
static cJSON *hf_read_json(const char *path, XrErr *e) {
    size_t len;
    char *txt = xr_read_file_max(path, XR_JSON_MAX_BYTES, "JSON file of a model directory", &len, e);
    if (!txt) return NULL;
    cJSON *j = cJSON_ParseWithLength(txt, len);
    if (!j) {
        const char *ep = cJSON_GetErrorPtr();
        long off = ep && ep >= txt && ep <= txt + len ? (long)(ep - txt) : -1;
        int line = 1;
        for (long i = 0; i < off; i++) line += txt[i] == '\n';
        xr_errf(e, "%s:%d: not valid JSON (near byte %ld)", path, line, off);
    }
    free(txt);
    return j;
}

/* Integer field: required (def ignored) or optional with default. Returns 0 / -1. */
static int hf_get_int(const cJSON *root, const char *path, const char *key, int required, int def, int minv,
                      int *out, XrErr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return xr_errf(e, "%s: missing required integer \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < INT_MIN ||
        v->valuedouble > INT_MAX)
        return xr_errf(e, "%s: \"%s\" must be an integer", path, key);
    if (v->valuedouble < minv)
        return xr_errf(e, "%s: \"%s\" is %d, must be >= %d", path, key, (int)v->valuedouble, minv);
    *out = (int)v->valuedouble;
    return 0;
}

static int hf_get_str(const cJSON *root, const char *path, const char *key, const char *def, char *out, size_t cap,
                      XrErr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    const char *s = def;
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) return xr_errf(e, "%s: \"%s\" must be a string", path, key);
        s = v->valuestring;
    }
    if (strlen(s) >= cap) return xr_errf(e, "%s: \"%s\" value '%.60s...' is too long", path, key, s);
    snprintf(out, cap, "%s", s);
    return 0;
}

static int hf_ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* modules.json + the Pooling module's config.json; absent modules.json leaves the defaults. */
static int hf_load_pooling(const char *dir, ModelConfig *cfg, XrErr *e) {
    char *mpath = xr_path_join(dir, "modules.json");
    if (!xr_file_exists(mpath)) {
        free(mpath);
        return 0;
    }
    int rc = -1;
    cJSON *mods = hf_read_json(mpath, e);
    char *ppath = NULL;
    cJSON *pc = NULL;
    if (!mods) goto out;
    if (!cJSON_IsArray(mods)) {
        xr_errf(e, "%s: expected a JSON array of modules", mpath);
        goto out;
    }
    const cJSON *m;
    const char *pool_dir = NULL;
    cJSON_ArrayForEach(m, mods) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(m, "type");
        const cJSON *mp = cJSON_GetObjectItemCaseSensitive(m, "path");
        if (!cJSON_IsString(type)) continue;
        if (hf_ends_with(type->valuestring, ".Normalize")) cfg->normalize = 1;
        if (hf_ends_with(type->valuestring, ".Pooling")) {
            if (!cJSON_IsString(mp)) {
                xr_errf(e, "%s: Pooling module has no \"path\"", mpath);
                goto out;
            }
            pool_dir = mp->valuestring;
        }
    }
    if (pool_dir) {
        char *pd = xr_path_join(dir, pool_dir);
        ppath = xr_path_join(pd, "config.json");
        free(pd);
        pc = hf_read_json(ppath, e);
        if (!pc) goto out;
        if (!cJSON_IsObject(pc)) {
            xr_errf(e, "%s: expected a JSON object", ppath);
            goto out;
        }
        int cls = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pc, "pooling_mode_cls_token"));
        int mean = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pc, "pooling_mode_mean_tokens"));
        /* Other modes (max, mean_sqrt_len, weightedmean, lasttoken) would concatenate or change the
         * embedding; refuse rather than silently compute something else. */
        static const char *other[] = {"pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                                       "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"};
        for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pc, other[i]))) {
                xr_errf(e, "%s: \"%s\" is not supported (only CLS or mean pooling)", ppath, other[i]);
                goto out;
            }
        if (cls + mean != 1) {
            xr_errf(e, "%s: exactly one of pooling_mode_cls_token / pooling_mode_mean_tokens must be true (got %s)",
                    ppath, cls ? "both" : "neither");
            goto out;
        }
        cfg->pooling = cls ? POOL_CLS : POOL_MEAN;
        cfg->has_pooling_config = 1;
    }
    rc = 0;
out:
    cJSON_Delete(pc);
    cJSON_Delete(mods);
    free(ppath);
    free(mpath);
    return rc;
}

int hf_load_config(const char *dir, ModelConfig *cfg, XrErr *e) {
    memset(cfg, 0, sizeof *cfg);
    char *path = xr_path_join(dir, "config.json");
    int rc = -1;
    cJSON *root = hf_read_json(path, e);
    if (!root) goto out;
    if (!cJSON_IsObject(root)) {
        xr_errf(e, "%s: expected a JSON object", path);
        goto out;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        xr_errf(e, "%s: missing \"model_type\" (supported: bert, xlm-roberta, roberta)", path);
        goto out;
    }
    const char *cls_prefix;
    int def_pad;
    if (strcmp(mt->valuestring, "bert") == 0) {
        cfg->family = ARCH_BERT, cls_prefix = "Bert", def_pad = 0;
    } else if (strcmp(mt->valuestring, "xlm-roberta") == 0) {
        cfg->family = ARCH_XLMR, cls_prefix = "XLMRoberta", def_pad = 1;
    } else if (strcmp(mt->valuestring, "roberta") == 0) {
        cfg->family = ARCH_ROBERTA, cls_prefix = "Roberta", def_pad = 1;
    } else {
        xr_errf(e, "%s: model_type \"%.64s\" is not supported (supported: bert, xlm-roberta, roberta)", path,
                mt->valuestring);
        goto out;
    }
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt->valuestring);

    /* architectures[0]: *ForSequenceClassification carries a head; Model, ForMaskedLM, ForPreTraining...
     * are loaded as the bare encoder (what transformers does when a classifier starts from them). */
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    if (archs && !cJSON_IsNull(archs) && !cJSON_IsArray(archs)) {
        xr_errf(e, "%s: \"architectures\" must be an array of strings", path);
        goto out;
    }
    if (a0) {
        if (!cJSON_IsString(a0)) {
            xr_errf(e, "%s: \"architectures\"[0] must be a string", path);
            goto out;
        }
        const char *a = a0->valuestring;
        size_t pl = strlen(cls_prefix);
        if (strncmp(a, cls_prefix, pl) != 0 || !(strncmp(a + pl, "Model", 5) == 0 || strncmp(a + pl, "For", 3) == 0) ||
            strlen(a) >= sizeof cfg->architecture) {
            xr_errf(e,
                    "%s: architecture \"%.96s\" does not match model_type \"%s\" (expected %sModel or "
                    "%sForSequenceClassification)",
                    path, a, mt->valuestring, cls_prefix, cls_prefix);
            goto out;
        }
        snprintf(cfg->architecture, sizeof cfg->architecture, "%s", a);
        cfg->is_seq_cls = strcmp(a + pl, "ForSequenceClassification") == 0;
    } else {
        snprintf(cfg->architecture, sizeof cfg->architecture, "%sModel", cls_prefix);
    }

    /* num_labels as transformers computes it: len(id2label) when present, else num_labels, else 2. */
    const cJSON *id2label = cJSON_GetObjectItemCaseSensitive(root, "id2label");
    if (id2label && !cJSON_IsNull(id2label)) {
        if (!cJSON_IsObject(id2label)) {
            xr_errf(e, "%s: \"id2label\" must be an object", path);
            goto out;
        }
        cfg->num_labels = cJSON_GetArraySize(id2label);
        int nl;
        if (hf_get_int(root, path, "num_labels", 0, cfg->num_labels, 1, &nl, e)) goto out;
        if (nl != cfg->num_labels) {
            xr_errf(e, "%s: num_labels %d disagrees with id2label's %d entries", path, nl, cfg->num_labels);
            goto out;
        }
    } else if (hf_get_int(root, path, "num_labels", 0, 2, 1, &cfg->num_labels, e)) {
        goto out;
    }
    if (cfg->num_labels < 1) {
        xr_errf(e, "%s: id2label is empty: a classifier needs at least one label", path);
        goto out;
    }

    /* Sizes are required: a config without them is not one transformers wrote for a trained model. */
    if (hf_get_int(root, path, "vocab_size", 1, 0, 1, &cfg->vocab_size, e) ||
        hf_get_int(root, path, "hidden_size", 1, 0, 1, &cfg->hidden, e) ||
        hf_get_int(root, path, "num_hidden_layers", 1, 0, 1, &cfg->layers, e) ||
        hf_get_int(root, path, "num_attention_heads", 1, 0, 1, &cfg->heads, e) ||
        hf_get_int(root, path, "intermediate_size", 1, 0, 1, &cfg->intermediate, e) ||
        hf_get_int(root, path, "max_position_embeddings", 1, 0, 1, &cfg->max_pos, e) ||
        hf_get_int(root, path, "type_vocab_size", 0, 2, 1, &cfg->type_vocab, e) ||
        hf_get_int(root, path, "pad_token_id", 0, def_pad, 0, &cfg->pad_id, e))
        goto out;
    if (cfg->hidden % cfg->heads) {
        xr_errf(e, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path, cfg->hidden, cfg->heads);
        goto out;
    }
    if (cfg->pad_id >= cfg->vocab_size) {
        xr_errf(e, "%s: pad_token_id %d is outside the vocabulary (vocab_size %d)", path, cfg->pad_id,
                cfg->vocab_size);
        goto out;
    }
    /* XLM-R / RoBERTa positions start at pad_id + 1, so the table must hold more than that. */
    if (cfg->family != ARCH_BERT && cfg->max_pos <= cfg->pad_id + 1) {
        xr_errf(e, "%s: max_position_embeddings %d leaves no positions after pad_token_id %d + 1", path,
                cfg->max_pos, cfg->pad_id);
        goto out;
    }
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_eps");
    if (!eps || cJSON_IsNull(eps)) {
        cfg->ln_eps = 1e-12f;
    } else if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0)) {
        xr_errf(e, "%s: \"layer_norm_eps\" must be a positive number", path);
        goto out;
    } else {
        cfg->ln_eps = (float)eps->valuedouble;
    }
    if (hf_get_str(root, path, "hidden_act", "gelu", cfg->hidden_act, sizeof cfg->hidden_act, e)) goto out;
    if (strcmp(cfg->hidden_act, "gelu") != 0) {
        xr_errf(e, "%s: hidden_act \"%s\" is not supported (only \"gelu\", the exact erf GELU)", path,
                cfg->hidden_act);
        goto out;
    }
    char pet[32];
    if (hf_get_str(root, path, "position_embedding_type", "absolute", pet, sizeof pet, e)) goto out;
    if (strcmp(pet, "absolute") != 0) {
        xr_errf(e, "%s: position_embedding_type \"%s\" is not supported (only \"absolute\")", path, pet);
        goto out;
    }
    cfg->pooling = POOL_CLS;
    if (hf_load_pooling(dir, cfg, e)) goto out;
    rc = 0;
out:
    cJSON_Delete(root);
    free(path);
    return rc;
}
