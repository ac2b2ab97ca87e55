/* adamw_step.h: one element of torch's single-tensor AdamW step and its scalars, shared by the CPU kernel
 * (core/cpu/cpu_train.c) and the GPU kernel (core/cuda/train_ops.cu), so both devices run the same operations
 * in the same order. The scalars are computed once per step in double on the host, as Python does, then used as
 * fp32. */
#ifndef XR_ADAMW_STEP_H
#define XR_ADAMW_STEP_H
#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define XR_ADAMW_HD static __forceinline__ __host__ __device__
#elif defined(__GNUC__)
#define XR_ADAMW_HD static inline __attribute__((always_inline))
#else
#define XR_ADAMW_HD static inline
#endif

typedef struct {
    float decay, w1, b2, w2, neg_step, bc2_sqrt, eps;
    int do_decay, small_w1;
} XrAdamScalars;

/* bc1 = 1 - beta1^step, bc2 = 1 - beta2^step (step >= 1, counted including this one). */
static inline XrAdamScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double wd, int64_t step) {
    XrAdamScalars a;
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    a.do_decay = wd != 0.0;
    a.decay = (float)(1.0 - lr * wd);
    a.w1 = (float)(1.0 - beta1);
    a.small_w1 = fabs(1.0 - beta1) < 0.5; /* torch's lerp switches formula at weight 0.5 */
    a.b2 = (float)beta2;
    a.w2 = (float)(1.0 - beta2);
    a.neg_step = (float)(-(lr / bc1));
    a.bc2_sqrt = (float)sqrt(bc2);
    a.eps = (float)eps;
    return a;
}

/* torch's order, each operation rounded to fp32: mul_(1 - lr wd); lerp_(g, 1 - beta1);
 * mul_(beta2).addcmul_(g, g, 1 - beta2); denom = sqrt(v) / sqrt(bc2) + eps; addcdiv_(m, denom, -lr / bc1). */
XR_ADAMW_HD void adamw_element(float *p, float *m, float *v, float g, XrAdamScalars a) {
    float pi = *p, mi = *m, vi = *v;
    if (a.do_decay) pi = pi * a.decay;
    mi = a.small_w1 ? mi + a.w1 * (g - mi) : g - (g - mi) * (1.0f - a.w1);
    vi = vi * a.b2 + a.w2 * g * g;
    float den = sqrtf(vi) / a.bc2_sqrt + a.eps;
    *p = pi + a.neg_step * mi / den;
    *m = mi;
    *v = vi;
}

#endif
