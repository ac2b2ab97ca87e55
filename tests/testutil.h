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
#endif
