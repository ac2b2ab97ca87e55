/* fuzz_ckpt.c: a checkpoint manifest (manifest.json) of arbitrary bytes opened without and with verification
 * (file table, sizes, crc32, shards), beside a fixed small model file. */
#include "ckpt.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static const uint8_t model[] = "not really a model";
    xf_write(CKPT_MODEL, model, sizeof model - 1);
    xf_write(CKPT_MANIFEST, data, n);
    CkptManifest m;
    XrErr e;
    for (int verify = 0; verify < 2; verify++)
        if (ckpt_open(xf_dir(), &m, verify, &e) == 0) ckpt_manifest_free(&m);
    return 0;
}
