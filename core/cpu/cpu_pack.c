/* cpu_pack.c: packed (2-byte bf16) activation storage of the inference ops on the CPU backend (ops_act_pack), a test
 * capability: off unless cpu_set_act_pack_able turned it on, so CI runs the model's packed forward (byte offsets,
 * unpacking, the switch back) without a GPU. Each packed op widens its bf16 inputs into fp32 scratch, runs the fp32
 * op unchanged, and rounds what it stores (nearest even, core/bf16_bits.h): the fp32 op's result on the same inputs,
 * rounded once, bit for bit what the bf16-storage emulation (cpu_act_store) gives. */
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
    if ((const char *)out < (const char *)x + n * (be->act_packed ? 2 : 4) &&
        (const char *)x < (const char *)(out + n))
        xr_die("ops_act_unpack: out %p and x %p overlap (%zu elements)", (void *)out, (const void *)x, n);
    if (!be->act_packed) {
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

/* The fp32 values of n packed elements at x, in slot `slot` (NULL stays NULL). */
static const float *pk_in(Backend *be, int slot, const float *x, size_t n) {
    if (!x) return NULL;
    float *o = pk_tmp(be, slot, n);
    XR_SPANS(be->threads, n, widen_span(o + lo, (const uint16_t *)x + lo, hi - lo));
    return o;
}

/* Stores n fp32 values v as bf16 at out. */
static void pk_out(Backend *be, float *out, const float *v, size_t n) {
    XR_SPANS(be->threads, n, narrow_span((uint16_t *)out + lo, v + lo, hi - lo));
}

/* The fp32 op runs with packing off (it is the same op), then packing is back on. */
#define PK_RUN(call)         \
    do {                     \
        be->act_packed = 0;  \
        call;                \
        be->act_packed = 1;  \
    } while (0)

enum { PK_X, PK_RES, PK_OUT };

void cpu_packed_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
                      const float *word, const float *pos, const float *type, int n, int H) {
    size_t ne = (size_t)n * H;
    float *o = pk_tmp(be, PK_OUT, ne);
    PK_RUN(cpu_embed(be, o, ids, pos_ids, types, word, pos, type, n, H));
    pk_out(be, out, o, ne);
}

void cpu_packed_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res,
                          const float *g, const float *b, int n, int H, float eps) {
    size_t ne = (size_t)n * H;
    const float *xf = pk_in(be, PK_X, x, ne), *rf = pk_in(be, PK_RES, res, ne);
    float *o = pk_tmp(be, PK_OUT, ne);
    PK_RUN(cpu_layernorm(be, o, mean, rstd, xf, rf, g, b, n, H, eps));
    pk_out(be, out, o, ne);
}

void cpu_packed_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K) {
    const float *xf = pk_in(be, PK_X, x, (size_t)M * K);
    float *o = pk_tmp(be, PK_OUT, (size_t)M * N);
    PK_RUN(cpu_linear(be, o, xf, W, b, M, N, K));
    pk_out(be, y, o, (size_t)M * N);
}

void cpu_packed_unary(Backend *be, void (*op)(Backend *, float *, const float *, size_t), float *out, const float *x,
                      size_t n) {
    const float *xf = pk_in(be, PK_X, x, n);
    float *o = pk_tmp(be, PK_OUT, n);
    PK_RUN(op(be, o, xf, n));
    pk_out(be, out, o, n);
}

void cpu_packed_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                          int max_len, int NH, int dh, int first_only) {
    if (att) xr_die("ops_attention: saved probabilities (att) while activations are packed (ops_act_pack)");
    size_t N = (size_t)seq_off[S], H = (size_t)NH * dh, nout = (first_only ? (size_t)S : N) * H;
    const float *q = pk_in(be, PK_X, qkv, N * 3 * H);
    float *o = pk_tmp(be, PK_OUT, nout);
    PK_RUN(cpu_attention_fwd(be, o, NULL, q, seq_off, S, max_len, NH, dh, first_only, NULL));
    pk_out(be, out, o, nout);
}

void cpu_packed_pool(Backend *be, int mean, float *out, const float *x, const int32_t *seq_off, int S, int H) {
    const float *xf = pk_in(be, PK_X, x, (size_t)seq_off[S] * H);
    float *o = pk_tmp(be, PK_OUT, (size_t)S * H);
    if (mean)
        PK_RUN(cpu_pool_mean(be, o, xf, seq_off, S, H));
    else
        PK_RUN(cpu_pool_first(be, o, xf, seq_off, S, H));
    pk_out(be, out, o, (size_t)S * H);
}

void cpu_packed_l2norm(Backend *be, float *out, const float *x, int n, int H) {
    const float *xf = pk_in(be, PK_X, x, (size_t)n * H);
    float *o = pk_tmp(be, PK_OUT, (size_t)n * H);
    PK_RUN(cpu_l2norm(be, o, xf, n, H));
    pk_out(be, out, o, (size_t)n * H);
}
