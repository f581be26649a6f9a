#!/usr/bin/env bash
# Builds the Debian packages pcfarm-worker, pcfarm-coordinator and pcfarm
# (the CLI) from the tree, with dpkg-deb, into BUILD_DIR/packages/.
#   bash installer/package.sh              # builds ./build first if needed
#   bash installer/package.sh BUILD_DIR    # packages that build's binaries
# Depends lists only the runtime libraries the binaries link (found by
# dpkg-shlibdeps), never a -dev package. Maintainer scripts (installer/debian/)
# create the `pcfarm` system user and the 0700 state directories, keep the
# data on remove and delete it on purge.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$src/build}"
build="$(mkdir -p "$build" && cd "$build" && pwd)"
out="$build/packages"

if [ ! -x "$build/bin/pcfarm-worker" ] || [ ! -x "$build/bin/pcfarm-coordinator" ] ||
   [ ! -x "$build/bin/pcfarm" ]; then
  bash "$src/installer/install-deps.sh"
  cmake -S "$src" -B "$build" -G Ninja >/dev/null
  cmake --build "$build" --target pcfarm-worker pcfarm-coordinator pcfarm
fi

version="$(sed -n 's/^project(pcfarm VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")"
arch="$(dpkg --print-architecture)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Depends of the runtime libraries `binary` links, as dpkg-shlibdeps finds
# them (it wants a debian/control in the current directory).
shlib_depends() {
  mkdir -p "$work/shlibs/debian"
  printf 'Source: pcfarm\n\nPackage: pcfarm\nArchitecture: any\n' \
    >"$work/shlibs/debian/control"
  (cd "$work/shlibs" && dpkg-shlibdeps -O --ignore-missing-info -e"$1" 2>/dev/null) |
    sed -n 's/^shlibs:Depends=//p'
}

# make_package NAME DESCRIPTION EXTRA_DEPENDS BINARY [UNIT]
# EXTRA_DEPENDS: what the program needs but does not link: OpenBLAS is
# dlopen()ed (tasks/backend/cpu/blas.h), adduser runs in postinst. The
# Vulkan loader, also dlopen()ed, is recommended (the CPU works without it).
make_package() {
  local name="$1" description="$2" extra="$3" binary="$4" unit="${5:-}"
  local root="$work/$name"
  install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/doc/$name"
  # Debug info stays in the build; the package carries the stripped program.
  install -m 0755 "$build/bin/$binary" "$root/usr/bin/$binary"
  strip --strip-unneeded "$root/usr/bin/$binary"
  install -m 0644 "$src/README.md" "$root/usr/share/doc/$name/README.md"
  if [ "$name" = pcfarm-worker ]; then
    install -m 0644 "$src/docs/worker-config.md" "$root/usr/share/doc/$name/worker-config.md"
    # A build with CUDA: its backend is a module the programs open only when
    # CUDA is asked for (tasks/backend/cuda/cuda_module.h); they look for it
    # in ../lib/pcfarm beside /usr/bin. It links NVIDIA's CUDA runtime and
    # cuBLAS, which no Debian package provides: where they are missing, CUDA
    # reports itself unavailable and the worker uses its other devices.
    if [ -f "$build/bin/libpcfarm_cuda.so" ]; then
      install -d -m 0755 "$root/usr/lib/pcfarm"
      install -m 0644 "$build/bin/libpcfarm_cuda.so" "$root/usr/lib/pcfarm/libpcfarm_cuda.so"
      strip --strip-unneeded "$root/usr/lib/pcfarm/libpcfarm_cuda.so"
    fi
  fi
  if [ -n "$unit" ]; then
    install -d -m 0755 "$root/lib/systemd/system"
    install -m 0644 "$src/installer/systemd/$unit" "$root/lib/systemd/system/$unit"
  fi
  for script in postinst prerm postrm; do
    if [ -f "$src/installer/debian/$name.$script" ]; then
      install -m 0755 "$src/installer/debian/$name.$script" "$root/DEBIAN/$script"
    fi
  done
  local depends
  depends="$(shlib_depends "$root/usr/bin/$binary")"
  if [ -n "$extra" ]; then depends="$depends, $extra"; fi
  local size
  size="$(du -sk "$root" | cut -f1)"
  cat >"$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: pcfarm developers <pcfarm@localhost>
Installed-Size: $size
Depends: $depends
Recommends: libvulkan1
Section: misc
Priority: optional
Homepage: https://github.com/pcfarm/pcfarm
Description: $description
CONTROL
  dpkg-deb --root-owner-group --build "$root" "$out/${name}_${version}_${arch}.deb" >/dev/null
  echo "$out/${name}_${version}_${arch}.deb"
}

make_package pcfarm-worker \
  "pcfarm worker: runs LLM shards on this PC while it is idle
 Enrolls once with a token (sudo pcfarm-worker enroll --token T), then runs
 as the pcfarm-worker service, taking shards only while nobody uses the PC." \
  "libopenblas0, adduser" pcfarm-worker pcfarm-worker.service
make_package pcfarm-coordinator \
  "pcfarm coordinator: holds a farm's jobs, shards, workers and blobs
 Splits jobs into signed shards for pcfarm workers and verifies their results." \
  "libopenblas0, adduser" pcfarm-coordinator pcfarm-coordinator.service
make_package pcfarm \
  "pcfarm command line: submit, watch and fetch jobs on a pcfarm farm
 Also runs the engine on this machine alone (pcfarm local)." \
  "libopenblas0" pcfarm
