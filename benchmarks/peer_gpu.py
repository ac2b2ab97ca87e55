#!/usr/bin/env python3
"""Peer baseline on one GPU: what PyTorch / transformers (the stack that sentence-transformers'
CrossEncoder and SentenceTransformer run on) achieves for a bge-reranker-v2-m3-sized model.

The model is XLMRobertaForSequenceClassification with the XLM-R large config (H 1024, L 24, 16 heads,
FFN 4096, vocab 250002), random weights, num_labels=1 - exactly the module CrossEncoder wraps.
No tokenizer or hub access is needed: batches are random token ids at full length (the worst case,
no padding), so the numbers are model throughput, the part xrank's GPU backend must beat.

Training step = what CrossEncoderTrainer(bf16=True) does: fp32 master weights, torch.autocast(bf16),
BCEWithLogitsLoss, AdamW (torch, foreach), zero_grad(set_to_none). Also reported: pure bf16 weights.
Inference = CrossEncoder.predict / SentenceTransformer.encode equivalents (bf16 weights, no grad).
Prints one JSON line per measurement, and the bf16 GEMM peak the card reaches (the MFU denominator).
"""
import json, time, sys, os
try:
    import torch
    import transformers
    from transformers import (XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel, BertConfig,
                              BertModel, BertForSequenceClassification)
except ImportError as err:  # the GPU machine's Python may lack them: the peer is skipped, not the check
    print(json.dumps(dict(kind="peer", skipped=f"PyTorch / transformers not importable: {err}")))
    sys.exit(0)


def now():
    torch.cuda.synchronize()
    return time.perf_counter()


def gemm_peak():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    t = now()
    reps = 20
    for _ in range(reps):
        a @ b
    dt = now() - t
    return 2 * n ** 3 * reps / dt / 1e12


def xlmr_large(num_labels=None):
    cfg = XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           intermediate_size=4096, max_position_embeddings=8194, type_vocab_size=1,
                           layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    if num_labels:
        cfg.num_labels = num_labels
    return cfg


def flops_per_token_fwd(n_params_nonemb, L, H, T):
    # 2 * params (matmul weights) + attention scores/ctx 2 * 2 * T * H per layer
    return 2 * n_params_nonemb + 4 * L * T * H


def count_nonemb(model):
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def bench_train(T, B, mode, steps=12, warm=3, arch="xlmr-large"):
    """mode: amp-bf16 (CrossEncoderTrainer bf16=True), bf16-weights, or fp32 (no autocast: the exact baseline of
    xrank's fp32 GPU trainer, issue 10). arch: xlmr-large (bge-reranker-v2-m3 shape) or minilm-l6 (the demo's)."""
    torch.manual_seed(0)
    # built on the GPU: XLM-R large's random init on the host took most of a run's time (2026-12-04 device call)
    with torch.device("cuda"):
        if arch == "minilm-l6":
            cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                             intermediate_size=1536, num_labels=1)
            model, nl, nh, vocab, cls, sep = BertForSequenceClassification(cfg), 6, 384, 30000, 101, 102
        else:
            model, nl, nh, vocab, cls, sep = XLMRobertaForSequenceClassification(xlmr_large(1)), 24, 1024, 250000, 0, 2
    if mode == "bf16-weights":
        model = model.to(torch.bfloat16)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(5.0, device="cuda"))
    ids = torch.randint(5, vocab, (B, T), device="cuda")
    ids[:, 0] = cls
    ids[:, -1] = sep
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (B,), device="cuda").float()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(mode == "amp-bf16")):
            logits = model(input_ids=ids, attention_mask=mask).logits.view(-1)
        loss = lossf(logits.float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warm):
        step()
    t = now()
    for _ in range(steps):
        step()
    dt = now() - t
    pairs = B * steps / dt
    nonemb = count_nonemb(model)
    fl = 3 * flops_per_token_fwd(nonemb, nl, nh, T) * T * B * steps / dt / 1e12
    mem = torch.cuda.max_memory_allocated() / 2**30
    del model, opt
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return dict(kind="train", model=arch + "-seqcls", mode=mode, max_len=T, batch=B, pairs_per_s=round(pairs, 2),
                tokens_per_s=round(pairs * T), model_tflops=round(fl, 1), peak_mem_gib=round(mem, 1))


def bench_infer(name, model, T, B, steps=10, warm=3, L=24, H=1024):
    model = model.cuda().to(torch.bfloat16).eval()
    ids = torch.randint(5, 1000, (B, T), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(warm):
            model(input_ids=ids, attention_mask=mask)
        t = now()
        for _ in range(steps):
            model(input_ids=ids, attention_mask=mask)
        dt = now() - t
    rate = B * steps / dt
    fl = flops_per_token_fwd(count_nonemb(model), L, H, T) * T * B * steps / dt / 1e12
    del model
    torch.cuda.empty_cache()
    return dict(kind="infer", model=name, max_len=T, batch=B, seqs_per_s=round(rate, 1), model_tflops=round(fl, 1))


def main():
    print(json.dumps(dict(device=torch.cuda.get_device_name(0), torch=torch.__version__,
                          transformers=transformers.__version__, date=time.strftime("%Y-%m-%d"))), flush=True)
    print(json.dumps(dict(kind="gemm_peak_bf16_8192", tflops=round(gemm_peak(), 1))), flush=True)
    for T, B in [(512, 16), (512, 32), (256, 32), (256, 64)]:
        for mode in ["amp-bf16", "bf16-weights"]:
            try:
                print(json.dumps(bench_train(T, B, mode)), flush=True)
            except torch.OutOfMemoryError as e:
                print(json.dumps(dict(kind="train", mode=mode, max_len=T, batch=B, error="OOM")), flush=True)
                torch.cuda.empty_cache()
    for T, B in [(512, 64), (256, 128)]:
        print(json.dumps(bench_infer("xlmr-large-seqcls (CrossEncoder.predict)",
                                     XLMRobertaForSequenceClassification(xlmr_large(1)), T, B)), flush=True)
        print(json.dumps(bench_infer("xlmr-large (bge-m3 encode)", XLMRobertaModel(xlmr_large()), T, B)), flush=True)
    mini = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                      intermediate_size=1536)
    for T, B in [(128, 256), (256, 256)]:
        print(json.dumps(bench_infer("minilm-l6 (all-MiniLM-L6-v2 encode)", BertModel(mini), T, B, L=6, H=384)),
              flush=True)


def gemm_peak_fp32():
    """fp32 GEMM peak without TF32 (what xrank's fp32 path computes in): the fp32 MFU denominator."""
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 8192
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    for _ in range(2):
        a @ b
    t = now()
    reps = 8
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (now() - t) / 1e12


def write_random_xlmr(d):
    """A random XLMRobertaForSequenceClassification (num_labels 1, the bge-reranker-v2-m3 shape) saved to d, built on
    the GPU (seconds; the host's init takes tens): the model xrank's GPU benchmarks load."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = XLMRobertaForSequenceClassification(xlmr_large(1))
    m.save_pretrained(d)
    n = sum(p.numel() for p in m.parameters())
    del m
    torch.cuda.empty_cache()
    return n


def main_train_list(items, steps):
    """The xlmr-large training-step list of benchmarks/gpu/train_device_check.sh part large, in order, one JSON line
    each as it completes (a timeout keeps what was done): write=DIR (the random model, for xrank), peak (the bf16 and
    fp32 GEMM peaks through torch), MODE:T:B (fp32 or amp-bf16, bench_train at that shape)."""
    for it in items:
        if it.startswith("write="):
            t = time.perf_counter()
            n = write_random_xlmr(it[6:])
            print(json.dumps(dict(kind="model_written", dir=it[6:], params=n,
                                  seconds=round(time.perf_counter() - t, 1))), flush=True)
        elif it == "peak":
            print(json.dumps(dict(kind="gemm_peak_torch", bf16_tflops=round(gemm_peak(), 1),
                                  fp32_tflops=round(gemm_peak_fp32(), 1))), flush=True)
        else:
            mode, T, B = it.split(":")
            T, B = int(T), int(B)
            try:
                r = bench_train(T, B, mode, steps=steps, warm=2)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                r = dict(kind="train", model="xlmr-large-seqcls", mode=mode, max_len=T, batch=B, error="OOM")
            print(json.dumps(dict(r, torch=torch.__version__)), flush=True)


def main_train(minilm_len, minilm_batch, mode="fp32", archs=("minilm-l6", "xlmr-large")):
    """The training-step baselines of benchmarks/gpu/train_device_check.sh: PyTorch's CrossEncoder training step
    (mode fp32: issue 10's exact baseline; amp-bf16: CrossEncoderTrainer(bf16=True), issue 13's target) for the
    demo recipe's shape (MiniLM-L6, a micro-batch of minilm_batch pairs padded to minilm_len) and the
    bge-reranker-v2-m3 shape at length 256."""
    print(json.dumps(dict(device=torch.cuda.get_device_name(0), torch=torch.__version__,
                          transformers=transformers.__version__, date=time.strftime("%Y-%m-%d"))), flush=True)
    for arch, T, B in [("minilm-l6", minilm_len, minilm_batch), ("xlmr-large", 256, 16)]:
        if arch not in archs:
            continue
        try:
            print(json.dumps(bench_train(T, B, mode, steps=10, warm=2, arch=arch)), flush=True)
        except torch.OutOfMemoryError:
            print(json.dumps(dict(kind="train", model=arch, mode=mode, max_len=T, batch=B, error="OOM")), flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("train-fp32", "train-bf16"):
        # [LEN BATCH [minilm]]: "minilm" leaves out the xlmr-large shape (part large measures it)
        main_train(int(sys.argv[2]) if len(sys.argv) > 2 else 96, int(sys.argv[3]) if len(sys.argv) > 3 else 16,
                   "fp32" if sys.argv[1] == "train-fp32" else "amp-bf16",
                   ("minilm-l6",) if len(sys.argv) > 4 and sys.argv[4] == "minilm" else ("minilm-l6", "xlmr-large"))
    elif len(sys.argv) > 2 and sys.argv[1] == "train-list":
        # train-list STEPS ITEM...: see main_train_list
        main_train_list(sys.argv[3:], int(sys.argv[2]))
    else:
        main()
