// The CUDA entry points of a build without the CUDA toolkit (STRATA_CUDA=OFF).
#include "runtime/backend/backend.h"

namespace strata {

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const BackendOptions& options, DType) {
  return absl::FailedPreconditionError(
      "device \"" + options.device +
      "\": this build has no CUDA backend (configure with -DSTRATA_CUDA=ON where the CUDA "
      "toolkit is installed)");
}

absl::StatusOr<MemoryReport> ProbeCudaDevice(int index) {
  return absl::FailedPreconditionError("device \"cuda:" + std::to_string(index) +
                                       "\": this build has no CUDA backend");
}

absl::StatusOr<std::string> NewPeerGroupId() {
  return absl::FailedPreconditionError("this build has no CUDA backend, hence no NCCL");
}

bool NcclTransportAvailable(const std::string&, std::string* why) {
  *why = "this build has no CUDA backend";
  return false;
}

std::vector<std::string> VisibleCudaUuids() { return {}; }

int CudaDeviceCount(std::string* why) {
  *why = "this build has no CUDA backend (STRATA_CUDA=OFF)";
  return 0;
}

}  // namespace strata
