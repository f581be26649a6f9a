#!/usr/bin/env bash
# The README's first quick-start command: builds pcfarm, then runs a whole
# farm on this machine — a coordinator and 2 workers on loopback with the
# embedded defaults (SQLite) — submits a `bench` job with redundancy 2, waits
# for it and prints what the farm measured. Everything it makes lives in a
# temporary directory that is removed at the end (PCFARM_DEMO_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash installer/install-deps.sh
jobs=$(nproc)
cmake -S . -B build -G Ninja >/dev/null
cmake --build build -j "$jobs" --target pcfarm pcfarm-coordinator pcfarm-worker
bin="$PWD/build/bin"

demo=$(mktemp -d /tmp/pcfarm-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${PCFARM_DEMO_KEEP:-0}" = "1" ]; then
    echo "demo files kept in $demo"
  else
    rm -rf "$demo"
  fi
}
trap cleanup EXIT

port_w=${PCFARM_DEMO_WORKERS_PORT:-7070}
port_c=${PCFARM_DEMO_CLIENTS_PORT:-7071}
echo "== 1. a coordinator (data in $demo/coordinator)"
"$bin/pcfarm-coordinator" init --data "$demo/coordinator" \
  --workers-endpoint "tcp://127.0.0.1:$port_w" \
  --clients-endpoint "tcp://127.0.0.1:$port_c" \
  --advertise "tcp://127.0.0.1:$port_w"
"$bin/pcfarm-coordinator" serve --data "$demo/coordinator" 2>"$demo/coordinator.log" &
pids+=($!)
export PCFARM_PROFILE="$demo/coordinator/admin.profile"

echo "== 2. an enrollment token for 2 workers"
token=$("$bin/pcfarm" token create --uses 2 --ttl 10m | tail -n 1)
echo "$token"

echo "== 3. two workers enroll and start"
for i in 1 2; do
  "$bin/pcfarm-worker" enroll --token "$token" --data "$demo/worker$i" --name "demo-pc$i"
  "$bin/pcfarm-worker" run --data "$demo/worker$i" 2>"$demo/worker$i.log" &
  pids+=($!)
done

echo "== 4. a bench job: 8 shards of 384x384 f32 GEMM, each run on 2 workers"
job=$("$bin/pcfarm" submit bench --shards 8 --size 384 --reps 3 --redundancy 2 | tail -n 1)
echo "job $job submitted"
"$bin/pcfarm" wait "$job"

echo "== 5. what the farm measured"
"$bin/pcfarm" workers
echo
"$bin/pcfarm" status "$job" --json
