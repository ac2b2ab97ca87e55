/* model_internal.h: what the encoder's files share (core/model_*.c, one concern each): the layer views, the
 * inference and training workspaces, struct Encoder, and the few helpers more than one file calls. Not part of
 * the API (core/model.h is); nothing outside core/model_*.c includes it. */
#ifndef XR_MODEL_INTERNAL_H
#define XR_MODEL_INTERNAL_H
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"
#include "rng.h"

typedef struct {
    float *qkv_w, *qkv_b; /* [3H, H], [3H]: query, key, value adjacent */
    float *ao_w, *ao_b, *ln1_g, *ln1_b;
    float *fi_w, *fi_b, *fo_w, *fo_b, *ln2_g, *ln2_b;
} EncLayer;

/* Activation workspace for one batch, grown to the largest batch seen (tokens, sequences, length). */
typedef struct {
    int cap_tokens, cap_seqs, cap_len;
    float *x, *qkv, *ctx, *tmp, *ffn;  /* [N,H] [N,3H] [N,H] [N,H] [N,I] */
    float *first, *pooled, *logits;    /* [S,H] [S,H] [S,NL] */
    int32_t *ids, *pos, *types, *off;  /* device copies of the packed batch */
    int32_t *h_ids, *h_pos, *h_types, *h_off; /* host staging (shared with training, own capacities) */
    int cap_h_tokens, cap_h_seqs;
} EncWork;

/* Training workspace: every activation the backward pass reads, per layer, for the last training forward's
 * batch; grown to the largest batch seen (tokens, sequences, attention probabilities) and reused. */
typedef struct {
    int cap_tokens, cap_seqs;
    int esz;                                 /* bytes an element of the saved activations (train_act_esz): 2 packed
                                              * (bf16, registered with ops_act_region) or 4; 0: nothing allocated */
    size_t cap_att;                          /* floats of saved probabilities per layer */
    int N, S, max_len, ready;                /* the batch of the last training forward */
    int use_drop;                            /* its dropout switch */
    uint64_t seed, step;
    int32_t *ids, *pos, *types, *off;        /* device copies of the packed batch */
    uint64_t *seq_ids, *h_seq_ids;           /* dropout ids per sequence (device, host) */
    /* the saved activations (emb, xs, qkv, ctx, v1, a, v2, f, h0, hd, y, yd) take esz bytes an element */
    float *emb, *emb_mean, *emb_rstd;        /* embeddings LayerNorm input [N,H], stats [N] */
    float *xs;                               /* layer inputs [layers][N,H]: xs[0] = dropout(LN(emb)) */
    float *qkv, *att, *ctx;                  /* [layers][N,3H] [layers][cap_att] [layers][N,H] */
    float *v1, *a, *v2, *f;                  /* LN1 input, LN1 output, LN2 input [layers][N,H]; FFN [layers][N,I] */
    float *stats;                            /* [layers][4][N]: mean1, rstd1, mean2, rstd2 */
    float *h0, *hd, *y, *yd, *logits;        /* head [S,H] x4 (first-token output, its dropout, tanh, dropout) */
    float *dx, *dt, *dctx, *dqkv, *dff, *gact; /* backward: [N,H] x3, [N,3H], [N,I] x2 */
    float *dh1, *dh2, *dlogits;              /* head gradients [S,H] x2, [S,NL] */
} EncTrain;

struct Encoder {
    ModelConfig cfg;
    EncoderDropout drop;      /* dropout probabilities (config.json; settable) */
    float init_range;         /* config.json initializer_range: std of a new head's weights */
    float *grads;             /* flat gradient buffer, same layout as params (allocated on first use) */
    EncoderGradReady grad_hook; /* encoder_set_grad_hook */
    void *grad_hook_ctx;
    EncTrain t;
    int grad_ckpt;            /* encoder_set_gradient_checkpointing: one layer's activations kept, recomputed */
    int att_lse;              /* encoder_set_attention_lse: att holds [tokens, heads] log-sum-exps per layer */
    XrPrecision prec;         /* encoder_set_precision: bf16 working copy and bf16 activations (ops_list.h) */
    int lim_seqs, lim_len, lim_infer_seqs; /* encoder_set_batch_limits (0: none): the workspaces' ceilings */
    Backend *be;
    int own_be;
    int lent_params, lent_grads; /* the buffers belong to the caller (encoder_use_buffers): not freed here */
    float *params;
    size_t n_params;
    EncoderTensor *tensors;
    int n_tensors;
    float *word, *pos, *type, *emb_ln_g, *emb_ln_b;
    EncLayer *layers;
    float *pool_w, *pool_b;   /* BERT pooler (NULL when absent); XLM-R head's dense layer lives in head_* */
    float *head_w, *head_b;   /* the first head layer: BERT pooler (same pointers) or XLM-R classifier.dense */
    float *out_w, *out_b;     /* classifier [NL, H] (BERT) / classifier.out_proj (XLM-R) */
    EncWork w;
};

/* The workspace helpers (model_forward.c's inference workspace and model_train.c's training one). */
static inline void *grow(Backend *be, void *p, size_t bytes) {
    ops_free(be, p);
    return ops_alloc(be, bytes);
}

/* The same for pinned host staging (contents not kept: the callers rewrite them whole). */
static inline void *pinned_grow(Backend *be, void *p, size_t bytes) {
    ops_pinned_free(be, p);
    return ops_pinned_alloc(be, bytes);
}

/* A workspace capacity for n: half again (so slowly growing batches do not reallocate every time), but never
 * past the ceiling of encoder_set_batch_limits (lim > 0), which the memory plan counted. */
static inline size_t grow_cap(size_t n, size_t lim, const char *what) {
    size_t cap = n + n / 2;
    if (lim == 0) return cap;
    if (n > lim) xr_die("encoder: a batch of %zu %s is larger than the memory plan allows (%zu)", n, what, lim);
    return cap < lim ? cap : lim;
}

/* model_forward.c: validate, then pack the real tokens of the batch into the host staging arrays (m->w.h_*) with
 * their position ids. Returns the number of real tokens; fills the max length. */
int enc_pack_host(Encoder *m, const Batch *b, int *max_len_out);
/* model_forward.c: the parameters may change (training starts, an optimizer step, a new buffer or head, a precision
 * switch, the encoder freed): the backend forgets the inference copy of the weights (ops_infer_weights) it may keep
 * for this encoder. Call it before the views move. */
void enc_infer_weights_forget(Encoder *m);
/* model_forward.c / model_train.c: free the inference / training workspace (reallocated on next use). */
void enc_work_free(Encoder *m);
void enc_train_free(Encoder *m);

#endif
