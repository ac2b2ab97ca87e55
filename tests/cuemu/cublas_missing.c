/* cublas_missing.c: linked in an XRANK_CUDA_EMU build only while tests/cuemu/cublas_emu.cpp (cuBLAS and cuBLASLt on
 * host memory) is not there. It names each cuBLAS / cuBLASLt function our code calls, by its link name only, and
 * stops the process with a clear message when one is called, so the build links and the GEMM-free GPU tests run
 * on the emulator. The handle functions (create, destroy, stream, math mode, version) answer as cuBLAS would, since
 * every backend makes its handles; nothing here computes anything. When cublas_emu.cpp lands, cuemu.cmake links it instead. */
#include <stdio.h>
#include <stdlib.h>

static void cuemu_no_cublas(const char *fn) {
    fflush(stdout);
    fprintf(stderr, "cuemu: %s: cuBLAS is not emulated in this build (tests/cuemu/cublas_emu.cpp is missing)\n", fn);
    abort();
}

#define CUEMU_MISSING(fn) \
    void fn(void);        \
    void fn(void) { cuemu_no_cublas(#fn); }

CUEMU_MISSING(cublasGemmEx)
CUEMU_MISSING(cublasGemmStridedBatchedEx)
CUEMU_MISSING(cublasLtMatmul)
CUEMU_MISSING(cublasLtMatmulAlgoGetHeuristic)
CUEMU_MISSING(cublasLtMatmulDescCreate)
CUEMU_MISSING(cublasLtMatmulDescDestroy)
CUEMU_MISSING(cublasLtMatmulDescSetAttribute)
CUEMU_MISSING(cublasLtMatmulPreferenceCreate)
CUEMU_MISSING(cublasLtMatmulPreferenceDestroy)
CUEMU_MISSING(cublasLtMatmulPreferenceSetAttribute)
CUEMU_MISSING(cublasLtMatrixLayoutCreate)
CUEMU_MISSING(cublasLtMatrixLayoutDestroy)
CUEMU_MISSING(cublasSgemm_v2)

/* the handles: cuBLAS's C ABI (a status int, 0 = CUBLAS_STATUS_SUCCESS; handles are opaque pointers) */
static char cuemu_handle;
int cublasCreate_v2(void **h);
int cublasCreate_v2(void **h) { *h = &cuemu_handle; return 0; }
int cublasDestroy_v2(void *h);
int cublasDestroy_v2(void *h) { (void)h; return 0; }
int cublasSetStream_v2(void *h, void *st);
int cublasSetStream_v2(void *h, void *st) { (void)h, (void)st; return 0; }
static int cuemu_math_mode;
int cublasSetMathMode(void *h, int mode);
int cublasSetMathMode(void *h, int mode) { (void)h; cuemu_math_mode = mode; return 0; }
int cublasGetMathMode(void *h, int *mode);
int cublasGetMathMode(void *h, int *mode) { (void)h; *mode = cuemu_math_mode; return 0; }
int cublasGetVersion_v2(void *h, int *v);
int cublasGetVersion_v2(void *h, int *v) { (void)h; *v = 0; return 0; }
const char *cublasGetStatusString(int s);
const char *cublasGetStatusString(int s) { return s ? "cuBLAS error (cuemu: not emulated)" : "CUBLAS_STATUS_SUCCESS"; }
int cublasLtCreate(void **h);
int cublasLtCreate(void **h) { *h = &cuemu_handle; return 0; }
int cublasLtDestroy(void *h);
int cublasLtDestroy(void *h) { (void)h; return 0; }
