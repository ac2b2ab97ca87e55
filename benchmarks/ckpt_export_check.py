#!/usr/bin/env python3
"""ckpt_export_check.py: what `xrank train` writes (final/, best/) and what `xrank export` makes of a checkpoint
load in transformers and sentence-transformers and score as `xrank score` does (issue 12's export proof; not run
by CI, which has no torch).

    python3 benchmarks/ckpt_export_check.py --xrank build/xrank [--ckpt RUN/checkpoint-N ...] [--model RUN/final ...]
                                           [--tol 1e-4]

Each --ckpt is exported twice with `xrank export` (--activation none and sigmoid); each --model is used as it is.
Every directory scores a few query-passage pairs with `xrank score` (same --activation), with transformers'
AutoModelForSequenceClassification (logits, sigmoid applied for the sigmoid export) and with sentence-transformers'
CrossEncoder (predict, which applies the activation the config names); the script fails when any score differs by
more than tol. Needs torch, transformers and sentence-transformers (a venv outside the repository).
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


def xrank_scores(xrank, model, inp, activation):
    r = subprocess.run([xrank, "score", "--model", model, "--input", inp, "--activation", activation, "--quiet"],
                       check=True, capture_output=True, text=True)
    return [float(json.loads(line)["score"]) for line in r.stdout.splitlines() if line.strip()]


def check(xrank, model, inp, activation, tol):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from sentence_transformers import CrossEncoder

    xs = xrank_scores(xrank, model, inp, activation)
    tok = AutoTokenizer.from_pretrained(model)
    hfm = AutoModelForSequenceClassification.from_pretrained(model).eval()
    with torch.no_grad():
        enc = tok([q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, truncation="longest_first",
                  return_tensors="pt")
        logits = hfm(**enc).logits[:, 0]
        hf = (torch.sigmoid(logits) if activation == "sigmoid" else logits).tolist()
    st = [float(x) for x in CrossEncoder(model, device="cpu").predict(PAIRS)]
    worst = 0.0
    print(f"{model} (activation {activation})")
    for i, (x, h, s) in enumerate(zip(xs, hf, st)):
        d = max(abs(x - h), abs(x - s))
        worst = max(worst, d)
        print(f"  pair {i}: xrank {x:.6f}  transformers {h:.6f}  CrossEncoder {s:.6f}  |diff| {d:.2e}")
    ok = len(xs) == len(hf) == len(st) == len(PAIRS) and worst <= tol
    print(f"  max |diff| {worst:.2e} (tol {tol}): {'ok' if ok else 'FAILED'}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xrank", required=True)
    ap.add_argument("--ckpt", action="append", default=[], help="a checkpoint-<step> directory to export")
    ap.add_argument("--model", action="append", default=[], help="a model directory xrank train wrote")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    if not a.ckpt and not a.model:
        ap.error("give at least one --ckpt or --model")
    tmp = tempfile.mkdtemp(prefix="xrank_export_")
    inp = os.path.join(tmp, "pairs.jsonl")
    with open(inp, "w") as f:
        for q, p in PAIRS:
            f.write(json.dumps([q, p]) + "\n")
    runs = [(m, "none") for m in a.model]
    for i, ck in enumerate(a.ckpt):
        for act in ("none", "sigmoid"):
            out = os.path.join(tmp, f"export{i}_{act}")
            subprocess.run([a.xrank, "export", ck, out, "--activation", act], check=True)
            runs.append((out, act))
    failed = [m for m, act in runs if not check(a.xrank, m, inp, act, a.tol)]
    print(f"{len(runs) - len(failed)} of {len(runs)} directories agree within {a.tol}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
