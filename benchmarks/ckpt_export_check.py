#!/usr/bin/env python3
"""ckpt_export_check.py: the export of a training checkpoint loads in transformers and sentence-transformers and
scores as `xrank score` does (issue 12's export proof; not run by CI, which has no torch).

    python3 benchmarks/ckpt_export_check.py --xrank build/xrank --ckpt RUN/checkpoint-N [--tol 1e-4]

Exports CKPT with `xrank export`, scores a few query-passage pairs with `xrank score` (raw logits), with
transformers' AutoModelForSequenceClassification (logits) and with sentence-transformers' CrossEncoder
(predict; the export's config names the Identity activation), and fails when any score differs by more than tol.
Needs torch, transformers and sentence-transformers (pip install in a venv outside the repository).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

PAIRS = [
    ["what is a cross-encoder", "A cross-encoder reads the query and the passage together and outputs a score."],
    ["how do I list files", "ls lists directory contents; ls -l uses a long listing format."],
    ["how do I list files", "tar stores and extracts files from an archive."],
    ["copy a file over ssh", "scp copies files between hosts on a network using ssh for data transfer."],
    ["what does grep do", "grep searches for patterns in each file and prints matching lines."],
    ["kill a process by id", "The kill utility sends a signal to the processes named by their process ids."],
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xrank", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from sentence_transformers import CrossEncoder

    tmp = tempfile.mkdtemp(prefix="xrank_export_")
    out = os.path.join(tmp, "model")
    subprocess.run([a.xrank, "export", a.ckpt, out], check=True)
    inp = os.path.join(tmp, "pairs.jsonl")
    with open(inp, "w") as f:
        for q, p in PAIRS:
            f.write(json.dumps([q, p]) + "\n")
    r = subprocess.run([a.xrank, "score", "--model", out, "--input", inp, "--quiet"], check=True,
                       capture_output=True, text=True)
    xs = [float(line.split()[-1]) if not line.startswith("{") else float(json.loads(line)["score"])
          for line in r.stdout.splitlines() if line.strip()]

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        enc = tok([q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, truncation="longest_first",
                  return_tensors="pt")
        hf = model(**enc).logits[:, 0].tolist()
    ce = CrossEncoder(out)
    st = [float(x) for x in ce.predict(PAIRS)]

    worst = 0.0
    for i, (x, h, s) in enumerate(zip(xs, hf, st)):
        d = max(abs(x - h), abs(x - s))
        worst = max(worst, d)
        print(f"pair {i}: xrank {x:.6f}  transformers {h:.6f}  CrossEncoder {s:.6f}  |diff| {d:.2e}")
    print(f"max |diff| {worst:.2e} (tol {a.tol})")
    if len(xs) != len(PAIRS) or worst > a.tol:
        sys.exit(1)


if __name__ == "__main__":
    main()
