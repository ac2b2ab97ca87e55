/* flash_attn.h: fused (flash-style) attention over packed sequences for the CUDA backend's BF16 mode: bf16
 * tensor-core products (mma.sync m16n8k16, fp32 accumulation), online softmax in fp32, no score matrix in
 * device memory. Inference only (no probabilities saved). q/k/v and the output in fp32 (xr_flash_attention) or
 * bf16 (xr_flash_attention_bf16, half the loads). Used by ops_cuda.cu; C++ linkage, CUDA only. */
#ifndef XR_FLASH_ATTN_H
#define XR_FLASH_ATTN_H
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* Tile shapes (query rows per block x keys per step, warps): XR_FLASH_64 = 64 x 64, 4 warps of 16 rows;
 * XR_FLASH_128 = 128 x 32, 4 warps of 32 rows (each shared-memory K/V fragment feeds two products);
 * XR_FLASH_128W8 = 128 x 64, 8 warps of 16 rows; XR_FLASH_256 = 256 x 64, 8 warps of 32 rows. The ...X<n> tiles
 * are the same shapes with registers capped so that n blocks fit on an SM (12 or 16 warps instead of 8; sm_90,
 * dh 64: bf16 storage spills 28 / 60 / 24 bytes a thread for 64X3 / 128X3 / 128W8X2, fp32 storage 180 / 276 /
 * 196), for measuring whether the bf16 kernel's freed registers buy occupancy (bench_attention). */
typedef enum {
    XR_FLASH_64 = 0, XR_FLASH_128 = 1, XR_FLASH_128W8 = 2, XR_FLASH_256 = 3,
    XR_FLASH_64X3 = 4, XR_FLASH_128X3 = 5, XR_FLASH_128W8X2 = 6
} XrFlashTile;
enum { XR_FLASH_TILES = 7 }; /* tiles are 0 .. XR_FLASH_TILES - 1 */

/* The tile's name as XR_CUDA_ATTENTION spells it ("flash128", "flash128x3", ...). */
const char *xr_flash_tile_name(XrFlashTile tile);

/* The tile named `name` (xr_flash_tile_name's spelling) into *tile: 1, or 0 when no tile has that name. */
int xr_flash_tile_by_name(const char *name, XrFlashTile *tile);

/* Whether xr_flash_attention handles this head size and these pointers (dh 32 or 64; qkv 16-byte aligned,
 * out 8-byte aligned). Callers fall back to another attention path when it does not. */
int xr_flash_supported(int dh, const float *qkv, const float *out);

/* out [N, NH*dh] fp32 (and out16, its bf16 copy, when non-NULL) = softmax(q k^T / sqrt(dh)) v per sequence and
 * head, for qkv [N, 3*NH*dh] fp32 rows as ops_attention (core/ops.h) defines them; seq_off [S+1] in device
 * memory, max_len >= every sequence's length. q, k and v are rounded to bf16 as they are loaded. Queued on
 * `stream`; returns the launch's error (cudaSuccess when queued). */
cudaError_t xr_flash_attention(cudaStream_t stream, XrFlashTile tile, float *out, __nv_bfloat16 *out16,
                               const float *qkv, const int32_t *seq_off, int S, int max_len, int NH, int dh);

/* Whether xr_flash_attention_bf16 handles this head size and these pointers (dh 32 or 64; qkv 16-byte aligned,
 * out 4-byte aligned). */
int xr_flash_supported_bf16(int dh, const void *qkv, const void *out);

/* The same attention on bf16 storage: qkv [N, 3*NH*dh] bf16 in, out [N, NH*dh] bf16 (rounded to nearest even
 * once, from the fp32 result). Same kernel, same products and softmax: for qkv holding the values of an fp32 qkv
 * that are bf16-exact, out is bit for bit xr_flash_attention's out16. */
cudaError_t xr_flash_attention_bf16(cudaStream_t stream, XrFlashTile tile, __nv_bfloat16 *out,
                                    const __nv_bfloat16 *qkv, const int32_t *seq_off, int S, int max_len, int NH,
                                    int dh);

#endif
