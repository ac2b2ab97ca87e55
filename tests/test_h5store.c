/* test_h5store.c: the HDF5 token store writer and batched reader: round trip of random rows (empty rows,
 * an empty shard, a one-row shard) through index.h5 + 3 shards, range / row-list / id reads across shard
 * boundaries, byte-identical output for identical content, every bad-file case the reader checks, and the
 * checksum record that refuses damaged files before libhdf5 reads them. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dataset.h"
#include "groups.h"
#include "h5store.h"
#include "xr_fs.h"
#include "testutil.h"

#define N 5000
#define VOCAB 30522

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static char dir[256];
static const char *in_dir(const char *name) {
    static char b[4][512];
    static int k;
    char *p = b[k++ & 3];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static H5ShardMeta meta(int64_t shard, int64_t nshards, int64_t row_start, const char *fp) {
    static const char *src[] = {"corpus.jsonl", "queries.jsonl"};
    H5ShardMeta m = {.name = "passages", .tokenizer_kind = "wordpiece", .tokenizer_fingerprint = fp,
                     .vocab_size = VOCAB, .max_tokens = 0, .shard_index = shard, .num_shards = nshards,
                     .row_start = row_start, .num_rows_total = N, .sources = src, .nsources = 2};
    return m;
}

static int write_index(const char *path, const char *const *files, const int64_t *row_off, int ns, int64_t ntok) {
    XrErr e;
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int64_t f = h5_create(tmp, &e);
    int ok = f >= 0 && h5_attr_write_str(f, "xrank_format", H5STORE_INDEX_FORMAT, path, &e) == 0 &&
             h5store_index_write_store(f, "passages", files, row_off, ns, ntok, path, &e) == 0;
    int rc = f >= 0 ? h5_commit(f, tmp, path, ok, &e) : -1;
    TU_CHECK(rc == 0, "write index: %s", e.msg);
    return rc;
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    XrErr e;
    char *x = xr_read_file(a, &na, &e), *y = xr_read_file(b, &nb, &e);
    int eq = x && y && na == nb && !memcmp(x, y, na);
    free(x), free(y);
    return eq;
}

/* Write a shard by hand with the given offsets, to make files the writer never would. */
static void write_raw_shard(const char *path, const int64_t *off, int64_t noff, int64_t ntok, const char *fp) {
    XrErr e;
    int32_t *tok = xr_calloc(ntok > 0 ? ntok : 1, sizeof(int32_t));
    int64_t f = h5_create(path, &e);
    hid_t g = H5Gcreate2(f, "passages", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5ShardMeta m = meta(0, 1, 0, fp);
    int ok = g >= 0 && h5_attr_write_str(f, "xrank_format", H5STORE_SHARD_FORMAT, path, &e) == 0 &&
             h5_attr_write_str(g, "tokenizer_kind", m.tokenizer_kind, path, &e) == 0 &&
             h5_attr_write_str(g, "tokenizer_fingerprint", fp, path, &e) == 0 &&
             h5_attr_write_i64(g, "vocab_size", VOCAB, path, &e) == 0 &&
             h5_attr_write_i64(g, "max_tokens", 0, path, &e) == 0 && h5_attr_write_i64(g, "row_start", 0, path, &e) == 0 &&
             h5_write_1d(g, "tokens", H5T_NATIVE_INT32, tok, ntok, path, &e) == 0 &&
             h5_write_1d(g, "offsets", H5T_NATIVE_INT64, off, noff, path, &e) == 0;
    TU_CHECK(ok, "raw shard %s: %s", path, e.msg);
    H5Gclose(g);
    H5Fclose(f);
    TU_CHECK(h5_seal(path, &e) == 0, "seal %s: %s", path, e.msg); /* as the writer would: the damage is in the content */
    free(tok);
}

static void expect_open_error(const char *path, const char *want) {
    XrErr e = {{0}};
    TokenStore *s = h5store_open(path, "passages", &e);
    TU_CHECK(!s, "%s opened but should fail with '%s'", path, want);
    TU_CHECK(strstr(e.msg, want) != NULL, "error for %s: got '%s', want it to contain '%s'", path, e.msg, want);
    h5store_close(s);
}

/* Flip byte at of path in place (xor 0x40). */
static void flip_byte(const char *path, off_t at) {
    FILE *f = fopen(path, "r+b");
    int c = f && fseek(f, at, SEEK_SET) == 0 ? fgetc(f) : EOF;
    TU_CHECK(c != EOF && fseek(f, at, SEEK_SET) == 0 && fputc(c ^ 0x40, f) != EOF, "flip byte %lld of %s",
             (long long)at, path);
    if (f) fclose(f);
}

static void copy_to(const char *src, const char *dst) {
    XrErr e;
    TU_CHECK(xr_copy_file(src, dst, 0, &e) == 0, "copy: %s", e.msg);
}

/* The checksum record (io/h5sum.c): a written shard verifies; one flipped byte anywhere (the data, the superblock
 * after the user block, the record, its zero padding, the magic), a cut or added bytes refuse it before libhdf5
 * reads it, naming the file; a file without a record (h5py, older xrank) is left to the structural checks; a file
 * verified once is not read again unless it changed. */
static void test_checksum(const char *good) {
    XrErr e = {{0}};
    H5SumCheck c;
    struct stat sb;
    TU_CHECK(stat(good, &sb) == 0, "stat %s", good);
    TU_CHECK(h5_verify(good, &c, &e) == H5SUM_OK && c.covered == (uint64_t)sb.st_size - H5_USERBLOCK_BYTES,
             "good shard: state %d covered %llu of %lld bytes: %s", c.state, (unsigned long long)c.covered,
             (long long)sb.st_size, e.msg);
    FILE *f = fopen(good, "rb");
    char head[8] = {0};
    TU_CHECK(f && fread(head, 1, 8, f) == 8 && !memcmp(head, H5SUM_MAGIC, 8), "no record at the start of %s", good);
    if (f) fclose(f);
    struct {
        const char *name;
        off_t at; /* byte to flip; -1: cut 100 bytes; -2: add 1 byte */
        const char *want;
    } cases[] = {
        {"data", sb.st_size / 2 + 256, "damaged: crc32 "},
        {"superblock", H5_USERBLOCK_BYTES + 9, "damaged: crc32 "},
        {"record_crc", 33, "fails its own crc32"},
        {"record_len", 25, "fails its own crc32"},
        {"record_pad", 300, "fails its own crc32"},
        {"magic", 2, "holds no valid xrank checksum record"},
        {"cut", -1, "truncated"},
        {"grown", -2, "bytes added at the end"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char p[600];
        snprintf(p, sizeof p, "%s/bad_%s.h5", dir, cases[k].name);
        copy_to(good, p);
        if (cases[k].at >= 0) {
            flip_byte(p, cases[k].at);
        } else if (cases[k].at == -1) {
            TU_CHECK(truncate(p, sb.st_size - 100) == 0, "truncate %s", p);
        } else {
            FILE *a = fopen(p, "ab");
            TU_CHECK(a && fputc(0, a) != EOF, "grow %s", p);
            if (a) fclose(a);
        }
        e.msg[0] = 0;
        H5SumState st = h5_verify(p, &c, &e);
        TU_CHECK(st == H5SUM_DAMAGED && strstr(e.msg, p) && strstr(e.msg, cases[k].want),
                 "%s: state %d, message '%s' (want the path and '%s')", cases[k].name, st, e.msg, cases[k].want);
        expect_open_error(p, cases[k].want); /* the reader refuses it with the same words */
        char fmt[64];
        TU_CHECK(h5_file_format(p, fmt, sizeof fmt, &e) == -3, "%s: h5_file_format did not refuse it", cases[k].name);
    }
    /* no record: left to the structural checks */
    char p[600];
    snprintf(p, sizeof p, "%s/legacy.h5", dir);
    hid_t lf = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(lf);
    TU_CHECK(h5_verify(p, &c, &e) == H5SUM_NONE, "legacy file: state %d %s", c.state, e.msg);
    snprintf(p, sizeof p, "%s/not_h5.h5", dir);
    f = fopen(p, "w");
    fputs("XRANKSU", f); /* 7 bytes: the magic cut short */
    fclose(f);
    TU_CHECK(h5_verify(p, &c, &e) == H5SUM_DAMAGED && strstr(e.msg, "truncated"), "cut magic: %d %s", c.state, e.msg);
    /* remembered: only files last changed more than 2 s before the check (file times move in clock ticks) */
    snprintf(p, sizeof p, "%s/old.h5", dir);
    copy_to(good, p);
    TU_CHECK(h5_verify(p, &c, &e) == H5SUM_OK && !c.cached, "fresh copy: %d cached %d", c.state, c.cached);
    TU_CHECK(h5_verify(p, &c, &e) == H5SUM_OK && !c.cached, "a file changed just now is checked again");
    struct timespec old[2] = {{.tv_sec = time(NULL) - 3600}, {.tv_sec = time(NULL) - 3600}};
    TU_CHECK(utimensat(AT_FDCWD, p, old, 0) == 0, "utimensat %s", p);
    TU_CHECK(h5_verify(p, &c, &e) == H5SUM_OK && !c.cached, "old copy, first check: %d cached %d", c.state, c.cached);
    TU_CHECK(h5_verify(p, &c, &e) == H5SUM_OK && c.cached, "old copy, second check: %d cached %d", c.state, c.cached);
    flip_byte(p, sb.st_size / 2 + 256); /* in place: same inode and size, new modification time */
    TU_CHECK(h5_verify(p, &c, &e) == H5SUM_DAMAGED && strstr(e.msg, "damaged: crc32"),
             "changed in place after a check: %d '%s'", c.state, e.msg);
}

/* The inputs on which libhdf5 1.10 itself faults, overflows or allocates 1 TiB (fuzz/corpus/h5/crashes), as a
 * disk would leave a file xrank sealed: the record written for the file one byte away, the body then changed into
 * the input. Every reader refuses them by the checksum, naming the file, before libhdf5 parses a byte (were one
 * to reach libhdf5, this test would die of its SIGFPE / SIGSEGV). */
static void test_crash_inputs_refused(void) {
    const char *names[] = {"h5aexists_header_overflow", "h5dopen_layout_leak", "h5dopen_zero_chunk_dim_sigfpe",
                           "h5g_mkroot_1tb_malloc",     "h5g_mkroot_leak",     "h5lexists_header_leak",
                           "unfiltered_short_chunk",    "h5aexists_memcpy_segv"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char src[600], p[600];
        snprintf(src, sizeof src, "../fuzz/corpus/h5/crashes/%s", names[k]);
        snprintf(p, sizeof p, "%s/crash_%s.h5", dir, names[k]);
        XrErr e = {{0}};
        size_t n;
        unsigned char *body = (unsigned char *)xr_read_file(tu_path(src), &n, &e);
        TU_CHECK(body && n > 16, "read %s: %s", src, e.msg);
        if (!body) continue;
        unsigned char *f = xr_calloc(H5_USERBLOCK_BYTES + n, 1);
        memcpy(f + H5_USERBLOCK_BYTES, body, n);
        f[H5_USERBLOCK_BYTES + n - 1] ^= 1; /* the file as written: one byte away */
        TU_CHECK(xr_write_file(p, f, H5_USERBLOCK_BYTES + n, 0, &e) == 0 && h5_seal(p, &e) == 0, "seal %s: %s", p,
                 e.msg);
        FILE *w = fopen(p, "r+b"); /* the damage: the body becomes the input */
        TU_CHECK(w && fseek(w, H5_USERBLOCK_BYTES, SEEK_SET) == 0 && fwrite(body, 1, n, w) == n, "damage %s", p);
        if (w) fclose(w);
        free(f), free(body);
        ShardScan ss;
        DsIndex ix;
        GroupSet g;
        char **files = NULL;
        int64_t *row_off = NULL, ntok = 0;
        int ns = 0;
        const char *what[5] = {"h5store_scan_shard", "ds_read_index", "h5store_index_shards", "groups_read",
                               "h5store_open"};
        for (int r = 0; r < 5; r++) {
            e.msg[0] = 0;
            int rc = r == 0   ? h5store_scan_shard(p, "passages", &ss, &e)
                     : r == 1 ? ds_read_index(p, &ix, &e)
                     : r == 2 ? h5store_index_shards(p, "queries", &files, &row_off, &ns, &ntok, &e)
                     : r == 3 ? groups_read(p, &g, &e)
                              : (h5store_open(p, "passages", &e) ? 0 : -1);
            TU_CHECK(rc < 0 && strstr(e.msg, p) && strstr(e.msg, "damaged: crc32"), "%s on %s: rc %d '%s'", what[r],
                     names[k], rc, e.msg);
        }
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/xr_test_h5store_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    XrErr e = {{0}};

    /* random rows; every 37th row empty */
    int64_t *off = xr_malloc(sizeof(int64_t) * (N + 1));
    off[0] = 0;
    for (int i = 0; i < N; i++) off[i + 1] = off[i] + (i % 37 == 0 ? 0 : 1 + rnd() % 300);
    int64_t T = off[N];
    int32_t *tok = xr_malloc(sizeof(int32_t) * T);
    for (int64_t t = 0; t < T; t++) tok[t] = (int32_t)(rnd() % VOCAB);
    char **ids = xr_malloc(sizeof(char *) * N);
    for (int i = 0; i < N; i++) {
        ids[i] = xr_malloc(64);
        snprintf(ids[i], 64, "doc-%d%s", i, i == 7 ? "-with-a-much-longer-id-é" : "");
    }

    /* shards: [0,1700) [1700,1700) empty [1700,1701) [1701,N) */
    const int64_t row_off[] = {0, 1700, 1700, 1701, N};
    const char *files[] = {"passages-00000.h5", "passages-00001.h5", "passages-00002.h5", "passages-00003.h5"};
    for (int s = 0; s < 4; s++) {
        H5ShardMeta m = meta(s, 4, row_off[s], "0123456789abcdef");
        int rc = h5store_write_shard(in_dir(files[s]), &m, tok + off[row_off[s]], off + row_off[s],
                                     row_off[s + 1] - row_off[s], (const char *const *)ids + row_off[s], &e);
        TU_CHECK(rc == 0, "write shard %d: %s", s, e.msg);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", in_dir(files[s]));
        TU_CHECK(!xr_file_exists(tmp), "%s left behind", tmp);
    }
    write_index(in_dir(H5STORE_INDEX_FILE), files, row_off, 4, T);

    TokenStore *s = h5store_open(dir, "passages", &e);
    TU_CHECK(s != NULL, "open dataset dir: %s", e.msg);
    if (!s) return tu_finish("test_h5store");
    TU_CHECK(h5store_rows(s) == N && h5store_tokens(s) == T, "rows %lld tokens %lld, want %d %lld",
             (long long)h5store_rows(s), (long long)h5store_tokens(s), N, (long long)T);
    TU_CHECK(h5store_num_shards(s) == 4, "%d shards", h5store_num_shards(s));
    TU_CHECK(!strcmp(h5store_tokenizer_kind(s), "wordpiece") &&
                 !strcmp(h5store_tokenizer_fingerprint(s), "0123456789abcdef") && h5store_vocab_size(s) == VOCAB,
             "tokenizer %s %s %lld", h5store_tokenizer_kind(s), h5store_tokenizer_fingerprint(s),
             (long long)h5store_vocab_size(s));
    int bad = 0;
    for (int i = 0; i < N; i++) bad += h5store_row_len(s, i) != off[i + 1] - off[i];
    TU_CHECK(bad == 0, "%d row lengths differ", bad);

    /* ranges: inside a shard, across all boundaries, empty, whole */
    TokBatch b = {0};
    const int64_t ranges[][2] = {{0, 0}, {0, 1}, {5, 17}, {1690, 1710}, {1699, 1702}, {1700, 1701}, {1701, 1701},
                                 {0, N}, {N - 3, N}, {N, N}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        int64_t i = ranges[r][0], j = ranges[r][1];
        int rc = h5store_read_range(s, i, j, &b, &e);
        TU_CHECK(rc == 0, "read [%lld,%lld): %s", (long long)i, (long long)j, e.msg);
        int64_t diff = -1;
        for (int64_t k = 0; k <= j - i && diff < 0; k++)
            if (b.offsets[k] != off[i + k] - off[i]) diff = k;
        TU_CHECK(rc == 0 && b.n == j - i && diff < 0, "range [%lld,%lld): n %lld, offsets differ at %lld", (long long)i,
                 (long long)j, (long long)b.n, (long long)diff);
        TU_CHECK(rc == 0 && !memcmp(b.tokens, tok + off[i], sizeof(int32_t) * (off[j] - off[i])),
                 "range [%lld,%lld): tokens differ", (long long)i, (long long)j);
    }
    TU_CHECK(h5store_read_range(s, 10, N + 1, &b, &e) < 0 && strstr(e.msg, "out of range"), "range past end: %s", e.msg);

    /* row lists: unsorted, repeats, neighbours (merged runs), every shard, empty rows */
    int64_t list[2000];
    int nl = 0;
    for (int k = 0; k < 1500; k++) list[nl++] = rnd() % N;
    for (int k = 0; k < 100; k++) list[nl++] = 1695 + k % 10; /* across the empty and one-row shards */
    for (int k = 0; k < 50; k++) list[nl++] = list[k];          /* repeats */
    list[nl++] = 0, list[nl++] = 37, list[nl++] = N - 1, list[nl++] = 1700;
    int rc = h5store_read_rows(s, list, nl, &b, &e);
    TU_CHECK(rc == 0, "read_rows: %s", e.msg);
    bad = 0;
    for (int k = 0; rc == 0 && k < nl; k++) {
        int64_t r = list[k], len = off[r + 1] - off[r];
        if (b.offsets[k + 1] - b.offsets[k] != len ||
            memcmp(b.tokens + b.offsets[k], tok + off[r], sizeof(int32_t) * len))
            bad++;
    }
    TU_CHECK(rc == 0 && b.n == nl && bad == 0, "read_rows: %d of %d rows differ", bad, nl);
    TU_CHECK(h5store_read_rows(s, list, 0, &b, &e) == 0 && b.n == 0 && b.offsets[0] == 0, "empty list: %s", e.msg);
    /* 2,500 runs (every other row, backwards): several reads of at most 1,024 runs each */
    int64_t *every2 = xr_malloc(sizeof(int64_t) * N / 2);
    for (int k = 0; k < N / 2; k++) every2[k] = N - 1 - 2 * k;
    rc = h5store_read_rows(s, every2, N / 2, &b, &e);
    bad = 0;
    for (int k = 0; rc == 0 && k < N / 2; k++) {
        int64_t r = every2[k], len = off[r + 1] - off[r];
        bad += b.offsets[k + 1] - b.offsets[k] != len || memcmp(b.tokens + b.offsets[k], tok + off[r], 4 * len);
    }
    TU_CHECK(rc == 0 && bad == 0, "every other row: %d rows differ (%s)", bad, rc ? e.msg : "");
    free(every2);
    int64_t oob[] = {3, N};
    TU_CHECK(h5store_read_rows(s, oob, 2, &b, &e) < 0 && strstr(e.msg, "entry 1"), "row out of range: %s", e.msg);

    /* whole store into memory */
    TokBatch all = {0};
    rc = h5store_load(s, &all, &e);
    TU_CHECK(rc == 0 && all.n == N && all.offsets[N] == T && !memcmp(all.tokens, tok, sizeof(int32_t) * T),
             "load: %s", e.msg);
    tokbatch_free(&all);

    /* ids across shards (one longer UTF-8 id widens the fixed-length strings) */
    char **got = h5store_read_ids(s, 1690, 1710, &e);
    TU_CHECK(got != NULL, "ids: %s", e.msg);
    for (int k = 0; got && k < 20; k++) TU_CHECK(!strcmp(got[k], ids[1690 + k]), "id %d: %s vs %s", 1690 + k, got[k], ids[1690 + k]);
    free(got);
    got = h5store_read_ids(s, 0, 10, &e);
    TU_CHECK(got && !strcmp(got[7], ids[7]) && !strcmp(got[8], "doc-8"), "ids 7/8: %s %s", got ? got[7] : "", got ? got[8] : "");
    free(got);
    h5store_close(s);

    /* a shard opened alone is the store of its own rows */
    s = h5store_open(in_dir(files[3]), "passages", &e);
    TU_CHECK(s && h5store_rows(s) == N - 1701, "lone shard: %s", e.msg);
    if (s) {
        rc = h5store_read_range(s, 0, 2, &b, &e);
        TU_CHECK(rc == 0 && !memcmp(b.tokens, tok + off[1701], sizeof(int32_t) * (off[1703] - off[1701])),
                 "lone shard rows: %s", e.msg);
        got = h5store_read_ids(s, 0, 1, &e);
        TU_CHECK(got && !strcmp(got[0], "doc-1701"), "lone shard id %s", got ? got[0] : e.msg);
        free(got);
        h5store_close(s);
    }

    /* identical content -> identical bytes (what makes tokenize's output independent of the rank count);
     * NULL ids -> decimal global row numbers */
    H5ShardMeta m = meta(0, 1, 100, "0123456789abcdef");
    rc = h5store_write_shard(in_dir("a.h5"), &m, tok, off, 300, NULL, &e);
    rc |= h5store_write_shard(in_dir("b.h5"), &m, tok, off, 300, NULL, &e);
    TU_CHECK(rc == 0, "write a/b: %s", e.msg);
    TU_CHECK(files_equal(in_dir("a.h5"), in_dir("b.h5")), "same content written twice gives different bytes");
    s = h5store_open(in_dir("a.h5"), "passages", &e);
    got = s ? h5store_read_ids(s, 0, 300, &e) : NULL;
    TU_CHECK(got && !strcmp(got[0], "100") && !strcmp(got[299], "399"), "generated ids %s..%s", got ? got[0] : e.msg,
             got ? got[299] : "");
    free(got);
    h5store_close(s);

    /* writing into a missing directory fails and leaves nothing */
    rc = h5store_write_shard("/tmp/xr_no_such_dir_h5/x.h5", &m, tok, off, 3, NULL, &e);
    TU_CHECK(rc < 0 && strstr(e.msg, "x.h5.tmp: cannot create"), "write to missing dir: rc %d %s", rc, e.msg);

    /* bad files */
    int64_t mono[] = {0, 5, 3, 8};
    write_raw_shard(in_dir("bad_mono.h5"), mono, 4, 8, "0123456789abcdef");
    expect_open_error(in_dir("bad_mono.h5"), "offsets not monotonic at row 1: 5 then 3");
    int64_t end[] = {0, 5, 9};
    write_raw_shard(in_dir("bad_end.h5"), end, 3, 8, "0123456789abcdef");
    expect_open_error(in_dir("bad_end.h5"), "offsets end at 9 but /passages/tokens holds 8 tokens");
    int64_t start[] = {2, 5};
    write_raw_shard(in_dir("bad_start.h5"), start, 2, 5, "0123456789abcdef");
    expect_open_error(in_dir("bad_start.h5"), "offsets[0] = 2, should be 0");
    FILE *f = fopen(in_dir("junk.h5"), "w");
    fputs("not hdf5\n", f);
    fclose(f);
    expect_open_error(in_dir("junk.h5"), "cannot open as HDF5");
    expect_open_error("/tmp/xr_no_such_dir_h5", "no such file");
    TU_CHECK(h5store_open(dir, "queries", &e) == NULL && strstr(e.msg, "has no /queries store"), "missing store: %s",
             e.msg);
    /* index disagreeing with a shard, and shards with two tokenizers */
    char p1[600], p2[600];
    const int64_t lying[] = {0, 1699, 1700, 1701, N};
    mkdir(in_dir("lying"), 0755);
    for (int k = 0; k < 4; k++) {
        snprintf(p1, sizeof p1, "%s/lying/%s", dir, files[k]);
        snprintf(p2, sizeof p2, "%s/%s", dir, files[k]);
        TU_CHECK(link(p2, p1) == 0, "link %s", p1);
    }
    write_index(in_dir("lying/" H5STORE_INDEX_FILE), files, lying, 4, T);
    expect_open_error(in_dir("lying"), "holds rows [0, 1700) but");
    mkdir(in_dir("mixed"), 0755);
    snprintf(p1, sizeof p1, "%s/mixed/%s", dir, files[0]);
    snprintf(p2, sizeof p2, "%s/%s", dir, files[0]);
    TU_CHECK(link(p2, p1) == 0, "link %s", p1);
    H5ShardMeta m2 = meta(1, 2, 1700, "fedcba9876543210");
    rc = h5store_write_shard(in_dir("mixed/other-tok.h5"), &m2, tok, off + 10, 5, NULL, &e);
    TU_CHECK(rc == 0, "mixed: %s", e.msg);
    const char *mixed[] = {files[0], "other-tok.h5"};
    const int64_t mixed_off[] = {0, 1700, 1705};
    write_index(in_dir("mixed/" H5STORE_INDEX_FILE), mixed, mixed_off, 2, off[1700] + off[15] - off[10]);
    expect_open_error(in_dir("mixed"), "tokenizer wordpiece fedcba9876543210 differs");
    test_checksum(in_dir(files[0]));
    test_crash_inputs_refused();

    tokbatch_free(&b);
    for (int i = 0; i < N; i++) free(ids[i]);
    free(ids), free(tok), free(off);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (getenv("XR_TEST_KEEP"))
        printf("kept %s\n", dir);
    else if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("test_h5store");
}
