// Every CPU kernel variant against a double-precision reference, for each
// weight dtype and for shapes with tails (k not a multiple of 8, odd rows).
#include "runtime/backend/cpu/kernels.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "runtime/backend/backend.h"

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
  std::vector<cpu::LinearRowsFn> kernels = {cpu::LinearRowsPortable};
  if (cpu::CpuHasAvx2Fma()) kernels.push_back(cpu::LinearRowsAvx2);
  if (cpu::CpuHasAvx512()) kernels.push_back(cpu::LinearRowsAvx512);
  kernels.push_back(cpu::SelectLinearRows());  // what the backend uses
  for (auto kernel : kernels) {
    std::vector<float> out(shape.m * shape.n, -7.f);
    kernel(x.data(), shape.m, w, 0, shape.n, out.data(), shape.n);
    for (int64_t t = 0; t < shape.m; ++t) {
      for (int64_t n = 0; n < shape.n; ++n) {
        double ref = 0;
        for (int64_t i = 0; i < shape.k; ++i)
          ref += double(x[t * shape.k + i]) * wf[n * shape.k + i];
        ASSERT_NEAR(out[t * shape.n + n], ref, 1e-4 * std::sqrt(double(shape.k)))
            << "t=" << t << " n=" << n;
      }
    }
  }
  // The whole backend (threads, bias) agrees with the kernel.
  auto backend = MakeCpuBackend(2);
  std::vector<float> bias(shape.n, 0.5f), out(shape.m * shape.n), plain(shape.m * shape.n);
  Weight bias_w{DType::kF32, 1, static_cast<int64_t>(bias.size()), bias.data()};
  backend->Linear(x.data(), shape.m, w, &bias_w, out.data());
  kernels.back()(x.data(), shape.m, w, 0, shape.n, plain.data(), shape.n);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], plain[i] + 0.5f);
}

INSTANTIATE_TEST_SUITE_P(
    DTypesAndShapes, LinearKernelTest,
    ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values(Shape{1, 37, 64}, Shape{3, 13, 1027}, Shape{7, 25, 520},
                                         Shape{70, 9, 33})));

TEST(LinearKernelTest, OneTokenEqualsTheSameTokenInABatch) {
  // Decode and prefill take different tiles; the result must not change.
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> dist(-1, 1);
  const int64_t m = 9, n = 24, k = 1100;
  std::vector<float> x(m * k), wv(n * k);
  for (float& v : x) v = dist(rng);
  for (float& v : wv) v = dist(rng);
  Weight w{DType::kF32, n, k, wv.data()};
  auto backend = MakeCpuBackend(2);
  std::vector<float> batch(m * n), single(n);
  backend->Linear(x.data(), m, w, nullptr, batch.data());
  for (int64_t t = 0; t < m; ++t) {
    backend->Linear(x.data() + t * k, 1, w, nullptr, single.data());
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(single[j], batch[t * n + j]);
  }
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
