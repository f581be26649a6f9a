#!/usr/bin/python3
"""Compares `pcfarm local` runs on two backends, as tools/cuda_check.sh
leaves them: OUT_DIR/cli_{generate,sample,eval,finetune}_{cpu,cuda}.log
(the --json lines) and the two adapters' directories.

    compare_local_runs.py OUT_DIR ADAPTER_CPU ADAPTER_GPU [GPU_BACKEND]

Prints one line per comparison and exits 1 if any fails: greedy tokens
equal; sampled tokens equal; eval loss within 1e-4 (relative); finetune
loss at every step within 1e-3 (relative: 20 AdamW steps compound rounding);
the adapters' tensors within 1e-3 of the largest element. Standard library
only.
"""
import array
import json
import os
import struct
import sys


def lines(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        assert info["dtype"] == "F32", info["dtype"]
        out[name] = array.array("f", data[b:e])
    return out


def main():
    out, ad_cpu, ad_cuda = sys.argv[1:4]
    gpu = sys.argv[4] if len(sys.argv) > 4 else "cuda"
    failed = False

    def report(ok, what):
        nonlocal failed
        failed |= not ok
        print(("ok   " if ok else "FAIL ") + what)

    def log(name, be):
        return lines(os.path.join(out, f"cli_{name}_{be}.log"))

    for name in ("generate", "sample"):
        a, b = log(name, "cpu")[-1], log(name, gpu)[-1]
        same = 0
        while same < min(len(a["tokens"]), len(b["tokens"])) and a["tokens"][same] == b["tokens"][same]:
            same += 1
        lp = max((abs(x - y) for x, y in zip(a["logprobs"][:same], b["logprobs"][:same])), default=0)
        report(a["tokens"] == b["tokens"],
               f"{name}: {same} of {len(a['tokens'])} tokens equal; max |Δ logprob| {lp:.2e}")
    a, b = log("eval", "cpu")[-1], log("eval", gpu)[-1]
    rel = abs(a["loss"] - b["loss"]) / abs(a["loss"])
    report(rel <= 1e-4, f"eval: loss cpu {a['loss']:.8f} cuda {b['loss']:.8f} (rel {rel:.1e})")
    a = [x for x in log("finetune", "cpu") if "step" in x]
    b = [x for x in log("finetune", gpu) if "step" in x]
    worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b))
    report(len(a) == len(b) and len(a) > 0 and worst <= 1e-3,
           f"finetune: {len(a)} steps, losses {a[0]['loss']:.5f} -> {a[-1]['loss']:.5f} (cpu), "
           f"{b[0]['loss']:.5f} -> {b[-1]['loss']:.5f} (cuda); worst rel {worst:.1e}")
    ta = read_safetensors(os.path.join(ad_cpu, "adapter_model.safetensors"))
    tb = read_safetensors(os.path.join(ad_cuda, "adapter_model.safetensors"))
    worst = 0.0
    for name, x in ta.items():
        y = tb[name]
        diff = max(abs(p - q) for p, q in zip(x, y))
        worst = max(worst, diff / max(max(abs(p) for p in x), 1e-30))
    report(set(ta) == set(tb) and worst <= 1e-3,
           f"adapter: {len(ta)} tensors, worst max|Δ|/max|cpu| {worst:.1e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
