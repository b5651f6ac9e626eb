// Llama 1/2/3 and TinyLlama: the plain pre-norm decoder every other family
// starts from.
#include "absl/strings/str_cat.h"
#include "runtime/arch/architecture.h"

namespace strata {
namespace {

absl::Status ParseLlama(const Json& json, const std::string& source, ModelConfig* config) {
  config->attention_bias = BoolOr(json, "attention_bias", false);
  if (BoolOr(json, "mlp_bias", false)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"mlp_bias\": true is not supported"));
  }
  return absl::OkStatus();
}

}  // namespace

extern const ArchitectureTraits kLlamaTraits = {
    .name = "LlamaForCausalLM",
    .q_norm_tensor = "",
    .k_norm_tensor = "",
    .parse_family_fields = ParseLlama,
};

}  // namespace strata
