/* gradsync.c: buckets of the flat gradient reduced while the backward runs, ZeRO-1 shards and the optimizer step
 * (see gradsync.h). */
#include "gradsync.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t lo, hi;  /* [lo, hi) of the flat buffer */
    CommReq *req;   /* in flight */
    int issued;
    int phase;      /* node-shared exchange: 0 posted, 1 own part summed (all-reduce: peers' parts next), 2 done */
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
    /* node-shared exchange (shm != NULL; CPU ranks all on one node): each rank's gradients and touched-row map
     * live in node-shared memory where the peers read them; the rank that owns a part of the buffer
     * ([own_lo, own_hi), the shard partition) sums it in place from every rank's copy; with ZeRO-1 the
     * parameters are one node-shared copy that each rank updates on its shard (nothing to all-gather). Flags
     * (comm_node_post) order it: GS_SL_BUCKET "my backward finished bucket k of step seq", GS_SL_SUMMED "my
     * part of bucket k is summed" (all-reduce), GS_SL_DONE "I no longer read your gradients this step",
     * GS_SL_UPDATED "my shard of the parameters is updated". */
    CommShm *shm, *shm_params;
    float **peer;         /* [R] each rank's gradients */
    uint8_t **peer_touch; /* [R] each rank's touched rows (sparse word embeddings) */
    size_t own_lo, own_hi;
    uint64_t seq, done_seq;
};

enum { GS_SL_BUCKET = 0, GS_SL_SUMMED = 1, GS_SL_DONE = 2, GS_SL_UPDATED = 3, GS_SLOTS = 4 };
#define GS_FINAL 0xFFFFFu /* bucket value of "the whole backward is over" (above any bucket index) */
static uint64_t gs_flag(uint64_t seq, uint64_t k) { return seq << 20 | k; }

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
        g->b[0] = (GsBucket){0, g->n, NULL, 0, 0, 0, 0};
        g->nb = 1;
    } else {
        size_t hi = g->n;
        for (int i = 0; i < nt; i++) {
            size_t lo = t[i]->offset;
            if (g->sp_rows && lo == g->sp_off) { /* the sparse tensor: close the bucket above it, skip it */
                if (hi > lo + t[i]->numel) g->b[g->nb++] = (GsBucket){lo + t[i]->numel, hi, NULL, 0, 0, 0, 0};
                hi = lo;
                continue;
            }
            if (hi - lo >= cap || i == nt - 1) {
                g->b[g->nb++] = (GsBucket){lo, hi, NULL, 0, 0, 0, 0};
                hi = lo;
            }
        }
    }
    free(t);
}

/* The node-shared buffers: every rank's region holds its touched-row map then its gradients; with ZeRO-1 the node
 * leader's second region holds the parameters, copied in by it (the others' copies are dropped). */
static void gs_shm_setup(GradSync *g) {
    assert(comm_node_rank(g->c) == g->rank); /* one node: the node split keeps the world's order */
    size_t map = (g->sp_rows + 63) & ~(size_t)63;
    g->shm = comm_node_alloc(g->c, map + g->n * sizeof(float), GS_SLOTS);
    g->peer = xr_malloc(sizeof(float *) * (size_t)g->R);
    g->peer_touch = xr_malloc(sizeof(uint8_t *) * (size_t)g->R);
    for (int r = 0; r < g->R; r++) {
        g->peer_touch[r] = comm_node_region(g->shm, r);
        g->peer[r] = (float *)(g->peer_touch[r] + map);
    }
    float *params = NULL;
    if (g->o.zero) {
        g->shm_params = comm_node_alloc(g->c, g->rank == 0 ? g->n * sizeof(float) : 0, 0);
        params = comm_node_region(g->shm_params, 0);
        if (g->rank == 0) encoder_use_buffers(g->m, params, 1, NULL);
        comm_barrier(g->c); /* the leader's copy is in before the others drop theirs */
    }
    encoder_use_buffers(g->m, g->rank == 0 ? NULL : params, 0, g->peer[g->rank]);
    g->seq = 1;
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
    g->own_lo = g->shard_lo, g->own_hi = g->shard_hi;
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
    if (g->o.node_shm && g->R > 1 && g->be->device == XR_DEV_CPU && comm_local_size(c) == g->R) {
        size_t need = ((g->sp_rows + 63) & ~(size_t)63) + g->n * sizeof(float) * (g->o.zero ? 2 : 1);
        char why[256];
        if (comm_node_alloc_fits(c, need, why, sizeof why))
            gs_shm_setup(g);
        else if (g->rank == 0)
            fprintf(stderr, "xrank: the gradients of %d ranks (%.0f MB) cannot go through node-shared memory: %s; "
                            "they go over MPI messages instead\n", g->R, (double)need * g->R / 1e6, why);
    }
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
    if (g->shm) { /* the encoder outlives the exchange (export, eval): it gets its own copies back first */
        encoder_private_buffers(g->m);
        comm_barrier(g->c); /* every rank has copied the shared parameters out */
        comm_node_share_free(g->c, g->shm_params);
        comm_node_share_free(g->c, g->shm);
        free(g->peer), free(g->peer_touch);
    }
    free(g->shard_counts), free(g->part), free(g->b), free(g->sp_touched), free(g->sp_pack), free(g);
}

/* ---- the node-shared exchange ---- */

/* This rank's copy of [lo, hi) := the sum of every rank's copy, in rank order (so the result is the same whichever
 * rank computes it), a block at a time. */
#define GS_BLOCK 2048
static void gs_shm_sum(GradSync *g, size_t lo, size_t hi) {
    float tmp[GS_BLOCK], *dst = g->peer[g->rank];
    for (size_t a = lo; a < hi; a += GS_BLOCK) {
        size_t k = hi - a < GS_BLOCK ? hi - a : GS_BLOCK;
        memcpy(tmp, g->peer[0] + a, k * sizeof(float));
        for (int q = 1; q < g->R; q++) {
            const float *src = g->peer[q] + a;
            for (size_t i = 0; i < k; i++) tmp[i] += src[i];
        }
        memcpy(dst + a, tmp, k * sizeof(float));
    }
}

/* The peers' summed parts of [lo, hi) copied into this rank's copy (all-reduce, after their GS_SL_SUMMED). */
static void gs_shm_gather(GradSync *g, size_t lo, size_t hi) {
    size_t off = 0;
    for (int q = 0; q < g->R; off += g->shard_counts[q], q++) {
        size_t a = lo > off ? lo : off, z = hi < off + g->shard_counts[q] ? hi : off + g->shard_counts[q];
        if (q != g->rank && z > a) memcpy(g->peer[g->rank] + a, g->peer[q] + a, (z - a) * sizeof(float));
    }
}

/* Moves bucket k on as far as the peers allow (wait: until it is done). */
static void gs_shm_advance(GradSync *g, int k, int wait) {
    GsBucket *b = &g->b[k];
    uint64_t v = gs_flag(g->seq, (uint64_t)k + 1);
    if (b->phase == 0) {
        if (wait) comm_node_await(g->c, g->shm, GS_SL_BUCKET, v, "gradient bucket (node shared memory)");
        else if (!comm_node_ready(g->shm, GS_SL_BUCKET, v)) return;
        size_t a = b->lo > g->own_lo ? b->lo : g->own_lo, z = b->hi < g->own_hi ? b->hi : g->own_hi;
        if (z > a) gs_shm_sum(g, a, z);
        b->phase = g->o.zero ? 2 : 1;
        if (b->phase == 1) comm_node_post(g->shm, GS_SL_SUMMED, v);
    }
    if (b->phase == 1) {
        if (wait) comm_node_await(g->c, g->shm, GS_SL_SUMMED, v, "gradient bucket (node shared memory)");
        else if (!comm_node_ready(g->shm, GS_SL_SUMMED, v)) return;
        gs_shm_gather(g, b->lo, b->hi);
        b->phase = 2;
    }
    b->t_done = xr_now();
}

/* The word embeddings' rows touched on any rank (the union of the peers' maps): this rank's part summed, and
 * (all-reduce) the peers' parts copied in; untouched rows are 0 on every rank, so skipping them is exact. */
static void gs_shm_sparse(GradSync *g) {
    uint64_t fin = gs_flag(g->seq, GS_FINAL);
    comm_node_await(g->c, g->shm, GS_SL_BUCKET, fin, "word-embedding gradients (node shared memory)");
    size_t H = g->sp_width, rows = 0;
    for (int pass = 0; pass < (g->o.zero ? 1 : 2); pass++) {
        if (pass == 1) {
            comm_node_post(g->shm, GS_SL_SUMMED, fin);
            comm_node_await(g->c, g->shm, GS_SL_SUMMED, fin, "word-embedding gradients (node shared memory)");
        }
        for (size_t r = 0; r < g->sp_rows; r++) {
            int any = 0;
            for (int q = 0; q < g->R && !any; q++) any = g->peer_touch[q][r];
            if (!any) continue;
            rows += pass == 0;
            size_t lo = g->sp_off + r * H, hi = lo + H;
            if (pass == 1) {
                gs_shm_gather(g, lo, hi);
                continue;
            }
            size_t a = lo > g->own_lo ? lo : g->own_lo, z = hi < g->own_hi ? hi : g->own_hi;
            if (z > a) gs_shm_sum(g, a, z);
        }
    }
    g->sp_total += (int64_t)rows;
    g->sp_steps++;
}

static void gs_start(GradSync *g, GsBucket *b) {
    float *grads = encoder_grads(g->m);
    b->issued = 1;
    b->t_start = xr_now();
    if (g->shm) { /* the peers may sum it from here on */
        b->phase = 0;
        comm_node_post(g->shm, GS_SL_BUCKET, gs_flag(g->seq, (uint64_t)(b - g->b) + 1));
        return;
    }
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
    if (g->shm) {
        for (int i = 0; i < g->next; i++)
            if (g->b[i].phase < 2) gs_shm_advance(g, i, 0);
        return;
    }
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
    uint8_t *t = g->shm ? g->peer_touch[g->rank] : g->sp_touched;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && (size_t)ids[i] < g->sp_rows) t[ids[i]] = 1;
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
    if (g->shm) {
        double t0 = xr_now();
        while (g->next < g->nb) gs_start(g, &g->b[g->next++]);
        comm_node_post(g->shm, GS_SL_BUCKET, gs_flag(g->seq, GS_FINAL)); /* and the touched-row map is written */
        for (int i = 0; i < g->nb; i++)
            if (g->b[i].phase < 2) gs_shm_advance(g, i, 1);
        if (g->sp_rows) gs_shm_sparse(g);
        /* every rank is done reading the others' gradients: each may zero its own for the next step */
        comm_node_post(g->shm, GS_SL_DONE, g->seq);
        comm_node_await(g->c, g->shm, GS_SL_DONE, g->seq, "gradient exchange (node shared memory)");
        if (g->sp_rows) memset(g->peer_touch[g->rank], 0, g->sp_rows);
        gs_account_inflight(g, t0);
        for (int i = 0; i < g->nb; i++) g->b[i].issued = 0;
        g->next = 0;
        g->armed = 0;
        g->done_seq = g->seq++;
        g->exposed_s += xr_now() - t0;
    } else if (g->R > 1) {
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
    if (g->o.zero && g->shm) { /* one copy per node: wait until every shard of it is updated */
        double t0 = xr_now();
        comm_node_post(g->shm, GS_SL_UPDATED, g->done_seq);
        comm_node_await(g->c, g->shm, GS_SL_UPDATED, g->done_seq, "parameter update (node shared memory)");
        g->exposed_s += xr_now() - t0;
    } else if (g->o.zero) {
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
const char *gsync_exchange_name(const GradSync *g) {
    return g->shm ? "node shared memory" : comm_impl_name(g->c);
}
int gsync_params_shared(const GradSync *g) { return g->shm_params != NULL; }
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
