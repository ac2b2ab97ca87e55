#!/usr/bin/env bash
# bench_train_cpu.sh: CPU training throughput of `xrank train` against sentence-transformers' CrossEncoder
# (PyTorch, benchmarks/peer_train_cpu.py) on all-MiniLM-L6-v2 + a new 1-label head, the demo's mined man-page
# pairs, BCE with pos_weight, AdamW, batch 16, max length 128, same threads, alternating runs in the same
# invocation; then the measured fp32 GEMM peak (bench_knn --peak) and a table: pairs/s, tokens/s, paired
# ratios, model GFLOP/s and MFU. Every timed command runs under `flock $XR_CPU_LOCK` (the machine is shared).
# Usage: benchmarks/bench_train_cpu.sh [--runs 3] [--steps 60] [--warmup-steps 10] [--loops plain,trainer]
#        [--threads 2] [--no-mpi] [--openblas-unset (adds 1 rank with OPENBLAS_CORETYPE/L2_SIZE unset)]
# Env: BUILD_DIR (build), PYTHON (/work/venv/bin/python: torch + sentence-transformers + datasets),
#      XR_MINILM_DIR (the model), TRAIN_DIR (/tmp/train/demo: train.ds, train.groups.h5, manpages/; built
#      with tools/demo_corpus.py + xrank tokenize + xrank mine when absent), XR_CPU_LOCK (/tmp/cpu.lock),
#      OUT (benchmarks/results/train_cpu_<date>.jsonl, appended).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PYTHON=${PYTHON:-/work/venv/bin/python}
MODEL=${XR_MINILM_DIR:-/work/models/all-MiniLM-L6-v2}
TRAIN_DIR=${TRAIN_DIR:-/tmp/train/demo}
LOCK=${XR_CPU_LOCK:-/tmp/cpu.lock}
OUT=${OUT:-benchmarks/results/train_cpu_$(date +%Y-%m-%d).jsonl}
RUNS=3 STEPS=60 WARM=10 LOOPS=plain,trainer THREADS=2 MPI=1 UNSET=0
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup-steps) WARM=$2; shift 2 ;;
    --loops) LOOPS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --no-mpi) MPI=0; shift ;;
    --openblas-unset) UNSET=1; shift ;;
    *) echo "bench_train_cpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ $((STEPS % WARM)) -eq 0 ] || { echo "--steps must be a multiple of --warmup-steps (the logging window)" >&2; exit 2; }
[ -f "$MODEL/model.safetensors" ] || { echo "no all-MiniLM-L6-v2 at $MODEL (set XR_MINILM_DIR)" >&2; exit 1; }
. launch/env.sh
locked() { flock "$LOCK" "$@"; }
locked cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
locked cmake --build "$BUILD_DIR" -j"$(nproc)" --target xrank >/dev/null
XRANK=$PWD/$BUILD_DIR/xrank
WORK=$PWD/$BUILD_DIR/bench_train
mkdir -p "$WORK"

# CrossEncoderTrainer needs accelerate (transformers' Trainer); install it privately when the venv lacks it
PYDEPS=$PWD/$BUILD_DIR/pydeps
if ! PYTHONPATH=$PYDEPS "$PYTHON" -c "import accelerate" 2>/dev/null; then
  "$PYTHON" -m pip install -q --target "$PYDEPS" --no-deps "accelerate>=1.1" psutil ||
    { echo "accelerate missing and not installable: CrossEncoderTrainer runs are skipped" >&2; LOOPS=plain; }
fi
export PYTHONPATH=$PYDEPS${PYTHONPATH:+:$PYTHONPATH}

# the data: the demo's mined groups (built here when absent), and the same pairs as text for the peer
if [ ! -f "$TRAIN_DIR/train.groups.h5" ]; then
  TRAIN_DIR=$WORK/data
  echo "== building the demo training set in $TRAIN_DIR"
  python3 tools/demo_corpus.py "$TRAIN_DIR/manpages" --pages 600
  locked "$XRANK" tokenize --model "$MODEL" --input "$TRAIN_DIR/manpages" --split train --output "$TRAIN_DIR/train.ds" \
    --overwrite --quiet
  locked "$XRANK" mine --model "$MODEL" --input "$TRAIN_DIR/train.ds" --output "$TRAIN_DIR/train.groups.h5" \
    --num-negatives 15 --overwrite --quiet
fi
RES=$WORK/results.jsonl
: >"$RES"
PAIRS=$WORK/pairs.jsonl
"$XRANK" mine --model "$MODEL" --input "$TRAIN_DIR/train.ds" --groups-in "$TRAIN_DIR/train.groups.h5" \
  --jsonl "$PAIRS" --jsonl-format labeled-pair --text-from "$TRAIN_DIR/manpages" --split train --overwrite >/dev/null

# the demo config's settings (configs/demo.json), given as flags so that the config can change without
# changing what is measured
TOTAL=$((WARM + STEPS))
TRAIN_FLAGS=(--model "$MODEL" --data "$TRAIN_DIR/train.ds" --groups "$TRAIN_DIR/train.groups.h5" --loss bce
  --pos-weight 3 --learning-rate 5e-5 --weight-decay 0.01 --warmup-ratio 0.1 --lr-scheduler-type linear
  --max-grad-norm 1 --max-length 128 --seed 42 --dropout on --max-steps "$TOTAL" --logging-steps "$WARM"
  --gradient-accumulation-steps 1 --eval-steps 0 --overwrite --quiet)
PEER_FLAGS=(--pairs "$PAIRS" --model "$MODEL" --threads "$THREADS" --batch-size 16 --max-length 128 --pos-weight 3
  --lr 5e-5 --weight-decay 0.01 --warmup-ratio 0.1 --max-grad-norm 1 --steps "$STEPS" --warmup-steps "$WARM"
  --seed 42)
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" \
  " $(nproc) cpus  OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>}  $STEPS timed steps of 16 pairs after $WARM -> $OUT"

xrank_run() { # label ranks threads_per_rank per_device_batch run [env ...]: one locked `xrank train`
  local label=$1 np=$2 nt=$3 b=$4 run=$5 dir=$WORK/xrank_$1
  shift 5
  local cmd=("$XRANK" train "${TRAIN_FLAGS[@]}" --per-device-train-batch-size "$b" --threads "$nt" --output "$dir")
  [ "$np" = 1 ] || cmd=(mpirun -np "$np" --oversubscribe --bind-to none "${cmd[@]}")
  # the whole process (start, model and data load, training, export) is timed inside the lock
  OMP_NUM_THREADS=$nt locked /usr/bin/time -f %e -o "$dir.time" env "$@" "${cmd[@]}"
  "$PYTHON" benchmarks/peer_train_cpu.py xrank --metrics "$dir/metrics.jsonl" --warmup-steps "$WARM" \
    --label "$label" --ranks "$np" --threads "$nt" --wall "$(tail -n 1 "$dir.time")" --run "$run" | tee -a "$RES"
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS"
  for loop in ${LOOPS//,/ }; do
    OMP_NUM_THREADS=$THREADS locked "$PYTHON" benchmarks/peer_train_cpu.py run "${PEER_FLAGS[@]}" --loop "$loop" \
      --run "$run" 2>"$WORK/peer_$loop.log" | tee -a "$RES" ||
      { echo "peer ($loop) failed:" >&2; tail -n 20 "$WORK/peer_$loop.log" >&2; exit 1; }
  done
  # global batch 16 on every layout: 1 rank x 16 pairs, 2 ranks x 8 pairs
  xrank_run "1x${THREADS}threads" 1 "$THREADS" 16 "$run"
  if [ "$MPI" = 1 ] && [ "$THREADS" -ge 2 ]; then xrank_run "2ranksx$((THREADS / 2))thread" 2 $((THREADS / 2)) 8 "$run"; fi
  # OpenBLAS's own AVX-512 kernels instead of xrank's (xrank picks its kernel when OpenBLAS runs AVX2 ones)
  if [ "$UNSET" = 1 ]; then xrank_run "1x${THREADS}threads-openblas-unset" 1 "$THREADS" 16 "$run" -u OPENBLAS_CORETYPE \
    -u OPENBLAS_L2_SIZE; fi
done
# context for the peer: PyTorch's own fp32 GEMM on this CPU
OMP_NUM_THREADS=$THREADS locked "$PYTHON" benchmarks/peer_train_cpu.py gemm --threads "$THREADS" | tee -a "$RES"

# the MFU denominator: the machine's measured fp32 GEMM peak at the same thread count (benchmarks/bench_knn.c)
if locked cmake --build "$BUILD_DIR" -j"$(nproc)" --target bench_knn >/dev/null 2>&1; then
  OMP_NUM_THREADS=$THREADS locked "$BUILD_DIR/benchmarks/bench_knn" --peak --threads "$THREADS" | tee -a "$RES"
else
  echo "bench_knn not available: no GEMM peak, no MFU (give --peak-gflops to the summary)" >&2
fi
cat "$RES" >>"$OUT"
echo "== summary (this invocation's lines, appended to $OUT)"
"$PYTHON" benchmarks/peer_train_cpu.py summary "$RES" --model "$MODEL"
