/* att_gemm.h: the training attention (ops_attention_train / ops_attention_backward, probabilities saved) as batched
 * GEMMs over padded per-(sequence, head) blocks. Three parts:
 * - the plan (block shapes, chunk of blocks, scratch layout) and the driver (att_gemm.c, plain C: the chunk loop and
 *   every GEMM's arguments), written over a table of primitives (AttGemmPrims) that a backend supplies: the CUDA
 *   backend's cuBLAS calls and kernels (core/cuda/att_gemm.cu), or plain C ones (tests/test_att_gemm.c), so the
 *   driver runs and is tested without a GPU;
 * - the per-row arithmetic of the row primitives (softmax + dropout, the dropped probabilities, the softmax
 *   backward), inline for host and device, so the CUDA kernels and the C primitives run the same code.
 * In bf16 training (plan bf16 1: a working copy registered, ops_list.h "training precision") every GEMM takes bf16
 * operands with fp32 accumulation: q, k, v and dO are packed as bf16, and the row steps write the dropped
 * probabilities Pd and dS as bf16 only (xr_bf16_bits of the fp32 value, the emulation's rounding: the next GEMMs
 * read nothing else); softmax, att, D and the values before that rounding stay fp32.
 * The log-sum-exp variants (ops_attention_train_lse / ops_attention_backward_lse: plan lse 1) run the same GEMMs: the
 * forward's row step writes each row's lse instead of att, and the backward recomputes the scores per chunk with the
 * q k^T GEMM (the forward's chunks and calls: bit-equal scores) and P = exp(s - lse) in a row step (into the plan's
 * extra fp32 block o_pr) before the same sequence. */
#ifndef XR_ATT_GEMM_H
#define XR_ATT_GEMM_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "bf16_bits.h"
#include "ops.h"
#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the plan ----
 * Block b = s * NH + h holds sequence s, head h: K, V [Tp, dh] and Q, dO, the context, dQ [nqp, dh] (row-major,
 * rows past the sequence's length zero), scores / probabilities / dS [nqp, Tp]. Tp = max_len rounded up to
 * XR_ATTG_ALIGN; nqp = Tp, or 1 with first_only (the last layer: the first query row only). Blocks are processed
 * `chunk` at a time so the scratch stays within the budget whatever the batch. With bf16: Q, K, V, dO and the
 * backward's Pd are bf16 (uint16 bits), and the forward's Pd and the backward's dS are written as bf16 only, into
 * o_p16 / o_g16 (their fp32 blocks o_sc / o_g hold what the GEMMs write there: the scores, dPd). */
#define XR_ATTG_ALIGN 8                       /* Tp's multiple: 32-byte rows */
#define XR_ATTG_SCRATCH_MAX ((size_t)1 << 30) /* bytes of scratch per chunk of blocks, at most */
#define XR_ATTG_MAX_BATCH 65535               /* blocks per batched GEMM call, at most */

typedef struct {
    int S, NH, dh, max_len, first_only, backward, bf16, lse;
    int Tp, nqp, chunk; /* padded keys, query rows per block, blocks per chunk */
    long long nb;       /* blocks: S * NH */
    size_t blk, qblk, sq; /* floats per block: K/V/dK/dV (Tp dh), Q/dO/ctx/dQ (nqp dh), scores (nqp Tp) */
    /* byte offsets into the scratch region: per-sequence att bases (size_t [S]), then each buffer's chunk */
    size_t o_q, o_k, o_v, o_sc, o_ctx, o_do, o_g, o_dq, o_dk, o_dv, o_p16, o_g16, bytes;
    size_t o_pr; /* lse backward: the recomputed scores, then P [nqp, Tp] fp32 per block (0 otherwise) */
    float scale;
    /* The activations' storage (0 from the plan; the caller sets them): qkv16 1: qkv is packed bf16 (a region of
     * ops_act_region), read as it lies by the q, k and v packs; ctx16 1: the forward's context is stored packed,
     * rounded once by the unpack. The gradients (dout, dqkv) are fp32. */
    int qkv16, ctx16;
} AttGemmPlan;

/* Fills p for a forward (backward 0) or backward (1) call, fp32 (bf16 0) or bf16 GEMM operands (1); max_chunk > 0
 * caps the blocks per chunk (tests force tiny chunks). Returns 0, or -1 with a message in err when a shape exceeds
 * what the GEMMs take. */
int attg_plan(AttGemmPlan *p, int S, int max_len, int NH, int dh, int first_only, int backward, int bf16,
              int max_chunk, char *err, size_t errlen);
/* The same for the log-sum-exp ops (p->lse 1): the forward's buffers are attg_plan's, the backward's add o_pr; both
 * calls take the chunk the backward's bytes allow, so the backward's score GEMMs are the forward's calls again (the
 * same block ranges, batch counts and shapes; q, k, v and o_pr at the forward's q, k, v and o_sc offsets) and, cuBLAS
 * choosing by those, its recomputed scores the forward's bits. */
int attg_plan_lse(AttGemmPlan *p, int S, int max_len, int NH, int dh, int first_only, int backward, int bf16,
                  int max_chunk, char *err, size_t errlen);

/* The scratch bytes the path requests at most for S sequences of at most max_len tokens (ops_attention_scratch, the
 * memory plan): the largest of the forward's and the backward's plans, with all query rows and with the first row only
 * (first_only's blocks are smaller, but when the budget binds its chunk holds more of them, and its padded bytes may
 * exceed the all-rows plan's). lse: attg_plan_lse's plans. Returns 0, or -1 with a message in err. */
int attg_scratch_bytes(size_t *bytes, int S, int max_len, int NH, int dh, int bf16, int lse, int max_chunk, char *err,
                       size_t errlen);

/* How rows of a packed activation map to a block's rows: ATTG_TOKENS: row i of sequence s is row seq_off[s] + i
 * (the sequence's L tokens); ATTG_FIRST: row 0 of sequence s is row s (one row, none when L = 0). */
enum { ATTG_TOKENS = 0, ATTG_FIRST = 1 };

/* The primitives, over the chunk of blocks bh0 .. bh0 + n - 1. Every pointer is in the backend's memory. */
typedef struct AttGemmPrims {
    void *ctx;
    /* The scratch region of p->bytes (contents not kept between calls), 64-byte aligned. */
    void *(*scratch)(void *ctx, size_t bytes);
    /* Column-major strided-batched GEMM, cublasSgemmStridedBatched's semantics: for each of `batch` problems t,
     * C_t = alpha op(A_t) op(B_t) + beta C_t with A_t = A + t sa (m x k after op), B_t = B + t sb (k x n after op),
     * C_t = C + t sc (m x n, leading dimension ldc); ta / tb: 1 = transposed. A and B fp32 (ab16 0) or bf16 bits
     * (ab16 1; strides and leading dimensions in elements); C fp32; fp32 products and sums. */
    void (*gemm)(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const void *A, int lda, long long sa,
                 const void *B, int ldb, long long sb, float beta, float *C, int ldc, long long sc, int batch,
                 int ab16);
    /* base[s] = NH * sum_{r<s} nq_r L_r (where sequence s's saved probabilities start) for s < S. */
    void (*att_bases)(void *ctx, size_t *base, const int32_t *seq_off, int S, int NH, int first_only);
    /* dst[b][i][e] (block stride bs, rows 0 .. rows-1) = src[row(s, i)][col0 + h dh + e] for the sequence's real
     * rows (row_mode), 0 for the others; dst fp32 (to16 0) or bf16 bits (to16 1: xr_bf16_bits of the value); src
     * fp32 (src16 0) or bf16 bits (src16 1: packed storage, widened exactly as read). */
    void (*pack)(void *ctx, void *dst, size_t bs, int rows, const void *src, int src16, int ld, int col0,
                 const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int to16);
    /* The inverse for every real row (row_mode; at most max_rows a sequence) of each block:
     * dst[row(s, i)][col0 + h dh + e] = src[b][i][e] for i < src_rows, 0 for i >= src_rows; rnd: stored rounded to
     * bf16 (act_round); dst16 (may be NULL): a bf16 copy of dst at the same indices (ld, col0); dst fp32 (st16 0)
     * or bf16 bits (st16 1: packed storage, the value after rnd stored rounded to nearest even; dst16 then NULL). */
    void (*unpack)(void *ctx, void *dst, int st16, int ld, int col0, const float *src, size_t bs, int src_rows,
                   int max_rows, const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int rnd, void *dst16);
    /* Forward rows: sc [n][nqp][Tp] holds the scaled scores; each real query row's softmax over keys j < L is
     * written to att (before dropout, when att is not NULL) and, dropped and scaled (Pd, padding columns 0:
     * attg_fwd_finish), where the context GEMM reads it: in place of sc (p16 NULL), or only as bf16 bits in p16
     * (bf16 operands; sc is then not written). Padding query rows are not written: they only make context rows that
     * no unpack reads (a GEMM's output row depends on its own input row alone). */
    void (*fwd_rows)(void *ctx, float *sc, float *att, uint16_t *p16, const size_t *base, const int32_t *seq_off,
                     int bh0, int n, const AttGemmPlan *p, const XrDropout *d);
    /* Backward: pd [n][nqp][Tp] = dropout(P) from att, 0 in padding (attg_pd_part): fp32, or with p->bf16 its bf16
     * bits (pd then points to uint16_t). */
    void (*bwd_pd)(void *ctx, void *pd, const float *att, const size_t *base, const int32_t *seq_off, int bh0, int n,
                   const AttGemmPlan *p, const XrDropout *d);
    /* Backward rows: g [n][nqp][Tp] holds dPd = dO V^T; dS = P (dP - D) with dP = dropout(dPd), D = sum_j P dP, 0 in
     * padding (attg_bwd_finish), goes where the dQ / dK GEMMs read it: in place of g (g16 NULL), or only as bf16
     * bits in g16 (bf16 operands; g then holds dP, read by nobody). */
    void (*bwd_rows)(void *ctx, float *g, uint16_t *g16, const float *att, const size_t *base, const int32_t *seq_off,
                     int bh0, int n, const AttGemmPlan *p, const XrDropout *d);
    /* The log-sum-exp ops' row steps (needed only by attg_forward_lse / attg_backward_lse). lse is [rows, NH] at
     * attg_lse_at. fwd_rows_lse: fwd_rows with each real row's lse = max + log(sum) written instead of att (so only
     * Pd, fp32 in sc or bf16 in p16, and lse are written). */
    void (*fwd_rows_lse)(void *ctx, float *sc, float *lse, uint16_t *p16, const int32_t *seq_off, int bh0, int n,
                         const AttGemmPlan *p, const XrDropout *d);
    /* pr [n][nqp][Tp] holds the scaled scores; each real row becomes P = exp(s - lse) over keys j < L, and pd
     * dropout(P) (fp32, or with p->bf16 bf16 bits); padding 0 in both (attg_lse_p_part). */
    void (*bwd_p_lse)(void *ctx, float *pr, void *pd, const float *lse, const int32_t *seq_off, int bh0, int n,
                      const AttGemmPlan *p, const XrDropout *d);
    /* bwd_rows with P read from pr (row r of the chunk at r Tp) instead of att. */
    void (*bwd_rows_lse)(void *ctx, float *g, uint16_t *g16, const float *pr, const int32_t *seq_off, int bh0, int n,
                         const AttGemmPlan *p, const XrDropout *d);
} AttGemmPrims;

/* ops_attention_train's contract (ops_list.h) on the primitives: out, att (may be NULL), and under rnd the context
 * stored rounded to bf16 with its bf16 copy in out16 (may be NULL). */
void attg_forward(const AttGemmPrims *pr, const AttGemmPlan *p, float *out, float *att, const float *qkv,
                  const int32_t *seq_off, const XrDropout *d, int rnd, void *out16);
/* ops_attention_backward's contract: dqkv overwritten (with first_only, the query part of rows >= 1 zero). */
void attg_backward(const AttGemmPrims *pr, const AttGemmPlan *p, float *dqkv, const float *dout, const float *qkv,
                   const float *att, const int32_t *seq_off, const XrDropout *d);
/* ops_attention_train_lse's contract: out as attg_forward, lse [nq rows, NH] (empty sequences: nothing written). */
void attg_forward_lse(const AttGemmPrims *pr, const AttGemmPlan *p, float *out, float *lse, const float *qkv,
                      const int32_t *seq_off, const XrDropout *d, int rnd, void *out16);
/* ops_attention_backward_lse's contract: attg_backward with P recomputed from qkv and lse (p from attg_plan_lse). */
void attg_backward_lse(const AttGemmPrims *pr, const AttGemmPlan *p, float *dqkv, const float *dout,
                       const float *qkv, const float *lse, const int32_t *seq_off, const XrDropout *d);

/* ---- per-row arithmetic, shared by the CUDA kernels (one warp a row: j0 = lane, js = 32, then a warp reduction)
 * and the C primitives (j0 = 0, js = 1) ---- */
#ifdef __CUDACC__
#define XR_ATTG_HD static __forceinline__ __host__ __device__
#else
#define XR_ATTG_HD static inline
#endif

/* A dropout site as the row code sees it (ops.h's XrDropout with the sequence's id resolved by the caller). */
typedef struct {
    uint64_t key;
    uint32_t thr;
    float scale;
    int on;
} AttgDrop;

/* The site's mask parameters, as rng.h's callers compute them (host code). */
static inline AttgDrop attg_drop(const XrDropout *d) {
    AttgDrop r;
    r.on = d && d->p > 0.0f;
    r.key = r.on ? d->key : 0;
    r.thr = r.on ? rng_drop_threshold(d->p) : 0;
    r.scale = r.on ? 1.0f / (1.0f - d->p) : 1.0f;
    return r;
}

/* The fp32 product a * b rounded once (no fused multiply-add: the CPU's and the exact kernel's dropout expression). */
XR_ATTG_HD float attg_mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

/* Dropout of one value v whose draw is r: v scaled when kept, 0 when dropped, v itself without dropout. */
XR_ATTG_HD float attg_dropout(const AttgDrop *d, uint32_t r, float v) {
    return d->on ? (r >= d->thr ? attg_mul(v, d->scale) : 0.0f) : v;
}

/* The mask position of query row i, head h (ops_list.h: query row | head << 16). */
XR_ATTG_HD uint32_t attg_pos(int i, int h) { return (uint32_t)i | ((uint32_t)h << 16); }

/* The draws of row elements 4g .. 4g+3 (rng.h's rng_dropout_add_span: word j % 4 of Philox(key, {j/4, c1, id})). */
XR_ATTG_HD void attg_draw4(uint32_t r[4], const AttgDrop *d, int g, uint32_t c1, uint64_t id) {
    uint32_t ctr[4] = {(uint32_t)g, c1, (uint32_t)id, (uint32_t)(id >> 32)};
    rng_philox(r, ctr, d->key);
}

/* Partial max of row[j], j = j0, j0 + js, ... < L (-INFINITY when none). */
XR_ATTG_HD float attg_part_max(const float *row, int L, int j0, int js) {
    float m = -INFINITY;
    for (int j = j0; j < L; j += js) m = fmaxf(m, row[j]);
    return m;
}

/* The partial sum of exp(row[j] - mx) over the same j (the caller adds the parts). Reads only: the row keeps the
 * scores, and the last pass computes each exponential again (the same expression, the same bits), so the row is
 * written once, or (bf16 operands) never. */
XR_ATTG_HD float attg_part_sumexp(const float *row, int L, float mx, int j0, int js) {
    float s = 0.0f;
    for (int j = j0; j < L; j += js) s += expf(row[j] - mx);
    return s;
}

/* The forward row's last pass over groups of 4 columns g = g0, g0 + gs, ... (4g < Tp): p = exp(row[j] - mx) inv for
 * j < L, saved in a[j] (a may be NULL), and Pd_j = dropout(p) (the mask at position c1 of sequence id), 0 for
 * L <= j < Tp, written where the context GEMM reads it: in place of the score row[j] (r16 NULL), or only as bf16 bits
 * r16[j] (bf16 operands: the fp32 row is left as it was, nobody reads it). Reads and writes only its own columns, so
 * the lanes of a warp may share a row. */
XR_ATTG_HD void attg_fwd_finish(float *row, float *a, uint16_t *r16, int L, int Tp, float mx, float inv,
                                const AttgDrop *d, uint32_t c1, uint64_t id, int g0, int gs) {
    for (int g = g0; 4 * g < Tp; g += gs) {
        uint32_t r[4] = {0, 0, 0, 0};
        if (d->on && 4 * g < L) attg_draw4(r, d, g, c1, id);
        for (int k = 0; k < 4; k++) {
            int j = 4 * g + k;
            if (j >= Tp) break;
            float v = 0.0f;
            if (j < L) {
                float p = expf(row[j] - mx) * inv;
                if (a) a[j] = p;
                v = attg_dropout(d, r[k], p);
            }
            if (r16)
                r16[j] = xr_bf16_bits(v);
            else
                row[j] = v;
        }
    }
}

/* pd[j] = dropout(P[j]) for j < L, 0 for L <= j < Tp, over groups of 4 as attg_fwd_finish; into pd (fp32) when
 * pd16 is NULL, else as bf16 bits into pd16. */
XR_ATTG_HD void attg_pd_part(float *pd, uint16_t *pd16, const float *P, int L, int Tp, const AttgDrop *d, uint32_t c1,
                             uint64_t id, int g0, int gs) {
    for (int g = g0; 4 * g < Tp; g += gs) {
        uint32_t r[4] = {0, 0, 0, 0};
        if (d->on && 4 * g < L) attg_draw4(r, d, g, c1, id);
        for (int k = 0; k < 4; k++) {
            int j = 4 * g + k;
            if (j >= Tp) break;
            float v = j >= L ? 0.0f : attg_dropout(d, r[k], P[j]);
            if (pd16)
                pd16[j] = xr_bf16_bits(v);
            else
                pd[j] = v;
        }
    }
}

/* The lse backward's row step over groups of 4: row[j] = P_j = exp(s_j - l) for j < L (the scores row[j] from the
 * same GEMM as the forward's; the CPU's probs_from_lse and the exact lse kernels compute the same expression), then
 * dropout(P_j) into pd (fp32, pd16 NULL) or as bf16 bits into pd16; row[j] and the Pd element 0 for L <= j < Tp. */
XR_ATTG_HD void attg_lse_p_part(float *row, float *pd, uint16_t *pd16, int L, int Tp, float l, const AttgDrop *d,
                                uint32_t c1, uint64_t id, int g0, int gs) {
    for (int g = g0; 4 * g < Tp; g += gs) {
        uint32_t r[4] = {0, 0, 0, 0};
        if (d->on && 4 * g < L) attg_draw4(r, d, g, c1, id);
        for (int k = 0; k < 4; k++) {
            int j = 4 * g + k;
            if (j >= Tp) break;
            float P = j < L ? expf(row[j] - l) : 0.0f;
            row[j] = P;
            float v = j >= L ? 0.0f : attg_dropout(d, r[k], P);
            if (pd16)
                pd16[j] = xr_bf16_bits(v);
            else
                pd[j] = v;
        }
    }
}

/* The softmax backward's first pass over groups of 4: g[j] = dP_j = dropout(dPd_j) for j < L (the mask drawn
 * again: kept elements scaled, dropped ones 0); returns the partial sum of P_j dP_j. */
XR_ATTG_HD float attg_bwd_part_dot(float *g, const float *P, int L, const AttgDrop *d, uint32_t c1, uint64_t id,
                                   int g0, int gs) {
    float D = 0.0f;
    for (int q = g0; 4 * q < L; q += gs) {
        uint32_t r[4] = {0, 0, 0, 0};
        if (d->on) attg_draw4(r, d, q, c1, id);
        for (int k = 0; k < 4 && 4 * q + k < L; k++) {
            int j = 4 * q + k;
            float dp = attg_dropout(d, r[k], g[j]);
            g[j] = dp;
            D += P[j] * dp;
        }
    }
    return D;
}

/* Its second pass: dS_j = P_j (dP_j - D) for j < L, 0 for L <= j < Tp, written where the dQ / dK GEMMs read it: in
 * place of g[j] (g16 NULL), or only as bf16 bits g16[j] (bf16 operands: g is left holding dP, nobody reads it). */
XR_ATTG_HD void attg_bwd_finish(float *g, uint16_t *g16, const float *P, int L, int Tp, float D, int j0, int js) {
    for (int j = j0; j < Tp; j += js) {
        float ds = j < L ? P[j] * (g[j] - D) : 0.0f;
        if (g16)
            g16[j] = xr_bf16_bits(ds);
        else
            g[j] = ds;
    }
}

/* Row i of block bh: its sequence, head, length and whether it is a real query row; the saved probabilities' row. */
typedef struct {
    int s, h, L, real;
    size_t att; /* offset of the row in att (valid when real; 0 when base is NULL: the lse ops) */
} AttgRow;

/* Where the lse of query row i, head h of sequence s is: its token row (seq_off[s] + i), or with first_only its
 * sequence, times NH, plus h (ops_list.h: lse [N, NH] or [S, NH]). */
XR_ATTG_HD size_t attg_lse_at(const int32_t *seq_off, int NH, int first_only, int s, int h, int i) {
    size_t row = first_only ? (size_t)s : (size_t)seq_off[s] + (size_t)i;
    return row * (size_t)NH + (size_t)h;
}

XR_ATTG_HD AttgRow attg_row(const int32_t *seq_off, const size_t *base, int NH, int first_only, int bh, int i) {
    AttgRow r;
    r.s = bh / NH, r.h = bh % NH;
    r.L = seq_off[r.s + 1] - seq_off[r.s];
    int nq = first_only ? (r.L > 0 ? 1 : 0) : r.L;
    r.real = i < nq;
    r.att = base ? base[r.s] + ((size_t)r.h * (size_t)(first_only ? 1 : r.L) + (size_t)i) * (size_t)r.L : 0;
    return r;
}

#ifdef __cplusplus
}
#endif
#endif
