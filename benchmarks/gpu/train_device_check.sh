#!/usr/bin/env bash
# benchmarks/gpu/train_device_check.sh: the GPU-training check of issue 10, for a bare GPU machine. One device call
# runs it with the mining and communicator checks: all_device_check.sh (see its header). Alone, prepare HERE with
# benchmarks/gpu/prepare_carry.sh (.deps ~24 MiB, .cache/gpu_carry: all-MiniLM-L6-v2 in fp16, ~20 MiB), then
# run(command="benchmarks/gpu/train_device_check.sh", carry=[".deps", ".cache/gpu_carry"], timeout_s=480).
# 1. device_build.sh: build, and ctest of the CUDA op tests (test_cuda_ops, test_cuda_train_ops: every training op vs
#    the CPU; test_cuda_fused_ops: the fused dropout + residual + LayerNorm forward / backward and bias + GELU
#    backward vs the CPU's unfused sequences, and their time against the unfused ops on the GPU), the whole step (test_cuda_train_step: HF fixture gradients on the GPU, 10 AdamW steps vs the CPU
#    1e-5, bit-identical reruns and checkpointing), test_cuda_attention_lse (the log-sum-exp training attention
#    kernels vs the CPU's, NaN-poisoned, bit-identical reruns; test_attention_lse: the CPU ops vs the saved-probability ops), the CLI on the GPU (train_cuda: GPU = CPU, 2 ranks on one GPU
#    staged = 1 x accumulation 2, exact resume; train_cuda_bf16: the CLI's default bf16 on the GPU) and the CPU training tests as a control.
#    test_cuda_att_gemm: the saved-probability attention on batched GEMMs (XR_CUDA_TRAIN_ATTENTION=gemm) vs the CPU and
#    the exact kernels, and both paths' time at the XLM-R large layer; test_cuda_train_step_attgemm /
#    test_cuda_bf16_train_attgemm: those step tests again with it (their lines: part tests).
# 2. The learning check: the demo's recipe shrunk (MiniLM + a new head, 40 man pages, listwise G 8, 5 epochs,
#    global batch 4 groups, max length 96), trained on the GPU in fp32 and in bf16 (the GPU's default; 1 rank x
#    accumulation 2) and, with XR_LEARN_CPU=1 (the default here; all_device_check.sh sets 0: it passed at 42e9433 and
#    took 203 s), on 2 CPU ranks (the same global batches), all evaluated on the GPU in fp32: reranked NDCG@10 of the
#    training queries (the 40-page fixture has no dev split), bf16 within 1 point of fp32 (issue 13), GPU fp32
#    within 0.5 point of the CPU (issue 10).
# 3. Speed baseline (fp32): xrank's training pairs/s in (2) against PyTorch's fp32 CrossEncoder step
#    (benchmarks/peer_gpu.py train-fp32: MiniLM at the recipe's micro-batch, and the bge-reranker-v2-m3 shape at
#    length 256); skipped cleanly when the machine's Python has no torch / transformers.
# 4. bf16 (issue 13): test_cuda_bf16_train (runs in (1) too): the weights' bf16 working copy and its once-a-step
#    cast, every op of the training step with bf16 activation storage (linear_gelu, the bf16 backward GEMMs
#    included) and the whole bf16 step (one step, 6 AdamW steps, reruns, checkpointing) against the CPU emulation
#    of test_bf16_train; xrank's own step in fp32 and bf16 (bench_train_step, MiniLM + head, T 96, 16 pairs, at
#    most 90 s each: ms a step, pairs/s, peak memory, activation casts a step); then PyTorch's autocast bf16 step
#    (peer_gpu.py train-bf16, at most 80 s): the number xrank's bf16 path is to beat. `train --precision bf16`
#    (the GPU default since test_cuda_bf16_train passed at 42e9433) is in the learning check (2).
# One summary at the end; logs under $OUT. Env: XR_NO_BUILD=1 uses the build in $XR_BUILD (made by device_build.sh)
# and reads the tests' output from its last ctest; XR_PARTS (default all) picks parts by name: tests (1), learn (2),
# peer (3), bf16 (4: the bf16 test's lines), bench (4: bench_train_step, its per-op times and the autocast peer),
# large (5: the bge-reranker-v2-m3 shape, xrank vs PyTorch at T 512 / 256, and xrank with the GEMM attention;
# XR_LARGE_BUDGET s, default 150).
# all_device_check.sh calls them one at a time.
set -uo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
OUTD=${OUT:-/tmp/xr_train_gpu}; mkdir -p "$OUTD"
. benchmarks/gpu/device_env.sh   # P, B, X, MPIRUN, library paths, Open MPI settings, xr_part, xr_have_gpu
start=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUTD/gpu.txt" 2>/dev/null ||
    echo "no nvidia-smi" > "$OUTD/gpu.txt"
git rev-parse --short HEAD > "$OUTD/commit.txt" 2>/dev/null || echo unknown > "$OUTD/commit.txt"
rc=0
note() { echo "$*" | tee -a "$OUTD/summary.txt"; }
: > "$OUTD/summary.txt"

# ---- 1. build + GPU tests ----
if [ "${XR_NO_BUILD:-0}" != 1 ]; then
    benchmarks/gpu/device_build.sh -R "test_cuda_|train_cuda|test_grad_model|test_memplan|test_optim|test_trainer|train_memory|test_bf16_train|test_fused_ops|test_attention_lse" \
        > "$OUTD/ctest.log" 2>&1 || rc=1
    note "build+ctest: $(grep -E 'tests passed|tests failed' "$OUTD/ctest.log" | tail -1) ($(( $(date +%s) - start )) s)"
    grep -E "\*\*\*(Failed|Timeout)|Not Run|\(Skipped\)" "$OUTD/ctest.log" | head -20
fi
[ -x "$X" ] || { note "no xrank binary in $B: stopping"; cat "$OUTD/summary.txt"; exit 1; }
# the per-op and whole-step lines, for RESULTS.md, from the ctest run's log (it keeps a passing test's output too)
if xr_part tests; then
    for t in train_ops train_step fused_ops attention_lse att_gemm; do
        xr_test_output test_cuda_$t > "$OUTD/$t.txt" || { rc=1; note "test_cuda_$t: not in the last ctest run"; }
    done
    grep -E "checks|failed|differ|SKIPPED" "$OUTD/attention_lse.txt" | head -6 | tee -a "$OUTD/summary.txt"
    grep -E "^time|checks|failed|differ|SKIPPED" "$OUTD/fused_ops.txt" | head -12 | tee -a "$OUTD/summary.txt"
    grep -E "GPU vs CPU|GPU logits|failed|differ|SKIPPED" "$OUTD/train_step.txt" | head -12 | tee -a "$OUTD/summary.txt"
    # the training attention on batched GEMMs (XR_CUDA_TRAIN_ATTENTION=gemm): its op test (times of both paths at the
    # XLM-R large layer) and the two training-step tests rerun with it
    grep -E "^attention (exact|gemm)|bf16 context|checks|failed|differ|SKIPPED" "$OUTD/att_gemm.txt" | head -8 |
        tee -a "$OUTD/summary.txt"
    for t in test_cuda_train_step_attgemm test_cuda_bf16_train_attgemm; do
        xr_test_output $t > "$OUTD/$t.txt" || { rc=1; note "$t: not in the last ctest run"; }
        grep -E "checks|failed|SKIPPED" "$OUTD/$t.txt" | tail -3 | sed "s/^/$t: /" | tee -a "$OUTD/summary.txt"
    done
    xr_test_output train_cuda | grep -E "^ok:|FAIL|skipped" | head -10 | tee -a "$OUTD/summary.txt"
    xr_test_output train_cuda_bf16 | grep -E "^ok:|FAIL|skipped|dtypes" | head -10 | tee -a "$OUTD/summary.txt"
fi

# ---- 2. learning check: GPU fp32 and GPU bf16 (1 rank x accumulation 2), and (XR_LEARN_CPU=1) 2 CPU ranks ----
L=${XR_LEARN_DIR:-/tmp/xr_learn}   # its own directory per rehearsal where several run on one machine
# the carried MiniLM, unpacked once (parts 2 and 4 use it)
minilm() { [ -d "$L/minilm" ] || { mkdir -p "$L" && tar -xJf "$SRC/.cache/gpu_carry/minilm40.tar.xz" -C "$L"; }; }
if ! xr_part learn; then :
elif [ ! -f .cache/gpu_carry/minilm40.tar.xz ]; then
    note "learning check skipped: .cache/gpu_carry/minilm40.tar.xz not carried (pack_minilm.py, see the header)"
elif ! minilm; then
    rc=1; note "learning check: unpacking .cache/gpu_carry/minilm40.tar.xz failed"
else
    M="$L/minilm"; cd "$L"; rm -rf ds train.h5 cand.h5 run_cpu run_gpu run_bf16 eval_*.json cpu.err gpu.err bf16.err
    R=(train --model "$M" --data ds --groups train.h5 --loss listwise --train-group-size 8 --per-device-train-batch-size 2
       --num-train-epochs "${XR_LEARN_EPOCHS:-5}" --learning-rate 1e-4 --max-length 96 --logging-steps 5)
    t0=$(date +%s); ran=0; runs="gpu bf16"
    # the GPU halves first: when they cannot run (no GPU, a failing mine), the CPU half would prove nothing.
    # run_gpu: --precision fp32 (the GPU-vs-CPU comparison); run_bf16: the GPU's default precision, bf16 (issue 13)
    if "$X" tokenize --model "$M" --input "$SRC/tests/fixtures/train/learn_beir" --split train --output ds --quiet &&
       "$X" mine --model "$M" --input ds --output train.h5 --num-negatives 7 --no-cache --quiet --device cuda \
           --precision fp32 &&
       "$X" mine --model "$M" --input ds --output cand.h5 --num-negatives 15 --no-cache --quiet --device cuda \
           --precision fp32 &&
       "$X" "${R[@]}" --device cuda --precision fp32 --gradient-accumulation-steps 2 --output run_gpu 2> gpu.err &&
       { t1=$(date +%s); "$X" "${R[@]}" --device cuda --gradient-accumulation-steps 2 --output run_bf16 2> bf16.err; }
    then
        t2=$(date +%s); t3=$t2
        if [ "${XR_LEARN_CPU:-1}" = 1 ]; then
            "$MPIRUN" -np 2 --oversubscribe "$X" "${R[@]}" --threads $(( $(nproc) / 2 )) --output run_cpu 2> cpu.err ||
                rc=1
            t3=$(date +%s); runs="cpu $runs"
        fi
        # every model evaluated the same way: on the GPU in fp32
        for r in $runs; do
            "$X" eval --model run_$r/final --data ds --groups cand.h5 --json --output eval_$r.json --quiet --device cuda \
                --precision fp32 > /dev/null || rc=1
        done
        ran=1
    else
        rc=1; note "learning check: tokenize, the GPU mine or a GPU training failed: CPU half not run (gpu.err, bf16.err)"
    fi
    cp cpu.err gpu.err bf16.err "$OUTD/" 2>/dev/null
    [ $ran = 1 ] && python3 - "$OUTD" "${XR_FAKE_GPU:-0}" <<'PY' || rc=1
import json, os, re, sys
o, fake = sys.argv[1], sys.argv[2] == "1"
runs = [r for r in ("cpu", "gpu", "bf16") if os.path.exists(f"eval_{r}.json")]
e = {r: json.load(open(f"eval_{r}.json")) for r in runs}
nd = {r: e[r]["reranked"]["ndcg@10"] for r in e}
base = e["gpu"]["base"]["ndcg@10"]
def rate(f):
    m = re.search(r"([0-9.]+) pairs/s, ([0-9]+) tokens/s", open(f).read())
    return (float(m.group(1)), int(m.group(2))) if m else (0.0, 0)
def loss(d):
    log = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if '"train"' in l]
    return f"{log[0]['loss']:.3f}->{log[-1]['loss']:.3f}"
lines, ok = [], True
# the bf16 run really trained in bf16 (its banner; a fake GPU is the CPU, which trains in fp32)
in_bf16 = "(bf16, fp32 master weights)" in open("bf16.err").read()
if not in_bf16 and not fake:
    ok = False
    lines.append("learning: FAIL: the bf16 run's banner does not say bf16 (bf16.err)")
d16 = abs(nd["bf16"] - nd["gpu"])
ok16 = d16 <= 0.01
ok = ok and ok16
lines.append(f"learning bf16: NDCG@10 (training queries) retriever {base:.4f}, GPU fp32 {nd['gpu']:.4f}, GPU bf16 "
             f"{nd['bf16']:.4f}: diff {100 * d16:.2f} points ({'ok' if ok16 else 'FAIL'}, <= 1); loss fp32 "
             f"{loss('run_gpu')} bf16 {loss('run_bf16')}{'' if in_bf16 else ' (fake GPU: the bf16 run was fp32)'}")
if "cpu" in nd:
    dc = abs(nd["cpu"] - nd["gpu"])
    okc = dc <= 0.005
    ok = ok and okc
    lines.append(f"learning: NDCG@10 (training queries) retriever {base:.4f}, trained on CPU {nd['cpu']:.4f}, on GPU "
                 f"{nd['gpu']:.4f}: diff {100 * dc:.2f} points ({'ok' if okc else 'FAIL'}, <= 0.5); loss cpu "
                 f"{loss('run_cpu')} gpu {loss('run_gpu')}")
else:
    lines.append("learning: CPU half not run (XR_LEARN_CPU=0; GPU fp32 = CPU passed at 42e9433: 0.00 points)")
pg, pb = rate("gpu.err"), rate("bf16.err")
speed = (f"speed demo recipe: xrank GPU fp32 {pg[0]:.1f} pairs/s ({pg[1]} tokens/s), GPU bf16 {pb[0]:.1f} pairs/s "
         f"({pb[1]} tokens/s)")
if "cpu" in nd:
    speed += f", xrank CPU 2 ranks {rate('cpu.err')[0]:.1f} pairs/s"
lines.append(speed)
# the step's split (metrics.jsonl, the trainer's windows after the first: warm-up): how much of a GPU step is the
# host's batch assembly (data_s), the bound on what uploading micro-batch k+1 during k's forward could save
# (docs/DESIGN.md, "Uploads do not stall the device")
def split(d):
    log = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if '"train"' in l and '"data_s"' in l][1:]
    w = sum(r["steps_logged"] for r in log)
    if not w:
        return "no windows"
    st, da = (sum(r[k] * r["steps_logged"] for r in log) / w for k in ("step_s", "data_s"))
    return f"step {1e3 * st:.2f} ms, data {1e3 * da:.3f} ms ({100 * da / st if st > 0 else 0:.1f}%)"
try:  # a report line, not a check: never fails the learning check
    lines.append(f"speed split demo recipe (batch assembly): GPU fp32 {split('run_gpu')}; GPU bf16 {split('run_bf16')}")
except (OSError, ValueError, KeyError) as ex:
    lines.append(f"speed split demo recipe: not read ({ex})")
open(f"{o}/learn.txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if ok else 1)
PY
    if [ $ran = 1 ]; then
        cat "$OUTD/learn.txt" >> "$OUTD/summary.txt" 2>/dev/null
        note "learning check: gpu mines + fp32 train $((t1 - t0)) s, bf16 train $((t2 - t1)) s, cpu train $((t3 - t2)) s"
        for r in gpu bf16; do grep -E "memory" $r.err 2>/dev/null | head -3 | sed "s/^/  $r: /" | tee -a "$OUTD/summary.txt"; done
    fi
    cd "$SRC"
fi

# ---- 5. the bge-reranker-v2-m3 shape (issues 10, 13): xrank's step against PyTorch's, same T, B, GPU, call ----
# A random XLM-R large model is written here (peer_gpu.py train-list write=: never carried, 2.1 GiB), then, most
# important first, each under its own timeout and all within XR_LARGE_BUDGET s (default 150; a run that no longer
# fits is skipped, saying so): torch autocast bf16 T 512 B 16 (in the writer's process), the bf16 GEMM peak
# (gemm_peak.cu, cuBLASLt), then xrank with the training attention on batched GEMMs (XR_CUDA_TRAIN_ATTENTION=gemm,
# rows "<precision> gemm"): bf16 T 512 B 16 and its per-op times (XR_CUDA_OP_TIMES=1, 3 steps), the same with the
# saved activations packed (XR_CUDA_TRAIN_PACK=1, row "bf16 pack"), fp32 T 512 / 256
# B 16, bf16 T 256 B 16; torch at those shapes plus the fp32 GEMM peak (one process); xrank gemm bf16 T 512 B 32
# (torch's is in that process too); last the exact kernels (bf16 T 512 B 16, fp32 T 256 B 16, op times), which
# the call at c6c6597 measured and which the budget may skip.
# Lines: train_bench_summary.py large / ops. The --attention-lse run (row "bf16 lse": 1.6x the exact saved path's
# attention, measured at c6c6597) gave its place to the gemm runs; bench_train_step still takes `lse`.
if xr_part large; then
    G=/tmp/xr_bge_random; LJ="$OUTD/large.jsonl"; : > "$LJ"; lstart=$(date +%s)
    lleft() { echo $(( ${XR_LARGE_BUDGET:-150} - ($(date +%s) - lstart) )); }
    # sub NAME CAP CMD...: CMD under `timeout` (CAP or what is left, the smaller), stdout to large.jsonl, stderr to
    # large.err; skipped when under 10 s is left
    sub() {
        local name=$1 cap=$2 l r=0 t0; shift 2; l=$(lleft)
        if [ "$l" -lt 10 ]; then note "large: $name skipped for time ($l s left of XR_LARGE_BUDGET)"; return 1; fi
        t0=$(date +%s); echo "== $name" >> "$OUTD/large.err"
        timeout -k 5 $(( cap < l ? cap : l )) "$@" >> "$LJ" 2>> "$OUTD/large.err" || r=$?
        local what=ok; [ $r = 0 ] || what="FAILED (rc $r$([ $r = 124 ] && echo ', timed out'))"
        note "large: $name $what $(( $(date +%s) - t0 )) s"
        [ $r = 0 ] || rc=1
        return $r
    }
    # xrank's step on the written model, its lines tagged with the model (a script: `timeout` runs no functions)
    XS="$OUTD/xs.sh"
    printf '#!/usr/bin/env bash\nset -o pipefail\n%q %q "$@" | sed %q\n' "$B/benchmarks/bench_train_step" "$G" \
        's/^{/{"model": "xlmr-large", /' > "$XS" && chmod +x "$XS"
    if ! xr_have_gpu; then
        note "large: skipped: no GPU visible to xrank"
    elif ! cmake --build "$B" --target bench_train_step gemm_peak > "$OUTD/large_build.log" 2>&1; then
        rc=1; note "large: bench_train_step / gemm_peak did not build (large_build.log)"
    else
        sub "write the model + torch amp-bf16 T 512 B 16" 75 \
            python3 benchmarks/peer_gpu.py train-list 5 "write=$G" amp-bf16:512:16
        if [ -f "$G/model.safetensors" ]; then
            sub "gemm_peak.cu" 20 "$B/benchmarks/gemm_peak" 10
            # the training attention on batched GEMMs first (XR_CUDA_TRAIN_ATTENTION=gemm, core/att_gemm.h: the
            # default once this call passes), then torch's rows, then the exact kernels (measured at c6c6597)
            GM=(env XR_CUDA_TRAIN_ATTENTION=gemm "$XS")
            sub "xrank bf16 T 512 B 16 attention gemm" 30 "${GM[@]}" 512 16 5 bf16
            sub "xrank bf16 T 512 B 16 attention gemm op times" 30 env XR_CUDA_OP_TIMES=1 "${GM[@]}" 512 16 3 bf16
            # the saved activations in 2 bytes (XR_CUDA_TRAIN_PACK=1, issue 13; row "bf16 pack": peak and casts against
            # the row above)
            sub "xrank bf16 T 512 B 16 attention gemm, packed activations" 30 env XR_CUDA_TRAIN_PACK=1 "${GM[@]}" 512 \
                16 5 bf16
            sub "xrank fp32 T 512 B 16 attention gemm" 30 "${GM[@]}" 512 16 5 fp32
            sub "xrank fp32 T 256 B 16 attention gemm" 30 "${GM[@]}" 256 16 5 fp32
            sub "xrank bf16 T 256 B 16 attention gemm" 30 "${GM[@]}" 256 16 5 bf16
            sub "torch fp32 peak, amp-bf16 T 256 B 16, fp32 T 512 / 256 B 16, amp-bf16 T 512 B 32" 90 \
                python3 benchmarks/peer_gpu.py train-list 5 peak amp-bf16:256:16 fp32:512:16 fp32:256:16 amp-bf16:512:32
            sub "xrank bf16 T 512 B 32 attention gemm" 40 "${GM[@]}" 512 32 5 bf16
            sub "xrank bf16 T 512 B 16" 40 "$XS" 512 16 5 bf16
            sub "xrank fp32 T 256 B 16" 30 "$XS" 256 16 5 fp32
            sub "xrank bf16 T 512 B 16 op times" 40 env XR_CUDA_OP_TIMES=1 "$XS" 512 16 3 bf16
        else
            rc=1; note "large: no model written to $G (large.err): no xrank run"
        fi
        python3 benchmarks/gpu/train_bench_summary.py large "$LJ" | tee -a "$OUTD/summary.txt"
        python3 benchmarks/gpu/train_bench_summary.py ops "$LJ" xlmr-large 14 | tee -a "$OUTD/summary.txt"
        python3 benchmarks/gpu/train_bench_summary.py ops "$LJ" "xlmr-large attention gemm" 10 gemm |
            tee -a "$OUTD/summary.txt"
    fi
fi

# ---- 3. PyTorch fp32 peer (the speed baseline; the xlmr-large shape is part large's when it ran) ----
if xr_part peer; then
    timeout 120 python3 benchmarks/peer_gpu.py train-fp32 96 16 $(xr_part large && echo minilm) \
        > "$OUTD/peer_fp32.jsonl" 2> "$OUTD/peer.err" || true
    tee -a "$OUTD/summary.txt" < "$OUTD/peer_fp32.jsonl"
fi

# ---- 4. bf16 (issue 13): the pieces on the GPU against the CPU emulation, and PyTorch's autocast step to beat ----
if xr_part bf16; then
    xr_test_output test_cuda_bf16_train > "$OUTD/bf16.txt" || { rc=1; note "test_cuda_bf16_train: not in the last ctest run"; }
    grep -E "checks|failed|SKIPPED|not bf16|one bf16 step|bf16 AdamW|bf16-mode|measured peak|producer's|steps on cuda|Test (Passed|Failed)" \
        "$OUTD/bf16.txt" | head -26 | tee -a "$OUTD/summary.txt"
fi
# xrank's own step, fp32 and bf16, through the library (bench_train_step; the CLI's bf16 training is in the learning
# check): MiniLM + a new head at the peer's shape (T 96, 16 pairs), when the model was carried
if ! xr_part bench; then :
elif [ -f .cache/gpu_carry/minilm40.tar.xz ] && minilm &&
     cmake --build "$B" --target bench_train_step > "$OUTD/bench_build.log" 2>&1; then
    : > "$OUTD/train_step_speed.jsonl"
    for p in fp32 bf16; do
        timeout 90 "$B/benchmarks/bench_train_step" "$L/minilm" 96 16 20 $p >> "$OUTD/train_step_speed.jsonl" \
            2>> "$OUTD/bench_build.log" || { rc=1; note "bench_train_step $p failed (bench_build.log)"; }
    done
    tee -a "$OUTD/summary.txt" < "$OUTD/train_step_speed.jsonl"
    # where MiniLM's bf16 step goes (XR_CUDA_OP_TIMES=1: CUDA events around every op; 10 timed steps)
    XR_CUDA_OP_TIMES=1 timeout 30 "$B/benchmarks/bench_train_step" "$L/minilm" 96 16 10 bf16 \
        > "$OUTD/op_times_minilm.jsonl" \
        2>> "$OUTD/bench_build.log" || { rc=1; note "bench_train_step bf16 with op times failed (bench_build.log)"; }
    python3 benchmarks/gpu/train_bench_summary.py ops "$OUTD/op_times_minilm.jsonl" minilm 10 |
        tee -a "$OUTD/summary.txt"
else
    note "bench_train_step skipped: no carried MiniLM, or its build failed (bench_build.log)"
fi
if xr_part bench; then
    note "xrank bf16 training step: built (activations stored as bf16 values in fp32 words, bf16 GEMM operands); \
train --precision bf16 is the GPU default (learning check: bf16 vs fp32); PyTorch autocast bf16 (the target):"
    timeout 80 python3 benchmarks/peer_gpu.py train-bf16 96 16 $(xr_part large && echo minilm) \
        > "$OUTD/peer_bf16.jsonl" 2>> "$OUTD/peer.err" || true
    tee -a "$OUTD/summary.txt" < "$OUTD/peer_bf16.jsonl"
fi

echo "== summary"
echo "gpu: $(cat "$OUTD/gpu.txt")  commit: $(cat "$OUTD/commit.txt")  date: $(date -u +%F)"
cat "$OUTD/summary.txt"
echo "elapsed $(( $(date +%s) - start )) s, rc $rc"
exit $rc
