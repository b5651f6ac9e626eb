#!/usr/bin/env python3
"""Greedy parity of Strata's CUDA backend with Hugging Face transformers on
one model folder: the same prompt ids, 32 greedy steps each, then

  - tokens: Strata's must equal transformers' for every step;
  - logits: at every step up to the first differing token, the largest
    absolute difference must stay within bf16 tolerance, max(0.05, 3% of the
    step's largest |logit|): both sides round activations to bf16 (8
    significant bits) through every layer, with different GEMM algorithms.

Prints one JSON object; exits 1 when a check fails.

    python3 tools/gpu/hf_parity.py --model DIR --strata build/tools/strata [--steps 32]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--strata", required=True)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=24)
    a = p.parse_args()

    model = AutoModelForCausalLM.from_pretrained(
        a.model, torch_dtype=torch.bfloat16, attn_implementation="sdpa").to(a.device).eval()
    vocab = model.config.vocab_size
    prompt = [(i * 7919 + 17) % vocab for i in range(a.prompt_tokens)]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt], device=a.device), max_new_tokens=a.steps,
            min_new_tokens=a.steps, do_sample=False, output_logits=True,
            return_dict_in_generate=True, pad_token_id=0)
    hf_tokens = out.sequences[0, len(prompt):].tolist()
    hf_logits = torch.stack([l[0].float() for l in out.logits]).cpu().numpy()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "logits.f32")
        run = subprocess.run(
            [a.strata, "logits", "--model", a.model, "--device", a.device,
             "--ids", ",".join(map(str, prompt)), "--steps", str(a.steps), "--out", path],
            capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            sys.exit(1)
        meta = json.loads(run.stdout)
        ours = np.fromfile(path, dtype=np.float32).reshape(meta["rows"], meta["vocab_size"])
    tokens = meta["tokens"]

    same = 0
    while same < min(len(tokens), len(hf_tokens)) and tokens[same] == hf_tokens[same]:
        same += 1
    # Row i of both is the logits that chose token i.
    worst, worst_step, within = 0.0, -1, True
    for i in range(min(same + 1, len(hf_logits), ours.shape[0])):
        diff = float(np.max(np.abs(ours[i, :vocab] - hf_logits[i])))
        bound = max(0.05, 0.03 * float(np.max(np.abs(hf_logits[i]))))
        if diff > bound:
            within = False
        if diff > worst:
            worst, worst_step = diff, i
    result = {
        "model": a.model, "gpu": torch.cuda.get_device_name(), "backend": meta["backend"],
        "steps": a.steps, "tokens_equal": tokens == hf_tokens, "first_difference": same
        if tokens != hf_tokens else None, "max_logit_abs_diff": worst,
        "at_step": worst_step, "logits_within_bf16_tolerance": within,
        "strata_tokens": tokens, "hf_tokens": hf_tokens}
    if tokens != hf_tokens and same < len(hf_logits):
        top2 = np.sort(hf_logits[same])[-2:]
        result["hf_top2_gap_at_difference"] = float(top2[1] - top2[0])
    print(json.dumps(result))
    sys.exit(0 if result["tokens_equal"] and within else 1)


if __name__ == "__main__":
    main()
