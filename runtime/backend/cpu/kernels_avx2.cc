// AVX2 + FMA + F16C matrix kernels. This file alone is compiled with
// -mavx2 -mfma -mf16c; nothing here runs unless CpuHasAvx2Fma() said yes.
#include <cpuid.h>
#include <immintrin.h>

#include "runtime/backend/cpu/kernels.h"
#include "runtime/backend/cpu/linear_tiles.h"
#include "runtime/backend/cpu/quant_tiles.h"

namespace strata::cpu {

bool CpuHasAvx2Fma() {
  __builtin_cpu_init();
  // F16C from CPUID leaf 1 (ECX bit 29): clang has no __builtin_cpu_supports
  // name for it.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

namespace {

struct Avx2 {
  using Reg = __m256;
  static constexpr int kLanes = 8;
  static Reg Zero() { return _mm256_setzero_ps(); }
  static Reg LoadX(const float* p) { return _mm256_loadu_ps(p); }
  static Reg Fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  // Eight consecutive weights starting at element `i`, as f32.
  template <DType D>
  static Reg LoadW(const void* w, int64_t i) {
    if constexpr (D == DType::kF32) {
      return _mm256_loadu_ps(static_cast<const float*>(w) + i);
    } else {
      const __m128i h =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
      if constexpr (D == DType::kBF16) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      } else {
        return _mm256_cvtph_ps(h);
      }
    }
  }
  // ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)); the portable kernel sums alike.
  static float Hsum(Reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
  }
  static Reg Set1(float f) { return _mm256_set1_ps(f); }
  // 8 FP8 E4M3 codes as the f16 values 2^-8 of theirs (see kernels_avx512.cc).
  static Reg Fp8x8(const uint8_t* p) {
    const __m128i h = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    const __m128i bits = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi16(0x80)), 8),
                                      _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7f)), 7));
    return _mm256_cvtph_ps(bits);
  }
  static void Prefetch(const uint8_t* p) {
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
  }
  template <QuantFormat F>
  static void Decode32(const uint8_t* p, Reg out[4]) {
    if constexpr (F == QuantFormat::kInt4) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const __m128i nib = _mm_set1_epi8(0x0f);
      const __m128i lo = _mm_and_si128(b, nib);
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), nib);
      out[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
      out[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
      out[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
      out[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
    } else if constexpr (F == QuantFormat::kInt8) {
      for (int i = 0; i < 4; ++i) {
        out[i] = _mm256_cvtepi32_ps(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * i))));
      }
    } else {
      for (int i = 0; i < 4; ++i) out[i] = Fp8x8(p + 8 * i);
    }
  }
};

}  // namespace

void LinearRowsAvx2(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                    float* out, int64_t ldo) {
  LinearRowsFor<Avx2>(x, m, w, n_begin, n_end, out, ldo);
}

void QuantRowsAvx2(const float* x, const float* xsum, int64_t m, const Weight& w, int64_t n_begin,
                   int64_t n_end, float* out, int64_t ldo) {
  QuantRowsFor<Avx2>(x, xsum, m, w, n_begin, n_end, out, ldo);
}

}  // namespace strata::cpu
