// cublas_emu.cpp: the cuBLAS and cuBLASLt calls of our CUDA backend (core/cuda, benchmarks/gpu/gemm_peak.cu), done on
// host memory for the CPU emulator (XRANK_CUDA_EMU: device memory is host memory and every launch runs to completion
// before it returns, so a GEMM here runs at once, in stream order). Column-major as cuBLAS defines them.
//
// Arithmetic (one routine for every entry point, so cublasGemmEx and cublasLtMatmul give the same bits for the same
// problem): inputs converted exactly to fp32, then rounded where the compute type says so (FAST_16BF: bf16, FAST_TF32
// and CUBLAS_COMPUTE_32F under CUBLAS_TF32_TENSOR_OP_MATH: TF32, FAST_16F: fp16); products and sums in fp32, k split
// over 8 partial sums in a fixed order (deterministic: the same call gives the same bits); d = alpha*sum (+ beta*c)
// (+ bias), each step rounded to fp32 (no fused multiply-add, as the GPU would: under an ulp a step, and bf16 products
// are exact either way); a bf16 / fp16 D rounded once from that fp32 value, to nearest even. beta == 0 never reads C
// and alpha == 0 never reads A or B (reference BLAS). Anything else we do not emulate answers
// CUBLAS_STATUS_NOT_SUPPORTED and says why on stderr, never a wrong number.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

// The GPU's fp32 GEMMs fuse multiply-adds; this file's answer must not depend on compiler flags instead.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace {

const uint64_t XR_BLAS_MAGIC = 0x78726275626c6173ull;  // handles and descriptors: "xrbublas"
const uint64_t XR_ALGO_MAGIC = 0x7872616c676f656dull;  // an algorithm this file's heuristic returned

void say(const char *fn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void say(const char *fn, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cublas_emu: %s: %s\n", fn, msg);
}

// ---------------- element conversions ----------------

float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint32_t f_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
float bf16_f(uint16_t h) { return bits_f((uint32_t)h << 16); }
// round to nearest even, as __float2bfloat16_rn (a NaN becomes the canonical 0x7fff, as the GPU's cvt.rn.bf16.f32)
uint16_t f_bf16(float f) {
    uint32_t u = f_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float round_bf16(float f) { return bf16_f(f_bf16(f)); }
// TF32 keeps 10 of fp32's 23 mantissa bits. The GPU's rounding of fp32 operands inside cuBLAS is not documented; this
// is round half away from zero (cvt.rna.tf32.f32, CUTLASS's default conversion). Inf and NaN pass unchanged.
float round_tf32(float f) {
    uint32_t u = f_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return f;
    return bits_f((u + 0x1000u) & 0xffffe000u);
}
float round_f16(float f) { return __half2float(__float2half_rn(f)); }

enum Round { ROUND_NONE, ROUND_BF16, ROUND_TF32, ROUND_F16 };

size_t type_size(cudaDataType_t t) {
    switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16BF:
    case CUDA_R_16F: return 2;
    default: return 0;
    }
}

const char *type_name(int t) {
    switch (t) {
    case CUDA_R_32F: return "CUDA_R_32F";
    case CUDA_R_16BF: return "CUDA_R_16BF";
    case CUDA_R_16F: return "CUDA_R_16F";
    case CUDA_R_64F: return "CUDA_R_64F";
    case CUDA_R_8I: return "CUDA_R_8I";
    case CUDA_R_32I: return "CUDA_R_32I";
    case -1: return "(default)";
    default: return "(another type)";
    }
}

const char *compute_name(cublasComputeType_t c) {
    switch (c) {
    case CUBLAS_COMPUTE_32F: return "CUBLAS_COMPUTE_32F";
    case CUBLAS_COMPUTE_32F_PEDANTIC: return "CUBLAS_COMPUTE_32F_PEDANTIC";
    case CUBLAS_COMPUTE_32F_FAST_16BF: return "CUBLAS_COMPUTE_32F_FAST_16BF";
    case CUBLAS_COMPUTE_32F_FAST_TF32: return "CUBLAS_COMPUTE_32F_FAST_TF32";
    case CUBLAS_COMPUTE_32F_FAST_16F: return "CUBLAS_COMPUTE_32F_FAST_16F";
    default: return "(a compute type not emulated)";
    }
}

float load(const void *p, cudaDataType_t t, int64_t i) {
    switch (t) {
    case CUDA_R_32F: return ((const float *)p)[i];
    case CUDA_R_16BF: return bf16_f(((const uint16_t *)p)[i]);
    default: {
        __half_raw r;
        r.x = ((const uint16_t *)p)[i];
        return __half2float(__half(r));
    }
    }
}

void store(void *p, cudaDataType_t t, int64_t i, float v) {
    switch (t) {
    case CUDA_R_32F: ((float *)p)[i] = v; break;
    case CUDA_R_16BF: ((uint16_t *)p)[i] = f_bf16(v); break;
    default: ((uint16_t *)p)[i] = __half_raw(__float2half_rn(v)).x;
    }
}

// ---------------- the one GEMM ----------------

// A stored matrix: element (r, c) of the stored array at r + c*ld (column order) or r*ld + c (row order, cuBLASLt's
// CUBLASLT_ORDER_ROW); batch b at b*stride elements.
struct Mat {
    const void *p;
    cudaDataType_t t;
    int64_t ld, stride;
    bool row;
    int64_t at(int64_t r, int64_t c) const { return row ? r * ld + c : r + c * ld; }
};

struct Gemm {
    int64_t m, n, k, batch;
    bool ta, tb;
    float alpha, beta;
    Mat A, B, C, D;  // D.p written; C read only when beta != 0
    Round round;
    const void *bias;  // nullptr: none; else m elements of bias_t, batch b at b*bias_stride
    cudaDataType_t bias_t;
    int64_t bias_stride;
};

float rounded(float v, Round r) {
    switch (r) {
    case ROUND_BF16: return round_bf16(v);
    case ROUND_TF32: return round_tf32(v);
    case ROUND_F16: return round_f16(v);
    default: return v;
    }
}

// sum over l of a[l] b[l] in fp32: 8 partial sums (l mod 8), added pairwise at the end
float dot(const float *a, const float *b, int64_t k) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t l = 0;
    for (; l + 8 <= k; l += 8)
        for (int q = 0; q < 8; q++) s[q] += a[l + q] * b[l + q];
    for (int q = 0; l < k; l++, q++) s[q] += a[l] * b[l];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void run_gemm(const Gemm &g) {
    // op(A) as m rows of k, op(B) as n columns of k, contiguous in k: every output is one dot()
    std::vector<float> ap, bp;
    bool prod = g.alpha != 0.0f && g.k > 0;
    if (prod) ap.resize((size_t)(g.m * g.k)), bp.resize((size_t)(g.n * g.k));
    const int64_t IB = 32;  // rows a block: a block of op(A) stays in cache while every column of op(B) passes
    for (int64_t b = 0; b < g.batch; b++) {
        if (prod) {
            const void *pa = (const char *)g.A.p + (size_t)(b * g.A.stride) * type_size(g.A.t);
            const void *pb = (const char *)g.B.p + (size_t)(b * g.B.stride) * type_size(g.B.t);
            for (int64_t i = 0; i < g.m; i++)
                for (int64_t l = 0; l < g.k; l++)
                    ap[(size_t)(i * g.k + l)] = rounded(load(pa, g.A.t, g.ta ? g.A.at(l, i) : g.A.at(i, l)), g.round);
            for (int64_t j = 0; j < g.n; j++)
                for (int64_t l = 0; l < g.k; l++)
                    bp[(size_t)(j * g.k + l)] = rounded(load(pb, g.B.t, g.tb ? g.B.at(j, l) : g.B.at(l, j)), g.round);
        }
        const void *pc = g.beta != 0.0f ? (const char *)g.C.p + (size_t)(b * g.C.stride) * type_size(g.C.t) : nullptr;
        void *pd = (char *)const_cast<void *>(g.D.p) + (size_t)(b * g.D.stride) * type_size(g.D.t);
        const void *pbias = g.bias ? (const char *)g.bias + (size_t)(b * g.bias_stride) * type_size(g.bias_t) : nullptr;
        for (int64_t i0 = 0; i0 < g.m; i0 += IB) {
            int64_t i1 = i0 + IB < g.m ? i0 + IB : g.m;
            for (int64_t j = 0; j < g.n; j++)
                for (int64_t i = i0; i < i1; i++) {
                    float v = prod ? g.alpha * dot(&ap[(size_t)(i * g.k)], &bp[(size_t)(j * g.k)], g.k) : 0.0f;
                    if (pc) v = v + g.beta * load(pc, g.C.t, g.C.at(i, j));
                    if (pbias) v = v + load(pbias, g.bias_t, i);
                    store(pd, g.D.t, g.D.at(i, j), v);
                }
        }
    }
}

// What a compute type does to operands of type ab; NOT_SUPPORTED (said on stderr) for what we do not emulate.
// cuBLAS: 32F / 32F_PEDANTIC take fp32, bf16 or fp16 A and B with C of A's type or fp32; the FAST types fp32 only.
cublasStatus_t compute_round(const char *fn, cublasComputeType_t ct, cudaDataType_t a, cudaDataType_t b,
                             cudaDataType_t c, bool tf32_math, Round *r) {
    if (a != b) {
        say(fn, "A of type %s with B of type %s: not supported (A and B of one type)", type_name(a), type_name(b));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    switch (ct) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
        if ((a == CUDA_R_32F && c == CUDA_R_32F) || ((a == CUDA_R_16BF || a == CUDA_R_16F) && (c == a || c == CUDA_R_32F))) {
            *r = a == CUDA_R_32F && tf32_math && ct == CUBLAS_COMPUTE_32F ? ROUND_TF32 : ROUND_NONE;
            return CUBLAS_STATUS_SUCCESS;
        }
        break;
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_32F_FAST_16F:
        if (a == CUDA_R_32F && c == CUDA_R_32F) {
            *r = ct == CUBLAS_COMPUTE_32F_FAST_16BF ? ROUND_BF16 : ct == CUBLAS_COMPUTE_32F_FAST_TF32 ? ROUND_TF32 : ROUND_F16;
            return CUBLAS_STATUS_SUCCESS;
        }
        break;
    default:
        say(fn, "compute type %d: not emulated (only the 32F ones)", (int)ct);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    say(fn, "A/B of type %s with C/D of type %s under %s: not supported", type_name(a), type_name(c), compute_name(ct));
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

bool op_of(cublasOperation_t op, bool *t) {
    if (op == CUBLAS_OP_N) return *t = false, true;
    if (op == CUBLAS_OP_T || op == CUBLAS_OP_C) return *t = true, true;  // C is T for real types
    return false;
}

// ---------------- cuBLAS handles ----------------

struct Handle {
    uint64_t magic;
    cudaStream_t stream;
    cublasMath_t math;
};

Handle *handle_of(cublasHandle_t h) {
    Handle *p = (Handle *)h;
    return p && p->magic == XR_BLAS_MAGIC ? p : nullptr;
}

// The classic GEMMs' shared checks and call: cuBLAS's argument rules (lda >= rows of the stored A, and so on).
cublasStatus_t classic_gemm(const char *fn, cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                            int64_t m, int64_t n, int64_t k, const void *alpha, const void *A, cudaDataType_t at,
                            int64_t lda, long long sa, const void *B, cudaDataType_t bt, int64_t ldb, long long sb,
                            const void *beta, void *C, cudaDataType_t ctype, int64_t ldc, long long sc, int64_t batch,
                            cublasComputeType_t ct) {
    Handle *h = handle_of(handle);
    if (!h) {
        say(fn, "the handle was not made by cublasCreate (or was destroyed)");
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    Gemm g;
    if (!op_of(transa, &g.ta) || !op_of(transb, &g.tb)) {
        say(fn, "transa %d / transb %d: not an operation of a real GEMM", (int)transa, (int)transb);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    int64_t arows = g.ta ? k : m, brows = g.tb ? n : k;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) ||
        ldc < (m > 1 ? m : 1)) {
        say(fn, "m %lld n %lld k %lld batch %lld with lda %lld ldb %lld ldc %lld: invalid (ld below the stored rows)",
            (long long)m, (long long)n, (long long)k, (long long)batch, (long long)lda, (long long)ldb, (long long)ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (!alpha || !beta) {
        say(fn, "alpha or beta is NULL");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    cublasStatus_t s = compute_round(fn, ct, at, bt, ctype, (h->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH, &g.round);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    g.m = m, g.n = n, g.k = k, g.batch = batch;
    g.alpha = *(const float *)alpha, g.beta = *(const float *)beta;  // every compute type here scales in fp32
    g.A = {A, at, lda, (int64_t)sa, false};
    g.B = {B, bt, ldb, (int64_t)sb, false};
    g.C = {C, ctype, ldc, (int64_t)sc, false};
    g.D = g.C;
    g.bias = nullptr, g.bias_t = CUDA_R_32F, g.bias_stride = 0;
    run_gemm(g);
    return CUBLAS_STATUS_SUCCESS;
}

// ---------------- cuBLASLt descriptors ----------------

struct LtHandle {
    uint64_t magic;
};

struct LtDesc {
    uint64_t magic;
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t pointer_mode, transa, transb, epilogue, bias_type;
    const void *bias;
    int64_t bias_stride;
};

struct LtLayout {
    uint64_t magic;
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld, stride;
    int32_t order, batch;
};

struct LtPref {
    uint64_t magic;
    uint64_t max_ws;
    uint32_t align[4];  // A, B, C, D: the least alignment the caller promises (bytes)
};

template <typename T> T *lt_of(void *p) {
    T *q = (T *)p;
    return q && q->magic == XR_BLAS_MAGIC ? q : nullptr;
}

// copy an attribute's value when its size is right
template <typename T> bool attr_get(const char *fn, const char *name, T *dst, const void *buf, size_t size) {
    if (!buf || size != sizeof(T)) {
        say(fn, "%s: %zu bytes given, %zu expected", name, size, sizeof(T));
        return false;
    }
    memcpy(dst, buf, sizeof(T));
    return true;
}

unsigned align_of(const void *p) {
    unsigned a = 256;
    while (a > 1 && ((uintptr_t)p % a) != 0) a >>= 1;
    return a;
}

// What an algorithm this file returns remembers of the problem it was found for: the data types, operations and
// epilogue (cuBLASLt's algorithms are specific to them: another problem's algorithm is refused), and the alignments
// it may rely on: each promised one (at most 16 bytes, the widest vector load) and the bias pointer's at the query.
struct AlgoInfo {
    uint64_t magic;
    uint64_t signature;
    uint32_t align[4];
    uint32_t bias_align;
};
static_assert(sizeof(AlgoInfo) <= sizeof(cublasLtMatmulAlgo_t), "AlgoInfo fits cublasLtMatmulAlgo_t");

uint64_t signature_of(const LtDesc *d, const LtLayout *a, const LtLayout *c) {
    return (uint64_t)(uint32_t)d->compute | (uint64_t)(uint8_t)a->type << 8 | (uint64_t)(uint8_t)c->type << 16 |
           (uint64_t)(uint8_t)d->transa << 24 | (uint64_t)(uint8_t)d->transb << 32 | (uint64_t)(uint16_t)d->epilogue << 40 |
           (uint64_t)(uint8_t)d->bias_type << 56;
}

// The problem cuBLASLt would run (sizes, types, epilogue), or an error status said on stderr.
cublasStatus_t lt_problem(const char *fn, const LtDesc *d, const LtLayout *la, const LtLayout *lb, const LtLayout *lc,
                          const LtLayout *ld, Gemm *g) {
    if (!d || !la || !lb || !lc || !ld) {
        say(fn, "a descriptor or layout was not made by its Create (or was destroyed)");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (!op_of((cublasOperation_t)d->transa, &g->ta) || !op_of((cublasOperation_t)d->transb, &g->tb)) {
        say(fn, "TRANSA %d / TRANSB %d: not an operation of a real GEMM", d->transa, d->transb);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (d->scale != CUDA_R_32F) {
        say(fn, "scale type %s: not supported (CUDA_R_32F with the 32F compute types)", type_name(d->scale));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (d->pointer_mode != CUBLASLT_POINTER_MODE_HOST && d->pointer_mode != CUBLASLT_POINTER_MODE_DEVICE) {
        say(fn, "pointer mode %d: not emulated (host or device scalars only)", d->pointer_mode);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (lc->type != ld->type) {
        say(fn, "C of type %s with D of type %s: not supported", type_name(lc->type), type_name(ld->type));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    cublasStatus_t s = compute_round(fn, d->compute, la->type, lb->type, ld->type, false, &g->round);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (d->epilogue == CUBLASLT_EPILOGUE_BIAS) {
        // cublasLt.h: the bias is of D's type (its exceptions are the int8 and fp8 kernels)
        if (d->bias_type != -1 && d->bias_type != (int32_t)ld->type) {
            say(fn, "bias of type %s with D of type %s: not supported (the bias is of D's type)", type_name(d->bias_type),
                type_name(ld->type));
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
    } else if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
        say(fn, "epilogue %d: not emulated (DEFAULT and BIAS only)", d->epilogue);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    const LtLayout *all[4] = {la, lb, lc, ld};
    for (int i = 0; i < 4; i++) {
        const LtLayout *l = all[i];
        uint64_t inner = l->order == CUBLASLT_ORDER_ROW ? l->cols : l->rows;
        if (l->ld < (int64_t)(inner > 1 ? inner : 1)) {
            say(fn, "matrix %c: %llu x %llu with ld %lld: ld below its %s", "ABCD"[i], (unsigned long long)l->rows,
                (unsigned long long)l->cols, (long long)l->ld, l->order == CUBLASLT_ORDER_ROW ? "columns" : "rows");
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    uint64_t m = ld->rows, n = ld->cols, am = g->ta ? la->cols : la->rows, k = g->ta ? la->rows : la->cols,
             bk = g->tb ? lb->cols : lb->rows, bn = g->tb ? lb->rows : lb->cols;
    if (am != m || bk != k || bn != n || lc->rows != m || lc->cols != n) {
        say(fn, "shapes disagree: op(A) %llu x %llu, op(B) %llu x %llu, C %llu x %llu, D %llu x %llu",
            (unsigned long long)am, (unsigned long long)k, (unsigned long long)bk, (unsigned long long)bn,
            (unsigned long long)lc->rows, (unsigned long long)lc->cols, (unsigned long long)m, (unsigned long long)n);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (la->batch != ld->batch || lb->batch != ld->batch || lc->batch != ld->batch) {
        say(fn, "batch counts A %d B %d C %d D %d: not supported (all equal)", la->batch, lb->batch, lc->batch, ld->batch);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    g->m = (int64_t)m, g->n = (int64_t)n, g->k = (int64_t)k, g->batch = ld->batch;
    return CUBLAS_STATUS_SUCCESS;
}

bool lt_no_algo() {
    const char *e = getenv("XR_CUEMU_LT_NO_ALGO");
    return e && *e && strcmp(e, "0") != 0;
}

}  // namespace

// ================ cuBLAS ================

extern "C" {

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    Handle *h = new Handle{XR_BLAS_MAGIC, nullptr, CUBLAS_DEFAULT_MATH};
    *handle = (cublasHandle_t)h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
    Handle *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->magic = 0;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetVersion_v2(cublasHandle_t handle, int *version) {
    if (!handle_of(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!version) return CUBLAS_STATUS_INVALID_VALUE;
    *version = CUBLAS_VERSION;  // the headers' version: the emulator implements what they declare
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
    Handle *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = stream;  // every emulated call runs to completion at once: stream order holds by itself
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetStream_v2(cublasHandle_t handle, cudaStream_t *stream) {
    Handle *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    Handle *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    int base = mode & 0xf;
    if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TENSOR_OP_MATH && base != CUBLAS_PEDANTIC_MATH &&
        base != CUBLAS_TF32_TENSOR_OP_MATH) {
        say("cublasSetMathMode", "math mode %d is not one of cuBLAS's", (int)mode);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    h->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode) {
    Handle *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = h->math;
    return CUBLAS_STATUS_SUCCESS;
}

const char *CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

const char *CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported (cuBLAS emulator: see "
                                             "its message on stderr)";
    case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
    default: return "unknown error";
    }
}

cublasStatus_t CUBLASWINAPI cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                           int m, int n, int k, const float *alpha, const float *A, int lda,
                                           const float *B, int ldb, const float *beta, float *C, int ldc) {
    // the legacy fp32 GEMM: TF32 under CUBLAS_TF32_TENSOR_OP_MATH, plain fp32 otherwise (CUBLAS_COMPUTE_32F's rule)
    return classic_gemm("cublasSgemm", handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, 0, B, CUDA_R_32F,
                        ldb, 0, beta, C, CUDA_R_32F, ldc, 0, 1, CUBLAS_COMPUTE_32F);
}

cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                                         int lda, const void *B, cudaDataType Btype, int ldb, const void *beta, void *C,
                                         cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                                         cublasGemmAlgo_t algo) {
    (void)algo;  // an algorithm hint: no effect on the result's definition
    return classic_gemm("cublasGemmEx", handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0,
                        beta, C, Ctype, ldc, 0, 1, computeType);
}

cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                                       cublasOperation_t transb, int m, int n, int k, const void *alpha,
                                                       const void *A, cudaDataType Atype, int lda, long long strideA,
                                                       const void *B, cudaDataType Btype, int ldb, long long strideB,
                                                       const void *beta, void *C, cudaDataType Ctype, int ldc,
                                                       long long strideC, int batchCount,
                                                       cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    (void)algo;
    return classic_gemm("cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA,
                        B, Btype, ldb, strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType);
}

// ================ cuBLASLt ================

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t *lightHandle) {
    if (!lightHandle) return CUBLAS_STATUS_INVALID_VALUE;
    *lightHandle = (cublasLtHandle_t) new LtHandle{XR_BLAS_MAGIC};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t lightHandle) {
    LtHandle *h = lt_of<LtHandle>(lightHandle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->magic = 0;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *matmulDesc, cublasComputeType_t computeType,
                                                     cudaDataType_t scaleType) {
    if (!matmulDesc) return CUBLAS_STATUS_INVALID_VALUE;
    LtDesc *d = new LtDesc{XR_BLAS_MAGIC, computeType, scaleType, CUBLASLT_POINTER_MODE_HOST, CUBLAS_OP_N, CUBLAS_OP_N,
                           CUBLASLT_EPILOGUE_DEFAULT, -1, nullptr, 0};
    *matmulDesc = (cublasLtMatmulDesc_t)d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
    LtDesc *d = lt_of<LtDesc>(matmulDesc);
    if (!d) return CUBLAS_STATUS_INVALID_VALUE;
    d->magic = 0;
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc,
                                                           cublasLtMatmulDescAttributes_t attr, const void *buf,
                                                           size_t sizeInBytes) {
    const char *fn = "cublasLtMatmulDescSetAttribute";
    LtDesc *d = lt_of<LtDesc>(matmulDesc);
    if (!d) {
        say(fn, "the descriptor was not made by cublasLtMatmulDescCreate (or was destroyed)");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    bool ok;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: ok = attr_get(fn, "COMPUTE_TYPE", &d->compute, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: ok = attr_get(fn, "SCALE_TYPE", &d->scale, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: ok = attr_get(fn, "POINTER_MODE", &d->pointer_mode, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_DESC_TRANSA: ok = attr_get(fn, "TRANSA", &d->transa, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: ok = attr_get(fn, "TRANSB", &d->transb, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: ok = attr_get(fn, "EPILOGUE", &d->epilogue, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: ok = attr_get(fn, "BIAS_POINTER", &d->bias, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE:
        ok = attr_get(fn, "BIAS_BATCH_STRIDE", &d->bias_stride, buf, sizeInBytes);
        break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: ok = attr_get(fn, "BIAS_DATA_TYPE", &d->bias_type, buf, sizeInBytes); break;
    default:
        say(fn, "attribute %d: not emulated", (int)attr);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *matLayout, cudaDataType type,
                                                       uint64_t rows, uint64_t cols, int64_t ld) {
    if (!matLayout) return CUBLAS_STATUS_INVALID_VALUE;
    *matLayout = (cublasLtMatrixLayout_t) new LtLayout{XR_BLAS_MAGIC, type, rows, cols, ld, 0, CUBLASLT_ORDER_COL, 1};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
    LtLayout *l = lt_of<LtLayout>(matLayout);
    if (!l) return CUBLAS_STATUS_INVALID_VALUE;
    l->magic = 0;
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t matLayout,
                                                             cublasLtMatrixLayoutAttribute_t attr, const void *buf,
                                                             size_t sizeInBytes) {
    const char *fn = "cublasLtMatrixLayoutSetAttribute";
    LtLayout *l = lt_of<LtLayout>(matLayout);
    if (!l) {
        say(fn, "the layout was not made by cublasLtMatrixLayoutCreate (or was destroyed)");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    bool ok;
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: ok = attr_get(fn, "TYPE", &l->type, buf, sizeInBytes); break;
    case CUBLASLT_MATRIX_LAYOUT_ORDER:
        ok = attr_get(fn, "ORDER", &l->order, buf, sizeInBytes);
        if (ok && l->order != CUBLASLT_ORDER_COL && l->order != CUBLASLT_ORDER_ROW) {
            say(fn, "ORDER %d: not emulated (COL and ROW only)", l->order);
            l->order = CUBLASLT_ORDER_COL;
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
        break;
    case CUBLASLT_MATRIX_LAYOUT_ROWS: ok = attr_get(fn, "ROWS", &l->rows, buf, sizeInBytes); break;
    case CUBLASLT_MATRIX_LAYOUT_COLS: ok = attr_get(fn, "COLS", &l->cols, buf, sizeInBytes); break;
    case CUBLASLT_MATRIX_LAYOUT_LD: ok = attr_get(fn, "LD", &l->ld, buf, sizeInBytes); break;
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: ok = attr_get(fn, "BATCH_COUNT", &l->batch, buf, sizeInBytes); break;
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
        ok = attr_get(fn, "STRIDED_BATCH_OFFSET", &l->stride, buf, sizeInBytes);
        break;
    default:
        say(fn, "attribute %d: not emulated", (int)attr);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
    // cublasLt.h: the alignments default to 256 bytes, the workspace to 0
    *pref = (cublasLtMatmulPreference_t) new LtPref{XR_BLAS_MAGIC, 0, {256, 256, 256, 256}};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    LtPref *p = lt_of<LtPref>(pref);
    if (!p) return CUBLAS_STATUS_INVALID_VALUE;
    p->magic = 0;
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                                 cublasLtMatmulPreferenceAttributes_t attr,
                                                                 const void *buf, size_t sizeInBytes) {
    const char *fn = "cublasLtMatmulPreferenceSetAttribute";
    LtPref *p = lt_of<LtPref>(pref);
    if (!p) {
        say(fn, "the preference was not made by cublasLtMatmulPreferenceCreate (or was destroyed)");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    uint32_t u32;
    uint64_t u64;
    bool ok;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: ok = attr_get(fn, "MAX_WORKSPACE_BYTES", &p->max_ws, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: ok = attr_get(fn, "MIN_ALIGNMENT_A_BYTES", &p->align[0], buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: ok = attr_get(fn, "MIN_ALIGNMENT_B_BYTES", &p->align[1], buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: ok = attr_get(fn, "MIN_ALIGNMENT_C_BYTES", &p->align[2], buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: ok = attr_get(fn, "MIN_ALIGNMENT_D_BYTES", &p->align[3], buf, sizeInBytes); break;
    // the emulator's one algorithm splits nothing (reduction scheme NONE: every mask allows it), uses no workspace
    // and is the only one: these narrow nothing
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK: ok = attr_get(fn, "REDUCTION_SCHEME_MASK", &u32, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: ok = attr_get(fn, "SEARCH_MODE", &u32, buf, sizeInBytes); break;
    case CUBLASLT_MATMUL_PREF_IMPL_MASK: ok = attr_get(fn, "IMPL_MASK", &u64, buf, sizeInBytes); break;
    default:
        say(fn, "attribute %d: not emulated", (int)attr);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t lightHandle,
                                                           cublasLtMatmulDesc_t operationDesc,
                                                           cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                                           cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                                           cublasLtMatmulPreference_t preference,
                                                           int requestedAlgoCount,
                                                           cublasLtMatmulHeuristicResult_t heuristicResultsArray[],
                                                           int *returnAlgoCount) {
    const char *fn = "cublasLtMatmulAlgoGetHeuristic";
    if (returnAlgoCount) *returnAlgoCount = 0;
    if (!lt_of<LtHandle>(lightHandle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    LtPref *p = lt_of<LtPref>(preference);
    if (!p || requestedAlgoCount < 1 || !heuristicResultsArray || !returnAlgoCount) {
        say(fn, "a preference not made by its Create, no room for a result or no count");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    LtDesc *d = lt_of<LtDesc>(operationDesc);
    LtLayout *la = lt_of<LtLayout>(Adesc), *lb = lt_of<LtLayout>(Bdesc), *lc = lt_of<LtLayout>(Cdesc),
             *ld = lt_of<LtLayout>(Ddesc);
    Gemm g;
    cublasStatus_t s = lt_problem(fn, d, la, lb, lc, ld, &g);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (lt_no_algo()) {
        // what cuBLASLt answers when no algorithm fits: lets a CPU test take the caller's fallback
        static bool said = false;
        if (!said) say(fn, "no algorithm: XR_CUEMU_LT_NO_ALGO is set"), said = true;
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    cublasLtMatmulHeuristicResult_t &r = heuristicResultsArray[0];
    memset(&r, 0, sizeof r);
    AlgoInfo info;
    memset(&info, 0, sizeof info);
    info.magic = XR_ALGO_MAGIC;
    info.signature = signature_of(d, la, ld);
    for (int i = 0; i < 4; i++) info.align[i] = p->align[i] < 16 ? p->align[i] : 16;
    unsigned ba = d->epilogue == CUBLASLT_EPILOGUE_BIAS ? align_of(d->bias) : 1;  // cublasLt.h: read for alignment
    info.bias_align = ba < 16 ? ba : 16;
    memcpy(&r.algo, &info, sizeof info);
    r.workspaceSize = 0;
    r.state = CUBLAS_STATUS_SUCCESS;
    r.wavesCount = 1.0f;
    *returnAlgoCount = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc,
                                           const void *alpha, const void *A, cublasLtMatrixLayout_t Adesc,
                                           const void *B, cublasLtMatrixLayout_t Bdesc, const void *beta,
                                           const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                                           cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo,
                                           void *workspace, size_t workspaceSizeInBytes, cudaStream_t stream) {
    const char *fn = "cublasLtMatmul";
    (void)workspace, (void)workspaceSizeInBytes, (void)stream;  // no workspace needed; runs at once (stream order)
    if (!lt_of<LtHandle>(lightHandle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    LtDesc *d = lt_of<LtDesc>(computeDesc);
    LtLayout *la = lt_of<LtLayout>(Adesc), *lb = lt_of<LtLayout>(Bdesc), *lc = lt_of<LtLayout>(Cdesc),
             *ld = lt_of<LtLayout>(Ddesc);
    Gemm g;
    cublasStatus_t s = lt_problem(fn, d, la, lb, lc, ld, &g);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!alpha || !beta || !D) {
        say(fn, "alpha, beta or D is NULL");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (d->epilogue == CUBLASLT_EPILOGUE_BIAS && !d->bias) {
        say(fn, "EPILOGUE_BIAS without a BIAS_POINTER");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (algo) {
        AlgoInfo info;
        memcpy(&info, algo, sizeof info);
        if (info.magic != XR_ALGO_MAGIC) {
            say(fn, "the algorithm was not returned by cublasLtMatmulAlgoGetHeuristic");
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (info.signature != signature_of(d, la, ld)) {
            say(fn, "the algorithm was found for other data types, operations or epilogue than this call's");
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
        const void *ptr[4] = {A, B, C, D};
        for (int i = 0; i < 4; i++) {
            if (i == 2 && *(const float *)beta == 0.0f) continue;
            if (align_of(ptr[i]) < info.align[i]) {
                say(fn, "%c at %p is not %u-byte aligned, as the alignment given to the heuristic promised", "ABCD"[i],
                    ptr[i], info.align[i]);
                return CUBLAS_STATUS_NOT_SUPPORTED;
            }
        }
        if (d->epilogue == CUBLASLT_EPILOGUE_BIAS && align_of(d->bias) < info.bias_align) {
            say(fn, "the bias at %p is less aligned than the bias pointer the heuristic saw (%u bytes)", d->bias,
                info.bias_align);
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
    }
    size_t es[4] = {type_size(la->type), type_size(lb->type), type_size(lc->type), type_size(ld->type)};
    const void *ptr[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++)
        if (ptr[i] && ((uintptr_t)ptr[i] % es[i]) != 0) {
            say(fn, "%c at %p is not aligned to its element", "ABCD"[i], ptr[i]);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    g.alpha = *(const float *)alpha, g.beta = *(const float *)beta;  // host or device pointer: both host memory here
    g.A = {A, la->type, la->ld, la->stride, la->order == CUBLASLT_ORDER_ROW};
    g.B = {B, lb->type, lb->ld, lb->stride, lb->order == CUBLASLT_ORDER_ROW};
    g.C = {C, lc->type, lc->ld, lc->stride, lc->order == CUBLASLT_ORDER_ROW};
    g.D = {D, ld->type, ld->ld, ld->stride, ld->order == CUBLASLT_ORDER_ROW};
    g.bias = d->epilogue == CUBLASLT_EPILOGUE_BIAS ? d->bias : nullptr;
    g.bias_t = ld->type, g.bias_stride = d->bias_stride;
    if (g.beta != 0.0f && !C) {
        say(fn, "beta is not 0 and C is NULL");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (g.m > 0 && g.n > 0 && g.batch > 0) run_gemm(g);
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
