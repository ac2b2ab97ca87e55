/* cpu_attention.c: softmax attention over packed sequences on the CPU. One task per (sequence, head),
 * spread over OpenMP threads; keys are transposed into per-thread scratch so that both products run along
 * contiguous memory and vectorise. Padding never exists here: the model packs real tokens only. */
#include <math.h>

#include "cpu_math.h"
#include "cpu_ops.h"

/* nq query rows of one head of one sequence of L tokens. q/k/v rows are ld floats apart, out rows ldo.
 * att (optional) receives the normalised probabilities [nq, L]. kt: dh*L floats, srow: L floats. */
XR_CLONES
static void attn_head(float *out, int ldo, float *att, const float *q, const float *k, const float *v, int ld,
                      int L, int nq, int dh, float scale, float *kt, float *srow) {
    for (int j = 0; j < L; j++)
        for (int d = 0; d < dh; d++) kt[(size_t)d * L + j] = k[(size_t)j * ld + d];
    for (int i = 0; i < nq; i++) {
        float *s = att ? att + (size_t)i * L : srow;
        const float *qi = q + (size_t)i * ld;
        for (int j = 0; j < L; j++) s[j] = 0.0f;
        for (int d = 0; d < dh; d++) {
            float qd = qi[d] * scale;
            const float *kd = kt + (size_t)d * L;
            for (int j = 0; j < L; j++) s[j] += qd * kd[j];
        }
        float m = s[0];
        XR_OMP(omp simd reduction(max : m))
        for (int j = 1; j < L; j++) m = s[j] > m ? s[j] : m;
        float sum = 0.0f;
        XR_OMP(omp simd reduction(+ : sum))
        for (int j = 0; j < L; j++) {
            float e = xr_expf(s[j] - m);
            s[j] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        float *o = out + (size_t)i * ldo;
        for (int d = 0; d < dh; d++) o[d] = 0.0f;
        for (int j = 0; j < L; j++) {
            float p = s[j] * inv;
            const float *vj = v + (size_t)j * ld;
            for (int d = 0; d < dh; d++) o[d] += p * vj[d];
        }
        if (att)
            for (int j = 0; j < L; j++) s[j] *= inv;
    }
}

void cpu_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                   int max_len, int NH, int dh, int first_only) {
    int H = NH * dh, ld = 3 * H, nt = be->threads;
    size_t per = (size_t)dh * max_len + max_len;
    float *scratch = cpu_scratch(be, per, nt);
    size_t per_al = (per + 15) & ~(size_t)15;
    float scale = 1.0f / sqrtf((float)dh);
    int ntask = S * NH;
    /* a parallel region is only worth it when there is enough work in the batch */
    size_t work = (size_t)seq_off[S] * (first_only ? 1 : (size_t)max_len) * H;
    XR_OMP(omp parallel for num_threads(nt) schedule(dynamic, 1) if (work > XR_PAR_MIN && ntask > 1))
    for (int task = 0; task < ntask; task++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        int s = task / NH, h = task % NH;
        int off = seq_off[s], L = seq_off[s + 1] - off;
        if (L <= 0) continue;
        float *kt = scratch + per_al * tid, *srow = kt + (size_t)dh * max_len;
        const float *q = qkv + (size_t)off * ld + (size_t)h * dh;
        float *o = first_only ? out + (size_t)s * H + (size_t)h * dh : out + (size_t)off * H + (size_t)h * dh;
        float *a = NULL;
        if (att) {
            size_t before = 0; /* sum of L_r^2 over earlier sequences: O(S), negligible next to the head */
            for (int r = 0; r < s; r++) {
                size_t lr = (size_t)(seq_off[r + 1] - seq_off[r]);
                before += lr * lr;
            }
            a = att + (size_t)NH * before + (size_t)h * L * L;
        }
        attn_head(o, H, a, q, q + H, q + 2 * H, ld, L, first_only ? 1 : L, dh, scale, kt, srow);
    }
}
