#include "absl/strings/str_join.h"
#include "runtime/arch/architecture.h"

namespace strata {

extern const ArchitectureTraits kLlamaTraits;
extern const ArchitectureTraits kMistralTraits;
extern const ArchitectureTraits kQwen2Traits;
extern const ArchitectureTraits kHunyuanDenseTraits;

namespace {
const ArchitectureTraits* const kAll[] = {&kLlamaTraits, &kMistralTraits, &kQwen2Traits,
                                          &kHunyuanDenseTraits};
}  // namespace

const ArchitectureTraits* FindArchitecture(std::string_view name) {
  for (const ArchitectureTraits* t : kAll) {
    if (t->name == name) return t;
  }
  return nullptr;
}

std::string SupportedArchitectures() {
  std::vector<std::string> names;
  for (const ArchitectureTraits* t : kAll) names.emplace_back(t->name);
  return absl::StrJoin(names, ", ");
}

}  // namespace strata
