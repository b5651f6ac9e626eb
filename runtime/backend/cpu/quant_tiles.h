// The quantized matrix kernel shared by the SIMD variants (runtime/quant.h
// describes the packed layout). Included only by kernels_avx2.cc and
// kernels_avx512.cc, each compiled for its ISA, with a traits type V
// providing Reg, kLanes, Zero(), LoadX(p), Fma(a, b, c), Set1(f), Hsum(r), Prefetch(p) and
// Decode32<F>(codes, Reg out[32 / kLanes]): 32 consecutive codes as f32.
//
// Codes are widened in registers, 32 at a time, and never written out as
// floats. Per (row, group): sum_j code_j * x_j in f32 lanes, scaled once per
// group into the row's total; the offsets' part, offset_g * sum_j x_j, comes
// from the per-group sums of x the caller computed once for every row.
#ifndef STRATA_RUNTIME_BACKEND_CPU_QUANT_TILES_H_
#define STRATA_RUNTIME_BACKEND_CPU_QUANT_TILES_H_

#include <algorithm>

#include "runtime/backend/cpu/kernels.h"

namespace strata::cpu {
namespace {

// Bytes of one row's codes, and of 32 codes.
inline int64_t QuantRowBytes(const Weight& w) {
  return w.quant == QuantFormat::kInt4 ? w.cols / 2 : w.cols;
}

template <class V, QuantFormat F, int R, int C>
inline void QuantTile(const float* x, const float* xsum, const Weight& w, int64_t n, int64_t t,
                      float* out, int64_t ldo) {
  constexpr int kRegs = 32 / V::kLanes;
  constexpr int64_t kBlockBytes = F == QuantFormat::kInt4 ? 16 : 32;
  const int64_t k = w.cols, gs = w.group_size, groups = w.groups();
  const int64_t row_bytes = QuantRowBytes(w);
  const auto* codes = static_cast<const uint8_t*>(w.data);
  // FP8 codes widen through f16 bit patterns, which are 2^-8 of the value.
  const float unit = F == QuantFormat::kFp8 ? 256.0f : 1.0f;
  typename V::Reg total[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) total[r][c] = V::Zero();
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t jb = g * gs, je = std::min(k, jb + gs);
    typename V::Reg acc[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = V::Zero();
    for (int64_t j = jb; j < je; j += 32) {
      // The same cache line of the next tile's rows (they follow these in
      // memory): one tile ahead, so decode waits on bandwidth, not latency.
      const int64_t at = (j / 32) * kBlockBytes;
      if (at % 64 == 0) {
        for (int r = 0; r < R; ++r) V::Prefetch(codes + (n + 2 * R + r) * row_bytes + at);
      }
      typename V::Reg wv[R][kRegs];
      for (int r = 0; r < R; ++r) {
        V::template Decode32<F>(codes + (n + r) * row_bytes + (j / 32) * kBlockBytes, wv[r]);
      }
      for (int c = 0; c < C; ++c) {
        const float* xr = x + (t + c) * k + j;
        for (int i = 0; i < kRegs; ++i) {
          const typename V::Reg xv = V::LoadX(xr + i * V::kLanes);
          for (int r = 0; r < R; ++r) acc[r][c] = V::Fma(wv[r][i], xv, acc[r][c]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      const typename V::Reg s = V::Set1(w.scales[(n + r) * groups + g] * unit);
      for (int c = 0; c < C; ++c) total[r][c] = V::Fma(acc[r][c], s, total[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float sum = V::Hsum(total[r][c]);
      if (w.offsets != nullptr) {
        const float* off = w.offsets + (n + r) * groups;
        const float* xs = xsum + (t + c) * groups;
        for (int64_t g = 0; g < groups; ++g) sum += off[g] * xs[g];
      }
      out[(t + c) * ldo + n + r] = sum;
    }
  }
}

template <class V, QuantFormat F, int R>
inline void QuantTokens(const float* x, const float* xsum, int64_t m, const Weight& w, int64_t n,
                        float* out, int64_t ldo) {
  int64_t t = 0;
  for (; t + 4 <= m; t += 4) QuantTile<V, F, R, 4>(x, xsum, w, n, t, out, ldo);
  switch (m - t) {
    case 3:
      QuantTile<V, F, R, 3>(x, xsum, w, n, t, out, ldo);
      break;
    case 2:
      QuantTile<V, F, R, 2>(x, xsum, w, n, t, out, ldo);
      break;
    case 1:
      QuantTile<V, F, R, 1>(x, xsum, w, n, t, out, ldo);
      break;
    default:
      break;
  }
}

template <class V, QuantFormat F>
void QuantRowsTyped(const float* x, const float* xsum, int64_t m, const Weight& w, int64_t n_begin,
                    int64_t n_end, float* out, int64_t ldo) {
  // Tokens are taken 64 at a time so their x stays in L2 while the rows pass.
  constexpr int64_t kTokenBlock = 64;
  for (int64_t tb = 0; tb < m; tb += kTokenBlock) {
    const int64_t tm = std::min(kTokenBlock, m - tb);
    const float* xb = x + tb * w.cols;
    const float* sb = xsum + tb * w.groups();
    float* ob = out + tb * ldo;
    int64_t n = n_begin;
    if (tm < 4) {
      // Decode: four rows' code streams in flight at once.
      for (; n + 4 <= n_end; n += 4) QuantTokens<V, F, 4>(xb, sb, tm, w, n, ob, ldo);
    } else {
      for (; n + 2 <= n_end; n += 2) QuantTokens<V, F, 2>(xb, sb, tm, w, n, ob, ldo);
    }
    for (; n < n_end; ++n) QuantTokens<V, F, 1>(xb, sb, tm, w, n, ob, ldo);
  }
}

template <class V>
void QuantRowsFor(const float* x, const float* xsum, int64_t m, const Weight& w, int64_t n_begin,
                  int64_t n_end, float* out, int64_t ldo) {
  switch (w.quant) {
    case QuantFormat::kInt4:
      QuantRowsTyped<V, QuantFormat::kInt4>(x, xsum, m, w, n_begin, n_end, out, ldo);
      break;
    case QuantFormat::kInt8:
      QuantRowsTyped<V, QuantFormat::kInt8>(x, xsum, m, w, n_begin, n_end, out, ldo);
      break;
    case QuantFormat::kFp8:
      QuantRowsTyped<V, QuantFormat::kFp8>(x, xsum, m, w, n_begin, n_end, out, ldo);
      break;
    case QuantFormat::kNone:
      break;
  }
}

}  // namespace
}  // namespace strata::cpu

#endif  // STRATA_RUNTIME_BACKEND_CPU_QUANT_TILES_H_
