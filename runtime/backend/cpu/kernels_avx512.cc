// AVX-512 (F + BW) matrix kernels: twice the lanes of the AVX2 ones, half the
// instructions per weight. This file alone is compiled with -mavx512f
// -mavx512bw -mfma -mf16c; nothing here runs unless CpuHasAvx512() said yes.
#include <immintrin.h>

#include "runtime/backend/cpu/kernels.h"
#include "runtime/backend/cpu/linear_tiles.h"
#include "runtime/backend/cpu/quant_tiles.h"

namespace strata::cpu {

bool CpuHasAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && CpuHasAvx2Fma();
}

namespace {

struct Avx512 {
  using Reg = __m512;
  static constexpr int kLanes = 16;
  static Reg Zero() { return _mm512_setzero_ps(); }
  static Reg LoadX(const float* p) { return _mm512_loadu_ps(p); }
  static Reg Fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  template <DType D>
  static Reg LoadW(const void* w, int64_t i) {
    if constexpr (D == DType::kF32) {
      return _mm512_loadu_ps(static_cast<const float*>(w) + i);
    } else {
      const __m256i h =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i));
      if constexpr (D == DType::kBF16) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      } else {
        return _mm512_cvtph_ps(h);
      }
    }
  }
  static float Hsum(Reg v) { return _mm512_reduce_add_ps(v); }
  static Reg Set1(float f) { return _mm512_set1_ps(f); }
  // 16 FP8 E4M3 codes as the f16 values 2^-8 of theirs: sign to bit 15,
  // exponent and mantissa shifted into f16's fields (its bias is 8 more).
  static Reg Fp8x16(const uint8_t* p) {
    const __m256i h = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i bits =
        _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x80)), 8),
                        _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x7f)), 7));
    return _mm512_cvtph_ps(bits);
  }
  static void Prefetch(const uint8_t* p) {
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
  }
  template <QuantFormat F>
  static void Decode32(const uint8_t* p, Reg out[2]) {
    if constexpr (F == QuantFormat::kInt4) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const __m128i nib = _mm_set1_epi8(0x0f);
      out[0] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(b, nib)));
      out[1] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), nib)));
    } else if constexpr (F == QuantFormat::kInt8) {
      for (int i = 0; i < 2; ++i) {
        out[i] = _mm512_cvtepi32_ps(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i))));
      }
    } else {
      out[0] = Fp8x16(p);
      out[1] = Fp8x16(p + 16);
    }
  }
};

}  // namespace

void LinearRowsAvx512(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                      float* out, int64_t ldo) {
  LinearRowsFor<Avx512>(x, m, w, n_begin, n_end, out, ldo);
}

void QuantRowsAvx512(const float* x, const float* xsum, int64_t m, const Weight& w, int64_t n_begin,
                     int64_t n_end, float* out, int64_t ldo) {
  QuantRowsFor<Avx512>(x, xsum, m, w, n_begin, n_end, out, ldo);
}

}  // namespace strata::cpu
