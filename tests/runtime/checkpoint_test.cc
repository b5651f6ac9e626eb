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
  EXPECT_FALSE(ParseJson(std::string(1000, '['), "t").ok());
  // Valid but deep: refused at 128 levels, before any recursion over it.
  const auto deep = ParseJson(std::string(200, '[') + std::string(200, ']'), "deep.json");
  ASSERT_FALSE(deep.ok());
  EXPECT_TRUE(Contains(deep.status(), "deep.json: nesting deeper than 128 levels"))
      << deep.status();
  EXPECT_TRUE(ParseJson(std::string(100, '[') + std::string(100, ']'), "t").ok());
}

// What JSON forbids is refused by name, before any value is used.
TEST(JsonTest, RefusesWhatJsonForbids) {
  struct Bad {
    std::string text, why;
  };
  const std::vector<Bad> bad = {
      {"[01]", "leading zero"},
      {"[-012]", "leading zero"},
      {"[NaN]", "NaN and Infinity"},
      {"{\"eps\": Infinity}", "NaN and Infinity"},
      {"[-Infinity]", "NaN and Infinity"},
      {"[1e400]", "out of range"},
      {"[\"\xC3\x28\"]", "invalid UTF-8"},      // a lead byte without its continuation
      {"[\"\xED\xA0\x80\"]", "invalid UTF-8"},  // an encoded surrogate
      {"[\"\xC0\xAF\"]", "invalid UTF-8"},      // an overlong '/'
      {"{\"\xFF\": 1}", "invalid UTF-8"},       // in a key too
  };
  for (const Bad& b : bad) {
    auto j = ParseJson(b.text, "file.json");
    ASSERT_FALSE(j.ok()) << b.text;
    EXPECT_TRUE(Contains(j.status(), b.why)) << b.text << ": " << j.status();
    EXPECT_TRUE(Contains(j.status(), "file.json")) << j.status();
  }
  for (const char* good : {"[0]", "[-0]", "[0.5]", "[-0.0e5]", "[9223372036854775807]",
                           "[-9223372036854775808]", "[\"\xE6\x9D\xB1\xF0\x9F\x98\x80\"]"}) {
    EXPECT_TRUE(ParseJson(good, "file.json").ok()) << good;
  }
  // An integer past 64 bits is a number, not an integer (real files have
  // them: Llama 3's model_max_length is 10^30), and reads as the nearest
  // int64; any non-integral number read as an integer is clamped, never
  // undefined.
  auto big = ParseJson("[9223372036854775808, -9223372036854775809]", "t");
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_FALSE(big->array()[0].is_integer());
  EXPECT_EQ(big->array()[0].int_value(), INT64_MAX);
  EXPECT_EQ(big->array()[1].int_value(), INT64_MIN);
  EXPECT_EQ(ParseJson("[1e300]", "t")->array()[0].int_value(), INT64_MAX);
  EXPECT_EQ(ParseJson("[-1e300]", "t")->array()[0].int_value(), INT64_MIN);
  EXPECT_EQ(ParseJson("[2.7]", "t")->array()[0].int_value(), 2);
}

// Absurd config values are refused by field: non-finite or non-positive
// eps, token ids outside the vocabulary, sizes whose products would overflow.
TEST(ConfigTest, AbsurdValuesAreRefusedByName) {
  struct Case {
    std::string from, to, field;
  };
  const std::vector<Case> cases = {
      {"\"eos_token_id\": [2, 7]", "\"eos_token_id\": -9223372036854775808", "eos_token_id"},
      {"\"eos_token_id\": [2, 7]", "\"eos_token_id\": [2, 100]", "eos_token_id"},
      {"\"eos_token_id\": [2, 7]", "\"eos_token_id\": 7, \"bos_token_id\": 100", "bos_token_id"},
      {"\"eos_token_id\": [2, 7]", "\"eos_token_id\": 7, \"rms_norm_eps\": 0", "rms_norm_eps"},
      {"\"eos_token_id\": [2, 7]", "\"eos_token_id\": 7, \"rms_norm_eps\": -1e-6", "rms_norm_eps"},
      {"\"eos_token_id\": [2, 7]", "\"eos_token_id\": 7, \"rms_norm_eps\": 1e400", "out of range"},
      {"\"eos_token_id\": [2, 7]", "\"eos_token_id\": 7, \"rope_theta\": 1e999", "out of range"},
      {"\"hidden_size\": 64", "\"hidden_size\": 1099511627776", "hidden_size"},
      {"\"vocab_size\": 100", "\"vocab_size\": 4611686018427387904", "vocab_size"},
      {"\"num_hidden_layers\": 2", "\"num_hidden_layers\": 100000", "num_hidden_layers"},
      {"\"hidden_size\": 64", "\"hidden_size\": 18446744073709551616", "hidden_size"},
  };
  for (const Case& c : cases) {
    std::string text = kLlama;
    ASSERT_NE(text.find(c.from), std::string::npos) << c.from;
    text.replace(text.find(c.from), c.from.size(), c.to);
    auto config = ParseText(text);
    ASSERT_FALSE(config.ok()) << c.to;
    EXPECT_TRUE(Contains(config.status(), c.field)) << c.to << ": " << config.status();
    EXPECT_TRUE(Contains(config.status(), "config.json")) << config.status();
  }
  // generation_config.json's ids are held to the vocabulary too.
  const std::string dir = testing::CopyModel(testing::TestModel("llama"), "gen-eos");
  testing::WriteFile(dir + "/generation_config.json", "{\"eos_token_id\": 1000000}");
  auto config = LoadModelConfig(dir);
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(Contains(config.status(), "generation_config.json")) << config.status();
  EXPECT_TRUE(Contains(config.status(), "eos_token_id")) << config.status();
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

// Rewrites the header of the safetensors file at `path`, replacing `from`
// with `to`, and keeps its data section.
void EditHeader(const std::string& path, const std::string& from, const std::string& to) {
  const std::string file = testing::ReadFile(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(file[i])) << (8 * i);
  std::string header = file.substr(8, n);
  const size_t at = header.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  header.replace(at, from.size(), to);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  testing::WriteFile(path, out + header + file.substr(8 + n));
}

TEST_F(BadCheckpointTest, OverlappingTensorsAreRefused) {
  const std::string dir = Copy();
  // lm_head.weight moved onto the embedding's bytes (the same size).
  EditHeader(dir + "/model.safetensors", "\"lm_head.weight\":{\"data_offsets\":[821504,952576]",
             "\"lm_head.weight\":{\"data_offsets\":[0,131072]");
  if (HasFatalFailure()) return;
  absl::Status s = LoadAll(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(Contains(s, "overlap")) << s;
  EXPECT_TRUE(Contains(s, "lm_head.weight")) << s;
  EXPECT_TRUE(Contains(s, "model.embed_tokens.weight")) << s;
  EXPECT_TRUE(Contains(s, "model.safetensors")) << s;
}

TEST_F(BadCheckpointTest, AShapeWhoseElementCountOverflowsIsRefused) {
  const std::string dir = Copy();
  // 2^32 x 2^32 x 16 elements: the product wraps to 0 in 64 bits.
  EditHeader(dir + "/model.safetensors",
             "\"dtype\":\"F32\",\"shape\":[512,64]},\"model.embed_tokens.weight\"",
             "\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16]},"
             "\"model.embed_tokens.weight\"");
  if (HasFatalFailure()) return;
  absl::Status s = LoadAll(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(Contains(s, "lm_head.weight")) << s;
  EXPECT_TRUE(Contains(s, "more elements than")) << s;
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
