/* fuzz_tokenize.c: both tokenizers (WordPiece of tests/fixtures/tok/bert, SentencePiece of .../xlmr) on
 * arbitrary bytes (invalid UTF-8 included), and the pair template with truncation at a length from the input. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "tokenizer.h"

static void one(const Tokenizer *t, const uint8_t *data, size_t n) {
    int32_t *ids = NULL;
    size_t cap = 0;
    int k = tok_encode(t, (const char *)data, n, &ids, &cap);
    if (k >= 0 && ids) { /* no ids allocated for an empty text */
        int max_len = n ? 3 + data[0] % 64 : 8, half = k / 2;
        int lp = tok_seq_len(t, half, k - half, max_len), ls = tok_seq_len(t, k, -1, max_len);
        int m = lp > ls ? lp : ls;
        int32_t *out = malloc(sizeof(int32_t) * (size_t)(m + 1)), *types = malloc(sizeof(int32_t) * (size_t)(m + 1));
        if (tok_pair(t, ids, half, ids + half, k - half, max_len, out, types) != lp) abort();
        if (tok_single(t, ids, k, max_len, out, types) != ls) abort();
        free(out), free(types);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static Tokenizer *wp, *sp;
    if (!wp) {
        XrErr e;
        wp = tok_load(xf_fixture("tok/bert"), &e);
        sp = tok_load(xf_fixture("tok/xlmr"), &e);
        if (!wp || !sp) abort();
    }
    one(wp, data, n);
    one(sp, data, n);
    return 0;
}
