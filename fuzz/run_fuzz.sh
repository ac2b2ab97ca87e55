#!/usr/bin/env bash
# run_fuzz.sh BIN SEEDS WORK SECONDS [SEED [RUNS]]: fuzz BIN for SECONDS (each libFuzzer run at most RUNS inputs)
# from the committed SEEDS (read only: new inputs go to WORK/corpus), first replaying every regression input of
# SEEDS/crashes. A crash, a leak, a sanitizer report or an input that takes over 20 s fails; the input is left in
# WORK (libFuzzer prints its path). SEED 0 (the default) is a random seed, as for long local runs; the ctest tests
# pass a fixed seed.
#
# libhdf5 1.10.8 is not safe on damaged files (docs/RELIABILITY.md, "Fuzzing"). fuzz_h5 itself goes on past a
# signal raised inside libhdf5, and libhdf5's copies are not checked by ASan (fuzz/asan.supp); should a fault of
# libhdf5 on its own memory still end a run, it is recorded (the input kept in WORK/libhdf5/) and fuzzing goes on.
# That is: a deadly signal (SIGFPE, SIGSEGV, SIGBUS) whose faulting frame is in libhdf5, or an ASan memory error
# where libhdf5 made the access (through memcpy / memset / memmove) on a block libhdf5 allocated or at a wild
# address. Everything else fails.
set -euo pipefail
HERE=$(dirname "$(realpath "$0")") BIN=$(realpath "$1") SEEDS=$(realpath "$2")
WORK=$3 SECONDS_=$4 SEED=${5:-0} RUNS=${6:--1}
rm -rf "$WORK" && mkdir -p "$WORK/corpus" "$WORK/libhdf5" && cd "$WORK"
WORK=$(pwd)
export TMPDIR=$WORK
# allocator_may_return_null: a malloc past ASan's 1 TiB limit returns NULL, as it does on a real machine, instead
# of aborting (libhdf5 sizes a buffer from a damaged header and handles the NULL); our readers check sizes before
# allocating and die on NULL, which still fails the run, and any single allocation over 4 GiB still fails
# (-malloc_limit_mb below). fast_unwind_on_malloc=0: full allocation stacks (libhdf5 has no frame pointers), for
# the leak suppressions and the classification below.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:fast_unwind_on_malloc=0:allocator_may_return_null=1:suppressions=$HERE/asan.supp}
# leaks inside libhdf5 we cannot fix, each named by a function on its stack (fuzz/lsan.supp)
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$HERE/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# libhdf5_fault LOG: true when the report in LOG is a fault of libhdf5 on its own memory (see the top)
libhdf5_fault() {
  grep -qE '^SUMMARY: AddressSanitizer: (FPE|SEGV|BUS) \([^)]*libhdf5[^)]*\)' "$1" && return 0
  # a leak report right after fuzz_h5 recovered from a libhdf5 fault on that input, or at exit after a run in which
  # it recovered from some (it prints how many at exit; fuzz/fuzz_h5.c): the siglongjmp abandoned what libhdf5 and
  # our readers had allocated for those inputs, so no leak of theirs can be judged (libFuzzer's per-input leak
  # check still judges every input that did not fault)
  awk '/^==[0-9]+==WARNING: AddressSanitizer failed to allocate/ || /^=+$/ { next }
       /^==[0-9]+==ERROR: LeakSanitizer/ { ok = (last ~ /^fuzz_h5: libhdf5 faulted /); exit }
       NF { last = $0 }
       END { exit !ok }' "$1" && return 0
  grep -qE '^SUMMARY: AddressSanitizer: (heap-buffer-overflow|heap-use-after-free|global-buffer-overflow)' "$1" ||
    return 1
  # the access: frame #0 an interceptor, frame #1 in libhdf5; the block: first frame past the allocator in libhdf5,
  # or no block at all (ASan: "a wild pointer", not next to any allocation, so not next to one of ours)
  awk '/^(READ|WRITE) of size/ { acc = 1; next }
       /is a wild pointer/ { okA = 1 }
       acc == 1 && /^ *#0 / { ok0 = ($0 ~ /__interceptor_(memcpy|memset|memmove)|in (memcpy|memset|memmove) /); next }
       acc == 1 && /^ *#1 / { ok1 = ($0 ~ /libhdf5/); acc = 2; next }
       /allocated by thread/ { al = 1; next }
       al == 1 && /^ *#[0-9]+ / { if ($0 ~ / in (__interceptor_)?(malloc|calloc|realloc) /) next;
                                  okA = ($0 ~ /libhdf5/); al = 2 }
       END { exit !(ok0 && ok1 && okA) }' "$1"
}

# fuzz ARGS...: run BIN; a libhdf5 fault is recorded (its input moved to WORK/libhdf5) and returns 2
fuzz() {
  local log rc=0
  log=$(mktemp "$WORK/run.XXXXXX.log")
  "$BIN" "$@" > "$log" 2>&1 || rc=$?
  cat "$log"
  [ "$rc" = 0 ] && return 0
  if libhdf5_fault "$log"; then
    local unit
    unit=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    [ -n "$unit" ] && [ -f "$unit" ] && mv "$unit" "$WORK/libhdf5/"
    echo "run_fuzz.sh: a fault of libhdf5 on its own memory (recorded in $WORK/libhdf5, not ours): going on"
    return 2
  fi
  echo "run_fuzz.sh: FAILED (rc $rc): see above"
  exit "$rc"
}

if [ -d "$SEEDS/crashes" ]; then
  for f in "$SEEDS"/crashes/*; do fuzz "$f" || true; done
fi
end=$((SECONDS + SECONDS_)) round=0
while [ $((left = end - SECONDS)) -gt 0 ]; do
  seed=$SEED
  [ "$SEED" != 0 ] && seed=$((SEED + round))
  fuzz -max_total_time="$left" -runs="$RUNS" -seed="$seed" -timeout=20 -rss_limit_mb=4096 -malloc_limit_mb=4096 \
    -max_len=65536 -print_final_stats=1 corpus "$SEEDS" && break
  round=$((round + 1))
done
echo "run_fuzz.sh: passed; $(ls "$WORK/libhdf5" | wc -l) libhdf5 faults recorded in $WORK/libhdf5"
