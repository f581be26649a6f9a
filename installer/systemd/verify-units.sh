#!/usr/bin/env bash
# Checks pcfarm's systemd units: `systemd-analyze verify` passes and
# `systemd-analyze security` rates each service "OK" or better. Runs in a
# throwaway root holding the units, the built binaries at their installed
# paths and the system's own units, so it needs neither root nor systemd as
# PID 1. Exit 77 (ctest: skipped) when systemd-analyze is absent.
#   bash installer/systemd/verify-units.sh BIN_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: verify-units.sh BIN_DIR}"
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze is not installed (apt-get install systemd)"
  exit 77
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
for unit_dir in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$unit_dir" ]; then cp -a "$unit_dir" "$root/usr/lib/systemd/"; break; fi
done
cp "$bin/pcfarm-worker" "$bin/pcfarm-coordinator" "$root/usr/bin/"
cp "$here"/pcfarm-worker.service "$here"/pcfarm-coordinator.service "$root/etc/systemd/system/"
status=0
for unit in pcfarm-worker.service pcfarm-coordinator.service; do
  if out="$(systemd-analyze verify --root="$root" "$root/etc/systemd/system/$unit" 2>&1)" &&
     [ -z "$out" ]; then
    echo "verify $unit: ok"
  else
    echo "verify $unit: FAILED"; echo "$out"; status=1
  fi
  line="$(systemd-analyze security --offline=true --root="$root" "$unit" 2>&1 | grep 'Overall exposure level' || true)"
  echo "security $unit: ${line#→ }"
  case "$line" in
    *" SAFE"*|*" OK"*) ;;
    *) echo "security $unit: worse than OK"; status=1 ;;
  esac
done
exit $status
