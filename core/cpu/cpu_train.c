/* cpu_train.c: the CPU kernels of training: dropout, the backward passes of the token-wise ops (bias sums,
 * embeddings, LayerNorm, GELU, tanh, poolings, L2 norm) and the optimizer arithmetic (sum of squares, scale,
 * AdamW). Sums over tokens run per column range in row order, so results do not depend on the thread count. */
#include <math.h>
#include <string.h>

#include "adamw_step.h"
#include "cpu_math.h"
#include "cpu_ops.h"
#include "rng.h"

/* Column ranges for reductions over rows: part p of nparts, boundaries at multiples of 16 floats. */
static int col_parts(const Backend *be, size_t rows, int N) {
    int units = (N + 15) / 16, nt = be->threads;
    if ((size_t)N * rows < XR_PAR_MIN) nt = 1;
    return nt < units ? (nt > 0 ? nt : 1) : units;
}

static void col_range(int N, int parts, int p, int *lo, int *hi) {
    int units = (N + 15) / 16;
    int u0 = (int)((long long)units * p / parts), u1 = (int)((long long)units * (p + 1) / parts);
    *lo = u0 * 16 < N ? u0 * 16 : N;
    *hi = u1 * 16 < N ? u1 * 16 : N;
}

/* Sequence of packed row k (binary search in seq_off). */
static int row_seq(const int32_t *seq_off, int S, int k) {
    int lo = 0, hi = S - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (seq_off[mid] <= k)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* One row of the dropout mask (rng.h), compiled per ISA level so the generator vectorises. */
XR_CLONES
static void dropout_row(float *dst, const float *src, const float *res, int n, uint64_t key, uint32_t c1, uint64_t id,
                        uint32_t thr, float scale) {
    rng_dropout_add_span(dst, src, res, n, key, c1, id, thr, scale);
}

static void dropout_add_f32(Backend *be, float *out, const float *x, const float *res, const int32_t *seq_off,
                            int S, int H, const XrDropout *d) {
    int n = seq_off ? seq_off[S] - seq_off[0] : S, nt = be->threads;
    if (n <= 0) return;
    int k0 = seq_off ? seq_off[0] : 0;
    if (!d || d->p <= 0.0f) {
        size_t total = (size_t)n * H;
        const float *xs = x + (size_t)k0 * H, *rs = res ? res + (size_t)k0 * H : NULL;
        float *os = out + (size_t)k0 * H;
        if (rs) {
            XR_SPANS(nt, total, {
                for (size_t i = lo; i < hi; i++) os[i] = rs[i] + xs[i];
            });
        } else if (os != xs) {
            memmove(os, xs, total * sizeof(float));
        }
        return;
    }
    uint32_t thr = rng_drop_threshold(d->p);
    float scale = 1.0f / (1.0f - d->p);
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if ((size_t)n * H > XR_PAR_MIN / 8))
    for (int i = 0; i < n; i++) {
        int k = k0 + i, s = seq_off ? row_seq(seq_off, S, k) : k, t = seq_off ? k - seq_off[s] : 0;
        uint64_t id = d->seq_ids ? d->seq_ids[s] : (uint64_t)s;
        size_t o = (size_t)k * H;
        dropout_row(out + o, x + o, res ? res + o : NULL, H, d->key, (uint32_t)t, id, thr, scale);
    }
}

void cpu_dropout_add(Backend *be, float *out, const float *x, const float *res, const int32_t *seq_off, int S,
                     int H, const XrDropout *d) {
    if (cpu_pk_live(be)) { cpu_packed_dropout_add(be, out, x, res, seq_off, S, H, d); return; }
    dropout_add_f32(be, out, x, res, seq_off, S, H, d);
    int n = seq_off ? seq_off[S] - seq_off[0] : S;
    if (n > 0) cpu_act_store(be, out + (size_t)(seq_off ? seq_off[0] : 0) * H, (size_t)n * H);
}

/* Column sums walk the rows in order over blocks of XR_COLBLK columns, with double accumulators (a bias
 * gradient sums over every token of the batch): rows are read contiguously, and each column's sum has the
 * same order whatever the split. */
#define XR_COLBLK 256

XR_CLONES
static void colsum_block(double *acc, const float *dy, int M, int N, int nb) {
    for (int j = 0; j < nb; j++) acc[j] = 0;
    for (int i = 0; i < M; i++) {
        const float *r = dy + (size_t)i * N;
        for (int j = 0; j < nb; j++) acc[j] += r[j];
    }
}

void cpu_colsum_add(Backend *be, float *db, const float *dy, int M, int N) {
    int parts = col_parts(be, (size_t)M, N);
    XR_OMP(omp parallel for num_threads(parts) schedule(static) if (parts > 1))
    for (int p = 0; p < parts; p++) {
        int j0, j1;
        col_range(N, parts, p, &j0, &j1);
        double acc[XR_COLBLK];
        for (int jb = j0; jb < j1; jb += XR_COLBLK) {
            int nb = j1 - jb < XR_COLBLK ? j1 - jb : XR_COLBLK;
            colsum_block(acc, dy + jb, M, N, nb);
            for (int j = 0; j < nb; j++) db[jb + j] += (float)acc[j];
        }
    }
}

/* nn.Linear backward: the two products on the GEMM kernels, the bias sums above. */
void cpu_linear_backward(Backend *be, float *dx, float *dW, float *db, const float *dy, const float *x,
                         const float *W, int M, int N, int K, int accumulate_dx) {
    if (M <= 0) return;
    if (cpu_pk_live(be)) { cpu_packed_linear_backward(be, dx, dW, db, dy, x, W, M, N, K, accumulate_dx); return; }
    /* bf16 training: both products read bf16 operands (dy rounded, W's working copy, x rounded) and accumulate
     * in fp32; the bias sums read the fp32 dy */
    const float *dyr = cpu_gemm_operand(be, dy, (size_t)M * N, 0);
    if (dx) cpu_gemm(be, 0, 0, M, K, N, 1.0f, dyr, N, cpu_gemm_weight(be, W), K, accumulate_dx ? 1.0f : 0.0f, dx, K);
    if (dW) cpu_gemm(be, 1, 0, N, K, M, 1.0f, dyr, N, cpu_gemm_operand(be, x, (size_t)M * K, 1), K, 1.0f, dW, K);
    if (db) cpu_colsum_add(be, db, dy, M, N);
}

XR_CLONES
static void add_row(float *dst, const float *src, int n) {
    for (int j = 0; j < n; j++) dst[j] += src[j];
}

void cpu_embed_backward(Backend *be, float *dword, float *dpos, float *dtype, const float *dout, const int32_t *ids,
                        const int32_t *pos_ids, const int32_t *types, int n, int H) {
    /* Each thread owns a column range of every table and walks the tokens in order: repeated ids add up in
     * the same order whatever the thread count, and no two threads write one float. */
    int parts = col_parts(be, (size_t)n * 3, H);
    XR_OMP(omp parallel for num_threads(parts) schedule(static) if (parts > 1))
    for (int p = 0; p < parts; p++) {
        int j0, j1;
        col_range(H, parts, p, &j0, &j1);
        for (int i = 0; i < n; i++) {
            const float *g = dout + (size_t)i * H + j0;
            add_row(dword + (size_t)ids[i] * H + j0, g, j1 - j0);
            add_row(dpos + (size_t)pos_ids[i] * H + j0, g, j1 - j0);
            if (dtype) add_row(dtype + (types ? (size_t)types[i] * H : 0) + j0, g, j1 - j0);
        }
    }
}

/* One row: dx = rstd * (dy g - mean(dy g) - xhat mean(dy g xhat)). Reads the whole row before writing it. */
XR_CLONES
static void layernorm_backward_row(float *dx, const float *dy, const float *x, float mean, float rstd,
                                   const float *g, int H, int accumulate) {
    float s1 = 0.0f, s2 = 0.0f;
    XR_OMP(omp simd reduction(+ : s1, s2))
    for (int j = 0; j < H; j++) {
        float dg = dy[j] * g[j];
        s1 += dg;
        s2 += dg * (x[j] - mean) * rstd;
    }
    float a = s1 / (float)H, b = s2 / (float)H;
    if (accumulate) {
        for (int j = 0; j < H; j++) dx[j] += rstd * (dy[j] * g[j] - a - (x[j] - mean) * rstd * b);
    } else {
        for (int j = 0; j < H; j++) dx[j] = rstd * (dy[j] * g[j] - a - (x[j] - mean) * rstd * b);
    }
}

/* dgamma, dbeta partial sums of a block of nb columns over all rows, in row order. */
XR_CLONES
static void ln_param_block(double *sg, double *sb, const float *dout, const float *x, const float *mean,
                           const float *rstd, int n, int H, int nb) {
    for (int j = 0; j < nb; j++) sg[j] = 0, sb[j] = 0;
    for (int i = 0; i < n; i++) {
        const float *d = dout + (size_t)i * H, *xr = x + (size_t)i * H;
        float mu = mean[i], rs = rstd[i];
        for (int j = 0; j < nb; j++) {
            sg[j] += d[j] * ((xr[j] - mu) * rs);
            sb[j] += d[j];
        }
    }
}

void cpu_layernorm_backward(Backend *be, float *dx, float *dg, float *db, const float *dout, const float *x,
                            const float *mean, const float *rstd, const float *g, int n, int H, int accumulate) {
    if (cpu_pk_live(be)) {
        cpu_packed_layernorm_backward(be, dx, dg, db, dout, x, mean, rstd, g, n, H, accumulate);
        return;
    }
    int nt = be->threads;
    /* dg, db first: dx may overwrite dout */
    int parts = col_parts(be, (size_t)n * 2, H);
    XR_OMP(omp parallel for num_threads(parts) schedule(static) if (parts > 1))
    for (int p = 0; p < parts; p++) {
        int j0, j1;
        col_range(H, parts, p, &j0, &j1);
        double sg[XR_COLBLK], sb[XR_COLBLK];
        for (int jb = j0; jb < j1; jb += XR_COLBLK) {
            int nb = j1 - jb < XR_COLBLK ? j1 - jb : XR_COLBLK;
            ln_param_block(sg, sb, dout + jb, x + jb, mean, rstd, n, H, nb);
            for (int j = 0; j < nb; j++) dg[jb + j] += (float)sg[j], db[jb + j] += (float)sb[j];
        }
    }
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if ((size_t)n * H > XR_PAR_MIN))
    for (int i = 0; i < n; i++) {
        size_t o = (size_t)i * H;
        layernorm_backward_row(dx + o, dout + o, x + o, mean[i], rstd[i], g, H, accumulate);
    }
}

XR_CLONES
static void gelu_backward_span(float *dx, const float *x, const float *dy, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        /* d/dx [x Phi(x)] = Phi(x) + x phi(x), phi the standard normal density */
        float pdf = 0.3989422804014327f * xr_expf(-0.5f * v * v);
        dx[i] = dy[i] * (xr_phif(v) + v * pdf);
    }
}

XR_CLONES
static void tanh_backward_span(float *dx, const float *y, const float *dy, size_t n) {
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

void cpu_gelu_backward(Backend *be, float *dx, const float *x, const float *dy, size_t n) {
    if (cpu_pk_live(be)) { cpu_packed_unary_backward(be, cpu_gelu_backward, dx, x, dy, n); return; }
    XR_SPANS(be->threads, n, gelu_backward_span(dx + lo, x + lo, dy + lo, hi - lo));
}

void cpu_tanh_backward(Backend *be, float *dx, const float *y, const float *dy, size_t n) {
    if (cpu_pk_live(be)) { cpu_packed_unary_backward(be, cpu_tanh_backward, dx, y, dy, n); return; }
    XR_SPANS(be->threads, n, tanh_backward_span(dx + lo, y + lo, dy + lo, hi - lo));
}

void cpu_pool_first_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H) {
    (void)be;
    for (int s = 0; s < S; s++) add_row(dx + (size_t)seq_off[s] * H, dout + (size_t)s * H, H);
}

XR_CLONES
static void add_scaled_rows(float *dx, const float *g, int rows, int H) {
    float inv = 1.0f / (float)(rows > 0 ? rows : 1);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < H; j++) dx[(size_t)r * H + j] += g[j] * inv;
}

void cpu_pool_mean_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H) {
    int nt = be->threads;
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if ((size_t)seq_off[S] * H > XR_PAR_MIN))
    for (int s = 0; s < S; s++)
        add_scaled_rows(dx + (size_t)seq_off[s] * H, dout + (size_t)s * H, seq_off[s + 1] - seq_off[s], H);
}

XR_CLONES
static void l2norm_backward_row(float *dx, const float *dy, const float *x, int H) {
    float ss = 0.0f;
    XR_OMP(omp simd reduction(+ : ss))
    for (int j = 0; j < H; j++) ss += x[j] * x[j];
    float nrm = sqrtf(ss);
    if (!(nrm > 1e-12f)) {
        /* the norm was clamped to 1e-12: y = x / 1e-12 is linear in x */
        for (int j = 0; j < H; j++) dx[j] = dy[j] * 1e12f;
        return;
    }
    float inv = 1.0f / nrm, dot = 0.0f;
    XR_OMP(omp simd reduction(+ : dot))
    for (int j = 0; j < H; j++) dot += x[j] * dy[j];
    dot *= inv; /* y . dy */
    for (int j = 0; j < H; j++) dx[j] = (dy[j] - x[j] * inv * dot) * inv;
}

void cpu_l2norm_backward(Backend *be, float *dx, const float *dy, const float *x, int n, int H) {
    if (cpu_pk_live(be)) { cpu_packed_l2norm_backward(be, dx, dy, x, n, H); return; }
    int nt = be->threads;
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if ((size_t)n * H > XR_PAR_MIN))
    for (int i = 0; i < n; i++) l2norm_backward_row(dx + (size_t)i * H, dy + (size_t)i * H, x + (size_t)i * H, H);
}

void cpu_zero(Backend *be, float *x, size_t n) {
    XR_SPANS(be->threads, n, memset(x + lo, 0, (hi - lo) * sizeof(float)));
}

XR_CLONES
static void scale_span(float *x, size_t n, float a) {
    for (size_t i = 0; i < n; i++) x[i] *= a;
}

void cpu_scale(Backend *be, float *x, size_t n, float alpha) {
    XR_SPANS(be->threads, n, scale_span(x + lo, hi - lo, alpha));
}

/* Fixed chunks, each summed in double, then the chunk sums in order: the same bits for any thread count. */
#define XR_SSQ_CHUNK 16384

XR_CLONES
static double ssq_span(const float *x, size_t n) {
    double s = 0;
    XR_OMP(omp simd reduction(+ : s))
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

double cpu_sum_squares(Backend *be, const float *x, size_t n) {
    if (n == 0) return 0;
    size_t nc = (n + XR_SSQ_CHUNK - 1) / XR_SSQ_CHUNK;
    double *part = (double *)cpu_scratch(be, 2 * nc, 1);
    int nt = be->threads;
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if (n > XR_PAR_MIN))
    for (size_t c = 0; c < nc; c++) {
        size_t lo = c * XR_SSQ_CHUNK, hi = lo + XR_SSQ_CHUNK < n ? lo + XR_SSQ_CHUNK : n;
        part[c] = ssq_span(x + lo, hi - lo);
    }
    double s = 0;
    for (size_t c = 0; c < nc; c++) s += part[c];
    return s;
}

/* torch's single-tensor AdamW, element by element (adamw_step.h). */
XR_CLONES
static void adamw_span(float *p, const float *g, float *m, float *v, size_t n, XrAdamScalars a) {
    for (size_t i = 0; i < n; i++) adamw_element(p + i, m + i, v + i, g[i], a);
}

void cpu_adamw(Backend *be, float *p, const float *g, float *m, float *v, size_t n, double lr, double beta1,
               double beta2, double eps, double wd, int64_t step) {
    XrAdamScalars a = adamw_scalars(lr, beta1, beta2, eps, wd, step);
    XR_SPANS(be->threads, n, adamw_span(p + lo, g + lo, m + lo, v + lo, hi - lo, a));
}
