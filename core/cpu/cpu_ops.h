/* cpu_ops.h: the CPU backend's implementation of the op API (fp32, OpenBLAS + OpenMP), filled into the
 * backend's table by core/ops.c. Internal to core/: model code calls ops_*, never these. */
#ifndef XR_CPU_OPS_H
#define XR_CPU_OPS_H
#include "ops.h"

#include "xr_par.h" /* XR_OMP, XR_CLONES */

/* Below this many scalar operations a kernel runs on one thread: a parallel region costs more. */
#define XR_PAR_MIN 32768

/* Elementwise ops split the array into one contiguous span per thread (aligned to 16 floats). */
#define XR_SPANS(nt, n, body)                                                          \
    do {                                                                               \
        int nspan_ = ((n) > XR_PAR_MIN) ? (nt) : 1;                                    \
        size_t chunk_ = (((n) + nspan_ - 1) / nspan_ + 15) & ~(size_t)15;              \
        XR_OMP(omp parallel for num_threads(nspan_) schedule(static))                 \
        for (int s_ = 0; s_ < nspan_; s_++) {                                          \
            size_t lo = (size_t)s_ * chunk_, hi = lo + chunk_ > (n) ? (n) : lo + chunk_; \
            if (lo < hi) body;                                                         \
        }                                                                              \
    } while (0)

void cpu_backend_init(Backend *be, int threads);
void cpu_backend_release(Backend *be);
void cpu_set_threads(Backend *be, int n);
/* 64-byte aligned host memory; dies with the size on failure. */
void *cpu_host_alloc(size_t bytes);
/* Per-thread scratch of at least `floats` floats each, valid until the next call (grow-only). */
float *cpu_scratch(Backend *be, size_t floats_per_thread, int nthreads);

/* Worker `worker`'s own scratch for xrank's GEMM kernel (cpu_sgemm_avx512_scratch() floats), for ops that
 * several threads call at once (cpu_knn_gemm). */
float *cpu_worker_scratch(Backend *be, int worker);

/* The GEMM behind ops_linear: xrank's AVX-512 kernel (cpu_sgemm_avx512.c) or OpenBLAS; see cpu_backend.c. */
int cpu_use_own_gemm(const Backend *be);
int cpu_sgemm_avx512_available(void);
size_t cpu_sgemm_avx512_scratch(void);
void cpu_sgemm_avx512_nt(int M, int N, int K, const float *x, size_t ldx, const float *W, size_t ldw, float *y,
                         size_t ldy, int accumulate, float *scratch);
/* The same with either operand stored transposed (x_t: x is [K, M]; w_t: W is [K, N]). */
void cpu_sgemm_avx512(int M, int N, int K, const float *x, size_t ldx, int x_t, const float *W, size_t ldw, int w_t,
                      float *y, size_t ldy, int accumulate, float *scratch);

/* The ops: cpu_<name> with ops_<name>'s arguments, for every entry of ops_list.h. */
#define XR_OP(set, name, params, args) void cpu_##name params;
#define XR_OP_RET(set, type, name, params, args) type cpu_##name params;
#include "ops_list.h"
#undef XR_OP
#undef XR_OP_RET

/* bf16 training emulation (ops_bf16_weights / ops_weights_refresh / ops_act_precision; cpu_precision.c). */
typedef struct {
    const float *master; /* the registered fp32 flat buffer, NULL: fp32 GEMMs */
    float *copy;         /* [n]: master rounded to bf16 at the last refresh */
    size_t n;
    int64_t refreshes;
    int act_bf16;        /* forward ops round what they store */
    float *opnd[2];      /* rounded GEMM operands (x, dy) of the current call */
    size_t opnd_cap[2];
} CpuPrecision;
CpuPrecision *cpu_precision(Backend *be);
void cpu_precision_release(Backend *be);
/* Rounds x[0, n) to bf16 in place when activations are stored in bf16; else nothing. */
void cpu_act_store(Backend *be, float *x, size_t n);
/* The weight a GEMM reads: W's view in the working copy when W lies in the registered master buffer, else W. */
const float *cpu_gemm_weight(Backend *be, const float *W);
/* The activation operand a GEMM reads: with a working copy, x[0, n) rounded to bf16 in operand slot `slot`
 * (0 or 1, valid until the next call with that slot); without one, x itself. */
const float *cpu_gemm_operand(Backend *be, const float *x, size_t n, int slot);
/* 1 while a working copy is registered (bf16 training: the GEMMs' operands are rounded to bf16, ops_list.h
 * "training precision"; the training attention's products too, cpu_attention.c), else 0. */
int cpu_bf16_operands(Backend *be);

/* Packed activation storage (cpu_pack.c): a test capability, off by default (act_pack and act_region answer 4). On,
 * act_pack(1) packs every activation argument of the INFER ops, and act_region registers packed regions (bf16
 * training's saved activations); an argument is packed by ops_act_packed_at. While any packing is live
 * (cpu_pk_live) the ops with activation arguments go through cpu_packed_<op>: packed inputs widened into fp32
 * scratch, the op itself inside on fp32 arguments, packed outputs rounded to bf16. */
#define XR_PACK_SLOTS 4
typedef struct {
    int able;                   /* cpu_set_act_pack_able */
    int inside;                 /* a cpu_packed_<op> is running the op on fp32 arguments */
    float *tmp[XR_PACK_SLOTS];  /* fp32 copies of a packed op's inputs and outputs */
    size_t cap[XR_PACK_SLOTS];
} CpuPack;
CpuPack *cpu_pack_state(Backend *be);
void cpu_pack_release(Backend *be);
/* able 1: this CPU backend packs when asked (tests of the model's packed paths); 0: it declines (the default). */
void cpu_set_act_pack_able(Backend *be, int able);
/* 1 when an op must go through its cpu_packed_<op> (packing on or regions registered, and not already inside). */
int cpu_pk_live(Backend *be);
void cpu_packed_embed(Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types,
                      const float *word, const float *pos, const float *type, int n, int H);
void cpu_packed_layernorm(Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res,
                          const float *g, const float *b, int n, int H, float eps);
void cpu_packed_linear(Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K);
/* gelu, tanh: op is cpu_gelu / cpu_tanh */
void cpu_packed_unary(Backend *be, void (*op)(Backend *, float *, const float *, size_t), float *out, const float *x,
                      size_t n);
/* which attention forward: ops_attention / _first (d NULL), attention_train, attention_train_lse (att is lse) */
typedef enum { PK_ATT_INFER, PK_ATT_TRAIN, PK_ATT_LSE } PkAttention;
void cpu_packed_attention(Backend *be, PkAttention kind, float *out, float *att, const float *qkv,
                          const int32_t *seq_off, int S, int max_len, int NH, int dh, int first_only,
                          const XrDropout *d);
/* lse 1: attention_backward_lse (att is lse) */
void cpu_packed_attention_backward(Backend *be, int lse, float *dqkv, const float *dout, const float *qkv,
                                   const float *att, const int32_t *seq_off, int S, int max_len, int NH, int dh,
                                   int first_only, const XrDropout *d);
void cpu_packed_pool(Backend *be, int mean, float *out, const float *x, const int32_t *seq_off, int S, int H);
void cpu_packed_l2norm(Backend *be, float *out, const float *x, int n, int H);
void cpu_packed_dropout_add(Backend *be, float *out, const float *x, const float *res, const int32_t *seq_off, int S,
                            int H, const XrDropout *d);
void cpu_packed_linear_backward(Backend *be, float *dx, float *dW, float *db, const float *dy, const float *x,
                                const float *W, int M, int N, int K, int accumulate_dx);
void cpu_packed_layernorm_backward(Backend *be, float *dx, float *dg, float *db, const float *dout, const float *x,
                                   const float *mean, const float *rstd, const float *g, int n, int H,
                                   int accumulate);
/* gelu_backward, tanh_backward: op is cpu_gelu_backward / cpu_tanh_backward, x their saved activation */
void cpu_packed_unary_backward(Backend *be, void (*op)(Backend *, float *, const float *, const float *, size_t),
                               float *dx, const float *x, const float *dy, size_t n);
void cpu_packed_l2norm_backward(Backend *be, float *dx, const float *dy, const float *x, int n, int H);

/* The kernels the ops above share. */
/* Attention forward: ops_attention (first_only 0, d NULL), ops_attention_first (att NULL, first_only 1) and
 * ops_attention_train in one (cpu_attention.c). */
void cpu_attention_fwd(Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S,
                       int max_len, int NH, int dh, int first_only, const XrDropout *d);
/* db[j] += sum_i dy[i, j] over M rows of width N. */
void cpu_colsum_add(Backend *be, float *db, const float *dy, int M, int N);

#endif
