// AVX2 + FMA + F16C matrix kernels. This file alone is compiled with
// -mavx2 -mfma -mf16c; nothing here runs unless CpuHasAvx2Fma() said yes.
#include <immintrin.h>

#include <algorithm>

#include "runtime/backend/cpu/kernels.h"

namespace strata::cpu {

bool CpuHasAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}

namespace {

// Eight consecutive weights starting at element `i`, as f32.
template <DType D>
inline __m256 Load8(const void* w, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  } else if constexpr (D == DType::kBF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(
        static_cast<const uint16_t*>(w) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(
        static_cast<const uint16_t*>(w) + i));
    return _mm256_cvtph_ps(h);
  }
}

// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)); the portable kernel sums alike.
inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

// An R-rows-of-w by C-tokens tile over k in [kb, ke): R*C accumulators stay in
// registers; each weight vector is converted once and used C times.
template <DType D, int R, int C>
inline void Tile(const float* x, const Weight& w, int64_t n, int64_t t, int64_t kb, int64_t ke,
                 float* out, int64_t ldo) {
  const int64_t k = w.cols;
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  int64_t i = kb;
  for (; i + 8 <= ke; i += 8) {
    __m256 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = Load8<D>(w.data, (n + r) * k + i);
    for (int c = 0; c < C; ++c) {
      const __m256 xv = _mm256_loadu_ps(x + (t + c) * k + i);
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float tail = 0;
      for (int64_t j = i; j < ke; ++j) tail += WeightAt(w, (n + r) * k + j) * x[(t + c) * k + j];
      out[(t + c) * ldo + n + r] += Hsum(acc[r][c]) + tail;
    }
  }
}

template <DType D, int R>
inline void TokensForRows(const float* x, int64_t t_begin, int64_t t_end, const Weight& w,
                          int64_t n, int64_t kb, int64_t ke, float* out, int64_t ldo) {
  int64_t t = t_begin;
  for (; t + 4 <= t_end; t += 4) Tile<D, R, 4>(x, w, n, t, kb, ke, out, ldo);
  switch (t_end - t) {
    case 3: Tile<D, R, 3>(x, w, n, t, kb, ke, out, ldo); break;
    case 2: Tile<D, R, 2>(x, w, n, t, kb, ke, out, ldo); break;
    case 1: Tile<D, R, 1>(x, w, n, t, kb, ke, out, ldo); break;
    default: break;
  }
}

template <DType D>
void LinearRowsTyped(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                     float* out, int64_t ldo) {
  for (int64_t t = 0; t < m; ++t) std::fill(out + t * ldo + n_begin, out + t * ldo + n_end, 0.f);
  const int64_t k = w.cols;
  // Tokens are taken 64 at a time so their k-block of x (64 x 512 floats)
  // stays in L2 while every row of this thread's range passes over it.
  constexpr int64_t kTokenBlock = 64;
  for (int64_t kb = 0; kb < k; kb += kLinearKBlock) {
    const int64_t ke = std::min(k, kb + kLinearKBlock);
    for (int64_t tb = 0; tb < m; tb += kTokenBlock) {
      const int64_t te = std::min(m, tb + kTokenBlock);
      int64_t n = n_begin;
      if (te - tb < 4) {
        // Decode: one token against 4 rows at a time keeps 4 streams in flight.
        for (; n + 4 <= n_end; n += 4) TokensForRows<D, 4>(x, tb, te, w, n, kb, ke, out, ldo);
      } else {
        for (; n + 3 <= n_end; n += 3) TokensForRows<D, 3>(x, tb, te, w, n, kb, ke, out, ldo);
      }
      for (; n < n_end; ++n) TokensForRows<D, 1>(x, tb, te, w, n, kb, ke, out, ldo);
    }
  }
}

}  // namespace

void LinearRowsAvx2(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                    float* out, int64_t ldo) {
  switch (w.dtype) {
    case DType::kF32: LinearRowsTyped<DType::kF32>(x, m, w, n_begin, n_end, out, ldo); break;
    case DType::kBF16: LinearRowsTyped<DType::kBF16>(x, m, w, n_begin, n_end, out, ldo); break;
    case DType::kF16: LinearRowsTyped<DType::kF16>(x, m, w, n_begin, n_end, out, ldo); break;
  }
}

}  // namespace strata::cpu
