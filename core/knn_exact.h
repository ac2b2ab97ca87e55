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

static inline XR_KNN_HD float knn_exact_dot(const float *q, const float *p, size_t dim) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= dim; i += 4) {
        a0 += (double)q[i] * (double)p[i];
        a1 += (double)q[i + 1] * (double)p[i + 1];
        a2 += (double)q[i + 2] * (double)p[i + 2];
        a3 += (double)q[i + 3] * (double)p[i + 3];
    }
    for (; i < dim; i++) a0 += (double)q[i] * (double)p[i];
    return (float)((a0 + a1) + (a2 + a3));
}

#endif
