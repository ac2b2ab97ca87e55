/* loss.h: the training losses of cross-encoders on host logits, each returning the mean loss and writing
 * d loss / d logits: pointwise binary cross-entropy with logits and pos_weight (sentence-transformers'
 * BinaryCrossEntropyLoss = torch BCEWithLogitsLoss, mean over pairs), listwise group cross-entropy
 * (FlagEmbedding's reranker loss: groups of G logits, the positive at index 0, mean over groups), and the
 * recipes of docs/TRAINING.md on the same group layout: distillation from teacher scores (soft cross-entropy of
 * softmaxes, MarginMSE, MSE), ListNet and LambdaLoss with graded labels. Every group loss is a mean over groups,
 * so a micro-batch's gradient scaled by its share of the global batch sums to the global batch's gradient. */
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

/* Soft cross-entropy of group softmaxes (FlagEmbedding's knowledge distillation, and ListNet, Cao et al. 2007,
 * as sentence-transformers' ListNetLoss computes it with targets = labels and T = 1):
 *   loss = mean_g [ -sum_j softmax(t_g / T)_j log softmax(z_g / T)_j ]
 *   d loss / d z_gj = (softmax(z_g / T)_j - softmax(t_g / T)_j) / (T n_groups)
 * It differs from KL(teacher || student) by the teacher's entropy only (same gradient); constant student scores
 * give ln G whatever the targets. No T^2 factor (FlagEmbedding has none). */
double loss_soft_ce(const float *logits, const float *targets, int n_groups, int G, float temperature,
                    float grad_scale, float *dlogits);

/* MarginMSE (Hofstaetter et al. 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture
 * Knowledge Distillation"; sentence-transformers' cross-encoder MarginMSELoss with the identity activation):
 *   loss = mean over groups g and negatives j = 1..G-1 of ((z_g0 - z_gj) - (t_g0 - t_gj))^2 */
double loss_margin_mse(const float *logits, const float *teacher, int n_groups, int G, float grad_scale,
                       float *dlogits);

/* MSE on scores (sentence-transformers' cross-encoder MSELoss, identity activation): mean_i (z_i - t_i)^2 over the
 * n = n_groups x G pairs. */
double loss_mse(const float *logits, const float *teacher, int n, float grad_scale, float *dlogits);

/* LambdaLoss (Wang et al. 2018, "The LambdaLoss Framework for Ranking Metric Optimization", CIKM) with
 * sentence-transformers' defaults: NDCG-Loss2++ weights (mu = 10), sigma = 1, eps = 1e-10, log base 2, all
 * positions (no k). Per group, positions r = 1..G by descending logit (ties: lower index first), gains
 * g_r = (2^y - 1) / maxDCG with y clamped at 0, D_r = log2(1 + r):
 *   w_rs = mu |1/D(|r-s|) - 1/D(|r-s|+1)| |g_r - g_s| + |1/D_r - 1/D_s| |g_r - g_s|
 *   loss_g = -mean over pairs (r, s) with y_r > y_s of w_rs log2(sigmoid(sigma (z_r - z_s)))
 * (sentence-transformers 6.3's logsigmoid form; eps only bounds maxDCG. The allRank form it replaced,
 * log2(max(max(sigmoid, eps)^w, eps)), passes no gradient through a pair ordered badly enough) and the loss is the
 * mean over groups (sentence-transformers takes the mean over all pairs of the batch: the same when every group
 * has as many label-ordered pairs, e.g. one positive and G-1 negatives). The weights depend on the order only,
 * so they carry no gradient. */
double loss_lambda(const float *logits, const float *labels, int n_groups, int G, float grad_scale, float *dlogits);

typedef enum { LOSS_BCE = 0, LOSS_LISTWISE, LOSS_DISTILL, LOSS_LISTNET, LOSS_LAMBDA } LossKind;
typedef enum { DISTILL_KL = 0, DISTILL_MARGIN_MSE, DISTILL_MSE } DistillMode;

typedef struct {
    LossKind kind;
    float pos_weight;   /* bce */
    DistillMode distill;
    float temperature;  /* distill kl */
    float hard_weight;  /* distill: + hard_weight x group CE (FlagEmbedding's recipe: 1) */
} LossSpec;

/* "bce", "listwise", "distill", "listnet", "lambdaloss" -> kind; "kl", "margin_mse", "mse" -> mode; -1 if unknown. */
int loss_kind_parse(const char *s);
int loss_distill_parse(const char *s);
const char *loss_kind_name(LossKind k);
/* The loss of constant scores when it does not depend on the labels (ln G for group CE, soft CE and ListNet,
 * ln 2 for BCE), else NAN: the collapse detector's reference. */
double loss_collapse_value(const LossSpec *s, int G);

/* One micro-batch of n_groups groups of G logits (G = 1: pairs, bce only) under s: labels [n_groups x G] (bce
 * targets; listwise: unused; listnet / lambdaloss: graded labels), teacher [n_groups x G] (distill). Writes
 * dlogits (scratch: n_groups x G floats, used when a hard-label term is mixed in). */
double loss_compute(const LossSpec *s, const float *logits, const float *labels, const float *teacher, int n_groups,
                    int G, float grad_scale, float *dlogits, float *scratch);

#ifdef __cplusplus
}
#endif
#endif
