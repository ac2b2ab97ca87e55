#!/usr/bin/env bash
# bench_tokenize.sh: tokenization throughput of `xrank tokenize` (MB of text per second per core, 1 and 2 ranks /
# threads) against the Hugging Face fast tokenizers (Rust, encode_batch) on the same man-page corpus and the
# all-MiniLM-L6-v2 vocabulary, in the same run; checks that the stored ids equal the peer's.
# Usage: benchmarks/bench_tokenize.sh [peer_tokenize.py options: --repeat 4 --repeats 3 --configs 1x1,1x2,2x1
#        --peer-threads 1,2 --log FILE]
# Env: BUILD_DIR (build), PYTHON (/work/venv/bin/python: tokenizers + h5py), XR_MINILM_DIR (the model directory).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PYTHON=${PYTHON:-/work/venv/bin/python}
MODEL=${XR_MINILM_DIR:-/work/models/all-MiniLM-L6-v2}
[ -f "$MODEL/tokenizer.json" ] || { echo "no all-MiniLM-L6-v2 tokenizer at $MODEL (set XR_MINILM_DIR)" >&2; exit 1; }
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target xrank >/dev/null
exec "$PYTHON" benchmarks/peer_tokenize.py --xrank "$BUILD_DIR/xrank" --model "$MODEL" "$@"
