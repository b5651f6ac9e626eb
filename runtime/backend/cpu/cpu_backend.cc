// The CPU implementation of Backend: f32 activations in host memory, weights
// read in their checkpoint dtype straight from the memory-mapped file.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cpu/kernels.h"
#include "runtime/backend/cpu/thread_pool.h"
#include "runtime/status_macros.h"

namespace strata {
namespace {

// Anonymous mappings: zero pages that cost nothing until touched, so a KV
// cache sized for the worst case only occupies what sequences use.
class HostBuffer : public Buffer {
 public:
  HostBuffer(void* data, int64_t bytes, std::atomic<int64_t>* used)
      : data_(data), bytes_(bytes), used_(used) {
    used_->fetch_add(bytes_);
  }
  ~HostBuffer() override {
    munmap(data_, static_cast<size_t>(bytes_));
    used_->fetch_sub(bytes_);
  }
  void* data() const override { return data_; }
  int64_t bytes() const override { return bytes_; }

 private:
  void* data_;
  int64_t bytes_;
  std::atomic<int64_t>* used_;
};

int64_t MemAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

class CpuBackend : public Backend {
 public:
  CpuBackend(int threads, cpu::CpuKernels kernels)
      : pool_(threads > 0 ? threads : AvailableCores()),
        kernels_(kernels),
        name_(absl::StrCat("cpu-", cpu::CpuKernelsName(kernels))),
        linear_rows_(cpu::LinearRowsOf(kernels)),
        quant_rows_(cpu::QuantRowsOf(kernels)),
        scores_(pool_.size()) {}

  std::string_view name() const override { return name_; }
  int threads() const override { return pool_.size(); }
  DType activation_dtype() const override { return DType::kF32; }
  void Rest() override { pool_.Rest(); }

  MemoryReport Memory() const override {
    MemoryReport r;
    r.device = "cpu";
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    r.total_bytes = pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
    r.free_bytes = MemAvailableBytes();
    r.used_bytes = used_.load();
    return r;
  }

  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(int64_t bytes, std::string_view what) override {
    if (bytes <= 0) bytes = 1;
    void* p = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cpu: cannot allocate ", bytes, " bytes for ", std::string(what), ": ",
                       std::strerror(errno), " (this backend holds ", used_.load(), " bytes)"));
    }
    return std::unique_ptr<Buffer>(new HostBuffer(p, bytes, &used_));
  }

  // out[t * ldo + n] += bias[n] for n in [b, e) and every t < m (no bias: nothing).
  static void AddBias(const Weight* bias, int64_t m, int64_t ldo, int64_t b, int64_t e,
                      float* out) {
    if (bias == nullptr) return;
    for (int64_t t = 0; t < m; ++t) {
      float* row = out + t * ldo;
      for (int64_t n = b; n < e; ++n) row[n] += cpu::WeightAt(*bias, n);
    }
  }

  absl::StatusOr<Weight> PrepareWeight(const Weight& host, std::string_view) override {
    return host;
  }

  absl::StatusOr<Weight> PrepareMatrix(const Weight& prepared, std::string_view name) override {
    if (!cpu::UsesBf16Panels(kernels_) || prepared.dtype != DType::kBF16 ||
        prepared.quant != QuantFormat::kNone || prepared.rows < 1 || prepared.cols < 2) {
      return prepared;
    }
    const int64_t elements = cpu::Bf16PanelElements(prepared.rows, prepared.cols);
    ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buffer,
                     Allocate(elements * 2, absl::StrCat(std::string(name), " (bf16 panels)")));
    // Decode streams every panel once per step: 2 MiB pages spare it a TLB
    // miss every 4 KiB (a hint; without transparent huge pages nothing changes).
    madvise(buffer->data(), static_cast<size_t>(buffer->bytes()), MADV_HUGEPAGE);
    uint16_t* panels = static_cast<uint16_t*>(buffer->data());
    const uint16_t* src = static_cast<const uint16_t*>(prepared.data);
    pool_.ParallelFor(cpu::Bf16Panels(prepared.rows), 1, [&](int64_t b, int64_t e, int) {
      cpu::PackBf16Panels(src, prepared.rows, prepared.cols, b, e, panels);
    });
    Weight w = prepared;
    w.bf16_panels = panels;
    matrices_.push_back(std::move(buffer));
    return w;
  }

  void Upload(const float* host, int64_t count, void* dst) override {
    std::copy_n(host, count, static_cast<float*>(dst));
  }
  absl::Status Download(const void* src, int64_t count, float* host) override {
    std::copy_n(static_cast<const float*>(src), count, host);
    return absl::OkStatus();
  }
  void GatherRows(const void* src, std::span<const int64_t> rows, int64_t cols,
                  void* dst) override {
    const float* s = static_cast<const float*>(src);
    float* d = static_cast<float*>(dst);
    for (size_t i = 0; i < rows.size(); ++i) std::copy_n(s + rows[i] * cols, cols, d + i * cols);
  }

  void BeginStep(const StepLayout& layout) override {
    layout_ = layout;
    row_chunk_.resize(layout.rows);  // capacity is kept across steps
    for (size_t c = 0; c < layout.chunks.size(); ++c) {
      const AttentionChunk& ch = layout.chunks[c];
      for (int64_t i = 0; i < ch.num_tokens; ++i) row_chunk_[ch.row_begin + i] = c;
    }
  }

  void Linear(const void* xv, int64_t m, const Weight& w, const Weight* bias, void* outv) override {
    const float* x = static_cast<const float*>(xv);
    float* out = static_cast<float*>(outv);
    if (w.quant != QuantFormat::kNone) {
      QuantLinear(x, m, w, bias, out);
      return;
    }
    if (w.bf16_panels != nullptr) {
      // amx-bf16: activations split into bf16 halves once, then panels in
      // chunks, about 8 per thread, to whichever thread is free: on shared
      // cores one thread often runs slower, and an even split would leave the
      // other waiting at the end of every call.
      x_bf16_.resize(static_cast<size_t>(cpu::SplitRows(m) * cpu::Bf16PairStride(w.cols) * 2));
      cpu::SplitRowsToBf16(x, m, w.cols, x_bf16_.data());
      const int64_t panels = cpu::Bf16Panels(w.rows);
      const int64_t chunk = std::max<int64_t>(1, panels / (8 * pool_.size()));
      std::atomic<int64_t> next{0};
      pool_.ParallelFor(pool_.size(), 1, [&](int64_t, int64_t, int) {
        for (int64_t b; (b = next.fetch_add(chunk, std::memory_order_relaxed)) < panels;) {
          const int64_t e = std::min(panels, b + chunk);
          cpu::LinearPanelsAmx(x_bf16_.data(), m, w, b, e, out, w.rows);
          AddBias(bias, m, w.rows, b * cpu::kBf16PanelRows,
                  std::min(w.rows, e * cpu::kBf16PanelRows), out);
        }
      });
      return;
    }
    // Rows are split in multiples of 12 so both the 3- and 4-row tiles divide them.
    pool_.ParallelFor(w.rows, 12, [&](int64_t b, int64_t e, int) {
      linear_rows_(x, m, w, b, e, out, w.rows);
      AddBias(bias, m, w.rows, b, e, out);
    });
  }

  // x gathered into the codes' column order when the weight has act order,
  // and its per-group sums, once per call; then the rows split as above.
  void QuantLinear(const float* x, int64_t m, const Weight& w, const Weight* bias, float* out) {
    const int64_t k = w.cols, groups = w.groups();
    if (w.perm != nullptr) {
      quant_x_.resize(static_cast<size_t>(m * k));  // capacity is kept across calls
      for (int64_t t = 0; t < m; ++t) {
        for (int64_t j = 0; j < k; ++j) quant_x_[t * k + j] = x[t * k + w.perm[j]];
      }
      x = quant_x_.data();
    }
    if (w.offsets != nullptr) {  // FP8 has no offsets, and its kernels never read the sums
      quant_xsum_.assign(static_cast<size_t>(m * groups), 0.0f);
      for (int64_t t = 0; t < m; ++t) {
        for (int64_t j = 0; j < k; ++j) quant_xsum_[t * groups + j / w.group_size] += x[t * k + j];
      }
    }
    pool_.ParallelFor(w.rows, 12, [&](int64_t b, int64_t e, int) {
      quant_rows_(x, quant_xsum_.data(), m, w, b, e, out, w.rows);
      AddBias(bias, m, w.rows, b, e, out);
    });
  }

  absl::Status Logits(const void* x, int64_t m, const Weight& w, float* host_out) override {
    Linear(x, m, w, nullptr, host_out);
    return absl::OkStatus();
  }

  absl::Status Argmax(const void* x, int64_t m, const Weight& w, int32_t* host_ids) override {
    logits_.resize(static_cast<size_t>(m * w.rows));
    Linear(x, m, w, nullptr, logits_.data());
    for (int64_t r = 0; r < m; ++r) {
      const float* row = logits_.data() + r * w.rows;
      host_ids[r] = static_cast<int32_t>(std::max_element(row, row + w.rows) - row);
    }
    return absl::OkStatus();
  }

  void AddRmsNorm(void* acc, const void* delta, int64_t m, int64_t n, const Weight& weight,
                  float eps, void* out) override {
    Add(acc, delta, m * n);
    RmsNorm(acc, m, n, weight, eps, out);
  }

  void RmsNorm(const void* xv, int64_t m, int64_t n, const Weight& weight, float eps,
               void* outv) override {
    const float* x = static_cast<const float*>(xv);
    float* out = static_cast<float*>(outv);
    auto rows = [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) {
        const float* xr = x + t * n;
        float* o = out + t * n;
        float ss = 0;
        for (int64_t i = 0; i < n; ++i) ss += xr[i] * xr[i];
        const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
        for (int64_t i = 0; i < n; ++i) o[i] = cpu::WeightAt(weight, i) * (xr[i] * inv);
      }
    };
    if (m * n < 65536) {
      rows(0, m, 0);
    } else {
      pool_.ParallelFor(m, 1, rows);
    }
  }

  void Embed(std::span<const int32_t> ids, const Weight& table, void* outv) override {
    float* out = static_cast<float*>(outv);
    const int64_t n = table.cols;
    for (size_t i = 0; i < ids.size(); ++i) {
      const int64_t base = static_cast<int64_t>(ids[i]) * n;
      for (int64_t j = 0; j < n; ++j) out[i * n + j] = cpu::WeightAt(table, base + j);
    }
  }

  void SiluMul(void* gatev, const void* upv, int64_t count) override {
    float* gate = static_cast<float*>(gatev);
    const float* up = static_cast<const float*>(upv);
    pool_.ParallelFor(count, 4096, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        const float g = gate[i];
        gate[i] = g / (1.0f + std::exp(-g)) * up[i];
      }
    });
  }

  void Add(void* accv, const void* xv, int64_t count) override {
    float* acc = static_cast<float*>(accv);
    const float* x = static_cast<const float*>(xv);
    for (int64_t i = 0; i < count; ++i) acc[i] += x[i];
  }

  void Rope(void* xv, int64_t heads, int64_t head_dim) override {
    float* x = static_cast<float*>(xv);
    const int64_t half = head_dim / 2;
    for (int64_t t = 0; t < layout_.rows; ++t) {
      const float* c = layout_.cos + t * half;
      const float* s = layout_.sin + t * half;
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * c[i] - b * s[i];
          v[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  }

  void WriteKv(const void* kp, const void* vp, const KvLayerView& kv) override {
    const float* k = static_cast<const float*>(kp);
    const float* v = static_cast<const float*>(vp);
    float* base = static_cast<float*>(kv.base);
    for (const AttentionChunk& ch : layout_.chunks) {
      for (int64_t i = 0; i < ch.num_tokens; ++i) {
        const int64_t pos = ch.start_pos + i;
        const int32_t block = ch.block_table[pos / kv.block_size];
        const int64_t slot = pos % kv.block_size;
        const int64_t row = ch.row_begin + i;
        std::copy_n(k + row * kv.kv_dim, kv.kv_dim, base + kv.key_offset(block, slot));
        std::copy_n(v + row * kv.kv_dim, kv.kv_dim, base + kv.value_offset(block, slot));
      }
    }
  }

  void Attention(const void* qv, const KvLayerView& kv, const AttentionShape& shape,
                 void* outv) override {
    const float* q = static_cast<const float*>(qv);
    float* out = static_cast<float*>(outv);
    const int64_t heads = shape.num_heads;
    pool_.ParallelFor(layout_.rows * heads, 1, [&](int64_t b, int64_t e, int thread) {
      for (int64_t item = b; item < e; ++item) {
        const int64_t row = item / heads, h = item % heads;
        AttendOne(q, layout_.chunks[row_chunk_[row]], row, h, kv, shape, &scores_[thread], out);
      }
    });
  }

 private:
  // dot(a, b) over d elements as 16 interleaved partial sums, added pairwise
  // at the end: a fixed order (every row of every batch gets the same), and
  // one the compiler turns into vector code, unlike a single running sum.
  static float Dot(const float* a, const float* b, int64_t d) {
    constexpr int kLanes = 16;
    float acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= d; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
    }
    for (int l = 0; i < d; ++i, ++l) acc[l] += a[i] * b[i];
    for (int width = kLanes / 2; width > 0; width /= 2) {
      for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
    }
    return acc[0];
  }

  static void AttendOne(const float* q, const AttentionChunk& ch, int64_t row, int64_t h,
                        const KvLayerView& kv, const AttentionShape& shape,
                        std::vector<float>* scores, float* out) {
    const int64_t d = shape.head_dim;
    const int64_t group = shape.num_heads / shape.num_kv_heads;
    const int64_t kv_off = (h / group) * d;
    const int64_t pos = ch.start_pos + (row - ch.row_begin);
    const int64_t first =
        shape.sliding_window > 0 ? std::max<int64_t>(0, pos - shape.sliding_window + 1) : 0;
    const int64_t count = pos - first + 1;
    if (static_cast<int64_t>(scores->size()) < count) scores->resize(count);
    const float* qv = q + (row * shape.num_heads + h) * d;
    const float* base = static_cast<const float*>(kv.base);
    float max_score = -INFINITY;
    for (int64_t j = 0; j < count; ++j) {
      const int64_t p = first + j;
      const float* kr =
          base + kv.key_offset(ch.block_table[p / kv.block_size], p % kv.block_size) + kv_off;
      const float s = Dot(qv, kr, d) * shape.scale;
      (*scores)[j] = s;
      max_score = std::max(max_score, s);
    }
    float total = 0;
    for (int64_t j = 0; j < count; ++j) {
      (*scores)[j] = std::exp((*scores)[j] - max_score);
      total += (*scores)[j];
    }
    float* o = out + (row * shape.num_heads + h) * d;
    std::fill(o, o + d, 0.f);
    const float inv = 1.0f / total;
    auto value = [&](int64_t j) {
      const int64_t p = first + j;
      return base + kv.value_offset(ch.block_table[p / kv.block_size], p % kv.block_size) + kv_off;
    };
    // Four positions per pass over o (a quarter of its loads and stores).
    int64_t j = 0;
    for (; j + 4 <= count; j += 4) {
      const float* v0 = value(j);
      const float* v1 = value(j + 1);
      const float* v2 = value(j + 2);
      const float* v3 = value(j + 3);
      const float w0 = (*scores)[j] * inv, w1 = (*scores)[j + 1] * inv;
      const float w2 = (*scores)[j + 2] * inv, w3 = (*scores)[j + 3] * inv;
      for (int64_t i = 0; i < d; ++i) {
        o[i] += (w0 * v0[i] + w1 * v1[i]) + (w2 * v2[i] + w3 * v3[i]);
      }
    }
    for (; j < count; ++j) {
      const float* vr = value(j);
      const float wgt = (*scores)[j] * inv;
      for (int64_t i = 0; i < d; ++i) o[i] += wgt * vr[i];
    }
  }

  ThreadPool pool_;
  const cpu::CpuKernels kernels_;
  const std::string name_;
  cpu::LinearRowsFn linear_rows_;
  cpu::QuantRowsFn quant_rows_;
  std::vector<float> quant_x_, quant_xsum_;        // QuantLinear's scratch
  std::vector<uint16_t> x_bf16_;                   // Linear's split activations (bf16 panels)
  std::vector<std::unique_ptr<Buffer>> matrices_;  // PrepareMatrix's panel copies
  std::vector<std::vector<float>> scores_;         // per-thread softmax scratch
  std::vector<size_t> row_chunk_;                  // the step's chunk of each row
  std::vector<float> logits_;                      // Argmax's scratch
  StepLayout layout_;
  std::atomic<int64_t> used_{0};
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCpuBackend(int threads, const std::string& kernels) {
  std::string name = kernels, source = "cpu_kernels";
  if (name.empty()) {
    const char* env = std::getenv("STRATA_CPU_KERNELS");
    name = env != nullptr ? env : "";
    source = "STRATA_CPU_KERNELS";
  }
  ASSIGN_OR_RETURN(cpu::CpuKernels set, cpu::ParseCpuKernels(name, source));
  return std::make_unique<CpuBackend>(threads, set);
}

}  // namespace strata
