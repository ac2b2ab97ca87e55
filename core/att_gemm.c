/* att_gemm.c: the driver of the GEMM-based training attention (att_gemm.h): the plan, and the chunk loop with
 * every GEMM's arguments, over a backend's primitives. Row-major blocks on a column-major GEMM: a row-major
 * X [r, c] is the column-major X^T [c, r] with leading dimension c, so row-major C = A B is column-major
 * C^T = B^T A^T (the operands swap, as gemm_rm in core/cuda/ops_cuda.cu). */
#include "att_gemm.h"

#include <stdio.h>

#include "xr_common.h"

#define ATTG_PAD(b) (((b) + 63) & ~(size_t)63) /* 64-byte aligned buffers */

/* lse: the log-sum-exp ops' plan, whose backward has one more fp32 [nqp, Tp] block (o_pr: the scores, then P). */
static int plan(AttGemmPlan *p, int S, int max_len, int NH, int dh, int first_only, int backward, int bf16, int lse,
                int max_chunk, char *err, size_t errlen) {
    if (S <= 0 || max_len <= 0 || NH <= 0 || dh <= 0 || max_len > (1 << 24)) {
        snprintf(err, errlen, "attention GEMM path: S %d, max_len %d, NH %d, dh %d out of range", S, max_len, NH, dh);
        return -1;
    }
    p->S = S, p->NH = NH, p->dh = dh, p->max_len = max_len, p->first_only = first_only, p->backward = backward;
    p->bf16 = bf16 != 0, p->lse = lse != 0;
    p->qkv16 = p->ctx16 = 0;
    p->Tp = (max_len + XR_ATTG_ALIGN - 1) / XR_ATTG_ALIGN * XR_ATTG_ALIGN;
    p->nqp = first_only ? 1 : p->Tp;
    p->nb = (long long)S * NH;
    p->blk = (size_t)p->Tp * dh, p->qblk = (size_t)p->nqp * dh, p->sq = (size_t)p->nqp * p->Tp;
    p->scale = 1.0f / sqrtf((float)dh);
    /* bytes per block: forward q, k, v, scores, context (+ Pd's bf16 twin); backward q, k, v, dO, Pd, dS, dq, dk, dv
     * (+ dS's bf16 twin; + the lse backward's scores / P); q, k, v, dO and the backward's Pd 2 bytes an element with
     * bf16 operands */
    size_t e = p->bf16 ? 2 : 4, per, extra = (size_t)(p->bf16 ? 1 : 0) + (size_t)(p->lse ? 1 : 0);
    /* the lse ops chunk both calls by the backward's bytes: the backward recomputes the forward's scores with the same
     * GEMM calls (block ranges, batch counts, shapes, operand offsets), so cuBLAS picks the same algorithm and P is
     * bit-equal to the forward's (a different batch count may select another kernel and other rounding) */
    if (backward || p->lse)
        per = e * (2 * p->qblk + 2 * p->blk + p->sq) + 4 * (p->qblk + 2 * p->blk + p->sq) + (p->bf16 ? 2 * p->sq : 0) +
              (p->lse ? 4 * p->sq : 0);
    else
        per = e * (p->qblk + 2 * p->blk) + 4 * (p->qblk + p->sq) + (p->bf16 ? 2 * p->sq : 0);
    size_t bases = ATTG_PAD((size_t)S * sizeof(size_t)), bytes_per = per + (6 + extra) * 64;
    size_t room = XR_ATTG_SCRATCH_MAX > bases ? XR_ATTG_SCRATCH_MAX - bases : 0;
    long long chunk = (long long)(room / bytes_per);
    if (chunk < 1) chunk = 1;
    if (chunk > XR_ATTG_MAX_BATCH) chunk = XR_ATTG_MAX_BATCH;
    if (max_chunk > 0 && chunk > max_chunk) chunk = max_chunk;
    if (chunk > p->nb) chunk = p->nb;
    p->chunk = (int)chunk;
    size_t c = (size_t)chunk, o = bases;
#define ATTG_PUT(field, elems, esz) (p->field = o, o += ATTG_PAD(c * (elems) * (esz)))
    ATTG_PUT(o_q, p->qblk, e);
    ATTG_PUT(o_k, p->blk, e);
    ATTG_PUT(o_v, p->blk, e);
    p->o_p16 = p->o_g16 = p->o_pr = 0;
    if (backward) {
        if (p->lse) ATTG_PUT(o_pr, p->sq, 4); /* the recomputed scores, then P (the forward's o_sc: same offset) */
        ATTG_PUT(o_sc, p->sq, e); /* Pd */
        ATTG_PUT(o_do, p->qblk, e);
        ATTG_PUT(o_g, p->sq, 4); /* dPd, then dS */
        if (p->bf16) ATTG_PUT(o_g16, p->sq, 2);
        ATTG_PUT(o_dq, p->qblk, 4);
        ATTG_PUT(o_dk, p->blk, 4);
        ATTG_PUT(o_dv, p->blk, 4);
        p->o_ctx = 0;
    } else {
        ATTG_PUT(o_sc, p->sq, 4); /* scores, then the dropped probabilities */
        if (p->bf16) ATTG_PUT(o_p16, p->sq, 2);
        ATTG_PUT(o_ctx, p->qblk, 4);
        p->o_do = p->o_g = p->o_dq = p->o_dk = p->o_dv = 0;
    }
#undef ATTG_PUT
    p->bytes = o;
    return 0;
}

int attg_plan(AttGemmPlan *p, int S, int max_len, int NH, int dh, int first_only, int backward, int bf16,
              int max_chunk, char *err, size_t errlen) {
    return plan(p, S, max_len, NH, dh, first_only, backward, bf16, 0, max_chunk, err, errlen);
}

int attg_plan_lse(AttGemmPlan *p, int S, int max_len, int NH, int dh, int first_only, int backward, int bf16,
                  int max_chunk, char *err, size_t errlen) {
    return plan(p, S, max_len, NH, dh, first_only, backward, bf16, 1, max_chunk, err, errlen);
}

int attg_scratch_bytes(size_t *bytes, int S, int max_len, int NH, int dh, int bf16, int lse, int max_chunk, char *err,
                       size_t errlen) {
    *bytes = 0;
    for (int first_only = 0; first_only < 2; first_only++)
        for (int backward = 0; backward < 2; backward++) {
            AttGemmPlan p;
            if (plan(&p, S, max_len, NH, dh, first_only, backward, bf16, lse, max_chunk, err, errlen)) return -1;
            if (p.bytes > *bytes) *bytes = p.bytes;
        }
    return 0;
}

/* The q, k and v blocks of the chunk: q the query rows only (nqp), k and v every row (Tp); bf16 with p->bf16. qkv is
 * read as it is stored (p->qkv16: packed bf16). */
static void pack_qkv(const AttGemmPrims *pr, const AttGemmPlan *p, char *scr, const float *qkv,
                     const int32_t *seq_off, int bh0, int n) {
    int H = p->NH * p->dh, ld = 3 * H, q16 = p->qkv16;
    pr->pack(pr->ctx, scr + p->o_q, p->qblk, p->nqp, qkv, q16, ld, 0, seq_off, bh0, n, p->NH, p->dh, ATTG_TOKENS,
             p->bf16);
    pr->pack(pr->ctx, scr + p->o_k, p->blk, p->Tp, qkv, q16, ld, H, seq_off, bh0, n, p->NH, p->dh, ATTG_TOKENS,
             p->bf16);
    pr->pack(pr->ctx, scr + p->o_v, p->blk, p->Tp, qkv, q16, ld, 2 * H, seq_off, bh0, n, p->NH, p->dh, ATTG_TOKENS,
             p->bf16);
}

/* Both forwards: the row step saves att (lse NULL) or the log-sum-exps (lse non-NULL). */
static void forward(const AttGemmPrims *pr, const AttGemmPlan *p, float *out, float *att, float *lse, const float *qkv,
                    const int32_t *seq_off, const XrDropout *d, int rnd, void *out16) {
    char *scr = (char *)pr->scratch(pr->ctx, p->bytes);
    size_t *base = (size_t *)scr;
    const void *q = scr + p->o_q, *k = scr + p->o_k, *v = scr + p->o_v;
    float *sc = (float *)(scr + p->o_sc), *ctx = (float *)(scr + p->o_ctx);
    uint16_t *p16 = p->bf16 ? (uint16_t *)(scr + p->o_p16) : NULL;
    int Tp = p->Tp, nqp = p->nqp, dh = p->dh, H = p->NH * dh, ab = p->bf16;
    long long blk = (long long)p->blk, qblk = (long long)p->qblk, sq = (long long)p->sq;
    if (!lse) pr->att_bases(pr->ctx, base, seq_off, p->S, p->NH, p->first_only);
    for (long long b0 = 0; b0 < p->nb; b0 += p->chunk) {
        int bh0 = (int)b0, n = (int)(p->nb - b0 < p->chunk ? p->nb - b0 : p->chunk);
        pack_qkv(pr, p, scr, qkv, seq_off, bh0, n);
        /* scores [nqp, Tp] = scale q k^T: column-major scores^T [Tp, nqp] = k (k^T stored) ^T q^T */
        pr->gemm(pr->ctx, 1, 0, Tp, nqp, dh, p->scale, k, dh, blk, q, dh, qblk, 0.0f, sc, Tp, sq, n, ab);
        if (lse)
            pr->fwd_rows_lse(pr->ctx, sc, lse, p16, seq_off, bh0, n, p, d);
        else
            pr->fwd_rows(pr->ctx, sc, att, p16, base, seq_off, bh0, n, p, d);
        /* ctx [nqp, dh] = Pd [nqp, Tp] v [Tp, dh]: column-major ctx^T [dh, nqp] = v^T Pd^T (Pd's bf16 twin) */
        pr->gemm(pr->ctx, 0, 0, dh, nqp, Tp, 1.0f, v, dh, blk, ab ? (const void *)p16 : sc, Tp, sq, 0.0f, ctx, dh,
                 qblk, n, ab);
        pr->unpack(pr->ctx, out, p->ctx16, H, 0, ctx, p->qblk, nqp, p->first_only ? 1 : Tp, seq_off, bh0, n, p->NH, dh,
                   p->first_only ? ATTG_FIRST : ATTG_TOKENS, rnd, out16);
    }
}

void attg_forward(const AttGemmPrims *pr, const AttGemmPlan *p, float *out, float *att, const float *qkv,
                  const int32_t *seq_off, const XrDropout *d, int rnd, void *out16) {
    forward(pr, p, out, att, NULL, qkv, seq_off, d, rnd, out16);
}

void attg_forward_lse(const AttGemmPrims *pr, const AttGemmPlan *p, float *out, float *lse, const float *qkv,
                      const int32_t *seq_off, const XrDropout *d, int rnd, void *out16) {
    forward(pr, p, out, NULL, lse, qkv, seq_off, d, rnd, out16);
}

/* Both backwards: P from the saved att (lse NULL), or recomputed per chunk from the scores and lse (p->lse). */
static void backward(const AttGemmPrims *pr, const AttGemmPlan *p, float *dqkv, const float *dout, const float *qkv,
                     const float *att, const float *lse, const int32_t *seq_off, const XrDropout *d) {
    char *scr = (char *)pr->scratch(pr->ctx, p->bytes);
    size_t *base = (size_t *)scr;
    const void *q = scr + p->o_q, *k = scr + p->o_k, *v = scr + p->o_v;
    void *pd = scr + p->o_sc, *dO = scr + p->o_do;
    float *g = (float *)(scr + p->o_g);
    uint16_t *g16 = p->bf16 ? (uint16_t *)(scr + p->o_g16) : NULL;
    const void *ds = p->bf16 ? (const void *)g16 : g; /* dS as the last two GEMMs read it */
    float *dq = (float *)(scr + p->o_dq), *dk = (float *)(scr + p->o_dk), *dv = (float *)(scr + p->o_dv);
    int Tp = p->Tp, nqp = p->nqp, dh = p->dh, H = p->NH * dh, ld = 3 * H, ab = p->bf16;
    long long blk = (long long)p->blk, qblk = (long long)p->qblk, sq = (long long)p->sq;
    float *P = lse ? (float *)(scr + p->o_pr) : NULL; /* lse: the recomputed scores, then P */
    if (!lse) pr->att_bases(pr->ctx, base, seq_off, p->S, p->NH, p->first_only);
    for (long long b0 = 0; b0 < p->nb; b0 += p->chunk) {
        int bh0 = (int)b0, n = (int)(p->nb - b0 < p->chunk ? p->nb - b0 : p->chunk);
        pack_qkv(pr, p, scr, qkv, seq_off, bh0, n);
        pr->pack(pr->ctx, dO, p->qblk, nqp, dout, 0, H, 0, seq_off, bh0, n, p->NH, dh,
                 p->first_only ? ATTG_FIRST : ATTG_TOKENS, ab);
        if (lse) {
            /* the forward's scores again (its GEMM, its operands), then P = exp(s - lse) and Pd */
            pr->gemm(pr->ctx, 1, 0, Tp, nqp, dh, p->scale, k, dh, blk, q, dh, qblk, 0.0f, P, Tp, sq, n, ab);
            pr->bwd_p_lse(pr->ctx, P, pd, lse, seq_off, bh0, n, p, d);
        } else {
            pr->bwd_pd(pr->ctx, pd, att, base, seq_off, bh0, n, p, d);
        }
        /* dv [Tp, dh] = Pd^T [Tp, nqp] dO [nqp, dh]: column-major dv^T [dh, Tp] = dO^T Pd */
        pr->gemm(pr->ctx, 0, 1, dh, Tp, nqp, 1.0f, dO, dh, qblk, pd, Tp, sq, 0.0f, dv, dh, blk, n, ab);
        /* dPd [nqp, Tp] = dO v^T: column-major dPd^T [Tp, nqp] = v dO^T */
        pr->gemm(pr->ctx, 1, 0, Tp, nqp, dh, 1.0f, v, dh, blk, dO, dh, qblk, 0.0f, g, Tp, sq, n, ab);
        if (lse)
            pr->bwd_rows_lse(pr->ctx, g, g16, P, seq_off, bh0, n, p, d);
        else
            pr->bwd_rows(pr->ctx, g, g16, att, base, seq_off, bh0, n, p, d);
        /* dq [nqp, dh] = scale dS [nqp, Tp] k [Tp, dh]: column-major dq^T [dh, nqp] = k^T dS^T */
        pr->gemm(pr->ctx, 0, 0, dh, nqp, Tp, p->scale, k, dh, blk, ds, Tp, sq, 0.0f, dq, dh, qblk, n, ab);
        /* dk [Tp, dh] = scale dS^T [Tp, nqp] q [nqp, dh]: column-major dk^T [dh, Tp] = q^T dS */
        pr->gemm(pr->ctx, 0, 1, dh, Tp, nqp, p->scale, q, dh, qblk, ds, Tp, sq, 0.0f, dk, dh, blk, n, ab);
        /* every row of the sequence gets its dq (0 past the query rows: first_only), dk and dv */
        pr->unpack(pr->ctx, dqkv, 0, ld, 0, dq, p->qblk, nqp, Tp, seq_off, bh0, n, p->NH, dh, ATTG_TOKENS, 0, NULL);
        pr->unpack(pr->ctx, dqkv, 0, ld, H, dk, p->blk, Tp, Tp, seq_off, bh0, n, p->NH, dh, ATTG_TOKENS, 0, NULL);
        pr->unpack(pr->ctx, dqkv, 0, ld, 2 * H, dv, p->blk, Tp, Tp, seq_off, bh0, n, p->NH, dh, ATTG_TOKENS, 0, NULL);
    }
}

void attg_backward(const AttGemmPrims *pr, const AttGemmPlan *p, float *dqkv, const float *dout, const float *qkv,
                   const float *att, const int32_t *seq_off, const XrDropout *d) {
    backward(pr, p, dqkv, dout, qkv, att, NULL, seq_off, d);
}

void attg_backward_lse(const AttGemmPrims *pr, const AttGemmPlan *p, float *dqkv, const float *dout,
                       const float *qkv, const float *lse, const int32_t *seq_off, const XrDropout *d) {
    if (!p->lse) xr_die("attg_backward_lse: the plan has no P block (made by attg_plan, not attg_plan_lse)");
    backward(pr, p, dqkv, dout, qkv, NULL, lse, seq_off, d);
}
