/* sizes_crafted.c: sizes that come from files, checked for overflow before use (issue 15). Each case crafts tiny
 * files whose claims lie (shape products and byte ranges past 2^31 and 2^63, token counts and row offsets past
 * 2^31, a huge group size, huge vocabularies and config sizes, sparse multi-GiB files) and checks the reader
 * refuses them with a message naming the file and the field, without allocating what the claim asks for.
 * Usage: sizes_crafted CASE (tests/sizes.cmake registers one ctest per case). */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "groups.h"
#include "h5store.h"
#include "hfmodel.h"
#include "model.h"
#include "safetensors.h"
#include "testutil.h"
#include "tokenizer.h"
#include "xr_fs.h"

static char g_dir[512];

static const char *in_dir(const char *name) {
    static char b[4][768];
    static int k;
    char *p = b[k++ & 3];
    snprintf(p, 768, "%s/%s", g_dir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    TU_CHECK(f && fwrite(data, 1, n, f) == n, "cannot write %s", path);
    if (f) fclose(f);
}

/* The largest resident size so far: a refused claim must not have been allocated and touched. */
/* Close a file made by h5_create and seal it (its checksum record) as xrank's writers do: these files are
 * damaged in ways the checksum cannot see (written so), and must reach the structural checks. */
static void close_sealed(int64_t f, const char *path) {
    XrErr e = {{0}};
    H5Fclose(f);
    TU_CHECK(h5_seal(path, &e) == 0, "seal %s: %s", path, e.msg);
}

static long max_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

#define EXPECT_ERR(rc_bad, e, want, what)                                                                          \
    do {                                                                                                           \
        TU_CHECK((rc_bad) && strstr((e).msg, want) != NULL, "%s: want an error containing '%s', got '%s'", what,   \
                 want, (rc_bad) ? (e).msg : "(accepted)");                                                          \
        if (rc_bad) printf("%s: %s\n", what, (e).msg);                                                            \
    } while (0)

/* ---- safetensors: a header with the given JSON and data_len bytes of data ---- */

static int st_case(const char *json, size_t data_len, const char *want, const char *what) {
    size_t n = strlen(json);
    unsigned char *buf = xr_calloc(8 + n + data_len + 1, 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, json, n);
    const char *path = in_dir("x.safetensors");
    write_bytes(path, buf, 8 + n + data_len);
    free(buf);
    SafeTensors st;
    XrErr e = {{0}};
    int rc = st_open(&st, path, &e);
    if (rc == 0) st_close(&st);
    EXPECT_ERR(rc != 0, e, want, what);
    TU_CHECK(rc != 0 && strstr(e.msg, path) && strstr(e.msg, "'x'"), "%s: the message names neither the file nor the "
             "tensor: %s", what, e.msg);
    return rc;
}

static void case_st_shape_2p31(void) {
    /* 2^31 F32 elements (8 GiB) claimed by a 100-byte file */
    st_case("{\"x\":{\"dtype\":\"F32\",\"shape\":[65536,32768],\"data_offsets\":[0,8589934592]}}", 16,
            "run past the end of the data buffer", "2^31 elements");
    /* 2^31 + 1 U8 elements: past int32 by one, in bytes too */
    st_case("{\"x\":{\"dtype\":\"U8\",\"shape\":[2147483649],\"data_offsets\":[0,2147483649]}}", 16,
            "run past the end of the data buffer", "2^31+1 bytes");
    /* a shape product that would wrap a 32-bit count to the bytes present: 65536 x 65537 x 4 mod 2^32 = 2^18 */
    st_case("{\"x\":{\"dtype\":\"F32\",\"shape\":[65536,65537],\"data_offsets\":[0,262144]}}", 262144,
            "hold 262144 bytes but shape [65536,65537] F32 needs 17180131328", "32-bit wrap");
}

static void case_st_shape_2p63(void) {
    /* U8 [2^32, 2^32 + 1]: the product wraps 2^64 to exactly 2^32, which is what data_offsets say */
    st_case("{\"x\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967297],\"data_offsets\":[0,4294967296]}}", 16,
            "overflows 64-bit byte counts", "64-bit wrap to the offsets");
    /* F32 [2^31, 2^31, 2]: 2^65 bytes */
    st_case("{\"x\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648,2],\"data_offsets\":[0,16]}}", 16,
            "overflows 64-bit byte counts", "2^65 bytes");
    /* U8 [2^30, 2^30, 8]: 2^63 bytes exactly: fits in uint64 (not in int64), not in the data */
    st_case("{\"x\":{\"dtype\":\"U8\",\"shape\":[1073741824,1073741824,8],\"data_offsets\":[0,16]}}", 16,
            "needs 9223372036854775808", "2^63 bytes");
    /* a dimension past 2^63 (and past 2^53, where a JSON number stops being exact) */
    st_case("{\"x\":{\"dtype\":\"U8\",\"shape\":[9223372036854775808],\"data_offsets\":[0,16]}}", 16,
            "shape[0] is not a non-negative integer", "dimension 2^63");
}

static void case_st_offsets_overflow(void) {
    /* offsets at 2^53 (the last exact JSON integer) that, added to the header, would pass any file */
    st_case("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[9007199254740984,9007199254740992]}}", 8,
            "leave a gap: the data buffer starts at 0", "offsets near 2^53");
    /* an end past 2^63: begin + length would overflow */
    st_case("{\"x\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[18446744073709551608,18446744073709551616]}}", 8,
            "data_offsets are not non-negative integers", "offsets near 2^64");
    /* begin at 0, end at 2^53: numel 2^53 U8 matches, the file does not hold it */
    st_case("{\"x\":{\"dtype\":\"U8\",\"shape\":[9007199254740992],\"data_offsets\":[0,9007199254740992]}}", 8,
            "run past the end of the data buffer", "end at 2^53");
    /* header length 2^64 - 8: length + 8 would wrap to 0 */
    unsigned char hdr[16];
    memset(hdr, 0xff, 8);
    hdr[0] = 0xf8;
    memcpy(hdr + 8, "{}      ", 8);
    const char *path = in_dir("h.safetensors");
    write_bytes(path, hdr, sizeof hdr);
    SafeTensors st;
    XrErr e = {{0}};
    int rc = st_open(&st, path, &e);
    if (rc == 0) st_close(&st);
    EXPECT_ERR(rc != 0, e, "header length 18446744073709551608 exceeds", "header length 2^64 - 8");
}

/* ---- config.json and the tokenizer files of a model directory ---- */

/* A copy of the tiny BERT classifier fixture with config.json's "key": value replaced. */
static const char *model_with(const char *key, const char *value) {
    static char d[768];
    snprintf(d, sizeof d, "%s", in_dir("model"));
    xr_remove_tree(d);
    mkdir(d, 0755);
    XrErr e;
    const char *src = tu_path("fixtures/model/bert_cls");
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/model.safetensors", src);
    snprintf(b, sizeof b, "%s/model.safetensors", d);
    TU_CHECK(xr_copy_file(a, b, 0, &e) == 0, "copy %s: %s", a, e.msg);
    snprintf(a, sizeof a, "%s/config.json", src);
    size_t n;
    char *cfg = xr_read_file(a, &n, &e);
    TU_CHECK(cfg != NULL, "read %s", a);
    cJSON *j = cJSON_Parse(cfg);
    free(cfg);
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    cJSON_AddItemToObject(j, key, cJSON_Parse(value));
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    snprintf(b, sizeof b, "%s/config.json", d);
    write_bytes(b, out, strlen(out));
    free(out);
    return d;
}

static void expect_load_error(const char *key, const char *value, const char *want) {
    const char *d = model_with(key, value);
    XrErr e = {{0}};
    Encoder *m = encoder_load(d, &e);
    char what[128];
    snprintf(what, sizeof what, "config.json %s = %s", key, value);
    EXPECT_ERR(m == NULL, e, want, what);
    TU_CHECK(m == NULL && strstr(e.msg, "config.json"), "%s: the message does not name config.json: %s", what, e.msg);
    if (m) encoder_free(m);
}

static void case_config_sizes(void) {
    XrErr e = {{0}};
    Encoder *m = encoder_load(model_with("xr_unused_key", "0"), &e);
    TU_CHECK(m != NULL, "the unchanged fixture must load: %s", e.msg);
    if (m) encoder_free(m);
    /* num_hidden_layers sizes per-layer tables before any tensor is looked at: refused from the tensor count */
    expect_load_error("num_hidden_layers", "2147483647", "num_hidden_layers is 2147483647, but the weights");
    expect_load_error("num_hidden_layers", "1000", "enough for at most");
    /* past int: refused by the parser, never truncated */
    expect_load_error("num_hidden_layers", "2147483648", "\"num_hidden_layers\" must be an integer");
    expect_load_error("vocab_size", "4294967296", "\"vocab_size\" must be an integer");
    expect_load_error("hidden_size", "1e300", "\"hidden_size\" must be an integer");
    /* int-sized claims: 64-bit shapes compared with the tensors, no allocation from the config */
    expect_load_error("vocab_size", "2147483647", "expected [2147483647, ");
    expect_load_error("intermediate_size", "2147483647", "expected [2147483647, ");
    expect_load_error("max_position_embeddings", "2147483647", "expected [2147483647, ");
    expect_load_error("type_vocab_size", "2147483647", "expected [2147483647, ");
    expect_load_error("num_attention_heads", "2147483647", "is not a multiple of num_attention_heads 2147483647");
    TU_CHECK(max_rss_mb() < 200, "resident size %ld MB: a claimed size was allocated", max_rss_mb());
}

/* A sparse file of the given size (no disk blocks: the size lies). */
static void sparse(const char *path, off_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TU_CHECK(fd >= 0 && ftruncate(fd, size) == 0, "cannot make sparse %s", path);
    if (fd >= 0) close(fd);
}

static void case_tokenizer_files(void) {
    char d[768];
    snprintf(d, sizeof d, "%s", in_dir("tok"));
    xr_remove_tree(d);
    mkdir(d, 0755);
    XrErr e = {{0}};
    /* vocab.txt past 4 GiB: the vocabulary's offsets are 32-bit */
    sparse(in_dir("tok/vocab.txt"), (off_t)4 << 30);
    Tokenizer *t = tok_load(d, &e);
    EXPECT_ERR(t == NULL, e, "vocab.txt: 4294967296 bytes, more than the 4294967294 a WordPiece vocabulary", "4 GiB vocab.txt");
    tok_free(t);
    unlink(in_dir("tok/vocab.txt"));
    /* tokenizer.json (alone) and tokenizer_config.json past 1 GiB */
    sparse(in_dir("tok/tokenizer.json"), ((off_t)1 << 30) + 1);
    t = tok_load(d, &e);
    EXPECT_ERR(t == NULL, e, "tokenizer.json: 1073741825 bytes, more than the 1073741824", "1 GiB tokenizer.json");
    tok_free(t);
    sparse(in_dir("tok/tokenizer_config.json"), (off_t)3 << 30);
    t = tok_load(d, &e);
    EXPECT_ERR(t == NULL, e, "tokenizer_config.json: 3221225472 bytes", "3 GiB tokenizer_config.json");
    tok_free(t);
    unlink(in_dir("tok/tokenizer_config.json"));
    /* tokenizer.json whose ids pass int: refused, never cast */
    static const char *ids[] = {"2147483648", "4294967296", "1e300", "-1", "2"};
    for (int i = 0; i < 5; i++) {
        char js[256];
        snprintf(js, sizeof js, "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"[UNK]\":0,\"a\":%s}}}", ids[i]);
        write_bytes(in_dir("tok/tokenizer.json"), js, strlen(js));
        t = tok_load(d, &e);
        EXPECT_ERR(t == NULL, e, "model.vocab entry \"a\": ids must be 0..1", ids[i]);
        tok_free(t);
    }
    /* config.json past 1 GiB */
    sparse(in_dir("tok/config.json"), (off_t)2 << 30);
    ModelConfig c;
    int rc = hf_load_config(d, &c, &e);
    EXPECT_ERR(rc != 0, e, "config.json: 2147483648 bytes, more than the 1073741824", "2 GiB config.json");
    TU_CHECK(max_rss_mb() < 200, "resident size %ld MB: a sparse file was read", max_rss_mb());
}

/* ---- HDF5: shards, the dataset index and group files whose metadata lies ---- */

/* A 1-D dataset with the given extent whose chunks are never written: the file stores none of it. */
static void h5_unwritten(hid_t loc, const char *name, hid_t type, hsize_t n) {
    hsize_t chunk = 1 << 16, maxd = H5S_UNLIMITED;
    hid_t sp = H5Screate_simple(1, &n, &maxd), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    TU_CHECK(d >= 0, "create %s", name);
    H5Dclose(d), H5Pclose(dcpl), H5Sclose(sp);
}

/* A shard /passages with the given offsets; tokens either written (ntok zeros) or an unwritten extent. */
static const char *shard(const char *name, const int64_t *off, int64_t noff, int64_t ntok, int written) {
    const char *path = in_dir(name);
    XrErr e;
    unlink(path);
    int64_t f = h5_create(path, &e);
    hid_t g = H5Gcreate2(f, "passages", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int ok = h5_attr_write_str(f, "xrank_format", H5STORE_SHARD_FORMAT, path, &e) == 0 &&
             h5_attr_write_str(g, "tokenizer_kind", "wordpiece", path, &e) == 0 &&
             h5_attr_write_str(g, "tokenizer_fingerprint", "0123456789abcdef", path, &e) == 0 &&
             h5_attr_write_i64(g, "vocab_size", 100, path, &e) == 0 && h5_attr_write_i64(g, "max_tokens", 0, path, &e) == 0 &&
             h5_attr_write_i64(g, "row_start", 0, path, &e) == 0 &&
             h5_write_1d(g, "offsets", H5T_NATIVE_INT64, off, noff, path, &e) == 0;
    if (written) {
        int32_t *tok = xr_calloc((size_t)ntok + 1, sizeof(int32_t));
        ok = ok && h5_write_1d(g, "tokens", H5T_NATIVE_INT32, tok, ntok, path, &e) == 0;
        free(tok);
    } else {
        h5_unwritten(g, "tokens", H5T_STD_I32LE, (hsize_t)ntok);
    }
    TU_CHECK(ok, "shard %s: %s", path, e.msg);
    H5Gclose(g);
    close_sealed(f, path);
    return path;
}

static void expect_store_error(const char *path, const char *want, const char *what) {
    XrErr e = {{0}};
    TokenStore *s = h5store_open(path, "passages", &e);
    EXPECT_ERR(s == NULL, e, want, what);
    TU_CHECK(s == NULL && strstr(e.msg, path), "%s: the message does not name %s: %s", what, path, e.msg);
    h5store_close(s);
}

static void case_h5_tokens_2p31(void) {
    /* 2^31 + 7 tokens claimed, offsets agreeing, nothing stored */
    int64_t off[2] = {0, ((int64_t)1 << 31) + 7};
    expect_store_error(shard("t31.h5", off, 2, off[1], 0), "tokens claims 2147483655 elements", "tokens 2^31+7");
    /* 2^40 tokens */
    off[1] = (int64_t)1 << 40;
    expect_store_error(shard("t40.h5", off, 2, off[1], 0), "tokens claims 1099511627776 elements", "tokens 2^40");
    /* 2^62 int32 tokens: 2^64 bytes */
    off[1] = (int64_t)1 << 62;
    expect_store_error(shard("t62.h5", off, 2, off[1], 0), "tokens claims 4611686018427387904 elements of 4 bytes",
                       "tokens 2^62");
    /* offsets claiming 2^31 + 2 rows, nothing stored */
    const char *path = in_dir("o31.h5");
    XrErr e;
    unlink(path);
    int64_t f = h5_create(path, &e);
    hid_t g = H5Gcreate2(f, "passages", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    h5_attr_write_str(f, "xrank_format", H5STORE_SHARD_FORMAT, path, &e);
    h5_attr_write_str(g, "tokenizer_kind", "wordpiece", path, &e);
    h5_attr_write_str(g, "tokenizer_fingerprint", "0123456789abcdef", path, &e);
    h5_attr_write_i64(g, "vocab_size", 100, path, &e), h5_attr_write_i64(g, "max_tokens", 0, path, &e);
    h5_attr_write_i64(g, "row_start", 0, path, &e);
    int32_t tok[3] = {0};
    h5_write_1d(g, "tokens", H5T_NATIVE_INT32, tok, 3, path, &e);
    h5_unwritten(g, "offsets", H5T_STD_I64LE, ((hsize_t)1 << 31) + 2);
    H5Gclose(g);
    close_sealed(f, path);
    expect_store_error(path, "offsets claims 2147483650 elements", "2^31 + 1 rows");
    TU_CHECK(max_rss_mb() < 200, "resident size %ld MB: a claimed size was allocated", max_rss_mb());
}

static void case_h5_offsets_2p31(void) {
    /* offsets past 2^31 over 3 real tokens */
    int64_t a[3] = {0, 3, ((int64_t)1 << 31) + 3};
    expect_store_error(shard("a.h5", a, 3, 3, 1), "offsets end at 2147483651 but /passages/tokens holds 3 tokens",
                       "offsets past 2^31");
    /* offsets that wrap: INT64_MAX then a small end (a sum of lengths would overflow) */
    int64_t b[4] = {0, INT64_MAX, 3, 3};
    expect_store_error(shard("b.h5", b, 4, 3, 1), "offsets not monotonic at row 1", "offsets wrap");
    /* a negative start */
    int64_t c[2] = {INT64_MIN, 3};
    expect_store_error(shard("c.h5", c, 2, 3, 1), "offsets[0] = -9223372036854775808, should be 0", "offsets[0] < 0");
    /* an index whose shard table claims 2^40 rows for a 1-row shard */
    int64_t ok_off[2] = {0, 3};
    shard("s0.h5", ok_off, 2, 3, 1);
    const char *files[1] = {"s0.h5"};
    int64_t row_off[2] = {0, (int64_t)1 << 40};
    XrErr e;
    const char *ip = in_dir("index.h5");
    unlink(ip);
    int64_t f = h5_create(ip, &e);
    int ok = h5_attr_write_str(f, "xrank_format", H5STORE_INDEX_FORMAT, ip, &e) == 0 &&
             h5store_index_write_store(f, "passages", files, row_off, 1, 3, ip, &e) == 0;
    TU_CHECK(ok, "index: %s", e.msg);
    close_sealed(f, ip);
    XrErr e2 = {{0}};
    TokenStore *s = h5store_open(ip, "passages", &e2);
    EXPECT_ERR(s == NULL, e2, "s0.h5: holds rows [0, 1) but", "shard table of 2^40 rows");
    h5store_close(s);
}

/* Unfiltered data is stored byte for byte: libhdf5 1.10 copies a chunk's bytes without checking the chunk holds
 * them. (a) a fuzz_h5 input: an index whose deflated shard_row_offsets lost its filter pipeline (12 stored bytes
 * for 16, read as raw: a heap overflow inside libhdf5); (b) a chunked shard tokens dataset without filters whose
 * second chunk was never written. */
static void case_h5_unfiltered_short(void) {
    const char *ip = "fixtures/damaged/unfiltered_short_chunk.h5";
    char **files = NULL;
    int64_t *row_off = NULL, ntok = 0;
    int ns = 0;
    XrErr e = {{0}};
    int rc = h5store_index_shards(ip, "queries", &files, &row_off, &ns, &ntok, &e);
    EXPECT_ERR(rc != 0, e, "shard_row_offsets claims 2 elements (16 bytes) but stores 12 unfiltered bytes",
               "deflated dataset without its filter");
    TU_CHECK(rc != 0 && strstr(e.msg, ip), "the message does not name %s: %s", ip, e.msg);
    if (rc == 0) free(files), free(row_off);
    int64_t off[2] = {0, 8};
    const char *path = shard("u.h5", off, 2, 0, 1);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), g = H5Gopen2(f, "passages", H5P_DEFAULT);
    H5Ldelete(g, "tokens", H5P_DEFAULT);
    hsize_t n = 8, chunk = 4, half = 4, start = 0;
    hid_t sp = H5Screate_simple(1, &n, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d = H5Dcreate2(g, "tokens", H5T_STD_I32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int32_t tok[4] = {1, 2, 3, 4};
    hid_t msp = H5Screate_simple(1, &half, NULL);
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, &start, NULL, &half, NULL);
    TU_CHECK(d >= 0 && H5Dwrite(d, H5T_NATIVE_INT32, msp, sp, H5P_DEFAULT, tok) >= 0, "write half of %s", path);
    H5Sclose(msp), H5Dclose(d), H5Pclose(dcpl), H5Sclose(sp), H5Gclose(g);
    close_sealed(f, path);
    expect_store_error(path, "tokens claims 8 elements (32 bytes) but stores 16 unfiltered bytes",
                       "unfiltered chunk never written");
}

/* A dataset index.h5 with one shard of 3 rows per store; num_rows, the shard tables' ends and one qrels /
 * negatives / labels column given. */
static const char *dataset_index(int64_t nq_attr, int64_t table_end, const int64_t *qrel_q, const int64_t *qrel_p,
                                 int nqrel) {
    const char *ip = in_dir("ds_index.h5");
    XrErr e;
    unlink(ip);
    int64_t f = h5_create(ip, &e);
    int ok = h5_attr_write_str(f, "xrank_format", H5STORE_INDEX_FORMAT, ip, &e) == 0 &&
             h5_attr_write_i64(f, "format_version", H5STORE_FORMAT_VERSION, ip, &e) == 0 &&
             h5_attr_write_str(f, "tokenizer_kind", "wordpiece", ip, &e) == 0 &&
             h5_attr_write_str(f, "tokenizer_fingerprint", "0123456789abcdef", ip, &e) == 0 &&
             h5_attr_write_str(f, "source_format", "beir", ip, &e) == 0 && h5_attr_write_i64(f, "vocab_size", 100, ip, &e) == 0;
    const char *qf[1] = {"q.h5"}, *pf[1] = {"p.h5"};
    int64_t qoff[2] = {0, table_end}, poff[2] = {0, 3};
    ok = ok && h5store_index_write_store(f, "queries", qf, qoff, 1, 3, ip, &e) == 0 &&
         h5store_index_write_store(f, "passages", pf, poff, 1, 3, ip, &e) == 0;
    hid_t gq = H5Gopen2(f, "queries", H5P_DEFAULT);
    H5Adelete(gq, "num_rows");
    ok = ok && h5_attr_write_i64(gq, "num_rows", nq_attr, ip, &e) == 0;
    H5Gclose(gq);
    int32_t grade[4] = {1, 1, 1, 1};
    float lab[4] = {1, 1, 1, 1};
    const char *grp[3] = {"qrels", "negatives", "labels"};
    for (int k = 0; k < 3; k++) {
        hid_t g = H5Gcreate2(f, grp[k], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        int n = k == 0 ? nqrel : 0;
        ok = ok && h5_write_1d(g, "query", H5T_NATIVE_INT64, qrel_q, n, ip, &e) == 0 &&
             h5_write_1d(g, "passage", H5T_NATIVE_INT64, qrel_p, n, ip, &e) == 0;
        if (k == 0) ok = ok && h5_write_1d(g, "grade", H5T_NATIVE_INT32, grade, n, ip, &e) == 0;
        if (k == 2) ok = ok && h5_write_1d(g, "label", H5T_NATIVE_FLOAT, lab, n, ip, &e) == 0;
        H5Gclose(g);
    }
    TU_CHECK(ok, "dataset index: %s", e.msg);
    close_sealed(f, ip);
    return ip;
}

static void expect_index(const char *ip, const char *want, const char *what) {
    DsIndex ix;
    XrErr e = {{0}};
    int rc = ds_read_index(ip, &ix, &e);
    if (!want) {
        TU_CHECK(rc == 0, "%s: should be read: %s", what, e.msg);
    } else {
        EXPECT_ERR(rc != 0, e, want, what);
        TU_CHECK(rc != 0 && strstr(e.msg, ip), "%s: the message does not name %s: %s", what, ip, e.msg);
    }
    if (rc == 0) ds_index_free(&ix);
}

static void case_h5_index_rows(void) {
    int64_t q[2] = {0, 2}, p[2] = {1, 2};
    expect_index(dataset_index(3, 3, q, p, 2), NULL, "a consistent index");
    /* num_rows past 2^31 (and 2^62: eval sized a table of num_rows + 1 int64 from it) against a 3-row table */
    expect_index(dataset_index((int64_t)1 << 31, 3, q, p, 2), "/queries num_rows is 2147483648 but its shard table",
                 "num_rows 2^31");
    expect_index(dataset_index((int64_t)1 << 62, 3, q, p, 2), "/queries num_rows is 4611686018427387904", "num_rows 2^62");
    expect_index(dataset_index(-1, 3, q, p, 2), "/queries num_rows is -1", "num_rows -1");
    /* qrels pointing past the stores (mine wrote through them: qrel_off[query + 1]++) */
    int64_t bq[2] = {0, ((int64_t)1 << 31) + 1}, bp[2] = {1, (int64_t)1 << 40}, neg[2] = {0, -1};
    expect_index(dataset_index(3, 3, bq, p, 2), "/qrels/query[1] = 2147483649 is not a query row", "qrel query 2^31");
    expect_index(dataset_index(3, 3, q, bp, 2), "/qrels/passage[1] = 1099511627776 is not a passage row",
                 "qrel passage 2^40");
    expect_index(dataset_index(3, 3, neg, p, 2), "/qrels/query[1] = -1 is not a query row", "qrel query -1");
    int64_t uq[2] = {2, 0};
    expect_index(dataset_index(3, 3, uq, p, 2), "/qrels/query is not sorted by query at entry 1", "unsorted qrels");
}

/* A group file of n rows and k negative slots; the negatives dataset may claim its extent unwritten. */
static const char *group_file(int64_t k_attr, int64_t n, int64_t k, int negatives_written) {
    const char *path = in_dir("groups.h5");
    XrErr e;
    unlink(path);
    int64_t f = h5_create(path, &e);
    int ok = h5_attr_write_str(f, "xrank_format", GROUPS_FORMAT, path, &e) == 0 &&
             h5_attr_write_i64(f, "format_version", GROUPS_FORMAT_VERSION, path, &e) == 0 &&
             h5_attr_write_i64(f, "num_queries", 3, path, &e) == 0 && h5_attr_write_i64(f, "num_passages", 3, path, &e) == 0 &&
             h5_attr_write_i64(f, "num_negatives", k_attr, path, &e) == 0 &&
             h5_attr_write_i64(f, "num_rows", n, path, &e) == 0 &&
             h5_attr_write_str(f, "tokenizer_fingerprint", "0123456789abcdef", path, &e) == 0 &&
             h5_attr_write_str(f, "dataset", "/nowhere", path, &e) == 0;
    int64_t qp[1] = {0};
    ok = ok && h5_write_1d(f, "query", H5T_NATIVE_INT64, qp, n, path, &e) == 0 &&
         h5_write_1d(f, "positive", H5T_NATIVE_INT64, qp, n, path, &e) == 0;
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)k}, chunk[2] = {1, (hsize_t)(k < 4096 ? k : 4096)};
    const char *names[2] = {"negatives", "scores"};
    for (int i = 0; i < 2; i++) {
        dims[1] = (hsize_t)(i ? k + 1 : k);
        hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 2, chunk);
        hid_t d = H5Dcreate2(f, names[i], i ? H5T_IEEE_F32LE : H5T_STD_I64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (negatives_written) {
            size_t cnt = (size_t)n * (size_t)dims[1];
            int64_t *neg = xr_calloc(cnt + 1, 8);
            float *sc = xr_calloc(cnt + 1, 4);
            for (size_t j = 0; j < cnt; j++) neg[j] = -1, sc[j] = j % dims[1] ? NAN : 1.0f;
            H5Dwrite(d, i ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, i ? (void *)sc : (void *)neg);
            free(neg), free(sc);
        }
        H5Dclose(d), H5Pclose(dcpl), H5Sclose(sp);
    }
    TU_CHECK(ok, "group file: %s", e.msg);
    close_sealed(f, path);
    return path;
}

static void expect_groups(const char *path, const char *want, const char *what) {
    GroupSet g;
    XrErr e = {{0}};
    int rc = groups_read(path, &g, &e);
    if (!want) {
        TU_CHECK(rc == 0, "%s: should be read: %s", what, e.msg);
    } else {
        EXPECT_ERR(rc != 0, e, want, what);
        TU_CHECK(rc != 0 && strstr(e.msg, path), "%s: the message does not name %s: %s", what, path, e.msg);
    }
    if (rc == 0) groups_free(&g);
}

static void case_groups_huge(void) {
    expect_groups(group_file(4, 1, 4, 1), NULL, "a valid group file");
    /* a group size past 2^31 and past 2^62 (k * 8 bytes per row would wrap) */
    expect_groups(group_file((int64_t)1 << 31, 1, 4, 1), "num_negatives 2147483648 out of range", "num_negatives 2^31");
    expect_groups(group_file((int64_t)1 << 62, 1, 4, 1), "num_negatives 4611686018427387904 out of range",
                  "num_negatives 2^62");
    expect_groups(group_file(0, 1, 4, 1), "num_negatives 0 out of range", "num_negatives 0");
    /* 10^6 negative slots claimed (the most num_negatives allows), none stored */
    expect_groups(group_file(1000000, 1, 1000000, 0), "negatives claims 1000000 elements", "10^6 slots unwritten");
    /* the attribute and the dataset disagree */
    expect_groups(group_file(1000000, 1, 4, 1), "/negatives has shape [1, 4], expected [1, 1000000]",
                  "num_negatives vs the dataset");
    TU_CHECK(max_rss_mb() < 200, "resident size %ld MB: a claimed size was allocated", max_rss_mb());
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        void (*fn)(void);
    } cases[] = {{"st_shape_2p31", case_st_shape_2p31},       {"st_shape_2p63", case_st_shape_2p63},
                 {"st_offsets_overflow", case_st_offsets_overflow}, {"config_sizes", case_config_sizes},
                 {"tokenizer_files", case_tokenizer_files},   {"h5_tokens_2p31", case_h5_tokens_2p31},
                 {"h5_offsets_2p31", case_h5_offsets_2p31},   {"h5_index_rows", case_h5_index_rows},
                 {"groups_huge", case_groups_huge},           {"h5_unfiltered_short", case_h5_unfiltered_short}};
    if (argc != 2) {
        fprintf(stderr, "usage: sizes_crafted CASE\n");
        return 2;
    }
    h5_quiet();
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/sizes_crafted.%s.%ld", t && *t ? t : "/tmp", argv[1], (long)getpid());
    mkdir(g_dir, 0755);
    int found = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!strcmp(cases[i].name, argv[1])) cases[i].fn(), found = 1;
    xr_remove_tree(g_dir);
    if (!found) {
        fprintf(stderr, "sizes_crafted: no case %s\n", argv[1]);
        return 2;
    }
    return tu_finish(argv[1]);
}
