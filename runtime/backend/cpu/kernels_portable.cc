#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
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

const char* CpuKernelsName(CpuKernels kernels) {
  switch (kernels) {
    case CpuKernels::kPortable:
      return "portable";
    case CpuKernels::kAvx2:
      return "avx2";
    case CpuKernels::kAvx512:
      return "avx512";
    case CpuKernels::kAmxBf16:
      return "amx-bf16";
  }
  return "?";
}

std::vector<CpuKernels> SupportedCpuKernels() {
  std::vector<CpuKernels> sets = {CpuKernels::kPortable};
  if (CpuHasAvx2Fma()) sets.push_back(CpuKernels::kAvx2);
  if (CpuHasAvx512()) sets.push_back(CpuKernels::kAvx512);
  if (CpuHasAmxBf16()) sets.push_back(CpuKernels::kAmxBf16);
  return sets;
}

absl::StatusOr<CpuKernels> ParseCpuKernels(const std::string& name, const std::string& source) {
  const std::vector<CpuKernels> sets = SupportedCpuKernels();
  if (name.empty() || name == "auto") return sets.back();
  std::string known;
  for (CpuKernels k :
       {CpuKernels::kPortable, CpuKernels::kAvx2, CpuKernels::kAvx512, CpuKernels::kAmxBf16}) {
    if (name == CpuKernelsName(k)) {
      if (std::find(sets.begin(), sets.end(), k) != sets.end()) return k;
      return absl::FailedPreconditionError(absl::StrCat(
          source, "=", name, ": this CPU lacks the instructions those kernels need; it runs ",
          CpuKernelsName(sets.back()), " and narrower"));
    }
    absl::StrAppend(&known, known.empty() ? "" : ", ", CpuKernelsName(k));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source, "=", name, ": unknown CPU kernel set (auto, ", known, ")"));
}

LinearRowsFn LinearRowsOf(CpuKernels kernels) {
  switch (kernels) {
    case CpuKernels::kPortable:
      return LinearRowsPortable;
    case CpuKernels::kAvx2:
      return LinearRowsAvx2;
    case CpuKernels::kAvx512:
    case CpuKernels::kAmxBf16:
      return LinearRowsAvx512;
  }
  return LinearRowsPortable;
}

QuantRowsFn QuantRowsOf(CpuKernels kernels) {
  switch (kernels) {
    case CpuKernels::kPortable:
      return QuantRowsPortable;
    case CpuKernels::kAvx2:
      return QuantRowsAvx2;
    case CpuKernels::kAvx512:
    case CpuKernels::kAmxBf16:
      return QuantRowsAvx512;
  }
  return QuantRowsPortable;
}

}  // namespace strata::cpu
