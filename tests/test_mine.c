/* test_mine.c: the mining pipeline in one process. The group file (round trip, every validation rule, a file
 * damaged to point outside its store, a file checked against another dataset); the embedding cache (rows
 * written in pieces, shape checks, key sensitivity); batch_run against one-sequence forwards; then mine_run on
 * the BEIR fixture and on a set with exact duplicates, against a brute-force reference written here (every row
 * embedded alone, every query scored against every distinct passage, sorted, select_query on the result), for
 * several option sets, with and without a cross-encoder (whose scores are checked against one-pair forwards);
 * and the bad inputs: a store of another tokenizer, num_negatives beyond the window. */
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "comm.h"
#include "dataset.h"
#include "embcache.h"
#include "groups.h"
#include "h5store.h"
#include "knn.h"
#include "mine.h"
#include "model.h"
#include "ops.h"
#include "select.h"
#include "testutil.h"
#include "textread.h"
#include "tokenizer.h"

static char g_tmp[256];

static char *tmp_path(const char *name) { return xr_path_join(g_tmp, name); }

/* Remove a directory of plain files. */
static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *p = xr_path_join(dir, de->d_name);
        unlink(p);
        free(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

/* ---- group file ---- */

static void fill_groups(GroupSet *g, int64_t n, int k, int ce) {
    memset(g, 0, sizeof *g);
    g->n = n;
    g->k = k;
    g->query = xr_malloc(sizeof(int64_t) * (size_t)n);
    g->positive = xr_malloc(sizeof(int64_t) * (size_t)n);
    g->negatives = xr_malloc(sizeof(int64_t) * (size_t)(n * k));
    g->scores = xr_malloc(sizeof(float) * (size_t)(n * (k + 1)));
    if (ce) g->ce_scores = xr_malloc(sizeof(float) * (size_t)(n * (k + 1)));
    for (int64_t i = 0; i < n; i++) {
        g->query[i] = i / 2;
        g->positive[i] = 3 * i;
        for (int j = 0; j < k; j++) g->negatives[i * k + j] = (i % 3 == 2 && j == k - 1) ? -1 : 7 * i + j;
        for (int j = 0; j <= k; j++) {
            g->scores[i * (k + 1) + j] = 1.0f / (float)(1 + i + j);
            if (ce) g->ce_scores[i * (k + 1) + j] = -0.5f * (float)(i + j);
        }
    }
    g->num_queries = n;
    g->num_passages = 10 * n;
    snprintf(g->tokenizer_fingerprint, sizeof g->tokenizer_fingerprint, "0123456789abcdef");
    snprintf(g->dataset, sizeof g->dataset, "/somewhere/ds");
    g->meta_json = xr_strdup("{\"model\": \"m\"}");
}

static void test_groups(void) {
    XrErr e;
    char *path = tmp_path("g.h5");
    for (int ce = 0; ce < 2; ce++) {
        GroupSet g, r;
        fill_groups(&g, 9, 4, ce);
        TU_CHECK(groups_write(path, &g, &e) == 0, "write: %s", e.msg);
        TU_CHECK(groups_read(path, &r, &e) == 0, "read: %s", e.msg);
        TU_CHECK(r.n == g.n && r.k == g.k && r.num_queries == g.num_queries && r.num_passages == g.num_passages,
                 "sizes %lld %d", (long long)r.n, r.k);
        TU_CHECK(r.n == g.n && !memcmp(r.negatives, g.negatives, sizeof(int64_t) * 36) &&
                     !memcmp(r.query, g.query, sizeof(int64_t) * 9) && !memcmp(r.positive, g.positive, 72) &&
                     !memcmp(r.scores, g.scores, sizeof(float) * 45),
                 "round trip differs");
        TU_CHECK((r.ce_scores != NULL) == ce && (!ce || !memcmp(r.ce_scores, g.ce_scores, sizeof(float) * 45)),
                 "ce scores round trip");
        TU_CHECK(r.meta_json && !strcmp(r.meta_json, g.meta_json), "meta %s", r.meta_json ? r.meta_json : "(null)");
        TU_CHECK(groups_row_negatives(&r, 2) == 3 && groups_row_negatives(&r, 0) == 4, "row negatives");
        TU_CHECK(groups_check_dataset(&r, path, 9, 90, "0123456789abcdef", &e) == 0, "check: %s", e.msg);
        TU_CHECK(groups_check_dataset(&r, path, 9, 80, "0123456789abcdef", &e) < 0 &&
                     strstr(e.msg, "its indices would point at other rows"),
                 "another dataset: %s", e.msg);
        TU_CHECK(groups_check_dataset(&r, path, 9, 90, "fedcba9876543210", &e) < 0 && strstr(e.msg, "tokenizer"),
                 "another tokenizer: %s", e.msg);
        groups_free(&r);
        groups_free(&g);
    }
    /* validation on write */
    GroupSet g;
    fill_groups(&g, 6, 3, 0);
    g.negatives[4] = 60;
    TU_CHECK(groups_write(path, &g, &e) < 0 && strstr(e.msg, "row 1: negative 1 = 60 is outside the passage store"),
             "negative outside: %s", e.msg);
    g.negatives[4] = 8;
    g.query[5] = 6;
    TU_CHECK(groups_write(path, &g, &e) < 0 && strstr(e.msg, "row 5: query 6 is outside the query store"),
             "query outside: %s", e.msg);
    g.query[5] = 2;
    g.negatives[3] = -1;
    TU_CHECK(groups_write(path, &g, &e) < 0 && strstr(e.msg, "filled after an empty slot"), "hole: %s", e.msg);
    g.negatives[3] = 7;
    TU_CHECK(groups_write(path, &g, &e) == 0, "valid again: %s", e.msg);
    groups_free(&g);
    /* a file damaged afterwards: a negative pointing past the store */
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "negatives", H5P_DEFAULT);
    int64_t bad[18];
    H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, bad);
    bad[13] = 1000;
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, bad);
    H5Dclose(d);
    H5Fclose(f);
    GroupSet r;
    /* its checksum record no longer matches: refused before libhdf5 reads it */
    TU_CHECK(groups_read(path, &r, &e) < 0 && strstr(e.msg, path) && strstr(e.msg, ": damaged: "),
             "changed file: %s", e.msg);
    /* sealed again (as a writer bug would leave it): the structural checks find the bad index */
    TU_CHECK(h5_seal(path, &e) == 0, "seal: %s", e.msg);
    TU_CHECK(groups_read(path, &r, &e) < 0 &&
                 strstr(e.msg, "row 4: negative 1 = 1000 is outside the passage store (60 rows)"),
             "damaged file: %s", e.msg);
    /* not a group file */
    char *other = tmp_path("not_groups.h5");
    hid_t o = H5Fcreate(other, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(o);
    TU_CHECK(groups_read(other, &r, &e) < 0 && strstr(e.msg, "not an xrank group file"), "other file: %s", e.msg);
    free(other);
    free(path);
}

/* ---- embedding cache ---- */

static void test_embcache(void) {
    XrErr e;
    EmbKey k = {1, 2, "passages", "", "mean", 1, 256, "fp32-cpu"};
    uint64_t base = embcache_key(&k);
    EmbKey k2 = k;
    k2.prompt = "query: ";
    TU_CHECK(embcache_key(&k2) != base, "prompt not in the key");
    k2 = k, k2.pooling = "cls";
    TU_CHECK(embcache_key(&k2) != base, "pooling not in the key");
    k2 = k, k2.store_fp = 3;
    TU_CHECK(embcache_key(&k2) != base, "store not in the key");
    k2 = k, k2.max_len = 128;
    TU_CHECK(embcache_key(&k2) != base, "max length not in the key");
    char *path = embcache_path(g_tmp, &k);
    unlink(path);
    TU_CHECK(embcache_lookup(path, 10, 3, &e) == 0, "lookup of a missing file");
    float rows[30], back[30];
    for (int i = 0; i < 30; i++) rows[i] = (float)i * 0.25f - 3.0f;
    TU_CHECK(embcache_create(path, 10, 3, &e) == 0, "create: %s", e.msg);
    TU_CHECK(embcache_lookup(path, 10, 3, &e) == 0, "a file being written is not a hit");
    TU_CHECK(embcache_write_rows(path, 10, 3, 4, 10, rows + 12, &e) == 0, "write: %s", e.msg);
    TU_CHECK(embcache_write_rows(path, 10, 3, 0, 4, rows, &e) == 0, "write: %s", e.msg);
    TU_CHECK(embcache_write_rows(path, 10, 3, 8, 11, rows, &e) < 0, "rows past the end accepted");
    TU_CHECK(embcache_commit(path, "{}\n", &e) == 0, "commit: %s", e.msg);
    TU_CHECK(embcache_lookup(path, 10, 3, &e) == 1, "lookup after commit");
    TU_CHECK(embcache_lookup(path, 11, 3, &e) == 0 && strstr(e.msg, "will be replaced"), "other shape: %s", e.msg);
    TU_CHECK(embcache_read_rows(path, 10, 3, 0, 10, back, &e) == 0 && !memcmp(back, rows, sizeof rows),
             "rows read back differ");
    /* numpy reads it: the header is a valid .npy v1 header aligned to 64 bytes */
    FILE *f = fopen(path, "rb");
    unsigned char h[10];
    TU_CHECK(f && fread(h, 1, 10, f) == 10 && h[0] == 0x93 && !memcmp(h + 1, "NUMPY", 5) && (10 + h[8]) % 64 == 0,
             "npy header");
    if (f) fclose(f);
    uint64_t fp1, fp2;
    TU_CHECK(embcache_model_fingerprint(tu_path("fixtures/cli/bert_st"), &fp1, &e) == 0, "fp: %s", e.msg);
    TU_CHECK(embcache_model_fingerprint(tu_path("fixtures/cli/bert_seqcls"), &fp2, &e) == 0 && fp1 != fp2,
             "two models, one fingerprint");
    free(path);
}

/* ---- batch_run against one-sequence forwards ---- */

typedef struct {
    Encoder *m;
    PoolingMode pool;
} EmbCtx;

static void emb_fwd(void *ctx, const Batch *b, float *out) {
    EmbCtx *c = ctx;
    encoder_forward_embed(c->m, b, c->pool, 1, out);
}

/* The embedding of one token row, prompt-free, computed alone (B = 1, no padding). */
static void embed_alone(Encoder *m, const Tokenizer *t, const int32_t *ids, int n, int max_len, PoolingMode pool,
                        float *out) {
    int32_t *row = xr_malloc(sizeof(int32_t) * (size_t)(n + 8)), *ty = xr_malloc(sizeof(int32_t) * (size_t)(n + 8));
    int len = tok_single(t, ids, n, max_len, row, ty);
    int32_t *mask = xr_malloc(sizeof(int32_t) * (size_t)len);
    for (int i = 0; i < len; i++) mask[i] = 1;
    Batch b = {1, len, row, ty, mask};
    encoder_forward_embed(m, &b, pool, 1, out);
    free(row);
    free(ty);
    free(mask);
}

static void test_batch_run(Encoder *m, const Tokenizer *t) {
    SeqStore s;
    seqs_init(&s);
    const char *texts[] = {"a", "the quick brown fox jumps over the lazy dog", "", "hello world", "x y z w v u t s r q",
                           "one more text with several words in it and then some", "short"};
    int n = (int)(sizeof texts / sizeof *texts);
    BatchItem items[7];
    for (int i = 0; i < n; i++) items[i] = (BatchItem){seqs_add_text(&s, t, texts[i], strlen(texts[i])), -1};
    int H = encoder_config(m)->hidden;
    float *out = xr_malloc(sizeof(float) * (size_t)(n * H)), *one = xr_malloc(sizeof(float) * (size_t)H);
    EmbCtx c = {m, POOL_MEAN};
    BatchRunStats st;
    batch_run(t, &s, items, n, 12, 3, 5, emb_fwd, &c, H, out, &st, NULL, NULL);
    TU_CHECK(st.items == n && st.batches == 3, "plan: %lld items, %lld batches", (long long)st.items,
             (long long)st.batches);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        embed_alone(m, t, s.tok + s.off[i], (int)seqs_len(&s, i), 12, POOL_MEAN, one);
        for (int j = 0; j < H; j++) worst = fmax(worst, fabs(out[i * H + j] - one[j]));
    }
    TU_CHECK(worst <= 1e-6, "batched embeddings differ from one-row forwards by %g", worst);
    free(out);
    free(one);
    seqs_free(&s);
}

/* ---- mine_run against a brute-force reference ---- */

static int build_dataset(const char *beir, const char *model_dir, const char *out) {
    XrErr e;
    Tokenizer *t = tok_load(model_dir, &e);
    if (!t) return fprintf(stderr, "%s\n", e.msg), -1;
    TrOptions to = {0};
    TextSet ts;
    const char *in[1] = {beir};
    if (tr_read(in, 1, &to, &ts, &e)) return fprintf(stderr, "%s\n", e.msg), -1;
    DsOptions o = {0};
    o.overwrite = 1;
    o.threads = 1;
    DsReport rep;
    int rc = ds_build(&ts, t, &o, out, &rep, &e);
    if (rc) fprintf(stderr, "ds_build: %s\n", e.msg);
    textset_free(&ts);
    tok_free(t);
    return rc;
}

static float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Score one (query, passage) pair alone with the cross-encoder. */
static float ce_alone(Encoder *ce, const Tokenizer *t, const TokBatch *q, int64_t qi, const TokBatch *p, int64_t pi,
                      int max_len) {
    int na = (int)(q->offsets[qi + 1] - q->offsets[qi]), nb = (int)(p->offsets[pi + 1] - p->offsets[pi]);
    int32_t *row = xr_malloc(sizeof(int32_t) * (size_t)(na + nb + 8));
    int32_t *ty = xr_malloc(sizeof(int32_t) * (size_t)(na + nb + 8));
    int len = tok_pair(t, q->tokens + q->offsets[qi], na, p->tokens + p->offsets[pi], nb, max_len, row, ty);
    int32_t *mask = xr_malloc(sizeof(int32_t) * (size_t)len);
    for (int i = 0; i < len; i++) mask[i] = 1;
    Batch b = {1, len, row, ty, mask};
    float logit;
    encoder_forward_score(ce, &b, &logit);
    free(row);
    free(ty);
    free(mask);
    return sigmoidf_(logit);
}

/* The expected groups: every row embedded alone, exact scores against every distinct passage, sorted, selected. */
static void reference_mine(const MineOpts *o, Encoder *ce, const Tokenizer *t, GroupSet *want, SelectStats *wst) {
    XrErr e;
    DsIndex ix;
    ds_read_index(o->dataset, &ix, &e);
    TokenStore *qs = h5store_open(o->dataset, "queries", &e), *ps = h5store_open(o->dataset, "passages", &e);
    TokBatch q = {0}, p = {0};
    h5store_load(qs, &q, &e);
    h5store_load(ps, &p, &e);
    int64_t nq = q.n, np = p.n;
    int H = encoder_config(o->bi)->hidden;
    float *qe = xr_malloc(sizeof(float) * (size_t)(nq * H)), *pe = xr_malloc(sizeof(float) * (size_t)(np * H));
    for (int64_t i = 0; i < nq; i++)
        embed_alone(o->bi, t, q.tokens + q.offsets[i], (int)(q.offsets[i + 1] - q.offsets[i]), o->max_len, o->pooling,
                    qe + i * H);
    for (int64_t i = 0; i < np; i++)
        embed_alone(o->bi, t, p.tokens + p.offsets[i], (int)(p.offsets[i + 1] - p.offsets[i]), o->max_len, o->pooling,
                    pe + i * H);
    /* duplicates by plain comparison */
    int64_t *canon = xr_malloc(sizeof(int64_t) * (size_t)np);
    for (int64_t i = 0; i < np; i++) {
        canon[i] = i;
        for (int64_t j = 0; j < i; j++) {
            int64_t li = p.offsets[i + 1] - p.offsets[i], lj = p.offsets[j + 1] - p.offsets[j];
            if (canon[j] == j && li == lj &&
                !memcmp(p.tokens + p.offsets[i], p.tokens + p.offsets[j], sizeof(int32_t) * (size_t)li)) {
                canon[i] = j;
                break;
            }
        }
    }
    /* positives */
    int64_t **pos = xr_calloc((size_t)nq, sizeof(int64_t *));
    int *npos = xr_calloc((size_t)nq, sizeof(int));
    int maxp = 0;
    for (int64_t r = 0; r < ix.nqrels; r++) {
        if (ix.qrel_grade[r] <= 0) continue;
        int64_t qq = ix.qrel_query[r], pp = ix.qrel_passage[r];
        int dup = 0;
        for (int u = 0; u < npos[qq]; u++) dup |= canon[pos[qq][u]] == canon[pp];
        if (dup) continue;
        pos[qq] = xr_realloc(pos[qq], sizeof(int64_t) * (size_t)(npos[qq] + 1));
        pos[qq][npos[qq]++] = pp;
        if (npos[qq] > maxp) maxp = npos[qq];
    }
    SelectOpts so = o->sel;
    so.max_positives = maxp;
    if (so.style == SELECT_STYLE_FLAG && o->fill_from_corpus) so.fill_from_corpus = np;
    select_resolve(&so, ce != NULL, &e);
    int K = so.num_negatives;
    size_t nc = select_candidate_count(&so);
    memset(want, 0, sizeof *want);
    want->k = K;
    want->query = xr_malloc(sizeof(int64_t) * (size_t)(ix.nqrels + 1));
    want->positive = xr_malloc(sizeof(int64_t) * (size_t)(ix.nqrels + 1));
    want->negatives = xr_malloc(sizeof(int64_t) * (size_t)(ix.nqrels + 1) * K);
    want->scores = xr_malloc(sizeof(float) * (size_t)(ix.nqrels + 1) * (K + 1));
    if (ce) want->ce_scores = xr_malloc(sizeof(float) * (size_t)(ix.nqrels + 1) * (K + 1));
    memset(wst, 0, sizeof *wst);
    TuPair *all = xr_malloc(sizeof(TuPair) * (size_t)np);
    int64_t *ci = xr_malloc(sizeof(int64_t) * nc);
    float *cs = xr_malloc(sizeof(float) * nc), *cc = xr_malloc(sizeof(float) * nc);
    float ps_[16], pc_[16], ns[64];
    int64_t ni[64];
    for (int64_t qq = 0; qq < nq; qq++) {
        if (!npos[qq]) continue;
        int64_t na = 0;
        for (int64_t j = 0; j < np; j++)
            if (canon[j] == j) all[na++] = (TuPair){knn_score(qe + qq * H, pe + j * H, (size_t)H), j};
        qsort(all, (size_t)na, sizeof(TuPair), tu_pair_order);
        for (size_t j = 0; j < nc; j++) {
            ci[j] = (int64_t)j < na ? all[j].i : -1;
            cs[j] = (int64_t)j < na ? all[j].s : -INFINITY;
            cc[j] = ce && ci[j] >= 0 ? ce_alone(ce, t, &q, qq, &p, ci[j], o->ce_max_len) : NAN;
        }
        for (int u = 0; u < npos[qq]; u++) {
            ps_[u] = knn_score(qe + qq * H, pe + canon[pos[qq][u]] * H, (size_t)H);
            if (ce) pc_[u] = ce_alone(ce, t, &q, qq, &p, pos[qq][u], o->ce_max_len);
        }
        /* both styles: passages with the query's tokens are excluded */
        int64_t ex[8];
        size_t nex = 0;
        {
            int64_t lq = q.offsets[qq + 1] - q.offsets[qq];
            for (int64_t j = 0; j < np && nex < 8; j++)
                if (canon[j] == j && p.offsets[j + 1] - p.offsets[j] == lq &&
                    !memcmp(p.tokens + p.offsets[j], q.tokens + q.offsets[qq], sizeof(int32_t) * (size_t)lq))
                    ex[nex++] = j;
        }
        SelectQuery sq = {(uint64_t)qq, ci, ce ? cc : cs, ce ? cc : NULL, nc, pos[qq], ce ? pc_ : ps_,
                          (size_t)npos[qq], ex, nex};
        int got = select_query(&so, &sq, select_canon_array, canon, ni, ns, wst);
        for (int u = 0; u < npos[qq]; u++, want->n++) {
            int64_t r = want->n;
            want->query[r] = qq;
            want->positive[r] = pos[qq][u];
            want->scores[r * (K + 1)] = ps_[u];
            if (ce) want->ce_scores[r * (K + 1)] = pc_[u];
            for (int j = 0; j < K; j++) {
                want->negatives[r * K + j] = j < got ? ni[j] : -1;
                float rs = NAN, cv = NAN;
                for (size_t x = 0; x < nc && j < got; x++)
                    if (ci[x] == ni[j]) rs = cs[x], cv = cc[x];
                want->scores[r * (K + 1) + 1 + j] = rs;
                if (ce) want->ce_scores[r * (K + 1) + 1 + j] = cv;
            }
        }
    }
    for (int64_t i = 0; i < nq; i++) free(pos[i]);
    free(pos);
    free(npos);
    free(all);
    free(ci);
    free(cs);
    free(cc);
    free(canon);
    free(qe);
    free(pe);
    tokbatch_free(&q);
    tokbatch_free(&p);
    h5store_close(qs);
    h5store_close(ps);
    ds_index_free(&ix);
}

/* The reference embeds every text alone (one row per forward), the miner in packed batches: BLAS kernels may
 * round a row differently by its place in the batch (OpenBLAS picks per-CPU kernels whose edge tiles sum in
 * another order; test_batch_run bounds the embeddings' difference by 1e-6), so the retriever's scores of the
 * same pair agree within a few ulps of 1, not bit for bit. The ids and their order must agree exactly. */
#define RETRIEVER_SCORE_TOL 2e-6
static int same_float(float a, float b) {
    return (isnan(a) && isnan(b)) || a == b || (isfinite(a) && isfinite(b) && fabs((double)a - b) <= RETRIEVER_SCORE_TOL);
}

static void compare_groups(const char *what, const GroupSet *got, const GroupSet *want, double ce_tol) {
    TU_CHECK(got->n == want->n && got->k == want->k, "%s: %lld rows x %d, want %lld x %d", what, (long long)got->n,
             got->k, (long long)want->n, want->k);
    if (got->n != want->n || got->k != want->k) return;
    int K = got->k, bad = 0;
    double ce_worst = 0;
    for (int64_t r = 0; r < got->n && bad < 3; r++) {
        int row_ok = got->query[r] == want->query[r] && got->positive[r] == want->positive[r] &&
                     !memcmp(got->negatives + r * K, want->negatives + r * K, sizeof(int64_t) * K);
        for (int j = 0; j <= K; j++) row_ok &= same_float(got->scores[r * (K + 1) + j], want->scores[r * (K + 1) + j]);
        if (want->ce_scores)
            for (int j = 0; j <= K; j++) {
                float a = got->ce_scores[r * (K + 1) + j], b = want->ce_scores[r * (K + 1) + j];
                if (isnan(a) != isnan(b)) row_ok = 0;
                else if (!isnan(a)) ce_worst = fmax(ce_worst, fabs(a - b));
            }
        if (!row_ok) {
            bad++;
            fprintf(stderr, "%s: row %lld: query %lld/%lld positive %lld/%lld negatives", what, (long long)r,
                    (long long)got->query[r], (long long)want->query[r], (long long)got->positive[r],
                    (long long)want->positive[r]);
            for (int j = 0; j < K; j++)
                fprintf(stderr, " %lld/%lld(%.7g/%.7g)", (long long)got->negatives[r * K + j],
                        (long long)want->negatives[r * K + j], got->scores[r * (K + 1) + 1 + j],
                        want->scores[r * (K + 1) + 1 + j]);
            fprintf(stderr, "\n");
        }
    }
    TU_CHECK(bad == 0, "%s: mined rows differ from the brute-force reference", what);
    TU_CHECK(ce_worst <= ce_tol, "%s: cross-encoder scores differ from one-pair forwards by %g", what, ce_worst);
    TU_CHECK((got->ce_scores != NULL) == (want->ce_scores != NULL), "%s: cross-encoder scores present", what);
}

typedef struct {
    const char *name;
    void (*set)(MineOpts *o);
    int ce;
} Case;

static void set_default(MineOpts *o) { (void)o; }
static void set_margin_random(MineOpts *o) {
    o->sel.num_negatives = 4;
    o->sel.relative_margin = 0.002;
    o->sel.sampling = SELECT_SAMPLE_RANDOM;
    o->sel.seed = 7;
}
static void set_range(MineOpts *o) {
    o->sel.num_negatives = 2;
    o->sel.range_min = 3;
    o->sel.range_max = 9;
    o->sel.max_score = 0.999;
    o->sel.min_score = 0.95;
    o->query_block = 2;
    o->knn.passage_tile = 7;
}
static void set_flag(MineOpts *o) {
    select_opts_flag_default(&o->sel);
    o->sel.num_negatives = 5;
    o->sel.range_min = 0; /* the query-text passage of the duplicates set ranks first: it must be excluded */
    o->sel.range_max = 12;
    o->fill_from_corpus = 1;
}
/* the device search driver (knn_device.h) on the CPU backend's ops: the path --device cuda takes, streamed in
 * tiles of 7 passages under a tiny memory bound, with a relative margin and random sampling on top */
static Backend *g_search_be;
static void set_device_search(MineOpts *o) {
    o->sel.num_negatives = 3;
    o->sel.relative_margin = 0.01;
    o->sel.sampling = SELECT_SAMPLE_RANDOM;
    o->query_block = 4;
    o->search_be = g_search_be;
    o->knn_dev.passage_tile = 7;
    o->knn_dev.mem_limit = 6000;
    o->knn_dev.guard = 0;
}
static void set_ce(MineOpts *o) {
    o->sel.num_negatives = 3;
    o->sel.absolute_margin = 0.0;
    o->sel.ce_max_score = 0.47;
    o->ce_batch_size = 3;
}

static void test_mine_cases(Comm *c, Encoder *bi, Encoder *ce, const Tokenizer *t, const char *ds, const char *tag) {
    static const Case cases[] = {{"default", set_default, 0},
                                 {"relative margin + random", set_margin_random, 0},
                                 {"range + max/min score + small blocks", set_range, 0},
                                 {"flagembedding + fill", set_flag, 0},
                                 {"device search driver (CPU backend, streamed)", set_device_search, 0},
                                 {"cross-encoder", set_ce, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        MineOpts o;
        mine_opts_default(&o);
        o.dataset = ds;
        o.bi = bi;
        o.tok = t;
        o.max_len = 24;
        o.batch_size = 3;
        o.bucket_batches = 2;
        o.eval_depth = 10;
        cases[i].set(&o);
        if (cases[i].ce) {
            o.ce = ce;
            o.ce_tok = t;
            o.ce_max_len = 40;
        }
        MineResult r;
        XrErr e;
        char what[128];
        snprintf(what, sizeof what, "%s: %s", tag, cases[i].name);
        int rc = mine_run(c, &o, &r, &e);
        TU_CHECK(rc == 0, "%s: %s", what, e.msg);
        if (rc) continue;
        GroupSet want;
        SelectStats wst;
        reference_mine(&o, o.ce, t, &want, &wst);
        compare_groups(what, &r.groups, &want, 2e-6);
        TU_CHECK(!memcmp(&r.stats, &wst, sizeof wst), "%s: skip counts differ (picked %lld vs %lld)", what,
                 (long long)r.stats.negatives, (long long)wst.negatives);
        TU_CHECK(r.have_metrics && r.mrr10 > 0 && r.recall_depth > 0, "%s: metrics", what);
        TU_CHECK(r.nranks == comm_size(c) && r.rank_rss_kib && r.rank_rss_kib[0] > 0 &&
                     (o.search_be != NULL) == (r.rank_search_bytes[0] > 0) &&
                     (o.search_be == NULL ||
                      (r.rank_search_bytes[0] <= 6000 && (strcmp(tag, "beir") || !r.rank_resident[0]))),
                 "%s: memory per rank (search %lld bytes, resident %d)", what,
                 r.rank_search_bytes ? (long long)r.rank_search_bytes[0] : -1LL,
                 r.rank_resident ? r.rank_resident[0] : -1);
        if (!strcmp(tag, "duplicates")) {
            TU_CHECK(r.duplicate_passages == 3, "%s: %lld duplicates, want 3", what, (long long)r.duplicate_passages);
            /* both styles: the passage equal to the query ranks first and is excluded */
            TU_CHECK(r.stats.excluded == 1, "%s: %lld query-text passages excluded, want 1", what,
                     (long long)r.stats.excluded);
        }
        groups_free(&want);
        mine_result_free(&r);
    }
}

static void test_mine_errors(Comm *c, Encoder *bi, const Tokenizer *t, const char *ds, const char *other_ds) {
    MineOpts o;
    mine_opts_default(&o);
    o.dataset = other_ds;
    o.bi = bi;
    o.tok = t;
    o.max_len = 24;
    MineResult r;
    XrErr e;
    TU_CHECK(mine_run(c, &o, &r, &e) < 0 && strstr(e.msg, "was tokenized with another tokenizer"),
             "fingerprint mismatch: %s", e.msg);
    o.dataset = ds;
    o.sel.num_negatives = 5;
    o.sel.range_max = 4;
    TU_CHECK(mine_run(c, &o, &r, &e) < 0 && strstr(e.msg, "cannot mine 5 negatives per query"), "window: %s", e.msg);
    select_opts_flag_default(&o.sel);
    o.sel.range_min = 2;
    o.sel.range_max = 2;
    TU_CHECK(mine_run(c, &o, &r, &e) < 0 && strstr(e.msg, "range_min must be smaller than range_max"), "range: %s",
             e.msg);
}

static void test_cache_reuse(Comm *c, Encoder *bi, const Tokenizer *t, const char *ds) {
    MineOpts o;
    mine_opts_default(&o);
    o.dataset = ds;
    o.bi = bi;
    o.tok = t;
    o.max_len = 24;
    char name[64];
    snprintf(name, sizeof name, "cache.%ld", (long)getpid());
    char *cache = tmp_path(name);
    o.cache_dir = cache;
    o.model_fp = 42;
    MineResult a, b, d;
    XrErr e;
    TU_CHECK(mine_run(c, &o, &a, &e) == 0 && !a.cache_hit[0] && !a.cache_hit[1] && a.embedded[1] > 0, "first run: %s",
             e.msg);
    TU_CHECK(mine_run(c, &o, &b, &e) == 0 && b.cache_hit[0] && b.cache_hit[1] && b.embedded[1] == 0,
             "second run did not hit the cache");
    TU_CHECK(a.groups.n == b.groups.n &&
                 !memcmp(a.groups.negatives, b.groups.negatives, sizeof(int64_t) * (size_t)(a.groups.n * a.groups.k)) &&
                 !memcmp(a.groups.scores, b.groups.scores, sizeof(float) * (size_t)(a.groups.n * (a.groups.k + 1))),
             "cached embeddings mine differently");
    o.query_prompt = "query: ";
    TU_CHECK(mine_run(c, &o, &d, &e) == 0 && !d.cache_hit[0] && d.cache_hit[1], "a new prompt must re-embed queries");
    mine_result_free(&a);
    mine_result_free(&b);
    mine_result_free(&d);
    remove_dir(cache);
    free(cache);
}

int main(int argc, char **argv) {
    Comm *c = comm_init(&argc, &argv);
    snprintf(g_tmp, sizeof g_tmp, "%s/test_mine.tmp", XR_BUILD_DIR);
    mkdir(g_tmp, 0755);
    test_groups();
    test_embcache();
    XrErr e;
    const char *bi_dir = tu_path("fixtures/cli/bert_st");
    Encoder *bi = encoder_load(bi_dir, &e);
    Tokenizer *t = bi ? tok_load(bi_dir, &e) : NULL;
    Encoder *ce = t ? encoder_load(tu_path("fixtures/cli/bert_seqcls"), &e) : NULL;
    if (!ce) {
        fprintf(stderr, "cannot load the test models: %s\n", e.msg);
        return 1;
    }
    encoder_set_threads(bi, 1);
    encoder_set_threads(ce, 1);
    test_batch_run(bi, t);
    g_search_be = ops_backend_cpu(1);
    char *beir = tmp_path("beir_ds"), *dup = tmp_path("dup_ds"), *other = tmp_path("other_tok_ds");
    int ok = build_dataset(tu_path("fixtures/h5/beir"), bi_dir, beir) == 0 &&
             build_dataset(tu_path("fixtures/mine/dup"), bi_dir, dup) == 0 &&
             build_dataset(tu_path("fixtures/mine/dup"), tu_path("fixtures/tok/bert"), other) == 0;
    TU_CHECK(ok, "building the test datasets");
    if (ok) {
        test_mine_cases(c, bi, ce, t, beir, "beir");
        test_mine_cases(c, bi, ce, t, dup, "duplicates");
        test_mine_errors(c, bi, t, dup, other);
        test_cache_reuse(c, bi, t, dup);
    }
    ops_backend_free(g_search_be);
    free(beir);
    free(dup);
    free(other);
    encoder_free(bi);
    encoder_free(ce);
    tok_free(t);
    comm_finalize(c);
    return tu_finish("test_mine");
}
