/* bench_knn.c: the CPU search step of `xrank mine` (mining/knn_search) against the machine's measured fp32 GEMM
 * peak (issue 4: target >= 60%). The peak is the best sustained GFLOP/s of OpenBLAS cblas_sgemm and of xrank's
 * AVX-512 kernel, on large square shapes and on the search's own tile shape, with the search's thread count.
 * Output: JSON lines on stdout. Built by benchmarks/CMakeLists.txt (target bench_knn, not part of `all`).
 *
 *   bench_knn --peak [--threads N]    one line: {"bench":"gemm_peak","gflops":G,"threads":N,"impl":...,...}
 *   bench_knn --gemm [--threads N]    one line per GEMM measurement, then the peak line
 * OpenBLAS picks its kernels when it loads, from $OPENBLAS_CORETYPE when set (these VMs set Haswell: AVX2 only).
 * So that the peak is the machine's, --peak and --gemm with OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE set also run
 * themselves with both unset and report the better; --this-env measures only the environment as it is.
 *   bench_knn --search [--threads N] [--dim D] [--passages P] [--queries Q] [--k K] [--peak-gflops G]
 *             [--check C] [--repeats R] [--ranks R]   one line per search: GFLOP/s = 2 Q P D / seconds (top-k
 *             included; with R ranks: the shards searched one after another, the slowest rank + the merge),
 *             and its fraction of the peak (measured in the same process unless --peak-gflops is given).
 * Threads default to omp_get_max_threads() ($OMP_NUM_THREADS), as knn_search's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/cpu_ops.h"
#include "knn.h"
#include "xr_common.h"

/* ---- data: seeded per row, so the vectors do not depend on the thread count ---- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* rows of uniform(-1, 1) values scaled to unit L2 norm (isotropic enough for inner-product scores) */
static float *random_unit_rows(size_t rows, size_t dim, uint64_t seed) {
    float *x = cpu_host_alloc(rows * dim * sizeof *x);
    XR_OMP(omp parallel for schedule(static))
    for (size_t r = 0; r < rows; r++) {
        uint64_t s = seed ^ (r * 0xD1B54A32D192ED03ull);
        double n = 0;
        float *xr = x + r * dim;
        for (size_t i = 0; i < dim; i++) {
            xr[i] = (float)((double)(splitmix(&s) >> 11) / 4503599627370496.0 - 1.0);
            n += (double)xr[i] * xr[i];
        }
        float inv = (float)(1.0 / sqrt(n));
        for (size_t i = 0; i < dim; i++) xr[i] *= inv;
    }
    return x;
}

static int bench_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- GEMM measurements ---- */

typedef enum { IMPL_OPENBLAS, IMPL_OPENBLAS_OMP, IMPL_XRANK } GemmImpl;
static const char *const impl_name[] = {"openblas", "openblas-omp", "xrank-avx512"};

typedef struct {
    GemmImpl impl;
    const char *shape; /* "square" or "search-tile" */
    int M, N, K;       /* square: the whole product; search-tile: one thread's tile */
    double gflops, seconds, max_rel_err;
    long long calls;
} GemmResult;

/* Largest |C - exact| / (|a| |b|) over a sample of entries of C = A B^T (A: M x K, B: N x K, C ldc). */
static double gemm_check(const float *A, const float *B, const float *C, size_t ldc, int M, int N, int K) {
    double worst = 0;
    for (int t = 0; t < 64; t++) {
        int i = (int)((long long)t * 7919 % M), j = (int)((long long)t * 104729 % N);
        double s = 0, na = 0, nb = 0;
        for (int p = 0; p < K; p++) {
            s += (double)A[(size_t)i * K + p] * B[(size_t)j * K + p];
            na += (double)A[(size_t)i * K + p] * A[(size_t)i * K + p];
            nb += (double)B[(size_t)j * K + p] * B[(size_t)j * K + p];
        }
        double err = fabs((double)C[(size_t)i * ldc + j] - s) / (sqrt(na * nb) + 1e-30);
        if (err > worst) worst = err;
    }
    return worst;
}

/* Part p of [0, n) in `parts` pieces, boundaries at multiples of align. */
static void split_rows(int n, int parts, int p, int align, int *lo, int *hi) {
    int units = (n + align - 1) / align;
    int u0 = (int)((long long)units * p / parts), u1 = (int)((long long)units * (p + 1) / parts);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}

/* One square product C[M,N] = A[M,K] B[N,K]^T with nt threads: OpenBLAS's own pool, OpenBLAS single-threaded
 * on a row block per OpenMP thread (core/cpu's pattern), or xrank's kernel on a row block per OpenMP thread. */
static void gemm_square_once(GemmImpl impl, int nt, int M, int N, int K, const float *A, const float *B, float *C,
                             float *scratch, size_t per) {
    if (impl == IMPL_OPENBLAS) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
        return;
    }
    XR_OMP(omp parallel for num_threads(nt) schedule(static))
    for (int p = 0; p < nt; p++) {
        int lo, hi;
        split_rows(M, nt, p, impl == IMPL_XRANK ? 12 : 16, &lo, &hi);
        if (lo >= hi) continue;
        if (impl == IMPL_XRANK)
            cpu_sgemm_avx512_nt(hi - lo, N, K, A + (size_t)lo * K, (size_t)K, B, (size_t)K, C + (size_t)lo * N,
                                (size_t)N, 0, scratch + per * (size_t)p);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, N, K, 1.0f, A + (size_t)lo * K, K, B, K,
                        0.0f, C + (size_t)lo * N, N);
    }
}

static double now_s(void) { return xr_now(); }

/* Repeats `reps` rounds of at least min_s seconds each; the best round's rate. */
static GemmResult gemm_square(GemmImpl impl, int nt, int S, int reps, double min_s) {
    GemmResult r = {impl, "square", S, S, S, 0, 0, 0, 0};
    float *A = random_unit_rows((size_t)S, (size_t)S, 11), *B = random_unit_rows((size_t)S, (size_t)S, 12);
    float *C = cpu_host_alloc((size_t)S * S * sizeof *C);
    size_t per = (cpu_sgemm_avx512_scratch() + 15) & ~(size_t)15;
    float *scratch = cpu_host_alloc(per * (size_t)nt * sizeof *scratch + 64);
    openblas_set_num_threads(impl == IMPL_OPENBLAS ? nt : 1);
    gemm_square_once(impl, nt, S, S, S, A, B, C, scratch, per); /* warm-up: pages, pools */
    for (int rep = 0; rep < reps; rep++) {
        long long calls = 0;
        double t0 = now_s(), t;
        do {
            gemm_square_once(impl, nt, S, S, S, A, B, C, scratch, per);
            calls++;
        } while ((t = now_s() - t0) < min_s);
        double g = 2.0 * S * (double)S * S * (double)calls / t * 1e-9;
        if (g > r.gflops) r.gflops = g, r.seconds = t / (double)calls, r.calls = calls;
    }
    r.max_rel_err = gemm_check(A, B, C, (size_t)S, S, S, S);
    openblas_set_num_threads(1);
    free(A), free(B), free(C), free(scratch);
    return r;
}

/* The search's GEMM alone, shaped as knn_search runs it: every thread multiplies successive tiles of P passages
 * of a shard much larger than the caches with its own block of Q queries, tile[P x Q] = passages . queries^T
 * (the tile is overwritten; no top-k). */
static GemmResult gemm_search_tile(GemmImpl impl, int nt, int P, int Q, int K, int reps, double min_s) {
    GemmResult r = {impl, "search-tile", P, Q, K, 0, 0, 0, 0};
    const size_t n_tiles = (size_t)((256u << 20) / ((size_t)P * K * sizeof(float))) + 1; /* > 256 MiB of passages */
    float *Qs = random_unit_rows((size_t)Q * nt, (size_t)K, 21), *Ps = random_unit_rows(n_tiles * P, (size_t)K, 22);
    float *C = cpu_host_alloc((size_t)nt * P * Q * sizeof *C);
    size_t per = (cpu_sgemm_avx512_scratch() + 15) & ~(size_t)15;
    float *scratch = cpu_host_alloc(per * (size_t)nt * sizeof *scratch + 64);
    openblas_set_num_threads(1);
    for (int rep = -1; rep < reps; rep++) { /* rep -1: warm-up */
        long long calls = 0;
        double t0 = now_s(), t;
        do {
            XR_OMP(omp parallel for num_threads(nt) schedule(static))
            for (int p = 0; p < nt; p++) {
                const float *q = Qs + (size_t)p * Q * K;
                float *c = C + (size_t)p * P * Q;
                for (size_t tl = 0; tl < n_tiles; tl++) {
                    const float *pt = Ps + tl * P * (size_t)K;
                    if (impl == IMPL_XRANK)
                        cpu_sgemm_avx512_nt(P, Q, K, pt, (size_t)K, q, (size_t)K, c, (size_t)Q, 0,
                                            scratch + per * (size_t)p);
                    else
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, Q, K, 1.0f, pt, K, q, K, 0.0f, c, Q);
                }
            }
            calls += (long long)n_tiles * nt;
        } while ((t = now_s() - t0) < min_s);
        double g = 2.0 * P * (double)Q * K * (double)calls / t * 1e-9;
        if (rep >= 0 && g > r.gflops) r.gflops = g, r.seconds = t / (double)calls, r.calls = calls;
    }
    r.max_rel_err = gemm_check(Ps + (n_tiles - 1) * P * (size_t)K, Qs + (size_t)(nt - 1) * Q * K,
                               C + (size_t)(nt - 1) * P * Q, (size_t)Q, P, Q, K);
    free(Qs), free(Ps), free(C), free(scratch);
    return r;
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v ? v : dflt;
}

static void print_gemm(const GemmResult *r, int nt) {
    printf("{\"bench\":\"gemm\",\"impl\":\"%s\",\"shape\":\"%s\",\"M\":%d,\"N\":%d,\"K\":%d,\"threads\":%d,"
           "\"gflops\":%.2f,\"seconds_per_call\":%.6f,\"calls\":%lld,\"max_rel_err\":%.3g}\n",
           impl_name[r->impl], r->shape, r->M, r->N, r->K, nt, r->gflops, r->seconds, r->calls, r->max_rel_err);
    fflush(stdout);
}

/* All measurements; returns the best. verbose: a line for each. */
static GemmResult measure_peak(int nt, int verbose) {
    GemmResult best = {0};
    int have_avx512 = cpu_sgemm_avx512_available();
    const int squares[] = {2048, 4096};
    for (size_t s = 0; s < sizeof squares / sizeof squares[0]; s++)
        for (int impl = 0; impl < 3; impl++) {
            if (impl == IMPL_XRANK && !have_avx512) continue;
            if (impl == IMPL_OPENBLAS_OMP && nt == 1) continue; /* the same as IMPL_OPENBLAS */
            GemmResult r = gemm_square((GemmImpl)impl, nt, squares[s], 3, 0.5);
            if (verbose) print_gemm(&r, nt);
            if (r.gflops > best.gflops) best = r;
        }
    const int dims[] = {384, 768};
    KnnOpts ko;
    knn_opts_default(&ko);
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int impl = 0; impl < 3; impl++) {
            if (impl == IMPL_OPENBLAS_OMP || (impl == IMPL_XRANK && !have_avx512)) continue;
            GemmResult r = gemm_search_tile((GemmImpl)impl, nt, (int)ko.passage_tile, (int)ko.query_block, dims[d],
                                            3, 0.5);
            if (verbose) print_gemm(&r, nt);
            if (r.gflops > best.gflops) best = r;
        }
    return best;
}

/* The peak line. other: the child's peak line (environment unset), or NULL; the better of the two is "gflops". */
static void print_peak(const GemmResult *b, int nt, const char *other) {
    char mine[1024];
    snprintf(mine, sizeof mine,
             "{\"gflops\":%.2f,\"impl\":\"%s\",\"shape\":\"%s\",\"M\":%d,\"N\":%d,\"K\":%d,\"openblas_core\":\"%s\","
             "\"OPENBLAS_CORETYPE\":\"%s\",\"OPENBLAS_L2_SIZE\":\"%s\"}",
             b->gflops, impl_name[b->impl], b->shape, b->M, b->N, b->K, openblas_get_corename(),
             env_or("OPENBLAS_CORETYPE", ""), env_or("OPENBLAS_L2_SIZE", ""));
    double g = b->gflops, og = 0;
    const char *at = other ? strstr(other, "\"gflops\":") : NULL;
    if (at) og = atof(at + 9);
    const char *best = og > g ? other : mine;
    /* the best measurement's fields first (gflops, impl, ...), then each environment's own line */
    printf("{\"bench\":\"gemm_peak\",\"threads\":%d,%.*s,\"env_as_set\":%s", nt, (int)strlen(best) - 2, best + 1,
           mine);
    if (at) printf(",\"env_unset\":%s", other);
    printf("}\n");
    fflush(stdout);
}

/* Runs this program again with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (`--peak --this-env --threads nt`)
 * and returns its peak line's inner object ({...}, malloc'd), or NULL when it failed (said on stderr). */
static char *peak_env_unset(int nt) {
    int fd[2];
    if (pipe(fd) != 0) return perror("bench_knn: pipe"), NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return perror("bench_knn: fork"), NULL;
    if (pid == 0) {
        close(fd[0]);
        if (dup2(fd[1], 1) < 0) _exit(126);
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv("OPENBLAS_L2_SIZE");
        char nts[16];
        snprintf(nts, sizeof nts, "%d", nt);
        execl("/proc/self/exe", "bench_knn", "--peak", "--this-env", "--threads", nts, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    size_t cap = 4096, len = 0;
    char *buf = xr_malloc(cap);
    ssize_t r;
    while ((r = read(fd[0], buf + len, cap - 1 - len)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap) buf = xr_realloc(buf, cap *= 2);
    }
    close(fd[0]);
    buf[len] = 0;
    int status = 0;
    waitpid(pid, &status, 0);
    char *in = strstr(buf, "\"env_as_set\":");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !in) {
        fprintf(stderr, "bench_knn: the run with OPENBLAS_CORETYPE unset failed (status %d)\n", status);
        free(buf);
        return NULL;
    }
    in += strlen("\"env_as_set\":");
    char *end = strchr(in, '}');
    if (!end) {
        free(buf);
        return NULL;
    }
    end[1] = 0;
    memmove(buf, in, strlen(in) + 1);
    return buf;
}

/* ---- search ---- */

typedef struct {
    float s;
    int64_t i;
} Pair;

static int pair_order(const void *pa, const void *pb) {
    const Pair *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* Brute force for query row qi: every knn_score, sorted; number of slots that differ from the search's. */
static int check_query(const float *Q, const float *P, size_t np, size_t dim, size_t qi, int k, const float *s,
                       const int64_t *idx, Pair *all) {
    XR_OMP(omp parallel for schedule(static))
    for (size_t j = 0; j < np; j++) all[j] = (Pair){knn_score(Q + qi * dim, P + j * dim, dim), (int64_t)j};
    qsort(all, np, sizeof *all, pair_order);
    int bad = 0;
    for (int j = 0; j < k; j++) {
        const float *sj = s + qi * (size_t)k + j;
        if (all[j].i != idx[qi * (size_t)k + j] || memcmp(&all[j].s, sj, sizeof *sj) != 0) bad++;
    }
    return bad;
}

typedef struct {
    size_t dim, passages, queries;
    int k, repeats, check, ranks;
    double peak;
    const char *peak_impl;
} SearchCase;

/* The search as `xrank mine` runs it on `ranks` ranks, one after another in this process: every rank's shard
 * (a contiguous range of passages) searched with knn_search, the per-rank lists merged with knn_merge_topk.
 * Seconds per step: the slowest rank's search and its split (knn.h's KnnStats), then the merge; queries/s as if
 * the ranks ran side by side on their own cores (slowest rank + merge). Memory per rank: its shard of
 * embeddings, knn_search's heaps (queries x (k + guard) candidates) and score tiles (threads x block x tile). */
static int run_search(const SearchCase *c, int nt) {
    float *P = random_unit_rows(c->passages, c->dim, 1000 + c->dim);
    float *Q = random_unit_rows(c->queries, c->dim, 2000 + c->dim);
    const int R = c->ranks;
    const size_t nk = c->queries * (size_t)c->k;
    float *ls = xr_malloc((size_t)R * nk * sizeof *ls), *s = xr_malloc(nk * sizeof *s);
    int64_t *li = xr_malloc((size_t)R * nk * sizeof *li), *idx = xr_malloc(nk * sizeof *idx);
    KnnOpts o;
    knn_opts_default(&o);
    KnnStats slow = {0};
    XrErr e;
    double best = INFINITY, best_rank = 0, best_merge = 0;
    int64_t n_exh = 0;
    for (int rep = 0; rep < c->repeats; rep++) {
        double t_rank = 0;
        KnnStats worst = {0};
        n_exh = 0;
        for (int r = 0; r < R; r++) {
            size_t lo = c->passages * (size_t)r / (size_t)R, hi = c->passages * (size_t)(r + 1) / (size_t)R;
            KnnStats st = {0};
            double t0 = now_s();
            if (knn_search(Q, c->queries, P + lo * c->dim, hi - lo, c->dim, (int64_t)lo, c->k, &o,
                           R > 1 ? ls + (size_t)r * nk : s, R > 1 ? li + (size_t)r * nk : idx, &st, &e)) {
                fprintf(stderr, "bench_knn: %s\n", e.msg);
                return 1;
            }
            double t = now_s() - t0;
            n_exh += st.n_exhaustive;
            if (t > t_rank) t_rank = t, worst = st;
        }
        double t0 = now_s();
        if (R > 1) knn_merge_topk(c->queries, c->k, (size_t)R, ls, li, s, idx);
        double t_merge = now_s() - t0;
        if (t_rank + t_merge < best) best = t_rank + t_merge, best_rank = t_rank, best_merge = t_merge, slow = worst;
    }
    int checked = 0, bad = 0;
    if (c->check > 0) {
        Pair *all = xr_malloc(c->passages * sizeof *all);
        for (int t = 0; t < c->check; t++) {
            size_t qi = (size_t)t * (c->queries - 1) / (size_t)(c->check > 1 ? c->check - 1 : 1);
            bad += check_query(Q, P, c->passages, c->dim, qi, c->k, s, idx, all);
            checked++;
        }
        free(all);
    }
    const double mib = 1.0 / 1048576.0;
    size_t kk = (size_t)c->k + (size_t)o.guard;
    double shard_mib = (double)((c->passages + (size_t)R - 1) / (size_t)R) * (double)c->dim * 4 * mib;
    double heap_mib = (double)c->queries * (double)kk * 16 * mib;
    double tile_mib = (double)nt * (double)o.query_block * (double)o.passage_tile * 4 * mib;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double g = 2.0 * (double)c->queries * (double)c->passages * (double)c->dim / best * 1e-9;
    printf("{\"bench\":\"knn_search\",\"dim\":%zu,\"passages\":%zu,\"queries\":%zu,\"k\":%d,\"threads\":%d,"
           "\"ranks\":%d,\"query_block\":%zu,\"passage_tile\":%zu,\"guard\":%d,\"seconds\":%.4f,\"repeats\":%d,"
           "\"queries_per_s\":%.1f,\"gflops\":%.2f,\"peak_gflops\":%.2f,\"peak_impl\":\"%s\",\"fraction_of_peak\":%.4f,"
           "\"split_s\":{\"slowest_rank\":%.4f,\"norms\":%.4f,\"gemm\":%.4f,\"screen\":%.4f,\"rescore\":%.4f,"
           "\"merge\":%.4f},\"memory_mib_per_rank\":{\"shard\":%.1f,\"heaps\":%.1f,\"tiles\":%.1f},"
           "\"process_peak_rss_mib\":%.1f,\"n_exhaustive\":%lld,\"checked_queries\":%d,\"check_mismatched_slots\":%d,"
           "\"openblas_core\":\"%s\",\"OPENBLAS_CORETYPE\":\"%s\",\"OPENBLAS_L2_SIZE\":\"%s\"}\n",
           c->dim, c->passages, c->queries, c->k, nt, R, o.query_block, o.passage_tile, o.guard, best, c->repeats,
           (double)c->queries / best, g, c->peak, c->peak_impl, c->peak > 0 ? g / c->peak : 0.0, best_rank,
           slow.t_norms, slow.t_gemm, slow.t_screen, slow.t_rescore, best_merge, shard_mib, heap_mib, tile_mib,
           (double)ru.ru_maxrss / 1024.0, (long long)n_exh, checked, bad, openblas_get_corename(),
           env_or("OPENBLAS_CORETYPE", ""), env_or("OPENBLAS_L2_SIZE", ""));
    fflush(stdout);
    free(P), free(Q), free(s), free(idx), free(ls), free(li);
    return bad ? 3 : 0;
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s --peak | --gemm | --search [--threads N] [--this-env] [--dim D] [--passages P] [--queries Q]\n"
            "          [--k K] [--ranks R] [--repeats R] [--check C] [--peak-gflops G]\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv) {
    int mode = 0, this_env = 0; /* mode: 1 peak, 2 gemm, 3 search */
    SearchCase c = {384, 200000, 2000, 100, 2, 4, 1, 0, "measured"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--peak")) mode = 1;
        else if (!strcmp(a, "--gemm")) mode = 2;
        else if (!strcmp(a, "--search")) mode = 3;
        else if (!strcmp(a, "--this-env")) this_env = 1;
        else if (v && !strcmp(a, "--threads")) {
#ifdef _OPENMP
            omp_set_num_threads(atoi(v));
#endif
            i++;
        } else if (v && !strcmp(a, "--dim")) c.dim = (size_t)atol(v), i++;
        else if (v && !strcmp(a, "--passages")) c.passages = (size_t)atol(v), i++;
        else if (v && !strcmp(a, "--queries")) c.queries = (size_t)atol(v), i++;
        else if (v && !strcmp(a, "--k")) c.k = atoi(v), i++;
        else if (v && !strcmp(a, "--repeats")) c.repeats = atoi(v), i++;
        else if (v && !strcmp(a, "--check")) c.check = atoi(v), i++;
        else if (v && !strcmp(a, "--ranks")) c.ranks = atoi(v), i++;
        else if (v && !strcmp(a, "--peak-gflops")) c.peak = atof(v), c.peak_impl = "given", i++;
        else usage(argv[0]);
    }
    if (!mode || c.dim == 0 || c.passages == 0 || c.queries == 0 || c.k < 1 || c.repeats < 1 || c.ranks < 1) usage(argv[0]);
    int nt = bench_threads();
    if (mode == 1 || mode == 2) {
        GemmResult b = measure_peak(nt, mode == 2);
        char *other = NULL;
        if (!this_env && (getenv("OPENBLAS_CORETYPE") || getenv("OPENBLAS_L2_SIZE"))) other = peak_env_unset(nt);
        print_peak(&b, nt, other);
        free(other);
        return 0;
    }
    if (c.peak <= 0) { /* this environment's peak only: give the machine's with --peak-gflops */
        GemmResult b = measure_peak(nt, 0);
        c.peak = b.gflops;
        c.peak_impl = impl_name[b.impl];
    }
    return run_search(&c, nt);
}
