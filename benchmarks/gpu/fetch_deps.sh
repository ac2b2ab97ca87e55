#!/usr/bin/env bash
# benchmarks/gpu/fetch_deps.sh: run HERE (a Debian 12 machine with apt), not on the GPU machine. Downloads the
# .deb files of xrank's build dependencies and the runtime libraries they pull in into .deps/ (git-ignored),
# so that benchmarks/gpu/device_build.sh can unpack them on the offline GPU machine (name .deps in `carry`).
# Base-system libraries (libc, libstdc++, openssl, krb5, ...) are fetched too but device_build.sh drops each one
# whose soname the GPU machine already has, so only what is missing there is used.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .deps
# dev packages: headers, .so links, pkg-config files, the MPI wrapper compilers
DEV="libopenblas-dev libopenblas-pthread-dev libcjson-dev libsentencepiece-dev libutf8proc-dev zlib1g-dev
     libhdf5-dev libaec-dev libopenmpi-dev pkgconf pkgconf-bin libpkgconf3"
# the libraries xrank links to and their own runtime dependencies (found with apt-cache depends --recurse)
LIBS="libopenblas0-pthread libgfortran5 libquadmath0 libcjson1 libsentencepiece0 libutf8proc2
      libhdf5-103-1 libhdf5-hl-100 libsz2 libaec0 libcurl4 libcurl3-gnutls
      libopenmpi3 openmpi-bin openmpi-common libpmix2 libevent-core-2.1-7 libevent-pthreads-2.1-7 libevent-2.1-7
      libhwloc15 libfabric1 libucx0 libibverbs1 ibverbs-providers librdmacm1 libpsm2-2 libpsm-infinipath1
      libnl-3-200 libnl-route-3-200 libmunge2 libnuma1 libudev1 libatomic1"
# base-system libraries the above need; used on the device only where it lacks the soname
BASE="libssl3 libnghttp2-14 librtmp1 libssh2-1 libpsl5 libldap-2.5-0 libsasl2-2 libsasl2-modules-db libgssapi-krb5-2
      libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 libbrotli1 libzstd1 libgnutls30 libhogweed6
      libnettle8 libidn2-0 libunistring2 libtasn1-6 libp11-kit0 libffi8 libgmp10 libdb5.3"
rm -f .deps/*.deb
(cd .deps && apt-get download $DEV $LIBS $BASE)
# slimmed for run's 64 MiB (tree + carry): static libraries (xrank links the shared ones), docs, man pages and
# translations are never used there; 7 MiB less, most of it libopenblas.a. Repacked as .deb (data.tar.xz), which
# device_build.sh unpacks with dpkg -x or ar + tar.
for f in .deps/*.deb; do
    d=$(mktemp -d)
    dpkg-deb -R "$f" "$d/p"
    rm -rf "$d/p/usr/share/doc" "$d/p/usr/share/man" "$d/p/usr/share/info" "$d/p/usr/share/locale"
    find "$d/p" -name '*.a' -delete
    dpkg-deb -Zxz -b "$d/p" "$f" > /dev/null
    rm -rf "$d"
done
# device_build.sh installs these base packages only where the GPU machine lacks their libraries
echo $BASE | tr ' ' '\n' > .deps/base.txt
ls .deps/*.deb | wc -l
du -sh .deps
