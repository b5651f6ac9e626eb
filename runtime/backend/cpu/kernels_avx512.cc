// AVX-512 (F + BW) matrix kernels: twice the lanes of the AVX2 ones, half the
// instructions per weight. This file alone is compiled with -mavx512f
// -mavx512bw -mfma -mf16c; nothing here runs unless CpuHasAvx512() said yes.
#include <immintrin.h>

#include "runtime/backend/cpu/kernels.h"
#include "runtime/backend/cpu/linear_tiles.h"

namespace strata::cpu {

bool CpuHasAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         CpuHasAvx2Fma();
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
      const __m256i h = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i));
      if constexpr (D == DType::kBF16) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      } else {
        return _mm512_cvtph_ps(h);
      }
    }
  }
  static float Hsum(Reg v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace

void LinearRowsAvx512(const float* x, int64_t m, const Weight& w, int64_t n_begin,
                      int64_t n_end, float* out, int64_t ldo) {
  LinearRowsFor<Avx512>(x, m, w, n_begin, n_end, out, ldo);
}

}  // namespace strata::cpu
