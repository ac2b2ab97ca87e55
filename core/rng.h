/* rng.h: xrank's counter-based random numbers (Philox4x32-10): every value is a pure function of a 64-bit key
 * and a 128-bit counter, so dropout masks and initial weights depend only on (seed, step, site, position),
 * never on thread count, work split, packing or device. Also the definition of the dropout mask itself, which
 * the GPU kernels (core/cuda/train_ops.cu) reproduce bit for bit with the same rng_philox. */
#ifndef XR_RNG_H
#define XR_RNG_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The mask helpers are inlined into each ISA clone of the kernels that call them, so they vectorise there. */
#if defined(__GNUC__)
#define XR_RNG_INLINE static inline __attribute__((always_inline))
#else
#define XR_RNG_INLINE static inline
#endif
/* The generator itself also compiles for the GPU (nvcc), so device kernels draw the very same masks. */
#ifdef __CUDACC__
#define XR_RNG_HD static __forceinline__ __host__ __device__
#else
#define XR_RNG_HD XR_RNG_INLINE
#endif

/* Philox4x32 with 10 rounds (Salmon et al., SC'11): four 32-bit outputs per (key, counter). */
XR_RNG_HD void rng_philox(uint32_t out[4], const uint32_t ctr[4], uint64_t key) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0, c1 = (uint32_t)p1, c2 = n2, c3 = (uint32_t)p0;
        k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* splitmix64's finaliser: a bijective 64-bit mix, used to derive keys. */
static inline uint64_t rng_mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The key of one random stream: run seed, optimizer step, and a site number naming the use (a dropout
 * site of one layer, an initialised tensor...). Distinct triples give unrelated streams. */
uint64_t rng_key(uint64_t seed, uint64_t step, uint64_t site);

/* Uniform float in [0, 1) from 24 random bits. */
static inline float rng_u01(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

/* Dropout keeps an element when its 32-bit draw is >= this threshold (probability 1 - p). */
static inline uint32_t rng_drop_threshold(float p) {
    if (p <= 0.0f) return 0;
    double t = (double)p * 4294967296.0;
    return t >= 4294967295.0 ? 0xFFFFFFFFu : (uint32_t)t;
}

/* Philox on 16 consecutive counters {c0 + l, c1, c2, c3}, l = 0..15, output word k of counter l in out[k][l]:
 * the same numbers as 16 rng_philox calls, written lane-wise so the compiler vectorises it (64-bit products of
 * 32-bit lanes). */
XR_RNG_INLINE void rng_philox16(uint32_t out[4][16], uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                uint64_t key) {
    /* one straight-line body per lane (rounds unrolled, key schedule precomputed), so the lane loop vectorises;
     * 32-bit values sit in 64-bit lanes, making the products plain 64-bit multiplies (vpmuludq) */
    uint64_t ks0[10], ks1[10];
    for (int r = 0; r < 10; r++)
        ks0[r] = (uint32_t)((uint32_t)key + (uint32_t)r * 0x9E3779B9u),
        ks1[r] = (uint32_t)((uint32_t)(key >> 32) + (uint32_t)r * 0xBB67AE85u);
    for (int l = 0; l < 16; l++) {
        uint64_t a = (uint32_t)(c0 + (uint32_t)l), b = c1, c = c2, d = c3;
#ifndef __CUDACC__ /* nvcc compiles this host helper too and does not know the GCC pragma */
#pragma GCC unroll 10
#endif
        for (int r = 0; r < 10; r++) {
            uint64_t p0 = 0xD2511F53ull * a, p1 = 0xCD9E8D57ull * c;
            uint64_t na = (p1 >> 32) ^ b ^ ks0[r], nc = (p0 >> 32) ^ d ^ ks1[r];
            b = p1 & 0xFFFFFFFFu, d = p0 & 0xFFFFFFFFu, a = na, c = nc;
        }
        out[0][l] = (uint32_t)a, out[1][l] = (uint32_t)b, out[2][l] = (uint32_t)c, out[3][l] = (uint32_t)d;
    }
}

/* The dropout mask: dst[j] = (res ? res[j] : 0) + src[j] * (keep ? 1/(1-p) : 0) for j in [0, n), where
 * element j's draw is output j % 4 of Philox(key, {j / 4, c1, id lo, id hi}) and it is kept when the draw is
 * >= thr. c1 is the position (a token's index in its sequence; for attention probabilities query row |
 * head << 16) and id the sequence's id (e.g. its global example index). Element-wise, so dst may alias src or
 * res. Callers pass thr = rng_drop_threshold(p) and scale = 1 / (1 - p). Blocks of 64 elements take the
 * vectorised generator; the tail takes rng_philox: the same draws. */
XR_RNG_INLINE void rng_dropout_add_span(float *dst, const float *src, const float *res, int n, uint64_t key,
                                        uint32_t c1, uint64_t id, uint32_t thr, float scale) {
    uint32_t ctr[4] = {0, c1, (uint32_t)id, (uint32_t)(id >> 32)}, r[4];
    int j0 = 0;
    for (; j0 + 64 <= n; j0 += 64) {
        uint32_t o[4][16], w[64];
        rng_philox16(o, (uint32_t)(j0 >> 2), c1, ctr[2], ctr[3], key);
        for (int l = 0; l < 16; l++)
            for (int k = 0; k < 4; k++) w[4 * l + k] = o[k][l];
        for (int e = 0; e < 64; e++) {
            float v = w[e] >= thr ? src[j0 + e] * scale : 0.0f;
            dst[j0 + e] = res ? res[j0 + e] + v : v;
        }
    }
    for (; j0 < n; j0 += 4) {
        ctr[0] = (uint32_t)(j0 >> 2);
        rng_philox(r, ctr, key);
        int m = n - j0 < 4 ? n - j0 : 4;
        for (int k = 0; k < m; k++) {
            float v = r[k] >= thr ? src[j0 + k] * scale : 0.0f;
            dst[j0 + k] = res ? res[j0 + k] + v : v;
        }
    }
}

XR_RNG_INLINE void rng_dropout_span(float *dst, const float *src, int n, uint64_t key, uint32_t c1, uint64_t id,
                                    uint32_t thr, float scale) {
    rng_dropout_add_span(dst, src, (const float *)0, n, key, c1, id, thr, scale);
}

/* out[i] = mean + std * N(0, 1) for i in [0, n): Box-Muller on Philox(key, {i / 2, 0, 0, 0}) (two normals per
 * draw of four words), so element i's value does not depend on n. */
void rng_normal_fill(float *out, size_t n, uint64_t key, float mean, float std);

#ifdef __cplusplus
}
#endif
#endif
