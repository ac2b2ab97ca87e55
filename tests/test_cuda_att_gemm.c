/* test_cuda_att_gemm: the GEMM path of the training attention on the GPU (XR_CUDA_TRAIN_ATTENTION=gemm:
 * core/att_gemm.c's driver on core/cuda/att_gemm.cu's cuBLAS calls and kernels) through the op API
 * (attention_train, attention_backward), against the CPU backend and against the exact warp-per-row kernels
 * (XR_CUDA_TRAIN_ATTENTION=exact) on the GPU: packed ragged sequences of lengths 1, 63, 64, 65, 0 (empty), 127, 128,
 * 129, 300, 512; heads 4 x 32, 3 x 64 and 2 x 20; dropout p 0, 0.1, 0.3; all rows and the first row only; one chunk
 * and chunks of 3 blocks (XR_CUDA_ATT_CHUNK=3). Outputs NaN-poisoned; within 1e-5 relative (cmp_rel, as
 * test_cuda_train_ops: exact fp32 on every side, only the summation orders differ; a different dropout mask would be
 * O(1) off); two GPU runs give the same bits; no element is 0 on one path only. In bf16 activation
 * storage: every stored context value a bf16 number within one bf16 step of the exact kernels'. Then the time of
 * both paths at the XLM-R large layer shape (16 x 512 tokens, 16 heads of 64, p 0.1), printed for RESULTS.md, and
 * of the gemm path with bf16 operands (a working copy registered, as in bf16 training).
 * The log-sum-exp ops (attention_train_lse / attention_backward_lse) the same way: the gemm path against the CPU's
 * lse ops and the exact lse kernels (out, lse, dqkv within 1e-5; chunks of 3; reruns bit-identical; no element 0 on
 * one path only; the empty sequence's lse row (first_only) left as it was), its context the same bits as the gemm
 * path's saved-probability forward (the same GEMMs and row code), the device scratch it allocates equal to what
 * ops_attention_scratch(.., lse 1) tells the memory plan (grown by 9/8), and its time at the XLM-R large layer beside
 * the exact lse kernels' (fp32, and with bf16 operands); and the lse backward's recomputed scores the forward's bits
 * (the driver on the CUDA primitives with the score GEMMs tapped, at a shape chunked by the 1 GiB budget).
 * Skipped (77) when built without the CUDA backend or when no GPU is visible. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"
#include "testutil.h"
#ifdef XR_HAVE_CUDA
#include "att_gemm.h"
#include "cuda/ops_cuda.h"
#endif

#ifdef XR_HAVE_CUDA
#define XR_CUDA_TEST_SEED 0x3C6EF372FE94F82Bull
#include "cuda_testutil.h"

#define RTOL 1e-5

static const int kLens[] = {1, 63, 64, 65, 0, 127, 128, 129, 300, 512};
#define NSEQ ((int)(sizeof kLens / sizeof kLens[0]))

/* A CUDA backend whose training attention is `path` (gemm | exact), chunk > 0: XR_CUDA_ATT_CHUNK. */
static Backend *gpu(const char *path, int chunk) {
    char c[16];
    snprintf(c, sizeof c, "%d", chunk);
    setenv("XR_CUDA_TRAIN_ATTENTION", path, 1);
    setenv("XR_CUDA_ATT_CHUNK", c, 1);
    XrErr e;
    Backend *g = ops_backend_create(XR_DEV_CUDA, 0, XR_PREC_FP32, 0, &e);
    if (!g) xr_die("%s", e.msg);
    unsetenv("XR_CUDA_TRAIN_ATTENTION"), unsetenv("XR_CUDA_ATT_CHUNK");
    return g;
}

static float *host(Backend *g, const float *d, size_t n) {
    float *h = xr_malloc(n * sizeof(float));
    cuda_ops_to_host(g, h, d, n * sizeof(float));
    return h;
}

typedef struct {
    float *out, *att, *dqkv; /* att: the saved probabilities, or with lse the log-sum-exps */
} Res;

#define LSE_UNWRITTEN 42.0f /* the empty sequence's lse row (first_only) before and after the ops */

/* One forward + backward on backend g from host inputs; results on the host. Runs it twice and checks the bits.
 * lse 1: the log-sum-exp ops, att being lse [nrow, NH]. */
static Res run_gpu(Backend *g, const char *what, const float *qkv, const float *dout, const int32_t *off, int N,
                   int max_len, int NH, int dh, int first_only, float p, const uint64_t *ids, int bf16, int lse) {
    int S = NSEQ, H = NH * dh, nrow = first_only ? S : N;
    size_t natt = 0, nqkv = (size_t)N * 3 * H, nout = (size_t)nrow * H;
    for (int s = 0; s < S; s++) natt += (size_t)(first_only ? (kLens[s] > 0) : kLens[s]) * kLens[s];
    natt *= NH;
    if (lse) natt = (size_t)nrow * NH;
    int32_t *doff = up(g, off, (S + 1) * sizeof(int32_t));
    uint64_t *gids = up(g, ids, S * sizeof(uint64_t));
    XrDropout d = {p, 0xFEEDFACECAFEBEEFull, gids};
    float *gqkv = up(g, qkv, nqkv * 4), *gdout = up(g, dout, nout * 4);
    float *o[2], *a[2], *dq[2];
    if (bf16) ops_act_precision(g, XR_PREC_BF16);
    for (int r = 0; r < 2; r++) {
        o[r] = dev_nan(g, nout), a[r] = dev_nan(g, natt), dq[r] = dev_nan(g, nqkv);
        if (first_only) /* an empty sequence's first row is written by no backend: 0 on all sides */
            for (int s = 0; s < S; s++)
                if (kLens[s] == 0) {
                    float z[256] = {0}, u[16];
                    for (int h = 0; h < NH; h++) u[h] = LSE_UNWRITTEN;
                    cuda_ops_to_device(g, o[r] + (size_t)s * H, z, (size_t)H * 4);
                    if (lse) cuda_ops_to_device(g, a[r] + (size_t)s * NH, u, (size_t)NH * 4);
                }
        if (lse) {
            ops_attention_train_lse(g, o[r], a[r], gqkv, doff, S, max_len, NH, dh, first_only, &d);
            ops_attention_backward_lse(g, dq[r], gdout, gqkv, a[r], doff, S, max_len, NH, dh, first_only, &d);
        } else {
            ops_attention_train(g, o[r], a[r], gqkv, doff, S, max_len, NH, dh, first_only, &d);
            ops_attention_backward(g, dq[r], gdout, gqkv, a[r], doff, S, max_len, NH, dh, first_only, &d);
        }
    }
    if (bf16) ops_act_precision(g, XR_PREC_FP32);
    char name[160];
    snprintf(name, sizeof name, "%s out", what), same_bits(g, name, o[0], o[1], nout);
    snprintf(name, sizeof name, "%s %s", what, lse ? "lse" : "att"), same_bits(g, name, a[0], a[1], natt);
    snprintf(name, sizeof name, "%s dqkv", what), same_bits(g, name, dq[0], dq[1], nqkv);
    Res res = {host(g, o[0], nout), host(g, a[0], natt), host(g, dq[0], nqkv)};
    for (int r = 0; r < 2; r++) ops_free(g, o[r]), ops_free(g, a[r]), ops_free(g, dq[r]);
    ops_free(g, doff), ops_free(g, gids), ops_free(g, gqkv), ops_free(g, gdout);
    return res;
}

static void free_res(Res *r) { free(r->out), free(r->att), free(r->dqkv); }

/* cmp_rel on host arrays: upload got, compare with want. */
static void rel(Backend *g, const char *what, const float *want, const float *got, size_t n) {
    (void)cmp; /* cuda_testutil.h's absolute comparison: the relative one serves here */
    float *d = up(g, got, n * 4);
    cmp_rel(g, what, want, d, n, RTOL);
    ops_free(g, d);
}

static size_t zero_diff(const float *a, const float *b, size_t n) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += (a[i] == 0.0f) != (b[i] == 0.0f);
    return m;
}

/* The three GPU runs of one case (the exact kernels: ge, the gemm path: gg, the gemm path in chunks of 3: gc; the
 * log-sum-exp ops with lse) against the CPU's results cpu[t] (out, att or lse, dqkv: n[t] elements), and the gemm
 * path against the exact kernels: within RTOL, the same zeros (the same dropout masks). Returns the gemm run. */
static Res three_paths(Backend *ge, Backend *gg, Backend *gc, const char *tag, int lse, float *const cpu[3],
                       const size_t n[3], const float *qkv, const float *dout, const int32_t *off, int N, int max_len,
                       int NH, int dh, int first_only, float p, const uint64_t *ids) {
    const char *k = lse ? " lse" : "";
    char name[160];
    snprintf(name, sizeof name, "exact%s %s", k, tag);
    Res e = run_gpu(ge, name, qkv, dout, off, N, max_len, NH, dh, first_only, p, ids, 0, lse);
    snprintf(name, sizeof name, "gemm%s %s", k, tag);
    Res m = run_gpu(gg, name, qkv, dout, off, N, max_len, NH, dh, first_only, p, ids, 0, lse);
    snprintf(name, sizeof name, "gemm%s chunk 3 %s", k, tag);
    Res c3 = run_gpu(gc, name, qkv, dout, off, N, max_len, NH, dh, first_only, p, ids, 0, lse);
    const char *lbl[3] = {"out", lse ? "lse" : "att", "dqkv"};
    float *ex[3] = {e.out, e.att, e.dqkv}, *gm[3] = {m.out, m.att, m.dqkv}, *ch[3] = {c3.out, c3.att, c3.dqkv};
    for (int t = 0; t < 3; t++) {
        snprintf(name, sizeof name, "gemm%s vs CPU %s %s", k, lbl[t], tag), rel(gg, name, cpu[t], gm[t], n[t]);
        snprintf(name, sizeof name, "gemm%s vs exact%s %s %s", k, k, lbl[t], tag), rel(gg, name, ex[t], gm[t], n[t]);
        snprintf(name, sizeof name, "gemm%s chunk 3 vs CPU %s %s", k, lbl[t], tag), rel(gg, name, cpu[t], ch[t], n[t]);
        size_t zd = zero_diff(ex[t], gm[t], n[t]);
        TU_CHECK(zd == 0, "gemm%s vs exact%s %s %s: %zu elements zero on one side only (the dropout masks differ)", k,
                 k, lbl[t], tag, zd);
    }
    free_res(&e), free_res(&c3);
    return m;
}

/* The log-sum-exp ops on the same inputs: the gemm path (gg, and chunks of 3: gc) against the CPU's and the exact lse
 * kernels (ge); its context the same bits as the gemm path's saved-probability forward (saved_out). */
static void check_lse(Backend *c, Backend *ge, Backend *gg, Backend *gc, const float *qkv, const float *dout,
                      const int32_t *off, int N, int max_len, int NH, int dh, int first_only, float p,
                      const uint64_t *ids, const float *saved_out, const char *tag) {
    int S = NSEQ, H = NH * dh, nrow = first_only ? S : N;
    size_t nqkv = (size_t)N * 3 * H, nout = (size_t)nrow * H, nlse = (size_t)nrow * NH;
    XrDropout dc = {p, 0xFEEDFACECAFEBEEFull, ids};
    float *out = xr_malloc(nout * 4), *lse = xr_malloc(nlse * 4), *dqkv = xr_malloc(nqkv * 4);
    memset(out, 0, nout * 4);
    for (size_t i = 0; i < nlse; i++) lse[i] = LSE_UNWRITTEN; /* rows no backend writes keep it */
    ops_attention_train_lse(c, out, lse, qkv, off, S, max_len, NH, dh, first_only, &dc);
    ops_attention_backward_lse(c, dqkv, dout, qkv, lse, off, S, max_len, NH, dh, first_only, &dc);
    float *cpu[3] = {out, lse, dqkv};
    size_t n[3] = {nout, nlse, nqkv};
    Res m = three_paths(ge, gg, gc, tag, 1, cpu, n, qkv, dout, off, N, max_len, NH, dh, first_only, p, ids);
    size_t diff = 0;
    for (size_t i = 0; i < nout; i++) diff += memcmp(m.out + i, saved_out + i, 4) != 0;
    TU_CHECK(diff == 0, "gemm lse %s: %zu of %zu context values differ from the gemm saved-probability forward's", tag,
             diff, nout);
    free_res(&m);
    free(out), free(lse), free(dqkv);
}

static void check(Backend *c, Backend *ge, Backend *gg, Backend *gc, int NH, int dh, int first_only, float p) {
    int S = NSEQ, H = NH * dh;
    int32_t off[NSEQ + 1] = {0};
    int max_len = 0;
    for (int s = 0; s < S; s++) off[s + 1] = off[s] + kLens[s], max_len = kLens[s] > max_len ? kLens[s] : max_len;
    int N = off[S], nrow = first_only ? S : N;
    size_t natt = 0, nqkv = (size_t)N * 3 * H, nout = (size_t)nrow * H;
    for (int s = 0; s < S; s++) natt += (size_t)(first_only ? (kLens[s] > 0) : kLens[s]) * kLens[s];
    natt *= NH;
    uint64_t ids[NSEQ];
    for (int s = 0; s < S; s++) ids[s] = 1000003u * (uint64_t)(s + 1) << 20;
    XrDropout dc = {p, 0xFEEDFACECAFEBEEFull, ids};
    float *qkv = rnd(nqkv, -1.5f, 1.5f), *dout = rnd(nout, -1, 1);
    float *out = xr_malloc(nout * 4), *att = xr_malloc(natt * 4), *dqkv = xr_malloc(nqkv * 4);
    memset(out, 0, nout * 4);
    ops_attention_train(c, out, att, qkv, off, S, max_len, NH, dh, first_only, &dc);
    ops_attention_backward(c, dqkv, dout, qkv, att, off, S, max_len, NH, dh, first_only, &dc);
    char tag[96];
    snprintf(tag, sizeof tag, "NH=%d dh=%d%s p=%.1f", NH, dh, first_only ? " first" : "", p);
    float *cpu[3] = {out, att, dqkv};
    size_t n[3] = {nout, natt, nqkv};
    Res m = three_paths(ge, gg, gc, tag, 0, cpu, n, qkv, dout, off, N, max_len, NH, dh, first_only, p, ids);
    check_lse(c, ge, gg, gc, qkv, dout, off, N, max_len, NH, dh, first_only, p, ids, m.out, tag);
    free_res(&m);
    free(qkv), free(dout), free(out), free(att), free(dqkv);
}

/* bf16 activation storage: the stored context is bf16 values within one bf16 step (2^-7 relative at most) plus the fp32
 * tolerance of the exact kernels'; att and dqkv stay fp32 (within RTOL). */
static void check_bf16(Backend *ge, Backend *gg) {
    int S = NSEQ, NH = 3, dh = 64, H = NH * dh;
    int32_t off[NSEQ + 1] = {0};
    int max_len = 0;
    for (int s = 0; s < S; s++) off[s + 1] = off[s] + kLens[s], max_len = kLens[s] > max_len ? kLens[s] : max_len;
    int N = off[S];
    uint64_t ids[NSEQ];
    for (int s = 0; s < S; s++) ids[s] = 77u * (uint64_t)(s + 5);
    float *qkv = rnd((size_t)N * 3 * H, -1.5f, 1.5f), *dout = rnd((size_t)N * H, -1, 1);
    Res e = run_gpu(ge, "exact bf16", qkv, dout, off, N, max_len, NH, dh, 0, 0.1f, ids, 1, 0);
    Res m = run_gpu(gg, "gemm bf16", qkv, dout, off, N, max_len, NH, dh, 0, 0.1f, ids, 1, 0);
    size_t nout = (size_t)N * H, bad = 0, notbf = 0, differ = 0;
    double ss = 0;
    for (size_t i = 0; i < nout; i++) ss += (double)e.out[i] * e.out[i];
    double rms = sqrt(ss / (double)nout);
    for (size_t i = 0; i < nout; i++) {
        uint32_t u;
        memcpy(&u, &m.out[i], 4);
        notbf += (u & 0xffffu) != 0;
        double d = fabs((double)m.out[i] - e.out[i]);
        bad += !(d <= fabs((double)e.out[i]) / 128.0 + RTOL * rms); /* a bf16 step: at most 2^-7 |x| */
        differ += m.out[i] != e.out[i];
    }
    TU_CHECK(notbf == 0, "gemm bf16: %zu of %zu stored context values are not bf16 numbers", notbf, nout);
    TU_CHECK(bad == 0, "gemm bf16: %zu of %zu context values beyond one bf16 step of the exact kernels'", bad, nout);
    printf("gemm bf16 context: %zu of %zu values differ from the exact kernels' (each within one bf16 step)\n", differ,
           nout);
    size_t natt = 0;
    for (int s = 0; s < S; s++) natt += (size_t)kLens[s] * kLens[s];
    natt *= NH;
    rel(gg, "gemm bf16 att (fp32)", e.att, m.att, natt);
    rel(gg, "gemm bf16 dqkv (fp32)", e.dqkv, m.dqkv, (size_t)N * 3 * H);
    free_res(&e), free_res(&m);
    free(qkv), free(dout);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The XLM-R large layer (16 sequences of 512 tokens, 16 heads of 64, p 0.1), for the saved-probability ops (lse 0)
 * or the log-sum-exp ones (lse 1): ms per forward and backward of the exact kernels, the gemm path, and the gemm path
 * in bf16 training (a working copy registered: bf16 operands on the tensor cores, ops_list.h "training precision");
 * gemm vs exact within RTOL, the bf16 operands' results finite and within bf16's reach (2^-5 rms) of the fp32 gemm
 * path's (their own correctness: test_cuda_bf16_train_attgemm's attention products). The lines' wording differs
 * between the two kinds: att_bf16_lines.sh and att_lse_lines.sh grep them apart. */
static void timing(Backend *ge, Backend *gg, int lse) {
    const int S = 16, L = 512, NH = 16, dh = 64, H = NH * dh, N = S * L, reps = 5;
    int32_t off[17];
    for (int s = 0; s <= S; s++) off[s] = s * L;
    size_t nsav = lse ? (size_t)N * NH : (size_t)S * NH * L * L, nqkv = (size_t)N * 3 * H, nout = (size_t)N * H;
    float *qkv = rnd(nqkv, -1.5f, 1.5f), *dout = rnd(nout, -1, 1);
    float *res[3][3], zero16[16] = {0};
    Backend *bs[3] = {ge, gg, gg};
    static const char *const path[2][3] = {{"exact", "gemm ", "gemm bf16 operands"},
                                           {"exact", "gemm", "gemm with bf16 operands"}};
    for (int b = 0; b < 3; b++) {
        Backend *g = bs[b];
        float *dm = b == 2 ? up(g, zero16, sizeof zero16) : NULL;
        if (dm) ops_bf16_weights(g, dm, 16);
        int32_t *doff = up(g, off, sizeof off);
        XrDropout d = {0.1f, 0x5EED5EEDull, NULL};
        float *gq = up(g, qkv, nqkv * 4), *gd = up(g, dout, nout * 4);
        float *o = dev_nan(g, nout), *a = dev_nan(g, nsav), *dq = dev_nan(g, nqkv);
        double tf = 0, tb = 0;
        for (int r = 0; r < reps + 1; r++) { /* the first: warm-up (scratch growth, cuBLAS's first calls) */
            cuda_ops_sync(g);
            double t0 = now();
            if (lse) ops_attention_train_lse(g, o, a, gq, doff, S, L, NH, dh, 0, &d);
            else ops_attention_train(g, o, a, gq, doff, S, L, NH, dh, 0, &d);
            cuda_ops_sync(g);
            double t1 = now();
            if (lse) ops_attention_backward_lse(g, dq, gd, gq, a, doff, S, L, NH, dh, 0, &d);
            else ops_attention_backward(g, dq, gd, gq, a, doff, S, L, NH, dh, 0, &d);
            cuda_ops_sync(g);
            if (r) tf += t1 - t0, tb += now() - t1;
        }
        printf("attention %s%s, 16 x 512 tokens, 16 heads of 64, p 0.1: forward %.2f ms, backward %.2f ms\n",
               lse ? "lse " : "", path[lse][b], 1e3 * tf / reps, 1e3 * tb / reps);
        res[b][0] = host(g, o, nout), res[b][1] = host(g, a, nsav), res[b][2] = host(g, dq, nqkv);
        ops_free(g, doff), ops_free(g, gq), ops_free(g, gd), ops_free(g, o), ops_free(g, a), ops_free(g, dq);
        if (dm) ops_bf16_weights(g, NULL, 0), ops_free(g, dm);
    }
    const char *nm[3] = {"out", lse ? "lse" : "att", "dqkv"};
    size_t nn[3] = {nout, nsav, nqkv};
    for (int t = 0; t < 3; t++) {
        double dd = 0, ss = 0;
        size_t bad = 0;
        for (size_t i = 0; i < nn[t]; i++) {
            bad += !isfinite(res[2][t][i]);
            dd += (res[2][t][i] - (double)res[1][t][i]) * (res[2][t][i] - (double)res[1][t][i]);
            ss += (double)res[1][t][i] * res[1][t][i];
        }
        double r = ss > 0 ? sqrt(dd / ss) : 0;
        TU_CHECK(bad == 0 && r <= 0x1p-5, "timing shape%s: %s %s: %zu non-finite, %.3g rms-relative from the fp32 "
                 "gemm path's (at most 2^-5)", lse ? " lse" : "", lse ? "with bf16 operands" : "gemm bf16 operands",
                 nm[t], bad, r);
        if (lse) printf("timing shape lse: with bf16 operands vs fp32 gemm %s: %.2e rms-relative\n", nm[t], r);
        else printf("timing shape: gemm bf16 operands vs fp32 %s: %.2e rms-relative\n", nm[t], r);
        char w[96];
        snprintf(w, sizeof w, lse ? "timing shape: gemm lse vs exact lse %s" : "timing shape: gemm vs exact %s", nm[t]);
        rel(gg, w, res[0][t], res[1][t], nn[t]);
    }
    for (int b = 0; b < 3; b++)
        for (int t = 0; t < 3; t++) free(res[b][t]);
    free(qkv), free(dout);
}

/* The memory plan's figure for the lse gemm path against what it allocates: on a fresh backend, one forward and
 * backward grow the scratch slot to 9/8 of the largest request (core/cuda/ops_cuda.cu), which must lie within
 * [s, s + s / 8] for s = ops_attention_scratch(.., lse 1); and s is above the saved path's (the backward's P block),
 * while the exact kernels need the same row sums for both kinds. */
static void scratch_lse(Backend *ge) {
    Backend *g = gpu("gemm", 0);
    int S = NSEQ, NH = 4, dh = 32, H = NH * dh, max_len = 0;
    int32_t off[NSEQ + 1] = {0};
    for (int s = 0; s < S; s++) off[s + 1] = off[s] + kLens[s], max_len = kLens[s] > max_len ? kLens[s] : max_len;
    int N = off[S];
    size_t nqkv = (size_t)N * 3 * H, nout = (size_t)N * H, nlse = (size_t)N * NH;
    float *qkv = rnd(nqkv, -1.5f, 1.5f), *dout = rnd(nout, -1, 1);
    int32_t *doff = up(g, off, sizeof off);
    float *gq = up(g, qkv, nqkv * 4), *gd = up(g, dout, nout * 4);
    float *o = dev_nan(g, nout), *l = dev_nan(g, nlse), *dq = dev_nan(g, nqkv);
    XrDropout d = {0.1f, 0x77ull, NULL};
    XrMemStats a, b;
    cuda_ops_sync(g);
    ops_mem_reset_peak(g);
    ops_mem_stats(g, &a);
    ops_attention_train_lse(g, o, l, gq, doff, S, max_len, NH, dh, 0, &d);
    ops_attention_backward_lse(g, dq, gd, gq, l, doff, S, max_len, NH, dh, 0, &d);
    cuda_ops_sync(g);
    ops_mem_stats(g, &b);
    size_t s1 = ops_attention_scratch(g, S, max_len, NH, dh, 1), s0 = ops_attention_scratch(g, S, max_len, NH, dh, 0);
    size_t grew = b.peak - a.live;
    TU_CHECK(grew >= s1 && grew <= s1 + s1 / 8,
             "lse gemm path: the scratch grew by %zu bytes, ops_attention_scratch(lse 1) says %zu (+1/8: %zu)", grew,
             s1, s1 + s1 / 8);
    TU_CHECK(s1 > s0, "ops_attention_scratch: the lse gemm path's %zu bytes not above the saved path's %zu", s1, s0);
    TU_CHECK(ops_attention_scratch(ge, S, max_len, NH, dh, 1) == ops_attention_scratch(ge, S, max_len, NH, dh, 0),
             "ops_attention_scratch: the exact kernels' lse scratch differs from the saved path's");
    printf("lse gemm path scratch: %zu bytes allocated, plan %zu (saved-probability gemm path %zu)\n", grew, s1, s0);
    ops_free(g, doff), ops_free(g, gq), ops_free(g, gd), ops_free(g, o), ops_free(g, l), ops_free(g, dq);
    ops_backend_free(g);
    free(qkv), free(dout);
}

/* The score GEMMs' outputs as the driver makes them (a tap on the CUDA primitives' gemm): copied aside in the forward
 * (check 0), compared bit for bit with the copy in the backward (check 1). */
static struct {
    void (*gemm)(void *, int, int, int, int, int, float, const void *, int, long long, const void *, int, long long,
                 float, float *, int, long long, int, int);
    Backend *g;
    float *rec;
    size_t cap, used, diff;
    int check, calls;
} tap;

static void tap_gemm(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const void *A, int lda, long long sa,
                     const void *B, int ldb, long long sb, float beta, float *C, int ldc, long long sc, int batch,
                     int ab16) {
    tap.gemm(ctx, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, ab16);
    if (!(ta == 1 && tb == 0 && alpha != 1.0f)) return; /* scale q k^T (dPd = dO v^T has alpha 1) */
    size_t nf = (size_t)batch * (size_t)sc;
    TU_CHECK(tap.used + nf <= tap.cap, "score tap: %zu + %zu floats over the %zu recorded", tap.used, nf, tap.cap);
    if (tap.used + nf > tap.cap) return;
    if (!tap.check) {
        cuda_ops_copy(tap.g, tap.rec + tap.used, C, nf * sizeof(float));
    } else {
        float *a = xr_malloc(nf * sizeof(float)), *b = xr_malloc(nf * sizeof(float));
        cuda_ops_to_host(tap.g, a, tap.rec + tap.used, nf * sizeof(float));
        cuda_ops_to_host(tap.g, b, C, nf * sizeof(float));
        if (memcmp(a, b, nf * sizeof(float)))
            for (size_t i = 0; i < nf; i++) tap.diff += memcmp(a + i, b + i, sizeof(float)) != 0;
        free(a), free(b);
    }
    tap.used += nf, tap.calls++;
}

/* The lse backward's recomputed scores are the forward's bits (the same GEMM calls: attg_plan_lse chunks both by the
 * backward's bytes): core/att_gemm.c's driver on the CUDA primitives with the gemm tapped, at 32 x 512 tokens, 16
 * heads of 64 (512 blocks, more than the backward's 1 GiB chunk holds: the case where the chunkings used to differ),
 * fp32 and bf16 operands, dropout 0.1. The ops keep no P between the calls, so the scores are compared where the
 * driver makes them; P = exp(s - lse) follows from them by the same row code. */
static void lse_scores_bits(void) {
    Backend *g = gpu("gemm", 0);
    const int S = 32, L = 512, NH = 16, dh = 64, H = NH * dh, N = S * L;
    int32_t off[33];
    for (int s = 0; s <= S; s++) off[s] = s * L;
    size_t nqkv = (size_t)N * 3 * H, nout = (size_t)N * H;
    float *qkv = rnd(nqkv, -1.5f, 1.5f), *dout = rnd(nout, -1, 1);
    int32_t *doff = up(g, off, sizeof off);
    float *gq = up(g, qkv, nqkv * 4), *gd = up(g, dout, nout * 4);
    float *o = dev_nan(g, nout), *l = dev_nan(g, (size_t)N * NH), *dq = dev_nan(g, nqkv);
    XrDropout d = {0.1f, 0xB17EB17Eull, NULL};
    struct AttGemmPrims *cp = cuda_att_gemm_prims(g);
    AttGemmPrims pr = *cp;
    pr.gemm = tap_gemm;
    tap.gemm = cp->gemm, tap.g = g;
    for (int bf16 = 0; bf16 < 2; bf16++) {
        AttGemmPlan pf, pb;
        char err[256];
        if (attg_plan_lse(&pf, S, L, NH, dh, 0, 0, bf16, 0, err, sizeof err) ||
            attg_plan_lse(&pb, S, L, NH, dh, 0, 1, bf16, 0, err, sizeof err))
            xr_die("attg_plan_lse: %s", err);
        TU_CHECK(pf.chunk == pb.chunk && pf.chunk < pf.nb, "lse plans%s: forward chunk %d, backward %d, of %lld",
                 bf16 ? " bf16" : "", pf.chunk, pb.chunk, pf.nb);
        tap.cap = (size_t)pf.nb * pf.sq, tap.rec = ops_alloc(g, tap.cap * sizeof(float));
        tap.used = tap.diff = 0, tap.check = 0, tap.calls = 0;
        attg_forward_lse(&pr, &pf, o, l, gq, doff, &d, 0, NULL);
        int fcalls = tap.calls;
        tap.used = 0, tap.check = 1, tap.calls = 0;
        attg_backward_lse(&pr, &pb, dq, gd, gq, l, doff, &d);
        cuda_ops_sync(g);
        TU_CHECK(fcalls == tap.calls && tap.used == tap.cap && tap.diff == 0,
                 "lse%s: the backward's %d score GEMMs (%zu floats) against the forward's %d: %zu recomputed scores "
                 "differ", bf16 ? " bf16" : "", tap.calls, tap.used, fcalls, tap.diff);
        printf("lse%s backward: %d score GEMMs of %d blocks, %zu scores, %zu differ from the forward's\n",
               bf16 ? " bf16 operands" : "", tap.calls, pb.chunk, tap.used, tap.diff);
        ops_free(g, tap.rec);
    }
    free(cp);
    ops_free(g, doff), ops_free(g, gq), ops_free(g, gd), ops_free(g, o), ops_free(g, l), ops_free(g, dq);
    ops_backend_free(g);
    free(qkv), free(dout);
}
#endif

int main(void) {
#ifndef XR_HAVE_CUDA
    TU_SKIP("built without the CUDA backend (-DXRANK_CUDA=OFF or nvcc missing)");
#else
    if (ops_device_count(XR_DEV_CUDA) == 0) TU_SKIP("no GPU visible");
    Backend *c = ops_backend_cpu(2), *ge = gpu("exact", 0), *gg = gpu("gemm", 0), *gc = gpu("gemm", 3);
    TU_CHECK(ops_attention_scratch(gg, 10, 512, 4, 32, 0) > ops_attention_scratch(ge, 10, 512, 4, 32, 0),
             "ops_attention_scratch: the gemm path's %zu bytes not above the exact kernels' %zu",
             ops_attention_scratch(gg, 10, 512, 4, 32, 0), ops_attention_scratch(ge, 10, 512, 4, 32, 0));
    for (int first = 0; first < 2; first++) {
        check(c, ge, gg, gc, 4, 32, first, 0.0f);
        check(c, ge, gg, gc, 4, 32, first, 0.1f);
        check(c, ge, gg, gc, 3, 64, first, 0.1f);
        check(c, ge, gg, gc, 2, 20, first, 0.3f); /* a head size that is no multiple of 32 */
    }
    check_bf16(ge, gg);
    scratch_lse(ge);
    lse_scores_bits();
    timing(ge, gg, 0);
    timing(ge, gg, 1);
    ops_backend_free(gc);
    ops_backend_free(gg);
    ops_backend_free(ge);
    ops_backend_free(c);
    return tu_finish("test_cuda_att_gemm");
#endif
}
