// The merge of flash-decoding partials, shared by both attention kernels
// (attention.cu, attention_v2.cu): each split left its unnormalised output
// acc [head_dim] and its running (max, sum); the row's output is their sum
// rescaled to the overall max, divided by the overall sum. Splits that saw no
// key (sum 0) are skipped.
#ifndef STRATA_RUNTIME_BACKEND_CUDA_ATTENTION_MERGE_CUH_
#define STRATA_RUNTIME_BACKEND_CUDA_ATTENTION_MERGE_CUH_

#include <math_constants.h>

#include <cstdint>

#include "runtime/backend/cuda/device_math.cuh"

namespace strata::cuda {

// Items first .. first + splits - 1 of part_acc [items, d] and part_ml
// [items, 2] into o [d]; the block's threads share the dimensions.
template <typename T>
__device__ void MergeSplits(const float* part_acc, const float* part_ml, int64_t first, int splits,
                            int d, T* o) {
  const float* ml = part_ml + first * 2;
  float max_all = -CUDART_INF_F;
  for (int s = 0; s < splits; ++s) {
    if (ml[2 * s + 1] > 0.0f) max_all = fmaxf(max_all, ml[2 * s]);
  }
  float total = 0.0f;
  for (int s = 0; s < splits; ++s) {
    if (ml[2 * s + 1] > 0.0f) total += ml[2 * s + 1] * expf(ml[2 * s] - max_all);
  }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  for (int dim = threadIdx.x; dim < d; dim += blockDim.x) {
    float a = 0.0f;
    for (int s = 0; s < splits; ++s) {
      if (ml[2 * s + 1] > 0.0f) a += part_acc[(first + s) * d + dim] * expf(ml[2 * s] - max_all);
    }
    o[dim] = FromFloat<T>(a * inv);
  }
}

}  // namespace strata::cuda

#endif  // STRATA_RUNTIME_BACKEND_CUDA_ATTENTION_MERGE_CUH_
