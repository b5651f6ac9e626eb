// CPU kernels behind the CPU backend. Each exists in a portable form and, in
// kernels_avx2.cc / kernels_avx512.cc, SIMD forms chosen at run time.
#ifndef STRATA_RUNTIME_BACKEND_CPU_KERNELS_H_
#define STRATA_RUNTIME_BACKEND_CPU_KERNELS_H_

#include <cstdint>

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
void LinearRowsPortable(const float* x, int64_t m, const Weight& w, int64_t n_begin,
                        int64_t n_end, float* out, int64_t ldo);
void LinearRowsAvx2(const float* x, int64_t m, const Weight& w, int64_t n_begin, int64_t n_end,
                    float* out, int64_t ldo);
void LinearRowsAvx512(const float* x, int64_t m, const Weight& w, int64_t n_begin,
                      int64_t n_end, float* out, int64_t ldo);

// A quantized weight's rows (runtime/quant.h): out[t * ldo + n] = dot(x[t, :],
// w[n, :]) for t < m and n in [n_begin, n_end), where x is in the codes'
// column order (already gathered through w.perm) and xsum[t * groups + g] is
// the sum of x[t, :] over group g's columns.
using QuantRowsFn = void (*)(const float* x, const float* xsum, int64_t m, const Weight& w,
                             int64_t n_begin, int64_t n_end, float* out, int64_t ldo);
void QuantRowsPortable(const float* x, const float* xsum, int64_t m, const Weight& w,
                       int64_t n_begin, int64_t n_end, float* out, int64_t ldo);
void QuantRowsAvx2(const float* x, const float* xsum, int64_t m, const Weight& w,
                   int64_t n_begin, int64_t n_end, float* out, int64_t ldo);
void QuantRowsAvx512(const float* x, const float* xsum, int64_t m, const Weight& w,
                     int64_t n_begin, int64_t n_end, float* out, int64_t ldo);
// The quantized kernel of the same ISA as SelectLinearRows() picks.
QuantRowsFn SelectQuantRows();

// Whether this CPU runs the AVX2 kernels (AVX2, FMA and F16C).
bool CpuHasAvx2Fma();
// Whether this CPU runs the AVX-512 kernels (AVX-512 F and BW, plus the above).
bool CpuHasAvx512();
// The widest kernel this CPU runs. STRATA_CPU_KERNELS=portable|avx2 caps it.
LinearRowsFn SelectLinearRows();

// Element `i` of a weight vector/matrix as f32.
float WeightAt(const Weight& w, int64_t i);

}  // namespace strata::cpu

#endif  // STRATA_RUNTIME_BACKEND_CPU_KERNELS_H_
