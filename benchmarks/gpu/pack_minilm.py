#!/usr/bin/env python3
"""pack_minilm.py: run HERE (with /work/venv's python: tokenizers, safetensors, numpy). Packs all-MiniLM-L6-v2 for
the GPU machine's learning check (benchmarks/gpu/train_device_check.sh) within the `run` tool's carry limit (64 MiB
with .deps at ~24 MiB): weights in fp16 (xrank reads F16 safetensors), and the word-embedding rows of tokens that
never occur in the 40-page man-page fixture (tests/fixtures/train/learn_beir) set to 0, so xz shrinks them to
nothing. On that corpus the packed model computes exactly what the fp16 model computes (a row never looked up
never enters a forward or a gradient); the CPU and GPU runs of the check both start from it.
Usage: pack_minilm.py MODEL_DIR CORPUS_DIR OUT.tar.xz
"""
import io, json, os, sys, tarfile

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

model_dir, corpus_dir, out = sys.argv[1:4]
tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
tok.no_truncation()  # tokenizer.json truncates at 128: every token of a text counts
used = set()
for name in ("corpus.jsonl", "queries.jsonl"):
    for line in open(os.path.join(corpus_dir, name)):
        r = json.loads(line)
        for text in (r.get("title", ""), r.get("text", "")):
            if text:
                used.update(tok.encode(text, add_special_tokens=True).ids)
for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"):
    i = tok.token_to_id(t)
    if i is not None:
        used.add(i)
w = load_file(os.path.join(model_dir, "model.safetensors"))
key = next(k for k in w if k.endswith("embeddings.word_embeddings.weight"))
emb = w[key]
keep = np.zeros(emb.shape[0], dtype=bool)
keep[sorted(used)] = True
emb = emb.copy()
emb[~keep] = 0
w[key] = emb
w16 = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in w.items()}
buf = save_file(w16, os.path.join(os.path.dirname(os.path.abspath(out)) or ".", ".model_fp16.safetensors"))
with tarfile.open(out, "w:xz", preset=6) as tf:
    tf.add(os.path.join(os.path.dirname(os.path.abspath(out)), ".model_fp16.safetensors"),
           arcname="minilm/model.safetensors")
    for f in sorted(os.listdir(model_dir)):
        p = os.path.join(model_dir, f)
        if f != "model.safetensors" and not f.endswith(".md"):
            tf.add(p, arcname="minilm/" + f)  # directories (1_Pooling) with their files
os.remove(os.path.join(os.path.dirname(os.path.abspath(out)), ".model_fp16.safetensors"))
print(f"{out}: {os.path.getsize(out) / 2**20:.1f} MiB; {int(keep.sum())} of {keep.size} word-embedding rows kept")
