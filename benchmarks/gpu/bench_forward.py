#!/usr/bin/env python3
"""bench_forward.py: xrank's GPU forward vs PyTorch on one GPU, bge-reranker-v2-m3-sized model (XLM-R large,
random weights), run ON the GPU machine by bench_forward.sh.
  write DIR               save a random XLMRobertaForSequenceClassification (num_labels 1) to DIR
  check DIR PREFIX T B    compare xrank's dumped logits (PREFIX.out.f32 for PREFIX.ids.i32) with torch fp32 / bf16
                          (PREFIX may be a comma-separated list: the packed storage's dump beside the default's)
  fast DIR PREFIX T B XRANK_JSONL PEAK   check, then peer, in one process (bench_forward.sh XR_FAST=1)
  peer XRANK_JSONL PEAK   run the PyTorch peer (benchmarks/peer_gpu.py bench_infer) at the same shapes and print
                          the comparison table (ratio, MFU against PEAK bf16 TFLOP/s)
"""
import json, os, sys
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import peer_gpu  # noqa: E402
from transformers import XLMRobertaForSequenceClassification, XLMRobertaModel  # noqa: E402

SHAPES = [(512, 64), (256, 128)]


def write(d):
    print(json.dumps(dict(kind="model_written", dir=d, params=peer_gpu.write_random_xlmr(d))), flush=True)


def check(d, prefixes, T, B):
    """prefixes: comma-separated dump prefixes of runs on the same ids (the first: xrank bf16; more, e.g. the packed
    storage's, get a key named after their file: xrank_<name>_vs_torch_fp32_max_abs); a missing one is reported."""
    prefixes = prefixes.split(",")
    prefix = prefixes[0]
    ids_np = np.fromfile(prefix + ".ids.i32", dtype=np.int32)
    ids = torch.from_numpy(ids_np.astype(np.int64)).view(B, T).cuda()
    got = torch.from_numpy(np.fromfile(prefix + ".out.f32", dtype=np.float32)).view(B, -1).cuda()
    m = XLMRobertaForSequenceClassification.from_pretrained(d).cuda().eval()
    res = dict(kind="check", max_len=T, batch=B)
    with torch.inference_mode():
        ref = torch.cat([m(input_ids=ids[i:i + 8]).logits.float() for i in range(0, B, 8)])
        res["logit_spread_fp32"] = float(ref.max() - ref.min())
        res["xrank_bf16_vs_torch_fp32_max_abs"] = float((got - ref).abs().max())
        for p in prefixes[1:]:
            key = "xrank_%s_vs_torch_fp32_max_abs" % os.path.basename(p)
            if not os.path.exists(p + ".out.f32"):
                res[key] = "missing"
            elif not np.array_equal(np.fromfile(p + ".ids.i32", dtype=np.int32), ids_np):
                res[key] = "other ids"
            else:
                o = torch.from_numpy(np.fromfile(p + ".out.f32", dtype=np.float32)).view(B, -1).cuda()
                res[key] = float((o - ref).abs().max())
        mb = m.to(torch.bfloat16)
        refb = torch.cat([mb(input_ids=ids[i:i + 8]).logits.float() for i in range(0, B, 8)])
        res["torch_bf16_vs_torch_fp32_max_abs"] = float((refb - ref).abs().max())
    print(json.dumps(res), flush=True)


def flops_per_seq(nonemb, T):
    return peer_gpu.flops_per_token_fwd(nonemb, 24, 1024, T) * T


def peer(xrank_jsonl, peak):
    xr = [json.loads(l) for l in open(xrank_jsonl) if l.startswith("{") and '"xrank_infer"' in l]
    with torch.device("cuda"):
        nonemb = peer_gpu.count_nonemb(XLMRobertaForSequenceClassification(peer_gpu.xlmr_large(1)))
    rows = []
    for T, B in SHAPES:
        for task, name, ctor in [("score", "CrossEncoder.predict (XLMRobertaForSequenceClassification)",
                                  lambda: XLMRobertaForSequenceClassification(peer_gpu.xlmr_large(1))),
                                 ("embed", "bge-m3 encode (XLMRobertaModel)", lambda: XLMRobertaModel(peer_gpu.xlmr_large()))]:
            with torch.device("cuda"):
                model = ctor()
            p = peer_gpu.bench_infer(name, model, T, B)
            print(json.dumps(p), flush=True)
            for x in xr:
                if x["task"] == task and x["max_len"] == T and x["batch"] == B:
                    tf = flops_per_seq(nonemb, T) * x["seqs_per_s"] / 1e12
                    ptf = flops_per_seq(nonemb, T) * p["seqs_per_s"] / 1e12
                    rows.append(dict(kind="compare", task=task, variant=x.get("variant", x["precision"]), max_len=T,
                                     batch=B, xrank_seqs_per_s=x["seqs_per_s"], torch_seqs_per_s=p["seqs_per_s"],
                                     ratio=round(x["seqs_per_s"] / p["seqs_per_s"], 3), xrank_tflops=round(tf, 1),
                                     torch_tflops=round(ptf, 1), xrank_mfu=round(tf / peak, 3),
                                     torch_mfu=round(ptf / peak, 3)))
                    # what the xrank row ran on (bench_encoder): 2 = packed bf16 storage (4: the backend declined),
                    # and its packed linears that fell back from cuBLASLt's bf16 epilogue (0 expected)
                    for k in ("act_bytes", "packed_fallbacks"):
                        if k in x:
                            rows[-1][k] = x[k]
    for r in rows:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "write":
        write(sys.argv[2])
    elif cmd == "fast":
        check(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        peer(sys.argv[6], float(sys.argv[7]))
    elif cmd == "check":
        check(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        peer(sys.argv[2], float(sys.argv[3]))
