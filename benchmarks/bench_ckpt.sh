#!/usr/bin/env bash
# bench_ckpt.sh: checkpoint write / read throughput and the training pause per checkpoint (issue 12), against the
# disk's sequential write speed measured here with dd (1 GiB, fdatasync). Trains STEPS steps of MODEL with a
# checkpoint every SAVE steps, then resumes from the first checkpoint; prints xrank's own summary lines.
#   flock /tmp/cpu.lock benchmarks/bench_ckpt.sh build/xrank MODEL_DIR [WORKDIR]
set -eu
XRANK=$1 MODEL=$2 W=${3:-/tmp/xrank_bench_ckpt}
STEPS=${STEPS:-6} SAVE=${SAVE:-2} NP=${NP:-1}
HERE=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$W" && mkdir -p "$W" && cd "$W"
echo "disk: $(dd if=/dev/zero of=ddtest bs=16M count=64 conv=fdatasync 2>&1 | tail -n1)"
rm -f ddtest
"$XRANK" tokenize --model "$MODEL" --input "$HERE/tests/fixtures/h5/flag.jsonl" --output ds --quiet
C=(train --model "$MODEL" --data ds --max-steps "$STEPS" --max-length 64 --per-device-train-batch-size 4
   --logging-steps 1 --loss bce)
mpirun -np "$NP" --oversubscribe "$XRANK" "${C[@]}" --output run --save-steps "$SAVE" 2>&1 | grep -E "checkpoint|xrank train: [0-9]+ steps"
du -sh "run/checkpoint-$SAVE"
mpirun -np "$NP" --oversubscribe "$XRANK" "${C[@]}" --output run --resume "run/checkpoint-$SAVE" 2>&1 | grep -E "resumed|xrank train: [0-9]+ steps"
