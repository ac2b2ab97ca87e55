/* cmd_version.c: `xrank version`: version and compiled-in backends, with the GPU seen when CUDA is in. */
#include <stdio.h>

#include "cli.h"
#ifdef XR_HAVE_CUDA
#include "cuda/xr_cuda.h"
#endif

#define XRANK_VERSION "0.1.0"

int cmd_version(int argc, char **argv) {
    printf("xrank %s\nbackends: cpu (OpenBLAS)", XRANK_VERSION);
#ifdef XR_HAVE_CUDA
    XrCudaInfo info;
    xr_cuda_info(&info);
    printf(", cuda (runtime %d, cuDNN %zu, NCCL %d; %d device(s)%s%s)", info.cuda_runtime_version,
           info.cudnn_version, info.nccl_version, info.device_count, info.device_count ? ": " : "", info.name);
#endif
    printf("\n");
    return 0;
}
