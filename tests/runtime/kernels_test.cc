// Every CPU kernel variant against a double-precision reference, for each
// weight dtype and for shapes with tails (k not a multiple of 8, odd rows).
#include "runtime/backend/cpu/kernels.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cpu/throughput.h"

namespace strata {
namespace {

struct Shape {
  int64_t m, n, k;
};

class LinearKernelTest : public ::testing::TestWithParam<std::tuple<DType, Shape>> {};

TEST_P(LinearKernelTest, MatchesDoublePrecision) {
  const auto [dtype, shape] = GetParam();
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> x(shape.m * shape.k), wf(shape.n * shape.k);
  for (float& v : x) v = dist(rng);
  std::vector<uint16_t> w16(shape.n * shape.k);
  for (size_t i = 0; i < wf.size(); ++i) {
    wf[i] = dist(rng);
    if (dtype == DType::kBF16) {
      w16[i] = F32ToBf16(wf[i]);
      wf[i] = Bf16ToF32(w16[i]);
    } else if (dtype == DType::kF16) {
      w16[i] = F32ToF16(wf[i]);
      wf[i] = F16ToF32(w16[i]);
    }
  }
  Weight w{dtype, shape.n, shape.k,
           dtype == DType::kF32 ? static_cast<const void*>(wf.data()) : w16.data()};
  auto reference = [&](int64_t t, int64_t n) {
    double ref = 0;
    for (int64_t i = 0; i < shape.k; ++i) ref += double(x[t * shape.k + i]) * wf[n * shape.k + i];
    return ref;
  };
  for (cpu::CpuKernels set : cpu::SupportedCpuKernels()) {
    SCOPED_TRACE(cpu::CpuKernelsName(set));
    const bool panels = cpu::UsesBf16Panels(set) && dtype == DType::kBF16;
    std::vector<float> out(shape.m * shape.n, -7.f);
    if (panels) {
      const int64_t stride = cpu::Bf16PairStride(shape.k) * 2;
      std::vector<uint16_t> xb(cpu::SplitRows(shape.m) * stride, 0xffff);
      cpu::SplitRowsToBf16(x.data(), shape.m, shape.k, xb.data());
      for (int64_t t = 0; t < shape.m; ++t) {
        const int64_t hi = (t / cpu::kSplitGroup) * 2 * cpu::kSplitGroup + t % cpu::kSplitGroup;
        for (int64_t i = 0; i < stride; ++i) {
          const uint16_t h = xb[hi * stride + i], l = xb[(hi + cpu::kSplitGroup) * stride + i];
          if (i >= shape.k) {
            ASSERT_EQ(h | l, 0) << i;
            continue;
          }
          const float v = x[t * shape.k + i];
          ASSERT_EQ(h, F32ToBf16(v)) << i;
          ASSERT_LE(std::fabs(Bf16ToF32(h) + Bf16ToF32(l) - v), std::ldexp(std::fabs(v), -16)) << i;
        }
      }
      for (int64_t t = shape.m; t < cpu::SplitRows(shape.m) / 2; ++t) {  // padding tokens
        const int64_t hi = (t / cpu::kSplitGroup) * 2 * cpu::kSplitGroup + t % cpu::kSplitGroup;
        for (int64_t i = 0; i < stride; ++i) {
          ASSERT_EQ(xb[hi * stride + i] | xb[(hi + cpu::kSplitGroup) * stride + i], 0) << t;
        }
      }
      std::vector<uint16_t> packed(cpu::Bf16PanelElements(shape.n, shape.k), 0xffff);
      cpu::PackBf16Panels(w16.data(), shape.n, shape.k, 0, cpu::Bf16Panels(shape.n), packed.data());
      Weight wp = w;
      wp.bf16_panels = packed.data();
      // Two calls over halves of the panels write the same as one call.
      const int64_t half = cpu::Bf16Panels(shape.n) / 2;
      cpu::LinearPanelsAmx(xb.data(), shape.m, wp, 0, half, out.data(), shape.n);
      cpu::LinearPanelsAmx(xb.data(), shape.m, wp, half, cpu::Bf16Panels(shape.n), out.data(),
                           shape.n);
    } else {
      cpu::LinearRowsOf(set)(x.data(), shape.m, w, 0, shape.n, out.data(), shape.n);
    }
    for (int64_t t = 0; t < shape.m; ++t) {
      for (int64_t n = 0; n < shape.n; ++n) {
        // Every path to the same bound: the split activations are within
        // 2^-16 of x, far inside it.
        ASSERT_NEAR(out[t * shape.n + n], reference(t, n), 1e-4 * std::sqrt(double(shape.k)))
            << "t=" << t << " n=" << n;
      }
    }
    // The whole backend (threads, bias) agrees with the kernel.
    auto backend = MakeCpuBackend(2, cpu::CpuKernelsName(set));
    ASSERT_TRUE(backend.ok()) << backend.status();
    EXPECT_EQ((*backend)->name(), std::string("cpu-") + cpu::CpuKernelsName(set));
    auto matrix = (*backend)->PrepareMatrix(w, "test matrix");
    ASSERT_TRUE(matrix.ok()) << matrix.status();
    EXPECT_EQ(matrix->bf16_panels != nullptr, panels);
    std::vector<float> bias(shape.n, 0.5f), with_bias(shape.m * shape.n);
    Weight bias_w{DType::kF32, 1, static_cast<int64_t>(bias.size()), bias.data()};
    (*backend)->Linear(x.data(), shape.m, *matrix, &bias_w, with_bias.data());
    for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(with_bias[i], out[i] + 0.5f) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    DTypesAndShapes, LinearKernelTest,
    ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values(Shape{1, 37, 64}, Shape{3, 13, 1027}, Shape{7, 25, 520},
                                         Shape{70, 9, 33}, Shape{13, 96, 2048},
                                         Shape{25, 70, 31})));

TEST(LinearKernelTest, OneTokenEqualsTheSameTokenInABatch) {
  // Decode and prefill take different tiles; the result must not change, on
  // any kernel set and weight dtype.
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> dist(-1, 1);
  const int64_t m = 9, n = 24, k = 1100;
  std::vector<float> x(m * k), wv(n * k);
  std::vector<uint16_t> wb(n * k);
  for (float& v : x) v = dist(rng);
  for (size_t i = 0; i < wv.size(); ++i) {
    wv[i] = dist(rng);
    wb[i] = F32ToBf16(wv[i]);
  }
  for (cpu::CpuKernels set : cpu::SupportedCpuKernels()) {
    for (const Weight& w :
         {Weight{DType::kF32, n, k, wv.data()}, Weight{DType::kBF16, n, k, wb.data()}}) {
      SCOPED_TRACE(absl::StrCat(cpu::CpuKernelsName(set), " ", DTypeName(w.dtype)));
      auto backend = MakeCpuBackend(2, cpu::CpuKernelsName(set));
      ASSERT_TRUE(backend.ok()) << backend.status();
      auto matrix = (*backend)->PrepareMatrix(w, "test matrix");
      ASSERT_TRUE(matrix.ok()) << matrix.status();
      std::vector<float> batch(m * n), single(n);
      (*backend)->Linear(x.data(), m, *matrix, nullptr, batch.data());
      for (int64_t t = 0; t < m; ++t) {
        (*backend)->Linear(x.data() + t * k, 1, *matrix, nullptr, single.data());
        for (int64_t j = 0; j < n; ++j) ASSERT_EQ(single[j], batch[t * n + j]);
      }
    }
  }
}

TEST(CpuKernelsTest, BadNamesAreClearErrors) {
  auto unknown = cpu::ParseCpuKernels("avx1024", "STRATA_CPU_KERNELS");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()),
              ::testing::HasSubstr("STRATA_CPU_KERNELS=avx1024: unknown CPU kernel set"));
  EXPECT_THAT(std::string(unknown.status().message()), ::testing::HasSubstr("amx-bf16"));
  auto backend = MakeCpuBackend(1, "AVX2");
  ASSERT_FALSE(backend.ok());
  EXPECT_THAT(std::string(backend.status().message()), ::testing::HasSubstr("cpu_kernels=AVX2"));
  // The environment variable is read when no set is named, and checked too.
  setenv("STRATA_CPU_KERNELS", "fastest", 1);
  auto from_env = MakeCpuBackend(1);
  unsetenv("STRATA_CPU_KERNELS");
  ASSERT_FALSE(from_env.ok());
  EXPECT_THAT(std::string(from_env.status().message()),
              ::testing::HasSubstr("STRATA_CPU_KERNELS=fastest"));
  // auto is the fastest set this CPU runs.
  auto chosen = cpu::ParseCpuKernels("auto", "x");
  ASSERT_TRUE(chosen.ok());
  EXPECT_EQ(*chosen, cpu::SupportedCpuKernels().back());
  if (!cpu::CpuHasAmxBf16()) {
    auto lacking = cpu::ParseCpuKernels("amx-bf16", "STRATA_CPU_KERNELS");
    ASSERT_FALSE(lacking.ok());
    EXPECT_THAT(std::string(lacking.status().message()), ::testing::HasSubstr("lacks"));
  }
}

// What a CPU worker reports to the layout search is measured, with every
// kernel set this CPU has: figures a real machine gives (between a slow
// laptop's and more than any CPU's), and the set named.
TEST(CpuThroughputTest, MeasuresBandwidthAndFlopsWithEachKernelSet) {
  for (cpu::CpuKernels set : cpu::SupportedCpuKernels()) {
    const std::string name(cpu::CpuKernelsName(set));
    absl::StatusOr<CpuThroughput> t = MeasureCpuThroughput(0, name);
    ASSERT_TRUE(t.ok()) << name << ": " << t.status();
    EXPECT_EQ(t->backend, "cpu-" + name);
    EXPECT_GT(t->bandwidth, 0.5e9) << name;
    EXPECT_LT(t->bandwidth, 2e12) << name;
    EXPECT_GT(t->flops, 0.2e9) << name;
    EXPECT_LT(t->flops, 1e14) << name;
    EXPECT_GT(t->seconds, 0) << name;
    std::printf("%s: %.1f GB/s, %.0f GFLOP/s in %.2f s\n", name.c_str(), t->bandwidth / 1e9,
                t->flops / 1e9, t->seconds);
  }
  absl::StatusOr<CpuThroughput> bad = MeasureCpuThroughput(0, "avx9000");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("avx9000"), std::string::npos) << bad.status();
}

// Measured once per machine: the second worker reads the first one's
// figures back; a damaged file is measured over.
TEST(CpuThroughputTest, IsMeasuredOncePerMachine) {
  const std::string dir = ::testing::TempDir() + "/strata-throughput-cache";
  std::filesystem::remove_all(dir);
  absl::StatusOr<CpuThroughput> first = CachedCpuThroughput(1, "", dir);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->cached);
  absl::StatusOr<CpuThroughput> second = CachedCpuThroughput(1, "", dir);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->cached);
  EXPECT_EQ(second->cache_file, first->cache_file);
  EXPECT_EQ(second->backend, first->backend);
  EXPECT_NEAR(second->bandwidth, first->bandwidth, 1e-5 * first->bandwidth);
  EXPECT_NEAR(second->flops, first->flops, 1e-5 * first->flops);
  // Another thread count is another key.
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/cpu-throughput")) {
    files.push_back(e.path().string());
  }
  ASSERT_EQ(files.size(), 1u);
  EXPECT_NE(files[0].find("1threads"), std::string::npos) << files[0];
  std::ofstream(files[0]) << "garbage\n";
  absl::StatusOr<CpuThroughput> third = CachedCpuThroughput(1, "", dir);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_FALSE(third->cached);
  EXPECT_GT(third->bandwidth, 0);
  std::filesystem::remove_all(dir);
}

TEST(DTypeTest, ConversionsRoundTrip) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1e-5f, 3.0e-7f, 1e-3f}) {
    EXPECT_EQ(F16ToF32(F32ToF16(v)), F16ToF32(F32ToF16(F16ToF32(F32ToF16(v)))));
    EXPECT_NEAR(F16ToF32(F32ToF16(v)), v, std::fabs(v) * 1e-3 + 6e-8);
    EXPECT_NEAR(Bf16ToF32(F32ToBf16(v)), v, std::fabs(v) * 4e-3);
  }
  EXPECT_EQ(F32ToBf16(1.00390625f), 0x3F80);  // ties round to even
}

}  // namespace
}  // namespace strata
