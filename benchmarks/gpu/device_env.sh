# benchmarks/gpu/device_env.sh: sourced (not run) by the device scripts in this folder. One place for the
# environment that running xrank needs on the bare GPU machine after device_build.sh: the unpacked Debian libraries
# and the relocated Open MPI under $XRDEPS, cuDNN / NCCL from PyTorch's nvidia-* wheels when the toolkit has none.
# Sets P (deps prefix), B (build dir), A (multiarch), X (the xrank binary), MPIRUN (the relocated mpirun: never a
# machine's own, which would not match the libmpi xrank links), and the helpers xr_part and xr_have_gpu.
P=${XRDEPS:-/opt/xrdeps}
B=${XR_BUILD:-/tmp/xr_build}
A=x86_64-linux-gnu
X="$B/xrank"
MPIRUN="$P/usr/bin/mpirun.openmpi"
# XR_FAKE_GPU=1, for rehearsing the scripts on a machine without a GPU: X becomes a wrapper that turns every
# argument `cuda` (--device cuda) into cpu, so the parity steps' comparisons run end to end on the CPU (their bf16
# runs still fail: the CPU refuses --precision bf16). Never on the GPU machine.
if [ "${XR_FAKE_GPU:-0}" = 1 ] && [ -x "$X" ]; then
    mkdir -p "$B/fake_gpu"
    printf '#!/usr/bin/env bash\na=(); for x in "$@"; do [ "$x" = cuda ] && x=cpu; a+=("$x"); done\nexec %q "${a[@]}"\n' \
        "$X" > "$B/fake_gpu/xrank"
    chmod +x "$B/fake_gpu/xrank"; X="$B/fake_gpu/xrank"
fi
case ":${LD_LIBRARY_PATH:-}:" in
*":$P/usr/lib/$A:"*) ;;
*)
    LIBP="$P/usr/lib/$A:$P/lib/$A:$P/usr/lib/$A/openblas-pthread:$P/usr/lib/$A/hdf5/serial:$P/usr/lib/$A/openmpi/lib"
    export LD_LIBRARY_PATH="$LIBP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # cuDNN / NCCL: the toolkit's copies when present, else the nvidia-* wheels PyTorch brings
    for pkg in cudnn nccl; do
        [ -e /usr/local/cuda/include/$pkg.h ] && continue
        d=$(python3 -c "import nvidia.$pkg as m; print(list(m.__path__)[0])" 2>/dev/null) &&
            export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d/lib"
    done
    export PATH="$PATH:$P/usr/bin"   # after the machine's own tools: ours only fill gaps (pkg-config, mpicc)
    # the toolkit's nvcc even where the image's PATH lacks it (device_build.sh passes it to CMake from PATH)
    [ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc > /dev/null && export PATH="$PATH:/usr/local/cuda/bin"
    ;;
esac
export PKG_CONFIG_PATH="$P/usr/lib/$A/pkgconfig:$P/usr/share/pkgconfig"
export PKG_CONFIG_LIBDIR="$PKG_CONFIG_PATH"   # never the machine's own .pc files
export OPAL_PREFIX="$P/usr" PMIX_INSTALL_PREFIX="$P/usr"
# one node, run as root, no InfiniBand: shared-memory transport only, no UCX/OFI probing
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# Python's JSON lines reach their file even when a step's `timeout` kills the benchmark
export PYTHONUNBUFFERED=1
# PMIx looked for its plugins under /usr despite PMIX_INSTALL_PREFIX (seen 2026-11-25; mpirun still ran): name the dir
export PMIX_MCA_mca_base_component_path="$P/usr/lib/$A/pmix2/lib/pmix" PMIX_MCA_pcompress_base_silence_warning=1
# ... but Debian's PMIx 4.2 scans its built-in /usr/lib/$A/pmix2/lib/pmix FIRST and the path above only after it
# (strace, 2026-12-04), and the GPU machine's own /usr copy of pmix_mca_pcompress_zlib.so is from another PMIx
# (undefined symbol pmix_output_info): every mpirun and every singleton printed 3 lines of dlopen error per process.
# Excluding the component by name stops the dlopen. Checked here: a pmix_mca_pcompress_zlib.so that needs
# pmix_output_info, bind-mounted over that dir (unshare -m), gave the device's 3 error blocks per `mpirun -np 2` and
# 2 per singleton; with ^zlib none, and the runs passed (PMIX_MCA_mca_base_component_show_load_errors=0 did not
# silence it). zlib only compresses large PMIx blobs; the failing copy was never loaded anyway.
export PMIX_MCA_pcompress=^zlib

# xr_part NAME: true when $XR_PARTS (space-separated; default "all") selects the part NAME of a check script
xr_part() { [[ " ${XR_PARTS:-all} " == *" all "* || " ${XR_PARTS:-all} " == *" $1 "* ]]; }
# xr_have_gpu: true when the built xrank sees a CUDA device (its `version` line counts them)
xr_have_gpu() { "$X" version 2>/dev/null | grep -qE " [1-9][0-9]* device\(s\)"; }
# xr_test_output NAME: test NAME's block in the build's last ctest log (LastTest.log keeps a passing test's output
# too, in full); fails when that run did not include NAME
xr_test_output() {
    local log="$B/Testing/Temporary/LastTest.log"
    [ -f "$log" ] && grep -q "Testing: $1\$" "$log" || return 1
    awk -v t="$1" '$0 ~ ("Testing: " t "$") {on = 1} on {print} on && index($0, "\"" t "\" end time") == 1 {exit}' "$log"
}

# xr_test_verdict NAME OUTPUT: the end of a lines script for a test that prints "NAME: N checks passed" when it
# completes: fails when OUTPUT (xr_test_output's block) reports a failed check or an xrank error, or lacks that line
# (the test died: an xrank error or a crash, whose last lines are printed)
xr_test_verdict() {
    local t=$1 out=$2 rc=0
    grep -qE "check failed|checks failed|^xrank: error" <<< "$out" && rc=1
    if ! grep -qE "^$t: [0-9]+ checks passed" <<< "$out"; then
        echo "$t: ended without its 'checks passed' line (died or crashed); its last lines:"
        grep -vE "^(Test time|-+|<end of output>|Test (Passed|Failed)\.|\"$t\" end time)" <<< "$out" | tail -4 |
            sed 's/^/  /'
        rc=1
    fi
    return $rc
}
