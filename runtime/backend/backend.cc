#include "runtime/backend/backend.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/backend/sim/sim_backend.h"
#include "runtime/status_macros.h"

namespace strata {

void Backend::SendToPeer(const void*, int64_t, int) {
  std::fprintf(stderr, "strata: SendToPeer on backend %s without a peer group\n",
               std::string(name()).c_str());
  std::abort();
}

void Backend::RecvFromPeer(void*, int64_t, int) {
  std::fprintf(stderr, "strata: RecvFromPeer on backend %s without a peer group\n",
               std::string(name()).c_str());
  std::abort();
}

absl::StatusOr<int> ParseCudaDevice(const std::string& device) {
  if (device == "cuda") return 0;
  int index = -1;
  if (!absl::StartsWith(device, "cuda:") || !absl::SimpleAtoi(device.substr(5), &index) ||
      index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", device, "\": expected cpu, cuda or cuda:N"));
  }
  return index;
}

absl::StatusOr<MemoryReport> ProbeDevice(const std::string& device) {
  BackendOptions options;
  options.device = device;
  return ProbeDevice(options);
}

absl::StatusOr<MemoryReport> ProbeDevice(const BackendOptions& options) {
  const std::string& device = options.device;
  if (device == "cpu") {
    ASSIGN_OR_RETURN(std::unique_ptr<Backend> cpu, MakeCpuBackend(1, options.cpu_kernels));
    return cpu->Memory();
  }
  if (absl::StartsWith(device, "sim:")) {
    // The probe reports the device's memory; the reserve is the worker's to
    // choose (--reserve, --memory-fraction), so a device under 1 GiB probes too.
    BackendOptions probe = options;
    probe.reserve_bytes = 0;
    ASSIGN_OR_RETURN(std::unique_ptr<Backend> sim, MakeSimBackend(probe, DType::kBF16));
    MemoryReport report = sim->Memory();
    report.free_bytes = report.total_bytes;  // nothing of the probe's own counts
    report.used_bytes = 0;
    return report;
  }
  absl::StatusOr<int> index = ParseCudaDevice(device);
  if (!index.ok()) return index.status();
  return ProbeCudaDevice(*index);
}

std::string PeerTransportKind(const std::string& device) {
  return absl::StartsWith(device, "sim:") ? "socket" : "nccl";
}

bool PeerTransportAvailable(const std::string& device, std::string* why) {
  if (PeerTransportKind(device) == "socket") return true;  // socket_link.h
  return NcclTransportAvailable(device, why);
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendOptions& options,
                                                     DType weights_dtype) {
  if (options.device == "cpu") return MakeCpuBackend(options.threads, options.cpu_kernels);
  if (absl::StartsWith(options.device, "sim:")) return MakeSimBackend(options, weights_dtype);
  absl::StatusOr<int> index = ParseCudaDevice(options.device);
  if (!index.ok()) return index.status();
  return MakeCudaBackend(options, weights_dtype);
}

}  // namespace strata
