#include "runtime/sampler.h"

#include <cmath>
#include <map>

#include "gtest/gtest.h"

namespace strata {
namespace {

std::vector<float> Logits() { return {1.0f, 3.0f, 2.5f, -1.0f, 0.5f, 2.9f}; }

TEST(SamplerTest, GreedyIsArgmaxAndRepetitionPenaltyFollowsTransformers) {
  Sampler s;
  auto l = Logits();
  EXPECT_EQ(s.Sample(l, {}, {}, 0, 0), 1);
  // Penalty 2 on token 1 (3.0 -> 1.5) and on token 3 (-1 -> -2): token 5 wins.
  SamplingParams p{.repetition_penalty = 2.0f};
  const std::vector<int32_t> history = {1, 3, 1};
  EXPECT_EQ(s.Sample(l, p, history, history.size(), 0), 5);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesCountOnlyGeneratedIds) {
  Sampler s;
  const std::vector<float> l = {1.0f, 1.2f, 1.1f};
  const std::vector<int32_t> history = {1, 2, 2};  // prompt {1}, generated {2, 2}
  // Frequency -0.2 per occurrence: token 2 goes 1.1 -> 1.5.
  EXPECT_EQ(s.Sample(l, {.frequency_penalty = -0.2f}, history, 1, 3), 2);
  // Presence 0.45 once: 1.5 -> 1.05, below token 1's untouched 1.2.
  const SamplingParams both{.presence_penalty = 0.45f, .frequency_penalty = -0.2f};
  EXPECT_EQ(s.Sample(l, both, history, 1, 3), 1);
  EXPECT_FALSE(IsPlainGreedy(both));
  // Were token 1 generated too, it would fall to 0.95 and token 2 win.
  EXPECT_EQ(s.Sample(l, both, history, 0, 3), 2);
  // The scratch counts are clean between calls: the same call, same answer.
  EXPECT_EQ(s.Sample(l, both, history, 1, 3), 1);
  EXPECT_FALSE(ValidateSamplingParams({.presence_penalty = 2.5f}).ok());
  EXPECT_FALSE(ValidateSamplingParams({.frequency_penalty = -2.01f}).ok());
  EXPECT_TRUE(ValidateSamplingParams({.presence_penalty = -2.0f, .frequency_penalty = 2.0f}).ok());
}

TEST(SamplerTest, DrawIsAPureFunctionOfSeedAndPosition) {
  Sampler a, b;
  auto l = Logits();
  SamplingParams p{.temperature = 1.0f, .seed = 1234};
  std::vector<int32_t> first, second;
  for (int pos = 0; pos < 200; ++pos) first.push_back(a.Sample(l, p, {}, 0, pos));
  for (int pos = 0; pos < 200; ++pos) second.push_back(b.Sample(l, p, {}, 0, pos));
  EXPECT_EQ(first, second);
  EXPECT_EQ(a.Sample(l, p, {}, 0, 57), first[57]);  // out of order, same answer
  p.seed = 99;
  std::vector<int32_t> other;
  for (int pos = 0; pos < 200; ++pos) other.push_back(a.Sample(l, p, {}, 0, pos));
  EXPECT_NE(first, other);
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  Sampler s;
  auto l = Logits();
  SamplingParams p{.temperature = 1.0f, .seed = 7};
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int pos = 0; pos < n; ++pos) ++counts[s.Sample(l, p, {}, 0, pos)];
  double total = 0;
  for (float x : l) total += std::exp(x);
  for (int i = 0; i < 6; ++i) {
    EXPECT_NEAR(counts[i] / static_cast<double>(n), std::exp(l[i]) / total, 0.015) << i;
  }
}

TEST(SamplerTest, TopKAndTopPRestrictTheCandidates) {
  Sampler s;
  auto l = Logits();
  for (int pos = 0; pos < 500; ++pos) {
    const int32_t k2 = s.Sample(l, {.temperature = 1.0f, .top_k = 2, .seed = 3}, {}, 0, pos);
    EXPECT_TRUE(k2 == 1 || k2 == 5) << k2;
    EXPECT_EQ(s.Sample(l, {.temperature = 5.0f, .top_k = 1, .seed = 3}, {}, 0, pos), 1);
    EXPECT_EQ(s.Sample(l, {.temperature = 1.0f, .top_p = 0.01f, .seed = 3}, {}, 0, pos), 1);
    // Softmax probs ~ {.05, .36, .22, .007, .03, .33}: top_p 0.6 keeps tokens 1 and 5 only.
    const int32_t p6 = s.Sample(l, {.temperature = 1.0f, .top_p = 0.6f, .seed = 3}, {}, 0, pos);
    EXPECT_TRUE(p6 == 1 || p6 == 5) << p6;
  }
}

TEST(SamplerTest, InvalidParametersNameTheField) {
  auto msg = [](SamplingParams p) { return std::string(ValidateSamplingParams(p).message()); };
  EXPECT_NE(msg({.temperature = -0.5f}).find("temperature"), std::string::npos);
  EXPECT_NE(msg({.temperature = NAN}).find("temperature"), std::string::npos);
  EXPECT_NE(msg({.top_k = -1}).find("top_k"), std::string::npos);
  EXPECT_NE(msg({.top_p = 0.0f}).find("top_p"), std::string::npos);
  EXPECT_NE(msg({.top_p = 1.5f}).find("top_p"), std::string::npos);
  EXPECT_NE(msg({.repetition_penalty = 0.0f}).find("repetition_penalty"), std::string::npos);
  EXPECT_TRUE(ValidateSamplingParams({.temperature = 0.7f, .top_k = 50, .top_p = 0.9f}).ok());
}

}  // namespace
}  // namespace strata
