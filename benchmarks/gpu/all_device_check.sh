#!/usr/bin/env bash
# benchmarks/gpu/all_device_check.sh: every GPU check of issues 10-14 and 16 in ONE device call, in priority order,
# inside a time budget. Prepare HERE, in the checkout the session was started in (the one `run` sends), right
# before the call:
#   benchmarks/gpu/prepare_carry.sh        (.deps, .cache/gpu_carry: Debian deps, packed MiniLM, commit stamp;
#                                           checks that the tree + carry stay under run's 64 MiB)
# then:
#   run(command="benchmarks/gpu/all_device_check.sh", carry=[".deps", ".cache/gpu_carry"], timeout_s=600)
# Under $OUT it leaves summary.txt (what ran, passed, failed, timed out, was skipped for time; card, driver,
# commit; the numbers RESULTS.md wants) and logs.tgz (every log; refreshed after each step, so a killed call
# still returns the steps done). run returns at most 8 files from $OUT: nothing else is written there.
# Order: build once (device_build.sh, no ctest); correctness: the GPU ctest tests (every test_cuda_*, test_encoder's
# GPU pass, NCCL at one rank, the staged communicator at 2 ranks on one GPU, train_cuda, mine_synth_cuda) and their
# per-op / per-case lines; parity: 2-rank GPU training = 1 rank x accumulation 2 (issue 11), the MiniLM learning
# check GPU vs CPU (issue 10), mining and the search CPU vs GPU (issues 4, 16); benchmarks: NCCL and staged
# bandwidth (issue 14), xrank's train step fp32 / bf16 vs PyTorch for the bge-reranker-v2-m3 shape at T 512 / 256
# and MiniLM, with per-op times, and with the training attention on batched GEMMs (issues 10, 13), inference vs
# PyTorch bf16 (issue 13, bench_forward.sh XR_FAST=1; with the packed activation storage, XR_CUDA_ACT_PACK=1, beside
# the default), the inference attention alone and the flash kernel on fp32 vs bf16 storage (issue 13,
# bench_attention), last the GPU search and embedding (issue 16) in the time left, at least XR_MINE_FLOOR. After
# the test lines, act_pack: the packed inference storage's GPU test, condensed (act_pack_lines.sh); att_bf16: the
# training attention's bf16 operands against their reference, condensed (att_bf16_lines.sh); att_lse: the log-sum-exp
# training attention on batched GEMMs against the CPU's and the exact lse kernels, its scratch and times, condensed
# (att_lse_lines.sh); cublas_model: the real cuBLAS against the CPU emulator's model of it (cublas_model_lines.sh).
# Each step runs the part of train_ / mine_ / comm_device_check.sh named by XR_PARTS (XR_NO_BUILD=1: this
# script's build) under `timeout`, capped by its own limit and by the budget left; a step that needs more than is
# left is skipped, and the summary says so.
# Env: XR_BUDGET (s, default 540: fits timeout_s=600 with room to pack the logs; where `status` shows less device
# time left than start-up (a few minutes) + 600 s, lower timeout_s and start the command with XR_BUDGET=<timeout_s
# - 60>), XRDEPS, XR_BUILD, XR_JOBS (see device_build.sh),
# XR_WORK (logs, default /tmp/xr_all), XR_KNN_PASSAGES (the search benchmark's size, default 10,000,000),
# XR_MINE_FLOOR (s kept for mine_bench by the benchmark steps before it, default 90).
# Without a GPU (the rehearsal here) the GPU tests report skipped, the parity steps run until their first GPU
# command fails (their paths are exercised), and the benchmarks are skipped with a line saying so; with
# XR_FAKE_GPU=1 (device_env.sh) the parity steps' GPU runs run on the CPU, so their comparisons are exercised
# too (XR_LEARN_EPOCHS=1 shortens the learning check for that).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTD=${OUT:-/tmp/xr_all_out}
W=${XR_WORK:-/tmp/xr_all}
BUDGET=${XR_BUDGET:-540}
RESERVE=10   # seconds kept back for the last packing of the logs
start=$(date +%s)
mkdir -p "$OUTD" && rm -rf "$W" && mkdir -p "$W" || { echo "cannot make $OUTD / $W" >&2; exit 1; }
S="$OUTD/summary.txt"; : > "$S"
. benchmarks/gpu/device_env.sh   # P, B, X, MPIRUN, library paths, Open MPI settings, xr_have_gpu
declare -A count=([passed]=0 [failed]=0 [timed_out]=0 [skipped]=0)

say() { echo "$*" | tee -a "$S"; }
pack() { tar -czf "$OUTD/logs.tgz.part" -C "$W" . 2>/dev/null && mv -f "$OUTD/logs.tgz.part" "$OUTD/logs.tgz"; }
left() { echo $(( BUDGET - RESERVE - ($(date +%s) - start) )); }
skip() { say "$(printf '%-15s SKIPPED %s' "$1" "$2")"; count[skipped]=$(( count[skipped] + 1 )); }
# reap NAME: SIGKILL every process still carrying step NAME's XR_STEP_TAG in its environment. A step's `timeout`
# signals its own process group only, and the check scripts run their benchmarks under timeouts of their own (new
# process groups): without this, what they had running when the step's cap hit (a search, an XLM-R large step, 8
# mpirun ranks) would go on on the GPU for up to its own cap, beside the next step (seen here: `timeout 2 bash -c
# 'timeout 9 sleep 9'` leaves the inner pair running after the outer returns 124).
reap() {
    local p n=0
    for p in /proc/[0-9]*; do
        grep -qxzF "XR_STEP_TAG=$1.$$" "$p/environ" 2>/dev/null && kill -KILL "${p#/proc/}" 2>/dev/null &&
            n=$(( n + 1 ))
    done
    [ $n = 0 ] || say "$(printf '%-15s %d processes left running: killed' "$1" $n)"
}
# step NAME CAP MIN CMD...: CMD under `timeout` (CAP or the budget left, the smaller), its output in $W/NAME.log;
# skipped when less than MIN s is left. Prints one status line, then the log's lines that match $KEEP (if set).
# HOLD (s, default 0): time kept back for the steps after this one; the step sees the budget left less HOLD.
step() {
    local name=$1 cap=$2 min=$3 l t t0 r=0 what; shift 3
    l=$(( $(left) - ${HOLD:-0} ))
    if [ "$l" -lt "$min" ]; then
        skip "$name" "for time (needs $min s, $l s left$([ "${HOLD:-0}" = 0 ] ||
            echo " after $HOLD s kept for the steps after it"))"
        return 0
    fi
    t=$(( cap < l ? cap : l )); t0=$(date +%s)
    XR_STEP_TAG=$name.$$ timeout -k 5 "$t" "$@" > "$W/$name.log" 2>&1 || r=$?
    reap "$name"
    case $r in
    0) what=passed; count[passed]=$(( count[passed] + 1 )) ;;
    124 | 137) what="TIMED OUT (cap $t s)"; count[timed_out]=$(( count[timed_out] + 1 )) ;;
    *) what="FAILED (rc $r)"; count[failed]=$(( count[failed] + 1 )) ;;
    esac
    say "$(printf '%-15s %-20s %4d s   (log %s.log)' "$name" "$what" $(( $(date +%s) - t0 )) "$name")"
    # the matching lines, up to a check script's own closing "== summary" (which repeats them)
    [ -n "${KEEP:-}" ] && sed -n '/^== summary$/q;p' "$W/$name.log" | grep -E "$KEEP" | head -${KEEP_LINES:-40} |
        sed 's/^/    /' | tee -a "$S"
    pack
    return $r
}
# a part of one of the three check scripts, on this script's build, its own files under $W/NAME/
part() { # NAME CAP MIN SCRIPT PARTS
    mkdir -p "$W/$1"
    step "$1" "$2" "$3" env XR_NO_BUILD=1 XR_PARTS="$5" OUT="$W/$1" "benchmarks/gpu/$4_device_check.sh" "$W/$1"
}

# ---- what this ran on ----
say "all_device_check: $(date -u '+%F %T') UTC, budget $BUDGET s"
card=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null) ||
    card="none (nvidia-smi: no GPU)"
say "card: $card (name, driver, memory, compute capability)"
say "toolkit: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'no nvcc'); torch: $(python3 -c \
'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo none); \
host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
if git rev-parse --short HEAD > /dev/null 2>&1; then
    commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
else
    commit="$(cat .cache/gpu_carry/commit.txt 2>/dev/null || echo 'unknown (no .git, no .cache/gpu_carry/commit.txt)')"
fi
say "commit: $commit"

# ---- 1. build, once ----
# the benchmarks are not in the default target: built here too, so no step builds while the clock runs for it
KEEP='^build: |mpirun -np 2|BUILD HAD ERRORS|error:|^(CUDNN|NCCL)_LIB' \
    step build "${XR_BUILD_CAP:-300}" 0 sh -c "XR_CTEST=0 benchmarks/gpu/device_build.sh &&
        cmake --build '$B' -j$(nproc) --target bench_comm bench_train_step bench_knn_gpu bench_encoder gemm_peak \
        bench_attention"
[ -x "$X" ] || { say "no xrank binary in $B: stopping"; pack; exit 1; }
GPU=1; xr_have_gpu || GPU=0
say "xrank: $("$X" version 2>&1 | head -1)"
[ "${XR_FAKE_GPU:-0}" = 1 ] && say "XR_FAKE_GPU=1: a rehearsal, the parity steps' GPU runs ran on the CPU"
[ $GPU = 1 ] || say "NO GPU visible to xrank: the GPU tests report skipped, the benchmarks are skipped\
$([ "${XR_FAKE_GPU:-0}" = 1 ] || echo ", the parity steps' GPU commands fail")"

# ---- 2. correctness: the GPU tests (ctest keeps their whole output in LastTest.log; the check scripts read it) ----
GPU_TESTS='^(test_cuda_.*|test_encoder|test_comm_nccl1|comm_staged_cuda_2|train_cuda|train_cuda_bf16|mine_synth_cuda)$'
KEEP=' Test +#|tests passed|tests failed' KEEP_LINES=30 \
    step ctest_gpu "${XR_CTEST_CAP:-240}" 60 sh -c "cd '$B' && ctest --output-on-failure -j${XR_TEST_JOBS:-4} \
        --timeout 200 -R '$GPU_TESTS'"
# on a GPU machine a skipped GPU test is a failure (a build without the CUDA backend skips them all)
nskip=$(grep -c 'Skipped' "$W/ctest_gpu.log" 2>/dev/null) || nskip=0
if [ $GPU = 1 ] && [ "$nskip" -gt 0 ]; then
    say "ctest_gpu: $nskip GPU tests SKIPPED on a GPU machine: counted as failed (CUDA backend off? see build.log)"
    count[failed]=$(( count[failed] + 1 ))
fi
# about 50 lines since train_cuda_bf16 and the 50-step curves (the default keeps 40), about 65 with the GEMM
# attention's (test_cuda_att_gemm and the two *_attgemm step tests)
KEEP_LINES=84 KEEP='.' part lines_train 30 5 train "tests bf16"
KEEP='.' part lines_mine 30 5 mine tests
# the training attention's bf16 operands (issue 13, ops_list.h "training precision"): test_cuda_bf16_train and its
# _attgemm rerun against the contract's reference, one line each, and the GEMM path's bf16 time at the XLM-R large
# layer (reads ctest_gpu's log: about 1 s)
KEEP='.' KEEP_LINES=10 step att_bf16 20 5 benchmarks/gpu/att_bf16_lines.sh
# the log-sum-exp training attention on batched GEMMs (XR_CUDA_TRAIN_ATTENTION=gemm, issues 10 and 13):
# test_cuda_att_gemm's lse comparisons condensed to one line each, the scratch it allocated against the memory plan's
# figure, the backward's recomputed scores bit-equal to the forward's, and the XLM-R large layer's lse times (reads
# ctest_gpu's log: about 1 s)
KEEP='.' KEEP_LINES=17 step att_lse 20 5 benchmarks/gpu/att_lse_lines.sh
# the packed (2-byte bf16) inference storage (ops_act_pack, XR_CUDA_ACT_PACK=1, issue 13): test_cuda_act_pack's
# failed checks, per-model and weights-copy lines, then the per-op ones, ~57 lines passing (reads ctest_gpu's log:
# about 1 s); forward_bench times it against torch
KEEP='.' KEEP_LINES=64 step act_pack 20 5 benchmarks/gpu/act_pack_lines.sh
# packed training storage (ops_act_region, XR_CUDA_TRAIN_PACK=1, issue 13): test_cuda_train_pack's ops and model steps
# with packed activations against unpacked (the same bits), ~17 lines passing (reads ctest_gpu's log: about 1 s)
KEEP='.' KEEP_LINES=30 step train_pack 20 5 benchmarks/gpu/train_pack_lines.sh
# the CPU emulator's cuBLAS / cuBLASLt model (tests/cuemu/cublas_emu.cpp) held to the real library:
# test_cuda_cublas_model's failed checks, the operand rounding each FAST compute type / the TF32 math mode fits here,
# the real answers where the emulator refuses, ~16 lines passing (reads ctest_gpu's log: about 1 s)
KEEP='.' KEEP_LINES=28 step cublas_model 20 5 benchmarks/gpu/cublas_model_lines.sh

# ---- 3. parity: the same results on the GPU as on the CPU, and learning ----
KEEP='ok|FAIL|PASS|max|differ' part comm_train_eq 90 30 comm train_eq
# the GPU fp32 and bf16 runs (about 10 s on the H200); the CPU half (203 s at 42e9433, passed) only with XR_LEARN_CPU=1
XR_LEARN_CPU=${XR_LEARN_CPU:-0} KEEP='learning|speed|memory|failed|skipped' part train_learn 120 60 train learn
KEEP='slots|failed|missing' part mine_e2e 90 30 mine e2e
KEEP='man corpus|FAILED|failed' part mine_search 120 40 mine search

# ---- 4. benchmarks ----
# Order: what decides the next defaults first. train_bench (issues 10, 13: the GEMM training attention's speed),
# forward_bench (XR_CUDA_ACT_PACK's default), attention_bench (the default flash tile), then mine_bench (issue 16),
# which sizes its runs to the time left (XR_MINE_BENCH_BUDGET). Their caps (200 + 90 + 60 + 230 s) add up to more
# than the budget leaves after parts 1-3, so each step before mine_bench runs within the budget left less what the
# steps after it keep (HOLD): forward_bench its expected 75 s, attention_bench its needs (20 s), mine_bench its
# floor MINE_FLOOR (90 s: the 10M search, k 1000 / 100, bf16 and fp32 in one bench_knn_gpu process under its full
# 75 s cap, + the part's 10 s margin and 4 s grace; the second call's search seconds were 13.5 s in all of it, with
# ~4 s of data, ~12 s of uploads and the CPU check of 32 queries per k). The holds bind only when the steps before
# run slow: expected, train_bench ~110-180 s, forward_bench ~65-75 s, attention_bench ~15 s (RESULTS.md).
if [ $GPU = 1 ]; then
    MINE_FLOOR=${XR_MINE_FLOOR:-90}
    KEEP='"bench": "comm"|did not build|rror' HOLD=$(( 90 + 75 + 20 + MINE_FLOOR )) part comm_bench 60 20 comm bench
    # part large (the bge-reranker-v2-m3 shape, most important) gets 150 s of the step's 200, or 3/4 of a shorter
    # step, so MiniLM's runs after it still fit
    hold=$(( 75 + 20 + MINE_FLOOR ))
    l=$(( $(left) - hold )); [ "$l" -gt 200 ] && l=200
    XR_LARGE_BUDGET=$(( l >= 200 ? 150 : l * 3 / 4 )) KEEP='.' KEEP_LINES=80 HOLD=$hold part train_bench 200 90 \
        train "large bench peer"
    mkdir -p "$W/forward_bench"
    KEEP='"compare"|"check"|peak|failed|rror' KEEP_LINES=14 HOLD=$(( 20 + MINE_FLOOR )) step forward_bench 90 40 \
        env XR_FAST=1 OUT="$W/forward_bench" benchmarks/gpu/bench_forward.sh "$W/forward_bench"
    # the inference attention alone (issue 13, bench_attention.cu, ~15 s): the op per XR_CUDA_ATTENTION path (log
    # only), then the flash kernel per tile (7, 3 register-capped) on fp32 vs bf16 storage: times and bf16 outputs
    # differing from the fp32 kernel's copy (0 expected), one line per (shape, tile)
    KEEP='"flash_kernel"|rror' KEEP_LINES=24 HOLD=$MINE_FLOOR step attention_bench 60 20 \
        "$B/benchmarks/bench_attention" 20
    # search, MiniLM embedding, the 8-rank merge (60 s at most), the XLM-R large embedding (70 s at most, 60 more
    # when part large wrote no model): their own caps add up to ~310-370 s, more than the step's 230, so the part
    # runs within the step's time less 10 s (XR_MINE_BENCH_BUDGET): each run gets its cap or what is left, and what
    # no longer fits is skipped by name ("skipped for time") after the lines of the runs before it, instead of the
    # step's timeout cutting the part off mid-run; the search runs first
    l=$(left); [ "$l" -gt 230 ] && l=230
    XR_MINE_BENCH_BUDGET=$(( l - 10 )) KEEP='"bench"|"kind"|failed|ran out|elapsed after|skipped|pooling|rror' KEEP_LINES=52 \
        part mine_bench 230 "$MINE_FLOOR" mine bench
else
    for s in comm_bench train_bench forward_bench attention_bench mine_bench; do
        skip $s "no GPU: a benchmark needs one"
    done
fi

say "== ${count[passed]} passed, ${count[failed]} failed, ${count[timed_out]} timed out, ${count[skipped]} skipped; \
elapsed $(( $(date +%s) - start )) s of the $BUDGET s budget"
pack
[ $(( count[failed] + count[timed_out] )) = 0 ]
