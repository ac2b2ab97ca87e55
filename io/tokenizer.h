/* tokenizer.h: exact Hugging Face tokenizers in C: BERT WordPiece (vocab.txt) and XLM-R SentencePiece
 * (sentencepiece.bpe.model through the io/spm shim, fairseq id mapping). Encoding returns ids without
 * special tokens; tok_pair / tok_single apply the model's template and longest_first truncation. */
#ifndef XR_TOKENIZER_H
#define XR_TOKENIZER_H
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TOK_WORDPIECE = 1, TOK_SENTENCEPIECE = 2 } TokKind;

typedef struct Tokenizer Tokenizer;

/* Load the tokenizer of a model directory (vocab.txt + tokenizer_config.json, or sentencepiece.bpe.model). */
Tokenizer *tok_load(const char *model_dir, XrErr *e);
Tokenizer *tok_load_wordpiece(const char *vocab_txt, int do_lower_case, XrErr *e);
/* strip_accents: -1 = HF default (same as do_lower_case), 0 / 1 forced; chinese_chars: tokenize_chinese_chars. */
Tokenizer *tok_load_wordpiece_ex(const char *vocab_txt, int do_lower_case, int strip_accents, int chinese_chars,
                                 XrErr *e);
Tokenizer *tok_load_sentencepiece(const char *spm_model, XrErr *e);
void tok_free(Tokenizer *t);

TokKind tok_kind(const Tokenizer *t);
int tok_vocab_size(const Tokenizer *t);
int tok_model_max_length(const Tokenizer *t); /* from tokenizer_config.json, else 512 */
uint64_t tok_fingerprint(const Tokenizer *t); /* hash of the vocabulary / model file and options */
int tok_cls_id(const Tokenizer *t);           /* [CLS] / <s> */
int tok_sep_id(const Tokenizer *t);           /* [SEP] / </s> */
int tok_pad_id(const Tokenizer *t);           /* [PAD] / <pad> */
int tok_unk_id(const Tokenizer *t);
int tok_mask_id(const Tokenizer *t);          /* [MASK] / <mask>; -1 when the vocab has none */

/* Encode text (n bytes, need not be NUL terminated) without special tokens. Writes the ids to (*ids)[0..ret)
 * (*ids realloc'd as needed, *cap its capacity in ids) and returns their number (>= 0). Invalid UTF-8 is first
 * repaired as Rust's String::from_utf8_lossy does (each maximal invalid subpart -> U+FFFD). Special-token strings
 * in the text ("[SEP]", "<s>", ...) become their ids, as in HF. Thread-safe on a shared Tokenizer. */
int tok_encode(const Tokenizer *t, const char *text, size_t n, int32_t **ids, size_t *cap);

/* Build model inputs with special tokens. max_len counts the specials (HF semantics); <= 0 means no truncation.
 * out_ids / out_types must hold max(max_len, len needed); returns the sequence length. */
int tok_single(const Tokenizer *t, const int32_t *a, int na, int max_len, int32_t *out_ids, int32_t *out_types);
int tok_pair(const Tokenizer *t, const int32_t *a, int na, const int32_t *b, int nb, int max_len, int32_t *out_ids,
             int32_t *out_types);
/* Number of special tokens the template adds (2 single; 3 BERT pair, 4 XLM-R pair). */
int tok_num_special(const Tokenizer *t, int pair);
/* Lengths that tok_single (nb < 0) / tok_pair keep of A and B under max_len (the Rust tokenizers' longest_first;
 * when max_len is below the number of specials nothing is cut, as in HF). kb may be NULL when nb < 0. */
void tok_truncate_lengths(const Tokenizer *t, int na, int nb, int max_len, int *ka, int *kb);
/* Exact length tok_single (nb < 0) / tok_pair will return. */
int tok_seq_len(const Tokenizer *t, int na, int nb, int max_len);

/* Piece string for an id (for decoding / inspection); NULL when out of range. */
const char *tok_id_to_piece(const Tokenizer *t, int id);

#ifdef __cplusplus
}
#endif
#endif
