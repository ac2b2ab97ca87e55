/* cpu_kernels.c: the token-wise CPU kernels: embedding gather, LayerNorm (with fused residual), GELU, tanh,
 * pooling and L2 normalisation. Rows are spread over OpenMP threads; each row kernel is an ISA clone. */
#include <math.h>
#include <string.h>

#include "cpu_math.h"
#include "cpu_ops.h"

XR_CLONES
static void embed_row(float *o, const float *w, const float *p, const float *t, int H) {
    for (int j = 0; j < H; j++) o[j] = w[j] + p[j] + t[j];
}

void cpu_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
               const float *word, const float *pos, const float *type, int n, int H) {
    if (cpu_pk_live(be)) { cpu_packed_embed(be, out, ids, pos_ids, types, word, pos, type, n, H); return; }
    int nt = be->threads;
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if ((size_t)n * H > XR_PAR_MIN))
    for (int i = 0; i < n; i++) {
        const float *t = type + (types ? (size_t)types[i] * H : 0);
        embed_row(out + (size_t)i * H, word + (size_t)ids[i] * H, pos + (size_t)pos_ids[i] * H, t, H);
    }
    cpu_act_store(be, out, (size_t)n * H);
}

/* One row: v = x + res (stored in o), then o = (v - mean) * rstd * g + b. Two-pass statistics. */
XR_CLONES
static void layernorm_row(float *o, float *mean_out, float *rstd_out, const float *x, const float *res,
                          const float *g, const float *b, int H, float eps) {
    float sum = 0.0f;
    if (res) {
        XR_OMP(omp simd reduction(+ : sum))
        for (int j = 0; j < H; j++) {
            float v = x[j] + res[j];
            o[j] = v;
            sum += v;
        }
    } else {
        XR_OMP(omp simd reduction(+ : sum))
        for (int j = 0; j < H; j++) {
            o[j] = x[j];
            sum += x[j];
        }
    }
    float mean = sum / (float)H;
    float var = 0.0f;
    XR_OMP(omp simd reduction(+ : var))
    for (int j = 0; j < H; j++) {
        float d = o[j] - mean;
        var += d * d;
    }
    float rstd = 1.0f / sqrtf(var / (float)H + eps);
    for (int j = 0; j < H; j++) o[j] = (o[j] - mean) * rstd * g[j] + b[j];
    if (mean_out) *mean_out = mean;
    if (rstd_out) *rstd_out = rstd;
}

void cpu_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res,
                   const float *g, const float *b, int n, int H, float eps) {
    if (cpu_pk_live(be)) { cpu_packed_layernorm(be, out, mean, rstd, x, res, g, b, n, H, eps); return; }
    int nt = be->threads;
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if ((size_t)n * H > XR_PAR_MIN))
    for (int i = 0; i < n; i++) {
        size_t off = (size_t)i * H;
        layernorm_row(out + off, mean ? mean + i : NULL, rstd ? rstd + i : NULL, x + off, res ? res + off : NULL,
                      g, b, H, eps);
    }
    cpu_act_store(be, out, (size_t)n * H); /* the statistics stay fp32 */
}

XR_CLONES
static void gelu_span(float *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = xr_geluf(x[i]);
}

XR_CLONES
static void tanh_span(float *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = tanhf(x[i]);
}

void cpu_gelu(Backend *be, float *out, const float *x, size_t n) {
    if (cpu_pk_live(be)) { cpu_packed_unary(be, cpu_gelu, out, x, n); return; }
    XR_SPANS(be->threads, n, gelu_span(out + lo, x + lo, hi - lo));
    cpu_act_store(be, out, n);
}

void cpu_tanh(Backend *be, float *out, const float *x, size_t n) {
    if (cpu_pk_live(be)) { cpu_packed_unary(be, cpu_tanh, out, x, n); return; }
    XR_SPANS(be->threads, n, tanh_span(out + lo, x + lo, hi - lo));
    cpu_act_store(be, out, n);
}

void cpu_pool_first(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    if (cpu_pk_live(be)) { cpu_packed_pool(be, 0, out, x, seq_off, S, H); return; }
    for (int s = 0; s < S; s++) memcpy(out + (size_t)s * H, x + (size_t)seq_off[s] * H, (size_t)H * sizeof(float));
    cpu_act_store(be, out, (size_t)S * H);
}

XR_CLONES
static void mean_rows(float *o, const float *x, int rows, int H) {
    for (int j = 0; j < H; j++) o[j] = 0.0f;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < H; j++) o[j] += x[(size_t)r * H + j];
    float inv = 1.0f / (float)(rows > 0 ? rows : 1);
    for (int j = 0; j < H; j++) o[j] *= inv;
}

void cpu_pool_mean(Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    if (cpu_pk_live(be)) { cpu_packed_pool(be, 1, out, x, seq_off, S, H); return; }
    int nt = be->threads;
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if ((size_t)seq_off[S] * H > XR_PAR_MIN))
    for (int s = 0; s < S; s++)
        mean_rows(out + (size_t)s * H, x + (size_t)seq_off[s] * H, seq_off[s + 1] - seq_off[s], H);
    cpu_act_store(be, out, (size_t)S * H);
}

XR_CLONES
static void l2norm_row(float *o, const float *x, int H) {
    float ss = 0.0f;
    XR_OMP(omp simd reduction(+ : ss))
    for (int j = 0; j < H; j++) ss += x[j] * x[j];
    float nrm = sqrtf(ss);
    float inv = 1.0f / (nrm > 1e-12f ? nrm : 1e-12f);
    for (int j = 0; j < H; j++) o[j] = x[j] * inv;
}

void cpu_l2norm(Backend *be, float *out, const float *x, int n, int H) {
    if (cpu_pk_live(be)) { cpu_packed_l2norm(be, out, x, n, H); return; }
    int nt = be->threads;
    XR_OMP(omp parallel for num_threads(nt) schedule(static) if ((size_t)n * H > XR_PAR_MIN))
    for (int i = 0; i < n; i++) l2norm_row(out + (size_t)i * H, x + (size_t)i * H, H);
}
