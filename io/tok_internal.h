/* tok_internal.h: pieces shared by tokenizer.c and wordpiece.c (not a public API): the WordPiece vocabulary and
 * encoder, and (through tok_utf8.h) the UTF-8 helpers both tokenizers use. Text reaching wp_encode is always
 * valid UTF-8. */
#ifndef XR_TOK_INTERNAL_H
#define XR_TOK_INTERNAL_H
#include "tok_utf8.h" /* tok_utf8_decode / encode / valid_prefix / lossy */
#include "xr_common.h"

typedef struct WpVocab WpVocab;

typedef struct {
    int lowercase;      /* do_lower_case */
    int strip_accents;  /* NFD + drop Mn; HF default: same as lowercase */
    int chinese_chars;  /* spaces around CJK ideographs (tokenize_chinese_chars) */
} WpOptions;

/* Parse vocab.txt bytes (one token per line, id = line number, as transformers' load_vocab). */
WpVocab *wp_load(const char *buf, size_t n, const char *path, const WpOptions *opt, XrErr *e);
void wp_free(WpVocab *v);
int wp_size(const WpVocab *v);
int wp_find(const WpVocab *v, const char *tok, size_t n); /* id or -1 */
const char *wp_piece(const WpVocab *v, int id);
void wp_set_unk(WpVocab *v, int unk_id);
/* Normalize and pre-tokenize valid UTF-8 text, calling emit for each word (bytes w[0..n), nchars code points;
 * a word over 100 chars comes with only its first 101 chars). The test uses it to compare with HF's
 * normalizer + pre-tokenizer code point by code point. */
typedef void (*WpWordFn)(const WpVocab *v, void *ctx, const char *w, size_t n, int nchars);
void wp_split(const WpVocab *v, const char *text, size_t n, WpWordFn emit, void *ctx);
/* Normalize, pre-tokenize and WordPiece-encode valid UTF-8 text; appends ids at (*ids)[*len]. */
void wp_encode(const WpVocab *v, const char *text, size_t n, int32_t **ids, size_t *cap, size_t *len);

/* HF's Precompiled normalizer over a SentencePiece model's charsmap (spm_norm.c). */
typedef struct SpmNorm SpmNorm;
/* The normalizer of a serialized ModelProto's charsmap (pass-through when it has none); NULL + message in err
 * when the protobuf is malformed. */
SpmNorm *spm_norm_from_model(const void *model, size_t n, char *err, size_t errlen);
void spm_norm_free(SpmNorm *s);
/* First (shortest) charsmap match of a prefix of key[0..n): 1 and the replacement, or 0. */
int spm_norm_match(const SpmNorm *s, const char *key, size_t n, const char **out, size_t *out_len);
/* Normalize valid UTF-8 into *buf (realloc'd, *cap); whitespace comes out as ' '. Returns the length. */
size_t spm_norm_apply(const SpmNorm *s, const char *text, size_t n, char **buf, size_t *cap);

/* HF's Unigram model over the fairseq vocabulary (unigram.c). */
typedef struct UgModel UgModel;
typedef struct {
    double *best;
    int32_t *from, *tok;
    size_t cap;
    char *word;
    size_t wcap;
} UgScratch;
struct SpmShim;
UgModel *ug_build(const struct SpmShim *sp);
void ug_free(UgModel *m);
const char *ug_piece_str(const UgModel *m, int id); /* NULL when out of range */
int ug_size(const UgModel *m);
/* Encode normalized text (spm_norm_apply output); appends fairseq ids at (*ids)[*len]. */
void ug_encode(const UgModel *m, const char *s, size_t n, UgScratch *sc, int32_t **ids, size_t *cap, size_t *len);
void ug_scratch_free(UgScratch *sc);

struct Tokenizer;
/* The WordPiece vocab of a WordPiece tokenizer (NULL for SentencePiece). */
const WpVocab *tok_wordpiece_vocab(const struct Tokenizer *t);

/* Rust char::is_whitespace (Unicode White_Space), which both HF pre-tokenizers split on. */
static inline int tok_is_rust_ws(int32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}
#endif
