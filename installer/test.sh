#!/usr/bin/env bash
# Builds pcfarm and runs every test. The README's second quick-start command.
#   bash installer/test.sh              # build in ./build, run ctest
#   PCFARM_SANITIZE=1 bash installer/test.sh   # ASan+UBSan build in ./build-asan
set -euo pipefail
cd "$(dirname "$0")/.."
bash installer/install-deps.sh

build=build
extra=()
if [ "${PCFARM_SANITIZE:-0}" = "1" ]; then
  build=build-asan
  # nvcc does not take the sanitizer flags; the CUDA code is compiled by the
  # plain build.
  extra+=(-DPCFARM_SANITIZE=ON -DPCFARM_BENCH=OFF -DPCFARM_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug
         "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g" "-DCMAKE_C_FLAGS_DEBUG=-O1 -g")
  export LSAN_OPTIONS="suppressions=$PWD/installer/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1"
  # The Vulkan loader unloads lavapipe when an instance goes away, and LSan
  # then reports the driver's leaks under "<unknown module>", where no
  # suppression can name them. Loaded up front, it stays loaded and its
  # leaks match leak:libvulkan_lvp (ASan must then not insist on being
  # first in the library list).
  for lvp in /usr/lib/*/libvulkan_lvp.so; do
    if [ -e "$lvp" ]; then
      export LD_PRELOAD="$lvp${LD_PRELOAD:+:$LD_PRELOAD}"
      export ASAN_OPTIONS="verify_asan_link_order=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    fi
  done
fi
jobs=$(nproc)
cmake -S . -B "$build" -G Ninja "${extra[@]}" >/dev/null
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure -j "$jobs" ${PCFARM_CTEST_ARGS:-}
