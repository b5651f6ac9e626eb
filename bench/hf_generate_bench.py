#!/usr/bin/env python3
"""Hugging Face transformers on the same GPU and model as bench/gpu_bench:
generate() decode tokens/s at each batch size (bf16, sdpa attention, greedy)
and prefill tokens/s of one forward pass. Decode speed is measured as
(generate N tokens - generate 1 token) / (N - 1) steps, so prefill is not
counted in it. Prints one JSON object on stdout and a summary on stderr.

    python3 bench/hf_generate_bench.py --model DIR [--batches 1,8,32]
        [--prompt-tokens 128] [--decode-tokens 64] [--prefill-tokens 512]
"""
import argparse
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--prefill-tokens", type=int, default=512)
    a = p.parse_args()
    model = AutoModelForCausalLM.from_pretrained(
        a.model, torch_dtype=torch.bfloat16, attn_implementation="sdpa").to(a.device).eval()
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(0)

    def ids(batch, tokens):
        return torch.randint(0, vocab, (batch, tokens), generator=gen).to(a.device)

    with torch.no_grad():
        x = ids(1, a.prefill_tokens)
        model(x)  # warm-up
        prefill_s = timed(lambda: model(x))
        decode = []
        for batch in [int(b) for b in a.batches.split(",")]:
            x = ids(batch, a.prompt_tokens)
            mask = torch.ones_like(x)

            def run(n):
                model.generate(x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, pad_token_id=0)

            run(4)  # warm-up
            one = timed(lambda: run(1))
            full = timed(lambda: run(a.decode_tokens))
            step = (full - one) / (a.decode_tokens - 1)
            decode.append({"batch": batch, "tokens_per_second": batch / step,
                           "step_ms": step * 1e3})
    result = {"bench": "gpu", "engine": "transformers", "model": a.model,
              "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "prefill_tokens": a.prefill_tokens,
              "prefill_tokens_per_second": a.prefill_tokens / prefill_s, "decode": decode}
    print(json.dumps(result))
    print(f"transformers generate() on {result['device']}: prefill "
          f"{result['prefill_tokens_per_second']:.0f} tok/s", file=sys.stderr)
    for d in decode:
        print(f"  decode batch {d['batch']:3d}: {d['tokens_per_second']:9.1f} tok/s  "
              f"({d['step_ms']:.3f} ms/step)", file=sys.stderr)


if __name__ == "__main__":
    main()
