/* gradsync.c: buckets of the flat gradient reduced while the backward runs, ZeRO-1 shards and the optimizer step
 * (see gradsync.h). */
#include "gradsync.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t lo, hi;  /* [lo, hi) of the flat buffer */
    CommReq *req;   /* in flight */
    int issued;
    double t_start, t_done; /* started; completion as first seen (a poll or the final wait) */
} GsBucket;

struct GradSync {
    Comm *c;
    Encoder *m;
    Backend *be;
    GsOpts o;
    int R, rank;
    size_t n, shard_lo, shard_hi;
    size_t *shard_counts; /* [R] */
    size_t *part;         /* [R] scratch: a bucket's intersection with each shard */
    GsBucket *b;          /* backward order: b[0] holds the highest offsets */
    int nb, next;         /* buckets; the next one to start */
    int armed;
    AdamW *opt;
    double exposed_s, hidden_s, inflight_s; /* gsync_times */
    /* sparse word-embedding exchange (sp_rows 0: off) */
    size_t sp_off, sp_rows, sp_width;
    uint8_t *sp_touched;  /* [sp_rows] this step's rows on this rank */
    float *sp_pack;       /* packed rows */
    size_t sp_cap;
    int64_t sp_total, sp_steps;
};

static int gs_tensor_desc(const void *a, const void *b) {
    const EncoderTensor *x = *(const EncoderTensor *const *)a, *y = *(const EncoderTensor *const *)b;
    return x->offset < y->offset ? 1 : x->offset > y->offset ? -1 : 0;
}

/* Buckets of whole tensors, from the end of the buffer down: a bucket closes once it holds bucket_mb (a larger
 * tensor is a bucket of its own). Views that do not tile the buffer fall back to one bucket. */
static void gs_make_buckets(GradSync *g) {
    int nt = encoder_num_tensors(g->m);
    const EncoderTensor **t = xr_malloc(sizeof *t * (size_t)(nt ? nt : 1));
    for (int i = 0; i < nt; i++) t[i] = encoder_tensor(g->m, i);
    qsort(t, (size_t)nt, sizeof *t, gs_tensor_desc);
    size_t cap = g->o.bucket_mb > 0 ? (size_t)(g->o.bucket_mb * 1048576.0 / sizeof(float)) : g->n;
    if (cap < 1) cap = 1;
    int tiled = nt > 0 && t[0]->offset + t[0]->numel == g->n;
    for (int i = 0; tiled && i + 1 < nt; i++) tiled = t[i + 1]->offset + t[i + 1]->numel == t[i]->offset;
    tiled = tiled && t[nt - 1]->offset == 0;
    g->b = xr_calloc((size_t)(nt ? nt : 1), sizeof *g->b);
    if (!tiled) {
        g->b[0] = (GsBucket){0, g->n, NULL, 0, 0, 0};
        g->nb = 1;
    } else {
        size_t hi = g->n;
        for (int i = 0; i < nt; i++) {
            size_t lo = t[i]->offset;
            if (g->sp_rows && lo == g->sp_off) { /* the sparse tensor: close the bucket above it, skip it */
                if (hi > lo + t[i]->numel) g->b[g->nb++] = (GsBucket){lo + t[i]->numel, hi, NULL, 0, 0, 0};
                hi = lo;
                continue;
            }
            if (hi - lo >= cap || i == nt - 1) {
                g->b[g->nb++] = (GsBucket){lo, hi, NULL, 0, 0, 0};
                hi = lo;
            }
        }
    }
    free(t);
}

GradSync *gsync_create(Comm *c, Encoder *m, const GsOpts *o, const AdamWConfig *cfg) {
    GradSync *g = xr_calloc(1, sizeof *g);
    g->c = c, g->m = m, g->be = encoder_backend(m), g->o = *o;
    g->R = comm_size(c), g->rank = comm_rank(c);
    g->n = (size_t)encoder_num_params(m);
    if (g->R == 1) g->o.zero = 0;
    g->shard_counts = xr_malloc(sizeof(size_t) * (size_t)g->R);
    g->part = xr_malloc(sizeof(size_t) * (size_t)g->R);
    /* shards of about n / R floats, starting on 16-float (64-byte) boundaries */
    for (int r = 0; r < g->R; r++) {
        size_t lo = (g->n * (size_t)r / (size_t)g->R) & ~(size_t)15, hi = (g->n * (size_t)(r + 1) / (size_t)g->R) & ~(size_t)15;
        if (r == g->R - 1) hi = g->n;
        g->shard_counts[r] = hi - lo;
        if (r == g->rank) g->shard_lo = lo, g->shard_hi = hi;
    }
    if (!g->o.zero) g->shard_lo = 0, g->shard_hi = g->n;
    for (int i = 0; g->o.sparse_embedding && g->R > 1 && g->be->device == XR_DEV_CPU && i < encoder_num_tensors(m); i++) {
        const EncoderTensor *t = encoder_tensor(m, i);
        size_t L = strlen(t->name), S = strlen("embeddings.word_embeddings.weight");
        if (t->ndim == 2 && L >= S && !strcmp(t->name + L - S, "embeddings.word_embeddings.weight")) {
            g->sp_off = t->offset, g->sp_rows = (size_t)t->shape[0], g->sp_width = (size_t)t->shape[1];
            g->sp_touched = xr_calloc(g->sp_rows, 1);
        }
    }
    gs_make_buckets(g);
    g->opt = adamw_create(g->be, g->shard_lo, g->shard_hi - g->shard_lo, cfg);
    for (int i = 0; i < encoder_num_tensors(m); i++) {
        const EncoderTensor *tt = encoder_tensor(m, i);
        if (!encoder_tensor_decays(tt)) adamw_no_decay(g->opt, tt->offset, tt->numel);
    }
    return g;
}

void gsync_free(GradSync *g) {
    if (!g) return;
    encoder_set_grad_hook(g->m, NULL, NULL);
    adamw_free(g->opt);
    free(g->shard_counts), free(g->part), free(g->b), free(g->sp_touched), free(g->sp_pack), free(g);
}

static void gs_start(GradSync *g, GsBucket *b) {
    float *grads = encoder_grads(g->m);
    b->issued = 1;
    b->t_start = xr_now();
    if (!g->o.zero) {
        b->req = comm_buf_iallreduce(g->c, grads + b->lo, b->hi - b->lo);
        return;
    }
    size_t off = 0;
    for (int r = 0; r < g->R; r++) {
        size_t slo = off, shi = off + g->shard_counts[r];
        size_t a = b->lo > slo ? b->lo : slo, z = b->hi < shi ? b->hi : shi;
        g->part[r] = z > a ? z - a : 0;
        off = shi;
    }
    b->req = comm_buf_ireduce_scatter(g->c, grads + b->lo, g->part);
}

/* Advance what is in flight (MPI moves data only inside MPI calls). */
static void gs_progress(GradSync *g) {
    for (int i = 0; i < g->next; i++)
        if (g->b[i].req && comm_test(g->c, g->b[i].req)) {
            comm_wait(g->c, g->b[i].req);
            g->b[i].req = NULL;
            g->b[i].t_done = xr_now();
        }
}

static void gs_hook(void *ctx, size_t lo, size_t hi) {
    (void)hi;
    GradSync *g = ctx;
    if (!g->armed) return;
    while (g->next < g->nb && g->b[g->next].lo >= lo) gs_start(g, &g->b[g->next++]);
    gs_progress(g);
}

void gsync_arm(GradSync *g) {
    if (g->R == 1) return;
    g->armed = g->o.overlap;
    encoder_set_grad_hook(g->m, gs_hook, g);
}

void gsync_touch(GradSync *g, const int32_t *ids, size_t n) {
    if (!g->sp_rows) return;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && (size_t)ids[i] < g->sp_rows) g->sp_touched[ids[i]] = 1;
}

static int gs_cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The rows touched on any rank: ids all-gathered, sorted, deduplicated (the same list on every rank); their
 * gradient rows packed, summed, unpacked. Rows outside the list are 0 on every rank: their sum is 0 too. */
static void gs_sparse_exchange(GradSync *g) {
    int32_t *mine = xr_malloc(sizeof(int32_t) * (g->sp_rows ? g->sp_rows : 1));
    size_t k = 0;
    for (size_t r = 0; r < g->sp_rows; r++)
        if (g->sp_touched[r]) mine[k++] = (int32_t)r, g->sp_touched[r] = 0;
    size_t got = 0;
    int32_t *all = (int32_t *)comm_allgather(g->c, mine, k * sizeof(int32_t), &got, NULL);
    size_t na = got / sizeof(int32_t), nu = 0;
    qsort(all, na, sizeof *all, gs_cmp_i32);
    for (size_t i = 0; i < na; i++)
        if (nu == 0 || all[i] != all[nu - 1]) all[nu++] = all[i];
    size_t H = g->sp_width, need = nu * H;
    if (need > g->sp_cap) {
        free(g->sp_pack);
        g->sp_cap = need;
        g->sp_pack = xr_malloc((need ? need : 1) * sizeof(float));
    }
    float *w = encoder_grads(g->m) + g->sp_off;
    for (size_t i = 0; i < nu; i++) memcpy(g->sp_pack + i * H, w + (size_t)all[i] * H, H * sizeof(float));
    comm_buf_allreduce(g->c, g->sp_pack, need);
    for (size_t i = 0; i < nu; i++) memcpy(w + (size_t)all[i] * H, g->sp_pack + i * H, H * sizeof(float));
    g->sp_total += (int64_t)nu;
    g->sp_steps++;
    free(mine), free(all);
}

/* The buckets' time in flight, as the union of their [start, done) intervals (buckets start in order, so a
 * running maximum merges them): in all, and the part before t_end (the end of the backward): communication that
 * ran while the backward computed. In flight means issued and not yet seen complete: an upper bound on the time
 * the transfer took, since completion is seen only at the next poll. */
static void gs_account_inflight(GradSync *g, double t_end) {
    double cover = -1e300;
    for (int i = 0; i < g->nb; i++) {
        double a = g->b[i].t_start > cover ? g->b[i].t_start : cover, z = g->b[i].t_done;
        if (z <= a) continue;
        g->inflight_s += z - a;
        if (a < t_end) g->hidden_s += (z < t_end ? z : t_end) - a;
        cover = z;
    }
}

double gsync_reduce(GradSync *g) {
    float *grads = encoder_grads(g->m);
    if (g->R > 1) {
        double t0 = xr_now(); /* the backward is over: from here on every wait is exposed */
        while (g->next < g->nb) gs_start(g, &g->b[g->next++]);
        if (g->sp_rows) gs_sparse_exchange(g);
        for (int i = 0; i < g->nb; i++)
            if (g->b[i].req) {
                comm_wait(g->c, g->b[i].req);
                g->b[i].req = NULL;
                g->b[i].t_done = xr_now();
            }
        gs_account_inflight(g, t0);
        for (int i = 0; i < g->nb; i++) g->b[i].issued = 0;
        g->next = 0;
        g->armed = 0;
        g->exposed_s += xr_now() - t0;
    }
    double ss = ops_sum_squares(g->be, grads + g->shard_lo, g->shard_hi - g->shard_lo);
    if (g->o.zero) {
        double t1 = xr_now();
        comm_allreduce_sum_f64(g->c, &ss, 1);
        g->exposed_s += xr_now() - t1;
    }
    return sqrt(ss);
}

void gsync_step(GradSync *g, double norm, double max_norm, double lr) {
    float *grads = encoder_grads(g->m), *params = encoder_params(g->m);
    size_t lo = g->shard_lo, len = g->shard_hi - g->shard_lo;
    if (max_norm > 0) optim_clip_with_norm(g->be, grads + lo, len, max_norm, norm);
    adamw_step(g->opt, params + lo, grads + lo, lr);
    if (g->o.zero) {
        double t0 = xr_now();
        comm_buf_allgather(g->c, params, g->shard_counts);
        g->exposed_s += xr_now() - t0;
    }
    encoder_weights_updated(g->m); /* bf16: the working copy, re-cast once per step (fp32: nothing) */
}

void gsync_shard(const GradSync *g, size_t *lo, size_t *hi) {
    *lo = g->shard_lo;
    *hi = g->shard_hi;
}
AdamW *gsync_optimizer(GradSync *g) { return g->opt; }
int gsync_num_buckets(const GradSync *g) { return g->nb; }
void gsync_sparse_stats(const GradSync *g, int64_t *rows, int64_t *steps, int64_t *vocab) {
    *rows = g->sp_total;
    *steps = g->sp_steps;
    *vocab = (int64_t)g->sp_rows;
}
void gsync_times(const GradSync *g, double *exposed_s, double *hidden_s, double *inflight_s) {
    *exposed_s = g->exposed_s;
    *hidden_s = g->hidden_s;
    *inflight_s = g->inflight_s;
}

int64_t gsync_optimizer_bytes(int64_t n, int R, int zero, int master) {
    int64_t shard = zero && R > 1 ? (n + R - 1) / R : n;
    return shard * (int64_t)(2 + (master ? 1 : 0)) * (int64_t)sizeof(float);
}
