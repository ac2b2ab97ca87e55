#!/usr/bin/env python3
"""Exact dense retrieval + trec_eval-style metrics for the demo, standard library only.

An independent check of the retriever metrics `xrank mine` prints (benchmarks/RESULTS.md: both agree on the
demo corpus); it once stood in for `xrank mine` / `xrank eval`. Reads query and passage embeddings written by
`xrank embed --output X.npy` (float32 [N, H], L2-normalised), ranks every passage for every query by inner
product (ties by passage index), and prints MRR@10, NDCG@10 and Recall@{1,10,100} against the BEIR qrels.
Usage: demo_eval.py QUERIES.npy PASSAGES.npy BEIR_DIR
"""
import array, ast, json, math, operator, os, sys


def read_npy(path):
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            sys.exit(f"{path}: not a .npy file")
        major = f.read(2)[0]
        hlen = int.from_bytes(f.read(2 if major == 1 else 4), "little")
        hdr = ast.literal_eval(f.read(hlen).decode("latin1"))
        if hdr["descr"] != "<f4" or hdr["fortran_order"] or len(hdr["shape"]) != 2:
            sys.exit(f"{path}: expected little-endian float32 [N, H], got {hdr}")
        n, h = hdr["shape"]
        a = array.array("f")
        a.frombytes(f.read(4 * n * h))
    if len(a) != n * h:
        sys.exit(f"{path}: truncated ({len(a)} of {n * h} floats)")
    return [a[i * h:(i + 1) * h] for i in range(n)]


def ids_of(path):
    with open(path) as f:
        return [json.loads(l)["_id"] for l in f if l.strip()]


def main():
    qe, pe, beir = read_npy(sys.argv[1]), read_npy(sys.argv[2]), sys.argv[3]
    qids, pids = ids_of(os.path.join(beir, "queries.jsonl")), ids_of(os.path.join(beir, "corpus.jsonl"))
    qrels = {}
    with open(os.path.join(beir, "qrels", "test.tsv")) as f:
        next(f)
        for line in f:
            q, d, g = line.split("\t")
            qrels.setdefault(q, {})[d] = int(g)
    mrr = ndcg = 0.0
    rec = {1: 0.0, 10: 0.0, 100: 0.0}
    for qi, q in enumerate(qe):
        scores = [sum(map(operator.mul, q, p)) for p in pe]
        order = sorted(range(len(pe)), key=lambda j: (-scores[j], j))
        rel = qrels.get(qids[qi], {})
        if not rel:
            continue
        grades = [rel.get(pids[j], 0) for j in order[:100]]
        mrr += next((1.0 / (r + 1) for r, g in enumerate(grades[:10]) if g > 0), 0.0)
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(grades[:10]))
        ideal = sorted(rel.values(), reverse=True)[:10]
        ndcg += dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        for k in rec:
            rec[k] += sum(1 for g in grades[:k] if g > 0) / len(rel)
    n = len(qe)
    print(f"  queries {n}, passages {len(pe)}")
    print(f"  MRR@10 {mrr / n:.4f}  NDCG@10 {ndcg / n:.4f}  R@1 {rec[1] / n:.4f}  R@10 {rec[10] / n:.4f}  "
          f"R@100 {rec[100] / n:.4f}")


if __name__ == "__main__":
    main()
