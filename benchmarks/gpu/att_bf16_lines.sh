#!/usr/bin/env bash
# benchmarks/gpu/att_bf16_lines.sh: the training attention's bf16 operands on the GPU (issue 13; ops_list.h "training
# precision"), condensed from the build's last ctest log (all_device_check.sh's ctest_gpu step ran the tests):
# test_cuda_bf16_train (the exact kernels) and test_cuda_bf16_train_attgemm (the GEMM path) hold the GPU's ctx, dq,
# dk, dv to tests/att_bf16_ref.h's reference: one line each with the worst share of elements past the accumulation
# bound, the worst ratio to the loose bound and the largest distance / rounding share (the checks: <= 25%, <= 1,
# <= 0.35, as bdf5187 set), and the failed checks; each test's bf16-copy rule line (queries between a producer and
# its GEMM keep the copy, an op between voids it); then test_cuda_att_gemm's times of the GEMM path with bf16
# operands at the XLM-R large layer. Exit 1 when a test is missing from the log or reported a failed check.
cd "$(dirname "$0")/../.."
. benchmarks/gpu/device_env.sh
rc=0
for t in test_cuda_bf16_train test_cuda_bf16_train_attgemm; do
    out=$(xr_test_output $t) || { echo "$t: not in the last ctest run"; rc=1; continue; }
    if grep -q "^SKIPPED" <<< "$out"; then echo "$t: skipped (no GPU)"; continue; fi
    awk -v t=$t '
        /^GPU bf16 operands/ {
            n++
            if (match($0, /past tight +[0-9.]+%/)) { v = substr($0, RSTART, RLENGTH); gsub(/[^0-9.]/, "", v); if (v + 0 > pt) pt = v + 0 }
            if (match($0, /worst [0-9.]+ of/)) { v = substr($0, RSTART + 6, RLENGTH - 9); if (v + 0 > wb) wb = v + 0 }
            s = $0; sub(/.*share:/, "", s); k = split(s, f, " ")
            for (i = 2; i <= k; i += 2) if (f[i] + 0 > sh) sh = f[i] + 0
        }
        /check failed/ && /GPU bf16 operands/ { nf++ }
        END {
            if (!n) { print t ": no GPU bf16-operand lines (test_attention_products did not run)"; exit 1 }
            printf "%s: attention bf16 operands, %d tensors vs the contract reference: past the accumulation bound " \
                   "<= %.2f%%, worst %.2f of the loose bound, distance / rounding share <= %.1e; %d failed checks\n",
                   t, n, pt, wb, sh, nf
            exit nf > 0
        }' <<< "$out" || rc=1
    # the bf16-copy rule (ops counted at their entry only): its line, or its failed checks
    grep -E "^bf16 copy rule|-> linear: [0-9]+ casts, want" <<< "$out" | sed "s/^/$t: /" | head -4
done
out=$(xr_test_output test_cuda_att_gemm) || { echo "test_cuda_att_gemm: not in the last ctest run"; rc=1; }
grep -E "^attention (exact|gemm)|gemm bf16 operands" <<< "${out:-}" | head -8
exit $rc
