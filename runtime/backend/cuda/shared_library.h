// Opening the CUDA libraries the backend loads at run time (cuBLASLt, NCCL):
// the path in `env_var` if set, else each candidate in turn.
#ifndef STRATA_RUNTIME_BACKEND_CUDA_SHARED_LIBRARY_H_
#define STRATA_RUNTIME_BACKEND_CUDA_SHARED_LIBRARY_H_

#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace strata::cuda {

// A dlopen handle (RTLD_NOW | RTLD_LOCAL), never closed; FAILED_PRECONDITION
// naming `what`, `env_var` and every loader error otherwise.
inline absl::StatusOr<void*> OpenSharedLibrary(const char* what, const char* env_var,
                                               std::vector<std::string> candidates) {
  if (const char* env = std::getenv(env_var); env != nullptr && *env) candidates = {env};
  std::string tried;
  for (const std::string& path : candidates) {
    if (void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) return lib;
    absl::StrAppend(&tried, tried.empty() ? "" : "; ", dlerror());
  }
  return absl::FailedPreconditionError(
      absl::StrCat("cannot load ", what, " (set $", env_var, " to its path): ", tried));
}

}  // namespace strata::cuda

#endif  // STRATA_RUNTIME_BACKEND_CUDA_SHARED_LIBRARY_H_
