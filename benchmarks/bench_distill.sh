#!/usr/bin/env bash
# bench_distill.sh: the learning proof of issue 17 on the demo corpus. A teacher (the demo's listwise recipe,
# configs/demo.json) is trained on every training query, rescores the students' training queries' candidates
# through `xrank mine --cross-encoder` (its raw logits become the groups' ce_scores), then students start from the
# same all-MiniLM-L6-v2 with a fresh head and train on that group file with the same steps: the hard-label student
# (listwise group CE) and the distilled one (FlagEmbedding's recipe: soft CE against the teacher's group softmax +
# the group CE). Teacher and students are evaluated on the same held-out dev queries (the retriever's top 16).
#   nice -n 10 benchmarks/bench_distill.sh build/xrank MODEL_DIR [WORKDIR] [STAGE...]
# Stages: prep teacher teacher_eval rescore students summary (default: all, in that order; each reuses the previous ones' files);
# speed (not in the default): the step time of each loss on the demo recipe with the teacher-scored groups,
# SPEED_ROUNDS rounds alternating over SPEED_LOSSES, SPEED_STEPS steps each, every run under flock /tmp/cpu.lock;
# prints the median step time (steps 2..N) per run and each loss's ratio to listwise within its round.
# Env (full size = the demo): PAGES (2000), TEACHER_EPOCHS (2), STUDENT_STEPS (0 = the demo's 2 epochs),
#   MAXLEN (128: teacher training and students), TEACHER_MAXLEN (MAXLEN: the teacher's evaluation and rescoring
#   length; longer than MAXLEN lets the teacher read more of each passage than the students), SEEDS ("42 43 44"), DISTILL (extra distill flags, default
#   "--distill-mode kl --hard-label-weight 1"), RESCORE_NEGATIVES (15: candidates per training query the teacher
#   scores), NP (2), DEV_QUERIES (0 = all 500: else that many dev queries, evenly spaced, for every evaluation),
#   TRAIN_QUERIES (0 = all: else that many training queries, evenly spaced, are rescored and train the students;
#   the teacher always trains on all of them), STUDENT_BATCH (0 = the demo's 4 groups per rank: else that many).
set -euo pipefail
XRANK=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") MODEL=$2 W=${3:-/tmp/xrank_bench_distill}
shift $(( $# >= 3 ? 3 : $# ))
STAGES=${*:-prep teacher teacher_eval rescore students summary}
PAGES=${PAGES:-2000} TEACHER_EPOCHS=${TEACHER_EPOCHS:-2} STUDENT_STEPS=${STUDENT_STEPS:-0} MAXLEN=${MAXLEN:-128}
SEEDS=${SEEDS:-42 43 44} RESCORE_NEGATIVES=${RESCORE_NEGATIVES:-15} DISTILL=${DISTILL:---distill-mode kl --hard-label-weight 1} NP=${NP:-2}
TEACHER_MAXLEN=${TEACHER_MAXLEN:-$MAXLEN} DEV_QUERIES=${DEV_QUERIES:-0} TRAIN_QUERIES=${TRAIN_QUERIES:-0} STUDENT_BATCH=${STUDENT_BATCH:-0}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/launch/env.sh"   # Open MPI as root, OPENBLAS settings
MPI=(mpirun -np "$NP" --oversubscribe)
mkdir -p "$W"
log() { echo "== $* ($(date -u +%H:%M:%S))"; }
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
# The evaluated dev set and the students' training set: the whole split, or an evenly spaced subset of its queries.
DEV=dev; [ "$DEV_QUERIES" -gt 0 ] && DEV=dev$DEV_QUERIES
STU=train; [ "$TRAIN_QUERIES" -gt 0 ] && STU=train$TRAIN_QUERIES
EVAL=(--eval-data "$W/$DEV.ds" --eval-groups "$W/$DEV.groups.h5" --eval-batch-size 64)

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

# A subset of a split: the same corpus and queries, the qrels of N queries evenly spaced over the split (its own
# tokenized dataset, so every tool sees only those queries). dev subsets get their retriever top 16 mined.
subset() { # split n name
  [ -d "$W/$3.ds" ] && return 0
  log "subset: $2 of the $1 queries -> $3.ds"
  mkdir -p "$W/manpages_$3/qrels"
  ln -sf "$W/manpages/corpus.jsonl" "$W/manpages/queries.jsonl" "$W/manpages_$3/"
  python3 - "$W/manpages/qrels/$1.tsv" "$2" > "$W/manpages_$3/qrels/$1.tsv" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
order, rows = [], {}
for r in lines[1:]:
    q = r.split("\t")[0]
    if q not in rows: order.append(q); rows[q] = []
    rows[q].append(r)
n = int(sys.argv[2])
print("\n".join([lines[0]] + [r for i in range(n) for r in rows[order[i * len(order) // n]]]))
PY
  "${MPI[@]}" "$XRANK" tokenize --model "$MODEL" --input "$W/manpages_$3" --split "$1" --output "$W/$3.ds" --quiet
  if [ "$1" = dev ]; then
    "${MPI[@]}" "$XRANK" mine --model "$MODEL" --input "$W/$3.ds" --output "$W/$3.groups.h5" --num-negatives 15 \
      --cache-dir "$W/embeddings" --overwrite --quiet
  fi
}
if has prep || has teacher_eval || has rescore || has students; then
  [ "$DEV_QUERIES" -gt 0 ] && subset dev "$DEV_QUERIES" "$DEV"
  [ "$TRAIN_QUERIES" -gt 0 ] && subset train "$TRAIN_QUERIES" "$STU"
fi

if has teacher; then
  log "teacher: configs/demo.json, $TEACHER_EPOCHS epochs, max length $MAXLEN"
  "${MPI[@]}" "$XRANK" train --config "$HERE/configs/demo.json" --model "$MODEL" --data "$W/train.ds" \
    --groups "$W/train.groups.h5" --num-train-epochs "$TEACHER_EPOCHS" --max-length "$MAXLEN" --logging-steps 5 \
    --output "$W/teacher" --overwrite > "$W/teacher.log" 2>&1 || { tail -n 20 "$W/teacher.log"; exit 1; }
  tail -n 6 "$W/teacher.log"
fi

if has teacher_eval; then
  # Evaluated apart, on the students' dev queries (in training it would hold final/ back until the evaluation ends).
  log "teacher_eval: teacher/final on the $DEV queries, max length $TEACHER_MAXLEN"
  "${MPI[@]}" "$XRANK" eval --model "$W/teacher/final" --data "$W/$DEV.ds" --groups "$W/$DEV.groups.h5" \
    --max-length "$TEACHER_MAXLEN" --batch-size 64 --json --output "$W/teacher_eval.json" --overwrite
fi

if has rescore; then
  log "rescore: the teacher's raw logits for every candidate of the $STU queries (ce_scores), max length $TEACHER_MAXLEN"
  "${MPI[@]}" "$XRANK" mine --model "$MODEL" --input "$W/$STU.ds" --output "$W/$STU.ce.h5" \
    --num-negatives "$RESCORE_NEGATIVES" \
    --cache-dir "$W/embeddings" --cross-encoder "$W/teacher/final" --ce-activation none --ce-max-length "$TEACHER_MAXLEN" \
    --overwrite --quiet
fi

if has students; then
  STEPS=()
  [ "$STUDENT_STEPS" -gt 0 ] && STEPS=(--max-steps "$STUDENT_STEPS")
  [ "$STUDENT_BATCH" -gt 0 ] && STEPS+=(--per-device-train-batch-size "$STUDENT_BATCH")
  for seed in $SEEDS; do
    for kind in hard distill; do
      if [ $kind = hard ]; then L=(--loss listwise); else read -ra L <<<"--loss distill $DISTILL"; fi
      log "student $kind seed $seed: ${L[*]} ${STEPS[*]}"
      "${MPI[@]}" "$XRANK" train --config "$HERE/configs/demo.json" --model "$MODEL" --data "$W/$STU.ds" \
        --groups "$W/$STU.ce.h5" "${L[@]}" "${STEPS[@]}" --max-length "$MAXLEN" --seed "$seed" \
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
        --data "$W/$STU.ds" --groups "$W/$STU.ce.h5" "${L[@]}" --max-steps "${SPEED_STEPS:-6}" --logging-steps 1 \
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
t = json.load(open(os.path.join(w, "teacher_eval.json")))
print(f"dev queries {t['queries']}: retriever NDCG@10 {t['base']['ndcg@10']:.4f} MRR@10 {t['base']['mrr@10']:.4f}; "
      f"teacher NDCG@10 {t['reranked']['ndcg@10']:.4f} MRR@10 {t['reranked']['mrr@10']:.4f}")
res = {"hard": {"ndcg@10": [], "mrr@10": []}, "distill": {"ndcg@10": [], "mrr@10": []}}
for s in seeds:
    for k in res:
        e = dev(f"s_{k}_{s}")["reranked"]
        for m in res[k]:
            res[k][m].append(e[m])
        print(f"seed {s} {k:8s} NDCG@10 {e['ndcg@10']:.4f} MRR@10 {e['mrr@10']:.4f}")
sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
for m in ("ndcg@10", "mrr@10"):
    for k in res:
        v = res[k][m]
        print(f"{k:8s} mean {m} {statistics.mean(v):.4f} (sd {sd(v):.4f}, {len(v)} seeds)")
    d = [b - a for a, b in zip(res["hard"][m], res["distill"][m])]
    print(f"distill - hard {m} per seed: " + " ".join(f"{x:+.4f}" for x in d) +
          f"; mean {statistics.mean(d):+.4f} (sd {sd(d):.4f}, min {min(d):+.4f}, max {max(d):+.4f})")
PY
fi
log done
