/* test_attention_bf16: the training attention's products in bf16 training (ops_list.h, "training precision") on the
 * CPU backend's emulation: ops_attention_train / _lse and their backwards, on packed ragged sequences (1, 63, 64, 65,
 * 0, 127, 128, 129 tokens), NH 2 x dh 33, dropout 0 and 0.1, all query rows and the first only, inputs off the bf16
 * grid:
 * - with a working copy registered (bf16 training): ctx, dq, dk, dv against att_bf16_ref.h's double reference with
 *   the contract's roundings (q, k, v, Pd = dropout(P), dO, dS), within its bounds, and each rounding there (the
 *   result much closer to the reference than that rounding's share); saved-probability and lse paths give the same
 *   context bits (the same products on the same rounded operands);
 * - without one (fp32 mode): nothing rounded (the unrounded reference to fp32 accuracy); the bits are those of a run
 *   before the copy was registered and after it was dropped, and bf16 activation storage alone (no copy) rounds the
 *   stored context only, not the products' operands: the backward's bits are fp32 mode's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "att_bf16_ref.h"
#include "ops.h"
#include "testutil.h"

static TuRng rng = {0xa77b16ull};
static const int kLens[] = {1, 63, 64, 65, 0, 127, 128, 129};
#define NS ((int)(sizeof kLens / sizeof kLens[0]))

/* n floats uniform in +-scale, each off the bf16 grid (so every operand rounding changes something) */
static float *rand_off_grid(size_t n, float scale) {
    float *x = tu_rng_vec(&rng, n, scale);
    for (size_t i = 0; i < n; i++)
        if (xr_bf16_round(x[i]) == x[i]) x[i] = nextafterf(x[i], INFINITY);
    return x;
}

/* ops_attention_train[_lse] then ops_attention_backward[_lse] on the CPU backend: out [nq_total, H], dqkv [N, 3H]. */
static void run_ops(Backend *be, const AttRefCase *c, int lse, const float *qkv, const float *dout, float *out,
                    float *dqkv) {
    int H = c->NH * c->dh;
    size_t nsave = 0;
    for (int s = 0; s < c->S; s++) {
        size_t L = (size_t)(c->off[s + 1] - c->off[s]);
        nsave += lse ? (c->first_only ? 1 : L) : (c->first_only ? 1 : L) * L;
    }
    float *sv = xr_malloc((nsave * c->NH + 1) * sizeof(float));
    XrDropout d = {c->p, c->key, c->ids};
    size_t no = att_nq_total(c) * H, nd = (size_t)c->N * 3 * H;
    for (size_t i = 0; i < no; i++) out[i] = NAN;
    for (size_t i = 0; i < nd; i++) dqkv[i] = NAN;
    if (lse) {
        ops_attention_train_lse(be, out, sv, qkv, c->off, c->S, c->max_len, c->NH, c->dh, c->first_only, &d);
        ops_attention_backward_lse(be, dqkv, dout, qkv, sv, c->off, c->S, c->max_len, c->NH, c->dh, c->first_only, &d);
    } else {
        ops_attention_train(be, out, sv, qkv, c->off, c->S, c->max_len, c->NH, c->dh, c->first_only, &d);
        ops_attention_backward(be, dqkv, dout, qkv, sv, c->off, c->S, c->max_len, c->NH, c->dh, c->first_only, &d);
    }
    free(sv);
}

static size_t ndiff(const float *a, const float *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += memcmp(&a[i], &b[i], 4) != 0;
    return k;
}

int main(void) {
    Backend *be = ops_backend_cpu(0);
    int32_t off[NS + 1] = {0};
    uint64_t ids[NS];
    int max_len = 0;
    for (int s = 0; s < NS; s++) {
        off[s + 1] = off[s] + kLens[s];
        max_len = kLens[s] > max_len ? kLens[s] : max_len;
        ids[s] = 0x100000000ull * (uint64_t)(s + 5) + 131u * (uint64_t)s;
    }
    const int NH = 2, dh = 33, H = NH * dh, N = off[NS];
    float *qkv = rand_off_grid((size_t)N * 3 * H, 1.5f), *dout = rand_off_grid((size_t)N * H, 1.0f);
    float master[16] = {0}; /* a working copy's registration is what makes the step bf16 training */
    size_t nd = (size_t)N * 3 * H, no = (size_t)N * H;
    float *o32 = xr_malloc(no * 4), *d32 = xr_malloc(nd * 4), *o16 = xr_malloc(no * 4), *d16 = xr_malloc(nd * 4);
    float *oa = xr_malloc(no * 4), *da = xr_malloc(nd * 4), *octx[2] = {xr_malloc(no * 4), xr_malloc(no * 4)};
    for (int drop = 0; drop < 2; drop++)
        for (int first = 0; first < 2; first++) {
            for (int lse = 0; lse < 2; lse++) {
                AttRefCase c = {NS, N, max_len, NH, dh, first, off, ids, drop ? 0.1f : 0.0f, rng_key(7, 3, 9)};
                size_t nq = att_nq_total(&c) * H;
                char what[96];
                snprintf(what, sizeof what, "attention%s p=%.1f%s", lse ? "_lse" : "", (double)c.p,
                         first ? " first" : "");
                run_ops(be, &c, lse, qkv, dout, o32, d32);
                att_check(what, &c, qkv, dout, o32, d32, 0);
                ops_bf16_weights(be, master, 16);
                run_ops(be, &c, lse, qkv, dout, o16, d16);
                att_check(what, &c, qkv, dout, o16, d16, 1);
                memcpy(octx[lse], o16, nq * 4);
                ops_bf16_weights(be, NULL, 0);
                run_ops(be, &c, lse, qkv, dout, oa, da);
                size_t k = ndiff(o32, oa, nq) + ndiff(d32, da, nd);
                TU_CHECK(k == 0, "%s: fp32 mode after the working copy was dropped: %zu values differ from before it",
                         what, k);
                /* bf16 storage alone: ctx stored rounded, the products' operands not (the backward as fp32) */
                ops_act_precision(be, XR_PREC_BF16);
                run_ops(be, &c, lse, qkv, dout, oa, da);
                ops_act_precision(be, XR_PREC_FP32);
                size_t nr = 0;
                for (size_t i = 0; i < nq; i++) nr += memcmp(&oa[i], &(float){xr_bf16_round(o32[i])}, 4) != 0;
                TU_CHECK(nr == 0 && ndiff(d32, da, nd) == 0, "%s: bf16 storage without a working copy: %zu stored "
                         "contexts are not fp32 mode's rounded, %zu gradients differ from fp32 mode's", what, nr,
                         ndiff(d32, da, nd));
            }
            size_t nq = (first ? (size_t)NS : (size_t)N) * H, k = ndiff(octx[0], octx[1], nq);
            TU_CHECK(k == 0, "bf16 p=%d first=%d: the lse forward's context differs from the saved-probability "
                     "forward's in %zu of %zu values", drop, first, k, nq);
        }
    free(qkv), free(dout), free(o32), free(d32), free(o16), free(d16), free(oa), free(da), free(octx[0]);
    free(octx[1]);
    ops_backend_free(be);
    return tu_finish("test_attention_bf16");
}
