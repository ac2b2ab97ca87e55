/* test_batch.c: core/batch.c: flat sequence storage, assembled lengths equal to what the tokenizer templates
 * return (with longest_first truncation), length-sorted plans that never mix windows and do not depend on
 * how windows are split between ranks, and padded batches (pad id, mask, token types) for BERT and XLM-R. */
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "testutil.h"

static const char *TEXTS[] = {
    "list directory contents",
    "The ls command lists information about the FILEs (the current directory by default).",
    "",
    "copy files and directories",
    "grep searches for PATTERNS in each FILE; a PATTERN is one or more patterns separated by newlines.",
    "a",
    "sort lines of text files, and print the result to standard output unless told otherwise by options",
    "Café résumé naïve",
    "x y z",
    "remove files or directories",
    "ssh is a program for logging into a remote machine and for executing commands on a remote machine.",
};
#define NTEXT ((int)(sizeof TEXTS / sizeof TEXTS[0]))

static void check_store(const Tokenizer *t, SeqStore *s) {
    int32_t *ids = NULL;
    size_t cap = 0;
    for (int i = 0; i < NTEXT; i++) {
        int64_t k = seqs_add_text(s, t, TEXTS[i], strlen(TEXTS[i]));
        TU_CHECK(k == i, "index %lld, want %d", (long long)k, i);
    }
    for (int i = 0; i < NTEXT; i++) {
        int n = tok_encode(t, TEXTS[i], strlen(TEXTS[i]), &ids, &cap);
        TU_CHECK(seqs_len(s, i) == n, "text %d: stored %lld ids, tok_encode gives %d", i, (long long)seqs_len(s, i), n);
        TU_CHECK(n == 0 || !memcmp(s->tok + s->off[i], ids, sizeof(int32_t) * (size_t)n), "text %d: ids differ", i);
    }
    free(ids);
}

/* All pairs and singles of the texts. */
static BatchItem *all_items(int *n) {
    BatchItem *it = xr_malloc(sizeof(BatchItem) * (NTEXT * NTEXT + NTEXT));
    int k = 0;
    for (int a = 0; a < NTEXT; a++) {
        it[k++] = (BatchItem){a, -1};
        for (int b = 0; b < NTEXT; b += 2) it[k++] = (BatchItem){a, b};
    }
    *n = k;
    return it;
}

static void check_lengths_and_fill(const char *name, const Tokenizer *t, const SeqStore *s, int max_len) {
    int n;
    BatchItem *items = all_items(&n);
    int32_t *len = xr_malloc(sizeof(int32_t) * (size_t)n);
    int32_t row_ids[1024], row_types[1024];
    int bad = 0;
    for (int i = 0; i < n; i++) {
        len[i] = batch_item_len(t, s, items[i], max_len);
        const int32_t *a = s->tok + s->off[items[i].a];
        int got = items[i].b < 0 ? tok_single(t, a, (int)seqs_len(s, items[i].a), max_len, row_ids, row_types)
                                 : tok_pair(t, a, (int)seqs_len(s, items[i].a), s->tok + s->off[items[i].b],
                                            (int)seqs_len(s, items[i].b), max_len, row_ids, row_types);
        if (got != len[i]) bad++;
        if (max_len > 0 && len[i] > max_len) bad++;
    }
    TU_CHECK(bad == 0, "%s max_len %d: %d items whose batch_item_len disagrees with the template", name, max_len, bad);

    /* Windows of 7 items, batches of 3. */
    BatchPlan p;
    batch_plan_init(&p);
    int W = 7, B = 3;
    for (int w = 0; w < n; w += W) batch_plan_add(&p, len, w, w + W < n ? W : n - w, B);
    TU_CHECK(p.nitems == n, "plan holds %lld items, want %d", (long long)p.nitems, n);
    char *seen = xr_calloc((size_t)n, 1);
    int64_t real = 0, padded = 0;
    BatchBuf bb;
    batch_buf_init(&bb);
    int pad = tok_pad_id(t), fill_bad = 0, order_bad = 0, window_bad = 0;
    for (int64_t k = 0; k < p.nbatches; k++) {
        int m = batch_plan_size(&p, k);
        const int64_t *idx = p.order + p.start[k];
        TU_CHECK(m >= 1 && m <= B, "batch %lld has %d items", (long long)k, m);
        for (int i = 0; i < m; i++) {
            seen[idx[i]]++;
            real += len[idx[i]];
            if (idx[i] / W != idx[0] / W) window_bad++;
            if (i && (len[idx[i]] > len[idx[i - 1]] || (len[idx[i]] == len[idx[i - 1]] && idx[i] < idx[i - 1])))
                order_bad++;
        }
        const Batch *b = batch_fill(&bb, t, s, items, idx, m, max_len);
        TU_CHECK(b->B == m && b->T == len[idx[0]], "batch %lld: B %d T %d, want %d, %d", (long long)k, b->B, b->T, m,
                 len[idx[0]]);
        padded += (int64_t)b->B * b->T;
        for (int i = 0; i < m; i++) {
            BatchItem it = items[idx[i]];
            const int32_t *a = s->tok + s->off[it.a];
            int L = it.b < 0 ? tok_single(t, a, (int)seqs_len(s, it.a), max_len, row_ids, row_types)
                             : tok_pair(t, a, (int)seqs_len(s, it.a), s->tok + s->off[it.b], (int)seqs_len(s, it.b),
                                        max_len, row_ids, row_types);
            const int32_t *ids = b->ids + (size_t)i * b->T, *ty = b->types + (size_t)i * b->T,
                          *mk = b->mask + (size_t)i * b->T;
            if (memcmp(ids, row_ids, sizeof(int32_t) * (size_t)L) || memcmp(ty, row_types, sizeof(int32_t) * (size_t)L))
                fill_bad++;
            for (int j = 0; j < b->T; j++) {
                if (mk[j] != (j < L)) fill_bad++;
                if (j >= L && (ids[j] != pad || ty[j] != 0)) fill_bad++;
            }
        }
    }
    int missing = 0;
    for (int i = 0; i < n; i++) missing += seen[i] != 1;
    TU_CHECK(missing == 0, "%s: %d items not planned exactly once", name, missing);
    TU_CHECK(order_bad == 0, "%s: %d batches not sorted longest first (ties by index)", name, order_bad);
    TU_CHECK(window_bad == 0, "%s: %d batches mix windows", name, window_bad);
    TU_CHECK(fill_bad == 0, "%s: %d wrong cells in the padded batches", name, fill_bad);
    TU_CHECK(real == p.real_tokens && padded == p.padded_tokens, "%s: tokens real %lld/%lld padded %lld/%lld", name,
             (long long)real, (long long)p.real_tokens, (long long)padded, (long long)p.padded_tokens);
    printf("%s max_len %3d: %d items, %lld batches, max T %d, padding efficiency %.1f%%\n", name, max_len, n,
           (long long)p.nbatches, p.max_T, 100.0 * (double)p.real_tokens / (double)p.padded_tokens);

    /* The windows split between two "ranks" give the same batches, in the same order, as one plan. */
    BatchPlan r0, r1;
    batch_plan_init(&r0);
    batch_plan_init(&r1);
    int nw = (n + W - 1) / W, half = nw / 2;
    for (int w = 0; w < nw; w++)
        batch_plan_add(w < half ? &r0 : &r1, len, (int64_t)w * W, (int64_t)w * W + W < n ? W : n - (int64_t)w * W, B);
    int same = r0.nbatches + r1.nbatches == p.nbatches && r0.nitems + r1.nitems == p.nitems;
    for (int64_t k = 0; same && k < p.nbatches; k++) {
        const BatchPlan *q = k < r0.nbatches ? &r0 : &r1;
        int64_t kk = k < r0.nbatches ? k : k - r0.nbatches;
        same = batch_plan_size(q, kk) == batch_plan_size(&p, k) &&
               !memcmp(q->order + q->start[kk], p.order + p.start[k], sizeof(int64_t) * (size_t)batch_plan_size(&p, k));
    }
    TU_CHECK(same, "%s: splitting the windows between ranks changed the batches", name);
    batch_plan_free(&r0);
    batch_plan_free(&r1);
    batch_buf_free(&bb);
    batch_plan_free(&p);
    free(seen);
    free(len);
    free(items);
}

static void check_tokenizer(const char *name, const char *dir) {
    XrErr e;
    Tokenizer *t = tok_load(tu_path(dir), &e);
    TU_CHECK(t != NULL, "%s: %s", name, t ? "" : e.msg);
    if (!t) return;
    SeqStore s;
    seqs_init(&s);
    check_store(t, &s);
    check_lengths_and_fill(name, t, &s, 0);
    check_lengths_and_fill(name, t, &s, 12);
    check_lengths_and_fill(name, t, &s, 40);
    seqs_free(&s);
    tok_free(t);
}

int main(void) {
    /* Empty plan and empty windows. */
    BatchPlan p;
    batch_plan_init(&p);
    batch_plan_add(&p, NULL, 0, 0, 4);
    TU_CHECK(p.nitems == 0 && p.nbatches == 0 && p.padded_tokens == 0, "empty plan not empty");
    batch_plan_free(&p);

    check_tokenizer("bert", "fixtures/cli/bert_seqcls");
    if (xr_file_exists(tu_path("fixtures/cli/xlmr_seqcls/sentencepiece.bpe.model")))
        check_tokenizer("xlmr", "fixtures/cli/xlmr_seqcls");
    return tu_finish("test_batch");
}
