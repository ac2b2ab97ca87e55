#!/usr/bin/env bash
# benchmarks/gpu/att_lse_lines.sh: the log-sum-exp training attention on batched GEMMs (attention_train_lse /
# attention_backward_lse under XR_CUDA_TRAIN_ATTENTION=gemm; issues 10, 13), condensed from the build's last ctest log
# (all_device_check.sh's ctest_gpu step ran test_cuda_att_gemm): per comparison (the gemm lse path vs the CPU's lse ops,
# vs the exact lse kernels, chunks of 3 vs the CPU) the worst relative diff of out, lse and dqkv over the cases (the
# test's tolerance: 1e-5), the failed lse checks; then the scratch line (what the path allocated vs the memory plan's
# figure), the backward's recomputed scores against the forward's (fp32, bf16 operands: 0 differ, the same GEMM calls)
# and the XLM-R large layer's lse times (exact kernels, gemm, gemm with bf16 operands). Exit 1 when the test is
# missing from the log, printed no lse lines, or reported a failed lse check.
cd "$(dirname "$0")/../.."
. benchmarks/gpu/device_env.sh
t=test_cuda_att_gemm
out=$(xr_test_output $t) || { echo "$t: not in the last ctest run"; exit 1; }
if grep -q "^SKIPPED" <<< "$out"; then echo "$t: skipped (no GPU)"; exit 0; fi
rc=0
awk '
    /^gemm lse / && /max rel diff/ {
        k = $0; sub(/ (out|lse|dqkv) NH=.*/, "", k); sub(/^gemm lse /, "", k)
        x = $0; sub(/^gemm lse .*(vs CPU|vs exact lse) /, "", x); split(x, w, " "); v = w[1]
        d = $0; sub(/.*max rel diff /, "", d); sub(/ .*/, "", d)
        key = k SUBSEP v; if (!(key in m) || d + 0 > m[key]) m[key] = d + 0
        if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
        n[k]++; lines++
    }
    /lse/ && (/relative diff .* > / || /check failed/) { nf++ }
    END {
        if (!lines) { print "test_cuda_att_gemm: no gemm lse lines (check_lse did not run)"; exit 1 }
        for (i = 1; i <= nk; i++) {
            k = order[i]
            printf "gemm lse %-18s worst rel diff: out %.3g, lse %.3g, dqkv %.3g (%d comparisons, tol 1e-5)\n", k,
                   m[k, "out"], m[k, "lse"], m[k, "dqkv"], n[k]
        }
        printf "gemm lse: %d failed checks\n", nf
        exit nf > 0
    }' <<< "$out" || rc=1
grep -E "^lse gemm path scratch|^lse( bf16 operands)? backward: |^attention lse|^timing shape lse|^timing shape: gemm lse" \
    <<< "$out" | head -12
exit $rc
