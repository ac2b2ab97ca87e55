/* spm_shim.h: a minimal C API over libsentencepiece (C++), so the tokenizer stays in C: it loads and validates a
 * .model file and hands out its pieces and scores (ids are the model's own; the fairseq mapping is in unigram.c).
 * Encoding is done in C (spm_norm.c, unigram.c) because HF's pipeline differs from spm's in a few cases. */
#ifndef XR_SPM_SHIM_H
#define XR_SPM_SHIM_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct SpmShim SpmShim;

/* Load a serialized ModelProto (the bytes of a .model file). On failure returns NULL and writes a message
 * (without the file name) into err[errlen]. */
SpmShim *spm_shim_load(const void *model_bytes, size_t n, char *err, size_t errlen);
void spm_shim_free(SpmShim *s);
int spm_shim_piece_size(const SpmShim *s);
int spm_shim_unk_id(const SpmShim *s);
float spm_shim_score(const SpmShim *s, int id);
/* Piece string of an id (valid until spm_shim_free); NULL when out of range. */
const char *spm_shim_id_to_piece(const SpmShim *s, int id);
#ifdef __cplusplus
}
#endif
#endif
