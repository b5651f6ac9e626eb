// Mistral: Llama layers with optional sliding-window attention.
#include "absl/strings/str_cat.h"
#include "runtime/arch/architecture.h"

namespace strata {
namespace {

absl::Status ParseMistral(const Json& json, const std::string& source, ModelConfig* config) {
  const Json* window = json.Find("sliding_window");
  if (window != nullptr && !window->is_null()) {
    if (!window->is_integer() || window->int_value() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field \"sliding_window\" must be a positive integer or null"));
    }
    config->sliding_window = window->int_value();
  }
  return absl::OkStatus();
}

}  // namespace

extern const ArchitectureTraits kMistralTraits = {
    .name = "MistralForCausalLM",
    .q_norm_tensor = "",
    .k_norm_tensor = "",
    .parse_family_fields = ParseMistral,
};

}  // namespace strata
