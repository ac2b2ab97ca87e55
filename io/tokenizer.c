/* tokenizer.c: the Tokenizer of tokenizer.h: loading (vocab.txt + tokenizer_config.json, or
 * sentencepiece.bpe.model through the spm shim), UTF-8 repair, special-token matching, and the HF templates with
 * the Rust tokenizers' longest_first truncation. The models: wordpiece.c (BERT), spm_norm.c + unigram.c (XLM-R). */
#include "tokenizer.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "spm_shim.h"
#include "tok_internal.h"

#define TOK_MAX_SPECIAL 5

typedef struct {
    char s[12];
    int len;
    int id;
} TokSpecial;

struct Tokenizer {
    TokKind kind;
    WpVocab *wp;
    int vocab_size, model_max_length;
    int cls, sep, pad, unk, mask;
    uint64_t fp;
    /* HF matches special tokens on the raw text (normalized=False) and encodes the pieces between them alone. */
    TokSpecial special[TOK_MAX_SPECIAL];
    int n_special;
    char special_lead; /* '[' or '<': every special token starts with it */
    /* XLM-R: libsentencepiece loads and validates the model; encoding then follows HF's pipeline, which is not
     * spm's: charsmap normalization per grapheme (spm_norm.c) and HF's Unigram Viterbi (unigram.c). */
    SpmNorm *norm;
    UgModel *ug;
};

/* ---------------------------------------------------------------- loading */

static void tok_add_special(Tokenizer *t, const char *s, int id) {
    if (id < 0) return;
    assert(t->n_special < TOK_MAX_SPECIAL && strlen(s) < sizeof t->special[0].s);
    TokSpecial *sp = &t->special[t->n_special++];
    memcpy(sp->s, s, strlen(s) + 1);
    sp->len = (int)strlen(s);
    sp->id = id;
}

static uint64_t tok_hash_opts(uint64_t h, int kind, const WpOptions *o) {
    unsigned char b[4] = {(unsigned char)kind, (unsigned char)(o ? o->lowercase : 0),
                          (unsigned char)(o ? o->strip_accents : 0), (unsigned char)(o ? o->chinese_chars : 0)};
    return xr_hash64(b, sizeof b, h);
}

/* A WordPiece tokenizer from vocab.txt bytes (path names them in errors). */
static Tokenizer *tok_load_wp_buf(const char *buf, size_t n, const char *vocab_txt, const WpOptions *opt,
                                  int model_max_length, XrErr *e) {
    WpVocab *wp = wp_load(buf, n, vocab_txt, opt, e);
    if (!wp) return NULL;
    Tokenizer *t = xr_calloc(1, sizeof *t);
    t->kind = TOK_WORDPIECE;
    t->wp = wp;
    t->fp = tok_hash_opts(xr_hash64(buf, n, 0x746f6b656e697aULL), TOK_WORDPIECE, opt);
    static const char *need[4] = {"[CLS]", "[SEP]", "[PAD]", "[UNK]"};
    int ids[4];
    for (int i = 0; i < 4; i++) {
        ids[i] = wp_find(wp, need[i], strlen(need[i]));
        if (ids[i] < 0) {
            xr_errf(e, "%s: vocabulary has no %s token (a BERT vocab.txt needs [CLS], [SEP], [PAD] and [UNK])",
                    vocab_txt, need[i]);
            tok_free(t);
            return NULL;
        }
    }
    t->cls = ids[0], t->sep = ids[1], t->pad = ids[2], t->unk = ids[3];
    t->mask = wp_find(wp, "[MASK]", 6);
    wp_set_unk(wp, t->unk);
    t->vocab_size = wp_size(wp);
    t->model_max_length = model_max_length;
    t->special_lead = '[';
    tok_add_special(t, "[PAD]", t->pad);
    tok_add_special(t, "[UNK]", t->unk);
    tok_add_special(t, "[CLS]", t->cls);
    tok_add_special(t, "[SEP]", t->sep);
    tok_add_special(t, "[MASK]", t->mask);
    return t;
}

static Tokenizer *tok_load_wp_opts(const char *vocab_txt, const WpOptions *opt, int model_max_length, XrErr *e) {
    size_t n;
    /* wp_load keeps 32-bit offsets into the vocabulary's bytes */
    char *buf = xr_read_file_max(vocab_txt, UINT32_MAX - 1, "WordPiece vocabulary", &n, e);
    if (!buf) return NULL;
    Tokenizer *t = tok_load_wp_buf(buf, n, vocab_txt, opt, model_max_length, e);
    free(buf);
    return t;
}

Tokenizer *tok_load_wordpiece(const char *vocab_txt, int do_lower_case, XrErr *e) {
    WpOptions o = {do_lower_case != 0, do_lower_case != 0, 1};
    return tok_load_wp_opts(vocab_txt, &o, 512, e);
}

Tokenizer *tok_load_wordpiece_ex(const char *vocab_txt, int do_lower_case, int strip_accents, int chinese_chars,
                                 XrErr *e) {
    WpOptions o = {do_lower_case != 0, strip_accents < 0 ? do_lower_case != 0 : strip_accents != 0,
                   chinese_chars != 0};
    return tok_load_wp_opts(vocab_txt, &o, 512, e);
}

Tokenizer *tok_load_sentencepiece(const char *spm_model, XrErr *e) {
    size_t n;
    /* protobuf parses at most 2 GiB */
    char *buf = xr_read_file_max(spm_model, INT32_MAX, "SentencePiece model", &n, e);
    if (!buf) return NULL;
    char err[1024];
    SpmShim *sp = spm_shim_load(buf, n, err, sizeof err);
    SpmNorm *norm = sp ? spm_norm_from_model(buf, n, err, sizeof err) : NULL;
    if (!norm) {
        if (sp) spm_shim_free(sp);
        xr_errf(e, "%s: %s", spm_model, err);
        spm_norm_free(norm);
        free(buf);
        return NULL;
    }
    if (spm_shim_piece_size(sp) < 4) {
        xr_errf(e, "%s: sentencepiece model has only %d pieces (XLM-R needs <unk>, <s>, </s> and more)", spm_model,
                spm_shim_piece_size(sp));
        spm_shim_free(sp);
        spm_norm_free(norm);
        free(buf);
        return NULL;
    }
    Tokenizer *t = xr_calloc(1, sizeof *t);
    t->kind = TOK_SENTENCEPIECE;
    t->norm = norm;
    t->ug = ug_build(sp);
    spm_shim_free(sp); /* everything needed is copied into the Unigram model */
    t->fp = tok_hash_opts(xr_hash64(buf, n, 0x746f6b656e697aULL), TOK_SENTENCEPIECE, NULL);
    free(buf);
    /* fairseq ids: <s>=0 <pad>=1 </s>=2 <unk>=3, spm piece k>=3 -> k+1, <mask> after the last piece. */
    t->cls = 0, t->pad = 1, t->sep = 2, t->unk = 3;
    t->vocab_size = ug_size(t->ug);
    t->mask = t->vocab_size - 1;
    t->model_max_length = 512;
    t->special_lead = '<';
    tok_add_special(t, "<s>", 0);
    tok_add_special(t, "<pad>", 1);
    tok_add_special(t, "</s>", 2);
    tok_add_special(t, "<unk>", 3);
    tok_add_special(t, "<mask>", t->mask);
    return t;
}

/* tokenizer_config.json: the few keys that change tokenization. Absent file: HF defaults. */
typedef struct {
    int lower, strip, chinese, max_len;
} TokConfig;

static int tok_read_config(const char *dir, TokConfig *c, XrErr *e) {
    c->lower = 1, c->strip = -1, c->chinese = 1, c->max_len = 512;
    char *path = xr_path_join(dir, "tokenizer_config.json");
    if (!xr_file_exists(path)) {
        free(path);
        return 0;
    }
    size_t n;
    char *buf = xr_read_file_max(path, XR_JSON_MAX_BYTES, "tokenizer_config.json", &n, e);
    if (!buf) {
        free(path);
        return -1;
    }
    cJSON *j = cJSON_ParseWithLength(buf, n);
    if (!j || !cJSON_IsObject(j)) {
        const char *at = cJSON_GetErrorPtr();
        xr_errf(e, "%s: not a JSON object (parse error at byte offset %ld)", path,
                j ? 0L : (at && at >= buf && at <= buf + n ? (long)(at - buf) : -1L));
        cJSON_Delete(j);
        free(buf);
        free(path);
        return -1;
    }
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "do_lower_case")) && cJSON_IsBool(v)) c->lower = cJSON_IsTrue(v);
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "strip_accents")) && cJSON_IsBool(v)) c->strip = cJSON_IsTrue(v);
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "tokenize_chinese_chars")) && cJSON_IsBool(v))
        c->chinese = cJSON_IsTrue(v);
    /* transformers writes a huge integer (1e30) for "no limit": keep the 512 default then. */
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "model_max_length")) && cJSON_IsNumber(v) && v->valuedouble >= 1 &&
        v->valuedouble <= 1e7)
        c->max_len = (int)v->valuedouble;
    cJSON_Delete(j);
    free(buf);
    free(path);
    return 0;
}

/* A BERT tokenizer saved by transformers 5 as tokenizer.json alone: the WordPiece model's vocab (token -> id)
 * becomes the vocab.txt bytes transformers would have written (one token per line in id order), so the
 * fingerprint equals that of the same vocabulary read from vocab.txt; the BertNormalizer's switches override
 * tokenizer_config.json's, as the fast tokenizer obeys them. */
static Tokenizer *tok_load_wp_json(const char *path, const TokConfig *c, XrErr *e) {
    size_t n;
    char *buf = xr_read_file_max(path, XR_JSON_MAX_BYTES, "tokenizer.json", &n, e);
    if (!buf) return NULL;
    cJSON *j = cJSON_ParseWithLength(buf, n);
    free(buf);
    Tokenizer *t = NULL;
    const cJSON *model = j ? cJSON_GetObjectItemCaseSensitive(j, "model") : NULL;
    const cJSON *type = model ? cJSON_GetObjectItemCaseSensitive(model, "type") : NULL;
    const cJSON *vocab = model ? cJSON_GetObjectItemCaseSensitive(model, "vocab") : NULL;
    const cJSON *prefix = model ? cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix") : NULL;
    if (!cJSON_IsObject(j)) {
        xr_errf(e, "%s: not a JSON object", path);
    } else if (!cJSON_IsString(type) || strcmp(type->valuestring, "WordPiece") != 0) {
        xr_errf(e, "%s: model type %s: without vocab.txt or sentencepiece.bpe.model only a WordPiece tokenizer.json is "
                   "supported", path, cJSON_IsString(type) ? type->valuestring : "(missing)");
    } else if (!cJSON_IsObject(vocab)) {
        xr_errf(e, "%s: model.vocab is not an object of token -> id", path);
    } else if (cJSON_IsString(prefix) && strcmp(prefix->valuestring, "##") != 0) {
        xr_errf(e, "%s: continuing_subword_prefix \"%s\" (BERT WordPiece uses \"##\")", path, prefix->valuestring);
    } else {
        int nv = cJSON_GetArraySize(vocab), ok = 1;
        const char **tok = xr_calloc(nv > 0 ? (size_t)nv : 1, sizeof *tok);
        size_t total = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, vocab) {
            double id = cJSON_IsNumber(v) ? v->valuedouble : -1;
            if (id < 0 || id >= nv || id != (int)id || tok[(int)id] || strchr(v->string, '\n')) {
                xr_errf(e, "%s: model.vocab entry \"%s\": ids must be 0..%d, each once (tokens without newlines)", path,
                        v->string, nv - 1);
                ok = 0;
                break;
            }
            tok[(int)id] = v->string;
            total += strlen(v->string) + 1;
        }
        if (ok) {
            char *txt = xr_malloc(total + 1), *w = txt;
            for (int i = 0; i < nv; i++) {
                size_t l = strlen(tok[i]);
                memcpy(w, tok[i], l);
                w += l;
                *w++ = '\n';
            }
            WpOptions o = {c->lower, c->strip < 0 ? c->lower : c->strip, c->chinese};
            const cJSON *norm = cJSON_GetObjectItemCaseSensitive(j, "normalizer"), *x;
            if (norm && (x = cJSON_GetObjectItemCaseSensitive(norm, "type")) && cJSON_IsString(x) &&
                !strcmp(x->valuestring, "BertNormalizer")) {
                if ((x = cJSON_GetObjectItemCaseSensitive(norm, "lowercase")) && cJSON_IsBool(x)) o.lowercase = cJSON_IsTrue(x);
                o.strip_accents = o.lowercase; /* null: follows lowercase */
                if ((x = cJSON_GetObjectItemCaseSensitive(norm, "strip_accents")) && cJSON_IsBool(x))
                    o.strip_accents = cJSON_IsTrue(x);
                if ((x = cJSON_GetObjectItemCaseSensitive(norm, "handle_chinese_chars")) && cJSON_IsBool(x))
                    o.chinese_chars = cJSON_IsTrue(x);
            }
            t = tok_load_wp_buf(txt, (size_t)(w - txt), path, &o, c->max_len, e);
            free(txt);
        }
        free(tok);
    }
    cJSON_Delete(j);
    return t;
}

Tokenizer *tok_load(const char *model_dir, XrErr *e) {
    TokConfig c;
    char *vocab = xr_path_join(model_dir, "vocab.txt");
    char *spm = xr_path_join(model_dir, "sentencepiece.bpe.model");
    char *tj = xr_path_join(model_dir, "tokenizer.json");
    Tokenizer *t = NULL;
    if (tok_read_config(model_dir, &c, e) != 0) {
        /* e filled */
    } else if (xr_file_exists(vocab)) {
        WpOptions o = {c.lower, c.strip < 0 ? c.lower : c.strip, c.chinese};
        t = tok_load_wp_opts(vocab, &o, c.max_len, e);
    } else if (xr_file_exists(spm)) {
        t = tok_load_sentencepiece(spm, e);
        if (t) t->model_max_length = c.max_len;
    } else if (xr_file_exists(tj)) {
        t = tok_load_wp_json(tj, &c, e);
    } else {
        xr_errf(e, "%s: no tokenizer found: expected %s (BERT WordPiece), %s (XLM-R SentencePiece) or a WordPiece "
                   "tokenizer.json", model_dir, vocab, spm);
    }
    free(vocab);
    free(spm);
    free(tj);
    return t;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    wp_free(t->wp);
    spm_norm_free(t->norm);
    ug_free(t->ug);
    free(t);
}

TokKind tok_kind(const Tokenizer *t) { return t->kind; }
int tok_vocab_size(const Tokenizer *t) { return t->vocab_size; }
int tok_model_max_length(const Tokenizer *t) { return t->model_max_length; }
uint64_t tok_fingerprint(const Tokenizer *t) { return t->fp; }
int tok_cls_id(const Tokenizer *t) { return t->cls; }
int tok_sep_id(const Tokenizer *t) { return t->sep; }
int tok_pad_id(const Tokenizer *t) { return t->pad; }
int tok_unk_id(const Tokenizer *t) { return t->unk; }
int tok_mask_id(const Tokenizer *t) { return t->mask; }
const WpVocab *tok_wordpiece_vocab(const Tokenizer *t) { return t->wp; }

const char *tok_id_to_piece(const Tokenizer *t, int id) {
    if (t->kind == TOK_WORDPIECE) return wp_piece(t->wp, id);
    return ug_piece_str(t->ug, id);
}

/* ---------------------------------------------------------------- encoding */

/* One piece of text between special tokens (valid UTF-8). */
static void tok_encode_segment(const Tokenizer *t, const char *s, size_t n, int32_t **ids, size_t *cap, size_t *len,
                               char **scratch, size_t *scap, UgScratch *ug) {
    if (n == 0) return;
    if (t->kind == TOK_WORDPIECE) {
        wp_encode(t->wp, s, n, ids, cap, len);
        return;
    }
    size_t m = spm_norm_apply(t->norm, s, n, scratch, scap);
    ug_encode(t->ug, *scratch, m, ug, ids, cap, len);
}

int tok_encode(const Tokenizer *t, const char *text, size_t n, int32_t **ids, size_t *cap) {
    char *fixed = NULL, *scratch = NULL;
    UgScratch ug = {0};
    size_t fcap = 0, scap = 0, len = 0;
    if (tok_utf8_valid_prefix(text, n) != n) {
        n = tok_utf8_lossy(text, n, &fixed, &fcap, NULL);
        text = fixed;
    }
    size_t seg = 0, i = 0;
    while (i < n) {
        const char *p = memchr(text + i, t->special_lead, n - i);
        if (!p) break;
        i = (size_t)(p - text);
        const TokSpecial *best = NULL;
        for (int k = 0; k < t->n_special; k++) {
            const TokSpecial *sp = &t->special[k];
            if ((size_t)sp->len <= n - i && memcmp(text + i, sp->s, (size_t)sp->len) == 0 &&
                (!best || sp->len > best->len))
                best = sp;
        }
        if (!best) {
            i++;
            continue;
        }
        tok_encode_segment(t, text + seg, i - seg, ids, cap, &len, &scratch, &scap, &ug);
        if (len == *cap || !*ids) {
            *cap = *cap ? *cap * 2 : 64;
            *ids = xr_realloc(*ids, *cap * sizeof(int32_t));
        }
        (*ids)[len++] = best->id;
        i += (size_t)best->len;
        seg = i;
    }
    tok_encode_segment(t, text + seg, n - seg, ids, cap, &len, &scratch, &scap, &ug);
    free(fixed);
    free(scratch);
    ug_scratch_free(&ug);
    assert(len <= INT_MAX);
    return (int)len;
}

/* ---------------------------------------------------------------- templates and truncation */

int tok_num_special(const Tokenizer *t, int pair) {
    if (!pair) return 2;
    return t->kind == TOK_WORDPIECE ? 3 : 4;
}

void tok_truncate_lengths(const Tokenizer *t, int na, int nb, int max_len, int *ka, int *kb) {
    *ka = na;
    if (kb) *kb = nb;
    if (max_len <= 0) return;
    int room = max_len - tok_num_special(t, nb >= 0);
    /* The Rust tokenizer cannot truncate below the specials: it then leaves both sequences whole. */
    if (room < 0) return;
    if (nb < 0) {
        if (na > room) *ka = room;
        return;
    }
    if (na + nb <= room) return;
    /* tokenizers' TruncationStrategy::LongestFirst, with n1 the shorter side. */
    int n1 = na, n2 = nb, swap = 0;
    if (n1 > n2) {
        n1 = nb, n2 = na, swap = 1;
    }
    if (n1 > room) n2 = n1;
    else
        n2 = n1 > room - n1 ? n1 : room - n1;
    if (n1 + n2 > room) {
        n1 = room / 2;
        n2 = n1 + room % 2;
    }
    if (swap) {
        int x = n1;
        n1 = n2, n2 = x;
    }
    *ka = n1 < na ? n1 : na;
    *kb = n2 < nb ? n2 : nb;
}

int tok_seq_len(const Tokenizer *t, int na, int nb, int max_len) {
    int ka, kb = 0;
    tok_truncate_lengths(t, na, nb, max_len, &ka, &kb);
    return ka + (nb >= 0 ? kb : 0) + tok_num_special(t, nb >= 0);
}

int tok_single(const Tokenizer *t, const int32_t *a, int na, int max_len, int32_t *out_ids, int32_t *out_types) {
    int ka;
    tok_truncate_lengths(t, na, -1, max_len, &ka, NULL);
    int k = 0;
    out_ids[k++] = t->cls;
    memcpy(out_ids + k, a, sizeof(int32_t) * (size_t)ka);
    k += ka;
    out_ids[k++] = t->sep;
    if (out_types) memset(out_types, 0, sizeof(int32_t) * (size_t)k);
    return k;
}

int tok_pair(const Tokenizer *t, const int32_t *a, int na, const int32_t *b, int nb, int max_len, int32_t *out_ids,
             int32_t *out_types) {
    int ka, kb;
    tok_truncate_lengths(t, na, nb, max_len, &ka, &kb);
    int k = 0;
    out_ids[k++] = t->cls;
    memcpy(out_ids + k, a, sizeof(int32_t) * (size_t)ka);
    k += ka;
    out_ids[k++] = t->sep;
    if (t->kind == TOK_SENTENCEPIECE) out_ids[k++] = t->sep; /* <s> A </s></s> B </s> */
    int kfirst = k;
    memcpy(out_ids + k, b, sizeof(int32_t) * (size_t)kb);
    k += kb;
    out_ids[k++] = t->sep;
    if (out_types) {
        int second = t->kind == TOK_WORDPIECE; /* XLM-R: token types all 0 */
        for (int i = 0; i < k; i++) out_types[i] = i < kfirst ? 0 : second;
    }
    return k;
}
