// Element types of checkpoint tensors and the conversions the CPU needs.
#ifndef STRATA_RUNTIME_DTYPE_H_
#define STRATA_RUNTIME_DTYPE_H_

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace strata {

// The float types are what weights and activations compute in; I32 and
// F8_E4M3 occur only as the parts of quantized weights (runtime/quant.h):
// packed integer codes, zero points and group indices, and FP8 codes.
enum class DType { kF32, kF16, kBF16, kI32, kF8E4M3 };

size_t DTypeSize(DType t);
// "F32", "F16", "BF16", "I32", "F8_E4M3" as safetensors spells them.
const char* DTypeName(DType t);
bool IsFloatDType(DType t);  // F32, F16 or BF16
// Parses a float safetensors dtype ("BF16") or a torch_dtype ("bfloat16").
absl::StatusOr<DType> ParseDType(std::string_view name);
// Any dtype a checkpoint tensor may have: the float ones, I32, F8_E4M3.
absl::StatusOr<DType> ParseTensorDType(std::string_view name);

// How a linear layer's weights are stored once loaded (runtime/quant.h):
// plain (in the Weight's float dtype), or packed 4-bit / 8-bit integer or FP8
// E4M3 codes with per-group scales.
enum class QuantFormat : uint8_t { kNone, kInt4, kInt8, kFp8 };
const char* QuantFormatName(QuantFormat f);  // "int4", "int8", "fp8"

// An FP8 E4M3 (the "fn" variant: no infinities, 0x7f/0xff are NaN) code as f32.
float Fp8E4M3ToF32(uint8_t code);
// Round-to-nearest-even to the closest E4M3 value, saturating at ±448.
uint8_t F32ToFp8E4M3(float f);

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
    case DType::kI32:
      return static_cast<float>(static_cast<const int32_t*>(data)[i]);
    case DType::kF8E4M3:
      return Fp8E4M3ToF32(static_cast<const uint8_t*>(data)[i]);
  }
  return 0.0f;
}

}  // namespace strata

#endif  // STRATA_RUNTIME_DTYPE_H_
