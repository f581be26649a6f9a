#!/usr/bin/python3
"""Reference fixtures for the C++ llama engine (tasks/engine).

An independent plain-PyTorch implementation of the Hugging Face
LlamaForCausalLM / Qwen2ForCausalLM forward pass (RMSNorm, rotate-half RoPE
with llama3 band scaling, grouped-query attention, SwiGLU, tied or untied
head) plus PEFT-style LoRA on q/k/v/o. It builds small random models, writes
them in Hugging Face directory layout (config.json + model.safetensors, the
safetensors file written by hand with struct + json), writes a PEFT adapter
beside each, and records in expected.json: logits, masked cross-entropy
losses, LoRA gradients, and greedy continuations.

All reference numbers are computed in float64 from the exact stored weight
values (bf16 weights are widened exactly), so they measure the engine's f32
error alone. The same computation is also repeated in float32 and the
f32-vs-f64 deviation is stored too, as a yardstick for test tolerances.

Usage (Debian's python3-torch; no transformers/safetensors needed):
  /usr/bin/python3 tools/make_llama_fixtures.py --out tests/fixtures/llama
"""

import argparse
import json
import math
import os
import struct

import torch

LORA_R = 4
LORA_ALPHA = 8
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
GREEDY_STEPS = 8
MIN_GREEDY_GAP = 0.02  # prompts are redrawn until every greedy step beats this
LOGITS_DIGITS = 9

MODELS = {
    "llama_tiny": dict(
        seed=1001,
        lengths=(16, 9),
        storage="F32",
        config={
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 160,
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "vocab_size": 96,
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "rope_scaling": None,
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
        },
    ),
    # head_dim 32 (explicit; hidden/heads would be 12) so that with theta
    # 500000 and original_max_position_embeddings 32 the 16 frequencies fall
    # in all three llama3 bands: i=0 high (kept), i=1 medium (smoothed),
    # i>=2 low (divided by factor).
    "llama3_scaled_tied": dict(
        seed=2002,
        lengths=(48, 41),
        storage="F32",
        # A stronger MLP keeps the tied head from echoing one token forever.
        down_proj_gain=3.0,
        config={
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": 48,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "vocab_size": 96,
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            "tie_word_embeddings": True,
            "attention_bias": False,
            "mlp_bias": False,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
        },
    ),
    "qwen2_bias": dict(
        seed=3003,
        lengths=(20, 13),
        storage="BF16",
        config={
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 96,
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_scaling": None,
            "tie_word_embeddings": False,
            "use_sliding_window": False,
            "sliding_window": 128,
            "max_window_layers": 2,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "bfloat16",
        },
    ),
}


# ---------------------------------------------------------------- safetensors

def write_safetensors(path, tensors, metadata):
    """tensors: name -> (dtype "F32"/"BF16", torch tensor of that dtype)."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        dtype, t = tensors[name]
        flat = t.contiguous().reshape(-1)
        if dtype == "F32":
            assert flat.dtype == torch.float32
            blob = struct.pack("<%df" % flat.numel(), *flat.tolist())
        elif dtype == "BF16":
            assert flat.dtype == torch.bfloat16
            bits = flat.view(torch.int16).tolist()
            blob = struct.pack("<%dh" % len(bits), *bits)
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- tokenizer

def tokenizer_json(vocab_size):
    """A SentencePiece-style character tokenizer with exactly `vocab_size`
    tokens (<unk>, <s>, </s>, '\u2581', then letters, digits, punctuation) and
    no merges. The tests feed token ids; this only makes the directory a
    complete HF model."""
    chars = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
             ".,;:!?'\"-()[]{}<>/\\@#$%^&*+=_~`|")
    tokens = ["<unk>", "<s>", "</s>", "\u2581"] + list(chars)
    assert len(tokens) >= vocab_size
    tokens = tokens[:vocab_size]
    special = lambda i, t: {"id": i, "content": t, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False, "special": True}
    return {
        "version": "1.0",
        "added_tokens": [special(i, tokens[i]) for i in range(3)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": []},
    }


# ---------------------------------------------------------------- the model

def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def inverse_frequencies(cfg, dtype):
    """transformers' _compute_default_rope_parameters + _compute_llama3_parameters."""
    d = head_dim_of(cfg)
    base = cfg["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).to(dtype) / d))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor = rs["factor"]
        low_freq_factor = rs["low_freq_factor"]
        high_freq_factor = rs["high_freq_factor"]
        old_context_len = rs["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (
            high_freq_factor - low_freq_factor)
        smoothed_inv_freq = ((1 - smooth_factor) * inv_freq_llama / factor
                             + smooth_factor * inv_freq_llama)
        is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)
    elif rs:
        raise ValueError("unsupported rope_scaling %r" % (rs,))
    return inv_freq


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def linear(x, W, prefix, lora):
    y = x @ W[prefix + ".weight"].T
    if prefix + ".bias" in W:
        y = y + W[prefix + ".bias"]
    if lora is not None and prefix in lora:
        A, B = lora[prefix]
        y = y + (LORA_ALPHA / LORA_R) * ((x @ A.T) @ B.T)
    return y


def forward(cfg, W, ids, lora=None):
    """Logits [T, vocab] of one sequence (no padding, positions 0..T-1)."""
    dtype = W["model.embed_tokens.weight"].dtype
    T = len(ids)
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = head_dim_of(cfg)
    eps = cfg["rms_norm_eps"]
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    inv = inverse_frequencies(cfg, dtype)
    freqs = torch.arange(T, dtype=dtype)[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()  # [T, hd]
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = linear(h, W, p + "self_attn.q_proj", lora).view(T, nh, hd).transpose(0, 1)
        k = linear(h, W, p + "self_attn.k_proj", lora).view(T, nkv, hd).transpose(0, 1)
        v = linear(h, W, p + "self_attn.v_proj", lora).view(T, nkv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # HF repeat_kv: query head j reads kv head j // (nh / nkv).
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(hd)
        scores = scores.masked_fill(causal, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        att = (probs @ v).transpose(0, 1).reshape(T, nh * hd)
        x = x + linear(att, W, p + "self_attn.o_proj", lora)
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        gate = linear(h, W, p + "mlp.gate_proj", None)
        up = linear(h, W, p + "mlp.up_proj", None)
        x = x + linear(torch.nn.functional.silu(gate) * up, W, p + "mlp.down_proj", None)
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.T


def masked_loss(cfg, W, seqs, lora=None):
    """HF causal-LM loss: token-level mean over the whole batch of
    CE(logits[t-1], ids[t]) for every t with loss_mask[t] == 1."""
    total = 0.0
    count = 0
    sums = []
    for s in seqs:
        logits = forward(cfg, W, s["input_ids"], lora)
        target = torch.tensor(s["input_ids"][1:])
        mask = torch.tensor(s["loss_mask"][1:], dtype=torch.bool)
        ce = torch.nn.functional.cross_entropy(logits[:-1], target, reduction="none")
        part = ce[mask].sum()
        sums.append(part)
        total = total + part
        count += int(mask.sum())
    return total / count, sums, count


# ---------------------------------------------------------------- generation

def make_weights(cfg, gen, down_proj_gain=1.0):
    H = cfg["hidden_size"]
    I = cfg["intermediate_size"]
    V = cfg["vocab_size"]
    hd = head_dim_of(cfg)
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    bias = cfg["architectures"][0] == "Qwen2ForCausalLM"

    def randn(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std

    def norm_w(n):
        return 1.0 + randn(n, std=0.1)

    W = {}
    W["model.embed_tokens.weight"] = randn(V, H, std=0.3 if cfg["tie_word_embeddings"] else 1.0)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        W[p + "input_layernorm.weight"] = norm_w(H)
        W[p + "post_attention_layernorm.weight"] = norm_w(H)
        for name, out_f, in_f in (("q_proj", nh * hd, H), ("k_proj", nkv * hd, H),
                                  ("v_proj", nkv * hd, H), ("o_proj", H, nh * hd)):
            W[p + "self_attn." + name + ".weight"] = randn(out_f, in_f, std=in_f ** -0.5)
            if bias and name != "o_proj":
                W[p + "self_attn." + name + ".bias"] = randn(out_f, std=0.2)
        for name, out_f, in_f in (("gate_proj", I, H), ("up_proj", I, H), ("down_proj", H, I)):
            gain = down_proj_gain if name == "down_proj" else 1.0
            W[p + "mlp." + name + ".weight"] = randn(out_f, in_f, std=gain * in_f ** -0.5)
    W["model.norm.weight"] = norm_w(H)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = randn(V, H, std=2.0 * H ** -0.5)
    return W


def make_lora(cfg, gen):
    """PEFT module path -> (A [r, in], B [out, r]), f32. A like PEFT's
    kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B small random
    (not PEFT's zeros) so dLoss/dA is non-trivial."""
    H = cfg["hidden_size"]
    hd = head_dim_of(cfg)
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    dims = {"q_proj": (nh * hd, H), "k_proj": (nkv * hd, H),
            "v_proj": (nkv * hd, H), "o_proj": (H, nh * hd)}
    lora = {}
    for i in range(cfg["num_hidden_layers"]):
        for name in LORA_TARGETS:
            out_f, in_f = dims[name]
            bound = in_f ** -0.5
            A = (torch.rand(LORA_R, in_f, generator=gen, dtype=torch.float32) * 2 - 1) * bound
            B = torch.randn(out_f, LORA_R, generator=gen, dtype=torch.float32) * 0.1
            lora["model.layers.%d.self_attn.%s" % (i, name)] = (A, B)
    return lora


def peft_name(module, which):
    return "base_model.model.%s.lora_%s.weight" % (module, which)


def greedy(cfg, W, ids, steps):
    ids = list(ids)
    tokens, gaps = [], []
    for _ in range(steps):
        last = forward(cfg, W, ids)[-1]
        top = torch.topk(last, 2)
        tok = int(top.indices[0])
        tokens.append(tok)
        gaps.append(float(top.values[0] - top.values[1]))
        ids.append(tok)
    return tokens, gaps


def rounded(t):
    return [float("%.*g" % (LOGITS_DIGITS, v)) for v in t.reshape(-1).tolist()]


def rows(t):
    return [rounded(r) for r in t]


def build(name, spec, out_dir):
    cfg = spec["config"]
    gen = torch.Generator().manual_seed(spec["seed"])
    W32 = make_weights(cfg, gen, spec.get("down_proj_gain", 1.0))
    storage = spec["storage"]
    if storage == "BF16":
        stored = {k: v.to(torch.bfloat16) for k, v in W32.items()}
    else:
        stored = dict(W32)
    W = {k: v.to(torch.float64) for k, v in stored.items()}       # exact widening
    Wf = {k: v.to(torch.float32) for k, v in stored.items()}
    lora32 = make_lora(cfg, gen)

    # Prompts: drawn from the seed, redrawn until every greedy step has a
    # clear top-1 (gap >= MIN_GREEDY_GAP), so a test can compare all 8 tokens.
    seqs = []
    for L in spec["lengths"]:
        for attempt in range(200):
            ids = torch.randint(3, cfg["vocab_size"], (L,), generator=gen).tolist()
            toks, gaps = greedy(cfg, W, ids, GREEDY_STEPS)
            if min(gaps) >= MIN_GREEDY_GAP:
                break
        else:
            raise RuntimeError("%s: no prompt of length %d without near-ties" % (name, L))
        mask = [1 if t >= L // 2 else 0 for t in range(L)]
        seqs.append({"input_ids": ids, "loss_mask": mask,
                     "labels": [ids[t] if mask[t] else -100 for t in range(L)],
                     "greedy_tokens": toks, "greedy_top2_gap": [round(g, 6) for g in gaps],
                     "greedy_attempts": attempt + 1})

    # Base model.
    with torch.no_grad():
        for s in seqs:
            s["logits"] = rows(forward(cfg, W, s["input_ids"]))
        loss, sums, count = masked_loss(cfg, W, seqs)
        for s, part in zip(seqs, sums):
            s["loss_sum"] = float(part)
            s["loss_count"] = sum(s["loss_mask"][1:])
        loss32, _, _ = masked_loss(cfg, Wf, seqs)
        logit_dev = max(float((forward(cfg, W, s["input_ids"])
                               - forward(cfg, Wf, s["input_ids"]).double()).abs().max())
                        for s in seqs)

    # LoRA: loss and gradients in f64 (and f32 for the yardstick).
    def run_lora(weights, dtype):
        lora = {m: (A.to(dtype).requires_grad_(), B.to(dtype).requires_grad_())
                for m, (A, B) in lora32.items()}
        l, parts, _ = masked_loss(cfg, weights, seqs, lora)
        l.backward()
        grads = {}
        for m, (A, B) in lora.items():
            grads[peft_name(m, "A")] = A.grad.detach()
            grads[peft_name(m, "B")] = B.grad.detach()
        last = [forward(cfg, weights, s["input_ids"], lora)[-4:].detach() for s in seqs]
        return l.detach(), [float(p) for p in parts], grads, last

    lloss, lparts, grads, lora_last = run_lora(W, torch.float64)
    lloss32, _, grads32, _ = run_lora(Wf, torch.float32)
    grad_dev = max(float((grads[k] - grads32[k].double()).norm() / grads[k].norm())
                   for k in grads)

    # Files.
    os.makedirs(os.path.join(out_dir, "adapter"), exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(cfg["vocab_size"]), f, ensure_ascii=False)
        f.write("\n")
    write_safetensors(os.path.join(out_dir, "model.safetensors"),
                      {k: (storage, v) for k, v in stored.items()}, {"format": "pt"})
    adapter = {}
    for m, (A, B) in lora32.items():
        adapter[peft_name(m, "A")] = ("F32", A)
        adapter[peft_name(m, "B")] = ("F32", B)
    write_safetensors(os.path.join(out_dir, "adapter", "adapter_model.safetensors"),
                      adapter, {"format": "pt"})
    with open(os.path.join(out_dir, "adapter", "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": LORA_R,
                   "lora_alpha": LORA_ALPHA, "lora_dropout": 0.0, "bias": "none",
                   "use_rslora": False, "target_modules": LORA_TARGETS,
                   "fan_in_fan_out": False, "inference_mode": False,
                   "base_model_name_or_path": name}, f, indent=2)
        f.write("\n")

    for s, p, last in zip(seqs, lparts, lora_last):
        s["lora_loss_sum"] = p
        s["lora_logits_last4"] = rows(last)
    expected = {
        "model": name,
        "made_by": "/usr/bin/python3 tools/make_llama_fixtures.py (torch %s)" % torch.__version__,
        "precision": "float64 reference from the stored weight values; logits to %d significant digits"
                     % LOGITS_DIGITS,
        "weights_dtype": storage,
        "rope_inv_freq": [float(v) for v in inverse_frequencies(cfg, torch.float64)],
        "sequences": seqs,
        "loss": float(loss),
        "loss_count": count,
        "lora": {
            "adapter_dir": "adapter",
            "r": LORA_R,
            "alpha": LORA_ALPHA,
            "scale": LORA_ALPHA / LORA_R,
            "targets": LORA_TARGETS,
            "loss": float(lloss),
            "grads": {k: {"shape": list(g.shape), "data": rounded(g)}
                      for k, g in sorted(grads.items())},
        },
        "f32_deviation": {
            "logits_max_abs": logit_dev,
            "loss_rel": abs(float(loss32) - float(loss)) / abs(float(loss)),
            "lora_loss_rel": abs(float(lloss32) - float(lloss)) / abs(float(lloss)),
            "lora_grad_max_rel_l2": grad_dev,
        },
    }
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    print("%-20s loss %.6f lora_loss %.6f min greedy gap %.4f f32 dev: logits %.2e "
          "loss %.2e grads %.2e" % (
              name, float(loss), float(lloss),
              min(min(s["greedy_top2_gap"]) for s in seqs), logit_dev,
              expected["f32_deviation"]["loss_rel"], grad_dev))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (one sub-folder per model)")
    ap.add_argument("--only", action="append", help="build only this model (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, spec in MODELS.items():
        if args.only and name not in args.only:
            continue
        build(name, spec, os.path.join(args.out, name))


if __name__ == "__main__":
    main()
