#!/usr/bin/env bash
# benchmarks/gpu/comm_device_check.sh: runs ON the GPU machine (call `run` with carry [".deps"]; or all of the GPU
# checks in one call: all_device_check.sh): builds with
# device_build.sh running the communicator tests (test_comm: NCCL at one rank; comm_*: MPI and staged on host
# memory, staged on CUDA memory with 2 ranks sharing the GPU, dead-peer stops), then bench_comm for NCCL at one
# rank (latency only, up to 1 GiB: no data moves, so no bandwidth) and the staged communicator at 2 ranks sharing
# the GPU (nccl-tests algbw / busbw, up to 256 MiB) into OUTDIR,
# then the training proof of issue 11 on the GPU: `xrank train --device cuda` on 1 rank x accumulation 2 and on
# 2 ranks x 1 sharing the GPU (staged communicator, pinned host buffers; ZeRO-1 on and off) must give the same
# parameters within 1e-5 (test_trainer --compare), as the CPU rank-invariance test (tests/train.cmake) requires.
# The single-process whole-step GPU test is tests/test_cuda_train_step.c (issue 10), run by train_device_check.sh.
# Usage: benchmarks/gpu/comm_device_check.sh [OUTDIR]   (env: XRDEPS, XR_BUILD; XR_NO_BUILD=1: use the build in
# $XR_BUILD; XR_PARTS, default all: bench (the bandwidths), train_eq (the training proof))
set -uo pipefail
cd "$(dirname "$0")/../.."
O=${1:-${OUT:-/tmp/xr_comm_out}}
mkdir -p "$O"
. benchmarks/gpu/device_env.sh   # P, B, X, MPIRUN, library paths, Open MPI settings, xr_part
rc=0
# each collective's line at the largest size (bench_comm prints a collective's sizes in increasing order)
largest() { awk -F'"collective": "' 'NF > 1 {split($2, c, "\""); if (!(c[1] in last)) order[n++] = c[1]; last[c[1]] = $0}
    END {for (i = 0; i < n; i++) print last[order[i]]}' "$1"; }
if [ "${XR_NO_BUILD:-0}" != 1 ]; then
  benchmarks/gpu/device_build.sh -R 'test_comm|^comm_' >"$O/build.log" 2>&1
  echo "device_build.sh rc=$?"; grep -E "tests passed|tests failed|\*\*\*|error:" "$O/build.log" | head -30
fi
if xr_part bench; then
  cmake --build "$B" --target bench_comm >>"$O/build.log" 2>&1 || { echo "bench_comm did not build"; exit 1; }
  # NCCL at 1 rank moves no data: bench_comm prints its latency with algbw / busbw null (a 1-GPU machine measures
  # no NCCL bandwidth; SCALING.md takes NVLink / InfiniBand figures from public nccl-tests results). The staged
  # communicator at 2 ranks shares GPU 0 (bench_comm takes the GPU as the CLI does: node-local rank mod GPUs) and
  # measures pinned-host staging + MPI over shared memory. --iters-time 0.1: both parts in ~15 s of the step's 60.
  DEV=cuda IMPL1=nccl MAX1=1G MAX2=256M
  if ! xr_have_gpu; then
    if [ "${XR_FAKE_GPU:-0}" = 1 ]; then   # a rehearsal of this part's plumbing: host memory, small sizes
      echo "XR_FAKE_GPU=1: no GPU; bench_comm runs --device cpu (mpi at 1 rank, staged at 2) up to 1 MiB"
      DEV=cpu IMPL1=mpi MAX1=1M MAX2=1M
    else
      echo "bench SKIPPED: no GPU visible to xrank (XR_FAKE_GPU=1 rehearses it on the CPU)"; DEV=
    fi
  fi
  if [ -n "$DEV" ]; then
    echo "== $IMPL1, 1 rank (latency only: a 1-rank collective moves no data)"
    "$B/benchmarks/bench_comm" --impl $IMPL1 --device $DEV --max-bytes $MAX1 --iters-time 0.1 \
      > "$O/comm_${IMPL1}_1.jsonl" || rc=1
    largest "$O/comm_${IMPL1}_1.jsonl"
    echo "== staged, 2 ranks on one GPU"
    "$MPIRUN" -np 2 --oversubscribe "$B/benchmarks/bench_comm" --impl staged --device $DEV --max-bytes $MAX2 \
      --iters-time 0.1 > "$O/comm_staged_2.jsonl" || rc=1
    largest "$O/comm_staged_2.jsonl"
  fi
fi
xr_part train_eq || exit $rc
echo "== 2-rank GPU training (staged) vs 1 rank x accumulation 2"
cmake --build "$B" --target xrank test_trainer >>"$O/build.log" 2>&1 || { echo "xrank / test_trainer did not build"; exit 1; }
T=$O/train_eq; rm -rf "$T"; mkdir -p "$T"
M=$PWD/tests/fixtures/cli/bert_seqcls
"$X" tokenize --model "$M" --input tests/fixtures/h5/flag.jsonl --output "$T/ds" --quiet || exit 1
TR=(train --model "$M" --data "$T/ds" --max-steps 10 --lr 1e-3 --max-length 24 --per-device-train-batch-size 3
    --logging-steps 5 --loss bce --pos-weight 2 --dropout off --device cuda --precision fp32 --quiet)
ok=1
"$X" "${TR[@]}" --gradient-accumulation-steps 2 --output "$T/r1" || ok=0
for z in 1 0; do
  "$MPIRUN" -np 2 --oversubscribe "$X" "${TR[@]}" --gradient-accumulation-steps 1 --zero $z --bucket-size-mb 0.004 \
    --output "$T/r2z$z" || ok=0
  "$B/tests/test_trainer" --compare "$T/r1/final/model.safetensors" "$T/r2z$z/final/model.safetensors" 1e-5 \
    | tee -a "$O/train_eq.txt" || ok=0
done
echo "2-rank GPU training equal to 1 rank x accumulation 2 (ZeRO-1 on and off): $([ $ok = 1 ] && echo PASS || echo FAIL)"
[ $ok = 1 ] && exit $rc || exit 1
