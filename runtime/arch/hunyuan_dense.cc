// Tencent HunYuanDenseV1: Llama layers plus a per-head RMSNorm of q and k
// applied after RoPE, and the dynamic-alpha RoPE base (parsed with the common
// rope_scaling fields in config.cc).
#include "absl/strings/str_cat.h"
#include "runtime/arch/architecture.h"

namespace strata {
namespace {

absl::Status ParseHunyuanDense(const Json& json, const std::string& source,
                               ModelConfig* config) {
  config->attention_bias = BoolOr(json, "attention_bias", false);
  config->qk_norm = BoolOr(json, "use_qk_norm", true);
  if (BoolOr(json, "mlp_bias", false)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"mlp_bias\": true is not supported"));
  }
  return absl::OkStatus();
}

}  // namespace

extern const ArchitectureTraits kHunyuanDenseTraits = {
    .name = "HunYuanDenseV1ForCausalLM",
    .q_norm_tensor = "self_attn.query_layernorm.weight",
    .k_norm_tensor = "self_attn.key_layernorm.weight",
    .parse_family_fields = ParseHunyuanDense,
};

}  // namespace strata
