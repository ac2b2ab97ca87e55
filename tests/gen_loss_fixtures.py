#!/usr/bin/env python3
"""gen_loss_fixtures.py: writes tests/fixtures/loss/cases.txt, the reference values and gradients of the training
recipes' losses (core/loss.h) on small groups: FlagEmbedding's distillation (soft cross-entropy against the
teacher's group softmax, temperature, + hard-label group CE), sentence-transformers' MarginMSELoss / MSELoss,
ListNetLoss and LambdaLoss (NDCG-Loss2++ weights, its defaults), and the group CE; on groups with tied logits,
tied and all-equal teacher scores, graded labels with ties, all-equal labels and saturated pairs.

Reference: numpy in float64 (PyTorch could not be installed here: no route to its wheel index). Each loss is
written from its published formula (comments name the source); its gradient is written as autograd would
compute it (weights that depend on the sort order carry none; a clamp that is active passes none) and checked
in this script by central differences (h = 1e-6) wherever the loss is differentiable (no tied logits in
LambdaLoss, whose weights jump when two logits swap). test_loss.c compares core/loss.c with this file.

Run:  python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy && /tmp/v/bin/python tests/gen_loss_fixtures.py

cases.txt: per case the lines
  case NAME LOSS MODE N_GROUPS G TEMPERATURE HARD_WEIGHT FD_CHECKED
  logits ... / labels ... / teacher ...   (N_GROUPS x G values each)
  loss VALUE
  dlogits ...                             (d loss / d logits, grad scale 1)
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "loss", "cases.txt")


def log_softmax(v):
    m = v.max(axis=-1, keepdims=True)
    return v - m - np.log(np.exp(v - m).sum(axis=-1, keepdims=True))


def softmax(v):
    return np.exp(log_softmax(v))


# FlagEmbedding reranker (knowledge distillation): loss = CE(z, 0) + -mean_g sum_j softmax(t)_j log_softmax(z)_j;
# with a temperature T both sides are divided by T. ListNet (Cao et al. 2007; sentence-transformers ListNetLoss):
# CrossEntropyLoss(z, softmax(labels)), mean over queries.
def soft_ce(z, t, T):
    p, q = softmax(z / T), softmax(t / T)
    loss = -(q * log_softmax(z / T)).sum(axis=1).mean()
    return loss, (p - q) / T / z.shape[0]


def group_ce(z):
    n, G = z.shape
    loss = -(log_softmax(z)[:, 0]).mean()
    d = softmax(z)
    d[:, 0] -= 1
    return loss, d / n


# sentence-transformers cross-encoder MarginMSELoss: MSE(z_pos - z_neg_j, t_pos - t_neg_j) over batch x negatives.
def margin_mse(z, t):
    n, G = z.shape
    r = (z[:, :1] - z[:, 1:]) - (t[:, :1] - t[:, 1:])
    N = n * (G - 1)
    d = np.zeros_like(z)
    d[:, 0] = 2 * r.sum(axis=1) / N
    d[:, 1:] = -2 * r / N
    return (r ** 2).sum() / N, d


# sentence-transformers cross-encoder MSELoss: MSE(z, t) over all pairs.
def mse(z, t):
    return ((z - t) ** 2).mean(), 2 * (z - t) / z.size


# LambdaLoss, Wang et al. 2018, as sentence-transformers' LambdaLoss computes it with its defaults
# (NDCGLoss2PPScheme(mu=10), k=None, sigma=1, eps=1e-10, reduction_log="binary"), reduced per group then over
# groups (see loss.h). Ties in the logits: stable descending order (torch.sort(stable=True)).
def lambda_loss(z, y, mu=10.0, sigma=1.0, eps=1e-10):
    n, G = z.shape
    total, grad = 0.0, np.zeros_like(z)
    D = np.log2(1.0 + np.arange(1, G + 1))  # D[r-1] for position r
    disc = np.log2(2.0 + np.arange(G + 1))  # discount[0, i] = log2(2 + i)
    for g in range(n):
        order = np.argsort(-z[g], kind="stable")
        zs, ys = z[g][order], y[g][order]
        ideal = np.sort(np.clip(y[g], 0, None))[::-1]
        maxdcg = max(((2.0 ** ideal - 1) / D).sum(), eps)
        gain = (2.0 ** np.clip(ys, 0, None) - 1) / maxdcg
        pairs, gl, dz = 0, 0.0, np.zeros(G)
        for r in range(G):
            for s in range(G):
                if not ys[r] - ys[s] > 0:
                    continue
                dd = abs(r - s)
                ndcg2 = abs(1 / disc[dd - 1] - 1 / disc[dd]) * abs(gain[r] - gain[s])
                lrank = abs(1 / D[r] - 1 / D[s]) * abs(gain[r] - gain[s])
                w = mu * ndcg2 + lrank
                diff = np.clip(zs[r] - zs[s], -1e8, 1e8)
                sg = 1 / (1 + np.exp(-sigma * diff))
                p1 = max(sg, eps)
                p2 = p1 ** w
                pairs += 1
                gl += -np.log2(max(p2, eps))
                if p2 >= eps and sg >= eps:
                    gd = -w * sigma * (1 - sg) / np.log(2)
                    dz[order[r]] += gd
                    dz[order[s]] -= gd
        if pairs:
            total += gl / pairs
            grad[g] = dz / pairs / n
    return total / n, grad


def compute(loss, mode, z, y, t, T, hw):
    if loss == "listwise":
        return group_ce(z)
    if loss == "listnet":
        return soft_ce(z, y, 1.0)
    if loss == "lambdaloss":
        return lambda_loss(z, y)
    l, d = {"kl": lambda: soft_ce(z, t, T), "margin_mse": lambda: margin_mse(z, t), "mse": lambda: mse(z, t)}[mode]()
    if hw > 0:
        lh, dh = group_ce(z)
        l, d = l + hw * lh, d + hw * dh
    return l, d


def central_diff(loss, mode, z, y, t, T, hw, h=1e-6):
    d = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        d[idx] = (compute(loss, mode, zp, y, t, T, hw)[0] - compute(loss, mode, zm, y, t, T, hw)[0]) / (2 * h)
    return d


def main():
    rng = np.random.default_rng(17)
    G = 5
    z = rng.normal(0, 2, (4, G)).round(3)
    z[1, 1] = z[1, 3] = z[1, 0]          # tied logits in group 1
    zt = z.copy()
    zt[3] = 0.25                         # a collapsed group: all logits equal
    t = rng.normal(0, 3, (4, G)).round(3)
    t[0, 2] = t[0, 4] = t[0, 1]          # tied teacher scores
    t[2] = 1.5                           # all-equal teacher scores
    graded = np.array([[3, 1, 0, 2, 0], [2, 2, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], float)  # ties, all-equal
    binary = np.zeros((4, G))
    binary[:, 0] = 1
    zsat = z.copy()
    zsat[1] = [0.3, -1.2, 2.2, 0.9, -0.4]
    zsat[2] = [-9.0, 4.0, 3.5, 0.0, 6.0]  # the positive far below: clamped LambdaLoss pairs
    graded_sat = graded.copy()
    graded_sat[2] = [3, 0, 0, 0, 0]
    cases = [
        ("listwise_ties", "listwise", "-", zt, binary, t, 1.0, 0.0),
        ("distill_kl", "distill", "kl", zt, binary, t, 1.0, 0.0),
        ("distill_kl_t2_hard1", "distill", "kl", zt, binary, t, 2.0, 1.0),
        ("distill_margin_mse", "distill", "margin_mse", zt, binary, t, 1.0, 0.0),
        ("distill_margin_mse_hard05", "distill", "margin_mse", z, binary, t, 1.0, 0.5),
        ("distill_mse", "distill", "mse", zt, binary, t, 1.0, 0.0),
        ("listnet_graded", "listnet", "-", zt, graded, t, 1.0, 0.0),
        ("listnet_binary", "listnet", "-", z, binary, t, 1.0, 0.0),
        ("lambda_graded_tied_logits", "lambdaloss", "-", zt, graded, t, 1.0, 0.0),
        ("lambda_graded", "lambdaloss", "-", rng.normal(0, 2, (4, G)).round(3), graded, t, 1.0, 0.0),
        ("lambda_binary", "lambdaloss", "-", rng.normal(0, 1, (4, G)).round(3), binary, t, 1.0, 0.0),
        ("lambda_saturated", "lambdaloss", "-", zsat, graded_sat, t, 1.0, 0.0),
    ]
    lines = []
    for name, loss, mode, zz, yy, tt, T, hw in cases:
        l, d = compute(loss, mode, zz, yy, tt, T, hw)
        tied = any(len(set(row)) < len(row) for row in zz)
        fd = not (loss == "lambdaloss" and tied)
        if fd:
            dn = central_diff(loss, mode, zz, yy, tt, T, hw)
            err = np.abs(dn - d).max()
            assert err < 1e-6, f"{name}: autograd-style gradient vs central differences: {err}"
        print(f"{name:28s} loss {l:.6f}  |grad| {np.abs(d).max():.4f}  {'FD-checked' if fd else 'analytic only'}")
        n, g = zz.shape
        lines.append(f"case {name} {loss} {mode} {n} {g} {T:g} {hw:g} {int(fd)}")
        for key, arr in (("logits", zz), ("labels", yy), ("teacher", tt)):
            lines.append(key + " " + " ".join(f"{v:.17g}" for v in arr.ravel()))
        lines.append(f"loss {l:.17g}")
        lines.append("dlogits " + " ".join(f"{v:.17g}" for v in d.ravel()))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
