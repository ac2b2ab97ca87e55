/* xr_cuda.h: host-side entry points of the CUDA backend (C linkage, callable from C).
 * Built only when nvcc, cuBLAS and cuDNN are found (XR_HAVE_CUDA). Code above core asks ops_device_info (ops.h);
 * NCCL belongs to dist/ (its communicator tests NCCL). */
#ifndef XR_CUDA_H
#define XR_CUDA_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int device_count;      /* 0 when no GPU is visible (the driver may still be absent) */
    char name[256];        /* device 0 */
    int cc_major, cc_minor;
    size_t total_mem;
    int sm_count;
    int cuda_runtime_version, cuda_driver_version;
    int cublas_version;
    size_t cudnn_version;
} XrCudaInfo;

/* Query the runtime and libraries; never fails hard: device_count = 0 when no GPU or no driver. */
void xr_cuda_info(XrCudaInfo *info);
/* C[m,n] = A[m,k] B[k,n] (row-major f32) with cuBLAS on device 0 (TF32 off). Returns 0, or -1 with msg. */
int xr_cuda_sgemm_check(int m, int n, int k, const float *A, const float *B, float *C, char *msg, size_t msg_len);

#ifdef __cplusplus
}
#endif
#endif
