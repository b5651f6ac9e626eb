#include "tools/model_maker.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "runtime/backend/cpu/throughput.h"
#include "runtime/chat_template.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/json.h"
#include "runtime/model_layout.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/bpe_trainer.h"
#include "tools/bigram_init.h"

namespace strata {

extern const char kEmbeddedCorpus[];  // generated from tools/corpus/corpus.txt

const std::string& EmbeddedCorpus() {
  static const std::string* corpus = new std::string(kEmbeddedCorpus);
  return *corpus;
}

std::vector<std::string> ModelFlavours() { return {"llama", "mistral", "qwen2", "hunyuan-dense"}; }
std::vector<std::string> ModelSizes() { return {"tiny", "1b", "qwen2.5-3b", "hy-mt1.5-1.8b"}; }

// tools/chat_templates/*.jinja, compiled in (tools/CMakeLists.txt).
extern const char k_qwen2_5_template[];  // Qwen2.5-Instruct's published template
extern const char k_llama2_template[];
extern const char k_hunyuan_template[];

namespace {

constexpr int kTokenizerVocab = 512;

// xoshiro256** seeded through splitmix64: fast, and the same everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& s : s_) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      s = z ^ (z >> 31);
    }
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform in [-1, 1).
  float Symmetric() {
    return static_cast<float>(static_cast<double>(Next() >> 11) * 0x1.0p-52 - 1.0);
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

uint64_t NameHash(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

// The config.json of a flavour and size, as a JSON object.
absl::StatusOr<Json> FlavourConfig(const ModelSpec& spec, int64_t vocab, const std::string& dtype) {
  std::map<std::string, Json> c;
  const bool tiny = spec.size == "tiny";
  // The published shapes: Qwen2.5-3B-Instruct's and HY-MT1.5-1.8B's config.json.
  struct Shape {
    int64_t hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, positions;
  };
  Shape shape;
  if (tiny) {
    shape = {64, 4, 4, 2, 16, 160, vocab, 256};
  } else if (spec.size == "1b") {
    shape = {2048, 22, 32, 4, 64, 5632, vocab, 2048};
  } else if (spec.size == "qwen2.5-3b" && spec.flavour == "qwen2") {
    shape = {2048, 36, 16, 2, 128, 11008, 151936, 32768};
  } else if (spec.size == "hy-mt1.5-1.8b" && spec.flavour == "hunyuan-dense") {
    shape = {2048, 32, 16, 4, 128, 6144, 120818, 262144};
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--size: \"", spec.size, "\" is unknown for flavour ", spec.flavour,
        " (tiny and 1b for every flavour, qwen2.5-3b for qwen2, hy-mt1.5-1.8b for hunyuan-dense)"));
  }
  if (spec.layers < 0) return absl::InvalidArgumentError("--layers: must not be negative");
  c["hidden_size"] = Json::Integer(shape.hidden);
  c["num_hidden_layers"] = Json::Integer(spec.layers > 0 ? spec.layers : shape.layers);
  c["num_attention_heads"] = Json::Integer(shape.heads);
  c["num_key_value_heads"] = Json::Integer(shape.kv_heads);
  c["head_dim"] = Json::Integer(shape.head_dim);
  c["intermediate_size"] = Json::Integer(shape.intermediate);
  c["vocab_size"] = Json::Integer(shape.vocab);
  if (spec.positions < 0) return absl::InvalidArgumentError("--positions: must not be negative");
  c["max_position_embeddings"] =
      Json::Integer(spec.positions > 0 ? spec.positions : shape.positions);
  c["rms_norm_eps"] = Json::Number(1e-5);
  c["rope_theta"] = Json::Number(10000.0);
  c["hidden_act"] = Json::String("silu");
  c["torch_dtype"] = Json::String(dtype);
  c["bos_token_id"] = Json::Integer(1);
  c["eos_token_id"] = Json::Integer(2);
  c["tie_word_embeddings"] = Json::Bool(false);
  c["attention_bias"] = Json::Bool(false);
  std::string arch;
  if (spec.flavour == "llama") {
    arch = "LlamaForCausalLM";
    c["model_type"] = Json::String("llama");
    if (tiny) {  // exercise all three llama3 frequency bands at this head_dim
      c["rope_scaling"] = Json::Object({{"rope_type", Json::String("llama3")},
                                        {"factor", Json::Number(8.0)},
                                        {"low_freq_factor", Json::Number(1.0)},
                                        {"high_freq_factor", Json::Number(4.0)},
                                        {"original_max_position_embeddings", Json::Integer(32)}});
    }
  } else if (spec.flavour == "mistral") {
    arch = "MistralForCausalLM";
    c["model_type"] = Json::String("mistral");
    c["sliding_window"] = Json::Integer(tiny ? 8 : 4096);
    if (tiny) {
      c["rope_scaling"] =
          Json::Object({{"type", Json::String("linear")}, {"factor", Json::Number(2.0)}});
    }
  } else if (spec.flavour == "qwen2") {
    arch = "Qwen2ForCausalLM";
    c["model_type"] = Json::String("qwen2");
    c["rope_theta"] = Json::Number(1000000.0);
    c["tie_word_embeddings"] = Json::Bool(true);
    c["use_sliding_window"] = Json::Bool(false);
    c["rms_norm_eps"] = Json::Number(1e-6);
  } else if (spec.flavour == "hunyuan-dense") {
    arch = "HunYuanDenseV1ForCausalLM";
    c["model_type"] = Json::String("hunyuan_v1_dense");
    c["use_qk_norm"] = Json::Bool(true);
    c["tie_word_embeddings"] = Json::Bool(true);
    c["eos_token_id"] = Json::Array({Json::Integer(2), Json::Integer(3)});
    c["rope_scaling"] = Json::Object({{"type", Json::String("dynamic")},
                                      {"alpha", Json::Number(1000.0)},
                                      {"factor", Json::Number(1.0)},
                                      {"mscale", Json::Number(1.0)}});
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "flavour \"", spec.flavour, "\" is unknown (choose llama, mistral, qwen2, hunyuan-dense)"));
  }
  c["architectures"] = Json::Array({Json::String(arch)});
  return Json::Object(std::move(c));
}

// Fills a tensor. Norm weights scatter around 1, biases around 0, matrices
// uniformly with variance 1/fan_in (so activations keep unit scale and logits
// are well separated, which keeps greedy comparisons away from ties).
std::vector<uint8_t> Encode(const std::vector<float>& values, DType dtype) {
  const int64_t numel = static_cast<int64_t>(values.size());
  std::vector<uint8_t> bytes(numel * DTypeSize(dtype));
  for (int64_t i = 0; i < numel; ++i) {
    const float v = values[i];
    switch (dtype) {
      case DType::kF32:
        std::memcpy(bytes.data() + 4 * i, &v, 4);
        break;
      case DType::kBF16: {
        uint16_t h = F32ToBf16(v);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
      }
      case DType::kF16: {
        uint16_t h = F32ToF16(v);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
      }
      case DType::kI32:
      case DType::kF8E4M3:
        break;  // never a generated model's dtype (ParseDType refuses them)
    }
  }
  return bytes;
}

// `residual_scale` shrinks the projections that write into the residual
// stream (o_proj, down_proj); 1 for ordinary random models.
std::vector<uint8_t> RandomTensor(const TensorSpec& spec, DType dtype, uint64_t seed,
                                  float residual_scale) {
  int64_t numel = 1;
  for (int64_t d : spec.shape) numel *= d;
  Rng rng(seed ^ NameHash(spec.name));
  const bool is_norm = spec.name.find("norm") != std::string::npos;
  const bool is_bias = spec.name.size() > 5 && spec.name.rfind(".bias") == spec.name.size() - 5;
  const bool is_embedding = spec.name == "model.embed_tokens.weight";
  float scale;
  if (is_norm)
    scale = 0.2f;
  else if (is_bias)
    scale = 0.2f;
  else if (is_embedding)
    scale = 1.0f;
  else
    scale = std::sqrt(3.0f / static_cast<float>(spec.shape.back()));
  const bool writes_residual = spec.name.find("o_proj") != std::string::npos ||
                               spec.name.find("down_proj") != std::string::npos;
  if (writes_residual) scale *= residual_scale;
  std::vector<float> values(numel);
  for (int64_t i = 0; i < numel; ++i) {
    values[i] = scale * rng.Symmetric() + (is_norm ? 1.0f : 0.0f);
  }
  return Encode(values, dtype);
}

absl::Status WriteText(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

using Overrides = std::map<std::string, std::vector<float>>;

// The size of a tensor left as a hole (--init zeros), else 0.
uint64_t ZeroBytes(const TensorSpec& s, DType dtype, bool zeros) {
  if (!zeros) return 0;
  uint64_t n = 1;
  for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
  return n * DTypeSize(dtype);
}

absl::Status WriteWeights(const ModelConfig& config, DType dtype, int shards, uint64_t seed,
                          const Overrides& overrides, bool zeros,
                          const std::filesystem::path& dir) {
  const float residual_scale = overrides.empty() ? 1.0f : 0.02f;
  auto make = [&](const TensorSpec& s) -> std::vector<uint8_t> {
    if (zeros) return {};
    auto it = overrides.find(s.name);
    return it != overrides.end() ? Encode(it->second, dtype)
                                 : RandomTensor(s, dtype, seed, residual_scale);
  };
  const std::vector<TensorSpec> specs = AllTensors(config);

  if (shards <= 1) {
    std::vector<TensorToWrite> tensors;
    for (const TensorSpec& s : specs) {
      tensors.push_back({s.name, dtype, s.shape, make(s), ZeroBytes(s, dtype, zeros)});
    }
    return WriteSafetensors((dir / "model.safetensors").string(), tensors);
  }
  // Contiguous groups of tensors per shard, as save_pretrained cuts them.
  std::map<std::string, Json> weight_map;
  int64_t total_size = 0;
  const size_t per = (specs.size() + shards - 1) / shards;
  for (int s = 0; s < shards; ++s) {
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards);
    std::vector<TensorToWrite> tensors;
    for (size_t i = s * per; i < std::min(specs.size(), (s + 1) * per); ++i) {
      tensors.push_back({specs[i].name, dtype, specs[i].shape, make(specs[i]),
                         ZeroBytes(specs[i], dtype, zeros)});
      total_size +=
          static_cast<int64_t>(zeros ? tensors.back().zero_bytes : tensors.back().bytes.size());
      weight_map[specs[i].name] = Json::String(file);
    }
    RETURN_IF_ERROR(WriteSafetensors((dir / file).string(), tensors));
  }
  Json index =
      Json::Object({{"metadata", Json::Object({{"total_size", Json::Integer(total_size)}})},
                    {"weight_map", Json::Object(std::move(weight_map))}});
  return WriteText(dir / "model.safetensors.index.json", index.Dump());
}

// The tokenizer files of a flavour, in the format its family ships, with
// the chat template and special-token ids set in `config`:
//  - llama, mistral: SentencePiece tokenizer.model (<unk>, <s>, </s> = 0..2),
//    llama with the Llama 2 chat template;
//  - qwen2: a byte-level BPE tokenizer.json (Qwen2 split pattern, NFC) with
//    <|endoftext|>, <|im_start|>, <|im_end|> and a ChatML template;
//  - hunyuan-dense: a tiktoken rank file, hy.tiktoken, with Hunyuan's
//    control tokens in tokenizer_config.json and its chat template.
absl::Status WriteTokenizer(const std::string& flavour, const std::vector<std::string>& lines,
                            Json* config, const std::filesystem::path& dir) {
  auto set = [&](const char* key, Json value) {
    std::map<std::string, Json> members = config->object();
    members[key] = std::move(value);
    *config = Json::Object(std::move(members));
  };
  if (flavour == "llama" || flavour == "mistral") {
    ASSIGN_OR_RETURN(std::string model, TrainSentencePieceBpe(lines, kTokenizerVocab));
    RETURN_IF_ERROR(WriteText(dir / "tokenizer.model", model));
    std::map<std::string, Json> tc = {
        {"add_bos_token", Json::Bool(true)},  {"add_eos_token", Json::Bool(false)},
        {"bos_token", Json::String("<s>")},   {"eos_token", Json::String("</s>")},
        {"unk_token", Json::String("<unk>")}, {"tokenizer_class", Json::String("LlamaTokenizer")}};
    if (flavour == "llama") tc["chat_template"] = Json::String(k_llama2_template);
    return WriteText(dir / "tokenizer_config.json", Json::Object(std::move(tc)).Dump());
  }
  const bool qwen = flavour == "qwen2";
  const std::vector<std::string> names =
      qwen ? std::vector<std::string>{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
           : std::vector<std::string>{hunyuan::kBegin, hunyuan::kEnd, hunyuan::kSystemEnd,
                                      hunyuan::kUser, hunyuan::kAssistant};
  const int merges = kTokenizerVocab - 256 - static_cast<int>(names.size());
  const BpeVocabulary vocab = TrainByteLevelBpe(lines, merges, SplitPattern::kQwen2);
  std::vector<SpecialToken> specials;
  std::map<std::string, Json> decoder;
  for (const std::string& name : names) {
    const int id = static_cast<int>(vocab.tokens.size() + specials.size());
    specials.push_back({name, id});
    decoder[absl::StrCat(id)] =
        Json::Object({{"content", Json::String(name)}, {"special", Json::Bool(true)}});
  }
  std::map<std::string, Json> tc = {{"added_tokens_decoder", Json::Object(decoder)},
                                    {"add_bos_token", Json::Bool(false)}};
  if (qwen) {
    RETURN_IF_ERROR(
        WriteText(dir / "tokenizer.json",
                  HfTokenizerJson(vocab, SplitPattern::kQwen2, /*nfc=*/true, specials).Dump()));
    tc["bos_token"] = Json::Null();
    tc["eos_token"] = Json::String("<|im_end|>");
    tc["pad_token"] = Json::String("<|endoftext|>");
    tc["chat_template"] = Json::String(k_qwen2_5_template);  // Qwen2.5-Instruct's, with tools
    tc["tokenizer_class"] = Json::String("Qwen2Tokenizer");
    set("bos_token_id", Json::Integer(specials[0].id));  // <|endoftext|>
    set("eos_token_id",
        Json::Array({Json::Integer(specials[2].id), Json::Integer(specials[0].id)}));
  } else {
    RETURN_IF_ERROR(WriteText(dir / "hy.tiktoken", TiktokenRanks(vocab)));
    tc["bos_token"] = Json::String(names[0]);
    tc["eos_token"] = Json::String(names[1]);
    tc["chat_template"] = Json::String(k_hunyuan_template);
    tc["tokenizer_class"] = Json::String("HYTokenizer");
    set("bos_token_id", Json::Integer(specials[0].id));
    set("eos_token_id", Json::Array({Json::Integer(specials[1].id)}));
  }
  return WriteText(dir / "tokenizer_config.json", Json::Object(std::move(tc)).Dump());
}

}  // namespace

absl::Status MakeModel(const ModelSpec& spec, const std::string& out_dir) {
  namespace fs = std::filesystem;
  if (!spec.quant.method.empty()) {
    RETURN_IF_ERROR(CheckQuantizeSpec(spec.quant));
    ModelSpec plain = spec;
    plain.quant = QuantizeSpec();
    const std::string tmp = out_dir + ".float.partial";
    fs::remove_all(tmp);
    RETURN_IF_ERROR(MakeModel(plain, tmp));
    const absl::Status st = QuantizeCheckpoint(tmp, out_dir, spec.quant);
    fs::remove_all(tmp);
    return st;
  }
  std::string dtype_name =
      spec.dtype.empty() ? (spec.size == "tiny" ? "float32" : "bfloat16") : spec.dtype;
  if (dtype_name == "f32") dtype_name = "float32";
  if (dtype_name == "bf16") dtype_name = "bfloat16";
  if (dtype_name == "f16") dtype_name = "float16";
  auto dtype = ParseDType(dtype_name);
  if (!dtype.ok())
    return absl::InvalidArgumentError(absl::StrCat("--dtype: ", dtype.status().message()));
  if (spec.shards < 1) return absl::InvalidArgumentError("--shards must be at least 1");

  const int64_t vocab = spec.size == "tiny" ? kTokenizerVocab : 32000;
  ASSIGN_OR_RETURN(Json config_json, FlavourConfig(spec, vocab, dtype_name));
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(config_json, "generated config"));

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(out_dir, ": cannot create: ", ec.message()));
  const fs::path dir(out_dir);

  std::vector<std::string> lines = absl::StrSplit(EmbeddedCorpus(), '\n', absl::SkipEmpty());
  RETURN_IF_ERROR(WriteTokenizer(spec.flavour, lines, &config_json, dir));
  RETURN_IF_ERROR(WriteText(dir / "config.json", config_json.Dump()));
  Json eos = *config_json.Find("eos_token_id");
  RETURN_IF_ERROR(WriteText(dir / "generation_config.json",
                            Json::Object({{"bos_token_id", *config_json.Find("bos_token_id")},
                                          {"eos_token_id", eos},
                                          {"do_sample", Json::Bool(false)}})
                                .Dump()));
  Overrides overrides;
  if (spec.init == "bigram") {
    ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(out_dir));
    ASSIGN_OR_RETURN(overrides, BigramWeights(config, *tokenizer, lines));
  } else if (spec.init != "random" && spec.init != "zeros") {
    return absl::InvalidArgumentError(
        absl::StrCat("--init: \"", spec.init, "\" is not random, bigram or zeros"));
  }
  return WriteWeights(config, *dtype, spec.shards, spec.seed, overrides, spec.init == "zeros", dir);
}

absl::StatusOr<std::string> DefaultModelDir() {
  const std::string dir = StrataCacheHome() + "/models/default-llama-tiny-bigram";
  if (!std::filesystem::exists(dir + "/config.json")) {
    std::fprintf(stderr, "strata: making the embedded default model in %s\n", dir.c_str());
    const std::string tmp = dir + ".partial";
    std::filesystem::remove_all(tmp);
    ModelSpec spec;
    spec.init = "bigram";
    RETURN_IF_ERROR(MakeModel(spec, tmp));
    std::filesystem::remove_all(dir);
    std::filesystem::rename(tmp, dir);
  }
  return dir;
}

}  // namespace strata
