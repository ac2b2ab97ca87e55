/* bench_comm.c: the buffer collectives of dist/comm.h timed as nccl-tests times them: in-place all-reduce,
 * reduce-scatter and all-gather of fp32, sizes doubling from 8 B, algbw = size / time and busbw = algbw x
 * 2(n-1)/n (all-reduce) or (n-1)/n (reduce-scatter, all-gather), where size is the whole buffer (for
 * reduce-scatter the input of one rank, for all-gather the output) and time the slowest rank's mean over the
 * timed iterations (after warmups). One JSON line per (collective, size) on stdout from rank 0.
 * At one rank a collective moves no data (NCCL returns after a launch, MPI after a local check), so the time is
 * the call's latency only: algbw and busbw are null in the JSON ("-" in the table) with a "note" saying so, never a
 * bandwidth of bytes / latency. With --device cuda each rank takes comm_device_index's GPU (node-local rank modulo
 * the visible GPUs), as the CLI does: 2 ranks on a 1-GPU machine share GPU 0 (--impl staged; NCCL refuses that).
 * Usage: mpirun -np N bench_comm [--impl mpi|staged|nccl] [--device cpu|cuda] [--min-bytes 8] [--max-bytes 1G]
 *        [--iters-time 0.2 (seconds per size, at least 1 and at most 1000 iterations)] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "ops.h"

static size_t parse_bytes(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (*end == 'K' || *end == 'k') v *= 1024;
    if (*end == 'M' || *end == 'm') v *= 1048576;
    if (*end == 'G' || *end == 'g') v *= 1073741824.0;
    return (size_t)v;
}

static void run(Comm *c, int kind, float *buf, size_t n, const size_t *counts) {
    if (kind == 0) comm_buf_allreduce(c, buf, n);
    else if (kind == 1) comm_buf_reduce_scatter(c, buf, counts);
    else comm_buf_allgather(c, buf, counts);
}

int main(int argc, char **argv) {
    Comm *c = comm_init(&argc, &argv);
    const char *impl = "mpi", *dev = "cpu";
    size_t lo = 8, hi = (size_t)1 << 30;
    double per_size = 0.2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--impl")) impl = argv[i + 1];
        else if (!strcmp(argv[i], "--device")) dev = argv[i + 1];
        else if (!strcmp(argv[i], "--min-bytes")) lo = parse_bytes(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-bytes")) hi = parse_bytes(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters-time")) per_size = atof(argv[i + 1]);
        else xr_die("bench_comm: unknown argument %s", argv[i]);
    }
    int R = comm_size(c), rank = comm_rank(c);
    XrErr e;
    int cuda = !strcmp(dev, "cuda");
    Backend *be =
        ops_backend_create(cuda ? XR_DEV_CUDA : XR_DEV_CPU, cuda ? comm_device_index(c) : 0, XR_PREC_FP32, 1, &e);
    if (!be) xr_die("rank %d: %s", rank, e.msg);
    int want = comm_impl_parse(impl);
    if (want < 0) xr_die("bench_comm: --impl %s: expected auto, mpi, nccl, staged or shm", impl);
    if (comm_attach(c, be, (CommImpl)want, &e)) xr_die("rank %d: %s", rank, e.msg);
    size_t nmax = hi / sizeof(float);
    float *buf = ops_alloc(be, (nmax ? nmax : 1) * sizeof(float));
    ops_zero(be, buf, nmax);
    size_t *counts = xr_malloc(sizeof(size_t) * (size_t)R);
    static const char *names[] = {"all_reduce", "reduce_scatter", "all_gather"};
    static const char *one_rank_note = "1 rank: the collective moves no data; time is call latency only, no bandwidth";
    if (rank == 0) {
        fprintf(stderr, "# %s on %s, %d ranks; in-place fp32; time = slowest rank's mean; busbw as nccl-tests\n",
                impl, dev, R);
        if (cuda && comm_local_size(c) > ops_device_count(XR_DEV_CUDA))
            fprintf(stderr, "# %d ranks on this node share %d GPU(s) (GPU = node-local rank mod %d)\n",
                    comm_local_size(c), ops_device_count(XR_DEV_CUDA), ops_device_count(XR_DEV_CUDA));
        if (R == 1) fprintf(stderr, "# %s\n", one_rank_note);
        fprintf(stderr, "# %-14s %12s %10s %10s %10s %6s\n", "collective", "size (B)", "time (us)", "algbw GB/s",
                "busbw GB/s", "iters");
    }
    for (int kind = 0; kind < 3; kind++) {
        for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
            size_t n = bytes / sizeof(float);
            if (kind > 0) n -= n % (size_t)R; /* equal parts, as nccl-tests */
            if (n == 0) continue;
            for (int r = 0; r < R; r++) counts[r] = n / (size_t)R + (kind == 0 && r == 0 ? n % (size_t)R : 0);
            /* warmup, and the iteration count from its time (agreed: rank 0's) */
            double t0 = xr_now();
            run(c, kind, buf, n, counts);
            run(c, kind, buf, n, counts);
            double one = (xr_now() - t0) / 2;
            comm_bcast(c, &one, sizeof one, 0);
            int iters = one > 0 ? (int)(per_size / one) : 1000;
            if (iters < 1) iters = 1;
            if (iters > 1000) iters = 1000;
            comm_barrier(c);
            t0 = xr_now();
            for (int it = 0; it < iters; it++) run(c, kind, buf, n, counts);
            double t = (xr_now() - t0) / iters;
            double tmax = t;
            /* slowest rank */
            double *all = (double *)comm_allgather(c, &t, sizeof t, &(size_t){0}, NULL);
            for (int r = 0; r < R; r++) tmax = all[r] > tmax ? all[r] : tmax;
            free(all);
            double size = (double)n * sizeof(float), algbw = size / tmax / 1e9;
            double busbw = algbw * (kind == 0 ? 2.0 * (R - 1) / R : (double)(R - 1) / R);
            if (rank == 0 && R == 1) {
                fprintf(stderr, "  %-14s %12.0f %10.1f %10s %10s %6d\n", names[kind], size, tmax * 1e6, "-", "-", iters);
                printf("{\"bench\": \"comm\", \"impl\": \"%s\", \"device\": \"%s\", \"ranks\": %d, \"collective\": \"%s\", "
                       "\"bytes\": %.0f, \"time_us\": %.2f, \"algbw_gbs\": null, \"busbw_gbs\": null, \"iters\": %d, "
                       "\"note\": \"%s\"}\n",
                       impl, dev, R, names[kind], size, tmax * 1e6, iters, one_rank_note);
                fflush(stdout);
            } else if (rank == 0) {
                fprintf(stderr, "  %-14s %12.0f %10.1f %10.3f %10.3f %6d\n", names[kind], size, tmax * 1e6, algbw, busbw,
                        iters);
                printf("{\"bench\": \"comm\", \"impl\": \"%s\", \"device\": \"%s\", \"ranks\": %d, \"collective\": \"%s\", "
                       "\"bytes\": %.0f, \"time_us\": %.2f, \"algbw_gbs\": %.4f, \"busbw_gbs\": %.4f, \"iters\": %d}\n",
                       impl, dev, R, names[kind], size, tmax * 1e6, algbw, busbw, iters);
                fflush(stdout);
            }
        }
    }
    ops_free(be, buf);
    free(counts);
    comm_finalize(c);
    ops_backend_free(be);
    return 0;
}
