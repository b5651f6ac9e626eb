// RMSNorm, alone and fused with the residual add before it. One thread block
// per row; the sum of squares in f32. As in Hugging Face's Llama/Qwen2
// RMSNorm, x * rsqrt(mean(x²) + eps) is rounded to the dtype before the
// weight multiplies it.
#include "runtime/backend/cuda/device_math.cuh"
#include "runtime/backend/cuda/kernels.h"

namespace strata::cuda {
namespace {

template <typename T>
__global__ void RmsNormKernel(const T* x, long long n, const T* weight, float eps, T* out) {
  __shared__ float scratch[32];
  const T* xr = x + blockIdx.x * n;
  T* o = out + blockIdx.x * n;
  float ss = 0.0f;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = ToFloat(xr[i]);
    ss += v * v;
  }
  const float inv = rsqrtf(BlockSum(ss, scratch) / static_cast<float>(n) + eps);
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    o[i] = FromFloat<T>(ToFloat(weight[i]) * Round<T>(ToFloat(xr[i]) * inv));
  }
}

template <typename T>
__global__ void AddRmsNormKernel(T* acc, const T* delta, long long n, const T* weight, float eps,
                                 T* out) {
  __shared__ float scratch[32];
  T* a = acc + blockIdx.x * n;
  const T* d = delta + blockIdx.x * n;
  T* o = out + blockIdx.x * n;
  float ss = 0.0f;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = Round<T>(ToFloat(a[i]) + ToFloat(d[i]));
    a[i] = FromFloat<T>(v);
    ss += v * v;
  }
  const float inv = rsqrtf(BlockSum(ss, scratch) / static_cast<float>(n) + eps);
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    o[i] = FromFloat<T>(ToFloat(weight[i]) * Round<T>(ToFloat(a[i]) * inv));
  }
}

template <typename T>
void RmsNorm(const void* x, int64_t m, int64_t n, const void* weight, float eps, void* out,
             cudaStream_t stream) {
  if (m == 0) return;
  RmsNormKernel<T><<<static_cast<unsigned>(m), RowThreads(n), 0, stream>>>(
      static_cast<const T*>(x), n, static_cast<const T*>(weight), eps, static_cast<T*>(out));
}

template <typename T>
void AddRmsNorm(void* acc, const void* delta, int64_t m, int64_t n, const void* weight, float eps,
                void* out, cudaStream_t stream) {
  if (m == 0) return;
  AddRmsNormKernel<T><<<static_cast<unsigned>(m), RowThreads(n), 0, stream>>>(
      static_cast<T*>(acc), static_cast<const T*>(delta), n, static_cast<const T*>(weight), eps,
      static_cast<T*>(out));
}

}  // namespace

void LaunchRmsNorm(DType dtype, const void* x, int64_t m, int64_t n, const void* weight, float eps,
                   void* out, cudaStream_t stream) {
  if (dtype == DType::kF16) {
    RmsNorm<__half>(x, m, n, weight, eps, out, stream);
  } else {
    RmsNorm<__nv_bfloat16>(x, m, n, weight, eps, out, stream);
  }
}

void LaunchAddRmsNorm(DType dtype, void* acc, const void* delta, int64_t m, int64_t n,
                      const void* weight, float eps, void* out, cudaStream_t stream) {
  if (dtype == DType::kF16) {
    AddRmsNorm<__half>(acc, delta, m, n, weight, eps, out, stream);
  } else {
    AddRmsNorm<__nv_bfloat16>(acc, delta, m, n, weight, eps, out, stream);
  }
}

}  // namespace strata::cuda
