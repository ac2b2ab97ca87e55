#!/usr/bin/env bash
# bench_cpu_forward.sh: CPU forward throughput of `xrank embed` and `xrank score` against sentence-transformers
# (PyTorch) on all-MiniLM-L6-v2, same texts / batch / max length / threads, in the same run; prints the ratio.
# Usage: benchmarks/bench_cpu_forward.sh [peer_cpu_forward.py options: --threads 2 --batch-size 32 --max-length 256
#        --n 512 --repeats 5 --tasks embed,score --log FILE]
# Env: BUILD_DIR (build), PYTHON (/work/venv/bin/python: torch + sentence-transformers), XR_MINILM_DIR (the model).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PYTHON=${PYTHON:-/work/venv/bin/python}
MODEL=${XR_MINILM_DIR:-/work/models/all-MiniLM-L6-v2}
[ -f "$MODEL/model.safetensors" ] || { echo "no all-MiniLM-L6-v2 at $MODEL (set XR_MINILM_DIR)" >&2; exit 1; }
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target xrank >/dev/null
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>}  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)  $(nproc) cpus"
exec "$PYTHON" benchmarks/peer_cpu_forward.py --xrank "$BUILD_DIR/xrank" --model "$MODEL" "$@"
