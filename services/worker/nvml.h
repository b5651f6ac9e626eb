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

  // The GPUs this process may use: all that NVML sees, narrowed by
  // CUDA_VISIBLE_DEVICES (indices or UUID prefixes) when it is set.
  std::vector<int> VisibleDevices() const;
  GpuSample Read(int index) const;

 private:
  struct Api;
  explicit Nvml(std::unique_ptr<Api> api);
  std::unique_ptr<Api> api_;
  mutable std::mutex mu_;  // NVML is thread-safe; this keeps a scrape's reads together
};

// A prometheus-cpp collectable that reads the GPUs at scrape time.
class GpuCollector final : public prometheus::Collectable {
 public:
  GpuCollector(std::unique_ptr<Nvml> nvml, std::string worker);
  void SetModel(const std::string& model);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::unique_ptr<Nvml> nvml_;
  const std::string worker_;
  const std::vector<int> devices_;
  mutable std::mutex mu_;
  std::string model_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_WORKER_NVML_H_
