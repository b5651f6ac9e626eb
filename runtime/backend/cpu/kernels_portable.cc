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

LinearRowsFn SelectLinearRows() {
  const char* force = std::getenv("STRATA_CPU_KERNELS");
  if (force != nullptr && std::strcmp(force, "portable") == 0) return LinearRowsPortable;
  const bool cap_avx2 = force != nullptr && std::strcmp(force, "avx2") == 0;
  if (!cap_avx2 && CpuHasAvx512()) return LinearRowsAvx512;
  return CpuHasAvx2Fma() ? LinearRowsAvx2 : LinearRowsPortable;
}

}  // namespace strata::cpu
