#!/usr/bin/env python3
"""peer_tokenize.py: tokenization throughput (MB of text per second per core) of `xrank tokenize` against the
Hugging Face fast tokenizers (Rust `tokenizers`) on the same corpus and vocabulary, in the same run.

Corpus: man-page paragraphs (tools/manpage_texts.py), repeated --repeat times, written as a BEIR directory.
Peer: Tokenizer.from_file(tokenizer.json) with truncation and padding off, encode_batch(texts,
add_special_tokens=False) and encode_batch_fast (the same without character offsets), timed alone (texts already in memory), in a fresh process per thread count with
RAYON_NUM_THREADS set (the Rust thread pool reads it once). xrank: the whole `xrank tokenize` process (read and
parse the jsonl, tokenize, write the HDF5 stores) timed from outside, and its own report of the tokenization
phase alone. Each configuration runs --repeats times, alternating sides; the best run counts (the machine
may be shared). The stored ids are checked against the peer's for every passage.

  python benchmarks/peer_tokenize.py --xrank build/xrank --model /work/models/all-MiniLM-L6-v2
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import manpage_texts  # noqa: E402


def hf_worker(model, corpus, repeats):
    """Runs in its own process (RAYON_NUM_THREADS set by the parent): best encode_batch time over the corpus."""
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    tk.no_truncation()
    tk.no_padding()
    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    res = {}
    for name in ("encode_batch", "encode_batch_fast"):  # _fast: no offsets (tokenizers >= 0.20)
        fn = getattr(tk, name, None)
        if fn is None:
            continue
        fn(texts[:256], add_special_tokens=False)  # warm-up
        best = 1e30
        for _ in range(repeats):
            t0 = time.perf_counter()
            enc = fn(texts, add_special_tokens=False)
            best = min(best, time.perf_counter() - t0)
        res[name] = best
    print(json.dumps(res))


def run_hf(args, threads, corpus):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    p = subprocess.run([sys.executable, __file__, "--hf-worker", corpus, "--model", args.model, "--repeats", "1"],
                       env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"HF worker failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_xrank(args, ranks, threads, beir, out):
    cmd = [args.xrank, "tokenize", "--model", args.model, "--input", beir, "--output", out, "--overwrite",
           "--threads", str(threads)]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    if ranks > 1:
        cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + cmd
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"xrank failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    m = re.search(r"parse ([0-9.]+)s, tokenize ([0-9.]+)s .* gather \+ write ([0-9.]+)s", p.stderr)
    return {"wall": wall, "parse": float(m.group(1)), "tokenize": float(m.group(2)), "write": float(m.group(3)),
            "report": p.stderr}


def check_ids(args, out, corpus):
    """Every stored passage equals the peer's ids (no special tokens)."""
    import h5py
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tk.no_truncation()
    tk.no_padding()
    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    want = tk.encode_batch(texts, add_special_tokens=False)
    ix = h5py.File(os.path.join(out, "index.h5"), "r")
    files = ix["passages/shard_files"].asstr()[:]
    bad, row = 0, 0
    for f in files:
        g = h5py.File(os.path.join(out, f), "r")["passages"]
        tok, off = g["tokens"][:], g["offsets"][:]
        for i in range(len(off) - 1):
            if list(tok[off[i]:off[i + 1]]) != want[row].ids:
                bad += 1
            row += 1
    return bad, row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xrank")
    ap.add_argument("--model", default="/work/models/all-MiniLM-L6-v2")
    ap.add_argument("--n", type=int, default=20000, help="man-page paragraphs (all there are, if fewer)")
    ap.add_argument("--repeat", type=int, default=4, help="the corpus is the paragraphs repeated this many times")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default="1x1,1x2,2x1", help="xrank ranks x threads to run")
    ap.add_argument("--peer-threads", default="1,2")
    ap.add_argument("--hf-worker")
    ap.add_argument("--log")
    a = ap.parse_args()
    if a.hf_worker:
        return hf_worker(a.model, a.hf_worker, a.repeats)

    texts, _ = manpage_texts.collect(a.n, "/usr/share/man/man1")
    tmp = tempfile.mkdtemp(prefix="xr_bench_tok_")
    beir = os.path.join(tmp, "beir")
    os.makedirs(os.path.join(beir, "qrels"))
    corpus = os.path.join(beir, "corpus.jsonl")
    nbytes = 0
    with open(corpus, "w", encoding="utf-8") as f:
        k = 0
        for _ in range(a.repeat):
            for t in texts:
                f.write(json.dumps({"_id": f"d{k}", "title": "", "text": t}, ensure_ascii=False) + "\n")
                nbytes += len(t.encode("utf-8"))
                k += 1
    with open(os.path.join(beir, "queries.jsonl"), "w") as f:
        f.write(json.dumps({"_id": "q0", "text": "list directory contents"}) + "\n")
    with open(os.path.join(beir, "qrels", "test.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\nq0\td0\t1\n")
    mb = nbytes / 1e6
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"corpus: {k} passages ({len(texts)} man-page paragraphs x {a.repeat}), {mb:.2f} MB of text; "
          f"{cpu}, {os.cpu_count()} cpus; {platform.python_version()}")

    results = []
    peer_threads = [int(t) for t in a.peer_threads.split(",")]
    configs = [tuple(int(v) for v in c.split("x")) for c in a.configs.split(",")]
    best_peer = {t: None for t in peer_threads}
    best_x = {c: None for c in configs}
    out = os.path.join(tmp, "out")
    for r in range(a.repeats):
        for t in peer_threads:
            h = run_hf(a, t, corpus)
            if best_peer[t] is None:
                best_peer[t] = h
            else:
                best_peer[t] = {k: min(v, best_peer[t][k]) for k, v in h.items()}
        for c in configs:
            x = run_xrank(a, c[0], c[1], beir, out)
            if best_x[c] is None or x["tokenize"] < best_x[c]["tokenize"]:
                best_x[c] = x
    bad, rows = check_ids(a, out, corpus)
    print(f"ids: {rows - bad} of {rows} passages identical to the HF tokenizer's")
    print(f"{'':34s} {'cores':>5s} {'tokenize s':>10s} {'MB/s':>8s} {'MB/s/core':>10s} {'end-to-end s':>12s}")
    for t in peer_threads:
        for name, s in best_peer[t].items():
            print(f"{'HF tokenizers ' + name:34s} {t:5d} {s:10.3f} {mb / s:8.2f} {mb / s / t:10.2f} {'-':>12s}")
            results.append({"side": "hf", "api": name, "cores": t, "tokenize_s": s, "mb_s": mb / s,
                            "mb_s_core": mb / s / t})
    for c in configs:
        x = best_x[c]
        cores = c[0] * c[1]
        s = x["tokenize"]
        name = f"xrank tokenize {c[0]} rank{'s' if c[0] > 1 else ''} x {c[1]} thread{'s' if c[1] > 1 else ''}"
        print(f"{name:34s} {cores:5d} {s:10.3f} {mb / s:8.2f} {mb / s / cores:10.2f} {x['wall']:12.3f}"
              f"  (parse {x['parse']:.2f}s, gather + write {x['write']:.2f}s)")
        results.append({"side": "xrank", "ranks": c[0], "threads": c[1], "cores": cores, "tokenize_s": s,
                        "mb_s": mb / s, "mb_s_core": mb / s / cores, "wall_s": x["wall"], "parse_s": x["parse"],
                        "write_s": x["write"]})
    p1 = min(best_peer[peer_threads[0]].values())
    x1 = best_x[configs[0]]["tokenize"]
    print(f"per core, {configs[0][0] * configs[0][1]} core(s): xrank / fastest HF = {p1 / x1:.1f}x "
          f"(tokenization alone); xrank end-to-end {mb / best_x[configs[0]]['wall']:.1f} MB/s")
    if a.log:
        with open(a.log, "a") as f:
            f.write(json.dumps({"mb": mb, "passages": k, "cpu": cpu, "ids_identical": rows - bad, "rows": rows,
                                "results": results}) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
