/* cpu_math.h: vectorisable fp32 exp and exact-GELU helpers for the CPU kernels (static inline, so each ISA
 * clone of a kernel gets its own vector code; libm's expf/erff are scalar calls that block vectorisation).
 * Accuracy: exp within ~2 ulp on [-87, 88]; Phi (normal CDF) within ~1e-7 absolute. */
#ifndef XR_CPU_MATH_H
#define XR_CPU_MATH_H
#include <stdint.h>
#include <string.h>

#include "bf16_bits.h" /* xr_bf16_bits: the one fp32 -> bf16 rounding */

/* e^x = 2^n e^r with n = round(x / ln 2), |r| <= ln2 / 2, e^r by its degree-7 Taylor polynomial (error
 * below 1e-8 relative); 2^n is added to the exponent bits. Inputs are clamped to [-87, 88] so that the result
 * stays a normal float (softmax and Phi never need more: e^-87 ~ 1.6e-38). */
static inline float xr_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* round to nearest by adding and removing 1.5 * 2^23 (exact for |v| < 2^22; needs no -ffast-math) */
    float n = (x * 1.44269504089f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f; /* ln 2 split in a part exact in float and the rest */
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    memcpy(&bits, &p, 4);
    bits += (int32_t)n * (1 << 23);
    memcpy(&p, &bits, 4);
    return p;
}

/* Phi(x) = 0.5 erfc(-x / sqrt 2), the standard normal CDF, so exact GELU(x) = x Phi(x).
 * With z = x / sqrt 2 and t = |z|: for t < 0.9, erf(z) = z P(z^2); above, erfc(t) = exp(Q(t)) with Q a
 * polynomial fitted to log erfc on [0.9, 4] (t clamped at 4, where erfc < 2e-8). Both are least-squares fits
 * made for xrank (P: relative error ~2e-7; Q: absolute error of erf ~8e-8, float evaluation included). */
static inline float xr_phif(float x) {
    float z = x * 0.70710678118654752f;
    float s = z * z;
    float p = 8.508394967e-05f;
    p = p * s - 8.174483664e-04f;
    p = p * s + 5.203752778e-03f;
    p = p * s - 2.686046250e-02f;
    p = p * s + 1.128371432e-01f;
    p = p * s - 3.761263490e-01f;
    p = p * s + 1.128379226e+00f;
    float phi_small = 0.5f + 0.5f * (z * p);
    float t = z < 0.0f ? -z : z;
    t = t > 4.0f ? 4.0f : t;
    float q = -2.117903023e-05f;
    q = q * t + 4.352589312e-04f;
    q = q * t - 4.174096975e-03f;
    q = q * t + 2.512531355e-02f;
    q = q * t - 1.082860529e-01f;
    q = q * t - 6.333442330e-01f;
    q = q * t - 1.129514933e+00f;
    q = q * t + 1.744384354e-04f;
    float half_erfc = 0.5f * xr_expf(q);
    float phi_large = z > 0.0f ? 1.0f - half_erfc : half_erfc;
    return (s < 0.81f) ? phi_small : phi_large;
}

static inline float xr_geluf(float x) { return x * xr_phif(x); }

/* x rounded to the nearest bf16 (ties to even), as an fp32 word: what __float2bfloat16_rn stores on the GPU
 * (core/bf16_bits.h: finite values rounding past the largest bf16 become inf; a NaN stays a quiet NaN). */
static inline float xr_bf16_round(float x) {
    uint32_t u = (uint32_t)xr_bf16_bits(x) << 16;
    memcpy(&x, &u, 4);
    return x;
}

#endif
