#include "runtime/dtype.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace strata {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF8E4M3:
      return 1;
  }
  return 0;
}

const char* QuantFormatName(QuantFormat f) {
  switch (f) {
    case QuantFormat::kNone:
      return "none";
    case QuantFormat::kInt4:
      return "int4";
    case QuantFormat::kInt8:
      return "int8";
    case QuantFormat::kFp8:
      return "fp8";
  }
  return "?";
}

bool IsFloatDType(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kF8E4M3:
      return "F8_E4M3";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  if (name == "F32" || name == "float32") return DType::kF32;
  if (name == "F16" || name == "float16") return DType::kF16;
  if (name == "BF16" || name == "bfloat16") return DType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype \"", std::string(name), "\" (supported: F32, F16, BF16)"));
}

absl::StatusOr<DType> ParseTensorDType(std::string_view name) {
  if (name == "I32") return DType::kI32;
  if (name == "F8_E4M3") return DType::kF8E4M3;
  if (name == "F32" || name == "F16" || name == "BF16") return ParseDType(name);
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype \"", std::string(name),
                                                 "\" (supported: F32, F16, BF16, I32, F8_E4M3)"));
}

float Fp8E4M3ToF32(uint8_t code) {
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  const int exp = (code >> 3) & 0xf;
  const int mant = code & 0x7;
  if (exp == 0xf && mant == 0x7) return std::nanf("");
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), -9);  // subnormal: m/8 * 2^-6
  return sign * std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, exp - 7);
}

uint8_t F32ToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  const float a = std::min(std::fabs(f), 448.0f);
  // The 127 non-negative finite codes are increasing in value: find the
  // nearest, ties to the even code.
  int lo = 0, hi = 0x7e;
  while (lo < hi) {  // first code whose value >= a
    const int mid = (lo + hi) / 2;
    if (Fp8E4M3ToF32(static_cast<uint8_t>(mid)) < a)
      lo = mid + 1;
    else
      hi = mid;
  }
  int best = lo;
  if (lo > 0) {
    const float above = Fp8E4M3ToF32(static_cast<uint8_t>(lo)) - a;
    const float below = a - Fp8E4M3ToF32(static_cast<uint8_t>(lo - 1));
    if (below < above || (below == above && ((lo - 1) & 1) == 0)) best = lo - 1;
  }
  return static_cast<uint8_t>(sign | best);
}

float F16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t F32ToF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  if (std::isnan(f)) return sign | 0x7e00;
  float a = std::fabs(f);
  if (a >= 65520.0f) return sign | 0x7c00;
  if (a < 6.103515625e-05f) {  // subnormal in f16
    return sign | static_cast<uint16_t>(std::nearbyint(a / 5.960464477539063e-08f));
  }
  uint32_t abits = bits & 0x7fffffff;
  uint32_t exp = (abits >> 23) - 127 + 15;
  uint32_t mant = abits & 0x7fffff;
  uint32_t h = exp << 10 | mant >> 13;
  uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // round to nearest even
  return sign | static_cast<uint16_t>(h);
}

}  // namespace strata
