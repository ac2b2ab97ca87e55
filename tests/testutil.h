/* testutil.h: tiny assertion helpers for ctest unit tests. A failed check prints file:line and the values
 * that differed, counts the failure, and the test's main returns tu_finish(). Exit code 77 = skipped. */
#ifndef XR_TESTUTIL_H
#define XR_TESTUTIL_H
#include <stdio.h>
#include <stdint.h>
#include <stddef.h>
#include "xr_common.h"

extern int tu_failures;
extern int tu_checks;

#define TU_CHECK(cond, ...)                                                          \
    do {                                                                             \
        tu_checks++;                                                                 \
        if (!(cond)) {                                                               \
            tu_failures++;                                                           \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
        }                                                                            \
    } while (0)

/* Max abs difference between two float arrays; reports the worst index when above tol. Returns max diff. */
double tu_check_close(const char *what, const float *got, const float *want, size_t n, double tol);
/* Path of a file under tests/ (static buffer rotation of 8). */
const char *tu_path(const char *rel);
/* Read a raw little-endian float32 / int32 file written by the fixture scripts; dies when missing. */
float *tu_read_f32(const char *path, size_t *n);
int32_t *tu_read_i32(const char *path, size_t *n);
int tu_finish(const char *name);
/* Seeded xorshift64* stream for test inputs: deterministic across machines and runs. */
typedef struct {
    uint64_t s;
} TuRng;
double tu_rng_unit(TuRng *r);                       /* uniform in (0, 1) */
float *tu_rng_vec(TuRng *r, size_t n, float scale); /* n floats uniform in (-scale, scale), malloc'd */
#define TU_SKIP(...)                      \
    do {                                  \
        printf("SKIPPED: " __VA_ARGS__); \
        printf("\n");                     \
        return 77;                        \
    } while (0)

/* The k-NN reference of test_knn / test_knn_screen: for each of nq queries, every passage scored with
 * knn_score (mining/knn.h), fully sorted (score descending, then index ascending), the first k (index -1,
 * score -inf past np); passage j has global index off + j. */
void tu_knn_brute_force(const float *q, size_t nq, const float *p, size_t np, size_t dim, int64_t off, int k,
                        float *s, int64_t *idx);
/* A scored passage and the top-k order (score descending, then index ascending), for qsort. */
typedef struct {
    float s;
    int64_t i;
} TuPair;
int tu_pair_order(const void *pa, const void *pb);
/* Number of the n top-k slots whose index or score bits differ. */
size_t tu_topk_diff(const float *s1, const int64_t *i1, const float *s2, const int64_t *i2, size_t n);

#endif
