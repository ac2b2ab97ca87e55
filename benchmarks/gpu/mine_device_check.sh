#!/usr/bin/env bash
# benchmarks/gpu/mine_device_check.sh: runs ON the GPU machine (call `run` with carry [".deps"]): builds with
# device_build.sh running the mining tests (test_mine, mine_*), then mines the BEIR fixture with the tiny test
# bi-encoder and cross-encoder on the CPU, on the GPU in fp32 and in bf16, on 1 and 2 ranks, and counts the
# (query, rank) negative slots that agree with the CPU run (ids, from the jsonl output).
# Usage: benchmarks/gpu/mine_device_check.sh [OUTDIR]   (env: XRDEPS, XR_BUILD)
set -uo pipefail
cd "$(dirname "$0")/../.."
O=${1:-${OUT:-/tmp/xr_mine_out}}
mkdir -p "$O"
P=${XRDEPS:-/opt/xrdeps}
B=${XR_BUILD:-/tmp/xr_build}
A=x86_64-linux-gnu
benchmarks/gpu/device_build.sh -R 'test_mine|^mine_|test_cuda_smoke' >"$O/build.log" 2>&1
echo "device_build.sh rc=$?"; grep -E "tests passed|tests failed|\*\*\*|error:" "$O/build.log" | head -30
export LD_LIBRARY_PATH="$P/usr/lib/$A:$P/lib/$A:$P/usr/lib/$A/openblas-pthread:$P/usr/lib/$A/hdf5/serial:$P/usr/lib/$A/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for pkg in cudnn nccl; do d=$(python3 -c "import nvidia.$pkg as m; print(list(m.__path__)[0])" 2>/dev/null) && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d/lib"; done
export OPAL_PREFIX="$P/usr" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader
export OMPI_MCA_btl_vader_single_copy_mechanism=none PATH="$PATH:$P/usr/bin"
X="$B/xrank"
cd tests
"$X" tokenize --model fixtures/cli/bert_st --input fixtures/h5/beir --output /tmp/xr_mine_ds --overwrite --quiet || exit 1
M=(mine --model fixtures/cli/bert_st --input /tmp/xr_mine_ds --no-cache --overwrite --num-negatives 4
   --cross-encoder fixtures/cli/bert_seqcls --jsonl-format flagembedding --output-scores)
run() { # name np args...
  local name=$1 np=$2; shift 2
  local pre=(); [ "$np" -gt 1 ] && pre=(mpirun -np "$np" --oversubscribe)
  "${pre[@]}" "$X" "${M[@]}" --output "/tmp/g_$name.h5" --jsonl "$O/$name.jsonl" "$@" 2>"$O/$name.err" ||
    { echo "$name failed"; cat "$O/$name.err"; }
}
run cpu 1
run cuda_fp32 1 --device cuda --precision fp32
run cuda_bf16 1 --device cuda --precision bf16
run cuda_fp32_np2 2 --device cuda --precision fp32
python3 - "$O" <<'PY'
import json, sys
o = sys.argv[1]
def load(n):
    return [json.loads(l) for l in open(f"{o}/{n}.jsonl")]
ref = load("cpu")
for n in ["cuda_fp32", "cuda_bf16", "cuda_fp32_np2"]:
    try: got = load(n)
    except OSError: print(n, "missing"); continue
    same = tot = 0; dmax = 0.0
    for a, b in zip(ref, got):
        for j in range(max(len(a["neg_ids"]), len(b["neg_ids"]))):
            tot += 1; same += j < len(a["neg_ids"]) and j < len(b["neg_ids"]) and a["neg_ids"][j] == b["neg_ids"][j]
        for x, y in zip(a["pos_scores"] + a["neg_scores"], b["pos_scores"] + b["neg_scores"]):
            if x is not None and y is not None: dmax = max(dmax, abs(x - y))
    print(f"{n}: {same}/{tot} negative slots as on the cpu; max |ce score diff| on shared slots {dmax:.2e}")
PY
grep -h "retrieval\|cross-encoder:" "$O"/*.err
