#!/usr/bin/env bash
# benchmarks/gpu/cublas_model_lines.sh: the real cuBLAS / cuBLASLt held to the CPU emulator's model of it
# (tests/cuemu/cublas_emu.cpp), condensed from the build's last ctest log (all_device_check.sh's ctest_gpu step ran
# test_cuda_cublas_model: test_cublas_emu's problems on the GPU): its failed checks first, then which operand rounding
# the FAST compute types and the TF32 math mode fit on this GPU (the emulator's choice beside it), the real library's
# answers where the emulator refuses (a bias of another type than D, an algorithm on another D type, a pointer below
# the promised alignment) and whether GemmEx and cublasLtMatmul agree bit for bit, at most 24 lines. Exit 1 when the
# test is missing from the log, reported a failed check, or ended without its "checks passed" line. A failure or a
# "fit" other than the emulator's is a bug of the emulator's model: fix cublas_emu.cpp (tests/cuemu/README.md).
cd "$(dirname "$0")/../.."
. benchmarks/gpu/device_env.sh
t=test_cuda_cublas_model
out=$(xr_test_output $t) || { echo "$t: not in the last ctest run"; exit 1; }
if grep -q "^SKIPPED" <<< "$out"; then echo "$t: skipped (no GPU)"; exit 0; fi
fail='FAILED|checks failed'
{
    grep -E "$fail" <<< "$out" | head -8
    grep -E "^$t: .*(fit rounding|real cuBLAS|checks passed)" <<< "$out" | grep -vE "$fail" |
        sed -E 's/ \(worst error \/ bound: / (err\/bound /'
} | head -24
xr_test_verdict "$t" "$out"
