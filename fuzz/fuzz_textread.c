/* fuzz_textread.c: the text readers on arbitrary bytes. The first byte picks the file (jsonl pairs, FlagEmbedding
 * jsonl, csv, tsv; the same gzip-compressed when bit 2 is set, a truncated gzip stream when bit 3 is) and the
 * options (UTF-8 replace, no header, allow empty); the rest is the file. BEIR directories: fuzz_beir.c. */
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "fuzz_util.h"
#include "textread.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    if (n < 1) return 0;
    static const char *const names[] = {"in.jsonl", "in.jsonl", "in.csv", "in.tsv"};
    static const TrFormat fmts[] = {TR_PAIRS, TR_FLAG, TR_PAIRS, TR_PAIRS};
    int k = data[0] & 3, gz = data[0] & 4, cut = data[0] & 8;
    TrOptions o = {.format = fmts[k], .utf8_replace = (data[0] >> 4) & 1, .no_header = (data[0] >> 5) & 1,
                   .allow_empty = (data[0] >> 6) & 1};
    const char *path;
    char gzname[32];
    if (gz) {
        snprintf(gzname, sizeof gzname, "%s.gz", names[k]);
        path = xf_write(gzname, NULL, 0);
        gzFile g = gzopen(path, "wb");
        if (n > 1) gzwrite(g, data + 1, (unsigned)(n - 1));
        gzclose(g);
        if (cut) { /* drop the last bytes of the stream: a truncated download */
            FILE *f = fopen(path, "rb+");
            fseek(f, 0, SEEK_END);
            long len = ftell(f);
            fclose(f);
            if (len > 4) truncate(path, len - 1 - (long)(data[n - 1] % 4));
        }
    } else {
        path = xf_write(names[k], data + 1, n - 1);
    }
    const char *in[1] = {path};
    TextSet ts;
    XrErr e;
    if (tr_read(in, 1, &o, &ts, &e) == 0) textset_free(&ts);
    return 0;
}
