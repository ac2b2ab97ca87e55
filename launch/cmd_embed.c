/* cmd_embed.c: `xrank embed`: bi-encoder embeddings (CLS or masked-mean pooling, optionally L2-normalised)
 * of texts read as jsonl ({"text"}, BEIR corpus lines {"_id","title","text"}) or plain lines, written as
 * jsonl {"embedding": [..]} or a float32 .npy matrix [N, H]. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"

static const ArgSpec EMBED_FLAGS[] = {
    CLI_COMMON_FLAGS,
    {"input-format", ARG_CHOICE, "jsonl", "", "jsonl: {\"text\"} objects (BEIR corpus lines too); text: one text per line",
     "jsonl|text", 0},
    {"pooling", ARG_CHOICE, NULL, "",
     "token pooling (default: the model's sentence-transformers Pooling config, else cls)", "cls|mean", 0},
    {"normalize", ARG_BOOL, NULL, "0|1",
     "L2-normalise the embeddings (default: 1 when the sentence-transformers modules include Normalize or "
     "there is no sentence-transformers config, else 0)",
     NULL, 0},
    {"prompt", ARG_STR, "", "TEXT", "text put before every input, e.g. \"query: \"", NULL, 0},
};

static const ArgHelp EMBED_HELP = {
    "Embed texts with a bi-encoder (BertModel / XLMRobertaModel, or the encoder of any supported model).",
    "input: jsonl lines {\"text\": t} with an optional \"id\" (or BEIR corpus lines {\"_id\", \"title\", \"text\":\n"
    "the title and text are joined by a space when the title is not empty, as BEIR does), a bare JSON string,\n"
    "or with --input-format text one text per line (a blank line is an empty text).\n"
    "output: jsonl {\"id\": .., \"embedding\": [...]} in input order, or, when --output ends in .npy, a float32\n"
    "array [N, hidden]. The max length defaults to max_seq_length of sentence_bert_config.json when present.",
    "  xrank embed --model /work/models/all-MiniLM-L6-v2 --input corpus.jsonl --output corpus.npy\n"
    "  xrank embed --model BAAI/bge-small-en-v1.5 --input-format text --input queries.txt --prompt \"query: \"\n"
    "  mpirun -np 2 xrank embed --model M --input corpus.jsonl --output emb.jsonl --batch-size 64 --overwrite",
};

typedef struct {
    const Tokenizer *tok;
    const char *prompt;
    int text_format, npy, hidden, normalize;
    PoolingMode pooling;
    CliBuf scratch;
} EmbedCtx;

typedef struct {
    cJSON *root;
    const cJSON *text, *title, *id;
} EmbedLine;

static int embed_parse(const char *line, size_t len, EmbedLine *L, XrErr *e) {
    memset(L, 0, sizeof *L);
    const char *end = NULL;
    L->root = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (!L->root) return xr_errf(e, "invalid JSON near column %zu", end ? (size_t)(end - line) + 1 : (size_t)1);
    if (cJSON_IsString(L->root)) {
        L->text = L->root;
        return 0;
    }
    if (!cJSON_IsObject(L->root))
        return xr_errf(e, "expected an object with \"text\" (or a JSON string; --input-format text for plain lines)");
    L->text = cJSON_GetObjectItemCaseSensitive(L->root, "text");
    L->title = cJSON_GetObjectItemCaseSensitive(L->root, "title");
    L->id = cJSON_GetObjectItemCaseSensitive(L->root, "id");
    if (!L->id) L->id = cJSON_GetObjectItemCaseSensitive(L->root, "_id");
    if (!L->text) return xr_errf(e, "missing \"text\"");
    if (!cJSON_IsString(L->text)) return xr_errf(e, "\"text\" must be a string");
    if (L->title && !cJSON_IsString(L->title) && !cJSON_IsNull(L->title))
        return xr_errf(e, "\"title\" must be a string");
    return 0;
}

static int embed_count(void *ctx, const char *line, size_t len, int64_t *nitems, XrErr *e) {
    const EmbedCtx *c = ctx;
    *nitems = 1;
    if (c->text_format) return 0;
    EmbedLine L;
    int rc = embed_parse(line, len, &L, e);
    cJSON_Delete(L.root);
    return rc;
}

static void embed_tokenize(void *ctx, const char *line, size_t len, SeqStore *s, BatchItem *items, char **id_json,
                           int *kind) {
    EmbedCtx *c = ctx;
    CliBuf *t = &c->scratch;
    t->n = 0;
    cli_buf_puts(t, c->prompt);
    *kind = 0;
    *id_json = NULL;
    if (c->text_format) {
        cli_buf_put(t, line, len);
    } else {
        EmbedLine L;
        XrErr e;
        if (embed_parse(line, len, &L, &e)) xr_die("internal: line validated in pass 1 failed: %s", e.msg);
        if (cJSON_IsString(L.title) && L.title->valuestring[0]) {
            cli_buf_puts(t, L.title->valuestring);
            cli_buf_puts(t, " ");
        }
        cli_buf_puts(t, L.text->valuestring);
        *id_json = L.id ? cJSON_PrintUnformatted(L.id) : NULL;
        cJSON_Delete(L.root);
    }
    items[0] = (BatchItem){seqs_add_text(s, c->tok, t->n ? t->p : "", t->n), -1};
}

static void embed_forward(void *ctx, Encoder *enc, const Batch *b, float *out) {
    const EmbedCtx *c = ctx;
    encoder_forward_embed(enc, b, c->pooling, c->normalize, out);
}

static void embed_format(void *ctx, const char *id_json, int kind, const float *res, int64_t nitems, CliBuf *out) {
    const EmbedCtx *c = ctx;
    if (c->npy) {
        cli_buf_put(out, res, sizeof(float) * (size_t)c->hidden);
        return;
    }
    cli_buf_puts(out, "{");
    if (id_json) cli_buf_printf(out, "\"id\": %s, ", id_json);
    cli_buf_puts(out, "\"embedding\": [");
    for (int j = 0; j < c->hidden; j++) {
        if (j) cli_buf_puts(out, ", ");
        cli_buf_float(out, res[j]);
    }
    cli_buf_puts(out, "]}\n");
}

/* NumPy .npy v1.0: magic, header length, a Python dict literal padded with spaces to a 64-byte boundary. */
static void embed_npy_header(void *ctx, int64_t nrecords, CliBuf *out) {
    const EmbedCtx *c = ctx;
    if (!c->npy) return;
    char dict[128];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %d), }",
                     (long long)nrecords, c->hidden);
    size_t total = 10 + (size_t)n + 1, pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                             (unsigned char)(hlen >> 8)};
    cli_buf_put(out, pre, sizeof pre);
    cli_buf_put(out, dict, (size_t)n);
    for (size_t i = 0; i < pad; i++) cli_buf_puts(out, " ");
    cli_buf_puts(out, "\n");
}

static int embed_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

const CliCmd CLI_CMD_EMBED = {"embed", EMBED_FLAGS, (int)(sizeof EMBED_FLAGS / sizeof EMBED_FLAGS[0]), &EMBED_HELP,
                               0, NULL, 0, NULL};

int cmd_embed(int argc, char **argv) {
    CliCtx cx;
    int rc = cli_setup(&cx, &CLI_CMD_EMBED, 1, argc, argv);
    if (rc >= 0) return rc;
    const Args *a = &cx.b.args;
    EmbedCtx ec = {0};
    ec.tok = cx.tok;
    ec.prompt = args_str(a, "prompt");
    ec.text_format = !strcmp(args_str(a, "input-format"), "text");
    ec.npy = embed_ends_with(cx.output, ".npy");
    ec.hidden = cx.cfg.hidden;

    /* sentence-transformers' own defaults: its Pooling / Normalize modules (max_seq_length: cli_setup). */
    const char *pool_from = "--pooling", *norm_from = "--normalize";
    if (args_is_set(a, "pooling")) {
        ec.pooling = !strcmp(args_str(a, "pooling"), "mean") ? POOL_MEAN : POOL_CLS;
    } else {
        ec.pooling = cx.cfg.has_pooling_config ? cx.cfg.pooling : POOL_CLS;
        pool_from = cx.cfg.has_pooling_config ? "1_Pooling/config.json" : "no pooling config: default";
    }
    if (args_is_set(a, "normalize")) {
        ec.normalize = args_bool(a, "normalize");
    } else {
        ec.normalize = cx.cfg.has_pooling_config ? cx.cfg.normalize : 1;
        norm_from = cx.cfg.has_pooling_config ? "modules.json" : "no sentence-transformers config: default";
    }
    if (cx.rank == 0 && !cx.quiet)
        fprintf(stderr, "xrank embed: %s pooling (%s), normalize %d (%s), max length %d\n",
                ec.pooling == POOL_MEAN ? "mean" : "cls", pool_from, ec.normalize, norm_from, cx.max_len);

    CliJob job = {.unit = "texts",
                  .keep_blank_lines = ec.text_format,
                  .out_dim = ec.hidden,
                  .ctx = &ec,
                  .count = embed_count,
                  .tokenize = embed_tokenize,
                  .forward = embed_forward,
                  .format = embed_format,
                  .prologue = ec.npy ? embed_npy_header : NULL};
    rc = cli_run(&cx, &job);
    cli_buf_free(&ec.scratch);
    return rc;
}
