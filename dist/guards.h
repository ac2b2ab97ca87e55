/* guards.h: the training guards of the trainer (docs/TRAINING.md): the collapse detector (scores nearly constant
 * within groups and the loss at its constant-score value for N logging windows in a row: a run that has stopped
 * learning) and the search for the first tensor holding a non-finite value (to name it when a step goes NaN). */
#ifndef XR_GUARDS_H
#define XR_GUARDS_H
#include <stddef.h>

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int windows;              /* collapsed windows in a row that fire (<= 0: off) */
    double spread_max, tol;   /* mean within-group standard deviation below spread_max, |loss - ref| <= tol */
    double ref;               /* the loss of constant scores (NAN: the loss test is skipped) */
    int run;                  /* collapsed windows in a row so far */
} CollapseDetector;

void collapse_init(CollapseDetector *d, int windows, double spread_max, double tol, double ref);
/* The spread of one micro-batch, summed over its n_groups groups: each group's standard deviation of its G logits
 * (G == 1, pairs: the standard deviation of all n_groups logits, times n_groups), so that a sum over micro-batches
 * divided by the examples is the mean spread. */
double collapse_spread_sum(const float *logits, int n_groups, int G);
/* One logging window's mean spread and mean loss: returns 1 when it makes `windows` collapsed windows in a row
 * (once per stretch of collapsed windows: the count restarts after a healthy window), else 0. */
int collapse_window(CollapseDetector *d, double spread, double loss);

/* Index of m's first tensor (model order) with a non-finite value in its part of v[lo, hi) (v a flat buffer laid
 * out as the parameters, e.g. encoder_grads), or -1. Through the backend (works on device memory). */
int guard_first_nonfinite(Encoder *m, const float *v, size_t lo, size_t hi);

#ifdef __cplusplus
}
#endif
#endif
