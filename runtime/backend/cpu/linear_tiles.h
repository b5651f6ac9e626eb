// The blocked matrix kernel shared by the SIMD variants. Included only by
// kernels_avx2.cc and kernels_avx512.cc, each compiled for its ISA, with a
// traits type V providing: Reg, kLanes, Zero(), LoadX(p), LoadW<D>(w, i),
// Fma(a, b, c) and Hsum(r). Everything here has internal linkage per file.
#ifndef STRATA_RUNTIME_BACKEND_CPU_LINEAR_TILES_H_
#define STRATA_RUNTIME_BACKEND_CPU_LINEAR_TILES_H_

#include <algorithm>

#include "runtime/backend/cpu/kernels.h"

namespace strata::cpu {
namespace {

// An R-rows-of-w by C-tokens tile over k in [kb, ke): R*C accumulators stay in
// registers; each weight vector is converted once and used C times.
template <class V, DType D, int R, int C>
inline void Tile(const float* x, const Weight& w, int64_t n, int64_t t, int64_t kb, int64_t ke,
                 float* out, int64_t ldo) {
  const int64_t k = w.cols;
  typename V::Reg acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = V::Zero();
  int64_t i = kb;
  for (; i + V::kLanes <= ke; i += V::kLanes) {
    typename V::Reg wv[R];
    for (int r = 0; r < R; ++r) wv[r] = V::template LoadW<D>(w.data, (n + r) * k + i);
    for (int c = 0; c < C; ++c) {
      const typename V::Reg xv = V::LoadX(x + (t + c) * k + i);
      for (int r = 0; r < R; ++r) acc[r][c] = V::Fma(wv[r], xv, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float tail = 0;
      for (int64_t j = i; j < ke; ++j) tail += WeightAt(w, (n + r) * k + j) * x[(t + c) * k + j];
      out[(t + c) * ldo + n + r] += V::Hsum(acc[r][c]) + tail;
    }
  }
}

template <class V, DType D, int R>
inline void TokensForRows(const float* x, int64_t t_begin, int64_t t_end, const Weight& w,
                          int64_t n, int64_t kb, int64_t ke, float* out, int64_t ldo) {
  int64_t t = t_begin;
  for (; t + 4 <= t_end; t += 4) Tile<V, D, R, 4>(x, w, n, t, kb, ke, out, ldo);
  switch (t_end - t) {
    case 3:
      Tile<V, D, R, 3>(x, w, n, t, kb, ke, out, ldo);
      break;
    case 2:
      Tile<V, D, R, 2>(x, w, n, t, kb, ke, out, ldo);
      break;
    case 1:
      Tile<V, D, R, 1>(x, w, n, t, kb, ke, out, ldo);
      break;
    default:
      break;
  }
}

template <class V, DType D>
void LinearRowsTyped(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                     float* out, int64_t ldo) {
  for (int64_t t = 0; t < m; ++t) std::fill(out + t * ldo + n_begin, out + t * ldo + n_end, 0.f);
  const int64_t k = w.cols;
  if (m < 4) {
    // Decode: each group of 4 rows is read start to end before the next, so
    // the weights stream through memory in 4 long sequential runs the
    // prefetchers follow; x (a few rows of k floats) stays in L1/L2. The
    // k-blocks are still summed in order, so the result is the same as below.
    int64_t n = n_begin;
    for (; n + 4 <= n_end; n += 4) {
      for (int64_t kb = 0; kb < k; kb += kLinearKBlock) {
        TokensForRows<V, D, 4>(x, 0, m, w, n, kb, std::min(k, kb + kLinearKBlock), out, ldo);
      }
    }
    for (; n < n_end; ++n) {
      for (int64_t kb = 0; kb < k; kb += kLinearKBlock) {
        TokensForRows<V, D, 1>(x, 0, m, w, n, kb, std::min(k, kb + kLinearKBlock), out, ldo);
      }
    }
    return;
  }
  // Tokens are taken 64 at a time so their k-block of x (64 x 512 floats)
  // stays in L2 while every row of this thread's range passes over it.
  constexpr int64_t kTokenBlock = 64;
  for (int64_t kb = 0; kb < k; kb += kLinearKBlock) {
    const int64_t ke = std::min(k, kb + kLinearKBlock);
    for (int64_t tb = 0; tb < m; tb += kTokenBlock) {
      const int64_t te = std::min(m, tb + kTokenBlock);
      int64_t n = n_begin;
      if (te - tb < 4) {
        // A short last block of tokens: 4 rows at a time keeps 4 streams in flight.
        for (; n + 4 <= n_end; n += 4) TokensForRows<V, D, 4>(x, tb, te, w, n, kb, ke, out, ldo);
      } else {
        for (; n + 3 <= n_end; n += 3) TokensForRows<V, D, 3>(x, tb, te, w, n, kb, ke, out, ldo);
      }
      for (; n < n_end; ++n) TokensForRows<V, D, 1>(x, tb, te, w, n, kb, ke, out, ldo);
    }
  }
}

template <class V>
void LinearRowsFor(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                   float* out, int64_t ldo) {
  switch (w.dtype) {
    case DType::kF32:
      LinearRowsTyped<V, DType::kF32>(x, m, w, n_begin, n_end, out, ldo);
      break;
    case DType::kBF16:
      LinearRowsTyped<V, DType::kBF16>(x, m, w, n_begin, n_end, out, ldo);
      break;
    case DType::kF16:
      LinearRowsTyped<V, DType::kF16>(x, m, w, n_begin, n_end, out, ldo);
      break;
    case DType::kI32:
    case DType::kF8E4M3:
      break;  // quantized parts only: never a plain weight (quant_tiles.h)
  }
}

}  // namespace
}  // namespace strata::cpu

#endif  // STRATA_RUNTIME_BACKEND_CPU_LINEAR_TILES_H_
