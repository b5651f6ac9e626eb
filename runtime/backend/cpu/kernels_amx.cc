// The amx-bf16 kernel set's bf16 matrices.
//
// At load, each bf16 matrix gets a copy in 32-row panels of k-pairs
// (PackBf16Panels): for panel p and pair j, the 32 rows' elements 2j and
// 2j+1, one after the other, 128 bytes. Pairs j..j+15 of a panel's first or
// last 16 rows are then an AMX B tile as they lie (16 rows of 64 bytes, 128
// bytes apart).
//
// Activations are split once per call into two bf16 halves
// (SplitRowsToBf16); a group of 8 tokens' halves (8 hi rows, 8 lo rows) at
// pairs j..j+15 is an A tile. One tdpbf16ps adds 16 x 16 x 32 products into
// a C tile, whose rows t and t + 8 are then token t's hi and lo parts. Every
// product of a bf16 weight and a bf16 half is exact in f32, so the only
// departure from f32 arithmetic is the split, within 2^-16 of each
// activation, and the order of the f32 sums (docs/cpu-kernels.md).
//
// Tokens always go 8 at a time (the rows past the batch are zeros), so a
// token's outputs come from the same tile operations in the same order
// whether the batch holds 1 token or 500: decode equals prefill bit for bit.
// This file alone is compiled with -mavx512bf16 -mamx-tile -mamx-bf16;
// nothing here runs unless CpuHasAmxBf16().
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "runtime/backend/cpu/kernels.h"
#include "runtime/dtype.h"

namespace strata::cpu {

bool CpuHasAmxBf16() {
  static const bool usable = [] {
    __builtin_cpu_init();
    if (!CpuHasAvx512() || !__builtin_cpu_supports("avx512bf16")) return false;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
    constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24;
    if ((d & kAmxBf16) == 0 || (d & kAmxTile) == 0) return false;
    // Linux gives a process the 8 KiB of tile data state only on request
    // (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); without it the first
    // tile instruction is a fault.
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
}

void SplitRowsToBf16(const float* x, int64_t m, int64_t k, uint16_t* out) {
  const int64_t stride = Bf16PairStride(k) * 2;
  // Rows of the last group past m are zeros (written once here, not the
  // whole buffer: a long prompt's activations are megabytes).
  const int64_t padded = SplitRows(m) / 2;
  for (int64_t t = m; t < padded; ++t) {
    uint16_t* hi = out + ((t / kSplitGroup) * 2 * kSplitGroup + t % kSplitGroup) * stride;
    std::fill(hi, hi + stride, uint16_t{0});
    std::fill(hi + kSplitGroup * stride, hi + (kSplitGroup + 1) * stride, uint16_t{0});
  }
  for (int64_t t = 0; t < m; ++t) {
    const int64_t group = t / kSplitGroup, lane = t % kSplitGroup;
    const float* xr = x + t * k;
    uint16_t* hi = out + (group * 2 * kSplitGroup + lane) * stride;
    uint16_t* lo = hi + kSplitGroup * stride;
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
      const __m512 v = _mm512_loadu_ps(xr + i);
      const __m256bh h = _mm512_cvtneps_pbh(v);
      // hi back to f32 (bf16 is f32's top half): the rest is exact in f32.
      const __m512 back = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(reinterpret_cast<const __m256i&>(h)), 16));
      const __m256bh l = _mm512_cvtneps_pbh(_mm512_sub_ps(v, back));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + i), reinterpret_cast<const __m256i&>(h));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + i), reinterpret_cast<const __m256i&>(l));
    }
    for (; i < k; ++i) {
      hi[i] = F32ToBf16(xr[i]);
      lo[i] = F32ToBf16(xr[i] - Bf16ToF32(hi[i]));
    }
    std::fill(hi + k, hi + stride, uint16_t{0});
    std::fill(lo + k, lo + stride, uint16_t{0});
  }
}

void PackBf16Panels(const uint16_t* w, int64_t rows, int64_t cols, int64_t p_begin, int64_t p_end,
                    uint16_t* panels) {
  const int64_t pairs = Bf16PairStride(cols);
  for (int64_t p = p_begin; p < p_end; ++p) {
    uint16_t* dst = panels + p * pairs * 2 * kBf16PanelRows;
    for (int64_t r = 0; r < kBf16PanelRows; ++r) {
      const int64_t row = p * kBf16PanelRows + r;
      for (int64_t j = 0; j < pairs; ++j) {
        for (int64_t e = 0; e < 2; ++e) {
          const int64_t col = 2 * j + e;
          dst[(j * kBf16PanelRows + r) * 2 + e] =
              row < rows && col < cols ? w[row * cols + col] : uint16_t{0};
        }
      }
    }
  }
}

namespace {

// The LDTILECFG operand: palette 1, every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Tile state is per thread; each pool thread configures once.
void ConfigureTiles() {
  thread_local bool configured = false;
  if (configured) return;
  TileConfig config;
  for (int i = 0; i < 8; ++i) {
    config.rows[i] = 16;
    config.bytes_per_row[i] = 64;
  }
  _tile_loadconfig(&config);
  configured = true;
}

constexpr int64_t kPrefetchAhead = 16384;
// Token groups of a prompt taken against every panel before the next (128 tokens).
constexpr int64_t kGroupBlock = 16;

// Writes a stored 16 x 16 C tile's first `tokens` outputs (hi row + lo row)
// of its first `cols` columns.
inline void Emit(const float* tile, int64_t tokens, int64_t cols, float* out, int64_t ldo) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* hi = tile + t * 16;
    const float* lo = tile + (t + kSplitGroup) * 16;
    for (int64_t c = 0; c < cols; ++c) out[t * ldo + c] = hi[c] + lo[c];
  }
}

// Groups [gb, ge) of the split activations against panels [p_begin, p_end).
// Tiles: 0-3 accumulate (token group g, row half h) as 2g+h; 4-5 hold the
// two token groups' split activations; 6-7 the panel's two row halves.
void PanelsForGroups(const uint16_t* x, int64_t m, const Weight& w, int64_t p_begin, int64_t p_end,
                     float* out, int64_t ldo, int64_t gb, int64_t ge, float (*tile)[16 * 16]) {
  const int64_t pairs = Bf16PairStride(w.cols);
  const int64_t x_stride = pairs * 4;  // bytes per token row
  const int64_t group_elements = 2 * kSplitGroup * pairs * 2;
  for (int64_t p = p_begin; p < p_end; ++p) {
    const uint16_t* panel = w.bf16_panels + p * pairs * 2 * kBf16PanelRows;
    const int64_t n = p * kBf16PanelRows;
    const int64_t valid = std::min<int64_t>(kBf16PanelRows, w.rows - n);
    const int64_t cols[2] = {std::min<int64_t>(16, valid), std::max<int64_t>(0, valid - 16)};
    int64_t g = gb;
    for (; g + 2 <= ge; g += 2) {
      const uint16_t* x0 = x + g * group_elements;
      const uint16_t* x1 = x0 + group_elements;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t j = 0; j < pairs; j += 16) {
        _tile_loadd(6, panel + j * 64, 128);
        _tile_loadd(7, panel + j * 64 + 32, 128);
        _tile_loadd(4, x0 + j * 2, x_stride);
        _tile_loadd(5, x1 + j * 2, x_stride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, tile[0], 64);
      _tile_stored(1, tile[1], 64);
      _tile_stored(2, tile[2], 64);
      _tile_stored(3, tile[3], 64);
      for (int64_t gg = 0; gg < 2; ++gg) {
        const int64_t t0 = (g + gg) * kSplitGroup;
        const int64_t tokens = std::min<int64_t>(kSplitGroup, m - t0);
        for (int h = 0; h < 2; ++h) {
          if (cols[h] > 0)
            Emit(tile[2 * gg + h], tokens, cols[h], out + t0 * ldo + n + 16 * h, ldo);
        }
      }
    }
    if (g < ge) {
      const uint16_t* x0 = x + g * group_elements;
      _tile_zero(0);
      _tile_zero(1);
      for (int64_t j = 0; j < pairs; j += 16) {
        // Decode reads every panel once, from memory, and a tile load waits
        // for the products still reading its tile: ask for the lines
        // kPrefetchAhead bytes on (into the next panel near the end).
        const char* ahead = reinterpret_cast<const char*>(panel + j * 64) + kPrefetchAhead;
        for (int l = 0; l < 2048; l += 64) _mm_prefetch(ahead + l, _MM_HINT_T0);
        _tile_loadd(6, panel + j * 64, 128);
        _tile_loadd(7, panel + j * 64 + 32, 128);
        _tile_loadd(4, x0 + j * 2, x_stride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
      }
      _tile_stored(0, tile[0], 64);
      _tile_stored(1, tile[1], 64);
      const int64_t t0 = g * kSplitGroup;
      const int64_t tokens = std::min<int64_t>(kSplitGroup, m - t0);
      for (int h = 0; h < 2; ++h) {
        if (cols[h] > 0) Emit(tile[h], tokens, cols[h], out + t0 * ldo + n + 16 * h, ldo);
      }
    }
  }
}

}  // namespace

void LinearPanelsAmx(const uint16_t* x, int64_t m, const Weight& w, int64_t p_begin, int64_t p_end,
                     float* out, int64_t ldo) {
  ConfigureTiles();
  const int64_t groups = (m + kSplitGroup - 1) / kSplitGroup;
  alignas(64) float tile[4][16 * 16];
  // Long prompts go kGroupBlock groups at a time: their activations (up to 2.9
  // MB at k = 5632) are read again for every panel, and stay near the core
  // that way; the panels are read once per block instead of once.
  for (int64_t gb = 0; gb < groups; gb += kGroupBlock) {
    const int64_t ge = std::min(groups, gb + kGroupBlock);
    PanelsForGroups(x, m, w, p_begin, p_end, out, ldo, gb, ge, tile);
  }
}

}  // namespace strata::cpu
