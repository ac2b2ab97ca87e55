#!/usr/bin/env bash
# benchmarks/gpu/train_device_check.sh: the GPU-training check of issue 10, for a bare GPU machine (run it with
# carry [".deps"] after benchmarks/gpu/fetch_deps.sh, timeout <= 480 s). Builds the CMake project with
# device_build.sh, runs the CUDA op tests (test_cuda_ops: forward; test_cuda_train_ops: every training op vs the
# CPU, ragged packed sequences, NaN-poisoned outputs, 1e-5 relative, two runs bit-identical) and the CPU training
# tests as a control, then prints one summary and leaves the logs under $OUT.
# Not here yet: the whole-step test on the GPU (fixture gradients, 10 AdamW steps vs the CPU trainer) and the
# learning check with `xrank train --device cuda` (the CLI does not take --device for train yet).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUTD=${OUT:-/tmp/xr_train_gpu}; mkdir -p "$OUTD"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUTD/gpu.txt" || true
git rev-parse --short HEAD 2>/dev/null | tee "$OUTD/commit.txt" || true
start=$(date +%s)
rc=0
benchmarks/gpu/device_build.sh -R "test_cuda_smoke|test_cuda_ops|test_cuda_train_ops|test_grad_ops|test_grad_model|test_optim|test_trainer" \
    2>&1 | tee "$OUTD/ctest.log" || rc=$?
B=${XR_BUILD:-/tmp/xr_build}
# the per-op lines of the training-op test, for RESULTS.md
[ -x "$B/tests/test_cuda_train_ops" ] && (cd tests && "$B/tests/test_cuda_train_ops") > "$OUTD/train_ops.txt" 2>&1 || rc=1
echo "== summary"
echo "gpu: $(cat "$OUTD/gpu.txt" 2>/dev/null)  commit: $(cat "$OUTD/commit.txt" 2>/dev/null)"
grep -E "tests passed|Failed|Skipped|Passed" "$OUTD/ctest.log" | tail -12 || true
grep -E "max rel diff|differ|dropped|check failed" "$OUTD/train_ops.txt" | tail -80 || true
echo "elapsed $(( $(date +%s) - start )) s, rc $rc"
exit $rc
