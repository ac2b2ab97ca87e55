#!/usr/bin/env bash
# bench_mine_ranks.sh: `xrank mine` at scale on the CPU (issue 16): a synthetic corpus (tools/synth_corpus.sh,
# default 200,000 passages and 20,000 queries, tiny bert_st fixture: 16-dim embeddings, many near-ties) mined on
# 1, 2 and 4 ranks with the CPU search, and with the device search driver on the CPU backend, resident and
# streamed under a --search-memory bound of a quarter of a 4-rank shard (1, 2, 4 ranks): every group file must be
# byte-identical to the first (tests/fixtures/mine/run_mine_synth.sh, the ctest mine_synth_cpu at 8,000
# passages). Prints each run's wall time, the report's time split and memory per rank.
# Usage: benchmarks/bench_mine_ranks.sh [PASSAGES [QUERIES]]   Env: BUILD_DIR (build), OUT (/tmp/xr_mine_ranks),
#        LOCK (/tmp/cpu.lock; empty: no lock). Runs under nice -n 10.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build} OUT=${OUT:-/tmp/xr_mine_ranks} LOCK=${LOCK-/tmp/cpu.lock}
NP=${1:-200000} NQ=${2:-20000}
. launch/env.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_pml=ob1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" \
     " $(nproc) cpus  load $(cut -d' ' -f1-3 /proc/loadavg)  $NP passages, $NQ queries"
cmd=(nice -n 10 bash tests/fixtures/mine/run_mine_synth.sh "$PWD/$BUILD_DIR/xrank" "$(command -v mpiexec)" "$PWD/tests"
     "$OUT" cpu "$NP" "$NQ")
if [ -n "$LOCK" ]; then flock "$LOCK" "${cmd[@]}"; else "${cmd[@]}"; fi
