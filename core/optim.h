/* optim.h: AdamW as torch.optim.AdamW computes it, transformers' learning-rate schedules (linear and cosine
 * decay after a linear warmup) and clipping by global norm (torch.nn.utils.clip_grad_norm_), on a flat
 * parameter buffer and its flat gradient buffer. The arithmetic runs through the op API (ops_adamw,
 * ops_sum_squares, ops_scale), so the buffers live on the backend's device. */
#ifndef XR_OPTIM_H
#define XR_OPTIM_H
#include <stddef.h>
#include <stdint.h>

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double beta1, beta2, eps, weight_decay;
} AdamWConfig;

/* torch's defaults: betas (0.9, 0.999), eps 1e-8; weight decay 0 (transformers' default; recipes use 0.01). */
AdamWConfig adamw_defaults(void);

typedef struct AdamW AdamW;

/* An optimizer for n parameters that start at offset `base` of the model's flat buffer (base 0, n = all for
 * one process; a ZeRO-1 shard is a slice). Its moments (2n floats) live on be's device, zeroed. */
AdamW *adamw_create(Backend *be, size_t base, size_t n, const AdamWConfig *cfg);
void adamw_free(AdamW *o);
/* Exclude [offset, offset + numel) (offsets in the whole flat buffer) from weight decay. An encoder's
 * tensors: for each t = encoder_tensor(m, i) with !encoder_tensor_decays(t): adamw_no_decay(o, t->offset,
 * t->numel). */
void adamw_no_decay(AdamW *o, size_t offset, size_t numel);
/* One step with learning rate lr on params[0..n) and grads[0..n) (pointers to the optimizer's slice). The step
 * counter advances first (bias corrections use it), also when lr is 0, as torch does. */
void adamw_step(AdamW *o, float *params, const float *grads, double lr);
/* Optimizer state, for checkpoints: steps taken, and the first and second moments (n floats each, device). */
int64_t adamw_steps(const AdamW *o);
void adamw_set_steps(AdamW *o, int64_t steps);
float *adamw_exp_avg(AdamW *o);
float *adamw_exp_avg_sq(AdamW *o);

typedef enum { SCHED_LINEAR = 0, SCHED_COSINE = 1, SCHED_CONSTANT = 2 } SchedKind;

/* The learning rate of optimizer step `step` (0-based: the first step uses step 0) as transformers'
 * get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup (half a cosine) /
 * get_constant_schedule_with_warmup give it: base_lr * step / warmup during warmup (so step 0 has lr 0
 * when warmup > 0), then linear to 0 at `total`, or 0.5 (1 + cos(pi progress)), or constant. */
double sched_lr(SchedKind kind, double base_lr, int64_t step, int64_t warmup, int64_t total);
/* transformers' warmup_ratio: ceil(ratio * total) steps. */
int64_t sched_warmup_steps(double ratio, int64_t total);
/* "linear" / "cosine" / "constant" -> kind; -1 for another name. */
int sched_parse(const char *name);

/* The global L2 norm of n gradients (fixed summation order: the same for any thread count). */
double optim_grad_norm(Backend *be, const float *grads, size_t n);
/* clip_grad_norm_: total = the global norm; when max_norm / (total + 1e-6) < 1, the gradients are scaled by
 * it. Returns total (before clipping), which the logs report. A norm already summed across ranks can be
 * applied with optim_clip_with_norm. */
double optim_clip_grad_norm(Backend *be, float *grads, size_t n, double max_norm);
void optim_clip_with_norm(Backend *be, float *grads, size_t n, double max_norm, double total_norm);

#ifdef __cplusplus
}
#endif
#endif
