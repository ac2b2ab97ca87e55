/* train_ops.cu: the CUDA backend's training ops (core/ops.h, "training"): dropout with the CPU's Philox masks,
 * the backward passes (linear, LayerNorm, GELU, tanh, attention over packed sequences, poolings, L2 norm,
 * embeddings), the fused ones (dropout + residual + LayerNorm forward and backward, bias + GELU backward) and the
 * optimizer arithmetic (zero, scale, sum of squares, AdamW). fp32 storage (forward outputs rounded to bf16
 * values under ops_act_precision(BF16); with a bf16 working copy ops_linear_backward's GEMMs read bf16). Every
 * reduction whose order changes the result runs in an order fixed by this file's constants (never by atomics or the
 * launch configuration), so two runs give the same bits; sums over tokens accumulate in double, as the CPU's do. */
#include <cub/cub.cuh>
#include <math.h>

#include "adamw_step.h"
#include "cuda/cuda_internal.cuh"
#include "cuda/ops_cuda.h"
#include "rng.h"

/* ---------------- dropout (rng.h's mask, drawn on the device) ---------------- */

/* A dropout site as the kernels see it: on = 0 means no dropout (every element kept, scale 1). */
struct DropDev {
    uint64_t key;
    const uint64_t *ids; /* [S] device memory, or NULL: sequence s has id s */
    uint32_t thr;
    float scale;
    int on;
};

static DropDev drop_dev(const XrDropout *d) {
    DropDev r;
    r.on = d && d->p > 0.0f;
    r.key = r.on ? d->key : 0;
    r.ids = r.on ? d->seq_ids : NULL;
    r.thr = r.on ? rng_drop_threshold(d->p) : 0;
    r.scale = r.on ? 1.0f / (1.0f - d->p) : 1.0f; /* the CPU's float expression */
    return r;
}

static __device__ __forceinline__ uint64_t drop_id(const DropDev &d, int s) { return d.ids ? d.ids[s] : (uint64_t)s; }

/* The four draws of elements 4g .. 4g+3 of a mask row at position c1 of sequence `id` (rng_dropout_add_span:
 * element j's draw is word j % 4 of Philox(key, {j / 4, c1, id lo, id hi})). */
static __device__ __forceinline__ void drop_draw4(uint32_t r[4], const DropDev &d, int g, uint32_t c1, uint64_t id) {
    uint32_t ctr[4] = {(uint32_t)g, c1, (uint32_t)id, (uint32_t)(id >> 32)};
    rng_philox(r, ctr, d.key);
}

/* The draw of element j alone. */
static __device__ __forceinline__ uint32_t drop_draw1(const DropDev &d, int j, uint32_t c1, uint64_t id) {
    uint32_t r[4];
    drop_draw4(r, d, j >> 2, c1, id);
    int k = j & 3;
    return k == 0 ? r[0] : k == 1 ? r[1] : k == 2 ? r[2] : r[3];
}

/* Block s: the rows of sequence s (seq_off NULL: row s alone, position 0); a thread takes 4 columns of a row
 * (one Philox call gives their 4 draws). Element-wise, so out may alias x or res. */
template <typename TO, typename TX, typename TR>
__global__ void k_dropout_add(TO *out, const TX *x, const TR *res, const int32_t *seq_off, int H, DropDev d, int rnd) {
    int s = blockIdx.x;
    int r0 = seq_off ? seq_off[s] : s, L = seq_off ? seq_off[s + 1] - r0 : 1;
    uint64_t id = drop_id(d, s);
    int G = (H + 3) / 4;
    long long total = (long long)L * G;
    for (long long e = threadIdx.x; e < total; e += blockDim.x) {
        int t = (int)(e / G), g = (int)(e % G);
        size_t o = (size_t)(r0 + t) * H;
        uint32_t r[4] = {0, 0, 0, 0};
        if (d.on) drop_draw4(r, d, g, (uint32_t)t, id);
        for (int k = 0; k < 4; k++) {
            int j = 4 * g + k;
            if (j >= H) break;
            float xv = ld_act(&x[o + j]);
            float v = d.on ? (r[k] >= d.thr ? __fmul_rn(xv, d.scale) : 0.0f) : xv;
            st_act(&out[o + j], act_round(res ? __fadd_rn(ld_act(&res[o + j]), v) : v, rnd));
        }
    }
}

extern "C" void cuda_ops_dropout_add(Backend *be, float *out, const float *x, const float *res,
                                     const int32_t *seq_off, int S, int H, const XrDropout *d) {
    cudaStream_t st = op_stream(be);
    if (S <= 0 || H <= 0) return;
    DropDev dd = drop_dev(d);
    int rnd = cuda_ops_act_bf16(be);
    if (!dd.on && !res && out == x && !rnd) return; /* bf16 storage: even a no-op stores its output rounded */
    /* each argument fp32 or bf16 by where it lies (packed regions, ops_act_packed_at): the forward's activations may
     * be packed, the backward's gradients never are */
    int po = ops_act_packed_at(be, out), px = ops_act_packed_at(be, x), pr = ops_act_packed_at(be, res);
    typedef __nv_bfloat16 B16;
#define XR_DA(TO, TX, TR) \
    k_dropout_add<TO, TX, TR><<<(unsigned)S, 256, 0, st>>>((TO *)out, (const TX *)x, (const TR *)res, seq_off, H, dd, rnd)
    if (po) {
        if (px) { if (pr) XR_DA(B16, B16, B16); else XR_DA(B16, B16, float); }
        else { if (pr) XR_DA(B16, float, B16); else XR_DA(B16, float, float); }
    } else {
        if (px) { if (pr) XR_DA(float, B16, B16); else XR_DA(float, B16, float); }
        else { if (pr) XR_DA(float, float, B16); else XR_DA(float, float, float); }
    }
#undef XR_DA
    XR_LAUNCHED();
}

/* ---------------- column sums over rows (bias and LayerNorm parameter gradients) ----------------
 * Pass 1: part[b, j] = the sum over the rows of block b (XR_SUM_ROWS rows) of column j, in row order, in double.
 * Pass 2: the blocks' sums in block order, added to the fp32 gradient. The order is set by XR_SUM_ROWS alone. */
#define XR_SUM_ROWS 64
#define XR_SUM_THREADS 256

/* two = 0: part0 = sums of a. two = 1 (LayerNorm): part0 = sums of a * ((x - mean) rstd), part1 = sums of a. */
template <typename TX>
__global__ void k_colsum_part(double *part0, double *part1, const float *a, const TX *x, const float *mean,
                              const float *rstd, int M, int N, int two) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (j >= N) return;
    int i0 = b * XR_SUM_ROWS, i1 = i0 + XR_SUM_ROWS < M ? i0 + XR_SUM_ROWS : M;
    double s0 = 0, s1 = 0;
    for (int i = i0; i < i1; i++) {
        float v = a[(size_t)i * N + j];
        if (two) {
            /* the CPU's float product, accumulated in double */
            float xh = __fmul_rn(__fsub_rn(ld_act(&x[(size_t)i * N + j]), mean[i]), rstd[i]);
            s0 += (double)__fmul_rn(v, xh);
            s1 += (double)v;
        } else {
            s0 += (double)v;
        }
    }
    part0[(size_t)b * N + j] = s0;
    if (two) part1[(size_t)b * N + j] = s1;
}

__global__ void k_colsum_finish(float *out0, float *out1, const double *part0, const double *part1, int nb, int N) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    double s0 = 0, s1 = 0;
    for (int b = 0; b < nb; b++) {
        s0 += part0[(size_t)b * N + j];
        if (out1) s1 += part1[(size_t)b * N + j];
    }
    out0[j] += (float)s0;
    if (out1) out1[j] += (float)s1;
}

/* out0 += column sums of a[M,N] (x NULL), or (LayerNorm, x given) out0 += sums of a xhat, out1 += sums of a. x is
 * fp32 or bf16 by where it lies (a packed region, ops_act_packed_at). */
static void colsums(Backend *be, cudaStream_t st, float *out0, float *out1, const float *a, const float *x,
                    const float *mean, const float *rstd, int M, int N) {
    if (M <= 0 || N <= 0) return;
    int nb = (M + XR_SUM_ROWS - 1) / XR_SUM_ROWS, two = x != NULL;
    if (nb > 65535) xr_die("cuda_ops: %d rows exceed the column-sum grid (%d)", M, 65535 * XR_SUM_ROWS);
    double *part = (double *)cuda_ops_scratch(be, 0, (size_t)nb * N * sizeof(double) * (two ? 2 : 1));
    double *part1 = two ? part + (size_t)nb * N : NULL;
    unsigned gx = (unsigned)((N + XR_SUM_THREADS - 1) / XR_SUM_THREADS);
    if (ops_act_packed_at(be, x))
        k_colsum_part<<<dim3(gx, (unsigned)nb), XR_SUM_THREADS, 0, st>>>(part, part1, a, (const __nv_bfloat16 *)x,
                                                                         mean, rstd, M, N, two);
    else
        k_colsum_part<<<dim3(gx, (unsigned)nb), XR_SUM_THREADS, 0, st>>>(part, part1, a, x, mean, rstd, M, N, two);
    XR_LAUNCHED();
    k_colsum_finish<<<gx, XR_SUM_THREADS, 0, st>>>(out0, two ? out1 : NULL, part, part1, nb, N);
    XR_LAUNCHED();
}

/* ---------------- linear ---------------- */

extern "C" void cuda_ops_linear_backward(Backend *be, float *dx, float *dW, float *db, const float *dy,
                                         const float *x, const float *W, int M, int N, int K, int accumulate_dx) {
    cudaStream_t st = op_stream(be);
    if (M <= 0) return;
    int xpk = ops_act_packed_at(be, x);
    if (xpk && !cuda_ops_bf16_operands(be))
        xr_die("cuda_ops_linear_backward: x (%p) is packed bf16 but no working copy is registered (packed regions are "
               "bf16 training's)", (const void *)x);
    if (const __nv_bfloat16 *wc = cuda_ops_working_weight(be, W)) {
        /* bf16 training, as the CPU emulation (cpu_linear_backward): both products read bf16 operands (dy rounded,
         * W's working copy, x rounded: exact, x holds bf16 values already) with fp32 accumulation into the fp32
         * gradients; the bias sums read the fp32 dy */
        const __nv_bfloat16 *dyb = cuda_ops_bf16_operand(be, dy, (size_t)M * N, 0);
        if (dx) cuda_ops_gemm_bf16(be, 0, 0, M, K, N, 1.0f, dyb, N, wc, K, accumulate_dx ? 1.0f : 0.0f, dx, K);
        if (dW) {
            /* x's copy when the op before wrote one (the GELU recomputed for the FFN's second linear) */
            /* packed: x is the bf16 operand itself, no cast */
            const __nv_bfloat16 *xb = xpk ? (const __nv_bfloat16 *)x : cuda_ops_prev_copy(be, x, (size_t)M * K);
            if (!xb) xb = cuda_ops_bf16_operand(be, x, (size_t)M * K, 1);
            cuda_ops_gemm_bf16(be, 1, 0, N, K, M, 1.0f, dyb, N, xb, K, 1.0f, dW, K);
        }
        if (db) colsums(be, st, db, NULL, dy, NULL, NULL, NULL, M, N);
        return;
    }
    /* cuBLAS GEMMs on the same stream (deterministic for a given GPU and shape) */
    if (dx) cuda_ops_gemm(be, 0, 0, M, K, N, 1.0f, dy, N, W, K, accumulate_dx ? 1.0f : 0.0f, dx, K);
    if (dW) cuda_ops_gemm(be, 1, 0, N, K, M, 1.0f, dy, N, x, K, 1.0f, dW, K);
    if (db) colsums(be, st, db, NULL, dy, NULL, NULL, NULL, M, N);
}

/* ---------------- LayerNorm ---------------- */

#define XR_ROWS_PER_BLOCK 8 /* row kernels: one warp per row */

/* One warp per row: dx = rstd (dy g - mean(dy g) - xhat mean(dy g xhat)). Each lane reads and writes only its
 * own columns after the row's sums, so dx may alias dout. */
template <typename TX>
__global__ void k_layernorm_backward_dx(float *dx, const float *dout, const TX *x, const float *mean,
                                        const float *rstd, const float *g, int n, int H, int accumulate) {
    int row = blockIdx.x * XR_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    size_t off = (size_t)row * H;
    float mu = mean[row], rs = rstd[row], s1 = 0.0f, s2 = 0.0f;
    for (int j = lane; j < H; j += 32) {
        float dg = dout[off + j] * g[j];
        s1 += dg;
        s2 += dg * (ld_act(&x[off + j]) - mu) * rs;
    }
    float a = warp_sum(s1) / (float)H, b = warp_sum(s2) / (float)H;
    for (int j = lane; j < H; j += 32) {
        float v = rs * (dout[off + j] * g[j] - a - (ld_act(&x[off + j]) - mu) * rs * b);
        dx[off + j] = accumulate ? dx[off + j] + v : v;
    }
}

extern "C" void cuda_ops_layernorm_backward(Backend *be, float *dx, float *dg, float *db, const float *dout,
                                            const float *x, const float *mean, const float *rstd, const float *g,
                                            int n, int H, int accumulate) {
    cudaStream_t st = op_stream(be);
    if (n <= 0) return;
    /* the parameter sums first: dx may overwrite dout (stream order) */
    colsums(be, st, dg, db, dout, x, mean, rstd, n, H);
    unsigned grid = (unsigned)((n + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK);
    if (ops_act_packed_at(be, x)) /* the saved LayerNorm input, packed */
        k_layernorm_backward_dx<<<grid, 32 * XR_ROWS_PER_BLOCK, 0, st>>>(dx, dout, (const __nv_bfloat16 *)x, mean, rstd,
                                                                         g, n, H, accumulate);
    else
        k_layernorm_backward_dx<<<grid, 32 * XR_ROWS_PER_BLOCK, 0, st>>>(dx, dout, x, mean, rstd, g, n, H, accumulate);
    XR_LAUNCHED();
}

/* ---------------- element-wise ---------------- */

/* GELU'(v): d/dv [v Phi(v)] = Phi(v) + v phi(v), exact erf (gelu_backward and the fused gelu_bias_backward) */
static __device__ __forceinline__ float gelu_grad(float v) {
    float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
    float pdf = 0.3989422804014327f * expf(-0.5f * v * v);
    return cdf + v * pdf;
}

template <typename TX>
__global__ void k_gelu_backward(float *dx, const TX *x, const float *dy, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = dy[i] * gelu_grad(ld_act(&x[i]));
}

template <typename TY>
__global__ void k_tanh_backward(float *dx, const TY *y, const float *dy, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float yv = ld_act(&y[i]);
        dx[i] = dy[i] * (1.0f - yv * yv);
    }
}

__global__ void k_scale(float *x, size_t n, float alpha) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= alpha;
}

extern "C" void cuda_ops_gelu_backward(Backend *be, float *dx, const float *x, const float *dy, size_t n) {
    cudaStream_t st = op_stream(be);
    if (!n) return;
    if (ops_act_packed_at(be, x)) /* the saved GELU input, packed */
        k_gelu_backward<<<blocks_for(n, 256), 256, 0, st>>>(dx, (const __nv_bfloat16 *)x, dy, n);
    else
        k_gelu_backward<<<blocks_for(n, 256), 256, 0, st>>>(dx, x, dy, n);
    XR_LAUNCHED();
}

extern "C" void cuda_ops_tanh_backward(Backend *be, float *dx, const float *y, const float *dy, size_t n) {
    cudaStream_t st = op_stream(be);
    if (!n) return;
    if (ops_act_packed_at(be, y)) /* the saved tanh output, packed */
        k_tanh_backward<<<blocks_for(n, 256), 256, 0, st>>>(dx, (const __nv_bfloat16 *)y, dy, n);
    else
        k_tanh_backward<<<blocks_for(n, 256), 256, 0, st>>>(dx, y, dy, n);
    XR_LAUNCHED();
}

extern "C" void cuda_ops_zero(Backend *be, float *x, size_t n) {
    cudaStream_t st = op_stream(be);
    if (!n) return;
    XR_CU(cudaMemsetAsync(x, 0, n * sizeof(float), st));
}

extern "C" void cuda_ops_scale(Backend *be, float *x, size_t n, float alpha) {
    cudaStream_t st = op_stream(be);
    if (!n) return;
    k_scale<<<blocks_for(n, 256), 256, 0, st>>>(x, n, alpha);
    XR_LAUNCHED();
}

/* ---------------- pooling and L2 norm ---------------- */

/* Block s adds dout[s] to the first row of sequence s. An empty sequence's row is the next sequence's first row:
 * the block of the next non-empty sequence adds the empty ones' gradients before its own, in sequence order, as
 * the CPU's loop does; trailing empty sequences (no row of the batch) add nothing. */
__global__ void k_pool_first_backward(float *dx, const float *dout, const int32_t *seq_off, int S, int H) {
    int s = blockIdx.x;
    if (seq_off[s + 1] == seq_off[s]) return;
    int r0 = s;
    while (r0 > 0 && seq_off[r0] == seq_off[r0 - 1]) r0--;
    float *row = dx + (size_t)seq_off[s] * H;
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        float acc = row[j];
        for (int r = r0; r <= s; r++) acc += dout[(size_t)r * H + j];
        row[j] = acc;
    }
}

/* Block s: dx[rows of s] += dout[s] / L_s. */
__global__ void k_pool_mean_backward(float *dx, const float *dout, const int32_t *seq_off, int H) {
    int s = blockIdx.x;
    int r0 = seq_off[s], L = seq_off[s + 1] - r0;
    float inv = 1.0f / (float)(L > 0 ? L : 1);
    long long total = (long long)L * H;
    for (long long e = threadIdx.x; e < total; e += blockDim.x) {
        int j = (int)(e % H);
        size_t o = (size_t)r0 * H + (size_t)e;
        dx[o] = __fadd_rn(dx[o], __fmul_rn(dout[(size_t)s * H + j], inv));
    }
}

extern "C" void cuda_ops_pool_first_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S,
                                             int H) {
    cudaStream_t st = op_stream(be);
    if (S <= 0 || H <= 0) return;
    k_pool_first_backward<<<(unsigned)S, 128, 0, st>>>(dx, dout, seq_off, S, H);
    XR_LAUNCHED();
}

extern "C" void cuda_ops_pool_mean_backward(Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S,
                                            int H) {
    cudaStream_t st = op_stream(be);
    if (S <= 0 || H <= 0) return;
    k_pool_mean_backward<<<(unsigned)S, 256, 0, st>>>(dx, dout, seq_off, H);
    XR_LAUNCHED();
}

/* One warp per row: dx = (dy - y (y . dy)) / ||x||, y = x / ||x||; dy * 1e12 where the norm was clamped. Lanes
 * write only their own columns after the row's sums, so dx may alias dy. */
__global__ void k_l2norm_backward(float *dx, const float *dy, const float *x, int n, int H) {
    int row = blockIdx.x * XR_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    size_t off = (size_t)row * H;
    float ss = 0.0f, dot = 0.0f;
    for (int j = lane; j < H; j += 32) {
        float xv = x[off + j];
        ss += xv * xv;
        dot += xv * dy[off + j];
    }
    float nrm = sqrtf(warp_sum(ss));
    dot = warp_sum(dot);
    if (!(nrm > 1e-12f)) {
        for (int j = lane; j < H; j += 32) dx[off + j] = dy[off + j] * 1e12f;
        return;
    }
    float inv = 1.0f / nrm;
    dot *= inv; /* y . dy */
    for (int j = lane; j < H; j += 32) dx[off + j] = (dy[off + j] - x[off + j] * inv * dot) * inv;
}

extern "C" void cuda_ops_l2norm_backward(Backend *be, float *dx, const float *dy, const float *x, int n, int H) {
    cudaStream_t st = op_stream(be);
    cuda_pk_refuse(be, "l2norm_backward", x, NULL, NULL, NULL);
    if (n <= 0) return;
    k_l2norm_backward<<<(n + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK, 32 * XR_ROWS_PER_BLOCK, 0, st>>>(dx, dy, x,
                                                                                                         n, H);
    XR_LAUNCHED();
}

/* ---------------- embedding backward ----------------
 * Tokens are sorted by row id with a stable radix sort (cub), so each id's tokens form a run in token order; the
 * block at the head of a run adds the run's gradient rows to the table row one after another, the very order of
 * the CPU's loop. No atomics, and no two blocks write one row. */

__global__ void k_iota(int32_t *v, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v[i] = i;
}

/* Block p: when sorted position p heads a run of equal ids (key NULL: every token has id 0, one run), adds the
 * run's rows dout[tok[r]] to table[id] in run order. */
__global__ void k_embed_runs(float *table, const float *dout, const int32_t *key, const int32_t *tok, int n, int H) {
    __shared__ int run_end;
    int p = blockIdx.x;
    int id = key ? key[p] : 0;
    if (p > 0 && key && key[p - 1] == id) return;
    if (threadIdx.x == 0) {
        int q = p + 1;
        while (q < n && (!key || key[q] == id)) q++;
        run_end = q;
    }
    __syncthreads();
    int q = run_end;
    float *row = table + (size_t)id * H;
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        float acc = row[j];
        for (int r = p; r < q; r++) acc += dout[(size_t)(tok ? tok[r] : r) * H + j];
        row[j] = acc;
    }
}

static void embed_table_backward(Backend *be, cudaStream_t st, float *table, const float *dout, const int32_t *idx,
                                 int n, int H) {
    if (!idx) {
        /* every token on row 0: one run in token order */
        k_embed_runs<<<1, 256, 0, st>>>(table, dout, NULL, NULL, n, H);
        XR_LAUNCHED();
        return;
    }
    size_t temp = 0;
    XR_CU(cub::DeviceRadixSort::SortPairs(NULL, temp, idx, (int32_t *)NULL, (const int32_t *)NULL, (int32_t *)NULL,
                                          n, 0, 32, st));
    size_t ints = ((size_t)3 * n + 63) / 64 * 64; /* keys out, tokens in, tokens out; temp 256-byte aligned */
    char *buf = (char *)cuda_ops_scratch(be, 1, ints * sizeof(int32_t) + temp);
    int32_t *keys = (int32_t *)buf, *tok_in = keys + n, *tok = tok_in + n;
    void *tmp = buf + ints * sizeof(int32_t);
    k_iota<<<blocks_for((size_t)n, 256), 256, 0, st>>>(tok_in, n);
    XR_LAUNCHED();
    XR_CU(cub::DeviceRadixSort::SortPairs(tmp, temp, idx, keys, tok_in, tok, n, 0, 32, st));
    k_embed_runs<<<(unsigned)n, 256, 0, st>>>(table, dout, keys, tok, n, H);
    XR_LAUNCHED();
}

extern "C" void cuda_ops_embed_backward(Backend *be, float *dword, float *dpos, float *dtype, const float *dout,
                                        const int32_t *ids, const int32_t *pos_ids, const int32_t *types, int n,
                                        int H) {
    cudaStream_t st = op_stream(be);
    if (n <= 0 || H <= 0) return;
    /* the tables one after another on the stream: they share the sort's scratch */
    embed_table_backward(be, st, dword, dout, ids, n, H);
    embed_table_backward(be, st, dpos, dout, pos_ids, n, H);
    if (dtype) embed_table_backward(be, st, dtype, dout, types, n, H);
}

/* ---------------- fused: dropout + residual + LayerNorm (forward, backward), bias + GELU backward ----------------
 * ops_list.h defines each as a sequence of the ops above; here each is one pass over the rows (two kernels where a
 * bias or LayerNorm parameter gradient needs the fixed-order column sums). */

/* The sequence of packed row k: the last s with seq_off[s] <= k (empty sequences own no row), as the CPU's. */
static __device__ __forceinline__ int row_seq_dev(const int32_t *seq_off, int S, int k) {
    int lo = 0, hi = S - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (seq_off[mid] <= k)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* One warp per row. Lane l takes the column groups 4g .. 4g+3, g = l, l + 32, ..., in every pass, so one Philox call
 * gives a group's four draws (rng_dropout_add_span's mask at the row's position), and each lane reads and writes
 * only its own columns: v and out may alias x or res. Two-pass statistics over v, as ops_layernorm. */
template <typename TO, typename TV, typename TX, typename TR>
__global__ void k_dropout_add_layernorm(TO *out, TV *v, float *mean, float *rstd, const TX *x, const TR *res,
                                        const float *g, const float *b, const int32_t *seq_off, int S, int n, int H,
                                        float eps, DropDev d, int rnd, __nv_bfloat16 *out16) {
    int row = blockIdx.x * XR_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    int s = seq_off ? row_seq_dev(seq_off, S, row) : row;
    uint32_t pos = seq_off ? (uint32_t)(row - seq_off[s]) : 0u;
    uint64_t id = drop_id(d, s);
    size_t off = (size_t)row * H;
    float sum = 0.0f;
    for (int q = lane; 4 * q < H; q += 32) {
        uint32_t r[4] = {0, 0, 0, 0};
        if (d.on) drop_draw4(r, d, q, pos, id);
        for (int k = 0; k < 4 && 4 * q + k < H; k++) {
            size_t o = off + 4 * q + k;
            float xv = ld_act(&x[o]);
            float dv = d.on ? (r[k] >= d.thr ? __fmul_rn(xv, d.scale) : 0.0f) : xv;
            /* stored as ops_dropout_add stores it; the statistics read the stored v, as ops_layernorm would */
            st_act(&v[o], act_round(res ? __fadd_rn(ld_act(&res[o]), dv) : dv, rnd));
            sum += ld_act(&v[o]);
        }
    }
    float mu = warp_sum(sum) / (float)H, var = 0.0f;
    for (int q = lane; 4 * q < H; q += 32)
        for (int k = 0; k < 4 && 4 * q + k < H; k++) {
            float dv = ld_act(&v[off + 4 * q + k]) - mu;
            var += dv * dv;
        }
    float rs = 1.0f / sqrtf(warp_sum(var) / (float)H + eps);
    for (int q = lane; 4 * q < H; q += 32)
        for (int k = 0; k < 4 && 4 * q + k < H; k++) {
            int j = 4 * q + k;
            float o = act_round((ld_act(&v[off + j]) - mu) * rs * g[j] + b[j], rnd);
            st_act(&out[off + j], o);
            if (out16) out16[off + j] = __float2bfloat16_rn(o);
        }
    if (lane == 0) mean[row] = mu, rstd[row] = rs;
}

extern "C" void cuda_ops_dropout_add_layernorm(Backend *be, float *out, float *v, float *mean, float *rstd,
                                               const float *x, const float *res, const float *g, const float *b,
                                               const int32_t *seq_off, int S, int n, int H, float eps,
                                               const XrDropout *d) {
    cudaStream_t st = op_stream(be);
    if (!v || !mean || !rstd || v == out)
        xr_die("cuda_ops_dropout_add_layernorm: v, mean and rstd are what the backward reads (given %p, %p, %p; out "
               "%p)", (void *)v, (void *)mean, (void *)rstd, (void *)out);
    if (n <= 0 || H <= 0) return;
    unsigned grid = (unsigned)((n + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK);
    /* training regions: the training step's mix is out and v packed, x (the sublayer's output) fp32, res packed (the
     * layer input, LN1's output) or fp32 (the last layer's pooled residual); other mixes are not built */
    int po = cuda_pk_region(be, out), pv = cuda_pk_region(be, v), px = cuda_pk_region(be, x),
        pr = cuda_pk_region(be, res);
    if (po || pv || px || pr) {
        if (!po || !pv || px) cuda_pk_refuse(be, "dropout_add_layernorm (mixed widths)", out, v, x, res);
        typedef __nv_bfloat16 B16;
        if (pr) /* the packed output is itself the next GEMM's operand: no copy */
            k_dropout_add_layernorm<<<grid, 32 * XR_ROWS_PER_BLOCK, 0, st>>>(
                (B16 *)out, (B16 *)v, mean, rstd, x, (const B16 *)res, g, b, seq_off, S, n, H, eps, drop_dev(d),
                cuda_ops_act_bf16(be), (B16 *)NULL);
        else
            k_dropout_add_layernorm<<<grid, 32 * XR_ROWS_PER_BLOCK, 0, st>>>((B16 *)out, (B16 *)v, mean, rstd, x,
                                                                             res, g, b, seq_off, S, n, H, eps,
                                                                             drop_dev(d), cuda_ops_act_bf16(be),
                                                                             (B16 *)NULL);
        XR_LAUNCHED();
        return;
    }
    __nv_bfloat16 *out16 = cuda_ops_next_copy(be, (size_t)n * H); /* the next layer's (or the FFN's) GEMM reads out */
    k_dropout_add_layernorm<<<grid, 32 * XR_ROWS_PER_BLOCK, 0, st>>>(out, v, mean, rstd, x, res, g, b, seq_off, S, n,
                                                                     H, eps, drop_dev(d), cuda_ops_act_bf16(be), out16);
    XR_LAUNCHED();
    if (out16) cuda_ops_next_copy_written(be, out, (size_t)n * H, 0);
}

/* One warp per row, the column groups of k_dropout_add_layernorm: dres = rstd (dout g - mean(dout g) - vhat
 * mean(dout g vhat)), vhat = (v - mean) rstd, and dx = dropout(dres) with the row's mask, in the same pass. Each lane
 * reads a column's dout before writing its dres: dres may alias dout. */
template <typename TV>
__global__ void k_dropout_add_layernorm_backward(float *dres, float *dx, const float *dout, const TV *v,
                                                 const float *mean, const float *rstd, const float *g,
                                                 const int32_t *seq_off, int S, int n, int H, DropDev d) {
    int row = blockIdx.x * XR_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    int s = seq_off ? row_seq_dev(seq_off, S, row) : row;
    uint32_t pos = seq_off ? (uint32_t)(row - seq_off[s]) : 0u;
    uint64_t id = drop_id(d, s);
    size_t off = (size_t)row * H;
    float mu = mean[row], rs = rstd[row], s1 = 0.0f, s2 = 0.0f;
    for (int q = lane; 4 * q < H; q += 32)
        for (int k = 0; k < 4 && 4 * q + k < H; k++) {
            int j = 4 * q + k;
            float dg = dout[off + j] * g[j];
            s1 += dg;
            s2 += dg * (ld_act(&v[off + j]) - mu) * rs;
        }
    float a = warp_sum(s1) / (float)H, c = warp_sum(s2) / (float)H;
    for (int q = lane; 4 * q < H; q += 32) {
        uint32_t r[4] = {0, 0, 0, 0};
        if (d.on) drop_draw4(r, d, q, pos, id);
        for (int k = 0; k < 4 && 4 * q + k < H; k++) {
            int j = 4 * q + k;
            float gv = rs * (dout[off + j] * g[j] - a - (ld_act(&v[off + j]) - mu) * rs * c);
            dres[off + j] = gv;
            dx[off + j] = d.on ? (r[k] >= d.thr ? __fmul_rn(gv, d.scale) : 0.0f) : gv;
        }
    }
}

extern "C" void cuda_ops_dropout_add_layernorm_backward(Backend *be, float *dres, float *dx, float *dg, float *db,
                                                        const float *dout, const float *v, const float *mean,
                                                        const float *rstd, const float *g, const int32_t *seq_off,
                                                        int S, int n, int H, const XrDropout *d) {
    cudaStream_t st = op_stream(be);
    if (n <= 0 || H <= 0) return;
    /* the parameter sums first: dres may overwrite dout (stream order) */
    colsums(be, st, dg, db, dout, v, mean, rstd, n, H);
    unsigned grid = (unsigned)((n + XR_ROWS_PER_BLOCK - 1) / XR_ROWS_PER_BLOCK);
    if (ops_act_packed_at(be, v)) /* the saved LayerNorm input, packed */
        k_dropout_add_layernorm_backward<<<grid, 32 * XR_ROWS_PER_BLOCK, 0, st>>>(
            dres, dx, dout, (const __nv_bfloat16 *)v, mean, rstd, g, seq_off, S, n, H, drop_dev(d));
    else
        k_dropout_add_layernorm_backward<<<grid, 32 * XR_ROWS_PER_BLOCK, 0, st>>>(dres, dx, dout, v, mean, rstd, g,
                                                                                  seq_off, S, n, H, drop_dev(d));
    XR_LAUNCHED();
}

/* Block (column tile, row block b): dx = dy GELU'(x) for the XR_SUM_ROWS rows of block b, and (part non-NULL) their
 * column sums in row order in double, as k_colsum_part's: the same order as ops_linear_backward's bias sums. dx may
 * alias dy (each element is read, then written, by one thread). */
template <typename TX>
__global__ void k_gelu_bias_backward(float *dx, double *part, const TX *x, const float *dy, int M, int N) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (j >= N) return;
    int i0 = b * XR_SUM_ROWS, i1 = i0 + XR_SUM_ROWS < M ? i0 + XR_SUM_ROWS : M;
    double s = 0;
    for (int i = i0; i < i1; i++) {
        size_t o = (size_t)i * N + j;
        float gv = dy[o] * gelu_grad(ld_act(&x[o]));
        dx[o] = gv;
        s += (double)gv;
    }
    if (part) part[(size_t)b * N + j] = s;
}

extern "C" void cuda_ops_gelu_bias_backward(Backend *be, float *dx, float *db, const float *x, const float *dy, int M,
                                            int N) {
    cudaStream_t st = op_stream(be);
    if (M <= 0 || N <= 0) return;
    int nb = (M + XR_SUM_ROWS - 1) / XR_SUM_ROWS;
    if (nb > 65535) xr_die("cuda_ops: %d rows exceed the column-sum grid (%d)", M, 65535 * XR_SUM_ROWS);
    double *part = db ? (double *)cuda_ops_scratch(be, 0, (size_t)nb * N * sizeof(double)) : NULL;
    unsigned gx = (unsigned)((N + XR_SUM_THREADS - 1) / XR_SUM_THREADS);
    if (ops_act_packed_at(be, x)) /* the saved GELU input (f), packed */
        k_gelu_bias_backward<<<dim3(gx, (unsigned)nb), XR_SUM_THREADS, 0, st>>>(dx, part, (const __nv_bfloat16 *)x, dy,
                                                                                M, N);
    else
        k_gelu_bias_backward<<<dim3(gx, (unsigned)nb), XR_SUM_THREADS, 0, st>>>(dx, part, x, dy, M, N);
    XR_LAUNCHED();
    if (!db) return;
    k_colsum_finish<<<gx, XR_SUM_THREADS, 0, st>>>(db, NULL, part, NULL, nb, N);
    XR_LAUNCHED();
}

/* ---------------- sum of squares and AdamW ---------------- */

#define XR_SSQ_CHUNK 16384  /* elements per partial sum */
#define XR_SSQ_THREADS 256  /* fixes the order inside a chunk: strided sums, then a fixed tree */

static __device__ double block_sum_fixed(double v) {
    __shared__ double sh[XR_SSQ_THREADS];
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = XR_SSQ_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    return sh[0];
}

__global__ void k_ssq_chunks(double *part, const float *x, size_t n) {
    size_t lo = (size_t)blockIdx.x * XR_SSQ_CHUNK, hi = lo + XR_SSQ_CHUNK < n ? lo + XR_SSQ_CHUNK : n;
    double acc = 0;
    for (size_t i = lo + threadIdx.x; i < hi; i += XR_SSQ_THREADS) acc += (double)x[i] * (double)x[i];
    double s = block_sum_fixed(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void k_ssq_finish(double *out, const double *part, size_t nc) {
    double acc = 0;
    for (size_t c = threadIdx.x; c < nc; c += XR_SSQ_THREADS) acc += part[c];
    double s = block_sum_fixed(acc);
    if (threadIdx.x == 0) out[0] = s;
}

extern "C" double cuda_ops_sum_squares(Backend *be, const float *x, size_t n) {
    cudaStream_t st = op_stream(be);
    if (n == 0) return 0;
    size_t nc = (n + XR_SSQ_CHUNK - 1) / XR_SSQ_CHUNK;
    if (nc > 0x7fffffffu) xr_die("cuda_ops_sum_squares: %zu elements are too many", n);
    double *part = (double *)cuda_ops_scratch(be, 2, (nc + 1) * sizeof(double));
    k_ssq_chunks<<<(unsigned)nc, XR_SSQ_THREADS, 0, st>>>(part + 1, x, n);
    XR_LAUNCHED();
    k_ssq_finish<<<1, XR_SSQ_THREADS, 0, st>>>(part, part + 1, nc);
    XR_LAUNCHED();
    double r = 0;
    XR_CU(cudaMemcpyAsync(&r, part, sizeof r, cudaMemcpyDeviceToHost, st));
    XR_CU(cudaStreamSynchronize(st));
    return r;
}

__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, XrAdamScalars a) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        adamw_element(p + i, m + i, v + i, g[i], a);
}

extern "C" void cuda_ops_adamw(Backend *be, float *p, const float *g, float *m, float *v, size_t n, double lr,
                               double beta1, double beta2, double eps, double wd, int64_t step) {
    cudaStream_t st = op_stream(be);
    if (!n) return;
    XrAdamScalars a = adamw_scalars(lr, beta1, beta2, eps, wd, step); /* the CPU's scalars, in double */
    k_adamw<<<blocks_for(n, 256), 256, 0, st>>>(p, g, m, v, n, a);
    XR_LAUNCHED();
}

/* ---------------- attention for training over packed sequences ----------------
 * Block (s*NH + h, y), warp w: one row of sequence s, head h (a query row in the forward and in the backward's
 * first pass, a key row in its second), row = y*XR_ATT_TRAIN_WARPS + w. Exact fp32 softmax; dropout on the
 * probabilities with the mask position query row | head << 16 (ops.h). opb 1 (bf16 training: a working copy
 * registered): the products' operands q, k, v, Pd, dO and dS are rounded to bf16 as they are read or formed
 * (ops_list.h, "training precision"), sums and P / D / the fp32 dS staying fp32, as the CPU emulation. */
#define XR_ATT_TRAIN_WARPS 4
#define XR_ATT_SHMEM_MAX (200 * 1024)

/* NH * sum_{r<s} nq_r L_r: where sequence s's saved probabilities start (nq = L, or 1 with first_only). All 32
 * lanes of the warp must call it. */
static __device__ size_t att_base(const int32_t *seq_off, int s, int NH, int first_only, int lane) {
    size_t before = 0;
    for (int r = lane; r < s; r += 32) {
        size_t lr = (size_t)(seq_off[r + 1] - seq_off[r]);
        before += first_only ? lr : lr * lr;
    }
    for (int o = 16; o > 0; o >>= 1) before += __shfl_xor_sync(0xffffffffu, before, o);
    return before * (size_t)NH;
}

/* Forward: P = softmax(q k^T scale) saved in att (before dropout), ctx = dropout(P) v. Shared memory per warp:
 * max_len scores, then dh floats of q. */
template <typename TQ, typename TO>
__global__ void k_attention_train(TO *out, float *att, const TQ *qkv, const int32_t *seq_off, int NH, int dh,
                                  int first_only, int max_len, float scale, DropDev d, int rnd, int opb,
                                  __nv_bfloat16 *out16) {
    extern __shared__ float sh[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int s = blockIdx.x / NH, h = blockIdx.x % NH;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0, nq = first_only ? 1 : L;
    int i = blockIdx.y * XR_ATT_TRAIN_WARPS + warp;
    if (i >= nq || i >= L) return;
    float *sc = sh + (size_t)warp * (max_len + dh), *qs = sc + max_len;
    size_t ld = (size_t)3 * NH * dh, HD = (size_t)NH * dh;
    const TQ *q = qkv + (size_t)(b0 + i) * ld + (size_t)h * dh;
    const TQ *k0 = qkv + (size_t)b0 * ld + HD + (size_t)h * dh, *v0 = k0 + HD;
    for (int e = lane; e < dh; e += 32) qs[e] = act_round(ld_act(&q[e]), opb);
    __syncwarp();
    float mx = -INFINITY;
    for (int j = lane; j < L; j += 32) {
        const TQ *k = k0 + (size_t)j * ld;
        float dot = 0.0f;
        for (int e = 0; e < dh; e++) dot += qs[e] * act_round(ld_act(&k[e]), opb);
        dot *= scale;
        sc[j] = dot;
        mx = fmaxf(mx, dot);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < L; j += 32) {
        float e = expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    float inv = 1.0f / warp_sum(sum);
    size_t base = att_base(seq_off, s, NH, first_only, lane);
    float *a = att ? att + base + ((size_t)h * nq + i) * L : NULL;
    for (int j = lane; j < L; j += 32) {
        float pj = sc[j] * inv;
        sc[j] = pj;
        if (a) a[j] = pj;
    }
    __syncwarp();
    if (d.on) {
        uint64_t id = drop_id(d, s);
        uint32_t c1 = (uint32_t)i | ((uint32_t)h << 16);
        for (int g = lane; 4 * g < L; g += 32) {
            uint32_t r[4];
            drop_draw4(r, d, g, c1, id);
            for (int k = 0; k < 4 && 4 * g + k < L; k++) {
                int j = 4 * g + k;
                sc[j] = r[k] >= d.thr ? __fmul_rn(sc[j], d.scale) : 0.0f;
            }
        }
        __syncwarp();
    }
    if (opb) { /* Pd rounded as the operand of Pd v (att / lse keep P in fp32) */
        for (int j = lane; j < L; j += 32) sc[j] = act_round(sc[j], 1);
        __syncwarp();
    }
    size_t o = (size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh;
    for (int e = lane; e < dh; e += 32) {
        float acc = 0.0f;
        for (int j = 0; j < L; j++) acc += sc[j] * act_round(ld_act(&v0[(size_t)j * ld + e]), opb);
        float c = act_round(acc, rnd); /* the context in the activations' storage; att / lse stay fp32 */
        st_act(&out[o + e], c);
        if (out16) out16[o + e] = __float2bfloat16_rn(c);
    }
}

/* Backward, first pass (query row i < nq): dp_j = M_ij ds (dO_i . v_j) with the dropout mask M and scale ds;
 * D_i = sum_j P_ij dp_j; dS_ij = P_ij (dp_j - D_i); dq_i = scale sum_j dS_ij k_j (overwrite). D_i goes to
 * rowd[(b0 + i) * NH + h] for the second pass. Shared memory per warp: max_len floats of dp / dS, dh of dO_i. */
template <typename TQ>
__global__ void k_attention_bwd_rows(float *dqkv, float *rowd, const float *dout, const TQ *qkv, const float *att,
                                     const int32_t *seq_off, int NH, int dh, int first_only, int max_len,
                                     float scale, DropDev d, int opb) {
    extern __shared__ float sh[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int s = blockIdx.x / NH, h = blockIdx.x % NH;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0, nq = first_only ? 1 : L;
    int i = blockIdx.y * XR_ATT_TRAIN_WARPS + warp;
    if (i >= nq || i >= L) return;
    float *dp = sh + (size_t)warp * (max_len + dh), *os = dp + max_len;
    size_t ld = (size_t)3 * NH * dh, HD = (size_t)NH * dh;
    const TQ *k0 = qkv + (size_t)b0 * ld + HD + (size_t)h * dh, *v0 = k0 + HD;
    const float *dO = dout + (size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh;
    for (int e = lane; e < dh; e += 32) os[e] = act_round(dO[e], opb);
    __syncwarp();
    const float *P = att + att_base(seq_off, s, NH, first_only, lane) + ((size_t)h * nq + i) * L;
    uint64_t id = drop_id(d, s);
    uint32_t c1 = (uint32_t)i | ((uint32_t)h << 16);
    for (int g = lane; 4 * g < L; g += 32) {
        uint32_t r[4] = {0, 0, 0, 0};
        if (d.on) drop_draw4(r, d, g, c1, id);
        for (int k = 0; k < 4 && 4 * g + k < L; k++) {
            int j = 4 * g + k;
            const TQ *v = v0 + (size_t)j * ld;
            float dot = 0.0f;
            for (int e = 0; e < dh; e++) dot += os[e] * act_round(ld_act(&v[e]), opb);
            dp[j] = d.on ? (r[k] >= d.thr ? __fmul_rn(dot, d.scale) : 0.0f) : dot;
        }
    }
    __syncwarp();
    float D = 0.0f;
    for (int j = lane; j < L; j += 32) D += P[j] * dp[j];
    D = warp_sum(D);
    for (int j = lane; j < L; j += 32) dp[j] = act_round(P[j] * (dp[j] - D), opb); /* dS: fp32, then the operand */
    __syncwarp();
    if (lane == 0) rowd[(size_t)(b0 + i) * NH + h] = D;
    float *dq = dqkv + (size_t)(b0 + i) * ld + (size_t)h * dh;
    for (int e = lane; e < dh; e += 32) {
        float acc = 0.0f;
        for (int j = 0; j < L; j++) acc += dp[j] * act_round(ld_act(&k0[(size_t)j * ld + e]), opb);
        dq[e] = acc * scale;
    }
}

/* Backward, second pass (key row j < L): dv_j = sum_i Pd_ij dO_i and dk_j = scale sum_i dS_ij q_i over the
 * query rows i < nq in row order, Pd = M ds P and dS recomputed as in the first pass from its D_i (overwrite).
 * With first_only the query part of rows j >= 1 is zeroed (they were no queries). Shared memory per warp:
 * max_len floats of Pd, max_len of dS, dh of v_j. */
template <typename TQ>
__global__ void k_attention_bwd_keys(float *dqkv, const float *rowd, const float *dout, const TQ *qkv,
                                     const float *att, const int32_t *seq_off, int NH, int dh, int first_only,
                                     int max_len, float scale, DropDev d, int opb) {
    extern __shared__ float sh[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int s = blockIdx.x / NH, h = blockIdx.x % NH;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0, nq = first_only ? 1 : L;
    int j = blockIdx.y * XR_ATT_TRAIN_WARPS + warp;
    if (j >= L) return;
    float *pd = sh + (size_t)warp * (2 * max_len + dh), *ds = pd + max_len, *vs = ds + max_len;
    size_t ld = (size_t)3 * NH * dh, HD = (size_t)NH * dh;
    const TQ *q0 = qkv + (size_t)b0 * ld + (size_t)h * dh;
    const TQ *v = q0 + 2 * HD + (size_t)j * ld;
    for (int e = lane; e < dh; e += 32) vs[e] = act_round(ld_act(&v[e]), opb);
    __syncwarp();
    const float *P = att + att_base(seq_off, s, NH, first_only, lane) + (size_t)h * nq * L;
    uint64_t id = drop_id(d, s);
    for (int i = lane; i < nq; i += 32) {
        const float *dO = dout + (size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh;
        float dot = 0.0f;
        for (int e = 0; e < dh; e++) dot += act_round(dO[e], opb) * vs[e];
        float p = P[(size_t)i * L + j];
        int keep = !d.on || drop_draw1(d, j, (uint32_t)i | ((uint32_t)h << 16), id) >= d.thr;
        float dpv = d.on ? (keep ? __fmul_rn(dot, d.scale) : 0.0f) : dot;
        pd[i] = act_round(d.on ? (keep ? __fmul_rn(p, d.scale) : 0.0f) : p, opb);
        ds[i] = act_round(p * (dpv - rowd[(size_t)(b0 + i) * NH + h]), opb);
    }
    __syncwarp();
    float *dk = dqkv + (size_t)(b0 + j) * ld + HD + (size_t)h * dh, *dv = dk + HD;
    for (int e = lane; e < dh; e += 32) {
        float av = 0.0f, ak = 0.0f;
        for (int i = 0; i < nq; i++) {
            av += pd[i] * act_round(dout[(size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh + e], opb);
            ak += ds[i] * act_round(ld_act(&q0[(size_t)i * ld + e]), opb);
        }
        dv[e] = av;
        dk[e] = ak * scale;
    }
    if (first_only && j >= 1)
        for (int e = lane; e < dh; e += 32) dqkv[(size_t)(b0 + j) * ld + (size_t)h * dh + e] = 0.0f;
}

/* Dynamic shared memory of a kernel above; opts in past 48 KiB, dies past what the GPU allows. */
static size_t att_shmem(const void *kernel, size_t per_warp_floats, int max_len, const char *op) {
    size_t bytes = (size_t)XR_ATT_TRAIN_WARPS * per_warp_floats * sizeof(float);
    if (bytes > XR_ATT_SHMEM_MAX)
        xr_die("cuda_ops_%s: max_len %d too long for the shared-memory rows (%zu bytes)", op, max_len, bytes);
    if (bytes > 48 * 1024)
        XR_CU(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return bytes;
}

static void att_check(const XrDropout *d, int S, int max_len, int NH, const char *op) {
    /* the mask position packs the query row and the head in 16 bits each, as the CPU */
    if (d && d->p > 0.0f && (max_len > 65536 || NH > 65536))
        xr_die("cuda_ops_%s: dropout with %d tokens or %d heads exceeds 65536", op, max_len, NH);
    if ((long long)S * NH > 0x7fffffffLL) xr_die("cuda_ops_%s: %d sequences x %d heads is too many", op, S, NH);
    if ((max_len + XR_ATT_TRAIN_WARPS - 1) / XR_ATT_TRAIN_WARPS > 65535)
        xr_die("cuda_ops_%s: max_len %d is too long", op, max_len);
}

/* ---------------- attention for training without the probability matrix (log-sum-exp saved) ----------------
 * The kernels above with att replaced by lse [nq rows, NH]: the forward writes each (query row, head)'s
 * lse = max + log(sum) instead of the probabilities, and both backward passes recompute P_ij = exp(s_ij - lse_i)
 * from q, k and lse. The same warp-per-row layout, the same fixed summation orders, no atomics: reruns are
 * bit-identical. lse row of query i of sequence s: first_only ? s : b0 + i. */

template <typename TQ, typename TO>
__global__ void k_attention_train_lse(TO *out, float *lse, const TQ *qkv, const int32_t *seq_off, int NH,
                                      int dh, int first_only, int max_len, float scale, DropDev d, int rnd,
                                      int opb, __nv_bfloat16 *out16) {
    extern __shared__ float sh[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int s = blockIdx.x / NH, h = blockIdx.x % NH;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0, nq = first_only ? 1 : L;
    int i = blockIdx.y * XR_ATT_TRAIN_WARPS + warp;
    if (i >= nq || i >= L) return;
    float *sc = sh + (size_t)warp * (max_len + dh), *qs = sc + max_len;
    size_t ld = (size_t)3 * NH * dh, HD = (size_t)NH * dh;
    const TQ *q = qkv + (size_t)(b0 + i) * ld + (size_t)h * dh;
    const TQ *k0 = qkv + (size_t)b0 * ld + HD + (size_t)h * dh, *v0 = k0 + HD;
    for (int e = lane; e < dh; e += 32) qs[e] = act_round(ld_act(&q[e]), opb);
    __syncwarp();
    float mx = -INFINITY;
    for (int j = lane; j < L; j += 32) {
        const TQ *k = k0 + (size_t)j * ld;
        float dot = 0.0f;
        for (int e = 0; e < dh; e++) dot += qs[e] * act_round(ld_act(&k[e]), opb);
        dot *= scale;
        sc[j] = dot;
        mx = fmaxf(mx, dot);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < L; j += 32) {
        float e = expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    float inv = 1.0f / sum;
    if (lane == 0) lse[(size_t)(first_only ? s : b0 + i) * NH + h] = mx + logf(sum);
    for (int j = lane; j < L; j += 32) sc[j] *= inv;
    __syncwarp();
    if (d.on) {
        uint64_t id = drop_id(d, s);
        uint32_t c1 = (uint32_t)i | ((uint32_t)h << 16);
        for (int g = lane; 4 * g < L; g += 32) {
            uint32_t r[4];
            drop_draw4(r, d, g, c1, id);
            for (int k = 0; k < 4 && 4 * g + k < L; k++) {
                int j = 4 * g + k;
                sc[j] = r[k] >= d.thr ? __fmul_rn(sc[j], d.scale) : 0.0f;
            }
        }
        __syncwarp();
    }
    if (opb) { /* Pd rounded as the operand of Pd v (att / lse keep P in fp32) */
        for (int j = lane; j < L; j += 32) sc[j] = act_round(sc[j], 1);
        __syncwarp();
    }
    size_t o = (size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh;
    for (int e = lane; e < dh; e += 32) {
        float acc = 0.0f;
        for (int j = 0; j < L; j++) acc += sc[j] * act_round(ld_act(&v0[(size_t)j * ld + e]), opb);
        float c = act_round(acc, rnd); /* the context in the activations' storage; att / lse stay fp32 */
        st_act(&out[o + e], c);
        if (out16) out16[o + e] = __float2bfloat16_rn(c);
    }
}

/* Backward, first pass (query row i < nq), as k_attention_bwd_rows with P_ij = exp(scale q_i . k_j - lse_i).
 * Shared memory per warp: max_len floats of P, max_len of dp / dS, dh of dO_i, dh of q_i. */
template <typename TQ>
__global__ void k_attention_bwd_rows_lse(float *dqkv, float *rowd, const float *dout, const TQ *qkv,
                                         const float *lse, const int32_t *seq_off, int NH, int dh, int first_only,
                                         int max_len, float scale, DropDev d, int opb) {
    extern __shared__ float sh[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int s = blockIdx.x / NH, h = blockIdx.x % NH;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0, nq = first_only ? 1 : L;
    int i = blockIdx.y * XR_ATT_TRAIN_WARPS + warp;
    if (i >= nq || i >= L) return;
    float *P = sh + (size_t)warp * (2 * max_len + 2 * dh), *dp = P + max_len, *os = dp + max_len, *qs = os + dh;
    size_t ld = (size_t)3 * NH * dh, HD = (size_t)NH * dh;
    const TQ *q = qkv + (size_t)(b0 + i) * ld + (size_t)h * dh;
    const TQ *k0 = qkv + (size_t)b0 * ld + HD + (size_t)h * dh, *v0 = k0 + HD;
    const float *dO = dout + (size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh;
    for (int e = lane; e < dh; e += 32) os[e] = act_round(dO[e], opb), qs[e] = act_round(ld_act(&q[e]), opb);
    __syncwarp();
    float l = lse[(size_t)(first_only ? s : b0 + i) * NH + h];
    uint64_t id = drop_id(d, s);
    uint32_t c1 = (uint32_t)i | ((uint32_t)h << 16);
    for (int g = lane; 4 * g < L; g += 32) {
        uint32_t r[4] = {0, 0, 0, 0};
        if (d.on) drop_draw4(r, d, g, c1, id);
        for (int k = 0; k < 4 && 4 * g + k < L; k++) {
            int j = 4 * g + k;
            const TQ *kj = k0 + (size_t)j * ld, *v = v0 + (size_t)j * ld;
            float sc = 0.0f, dot = 0.0f;
            for (int e = 0; e < dh; e++) sc += qs[e] * act_round(ld_act(&kj[e]), opb);
            for (int e = 0; e < dh; e++) dot += os[e] * act_round(ld_act(&v[e]), opb);
            P[j] = expf(sc * scale - l);
            dp[j] = d.on ? (r[k] >= d.thr ? __fmul_rn(dot, d.scale) : 0.0f) : dot;
        }
    }
    __syncwarp();
    float D = 0.0f;
    for (int j = lane; j < L; j += 32) D += P[j] * dp[j];
    D = warp_sum(D);
    for (int j = lane; j < L; j += 32) dp[j] = act_round(P[j] * (dp[j] - D), opb); /* dS: fp32, then the operand */
    __syncwarp();
    if (lane == 0) rowd[(size_t)(b0 + i) * NH + h] = D;
    float *dq = dqkv + (size_t)(b0 + i) * ld + (size_t)h * dh;
    for (int e = lane; e < dh; e += 32) {
        float acc = 0.0f;
        for (int j = 0; j < L; j++) acc += dp[j] * act_round(ld_act(&k0[(size_t)j * ld + e]), opb);
        dq[e] = acc * scale;
    }
}

/* Backward, second pass (key row j < L), as k_attention_bwd_keys with P recomputed from lse. Shared memory per
 * warp: max_len floats of Pd, max_len of dS, dh of v_j, dh of k_j. */
template <typename TQ>
__global__ void k_attention_bwd_keys_lse(float *dqkv, const float *rowd, const float *dout, const TQ *qkv,
                                         const float *lse, const int32_t *seq_off, int NH, int dh, int first_only,
                                         int max_len, float scale, DropDev d, int opb) {
    extern __shared__ float sh[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int s = blockIdx.x / NH, h = blockIdx.x % NH;
    int b0 = seq_off[s], L = seq_off[s + 1] - b0, nq = first_only ? 1 : L;
    int j = blockIdx.y * XR_ATT_TRAIN_WARPS + warp;
    if (j >= L) return;
    float *pd = sh + (size_t)warp * (2 * max_len + 2 * dh), *ds = pd + max_len, *vs = ds + max_len, *ks = vs + dh;
    size_t ld = (size_t)3 * NH * dh, HD = (size_t)NH * dh;
    const TQ *q0 = qkv + (size_t)b0 * ld + (size_t)h * dh;
    const TQ *kj = q0 + HD + (size_t)j * ld, *v = q0 + 2 * HD + (size_t)j * ld;
    for (int e = lane; e < dh; e += 32) vs[e] = act_round(ld_act(&v[e]), opb), ks[e] = act_round(ld_act(&kj[e]), opb);
    __syncwarp();
    uint64_t id = drop_id(d, s);
    for (int i = lane; i < nq; i += 32) {
        const float *dO = dout + (size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh;
        const TQ *qi = q0 + (size_t)i * ld;
        float dot = 0.0f, sc = 0.0f;
        for (int e = 0; e < dh; e++) sc += act_round(ld_act(&qi[e]), opb) * ks[e];
        for (int e = 0; e < dh; e++) dot += act_round(dO[e], opb) * vs[e];
        float p = expf(sc * scale - lse[(size_t)(first_only ? s : b0 + i) * NH + h]);
        int keep = !d.on || drop_draw1(d, j, (uint32_t)i | ((uint32_t)h << 16), id) >= d.thr;
        float dpv = d.on ? (keep ? __fmul_rn(dot, d.scale) : 0.0f) : dot;
        pd[i] = act_round(d.on ? (keep ? __fmul_rn(p, d.scale) : 0.0f) : p, opb);
        ds[i] = act_round(p * (dpv - rowd[(size_t)(b0 + i) * NH + h]), opb);
    }
    __syncwarp();
    float *dk = dqkv + (size_t)(b0 + j) * ld + HD + (size_t)h * dh, *dv = dk + HD;
    for (int e = lane; e < dh; e += 32) {
        float av = 0.0f, ak = 0.0f;
        for (int i = 0; i < nq; i++) {
            av += pd[i] * act_round(dout[(size_t)(first_only ? s : b0 + i) * HD + (size_t)h * dh + e], opb);
            ak += ds[i] * act_round(ld_act(&q0[(size_t)i * ld + e]), opb);
        }
        dv[e] = av;
        dk[e] = ak * scale;
    }
    if (first_only && j >= 1)
        for (int e = lane; e < dh; e += 32) dqkv[(size_t)(b0 + j) * ld + (size_t)h * dh + e] = 0.0f;
}

/* ---------------- the training attention's entry points, on either storage ----------------
 * qkv and the context are each fp32 words or, in a region registered with ops_act_region, packed bf16 (by address);
 * the kernels above and the GEMM path's pack / unpack read and store them as they lie (ld_act / st_act), so a packed
 * op computes with the same bf16 values as the unpacked one and gives the same bits, without widening qkv or the
 * context into scratch first. The probabilities, log-sum-exps and gradients are never packed. */
typedef __nv_bfloat16 B16;

/* The exact forward kernel (probabilities saved, or lse) on qkv of type TQ into a context of type TO. */
template <typename TQ, typename TO>
static void exact_forward(cudaStream_t st, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                          int max_len, int NH, int dh, int first_only, DropDev dd, int rnd, int opb, B16 *out16,
                          int lse, const char *op) {
    unsigned gy = (unsigned)((max_len + XR_ATT_TRAIN_WARPS - 1) / XR_ATT_TRAIN_WARPS);
    dim3 grid((unsigned)(S * NH), first_only ? 1u : gy);
    float scale = 1.0f / sqrtf((float)dh);
    if (lse) {
        size_t shm = att_shmem((const void *)k_attention_train_lse<TQ, TO>, (size_t)max_len + dh, max_len, op);
        k_attention_train_lse<TQ, TO><<<grid, 32 * XR_ATT_TRAIN_WARPS, shm, st>>>(
            (TO *)out, att, (const TQ *)qkv, seq_off, NH, dh, first_only, max_len, scale, dd, rnd, opb, out16);
    } else {
        size_t shm = att_shmem((const void *)k_attention_train<TQ, TO>, (size_t)max_len + dh, max_len, op);
        k_attention_train<TQ, TO><<<grid, 32 * XR_ATT_TRAIN_WARPS, shm, st>>>(
            (TO *)out, att, (const TQ *)qkv, seq_off, NH, dh, first_only, max_len, scale, dd, rnd, opb, out16);
    }
    XR_LAUNCHED();
}

/* The exact backward's two passes (P from att, or recomputed from lse) on qkv of type TQ. */
template <typename TQ>
static void exact_backward(Backend *be, cudaStream_t st, float *dqkv, const float *dout, const float *qkv,
                           const float *att, const int32_t *seq_off, int S, int max_len, int NH, int dh,
                           int first_only, DropDev dd, int opb, int lse, const char *op) {
    float scale = 1.0f / sqrtf((float)dh);
    /* D_i per (token, head): the batch has at most S * max_len tokens */
    float *rowd = (float *)cuda_ops_scratch(be, 0, (size_t)S * max_len * NH * sizeof(float));
    unsigned gy = (unsigned)((max_len + XR_ATT_TRAIN_WARPS - 1) / XR_ATT_TRAIN_WARPS);
    dim3 g1((unsigned)(S * NH), first_only ? 1u : gy), g2((unsigned)(S * NH), gy);
    const TQ *q = (const TQ *)qkv;
    if (lse) {
        size_t per = (size_t)2 * max_len + 2 * (size_t)dh;
        size_t shm1 = att_shmem((const void *)k_attention_bwd_rows_lse<TQ>, per, max_len, op);
        k_attention_bwd_rows_lse<TQ><<<g1, 32 * XR_ATT_TRAIN_WARPS, shm1, st>>>(
            dqkv, rowd, dout, q, att, seq_off, NH, dh, first_only, max_len, scale, dd, opb);
        XR_LAUNCHED();
        size_t shm2 = att_shmem((const void *)k_attention_bwd_keys_lse<TQ>, per, max_len, op);
        k_attention_bwd_keys_lse<TQ><<<g2, 32 * XR_ATT_TRAIN_WARPS, shm2, st>>>(
            dqkv, rowd, dout, q, att, seq_off, NH, dh, first_only, max_len, scale, dd, opb);
    } else {
        size_t shm1 = att_shmem((const void *)k_attention_bwd_rows<TQ>, (size_t)max_len + dh, max_len, op);
        k_attention_bwd_rows<TQ><<<g1, 32 * XR_ATT_TRAIN_WARPS, shm1, st>>>(
            dqkv, rowd, dout, q, att, seq_off, NH, dh, first_only, max_len, scale, dd, opb);
        XR_LAUNCHED();
        size_t shm2 = att_shmem((const void *)k_attention_bwd_keys<TQ>, (size_t)2 * max_len + dh, max_len, op);
        k_attention_bwd_keys<TQ><<<g2, 32 * XR_ATT_TRAIN_WARPS, shm2, st>>>(
            dqkv, rowd, dout, q, att, seq_off, NH, dh, first_only, max_len, scale, dd, opb);
    }
    XR_LAUNCHED();
}

/* attention_train (lse 0: att saved) and attention_train_lse (lse 1: lse in att's place). */
static void attention_forward(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                              int max_len, int NH, int dh, int first_only, const XrDropout *d, int lse) {
    cudaStream_t st = op_stream(be);
    const char *op = lse ? "attention_train_lse" : "attention_train";
    cuda_pk_refuse(be, lse ? "attention_train_lse (packed lse)" : "attention_train (packed att)", att, NULL, NULL,
                   NULL);
    if (S <= 0 || max_len <= 0) return;
    att_check(d, S, max_len, NH, op);
    int pq = cuda_pk_region(be, qkv), po = cuda_pk_region(be, out);
    /* the context's bf16 copy for the attention output GEMM: S rows, or at most S * max_len packed ones; a packed
     * context is that GEMM's operand itself */
    size_t nc = (size_t)S * (first_only ? 1 : max_len) * NH * dh;
    B16 *out16 = po ? NULL : cuda_ops_next_copy(be, nc);
    int rnd = cuda_ops_act_bf16(be), opb = cuda_ops_bf16_operands(be);
    if (cuda_ops_train_att_gemm(be)) {
        if (lse)
            cuda_att_gemm_forward_lse(be, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, d, rnd, out16, pq,
                                      po);
        else
            cuda_att_gemm_forward(be, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, d, rnd, out16, pq, po);
    } else {
        DropDev dd = drop_dev(d);
        if (pq && po)
            exact_forward<B16, B16>(st, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, dd, rnd, opb, out16,
                                    lse, op);
        else if (pq)
            exact_forward<B16, float>(st, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, dd, rnd, opb, out16,
                                      lse, op);
        else if (po)
            exact_forward<float, B16>(st, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, dd, rnd, opb, out16,
                                      lse, op);
        else
            exact_forward<float, float>(st, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, dd, rnd, opb,
                                        out16, lse, op);
    }
    if (out16) cuda_ops_next_copy_written(be, out, nc, !first_only);
}

/* attention_backward (lse 0: P from att) and attention_backward_lse (lse 1: P from lse). */
static void attention_backward(Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                               const XrDropout *d, int lse) {
    cudaStream_t st = op_stream(be);
    const char *op = lse ? "attention_backward_lse" : "attention_backward";
    cuda_pk_refuse(be, lse ? "attention_backward_lse (packed gradient or lse)" : "attention_backward (packed gradient "
                   "or att)", dqkv, dout, att, NULL);
    if (S <= 0 || max_len <= 0) return;
    att_check(d, S, max_len, NH, op);
    int pq = cuda_pk_region(be, qkv);
    if (cuda_ops_train_att_gemm(be)) {
        if (lse)
            cuda_att_gemm_backward_lse(be, dqkv, dout, qkv, att, seq_off, S, max_len, NH, dh, first_only, d, pq);
        else
            cuda_att_gemm_backward(be, dqkv, dout, qkv, att, seq_off, S, max_len, NH, dh, first_only, d, pq);
        return;
    }
    DropDev dd = drop_dev(d);
    int opb = cuda_ops_bf16_operands(be);
    if (pq)
        exact_backward<B16>(be, st, dqkv, dout, qkv, att, seq_off, S, max_len, NH, dh, first_only, dd, opb, lse, op);
    else
        exact_backward<float>(be, st, dqkv, dout, qkv, att, seq_off, S, max_len, NH, dh, first_only, dd, opb, lse, op);
}

extern "C" void cuda_ops_attention_train(Backend *be, float *out, float *att, const float *qkv,
                                         const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                                         const XrDropout *d) {
    attention_forward(be, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, d, 0);
}

extern "C" void cuda_ops_attention_train_lse(Backend *be, float *out, float *lse, const float *qkv,
                                             const int32_t *seq_off, int S, int max_len, int NH, int dh,
                                             int first_only, const XrDropout *d) {
    attention_forward(be, out, lse, qkv, seq_off, S, max_len, NH, dh, first_only, d, 1);
}

extern "C" void cuda_ops_attention_backward(Backend *be, float *dqkv, const float *dout, const float *qkv,
                                            const float *att, const int32_t *seq_off, int S, int max_len, int NH,
                                            int dh, int first_only, const XrDropout *d) {
    attention_backward(be, dqkv, dout, qkv, att, seq_off, S, max_len, NH, dh, first_only, d, 0);
}

extern "C" void cuda_ops_attention_backward_lse(Backend *be, float *dqkv, const float *dout, const float *qkv,
                                                const float *lse, const int32_t *seq_off, int S, int max_len, int NH,
                                                int dh, int first_only, const XrDropout *d) {
    attention_backward(be, dqkv, dout, qkv, lse, seq_off, S, max_len, NH, dh, first_only, d, 1);
}
