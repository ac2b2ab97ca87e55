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
    _Atomic uint64_t *hb; /* [size] lines by world rank: this node's written by their ranks, others' (multi-node) by
                           * this node leader's heartbeat thread from the other leaders' datagrams (comm_hbnet.c) */
    int *hb_via;         /* [size] the world rank of the leader that relays each rank's line; -1: on this node */
    void *hb_thread;     /* the heartbeat thread (pthread_t *) */
    double left_seen;    /* CLOCK_MONOTONIC s when a wait first saw a node peer that left the job (0: none yet) */
    /* Collective sequence: every rank calls the public collectives of comm.h in the same order, so the n-th one is the
     * same collective everywhere. op_seq: the last one this rank began; op_cur: the one its current wait belongs to
     * (0: none, or a wait outside the sequence: the node-shared flags). A wait on a peer that left judges it by the
     * highest one the peer completed (XR_HB_DONE), one still running by the last it began (XR_HB_BEGUN). */
    uint64_t op_seq, op_cur;
    const CommOps *ops;  /* buffer collectives (comm_mpi_ops until comm_attach) */
    void *impl;          /* the implementation's state */
    Backend *be;         /* backend whose memory the buffer collectives take (NULL: host) */
};

/* Heartbeat line words: the clock (CLOCK_MONOTONIC ms of this machine; 0: nothing heard yet), how the rank left the
 * job, its exit code, the sequence number of the last collective it began and the highest one it completed. */
#define XR_HB_LINE 8 /* uint64 per 64-byte line */
#define XR_HB_CLOCK 0
#define XR_HB_STATE 1
#define XR_HB_CODE 2
#define XR_HB_BEGUN 3
#define XR_HB_DONE 4
enum { XR_HB_RUNNING = 0, XR_HB_FINISHED = 1, XR_HB_FAILED = 2, XR_HB_EXITED = 3 };

/* The heartbeat across nodes (comm_hbnet.c). Start: collective over the world on the main thread, with this node's
 * lines (NULL where this node has none) and its world ranks by node rank; *via gets the relaying leader of each world
 * rank (-1: this node; NULL for a single node). Returns the relay on a node leader with a UDP socket, else NULL.
 * Tick: on the leader's heartbeat thread, every period. */
typedef struct HbNet HbNet;
HbNet *comm_hbnet_start(Comm *c, _Atomic uint64_t *hb, const int *node_world, int **via);
void comm_hbnet_tick(HbNet *n, _Atomic uint64_t *hb);
void comm_hbnet_free(HbNet *n);

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
