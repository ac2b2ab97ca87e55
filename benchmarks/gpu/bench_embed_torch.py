#!/usr/bin/env python3
"""bench_embed_torch.py: the PyTorch peer of `bench_encoder MODEL embed T B REPS bf16` (passages/s of a
bi-encoder on the GPU): the model directory loaded with transformers' AutoModel in bf16, B random full-length
sequences of T tokens (ids in [5, 1000), [CLS] first and [SEP] last, no padding, as bench_encoder), the forward +
pooling + L2 normalisation that sentence-transformers' encode runs per batch (its tokenisation and length sorting
are left out, as bench_encoder leaves out xrank's). The pooling is the directory's sentence-transformers config
(modules.json: the Pooling module's mode, CLS or mean, and whether a Normalize module follows; all-MiniLM-L6-v2:
mean, normalised), else CLS, normalised (bge-m3's): bench_encoder's rule (xrank reads the same files), and both
print what they ran ("pooling", "normalize"). One JSON line; exits 77 without torch or a GPU.

    python3 bench_embed_torch.py MODEL_DIR T B REPS
"""
import json
import os
import sys
import time


def pooling_of(d):
    """(mode, normalize) from d's modules.json and its Pooling module's config.json, as xrank's hf_load_config
    reads them; ("cls", True) without a Pooling module. Modes other than CLS or mean are refused, as by xrank."""
    path = os.path.join(d, "modules.json")
    if not os.path.exists(path):
        return "cls", True
    mods = json.load(open(path))
    pool = [m for m in mods if m.get("type", "").endswith(".Pooling")]
    if not pool:
        return "cls", True
    cfg_path = os.path.join(d, pool[0]["path"], "config.json")
    cfg = json.load(open(cfg_path))
    modes = [k for k in cfg if k.startswith("pooling_mode_") and cfg[k] is True]
    if modes not in (["pooling_mode_cls_token"], ["pooling_mode_mean_tokens"]):
        sys.exit(f"{cfg_path}: pooling modes {modes}: only CLS or mean pooling (one of them) is compared")
    return ("cls" if modes == ["pooling_mode_cls_token"] else "mean",
            any(m.get("type", "").endswith(".Normalize") for m in mods))


def main():
    d, T, B, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    try:
        import torch
        from transformers import AutoModel
    except ImportError as ex:
        print(json.dumps({"kind": "torch_embed", "skipped": f"no torch / transformers: {ex}"}))
        sys.exit(77)
    mode, norm = pooling_of(d)
    dev = "cpu" if os.environ.get("XR_FAKE_GPU") == "1" else "cuda"  # the device check's CPU rehearsal
    if dev == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"kind": "torch_embed", "skipped": "no GPU"}))
        sys.exit(77)
    torch.backends.cuda.matmul.allow_tf32 = False
    m = AutoModel.from_pretrained(d, torch_dtype=torch.bfloat16).to(dev).eval()
    g = torch.Generator(device=dev).manual_seed(0)
    ids = torch.randint(5, 1000, (B, T), device=dev, generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)

    def run():
        with torch.inference_mode():
            h = m(input_ids=ids, attention_mask=mask).last_hidden_state
            if mode == "mean":
                e = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            else:
                e = h[:, 0]
            e = e.float()
            return (torch.nn.functional.normalize(e, dim=1) if norm else e).cpu()

    run(), run()  # warm-up (each run ends on the host: synchronised)
    t0 = time.perf_counter()
    for _ in range(reps):
        run()  # the embeddings come back to the host, as bench_encoder's
    sec = time.perf_counter() - t0
    print(json.dumps({"kind": "torch_embed", "precision": "bf16", "max_len": T, "batch": B, "reps": reps,
                      "ms_per_batch": round(1e3 * sec / reps, 2), "seqs_per_s": round(B * reps / sec, 1),
                      "pooling": mode, "normalize": int(norm), "device": dev, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
