#!/usr/bin/env bash
# benchmarks/gpu/prepare_carry.sh: run HERE, in the checkout that `run` sends (the one the session was started in),
# right before the device call of all_device_check.sh (or of train_ / mine_ / comm_device_check.sh). Makes what the
# call carries, where missing: .deps (fetch_deps.sh: the Debian build deps, ~24 MiB) and
# .cache/gpu_carry/minilm40.tar.xz (pack_minilm.py: all-MiniLM-L6-v2 in fp16, ~20 MiB; needs $XR_MINILM_DIR and a
# Python with tokenizers / safetensors / numpy, $XR_PY, default /work/venv/bin/python); writes
# .cache/gpu_carry/commit.txt (the commit the device has no .git to tell); and checks that the tree `run` sends
# (tracked and untracked-not-ignored files, shared/) plus the carry stays under run's 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
ls .deps/*.deb > /dev/null 2>&1 || benchmarks/gpu/fetch_deps.sh
mkdir -p .cache/gpu_carry
if [ ! -s .cache/gpu_carry/minilm40.tar.xz ]; then
    : "${XR_MINILM_DIR:?set XR_MINILM_DIR to all-MiniLM-L6-v2 (e.g. /work/main/.cache/models/all-MiniLM-L6-v2)}"
    "${XR_PY:-/work/venv/bin/python}" benchmarks/gpu/pack_minilm.py "$XR_MINILM_DIR" tests/fixtures/train/learn_beir \
        .cache/gpu_carry/minilm40.tar.xz
fi
c="$(git rev-parse --short HEAD)"
git diff --quiet HEAD || c="$c + uncommitted changes"
echo "$c ($(git log -1 --format='%cI %s' | cut -c1-100))" > .cache/gpu_carry/commit.txt
tree=$( (git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null || true) | tail -1 | cut -f1)
carry=$(du -cb .deps .cache/gpu_carry | tail -1 | cut -f1)
shared=0; [ -d shared ] && shared=$(du -sb shared | cut -f1)
total=$(( tree + carry + shared ))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "commit: $(cat .cache/gpu_carry/commit.txt)"
echo "sent: tree $(mib $tree) + .deps and .cache/gpu_carry $(mib $carry) + shared/ $(mib $shared) = $(mib $total) (limit 64 MiB)"
[ "$total" -lt $(( 64 * 1048576 )) ] || { echo "over run's 64 MiB: carry less" >&2; exit 1; }
