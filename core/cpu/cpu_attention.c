/* cpu_attention.c: softmax attention over packed sequences on the CPU. One task per (sequence, head) spread
 * over OpenMP threads; in each, scores = q k^T and ctx = p v are single-threaded OpenBLAS GEMMs over a block
 * of query rows, with the softmax in between. Padding never exists here: the model packs real tokens only. */
#include <math.h>

#include <cblas.h>

#include "cpu_math.h"
#include "cpu_ops.h"

/* Score block size per thread in floats (1 MiB): query rows are processed in blocks that fit. */
#define XR_ATT_BLOCK (1 << 18)

/* Row-wise softmax in place: s[r, :L] = exp(s - max) / sum. */
XR_CLONES
static void softmax_rows(float *s, int rows, int L) {
    for (int r = 0; r < rows; r++) {
        float *x = s + (size_t)r * L;
        float m = x[0];
        XR_OMP(omp simd reduction(max : m))
        for (int j = 1; j < L; j++) m = x[j] > m ? x[j] : m;
        float sum = 0.0f;
        XR_OMP(omp simd reduction(+ : sum))
        for (int j = 0; j < L; j++) {
            float e = xr_expf(x[j] - m);
            x[j] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < L; j++) x[j] *= inv;
    }
}

static int query_block(int max_len) {
    int rb = XR_ATT_BLOCK / (max_len > 0 ? max_len : 1);
    return rb < 1 ? 1 : (rb > max_len ? max_len : rb);
}

void cpu_attention(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                   int max_len, int NH, int dh, int first_only) {
    int H = NH * dh, ld = 3 * H, nt = be->threads;
    int rb = query_block(max_len);
    float *scratch = cpu_scratch(be, (size_t)rb * max_len, nt);
    size_t per_al = ((size_t)rb * max_len + 15) & ~(size_t)15;
    float scale = 1.0f / sqrtf((float)dh);
    int ntask = S * NH;
    /* a parallel region is only worth it when the batch has enough work */
    size_t work = (size_t)seq_off[S] * (first_only ? 1 : (size_t)max_len) * H;
    XR_OMP(omp parallel for num_threads(nt) schedule(dynamic, 1) if (work > XR_PAR_MIN && ntask > 1 && nt > 1))
    for (int task = 0; task < ntask; task++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        int s = task / NH, h = task % NH;
        int off = seq_off[s], L = seq_off[s + 1] - off, nq = first_only ? 1 : L;
        if (L <= 0) continue;
        const float *q = qkv + (size_t)off * ld + (size_t)h * dh, *k = q + H, *v = q + 2 * H;
        float *o = first_only ? out + (size_t)s * H + (size_t)h * dh : out + (size_t)off * H + (size_t)h * dh;
        float *a = NULL;
        if (att) {
            size_t before = 0; /* sum of L_r^2 over earlier sequences: O(S), small next to the head's work */
            for (int r = 0; r < s; r++) {
                size_t lr = (size_t)(seq_off[r + 1] - seq_off[r]);
                before += lr * lr;
            }
            a = att + (size_t)NH * before + (size_t)h * L * L;
        }
        for (int i0 = 0; i0 < nq; i0 += rb) {
            int nb = nq - i0 < rb ? nq - i0 : rb;
            float *sc = a ? a + (size_t)i0 * L : scratch + per_al * tid;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, L, dh, scale, q + (size_t)i0 * ld, ld, k, ld,
                        0.0f, sc, L);
            softmax_rows(sc, nb, L);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, dh, L, 1.0f, sc, L, v, ld, 0.0f,
                        o + (size_t)i0 * H, H);
        }
    }
}
