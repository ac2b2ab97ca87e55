/* model.h: the encoder (BERT / XLM-R / RoBERTa) loaded from a Hugging Face model directory, its forward
 * pass on the CPU backend (fp32), both classification heads and the bi-encoder poolings.
 * Parameters live in one flat f32 buffer with named views (llm.c style) so optimizer, all-reduce and
 * checkpoint code later see one buffer. */
#ifndef XR_MODEL_H
#define XR_MODEL_H
#include "hfmodel.h"
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Encoder Encoder;

/* A padded batch: B sequences of T tokens, row-major [B*T]. mask: 1 real token, 0 padding.
 * types: token type ids (all 0 for XLM-R). Built by batch_* in core/batch.h. */
typedef struct {
    int B, T;
    int32_t *ids, *types, *mask;
} Batch;

/* Load config.json + model.safetensors (or the first *.safetensors) of a resolved model directory.
 * Missing or mis-shaped tensors are errors that name the tensor. */
Encoder *encoder_load(const char *model_dir, XrErr *e);
void encoder_free(Encoder *m);
const ModelConfig *encoder_config(const Encoder *m);
/* Number of parameters (all float tensors, head included). */
int64_t encoder_num_params(const Encoder *m);

/* Last hidden states [B*T*H]. */
void encoder_forward_hidden(Encoder *m, const Batch *b, float *hidden);
/* Sequence-classification logits [B*num_labels]; the model must have a head (cfg.is_seq_cls). */
void encoder_forward_score(Encoder *m, const Batch *b, float *logits);
/* Pooled embeddings [B*H] (CLS or masked mean), L2-normalised when normalize != 0. */
void encoder_forward_embed(Encoder *m, const Batch *b, PoolingMode pool, int normalize, float *emb);

#ifdef __cplusplus
}
#endif
#endif
