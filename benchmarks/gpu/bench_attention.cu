/* bench_attention.cu: times BF16 mode's inference attention op alone (cuda_ops_attention, att NULL) for each
 * XR_CUDA_ATTENTION path at the bench_forward.sh shapes (XLM-R large: 16 heads of 64) and on a ragged batch, and
 * checks the paths against each other at full size. One JSON line per (shape, path). Built by bench_forward.sh:
 *   nvcc -O2 -arch=sm_90 -Ibase -Iio -Icore benchmarks/gpu/bench_attention.cu core/cuda/ops_cuda.cu \
 *        core/cuda/flash_attn.cu base/xr_common.c -lcublasLt -lcublas
 * Usage: bench_attention [REPS] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cuda/ops_cuda.h"
#include "xr_common.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void run_shape(const char *name, const int *lens, int S, int NH, int dh, int reps) {
    static const char *const paths[] = {"gemm", "flash64", "flash128", "flash128w8", "flash256"};
    enum { NP = 5 };
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
