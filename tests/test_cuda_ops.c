/* test_cuda_ops: every op of the CUDA backend (core/cuda/ops_cuda.h) against the CPU backend (ops_* on
 * ops_backend_cpu) on random inputs of odd sizes; prints the max abs difference per op. Skipped (77) when built
 * without the CUDA backend or when no GPU is visible. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "testutil.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

#ifdef XR_HAVE_CUDA
#define XR_CUDA_TEST_SEED 0x9E3779B97F4A7C15ull
#include "cuda_testutil.h"

static void check_gemm(Backend *c, Backend *g) {
    int M = 37, N = 53, K = 129;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            /* leading dimensions wider than the rows: strided submatrices must work */
            int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
            int ar = ta ? K : M, br = tb ? N : K;
            float *A = rnd((size_t)ar * lda, -1, 1), *B = rnd((size_t)br * ldb, -1, 1), *C = rnd((size_t)M * ldc, -1, 1);
            float *dA = up(g, A, (size_t)ar * lda * 4), *dB = up(g, B, (size_t)br * ldb * 4);
            float *dC = up(g, C, (size_t)M * ldc * 4);
            ops_gemm(c, ta, tb, M, N, K, 0.75f, A, lda, B, ldb, -0.5f, C, ldc);
            cuda_ops_gemm(g, ta, tb, M, N, K, 0.75f, dA, lda, dB, ldb, -0.5f, dC, ldc);
            char name[64];
            snprintf(name, sizeof name, "gemm ta=%d tb=%d (fp32)", ta, tb);
            cmp(g, name, C, dC, (size_t)M * ldc, 2e-5);
            cuda_ops_free(g, dA), cuda_ops_free(g, dB), cuda_ops_free(g, dC);
            free(A), free(B), free(C);
        }
}

static void check_linear(Backend *c, Backend *g) {
    int M = 45, N = 97, K = 384;
    float *x = rnd((size_t)M * K, -1, 1), *W = rnd((size_t)N * K, -0.2f, 0.2f), *b = rnd(N, -1, 1);
    float *y = xr_malloc((size_t)M * N * 4);
    float *dx = up(g, x, (size_t)M * K * 4), *dW = up(g, W, (size_t)N * K * 4), *db = up(g, b, N * 4);
    float *dy = cuda_ops_alloc(g, (size_t)M * N * 4);
    ops_linear(c, y, x, W, b, M, N, K);
    cuda_ops_linear(g, dy, dx, dW, db, M, N, K);
    cmp(g, "linear +bias (fp32)", y, dy, (size_t)M * N, 2e-5);
    ops_linear(c, y, x, W, NULL, M, N, K);
    cuda_ops_linear(g, dy, dx, dW, NULL, M, N, K);
    cmp(g, "linear no bias (fp32)", y, dy, (size_t)M * N, 2e-5);
    /* opt-in tensor-core modes: inputs rounded to tf32 (10-bit mantissa) / bf16 (7-bit), fp32 accumulation */
    ops_linear(c, y, x, W, b, M, N, K);
    cuda_ops_set_gemm_mode(g, XR_GEMM_TF32);
    cuda_ops_linear(g, dy, dx, dW, db, M, N, K);
    cmp(g, "linear +bias (tf32 tensor cores)", y, dy, (size_t)M * N, 2e-2);
    cuda_ops_set_gemm_mode(g, XR_GEMM_BF16);
    cuda_ops_linear(g, dy, dx, dW, db, M, N, K);
    cmp(g, "linear +bias (bf16 tensor cores)", y, dy, (size_t)M * N, 1e-1);
    cuda_ops_set_gemm_mode(g, XR_GEMM_FP32);
    cuda_ops_free(g, dx), cuda_ops_free(g, dW), cuda_ops_free(g, db), cuda_ops_free(g, dy);
    free(x), free(W), free(b), free(y);
}

static void check_tokenwise(Backend *c, Backend *g) {
    int n = 77, H = 389, V = 101, P = 53, T = 2;
    int32_t ids[77], pos[77], types[77];
    for (int i = 0; i < n; i++) ids[i] = (i * 37 + 11) % V, pos[i] = (i * 7) % P, types[i] = i % T;
    float *word = rnd((size_t)V * H, -1, 1), *pe = rnd((size_t)P * H, -1, 1), *te = rnd((size_t)T * H, -1, 1);
    float *out = xr_malloc((size_t)n * H * 4);
    int32_t *dids = up(g, ids, sizeof ids), *dpos = up(g, pos, sizeof pos), *dtyp = up(g, types, sizeof types);
    float *dword = up(g, word, (size_t)V * H * 4), *dpe = up(g, pe, (size_t)P * H * 4);
    float *dte = up(g, te, (size_t)T * H * 4), *dout = cuda_ops_alloc(g, (size_t)n * H * 4);
    ops_embed(c, out, ids, pos, types, word, pe, te, n, H);
    cuda_ops_embed(g, dout, dids, dpos, dtyp, dword, dpe, dte, n, H);
    cmp(g, "embed", out, dout, (size_t)n * H, 1e-6);
    ops_embed(c, out, ids, pos, NULL, word, pe, te, n, H);
    cuda_ops_embed(g, dout, dids, dpos, NULL, dword, dpe, dte, n, H);
    cmp(g, "embed (types NULL)", out, dout, (size_t)n * H, 1e-6);

    /* layernorm with residual, saved statistics, and out aliasing x */
    size_t nh = (size_t)n * H;
    float *x = rnd(nh, -3, 5), *res = rnd(nh, -2, 2), *gam = rnd(H, 0.5f, 1.5f), *bet = rnd(H, -1, 1);
    float mean[77], rstd[77], *y = xr_malloc(nh * 4);
    float *dx = up(g, x, nh * 4), *dres = up(g, res, nh * 4), *dg = up(g, gam, H * 4), *db = up(g, bet, H * 4);
    float *dm = cuda_ops_alloc(g, n * 4), *dr = cuda_ops_alloc(g, n * 4);
    ops_layernorm(c, y, mean, rstd, x, res, gam, bet, n, H, 1e-12f);
    cuda_ops_layernorm(g, dx, dm, dr, dx, dres, dg, db, n, H, 1e-12f);
    cmp(g, "layernorm +res (out aliases x)", y, dx, nh, 2e-5);
    cmp(g, "layernorm mean", mean, dm, n, 1e-5);
    cmp(g, "layernorm rstd", rstd, dr, n, 1e-5);
    cuda_ops_to_device(g, dx, x, nh * 4);
    ops_layernorm(c, y, NULL, NULL, x, NULL, gam, bet, n, H, 1e-5f);
    cuda_ops_layernorm(g, dout, NULL, NULL, dx, NULL, dg, db, n, H, 1e-5f);
    cmp(g, "layernorm no res", y, dout, nh, 2e-5);

    /* elementwise: GELU over [-6, 6] covers both branches of the CPU's Phi; tanh likewise */
    float *z = rnd(nh, -6, 6), *dz = up(g, z, nh * 4);
    ops_gelu(c, y, z, nh);
    cuda_ops_gelu(g, dout, dz, nh);
    cmp(g, "gelu (exact erf)", y, dout, nh, 2e-6);
    ops_tanh(c, y, z, nh);
    cuda_ops_tanh(g, dout, dz, nh);
    cmp(g, "tanh", y, dout, nh, 2e-6);
    ops_l2norm(c, y, x, n, H);
    cuda_ops_l2norm(g, dout, dx, n, H);
    cmp(g, "l2norm", y, dout, nh, 1e-6);

    void *dv[] = {dids, dpos, dtyp, dword, dpe, dte, dout, dx, dres, dg, db, dm, dr, dz};
    for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++) cuda_ops_free(g, dv[i]);
    free(word), free(pe), free(te), free(out), free(x), free(res), free(gam), free(bet), free(y), free(z);
}

/* Packed sequences of uneven lengths (1 included, one above a warp's 32 keys), two head shapes. */
static void check_attention(Backend *c, Backend *g, int NH, int dh, const int *lens, int S) {
    int32_t off[16];
    off[0] = 0;
    int max_len = 0;
    size_t att_n = 0;
    for (int s = 0; s < S; s++) {
        off[s + 1] = off[s] + lens[s];
        max_len = lens[s] > max_len ? lens[s] : max_len;
        att_n += (size_t)NH * lens[s] * lens[s];
    }
    int N = off[S];
    size_t HD = (size_t)NH * dh;
    float *qkv = rnd((size_t)N * 3 * HD, -2, 2);
    float *out = xr_malloc((size_t)N * HD * 4), *att = xr_malloc(att_n * 4);
    int32_t *doff = up(g, off, (S + 1) * 4);
    float *dqkv = up(g, qkv, (size_t)N * 3 * HD * 4);
    float *dout = cuda_ops_alloc(g, (size_t)N * HD * 4), *datt = cuda_ops_alloc(g, att_n * 4);
    char name[64];
    ops_attention(c, out, att, qkv, off, S, max_len, NH, dh);
    cuda_ops_attention(g, dout, datt, dqkv, doff, S, max_len, NH, dh);
    snprintf(name, sizeof name, "attention NH=%d dh=%d out", NH, dh);
    cmp(g, name, out, dout, (size_t)N * HD, 2e-5);
    snprintf(name, sizeof name, "attention NH=%d dh=%d probs", NH, dh);
    cmp(g, name, att, datt, att_n, 1e-6);
    ops_attention_first(c, out, qkv, off, S, max_len, NH, dh);
    cuda_ops_attention_first(g, dout, dqkv, doff, S, max_len, NH, dh);
    snprintf(name, sizeof name, "attention_first NH=%d dh=%d", NH, dh);
    cmp(g, name, out, dout, (size_t)S * HD, 2e-5);

    /* pooling over the same packing, reading qkv as [N, HD] rows (any random rows will do) */
    ops_pool_first(c, out, qkv, off, S, (int)HD);
    cuda_ops_pool_first(g, dout, dqkv, doff, S, (int)HD);
    snprintf(name, sizeof name, "pool_first H=%zu", HD);
    cmp(g, name, out, dout, (size_t)S * HD, 0);
    ops_pool_mean(c, out, qkv, off, S, (int)HD);
    cuda_ops_pool_mean(g, dout, dqkv, doff, S, (int)HD);
    snprintf(name, sizeof name, "pool_mean H=%zu", HD);
    cmp(g, name, out, dout, (size_t)S * HD, 1e-5);
    cuda_ops_free(g, doff), cuda_ops_free(g, dqkv), cuda_ops_free(g, dout), cuda_ops_free(g, datt);
    free(qkv), free(out), free(att);
}
#endif

int main(void) {
#ifndef XR_HAVE_CUDA
    TU_SKIP("built without the CUDA backend (-DXRANK_CUDA=OFF or nvcc missing)");
#else
    if (cuda_ops_device_count() == 0) TU_SKIP("no GPU visible");
    Backend *c = ops_backend_cpu(2), *g = cuda_ops_backend(0);
    check_gemm(c, g);
    check_linear(c, g);
    check_tokenwise(c, g);
    static const int lens1[] = {1, 7, 33, 64, 17}, lens2[] = {130, 5, 77};
    check_attention(c, g, 3, 20, lens1, 5);
    check_attention(c, g, 12, 64, lens2, 3);
    check_attention(c, g, 12, 32, lens1, 5);
    cuda_ops_sync(g);
    cuda_ops_backend_free(g);
    ops_backend_free(c);
    return tu_finish("test_cuda_ops");
#endif
}
