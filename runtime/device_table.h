// The accelerators the planner knows by name: memory, memory bandwidth and
// dense bf16 tensor throughput, from the vendors' data sheets. The layout
// search models a step on a device with these figures; a CUDA worker is
// matched to a row by the name the driver reports, a simulated one
// (`--device sim:NAME`) is made from a row.
#ifndef STRATA_RUNTIME_DEVICE_TABLE_H_
#define STRATA_RUNTIME_DEVICE_TABLE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata {

struct DeviceModel {
  std::string name;   // the table's key: "a100-40gb"
  std::string label;  // as people write it: "A100-40GB"
  int64_t memory_bytes = 0;
  double bandwidth = 0;  // memory bandwidth, bytes/s
  double flops = 0;      // dense bf16 tensor FLOP/s
};

// Every row, in a fixed order.
const std::vector<DeviceModel>& KnownDevices();

// A row by its key, case-insensitive ("A100-40GB" and "a100-40gb" both);
// NOT_FOUND lists the keys.
absl::StatusOr<DeviceModel> FindDevice(const std::string& name);

// The row for a CUDA device: its driver name ("NVIDIA A100-SXM4-40GB",
// "NVIDIA GeForce RTX 4090") and total memory, which tells the 40 and 80 GB
// parts of one name apart. nullopt for a device the table lacks.
std::optional<DeviceModel> MatchCudaDevice(const std::string& cuda_name, int64_t total_bytes);

}  // namespace strata

#endif  // STRATA_RUNTIME_DEVICE_TABLE_H_
