/* tr_beir.c: a BEIR directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv, each optionally .gz) into the
 * builder: passages by _id, the queries some qrel names in queries.jsonl order, qrels with their grades. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tr_internal.h"

/* dir/name, or dir/name.gz; NULL when neither exists. */
static char *find_input(const char *dir, const char *name) {
    char *p = xr_path_join(dir, name);
    if (xr_file_exists(p)) return p;
    char *gz = xr_malloc(strlen(p) + 4);
    sprintf(gz, "%s.gz", p);
    free(p);
    if (xr_file_exists(gz)) return gz;
    free(gz);
    return NULL;
}

static char *beir_qrels_path(const char *dir, const char *split, XrErr *e) {
    char *qdir = xr_path_join(dir, "qrels");
    char *found = NULL;
    char name[300];
    if (split) {
        snprintf(name, sizeof name, "%s.tsv", split);
        found = find_input(qdir, name);
        if (!found) xr_errf(e, "%s: no qrels/%s.tsv (--split %s)", dir, split, split);
        free(qdir);
        return found;
    }
    found = find_input(qdir, "test.tsv");
    if (found) {
        free(qdir);
        return found;
    }
    DIR *d = opendir(qdir);
    if (!d) {
        xr_errf(e, "%s: no qrels directory (a BEIR directory holds corpus.jsonl, queries.jsonl, qrels/<split>.tsv)",
                dir);
        free(qdir);
        return NULL;
    }
    char list[1024] = "";
    int n = 0;
    struct dirent *de;
    /* readdir order is arbitrary: keep the smallest name so the choice never depends on it */
    while ((de = readdir(d))) {
        const char *s = de->d_name;
        size_t l = strlen(s);
        if (!((l > 4 && !strcmp(s + l - 4, ".tsv")) || (l > 7 && !strcmp(s + l - 7, ".tsv.gz")))) continue;
        n++;
        size_t k = strlen(list);
        snprintf(list + k, sizeof list - k, "%s%s", k ? ", " : "", s);
        if (!found || strcmp(s, found) < 0) {
            free(found);
            found = xr_strdup(s);
        }
    }
    closedir(d);
    if (n != 1) {
        xr_errf(e, "%s: %s; pick one with --split", dir,
                n ? "several qrels files and no test.tsv" : "qrels/ holds no .tsv file");
        if (n) snprintf(e->msg + strlen(e->msg), sizeof e->msg - strlen(e->msg), " (%s)", list);
        free(found);
        free(qdir);
        return NULL;
    }
    char *p = xr_path_join(qdir, found);
    free(found);
    free(qdir);
    return p;
}

static void strip_ws(const char **s, size_t *n) {
    while (*n && tr_is_blank(*s, 1)) (*s)++, (*n)--;
    while (*n && tr_is_blank(*s + *n - 1, 1)) (*n)--;
}

/* What the BEIR reader keeps over its three files. */
typedef struct {
    TrBuilder *b;
    const char *corpus, *queries, *qrels; /* paths */
    const char *sep;                      /* between title and text */
    char *joined;                         /* title + sep + text of the current document */
    size_t joined_cap;
    TextList aq, aqid; /* every query of queries.jsonl, and its id */
    TrStrMap aqmap;    /* query id -> index in aq */
    int64_t *used;     /* per query of aq: named by a qrel */
} BeirReader;

/* Add a record's _id to ids (through map); a duplicate is an error. Returns the id's index or -1. */
static int64_t beir_add_id(TrStrMap *map, TextList *ids, const char *id, const char *path, int64_t line, XrErr *e) {
    uint64_t h;
    size_t slot;
    if (tr_strmap_find(map, ids, id, strlen(id), &h, &slot) >= 0)
        return xr_errf(e, "%s:%lld: duplicate _id \"%s\"", path, (long long)line, id);
    int64_t i = textlist_add(ids, id, strlen(id));
    tr_strmap_put(map, slot, h, i);
    return i;
}

/* A corpus.jsonl record: passage = (title + sep + text).strip(), as BEIR does. */
static int beir_doc(void *ctx, const cJSON *j, const char *path, int64_t line, XrErr *e) {
    BeirReader *br = ctx;
    TextSet *ts = br->b->ts;
    char num[32];
    const char *id = tr_json_str(j, "_id", 1, num, path, line, e);
    const char *text = id ? tr_json_str(j, "text", 0, num, path, line, e) : NULL;
    if (!text) return -1;
    const cJSON *tv = cJSON_GetObjectItemCaseSensitive(j, "title");
    const char *title = !br->b->o->no_title && cJSON_IsString(tv) ? tv->valuestring : NULL;
    if (tv && !cJSON_IsNull(tv) && !cJSON_IsString(tv))
        return xr_errf(e, "%s:%lld: field \"title\" should be a string", path, (long long)line);
    size_t seplen = strlen(br->sep);
    size_t tl = title ? strlen(title) : 0, xl = strlen(text), need = tl + seplen + xl + 1;
    if (need > br->joined_cap) br->joined = xr_realloc(br->joined, br->joined_cap = need * 2);
    size_t k = 0;
    if (title) {
        memcpy(br->joined, title, tl);
        memcpy(br->joined + tl, br->sep, seplen);
        k = tl + seplen;
    }
    memcpy(br->joined + k, text, xl);
    k += xl;
    const char *s = br->joined;
    strip_ws(&s, &k);
    if (tr_check_text(br->b, s, k, path, line, "the document (title + text)", e) < 0) return -1;
    if (beir_add_id(&br->b->pmap, &ts->passage_ids, id, path, line, e) < 0) return -1;
    textlist_add(&ts->passages, s, k);
    ts->rows++;
    return 0;
}

/* A queries.jsonl record; kept aside until the qrels say which queries stay. */
static int beir_query(void *ctx, const cJSON *j, const char *path, int64_t line, XrErr *e) {
    BeirReader *br = ctx;
    char num[32];
    const char *id = tr_json_str(j, "_id", 1, num, path, line, e);
    const char *text = id ? tr_json_str(j, "text", 0, num, path, line, e) : NULL;
    if (!text || tr_check_text(br->b, text, strlen(text), path, line, "the query", e) < 0) return -1;
    if (beir_add_id(&br->aqmap, &br->aqid, id, path, line, e) < 0) return -1;
    textlist_add(&br->aq, text, strlen(text));
    br->b->ts->rows++;
    return 0;
}

/* qrels: query-id, corpus-id, score; the first line is a header when its score is not an integer. */
static int beir_read_qrels(BeirReader *br, XrErr *e) {
    TrBuilder *b = br->b;
    TextSet *ts = b->ts;
    const char *qrels = br->qrels;
    LineReader lr;
    if (tr_lr_open(b, &lr, qrels, e) < 0) return -1;
    char *line;
    size_t n;
    int got, rc = -1;
    while ((got = lr_next(&lr, &line, &n, e)) > 0) {
        if (tr_is_blank(line, n)) continue;
        char *f[4] = {line, NULL, NULL, NULL};
        int nf = 1;
        for (char *p = line; *p; p++)
            if (*p == '\t') {
                *p = 0;
                if (nf < 4) f[nf] = p + 1;
                nf++;
            }
        char *end = NULL;
        long long grade = nf == 3 ? strtoll(f[2], &end, 10) : 0;
        int grade_ok = nf == 3 && end != f[2] && *end == 0;
        if (lr.line == 1 && !grade_ok) continue; /* header: query-id corpus-id score */
        if (nf != 3) {
            xr_errf(e, "%s:%lld: %d tab-separated fields, a qrels line has 3 (query-id, corpus-id, score)", qrels,
                    (long long)lr.line, nf);
            goto done;
        }
        if (!grade_ok || grade < INT32_MIN || grade > INT32_MAX) {
            xr_errf(e, "%s:%lld: score \"%s\" is not an integer", qrels, (long long)lr.line, f[2]);
            goto done;
        }
        uint64_t h;
        size_t slot;
        int64_t q = tr_strmap_find(&br->aqmap, &br->aqid, f[0], strlen(f[0]), &h, &slot);
        if (q < 0) {
            xr_errf(e, "%s:%lld: query id \"%s\" is not in %s", qrels, (long long)lr.line, f[0], br->queries);
            goto done;
        }
        int64_t p = tr_strmap_find(&b->pmap, &ts->passage_ids, f[1], strlen(f[1]), &h, &slot);
        if (p < 0) {
            xr_errf(e, "%s:%lld: corpus id \"%s\" is not in %s", qrels, (long long)lr.line, f[1], br->corpus);
            goto done;
        }
        br->used[q] = 1;
        tr_add_qrel(b, q, p, (int32_t)grade, NAN);
        ts->rows++;
    }
    if (got < 0) goto done;
    if (ts->nqrels == 0) {
        xr_errf(e, "%s: no qrels", qrels);
        goto done;
    }
    rc = 0;
done:
    tr_lr_close(b, &lr);
    return rc;
}

/* Keep the queries some qrel names, in queries.jsonl order (as BEIR's loader does), and renumber the qrels. */
static void beir_keep_used_queries(BeirReader *br) {
    TextSet *ts = br->b->ts;
    int64_t *final_of = xr_malloc(sizeof(int64_t) * (size_t)(br->aq.n ? br->aq.n : 1));
    for (int64_t i = 0; i < br->aq.n; i++) {
        final_of[i] = -1;
        if (!br->used[i]) {
            ts->queries_without_qrels++;
            continue;
        }
        size_t l;
        const char *s = textlist_get(&br->aq, i, &l);
        final_of[i] = textlist_add(&ts->queries, s, l);
        s = textlist_get(&br->aqid, i, &l);
        textlist_add(&ts->query_ids, s, l);
    }
    for (int64_t k = 0; k < ts->nqrels; k++) ts->qrel_query[k] = final_of[ts->qrel_query[k]];
    free(final_of);
}

int tr_read_beir(TrBuilder *b, const char *dir, XrErr *e) {
    TextSet *ts = b->ts;
    const TrOptions *o = b->o;
    char *corpus = find_input(dir, "corpus.jsonl"), *queries = find_input(dir, "queries.jsonl"), *qrels = NULL;
    BeirReader br = {.b = b, .corpus = corpus, .queries = queries, .sep = o->title_sep ? o->title_sep : " "};
    int rc = -1;
    if (!corpus || !queries) {
        xr_errf(e, "%s: not a BEIR directory: no %s", dir, !corpus ? "corpus.jsonl" : "queries.jsonl");
        goto done;
    }
    if (!(qrels = beir_qrels_path(dir, o->split, e))) goto done;
    br.qrels = qrels;
    if (tr_jsonl_each(b, corpus, beir_doc, &br, e) < 0) goto done;
    if (ts->passages.n == 0) {
        xr_errf(e, "%s: no documents", corpus);
        goto done;
    }
    if (tr_jsonl_each(b, queries, beir_query, &br, e) < 0) goto done;
    br.used = xr_calloc((size_t)(br.aq.n ? br.aq.n : 1), sizeof(int64_t));
    if (beir_read_qrels(&br, e) < 0) goto done;
    beir_keep_used_queries(&br);
    char *src[3] = {corpus, queries, qrels};
    for (int k = 0; k < 3; k++) {
        ts->sources = xr_realloc(ts->sources, sizeof(char *) * (size_t)(ts->nsources + 1));
        ts->sources[ts->nsources++] = src[k];
    }
    corpus = queries = qrels = NULL;
    rc = 0;
done:
    free(br.joined);
    free(corpus);
    free(queries);
    free(qrels);
    free(br.used);
    textlist_free(&br.aq);
    textlist_free(&br.aqid);
    tr_strmap_free(&br.aqmap);
    return rc;
}
