#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace strata {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number >= 0, got ", p.temperature));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  if (!(p.min_p >= 0 && p.min_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("min_p must be in [0, 1], got ", p.min_p));
  }
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition_penalty must be a finite number > 0, got ", p.repetition_penalty));
  }
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("presence_penalty must be in [-2, 2], got ", p.presence_penalty));
  }
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("frequency_penalty must be in [-2, 2], got ", p.frequency_penalty));
  }
  return absl::OkStatus();
}

bool IsPlainGreedy(const SamplingParams& p) {
  return p.temperature == 0.0f && p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f &&
         p.frequency_penalty == 0.0f;
}

namespace {
uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

double UniformAt(uint64_t seed, int64_t position) {
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ static_cast<uint64_t>(position));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

void Sampler::Penalise(std::span<const float> logits, const SamplingParams& p,
                       std::span<const int32_t> history, size_t prompt_length) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  scores_.assign(logits.begin(), logits.end());
  if (p.repetition_penalty != 1.0f) {
    // Each distinct id once, as torch.gather/scatter over input_ids does.
    for (int32_t id : history) {
      if (id < 0 || id >= vocab) continue;
      const float s = logits[id];
      scores_[id] = s < 0 ? s * p.repetition_penalty : s / p.repetition_penalty;
    }
  }
  if (p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f) return;
  const std::span<const int32_t> generated =
      history.subspan(std::min(prompt_length, history.size()));
  // As vLLM: score - frequency x count, then - presence, in float.
  if (counts_.size() != static_cast<size_t>(vocab)) counts_.assign(vocab, 0);
  for (int32_t id : generated) {
    if (id >= 0 && id < vocab) ++counts_[id];
  }
  for (int32_t id : generated) {
    if (id < 0 || id >= vocab || counts_[id] == 0) continue;
    scores_[id] = scores_[id] - p.frequency_penalty * static_cast<float>(counts_[id]);
    scores_[id] = scores_[id] - p.presence_penalty;
    counts_[id] = 0;  // once per distinct id; all zero again afterwards
  }
}

const std::vector<std::pair<double, int32_t>>& Sampler::Distribution(
    std::span<const float> logits, const SamplingParams& p, std::span<const int32_t> history,
    size_t prompt_length) {
  Penalise(logits, p, history, prompt_length);
  distribution_.clear();
  if (p.temperature == 0.0f) {
    const auto top = std::max_element(scores_.begin(), scores_.end());
    distribution_.emplace_back(1.0, static_cast<int32_t>(top - scores_.begin()));
    return distribution_;
  }
  candidates_.clear();
  for (size_t i = 0; i < scores_.size(); ++i) {
    candidates_.emplace_back(scores_[i] / p.temperature, static_cast<int32_t>(i));
  }
  // Highest score first; ties by id so the order is deterministic.
  auto higher = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  std::sort(candidates_.begin(), candidates_.end(), higher);
  size_t keep = candidates_.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) {
    // Like transformers: drop scores below the k-th largest (ties at it stay).
    const float kth = candidates_[p.top_k - 1].first;
    keep = p.top_k;
    while (keep < candidates_.size() && candidates_[keep].first == kth) ++keep;
  }
  // Weights relative to the top token's (softmax's numerator); the
  // distribution is their share of the total.
  const double max_score = candidates_.front().first;
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    const double w = std::exp(static_cast<double>(candidates_[i].first) - max_score);
    distribution_.emplace_back(w, candidates_[i].second);
    total += w;
  }
  if (p.top_p < 1.0f) {
    // transformers sorts ascending and removes tokens whose cumulative
    // probability is <= 1 - top_p; from the top that keeps every token whose
    // lower-probability remainder exceeds 1 - top_p, and at least one.
    double below = total;  // probability mass of this token and all lower ones
    size_t cut = 0;
    for (size_t i = 0; i < distribution_.size(); ++i) {
      if (below / total <= 1.0 - p.top_p && i > 0) break;
      below -= distribution_[i].first;
      cut = i + 1;
    }
    distribution_.resize(cut);
  }
  if (p.min_p > 0.0f) {
    // Below min_p x the top token's probability: the top token's weight is 1.
    size_t cut = 1;
    while (cut < distribution_.size() && distribution_[cut].first >= p.min_p) ++cut;
    distribution_.resize(cut);
  }
  while (distribution_.size() > 1 && distribution_.back().first == 0.0) distribution_.pop_back();
  total = 0;
  for (const auto& d : distribution_) total += d.first;
  for (auto& d : distribution_) d.first /= total;
  return distribution_;
}

int32_t Sampler::Sample(std::span<const float> logits, const SamplingParams& p,
                        std::span<const int32_t> history, size_t prompt_length, int64_t position) {
  if (p.temperature == 0.0f) {
    Penalise(logits, p, history, prompt_length);
    return static_cast<int32_t>(std::max_element(scores_.begin(), scores_.end()) - scores_.begin());
  }
  const auto& d = Distribution(logits, p, history, prompt_length);
  const double target = UniformAt(p.seed, position);
  double acc = 0;
  for (const auto& [probability, id] : d) {
    acc += probability;
    if (target < acc) return id;
  }
  return d.back().second;
}

}  // namespace strata
