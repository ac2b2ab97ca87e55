#!/usr/bin/env python3
"""parity_train.py: the sentence-transformers side of the quality-parity benchmark (issue 5, bench_parity.sh).
Trains sentence-transformers' CrossEncoder with CrossEncoderTrainer on the same n-tuples, model, listwise loss
and hyperparameters as `xrank train --loss listwise`, and checks that the two stacks score pairs alike.

Subcommands:
  filter-groups IN OUT --negatives K   copy a group file of `xrank mine`, keeping the rows with all K negative
                                       slots filled (what the n-tuple jsonl holds), so both trainers see the
                                       same groups
  train ...                            CrossEncoder(model, num_labels=1) + CrossEncoderTrainer; the listwise loss
                                       is MultipleNegativesRankingLoss without in-batch negatives, scale 1,
                                       identity activation = softmax cross-entropy over [positive, negatives],
                                       target 0 (FlagEmbedding's group loss, xrank's --loss listwise).
                                       --segment-seconds S stops after S seconds at a step boundary with a
                                       Trainer checkpoint (exit 3); the next call resumes it (optimizer,
                                       scheduler, RNG and data position restored), so every run fits under a
                                       short CPU lock
  check-scores ...                     score pairs with xrank score and with CrossEncoder.predict (logits) and
                                       report the largest difference per model
Run with the venv's python (/work/venv/bin/python): sentence-transformers >= 5 (tested with 6.2), h5py.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

EXIT_SEGMENT = 3  # train: stopped at a segment boundary, call again to resume


def cmd_filter_groups(a):
    import h5py
    import numpy as np
    shutil.copyfile(a.input, a.output + ".tmp")
    with h5py.File(a.output + ".tmp", "r+") as f:
        neg = f["negatives"][:]
        if neg.shape[1] != a.negatives:
            sys.exit(f"{a.input}: {neg.shape[1]} negative slots, expected {a.negatives}")
        keep = (neg >= 0).sum(axis=1) == a.negatives
        # rewrite every per-row dataset with the same type, chunking and filters as xrank mine wrote it
        for name in ("query", "positive", "negatives", "scores", "ce_scores"):
            if name not in f:
                continue
            d = f[name]
            data, dtype, comp, shuf = d[:][keep], d.dtype, d.compression, d.shuffle
            del f[name]
            f.create_dataset(name, data=data, dtype=dtype, compression=comp, shuffle=shuf,
                             chunks=True if data.size else None)
        f.attrs["num_rows"] = np.int64(int(keep.sum()))
    os.replace(a.output + ".tmp", a.output)
    print(json.dumps({"rows_in": int(keep.size), "rows_kept": int(keep.sum()),
                      "rows_dropped": int(keep.size - keep.sum()), "negatives": a.negatives}))


def build_loss(model):
    import torch
    from sentence_transformers.cross_encoder import losses

    class GroupCrossEntropyLoss(losses.MultipleNegativesRankingLoss):
        """MultipleNegativesRankingLoss with the hard negatives only. num_negatives=0 cannot be used:
        get_in_batch_negatives then calls torch.multinomial(.., 0), which raises; so no in-batch
        negatives are produced here, and forward/calculate_loss are the library's: logits [rows, 1+K] (positive
        first), times scale 1 after the identity, nn.CrossEntropyLoss with target 0, mean over rows."""

        def get_in_batch_negatives(self, anchors, candidates):
            return iter(())

    return GroupCrossEntropyLoss(model, num_negatives=None, scale=1.0, activation_fn=torch.nn.Identity())


def check_loss(model, loss, rows):
    """The loss on one batch (dropout off) equals logsumexp(z) - z_0 computed here from the model's logits."""
    import torch
    cols = list(rows[0].keys())
    inputs = [[r[c] for r in rows] for c in cols]
    model.eval()
    with torch.no_grad():
        lib = float(loss(inputs, None))
        z = torch.stack([torch.tensor(model.predict(list(zip(inputs[0], inputs[j])), activation_fn=torch.nn.Identity(),
                                                    convert_to_numpy=True, batch_size=64))
                         for j in range(1, len(cols))], dim=1)
        ref = float((torch.logsumexp(z, dim=1) - z[:, 0]).mean())
    model.train()
    if abs(lib - ref) > 1e-5 * max(1.0, abs(ref)):
        sys.exit(f"loss check failed: library {lib} vs group cross-entropy {ref}")
    return lib, ref


def latest_checkpoint(out):
    if not os.path.isdir(out):
        return None
    cks = [d for d in os.listdir(out) if d.startswith("checkpoint-") and d[11:].isdigit()]
    return os.path.join(out, max(cks, key=lambda d: int(d[11:]))) if cks else None


def cmd_train(a):
    import torch
    torch.set_num_threads(a.threads)
    import transformers
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer,
                                                     CrossEncoderTrainingArguments)

    final = os.path.join(a.output, "final")
    if os.path.exists(os.path.join(final, "config.json")):
        print(f"{final} exists: nothing to do")
        return 0
    os.makedirs(a.output, exist_ok=True)
    resume = latest_checkpoint(a.output)
    rows = [json.loads(l) for l in open(a.train_jsonl)]
    cols = ["anchor", "positive"] + [f"negative_{i}" for i in range(1, a.negatives + 1)]
    for i, r in enumerate(rows):
        if list(r.keys())[:len(cols)] != cols:
            sys.exit(f"{a.train_jsonl}:{i + 1}: expected columns {cols}, got {list(r.keys())}")
    rows = [{c: r[c] for c in cols} for r in rows]
    train = Dataset.from_list(rows)

    # the new head's init draws from torch's generator: seed it as the Trainer seeds everything else
    transformers.set_seed(a.seed)
    model = CrossEncoder(a.model, num_labels=1, max_length=a.max_length)
    loss = build_loss(model)
    if resume is None:
        lib, ref = check_loss(model, loss, rows[:a.batch_size])
        print(f"loss check (dropout off, first batch): library {lib:.6f} = group cross-entropy {ref:.6f}")

    args = CrossEncoderTrainingArguments(
        output_dir=a.output, num_train_epochs=a.epochs, max_steps=a.max_steps if a.max_steps > 0 else -1,
        per_device_train_batch_size=a.batch_size, learning_rate=a.learning_rate, weight_decay=a.weight_decay,
        warmup_steps=a.warmup_ratio, lr_scheduler_type="linear", max_grad_norm=a.max_grad_norm,
        optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, seed=a.seed,
        logging_steps=a.logging_steps, save_strategy="no", report_to="none", use_cpu=True,
        dataloader_drop_last=False, disable_tqdm=True, save_only_model=False)

    state_file = os.path.join(a.output, "segments.json")
    segs = json.load(open(state_file)) if os.path.exists(state_file) and resume else []
    metrics_path = os.path.join(a.output, "metrics.jsonl")
    t_wall = time.time()
    seg = {"start_step": 0, "steps": 0, "loop_s": 0.0}

    class Segment(transformers.TrainerCallback):
        """Times the step loop; stops with a checkpoint once --segment-seconds have passed."""

        def __init__(self):
            self.t0 = None

        def on_step_begin(self, args, state, control, **kw):
            if self.t0 is None:
                self.t0 = time.time()
                seg["start_step"] = state.global_step

        def on_step_end(self, args, state, control, **kw):
            seg["loop_s"] = time.time() - self.t0
            seg["steps"] = state.global_step - seg["start_step"]
            if a.segment_seconds > 0 and time.time() - t_wall > a.segment_seconds \
                    and state.global_step < state.max_steps:
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            with open(metrics_path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **(logs or {})}) + "\n")

    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train, loss=loss, callbacks=[Segment()])
    trainer.train(resume_from_checkpoint=resume)
    st = trainer.state
    seg["wall_s"] = time.time() - t_wall
    seg["resumed_from"] = resume
    segs.append(seg)
    json.dump(segs, open(state_file, "w"), indent=1)
    if st.global_step < st.max_steps:
        print(f"segment: steps {seg['start_step']}..{st.global_step} of {st.max_steps} in {seg['loop_s']:.1f} s; "
              f"call again to resume")
        return EXIT_SEGMENT
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    # transformers 5 saves a fast tokenizer's tokenizer.json only; xrank reads BERT's vocab.txt: the tokenizer
    # is the base model's, unchanged, so its files are copied next to the saved one
    for fn in ("vocab.txt", "special_tokens_map.json"):
        src = os.path.join(a.model, fn)
        if os.path.exists(src) and not os.path.exists(os.path.join(tmp, fn)):
            shutil.copyfile(src, os.path.join(tmp, fn))
    os.replace(tmp, final)
    for d in os.listdir(a.output):
        if d.startswith("checkpoint-"):
            shutil.rmtree(os.path.join(a.output, d))
    summary = {"steps": st.global_step, "examples": len(rows), "pairs": min(st.global_step * a.batch_size, int(len(rows) * a.epochs)) * (1 + a.negatives),
               "segments": len(segs), "train_loop_s": sum(s["loop_s"] for s in segs),
               "wall_s": sum(s["wall_s"] for s in segs), "seed": a.seed,
               "torch": torch.__version__, "transformers": transformers.__version__,
               "sentence_transformers": __import__("sentence_transformers").__version__, "threads": a.threads}
    json.dump(summary, open(os.path.join(a.output, "train_summary.json"), "w"), indent=1)
    print(json.dumps(summary))
    return 0


def cmd_check_scores(a):
    """Pairs from a labeled-list jsonl (xrank mine --jsonl-format labeled-list): the first --queries lines."""
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    from sentence_transformers.cross_encoder import CrossEncoder
    lines = [json.loads(l) for l in open(a.pairs)][:a.queries]
    pairs = [(r["anchor"], p) for r in lines for p in r["positive"]]
    inp = "".join(json.dumps([q, p]) + "\n" for q, p in pairs)
    out = {"queries": len(lines), "pairs": len(pairs), "max_length": a.max_length}
    for m in a.models:
        res = subprocess.run([a.xrank, "score", "--model", m, "--max-length", str(a.max_length), "--threads",
                              str(a.threads), "--activation", "none", "--quiet"],
                             input=inp, capture_output=True, text=True, check=True)
        xs = np.array([json.loads(l)["score"] for l in res.stdout.splitlines()], dtype=np.float64)
        ce = CrossEncoder(m, max_length=a.max_length)
        ss = np.asarray(ce.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=32), dtype=np.float64)
        d = np.abs(xs - ss)
        out[m] = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
                  "score_range": [float(ss.min()), float(ss.max())],
                  "same_order_per_query": all(
                      list(np.argsort(-xs[i:i + len(r["positive"])], kind="stable")) ==
                      list(np.argsort(-ss[i:i + len(r["positive"])], kind="stable"))
                      for i, r in zip(np.cumsum([0] + [len(r["positive"]) for r in lines[:-1]]), lines))}
    print(json.dumps(out))
    bad = [m for m in a.models if out[m]["max_abs_diff"] > a.tol]
    if bad:
        sys.exit(f"scores differ by more than {a.tol} for {bad}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("filter-groups")
    f.add_argument("input")
    f.add_argument("output")
    f.add_argument("--negatives", type=int, required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True)
    t.add_argument("--train-jsonl", required=True, help="n-tuple jsonl: anchor, positive, negative_1..K")
    t.add_argument("--output", required=True)
    t.add_argument("--negatives", type=int, default=7)
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--max-steps", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=8, help="rows (n-tuples) per step")
    t.add_argument("--learning-rate", type=float, default=1e-4)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--warmup-ratio", type=float, default=0.1)
    t.add_argument("--max-grad-norm", type=float, default=1.0)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--logging-steps", type=int, default=20)
    t.add_argument("--segment-seconds", type=float, default=0, help="0: train to the end in one call")
    c = sub.add_parser("check-scores")
    c.add_argument("--xrank", required=True)
    c.add_argument("--pairs", required=True)
    c.add_argument("--models", nargs="+", required=True)
    c.add_argument("--queries", type=int, default=20)
    c.add_argument("--max-length", type=int, default=128)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--tol", type=float, default=1e-4)
    a = p.parse_args()
    return {"filter-groups": cmd_filter_groups, "train": cmd_train, "check-scores": cmd_check_scores}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
