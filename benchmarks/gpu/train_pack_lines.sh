#!/usr/bin/env bash
# benchmarks/gpu/train_pack_lines.sh: packed training storage on the GPU (issue 13, ops_act_region under
# XR_CUDA_TRAIN_PACK=1), condensed from the build's last ctest log (all_device_check.sh's ctest_gpu step ran the test):
# test_cuda_train_pack's failed checks first, then act_region's answers, the casts, the refusal of a mix not built,
# the model steps packed against unpacked (bits, peak), the number of per-op comparisons and of the training
# attention's per path (exact, gemm, gemm in chunks of 5: 28 each), at most 30 lines. Exit 1 when the test is missing
# from the log, reported a failed check, or ended without its "checks passed" line (it died: an xrank error or a
# crash, whose last lines are printed). If it passed (and test_cuda_bf16_train's packed plan lines),
# XR_CUDA_TRAIN_PACK's default can become 1 (ops_cuda.cu, train_pack_env; docs/DESIGN.md "Packed training storage").
cd "$(dirname "$0")/../.."
. benchmarks/gpu/device_env.sh
t=test_cuda_train_pack
out=$(xr_test_output $t) || { echo "$t: not in the last ctest run"; exit 1; }
if grep -q "^SKIPPED" <<< "$out"; then echo "$t: skipped (no GPU)"; exit 0; fi
fail='check failed|checks failed|^xrank: error'
{
    grep -E "$fail" <<< "$out" | head -10
    grep -E "^act_region|casts|refused|^model |checks passed" <<< "$out" | grep -vE "$fail"
    echo "op comparisons (packed against unpacked, the same bits wanted): $(grep -c 'packed == unpacked' <<< "$out")"
    # the training attention reading / storing packed qkv and context itself (no widening adapter): 28 a path
    for p in exact gemm 'gemm chunk 5'; do
        echo "attention $p: $(grep -cE "^$p attention.*packed == unpacked" <<< "$out") of 28 comparisons ran"
    done
} | head -30
xr_test_verdict "$t" "$out"
