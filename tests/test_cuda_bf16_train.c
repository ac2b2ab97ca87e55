/* test_cuda_bf16_train: the parts of bf16 training (issue 13) built on the GPU, against the CPU backend's
 * emulation (core/cpu/cpu_precision.c, proven by test_bf16_train):
 * - ops_bf16_weights / ops_weights_refresh: the working copy is filled once at registration and once per refresh
 *   (counts), and the cast kernel rounds like xr_bf16_round: a linear through the copy on the GPU equals the CPU
 *   emulation's (bf16 operands, fp32 accumulation) up to the accumulation order, on odd shapes, for weights
 *   that are views inside the registered buffer (unaligned offsets included);
 * - after the master changes, the GPU's output follows only after the refresh (the copy is not re-cast per GEMM).
 * Bound: both sides multiply the same bf16 values exactly and sum K products in fp32 in different orders: per
 * output |diff| <= 2 K 2^-24 (|b| + sum_k |x_k w_k|), checked as 1e-5 of that sum for K <= 300.
 * Exit 77 (skipped) without a GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "testutil.h"

static void linear_on(Backend *be, float *y_host, const float *x_host, const float *master_host, size_t n_master,
                      size_t w_off, const float *b_host, int M, int N, int K, int change_master, int refresh) {
    float *master = ops_alloc(be, n_master * sizeof(float)), *x = ops_alloc(be, (size_t)M * K * sizeof(float));
    float *y = ops_alloc(be, (size_t)M * N * sizeof(float)), *b = ops_alloc(be, (size_t)N * sizeof(float));
    ops_to_device(be, master, master_host, n_master * sizeof(float));
    ops_to_device(be, x, x_host, (size_t)M * K * sizeof(float));
    ops_to_device(be, b, b_host, (size_t)N * sizeof(float));
    ops_bf16_weights(be, master, n_master);
    if (change_master) {
        /* the master moves (an optimizer step); the copy must not follow until refreshed */
        float *scaled = xr_malloc(n_master * sizeof(float));
        for (size_t i = 0; i < n_master; i++) scaled[i] = master_host[i] * 0.5f;
        ops_to_device(be, master, scaled, n_master * sizeof(float));
        free(scaled);
        if (refresh) {
            int64_t fills = ops_weights_refresh(be);
            TU_CHECK(fills == 2, "%s: working copy filled %lld times after one refresh, want 2",
                     ops_device_name(be->device), (long long)fills);
        }
    }
    ops_linear(be, y, x, master + w_off, b, M, N, K);
    ops_to_host(be, y_host, y, (size_t)M * N * sizeof(float));
    ops_bf16_weights(be, NULL, 0);
    ops_free(be, master), ops_free(be, x), ops_free(be, y), ops_free(be, b);
}

/* Largest |a - b| over M x N outputs, relative to |bias_j| + sum_k |x_ik w_jk| of that output. */
static double rel_diff(const float *a, const float *b, const float *x, const float *w, const float *bias, int M, int N,
                       int K) {
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double mag = fabs((double)bias[j]);
            for (int k = 0; k < K; k++) mag += fabs((double)x[(size_t)i * K + k] * w[(size_t)j * K + k]);
            double d = fabs((double)a[(size_t)i * N + j] - b[(size_t)i * N + j]) / (mag + 1e-30);
            if (d > worst) worst = d;
        }
    return worst;
}

/* The GPU's bf16 linear through the working copy against the CPU emulation's. change: the master is halved after
 * registration, then refreshed (refresh 1: both read the new weights) or not (refresh 0: the GPU must still read
 * the old ones, i.e. equal the CPU emulation without the change). */
static void test_linear(Backend *cpu, Backend *gpu, int M, int N, int K, size_t w_off, int change, int refresh) {
    TuRng r = {0x5eed + (uint64_t)M * 131 + (uint64_t)K};
    size_t n_master = w_off + (size_t)N * K + 17;
    float *master = tu_rng_vec(&r, n_master, 0.5f), *x = tu_rng_vec(&r, (size_t)M * K, 2.0f);
    float *b = tu_rng_vec(&r, (size_t)N, 0.1f);
    float *yc = xr_malloc((size_t)M * N * sizeof(float)), *yg = xr_malloc((size_t)M * N * sizeof(float));
    int ref_change = change && refresh;
    linear_on(cpu, yc, x, master, n_master, w_off, b, M, N, K, ref_change, ref_change);
    for (size_t i = 0; i < (size_t)M * N; i++) yg[i] = NAN; /* poisoned: an unwritten output fails */
    linear_on(gpu, yg, x, master, n_master, w_off, b, M, N, K, change, refresh);
    double worst = rel_diff(yc, yg, x, master + w_off, b, M, N, K);
    const char *what = change ? (refresh ? " (master changed, refreshed)" : " (master changed, not refreshed)") : "";
    TU_CHECK(worst <= 1e-5, "bf16 linear M %d N %d K %d offset %zu%s: GPU vs CPU emulation %.3g of sum |x||w|", M, N,
             K, w_off, what, worst);
    printf("bf16 linear M %4d N %4d K %4d offset %5zu%-32s: GPU vs CPU emulation %.2e of sum |x||w|\n", M, N, K,
           w_off, what, worst);
    free(master), free(x), free(b), free(yc), free(yg);
}

int main(void) {
    if (ops_device_count(XR_DEV_CUDA) == 0) TU_SKIP("no GPU visible (or built without the CUDA backend)");
    XrErr e;
    Backend *gpu = ops_backend_create(XR_DEV_CUDA, 0, XR_PREC_FP32, 0, &e);
    if (!gpu) {
        fprintf(stderr, "ops_backend_create(cuda): %s\n", e.msg);
        return 1;
    }
    Backend *cpu = ops_backend_cpu(2);
    int shapes[][3] = {{1, 1, 1}, {63, 65, 129}, {128, 384, 384}, {300, 96, 257}};
    size_t offs[] = {0, 3, 1027};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t o = 0; o < sizeof offs / sizeof offs[0]; o++)
            test_linear(cpu, gpu, shapes[s][0], shapes[s][1], shapes[s][2], offs[o], 0, 0);
    test_linear(cpu, gpu, 63, 65, 129, 3, 1, 1);
    test_linear(cpu, gpu, 63, 65, 129, 3, 1, 0);
    ops_backend_free(cpu);
    ops_backend_free(gpu);
    return tu_finish("test_cuda_bf16_train");
}
