// Launchers of the CUDA backend's own kernels (cuBLASLt does the GEMMs; see
// gemm.h). Each launcher enqueues on `stream` and returns at once; the caller
// checks cudaGetLastError(). Tensors are row-major; `dtype` is the activation
// dtype (kBF16 or kF16), which every prepared weight shares. Reductions and
// softmax run in f32; results are rounded to the dtype where PyTorch's bf16
// modules round them, so the outputs track Hugging Face's closely.
#ifndef STRATA_RUNTIME_BACKEND_CUDA_KERNELS_H_
#define STRATA_RUNTIME_BACKEND_CUDA_KERNELS_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/backend/cuda/attention_v2_plan.h"
#include "runtime/dtype.h"

namespace strata::cuda {

// The step layout on the device (see StepLayout in backend.h).
struct StepDevice {
  const int32_t* row_pos = nullptr;    // [rows] absolute position of each row
  const int32_t* row_table = nullptr;  // [rows] offset of the row's block table in `tables`
  const int32_t* tables = nullptr;     // the chunks' block tables, concatenated
  const float* cos = nullptr;          // [rows, half]
  const float* sin = nullptr;          // [rows, half]
  int32_t rows = 0;
  int32_t half = 0;
  // How the v2 attention kernels share the rows (v2::PlanWork): single-token
  // rows [n_decode] and prefill tiles [n_tiles].
  const int32_t* decode_rows = nullptr;
  const v2::PrefillTile* tiles = nullptr;
  int32_t n_decode = 0;
  int32_t n_tiles = 0;
};

// out[m, n] = x / rms(x) * weight[n]. out may alias x.
void LaunchRmsNorm(DType dtype, const void* x, int64_t m, int64_t n, const void* weight, float eps,
                   void* out, cudaStream_t stream);
// acc[m, n] += delta; out = RmsNorm(acc).
void LaunchAddRmsNorm(DType dtype, void* acc, const void* delta, int64_t m, int64_t n,
                      const void* weight, float eps, void* out, cudaStream_t stream);
// acc[i] += x[i] for i < count.
void LaunchAdd(DType dtype, void* acc, const void* x, int64_t count, cudaStream_t stream);
// gate[i] = silu(gate[i]) * up[i].
void LaunchSiluMul(DType dtype, void* gate, const void* up, int64_t count, cudaStream_t stream);
// out[i, :] = table[ids[i], :] for rows of `cols`; ids on the device.
void LaunchEmbed(DType dtype, const int32_t* ids, int64_t count, const void* table, int64_t cols,
                 void* out, cudaStream_t stream);
// dst[i, :] = src[rows[i], :]; rows on the device.
void LaunchGatherRows(DType dtype, const void* src, const int32_t* rows, int64_t count,
                      int64_t cols, void* dst, cudaStream_t stream);
// ids[r] = the index of the largest element of row r of x [m, n] (the
// first one on ties); one block per row.
void LaunchArgmaxRows(DType dtype, const void* x, int64_t m, int64_t n, int32_t* ids,
                      cudaStream_t stream);
// x [step.rows, heads * head_dim] rotated in place by the step's angles
// (half-split layout).
void LaunchRope(DType dtype, void* x, const StepDevice& step, int64_t heads, int64_t head_dim,
                cudaStream_t stream);
// Stores k/v [step.rows, kv_dim] into the paged cache of one layer: blocks of
// [2][block_size][kv_dim] elements.
void LaunchWriteKv(DType dtype, const void* k, const void* v, const StepDevice& step, void* kv_base,
                   int64_t kv_dim, int64_t block_size, cudaStream_t stream);

struct AttentionParams {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // at most kMaxHeadDim
  int64_t sliding_window = 0;
  float scale = 1.0f;
  int64_t block_size = 16;
  int64_t kv_dim = 0;
  // Flash-decoding split: each (row, head) is cut into `splits` ranges of
  // `split_len` key positions, attended by separate thread blocks, then merged.
  int splits = 1;
  int split_len = 0;
};
inline constexpr int64_t kMaxHeadDim = 256;
// f32 elements of the workspace LaunchAttention needs.
int64_t AttentionWorkspaceFloats(int64_t rows, int64_t heads, int64_t splits, int64_t head_dim);
// out [rows, heads * head_dim] = causal attention of q over the paged cache.
void LaunchAttention(DType dtype, const void* q, const void* kv_base, const StepDevice& step,
                     const AttentionParams& params, float* workspace, void* out,
                     cudaStream_t stream);

// The same attention by the v2 kernels (attention_v2.cu), for shapes
// v2::Supported() takes: decode rows (step.decode_rows) by blocks of
// (row, KV head, split) with `params.splits` cut from each row's own length,
// merged through `workspace` (AttentionWorkspaceFloats(n_decode, heads,
// splits, head_dim) floats); prefill tiles (step.tiles) by tensor-core
// blocks of (tile, head) writing `out` directly. params.split_len is unused.
void LaunchAttentionV2(DType dtype, const void* q, const void* kv_base, const StepDevice& step,
                       const AttentionParams& params, float* workspace, void* out,
                       cudaStream_t stream);

// A quantized linear layer's packed parts on the device (runtime/quant.h).
struct QuantDevice {
  QuantFormat format = QuantFormat::kNone;
  long long rows = 0, cols = 0, group_size = 0;
  const uint8_t* codes = nullptr;  // 16-byte aligned
  const float* scales = nullptr;   // [rows, groups]
  const float* offsets = nullptr;  // [rows, groups], or null (FP8)
  const int32_t* perm = nullptr;   // [cols], or null
};
// The most tokens LaunchQuantGemv takes; larger batches dequantize and GEMM.
inline constexpr int kMaxGemvRows = 8;
// out[t, n] = x[t, :] . w[n, :] (+ bias[n]) for t < m <= kMaxGemvRows: one
// warp per output row, codes widened in registers, f32 sums.
void LaunchQuantGemv(DType dtype, const void* x, int64_t m, const QuantDevice& w,
                     const void* bias, void* out, cudaStream_t stream);
// dst [rows, cols] = the weight in `dtype`, in the original column order.
void LaunchDequantize(DType dtype, const QuantDevice& w, void* dst, cudaStream_t stream);

}  // namespace strata::cuda

#endif  // STRATA_RUNTIME_BACKEND_CUDA_KERNELS_H_
