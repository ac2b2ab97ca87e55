#!/usr/bin/env python3
"""train_bench_summary.py: the table lines of benchmarks/gpu/train_device_check.sh parts large and bench, from their
JSON lines (no torch needed: runs wherever the logs are).
  large FILE           xrank's training step (bench_train_step) against PyTorch's (peer_gpu.py train-list) for the
                       bge-reranker-v2-m3 shape per (T, B, precision): pairs/s, tokens/s, MFU, peak memory, ratio
  ops FILE LABEL [N [ATT]]  the N slowest (phase, op) rows of a bench_train_step run under XR_CUDA_OP_TIMES=1
                       whose training attention is ATT (exact, the default, or gemm)
MFU = model FLOPs / s over the GEMM peak measured in the same call: 3 x forward FLOPs, forward = 2 x non-embedding
parameters + 4 L T H per token (peer_gpu.flops_per_token_fwd: the same count for both sides).
"""
import json
import sys

L, H = 24, 1024  # XLM-R large
NONEMB = L * (12 * H * H + 13 * H) + H * H + H + H + 1  # layers + the classification head (dense, out_proj)


def rows(path):
    out = []
    for line in open(path, errors="replace"):
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def tflops(pairs_per_s, T):
    return 3 * (2 * NONEMB + 4 * L * T * H) * T * pairs_per_s / 1e12


def large(path):
    rs = rows(path)
    bf16 = [r["tflops"] for r in rs if r.get("kind") == "gemm" and r.get("dtype") == "bf16"]
    tp = [r for r in rs if r.get("kind") == "gemm_peak_torch"]
    peak16 = max(bf16) if bf16 else (tp[0]["bf16_tflops"] if tp else 0)
    peak32 = tp[0]["fp32_tflops"] if tp else 0
    print(f"peaks: bf16 GEMM {peak16:.1f} TFLOP/s ({'gemm_peak.cu, cuBLASLt' if bf16 else 'torch' if tp else 'none'}), "
          f"fp32 GEMM {peak32:.1f} TFLOP/s (torch, TF32 off)")
    for r in rs:
        if r.get("kind") == "xrank_train_plan":
            print(f"plan  T {r['max_len']:3d} B {r['batch']:2d} {r['precision']}: {r['total_mib'] / 1024:.1f} GiB "
                  f"(weights {r['weights_mib'] / 1024:.1f}, moments {r['moments_mib'] / 1024:.1f}, grads "
                  f"{r['grads_mib'] / 1024:.1f}, activations {r['activations_mib'] / 1024:.1f}, workspace "
                  f"{r['workspace_mib'] / 1024:.1f})")
    xr = {(r["max_len"], r["batch"], r["precision"]): r for r in rs if r.get("kind") == "xrank_train_step"
          and r.get("model") == "xlmr-large" and not r.get("op_times") and not r.get("attention_lse")
          and r.get("train_attention", "exact") == "exact" and not r.get("train_pack")}
    # the saved-probability attention on batched GEMMs (XR_CUDA_TRAIN_ATTENTION=gemm), against the same torch rows
    xr.update({(r["max_len"], r["batch"], r["precision"] + " gemm"): r for r in rs
               if r.get("kind") == "xrank_train_step" and r.get("model") == "xlmr-large"
               and r.get("train_attention") == "gemm" and not r.get("op_times") and not r.get("train_pack")})
    # the saved activations packed in 2 bytes (XR_CUDA_TRAIN_PACK=1, ops_act_region) with the GEMM attention
    xr.update({(r["max_len"], r["batch"], r["precision"] + " pack"): r for r in rs
               if r.get("kind") == "xrank_train_step" and r.get("model") == "xlmr-large"
               and r.get("train_pack") and not r.get("op_times")})
    # the same shapes with the log-sum-exp training attention (--attention-lse), against the same torch rows
    xr.update({(r["max_len"], r["batch"], r["precision"] + " lse"): r for r in rs
               if r.get("kind") == "xrank_train_step" and r.get("model") == "xlmr-large" and r.get("attention_lse")
               and not r.get("op_times")})
    pt = {(r["max_len"], r["batch"], "bf16" if r["mode"] == "amp-bf16" else r["mode"]): r for r in rs
          if r.get("kind") == "train" and "max_len" in r}
    def mfu(tf, prec):
        s = f"MFU {100 * tf / peak16:4.1f}%" if peak16 else "MFU ?"
        if prec.startswith("fp32") and peak32:
            s += f" ({100 * tf / peak32:.0f}% of fp32)"
        return s
    for key in sorted(set(xr) | set(pt), key=lambda k: (-k[0], not k[2].startswith("bf16"), k[1], k[2])):
        T, B, prec = key
        x, p = xr.get(key), pt.get((T, B, prec.split()[0]))
        line = f"T {T:3d} B {B:2d} {prec:9s}"
        if x:
            tf = tflops(x["pairs_per_s"], T)
            line += (f" | xrank {x['pairs_per_s']:7.1f} pairs/s {x['tokens_per_s']:8.0f} tok/s {mfu(tf, prec)} "
                     f"peak {x['peak_mib'] / 1024:5.1f} GiB")
            if prec.startswith("bf16") and "act_casts_per_step" in x:
                line += f" casts {x['act_casts_per_step']:.0f}/step"
        else:
            line += " | xrank -"
        if p and "pairs_per_s" in p:
            tf = tflops(p["pairs_per_s"], T)
            line += (f" | torch {p['mode']} {p['pairs_per_s']:7.1f} pairs/s {p['tokens_per_s']:8.0f} tok/s "
                     f"{mfu(tf, prec)} peak {p['peak_mem_gib']:5.1f} GiB")
        else:
            line += f" | torch {p['error'] if p else '-'}"
        if x and p and p.get("pairs_per_s"):
            line += f" | xrank/torch {x['pairs_per_s'] / p['pairs_per_s']:.2f}x"
        print(line)


def ops(path, label, n, att="exact"):
    # att: the runs' training attention ("train_attention": exact, gemm; lines from before it was printed: exact)
    rs = [r for r in rows(path) if r.get("train_attention", "exact") == att]
    tot = [r for r in rs if r.get("kind") == "xrank_op_total"]
    ts = [r for r in rs if r.get("kind") == "xrank_op_time"]
    if not tot:
        print(f"ops {label}: no op times (the run failed or was cut: see its log)")
        return
    t = tot[0]
    print(f"ops {label} {t['precision']} T {t['max_len']} B {t['batch']}: timed step {t['timed_step_ms']:.1f} ms, "
          f"ops {t['ops_ms']:.1f} ms ({100 * t['ops_share']:.1f}%), {t['rows']} rows; slowest first:")
    by_phase = {}
    for r in ts:
        by_phase[r["phase"]] = by_phase.get(r["phase"], 0) + r["ms_per_step"]
    print("    by phase: " + ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(by_phase.items(), key=lambda kv: -kv[1])))
    for r in ts[:n]:
        print(f"    {r['phase']:9s} {r['op']:32s} {r['calls_per_step']:6.1f} calls {r['ms_per_step']:8.2f} ms "
              f"{100 * r['share']:5.1f}%")


if __name__ == "__main__":
    if sys.argv[1] == "large":
        large(sys.argv[2])
    else:
        ops(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 12,
            sys.argv[5] if len(sys.argv) > 5 else "exact")
