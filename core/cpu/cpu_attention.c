/* cpu_attention.c: softmax attention over packed sequences on the CPU, forward (with optional saved
 * probabilities and dropout on them) and backward. One task per (sequence, head) spread over OpenMP threads;
 * in each, the products are single-threaded OpenBLAS GEMMs over a block of query rows. Padding never exists
 * here: the model packs real tokens only. In bf16 training (a working copy registered) the training ops round
 * their products' operands to bf16 as ops_list.h's "training precision" states; fp32 otherwise. */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "cpu_math.h"
#include "cpu_ops.h"
#include "rng.h"
#include "xr_common.h"

/* Score block size per thread in floats (1 MiB): query rows are processed in blocks that fit. */
#define XR_ATT_BLOCK (1 << 18)

/* Row-wise softmax in place: s[r, :L] = exp(s - max) / sum; with lse, also each row's log-sum-exp m + log(sum)
 * at lse[r * ld] (the probabilities are the same bits either way). */
XR_CLONES
static void softmax_rows(float *s, float *lse, size_t ld, int rows, int L) {
    for (int r = 0; r < rows; r++) {
        float *x = s + (size_t)r * L;
        float m = x[0];
        XR_OMP_SIMD_MINMAX(omp simd reduction(max : m))
        for (int j = 1; j < L; j++) m = x[j] > m ? x[j] : m;
        float sum = 0.0f;
        XR_OMP(omp simd reduction(+ : sum))
        for (int j = 0; j < L; j++) {
            float e = xr_expf(x[j] - m);
            x[j] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < L; j++) x[j] *= inv;
        if (lse) lse[(size_t)r * ld] = m + logf(sum);
    }
}

/* P = exp(s - lse) in place, rows of length L, row r's lse at lse[r * ld]. */
XR_CLONES
static void probs_from_lse(float *s, const float *lse, size_t ld, int rows, int L) {
    for (int r = 0; r < rows; r++) {
        float *x = s + (size_t)r * L, l = lse[(size_t)r * ld];
        for (int j = 0; j < L; j++) x[j] = xr_expf(x[j] - l);
    }
}

static int query_block(int max_len) {
    int rb = XR_ATT_BLOCK / (max_len > 0 ? max_len : 1);
    return rb < 1 ? 1 : (rb > max_len ? max_len : rb);
}

/* Offset of sequence s's saved probabilities: blocks [NH, nq, L] one after another (nq = L, or 1 for the first
 * row only). O(S) per call, small next to a head's work. */
static size_t att_offset(const int32_t *seq_off, int s, int NH, int first_only) {
    if (first_only) return (size_t)NH * (size_t)seq_off[s];
    size_t before = 0;
    for (int r = 0; r < s; r++) {
        size_t lr = (size_t)(seq_off[r + 1] - seq_off[r]);
        before += lr * lr;
    }
    return (size_t)NH * before;
}

/* What forward and backward share: the row block, the per-thread scratch (a score block, its dropped copy under
 * dropout or bf16 operands, and with bf16 operands the rounded q, k, v and dO of the task), the scales and the
 * dropout threshold, and whether a parallel region pays. */
typedef struct {
    int H, ld, rb, ntask, parallel, bf16;
    size_t blk, per_thread, opnd_at, opnd_rows; /* floats; the rounded operands at opnd_at, opnd_rows * dh each */
    float *scratch, scale, dscale;
    uint32_t thr;
    const XrDropout *d; /* NULL when dropout is off */
} AttPlan;

/* bf16: 1 when the products take bf16 operands (the training ops in bf16 training), 0 for fp32 (the inference ops
 * always: they keep their fp32 definition, the GPU's flash kernel being their bf16 path). */
static AttPlan att_plan(Backend *be, const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                        const XrDropout *d, int extra_blocks, int bf16) {
    AttPlan p;
    p.H = NH * dh, p.ld = 3 * p.H, p.rb = query_block(max_len), p.ntask = S * NH, p.bf16 = bf16;
    p.d = d && d->p > 0.0f ? d : NULL;
    /* the mask position packs the query row in 16 bits (model positions stop at 8194) */
    if (p.d && (max_len > 65536 || NH > 65536))
        xr_die("attention dropout: %d tokens or %d heads exceed 65536", max_len, NH);
    p.blk = ((size_t)p.rb * max_len + 15) & ~(size_t)15;
    p.opnd_at = p.blk * (size_t)((p.d || bf16 ? 2 : 1) + extra_blocks);
    p.opnd_rows = ((size_t)max_len * dh + 15) & ~(size_t)15;
    p.per_thread = p.opnd_at + (bf16 ? 4 * p.opnd_rows : 0);
    p.scratch = cpu_scratch(be, p.per_thread, be->threads);
    p.scale = 1.0f / sqrtf((float)dh);
    p.thr = p.d ? rng_drop_threshold(p.d->p) : 0;
    p.dscale = p.d ? 1.0f / (1.0f - p.d->p) : 1.0f;
    /* a parallel region is only worth it when the batch has enough work */
    size_t work = (size_t)seq_off[S] * (first_only ? 1 : (size_t)max_len) * p.H;
    p.parallel = work > XR_PAR_MIN && p.ntask > 1 && be->threads > 1;
    return p;
}

/* Task t = (sequence s, head h): its rows, its query rows (all, or the first only), its q/k/v columns, the offset
 * of its saved probabilities, its dropout stream and its thread's scratch. */
typedef struct {
    int s, h, off, L, nq;
    const float *q, *k, *v;
    size_t att;
    uint64_t id;
    float *mine;
} AttTask;

static AttTask att_task(const AttPlan *p, int task, const int32_t *seq_off, const float *qkv, int NH, int dh,
                        int first_only) {
    AttTask t;
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    t.s = task / NH, t.h = task % NH;
    t.off = seq_off[t.s], t.L = seq_off[t.s + 1] - t.off, t.nq = first_only ? 1 : t.L;
    t.q = qkv + (size_t)t.off * p->ld + (size_t)t.h * dh, t.k = t.q + p->H, t.v = t.q + 2 * p->H;
    t.att = att_offset(seq_off, t.s, NH, first_only) + (size_t)t.h * t.nq * t.L;
    t.id = p->d && p->d->seq_ids ? p->d->seq_ids[t.s] : (uint64_t)t.s;
    t.mine = p->scratch + p->per_thread * tid;
    return t;
}

/* Dropout on probability rows i0 .. i0+nb-1 of head h (see XrDropout: position = query row | head << 16). */
XR_CLONES
static void att_dropout(float *dst, const float *src, int nb, int L, int i0, int h, uint64_t id, const XrDropout *d,
                        uint32_t thr, float scale) {
    for (int r = 0; r < nb; r++)
        rng_dropout_span(dst + (size_t)r * L, src + (size_t)r * L, L, d->key, (uint32_t)(i0 + r) | ((uint32_t)h << 16),
                         id, thr, scale);
}

/* dst[r, :dh] (row stride dh) = src[r, :dh] (row stride ld) rounded to bf16, rows 0 .. rows-1. */
XR_CLONES
static void round_rows(float *dst, const float *src, int rows, int dh, size_t ld) {
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < dh; e++) dst[(size_t)r * dh + e] = xr_bf16_round(src[(size_t)r * ld + e]);
}

XR_CLONES
static void round_inplace(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = xr_bf16_round(x[i]);
}

/* The task's q, k, v as the products read them, with their row stride in *lq: in qkv (stride ld), or with bf16
 * operands rounded into the thread's scratch (q's nq rows, k's and v's L rows; stride dh). */
static void att_operands(const AttPlan *p, const AttTask *t, int dh, const float **q, const float **k,
                         const float **v, int *lq) {
    *q = t->q, *k = t->k, *v = t->v, *lq = p->ld;
    if (!p->bf16) return;
    float *o = t->mine + p->opnd_at;
    round_rows(o, t->q, t->nq, dh, (size_t)p->ld);
    round_rows(o + p->opnd_rows, t->k, t->L, dh, (size_t)p->ld);
    round_rows(o + 2 * p->opnd_rows, t->v, t->L, dh, (size_t)p->ld);
    *q = o, *k = o + p->opnd_rows, *v = o + 2 * p->opnd_rows, *lq = dh;
}

/* The forward with the probabilities saved in att, or (lse non-NULL) the log-sum-exp saved in lse. With bf16
 * operands: q, k, v rounded, and Pd = dropout(P) rounded as the operand of Pd v (P saved / lse stay fp32). */
static void attention_fwd(Backend *be, float *out, float *att, float *lse, const float *qkv, const int32_t *seq_off,
                          int S, int max_len, int NH, int dh, int first_only, const XrDropout *d, int bf16) {
    AttPlan p = att_plan(be, seq_off, S, max_len, NH, dh, first_only, d, 0, bf16);
    int H = p.H;
    XR_OMP(omp parallel for num_threads(be->threads) schedule(dynamic, 1) if (p.parallel))
    for (int task = 0; task < p.ntask; task++) {
        AttTask t = att_task(&p, task, seq_off, qkv, NH, dh, first_only);
        int L = t.L;
        if (L <= 0) continue;
        float *o = out + (size_t)(first_only ? t.s : t.off) * H + (size_t)t.h * dh;
        float *a = att ? att + t.att : NULL;
        const float *q, *k, *v;
        int lq;
        att_operands(&p, &t, dh, &q, &k, &v, &lq);
        for (int i0 = 0; i0 < t.nq; i0 += p.rb) {
            int nb = t.nq - i0 < p.rb ? t.nq - i0 : p.rb;
            float *sc = a ? a + (size_t)i0 * L : t.mine;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, L, dh, p.scale, q + (size_t)i0 * lq, lq, k, lq,
                        0.0f, sc, L);
            float *row_lse = lse ? lse + (size_t)((first_only ? t.s : t.off) + i0) * NH + t.h : NULL;
            softmax_rows(sc, row_lse, (size_t)NH, nb, L);
            const float *pv = sc;
            float *pd = t.mine + p.blk;
            if (p.d) {
                att_dropout(pd, sc, nb, L, i0, t.h, t.id, p.d, p.thr, p.dscale);
                pv = pd;
            }
            if (p.bf16) { /* Pd rounded; P itself (saved in att) stays fp32 */
                if (!p.d) memcpy(pd, sc, (size_t)nb * L * sizeof(float));
                round_inplace(pd, (size_t)nb * L);
                pv = pd;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, dh, L, 1.0f, pv, L, v, lq, 0.0f,
                        o + (size_t)i0 * H, H);
        }
    }
    cpu_act_store(be, out, (size_t)(first_only ? S : seq_off[S]) * H); /* the saved probabilities stay fp32 */
}

void cpu_attention_fwd(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                       int max_len, int NH, int dh, int first_only, const XrDropout *d) {
    attention_fwd(be, out, att, NULL, qkv, seq_off, S, max_len, NH, dh, first_only, d, 0);
}

void cpu_attention_train_lse(Backend *be, float *out, float *lse, const float *qkv, const int32_t *seq_off, int S,
                             int max_len, int NH, int dh, int first_only, const XrDropout *d) {
    if (cpu_pk_live(be)) {
        cpu_packed_attention(be, PK_ATT_LSE, out, lse, qkv, seq_off, S, max_len, NH, dh, first_only, d);
        return;
    }
    attention_fwd(be, out, NULL, lse, qkv, seq_off, S, max_len, NH, dh, first_only, d, cpu_bf16_operands(be));
}

void cpu_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                   int max_len, int NH, int dh) {
    if (cpu_pk_live(be)) { cpu_packed_attention(be, PK_ATT_INFER, out, att, qkv, seq_off, S, max_len, NH, dh, 0, NULL); return; }
    cpu_attention_fwd(be, out, att, qkv, seq_off, S, max_len, NH, dh, 0, NULL);
}

void cpu_attention_first(Backend *be, float *out, const float *qkv, const int32_t *seq_off, int S, int max_len,
                         int NH, int dh) {
    if (cpu_pk_live(be)) { cpu_packed_attention(be, PK_ATT_INFER, out, NULL, qkv, seq_off, S, max_len, NH, dh, 1, NULL); return; }
    cpu_attention_fwd(be, out, NULL, qkv, seq_off, S, max_len, NH, dh, 1, NULL);
}

void cpu_attention_train(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                         int max_len, int NH, int dh, int first_only, const XrDropout *d) {
    if (cpu_pk_live(be)) {
        cpu_packed_attention(be, PK_ATT_TRAIN, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, d);
        return;
    }
    attention_fwd(be, out, att, NULL, qkv, seq_off, S, max_len, NH, dh, first_only, d, cpu_bf16_operands(be));
}

/* dP = dropout(dPd) with the mask read off Pd = dropout(P) (kept where Pd != 0) instead of drawn again. Where
 * P itself is 0 the two differ, but there dS = P (dP - dot) is 0 either way, and P dP adds nothing to dot. */
XR_CLONES
static void mask_like(float *g, const float *pd, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) g[i] = pd[i] != 0.0f ? g[i] * scale : 0.0f;
}

/* dS = P * (dP - rowsum(P * dP)) in place of dP (the softmax backward), rows of length L. */
XR_CLONES
static void softmax_backward_rows(float *dp, const float *p, int rows, int L) {
    for (int r = 0; r < rows; r++) {
        float *g = dp + (size_t)r * L;
        const float *y = p + (size_t)r * L;
        float dot = 0.0f;
        XR_OMP(omp simd reduction(+ : dot))
        for (int j = 0; j < L; j++) dot += y[j] * g[j];
        for (int j = 0; j < L; j++) g[j] = y[j] * (g[j] - dot);
    }
}

/* Per (sequence, head) and block of query rows, with P the saved probabilities and Pd = dropout(P):
 * dPd = dO V^T; dP = dropout(dPd); dV += Pd^T dO; dS = softmax'(dP); dQ = scale dS K; dK += scale dS^T Q.
 * With bf16 operands, the products' operands Q, K, V, dO, Pd and dS are rounded to bf16 (dP, D and dS computed
 * in fp32 before dS is rounded). Each task writes only its own sequence's rows and head's columns, so tasks never
 * overlap. */
/* The backward from saved probabilities att, or (lse non-NULL) from probabilities recomputed as exp(s - lse). */
static void attention_bwd(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att,
                          const float *lse, const int32_t *seq_off, int S, int max_len, int NH, int dh,
                          int first_only, const XrDropout *d) {
    AttPlan p = att_plan(be, seq_off, S, max_len, NH, dh, first_only, d, lse ? 1 : 0, cpu_bf16_operands(be));
    int H = p.H, ld = p.ld;
    XR_OMP(omp parallel for num_threads(be->threads) schedule(dynamic, 1) if (p.parallel))
    for (int task = 0; task < p.ntask; task++) {
        AttTask t = att_task(&p, task, seq_off, qkv, NH, dh, first_only);
        int L = t.L, nq = t.nq;
        if (L <= 0) continue;
        float *dq = dqkv + (size_t)t.off * ld + (size_t)t.h * dh, *dk = dq + H, *dv = dq + 2 * H;
        const float *q, *k, *v, *dO = dout + (size_t)(first_only ? t.s : t.off) * H + (size_t)t.h * dh;
        int lq, lo = H;
        att_operands(&p, &t, dh, &q, &k, &v, &lq);
        if (p.bf16) { /* dO rounded too (the 4th operand slot) */
            float *r = t.mine + p.opnd_at + 3 * p.opnd_rows;
            round_rows(r, dO, nq, dh, (size_t)H);
            dO = r, lo = dh;
        }
        const float *a = lse ? NULL : att + t.att;
        float *dp = t.mine, *pd = dp + p.blk, *pr = pd + (p.d || p.bf16 ? p.blk : 0);
        for (int i0 = 0; i0 < nq; i0 += p.rb) {
            int nb = nq - i0 < p.rb ? nq - i0 : p.rb;
            const float *P, *Pv;
            if (lse) { /* recompute this block's probabilities: the forward's scores, then exp(s - lse) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, L, dh, p.scale, q + (size_t)i0 * lq, lq, k,
                            lq, 0.0f, pr, L);
                probs_from_lse(pr, lse + (size_t)((first_only ? t.s : t.off) + i0) * NH + t.h, (size_t)NH, nb, L);
                P = pr;
            } else {
                P = a + (size_t)i0 * L;
            }
            Pv = P;
            float beta = i0 == 0 ? 0.0f : 1.0f;
            if (p.d) {
                att_dropout(pd, P, nb, L, i0, t.h, t.id, p.d, p.thr, p.dscale);
                Pv = pd;
            } else if (p.bf16) {
                memcpy(pd, P, (size_t)nb * L * sizeof(float));
                Pv = pd;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, L, dh, 1.0f, dO + (size_t)i0 * lo, lo, v, lq,
                        0.0f, dp, L);
            if (p.d) mask_like(dp, pd, (size_t)nb * L, p.dscale); /* reads the mask off the fp32 Pd */
            if (p.bf16) round_inplace(pd, (size_t)nb * L);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, nb, 1.0f, Pv, L, dO + (size_t)i0 * lo, lo,
                        beta, dv, ld);
            softmax_backward_rows(dp, P, nb, L);
            if (p.bf16) round_inplace(dp, (size_t)nb * L); /* dS, computed in fp32, rounded as an operand */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, dh, L, p.scale, dp, L, k, lq, 0.0f,
                        dq + (size_t)i0 * ld, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, nb, p.scale, dp, L, q + (size_t)i0 * lq, lq,
                        beta, dk, ld);
        }
        /* with the first row only, the other rows' queries did not take part */
        for (int i = nq; i < L; i++) memset(dq + (size_t)i * ld, 0, (size_t)dh * sizeof(float));
    }
}

void cpu_attention_backward(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att,
                            const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                            const XrDropout *d) {
    if (cpu_pk_live(be)) {
        cpu_packed_attention_backward(be, 0, dqkv, dout, qkv, att, seq_off, S, max_len, NH, dh, first_only, d);
        return;
    }
    attention_bwd(be, dqkv, dout, qkv, att, NULL, seq_off, S, max_len, NH, dh, first_only, d);
}

void cpu_attention_backward_lse(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *lse,
                                const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                                const XrDropout *d) {
    if (cpu_pk_live(be)) {
        cpu_packed_attention_backward(be, 1, dqkv, dout, qkv, lse, seq_off, S, max_len, NH, dh, first_only, d);
        return;
    }
    attention_bwd(be, dqkv, dout, qkv, NULL, lse, seq_off, S, max_len, NH, dh, first_only, d);
}
