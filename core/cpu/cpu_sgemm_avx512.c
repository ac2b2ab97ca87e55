/* cpu_sgemm_avx512.c: xrank's own AVX-512 kernel for nn.Linear products y (+)= x W^T, used where OpenBLAS
 * would run its AVX2 kernels on an AVX-512 CPU (e.g. OpenBLAS 0.3.21, which predates AMD Zen 5, or
 * OPENBLAS_CORETYPE=Haswell): there it is ~1.5x faster. Blocked as usual (W panels of kc x 32 stay in L1,
 * x blocks of mc x kc in L2), a 12 x 32 register tile, fp32 accumulation along k in order. */
#include "cpu_ops.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define XG_MR 12  /* rows of the register tile: 12 x 2 accumulators + 2 W vectors + 1 broadcast of 32 zmm */
#define XG_NR 32  /* columns: two zmm */
#define XG_KC 256 /* a W panel (kc x 32 floats = 32 KiB) fits L1 */
#define XG_MC 168 /* an x block (mc x kc) fits L2 */
#define XG_NC 1024

size_t cpu_sgemm_avx512_scratch(void) {
    size_t mc = (XG_MC + XG_MR - 1) / XG_MR * XG_MR;
    return (size_t)XG_KC * XG_NC + (size_t)XG_KC * mc;
}

/* c[MR x NR] (ldc) = (accumulate ? c : 0) + ap[kc][MR] . bp[kc][NR] */
__attribute__((target("avx512f"))) static void xg_kernel(int kc, const float *ap, const float *bp, float *c,
                                                          size_t ldc, int accumulate) {
    __m512 acc[XG_MR][2];
    for (int i = 0; i < XG_MR; i++) acc[i][0] = _mm512_setzero_ps(), acc[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(bp + (size_t)k * XG_NR), b1 = _mm512_load_ps(bp + (size_t)k * XG_NR + 16);
        const float *a = ap + (size_t)k * XG_MR;
#pragma GCC unroll 12
        for (int i = 0; i < XG_MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    for (int i = 0; i < XG_MR; i++) {
        float *ci = c + (size_t)i * ldc;
        if (accumulate) {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_loadu_ps(ci));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_loadu_ps(ci + 16));
        }
        _mm512_storeu_ps(ci, acc[i][0]);
        _mm512_storeu_ps(ci + 16, acc[i][1]);
    }
}

/* y[M, N] (row stride ldy) = (accumulate ? y : 0) + x[M, K] . W[N, K]^T on one thread, where x is stored
 * as is (x_t 0, ldx its row stride) or transposed ([K, M], x_t 1), and W likewise. Transposed operands only
 * change how the panels are packed (read along the stored rows), not the kernel.
 * scratch: cpu_sgemm_avx512_scratch() floats, 64-byte aligned. */
__attribute__((target("avx512f"))) void cpu_sgemm_avx512(int M, int N, int K, const float *x, size_t ldx, int x_t,
                                                         const float *W, size_t ldw, int w_t, float *y, size_t ldy,
                                                         int accumulate, float *scratch) {
    float *bpack = scratch, *apack = scratch + (size_t)XG_KC * XG_NC;
    float tile[XG_MR * XG_NR] __attribute__((aligned(64)));
    if (K <= 0) { /* y = 0 or unchanged, as a GEMM with an empty inner dimension gives */
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(y + (size_t)i * ldy, 0, (size_t)N * sizeof(float));
        return;
    }
    for (int jc = 0; jc < N; jc += XG_NC) {
        int nc = N - jc < XG_NC ? N - jc : XG_NC;
        for (int pc = 0; pc < K; pc += XG_KC) {
            int kc = K - pc < XG_KC ? K - pc : XG_KC;
            int acc = accumulate || pc > 0;
            /* W block -> panels of 32 columns, k-major, zero-padded past N */
            for (int jr = 0; jr < nc; jr += XG_NR) {
                float *bp = bpack + (size_t)jr * kc;
                int nr = nc - jr < XG_NR ? nc - jr : XG_NR;
                if (w_t) { /* W stored [K, N]: row k of the store is row k of the panel */
                    for (int k = 0; k < kc; k++) {
                        const float *w = W + (size_t)(pc + k) * ldw + jc + jr;
                        float *b = bp + (size_t)k * XG_NR;
                        for (int j = 0; j < nr; j++) b[j] = w[j];
                        for (int j = nr; j < XG_NR; j++) b[j] = 0.0f;
                    }
                    continue;
                }
                for (int j = 0; j < XG_NR; j++) {
                    if (j < nr) {
                        const float *w = W + (size_t)(jc + jr + j) * ldw + pc;
                        for (int k = 0; k < kc; k++) bp[(size_t)k * XG_NR + j] = w[k];
                    } else {
                        for (int k = 0; k < kc; k++) bp[(size_t)k * XG_NR + j] = 0.0f;
                    }
                }
            }
            for (int ic = 0; ic < M; ic += XG_MC) {
                int mc = M - ic < XG_MC ? M - ic : XG_MC;
                /* x block -> panels of 12 rows, k-major, zero-padded past M */
                for (int ir = 0; ir < mc; ir += XG_MR) {
                    float *ap = apack + (size_t)ir * kc;
                    int mr = mc - ir < XG_MR ? mc - ir : XG_MR;
                    if (x_t) { /* x stored [K, M] */
                        for (int k = 0; k < kc; k++) {
                            const float *xr = x + (size_t)(pc + k) * ldx + ic + ir;
                            float *a = ap + (size_t)k * XG_MR;
                            for (int i = 0; i < mr; i++) a[i] = xr[i];
                            for (int i = mr; i < XG_MR; i++) a[i] = 0.0f;
                        }
                        continue;
                    }
                    if (mr == XG_MR) { /* full panel: 4 x 4 transposes, stores of 4 contiguous floats */
                        int k4 = kc & ~3;
                        for (int ig = 0; ig < XG_MR; ig += 4) {
                            const float *r0 = x + (size_t)(ic + ir + ig) * ldx + pc, *r1 = r0 + ldx, *r2 = r1 + ldx,
                                        *r3 = r2 + ldx;
                            for (int k = 0; k < k4; k += 4) {
                                __m128 a0 = _mm_loadu_ps(r0 + k), a1 = _mm_loadu_ps(r1 + k), a2 = _mm_loadu_ps(r2 + k),
                                       a3 = _mm_loadu_ps(r3 + k);
                                _MM_TRANSPOSE4_PS(a0, a1, a2, a3);
                                float *a = ap + (size_t)k * XG_MR + ig;
                                _mm_storeu_ps(a, a0);
                                _mm_storeu_ps(a + XG_MR, a1);
                                _mm_storeu_ps(a + 2 * XG_MR, a2);
                                _mm_storeu_ps(a + 3 * XG_MR, a3);
                            }
                            for (int k = k4; k < kc; k++) {
                                float *a = ap + (size_t)k * XG_MR + ig;
                                a[0] = r0[k], a[1] = r1[k], a[2] = r2[k], a[3] = r3[k];
                            }
                        }
                        continue;
                    }
                    for (int i = 0; i < XG_MR; i++) {
                        if (i < mr) {
                            const float *xr = x + (size_t)(ic + ir + i) * ldx + pc;
                            for (int k = 0; k < kc; k++) ap[(size_t)k * XG_MR + i] = xr[k];
                        } else {
                            for (int k = 0; k < kc; k++) ap[(size_t)k * XG_MR + i] = 0.0f;
                        }
                    }
                }
                for (int jr = 0; jr < nc; jr += XG_NR) {
                    int nr = nc - jr < XG_NR ? nc - jr : XG_NR;
                    for (int ir = 0; ir < mc; ir += XG_MR) {
                        int mr = mc - ir < XG_MR ? mc - ir : XG_MR;
                        float *c = y + (size_t)(ic + ir) * ldy + jc + jr;
                        const float *ap = apack + (size_t)ir * kc, *bp = bpack + (size_t)jr * kc;
                        if (mr == XG_MR && nr == XG_NR) {
                            xg_kernel(kc, ap, bp, c, ldy, acc);
                            continue;
                        }
                        /* edge tile: through a full-size buffer, only the valid part goes back */
                        for (int i = 0; i < mr; i++)
                            for (int j = 0; j < nr; j++) tile[i * XG_NR + j] = acc ? c[(size_t)i * ldy + j] : 0.0f;
                        xg_kernel(kc, ap, bp, tile, XG_NR, 1);
                        for (int i = 0; i < mr; i++)
                            for (int j = 0; j < nr; j++) c[(size_t)i * ldy + j] = tile[i * XG_NR + j];
                    }
                }
            }
        }
    }
}

void cpu_sgemm_avx512_nt(int M, int N, int K, const float *x, size_t ldx, const float *W, size_t ldw, float *y,
                         size_t ldy, int accumulate, float *scratch) {
    cpu_sgemm_avx512(M, N, K, x, ldx, 0, W, ldw, 0, y, ldy, accumulate, scratch);
}

int cpu_sgemm_avx512_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
}

#else /* not x86-64 GCC/clang: never chosen */

size_t cpu_sgemm_avx512_scratch(void) { return 0; }
void cpu_sgemm_avx512_nt(int M, int N, int K, const float *x, size_t ldx, const float *W, size_t ldw, float *y,
                         size_t ldy, int accumulate, float *scratch) {
    (void)M, (void)N, (void)K, (void)x, (void)ldx, (void)W, (void)ldw, (void)y, (void)ldy, (void)accumulate;
    (void)scratch;
}
void cpu_sgemm_avx512(int M, int N, int K, const float *x, size_t ldx, int x_t, const float *W, size_t ldw, int w_t,
                      float *y, size_t ldy, int accumulate, float *scratch) {
    (void)M, (void)N, (void)K, (void)x, (void)ldx, (void)x_t, (void)W, (void)ldw, (void)w_t, (void)y, (void)ldy;
    (void)accumulate, (void)scratch;
}
int cpu_sgemm_avx512_available(void) { return 0; }

#endif
