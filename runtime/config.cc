#include "runtime/config.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "runtime/arch/architecture.h"
#include "runtime/status_macros.h"

namespace strata {

bool ModelConfig::IsEos(int64_t id) const {
  for (int64_t e : eos_token_ids) {
    if (e == id) return true;
  }
  return false;
}

absl::StatusOr<int64_t> RequireInt(const Json& json, const char* field, const std::string& source) {
  const Json* v = json.Find(field);
  if (v == nullptr || v->is_null()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": missing required field \"", field, "\""));
  }
  if (!v->is_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"", field, "\" must be an integer"));
  }
  return v->int_value();
}

int64_t IntOr(const Json& json, const char* field, int64_t fallback) {
  const Json* v = json.Find(field);
  return v != nullptr && v->is_number() ? v->int_value() : fallback;
}

double NumberOr(const Json& json, const char* field, double fallback) {
  const Json* v = json.Find(field);
  return v != nullptr && v->is_number() ? v->number_value() : fallback;
}

bool BoolOr(const Json& json, const char* field, bool fallback) {
  const Json* v = json.Find(field);
  return v != nullptr && v->is_bool() ? v->bool_value() : fallback;
}

namespace {

absl::Status ParseTokenIds(const Json& json, const char* field, const std::string& source,
                           std::vector<int64_t>* out) {
  const Json* v = json.Find(field);
  if (v == nullptr || v->is_null()) return absl::OkStatus();
  out->clear();
  if (v->is_integer()) {
    out->push_back(v->int_value());
    return absl::OkStatus();
  }
  if (v->is_array()) {
    for (const Json& item : v->array()) {
      if (!item.is_integer()) break;
      out->push_back(item.int_value());
    }
    if (out->size() == v->array().size()) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": field \"", field, "\" must be an integer or a list of integers"));
}

// rope_scaling (older configs) or rope_parameters (newer transformers).
absl::Status ParseRope(const Json& json, const std::string& source, ModelConfig* config) {
  const Json* rope = json.Find("rope_parameters");
  const char* field = "rope_parameters";
  if (rope == nullptr || rope->is_null()) {
    rope = json.Find("rope_scaling");
    field = "rope_scaling";
  }
  if (rope == nullptr || rope->is_null()) return absl::OkStatus();
  if (!rope->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"", field, "\" must be an object or null"));
  }
  config->rope_theta = NumberOr(*rope, "rope_theta", config->rope_theta);
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    const Json* t = rope->Find(key);
    if (t != nullptr && t->is_string()) {
      type = t->string_value();
      break;
    }
  }
  RopeScaling& s = config->rope_scaling;
  s.factor = NumberOr(*rope, "factor", 1.0);
  if (type == "default") {
    s.kind = RopeScaling::Kind::kNone;
  } else if (type == "linear") {
    s.kind = RopeScaling::Kind::kLinear;
  } else if (type == "llama3") {
    s.kind = RopeScaling::Kind::kLlama3;
    s.low_freq_factor = NumberOr(*rope, "low_freq_factor", 1.0);
    s.high_freq_factor = NumberOr(*rope, "high_freq_factor", 4.0);
    s.original_max_position_embeddings = IntOr(*rope, "original_max_position_embeddings", 8192);
    if (s.high_freq_factor <= s.low_freq_factor) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": ", field, ".high_freq_factor must exceed ", field, ".low_freq_factor"));
    }
  } else if (type == "dynamic" && rope->Find("alpha") != nullptr) {
    s.kind = RopeScaling::Kind::kDynamicAlpha;
    s.alpha = NumberOr(*rope, "alpha", 1.0);
    if (!(s.alpha > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field \"", field, ".alpha\" must be positive"));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": ", field, " type \"", type,
        "\" is not supported (supported: default, linear, llama3, dynamic with alpha)"));
  }
  if (!(s.factor > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"", field, ".factor\" must be positive"));
  }
  return absl::OkStatus();
}

// Token ids must name tokens of the vocabulary (checked again after
// generation_config.json overrides them).
absl::Status ValidateTokenIds(const ModelConfig& c, const std::string& source) {
  auto inside = [&](int64_t id, const char* field) -> absl::Status {
    if (id >= 0 && id < c.vocab_size) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", field, "\" is ", id,
                                                   ", outside the vocabulary [0, ", c.vocab_size,
                                                   ")"));
  };
  if (c.bos_token_id) RETURN_IF_ERROR(inside(*c.bos_token_id, "bos_token_id"));
  for (int64_t id : c.eos_token_ids) RETURN_IF_ERROR(inside(id, "eos_token_id"));
  return absl::OkStatus();
}

absl::Status Validate(const ModelConfig& c, const std::string& source) {
  // Each size at most 2^24 (the number of layers and heads at most 4096), so
  // every product of two sizes, and its bytes, fits in 64 bits.
  auto positive = [&](int64_t v, const char* field, int64_t most = int64_t{1} << 24) {
    if (v > 0 && v <= most) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"", field, "\" must be in [1, ", most, "], got ", v));
  };
  RETURN_IF_ERROR(positive(c.hidden_size, "hidden_size"));
  RETURN_IF_ERROR(positive(c.num_layers, "num_hidden_layers", 4096));
  RETURN_IF_ERROR(positive(c.num_heads, "num_attention_heads", 4096));
  RETURN_IF_ERROR(positive(c.num_kv_heads, "num_key_value_heads", 4096));
  RETURN_IF_ERROR(positive(c.head_dim, "head_dim"));
  RETURN_IF_ERROR(positive(c.intermediate_size, "intermediate_size"));
  RETURN_IF_ERROR(positive(c.vocab_size, "vocab_size"));
  RETURN_IF_ERROR(positive(c.max_position_embeddings, "max_position_embeddings"));
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": num_attention_heads (", c.num_heads,
                                                   ") must be a multiple of num_key_value_heads (",
                                                   c.num_kv_heads, ")"));
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": head_dim (", c.head_dim, ") must be even for RoPE"));
  }
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field \"rms_norm_eps\" must be a positive finite number, got ", c.rms_norm_eps));
  }
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field \"rope_theta\" must be a positive finite number, got ", c.rope_theta));
  }
  return ValidateTokenIds(c, source);
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const Json& json, const std::string& source) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  }
  ModelConfig c;
  const Json* archs = json.Find("architectures");
  if (archs == nullptr || !archs->is_array() || archs->array().empty() ||
      !archs->array()[0].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": missing required field \"architectures\" (a list of class names)"));
  }
  c.architecture = archs->array()[0].string_value();
  c.traits = FindArchitecture(c.architecture);
  if (c.traits == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": architecture \"", c.architecture,
                     "\" is not supported (supported: ", SupportedArchitectures(), ")"));
  }
  ASSIGN_OR_RETURN(c.hidden_size, RequireInt(json, "hidden_size", source));
  ASSIGN_OR_RETURN(c.num_layers, RequireInt(json, "num_hidden_layers", source));
  ASSIGN_OR_RETURN(c.num_heads, RequireInt(json, "num_attention_heads", source));
  ASSIGN_OR_RETURN(c.intermediate_size, RequireInt(json, "intermediate_size", source));
  ASSIGN_OR_RETURN(c.vocab_size, RequireInt(json, "vocab_size", source));
  ASSIGN_OR_RETURN(c.max_position_embeddings, RequireInt(json, "max_position_embeddings", source));
  c.num_kv_heads = IntOr(json, "num_key_value_heads", c.num_heads);
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  if (const Json* hd = json.Find("head_dim"); hd != nullptr && hd->is_integer()) {
    c.head_dim = hd->int_value();
  }
  c.rms_norm_eps = NumberOr(json, "rms_norm_eps", 1e-6);
  c.rope_theta = NumberOr(json, "rope_theta", 10000.0);
  c.tie_word_embeddings = BoolOr(json, "tie_word_embeddings", false);
  if (const Json* act = json.Find("hidden_act");
      act != nullptr && act->is_string() && act->string_value() != "silu") {
    return absl::InvalidArgumentError(absl::StrCat(source, ": hidden_act \"", act->string_value(),
                                                   "\" is not supported (only silu)"));
  }
  const Json* dtype = json.Find("torch_dtype");
  if (dtype == nullptr) dtype = json.Find("dtype");
  if (dtype != nullptr && dtype->is_string()) {
    auto parsed = ParseDType(dtype->string_value());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field \"torch_dtype\": ", parsed.status().message()));
    }
    c.torch_dtype = *parsed;
  }
  if (const Json* q = json.Find("quantization_config"); q != nullptr && !q->is_null()) {
    ASSIGN_OR_RETURN(c.quant, ParseQuantConfig(*q, source));
  }
  if (const Json* bos = json.Find("bos_token_id"); bos != nullptr && bos->is_integer()) {
    c.bos_token_id = bos->int_value();
  }
  RETURN_IF_ERROR(ParseTokenIds(json, "eos_token_id", source, &c.eos_token_ids));
  RETURN_IF_ERROR(ParseRope(json, source, &c));
  RETURN_IF_ERROR(c.traits->parse_family_fields(json, source, &c));
  RETURN_IF_ERROR(Validate(c, source));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  ASSIGN_OR_RETURN(Json json, ReadJsonFile(path));
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(json, path));
  const std::string gen_path = (std::filesystem::path(dir) / "generation_config.json").string();
  if (std::filesystem::exists(gen_path)) {
    ASSIGN_OR_RETURN(Json gen, ReadJsonFile(gen_path));
    if (const Json* bos = gen.Find("bos_token_id"); bos != nullptr && bos->is_integer()) {
      config.bos_token_id = bos->int_value();
    }
    RETURN_IF_ERROR(ParseTokenIds(gen, "eos_token_id", gen_path, &config.eos_token_ids));
    RETURN_IF_ERROR(ValidateTokenIds(config, gen_path));
  }
  return config;
}

std::vector<float> RopeInverseFrequencies(const ModelConfig& c) {
  const int64_t dim = c.head_dim;
  double base = c.rope_theta;
  const RopeScaling& s = c.rope_scaling;
  if (s.kind == RopeScaling::Kind::kDynamicAlpha) {
    base = c.rope_theta * std::pow(s.alpha, static_cast<double>(dim) / (dim - 2));
  }
  std::vector<float> inv(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) {
    double f = 1.0 / std::pow(base, static_cast<double>(2 * i) / dim);
    switch (s.kind) {
      case RopeScaling::Kind::kLinear:
        f /= s.factor;
        break;
      case RopeScaling::Kind::kLlama3: {
        const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
        const double low_wavelen = old_ctx / s.low_freq_factor;
        const double high_wavelen = old_ctx / s.high_freq_factor;
        const double wavelen = 2 * M_PI / f;
        if (wavelen > low_wavelen) {
          f /= s.factor;
        } else if (wavelen >= high_wavelen) {
          const double smooth =
              (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
          f = (1 - smooth) * f / s.factor + smooth * f;
        }
        break;
      }
      default:
        break;
    }
    inv[i] = static_cast<float>(f);
  }
  return inv;
}

}  // namespace strata
