// test_cublas_emu: the CPU emulator's cuBLAS / cuBLASLt (tests/cuemu/cublas_emu.cpp, linked alone: no GPU, no CUDA
// library) against a naive double-precision GEMM, in every call shape core/cuda and benchmarks/gpu use: the four
// transposes with ld above the rows, alpha / beta, beta 0 over NaN-poisoned C, strided batches with gaps, the compute
// types' operand rounding (TF32, bf16), bf16 / fp32 D, cuBLASLt's bias epilogue and heuristic, and the refusals.
// Built with XR_CUBLAS_REAL (test_cuda_cublas_model, CUDA builds: the real libcublas / libcublasLt, buffers in managed
// memory, skipped without a GPU) the same problems hold the real library to the emulator's model of it: where cuBLAS
// only "allows" an operand rounding, the line says which rounding fits; the emulator's own refusals (an algorithm
// on another D type, a pointer below the promised alignment, XR_CUEMU_LT_NO_ALGO) print the real answer instead.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#ifdef XR_CUBLAS_REAL
#include <cuda_runtime.h>
#define XR_NAME "test_cuda_cublas_model"
static const bool REAL = true;
// managed memory: the host fills and reads it, the GPU's cuBLAS reads and writes it
template <class T> struct DevAlloc {
    typedef T value_type;
    DevAlloc() = default;
    template <class U> DevAlloc(const DevAlloc<U> &) {}
    T *allocate(size_t n) {
        void *p = nullptr;
        cudaError_t e = cudaMallocManaged(&p, n * sizeof(T));
        if (e != cudaSuccess) fprintf(stderr, XR_NAME ": cudaMallocManaged: %s\n", cudaGetErrorString(e)), exit(1);
        return (T *)p;
    }
    void deallocate(T *p, size_t) { cudaFree(p); }
    bool operator==(const DevAlloc &) const { return true; }
    bool operator!=(const DevAlloc &) const { return false; }
};
typedef std::vector<uint8_t, DevAlloc<uint8_t>> Buf;
static void dev_sync() {
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) fprintf(stderr, XR_NAME ": cudaDeviceSynchronize: %s\n", cudaGetErrorString(e)), exit(1);
}
#else
#define XR_NAME "test_cublas_emu"
static const bool REAL = false;
typedef std::vector<uint8_t> Buf;
static void dev_sync() {}
#endif

static int g_checks, g_failed;

template <class T> static T *as(Buf &b) { return (T *)b.data(); }
// a combination cuBLAS does not have: the emulator answers NOT_SUPPORTED; the real library may say INVALID_VALUE
static bool refused(cublasStatus_t s) { return REAL ? s != CUBLAS_STATUS_SUCCESS : s == CUBLAS_STATUS_NOT_SUPPORTED; }

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        g_checks++;                                                                 \
        if (!(cond)) {                                                              \
            g_failed++;                                                             \
            fprintf(stderr, XR_NAME ": FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fprintf(stderr, "\n");                                                  \
        }                                                                           \
    } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand() {  // [-1, 1)
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 4503599627370496.0 - 1.0;
}

// ---- the reference's own conversions (the header's bf16 / fp16 ones; TF32 by arithmetic, not bits) ----

static float bf16_round(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
static uint16_t bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
static float tf32_round(float x) {  // 11 significant bits, half away from zero (normal numbers)
    if (x == 0.0f || !isfinite(x)) return x;
    int e;
    frexp((double)x, &e);
    double s = ldexp(fabs((double)x), 11 - e);
    double r = ldexp(floor(s + 0.5), e - 11);
    return (float)(x < 0 ? -r : r);
}

static size_t esize(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }
static float get(const Buf &buf, cudaDataType_t t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)buf.data())[i];
    uint16_t u = ((const uint16_t *)buf.data())[i];
    if (t == CUDA_R_16BF) return __bfloat162float(__ushort_as_bfloat16(u));
    return __half2float(__ushort_as_half(u));
}
static void put(Buf &buf, cudaDataType_t t, size_t i, float v) {
    if (t == CUDA_R_32F) ((float *)buf.data())[i] = v;
    else if (t == CUDA_R_16BF) ((uint16_t *)buf.data())[i] = bf16_bits(v);
    else ((uint16_t *)buf.data())[i] = __half_as_ushort(__float2half_rn(v));
}
static const uint32_t POISON32 = 0x7fc0dead;  // a NaN no result can be
static const uint16_t POISON16 = 0x7fa5;
static void poison(Buf &buf, cudaDataType_t t) {
    size_t n = buf.size() / esize(t);
    for (size_t i = 0; i < n; i++)
        if (t == CUDA_R_32F) memcpy(&buf[4 * i], &POISON32, 4);
        else memcpy(&buf[2 * i], &POISON16, 2);
}
static bool poisoned(const Buf &buf, cudaDataType_t t, size_t i) {
    return t == CUDA_R_32F ? memcmp(&buf[4 * i], &POISON32, 4) == 0 : memcmp(&buf[2 * i], &POISON16, 2) == 0;
}

enum RefRound { RR_NONE, RR_BF16, RR_TF32 };
static float rr(float v, RefRound r) { return r == RR_BF16 ? bf16_round(v) : r == RR_TF32 ? tf32_round(v) : v; }

// One GEMM problem, column-major (row = true: every matrix in row order, cuBLASLt's CUBLASLT_ORDER_ROW).
struct Prob {
    bool ta, tb;
    int m, n, k, lda, ldb, ldc, batch;
    long long sa, sb, sc;
    cudaDataType_t at, ct;
    float alpha, beta;
    bool bias, row;
    Buf A, B, C, bvec;

    int64_t at_(int64_t r, int64_t c, int64_t ld) const { return row ? r * ld + c : r + c * ld; }
    void fill(bool integers) {
        int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
        size_t na = (size_t)((batch - 1) * sa) + (size_t)(row ? (int64_t)ar * lda : (int64_t)lda * ac);
        size_t nb = (size_t)((batch - 1) * sb) + (size_t)(row ? (int64_t)br * ldb : (int64_t)ldb * bc);
        size_t nc = (size_t)((batch - 1) * sc) + (size_t)(row ? (int64_t)m * ldc : (int64_t)ldc * n);
        A.assign(na * esize(at), 0), B.assign(nb * esize(at), 0), C.assign(nc * esize(ct), 0);
        // operands: the unused padding random too (a wrong ld or stride reads it); integers: sums exact in fp32
        for (size_t i = 0; i < na; i++) put(A, at, i, integers ? (float)(int)(urand() * 17) : (float)urand());
        for (size_t i = 0; i < nb; i++) put(B, at, i, integers ? (float)(int)(urand() * 17) / 256.0f : (float)urand());
        poison(C, ct);
        if (beta != 0.0f)
            for (int b = 0; b < batch; b++)
                for (int j = 0; j < n; j++)
                    for (int i = 0; i < m; i++) put(C, ct, (size_t)(b * sc + at_(i, j, ldc)), (float)urand());
        bvec.assign((size_t)(m * batch) * esize(ct), 0);
        for (int i = 0; i < m * batch; i++) put(bvec, ct, (size_t)i, integers ? (float)(int)(urand() * 9) / 16.0f : (float)urand());
    }
    // op(A)(i, l) of batch b as the GEMM reads it
    float a(int b, int i, int l) const { return get(A, at, (size_t)(b * sa + (ta ? at_(l, i, lda) : at_(i, l, lda)))); }
    float bb(int b, int l, int j) const { return get(B, at, (size_t)(b * sb + (tb ? at_(j, l, ldb) : at_(l, j, ldb)))); }
};

// Compares D (after the call) with the double reference over the operands rounded as the model r says; every element
// outside the m x n matrices must still hold its poison (or its old value). A rounding model (r != RR_NONE) must be
// felt: D further than 4 bounds from the unrounded operands' reference somewhere. With the real cuBLAS, which only
// "allows" the FAST types' and the TF32 math mode's rounding, D must fit one of the models (none, TF32, bf16) and the
// line says which. exact: sums exact in fp32, D must be their one rounding, bit for bit.
static const char *RR_NAME[3] = {"none", "bf16", "tf32"};
static void compare(const char *what, const Prob &p, const Buf &C0, const Buf &D, RefRound r, int exact) {
    double worst[3] = {0, 0, 0};
    int bad = 0, outside = 0;
    std::vector<bool> inside(D.size() / esize(p.ct), false);
    for (int b = 0; b < p.batch; b++)
        for (int j = 0; j < p.n; j++)
            for (int i = 0; i < p.m; i++) {
                size_t ci = (size_t)(b * p.sc + p.at_(i, j, p.ldc));
                inside[ci] = true;
                double add = (p.beta != 0.0f ? (double)p.beta * get(C0, p.ct, ci) : 0.0) +
                             (p.bias ? (double)get(p.bvec, p.ct, (size_t)(b * p.m + i)) : 0.0);
                double got = get(D, p.ct, ci);
                for (int mdl = 0; mdl < 3; mdl++) {
                    if (exact && mdl != r) continue;
                    double s = 0, mag = 0;
                    for (int l = 0; l < p.k; l++) {
                        double x = rr(p.a(b, i, l), (RefRound)mdl), y = rr(p.bb(b, l, j), (RefRound)mdl);
                        s += x * y, mag += fabs(x * y);
                    }
                    double ref = p.alpha * s + add;
                    if (exact) {
                        float want = p.ct == CUDA_R_16BF ? bf16_round((float)ref) : (float)ref;
                        if (got != want && bad++ < 3)
                            fprintf(stderr, "  %s: batch %d (%d, %d): got %.9g, exact-rounded %.9g\n", what, b, i, j, got,
                                    (double)want);
                        continue;
                    }
                    double bound = 2e-7 * (p.k + 4) * (fabs(p.alpha) * mag + fabs(add)) + 1e-30;
                    if (p.ct != CUDA_R_32F) bound += fabs(ref) * (p.ct == CUDA_R_16BF ? 1.0 / 256 : 1.0 / 2048);
                    double e = fabs(got - ref) / bound;
                    if (!(e <= worst[mdl])) worst[mdl] = isnan(e) ? INFINITY : e;
                    if (mdl == r && !(e <= 1.0) && !REAL && bad++ < 3)
                        fprintf(stderr, "  %s: batch %d (%d, %d): got %.9g, reference %.9g (bound %.3g)\n", what, b, i,
                                j, got, ref, bound);
                }
            }
    for (size_t i = 0; i < inside.size(); i++)
        if (!inside[i] && !(p.beta == 0.0f ? poisoned(D, p.ct, i) : memcmp(&D[i * esize(p.ct)], &C0[i * esize(p.ct)], esize(p.ct)) == 0))
            outside++;
    if (REAL && !exact && r != RR_NONE) {
        int fit = -1;
        for (int mdl = 0; mdl < 3; mdl++)
            if (worst[mdl] <= 1.0 && (fit < 0 || worst[mdl] < worst[fit])) fit = mdl;
        printf("%s: %s: operands fit rounding %s (worst error / bound: none %.3g, bf16 %.3g, tf32 %.3g; the emulator "
               "rounds to %s)\n", XR_NAME, what, fit < 0 ? "NONE OF THE MODELS" : RR_NAME[fit], worst[0], worst[1],
               worst[2], RR_NAME[r]);
        CHECK(fit >= 0, "%s: D fits no rounding model", what);
    } else {
        if (!exact) bad += worst[r] <= 1.0 ? 0 : 1;
        CHECK(bad == 0, "%s: elements off the reference (worst error / bound %.3g)", what, worst[r]);
        if (r != RR_NONE && !exact)
            CHECK(worst[0] > 4, "%s: the operand rounding is not felt (error against unrounded operands %.3g bounds)",
                  what, worst[0]);
    }
    CHECK(outside == 0, "%s: %d elements outside the matrices written", what, outside);
}

static cublasHandle_t g_h;
static cublasLtHandle_t g_lt;

// the classic entry points: Sgemm (fp32, compute from the math mode), GemmEx, GemmStridedBatchedEx
enum Entry { SGEMM, GEMMEX, STRIDED };
static void classic(const char *what, Prob p, Entry e, cublasComputeType_t comp, cublasMath_t math, RefRound r,
                    bool integers = false) {
    p.fill(integers);
    Buf C0 = p.C, D = p.C;
    CHECK(cublasSetMathMode(g_h, math) == CUBLAS_STATUS_SUCCESS, "%s: set math", what);
    cublasOperation_t oa = p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = p.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t s;
    if (e == SGEMM)
        s = cublasSgemm(g_h, oa, ob, p.m, p.n, p.k, &p.alpha, (const float *)p.A.data(), p.lda, (const float *)p.B.data(),
                        p.ldb, &p.beta, (float *)D.data(), p.ldc);
    else if (e == GEMMEX)
        s = cublasGemmEx(g_h, oa, ob, p.m, p.n, p.k, &p.alpha, p.A.data(), p.at, p.lda, p.B.data(), p.at, p.ldb, &p.beta,
                         D.data(), p.ct, p.ldc, comp, CUBLAS_GEMM_DEFAULT);
    else
        s = cublasGemmStridedBatchedEx(g_h, oa, ob, p.m, p.n, p.k, &p.alpha, p.A.data(), p.at, p.lda, p.sa, p.B.data(),
                                       p.at, p.ldb, p.sb, &p.beta, D.data(), p.ct, p.ldc, p.sc, p.batch, comp,
                                       CUBLAS_GEMM_DEFAULT);
    dev_sync();
    CHECK(s == CUBLAS_STATUS_SUCCESS, "%s: status %s", what, cublasGetStatusName(s));
    compare(what, p, C0, D, r, integers);
}

static Prob prob(bool ta, bool tb, int m, int n, int k, int pad, cudaDataType_t at, cudaDataType_t ct, float alpha,
                 float beta) {
    Prob p;
    p.ta = ta, p.tb = tb, p.m = m, p.n = n, p.k = k;
    p.lda = (ta ? k : m) + pad, p.ldb = (tb ? n : k) + pad, p.ldc = m + pad;
    p.batch = 1, p.sa = p.sb = p.sc = 0;
    p.at = at, p.ct = ct, p.alpha = alpha, p.beta = beta, p.bias = false, p.row = false;
    return p;
}

static Prob batched(Prob p, int batch, int gap) {
    p.batch = batch;
    p.sa = (long long)p.lda * (p.ta ? p.m : p.k) + gap;
    p.sb = (long long)p.ldb * (p.tb ? p.k : p.n) + gap;
    p.sc = (long long)p.ldc * p.n + gap;
    return p;
}

// ---- cuBLASLt, called as ops_cuda.cu's lt_linear calls it ----

struct LtRun {
    cublasStatus_t heur, mm;
    int nres;
    size_t ws;
};

static LtRun lt_call(Prob &p, Buf &D, cublasComputeType_t comp, const void *bias_ptr, int bias_type,
                     int epilogue, uint32_t promise_a = 0, const void *a_override = nullptr,
                     cudaDataType_t d_type_run = (cudaDataType_t)-1) {
    LtRun out = {CUBLAS_STATUS_SUCCESS, CUBLAS_STATUS_SUCCESS, 0, 0};
    cublasLtMatmulDesc_t op;
    CHECK(cublasLtMatmulDescCreate(&op, comp, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS, "desc");
    cublasOperation_t tA = p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tB = p.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA) == 0, "TRANSA");
    CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB) == 0, "TRANSB");
    if (epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
        cublasLtEpilogue_t epi = (cublasLtEpilogue_t)epilogue;
        CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) == 0, "EPILOGUE");
        CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr, sizeof bias_ptr) == 0, "BIAS");
        cudaDataType_t bt = (cudaDataType_t)bias_type;
        CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt) == 0, "BIAS type");
        if (p.batch > 1) {
            int64_t bs = p.m;
            CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bs, sizeof bs) == 0, "bs");
        }
    }
    int ar = p.ta ? p.k : p.m, ac = p.ta ? p.m : p.k, br = p.tb ? p.n : p.k, bc = p.tb ? p.k : p.n;
    cublasLtMatrixLayout_t la, lb, lc;
    CHECK(cublasLtMatrixLayoutCreate(&la, p.at, ar, ac, p.lda) == 0, "la");
    CHECK(cublasLtMatrixLayoutCreate(&lb, p.at, br, bc, p.ldb) == 0, "lb");
    CHECK(cublasLtMatrixLayoutCreate(&lc, p.ct, p.m, p.n, p.ldc) == 0, "lc");
    cublasLtMatrixLayout_t all[3] = {la, lb, lc};
    long long strides[3] = {p.sa, p.sb, p.sc};
    for (int i = 0; i < 3; i++) {
        if (p.batch > 1) {
            int32_t bc32 = p.batch;
            int64_t st = strides[i];
            CHECK(cublasLtMatrixLayoutSetAttribute(all[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc32, sizeof bc32) == 0, "bc");
            CHECK(cublasLtMatrixLayoutSetAttribute(all[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st, sizeof st) == 0, "st");
        }
        if (p.row) {
            int32_t order = CUBLASLT_ORDER_ROW;
            CHECK(cublasLtMatrixLayoutSetAttribute(all[i], CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order) == 0, "order");
        }
    }
    cublasLtMatmulPreference_t pref;
    CHECK(cublasLtMatmulPreferenceCreate(&pref) == 0, "pref");
    size_t wsb = (size_t)32 << 20;
    CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb) == 0, "ws");
    uint32_t al = 16;
    if (promise_a) CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &promise_a,
                                                              sizeof promise_a) == 0, "align A");
    CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al) == 0, "align D");
    uint32_t rmask = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &rmask, sizeof rmask) == 0, "rmask");
    cublasLtMatmulHeuristicResult_t res;
    out.heur = cublasLtMatmulAlgoGetHeuristic(g_lt, op, la, lb, lc, lc, pref, 1, &res, &out.nres);
    CHECK(cublasLtMatmulPreferenceDestroy(pref) == 0, "pref destroy");
    if (out.heur == CUBLAS_STATUS_SUCCESS && out.nres == 1) {
        out.ws = res.workspaceSize;
        if (d_type_run != (cudaDataType_t)-1) {  // run the algorithm on another D type than it was found for
            cublasLtMatrixLayoutDestroy(lc);
            cublasLtMatrixLayoutCreate(&lc, d_type_run, p.m, p.n, p.ldc);
        }
        static Buf ws(wsb);  // lt_linear's workspace size
        out.mm = cublasLtMatmul(g_lt, op, &p.alpha, a_override ? a_override : p.A.data(), la, p.B.data(), lb, &p.beta,
                                D.data(), lc, D.data(), lc, &res.algo, ws.data(), wsb, nullptr);
        dev_sync();
    }
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
    return out;
}

static void lt(const char *what, Prob p, cublasComputeType_t comp, RefRound r, bool integers = false) {
    p.fill(integers);
    Buf C0 = p.C, D = p.C;
    LtRun o = lt_call(p, D, comp, p.bias ? p.bvec.data() : nullptr, p.ct,
                      p.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
    CHECK(o.heur == CUBLAS_STATUS_SUCCESS && o.nres == 1, "%s: heuristic %s, %d results", what,
          cublasGetStatusName(o.heur), o.nres);
    CHECK(o.ws <= ((size_t)32 << 20), "%s: workspace %zu over the maximum", what, o.ws);
    CHECK(o.mm == CUBLAS_STATUS_SUCCESS, "%s: matmul %s", what, cublasGetStatusName(o.mm));
    compare(what, p, C0, D, r, integers);
}

int main() {
#ifdef XR_CUBLAS_REAL
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("SKIPPED: no GPU (" XR_NAME " holds the real cuBLAS to the emulator's model)\n");
        return 77;
    }
#endif
    // ---- handles ----
    CHECK(cublasCreate(&g_h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
    CHECK(cublasLtCreate(&g_lt) == CUBLAS_STATUS_SUCCESS, "cublasLtCreate");
    int ver = 0;
    CHECK(cublasGetVersion(g_h, &ver) == CUBLAS_STATUS_SUCCESS && ver > 0, "version %d", ver);
    CHECK(cublasSetStream(g_h, (cudaStream_t)0) == CUBLAS_STATUS_SUCCESS, "set stream");
    cublasMath_t mm;
    CHECK(cublasSetMathMode(g_h, CUBLAS_PEDANTIC_MATH) == 0 && cublasGetMathMode(g_h, &mm) == 0 &&
              mm == CUBLAS_PEDANTIC_MATH, "math mode round trip");
    CHECK(strlen(cublasGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED)) > 0, "status string");

    // ---- cublasSgemm (cuda_smoke: pedantic) in every transpose, ld above the rows, alpha / beta, beta 0 ----
    for (int t = 0; t < 4; t++) {
        char name[64];
        snprintf(name, sizeof name, "Sgemm ta %d tb %d", t & 1, t >> 1);
        classic(name, prob(t & 1, t >> 1, 13, 9, 21, 3, CUDA_R_32F, CUDA_R_32F, 1.5f, -0.5f), SGEMM,
                CUBLAS_COMPUTE_32F, CUBLAS_PEDANTIC_MATH, RR_NONE);
        snprintf(name, sizeof name, "Sgemm beta 0 ta %d tb %d", t & 1, t >> 1);
        classic(name, prob(t & 1, t >> 1, 17, 5, 33, 2, CUDA_R_32F, CUDA_R_32F, 1.0f, 0.0f), SGEMM, CUBLAS_COMPUTE_32F,
                CUBLAS_PEDANTIC_MATH, RR_NONE);
    }
    // cuda_smoke's call: row-major C[m,n] = A[m,k] B[k,n] as column-major (n, m, k)
    classic("Sgemm smoke shape", prob(false, false, 64, 32, 48, 0, CUDA_R_32F, CUDA_R_32F, 1, 0), SGEMM,
            CUBLAS_COMPUTE_32F, CUBLAS_PEDANTIC_MATH, RR_NONE);
    // the math mode: TF32 only under CUBLAS_TF32_TENSOR_OP_MATH
    classic("Sgemm TF32 math", prob(false, true, 16, 16, 64, 1, CUDA_R_32F, CUDA_R_32F, 1, 0), SGEMM, CUBLAS_COMPUTE_32F,
            CUBLAS_TF32_TENSOR_OP_MATH, RR_TF32);
    classic("Sgemm default math", prob(false, true, 16, 16, 64, 1, CUDA_R_32F, CUDA_R_32F, 1, 0), SGEMM,
            CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
    classic("GemmEx PEDANTIC under TF32 math", prob(true, false, 16, 16, 64, 1, CUDA_R_32F, CUDA_R_32F, 1, 0), GEMMEX,
            CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_TF32_TENSOR_OP_MATH, RR_NONE);

    // ---- cublasGemmEx: gemm_rm (fp32 operands: PEDANTIC, FAST_TF32, FAST_16BF), cuda_ops_gemm_bf16, knn ----
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t >> 1;
        classic("GemmEx fp32 pedantic", prob(ta, tb, 19, 11, 37, 4, CUDA_R_32F, CUDA_R_32F, 1, 1), GEMMEX,
                CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_PEDANTIC_MATH, RR_NONE);
        classic("GemmEx FAST_TF32", prob(ta, tb, 19, 11, 64, 4, CUDA_R_32F, CUDA_R_32F, 1, 0), GEMMEX,
                CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_DEFAULT_MATH, RR_TF32);
        classic("GemmEx FAST_16BF", prob(ta, tb, 19, 11, 64, 4, CUDA_R_32F, CUDA_R_32F, 1, 0.25f), GEMMEX,
                CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_DEFAULT_MATH, RR_BF16);
        classic("GemmEx bf16 -> fp32", prob(ta, tb, 23, 7, 45, 5, CUDA_R_16BF, CUDA_R_32F, 1, 1), GEMMEX,
                CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
        classic("GemmEx bf16 -> fp32 beta 0", prob(ta, tb, 23, 7, 45, 5, CUDA_R_16BF, CUDA_R_32F, 1, 0), GEMMEX,
                CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
        classic("GemmEx fp16 -> fp32", prob(ta, tb, 9, 8, 30, 1, CUDA_R_16F, CUDA_R_32F, 0.5f, 0), GEMMEX,
                CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
        classic("GemmEx bf16 -> bf16", prob(ta, tb, 12, 10, 40, 3, CUDA_R_16BF, CUDA_R_16BF, 1, 0.5f), GEMMEX,
                CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
    }
    classic("GemmEx knn fp32 (T, N)", prob(true, false, 40, 6, 32, 0, CUDA_R_32F, CUDA_R_32F, 1, 0), GEMMEX,
            CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_PEDANTIC_MATH, RR_NONE);
    classic("GemmEx knn bf16 (T, N)", prob(true, false, 40, 6, 32, 0, CUDA_R_16BF, CUDA_R_32F, 1, 0), GEMMEX,
            CUBLAS_COMPUTE_32F, CUBLAS_PEDANTIC_MATH, RR_NONE);
    classic("GemmEx k 0 beta 0.5", prob(false, false, 5, 4, 0, 1, CUDA_R_32F, CUDA_R_32F, 1, 0.5f), GEMMEX,
            CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
    classic("GemmEx bf16 -> bf16 exact sums", prob(false, true, 31, 17, 200, 2, CUDA_R_16BF, CUDA_R_16BF, 1, 0), GEMMEX,
            CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE, true);

    // ---- cublasGemmStridedBatchedEx: the attention's score (T, N) and context (N, N) shapes, att_gemm's ----
    {
        Prob sc = batched(prob(true, false, 24, 24, 16, 0, CUDA_R_16BF, CUDA_R_32F, 0.25f, 0), 6, 0);
        classic("strided scores q k^T", sc, STRIDED, CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
        Prob cx = batched(prob(false, false, 16, 24, 24, 0, CUDA_R_16BF, CUDA_R_32F, 1, 0), 6, 0);
        classic("strided context p v", cx, STRIDED, CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
        for (int t = 0; t < 4; t++) {
            classic("strided fp32 with gaps", batched(prob(t & 1, t >> 1, 11, 13, 9, 2, CUDA_R_32F, CUDA_R_32F, -1, 0.5f), 5, 7),
                    STRIDED, CUBLAS_COMPUTE_32F, CUBLAS_PEDANTIC_MATH, RR_NONE);
            classic("strided bf16 beta 0 with gaps", batched(prob(t & 1, t >> 1, 11, 13, 9, 2, CUDA_R_16BF, CUDA_R_32F, 1, 0), 5, 3),
                    STRIDED, CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
        }
        Prob bc = batched(prob(false, false, 8, 6, 10, 0, CUDA_R_32F, CUDA_R_32F, 1, 0), 4, 0);
        bc.sb = 0;  // one B for every batch
        classic("strided B stride 0", bc, STRIDED, CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, RR_NONE);
    }

    // ---- cuBLASLt as lt_linear: y^T [N, M] = W^T-view x^T, TRANSA T, TRANSB N, bias epilogue ----
    {
        Prob p = prob(true, false, 37, 11, 48, 0, CUDA_R_16BF, CUDA_R_32F, 1, 0);
        p.bias = true;
        lt("Lt bf16 -> fp32 + fp32 bias", p, CUBLAS_COMPUTE_32F, RR_NONE);
        p.bias = false;
        lt("Lt bf16 -> fp32", p, CUBLAS_COMPUTE_32F, RR_NONE);
        Prob q = prob(true, false, 37, 11, 48, 0, CUDA_R_32F, CUDA_R_32F, 1, 0);
        q.bias = true;
        lt("Lt fp32 FAST_16BF + bias", q, CUBLAS_COMPUTE_32F_FAST_16BF, RR_BF16);
        Prob y = prob(true, false, 40, 9, 300, 0, CUDA_R_16BF, CUDA_R_16BF, 1, 0);
        y.bias = true;
        lt("Lt bf16 -> bf16 + bf16 bias", y, CUBLAS_COMPUTE_32F, RR_NONE);
        lt("Lt bf16 -> bf16 + bias, exact sums", y, CUBLAS_COMPUTE_32F, RR_NONE, true);
        for (int t = 0; t < 4; t++) {
            Prob g = prob(t & 1, t >> 1, 14, 10, 18, 3, CUDA_R_32F, CUDA_R_32F, 0.75f, -1.25f);
            lt("Lt fp32 all transposes, ld > rows, beta", g, CUBLAS_COMPUTE_32F, RR_NONE);
            Prob bt = batched(prob(t & 1, t >> 1, 6, 7, 5, 1, CUDA_R_16BF, CUDA_R_16BF, 1, 0), 3, 2);
            bt.bias = true;
            lt("Lt batched bf16 + batched bias", bt, CUBLAS_COMPUTE_32F, RR_NONE);
            Prob rw = prob(t & 1, t >> 1, 6, 7, 5, 2, CUDA_R_32F, CUDA_R_32F, 1, 0.5f);
            rw.row = true, rw.ldc = rw.n + 2, rw.lda = (rw.ta ? rw.m : rw.k) + 2, rw.ldb = (rw.tb ? rw.k : rw.n) + 2;
            if (!REAL) lt("Lt row order", rw, CUBLAS_COMPUTE_32F, RR_NONE);  // emulated; no caller of ours uses it
        }
    }

    // ---- the exact bf16 rounding: sums exact in fp32, D their one round-to-nearest-even (ties included) ----
    {
        CHECK(cublasSetMathMode(g_h, CUBLAS_DEFAULT_MATH) == 0, "math");
        // A (4 x 2, col-major) times (1, 1): 257 (a tie: to 256), 259 (a tie: to 260), 257.5 (to 258), -259 (to -260)
        const float A2[8] = {256, 258, 256, -258, 1, 1, 1.5f, -1};
        Buf a32(32), b32(8), d16(8), a16(16), b16(4);
        float one = 1, zero = 0;
        for (int i = 0; i < 8; i++) {
            as<float>(a32)[i] = A2[i];
            as<uint16_t>(a16)[i] = bf16_bits(A2[i]);
            CHECK(bf16_round(A2[i]) == A2[i], "%g is not bf16-exact", A2[i]);
        }
        for (int i = 0; i < 2; i++) as<float>(b32)[i] = 1, as<uint16_t>(b16)[i] = bf16_bits(1);
        uint16_t *D = as<uint16_t>(d16);
        memset(D, 0xff, 8);
        // fp32 A and B with a bf16 D is not a cuBLAS combination: the refusal leaves D alone
        cublasStatus_t s = cublasGemmEx(g_h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 1, 2, &one, a32.data(), CUDA_R_32F, 4, b32.data(),
                                        CUDA_R_32F, 2, &zero, D, CUDA_R_16BF, 4, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        dev_sync();
        CHECK(refused(s), "fp32 -> bf16 GemmEx: %s", cublasGetStatusName(s));
        CHECK(D[0] == 0xffff, "a refused call wrote D");
        s = cublasGemmEx(g_h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 1, 2, &one, a16.data(), CUDA_R_16BF, 4, b16.data(), CUDA_R_16BF, 2,
                         &zero, D, CUDA_R_16BF, 4, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        dev_sync();
        CHECK(s == CUBLAS_STATUS_SUCCESS, "bf16 ties: %s", cublasGetStatusName(s));
        uint16_t want[4] = {bf16_bits(256), bf16_bits(260), bf16_bits(258), bf16_bits(-260)};
        for (int i = 0; i < 4; i++) CHECK(D[i] == want[i], "bf16 tie row %d: 0x%04x, want 0x%04x", i, D[i], want[i]);
    }

    // ---- refusals and argument errors: a status, a message, and C / D untouched ----
    {
        Buf ab(256), bb(256), cb(256);
        float *A = as<float>(ab), *B = as<float>(bb), *C = as<float>(cb), one = 1, zero = 0;
        for (int i = 0; i < 64; i++) A[i] = B[i] = 1, C[i] = -7;
        cublasStatus_t s = cublasSgemm(g_h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, A, 7, B, 8, &zero, C, 8);
        dev_sync();
        CHECK(s == CUBLAS_STATUS_INVALID_VALUE && C[0] == -7, "lda < m: %s", cublasGetStatusName(s));
        s = cublasSgemm(g_h, CUBLAS_OP_T, CUBLAS_OP_N, 8, 4, 6, &one, A, 5, B, 6, &zero, C, 8);
        dev_sync();
        CHECK(s == CUBLAS_STATUS_INVALID_VALUE, "transposed A with lda < k: %s", cublasGetStatusName(s));
        s = cublasGemmEx(g_h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, A, CUDA_R_16BF, 8, B, CUDA_R_32F, 8, &zero, C,
                         CUDA_R_32F, 8, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        dev_sync();
        CHECK(refused(s) && C[0] == -7, "mixed A / B types: %s", cublasGetStatusName(s));
        s = cublasGemmEx(g_h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, A, CUDA_R_16BF, 8, B, CUDA_R_16BF, 8, &zero, C,
                         CUDA_R_32F, 8, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT);
        dev_sync();
        CHECK(refused(s) && C[0] == -7, "FAST_16BF on bf16 operands: %s", cublasGetStatusName(s));
        s = cublasGemmEx(g_h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, A, CUDA_R_32F, 8, B, CUDA_R_32F, 8, &zero, C,
                         CUDA_R_32F, 8, CUBLAS_COMPUTE_16F, CUBLAS_GEMM_DEFAULT);
        dev_sync();
        CHECK(refused(s) && C[0] == -7, "COMPUTE_16F on fp32: %s", cublasGetStatusName(s));
        s = cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, A, 8, B, 8, &zero, C, 8);
        CHECK(s == CUBLAS_STATUS_NOT_INITIALIZED, "no handle: %s", cublasGetStatusName(s));

        // cuBLASLt: a bias of another type than D, an epilogue not emulated, an algorithm reused on another D type,
        // an A less aligned than promised, the heuristic told to find nothing. The emulator refuses the first four;
        // the real library's answers are printed (its rules are not all documented)
        Prob p = prob(true, false, 16, 8, 32, 0, CUDA_R_16BF, CUDA_R_16BF, 1, 0);
        p.bias = true;
        p.fill(false);
        Buf D = p.C, bias32(64);
        for (int i = 0; i < 16; i++) as<float>(bias32)[i] = 0.5f;
        LtRun o = lt_call(p, D, CUBLAS_COMPUTE_32F, bias32.data(), CUDA_R_32F, CUBLASLT_EPILOGUE_BIAS);
        if (REAL)
            printf(XR_NAME ": real cuBLASLt, fp32 bias with bf16 D: heuristic %s, %d results (the emulator refuses)\n",
                   cublasGetStatusName(o.heur), o.nres);
        else
            CHECK(o.heur == CUBLAS_STATUS_NOT_SUPPORTED && o.nres == 0, "fp32 bias with bf16 D: %s, %d results",
                  cublasGetStatusName(o.heur), o.nres);
        if (!REAL) {
            o = lt_call(p, D, CUBLAS_COMPUTE_32F, p.bvec.data(), CUDA_R_16BF, CUBLASLT_EPILOGUE_GELU_BIAS);
            CHECK(o.heur == CUBLAS_STATUS_NOT_SUPPORTED, "GELU_BIAS: %s", cublasGetStatusName(o.heur));
        }
        Prob f = prob(true, false, 16, 8, 32, 0, CUDA_R_16BF, CUDA_R_32F, 1, 0);
        f.fill(false);
        Buf Df = f.C;
        o = lt_call(f, Df, CUBLAS_COMPUTE_32F, nullptr, 0, CUBLASLT_EPILOGUE_DEFAULT, 0, nullptr, CUDA_R_16BF);
        if (REAL)
            printf(XR_NAME ": real cuBLASLt, an fp32-D algorithm run with a bf16 D: %s (the emulator refuses)\n",
                   cublasGetStatusName(o.mm));
        else
            CHECK(o.heur == CUBLAS_STATUS_SUCCESS && o.mm == CUBLAS_STATUS_NOT_SUPPORTED, "algo on another D type: %s",
                  cublasGetStatusName(o.mm));
        Buf Ashift(f.A.size() + 64);
        uint8_t *a2 = Ashift.data() + (16 - ((uintptr_t)Ashift.data() & 15)) + 2;  // 2 mod 16
        memcpy(a2, f.A.data(), f.A.size());
        Df = f.C;
        o = lt_call(f, Df, CUBLAS_COMPUTE_32F, nullptr, 0, CUBLASLT_EPILOGUE_DEFAULT, 16, a2);
        if (REAL)
            printf(XR_NAME ": real cuBLASLt, A 2-byte aligned after a 16-byte promise: %s (the emulator refuses)\n",
                   cublasGetStatusName(o.mm));
        else
            CHECK(o.mm == CUBLAS_STATUS_NOT_SUPPORTED, "A 2-byte aligned after a 16-byte promise: %s",
                  cublasGetStatusName(o.mm));
        Buf C0 = f.C;
        Df = f.C;
        o = lt_call(f, Df, CUBLAS_COMPUTE_32F, nullptr, 0, CUBLASLT_EPILOGUE_DEFAULT, 2, a2);
        CHECK(o.mm == CUBLAS_STATUS_SUCCESS, "A 2-byte aligned after a 2-byte promise: %s", cublasGetStatusName(o.mm));
        compare("Lt A at 2 mod 16", f, C0, Df, RR_NONE, 0);
        if (!REAL) {
            setenv("XR_CUEMU_LT_NO_ALGO", "1", 1);
            o = lt_call(f, Df, CUBLAS_COMPUTE_32F, nullptr, 0, CUBLASLT_EPILOGUE_DEFAULT);
            CHECK(o.nres == 0 && o.heur != CUBLAS_STATUS_SUCCESS, "XR_CUEMU_LT_NO_ALGO: %d results", o.nres);
            unsetenv("XR_CUEMU_LT_NO_ALGO");
        }
    }

    // ---- determinism, and (emulator) one answer for one problem whichever entry point: lt_linear's fallback ----
    {
        Prob p = prob(true, false, 96, 40, 384, 0, CUDA_R_16BF, CUDA_R_32F, 1, 0);
        p.fill(false);
        Buf D1 = p.C, D2 = p.C, D3 = p.C;
        float one = 1, zero = 0;
        for (Buf *d : {&D1, &D2}) {
            CHECK(cublasGemmEx(g_h, CUBLAS_OP_T, CUBLAS_OP_N, p.m, p.n, p.k, &one, p.A.data(), p.at, p.lda, p.B.data(),
                               p.at, p.ldb, &zero, d->data(), p.ct, p.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == 0,
                  "GemmEx");
            dev_sync();
        }
        LtRun o = lt_call(p, D3, CUBLAS_COMPUTE_32F, nullptr, 0, CUBLASLT_EPILOGUE_DEFAULT);
        CHECK(o.mm == CUBLAS_STATUS_SUCCESS, "Lt");
        CHECK(D1 == D2, "the same GemmEx twice gave different bits");
        if (REAL)
            printf(XR_NAME ": real cuBLAS, GemmEx and cublasLtMatmul on one problem: %s bits\n",
                   D1 == D3 ? "the same" : "different");
        else
            CHECK(D1 == D3, "GemmEx and cublasLtMatmul gave different bits for one problem");
    }

    cublasLtDestroy(g_lt);
    CHECK(cublasDestroy(g_h) == CUBLAS_STATUS_SUCCESS, "destroy");
    if (g_failed) {
        fprintf(stderr, XR_NAME ": %d of %d checks failed\n", g_failed, g_checks);
        return 1;
    }
    printf(XR_NAME ": %d checks passed\n", g_checks);
    return 0;
}
