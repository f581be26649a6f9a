#!/usr/bin/env bash
# The CUDA backend's checks, run on a machine with an NVIDIA GPU (issue 14):
#
#   tools/cuda_check.sh BIN_DIR OUT_DIR [STEPS]
#
# BIN_DIR holds a CUDA build's programs (build/bin of a build with
# PCFARM_CUDA=ON and PCFARM_BENCH=ON); OUT_DIR gets one log per step and
# summary.txt (one line per step: name, exit status, seconds). STEPS is a
# comma-separated subset of: tests, sanitizer, cli, gemm, engine (default:
# all). Needs python3 with torch on CUDA for the benches
# (bench/engine/torch_*.py) and compute-sanitizer for the sanitizer step.
#
#   tests      cuda_backend_test, backend_ops_test, llama_fixture_test and
#              engine_test: every op against the double reference, and the
#              CUDA backend against the CPU backend, on the GPU.
#   sanitizer  cuda_backend_test under compute-sanitizer memcheck and
#              racecheck (--error-exitcode 1).
#   cli        pcfarm local generate / eval / finetune with --backend cuda
#              and --backend cpu on a random small llama; compares tokens,
#              losses and the adapters (tools/compare_local_runs.py).
#   gemm       bench gemm_bench --backend cuda (against PyTorch).
#   engine     bench engine_bench --backend cuda (against PyTorch).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "$1" && pwd)
out=$2
steps=",${3:-tests,sanitizer,cli,gemm,engine},"
python=${PYTHON:-python3}
gpu=${PCFARM_CHECK_BACKEND:-cuda}  # another backend, to try this script without a GPU
mkdir -p "$out"
out=$(cd "$out" && pwd)
: >"$out/summary.txt"

run_step() {  # NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  printf '%-28s rc=%-3s %6.1f s\n' "$name" "$rc" "$(awk "BEGIN { print $t1 - $t0 }")" | tee -a "$out/summary.txt"
}
want() { [[ $steps == *",$1,"* ]]; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvidia-smi | sed -n 3p
  command -v nvcc >/dev/null && nvcc --version | tail -1
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

# The tests and the sanitizer runs in parallel: each is small beside the
# GPU, and the host has cores.
if want tests; then
  for t in cuda_backend_test backend_ops_test llama_fixture_test engine_test; do
    run_step "$t" 300 "$bin/$t" &
  done
fi
if want sanitizer; then
  for tool in memcheck racecheck; do
    run_step "$tool" 300 compute-sanitizer --tool "$tool" --error-exitcode 1 \
      "$bin/cuda_backend_test" &
  done
fi
wait

if want cli; then
  work=$(mktemp -d)
  "$bin/pcfarm" local make-model --out "$work/model" --config small >"$out/cli_make_model.log" 2>&1
  "$python" - "$work/data.jsonl" <<'EOF'
import json, random, sys
random.seed(7)
words = "the quick brown fox jumps over a lazy dog while five boxing wizards jump quickly".split()
with open(sys.argv[1], "w") as f:
    for i in range(48):
        f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(24))}) + "\n")
EOF
  printf 'the farm\nonce upon a time\nhello world\n' >"$work/prompts.txt"
  for be in cpu "$gpu"; do
    run_step "cli_generate_$be" 120 "$bin/pcfarm" local generate --backend "$be" \
      --model "$work/model" --prompt "once upon a time" --max-tokens 48 --json
    run_step "cli_sample_$be" 120 "$bin/pcfarm" local generate --backend "$be" \
      --model "$work/model" --prompt "hello world" --max-tokens 48 --temperature 0.8 \
      --top-p 0.9 --seed 3 --json
    run_step "cli_eval_$be" 120 "$bin/pcfarm" local eval --backend "$be" \
      --model "$work/model" --data "$work/data.jsonl" --json
    run_step "cli_finetune_$be" 120 "$bin/pcfarm" local finetune --backend "$be" \
      --model "$work/model" --data "$work/data.jsonl" --out "$work/adapter_$be" \
      --steps 20 --batch 8 --lr 1e-3 --json
  done
  run_step cli_compare 60 "$python" "$here/tools/compare_local_runs.py" "$out" \
    "$work/adapter_cpu" "$work/adapter_$gpu" "$gpu"
  cat "$out/cli_compare.log"
  rm -rf "$work"
fi

if want gemm; then
  run_step gemm_bench 200 "$bin/gemm_bench" --backend cuda --threads "$(nproc)" --python "$python" \
    --torch-script "$here/bench/engine/torch_gemm.py"
  cat "$out/gemm_bench.log"
fi
if want engine; then
  run_step engine_bench 300 "$bin/engine_bench" --backend cuda --threads "$(nproc)" \
    --python "$python" --torch-script "$here/bench/engine/torch_llama.py"
  cat "$out/engine_bench.log"
fi
cat "$out/summary.txt"
