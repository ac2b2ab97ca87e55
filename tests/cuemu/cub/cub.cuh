// cub/cub.cuh for the CPU emulator (tests/cuemu/README.md), found before the toolkit's: the one CUB algorithm
// our code calls, cub::DeviceRadixSort::SortPairs, as a stable sort on host memory with CUB's contract (keys
// ordered by bits [begin_bit, end_bit) of their radix form: signed keys with the sign bit flipped; a first call with
// d_temp_storage == NULL only sizes the temporary storage).
#ifndef XR_CUEMU_CUB_CUH
#define XR_CUEMU_CUB_CUH

#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <type_traits>
#include <vector>

namespace cub {

struct DeviceRadixSort {
    template <typename KeyT, typename ValueT, typename NumItemsT>
    static cudaError_t SortPairs(void *d_temp_storage, size_t &temp_storage_bytes, const KeyT *d_keys_in,
                                 KeyT *d_keys_out, const ValueT *d_values_in, ValueT *d_values_out,
                                 NumItemsT num_items, int begin_bit = 0, int end_bit = (int)sizeof(KeyT) * 8,
                                 cudaStream_t stream = 0) {
        static_assert(std::is_integral<KeyT>::value, "cuemu's SortPairs: integer keys only");
        (void)stream;
        if (!d_temp_storage) {
            temp_storage_bytes = 256;
            return cudaSuccess;
        }
        if (num_items < 0 || begin_bit < 0 || end_bit > (int)sizeof(KeyT) * 8 || begin_bit > end_bit)
            return cudaErrorInvalidValue;
        typedef typename std::make_unsigned<KeyT>::type U;
        const size_t n = (size_t)num_items;
        std::vector<U> radix(n);
        for (size_t i = 0; i < n; i++) {
            U u = (U)d_keys_in[i];
            if (std::is_signed<KeyT>::value) u ^= (U)((U)1 << (sizeof(KeyT) * 8 - 1));
            int w = end_bit - begin_bit;
            u = (U)(u >> begin_bit);
            if (w < (int)sizeof(U) * 8) u &= (U)(((U)1 << w) - 1);
            radix[i] = u;
        }
        std::vector<size_t> perm(n);
        std::iota(perm.begin(), perm.end(), (size_t)0);
        std::stable_sort(perm.begin(), perm.end(), [&](size_t a, size_t b) { return radix[a] < radix[b]; });
        std::vector<KeyT> k(n);
        std::vector<ValueT> v(n);
        for (size_t i = 0; i < n; i++) k[i] = d_keys_in[perm[i]], v[i] = d_values_in[perm[i]];
        std::copy(k.begin(), k.end(), d_keys_out);
        std::copy(v.begin(), v.end(), d_values_out);
        return cudaSuccess;
    }
};

} // namespace cub

#endif
