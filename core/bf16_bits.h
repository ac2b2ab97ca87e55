/* bf16_bits.h: fp32 -> bf16 rounding (nearest, ties to even) as one integer formula for the host and the CUDA
 * kernels, so a value rounded on either side has the same bits: what __float2bfloat16_rn gives for finite
 * values (those rounding past the largest bf16 become inf); a NaN stays a quiet NaN. */
#ifndef XR_BF16_BITS_H
#define XR_BF16_BITS_H
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define XR_BF16_HD __host__ __device__
#else
#define XR_BF16_HD
#endif

static inline XR_BF16_HD uint16_t xr_bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) {
        if (u & 0x007fffffu) u |= 0x00400000u; /* keep NaN a NaN after dropping the low mantissa */
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);
    }
    return (uint16_t)(u >> 16);
}

#endif
