// What distinguishes one decoder family from another. The shared decoder
// reads these traits; adding a family is a new file here and one line in
// registry.cc, never a switch in shared code.
#ifndef STRATA_RUNTIME_ARCH_ARCHITECTURE_H_
#define STRATA_RUNTIME_ARCH_ARCHITECTURE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "runtime/config.h"
#include "runtime/json.h"

namespace strata {

struct ArchitectureTraits {
  std::string_view name;  // the `architectures[0]` string of config.json
  // Tensor name suffixes (under model.layers.N.) of the per-head q/k norms, for
  // families with qk_norm.
  std::string_view q_norm_tensor;
  std::string_view k_norm_tensor;
  // Reads the family's own fields after the common ones are parsed.
  absl::Status (*parse_family_fields)(const Json& json, const std::string& source,
                                      ModelConfig* config);
};

// nullptr when `name` is not a supported architecture.
const ArchitectureTraits* FindArchitecture(std::string_view name);
// "LlamaForCausalLM, MistralForCausalLM, ..." for error messages.
std::string SupportedArchitectures();

}  // namespace strata

#endif  // STRATA_RUNTIME_ARCH_ARCHITECTURE_H_
