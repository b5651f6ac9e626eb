// The benchmarks' load generator: client streams against a gateway, with
// time to first token, inter-token latency and output tokens/s.
#ifndef STRATA_BENCH_LOAD_GEN_H_
#define STRATA_BENCH_LOAD_GEN_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d);
// The q-quantile (0..1) of `v` (0 when empty).
double Pct(std::vector<double> v, double q);
// A prompt of `n` ids spread over the vocabulary.
std::vector<int32_t> PromptIds(int64_t n, int64_t vocab);

struct Load {
  std::vector<double> ttft_ms, itl_ms;
  // One stream's tokens per second after its first token (the inter-token
  // gaps of all streams pooled): at concurrency 1, batch-1 decode speed.
  double decode_tokens_per_s() const;
  int64_t tokens = 0;
  double seconds = 0;
  int failures = 0;
};

// `concurrency` streams against `gateway`, each issuing `requests`
// completions of `max_tokens` tokens (EOS ignored) from `prompt`.
Load RunLoad(const std::string& gateway, int concurrency, int requests, int64_t max_tokens,
             const std::vector<int32_t>& prompt);

// "1,4,16" -> {1, 4, 16}; INVALID_ARGUMENT naming `flag` otherwise.
absl::StatusOr<std::vector<int>> IntList(const std::string& flag, const std::string& text);

}  // namespace strata

#endif  // STRATA_BENCH_LOAD_GEN_H_
