/* test_safetensors.c: the safetensors reader against files written by Python safetensors/transformers
 * (dtype conversion exact vs numpy/torch), the writer's round trip (F32 bit-exact, BF16 = torch's rounding),
 * and every kind of bad file, generated here from good bytes, giving an error that names the problem.
 * With XR_ST_EXPORT_DIR=D it also leaves the tiny classifier rewritten by st_write in D/f32 and D/bf16
 * for `python tests/gen_st_fixtures.py --verify D` (Python safetensors + transformers load them). */
#define _XOPEN_SOURCE 700
#include "safetensors.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tmp_path(const char *name) {
    static char bufs[4][512];
    static int k;
    char *b = bufs[k++ & 3];
    snprintf(b, 512, "%s/%s", tmpdir, name);
    return b;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* Bitwise float comparison that treats all NaNs as equal. */
static int same_f32(float a, float b) {
    if (isnan(a) && isnan(b)) return 1;
    return memcmp(&a, &b, 4) == 0;
}

static void check_same_floats(const char *what, const float *got, const float *want, int64_t n) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!same_f32(got[i], want[i])) bad++, first = first < 0 ? i : first;
    TU_CHECK(bad == 0, "%s: %lld of %lld values differ, first at [%lld]: got %.9g want %.9g", what, (long long)bad,
             (long long)n, (long long)first, first >= 0 ? got[first] : 0, first >= 0 ? want[first] : 0);
}

static float *to_f32(const SafeTensors *st, const char *name) {
    const StTensor *t = st_find(st, name);
    TU_CHECK(t != NULL, "tensor %s missing", name);
    if (!t) return NULL;
    float *f = xr_malloc((size_t)st_numel(t) * 4);
    XrErr e;
    int rc = st_to_f32(t, f, &e);
    TU_CHECK(rc == 0, "st_to_f32(%s): %s", name, e.msg);
    return f;
}

/* Python-written files: numpy dtypes, torch bf16, every conversion compared bit for bit. */
static void test_reads_python_files(void) {
    SafeTensors st;
    XrErr e;
    int rc = st_open(&st, tu_path("fixtures/st/dtypes_np.safetensors"), &e);
    TU_CHECK(rc == 0, "open dtypes_np: %s", e.msg);
    if (rc) return;
    TU_CHECK(st.n == 10, "n = %d", st.n);
    TU_CHECK(st.metadata_json && strstr(st.metadata_json, "\"format\":\"np\"") && strstr(st.metadata_json, "mixed"),
             "metadata %s", st.metadata_json ? st.metadata_json : "(null)");
    for (int i = 1; i < st.n; i++)
        TU_CHECK(st.tensors[i].begin == st.tensors[i - 1].end, "tensors not in offset order at %d", i);
    const char *pairs[][2] = {{"x_f16", "want_f16"}, {"x_f64", "want_f64"}};
    for (int k = 0; k < 2; k++) {
        float *got = to_f32(&st, pairs[k][0]), *want = to_f32(&st, pairs[k][1]);
        if (got && want) check_same_floats(pairs[k][0], got, want, 16);
        free(got);
        free(want);
    }
    const StTensor *t = st_find(&st, "x_f16");
    TU_CHECK(t && t->dtype == ST_F16 && t->ndim == 2 && t->shape[0] == 4 && t->shape[1] == 4, "x_f16 shape");
    t = st_find(&st, "x_f32");
    TU_CHECK(t && t->dtype == ST_F32 && t->ndim == 3 && st_numel(t) == 12, "x_f32 shape");
    float *x = to_f32(&st, "x_f32");
    for (int i = 0; x && i < 12; i++) TU_CHECK(x[i] == (float)(i - 6) / 7, "x_f32[%d] = %g", i, x[i]);
    free(x);
    t = st_find(&st, "x_u8");
    TU_CHECK(t && t->dtype == ST_U8 && t->ndim == 2 && t->shape[0] == 0 && st_numel(t) == 0, "empty u8 tensor");
    t = st_find(&st, "x_scalar");
    TU_CHECK(t && t->ndim == 0 && st_numel(t) == 1, "scalar tensor");
    x = to_f32(&st, "x_scalar");
    TU_CHECK(x && x[0] == 2.5f, "scalar value");
    free(x);
    t = st_find(&st, "x_i64");
    TU_CHECK(t && t->dtype == ST_I64 && !st_is_float(t->dtype), "x_i64 dtype");
    if (t) {
        int64_t v[3];
        memcpy(v, t->data, 24);
        TU_CHECK(v[0] == 1 && v[1] == -2 && v[2] == 3, "i64 values");
        float f[3];
        rc = st_to_f32(t, f, &e);
        TU_CHECK(rc == -1 && strstr(e.msg, "x_i64") && strstr(e.msg, "I64"), "I64 -> f32 must fail: %s", e.msg);
    }
    t = st_find(&st, "x_bool");
    TU_CHECK(t && t->dtype == ST_BOOL && t->data[0] == 1 && t->data[1] == 0, "bool");
    TU_CHECK(st_find(&st, "nope") == NULL, "st_find of a missing name");

    SafeTensors sb;
    rc = st_open(&sb, tu_path("fixtures/st/bf16_torch.safetensors"), &e);
    TU_CHECK(rc == 0, "open bf16_torch: %s", e.msg);
    if (rc == 0) {
        float *got = to_f32(&sb, "x_bf16"), *want = to_f32(&st, "want_bf16");
        if (got && want) check_same_floats("x_bf16", got, want, 16);
        free(got);
        free(want);
        st_close(&sb);
    }
    st_close(&st);
}

/* The real all-MiniLM-L6-v2 weights (90 MB, not committed) when present. */
static void test_real_minilm(void) {
    const char *dir = getenv("XR_MINILM_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir ? dir : "/work/models/all-MiniLM-L6-v2");
    if (!xr_file_exists(path)) {
        printf("note: %s absent, real model file not checked\n", path);
        return;
    }
    SafeTensors st;
    XrErr e;
    int rc = st_open(&st, path, &e);
    TU_CHECK(rc == 0, "%s", e.msg);
    if (rc) return;
    const StTensor *t = st_find(&st, "embeddings.word_embeddings.weight");
    TU_CHECK(st.n == 104 && t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 30522 && t->shape[1] == 384,
             "MiniLM: %d tensors, word embeddings", st.n);
    int64_t total = 0;
    for (int i = 0; i < st.n; i++) total += st_numel(&st.tensors[i]);
    TU_CHECK(total == 22713728, "MiniLM element count %lld", (long long)total);
    st_close(&st);
}

/* All 65536 half values against the compiler's own _Float16 conversion (subnormals, inf, nan). */
static void test_f16_exhaustive(void) {
#ifdef __FLT16_MAX__
    static uint16_t h[65536];
    static float got[65536], want[65536];
    for (int i = 0; i < 65536; i++) {
        h[i] = (uint16_t)i;
        _Float16 v;
        memcpy(&v, &h[i], 2);
        want[i] = (float)v;
    }
    StTensor t = {.name = "all_f16", .dtype = ST_F16, .ndim = 1, .shape = {65536}, .data = (void *)h};
    XrErr e;
    TU_CHECK(st_to_f32(&t, got, &e) == 0, "%s", e.msg);
    check_same_floats("f16 exhaustive", got, want, 65536);
    /* NaN payloads must stay NaN with the sign; checked bitwise on a few */
    for (int i = 0x7c01; i < 0x7c10; i++) TU_CHECK(isnan(got[i]), "f16 %#x not NaN", i);
#endif
}

/* Writer: F32 round trip bit-exact, BF16 = torch's round-to-nearest-even, header aligned and with metadata. */
static void test_write_roundtrip(void) {
    XrErr e;
    SafeTensors src;
    int rc = st_open(&src, tu_path("fixtures/st/tiny_bert_cls/model.safetensors"), &e);
    TU_CHECK(rc == 0, "open tiny_bert_cls: %s", e.msg);
    if (rc) return;
    TU_CHECK(src.n == 5 * 16 + 5 + 2 + 2, "tiny bert tensor count %d", src.n);
    TU_CHECK(src.metadata_json && strcmp(src.metadata_json, "{\"format\":\"pt\"}") == 0, "pt metadata");
    const StTensor *cw = st_find(&src, "classifier.weight");
    TU_CHECK(cw && cw->ndim == 2 && cw->shape[0] == 1 && cw->shape[1] == 32, "classifier.weight [1,32]");

    /* Reverse the file order, so the writer's "given order" is visibly kept. */
    StWriteTensor *w = xr_calloc((size_t)src.n, sizeof *w);
    float **bufs = xr_calloc((size_t)src.n, sizeof *bufs);
    for (int i = 0; i < src.n; i++) {
        const StTensor *t = &src.tensors[src.n - 1 - i];
        w[i].name = t->name;
        w[i].ndim = t->ndim;
        memcpy(w[i].shape, t->shape, sizeof t->shape);
        bufs[i] = xr_malloc((size_t)st_numel(t) * 4);
        TU_CHECK(st_to_f32(t, bufs[i], &e) == 0, "%s", e.msg);
        w[i].data = bufs[i];
    }
    const char *meta[] = {"format", "pt", "producer", "xrank \"test\""};
    const char *export_dir = getenv("XR_ST_EXPORT_DIR");
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        const char *out = tmp_path(bf16 ? "rt_bf16.safetensors" : "rt_f32.safetensors");
        rc = st_write(out, w, src.n, meta, 2, bf16, &e);
        TU_CHECK(rc == 0, "st_write: %s", e.msg);
        char tmpname[600];
        snprintf(tmpname, sizeof tmpname, "%s.tmp", out);
        TU_CHECK(!xr_file_exists(tmpname), "%s left behind", tmpname);
        SafeTensors rt;
        rc = st_open(&rt, out, &e);
        TU_CHECK(rc == 0, "reopen: %s", e.msg);
        if (rc) continue;
        uint64_t n8;
        memcpy(&n8, rt.map, 8);
        TU_CHECK((8 + n8) % 8 == 0, "data starts at %llu, not 8-aligned", (unsigned long long)(8 + n8));
        TU_CHECK(rt.metadata_json && strstr(rt.metadata_json, "\"format\":\"pt\"") &&
                     strstr(rt.metadata_json, "\"producer\":\"xrank \\\"test\\\"\""),
                 "metadata %s", rt.metadata_json ? rt.metadata_json : "(null)");
        TU_CHECK(rt.n == src.n, "count %d vs %d", rt.n, src.n);
        for (int i = 0; i < rt.n && i < src.n; i++) {
            const StTensor *t = &rt.tensors[i]; /* offset order = written order */
            TU_CHECK(strcmp(t->name, w[i].name) == 0, "order: [%d] %s vs %s", i, t->name, w[i].name);
            TU_CHECK(t->dtype == (bf16 ? ST_BF16 : ST_F32), "dtype of %s", t->name);
            TU_CHECK(t->ndim == w[i].ndim && memcmp(t->shape, w[i].shape, sizeof t->shape) == 0, "shape of %s",
                     t->name);
            float *got = xr_malloc((size_t)st_numel(t) * 4);
            st_to_f32(t, got, &e);
            if (!bf16) {
                check_same_floats(t->name, got, w[i].data, st_numel(t));
            } else {
                /* bf16 keeps 8 significant bits: rounding error <= half an ulp <= 2^-8 relative */
                for (int64_t k = 0; k < st_numel(t); k++) {
                    float ref = w[i].data[k];
                    if (fabsf(got[k] - ref) > fabsf(ref) * (1.0f / 256)) {
                        TU_CHECK(0, "%s[%lld]: bf16 %g vs %g", t->name, (long long)k, got[k], ref);
                        break;
                    }
                }
            }
            free(got);
        }
        st_close(&rt);
        if (export_dir) {
            char d[1024], p[1100];
            snprintf(d, sizeof d, "%s/%s", export_dir, bf16 ? "bf16" : "f32");
            mkdir(export_dir, 0755);
            mkdir(d, 0755);
            snprintf(p, sizeof p, "%s/model.safetensors", d);
            TU_CHECK(st_write(p, w, src.n, meta, 2, bf16, &e) == 0, "export: %s", e.msg);
            size_t len;
            char *cfg = xr_read_file(tu_path("fixtures/st/tiny_bert_cls/config.json"), &len, &e);
            snprintf(p, sizeof p, "%s/config.json", d);
            if (cfg) write_bytes(p, cfg, len);
            free(cfg);
            printf("exported %s\n", d);
        }
        unlink(out);
    }
    for (int i = 0; i < src.n; i++) free(bufs[i]);
    free(bufs);
    free(w);
    st_close(&src);

    /* BF16 rounding: torch's values for the awkward set, plus ties to even and overflow to inf. */
    SafeTensors ref;
    rc = st_open(&ref, tu_path("fixtures/st/dtypes_np.safetensors"), &e);
    if (rc == 0) {
        float *want = to_f32(&ref, "want_bf16");
        /* torch rounded these float32 values (the list in gen_st_fixtures.py) */
        const float orig[16] = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 3.0e-06f,
                                -1.2e-07f, INFINITY, -INFINITY, NAN, 1e-3f, 3.14159265f, -123.456f, 0.1f};
        StWriteTensor bw = {.name = "v", .ndim = 1, .shape = {16}, .data = orig};
        const char *out = tmp_path("bf16_vals.safetensors");
        TU_CHECK(st_write(out, &bw, 1, NULL, 0, 1, &e) == 0, "%s", e.msg);
        SafeTensors b;
        if (st_open(&b, out, &e) == 0) {
            float *got = to_f32(&b, "v");
            if (got && want) check_same_floats("bf16 vs torch", got, want, 16);
            free(got);
            st_close(&b);
        } else {
            TU_CHECK(0, "%s", e.msg);
        }
        unlink(out);
        free(want);
        st_close(&ref);
    }
    const float ties[5] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 3.4028235e38f, -1.0f - 1.0f / 256 - 1e-7f,
                           1.0f + 1.0f / 256 + 1e-7f};
    const float tie_want[5] = {1.0f, 1.0f + 1.0f / 64, INFINITY, -1.0f - 1.0f / 128, 1.0f + 1.0f / 128};
    StWriteTensor tw = {.name = "ties", .ndim = 1, .shape = {5}, .data = ties};
    const char *out = tmp_path("ties.safetensors");
    TU_CHECK(st_write(out, &tw, 1, NULL, 0, 1, &e) == 0, "%s", e.msg);
    SafeTensors b;
    if (st_open(&b, out, &e) == 0) {
        TU_CHECK(b.metadata_json && strcmp(b.metadata_json, "{}") == 0, "empty metadata kept as {}");
        float *got = to_f32(&b, "ties");
        if (got) check_same_floats("bf16 ties to even", got, tie_want, 5);
        free(got);
        st_close(&b);
    }
    unlink(out);

    /* Writer errors: a missing directory, a duplicate name, a negative dimension. */
    rc = st_write("/nonexistent-dir-xr/x.safetensors", &tw, 1, NULL, 0, 0, &e);
    TU_CHECK(rc == -1 && strstr(e.msg, "nonexistent-dir-xr"), "write into missing dir: %s", e.msg);
    StWriteTensor dup[2] = {tw, tw};
    rc = st_write(tmp_path("dup.safetensors"), dup, 2, NULL, 0, 0, &e);
    TU_CHECK(rc == -1 && strstr(e.msg, "'ties' given twice"), "duplicate: %s", e.msg);
    StWriteTensor neg = {.name = "neg", .ndim = 2, .shape = {3, -1}, .data = ties};
    rc = st_write(tmp_path("neg.safetensors"), &neg, 1, NULL, 0, 0, &e);
    TU_CHECK(rc == -1 && strstr(e.msg, "negative"), "negative dim: %s", e.msg);
    TU_CHECK(!xr_file_exists(tmp_path("dup.safetensors")) && !xr_file_exists(tmp_path("neg.safetensors")),
             "nothing written on error");
}

/* ---- bad files ---- */

/* A file from a header string (padded to 8) and `data_len` data bytes, plus `extra` trailing bytes. */
static const char *make_st(const char *name, const char *header, size_t data_len, size_t extra) {
    size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
    size_t total = 8 + padded + data_len + extra;
    unsigned char *buf = xr_calloc(total, 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    for (size_t i = 0; i < data_len + extra; i++) buf[8 + padded + i] = (unsigned char)(i * 7);
    const char *p = tmp_path(name);
    write_bytes(p, buf, total);
    free(buf);
    return p;
}

/* Expect st_open to fail with a message containing every given substring. */
static void expect_bad(const char *what, const char *path, const char *const *needles) {
    SafeTensors st;
    XrErr e = {{0}};
    int rc = st_open(&st, path, &e);
    TU_CHECK(rc == -1, "%s: opened a bad file", what);
    if (rc == 0) {
        st_close(&st);
        return;
    }
    TU_CHECK(strstr(e.msg, path) != NULL, "%s: message does not name the file: %s", what, e.msg);
    for (int i = 0; needles[i]; i++)
        TU_CHECK(strstr(e.msg, needles[i]) != NULL, "%s: message lacks \"%s\": %s", what, needles[i], e.msg);
    printf("  %-22s -> %s\n", what, e.msg);
    unlink(path);
}
#define EXPECT_BAD(what, path, ...) expect_bad(what, path, (const char *const[]){__VA_ARGS__, NULL})

#define T2(o1, o2)                                                                             \
    "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":" o1 \
    "},\"b.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":" o2 "}}"

static void test_bad_files(void) {
    XrErr e;
    /* The good two-tensor file first, so every bad variant differs from an accepted one in one way. */
    char *good = xr_strdup(make_st("good.safetensors", T2("[0,16]", "[16,32]"), 32, 0));
    SafeTensors st;
    int rc = st_open(&st, good, &e);
    TU_CHECK(rc == 0, "good file: %s", e.msg);
    if (rc == 0) st_close(&st);

    size_t len;
    char *bytes = xr_read_file(good, &len, &e);
    TU_CHECK(bytes != NULL, "%s", e.msg);
    if (!bytes) return;

    char name[64];
    /* truncated at several points: inside the length, inside the header, inside the data */
    size_t cuts[] = {0, 5, 8, 20, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        snprintf(name, sizeof name, "trunc%zu.safetensors", cuts[i]);
        const char *p = tmp_path(name);
        write_bytes(p, bytes, cuts[i]);
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu", cuts[i]);
        if (cuts[i] == len - 1)
            EXPECT_BAD(what, p, "b.weight", "[16, 32)", "31 bytes", "truncated");
        else
            EXPECT_BAD(what, p, "truncated");
    }
    /* header length bigger than the file */
    {
        unsigned char *b = xr_malloc(len);
        memcpy(b, bytes, len);
        uint64_t big = len;
        memcpy(b, &big, 8);
        const char *p = tmp_path("hlen.safetensors");
        write_bytes(p, b, len);
        char num[32];
        snprintf(num, sizeof num, "%zu", len);
        EXPECT_BAD("header len > file", p, "header length", num, "truncated");
        big = 100000001ULL;
        memcpy(b, &big, 8);
        p = tmp_path("hlen2.safetensors");
        write_bytes(p, b, len);
        EXPECT_BAD("header len > 100MB", p, "100000001", "100,000,000");
        big = UINT64_MAX;
        memcpy(b, &big, 8);
        p = tmp_path("hlen3.safetensors");
        write_bytes(p, b, len);
        EXPECT_BAD("header len 2^64-1", p, "18446744073709551615", "limit");
        free(b);
    }
    free(bytes);

    EXPECT_BAD("header not JSON", make_st("nojson.safetensors", "{\"a\": {\"dtype\": F32", 0, 0), "not valid JSON");
    EXPECT_BAD("header a JSON array", make_st("array.safetensors", "[1,2,3]", 0, 0), "not a JSON object");
    EXPECT_BAD("header garbage after", make_st("after.safetensors", "{}xyz", 0, 0), "after the JSON object");
    EXPECT_BAD("gap", make_st("gap.safetensors", T2("[0,16]", "[20,36]"), 36, 0), "'b.weight'", "[20, 36)", "gap",
               "'a' ends at 16");
    EXPECT_BAD("gap at start", make_st("gap0.safetensors", T2("[4,20]", "[20,36]"), 36, 0), "'a'", "gap",
               "data buffer starts at 0");
    EXPECT_BAD("overlap", make_st("overlap.safetensors", T2("[0,16]", "[8,24]"), 24, 0), "'b.weight'", "overlap",
               "'a'");
    EXPECT_BAD("beyond end", make_st("beyond.safetensors", T2("[0,16]", "[16,32]"), 24, 0), "'b.weight'",
               "[16, 32)", "past the end", "24 bytes");
    EXPECT_BAD("end before begin", make_st("rev.safetensors", T2("[16,0]", "[16,32]"), 32, 0), "'a'", "[16, 0)");
    EXPECT_BAD("shape/size mismatch",
               make_st("shape.safetensors",
                       "{\"bert.embeddings.word_embeddings.weight\":{\"dtype\":\"F32\",\"shape\":[30522,384],"
                       "\"data_offsets\":[0,1000]}}",
                       1000, 0),
               "'bert.embeddings.word_embeddings.weight'", "[0, 1000) hold 1000 bytes",
               "shape [30522,384] F32 needs 46881792");
    EXPECT_BAD("shape overflow",
               make_st("ovf.safetensors",
                       "{\"x\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, 0),
               "'x'", "overflows");
    EXPECT_BAD("unknown dtype",
               make_st("dtype.safetensors", "{\"emb\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
                       0),
               "'emb'", "unknown dtype \"Q4_K\"");
    EXPECT_BAD("missing dtype",
               make_st("nodtype.safetensors", "{\"emb\":{\"shape\":[2],\"data_offsets\":[0,2]}}", 2, 0),
               "'emb'", "dtype");
    EXPECT_BAD("negative shape",
               make_st("negshape.safetensors", "{\"emb\":{\"dtype\":\"U8\",\"shape\":[-2],\"data_offsets\":[0,2]}}", 2,
                       0),
               "'emb'", "shape[0]");
    EXPECT_BAD("fractional offset",
               make_st("fracoff.safetensors", "{\"emb\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2.5]}}",
                       2, 0),
               "'emb'", "data_offsets");
    EXPECT_BAD("3 offsets",
               make_st("off3.safetensors", "{\"emb\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,1,2]}}", 2,
                       0),
               "'emb'", "[begin, end]");
    EXPECT_BAD("metadata not strings",
               make_st("md.safetensors", "{\"__metadata__\":{\"format\":1},\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
                                         "\"data_offsets\":[0,1]}}",
                       1, 0),
               "__metadata__", "'format'");
    EXPECT_BAD("duplicate tensor",
               make_st("dupe.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                                           "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                       2, 0),
               "'a'", "twice");
    EXPECT_BAD("trailing garbage", make_st("trail.safetensors", T2("[0,16]", "[16,32]"), 32, 5), "trailing",
               "32", "37");
    EXPECT_BAD("no tensors, data", make_st("empty_data.safetensors", "{}", 0, 8), "trailing");
    EXPECT_BAD("missing file", tmp_path("does-not-exist.safetensors"), "cannot open");

    /* An empty header with no data is a valid (empty) file. */
    const char *p = make_st("empty.safetensors", "{}", 0, 0);
    rc = st_open(&st, p, &e);
    TU_CHECK(rc == 0 && st.n == 0 && st.metadata_json == NULL, "empty file: %s", rc ? e.msg : "");
    if (rc == 0) st_close(&st);
    unlink(p);
    unlink(good);
    free(good);
}

/* Every single-byte corruption of a small good file either opens (and then every tensor lies inside the
 * mapping) or fails with a message; none may crash. Run under ASan this is a small deterministic fuzz. */
static void test_mutations(void) {
    const char *good = make_st("mut_src.safetensors", T2("[0,16]", "[16,32]"), 32, 0);
    XrErr e;
    size_t len;
    unsigned char *orig = (unsigned char *)xr_read_file(good, &len, &e);
    TU_CHECK(orig != NULL, "%s", e.msg);
    if (!orig) return;
    unlink(good);
    const unsigned char subst[] = {0, ' ', '"', '{', '}', '[', ']', ',', ':', '-', '1', '9', 'e', 0xff};
    const char *p = tmp_path("mut.safetensors");
    int opened = 0, failed = 0, unnamed = 0;
    unsigned char *b = xr_malloc(len);
    for (size_t pos = 0; pos < len - 32; pos++) {
        for (size_t k = 0; k < sizeof subst; k++) {
            if (orig[pos] == subst[k]) continue;
            memcpy(b, orig, len);
            b[pos] = subst[k];
            write_bytes(p, b, len);
            SafeTensors st;
            e.msg[0] = 0;
            if (st_open(&st, p, &e) == 0) {
                opened++;
                for (int i = 0; i < st.n; i++) {
                    const StTensor *t = &st.tensors[i];
                    TU_CHECK(t->data >= (const unsigned char *)st.map &&
                                 t->data + (t->end - t->begin) <= (const unsigned char *)st.map + st.map_len,
                             "mutation at %zu: tensor %s outside the file", pos, t->name);
                }
                st_close(&st);
            } else {
                failed++;
                unnamed += strstr(e.msg, p) == NULL;
            }
        }
    }
    TU_CHECK(unnamed == 0, "%d mutation errors did not name the file", unnamed);
    printf("mutations: %d opened, %d rejected with a message\n", opened, failed);
    unlink(p);
    free(b);
    free(orig);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/xr_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_reads_python_files();
    test_real_minilm();
    test_f16_exhaustive();
    test_write_roundtrip();
    test_bad_files();
    test_mutations();
    if (rmdir(tmpdir) != 0) fprintf(stderr, "note: %s not empty\n", tmpdir);
    return tu_finish("test_safetensors");
}
