#!/usr/bin/env python3
"""gen_loss_fixtures.py: writes tests/fixtures/loss/cases.txt, the reference values and gradients of the training
recipes' losses (core/loss.h) on small groups: FlagEmbedding's distillation (soft cross-entropy against the
teacher's group softmax, temperature, + hard-label group CE), sentence-transformers' MarginMSELoss / MSELoss,
ListNetLoss and LambdaLoss (NDCG-Loss2++ weights, its defaults), and the group CE; on groups with tied logits,
tied and all-equal teacher scores, graded labels with ties, all-equal labels and saturated pairs.

Reference: numpy in float64, so that CI-side regeneration needs numpy only. Each loss is written from its
published formula (comments name the source); its gradient is written as autograd would compute it (weights
that depend on the sort order carry none) and checked
in this script by central differences (h = 1e-6) wherever the loss is differentiable (no tied logits in
LambdaLoss, whose weights jump when two logits swap). test_loss.c compares core/loss.c with this file.

Run:  python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy && /tmp/v/bin/python tests/gen_loss_fixtures.py

Cross-check (--torch; needs torch and sentence-transformers, never CI): every case is computed again by the
peers' own code and torch autograd: sentence-transformers' MarginMSELoss, MSELoss, ListNetLoss and LambdaLoss
classes (fed the case's logits through a stand-in CrossEncoder whose forward returns them), FlagEmbedding's
reranker distillation (AbsRerankerModel.forward: CrossEntropyLoss(z, 0) + -mean sum softmax(t) log_softmax(z),
written here from its source; the temperature is ours) and torch's cross_entropy for the group CE; the script
prints, per case, the largest difference to the numpy values of the loss and of d loss / d logits, and fails
when one exceeds the tolerance (--torch-tol, default 1e-5 relative to max(1, |value|); the sentence-transformers
classes compute in float32).

cases.txt: per case the lines
  case NAME LOSS MODE N_GROUPS G TEMPERATURE HARD_WEIGHT FD_CHECKED
  logits ... / labels ... / teacher ...   (N_GROUPS x G values each)
  loss VALUE
  dlogits ...                             (d loss / d logits, grad scale 1)
"""
import argparse
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
# (NDCGLoss2PPScheme(mu=10), k=None, sigma=1, eps=1e-10, reduction_log="binary"; pair loss w * logsigmoid, as
# sentence-transformers 6.3 writes it, not allRank's clamped sigmoid^w), reduced per group then over groups
# (see loss.h). Ties in the logits: stable descending order (torch.sort(stable=True)).
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
                x = sigma * diff
                logsig = min(x, 0.0) - np.log1p(np.exp(-abs(x)))
                pairs += 1
                gl += -w * logsig / np.log(2)
                gd = -w * sigma * np.exp(logsig - x) / np.log(2)  # 1 - sigmoid(x) = sigmoid(x) e^-x
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


def torch_reference(loss, mode, z, y, t, T, hw):
    """The case through the peers' code (see the module docstring); returns (loss, d loss / d logits)."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder import losses as stl

    n, G = z.shape
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)

    class FixedLogits(CrossEncoder):
        """A CrossEncoder whose forward returns the case's logit of each (query, document) pair: pairs are
        named "g" / "g:j" (group g, member j), so the loss classes run unchanged on given logits."""

        def __init__(self):
            torch.nn.Module.__init__(self)

        @property
        def num_labels(self):
            return 1

        @property
        def device(self):
            return torch.device("cpu")

        def preprocess(self, pairs, prompt=None, task=None):
            return {"ix": torch.tensor([int(q) * G + int(d.split(":")[1]) for q, d in pairs])}

        def forward(self, inputs, **kw):
            return {"scores": zt.reshape(-1)[inputs["ix"]].float()[:, None]}

    model = FixedLogits()
    queries = [str(g) for g in range(n)]
    docs = [[f"{g}:{j}" for j in range(G)] for g in range(n)]
    tq = torch.tensor(t, dtype=torch.float64)
    if loss == "listwise":
        val = torch.nn.functional.cross_entropy(zt, torch.zeros(n, dtype=torch.long))
    elif loss == "listnet":
        val = stl.ListNetLoss(model)([queries, docs], [torch.tensor(r, dtype=torch.float32) for r in y])
    elif loss == "lambdaloss":  # the class on one group at a time, then the mean over groups (core/loss.h)
        ll = stl.LambdaLoss(model)
        val = sum(ll([queries[g:g + 1], docs[g:g + 1]], [torch.tensor(y[g], dtype=torch.float32)])
                  for g in range(n)) / n
    else:
        if mode == "kl":  # FlagEmbedding's term, both sides at temperature T
            q = torch.softmax(tq / T, dim=-1)
            val = -torch.mean(torch.sum(torch.log_softmax(zt / T, dim=-1) * q, dim=-1))
        elif mode == "margin_mse":  # labels as [t_pos, t_neg_1..]: the class takes the differences itself
            cols = [queries] + [[docs[g][j] for g in range(n)] for j in range(G)]
            val = stl.MarginMSELoss(model)(cols, [tq[g].float() for g in range(n)])
        else:  # MSELoss on (query, document) pairs, one per group member
            val = stl.MSELoss(model)([[q for q in queries for _ in range(G)], [d for r in docs for d in r]],
                                     tq.reshape(-1).float())
        if hw > 0:
            val = val + hw * torch.nn.functional.cross_entropy(zt, torch.zeros(n, dtype=torch.long))
    val = val.double()
    val.backward()
    return val.item(), zt.grad.numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch", action="store_true", help="cross-check every case against the peers' code")
    ap.add_argument("--torch-tol", type=float, default=1e-5)
    args = ap.parse_args()
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
    zsat[2] = [-9.0, 4.0, 3.5, 0.0, 6.0]  # the positive far below: pairs the allRank clamp would silence
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
    bad = 0
    for name, loss, mode, zz, yy, tt, T, hw in cases:
        l, d = compute(loss, mode, zz, yy, tt, T, hw)
        tied = any(len(set(row)) < len(row) for row in zz)
        fd = not (loss == "lambdaloss" and tied)
        if fd:
            dn = central_diff(loss, mode, zz, yy, tt, T, hw)
            err = np.abs(dn - d).max()
            assert err < 1e-6, f"{name}: autograd-style gradient vs central differences: {err}"
        print(f"{name:28s} loss {l:.6f}  |grad| {np.abs(d).max():.4f}  {'FD-checked' if fd else 'analytic only'}")
        if args.torch:
            tl, td = torch_reference(loss, mode, zz, yy, tt, T, hw)
            el = abs(tl - l) / max(1.0, abs(l))
            eg = (np.abs(td - d) / np.maximum(1.0, np.abs(d))).max()
            ok = el <= args.torch_tol and eg <= args.torch_tol
            bad += not ok
            print(f"{'':28s} vs torch / peers: loss {tl:.6f} (rel {el:.1e}), grad rel {eg:.1e}"
                  f"{'' if ok else '  MISMATCH'}")
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
    if args.torch:
        print(f"torch / peer cross-check: {len(cases) - bad} of {len(cases)} cases within {args.torch_tol}")
        if bad:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
