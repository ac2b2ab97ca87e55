#!/usr/bin/env bash
# benchmarks/gpu/act_pack_lines.sh: the packed (2-byte bf16) inference storage on the GPU (issue 13, ops_act_pack under
# XR_CUDA_ACT_PACK=1), condensed from the build's last ctest log (all_device_check.sh's ctest_gpu step ran the test):
# test_cuda_act_pack's failed checks first, then its summary (per fixture model against transformers and against the
# unpacked bf16 forward, the inference weights' copy, the checks passed), then one line per packed op against the CPU's
# packed op (words that differ, max abs diff), at most 64 lines in all. Exit 1 when the test is missing from the log,
# reported a failed check, or ended without its "checks passed" line (it died: an xrank error or a crash, whose last
# lines are printed). If it passed, the default of XR_CUDA_ACT_PACK can become 1 (ops_cuda.cu, act_pack_env;
# docs/DESIGN.md "Packed inference storage").
cd "$(dirname "$0")/../.."
. benchmarks/gpu/device_env.sh
t=test_cuda_act_pack
out=$(xr_test_output $t) || { echo "$t: not in the last ctest run"; exit 1; }
if grep -q "^SKIPPED" <<< "$out"; then echo "$t: skipped (no GPU)"; exit 0; fi
fail='check failed|checks failed|max abs diff .* > |relative diff .* > |^xrank: error'
{
    grep -E "$fail" <<< "$out" | head -12
    grep -E "^model |weights' bf16 copy|checks passed" <<< "$out"
    grep -E "packed|act_unpack" <<< "$out" | grep -vE "^model |$fail"
} | head -64
xr_test_verdict "$t" "$out"
