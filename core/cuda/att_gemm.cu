/* att_gemm.cu: the CUDA primitives of the GEMM-based training attention (core/att_gemm.h; the driver, plain C, is
 * core/att_gemm.c): strided-batched cuBLAS GEMMs (fp32 operands, or in bf16 training bf16 operands on the tensor
 * cores, CUBLAS_COMPUTE_32F both), and the pack / unpack / row kernels, whose per-row arithmetic is att_gemm.h's
 * (one warp a row); the log-sum-exp ops (attention_train_lse / attention_backward_lse) on the same GEMMs with their
 * own row steps (the forward writes lse, the backward recomputes P from the scores). Chosen over the exact
 * warp-per-row kernels of train_ops.cu by XR_CUDA_TRAIN_ATTENTION=gemm (cuda_ops_train_att_gemm). No atomics;
 * cuBLAS's default algorithm for a given GPU, shape and stream: two runs give the same bits. */
#include "att_gemm.h"
#include "cuda/cuda_internal.cuh"

#define XR_ATTG_ROWS 8 /* row kernels: one warp a row, 8 rows a block */

struct AttgCuda {
    Backend *be;
    cudaStream_t st;
    cublasHandle_t blas;
};

static void *attg_scratch(void *ctx, size_t bytes) {
    /* slot 0: shared with the column sums of other ops (contents are never kept between ops) */
    return cuda_ops_scratch(((AttgCuda *)ctx)->be, 0, bytes);
}

static void attg_gemm(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const void *A, int lda,
                      long long sa, const void *B, int ldb, long long sb, float beta, float *C, int ldc, long long sc,
                      int batch, int ab16) {
    AttgCuda *c = (AttgCuda *)ctx;
    if (m <= 0 || n <= 0 || batch <= 0) return;
    /* fp32 products and sums: CUBLAS_COMPUTE_32F never rounds to TF32 under the backend's math modes (pedantic, or
     * default for its TF32 / BF16 inference modes; TF32 would need CUBLAS_TF32_TENSOR_OP_MATH, never set). bf16
     * operands: exact products, fp32 sums; the pedantic mode of an fp32 backend would keep cuBLAS off the tensor
     * cores, so the default mode for the call, as cuda_ops_gemm_bf16 (it changes no result's definition) */
    cudaDataType_t t = ab16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasMath_t mm = CUBLAS_DEFAULT_MATH;
    if (ab16) {
        XR_BLAS(cublasGetMathMode(c->blas, &mm));
        XR_BLAS(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    }
    XR_BLAS(cublasGemmStridedBatchedEx(c->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                                       &alpha, A, t, lda, sa, B, t, ldb, sb, &beta, C, CUDA_R_32F, ldc, sc, batch,
                                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (ab16) XR_BLAS(cublasSetMathMode(c->blas, mm));
}

__global__ void k_attg_bases(size_t *base, const int32_t *seq_off, int S, int NH, int first_only) {
    size_t acc = 0;
    for (int s = 0; s < S; s++) {
        base[s] = acc * (size_t)NH;
        size_t L = (size_t)(seq_off[s + 1] - seq_off[s]);
        acc += first_only ? (L > 0 ? L : 0) : L * L;
    }
}

static void attg_bases(void *ctx, size_t *base, const int32_t *seq_off, int S, int NH, int first_only) {
    k_attg_bases<<<1, 1, 0, ((AttgCuda *)ctx)->st>>>(base, seq_off, S, NH, first_only);
    XR_LAUNCHED();
}

/* The real rows of sequence s (row_mode) and the packed row of its row i. */
static __device__ __forceinline__ int attg_real_rows(const int32_t *seq_off, int s, int row_mode) {
    int L = seq_off[s + 1] - seq_off[s];
    return row_mode == ATTG_FIRST ? (L > 0 ? 1 : 0) : L;
}
static __device__ __forceinline__ size_t attg_src_row(const int32_t *seq_off, int s, int i, int row_mode) {
    return row_mode == ATTG_FIRST ? (size_t)s : (size_t)seq_off[s] + (size_t)i;
}

/* TS: the source's storage (fp32, or packed bf16 widened exactly as read) */
template <typename TS>
__global__ void k_attg_pack(void *dst, size_t bs, int rows, const TS *src, int ld, int col0,
                            const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int to16) {
    size_t total = (size_t)n * rows * dh;
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < total; x += (size_t)gridDim.x * blockDim.x) {
        int e = (int)(x % dh);
        size_t t = x / dh;
        int i = (int)(t % rows), b = (int)(t / rows), bh = bh0 + b, s = bh / NH, h = bh % NH;
        float v = 0.0f;
        if (i < attg_real_rows(seq_off, s, row_mode))
            v = ld_act(&src[attg_src_row(seq_off, s, i, row_mode) * ld + col0 + (size_t)h * dh + e]);
        size_t o = (size_t)b * bs + (size_t)i * dh + e;
        if (to16)
            ((uint16_t *)dst)[o] = xr_bf16_bits(v);
        else
            ((float *)dst)[o] = v;
    }
}

static void attg_pack(void *ctx, void *dst, size_t bs, int rows, const void *src, int src16, int ld, int col0,
                      const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int to16) {
    unsigned g = blocks_for((size_t)n * rows * dh, 256);
    cudaStream_t st = ((AttgCuda *)ctx)->st;
    if (src16)
        k_attg_pack<<<g, 256, 0, st>>>(dst, bs, rows, (const __nv_bfloat16 *)src, ld, col0, seq_off, bh0, n, NH, dh,
                                       row_mode, to16);
    else
        k_attg_pack<<<g, 256, 0, st>>>(dst, bs, rows, (const float *)src, ld, col0, seq_off, bh0, n, NH, dh, row_mode,
                                       to16);
    XR_LAUNCHED();
}

/* TD: the destination's storage (fp32, or packed bf16 rounded once where stored; dst16 then NULL) */
template <typename TD>
__global__ void k_attg_unpack(TD *dst, int ld, int col0, const float *src, size_t bs, int src_rows, int max_rows,
                              const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int rnd,
                              __nv_bfloat16 *dst16) {
    size_t total = (size_t)n * max_rows * dh;
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < total; x += (size_t)gridDim.x * blockDim.x) {
        int e = (int)(x % dh);
        size_t t = x / dh;
        int i = (int)(t % max_rows), b = (int)(t / max_rows), bh = bh0 + b, s = bh / NH, h = bh % NH;
        if (i >= attg_real_rows(seq_off, s, row_mode)) continue;
        float v = i < src_rows ? act_round(src[(size_t)b * bs + (size_t)i * dh + e], rnd) : 0.0f;
        size_t o = attg_src_row(seq_off, s, i, row_mode) * ld + col0 + (size_t)h * dh + e;
        st_act(&dst[o], v);
        if (dst16) dst16[o] = __float2bfloat16_rn(v);
    }
}

static void attg_unpack(void *ctx, void *dst, int st16, int ld, int col0, const float *src, size_t bs, int src_rows,
                        int max_rows, const int32_t *seq_off, int bh0, int n, int NH, int dh, int row_mode, int rnd,
                        void *dst16) {
    unsigned g = blocks_for((size_t)n * max_rows * dh, 256);
    cudaStream_t st = ((AttgCuda *)ctx)->st;
    if (st16 && dst16) xr_die("att_gemm unpack: a packed destination has no bf16 copy (dst16 must be NULL)");
    if (st16)
        k_attg_unpack<<<g, 256, 0, st>>>((__nv_bfloat16 *)dst, ld, col0, src, bs, src_rows, max_rows, seq_off, bh0, n,
                                         NH, dh, row_mode, rnd, (__nv_bfloat16 *)NULL);
    else
        k_attg_unpack<<<g, 256, 0, st>>>((float *)dst, ld, col0, src, bs, src_rows, max_rows, seq_off, bh0, n, NH, dh,
                                         row_mode, rnd, (__nv_bfloat16 *)dst16);
    XR_LAUNCHED();
}

/* The row kernels: row r of the chunk is query row i = r % nqp of block bh0 + r / nqp. */
struct AttgRowArgs {
    const size_t *base;
    const int32_t *seq_off;
    const uint64_t *ids; /* the sequences' dropout ids, or NULL: sequence s has id s */
    AttgDrop d;
    int bh0, rows, nqp, Tp, NH, first_only;
};

static AttgRowArgs row_args(const size_t *base, const int32_t *seq_off, int bh0, int n, const AttGemmPlan *p,
                            const XrDropout *d) {
    AttgRowArgs a;
    a.base = base, a.seq_off = seq_off, a.d = attg_drop(d), a.ids = a.d.on ? d->seq_ids : NULL;
    a.bh0 = bh0, a.rows = n * p->nqp, a.nqp = p->nqp, a.Tp = p->Tp, a.NH = p->NH, a.first_only = p->first_only;
    return a;
}

static unsigned row_blocks(int rows) { return (unsigned)((rows + XR_ATTG_ROWS - 1) / XR_ATTG_ROWS); }

/* att (the saved probabilities) or lse (each real row's log-sum-exp) or neither */
__global__ void k_attg_fwd_rows(float *sc, float *att, float *lse, uint16_t *p16, AttgRowArgs a) {
    int r = blockIdx.x * XR_ATTG_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= a.rows) return;
    int i = r % a.nqp;
    AttgRow w = attg_row(a.seq_off, a.base, a.NH, a.first_only, a.bh0 + r / a.nqp, i);
    float *row = sc + (size_t)r * a.Tp;
    uint16_t *r16 = p16 ? p16 + (size_t)r * a.Tp : NULL;
    /* a padding query row's Pd only makes the context's padding row, which no unpack reads: not written */
    if (!w.real) return;
    /* two read-only passes (max, sum of exponentials), then the one that writes Pd: the scores are written once in
     * fp32 training and never with bf16 operands */
    float mx = warp_max(attg_part_max(row, w.L, lane, 32));
    float sum = warp_sum(attg_part_sumexp(row, w.L, mx, lane, 32)), inv = 1.0f / sum;
    if (lse && lane == 0) lse[attg_lse_at(a.seq_off, a.NH, a.first_only, w.s, w.h, i)] = mx + logf(sum);
    uint64_t id = a.ids ? a.ids[w.s] : (uint64_t)w.s;
    attg_fwd_finish(row, att ? att + w.att : NULL, r16, w.L, a.Tp, mx, inv, &a.d, attg_pos(i, w.h), id, lane, 32);
}

static void attg_fwd_rows(void *ctx, float *sc, float *att, uint16_t *p16, const size_t *base, const int32_t *seq_off,
                          int bh0, int n, const AttGemmPlan *p, const XrDropout *d) {
    AttgRowArgs a = row_args(base, seq_off, bh0, n, p, d);
    k_attg_fwd_rows<<<row_blocks(a.rows), 32 * XR_ATTG_ROWS, 0, ((AttgCuda *)ctx)->st>>>(sc, att, NULL, p16, a);
    XR_LAUNCHED();
}

static void attg_fwd_rows_lse(void *ctx, float *sc, float *lse, uint16_t *p16, const int32_t *seq_off, int bh0,
                              int n, const AttGemmPlan *p, const XrDropout *d) {
    AttgRowArgs a = row_args(NULL, seq_off, bh0, n, p, d);
    k_attg_fwd_rows<<<row_blocks(a.rows), 32 * XR_ATTG_ROWS, 0, ((AttgCuda *)ctx)->st>>>(sc, NULL, lse, p16, a);
    XR_LAUNCHED();
}

/* The lse backward's P and Pd: pr's scores become P = exp(s - lse) in place; Pd fp32 (pd) or bf16 bits (pd16). */
__global__ void k_attg_bwd_p_lse(float *pr, float *pd, uint16_t *pd16, const float *lse, AttgRowArgs a) {
    int r = blockIdx.x * XR_ATTG_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= a.rows) return;
    int i = r % a.nqp;
    AttgRow w = attg_row(a.seq_off, NULL, a.NH, a.first_only, a.bh0 + r / a.nqp, i);
    float *row = pr + (size_t)r * a.Tp, *drow = pd16 ? NULL : pd + (size_t)r * a.Tp;
    uint16_t *r16 = pd16 ? pd16 + (size_t)r * a.Tp : NULL;
    if (!w.real) {
        for (int j = lane; j < a.Tp; j += 32) {
            row[j] = 0.0f;
            if (r16)
                r16[j] = 0;
            else
                drow[j] = 0.0f;
        }
        return;
    }
    uint64_t id = a.ids ? a.ids[w.s] : (uint64_t)w.s;
    float l = lse[attg_lse_at(a.seq_off, a.NH, a.first_only, w.s, w.h, i)];
    attg_lse_p_part(row, drow, r16, w.L, a.Tp, l, &a.d, attg_pos(i, w.h), id, lane, 32);
}

static void attg_bwd_p_lse(void *ctx, float *pr, void *pd, const float *lse, const int32_t *seq_off, int bh0, int n,
                           const AttGemmPlan *p, const XrDropout *d) {
    AttgRowArgs a = row_args(NULL, seq_off, bh0, n, p, d);
    float *f = p->bf16 ? NULL : (float *)pd;
    uint16_t *h = p->bf16 ? (uint16_t *)pd : NULL;
    k_attg_bwd_p_lse<<<row_blocks(a.rows), 32 * XR_ATTG_ROWS, 0, ((AttgCuda *)ctx)->st>>>(pr, f, h, lse, a);
    XR_LAUNCHED();
}

/* pd fp32, or (pd16 non-NULL) bf16 bits */
__global__ void k_attg_bwd_pd(float *pd, uint16_t *pd16, const float *att, AttgRowArgs a) {
    int r = blockIdx.x * XR_ATTG_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= a.rows) return;
    int i = r % a.nqp;
    AttgRow w = attg_row(a.seq_off, a.base, a.NH, a.first_only, a.bh0 + r / a.nqp, i);
    float *row = pd16 ? NULL : pd + (size_t)r * a.Tp;
    uint16_t *r16 = pd16 ? pd16 + (size_t)r * a.Tp : NULL;
    if (!w.real) {
        for (int j = lane; j < a.Tp; j += 32)
            if (r16)
                r16[j] = 0;
            else
                row[j] = 0.0f;
        return;
    }
    uint64_t id = a.ids ? a.ids[w.s] : (uint64_t)w.s;
    attg_pd_part(row, r16, att + w.att, w.L, a.Tp, &a.d, attg_pos(i, w.h), id, lane, 32);
}

static void attg_bwd_pd(void *ctx, void *pd, const float *att, const size_t *base, const int32_t *seq_off, int bh0,
                        int n, const AttGemmPlan *p, const XrDropout *d) {
    AttgRowArgs a = row_args(base, seq_off, bh0, n, p, d);
    float *f = p->bf16 ? NULL : (float *)pd;
    uint16_t *h = p->bf16 ? (uint16_t *)pd : NULL;
    k_attg_bwd_pd<<<row_blocks(a.rows), 32 * XR_ATTG_ROWS, 0, ((AttgCuda *)ctx)->st>>>(f, h, att, a);
    XR_LAUNCHED();
}

/* P from the saved att, or (pr non-NULL: the lse backward) from the chunk's recomputed rows */
__global__ void k_attg_bwd_rows(float *g, uint16_t *g16, const float *att, const float *pr, AttgRowArgs a) {
    int r = blockIdx.x * XR_ATTG_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= a.rows) return;
    int i = r % a.nqp;
    AttgRow w = attg_row(a.seq_off, a.base, a.NH, a.first_only, a.bh0 + r / a.nqp, i);
    float *row = g + (size_t)r * a.Tp;
    uint16_t *r16 = g16 ? g16 + (size_t)r * a.Tp : NULL;
    if (!w.real) { /* dS's padding row, where the dQ / dK GEMMs read it */
        for (int j = lane; j < a.Tp; j += 32)
            if (r16)
                r16[j] = 0;
            else
                row[j] = 0.0f;
        return;
    }
    uint64_t id = a.ids ? a.ids[w.s] : (uint64_t)w.s;
    const float *P = pr ? pr + (size_t)r * a.Tp : att + w.att;
    float D = warp_sum(attg_bwd_part_dot(row, P, w.L, &a.d, attg_pos(i, w.h), id, lane, 32));
    __syncwarp(); /* the second pass reads the columns other lanes wrote */
    attg_bwd_finish(row, r16, P, w.L, a.Tp, D, lane, 32);
}

static void attg_bwd_rows(void *ctx, float *g, uint16_t *g16, const float *att, const size_t *base,
                          const int32_t *seq_off, int bh0, int n, const AttGemmPlan *p, const XrDropout *d) {
    AttgRowArgs a = row_args(base, seq_off, bh0, n, p, d);
    k_attg_bwd_rows<<<row_blocks(a.rows), 32 * XR_ATTG_ROWS, 0, ((AttgCuda *)ctx)->st>>>(g, g16, att, NULL, a);
    XR_LAUNCHED();
}

static void attg_bwd_rows_lse(void *ctx, float *g, uint16_t *g16, const float *pr, const int32_t *seq_off, int bh0,
                              int n, const AttGemmPlan *p, const XrDropout *d) {
    AttgRowArgs a = row_args(NULL, seq_off, bh0, n, p, d);
    k_attg_bwd_rows<<<row_blocks(a.rows), 32 * XR_ATTG_ROWS, 0, ((AttgCuda *)ctx)->st>>>(g, g16, NULL, pr, a);
    XR_LAUNCHED();
}

static AttGemmPrims cuda_prims(AttgCuda *c, Backend *be) {
    c->be = be;
    c->st = op_stream_in(be); /* inside the op (train_ops.cu's entry counted it) */
    c->blas = cuda_ops_blas(be);
    AttGemmPrims p = {c, attg_scratch, attg_gemm, attg_bases, attg_pack, attg_unpack, attg_fwd_rows, attg_bwd_pd,
                      attg_bwd_rows, attg_fwd_rows_lse, attg_bwd_p_lse, attg_bwd_rows_lse};
    return p;
}

/* cuda_prims on the heap (ops_cuda.h): the table first, so free() of it frees the context too */
struct AttgCudaPrims {
    AttGemmPrims pr;
    AttgCuda c;
};

extern "C" AttGemmPrims *cuda_att_gemm_prims(Backend *be) {
    AttgCudaPrims *x = (AttgCudaPrims *)xr_malloc(sizeof *x);
    x->pr = cuda_prims(&x->c, be);
    return &x->pr;
}

/* The plan of a call: bf16 GEMM operands in bf16 training (a working copy registered: ops_list.h, "training
 * precision"), fp32 otherwise. */
static void plan_or_die(AttGemmPlan *p, Backend *be, int S, int max_len, int NH, int dh, int first_only,
                        int backward, int lse, int qkv16, int ctx16, const char *op) {
    char err[256];
    int bf16 = cuda_ops_bf16_operands(be), ch = cuda_ops_att_chunk(be);
    if (lse ? attg_plan_lse(p, S, max_len, NH, dh, first_only, backward, bf16, ch, err, sizeof err)
            : attg_plan(p, S, max_len, NH, dh, first_only, backward, bf16, ch, err, sizeof err))
        xr_die("cuda_ops_%s: %s", op, err);
    p->qkv16 = qkv16, p->ctx16 = ctx16;
}

void cuda_att_gemm_forward(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                           int max_len, int NH, int dh, int first_only, const XrDropout *d, int rnd,
                           __nv_bfloat16 *out16, int qkv16, int ctx16) {
    AttGemmPlan p;
    plan_or_die(&p, be, S, max_len, NH, dh, first_only, 0, 0, qkv16, ctx16, "attention_train");
    AttgCuda c;
    AttGemmPrims pr = cuda_prims(&c, be);
    attg_forward(&pr, &p, out, att, qkv, seq_off, d, rnd, out16);
}

void cuda_att_gemm_backward(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att,
                            const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                            const XrDropout *d, int qkv16) {
    AttGemmPlan p;
    plan_or_die(&p, be, S, max_len, NH, dh, first_only, 1, 0, qkv16, 0, "attention_backward");
    AttgCuda c;
    AttGemmPrims pr = cuda_prims(&c, be);
    attg_backward(&pr, &p, dqkv, dout, qkv, att, seq_off, d);
}

void cuda_att_gemm_forward_lse(Backend *be, float *out, float *lse, const float *qkv, const int32_t *seq_off, int S,
                               int max_len, int NH, int dh, int first_only, const XrDropout *d, int rnd,
                               __nv_bfloat16 *out16, int qkv16, int ctx16) {
    AttGemmPlan p;
    plan_or_die(&p, be, S, max_len, NH, dh, first_only, 0, 1, qkv16, ctx16, "attention_train_lse");
    AttgCuda c;
    AttGemmPrims pr = cuda_prims(&c, be);
    attg_forward_lse(&pr, &p, out, lse, qkv, seq_off, d, rnd, out16);
}

void cuda_att_gemm_backward_lse(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *lse,
                                const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                                const XrDropout *d, int qkv16) {
    AttGemmPlan p;
    plan_or_die(&p, be, S, max_len, NH, dh, first_only, 1, 1, qkv16, 0, "attention_backward_lse");
    AttgCuda c;
    AttGemmPrims pr = cuda_prims(&c, be);
    attg_backward_lse(&pr, &p, dqkv, dout, qkv, lse, seq_off, d);
}

extern "C" size_t cuda_ops_attention_scratch(Backend *be, int S, int max_len, int NH, int dh, int lse) {
    if (S <= 0 || max_len <= 0 || NH <= 0 || dh <= 0) return 0;
    if (!cuda_ops_train_att_gemm(be)) /* the exact kernels (both kinds): the backward's D_i per (token, head) */
        return (size_t)S * max_len * NH * sizeof(float);
    /* bf16 operands when a working copy is registered (the memory plan is made after encoder_set_precision); lse: the
     * backward's extra P block; every plan a call may make (forward, backward, all rows or the first only) */
    size_t bytes;
    char err[256];
    if (attg_scratch_bytes(&bytes, S, max_len, NH, dh, cuda_ops_bf16_operands(be), lse, cuda_ops_att_chunk(be), err,
                           sizeof err))
        xr_die("cuda_ops_attention_scratch: %s", err);
    return bytes;
}
