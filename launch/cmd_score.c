/* cmd_score.c: `xrank score`: cross-encoder scores for query-passage pairs read as jsonl
 * ({"query","passages":[..]} -> {"scores":[..]}, {"query","passage"} or [q, p] -> {"score": s}). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"

static const ArgSpec SCORE_FLAGS[] = {
    CLI_COMMON_FLAGS,
    {"activation", ARG_CHOICE, "none", "", "none: raw logits; sigmoid: 1 / (1 + exp(-logit))", "none|sigmoid", 0},
};

static const ArgHelp SCORE_HELP = {
    "Score query-passage pairs with a cross-encoder (a *ForSequenceClassification model).",
    "input (jsonl, one object per line):\n"
    "  {\"query\": q, \"passages\": [p1, p2, ...]}   ->  {\"scores\": [s1, s2, ...]}\n"
    "  {\"query\": q, \"passage\": p}  or  [q, p]    ->  {\"score\": s}\n"
    "An \"id\" field is copied to the output line. Pairs are built with the model's template (BERT:\n"
    "[CLS] q [SEP] p [SEP]; XLM-R: <s> q </s></s> p </s>) and truncated longest_first to --max-length.\n"
    "Output lines are in input order. Under mpirun every rank scores a contiguous part of the input and\n"
    "rank 0 writes the output: the result is the same for any number of ranks.",
    "  xrank score --model cross-encoder/ms-marco-MiniLM-L6-v2 --input pairs.jsonl --output scores.jsonl\n"
    "  echo '[\"what is xrank\", \"xrank trains rerankers\"]' | xrank score --model ./my-reranker --activation sigmoid\n"
    "  mpirun -np 4 xrank score --config configs/demo.json --model M --input q.jsonl --output s.jsonl --overwrite",
};

typedef struct {
    const Tokenizer *tok;
    int num_labels, sigmoid;
} ScoreCtx;

enum { SCORE_ONE = 0, SCORE_LIST = 1 };

/* The query and passages of a line, as cJSON items (owned by root). */
typedef struct {
    cJSON *root;
    const cJSON *query, *passage, *passages, *id;
} ScoreLine;

static int score_parse(const char *line, size_t len, ScoreLine *L, XrErr *e) {
    memset(L, 0, sizeof *L);
    const char *end = NULL;
    L->root = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (!L->root) return xr_errf(e, "invalid JSON near column %zu", end ? (size_t)(end - line) + 1 : (size_t)1);
    if (cJSON_IsArray(L->root)) {
        if (cJSON_GetArraySize(L->root) != 2)
            return xr_errf(e, "a pair given as an array must be [query, passage] (found %d elements)",
                           cJSON_GetArraySize(L->root));
        L->query = cJSON_GetArrayItem(L->root, 0);
        L->passage = cJSON_GetArrayItem(L->root, 1);
        if (!cJSON_IsString(L->query) || !cJSON_IsString(L->passage))
            return xr_errf(e, "[query, passage] must both be strings");
        return 0;
    }
    if (!cJSON_IsObject(L->root))
        return xr_errf(e, "expected an object {\"query\", \"passages\" | \"passage\"} or an array [query, passage]");
    L->query = cJSON_GetObjectItemCaseSensitive(L->root, "query");
    L->passage = cJSON_GetObjectItemCaseSensitive(L->root, "passage");
    L->passages = cJSON_GetObjectItemCaseSensitive(L->root, "passages");
    L->id = cJSON_GetObjectItemCaseSensitive(L->root, "id");
    if (!L->query) return xr_errf(e, "missing \"query\"");
    if (!cJSON_IsString(L->query)) return xr_errf(e, "\"query\" must be a string");
    if (!L->passage && !L->passages) return xr_errf(e, "missing \"passages\" (or \"passage\")");
    if (L->passage && L->passages) return xr_errf(e, "give \"passages\" or \"passage\", not both");
    if (L->passage && !cJSON_IsString(L->passage)) return xr_errf(e, "\"passage\" must be a string");
    if (L->passages) {
        if (!cJSON_IsArray(L->passages)) return xr_errf(e, "\"passages\" must be an array of strings");
        int k = 0;
        const cJSON *p;
        cJSON_ArrayForEach(p, L->passages) {
            if (!cJSON_IsString(p)) return xr_errf(e, "\"passages\"[%d] must be a string", k);
            k++;
        }
    }
    return 0;
}

static int score_count(void *ctx, const char *line, size_t len, int64_t *nitems, XrErr *e) {
    ScoreLine L;
    int rc = score_parse(line, len, &L, e);
    if (!rc) *nitems = L.passages ? cJSON_GetArraySize(L.passages) : 1;
    cJSON_Delete(L.root);
    return rc;
}

static void score_tokenize(void *ctx, const char *line, size_t len, SeqStore *s, BatchItem *items, char **id_json,
                           int *kind) {
    const Tokenizer *tok = ((const ScoreCtx *)ctx)->tok;
    ScoreLine L;
    XrErr e;
    if (score_parse(line, len, &L, &e)) xr_die("internal: line validated in pass 1 failed: %s", e.msg);
    int64_t q = seqs_add_text(s, tok, L.query->valuestring, strlen(L.query->valuestring));
    if (L.passages) {
        int k = 0;
        const cJSON *p;
        cJSON_ArrayForEach(p, L.passages) {
            items[k++] = (BatchItem){q, seqs_add_text(s, tok, p->valuestring, strlen(p->valuestring))};
        }
        *kind = SCORE_LIST;
    } else {
        items[0] = (BatchItem){q, seqs_add_text(s, tok, L.passage->valuestring, strlen(L.passage->valuestring))};
        *kind = SCORE_ONE;
    }
    *id_json = L.id ? cJSON_PrintUnformatted(L.id) : NULL;
    cJSON_Delete(L.root);
}

static void score_forward(void *ctx, Encoder *enc, const Batch *b, float *out) {
    encoder_forward_score(enc, b, out);
}

static void score_value(CliBuf *o, const ScoreCtx *c, const float *v) {
    if (c->num_labels > 1) cli_buf_puts(o, "[");
    for (int j = 0; j < c->num_labels; j++) {
        float x = v[j];
        if (c->sigmoid) x = (float)(1.0 / (1.0 + exp(-(double)x)));
        if (j) cli_buf_puts(o, ", ");
        cli_buf_float(o, x);
    }
    if (c->num_labels > 1) cli_buf_puts(o, "]");
}

static void score_format(void *ctx, const char *id_json, int kind, const float *res, int64_t nitems, CliBuf *out) {
    const ScoreCtx *c = ctx;
    cli_buf_puts(out, "{");
    if (id_json) cli_buf_printf(out, "\"id\": %s, ", id_json);
    if (kind == SCORE_LIST) {
        cli_buf_puts(out, "\"scores\": [");
        for (int64_t i = 0; i < nitems; i++) {
            if (i) cli_buf_puts(out, ", ");
            score_value(out, c, res + i * c->num_labels);
        }
        cli_buf_puts(out, "]}\n");
    } else {
        cli_buf_puts(out, "\"score\": ");
        score_value(out, c, res);
        cli_buf_puts(out, "}\n");
    }
}

const CliCmd CLI_CMD_SCORE = {"score", SCORE_FLAGS, (int)(sizeof SCORE_FLAGS / sizeof SCORE_FLAGS[0]), &SCORE_HELP,
                               0, NULL, 0, NULL};

int cmd_score(int argc, char **argv) {
    CliCtx cx;
    int rc = cli_setup(&cx, &CLI_CMD_SCORE, 0, argc, argv);
    if (rc >= 0) return rc;
    XrErr e;
    if (!cx.cfg.is_seq_cls) {
        xr_errf(&e, "%s is a %s, not a sequence-classification model (a cross-encoder such as "
                    "BertForSequenceClassification or XLMRobertaForSequenceClassification); use xrank embed for "
                    "bi-encoders",
                cx.model_dir, cx.cfg.architecture[0] ? cx.cfg.architecture : cx.cfg.model_type);
        return cli_fail(&cx, &e, 1);
    }
    ScoreCtx sc = {cx.tok, cx.cfg.num_labels > 0 ? cx.cfg.num_labels : 1,
                   !strcmp(args_str(&cx.b.args, "activation"), "sigmoid")};
    CliJob job = {.unit = "pairs",
                  .keep_blank_lines = 0,
                  .out_dim = sc.num_labels,
                  .ctx = &sc,
                  .count = score_count,
                  .tokenize = score_tokenize,
                  .forward = score_forward,
                  .format = score_format,
                  .prologue = NULL};
    return cli_run(&cx, &job);
}
