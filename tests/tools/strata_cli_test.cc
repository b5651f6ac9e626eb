// The `strata` binary as a user runs it: real processes, exit codes, and
// error messages that name the flag or file.
#include <cctype>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace strata {
namespace {

std::string Strata() { return STRATA_BINARY; }

TEST(StrataCliTest, GenerateStreamsAndIsDeterministic) {
  const std::string& model = testing::TestModel("llama");
  std::string a, b;
  const std::string cmd = absl::StrCat(Strata(), " generate --model ", model,
                                       " --prompt 'The harbour master' --max-tokens 12"
                                       " --temperature 0.8 --top-p 0.9 --seed 5 --ignore-eos");
  ASSERT_EQ(testing::RunCommand(cmd, &a), 0) << a;
  ASSERT_EQ(testing::RunCommand(cmd, &b), 0) << b;
  EXPECT_EQ(a.rfind("The harbour master", 0), 0u) << a;
  EXPECT_GT(a.size(), std::string("The harbour master\n").size());
  EXPECT_EQ(a, b);
}

TEST(StrataCliTest, DefaultModelIsMadeOnFirstUse) {
  const std::string home = testing::FreshDir("home");
  std::string out;
  ASSERT_EQ(testing::RunCommand(absl::StrCat("STRATA_HOME=", home, " ", Strata(),
                                             " generate --prompt hello --max-tokens 4"),
                                &out),
            0)
      << out;
  EXPECT_TRUE(
      std::filesystem::exists(home + "/models/default-llama-tiny-bigram/model.safetensors"));
}

// The default model's bigram init writes text made of the corpus's letters,
// where a random model writes byte-fallback junk; and the flag is checked.
TEST(StrataCliTest, BigramInitSpeaksTheCorpus) {
  const std::string dir = testing::FreshDir("bigram");
  std::string out;
  ASSERT_EQ(
      testing::RunCommand(absl::StrCat(Strata(), " make-model --init bigram --out ", dir), &out), 0)
      << out;
  ASSERT_EQ(testing::RunCommand(absl::StrCat(Strata(), " generate --model ", dir,
                                             " --prompt 'The old lighthouse keeper' --max-tokens 24"
                                             " --repetition-penalty 1.3"),
                                &out),
            0)
      << out;
  int letters = 0, other = 0;
  for (unsigned char c : out.substr(std::string("The old lighthouse keeper").size())) {
    (std::isalpha(c) || c == ' ' || c == '.' || c == ',' || c == '\n' ? letters : other) += 1;
  }
  EXPECT_GT(letters, 10) << out;
  EXPECT_LE(other, letters / 4) << out;
  EXPECT_EQ(testing::RunCommand(absl::StrCat(Strata(), " make-model --init fancy --out ", dir, "2"),
                                &out),
            2);
  EXPECT_NE(out.find("--init"), std::string::npos) << out;
  EXPECT_EQ(testing::RunCommand(absl::StrCat(Strata(),
                                             " make-model --init bigram --flavour qwen2"
                                             " --out ",
                                             dir, "3"),
                                &out),
            2);
  EXPECT_NE(out.find("untied"), std::string::npos) << out;
}

// Every flag has an environment twin (what the Kubernetes manifests set);
// the command line wins over it, and a bad value names the variable.
TEST(StrataCliTest, FlagsReadTheirEnvironmentVariables) {
  const std::string model = testing::TestModel("llama");
  std::string out;
  ASSERT_EQ(testing::RunCommand(absl::StrCat("STRATA_DEVICES=1GiB,1GiB STRATA_MODEL=", model, " ",
                                             Strata(), " plan"),
                                &out),
            0)
      << out;
  EXPECT_NE(out.find("on 2 of 2 device(s)"), std::string::npos) << out;
  ASSERT_EQ(testing::RunCommand(absl::StrCat("STRATA_DEVICES=1GiB,1GiB ", Strata(),
                                             " plan --model ", model, " --devices 1GiB"),
                                &out),
            0)
      << out;
  EXPECT_NE(out.find("on 1 of 1 device(s)"), std::string::npos) << out;
  EXPECT_EQ(testing::RunCommand(absl::StrCat("STRATA_MAX_TOKENS=many ", Strata(),
                                             " generate --prompt hi --model ", model),
                                &out),
            2);
  EXPECT_NE(out.find("STRATA_MAX_TOKENS"), std::string::npos) << out;
}

// --stop repeats and takes each value whole: a comma is part of the stop
// sequence, never a separator. --presence-penalty and --frequency-penalty
// are checked by name.
// The layout flags refuse bad values by name, before anything starts.
TEST(StrataCliTest, LayoutFlagsRefuseBadValuesByName) {
  struct Bad {
    std::string args;
    std::string names;
  };
  for (const Bad& b : std::vector<Bad>{
           {"up --gpus sim:a100-40gb*0", "--gpus"},
           {"up --gpus sim:tpu-v5*2", "\"tpu-v5\" is not a known device"},
           {"up --gpus 0,x", "--gpus: \"x\""},
           {"coordinator --kv-budget lots", "--kv-budget"},
           {"worker --coordinator 127.0.0.1:1 --memory-fraction 1.5", "--memory-fraction"},
           {"worker --coordinator 127.0.0.1:1 --memory-fraction 0.5 --reserve 1GiB",
            "--memory-fraction, --reserve"},
           {"worker --coordinator 127.0.0.1:1 --sim-memory lots", "--sim-memory"},
           {"worker --coordinator 127.0.0.1:1 --device sim:custom", "--sim-bandwidth"},
           {"plan --devices a100-40gb*0", "--devices[0]"},
           {"plan --devices h100-80gb --replicas 2 --stages 1", "needs 2 devices"}}) {
    std::string out;
    EXPECT_NE(testing::RunCommand(absl::StrCat(Strata(), " ", b.args, " 2>&1"), &out), 0) << b.args;
    EXPECT_NE(out.find(b.names), std::string::npos) << b.args << ": " << out;
  }
}

TEST(StrataCliTest, StopFlagsRepeatAndKeepTheirCommas) {
  const std::string& model = testing::TestModel("llama");
  const std::string run = absl::StrCat(Strata(), " up --model ", model,
                                       " --workers 1 --prompt 'The old lighthouse keeper'"
                                       " --max-tokens 40 --ignore-eos");
  // The completion is the line that starts with the prompt.
  auto text = [](const std::string& out) {
    const size_t at = out.find("\nThe old lighthouse keeper");
    if (at == std::string::npos) return std::string();
    return out.substr(at + 1, out.find('\n', at + 1) - at - 1);
  };
  std::string out;
  ASSERT_EQ(testing::RunCommand(run + " 2>/dev/null", &out), 0) << out;
  const std::string full = text(out);
  // Two letters from the completion's middle.
  size_t at = std::string("The old lighthouse keeper").size() + 4;
  while (at + 1 < full.size() && !(std::isalpha(static_cast<unsigned char>(full[at])) &&
                                   std::isalpha(static_cast<unsigned char>(full[at + 1])))) {
    ++at;
  }
  ASSERT_LT(at + 1, full.size()) << "no letters to stop at in " << full;
  const std::string letters = full.substr(at, 2);
  const size_t cut = full.find(letters, std::string("The old lighthouse keeper").size());
  // "XY,never" is one stop sequence that never occurs: nothing is cut.
  ASSERT_EQ(
      testing::RunCommand(
          absl::StrCat(run, " --stop '", letters, ",never' --stop 'also never' 2>/dev/null"), &out),
      0)
      << out;
  EXPECT_EQ(text(out), full);
  ASSERT_EQ(testing::RunCommand(
                absl::StrCat(run, " --stop 'never' --stop '", letters, "' 2>/dev/null"), &out),
            0)
      << out;
  EXPECT_EQ(text(out), full.substr(0, cut));
  for (const char* flag : {"--presence-penalty 2.5", "--frequency-penalty -3"}) {
    EXPECT_NE(testing::RunCommand(
                  absl::StrCat(Strata(), " generate --model ", model, " --prompt hi ", flag), &out),
              0);
    EXPECT_NE(out.find(std::string(flag).substr(2, 8)), std::string::npos) << out;
  }
}

TEST(StrataCliTest, InspectPrintsLayersAndTotal) {
  std::string out;
  ASSERT_EQ(
      testing::RunCommand(
          absl::StrCat(Strata(), " inspect --model ", testing::TestModel("hunyuan-dense")), &out),
      0);
  EXPECT_NE(out.find("HunYuanDenseV1ForCausalLM"), std::string::npos) << out;
  EXPECT_NE(out.find("model.layers.3"), std::string::npos);
  EXPECT_NE(out.find("lm_head (tied)"), std::string::npos);
  EXPECT_NE(out.find("total"), std::string::npos);
}

TEST(StrataCliTest, BadInputsGetClearErrors) {
  const std::string& model = testing::TestModel("llama");
  struct Case {
    std::string args, expect;
    int code;
  };
  const std::vector<Case> cases = {
      {"generate --prompt hi --temperature -1", "temperature", 2},
      {"generate --prompt hi --top-p 0", "top_p", 2},
      {"generate --prompt hi --repetition-penalty 0", "repetition_penalty", 2},
      {"generate --prompt hi --max-tokens abc", "--max-tokens", 2},
      {"generate --prompt hi --bogus 1", "--bogus", 2},
      {"generate", "--prompt", 2},
      {"generate --prompt \"$(printf 'lighthouse %.0s' $(seq 300))\"", "context", 1},
      {"frobnicate", "unknown command", 2},
  };
  for (const Case& c : cases) {
    std::string out;
    const int code = testing::RunCommand(
        absl::StrCat(Strata(), " ", c.args, c.args == "frobnicate" ? "" : " --model " + model),
        &out);
    EXPECT_EQ(code, c.code) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.expect), std::string::npos) << c.args << "\n" << out;
  }
  std::string out;
  EXPECT_EQ(testing::RunCommand(
                absl::StrCat(Strata(), " generate --prompt hi --model /nonexistent/model"), &out),
            1);
  EXPECT_NE(out.find("/nonexistent/model/config.json"), std::string::npos) << out;
}

// `strata logits` writes one f32 row per step; its greedy tokens are the
// argmax of those rows; bad flags name the flag.
TEST(StrataCliTest, LogitsWritesEveryStepAndChecksItsFlags) {
  const std::string& model = testing::TestModel("llama");
  const std::string out_file = testing::FreshDir("logits") + "/logits.f32";
  std::string out;
  ASSERT_EQ(testing::RunCommand(absl::StrCat(Strata(), " logits --model ", model,
                                             " --ids 1,5,9 --steps 4 --out ", out_file),
                                &out),
            0)
      << out;
  EXPECT_NE(out.find("\"prompt\":[1,5,9]"), std::string::npos) << out;
  const std::string bytes = testing::ReadFile(out_file);
  const size_t vocab_at = out.find("\"vocab_size\":");
  ASSERT_NE(vocab_at, std::string::npos) << out;
  const int64_t vocab = std::stoll(out.substr(vocab_at + 13));
  ASSERT_EQ(bytes.size(), static_cast<size_t>(5 * vocab * 4));
  const size_t tokens_at = out.find("\"tokens\":[");
  ASSERT_NE(tokens_at, std::string::npos) << out;
  const int32_t first = std::stoi(out.substr(tokens_at + 10));
  const float* row = reinterpret_cast<const float*>(bytes.data());
  EXPECT_EQ(std::max_element(row, row + vocab) - row, first);

  for (const auto& [flags, named] : std::vector<std::pair<std::string, std::string>>{
           {"--ids 1,x,3 --out /tmp/x", "--ids: \"x\""},
           {"--ids 1,2", "--out: required"},
           {"--out /tmp/x", "--ids: required"},
           {"--ids 1 --out /tmp/x --device tpu", "\"tpu\""},
           {"--ids 1 --out /tmp/x --steps -1", "--steps"}}) {
    std::string bad;
    EXPECT_NE(
        testing::RunCommand(absl::StrCat(Strata(), " logits --model ", model, " ", flags), &bad), 0)
        << flags;
    EXPECT_NE(bad.find(named), std::string::npos) << flags << ": " << bad;
  }
}

TEST(StrataCliTest, MakeModelWritesShardsWithAnIndex) {
  const std::string dir = testing::FreshDir("sharded");
  std::string out;
  ASSERT_EQ(testing::RunCommand(absl::StrCat(Strata(),
                                             " make-model --flavour mistral --dtype bf16"
                                             " --shards 2 --out ",
                                             dir),
                                &out),
            0)
      << out;
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/model-00002-of-00002.safetensors"));
  EXPECT_EQ(
      testing::RunCommand(absl::StrCat(Strata(), " make-model --flavour gpt2 --out ", dir), &out),
      2);
  EXPECT_NE(out.find("gpt2"), std::string::npos);
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// `strata plan` on Qwen2.5-3B's shape (made sparse: the sizes without the
// disk space): two 4 GiB devices get a map, one is refused with the reason.
TEST(StrataCliTest, PlanForQwen25ThreeBillion) {
  const std::string dir = testing::FreshDir("qwen2.5-3b");
  std::string out;
  ASSERT_EQ(testing::RunCommand(absl::StrCat(Strata(),
                                             " make-model --flavour qwen2 --size "
                                             "qwen2.5-3b --init zeros --out ",
                                             dir),
                                &out),
            0)
      << out;
  const std::string plan =
      absl::StrCat(Strata(), " plan --model ", dir, " --concurrency 4 --context 4096");
  ASSERT_EQ(testing::RunCommand(plan + " --devices 4GiB,4GiB", &out), 0) << out;
  EXPECT_NE(out.find("Qwen2ForCausalLM, 36 layers"), std::string::npos) << out;
  EXPECT_NE(out.find("layout: 1 replica(s) x 2 stage(s)"), std::string::npos) << out;
  EXPECT_NE(out.find("stage 0  device0      layers   0-"), std::string::npos) << out;
  EXPECT_NE(out.find("stage 1  device1      layers"), std::string::npos) << out;
  EXPECT_NE(out.find("\"lm_head\": 1"), std::string::npos) << out;
  EXPECT_NE(testing::RunCommand(plan + " --devices 4GiB", &out), 0);
  EXPECT_NE(out.find("does not fit on 1 device(s)"), std::string::npos) << out;
  EXPECT_NE(out.find("weights 5.75 GiB"), std::string::npos) << out;
  // Sizes that do not belong to the flavour are refused by name.
  EXPECT_NE(testing::RunCommand(absl::StrCat(Strata(), " make-model --size qwen2.5-3b --out ",
                                             testing::FreshDir("bad")),
                                &out),
            0);
  EXPECT_NE(out.find("--size: \"qwen2.5-3b\" is unknown for flavour llama"), std::string::npos)
      << out;
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// `strata generate --chat` renders the prompt with the model's chat template
// (and echoes the rendered prompt); a model without one is refused by name.
TEST(StrataCliTest, GenerateChatUsesTheModelsTemplate) {
  std::string out;
  ASSERT_EQ(
      testing::RunCommand(absl::StrCat(Strata(), " generate --model ", testing::TestModel("qwen2"),
                                       " --prompt hi --system 'Be brief.' --max-tokens 2"),
                          &out),
      0)
      << out;
  EXPECT_EQ(out.rfind("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                      "<|im_start|>assistant\n",
                      0),
            0u)
      << out;
  EXPECT_NE(testing::RunCommand(absl::StrCat(Strata(), " generate --model ",
                                             testing::TestModel("mistral"), " --prompt hi --chat"),
                                &out),
            0);
  EXPECT_NE(out.find("no chat_template; send a prompt instead"), std::string::npos) << out;
}

// `strata up --worker-flags` puts each worker's index where it says {i}
// (--device cuda:{i} spreads a local cluster over the GPUs). Here the
// devices are unusable on purpose, so each worker's log names its own.
TEST(StrataCliTest, UpGivesEachWorkerItsIndexInWorkerFlags) {
  const std::string logs = testing::FreshDir("worker-flags");
  std::string out;
  const int rc = testing::RunCommand(
      absl::StrCat(Strata(), " up --model ", testing::TestModel("llama"),
                   " --workers 2 --worker-flags '--device tpu{i}' --prompt hi --max-tokens 1",
                   " --startup-timeout-ms 3000 --log-dir ", logs),
      &out);
  EXPECT_NE(rc, 0) << out;
  for (int i = 0; i < 2; ++i) {
    const std::string log = testing::ReadFile(absl::StrCat(logs, "/worker-", i, ".log"));
    EXPECT_NE(log.find(absl::StrCat("device \"tpu", i, "\"")), std::string::npos) << log;
  }
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// The security and HTTP flags: each bad value is refused at start, naming
// the flag (exit 2 for flag errors, 1 for what the process found).
TEST(StrataCliTest, SecurityAndHttpFlagsAreCheckedAtStart) {
  const std::string& model = testing::TestModel("llama");
  const std::string dir = testing::FreshDir("cli-certs");
  std::string out;
  ASSERT_EQ(testing::RunCommand(absl::StrCat(Strata(), " certs --out ", dir, " --workers 1"), &out),
            0)
      << out;
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {"certs", "--out: required"},
      {absl::StrCat("certs --out ", dir, " --hosts 'a b'"), "--hosts"},
      {absl::StrCat("certs --out ", dir, " --worker-names 'bad/name'"), "identity URI"},
      {absl::StrCat("coordinator --model ", model, " --tls-cert ", dir, "/coordinator.crt"),
       "--tls-key: required"},
      {absl::StrCat("coordinator --model ", model, " --tls-cert ", dir, "/gateway.crt --tls-key ",
                    dir, "/gateway.key --tls-ca ", dir, "/ca.crt"),
       "is a gateway certificate, not a coordinator's"},
      {absl::StrCat("worker --coordinator 127.0.0.1:1 --id other --tls-cert ", dir,
                    "/worker-0.crt --tls-key ", dir, "/worker-0.key --tls-ca ", dir, "/ca.crt"),
       "--id: other differs from the name in --tls-cert"},
      {absl::StrCat("coordinator --model ", model, " --health-listen not-an-address:x"),
       "--health-listen: cannot bind"},
      {absl::StrCat("coordinator --model ", model, " --step-watchdog-factor 0"),
       "--step-watchdog-factor"},
      {"gateway --coordinator 127.0.0.1:1 --api-key-file /nonexistent/keys",
       "--api-key-file: cannot read /nonexistent/keys"},
      {"gateway --coordinator 127.0.0.1:1 --public-tls-cert x.crt", "--public-tls-key"},
  };
  for (const Case& c : cases) {
    const int code = testing::RunCommand(absl::StrCat(Strata(), " ", c.args), &out);
    EXPECT_NE(code, 0) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.expect), std::string::npos) << c.args << "\n" << out;
  }
}

}  // namespace
}  // namespace strata
