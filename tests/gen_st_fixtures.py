#!/usr/bin/env python3
"""gen_st_fixtures.py: writes tests/fixtures/st/ with the Python reference stack (safetensors, torch,
transformers): config.json files as transformers' save_pretrained writes them, a tiny BERT classifier's
model.safetensors, a mixed-dtype safetensors file with the expected f32 values, and the MiniLM configs.

    /work/venv/bin/python tests/gen_st_fixtures.py             # regenerate the fixtures
    /work/venv/bin/python tests/gen_st_fixtures.py --verify D  # check files xrank wrote (see below)

--verify D: D is what `XR_ST_EXPORT_DIR=D build/tests/test_safetensors` leaves: the tiny classifier
rewritten by st_write as F32 (D/f32/) and BF16 (D/bf16/). Python safetensors must load both, and
transformers must load them and give the same logits as the original (exactly for F32, within bf16
rounding for BF16)."""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "st")
MINILM = os.environ.get("XR_MINILM_DIR", "/work/models/all-MiniLM-L6-v2")

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4,
            max_position_embeddings=40)


def tiny_models():
    from transformers import (BertConfig, BertForSequenceClassification, XLMRobertaConfig,
                              XLMRobertaForSequenceClassification)
    torch.manual_seed(1234)
    bert = BertForSequenceClassification(BertConfig(vocab_size=99, type_vocab_size=2, num_labels=1, **TINY))
    xlmr = XLMRobertaForSequenceClassification(
        XLMRobertaConfig(vocab_size=101, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                         num_labels=3, **{**TINY, "max_position_embeddings": 42}))
    return bert.eval(), xlmr.eval()


def sample_input():
    ids = torch.tensor([[2, 17, 33, 45, 3, 0, 0], [2, 5, 6, 7, 8, 9, 3]])
    mask = (ids != 0).long()
    mask[:, 0] = 1
    return ids, mask


def gen():
    from safetensors.numpy import save_file
    os.makedirs(OUT, exist_ok=True)
    bert, xlmr = tiny_models()
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in (("tiny_bert_cls", bert), ("tiny_xlmr_cls", xlmr)):
            model.save_pretrained(os.path.join(tmp, name))
            dst = os.path.join(OUT, name)
            os.makedirs(dst, exist_ok=True)
            shutil.copy(os.path.join(tmp, name, "config.json"), dst)
        # The BERT classifier's weights as transformers writes them: a real file for the reader test and the
        # source of the --verify round trip (small: vocab 99, hidden 32).
        shutil.copy(os.path.join(tmp, "tiny_bert_cls", "model.safetensors"), os.path.join(OUT, "tiny_bert_cls"))
        # A bare encoder config too (BertModel, no head).
        from transformers import BertConfig, BertModel
        BertModel(BertConfig(vocab_size=99, **TINY)).save_pretrained(os.path.join(tmp, "tiny_bert_model"))
        os.makedirs(os.path.join(OUT, "tiny_bert_model"), exist_ok=True)
        shutil.copy(os.path.join(tmp, "tiny_bert_model", "config.json"), os.path.join(OUT, "tiny_bert_model"))

    # Mixed dtypes with awkward values: subnormals, infinities, NaN, signed zero, rounding boundaries.
    # Each x_<dtype> comes with want_<dtype>, its exact f32 value, computed by numpy / torch.
    vals = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 6.1035156e-05, 5.9604645e-08, 3.0e-06, -1.2e-07, np.inf,
                     -np.inf, np.nan, 1e-3, 3.14159265, -123.456, 0.1], dtype=np.float64)
    t = {}
    f16 = vals.astype(np.float16)
    t["x_f16"] = f16.reshape(4, 4)
    t["want_f16"] = f16.astype(np.float32).reshape(4, 4)
    bf = torch.tensor(vals, dtype=torch.float32).to(torch.bfloat16)
    t["want_bf16"] = bf.to(torch.float32).numpy().reshape(2, 8)
    t["x_f64"] = (vals * 1.0000001).reshape(16)
    t["want_f64"] = t["x_f64"].astype(np.float32)
    t["x_f32"] = np.arange(-6, 6, dtype=np.float32).reshape(3, 2, 2) / 7
    t["x_i64"] = np.array([1, -2, 3], dtype=np.int64)
    t["x_u8"] = np.array([], dtype=np.uint8).reshape(0, 5)
    t["x_bool"] = np.array([True, False, True])
    t["x_scalar"] = np.array(2.5, dtype=np.float32)
    save_file(t, os.path.join(OUT, "dtypes_np.safetensors"), metadata={"format": "np", "note": "mixed"})
    # numpy has no bfloat16: write the BF16 tensor through torch into a second file.
    from safetensors.torch import save_file as save_torch
    save_torch({"x_bf16": bf.reshape(2, 8)}, os.path.join(OUT, "bf16_torch.safetensors"), metadata={"format": "pt"})

    mdir = os.path.join(OUT, "minilm")
    if os.path.isdir(MINILM):
        os.makedirs(os.path.join(mdir, "1_Pooling"), exist_ok=True)
        for f in ("config.json", "modules.json", "1_Pooling/config.json"):
            shutil.copy(os.path.join(MINILM, f), os.path.join(mdir, f))
    else:
        print(f"warning: {MINILM} missing, minilm configs not refreshed", file=sys.stderr)

    # Expected logits of the tiny classifier on a fixed batch, for --verify.
    ids, mask = sample_input()
    with torch.no_grad():
        logits = bert(input_ids=ids, attention_mask=mask).logits
    json.dump({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "logits": logits.tolist()},
              open(os.path.join(OUT, "tiny_bert_cls", "expected_logits.json"), "w"), indent=1)
    print("wrote", OUT)


def verify(d):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification
    ref = load_file(os.path.join(OUT, "tiny_bert_cls", "model.safetensors"))
    exp = json.load(open(os.path.join(OUT, "tiny_bert_cls", "expected_logits.json")))
    ids = torch.tensor(exp["input_ids"])
    mask = torch.tensor(exp["attention_mask"])
    want = torch.tensor(exp["logits"])
    ok = True
    for kind in ("f32", "bf16"):
        sub = os.path.join(d, kind)
        got = load_file(os.path.join(sub, "model.safetensors"))
        assert set(got) == set(ref), f"{kind}: tensor names differ"
        worst = max((got[k].float() - ref[k].float()).abs().max().item() for k in ref)
        # BF16: bit-identical to torch's own float32 -> bfloat16 rounding (round to nearest even)
        mism = sum(int((got[k].view(torch.int16) != ref[k].to(got[k].dtype).view(torch.int16)).sum())
                   for k in ref) if kind == "bf16" else 0
        model = AutoModelForSequenceClassification.from_pretrained(sub).eval()
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        diff = (logits - want).abs().max().item()
        tol = 0.0 if kind == "f32" else 0.05
        print(f"{kind}: safetensors loaded {len(got)} tensors, dtype {next(iter(got.values())).dtype}, "
              f"max |w - w_ref| {worst:.3g}, {mism} values differ from torch's rounding; transformers logits max abs diff {diff:.3g}")
        ok &= diff <= tol and mism == 0 and (kind != "f32" or worst == 0)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--verify", metavar="DIR")
    a = ap.parse_args()
    sys.exit(verify(a.verify) if a.verify else gen())
