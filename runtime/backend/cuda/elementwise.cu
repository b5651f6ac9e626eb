// Element-wise ops and row copies: residual add, SwiGLU, embedding gather,
// row gather. Grid-stride loops of 256 threads.
#include <math_constants.h>

#include "runtime/backend/cuda/device_math.cuh"
#include "runtime/backend/cuda/kernels.h"

namespace strata::cuda {
namespace {

template <typename T>
__global__ void AddKernel(T* acc, const T* x, long long count) {
  for (long long i = blockIdx.x * 256LL + threadIdx.x; i < count; i += gridDim.x * 256LL) {
    acc[i] = FromFloat<T>(ToFloat(acc[i]) + ToFloat(x[i]));
  }
}

// PyTorch evaluates act_fn(gate) * up as two bf16 ops: silu rounded, then the
// product rounded.
template <typename T>
__global__ void SiluMulKernel(T* gate, const T* up, long long count) {
  for (long long i = blockIdx.x * 256LL + threadIdx.x; i < count; i += gridDim.x * 256LL) {
    const float g = ToFloat(gate[i]);
    const float silu = Round<T>(g / (1.0f + expf(-g)));
    gate[i] = FromFloat<T>(silu * ToFloat(up[i]));
  }
}

// One block per output row.
template <typename T>
__global__ void GatherKernel(const T* src, const int32_t* rows, long long cols, T* dst) {
  const T* s = src + static_cast<long long>(rows[blockIdx.x]) * cols;
  T* d = dst + blockIdx.x * cols;
  for (long long i = threadIdx.x; i < cols; i += blockDim.x) d[i] = s[i];
}

// Each thread keeps its best (value, index) over a strided slice; the block
// then reduces the pairs, preferring the lower index on equal values.
template <typename T>
__global__ void ArgmaxKernel(const T* x, long long n, int32_t* ids) {
  __shared__ float best_value[1024];
  __shared__ int best_index[1024];
  const T* row = x + blockIdx.x * n;
  float value = -CUDART_INF_F;
  int index = 0x7fffffff;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = ToFloat(row[i]);
    if (v > value) {  // strictly: the first of equal values in this slice stays
      value = v;
      index = static_cast<int>(i);
    }
  }
  best_value[threadIdx.x] = value;
  best_index[threadIdx.x] = index;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const float v = best_value[threadIdx.x + stride];
      const int j = best_index[threadIdx.x + stride];
      if (v > best_value[threadIdx.x] ||
          (v == best_value[threadIdx.x] && j < best_index[threadIdx.x])) {
        best_value[threadIdx.x] = v;
        best_index[threadIdx.x] = j;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) ids[blockIdx.x] = best_index[0] == 0x7fffffff ? 0 : best_index[0];
}

template <typename T>
void Add(void* acc, const void* x, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  AddKernel<T>
      <<<GridFor(count), 256, 0, stream>>>(static_cast<T*>(acc), static_cast<const T*>(x), count);
}

template <typename T>
void SiluMul(void* gate, const void* up, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  SiluMulKernel<T>
      <<<GridFor(count), 256, 0, stream>>>(static_cast<T*>(gate), static_cast<const T*>(up), count);
}

template <typename T>
void Gather(const void* src, const int32_t* rows, int64_t count, int64_t cols, void* dst,
            cudaStream_t stream) {
  if (count == 0) return;
  GatherKernel<T><<<static_cast<unsigned>(count), RowThreads(cols), 0, stream>>>(
      static_cast<const T*>(src), rows, cols, static_cast<T*>(dst));
}

}  // namespace

void LaunchArgmaxRows(DType dtype, const void* x, int64_t m, int64_t n, int32_t* ids,
                      cudaStream_t stream) {
  if (m == 0) return;
  // 1024 threads: a power of two, for the pairwise reduction.
  if (dtype == DType::kF16) {
    ArgmaxKernel<__half>
        <<<static_cast<unsigned>(m), 1024, 0, stream>>>(static_cast<const __half*>(x), n, ids);
  } else {
    ArgmaxKernel<__nv_bfloat16><<<static_cast<unsigned>(m), 1024, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(x), n, ids);
  }
}

void LaunchAdd(DType dtype, void* acc, const void* x, int64_t count, cudaStream_t stream) {
  if (dtype == DType::kF16) {
    Add<__half>(acc, x, count, stream);
  } else {
    Add<__nv_bfloat16>(acc, x, count, stream);
  }
}

void LaunchSiluMul(DType dtype, void* gate, const void* up, int64_t count, cudaStream_t stream) {
  if (dtype == DType::kF16) {
    SiluMul<__half>(gate, up, count, stream);
  } else {
    SiluMul<__nv_bfloat16>(gate, up, count, stream);
  }
}

void LaunchEmbed(DType dtype, const int32_t* ids, int64_t count, const void* table, int64_t cols,
                 void* out, cudaStream_t stream) {
  LaunchGatherRows(dtype, table, ids, count, cols, out, stream);
}

void LaunchGatherRows(DType dtype, const void* src, const int32_t* rows, int64_t count,
                      int64_t cols, void* dst, cudaStream_t stream) {
  if (dtype == DType::kF16) {
    Gather<__half>(src, rows, count, cols, dst, stream);
  } else {
    Gather<__nv_bfloat16>(src, rows, count, cols, dst, stream);
  }
}

}  // namespace strata::cuda
