/* knn_internal.h: what the CPU search (knn.c) and the device search driver (knn_device.c) share inside
 * mining/: the candidate type and its order, the finite / norm check of the inputs, the exact rescoring of a
 * candidate list on the host and the exhaustive top-k of one query. Not a public header. */
#ifndef XR_KNN_INTERNAL_H
#define XR_KNN_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#include "xr_common.h"

typedef struct {
    float s;
    int64_t i;
} Cand;

/* a ranks below b: lower score, or equal score and larger index */
static inline int cand_worse(Cand a, Cand b) { return a.s < b.s || (a.s == b.s && a.i > b.i); }
/* qsort order of knn.h: score descending, then index ascending */
int knn_cand_order(const void *pa, const void *pb);
/* One pass over rows: the largest L2 norm and the finite check (norms, optional, receives each row's norm).
 * Fails naming the first bad row (offset + row) and element. */
int knn_rows_check_norms(const float *x, size_t rows, size_t dim, int64_t offset, const char *what, double *norms,
                         double *max_norm, XrErr *e);
/* knn_score of the candidates h[0..cnt) against q, in place (passage h[c].i is row h[c].i - offset). */
void knn_score_cands(int avx2, const float *q, const float *passages, size_t dim, int64_t offset, Cand *h, size_t cnt);
/* Exhaustive exact top-k of one query over the shard into heap (room for k); returns the count (unsorted). */
size_t knn_exhaustive_topk(const float *q, const float *passages, size_t n_passages, size_t dim, int64_t offset,
                           size_t k, Cand *heap);

#endif
