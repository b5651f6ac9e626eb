// Device helpers shared by the kernels: conversions between the activation
// dtype and f32, rounding as PyTorch rounds, and warp/block reductions.
#ifndef STRATA_RUNTIME_BACKEND_CUDA_DEVICE_MATH_CUH_
#define STRATA_RUNTIME_BACKEND_CUDA_DEVICE_MATH_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace strata::cuda {

__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float f);
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float f) {
  return __float2bfloat16_rn(f);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float f) {
  return __float2half_rn(f);
}

// f rounded to T and back: what a PyTorch op in T stores.
template <typename T>
__device__ __forceinline__ float Round(float f) {
  return ToFloat(FromFloat<T>(f));
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The sum of `v` over the block; every thread gets it. `scratch` holds 32
// floats of shared memory; the block size is a multiple of 32.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = WarpSum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    float w = lane < warps ? scratch[lane] : 0.0f;
    w = WarpSum(w);
    if (lane == 0) scratch[0] = w;
  }
  __syncthreads();
  const float total = scratch[0];
  __syncthreads();  // scratch may be reused by the caller's next reduction
  return total;
}

// Threads for a block that walks a row of n elements: n rounded up to a warp,
// at most 1024.
inline int RowThreads(long long n) {
  long long t = (n + 31) / 32 * 32;
  return static_cast<int>(t < 32 ? 32 : (t > 1024 ? 1024 : t));
}

// Blocks for a grid-stride loop over `count` elements of 256 threads.
inline unsigned GridFor(long long count) {
  long long blocks = (count + 255) / 256;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks > 65536 ? 65536 : blocks);
}

}  // namespace strata::cuda

#endif  // STRATA_RUNTIME_BACKEND_CUDA_DEVICE_MATH_CUH_
