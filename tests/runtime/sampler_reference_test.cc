// The sampler against an independent PyTorch reference of transformers'
// logits processing (tests/reference/sampling_reference.py): on thousands of
// random logit vectors (ties, -inf, huge and tiny values; vocabularies of 8
// to 152k) and every combination of repetition penalty, temperature, top-k,
// top-p and min-p (and presence and frequency penalties on the random cases), the distribution the
// sampler draws from must have the reference's support and its probabilities to 1e-6 relative. Then
// the draws themselves: 10^5 per case at a fixed seed, a chi-square test of the frequencies against
// the reference distribution at significance 1e-4.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "runtime/sampler.h"
#include "tests/test_util.h"

namespace strata {
namespace {

struct Case {
  std::vector<float> logits;
  std::vector<int32_t> history;
  size_t prompt_length = 0;  // history[prompt_length:] was generated
  SamplingParams params;
};

std::string Describe(const Case& c) {
  const SamplingParams& p = c.params;
  return absl::StrFormat(
      "vocab %d, temperature %.9g, top_k %d, top_p %.9g, min_p %.9g, repetition_penalty %.9g, "
      "%d history ids",
      c.logits.size(), p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty,
      c.history.size());
}

// Logits of one of several kinds, so ties, -inf and extreme magnitudes come up.
std::vector<float> RandomLogits(int64_t vocab, int kind, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(vocab);
  for (float& x : v) {
    const float z = normal(rng);
    switch (kind % 6) {
      case 0:
        x = 3.0f * z;
        break;  // ordinary
      case 1:
        x = std::round(2.0f * z) / 2.0f;
        break;  // many ties
      case 2:
        x = 20.0f * z;
        break;  // peaked
      case 3:
        x = 1e-30f * z;
        break;  // nearly uniform, tiny values
      case 4:
        x = z > 1.5f ? 1e30f : (z < -1.5f ? -1e30f : z);
        break;  // huge values
      case 5:
        x = z < -0.5f ? -std::numeric_limits<float>::infinity() : 4.0f * z;
        break;
    }
  }
  if (kind % 6 == 5) v[rng() % vocab] = 1.0f;  // never every one -inf
  return v;
}

std::vector<int32_t> RandomHistory(int64_t vocab, std::mt19937& rng) {
  std::vector<int32_t> h(rng() % 12);
  for (int32_t& id : h) id = static_cast<int32_t>(rng() % vocab);
  return h;
}

std::vector<Case> MakeCases() {
  std::mt19937 rng(20261201);
  std::vector<Case> cases;
  int kind = 0;
  // Every combination of the parameters on small vocabularies, with the
  // boundaries: top_k of the whole vocabulary and past it, top_p 1 and the
  // smallest positive float, min_p 1.
  const float kSmallest = std::numeric_limits<float>::denorm_min();
  for (float temperature : {0.0f, 0.05f, 0.7f, 1.0f, 1.7f}) {
    for (int top_k : {0, 1, 5, 50, 53}) {
      for (float top_p : {1.0f, 0.9f, 0.5f, kSmallest}) {
        for (float min_p : {0.0f, 0.05f, 0.3f, 1.0f}) {
          for (float penalty : {1.0f, 1.3f, 0.8f}) {
            Case c;
            c.logits = RandomLogits(50, kind++, rng);
            c.history = RandomHistory(50, rng);
            c.params = {.temperature = temperature,
                        .top_k = top_k,
                        .top_p = top_p,
                        .repetition_penalty = penalty,
                        .seed = 1,
                        .min_p = min_p};
            cases.push_back(std::move(c));
          }
        }
      }
    }
  }
  // Random parameters on larger vocabularies, including 32k and 152k.
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int i = 0; i < 1100; ++i) {
    const int64_t vocab = i < 24 ? 32000 : (i < 32 ? 151936 : (i % 2 ? 8 : 1000));
    Case c;
    c.logits = RandomLogits(vocab, kind++, rng);
    c.history = RandomHistory(vocab, rng);
    c.params.temperature = 0.05f + 2.0f * unit(rng);
    c.params.top_k = rng() % 3 == 0 ? 0 : static_cast<int32_t>(1 + rng() % (vocab + 2));
    c.params.top_p = rng() % 3 == 0 ? 1.0f : std::max(1e-3f, unit(rng));
    c.params.min_p = rng() % 2 == 0 ? 0.0f : 0.2f * unit(rng);
    c.params.repetition_penalty = rng() % 2 == 0 ? 1.0f : 0.5f + unit(rng);
    // Repeated ids, so counts above one come up.
    if (rng() % 2 == 0) {
      for (size_t j = 0, n = c.history.size(); j < n; ++j) c.history.push_back(c.history[j]);
    }
    c.prompt_length = c.history.empty() ? 0 : rng() % c.history.size();
    if (rng() % 2 == 0) {
      c.params.presence_penalty = rng() % 3 == 0 ? 0.0f : -2.0f + 4.0f * unit(rng);
      c.params.frequency_penalty = rng() % 3 == 0 ? 0.0f : -2.0f + 4.0f * unit(rng);
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

// Runs the reference on `cases`; their probabilities, concatenated.
std::vector<double> Reference(const std::vector<Case>& cases) {
  const std::string dir = testing::FreshDir("sampling-reference");
  std::ofstream json(dir + "/cases.json"), logits(dir + "/logits.f32", std::ios::binary);
  int64_t total = 0;
  json << "[";
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::string history;
    for (int32_t id : c.history) absl::StrAppend(&history, history.empty() ? "" : ",", id);
    json << (i ? "," : "")
         << absl::StrFormat(
                "{\"vocab\":%d,\"history\":[%s],\"temperature\":%.9g,\"top_k\":%d,"
                "\"top_p\":%.9g,\"min_p\":%.9g,\"repetition_penalty\":%.9g,"
                "\"prompt_length\":%d,\"presence_penalty\":%.9g,\"frequency_penalty\":%.9g}",
                c.logits.size(), history, c.params.temperature, c.params.top_k, c.params.top_p,
                c.params.min_p, c.params.repetition_penalty, c.prompt_length,
                c.params.presence_penalty, c.params.frequency_penalty);
    logits.write(reinterpret_cast<const char*>(c.logits.data()),
                 static_cast<std::streamsize>(c.logits.size() * sizeof(float)));
    total += static_cast<int64_t>(c.logits.size());
  }
  json << "]";
  json.close();
  logits.close();
  const char* python = std::getenv("STRATA_PYTHON");
  std::string output;
  const int rc =
      testing::RunCommand(absl::StrCat(python != nullptr ? python : "/usr/bin/python3", " ",
                                       STRATA_SOURCE_DIR, "/tests/reference/sampling_reference.py ",
                                       dir, "/cases.json ", dir, "/logits.f32 ", dir, "/probs.f64"),
                          &output);
  EXPECT_EQ(rc, 0) << output;
  std::vector<double> probs(total, -1.0);
  std::ifstream in(dir + "/probs.f64", std::ios::binary);
  in.read(reinterpret_cast<char*>(probs.data()), static_cast<std::streamsize>(total * 8));
  EXPECT_EQ(in.gcount(), total * 8) << "the reference wrote too little";
  return probs;
}

TEST(SamplerReferenceTest, DistributionsEqualTransformersSemantics) {
  const std::vector<Case> cases = MakeCases();
  const std::vector<double> want = Reference(cases);
  ASSERT_FALSE(HasFailure());
  Sampler sampler;
  int64_t at = 0, checked = 0;
  for (const Case& c : cases) {
    const int64_t vocab = static_cast<int64_t>(c.logits.size());
    std::vector<double> got(vocab, 0.0);
    for (const auto& [p, id] : sampler.Distribution(c.logits, c.params, c.history, c.prompt_length))
      got[id] = p;
    for (int64_t id = 0; id < vocab; ++id) {
      const double w = want[at + id], g = got[id];
      ASSERT_EQ(w > 0, g > 0) << Describe(c) << ": token " << id << " has probability " << g
                              << ", the reference's is " << w;
      ASSERT_LE(std::abs(g - w), 1e-6 * w + 1e-300)
          << Describe(c) << ": token " << id << " has probability " << g << ", the reference's is "
          << w;
    }
    at += vocab;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int64_t>(cases.size()));
}

// The chi-square critical value for `df` degrees of freedom at significance
// 1e-4 (Wilson-Hilferty; z = 3.719 is the standard normal's 1 - 1e-4 point).
double ChiSquareCritical(int df) {
  const double k = 2.0 / (9.0 * df);
  return df * std::pow(1.0 - k + 3.719 * std::sqrt(k), 3);
}

TEST(SamplerReferenceTest, DrawsFollowTheReferenceDistribution) {
  std::mt19937 rng(7);
  std::vector<Case> cases;
  const SamplingParams kParams[] = {
      {.temperature = 0.7f, .top_p = 0.9f, .seed = 11},
      {.temperature = 1.0f, .seed = 12},
      {.temperature = 1.3f, .top_k = 20, .seed = 13},
      {.temperature = 0.5f, .top_k = 40, .top_p = 0.8f, .repetition_penalty = 1.2f, .seed = 14},
      {.temperature = 0.9f, .top_p = 0.95f, .seed = 15, .min_p = 0.05f},
      {.temperature = 2.0f, .repetition_penalty = 0.7f, .seed = 16},
  };
  for (const SamplingParams& p : kParams) {
    Case c;
    std::normal_distribution<float> normal(0.0f, 1.2f);  // spread enough for many bins
    for (int i = 0; i < 120; ++i) c.logits.push_back(normal(rng));
    c.history = RandomHistory(120, rng);
    c.params = p;
    cases.push_back(std::move(c));
  }
  const std::vector<double> want = Reference(cases);
  ASSERT_FALSE(HasFailure());
  Sampler sampler;
  constexpr int kDraws = 100'000;
  int64_t at = 0;
  for (const Case& c : cases) {
    const int64_t vocab = static_cast<int64_t>(c.logits.size());
    std::vector<int64_t> counts(vocab, 0);
    for (int64_t pos = 0; pos < kDraws; ++pos)
      ++counts[sampler.Sample(c.logits, c.params, c.history, c.prompt_length, pos)];
    // Bins of expected count >= 5; the rest pooled into one.
    double chi2 = 0, pooled_expected = 0, pooled_seen = 0;
    int bins = 0;
    for (int64_t id = 0; id < vocab; ++id) {
      const double expected = want[at + id] * kDraws;
      if (want[at + id] == 0) {
        ASSERT_EQ(counts[id], 0) << Describe(c) << ": drew token " << id
                                 << ", which the reference never draws";
        continue;
      }
      if (expected < 5) {
        pooled_expected += expected;
        pooled_seen += static_cast<double>(counts[id]);
        continue;
      }
      chi2 += (counts[id] - expected) * (counts[id] - expected) / expected;
      ++bins;
    }
    if (pooled_expected >= 5) {
      chi2 += (pooled_seen - pooled_expected) * (pooled_seen - pooled_expected) / pooled_expected;
      ++bins;
    }
    ASSERT_GE(bins, 2) << Describe(c);
    EXPECT_LT(chi2, ChiSquareCritical(bins - 1))
        << Describe(c) << ": chi-square " << chi2 << " over " << bins << " bins";
    at += vocab;
  }
}

}  // namespace
}  // namespace strata
