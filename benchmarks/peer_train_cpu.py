#!/usr/bin/env python3
"""peer_train_cpu.py: CPU training throughput of sentence-transformers' CrossEncoder (PyTorch) on the same model,
labeled pairs, loss, optimizer, batch, max length and threads as `xrank train`; the peer side of
bench_train_cpu.sh, plus the parser of xrank's metrics.jsonl and the summary table (ratios, model FLOPs, MFU).

  peer_train_cpu.py run --pairs PAIRS.jsonl --loop plain|trainer ...   one JSON line: the peer's steady state
  peer_train_cpu.py xrank --metrics RUN/metrics.jsonl --warmup-steps W  one JSON line from xrank's own log
  peer_train_cpu.py gemm --threads T                                    PyTorch's own fp32 GEMM GFLOP/s (context)
  peer_train_cpu.py summary FILE.jsonl [--peak-gflops X]                the table of bench_train_cpu.sh

The peer: CrossEncoder(model dir, num_labels=1) = BertForSequenceClassification with a new 1-label head (as
xrank's new head), dropout on (train mode), BinaryCrossEntropyLoss(pos_weight) = BCEWithLogits; AdamW (torch,
fused: the Trainer's default optim adamw_torch_fused; no decay on biases and LayerNorm weights), linear warmup
(ceil(ratio x steps)) then linear decay, clip-norm 1.0; batches of B pairs in a seeded random order, tokenized per
batch (dynamic padding to the batch's longest, truncation longest_first to max_length). Two loops:
  plain:   the loss object called by hand: loss([queries, passages], labels) (it tokenizes through
           CrossEncoder.preprocess, runs the model, BCE), backward, clip, step, schedule, zero_grad;
  trainer: CrossEncoderTrainer (transformers Trainer underneath), what the sentence-transformers docs tell
           users to run; it needs accelerate (bench_train_cpu.sh installs it in a private dir when missing).
Time: the wall clock from the end of step W (warm-up: allocator, oneDNN primitive caches, first-touch) to the
end of step W+N, so model loading, dataset building and the first steps are excluded. Tokens are counted by a
hook on the encoder (attention mask): real = non-pad tokens, padded = B x T that PyTorch computed.
"""
import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time


def load_pairs(path):
    """Labeled pairs jsonl (xrank mine --jsonl-format labeled-pair: anchor, positive, label; or query, passage,
    label)."""
    q, p, y = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            q.append(r.get("anchor", r.get("query")))
            p.append(r.get("positive", r.get("passage")))
            y.append(float(r["label"]))
    if not q or any(v is None for v in q + p):
        raise SystemExit(f"{path}: expected labeled pairs (anchor, positive, label)")
    return q, p, y


def machine_info():
    info = dict(date=time.strftime("%Y-%m-%d"), cpus=os.cpu_count(), machine=platform.machine(),
                openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"))
    try:
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
        info["commit"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return info


def model_dims(model_dir):
    c = json.load(open(os.path.join(model_dir, "config.json")))
    return dict(H=c["hidden_size"], L=c["num_hidden_layers"], I=c["intermediate_size"])


def flops_per_pair_fn(d):
    """Model FLOPs of one training pair of n real tokens (forward + backward = 3 x forward):
    forward = 2 x P_tok x n  (the per-token linears: L x (4 H^2 + 2 H I) weights)
            + 4 x L x H x n^2 (attention: q.k^T and p.v, 2 n H each per token per layer)
            + 2 x P_seq       (pooler H^2 + 1-label classifier H, first token only).
    Embedding lookups, LayerNorm, GELU, softmax and the optimizer are not counted (as usual for MFU)."""
    H, L, I = d["H"], d["L"], d["I"]
    p_tok = L * (4 * H * H + 2 * H * I)
    p_seq = H * H + H
    return lambda n, n2: 3.0 * (2.0 * p_tok * n + 4.0 * L * H * n2 + 2.0 * p_seq), p_tok, p_seq


# ------------------------------------------------------------------------------------------------ the peer


def cmd_run(a):
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import numpy as np
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    torch.set_num_threads(a.threads)
    q, p, y = load_pairs(a.pairs)
    total = a.warmup_steps + a.steps
    need = total * a.batch_size
    if need > len(q):
        raise SystemExit(f"{a.pairs}: {len(q)} pairs, {need} needed for {total} steps of {a.batch_size}")

    t_load = time.perf_counter()
    torch.manual_seed(a.seed)  # the new head's initialisation
    model = CrossEncoder(a.model, num_labels=1, max_length=a.max_length, device="cpu")
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(a.pos_weight))
    t_load = time.perf_counter() - t_load

    # token counts of every forward, from the encoder's attention mask (the seq-cls wrapper's forward is
    # called as a method by sentence-transformers, so the hook sits on its base model)
    hf = next(m for m in model.modules() if hasattr(m, "base_model") and hasattr(m, "config")
              and getattr(m.config, "num_labels", None) == 1)
    counts = []

    def hook(mod, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None:
            raise SystemExit("peer: the encoder was called without an attention mask")
        n = mask.sum(dim=1).to(torch.int64)
        counts.append((int(mask.shape[0]), int(mask.shape[1]), int(n.sum()), int((n * n).sum()),
                       bool(mod.training)))

    hf.base_model.register_forward_pre_hook(hook, with_kwargs=True)

    # dataset-wide token lengths (the same template and truncation), for the FLOP model of both sides
    tk = model.tokenizer
    lens = np.array([len(ids) for ids in tk(q, p, truncation="longest_first", max_length=a.max_length)["input_ids"]],
                    dtype=np.int64)

    stamps = []
    if a.loop == "plain":
        from transformers import get_linear_schedule_with_warmup

        model.train()
        decay = [prm for nm, prm in model.named_parameters() if not ("bias" in nm or "LayerNorm" in nm)]
        no_decay = [prm for nm, prm in model.named_parameters() if "bias" in nm or "LayerNorm" in nm]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
                                fused=True)
        sched = get_linear_schedule_with_warmup(opt, math.ceil(a.warmup_ratio * total), total)
        order = np.random.default_rng(a.seed).permutation(len(q))
        for s in range(total):
            idx = order[s * a.batch_size:(s + 1) * a.batch_size]
            labels = torch.tensor([y[i] for i in idx], dtype=torch.float32)
            lv = loss([[q[i] for i in idx], [p[i] for i in idx]], labels)
            lv.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            stamps.append(time.perf_counter())
        last_loss = lv.item()
    else:
        from datasets import Dataset
        from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
        from transformers import TrainerCallback

        class Stamp(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                stamps.append(time.perf_counter())

        out = tempfile.mkdtemp(prefix="xrank_peer_train_")
        ds = Dataset.from_dict({"query": q, "passage": p, "label": y})
        targs = CrossEncoderTrainingArguments(
            output_dir=out, per_device_train_batch_size=a.batch_size, learning_rate=a.lr,
            weight_decay=a.weight_decay, warmup_steps=a.warmup_ratio, lr_scheduler_type="linear",
            max_grad_norm=a.max_grad_norm, max_steps=total, seed=a.seed, use_cpu=True, save_strategy="no",
            logging_steps=total, report_to="none", disable_tqdm=True, dataloader_drop_last=True)
        trainer = CrossEncoderTrainer(model=model, args=targs, train_dataset=ds, loss=loss,
                                      callbacks=[Stamp()])
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log dicts; stdout is the result
            res = trainer.train()
        last_loss = float(res.training_loss)
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        info_optim = type(trainer.optimizer).__name__

    if len(stamps) != total or len(counts) != total:
        raise SystemExit(f"peer: {len(stamps)} step stamps and {len(counts)} forwards for {total} steps")
    timed = counts[a.warmup_steps:]
    if not all(c[4] for c in timed):
        raise SystemExit("peer: the model was in eval mode during training (dropout off)")
    step_s = [stamps[i] - stamps[i - 1] for i in range(max(1, a.warmup_steps), total)]
    sec = stamps[-1] - stamps[a.warmup_steps - 1] if a.warmup_steps > 0 else stamps[-1] - stamps[0]
    pairs = sum(c[0] for c in timed)
    real = sum(c[2] for c in timed)
    padded = sum(c[0] * c[1] for c in timed)
    r = dict(side="peer", loop=a.loop, run=a.run, threads=a.threads, batch=a.batch_size, max_length=a.max_length,
             steps=a.steps, warmup_steps=a.warmup_steps, seconds=round(sec, 3), pairs=pairs, real_tokens=real,
             padded_tokens=padded, attn_sq_tokens=sum(c[3] for c in timed),
             pairs_per_s=round(pairs / sec, 3), tokens_per_s=round(real / sec, 1),
             padded_tokens_per_s=round(padded / sec, 1), padding_efficiency=round(real / padded, 4),
             step_ms_median=round(1e3 * statistics.median(step_s), 1), step_ms_max=round(1e3 * max(step_s), 1),
             load_s=round(t_load, 2), last_loss=round(last_loss, 4), dataset_pairs=len(q),
             dataset_mean_len=round(float(lens.mean()), 3),
             dataset_attn_len=round(float((lens * lens).sum() / lens.sum()), 3),
             torch=torch.__version__, torch_threads=torch.get_num_threads(),
             load_average=round(os.getloadavg()[0], 2))
    import sentence_transformers
    import transformers

    r["sentence_transformers"] = sentence_transformers.__version__
    r["transformers"] = transformers.__version__
    if a.loop == "trainer":
        r["optimizer"] = info_optim
    r.update(machine_info())
    print(json.dumps(r), flush=True)


# ------------------------------------------------------------------------------------- xrank's metrics


def cmd_xrank(a):
    """Steady state of an `xrank train` run from its metrics.jsonl: the logging windows after the first
    (--logging-steps = W, so the first window is the warm-up; elapsed_s counts from before step 1, after the
    model and the data are loaded)."""
    rows = [json.loads(l) for l in open(a.metrics) if l.strip()]
    rows = [r for r in rows if r.get("type") == "train"]
    if len(rows) < 2 or rows[0]["step"] != a.warmup_steps:
        raise SystemExit(f"{a.metrics}: need a first logging window of {a.warmup_steps} steps and more after it")
    first, rest = rows[0], rows[1:]
    sec = rest[-1]["elapsed_s"] - first["elapsed_s"]
    prev, pairs, real, padded = first["elapsed_s"], 0.0, 0.0, 0.0
    for r in rest:
        dt = r["elapsed_s"] - prev
        prev = r["elapsed_s"]
        pairs += r["pairs_per_s"] * dt
        real += r["tokens_per_s"] * dt
        padded += r["tokens_per_s"] * dt / r["padding_efficiency"]
    out = dict(side="xrank", loop=a.label, run=a.run, ranks=a.ranks, threads=a.threads,
               steps=rest[-1]["step"] - first["step"], warmup_steps=a.warmup_steps, seconds=round(sec, 3),
               pairs=round(pairs), real_tokens=round(real), padded_tokens=round(padded),
               pairs_per_s=round(pairs / sec, 3), tokens_per_s=round(real / sec, 1),
               padded_tokens_per_s=round(padded / sec, 1), padding_efficiency=round(real / padded, 4),
               wall_s=a.wall, last_loss=rest[-1]["loss"], load_average=round(os.getloadavg()[0], 2))
    out.update(machine_info())
    print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------ the peer's GEMM


def cmd_gemm(a):
    """PyTorch's own fp32 GEMM on this CPU (context for the peer's MFU, not the denominator): torch.matmul at
    2048^3 and at the peer's FFN shape (a batch of 16 x ~110 tokens times the 384 x 1536 weight), best of 5."""
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    for name, (m, n, k) in (("square", (2048, 2048, 2048)), ("ffn-up", (1760, 1536, 384)),
                            ("ffn-down", (1760, 384, 1536))):
        x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
        torch.matmul(x, w.t())
        reps = max(3, int(2e10 / (2 * m * n * k)))
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(reps):
                torch.matmul(x, w.t())
            best = min(best, (time.perf_counter() - t) / reps)
        print(json.dumps(dict(side="torch_gemm", shape=name, M=m, N=n, K=k, threads=a.threads,
                              gflops=round(2 * m * n * k / best / 1e9, 2), torch=torch.__version__,
                              mkl=torch.backends.mkl.is_available(), mkldnn=torch.backends.mkldnn.is_available(),
                              load_average=round(os.getloadavg()[0], 2))), flush=True)


# ------------------------------------------------------------------------------------------------ summary


def read_rows(path):
    """The jsonl lines; a gemm_peak line that is not valid JSON still gives its first (top-level) gflops."""
    rows = []
    for line in open(path):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            m = re.search(r'"gflops":\s*([0-9.]+)', line)
            if '"gemm_peak"' in line and m:
                rows.append({"bench": "gemm_peak", "gflops": float(m.group(1)), "raw": line.strip()})
            else:
                print(f"{path}: skipped a line that is not JSON: {line[:80]}", file=sys.stderr)
    return rows


def cmd_summary(a):
    rows = read_rows(a.file)
    peers = [r for r in rows if r.get("side") == "peer"]
    peak = a.peak_gflops
    if peak is None:
        pk = [r for r in rows if r.get("bench") == "gemm_peak"]
        if pk:
            peak = max(r["gflops"] for r in pk)
    ref = next((r for r in peers if "dataset_attn_len" in r), None)
    flop = None
    if ref:
        d = model_dims(a.model)
        a_L, a_H = d["L"], d["H"]
        fn, p_tok, p_seq = flops_per_pair_fn(d)
        mean_len, attn_len = ref["dataset_mean_len"], ref["dataset_attn_len"]
        # per real token and per pair (the attention term uses the dataset's sum n^2 / sum n: for xrank the
        # per-pair lengths of the timed steps are not logged; attention is ~4% of the FLOPs at these lengths)
        flop = lambda r: 3.0 * ((2.0 * p_tok + 4.0 * a_L * a_H * attn_len) * r["real_tokens"]
                               + 2.0 * p_seq * r["pairs"])
        print(f"model FLOPs per training pair = 3 x (2 x {p_tok:,} x n + 4 x {a_L} x {a_H} x n^2 + 2 x {p_seq:,}); "
              f"dataset: {ref['dataset_pairs']} pairs, mean n {mean_len}, sum n^2 / sum n {attn_len} "
              f"-> {fn(mean_len, mean_len * attn_len) / 1e9:.3f} GFLOP per mean pair")
    configs = []
    for r in rows:
        if r.get("side") in ("peer", "xrank") and (r["side"], r["loop"]) not in configs:
            configs.append((r["side"], r["loop"]))
    peer_loops = [l for sd, l in configs if sd == "peer"]
    runs = sorted({r["run"] for r in rows if "run" in r})
    hdr = "".join(f" {'vs ' + l + ' (pairs, tok)':>24}" for l in peer_loops)
    print(f"{'side':<8} {'loop':<28} {'runs':>4} {'pairs/s best':>12} {'tokens/s best':>13} {'pad eff':>7}{hdr} "
          f"{'GFLOP/s':>8} {'MFU':>6}")
    summary = {}
    for side, loop in configs:
        rs = [r for r in rows if r.get("side") == side and r["loop"] == loop]
        best = max(rs, key=lambda r: r["tokens_per_s"])
        gf = flop(best) / best["seconds"] / 1e9 if flop else None
        mfu = gf / peak if gf and peak else None
        entry = dict(runs=len(rs), pairs_per_s_best=best["pairs_per_s"], tokens_per_s_best=best["tokens_per_s"],
                     pairs_per_s_median=statistics.median(r["pairs_per_s"] for r in rs),
                     tokens_per_s_median=statistics.median(r["tokens_per_s"] for r in rs),
                     padding_efficiency=best["padding_efficiency"], gflops_best=gf, mfu_best=mfu)
        cells = ""
        for pl in peer_loops:
            rp, rt = [], []
            for r in rs:  # paired: the peer run of the same round
                b = next((b for b in peers if b["loop"] == pl and b["run"] == r["run"]), None)
                if b:
                    rp.append(r["pairs_per_s"] / b["pairs_per_s"])
                    rt.append(r["tokens_per_s"] / b["tokens_per_s"])
            if rp:
                entry[f"ratio_vs_{pl}"] = dict(pairs=statistics.median(rp), tokens=statistics.median(rt),
                                               pairs_runs=[round(v, 3) for v in rp])
                cells += f" {f'{statistics.median(rp):.2f}x, {statistics.median(rt):.2f}x':>24}"
            else:
                cells += f" {'-':>24}"
        summary[f"{side}:{loop}"] = entry
        print(f"{side:<8} {loop:<28} {len(rs):>4} {best['pairs_per_s']:>12.2f} {best['tokens_per_s']:>13.1f} "
              f"{best['padding_efficiency']:>7.3f}{cells} {gf or 0:>8.2f} {(f'{100 * mfu:.1f}%' if mfu else '-'):>6}")
    print("ratios: medians of per-round ratios (each xrank run against the peer run of the same round); "
          "GFLOP/s and MFU of the best run (model FLOPs on real tokens)")
    print("per run (pairs/s, tokens/s):")
    for run in runs:
        cells = []
        for side, loop in configs:
            r = next((r for r in rows if r.get("side") == side and r["loop"] == loop and r.get("run") == run), None)
            if r:
                cells.append(f"{side}:{loop} {r['pairs_per_s']:.2f} {r['tokens_per_s']:.0f} (load {r['load_average']})")
        print(f"  run {run}: " + "; ".join(cells))
    if peak:
        print(f"MFU denominator: measured fp32 GEMM peak {peak:.1f} GFLOP/s")
    for r in rows:
        if r.get("side") == "torch_gemm":
            print(f"PyTorch's own GEMM (context): {r['shape']} {r['M']}x{r['N']}x{r['K']} {r['gflops']:.1f} GFLOP/s")
    print(json.dumps(dict(side="summary", peak_gflops=peak, configs=summary)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the sentence-transformers peer")
    r.add_argument("--pairs", required=True, help="labeled pairs jsonl (xrank mine --jsonl-format labeled-pair)")
    r.add_argument("--model", default=os.environ.get("XR_MINILM_DIR", "/work/models/all-MiniLM-L6-v2"))
    r.add_argument("--loop", choices=["plain", "trainer"], default="plain")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--max-length", type=int, default=128)
    r.add_argument("--pos-weight", type=float, default=3.0)
    r.add_argument("--lr", type=float, default=5e-5)
    r.add_argument("--weight-decay", type=float, default=0.01)
    r.add_argument("--warmup-ratio", type=float, default=0.1)
    r.add_argument("--max-grad-norm", type=float, default=1.0)
    r.add_argument("--steps", type=int, default=60, help="timed optimizer steps")
    r.add_argument("--warmup-steps", type=int, default=10, help="untimed steps before them")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--run", type=int, default=1)
    x = sub.add_parser("xrank", help="one JSON line from an xrank train metrics.jsonl")
    x.add_argument("--metrics", required=True)
    x.add_argument("--warmup-steps", type=int, required=True)
    x.add_argument("--label", required=True)
    x.add_argument("--ranks", type=int, default=1)
    x.add_argument("--threads", type=int, default=2)
    x.add_argument("--wall", type=float, default=None, help="the whole process, seconds")
    x.add_argument("--run", type=int, default=1)
    g = sub.add_parser("gemm", help="PyTorch's fp32 GEMM GFLOP/s on this CPU (context)")
    g.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("summary", help="table of a bench_train_cpu jsonl")
    s.add_argument("file")
    s.add_argument("--model", default=os.environ.get("XR_MINILM_DIR", "/work/models/all-MiniLM-L6-v2"))
    s.add_argument("--peak-gflops", type=float, default=None)
    a = ap.parse_args()
    {"run": cmd_run, "xrank": cmd_xrank, "gemm": cmd_gemm, "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    main()
