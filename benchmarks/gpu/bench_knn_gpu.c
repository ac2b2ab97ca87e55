/* bench_knn_gpu.c: the GPU search of `xrank mine --device cuda` (mining/knn_device.h: ops_knn_screen tiles,
 * exact rescoring, the rounding-bound check) on synthetic unit embeddings, against the GEMM peak of the same
 * backend measured in the same call (ops_gemm on the screening's own shape, block x tile x dim, and on a large
 * square-ish shape; the best is the peak). The CPU search's answer is the reference for --check queries.
 * Built by benchmarks/CMakeLists.txt (target bench_knn_gpu, not part of `all`).
 *
 *   bench_knn_gpu [--passages N] [--dim D] [--queries Q] [--k K[,K2..]] [--precision P[,P2]] (fp32, bf16)
 *                 [--block B] [--tile T] [--memory MIB] [--check C]
 * One JSON line per precision and k on stdout, in the order given: queries/s, search seconds, screening GFLOP/s
 * (2 Q N D / seconds, everything included: uploads of the queries, selection, rescoring, bound checks), its
 * fraction of the peak, device MiB, queries screened again, and the mismatches against the CPU search on the first
 * C queries (0 = exact). The embeddings are made once and the CPU search's answer computed once per k, for all
 * precisions; each precision's shard is uploaded once for all its k (upload_s); data_s and check_s say what the
 * data and the CPU check took, t_s the seconds since the start (one process serves the whole step). rescore_s
 * holds select_s, the host's sort and bound check; setup_* split upload_s (the shard's check, its upload, and with
 * keep32 the bf16 copy made on the device). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knn.h"
#include "knn_device.h"
#include "ops.h"
#include "xr_common.h"
#include "xr_par.h"

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* unit rows, seeded per row (independent of the thread count) */
static float *unit_rows(size_t rows, size_t dim, uint64_t seed) {
    float *x = xr_malloc(rows * dim * sizeof *x);
    XR_OMP(omp parallel for schedule(static))
    for (size_t r = 0; r < rows; r++) {
        uint64_t s = seed ^ (r * 0xD1B54A32D192ED03ull);
        double n = 0;
        float *xr = x + r * dim;
        for (size_t i = 0; i < dim; i++) {
            xr[i] = (float)((double)(splitmix(&s) >> 11) / 4503599627370496.0 - 1.0);
            n += (double)xr[i] * xr[i];
        }
        for (size_t i = 0; i < dim; i++) xr[i] = (float)(xr[i] / sqrt(n));
    }
    return x;
}

/* Best GFLOP/s of ops_gemm (C = A B^T, the backend's precision) on M x N x K, over a few timed repeats. */
static double gemm_gflops(Backend *be, int M, int N, int K) {
    float *A = ops_alloc(be, (size_t)M * K * 4), *B = ops_alloc(be, (size_t)N * K * 4), *C = ops_alloc(be, (size_t)M * N * 4);
    float *h = xr_calloc((size_t)(M > N ? M : N) * K, 4);
    ops_to_device(be, A, h, (size_t)M * K * 4);
    ops_to_device(be, B, h, (size_t)N * K * 4);
    float sink;
    double best = 0;
    for (int rep = 0; rep < 4; rep++) {
        int iters = rep == 0 ? 1 : 5;
        double t0 = xr_now();
        for (int i = 0; i < iters; i++) ops_gemm(be, 0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
        ops_to_host(be, &sink, C, 4); /* waits for the stream */
        double dt = xr_now() - t0;
        if (rep > 0 && dt > 0) {
            double g = 2.0 * M * N * K * iters / dt / 1e9;
            if (g > best) best = g;
        }
    }
    ops_free(be, A), ops_free(be, B), ops_free(be, C);
    free(h);
    return best;
}

int main(int argc, char **argv) {
    size_t np = 1000000, dim = 768, nq = 10000, block = 1024, tile = 65536, mem_mib = 0, check = 64;
    char ks[64] = "100,1000", precs[32] = "fp32";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) xr_die("%s needs a value", a);
        if (!strcmp(a, "--passages")) np = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--dim")) dim = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--queries")) nq = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--k")) snprintf(ks, sizeof ks, "%s", v);
        else if (!strcmp(a, "--precision")) snprintf(precs, sizeof precs, "%s", v);
        else if (!strcmp(a, "--block")) block = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--tile")) tile = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--memory")) mem_mib = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--check")) check = strtoull(v, NULL, 10);
        else xr_die("unknown flag %s (see the header of bench_knn_gpu.c)", a);
        i++;
    }
    /* XR_FAKE_GPU=1 (the device check's rehearsal): the CPU backend stands in, fp32 only */
    const char *fake = getenv("XR_FAKE_GPU");
    XrDevice dev = fake && !strcmp(fake, "1") ? XR_DEV_CPU : XR_DEV_CUDA;
    if (dev == XR_DEV_CUDA && ops_device_count(XR_DEV_CUDA) < 1) {
        printf("{\"bench\":\"knn_gpu\",\"skipped\":\"no GPU visible (or a build without the CUDA backend)\"}\n");
        return 77;
    }
    const double t_start = xr_now();
    double t0 = xr_now();
    float *P = unit_rows(np, dim, 11), *Q = unit_rows(nq, dim, 22);
    double t_data = xr_now() - t0;
    int kmax = 0, nk = 0, kv[16];
    for (char *p = ks; *p && nk < 16;) {
        int k = (int)strtol(p, &p, 10);
        if (k < 1) xr_die("--k %s: each k must be >= 1", ks);
        kv[nk++] = k;
        if (k > kmax) kmax = k;
        if (*p == ',') p++;
    }
    /* the CPU search's answer on the first `check` queries, per k, made when first needed, kept for all precisions */
    size_t nc = check < nq ? check : nq;
    float *ref_s[16] = {0};
    int64_t *ref_i[16] = {0};
    double t_check = 0;
    int skipped = 1;
    for (char *pp = precs; *pp;) {
        char prec[8] = {0};
        size_t len = strcspn(pp, ",");
        if (len == 0 || len >= sizeof prec) xr_die("--precision %s: fp32 or bf16, comma-separated", precs);
        memcpy(prec, pp, len);
        pp += len + (pp[len] == ',');
        if (strcmp(prec, "fp32") && strcmp(prec, "bf16")) xr_die("--precision %s: fp32 or bf16", prec);
        int bf16 = !strcmp(prec, "bf16");
        XrErr e;
        Backend *be = ops_backend_create(dev, 0, bf16 ? XR_PREC_BF16 : XR_PREC_FP32, 0, &e);
        if (!be) {
            printf("{\"bench\":\"knn_gpu\",\"precision\":\"%s\",\"skipped\":\"%s\"}\n", prec, e.msg);
            fflush(stdout);
            continue;
        }
        skipped = 0;
        double peak_shape = gemm_gflops(be, (int)block, (int)(tile < np ? tile : np), (int)dim);
        double peak_big = gemm_gflops(be, 8192, 8192, (int)dim);
        double peak = peak_shape > peak_big ? peak_shape : peak_big;
        KnnDevOpts o;
        knn_dev_opts_default(&o);
        o.bf16 = bf16, o.passage_tile = tile, o.mem_limit = mem_mib << 20;
        t0 = xr_now();
        KnnShard *s = knn_shard_create(be, P, np, dim, 0, block, kmax, &o, &e);
        if (!s) {
            printf("{\"bench\":\"knn_gpu\",\"precision\":\"%s\",\"failed\":\"%s\"}\n", prec, e.msg);
            fflush(stdout);
            ops_backend_free(be);
            continue;
        }
        double t_upload = xr_now() - t0;
        const KnnShardSetup su = knn_shard_setup(s);
        for (int ki = 0; ki < nk; ki++) {
            int k = kv[ki];
            float *os = xr_malloc(nq * (size_t)k * sizeof *os);
            int64_t *oi = xr_malloc(nq * (size_t)k * sizeof *oi);
            KnnStats st = {0};
            t0 = xr_now();
            if (knn_shard_search(s, Q, nq, k, os, oi, &st, &e)) xr_die("%s", e.msg);
            double dt = xr_now() - t0;
            /* the CPU search on the first `check` queries: the same lists, bit for bit */
            size_t bad = 0;
            if (nc && !ref_s[ki]) {
                double tc = xr_now();
                ref_s[ki] = xr_malloc(nc * (size_t)k * sizeof(float));
                ref_i[ki] = xr_malloc(nc * (size_t)k * sizeof(int64_t));
                KnnOpts ko;
                knn_opts_default(&ko);
                if (knn_search(Q, nc, P, np, dim, 0, k, &ko, ref_s[ki], ref_i[ki], NULL, &e)) xr_die("%s", e.msg);
                t_check += xr_now() - tc;
            }
            for (size_t i = 0; i < nc * (size_t)k; i++)
                bad += ref_i[ki][i] != oi[i] || memcmp(&ref_s[ki][i], &os[i], 4) != 0;
            double gf = 2.0 * nq * np * dim / dt / 1e9;
            printf("{\"bench\":\"knn_gpu\",\"precision\":\"%s\",\"passages\":%zu,\"dim\":%zu,\"queries\":%zu,\"k\":%d,"
                   "\"block\":%zu,\"tile\":%zu,\"resident\":%d,\"device_mib\":%.1f,\"seconds\":%.4f,"
                   "\"queries_per_s\":%.1f,\"gflops\":%.1f,\"peak_gflops\":%.1f,\"peak_shape_gflops\":%.1f,"
                   "\"peak_square_gflops\":%.1f,\"fraction_of_peak\":%.3f,\"screened_again\":%lld,\"screen_s\":%.3f,"
                   "\"rescore_s\":%.3f,\"select_s\":%.3f,\"checked_queries\":%zu,\"mismatches\":%zu,\"upload_s\":%.2f,"
                   "\"keep32\":%d,\"setup_check_s\":%.2f,\"setup_upload_s\":%.2f,\"setup_convert_s\":%.3f,"
                   "\"data_s\":%.2f,\"check_s\":%.2f,\"t_s\":%.1f}\n",
                   prec, np, dim, nq, k, block, knn_shard_tile(s), knn_shard_resident(s),
                   knn_shard_bytes(s) / 1048576.0, dt, nq / dt, gf, peak, peak_shape, peak_big,
                   peak > 0 ? gf / peak : 0.0, (long long)st.n_exhaustive, st.t_screen, st.t_rescore, st.t_select, nc, bad,
                   t_upload, knn_shard_keep32(s), su.t_check, su.t_upload, su.t_convert, t_data, t_check,
                   xr_now() - t_start);
            fflush(stdout);
            free(os), free(oi);
        }
        knn_shard_free(s);
        ops_backend_free(be);
    }
    for (int ki = 0; ki < nk; ki++) free(ref_s[ki]), free(ref_i[ki]);
    free(P), free(Q);
    return skipped ? 77 : 0;
}
