#!/usr/bin/env bash
# bench_scaling.sh: strong and weak scaling of `xrank train` over 1, 2, 4, ... ranks (issue 14), on this machine
# (CPU ranks under mpirun) or under Slurm (--launcher srun). Strong scaling keeps the global batch (--global-batch
# pairs, split over the ranks); weak scaling keeps the batch per rank (--per-rank-batch). Every rank gets
# --threads threads; a point with ranks x threads above the cores it may use ($SLURM_CPUS_ON_NODE, else nproc) is
# marked oversubscribed. Each point runs --rounds times, the rounds alternating over the points, each run timed
# under `flock $XR_CPU_LOCK` (the load average at the start recorded); pairs/s over the steps after the first
# logging window. Efficiency = pairs/s / (ranks x pairs/s of the smallest point per rank). The step time split
# (compute / exposed communication / data, mean over ranks) and the share of communication hidden behind the
# backward come from metrics.jsonl (docs/FORMATS.md). Recipe: the demo's (all-MiniLM-L6-v2 + new head, the
# demo's mined man-page pairs, BCE pos_weight 3, max length 128); extra `xrank train` flags after `--`.
# Output: one JSON line per run appended to $OUT, and the markdown table.
# Usage: benchmarks/bench_scaling.sh [--ranks "1 2 4"] [--mode strong|weak|both] [--threads 1] [--global-batch 16]
#          [--per-rank-batch 8] [--steps 20] [--warmup-steps 5] [--rounds 2] [--launcher "mpirun -np {n} ..."]
#          [-- xrank train flags]
# Env: BUILD_DIR (build), XR_MINILM_DIR, TRAIN_DIR (train.ds + train.groups.h5; built as bench_train_scaling.sh
#      does when absent), XR_CPU_LOCK (/tmp/cpu.lock), OUT (benchmarks/results/scaling_cpu_DATE.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
MODEL=${XR_MINILM_DIR:-/work/models/all-MiniLM-L6-v2}
TRAIN_DIR=${TRAIN_DIR:-$BUILD_DIR/bench_train/data}
LOCK=${XR_CPU_LOCK:-/tmp/cpu.lock}
OUT=${OUT:-benchmarks/results/scaling_cpu_$(date +%Y-%m-%d).jsonl}
RANKS="1 2 4" MODE=both THREADS=1 GB=16 PRB=8 STEPS=20 WARM=5 ROUNDS=2
LAUNCHER="mpirun -np {n} --oversubscribe --bind-to none"
EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --ranks) RANKS=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --global-batch) GB=$2; shift 2 ;;
    --per-rank-batch) PRB=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup-steps) WARM=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --launcher) LAUNCHER=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "bench_scaling.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $MODE in strong) MODES=strong ;; weak) MODES=weak ;; both) MODES="strong weak" ;;
  *) echo "bench_scaling.sh: --mode strong|weak|both" >&2; exit 2 ;; esac
. launch/env.sh
XRANK=$PWD/$BUILD_DIR/xrank
[ -x "$XRANK" ] || { echo "bench_scaling.sh: no $XRANK (build first, or set BUILD_DIR)" >&2; exit 2; }
[ -f "$TRAIN_DIR/train.groups.h5" ] || { echo "bench_scaling.sh: no $TRAIN_DIR/train.groups.h5: run \
benchmarks/bench_train_scaling.sh once (it builds the demo set) or set TRAIN_DIR" >&2; exit 2; }
CORES=${SLURM_CPUS_ON_NODE:-$(nproc)}
WORK=$PWD/$BUILD_DIR/bench_scaling_points
mkdir -p "$WORK" "$(dirname "$OUT")"
RES=$WORK/results.jsonl
: >"$RES"
FLAGS=(--model "$MODEL" --data "$TRAIN_DIR/train.ds" --groups "$TRAIN_DIR/train.groups.h5" --loss bce --pos-weight 3
  --learning-rate 5e-5 --weight-decay 0.01 --warmup-ratio 0.1 --lr-scheduler-type linear --max-grad-norm 1
  --max-length 128 --seed 42 --dropout on --max-steps $((WARM + STEPS)) --logging-steps "$WARM" --eval-steps 0
  --overwrite ${EXTRA[@]+"${EXTRA[@]}"})
point() { # mode ranks round
  local mode=$1 n=$2 round=$3 b gb dir
  if [ "$mode" = strong ]; then
    [ $((GB % n)) = 0 ] || { echo "bench_scaling.sh: --global-batch $GB is not divisible by $n ranks" >&2; exit 2; }
    b=$((GB / n)) gb=$GB
  else
    b=$PRB gb=$((PRB * n))
  fi
  dir=$WORK/$mode-$n
  local cmd=("$XRANK" train "${FLAGS[@]}" --per-device-train-batch-size "$b" --threads "$THREADS" --output "$dir")
  # shellcheck disable=SC2206
  [ "$n" = 1 ] || cmd=(${LAUNCHER//\{n\}/$n} "${cmd[@]}")
  OMP_NUM_THREADS=$THREADS flock "$LOCK" sh -c 'cut -d" " -f1 /proc/loadavg >"$0.load"; exec "$@"' "$dir" "${cmd[@]}" \
    2>"$dir.log" >/dev/null || { echo "bench_scaling.sh: $mode $n ranks failed:" >&2; tail -5 "$dir.log" >&2; exit 1; }
  python3 benchmarks/train_runs.py run "$dir/metrics.jsonl" "$dir.log" bench=scaling "mode=$mode" "ranks=$n" \
    "threads=$THREADS" "global_batch=$gb" "per_rank_batch=$b" "round=$round" "cores=$CORES" \
    "oversubscribed=$([ $((n * THREADS)) -gt "$CORES" ] && echo true || echo false)" \
    "load_start=$(cat "$dir.load")" "commit=\"$(git rev-parse --short HEAD)\"" | tee -a "$RES"
}
echo "commit $(git rev-parse --short HEAD)  $CORES cores  ranks: $RANKS  $MODES  $STEPS timed steps after $WARM -> $OUT"
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for n in $RANKS; do
      # weak and strong coincide at the point where the batches agree: run it once, record it under both
      if [ "$mode" = weak ] && [ $((PRB * n)) = "$GB" ] && [[ " $MODES " == *" strong "* ]]; then
        grep "\"mode\": \"strong\", \"ranks\": $n," "$RES" | grep "\"round\": $round," | sed 's/"mode": "strong"/"mode": "weak"/' | tee -a "$RES"
        continue
      fi
      point "$mode" "$n" "$round"
    done
  done
done
cat "$RES" >>"$OUT"
python3 benchmarks/train_runs.py scaling "$RES"
