/* comm_staged.c: buffer collectives on any backend's memory through host copies: the part a collective sends
 * is copied to a host buffer (ops_to_host), MPI reduces or gathers the host copies (comm_mpi.c), and the
 * result is copied back (ops_to_device). For ranks that share one GPU (NCCL refuses that) or builds without
 * NCCL; on the CPU backend the copies are memcpy, which is how the tests run it here. Host buffers come from
 * ops_pinned_alloc (page-locked on a GPU) and are kept and reused between collectives (a free list), so a
 * training step allocates nothing after the first. */
#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"

typedef struct HostBuf {
    struct HostBuf *next;
    size_t cap;
    float *p;
} HostBuf;

typedef struct {
    HostBuf *free_list;
    Backend *be;
} Staged;

typedef struct {
    CollKind kind;
    float *dev;
    size_t n, off, part; /* whole size; this rank's part (reduce-scatter / all-gather) */
    HostBuf *hb;
    void *mpi;
} StagedReq;

static HostBuf *staged_take(Staged *s, size_t n) {
    HostBuf **pp = &s->free_list;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->cap >= n) {
            HostBuf *b = *pp;
            *pp = b->next;
            return b;
        }
    HostBuf *b = xr_calloc(1, sizeof *b);
    b->cap = n ? n : 1;
    b->p = ops_pinned_alloc(s->be, b->cap * sizeof(float)); /* page-locked on a GPU: full-speed copies */
    return b;
}

static void staged_give(Staged *s, HostBuf *b) {
    b->next = s->free_list;
    s->free_list = b;
}

static void *staged_start(Comm *c, CollKind kind, float *buf, size_t n, const size_t *counts) {
    Staged *s = c->impl;
    StagedReq *q = xr_calloc(1, sizeof *q);
    q->kind = kind, q->dev = buf, q->n = n;
    if (counts) {
        for (int r = 0; r < c->rank; r++) q->off += counts[r];
        q->part = counts[c->rank];
    }
    q->hb = staged_take(s, n);
    /* all-gather sends only this rank's part; the others' arrive */
    if (kind == COLL_ALLGATHER)
        ops_to_host(c->be, q->hb->p + q->off, buf + q->off, q->part * sizeof(float));
    else
        ops_to_host(c->be, q->hb->p, buf, n * sizeof(float));
    q->mpi = comm_mpi_start(c, kind, q->hb->p, n, counts);
    return q;
}

static int staged_test(Comm *c, void *req) {
    StagedReq *q = req;
    if (!comm_mpi_test(c, q->mpi)) return 0;
    if (q->kind == COLL_REDUCE_SCATTER)
        ops_to_device(c->be, q->dev + q->off, q->hb->p + q->off, q->part * sizeof(float));
    else
        ops_to_device(c->be, q->dev, q->hb->p, q->n * sizeof(float));
    staged_give(c->impl, q->hb);
    free(q);
    return 1;
}

static void staged_bcast(Comm *c, float *buf, size_t n, int root) {
    Staged *s = c->impl;
    HostBuf *b = staged_take(s, n);
    if (c->rank == root) ops_to_host(c->be, b->p, buf, n * sizeof(float));
    comm_mpi_ops.bcast(c, b->p, n, root);
    if (c->rank != root) ops_to_device(c->be, buf, b->p, n * sizeof(float));
    staged_give(s, b);
}

static void staged_destroy(Comm *c) {
    Staged *s = c->impl;
    if (!s) return;
    while (s->free_list) {
        HostBuf *b = s->free_list;
        s->free_list = b->next;
        ops_pinned_free(s->be, b->p), free(b);
    }
    free(s);
    c->impl = NULL;
}

const CommOps comm_staged_ops = {"staged", staged_start, staged_test, staged_bcast, NULL, staged_destroy};

int comm_staged_attach(Comm *c, Backend *be, XrErr *e) {
    (void)e;
    Staged *s = xr_calloc(1, sizeof(Staged));
    s->be = be;
    c->impl = s;
    c->ops = &comm_staged_ops;
    c->be = be;
    return 0;
}
