// Rotary position embedding, half-split (GPT-NeoX) layout, in place. The
// angles come from the host (RopeInverseFrequencies covers every scaling
// type), one [rows, head_dim / 2] table of cos and sin per step. As in
// Hugging Face's apply_rotary_pos_emb under bf16, cos and sin are rounded to
// the dtype and each product and the sum are rounded.
#include "runtime/backend/cuda/device_math.cuh"
#include "runtime/backend/cuda/kernels.h"

namespace strata::cuda {
namespace {

// One block per row; threads walk (head, i) pairs.
template <typename T>
__global__ void RopeKernel(T* x, StepDevice step, int heads, int head_dim) {
  const int row = blockIdx.x;
  const int half = head_dim / 2;
  const float* c = step.cos + static_cast<long long>(row) * step.half;
  const float* s = step.sin + static_cast<long long>(row) * step.half;
  for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    T* v = x + (static_cast<long long>(row) * heads + h) * head_dim;
    const float a = ToFloat(v[i]), b = ToFloat(v[i + half]);
    const float cs = Round<T>(c[i]), sn = Round<T>(s[i]);
    v[i] = FromFloat<T>(Round<T>(a * cs) - Round<T>(b * sn));
    v[i + half] = FromFloat<T>(Round<T>(b * cs) + Round<T>(a * sn));
  }
}

template <typename T>
void Rope(void* x, const StepDevice& step, int64_t heads, int64_t head_dim, cudaStream_t stream) {
  if (step.rows == 0) return;
  RopeKernel<T><<<static_cast<unsigned>(step.rows), RowThreads(heads * head_dim / 2), 0, stream>>>(
      static_cast<T*>(x), step, static_cast<int>(heads), static_cast<int>(head_dim));
}

}  // namespace

void LaunchRope(DType dtype, void* x, const StepDevice& step, int64_t heads, int64_t head_dim,
                cudaStream_t stream) {
  if (dtype == DType::kF16) {
    Rope<__half>(x, step, heads, head_dim, stream);
  } else {
    Rope<__nv_bfloat16>(x, step, heads, head_dim, stream);
  }
}

}  // namespace strata::cuda
