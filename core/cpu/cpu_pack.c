/* cpu_pack.c: packed (2-byte bf16) activation storage on the CPU backend, a test capability: off unless
 * cpu_set_act_pack_able turned it on, so CI runs the model's packed paths (byte offsets, unpacking, the switches)
 * without a GPU: the inference forward under ops_act_pack and bf16 training's saved activations in regions
 * registered with ops_act_region. Whether an argument is packed is the one rule of ops_act_packed_at (its address).
 * An op with a packed argument (cpu_packed_<op>) widens those inputs into fp32 scratch, runs the fp32 op unchanged
 * on them, and rounds what it stores into packed outputs (nearest even, core/bf16_bits.h): the fp32 op's result on
 * the same inputs, rounded once, bit for bit what the bf16-storage emulation (cpu_act_store) gives. */
#include <stdlib.h>
#include <string.h>

#include "bf16_bits.h"
#include "cpu_ops.h"

void cpu_set_act_pack_able(Backend *be, int able) {
    if (be->device != XR_DEV_CPU) xr_die("cpu_set_act_pack_able: not a CPU backend");
    cpu_pack_state(be)->able = able != 0;
    if (!able) be->act_packed = 0;
}

int cpu_act_pack(Backend *be, int on) {
    be->act_packed = on && cpu_pack_state(be)->able;
    return be->act_packed ? 2 : 4;
}

int cpu_act_region(Backend *be, const void *base, size_t bytes) {
    if (base && !bytes) return ops_act_region_keep(be, base, 0); /* forgetting always works */
    if (!cpu_pack_state(be)->able) return 4;
    return ops_act_region_keep(be, base, bytes);
}

int cpu_pk_live(Backend *be) {
    return !cpu_pack_state(be)->inside && (be->act_packed || be->n_act_regions > 0);
}

XR_CLONES
static void widen_span(float *o, const uint16_t *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)x[i] << 16;
        memcpy(&o[i], &u, 4);
    }
}

XR_CLONES
static void narrow_span(uint16_t *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = xr_bf16_bits(x[i]);
}

/* Nothing to derive: the CPU's GEMMs read the fp32 weights. */
void cpu_infer_weights(Backend *be, const float *w, size_t n) {
    (void)be, (void)w, (void)n;
}

void cpu_act_unpack(Backend *be, float *out, const float *x, size_t n) {
    int packed = ops_act_packed_at(be, x);
    if ((const char *)out < (const char *)x + n * (packed ? 2 : 4) && (const char *)x < (const char *)(out + n))
        xr_die("ops_act_unpack: out %p and x %p overlap (%zu elements)", (void *)out, (const void *)x, n);
    if (!packed) {
        memcpy(out, x, n * sizeof(float));
        return;
    }
    XR_SPANS(be->threads, n, widen_span(out + lo, (const uint16_t *)x + lo, hi - lo));
}

void cpu_pack_release(Backend *be) {
    CpuPack *p = cpu_pack_state(be);
    for (int i = 0; i < XR_PACK_SLOTS; i++) free(p->tmp[i]);
    memset(p, 0, sizeof *p);
}

/* Scratch slot `slot` of at least n floats (grow-only, contents not kept). */
static float *pk_tmp(Backend *be, int slot, size_t n) {
    CpuPack *p = cpu_pack_state(be);
    if (n > p->cap[slot]) {
        free(p->tmp[slot]);
        p->tmp[slot] = cpu_host_alloc((n ? n : 1) * sizeof(float));
        p->cap[slot] = n;
    }
    return p->tmp[slot];
}

/* The fp32 values of the n elements at x: x itself when fp32, else widened into slot `slot` (NULL stays NULL). */
static const float *pk_in(Backend *be, int slot, const float *x, size_t n) {
    if (!ops_act_packed_at(be, x)) return x;
    float *o = pk_tmp(be, slot, n);
    XR_SPANS(be->threads, n, widen_span(o + lo, (const uint16_t *)x + lo, hi - lo));
    return o;
}

/* Where the fp32 op writes output out (n elements): out itself when fp32, else slot `slot` holding out's values
 * widened (so an op that writes some of the rows finds the others as they were). */
static float *pk_outp(Backend *be, int slot, float *out, size_t n) { return (float *)pk_in(be, slot, out, n); }

/* After the op: the n values it wrote in v stored into out, rounded to bf16, when out is packed (v its slot). */
static void pk_store(Backend *be, float *out, const float *v, size_t n) {
    if (v == out) return;
    XR_SPANS(be->threads, n, narrow_span((uint16_t *)out + lo, v + lo, hi - lo));
}

/* The op itself runs inside, on the fp32 arguments: not packed again, act_pack's mode off while it runs. */
#define PK_RUN(call)                             \
    do {                                         \
        CpuPack *pk_ = cpu_pack_state(be);       \
        int ap_ = be->act_packed;                \
        pk_->inside = 1, be->act_packed = 0;     \
        call;                                    \
        pk_->inside = 0, be->act_packed = ap_;   \
    } while (0)

enum { PK_X, PK_RES, PK_OUT, PK_OUT2 };

void cpu_packed_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
                      const float *word, const float *pos, const float *type, int n, int H) {
    size_t ne = (size_t)n * H;
    float *o = pk_outp(be, PK_OUT, out, ne);
    PK_RUN(cpu_embed(be, o, ids, pos_ids, types, word, pos, type, n, H));
    pk_store(be, out, o, ne);
}

void cpu_packed_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res,
                          const float *g, const float *b, int n, int H, float eps) {
    size_t ne = (size_t)n * H;
    const float *xf = pk_in(be, PK_X, x, ne), *rf = pk_in(be, PK_RES, res, ne);
    float *o = pk_outp(be, PK_OUT, out, ne);
    PK_RUN(cpu_layernorm(be, o, mean, rstd, xf, rf, g, b, n, H, eps));
    pk_store(be, out, o, ne);
}

void cpu_packed_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K) {
    const float *xf = pk_in(be, PK_X, x, (size_t)M * K);
    float *o = pk_outp(be, PK_OUT, y, (size_t)M * N);
    PK_RUN(cpu_linear(be, o, xf, W, b, M, N, K));
    pk_store(be, y, o, (size_t)M * N);
}

void cpu_packed_unary(Backend *be, void (*op)(Backend *, float *, const float *, size_t), float *out, const float *x,
                      size_t n) {
    const float *xf = pk_in(be, PK_X, x, n);
    float *o = pk_outp(be, PK_OUT, out, n);
    PK_RUN(op(be, o, xf, n));
    pk_store(be, out, o, n);
}

void cpu_packed_attention(Backend *be, PkAttention kind, float *out, float *att, const float *qkv,
                          const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                          const XrDropout *d) {
    if (att && be->act_packed)
        xr_die("ops_attention: saved probabilities (att) while activations are packed (ops_act_pack)");
    size_t N = (size_t)seq_off[S], H = (size_t)NH * dh, nout = (first_only ? (size_t)S : N) * H;
    const float *q = pk_in(be, PK_X, qkv, N * 3 * H);
    float *o = pk_outp(be, PK_OUT, out, nout);
    switch (kind) {
    case PK_ATT_INFER:
        if (first_only)
            PK_RUN(cpu_attention_first(be, o, q, seq_off, S, max_len, NH, dh));
        else
            PK_RUN(cpu_attention(be, o, att, q, seq_off, S, max_len, NH, dh));
        break;
    case PK_ATT_TRAIN: PK_RUN(cpu_attention_train(be, o, att, q, seq_off, S, max_len, NH, dh, first_only, d)); break;
    case PK_ATT_LSE: PK_RUN(cpu_attention_train_lse(be, o, att, q, seq_off, S, max_len, NH, dh, first_only, d)); break;
    }
    pk_store(be, out, o, nout);
}

void cpu_packed_attention_backward(Backend *be, int lse, float *dqkv, const float *dout, const float *qkv,
                                   const float *att, const int32_t *seq_off, int S, int max_len, int NH, int dh,
                                   int first_only, const XrDropout *d) {
    const float *q = pk_in(be, PK_X, qkv, (size_t)seq_off[S] * 3 * NH * dh);
    if (lse)
        PK_RUN(cpu_attention_backward_lse(be, dqkv, dout, q, att, seq_off, S, max_len, NH, dh, first_only, d));
    else
        PK_RUN(cpu_attention_backward(be, dqkv, dout, q, att, seq_off, S, max_len, NH, dh, first_only, d));
}

void cpu_packed_pool(Backend *be, int mean, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    const float *xf = pk_in(be, PK_X, x, (size_t)seq_off[S] * H);
    float *o = pk_outp(be, PK_OUT, out, (size_t)S * H);
    if (mean)
        PK_RUN(cpu_pool_mean(be, o, xf, seq_off, S, H));
    else
        PK_RUN(cpu_pool_first(be, o, xf, seq_off, S, H));
    pk_store(be, out, o, (size_t)S * H);
}

void cpu_packed_l2norm(Backend *be, float *out, const float *x, int n, int H) {
    const float *xf = pk_in(be, PK_X, x, (size_t)n * H);
    float *o = pk_outp(be, PK_OUT, out, (size_t)n * H);
    PK_RUN(cpu_l2norm(be, o, xf, n, H));
    pk_store(be, out, o, (size_t)n * H);
}

/* rows as ops_dropout_add's: the whole arrays up to row seq_off[S] (or S), the op writing rows seq_off[0] on */
void cpu_packed_dropout_add(Backend *be, float *out, const float *x, const float *res, const int32_t *seq_off, int S,
                            int H, const XrDropout *d) {
    size_t ne = (size_t)(seq_off ? seq_off[S] : S) * H;
    const float *xf = pk_in(be, PK_X, x, ne), *rf = pk_in(be, PK_RES, res, ne);
    float *o = pk_outp(be, PK_OUT, out, ne);
    PK_RUN(cpu_dropout_add(be, o, xf, rf, seq_off, S, H, d));
    pk_store(be, out, o, ne);
}

void cpu_packed_linear_backward(Backend *be, float *dx, float *dW, float *db, const float *dy, const float *x,
                                const float *W, int M, int N, int K, int accumulate_dx) {
    const float *xf = pk_in(be, PK_X, x, (size_t)M * K);
    PK_RUN(cpu_linear_backward(be, dx, dW, db, dy, xf, W, M, N, K, accumulate_dx));
}

void cpu_packed_layernorm_backward(Backend *be, float *dx, float *dg, float *db, const float *dout, const float *x,
                                   const float *mean, const float *rstd, const float *g, int n, int H,
                                   int accumulate) {
    const float *xf = pk_in(be, PK_X, x, (size_t)n * H);
    PK_RUN(cpu_layernorm_backward(be, dx, dg, db, dout, xf, mean, rstd, g, n, H, accumulate));
}

void cpu_packed_unary_backward(Backend *be, void (*op)(Backend *, float *, const float *, const float *, size_t),
                               float *dx, const float *x, const float *dy, size_t n) {
    const float *xf = pk_in(be, PK_X, x, n);
    PK_RUN(op(be, dx, xf, dy, n));
}

void cpu_packed_l2norm_backward(Backend *be, float *dx, const float *dy, const float *x, int n, int H) {
    const float *xf = pk_in(be, PK_X, x, (size_t)n * H);
    PK_RUN(cpu_l2norm_backward(be, dx, dy, xf, n, H));
}
