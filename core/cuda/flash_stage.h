/* flash_stage.h: the index maps of flash_attn.cu's bf16 K/V staging (which thread loads which 16-byte chunk, how
 * the two lanes of a key pair swap halves of V, where each word lands in shared memory) as __host__ __device__
 * functions: the kernel runs them, and tests/test_cuda_flash16.cu replays a whole block's staging with them on the
 * CPU (every value once and in its place, V's stores free of bank conflicts, whole 32-byte sectors read), so the
 * maps are checked without a GPU. C++, CUDA only (nvcc). */
#ifndef XR_FLASH_STAGE_H
#define XR_FLASH_STAGE_H
#include <stdint.h>

/* DH: head size, BC: keys per step, NW: warps. Offsets count bf16 elements: K row r of the tile at r * QS of
 * Ks [BC][QS]; V transposed, column c at c * VS of Vt [DH][VS], one 32-bit word holding (key, key + 1) of a column
 * (the lower key in the lower half, as the P V product's B fragment reads it). */
template <int DH, int BC, int NW> struct FlashStage16 {
    static constexpr int kThreads = 32 * NW, CPR = DH / 8, NK = BC * CPR / kThreads, KG = BC / 16,
                         NV = KG * (DH / 16) / NW, QS = DH + 8, VS = BC + 8;
    static_assert(DH % 16 == 0 && BC % 32 == 0, "tile shapes");
    static_assert(NK * kThreads == BC * CPR && NK >= 1, "K loader covers the tile");
    static_assert(NV * NW == KG * (DH / 16) && NV >= 1, "V loader: one (16 keys, 16 columns) block per warp and step");

    /* K, step k of thread tid: the tile's row r and which 16-byte chunk c (8 values) of it; chunks in row order, so
     * a warp reads whole rows */
    __host__ __device__ __forceinline__ static void k_at(int tid, int k, int &r, int &c) {
        int it = tid + k * kThreads;
        r = it / CPR, c = it % CPR;
    }
    /* V, step k of thread tid: the tile's key and its chunk c. Block warp * NV + k of the tile's (16 keys) x (16
     * columns) blocks; in it lane bit 0 is the key's parity, bit 1 one of the two chunks (so a lane pair reads a
     * row's whole 32-byte sector), lanes >> 2 one of 8 key pairs. */
    __host__ __device__ __forceinline__ static void v_at(int tid, int k, int &key, int &c) {
        int lane = tid % 32, combo = tid / 32 * NV + k;
        c = 2 * (combo / KG) + ((lane >> 1) & 1);
        key = 16 * (combo % KG) + 2 * (lane >> 2) + (lane & 1);
    }
    /* What a lane gives its partner (lane ^ 1) of its chunk's 4 words (columns 2i, 2i + 1 in word i): the even
     * lane (key) its columns 4..7, the odd lane (key + 1) its columns 0..3 */
    __host__ __device__ __forceinline__ static void v_send(int lane, const uint32_t (&own)[4], uint32_t (&send)[2]) {
        int par = lane & 1;
        send[0] = par ? own[0] : own[2];
        send[1] = par ? own[1] : own[3];
    }
    /* The 4 words a lane stores, from its own words and the two it got: word i is column 4 par + i of its chunk,
     * (key, key + 1) */
    __host__ __device__ __forceinline__ static void v_words(int lane, const uint32_t (&own)[4],
                                                            const uint32_t (&got)[2], uint32_t (&w)[4]) {
        int par = lane & 1;
        uint32_t x0 = par ? got[0] : own[0], y0 = par ? own[2] : got[0]; /* x: key's two columns, y: key + 1's */
        uint32_t x1 = par ? got[1] : own[1], y1 = par ? own[3] : got[1];
        w[0] = (x0 & 0xFFFFu) | (y0 << 16), w[1] = (x0 >> 16) | (y0 & 0xFFFF0000u);
        w[2] = (x1 & 0xFFFFu) | (y1 << 16), w[3] = (x1 >> 16) | (y1 & 0xFFFF0000u);
    }
    /* Store i (0..3) of step k: the second chunk's lanes take their columns rotated by 2 (with the two chunks' rows
     * 8 apart on the same banks for both pads, that puts the warp's 32 words on 32 banks). The value (i a
     * compile-time constant after unrolling, so a select, not an indexed register) and its element offset in Vt. */
    __host__ __device__ __forceinline__ static uint32_t v_store_value(int lane, int i, const uint32_t (&w)[4]) {
        return (lane >> 1) & 1 ? w[(i + 2) & 3] : w[i];
    }
    __host__ __device__ __forceinline__ static int v_store_offset(int tid, int k, int i) {
        int lane = tid % 32, combo = tid / 32 * NV + k, ch = (lane >> 1) & 1;
        int col = 8 * (2 * (combo / KG) + ch) + 4 * (lane & 1) + ((i + 2 * ch) & 3);
        return col * VS + 16 * (combo % KG) + 2 * (lane >> 2);
    }
};

#endif
