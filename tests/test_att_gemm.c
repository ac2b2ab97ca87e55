/* test_att_gemm: the GEMM-based training attention's driver (core/att_gemm.c: the chunk loop, the packing and every
 * GEMM's op / m / n / k / leading dimension / stride) run on plain C primitives (a literal column-major
 * strided-batched GEMM, cublasSgemmStridedBatched's semantics, and the row steps through att_gemm.h's per-row code,
 * the CUDA kernels' own) against the CPU backend's ops_attention_train / ops_attention_backward: packed ragged
 * sequences of lengths 1, 5, 0 (empty), 13, 8, 9, 17, 47, 133 (padded to 136), heads 3 x dh 7 and 2 x dh 16,
 * dropout p 0 and 0.2, all query rows and the first row only, chunks of 1, 2, 5 and all blocks, the row steps run as
 * one thread a row and as the 32 lanes of a CUDA warp (j0 = lane, js = 32). Scratch and outputs NaN-poisoned first.
 * out, att and dqkv within RTOL relative (each difference over max(|cpu|, the array's rms)); the dropped probabilities
 * the driver fed its second GEMM equal rng.h's mask applied to its saved att bit for bit (zero pattern included),
 * and the padding is 0. With bf16 operands (the plan of bf16 training; the C GEMM reads bf16 bits): every GEMM call
 * takes them, att as the CPU backend's with a working copy registered (RTOL), ctx and dqkv against
 * att_bf16_ref.h's reference of the contract (as test_attention_bf16 holds the CPU emulation). The log-sum-exp ops
 * (attg_forward_lse / attg_backward_lse, the backward fed the driver's own lse) the same way against the CPU
 * backend's ops_attention_train_lse / ops_attention_backward_lse: out, lse and dqkv within RTOL (fp32), the rows of
 * empty sequences' lse (first_only) untouched, the backward's dropped probabilities rng.h's mask on its recomputed P
 * bit for bit; with bf16 operands lse to RTOL, ctx and dqkv against att_bf16_ref.h. With bf16 operands both kinds run
 * again on packed storage (plan qkv16 / ctx16: qkv read as bf16 bits, the context stored as them): the context the
 * unpacked run's rounded once, att / lse and dqkv its bits (check_packed). attg_scratch_bytes (the memory
 * plan's figure) is the largest of the four plans a call may make, first-row ones included. Needs no GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "att_bf16_ref.h"
#include "att_gemm.h"
#include "cpu/cpu_math.h"
#include "ops.h"
#include "testutil.h"

/* Both sides are fp32 with fp32 sums of at most Tp + dh terms in different orders (OpenBLAS vs the literal loop),
 * so they differ by some n u (u = 2^-24, n up to 136) times the terms' magnitude: measured worst 2.2e-6 of the
 * array's scale (printed at the end); a swapped transpose or stride in the driver gives O(1) or NaN. 1e-5, as the
 * GPU-vs-CPU op tests. */
#define RTOL 1e-5

/* the inputs of the saved-probability cases, and (their own stream, so adding cases to one leaves the other's data
 * as it was) of the lse cases */
static TuRng rng = {0x2545F4914F6CDD1Dull}, rng_lse = {0x6A09E667F3BCC909ull};

static float *urnd(TuRng *r, size_t n, float lo, float hi) {
    float *p = xr_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * (float)tu_rng_unit(r);
    return p;
}
static float *nans(size_t n) {
    float *p = xr_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

/* ---- the C primitives ---- */

typedef struct {
    void *scr;
    size_t bytes;
    int gemms, gemms16; /* GEMM calls, those with bf16 operands */
    int lanes; /* the row steps as 1 thread a row (j0 0, js 1) or as a CUDA warp's 32 lanes, one after another */
    struct ScoreCalls *rec; /* non-NULL: the score GEMMs are recorded there (score_call) */
} CpuPrims;

/* A score GEMM (s = scale q k^T: op T, N, alpha the scale; the other GEMMs' alpha is 1 or the scale with op N) as
 * the driver called it: every argument, pointers as offsets into the scratch region, and (out non-NULL) its output. */
typedef struct {
    int m, n, k, lda, ldb, ldc, batch, ab16;
    long long sa, sb, sc;
    float alpha;
    ptrdiff_t a, b, c;
    float *out;
} ScoreCall;
typedef struct ScoreCalls {
    ScoreCall call[1024];
    int n;
    const char *scr; /* the scratch region the offsets are from */
    int keep_out;    /* copy each call's output */
} ScoreCalls;

static void score_call(ScoreCalls *r, int ta, int tb, int m, int n, int k, float alpha, const void *A, int lda,
                       long long sa, const void *B, int ldb, long long sb, float *C, int ldc, long long sc, int batch,
                       int ab16) {
    if (!(ta == 1 && tb == 0 && alpha != 1.0f)) return;
    TU_CHECK(r->n < 1024, "more than 1024 score GEMM calls recorded");
    if (r->n >= 1024) return;
    ScoreCall *c = &r->call[r->n++];
    *c = (ScoreCall){m, n, k, lda, ldb, ldc, batch, ab16, sa, sb, sc, alpha, (const char *)A - r->scr,
                     (const char *)B - r->scr, (const char *)C - r->scr, NULL};
    if (r->keep_out) {
        size_t nf = (size_t)batch * (size_t)sc;
        c->out = xr_malloc(nf * sizeof(float));
        memcpy(c->out, C, nf * sizeof(float));
    }
}

static void score_calls_free(ScoreCalls *r) {
    for (int i = 0; i < r->n; i++) free(r->call[i].out);
    r->n = 0;
}

/* The backward's score GEMMs (b) are the forward's (f) again: the same calls in the same order, every argument and
 * offset equal, and (with outputs kept) the same output bits. Returns the number of differences. */
static int score_calls_differ(const ScoreCalls *f, const ScoreCalls *b, const char *name) {
    int bad = 0;
    TU_CHECK(f->n == b->n && f->n > 0, "%s: %d score GEMM calls in the forward, %d in the backward", name, f->n, b->n);
    bad += f->n != b->n;
    for (int i = 0; i < f->n && i < b->n; i++) {
        const ScoreCall *x = &f->call[i], *y = &b->call[i];
        int same = x->m == y->m && x->n == y->n && x->k == y->k && x->lda == y->lda && x->ldb == y->ldb &&
                   x->ldc == y->ldc && x->batch == y->batch && x->ab16 == y->ab16 && x->sa == y->sa &&
                   x->sb == y->sb && x->sc == y->sc && x->alpha == y->alpha && x->a == y->a && x->b == y->b &&
                   x->c == y->c;
        TU_CHECK(same, "%s: score GEMM %d: forward m %d n %d k %d batch %d ld %d/%d/%d offsets %td/%td/%td, backward "
                 "m %d n %d k %d batch %d ld %d/%d/%d offsets %td/%td/%td",
                 name, i, x->m, x->n, x->k, x->batch, x->lda, x->ldb, x->ldc, x->a, x->b, x->c, y->m, y->n, y->k,
                 y->batch, y->lda, y->ldb, y->ldc, y->a, y->b, y->c);
        bad += !same;
        if (same && x->out && y->out) {
            size_t nf = (size_t)x->batch * (size_t)x->sc, diff = 0;
            for (size_t e = 0; e < nf; e++) diff += memcmp(&x->out[e], &y->out[e], 4) != 0;
            TU_CHECK(diff == 0, "%s: score GEMM %d: %zu of %zu recomputed scores differ from the forward's", name, i,
                     diff, nf);
            bad += diff != 0;
        }
    }
    return bad;
}

static void *c_scratch(void *ctx, size_t bytes) {
    CpuPrims *c = ctx;
    if (bytes > c->bytes) {
        free(c->scr);
        c->scr = xr_malloc(bytes); /* malloc: 16-byte aligned, enough for the C code */
        c->bytes = bytes;
    }
    /* poison: the driver must write every float it reads */
    for (size_t i = 0; i < bytes / sizeof(float); i++) ((float *)c->scr)[i] = NAN;
    return c->scr;
}

/* element i of an operand: fp32, or bf16 bits (ab16) widened */
static float opnd(const void *X, int ab16, size_t i) {
    if (!ab16) return ((const float *)X)[i];
    uint32_t u = (uint32_t)((const uint16_t *)X)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void c_gemm(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const void *A, int lda, long long sa,
                   const void *B, int ldb, long long sb, float beta, float *C, int ldc, long long sc, int batch,
                   int ab16) {
    ((CpuPrims *)ctx)->gemms++;
    ((CpuPrims *)ctx)->gemms16 += ab16;
    ScoreCalls *rec = ((CpuPrims *)ctx)->rec;
    for (int t = 0; t < batch; t++) {
        size_t a = (size_t)(t * sa), b = (size_t)(t * sb);
        float *c = C + t * sc;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float acc = 0.0f;
                for (int l = 0; l < k; l++) {
                    float x = opnd(A, ab16, a + (ta ? l + (size_t)i * lda : i + (size_t)l * lda));
                    float y = opnd(B, ab16, b + (tb ? j + (size_t)l * ldb : l + (size_t)j * ldb));
                    acc += x * y;
                }
                /* beta 0: C is not read (BLAS), so poisoned scratch stays out */
                c[i + (size_t)j * ldc] = beta == 0.0f ? alpha * acc : alpha * acc + beta * c[i + (size_t)j * ldc];
            }
    }
    if (rec) {
        rec->scr = ((CpuPrims *)ctx)->scr;
        score_call(rec, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, C, ldc, sc, batch, ab16);
    }
}

static void c_bases(void *ctx, size_t *base, const int32_t *seq_off, int S, int NH, int first_only) {
    (void)ctx;
    size_t acc = 0;
    for (int s = 0; s < S; s++) {
        base[s] = acc * (size_t)NH;
        size_t L = (size_t)(seq_off[s + 1] - seq_off[s]);
        acc += first_only ? L : L * L;
    }
}

static int real_rows(const int32_t *seq_off, int s, int row_mode) {
    int L = seq_off[s + 1] - seq_off[s];
    return row_mode == ATTG_FIRST ? (L > 0) : L;
}
static size_t src_row(const int32_t *seq_off, int s, int i, int row_mode) {
    return row_mode == ATTG_FIRST ? (size_t)s : (size_t)seq_off[s] + (size_t)i;
}

static void c_pack(void *ctx, void *dst, size_t bs, int rows, const void *src, int src16, int ld, int col0,
                   const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int to16) {
    (void)ctx;
    for (int b = 0; b < n; b++) {
        int s = (bh0 + b) / NH, h = (bh0 + b) % NH, R = real_rows(seq_off, s, row_mode);
        for (int i = 0; i < rows; i++)
            for (int e = 0; e < dh; e++) {
                size_t at = src_row(seq_off, s, i, row_mode) * ld + col0 + (size_t)h * dh + e;
                float v = i < R ? opnd(src, src16, at) : 0.0f;
                size_t o = (size_t)b * bs + (size_t)i * dh + e;
                if (to16)
                    ((uint16_t *)dst)[o] = xr_bf16_bits(v);
                else
                    ((float *)dst)[o] = v;
            }
    }
}

static void c_unpack(void *ctx, void *dst, int st16, int ld, int col0, const float *src, size_t bs, int src_rows,
                     int max_rows, const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int rnd,
                     void *dst16) {
    (void)ctx, (void)dst16;
    for (int b = 0; b < n; b++) {
        int s = (bh0 + b) / NH, h = (bh0 + b) % NH, R = real_rows(seq_off, s, row_mode);
        TU_CHECK(R <= max_rows, "unpack: sequence %d has %d rows, max_rows %d", s, R, max_rows);
        for (int i = 0; i < R; i++)
            for (int e = 0; e < dh; e++) {
                float v = i < src_rows ? src[(size_t)b * bs + (size_t)i * dh + e] : 0.0f;
                size_t at = src_row(seq_off, s, i, row_mode) * ld + col0 + (size_t)h * dh + e;
                if (rnd) v = xr_bf16_round(v);
                if (st16)
                    ((uint16_t *)dst)[at] = xr_bf16_bits(v);
                else
                    ((float *)dst)[at] = v;
            }
    }
}

/* Row r of a chunk, as the CUDA kernels number them. */
static AttgRow row_of(const size_t *base, const int32_t *seq_off, int bh0, const AttGemmPlan *p, int r) {
    return attg_row(seq_off, base, p->NH, p->first_only, bh0 + r / p->nqp, r % p->nqp);
}
static uint64_t id_of(const XrDropout *d, int s) { return d && d->seq_ids ? d->seq_ids[s] : (uint64_t)s; }

/* att (saved probabilities, base non-NULL) or lse (the log-sum-exps, base NULL) */
static void fwd_rows(void *ctx, float *sc, float *att, float *lse, uint16_t *p16, const size_t *base,
                     const int32_t *seq_off, int bh0, int n, const AttGemmPlan *p, const XrDropout *d) {
    int nl = ((CpuPrims *)ctx)->lanes;
    AttgDrop dd = attg_drop(d);
    for (int r = 0; r < n * p->nqp; r++) {
        AttgRow w = row_of(base, seq_off, bh0, p, r);
        float *row = sc + (size_t)r * p->Tp;
        uint16_t *r16 = p16 ? p16 + (size_t)r * p->Tp : NULL;
        if (!w.real) continue; /* its context row is never unpacked: Pd left unwritten (poisoned here) */
        /* each pass over every lane before the next, as the warp's reductions order them */
        float mx = -INFINITY, sum = 0.0f;
        for (int l = 0; l < nl; l++) mx = fmaxf(mx, attg_part_max(row, w.L, l, nl));
        for (int l = 0; l < nl; l++) sum += attg_part_sumexp(row, w.L, mx, l, nl);
        if (lse) lse[attg_lse_at(seq_off, p->NH, p->first_only, w.s, w.h, r % p->nqp)] = mx + logf(sum);
        for (int l = 0; l < nl; l++)
            attg_fwd_finish(row, att ? att + w.att : NULL, r16, w.L, p->Tp, mx, 1.0f / sum, &dd,
                            attg_pos(r % p->nqp, w.h), id_of(d, w.s), l, nl);
    }
}

/* With bf16 operands the row steps write Pd and dS as bf16 only: the forward's fp32 scores must come out of the row
 * step unwritten (no write nobody reads), and the fp32 blocks are NaN-poisoned after the row steps, so a GEMM or a
 * later step that read them would fail the comparisons; so are fp32 Pd's padding query rows, which the row step
 * leaves (their context rows are never unpacked). */
static void fwd_rows_bf16_only(void *ctx, float *sc, float *att, float *lse, uint16_t *p16, const size_t *base,
                               const int32_t *seq_off, int bh0, int n, const AttGemmPlan *p, const XrDropout *d) {
    size_t nf = (size_t)n * p->sq;
    float *before = p16 ? xr_malloc(nf * sizeof(float)) : NULL;
    if (before) memcpy(before, sc, nf * sizeof(float));
    fwd_rows(ctx, sc, att, lse, p16, base, seq_off, bh0, n, p, d);
    if (before) {
        TU_CHECK(memcmp(before, sc, nf * sizeof(float)) == 0,
                 "bf16 forward row step wrote the fp32 scores (%zu floats)", nf);
        for (size_t i = 0; i < nf; i++) sc[i] = NAN;
        free(before);
    }
    /* padding query rows: nobody reads their Pd (fp32 here; bf16 ones keep the scratch's poison) */
    for (int r = 0; r < n * p->nqp; r++)
        if (!row_of(base, seq_off, bh0, p, r).real)
            for (int j = 0; j < p->Tp; j++) sc[(size_t)r * p->Tp + j] = NAN;
}

static void c_fwd_rows(void *ctx, float *sc, float *att, uint16_t *p16, const size_t *base, const int32_t *seq_off,
                       int bh0, int n, const AttGemmPlan *p, const XrDropout *d) {
    fwd_rows_bf16_only(ctx, sc, att, NULL, p16, base, seq_off, bh0, n, p, d);
}

static void c_fwd_rows_lse(void *ctx, float *sc, float *lse, uint16_t *p16, const int32_t *seq_off, int bh0, int n,
                           const AttGemmPlan *p, const XrDropout *d) {
    fwd_rows_bf16_only(ctx, sc, NULL, lse, p16, NULL, seq_off, bh0, n, p, d);
}

static void c_bwd_p_lse(void *ctx, float *pr, void *pd, const float *lse, const int32_t *seq_off, int bh0, int n,
                        const AttGemmPlan *p, const XrDropout *d) {
    int nl = ((CpuPrims *)ctx)->lanes;
    AttgDrop dd = attg_drop(d);
    for (int r = 0; r < n * p->nqp; r++) {
        AttgRow w = row_of(NULL, seq_off, bh0, p, r);
        float *row = pr + (size_t)r * p->Tp, *drow = p->bf16 ? NULL : (float *)pd + (size_t)r * p->Tp;
        uint16_t *r16 = p->bf16 ? (uint16_t *)pd + (size_t)r * p->Tp : NULL;
        if (!w.real) {
            for (int j = 0; j < p->Tp; j++) {
                row[j] = 0.0f;
                if (r16)
                    r16[j] = 0;
                else
                    drow[j] = 0.0f;
            }
            continue;
        }
        float l = lse[attg_lse_at(seq_off, p->NH, p->first_only, w.s, w.h, r % p->nqp)];
        for (int k = 0; k < nl; k++)
            attg_lse_p_part(row, drow, r16, w.L, p->Tp, l, &dd, attg_pos(r % p->nqp, w.h), id_of(d, w.s), k, nl);
    }
}

static void c_bwd_pd(void *ctx, void *pd, const float *att, const size_t *base, const int32_t *seq_off, int bh0,
                     int n, const AttGemmPlan *p, const XrDropout *d) {
    int nl = ((CpuPrims *)ctx)->lanes;
    AttgDrop dd = attg_drop(d);
    for (int r = 0; r < n * p->nqp; r++) {
        AttgRow w = row_of(base, seq_off, bh0, p, r);
        float *row = p->bf16 ? NULL : (float *)pd + (size_t)r * p->Tp;
        uint16_t *r16 = p->bf16 ? (uint16_t *)pd + (size_t)r * p->Tp : NULL;
        if (!w.real) {
            if (r16)
                memset(r16, 0, (size_t)p->Tp * 2);
            else
                for (int j = 0; j < p->Tp; j++) row[j] = 0.0f;
            continue;
        }
        for (int l = 0; l < nl; l++)
            attg_pd_part(row, r16, att + w.att, w.L, p->Tp, &dd, attg_pos(r % p->nqp, w.h), id_of(d, w.s), l, nl);
    }
}

/* P from att (base non-NULL) or from the chunk's recomputed rows pr (the lse backward) */
static void bwd_rows(void *ctx, float *g, uint16_t *g16, const float *att, const float *pr, const size_t *base,
                     const int32_t *seq_off, int bh0, int n, const AttGemmPlan *p, const XrDropout *d) {
    int nl = ((CpuPrims *)ctx)->lanes;
    AttgDrop dd = attg_drop(d);
    for (int r = 0; r < n * p->nqp; r++) {
        AttgRow w = row_of(base, seq_off, bh0, p, r);
        float *row = g + (size_t)r * p->Tp;
        uint16_t *r16 = g16 ? g16 + (size_t)r * p->Tp : NULL;
        if (!w.real) {
            if (r16)
                memset(r16, 0, (size_t)p->Tp * 2);
            else
                for (int j = 0; j < p->Tp; j++) row[j] = 0.0f;
            continue;
        }
        const float *P = pr ? pr + (size_t)r * p->Tp : att + w.att;
        float D = 0.0f;
        for (int l = 0; l < nl; l++)
            D += attg_bwd_part_dot(row, P, w.L, &dd, attg_pos(r % p->nqp, w.h), id_of(d, w.s), l, nl);
        for (int l = 0; l < nl; l++) attg_bwd_finish(row, r16, P, w.L, p->Tp, D, l, nl);
    }
}

static void c_bwd_rows(void *ctx, float *g, uint16_t *g16, const float *att, const size_t *base,
                       const int32_t *seq_off, int bh0, int n, const AttGemmPlan *p, const XrDropout *d) {
    bwd_rows(ctx, g, g16, att, NULL, base, seq_off, bh0, n, p, d);
    if (g16) /* dS goes to the GEMMs as bf16 only: the fp32 block is read by nobody */
        for (size_t i = 0; i < (size_t)n * p->sq; i++) g[i] = NAN;
}

static void c_bwd_rows_lse(void *ctx, float *g, uint16_t *g16, const float *pr, const int32_t *seq_off, int bh0,
                           int n, const AttGemmPlan *p, const XrDropout *d) {
    bwd_rows(ctx, g, g16, NULL, pr, NULL, seq_off, bh0, n, p, d);
    if (g16)
        for (size_t i = 0; i < (size_t)n * p->sq; i++) g[i] = NAN;
}

static AttGemmPrims c_prims(CpuPrims *c) {
    AttGemmPrims p = {c, c_scratch, c_gemm, c_bases, c_pack, c_unpack, c_fwd_rows, c_bwd_pd, c_bwd_rows, c_fwd_rows_lse,
                      c_bwd_p_lse, c_bwd_rows_lse};
    return p;
}

/* ---- the checks ---- */

/* Worst |got - want| / max(|want|, rms(want)); NaN on either side is infinitely bad. */
static double rel_worst(const float *got, const float *want, size_t n, size_t *at) {
    double ss = 0, worst = 0;
    for (size_t i = 0; i < n; i++) ss += (double)want[i] * want[i];
    double rms = n ? sqrt(ss / (double)n) : 0;
    *at = 0;
    for (size_t i = 0; i < n; i++) {
        double w = fabs((double)want[i]), sc = w > rms ? w : rms, d = fabs((double)got[i] - (double)want[i]);
        double r = isnan(got[i]) || isnan(want[i]) ? INFINITY : (sc > 0 ? d / sc : d);
        if (r > worst) worst = r, *at = i;
    }
    return worst;
}

static double g_worst[6]; /* out, att, dqkv; the lse ops' out, lse, dqkv */

static void compare(const char *what, int k, const float *got, const float *want, size_t n) {
    size_t at;
    double w = rel_worst(got, want, n, &at);
    if (w > g_worst[k]) g_worst[k] = w;
    TU_CHECK(w <= RTOL, "%s: relative diff %.3g > %.0e at [%zu]: got %.9g want %.9g", what, w, RTOL, at,
             n ? got[at] : 0.0f, n ? want[at] : 0.0f);
}

/* The dropped probabilities the forward left in its scratch (one chunk holding every block): rng.h's mask on the
 * driver's own saved att, bit for bit, and 0 in every padding column of the real query rows. */
static void check_mask(const CpuPrims *c, const AttGemmPlan *p, const float *att, const int32_t *off,
                       const XrDropout *d, const char *name) {
    /* fp32: Pd in place of the scores; bf16 operands: only its bf16 bits (o_p16), the rounding of the same values */
    const float *pd = (const float *)((const char *)c->scr + p->o_sc);
    const uint16_t *pd16 = p->bf16 ? (const uint16_t *)((const char *)c->scr + p->o_p16) : NULL;
    size_t base[16];
    c_bases(NULL, base, off, p->S, p->NH, p->first_only);
    float *want = xr_malloc((size_t)p->Tp * sizeof(float));
    AttgDrop dd = attg_drop(d);
    size_t bad = 0, dropped = 0, kept = 0;
    for (int r = 0; r < (int)p->nb * p->nqp; r++) {
        AttgRow w = row_of(base, off, 0, p, r);
        const float *row = pd + (size_t)r * p->Tp;
        const uint16_t *row16 = pd16 ? pd16 + (size_t)r * p->Tp : NULL;
        for (int j = 0; j < p->Tp; j++) want[j] = 0.0f;
        if (w.real && dd.on)
            rng_dropout_span(want, att + w.att, w.L, dd.key, attg_pos(r % p->nqp, w.h), id_of(d, w.s), dd.thr,
                             dd.scale);
        else if (w.real)
            memcpy(want, att + w.att, (size_t)w.L * sizeof(float));
        if (!w.real) continue; /* padding query rows: not written (their context rows are not unpacked) */
        for (int j = 0; j < p->Tp; j++) {
            bad += row16 ? row16[j] != xr_bf16_bits(want[j]) : memcmp(&row[j], &want[j], sizeof(float)) != 0;
            if (j < w.L) dropped += want[j] == 0.0f, kept += want[j] != 0.0f;
        }
    }
    TU_CHECK(bad == 0, "%s: %zu dropped-probability elements differ from rng.h's mask on att", name, bad);
    if (dd.on && dropped + kept >= 50) /* p 0.2: both happen */
        TU_CHECK(dropped > 0 && kept > 0, "%s: dropout p>0 dropped %zu, kept %zu", name, dropped, kept);
    free(want);
}

/* The driver on packed storage (plan qkv16 / ctx16: ops_act_region's bf16 qkv and context), saved probabilities or
 * (lse 1) log-sum-exps: qkv given as the bf16 bits of the unpacked run's qkv (which its bf16 GEMM operands round to
 * anyway), the context stored as bf16 bits: the context the unpacked run's rounded once, att / lse (sv, against sv_un)
 * and the backward's dqkv (fed bwd_in, as the unpacked run) the same bits. */
static void check_packed(const AttGemmPrims *pr, const AttGemmPlan *pf, const AttGemmPlan *pb, const char *name,
                         int lse, const float *qkv, const float *dout, const float *bwd_in, const int32_t *off,
                         const XrDropout *d, const float *out, const float *sv_un, const float *dqkv, size_t nqkv,
                         size_t nout, size_t nsv) {
    uint16_t *q16 = xr_malloc(nqkv * 2), *o16 = xr_malloc(nout * 2);
    float *sv = xr_malloc(nsv * 4), *dq3 = nans(nqkv);
    size_t H = (size_t)pf->NH * pf->dh, NH = (size_t)pf->NH;
    for (size_t i = 0; i < nqkv; i++) q16[i] = xr_bf16_bits(qkv[i]);
    /* NaN where written; the rows of empty sequences (first_only), which neither run writes, as the unpacked run's */
    for (size_t i = 0; i < nout; i++) o16[i] = pf->first_only && off[i / H + 1] == off[i / H] ? 0 : 0x7fc0u;
    for (size_t i = 0; i < nsv; i++) {
        int keep = lse && pf->first_only && off[i / NH + 1] == off[i / NH];
        uint32_t u = 0x7fc00000u;
        if (keep) sv[i] = sv_un[i];
        else memcpy(&sv[i], &u, 4);
    }
    AttGemmPlan qf = *pf, qb = *pb;
    qf.qkv16 = qf.ctx16 = 1, qb.qkv16 = 1;
    if (lse) {
        attg_forward_lse(pr, &qf, (float *)o16, sv, (const float *)q16, off, d, 0, NULL);
        attg_backward_lse(pr, &qb, dq3, dout, (const float *)q16, bwd_in, off, d);
    } else {
        attg_forward(pr, &qf, (float *)o16, sv, (const float *)q16, off, d, 0, NULL);
        attg_backward(pr, &qb, dq3, dout, (const float *)q16, bwd_in, off, d);
    }
    size_t bo = 0, ba = 0, bq = 0;
    for (size_t i = 0; i < nout; i++) bo += o16[i] != xr_bf16_bits(out[i]);
    for (size_t i = 0; i < nsv; i++) ba += memcmp(&sv[i], &sv_un[i], 4) != 0;
    for (size_t i = 0; i < nqkv; i++) bq += memcmp(&dq3[i], &dqkv[i], 4) != 0;
    TU_CHECK(bo == 0 && ba == 0 && bq == 0, "%s packed: %zu of %zu context words, %zu of %zu %s, %zu of %zu dqkv "
             "differ from the unpacked run", name, bo, nout, ba, nsv, lse ? "lse" : "att", bq, nqkv);
    printf("%s packed: context, %s, dqkv the unpacked run's bits\n", name, lse ? "lse" : "att");
    free(q16), free(o16), free(sv), free(dq3);
}

/* bf16 1: the plan's bf16 operands (bf16 training) against the CPU backend with a working copy registered (its
 * emulation of the same contract) and against att_bf16_ref.h's reference of the contract. */
static void run_case(Backend *be, const int *lens, int S, int NH, int dh, int first_only, float p, int chunk,
                     int lanes, int bf16) {
    int32_t off[17] = {0};
    int max_len = 0;
    for (int s = 0; s < S; s++) off[s + 1] = off[s] + lens[s], max_len = lens[s] > max_len ? lens[s] : max_len;
    int N = off[S], H = NH * dh, nrow = first_only ? S : N;
    size_t natt = 0, nqkv = (size_t)N * 3 * H, nout = (size_t)nrow * H;
    for (int s = 0; s < S; s++) natt += (size_t)(first_only ? (lens[s] > 0) : lens[s]) * lens[s];
    natt *= NH;
    uint64_t ids[16];
    for (int s = 0; s < S; s++) ids[s] = 0x9E3779B97F4A7C15ull * (uint64_t)(s + 11);
    XrDropout d = {p, 0x0F1E2D3C4B5A6978ull, ids};
    float *qkv = urnd(&rng, nqkv, -1.5f, 1.5f), *dout = urnd(&rng, nout, -1, 1);
    float *out = nans(nout), *att = nans(natt), *dqkv = nans(nqkv);
    float *out2 = nans(nout), *att2 = nans(natt), *dqkv2 = nans(nqkv);
    /* the rows of empty sequences (first_only) are written by neither */
    for (int s = 0; s < S; s++)
        if (first_only && lens[s] == 0)
            for (int e = 0; e < H; e++) out[(size_t)s * H + e] = out2[(size_t)s * H + e] = 0.0f;
    float master[4] = {0};
    if (bf16) ops_bf16_weights(be, master, 4);
    ops_attention_train(be, out, att, qkv, off, S, max_len, NH, dh, first_only, &d);
    ops_attention_backward(be, dqkv, dout, qkv, att, off, S, max_len, NH, dh, first_only, &d);
    if (bf16) ops_bf16_weights(be, NULL, 0);

    CpuPrims c = {NULL, 0, 0, 0, lanes, NULL};
    AttGemmPrims pr = c_prims(&c);
    AttGemmPlan pf, pb;
    char err[256], name[160];
    TU_CHECK(attg_plan(&pf, S, max_len, NH, dh, first_only, 0, bf16, chunk, err, sizeof err) == 0, "plan: %s", err);
    TU_CHECK(attg_plan(&pb, S, max_len, NH, dh, first_only, 1, bf16, chunk, err, sizeof err) == 0, "plan: %s", err);
    snprintf(name, sizeof name, "%slens %d.. NH %d dh %d%s p %.1f chunk %d (of %lld) lanes %d", bf16 ? "bf16 " : "",
             lens[0], NH, dh, first_only ? " first" : "", p, pf.chunk, pf.nb, lanes);
    attg_forward(&pr, &pf, out2, att2, qkv, off, &d, 0, NULL);
    int nchunks = (int)((pf.nb + pf.chunk - 1) / pf.chunk);
    TU_CHECK(c.gemms == 2 * nchunks, "%s: %d forward GEMM calls, want %d", name, c.gemms, 2 * nchunks);
    if (pf.chunk == pf.nb) check_mask(&c, &pf, att2, off, &d, name);
    c.gemms = 0;
    attg_backward(&pr, &pb, dqkv2, dout, qkv, att, off, &d);
    TU_CHECK(c.gemms == 4 * nchunks, "%s: %d backward GEMM calls, want %d", name, c.gemms, 4 * nchunks);
    TU_CHECK(c.gemms16 == (bf16 ? 6 * nchunks : 0), "%s: %d GEMM calls with bf16 operands, want %d", name,
             c.gemms16, bf16 ? 6 * nchunks : 0);
    char w[200];
    if (bf16) { /* the probabilities are fp32 from the same bf16 q, k: as the emulation's to RTOL */
        snprintf(w, sizeof w, "%s: att", name), compare(w, 1, att2, att, natt);
        AttRefCase rc = {S, N, max_len, NH, dh, first_only, off, ids, p, d.key};
        att_check(name, &rc, qkv, dout, out2, dqkv2, 1);
        att_check("  the CPU backend's emulation", &rc, qkv, dout, out, dqkv, 1);
        check_packed(&pr, &pf, &pb, name, 0, qkv, dout, att, off, &d, out2, att2, dqkv2, nqkv, nout, natt);
    } else {
        snprintf(w, sizeof w, "%s: out", name), compare(w, 0, out2, out, nout);
        snprintf(w, sizeof w, "%s: att", name), compare(w, 1, att2, att, natt);
        snprintf(w, sizeof w, "%s: dqkv", name), compare(w, 2, dqkv2, dqkv, nqkv);
    }
    free(c.scr);
    free(qkv), free(dout), free(out), free(att), free(dqkv), free(out2), free(att2), free(dqkv2);
}

/* The lse backward's dropped probabilities left in its scratch (one chunk holding every block; fp32 Pd): rng.h's mask
 * on its own recomputed P bit for bit, P and Pd 0 in every padding row and column, P a probability row (its real
 * elements in [0, 1], summing to 1 within 1e-4: lse is the row's log-sum-exp). */
static void check_mask_lse(const CpuPrims *c, const AttGemmPlan *p, const int32_t *off, const XrDropout *d,
                           const char *name) {
    const char *scr = (const char *)c->scr;
    const float *pd = (const float *)(scr + p->o_sc), *P = (const float *)(scr + p->o_pr);
    float *want = xr_malloc((size_t)p->Tp * sizeof(float));
    AttgDrop dd = attg_drop(d);
    size_t bad = 0, pad = 0, badsum = 0, dropped = 0, kept = 0;
    for (int r = 0; r < (int)p->nb * p->nqp; r++) {
        AttgRow w = row_of(NULL, off, 0, p, r);
        const float *row = pd + (size_t)r * p->Tp, *prow = P + (size_t)r * p->Tp;
        int L = w.real ? w.L : 0;
        for (int j = 0; j < p->Tp; j++) want[j] = 0.0f;
        if (dd.on)
            rng_dropout_span(want, prow, L, dd.key, attg_pos(r % p->nqp, w.h), id_of(d, w.s), dd.thr, dd.scale);
        else
            memcpy(want, prow, (size_t)L * sizeof(float));
        double sum = 0;
        for (int j = 0; j < p->Tp; j++) {
            bad += memcmp(&row[j], &want[j], sizeof(float)) != 0;
            if (j >= L) pad += prow[j] != 0.0f || row[j] != 0.0f;
            if (j < L) {
                sum += prow[j], bad += !(prow[j] >= 0.0f && prow[j] <= 1.0f);
                dropped += want[j] == 0.0f, kept += want[j] != 0.0f;
            }
        }
        badsum += L > 0 && !(fabs(sum - 1.0) <= 1e-4);
    }
    TU_CHECK(bad == 0 && pad == 0 && badsum == 0,
             "%s: lse backward's Pd: %zu elements off rng.h's mask on P (or P outside [0, 1]), %zu padding elements "
             "not 0, %zu rows of P not summing to 1",
             name, bad, pad, badsum);
    if (dd.on && dropped + kept >= 50)
        TU_CHECK(dropped > 0 && kept > 0, "%s: dropout p>0 dropped %zu, kept %zu", name, dropped, kept);
    free(want);
}

/* The log-sum-exp ops: the driver (attg_forward_lse, then attg_backward_lse fed its own lse) against the CPU backend's
 * ops_attention_train_lse / ops_attention_backward_lse (bf16: with a working copy registered, and att_bf16_ref.h's
 * reference). */
static void run_case_lse(Backend *be, const int *lens, int S, int NH, int dh, int first_only, float p, int chunk,
                         int lanes, int bf16) {
    int32_t off[17] = {0};
    int max_len = 0;
    for (int s = 0; s < S; s++) off[s + 1] = off[s] + lens[s], max_len = lens[s] > max_len ? lens[s] : max_len;
    int N = off[S], H = NH * dh, nrow = first_only ? S : N;
    size_t nqkv = (size_t)N * 3 * H, nout = (size_t)nrow * H, nlse = (size_t)nrow * NH;
    uint64_t ids[16];
    for (int s = 0; s < S; s++) ids[s] = 0x9E3779B97F4A7C15ull * (uint64_t)(s + 5);
    XrDropout d = {p, 0x1F2E3D4C5B6A7988ull, ids};
    float *qkv = urnd(&rng_lse, nqkv, -1.5f, 1.5f), *dout = urnd(&rng_lse, nout, -1, 1);
    float *out = nans(nout), *lse = nans(nlse), *dqkv = nans(nqkv);
    float *out2 = nans(nout), *lse2 = nans(nlse), *dqkv2 = nans(nqkv);
    /* the rows of empty sequences (first_only) are written by neither: a sentinel that must survive */
    for (int s = 0; s < S; s++)
        if (first_only && lens[s] == 0) {
            for (int e = 0; e < H; e++) out[(size_t)s * H + e] = out2[(size_t)s * H + e] = 0.0f;
            for (int h = 0; h < NH; h++) lse[(size_t)s * NH + h] = lse2[(size_t)s * NH + h] = 42.0f;
        }
    float master[4] = {0};
    if (bf16) ops_bf16_weights(be, master, 4);
    ops_attention_train_lse(be, out, lse, qkv, off, S, max_len, NH, dh, first_only, &d);
    ops_attention_backward_lse(be, dqkv, dout, qkv, lse, off, S, max_len, NH, dh, first_only, &d);
    if (bf16) ops_bf16_weights(be, NULL, 0);

    CpuPrims c = {NULL, 0, 0, 0, lanes, NULL};
    AttGemmPrims pr = c_prims(&c);
    AttGemmPlan pf, pb;
    char err[256], name[160];
    TU_CHECK(attg_plan_lse(&pf, S, max_len, NH, dh, first_only, 0, bf16, chunk, err, sizeof err) == 0, "plan: %s",
             err);
    TU_CHECK(attg_plan_lse(&pb, S, max_len, NH, dh, first_only, 1, bf16, chunk, err, sizeof err) == 0, "plan: %s",
             err);
    TU_CHECK(pb.lse == 1 && pb.o_pr > 0 && pf.o_pr == 0, "lse plans: lse %d, o_pr %zu (backward) %zu (forward)",
             pb.lse, pb.o_pr, pf.o_pr);
    snprintf(name, sizeof name, "lse %slens %d.. NH %d dh %d%s p %.1f chunk %d (of %lld) lanes %d",
             bf16 ? "bf16 " : "", lens[0], NH, dh, first_only ? " first" : "", p, pf.chunk, pf.nb, lanes);
    ScoreCalls *fcalls = xr_calloc(1, sizeof *fcalls), *bcalls = xr_calloc(1, sizeof *bcalls);
    fcalls->keep_out = bcalls->keep_out = 1;
    c.rec = fcalls;
    attg_forward_lse(&pr, &pf, out2, lse2, qkv, off, &d, 0, NULL);
    c.rec = bcalls;
    int nchunks = (int)((pf.nb + pf.chunk - 1) / pf.chunk), nchunks_b = (int)((pb.nb + pb.chunk - 1) / pb.chunk);
    TU_CHECK(c.gemms == 2 * nchunks, "%s: %d forward GEMM calls, want %d", name, c.gemms, 2 * nchunks);
    c.gemms = c.gemms16 = 0;
    attg_backward_lse(&pr, &pb, dqkv2, dout, qkv, lse2, off, &d);
    c.rec = NULL;
    /* the scores recomputed by the forward's calls: the same chunks, arguments, offsets and output bits */
    score_calls_differ(fcalls, bcalls, name);
    score_calls_free(fcalls), score_calls_free(bcalls);
    free(fcalls), free(bcalls);
    /* the scores again, dV, dPd, dQ, dK */
    TU_CHECK(c.gemms == 5 * nchunks_b, "%s: %d backward GEMM calls, want %d", name, c.gemms, 5 * nchunks_b);
    TU_CHECK(c.gemms16 == (bf16 ? c.gemms : 0), "%s: %d of %d backward GEMM calls with bf16 operands", name,
             c.gemms16, c.gemms);
    if (!bf16 && pb.chunk == pb.nb) check_mask_lse(&c, &pb, off, &d, name);
    char w[200];
    snprintf(w, sizeof w, "%s: lse", name), compare(w, 4, lse2, lse, nlse);
    if (bf16) {
        AttRefCase rc = {S, N, max_len, NH, dh, first_only, off, ids, p, d.key};
        att_check(name, &rc, qkv, dout, out2, dqkv2, 1);
        att_check("  the CPU backend's emulation", &rc, qkv, dout, out, dqkv, 1);
        check_packed(&pr, &pf, &pb, name, 1, qkv, dout, lse2, off, &d, out2, lse2, dqkv2, nqkv, nout, nlse);
    } else {
        snprintf(w, sizeof w, "%s: out", name), compare(w, 3, out2, out, nout);
        snprintf(w, sizeof w, "%s: dqkv", name), compare(w, 5, dqkv2, dqkv, nqkv);
    }
    free(c.scr);
    free(qkv), free(dout), free(out), free(lse), free(dqkv), free(out2), free(lse2), free(dqkv2);
}

/* The plan's chunk respects the scratch budget and the batch limit, and a huge shape is refused by name. */
static void check_plan(void) {
    AttGemmPlan p;
    char err[256];
    TU_CHECK(attg_plan(&p, 4096, 512, 16, 64, 0, 1, 0, 0, err, sizeof err) == 0, "plan: %s", err);
    TU_CHECK(p.bytes <= XR_ATTG_SCRATCH_MAX && p.chunk >= 1 && p.chunk < p.nb,
             "plan 4096 x 512 x 16 heads: %zu bytes for a chunk of %d of %lld blocks", p.bytes, p.chunk, p.nb);
    TU_CHECK(p.Tp == 512 && p.nqp == 512, "plan: Tp %d nqp %d", p.Tp, p.nqp);
    TU_CHECK(attg_plan(&p, 16, 513, 16, 64, 1, 0, 0, 0, err, sizeof err) == 0 && p.Tp == 520 && p.nqp == 1 &&
                 p.chunk == 256,
             "plan first_only 16 x 513: Tp %d nqp %d chunk %d", p.Tp, p.nqp, p.chunk);
    TU_CHECK(attg_plan(&p, 0, 5, 2, 4, 0, 0, 0, 0, err, sizeof err) == -1 && strstr(err, "S 0"),
             "plan with S 0 accepted (or unclear: %s)", err);
    TU_CHECK(attg_plan(&p, 2, 1 << 25, 2, 4, 0, 0, 0, 0, err, sizeof err) == -1, "plan with max_len 2^25 accepted");
    /* bf16 operands: the bf16 scratch within the budget too */
    TU_CHECK(attg_plan(&p, 4096, 512, 16, 64, 0, 1, 1, 0, err, sizeof err) == 0 && p.bytes <= XR_ATTG_SCRATCH_MAX &&
                 p.bf16 == 1 && p.o_g16 > 0,
             "bf16 plan 4096 x 512 x 16 heads: %zu bytes, chunk %d", p.bytes, p.chunk);
    /* the lse backward: one more fp32 block per (sequence, head), still within the budget; the forward as attg_plan */
    AttGemmPlan q;
    TU_CHECK(attg_plan(&q, 4096, 512, 16, 64, 0, 1, 0, 0, err, sizeof err) == 0 &&
                 attg_plan_lse(&p, 4096, 512, 16, 64, 0, 1, 0, 0, err, sizeof err) == 0 &&
                 p.bytes <= XR_ATTG_SCRATCH_MAX && p.lse == 1 && p.o_pr > 0 && p.chunk < q.chunk,
             "lse plan 4096 x 512 x 16 heads: %zu bytes, chunk %d (saved-probability plan: %d)", p.bytes, p.chunk,
             q.chunk);
    /* the lse forward: attg_plan's buffers, in the lse backward's smaller chunks */
    AttGemmPlan b;
    TU_CHECK(attg_plan(&q, 64, 512, 16, 64, 0, 0, 1, 0, err, sizeof err) == 0 &&
                 attg_plan_lse(&p, 64, 512, 16, 64, 0, 0, 1, 0, err, sizeof err) == 0 &&
                 attg_plan_lse(&b, 64, 512, 16, 64, 0, 1, 1, 0, err, sizeof err) == 0 && p.chunk == b.chunk &&
                 p.chunk < q.chunk && p.o_pr == 0 && p.o_k - p.o_q == (size_t)p.chunk * p.qblk * 2,
             "lse forward plan: chunk %d (the lse backward's %d, attg_plan's forward %d), o_pr %zu", p.chunk, b.chunk,
             q.chunk, p.o_pr);
}

/* Dry primitives: the driver's calls without arithmetic, the scratch an inaccessible reserved address range, to
 * record the score GEMMs of shapes too large to compute here (the array arguments NULL or dummies: only the primitives
 * read them). */
typedef struct {
    char *base;
    size_t bytes;
    ScoreCalls *rec;
} DryPrims;

static void *d_scratch(void *ctx, size_t bytes) {
    DryPrims *d = ctx;
    TU_CHECK(bytes <= d->bytes, "dry run: %zu bytes of scratch asked, %zu reserved", bytes, d->bytes);
    return d->base;
}
static void d_gemm(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const void *A, int lda, long long sa,
                   const void *B, int ldb, long long sb, float beta, float *C, int ldc, long long sc, int batch,
                   int ab16) {
    DryPrims *d = ctx;
    (void)beta;
    d->rec->scr = d->base;
    score_call(d->rec, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, C, ldc, sc, batch, ab16);
}
static void d_bases(void *ctx, size_t *base, const int32_t *seq_off, int S, int NH, int first_only) {
    (void)ctx, (void)base, (void)seq_off, (void)S, (void)NH, (void)first_only;
}
static void d_pack(void *ctx, void *dst, size_t bs, int rows, const void *src, int src16, int ld, int col0,
                   const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int to16) {
    (void)ctx, (void)dst, (void)bs, (void)rows, (void)src, (void)src16, (void)ld, (void)col0, (void)seq_off;
    (void)bh0, (void)n, (void)NH, (void)dh, (void)row_mode, (void)to16;
}
static void d_unpack(void *ctx, void *dst, int st16, int ld, int col0, const float *src, size_t bs, int src_rows,
                     int max_rows, const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int rnd,
                     void *dst16) {
    (void)ctx, (void)dst, (void)st16, (void)ld, (void)col0, (void)src, (void)bs, (void)src_rows, (void)max_rows;
    (void)seq_off, (void)bh0, (void)n, (void)NH, (void)dh, (void)row_mode, (void)rnd, (void)dst16;
}
static void d_fwd_rows_lse(void *ctx, float *sc, float *lse, uint16_t *p16, const int32_t *seq_off, int bh0, int n,
                           const AttGemmPlan *p, const XrDropout *d) {
    (void)ctx, (void)sc, (void)lse, (void)p16, (void)seq_off, (void)bh0, (void)n, (void)p, (void)d;
}
static void d_bwd_p_lse(void *ctx, float *pr, void *pd, const float *lse, const int32_t *seq_off, int bh0, int n,
                        const AttGemmPlan *p, const XrDropout *d) {
    (void)ctx, (void)pr, (void)pd, (void)lse, (void)seq_off, (void)bh0, (void)n, (void)p, (void)d;
}
static void d_bwd_rows_lse(void *ctx, float *g, uint16_t *g16, const float *pr, const int32_t *seq_off, int bh0,
                           int n, const AttGemmPlan *p, const XrDropout *d) {
    (void)ctx, (void)g, (void)g16, (void)pr, (void)seq_off, (void)bh0, (void)n, (void)p, (void)d;
}

/* The lse backward recomputes the forward's scores by the forward's own GEMM calls, at shapes where the 1 GiB budget
 * binds (the forward alone would fit more blocks a chunk than the backward): the two plans agree (chunk; q, k, v at the
 * same offsets, the backward's P block at the forward's scores), and the driver's recorded score GEMMs of the two
 * calls are the same calls (count, batch counts, shapes, leading dimensions, strides, scratch offsets). */
static void check_lse_chunks(void) {
    static const int shapes[][4] = {{2000, 512, 16, 64}, {1024, 256, 12, 32}, {64, 512, 16, 64}, {9, 133, 3, 7}};
    char err[256];
    size_t reserve = XR_ATTG_SCRATCH_MAX + ((size_t)1 << 20);
    void *base = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    TU_CHECK(base != MAP_FAILED, "mmap of %zu bytes (PROT_NONE) failed", reserve);
    if (base == MAP_FAILED) return;
    ScoreCalls *f = xr_calloc(1, sizeof *f), *b = xr_calloc(1, sizeof *b);
    DryPrims dp = {base, reserve, NULL};
    AttGemmPrims pr = {&dp,    d_scratch, d_gemm,         d_bases,     d_pack,        d_unpack, NULL, NULL, NULL,
                       d_fwd_rows_lse, d_bwd_p_lse, d_bwd_rows_lse};
    int binds = 0;
    float lse[1]; /* never read (the dry row steps), but non-NULL: the lse ops */
    for (int k = 0; k < 4; k++)
        for (int fo = 0; fo < 2; fo++)
            for (int bf16 = 0; bf16 < 2; bf16++) {
                const int *sh = shapes[k];
                AttGemmPlan pf, pb, ps;
                TU_CHECK(attg_plan_lse(&pf, sh[0], sh[1], sh[2], sh[3], fo, 0, bf16, 0, err, sizeof err) == 0 &&
                             attg_plan_lse(&pb, sh[0], sh[1], sh[2], sh[3], fo, 1, bf16, 0, err, sizeof err) == 0 &&
                             attg_plan(&ps, sh[0], sh[1], sh[2], sh[3], fo, 0, bf16, 0, err, sizeof err) == 0,
                         "plan: %s", err);
                char name[128];
                snprintf(name, sizeof name, "lse chunks S %d T %d NH %d dh %d%s%s", sh[0], sh[1], sh[2], sh[3],
                         fo ? " first" : "", bf16 ? " bf16" : "");
                TU_CHECK(pf.chunk == pb.chunk && pf.o_q == pb.o_q && pf.o_k == pb.o_k && pf.o_v == pb.o_v &&
                             pf.o_sc == pb.o_pr && pb.bytes <= XR_ATTG_SCRATCH_MAX,
                         "%s: forward chunk %d q/k/v/scores at %zu/%zu/%zu/%zu, backward chunk %d at %zu/%zu/%zu/%zu",
                         name, pf.chunk, pf.o_q, pf.o_k, pf.o_v, pf.o_sc, pb.chunk, pb.o_q, pb.o_k, pb.o_v, pb.o_pr);
                binds += ps.chunk > pf.chunk; /* the saved-probability forward would take more a chunk */
                f->n = b->n = 0;
                dp.rec = f;
                attg_forward_lse(&pr, &pf, NULL, lse, NULL, NULL, NULL, 0, NULL);
                dp.rec = b;
                attg_backward_lse(&pr, &pb, NULL, NULL, NULL, lse, NULL, NULL);
                int nch = (int)((pf.nb + pf.chunk - 1) / pf.chunk);
                TU_CHECK(f->n == nch, "%s: %d forward score GEMMs, want %d chunks", name, f->n, nch);
                score_calls_differ(f, b, name);
            }
    TU_CHECK(binds >= 4, "only %d of the cases chunk the lse forward below what its own bytes allow", binds);
    munmap(base, reserve);
    free(f), free(b);
}

/* attg_scratch_bytes (ops_attention_scratch's figure on the GPU) is the largest request of any call: the forward's and
 * the backward's plans, all rows and the first row only. At T 512, 16 heads of 64, lse, bf16 operands and 4096
 * sequences the budget binds and the first-row backward's chunk of 2,681 small blocks takes more padded bytes than the
 * all-rows plans (a figure from those alone would be short of what the last layer allocates). */
static void check_scratch_bytes(void) {
    static const int shapes[][4] = {{4096, 512, 16, 64}, {2000, 512, 16, 64}, {16, 512, 16, 64}, {9, 133, 3, 7},
                                    {1024, 256, 12, 32}};
    char err[256];
    int first_bigger = 0;
    for (int k = 0; k < 5; k++)
        for (int lse = 0; lse < 2; lse++)
            for (int bf16 = 0; bf16 < 2; bf16++)
                for (int mc = 0; mc < 2; mc++) {
                    const int *sh = shapes[k];
                    size_t want = 0, all_rows = 0, got = 0;
                    for (int fo = 0; fo < 2; fo++)
                        for (int bw = 0; bw < 2; bw++) {
                            AttGemmPlan p;
                            int rc = lse ? attg_plan_lse(&p, sh[0], sh[1], sh[2], sh[3], fo, bw, bf16, mc ? 5 : 0, err,
                                                         sizeof err)
                                         : attg_plan(&p, sh[0], sh[1], sh[2], sh[3], fo, bw, bf16, mc ? 5 : 0, err,
                                                     sizeof err);
                            TU_CHECK(rc == 0, "plan: %s", err);
                            if (p.bytes > want) want = p.bytes;
                            if (!fo && p.bytes > all_rows) all_rows = p.bytes;
                        }
                    TU_CHECK(attg_scratch_bytes(&got, sh[0], sh[1], sh[2], sh[3], bf16, lse, mc ? 5 : 0, err,
                                                sizeof err) == 0 && got == want,
                             "attg_scratch_bytes S %d T %d NH %d dh %d lse %d bf16 %d chunk cap %d: %zu, the largest "
                             "plan %zu",
                             sh[0], sh[1], sh[2], sh[3], lse, bf16, mc ? 5 : 0, got, want);
                    first_bigger += want > all_rows;
                }
    TU_CHECK(first_bigger > 0, "no shape where a first-row plan exceeds the all-rows plans (the case the figure is for)");
    size_t b;
    TU_CHECK(attg_scratch_bytes(&b, 0, 5, 2, 4, 0, 0, 0, err, sizeof err) == -1 && strstr(err, "S 0"),
             "attg_scratch_bytes with S 0 accepted (or unclear: %s)", err);
}

int main(void) {
    Backend *be = ops_backend_cpu(2);
    static const int lens[] = {1, 5, 0, 13, 8, 9, 17, 47, 133};
    const int S = (int)(sizeof lens / sizeof lens[0]);
    static const int chunks[] = {1, 2, 5, 0};
    for (int first = 0; first < 2; first++)
        for (int pi = 0; pi < 2; pi++)
            for (int ci = 0; ci < 4; ci++) {
                float p = pi ? 0.2f : 0.0f;
                /* the row steps serial, and as a warp's lanes (47 and 133 keys: several rounds of 32 lanes, and of
                 * 32 groups of 4) */
                run_case(be, lens, S, 3, 7, first, p, chunks[ci], ci % 2 ? 32 : 1, 0);
                run_case(be, lens, S, 2, 16, first, p, chunks[ci], ci % 2 ? 1 : 32, 0);
                /* bf16 operands, chunks of 2 and all blocks */
                if (ci % 2) run_case(be, lens, S, 3, 7, first, p, chunks[ci], ci == 1 ? 32 : 1, 1);
                /* the log-sum-exp ops: the same shapes, chunks and lane layouts; bf16 on chunks of 2 and all */
                run_case_lse(be, lens, S, 3, 7, first, p, chunks[ci], ci % 2 ? 1 : 32, 0);
                run_case_lse(be, lens, S, 2, 16, first, p, chunks[ci], ci % 2 ? 32 : 1, 0);
                /* (3 x 7 as run_case's bf16 cases: at 2 x 16 the scores are large enough that flipped Pd roundings
                 * bring even the CPU emulation to 0.096 of att_bf16_ref.h's 0.1 distance criterion) */
                if (ci % 2) run_case_lse(be, lens, S, 3, 7, first, p, chunks[ci], ci == 1 ? 1 : 32, 1);
            }
    /* a single sequence of length 1 (Tp 8: every key but one is padding) */
    static const int one[] = {1};
    run_case(be, one, 1, 2, 5, 0, 0.2f, 0, 32, 0);
    run_case(be, one, 1, 2, 5, 1, 0.0f, 0, 1, 0);
    run_case_lse(be, one, 1, 2, 5, 0, 0.2f, 0, 32, 0);
    run_case_lse(be, one, 1, 2, 5, 1, 0.0f, 0, 1, 0);
    check_plan();
    check_scratch_bytes();
    check_lse_chunks();
    printf("worst relative diff against the CPU backend: out %.3g, att %.3g, dqkv %.3g (tol %.0e)\n", g_worst[0],
           g_worst[1], g_worst[2], RTOL);
    printf("the lse ops: out %.3g, lse %.3g (bf16 cases included), dqkv %.3g (tol %.0e)\n", g_worst[3], g_worst[4],
           g_worst[5], RTOL);
    ops_backend_free(be);
    return tu_finish("test_att_gemm");
}
