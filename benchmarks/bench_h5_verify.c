/* bench_h5_verify.c: the cost of the checksum record (io/h5sum.c) on one big token store shard:
 *   bench_h5_verify DIR MTOKENS [REPEATS]
 * writes DIR/passages-00000.h5 with MTOKENS million tokens (rows of 20-300, ids drawn with a skew like text's) and
 * prints the write (h5store_write_shard, sealing included), the seal alone (read back + crc32 + fsync), h5_verify
 * from the page cache and after the file's pages were dropped (posix_fadvise DONTNEED: read from the disk), and
 * what a reader does anyway (h5store_open + h5store_load), each the best of REPEATS (default 3), in s and MB/s. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "h5store.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void drop_pages(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_h5_verify DIR MTOKENS [REPEATS]\n");
        return 2;
    }
    const char *dir = argv[1];
    int64_t ntok = (int64_t)(atof(argv[2]) * 1e6);
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    int32_t *tok = xr_malloc(sizeof(int32_t) * (size_t)ntok);
    for (int64_t i = 0; i < ntok; i++) { /* half the ids under 2000, as in text */
        uint32_t r = rnd();
        tok[i] = (int32_t)(r & 1 ? (r >> 1) % 2000 : (r >> 1) % 30522);
    }
    int64_t cap = ntok / 20 + 2, n = 0;
    int64_t *off = xr_malloc(sizeof(int64_t) * (size_t)cap);
    off[0] = 0;
    while (off[n] < ntok) {
        int64_t len = 20 + rnd() % 281;
        off[n + 1] = off[n] + len < ntok ? off[n] + len : ntok;
        n++;
    }
    char *path = xr_path_join(dir, "passages-00000.h5");
    const char *src[] = {"bench"};
    H5ShardMeta m = {.name = "passages", .tokenizer_kind = "wordpiece", .tokenizer_fingerprint = "0123456789abcdef",
                     .vocab_size = 30522, .shard_index = 0, .num_shards = 1, .num_rows_total = n, .sources = src,
                     .nsources = 1};
    XrErr e = {{0}};
    double best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        if (h5store_write_shard(path, &m, tok, off, n, NULL, &e) < 0) {
            fprintf(stderr, "%s\n", e.msg);
            return 1;
        }
        double t1 = now();
        if (h5_seal(path, &e) < 0) {
            fprintf(stderr, "%s\n", e.msg);
            return 1;
        }
        double t2 = now();
        H5SumCheck c;
        if (h5_verify(path, &c, &e) != H5SUM_OK) {
            fprintf(stderr, "%s\n", e.msg);
            return 1;
        }
        double t3 = now();
        drop_pages(path);
        double t4 = now();
        h5_verify(path, &c, &e);
        double t5 = now();
        TokenStore *s = h5store_open(path, "passages", &e); /* verifies again: the file is fresh, not remembered */
        TokBatch b = {0};
        if (!s || h5store_load(s, &b, &e) < 0) {
            fprintf(stderr, "%s\n", e.msg);
            return 1;
        }
        double t6 = now();
        tokbatch_free(&b);
        h5store_close(s);
        double t[5] = {t1 - t0, t2 - t1, t3 - t2, t5 - t4, (t6 - t5) - (t3 - t2)};
        for (int k = 0; k < 5; k++)
            if (t[k] < best[k]) best[k] = t[k];
    }
    struct stat sb;
    stat(path, &sb);
    double mb = (double)sb.st_size / 1e6;
    printf("shard %s: %lld rows, %lld tokens, %.1f MB on disk (%.2f bytes/token); best of %d\n", path, (long long)n,
           (long long)ntok, mb, (double)sb.st_size / (double)ntok, reps);
    const char *what[5] = {"write (h5store_write_shard, seal included)", "seal alone (read back, crc32, fsync)",
                           "verify, page cache", "verify, pages dropped (disk)",
                           "open + load (h5store_open + h5store_load, verify excluded)"};
    for (int k = 0; k < 5; k++) printf("  %-60s %8.3f s  %8.0f MB/s\n", what[k], best[k], mb / best[k]);
    free(path), free(tok), free(off);
    return 0;
}
