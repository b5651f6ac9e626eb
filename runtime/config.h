// Model configuration parsed from a Hugging Face `config.json` (plus the
// optional `generation_config.json`). A ModelConfig is a plain value: copy it
// freely. Family-specific parsing lives in runtime/arch/, one file per family.
#ifndef STRATA_RUNTIME_CONFIG_H_
#define STRATA_RUNTIME_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/dtype.h"
#include "runtime/json.h"
#include "runtime/quant_config.h"

namespace strata {

struct ArchitectureTraits;

struct RopeScaling {
  enum class Kind { kNone, kLinear, kLlama3, kDynamicAlpha };
  Kind kind = Kind::kNone;
  double factor = 1.0;
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
  // HunYuan dynamic alpha (NTK-aware base stretch)
  double alpha = 1.0;
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  const ArchitectureTraits* traits = nullptr;

  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2)
  bool qk_norm = false;         // per-head RMSNorm of q and k after RoPE (HunYuan)
  int64_t sliding_window = 0;   // 0: full causal attention (Mistral may set it)
  DType torch_dtype = DType::kF32;
  QuantConfig quant;  // quantization_config; method kNone without one

  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  bool IsEos(int64_t id) const;
};

// Parses a config.json document. `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseModelConfig(const Json& json, const std::string& source);

// Loads `dir`/config.json, then applies bos/eos from `dir`/generation_config.json
// when that file exists (it takes precedence, as in transformers' generate()).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// The RoPE inverse frequencies (head_dim / 2 of them) after scaling.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

// Reads an int / number / bool / string field for the family parsers; a
// missing required field is an error naming the field and file.
absl::StatusOr<int64_t> RequireInt(const Json& json, const char* field, const std::string& source);
int64_t IntOr(const Json& json, const char* field, int64_t fallback);
double NumberOr(const Json& json, const char* field, double fallback);
bool BoolOr(const Json& json, const char* field, bool fallback);

}  // namespace strata

#endif  // STRATA_RUNTIME_CONFIG_H_
