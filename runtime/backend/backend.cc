#include "runtime/backend/backend.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace strata {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendOptions& options,
                                                     DType weights_dtype) {
  if (options.device == "cpu") return MakeCpuBackend(options.threads);
  if (options.device == "cuda" || absl::StartsWith(options.device, "cuda:")) {
    return MakeCudaBackend(options, weights_dtype);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device \"", options.device, "\": expected cpu, cuda or cuda:N"));
}

}  // namespace strata
