/* ops_cuda.h: the CUDA backend of the op API in core/ops.h (C linkage, callable from C). Each cuda_ops_<name>
 * takes the arguments of ops_<name>, with every pointer (seq_off and token ids included) in device memory;
 * which ops it has is its table (ops_cuda_table.cu), and ops.h says how the two fit.
 * fp32 in and out with fp32 accumulation; GEMMs run on cuBLAS, exact fp32 by default (TF32 off). */
#ifndef XR_OPS_CUDA_H
#define XR_OPS_CUDA_H
#include <stddef.h>
#include <stdint.h>

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How GEMMs use the tensor cores. FP32: exact fp32 products (the default; matches the CPU to ~1e-5).
 * TF32 / BF16: inputs rounded to tf32 / bf16 inside cuBLAS, products accumulated in fp32 (opt-in speed). */
typedef enum { XR_GEMM_FP32 = 0, XR_GEMM_TF32 = 1, XR_GEMM_BF16 = 2 } XrGemmMode;

/* A CUDA backend on GPU `device`: its own stream and cuBLAS handle. Dies when the device cannot be used;
 * call cuda_ops_device_count first to find out whether one is there. */
Backend *cuda_ops_backend(int device);
void cuda_ops_backend_free(Backend *be);
/* Number of visible GPUs (0 when there is no GPU or no driver; never dies). */
int cuda_ops_device_count(void);
void cuda_ops_set_gemm_mode(Backend *be, XrGemmMode mode);
/* The backend's stream (cudaStream_t) and GPU index (ops_native_stream / ops_device_index). */
void *cuda_ops_stream(Backend *be);
int cuda_ops_device_index(Backend *be);
/* cuda_ops_sync (ops_sync): waits for every op queued on the backend's stream; dies with the CUDA error of a
 * failed kernel. Declared with the ops below. */

/* Whether W lies in the buffer registered with ops_bf16_weights (its GEMMs are to read the bf16 working copy). */
int cuda_ops_in_working_copy(Backend *be, const float *W);

/* bf16 training: how many activation operands GEMMs have cast to bf16 so far (ops_linear / ops_linear_gelu without
 * a producer's 2-byte copy, ops_linear_backward's dy and x); the working copy's refreshes are not counted. What the
 * tests read to see that a forward's GEMMs read their producers' copies instead of casting. */
unsigned long long cuda_ops_act_casts(Backend *be);
/* Packed inference storage: how many packed ops_linear calls found no cuBLASLt algorithm for their bf16 output with the
 * bias epilogue and took the fallback (an fp32 GEMM, then a bias-and-round kernel: the same values, twice the output
 * bytes and a kernel more). Not an op. What test_cuda_act_pack and bench_encoder print, so a GPU run shows which path
 * its packed linears took. */
unsigned long long cuda_ops_packed_fallbacks(Backend *be);

/* The per-op times' marks (core/ops_prof.c): a CUDA event with timing, recorded on the backend's stream; the
 * milliseconds between two recorded marks once both have completed (after ops_sync). */
void *cuda_ops_mark_create(Backend *be);
void cuda_ops_mark_record(Backend *be, void *mark);
float cuda_ops_mark_ms(void *start, void *end);
void cuda_ops_mark_destroy(void *mark);

/* Free memory of the backend's GPU in bytes (cudaMemGetInfo; ops_mem_available). */
size_t cuda_ops_mem_free(Backend *be);
/* ops_attention_scratch on this backend: the device scratch the training attention requests at most (att_gemm.cu). */
size_t cuda_ops_attention_scratch(Backend *be, int S, int max_len, int NH, int dh, int lse);

/* The GEMM training attention's CUDA primitives (core/att_gemm.h; att_gemm.cu) on be's stream and cuBLAS handle, for
 * a test that runs the driver on them with a primitive wrapped (tests/test_cuda_att_gemm.c); free() it. */
struct AttGemmPrims;
struct AttGemmPrims *cuda_att_gemm_prims(Backend *be);

/* Device-to-device copy on the backend's stream. */
void cuda_ops_copy(Backend *be, void *dst, const void *src, size_t bytes);

/* The backend's table of ops (core/cuda/ops_cuda_table.cu): the cuda_ops_<name> below that exist, NULL for
 * the others. Static: asking it needs no GPU. */
const struct OpsTable *cuda_ops_table(void);

/* The ops: cuda_ops_<name> with ops_<name>'s arguments (every pointer, seq_off and token ids included, in
 * device memory), declared for every entry of ops_list.h; the backend defines those its table names.
 * Memory: allocation failure dies with the size; to_device / to_host are synchronous. */
#define XR_OP(set, name, params, args) void cuda_ops_##name params;
#define XR_OP_RET(set, type, name, params, args) type cuda_ops_##name params;
#include "ops_list.h"
#undef XR_OP
#undef XR_OP_RET

#ifdef __cplusplus
}
#endif
#endif
