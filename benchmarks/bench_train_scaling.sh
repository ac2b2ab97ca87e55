#!/usr/bin/env bash
# bench_train_scaling.sh: data-parallel scaling of `xrank train` on the CPU (issue 11): 2 ranks x 1 thread against
# 1 rank x 2 threads on the demo recipe (all-MiniLM-L6-v2 + new head, the demo's mined man-page pairs, BCE
# pos_weight 3, global batch 16, max length 128, as bench_train_cpu.sh), and the 2-rank variants of the gradient
# exchange: defaults (node-shared memory, ZeRO-1, 25 MiB buckets reduced during the backward, sparse word
# embeddings), --comm mpi (the same over MPI messages); with --variants all also --zero 0, --overlap off,
# --sparse-embedding off, and the exchange before the engine (one blocking MPI all-reduce of the whole
# gradient). Rounds alternate the layouts; pairs/s is over the steps after the first logging window
# (--warmup-steps), from metrics.jsonl, with the step time split the trainer logs there (benchmarks/train_runs.py).
# Every run is timed under `flock $XR_CPU_LOCK`; the load average when it got the lock and when it ended is
# recorded (other tenants' unlocked builds and tests), and the summary gives each 2-rank layout's ratio to the
# 1 x 2 run of the same round, and pairs per CPU-second (the trainer's cpu_s: less sensitive to the neighbours).
# Per-step split (metrics.jsonl, mean over ranks): compute, exposed communication (incl. waiting for a slower
# rank), data; and the share of the gradient communication that ran behind the backward.
# Usage: benchmarks/bench_train_scaling.sh [--rounds 2] [--steps 40] [--warmup-steps 10]
#          [--variants all|default|target] [--quick]
# --variants target: only the two layouts of the 0.95x target; default adds --comm mpi; all adds the ablations.
# --quick: the target alone, 5 rounds of 40 timed steps after 10, the order of the two layouts alternating from
#   round to round (1 x 2 first in odd rounds, 2 x 1 first in even ones, so a drift of the machine does not favour
#   either), the whole benchmark under ONE hold of the lock (not one per run); about 5 minutes on an idle 2-core
#   machine once the data set exists (building it: a few minutes more). Do not wrap the script in flock yourself:
#   it takes the lock (a second flock on the same file from a child would wait forever).
# Env: BUILD_DIR (build), XR_MINILM_DIR, TRAIN_DIR (a dir with train.ds and train.groups.h5; built from 600 man pages
#      as bench_train_cpu.sh does when absent), XR_CPU_LOCK (/tmp/cpu.lock), OUT (benchmarks/results/ jsonl, appended)
set -euo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
MODEL=${XR_MINILM_DIR:-/work/models/all-MiniLM-L6-v2}
TRAIN_DIR=${TRAIN_DIR:-$BUILD_DIR/bench_train/data}
LOCK=${XR_CPU_LOCK:-/tmp/cpu.lock}
OUT=${OUT:-benchmarks/results/train_scaling_$(date +%Y-%m-%d).jsonl}
ROUNDS=2 STEPS=40 WARM=10 VARIANTS=all QUICK=0
ARGS=("$@")
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup-steps) WARM=$2; shift 2 ;;
    --variants) VARIANTS=$2; shift 2 ;;
    --quick) QUICK=1 ROUNDS=5 STEPS=40 WARM=10 VARIANTS=target; shift ;;
    *) echo "bench_train_scaling.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $VARIANTS in all|default|target) ;; *) echo "bench_train_scaling.sh: --variants all|default|target" >&2; exit 2 ;; esac
. launch/env.sh
XRANK=$PWD/$BUILD_DIR/xrank
WORK=$PWD/$BUILD_DIR/bench_scaling
mkdir -p "$WORK"
if [ ! -f "$TRAIN_DIR/train.groups.h5" ]; then
  echo "== building the demo training set in $TRAIN_DIR"
  python3 tools/demo_corpus.py "$TRAIN_DIR/manpages" --pages 600
  "$XRANK" tokenize --model "$MODEL" --input "$TRAIN_DIR/manpages" --split train --output "$TRAIN_DIR/train.ds" \
    --overwrite --quiet
  mpirun -np 2 --oversubscribe "$XRANK" mine --model "$MODEL" --input "$TRAIN_DIR/train.ds" \
    --output "$TRAIN_DIR/train.groups.h5" --num-negatives 15 --overwrite --quiet
fi
if [ "$QUICK" = 1 ] && [ -z "${XR_LOCK_HELD:-}" ]; then # the whole quick benchmark under one hold of the lock
  echo "== waiting for $LOCK (held for the whole benchmark)"
  exec flock "$LOCK" env XR_LOCK_HELD=1 "$SELF" "${ARGS[@]}"
fi
TOTAL=$((WARM + STEPS))
FLAGS=(--model "$MODEL" --data "$TRAIN_DIR/train.ds" --groups "$TRAIN_DIR/train.groups.h5" --loss bce --pos-weight 3
  --learning-rate 5e-5 --weight-decay 0.01 --warmup-ratio 0.1 --lr-scheduler-type linear --max-grad-norm 1
  --max-length 128 --seed 42 --dropout on --max-steps "$TOTAL" --logging-steps "$WARM" --eval-steps 0 --overwrite)
RES=$WORK/results.jsonl
: >"$RES"
run() { # label ranks threads per_device_batch round [xrank flags...]
  local label=$1 np=$2 nt=$3 b=$4 round=$5 dir=$WORK/$1
  shift 5
  local cmd=("$XRANK" train "${FLAGS[@]}" --per-device-train-batch-size "$b" --threads "$nt" --output "$dir" "$@")
  [ "$np" = 1 ] || cmd=(mpirun -np "$np" --oversubscribe --bind-to none "${cmd[@]}")
  local load1
  local lock=(flock "$LOCK")
  [ -z "${XR_LOCK_HELD:-}" ] || lock=()
  OMP_NUM_THREADS=$nt "${lock[@]}" sh -c 'cut -d" " -f1 /proc/loadavg >"$0.load"; exec "$@"' "$dir" "${cmd[@]}" \
    2>"$dir.log" >/dev/null
  load1=$(cut -d' ' -f1 /proc/loadavg)
  python3 benchmarks/train_runs.py run "$dir/metrics.jsonl" "$dir.log" bench=train_scaling "label=$label" "ranks=$np" \
    "threads=$nt" "round=$round" "flags=\"$*\"" global_batch=16 "load_start_end=[$(cat "$dir.load"), $load1]" \
    "commit=\"$(git rev-parse --short HEAD)\"" | tee -a "$RES"
}
echo "commit $(git rev-parse --short HEAD)  $(nproc) cpus  $STEPS timed steps of 16 pairs after $WARM -> $OUT"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    run 1x2threads 1 2 16 "$round"
    run 2x1thread 2 1 8 "$round"
  else
    run 2x1thread 2 1 8 "$round"
    run 1x2threads 1 2 16 "$round"
  fi
  [ "$VARIANTS" = target ] || run 2x1thread-mpi 2 1 8 "$round" --comm mpi
  if [ "$VARIANTS" = all ]; then
    run 2x1thread-zero0 2 1 8 "$round" --zero 0
    run 2x1thread-overlap-off 2 1 8 "$round" --overlap off
    run 2x1thread-dense-emb 2 1 8 "$round" --sparse-embedding off
    run 2x1thread-pre-engine 2 1 8 "$round" --comm mpi --zero 0 --overlap off --sparse-embedding off --bucket-size-mb 0
  fi
done
cat "$RES" >>"$OUT"
python3 - "$RES" <<'PY'
import json, sys, collections, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
by = collections.defaultdict(list)
for r in rows: by[r["label"]].append(r)
base = {r["round"]: r["pairs_per_s"] for r in by["1x2threads"]}
print("| layout | pairs/s per round | vs 1 x 2 threads, same round (median; min-max) | pairs per CPU-second (median) | vs 1 x 2 | step s: compute / exposed comm / data | comm hidden behind the backward | load avg at start |")
print("|---|---|---|---|---|---|---|---|")
cpu_base = statistics.median(r["pairs_per_cpu_s"] for r in by["1x2threads"])
for k, v in by.items():
    ratios = [r["pairs_per_s"] / base[r["round"]] for r in v if r["round"] in base]
    f = lambda key: statistics.median([r[key] for r in v if r.get(key) is not None] or [0])
    hid = [r["comm_hidden_frac"] for r in v if r.get("comm_hidden_frac") is not None]
    print("| %s | %s | %.3fx (%.3f-%.3f) | %.2f | %.3fx | %.3f / %.3f / %.3f | %s | %s |" % (
        k, " / ".join("%.1f" % r["pairs_per_s"] for r in v), statistics.median(ratios), min(ratios), max(ratios),
        f("pairs_per_cpu_s"), f("pairs_per_cpu_s") / cpu_base,
        f("compute_s"), f("comm_exposed_s"), f("data_s"), "%.0f%%" % (100 * statistics.median(hid)) if hid else "-",
        " / ".join("%.1f" % r["load_start_end"][0] for r in v)))
per_round = [r["pairs_per_s"] / base[r["round"]] for r in sorted(by["2x1thread"], key=lambda r: r["round"])
             if r["round"] in base]
ratios = sorted(per_round)
if ratios:
    loads = [x for r in rows for x in r["load_start_end"]]
    print("target (issue 11): 2 ranks x 1 thread / 1 rank x 2 threads = %.3f (median of %d rounds; min %.3f, max %.3f;"
          " per round %s); %s 0.95; load average %.1f-%.1f during the runs" % (
              statistics.median(ratios), len(ratios), ratios[0], ratios[-1],
              " ".join("%.3f" % x for x in per_round), "meets" if statistics.median(ratios) >= 0.95 else "BELOW",
              min(loads), max(loads)))
PY
