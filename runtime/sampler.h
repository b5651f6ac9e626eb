// Token selection at the last stage, with the semantics of Hugging Face
// generate(): repetition penalty over prompt and generated ids, then
// temperature, top-k, top-p, min-p (transformers' order), then a draw. Temperature 0 is greedy
// (argmax after the penalty). The draw's randomness is a pure function of (seed, position), so
// replaying a sequence reproduces its tokens. A Sampler holds scratch buffers: one per thread.
#ifndef STRATA_RUNTIME_SAMPLER_H_
#define STRATA_RUNTIME_SAMPLER_H_

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace strata {

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy
  int32_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float repetition_penalty = 1.0f;  // 1: off
  uint64_t seed = 0;
  float min_p = 0.0f;  // 0: off; drops tokens below min_p x the top token's probability
};

// INVALID_ARGUMENT naming the field when a parameter is out of range.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// A uniform double in [0, 1) from (seed, position); the only randomness used.
double UniformAt(uint64_t seed, int64_t position);

class Sampler {
 public:
  // `history`: prompt and generated ids so far (for the repetition penalty).
  // `position`: the position the sampled token will occupy.
  int32_t Sample(std::span<const float> logits, const SamplingParams& params,
                 std::span<const int32_t> history, int64_t position);
  // The distribution Sample() draws from: (probability, id) of every token
  // that can be drawn, most likely first (ties: the lower id first), summing
  // to 1. Temperature 0: the argmax alone. Valid until the next call.
  const std::vector<std::pair<double, int32_t>>& Distribution(std::span<const float> logits,
                                                              const SamplingParams& params,
                                                              std::span<const int32_t> history);

 private:
  // scores_ = logits after the repetition penalty.
  void Penalise(std::span<const float> logits, const SamplingParams& params,
                std::span<const int32_t> history);

  std::vector<float> scores_;
  std::vector<std::pair<float, int32_t>> candidates_;
  std::vector<std::pair<double, int32_t>> distribution_;
};

}  // namespace strata

#endif  // STRATA_RUNTIME_SAMPLER_H_
