/* comm.h: the communicator of the trainer, mining and eval. Two halves:
 * - host messages over MPI (always): rank and size, node topology, barrier, broadcast and gathers of
 *   variable-size byte buffers (any size: counts above 2 GiB are sent in pieces), error agreement, and the
 *   abort hook that makes one rank's fatal error stop the whole job instead of leaving the others hanging;
 * - collectives on float buffers in the memory of the attached backend ("buffer collectives", comm_buf_*):
 *   all-reduce, reduce-scatter, all-gather, broadcast, blocking and non-blocking, by one of three
 *   implementations: MPI on host memory (CPU backend), NCCL on device memory (CUDA builds), or device memory
 *   staged through host buffers over MPI (any backend; GPUs shared by several ranks, or no NCCL).
 *   Every wait has a timeout: a dead or hung peer stops the job with a message naming the rank that waited
 *   and the peers it waited on, instead of hanging. */
#ifndef XR_COMM_H
#define XR_COMM_H
#include <stddef.h>
#include <stdint.h>

#include "ops.h"
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Comm Comm;

/* MPI_Init_thread with MPI_THREAD_FUNNELED (unless already initialised) on MPI_COMM_WORLD: only the calling
 * (main) thread makes MPI calls, while other threads exist (the liveness heartbeat, NCCL's, OpenMP's, the
 * checkpoint writer). Works as a plain process (a singleton of size 1) and under mpirun / srun. With size > 1
 * it installs xr_abort_hook so xr_die calls MPI_Abort (off the main thread: marks this rank failed and exits,
 * which mpirun turns into the end of the job). Dies when MPI cannot start or provides less than FUNNELED. */
Comm *comm_init(int *argc, char ***argv);
/* MPI_Finalize (when comm_init initialised MPI) and free. Every rank must call it. Marks this rank as left
 * (comm_leave with 0) unless comm_leave said otherwise before. */
void comm_finalize(Comm *c);
/* This rank takes part in no more collectives: it is ending, finished (code 0) or failed (code != 0). Peers on
 * its node that still wait for it in a collective stop within about a second, naming it and how it left,
 * instead of waiting for --comm-timeout. Call it first on the way out, before a teardown that may block (MPI_Win_free
 * is collective, NCCL's destroy waits for its stream); the first call counts. No-op with one rank. A process that
 * exits without it or comm_finalize is marked at exit (atexit) as having left without the teardown. */
void comm_leave(Comm *c, int code);

int comm_rank(const Comm *c);
int comm_size(const Comm *c);
/* Ranks on this node (MPI_Comm_split_type SHARED), for splitting the node's cores between them. */
int comm_local_size(const Comm *c);
/* This rank's index among the ranks of its node (for picking a GPU): the launcher's variable when set
 * (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID), else the shared-memory split of the world
 * made at comm_init. */
int comm_local_rank(const Comm *c);
/* The GPU this rank uses: its node-local rank modulo the visible GPUs, so ranks that outnumber the GPUs of their
 * node share them (rank 1 of 2 on a 1-GPU machine gets GPU 0; comm_attach's COMM_AUTO then stages through host
 * memory, since NCCL needs one GPU per rank). 0 when no GPU is visible. The CLI, test_comm and bench_comm use it. */
int comm_device_index(const Comm *c);
void comm_barrier(Comm *c);
/* Abort every rank of the job with this exit code (MPI_Abort; plain exit with one rank). */
void comm_abort(Comm *c, int code) __attribute__((noreturn));

/* Broadcast n bytes from root. n must be the same on every rank (broadcast the size first if it is not). */
void comm_bcast(Comm *c, void *buf, size_t n, int root);
/* Broadcast a malloc'd buffer of root's size: on root *buf / *n are inputs, elsewhere they are filled
 * with a fresh malloc'd buffer (one extra NUL byte after the data, so text can be used as a C string). */
void comm_bcast_buf(Comm *c, char **buf, size_t *n, int root);

/* Gather each rank's n bytes to root, concatenated in rank order. On root returns a malloc'd buffer
 * (*out_n its size; counts[r] the bytes from rank r when counts != NULL, size comm_size entries);
 * elsewhere returns NULL. */
char *comm_gather(Comm *c, const void *buf, size_t n, int root, size_t *out_n, size_t *counts);
/* Same, but every rank receives the concatenation. */
char *comm_allgather(Comm *c, const void *buf, size_t n, size_t *out_n, size_t *counts);

/* In-place all-reduce SUM of n floats / doubles (MPI_Allreduce; any n: cut into pieces of at most 2^28
 * elements). Every rank gets the same bits: the reduction order is MPI's, fixed for a given rank count. */
void comm_allreduce_sum_f32(Comm *c, float *buf, size_t n);
void comm_allreduce_sum_f64(Comm *c, double *buf, size_t n);

/* Collective error check: every rank passes its own status (0 ok, -1 failed with e filled). Returns 0 when
 * all succeeded; otherwise copies the message of the lowest failing rank into e on every rank (so rank 0
 * can print it once and all ranks can exit cleanly) and returns -1. A failure of a rank other than 0 is named:
 * "rank R of N: <message>" (unless the message already starts with "rank "). */
int comm_check(Comm *c, int status, XrErr *e);

/* ---- one copy per node: MPI-3 shared memory ----
 * comm_node_share: collective over the ranks of a node. The node's leader (comm_node_leader) passes n bytes at src
 * (others: any src, n ignored); every rank of the node gets a pointer to one shared read-only copy (*out_n
 * bytes), valid until comm_node_share_free (collective over the node). Where the shared-memory directory is
 * missing or lacks room (comm_node_alloc_fits), each rank gets its own copy instead, with a notice. */
typedef struct CommShm CommShm;
int comm_node_leader(const Comm *c);
void *comm_node_share(Comm *c, const void *src, size_t n, size_t *out_n, CommShm **h);
void comm_node_share_free(Comm *c, CommShm *h);

/* ---- node-shared writable memory: ranks of one node reading each other's buffers ----
 * comm_node_alloc: collective over the node's ranks: every rank asks for `bytes` of its own (any size, 0
 * allowed; zero-filled, 64-byte aligned) plus `flags` counters; every rank can read every region
 * (comm_node_region, by node rank) and writes its own. For exchanges without copies: gradients the peers sum
 * in place, parameters kept once per node. Free with comm_node_share_free (collective over the node).
 * Flags order the accesses: comm_node_post publishes a value of this rank's counter `slot` (a release: what
 * this rank wrote before it is visible to a peer that sees the value); comm_node_ready says whether every
 * node rank's counter `slot` has reached `value` (an acquire); comm_node_await waits for it with the
 * communicator's timeout (a dead or hung peer stops the job naming the rank that waited). Counters only grow. */
CommShm *comm_node_alloc(Comm *c, size_t bytes, int flags);
/* Whether every node has room for comm_node_alloc of `bytes` per rank: the windows are files in Open MPI's backing
 * directory ($OMPI_MCA_osc_sm_backing_directory, else /dev/shm); a full one kills the job with SIGBUS on first
 * touch (containers often mount a 64 MB /dev/shm), a missing one fails the allocation. Collective; the same answer
 * on every rank; when 0, `why` says what was wrong (on a rank whose directory it was, else "another rank's"). */
int comm_node_alloc_fits(Comm *c, size_t bytes, char *why, size_t why_n);
void *comm_node_region(CommShm *h, int node_rank);
int comm_node_rank(const Comm *c);
void comm_node_post(CommShm *h, int slot, uint64_t value);
int comm_node_ready(CommShm *h, int slot, uint64_t value);
void comm_node_await(Comm *c, CommShm *h, int slot, uint64_t value, const char *what);

/* ---- buffer collectives ----
 * Buffers live in the memory of the backend given to comm_attach (host memory before any comm_attach). Sums
 * are in fp32 in an order fixed by the implementation and the rank count (every rank gets the same bits).
 * Every rank must issue the same collectives in the same order. A collective on one rank is a no-op copy-free
 * call. `counts` arrays have comm_size entries: rank r's part is the counts[r] floats after the parts of ranks
 * 0..r-1 (any sizes, zeros allowed, need not divide evenly). */

typedef enum {
    COMM_AUTO = 0,  /* MPI for a CPU backend; NCCL for a CUDA one unless ranks share a GPU or NCCL is missing,
                     * then staged (with a one-line notice on rank 0; silently with one rank: nothing to reduce) */
    COMM_MPI = 1,   /* MPI on host memory (CPU backend only) */
    COMM_NCCL = 2,  /* NCCL on device memory, bootstrapped over MPI (CUDA builds) */
    COMM_STAGED = 3, /* device memory copied through host buffers, MPI between them (any backend) */
    COMM_SHM = 4     /* the trainer's gradients through node-shared memory (CPU, every rank on one node;
                      * dist/gradsync.h); other buffer collectives as COMM_MPI. auto picks it where it can */
} CommImpl;

/* "auto" | "mpi" | "nccl" | "staged" | "shm" -> CommImpl; -1 for another name. */
int comm_impl_parse(const char *name);
/* Route the buffer collectives through `want` for buffers on be's device. Collective. Returns -1 with e filled
 * (the same on every rank) when the implementation cannot run here (NCCL without a CUDA build or GPU, MPI with
 * device memory). */
int comm_attach(Comm *c, Backend *be, CommImpl want, XrErr *e);
/* Drops what comm_attach made for a backend (the NCCL communicator, the staged communicator's host buffers, which
 * that backend allocated) and goes back to MPI on host memory. Call before freeing the backend. Local. */
void comm_detach(Comm *c);
/* "mpi", "nccl" or "staged". */
const char *comm_impl_name(const Comm *c);
/* Timeouts of every wait (collectives, broadcasts, gathers, node-shared flags, NCCL start-up). --comm-timeout
 * (default 60 s; <= 0: never): a peer whose liveness heartbeat (a thread of each rank, no MPI; relayed between nodes
 * over UDP by the node leaders' threads) stopped this long is dead or stopped and the job stops naming it.
 * --comm-stall-timeout (default 1800 s; <= 0: never): the longest wait for peers that are alive but late, and the
 * only limit for peers whose heartbeat never arrived (another node whose datagrams do not get through). */
void comm_set_timeout(Comm *c, double seconds);
double comm_timeout(const Comm *c);
void comm_set_stall_timeout(Comm *c, double seconds);
double comm_stall_timeout(const Comm *c);

/* In-place sum over ranks of n floats. */
void comm_buf_allreduce(Comm *c, float *buf, size_t n);
/* In-place reduce-scatter: buf holds sum(counts) floats on every rank; afterwards this rank's part (at its
 * offset) holds the sum over ranks of that part; the rest of buf is undefined. */
void comm_buf_reduce_scatter(Comm *c, float *buf, const size_t *counts);
/* In-place all-gather: each rank's part (at its offset) goes to every rank. */
void comm_buf_allgather(Comm *c, float *buf, const size_t *counts);
/* n floats from root to every rank. */
void comm_buf_bcast(Comm *c, float *buf, size_t n, int root);

/* Non-blocking versions: the call starts the collective and returns a request; the buffer must not be touched
 * until comm_wait returns. comm_test advances it (call it while computing: MPI progresses only inside MPI
 * calls) and says whether it finished; comm_wait finishes and frees it (dies naming the ranks after the
 * timeout). `counts` is copied. */
typedef struct CommReq CommReq;
CommReq *comm_buf_iallreduce(Comm *c, float *buf, size_t n);
CommReq *comm_buf_ireduce_scatter(Comm *c, float *buf, const size_t *counts);
CommReq *comm_buf_iallgather(Comm *c, float *buf, const size_t *counts);
int comm_test(Comm *c, CommReq *r);
void comm_wait(Comm *c, CommReq *r);

#ifdef __cplusplus
}
#endif
#endif
