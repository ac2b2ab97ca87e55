/* cuda_testutil.h: shared by the CUDA op tests: a seeded xorshift input stream, upload to the device, and the
 * GPU-vs-CPU comparison that prints each op's max abs diff. Include after testutil.h, ops.h and cuda/ops_cuda.h,
 * with XR_CUDA_TEST_SEED defined. */
#ifndef XR_CUDA_TESTUTIL_H
#define XR_CUDA_TESTUTIL_H

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
/* Copies the GPU result back, compares it with the CPU result and prints the max abs diff. */
static double cmp(Backend *g, const char *what, const float *cpu, const float *dev, size_t n, double tol) {
    float *h = xr_malloc(n * sizeof(float));
    cuda_ops_to_host(g, h, dev, n * sizeof(float));
    double md = tu_check_close(what, h, cpu, n, tol);
    printf("%-40s n=%-8zu max abs diff %.3g (tol %.0e)\n", what, n, md, tol);
    free(h);
    return md;
}
#endif
