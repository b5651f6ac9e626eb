// The official OpenAI SDK (npm `openai`, pinned by
// tests/reference/openai/package-lock.json) against a live cluster's HTTP
// API: completions and chat, streamed and not, seeds, n = 3, batches of
// prompts, penalties, log-probabilities, stop sequences, models and errors. Greedy and seeded
// results equal the single-process runs
// (`strata generate`'s path); streamed text equals the non-streamed text;
// usage counts are exact.
#include <cctype>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/services/cluster_util.h"
#include "tests/test_util.h"

namespace strata::testing {
namespace {

using nlohmann::json;

constexpr char kKey[] = "sk-strata-sdk-test-0123456789";

TEST(OpenAiSdkTest, TheOfficialSdkTalksToStrata) {
  const std::string node_modules = STRATA_OPENAI_NODE_MODULES;
  if (!std::ifstream(node_modules + "/openai/package.json").good()) {
    GTEST_SKIP() << "npm package `openai` not installed in " << node_modules
                 << " (bash tools/test installs it)";
  }
  const std::string dir = FreshDir("openai-sdk");
  std::ofstream(dir + "/keys") << kKey << "\n";
  auto cluster = Cluster::Start(
      TestModel("llama"), 2,
      {"--http-listen", "127.0.0.1:0", "--api-key-file", dir + "/keys", "--max-context", "128"});
  ASSERT_NE(cluster, nullptr);
  // The script runs from a copy beside the packages, as ES modules resolve
  // imports from the script's folder.
  const std::string script = node_modules + "/../strata_openai.mjs";
  std::ofstream(script) << ReadFile(std::string(STRATA_SOURCE_DIR) +
                                    "/tests/reference/openai/strata_openai.mjs");
  const std::string& m = TestModel("llama");
  // A stop sequence the greedy run meets: two ASCII letters from its middle.
  const Reference longer = GenerateLocally(m, "The old lighthouse keeper", 40, {}, true, 128);
  size_t at = 6;
  while (at + 1 < longer.text.size() &&
         !(std::isalpha(static_cast<unsigned char>(longer.text[at])) &&
           std::isalpha(static_cast<unsigned char>(longer.text[at + 1])))) {
    ++at;
  }
  ASSERT_LT(at + 1, longer.text.size()) << "no stop to use in " << longer.text;
  const std::string stop = longer.text.substr(at, 2);
  std::string out;
  const std::string model = "llama-f32-1";  // the test model's folder name
  ASSERT_EQ(RunCommand(absl::StrCat("node ", script, " http://", cluster->http(), "/v1 ", kKey, " ",
                                    model, " '", stop, "' 2>&1"),
                       &out),
            0)
      << out;
  const json r = json::parse(out.substr(out.find('{')));

  const Reference greedy = GenerateLocally(m, "The old lighthouse keeper", 12, {}, true, 128);
  EXPECT_EQ(r["completion"]["object"], "text_completion");
  EXPECT_EQ(r["completion"]["text"], greedy.text);
  EXPECT_EQ(r["completion"]["token_ids"].get<std::vector<int32_t>>(), greedy.tokens);
  EXPECT_EQ(r["completion"]["finish_reason"], "length");
  EXPECT_EQ(r["completion"]["usage"]["prompt_tokens"], greedy.prompt.size());
  EXPECT_EQ(r["completion"]["usage"]["completion_tokens"], 12);
  EXPECT_EQ(r["completion"]["usage"]["total_tokens"], greedy.prompt.size() + 12);
  EXPECT_EQ(r["completion_stream"]["text"], greedy.text);
  EXPECT_EQ(r["completion_stream"]["usage"], r["completion"]["usage"]);
  EXPECT_EQ(r["completion_stream"]["finish_reason"], "length");

  EXPECT_EQ(r["chat"]["role"], "assistant");
  EXPECT_EQ(r["chat_stream"]["content"], r["chat"]["content"]);
  EXPECT_EQ(r["chat_stream"]["roles"], json::array({"assistant"}));
  EXPECT_EQ(r["chat"]["usage"]["completion_tokens"], 8);

  SamplingParams sp;
  sp.temperature = 0.9f;
  sp.seed = 1234;
  const Reference seeded = GenerateLocally(m, "Once upon a time", 16, sp, true, 128);
  EXPECT_EQ(r["seeded"]["token_ids"].get<std::vector<int32_t>>(), seeded.tokens);
  EXPECT_EQ(r["seeded"]["seed"], 1234);
  EXPECT_EQ(r["unseeded"]["replay"], r["unseeded"]["token_ids"]);

  // n = 3: choice j is the run with seed 1234 + j; each prompt counted once.
  ASSERT_EQ(r["n3"]["choices"].size(), 3u);
  EXPECT_EQ(r["n3"]["seed"], 1234);
  for (int j = 0; j < 3; ++j) {
    SamplingParams sj = sp;
    sj.seed = 1234 + j;
    const Reference want = GenerateLocally(m, "Once upon a time", 16, sj, true, 128);
    EXPECT_EQ(r["n3"]["choices"][j]["index"], j);
    EXPECT_EQ(r["n3"]["choices"][j]["token_ids"].get<std::vector<int32_t>>(), want.tokens) << j;
    EXPECT_EQ(r["n3"]["choices"][j]["text"], want.text) << j;
  }
  EXPECT_NE(r["n3"]["choices"][0]["token_ids"], r["n3"]["choices"][1]["token_ids"]);
  EXPECT_EQ(r["n3"]["usage"]["prompt_tokens"], seeded.prompt.size());
  EXPECT_EQ(r["n3"]["usage"]["completion_tokens"], 48);
  EXPECT_EQ(r["chat_n3"]["streamed"], r["chat_n3"]["contents"]);
  EXPECT_EQ(r["chat_n3"]["completion_tokens"], 24);

  // A batch of two prompts: each choice is that prompt's greedy run.
  const Reference once = GenerateLocally(m, "Once upon a time", 12, {}, true, 128);
  EXPECT_EQ(r["batch"]["texts"], json::array({greedy.text, once.text}));
  EXPECT_EQ(r["batch"]["usage"]["prompt_tokens"], greedy.prompt.size() + once.prompt.size());

  // Penalties as `strata generate` applies them (they change the output).
  SamplingParams pen;
  pen.presence_penalty = 1.5f;
  pen.frequency_penalty = 1.0f;
  const Reference penalised = GenerateLocally(m, "The old lighthouse keeper", 24, pen, true, 128);
  EXPECT_EQ(r["penalised"]["token_ids"].get<std::vector<int32_t>>(), penalised.tokens);
  const Reference plain = GenerateLocally(m, "The old lighthouse keeper", 24, {}, true, 128);
  EXPECT_NE(penalised.tokens, plain.tokens) << "the penalties should change this greedy run";

  // Chat log-probabilities: greedy, so each token is its position's top one.
  ASSERT_EQ(r["chat_logprobs"].size(), 6u);
  for (const json& e : r["chat_logprobs"]) {
    ASSERT_EQ(e["top"].size(), 3u);
    EXPECT_EQ(e["top"][0][0], e["token"]);
    EXPECT_FLOAT_EQ(e["top"][0][1].get<float>(), e["logprob"].get<float>());
    double mass = 0;
    for (size_t k = 0; k < 3; ++k) {
      if (k > 0) {
        EXPECT_GE(e["top"][k - 1][1].get<double>(), e["top"][k][1].get<double>());
      }
      mass += std::exp(e["top"][k][1].get<double>());
    }
    EXPECT_LE(mass, 1.0 + 1e-6);
  }

  // The stop sequence: the text up to its first occurrence, excluded.
  EXPECT_EQ(r["stop"]["text"], longer.text.substr(0, longer.text.find(stop)));
  EXPECT_EQ(r["stop"]["finish_reason"], "stop");

  EXPECT_EQ(r["models"], json::array({model}));
  EXPECT_EQ(r["unknown_model"]["status"], 404);
  EXPECT_EQ(r["unknown_model"]["param"], "model");
  EXPECT_EQ(r["unknown_model"]["code"], "model_not_found");
  EXPECT_EQ(r["huge_n"]["status"], 400);
  EXPECT_EQ(r["huge_n"]["param"], "n");
  EXPECT_EQ(r["unsupported_best_of"]["status"], 400);
  EXPECT_EQ(r["unsupported_best_of"]["param"], "best_of");
  EXPECT_EQ(r["wrong_key"]["status"], 401);
}

}  // namespace
}  // namespace strata::testing
