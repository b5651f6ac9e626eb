// Quantized linear layers (runtime/quant.h's packed layout) on the device:
// a dequantizing GEMV for decode-sized batches, and a dequantization into a
// scratch matrix that cuBLASLt then multiplies for prefill-sized ones.
//
// Codes come in blocks of 32 input columns of one output row (16 bytes for
// int4, 32 for int8 and FP8), each inside one scale group.
#include <cuda_fp8.h>

#include <algorithm>

#include "runtime/backend/cuda/device_math.cuh"
#include "runtime/backend/cuda/kernels.h"

namespace strata::cuda {
namespace {

// Code i (0..31) of a block, as a float, from the block's bytes in registers.
template <int F>
__device__ __forceinline__ float CodeAt(const uint32_t* words, int i) {
  if constexpr (F == static_cast<int>(QuantFormat::kInt4)) {
    // Byte j holds column j (low nibble) and column j + 16 (high nibble).
    const int j = i & 15;
    const uint32_t byte = (words[j >> 2] >> ((j & 3) * 8)) & 0xffu;
    return static_cast<float>(i < 16 ? (byte & 0xfu) : (byte >> 4));
  } else {
    const uint32_t byte = (words[i >> 2] >> ((i & 3) * 8)) & 0xffu;
    if constexpr (F == static_cast<int>(QuantFormat::kInt8)) {
      return static_cast<float>(byte);
    } else {
      const __half_raw h =
          __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(byte), __NV_E4M3);
      return __half2float(__half(h));
    }
  }
}

template <int F>
__device__ __forceinline__ void LoadBlock(const uint8_t* codes, long long row, long long cols,
                                          long long block, uint32_t* words) {
  if constexpr (F == static_cast<int>(QuantFormat::kInt4)) {
    const uint4 v = *reinterpret_cast<const uint4*>(codes + row * (cols / 2) + block * 16);
    words[0] = v.x, words[1] = v.y, words[2] = v.z, words[3] = v.w;
  } else {
    const uint4* p = reinterpret_cast<const uint4*>(codes + row * cols + block * 32);
    const uint4 a = p[0], b = p[1];
    words[0] = a.x, words[1] = a.y, words[2] = a.z, words[3] = a.w;
    words[4] = b.x, words[5] = b.y, words[6] = b.z, words[7] = b.w;
  }
}

constexpr int kGemvWarps = 8;

// One warp per output row; lane l takes the row's 32-column blocks l, l+32, ...
// for every one of the m (<= kMaxGemvRows) tokens at once.
template <typename T, int F>
__global__ void QuantGemvKernel(const T* x, int m, QuantDevice w, const T* bias, T* out) {
  const long long row = static_cast<long long>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= w.rows) return;
  const long long blocks = w.cols / 32, groups = (w.cols + w.group_size - 1) / w.group_size;
  float acc[kMaxGemvRows];
#pragma unroll
  for (int t = 0; t < kMaxGemvRows; ++t) acc[t] = 0.0f;
  for (long long b = lane; b < blocks; b += 32) {
    uint32_t words[8];
    LoadBlock<F>(w.codes, row, w.cols, b, words);
    const long long g = b * 32 / w.group_size;
    const float scale = w.scales[row * groups + g];
    const float offset = w.offsets != nullptr ? w.offsets[row * groups + g] : 0.0f;
#pragma unroll 4
    for (int i = 0; i < 32; ++i) {
      const float wv = CodeAt<F>(words, i) * scale + offset;
      const long long j = b * 32 + i;
      const long long col = w.perm != nullptr ? w.perm[j] : j;
#pragma unroll
      for (int t = 0; t < kMaxGemvRows; ++t) {
        if (t < m) acc[t] += wv * ToFloat(x[t * w.cols + col]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxGemvRows; ++t) {
    if (t >= m) break;
    const float sum = WarpSum(acc[t]);
    if (lane == 0) {
      const float b = bias != nullptr ? ToFloat(bias[row]) : 0.0f;
      out[t * w.rows + row] = FromFloat<T>(sum + b);
    }
  }
}

// One thread per 32-column block: its 32 weights, in the original column order.
template <typename T, int F>
__global__ void DequantizeKernel(QuantDevice w, T* dst) {
  const long long blocks = w.cols / 32, groups = (w.cols + w.group_size - 1) / w.group_size;
  const long long total = w.rows * blocks;
  for (long long id = blockIdx.x * 256LL + threadIdx.x; id < total; id += gridDim.x * 256LL) {
    const long long row = id / blocks, b = id % blocks;
    uint32_t words[8];
    LoadBlock<F>(w.codes, row, w.cols, b, words);
    const long long g = b * 32 / w.group_size;
    const float scale = w.scales[row * groups + g];
    const float offset = w.offsets != nullptr ? w.offsets[row * groups + g] : 0.0f;
    for (int i = 0; i < 32; ++i) {
      const long long j = b * 32 + i;
      const long long col = w.perm != nullptr ? w.perm[j] : j;
      dst[row * w.cols + col] = FromFloat<T>(CodeAt<F>(words, i) * scale + offset);
    }
  }
}

template <typename T>
void GemvFor(const void* x, int m, const QuantDevice& w, const void* bias, void* out,
             cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((w.rows + kGemvWarps - 1) / kGemvWarps));
  const auto* xt = static_cast<const T*>(x);
  const auto* bt = static_cast<const T*>(bias);
  auto* ot = static_cast<T*>(out);
  switch (w.format) {
    case QuantFormat::kInt4:
      QuantGemvKernel<T, static_cast<int>(QuantFormat::kInt4)>
          <<<grid, kGemvWarps * 32, 0, stream>>>(xt, m, w, bt, ot);
      break;
    case QuantFormat::kInt8:
      QuantGemvKernel<T, static_cast<int>(QuantFormat::kInt8)>
          <<<grid, kGemvWarps * 32, 0, stream>>>(xt, m, w, bt, ot);
      break;
    case QuantFormat::kFp8:
      QuantGemvKernel<T, static_cast<int>(QuantFormat::kFp8)>
          <<<grid, kGemvWarps * 32, 0, stream>>>(xt, m, w, bt, ot);
      break;
    case QuantFormat::kNone:
      break;
  }
}

template <typename T>
void DequantizeFor(const QuantDevice& w, void* dst, cudaStream_t stream) {
  const long long blocks = w.rows * (w.cols / 32);
  const unsigned grid = static_cast<unsigned>(std::min<long long>((blocks + 255) / 256, 65535));
  auto* d = static_cast<T*>(dst);
  switch (w.format) {
    case QuantFormat::kInt4:
      DequantizeKernel<T, static_cast<int>(QuantFormat::kInt4)><<<grid, 256, 0, stream>>>(w, d);
      break;
    case QuantFormat::kInt8:
      DequantizeKernel<T, static_cast<int>(QuantFormat::kInt8)><<<grid, 256, 0, stream>>>(w, d);
      break;
    case QuantFormat::kFp8:
      DequantizeKernel<T, static_cast<int>(QuantFormat::kFp8)><<<grid, 256, 0, stream>>>(w, d);
      break;
    case QuantFormat::kNone:
      break;
  }
}

}  // namespace

void LaunchQuantGemv(DType dtype, const void* x, int64_t m, const QuantDevice& w, const void* bias,
                     void* out, cudaStream_t stream) {
  if (dtype == DType::kBF16) {
    GemvFor<__nv_bfloat16>(x, static_cast<int>(m), w, bias, out, stream);
  } else {
    GemvFor<__half>(x, static_cast<int>(m), w, bias, out, stream);
  }
}

void LaunchDequantize(DType dtype, const QuantDevice& w, void* dst, cudaStream_t stream) {
  if (dtype == DType::kBF16) {
    DequantizeFor<__nv_bfloat16>(w, dst, stream);
  } else {
    DequantizeFor<__half>(w, dst, stream);
  }
}

}  // namespace strata::cuda
