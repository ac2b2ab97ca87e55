#!/usr/bin/env bash
# benchmarks/gpu/mine_device_check.sh: the GPU check of mining (issues 4 and 16), for a bare GPU machine: call
# `run` with carry [".deps"] (benchmarks/gpu/fetch_deps.sh first) and timeout_s 420; about 6 minutes. One device call
# runs it with the training and communicator checks: all_device_check.sh (see its header).
#  1. device_build.sh, running the mining tests (test_mine, the mine_* CLI tests, test_select, test_knn*),
#     test_cuda_knn: the GPU search against the CPU search (dims 384/768/1024, k 1/100/5000 and 10,000, several
#     tiles, streamed under a memory bound, fp32 and bf16 screening, 2 shards merged): identical indices and score
#     bits; and mine_synth_cuda: `xrank mine` on a 30,000-passage synthetic corpus, the GPU search (resident in
#     tiles of 4,096, streamed under --search-memory 1, 2 ranks sharing the GPU; fp32 and bf16 screening) against
#     the CPU search over the same cached embeddings: byte-identical group files.
#  2. Mining end to end with the tiny test bi-encoder and cross-encoder (BEIR fixture): CPU vs --device cuda
#     (fp32, bf16, 2 ranks on one GPU), negative slots that agree (embeddings differ by the GPU's rounding).
#  3. The search alone, end to end: the man-page corpus (tools/demo_corpus.py from /usr/share/man; the BEIR
#     fixture when the machine has no man pages) mined with --device cuda, search on the GPU vs --search-device
#     cpu over the same cached GPU embeddings, fp32 and bf16, and 2 ranks: the group files must be byte-identical;
#     and against a run all on the CPU (--device cpu: other embeddings, by the GPU's rounding): the fraction of
#     identical negative slots and the largest score difference.
#  4. The search benchmark: bench_knn_gpu (synthetic unit embeddings, XR_KNN_PASSAGES passages x 768, default
#     10,000,000, falling back to 2,000,000 when no result came; XR_KNN_QUERIES, default 10k queries; k 1000 and
#     100; bf16 then fp32 in one process; queries/s and the fraction of the GEMM peak measured in the same call; 32
#     queries checked against the CPU search) and the PyTorch baseline bench_knn_torch.py (torch.mm + topk in
#     tiles, same precision; skipped without torch), each under its own timeout (XR_KNN_T_XRANK 75 s,
#     XR_KNN_T_TORCH 28 s); then the embedding speed: all-MiniLM-L6-v2 passages/s, bench_encoder embed vs
#     bench_embed_torch.py (transformers bf16), both pooling as the model's sentence-transformers config says (MiniLM:
#     mean, normalised; without one CLS, normalised), 512 x 128 tokens, and bench_encoder again with the
#     packed activation storage (XR_CUDA_ACT_PACK=1, variant bf16-pack); the 8-rank merge
#     (bench_mine_merge.sh: `xrank mine` on a 300,000-passage synthetic corpus, 10k queries, range-max 1000, 1 rank
#     then 8 sharing the GPU: merge seconds, identical group files; XR_MERGE_PASSAGES / _QUERIES / _T, default 60 s);
#     and the XLM-R large shape's embedding with random weights (/tmp/xr_bge_random, written when absent), xrank
#     bf16 vs transformers bf16, 512 x 128 tokens. XR_MINE_BENCH_BUDGET (s; all_device_check.sh sets it): the whole
#     part's time, each run then under its own cap or what is left, skipped by name when too little is.
# Usage: benchmarks/gpu/mine_device_check.sh [OUTDIR]   (env: XRDEPS, XR_BUILD, XR_KNN_PASSAGES; XR_NO_BUILD=1: use
# the build in $XR_BUILD and its last ctest log; XR_PARTS, default all: tests (1), e2e (2), search (3), bench (4))
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
O=${1:-${OUT:-/tmp/xr_mine_out}}
mkdir -p "$O"
. benchmarks/gpu/device_env.sh   # P, B, X, MPIRUN, library paths, Open MPI settings, xr_part, xr_test_output
start=$(date +%s); rc=0   # rc: 1 when a run failed or a group file that must be identical differs
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$O/gpu.txt" ||
  echo "no nvidia-smi" | tee "$O/gpu.txt"
if [ "${XR_NO_BUILD:-0}" != 1 ]; then
  benchmarks/gpu/device_build.sh -R 'test_mine|^mine_|test_select|test_knn|test_cuda_smoke|test_cuda_knn' >"$O/build.log" 2>&1
  echo "device_build.sh rc=$? ($(( $(date +%s) - start )) s)"; grep -E "tests passed|tests failed|\*\*\*|error:" "$O/build.log" | head -30
fi
[ -x "$X" ] || { echo "no xrank binary in $B: stopping"; exit 1; }
if xr_part tests; then
  # the GPU search test's per-case lines and mine_synth_cuda's runs, from the ctest log (it keeps passing output)
  xr_test_output test_cuda_knn >"$O/test_cuda_knn.txt" || echo "test_cuda_knn: not in the last ctest run"
  grep -E "differ|check failed|checks passed|SKIPPED|Test (Passed|Failed)" "$O/test_cuda_knn.txt" | tail -40
  xr_test_output mine_synth_cuda >"$O/mine_synth_cuda.txt" || echo "mine_synth_cuda: not in the last ctest run"
  grep -E "FAIL|identical|wall|skipped|Test Passed|Test Failed" "$O/mine_synth_cuda.txt"
fi

# ---- 2. mining end to end, CPU vs GPU (tiny models, BEIR fixture)
cd "$ROOT/tests"
if xr_part e2e; then
rm -rf /tmp/xr_mine_ds
"$X" tokenize --model fixtures/cli/bert_st --input fixtures/h5/beir --output /tmp/xr_mine_ds --quiet || exit 1
M=(mine --model fixtures/cli/bert_st --input /tmp/xr_mine_ds --no-cache --overwrite --num-negatives 4
   --cross-encoder fixtures/cli/bert_seqcls --jsonl-format flagembedding --output-scores)
run() { # name np args...
  local name=$1 np=$2; shift 2
  local pre=(); [ "$np" -gt 1 ] && pre=("$MPIRUN" -np "$np" --oversubscribe)
  "${pre[@]}" "$X" "${M[@]}" --output "/tmp/g_$name.h5" --jsonl "$O/$name.jsonl" "$@" 2>"$O/$name.err" ||
    { rc=1; echo "$name failed"; cat "$O/$name.err"; }
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
grep -h "retrieval\|cross-encoder:\|time:\|memory, rank" "$O"/cuda_fp32.err "$O"/cuda_fp32_np2.err
fi

# ---- 3. the search alone: GPU search vs CPU search over the same GPU embeddings, group files byte for byte
if xr_part search; then
rm -f /tmp/man_*.h5   # no earlier run's group file may stand in for a failed one
MAN=/tmp/xr_man
if python3 "$ROOT/tools/demo_corpus.py" "$MAN" --pages 2000 >"$O/man.log" 2>&1 && [ -s "$MAN/corpus.jsonl" ]; then
  SRC=$MAN; echo "man-page corpus: $(wc -l < "$MAN/corpus.jsonl") passages"
else
  SRC=fixtures/h5/beir; echo "no man pages on this machine ($(tail -1 "$O/man.log")): the BEIR fixture instead"
fi
# a fresh directory: tokenize --overwrite fails on one holding mine's embeddings/ cache from an earlier run
rm -rf /tmp/xr_man_ds
"$X" tokenize --model fixtures/cli/bert_st --input "$SRC" --output /tmp/xr_man_ds --quiet || exit 1
# no margin: the tiny random bi-encoder scores most candidates above the positive, and --relative-margin 0.05 left
# no negative at all (seen in the CPU rehearsal, 2026-12-04): identical empty group files would prove nothing
S=(mine --model fixtures/cli/bert_st --input /tmp/xr_man_ds --overwrite --num-negatives 5 --range-max 30
   --eval-depth 0 --jsonl-format flagembedding --output-scores)
"$X" "${S[@]}" --device cpu --no-cache --output /tmp/man_allcpu.h5 --jsonl "$O/man_allcpu.jsonl" 2>"$O/man_allcpu.err" ||
  cat "$O/man_allcpu.err"
for prec in fp32 bf16; do
  "$X" "${S[@]}" --device cuda --precision $prec --search-device cpu --output "/tmp/man_cpu_$prec.h5" 2>"$O/man_cpu_$prec.err" || cat "$O/man_cpu_$prec.err"
  "$X" "${S[@]}" --device cuda --precision $prec --output "/tmp/man_gpu_$prec.h5" --jsonl "$O/man_gpu_$prec.jsonl" \
    2>"$O/man_gpu_$prec.err" || cat "$O/man_gpu_$prec.err"
  if cmp -s "/tmp/man_cpu_$prec.h5" "/tmp/man_gpu_$prec.h5"; then r=identical; else r=DIFFERENT; rc=1; fi
  echo "man corpus $prec: GPU search vs CPU search over the same embeddings: group files $r"
done
"$MPIRUN" -np 2 --oversubscribe "$X" "${S[@]}" --device cuda --precision fp32 --output /tmp/man_gpu_np2.h5 2>"$O/man_gpu_np2.err" || cat "$O/man_gpu_np2.err"
if cmp -s /tmp/man_cpu_fp32.h5 /tmp/man_gpu_np2.h5; then r=identical; else r=DIFFERENT; rc=1; fi
echo "man corpus fp32, 2 ranks on one GPU vs 1 rank CPU search: group files $r"
python3 - "$O" <<'PY' || rc=1
import json, sys
o = sys.argv[1]
ref = [json.loads(l) for l in open(f"{o}/man_allcpu.jsonl")]
bad = 0
for prec in ["fp32", "bf16"]:
    try: got = [json.loads(l) for l in open(f"{o}/man_gpu_{prec}.jsonl")]
    except OSError: print(f"man corpus {prec}: FAILED: missing"); bad = 1; continue
    same = tot = 0; dmax = 0.0
    for a, b in zip(ref, got):
        for j in range(max(len(a["neg_ids"]), len(b["neg_ids"]))):
            tot += 1; same += j < len(a["neg_ids"]) and j < len(b["neg_ids"]) and a["neg_ids"][j] == b["neg_ids"][j]
        for x, y in zip(a["pos_scores"] + a["neg_scores"], b["pos_scores"] + b["neg_scores"]):
            if x is not None and y is not None: dmax = max(dmax, abs(x - y))
    print(f"man corpus, all on the CPU vs --device cuda {prec}: {same}/{tot} negative slots identical; "
          f"max |retriever score diff| on shared slots {dmax:.2e}")
    if tot == 0:
        print(f"man corpus {prec}: FAILED: no negatives were mined, the comparison proves nothing"); bad = 1
sys.exit(bad)
PY
grep -h "time:\|memory, rank" "$O"/man_gpu_fp32.err "$O"/man_gpu_np2.err
fi

# ---- 4. the search benchmark (all_device_check.sh gives it 150 s): the most informative runs first, each under its
# own timeout: xrank bf16 then fp32 in ONE process (the embeddings made once, the CPU check once per k; k 1000
# first: the re-screens fixed after the H200 call at 42e9433), then torch bf16 and fp32, then the embedding speed
xr_part bench || exit $rc
echo "elapsed before the benchmark: $(( $(date +%s) - start )) s"
# The part's time: XR_MINE_BENCH_BUDGET s (all_device_check.sh passes its step's cap less a margin; unset: no limit,
# each run its own cap). The runs' own caps (75 + 2 x 28 + 20 + 25 + 60 + 30 + 40 s, and 60 to write the XLM-R model
# when part large did not) add up to more than that step's 230 s, so each run gets its cap or what is left, the
# smaller, and is skipped with a line naming it when less than its floor is left: a cut shows as a named skip after
# the lines of the runs before it, never as the whole step timing out.
BSTART=$(date +%s)
# bcap NAME CAP FLOOR: prints the next run's timeout, or prints the skip line (stderr) and fails
bcap() {
  [ -n "${XR_MINE_BENCH_BUDGET:-}" ] || { echo "$2"; return 0; }
  local l=$(( XR_MINE_BENCH_BUDGET - ($(date +%s) - BSTART) - 4 ))   # 4: timeout's -k 3 grace and the lines after
  if [ "$l" -lt "$3" ]; then
    echo "$1: skipped for time ($l s left of the part's $XR_MINE_BENCH_BUDGET s, needs $3)" >&2
    return 1
  fi
  echo $(( $2 < l ? $2 : l ))
}
cmake --build "$B" --target bench_knn_gpu -j"$(nproc)" >"$O/bench_build.log" 2>&1 || echo "bench_knn_gpu: build failed"
NP=${XR_KNN_PASSAGES:-10000000}; NQ=${XR_KNN_QUERIES:-10000}
J="$O/bench_knn_gpu.jsonl"; : > "$J"
if t=$(bcap bench_knn_gpu "${XR_KNN_T_XRANK:-75}" 20); then
  timeout -k 3 "$t" "$B/benchmarks/bench_knn_gpu" --passages "$NP" --dim 768 --queries "$NQ" \
    --k 1000,100 --precision bf16,fp32 --check 32 | tee -a "$J"
fi
if ! grep -q '"seconds"' "$J" && t=$(bcap "bench_knn_gpu at 2,000,000" 40 15); then
  echo "bench_knn_gpu at $NP passages failed or ran out of time before its first result: 2,000,000"
  NP=2000000
  timeout -k 3 "$t" "$B/benchmarks/bench_knn_gpu" --passages "$NP" --dim 768 --queries "$NQ" --k 1000,100 \
    --precision bf16,fp32 --check 32 | tee -a "$J"
fi
grep -q '"precision":"fp32","passages"' "$J" || echo "bench_knn_gpu: ran out of time before fp32 (see $J)"
echo "elapsed after xrank's search: $(( $(date +%s) - start )) s"
for prec in bf16 fp32; do
  t=$(bcap "bench_knn_torch $prec" "${XR_KNN_T_TORCH:-28}" 15) || continue
  timeout -k 3 "$t" python3 "$ROOT/benchmarks/gpu/bench_knn_torch.py" --passages "$NP" --dim 768 \
    --queries "$NQ" --k 1000,100 --precision $prec | tee -a "$O/bench_knn_torch.jsonl" ||
    echo "bench_knn_torch $prec: failed or ran out of time (rc ${PIPESTATUS[0]})"
done
echo "elapsed after torch's search: $(( $(date +%s) - start )) s"
# embedding speed (issue 16): all-MiniLM-L6-v2 (the carried one, fp16 weights) passages/s, xrank vs PyTorch bf16,
# 512 passages of 128 tokens a batch
EL=${XR_LEARN_DIR:-/tmp/xr_learn}   # where train_device_check.sh unpacks the carried MiniLM too
if [ -d "$EL/minilm" ] || { [ -f "$ROOT/.cache/gpu_carry/minilm40.tar.xz" ] && mkdir -p "$EL" &&
    tar -xJf "$ROOT/.cache/gpu_carry/minilm40.tar.xz" -C "$EL"; }; then
  cmake --build "$B" --target bench_encoder -j"$(nproc)" >>"$O/bench_build.log" 2>&1 || echo "bench_encoder: build failed"
  if t=$(bcap "bench_encoder MiniLM embed" 20 10); then
    timeout -k 3 "$t" "$B/benchmarks/bench_encoder" "$EL/minilm" embed 128 512 20 bf16 |
      tee -a "$O/bench_embed.jsonl" || echo "bench_encoder MiniLM embed: failed or ran out of time"
  fi
  if t=$(bcap "bench_embed_torch MiniLM" 25 10); then
    timeout -k 3 "$t" python3 "$ROOT/benchmarks/gpu/bench_embed_torch.py" "$EL/minilm" 128 512 20 |
      tee -a "$O/bench_embed.jsonl" || echo "bench_embed_torch: failed or ran out of time (rc ${PIPESTATUS[0]})"
  fi
  # the same with the packed activation storage (issue 13, XR_CUDA_ACT_PACK=1; its line says "act_bytes": 2)
  if t=$(bcap "bench_encoder MiniLM embed, packed storage" 15 8); then
    XR_CUDA_ACT_PACK=1 timeout -k 3 "$t" "$B/benchmarks/bench_encoder" "$EL/minilm" embed 128 512 20 bf16 |
      sed 's/^{/{"variant": "bf16-pack", /' | tee -a "$O/bench_embed.jsonl" ||
      echo "bench_encoder MiniLM embed, packed storage: failed or ran out of time"
  fi
else
  echo "embedding speed skipped: .cache/gpu_carry/minilm40.tar.xz not carried"
fi
echo "elapsed after MiniLM's embedding: $(( $(date +%s) - start )) s"
# the 8-rank merge (issue 16): `xrank mine` on a synthetic corpus (tiny bert_st bi-encoder, 16 dims: the merge
# shows) on 1 rank, then 8 ranks sharing the GPU (comm_device_index: node-local rank mod GPUs) from the cached
# embeddings; the report's merge seconds, and the 8-rank group file byte-identical to the 1-rank one. Without a GPU
# (the rehearsal) on the CPU at a tiny size.
if xr_have_gpu; then MD=cuda MS="${XR_MERGE_PASSAGES:-300000} ${XR_MERGE_QUERIES:-10000} 1000"
else MD=cpu MS="20000 500 100"; fi
# shellcheck disable=SC2086
if t=$(bcap bench_mine_merge "${XR_MERGE_T:-60}" 20); then
  timeout -k 3 "$t" "$ROOT/benchmarks/gpu/bench_mine_merge.sh" "$X" "$MPIRUN" /tmp/xr_mine_merge "$MD" \
    $MS 8 | tee -a "$O/bench_merge.jsonl" || echo "bench_mine_merge: failed or ran out of time (rc ${PIPESTATUS[0]})"
fi
echo "elapsed after the merge: $(( $(date +%s) - start )) s"
# embedding at the XLM-R large shape (24 layers, hidden 1024; 512 passages of 128 tokens a batch), xrank bf16 vs
# transformers bf16: RANDOM weights (no converted XLM-R-large-sized model fits run's 64 MiB carry): the model that
# train_device_check.sh part large writes (/tmp/xr_bge_random, XLMRobertaForSequenceClassification; the embedders
# read its encoder), else written here
LM=/tmp/xr_bge_random
if ! xr_have_gpu; then
  echo "XLM-R large embedding skipped: no GPU visible to xrank"
elif [ -f "$LM/model.safetensors" ] || { t=$(bcap "XLM-R large model write" 60 30) &&
    timeout -k 3 "$t" python3 "$ROOT/benchmarks/gpu/bench_forward.py" write "$LM" > "$O/xlmr_write.log" 2>&1; }; then
  cmake --build "$B" --target bench_encoder -j"$(nproc)" >>"$O/bench_build.log" 2>&1 || echo "bench_encoder: build failed"
  if t=$(bcap "bench_encoder XLM-R large embed" 30 15); then
    timeout -k 3 "$t" "$B/benchmarks/bench_encoder" "$LM" embed 128 512 5 bf16 |
      sed 's/^{/{"model": "xlmr-large-random", /' | tee -a "$O/bench_embed.jsonl" ||
      echo "bench_encoder XLM-R large embed: failed or ran out of time"
  fi
  if t=$(bcap "bench_embed_torch XLM-R large" 40 20); then
    timeout -k 3 "$t" python3 "$ROOT/benchmarks/gpu/bench_embed_torch.py" "$LM" 128 512 5 |
      sed 's/^{/{"model": "xlmr-large-random", /' | tee -a "$O/bench_embed.jsonl" ||
      echo "bench_embed_torch XLM-R large: failed or ran out of time (rc ${PIPESTATUS[0]})"
  fi
else
  echo "XLM-R large embedding skipped: no model at $LM and writing one failed ($O/xlmr_write.log)"
fi
# both sides of each embedding comparison pooled alike (bench_encoder and bench_embed_torch.py print what they ran;
# the second call's MiniLM 0.88x was xrank's CLS against torch's mean)
if [ -s "$O/bench_embed.jsonl" ]; then
  python3 - "$O/bench_embed.jsonl" <<'PY' || rc=1
import json, sys
seen = {}
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    side = {"xrank_infer": "xrank", "torch_embed": "torch"}.get(r.get("kind"))
    if side and "pooling" in r:
        how = f'{r["pooling"]}{", normalised" if r.get("normalize") else ""}'
        seen.setdefault(r.get("model", "all-MiniLM-L6-v2"), {}).setdefault(side, set()).add(how)
bad = 0
for model, sides in seen.items():
    ways = set().union(*sides.values())
    said = "; ".join(f"{s} {' / '.join(sorted(w))}" for s, w in sorted(sides.items()))
    if len(ways) > 1:
        bad = 1
        print(f"embedding pooling {model}: {said}: the sides differ, the comparison failed")
    else:
        print(f"embedding pooling {model}: {said}")
sys.exit(bad)
PY
fi
echo "elapsed $(( $(date +%s) - start )) s"
exit $rc
