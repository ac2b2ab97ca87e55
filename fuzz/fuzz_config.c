/* fuzz_config.c: a model directory's config.json (hf_load_config: model type, sizes, labels, the sanity limits)
 * on arbitrary bytes. */
#include "fuzz_util.h"
#include "hfmodel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    ModelConfig c;
    XrErr e;
    xf_write("config.json", data, n);
    hf_load_config(xf_dir(), &c, &e);
    return 0;
}
