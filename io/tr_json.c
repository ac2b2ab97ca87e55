/* tr_json.c: JSON helpers of the text readers: one jsonl line as an object, string and text fields, with
 * errors naming the file, the line and the field. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tr_internal.h"

cJSON *tr_json_line(const char *line, size_t n, const char *file, int64_t lineno, XrErr *e) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(line, n, &end, 0);
    if (!j) {
        long col = end && end >= line ? (long)(end - line) + 1 : 1;
        xr_errf(e, "%s:%lld: malformed JSON near column %ld", file, (long long)lineno, col);
        return NULL;
    }
    while (end && end < line + n && (*end == ' ' || *end == '\t' || *end == '\r')) end++;
    if (end && end < line + n && *end) {
        cJSON_Delete(j);
        xr_errf(e, "%s:%lld: malformed JSON: text after the object at column %ld", file, (long long)lineno,
                (long)(end - line) + 1);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        xr_errf(e, "%s:%lld: expected a JSON object", file, (long long)lineno);
        return NULL;
    }
    return j;
}

/* A string field (an id may also be an integer); NULL with e filled when missing or of another type. */
const char *tr_json_str(const cJSON *o, const char *key, int allow_int, char *numbuf, const char *file,
                            int64_t line, XrErr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        xr_errf(e, "%s:%lld: missing field \"%s\"", file, (long long)line, key);
        return NULL;
    }
    if (cJSON_IsString(v)) return v->valuestring;
    if (allow_int && cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 9e15) {
        snprintf(numbuf, 32, "%lld", (long long)v->valuedouble);
        return numbuf;
    }
    xr_errf(e, "%s:%lld: field \"%s\" should be a string", file, (long long)line, key);
    return NULL;
}

/* A text cell of a jsonl row: a string, or (when lists are allowed) a list of strings. */
int tr_json_texts(const cJSON *v, const char *key, int allow_list, TrTextVec *out, const char *file, int64_t line,
                      XrErr *e) {
    if (cJSON_IsString(v)) {
        tr_tv_push(out, v->valuestring, strlen(v->valuestring), NAN);
        return 0;
    }
    if (allow_list && cJSON_IsArray(v)) {
        const cJSON *x;
        cJSON_ArrayForEach(x, v) {
            if (!cJSON_IsString(x))
                return xr_errf(e, "%s:%lld: field \"%s\" should be a list of strings", file, (long long)line, key);
            tr_tv_push(out, x->valuestring, strlen(x->valuestring), NAN);
        }
        return 0;
    }
    return xr_errf(e, "%s:%lld: field \"%s\" should be a string%s", file, (long long)line, key,
                   allow_list ? " or a list of strings" : "");
}

int tr_lr_open(TrBuilder *b, LineReader *lr, const char *path, XrErr *e) {
    if (lr_open(lr, path, e) < 0) return -1;
    lr->utf8_replace = b ? b->o->utf8_replace : 1;
    return 0;
}

void tr_lr_close(TrBuilder *b, LineReader *lr) {
    if (b) b->ts->utf8_replaced += lr->utf8_replaced, b->ts->utf8_lines += lr->utf8_lines;
    lr_close(lr);
}

int64_t tr_jsonl_each(TrBuilder *b, const char *path, TrJsonlFn fn, void *ctx, XrErr *e) {
    LineReader lr;
    if (tr_lr_open(b, &lr, path, e) < 0) return -1;
    char *line;
    size_t n;
    int64_t rows = 0;
    int got;
    while ((got = lr_next(&lr, &line, &n, e)) > 0) {
        if (tr_is_blank(line, n)) continue;
        cJSON *j = tr_json_line(line, n, path, lr.line, e);
        if (!j) {
            got = -1;
            break;
        }
        int st = fn(ctx, j, path, lr.line, e);
        cJSON_Delete(j);
        if (st < 0) {
            got = -1;
            break;
        }
        rows++;
        if (st > 0) break;
    }
    tr_lr_close(b, &lr);
    return got < 0 ? -1 : rows;
}
