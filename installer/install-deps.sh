#!/usr/bin/env bash
# Installs pcfarm's build and runtime dependencies from Debian's packages.
# Idempotent: packages already present are left alone, and apt-get runs only
# when something is missing. Works as root or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ccache
  libzmq3-dev cppzmq-dev libsodium-dev libsqlite3-dev sqlite3
  libprotobuf-dev protobuf-compiler
  catch2 libcli11-dev nlohmann-json3-dev libcpp-httplib-dev
  libopenblas-dev libzstd-dev libspdlog-dev
  prometheus chromium chromium-driver python3-selenium
  libvulkan-dev glslc mesa-vulkan-drivers vulkan-tools
  clang libclang-rt-14-dev
  python3 python3-numpy
  # the worker's config (toml++), sd_notify and sd-bus (libsystemd),
  # systemd-analyze (unit tests), dpkg-shlibdeps and adduser (the .debs)
  libtomlplusplus-dev libsystemd-dev systemd dpkg-dev adduser
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages are present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
