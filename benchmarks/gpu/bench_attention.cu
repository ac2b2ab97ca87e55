/* bench_attention.cu: times BF16 mode's inference attention op alone (cuda_ops_attention, att NULL) for each
 * XR_CUDA_ATTENTION path at the bench_forward.sh shapes (XLM-R large: 16 heads of 64) and on a ragged batch, and
 * checks the paths against each other at full size; then the flash kernel itself per tile (XR_FLASH_TILES, the
 * register-capped ones too) on fp32 storage (xr_flash_attention with its bf16 copy, as BF16 mode calls it) and on
 * bf16 storage (xr_flash_attention_bf16), on the same bf16-exact inputs: times, how many bf16 outputs differ from
 * the fp32 kernel's copy and how many are NaN (0 expected). One JSON line per (shape, path) and per (shape, tile).
 * Built on request (benchmarks/CMakeLists.txt): cmake --build BUILD --target bench_attention
 * Usage: bench_attention [REPS] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

#include "cuda/flash_attn.h"
#include "cuda/ops_cuda.h"
#include "xr_common.h"

#define CK(call)                                                                                                 \
    do {                                                                                                         \
        cudaError_t e_ = (call);                                                                                 \
        if (e_ != cudaSuccess) {                                                                                 \
            fprintf(stderr, "bench_attention: %s: %s\n", #call, cudaGetErrorString(e_));                         \
            exit(1);                                                                                             \
        }                                                                                                        \
    } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The flash kernel per tile on fp32 and on bf16 storage. h: the shape's fp32 inputs, rounded to bf16 here (in
 * place) so both kernels see the same values. CUDA events around `reps` calls after one warm-up call. */
static void run_kernels(const char *name, const int32_t *doff, int S, int max_len, int N, int NH, int dh, float *h,
                        double flops, int reps) {
    size_t HD = (size_t)NH * dh, nq = (size_t)N * 3 * HD, no = (size_t)N * HD;
    uint16_t *h16 = (uint16_t *)xr_malloc(nq * 2), *o16 = (uint16_t *)xr_malloc(no * 2);
    uint16_t *obf = (uint16_t *)xr_malloc(no * 2);
    for (size_t i = 0; i < nq; i++) {
        uint32_t u;
        memcpy(&u, &h[i], 4);
        u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u; /* nearest even */
        memcpy(&h[i], &u, 4);
        h16[i] = (uint16_t)(u >> 16);
    }
    float *dq, *dout;
    __nv_bfloat16 *dq16, *dout16, *dobf;
    CK(cudaMalloc(&dq, nq * 4));
    CK(cudaMalloc(&dq16, nq * 2));
    CK(cudaMalloc(&dout, no * 4));
    CK(cudaMalloc(&dout16, no * 2));
    CK(cudaMalloc(&dobf, no * 2));
    CK(cudaMemcpy(dq, h, nq * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dq16, h16, nq * 2, cudaMemcpyHostToDevice));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int t = 0; t < XR_FLASH_TILES; t++) {
        XrFlashTile tile = (XrFlashTile)t;
        float ms[2];
        CK(cudaMemset(dout16, 0xFF, no * 2)); /* NaN: a value no call writes stays NaN */
        CK(cudaMemset(dobf, 0xFF, no * 2));
        for (int bf = 0; bf < 2; bf++) {
            for (int i = -1; i < reps; i++) {
                if (i == 0) CK(cudaEventRecord(e0));
                CK(bf ? xr_flash_attention_bf16(0, tile, dobf, dq16, doff, S, max_len, NH, dh)
                      : xr_flash_attention(0, tile, dout, dout16, dq, doff, S, max_len, NH, dh));
            }
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&ms[bf], e0, e1));
            ms[bf] /= reps;
        }
        CK(cudaMemcpy(o16, dout16, no * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(obf, dobf, no * 2, cudaMemcpyDeviceToHost));
        size_t differ = 0, nan = 0;
        for (size_t i = 0; i < no; i++) differ += o16[i] != obf[i], nan += (obf[i] & 0x7FFFu) > 0x7F80u;
        printf("{\"bench\": \"flash_kernel\", \"shape\": \"%s\", \"tile\": \"%s\", \"S\": %d, \"max_len\": %d, "
               "\"tokens\": %d, \"NH\": %d, \"dh\": %d, \"fp32_ms\": %.4f, \"bf16_ms\": %.4f, \"fp32_tflops\": %.1f, "
               "\"bf16_tflops\": %.1f, \"bf16_speedup\": %.3f, \"bf16_vs_fp32_out16_differ\": %zu, "
               "\"bf16_nan\": %zu}\n",
               name, xr_flash_tile_name(tile), S, max_len, N, NH, dh, ms[0], ms[1], flops / (ms[0] * 1e-3) / 1e12,
               flops / (ms[1] * 1e-3) / 1e12, ms[0] / ms[1], differ, nan);
        fflush(stdout);
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaFree(dq));
    CK(cudaFree(dq16));
    CK(cudaFree(dout));
    CK(cudaFree(dout16));
    CK(cudaFree(dobf));
    free(h16), free(o16), free(obf);
}

static void run_shape(const char *name, const int *lens, int S, int NH, int dh, int reps) {
    /* gemm (the reference of the differences), then every tile by its XR_CUDA_ATTENTION name */
    enum { NP = 1 + XR_FLASH_TILES };
    const char *paths[NP] = {"gemm"};
    for (int t = 0; t < XR_FLASH_TILES; t++) paths[1 + t] = xr_flash_tile_name((XrFlashTile)t);
    int32_t *off = (int32_t *)xr_malloc((S + 1) * sizeof *off);
    off[0] = 0;
    int max_len = 0;
    for (int s = 0; s < S; s++) {
        off[s + 1] = off[s] + lens[s];
        max_len = lens[s] > max_len ? lens[s] : max_len;
    }
    int N = off[S];
    size_t HD = (size_t)NH * dh, nq = (size_t)N * 3 * HD;
    float *h = (float *)xr_malloc(nq * sizeof(float));
    uint64_t r = 0x2545F4914F6CDD1Dull;
    for (size_t i = 0; i < nq; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        h[i] = -2.0f + 4.0f * (float)((r >> 40) / 16777216.0);
    }
    float *res[NP];
    double flops = 0;
    for (int s = 0; s < S; s++) flops += 4.0 * lens[s] * (double)lens[s] * dh * NH;
    for (int p = 0; p < NP; p++) {
        setenv("XR_CUDA_ATTENTION", paths[p], 1);
        Backend *g = cuda_ops_backend(0);
        unsetenv("XR_CUDA_ATTENTION");
        cuda_ops_set_gemm_mode(g, XR_GEMM_BF16);
        int32_t *doff = (int32_t *)cuda_ops_alloc(g, (S + 1) * sizeof *off);
        cuda_ops_to_device(g, doff, off, (S + 1) * sizeof *off);
        float *dq = (float *)cuda_ops_alloc(g, nq * sizeof(float)), *dout = (float *)cuda_ops_alloc(g, HD * N * 4);
        cuda_ops_to_device(g, dq, h, nq * sizeof(float));
        cuda_ops_attention(g, dout, NULL, dq, doff, S, max_len, NH, dh); /* warm-up: scratch, cuBLAS heuristics */
        cuda_ops_sync(g);
        double t0 = now();
        for (int i = 0; i < reps; i++) cuda_ops_attention(g, dout, NULL, dq, doff, S, max_len, NH, dh);
        cuda_ops_sync(g);
        double ms = (now() - t0) / reps * 1e3;
        res[p] = (float *)xr_malloc(HD * N * 4);
        cuda_ops_to_host(g, res[p], dout, HD * N * 4);
        double md = 0;
        for (size_t i = 0; i < HD * N; i++) md = fmax(md, fabs((double)res[p][i] - res[0][i]));
        printf("{\"bench\": \"attention_op\", \"shape\": \"%s\", \"path\": \"%s\", \"S\": %d, \"max_len\": %d, "
               "\"tokens\": %d, \"NH\": %d, \"dh\": %d, \"ms\": %.3f, \"tflops\": %.1f, \"max_abs_diff_vs_gemm\": "
               "%.3g}\n",
               name, paths[p], S, max_len, N, NH, dh, ms, flops / (ms * 1e-3) / 1e12, md);
        fflush(stdout);
        cuda_ops_free(g, doff), cuda_ops_free(g, dq), cuda_ops_free(g, dout);
        cuda_ops_backend_free(g);
    }
    for (int p = 0; p < NP; p++) free(res[p]);
    int32_t *doff;
    CK(cudaMalloc(&doff, (S + 1) * sizeof *off));
    CK(cudaMemcpy(doff, off, (S + 1) * sizeof *off, cudaMemcpyHostToDevice));
    run_kernels(name, doff, S, max_len, N, NH, dh, h, flops, reps);
    CK(cudaFree(doff));
    free(h), free(off);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (cuda_ops_device_count() <= 0) {
        fprintf(stderr, "bench_attention: no GPU\n");
        return 1;
    }
    int lens[128];
    for (int s = 0; s < 64; s++) lens[s] = 512;
    run_shape("T512xB64", lens, 64, 16, 64, reps);
    for (int s = 0; s < 128; s++) lens[s] = 256;
    run_shape("T256xB128", lens, 128, 16, 64, reps);
    uint64_t r = 88172645463325252ull; /* ragged: lengths 16 .. 512, as a reranking batch of mixed pairs */
    for (int s = 0; s < 128; s++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        lens[s] = 16 + (int)(r % 497);
    }
    run_shape("ragged16-512xB128", lens, 128, 16, 64, reps);
    return 0;
}
