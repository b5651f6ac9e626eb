// Attention over the paged KV cache, for prefill chunks and decode tokens
// alike, flash-decoding style: thread block (row, head, split) attends to one
// range of key positions with an online softmax in f32 and writes its
// unnormalised partial output with its running max and sum; a second kernel
// merges the splits of each (row, head). Long contexts at small batch thus
// spread over many blocks instead of one per head.
//
// Inside a block, 4 warps take every 4th key of the range; each lane holds
// E = ceil(head_dim / 32) consecutive dimensions of q and of the accumulator,
// so one key's row is read by the warp as one contiguous run.
#include <math_constants.h>

#include "runtime/backend/cuda/attention_merge.cuh"
#include "runtime/backend/cuda/device_math.cuh"
#include "runtime/backend/cuda/kernels.h"

namespace strata::cuda {
namespace {

constexpr int kWarps = 4;

template <typename T>
__global__ void WriteKvKernel(const T* k, const T* v, StepDevice step, T* base, int kv_dim,
                              int block_size) {
  const int row = blockIdx.x;
  const int pos = step.row_pos[row];
  const int32_t block = step.tables[step.row_table[row] + pos / block_size];
  T* kd = base + (static_cast<long long>(block) * 2 * block_size + pos % block_size) * kv_dim;
  T* vd = kd + static_cast<long long>(block_size) * kv_dim;
  const T* ks = k + static_cast<long long>(row) * kv_dim;
  const T* vs = v + static_cast<long long>(row) * kv_dim;
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    kd[i] = ks[i];
    vd[i] = vs[i];
  }
}

// Partial results: acc [rows, heads, splits, head_dim], then (max, sum)
// pairs [rows, heads, splits, 2].
template <typename T, int E>
__global__ void __launch_bounds__(kWarps * 32)
    AttentionPartialKernel(const T* q, const T* kv, StepDevice step, AttentionParams p,
                           float* part_acc, float* part_ml) {
  __shared__ float warp_max[kWarps], warp_sum[kWarps];
  __shared__ float warp_acc[kWarps][kMaxHeadDim];
  const int row = blockIdx.x, head = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int d = static_cast<int>(p.head_dim);
  const int bs = static_cast<int>(p.block_size);
  const int kv_head = head / static_cast<int>(p.num_heads / p.num_kv_heads);
  const int pos = step.row_pos[row];
  const int first = p.sliding_window > 0 ? max(0, pos - static_cast<int>(p.sliding_window) + 1) : 0;
  const int begin = max(first, split * p.split_len);
  const int end = min(pos + 1, (split + 1) * p.split_len);

  float qr[E], acc[E];
  const T* qh = q + (static_cast<long long>(row) * p.num_heads + head) * d;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int dim = lane * E + e;
    qr[e] = dim < d ? ToFloat(qh[dim]) * p.scale : 0.0f;
    acc[e] = 0.0f;
  }
  float run_max = -CUDART_INF_F, run_sum = 0.0f;
  const int32_t* table = step.tables + step.row_table[row];
  for (int j = begin + warp; j < end; j += kWarps) {
    const long long slot_base =
        (static_cast<long long>(table[j / bs]) * 2 * bs + j % bs) * p.kv_dim + kv_head * d;
    const T* kr = kv + slot_base;
    const T* vr = kr + static_cast<long long>(bs) * p.kv_dim;
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int dim = lane * E + e;
      if (dim < d) s += qr[e] * ToFloat(kr[dim]);
    }
    s = WarpSum(s);
    const float new_max = fmaxf(run_max, s);
    const float correction = expf(run_max - new_max);  // 0 for the first key
    const float weight = expf(s - new_max);
    run_sum = run_sum * correction + weight;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int dim = lane * E + e;
      acc[e] = acc[e] * correction + (dim < d ? weight * ToFloat(vr[dim]) : 0.0f);
    }
    run_max = new_max;
  }

  if (lane == 0) {
    warp_max[warp] = run_max;
    warp_sum[warp] = run_sum;
  }
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int dim = lane * E + e;
    if (dim < d) warp_acc[warp][dim] = acc[e];
  }
  __syncthreads();
  float block_max = -CUDART_INF_F;
  for (int w = 0; w < kWarps; ++w) {
    if (warp_sum[w] > 0.0f) block_max = fmaxf(block_max, warp_max[w]);
  }
  const long long item = (static_cast<long long>(row) * p.num_heads + head) * p.splits + split;
  for (int dim = threadIdx.x; dim < d; dim += blockDim.x) {
    float a = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      if (warp_sum[w] > 0.0f) a += warp_acc[w][dim] * expf(warp_max[w] - block_max);
    }
    part_acc[item * d + dim] = a;
  }
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      if (warp_sum[w] > 0.0f) total += warp_sum[w] * expf(warp_max[w] - block_max);
    }
    part_ml[item * 2] = block_max;
    part_ml[item * 2 + 1] = total;
  }
}

// One block per (row, head): merges the splits and writes the output row.
template <typename T>
__global__ void AttentionMergeKernel(const float* part_acc, const float* part_ml, AttentionParams p,
                                     T* out) {
  const int row = blockIdx.x, head = blockIdx.y;
  const long long first_item = (static_cast<long long>(row) * p.num_heads + head) * p.splits;
  MergeSplits(part_acc, part_ml, first_item, p.splits, static_cast<int>(p.head_dim),
              out + (static_cast<long long>(row) * p.num_heads + head) * p.head_dim);
}

template <typename T, int E>
void AttentionWithLanes(const void* q, const void* kv, const StepDevice& step,
                        const AttentionParams& p, float* workspace, void* out,
                        cudaStream_t stream) {
  const long long items = static_cast<long long>(step.rows) * p.num_heads * p.splits;
  float* part_acc = workspace;
  float* part_ml = workspace + items * p.head_dim;
  const dim3 grid(static_cast<unsigned>(step.rows), static_cast<unsigned>(p.num_heads),
                  static_cast<unsigned>(p.splits));
  AttentionPartialKernel<T, E><<<grid, kWarps * 32, 0, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(kv), step, p, part_acc, part_ml);
  const dim3 merge_grid(static_cast<unsigned>(step.rows), static_cast<unsigned>(p.num_heads));
  AttentionMergeKernel<T><<<merge_grid, RowThreads(p.head_dim), 0, stream>>>(part_acc, part_ml, p,
                                                                             static_cast<T*>(out));
}

template <typename T>
void Attention(const void* q, const void* kv, const StepDevice& step, const AttentionParams& p,
               float* workspace, void* out, cudaStream_t stream) {
  if (step.rows == 0) return;
  if (p.head_dim <= 32) {
    AttentionWithLanes<T, 1>(q, kv, step, p, workspace, out, stream);
  } else if (p.head_dim <= 64) {
    AttentionWithLanes<T, 2>(q, kv, step, p, workspace, out, stream);
  } else if (p.head_dim <= 128) {
    AttentionWithLanes<T, 4>(q, kv, step, p, workspace, out, stream);
  } else {
    AttentionWithLanes<T, 8>(q, kv, step, p, workspace, out, stream);
  }
}

template <typename T>
void WriteKv(const void* k, const void* v, const StepDevice& step, void* base, int64_t kv_dim,
             int64_t block_size, cudaStream_t stream) {
  if (step.rows == 0) return;
  WriteKvKernel<T><<<static_cast<unsigned>(step.rows), RowThreads(kv_dim), 0, stream>>>(
      static_cast<const T*>(k), static_cast<const T*>(v), step, static_cast<T*>(base),
      static_cast<int>(kv_dim), static_cast<int>(block_size));
}

}  // namespace

int64_t AttentionWorkspaceFloats(int64_t rows, int64_t heads, int64_t splits, int64_t head_dim) {
  return rows * heads * splits * (head_dim + 2);
}

void LaunchAttention(DType dtype, const void* q, const void* kv_base, const StepDevice& step,
                     const AttentionParams& params, float* workspace, void* out,
                     cudaStream_t stream) {
  if (dtype == DType::kF16) {
    Attention<__half>(q, kv_base, step, params, workspace, out, stream);
  } else {
    Attention<__nv_bfloat16>(q, kv_base, step, params, workspace, out, stream);
  }
}

void LaunchWriteKv(DType dtype, const void* k, const void* v, const StepDevice& step, void* kv_base,
                   int64_t kv_dim, int64_t block_size, cudaStream_t stream) {
  if (dtype == DType::kF16) {
    WriteKv<__half>(k, v, step, kv_base, kv_dim, block_size, stream);
  } else {
    WriteKv<__nv_bfloat16>(k, v, step, kv_base, kv_dim, block_size, stream);
  }
}

}  // namespace strata::cuda
