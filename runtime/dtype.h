// Element types of checkpoint tensors and the conversions the CPU needs.
#ifndef STRATA_RUNTIME_DTYPE_H_
#define STRATA_RUNTIME_DTYPE_H_

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace strata {

enum class DType { kF32, kF16, kBF16 };

size_t DTypeSize(DType t);
const char* DTypeName(DType t);  // "F32", "F16", "BF16" as safetensors spells them
// Parses a safetensors dtype ("BF16") or a torch_dtype ("bfloat16").
absl::StatusOr<DType> ParseDType(std::string_view name);

inline float Bf16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, NaN kept quiet; matches torch's float -> bfloat16.
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

// Element `i` of an array of `dtype` elements, as f32.
inline float ElementAsF32(DType dtype, const void* data, int64_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    case DType::kBF16:
      return Bf16ToF32(static_cast<const uint16_t*>(data)[i]);
    case DType::kF16:
      return F16ToF32(static_cast<const uint16_t*>(data)[i]);
  }
  return 0.0f;
}

}  // namespace strata

#endif  // STRATA_RUNTIME_DTYPE_H_
