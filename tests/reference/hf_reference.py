#!/usr/bin/python3
"""Independent reference for Strata's runtime.

Reads a Hugging Face checkpoint folder with its own safetensors parser and
computes logits the way transformers' modeling code for Llama, Mistral, Qwen2
and HunYuanDenseV1 does (RMSNorm, half-split RoPE with the configured scaling,
GQA eager attention with a causal or sliding-window mask, SwiGLU MLP), in f32,
recomputing the whole sequence at every step (no KV cache). Shares no code
with the C++ implementation.

Quantized checkpoints (GPTQ, AWQ GEMM, FP8 as quant_method "fp8" or
compressed-tensors) are dequantized here to f32 weights from the formats'
definitions (dequantize() below), then run the same way.

Usage: hf_reference.py --model DIR --ids 1,5,7 --steps 16 --out PREFIX
Writes PREFIX.json ({"tokens": [...], "prompt_len": P, "vocab": V}) and
PREFIX.f32: prefill logits [P, V] then one row [V] per decode step.
"""
import argparse
import json
import math
import os
import struct

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        raw = data[base + b:base + en]
        shape = e["shape"]
        if e["dtype"] == "F32":
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy())
        elif e["dtype"] == "F16":
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.float16).astype(np.float32))
        elif e["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            t = torch.from_numpy(u.view(np.float32).copy())
        elif e["dtype"] == "I32":
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.int32).astype(np.int64))
        elif e["dtype"] == "F8_E4M3":
            t = torch.from_numpy(E4M3[np.frombuffer(raw, dtype=np.uint8)])
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {e['dtype']}")
        out[name] = t.reshape(shape)
    return out


def e4m3_table():
    """The value of each of the 256 FP8 E4M3 (fn) codes: 1 sign, 4 exponent
    bits (bias 7), 3 mantissa bits; exponent 0 is subnormal; 0x7f/0xff NaN."""
    table = np.zeros(256, dtype=np.float32)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exp, mant = (code >> 3) & 0xF, code & 0x7
        if exp == 0xF and mant == 0x7:
            table[code] = np.nan
        elif exp == 0:
            table[code] = sign * (mant / 8.0) * 2.0 ** -6
        else:
            table[code] = sign * (1.0 + mant / 8.0) * 2.0 ** (exp - 7)
    return table


E4M3 = e4m3_table()


def unpack_along_rows(packed, bits):
    """int32 [R, C] holding 32/bits codes per word, low bits first, stacked
    along dim 0 -> [R * 32/bits, C]."""
    per = 32 // bits
    u = packed & 0xFFFFFFFF
    parts = [(u >> (bits * k)) & ((1 << bits) - 1) for k in range(per)]
    return torch.stack(parts, dim=1).reshape(packed.shape[0] * per, packed.shape[1])


def unpack_along_cols(packed, bits, order=None):
    """int32 [R, C] -> [R, C * 32/bits]; code k of a word is column
    order[k] of its run (sequential without an order)."""
    per = 32 // bits
    order = order or list(range(per))
    u = packed & 0xFFFFFFFF
    out = torch.zeros(packed.shape[0], packed.shape[1], per, dtype=torch.int64)
    for k in range(per):
        out[:, :, order[k]] = (u >> (bits * k)) & ((1 << bits) - 1)
    return out.reshape(packed.shape[0], packed.shape[1] * per)


def dequantize(cfg, w):
    """Replaces every quantized module's tensors with its f32 `weight`."""
    q = cfg.get("quantization_config")
    if not q:
        return w
    method = q["quant_method"].lower()
    modules = sorted({n.rsplit(".", 1)[0] for n in w if n.endswith((".qweight", ".weight_scale",
                                                                    ".weight_scale_inv"))})
    for m in modules:
        if method == "gptq":
            bits = q["bits"]
            intw = unpack_along_rows(w.pop(m + ".qweight"), bits)          # [in, out]
            zeros = unpack_along_cols(w.pop(m + ".qzeros"), bits)          # [groups, out]
            if q.get("checkpoint_format", "gptq") == "gptq":
                zeros = zeros + 1                                          # stored minus one
            scales = w.pop(m + ".scales")                                  # [groups, out]
            g_idx = w.pop(m + ".g_idx", None)
            if g_idx is None:
                gs = q["group_size"] if q["group_size"] > 0 else intw.shape[0]
                g_idx = torch.arange(intw.shape[0]) // gs
            deq = (intw - zeros[g_idx]).double() * scales[g_idx].double()
            w[m + ".weight"] = deq.T.float().contiguous()
        elif method == "awq":
            order = [0, 2, 4, 6, 1, 3, 5, 7]
            intw = unpack_along_cols(w.pop(m + ".qweight"), 4, order)      # [in, out]
            zeros = unpack_along_cols(w.pop(m + ".qzeros"), 4, order)      # [in / g, out]
            scales = w.pop(m + ".scales")
            group = torch.arange(intw.shape[0]) // q["group_size"]
            deq = (intw - zeros[group]).double() * scales[group].double()
            w[m + ".weight"] = deq.T.float().contiguous()
        else:  # fp8 / compressed-tensors float8
            codes = w[m + ".weight"].double()                              # [out, in]
            if m + ".weight_scale_inv" in w:
                s = w.pop(m + ".weight_scale_inv").double()
                br, bc = q["weight_block_size"]
                s = s.repeat_interleave(br, 0)[:codes.shape[0]]
                s = s.repeat_interleave(bc, 1)[:, :codes.shape[1]]
            else:
                s = w.pop(m + ".weight_scale").double()
                s = s.reshape(-1, 1) if s.numel() > 1 else s.reshape(1, 1)
            w[m + ".weight"] = (codes * s).float()
    return w


def load_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(model_dir, name)))
    return weights


def inverse_frequencies(cfg, head_dim):
    theta = cfg.get("rope_theta", 10000.0)
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "dynamic" and "alpha" in rope:
        theta = theta * rope["alpha"] ** (head_dim / (head_dim - 2))
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if kind == "linear":
        inv = inv / rope["factor"]
    elif kind == "llama3":
        factor = rope["factor"]
        low, high = rope["low_freq_factor"], rope["high_freq_factor"]
        old = rope["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, w, ids):
    """Logits [len(ids), vocab] for the whole sequence."""
    arch = cfg["architectures"][0]
    hidden = cfg["hidden_size"]
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_heads)
    head_dim = cfg.get("head_dim", hidden // n_heads)
    eps = cfg.get("rms_norm_eps", 1e-6)
    bias = arch == "Qwen2ForCausalLM" or cfg.get("attention_bias", False)
    qk_norm = arch == "HunYuanDenseV1ForCausalLM" and cfg.get("use_qk_norm", True)
    window = cfg.get("sliding_window") if arch == "MistralForCausalLM" else None

    T = len(ids)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    pos = torch.arange(T, dtype=torch.float32)
    freqs = pos[:, None] * inverse_frequencies(cfg, head_dim)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None], emb.sin()[None]  # [1, T, D]

    q_idx = torch.arange(T)[:, None]
    k_idx = torch.arange(T)[None, :]
    allowed = k_idx <= q_idx
    if window:
        allowed = allowed & (q_idx - k_idx < window)
    mask = torch.zeros(T, T).masked_fill(~allowed, float("-inf"))

    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)

        def proj(name):
            out = h @ w[p + f"self_attn.{name}.weight"].T
            if bias:
                out = out + w[p + f"self_attn.{name}.bias"]
            return out

        q = proj("q_proj").view(T, n_heads, head_dim).transpose(0, 1)
        k = proj("k_proj").view(T, n_kv, head_dim).transpose(0, 1)
        v = proj("v_proj").view(T, n_kv, head_dim).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if qk_norm:
            q = rms_norm(q, w[p + "self_attn.query_layernorm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.key_layernorm.weight"], eps)
        rep = n_heads // n_kv
        k = k.repeat_interleave(rep, dim=0)
        v = v.repeat_interleave(rep, dim=0)
        scores = q @ k.transpose(1, 2) / math.sqrt(head_dim) + mask
        attn = torch.softmax(scores, dim=-1) @ v  # [H, T, D]
        attn = attn.transpose(0, 1).reshape(T, n_heads * head_dim)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T

        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T

    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    w = dequantize(cfg, load_weights(args.model))
    ids = [int(t) for t in args.ids.split(",")]
    prompt_len = len(ids)
    logits = forward(cfg, w, ids)
    rows = [logits]
    tokens = [int(torch.argmax(logits[-1]))]
    for _ in range(args.steps):
        ids.append(tokens[-1])
        last = forward(cfg, w, ids)[-1]
        rows.append(last[None])
        tokens.append(int(torch.argmax(last)))
    torch.cat(rows).contiguous().numpy().astype(np.float32).tofile(args.out + ".f32")
    with open(args.out + ".json", "w") as f:
        json.dump({"tokens": tokens, "prompt_len": prompt_len, "vocab": int(logits.shape[-1])}, f)


if __name__ == "__main__":
    main()
