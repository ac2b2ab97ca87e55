/* ops.c: the op API's dispatch, generated from ops_list.h: ops_<name> calls the backend's table entry
 * (be->ops-><name>); backend creation, and the "which ops does a backend lack" queries. */
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_ops.h"
#include "ops_table.h"
#include "xr_common.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#include "cuda/xr_cuda.h"
#endif

/* The CPU backend has every op: its table is the whole list (a missing cpu_<name> fails the link). */
static const OpsTable cpu_table = {
#define XR_OP(set, name, params, args) .name = cpu_##name,
#define XR_OP_RET(set, type, name, params, args) .name = cpu_##name,
#include "ops_list.h"
#undef XR_OP
#undef XR_OP_RET
};

/* Last resort: a command should have asked ops_backend_missing before running an op the backend lacks. */
static void op_missing(const Backend *be, const char *name) {
    xr_die("ops: op %s has no %s implementation yet (ask ops_backend_missing before running)", name,
           ops_device_name(be->device));
}

/* The op's number (its place in ops_list.h) for the per-op times (ops_prof.c). */
enum {
#define XR_OP(set, name, params, args) XR_OPID_##name,
#define XR_OP_RET(set, type, name, params, args) XR_OPID_##name,
#include "ops_list.h"
#undef XR_OP
#undef XR_OP_RET
};

/* While the inference forward's activations are packed (ops_act_pack), a training op would read bf16 words as fp32. */
static void op_packed(const Backend *be, const char *name) {
    xr_die("ops: training op %s called on a %s backend whose activations are packed as bf16 (ops_act_pack): the "
           "inference forward must end with ops_act_pack(be, 0) first", name, ops_device_name(be->device));
}
#define XR_OP_GUARD(set, name)                                                        \
    if (!be->ops->name) op_missing(be, #name);                                        \
    if (XR_OPSET_##set == XR_OPSET_TRAIN && be->act_packed) op_packed(be, #name);

#define XR_OP(set, name, params, args)                      \
    void ops_##name params {                                \
        XR_OP_GUARD(set, name)                              \
        if (be->prof) {                                     \
            int mark_ = ops_prof_begin(be, XR_OPID_##name); \
            be->ops->name args;                             \
            ops_prof_end(be, mark_);                        \
            return;                                         \
        }                                                   \
        be->ops->name args;                                 \
    }
#define XR_OP_RET(set, type, name, params, args)            \
    type ops_##name params {                                \
        XR_OP_GUARD(set, name)                              \
        if (be->prof) {                                     \
            int mark_ = ops_prof_begin(be, XR_OPID_##name); \
            type r_ = be->ops->name args;                   \
            ops_prof_end(be, mark_);                        \
            return r_;                                      \
        }                                                   \
        return be->ops->name args;                          \
    }
#include "ops_list.h"
#undef XR_OP
#undef XR_OP_RET
#undef XR_OP_GUARD

int ops_act_region_keep(Backend *be, const void *base, size_t bytes) {
    if (!base) return 2;
    const char *lo = base, *hi = lo + bytes;
    int n = be->n_act_regions;
    if (!bytes) {
        for (int i = 0; i < n; i++)
            if (be->act_regions[i].lo == lo) {
                be->act_regions[i] = be->act_regions[n - 1];
                be->n_act_regions = n - 1;
                break;
            }
        return 2;
    }
    for (int i = 0; i < n; i++)
        if (lo < be->act_regions[i].hi && be->act_regions[i].lo < hi)
            xr_die("ops_act_region: [%p, +%zu) overlaps the packed region [%p, %p) registered before (forget a region "
                   "before its memory is freed)", base, bytes, (const void *)be->act_regions[i].lo,
                   (const void *)be->act_regions[i].hi);
    if (n == XR_ACT_REGIONS) xr_die("ops_act_region: more than %d packed regions at once", XR_ACT_REGIONS);
    be->act_regions[n].lo = lo, be->act_regions[n].hi = hi;
    be->n_act_regions = n + 1;
    return 2;
}

static void name_append(char *buf, size_t n, size_t *len, const char *name) {
    if (!buf || n == 0) return;
    int w = snprintf(buf + *len, n - *len, "%s%s", *len ? ", " : "", name);
    if (w > 0) *len = *len + (size_t)w < n ? *len + (size_t)w : n - 1;
}

int ops_table_missing(const OpsTable *t, unsigned sets, char *buf, size_t n) {
    int count = 0;
    size_t len = 0;
    if (buf && n) buf[0] = '\0';
#define XR_OP(set, name, params, args)                 \
    if ((XR_OPSET_##set & sets) && (!t || !t->name)) { \
        count++;                                       \
        name_append(buf, n, &len, #name);              \
    }
#define XR_OP_RET(set, type, name, params, args) XR_OP(set, name, params, args)
#include "ops_list.h"
#undef XR_OP
#undef XR_OP_RET
    return count;
}

/* The table of a device kind in this build (NULL: no backend for it). */
static const OpsTable *device_table(XrDevice dev) {
    if (dev == XR_DEV_CPU) return &cpu_table;
#ifdef XR_HAVE_CUDA
    if (dev == XR_DEV_CUDA) return cuda_ops_table();
#endif
    return NULL;
}

int ops_backend_missing(const Backend *be, unsigned sets, char *buf, size_t n) {
    return ops_table_missing(be->ops, sets, buf, n);
}

int ops_device_missing(XrDevice dev, unsigned sets, char *buf, size_t n) {
    return ops_table_missing(device_table(dev), sets, buf, n);
}

int ops_device_require(XrDevice dev, unsigned sets, const char *what, XrErr *e) {
    char names[1024];
    int k = ops_device_missing(dev, sets, names, sizeof names);
    if (k == 0) return 0;
    if (!device_table(dev)) /* the wording of ops_backend_create's refusal: one message for one cause */
        return xr_errf(e, "--device %s: this xrank was built without the CUDA backend (nvcc, cuBLAS, cuDNN and "
                          "NCCL are needed at build time)", ops_device_name(dev));
    return xr_errf(e, "--device %s: the %s backend of this build lacks %d op(s) that %s needs: %s",
                   ops_device_name(dev), ops_device_name(dev), k, what, names);
}

Backend *ops_backend_cpu(int threads) {
    Backend *be = xr_calloc(1, sizeof *be);
    cpu_backend_init(be, threads);
    be->ops = &cpu_table;
    return be;
}

int ops_device_count(XrDevice dev) {
    if (dev == XR_DEV_CPU) return 1;
#ifdef XR_HAVE_CUDA
    if (dev == XR_DEV_CUDA) return cuda_ops_device_count();
#endif
    return 0;
}

const char *ops_device_name(XrDevice dev) { return dev == XR_DEV_CUDA ? "cuda" : "cpu"; }

void ops_device_info(XrDevice dev, XrDeviceInfo *info) {
    memset(info, 0, sizeof *info);
    if (dev == XR_DEV_CPU) {
        info->built = 1;
        info->count = 1;
        snprintf(info->name, sizeof info->name, "cpu (OpenBLAS %s)", ops_cpu_blas_core());
        return;
    }
#ifdef XR_HAVE_CUDA
    XrCudaInfo c;
    xr_cuda_info(&c);
    info->built = 1;
    info->count = c.device_count;
    snprintf(info->name, sizeof info->name, "%s", c.name);
    info->cc_major = c.cc_major;
    info->cc_minor = c.cc_minor;
    info->total_mem = c.total_mem;
    info->sm_count = c.sm_count;
    info->runtime_version = c.cuda_runtime_version;
    info->driver_version = c.cuda_driver_version;
    info->blas_version = c.cublas_version;
    info->dnn_version = c.cudnn_version;
#endif
}

Backend *ops_backend_create(XrDevice dev, int index, XrPrecision prec, int threads, XrErr *e) {
    if (dev == XR_DEV_CPU) {
        if (prec != XR_PREC_FP32) {
            xr_errf(e, "--precision bf16 needs --device cuda (the CPU backend computes in fp32)");
            return NULL;
        }
        return ops_backend_cpu(threads);
    }
#ifdef XR_HAVE_CUDA
    char names[1024];
    /* every backend runs inference: a table without it is a bug of this build, said before any work */
    if (ops_device_missing(dev, XR_OPSET_BASE | XR_OPSET_INFER, names, sizeof names))
        xr_die("ops: the %s backend lacks base or inference ops: %s", ops_device_name(dev), names);
    int n = cuda_ops_device_count();
    if (n < 1) {
        const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
        xr_errf(e, "--device cuda: no GPU is visible (CUDA_VISIBLE_DEVICES %s%s%s)", cvd ? "= '" : "unset",
                cvd ? cvd : "", cvd ? "'" : "");
        return NULL;
    }
    if (index < 0 || index >= n) {
        xr_errf(e, "--device cuda: GPU index %d is out of range (%d visible)", index, n);
        return NULL;
    }
    Backend *be = cuda_ops_backend(index);
    cuda_ops_set_gemm_mode(be, prec == XR_PREC_BF16 ? XR_GEMM_BF16 : XR_GEMM_FP32);
    const char *times = getenv("XR_CUDA_OP_TIMES");
    if (times && !strcmp(times, "1")) ops_prof_enable(be, 1);
    return be;
#else
    (void)index;
    (void)prec;
    (void)threads;
    xr_errf(e, "--device cuda: this xrank was built without the CUDA backend (nvcc, cuBLAS, cuDNN and NCCL are "
               "needed at build time)");
    return NULL;
#endif
}

void ops_backend_free(Backend *be) {
    if (!be) return;
    ops_prof_enable(be, 0);
    ops_mem_release(be);
#ifdef XR_HAVE_CUDA
    if (be->device == XR_DEV_CUDA) {
        cuda_ops_backend_free(be);
        return;
    }
#endif
    if (be->device != XR_DEV_CPU) xr_die("ops: device %d has no backend in this build", (int)be->device);
    cpu_backend_release(be);
    free(be);
}

void *ops_native_stream(Backend *be) {
#ifdef XR_HAVE_CUDA
    if (be->device == XR_DEV_CUDA) return cuda_ops_stream(be);
#endif
    return NULL;
}

int ops_device_index(Backend *be) {
#ifdef XR_HAVE_CUDA
    if (be->device == XR_DEV_CUDA) return cuda_ops_device_index(be);
#endif
    return -1;
}

void ops_set_threads(Backend *be, int n) {
    /* GPU kernels have no thread count to set */
    if (be->device == XR_DEV_CPU) cpu_set_threads(be, n);
}

int ops_get_threads(const Backend *be) { return be->threads; }
