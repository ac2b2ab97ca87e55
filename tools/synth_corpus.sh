#!/usr/bin/env bash
# synth_corpus.sh VOCAB OUTDIR PASSAGES QUERIES [SEED]: a synthetic BEIR-style retrieval set for mining at scale
# (tests/mine.cmake, benchmarks/bench_mine_ranks.sh): PASSAGES passages of 8-23 words drawn from the plain words
# of a WordPiece vocab.txt, QUERIES queries of 3-6 words taken from one passage (their positive, graded 1 in
# qrels/test.tsv) plus one random word. One awk process, seeded: the same arguments give the same files on the
# same awk. Sizes in the hundreds of thousands take seconds.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 VOCAB OUTDIR PASSAGES QUERIES [SEED]" >&2; exit 2; }
VOCAB=$1 OUT=$2 NP=$3 NQ=$4 SEED=${5:-16}
[ -s "$VOCAB" ] || { echo "$0: $VOCAB: no such vocab file" >&2; exit 1; }
mkdir -p "$OUT/qrels"
awk -v np="$NP" -v nq="$NQ" -v seed="$SEED" -v out="$OUT" '
  /^[a-z]+$/ { w[nw++] = $0 }
  END {
    if (nw < 100) { print "synth_corpus: fewer than 100 plain words in the vocab" > "/dev/stderr"; exit 1 }
    if (nq > np) { print "synth_corpus: more queries than passages" > "/dev/stderr"; exit 1 }
    srand(seed); nqw = 0
    corpus = out "/corpus.jsonl"; queries = out "/queries.jsonl"; qrels = out "/qrels/test.tsv"
    printf "" > corpus
    for (p = 0; p < np; p++) {
      len = 8 + int(rand() * 16); t = ""
      for (j = 0; j < len; j++) { x = w[int(rand() * nw)]; t = t (j ? " " : "") x; words[j] = x }
      printf "{\"_id\": \"p%d\", \"title\": \"\", \"text\": \"%s\"}\n", p, t > corpus
      # every (np / nq)-th passage gets a query made of a few of its words
      if (p % int(np / nq) == 0 && p / int(np / nq) < nq) {
        ql = 3 + int(rand() * 4); q = ""
        for (j = 0; j < ql; j++) q = q (j ? " " : "") words[int(rand() * len)]
        q = q " " w[int(rand() * nw)]
        qid[nqw] = "q" nqw; qpos[nqw] = p; qtext[nqw++] = q
      }
    }
    printf "" > queries
    for (i = 0; i < nqw; i++) printf "{\"_id\": \"%s\", \"text\": \"%s\"}\n", qid[i], qtext[i] > queries
    print "query-id\tcorpus-id\tscore" > qrels
    for (i = 0; i < nqw; i++) printf "%s\tp%d\t1\n", qid[i], qpos[i] > qrels
  }' "$VOCAB"
