#!/usr/bin/python3
"""The PyTorch baseline of bench/engine/engine_bench: a plain eager-mode
llama (Hugging Face LlamaForCausalLM's maths, no transformers package) on the
same safetensors weights and the same token ids, timed the same way.

Run by engine_bench as a subprocess:
    torch_llama.py MODEL_DIR TOKENS_JSON THREADS [DEVICE]
DEVICE is cpu (default) or cuda (`engine_bench --backend cuda`): then every
tensor lives on the GPU and each timing ends with torch.cuda.synchronize().
TOKENS_JSON holds {"prefill": [[[ids...], ...], ...], "decode_prompt": [ids],
"decode_new": n, "train": [[ids...], ...], "train_steps": n, "lora_rank": r,
"lora_alpha": a, "reps": n}. Prints one JSON object on the last line of
stdout. Needs torch and numpy (Debian: python3-torch, python3-numpy).
"""
import ctypes
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    """name -> float32 torch tensor, read with struct/json/numpy."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = np.frombuffer(data, dtype=np.uint8, count=end - begin, offset=begin)
        dtype = info["dtype"]
        if dtype == "F32":
            arr = raw.view(np.float32).copy()
        elif dtype == "F16":
            arr = raw.view(np.float16).astype(np.float32)
        elif dtype == "BF16":
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {dtype}")
        out[name] = torch.from_numpy(arr.reshape(info["shape"]))
    return out


def read_vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


DEV = torch.device("cpu")


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


class Llama:
    def __init__(self, cfg, w):
        self.h = cfg["hidden_size"]
        self.nl = cfg["num_hidden_layers"]
        self.hq = cfg["num_attention_heads"]
        self.hkv = cfg.get("num_key_value_heads", self.hq)
        self.d = cfg.get("head_dim", self.h // self.hq)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        theta = cfg.get("rope_theta", 10000.0)
        if cfg.get("rope_scaling"):
            raise ValueError("rope_scaling is not implemented in this baseline")
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.d, 2, dtype=torch.float32,
                                                      device=DEV) / self.d))
        self.embed = w["model.embed_tokens.weight"]
        self.lm_head = w.get("lm_head.weight", self.embed)
        self.norm = w["model.norm.weight"]
        self.layers = []
        for i in range(self.nl):
            p = f"model.layers.{i}."
            L = {n: w[p + n + ".weight"] for n in (
                "input_layernorm", "post_attention_layernorm", "self_attn.q_proj",
                "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.up_proj", "mlp.down_proj")}
            self.layers.append(L)
        self.lora = {}  # (layer, name) -> (A, B, scale)

    def rms(self, x, wt):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * wt

    def linear(self, i, name, x):
        y = F.linear(x, self.layers[i][name])
        lo = self.lora.get((i, name))
        if lo is not None:
            a, b, s = lo
            y = y + F.linear(F.linear(x, a), b) * s
        return y

    def rope(self, x, pos):  # x [B, H, T, D], pos [T]
        ang = pos.to(torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x1, x2 = x[..., : self.d // 2], x[..., self.d // 2:]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    def forward(self, ids, cache=None, start=0):
        """ids [B, T]; cache: list of (k, v) [B, Hkv, Tmax, D] written at
        start..start+T. Returns final-norm hidden states [B, T, H]."""
        bsz, t = ids.shape
        pos = torch.arange(start, start + t, device=DEV)
        x = F.embedding(ids, self.embed)
        rep = self.hq // self.hkv
        for i, L in enumerate(self.layers):
            n1 = self.rms(x, L["input_layernorm"])
            q = self.linear(i, "self_attn.q_proj", n1).view(bsz, t, self.hq, self.d).transpose(1, 2)
            k = self.linear(i, "self_attn.k_proj", n1).view(bsz, t, self.hkv, self.d).transpose(1, 2)
            v = self.linear(i, "self_attn.v_proj", n1).view(bsz, t, self.hkv, self.d).transpose(1, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
            if cache is not None:
                kc, vc = cache[i]
                kc[:, :, start:start + t] = k
                vc[:, :, start:start + t] = v
                k, v = kc[:, :, : start + t], vc[:, :, : start + t]
            if rep > 1:
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.d)
            if t > 1:
                mask = torch.full((t, start + t), float("-inf"), device=DEV).triu(start + 1)
                scores = scores + mask
            att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(bsz, t, self.hq * self.d)
            x = x + self.linear(i, "self_attn.o_proj", att)
            n2 = self.rms(x, L["post_attention_layernorm"])
            g = F.silu(self.linear(i, "mlp.gate_proj", n2)) * self.linear(i, "mlp.up_proj", n2)
            x = x + self.linear(i, "mlp.down_proj", g)
        return self.rms(x, self.norm)


def best_time(fn, reps):
    fn()  # warm-up
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def openblas_core():
    # torch reaches OpenBLAS through libblas.so.3; asking libopenblas.so.0
    # returns the library already loaded, so this is the kernel set torch runs.
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except OSError:
        return "unknown"


def main():
    global DEV
    model_dir, tokens_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    DEV = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
    rss_at_start = read_vm("VmRSS")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(tokens_path) as f:
        spec = json.load(f)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    t0 = time.perf_counter()
    weights = {n: t.to(DEV) for n, t in
               read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    model = Llama(cfg, weights)
    sync()
    load_s = time.perf_counter() - t0
    model_bytes = sum(t.numel() * 4 for t in weights.values())
    del weights
    reps = spec["reps"]
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_s": load_s,
              "model_bytes": model_bytes, "rss_after_load": read_vm("VmRSS"),
              "rss_at_start": rss_at_start, "openblas_core": openblas_core()}

    reset_peak_rss()
    with torch.inference_mode():
        prefill = []
        for batch in spec["prefill"]:
            ids = torch.tensor(batch, dtype=torch.long, device=DEV)

            def run():
                hid = model.forward(ids)
                return F.linear(hid[:, -1], model.lm_head)

            s = best_time(run, reps)
            prefill.append({"batch": len(batch), "len": len(batch[0]), "seconds": s,
                            "tok_s": ids.numel() / s})
        result["prefill"] = prefill

        prompt = torch.tensor([spec["decode_prompt"]], dtype=torch.long, device=DEV)
        new = spec["decode_new"]
        tmax = prompt.shape[1] + new

        def generate():
            cache = [(torch.empty(1, model.hkv, tmax, model.d, device=DEV),
                      torch.empty(1, model.hkv, tmax, model.d, device=DEV))
                     for _ in range(model.nl)]
            hid = model.forward(prompt, cache, 0)
            tok = int(F.linear(hid[:, -1], model.lm_head).argmax(-1))
            toks = [tok]
            t1 = time.perf_counter()
            for step in range(new - 1):
                hid = model.forward(torch.tensor([[tok]], device=DEV), cache,
                                    prompt.shape[1] + step)
                tok = int(F.linear(hid[:, -1], model.lm_head).argmax(-1))
                toks.append(tok)
            return toks, time.perf_counter() - t1

        generate()  # warm-up
        best = None
        for _ in range(reps):
            toks, s = generate()
            if best is None or s < best:
                best = s
        result["decode"] = {"tokens": toks, "seconds": best, "tok_s": (new - 1) / best}
    result["peak_rss_inference"] = read_vm("VmHWM")
    result["kv_cache_bytes"] = 2 * model.nl * model.hkv * tmax * model.d * 4

    # LoRA training: rank r on q, k, v, o; AdamW with clipping at 1.0, as
    # LlamaModel's defaults (lr 1e-4, weight decay 0).
    r, alpha = spec["lora_rank"], spec["lora_alpha"]
    params = []
    for i in range(model.nl):
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
            w = model.layers[i][name]
            a = torch.empty(r, w.shape[1], device=DEV)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = torch.zeros(w.shape[0], r, device=DEV)
            a.requires_grad_(True)
            b.requires_grad_(True)
            model.lora[(i, name)] = (a, b, alpha / r)
            params += [a, b]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ids = torch.tensor(spec["train"], dtype=torch.long, device=DEV)
    losses = []

    def train_step():
        hid = model.forward(ids)
        logits = F.linear(hid, model.lm_head)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))

    train_step()  # warm-up (also the step whose loss is compared)
    sync()
    steps = spec["train_steps"]
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    s = (time.perf_counter() - t0) / steps
    result["train"] = {"seconds_per_step": s, "tok_s": ids.numel() / s, "losses": losses}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
