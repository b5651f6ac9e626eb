#include "services/worker/nvml.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace strata {
namespace {

// The NVML ABI pieces used here (nvml.h is not installed on build machines).
using NvmlReturn = int;  // nvmlReturn_t; 0 is NVML_SUCCESS
using NvmlDevice = struct NvmlDeviceOpaque*;
struct NvmlUtilization {
  unsigned int gpu;  // percent of the sample period a kernel ran
  unsigned int memory;
};
struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
constexpr int kTemperatureGpu = 0;  // NVML_TEMPERATURE_GPU
constexpr unsigned int kStringBuffer = 96;

}  // namespace

struct Nvml::Api {
  void* handle = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  const char* (*error_string)(NvmlReturn) = nullptr;
  NvmlReturn (*count)(unsigned int*) = nullptr;
  NvmlReturn (*by_index)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*by_uuid)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*index_of)(NvmlDevice, unsigned int*) = nullptr;
  // Optional (drivers before MIG lack it): a MIG instance's parent GPU.
  NvmlReturn (*mig_parent)(NvmlDevice, NvmlDevice*) = nullptr;
  NvmlReturn (*uuid)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*name)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*) = nullptr;
  NvmlReturn (*power)(NvmlDevice, unsigned int*) = nullptr;
  NvmlReturn (*temperature)(NvmlDevice, int, unsigned int*) = nullptr;
  unsigned int devices = 0;
};

namespace {

template <typename F>
bool ResolveSymbol(void* handle, const char* symbol, F* out, std::string* why) {
  *out = reinterpret_cast<F>(dlsym(handle, symbol));
  if (*out == nullptr) *why = absl::StrCat("NVML has no ", symbol);
  return *out != nullptr;
}

}  // namespace

std::unique_ptr<Nvml> Nvml::Open(std::string* why) {
  const char* env = std::getenv("STRATA_NVML_LIBRARY");
  const std::string path = env != nullptr && *env != '\0' ? env : "libnvidia-ml.so.1";
  auto api = std::make_unique<Api>();
  api->handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (api->handle == nullptr) {
    *why = absl::StrCat("no NVML (", path, "): ", dlerror());
    return nullptr;
  }
  void* h = api->handle;
  const bool resolved = ResolveSymbol(h, "nvmlInit_v2", &api->init, why) &&
                        ResolveSymbol(h, "nvmlShutdown", &api->shutdown, why) &&
                        ResolveSymbol(h, "nvmlErrorString", &api->error_string, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetCount_v2", &api->count, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetHandleByIndex_v2", &api->by_index, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetHandleByUUID", &api->by_uuid, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetIndex", &api->index_of, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetUUID", &api->uuid, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetName", &api->name, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetUtilizationRates", &api->utilization, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetMemoryInfo", &api->memory, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetPowerUsage", &api->power, why) &&
                        ResolveSymbol(h, "nvmlDeviceGetTemperature", &api->temperature, why);
  if (!resolved) {
    dlclose(h);
    return nullptr;
  }
  api->mig_parent = reinterpret_cast<decltype(api->mig_parent)>(
      dlsym(h, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle"));
  if (const NvmlReturn rc = api->init(); rc != 0) {
    *why = absl::StrCat("nvmlInit: ", api->error_string(rc));
    dlclose(h);
    return nullptr;
  }
  if (const NvmlReturn rc = api->count(&api->devices); rc != 0 || api->devices == 0) {
    *why = rc != 0 ? absl::StrCat("nvmlDeviceGetCount: ", api->error_string(rc)) : "no GPU";
    api->shutdown();
    dlclose(h);
    return nullptr;
  }
  return std::unique_ptr<Nvml>(new Nvml(std::move(api)));
}

Nvml::Nvml(std::unique_ptr<Api> api) : api_(std::move(api)) {}

Nvml::~Nvml() {
  api_->shutdown();
  dlclose(api_->handle);
}

std::optional<GpuRef> Nvml::ByUuid(const std::string& uuid) const {
  std::lock_guard<std::mutex> lock(mu_);
  // CUDA formats every device's UUID as GPU-...; a MIG instance's is MIG-...
  // to NVML.
  std::vector<std::string> names = {uuid};
  if (absl::StartsWith(uuid, "GPU-")) names.push_back("MIG-" + uuid.substr(4));
  for (const std::string& name : names) {
    NvmlDevice device = nullptr;
    if (api_->by_uuid(name.c_str(), &device) != 0) continue;
    GpuRef gpu;
    gpu.uuid = name;
    unsigned int index = 0;
    NvmlDevice parent = nullptr;
    if (api_->index_of(device, &index) != 0 &&
        !(api_->mig_parent != nullptr && api_->mig_parent(device, &parent) == 0 &&
          api_->index_of(parent, &index) == 0)) {
      continue;
    }
    gpu.index = static_cast<int>(index);
    return gpu;
  }
  return std::nullopt;
}

std::vector<GpuRef> Nvml::All() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<GpuRef> all;
  for (unsigned int i = 0; i < api_->devices; ++i) {
    NvmlDevice device = nullptr;
    char text[kStringBuffer] = {};
    if (api_->by_index(i, &device) != 0 || api_->uuid(device, text, kStringBuffer) != 0) continue;
    all.push_back({static_cast<int>(i), text});
  }
  return all;
}

std::vector<GpuRef> Nvml::Resolve(const std::vector<std::string>& cuda_uuids,
                                  std::string* why) const {
  std::vector<GpuRef> chosen;
  auto missing = [&](absl::string_view entry, absl::string_view reason) {
    absl::StrAppend(why, why->empty() ? "" : "; ", "\"", entry, "\": ", reason);
  };
  if (!cuda_uuids.empty()) {
    for (const std::string& uuid : cuda_uuids) {
      if (auto gpu = ByUuid(uuid)) {
        chosen.push_back(*gpu);
      } else {
        missing(uuid, "CUDA's device is unknown to NVML");
      }
    }
    return chosen;
  }
  const std::vector<GpuRef> all = All();
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (visible == nullptr) return all;
  const char* order = std::getenv("CUDA_DEVICE_ORDER");
  const bool pci_order = order != nullptr && std::string(order) == "PCI_BUS_ID";
  for (absl::string_view entry : absl::StrSplit(visible, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    int index = 0;
    if (absl::SimpleAtoi(entry, &index)) {
      if (!pci_order) {
        missing(
            entry,
            "an index in CUDA's order, which is not NVML's without CUDA_DEVICE_ORDER=PCI_BUS_ID");
      } else if (index < 0 || index >= static_cast<int>(all.size())) {
        missing(entry, "no such GPU");
      } else {
        chosen.push_back(all[index]);
      }
      continue;
    }
    if (absl::StartsWith(entry, "MIG-")) {
      if (auto gpu = ByUuid(std::string(entry))) {
        chosen.push_back(*gpu);
      } else {
        missing(entry, "no such MIG instance");
      }
      continue;
    }
    std::vector<GpuRef> matches;  // a UUID or a unique prefix of one, as CUDA accepts
    for (const GpuRef& gpu : all) {
      if (absl::StartsWith(gpu.uuid, entry)) matches.push_back(gpu);
    }
    if (matches.size() == 1) {
      chosen.push_back(matches[0]);
    } else {
      missing(entry, matches.empty() ? "no GPU has this UUID" : "the prefix names several GPUs");
    }
  }
  return chosen;
}

GpuSample Nvml::Read(const GpuRef& gpu) const {
  std::lock_guard<std::mutex> lock(mu_);
  GpuSample s;
  s.index = gpu.index;
  s.uuid = gpu.uuid;
  NvmlDevice device = nullptr;
  if (api_->by_uuid(gpu.uuid.c_str(), &device) != 0) return s;
  char text[kStringBuffer] = {};
  if (api_->name(device, text, kStringBuffer) == 0) s.name = text;
  NvmlUtilization util{};
  if (api_->utilization(device, &util) == 0) s.utilization = util.gpu / 100.0;
  NvmlMemory memory{};
  if (api_->memory(device, &memory) == 0) {
    s.memory_used_bytes = static_cast<double>(memory.used);
    s.memory_total_bytes = static_cast<double>(memory.total);
  }
  unsigned int value = 0;
  if (api_->power(device, &value) == 0) s.power_watts = value / 1000.0;
  if (api_->temperature(device, kTemperatureGpu, &value) == 0) s.temperature_celsius = value;
  return s;
}

GpuCollector::GpuCollector(std::unique_ptr<Nvml> nvml, std::string worker,
                           std::vector<GpuRef> devices)
    : nvml_(std::move(nvml)), worker_(std::move(worker)), devices_(std::move(devices)) {}

void GpuCollector::SetModel(const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  model_ = model;
}

std::vector<prometheus::MetricFamily> GpuCollector::Collect() const {
  struct Series {
    const char* name;
    const char* help;
    std::optional<double> GpuSample::*field;
  };
  static constexpr Series kSeries[] = {
      {"strata_worker_gpu_utilization_ratio",
       "Fraction of the last sample period in which a kernel ran on the GPU (NVML)",
       &GpuSample::utilization},
      {"strata_worker_gpu_memory_used_bytes", "GPU memory in use, all processes (NVML)",
       &GpuSample::memory_used_bytes},
      {"strata_worker_gpu_memory_total_bytes", "GPU memory in all (NVML)",
       &GpuSample::memory_total_bytes},
      {"strata_worker_gpu_power_watts", "GPU power draw (NVML)", &GpuSample::power_watts},
      {"strata_worker_gpu_temperature_celsius", "GPU core temperature (NVML)",
       &GpuSample::temperature_celsius},
  };
  std::string model;
  {
    std::lock_guard<std::mutex> lock(mu_);
    model = model_;
  }
  std::vector<GpuSample> samples;
  for (const GpuRef& gpu : devices_) samples.push_back(nvml_->Read(gpu));
  std::vector<prometheus::MetricFamily> families;
  for (const Series& series : kSeries) {
    prometheus::MetricFamily family;
    family.name = series.name;
    family.help = series.help;
    family.type = prometheus::MetricType::Gauge;
    for (const GpuSample& s : samples) {
      const std::optional<double>& value = s.*series.field;
      if (!value) continue;
      prometheus::ClientMetric metric;
      metric.label = {{"UUID", s.uuid},
                      {"gpu", absl::StrCat(s.index)},
                      {"gpu_name", s.name},
                      {"model", model},
                      {"worker", worker_}};
      metric.gauge.value = *value;
      family.metric.push_back(std::move(metric));
    }
    if (!family.metric.empty()) families.push_back(std::move(family));
  }
  return families;
}

}  // namespace strata
