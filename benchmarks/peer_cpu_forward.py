#!/usr/bin/env python3
"""peer_cpu_forward.py: CPU forward throughput of `xrank embed` / `xrank score` against sentence-transformers
(PyTorch) on the same model, texts, batch size, max length and thread count, in the same run.

embed: SentenceTransformer(all-MiniLM-L6-v2).encode(texts)            vs  xrank embed  (mean pooling + L2)
score: CrossEncoder.predict(pairs) on a BertForSequenceClassification   vs  xrank score --activation sigmoid
       built from the MiniLM weights with a seeded random classifier head (saved to a temp dir, so both load
       the same files)
Texts: man-page paragraphs (manpage_texts.py). Each side runs --repeats times, alternating, after a warm-up;
the best run of each side is compared (the machine may be shared). The peer's timed region is encode/predict
(tokenization + forward); xrank is timed as a whole process (start, model load, reading and writing files
included) and by its own report (tokenization + forward). Outputs are checked against each other.

Run with the reference venv (bench_cpu_forward.sh does):
  python benchmarks/peer_cpu_forward.py --xrank build/xrank --model /work/models/all-MiniLM-L6-v2
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import manpage_texts  # noqa: E402


def run_xrank(args, cmd, out_path, env):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"xrank failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    m = re.search(r"throughput ([0-9.]+) \w+/s, ([0-9.]+) tokens/s", p.stderr)
    eff = re.search(r"padding efficiency ([0-9.]+)%", p.stderr)
    return wall, float(m.group(1)), float(eff.group(1)), p.stderr


def bench(name, n, peer_fn, xrank_cmd, out_path, env, repeats):
    """Alternate peer and xrank runs; return the best of each."""
    peer_best, x_wall_best, x_self_best, x_eff, peer_out, x_err = 0.0, 0.0, 0.0, 0.0, None, ""
    for r in range(repeats):
        t0 = time.perf_counter()
        peer_out = peer_fn()
        dt = time.perf_counter() - t0
        peer_best = max(peer_best, n / dt)
        wall, self_rate, x_eff, x_err = run_xrank(None, xrank_cmd, out_path, env)
        x_wall_best = max(x_wall_best, n / wall)
        x_self_best = max(x_self_best, self_rate)
        print(f"  {name} run {r + 1}: peer {n / dt:8.1f}/s   xrank {n / wall:8.1f}/s (process)"
              f" {self_rate:8.1f}/s (its report)", flush=True)
    return peer_best, x_wall_best, x_self_best, x_eff, peer_out, x_err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xrank", required=True)
    ap.add_argument("--model", default=os.environ.get("XR_MINILM_DIR", "/work/models/all-MiniLM-L6-v2"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", default="embed,score")
    ap.add_argument("--mandir", default="/usr/share/man/man1")
    ap.add_argument("--log", help="append the result as one JSON line to this file")
    a = ap.parse_args()

    from sentence_transformers import CrossEncoder, SentenceTransformer
    from transformers import BertForSequenceClassification

    torch.set_num_threads(a.threads)
    work = tempfile.mkdtemp(prefix="xrank_bench_")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    texts, pairs = manpage_texts.collect(a.n, a.mandir)
    if len(texts) < a.n:
        raise SystemExit(f"only {len(texts)} man-page paragraphs under {a.mandir}")
    with open(os.path.join(work, "texts.jsonl"), "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    with open(os.path.join(work, "pairs.jsonl"), "w", encoding="utf-8") as f:
        for q, p in pairs:
            f.write(json.dumps({"query": q, "passage": p}, ensure_ascii=False) + "\n")
    common = ["--batch-size", str(a.batch_size), "--max-length", str(a.max_length), "--threads", str(a.threads),
              "--overwrite"]
    result = dict(date=time.strftime("%Y-%m-%d"), machine=platform.processor() or platform.machine(),
                  cpus=os.cpu_count(), threads=a.threads, batch=a.batch_size, max_length=a.max_length, n=a.n,
                  openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"), torch=torch.__version__,
                  words_mean=round(sum(len(t.split()) for t in texts) / len(texts), 1))
    try:
        result["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{a.n} man-page paragraphs ({result['words_mean']} words on average), batch {a.batch_size}, "
          f"max length {a.max_length}, {a.threads} threads, OPENBLAS_CORETYPE={result['openblas_coretype']}")

    if "embed" in a.tasks:
        st = SentenceTransformer(a.model, device="cpu")
        st.max_seq_length = a.max_length
        st.encode(texts[:2 * a.batch_size], batch_size=a.batch_size)  # warm-up
        out = os.path.join(work, "emb.npy")
        cmd = [a.xrank, "embed", "--model", a.model, "--input", os.path.join(work, "texts.jsonl"), "--output", out,
               *common]
        peer, xw, xs, eff, ref, err = bench(
            "embed", a.n, lambda: st.encode(texts, batch_size=a.batch_size, convert_to_numpy=True), cmd, out, env,
            a.repeats)
        diff = float(np.abs(np.load(out) - ref).max())
        result["embed"] = dict(peer=round(peer, 1), xrank_process=round(xw, 1), xrank_report=round(xs, 1),
                               ratio=round(xw / peer, 2), padding_efficiency=eff, max_abs_diff=diff)
        print(f"embed: sentence-transformers {peer:.1f} texts/s, xrank {xw:.1f} texts/s (process; {xs:.1f} by its "
              f"report): {xw / peer:.2f}x; max abs diff of the embeddings {diff:.2e}")
        del st

    if "score" in a.tasks:
        ce_dir = os.path.join(work, "minilm_seqcls")
        torch.manual_seed(0)
        m = BertForSequenceClassification.from_pretrained(a.model, num_labels=1)
        m.save_pretrained(ce_dir)
        for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
            if os.path.exists(os.path.join(a.model, f)):
                shutil.copyfile(os.path.join(a.model, f), os.path.join(ce_dir, f))
        del m
        ce = CrossEncoder(ce_dir, max_length=a.max_length, device="cpu")
        ce.predict(pairs[:2 * a.batch_size], batch_size=a.batch_size, show_progress_bar=False)  # warm-up
        out = os.path.join(work, "scores.jsonl")
        cmd = [a.xrank, "score", "--model", ce_dir, "--input", os.path.join(work, "pairs.jsonl"), "--output", out,
               "--activation", "sigmoid", *common]
        peer, xw, xs, eff, ref, err = bench(
            "score", a.n,
            lambda: ce.predict(pairs, batch_size=a.batch_size, show_progress_bar=False, convert_to_numpy=True),
            cmd, out, env, a.repeats)
        got = np.array([json.loads(l)["score"] for l in open(out)])
        diff = float(np.abs(got - np.asarray(ref).reshape(-1)).max())
        result["score"] = dict(peer=round(peer, 1), xrank_process=round(xw, 1), xrank_report=round(xs, 1),
                               ratio=round(xw / peer, 2), padding_efficiency=eff, max_abs_diff=diff)
        print(f"score: CrossEncoder.predict {peer:.1f} pairs/s, xrank {xw:.1f} pairs/s (process; {xs:.1f} by its "
              f"report): {xw / peer:.2f}x; max abs diff of the sigmoid scores {diff:.2e}")

    print(json.dumps(result))
    if a.log:
        with open(a.log, "a") as f:
            f.write(json.dumps(result) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
