#!/usr/bin/env python3
"""bench_embed_torch.py: the PyTorch peer of `bench_encoder MODEL embed T B REPS bf16` (passages/s of a
bi-encoder on the GPU): the model directory loaded with transformers' AutoModel in bf16, B random full-length
sequences of T tokens (ids in [5, 1000), [CLS] first and [SEP] last, no padding, as bench_encoder), the forward +
mean pooling + L2 normalisation that sentence-transformers' encode runs per batch (its tokenisation and length
sorting are left out, as bench_encoder leaves out xrank's). One JSON line; exits 77 without torch or a GPU.

    python3 bench_embed_torch.py MODEL_DIR T B REPS
"""
import json
import sys
import time


def main():
    d, T, B, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    try:
        import torch
        from transformers import AutoModel
    except ImportError as ex:
        print(json.dumps({"kind": "torch_embed", "skipped": f"no torch / transformers: {ex}"}))
        sys.exit(77)
    import os
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
            e = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            return torch.nn.functional.normalize(e.float(), dim=1).cpu()

    run(), run()  # warm-up (each run ends on the host: synchronised)
    t0 = time.perf_counter()
    for _ in range(reps):
        run()  # the embeddings come back to the host, as bench_encoder's
    sec = time.perf_counter() - t0
    print(json.dumps({"kind": "torch_embed", "precision": "bf16", "max_len": T, "batch": B, "reps": reps,
                      "ms_per_batch": round(1e3 * sec / reps, 2), "seqs_per_s": round(B * reps / sec, 1),
                      "device": dev, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
