#!/usr/bin/env bash
# bench_mine.sh: `xrank mine` against sentence-transformers' mine_hard_negatives (use_faiss=False) on
# all-MiniLM-L6-v2 and the demo's man-page corpus, same run: the fraction of identical (query, rank) negative
# slots for several option sets (target >= 99%), and embedding passages/s against SentenceTransformer.encode.
# Usage: benchmarks/bench_mine.sh [peer_mine.py options: --pages 1000 --threads 2 --batch-size 32 --repeats 3
#        --ranks 2 --beir DIR --log FILE]
# Env: BUILD_DIR (build), PYTHON (/work/venv/bin/python: torch + sentence-transformers + datasets),
#      XR_MINILM_DIR (the model directory).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PYTHON=${PYTHON:-/work/venv/bin/python}
MODEL=${XR_MINILM_DIR:-/work/models/all-MiniLM-L6-v2}
[ -f "$MODEL/model.safetensors" ] || { echo "no all-MiniLM-L6-v2 at $MODEL (set XR_MINILM_DIR)" >&2; exit 1; }
. launch/env.sh
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target xrank >/dev/null
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)  $(nproc) cpus"
exec "$PYTHON" benchmarks/peer_mine.py --xrank "$BUILD_DIR/xrank" --model "$MODEL" "$@"
