/* cpu_fused.c: the CPU backend's fused training ops (ops_list.h, "fused training ops"). Each runs the unfused
 * sequence of CPU ops that defines it, so a model trained on the CPU gets the same bits whether its code calls the
 * fused op or the sequence: the fusion is a GPU speed-up, the CPU is its reference. */
#include "cpu_ops.h"

/* The row layout both LayerNorm ops are given: n rows, seq_off[0] = 0 and seq_off[S] = n with seq_off, n = S
 * without. A mismatch is a bug of the caller. */
static void fused_rows_check(const char *op, const int32_t *seq_off, int S, int n) {
    if (seq_off ? (S < 0 || seq_off[0] != 0 || seq_off[S] != n) : n != S)
        xr_die("ops_%s: %d rows do not match the %d sequences (seq_off %s: rows %d .. %d)", op, n, S,
               seq_off ? "given" : "NULL", seq_off && S >= 0 ? seq_off[0] : 0, seq_off && S >= 0 ? seq_off[S] : S);
}

void cpu_dropout_add_layernorm(Backend *be, float *out, float *v, float *mean, float *rstd, const float *x,
                               const float *res, const float *g, const float *b, const int32_t *seq_off, int S, int n,
                               int H, float eps, const XrDropout *d) {
    fused_rows_check("dropout_add_layernorm", seq_off, S, n);
    if (!v || !mean || !rstd || v == out)
        xr_die("ops_dropout_add_layernorm: v, mean and rstd are what the backward reads (given %p, %p, %p; out %p)",
               (void *)v, (void *)mean, (void *)rstd, (void *)out);
    cpu_dropout_add(be, v, x, res, seq_off, S, H, d);
    cpu_layernorm(be, out, mean, rstd, v, NULL, g, b, n, H, eps);
}

void cpu_dropout_add_layernorm_backward(Backend *be, float *dres, float *dx, float *dg, float *db, const float *dout,
                                        const float *v, const float *mean, const float *rstd, const float *g,
                                        const int32_t *seq_off, int S, int n, int H, const XrDropout *d) {
    fused_rows_check("dropout_add_layernorm_backward", seq_off, S, n);
    cpu_layernorm_backward(be, dres, dg, db, dout, v, mean, rstd, g, n, H, 0);
    cpu_dropout_add(be, dx, dres, NULL, seq_off, S, H, d);
}

void cpu_gelu_bias_backward(Backend *be, float *dx, float *db, const float *x, const float *dy, int M, int N) {
    if (M <= 0 || N <= 0) return;
    cpu_gelu_backward(be, dx, x, dy, (size_t)M * N);
    if (db) cpu_colsum_add(be, db, dx, M, N);
}

void cpu_linear_gelu(Backend *be, float *g, float *f, const float *x, const float *W, const float *b, int M, int N,
                     int K) {
    if (M <= 0 || N <= 0) return;
    if (g == f || f == x || g == x)
        xr_die("ops_linear_gelu: the outputs g %p and f %p may alias neither each other nor x %p", (void *)g,
               (void *)f, (const void *)x);
    cpu_linear(be, f, x, W, b, M, N, K);
    cpu_gelu(be, g, f, (size_t)M * N);
}
