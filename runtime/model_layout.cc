#include "runtime/model_layout.h"

#include "absl/strings/str_cat.h"
#include "runtime/arch/architecture.h"
#include "runtime/quant.h"
#include "runtime/status_macros.h"

namespace strata {

std::string LayerPrefix(int64_t layer) { return absl::StrCat("model.layers.", layer, "."); }

std::vector<TensorSpec> LayerTensors(const ModelConfig& c, int64_t layer) {
  const std::string p = LayerPrefix(layer);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  std::vector<TensorSpec> specs = {
      {p + "input_layernorm.weight", {h}},      {p + "self_attn.q_proj.weight", {q, h}},
      {p + "self_attn.k_proj.weight", {kv, h}}, {p + "self_attn.v_proj.weight", {kv, h}},
      {p + "self_attn.o_proj.weight", {h, q}},  {p + "post_attention_layernorm.weight", {h}},
      {p + "mlp.gate_proj.weight", {inter, h}}, {p + "mlp.up_proj.weight", {inter, h}},
      {p + "mlp.down_proj.weight", {h, inter}},
  };
  if (c.attention_bias) {
    specs.push_back({p + "self_attn.q_proj.bias", {q}});
    specs.push_back({p + "self_attn.k_proj.bias", {kv}});
    specs.push_back({p + "self_attn.v_proj.bias", {kv}});
  }
  if (c.qk_norm) {
    specs.push_back({p + std::string(c.traits->q_norm_tensor), {c.head_dim}});
    specs.push_back({p + std::string(c.traits->k_norm_tensor), {c.head_dim}});
  }
  return specs;
}

bool IsLinearWeight(const TensorSpec& spec) {
  constexpr std::string_view kSuffix = "_proj.weight";
  return spec.shape.size() == 2 && spec.name.size() > kSuffix.size() &&
         spec.name.compare(spec.name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0;
}

std::string ModuleOf(const TensorSpec& spec) {
  return spec.name.substr(0, spec.name.size() - std::string_view(".weight").size());
}

TensorSpec EmbeddingTensor(const ModelConfig& c) {
  return {"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}};
}
TensorSpec FinalNormTensor(const ModelConfig& c) { return {"model.norm.weight", {c.hidden_size}}; }
TensorSpec LmHeadTensor(const ModelConfig& c) {
  if (c.tie_word_embeddings) return EmbeddingTensor(c);
  return {"lm_head.weight", {c.vocab_size, c.hidden_size}};
}

std::vector<TensorSpec> AllTensors(const ModelConfig& config) {
  std::vector<TensorSpec> specs;
  specs.push_back(EmbeddingTensor(config));
  for (int64_t l = 0; l < config.num_layers; ++l) {
    for (TensorSpec& s : LayerTensors(config, l)) specs.push_back(std::move(s));
  }
  specs.push_back(FinalNormTensor(config));
  if (!config.tie_word_embeddings) specs.push_back(LmHeadTensor(config));
  return specs;
}

int64_t ModelBytes::total() const {
  int64_t t = embedding_bytes + final_norm_bytes + lm_head_bytes;
  for (int64_t b : layer_bytes) t += b;
  return t;
}

absl::StatusOr<ModelBytes> MeasureModel(const ModelConfig& config, Checkpoint& checkpoint) {
  auto bytes_of = [&](const TensorSpec& spec) -> absl::StatusOr<int64_t> {
    ASSIGN_OR_RETURN(TensorView v, checkpoint.Get(spec.name, spec.shape));
    return static_cast<int64_t>(v.nbytes);
  };
  ModelBytes m;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    int64_t total = 0;
    for (const TensorSpec& spec : LayerTensors(config, l)) {
      if (IsLinearWeight(spec)) {
        ASSIGN_OR_RETURN(LinearBytes b, MeasureLinear(checkpoint, config.quant, ModuleOf(spec),
                                                      spec.shape[0], spec.shape[1]));
        total += b.loaded;
        continue;
      }
      ASSIGN_OR_RETURN(int64_t b, bytes_of(spec));
      total += b;
    }
    m.layer_bytes.push_back(total);
  }
  ASSIGN_OR_RETURN(m.embedding_bytes, bytes_of(EmbeddingTensor(config)));
  ASSIGN_OR_RETURN(m.final_norm_bytes, bytes_of(FinalNormTensor(config)));
  if (!config.tie_word_embeddings) {
    ASSIGN_OR_RETURN(m.lm_head_bytes, bytes_of(LmHeadTensor(config)));
  }
  return m;
}

}  // namespace strata
