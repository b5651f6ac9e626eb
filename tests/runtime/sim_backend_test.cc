// Simulated devices: memory accounted as on CUDA (a budget overrun is the
// clear error), deterministic tokens that do not depend on the split, and
// step times that keep to the device model.
#include "runtime/backend/sim/sim_backend.h"

#include <chrono>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/device_table.h"
#include "runtime/generate.h"
#include "runtime/stage.h"
#include "tests/test_util.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

ModelConfig Config(const std::string& dir) {
  auto c = LoadModelConfig(dir);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// HY-MT1.5-1.8B's full shape as sparse zeros: 3.6 GB that cost no disk.
const std::string& HyMt() {
  static const std::string* dir = [] {
    auto* d = new std::string(testing::FreshDir("hy-mt-zeros"));
    ModelSpec spec;
    spec.flavour = "hunyuan-dense";
    spec.size = "hy-mt1.5-1.8b";
    spec.init = "zeros";
    EXPECT_TRUE(MakeModel(spec, *d).ok());
    return d;
  }();
  return *dir;
}

std::vector<int32_t> Greedy(LocalPipeline& p, const std::vector<int32_t>& prompt, int steps) {
  std::vector<int32_t> tokens;
  StageBatch b;
  b.chunks.push_back({.seq_id = 1,
                      .start_pos = 0,
                      .num_tokens = static_cast<int64_t>(prompt.size()),
                      .token_ids = prompt,
                      .logits = LogitsMode::kGreedy});
  StageOutput out;
  for (int s = 0; s <= steps; ++s) {
    EXPECT_TRUE(p.Step(b, &out).ok());
    const int32_t t = out.greedy[0];
    tokens.push_back(t);
    b.chunks[0].start_pos += b.chunks[0].num_tokens;
    b.chunks[0].num_tokens = 1;
    b.chunks[0].token_ids = {t};
  }
  return tokens;
}

TEST(SimBackendTest, TokensAreDeterministicInTheVocabularyAndIndependentOfTheSplit) {
  const std::string& dir = testing::TestModel("llama");
  const ModelConfig config = Config(dir);
  StageOptions options;
  options.device = "sim:a100-40gb";
  auto one = LocalPipeline::Load(dir, config, {}, options);
  ASSERT_TRUE(one.ok()) << one.status();
  const std::vector<int32_t> prompt = {1, 17, 42, 99, 7};
  const std::vector<int32_t> tokens = Greedy(**one, prompt, 12);
  for (int32_t t : tokens) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, config.vocab_size);
  }
  EXPECT_GT(std::set<int32_t>(tokens.begin(), tokens.end()).size(), 6u) << "not a constant";
  auto split = LocalPipeline::Load(dir, config, {1, 3}, options);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(Greedy(**split, prompt, 12), tokens);
  // Another prompt, other tokens.
  auto again = LocalPipeline::Load(dir, config, {}, options);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(Greedy(**again, {1, 17, 42, 99, 8}, 12), tokens);
}

TEST(SimBackendTest, MemoryIsAccountedAsOnCudaAndAnOverrunNamesWhatDidNotFit) {
  const std::string& dir = HyMt();
  const ModelConfig config = Config(dir);
  StageOptions options;
  options.device = "sim:l4";
  options.max_sequences = 4;
  options.max_context = 4096;
  auto stage = Stage::Load(dir, config, 0, config.num_layers, options);
  ASSERT_TRUE(stage.ok()) << stage.status();
  const MemoryReport m = (*stage)->memory();
  EXPECT_NE(m.device.find("sim:l4"), std::string::npos) << m.device;
  // bf16 weights (the checkpoint's 3.58 GB, the tied head not copied), the
  // KV cache (4 x 4096 tokens x 32 layers x 2 x 512 x 2 bytes = 1 GiB) and
  // the workspaces: nothing of it in this process's memory.
  const int64_t weights = 2 * int64_t{1791080448};
  const int64_t kv = int64_t{4} * 4096 * 32 * 2 * 512 * 2;
  EXPECT_GT(m.used_bytes, weights + kv);
  EXPECT_LT(m.used_bytes, weights + kv + kGiB / 2);
  EXPECT_EQ(m.total_bytes, FindDevice("l4")->memory_bytes);
  // A first stage that keeps the embedding table in host memory holds
  // exactly the table's bf16 bytes less on the device.
  auto device_table = Stage::Load(dir, config, 0, 16, options);
  StageOptions hosted = options;
  hosted.host_embedding = true;
  auto host_table = Stage::Load(dir, config, 0, 16, hosted);
  ASSERT_TRUE(device_table.ok() && host_table.ok());
  EXPECT_EQ((*device_table)->memory().used_bytes - (*host_table)->memory().used_bytes,
            config.vocab_size * config.hidden_size * 2);
  // 96 sequences of 4096 tokens need 24 GiB of KV: more than the L4 has.
  options.max_sequences = 96;
  auto over = Stage::Load(dir, config, 0, config.num_layers, options);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("KV cache"), std::string::npos) << over.status();
  EXPECT_NE(over.status().message().find("device budget"), std::string::npos) << over.status();
  // A budget below the weights fails on a tensor, by name.
  options.max_sequences = 1;
  options.device_memory_bytes = 2 * kGiB;
  auto small = Stage::Load(dir, config, 0, config.num_layers, options);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("tensor model."), std::string::npos) << small.status();
}

TEST(SimBackendTest, BadDevicesAreRefusedByName) {
  BackendOptions options;
  options.device = "sim:tpu-v9";
  auto unknown = MakeSimBackend(options, DType::kBF16);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("sim:tpu-v9"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("a100-40gb"), std::string::npos);
  options.device = "sim:custom";
  auto bare = MakeSimBackend(options, DType::kBF16);
  ASSERT_FALSE(bare.ok());
  EXPECT_NE(bare.status().message().find("--sim-bandwidth"), std::string::npos);
  options.sim_memory_bytes = 8 * kGiB;
  options.sim_bandwidth = 400e9;
  options.sim_flops = 50e12;
  auto custom = MakeSimBackend(options, DType::kF16);
  ASSERT_TRUE(custom.ok()) << custom.status();
  EXPECT_EQ((*custom)->Memory().total_bytes, 8 * kGiB);
  EXPECT_EQ((*custom)->activation_dtype(), DType::kF16);
}

// The bar: the simulated step time within 10% of the model, here.
// Decode steps of 16 sequences on HY-MT's shape on an A100-40GB take about
// 2.5 ms each by the model.
TEST(SimBackendTest, StepsTakeTheModelledTime) {
  const std::string& dir = HyMt();
  const ModelConfig config = Config(dir);
  StageOptions options;
  options.device = "sim:a100-40gb";
  options.max_sequences = 16;
  options.max_context = 1024;
  auto stage = Stage::Load(dir, config, 0, config.num_layers, options);
  ASSERT_TRUE(stage.ok()) << stage.status();
  StageBatch prefill;
  for (uint64_t s = 0; s < 16; ++s) {
    prefill.chunks.push_back({.seq_id = s,
                              .start_pos = 0,
                              .num_tokens = 16,
                              .token_ids = std::vector<int32_t>(16, 100 + static_cast<int>(s)),
                              .logits = LogitsMode::kGreedy});
  }
  StageOutput out;
  ASSERT_TRUE((*stage)->Run(prefill, &out).ok());
  // 60 decode steps, measured up to three times: on two cores shared with
  // other tests a sleep can wake late, and one quiet run shows the holding.
  StageBatch decode = prefill;
  const int steps = 60;
  std::string runs;
  for (int attempt = 0; attempt < 3; ++attempt) {
    const Backend::StepTiming before = (*stage)->backend().Timing();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) {
      for (size_t c = 0; c < decode.chunks.size(); ++c) {
        SequenceChunk& chunk = decode.chunks[c];
        chunk.start_pos += chunk.num_tokens;
        chunk.num_tokens = 1;
        chunk.token_ids = {out.greedy[c]};
      }
      ASSERT_TRUE((*stage)->Run(decode, &out).ok());
    }
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const Backend::StepTiming after = (*stage)->backend().Timing();
    ASSERT_EQ(after.steps - before.steps, steps);
    const double modelled = after.modelled_seconds - before.modelled_seconds;
    const double achieved = after.achieved_seconds - before.achieved_seconds;
    ASSERT_GT(modelled / steps, 1.5e-3);  // the weights alone: 3.58 GB / 1555 GB/s
    ASSERT_LT(modelled / steps, 4e-3);
    ASSERT_GE(achieved, modelled);  // never early: it sleeps to a deadline
    runs +=
        absl::StrCat(" modelled ", modelled, " s, achieved ", achieved, " s, wall ", wall, " s;");
    if (achieved < 1.10 * modelled && wall < 1.10 * modelled) return;
  }
  ADD_FAILURE() << "no run within 10% of the model:" << runs;
}

}  // namespace
}  // namespace strata
