// Token selection at the last stage, with the semantics of Hugging Face
// generate(): repetition penalty over prompt and generated ids, then OpenAI's
// presence and frequency penalties over the generated ids (vLLM's order),
// then temperature, top-k, top-p, min-p (transformers' order), then a draw. Temperature 0 is greedy
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
  // OpenAI's: a generated token's logit loses presence_penalty once and
  // frequency_penalty per time it was generated. In [-2, 2]; 0: off.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
};

// Whether `params` pick the argmax of the raw logits (greedy, no penalty), so
// that the stage may take the argmax where the logits are computed.
bool IsPlainGreedy(const SamplingParams& params);

// INVALID_ARGUMENT naming the field when a parameter is out of range.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// A uniform double in [0, 1) from (seed, position); the only randomness used.
double UniformAt(uint64_t seed, int64_t position);

class Sampler {
 public:
  // `history`: prompt and generated ids so far (for the penalties), of which
  // the first `prompt_length` are the prompt. `position`: the position the
  // sampled token will occupy.
  int32_t Sample(std::span<const float> logits, const SamplingParams& params,
                 std::span<const int32_t> history, size_t prompt_length, int64_t position);
  // The distribution Sample() draws from: (probability, id) of every token
  // that can be drawn, most likely first (ties: the lower id first), summing
  // to 1. Temperature 0: the argmax alone. Valid until the next call.
  const std::vector<std::pair<double, int32_t>>& Distribution(std::span<const float> logits,
                                                              const SamplingParams& params,
                                                              std::span<const int32_t> history,
                                                              size_t prompt_length);

 private:
  // scores_ = logits after the repetition, presence and frequency penalties.
  void Penalise(std::span<const float> logits, const SamplingParams& params,
                std::span<const int32_t> history, size_t prompt_length);

  std::vector<float> scores_;
  std::vector<int32_t> counts_;  // per id: times generated (all zero between calls)
  std::vector<std::pair<float, int32_t>> candidates_;
  std::vector<std::pair<double, int32_t>> distribution_;
};

}  // namespace strata

#endif  // STRATA_RUNTIME_SAMPLER_H_
