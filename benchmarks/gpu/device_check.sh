#!/usr/bin/env bash
# benchmarks/gpu/device_check.sh: run on a GPU machine that has the CUDA toolkit but not xrank's Debian
# dependencies: builds the CUDA smoke test and the GEMM peak benchmark with nvcc alone and runs them.
# cuDNN / NCCL headers and libraries are taken from the toolkit, or from the nvidia-* Python wheels.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUTD=${OUT:-/tmp/xr_gpu}; mkdir -p "$OUTD"
B=/tmp/xr_gpu_build; mkdir -p $B/lib
inc=(); lib=(-L"$B/lib")
# cuDNN and NCCL: the toolkit's own copies when present, else the nvidia-* wheels PyTorch brings.
for pkg in cudnn nccl; do
  [ -e /usr/local/cuda/include/$pkg.h ] && continue
  d=$(python3 -c "import nvidia.$pkg as m; print(list(m.__path__)[0])" 2>/dev/null || true)
  [ -n "$d" ] && [ -d "$d/include" ] || { echo "no $pkg found (toolkit or nvidia-$pkg wheel)" >&2; exit 1; }
  inc+=(-I"$d/include"); lib+=(-Xlinker -rpath="$d/lib")
  so=$(ls "$d"/lib/lib$pkg.so* | head -1); ln -sf "$so" "$B/lib/lib$pkg.so"
  echo "$pkg from $d"
done
nvcc -O2 -arch=sm_90 -Ibase -Iio -Icore "${inc[@]}" -c core/cuda/cuda_smoke.cu -o $B/cuda_smoke.o
for f in tests/test_cuda_smoke.c tests/testutil.c base/xr_common.c; do
  gcc -O2 -std=c11 -D_GNU_SOURCE -DXR_HAVE_CUDA=1 -Ibase -Iio -Icore -Itests -DXR_TEST_DIR="\"$PWD/tests\"" \
    -DXR_BUILD_DIR="\"$B\"" -c $f -o $B/$(basename $f .c).o
done
nvcc -o $B/test_cuda_smoke $B/cuda_smoke.o $B/test_cuda_smoke.o $B/testutil.o $B/xr_common.o "${lib[@]}" -lcublas -lcudnn -lnccl
nvcc -O2 -arch=sm_90 benchmarks/gpu/gemm_peak.cu -lcublasLt -lcublas -o $B/gemm_peak
echo "== test_cuda_smoke"; $B/test_cuda_smoke
echo "== gemm_peak"; $B/gemm_peak 20 | tee "$OUTD/gemm_peak.jsonl"
