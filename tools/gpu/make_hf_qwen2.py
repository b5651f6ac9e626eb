#!/usr/bin/env python3
"""Writes a random-initialised Qwen2 model in the shape of Qwen2.5-1.5B, made
and saved by Hugging Face transformers itself (save_pretrained, bf16
safetensors), for the GPU parity check and benchmark.

    python3 tools/gpu/make_hf_qwen2.py OUT [--layers 28] [--seed 0]
"""
import argparse

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    # Qwen2.5-1.5B's published config.json, less its weights.
    config = Qwen2Config(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960,
        num_hidden_layers=a.layers, num_attention_heads=12, num_key_value_heads=2,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, use_sliding_window=False, sliding_window=32768,
        max_window_layers=21, bos_token_id=151643, eos_token_id=151643,
        hidden_act="silu", torch_dtype="bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(a.out, safe_serialization=True)
    print(f"wrote Qwen2 ({a.layers} layers, Qwen2.5-1.5B shape) to {a.out}")


if __name__ == "__main__":
    main()
