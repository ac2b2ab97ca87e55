#!/usr/bin/env bash
# launch/test.sh: install what is missing (Debian packages, as root), configure, build with warnings as
# errors, run the whole ctest suite. Usage: launch/test.sh [ctest args...]   (BUILD_DIR=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/env.sh
xr_ensure_packages
if XR_MINILM_DIR=$(xr_fetch_minilm); then export XR_MINILM_DIR; else
  echo "all-MiniLM-L6-v2 not available: the real-model tests will be skipped"; unset XR_MINILM_DIR; fi
BUILD_DIR=${BUILD_DIR:-build}
mkdir -p "$BUILD_DIR"   # the configure log lives in the build dir, never in the tree
cmake -S . -B "$BUILD_DIR" -DXRANK_WERROR=ON -DCMAKE_BUILD_TYPE=Release >"$BUILD_DIR/configure.log" 2>&1 ||
  { cat "$BUILD_DIR/configure.log"; exit 1; }
grep -E "xrank:" "$BUILD_DIR/configure.log" || true
cmake --build "$BUILD_DIR" -j"$(nproc)"
cd "$BUILD_DIR"
ctest --output-on-failure -j"$(nproc)" "$@"
