// CPU kernels behind the CPU backend. Each exists in a portable form and, in
// kernels_avx2.cc / kernels_avx512.cc, SIMD forms chosen at run time.
#ifndef STRATA_RUNTIME_BACKEND_CPU_KERNELS_H_
#define STRATA_RUNTIME_BACKEND_CPU_KERNELS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/backend/backend.h"

namespace strata::cpu {

// The reduction over k is cut into blocks of this many elements; each
// block's partial dot is reduced and added to the output in order. Both
// kernels and every batch size use the same blocking, so a token's result
// does not depend on how many tokens share its batch.
inline constexpr int64_t kLinearKBlock = 512;

// out[t * ldo + n] = dot(x[t, :], w[n, :]) for t < m and n in [n_begin, n_end).
using LinearRowsFn = void (*)(const float* x, int64_t m, const Weight& w, int64_t n_begin,
                              int64_t n_end, float* out, int64_t ldo);
void LinearRowsPortable(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                        float* out, int64_t ldo);
void LinearRowsAvx2(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                    float* out, int64_t ldo);
void LinearRowsAvx512(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                      float* out, int64_t ldo);

// A quantized weight's rows (runtime/quant.h): out[t * ldo + n] = dot(x[t, :],
// w[n, :]) for t < m and n in [n_begin, n_end), where x is in the codes'
// column order (already gathered through w.perm) and xsum[t * groups + g] is
// the sum of x[t, :] over group g's columns.
using QuantRowsFn = void (*)(const float* x, const float* xsum, int64_t m, const Weight& w,
                             int64_t n_begin, int64_t n_end, float* out, int64_t ldo);
void QuantRowsPortable(const float* x, const float* xsum, int64_t m, const Weight& w,
                       int64_t n_begin, int64_t n_end, float* out, int64_t ldo);
void QuantRowsAvx2(const float* x, const float* xsum, int64_t m, const Weight& w, int64_t n_begin,
                   int64_t n_end, float* out, int64_t ldo);
void QuantRowsAvx512(const float* x, const float* xsum, int64_t m, const Weight& w, int64_t n_begin,
                     int64_t n_end, float* out, int64_t ldo);
// Whether this CPU runs the AVX2 kernels (AVX2, FMA and F16C).
bool CpuHasAvx2Fma();
// Whether this CPU runs the AVX-512 kernels (AVX-512 F and BW, plus the above).
bool CpuHasAvx512();
// Whether this CPU has AMX-BF16 tiles and AVX512-BF16, Linux lets this
// process use the tiles, plus the above. The first call asks Linux for the
// tile state.
bool CpuHasAmxBf16();

// The CPU backend's kernel set. portable, avx2 and avx512 compute in f32 from
// the weights' exact values. amx-bf16 multiplies bf16 matrices on AMX tiles
// by activations split into two bf16 halves (SplitRowsToBf16): f32 products
// and sums, activations within 2^-16 of their value (docs/cpu-kernels.md);
// f32 and f16 weights, and quantized ones, take avx512's kernels there.
enum class CpuKernels { kPortable, kAvx2, kAvx512, kAmxBf16 };
// "portable", "avx2", "avx512", "amx-bf16"
const char* CpuKernelsName(CpuKernels kernels);
// Whether the set multiplies bf16 matrices from their panel copies.
inline bool UsesBf16Panels(CpuKernels kernels) { return kernels == CpuKernels::kAmxBf16; }
// The sets this CPU runs, narrowest first.
std::vector<CpuKernels> SupportedCpuKernels();
// `name` is a set's name, or "" / "auto" for the default: the fastest set
// this CPU runs (the last of SupportedCpuKernels()). An unknown name, or a set
// this CPU lacks, is an error naming `source` (the flag or variable it came
// from).
absl::StatusOr<CpuKernels> ParseCpuKernels(const std::string& name, const std::string& source);
// The f32 kernels of a set, and the quantized ones.
LinearRowsFn LinearRowsOf(CpuKernels kernels);
QuantRowsFn QuantRowsOf(CpuKernels kernels);

// The amx-bf16 set's bf16 matrices (kernels_amx.cc): a copy in panels of kBf16PanelRows rows, each
// a run of k-pairs holding the panel's rows' elements 2j and 2j+1 in turn (zeros past the last row
// or column).
inline constexpr int64_t kBf16PanelRows = 32;
// k-pairs per row, rounded up to whole AMX tiles (16 pairs).
inline int64_t Bf16PairStride(int64_t cols) { return (cols + 31) / 32 * 16; }
inline int64_t Bf16Panels(int64_t rows) { return (rows + kBf16PanelRows - 1) / kBf16PanelRows; }
inline int64_t Bf16PanelElements(int64_t rows, int64_t cols) {
  return Bf16Panels(rows) * kBf16PanelRows * Bf16PairStride(cols) * 2;
}
// Writes panels [p_begin, p_end) of the row-major bf16 matrix w.
void PackBf16Panels(const uint16_t* w, int64_t rows, int64_t cols, int64_t p_begin, int64_t p_end,
                    uint16_t* panels);

// Activations as two bf16 halves: hi = x rounded to bf16, lo = (x - hi)
// rounded to bf16 (x - hi is exact in f32), so hi + lo is x within 2^-16 of
// |x|, and w * hi + w * lo is exact in f32 for a bf16 w. Tokens go in groups
// of kSplitGroup: a group is 2 * kSplitGroup rows of 2 * Bf16PairStride(k)
// elements, the group's hi rows then its lo rows (one AMX A tile).
inline constexpr int64_t kSplitGroup = 8;
inline int64_t SplitRows(int64_t m) {
  return (m + kSplitGroup - 1) / kSplitGroup * 2 * kSplitGroup;
}
// Writes the SplitRows(m) rows of m tokens of k activations (zeros past m).
void SplitRowsToBf16(const float* x, int64_t m, int64_t k, uint16_t* out);
// out[t * ldo + n] = dot(x[t], w[n]) for the rows of panels [p_begin,
// p_end), from w.bf16_panels and x as SplitRowsToBf16 wrote it, on AMX
// tiles. Each output comes from the same tile operations whatever m or the
// panel range, so a token's result does not depend on its batch.
void LinearPanelsAmx(const uint16_t* x, int64_t m, const Weight& w, int64_t p_begin, int64_t p_end,
                     float* out, int64_t ldo);

// Element `i` of a weight vector/matrix as f32.
float WeightAt(const Weight& w, int64_t i);

}  // namespace strata::cpu

#endif  // STRATA_RUNTIME_BACKEND_CPU_KERNELS_H_
