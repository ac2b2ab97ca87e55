/* test_cuda_bf16: the BF16 mode of the CUDA backend (cuda_ops_set_gemm_mode XR_GEMM_BF16): ops_linear as bf16
 * cuBLASLt GEMMs (own bf16 copies, and XR_CUDA_BF16_GEMM=fast), attention as the fused flash kernel (every tile,
 * by its XR_CUDA_ATTENTION name, ragged lengths 1..300) and as padded batched bf16 GEMMs (whole and chunked),
 * against the fp32 CPU ops, and the tiny model fixtures' logits / embeddings within bf16 tolerance.
 * Skipped (77) when built without the CUDA backend or when no GPU is visible. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"
#include "testutil.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

#ifdef XR_HAVE_CUDA
#define XR_CUDA_TEST_SEED 0x2545F4914F6CDD1Dull
#include "cuda_testutil.h"

/* A BF16-mode backend built with the given environment (read when the backend is made). */
static Backend *bf16_backend(const char *gemm, const char *chunk, const char *att) {
    if (gemm) setenv("XR_CUDA_BF16_GEMM", gemm, 1); else unsetenv("XR_CUDA_BF16_GEMM");
    if (chunk) setenv("XR_CUDA_ATT_CHUNK", chunk, 1); else unsetenv("XR_CUDA_ATT_CHUNK");
    if (att) setenv("XR_CUDA_ATTENTION", att, 1); else unsetenv("XR_CUDA_ATTENTION");
    Backend *g = cuda_ops_backend(0);
    cuda_ops_set_gemm_mode(g, XR_GEMM_BF16);
    unsetenv("XR_CUDA_BF16_GEMM"), unsetenv("XR_CUDA_ATT_CHUNK"), unsetenv("XR_CUDA_ATTENTION");
    return g;
}

static void check_linear(Backend *c, Backend *g, const char *tag) {
    int M = 45, N = 97, K = 384;
    float *x = rnd((size_t)M * K, -1, 1), *W = rnd((size_t)N * K, -0.1f, 0.1f), *b = rnd(N, -1, 1);
    float *y = xr_malloc((size_t)M * N * 4);
    float *dx = up(g, x, (size_t)M * K * 4), *dW = up(g, W, (size_t)N * K * 4), *db = up(g, b, (size_t)N * 4);
    float *dy = cuda_ops_alloc(g, (size_t)M * N * 4);
    char name[80];
    for (int bias = 1; bias >= 0; bias--) {
        ops_linear(c, y, x, W, bias ? b : NULL, M, N, K);
        cuda_ops_linear(g, dy, dx, dW, bias ? db : NULL, M, N, K);
        snprintf(name, sizeof name, "linear bf16 %s %s", tag, bias ? "+bias" : "no bias");
        cmp(g, name, y, dy, (size_t)M * N, 2e-2);
    }
    cuda_ops_free(g, dx), cuda_ops_free(g, dW), cuda_ops_free(g, db), cuda_ops_free(g, dy);
    free(x), free(W), free(b), free(y);
}

static void check_attention(Backend *c, Backend *g, const char *tag, int NH, int dh, const int *lens, int S) {
    int32_t off[16];
    off[0] = 0;
    int max_len = 0;
    for (int s = 0; s < S; s++) {
        off[s + 1] = off[s] + lens[s];
        max_len = lens[s] > max_len ? lens[s] : max_len;
    }
    int N = off[S];
    size_t HD = (size_t)NH * dh;
    float *qkv = rnd((size_t)N * 3 * HD, -2, 2), *out = xr_malloc((size_t)N * HD * 4);
    int32_t *doff = up(g, off, (S + 1) * 4);
    float *dqkv = up(g, qkv, (size_t)N * 3 * HD * 4), *dout = cuda_ops_alloc(g, (size_t)N * HD * 4);
    ops_attention(c, out, NULL, qkv, off, S, max_len, NH, dh);
    cuda_ops_attention(g, dout, NULL, dqkv, doff, S, max_len, NH, dh);
    char name[80];
    snprintf(name, sizeof name, "attention bf16 %s NH=%d dh=%d", tag, NH, dh);
    cmp(g, name, out, dout, (size_t)N * HD, 3e-2);
    cuda_ops_free(g, doff), cuda_ops_free(g, dqkv), cuda_ops_free(g, dout);
    free(qkv), free(out);
}

/* Ragged batches as the model packs them: 24 sequences of 1 .. 300 tokens (tile edges 63/64/65, 127/128/129,
 * 255/256/257 included), inputs uniform in [-amp, amp]; amp 1 gives flat softmax rows, amp 2 peaked ones. */
static void check_attention_ragged(Backend *c, Backend *g, const char *tag, int NH, int dh, float amp, double tol) {
    enum { S = 24 };
    static const int fixed[16] = {1, 300, 64, 65, 63, 128, 129, 2, 17, 200, 255, 256, 257, 31, 33, 96};
    int32_t off[S + 1];
    off[0] = 0;
    int max_len = 0;
    for (int s = 0; s < S; s++) {
        int len = s < 16 ? fixed[s] : 1 + (int)urand(0, 299.99f);
        off[s + 1] = off[s] + len;
        max_len = len > max_len ? len : max_len;
    }
    int N = off[S];
    size_t HD = (size_t)NH * dh;
    float *qkv = rnd((size_t)N * 3 * HD, -amp, amp), *out = xr_malloc((size_t)N * HD * 4);
    int32_t *doff = up(g, off, (S + 1) * 4);
    float *dqkv = up(g, qkv, (size_t)N * 3 * HD * 4), *dout = cuda_ops_alloc(g, (size_t)N * HD * 4);
    ops_attention(c, out, NULL, qkv, off, S, max_len, NH, dh);
    cuda_ops_attention(g, dout, NULL, dqkv, doff, S, max_len, NH, dh);
    char name[96];
    snprintf(name, sizeof name, "attention bf16 %s ragged NH=%d dh=%d amp=%g", tag, NH, dh, amp);
    cmp(g, name, out, dout, (size_t)N * HD, tol);
    cuda_ops_free(g, doff), cuda_ops_free(g, dqkv), cuda_ops_free(g, dout);
    free(qkv), free(out);
}

/* The fixture models (transformers fp32 outputs) through a BF16-mode backend: logits and CLS embeddings. */
static void check_model(Backend *g, const char *name) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", tu_path("fixtures/model"), name);
    char p[700];
    size_t n;
    snprintf(p, sizeof p, "%s/shape.i32", dir);
    int32_t *shape = tu_read_i32(p, &n);
    int B = shape[0], T = shape[1], H = shape[2], NL = shape[3];
    free(shape);
    snprintf(p, sizeof p, "%s/ids.i32", dir);
    int32_t *ids = tu_read_i32(p, &n);
    snprintf(p, sizeof p, "%s/types.i32", dir);
    int32_t *types = tu_read_i32(p, &n);
    snprintf(p, sizeof p, "%s/mask.i32", dir);
    int32_t *mask = tu_read_i32(p, &n);
    snprintf(p, sizeof p, "%s/emb_cls.f32", dir);
    float *want_cls = tu_read_f32(p, &n);
    XrErr e;
    Encoder *m = encoder_load_on(dir, g, &e);
    TU_CHECK(m != NULL, "%s: encoder_load_on failed: %s", name, e.msg);
    if (!m) return;
    Batch b = {B, T, ids, types, mask};
    float *emb = xr_malloc((size_t)B * H * 4), *lg = xr_malloc((size_t)B * (NL ? NL : 1) * 4);
    encoder_forward_embed(m, &b, POOL_CLS, 1, emb);
    double dc = tu_check_close(name, emb, want_cls, (size_t)B * H, 2e-2), dl = 0;
    if (NL) {
        snprintf(p, sizeof p, "%s/logits.f32", dir);
        float *want = tu_read_f32(p, &n);
        encoder_forward_score(m, &b, lg);
        dl = tu_check_close(name, lg, want, (size_t)B * NL, 2e-2);
        free(want);
    }
    printf("model %-10s bf16 max abs diff: emb_cls %.2e  logits %.2e (tol 2e-2)\n", name, dc, dl);
    encoder_free(m);
    free(ids), free(types), free(mask), free(want_cls), free(emb), free(lg);
}
#endif

int main(void) {
#ifndef XR_HAVE_CUDA
    TU_SKIP("built without the CUDA backend");
#else
    if (cuda_ops_device_count() <= 0) TU_SKIP("no GPU visible");
    Backend *c = ops_backend_cpu(2);
    static const int lens1[] = {1, 7, 33, 64, 17}, lens2[] = {130, 5, 77};
    /* v 0: flash attention (the default tile); 1: the padded-GEMM attention in chunks of 2 blocks (and
     * cuBLAS-side rounding); 2..8: flash attention with each tile (flash_attn.h's XR_FLASH_TILES, the
     * register-capped ones too) by its XR_CUDA_ATTENTION name, attention only */
    const char *gemm[9] = {NULL, "fast"}, *chunk[9] = {NULL, "2"};
    const char *att[] = {NULL, "gemm", "flash64", "flash128", "flash128w8", "flash256", "flash64x3", "flash128x3",
                         "flash128w8x2"};
    const char *tag[] = {"flash", "gemm fast / chunks of 2", "flash64", "flash128", "flash128w8", "flash256",
                         "flash64x3", "flash128x3", "flash128w8x2"};
    for (int v = 0; v < 9; v++) {
        Backend *g = bf16_backend(gemm[v], chunk[v], att[v]);
        if (v < 2) check_linear(c, g, tag[v]);
        check_attention(c, g, tag[v], 3, 20, lens1, 5);
        check_attention(c, g, tag[v], 12, 64, lens2, 3);
        check_attention(c, g, tag[v], 12, 32, lens1, 5);
        check_attention_ragged(c, g, tag[v], 4, 64, 1.0f, 2e-2);
        check_attention_ragged(c, g, tag[v], 4, 64, 2.0f, 3e-2);
        check_attention_ragged(c, g, tag[v], 3, 32, 1.0f, 2e-2);
        if (v == 0) {
            check_model(g, "bert_cls");
            check_model(g, "xlmr_cls");
            check_model(g, "xlmr_cls3");
            check_model(g, "xlmr_model");
        }
        cuda_ops_sync(g);
        cuda_ops_backend_free(g);
    }
    ops_backend_free(c);
    return tu_finish("test_cuda_bf16");
#endif
}
