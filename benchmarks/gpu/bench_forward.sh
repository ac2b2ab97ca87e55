#!/usr/bin/env bash
# benchmarks/gpu/bench_forward.sh: runs ON the GPU machine (call `run` with carry [".deps"]): builds the project
# with device_build.sh (ctest included), the bench_encoder driver and gemm_peak, writes a random bge-reranker-v2-m3-
# sized model, measures xrank's score / embed forward (bf16 with flash attention, also the padded-GEMM attention,
# each flash tile shape and exact fp32) and the PyTorch peer at the same shapes, times the
# attention op alone per path (bench_attention.cu), checks xrank's logits against torch, and prints the
# comparison (JSON lines).
# Usage: benchmarks/gpu/bench_forward.sh [OUTDIR]
# env: XRDEPS, XR_BUILD, XR_SKIP_CTEST=1 (only the CUDA and encoder tests), XR_REPS, XR_SLOW=0 (skip the slow
# exact-attention and fp32 runs)
# XR_FAST=1 (all_device_check.sh's step forward_bench, about 60 s): no build (the build in XR_BUILD, made by
# device_build.sh; bench_encoder and gemm_peak are built if missing), the model of train_device_check.sh part large
# (/tmp/xr_bge_random) when it is there, else written; only issue 13's shapes, T 512 B 64 and T 256 B 128, score and
# embed, xrank bf16 (default kernels) against torch bf16, xrank's T 512 logits checked against torch; each piece
# under its own timeout; the packed activation storage (XR_CUDA_ACT_PACK=1, variant bf16-pack) at T 512 B 64 score and
# embed and T 256 B 128 score, its T 512 logits checked too, and T 512 B 64 score once more on the register-capped
# tile flash128x3 (variant bf16-pack-flash128x3). Lines: the xrank_infer, check and compare JSON lines
# (bench_forward.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
O=${1:-${OUT:-/tmp/xr_bench_out}}
mkdir -p "$O"
if [ "${XR_FAST:-0}" = 1 ]; then
    . benchmarks/gpu/device_env.sh   # P, B, library paths, xr_have_gpu
    M=/tmp/xr_bge_random; R=${XR_REPS:-5}; rc=0; J="$O/xrank.jsonl"; : > "$J"
    export PYTHONUNBUFFERED=1
    cmake --build "$B" --target bench_encoder gemm_peak > "$O/build.log" 2>&1 ||
        { echo "bench_encoder / gemm_peak did not build ($O/build.log)"; tail -20 "$O/build.log"; exit 1; }
    xr_have_gpu || { echo "forward_bench: no GPU visible to xrank"; exit 1; }
    timeout 20 "$B/benchmarks/gemm_peak" 10 > "$O/gemm_peak.jsonl" || rc=1
    PEAK=$(python3 -c "import json; print(max([json.loads(l)['tflops'] for l in open('$O/gemm_peak.jsonl') \
if '\"bf16\"' in l] or [0]))")
    echo "bf16 GEMM peak: $PEAK TFLOP/s"
    [ -f "$M/model.safetensors" ] || timeout 60 python3 benchmarks/gpu/bench_forward.py write "$M" || exit 1
    for a in "score 512 64 $R bf16 /tmp/xr_dump512" "score 256 128 $R bf16" "embed 512 64 $R bf16" \
             "embed 256 128 $R bf16"; do
        # shellcheck disable=SC2086
        timeout 30 "$B/benchmarks/bench_encoder" "$M" $a | sed 's/^{/{"variant": "bf16", /' | tee -a "$J" ||
            { rc=1; echo "bench_encoder $a: failed"; }
    done
    # the packed activation storage (XR_CUDA_ACT_PACK=1: bf16 between ops, ops_act_pack), T 512 logits dumped for the
    # check too; three runs of ~4 s (the model's load most of it), so the step stays within its 90 s
    for a in "score 512 64 $R bf16 /tmp/xr_dump512pack" "embed 512 64 $R bf16" "score 256 128 $R bf16"; do
        # shellcheck disable=SC2086
        XR_CUDA_ACT_PACK=1 timeout 30 "$B/benchmarks/bench_encoder" "$M" $a | sed 's/^{/{"variant": "bf16-pack", /' |
            tee -a "$J" || { rc=1; echo "bench_encoder $a (XR_CUDA_ACT_PACK=1): failed"; }
    done
    # the packed forward on a register-capped flash tile (flash_attn.h; XR_CUDA_ATTENTION names it): does bf16
    # storage's freed registers buy occupancy in the whole forward, not only in bench_attention's kernel lines? One
    # more run of ~4-5 s at the target shape (the step: ~70-80 s of its 90)
    XR_CUDA_ACT_PACK=1 XR_CUDA_ATTENTION=flash128x3 timeout 30 "$B/benchmarks/bench_encoder" "$M" score 512 64 "$R" \
        bf16 | sed 's/^{/{"variant": "bf16-pack-flash128x3", /' | tee -a "$J" ||
        { rc=1; echo "bench_encoder score 512 64 (XR_CUDA_ACT_PACK=1 XR_CUDA_ATTENTION=flash128x3): failed"; }
    [ "$PEAK" = 0 ] && PEAK=1 && echo "no bf16 GEMM peak: MFU below is against 1 TFLOP/s" && rc=1
    D=/tmp/xr_dump512,/tmp/xr_dump512pack
    timeout 75 python3 benchmarks/gpu/bench_forward.py fast "$M" "$D" 512 64 "$J" "$PEAK" | tee "$O/peer.jsonl" || rc=1
    exit $rc
fi
P=${XRDEPS:-/opt/xrdeps}
B=${XR_BUILD:-/tmp/xr_build}
R=${XR_REPS:-5}
A=x86_64-linux-gnu
M=/tmp/xr_bge_random
export PYTHONUNBUFFERED=1
if [ "${XR_SKIP_CTEST:-0}" = 1 ]; then XR_CUDA_VERBOSE=1 benchmarks/gpu/device_build.sh -R 'cuda|^test_encoder$' >"$O/build.log" 2>&1
else XR_CUDA_VERBOSE=1 benchmarks/gpu/device_build.sh >"$O/build.log" 2>&1; fi
echo "device_build.sh rc=$?"; grep -E "tests passed|tests failed|Failed|\*\*\*|BUILD HAD|error:" "$O/build.log" | head -40
grep -E "bf16|model .*max abs" "$O/build.log" | head -40
cmake --build "$B" --target bench_encoder -j"$(nproc)" >>"$O/build.log" 2>&1 || { echo "bench_encoder did not build"; tail -30 "$O/build.log"; exit 1; }
export LD_LIBRARY_PATH="$P/usr/lib/$A:$P/lib/$A:$P/usr/lib/$A/openblas-pthread:$P/usr/lib/$A/hdf5/serial:$P/usr/lib/$A/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for pkg in cudnn nccl; do d=$(python3 -c "import nvidia.$pkg as m; print(list(m.__path__)[0])" 2>/dev/null) && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d/lib"; done
export OPAL_PREFIX="$P/usr" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader

nvcc -O2 -o /tmp/gemm_peak benchmarks/gpu/gemm_peak.cu -lcublasLt -lcublas && /tmp/gemm_peak | tee "$O/gemm_peak.jsonl"
PEAK=$(python3 -c "import json,sys; print(max(json.loads(l)['tflops'] for l in open('$O/gemm_peak.jsonl') if '\"bf16\"' in l))")
echo "bf16 GEMM peak: $PEAK TFLOP/s"
cmake --build "$B" --target bench_attention -j"$(nproc)" >>"$O/build.log" 2>&1 &&
    "$B/benchmarks/bench_attention" 20 | tee "$O/attention.jsonl"
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader

python3 benchmarks/gpu/bench_forward.py write "$M" || exit 1
X="$B/benchmarks/bench_encoder"
J="$O/xrank.jsonl"; : >"$J"
xr() { # variant env... -- args
    local v=$1; shift; local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
    env "${envs[@]}" "$X" "$M" "$@" | sed "s/^{/{\"variant\": \"$v\", /" | tee -a "$J"
}
xr bf16 XR_=1 -- score 512 64 "$R" bf16 /tmp/xr_dump512
xr bf16 XR_=1 -- score 256 128 "$R" bf16
xr bf16 XR_=1 -- embed 512 64 "$R" bf16
xr bf16 XR_=1 -- embed 256 128 "$R" bf16
xr bf16-pack XR_CUDA_ACT_PACK=1 -- score 512 64 "$R" bf16 /tmp/xr_dump512pack
xr bf16-pack XR_CUDA_ACT_PACK=1 -- score 256 128 "$R" bf16
xr bf16-pack XR_CUDA_ACT_PACK=1 -- embed 512 64 "$R" bf16
xr bf16-pack XR_CUDA_ACT_PACK=1 -- embed 256 128 "$R" bf16
xr bf16-gemmattn XR_CUDA_ATTENTION=gemm -- score 512 64 "$R" bf16
xr bf16-gemmattn XR_CUDA_ATTENTION=gemm -- score 256 128 "$R" bf16
for t in flash64 flash128 flash128w8 flash256 flash64x3 flash128x3 flash128w8x2; do xr bf16-$t XR_CUDA_ATTENTION=$t -- score 512 64 "$R" bf16; done
if [ "${XR_SLOW:-1}" = 1 ]; then
    xr bf16-exactattn XR_CUDA_ATTENTION=exact -- score 512 64 2 bf16
    xr fp32 XR_=1 -- score 512 64 2 fp32
fi
python3 benchmarks/gpu/bench_forward.py check "$M" /tmp/xr_dump512,/tmp/xr_dump512pack 512 64
python3 benchmarks/gpu/bench_forward.py peer "$J" "$PEAK" | tee "$O/peer.jsonl"
