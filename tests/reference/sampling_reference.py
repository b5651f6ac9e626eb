"""The distribution Hugging Face generate() samples from, written from the
semantics transformers documents for its logits processors, in PyTorch and
sharing nothing with Strata's C++ sampler:

  RepetitionPenaltyLogitsProcessor: for each id in the history, a score s
      becomes s * penalty if s < 0, else s / penalty (once per distinct id);
  TemperatureLogitsWarper: scores / temperature;
  TopKLogitsWarper: scores below the k-th largest become -inf (ties stay);
  TopPLogitsWarper: sort ascending, softmax, cumulative sum; tokens whose
      cumulative probability is <= 1 - top_p become -inf, the most likely
      one always stays;
and between the repetition penalty and the temperature, OpenAI's presence and
frequency penalties as vLLM applies them to the generated ids (the history
after its first prompt_length ids): scores - frequency * count, then
- presence where count > 0;
  MinPLogitsWarper: softmax; tokens whose probability is below
      min_p * the largest probability become -inf, the most likely stays;
then softmax. Scores are processed in float32, as generate() does on a
float32 model; the final softmax and the cumulative sums run in float64 so
the comparison measures the semantics, not float32 noise. Among equal
scores transformers' sort order is unspecified (torch.sort is not stable);
here the higher id counts as the less likely one, as in Strata.

Usage: sampling_reference.py CASES.json LOGITS.f32 OUT.f64
  CASES.json: [{"vocab", "history", "temperature", "top_k", "top_p",
                "min_p", "repetition_penalty", "prompt_length",
                "presence_penalty", "frequency_penalty"}, ...], each case's logits
  consecutive in LOGITS.f32; OUT.f64 gets each case's vocab probabilities.
"""
import json
import sys

import numpy as np
import torch


def distribution(logits, history, temperature, top_k, top_p, min_p, penalty, prompt_length=0,
                 presence=0.0, frequency=0.0):
    scores = torch.from_numpy(logits.copy())  # float32
    vocab = scores.shape[0]
    if penalty != 1.0:
        ids = torch.tensor(sorted(set(h for h in history if 0 <= h < vocab)), dtype=torch.long)
        if len(ids):
            picked = scores[ids]
            p = torch.tensor(penalty, dtype=torch.float32)
            scores[ids] = torch.where(picked < 0, picked * p, picked / p)
    if presence != 0.0 or frequency != 0.0:
        counts = torch.zeros(vocab, dtype=torch.float32)
        for h in history[prompt_length:]:
            if 0 <= h < vocab:
                counts[h] += 1
        scores = scores - torch.tensor(frequency, dtype=torch.float32) * counts
        scores = scores - torch.tensor(presence, dtype=torch.float32) * (counts > 0).float()
    if temperature == 0:
        out = torch.zeros(vocab, dtype=torch.float64)
        out[int(torch.argmax(scores))] = 1.0  # first maximum, as argmax
        return out
    scores = scores / torch.tensor(temperature, dtype=torch.float32)
    minus_inf = torch.tensor(float("-inf"), dtype=torch.float32)
    if top_k > 0:
        k = min(top_k, vocab)
        kth = torch.topk(scores, k).values[-1]
        scores = torch.where(scores < kth, minus_inf, scores)
    # Ascending by score; among equal scores the higher id first (less likely).
    order = torch.from_numpy(np.lexsort((-np.arange(vocab), scores.numpy())))
    if top_p < 1.0:
        # softmax(x).cumsum() <= 1 - top_p, with both sides multiplied by the
        # softmax's denominator: exact where the weights are (equal scores).
        ascending = scores[order].double()
        weights = torch.exp(ascending - ascending.max())
        cumulative = weights.cumsum(dim=0)
        remove = cumulative <= (1.0 - top_p) * weights.sum()
        remove[-1] = False
        scores = scores.clone()
        scores[order[remove]] = minus_inf
    if min_p > 0.0:
        probs = torch.softmax(scores.double(), dim=0)
        remove = probs < min_p * probs.max()
        remove[order[-1]] = False
        scores = torch.where(remove, minus_inf, scores)
    return torch.softmax(scores.double(), dim=0)


def main():
    cases = json.load(open(sys.argv[1]))
    logits = np.fromfile(sys.argv[2], dtype=np.float32)
    out = []
    at = 0
    for c in cases:
        v = c["vocab"]
        d = distribution(logits[at:at + v], c["history"], c["temperature"], c["top_k"],
                         c["top_p"], c["min_p"], c["repetition_penalty"], c["prompt_length"],
                         c["presence_penalty"], c["frequency_penalty"])
        out.append(d.numpy())
        at += v
    np.concatenate(out).astype(np.float64).tofile(sys.argv[3])


if __name__ == "__main__":
    main()
