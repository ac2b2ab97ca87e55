// cuda_smoke.cu: the CUDA backend's device / library report (behind ops_device_info) and a bare cuBLAS GEMM
// that test_cuda_smoke compares with the CPU. NCCL is dist/'s: its communicator tests it.
#include "xr_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>
#include <string.h>

#define XR_CU_TRY(call, what)                                                                   \
    do {                                                                                        \
        cudaError_t err_ = (call);                                                              \
        if (err_ != cudaSuccess) {                                                              \
            snprintf(msg, msg_len, "%s:%d: %s: %s", __FILE__, __LINE__, what, cudaGetErrorString(err_)); \
            goto fail;                                                                          \
        }                                                                                       \
    } while (0)

extern "C" void xr_cuda_info(XrCudaInfo *info) {
    memset(info, 0, sizeof *info);
    cudaRuntimeGetVersion(&info->cuda_runtime_version);
    cudaDriverGetVersion(&info->cuda_driver_version);
    info->cudnn_version = cudnnGetVersion();
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        n = 0;
    }
    info->device_count = n;
    if (n > 0) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) {
            snprintf(info->name, sizeof info->name, "%s", p.name);
            info->cc_major = p.major;
            info->cc_minor = p.minor;
            info->total_mem = p.totalGlobalMem;
            info->sm_count = p.multiProcessorCount;
        }
        cublasHandle_t h;
        if (cublasCreate(&h) == CUBLAS_STATUS_SUCCESS) {
            cublasGetVersion(h, &info->cublas_version);
            cublasDestroy(h);
        }
    }
}

extern "C" int xr_cuda_sgemm_check(int m, int n, int k, const float *A, const float *B, float *C, char *msg,
                                   size_t msg_len) {
    float *dA = nullptr, *dB = nullptr, *dC = nullptr;
    cublasHandle_t h = nullptr;
    const float one = 1.f, zero = 0.f;
    cublasStatus_t st;
    XR_CU_TRY(cudaMalloc(&dA, sizeof(float) * m * k), "cudaMalloc A");
    XR_CU_TRY(cudaMalloc(&dB, sizeof(float) * k * n), "cudaMalloc B");
    XR_CU_TRY(cudaMalloc(&dC, sizeof(float) * m * n), "cudaMalloc C");
    XR_CU_TRY(cudaMemcpy(dA, A, sizeof(float) * m * k, cudaMemcpyHostToDevice), "copy A");
    XR_CU_TRY(cudaMemcpy(dB, B, sizeof(float) * k * n, cudaMemcpyHostToDevice), "copy B");
    if ((st = cublasCreate(&h)) != CUBLAS_STATUS_SUCCESS) {
        snprintf(msg, msg_len, "cublasCreate: %s", cublasGetStatusString(st));
        goto fail;
    }
    cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
    // row-major C = A B  <=>  column-major C^T = B^T A^T
    st = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, dB, n, dA, k, &zero, dC, n);
    if (st != CUBLAS_STATUS_SUCCESS) {
        snprintf(msg, msg_len, "cublasSgemm: %s", cublasGetStatusString(st));
        goto fail;
    }
    XR_CU_TRY(cudaMemcpy(C, dC, sizeof(float) * m * n, cudaMemcpyDeviceToHost), "copy C");
    cublasDestroy(h);
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
    return 0;
fail:
    if (h) cublasDestroy(h);
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
    return -1;
}
