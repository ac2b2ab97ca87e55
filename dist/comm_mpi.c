/* comm_mpi.c: the communicator of dist/comm.h on MPI: the host messages, node topology, the dispatch of the
 * buffer collectives to the attached implementation with timed waits, and the MPI implementation of those on
 * host memory. Byte counts are size_t; MPI counts are int, so transfers are cut into pieces of at most
 * XR_COMM_PIECE bytes and gathers go point to point. */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm_impl.h"

/* Largest single MPI transfer; 1 GiB keeps every count well inside int. */
#define XR_COMM_PIECE ((size_t)1 << 30)
#define XR_COMM_TAG 4711

/* Declared in base/xr_common.c: called by xr_die before exit. */
extern void (*xr_abort_hook)(int code);

static void comm_hb_start(Comm *c);
static void comm_hb_stop(Comm *c);
static void comm_hb_mark(_Atomic uint64_t *line, uint64_t state, int code);
static void comm_mpi_wait_peer(Comm *c, int n, MPI_Request *rq, const char *what, int peer);

/* ---- collective sequence (Comm.op_seq / op_cur in comm_impl.h) ----
 * Every public collective here (the host messages, the node-shared set-ups, each buffer collective) takes the next
 * number and writes it in this rank's heartbeat line when it begins (XR_HB_BEGUN) and when it completes (XR_HB_DONE,
 * the highest completed). Every rank calls them in the same order, so a waiting rank can tell a peer that left after
 * its part of the collective it waits in (not the cause of the wait) from one that left before it, and a peer still
 * running that has not reached it (the one the wait is for) from one that has. */
static uint64_t comm_op_number(Comm *c) {
    c->op_seq++;
    if (c->hb)
        atomic_store_explicit(&c->hb[(size_t)c->rank * XR_HB_LINE + XR_HB_BEGUN], c->op_seq, memory_order_release);
    return c->op_seq;
}

static void comm_op_done(Comm *c, uint64_t seq) {
    if (!c->hb) return;
    _Atomic uint64_t *w = &c->hb[(size_t)c->rank * XR_HB_LINE + XR_HB_DONE];
    if (atomic_load_explicit(w, memory_order_relaxed) < seq) atomic_store_explicit(w, seq, memory_order_release);
}

/* Begins a collective: the waits until comm_op_end belong to it. Returns the one it is part of (comm_allgather is a
 * gather and broadcasts; 0: none), for comm_op_end. */
static uint64_t comm_op_begin(Comm *c) {
    uint64_t outer = c->op_cur;
    c->op_cur = comm_op_number(c);
    return outer;
}

static void comm_op_end(Comm *c, uint64_t outer) {
    comm_op_done(c, c->op_cur);
    c->op_cur = outer;
}

/* Process-wide, for the two hooks that get no Comm (xr_abort_hook, atexit): the thread that initialised MPI (the only
 * one allowed MPI calls under MPI_THREAD_FUNNELED) and this rank's heartbeat line (NULL: none, or torn down). */
static pthread_t comm_main_thread;
static pid_t comm_pid; /* a forked child (io/h5util.c's isolated reads) must neither mark the line nor call MPI */
static _Atomic(_Atomic uint64_t *) comm_exit_line;

static void comm_mpi_abort_hook(int code) {
    if (getpid() != comm_pid) _exit(code);
    if (!pthread_equal(pthread_self(), comm_main_thread)) {
        /* an xr_die on another thread (the checkpoint writer, an OpenMP worker): no MPI call is allowed here, so
         * mark the line and exit; mpirun ends the job for a rank that exits without MPI_Finalize */
        comm_hb_mark(atomic_load(&comm_exit_line), XR_HB_FAILED, code);
        fflush(stdout);
        _exit(code);
    }
    MPI_Abort(MPI_COMM_WORLD, code);
}

/* atexit: a rank that exits without comm_leave / comm_finalize (exit() deep in a command, a return from main) */
static void comm_exit_mark(void) {
    if (getpid() == comm_pid) comm_hb_mark(atomic_load(&comm_exit_line), XR_HB_EXITED, 0);
}

static const char *comm_thread_level_name(int level) {
    return level == MPI_THREAD_SINGLE       ? "MPI_THREAD_SINGLE"
           : level == MPI_THREAD_FUNNELED   ? "MPI_THREAD_FUNNELED"
           : level == MPI_THREAD_SERIALIZED ? "MPI_THREAD_SERIALIZED"
           : level == MPI_THREAD_MULTIPLE   ? "MPI_THREAD_MULTIPLE"
                                            : "an unknown level";
}

void comm_checked(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", rc);
    xr_die("%s failed: %s", what, msg);
}

Comm *comm_init(int *argc, char ***argv) {
    Comm *c = xr_calloc(1, sizeof *c);
    int inited = 0, provided = MPI_THREAD_SINGLE;
    MPI_Initialized(&inited);
    if (!inited) {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            xr_die("MPI_Init_thread failed (is Open MPI installed and usable?)");
        c->we_initialised = 1;
    } else {
        comm_checked(MPI_Query_thread(&provided), "MPI_Query_thread");
    }
    const char *fake = getenv("XR_TEST_MPI_THREAD_LEVEL"); /* tests: "single" stands for an MPI that gives less */
    if (fake && !strcmp(fake, "single")) provided = MPI_THREAD_SINGLE;
    if (provided < MPI_THREAD_FUNNELED) {
        if (c->we_initialised) MPI_Finalize();
        xr_die("MPI provides the thread level %s, xrank needs MPI_THREAD_FUNNELED (other threads run beside the one "
               "that calls MPI: the liveness heartbeat, NCCL, OpenMP); use an MPI library built with thread support%s",
               comm_thread_level_name(provided), inited ? " (or initialise it with MPI_Init_thread)" : "");
    }
    comm_main_thread = pthread_self();
    comm_pid = getpid();
    c->world = MPI_COMM_WORLD;
    c->timeout_s = 60;
    c->stall_s = 1800;
    c->ops = &comm_mpi_ops;
    /* Errors come back as codes so they are reported with our message instead of MPI's default abort. */
    comm_checked(MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    comm_checked(MPI_Comm_rank(c->world, &c->rank), "MPI_Comm_rank");
    comm_checked(MPI_Comm_size(c->world, &c->size), "MPI_Comm_size");
    c->local_size = 1;
    c->node = MPI_COMM_SELF;
    if (c->size > 1) {
        MPI_Comm node;
        /* tests: "rank": each rank its own node; a number k: k ranks per node (nodes faked on one machine) */
        const char *split = getenv("XR_TEST_NODE_SPLIT");
        int per = split ? (!strcmp(split, "rank") ? 1 : atoi(split)) : 0;
        if (per > 0)
            comm_checked(MPI_Comm_split(c->world, c->rank / per, c->rank, &node), "MPI_Comm_split");
        else
            comm_checked(MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node),
                         "MPI_Comm_split_type");
        comm_checked(MPI_Comm_size(node, &c->local_size), "MPI_Comm_size(node)");
        comm_checked(MPI_Comm_rank(node, &c->local_rank), "MPI_Comm_rank(node)");
        c->node = node;
        xr_abort_hook = comm_mpi_abort_hook;
        comm_hb_start(c);
    }
    return c;
}

void comm_leave(Comm *c, int code) {
    if (c && c->hb) comm_hb_mark(&c->hb[(size_t)c->rank * XR_HB_LINE], code ? XR_HB_FAILED : XR_HB_FINISHED, code);
}

void comm_finalize(Comm *c) {
    if (!c) return;
    comm_leave(c, 0);
    if (c->ops && c->ops->destroy) c->ops->destroy(c);
    comm_hb_stop(c);
    if (c->node != MPI_COMM_SELF) MPI_Comm_free(&c->node);
    if (c->we_initialised) {
        xr_abort_hook = NULL;
        MPI_Finalize();
    }
    free(c);
}

int comm_rank(const Comm *c) { return c->rank; }
int comm_size(const Comm *c) { return c->size; }
int comm_local_size(const Comm *c) { return c->local_size; }

int comm_local_rank(const Comm *c) {
    static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return c->local_rank;
}

int comm_device_index(const Comm *c) {
    int n = ops_device_count(XR_DEV_CUDA);
    return n > 0 ? comm_local_rank(c) % n : 0;
}

void comm_barrier(Comm *c) {
    if (c->size == 1) return;
    uint64_t outer = comm_op_begin(c);
    MPI_Request rq;
    comm_checked(MPI_Ibarrier(c->world, &rq), "MPI_Ibarrier");
    comm_mpi_wait_timed(c, 1, &rq, "barrier");
    comm_op_end(c, outer);
}

void comm_abort(Comm *c, int code) {
    fflush(stdout);
    fflush(stderr);
    if (c && c->size > 1) MPI_Abort(c->world, code);
    exit(code);
}

void comm_bcast(Comm *c, void *buf, size_t n, int root) {
    uint64_t outer = comm_op_begin(c);
    char *p = buf;
    for (size_t off = 0; off < n; off += XR_COMM_PIECE) {
        size_t k = n - off < XR_COMM_PIECE ? n - off : XR_COMM_PIECE;
        MPI_Request rq;
        comm_checked(MPI_Ibcast(p + off, (int)k, MPI_BYTE, root, c->world, &rq), "MPI_Ibcast");
        comm_mpi_wait_peer(c, 1, &rq, "broadcast", c->rank == root ? -1 : root);
    }
    comm_op_end(c, outer);
}

void comm_bcast_buf(Comm *c, char **buf, size_t *n, int root) {
    uint64_t outer = comm_op_begin(c);
    uint64_t len = c->rank == root ? (uint64_t)*n : 0;
    MPI_Request rq;
    comm_checked(MPI_Ibcast(&len, 1, MPI_UINT64_T, root, c->world, &rq), "MPI_Ibcast(size)");
    comm_mpi_wait_peer(c, 1, &rq, "broadcast (size)", c->rank == root ? -1 : root);
    if (c->rank != root) {
        *n = (size_t)len;
        *buf = xr_malloc(*n + 1);
        (*buf)[*n] = 0;
    }
    comm_bcast(c, *buf, *n, root);
    comm_op_end(c, outer);
}

static void comm_send(Comm *c, const void *buf, size_t n, int dest) {
    const char *p = buf;
    for (size_t off = 0; off < n; off += XR_COMM_PIECE) {
        size_t k = n - off < XR_COMM_PIECE ? n - off : XR_COMM_PIECE;
        MPI_Request rq;
        comm_checked(MPI_Isend(p + off, (int)k, MPI_BYTE, dest, XR_COMM_TAG, c->world, &rq), "MPI_Isend");
        comm_mpi_wait_peer(c, 1, &rq, "gather (send)", dest);
    }
}

static void comm_recv(Comm *c, void *buf, size_t n, int src) {
    char *p = buf;
    for (size_t off = 0; off < n; off += XR_COMM_PIECE) {
        size_t k = n - off < XR_COMM_PIECE ? n - off : XR_COMM_PIECE;
        MPI_Request rq;
        comm_checked(MPI_Irecv(p + off, (int)k, MPI_BYTE, src, XR_COMM_TAG, c->world, &rq), "MPI_Irecv");
        comm_mpi_wait_peer(c, 1, &rq, "gather (receive)", src);
    }
}

char *comm_gather(Comm *c, const void *buf, size_t n, int root, size_t *out_n, size_t *counts) {
    uint64_t outer = comm_op_begin(c);
    uint64_t mine = n;
    uint64_t *all = c->rank == root ? xr_malloc(sizeof(uint64_t) * (size_t)c->size) : NULL;
    MPI_Request rq;
    comm_checked(MPI_Igather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, root, c->world, &rq), "MPI_Igather(size)");
    comm_mpi_wait_timed(c, 1, &rq, "gather (sizes)");
    if (c->rank != root) {
        comm_send(c, buf, n, root);
        comm_op_end(c, outer);
        return NULL;
    }
    size_t total = 0;
    for (int r = 0; r < c->size; r++) total += (size_t)all[r];
    char *out = xr_malloc(total + 1);
    size_t off = 0;
    for (int r = 0; r < c->size; r++) {
        if (r == root) {
            if (n) memcpy(out + off, buf, n); /* buf may be NULL when n is 0 */
        } else
            comm_recv(c, out + off, (size_t)all[r], r);
        if (counts) counts[r] = (size_t)all[r];
        off += (size_t)all[r];
    }
    out[total] = 0;
    *out_n = total;
    free(all);
    comm_op_end(c, outer);
    return out;
}

char *comm_allgather(Comm *c, const void *buf, size_t n, size_t *out_n, size_t *counts) {
    uint64_t outer = comm_op_begin(c);
    size_t total = 0;
    char *out = comm_gather(c, buf, n, 0, &total, counts);
    comm_bcast_buf(c, &out, &total, 0);
    if (counts) {
        uint64_t *tmp = xr_malloc(sizeof(uint64_t) * (size_t)c->size);
        for (int r = 0; r < c->size; r++) tmp[r] = c->rank == 0 ? (uint64_t)counts[r] : 0;
        comm_bcast(c, tmp, sizeof(uint64_t) * (size_t)c->size, 0);
        for (int r = 0; r < c->size; r++) counts[r] = (size_t)tmp[r];
        free(tmp);
    }
    *out_n = total;
    comm_op_end(c, outer);
    return out;
}

int comm_check(Comm *c, int status, XrErr *e) {
    assert(status == 0 || status == -1);
    uint64_t outer = comm_op_begin(c);
    int failed = status != 0 ? c->rank : INT_MAX, first = INT_MAX;
    MPI_Request rq;
    comm_checked(MPI_Iallreduce(&failed, &first, 1, MPI_INT, MPI_MIN, c->world, &rq), "MPI_Iallreduce");
    comm_mpi_wait_timed(c, 1, &rq, "error check");
    if (first == INT_MAX) {
        comm_op_end(c, outer);
        return 0;
    }
    XrErr tmp;
    if (c->rank == first) {
        tmp = *e;
        if (first != 0 && strncmp(tmp.msg, "rank ", 5)) { /* rank 0 prints it: say whose failure it was */
            char m[sizeof tmp.msg];
            snprintf(m, sizeof m, "rank %d of %d: %.*s", first, c->size, (int)sizeof m - 40, tmp.msg);
            memcpy(tmp.msg, m, sizeof m);
        }
    }
    comm_bcast(c, tmp.msg, sizeof tmp.msg, first);
    tmp.msg[sizeof tmp.msg - 1] = 0;
    if (e) *e = tmp;
    comm_op_end(c, outer);
    return -1;
}

/* Pieces of at most 2^28 elements keep MPI's int count in range for any element size. */
#define XR_COMM_ELEMS ((size_t)1 << 28)

static void comm_allreduce_host(Comm *c, void *buf, size_t n, MPI_Datatype t, size_t esz, const char *what) {
    if (c->size == 1) return;
    uint64_t outer = comm_op_begin(c);
    for (size_t i = 0; i < n; i += XR_COMM_ELEMS) {
        size_t k = n - i < XR_COMM_ELEMS ? n - i : XR_COMM_ELEMS;
        MPI_Request rq;
        comm_checked(MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + i * esz, (int)k, t, MPI_SUM, c->world, &rq),
                     "MPI_Iallreduce");
        comm_mpi_wait_timed(c, 1, &rq, what);
    }
    comm_op_end(c, outer);
}

void comm_allreduce_sum_f32(Comm *c, float *buf, size_t n) {
    comm_allreduce_host(c, buf, n, MPI_FLOAT, sizeof(float), "all-reduce (host floats)");
}

void comm_allreduce_sum_f64(Comm *c, double *buf, size_t n) {
    comm_allreduce_host(c, buf, n, MPI_DOUBLE, sizeof(double), "all-reduce (host doubles)");
}

/* ---- timed waits ---- */

static double comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Waits poll with sched_yield between tests, for up to XR_COMM_SPIN seconds: Open MPI moves a non-blocking
 * collective only inside MPI calls (no progress thread), one round of its schedule per test, so a poller that
 * sleeps stretches every round by its sleep (with 1 ms naps a 16 MiB all-reduce between 2 ranks took 0.4 s,
 * 0.04 GB/s: benchmarks/RESULTS.md, issue 11); yielding still lets a peer that shares the core run
 * (oversubscribed runs). Past that, a wait is for a peer that is late, not for data: naps of 200 us, checking
 * the deadline. */
#define XR_COMM_SPIN 10.0
typedef struct {
    double t0, spin; /* spin: seconds of sched_yield polling before the naps */
    unsigned n;
} CommPoll;

static void comm_poll_init(CommPoll *p) {
    p->t0 = comm_now();
    p->spin = XR_COMM_SPIN;
    p->n = 0;
}

/* peer >= 0: the world rank known to be late (named by the timeout); -1: not known. */
static void comm_poll_pause_peer(Comm *c, CommPoll *p, const char *what, int peer) {
    if ((++p->n & 63) != 0) { /* the clock every 64 polls */
        sched_yield();
        return;
    }
    double waited = comm_now() - p->t0;
    comm_wait_check(c, what, waited, peer);
    if (waited < p->spin) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
}

static void comm_poll_pause(Comm *c, CommPoll *p, const char *what) { comm_poll_pause_peer(c, p, what, -1); }

/* peer: the world rank this wait is for (-1: several or not known) */
static void comm_mpi_wait_peer(Comm *c, int n, MPI_Request *rq, const char *what, int peer) {
    CommPoll p;
    comm_poll_init(&p);
    for (;;) {
        int done = 0;
        comm_checked(MPI_Testall(n, rq, &done, MPI_STATUSES_IGNORE), what);
        if (done) return;
        comm_poll_pause_peer(c, &p, what, peer);
    }
}

void comm_mpi_wait_timed(Comm *c, int n, MPI_Request *rq, const char *what) { comm_mpi_wait_peer(c, n, rq, what, -1); }

/* ---- liveness heartbeat ----
 * A plain wait cannot tell a dead or stopped peer from a busy one (evaluation or a checkpoint on rank 0, a slow
 * first step, a loaded machine), so one timeout must be long. Every rank of a multi-rank job therefore runs a
 * thread that writes CLOCK_MONOTONIC (ms; one clock for all processes of a machine) into its line of a node-shared
 * segment every XR_HB_PERIOD; it makes no MPI call. The segment has a line per world rank: on a job spanning nodes,
 * each node leader's thread also relays its node's lines to the other leaders over UDP and writes theirs here
 * (comm_hbnet.c). A wait (comm_wait_check) reads the lines: a line older than --comm-timeout means that process is
 * dead (SIGKILL) or stopped (SIGSTOP, hung in the kernel; on another node: or its node unreachable) and the job stops
 * naming it, however long the wait has lasted; a peer whose heartbeat goes on is alive (busy) and is waited for up to
 * --comm-stall-timeout. A line never filled (a remote node whose datagrams do not arrive) is not judged: those ranks
 * keep only --comm-stall-timeout. */
#define XR_HB_PERIOD_NS 200000000L

static uint64_t comm_hb_ms(void) { return (uint64_t)(comm_now() * 1000.0); }

typedef struct {
    pthread_t th;
    _Atomic int stop;
    _Atomic uint64_t *mine, *hb;
    HbNet *net; /* node leaders of a multi-node job: the relay (NULL: none) */
} CommHb;

static void *comm_hb_main(void *arg) {
    CommHb *h = arg;
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        atomic_store_explicit(h->mine, comm_hb_ms(), memory_order_release);
        if (h->net) comm_hbnet_tick(h->net, h->hb);
        struct timespec ts = {0, XR_HB_PERIOD_NS};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void comm_hb_start(Comm *c) {
    int me = c->local_rank, n = c->local_size, ok = 1, all = 0;
    size_t bytes = (size_t)c->size * 64;
    char name[64] = {0};
    MPI_Request rq;
    if (me == 0) {
        snprintf(name, sizeof name, "/xrank-hb-%ld-%d", (long)getpid(), c->rank);
        int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0) {
            fprintf(stderr, "xrank: rank %d: no liveness heartbeat (shared memory %s: %s): a dead peer is found only "
                    "after --comm-stall-timeout\n", c->rank, name, strerror(errno));
            if (fd >= 0) close(fd), shm_unlink(name);
            name[0] = 0;
        } else
            close(fd);
    }
    comm_checked(MPI_Ibcast(name, sizeof name, MPI_CHAR, 0, c->node, &rq), "MPI_Ibcast(node)");
    comm_mpi_wait_timed(c, 1, &rq, "heartbeat set-up");
    _Atomic uint64_t *hb = NULL;
    int fd = name[0] ? shm_open(name, O_RDWR, 0) : -1;
    if (fd >= 0) {
        void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (m != MAP_FAILED) hb = m;
    }
    if (!hb) {
        ok = 0;
        if (name[0])
            fprintf(stderr, "xrank: rank %d: cannot map the heartbeat segment %s: %s\n", c->rank, name, strerror(errno));
    } else
        atomic_store(&hb[(size_t)c->rank * XR_HB_LINE + XR_HB_CLOCK], comm_hb_ms());
    int *world = xr_calloc((size_t)n, sizeof *world);
    comm_checked(MPI_Iallgather(&c->rank, 1, MPI_INT, world, 1, MPI_INT, c->node, &rq), "MPI_Iallgather(node)");
    comm_mpi_wait_timed(c, 1, &rq, "heartbeat set-up");
    comm_checked(MPI_Iallreduce(&ok, &all, 1, MPI_INT, MPI_MIN, c->node, &rq), "MPI_Iallreduce(node)");
    comm_mpi_wait_timed(c, 1, &rq, "heartbeat set-up");
    if (me == 0 && name[0]) shm_unlink(name); /* every rank has it mapped (or gave up): nothing left behind */
    if (!all && hb) munmap((void *)hb, bytes), hb = NULL;
    int *via = NULL;
    HbNet *net = comm_hbnet_start(c, hb, world, &via); /* collective over the world: every rank calls it */
    free(world);
    if (!hb) {
        comm_hbnet_free(net);
        free(via);
        return;
    }
    if (!via) { /* one node: every line is a rank of this node */
        via = xr_malloc(sizeof(int) * (size_t)c->size);
        for (int r = 0; r < c->size; r++) via[r] = -1;
    }
    CommHb *h = xr_calloc(1, sizeof *h);
    h->mine = &hb[(size_t)c->rank * XR_HB_LINE + XR_HB_CLOCK];
    h->hb = hb, h->net = net;
    /* the thread takes no signal: the handlers run on the threads that expect them */
    sigset_t all_sig, old;
    sigfillset(&all_sig);
    pthread_sigmask(SIG_SETMASK, &all_sig, &old);
    int rc = pthread_create(&h->th, NULL, comm_hb_main, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) xr_die("rank %d: cannot start the heartbeat thread: %s", c->rank, strerror(rc));
    c->hb = hb, c->hb_via = via, c->hb_thread = h;
    static int registered;
    if (!registered) registered = atexit(comm_exit_mark) == 0;
    atomic_store(&comm_exit_line, &hb[(size_t)c->rank * XR_HB_LINE]);
}

/* Says in this rank's line that it left the job (state XR_HB_FINISHED / FAILED / EXITED, exit code): the code first,
 * then the state with release, so a peer that sees the state sees the code. The first mark counts. */
static void comm_hb_mark(_Atomic uint64_t *line, uint64_t state, int code) {
    if (!line || atomic_load(&line[XR_HB_STATE]) != XR_HB_RUNNING) return;
    atomic_store_explicit(&line[XR_HB_CODE], (uint64_t)(uint32_t)code, memory_order_relaxed);
    atomic_store_explicit(&line[XR_HB_STATE], state, memory_order_release);
}

static void comm_hb_stop(Comm *c) {
    if (!c->hb) return;
    CommHb *h = c->hb_thread;
    atomic_store(&comm_exit_line, NULL);
    atomic_store(&h->stop, 1);
    pthread_join(h->th, NULL);
    if (h->net) comm_hbnet_tick(h->net, c->hb); /* this node's last word (the ranks that left) to the others */
    comm_hbnet_free(h->net);
    munmap((void *)c->hb, (size_t)c->size * 64);
    free(h), free(c->hb_via);
    c->hb = NULL, c->hb_via = NULL, c->hb_thread = NULL;
}

/* The world rank whose heartbeat is the oldest beyond --comm-timeout (its age in *age), -1 when none. */
static int comm_hb_dead(const Comm *c, double *age) {
    if (!c->hb || c->timeout_s <= 0) return -1;
    uint64_t now = comm_hb_ms();
    int worst = -1;
    double oldest = 0;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank || atomic_load(&c->hb[(size_t)r * XR_HB_LINE + XR_HB_STATE]) != XR_HB_RUNNING)
            continue; /* a peer that left stopped its heartbeat on purpose (comm_hb_left) */
        uint64_t t = atomic_load_explicit(&c->hb[(size_t)r * XR_HB_LINE + XR_HB_CLOCK], memory_order_acquire);
        if (t == 0) continue; /* nothing heard from it (another node, no datagram yet) */
        double a = now > t ? (double)(now - t) / 1000.0 : 0;
        if (a > c->timeout_s && a > oldest) worst = r, oldest = a;
    }
    *age = oldest;
    return worst;
}

/* Whether every peer's line has been filled (then a late peer whose heartbeat goes on is known to be alive). */
static int comm_hb_all_heard(const Comm *c) {
    if (!c->hb) return 0;
    for (int r = 0; r < c->size; r++)
        if (atomic_load_explicit(&c->hb[(size_t)r * XR_HB_LINE + XR_HB_CLOCK], memory_order_acquire) == 0) return 0;
    return 1;
}

__attribute__((noreturn)) static void comm_die_msg(Comm *c) {
    fflush(stderr);
    if (c->ops && c->ops->abort) c->ops->abort(c);
    MPI_Abort(c->world, 3);
    exit(3);
}

/* A peer that left the job (comm_leave, comm_finalize, exit) among the world rank `peer` itself, or all when the wait
 * is for several (peer -1): with after 0, one that can be what this wait waits for (it had not completed collective
 * `seq` when it left; with seq 0, any); with after 1, one that left after completing it (done its part: not the
 * cause). Its world rank, -1 when none; *state and *code say how it left. */
static int comm_hb_left(const Comm *c, int peer, uint64_t seq, int after, uint64_t *state, int *code) {
    if (!c->hb) return -1;
    for (int r = peer >= 0 ? peer : 0; r < (peer >= 0 ? peer + 1 : c->size); r++) {
        if (r == c->rank) continue;
        const _Atomic uint64_t *line = &c->hb[(size_t)r * XR_HB_LINE];
        uint64_t st = atomic_load_explicit(&line[XR_HB_STATE], memory_order_acquire);
        if (st == XR_HB_RUNNING) continue;
        /* the state is written after the sequence words (release / acquire): what is read now is final */
        int done = seq > 0 && atomic_load_explicit(&line[XR_HB_DONE], memory_order_relaxed) >= seq;
        if (done != after) continue;
        *state = st;
        *code = (int)(uint32_t)atomic_load_explicit(&line[XR_HB_CODE], memory_order_relaxed);
        return r;
    }
    return -1;
}

/* The peers still running that have not begun collective `seq` (heard from: a remote line never filled is not judged),
 * as "rank R" or "ranks R1, R2, ..." in buf; 0 when there is none (or no sequence: seq 0). */
static int comm_hb_missing(const Comm *c, uint64_t seq, char *buf, size_t n) {
    if (!c->hb || seq == 0) return 0;
    int count = 0;
    size_t len = 0;
    char list[80] = "";
    for (int r = 0; r < c->size; r++) {
        const _Atomic uint64_t *line = &c->hb[(size_t)r * XR_HB_LINE];
        if (r == c->rank || atomic_load_explicit(&line[XR_HB_CLOCK], memory_order_acquire) == 0 ||
            atomic_load_explicit(&line[XR_HB_STATE], memory_order_acquire) != XR_HB_RUNNING ||
            atomic_load_explicit(&line[XR_HB_BEGUN], memory_order_acquire) >= seq)
            continue;
        if (count++ < 8 && len < sizeof list)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", count > 1 ? ", " : "", r);
    }
    if (count > 8 && len < sizeof list) snprintf(list + len, sizeof list - len, ", ... (%d in all)", count);
    if (count) snprintf(buf, n, "%s %s", count > 1 ? "ranks" : "rank", list);
    return count;
}

/* How a peer left, for the messages: "finished, exit 0", ... */
static void comm_hb_how(uint64_t state, int code, char *how, size_t n) {
    if (state == XR_HB_FINISHED) snprintf(how, n, "finished, exit 0");
    else if (state == XR_HB_FAILED) snprintf(how, n, "failed, exit %d", code);
    else snprintf(how, n, "its process exited without closing the communicator");
}

/* " (on another node: heard through rank L over UDP)" for a rank relayed by a leader; "" on this node. */
static const char *comm_hb_where(const Comm *c, int r, char *buf, size_t n) {
    if (!c->hb_via || c->hb_via[r] < 0) return "";
    snprintf(buf, n, "; on another node, heard through rank %d over UDP", c->hb_via[r]);
    return buf;
}

/* How long a wait goes on after it first saw a peer that left: a peer that finished a collective leaves at once,
 * while this rank may still need a few polls to complete the same collective (its last messages in flight). */
#define XR_LEFT_GRACE 1.0

void comm_wait_check(Comm *c, const char *what, double waited, int peer) {
    uint64_t state = 0;
    /* a peer that left after its part of this collective is not waited for: with 3 or more ranks the root of a gather
     * or a broadcast may still wait for another one (that one, if any, is judged below) */
    int code = 0, left = comm_hb_left(c, peer, c->op_cur, 0, &state, &code);
    if (left >= 0) {
        double now = comm_now();
        if (c->left_seen == 0) c->left_seen = now;
        if (now - c->left_seen >= XR_LEFT_GRACE) {
            char how[96];
            comm_hb_how(state, code, how, sizeof how);
            fprintf(stderr,
                    "xrank: rank %d: rank %d left the job (%s) while this rank waits in %s (waited %.1f s): it will "
                    "not take part; stopping the job\n",
                    c->rank, left, how, what, waited);
            comm_die_msg(c);
        }
    }
    double age = 0;
    char where[96];
    int dead = comm_hb_dead(c, &age);
    if (dead >= 0) {
        fprintf(stderr,
                "xrank: rank %d: %s did not complete after %.0f s: rank %d stopped answering (dead or stopped: no "
                "heartbeat for %.1f s, --comm-timeout %.0f%s); stopping the job\n",
                c->rank, what, waited, dead, age, c->timeout_s, comm_hb_where(c, dead, where, sizeof where));
        comm_die_msg(c);
    }
    /* without heartbeats (one rank per node, no shared memory) the wait's only limit is the stall timeout */
    if (c->stall_s > 0 && waited > c->stall_s) comm_die_timeout_peer(c, what, waited, peer);
}

void comm_die_timeout_peer(Comm *c, const char *what, double waited, int peer) {
    char peers[128], also[224] = "";
    uint64_t seq = c->op_cur, bg = 0;
    if (peer >= 0 && c->hb && seq)
        bg = atomic_load_explicit(&c->hb[(size_t)peer * XR_HB_LINE + XR_HB_BEGUN], memory_order_acquire);
    /* the ranks that have not reached this collective, unless the wait is for one peer that has not either (a
     * broadcast's root stands for a whole tree of senders: named only while it is one of the missing) */
    int missing = (peer < 0 || bg >= seq) ? comm_hb_missing(c, seq, peers, sizeof peers) : 0;
    if (missing == 0) {
        if (peer >= 0)
            snprintf(peers, sizeof peers, "rank %d", peer);
        else if (c->size == 2)
            snprintf(peers, sizeof peers, "rank %d", 1 - c->rank);
        else
            snprintf(peers, sizeof peers, "one of ranks 0-%d other than %d", c->size - 1, c->rank);
    }
    uint64_t state = 0;
    int code = 0, gone = comm_hb_left(c, -1, seq, 1, &state, &code);
    if (gone >= 0) { /* both facts: the one that left did its part, the one named did not */
        char how[96];
        comm_hb_how(state, code, how, sizeof how);
        snprintf(also, sizeof also, "; rank %d left the job after its part in this collective (%s)", gone, how);
    }
    int local = comm_hb_all_heard(c); /* every peer has a heartbeat: the late one is alive */
    const char *state_s = !local         ? "dead or hung"
                          : missing > 1 ? "alive, their heartbeats go on, but they have not reached this wait: hung"
                                        : "alive, its heartbeat goes on, but it has not reached this wait: hung";
    fprintf(stderr,
            "xrank: rank %d: %s did not complete within %.0f s (--comm-stall-timeout %.0f): %s stopped answering "
            "(%s)%s; stopping the job\n",
            c->rank, what, waited, c->stall_s, peers, state_s, also);
    comm_die_msg(c);
}

void comm_die_timeout(Comm *c, const char *what, double waited) { comm_die_timeout_peer(c, what, waited, -1); }

void comm_set_timeout(Comm *c, double seconds) { c->timeout_s = seconds; }
double comm_timeout(const Comm *c) { return c->timeout_s; }
void comm_set_stall_timeout(Comm *c, double seconds) { c->stall_s = seconds; }
double comm_stall_timeout(const Comm *c) { return c->stall_s; }

/* ---- buffer collectives: dispatch ---- */

struct CommReq {
    const CommOps *ops;
    void *impl;
    const char *what;
    size_t n;
    uint64_t seq; /* its number in the collective sequence */
};

static const char *coll_names[] = {"all-reduce", "reduce-scatter", "all-gather"};

static size_t counts_sum(const Comm *c, const size_t *counts) {
    size_t n = 0;
    for (int r = 0; r < c->size; r++) n += counts[r];
    return n;
}

static CommReq *comm_start(Comm *c, CollKind kind, float *buf, size_t n, const size_t *counts) {
    CommReq *r = xr_calloc(1, sizeof *r);
    r->ops = c->ops;
    r->what = coll_names[kind];
    r->n = n;
    r->seq = comm_op_number(c);
    r->impl = c->ops->start(c, kind, buf, n, counts); /* also at one rank: the 1-rank tests reach NCCL */
    return r;
}

CommReq *comm_buf_iallreduce(Comm *c, float *buf, size_t n) { return comm_start(c, COLL_ALLREDUCE, buf, n, NULL); }
CommReq *comm_buf_ireduce_scatter(Comm *c, float *buf, const size_t *counts) {
    return comm_start(c, COLL_REDUCE_SCATTER, buf, counts_sum(c, counts), counts);
}
CommReq *comm_buf_iallgather(Comm *c, float *buf, const size_t *counts) {
    return comm_start(c, COLL_ALLGATHER, buf, counts_sum(c, counts), counts);
}

int comm_test(Comm *c, CommReq *r) {
    if (!r->impl) return 1;
    if (r->ops->test(c, r->impl)) r->impl = NULL, comm_op_done(c, r->seq);
    return r->impl == NULL;
}

void comm_wait(Comm *c, CommReq *r) {
    if (r->impl) {
        CommPoll p;
        comm_poll_init(&p);
        char what[96];
        snprintf(what, sizeof what, "%s of %zu floats (%s)", r->what, r->n, r->ops->name);
        uint64_t outer = c->op_cur;
        c->op_cur = r->seq;
        while (!comm_test(c, r)) comm_poll_pause(c, &p, what);
        c->op_cur = outer;
    }
    free(r);
}

void comm_buf_allreduce(Comm *c, float *buf, size_t n) { comm_wait(c, comm_buf_iallreduce(c, buf, n)); }
void comm_buf_reduce_scatter(Comm *c, float *buf, const size_t *counts) {
    comm_wait(c, comm_buf_ireduce_scatter(c, buf, counts));
}
void comm_buf_allgather(Comm *c, float *buf, const size_t *counts) {
    comm_wait(c, comm_buf_iallgather(c, buf, counts));
}
void comm_buf_bcast(Comm *c, float *buf, size_t n, int root) {
    uint64_t outer = comm_op_begin(c);
    c->ops->bcast(c, buf, n, root);
    comm_op_end(c, outer);
}

const char *comm_impl_name(const Comm *c) { return c->ops->name; }

void comm_detach(Comm *c) {
    if (c->ops && c->ops->destroy) c->ops->destroy(c);
    c->ops = &comm_mpi_ops, c->impl = NULL, c->be = NULL;
}

int comm_impl_parse(const char *name) {
    static const char *names[] = {"auto", "mpi", "nccl", "staged", "shm"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

int comm_attach(Comm *c, Backend *be, CommImpl want, XrErr *e) {
    int cuda = be && be->device == XR_DEV_CUDA;
    uint64_t outer = comm_op_begin(c);
    if (want == COMM_AUTO && cuda) {
        /* NCCL refuses two ranks on one GPU: when any node has more ranks than GPUs, every rank stages. */
        int share = comm_local_size(c) > ops_device_count(XR_DEV_CUDA), any = 0;
        MPI_Request rq;
        comm_checked(MPI_Iallreduce(&share, &any, 1, MPI_INT, MPI_MAX, c->world, &rq), "MPI_Iallreduce");
        comm_mpi_wait_timed(c, 1, &rq, "communicator choice");
        /* one rank: nothing to reduce, so no NCCL start-up (the staged one costs nothing until used) */
        want = any || !comm_nccl_available() || c->size == 1 ? COMM_STAGED : COMM_NCCL;
        if (want == COMM_STAGED && c->rank == 0 && c->size > 1)
            fprintf(stderr, "xrank: gradients go through host memory over MPI (%s); --comm nccl to insist\n",
                    any ? "ranks share a GPU: NCCL needs one GPU per rank" : "this build has no NCCL");
    } else if (want == COMM_AUTO) {
        want = COMM_MPI;
    }
    int st = 0;
    XrErr mine = {{0}};
    if ((want == COMM_MPI || want == COMM_SHM) && cuda)
        st = xr_errf(&mine, "--comm %s takes host memory: with --device cuda use --comm nccl or staged",
                     want == COMM_SHM ? "shm" : "mpi");
    if (st == 0 && c->ops->destroy) c->ops->destroy(c);
    if (st == 0) {
        c->ops = &comm_mpi_ops, c->impl = NULL, c->be = NULL;
        if (want == COMM_STAGED) st = comm_staged_attach(c, be, &mine);
        else if (want == COMM_NCCL) st = comm_nccl_attach(c, be, &mine);
    }
    int rc = comm_check(c, st, &mine);
    comm_op_end(c, outer);
    if (rc) {
        if (e) *e = mine;
        return -1;
    }
    return 0;
}

/* ---- the MPI implementation on host memory ---- */

/* MPI counts are int: a part or a whole above INT_MAX floats (8 GiB) is refused with a message. */
static int comm_int_count(size_t n, const char *what) {
    if (n > (size_t)INT_MAX) xr_die("%s of %zu floats: more than MPI's int count (split the buffer)", what, n);
    return (int)n;
}

typedef struct {
    CollKind kind;
    float *buf;
    int nrq;
    MPI_Request *rq;
    int *cnt, *displ;
    size_t move_to, move_n; /* reduce-scatter in place: MPI leaves the result at buf[0], moved to its offset */
} MpiReq;

void *comm_mpi_start(Comm *c, CollKind kind, float *buf, size_t n, const size_t *counts) {
    MpiReq *q = xr_calloc(1, sizeof *q);
    q->kind = kind, q->buf = buf;
    if (kind == COLL_ALLREDUCE) {
        q->rq = xr_malloc(sizeof(MPI_Request) * (n / XR_COMM_ELEMS + 1));
        for (size_t i = 0; i < n; i += XR_COMM_ELEMS) {
            size_t k = n - i < XR_COMM_ELEMS ? n - i : XR_COMM_ELEMS;
            comm_checked(MPI_Iallreduce(MPI_IN_PLACE, buf + i, (int)k, MPI_FLOAT, MPI_SUM, c->world, &q->rq[q->nrq++]),
                         "MPI_Iallreduce");
        }
        return q;
    }
    q->rq = xr_malloc(sizeof(MPI_Request));
    q->cnt = xr_malloc(sizeof(int) * (size_t)c->size);
    q->displ = xr_malloc(sizeof(int) * (size_t)c->size);
    size_t off = 0;
    for (int r = 0; r < c->size; r++) {
        q->cnt[r] = comm_int_count(counts[r], coll_names[kind]);
        q->displ[r] = comm_int_count(off, coll_names[kind]);
        if (r == c->rank) q->move_to = off, q->move_n = counts[r];
        off += counts[r];
    }
    comm_int_count(n, coll_names[kind]);
    if (kind == COLL_REDUCE_SCATTER)
        comm_checked(MPI_Ireduce_scatter(MPI_IN_PLACE, buf, q->cnt, MPI_FLOAT, MPI_SUM, c->world, q->rq),
                     "MPI_Ireduce_scatter");
    else
        comm_checked(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, q->cnt, q->displ, MPI_FLOAT, c->world,
                                     q->rq),
                     "MPI_Iallgatherv");
    q->nrq = 1;
    return q;
}

int comm_mpi_test(Comm *c, void *req) {
    (void)c;
    MpiReq *q = req;
    int done = 0;
    comm_checked(MPI_Testall(q->nrq, q->rq, &done, MPI_STATUSES_IGNORE), coll_names[q->kind]);
    if (!done) return 0;
    if (q->kind == COLL_REDUCE_SCATTER && q->move_to && q->move_n)
        memmove(q->buf + q->move_to, q->buf, q->move_n * sizeof(float));
    free(q->rq), free(q->cnt), free(q->displ), free(q);
    return 1;
}

static void comm_mpi_bcast_f32(Comm *c, float *buf, size_t n, int root) {
    for (size_t i = 0; i < n; i += XR_COMM_ELEMS) {
        size_t k = n - i < XR_COMM_ELEMS ? n - i : XR_COMM_ELEMS;
        MPI_Request rq;
        comm_checked(MPI_Ibcast(buf + i, (int)k, MPI_FLOAT, root, c->world, &rq), "MPI_Ibcast");
        comm_mpi_wait_timed(c, 1, &rq, "broadcast");
    }
}

const CommOps comm_mpi_ops = {"mpi", comm_mpi_start, comm_mpi_test, comm_mpi_bcast_f32, NULL, NULL};

/* ---- node-shared memory ---- */

struct CommShm {
    MPI_Win win;        /* MPI_WIN_NULL: no shared memory, priv is this rank's own copy (comm_node_share) */
    char *priv;
    int n;              /* node ranks (comm_node_alloc) */
    int flags;          /* counters per rank */
    int me;             /* this rank's node rank */
    char **region;      /* [n] each rank's data */
    _Atomic uint64_t **flag; /* [n] each rank's counters, one per 64-byte line */
    int *world_rank;    /* [n] the world rank of each node rank (timeout messages) */
};

static int comm_node_room(const Comm *c, size_t bytes, char *why, size_t why_n);

/* Without room for the window (comm_node_room), every rank of the node keeps its own copy, broadcast by the leader in
 * parts below MPI's int count. */
static void *comm_node_private_copy(Comm *c, const void *src, size_t len, int node_rank, CommShm *s) {
    char *p = xr_malloc(len ? len : 1);
    if (node_rank == 0 && len) memcpy(p, src, len);
    for (size_t a = 0; a < len; a += (size_t)1 << 30) {
        size_t k = len - a < (size_t)1 << 30 ? len - a : (size_t)1 << 30;
        MPI_Request rq;
        comm_checked(MPI_Ibcast(p + a, (int)k, MPI_BYTE, 0, c->node, &rq), "MPI_Ibcast(node)");
        comm_mpi_wait_timed(c, 1, &rq, "node copy (no shared memory)");
    }
    s->win = MPI_WIN_NULL, s->priv = p;
    return p;
}

static void *comm_node_share_op(Comm *c, const void *src, size_t n, size_t *out_n, CommShm **h);

void *comm_node_share(Comm *c, const void *src, size_t n, size_t *out_n, CommShm **h) {
    uint64_t outer = comm_op_begin(c);
    void *p = comm_node_share_op(c, src, n, out_n, h);
    comm_op_end(c, outer);
    return p;
}

static void *comm_node_share_op(Comm *c, const void *src, size_t n, size_t *out_n, CommShm **h) {
    *h = NULL;
    uint64_t len = n;
    MPI_Request rq;
    comm_checked(MPI_Ibcast(&len, 1, MPI_UINT64_T, 0, c->node, &rq), "MPI_Ibcast(node)");
    comm_mpi_wait_timed(c, 1, &rq, "node-shared size");
    *out_n = (size_t)len;
    int node_rank;
    comm_checked(MPI_Comm_rank(c->node, &node_rank), "MPI_Comm_rank(node)");
    CommShm *s = xr_calloc(1, sizeof *s);
    char why[256];
    int ok = comm_node_room(c, (size_t)len / (size_t)c->local_size + 1, why, sizeof why), all = 0;
    comm_checked(MPI_Iallreduce(&ok, &all, 1, MPI_INT, MPI_MIN, c->node, &rq), "MPI_Iallreduce(node)");
    comm_mpi_wait_timed(c, 1, &rq, "shared-memory room");
    if (!all) {
        if (node_rank == 0)
            fprintf(stderr, "xrank: rank %d: no node-shared copy of %.1f MB (%s): each rank of the node keeps its own\n",
                    c->rank, (double)len / 1e6, ok ? "another rank's shared-memory directory lacks room" : why);
        *h = s;
        return comm_node_private_copy(c, src, (size_t)len, node_rank, s);
    }
    char *base = NULL;
    /* at least one byte, so an empty buffer still has an address */
    comm_checked(MPI_Win_allocate_shared(node_rank == 0 ? (MPI_Aint)(len ? len : 1) : 0, 1, MPI_INFO_NULL, c->node,
                                         &base, &s->win),
                 "MPI_Win_allocate_shared");
    MPI_Aint sz;
    int du;
    comm_checked(MPI_Win_shared_query(s->win, 0, &sz, &du, &base), "MPI_Win_shared_query");
    if (node_rank == 0 && len) memcpy(base, src, (size_t)len);
    comm_checked(MPI_Ibarrier(c->node, &rq), "MPI_Ibarrier(node)");
    comm_mpi_wait_timed(c, 1, &rq, "node-shared copy");
    *h = s;
    return base;
}

void comm_node_share_free(Comm *c, CommShm *h) {
    (void)c;
    if (!h) return;
    if (h->win != MPI_WIN_NULL) MPI_Win_free(&h->win);
    free(h->priv), free(h->region), free(h->flag), free(h->world_rank), free(h);
}

/* Counters first (one 64-byte line each, so ranks polling a line do not share it with data being written),
 * then the data, rounded up to 64 bytes. */
#define XR_SHM_LINE 64

CommShm *comm_node_alloc(Comm *c, size_t bytes, int flags) {
    uint64_t outer = comm_op_begin(c);
    int n = 1, me = 0;
    comm_checked(MPI_Comm_size(c->node, &n), "MPI_Comm_size(node)");
    comm_checked(MPI_Comm_rank(c->node, &me), "MPI_Comm_rank(node)");
    size_t head = (size_t)(flags > 0 ? flags : 0) * XR_SHM_LINE;
    size_t mine = head + ((bytes + XR_SHM_LINE - 1) / XR_SHM_LINE) * XR_SHM_LINE;
    CommShm *s = xr_calloc(1, sizeof *s);
    s->n = n, s->flags = flags, s->me = me;
    s->region = xr_calloc((size_t)n, sizeof *s->region);
    s->flag = xr_calloc((size_t)n, sizeof *s->flag);
    s->world_rank = xr_calloc((size_t)n, sizeof *s->world_rank);
    MPI_Request wr;
    comm_checked(MPI_Iallgather(&c->rank, 1, MPI_INT, s->world_rank, 1, MPI_INT, c->node, &wr), "MPI_Iallgather(node)");
    comm_mpi_wait_timed(c, 1, &wr, "node-shared allocation");
    char *base = NULL;
    MPI_Info info;
    comm_checked(MPI_Info_create(&info), "MPI_Info_create");
    /* each rank's part page-aligned on its own (its pages first touched by it) rather than packed */
    comm_checked(MPI_Info_set(info, "alloc_shared_noncontig", "true"), "MPI_Info_set");
    /* one line more, to start on a line whatever alignment MPI gives (the segment is mapped page-aligned in
     * every process, so the rounding lands on the same bytes everywhere) */
    comm_checked(MPI_Win_allocate_shared((MPI_Aint)(mine + XR_SHM_LINE), 1, info, c->node, &base,
                                         &s->win),
                 "MPI_Win_allocate_shared");
    MPI_Info_free(&info);
    for (int r = 0; r < n; r++) {
        MPI_Aint sz;
        int du;
        char *p = NULL;
        comm_checked(MPI_Win_shared_query(s->win, r, &sz, &du, &p), "MPI_Win_shared_query");
        p += (XR_SHM_LINE - ((uintptr_t)p & (XR_SHM_LINE - 1))) & (XR_SHM_LINE - 1);
        s->flag[r] = (_Atomic uint64_t *)p;
        s->region[r] = p + head;
    }
    memset(s->region[me], 0, mine - head);
    for (int k = 0; k < flags; k++) atomic_store(&s->flag[me][k * (XR_SHM_LINE / 8)], 0);
    MPI_Request rq;
    comm_checked(MPI_Ibarrier(c->node, &rq), "MPI_Ibarrier(node)");
    comm_mpi_wait_timed(c, 1, &rq, "node-shared allocation");
    comm_op_end(c, outer);
    return s;
}

/* Whether the shared-memory windows of `bytes` per node rank fit in Open MPI's backing directory on this node (1), or
 * why not in `why` (0): a missing directory fails MPI_Win_allocate_shared, a full one kills the job with SIGBUS on
 * first touch. Local. */
static int comm_node_room(const Comm *c, size_t bytes, char *why, size_t why_n) {
    const char *dir = getenv("OMPI_MCA_osc_sm_backing_directory");
    if (!dir || !*dir) dir = "/dev/shm";
    struct statvfs fs;
    double need = 1.1 * (double)c->local_size * ((double)bytes + 4096.0); /* some room left for the others */
    if (statvfs(dir, &fs) != 0) {
        snprintf(why, why_n, "the shared-memory directory %s is missing (%s)", dir, strerror(errno));
        return 0;
    }
    if ((double)fs.f_bavail * (double)fs.f_frsize < need) {
        snprintf(why, why_n, "the shared-memory directory %s has %.0f MB free, %.0f MB needed", dir,
                 (double)fs.f_bavail * (double)fs.f_frsize / 1e6, need / 1e6);
        return 0;
    }
    return 1;
}

int comm_node_alloc_fits(Comm *c, size_t bytes, char *why, size_t why_n) {
    uint64_t outer = comm_op_begin(c);
    int ok = comm_node_room(c, bytes, why, why_n), all = 0;
    MPI_Request rq;
    comm_checked(MPI_Iallreduce(&ok, &all, 1, MPI_INT, MPI_MIN, c->world, &rq), "MPI_Iallreduce");
    comm_mpi_wait_timed(c, 1, &rq, "shared-memory room");
    comm_op_end(c, outer);
    if (all && why_n) why[0] = 0;
    else if (ok && why_n) snprintf(why, why_n, "another rank's shared-memory directory lacks room");
    return all;
}

void *comm_node_region(CommShm *h, int node_rank) { return h->region[node_rank]; }

int comm_node_rank(const Comm *c) {
    int r = 0;
    MPI_Comm_rank(c->node, &r);
    return r;
}

void comm_node_post(CommShm *h, int slot, uint64_t value) {
    atomic_store_explicit(&h->flag[h->me][slot * (XR_SHM_LINE / 8)], value, memory_order_release);
}

/* The first node rank whose counter `slot` is below `value`; -1 when none is. */
static int comm_node_laggard(CommShm *h, int slot, uint64_t value) {
    for (int r = 0; r < h->n; r++)
        if (atomic_load_explicit(&h->flag[r][slot * (XR_SHM_LINE / 8)], memory_order_acquire) < value) return r;
    return -1;
}

int comm_node_ready(CommShm *h, int slot, uint64_t value) { return comm_node_laggard(h, slot, value) < 0; }

/* A wait here is for a peer still computing, not for data to move (nothing to progress): a short spin, then
 * naps, so a waiting rank does not take a core from a peer that shares it (ranks x threads > cores). */
#define XR_NODE_SPIN 0.002
void comm_node_await(Comm *c, CommShm *h, int slot, uint64_t value, const char *what) {
    int late = comm_node_laggard(h, slot, value);
    if (late < 0) return;
    CommPoll p;
    comm_poll_init(&p);
    p.spin = XR_NODE_SPIN;
    /* outside the collective sequence: the late rank is known (its counter), whatever it completed before */
    uint64_t outer = c->op_cur;
    c->op_cur = 0;
    while ((late = comm_node_laggard(h, slot, value)) >= 0) comm_poll_pause_peer(c, &p, what, h->world_rank[late]);
    c->op_cur = outer;
}

int comm_node_leader(const Comm *c) {
    int r = 0;
    MPI_Comm_rank(c->node, &r);
    return r == 0;
}
