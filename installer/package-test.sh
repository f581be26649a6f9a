#!/usr/bin/env bash
# The package test (issue 13): builds the .debs with installer/package.sh,
# installs them on this machine with dpkg -i, checks files, the pcfarm user
# and permissions and `systemd-analyze verify` of the installed units, runs
# `sudo pcfarm-worker enroll` in system mode against the installed
# coordinator, starts the installed unit's ExecStart line as the service
# would (as user pcfarm, NOTIFY_SOCKET set, or through systemctl when
# systemd is PID 1), runs a bench job, then removes and purges the packages.
#   bash installer/package-test.sh BUILD_DIR
# It changes the machine (a disposable CI one): it needs root, and is
# skipped (exit 77) without it or when pcfarm packages are already installed.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:?usage: package-test.sh BUILD_DIR}"
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the package test installs .debs and needs root"; exit 77
fi
for p in pcfarm-worker pcfarm-coordinator pcfarm; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    echo "SKIP: $p is installed on this machine; the test would remove it"; exit 77
  fi
done
if [ -e /var/lib/pcfarm-worker ] || [ -e /etc/pcfarm/worker.toml ]; then
  echo "SKIP: /var/lib/pcfarm-worker or /etc/pcfarm/worker.toml exists; not touching it"
  exit 77
fi

tmp="$(mktemp -d)"
chmod 0755 "$tmp"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  dpkg -P pcfarm-worker pcfarm-coordinator pcfarm >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }
check() { local what="$1"; shift; if "$@"; then echo "ok: $what"; else fail "$what"; fi; }

mapfile -t debs < <(bash "$src/installer/package.sh" "$build")
[ "${#debs[@]}" -eq 3 ] || fail "package.sh made ${#debs[@]} packages, not 3"
for deb in "${debs[@]}"; do
  depends="$(dpkg-deb -f "$deb" Depends)"
  check "$(basename "$deb") depends on no -dev package" \
    bash -c "! grep -q -- '-dev' <<<'$depends'"
done

dpkg -i "${debs[@]}" >"$tmp/dpkg-install.log" 2>&1 || fail "dpkg -i (see log)"
check "pcfarm is a system user without a login shell" \
  bash -c 'getent passwd pcfarm | grep -Eq ":(/usr/sbin/nologin|/bin/false)$"'
check "/var/lib/pcfarm-worker is 0700 pcfarm:pcfarm" \
  test "$(stat -c '%a %U %G' /var/lib/pcfarm-worker)" = "700 pcfarm pcfarm"
check "/var/lib/pcfarm-coordinator is 0700 pcfarm:pcfarm" \
  test "$(stat -c '%a %U %G' /var/lib/pcfarm-coordinator)" = "700 pcfarm pcfarm"
for f in /usr/bin/pcfarm-worker /usr/bin/pcfarm-coordinator /usr/bin/pcfarm \
         /lib/systemd/system/pcfarm-worker.service /lib/systemd/system/pcfarm-coordinator.service \
         /usr/share/doc/pcfarm-worker/worker-config.md; do
  check "$f installed" test -e "$f"
done
if command -v systemd-analyze >/dev/null; then
  check "systemd-analyze verify of the installed units" \
    bash -c '[ -z "$(systemd-analyze verify /lib/systemd/system/pcfarm-worker.service /lib/systemd/system/pcfarm-coordinator.service 2>&1)" ]'
fi

# A coordinator from the installed package, on free loopback ports.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cdir="$tmp/coordinator"
/usr/bin/pcfarm-coordinator init --data "$cdir" --workers-endpoint "tcp://127.0.0.1:$(port)" \
  --clients-endpoint "tcp://127.0.0.1:$(port)" >"$tmp/init.log" 2>&1 || fail "coordinator init"
/usr/bin/pcfarm-coordinator serve --data "$cdir" --heartbeat-interval-ms 200 >"$tmp/coordinator.log" 2>&1 &
pids+=($!)
export PCFARM_PROFILE="$cdir/admin.profile"
for _ in $(seq 100); do pcfarm jobs >/dev/null 2>&1 && break; sleep 0.2; done
token="$(pcfarm token create --uses 1 --ttl 1h | tail -n 1)"

/usr/bin/pcfarm-worker enroll --token "$token" --name pkgtest >"$tmp/enroll.log" 2>&1 ||
  fail "system-mode enroll"
check "enroll wrote /etc/pcfarm/worker.toml" grep -q '^data_dir = "/var/lib/pcfarm-worker"' /etc/pcfarm/worker.toml
check "enroll wrote the keys, owned by pcfarm, 0600" \
  test "$(stat -c '%a %U' /var/lib/pcfarm-worker/worker.key)" = "600 pcfarm"
# A CI machine has no keyboard, but other builds use its CPU: let the
# worker count it as idle whatever they do.
sed -i 's/^idle_minutes = .*/idle_minutes = 0/; s/^max_other_cpu_percent = .*/max_other_cpu_percent = 100/' \
  /etc/pcfarm/worker.toml
check "the edited config says so" grep -q '^max_other_cpu_percent = 100' /etc/pcfarm/worker.toml
if [ -d /run/systemd/system ]; then systemctl restart pcfarm-worker.service; fi

if [ -d /run/systemd/system ]; then
  check "enroll enabled and started pcfarm-worker.service" systemctl is-active --quiet pcfarm-worker.service
else
  check "enroll says how to start the worker without systemd" grep -q "systemd is not running here" "$tmp/enroll.log"
  # The service's ExecStart line, as the service's user, with a notify
  # socket that records what the worker tells systemd.
  exec_start="$(sed -n 's/^ExecStart=//p' /lib/systemd/system/pcfarm-worker.service)"
  python3 - "$tmp/notify.sock" "$tmp/notify.txt" >"$tmp/notify.log" 2>&1 <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777)
while True:
    data = s.recv(4096)
    with open(sys.argv[2], "ab") as f: f.write(data + b"\n")
PY
  pids+=($!)
  for _ in $(seq 50); do [ -S "$tmp/notify.sock" ] && break; sleep 0.1; done
  # shellcheck disable=SC2086
  NOTIFY_SOCKET="$tmp/notify.sock" setpriv --reuid=pcfarm --regid=pcfarm --init-groups \
    --inh-caps=-all -- $exec_start >"$tmp/worker.log" 2>&1 &
  worker_pid=$!
  pids+=($worker_pid)
  for _ in $(seq 100); do grep -q "READY=1" "$tmp/notify.txt" 2>/dev/null && break; sleep 0.1; done
  check "the worker told systemd READY=1" grep -q "READY=1" "$tmp/notify.txt"
fi

job="$(pcfarm submit bench --shards 2 --size 64 --redundancy 1 | tail -n 1)"
check "a bench job runs on the installed worker" pcfarm wait "$job" --max-wait 60
pcfarm-worker status >"$tmp/status.txt" 2>&1 || fail "pcfarm-worker status"
cat "$tmp/status.txt"
check "status names the farm" grep -q "^farm: .*worker .*'pkgtest'" "$tmp/status.txt"
check "status shows the state" grep -Eq "^state: +(idle-waiting|running)" "$tmp/status.txt"
check "status shows today's work" grep -Eq "^today: +2 shards" "$tmp/status.txt"

if [ -d /run/systemd/system ]; then
  systemctl stop pcfarm-worker.service
else
  kill -TERM "$worker_pid"
  wait "$worker_pid" || fail "the worker did not stop cleanly on SIGTERM"
  check "the worker told systemd STOPPING=1" grep -q "STOPPING=1" "$tmp/notify.txt"
fi

dpkg -r pcfarm-worker pcfarm-coordinator pcfarm >"$tmp/dpkg-remove.log" 2>&1 || fail "dpkg -r"
check "remove takes the program" test ! -e /usr/bin/pcfarm-worker
check "remove keeps the worker's keys" test -f /var/lib/pcfarm-worker/worker.key
check "remove keeps the config" test -f /etc/pcfarm/worker.toml
dpkg -P pcfarm-worker pcfarm-coordinator pcfarm >"$tmp/dpkg-purge.log" 2>&1 || fail "dpkg -P"
check "purge deletes the worker's data" test ! -e /var/lib/pcfarm-worker
check "purge deletes the coordinator's data" test ! -e /var/lib/pcfarm-coordinator
check "purge deletes the config" test ! -e /etc/pcfarm/worker.toml
echo "package test passed"
