/* hfmodel.h: Hugging Face model directories: resolve a path or hub id, parse config.json and the
 * sentence-transformers pooling config. Knows nothing of tensors' meaning beyond the config. */
#ifndef XR_HFMODEL_H
#define XR_HFMODEL_H
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { ARCH_BERT = 1, ARCH_XLMR = 2, ARCH_ROBERTA = 3 } ModelFamily;
typedef enum { POOL_CLS = 0, POOL_MEAN = 1 } PoolingMode;

typedef struct {
    ModelFamily family;
    int is_seq_cls;          /* *ForSequenceClassification: a classification head is present */
    int num_labels;
    int vocab_size, hidden, layers, heads, intermediate, max_pos, type_vocab, pad_id;
    float ln_eps;
    char hidden_act[32];     /* "gelu" (erf); others are rejected */
    char model_type[32];
    char architecture[96];
    PoolingMode pooling;     /* from 1_Pooling/config.json when present, else CLS */
    int has_pooling_config;
    int normalize;           /* sentence-transformers Normalize module present */
} ModelConfig;

/* Resolve a user-given model spec to a local directory: an existing directory, or a hub id
 * "org/name" found in $HF_HOME/hub or ~/.cache/huggingface/hub (newest snapshot). Returns malloc'd path. */
char *hf_resolve_model(const char *spec, XrErr *e);
/* Parse <dir>/config.json (+ sentence-transformers pooling files). Unknown model_type is an error. */
int hf_load_config(const char *dir, ModelConfig *cfg, XrErr *e);

#ifdef __cplusplus
}
#endif
#endif
