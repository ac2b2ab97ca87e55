#!/usr/bin/env bash
# benchmarks/gpu/device_build.sh: runs ON the GPU machine (CUDA toolkit + PyTorch, none of xrank's Debian deps,
# no network). Unpacks the .deb files that fetch_deps.sh put in .deps/ (call `run` with carry [".deps"]) into
# $XRDEPS (default /opt/xrdeps, never /), points pkg-config, CMake, the loader and the relocated Open MPI there,
# takes cuDNN and NCCL from PyTorch's nvidia-* wheels, configures and builds the real CMake project and runs ctest.
# Usage: benchmarks/gpu/device_build.sh [ctest args...]   (env: XRDEPS, XR_BUILD, XR_JOBS; XR_CTEST=0: build only)
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
. benchmarks/gpu/device_env.sh   # P, B, A and the run-time environment (library paths, relocated Open MPI)
J=${XR_JOBS:-$(nproc)}
[ -d .deps ] && ls .deps/*.deb >/dev/null 2>&1 || { echo "no .deps/*.deb: run benchmarks/gpu/fetch_deps.sh here and carry .deps" >&2; exit 1; }

unpack() {  # dpkg -x where dpkg exists, else ar + tar (a .deb is an ar archive holding data.tar.*)
    if command -v dpkg >/dev/null; then dpkg -x "$1" "$2"; else
        local t; t=$(mktemp -d); (cd "$t" && ar x "$1" && tar -xf data.tar.* -C "$2"); rm -rf "$t"; fi
}
have_soname() { ldconfig -p | grep -qE "^[[:space:]]+$1 \("; }

# ---- 1. unpack: the build deps always; a base-system package only when the machine lacks one of its libs ----
if [ ! -e "$P/.unpacked" ]; then
    mkdir -p "$P"
    base=" $(tr '\n' ' ' < .deps/base.txt 2>/dev/null || true) "
    for f in .deps/*.deb; do
        pkg=$(basename "$f"); pkg=${pkg%%_*}
        if [[ "$base" == *" $pkg "* ]]; then
            st=$(mktemp -d); unpack "$SRC/$f" "$st"; need=0
            for so in $(find "$st" -name 'lib*.so.*' -printf '%f\n' | sed -E 's/^(lib.*\.so\.[0-9]+).*/\1/' | sort -u); do
                have_soname "$so" || { need=1; echo "base lib missing here, using ours: $so"; }
            done
            [ $need = 1 ] && cp -a "$st"/. "$P"/
            rm -rf "$st"
        else
            unpack "$SRC/$f" "$P"
        fi
    done
    # absolute symlinks (e.g. libz.so -> /lib/.../libz.so.1.2.13) must point inside $P, or at the machine's own
    find "$P" -type l -lname '/*' | while read -r l; do
        t=$(readlink "$l")
        if [ -e "$P$t" ]; then ln -sfn "$P$t" "$l"
        elif [ ! -e "$t" ]; then
            so=$(basename "$t" | sed -E 's/^(lib.*\.so\.[0-9]+).*/\1/')
            sys=$(ldconfig -p | awk -v s="$so" '$1 == s && /x86-64/ {print $NF; exit}')
            [ -n "$sys" ] && ln -sfn "$sys" "$l" || echo "warning: dangling link $l -> $t" >&2
        fi
    done
    # links Debian makes with update-alternatives in postinst scripts, which dpkg -x does not run
    ln -sfn openblas-pthread/libopenblas.so.0 "$P/usr/lib/$A/libopenblas.so.0"
    ln -sfn openblas-pthread/libopenblas.so "$P/usr/lib/$A/libopenblas.so"
    ln -sfn ../openblas-pthread/pkgconfig/openblas.pc "$P/usr/lib/$A/pkgconfig/openblas.pc"
    ln -sfn hdf5-serial.pc "$P/usr/lib/$A/pkgconfig/hdf5.pc"
    for w in mpicc mpicxx mpirun mpiexec; do ln -sfn $w.openmpi "$P/usr/bin/$w"; done
    # pkg-config files name /usr: rewrite them to the prefix (real files only; links follow)
    find "$P" -name '*.pc' -type f -exec sed -i -E "s#(=|-I|-L|-Wl,-rpath,)/usr([/ ]|\$)#\1$P/usr\2#g" {} +
    touch "$P/.unpacked"
fi

# ---- 2. cuDNN / NCCL: the toolkit's copies when present, else PyTorch's nvidia-* wheels ----
CU=()
mkdir -p "$B/cudalib"
for pkg in cudnn nccl; do
    [ -e /usr/local/cuda/include/$pkg.h ] && continue
    d=$(python3 -c "import nvidia.$pkg as m; print(list(m.__path__)[0])" 2>/dev/null || true)
    [ -n "$d" ] && [ -d "$d/include" ] || { echo "no $pkg (toolkit or nvidia-$pkg wheel): CUDA backend will be off" >&2; continue; }
    so=$(ls "$d"/lib/lib$pkg.so* | sort | head -1); ln -sfn "$so" "$B/cudalib/lib$pkg.so"
    U=$(echo $pkg | tr a-z A-Z)
    CU+=(-D${U}_LIB="$B/cudalib/lib$pkg.so" -D${U}_INC="$d/include")   # device_env.sh put $d/lib on the path
done
command -v nvcc >/dev/null && CU+=(-DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_CUDA_ARCHITECTURES=${XR_CUDA_ARCH:-90})

# ---- 3. configure, build, test ----
PKGC=$(command -v pkg-config || echo "$P/usr/bin/pkg-config")
cmake -S "$SRC" -B "$B" -DXRANK_WERROR=ON -DCMAKE_PREFIX_PATH="$P/usr" -DPKG_CONFIG_EXECUTABLE="$PKGC" \
    -DMPI_C_COMPILER="$P/usr/bin/mpicc.openmpi" -DMPIEXEC_EXECUTABLE="$P/usr/bin/mpirun.openmpi" \
    -DHDF5_ROOT="$P/usr/lib/$A/hdf5/serial" -DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON -DZLIB_ROOT="$P/usr" "${CU[@]}"
grep -E '^(CUDNN_LIB|NCCL_LIB|MPI_C_LIB_NAMES|HDF5_C_LIBRARY_hdf5|ZLIB_LIBRARY_RELEASE):' "$B/CMakeCache.txt" || true
t0=$(date +%s); brc=0
cmake --build "$B" -j"$J" -- -k || { brc=1; echo "BUILD HAD ERRORS: testing what was built" >&2; }
echo "build: $(( $(date +%s) - t0 )) s with -j$J on $(nproc) cores$([ $brc = 0 ] || echo ', WITH ERRORS')"
# the relocated Open MPI must start ranks before the multi-rank tests can mean anything
if timeout 60 "$MPIRUN" -np 2 true; then echo "mpirun -np 2: ok"; else echo "mpirun -np 2: FAILED" >&2; fi
[ "${XR_CTEST:-1}" = 0 ] && exit $brc
cd "$B"; rc=0; ctest --output-on-failure -j"${XR_TEST_JOBS:-4}" --timeout "${XR_TEST_TIMEOUT:-240}" "$@" || rc=$?
# the GPU tests' own output (max abs diffs per op) even when they pass
[ "${XR_CUDA_VERBOSE:-0}" = 1 ] && ctest -R cuda -V --timeout 240 || true
exit $rc
