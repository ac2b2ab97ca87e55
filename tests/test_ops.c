/* test_ops.c: every op of the CPU backend against a naive double-precision loop on random inputs (never
 * zeros) with odd sizes, large enough to take the multi-threaded paths; plus the vector exp/GELU helpers over
 * their whole range, and bitwise-equal results for 1 and 3 threads where the work split is by rows. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_math.h"
#include "ops.h"
#include "testutil.h"

static TuRng rng = {0x9E3779B97F4A7C15ULL};
static double urand(void) { return tu_rng_unit(&rng); }
static float *rand_vec(size_t n, float scale) { return tu_rng_vec(&rng, n, scale); }

static void test_gemm(Backend *be) {
    const int M = 37, N = 29, K = 53;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
            float *A = rand_vec((size_t)(ta ? K : M) * lda, 1), *B = rand_vec((size_t)(tb ? N : K) * ldb, 1);
            float *C = rand_vec((size_t)M * ldc, 1), *ref = malloc((size_t)M * ldc * sizeof(float));
            float alpha = 0.7f, beta = -1.3f;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < ldc; j++) {
                    double s = 0;
                    for (int k = 0; k < K && j < N; k++)
                        s += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                             (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                    ref[(size_t)i * ldc + j] = j < N ? (float)(alpha * s + beta * C[(size_t)i * ldc + j])
                                                     : C[(size_t)i * ldc + j];
                }
            ops_gemm(be, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
            char what[64];
            snprintf(what, sizeof what, "gemm ta=%d tb=%d", ta, tb);
            tu_check_close(what, C, ref, (size_t)M * ldc, 2e-5);
            free(A), free(B), free(C), free(ref);
        }
}

/* nn.Linear through whichever GEMM the backend chose, at sizes that cut every block of the AVX-512 kernel
 * (rows 12 / 168, columns 32 / 1024, depth 256) and take both the row and the column split. */
static void test_linear_size(Backend *be, int M, int N, int K) {
    float *x = rand_vec((size_t)M * K, 1), *W = rand_vec((size_t)N * K, 1), *b = rand_vec(N, 1);
    float *y = malloc((size_t)M * N * sizeof(float)), *ref = malloc((size_t)M * N * sizeof(float));
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = with_bias ? b[j] : 0;
                for (int k = 0; k < K; k++) s += (double)x[(size_t)i * K + k] * W[(size_t)j * K + k];
                ref[(size_t)i * N + j] = (float)s;
            }
        for (size_t i = 0; i < (size_t)M * N; i++) y[i] = 1e30f; /* must be overwritten, never read */
        ops_linear(be, y, x, W, with_bias ? b : NULL, M, N, K);
        char what[128];
        snprintf(what, sizeof what, "linear%s %dx%dx%d (%s)", with_bias ? " + bias" : "", M, N, K,
                 ops_cpu_gemm_kernel(be));
        tu_check_close(what, y, ref, (size_t)M * N, 2e-5 * sqrt(K / 45.0));
    }
    free(x), free(W), free(b), free(y), free(ref);
}

static void test_linear(void) {
    const char *kinds[] = {"openblas", "avx512"};
    for (int i = 0; i < 2; i++) {
        setenv("XR_CPU_GEMM", kinds[i], 1); /* read when a backend is made */
        Backend *be = ops_backend_cpu(2);
        unsetenv("XR_CPU_GEMM");
        if (i == 1 && strcmp(ops_cpu_gemm_kernel(be), "xrank-avx512") != 0) {
            printf("no AVX-512 on this CPU: xrank's GEMM kernel not tested\n");
            ops_backend_free(be);
            continue;
        }
        test_linear_size(be, 301, 67, 45);
        test_linear_size(be, 203, 1100, 300);
        test_linear_size(be, 5, 301, 77);
        test_linear_size(be, 1, 1, 1);
        test_linear_size(be, 13, 33, 257);
        ops_backend_free(be);
    }
}

static void test_embed(Backend *be) {
    const int n = 411, H = 97, V = 53, P = 31, TT = 3;
    float *word = rand_vec((size_t)V * H, 1), *pos = rand_vec((size_t)P * H, 1), *type = rand_vec((size_t)TT * H, 1);
    int32_t *ids = malloc(n * sizeof(int32_t)), *pids = malloc(n * sizeof(int32_t)), *tys = malloc(n * sizeof(int32_t));
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(urand() * V), pids[i] = (int32_t)(urand() * P), tys[i] = i % TT;
    float *out = malloc((size_t)n * H * sizeof(float)), *ref = malloc((size_t)n * H * sizeof(float));
    for (int with_types = 0; with_types < 2; with_types++) {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < H; j++)
                ref[(size_t)i * H + j] = word[(size_t)ids[i] * H + j] + pos[(size_t)pids[i] * H + j] +
                                         type[(size_t)(with_types ? tys[i] : 0) * H + j];
        ops_embed(be, out, ids, pids, with_types ? tys : NULL, word, pos, type, n, H);
        tu_check_close(with_types ? "embed" : "embed (no types)", out, ref, (size_t)n * H, 1e-6);
    }
    free(word), free(pos), free(type), free(ids), free(pids), free(tys), free(out), free(ref);
}

static void test_layernorm(Backend *be) {
    const int n = 301, H = 131;
    const float eps = 1e-5f;
    size_t nh = (size_t)n * H;
    float *x = rand_vec(nh, 2), *res = rand_vec(nh, 2), *g = rand_vec(H, 1), *b = rand_vec(H, 1);
    for (size_t i = 0; i < nh; i++) x[i] += 0.5f; /* a non-zero mean */
    float *out = malloc(nh * sizeof(float)), *ref = malloc(nh * sizeof(float));
    float *mean = malloc(n * sizeof(float)), *rstd = malloc(n * sizeof(float));
    float *mref = malloc(n * sizeof(float)), *rref = malloc(n * sizeof(float));
    for (int with_res = 0; with_res < 2; with_res++) {
        for (int i = 0; i < n; i++) {
            double s = 0, v = 0;
            for (int j = 0; j < H; j++) s += x[(size_t)i * H + j] + (with_res ? res[(size_t)i * H + j] : 0);
            double mu = s / H;
            for (int j = 0; j < H; j++) {
                double d = x[(size_t)i * H + j] + (with_res ? res[(size_t)i * H + j] : 0) - mu;
                v += d * d;
            }
            double rs = 1 / sqrt(v / H + eps);
            for (int j = 0; j < H; j++)
                ref[(size_t)i * H + j] =
                    (float)((x[(size_t)i * H + j] + (with_res ? res[(size_t)i * H + j] : 0) - mu) * rs * g[j] + b[j]);
            mref[i] = (float)mu, rref[i] = (float)rs;
        }
        ops_layernorm(be, out, mean, rstd, x, with_res ? res : NULL, g, b, n, H, eps);
        tu_check_close(with_res ? "layernorm(x + res)" : "layernorm", out, ref, nh, 1e-5);
        tu_check_close("layernorm mean", mean, mref, n, 1e-6);
        tu_check_close("layernorm rstd", rstd, rref, n, 1e-5);
    }
    /* in place over x with a residual, as the encoder calls it */
    float *xc = malloc(nh * sizeof(float));
    memcpy(xc, x, nh * sizeof(float));
    ops_layernorm(be, xc, NULL, NULL, xc, res, g, b, n, H, eps);
    tu_check_close("layernorm in place", xc, ref, nh, 1e-5);
    free(x), free(res), free(g), free(b), free(out), free(ref), free(mean), free(rstd), free(mref), free(rref), free(xc);
}

static void test_activations(Backend *be) {
    const size_t n = 100003;
    float *x = rand_vec(n, 8), *y = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    x[0] = -30.0f, x[1] = 30.0f, x[2] = 1e-20f, x[3] = -6.0f, x[4] = 0.9f * 1.41421356f;
    for (size_t i = 0; i < n; i++) ref[i] = (float)(0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0))));
    ops_gelu(be, y, x, n);
    double d = tu_check_close("gelu (exact erf)", y, ref, n, 1e-6);
    printf("gelu max abs error on [-8, 8]: %.2e\n", d);
    for (size_t i = 0; i < n; i++) ref[i] = (float)tanh(x[i]);
    ops_tanh(be, y, x, n);
    tu_check_close("tanh", y, ref, n, 1e-6);
    memcpy(y, x, n * sizeof(float));
    ops_gelu(be, y, y, n); /* in place */
    for (size_t i = 0; i < n; i++) ref[i] = (float)(0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0))));
    tu_check_close("gelu in place", y, ref, n, 1e-6);
    free(x), free(y), free(ref);
}

/* The helpers over their whole useful range, point by point (relative error for exp, absolute for Phi). */
static void test_math_helpers(void) {
    double worst_exp = 0, worst_phi = 0;
    for (double x = -87.0; x <= 88.0; x += 0.000731) {
        double r = fabs(xr_expf((float)x) / exp((float)x) - 1);
        if (r > worst_exp) worst_exp = r;
    }
    for (double x = -12.0; x <= 12.0; x += 0.0000917) {
        double a = fabs(xr_phif((float)x) - 0.5 * erfc(-(float)x / sqrt(2.0)));
        if (a > worst_phi) worst_phi = a;
    }
    TU_CHECK(worst_exp < 3e-7, "xr_expf max relative error %.3g", worst_exp);
    TU_CHECK(worst_phi < 2e-7, "xr_phif max absolute error %.3g", worst_phi);
    printf("xr_expf max rel error %.2e, xr_phif max abs error %.2e\n", worst_exp, worst_phi);
}

static void attention_ref(float *out, float *att, const float *qkv, const int32_t *off, int S, int NH, int dh,
                          int first_only) {
    int H = NH * dh, ld = 3 * H;
    size_t abase = 0;
    for (int s = 0; s < S; s++) {
        int L = off[s + 1] - off[s];
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < (first_only ? 1 : L); i++) {
                const float *q = qkv + (size_t)(off[s] + i) * ld + h * dh;
                double sc[128], mx = -1e300, sum = 0;
                for (int j = 0; j < L; j++) {
                    const float *k = qkv + (size_t)(off[s] + j) * ld + H + h * dh;
                    double d = 0;
                    for (int t = 0; t < dh; t++) d += (double)q[t] * k[t];
                    sc[j] = d / sqrt((double)dh);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j < L; j++) sum += (sc[j] = exp(sc[j] - mx));
                float *o = out + (size_t)(first_only ? s : off[s] + i) * H + h * dh;
                for (int t = 0; t < dh; t++) {
                    double a = 0;
                    for (int j = 0; j < L; j++) a += sc[j] / sum * qkv[(size_t)(off[s] + j) * ld + 2 * H + h * dh + t];
                    o[t] = (float)a;
                }
                if (att)
                    for (int j = 0; j < L; j++) att[abase + ((size_t)h * L + i) * L + j] = (float)(sc[j] / sum);
            }
        abase += (size_t)NH * L * L;
    }
}

static void test_attention(Backend *be) {
    const int lens[] = {1, 7, 13, 100, 2, 61, 30};
    const int S = 7, NH = 3, dh = 5, H = NH * dh;
    int32_t off[8] = {0};
    size_t att_n = 0;
    int max_len = 0;
    for (int s = 0; s < S; s++) {
        off[s + 1] = off[s] + lens[s];
        att_n += (size_t)NH * lens[s] * lens[s];
        if (lens[s] > max_len) max_len = lens[s];
    }
    int N = off[S];
    float *qkv = rand_vec((size_t)N * 3 * H, 2);
    float *out = malloc((size_t)N * H * sizeof(float)), *ref = malloc((size_t)N * H * sizeof(float));
    float *att = malloc(att_n * sizeof(float)), *aref = malloc(att_n * sizeof(float));
    attention_ref(ref, aref, qkv, off, S, NH, dh, 0);
    ops_attention(be, out, NULL, qkv, off, S, max_len, NH, dh);
    tu_check_close("attention", out, ref, (size_t)N * H, 2e-6);
    ops_attention(be, out, att, qkv, off, S, max_len, NH, dh);
    tu_check_close("attention (saving probabilities)", out, ref, (size_t)N * H, 2e-6);
    tu_check_close("attention probabilities", att, aref, att_n, 1e-6);

    float *first = malloc((size_t)S * H * sizeof(float)), *fref = malloc((size_t)S * H * sizeof(float));
    attention_ref(fref, NULL, qkv, off, S, NH, dh, 1);
    ops_attention_first(be, first, qkv, off, S, max_len, NH, dh);
    tu_check_close("attention first rows", first, fref, (size_t)S * H, 2e-6);

    /* one thread and three give the same bits: the split is by (sequence, head) */
    float *out1 = malloc((size_t)N * H * sizeof(float));
    int nt = ops_get_threads(be);
    ops_set_threads(be, 1);
    ops_attention(be, out1, NULL, qkv, off, S, max_len, NH, dh);
    ops_set_threads(be, 3);
    ops_attention(be, out, NULL, qkv, off, S, max_len, NH, dh);
    ops_set_threads(be, nt);
    TU_CHECK(memcmp(out, out1, (size_t)N * H * sizeof(float)) == 0, "attention differs between 1 and 3 threads");
    free(qkv), free(out), free(ref), free(att), free(aref), free(first), free(fref), free(out1);
}

static void test_pooling(Backend *be) {
    const int lens[] = {5, 1, 33, 12};
    const int S = 4, H = 45;
    int32_t off[5] = {0};
    for (int s = 0; s < S; s++) off[s + 1] = off[s] + lens[s];
    float *x = rand_vec((size_t)off[S] * H, 1);
    float *out = malloc((size_t)S * H * sizeof(float)), *ref = malloc((size_t)S * H * sizeof(float));
    ops_pool_first(be, out, x, off, S, H);
    for (int s = 0; s < S; s++) memcpy(ref + (size_t)s * H, x + (size_t)off[s] * H, H * sizeof(float));
    tu_check_close("pool_first", out, ref, (size_t)S * H, 0);
    for (int s = 0; s < S; s++)
        for (int j = 0; j < H; j++) {
            double a = 0;
            for (int t = off[s]; t < off[s + 1]; t++) a += x[(size_t)t * H + j];
            ref[(size_t)s * H + j] = (float)(a / lens[s]);
        }
    ops_pool_mean(be, out, x, off, S, H);
    tu_check_close("pool_mean", out, ref, (size_t)S * H, 1e-6);
    for (int s = 0; s < S; s++) {
        double nn = 0;
        for (int j = 0; j < H; j++) nn += (double)ref[(size_t)s * H + j] * ref[(size_t)s * H + j];
        for (int j = 0; j < H; j++) ref[(size_t)s * H + j] = (float)(ref[(size_t)s * H + j] / sqrt(nn));
    }
    ops_l2norm(be, out, out, S, H);
    tu_check_close("l2norm", out, ref, (size_t)S * H, 1e-6);
    /* a zero row stays zero (norm clamped at 1e-12, as torch.nn.functional.normalize) */
    memset(out, 0, H * sizeof(float));
    ops_l2norm(be, out, out, 1, H);
    TU_CHECK(out[0] == 0.0f && out[H - 1] == 0.0f, "l2norm of a zero row: %g", out[0]);
    free(x), free(out), free(ref);
}

int main(void) {
    Backend *be = ops_backend_cpu(2);
    TU_CHECK(ops_get_threads(be) == 2, "threads %d", ops_get_threads(be));
    test_math_helpers();
    test_gemm(be);
    test_linear();
    test_embed(be);
    test_layernorm(be);
    test_activations(be);
    test_attention(be);
    test_pooling(be);
    ops_backend_free(be);
    return tu_finish("test_ops");
}
