/* loss.h: the training losses of cross-encoders on host logits, each returning the mean loss and writing
 * d loss / d logits: pointwise binary cross-entropy with logits and pos_weight (sentence-transformers'
 * BinaryCrossEntropyLoss = torch BCEWithLogitsLoss, mean over pairs) and listwise group cross-entropy
 * (FlagEmbedding's reranker loss: groups of G logits, the positive at index 0, mean over groups). */
#ifndef XR_LOSS_H
#define XR_LOSS_H

#ifdef __cplusplus
extern "C" {
#endif

/* loss = mean_i [ (1 - y_i) x_i + (1 + (pw - 1) y_i) softplus(-x_i) ]  (torch's stable form of
 * -[pw y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]); labels may be soft (in [0, 1]).
 * dlogits[i] = grad_scale * d loss / d x_i (grad_scale: e.g. 1 / accumulation steps; dlogits may be NULL).
 * Computed in double; finite for any finite logits. */
double loss_bce_with_logits(const float *logits, const float *labels, int n, float pos_weight, float grad_scale,
                            float *dlogits);

/* Logits of n_groups groups of G consecutive entries; target index 0 of each group.
 * loss = mean_g [ logsumexp(z_g) - z_g0 ]; dlogits = grad_scale * (softmax(z_g) - e_0) / n_groups. */
double loss_group_ce(const float *logits, int n_groups, int G, float grad_scale, float *dlogits);

#ifdef __cplusplus
}
#endif
#endif
