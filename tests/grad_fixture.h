/* grad_fixture.h: the Hugging Face gradient fixtures of tests/gen_grad_fixtures.py (tests/fixtures/grad/<case>):
 * a batch, torch's logits, loss gradients, every parameter's gradient and the parameters after AdamW steps, and
 * the comparison of an encoder's gradients with them. Shared by test_grad_model (CPU) and test_cuda_train_step
 * (the same checks on gradients copied back from a GPU). */
#ifndef XR_GRAD_FIXTURE_H
#define XR_GRAD_FIXTURE_H
#include <cjson/cJSON.h>

#include "model.h"

#define GRAD_TOL 1e-4 /* each tensor: max |diff| / max |torch's gradient| */
#define ZERO_REL 1e-6 /* a true gradient of 0: below this fraction of the model's largest (check_grads) */

typedef struct {
    char dir[512];
    cJSON *info;
    int B, T, G;
    int32_t *ids, *types, *mask;
    float *labels, *logits, *dl_bce, *dl_ce;
} Fix;

/* Load fixtures/grad/<name> (dies with the path when missing); fix_free releases it. */
void fix_load(Fix *f, const char *name);
void fix_free(Fix *f);
/* The path of one of the case's files (a rotating static buffer: valid for a few calls). */
const char *fpath(const Fix *f, const char *file);
/* A number / string of case.json (dies naming the key when absent). */
double jnum(const cJSON *o, const char *key);
const char *jstr(const cJSON *o, const char *key);
const EncoderTensor *find_view(Encoder *m, const char *name);
/* Every fixture tensor's gradient against g (host, laid out as encoder_grads(m)): max |diff| / max |want| per
 * tensor <= GRAD_TOL, the word embedding's untouched rows exactly 0, tensors whose true gradient is 0 held to
 * rounding noise (zero[i] = 1 for those, per encoder tensor). Prints the worst difference per tensor family. */
void check_grads(Encoder *m, const float *g, const Fix *f, const char *label, int *zero);

#endif
