/* comm_nccl.c: buffer collectives on CUDA device memory with NCCL, bootstrapped over MPI: rank 0 makes the
 * unique id, MPI broadcasts it, every rank joins on the GPU of its backend (picked from its node-local rank
 * when the backend was made). Collectives run on the communicator's own stream, ordered after the ops already
 * queued on the backend's stream by an event, and the backend's stream waits for the result by another event,
 * so nothing blocks the host. Completion is polled (cudaEventQuery) together with ncclCommGetAsyncError, so a
 * failed or hung peer is reported (comm_mpi.c's timed wait) and the communicator aborted instead of hanging.
 * Compiled only in CUDA builds with NCCL (XR_HAVE_CUDA); dist/ is the one place that includes nccl.h. The CPU
 * emulator's build (XR_CUDA_EMU, tests/cuemu) has no NCCL: there it is "not available", as without CUDA. */
#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"

#if defined(XR_HAVE_CUDA) && !defined(XR_CUDA_EMU)
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;   /* the communicator's own */
    cudaStream_t compute;  /* the backend's (ops_native_stream) */
    int device;
} Nccl;

typedef struct {
    cudaEvent_t done;
} NcclReq;

static void nccl_die(Comm *c, const char *what, ncclResult_t r) {
    Nccl *s = c->impl;
    const char *last = ncclGetLastError(s ? s->comm : NULL);
    xr_die("rank %d: %s failed: %s%s%s", c->rank, what, ncclGetErrorString(r), last && *last ? ": " : "",
           last ? last : "");
}
#define NCCL_OK(c, call)                                   \
    do {                                                   \
        ncclResult_t r_ = (call);                          \
        if (r_ != ncclSuccess) nccl_die((c), #call, r_);   \
    } while (0)
#define CUDA_OK(c, call)                                                                               \
    do {                                                                                               \
        cudaError_t r_ = (call);                                                                       \
        if (r_ != cudaSuccess) xr_die("rank %d: %s failed: %s", (c)->rank, #call, cudaGetErrorString(r_)); \
    } while (0)

static void *nccl_start(Comm *c, CollKind kind, float *buf, size_t n, const size_t *counts) {
    Nccl *s = c->impl;
    NcclReq *q = xr_calloc(1, sizeof *q);
    cudaEvent_t ready;
    CUDA_OK(c, cudaSetDevice(s->device));
    CUDA_OK(c, cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    CUDA_OK(c, cudaEventRecord(ready, s->compute));
    CUDA_OK(c, cudaStreamWaitEvent(s->stream, ready, 0));
    CUDA_OK(c, cudaEventDestroy(ready));
    if (kind == COLL_ALLREDUCE) {
        NCCL_OK(c, ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, s->comm, s->stream));
    } else {
        /* parts of any size: one reduce (to the part's owner) or one broadcast (from it) per rank, grouped */
        NCCL_OK(c, ncclGroupStart());
        size_t off = 0;
        for (int r = 0; r < c->size; r++) {
            if (kind == COLL_REDUCE_SCATTER)
                NCCL_OK(c, ncclReduce(buf + off, buf + off, counts[r], ncclFloat, ncclSum, r, s->comm, s->stream));
            else
                NCCL_OK(c, ncclBroadcast(buf + off, buf + off, counts[r], ncclFloat, r, s->comm, s->stream));
            off += counts[r];
        }
        NCCL_OK(c, ncclGroupEnd());
    }
    CUDA_OK(c, cudaEventCreateWithFlags(&q->done, cudaEventDisableTiming));
    CUDA_OK(c, cudaEventRecord(q->done, s->stream));
    /* later ops on the backend's stream see the result without the host waiting */
    CUDA_OK(c, cudaStreamWaitEvent(s->compute, q->done, 0));
    return q;
}

static int nccl_test(Comm *c, void *req) {
    Nccl *s = c->impl;
    NcclReq *q = req;
    ncclResult_t async = ncclSuccess;
    NCCL_OK(c, ncclCommGetAsyncError(s->comm, &async));
    if (async != ncclSuccess) {
        ncclCommAbort(s->comm);
        s->comm = NULL;
        nccl_die(c, "NCCL (a peer failed or left)", async);
    }
    cudaError_t r = cudaEventQuery(q->done);
    if (r == cudaErrorNotReady) return 0;
    CUDA_OK(c, r);
    CUDA_OK(c, cudaEventDestroy(q->done));
    free(q);
    return 1;
}

static void nccl_bcast(Comm *c, float *buf, size_t n, int root) {
    CommReq *r;
    size_t *counts = xr_calloc((size_t)c->size, sizeof *counts);
    counts[root] = n;
    r = comm_buf_iallgather(c, buf, counts); /* one broadcast from root: the all-gather with one non-empty part */
    free(counts);
    comm_wait(c, r);
}

static void nccl_abort(Comm *c) {
    Nccl *s = c->impl;
    if (s && s->comm) ncclCommAbort(s->comm), s->comm = NULL;
}

static void nccl_destroy(Comm *c) {
    Nccl *s = c->impl;
    if (!s) return;
    if (s->comm) {
        cudaStreamSynchronize(s->stream);
        ncclCommDestroy(s->comm);
    }
    cudaStreamDestroy(s->stream);
    free(s);
    c->impl = NULL;
}

const CommOps comm_nccl_ops = {"nccl", nccl_start, nccl_test, nccl_bcast, nccl_abort, nccl_destroy};

int comm_nccl_available(void) { return 1; }

/* ncclCommInitRank blocks until every rank has joined: a rank that died after the MPI broadcast, or cannot
 * reach its peers, would hang the others forever. It runs on a helper thread while this one waits with the
 * communicator's timeouts (comm_wait_check: a node peer's heartbeat stopped, or the stall timeout), which then
 * stop the job naming the rank (MPI_Abort; the helper thread dies with the process). */
typedef struct {
    Nccl *s;
    int size, rank;
    ncclUniqueId id;
    ncclResult_t r;
    cudaError_t ce;
    _Atomic int done;
} NcclInit;

static void *nccl_init_thread(void *arg) {
    NcclInit *a = arg;
    a->ce = cudaSetDevice(a->s->device); /* NCCL binds the communicator to the thread's current GPU */
    a->r = a->ce == cudaSuccess ? ncclCommInitRank(&a->s->comm, a->size, a->id, a->rank) : ncclSystemError;
    atomic_store(&a->done, 1);
    return NULL;
}

static ncclResult_t nccl_init_timed(Comm *c, Nccl *s, const ncclUniqueId *id) {
    NcclInit *a = xr_calloc(1, sizeof *a); /* leaked on a timeout: the job stops */
    a->s = s, a->size = c->size, a->rank = c->rank, a->id = *id;
    pthread_t th;
    if (pthread_create(&th, NULL, nccl_init_thread, a)) xr_die("rank %d: cannot start a thread for NCCL", c->rank);
    struct timespec t0, now, nap = {0, 1000000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!atomic_load(&a->done)) {
        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
        double waited = (double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec);
        comm_wait_check(c, "NCCL start-up (ncclCommInitRank)", waited, -1);
    }
    pthread_join(th, NULL);
    ncclResult_t r = a->r;
    if (a->ce != cudaSuccess) xr_die("rank %d: GPU %d: %s", c->rank, s->device, cudaGetErrorString(a->ce));
    free(a);
    return r;
}

int comm_nccl_attach(Comm *c, Backend *be, XrErr *e) {
    int st = 0;
    if (!be || be->device != XR_DEV_CUDA) st = xr_errf(e, "--comm nccl needs --device cuda");
    if (comm_check(c, st, e)) return -1;
    /* the unique id travels as bytes; a failure on rank 0 is sent along with it */
    struct {
        int ok;
        char err[160];
        ncclUniqueId id;
    } boot;
    memset(&boot, 0, sizeof boot);
    if (c->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&boot.id);
        boot.ok = r == ncclSuccess;
        if (!boot.ok) snprintf(boot.err, sizeof boot.err, "ncclGetUniqueId: %s", ncclGetErrorString(r));
    }
    comm_bcast(c, &boot, sizeof boot, 0);
    if (!boot.ok) return xr_errf(e, "NCCL cannot start: %s", boot.err);
    Nccl *s = xr_calloc(1, sizeof *s);
    int dev = s->device = ops_device_index(be);
    s->compute = (cudaStream_t)ops_native_stream(be);
    cudaError_t ce = cudaSetDevice(s->device);
    if (ce == cudaSuccess) ce = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
    if (ce != cudaSuccess) {
        free(s);
        return xr_errf(e, "rank %d: GPU %d: %s", c->rank, dev, cudaGetErrorString(ce));
    }
    ncclResult_t r = nccl_init_timed(c, s, &boot.id);
    if (r != ncclSuccess) {
        cudaStreamDestroy(s->stream);
        free(s);
        return xr_errf(e, "rank %d: ncclCommInitRank on GPU %d: %s", c->rank, dev, ncclGetErrorString(r));
    }
    c->impl = s;
    c->ops = &comm_nccl_ops;
    c->be = be;
    return 0;
}

#else /* no CUDA (or only the CPU emulator's) in this build */

int comm_nccl_available(void) { return 0; }

int comm_nccl_attach(Comm *c, Backend *be, XrErr *e) {
    (void)c, (void)be;
    return xr_errf(e, "--comm nccl: this xrank was built without CUDA and NCCL");
}

const CommOps comm_nccl_ops = {"nccl", NULL, NULL, NULL, NULL, NULL};
#endif
