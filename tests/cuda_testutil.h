/* cuda_testutil.h: shared by the CUDA op tests: a seeded xorshift input stream, upload to the device, NaN-poisoned
 * outputs, the two-runs-same-bits and dropout-mask checks, and the GPU-vs-CPU comparison that prints each op's max
 * abs diff. Include after testutil.h, ops.h and cuda/ops_cuda.h,
 * with XR_CUDA_TEST_SEED defined. */
#ifndef XR_CUDA_TESTUTIL_H
#define XR_CUDA_TESTUTIL_H

/* The CPU emulator's build (XRANK_CUDA_EMU, tests/cuemu) runs kernels thousands of times slower than a GPU: there a
 * printed timing (never a check) is skipped unless XR_CUEMU_TIMING=1. Elsewhere this answers 0. */
static inline int cuemu_skip_timing(const char *what) {
#ifdef XR_CUDA_EMU
    const char *e = getenv("XR_CUEMU_TIMING");
    if (!e || strcmp(e, "1") != 0) {
        printf("%s: timing skipped on the CPU emulator (XR_CUEMU_TIMING=1 runs it)\n", what);
        return 1;
    }
#else
    (void)what;
#endif
    return 0;
}

static uint64_t rng = XR_CUDA_TEST_SEED;
static float urand(float lo, float hi) { /* xorshift: deterministic across machines */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) / 16777216.0);
}
static float *rnd(size_t n, float lo, float hi) {
    float *p = xr_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = urand(lo, hi);
    return p;
}
static void *up(Backend *g, const void *h, size_t bytes) {
    void *d = cuda_ops_alloc(g, bytes);
    cuda_ops_to_device(g, d, h, bytes);
    return d;
}
/* A device buffer of n floats, every one NaN: outputs an op overwrites start as NaN, so an element it fails to
 * write fails the comparison. */
static inline float *dev_nan(Backend *g, size_t n) {
    float *h = xr_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = up(g, h, n * sizeof(float));
    free(h);
    return d;
}
/* Two device results must be the same bits (determinism: no atomics in order-dependent sums). */
static inline void same_bits(Backend *g, const char *what, const float *d1, const float *d2, size_t n) {
    float *a = xr_malloc(n * sizeof(float)), *b = xr_malloc(n * sizeof(float));
    cuda_ops_to_host(g, a, d1, n * sizeof(float));
    cuda_ops_to_host(g, b, d2, n * sizeof(float));
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += memcmp(a + i, b + i, sizeof(float)) != 0;
    TU_CHECK(diff == 0, "%s: %zu of %zu elements differ between two GPU runs", what, diff, n);
    free(a), free(b);
}
/* Elements where exactly one of CPU and GPU is 0: dropout masks that differ. */
static inline size_t zero_mismatch(Backend *g, const float *cpu, const float *dev, size_t n) {
    float *h = xr_malloc(n * sizeof(float));
    cuda_ops_to_host(g, h, dev, n * sizeof(float));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += (h[i] == 0.0f) != (cpu[i] == 0.0f);
    free(h);
    return m;
}
/* Copies the GPU result back, compares it with the CPU result and prints the max abs diff. */
static inline double cmp(Backend *g, const char *what, const float *cpu, const float *dev, size_t n, double tol) {
    float *h = xr_malloc(n * sizeof(float));
    cuda_ops_to_host(g, h, dev, n * sizeof(float));
    double md = tu_check_close(what, h, cpu, n, tol);
    printf("%-40s n=%-8zu max abs diff %.3g (tol %.0e)\n", what, n, md, tol);
    free(h);
    return md;
}
/* The same with a relative bound: each difference over max(|cpu|, rms of cpu), so elements that cancel to
 * nearly 0 are judged at the array's scale; NaN on one side only fails. Prints the worst ratio. */
static inline double cmp_rel(Backend *g, const char *what, const float *cpu, const float *dev, size_t n,
                             double rtol) {
    float *h = xr_malloc(n * sizeof(float));
    cuda_ops_to_host(g, h, dev, n * sizeof(float));
    double ss = 0, worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) ss += (double)cpu[i] * cpu[i];
    double rms = n ? sqrt(ss / (double)n) : 0;
    for (size_t i = 0; i < n; i++) {
        double w = fabs((double)cpu[i]), sc = w > rms ? w : rms, d = fabs((double)h[i] - (double)cpu[i]);
        double r = isnan(h[i]) || isnan(cpu[i]) ? INFINITY : (sc > 0 ? d / sc : d);
        if (r > worst || (i == 0 && r == worst)) worst = r, wi = i;
    }
    tu_checks++;
    if (worst > rtol) {
        tu_failures++;
        fprintf(stderr, "%s: relative diff %.3g > %.0e at [%zu]: got %.9g want %.9g\n", what, worst, rtol, wi,
                n ? h[wi] : 0.0f, n ? cpu[wi] : 0.0f);
    }
    printf("%-48s n=%-8zu max rel diff %.3g (tol %.0e)\n", what, n, worst, rtol);
    free(h);
    return worst;
}
#endif
