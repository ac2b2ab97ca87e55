/* cmd_version.c: `xrank version`: version and compiled-in backends, with the GPU seen when CUDA is in. */
#include <stdio.h>

#include "cli.h"
#include "ops.h"

#define XRANK_VERSION "0.1.0"

int cmd_version(int argc, char **argv) {
    printf("xrank %s\nbackends: cpu (OpenBLAS)", XRANK_VERSION);
    XrDeviceInfo info;
    ops_device_info(XR_DEV_CUDA, &info);
    if (info.built)
        printf(", cuda (runtime %d, cuDNN %zu; %d device(s)%s%s)", info.runtime_version, info.dnn_version, info.count,
               info.count ? ": " : "", info.name);
    printf("\n");
    return 0;
}
