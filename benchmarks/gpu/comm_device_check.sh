#!/usr/bin/env bash
# benchmarks/gpu/comm_device_check.sh: runs ON the GPU machine (call `run` with carry [".deps"]): builds with
# device_build.sh running the communicator tests (test_comm: NCCL at one rank; comm_*: MPI and staged on host
# memory, staged on CUDA memory with 2 ranks sharing the GPU, dead-peer stops), then bench_comm for NCCL at one
# rank and the staged communicator at 2 ranks on the GPU (nccl-tests algbw / busbw, up to 1 GiB) into OUTDIR.
# Usage: benchmarks/gpu/comm_device_check.sh [OUTDIR]   (env: XRDEPS, XR_BUILD)
set -uo pipefail
cd "$(dirname "$0")/../.."
O=${1:-${OUT:-/tmp/xr_comm_out}}
mkdir -p "$O"
B=${XR_BUILD:-/tmp/xr_build}
benchmarks/gpu/device_build.sh -R 'test_comm|^comm_' >"$O/build.log" 2>&1
echo "device_build.sh rc=$?"; grep -E "tests passed|tests failed|\*\*\*|error:" "$O/build.log" | head -30
cmake --build "$B" --target bench_comm >>"$O/build.log" 2>&1 || { echo "bench_comm did not build"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "== NCCL, 1 rank"; "$B/benchmarks/bench_comm" --impl nccl --device cuda --max-bytes 1G | tee "$O/comm_nccl_1.jsonl" | tail -3
echo "== staged, 2 ranks on one GPU"
mpirun -np 2 --oversubscribe "$B/benchmarks/bench_comm" --impl staged --device cuda --max-bytes 256M \
  | tee "$O/comm_staged_2.jsonl" | tail -3
