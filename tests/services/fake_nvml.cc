// A stand-in for libnvidia-ml.so.1 on machines without an NVIDIA driver: two
// GPUs with fixed readings, and one MIG instance on GPU 1 (found only by its
// UUID, with no index of its own and no utilisation, as NVML has it),
// exporting the NVML entry points the worker uses with NVML's C ABI. Tests point
// STRATA_NVML_LIBRARY at it to check the worker's dlopen path, CUDA_VISIBLE_DEVICES narrowing and
// labels; the real library is exercised on the device machine.
#include <cstdio>
#include <cstring>

namespace {
struct FakeDevice {
  int index;
};
FakeDevice devices[2] = {{0}, {1}};
FakeDevice mig = {101};  // a MIG instance of GPU 1
constexpr char kMigUuid[] = "MIG-fa4e0000-0000-0000-0000-0000000001a1";
int initialised = 0;

int Index(void* device) { return static_cast<FakeDevice*>(device)->index; }
}  // namespace

extern "C" {

int nvmlInit_v2() {
  ++initialised;
  return 0;
}
int nvmlShutdown() {
  if (initialised == 0) return 1;  // NVML_ERROR_UNINITIALIZED
  --initialised;
  return 0;
}
const char* nvmlErrorString(int rc) { return rc == 0 ? "Success" : "Fake failure"; }
int nvmlDeviceGetCount_v2(unsigned int* count) {
  *count = 2;
  return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void** device) {
  if (initialised == 0) return 1;
  if (index >= 2) return 2;  // NVML_ERROR_INVALID_ARGUMENT
  *device = &devices[index];
  return 0;
}
int nvmlDeviceGetHandleByUUID(const char* uuid, void** device) {
  if (initialised == 0) return 1;
  for (int i = 0; i < 2; ++i) {
    char text[64];
    std::snprintf(text, sizeof(text), "GPU-fa4e0000-0000-0000-0000-00000000000%d", i);
    if (std::strcmp(uuid, text) == 0) {
      *device = &devices[i];
      return 0;
    }
  }
  if (std::strcmp(uuid, kMigUuid) == 0) {
    *device = &mig;
    return 0;
  }
  return 6;  // NVML_ERROR_NOT_FOUND
}
int nvmlDeviceGetIndex(void* device, unsigned int* index) {
  if (device == &mig) return 3;  // NVML_ERROR_NOT_SUPPORTED: MIG instances have none
  *index = static_cast<unsigned int>(Index(device));
  return 0;
}
int nvmlDeviceGetDeviceHandleFromMigDeviceHandle(void* device, void** parent) {
  if (device != &mig) return 2;
  *parent = &devices[1];
  return 0;
}
int nvmlDeviceGetUUID(void* device, char* out, unsigned int length) {
  if (device == &mig) {
    std::snprintf(out, length, "%s", kMigUuid);
    return 0;
  }
  std::snprintf(out, length, "GPU-fa4e0000-0000-0000-0000-00000000000%d", Index(device));
  return 0;
}
int nvmlDeviceGetName(void* device, char* out, unsigned int length) {
  std::snprintf(out, length, "Fake GPU %d", Index(device));
  return 0;
}
int nvmlDeviceGetUtilizationRates(void* device, unsigned int* rates) {
  if (device == &mig) return 3;
  rates[0] = 30 + 7 * Index(device);  // gpu %
  rates[1] = 10;                      // memory %
  return 0;
}
int nvmlDeviceGetMemoryInfo(void* device, unsigned long long* memory) {
  if (device == &mig) {  // a 1g.10gb instance
    memory[0] = 10ull << 30;
    memory[2] = 3ull << 30;
    memory[1] = memory[0] - memory[2];
    return 0;
  }
  memory[0] = 80ull << 30;                    // total
  memory[2] = (12ull + Index(device)) << 30;  // used
  memory[1] = memory[0] - memory[2];          // free
  return 0;
}
int nvmlDeviceGetPowerUsage(void* device, unsigned int* milliwatts) {
  *milliwatts = 215500 + 1000 * Index(device);
  return 0;
}
int nvmlDeviceGetTemperature(void* device, int sensor, unsigned int* celsius) {
  if (sensor != 0) return 2;
  *celsius = 54 + Index(device);
  return 0;
}

}  // extern "C"
