#!/usr/bin/env python3
"""peer_mine.py: `xrank mine` against sentence-transformers' own `mine_hard_negatives` (use_faiss=False) on the
same model, corpus and options, in the same run.

Data: the demo's man-page corpus (tools/demo_corpus.py, a BEIR directory; built here when --beir is not given):
queries = NAME lines, passages = DESCRIPTION paragraphs, qrels = each query's own page. sentence-transformers
gets a datasets.Dataset of (query, positive passage text) rows, one per qrel with grade > 0, and corpus = every
passage text (it de-duplicates the corpus by exact text; xrank by identical tokens).

Agreement: both write the triplet format (xrank: --jsonl --text-from, every text checked against the stored
tokens); for each (query, positive) the mined negatives are compared slot by slot, by text; a slot counts once
if either side filled it. Target: >= 99% identical slots, differences only where scores tie within float
error (the disagreements are listed with both sides' cosine scores, recomputed by sentence-transformers).

Speed: passages/s of the embedding step: sentence-transformers `encode(corpus, batch_size)` vs xrank's own
report of its passage-embedding pass (mine --no-cache: read tokens, batch, forward), same threads and batch
size, alternating runs, the median of the paired ratios as the headline (the machine may be shared).

Run with the reference venv (bench_mine.sh does):
  /work/venv/bin/python benchmarks/peer_mine.py --xrank build/xrank --model /work/models/all-MiniLM-L6-v2
"""
import argparse
import inspect
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# (name, xrank flags, sentence-transformers kwargs)
CONFIGS = [
    ("default: 3 negatives, top", [], {}),
    ("5 negatives, range_min 2, relative_margin 0.05", ["--num-negatives", "5", "--range-min", "2",
                                                         "--relative-margin", "0.05"],
     {"num_negatives": 5, "range_min": 2, "relative_margin": 0.05}),
    ("4 negatives, absolute_margin 0.02, max_score 0.8", ["--num-negatives", "4", "--absolute-margin", "0.02",
                                                           "--max-score", "0.8"],
     {"num_negatives": 4, "absolute_margin": 0.02, "max_score": 0.8}),
    ("10 negatives, range_max 40", ["--num-negatives", "10", "--range-max", "40"],
     {"num_negatives": 10, "range_max": 40}),
    # issue 16: queries with few survivors take their last negatives from candidate range_max + max_positives + 1
    ("5 negatives, range_max 30, relative_margin 0.05", ["--num-negatives", "5", "--range-max", "30",
                                                         "--relative-margin", "0.05"],
     {"num_negatives": 5, "range_max": 30, "relative_margin": 0.05}),
    ("5 negatives, range_max 6, absolute_margin 0.1 (few survivors)", ["--num-negatives", "5", "--range-max", "6",
                                                                       "--absolute-margin", "0.1"],
     {"num_negatives": 5, "range_max": 6, "absolute_margin": 0.1}),
]


def read_beir(d):
    def jl(p):
        with open(p) as f:
            return [json.loads(l) for l in f if l.strip()]
    corpus = jl(os.path.join(d, "corpus.jsonl"))
    queries = {q["_id"]: q["text"] for q in jl(os.path.join(d, "queries.jsonl"))}
    ptext = {}
    for c in corpus:  # BEIR's join, as xrank tokenize does: strip(title + " " + text)
        ptext[c["_id"]] = ((c.get("title") or "") + " " + c["text"]).strip()
    rows = []
    with open(os.path.join(d, "qrels", "test.tsv")) as f:
        next(f)
        for line in f:
            q, p, g = line.rstrip("\n").split("\t")
            if int(g) > 0:
                rows.append((queries[q], ptext[p]))
    return [ptext[c["_id"]] for c in corpus], rows


def run(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return time.perf_counter() - t0, p.stderr


def slots_of(rows, a, b, n):
    out = {}
    for r in rows:
        out.setdefault((r[a], r[b]), []).append(r["negative"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xrank", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--beir", help="BEIR directory (default: build the man-page corpus with --pages)")
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="embedding-speed runs (0: agreement only)")
    ap.add_argument("--ranks", type=int, default=1, help="mpirun -np for the xrank mining runs")
    ap.add_argument("--log", help="append a JSON line with the results")
    ap.add_argument("--configs", help="comma-separated indices of the option sets to run (default: all)")
    a = ap.parse_args()

    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars from encode / mine_hard_negatives
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives
    import sentence_transformers
    st_version = sentence_transformers.__version__

    torch.set_num_threads(a.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    work = tempfile.mkdtemp(prefix="peer_mine_")
    try:
        beir = a.beir
        if not beir:
            beir = os.path.join(work, "manpages")
            here = os.path.dirname(os.path.abspath(__file__))
            subprocess.run([sys.executable, os.path.join(here, "..", "tools", "demo_corpus.py"), beir, "--pages",
                            str(a.pages)], check=True)
        corpus, pairs = read_beir(beir)
        print(f"corpus: {len(corpus)} passages, {len(pairs)} (query, positive) pairs; {a.threads} threads, "
              f"batch {a.batch_size}, torch {torch.__version__}, sentence-transformers {st_version}, "
              f"{platform.processor() or platform.machine()}")
        ds_dir = os.path.join(work, "ds")
        run([a.xrank, "tokenize", "--model", a.model, "--input", beir, "--output", ds_dir, "--quiet"], env)
        model = SentenceTransformer(a.model, device="cpu")
        dataset = Dataset.from_dict({"query": [p[0] for p in pairs], "answer": [p[1] for p in pairs]})
        xr_pre = ["mpirun", "-np", str(a.ranks), "--oversubscribe"] if a.ranks > 1 else []
        xr_threads = str(max(1, a.threads // a.ranks))

        # ---- agreement, per option set
        results = []
        chosen = CONFIGS if not a.configs else [CONFIGS[int(i)] for i in a.configs.split(",")]
        # the embeddings once for all option sets (sentence-transformers >= 5 caches them; xrank mine caches its own)
        cache_kw = {}
        if "cache_folder" in inspect.signature(mine_hard_negatives).parameters:
            cache_kw = {"cache_folder": os.path.join(work, "st_cache")}
        for name, xflags, stkw in chosen:
            out = os.path.join(work, "x.jsonl")
            cmd = xr_pre + [a.xrank, "mine", "--model", a.model, "--input", ds_dir, "--output",
                            os.path.join(work, "g.h5"), "--overwrite", "--threads", xr_threads, "--batch-size",
                            str(a.batch_size), "--jsonl", out, "--text-from", beir] + xflags
            _, err = run(cmd, env)
            with open(out) as f:
                xr_rows = [json.loads(l) for l in f]
            st = mine_hard_negatives(dataset, model, corpus=corpus, batch_size=a.batch_size, use_faiss=False,
                                     output_format="triplet", verbose=False, **cache_kw, **stkw)
            xs = slots_of(xr_rows, "anchor", "positive", 0)
            ss = slots_of(list(st), "query", "answer", 0)
            total = same = only_x = only_st = 0
            diffs = []
            for key in set(xs) | set(ss):
                x, s = xs.get(key, []), ss.get(key, [])
                only_x += max(0, len(x) - len(s))
                only_st += max(0, len(s) - len(x))
                for j in range(max(len(x), len(s))):
                    total += 1
                    if j < len(x) and j < len(s) and x[j] == s[j]:
                        same += 1
                    elif len(diffs) < 5:
                        diffs.append((key[0], j, x[j] if j < len(x) else None, s[j] if j < len(s) else None))
            frac = same / total if total else 1.0
            # scores of the disagreeing slots, as sentence-transformers computes them
            notes = []
            for q, j, xt, stt in diffs:
                qe = model.encode([q], convert_to_tensor=True, normalize_embeddings=True)
                cands = [t for t in (xt, stt) if t is not None]
                pe = model.encode(cands, convert_to_tensor=True, normalize_embeddings=True)
                sc = (qe @ pe.T)[0].tolist()
                notes.append(f"slot {j} of '{q[:40]}': xrank {sc[0] if xt else None} vs st {sc[-1] if stt else None}")
            print(f"[{name}] identical (query, rank) slots: {same}/{total} = {100 * frac:.2f}%; filled by "
                  f"xrank only {only_x}, by sentence-transformers only {only_st}")
            for n in notes:
                print("   ", n)
            results.append({"config": name, "slots": total, "identical": same, "fraction": frac,
                            "xrank_only": only_x, "st_only": only_st})

        # ---- embedding speed: passages/s
        if a.repeats > 0:
            model.encode(corpus[: 4 * a.batch_size], batch_size=a.batch_size, show_progress_bar=False)
        ratios, st_rates, xr_rates = [], [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            model.encode(corpus, batch_size=a.batch_size, show_progress_bar=False)
            st_rate = len(corpus) / (time.perf_counter() - t0)
            _, err = run([a.xrank, "mine", "--model", a.model, "--input", ds_dir, "--output",
                          os.path.join(work, "g.h5"), "--overwrite", "--threads", str(a.threads), "--batch-size",
                          str(a.batch_size), "--no-cache"], env)
            m = re.search(r"passages: (\d+) embedded in ([0-9.]+) s \(([0-9.]+)/s", err)
            xr_rate = float(m.group(3))
            st_rates.append(st_rate)
            xr_rates.append(xr_rate)
            ratios.append(xr_rate / st_rate)
            print(f"  embed passages/s: sentence-transformers {st_rate:.1f}, xrank {xr_rate:.1f} "
                  f"({xr_rate / st_rate:.2f}x)")
        speed = None
        if ratios:  # --repeats 0: agreement only
            speed = {"st_passages_per_s": max(st_rates), "xrank_passages_per_s": max(xr_rates),
                     "median_ratio": statistics.median(ratios)}
            print(f"embedding: xrank {speed['xrank_passages_per_s']:.1f} vs sentence-transformers "
                  f"{speed['st_passages_per_s']:.1f} passages/s (best runs); median paired ratio "
                  f"{speed['median_ratio']:.2f}x")
        worst = min(r["fraction"] for r in results)
        print(f"agreement: worst option set {100 * worst:.2f}% identical slots (target >= 99%)")
        if a.log:
            with open(a.log, "a") as f:
                f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "passages": len(corpus),
                                    "pairs": len(pairs), "threads": a.threads, "batch": a.batch_size,
                                    "ranks": a.ranks, "agreement": results, "speed": speed,
                                    "sentence_transformers": st_version,
                                    "cpu": platform.processor() or platform.machine()}) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
