#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang + ASan in build-fuzz
# and runs each for a bounded time from a generated seed corpus.
#   bash installer/fuzz.sh                      # 20 s per target
#   PCFARM_FUZZ_SECONDS=300 bash installer/fuzz.sh
# Exits non-zero when any target crashes, leaks or times out; the input that
# did it is kept as build-fuzz/fuzz-artifacts/<target>-crash-*.
# The build names tests/fuzz as a module of its own, so it needs only base,
# crypto and proto, not the integration tests' dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${PCFARM_FUZZ_SECONDS:-20}
build=${PCFARM_FUZZ_BUILD:-build-fuzz}
jobs=${PCFARM_FUZZ_JOBS:-$(nproc)}
targets=(fuzz_worker_frame fuzz_coordinator_frame fuzz_client_request
         fuzz_client_reply fuzz_envelope fuzz_token fuzz_token_data
         fuzz_train_result)

CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja \
  -DPCFARM_FUZZ=ON -DPCFARM_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPCFARM_MODULES="base;crypto;proto;tests/fuzz" >/dev/null
cmake --build "$build" -j "$jobs" --target pcfarm_fuzz_seeds "${targets[@]}"

seeds="$build/fuzz-seeds"
rm -rf "$seeds"
"$build/bin/pcfarm_fuzz_seeds" "$seeds"
mkdir -p "$build/fuzz-artifacts"

failed=()
for t in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$t"  # grows across runs
  mkdir -p "$corpus"
  echo "== $t: ${seconds} s =="
  # A fixed seed (PCFARM_FUZZ_SEED, 0 = random) makes a CI run repeatable.
  if ! "$build/bin/$t" -max_total_time="$seconds" -timeout=10 -seed="${PCFARM_FUZZ_SEED:-1}" \
      -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$t-" \
      "$corpus" "$seeds/$t" >"$build/fuzz-artifacts/$t.log" 2>&1; then
    failed+=("$t")
    tail -n 40 "$build/fuzz-artifacts/$t.log"
  else
    grep -E "^stat::number_of_executed_units|^#[0-9]+.*DONE" \
      "$build/fuzz-artifacts/$t.log" | tail -n 2 || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing FAILED: ${failed[*]} (inputs in $build/fuzz-artifacts/)"
  exit 1
fi
echo "fuzzing passed: ${#targets[@]} targets, ${seconds} s each"
