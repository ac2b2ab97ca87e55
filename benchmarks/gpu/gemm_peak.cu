// gemm_peak.cu: the card's measured dense GEMM peak through cuBLASLt, the MFU denominator for every GPU
// benchmark. bf16 (and fp16, tf32) inputs, fp32 accumulation, square and transformer-shaped problems.
// Build: nvcc -O2 -o gemm_peak gemm_peak.cu -lcublasLt -lcublas ; run: ./gemm_peak [reps]
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                   \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) {                                                                \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));         \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)
#define CKB(x)                                                                                  \
    do {                                                                                        \
        cublasStatus_t s_ = (x);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                      \
            fprintf(stderr, "%s:%d: cublasLt: %s\n", __FILE__, __LINE__, cublasGetStatusString(s_)); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

__global__ void fill_random(unsigned short *p, size_t n, unsigned seed, int bf16) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned x = (unsigned)i * 2654435761u ^ seed;
    x ^= x >> 13, x *= 0x5bd1e995u, x ^= x >> 15;
    float v = ((x & 0xffff) / 65535.0f - 0.5f);
    if (bf16) {
        __nv_bfloat16 b = __float2bfloat16(v);
        p[i] = *(unsigned short *)&b;
    } else {
        __half h = __float2half(v);
        p[i] = *(unsigned short *)&h;
    }
}

static double bench(cublasLtHandle_t lt, int m, int n, int k, cudaDataType_t dt, void *ws, size_t wss, int reps) {
    void *A, *B, *C;
    CK(cudaMalloc(&A, (size_t)m * k * 2));
    CK(cudaMalloc(&B, (size_t)k * n * 2));
    CK(cudaMalloc(&C, (size_t)m * n * 2));
    int bf = dt == CUDA_R_16BF;
    fill_random<<<(unsigned)(((size_t)m * k + 255) / 256), 256>>>((unsigned short *)A, (size_t)m * k, 1, bf);
    fill_random<<<(unsigned)(((size_t)k * n + 255) / 256), 256>>>((unsigned short *)B, (size_t)k * n, 2, bf);
    CK(cudaGetLastError());
    cublasLtMatmulDesc_t op;
    CKB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t tr = CUBLAS_OP_T, nt = CUBLAS_OP_N;
    // Column-major C[m,n] = A^T[m,k] * B[k,n] with A stored [k,m]: the "TN" layout of y = x W^T.
    CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tr, sizeof tr));
    CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &nt, sizeof nt));
    cublasLtMatrixLayout_t la, lb, lc;
    CKB(cublasLtMatrixLayoutCreate(&la, dt, k, m, k));
    CKB(cublasLtMatrixLayoutCreate(&lb, dt, k, n, k));
    CKB(cublasLtMatrixLayoutCreate(&lc, dt, m, n, m));
    cublasLtMatmulPreference_t pref;
    CKB(cublasLtMatmulPreferenceCreate(&pref));
    CKB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wss, sizeof wss));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    CKB(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &heur, &found));
    if (!found) {
        fprintf(stderr, "no cublasLt algorithm for %dx%dx%d\n", m, n, k);
        exit(1);
    }
    float one = 1.f, zero = 0.f;
    cudaEvent_t t0, t1;
    CK(cudaEventCreate(&t0));
    CK(cudaEventCreate(&t1));
    for (int i = 0; i < 3; i++)
        CKB(cublasLtMatmul(lt, op, &one, A, la, B, lb, &zero, C, lc, C, lc, &heur.algo, ws, wss, 0));
    CK(cudaEventRecord(t0));
    for (int i = 0; i < reps; i++)
        CKB(cublasLtMatmul(lt, op, &one, A, la, B, lb, &zero, C, lc, C, lc, &heur.algo, ws, wss, 0));
    CK(cudaEventRecord(t1));
    CK(cudaEventSynchronize(t1));
    float ms;
    CK(cudaEventElapsedTime(&ms, t0, t1));
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
    cudaFree(A), cudaFree(B), cudaFree(C);
    return 2.0 * m * n * k * reps / (ms * 1e-3) / 1e12;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("{\"device\": \"%s\", \"sm\": %d, \"sms\": %d}\n", p.name, p.major * 10 + p.minor, p.multiProcessorCount);
    cublasLtHandle_t lt;
    CKB(cublasLtCreate(&lt));
    size_t wss = 64 << 20;
    void *ws;
    CK(cudaMalloc(&ws, wss));
    // square peak, then the reranker's shapes: tokens (B*T = 16*512) x H 1024 -> 3H (QKV), 4H (FFN up), H (FFN down)
    int shapes[][3] = {{8192, 8192, 8192}, {4096, 4096, 4096}, {3072, 8192, 1024}, {4096, 8192, 1024},
                       {1024, 8192, 4096}, {1024, 8192, 1024}};
    for (int dt = 0; dt < 2; dt++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            double tf = bench(lt, m, n, k, dt ? CUDA_R_16F : CUDA_R_16BF, ws, wss, reps);
            printf("{\"kind\": \"gemm\", \"dtype\": \"%s\", \"m\": %d, \"n\": %d, \"k\": %d, \"tflops\": %.1f}\n",
                   dt ? "fp16" : "bf16", m, n, k, tf);
        }
    cudaFree(ws);
    cublasLtDestroy(lt);
    return 0;
}
