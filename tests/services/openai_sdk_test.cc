// The official OpenAI SDK (npm `openai`, pinned by
// tests/reference/openai/package-lock.json) against a live cluster's HTTP
// API: completions and chat, streamed and not, seeds, stop sequences,
// models and errors. Greedy and seeded results equal the single-process runs
// (`strata generate`'s path); streamed text equals the non-streamed text;
// usage counts are exact.
#include <cctype>
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

  // The stop sequence: the text up to its first occurrence, excluded.
  EXPECT_EQ(r["stop"]["text"], longer.text.substr(0, longer.text.find(stop)));
  EXPECT_EQ(r["stop"]["finish_reason"], "stop");

  EXPECT_EQ(r["models"], json::array({model}));
  EXPECT_EQ(r["unknown_model"]["status"], 404);
  EXPECT_EQ(r["unknown_model"]["param"], "model");
  EXPECT_EQ(r["unknown_model"]["code"], "model_not_found");
  EXPECT_EQ(r["unsupported_n"]["status"], 400);
  EXPECT_EQ(r["unsupported_n"]["param"], "n");
  EXPECT_EQ(r["wrong_key"]["status"], 401);
}

}  // namespace
}  // namespace strata::testing
