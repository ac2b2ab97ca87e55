/* test_tok_json.c: a BERT tokenizer saved as tokenizer.json alone (what transformers 5 writes, e.g. for a
 * sentence-transformers CrossEncoder it saved) loads as the WordPiece tokenizer of the same vocabulary: the ids
 * of fixture pairs equal those the HF fast tokenizer gave (fixtures/tok/bert_json, gen_tok_json_fixture.py),
 * the fingerprint equals the vocab.txt tokenizer's (so datasets tokenized with either match), and damaged
 * tokenizer.json files fail with a message naming the file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#include "tokenizer.h"

static void check_pairs(const Tokenizer *t) {
    size_t len;
    XrErr e;
    char *text = xr_read_file(tu_path("fixtures/tok/bert_json/pairs.jsonl"), &len, &e);
    TU_CHECK(text != NULL, "pairs: %s", e.msg);
    if (!text) return;
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const char *a = cJSON_GetObjectItem(j, "a")->valuestring, *b = cJSON_GetObjectItem(j, "b")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(j, "ids");
        int32_t *ia = NULL, *ib = NULL;
        size_t ca = 0, cb = 0;
        int na = tok_encode(t, a, strlen(a), &ia, &ca), nb = tok_encode(t, b, strlen(b), &ib, &cb);
        int32_t ids[512], types[512];
        int m = tok_pair(t, ia, na, ib, nb, 0, ids, types);
        int same = m == cJSON_GetArraySize(want);
        for (int i = 0; same && i < m; i++) same = ids[i] == (int32_t)cJSON_GetArrayItem(want, i)->valuedouble;
        TU_CHECK(same, "pair %d (%s | %s): ids differ from the HF fast tokenizer's (%d vs %d ids)", n, a, b, m,
                 cJSON_GetArraySize(want));
        free(ia), free(ib);
        cJSON_Delete(j);
        n++;
    }
    TU_CHECK(n == 3, "3 fixture pairs, read %d", n);
    free(text);
}

/* A model dir holding only a tokenizer.json with `text`: tok_load must fail naming the file and `want`. */
static void check_bad(const char *name, const char *text, const char *want) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/test_tok_json_%s_%ld", XR_BUILD_DIR, name, (long)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    TU_CHECK(system(cmd) == 0, "mkdir");
    char *p = xr_path_join(dir, "tokenizer.json");
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    XrErr e = {{0}};
    Tokenizer *t = tok_load(dir, &e);
    TU_CHECK(!t && strstr(e.msg, "tokenizer.json") && strstr(e.msg, want), "%s: got '%s' (want ...%s...)", name,
             t ? "(loaded)" : e.msg, want);
    tok_free(t);
    free(p);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    TU_CHECK(system(cmd) == 0, "cleanup");
}

int main(void) {
    XrErr e;
    Tokenizer *tj = tok_load(tu_path("fixtures/tok/bert_json"), &e);
    TU_CHECK(tj != NULL, "load tokenizer.json: %s", tj ? "" : e.msg);
    Tokenizer *tv = tok_load(tu_path("fixtures/cli/bert_seqcls"), &e);
    TU_CHECK(tv != NULL, "load vocab.txt: %s", tv ? "" : e.msg);
    if (tj && tv) {
        TU_CHECK(tok_kind(tj) == TOK_WORDPIECE && tok_vocab_size(tj) == tok_vocab_size(tv), "WordPiece, %d tokens",
                 tok_vocab_size(tj));
        TU_CHECK(tok_fingerprint(tj) == tok_fingerprint(tv), "fingerprint %016llx vs vocab.txt's %016llx",
                 (unsigned long long)tok_fingerprint(tj), (unsigned long long)tok_fingerprint(tv));
        TU_CHECK(tok_cls_id(tj) == tok_cls_id(tv) && tok_sep_id(tj) == tok_sep_id(tv) && tok_unk_id(tj) == tok_unk_id(tv),
                 "special ids");
        check_pairs(tj);
    }
    tok_free(tj), tok_free(tv);
    check_bad("notjson", "{\"model\": ", "not a JSON object");
    check_bad("unigram", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "Unigram");
    check_bad("dupid", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[PAD]\": 0, \"[UNK]\": 0}}}", "[UNK]");
    check_bad("prefix", "{\"model\": {\"type\": \"WordPiece\", \"continuing_subword_prefix\": \"@@\", \"vocab\": {}}}",
              "@@");
    check_bad("nospecial", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0, \"b\": 1}}}", "[CLS]");
    return tu_finish("test_tok_json");
}
