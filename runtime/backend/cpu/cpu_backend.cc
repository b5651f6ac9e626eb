// The CPU implementation of Backend: f32 activations, weights read in their
// checkpoint dtype straight from the memory-mapped file.
#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/backend/cpu/kernels.h"
#include "runtime/backend/cpu/thread_pool.h"

namespace strata {
namespace {

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int threads)
      : pool_(threads > 0 ? threads : AvailableCores()),
        linear_rows_(cpu::SelectLinearRows()),
        scores_(pool_.size()) {}

  std::string_view name() const override {
    if (linear_rows_ == cpu::LinearRowsAvx512) return "cpu-avx512";
    return linear_rows_ == cpu::LinearRowsAvx2 ? "cpu-avx2" : "cpu-portable";
  }
  int threads() const override { return pool_.size(); }
  void Rest() override { pool_.Rest(); }

  void Linear(const float* x, int64_t m, const Weight& w, const float* bias, float* out) override {
    // Rows are split in multiples of 12 so both the 3- and 4-row tiles divide them.
    pool_.ParallelFor(w.rows, 12, [&](int64_t b, int64_t e, int) {
      linear_rows_(x, m, w, b, e, out, w.rows);
      if (bias != nullptr) {
        for (int64_t t = 0; t < m; ++t) {
          float* row = out + t * w.rows;
          for (int64_t n = b; n < e; ++n) row[n] += bias[n];
        }
      }
    });
  }

  void RmsNorm(const float* x, int64_t m, int64_t n, const Weight& weight, float eps,
               float* out) override {
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

  void Embed(std::span<const int32_t> ids, const Weight& table, float* out) override {
    const int64_t n = table.cols;
    for (size_t i = 0; i < ids.size(); ++i) {
      const int64_t base = static_cast<int64_t>(ids[i]) * n;
      for (int64_t j = 0; j < n; ++j) out[i * n + j] = cpu::WeightAt(table, base + j);
    }
  }

  void SiluMul(float* gate, const float* up, int64_t count) override {
    pool_.ParallelFor(count, 4096, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        const float g = gate[i];
        gate[i] = g / (1.0f + std::exp(-g)) * up[i];
      }
    });
  }

  void Add(float* acc, const float* x, int64_t count) override {
    for (int64_t i = 0; i < count; ++i) acc[i] += x[i];
  }

  void Rope(float* x, int64_t m, int64_t heads, int64_t head_dim, const float* cos,
            const float* sin) override {
    const int64_t half = head_dim / 2;
    for (int64_t t = 0; t < m; ++t) {
      const float* c = cos + t * half;
      const float* s = sin + t * half;
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

  void WriteKv(const float* k, const float* v, std::span<const AttentionChunk> chunks,
               const KvLayerView& kv) override {
    for (const AttentionChunk& ch : chunks) {
      for (int64_t i = 0; i < ch.num_tokens; ++i) {
        const int64_t pos = ch.start_pos + i;
        const int32_t block = ch.block_table[pos / kv.block_size];
        const int64_t slot = pos % kv.block_size;
        const int64_t row = ch.row_begin + i;
        std::copy_n(k + row * kv.kv_dim, kv.kv_dim, kv.key(block, slot));
        std::copy_n(v + row * kv.kv_dim, kv.kv_dim, kv.value(block, slot));
      }
    }
  }

  void Attention(const float* q, std::span<const AttentionChunk> chunks, const KvLayerView& kv,
                 const AttentionShape& shape, float* out) override {
    const int64_t rows = chunks.empty() ? 0 : chunks.back().row_begin + chunks.back().num_tokens;
    row_chunk_.resize(rows);  // capacity is kept across calls: no steady-state allocation
    for (size_t c = 0; c < chunks.size(); ++c) {
      for (int64_t i = 0; i < chunks[c].num_tokens; ++i) row_chunk_[chunks[c].row_begin + i] = c;
    }
    const int64_t heads = shape.num_heads;
    pool_.ParallelFor(rows * heads, 1, [&](int64_t b, int64_t e, int thread) {
      for (int64_t item = b; item < e; ++item) {
        const int64_t row = item / heads, h = item % heads;
        AttendOne(q, chunks[row_chunk_[row]], row, h, kv, shape, &scores_[thread], out);
      }
    });
  }

 private:
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
    float max_score = -INFINITY;
    for (int64_t j = 0; j < count; ++j) {
      const int64_t p = first + j;
      const float* kr = kv.key(ch.block_table[p / kv.block_size], p % kv.block_size) + kv_off;
      float s = 0;
      for (int64_t i = 0; i < d; ++i) s += qv[i] * kr[i];
      s *= shape.scale;
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
    for (int64_t j = 0; j < count; ++j) {
      const int64_t p = first + j;
      const float* vr = kv.value(ch.block_table[p / kv.block_size], p % kv.block_size) + kv_off;
      const float wgt = (*scores)[j] * inv;
      for (int64_t i = 0; i < d; ++i) o[i] += wgt * vr[i];
    }
  }

  ThreadPool pool_;
  cpu::LinearRowsFn linear_rows_;
  std::vector<std::vector<float>> scores_;  // per-thread softmax scratch
  std::vector<size_t> row_chunk_;
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace strata
