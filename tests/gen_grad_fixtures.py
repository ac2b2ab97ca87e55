#!/usr/bin/env python3
"""gen_grad_fixtures.py: writes tests/fixtures/grad/: what PyTorch / transformers compute when training the tiny
BERT and XLM-R sequence-classification models of tests/fixtures/model (dropout off) on a padded batch of pairs:
both losses (BCE with logits, pos_weight 5, as sentence-transformers' BinaryCrossEntropyLoss; listwise cross
entropy over groups of 4 with the positive first, as FlagEmbedding's reranker) and their d loss / d logits, the
gradient of every parameter, and the parameters after 3 AdamW steps (transformers' Trainer recipe: no decay on
biases and LayerNorm weights, linear warmup + decay schedule, clip_grad_norm_). Plus a bare BertModel given a new
head by BertForSequenceClassification.from_pretrained (its new classifier's values are saved so the C side can
load them: its generator cannot match torch's). test_grad_model.c checks the C trainer math against these files.

Run with the reference venv:  /work/venv/bin/python tests/gen_grad_fixtures.py

Files per case (raw little-endian f32 / i32):
  case.json      sizes, hyperparameters, which loss the gradients and AdamW steps use, tensor manifest
                 (name, numel in torch's named_parameters order)
  ids.i32 types.i32 mask.i32 labels.f32       the batch [B, T] and BCE labels [B]
  logits.f32     [B] (num_labels 1)
  dlogits_bce.f32 dlogits_ce.f32              d loss / d logits of each loss
  grads.f32      gradients of every manifest tensor except the word embeddings, manifest order
  word_rows.i32 word_grad.f32                 the word embedding gradient's non-zero rows (the batch's ids)
  params3.f32    all parameters after 3 AdamW steps (manifest order) [not for the bare case]
  grad_norms.f32 lrs.f32                      total gradient norm before clipping, learning rate, per step
  head.f32       [bare case] the new classifier's weight then bias as torch initialised them
"""
import json
import os
import shutil

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "fixtures", "model")
OUT = os.path.join(HERE, "fixtures", "grad")

POS_WEIGHT = 5.0
GROUP = 4
LR, WD, BETAS, EPS = 1e-3, 0.01, (0.9, 0.999), 1e-8
WARMUP, TOTAL, STEPS, MAX_NORM = 1, 4, 3, 1.0


def write(path, arr, dtype):
    np.ascontiguousarray(arr, dtype=dtype).astype(np.dtype(dtype).newbyteorder("<")).tofile(path)


def pair_batch(rng, bert, vocab, max_tokens):
    """8 pairs (2 groups of 4) of varying lengths in the model's pair template, right-padded."""
    shapes = [(5, 9), (1, 1), (12, 20), (3, 4), (7, 30), (2, 2), (9, 11), (4, 16)]
    rows = []
    for a, b in shapes:
        if bert:
            CLS, SEP = 101, 102
            ids = [CLS] + list(rng.integers(103, vocab, a)) + [SEP] + list(rng.integers(103, vocab, b)) + [SEP]
            types = [0] * (a + 2) + [1] * (b + 1)
        else:
            BOS, EOS = 0, 2
            ids = [BOS] + list(rng.integers(4, vocab, a)) + [EOS, EOS] + list(rng.integers(4, vocab, b)) + [EOS]
            types = [0] * len(ids)
        assert len(ids) <= max_tokens
        rows.append((ids, types))
    pad = 0 if bert else 1
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


def run(model, ids, types, mask, bert):
    kw = dict(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long))
    if bert:
        kw["token_type_ids"] = torch.tensor(types, dtype=torch.long)
    return model(**kw).logits.view(-1)


def bce(logits, labels):
    return torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(POS_WEIGHT))(logits, labels)


def group_ce(logits):
    grouped = logits.view(-1, GROUP)
    return torch.nn.functional.cross_entropy(grouped, torch.zeros(grouped.shape[0], dtype=torch.long))


def loss_of(name, logits, labels):
    return bce(logits, labels) if name == "bce" else group_ce(logits)


def decay_names(model):
    from transformers import Trainer
    return set(Trainer.get_decay_parameter_names(None, model))


def flat(tensors):
    return np.concatenate([t.detach().numpy().reshape(-1) for t in tensors]).astype(np.float32)


def word_param(model):
    for n, p in model.named_parameters():
        if n.endswith("embeddings.word_embeddings.weight"):
            return n
    raise RuntimeError("no word embeddings")


def save_grads(d, model, ids, mask):
    wname = word_param(model)
    named = list(model.named_parameters())
    write(os.path.join(d, "grads.f32"), flat([p.grad for n, p in named if n != wname]), np.float32)
    wgrad = dict(named)[wname].grad.numpy()
    rows = np.flatnonzero(np.abs(wgrad).sum(1) > 0).astype(np.int32)
    real = np.unique(ids[mask == 1])
    assert set(rows) <= set(real), "word gradient outside the batch's ids"
    write(os.path.join(d, "word_rows.i32"), rows, np.int32)
    write(os.path.join(d, "word_grad.f32"), wgrad[rows], np.float32)


def case(name, src, model_cls, bert, grad_loss, adamw, seed, bare=False):
    from transformers import get_linear_schedule_with_warmup
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = model_cls.from_pretrained(os.path.join(MODELS, src), num_labels=1, attn_implementation="eager",
                                      dtype=torch.float32)
    model.eval()  # dropout off: the exactness tests run the C trainer with dropout off too
    cfg = model.config
    ids, types, mask = pair_batch(rng, bert, cfg.vocab_size, cfg.max_position_embeddings - (0 if bert else 2))
    labels = torch.tensor([1.0 if i % GROUP == 0 else 0.0 for i in range(ids.shape[0])])
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for k, v in dict(ids=ids, types=types, mask=mask).items():
        write(os.path.join(d, k + ".i32"), v, np.int32)
    write(os.path.join(d, "labels.f32"), labels.numpy(), np.float32)

    # both losses and their d loss / d logits
    losses = {}
    for ln in ("bce", "ce"):
        logits = run(model, ids, types, mask, bert).detach().requires_grad_(True)
        loss = loss_of(ln, logits, labels)
        loss.backward()
        losses[ln] = loss.item()
        write(os.path.join(d, f"dlogits_{ln}.f32"), logits.grad.numpy(), np.float32)
    write(os.path.join(d, "logits.f32"), logits.detach().numpy(), np.float32)

    # every parameter's gradient for grad_loss
    model.zero_grad(set_to_none=True)
    loss_of(grad_loss, run(model, ids, types, mask, bert), labels).backward()
    save_grads(d, model, ids, mask)
    named = list(model.named_parameters())
    info = dict(B=int(ids.shape[0]), T=int(ids.shape[1]), num_labels=1, group=GROUP, pos_weight=POS_WEIGHT,
                loss_bce=losses["bce"], loss_ce=losses["ce"], grad_loss=grad_loss, model=src,
                lr=LR, weight_decay=WD, beta1=BETAS[0], beta2=BETAS[1], eps=EPS, warmup=WARMUP, total=TOTAL,
                steps=STEPS if adamw else 0, max_norm=MAX_NORM, word=word_param(model),
                tensors=[[n, int(p.numel())] for n, p in named],
                no_decay=sorted(n for n, _ in named if n not in decay_names(model)))
    if bare:
        head = [p for n, p in named if n.startswith("classifier.")]
        write(os.path.join(d, "head.f32"), flat(head), np.float32)

    if adamw:
        # transformers' Trainer: two groups, torch AdamW (single-tensor path on the CPU), clip, step, schedule
        dn = decay_names(model)
        groups = [dict(params=[p for n, p in named if n in dn], weight_decay=WD),
                  dict(params=[p for n, p in named if n not in dn], weight_decay=0.0)]
        opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
        sched = get_linear_schedule_with_warmup(opt, WARMUP, TOTAL)
        norms, lrs = [], []
        for _ in range(STEPS):
            opt.zero_grad(set_to_none=True)
            loss_of(grad_loss, run(model, ids, types, mask, bert), labels).backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)))
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        write(os.path.join(d, "params3.f32"), flat([p for _, p in named]), np.float32)
        write(os.path.join(d, "grad_norms.f32"), norms, np.float32)
        write(os.path.join(d, "lrs.f32"), lrs, np.float32)
        info["grad_norms"], info["lrs"] = norms, lrs
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(info, f, indent=1)
    size = sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d))
    print(f"{name}: B={ids.shape[0]} T={ids.shape[1]} loss bce {losses['bce']:.6f} ce {losses['ce']:.6f} "
          f"grads of {grad_loss}{' norms ' + str(info.get('grad_norms')) if adamw else ''} {size} bytes")


def main():
    from transformers import BertForSequenceClassification, XLMRobertaForSequenceClassification
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    case("bert_cls", "bert_cls", BertForSequenceClassification, True, "bce", True, 5001)
    case("xlmr_cls", "xlmr_cls", XLMRobertaForSequenceClassification, False, "ce", True, 5002)
    case("bert_bare_head", "bert_model", BertForSequenceClassification, True, "bce", False, 5003, bare=True)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
