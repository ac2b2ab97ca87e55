/* fuzz_tokjson.c: a model directory holding only tokenizer.json (+ a fixed tokenizer_config.json): the
 * tokenizer.json parser on arbitrary bytes; a tokenizer it accepts encodes a fixed text. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static const char cfg[] = "{\"do_lower_case\": true, \"model_max_length\": 512}";
    xf_write("tokenizer_config.json", (const uint8_t *)cfg, sizeof cfg - 1);
    xf_write("tokenizer.json", data, n);
    XrErr e;
    Tokenizer *t = tok_load(xf_dir(), &e);
    if (t) {
        static const char text[] = "Hello, wörld! unaffable [SEP] 東京 42";
        int32_t *ids = NULL;
        size_t cap = 0;
        tok_encode(t, text, sizeof text - 1, &ids, &cap);
        free(ids);
        tok_free(t);
    }
    return 0;
}
