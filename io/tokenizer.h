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

/* Encode text (n bytes, need not be NUL terminated) without special tokens. Appends to *ids (realloc'd,
 * *cap its capacity) and returns the number of ids appended (>= 0). */
int tok_encode(const Tokenizer *t, const char *text, size_t n, int32_t **ids, size_t *cap);

/* Build model inputs with special tokens. max_len counts the specials (HF semantics); <= 0 means no truncation.
 * out_ids / out_types must hold max(max_len, len needed); returns the sequence length. */
int tok_single(const Tokenizer *t, const int32_t *a, int na, int max_len, int32_t *out_ids, int32_t *out_types);
int tok_pair(const Tokenizer *t, const int32_t *a, int na, const int32_t *b, int nb, int max_len, int32_t *out_ids,
             int32_t *out_types);
/* Number of special tokens the template adds (2 single; 3 BERT pair, 4 XLM-R pair). */
int tok_num_special(const Tokenizer *t, int pair);

/* Piece string for an id (for decoding / inspection); NULL when out of range. */
const char *tok_id_to_piece(const Tokenizer *t, int id);

#ifdef __cplusplus
}
#endif
#endif
