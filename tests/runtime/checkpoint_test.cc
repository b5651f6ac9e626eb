// Config and checkpoint loading, including every bad-input case: each must
// be a clear error naming the file/field/tensor, never a crash.
#include "runtime/checkpoint.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "runtime/config.h"
#include "runtime/json.h"
#include "runtime/model_layout.h"
#include "runtime/stage.h"
#include "tests/test_util.h"

namespace strata {
namespace {

bool Contains(const absl::Status& s, absl::string_view what) {
  return s.message().find(what) != absl::string_view::npos;
}

absl::StatusOr<ModelConfig> ParseText(const std::string& text) {
  auto json = ParseJson(text, "config.json");
  if (!json.ok()) return json.status();
  return ParseModelConfig(*json, "config.json");
}

const char* kLlama = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64,
  "eos_token_id": [2, 7], "rope_scaling": null})";

TEST(ConfigTest, ParsesCommonFieldsAndEosLists) {
  auto c = ParseText(kLlama);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{2, 7}));
  EXPECT_TRUE(c->IsEos(7));
  EXPECT_FALSE(c->attention_bias);
}

TEST(ConfigTest, FamiliesSetTheirFeatures) {
  std::string qwen = kLlama;
  qwen.replace(qwen.find("LlamaForCausalLM"), 16, "Qwen2ForCausalLM");
  auto q = ParseText(qwen);
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(q->attention_bias);
  std::string hy = kLlama;
  hy.replace(hy.find("LlamaForCausalLM"), 16, "HunYuanDenseV1ForCausalLM");
  hy.replace(hy.find("null"), 4, R"({"type": "dynamic", "alpha": 1000.0, "factor": 1.0})");
  auto h = ParseText(hy);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_TRUE(h->qk_norm);
  EXPECT_EQ(h->rope_scaling.kind, RopeScaling::Kind::kDynamicAlpha);
  // base = theta * alpha^(d/(d-2)) for d = 16
  const double base = 10000.0 * std::pow(1000.0, 16.0 / 14.0);
  EXPECT_NEAR(RopeInverseFrequencies(*h)[1], 1.0 / std::pow(base, 2.0 / 16), 1e-6 * 0.118);
}

TEST(ConfigTest, Llama3ScalingKeepsHighFrequenciesAndDividesLowOnes) {
  std::string text = kLlama;
  text.replace(text.find("null"), 4,
               R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 32})");
  auto c = ParseText(text);
  ASSERT_TRUE(c.ok()) << c.status();
  const auto inv = RopeInverseFrequencies(*c);
  EXPECT_FLOAT_EQ(inv[0], 1.0f);  // wavelength 2π < 8
  EXPECT_FLOAT_EQ(inv[7], static_cast<float>(std::pow(10000.0, -14.0 / 16) / 8));  // > 32
}

TEST(ConfigTest, ErrorsNameTheField) {
  std::string unknown = kLlama;
  unknown.replace(unknown.find("LlamaForCausalLM"), 16, "GPT2LMHeadModel");
  auto u = ParseText(unknown);
  EXPECT_TRUE(Contains(u.status(), "GPT2LMHeadModel")) << u.status();
  std::string missing = kLlama;
  missing.replace(missing.find("\"hidden_size\""), 13, "\"hidden_sizes\"");
  EXPECT_TRUE(Contains(ParseText(missing).status(), "\"hidden_size\""));
  std::string yarn = kLlama;
  yarn.replace(yarn.find("null"), 4, R"({"type": "yarn", "factor": 4.0})");
  EXPECT_TRUE(Contains(ParseText(yarn).status(), "yarn"));
  std::string gqa = kLlama;
  gqa.replace(gqa.find("\"num_key_value_heads\": 2"), 24, "\"num_key_value_heads\": 3");
  EXPECT_TRUE(Contains(ParseText(gqa).status(), "num_key_value_heads"));
  EXPECT_TRUE(Contains(ParseText("{\"architectures\": [").status(), "config.json"));
}

TEST(JsonTest, RoundTripsAndKeepsLargeIntegersExact) {
  auto j = ParseJson(
      R"({"a": [1, 2.5, "x\u00e9\ud83d\ude00", true, null], "big": 9007199254740993})", "t");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->Find("big")->int_value(), 9007199254740993LL);
  EXPECT_EQ(j->Find("a")->array()[2].string_value(), "x\xC3\xA9\xF0\x9F\x98\x80");
  auto again = ParseJson(j->Dump(), "t");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->Dump(), j->Dump());
  EXPECT_FALSE(ParseJson("[1, 2", "t").ok());
  EXPECT_FALSE(ParseJson(std::string(1000, '['), "t").ok());  // depth bound, no stack overflow
}

class BadCheckpointTest : public ::testing::Test {
 protected:
  std::string Copy() { return testing::CopyModel(testing::TestModel("llama"), "bad"); }
  absl::Status LoadAll(const std::string& dir) {
    auto config = LoadModelConfig(dir);
    if (!config.ok()) return config.status();
    auto stage = Stage::Load(dir, *config, 0, config->num_layers, StageOptions{});
    return stage.status();
  }
};

TEST_F(BadCheckpointTest, MissingTensorIsNamed) {
  const std::string dir = Copy();
  const std::string text = testing::ReadFile(dir + "/model.safetensors");
  // Rename one tensor in the header (same length keeps the offsets valid).
  std::string broken = text;
  const std::string name = "model.layers.1.mlp.up_proj.weight";
  broken.replace(broken.find(name), name.size(), "model.layers.1.mlp.up_proj.wEIGHT");
  testing::WriteFile(dir + "/model.safetensors", broken);
  absl::Status s = LoadAll(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(s, name)) << s;
}

TEST_F(BadCheckpointTest, WrongShapeNamesTensorFileAndShapes) {
  const std::string dir = Copy();
  std::string cfg = testing::ReadFile(dir + "/config.json");
  cfg.replace(cfg.find("\"intermediate_size\":160"), 23, "\"intermediate_size\":128");
  testing::WriteFile(dir + "/config.json", cfg);
  absl::Status s = LoadAll(dir);
  EXPECT_TRUE(Contains(s, "model.layers.0.mlp.gate_proj.weight")) << s;
  EXPECT_TRUE(Contains(s, "model.safetensors")) << s;
  EXPECT_TRUE(Contains(s, "[160, 64]")) << s;
  EXPECT_TRUE(Contains(s, "[128, 64]")) << s;
}

TEST_F(BadCheckpointTest, TruncatedShardIsAnErrorNotACrash) {
  const std::string dir = testing::CopyModel(testing::TestModel("llama", "f32", 3), "trunc");
  const std::string path = dir + "/model-00002-of-00003.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1000);
  absl::Status s = LoadAll(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(Contains(s, "model-00002-of-00003.safetensors")) << s;
  EXPECT_TRUE(Contains(s, "truncated")) << s;
  // The first stage never maps the damaged shard, so it still loads.
  auto config = LoadModelConfig(dir);
  EXPECT_TRUE(Stage::Load(dir, *config, 0, 1, StageOptions{}).ok());
  // A file cut inside its header.
  std::filesystem::resize_file(path, 20);
  EXPECT_TRUE(Contains(LoadAll(dir), "exceeds the file size"));
  std::filesystem::resize_file(path, 3);
  EXPECT_TRUE(Contains(LoadAll(dir), "truncated"));
}

TEST_F(BadCheckpointTest, UnknownDtypeIsNamed) {
  const std::string dir = Copy();
  std::string text = testing::ReadFile(dir + "/model.safetensors");
  const size_t at = text.find("\"F32\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 5, "\"I64\"");
  testing::WriteFile(dir + "/model.safetensors", text);
  absl::Status s = LoadAll(dir);
  EXPECT_TRUE(Contains(s, "I64")) << s;
  EXPECT_TRUE(Contains(s, "model.safetensors")) << s;
}

TEST_F(BadCheckpointTest, MissingFilesAreNamed) {
  const std::string dir = Copy();
  std::filesystem::remove(dir + "/model.safetensors");
  EXPECT_TRUE(Contains(LoadAll(dir), "no model.safetensors"));
  std::filesystem::remove(dir + "/config.json");
  EXPECT_TRUE(Contains(LoadAll(dir), "config.json"));
}

TEST(ModelLayoutTest, MeasuresBytesFromHeaders) {
  const std::string& dir = testing::TestModel("qwen2");
  auto config = LoadModelConfig(dir);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  auto bytes = MeasureModel(*config, **ckpt);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  // Qwen2 layer: q,k,v,o + biases + 2 norms + 3 MLP matrices, f32.
  const int64_t h = 64, kv = 32, inter = 160;
  const int64_t layer = 4 * (h * h + 2 * kv * h + h * h + h + kv + kv + 2 * h + 3 * inter * h);
  EXPECT_EQ(bytes->layer_bytes[0], layer);
  EXPECT_EQ(bytes->lm_head_bytes, 0);  // tied
  EXPECT_EQ(bytes->total(), 4 * layer + 4 * 512 * h + 4 * h);
  EXPECT_GT(static_cast<int64_t>(std::filesystem::file_size(dir + "/model.safetensors")),
            bytes->total());
}

}  // namespace
}  // namespace strata
