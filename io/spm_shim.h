/* spm_shim.h: a minimal C API over libsentencepiece (C++), so the tokenizer stays in C. Ids returned are the
 * model's own SentencePiece ids; the fairseq / XLM-R id mapping is done by the caller (tokenizer.c). */
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
/* Piece string of an id (valid until spm_shim_free); NULL when out of range. */
const char *spm_shim_id_to_piece(const SpmShim *s, int id);
/* Encode valid UTF-8 text (n bytes); appends raw spm ids to *ids (realloc'd, *cap its capacity, in int32s) at
 * offset *len and advances *len. Returns 0, or -1 on an internal sentencepiece error (message in err). */
int spm_shim_encode(const SpmShim *s, const char *text, size_t n, int32_t **ids, size_t *cap, size_t *len,
                    char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
