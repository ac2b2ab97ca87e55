/* test_cuda_attention_lse: the CUDA kernels of the log-sum-exp training attention (core/cuda/train_ops.cu:
 * attention_train_lse, attention_backward_lse) through the op API against the CPU backend's, on packed ragged
 * sequences of lengths 1, 63, 64, 65, 0 (empty), 127, 128, 129, 300 and 512; heads 4 x 32, 3 x 64 and 2 x 20
 * (no multiple of 32); dropout p 0, 0.1 and 0.3; all rows and the first row only. Outputs are poisoned with NaN
 * before each call, so an element a kernel fails to write fails the comparison. Within 1e-5 relative (cmp_rel,
 * as test_cuda_train_ops: both backends are exact fp32 softmaxes, only the summation orders differ); every GPU op
 * run twice gives the same bits (no atomics: dk and dv are summed per key row over the query rows in order).
 * Skipped (77) when built without the CUDA backend or when no GPU is visible. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "testutil.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

#ifdef XR_HAVE_CUDA
#define XR_CUDA_TEST_SEED 0x5851F42D4C957F2Dull
#include "cuda_testutil.h"

#define RTOL 1e-5

static const int kLens[] = {1, 63, 64, 65, 0, 127, 128, 129, 300, 512};
#define NSEQ ((int)(sizeof kLens / sizeof kLens[0]))

static void check(Backend *c, Backend *g, const int32_t *off, const int32_t *doff, int N, int max_len, int NH,
                  int dh, int first_only, float p) {
    (void)cmp; /* cuda_testutil.h's absolute comparison: the relative one serves here */
    int S = NSEQ, H = NH * dh, nrow = first_only ? S : N;
    size_t nqkv = (size_t)N * 3 * H, nout = (size_t)nrow * H, nlse = (size_t)nrow * NH;
    uint64_t ids[NSEQ];
    for (int s = 0; s < S; s++) ids[s] = 2654435761u * (uint64_t)(s + 1);
    uint64_t *gids = up(g, ids, sizeof ids);
    XrDropout dc = {p, 0x1234567890ABCDEFull, ids}, dg = {p, 0x1234567890ABCDEFull, gids};
    float *qkv = rnd(nqkv, -1.5f, 1.5f), *dout = rnd(nout, -1, 1);
    float *out = xr_malloc(nout * 4), *lse = xr_malloc(nlse * 4), *dqkv = xr_malloc(nqkv * 4);
    /* rows of empty sequences (first_only) are written by neither backend: the same NaN on both sides */
    for (size_t i = 0; i < nlse; i++) lse[i] = NAN;
    float *gqkv = up(g, qkv, nqkv * 4), *gdout = up(g, dout, nout * 4);
    float *go = dev_nan(g, nout), *gl = dev_nan(g, nlse), *gd = dev_nan(g, nqkv);
    float *go2 = dev_nan(g, nout), *gl2 = dev_nan(g, nlse), *gd2 = dev_nan(g, nqkv);
    ops_attention_train_lse(c, out, lse, qkv, off, S, max_len, NH, dh, first_only, &dc);
    ops_attention_backward_lse(c, dqkv, dout, qkv, lse, off, S, max_len, NH, dh, first_only, &dc);
    ops_attention_train_lse(g, go, gl, gqkv, doff, S, max_len, NH, dh, first_only, &dg);
    ops_attention_train_lse(g, go2, gl2, gqkv, doff, S, max_len, NH, dh, first_only, &dg);
    if (first_only) /* an empty sequence's first row is written by neither backend (there is no row): 0 on all sides */
        for (int s = 0; s < S; s++)
            if (kLens[s] == 0) {
                float z[64 * 4] = {0};
                memset(out + (size_t)s * H, 0, (size_t)H * 4);
                cuda_ops_to_device(g, go + (size_t)s * H, z, (size_t)H * 4);
                cuda_ops_to_device(g, go2 + (size_t)s * H, z, (size_t)H * 4);
            }
    ops_attention_backward_lse(g, gd, gdout, gqkv, gl, doff, S, max_len, NH, dh, first_only, &dg);
    ops_attention_backward_lse(g, gd2, gdout, gqkv, gl, doff, S, max_len, NH, dh, first_only, &dg);
    char name[96];
    const char *f = first_only ? " first" : "";
    snprintf(name, sizeof name, "attention_train_lse out NH=%d dh=%d%s p=%.1f", NH, dh, f, p);
    cmp_rel(g, name, out, go, nout, RTOL);
    /* lse compared where written (empty sequences' first rows: NaN on both sides) */
    float *hl = xr_malloc(nlse * 4);
    cuda_ops_to_host(g, hl, gl, nlse * 4);
    double lw = 0;
    size_t lbad = 0;
    for (size_t i = 0; i < nlse; i++) {
        if (isnan(lse[i]) && isnan(hl[i])) continue;
        double e = fabs((double)hl[i] - lse[i]) / fmax(1.0, fabs((double)lse[i]));
        if (!(e <= RTOL)) lbad++;
        lw = isnan(e) ? INFINITY : fmax(lw, e);
    }
    TU_CHECK(lbad == 0, "attention_train_lse lse NH=%d dh=%d%s p=%.1f: %zu of %zu off (worst %.3g)", NH, dh, f, p,
             lbad, nlse, lw);
    printf("%-48s n=%-8zu max rel diff %.3g (tol %.0e)\n", "  lse", nlse, lw, RTOL);
    snprintf(name, sizeof name, "attention_backward_lse NH=%d dh=%d%s p=%.1f", NH, dh, f, p);
    cmp_rel(g, name, dqkv, gd, nqkv, RTOL);
    same_bits(g, "attention_train_lse out", go, go2, nout);
    same_bits(g, "attention_train_lse lse", gl, gl2, nlse);
    same_bits(g, "attention_backward_lse", gd, gd2, nqkv);
    ops_free(g, gids), ops_free(g, gqkv), ops_free(g, gdout), ops_free(g, go), ops_free(g, gl), ops_free(g, gd);
    ops_free(g, go2), ops_free(g, gl2), ops_free(g, gd2);
    free(qkv), free(dout), free(out), free(lse), free(dqkv), free(hl);
}

/* Time of forward + backward, probabilities saved vs log-sum-exp, at the MiniLM shape (12 heads x 32) on S
 * sequences of length L, dropout 0.1; what each keeps for the backward. Printed, not checked. */
static void timing(Backend *g, int S, int L) {
    int NH = 12, dh = 32, H = NH * dh, N = S * L;
    int32_t *off = xr_malloc((size_t)(S + 1) * 4);
    for (int s = 0; s <= S; s++) off[s] = s * L;
    int32_t *doff = up(g, off, (size_t)(S + 1) * 4);
    size_t nqkv = (size_t)N * 3 * H, nout = (size_t)N * H, natt = (size_t)S * NH * L * L, nlse = (size_t)N * NH;
    float *hq = rnd(nqkv, -1.5f, 1.5f), *hd = rnd(nout, -1, 1);
    float *qkv = up(g, hq, nqkv * 4), *dout = up(g, hd, nout * 4), *out = dev_nan(g, nout), *d = dev_nan(g, nqkv);
    float *att = (float *)cuda_ops_alloc(g, natt * 4), *lse = dev_nan(g, nlse);
    XrDropout dr = {0.1f, 99, NULL};
    double t[2];
    for (int k = 0; k < 2; k++) {
        for (int rep = -1; rep < 5; rep++) {
            if (rep == 0) cuda_ops_sync(g), t[k] = xr_now();
            if (k == 0) {
                ops_attention_train(g, out, att, qkv, doff, S, L, NH, dh, 0, &dr);
                ops_attention_backward(g, d, dout, qkv, att, doff, S, L, NH, dh, 0, &dr);
            } else {
                ops_attention_train_lse(g, out, lse, qkv, doff, S, L, NH, dh, 0, &dr);
                ops_attention_backward_lse(g, d, dout, qkv, lse, doff, S, L, NH, dh, 0, &dr);
            }
        }
        cuda_ops_sync(g);
        t[k] = (xr_now() - t[k]) / 5 * 1e3;
    }
    printf("time S=%d L=%d NH=%d dh=%d p=0.1, forward + backward: probabilities saved %.3f ms (%zu B kept), "
           "lse %.3f ms (%zu B kept)\n", S, L, NH, dh, t[0], natt * 4, t[1], nlse * 4);
    ops_free(g, doff), ops_free(g, qkv), ops_free(g, dout), ops_free(g, out), ops_free(g, d), ops_free(g, att);
    ops_free(g, lse);
    free(off), free(hq), free(hd);
}
#endif

int main(void) {
#ifndef XR_HAVE_CUDA
    TU_SKIP("built without the CUDA backend (-DXRANK_CUDA=OFF or nvcc missing)");
#else
    if (ops_device_count(XR_DEV_CUDA) == 0) TU_SKIP("no GPU visible");
    XrErr e;
    Backend *c = ops_backend_cpu(2), *g = ops_backend_create(XR_DEV_CUDA, 0, XR_PREC_FP32, 0, &e);
    if (!g) xr_die("%s", e.msg);
    int32_t off[NSEQ + 1] = {0};
    int max_len = 0;
    for (int s = 0; s < NSEQ; s++) {
        off[s + 1] = off[s] + kLens[s];
        if (kLens[s] > max_len) max_len = kLens[s];
    }
    int32_t *doff = up(g, off, sizeof off);
    for (int first = 0; first < 2; first++) {
        check(c, g, off, doff, off[NSEQ], max_len, 4, 32, first, 0.0f);
        check(c, g, off, doff, off[NSEQ], max_len, 4, 32, first, 0.1f);
        check(c, g, off, doff, off[NSEQ], max_len, 3, 64, first, 0.1f);
        check(c, g, off, doff, off[NSEQ], max_len, 2, 20, first, 0.3f);
    }
    if (!cuemu_skip_timing("saved probabilities vs lse")) {
        timing(g, 64, 128);
        timing(g, 16, 512);
    }
    cuda_ops_sync(g);
    ops_free(g, doff);
    ops_backend_free(g);
    ops_backend_free(c);
    return tu_finish("test_cuda_attention_lse");
#endif
}
