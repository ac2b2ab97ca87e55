#!/usr/bin/env bash
# run_fuzz.sh BIN SEEDS WORK SECONDS: fuzz BIN for SECONDS from the committed SEEDS (read only: new inputs go to
# WORK/corpus), first replaying every regression input of SEEDS/crashes if there is one. A crash, a leak, a
# sanitizer report or an input that takes over 20 s fails; the input is left in WORK (libFuzzer prints its path).
set -euo pipefail
BIN=$(realpath "$1") SEEDS=$(realpath "$2") WORK=$3 SECONDS_=$4
rm -rf "$WORK" && mkdir -p "$WORK/corpus" && cd "$WORK"
export TMPDIR=$WORK
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ -d "$SEEDS/crashes" ]; then "$BIN" "$SEEDS"/crashes/*; fi
"$BIN" -max_total_time="$SECONDS_" -timeout=20 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
  corpus "$SEEDS"
