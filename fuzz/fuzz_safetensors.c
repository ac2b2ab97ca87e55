/* fuzz_safetensors.c: the safetensors reader on arbitrary bytes (header JSON, offsets, dtypes, shapes), then
 * every tensor it accepted converted to f32. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    SafeTensors st;
    XrErr e;
    if (st_open(&st, xf_write("model.safetensors", data, n), &e) == 0) {
        for (int i = 0; i < st.n; i++) {
            const StTensor *t = &st.tensors[i];
            int64_t k = st_numel(t);
            if (!st_is_float(t->dtype) || k > (1 << 20)) continue;
            float *out = malloc(sizeof(float) * (size_t)(k ? k : 1));
            st_to_f32(t, out, &e);
            free(out);
        }
        st_close(&st);
    }
    return 0;
}
