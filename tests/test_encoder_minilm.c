/* test_encoder_minilm.c: the real pretrained all-MiniLM-L6-v2 against sentence-transformers on 16 real
 * sentences (token ids from the HF tokenizer, stored in tests/fixtures/model/minilm): masked-mean + L2
 * embeddings and last hidden states within 1e-4. Needs the 90 MB weights: $XR_MINILM_DIR or
 * /work/models/all-MiniLM-L6-v2, else skipped (exit 77). */
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "testutil.h"

#define TOL 1e-4

int main(void) {
    const char *dir = getenv("XR_MINILM_DIR");
    if (!dir || !*dir) dir = "/work/models/all-MiniLM-L6-v2";
    char st_path[1024];
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
    if (!xr_file_exists(st_path)) TU_SKIP("all-MiniLM-L6-v2 not found at %s (set XR_MINILM_DIR)", dir);

    size_t n;
    int32_t *shape = tu_read_i32(tu_path("fixtures/model/minilm/shape.i32"), &n);
    int B = shape[0], T = shape[1], H = shape[2];
    long long nparams = shape[4];
    free(shape);
    int32_t *ids = tu_read_i32(tu_path("fixtures/model/minilm/ids.i32"), &n);
    int32_t *types = tu_read_i32(tu_path("fixtures/model/minilm/types.i32"), &n);
    int32_t *mask = tu_read_i32(tu_path("fixtures/model/minilm/mask.i32"), &n);
    float *want_emb = tu_read_f32(tu_path("fixtures/model/minilm/emb_mean.f32"), &n);
    float *want_hid = tu_read_f32(tu_path("fixtures/model/minilm/hidden4.f32"), &n);

    XrErr e;
    Encoder *m = encoder_load(dir, &e);
    if (!m) {
        fprintf(stderr, "encoder_load: %s\n", e.msg);
        return 1;
    }
    encoder_set_threads(m, 2);
    const ModelConfig *c = encoder_config(m);
    TU_CHECK(c->hidden == H && c->layers == 6 && c->heads == 12, "config: hidden %d layers %d heads %d", c->hidden,
             c->layers, c->heads);
    TU_CHECK(c->pooling == POOL_MEAN && c->normalize, "sentence-transformers config: pooling %d normalize %d",
             (int)c->pooling, c->normalize);
    TU_CHECK(encoder_num_params(m) == nparams, "%lld parameters, transformers counts %lld",
             (long long)encoder_num_params(m), nparams);

    Batch b = {B, T, ids, types, mask};
    float *emb = malloc((size_t)B * H * sizeof(float));
    encoder_forward_embed(m, &b, c->pooling, c->normalize, emb);
    double d_emb = tu_check_close("minilm embeddings", emb, want_emb, (size_t)B * H, TOL);

    float *hid = malloc((size_t)B * T * H * sizeof(float));
    encoder_forward_hidden(m, &b, hid);
    double d_hid = 0;
    for (int r = 0; r < 4; r++) {
        int L = 0;
        while (L < T && mask[(size_t)r * T + L]) L++;
        char what[64];
        snprintf(what, sizeof what, "minilm hidden row %d", r);
        double d = tu_check_close(what, hid + (size_t)r * T * H, want_hid + (size_t)r * T * H, (size_t)L * H, TOL);
        if (d > d_hid) d_hid = d;
    }
    printf("minilm (%d sentences, T=%d): max abs diff embeddings %.2e, hidden states %.2e\n", B, T, d_emb, d_hid);

    free(emb), free(hid), free(ids), free(types), free(mask), free(want_emb), free(want_hid);
    encoder_free(m);
    return tu_finish("test_encoder_minilm");
}
