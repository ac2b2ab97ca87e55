/* comm_impl.h: private to dist/comm_*.c: the Comm struct and the table an implementation of the buffer
 * collectives fills (comm_mpi.c: host memory; comm_staged.c: any device through host copies; comm_nccl.c:
 * NCCL on CUDA device memory). comm.c-level code (comm_mpi.c) owns requests, timeouts and dispatch. */
#ifndef XR_COMM_IMPL_H
#define XR_COMM_IMPL_H
#include <mpi.h>
#include <stdatomic.h>
#include <stdint.h>

#include "comm.h"

typedef enum { COLL_ALLREDUCE = 0, COLL_REDUCE_SCATTER = 1, COLL_ALLGATHER = 2 } CollKind;

typedef struct {
    const char *name;
    /* Start a collective on buf (n floats in all; counts: comm_size parts for reduce-scatter / all-gather) and
     * return the implementation's request. */
    void *(*start)(Comm *c, CollKind kind, float *buf, size_t n, const size_t *counts);
    /* 1 when done (the result in place and the request freed), 0 while running; dies on a reported error. */
    int (*test)(Comm *c, void *req);
    void (*bcast)(Comm *c, float *buf, size_t n, int root);
    /* Before the job is stopped after a timeout (NCCL: abort the communicator). May be NULL. */
    void (*abort)(Comm *c);
    void (*destroy)(Comm *c);
} CommOps;

struct Comm {
    MPI_Comm world;
    MPI_Comm node;       /* the ranks of this node (MPI_COMM_SELF with one rank) */
    int rank, size, local_rank, local_size;
    int we_initialised;
    double timeout_s;    /* --comm-timeout: a node peer whose heartbeat stopped this long is dead / stopped */
    double stall_s;      /* --comm-stall-timeout: the most a wait lasts for live peers (or peers on other nodes) */
    /* Liveness heartbeat (comm_mpi.c): one 64-byte line per node rank in a POSIX shared-memory segment, holding
     * the CLOCK_MONOTONIC milliseconds its thread last wrote. NULL: none (one rank, or no shared memory). */
    _Atomic uint64_t *hb;
    int *hb_world;       /* [local_size] the world rank of each node rank */
    void *hb_thread;     /* the heartbeat thread (pthread_t *) */
    double left_seen;    /* CLOCK_MONOTONIC s when a wait first saw a node peer that left the job (0: none yet) */
    const CommOps *ops;  /* buffer collectives (comm_mpi_ops until comm_attach) */
    void *impl;          /* the implementation's state */
    Backend *be;         /* backend whose memory the buffer collectives take (NULL: host) */
};

extern const CommOps comm_mpi_ops;
/* Host-memory MPI collectives, used by the staged implementation on its host copies. */
void *comm_mpi_start(Comm *c, CollKind kind, float *buf, size_t n, const size_t *counts);
int comm_mpi_test(Comm *c, void *req);
/* Wait for MPI requests with the communicator's timeout (what: the operation, for the message). */
void comm_mpi_wait_timed(Comm *c, int n, MPI_Request *rq, const char *what);
/* Called while a wait has lasted `waited` s (peer: the world rank known to be late, -1: not known): stops the job
 * when a node peer's heartbeat stopped for --comm-timeout (naming it) or the wait passed its limit (--comm-stall-
 * timeout; see comm_mpi.c). */
void comm_wait_check(Comm *c, const char *what, double waited, int peer);
/* Stop the job after a timeout: names this rank and the peers it waited on. */
void comm_die_timeout(Comm *c, const char *what, double waited) __attribute__((noreturn));
/* The same naming the late world rank `peer` (-1: not known). */
void comm_die_timeout_peer(Comm *c, const char *what, double waited, int peer) __attribute__((noreturn));
/* Die with MPI's message for an error code. */
void comm_checked(int rc, const char *what);

/* Create the staged / NCCL state on c for be (comm_staged.c / comm_nccl.c). -1 with e filled when impossible
 * on this rank (the caller agrees across ranks). */
int comm_staged_attach(Comm *c, Backend *be, XrErr *e);
extern const CommOps comm_staged_ops;
int comm_nccl_attach(Comm *c, Backend *be, XrErr *e);
extern const CommOps comm_nccl_ops;
/* Whether this build has NCCL. */
int comm_nccl_available(void);
#endif
