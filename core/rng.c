/* rng.c: key derivation and normal draws on top of the Philox generator in rng.h. */
#include "rng.h"

#include <math.h>

uint64_t rng_key(uint64_t seed, uint64_t step, uint64_t site) {
    /* nested mixing: (seed, step, site) and (seed', step', site') collide only by a 64-bit accident */
    return rng_mix64(rng_mix64(rng_mix64(seed) ^ step) ^ (site * 0xD6E8FEB86659FD93ull));
}

void rng_normal_fill(float *out, size_t n, uint64_t key, float mean, float std) {
    uint32_t ctr[4] = {0, 0, 0, 0}, r[4];
    for (size_t i = 0; i < n; i += 2) {
        ctr[0] = (uint32_t)(i >> 1);
        ctr[1] = (uint32_t)((uint64_t)i >> 33);
        rng_philox(r, ctr, key);
        /* 53-bit uniforms, u1 in (0, 1] so the log is finite */
        double u1 = ((double)(((uint64_t)r[0] << 21) ^ r[1]) + 1.0) / 9007199254740992.0;
        double u2 = (double)(((uint64_t)r[2] << 21) ^ r[3]) / 9007199254740992.0;
        u1 = u1 > 1.0 ? 1.0 : u1;
        double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
        out[i] = (float)(mean + std * rad * cos(th));
        if (i + 1 < n) out[i + 1] = (float)(mean + std * rad * sin(th));
    }
}
