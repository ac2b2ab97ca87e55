/* test_cuda_flash16: the flash attention kernel on bf16 storage (xr_flash_attention_bf16, core/cuda/flash_attn.h)
 * against the fp32-input kernel and the CPU. For every tile (XR_FLASH_TILES, the register-capped ones too), head
 * sizes 32 and 64, ragged packed sequences (0 .. 512 tokens: tile edges 63/64/65, 127/128/129, 255/256/257, empty
 * ones included), bf16-exact random inputs that are never 0, outputs poisoned with NaN bits and guarded past their
 * end: the bf16 kernel's output must be xr_flash_attention's bf16 copy (out16) bit for bit (the fp32 kernel rounds
 * q/k/v to bf16 as it loads them, a no-op on bf16-exact values, so both run the same products and softmax), both
 * within test_cuda_bf16's bounds of the CPU's fp32 ops_attention, and nothing written past the output. Without a
 * GPU only the host-side checks run (the bf16 staging's maps replayed for a whole block, flash_stage.h; which
 * pointers xr_flash_supported_bf16 accepts; the tiles' XR_CUDA_ATTENTION names); then it reports skipped (77). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include <map>
#include <set>
#include <vector>

#include "cuda/flash_attn.h"
#include "cuda/flash_stage.h"
#include "cuda/ops_cuda.h"
#include "ops.h"
extern "C" {
#include "testutil.h"
}

namespace {

const uint16_t kPoison16 = 0xFFFFu;     /* a NaN in bf16 */
const uint32_t kPoison32 = 0xFFFFFFFFu; /* a NaN in fp32 */
const size_t kGuard = 256;              /* elements past each output that must stay poisoned */

uint64_t rng = 0x9E3779B97F4A7C15ull;
float urand(float lo, float hi) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) / 16777216.0);
}
uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* uniform in [-amp, amp], rounded to bf16 (nearest even), |x| >= amp / 64 so no input is 0 */
float bf16_exact_nonzero(float amp) {
    float x = urand(-amp, amp);
    if (fabsf(x) < amp / 64) x = x < 0 ? -amp / 64 : amp / 64;
    uint32_t u = f2u(x);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    return u2f(u);
}

#define CK(call)                                                                                                 \
    do {                                                                                                         \
        cudaError_t e_ = (call);                                                                                 \
        if (e_ != cudaSuccess) {                                                                                 \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));             \
            exit(1);                                                                                             \
        }                                                                                                        \
    } while (0)

/* A device buffer of `bytes`, every byte 0xFF (NaN in both widths) */
void *dev_poisoned(size_t bytes) {
    void *d;
    CK(cudaMalloc(&d, bytes));
    CK(cudaMemset(d, 0xFF, bytes));
    return d;
}

/* Which pointers the bf16 kernel takes (16-byte qkv, 4-byte out) and that a refused call launches nothing. */
void check_supported() {
    uintptr_t a = 4096; /* never dereferenced */
    const void *q = (const void *)a, *o = (const void *)a;
    TU_CHECK(xr_flash_supported_bf16(64, q, o) && xr_flash_supported_bf16(32, q, o), "aligned, dh 64 / 32");
    TU_CHECK(xr_flash_supported_bf16(64, q, (const void *)(a + 4)), "out 4-byte aligned is enough");
    TU_CHECK(!xr_flash_supported_bf16(64, (const void *)(a + 2), o), "qkv 2-byte aligned: refused");
    TU_CHECK(!xr_flash_supported_bf16(64, (const void *)(a + 8), o), "qkv 8-byte aligned: refused");
    TU_CHECK(!xr_flash_supported_bf16(64, q, (const void *)(a + 2)), "out 2-byte aligned: refused");
    static const int bad_dh[] = {0, 16, 48, 80, 96, 128};
    for (int dh : bad_dh) TU_CHECK(!xr_flash_supported_bf16(dh, q, o), "dh %d: refused", dh);
    int32_t off[2] = {0, 4};
    cudaError_t e = xr_flash_attention_bf16(0, XR_FLASH_128, (__nv_bfloat16 *)(a + 2), (const __nv_bfloat16 *)q, off,
                                            1, 4, 1, 64);
    TU_CHECK(e == cudaErrorInvalidValue, "unaligned out: got %d, want cudaErrorInvalidValue", (int)e);
    e = xr_flash_attention_bf16(0, XR_FLASH_128, (__nv_bfloat16 *)o, (const __nv_bfloat16 *)q, off, 1, 4, 1, 48);
    TU_CHECK(e == cudaErrorInvalidValue, "dh 48: got %d, want cudaErrorInvalidValue", (int)e);
    TU_CHECK(xr_flash_attention_bf16(0, XR_FLASH_128, (__nv_bfloat16 *)o, (const __nv_bfloat16 *)q, off, 0, 4, 1, 64) ==
                 cudaSuccess,
             "S 0: nothing to do");
}

/* XR_CUDA_ATTENTION's tile names (ops_cuda.cu parses them with xr_flash_tile_by_name): every tile has its own
 * name, which maps back to it; other spellings map to no tile. */
void check_tile_names() {
    for (int t = 0; t < XR_FLASH_TILES; t++) {
        const char *name = xr_flash_tile_name((XrFlashTile)t);
        XrFlashTile back = (XrFlashTile)-1;
        TU_CHECK(strncmp(name, "flash", 5) == 0 && strcmp(name, "flash") != 0, "tile %d: name '%s'", t, name);
        TU_CHECK(xr_flash_tile_by_name(name, &back) && back == (XrFlashTile)t, "tile %d '%s' maps back to %d", t,
                 name, (int)back);
        for (int u = 0; u < t; u++)
            TU_CHECK(strcmp(name, xr_flash_tile_name((XrFlashTile)u)), "tiles %d and %d share the name '%s'", u, t,
                     name);
    }
    static const char *const other[] = {"flash", "gemm", "exact", "unknown", "flash128x", "FLASH128", "flash128 ", ""};
    for (const char *o : other) {
        XrFlashTile keep = XR_FLASH_256;
        TU_CHECK(!xr_flash_tile_by_name(o, &keep) && keep == XR_FLASH_256, "'%s' names no tile", o);
    }
    XrFlashTile t3 = XR_FLASH_64;
    TU_CHECK(xr_flash_tile_by_name("flash128x3", &t3) && t3 == XR_FLASH_128X3, "flash128x3 is XR_FLASH_128X3");
}

/* Replays one block's bf16 K/V staging with the kernel's own maps (flash_stage.h) on the CPU, for the staging shape
 * (DH, BC, NW) of some tile: every K chunk and V value loaded once and stored where the products read it (V's key
 * pairs through the emulated lane exchange), each warp's V stores on 32 different banks, and every 32-byte sector a
 * warp's loads touch read whole (qkv rows of 16 heads apart). */
template <int DH, int BC, int NW> void check_stage() {
    using M = FlashStage16<DH, BC, NW>;
    char tag[64];
    snprintf(tag, sizeof tag, "bf16 staging dh=%d keys=%d warps=%d", DH, BC, NW);
    const size_t row_bytes = (size_t)3 * 16 * DH * 2;
    auto val = [](int key, int col) { return (uint32_t)(1 + key * DH + col); }; /* distinct, never 0 */
    std::vector<int> kcount(BC * M::CPR, 0);
    size_t partial = 0, badk = 0;
    for (int w = 0; w < NW; w++)
        for (int k = 0; k < M::NK; k++) {
            std::map<size_t, int> sector;
            for (int lane = 0; lane < 32; lane++) {
                int r, c;
                M::k_at(32 * w + lane, k, r, c);
                if (r < 0 || r >= BC || c < 0 || c >= M::CPR) {
                    badk++;
                    continue;
                }
                kcount[r * M::CPR + c]++;
                sector[(r * row_bytes + 16 * (size_t)c) / 32] += 16;
            }
            for (auto &e : sector) partial += e.second != 32;
        }
    size_t kwrong = badk;
    for (int n : kcount) kwrong += n != 1;
    TU_CHECK(kwrong == 0, "%s: %zu K chunks not loaded exactly once", tag, kwrong);

    std::vector<uint16_t> vt(DH * M::VS, 0);
    std::vector<int> written(DH * M::VS / 2, 0);
    size_t conflicts = 0, bad = 0;
    for (int w = 0; w < NW; w++)
        for (int k = 0; k < M::NV; k++) {
            uint32_t own[32][4], send[32][2], words[32][4];
            std::map<size_t, int> sector;
            for (int lane = 0; lane < 32; lane++) {
                int key, c;
                M::v_at(32 * w + lane, k, key, c);
                if (key < 0 || key >= BC || c < 0 || c >= DH / 8) {
                    bad++, key = 0, c = 0;
                }
                for (int i = 0; i < 4; i++) own[lane][i] = val(key, 8 * c + 2 * i) | val(key, 8 * c + 2 * i + 1) << 16;
                M::v_send(lane, own[lane], send[lane]);
                sector[(key * row_bytes + 16 * (size_t)c) / 32] += 16;
            }
            for (auto &e : sector) partial += e.second != 32;
            for (int lane = 0; lane < 32; lane++) {
                const uint32_t got[2] = {send[lane ^ 1][0], send[lane ^ 1][1]}; /* __shfl_xor_sync(.., 1) */
                M::v_words(lane, own[lane], got, words[lane]);
            }
            for (int i = 0; i < 4; i++) {
                std::map<int, std::set<int>> bank;
                for (int lane = 0; lane < 32; lane++) {
                    int off = M::v_store_offset(32 * w + lane, k, i);
                    if (off < 0 || off + 1 >= DH * M::VS || off % 2) {
                        bad++;
                        continue;
                    }
                    uint32_t v = M::v_store_value(lane, i, words[lane]);
                    vt[off] = (uint16_t)(v & 0xFFFFu), vt[off + 1] = (uint16_t)(v >> 16);
                    written[off / 2]++;
                    bank[off / 2 % 32].insert(off / 2);
                }
                for (auto &e : bank) conflicts += e.second.size() - 1;
            }
        }
    size_t vwrong = bad;
    for (int col = 0; col < DH; col++) {
        for (int key = 0; key < BC; key++) vwrong += vt[col * M::VS + key] != (uint16_t)val(key, col);
        for (int p = 0; p < M::VS / 2; p++) vwrong += written[(col * M::VS) / 2 + p] != (p < BC / 2);
    }
    TU_CHECK(vwrong == 0, "%s: %zu V values (or words) not stored exactly once in their place", tag, vwrong);
    TU_CHECK(conflicts == 0, "%s: %zu extra bank wavefronts in V's stores", tag, conflicts);
    TU_CHECK(partial == 0, "%s: %zu 32-byte sectors read in part by a warp's load", tag, partial);
    printf("flash16 %-34s K/V stage: misplaced %zu / %zu, bank conflicts %zu, partial sectors %zu\n", tag, kwrong,
           vwrong, conflicts, partial);
}

/* One batch: the CPU reference once, then each tile's fp32-input and bf16-input kernels. */
void check_case(Backend *cpu, int NH, int dh, float amp, double tol) {
    static const int lens[] = {1, 63, 64, 65, 0, 127, 128, 129, 255, 256, 257, 300, 512, 17, 0};
    const int S = (int)(sizeof lens / sizeof lens[0]);
    int32_t off[sizeof lens / sizeof lens[0] + 1];
    off[0] = 0;
    int max_len = 0;
    for (int s = 0; s < S; s++) off[s + 1] = off[s] + lens[s], max_len = lens[s] > max_len ? lens[s] : max_len;
    const size_t N = (size_t)off[S], HD = (size_t)NH * dh, nq = N * 3 * HD, no = N * HD;
    float *qkv = (float *)xr_malloc(nq * 4), *ref = (float *)xr_malloc(no * 4);
    uint16_t *qkv16 = (uint16_t *)xr_malloc(nq * 2);
    for (size_t i = 0; i < nq; i++) qkv[i] = bf16_exact_nonzero(amp), qkv16[i] = (uint16_t)(f2u(qkv[i]) >> 16);
    ops_attention(cpu, ref, NULL, qkv, off, S, max_len, NH, dh);

    /* inputs 16 bytes past a cudaMalloc base (aligned as the kernels need, not more); outputs 8 bytes past */
    char *dq = (char *)dev_poisoned(nq * 4 + 16), *dq16 = (char *)dev_poisoned(nq * 2 + 16);
    CK(cudaMemcpy(dq + 16, qkv, nq * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dq16 + 16, qkv16, nq * 2, cudaMemcpyHostToDevice));
    int32_t *doff;
    CK(cudaMalloc(&doff, sizeof off));
    CK(cudaMemcpy(doff, off, sizeof off, cudaMemcpyHostToDevice));
    const size_t o32b = (no + kGuard) * 4, o16b = (no + kGuard) * 2;
    char *dout = (char *)dev_poisoned(o32b + 8), *dout16 = (char *)dev_poisoned(o16b + 8);
    char *dbf = (char *)dev_poisoned(o16b + 8);
    float *hout = (float *)xr_malloc(o32b), *hbff = (float *)xr_malloc(no * 4);
    uint16_t *h16 = (uint16_t *)xr_malloc(o16b), *hbf = (uint16_t *)xr_malloc(o16b);

    for (int ti = 0; ti < XR_FLASH_TILES; ti++) {
        XrFlashTile tile = (XrFlashTile)ti;
        CK(cudaMemset(dout, 0xFF, o32b + 8));
        CK(cudaMemset(dout16, 0xFF, o16b + 8));
        CK(cudaMemset(dbf, 0xFF, o16b + 8));
        float *o32 = (float *)(dout + 8);
        __nv_bfloat16 *o16 = (__nv_bfloat16 *)(dout16 + 8), *obf = (__nv_bfloat16 *)(dbf + 8);
        CK(xr_flash_attention(0, tile, o32, o16, (const float *)(dq + 16), doff, S, max_len, NH, dh));
        CK(xr_flash_attention_bf16(0, tile, obf, (const __nv_bfloat16 *)(dq16 + 16), doff, S, max_len, NH, dh));
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(hout, o32, o32b, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(h16, o16, o16b, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hbf, obf, o16b, cudaMemcpyDeviceToHost));

        char name[96];
        snprintf(name, sizeof name, "%s NH=%d dh=%d amp=%g", xr_flash_tile_name(tile), NH, dh, amp);
        size_t differ = 0, first = 0;
        for (size_t i = 0; i < no; i++)
            if (h16[i] != hbf[i]) differ += 1, first = differ == 1 ? i : first;
        TU_CHECK(differ == 0, "%s: bf16-input output differs from the fp32 kernel's out16 in %zu of %zu values; "
                 "first [%zu] (token %zu, column %zu): 0x%04x vs 0x%04x", name, differ, no, first, first / HD,
                 first % HD, hbf[first], h16[first]);
        size_t touched = 0;
        for (size_t i = no; i < no + kGuard; i++)
            touched += (hbf[i] != kPoison16) + (h16[i] != kPoison16) + (f2u(hout[i]) != kPoison32);
        TU_CHECK(touched == 0, "%s: %zu values written past the output's end", name, touched);
        for (size_t i = 0; i < no; i++) hbff[i] = u2f((uint32_t)hbf[i] << 16);
        char what[128];
        snprintf(what, sizeof what, "%s fp32 in, fp32 out", name);
        double d32 = tu_check_close(what, hout, ref, no, tol);
        snprintf(what, sizeof what, "%s bf16 in, bf16 out", name);
        double d16 = tu_check_close(what, hbff, ref, no, tol);
        printf("flash16 %-32s tokens %zu: bf16 vs out16 %zu differ; vs CPU: fp32 %.3g, bf16 %.3g (tol %.0e)\n",
               name, N, differ, d32, d16, tol);
    }
    void *bufs[] = {dq, dq16, doff, dout, dout16, dbf};
    for (void *b : bufs) CK(cudaFree(b));
    free(qkv), free(ref), free(qkv16), free(hout), free(hbff), free(h16), free(hbf);
}

} // namespace

int main(void) {
    check_supported();
    check_tile_names();
    /* the staging shapes of the tiles: flash64 (64 keys, 4 warps), flash128 (32, 4), flash128w8 / flash256 (64, 8) */
    check_stage<64, 64, 4>(), check_stage<64, 32, 4>(), check_stage<64, 64, 8>();
    check_stage<32, 64, 4>(), check_stage<32, 32, 4>(), check_stage<32, 64, 8>();
    if (cuda_ops_device_count() <= 0) {
        int rc = tu_finish("test_cuda_flash16 (host checks)");
        if (rc) return rc;
        TU_SKIP("no GPU visible (the host-side checks passed)");
    }
    Backend *cpu = ops_backend_cpu(2);
    /* test_cuda_bf16's bounds: inputs in [-1, 1] 2e-2, [-2, 2] (peaked rows) 3e-2; the bf16 output's own rounding
     * (half an ulp, 2^-9 relative, at most 4e-3 here) fits inside them */
    check_case(cpu, 3, 64, 1.0f, 2e-2);
    check_case(cpu, 2, 64, 2.0f, 3e-2);
    check_case(cpu, 3, 32, 1.0f, 2e-2);
    check_case(cpu, 2, 32, 2.0f, 3e-2);
    ops_backend_free(cpu);
    return tu_finish("test_cuda_flash16");
}
