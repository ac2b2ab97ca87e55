/* model.h: the encoder (BERT / XLM-R / RoBERTa) loaded from a Hugging Face model directory, its forward
 * pass through the op API (CPU backend by default, fp32), both classification heads and the poolings, and
 * its training: forward with saved activations and dropout, backward into a flat gradient buffer, new heads.
 * Parameters (and gradients) live in one flat f32 buffer with named views (llm.c style) so optimizer,
 * all-reduce and checkpoint code see one buffer. */
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

/* ------------------------------------------------------------------------------------------------------
 * Training (CPU backend; the CUDA backend lacks the backward ops yet and dies naming the first one).
 *
 * Per optimizer step, a trainer calls:
 *   encoder_zero_grads(m);
 *   for each micro-batch:  encoder_train_forward(m, &batch, &step, logits);
 *                          loss_*(logits, ..., dlogits)   (core/loss.h; scale dlogits by 1/accum)
 *                          encoder_train_backward(m, dlogits);       (gradients add up in encoder_grads)
 *   optim_clip_grad_norm / adamw_step on encoder_params + encoder_grads (core/optim.h).
 * Only the last forward's activations are kept: each forward must be followed by its backward.
 * ------------------------------------------------------------------------------------------------------ */

/* Dropout probabilities as transformers applies them: hidden (after the embeddings' LayerNorm and before each
 * residual add), attention (on the attention probabilities), classifier (the head's dropout(s): BERT after the
 * pooler, XLM-R before the dense layer and before out_proj). Read from config.json: hidden_dropout_prob,
 * attention_probs_dropout_prob, classifier_dropout (null: hidden_dropout_prob). Dropout is off when these are
 * 0 or when a step says dropout 0. */
typedef struct {
    float hidden, attention, classifier;
} EncoderDropout;
EncoderDropout encoder_dropout(const Encoder *m);
void encoder_set_dropout(Encoder *m, EncoderDropout d);

/* Turns a bare model (BertModel / XLMRobertaModel) into a *ForSequenceClassification model with num_labels
 * outputs, as transformers initialises a head missing from a checkpoint: weights normal(0,
 * initializer_range) (config.json, default 0.02), biases 0, drawn from the counter-based generator with `seed`
 * (the values cannot match torch's generator). BERT gets a pooler only when the checkpoint had none; a bare
 * XLM-R / RoBERTa checkpoint's pooler is dropped (their seq-cls models have none). Tensors
 * are renamed with the "bert." / "roberta." prefix, the config says is_seq_cls and the architecture; the
 * parameter buffer is reallocated (earlier encoder_params / encoder_grads pointers become invalid).
 * Fails when the model already has a head. */
int encoder_init_head(Encoder *m, int num_labels, uint64_t seed, XrErr *e);

/* Whether weight decay applies to a tensor, as transformers' Trainer decides: not for biases and LayerNorm
 * weights (names matching bias, layernorm, rmsnorm, norm), yes for every other weight and the embeddings. */
int encoder_tensor_decays(const EncoderTensor *t);

/* The flat gradient buffer: encoder_num_params floats on the encoder's device, the same layout (and tensor
 * views) as encoder_params. Allocated and zeroed on first use. */
float *encoder_grads(Encoder *m);
void encoder_zero_grads(Encoder *m);
/* Moves the parameters and gradients into buffers the caller owns (encoder_num_params floats each on the
 * encoder's device; NULL keeps that buffer): for data-parallel ranks of one node that share memory (one copy
 * of the parameters per node, gradients the peers sum in place: dist/gradsync.c). The parameters are copied
 * into the new buffer when copy_params (else it must hold them already: one rank of the node copies); the
 * gradients start at zero. Views move with them; earlier encoder_params / encoder_grads pointers become
 * invalid. The encoder never frees lent buffers: the caller keeps them alive until encoder_free. */
void encoder_use_buffers(Encoder *m, float *params, int copy_params, float *grads);
/* Back to buffers of its own: the parameters copied out of the lent buffer, the gradients dropped (zero on next
 * use). Call before the lent buffers go away. */
void encoder_private_buffers(Encoder *m);

/* What makes a training forward's dropout masks: a mask element is a pure function of (seed, step, dropout
 * site, example id, position), so it does not depend on batch composition, padding, packing, thread or
 * rank count. */
typedef struct {
    uint64_t seed;               /* the run's seed */
    uint64_t step;               /* optimizer step (all micro-batches of one step share it) */
    const uint64_t *example_ids; /* [B] host: a distinct id per row within the step (e.g. the pair's global
                                  * index in the epoch's order); NULL: the row index, so micro-batches of one
                                  * step would repeat masks: pass ids when accumulating */
    int dropout;                 /* 0: no dropout (the eval forward; exactness tests) */
} EncoderTrainStep;

/* Sequence-classification forward that keeps what the backward needs (the model must have a head).
 * logits [B*num_labels] host. With dropout off the logits equal encoder_forward_score's (up to rounding).
 * The last layer runs for the first token only, which is exact for a head's loss. */
void encoder_train_forward(Encoder *m, const Batch *b, const EncoderTrainStep *step, float *logits);
/* Backward of the last encoder_train_forward: dlogits [B*num_labels] host, d loss / d logits. Adds the
 * gradient of every parameter into encoder_grads. The word (and XLM-R position) embedding row of the
 * padding id stays 0, as torch's padding_idx does. */
void encoder_train_backward(Encoder *m, const float *dlogits);

/* Told during encoder_train_backward that the gradients of params [lo, hi) of the flat buffer are final for this
 * backward (no later op of the pass writes them): the head first, then each layer from the last, then the
 * embeddings, so the ranges move down the buffer and together cover it. A data-parallel trainer starts reducing
 * them while the rest of the backward runs. fn NULL: no calls. */
typedef void (*EncoderGradReady)(void *ctx, size_t lo, size_t hi);
void encoder_set_grad_hook(Encoder *m, EncoderGradReady fn, void *ctx);

/* Training precision (ops_list.h, "training precision"). XR_PREC_BF16: the parameter buffer stays the fp32
 * master copy (what the optimizer updates, checkpoints and exports), every GEMM reads a bf16 working copy of
 * it, activations are stored in bf16, logits and loss stay fp32. XR_PREC_FP32 (the default): fp32 throughout.
 * Fails (e) when the backend lacks the ops; dies where a backend cannot run it yet (CUDA: bf16 activations). */
int encoder_set_precision(Encoder *m, XrPrecision prec, XrErr *e);
XrPrecision encoder_precision(const Encoder *m);
/* The optimizer changed the parameters (once per step, after the ZeRO all-gather): refreshes the bf16 working
 * copy, and the backend forgets the bf16 copy an inference forward may have left it (ops_infer_weights; remade at the
 * next forward). Code that writes encoder_params directly between inference forwards calls it too. Returns how many
 * fills the working copy has had (0 in fp32, where it refreshes nothing). */
int64_t encoder_weights_updated(Encoder *m);

/* ------------------------------------------------------------------------------------------------------
 * Memory: planned before the first step, not discovered.
 * ------------------------------------------------------------------------------------------------------ */

/* --gradient-checkpointing: the training forward keeps each layer's input only (and one layer's activations); the
 * backward recomputes each layer's activations from its input before using them. The dropout masks are
 * counter-based and the ops deterministic, so the gradients are bit-identical to the run without it. */
void encoder_set_gradient_checkpointing(Encoder *m, int on);
int encoder_gradient_checkpointing(const Encoder *m);
/* --attention-lse: the training attention saves each (query row, head)'s softmax log-sum-exp instead of the
 * probability matrix (ops_attention_train_lse / ops_attention_backward_lse): per layer NH floats a token instead
 * of NH L floats, the backward recomputing the probabilities. Off by default on every device (docs/DESIGN.md,
 * "Training attention"): off, training is bit-identical to the probability-saving path; on, the gradients agree
 * with it to fp32 rounding (tests/test_attention_lse.c), not bit for bit. */
void encoder_set_attention_lse(Encoder *m, int on);
int encoder_attention_lse(const Encoder *m);

/* Bytes one rank of a training run holds on its device, by what holds them. */
typedef struct {
    size_t weights;     /* the parameters (fp32) */
    size_t weights_copy; /* bf16 precision: the working copy every GEMM reads (ops_bf16_weights), 2 bytes a weight on
                          * a GPU, 4 on the CPU backend (its emulation holds bf16 values in fp32 words); 0 in fp32.
                          * The fp32 weights above are the master weights: there is no other master copy. */
    size_t moments;     /* AdamW's two moments of this rank's optimizer shard: the caller's part (gradsync) */
    size_t grads;       /* the flat gradient buffer */
    size_t activations; /* what the training forward saves for the backward, at the largest micro-batch */
    size_t workspace;   /* the backward's gradients of activations, the batch's device copies, the backend's scratch */
    size_t eval;        /* the inference workspace of evaluation batches (0 without evaluation) */
} EncoderMemPlan;

/* The plan for micro-batches of at most train_seqs sequences and evaluation batches of at most eval_seqs (0: no
 * evaluation), each sequence at most max_len tokens, with the current gradient checkpointing and precision
 * (encoder_set_precision) settings. Everything but the moments; the same sizes as the workspaces take at the
 * ceilings encoder_set_batch_limits sets. */
void encoder_train_plan(const Encoder *m, int train_seqs, int eval_seqs, int max_len, EncoderMemPlan *p);
size_t encoder_plan_total(const EncoderMemPlan *p);
/* Ceilings for the workspaces (0: none, the default): they grow with the batches seen, by half again, but never
 * past these, so the plan above bounds what they take. A batch beyond them dies naming the size (a bug of the
 * caller's plan). */
void encoder_set_batch_limits(Encoder *m, int train_seqs, int eval_seqs, int max_len);

#ifdef __cplusplus
}
#endif
#endif
