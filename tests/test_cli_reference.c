/* test_cli_reference.c: runs the built `xrank score` / `xrank embed` on the tiny models of tests/fixtures/cli
 * (which carry real tokenizers) and checks every number against what transformers / sentence-transformers
 * output for the same jsonl lines (gen_cli_fixtures.py), max abs 1e-4: this covers the whole path of the CLI
 * (line forms, tokenization, pair template and truncation, length-sorted batches back in input order, ids
 * passed through, default max length and pooling from the model files, .npy and text input). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#define TOL 1e-4

static char tmpdir[2048];

/* Walk two JSON values: same structure, same strings, numbers within tol; worst diff in *worst. */
static int json_close(const cJSON *got, const cJSON *want, double tol, double *worst, char *path, size_t cap) {
    size_t plen = strlen(path);
    if (cJSON_IsNumber(want)) {
        if (!cJSON_IsNumber(got)) return fprintf(stderr, "  %s: not a number\n", path), 0;
        double d = fabs(got->valuedouble - want->valuedouble);
        if (d > *worst) *worst = d;
        if (!(d <= tol))
            return fprintf(stderr, "  %s: got %.9g want %.9g (diff %.3g)\n", path, got->valuedouble,
                           want->valuedouble, d),
                   0;
        return 1;
    }
    if (cJSON_IsString(want)) {
        if (!cJSON_IsString(got) || strcmp(got->valuestring, want->valuestring))
            return fprintf(stderr, "  %s: string differs\n", path), 0;
        return 1;
    }
    if (cJSON_IsArray(want)) {
        int n = cJSON_GetArraySize(want);
        if (!cJSON_IsArray(got) || cJSON_GetArraySize(got) != n)
            return fprintf(stderr, "  %s: array of %d expected\n", path, n), 0;
        int ok = 1;
        for (int i = 0; i < n; i++) {
            snprintf(path + plen, cap - plen, "[%d]", i);
            ok &= json_close(cJSON_GetArrayItem(got, i), cJSON_GetArrayItem(want, i), tol, worst, path, cap);
            path[plen] = 0;
        }
        return ok;
    }
    if (cJSON_IsObject(want)) {
        if (!cJSON_IsObject(got) || cJSON_GetArraySize(got) != cJSON_GetArraySize(want))
            return fprintf(stderr, "  %s: object with %d keys expected\n", path, cJSON_GetArraySize(want)), 0;
        int ok = 1;
        const cJSON *w;
        cJSON_ArrayForEach(w, want) {
            snprintf(path + plen, cap - plen, ".%s", w->string);
            const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
            if (!g) {
                fprintf(stderr, "  %s: missing\n", path);
                ok = 0;
            } else {
                ok &= json_close(g, w, tol, worst, path, cap);
            }
            path[plen] = 0;
        }
        return ok;
    }
    return cJSON_Compare(got, want, 1) ? 1 : (fprintf(stderr, "  %s: value differs\n", path), 0);
}

/* Parsed non-blank lines of a jsonl file. */
static cJSON **read_jsonl(const char *path, int *n) {
    XrErr e;
    size_t len;
    char *text = xr_read_file(path, &len, &e);
    *n = 0;
    if (!text) {
        fprintf(stderr, "%s\n", e.msg);
        return NULL;
    }
    cJSON **rows = xr_malloc(sizeof(cJSON *) * (len / 2 + 1));
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        if (!j) fprintf(stderr, "%s: line %d is not JSON\n", path, *n + 1);
        rows[(*n)++] = j;
    }
    free(text);
    return rows;
}

static void free_rows(cJSON **rows, int n) {
    for (int i = 0; i < n; i++) cJSON_Delete(rows[i]);
    free(rows);
}

/* Apply sigmoid to every number of a JSON tree (the --activation sigmoid expectation). */
static void json_sigmoid(cJSON *j) {
    if (cJSON_IsNumber(j)) {
        cJSON_SetNumberValue(j, 1.0 / (1.0 + exp(-j->valuedouble)));
        return;
    }
    cJSON *c;
    cJSON_ArrayForEach(c, j) {
        if (!c->string || strcmp(c->string, "id")) json_sigmoid(c);
    }
}

static void check_jsonl(const char *what, const char *got_path, const char *want_path, int sigmoid) {
    int ng = 0, nw = 0;
    char rel[256];
    snprintf(rel, sizeof rel, "fixtures/cli/%s", want_path);
    if (want_path[0] != '/') want_path = tu_path(rel);
    cJSON **got = read_jsonl(got_path, &ng), **want = read_jsonl(want_path, &nw);
    TU_CHECK(got && want && ng == nw, "%s: %d output lines, %d expected", what, ng, nw);
    double worst = 0;
    int bad = 0;
    for (int i = 0; got && want && i < ng && i < nw; i++) {
        if (sigmoid) json_sigmoid(want[i]);
        char path[256];
        snprintf(path, sizeof path, "line %d", i + 1);
        if (!json_close(got[i], want[i], TOL, &worst, path, sizeof path)) bad++;
    }
    TU_CHECK(bad == 0, "%s: %d of %d lines differ from the reference", what, bad, nw);
    printf("%-44s %3d lines, max abs diff %.3g\n", what, nw, worst);
    if (got) free_rows(got, ng);
    if (want) free_rows(want, nw);
}

static int run(const char *args) {
    char cmd[20000];
    snprintf(cmd, sizeof cmd, "cd '%s/fixtures/cli' && '%s/xrank' %s --quiet --threads 2", XR_TEST_DIR, XR_BUILD_DIR,
             args);
    int rc = system(cmd);
    TU_CHECK(rc == 0, "exit status %d: %s", rc, cmd);
    return rc;
}

static const char *tmp(const char *name) {
    static char bufs[4][sizeof tmpdir + 64];
    static int k = 0;
    char *b = bufs[k++ & 3];
    snprintf(b, sizeof bufs[0], "%s/%.60s", tmpdir, name);
    return b;
}

/* A .npy float32 [N, H] against the embeddings of a reference jsonl. */
static void check_npy(const char *what, const char *npy, const char *want_path, int H) {
    XrErr e;
    size_t len;
    unsigned char *buf = (unsigned char *)xr_read_file(npy, &len, &e);
    TU_CHECK(buf != NULL, "%s", buf ? "" : e.msg);
    if (!buf) return;
    TU_CHECK(len >= 10 && !memcmp(buf, "\x93NUMPY\x01\x00", 8), "%s: not a .npy v1.0 file", what);
    size_t hlen = buf[8] | (size_t)buf[9] << 8, data = 10 + hlen;
    TU_CHECK(data % 64 == 0, "%s: data offset %zu not 64-aligned", what, data);
    int nw = 0;
    cJSON **want = read_jsonl(want_path, &nw);
    char expect[128];
    snprintf(expect, sizeof expect, "'shape': (%d, %d)", nw, H);
    TU_CHECK(strstr((char *)buf + 10, expect) != NULL, "%s: header lacks %s", what, expect);
    TU_CHECK(strstr((char *)buf + 10, "'descr': '<f4'") != NULL, "%s: not <f4", what);
    TU_CHECK(len == data + (size_t)nw * H * 4, "%s: %zu bytes, want %zu", what, len, data + (size_t)nw * H * 4);
    if (len == data + (size_t)nw * H * 4) {
        float *got = xr_malloc(sizeof(float) * (size_t)nw * H + 1), *ref = xr_malloc(sizeof(float) * (size_t)nw * H + 1);
        memcpy(got, buf + data, sizeof(float) * (size_t)nw * H);
        for (int i = 0; i < nw; i++) {
            const cJSON *emb = cJSON_GetObjectItemCaseSensitive(want[i], "embedding");
            for (int j = 0; j < H; j++) ref[(size_t)i * H + j] = (float)cJSON_GetArrayItem(emb, j)->valuedouble;
        }
        double worst = tu_check_close(what, got, ref, (size_t)nw * H, TOL);
        printf("%-44s %3d rows, max abs diff %.3g\n", what, nw, worst);
        free(got);
        free(ref);
    }
    free_rows(want, nw);
    free(buf);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    TU_CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

int main(void) {
    char xrank[4096];
    snprintf(xrank, sizeof xrank, "%s/xrank", XR_BUILD_DIR);
    if (!xr_file_exists(xrank)) TU_SKIP("%s not built", xrank);
    snprintf(tmpdir, sizeof tmpdir, "%s/test_cli_reference.tmp", XR_BUILD_DIR);
    mkdir(tmpdir, 0755);
    char a[16384];

    snprintf(a, sizeof a, "score --model bert_seqcls --input score_in.jsonl --output '%s' --overwrite",
             tmp("s1.jsonl"));
    if (!run(a)) check_jsonl("score bert (default max length 40)", tmp("s1.jsonl"), "score_bert_ref.jsonl", 0);

    snprintf(a, sizeof a,
             "score --model bert_seqcls --input score_in.jsonl --output '%s' --overwrite --max-length 16 "
             "--batch-size 3 --bucket-batches 2",
             tmp("s2.jsonl"));
    if (!run(a)) check_jsonl("score bert --max-length 16, batch 3", tmp("s2.jsonl"), "score_bert_ref_len16.jsonl", 0);

    snprintf(a, sizeof a, "score --model bert_seqcls --input score_in.jsonl --output '%s' --overwrite --activation sigmoid",
             tmp("s3.jsonl"));
    if (!run(a)) check_jsonl("score bert --activation sigmoid", tmp("s3.jsonl"), "score_bert_ref.jsonl", 1);

    /* --config: a section for the command, overridden in turn by the command line. */
    write_text(tmp("c1.json"), "{\"lr\": 3e-5, \"batch-size\": 5, \"score\": {\"max_length\": 16}}\n");
    snprintf(a, sizeof a, "score --config '%s' --model bert_seqcls --input score_in.jsonl --output '%s' --overwrite",
             tmp("c1.json"), tmp("s4.jsonl"));
    if (!run(a)) check_jsonl("score bert, max length 16 from --config", tmp("s4.jsonl"), "score_bert_ref_len16.jsonl", 0);
    snprintf(a, sizeof a,
             "score --config '%s' --model bert_seqcls --input score_in.jsonl --output '%s' --overwrite --max-length 40",
             tmp("c1.json"), tmp("s5.jsonl"));
    if (!run(a)) check_jsonl("score bert, --max-length beats --config", tmp("s5.jsonl"), "score_bert_ref.jsonl", 0);

    if (xr_file_exists(tu_path("fixtures/cli/xlmr_seqcls/model.safetensors"))) {
        snprintf(a, sizeof a, "score --model xlmr_seqcls --input score_in.jsonl --output '%s' --overwrite --batch-size 4",
                 tmp("x1.jsonl"));
        if (!run(a)) check_jsonl("score xlmr (default max length 42-2)", tmp("x1.jsonl"), "score_xlmr_ref.jsonl", 0);
    }

    snprintf(a, sizeof a, "embed --model bert_st --input embed_in.jsonl --output '%s' --overwrite --batch-size 4",
             tmp("e1.jsonl"));
    if (!run(a)) check_jsonl("embed bert_st (mean + L2, max length 24)", tmp("e1.jsonl"), "embed_ref.jsonl", 0);

    snprintf(a, sizeof a, "embed --model bert_st --input embed_in.jsonl --output '%s' --overwrite", tmp("e2.npy"));
    if (!run(a)) check_npy("embed bert_st -> .npy", tmp("e2.npy"), tu_path("fixtures/cli/embed_ref.jsonl"), 16);

    snprintf(a, sizeof a,
             "embed --model bert_st --input-format text --prompt 'query: ' --input embed_in.txt --output '%s' "
             "--overwrite --batch-size 2",
             tmp("e3.jsonl"));
    if (!run(a)) check_jsonl("embed text lines with --prompt", tmp("e3.jsonl"), "embed_txt_prompt_ref.jsonl", 0);

    /* Empty input: empty jsonl, and a [0, H] .npy. */
    snprintf(a, sizeof a, "score --model bert_seqcls --input empty.jsonl --output '%s' --overwrite", tmp("empty.jsonl"));
    if (!run(a)) {
        size_t len = 1;
        XrErr e;
        char *t = xr_read_file(tmp("empty.jsonl"), &len, &e);
        TU_CHECK(t && len == 0, "empty input gave %zu output bytes", len);
        free(t);
    }
    write_text(tmp("empty_ref.jsonl"), "");
    snprintf(a, sizeof a, "embed --model bert_st --input empty.jsonl --output '%s' --overwrite", tmp("empty.npy"));
    if (!run(a)) check_npy("embed empty input -> .npy [0, 16]", tmp("empty.npy"), tmp("empty_ref.jsonl"), 16);
    return tu_finish("test_cli_reference");
}
