/* flash_attn.cu: fused attention over packed sequences (see flash_attn.h). One block = one (sequence, head) and
 * a tile of query rows; it walks the sequence's keys in tiles, keeping Q in registers, the running max / sum of
 * each softmax row and the output accumulator in registers, so the scores never leave the chip. */
#include "cuda/flash_attn.h"
#include "cuda/flash_stage.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

namespace {

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (lo) is the lower half: the lower column */
    return *reinterpret_cast<uint32_t *>(&v);
}

/* 2^x by the special-function unit (about 2 ulp; exp2(-inf) = 0), without exp2f's range handling */
__device__ __forceinline__ float ex2(float x) {
#ifdef XR_CUDA_EMU
    return cuemu::ex2_approx_ftz(x); /* the CPU emulator (tests/cuemu) */
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#endif
}

__device__ __forceinline__ uint32_t lds32(const __nv_bfloat16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

/* c += a b for one 16x8x16 tile: a row-major 16x16 bf16 (4 regs), b column-major 16x8 bf16 (2 regs), c fp32.
 * Fragment ownership (PTX ISA, mma.m16n8k16): lane = 4 g + t holds a{0,1,2,3} = A[g | g+8 | g | g+8][2t..2t+1
 * | 2t..2t+1 | 2t+8.. | 2t+8..], b{0,1} = B[2t..2t+1 | 2t+8..2t+9][g], c{0,1,2,3} = C[g, g, g+8, g+8][2t, 2t+1,
 * 2t, 2t+1]. So two adjacent 8-column C tiles, rounded to bf16, are exactly the A fragment of the next product. */
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef XR_CUDA_EMU
    cuemu::mma_m16n8k16_bf16(c, a, b0, b1); /* the CPU emulator (tests/cuemu): warp-collective, the same layout */
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* The K / V staging of one key tile, per input type: global memory -> registers (load, issued before the current
 * tile's products so it is in flight during them) -> bf16 shared memory (store, after the barrier). K goes to Ks
 * [BC][DH+8] in row order, V transposed to Vt [DH][BC+8]: one 32-bit word holds two adjacent keys of one column,
 * the B fragment the P V product reads. Keys at or past L are zeros. Both loaders read 16-byte chunks. */
template <typename T, int DH, int BC, int NW> struct KvStage;

/* fp32 q/k/v: a chunk is 4 floats, rounded to bf16 when stored. K: chunks in row order (a warp reads whole rows).
 * V: lane bit 0 picks one of two adjacent chunks, lanes >> 1 one of 16 key pairs; each lane loads its chunk of
 * both keys of its pair, so the transposed 32-bit stores (two keys, one column) hit 32 banks. */
template <int DH, int BC, int NW> struct KvStage<float, DH, BC, NW> {
    static constexpr int kThreads = 32 * NW, CPR = DH / 4, NK = BC * CPR / kThreads, NV = BC * DH / 8 / kThreads,
                         PH = BC / 32, QS = DH + 8, VS = BC + 8;
    static_assert(NK * kThreads == BC * CPR && NV * kThreads * 8 == BC * DH && NV >= 1, "loader covers the tile");
    static_assert(NW * NV == (DH / 8) * PH, "V loader: one (column pair, row half) per warp and step");
    float4 kr[NK], vr[NV][2];

    __device__ __forceinline__ void load(const float *kg, const float *vg, size_t stride, int L, int j0, int tid) {
        const int warp = tid / 32, lane = tid % 32;
        const float4 zero4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int k = 0; k < NK; k++) {
            int it = tid + k * kThreads, r = it / CPR, c = it % CPR, key = j0 + r;
            kr[k] = key < L ? __ldg(reinterpret_cast<const float4 *>(kg + (size_t)key * stride) + c) : zero4;
        }
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int combo = warp * NV + k, c = 2 * (combo / PH) + (lane & 1);
            int key = j0 + 2 * ((combo % PH) * 16 + (lane >> 1));
            vr[k][0] = key < L ? __ldg(reinterpret_cast<const float4 *>(vg + (size_t)key * stride) + c) : zero4;
            vr[k][1] = key + 1 < L ? __ldg(reinterpret_cast<const float4 *>(vg + (size_t)(key + 1) * stride) + c)
                                   : zero4;
        }
    }
    __device__ __forceinline__ void store(__nv_bfloat16 *Ks, __nv_bfloat16 *Vt, int tid) const {
        const int warp = tid / 32, lane = tid % 32;
#pragma unroll
        for (int k = 0; k < NK; k++) {
            int it = tid + k * kThreads, r = it / CPR, c = it % CPR;
            *reinterpret_cast<uint2 *>(&Ks[r * QS + 4 * c]) =
                make_uint2(pack_bf16(kr[k].x, kr[k].y), pack_bf16(kr[k].z, kr[k].w));
        }
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int combo = warp * NV + k, c = 2 * (combo / PH) + (lane & 1);
            int p = (combo % PH) * 16 + (lane >> 1);
            __nv_bfloat16 *d = &Vt[4 * c * VS + 2 * p];
            *reinterpret_cast<uint32_t *>(d) = pack_bf16(vr[k][0].x, vr[k][1].x);
            *reinterpret_cast<uint32_t *>(d + VS) = pack_bf16(vr[k][0].y, vr[k][1].y);
            *reinterpret_cast<uint32_t *>(d + 2 * VS) = pack_bf16(vr[k][0].z, vr[k][1].z);
            *reinterpret_cast<uint32_t *>(d + 3 * VS) = pack_bf16(vr[k][0].w, vr[k][1].w);
        }
    }
};

/* bf16 q/k/v: a chunk is 8 values, stored as loaded (half the registers and global loads of the fp32 stage). K:
 * chunks in row order, one 16-byte store each. V: one chunk of one key per lane and step; the two lanes of a key
 * pair swap halves (two shuffles), so each stores 4 words of (key, key + 1). The maps: flash_stage.h. */
template <int DH, int BC, int NW> struct KvStage<__nv_bfloat16, DH, BC, NW> {
    using M = FlashStage16<DH, BC, NW>;
    static constexpr int NK = M::NK, NV = M::NV, QS = M::QS;
    uint4 kr[NK], vr[NV];

    __device__ __forceinline__ void load(const __nv_bfloat16 *kg, const __nv_bfloat16 *vg, size_t stride, int L,
                                         int j0, int tid) {
        const uint4 zero4 = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int k = 0; k < NK; k++) {
            int r, c;
            M::k_at(tid, k, r, c);
            int key = j0 + r;
            kr[k] = key < L ? __ldg(reinterpret_cast<const uint4 *>(kg + (size_t)key * stride) + c) : zero4;
        }
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int key, c;
            M::v_at(tid, k, key, c);
            key += j0;
            vr[k] = key < L ? __ldg(reinterpret_cast<const uint4 *>(vg + (size_t)key * stride) + c) : zero4;
        }
    }
    __device__ __forceinline__ void store(__nv_bfloat16 *Ks, __nv_bfloat16 *Vt, int tid) const {
        const int lane = tid % 32;
#pragma unroll
        for (int k = 0; k < NK; k++) {
            int r, c;
            M::k_at(tid, k, r, c);
            *reinterpret_cast<uint4 *>(&Ks[r * QS + 8 * c]) = kr[k];
        }
#pragma unroll
        for (int k = 0; k < NV; k++) {
            const uint32_t own[4] = {vr[k].x, vr[k].y, vr[k].z, vr[k].w};
            uint32_t send[2], got[2], w[4];
            M::v_send(lane, own, send);
            got[0] = __shfl_xor_sync(0xffffffffu, send[0], 1);
            got[1] = __shfl_xor_sync(0xffffffffu, send[1], 1);
            M::v_words(lane, own, got, w);
#pragma unroll
            for (int i = 0; i < 4; i++)
                *reinterpret_cast<uint32_t *>(&Vt[M::v_store_offset(tid, k, i)]) = M::v_store_value(lane, i, w);
        }
    }
};

/* A q row's two adjacent values as one bf16x2 A-fragment register (the lower column in the lower half) */
__device__ __forceinline__ uint32_t q_pair(const float *p) {
    float2 v = __ldg(reinterpret_cast<const float2 *>(p));
    return pack_bf16(v.x, v.y);
}
__device__ __forceinline__ uint32_t q_pair(const __nv_bfloat16 *p) {
    return __ldg(reinterpret_cast<const unsigned int *>(p));
}

/* Two adjacent output values: fp32 (and the bf16 copy when asked), or bf16 alone; the same rounding either way */
__device__ __forceinline__ void store_pair(float *out, __nv_bfloat16 *out16, size_t i, float x, float y) {
    *reinterpret_cast<float2 *>(out + i) = make_float2(x, y);
    if (out16) *reinterpret_cast<uint32_t *>(out16 + i) = pack_bf16(x, y);
}
__device__ __forceinline__ void store_pair(__nv_bfloat16 *out, __nv_bfloat16 *, size_t i, float x, float y) {
    *reinterpret_cast<uint32_t *>(out + i) = pack_bf16(x, y);
}

/* T: q/k/v and output element type (float or __nv_bfloat16); DH: head size; MW: 16-row MMA tiles per warp; BC:
 * keys per step; NW warps (query rows per block = 16 MW NW); MINB: blocks per SM the registers must allow (0: no
 * bound, the compiler's choice). Q goes from global memory straight into registers.
 * Shared memory (bf16): K [BC][DH+8] and V transposed [DH][BC+8]; the 8-element pads put the 8 rows a fragment
 * load touches on different banks. The next K/V tile is loaded into registers while the tensor cores work on the
 * current one, then stored (KvStage). Every product and softmax step is the same for both types, so bf16 inputs
 * give the bits the fp32 kernel's bf16 copy has when its inputs are bf16-exact. */
template <typename T, int DH, int MW, int BC, int NW, int MINB>
__global__ void __launch_bounds__(32 * NW, MINB) k_flash(T *__restrict__ out, __nv_bfloat16 *__restrict__ out16,
                                                          const T *__restrict__ qkv,
                                                          const int32_t *__restrict__ seq_off, int NH, int nqt,
                                                          float scale_log2) {
    constexpr int kWarps = NW, BR = 16 * MW * kWarps, QS = DH + 8, VS = BC + 8;
    static_assert(DH % 16 == 0 && BC % 32 == 0, "tile shapes");
    __shared__ __align__(16) __nv_bfloat16 Ks[BC * QS];
    __shared__ __align__(16) __nv_bfloat16 Vt[DH * VS];

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
    const int bh = blockIdx.x / nqt, qt = blockIdx.x % nqt;
    const int s = bh / NH, h = bh % NH;
    const int b0 = seq_off[s], L = seq_off[s + 1] - b0, q0 = qt * BR;
    if (q0 >= L) return; /* whole block: past this sequence's end */
    const size_t stride = (size_t)3 * NH * DH, HD = (size_t)NH * DH;
    const T *qg = qkv + (size_t)b0 * stride + (size_t)h * DH;
    const T *kg = qg + HD, *vg = kg + HD;
    KvStage<T, DH, BC, NW> kv;

    uint32_t qa[MW][DH / 16][4];
    float o[MW][DH / 8][4], m[MW][2], l[MW][2];
#pragma unroll
    for (int mw = 0; mw < MW; mw++) {
#pragma unroll
        for (int nt = 0; nt < DH / 8; nt++) o[mw][nt][0] = o[mw][nt][1] = o[mw][nt][2] = o[mw][nt][3] = 0.0f;
        m[mw][0] = m[mw][1] = -INFINITY;
        l[mw][0] = l[mw][1] = 0.0f;
    }

    /* Q straight into A fragments: a quad reads 32 contiguous bytes of a row; rows past the end are zero (their
     * outputs are never stored; zeros keep them finite) */
#pragma unroll
    for (int mw = 0; mw < MW; mw++)
#pragma unroll
        for (int hi = 0; hi < 2; hi++) {
            int row = q0 + warp * 16 * MW + mw * 16 + g + 8 * hi;
            const T *qr = qg + (size_t)row * stride + 2 * t;
#pragma unroll
            for (int kk = 0; kk < DH / 16; kk++) {
                uint32_t lo = 0u, up = 0u;
                if (row < L) lo = q_pair(qr + kk * 16), up = q_pair(qr + kk * 16 + 8);
                qa[mw][kk][hi] = lo;
                qa[mw][kk][2 + hi] = up;
            }
        }

    const int ntiles = (L + BC - 1) / BC;
    kv.load(kg, vg, stride, L, 0, tid);
    for (int jt = 0; jt < ntiles; jt++) {
        if (jt > 0) __syncthreads(); /* every warp is done with the previous K/V tile */
        kv.store(Ks, Vt, tid);
        __syncthreads();
        if (jt + 1 < ntiles) kv.load(kg, vg, stride, L, (jt + 1) * BC, tid); /* in flight during the products below */

        /* scores S = Q K^T for this warp's rows and BC keys */
        float sc[MW][BC / 8][4];
#pragma unroll
        for (int mw = 0; mw < MW; mw++)
#pragma unroll
            for (int nt = 0; nt < BC / 8; nt++) sc[mw][nt][0] = sc[mw][nt][1] = sc[mw][nt][2] = sc[mw][nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DH / 16; kk++)
#pragma unroll
            for (int nt = 0; nt < BC / 8; nt++) {
                const __nv_bfloat16 *kp = &Ks[(nt * 8 + g) * QS + kk * 16 + 2 * t];
                uint32_t kb0 = lds32(kp), kb1 = lds32(kp + 8);
#pragma unroll
                for (int mw = 0; mw < MW; mw++) mma_bf16(sc[mw][nt], qa[mw][kk], kb0, kb1);
            }

        /* online softmax (base 2): row g uses c0, c1, row g+8 c2, c3; a row's 4 owners are lanes 4g .. 4g+3 */
        const int j0 = jt * BC;
        const bool tail = j0 + BC > L;
#pragma unroll
        for (int mw = 0; mw < MW; mw++)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                float mx = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float v = sc[mw][nt][2 * r + e] * scale_log2;
                        if (tail && j0 + nt * 8 + 2 * t + e >= L) v = -INFINITY;
                        sc[mw][nt][2 * r + e] = v;
                        mx = fmaxf(mx, v);
                    }
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                /* key j0 < L is in every tile, so mx is finite; the first tile's alpha is exp2(-inf) = 0 */
                float mn = fmaxf(m[mw][r], mx), alpha = ex2(m[mw][r] - mn), rs = 0.0f;
                m[mw][r] = mn;
#pragma unroll
                for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float p = ex2(sc[mw][nt][2 * r + e] - mn);
                        sc[mw][nt][2 * r + e] = p;
                        rs += p;
                    }
                l[mw][r] = l[mw][r] * alpha + rs; /* this lane's share of the row sum; reduced at the end */
#pragma unroll
                for (int nt = 0; nt < DH / 8; nt++) o[mw][nt][2 * r] *= alpha, o[mw][nt][2 * r + 1] *= alpha;
            }

        /* O += P V: P's C fragments become A fragments (16 keys = two 8-key tiles) */
#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
            uint32_t pa[MW][4];
#pragma unroll
            for (int mw = 0; mw < MW; mw++) {
                pa[mw][0] = pack_bf16(sc[mw][2 * kk][0], sc[mw][2 * kk][1]);
                pa[mw][1] = pack_bf16(sc[mw][2 * kk][2], sc[mw][2 * kk][3]);
                pa[mw][2] = pack_bf16(sc[mw][2 * kk + 1][0], sc[mw][2 * kk + 1][1]);
                pa[mw][3] = pack_bf16(sc[mw][2 * kk + 1][2], sc[mw][2 * kk + 1][3]);
            }
#pragma unroll
            for (int nt = 0; nt < DH / 8; nt++) {
                const __nv_bfloat16 *vp = &Vt[(nt * 8 + g) * VS + kk * 16 + 2 * t];
                uint32_t vb0 = lds32(vp), vb1 = lds32(vp + 8);
#pragma unroll
                for (int mw = 0; mw < MW; mw++) mma_bf16(o[mw][nt], pa[mw], vb0, vb1);
            }
        }
    }

#pragma unroll
    for (int mw = 0; mw < MW; mw++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float ls = l[mw][r];
            ls += __shfl_xor_sync(0xffffffffu, ls, 1);
            ls += __shfl_xor_sync(0xffffffffu, ls, 2);
            float inv = 1.0f / ls;
            int row = q0 + warp * 16 * MW + mw * 16 + g + 8 * r;
            if (row >= L) continue;
            size_t base = (size_t)(b0 + row) * HD + (size_t)h * DH + 2 * t;
#pragma unroll
            for (int nt = 0; nt < DH / 8; nt++) {
                store_pair(out, out16, base + nt * 8, o[mw][nt][2 * r] * inv, o[mw][nt][2 * r + 1] * inv);
            }
        }
}

template <typename T, int DH, int MW, int BC, int NW, int MINB>
cudaError_t launch(cudaStream_t stream, T *out, __nv_bfloat16 *out16, const T *qkv, const int32_t *seq_off, int S,
                   int max_len, int NH) {
    constexpr int BR = 16 * MW * NW;
    int nqt = (max_len + BR - 1) / BR;
    long long blocks = (long long)S * NH * nqt;
    if (blocks > INT_MAX) return cudaErrorInvalidConfiguration;
    float scale_log2 = (float)(1.4426950408889634 / sqrt((double)DH));
    k_flash<T, DH, MW, BC, NW, MINB><<<(unsigned)blocks, 32 * NW, 0, stream>>>(out, out16, qkv, seq_off, NH, nqt,
                                                                               scale_log2);
    return cudaGetLastError();
}

/* The tile's kernel for this element type and head size (dh 32 or 64, checked by the caller) */
template <typename T, int MW, int BC, int NW, int MINB>
cudaError_t launch_dh(cudaStream_t stream, T *out, __nv_bfloat16 *out16, const T *qkv, const int32_t *seq_off, int S,
                      int max_len, int NH, int dh) {
    return dh == 64 ? launch<T, 64, MW, BC, NW, MINB>(stream, out, out16, qkv, seq_off, S, max_len, NH)
                    : launch<T, 32, MW, BC, NW, MINB>(stream, out, out16, qkv, seq_off, S, max_len, NH);
}

template <typename T>
cudaError_t dispatch(cudaStream_t stream, XrFlashTile tile, T *out, __nv_bfloat16 *out16, const T *qkv,
                     const int32_t *seq_off, int S, int max_len, int NH, int dh) {
    switch (tile) { /* <T, MW, BC, NW, MINB> */
    case XR_FLASH_64: return launch_dh<T, 1, 64, 4, 0>(stream, out, out16, qkv, seq_off, S, max_len, NH, dh);
    case XR_FLASH_128: return launch_dh<T, 2, 32, 4, 0>(stream, out, out16, qkv, seq_off, S, max_len, NH, dh);
    case XR_FLASH_128W8: return launch_dh<T, 1, 64, 8, 0>(stream, out, out16, qkv, seq_off, S, max_len, NH, dh);
    case XR_FLASH_256: return launch_dh<T, 2, 64, 8, 0>(stream, out, out16, qkv, seq_off, S, max_len, NH, dh);
    case XR_FLASH_64X3: return launch_dh<T, 1, 64, 4, 3>(stream, out, out16, qkv, seq_off, S, max_len, NH, dh);
    case XR_FLASH_128X3: return launch_dh<T, 2, 32, 4, 3>(stream, out, out16, qkv, seq_off, S, max_len, NH, dh);
    case XR_FLASH_128W8X2: return launch_dh<T, 1, 64, 8, 2>(stream, out, out16, qkv, seq_off, S, max_len, NH, dh);
    }
    return cudaErrorInvalidValue;
}

} // namespace

const char *xr_flash_tile_name(XrFlashTile tile) {
    switch (tile) {
    case XR_FLASH_64: return "flash64";
    case XR_FLASH_128: return "flash128";
    case XR_FLASH_128W8: return "flash128w8";
    case XR_FLASH_256: return "flash256";
    case XR_FLASH_64X3: return "flash64x3";
    case XR_FLASH_128X3: return "flash128x3";
    case XR_FLASH_128W8X2: return "flash128w8x2";
    }
    return "unknown";
}

int xr_flash_tile_by_name(const char *name, XrFlashTile *tile) {
    for (int t = 0; t < XR_FLASH_TILES; t++)
        if (name && !strcmp(name, xr_flash_tile_name((XrFlashTile)t))) return *tile = (XrFlashTile)t, 1;
    return 0;
}

int xr_flash_supported(int dh, const float *qkv, const float *out) {
    return (dh == 64 || dh == 32) && ((uintptr_t)qkv & 15) == 0 && ((uintptr_t)out & 7) == 0;
}

int xr_flash_supported_bf16(int dh, const void *qkv, const void *out) {
    return (dh == 64 || dh == 32) && ((uintptr_t)qkv & 15) == 0 && ((uintptr_t)out & 3) == 0;
}

cudaError_t xr_flash_attention(cudaStream_t stream, XrFlashTile tile, float *out, __nv_bfloat16 *out16,
                               const float *qkv, const int32_t *seq_off, int S, int max_len, int NH, int dh) {
    if (S <= 0 || max_len <= 0) return cudaSuccess;
    if (!xr_flash_supported(dh, qkv, out) || ((uintptr_t)out16 & 3) != 0) return cudaErrorInvalidValue;
    return dispatch<float>(stream, tile, out, out16, qkv, seq_off, S, max_len, NH, dh);
}

cudaError_t xr_flash_attention_bf16(cudaStream_t stream, XrFlashTile tile, __nv_bfloat16 *out,
                                    const __nv_bfloat16 *qkv, const int32_t *seq_off, int S, int max_len, int NH,
                                    int dh) {
    if (S <= 0 || max_len <= 0) return cudaSuccess;
    if (!xr_flash_supported_bf16(dh, qkv, out)) return cudaErrorInvalidValue;
    return dispatch<__nv_bfloat16>(stream, tile, out, nullptr, qkv, seq_off, S, max_len, NH, dh);
}
