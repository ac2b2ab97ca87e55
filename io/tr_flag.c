/* tr_flag.c: FlagEmbedding jsonl ({"query", "pos", "neg", optional "pos_scores" / "neg_scores"}) into the
 * builder. */
#include <stdlib.h>
#include <string.h>

#include "tr_internal.h"

/* "pos" / "neg" lists with their optional "pos_scores" / "neg_scores" of the same length. */
static int flag_list(const cJSON *j, const char *key, const char *score_key, int required, TrTextVec *out,
                     const char *file, int64_t line, int *any_score, XrErr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return xr_errf(e, "%s:%lld: missing field \"%s\"", file, (long long)line, key);
        return 0;
    }
    if (!cJSON_IsArray(v)) return xr_errf(e, "%s:%lld: field \"%s\" should be a list of strings", file, (long long)line, key);
    if (tr_json_texts(v, key, 1, out, file, line, e) < 0) return -1;
    if (required && out->n == 0) return xr_errf(e, "%s:%lld: field \"%s\" is an empty list", file, (long long)line, key);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, score_key);
    if (!s || cJSON_IsNull(s)) return 0;
    if (!cJSON_IsArray(s) || cJSON_GetArraySize(s) != out->n)
        return xr_errf(e, "%s:%lld: field \"%s\" should be a list of %d numbers, one per entry of \"%s\"", file,
                       (long long)line, score_key, out->n, key);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, s) {
        if (!cJSON_IsNumber(x))
            return xr_errf(e, "%s:%lld: field \"%s\"[%d] is not a number", file, (long long)line, score_key, i);
        out->v[i++].score = (float)x->valuedouble;
    }
    *any_score = 1;
    return 0;
}

typedef struct {
    TrBuilder *b;
    TrTextVec pos, neg;
} FlagReader;

static int flag_record(void *ctx, const cJSON *j, const char *path, int64_t line, XrErr *e) {
    FlagReader *f = ctx;
    char num[32];
    const char *q = tr_json_str(j, "query", 0, num, path, line, e);
    f->pos.n = f->neg.n = 0;
    if (!q || flag_list(j, "pos", "pos_scores", 1, &f->pos, path, line, &f->b->any_qrel_score, e) < 0 ||
        flag_list(j, "neg", "neg_scores", 0, &f->neg, path, line, &f->b->any_neg_score, e) < 0 ||
        tr_builder_row(f->b, path, line, q, strlen(q), &f->pos, &f->neg, 0, 0, e) < 0)
        return -1;
    return 0;
}

int tr_read_flag_jsonl(TrBuilder *b, const char *path, XrErr *e) {
    FlagReader f = {.b = b};
    int64_t rows = tr_jsonl_each(f.b, path, flag_record, &f, e);
    free(f.pos.v);
    free(f.neg.v);
    if (rows < 0) return -1;
    return rows == 0 ? xr_errf(e, "%s: no rows", path) : 0;
}
