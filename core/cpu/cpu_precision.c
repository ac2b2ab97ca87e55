/* cpu_precision.c: the CPU backend's emulation of bf16 training storage (ops_list.h, "training precision"):
 * a working copy of the master weights rounded to bf16 once per refresh, GEMM operands rounded to bf16, and
 * forward outputs rounded where the GPU stores bf16. Values are fp32 words holding bf16 values, so the CPU
 * kernels run unchanged and their fp32 accumulation is what the GPU's bf16 GEMMs accumulate in. */
#include <stdlib.h>

#include "cpu_math.h"
#include "cpu_ops.h"

XR_CLONES
static void round_span(float *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = xr_bf16_round(x[i]);
}

static void round_into(Backend *be, float *o, const float *x, size_t n) {
    XR_SPANS(be->threads, n, round_span(o + lo, x + lo, hi - lo));
}

void cpu_precision_release(Backend *be) {
    CpuPrecision *p = cpu_precision(be);
    cpu_free(be, p->copy);
    free(p->opnd[0]);
    free(p->opnd[1]);
    memset(p, 0, sizeof *p);
}

void cpu_bf16_weights(Backend *be, const float *master, size_t n) {
    CpuPrecision *p = cpu_precision(be);
    cpu_free(be, p->copy);
    p->copy = NULL, p->master = NULL, p->n = 0, p->refreshes = 0;
    if (!master) return;
    /* counted in ops_mem_stats as the GPU's copy is (4 bytes a weight here, 2 there; encoder_train_plan says which) */
    p->copy = cpu_alloc(be, (n ? n : 1) * sizeof(float));
    p->master = master, p->n = n;
    cpu_weights_refresh(be);
}

int64_t cpu_weights_refresh(Backend *be) {
    CpuPrecision *p = cpu_precision(be);
    if (!p->master) return 0;
    round_into(be, p->copy, p->master, p->n);
    return ++p->refreshes;
}

void cpu_act_precision(Backend *be, XrPrecision prec) { cpu_precision(be)->act_bf16 = prec == XR_PREC_BF16; }

void cpu_act_store(Backend *be, float *x, size_t n) {
    if (cpu_precision(be)->act_bf16 && n) round_into(be, x, x, n);
}

int cpu_bf16_operands(Backend *be) { return cpu_precision(be)->master != NULL; }

const float *cpu_gemm_weight(Backend *be, const float *W) {
    CpuPrecision *p = cpu_precision(be);
    if (p->master && W >= p->master && W < p->master + p->n) return p->copy + (W - p->master);
    return W;
}

const float *cpu_gemm_operand(Backend *be, const float *x, size_t n, int slot) {
    CpuPrecision *p = cpu_precision(be);
    if (!p->master || !n) return x;
    if (n > p->opnd_cap[slot]) {
        free(p->opnd[slot]);
        p->opnd[slot] = cpu_host_alloc(n * sizeof(float));
        p->opnd_cap[slot] = n;
    }
    round_into(be, p->opnd[slot], x, n);
    return p->opnd[slot];
}
