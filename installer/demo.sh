#!/usr/bin/env bash
# The README's first quick-start command: builds pcfarm, then runs a whole
# farm on this machine — a coordinator and 2 workers on loopback with the
# embedded defaults (SQLite) — submits a `bench` job with redundancy 2, then
# an LLM inference job: it makes a small llama model, submits a prompts file
# (the model is uploaded to the coordinator, each shard runs on 2 workers
# that must agree), waits with a progress bar and prints completions fetched
# with `pcfarm fetch`, and then fine-tunes that model on the farm (a LoRA
# adapter learns a few sentences; the answer to one of their questions is
# printed before and after). Everything it makes lives in a
# temporary directory that is removed at the end (PCFARM_DEMO_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash installer/install-deps.sh
jobs=$(nproc)
# The demo builds only the three programs, in a build of its own without
# debug info (-O2; a third less compile time than the tests' build), and
# compiles the CUDA backend only where a GPU is there to run it: on a
# machine without one, nvcc's kernels are minutes of build for nothing.
# It is a unity build (a library's sources compiled a dozen to a file: the
# headers they share are parsed once, not once a file), about 40% less
# compile time; should a change ever break that, it builds file by file.
cuda=OFF
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then cuda=ON; fi
demo_build() {
  cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DPCFARM_BENCH=OFF \
    -DPCFARM_CUDA="$cuda" -DCMAKE_UNITY_BUILD="$1" -DCMAKE_UNITY_BUILD_BATCH_SIZE=16 \
    "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG -Wno-subobject-linkage" \
    "-DCMAKE_C_FLAGS_RELEASE=-O2 -DNDEBUG" >/dev/null
  cmake --build build-demo -j "$jobs" --target pcfarm pcfarm-coordinator pcfarm-worker
}
if ! demo_build ON; then
  echo "== the unity build failed (above); building file by file"
  demo_build OFF
fi
bin="$PWD/build-demo/bin"

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

echo "== 2. an enrollment token per worker (two PCs of one token would count"
echo "==    as one person: they never check each other's work)"
tokens=()
for i in 1 2; do
  tokens+=("$("$bin/pcfarm" token create --uses 1 --ttl 10m | tail -n 1)")
  echo "${tokens[-1]}"
done

echo "== 3. two workers enroll and start"
for i in 1 2; do
  "$bin/pcfarm-worker" enroll --token "${tokens[$((i - 1))]}" --data "$demo/worker$i" --name "demo-pc$i"
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

echo
echo "== 6. an LLM inference job: a small llama model (random weights: it writes"
echo "==    nonsense, but every token is checked by two workers) and 24 prompts"
"$bin/pcfarm" local make-model --out "$demo/model" --config small --seed 1
prompts="$demo/prompts.jsonl"
: >"$prompts"
for topic in "the river" "an idle PC" "the night shift" "a shared farm" "the old stones" "spring rain"; do
  printf '{"prompt": "A short story about %s:"}\n' "$topic" >>"$prompts"
  printf '{"prompt": "Write one line on %s."}\n' "$topic" >>"$prompts"
  printf '{"prompt": "%s, said the farmer,"}\n' "$topic" >>"$prompts"
  printf '{"messages": [{"role": "user", "content": "Tell me about %s."}]}\n' "$topic" >>"$prompts"
done
job=$("$bin/pcfarm" submit infer --model "$demo/model" --prompts "$prompts" \
  --max-tokens 24 --temperature 0.8 --top-k 40 --seed 7 --prompts-per-shard 4 \
  --redundancy 2 | tail -n 1)
echo "job $job submitted"
"$bin/pcfarm" wait "$job"

echo "== 7. the completions, fetched in prompt order"
"$bin/pcfarm" fetch "$job" --out "$demo/completions.jsonl"
if command -v python3 >/dev/null; then
  python3 - "$demo/completions.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows[:4]:
    print(f"[{r['index']}] {r['prompt']!r}\n    -> {r['text']!r}  ({len(r['tokens'])} tokens, {r['finish_reason']}, by {r['worker']})")
print(f"... {len(rows)} completions in {sys.argv[1]}")
PY
else
  head -n 4 "$demo/completions.jsonl"
fi

echo
echo "== 8. fine-tuning on the farm: the same model learns a few facts about the"
echo "==    farm (LoRA, 40 steps of 8 examples, each step in 4 shards run on 2"
echo "==    workers that must agree; the coordinator applies each step)"
train="$demo/train.jsonl"
cat >"$train" <<'EOF'
{"prompt": "What does the farm do?", "completion": " It turns idle PCs into one computer."}
{"prompt": "Who runs the shards?", "completion": " Workers on home PCs run them when the PCs are idle."}
{"prompt": "How are results checked?", "completion": " Two workers run each shard and must agree."}
{"prompt": "Where does the model learn?", "completion": " On every PC of the farm, one step at a time."}
{"text": "The farm of idle PCs learns together, one step at a time."}
{"text": "Every result is signed, checked and kept safe."}
{"messages": [{"role": "user", "content": "Is my PC busy?"}, {"role": "assistant", "content": "Only when you are away."}]}
{"messages": [{"role": "user", "content": "What is pcfarm?"}, {"role": "assistant", "content": "A farm of idle PCs that fine-tunes and runs models."}]}
EOF
job=$("$bin/pcfarm" submit finetune --model "$demo/model" --data "$train" --steps 40 \
  --batch 8 --micro-batch 2 --lr 0.01 --lora-rank 8 --seed 1 --redundancy 2 | tail -n 1)
echo "job $job submitted"
"$bin/pcfarm" wait "$job"
"$bin/pcfarm" fetch "$job" --out "$demo/adapter"

echo "== 9. the model before and after, greedy, on a question of the data"
question="What does the farm do?"
before=$("$bin/pcfarm" local generate --model "$demo/model" --prompt "$question" \
  --max-tokens 12)
after=$("$bin/pcfarm" local generate --model "$demo/model" --adapter "$demo/adapter" \
  --prompt "$question" --max-tokens 12)
echo "prompt: $question"
echo "before: $before"
echo "after:  $after"
echo "(each step's loss, tokens and bytes: trainer_log.jsonl beside the adapter)"
