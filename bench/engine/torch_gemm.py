#!/usr/bin/python3
"""The PyTorch (cuBLAS) baseline of `gemm_bench --backend cuda`: the same
products on the same GPU, timed as gemm_bench times ours (host clock
around the launch and a synchronize).

Run by gemm_bench as a subprocess:
    torch_gemm.py SHAPES_JSON
SHAPES_JSON holds {"reps": n, "shapes": [{"m":, "n":, "k":, "backward": bool,
"a": "f32"|"bf16"|"f16", "b": "f32"|"bf16"|"f16"}, ...]}, in gemm_bench's
layout: c[M,N] = a[M,K]·b[N,K]ᵀ, or with "backward" c[M,K] = a[M,N]·b[N,K].
A 16-bit b beside an f32 a is widened to f32 inside the timed region (what
our backend does: PyTorch has no mixed product). TF32 stays off for f32
products. Prints one JSON object on the last line of stdout: per shape the
fastest time in seconds, and the device's own peaks measured on 8192³
products in f32, tf32 and bf16 (cuBLAS's figure for this GPU).
"""
import json
import sys
import time

import torch

DT = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def best_seconds(fn, reps):
    """Host clock around launch + synchronize, as gemm_bench times ours."""
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    reps = spec["reps"]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0),
           "cuda": torch.version.cuda, "shapes": []}
    for s in spec["shapes"]:
        m, n, k, back = s["m"], s["n"], s["k"], s["backward"]
        inner = n if back else k
        a = (torch.rand(m, inner, device=dev, generator=gen) * 2 - 1).to(DT[s["a"]])
        b = (torch.rand(n, k, device=dev, generator=gen) * 2 - 1).to(DT[s["b"]])
        mixed = a.dtype != b.dtype

        def run():
            bb = b.float() if mixed else b
            return a @ bb if back else a @ bb.t()

        out["shapes"].append({"seconds": best_seconds(run, reps)})
    peaks = {}
    big = 8192
    for name, dt, tf32 in (("f32", torch.float32, False), ("tf32", torch.float32, True),
                           ("bf16", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.rand(big, big, device=dev, generator=gen).to(dt)
        b = torch.rand(big, big, device=dev, generator=gen).to(dt)
        sec = best_seconds(lambda: a @ b, reps)
        peaks[name] = 2.0 * big ** 3 / sec / 1e12
        del a, b
    torch.backends.cuda.matmul.allow_tf32 = False
    out["peak_tflops"] = peaks
    print(json.dumps(out))


if __name__ == "__main__":
    main()
