#!/usr/bin/env bash
# run_fuzz.sh BIN SEEDS WORK SECONDS [SEED [RUNS]]: fuzz BIN for SECONDS (and at most RUNS inputs) from the
# committed SEEDS (read only: new inputs go to WORK/corpus), first replaying every regression input of
# SEEDS/crashes if there is one. A crash, a leak, a sanitizer report or an input that takes over 20 s fails; the
# input is left in WORK (libFuzzer prints its path). SEED 0 (the default) is a random seed, as for long local
# runs; the ctest tests pass a fixed seed and RUNS so that CI replays the same inputs for a given build (libhdf5
# crashes on some damaged files where no reader can check first: docs/RELIABILITY.md, "Fuzzing").
set -euo pipefail
HERE=$(dirname "$(realpath "$0")") BIN=$(realpath "$1") SEEDS=$(realpath "$2")
WORK=$3 SECONDS_=$4 SEED=${5:-0} RUNS=${6:--1}
rm -rf "$WORK" && mkdir -p "$WORK/corpus" && cd "$WORK"
export TMPDIR=$WORK
# allocator_may_return_null: a malloc past ASan's 1 TiB limit returns NULL, as it does on a real machine, instead
# of aborting (libhdf5 sizes a buffer from a damaged header and handles the NULL); our readers check sizes before
# allocating and die on NULL, which still fails the run, and any single allocation over 4 GiB still fails
# (-malloc_limit_mb below)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:fast_unwind_on_malloc=0:allocator_may_return_null=1:suppressions=$HERE/asan.supp}
# leaks inside libraries we cannot fix, each named by a function on its stack (fuzz/lsan.supp)
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$HERE/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ -d "$SEEDS/crashes" ]; then "$BIN" "$SEEDS"/crashes/*; fi
"$BIN" -max_total_time="$SECONDS_" -runs="$RUNS" -seed="$SEED" -timeout=20 -rss_limit_mb=4096 -malloc_limit_mb=4096 \
  -max_len=65536 -print_final_stats=1 corpus "$SEEDS"
