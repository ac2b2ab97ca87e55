/* fuzz_beir.c: the BEIR directory reader (tr_read with TR_BEIR) on arbitrary bytes. A BEIR input is three files,
 * so the fuzz input is split at the byte 0x1E (ASCII record separator) into corpus.jsonl, queries.jsonl and the
 * qrels tsv (missing parts are empty files; a fourth part and beyond is ignored). The first byte picks the options:
 * bit 0 UTF-8 replace, bit 1 no title, bit 2 allow empty, bit 3 the three files gzip-compressed, bit 4 the qrels
 * named qrels/dev.tsv (found as the only file), bit 5 with --split dev, bit 6 a title separator " | ". The seeds
 * (fuzz/corpus/beir) are tests/fixtures/h5/beir and variants of it in this layout. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fuzz_util.h"
#include "textread.h"

#define FB_SEP 0x1E

/* Write data[0..n) to dir/name, gzip-compressed (name + ".gz") when gz. */
static void fb_put(const char *dir, const char *name, const uint8_t *data, size_t n, int gz) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s%s", dir, name, gz ? ".gz" : "");
    if (gz) {
        gzFile g = gzopen(path, "wb");
        if (n) gzwrite(g, data, (unsigned)n);
        gzclose(g);
    } else {
        FILE *f = fopen(path, "wb");
        if (n) fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* Remove what an earlier input left (plain or .gz, test.tsv or dev.tsv): the reader prefers some names. */
static void fb_clear(const char *dir) {
    static const char *const names[] = {"corpus.jsonl", "corpus.jsonl.gz", "queries.jsonl", "queries.jsonl.gz",
                                        "qrels/test.tsv", "qrels/test.tsv.gz", "qrels/dev.tsv", "qrels/dev.tsv.gz"};
    char path[700];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    if (n < 1) return 0;
    int opt = data[0];
    char dir[600], qdir[620];
    snprintf(dir, sizeof dir, "%s/beir", xf_dir());
    snprintf(qdir, sizeof qdir, "%s/qrels", dir);
    mkdir(dir, 0755);
    mkdir(qdir, 0755);
    fb_clear(dir);
    const uint8_t *part[3] = {NULL, NULL, NULL};
    size_t len[3] = {0, 0, 0};
    size_t at = 1; /* start of the next part; n + 1 once the last one is taken */
    for (int k = 0; k < 3 && at <= n; k++) {
        const uint8_t *s = memchr(data + at, FB_SEP, n - at);
        size_t stop = s ? (size_t)(s - data) : n;
        part[k] = data + at;
        len[k] = stop - at;
        at = stop + 1;
    }
    int gz = (opt >> 3) & 1;
    fb_put(dir, "corpus.jsonl", part[0], len[0], gz);
    fb_put(dir, "queries.jsonl", part[1], len[1], gz);
    fb_put(dir, (opt >> 4) & 1 ? "qrels/dev.tsv" : "qrels/test.tsv", part[2], len[2], gz);
    TrOptions o = {.format = TR_BEIR,
                   .utf8_replace = opt & 1,
                   .no_title = (opt >> 1) & 1,
                   .allow_empty = (opt >> 2) & 1,
                   .split = (opt >> 5) & 1 ? "dev" : NULL,
                   .title_sep = (opt >> 6) & 1 ? " | " : NULL};
    const char *in[1] = {dir};
    TextSet ts;
    XrErr e;
    if (tr_read(in, 1, &o, &ts, &e) == 0) textset_free(&ts);
    return 0;
}
