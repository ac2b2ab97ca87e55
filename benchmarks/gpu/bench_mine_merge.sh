#!/usr/bin/env bash
# bench_mine_merge.sh: the per-rank top-k lists of `xrank mine` exchanged and merged at several rank counts
# (issue 16: the 8-rank merge), ranks sharing the machine's GPU(s) the way comm_device_index assigns them (node-local
# rank mod GPUs). A synthetic corpus (tools/synth_corpus.sh, tokenized by the tiny bert_st fixture: 16-dim
# embeddings, so the search is cheap and the merge shows) is mined once on 1 rank (which fills the embedding
# cache), then on each rank count from the cached embeddings; each run's group file must be byte-identical to
# the 1-rank file. One JSON line per run: wall seconds, the report's search / merge split (slowest rank) and the
# merged volume (queries x k x ranks list entries). mine_device_check.sh part bench runs it with 1 and 8 ranks.
# Usage: bench_mine_merge.sh XRANK MPIRUN OUT DEVICE PASSAGES QUERIES RANGE_MAX RANKS...   (DEVICE cpu|cuda)
# env: XR_MERGE_THREADS (OpenMP threads per rank, default: cores / ranks, at least 1)
set -uo pipefail
[ $# -ge 8 ] || { echo "usage: $0 XRANK MPIRUN OUT DEVICE PASSAGES QUERIES RANGE_MAX RANKS..." >&2; exit 2; }
XRANK=$1 MPIRUN=$2 OUT=$3 DEV=$4 NP=$5 NQ=$6 RMAX=$7; shift 7
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
M="$ROOT/tests/fixtures/cli/bert_st"
rm -rf "$OUT" && mkdir -p "$OUT" || exit 1
t0=$(date +%s)
"$ROOT/tools/synth_corpus.sh" "$M/vocab.txt" "$OUT/corpus" "$NP" "$NQ" &&
    "$XRANK" tokenize --model "$M" --input "$OUT/corpus" --output "$OUT/ds" --quiet ||
    { echo "bench_mine_merge: the synthetic corpus or its tokenization failed"; exit 1; }
echo "bench_mine_merge: $NP passages, $NQ queries made and tokenized in $(( $(date +%s) - t0 )) s"
BASE=(mine --model "$M" --input "$OUT/ds" --device "$DEV" --cache-dir "$OUT/cache" --query-block 1024
      --num-negatives 5 --range-max "$RMAX" --eval-depth 0)
rc=0
# run NAME RANKS: RANKS 0 = a plain process (the reference, which embeds and fills the cache)
run() {
    local name=$1 np=$2 pre=() th s0 s1 tl
    th=${XR_MERGE_THREADS:-$(( $(nproc) / (np > 0 ? np : 1) ))}; [ "$th" -ge 1 ] || th=1
    [ "$np" -gt 0 ] && pre=("$MPIRUN" -np "$np" --oversubscribe -x OMP_NUM_THREADS="$th")
    s0=$(date +%s.%N)
    if ! OMP_NUM_THREADS=$th "${pre[@]}" "$XRANK" "${BASE[@]}" --output "$OUT/$name.h5" 2> "$OUT/$name.log"; then
        echo "bench_mine_merge: $name FAILED (see $OUT/$name.log)"; tail -5 "$OUT/$name.log"; rc=1; return 1
    fi
    s1=$(date +%s.%N) # wall seconds computed in Python below (bc need not exist on the GPU machine: not in .deps)
    tl=$(grep -m1 "^  time:" "$OUT/$name.log")
    local same=true
    if [ "$name" != ref ]; then cmp -s "$OUT/ref.h5" "$OUT/$name.h5" || { same=false; rc=1; }; fi
    python3 - "$name" "$np" "$NP" "$NQ" "$RMAX" "$s0" "$s1" "$same" "$tl" <<'PY'
import json, re, sys
name, np_, n, q, rmax, s0, s1, same, tl = sys.argv[1:10]
wall = float(s1) - float(s0)
def f(key):
    m = re.search(key + r" ([0-9.]+) s", tl)
    return float(m.group(1)) if m else None
ranks = max(int(np_), 1)
print(json.dumps({"bench": "mine_merge", "run": name, "ranks": ranks, "passages": int(n), "queries": int(q),
                  "range_max": int(rmax), "wall_s": round(wall, 2), "embed_s": f("embed"),
                  "search_s": f("search"), "merge_s": f("merge"), "total_s": f("total"),
                  "identical_to_1_rank": same == "true", "time_line": tl.strip()}), flush=True)
PY
}
run ref 0 || exit 1
for np in "$@"; do run "np$np" "$np"; done
exit $rc
