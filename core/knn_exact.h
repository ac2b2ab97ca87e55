/* knn_exact.h: the exact score of exact k-NN search (mining/knn.h), one definition for the CPU search, the
 * CPU backend's knn_rescore and the CUDA kernel of knn_rescore, so that every path reports the same bits:
 * q . p with each float x float product exact in double, four interleaved partial sums (element i goes to sum
 * i % 4, the tail past the last multiple of 4 to sum 0), added as (s0 + s1) + (s2 + s3) and rounded to float.
 * A fused multiply-add gives the same result (the product is exact), so no contraction setting matters. */
#ifndef XR_KNN_EXACT_H
#define XR_KNN_EXACT_H
#include <stddef.h>

#ifdef __CUDACC__
#define XR_KNN_HD __host__ __device__
#else
#define XR_KNN_HD
#endif

/* Elements [i0, i0 + cnt) of q . p (q and p point at element i0; i0 a multiple of 4; dim4 = dim rounded down
 * to a multiple of 4) added into the partial sums a[4] in the contract's order. Consecutive chunks covering
 * [0, dim) give exactly knn_exact_dot's sums (the CUDA kernel sums staged row chunks this way). */
static inline XR_KNN_HD void knn_exact_acc(double a[4], const float *q, const float *p, size_t i0, size_t cnt,
                                           size_t dim4) {
    size_t i = 0, cnt4 = dim4 > i0 ? (dim4 - i0 < cnt ? dim4 - i0 : cnt) : 0;
    for (; i < cnt4; i += 4) {
        a[0] += (double)q[i] * (double)p[i];
        a[1] += (double)q[i + 1] * (double)p[i + 1];
        a[2] += (double)q[i + 2] * (double)p[i + 2];
        a[3] += (double)q[i + 3] * (double)p[i + 3];
    }
    for (; i < cnt; i++) a[0] += (double)q[i] * (double)p[i];
}

static inline XR_KNN_HD float knn_exact_finish(const double a[4]) { return (float)((a[0] + a[1]) + (a[2] + a[3])); }

static inline XR_KNN_HD float knn_exact_dot(const float *q, const float *p, size_t dim) {
    double a[4] = {0, 0, 0, 0};
    knn_exact_acc(a, q, p, 0, dim, dim & ~(size_t)3);
    return knn_exact_finish(a);
}

#endif
