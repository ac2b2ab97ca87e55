#!/usr/bin/env bash
# bench_parity.sh: quality parity of `xrank train` with sentence-transformers' CrossEncoder (issue 5). Both train a
# cross-encoder from all-MiniLM-L6-v2 (a new 1-label head) on the same mined n-tuples of the demo's man-page corpus
# with the listwise recipe (1 positive + 7 negatives, softmax CE, target 0) and the same hyperparameters, and both
# are evaluated by the same evaluator (`xrank eval` on the retriever's top-16 dev candidates, trec_eval metrics).
# Prints base / xrank / sentence-transformers NDCG@10 and MRR@10 and training times; writes
# benchmarks/results/parity_cpu_<date>.jsonl. Every long command runs under the shared CPU lock (/tmp/cpu.lock); the
# sentence-transformers training runs in resumable segments of ST_SEGMENT_S seconds (bitwise the same result as
# one run: benchmarks/parity_train.py train --segment-seconds) so that no lock is held for more than ~10 minutes.
# Env: BUILD_DIR (build-parity), PARITY_DIR (/tmp/xrank_parity), SEEDS ("42"), EPOCHS (1), PAGES (2000),
#      THREADS (2), ST_SEGMENT_S (480), PY (/work/venv/bin/python), XR_MINILM_DIR (/work/models/all-MiniLM-L6-v2),
#      OUT_JSONL (the record file), REDO_DATA=1 (rebuild the corpus and datasets), REDO_TRAIN=1 (retrain runs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build-parity}
D=${PARITY_DIR:-/tmp/xrank_parity}
SEEDS=${SEEDS:-42}
EPOCHS=${EPOCHS:-1}
PAGES=${PAGES:-2000}
THREADS=${THREADS:-2}
ST_SEGMENT_S=${ST_SEGMENT_S:-480}
PY=${PY:-/work/venv/bin/python}
M=${XR_MINILM_DIR:-/work/models/all-MiniLM-L6-v2}
LOCK=(flock /tmp/cpu.lock)
OUT_JSONL=${OUT_JSONL:-"$ROOT/benchmarks/results/parity_cpu_$(date +%F).jsonl"}
K=7 # negatives per group: train-group-size 8
[ -f "$M/config.json" ] || { echo "no model at $M (XR_MINILM_DIR)" >&2; exit 1; }
export OMP_NUM_THREADS=$THREADS OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

echo "== build xrank (Release) in $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
"${LOCK[@]}" cmake --build "$BUILD_DIR" -j2 --target xrank >/dev/null
X="$ROOT/$BUILD_DIR/xrank"

mkdir -p "$D"
cd "$D"
if [ -n "${REDO_DATA:-}" ] || [ ! -f train7.jsonl ] || [ ! -f dev.groups.h5 ]; then
  echo "== data: $PAGES man pages (1 in 4 queries held out for dev), tokenized; train mined with $K negatives"
  python3 "$ROOT/tools/demo_corpus.py" manpages --pages "$PAGES" --dev-every 4
  "${LOCK[@]}" bash -c "for s in train dev; do '$X' tokenize --model '$M' --input manpages --split \$s \
      --output \$s.ds --overwrite --quiet || exit 1; done"
  # train: the demo's mining (relative margin 0.05) with exactly K negatives per query; dev: the retriever's
  # top 16 (positive + 15 negatives), the candidates both rerankers reorder
  "${LOCK[@]}" bash -c "'$X' mine --model '$M' --input train.ds --output train.groups.h5 --num-negatives $K \
      --relative-margin 0.05 --cache-dir emb --overwrite --threads $THREADS --quiet &&
    '$X' mine --model '$M' --input dev.ds --output dev.groups.h5 --num-negatives 15 --cache-dir emb \
      --overwrite --threads $THREADS --quiet"
  # rows with fewer than K negatives: xrank would repeat their negatives (FlagEmbedding), the n-tuple jsonl
  # leaves them out; both sides train on the rows with all K found instead
  "$PY" "$ROOT/benchmarks/parity_train.py" filter-groups train.groups.h5 train7.groups.h5 --negatives $K \
    > filter.json
  "$X" mine --model "$M" --groups-in train7.groups.h5 --input train.ds --jsonl train7.jsonl \
    --jsonl-format n-tuple --text-from manpages --split train --overwrite --quiet
  "$X" mine --model "$M" --groups-in dev.groups.h5 --input dev.ds --jsonl dev.list.jsonl \
    --jsonl-format labeled-list --text-from manpages --split dev --overwrite --quiet
fi
cat filter.json
echo "   train: $(wc -l < train7.jsonl) n-tuples (1 positive + $K negatives); dev: $(wc -l < dev.list.jsonl) queries x 16 candidates"

COMMON=(--train-group-size $((K + 1)) --per-device-train-batch-size 8 --learning-rate 1e-4 --weight-decay 0.01
  --warmup-ratio 0.1 --lr-scheduler-type linear --max-grad-norm 1 --max-length 128 --dropout on)
evaluate() { # model dir -> eval json
  [ -f "$2" ] && [ -z "${REDO_TRAIN:-}" ] && return 0
  "${LOCK[@]}" "$X" eval --model "$1" --data dev.ds --groups dev.groups.h5 --max-length 128 --batch-size 64 \
    --threads "$THREADS" --json --quiet > "$2.tmp"
  mv "$2.tmp" "$2"
}

for seed in $SEEDS; do
  XR=xr_s$seed ST=st_s$seed
  [ -n "${REDO_TRAIN:-}" ] && rm -rf "$XR" "$ST"
  if [ ! -f "$XR/final/config.json" ]; then
    echo "== xrank train, seed $seed, $EPOCHS epoch(s), 1 rank x $THREADS threads"
    # the wall clock starts once the lock is held (the command's own time, not the wait for the lock)
    "${LOCK[@]}" bash -c 't0=$(date +%s%N); "$@" || exit; echo "{\"wall_s\": $((($(date +%s%N) - t0) / 1000000)).0e-3}" \
      > "$0/wall.json"' "$XR" "$X" train --model "$M" --data train.ds --groups train7.groups.h5 --loss listwise \
      "${COMMON[@]}" --seed "$seed" --num-train-epochs "$EPOCHS" --threads "$THREADS" --logging-steps 20 \
      --output "$XR" --overwrite --quiet
  fi
  if [ ! -f "$ST/final/config.json" ]; then
    echo "== sentence-transformers CrossEncoderTrainer, seed $seed, $EPOCHS epoch(s), torch threads $THREADS"
    rc=3
    while [ "$rc" = 3 ]; do
      set +e
      "${LOCK[@]}" "$PY" "$ROOT/benchmarks/parity_train.py" train --model "$M" --train-jsonl train7.jsonl \
        --output "$ST" --negatives $K --epochs "$EPOCHS" --batch-size 8 --learning-rate 1e-4 --weight-decay 0.01 \
        --warmup-ratio 0.1 --max-grad-norm 1 --max-length 128 --seed "$seed" --threads "$THREADS" \
        --logging-steps 20 --segment-seconds "$ST_SEGMENT_S" > "$ST.log" 2>&1
      rc=$?
      set -e
      grep -E '^segment|^loss check|^\{"' "$ST.log" || true
    done
    [ "$rc" = 0 ] || { tail -n 30 "$ST.log" >&2; exit 1; }
  fi
  echo "== evaluate both with xrank eval (dev: retriever's top 16, max length 128)"
  evaluate "$XR/final" "$XR/eval.json"
  evaluate "$ST/final" "$ST/eval.json"
  echo "== cross-check: xrank score vs CrossEncoder.predict (logits) on 20 dev queries x 16 candidates"
  [ -f "check_s$seed.json" ] && [ -z "${REDO_TRAIN:-}" ] ||
    "${LOCK[@]}" "$PY" "$ROOT/benchmarks/parity_train.py" check-scores --xrank "$X" --pairs dev.list.jsonl \
      --models "$XR/final" "$ST/final" --queries 20 --threads "$THREADS" > "check_s$seed.json"
  cat "check_s$seed.json"
done

echo "== results"
"$PY" - "$OUT_JSONL" "$EPOCHS" "$SEEDS" "$THREADS" <<'EOF'
import json, os, platform, subprocess, sys, time
out, epochs, seeds, threads = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), int(sys.argv[4])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
machine = f"{cpu}, {os.cpu_count()} cores, {platform.system()}"
filt = json.load(open("filter.json"))
recs, rows = [], []
for s in seeds:
    xr, st = json.load(open(f"xr_s{s}/eval.json")), json.load(open(f"st_s{s}/eval.json"))
    xlog = [json.loads(l) for l in open(f"xr_s{s}/metrics.jsonl") if '"train"' in l]
    xs = json.load(open(f"st_s{s}/train_summary.json"))
    xwall = json.load(open(f"xr_s{s}/wall.json"))["wall_s"]
    chk = json.load(open(f"check_s{s}.json"))
    base = xr["base"]
    for name, ev, t_loop, t_wall, steps, extra in (
            ("xrank", xr, xlog[-1]["elapsed_s"], xwall, xlog[-1]["step"], {"final_loss": xlog[-1]["loss"]}),
            ("sentence-transformers", st, xs["train_loop_s"], xs["wall_s"], xs["steps"],
             {"segments": xs["segments"], "versions": {k: xs[k] for k in ("torch", "transformers",
                                                                           "sentence_transformers")}})):
        recs.append({"bench": "parity_train", "system": name, "seed": int(s), "epochs": epochs, "steps": steps,
                     "train_loop_s": round(t_loop, 1), "train_wall_s": round(float(t_wall), 1),
                     "threads": threads, "machine": machine, "date": time.strftime("%F"),
                     "train_groups": filt["rows_kept"], "dropped_groups": filt["rows_dropped"],
                     "dev_queries": ev["queries"], "dev_pairs": ev["pairs"],
                     "base": ev["base"], "reranked": ev["reranked"],
                     "reranked_all_positives": ev["reranked_all_positives"],
                     "score_check_max_abs_diff": chk[f"{'xr' if name == 'xrank' else 'st'}_s{s}/final"]["max_abs_diff"],
                     **extra})
    rows.append((s, base, xr["reranked"], st["reranked"], recs[-2], recs[-1]))
# one record per (system, seed, epochs) and day: a rerun that reuses finished runs does not repeat them
seen = set()
if os.path.exists(out):
    seen = {(r["system"], r["seed"], r["epochs"]) for r in map(json.loads, open(out)) if r.get("bench") == "parity_train"}
with open(out, "a") as f:
    for r in recs:
        if (r["system"], r["seed"], r["epochs"]) not in seen:
            f.write(json.dumps(r) + "\n")
print(f"{'seed':>4} {'':22} {'NDCG@10':>8} {'MRR@10':>8} {'train s':>8}")
for s, base, x, t, rx, rt in rows:
    print(f"{s:>4} {'base (retriever)':22} {base['ndcg@10']:8.4f} {base['mrr@10']:8.4f}")
    print(f"{s:>4} {'xrank':22} {x['ndcg@10']:8.4f} {x['mrr@10']:8.4f} {rx['train_loop_s']:8.1f}")
    print(f"{s:>4} {'sentence-transformers':22} {t['ndcg@10']:8.4f} {t['mrr@10']:8.4f} {rt['train_loop_s']:8.1f}")
    d = 100 * (x["ndcg@10"] - t["ndcg@10"])
    print(f"{s:>4} xrank - ST: NDCG@10 {d:+.2f} points, MRR@10 {100 * (x['mrr@10'] - t['mrr@10']):+.2f} points "
          f"({'within' if d >= -1 else 'OUTSIDE'} the 1-point target); training {rt['train_loop_s'] / rx['train_loop_s']:.2f}x faster")
if len(rows) > 1:
    import statistics as S
    for k in ("ndcg@10", "mrr@10"):
        a, b = [r[2][k] for r in rows], [r[3][k] for r in rows]
        print(f"mean over seeds {k}: xrank {S.mean(a):.4f} (sd {S.stdev(a):.4f}), ST {S.mean(b):.4f} (sd {S.stdev(b):.4f})")
print(f"wrote {out}")
EOF
