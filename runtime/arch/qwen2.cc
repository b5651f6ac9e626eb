// Qwen2 / Qwen2.5: Llama layers whose q, k and v projections carry a bias.
#include "absl/strings/str_cat.h"
#include "runtime/arch/architecture.h"

namespace strata {
namespace {

absl::Status ParseQwen2(const Json& json, const std::string& source, ModelConfig* config) {
  config->attention_bias = true;
  if (BoolOr(json, "use_sliding_window", false)) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field \"use_sliding_window\": true is not supported for Qwen2 yet"));
  }
  return absl::OkStatus();
}

}  // namespace

extern const ArchitectureTraits kQwen2Traits = {
    .name = "Qwen2ForCausalLM",
    .q_norm_tensor = "",
    .k_norm_tensor = "",
    .parse_family_fields = ParseQwen2,
};

}  // namespace strata
