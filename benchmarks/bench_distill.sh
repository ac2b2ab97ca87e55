#!/usr/bin/env bash
# bench_distill.sh: the learning proof of issue 17 on the demo corpus. A teacher (the demo's listwise recipe,
# configs/demo.json) is trained, rescores the training queries' candidates through `xrank mine --cross-encoder`
# (its raw logits become the groups' ce_scores), then students start from the same all-MiniLM-L6-v2 with a fresh
# head and train on that group file with the same steps: the hard-label student (listwise group CE) and the
# distilled one (FlagEmbedding's recipe: soft CE against the teacher's group softmax + the group CE). Both are
# evaluated on the held-out dev queries (the retriever's top 16).
#   nice -n 10 benchmarks/bench_distill.sh build/xrank MODEL_DIR [WORKDIR] [STAGE...]
# Stages: prep teacher rescore students summary (default: all, in that order; each reuses the previous ones' files);
# speed (not in the default): the step time of each loss on the demo recipe with the teacher-scored groups,
# SPEED_ROUNDS rounds alternating over SPEED_LOSSES, SPEED_STEPS steps each, every run under flock /tmp/cpu.lock;
# prints the median step time (steps 2..N) per run and each loss's ratio to listwise within its round.
# Env (full size = the demo): PAGES (2000), TEACHER_EPOCHS (2), STUDENT_STEPS (0 = the demo's 2 epochs),
#   MAXLEN (128), SEEDS ("42 43 44"), DISTILL (extra distill flags, default "--distill-mode kl --hard-label-weight 1"),
#   RESCORE_NEGATIVES (15: candidates per training query the teacher scores), NP (2).
set -euo pipefail
XRANK=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") MODEL=$2 W=${3:-/tmp/xrank_bench_distill}
shift $(( $# >= 3 ? 3 : $# ))
STAGES=${*:-prep teacher rescore students summary}
PAGES=${PAGES:-2000} TEACHER_EPOCHS=${TEACHER_EPOCHS:-2} STUDENT_STEPS=${STUDENT_STEPS:-0} MAXLEN=${MAXLEN:-128}
SEEDS=${SEEDS:-42 43 44} RESCORE_NEGATIVES=${RESCORE_NEGATIVES:-15} DISTILL=${DISTILL:---distill-mode kl --hard-label-weight 1} NP=${NP:-2}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/launch/env.sh"   # Open MPI as root, OPENBLAS settings
MPI=(mpirun -np "$NP" --oversubscribe)
mkdir -p "$W"
log() { echo "== $* ($(date -u +%H:%M:%S))"; }
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
EVAL=(--eval-data "$W/dev.ds" --eval-groups "$W/dev.groups.h5" --eval-batch-size 64)

if has prep; then
  log "prep: $PAGES man pages, tokenize, mine train (15 negatives, relative margin 0.05) and dev (top 16)"
  python3 "$HERE/tools/demo_corpus.py" "$W/manpages" --pages "$PAGES" --dev-every 4
  for split in train dev; do
    "${MPI[@]}" "$XRANK" tokenize --model "$MODEL" --input "$W/manpages" --split $split --output "$W/$split.ds" \
      --overwrite --quiet
  done
  "${MPI[@]}" "$XRANK" mine --model "$MODEL" --input "$W/train.ds" --output "$W/train.groups.h5" --num-negatives 15 \
    --relative-margin 0.05 --cache-dir "$W/embeddings" --overwrite --quiet
  "${MPI[@]}" "$XRANK" mine --model "$MODEL" --input "$W/dev.ds" --output "$W/dev.groups.h5" --num-negatives 15 \
    --cache-dir "$W/embeddings" --overwrite --quiet
fi

if has teacher; then
  log "teacher: configs/demo.json, $TEACHER_EPOCHS epochs, max length $MAXLEN"
  "${MPI[@]}" "$XRANK" train --config "$HERE/configs/demo.json" --model "$MODEL" --data "$W/train.ds" \
    --groups "$W/train.groups.h5" --num-train-epochs "$TEACHER_EPOCHS" --max-length "$MAXLEN" \
    --output "$W/teacher" --overwrite "${EVAL[@]}" 2>&1 | grep -v "^step " | tee "$W/teacher.log" | tail -n 12
fi

if has rescore; then
  log "rescore: the teacher's raw logits for every training candidate (ce_scores)"
  "${MPI[@]}" "$XRANK" mine --model "$MODEL" --input "$W/train.ds" --output "$W/train.ce.h5" \
    --num-negatives "$RESCORE_NEGATIVES" \
    --cache-dir "$W/embeddings" --cross-encoder "$W/teacher/final" --ce-activation none --max-length "$MAXLEN" \
    --overwrite --quiet
fi

if has students; then
  STEPS=()
  [ "$STUDENT_STEPS" -gt 0 ] && STEPS=(--max-steps "$STUDENT_STEPS")
  for seed in $SEEDS; do
    for kind in hard distill; do
      if [ $kind = hard ]; then L=(--loss listwise); else read -ra L <<<"--loss distill $DISTILL"; fi
      log "student $kind seed $seed: ${L[*]} ${STEPS[*]}"
      "${MPI[@]}" "$XRANK" train --config "$HERE/configs/demo.json" --model "$MODEL" --data "$W/train.ds" \
        --groups "$W/train.ce.h5" "${L[@]}" "${STEPS[@]}" --max-length "$MAXLEN" --seed "$seed" \
        --output "$W/s_${kind}_$seed" --overwrite "${EVAL[@]}" 2>&1 | grep -v "^step " \
        | tee "$W/s_${kind}_$seed.log" | tail -n 3
    done
  done
fi

if has speed; then
  for round in $(seq 1 "${SPEED_ROUNDS:-3}"); do
    for loss in ${SPEED_LOSSES:-listwise distill_kl distill_margin_mse listnet lambdaloss}; do
      case $loss in
        distill_kl) L=(--loss distill --distill-mode kl --hard-label-weight 1) ;;
        distill_margin_mse) L=(--loss distill --distill-mode margin_mse) ;;
        *) L=(--loss "$loss") ;;
      esac
      out="$W/speed_${loss}_$round"
      flock /tmp/cpu.lock "${MPI[@]}" "$XRANK" train --config "$HERE/configs/demo.json" --model "$MODEL" \
        --data "$W/train.ds" --groups "$W/train.ce.h5" "${L[@]}" --max-steps "${SPEED_STEPS:-6}" --logging-steps 1 \
        --max-length "$MAXLEN" --output "$out" --overwrite --quiet > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
      python3 - "$out/metrics.jsonl" "$loss" "$round" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, statistics, sys
m = [j for j in map(json.loads, open(sys.argv[1])) if j.get("type") == "train"][1:]  # step 1 carries start-up
med = lambda k: statistics.median(j[k] for j in m)
print(f"speed round {sys.argv[3]} {sys.argv[2]:20s} median step {med('step_s'):.3f} s (min "
      f"{min(j['step_s'] for j in m):.3f}, max {max(j['step_s'] for j in m):.3f}, {len(m)} steps; data "
      f"{med('data_s') * 1e3:.3f} ms, compute {med('compute_s'):.3f} s; load {sys.argv[4]})", flush=True)
PY
    done
  done | tee "$W/speed.txt"
  python3 - "$W/speed.txt" <<'PY'
import collections, re, statistics, sys
r = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    m = re.match(r"speed round (\d+) (\S+) +median step ([0-9.]+)", line)
    if m:
        r[m.group(1)][m.group(2)] = float(m.group(3))
losses = [k for k in next(iter(r.values())) if k != "listwise"]
for k in losses:
    ratios = [v[k] / v["listwise"] for v in r.values() if k in v and "listwise" in v]
    print(f"{k:20s} step time / listwise per round: " + " ".join(f"{x:.3f}" for x in ratios) +
          f"  (median {statistics.median(ratios):.3f})")
PY
fi

if has summary; then
  # The last evaluation line of each run's metrics.jsonl holds the dev metrics of final/ (eval at the end).
  python3 - "$W" $SEEDS <<'PY'
import json, os, statistics, sys
w, seeds = sys.argv[1], sys.argv[2:]
def dev(run):  # the last evaluation of the run (the end of training): base and reranked NDCG@10, MRR@10
    ev = [j for j in map(json.loads, open(os.path.join(w, run, "metrics.jsonl"))) if j.get("type") == "eval"]
    return ev[-1]["eval"]
t = dev("teacher")
print(f"dev queries {t['queries']}: retriever NDCG@10 {t['base']['ndcg@10']:.4f} MRR@10 {t['base']['mrr@10']:.4f}; "
      f"teacher NDCG@10 {t['reranked']['ndcg@10']:.4f} MRR@10 {t['reranked']['mrr@10']:.4f}")
res = {"hard": [], "distill": []}
for s in seeds:
    for k in res:
        e = dev(f"s_{k}_{s}")["reranked"]
        res[k].append(e["ndcg@10"])
        print(f"seed {s} {k:8s} NDCG@10 {e['ndcg@10']:.4f} MRR@10 {e['mrr@10']:.4f}")
for k, v in res.items():
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    print(f"{k:8s} mean NDCG@10 {statistics.mean(v):.4f} (sd {sd:.4f}, {len(v)} seeds)")
print("distill - hard per seed: " + " ".join(f"{d - h:+.4f}" for h, d in zip(res["hard"], res["distill"])))
PY
fi
log done
