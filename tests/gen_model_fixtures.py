#!/usr/bin/env python3
"""gen_model_fixtures.py: writes tests/fixtures/model/: tiny random BERT / XLM-R models (odd sizes, seeded)
saved as Hugging Face directories, padded batches of random token ids, and what transformers computes on them
(logits, last hidden states, CLS and masked-mean embeddings); plus the real all-MiniLM-L6-v2 run through
sentence-transformers on real sentences. test_encoder.c checks the C encoder against these files without Python.

Run with the reference venv:  /work/venv/bin/python tests/gen_model_fixtures.py [--minilm DIR]
Outputs are raw little-endian f32 / i32 files; shape.i32 = [B, T, H, num_labels (0 for bare models),
number of parameters as transformers counts them].
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "model")

TINY = dict(vocab_size=1124, hidden_size=32, num_hidden_layers=5, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


def write(path, arr, dtype):
    np.ascontiguousarray(arr, dtype=dtype).astype(np.dtype(dtype).newbyteorder("<")).tofile(path)


def randomize(model, gen):
    """Replace the default init (std 0.02 weights, LayerNorm 1/0) by unit-scale values, so that a transposed
    weight, a LayerNorm gamma/beta mix-up or a masking error changes the outputs by far more than 1e-4."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embeddings" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:  # nn.Linear [out, in]: unit-variance outputs
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[1]))


def bert_batch(rng, vocab, T):
    """Pairs [CLS] a [SEP] b [SEP] (types 0 then 1), one single sentence, one row with random types up to 15;
    the longest row fills all T = max_position_embeddings positions."""
    CLS, SEP, PAD = 101, 102, 0
    shapes = [(30, 31), (1, 1), (20, None), (5, 12), (9, 3), (7, 7)]
    rows = []
    for a, b in shapes:
        ids = [CLS] + list(rng.integers(103, vocab, a)) + [SEP]
        types = [0] * len(ids)
        if b is not None:
            ids += list(rng.integers(103, vocab, b)) + [SEP]
            types += [1] * (b + 1)
        rows.append((ids, types))
    ids, _ = rows[-1]
    rows[-1] = (ids, list(rng.integers(0, 16, len(ids))))
    assert max(len(r[0]) for r in rows) == T
    return pad_rows(rows, PAD)


def xlmr_batch(rng, vocab, T):
    """Pairs <s> a </s></s> b </s> (types all 0); the longest row has max_position_embeddings - 2 tokens, the
    most XLM-R's position ids (starting at pad_id + 1 = 2) allow."""
    BOS, PAD, EOS = 0, 1, 2
    shapes = [(28, 30), (1, 1), (15, None), (3, 20), (40, 2)]
    rows = []
    for a, b in shapes:
        ids = [BOS] + list(rng.integers(4, vocab, a)) + [EOS]
        if b is not None:
            ids += [EOS] + list(rng.integers(4, vocab, b)) + [EOS]
        rows.append((ids, [0] * len(ids)))
    assert max(len(r[0]) for r in rows) == T
    return pad_rows(rows, PAD)


def pad_rows(rows, pad):
    T = max(len(r[0]) for r in rows)
    B = len(rows)
    ids = np.full((B, T), pad, np.int32)
    types = np.zeros((B, T), np.int32)
    mask = np.zeros((B, T), np.int32)
    for i, (r, t) in enumerate(rows):
        ids[i, :len(r)] = r
        types[i, :len(t)] = t
        mask[i, :len(r)] = 1
    return ids, types, mask


def round_weights(model, dtype):
    """Round every parameter to dtype and back, so the reference runs on exactly the stored weights."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())


def reference(model, ids, types, mask, is_cls, use_types):
    with torch.no_grad():
        kw = dict(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                  output_hidden_states=True)
        if use_types:
            kw["token_type_ids"] = torch.tensor(types, dtype=torch.long)
        out = model(**kw)
        hidden = out.hidden_states[-1]
        m = torch.tensor(mask, dtype=torch.float32).unsqueeze(-1)
        mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        res = dict(hidden=hidden.numpy(),
                   emb_cls=torch.nn.functional.normalize(hidden[:, 0], p=2, dim=1).numpy(),
                   emb_mean=torch.nn.functional.normalize(mean, p=2, dim=1).numpy())
        if is_cls:
            res["logits"] = out.logits.numpy()
        return res


def save_case(d, ids, types, mask, H, num_labels, res, nparams):
    B, T = ids.shape
    write(os.path.join(d, "shape.i32"), [B, T, H, num_labels, nparams], np.int32)
    write(os.path.join(d, "ids.i32"), ids, np.int32)
    write(os.path.join(d, "types.i32"), types, np.int32)
    write(os.path.join(d, "mask.i32"), mask, np.int32)
    for k, v in res.items():
        write(os.path.join(d, k + ".f32"), v, np.float32)


def legacy_rewrite(d, dtype):
    """Rewrite model.safetensors as old checkpoints look: LayerNorm gamma/beta names, an integer
    embeddings.position_ids tensor, and weights stored in dtype (bf16 / f16)."""
    path = os.path.join(d, "model.safetensors")
    sd = load_file(path)
    out = {}
    for k, v in sd.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        out[k] = v.to(dtype).contiguous()
    maxpos = json.load(open(os.path.join(d, "config.json")))["max_position_embeddings"]
    out["embeddings.position_ids"] = torch.arange(maxpos, dtype=torch.int64).unsqueeze(0)
    save_file(out, path, metadata={"format": "pt"})


def tiny_models():
    from transformers import (BertConfig, BertForSequenceClassification, BertModel, XLMRobertaConfig,
                              XLMRobertaForSequenceClassification, XLMRobertaModel)
    cases = [
        # name, config class, model class, family kwargs, num_labels (0 = bare), storage
        ("bert_model", BertConfig, BertModel, dict(type_vocab_size=16), 0, "legacy_bf16"),
        ("bert_cls", BertConfig, BertForSequenceClassification, dict(type_vocab_size=16), 1, "f32"),
        ("xlmr_model", XLMRobertaConfig, XLMRobertaModel,
         dict(type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5), 0, "f16"),
        ("xlmr_cls", XLMRobertaConfig, XLMRobertaForSequenceClassification,
         dict(type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5), 1, "f32"),
        ("xlmr_cls3", XLMRobertaConfig, XLMRobertaForSequenceClassification,
         dict(type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5), 3, "bf16"),
    ]
    for seed, (name, cfg_cls, model_cls, fam, nl, storage) in enumerate(cases):
        torch.manual_seed(1000 + seed)
        gen = torch.Generator().manual_seed(2000 + seed)
        rng = np.random.default_rng(3000 + seed)
        kw = dict(TINY, **fam, attn_implementation="eager")
        if nl:
            kw["num_labels"] = nl
        model = model_cls(cfg_cls(**kw)).eval()
        randomize(model, gen)
        if storage in ("legacy_bf16", "bf16"):
            round_weights(model, torch.bfloat16)
        elif storage == "f16":
            round_weights(model, torch.float16)
        is_bert = cfg_cls is BertConfig
        if is_bert:
            ids, types, mask = bert_batch(rng, TINY["vocab_size"], TINY["max_position_embeddings"])
        else:
            ids, types, mask = xlmr_batch(rng, TINY["vocab_size"], TINY["max_position_embeddings"] - 2)
        res = reference(model, ids, types, mask, nl > 0, is_bert)
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        model.save_pretrained(d)
        if storage == "legacy_bf16":
            legacy_rewrite(d, torch.bfloat16)
        elif storage in ("f16", "bf16"):
            dt = torch.float16 if storage == "f16" else torch.bfloat16
            sd = load_file(os.path.join(d, "model.safetensors"))
            save_file({k: v.to(dt).contiguous() for k, v in sd.items()}, os.path.join(d, "model.safetensors"),
                      metadata={"format": "pt"})
        nparams = sum(p.numel() for p in model.parameters())
        save_case(d, ids, types, mask, TINY["hidden_size"], nl, res, nparams)
        print(f"{name}: B={ids.shape[0]} T={ids.shape[1]} storage={storage} "
              f"{sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))} bytes")


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "What is the capital of France? Paris has been the capital since the 10th century.",
    "How do I install OpenBLAS on Debian?",
    "apt-get install libopenblas-dev pulls in the pthread variant of the library.",
    "Café au lait, naïve résumé — accents are stripped by the uncased tokenizer.",
    "東京は日本の首都です。",
    "The quick brown fox jumps over the lazy dog while 3.14159 approximates pi.",
    "Hi",
]


def minilm(model_dir):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel
    st = SentenceTransformer(model_dir, device="cpu")
    feats = st.tokenize(SENTENCES)
    ids = feats["input_ids"].numpy().astype(np.int32)
    mask = feats["attention_mask"].numpy().astype(np.int32)
    types = feats["token_type_ids"].numpy().astype(np.int32)
    emb = st.encode(SENTENCES, batch_size=32, convert_to_numpy=True)  # pooling + Normalize, as users run it
    hf = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                    token_type_ids=torch.tensor(types, dtype=torch.long)).last_hidden_state.numpy()
    d = os.path.join(OUT, "minilm")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    B, T = ids.shape
    H = hidden.shape[2]
    # the hidden states of the first 4 sentences only: enough to localise an error, small to commit
    nparams = sum(p.numel() for p in hf.parameters())
    save_case(d, ids, types, mask, H, 0, dict(emb_mean=emb, hidden4=hidden[:4]), nparams)
    with open(os.path.join(d, "sentences.txt"), "w") as f:
        f.write("\n".join(SENTENCES) + "\n")
    print(f"minilm: B={B} T={T} H={H} {sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))} bytes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minilm", default=os.environ.get("XR_MINILM_DIR", "/work/models/all-MiniLM-L6-v2"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    tiny_models()
    if os.path.isdir(args.minilm):
        minilm(args.minilm)
    else:
        print(f"minilm: {args.minilm} not found, skipped")


if __name__ == "__main__":
    main()
