/* test_trainer.c: the trainer's pieces without mpirun: the epoch permutation and group sampling are pure functions
 * of (seed, epoch, example); a trained model exported as an HF directory reloads with the same scores (seq-cls and
 * new-head models); the evaluator's base metrics on a hand-made ranking and its reranked metrics equal those of
 * the model's scores. With arguments `--compare A B TOL` it compares two safetensors files (tests/train.cmake's
 * rank-invariance check). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm.h"
#include "data.h"
#include "evaluate.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "safetensors.h"
#include "testutil.h"
#include "tokenizer.h"
#include "trainer.h"

/* Attention key biases have a zero gradient in exact arithmetic (softmax is shift-invariant), so what they get is
 * rounding noise, which Adam normalises to steps of ~lr: their values depend on summation order by design. */
static const char *g_zero_grad_extra; /* listwise: the output bias too (a shift of all logits of a group) */
static int is_key_bias(const char *name) {
    return strstr(name, "attention.self.key.bias") != NULL || (g_zero_grad_extra && !strcmp(name, g_zero_grad_extra));
}

static int compare_files(const char *a, const char *b, double tol) {
    SafeTensors sa, sb;
    XrErr e;
    if (st_open(&sa, a, &e) || st_open(&sb, b, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    double worst = 0, worst_key = 0;
    const char *wn = "";
    int bad = 0;
    for (int i = 0; i < sa.n; i++) {
        const StTensor *x = &sa.tensors[i], *y = st_find(&sb, x->name);
        if (!y || st_numel(x) != st_numel(y)) {
            fprintf(stderr, "tensor %s missing or of another size in %s\n", x->name, b);
            bad = 1;
            continue;
        }
        size_t n = (size_t)st_numel(x);
        float *fx = xr_malloc(n * 4), *fy = xr_malloc(n * 4);
        st_to_f32(x, fx, &e), st_to_f32(y, fy, &e);
        double d = 0;
        for (size_t k = 0; k < n; k++) d = fmax(d, fabs((double)fx[k] - fy[k]));
        if (is_key_bias(x->name)) worst_key = fmax(worst_key, d);
        else if (d > worst) worst = d, wn = x->name;
        free(fx), free(fy);
    }
    printf("compare %s vs %s: %d tensors, max abs diff %.3g (%s), zero-gradient tensors (attention key biases%s%s) %.3g\n", a,
           b, sa.n, worst, wn, g_zero_grad_extra ? ", " : "", g_zero_grad_extra ? g_zero_grad_extra : "", worst_key);
    st_close(&sa), st_close(&sb);
    if (worst > tol) {
        fprintf(stderr, "FAILED: max abs diff %.3g > %.3g\n", worst, tol);
        bad = 1;
    }
    return bad;
}

static void test_order(void) {
    int64_t n = 1000, *p = xr_malloc(8 * n), *q = xr_malloc(8 * n);
    td_epoch_order(n, 7, 3, p);
    td_epoch_order(n, 7, 3, q);
    TU_CHECK(!memcmp(p, q, 8 * n), "same (seed, epoch) gives the same order");
    int64_t sum = 0, fixed = 0;
    for (int64_t i = 0; i < n; i++) sum += p[i], fixed += p[i] == i;
    TU_CHECK(sum == n * (n - 1) / 2 && fixed < 20, "a permutation that moves most items (sum %lld, fixed %lld)",
             (long long)sum, (long long)fixed);
    td_epoch_order(n, 7, 4, q);
    TU_CHECK(memcmp(p, q, 8 * n), "another epoch gives another order");
    free(p), free(q);

    /* group sampling: G-1 distinct negatives when enough, repeats when short, positive first */
    TrainData d;
    memset(&d, 0, sizeof d);
    d.mode = TD_GROUPS, d.group_size = 4, d.nq = 2, d.np = 10, d.n = 2;
    int64_t qq[2] = {0, 1}, pp[2] = {0, 1}, off[3] = {0, 6, 8}, neg[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    d.q = qq, d.p = pp, d.neg_off = off, d.neg = neg;
    BatchItem it[4], it2[4];
    td_example_items(&d, 0, 1, 0, it, NULL);
    td_example_items(&d, 0, 1, 0, it2, NULL);
    TU_CHECK(!memcmp(it, it2, sizeof it), "sampling is a pure function of (seed, epoch, example)");
    TU_CHECK(it[0].b == 2 + 0, "positive first (got %lld)", (long long)it[0].b);
    int distinct = it[1].b != it[2].b && it[2].b != it[3].b && it[1].b != it[3].b;
    TU_CHECK(distinct, "G-1 distinct negatives from 6");
    for (int j = 1; j < 4; j++) TU_CHECK(it[j].b >= 2 + 2 && it[j].b <= 2 + 7, "negative from the row's list");
    td_example_items(&d, 1, 1, 0, it, NULL);
    for (int j = 1; j < 4; j++) TU_CHECK(it[j].b == 2 + 8 || it[j].b == 2 + 9, "short list repeated");
}

/* A batch of 3 pairs from short texts. */
static SeqStore test_seqs(const Tokenizer *t, BatchItem *items) {
    SeqStore s;
    seqs_init(&s);
    const char *txt[] = {"how do i list files", "ls lists directory contents", "cp copies files and directories",
                         "the kernel boots"};
    for (int i = 0; i < 4; i++) seqs_add_text(&s, t, txt[i], strlen(txt[i]));
    items[0] = (BatchItem){0, 1}, items[1] = (BatchItem){0, 2}, items[2] = (BatchItem){0, 3};
    return s;
}

static void test_export(const char *model, int new_head) {
    XrErr e;
    Encoder *m = encoder_load(tu_path(model), &e);
    Tokenizer *t = tok_load(tu_path(model), &e);
    TU_CHECK(m && t, "load %s: %s", model, e.msg);
    if (!m || !t) return;
    if (new_head) TU_CHECK(encoder_init_head(m, 1, 5, &e) == 0, "new head: %s", e.msg);
    BatchItem items[3];
    SeqStore s = test_seqs(t, items);
    BatchBuf bb;
    batch_buf_init(&bb);
    int64_t idx[3] = {0, 1, 2};
    const Batch *b = batch_fill(&bb, t, &s, items, idx, 3, 32);
    /* one real training step so the exported weights differ from the file's */
    float logits[3], dl[3], labels[3] = {1, 0, 0};
    EncoderTrainStep ts = {1, 0, NULL, 0};
    encoder_zero_grads(m);
    encoder_train_forward(m, b, &ts, logits);
    loss_bce_with_logits(logits, labels, 3, 1.0f, 1.0f, dl);
    encoder_train_backward(m, dl);
    AdamWConfig ac = adamw_defaults();
    AdamW *o = adamw_create(encoder_backend(m), 0, (size_t)encoder_num_params(m), &ac);
    adamw_step(o, encoder_params(m), encoder_grads(m), 1e-2);
    adamw_free(o);
    float want[3], got[3];
    encoder_forward_score(m, b, want);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/test_trainer_export_%d_%ld", XR_BUILD_DIR, new_head, (long)getpid());
    /* the base dir gives config + tokenizer files: the model's own (a bare model gets the seq-cls arch) */
    /* new_head: the export records a training length of 77 (tokenizer_config.json's model_max_length); the
     * other copies the tokenizer files as they are (512) */
    int max_len = new_head ? 77 : 0;
    TU_CHECK(trainer_export_hf(m, tu_path(model), dir, max_len, &e) == 0, "export: %s", e.msg);
    TU_CHECK(trainer_export_hf(m, tu_path(model), dir, max_len, &e) == 0, "export over an earlier export: %s", e.msg);
    Tokenizer *rt = tok_load(dir, &e);
    TU_CHECK(rt != NULL, "reload tokenizer of %s: %s", dir, e.msg);
    if (rt) {
        TU_CHECK(tok_model_max_length(rt) == (new_head ? 77 : tok_model_max_length(t)),
                 "exported model_max_length %d (base %d)", tok_model_max_length(rt), tok_model_max_length(t));
        tok_free(rt);
    }
    Encoder *r = encoder_load(dir, &e);
    TU_CHECK(r != NULL, "reload %s: %s", dir, e.msg);
    if (r) {
        TU_CHECK(encoder_config(r)->is_seq_cls && encoder_config(r)->num_labels == 1, "reloaded as seq-cls, 1 label");
        encoder_forward_score(r, b, got);
        double d = tu_check_close("exported model scores", got, want, 3, 1e-6);
        printf("export %s%s: reloaded scores max abs diff %.3g (%.4f %.4f %.4f)\n", model, new_head ? " + new head" : "",
               d, got[0], got[1], got[2]);
        encoder_free(r);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    TU_CHECK(system(cmd) == 0, "cleanup");
    batch_buf_free(&bb);
    seqs_free(&s);
    tok_free(t);
    encoder_free(m);
}

/* Two queries, hand-made candidates and retriever scores; base metrics computed by hand. */
static void test_eval(Comm *c) {
    XrErr e;
    Encoder *m = encoder_load(tu_path("fixtures/cli/bert_seqcls"), &e);
    Tokenizer *t = tok_load(tu_path("fixtures/cli/bert_seqcls"), &e);
    if (!m || !t) {
        TU_CHECK(0, "load: %s", e.msg);
        return;
    }
    EvalSet es;
    memset(&es, 0, sizeof es);
    seqs_init(&es.seqs);
    const char *q[] = {"list files", "copy files"};
    const char *p[] = {"ls lists files", "cp copies", "rm removes", "mv moves", "cat prints"};
    for (int i = 0; i < 2; i++) seqs_add_text(&es.seqs, t, q[i], strlen(q[i]));
    for (int i = 0; i < 5; i++) seqs_add_text(&es.seqs, t, p[i], strlen(p[i]));
    char *pid[5] = {"d0", "d1", "d2", "d3", "d4"};
    int64_t qrow[2] = {0, 1};
    /* q0: retrieved d2 (0.9) d0 (0.8, relevant) d3 (0.1); q1: retrieved d3 (0.7) d4 (0.5); d1 relevant, missed */
    int64_t cand_off[3] = {0, 3, 6}, cand[6] = {2, 0, 3, 3, 4, 1};
    float base[6] = {0.9f, 0.8f, 0.1f, 0.7f, 0.5f, NAN};
    uint8_t ret[6] = {1, 1, 1, 1, 1, 0};
    int64_t qrel_off[3] = {0, 1, 2}, qrel_p[2] = {0, 1};
    int32_t qrel_g[2] = {1, 1};
    es.nq = 2, es.qrow = qrow, es.cand_off = cand_off, es.cand = cand, es.base = base, es.retrieved = ret;
    es.qrel_off = qrel_off, es.qrel_p = qrel_p, es.qrel_g = qrel_g, es.num_queries = 2, es.num_passages = 5;
    es.pid = pid;
    EvalResult r = {0};
    TU_CHECK(eval_parse_specs("mrr@10,ndcg@10,map@100,recall@10", &r, &e) == 0, "%s", e.msg);
    TU_CHECK(eval_run(c, m, t, &es, 32, 2, &r, &e) == 0, "eval_run: %s", e.msg);
    /* base, realistic: q0 relevant at rank 2 (mrr 0.5, ndcg 1/log2(3), map 0.5, recall 1); q1 nothing (0) */
    double nd = 1.0 / log2(3.0);
    double want_base[4] = {0.25, nd / 2, 0.25, 0.5};
    for (int i = 0; i < 4; i++)
        TU_CHECK(fabs(r.base[i] - want_base[i]) < 1e-9, "base %s = %.6f, want %.6f", r.names[i], r.base[i], want_base[i]);
    /* base with all positives: q1's d1 is appended last (rank 3): mrr 1/3, ndcg 1/log2(4) = 0.5 */
    double want_all[4] = {(0.5 + 1.0 / 3) / 2, (nd + 0.5) / 2, (0.5 + 1.0 / 3) / 2, 1.0};
    for (int i = 0; i < 4; i++)
        TU_CHECK(fabs(r.base_all[i] - want_all[i]) < 1e-9, "base+pos %s = %.6f, want %.6f", r.names[i], r.base_all[i],
                 want_all[i]);
    /* reranked: recompute from the model's own scores */
    BatchItem items[6];
    for (int i = 0; i < 6; i++) items[i] = (BatchItem){i < 3 ? 0 : 1, 2 + cand[i]};
    BatchBuf bb;
    batch_buf_init(&bb);
    int64_t idx[6] = {0, 1, 2, 3, 4, 5};
    float sc[6];
    encoder_forward_score(m, batch_fill(&bb, t, &es.seqs, items, idx, 6, 32), sc);
    MetricsJudgment j0 = {"d0", 1}, j1 = {"d1", 1};
    MetricsHit h0[3], h1[3];
    for (int i = 0; i < 3; i++) h0[i] = (MetricsHit){pid[cand[i]], sc[i]}, h1[i] = (MetricsHit){pid[cand[3 + i]], sc[3 + i]};
    double m0[4], m1[4];
    metrics_query(h0, 3, &j0, 1, r.specs, 4, m0, &e);
    metrics_query(h1, 3, &j1, 1, r.specs, 4, m1, &e);
    for (int i = 0; i < 4; i++) {
        TU_CHECK(fabs(r.rerank[i] - m0[i] / 2) < 1e-9, "reranked %s %.6f, want %.6f", r.names[i], r.rerank[i], m0[i] / 2);
        TU_CHECK(fabs(r.rerank_all[i] - (m0[i] + m1[i]) / 2) < 1e-9, "reranked+pos %s %.6f, want %.6f", r.names[i],
                 r.rerank_all[i], (m0[i] + m1[i]) / 2);
    }
    TU_CHECK(fabs(eval_metric(&r, "ndcg@10", 0) - r.rerank[1]) < 1e-12, "eval_metric by name");
    printf("eval: base mrr %.4f ndcg %.4f, reranked mrr %.4f, +pos base mrr %.4f reranked %.4f\n", r.base[0],
           r.base[1], r.rerank[0], r.base_all[0], r.rerank_all[0]);
    batch_buf_free(&bb);
    seqs_free(&es.seqs);
    tok_free(t);
    encoder_free(m);
}

int main(int argc, char **argv) {
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "--compare")) {
        g_zero_grad_extra = argc == 6 ? argv[5] : NULL;
        return compare_files(argv[2], argv[3], atof(argv[4]));
    }
    Comm *c = comm_init(&argc, &argv);
    test_order();
    test_export("fixtures/cli/bert_seqcls", 0);
    test_export("fixtures/cli/bert_st", 1);
    test_eval(c);
    comm_finalize(c);
    return tu_finish("test_trainer");
}
