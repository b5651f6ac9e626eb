// Which GPUs a worker reports, resolved by UUID through the stand-in NVML
// (tests/services/fake_nvml.cc: GPUs 0 and 1, a MIG instance on GPU 1).
// CUDA enumerates devices FASTEST_FIRST by default, NVML in PCI order, so an
// index means different GPUs to the two; a UUID means the same one.
#include "services/worker/nvml.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace strata {
namespace {

constexpr char kGpu0[] = "GPU-fa4e0000-0000-0000-0000-000000000000";
constexpr char kGpu1[] = "GPU-fa4e0000-0000-0000-0000-000000000001";
constexpr char kMig[] = "MIG-fa4e0000-0000-0000-0000-0000000001a1";

class NvmlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("STRATA_NVML_LIBRARY", FAKE_NVML, 1);
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("CUDA_DEVICE_ORDER");
    std::string why;
    nvml_ = Nvml::Open(&why);
    ASSERT_NE(nvml_, nullptr) << why;
  }
  void TearDown() override {
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("CUDA_DEVICE_ORDER");
  }
  std::vector<std::string> Uuids(const std::vector<GpuRef>& gpus) {
    std::vector<std::string> out;
    for (const GpuRef& g : gpus) out.push_back(std::to_string(g.index) + "=" + g.uuid);
    return out;
  }
  std::unique_ptr<Nvml> nvml_;
};

TEST_F(NvmlTest, CudasDevicesAreFoundByUuidInCudasOrder) {
  // CUDA put GPU 1 first (a faster GPU, say): device 0 is NVML's GPU 1.
  std::string why;
  auto gpus = nvml_->Resolve({kGpu1, kGpu0}, &why);
  EXPECT_EQ(Uuids(gpus),
            (std::vector<std::string>{std::string("1=") + kGpu1, std::string("0=") + kGpu0}));
  EXPECT_EQ(why, "");
  // CUDA_VISIBLE_DEVICES is CUDA's to apply: given CUDA's list, an index
  // entry is not read again as an NVML index.
  setenv("CUDA_VISIBLE_DEVICES", "0", 1);
  gpus = nvml_->Resolve({kGpu1}, &why);
  EXPECT_EQ(Uuids(gpus), (std::vector<std::string>{std::string("1=") + kGpu1}));
}

TEST_F(NvmlTest, AMigInstanceIsLabelledWithItsParentGpu) {
  // CUDA writes every UUID as GPU-...; NVML knows the instance as MIG-....
  std::string why;
  auto gpus = nvml_->Resolve({std::string("GPU-") + (kMig + 4)}, &why);
  EXPECT_EQ(Uuids(gpus), (std::vector<std::string>{std::string("1=") + kMig}));
  const GpuSample s = nvml_->Read(gpus.at(0));
  EXPECT_EQ(s.uuid, kMig);
  EXPECT_FALSE(s.utilization.has_value());  // NVML has none for an instance
  EXPECT_EQ(s.memory_total_bytes.value_or(0), static_cast<double>(10ull << 30));
}

TEST_F(NvmlTest, AnUnknownCudaDeviceIsLeftOutAndNamed) {
  std::string why;
  auto gpus = nvml_->Resolve({"GPU-00000000-1111-2222-3333-444444444444", kGpu0}, &why);
  EXPECT_EQ(Uuids(gpus), (std::vector<std::string>{std::string("0=") + kGpu0}));
  EXPECT_NE(why.find("GPU-00000000-1111"), std::string::npos) << why;
}

TEST_F(NvmlTest, WithoutCudaTheVisibleDevicesAreReadByUuid) {
  std::string why;
  EXPECT_EQ(nvml_->Resolve({}, &why).size(), 2u);  // nothing set: every GPU
  setenv("CUDA_VISIBLE_DEVICES",
         "GPU-fa4e0000-0000-0000-0000-000000000001,MIG-fa4e0000-0000-0000-0000-0000000001a1", 1);
  EXPECT_EQ(Uuids(nvml_->Resolve({}, &why)),
            (std::vector<std::string>{std::string("1=") + kGpu1, std::string("1=") + kMig}));
  EXPECT_EQ(why, "");
  // An index is CUDA's order, not NVML's, unless CUDA_DEVICE_ORDER says PCI.
  setenv("CUDA_VISIBLE_DEVICES", "1", 1);
  EXPECT_TRUE(nvml_->Resolve({}, &why).empty());
  EXPECT_NE(why.find("CUDA_DEVICE_ORDER"), std::string::npos) << why;
  setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID", 1);
  why.clear();
  EXPECT_EQ(Uuids(nvml_->Resolve({}, &why)), (std::vector<std::string>{std::string("1=") + kGpu1}));
  // A prefix must name one GPU.
  setenv("CUDA_VISIBLE_DEVICES", "GPU-fa4e", 1);
  EXPECT_TRUE(nvml_->Resolve({}, &why).empty());
  EXPECT_NE(why.find("several"), std::string::npos) << why;
}

}  // namespace
}  // namespace strata
