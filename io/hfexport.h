/* hfexport.h: write a Hugging Face model directory for a fine-tuned sequence-classification model: config.json
 * (the base model's, with the architecture, num_labels / id2label set), model.safetensors (F32, metadata
 * {"format": "pt"}, the tensor names transformers saves) and the base model's tokenizer files. The directory is
 * built under a temporary name and renamed into place, so a reader never sees half of it. */
#ifndef XR_HFEXPORT_H
#define XR_HFEXPORT_H
#include "safetensors.h"
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Write out (replacing an existing directory of that name: only one holding config.json or nothing) from
 * the tensors t[0..n) and the base model directory base_dir (config.json and tokenizer files). architecture:
 * e.g. "BertForSequenceClassification"; num_labels: the head's outputs. model_max_length > 0: the copy of
 * tokenizer_config.json gets that model_max_length (the length the model was trained with, as
 * sentence-transformers' CrossEncoder saves its max_length); 0 copies the tokenizer files byte for byte. */
int hf_export_dir(const char *out, const char *base_dir, const StWriteTensor *t, int n, const char *architecture,
                  int num_labels, int model_max_length, XrErr *e);

/* The files of such a directory (config.json, model.safetensors, tokenizer files) written into the existing
 * directory dir, as hf_export_dir writes them (checkpoints hold them next to their other files). */
int hf_write_model_files(const char *dir, const char *base_dir, const StWriteTensor *t, int n,
                         const char *architecture, int num_labels, int model_max_length, XrErr *e);

/* Copy config.json from src to dst naming the activation sentence-transformers' CrossEncoder applies to the
 * logits (sigmoid != 0: Sigmoid, else Identity), in the v4+ key and the older one; other keys kept. */
int hf_write_st_activation(const char *src, const char *dst, int sigmoid, XrErr *e);

/* The *ForSequenceClassification class of a config's model_type ("bert", "xlm-roberta", "roberta"); NULL when
 * unknown. */
const char *hf_seq_cls_architecture(const char *model_type);

#ifdef __cplusplus
}
#endif
#endif
