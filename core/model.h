/* model.h: the encoder (BERT / XLM-R / RoBERTa) loaded from a Hugging Face model directory, its forward
 * pass through the op API (CPU backend by default, fp32), both classification heads and the poolings.
 * Parameters live in one flat f32 buffer with named views (llm.c style) so optimizer, all-reduce and
 * checkpoint code later see one buffer. */
#ifndef XR_MODEL_H
#define XR_MODEL_H
#include "hfmodel.h"
#include "ops.h"
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Encoder Encoder;

/* A padded batch: B sequences of T tokens, row-major [B*T]. mask: 1 real token, 0 padding.
 * types: token type ids (all 0 for XLM-R; NULL means all 0). Built by batch_* in core/batch.h. */
typedef struct {
    int B, T;
    int32_t *ids, *types, *mask;
} Batch;

/* Load config.json and the weights of a resolved model directory: every *.safetensors file in it (one file,
 * or the shards of a sharded checkpoint), F32/F16/BF16. Tensor names with or without the "bert." /
 * "roberta." prefix and legacy LayerNorm gamma/beta are accepted; integer tensors (position_ids) and tensors
 * the encoder does not use (e.g. an MLM head) are ignored. Missing or mis-shaped tensors are errors that
 * name the tensor and both shapes. */
Encoder *encoder_load(const char *model_dir, XrErr *e);
/* The same on a given backend (a CUDA one, or a CPU one shared by several encoders); the encoder does not
 * free it. encoder_load makes and owns a CPU backend. */
Encoder *encoder_load_on(const char *model_dir, Backend *be, XrErr *e);
void encoder_free(Encoder *m);
const ModelConfig *encoder_config(const Encoder *m);
/* Number of parameters (all float tensors, head included). */
int64_t encoder_num_params(const Encoder *m);

/* One named view into the flat parameter buffer, named as transformers' save_pretrained names it for this
 * architecture ("bert." / "roberta." prefix on the base model of *ForSequenceClassification, none on bare
 * models). Order: embeddings, layers 0..L-1, pooler (when present), head. Within a layer the query, key and
 * value weights (then their biases) are adjacent, so they form one [3H, H] matrix for a fused projection. */
typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    size_t offset; /* in floats from the start of the buffer */
    size_t numel;
} EncoderTensor;

int encoder_num_tensors(const Encoder *m);
const EncoderTensor *encoder_tensor(const Encoder *m, int i);
/* The flat parameter buffer (encoder_num_params floats, on the encoder's backend device). */
float *encoder_params(Encoder *m);
/* The backend the encoder runs on (encoder_load: CPU, threads from $OMP_NUM_THREADS or all cores until set). */
Backend *encoder_backend(Encoder *m);
void encoder_set_threads(Encoder *m, int n);

/* Check a batch against the model: every row right-padded with at least one real token (mask 1...1 0...0),
 * token ids inside the vocabulary, token types inside type_vocab_size, lengths within the position table.
 * The forward calls below die with this message on a bad batch; callers that want to recover check first. */
int encoder_check_batch(const Encoder *m, const Batch *b, XrErr *e);

/* The forward passes compute real tokens only (rows are packed, padding never enters a GEMM or the
 * attention), so the results for a sequence do not depend on how much padding its batch carries.
 * The workspace grows to the largest batch seen and is reused, so one Encoder serves one thread at a time.
 * Scores and CLS embeddings run the last layer for the first token only (all a head or CLS pooling reads).
 * Outputs are host arrays. */

/* Last hidden states [B*T*H]; rows at padded positions are 0. */
void encoder_forward_hidden(Encoder *m, const Batch *b, float *hidden);
/* Sequence-classification logits [B*num_labels]; the model must have a head (cfg.is_seq_cls). */
void encoder_forward_score(Encoder *m, const Batch *b, float *logits);
/* Pooled embeddings [B*H] (CLS = first token, or masked mean), L2-normalised when normalize != 0. */
void encoder_forward_embed(Encoder *m, const Batch *b, PoolingMode pool, int normalize, float *emb);

#ifdef __cplusplus
}
#endif
#endif
