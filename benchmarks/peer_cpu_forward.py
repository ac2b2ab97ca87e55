#!/usr/bin/env python3
"""peer_cpu_forward.py: CPU forward throughput of `xrank embed` / `xrank score` against sentence-transformers
(PyTorch) on the same model, texts, batch size, max length and thread count, in the same run.

embed: SentenceTransformer(all-MiniLM-L6-v2).encode(texts)            vs  xrank embed  (mean pooling + L2)
score: CrossEncoder.predict(pairs) on a BertForSequenceClassification   vs  xrank score --activation sigmoid
       built from the MiniLM weights with a seeded random classifier head (saved to a temp dir, so both load
       the same files)
Texts: man-page paragraphs (tools/manpage_texts.py). Each side runs --repeats times, alternating, after a warm-up;
each xrank run is paired with the peer run just before it and the median of the paired ratios is the
headline (the machine may be shared); the best run of each side is reported too. The peer's timed region is encode/predict
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
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
    """Alternate peer and xrank runs. The machine may be shared, so each xrank run is paired with the peer run
    just before it: the headline ratio is the median of the paired ratios; the best of each side is kept too."""
    runs, peer_out, x_eff = [], None, 0.0
    for r in range(repeats):
        t0 = time.perf_counter()
        peer_out = peer_fn()
        peer = n / (time.perf_counter() - t0)
        wall, self_rate, x_eff, _ = run_xrank(None, xrank_cmd, out_path, env)
        runs.append((peer, n / wall, self_rate))
        print(f"  {name} run {r + 1}: peer {peer:8.1f}/s   xrank {n / wall:8.1f}/s (process) {self_rate:8.1f}/s "
              f"(its report)   ratio {n / wall / peer:5.2f}   load average {os.getloadavg()[0]:.2f}", flush=True)
    ratios = sorted(x / p for p, x, _ in runs)
    med = ratios[len(ratios) // 2] if len(ratios) % 2 else 0.5 * (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2])
    return dict(peer_best=round(max(p for p, _, _ in runs), 1), xrank_best=round(max(x for _, x, _ in runs), 1),
                xrank_report_best=round(max(s for _, _, s in runs), 1), ratio_median=round(med, 2),
                ratio_of_bests=round(max(x for _, x, _ in runs) / max(p for p, _, _ in runs), 2),
                runs=[[round(v, 1) for v in r] for r in runs], padding_efficiency=x_eff), peer_out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xrank", required=True)
    ap.add_argument("--model", default=os.environ.get("XR_MINILM_DIR", "/work/models/all-MiniLM-L6-v2"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
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
        here = os.path.dirname(os.path.abspath(__file__))
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
        result["commit"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        pass
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
        res, ref = bench("embed", a.n, lambda: st.encode(texts, batch_size=a.batch_size, convert_to_numpy=True), cmd,
                         out, env, a.repeats)
        res["max_abs_diff"] = float(np.abs(np.load(out) - ref).max())
        result["embed"] = res
        print(f"embed: sentence-transformers best {res['peer_best']} texts/s, xrank best {res['xrank_best']} texts/s; "
              f"ratio {res['ratio_median']}x (median of paired runs), {res['ratio_of_bests']}x (bests); "
              f"max abs diff of the embeddings {res['max_abs_diff']:.2e}")
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
        res, ref = bench("score", a.n,
                         lambda: ce.predict(pairs, batch_size=a.batch_size, show_progress_bar=False,
                                            convert_to_numpy=True), cmd, out, env, a.repeats)
        got = np.array([json.loads(l)["score"] for l in open(out)])
        res["max_abs_diff"] = float(np.abs(got - np.asarray(ref).reshape(-1)).max())
        result["score"] = res
        print(f"score: CrossEncoder.predict best {res['peer_best']} pairs/s, xrank best {res['xrank_best']} pairs/s; "
              f"ratio {res['ratio_median']}x (median of paired runs), {res['ratio_of_bests']}x (bests); "
              f"max abs diff of the sigmoid scores {res['max_abs_diff']:.2e}")

    print(json.dumps(result))
    if a.log:
        with open(a.log, "a") as f:
            f.write(json.dumps(result) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
