#!/usr/bin/env python3
"""scaling_model.py: the cost model of benchmarks/SCALING.md: step time = compute + the communication that does not
overlap the backward, from the ring formulas with given bandwidths. Standard library only.

  scaling_model.py project [--rate TFLOPS] [--pairs-per-gpu P]
                                             the bge-reranker-v2-m3 projection for 1, 8, 16, 64, 256 H100s
  scaling_model.py check JSONL SCALING_JSONL the local check: 2 CPU ranks, MiniLM, MPI busbw from bench_comm lines
                                             (JSONL) against the measured exposed communication (bench_train_scaling
                                             / bench_scaling lines)

Every number below is an assumption or a measurement named where it is set; SCALING.md says where each comes from.
"""
import json
import math
import sys

# ---- the model: bge-reranker-v2-m3 (XLM-RoBERTa large + 1-label head), benchmarks/configs/bge-reranker-v2-m3 ----
L, H, I, V = 24, 1024, 4096, 250002
PARAMS = 567_755_777                 # gsync_optimizer_bytes / bench_zero_memory, RESULTS.md
EMB = V * H                          # word embeddings: 256,002,048 (45.1 %)
S_ALL = 4 * PARAMS                   # fp32 gradient / parameter bytes (xrank reduces and gathers fp32)
S_EMB = 4 * EMB
S_REST = S_ALL - S_EMB
P_TOK = L * (4 * H * H + 2 * H * I)  # per-token linear weights

# ---- the recipe (issue 14 / configs: FlagEmbedding's starting point) ----
PAIRS_PER_GPU = 16 * 16              # 16 groups x group size 16 per GPU and step
TOK_PER_PAIR = 200                   # ASSUMED mean real tokens per pair (query + passage, max 256 + 256; packed)

# ---- communication ----
BUCKET = 25 * 2**20                  # gradient bucket bytes (xrank's default)
ALPHA = 5e-6                         # ASSUMED per ring step latency (s)
NVLINK_AR = 476e9                    # all-reduce busbw, 8 x H100 SXM (NVLink + NVLS): nccl-tests issue #290
NVLINK_RSAG = 360e9                  # ASSUMED reduce-scatter / all-gather busbw in a node: 80 % of 450 GB/s
IB_NIC = 46e9                        # per NDR 400 Gb/s NIC: 46-48 GB/s (NCCL maintainer, nccl-tests issue #290)
NICS_PER_NODE = 8                    # DGX / HGX H100: one ConnectX-7 per GPU
GPUS_PER_NODE = 8
HBM = 3.35e12                        # H100 SXM HBM3 bandwidth (NVIDIA datasheet), for the optimizer's pass


def flops_per_token(n):
    """Training FLOPs per real token of a pair of n tokens: 3 x forward (backward = 2 x forward), forward =
    2 x P_tok + 4 L H n (attention scores and values); embeddings, norms, softmax, head not counted."""
    return 3 * (2 * P_TOK + 4 * L * H * n)


def distinct_rows(tokens):
    """ASSUMED word-embedding rows touched by `tokens` tokens: Heaps' law fitted on the demo's man pages (536 rows
    in 1,500 tokens, exponent 0.59 between 1.5k and 12k tokens, before that small corpus saturates), capped at V."""
    return min(V, 536 * (tokens / 1500) ** 0.59)


def busbw(n, kind):
    """Bus bandwidth of a ring over n GPUs: NVLink inside one node; across nodes every ring crosses each node boundary
    through its own NIC, so the node's share is NICS_PER_NODE x IB_NIC (bounded by NVLink)."""
    if n <= GPUS_PER_NODE:
        return NVLINK_AR if kind == "ar" else NVLINK_RSAG
    return min(NICS_PER_NODE * IB_NIC, NVLINK_RSAG)


def t_ar(n, b, buckets=1):
    return 0.0 if n == 1 else 2 * (n - 1) / n * b / busbw(n, "ar") + 2 * (n - 1) * ALPHA * buckets


def t_rsag(n, b, buckets=1):
    return 0.0 if n == 1 else (n - 1) / n * b / busbw(n, "rsag") + (n - 1) * ALPHA * buckets


def exposed_comm(n, bwd, s_rest, s_emb, rows_bytes, ids_bytes, zero, sparse, ar, rsag):
    """Communication left after the backward, per step: the buckets of everything but the word embeddings overlap
    the backward (what does not fit is exposed); the word embeddings' gradient is final only when the backward
    ends (dense, or the touched rows and their ids); with ZeRO-1 the updated parameters are all-gathered densely
    after the update (AdamW changes untouched rows too). ar / rsag: time of a collective of b bytes."""
    if n == 1:
        return 0.0
    nb = math.ceil(s_rest / BUCKET)
    x = max(0.0, (rsag(s_rest, nb) if zero else ar(s_rest, nb)) - bwd)
    if sparse:
        x += ar(rows_bytes, 1) + rsag(ids_bytes, 1)
    else:
        x += rsag(s_emb, 1) if zero else ar(s_emb, 1)
    if zero:
        x += rsag(s_rest + s_emb, 1)  # one all-gather call over the whole buffer (gsync_step)
    return x


def step(n, rate, zero, sparse):
    """(step seconds, compute, exposed communication) for n GPUs."""
    tokens = PAIRS_PER_GPU * TOK_PER_PAIR
    compute = tokens * flops_per_token(TOK_PER_PAIR) / rate
    opt = 28 * PARAMS / (n if zero else 1) / HBM  # AdamW: read param, grad, 2 moments, write param, 2 moments
    x = exposed_comm(n, compute * 2 / 3, S_REST, S_EMB, distinct_rows(n * tokens) * H * 4,
                     n * distinct_rows(tokens) * 4, zero, sparse,
                     lambda b, k: t_ar(n, b, k), lambda b, k: t_rsag(n, b, k))
    return compute + x + opt, compute, x


def project(rate):
    print(f"Compute rate {rate / 1e12:.0f} TFLOP/s per H100; {PAIRS_PER_GPU} pairs x {TOK_PER_PAIR} tokens per GPU "
          f"and step ({flops_per_token(TOK_PER_PAIR) / 1e9:.3f} GFLOP per token)\n")
    print("| GPUs | exchange | step s | compute s | exposed comm s | pairs/s | per GPU | efficiency | "
          "optimizer state per GPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = PAIRS_PER_GPU / step(1, rate, False, False)[0]
    for n in (1, 8, 16, 64, 256):
        for zero, sparse in ((False, False), (False, True), (True, False), (True, True)):
            if n == 1 and (zero or sparse):
                continue
            t, c, x = step(n, rate, zero, sparse)
            name = "all-reduce" if not zero else "ZeRO-1"
            name += ", sparse embeddings" if sparse else ", dense"
            if n == 1:
                name = "one GPU (no exchange)"
            mib = 8 * PARAMS / (n if zero else 1) / 2**20
            print(f"| {n} | {name} | {t:.3f} | {c:.3f} | {x:.3f} | {n * PAIRS_PER_GPU / t:,.0f} | "
                  f"{PAIRS_PER_GPU / t:.0f} | {100 * PAIRS_PER_GPU / t / base:.0f}% | {mib:,.0f} MiB |")


def check(comm_jsonl, runs_jsonl):
    """The same formulas for the local runs: all-MiniLM-L6-v2 + head (22,713,601 parameters: 90.9 MB fp32, word
    embeddings 30,522 x 384), 2 CPU ranks over MPI, busbw from bench_comm at the nearest size, the backward = 2/3 of
    the measured compute, the touched rows the trainer reports."""
    comm = [json.loads(l) for l in open(comm_jsonl) if l.strip().startswith("{")]
    runs = [json.loads(l) for l in open(runs_jsonl) if l.strip().startswith("{")]

    def coll_time(name, b, k):  # k pieces of b / k bytes: busbw measured at that size, time = factor x size / busbw
        if b <= 0:
            return 0.0
        pts = [c for c in comm if c["collective"] == name]
        near = min(pts, key=lambda c: abs(math.log2(c["bytes"]) - math.log2(b / k)))
        return k * near["time_us"] * 1e-6 * (b / k) / near["bytes"]

    n_params, emb = 22_713_601, 30522 * 384
    s_all, s_emb = 4 * n_params, 4 * emb
    print("| layout | measured compute s | predicted exposed comm s: buckets overlap the backward / do not | "
          "measured exposed comm s (median) |")
    print("|---|---|---|---|")
    for label, zero, sparse, bucket in (("2x1thread-pre-engine", False, False, None),
                                        ("2x1thread-mpi", True, True, BUCKET)):
        got = [r for r in runs if r.get("label") == label]
        if not got:
            continue
        comp = sorted(r["compute_s"] for r in got)[len(got) // 2]
        rows = sorted(r["emb_rows_per_step"] or 0 for r in got)[len(got) // 2]
        preds = []
        for bwd in (comp * 2 / 3, 0.0):  # 0: nothing overlaps (MPI moves data only inside MPI calls)
            if bucket is None:  # one blocking all-reduce of the whole buffer after the backward
                preds.append(coll_time("all_reduce", s_all, 1))
                continue
            preds.append(exposed_comm(2, bwd, s_all - s_emb, s_emb, rows * 384 * 4, rows * 4, zero, sparse,
                                      lambda b, k: coll_time("all_reduce", b, k),
                                      lambda b, k: coll_time("reduce_scatter" if b < s_all else "all_gather", b, k)))
        meas = sorted(r["comm_exposed_s"] for r in got)[len(got) // 2]
        print(f"| {label} | {comp:.3f} | {preds[0]:.3f} / {preds[1]:.3f} | {meas:.3f} |")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "project":
        global PAIRS_PER_GPU
        opts = dict(zip(sys.argv[2::2], sys.argv[3::2]))
        PAIRS_PER_GPU = int(opts.get("--pairs-per-gpu", PAIRS_PER_GPU))
        project(float(opts.get("--rate", 230)) * 1e12)
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
