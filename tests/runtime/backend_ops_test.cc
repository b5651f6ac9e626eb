// The backend conformance suite (after ggml's test-backend-ops): every op of
// every backend this build has, against a double-precision reference computed
// here from the values the backend actually holds (inputs are read back after
// upload, weights rounded to the backend's dtype). The CPU backend must agree
// to f32 rounding; CUDA to bf16/f16 rounding. CUDA cases skip, saying why,
// where no device is usable.
#include <cmath>
#include <list>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/backend/backend.h"
#include "runtime/dtype.h"
#include "runtime/generate.h"
#include "runtime/kv_cache.h"
#include "runtime/quant.h"
#include "runtime/stage.h"
#include "tests/test_util.h"

namespace strata {
namespace {

class BackendOpsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != "cpu") {
      std::string why;
      if (CudaDeviceCount(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
    }
    BackendOptions options;
    options.device = GetParam() == "cuda_v2" ? "cuda" : GetParam();
    if (GetParam() == "cuda_v2") options.cuda_attention = "v2";
    options.threads = 2;
    auto b = MakeBackend(options, DType::kBF16);
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
  }

  bool cpu() const { return GetParam() == "cpu"; }
  // Relative tolerance of one output: f32 on the CPU, a few bf16 ulps on CUDA.
  double tolerance() const {
    if (cpu()) return 2e-5;
    return backend_->activation_dtype() == DType::kF16 ? 4e-3 : 3e-2;
  }

  // `v` as the backend's dtype holds it.
  float Rounded(float v) const {
    switch (backend_->activation_dtype()) {
      case DType::kF32:
        return v;
      case DType::kBF16:
        return Bf16ToF32(F32ToBf16(v));
      case DType::kF16:
        return F16ToF32(F32ToF16(v));
      case DType::kI32:
      case DType::kF8E4M3:
        break;  // never an activation dtype
    }
    return v;
  }

  std::vector<float> Random(int64_t n, float scale = 1.0f) {
    std::uniform_real_distribution<float> d(-scale, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }

  // A backend buffer holding `host`; `host` becomes the values it holds.
  void* Upload(std::vector<float>* host) {
    auto b = backend_->Allocate(
        static_cast<int64_t>(host->size()) * DTypeSize(backend_->activation_dtype()), "test input");
    EXPECT_TRUE(b.ok()) << b.status();
    void* p = (*b)->data();
    buffers_.push_back(std::move(*b));
    backend_->Upload(host->data(), static_cast<int64_t>(host->size()), p);
    EXPECT_TRUE(backend_->Download(p, static_cast<int64_t>(host->size()), host->data()).ok());
    return p;
  }
  void* Output(int64_t count) {
    std::vector<float> zeros(count, 0.0f);
    return Upload(&zeros);
  }
  std::vector<float> Read(const void* p, int64_t count) {
    std::vector<float> out(count);
    const absl::Status s = backend_->Download(p, count, out.data());
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }
  // A prepared [rows, cols] f32 weight; `host` becomes the rounded values.
  Weight MakeWeight(std::vector<float>* host, int64_t rows, int64_t cols) {
    weights_.push_back(*host);
    Weight w{DType::kF32, rows, cols, weights_.back().data()};
    auto prepared = backend_->PrepareWeight(w, "test weight");
    EXPECT_TRUE(prepared.ok()) << prepared.status();
    if (!cpu()) {
      for (float& v : *host) v = Rounded(v);
    }
    return *prepared;
  }

  void ExpectNear(const std::vector<float>& got, const std::vector<double>& want,
                  const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    double scale = 1e-6;
    for (double w : want) scale = std::max(scale, std::abs(w));
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], tolerance() * (std::abs(want[i]) + 0.05 * scale))
          << what << " element " << i;
    }
  }

  void CheckAttention(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t prefill,
                      int64_t window);

  std::unique_ptr<Backend> backend_;
  std::vector<std::unique_ptr<Buffer>> buffers_;
  std::list<std::vector<float>> weights_;  // host storage the CPU reads in place
  std::mt19937 rng_{1234};
};

// A layout of `chunks` (start_pos, num_tokens) with angles for head_dim.
struct TestStep {
  std::vector<AttentionChunk> chunks;
  std::vector<std::vector<int32_t>> tables;
  std::vector<float> cos, sin;
  int64_t rows = 0, max_positions = 0;
  StepLayout layout(int64_t half) const {
    StepLayout l;
    l.chunks = chunks;
    l.rows = rows;
    l.rope_half = half;
    l.cos = cos.data();
    l.sin = sin.data();
    l.max_positions = max_positions;
    return l;
  }
};

// Chunks of (start, tokens); each sequence gets its own shuffled blocks of 16.
TestStep MakeStep(const std::vector<std::pair<int64_t, int64_t>>& spans, int64_t half,
                  std::vector<int32_t>* free_blocks) {
  TestStep s;
  s.tables.reserve(spans.size());
  for (const auto& [start, tokens] : spans) {
    const int64_t blocks = (start + tokens + 15) / 16;
    std::vector<int32_t> table;
    for (int64_t b = 0; b < blocks; ++b) {
      table.push_back(free_blocks->back());
      free_blocks->pop_back();
    }
    s.tables.push_back(table);
    s.chunks.push_back({s.rows, tokens, start, nullptr});
    for (int64_t i = 0; i < tokens; ++i) {
      for (int64_t j = 0; j < half; ++j) {
        const double angle =
            static_cast<double>(start + i) * std::pow(10000.0, -2.0 * j / (2 * half));
        s.cos.push_back(static_cast<float>(std::cos(angle)));
        s.sin.push_back(static_cast<float>(std::sin(angle)));
      }
    }
    s.rows += tokens;
    s.max_positions = std::max(s.max_positions, start + tokens);
  }
  for (size_t c = 0; c < s.chunks.size(); ++c) s.chunks[c].block_table = s.tables[c].data();
  return s;
}

TEST_P(BackendOpsTest, LinearWithAndWithoutBias) {
  for (int64_t m : {1, 7, 33}) {
    const int64_t k = 96, n = 80;
    std::vector<float> x = Random(m * k), w = Random(n * k, 0.2f), bias = Random(n);
    void* xd = Upload(&x);
    const Weight wd = MakeWeight(&w, n, k);
    const Weight bd = MakeWeight(&bias, 1, n);
    void* out = Output(m * n);
    void* out_bias = Output(m * n);
    backend_->Linear(xd, m, wd, nullptr, out);
    backend_->Linear(xd, m, wd, &bd, out_bias);
    std::vector<double> want(m * n), want_bias(m * n);
    for (int64_t t = 0; t < m; ++t) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < k; ++i) acc += double(x[t * k + i]) * w[j * k + i];
        want[t * n + j] = acc;
        want_bias[t * n + j] = acc + bias[j];
      }
    }
    ExpectNear(Read(out, m * n), want, "linear m=" + std::to_string(m));
    ExpectNear(Read(out_bias, m * n), want_bias, "linear+bias m=" + std::to_string(m));
    std::vector<float> logits(m * n);
    ASSERT_TRUE(backend_->Logits(xd, m, wd, logits.data()).ok());
    ExpectNear(logits, want, "logits m=" + std::to_string(m));
  }
}

// Packed int4 / int8 / FP8 weights (runtime/quant.h), with and without act
// order, a partial last group and a bias, against the dequantized weights in
// double: batches of up to 8 rows (CUDA's GEMV) and larger (dequantize, GEMM).
TEST_P(BackendOpsTest, QuantizedLinearMatchesTheDequantizedWeights) {
  const int64_t k = 160, n = 24;
  for (QuantFormat format : {QuantFormat::kInt4, QuantFormat::kInt8, QuantFormat::kFp8}) {
    for (bool perm : {false, true}) {
      if (format == QuantFormat::kFp8 && perm) continue;  // FP8 has no act order
      auto packed = testing::RandomPackedLinear(format, n, k, 64, perm, 21);
      auto prepared = backend_->PrepareWeight(packed->AsWeight(), "quantized test weight");
      ASSERT_TRUE(prepared.ok()) << prepared.status();
      std::vector<float> bias = Random(n);
      const Weight bd = MakeWeight(&bias, 1, n);
      for (int64_t m : {1, 8, 9, 33}) {
        const std::string what = std::string(QuantFormatName(format)) + (perm ? " perm" : "") +
                                 " m=" + std::to_string(m);
        std::vector<float> x = Random(m * k);
        void* xd = Upload(&x);
        void* out = Output(m * n);
        backend_->Linear(xd, m, *prepared, &bd, out);
        std::vector<double> want(m * n);
        for (int64_t t = 0; t < m; ++t) {
          for (int64_t j = 0; j < n; ++j) {
            double acc = bias[j];
            for (int64_t i = 0; i < k; ++i) {
              // CUDA's GEMM path rounds the dequantized weight to the dtype.
              const float wv = DequantizedAt(packed->AsWeight(), j, i);
              acc += double(x[t * k + i]) * (cpu() ? wv : Rounded(wv));
            }
            want[t * n + j] = acc;
          }
        }
        ExpectNear(Read(out, m * n), want, what);
      }
    }
  }
}

TEST_P(BackendOpsTest, RmsNormAloneAndFusedWithTheResidualAdd) {
  const int64_t m = 5, n = 200;
  const float eps = 1e-5f;
  std::vector<float> x = Random(m * n, 3.0f), delta = Random(m * n), g = Random(n);
  void* xd = Upload(&x);
  void* dd = Upload(&delta);
  const Weight wd = MakeWeight(&g, 1, n);
  void* out = Output(m * n);
  backend_->RmsNorm(xd, m, n, wd, eps, out);
  auto norm = [&](const std::vector<double>& v) {
    std::vector<double> r(m * n);
    for (int64_t t = 0; t < m; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < n; ++i) ss += v[t * n + i] * v[t * n + i];
      const double inv = 1.0 / std::sqrt(ss / n + eps);
      for (int64_t i = 0; i < n; ++i) r[t * n + i] = v[t * n + i] * inv * g[i];
    }
    return r;
  };
  ExpectNear(Read(out, m * n), norm(std::vector<double>(x.begin(), x.end())), "rmsnorm");

  backend_->AddRmsNorm(xd, dd, m, n, wd, eps, out);
  std::vector<double> sum(m * n);
  for (int64_t i = 0; i < m * n; ++i) sum[i] = double(x[i]) + delta[i];
  std::vector<double> sum_rounded(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) sum_rounded[i] = Rounded(static_cast<float>(sum[i]));
  ExpectNear(Read(xd, m * n), sum, "residual after add+rmsnorm");
  ExpectNear(Read(out, m * n), norm(sum_rounded), "add+rmsnorm");
}

TEST_P(BackendOpsTest, ElementwiseOpsEmbeddingAndGather) {
  const int64_t count = 3000;
  std::vector<float> a = Random(count, 4.0f), b = Random(count, 2.0f);
  void* ad = Upload(&a);
  void* bd = Upload(&b);
  backend_->SiluMul(ad, bd, count);
  std::vector<double> want(count);
  for (int64_t i = 0; i < count; ++i) want[i] = a[i] / (1.0 + std::exp(-double(a[i]))) * b[i];
  ExpectNear(Read(ad, count), want, "silu*up");
  std::vector<float> c = Read(ad, count);
  backend_->Add(ad, bd, count);
  for (int64_t i = 0; i < count; ++i) want[i] = double(c[i]) + b[i];
  ExpectNear(Read(ad, count), want, "add");

  // Embedding rows and a row gather need a step to stage their indices.
  std::vector<int32_t> free_blocks = {0, 1, 2, 3};
  TestStep step = MakeStep({{0, 4}}, 2, &free_blocks);
  backend_->BeginStep(step.layout(2));
  const int64_t vocab = 50, cols = 24;
  std::vector<float> table = Random(vocab * cols);
  const Weight td = MakeWeight(&table, vocab, cols);
  const std::vector<int32_t> ids = {7, 0, 49, 7};
  void* emb = Output(4 * cols);
  backend_->Embed(ids, td, emb);
  std::vector<double> want_emb;
  for (int32_t id : ids) {
    for (int64_t j = 0; j < cols; ++j) want_emb.push_back(table[id * cols + j]);
  }
  ExpectNear(Read(emb, 4 * cols), want_emb, "embedding");
  const std::vector<int64_t> rows = {3, 1};
  void* gathered = Output(2 * cols);
  backend_->GatherRows(emb, rows, cols, gathered);
  std::vector<double> want_rows;
  for (int64_t r : rows) {
    for (int64_t j = 0; j < cols; ++j) want_rows.push_back(want_emb[r * cols + j]);
  }
  ExpectNear(Read(gathered, 2 * cols), want_rows, "gather");
}

TEST_P(BackendOpsTest, RopeRotatesEveryHeadByItsRowsPosition) {
  const int64_t heads = 3, head_dim = 16, half = head_dim / 2;
  std::vector<int32_t> free_blocks(64);
  for (int i = 0; i < 64; ++i) free_blocks[i] = i;
  TestStep step = MakeStep({{0, 3}, {41, 1}, {200, 2}}, half, &free_blocks);
  backend_->BeginStep(step.layout(half));
  std::vector<float> x = Random(step.rows * heads * head_dim);
  void* xd = Upload(&x);
  backend_->Rope(xd, heads, head_dim);
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < step.rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        const int64_t base = (r * heads + h) * head_dim;
        const double c = step.cos[r * half + i], s = step.sin[r * half + i];
        want[base + i] = x[base + i] * c - x[base + i + half] * s;
        want[base + i + half] = x[base + i + half] * c + x[base + i] * s;
      }
    }
  }
  ExpectNear(Read(xd, static_cast<int64_t>(x.size())), want, "rope");
}

// Attention over a paged cache filled by an earlier step: a prefill chunk, a
// decode token deep into a long sequence (several flash-decoding splits on
// CUDA), GQA, with and without a sliding window.
// Sequence A: 300 cached tokens, then one decode token at position 300.
// Sequence B: a prefill of `prefill` tokens from position 0 (more than 64
// spans several of the v2 kernels' tiles). Keys and values as the backend
// holds them; a float64 softmax over the cached positions is the reference.
void BackendOpsTest::CheckAttention(int64_t heads, int64_t kv_heads, int64_t head_dim,
                                    int64_t prefill, int64_t window) {
  const int64_t kv_dim = kv_heads * head_dim, rows = 1 + prefill;
  const int64_t num_blocks = 64, elem = DTypeSize(backend_->activation_dtype());
  auto storage =
      backend_->Allocate(KvCache::StorageBytes(1, kv_dim, num_blocks, elem), "test KV cache");
  ASSERT_TRUE(storage.ok()) << storage.status();
  KvLayerView kv;
  kv.base = (*storage)->data();
  kv.num_blocks = num_blocks;
  kv.block_size = 16;
  kv.kv_dim = kv_dim;

  std::vector<int32_t> free_blocks;
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_blocks.push_back((b * 37) % num_blocks);
  TestStep fill = MakeStep({{0, 300}}, head_dim / 2, &free_blocks);
  std::vector<float> k_fill = Random(300 * kv_dim), v_fill = Random(300 * kv_dim);
  backend_->BeginStep(fill.layout(head_dim / 2));
  backend_->WriteKv(Upload(&k_fill), Upload(&v_fill), kv);

  TestStep step;
  step.tables = {fill.tables[0], {}};
  const int64_t blocks_b = (prefill + 15) / 16;
  for (int64_t b = 0; b < blocks_b; ++b) {
    step.tables[1].push_back(free_blocks.back());
    free_blocks.pop_back();
  }
  // Sequence A's decode at position 300 lands in its 19th block, already held.
  step.chunks = {{0, 1, 300, step.tables[0].data()}, {1, prefill, 0, step.tables[1].data()}};
  step.rows = rows;
  step.max_positions = 301;
  step.cos.assign(rows * head_dim / 2, 1.0f);
  step.sin.assign(rows * head_dim / 2, 0.0f);
  backend_->BeginStep(step.layout(head_dim / 2));
  std::vector<float> q = Random(rows * heads * head_dim), k = Random(rows * kv_dim),
                     v = Random(rows * kv_dim);
  void* qd = Upload(&q);
  backend_->WriteKv(Upload(&k), Upload(&v), kv);
  void* out = Output(rows * heads * head_dim);
  AttentionShape shape;
  shape.num_heads = heads;
  shape.num_kv_heads = kv_heads;
  shape.head_dim = head_dim;
  shape.sliding_window = window;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  backend_->Attention(qd, kv, shape, out);

  auto key = [&](int seq, int64_t pos, int64_t i) -> double {
    if (seq == 0) return pos < 300 ? k_fill[pos * kv_dim + i] : k[0 * kv_dim + i];
    return k[(1 + pos) * kv_dim + i];
  };
  auto value = [&](int seq, int64_t pos, int64_t i) -> double {
    if (seq == 0) return pos < 300 ? v_fill[pos * kv_dim + i] : v[0 * kv_dim + i];
    return v[(1 + pos) * kv_dim + i];
  };
  std::vector<double> want(rows * heads * head_dim);
  for (int64_t row = 0; row < rows; ++row) {
    const int seq = row == 0 ? 0 : 1;
    const int64_t pos = row == 0 ? 300 : row - 1;
    const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t off = (h / (heads / kv_heads)) * head_dim;
      std::vector<double> scores;
      double max_score = -INFINITY;
      for (int64_t p = first; p <= pos; ++p) {
        double s = 0;
        for (int64_t i = 0; i < head_dim; ++i) {
          s += double(q[(row * heads + h) * head_dim + i]) * key(seq, p, off + i);
        }
        scores.push_back(s * shape.scale);
        max_score = std::max(max_score, scores.back());
      }
      double total = 0;
      for (double& s : scores) total += (s = std::exp(s - max_score));
      for (int64_t i = 0; i < head_dim; ++i) {
        double acc = 0;
        for (int64_t p = first; p <= pos; ++p) acc += scores[p - first] * value(seq, p, off + i);
        want[(row * heads + h) * head_dim + i] = acc / total;
      }
    }
  }
  ExpectNear(Read(out, rows * heads * head_dim), want,
             "attention, " + std::to_string(heads) + "/" + std::to_string(kv_heads) + " heads of " +
                 std::to_string(head_dim) + ", window " + std::to_string(window));
}

TEST_P(BackendOpsTest, PagedAttentionMatchesSoftmaxOverTheCachedPositions) {
  for (int64_t window : {int64_t{0}, int64_t{50}}) {
    CheckAttention(4, 2, 32, 21, window);
    if (HasFatalFailure()) return;
  }
}

// The shapes of published models (GQA groups of 7 and 8, head_dim 64 and
// 128; the v2 kernels' paths) and prefills over several 64-row tiles.
TEST_P(BackendOpsTest, PagedAttentionOfGroupedHeadsAndLongPrefills) {
  for (int64_t window : {int64_t{0}, int64_t{50}}) {
    CheckAttention(8, 1, 64, 130, window);
    if (HasFatalFailure()) return;
    CheckAttention(28, 4, 128, 150, window);
    if (HasFatalFailure()) return;
    CheckAttention(4, 4, 16, 70, window);
    if (HasFatalFailure()) return;
  }
}

TEST_P(BackendOpsTest, MemoryIsAccounted) {
  const MemoryReport before = backend_->Memory();
  EXPECT_GT(before.total_bytes, 0);
  auto b = backend_->Allocate(int64_t{3} << 20, "accounting probe");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(backend_->Memory().used_bytes, before.used_bytes + (int64_t{3} << 20));
  b->reset();
  EXPECT_EQ(backend_->Memory().used_bytes, before.used_bytes);
}

// cuda_v2: the CUDA backend with STRATA_CUDA_ATTENTION=v2's kernels.
INSTANTIATE_TEST_SUITE_P(Backends, BackendOpsTest, ::testing::Values("cpu", "cuda", "cuda_v2"),
                         [](const auto& info) { return info.param; });

// --- whole stages on CUDA against the CPU ----------------------------------

TEST(CudaStageTest, DeviceErrorsNameTheDevice) {
  const std::string& dir = testing::TestModel("llama");
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  StageOptions options;
  options.device = "gpu0";
  auto bad = Stage::Load(dir, *config, 0, config->num_layers, options);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("\"gpu0\""), std::string::npos) << bad.status();

  std::string why;
  if (CudaDeviceCount(&why) == 0) {
    // The build has the backend (or says it has none); either way a stage on
    // cuda:0 is a clear error, not a crash.
    options.device = "cuda:0";
    auto none = Stage::Load(dir, *config, 0, config->num_layers, options);
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition) << none.status();
    EXPECT_NE(none.status().message().find("cuda:0"), std::string::npos) << none.status();
    return;
  }
  options.device = "cuda:99";
  auto missing = Stage::Load(dir, *config, 0, config->num_layers, options);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("cuda:99"), std::string::npos) << missing.status();

  // A budget too small for the weights fails at load, naming a tensor.
  options.device = "cuda:0";
  options.device_memory_bytes = 40 << 20;  // the cuBLASLt workspace fits; the model does not all
  options.kv_blocks = 1 << 16;
  auto small = Stage::Load(dir, *config, 0, config->num_layers, options);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.status().code(), absl::StatusCode::kResourceExhausted) << small.status();
  EXPECT_NE(small.status().message().find("device budget"), std::string::npos) << small.status();
}

class CudaStageParityTest : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

// Greedy decoding of the tiny models on CUDA (bf16) against the CPU (f32):
// the same tokens for 24 steps, logits within bf16 tolerance. Tiny random
// models have well-separated logits, so bf16 rounding does not flip argmaxes.
// Sets STRATA_CUDA_ATTENTION for the backends made in its scope.
class AttentionVersion {
 public:
  explicit AttentionVersion(const char* version) { setenv("STRATA_CUDA_ATTENTION", version, 1); }
  ~AttentionVersion() { unsetenv("STRATA_CUDA_ATTENTION"); }
};

void ExpectParityWithTheCpu(const std::string& flavour, const std::string& dtype) {
  const std::string& dir = testing::TestModel(flavour, dtype);
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  StageOptions cpu_options, cuda_options;
  cuda_options.device = "cuda:0";
  auto cpu = LocalPipeline::Load(dir, *config, {}, cpu_options);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  auto gpu = LocalPipeline::Load(dir, *config, {config->num_layers / 2}, cuda_options);
  ASSERT_TRUE(gpu.ok()) << gpu.status();

  std::vector<int32_t> prompt = {1};
  for (int i = 1; i < 37; ++i) prompt.push_back(3 + (i * 53) % 400);
  StageBatch batch;
  batch.chunks.push_back({.seq_id = 1,
                          .start_pos = 0,
                          .num_tokens = static_cast<int64_t>(prompt.size()),
                          .token_ids = prompt});
  StageOutput want, got;
  double max_err = 0, max_logit = 0;
  for (int step = 0; step < 24; ++step) {
    ASSERT_TRUE((*cpu)->Step(batch, &want).ok());
    auto s = (*gpu)->Step(batch, &got);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(got.logits.size(), want.logits.size());
    for (size_t i = 0; i < want.logits.size(); ++i) {
      max_err = std::max(max_err, std::abs(double(got.logits[i]) - want.logits[i]));
      max_logit = std::max(max_logit, std::abs(double(want.logits[i])));
    }
    const auto argmax = [](const std::vector<float>& v) {
      return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
    };
    const int32_t token = argmax(want.logits);
    ASSERT_EQ(argmax(got.logits), token) << "step " << step;
    batch.chunks[0] = {.seq_id = 1,
                       .start_pos = static_cast<int64_t>(prompt.size()) + step,
                       .num_tokens = 1,
                       .token_ids = {token}};
  }
  // bf16 keeps 8 significant bits; errors compound over the layers.
  EXPECT_LE(max_err, 0.05 * max_logit + 0.05) << "largest logit " << max_logit;
}

TEST_P(CudaStageParityTest, GreedyTokensAndLogitsMatchTheCpu) {
  std::string why;
  if (CudaDeviceCount(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  for (const char* version : {"v1", "v2"}) {
    SCOPED_TRACE(std::string("attention ") + version);
    AttentionVersion attention(version);
    ExpectParityWithTheCpu(GetParam().first, GetParam().second);
    if (HasFatalFailure()) return;
  }
}

// Decode steps replayed from CUDA graphs give exactly the logits of running
// every op one by one (STRATA_CUDA_GRAPHS=0), for one and for four sequences.
TEST(CudaStageTest, GraphReplayIsBitIdenticalToEagerSteps) {
  std::string why;
  if (CudaDeviceCount(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  const std::string& dir = testing::TestModel("qwen2", "bf16");
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  auto run = [&](bool graphs, int sequences) {
    setenv("STRATA_CUDA_GRAPHS", graphs ? "1" : "0", 1);
    StageOptions options;
    options.device = "cuda:0";
    auto p = LocalPipeline::Load(dir, *config, {}, options);
    EXPECT_TRUE(p.ok()) << p.status();
    std::vector<float> all;
    StageBatch batch;
    StageOutput out;
    for (int s = 0; s < sequences; ++s) {
      StageBatch prefill;
      std::vector<int32_t> prompt = {1, 17, 29 + s, 40};
      prefill.chunks.push_back({.seq_id = static_cast<uint64_t>(s),
                                .start_pos = 0,
                                .num_tokens = 4,
                                .token_ids = prompt});
      EXPECT_TRUE((*p)->Step(prefill, &out).ok());
      batch.chunks.push_back(
          {.seq_id = static_cast<uint64_t>(s), .start_pos = 4, .num_tokens = 1, .token_ids = {7}});
    }
    for (int step = 0; step < 12; ++step) {
      const absl::Status st = (*p)->Step(batch, &out);
      EXPECT_TRUE(st.ok()) << st;
      all.insert(all.end(), out.logits.begin(), out.logits.end());
      for (int s = 0; s < sequences; ++s) {
        const float* row = out.logits.data() + out.logits_row[s] * out.vocab_size;
        batch.chunks[s].token_ids[0] =
            static_cast<int32_t>(std::max_element(row, row + out.vocab_size) - row);
        batch.chunks[s].start_pos += 1;
      }
    }
    unsetenv("STRATA_CUDA_GRAPHS");
    return all;
  };
  for (const char* version : {"v1", "v2"}) {
    AttentionVersion attention(version);
    for (int sequences : {1, 4}) {
      const std::vector<float> eager = run(false, sequences);
      const std::vector<float> graphs = run(true, sequences);
      ASSERT_EQ(eager.size(), graphs.size());
      EXPECT_EQ(eager, graphs) << sequences << " sequence(s), attention " << version;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, CudaStageParityTest,
                         ::testing::Values(std::make_pair("llama", "bf16"),
                                           std::make_pair("qwen2", "f16"),
                                           std::make_pair("mistral", "f32"),
                                           std::make_pair("hunyuan-dense", "bf16")),
                         [](const auto& info) {
                           std::string name = info.param.first + "_" + info.param.second;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

}  // namespace
}  // namespace strata
