#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "runtime/backend/cpu/kernels.h"

namespace strata::cpu {

float WeightAt(const Weight& w, int64_t i) { return ElementAsF32(w.dtype, w.data, i); }

void LinearRowsPortable(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                        float* out, int64_t ldo) {
  const int64_t k = w.cols;
  // Eight lanes per partial sum, reduced per k-block, mirroring the AVX2 kernel.
  for (int64_t n = n_begin; n < n_end; ++n) {
    for (int64_t t = 0; t < m; ++t) out[t * ldo + n] = 0;
  }
  for (int64_t kb = 0; kb < k; kb += kLinearKBlock) {
    const int64_t ke = kb + kLinearKBlock < k ? kb + kLinearKBlock : k;
    for (int64_t n = n_begin; n < n_end; ++n) {
      const int64_t row = n * k;
      for (int64_t t = 0; t < m; ++t) {
        const float* xr = x + t * k;
        float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i = kb;
        for (; i + 8 <= ke; i += 8) {
          for (int l = 0; l < 8; ++l) lanes[l] += WeightAt(w, row + i + l) * xr[i + l];
        }
        float tail = 0;
        for (; i < ke; ++i) tail += WeightAt(w, row + i) * xr[i];
        float sum = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) +
                    ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
        out[t * ldo + n] += sum + tail;
      }
    }
  }
}

void QuantRowsPortable(const float* x, const float* xsum, int64_t m, const Weight& w,
                       int64_t n_begin, int64_t n_end, float* out, int64_t ldo) {
  static const auto* fp8 = [] {
    auto* table = new float[256];
    for (int c = 0; c < 256; ++c) table[c] = Fp8E4M3ToF32(static_cast<uint8_t>(c));
    return table;
  }();
  const int64_t k = w.cols, gs = w.group_size, groups = w.groups();
  const auto* codes = static_cast<const uint8_t*>(w.data);
  const int64_t row_bytes = w.quant == QuantFormat::kInt4 ? k / 2 : k;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = codes + n * row_bytes;
    for (int64_t t = 0; t < m; ++t) {
      const float* xr = x + t * k;
      float total = 0;
      for (int64_t g = 0; g < groups; ++g) {
        float acc = 0;
        for (int64_t j = g * gs; j < std::min(k, (g + 1) * gs); ++j) {
          float code;
          if (w.quant == QuantFormat::kInt4) {
            const uint8_t b = row[(j / 32) * 16 + (j % 16)];
            code = static_cast<float>((j % 32) < 16 ? (b & 0x0f) : (b >> 4));
          } else if (w.quant == QuantFormat::kInt8) {
            code = static_cast<float>(row[j]);
          } else {
            code = fp8[row[j]];
          }
          acc += code * xr[j];
        }
        total += acc * w.scales[n * groups + g];
        if (w.offsets != nullptr) total += w.offsets[n * groups + g] * xsum[t * groups + g];
      }
      out[t * ldo + n] = total;
    }
  }
}

QuantRowsFn SelectQuantRows() {
  const LinearRowsFn linear = SelectLinearRows();
  if (linear == LinearRowsAvx512) return QuantRowsAvx512;
  return linear == LinearRowsAvx2 ? QuantRowsAvx2 : QuantRowsPortable;
}

LinearRowsFn SelectLinearRows() {
  const char* force = std::getenv("STRATA_CPU_KERNELS");
  if (force != nullptr && std::strcmp(force, "portable") == 0) return LinearRowsPortable;
  const bool cap_avx2 = force != nullptr && std::strcmp(force, "avx2") == 0;
  if (!cap_avx2 && CpuHasAvx512()) return LinearRowsAvx512;
  return CpuHasAvx2Fma() ? LinearRowsAvx2 : LinearRowsPortable;
}

}  // namespace strata::cpu
