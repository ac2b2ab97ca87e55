// knn_search.cu: the CUDA backend's device-search ops (core/ops_list.h): knn_screen, a cuBLAS GEMM of a query
// block against one passage tile followed by a radix selection, per query, of the kk best of its running list
// and the tile; and knn_rescore, the exact scores of the survivors (core/knn_exact.h, double accumulation in the
// CPU search's order, so the bits equal the CPU's; knn_exact_dot's order written out over staged row chunks);
// and to_bf16, the bf16 screening operands made on the device from the fp32 rows there.
#include <cuda_bf16.h>
#include <stdint.h>

#include "cuda/cuda_internal.cuh" // XR_CU / XR_BLAS / XR_LAUNCHED, op_stream, cuda_ops_scratch, cuda_ops_blas
#include "bf16_bits.h"             // xr_bf16_bits: the host's fp32 -> bf16 rounding
#include "knn_exact.h"            // knn_exact_acc / knn_exact_finish: the contract's summation order

// Order-preserving map of a float score onto uint32 (larger score = larger key). Empty list slots get key 0,
// below every finite score (the smallest finite key is that of -FLT_MAX, 0x00800000).
static __device__ __forceinline__ uint32_t knn_key(float s) {
    uint32_t u = __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

#define KNN_SEL_THREADS 256
#define KNN_CAND_CAP 2048 // tile elements above the list's floor kept in shared memory (16 KiB)

// Element e of (running list, then the tile's part): its key and tile position (-1: a list entry); false when it
// takes no part (a tile element not above the floor, only when the tile is read in full, not compacted).
static __device__ __forceinline__ bool knn_elem(int e, int kk, const float *ls, const int64_t *li, const float *row,
                                                const uint32_t *ck, const int *cp, int compact, uint32_t floor_key,
                                                uint32_t *key, int *pos) {
    if (e < kk) {
        *key = li[e] < 0 ? 0u : knn_key(ls[e]);
        *pos = -1;
        return true;
    }
    if (compact) {
        *key = ck[e - kk];
        *pos = cp[e - kk];
        return true;
    }
    *pos = e - kk;
    *key = knn_key(row[*pos]);
    return *key > floor_key;
}

// One block per query: the kk best of its list (kk entries) and its tile row (n screening scores), written to
// out_s / out_i. Tile elements not above the list's smallest key (the query's running threshold) cannot displace
// anything and are skipped (a tie with the smallest kept score may be dropped: the contract allows either). One
// read of the row compares every score with that threshold and, when at most KNN_CAND_CAP pass (every tile
// after the first few), keeps them in shared memory (warp-aggregated appends), so the selection never reads the
// row again; else the row is read in full by each pass below. The kk-th largest key T is found by four 8-bit
// radix passes over the list and the candidates; then every element above T is written, and as many equal to T
// as there are slots left. (test_knn_device runs this algorithm on the host, both paths.)
__global__ void __launch_bounds__(KNN_SEL_THREADS)
    k_knn_select(const float *S, int n, int64_t base, const float *list_s, const int64_t *list_i, int kk,
                 float *out_s, int64_t *out_i) {
    const int q = blockIdx.x;
    const float *row = S + (size_t)q * n;
    const float *ls = list_s + (size_t)q * kk;
    const int64_t *li = list_i + (size_t)q * kk;
    float *os = out_s + (size_t)q * kk;
    int64_t *oi = out_i + (size_t)q * kk;
    __shared__ unsigned hist[256];
    __shared__ uint32_t s_floor, s_prefix, s_mask;
    __shared__ int s_above, s_remaining, s_gt, s_eq;
    __shared__ uint32_t ck[KNN_CAND_CAP];
    __shared__ int cp[KNN_CAND_CAP];
    if (threadIdx.x == 0) {
        s_floor = 0xFFFFFFFFu;
        s_above = 0;
    }
    __syncthreads();
    uint32_t f = 0xFFFFFFFFu;
    for (int e = threadIdx.x; e < kk; e += blockDim.x) f = min(f, li[e] < 0 ? 0u : knn_key(ls[e]));
    atomicMin(&s_floor, f);
    __syncthreads();
    const uint32_t floor_key = s_floor;
    const int lane = threadIdx.x & 31;
    // blockDim.x is a multiple of 32 and every thread runs the same iterations: whole warps vote
    for (int j0 = 0; j0 < n; j0 += blockDim.x) {
        const int j = j0 + threadIdx.x;
        uint32_t key = 0;
        bool up = false;
        if (j < n) {
            key = knn_key(row[j]);
            up = key > floor_key;
        }
        const unsigned ball = __ballot_sync(0xFFFFFFFFu, up);
        int at0 = 0;
        if (lane == 0 && ball) at0 = atomicAdd(&s_above, __popc(ball));
        at0 = __shfl_sync(0xFFFFFFFFu, at0, 0);
        if (up) {
            const int at = at0 + __popc(ball & ((1u << lane) - 1u));
            if (at < KNN_CAND_CAP) ck[at] = key, cp[at] = j;
        }
    }
    __syncthreads();
    const int above = s_above;
    if (above == 0) { // nothing in this tile enters the list
        for (int e = threadIdx.x; e < kk; e += blockDim.x) os[e] = ls[e], oi[e] = li[e];
        return;
    }
    const int compact = above <= KNN_CAND_CAP;
    const int total = kk + (compact ? above : n);
    if (threadIdx.x == 0) s_prefix = 0, s_mask = 0, s_remaining = kk;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        const uint32_t prefix = s_prefix, mask = s_mask;
        for (int e = threadIdx.x; e < total; e += blockDim.x) {
            uint32_t key;
            int pos;
            if (!knn_elem(e, kk, ls, li, row, ck, cp, compact, floor_key, &key, &pos)) continue;
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            // the bin holding the remaining-th largest key, counted from the top
            int rem = s_remaining, b = 255;
            unsigned cum = 0;
            for (; b > 0; b--) {
                if (cum + hist[b] >= (unsigned)rem) break;
                cum += hist[b];
            }
            s_remaining = rem - (int)cum;
            s_prefix = prefix | ((uint32_t)b << shift);
            s_mask = mask | (255u << shift);
            s_gt = 0;
            s_eq = 0;
        }
        __syncthreads();
    }
    const uint32_t T = s_prefix;
    const int take_gt = kk - s_remaining; // elements above T: exactly this many
    for (int e = threadIdx.x; e < total; e += blockDim.x) {
        uint32_t key;
        int pos;
        if (!knn_elem(e, kk, ls, li, row, ck, cp, compact, floor_key, &key, &pos)) continue;
        int slot;
        if (key > T) slot = atomicAdd(&s_gt, 1);
        else if (key == T) {
            slot = take_gt + atomicAdd(&s_eq, 1);
            if (slot >= kk) continue;
        } else continue;
        if (pos < 0) {
            os[slot] = li[e] < 0 ? -INFINITY : ls[e];
            oi[slot] = li[e];
        } else {
            os[slot] = row[pos];
            oi[slot] = base + pos;
        }
    }
}

extern "C" void cuda_ops_knn_screen(Backend *be, float *list_s, int64_t *list_i, int kk, const void *Q, int m,
                                    const void *P, int n, int64_t base, int dim, int bf16) {
    cudaStream_t st = op_stream(be);
    if (m <= 0 || n <= 0 || kk <= 0) return;
    float *S = (float *)cuda_ops_scratch(be, 0, (size_t)m * (size_t)n * sizeof(float));
    char *tmp = (char *)cuda_ops_scratch(be, 1, (size_t)m * (size_t)kk * (sizeof(int64_t) + sizeof(float)));
    int64_t *ti = (int64_t *)tmp;
    float *ts = (float *)(tmp + (size_t)m * kk * sizeof(int64_t));
    // row-major S [m, n] = Q P^T is column-major S^T [n, m] = P Q^T: P and Q as stored are column-major [dim, n]
    // and [dim, m], so P is transposed and Q is not
    const float one = 1.0f, zero = 0.0f;
    cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t ct = bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;
    XR_BLAS(cublasGemmEx(cuda_ops_blas(be), CUBLAS_OP_T, CUBLAS_OP_N, n, m, dim, &one, P, t, dim, Q, t, dim, &zero, S,
                         CUDA_R_32F, n, ct, CUBLAS_GEMM_DEFAULT));
    k_knn_select<<<m, KNN_SEL_THREADS, 0, st>>>(S, n, base, list_s, list_i, kk, ts, ti);
    XR_LAUNCHED();
    XR_CU(cudaMemcpyAsync(list_s, ts, (size_t)m * kk * sizeof(float), cudaMemcpyDeviceToDevice, st));
    XR_CU(cudaMemcpyAsync(list_i, ti, (size_t)m * kk * sizeof(int64_t), cudaMemcpyDeviceToDevice, st));
}

// One warp per 32 candidates of one query (its lane j owns candidate j of the group). The rows are staged
// through shared memory 32 elements at a time: for each of the group's rows in this tile the warp loads the
// row's 32-element chunk in one coalesced 128-byte read, then each lane sums its own row's chunk in element
// order, so every pair's sum keeps knn_exact_dot's order (element i to partial sum i % 4 below the last
// multiple of 4, the tail to sum 0; the same four partials, the same final adds): the CPU's bits. The query's
// chunk is shared by the group. Deterministic: no atomics, one lane per pair.
#define KNN_RS_WARPS 8

__global__ void __launch_bounds__(KNN_RS_WARPS * 32)
    k_knn_rescore(float *out, const int64_t *idx, int kk, const float *Q, int m, const float *P, int n, int64_t base,
                  int dim) {
    __shared__ float rows[KNN_RS_WARPS][32][33]; // [candidate][element], padded: both access patterns conflict-free
    __shared__ float qc[KNN_RS_WARPS][32];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t groups_per_q = ((size_t)kk + 31) / 32, groups = (size_t)m * groups_per_q;
    const size_t g = (size_t)blockIdx.x * KNN_RS_WARPS + w;
    if (g >= groups) return; // whole warps leave: only __syncwarp below
    const size_t q = g / groups_per_q;
    const int j = (int)(g % groups_per_q) * 32 + lane;
    const int64_t p = j < kk ? idx[q * kk + j] : -1;
    const bool mine = p >= base && p < base + n;
    const unsigned have = __ballot_sync(0xFFFFFFFFu, mine);
    if (!have) return;
    const unsigned long long off = mine ? (unsigned long long)(p - base) * (unsigned long long)dim : 0ull;
    const float *qrow = Q + q * (size_t)dim;
    const size_t dim4 = (size_t)dim & ~(size_t)3;
    double a[4] = {0, 0, 0, 0};
    for (int d0 = 0; d0 < dim; d0 += 32) {
        const int d = d0 + lane;
        const bool in = d < dim;
        // all 32 loads issued before the first store: 32 independent 128-byte reads in flight per warp
        float v[32];
#pragma unroll
        for (int r = 0; r < 32; r++) {
            const unsigned long long o = __shfl_sync(0xFFFFFFFFu, off, r);
            v[r] = ((have >> r) & 1u) && in ? __ldg(P + o + (unsigned long long)d) : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < 32; r++) rows[w][r][lane] = v[r];
        qc[w][lane] = in ? qrow[d] : 0.0f;
        __syncwarp();
        if (mine) knn_exact_acc(a, qc[w], rows[w][lane], (size_t)d0, (size_t)min(32, dim - d0), dim4);
        __syncwarp();
    }
    if (mine) out[q * kk + j] = knn_exact_finish(a);
}

extern "C" void cuda_ops_knn_rescore(Backend *be, float *out, const int64_t *idx, int kk, const float *Q, int m,
                                     const float *P, int n, int64_t base, int dim) {
    cudaStream_t st = op_stream(be);
    if (m <= 0 || n <= 0 || kk <= 0) return;
    const size_t groups = (size_t)m * (((size_t)kk + 31) / 32);
    const size_t blocks = (groups + KNN_RS_WARPS - 1) / KNN_RS_WARPS;
    if (blocks > 0x7FFFFFFFull) {
        fprintf(stderr, "knn_rescore: %d queries x %d candidates is beyond one launch\n", m, kk);
        abort();
    }
    k_knn_rescore<<<(unsigned)blocks, KNN_RS_WARPS * 32, 0, st>>>(out, idx, kk, Q, m, P, n, base, dim);
    XR_LAUNCHED();
}

// The host's rounding formula (bf16_bits.h) rather than __float2bfloat16_rn: the same bits by construction.
__global__ void k_to_bf16(uint16_t *out, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = xr_bf16_bits(x[i]);
}

extern "C" void cuda_ops_to_bf16(Backend *be, uint16_t *out, const float *x, size_t n) {
    if (n == 0) return;
    k_to_bf16<<<blocks_for(n, 256), 256, 0, op_stream(be)>>>(out, x, n);
    XR_LAUNCHED();
}
