#!/usr/bin/env bash
# bench_knn.sh: the CPU search step of `xrank mine` (mining/knn_search) against the machine's measured fp32 GEMM
# peak (issue 4: target >= 60%). Builds bench_knn (Release), measures the GEMM peak for 1 and 2 threads (OpenBLAS
# and xrank's AVX-512 kernel, square and search-tile shapes, with OPENBLAS_CORETYPE as set and unset), then
# knn_search on random unit vectors (dim 384 and 768, k 100 and 10) for 1 and 2 threads, in the environment as set
# and with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (every search checks 4 queries against brute force).
# Each measurement runs under `flock $LOCK` (the shared CPU lock), one short command at a time.
# Usage: benchmarks/bench_knn.sh [--quick]    (--quick: 50k passages, 1 repeat)
# Env: BUILD_DIR (build-knn), LOCK (/tmp/cpu.lock; empty: no lock), OUT (benchmarks/results/knn_cpu_<date>.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-knn}
LOCK=${LOCK-/tmp/cpu.lock}
OUT=${OUT:-benchmarks/results/knn_cpu_$(date +%F).jsonl}
PASSAGES=200000 REPEATS=2
[ "${1:-}" = --quick ] && PASSAGES=50000 REPEATS=1

locked() { if [ -n "$LOCK" ]; then flock "$LOCK" "$@"; else "$@"; fi; }
UNSET=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
locked cmake --build "$BUILD_DIR" -j2 --target bench_knn >/dev/null
B=$BUILD_DIR/benchmarks/bench_knn
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" \
     " $(nproc) cpus  OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-<unset>}" >&2
echo "writing $OUT" >&2

# every GEMM measurement in both environments, then the machine's peak per thread count (the better environment)
declare -A PEAK
for t in 1 2; do
  locked "$B" --gemm --this-env --threads "$t" | tee -a "$OUT"
  locked "${UNSET[@]}" "$B" --gemm --this-env --threads "$t" | tee -a "$OUT"
  line=$(locked "$B" --peak --threads "$t")
  echo "$line" | tee -a "$OUT"
  PEAK[$t]=$(echo "$line" | sed -n 's/^{"bench":"gemm_peak","threads":[0-9]*,"gflops":\([0-9.]*\).*/\1/p')
  [ -n "${PEAK[$t]}" ] || { echo "no peak parsed from: $line" >&2; exit 1; }
done

# the searches: queries sized so one run takes about a second or more on 2 threads
for env_mode in as-set unset; do
  for dim in 384 768; do
    queries=2000
    [ "$dim" = 768 ] && queries=1000
    for k in 100 10; do
      for t in 2 1; do
        run=("$B" --search --threads "$t" --dim "$dim" --passages "$PASSAGES" --queries "$queries" --k "$k"
             --repeats "$REPEATS" --check 4 --peak-gflops "${PEAK[$t]}")
        if [ "$env_mode" = unset ]; then locked "${UNSET[@]}" "${run[@]}"; else locked "${run[@]}"; fi | tee -a "$OUT"
      done
    done
  done
done
