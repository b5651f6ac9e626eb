// Quantized checkpoints (runtime/quant.h): the FP8 codec, every CPU kernel
// path against a double-precision reference of the dequantized weights, the
// configs and tensors that must be refused (each error naming the field or
// tensor), and what `strata quantize` writes reading back within the
// format's rounding.
#include "runtime/quant.h"

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/backend/cpu/kernels.h"
#include "runtime/config.h"
#include "runtime/model_layout.h"
#include "runtime/stage.h"
#include "tests/test_util.h"
#include "tools/model_maker.h"
#include "tools/quantizer.h"

namespace strata {
namespace {

TEST(Fp8Test, EveryFiniteCodeRoundTripsAndRoundingIsToNearestEven) {
  for (int c = 0; c < 256; ++c) {
    const auto code = static_cast<uint8_t>(c);
    if ((c & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(Fp8E4M3ToF32(code))) << c;
      continue;
    }
    if (c == 0x80) continue;  // -0 encodes as itself only by sign
    EXPECT_EQ(F32ToFp8E4M3(Fp8E4M3ToF32(code)), code) << c;
  }
  EXPECT_EQ(Fp8E4M3ToF32(0x7e), 448.0f);                // the largest finite value
  EXPECT_EQ(Fp8E4M3ToF32(0x01), std::ldexp(1.0f, -9));  // the smallest subnormal
  EXPECT_EQ(F32ToFp8E4M3(1e6f), 0x7e);                  // saturates
  EXPECT_EQ(F32ToFp8E4M3(-1e6f), 0xfe);
  // 1.0 = 0x38, next 1.125 = 0x39: the midpoint goes to the even code, just
  // above it to the odd one.
  EXPECT_EQ(F32ToFp8E4M3(1.0625f), 0x38);
  EXPECT_EQ(F32ToFp8E4M3(1.0626f), 0x39);
  EXPECT_EQ(F32ToFp8E4M3(1.1875f), 0x3a);  // between 0x39 and 0x3a: to the even 0x3a
}

struct KernelCase {
  QuantFormat format;
  int64_t rows, cols, group;
  bool perm;
};

void PrintTo(const KernelCase& c, std::ostream* os) {
  *os << QuantFormatName(c.format) << " [" << c.rows << ", " << c.cols << "] group " << c.group
      << (c.perm ? " act order" : "");
}

class QuantKernelTest : public ::testing::TestWithParam<KernelCase> {};

TEST_P(QuantKernelTest, EveryPathMatchesTheDequantizedWeightsInDouble) {
  const KernelCase c = GetParam();
  auto packed = testing::RandomPackedLinear(c.format, c.rows, c.cols, c.group, c.perm, 11);
  const Weight w = packed->AsWeight();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<cpu::QuantRowsFn> kernels = {cpu::QuantRowsPortable};
  if (cpu::CpuHasAvx2Fma()) kernels.push_back(cpu::QuantRowsAvx2);
  if (cpu::CpuHasAvx512()) kernels.push_back(cpu::QuantRowsAvx512);
  for (int64_t m : {1, 2, 3, 5, 9, 70}) {
    std::vector<float> x(m * c.cols);
    for (float& v : x) v = dist(rng);
    // What the backend hands the kernel: x in the codes' order, group sums.
    std::vector<float> xp(x.size());
    const int64_t groups = w.groups();
    std::vector<float> xsum(m * groups, 0.0f);
    for (int64_t t = 0; t < m; ++t) {
      for (int64_t j = 0; j < c.cols; ++j) {
        xp[t * c.cols + j] = x[t * c.cols + (c.perm ? w.perm[j] : j)];
        xsum[t * groups + j / c.group] += xp[t * c.cols + j];
      }
    }
    std::vector<double> want(m * c.rows), scale(m * c.rows);
    for (int64_t t = 0; t < m; ++t) {
      for (int64_t n = 0; n < c.rows; ++n) {
        double acc = 0, mag = 0;
        for (int64_t i = 0; i < c.cols; ++i) {
          const double term = double(x[t * c.cols + i]) * DequantizedAt(w, n, i);
          acc += term;
          mag += std::fabs(term);
        }
        want[t * c.rows + n] = acc;
        scale[t * c.rows + n] = mag;
      }
    }
    for (size_t k = 0; k < kernels.size(); ++k) {
      std::vector<float> out(m * c.rows, -1.0f);
      // Two row ranges, as two threads would split them.
      const int64_t mid = c.rows / 2;
      kernels[k](xp.data(), xsum.data(), m, w, 0, mid, out.data(), c.rows);
      kernels[k](xp.data(), xsum.data(), m, w, mid, c.rows, out.data(), c.rows);
      for (int64_t i = 0; i < m * c.rows; ++i) {
        ASSERT_NEAR(out[i], want[i], 2e-6 * scale[i] + 1e-6)
            << "kernel " << k << " (0 portable, 1 avx2, 2 avx512) m=" << m << " element " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantKernelTest,
                         ::testing::Values(KernelCase{QuantFormat::kInt4, 14, 160, 64, false},
                                           KernelCase{QuantFormat::kInt4, 9, 256, 32, true},
                                           KernelCase{QuantFormat::kInt4, 8, 128, 128, false},
                                           KernelCase{QuantFormat::kInt8, 13, 160, 32, true},
                                           KernelCase{QuantFormat::kInt8, 6, 96, 96, false},
                                           KernelCase{QuantFormat::kFp8, 11, 192, 128, false},
                                           KernelCase{QuantFormat::kFp8, 5, 64, 64, false}),
                         [](const auto& info) {
                           return std::string(QuantFormatName(info.param.format)) + "_" +
                                  std::to_string(info.param.rows) + "x" +
                                  std::to_string(info.param.cols) + "_g" +
                                  std::to_string(info.param.group) +
                                  (info.param.perm ? "_perm" : "");
                         });

// --- configs -----------------------------------------------------------------

absl::Status ParseText(const std::string& text) {
  auto json = ParseJson(text, "test");
  if (!json.ok()) return json.status();
  return ParseQuantConfig(*json, "config.json").status();
}

TEST(QuantConfigTest, PublishedConfigsParse) {
  auto gptq = ParseJson(
      R"({"quant_method":"gptq","bits":4,"group_size":128,"desc_act":true,"sym":false})", "t");
  ASSERT_TRUE(gptq.ok());
  auto q = ParseQuantConfig(*gptq, "config.json");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->method, QuantMethod::kGptq);
  EXPECT_EQ(q->group_size, 128);
  EXPECT_TRUE(q->desc_act);
  EXPECT_FALSE(q->sym);
  EXPECT_EQ(q->Describe(), "GPTQ int4, group 128, act order, asymmetric");
  EXPECT_TRUE(ParseText(R"({"quant_method":"gptq","bits":8,"group_size":-1})").ok());
  EXPECT_TRUE(ParseText(R"({"quant_method":"awq","bits":4,"group_size":128,"zero_point":true,
                             "version":"GEMM","modules_to_not_convert":null})")
                  .ok());
  EXPECT_TRUE(ParseText(R"({"quant_method":"fp8","activation_scheme":"dynamic",
                             "weight_block_size":[128,128]})")
                  .ok());
  EXPECT_TRUE(ParseText(R"({"quant_method":"compressed-tensors","config_groups":{"group_0":{
      "targets":["Linear"],"weights":{"num_bits":8,"type":"float","strategy":"channel"}}},
      "ignore":["lm_head"]})")
                  .ok());
}

TEST(QuantConfigTest, BadConfigsNameTheField) {
  struct Bad {
    std::string text, field;
  };
  const std::vector<Bad> bad = {
      {R"({"quant_method":"bitsandbytes"})", "\"quant_method\""},
      {R"({"bits":4})", "\"quant_method\""},
      {R"({"quant_method":"gptq","bits":3,"group_size":128})", "\"bits\""},
      {R"({"quant_method":"gptq","bits":4})", "\"group_size\""},
      {R"({"quant_method":"gptq","bits":4,"group_size":100})", "\"group_size\""},
      {R"({"quant_method":"gptq","bits":4,"group_size":16})", "\"group_size\""},
      {R"({"quant_method":"gptq","bits":4,"group_size":128,"checkpoint_format":"marlin"})",
       "\"checkpoint_format\""},
      {R"({"quant_method":"awq","bits":8,"group_size":128})", "\"bits\""},
      {R"({"quant_method":"awq","bits":4,"group_size":128,"version":"gemv"})", "\"version\""},
      {R"({"quant_method":"fp8","weight_block_size":[128]})", "\"weight_block_size\""},
      {R"({"quant_method":"fp8","activation_scheme":"sometimes"})", "\"activation_scheme\""},
      {R"({"quant_method":"compressed-tensors","config_groups":{"g":{"weights":{"num_bits":4,
          "type":"int"}}}})",
       "config_groups.g.weights"},
  };
  for (const Bad& b : bad) {
    const absl::Status s = ParseText(b.text);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << b.text;
    EXPECT_NE(s.message().find(b.field), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("config.json"), std::string::npos) << s.message();
  }
}

// --- tensors -----------------------------------------------------------------

// A one-module checkpoint of `tensors` and the module's load.
absl::Status LoadModule(const std::vector<TensorToWrite>& tensors, const std::string& config,
                        int64_t rows, int64_t cols) {
  const std::string dir = testing::FreshDir("module");
  EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  auto json = ParseJson(config, "test");
  EXPECT_TRUE(json.ok());
  QuantConfig q;
  if (!config.empty() && config != "{}") {
    auto parsed = ParseQuantConfig(*json, "config.json");
    if (!parsed.ok()) return parsed.status();
    q = *parsed;
  }
  auto ck = Checkpoint::Open(dir);
  if (!ck.ok()) return ck.status();
  return LoadQuantizedLinear(**ck, q, "m", rows, cols).status();
}

TensorToWrite I32(const std::string& name, std::vector<int64_t> shape, int32_t fill = 0) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<int32_t> v(n, fill);
  TensorToWrite t{name, DType::kI32, shape, {}};
  t.bytes.assign(reinterpret_cast<uint8_t*>(v.data()),
                 reinterpret_cast<uint8_t*>(v.data()) + n * 4);
  return t;
}

TensorToWrite F16(const std::string& name, std::vector<int64_t> shape, float fill = 0.01f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<uint16_t> v(n, F32ToF16(fill));
  TensorToWrite t{name, DType::kF16, shape, {}};
  t.bytes.assign(reinterpret_cast<uint8_t*>(v.data()),
                 reinterpret_cast<uint8_t*>(v.data()) + n * 2);
  return t;
}

constexpr char kGptq4[] = R"({"quant_method":"gptq","bits":4,"group_size":32,"desc_act":true})";

TEST(QuantTensorTest, AWellFormedGptqModuleLoads) {
  // [rows 16, cols 64]: qweight [64/8, 16], 2 groups.
  const absl::Status s = LoadModule({I32("m.qweight", {8, 16}), I32("m.qzeros", {2, 2}),
                                     F16("m.scales", {2, 16}), I32("m.g_idx", {64})},
                                    kGptq4, 16, 64);
  // All-zero g_idx puts 64 columns in group 0 of 32: refused, naming g_idx.
  EXPECT_NE(s.message().find("m.g_idx"), std::string::npos) << s;
  std::vector<int32_t> g(64);
  for (int i = 0; i < 64; ++i) g[i] = (i * 7 % 64) / 32;  // a permutation's groups
  TensorToWrite g_idx = I32("m.g_idx", {64});
  std::memcpy(g_idx.bytes.data(), g.data(), 256);
  EXPECT_TRUE(LoadModule({I32("m.qweight", {8, 16}), I32("m.qzeros", {2, 2}),
                          F16("m.scales", {2, 16}), g_idx},
                         kGptq4, 16, 64)
                  .ok());
}

TEST(QuantTensorTest, BadTensorsNameTheTensor) {
  struct Bad {
    std::vector<TensorToWrite> tensors;
    std::string config, names;
  };
  const std::vector<Bad> bad = {
      // scales missing
      {{I32("m.qweight", {8, 16}), I32("m.qzeros", {2, 2}), I32("m.g_idx", {64})},
       kGptq4,
       "m.scales"},
      // qzeros of the wrong shape
      {{I32("m.qweight", {8, 16}), I32("m.qzeros", {3, 2}), F16("m.scales", {2, 16}),
        I32("m.g_idx", {64})},
       kGptq4,
       "m.qzeros"},
      // qweight packed along the wrong axis (AWQ's shape under a GPTQ config)
      {{I32("m.qweight", {64, 2}), I32("m.qzeros", {2, 2}), F16("m.scales", {2, 16}),
        I32("m.g_idx", {64})},
       kGptq4,
       "m.qweight"},
      // g_idx missing while desc_act is true
      {{I32("m.qweight", {8, 16}), I32("m.qzeros", {2, 2}), F16("m.scales", {2, 16})},
       kGptq4,
       "m.g_idx"},
      // g_idx beyond the groups
      {{I32("m.qweight", {8, 16}), I32("m.qzeros", {2, 2}), F16("m.scales", {2, 16}),
        I32("m.g_idx", {64}, 5)},
       kGptq4,
       "m.g_idx"},
      // scales of an integer dtype
      {{I32("m.qweight", {8, 16}), I32("m.qzeros", {2, 2}), I32("m.scales", {2, 16}),
        I32("m.g_idx", {64})},
       kGptq4,
       "m.scales"},
      // GPTQ tensors without a quantization_config
      {{I32("m.qweight", {8, 16}), I32("m.qzeros", {2, 2}), F16("m.scales", {2, 16})},
       "{}",
       "m.qweight"},
      // an FP8 weight without its scale
      {{TensorToWrite{"m.weight", DType::kF8E4M3, {16, 64}, std::vector<uint8_t>(1024, 0x38)}},
       R"({"quant_method":"fp8"})",
       "m.weight_scale"},
      // an FP8 weight without a quantization_config
      {{TensorToWrite{"m.weight", DType::kF8E4M3, {16, 64}, std::vector<uint8_t>(1024, 0x38)}},
       "{}",
       "m.weight"},
      // block scales of the wrong shape
      {{TensorToWrite{"m.weight", DType::kF8E4M3, {16, 64}, std::vector<uint8_t>(1024, 0x38)},
        TensorToWrite{"m.weight_scale_inv", DType::kF32, {2, 2}, std::vector<uint8_t>(16, 0)}},
       R"({"quant_method":"fp8","weight_block_size":[128,128]})",
       "m.weight_scale_inv"},
  };
  for (const Bad& b : bad) {
    const absl::Status s = LoadModule(b.tensors, b.config, 16, 64);
    EXPECT_FALSE(s.ok()) << b.names;
    EXPECT_NE(s.message().find(b.names), std::string::npos) << s.message();
  }
}

// --- what the quantizer writes -------------------------------------------------

TEST(QuantizerTest, EveryMethodReadsBackWithinItsRounding) {
  const std::string& plain = testing::TestModel("llama");
  auto config = LoadModelConfig(plain);
  ASSERT_TRUE(config.ok());
  auto float_ck = Checkpoint::Open(plain);
  ASSERT_TRUE(float_ck.ok());
  for (const std::string& method : QuantizeMethods()) {
    QuantizeSpec spec;
    spec.method = method;
    spec.group_size = 32;
    const std::string dir = testing::FreshDir(method);
    ASSERT_TRUE(QuantizeCheckpoint(plain, dir, spec).ok()) << method;
    auto qconfig = LoadModelConfig(dir);
    ASSERT_TRUE(qconfig.ok()) << qconfig.status();
    auto ck = Checkpoint::Open(dir);
    ASSERT_TRUE(ck.ok());
    const TensorSpec down = LayerTensors(*config, 1)[8];  // mlp.down_proj [64, 160]
    ASSERT_EQ(down.name, "model.layers.1.mlp.down_proj.weight");
    auto packed = LoadQuantizedLinear(**ck, qconfig->quant, ModuleOf(down), 64, 160);
    ASSERT_TRUE(packed.ok()) << packed.status();
    ASSERT_NE(*packed, nullptr) << method;
    auto original = (*float_ck)->Get(down.name, down.shape);
    ASSERT_TRUE(original.ok());
    const Weight w = (*packed)->AsWeight();
    double worst = 0, largest = 0;
    for (int64_t r = 0; r < 64; ++r) {
      for (int64_t c = 0; c < 160; ++c) {
        const double want = ElementAsF32(original->dtype, original->data, r * 160 + c);
        worst = std::max(worst, std::fabs(DequantizedAt(w, r, c) - want));
        largest = std::max(largest, std::fabs(want));
      }
    }
    // About half a step of the grid (a step is 2/15 of a group's largest
    // magnitude for 4 bits, 2/255 for 8; GPTQ's symmetric grid stops one
    // step short of +max, and the f16 scale's rounding adds a little); FP8
    // keeps 3 mantissa bits (1/16 relative).
    const double bound = method == "gptq-int4" || method == "awq-int4" ? largest * 2 / 15 * 0.6
                         : method == "gptq-int8"                       ? largest * 2 / 255 * 0.6
                                                                       : largest / 16;
    EXPECT_LE(worst, bound) << method;
    EXPECT_GT(worst, 0) << method << ": quantization changed nothing";
  }
}

TEST(QuantizerTest, RefusesWhatItCannotWrite) {
  const std::string& plain = testing::TestModel("llama");
  QuantizeSpec spec;
  spec.method = "gptq-int3";
  EXPECT_NE(QuantizeCheckpoint(plain, testing::FreshDir("q"), spec).message().find("--method"),
            std::string::npos);
  spec.method = "awq-int4";
  spec.group_size = 48;
  EXPECT_NE(QuantizeCheckpoint(plain, testing::FreshDir("q"), spec).message().find("--group-size"),
            std::string::npos);
  // An already quantized checkpoint.
  spec.group_size = 32;
  const std::string once = testing::FreshDir("once");
  ASSERT_TRUE(QuantizeCheckpoint(plain, once, spec).ok());
  EXPECT_NE(QuantizeCheckpoint(once, testing::FreshDir("twice"), spec).message().find("already"),
            std::string::npos);
}

// The planner and `strata inspect` see what a stage holds: a packed layer
// weighs what the stage's weights take on the device.
TEST(QuantizerTest, MeasuredBytesAreTheLoadedBytes) {
  ModelSpec spec;
  spec.quant.method = "gptq-int4";
  spec.quant.group_size = 32;
  const std::string dir = testing::FreshDir("measure");
  ASSERT_TRUE(MakeModel(spec, dir).ok());
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok());
  auto ck = Checkpoint::Open(dir);
  ASSERT_TRUE(ck.ok());
  auto bytes = MeasureModel(*config, **ck);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const ModelBytes plain = *MeasureModel(*LoadModelConfig(testing::TestModel("llama")),
                                         **Checkpoint::Open(testing::TestModel("llama")));
  // f32 layers of 4 bytes per weight against 0.5 byte plus 8 per 32 weights.
  EXPECT_LT(bytes->layer_bytes[0] * 5, plain.layer_bytes[0]);
  StageOptions options;
  options.threads = 1;
  auto stage = Stage::Load(dir, *config, 0, config->num_layers, options);
  ASSERT_TRUE(stage.ok()) << stage.status();
}

}  // namespace
}  // namespace strata
