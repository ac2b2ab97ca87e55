#!/usr/bin/env python3
"""bench_knn_torch.py: the PyTorch baseline for bench_knn_gpu: exact inner-product top-k of Q queries over N unit
passages by torch.mm + torch.topk in passage tiles (a running top-k per query merged with each tile's), the way
sentence-transformers' mine_hard_negatives and most scripts do it without FAISS; same precision (fp32 with TF32
off, or bf16 inputs with fp32 accumulation), the passages resident on the GPU. Prints one JSON line per k
(queries/s, seconds, GFLOP/s = 2 Q N D / seconds); exits 77 without torch or a GPU.

    python3 bench_knn_torch.py --passages 1000000 --dim 768 --queries 10000 --k 100,1000 --precision fp32
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=1000000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=10000)
    ap.add_argument("--k", default="100,1000")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--tile", type=int, default=65536)
    ap.add_argument("--block", type=int, default=1024, help="queries per torch.mm (the score tile is block x tile)")
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print(json.dumps({"bench": "knn_torch", "skipped": "no torch"}))
        sys.exit(77)
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "knn_torch", "skipped": "no GPU"}))
        sys.exit(77)
    torch.backends.cuda.matmul.allow_tf32 = False
    dt = torch.bfloat16 if a.precision == "bf16" else torch.float32
    g = torch.Generator(device="cuda").manual_seed(0)
    P = torch.nn.functional.normalize(torch.rand(a.passages, a.dim, device="cuda", generator=g) * 2 - 1, dim=1).to(dt)
    Q = torch.nn.functional.normalize(torch.rand(a.queries, a.dim, device="cuda", generator=g) * 2 - 1, dim=1).to(dt)
    for k in [int(x) for x in a.k.split(",")]:
        def run():
            out_s, out_i = [], []
            for q0 in range(0, a.queries, a.block):
                q = Q[q0:q0 + a.block]
                best_s = best_i = None
                for p0 in range(0, a.passages, a.tile):
                    s = torch.mm(q, P[p0:p0 + a.tile].T).float()
                    ts, ti = torch.topk(s, min(k, s.shape[1]), dim=1)
                    ti = ti + p0
                    if best_s is not None:
                        ts, j = torch.topk(torch.cat([best_s, ts], 1), k, dim=1)
                        ti = torch.gather(torch.cat([best_i, ti], 1), 1, j)
                    best_s, best_i = ts, ti
                out_s.append(best_s)
                out_i.append(best_i)
            return torch.cat(out_s), torch.cat(out_i)
        run() if a.passages * a.queries <= 2e9 else None  # warm-up (cuBLAS heuristics, allocator) when cheap
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        print(json.dumps({"bench": "knn_torch", "precision": a.precision, "passages": a.passages, "dim": a.dim,
                          "queries": a.queries, "k": k, "tile": a.tile, "block": a.block, "seconds": round(sec, 4),
                          "queries_per_s": round(a.queries / sec, 1),
                          "gflops": round(2.0 * a.queries * a.passages * a.dim / sec / 1e9, 1),
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
