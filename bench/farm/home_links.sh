#!/usr/bin/env bash
# home_links.sh: farm fine-tuning over home links. Two workers, each in a
# network namespace of its own behind `tc tbf` rate limits (20 Mbit/s up,
# 100 Mbit/s down per worker: a home line; netem is not available here, so
# no added latency), a coordinator on the host. For each configuration the
# same fine-tuning job (the `small` demo llama, LoRA rank 8, --steps N
# inner steps of --batch 8 examples: the same examples for every mode) is
# submitted, waited for and fetched, and the script reports from the job's
# trainer_log.jsonl and the workers' logs:
#   bytes/example  (bytes up + down) / examples trained on
#   compute        Σ the workers' TaskKind::Run time / (2 workers · wall time)
#   loss           the fetched adapter's `pcfarm local eval` loss on the data
# Needs root (ip netns, tc). Usage (from the repository root, after
# building pcfarm, pcfarm-coordinator and pcfarm-worker into build/bin):
#   sudo bash bench/farm/home_links.sh [--bin build/bin] [--steps 100]
#        [--configs "sync/none sync/int8 diloco/int8/20 diloco/int8/50"]
# A diloco config may name its outer step too: diloco/CODEC/H/OUTER_LR/MU
# (e.g. diloco/int8/50/1.0/0.5); the defaults are --outer-lr 0.7,
# --outer-momentum 0.9.
set -euo pipefail
bin=build/bin
steps=100
configs="sync/none sync/int8 diloco/int8/20 diloco/int8/50"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --configs) configs=$2; shift 2 ;;
    *) echo "home_links.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done
bin=$(cd "$bin" && pwd)
[ "$(id -u)" = 0 ] || { echo "home_links.sh: needs root (ip netns, tc)" >&2; exit 1; }

work=$(mktemp -d /tmp/pcfarm-home-links.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for i in 0 1; do
    ip netns del "pcf-w$i" 2>/dev/null || true
    ip link del "pcf-h$i" 2>/dev/null || true
  done
  [ "${PCFARM_BENCH_KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# Two namespaces, a veth pair each: host 10.78.i.1, worker 10.78.i.2.
for i in 0 1; do
  ip netns del "pcf-w$i" 2>/dev/null || true
  ip link del "pcf-h$i" 2>/dev/null || true
  ip netns add "pcf-w$i"
  ip link add "pcf-h$i" type veth peer name "pcf-n$i"
  ip link set "pcf-n$i" netns "pcf-w$i"
  ip addr add "10.78.$i.1/24" dev "pcf-h$i"
  ip link set "pcf-h$i" up
  ip netns exec "pcf-w$i" ip addr add "10.78.$i.2/24" dev "pcf-n$i"
  ip netns exec "pcf-w$i" ip link set "pcf-n$i" up
  ip netns exec "pcf-w$i" ip link set lo up
  ip netns exec "pcf-w$i" ip route add default via "10.78.$i.1"
  # Down (host -> worker) 100 Mbit/s, up (worker -> host) 20 Mbit/s.
  tc qdisc add dev "pcf-h$i" root tbf rate 100mbit burst 128kb latency 100ms
  ip netns exec "pcf-w$i" tc qdisc add dev "pcf-n$i" root tbf rate 20mbit burst 32kb latency 100ms
done

port=7370
"$bin/pcfarm-coordinator" init --data "$work/coordinator" \
  --workers-endpoint "tcp://0.0.0.0:$port" \
  --clients-endpoint "tcp://127.0.0.1:$((port + 1))" \
  --advertise "tcp://10.78.0.1:$port" >/dev/null
"$bin/pcfarm-coordinator" serve --data "$work/coordinator" 2>"$work/coordinator.log" &
pids+=($!)
export PCFARM_PROFILE="$work/coordinator/admin.profile"
sleep 0.5
token=$("$bin/pcfarm" token create --uses 2 --ttl 10m | tail -n 1)
for i in 0 1; do
  ip netns exec "pcf-w$i" "$bin/pcfarm-worker" enroll --token "$token" \
    --data "$work/worker$i" --name "home-pc$i" >/dev/null
  ip netns exec "pcf-w$i" "$bin/pcfarm-worker" run --data "$work/worker$i" \
    2>"$work/worker$i.log" &
  pids+=($!)
done
for _ in $(seq 100); do
  n=$("$bin/pcfarm" workers --json | python3 -c 'import json,sys; print(sum(1 for w in json.load(sys.stdin) if w.get("connected")))' 2>/dev/null || echo 0)
  [ "$n" = 2 ] && break
  sleep 0.2
done

"$bin/pcfarm" local make-model --out "$work/model" --config small --seed 1 >/dev/null
python3 - "$work/train.jsonl" <<'PY'
import json, random, sys
random.seed(5)
words = "the farm learns from idle computers at night every worker signs its result and a river runs past stone".split()
with open(sys.argv[1], "w") as f:
    for i in range(256):
        n = random.randint(20, 60)
        f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(n)) + "."}) + "\n")
PY

echo "config,examples,wall_s,bytes_per_example,compute_fraction,loss" >"$work/results.csv"
for cfg in $configs; do
  IFS=/ read -r mode codec h olr mu <<<"$cfg"
  args=(--model "$work/model" --data "$work/train.jsonl" --steps "$steps" --batch 8
        --micro-batch 4 --lr 0.01 --lora-rank 8 --seed 1 --mode "$mode" --compress "$codec")
  [ "$mode" = diloco ] && args+=(--local-steps "$h")
  [ -n "${olr:-}" ] && args+=(--outer-lr "$olr")
  [ -n "${mu:-}" ] && args+=(--outer-momentum "$mu")
  for i in 0 1; do : >"$work/worker$i.log.mark"; wc -l <"$work/worker$i.log" >"$work/worker$i.log.mark"; done
  start=$(date +%s.%N)
  job=$("$bin/pcfarm" submit finetune "${args[@]}" | tail -n 1)
  "$bin/pcfarm" wait "$job" >/dev/null
  end=$(date +%s.%N)
  "$bin/pcfarm" fetch "$job" --out "$work/adapter-$job" >/dev/null
  loss=$("$bin/pcfarm" local eval --json --model "$work/model" --data "$work/train.jsonl" \
    --adapter "$work/adapter-$job" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["loss"])')
  python3 - "$cfg" "$work" "$job" "$start" "$end" "$loss" >>"$work/results.csv" <<'PY'
import json, re, sys
cfg, work, job, start, end, loss = sys.argv[1:]
rows = [json.loads(l) for l in open(f"{work}/adapter-{job}/trainer_log.jsonl")]
examples = sum(r.get("examples", 0) for r in rows)
traffic = sum(r.get("bytes_up", 0) + r.get("bytes_down", 0) for r in rows)
wall = float(end) - float(start)
run_ms = 0
for i in (0, 1):
    skip = int(open(f"{work}/worker{i}.log.mark").read().strip() or 0)
    for line in open(f"{work}/worker{i}.log").read().splitlines()[skip:]:
        m = re.search(r"done in (\d+) ms", line)
        if m:
            run_ms += int(m.group(1))
print(f"{cfg},{examples},{wall:.2f},{traffic / max(examples, 1):.0f},{run_ms / 1000 / (2 * wall):.3f},{float(loss):.4f}")
PY
  tail -n 1 "$work/results.csv"
done
echo
python3 - "$work/results.csv" "$steps" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
base = next((r for r in rows if r["config"] == "sync/none"), rows[0])
print(f"home_links: 2 workers behind tbf 20 Mbit/s up, 100 Mbit/s down; small llama, LoRA r8, {sys.argv[2]} steps of 8")
print("| config | examples | wall s | bytes/example | vs sync/none | workers computing | loss | vs sync/none |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    ratio = float(base["bytes_per_example"]) / max(float(r["bytes_per_example"]), 1)
    dl = (float(r["loss"]) - float(base["loss"])) / float(base["loss"]) * 100
    print(f"| {r['config']} | {r['examples']} | {r['wall_s']} | {r['bytes_per_example']} | {ratio:.1f}x fewer | {float(r['compute_fraction'])*100:.0f}% | {r['loss']} | {dl:+.2f}% |")
PY
