// cuemu.h: the device side of the CPU emulator of our CUDA backend (tests/cuemu/README.md), force-included
// (-include) into every core/cuda/*.cu compiled by the host C++ compiler in an XRANK_CUDA_EMU build. The toolkit's
// own headers give the host types (dim3, cudaError_t, __nv_bfloat16 with NVIDIA's conversions); this file gives
// what nvcc would: the qualifiers, threadIdx & co., barriers, warp collectives, atomics, intrinsics, the launch.
#ifndef XR_CUEMU_H
#define XR_CUEMU_H

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cublasLt.h>
#include <cublas_v2.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

// Qualifiers: kernels and device functions are plain host functions. __shared__ is `static`: a block's threads
// share it, and blocks run one at a time (one launch at a time), so one copy is the block's shared memory.
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __shared__
#define __shared__ static
#undef __constant__
#define __constant__ static
#undef __forceinline__
#define __forceinline__ inline
#undef __noinline__
#define __noinline__ __attribute__((noinline))
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __restrict__
#define __restrict__ __restrict

namespace cuemu {

// One emulated thread (a fiber); the scheduler and the collectives below read it.
struct Thread {
    void *sp;      // saved stack pointer while switched out
    void *stack;   // its stack (from the pool), NULL before it starts
    uint3 tid;     // threadIdx
    int lin;       // linear index in the block
    int state;     // cuemu_runtime.cpp: READY, AT_BAR, AT_WARP, DONE
    unsigned mask; // the member mask of the warp collective it waits in
};

extern Thread *cur;
extern uint3 block_idx;
extern dim3 block_dim, grid_dim;

void syncthreads();
void warp_sync(unsigned mask);     // a warp collective's scheduling point: waits for every live lane of the mask
uint64_t *warp_slots();            // the current warp's exchange area: 32 lanes x 8 words
unsigned warp_arrived();           // the lanes that took part in the last completed warp_sync of this warp
unsigned warp_live();              // the lanes of this warp that have not exited
[[noreturn]] void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *dyn_smem();                  // extern __shared__: the launch's dynamic shared memory
void note_bad_lane(const char *op, int src);

inline int lane() { return cur->lin & 31; }

// launch: runs body() as every thread of every block, the blocks one after another (cuemu_runtime.cpp).
typedef void (*Thunk)(void *body);
void launch_impl(const char *kernel, const char *file, int line, Thunk thunk, void *body, dim3 grid, dim3 block,
                 size_t smem, cudaStream_t stream);
template <typename F> inline void launch(const char *kernel, const char *file, int line, F &&body, dim3 grid,
                                         dim3 block, size_t smem = 0, cudaStream_t stream = 0) {
    typedef typename std::remove_reference<F>::type Fn;
    launch_impl(kernel, file, line, [](void *b) { (*static_cast<Fn *>(b))(); }, (void *)&body, grid, block, smem,
                stream);
}

// A shuffle: every lane of the mask deposits its value, waits for the others, reads lane src's, waits again (so
// the area is free for the next collective). A source lane that did not take part yields poison (all ones) and a
// note on stderr: on the GPU that value is undefined.
template <typename T> inline T shfl(unsigned mask, T v, int src, const char *op) {
    static_assert(sizeof(T) <= 8, "cuemu: shuffles of at most 8 bytes");
    uint64_t *slot = warp_slots();
    const int me = lane();
    memcpy(&slot[me * 8], &v, sizeof(T));
    warp_sync(mask);
    T r;
    if (src < 0 || src > 31 || !(warp_arrived() >> src & 1)) {
        note_bad_lane(op, src);
        memset(&r, 0xff, sizeof r);
    } else {
        memcpy(&r, &slot[src * 8], sizeof(T));
    }
    warp_sync(mask);
    return r;
}

} // namespace cuemu

#define threadIdx (cuemu::cur->tid)
#define blockIdx (cuemu::block_idx)
#define blockDim (cuemu::block_dim)
#define gridDim (cuemu::grid_dim)
static constexpr int warpSize = 32;

inline void __syncthreads() { cuemu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { cuemu::warp_sync(mask); }
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int me = cuemu::lane(), base = me & ~(width - 1);
    return cuemu::shfl(mask, v, base + (src & (width - 1)), "__shfl_sync");
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
    const int me = cuemu::lane(), base = me & ~(width - 1), src = me ^ m;
    return cuemu::shfl(mask, v, src >= base + width ? me : src, "__shfl_xor_sync");
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    const int me = cuemu::lane(), base = me & ~(width - 1);
    return cuemu::shfl(mask, v, (me - base) + (int)d >= width ? me : me + (int)d, "__shfl_down_sync");
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    const int me = cuemu::lane(), base = me & ~(width - 1);
    return cuemu::shfl(mask, v, (me - base) < (int)d ? me : me - (int)d, "__shfl_up_sync");
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    uint64_t *slot = cuemu::warp_slots();
    const int me = cuemu::lane();
    slot[me * 8] = pred != 0;
    cuemu::warp_sync(mask);
    unsigned r = 0, in = cuemu::warp_arrived();
    for (int l = 0; l < 32; l++)
        if ((in >> l & 1) && slot[l * 8]) r |= 1u << l;
    cuemu::warp_sync(mask);
    return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, !pred) == 0; }
inline unsigned __activemask() { return cuemu::warp_live(); }

// Atomics: the threads of a launch run on one host thread and switch only at barriers and warp collectives, so a
// read-modify-write is atomic as written.
template <typename T> inline T atomicAdd(T *p, T v) { T o = *p; *p = o + v; return o; }
template <typename T> inline T atomicSub(T *p, T v) { T o = *p; *p = o - v; return o; }
template <typename T> inline T atomicMin(T *p, T v) { T o = *p; if (v < o) *p = v; return o; }
template <typename T> inline T atomicMax(T *p, T v) { T o = *p; if (v > o) *p = v; return o; }
template <typename T> inline T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }
template <typename T> inline T atomicCAS(T *p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }
template <typename T> inline T atomicOr(T *p, T v) { T o = *p; *p = o | v; return o; }
template <typename T> inline T atomicAnd(T *p, T v) { T o = *p; *p = o & v; return o; }

// cuda_runtime.h's kernel-pointer overload (nvcc only): the attribute is accepted, not enforced (a launch may use up
// to 227 KiB of dynamic shared memory with or without it)
template <typename T> inline cudaError_t cudaFuncSetAttribute(T *kernel, cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute(reinterpret_cast<const void *>(kernel), attr, value);
}

template <typename T> inline T __ldg(const T *p) { return *p; }

// Intrinsics. __expf / __logf: the libm functions (the GPU's approximations differ in the last bits; every
// comparison between two of our kernels sees the same function).
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
inline int __float_as_int(float x) { int u; memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }
inline float __int_as_float(int u) { float x; memcpy(&x, &u, 4); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= (x >> i & 1u) << (31 - i);
    return r;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline size_t min(size_t a, size_t b) { return a < b ? a : b; }
inline size_t max(size_t a, size_t b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// The inline PTX of core/cuda/flash_attn.cu (its #ifdef XR_CUDA_EMU paths call these).
namespace cuemu {
// ex2.approx.ftz.f32: 2^x with subnormal inputs and results flushed to zero (exp2f is exact where the hardware is
// within 2 ulp: kernels compared with each other see the same function).
inline float ex2_approx_ftz(float x) {
    if (fabsf(x) < 1.17549435e-38f) x = 0.0f;
    float y = exp2f(x);
    if (fabsf(y) < 1.17549435e-38f) y = 0.0f;
    return y;
}
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, warp-collective (cuemu_runtime.cpp).
void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
} // namespace cuemu

#endif
