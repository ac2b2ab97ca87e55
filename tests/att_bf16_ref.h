/* att_bf16_ref.h: the training attention's bf16 contract (ops_list.h, "training precision") as a double-precision
 * reference, and the check of an op's results against it; shared by test_attention_bf16 (the CPU emulation) and
 * test_cuda_bf16_train (the GPU kernels), so both backends meet the same criteria.
 *
 * The contract: the products take bf16 operands, accumulate in fp32: scores from bf16 q, k; ctx = bf16(Pd) bf16(v)
 * with Pd = dropout(P); backward dPd = bf16(dO) bf16(v)^T, dV = bf16(Pd)^T bf16(dO), dS = P (dP - D) in fp32,
 * dQ = scale bf16(dS) bf16(k), dK = scale bf16(dS)^T bf16(q). The reference applies each rounding (or, for the
 * check that it is really there, leaves one out) and computes everything else in double.
 *
 * Bounds (u = 2^-24). Where an op's rounded operand has the reference's bf16 value, the two results differ by the
 * op's fp32 accumulation alone: tight_i = 2 (K + 2) u M_i, M_i the sum of |terms| of element i (K = L for ctx and
 * dQ, nq for dK and dV). Only Pd and dS can round differently (q, k, v, dO are the same inputs on both sides): their
 * fp32 values differ from the reference's by the softmax's and the scores' fp32 errors, and a rounding boundary
 * between the two moves the operand by one bf16 step, <= 2^-7 of it. So every element is within
 * loose_i = tight_i + 2^-6 F_i + kP C_i, F_i the sum of |terms| with a flippable operand, C_i (dQ, dK) the sum of
 * scale P_ij (|dP_ij| + 2 B_i) |k_j| (B_i = sum_j P_ij |dP_ij|) that bounds dS's own fp32 error with
 * kP = (2 smax + 2 L + 2 dh + 32) u (test_attention_lse.c derives it), and a flip is rare (the fp32 error over a
 * bf16 step, ~1e-6 / 4e-3 a term): at most ATT_MAX_FRAC of a tensor's elements may be past tight_i. A rounding left
 * out moves every element by ~2^-9 of its terms: each rounding's share of the reference, ||r_all - r_without||, must
 * be at least 1 / ATT_MAX_RATIO times the result's distance from r_all (per tensor it reaches). A result that left
 * the rounding out is at distance ~1.0 share; the flips above put a correct one at up to 0.11 of a share on some
 * random inputs (0.02-0.10 on most), so the limit sits between, at 0.35, not at 0.1. fp32 mode: the
 * result must be within ATT_FP32_RATIO of those shares of the no-rounding reference (nothing rounded). */
#ifndef XR_ATT_BF16_REF_H
#define XR_ATT_BF16_REF_H
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_math.h" /* xr_bf16_round */
#include "rng.h"
#include "testutil.h"

#define ATT_MAX_FRAC 0.25
#define ATT_MAX_RATIO 0.35
#define ATT_FP32_RATIO 0.02

enum { ATT_R_QKV = 1, ATT_R_PD = 2, ATT_R_DO = 4, ATT_R_DS = 8, ATT_R_ALL = 15 };
static const char *const att_r_names[4] = {"q/k/v", "Pd", "dO", "dS"};

/* A packed batch: S sequences, seq_off [S + 1] and the dropout ids (host), NH heads of dh. */
typedef struct {
    int S, N, max_len, NH, dh, first_only;
    const int32_t *off;
    const uint64_t *ids; /* NULL: sequence s has id s */
    float p;             /* dropout */
    uint64_t key;
} AttRefCase;

/* What the reference computes: ctx [nq_total, H], dqkv [N, 3H], and per element M (tight), F and C (loose). */
typedef struct {
    double *out, *dqkv, *mt_out, *mf_out, *mt_d, *mf_d, *mc_d;
    double smax;
} AttRef;

static double att_r(double x, int on) { return on ? (double)xr_bf16_round((float)x) : x; }

static size_t att_nq_total(const AttRefCase *c) { return c->first_only ? (size_t)c->S : (size_t)c->N; }

static void att_ref_free(AttRef *r) {
    free(r->out), free(r->dqkv), free(r->mt_out), free(r->mf_out), free(r->mt_d), free(r->mf_d), free(r->mc_d);
}

/* The reference with the roundings in `flags` (ATT_R_*). */
static AttRef att_ref(const AttRefCase *c, const float *qkv, const float *dout, int flags) {
    int NH = c->NH, dh = c->dh, H = NH * dh, ld = 3 * H, T = c->max_len > 0 ? c->max_len : 1;
    size_t no = att_nq_total(c) * H, nd = (size_t)c->N * ld;
    AttRef r;
    r.out = calloc(no + 1, sizeof(double)), r.mt_out = calloc(no + 1, sizeof(double));
    r.mf_out = calloc(no + 1, sizeof(double)), r.dqkv = calloc(nd + 1, sizeof(double));
    r.mt_d = calloc(nd + 1, sizeof(double)), r.mf_d = calloc(nd + 1, sizeof(double));
    r.mc_d = calloc(nd + 1, sizeof(double)), r.smax = 0;
    double *qr = xr_malloc((size_t)T * dh * sizeof(double)), *kr = xr_malloc((size_t)T * dh * sizeof(double));
    double *vr = xr_malloc((size_t)T * dh * sizeof(double)), *dor = xr_malloc((size_t)T * dh * sizeof(double));
    double *P = xr_malloc((size_t)T * sizeof(double)), *pdr = xr_malloc((size_t)T * sizeof(double));
    double *dP = xr_malloc((size_t)T * sizeof(double)), *dsr = xr_malloc((size_t)T * sizeof(double));
    float *ones = xr_malloc((size_t)T * sizeof(float)), *mask = xr_malloc((size_t)T * sizeof(float));
    for (int j = 0; j < T; j++) ones[j] = 1.0f;
    double scale = 1.0 / sqrt((double)dh);
    int rq = flags & ATT_R_QKV, rpd = flags & ATT_R_PD, rdo = flags & ATT_R_DO, rds = flags & ATT_R_DS;
    uint32_t thr = rng_drop_threshold(c->p);
    float dscale = c->p > 0 ? 1.0f / (1.0f - c->p) : 1.0f;
    for (int s = 0; s < c->S; s++) {
        int b0 = c->off[s], L = c->off[s + 1] - b0, nq = c->first_only ? (L > 0) : L;
        uint64_t id = c->ids ? c->ids[s] : (uint64_t)s;
        for (int h = 0; h < NH; h++) {
            for (int j = 0; j < L; j++)
                for (int e = 0; e < dh; e++) {
                    const float *row = qkv + (size_t)(b0 + j) * ld + (size_t)h * dh;
                    qr[(size_t)j * dh + e] = att_r(row[e], rq);
                    kr[(size_t)j * dh + e] = att_r(row[H + e], rq);
                    vr[(size_t)j * dh + e] = att_r(row[2 * H + e], rq);
                }
            for (int i = 0; i < nq; i++) {
                int orow = c->first_only ? s : b0 + i;
                const float *dO = dout + (size_t)orow * H + (size_t)h * dh;
                for (int e = 0; e < dh; e++) dor[(size_t)i * dh + e] = att_r(dO[e], rdo);
                double m = -INFINITY, sum = 0;
                for (int j = 0; j < L; j++) {
                    double d = 0;
                    for (int e = 0; e < dh; e++) d += qr[(size_t)i * dh + e] * kr[(size_t)j * dh + e];
                    P[j] = d * scale, m = fmax(m, P[j]), r.smax = fmax(r.smax, fabs(P[j]));
                }
                for (int j = 0; j < L; j++) sum += exp(P[j] - m);
                for (int j = 0; j < L; j++) P[j] = exp(P[j] - m) / sum;
                if (c->p > 0)
                    rng_dropout_span(mask, ones, L, c->key, (uint32_t)i | ((uint32_t)h << 16), id, thr, dscale);
                else
                    memcpy(mask, ones, (size_t)L * sizeof(float));
                double D = 0, B = 0;
                for (int j = 0; j < L; j++) {
                    pdr[j] = att_r(P[j] * mask[j], rpd);
                    double g = 0;
                    for (int e = 0; e < dh; e++) g += dor[(size_t)i * dh + e] * vr[(size_t)j * dh + e];
                    dP[j] = g * mask[j];
                    D += P[j] * dP[j], B += P[j] * fabs(dP[j]);
                }
                for (int j = 0; j < L; j++) dsr[j] = att_r(P[j] * (dP[j] - D), rds);
                size_t oi = (size_t)orow * H + (size_t)h * dh;
                double *dq = r.dqkv + (size_t)(b0 + i) * ld + (size_t)h * dh;
                size_t qi = (size_t)(b0 + i) * ld + (size_t)h * dh;
                for (int j = 0; j < L; j++) {
                    size_t ki = (size_t)(b0 + j) * ld + H + (size_t)h * dh, vi = ki + H;
                    double cw = scale * P[j] * (fabs(dP[j]) + 2 * B);
                    for (int e = 0; e < dh; e++) {
                        double kv = kr[(size_t)j * dh + e], vv = vr[(size_t)j * dh + e];
                        double qv = qr[(size_t)i * dh + e], ov = dor[(size_t)i * dh + e];
                        r.out[oi + e] += pdr[j] * vv;
                        r.mt_out[oi + e] += fabs(pdr[j] * vv);
                        dq[e] += scale * dsr[j] * kv;
                        r.mt_d[qi + e] += scale * fabs(dsr[j] * kv);
                        r.mc_d[qi + e] += cw * fabs(kv);
                        r.dqkv[ki + e] += scale * dsr[j] * qv;
                        r.mt_d[ki + e] += scale * fabs(dsr[j] * qv);
                        r.mc_d[ki + e] += cw * fabs(qv);
                        r.dqkv[vi + e] += pdr[j] * ov;
                        r.mt_d[vi + e] += fabs(pdr[j] * ov);
                    }
                }
            }
        }
    }
    /* every term of these sums has a flippable operand (Pd for ctx and dV, dS for dQ and dK) */
    memcpy(r.mf_out, r.mt_out, no * sizeof(double));
    memcpy(r.mf_d, r.mt_d, nd * sizeof(double));
    free(qr), free(kr), free(vr), free(dor), free(P), free(pdr), free(dP), free(dsr), free(ones), free(mask);
    return r;
}

/* The four tensors checked: ctx, and dQ, dK, dV (column ranges of dqkv); which roundings reach each. */
enum { ATT_T_OUT, ATT_T_DQ, ATT_T_DK, ATT_T_DV, ATT_T_N };
static const char *const att_t_names[ATT_T_N] = {"ctx", "dq", "dk", "dv"};
static const int att_t_reach[ATT_T_N] = {ATT_R_QKV | ATT_R_PD, ATT_R_QKV | ATT_R_DO | ATT_R_DS,
                                         ATT_R_QKV | ATT_R_DO | ATT_R_DS, ATT_R_QKV | ATT_R_PD | ATT_R_DO};

/* Element n of tensor t: its index into the ref's out / dqkv arrays and the op's results; 0 when past the end.
 * With first_only an empty sequence's context row is not written (ops_list.h): idx is then SIZE_MAX, skipped. */
static int att_elem(const AttRefCase *c, int t, size_t n, size_t *idx) {
    int H = c->NH * c->dh;
    if (t == ATT_T_OUT) {
        *idx = n;
        if (c->first_only && n < att_nq_total(c) * H && c->off[n / H + 1] == c->off[n / H]) *idx = SIZE_MAX;
        return n < att_nq_total(c) * H;
    }
    size_t row = n / H, col = n % H;
    *idx = row * 3 * H + (size_t)(t - 1) * H + col;
    return row < (size_t)c->N;
}

/* ||a - b|| over tensor t (a, b double arrays of the ref's layout, or a float result with fa). */
static double att_dist(const AttRefCase *c, int t, const float *fa, const double *a, const double *b) {
    double ss = 0;
    size_t idx;
    for (size_t n = 0; att_elem(c, t, n, &idx); n++) {
        if (idx == SIZE_MAX) continue;
        double x = fa ? (double)fa[idx] : a[idx], d = x - b[idx];
        ss += d * d;
    }
    return sqrt(ss);
}

/* Checks an op's results (out: the context [nq_total, H], dqkv [N, 3H], both fp32 as read back) against the
 * contract: bf16 1 as above, bf16 0 (fp32 mode) as the no-rounding reference. Prints one line per tensor. */
static void att_check(const char *what, const AttRefCase *c, const float *qkv, const float *dout, const float *out,
                      const float *dqkv, int bf16) {
    AttRef all = att_ref(c, qkv, dout, ATT_R_ALL), none = att_ref(c, qkv, dout, 0), wo[4];
    for (int k = 0; k < 4; k++) wo[k] = att_ref(c, qkv, dout, ATT_R_ALL & ~(1 << k));
    const double u = 0x1p-24;
    double kP = (2 * all.smax + 2 * c->max_len + 2 * c->dh + 32) * u;
    for (int t = 0; t < ATT_T_N; t++) {
        const float *got = t == ATT_T_OUT ? out : dqkv;
        const double *ra = t == ATT_T_OUT ? all.out : all.dqkv, *rn = t == ATT_T_OUT ? none.out : none.dqkv;
        const double *mt = t == ATT_T_OUT ? all.mt_out : all.mt_d, *mf = t == ATT_T_OUT ? all.mf_out : all.mf_d;
        int K = t == ATT_T_OUT || t == ATT_T_DQ ? c->max_len : (c->first_only ? 1 : c->max_len);
        size_t idx, n = 0, past = 0, over = 0, worst_i = 0;
        double worst = 0;
        for (; att_elem(c, t, n, &idx); n++) {
            if (idx == SIZE_MAX) continue;
            double g = got[idx], d = fabs(g - ra[idx]);
            double tight = 2.0 * (K + 2) * u * mt[idx] + 1e-30;
            double loose = tight + 0x1p-6 * mf[idx] + (t == ATT_T_OUT ? 0 : kP * all.mc_d[idx]);
            if (isnan(g)) d = INFINITY;
            past += d > tight;
            over += d > loose;
            if (d / loose > worst) worst = d / loose, worst_i = idx;
        }
        double dist = att_dist(c, t, got, NULL, ra);
        char shares[160] = "";
        int len = 0;
        if (bf16) {
            double frac = n ? (double)past / (double)n : 0;
            TU_CHECK(over == 0, "%s %s: %zu of %zu elements off the bf16 reference by more than the bound (worst %.3g "
                     "of it at [%zu]: got %.9g, reference %.9g)", what, att_t_names[t], over, n, worst, worst_i,
                     (double)got[worst_i], ra[worst_i]);
            TU_CHECK(frac <= ATT_MAX_FRAC, "%s %s: %zu of %zu elements (%.1f%%) past the accumulation bound, more "
                     "than %.0f%%: an operand is rounded differently from the contract", what, att_t_names[t], past,
                     n, 100 * frac, 100 * ATT_MAX_FRAC);
            for (int k = 0; k < 4; k++) {
                if (!(att_t_reach[t] & (1 << k))) continue;
                double share = att_dist(c, t, NULL, t == ATT_T_OUT ? wo[k].out : wo[k].dqkv, ra);
                TU_CHECK(share > 0, "%s %s: the %s rounding changes nothing: give inputs off the bf16 grid", what,
                         att_t_names[t], att_r_names[k]);
                if (share == 0) continue;
                TU_CHECK(dist <= ATT_MAX_RATIO * share, "%s %s: %.3g from the bf16 reference, %.3g of the %s "
                         "rounding's share (%.3g; at most %.2f): a rounding of the contract is missing or extra",
                         what, att_t_names[t], dist, dist / share, att_r_names[k], share, ATT_MAX_RATIO);
                len += snprintf(shares + len, sizeof shares - (size_t)len, " %s %.1e", att_r_names[k], dist / share);
            }
            printf("%-44s %-3s n=%-6zu past tight %5.2f%%, worst %.2f of the bound; distance / share:%s\n", what,
                   att_t_names[t], n, n ? 100.0 * (double)past / (double)n : 0.0, worst, shares);
        } else {
            double d0 = att_dist(c, t, got, NULL, rn), share = att_dist(c, t, NULL, ra, rn);
            TU_CHECK(d0 <= ATT_FP32_RATIO * share, "%s %s (fp32): %.3g from the unrounded reference, %.3g of the bf16 "
                     "roundings' share (at most %.2f): fp32 mode rounds", what, att_t_names[t], d0, d0 / share,
                     ATT_FP32_RATIO);
            printf("%-44s %-3s n=%-6zu fp32: distance to the unrounded reference %.2e of the roundings' share\n", what,
                   att_t_names[t], n, share > 0 ? d0 / share : 0.0);
        }
    }
    att_ref_free(&all), att_ref_free(&none);
    for (int k = 0; k < 4; k++) att_ref_free(&wo[k]);
}
#endif
