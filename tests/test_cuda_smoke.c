/* test_cuda_smoke: the CUDA backend links cuBLAS and cuDNN, reports the device (the same through ops_device_info), and a cuBLAS GEMM
 * equals a plain CPU GEMM (double accumulation) on random inputs. Skipped (77) without a GPU or without the backend. */
#include <stdlib.h>

#include "testutil.h"
#ifdef XR_HAVE_CUDA
#include "cuda/xr_cuda.h"
#endif

int main(void) {
#ifndef XR_HAVE_CUDA
    TU_SKIP("built without the CUDA backend (-DXRANK_CUDA=OFF or nvcc missing)");
#else
    XrCudaInfo info;
    xr_cuda_info(&info);
    printf("CUDA runtime %d, driver %d, cuDNN %zu\n", info.cuda_runtime_version, info.cuda_driver_version,
           info.cudnn_version);
    TU_CHECK(info.cudnn_version > 0, "cuDNN version %zu", info.cudnn_version);
    if (info.device_count == 0) {
        tu_finish("test_cuda_smoke (libraries)");
        TU_SKIP("no GPU visible: libraries linked and answered, GEMM not run");
    }
    printf("device 0: %s, sm_%d%d, %d SMs, %.1f GiB, cuBLAS %d\n", info.name, info.cc_major, info.cc_minor,
           info.sm_count, info.total_mem / 1073741824.0, info.cublas_version);
    int m = 67, n = 45, k = 129;
    float *A = malloc(sizeof(float) * m * k), *B = malloc(sizeof(float) * k * n);
    float *C = malloc(sizeof(float) * m * n), *R = malloc(sizeof(float) * m * n);
    srand(7);
    for (int i = 0; i < m * k; i++) A[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < k * n; i++) B[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int p = 0; p < k; p++) acc += (double)A[i * k + p] * B[p * n + j];
            R[i * n + j] = (float)acc;
        }
    char msg[512];
    int rc = xr_cuda_sgemm_check(m, n, k, A, B, C, msg, sizeof msg);
    TU_CHECK(rc == 0, "%s", msg);
    if (rc == 0) tu_check_close("cuBLAS sgemm vs CPU", C, R, (size_t)m * n, 1e-4);
    free(A), free(B), free(C), free(R);
    return tu_finish("test_cuda_smoke");
#endif
}
