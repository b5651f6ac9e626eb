// GPU telemetry from NVML, loaded at run time with dlopen so that the worker
// builds and runs on machines without an NVIDIA driver (no NVML headers or
// stubs are needed: the few entry points used are declared in nvml.cc).
//
// The series follow NVIDIA's DCGM exporter labelling, `gpu` (the NVML index)
// and `UUID`, so dashboards can join Strata's series with DCGM's:
//   strata_worker_gpu_utilization_ratio       0..1, busy fraction of the last sample period
//   strata_worker_gpu_memory_used_bytes
//   strata_worker_gpu_memory_total_bytes
//   strata_worker_gpu_power_watts
//   strata_worker_gpu_temperature_celsius
// Each also carries `model` and `worker`, and `gpu_name` (the product name).
#ifndef STRATA_SERVICES_WORKER_NVML_H_
#define STRATA_SERVICES_WORKER_NVML_H_

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace strata {

// A GPU as NVML knows it. `index` is NVML's index of the GPU (of the parent
// GPU for a MIG instance), which is DCGM's `gpu` label; `uuid` is the GPU's
// or the MIG instance's UUID.
struct GpuRef {
  int index = 0;
  std::string uuid;
};

// One reading of one GPU; a field NVML could not read is empty.
struct GpuSample {
  int index = 0;
  std::string uuid;
  std::string name;
  std::optional<double> utilization;  // 0..1
  std::optional<double> memory_used_bytes;
  std::optional<double> memory_total_bytes;
  std::optional<double> power_watts;
  std::optional<double> temperature_celsius;
};

class Nvml {
 public:
  // Loads $STRATA_NVML_LIBRARY, else libnvidia-ml.so.1, and initialises it.
  // Null (with the reason in `why`) when there is no driver or no GPU.
  static std::unique_ptr<Nvml> Open(std::string* why);
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  // The GPUs this process may use, in CUDA's order, found in NVML by UUID:
  // CUDA's order (FASTEST_FIRST by default) need not be NVML's PCI order, so
  // an index means nothing to NVML. `cuda_uuids` are CUDA's visible devices
  // (VisibleCudaUuids(): CUDA_VISIBLE_DEVICES applied by CUDA itself, whether
  // it lists indices, UUIDs or MIG instances). Where CUDA sees no device, the
  // CUDA_VISIBLE_DEVICES entries are resolved here: GPU UUIDs (or a unique
  // prefix, as CUDA accepts) and MIG UUIDs by UUID, indices only under
  // CUDA_DEVICE_ORDER=PCI_BUS_ID (then they are NVML's); without it, every
  // GPU NVML sees. `why` lists the entries that name no GPU.
  std::vector<GpuRef> Resolve(const std::vector<std::string>& cuda_uuids, std::string* why) const;
  GpuSample Read(const GpuRef& gpu) const;

 private:
  struct Api;
  explicit Nvml(std::unique_ptr<Api> api);
  // The NVML device of a GPU or MIG UUID (CUDA writes both as GPU-...).
  std::optional<GpuRef> ByUuid(const std::string& uuid) const;
  std::vector<GpuRef> All() const;
  std::unique_ptr<Api> api_;
  mutable std::mutex mu_;  // NVML is thread-safe; this keeps a scrape's reads together
};

// A prometheus-cpp collectable that reads the GPUs at scrape time.
class GpuCollector final : public prometheus::Collectable {
 public:
  GpuCollector(std::unique_ptr<Nvml> nvml, std::string worker, std::vector<GpuRef> devices);
  void SetModel(const std::string& model);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::unique_ptr<Nvml> nvml_;
  const std::string worker_;
  const std::vector<GpuRef> devices_;
  mutable std::mutex mu_;
  std::string model_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_WORKER_NVML_H_
