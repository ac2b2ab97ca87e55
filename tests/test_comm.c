/* test_comm.c: the buffer collectives of dist/comm.h (all-reduce, reduce-scatter, all-gather, broadcast, blocking
 * and several non-blocking ones in flight at once) on sizes 0, 1, odd, not divisible by the rank count and above
 * 1 Mi floats, against sums computed here; values are small integers so every sum is exact in fp32.
 * Usage: test_comm [--impl mpi|staged|nccl] [--device cpu|cuda]; run by ctest alone (1 rank) and under mpirun
 * (tests/comm.cmake). NCCL and the CUDA device: skipped (77) without a GPU.
 * test_comm --stall kill|stop --timeout S [--impl mpi|shm]: rank 1 of 2 (with mpi: the last of any number) kills (SIGKILL) or stops (SIGSTOP) itself
 * during a loop of all-reduces (mpi) or of node-shared-memory flag exchanges (shm: comm_node_post / comm_node_await,
 * how the trainer's default gradient exchange on one node waits for its peers); rank 0 must stop the job (the
 * dead-peer tests of tests/comm.cmake check the time and the message). --timeout S is --comm-timeout (a heartbeat
 * silent this long), --stall-timeout S --comm-stall-timeout (default 1800).
 * test_comm --stall busy --busy B ...: rank 1 computes for B seconds (alive: its heartbeat goes on) at iteration 20
 * instead, and the loop ends after 40 iterations with exit 0: with B > --timeout the job must not be stopped, with
 * B > --stall-timeout it must be, naming rank 1 as alive but late. --judge R: only rank R applies the timeouts (the
 * others wait 1000 s), so the message tested is R's (a rank on another node than the late one).
 * test_comm --stall leave-ok|leave-fail ...: rank 1 leaves the job at iteration 20 instead of its exchange, the way a
 * command ends (comm_leave with exit 0 / 1, then the teardown: the node-shared window's collective free with shm,
 * MPI_Finalize), and returns; rank 0 must stop the job within seconds naming rank 1 and how it left. leave-exit: rank 1
 * calls exit(0) there without any teardown.
 * test_comm --left-after gather|bcast|gather-fail --busy B ... on 3 ranks: rank 2 computes for B s before a gather to
 * rank 0 (or a 4 MiB broadcast from it), rank 1 takes part and then leaves (comm_leave with exit 0, or 1 with
 * gather-fail, then the teardown), so rank 0 waits for rank 2 while rank 1 has left: rank 0 must not name rank 1 and,
 * with B under --stall-timeout, must finish with the right data; above it, must name rank 2 (tests/comm.cmake). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm.h"
#include "ops.h"
#include "testutil.h"

static float val(int rank, size_t i, int salt) { return (float)((int)((i * 7 + (size_t)salt) % 13) - 6 + rank); }

/* Parts of n floats over R ranks: uneven on purpose (rank r gets about (r + 1) / sum shares, last takes the rest). */
static void split(size_t n, int R, size_t *counts) {
    size_t left = n, tot = (size_t)R * (R + 1) / 2;
    for (int r = 0; r < R; r++) {
        counts[r] = r == R - 1 ? left : n * (size_t)(r + 1) / tot;
        left -= counts[r];
    }
}

typedef struct {
    Comm *c;
    Backend *be;
    int R, rank;
} Ctx;

static float *upload(Ctx *x, const float *h, size_t n) {
    float *d = ops_alloc(x->be, (n ? n : 1) * sizeof(float));
    ops_to_device(x->be, d, h, n * sizeof(float));
    return d;
}

static void download(Ctx *x, float *h, const float *d, size_t n) { ops_to_host(x->be, h, d, n * sizeof(float)); }

static int check_eq(const char *what, size_t n, const float *got, const float *want, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++)
        if (got[i] != want[i]) {
            TU_CHECK(0, "%s n=%zu: [%zu] = %g, want %g", what, n, i, got[i], want[i]);
            return 1;
        }
    tu_checks++;
    return 0;
}

/* Checks all four collectives on n floats; nb: 1 blocking, else that many non-blocking copies in flight. */
static void run_size(Ctx *x, size_t n, int nb) {
    int R = x->R, me = x->rank;
    size_t *counts = xr_malloc(sizeof(size_t) * (size_t)R), off = 0;
    split(n, R, counts);
    for (int r = 0; r < me; r++) off += counts[r];
    float *h = xr_malloc((n ? n : 1) * sizeof(float)), *want = xr_malloc((n ? n : 1) * sizeof(float));
    float **d = xr_malloc(sizeof(float *) * (size_t)nb);
    CommReq **rq = xr_malloc(sizeof(CommReq *) * (size_t)nb);
    char what[64];
    for (int kind = 0; kind < 4; kind++) {
        for (int k = 0; k < nb; k++) {
            for (size_t i = 0; i < n; i++) h[i] = val(me, i, kind * 10 + k);
            d[k] = upload(x, h, n);
        }
        for (int k = 0; k < nb; k++) {
            rq[k] = NULL;
            if (kind == 3) comm_buf_bcast(x->c, d[k], n, R - 1);
            else if (nb == 1 && kind == 0) comm_buf_allreduce(x->c, d[k], n);
            else if (nb == 1 && kind == 1) comm_buf_reduce_scatter(x->c, d[k], counts);
            else if (nb == 1) comm_buf_allgather(x->c, d[k], counts);
            else if (kind == 0) rq[k] = comm_buf_iallreduce(x->c, d[k], n);
            else if (kind == 1) rq[k] = comm_buf_ireduce_scatter(x->c, d[k], counts);
            else rq[k] = comm_buf_iallgather(x->c, d[k], counts);
        }
        if (nb > 1 && kind < 3) {
            for (int k = 0; k < nb; k++) comm_test(x->c, rq[k]);
            for (int k = nb - 1; k >= 0; k--) comm_wait(x->c, rq[k]); /* finishing out of order is allowed */
        }
        for (int k = 0; k < nb; k++) {
            int salt = kind * 10 + k;
            for (size_t i = 0; i < n; i++) {
                float s = 0;
                for (int r = 0; r < R; r++) s += val(r, i, salt);
                if (kind == 0 || kind == 1) want[i] = s;
                else if (kind == 2) {
                    size_t o = 0;
                    int owner = 0;
                    while (owner < R - 1 && i >= o + counts[owner]) o += counts[owner++];
                    want[i] = val(owner, i, salt);
                } else
                    want[i] = val(R - 1, i, salt);
            }
            download(x, h, d[k], n);
            static const char *names[] = {"all-reduce", "reduce-scatter", "all-gather", "broadcast"};
            snprintf(what, sizeof what, "%s%s rank %d/%d", names[kind], nb > 1 ? " (non-blocking)" : "", me, R);
            if (kind == 1) check_eq(what, n, h, want, off, off + counts[me]);
            else check_eq(what, n, h, want, 0, n);
            ops_free(x->be, d[k]);
        }
    }
    free(counts), free(h), free(want), free(d), free(rq);
}

/* Computes (never sleeps: a busy rank, not a stopped one) for `seconds`, after flushing stderr. */
static void busy_for(double seconds) {
    fflush(stderr);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    volatile double sink = 0;
    do {
        for (int i = 0; i < 100000; i++) sink += 1e-9 * i;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec) < seconds);
}

static int stall_test(Comm *c, const char *how, double timeout, double stall, double busy, const char *impl, int judge) {
    int other = judge >= 0 && comm_rank(c) != judge; /* --judge R: only rank R stops the job on a timeout */
    comm_set_timeout(c, other ? 1000 : timeout);
    comm_set_stall_timeout(c, other ? 1000 : stall);
    int late = comm_size(c) - 1, me = comm_rank(c); /* the rank that stalls: the last */
    int shm = !strcmp(impl, "shm");
    if (comm_size(c) < 2 || (shm && comm_size(c) != 2)) {
        fprintf(stderr, "--stall needs 2 ranks (or more with --impl mpi)\n");
        return 2;
    }
    CommShm *h = shm ? comm_node_alloc(c, 64, 1) : NULL;
    if (shm && comm_local_size(c) != 2) {
        fprintf(stderr, "--stall with --impl shm needs both ranks on one node\n");
        return 2;
    }
    float buf[1024];
    int busy_run = how[0] == 'b', iters = busy_run ? 40 : 1000000;
    for (int it = 0; it < iters; it++) {
        if (busy_run && it == 20 && me == late) {
            fprintf(stderr, "test_comm: rank %d busy for %.1f s\n", late, busy);
            busy_for(busy);
        } else if (!strcmp(how, "leave-exit") && it == 20 && me == late) {
            fprintf(stderr, "test_comm: rank %d exits (0) without the communicator's teardown at exchange %d\n", late, it);
            fflush(stderr);
            exit(0); /* the atexit mark, or mpirun's report of a process that exited without MPI_Finalize */
        } else if (how[0] == 'l' && it == 20 && me == late) {
            int code = !strcmp(how, "leave-fail");
            fprintf(stderr, "test_comm: rank %d leaves the job (exit %d) instead of exchange %d\n", late, code, it);
            fflush(stderr);
            comm_leave(c, code);
            if (h) comm_node_share_free(c, h); /* collective (MPI_Win_free): blocks until rank 0 ends the job */
            comm_finalize(c);
            return code;
        } else if (!busy_run && it == 20 && me == late) {
            fprintf(stderr, "test_comm: raising SIG%s in this process\n", how[0] == 'k' ? "KILL" : "STOP");
            fflush(stderr);
            raise(how[0] == 'k' ? SIGKILL : SIGSTOP);
        }
        if (shm) { /* a step: publish mine, wait for every rank's */
            comm_node_post(h, 0, (uint64_t)it + 1);
            comm_node_await(c, h, 0, (uint64_t)it + 1, "flag exchange (node shared memory)");
            continue;
        }
        for (int i = 0; i < 1024; i++) buf[i] = 1;
        comm_buf_allreduce(c, buf, 1024);
        if (buf[0] != (float)comm_size(c)) {
            fprintf(stderr, "rank %d: all-reduce %d gave %g, want %d\n", me, it, (double)buf[0], comm_size(c));
            return 1;
        }
    }
    if (!busy_run) return 1; /* not reached: rank 0 must have been stopped */
    if (h) comm_node_share_free(c, h);
    if (me == 0) printf("test_comm: %d exchanges done, rank %d busy %.1f s, not stopped\n", iters, late, busy);
    comm_barrier(c);
    comm_finalize(c);
    return 0;
}

/* --left-after: see the top of the file. */
static int left_after_test(Comm *c, const char *what, double timeout, double stall, double busy, int judge) {
    int me = comm_rank(c), other = judge >= 0 && me != judge;
    comm_set_timeout(c, other ? 1000 : timeout);
    comm_set_stall_timeout(c, other ? 1000 : stall);
    if (comm_size(c) != 3) {
        fprintf(stderr, "--left-after needs 3 ranks\n");
        return 2;
    }
    for (int i = 0; i < 3; i++) comm_barrier(c); /* some collectives before, as in a run */
    if (me == 2) {
        fprintf(stderr, "test_comm: rank 2 busy for %.1f s before the %s\n", busy, what);
        busy_for(busy);
    }
    int bad = 0;
    if (!strncmp(what, "gather", 6)) {
        int mine[4] = {me, me * 10, me * 100, -me};
        size_t n = 0, counts[3];
        char *all = comm_gather(c, mine, sizeof mine, 0, &n, counts);
        for (int r = 0; me == 0 && r < 3; r++) {
            int got[4];
            memcpy(got, all + r * sizeof mine, sizeof got);
            if (counts[r] != sizeof mine || got[0] != r || got[1] != r * 10 || got[2] != r * 100 || got[3] != -r) {
                fprintf(stderr, "rank 0: gathered part %d is {%d %d %d %d} (%zu bytes), want {%d %d %d %d} (16)\n", r,
                        got[0], got[1], got[2], got[3], counts[r], r, r * 10, r * 100, -r);
                bad = 1;
            }
        }
        free(all);
    } else {
        size_t n = (size_t)4 << 20; /* above the eager limit: the root waits for every receiver */
        unsigned char *b = xr_malloc(n);
        for (size_t i = 0; i < n; i++) b[i] = me == 0 ? (unsigned char)(i * 31 + 7) : 0;
        comm_bcast(c, b, n, 0);
        for (size_t i = 0; i < n && !bad; i++)
            if (b[i] != (unsigned char)(i * 31 + 7)) {
                fprintf(stderr, "rank %d: broadcast byte %zu is %u, want %u\n", me, i, b[i],
                        (unsigned)(unsigned char)(i * 31 + 7));
                bad = 1;
            }
        free(b);
    }
    if (me == 1) {
        int code = !strcmp(what, "gather-fail");
        fprintf(stderr, "test_comm: rank 1 leaves the job (exit %d) after its part of the %s\n", code, what);
        fflush(stderr);
        comm_leave(c, code);
        comm_finalize(c);
        return code || bad;
    }
    if (me == 0 && !bad)
        printf("test_comm: %s done, rank 1 left after its part, rank 2 busy %.1f s, not stopped\n", what, busy);
    fflush(stdout);
    comm_finalize(c);
    return bad;
}

int main(int argc, char **argv) {
    Comm *c = comm_init(&argc, &argv);
    const char *impl = "mpi", *dev = "cpu", *stall = NULL, *left_after = NULL;
    double timeout = 10, stall_s = 1800, busy = 0;
    int judge = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--impl")) impl = argv[i + 1];
        else if (!strcmp(argv[i], "--device")) dev = argv[i + 1];
        else if (!strcmp(argv[i], "--stall")) stall = argv[i + 1];
        else if (!strcmp(argv[i], "--timeout")) timeout = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--stall-timeout")) stall_s = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--busy")) busy = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--judge")) judge = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--left-after")) left_after = argv[i + 1];
    }
    if (left_after) return left_after_test(c, left_after, timeout, stall_s, busy, judge);
    if (stall) return stall_test(c, stall, timeout, stall_s, busy, impl, judge);
    Ctx x = {c, NULL, comm_size(c), comm_rank(c)};
    int want_cuda = !strcmp(dev, "cuda") || !strcmp(impl, "nccl");
    if (want_cuda && ops_device_count(XR_DEV_CUDA) == 0) {
        comm_finalize(c);
        TU_SKIP("no GPU visible: %s on cuda not tested", impl);
    }
    XrErr e;
    x.be = ops_backend_create(want_cuda ? XR_DEV_CUDA : XR_DEV_CPU, want_cuda ? comm_device_index(c) : 0, XR_PREC_FP32, 1,
                              &e);
    if (!x.be) xr_die("%s", e.msg);
    if (comm_attach(c, x.be, (CommImpl)comm_impl_parse(impl), &e)) xr_die("%s", e.msg);
    TU_CHECK(!strcmp(comm_impl_name(c), impl), "implementation %s, asked for %s", comm_impl_name(c), impl);
    static const size_t sizes[] = {0, 1, 2, 3, 7, 1000, 1001, 4099, (1u << 20) + 3};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        run_size(&x, sizes[s], 1);
        run_size(&x, sizes[s], 3);
    }
    /* error agreement: the lowest failing rank's message everywhere, naming the rank when it is not rank 0 */
    XrErr ce = {{0}};
    TU_CHECK(comm_check(c, 0, &ce) == 0, "comm_check with no failure returned an error: %s", ce.msg);
    int last = x.R - 1, st = x.rank == last ? xr_errf(&ce, "cannot write shard %d", x.rank) : 0;
    TU_CHECK(comm_check(c, st, &ce) == -1, "a failure of rank %d not agreed on rank %d", last, x.rank);
    char want[128];
    if (last) snprintf(want, sizeof want, "rank %d of %d: cannot write shard %d", last, x.R, last);
    else snprintf(want, sizeof want, "cannot write shard 0");
    TU_CHECK(!strcmp(ce.msg, want), "rank %d got \"%s\", want \"%s\"", x.rank, ce.msg, want);
    st = x.rank == 0 || x.rank == last ? xr_errf(&ce, "bad input on rank %d", x.rank) : 0;
    TU_CHECK(comm_check(c, st, &ce) == -1 && !strcmp(ce.msg, "bad input on rank 0"),
             "ranks 0 and %d failed: rank %d got \"%s\", want rank 0's message unprefixed", last, x.rank, ce.msg);
    if (x.rank == 0) printf("%s on %s, %d rank(s): %d checks\n", impl, dev, x.R, tu_checks);
    int failed = tu_failures;
    comm_barrier(c);
    comm_finalize(c);
    ops_backend_free(x.be);
    return failed ? 1 : tu_finish("test_comm");
}
