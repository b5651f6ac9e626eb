// The handful of operations a decoder stage needs, behind one interface so a
// CUDA backend can sit beside the CPU one. All activations are f32 row-major
// [tokens, features]; weights keep their checkpoint dtype. A Backend instance
// is used by one stage at a time (not thread-safe); it parallelises each op
// internally over the threads it was given.
#ifndef STRATA_RUNTIME_BACKEND_BACKEND_H_
#define STRATA_RUNTIME_BACKEND_BACKEND_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "runtime/dtype.h"

namespace strata {

// A row-major [rows, cols] weight matrix (or a vector when rows == 1).
struct Weight {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
};

// One sequence's part of a batch, as attention sees it.
struct AttentionChunk {
  int64_t row_begin = 0;  // first row of this chunk in the batch's q/out
  int64_t num_tokens = 0;
  int64_t start_pos = 0;                 // position of the chunk's first token
  const int32_t* block_table = nullptr;  // KV blocks of the sequence, in order
};

// A layer's paged KV storage: `num_blocks` blocks of [2][block_size][kv_dim]
// floats (keys, then values).
struct KvLayerView {
  float* base = nullptr;
  int64_t block_size = 16;
  int64_t kv_dim = 0;
  float* key(int32_t block, int64_t slot) const {
    return base + (static_cast<int64_t>(block) * 2 * block_size + slot) * kv_dim;
  }
  float* value(int32_t block, int64_t slot) const { return key(block, slot) + block_size * kv_dim; }
};

struct AttentionShape {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t sliding_window = 0;  // 0: unbounded
  float scale = 1.0f;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual int threads() const = 0;
  // A step ended: helper threads may sleep rather than spin until the next op.
  virtual void Rest() {}

  // out[m, w.rows] = x[m, w.cols] · wᵀ (+ bias[w.rows] when bias != nullptr).
  virtual void Linear(const float* x, int64_t m, const Weight& w, const float* bias,
                      float* out) = 0;
  // out[m, n] = x / rms(x) * weight; `weight` is a [n] vector.
  virtual void RmsNorm(const float* x, int64_t m, int64_t n, const Weight& weight, float eps,
                       float* out) = 0;
  // out[i, :] = embedding row ids[i], converted to f32.
  virtual void Embed(std::span<const int32_t> ids, const Weight& table, float* out) = 0;
  // gate[i] = silu(gate[i]) * up[i].
  virtual void SiluMul(float* gate, const float* up, int64_t count) = 0;
  // acc[i] += x[i].
  virtual void Add(float* acc, const float* x, int64_t count) = 0;
  // Rotates each head of x [m, heads * head_dim] in place, half-split (GPT-NeoX)
  // layout. cos/sin are [m, head_dim / 2].
  virtual void Rope(float* x, int64_t m, int64_t heads, int64_t head_dim, const float* cos,
                    const float* sin) = 0;
  // Stores k/v rows [m, kv_dim] of each chunk at their positions in the cache.
  virtual void WriteKv(const float* k, const float* v, std::span<const AttentionChunk> chunks,
                       const KvLayerView& kv) = 0;
  // Causal attention of q [m, heads * head_dim] over each chunk's cached keys
  // and values (positions 0 .. start_pos + i), into out [m, heads * head_dim].
  virtual void Attention(const float* q, std::span<const AttentionChunk> chunks,
                         const KvLayerView& kv, const AttentionShape& shape, float* out) = 0;
};

// The CPU backend with `threads` workers (0: every core of the process's
// affinity mask). Uses AVX2/FMA/F16C kernels when the CPU has them.
std::unique_ptr<Backend> MakeCpuBackend(int threads);

}  // namespace strata

#endif  // STRATA_RUNTIME_BACKEND_BACKEND_H_
