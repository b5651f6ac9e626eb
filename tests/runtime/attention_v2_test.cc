// The v2 attention kernels (runtime/backend/cuda/attention_v2.cu) emulated on
// the host: the same plan of work, ranges, tiles and offsets (the shared
// attention_v2_plan.h), the same loops, lane groups, shuffle trees, online
// softmax and merge order, with the activation dtype's rounding where the
// kernels round (inputs, P before P·V, the output). Checked against a float64
// softmax over the paged cache on random shapes: GQA groups of 1 to 8, every
// supported head_dim, windows, splits, decode rows and prefill chunks that
// span several tiles. The real kernels run in runtime_backend_ops_test on a
// GPU; this catches a slip in their logic where there is none.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/backend/cuda/attention_v2_plan.h"
#include "runtime/dtype.h"

namespace strata {
namespace {

namespace v2 = cuda::v2;

float Bf16(float x) { return Bf16ToF32(F32ToBf16(x)); }
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Case {
  int64_t heads, kv_heads, head_dim, window;
  int splits;
  std::vector<std::pair<int64_t, int64_t>> chunks;  // (start_pos, num_tokens)
};

// A step over a paged cache, as the backend lays it out.
struct Step {
  int64_t block_size = 16, kv_dim = 0, rows = 0;
  std::vector<float> kv;  // blocks of [2][block_size][kv_dim], bf16 values
  std::vector<float> q;   // [rows, heads, head_dim], bf16 values
  std::vector<int32_t> tables, row_pos, row_table;
  std::vector<v2::ChunkSpan> spans;
};

Step MakeStep(const Case& c, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Step s;
  s.kv_dim = c.kv_heads * c.head_dim;
  int64_t blocks = 0;
  for (auto [start, n] : c.chunks) blocks += (start + n + s.block_size - 1) / s.block_size;
  std::vector<int32_t> ids(blocks + 3);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);  // blocks in no particular order
  s.kv.resize(ids.size() * 2 * s.block_size * s.kv_dim);
  for (float& x : s.kv) x = Bf16(u(rng));
  int64_t next = 0;
  for (auto [start, n] : c.chunks) {
    const int64_t b = (start + n + s.block_size - 1) / s.block_size;
    s.spans.push_back({s.rows, n, start, static_cast<int64_t>(s.tables.size())});
    for (int64_t i = 0; i < n; ++i) {
      s.row_pos.push_back(static_cast<int32_t>(start + i));
      s.row_table.push_back(static_cast<int32_t>(s.tables.size()));
    }
    for (int64_t i = 0; i < b; ++i) s.tables.push_back(ids[next++]);
    s.rows += n;
  }
  s.q.resize(s.rows * c.heads * c.head_dim);
  for (float& x : s.q) x = Bf16(u(rng));
  return s;
}

float Q(const Step& s, const Case& c, int64_t row, int64_t head, int64_t dim) {
  return s.q[(row * c.heads + head) * c.head_dim + dim];
}

// float64 causal attention of every row.
std::vector<double> Reference(const Step& s, const Case& c) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const int64_t group = c.heads / c.kv_heads;
  std::vector<double> out(s.rows * c.heads * c.head_dim);
  for (int64_t row = 0; row < s.rows; ++row) {
    const int pos = s.row_pos[row];
    const int32_t* table = s.tables.data() + s.row_table[row];
    for (int64_t h = 0; h < c.heads; ++h) {
      const int kvh = static_cast<int>(h / group);
      std::vector<double> w;
      double mx = -INFINITY;
      for (int j = v2::FirstKey(pos, c.window); j <= pos; ++j) {
        const int64_t ko = v2::KeyOffset(table, j, 16, s.kv_dim, kvh, c.head_dim);
        double dot = 0;
        for (int64_t e = 0; e < c.head_dim; ++e) dot += double(Q(s, c, row, h, e)) * s.kv[ko + e];
        w.push_back(dot * scale);
        mx = std::max(mx, w.back());
      }
      double total = 0;
      for (double& x : w) total += (x = std::exp(x - mx));
      for (int64_t e = 0; e < c.head_dim; ++e) {
        double a = 0;
        int i = 0;
        for (int j = v2::FirstKey(pos, c.window); j <= pos; ++j, ++i) {
          a += w[i] * s.kv[v2::ValueOffset(table, j, 16, s.kv_dim, kvh, c.head_dim) + e];
        }
        out[(row * c.heads + h) * c.head_dim + e] = a / total;
      }
    }
  }
  return out;
}

// DecodePartialKernel and DecodeMergeKernel, thread by thread.
void EmulateDecode(const Step& s, const Case& c, const std::vector<int32_t>& decode_rows,
                   std::vector<float>* out) {
  const int d = static_cast<int>(c.head_dim), L = d / v2::kVec;
  const int groups = v2::kDecodeThreads / L;
  const int hpk = static_cast<int>(c.heads / c.kv_heads);
  const int heads = static_cast<int>(c.heads), splits = c.splits;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const int n = static_cast<int>(decode_rows.size());
  std::vector<float> part_acc(static_cast<size_t>(n) * heads * splits * d);
  std::vector<float> part_ml(static_cast<size_t>(n) * heads * splits * 2);
  for (int index = 0; index < n; ++index) {
    const int row = decode_rows[index];
    const int pos = s.row_pos[row];
    const int32_t* table = s.tables.data() + s.row_table[row];
    for (int kvh = 0; kvh < c.kv_heads; ++kvh) {
      for (int split = 0; split < splits; ++split) {
        int begin = 0, end = 0;
        v2::SplitRange(v2::FirstKey(pos, c.window), pos + 1, splits, split, &begin, &end);
        // [group][g] statistics of lane 0, [group][g][dim] accumulators.
        std::vector<float> gmax(groups * hpk, -kInf), gsum(groups * hpk, 0.0f);
        std::vector<float> gacc(static_cast<size_t>(groups) * hpk * d, 0.0f);
        for (int g = 0; g < hpk; ++g) {
          const int head = kvh * hpk + g;
          for (int group = 0; group < groups; ++group) {
            std::vector<float> run_max(L, -kInf), run_sum(L, 0.0f), acc(d, 0.0f);
            for (int base = begin; base < end; base += groups * v2::kUnroll) {
              for (int u = 0; u < v2::kUnroll; ++u) {
                const int j = base + group + u * groups;
                const bool valid = j < end;
                std::vector<float> lane_dot(L, 0.0f);
                for (int li = 0; li < L; ++li) {
                  for (int e = 0; e < v2::kVec; ++e) {
                    const int dim = li * v2::kVec + e;
                    const float k =
                        valid ? s.kv[v2::KeyOffset(table, j, 16, s.kv_dim, kvh, d) + dim] : 0.0f;
                    lane_dot[li] += Q(s, c, row, head, dim) * scale * k;
                  }
                }
                for (int offset = L / 2; offset > 0; offset >>= 1) {  // __shfl_xor_sync
                  std::vector<float> next(L);
                  for (int li = 0; li < L; ++li) next[li] = lane_dot[li] + lane_dot[li ^ offset];
                  lane_dot = next;
                }
                if (!valid) continue;
                for (int li = 0; li < L; ++li) {
                  const float sc = lane_dot[li];
                  const float new_max = std::max(run_max[li], sc);
                  const float corr = std::exp(run_max[li] - new_max);
                  const float w = std::exp(sc - new_max);
                  run_sum[li] = run_sum[li] * corr + w;
                  for (int e = 0; e < v2::kVec; ++e) {
                    const int dim = li * v2::kVec + e;
                    const float v = s.kv[v2::ValueOffset(table, j, 16, s.kv_dim, kvh, d) + dim];
                    acc[dim] = acc[dim] * corr + w * v;
                  }
                  run_max[li] = new_max;
                }
              }
            }
            gmax[group * hpk + g] = run_max[0];
            gsum[group * hpk + g] = run_sum[0];
            std::copy(acc.begin(), acc.end(),
                      gacc.begin() + (static_cast<size_t>(group) * hpk + g) * d);
          }
          float m = -kInf, total = 0.0f;
          for (int gr = 0; gr < groups; ++gr) {
            if (gsum[gr * hpk + g] > 0.0f) m = std::max(m, gmax[gr * hpk + g]);
          }
          for (int gr = 0; gr < groups; ++gr) {
            if (gsum[gr * hpk + g] > 0.0f)
              total += gsum[gr * hpk + g] * std::exp(gmax[gr * hpk + g] - m);
          }
          const int64_t item = v2::PartialItem(index, head, split, heads, splits);
          for (int dim = 0; dim < d; ++dim) {
            float a = 0.0f;
            for (int gr = 0; gr < groups; ++gr) {
              if (gsum[gr * hpk + g] > 0.0f) {
                a += gacc[(static_cast<size_t>(gr) * hpk + g) * d + dim] *
                     std::exp(gmax[gr * hpk + g] - m);
              }
            }
            part_acc[item * d + dim] = a;
          }
          part_ml[item * 2] = m;
          part_ml[item * 2 + 1] = total;
        }
      }
    }
    for (int head = 0; head < heads; ++head) {  // DecodeMergeKernel
      const int64_t first = v2::PartialItem(index, head, 0, heads, splits);
      const float* ml = part_ml.data() + first * 2;
      float max_all = -kInf, total = 0.0f;
      for (int sp = 0; sp < splits; ++sp) {
        if (ml[2 * sp + 1] > 0.0f) max_all = std::max(max_all, ml[2 * sp]);
      }
      for (int sp = 0; sp < splits; ++sp) {
        if (ml[2 * sp + 1] > 0.0f) total += ml[2 * sp + 1] * std::exp(ml[2 * sp] - max_all);
      }
      const float inv = total > 0.0f ? 1.0f / total : 0.0f;
      for (int dim = 0; dim < d; ++dim) {
        float a = 0.0f;
        for (int sp = 0; sp < splits; ++sp) {
          if (ml[2 * sp + 1] > 0.0f)
            a += part_acc[(first + sp) * d + dim] * std::exp(ml[2 * sp] - max_all);
        }
        (*out)[(static_cast<int64_t>(row) * heads + head) * d + dim] = Bf16(a * inv);
      }
    }
  }
}

// PrefillKernel, warp by warp (each MMA as an f32 dot product).
void EmulatePrefill(const Step& s, const Case& c, const std::vector<v2::PrefillTile>& tiles,
                    std::vector<float>* out) {
  const int d = static_cast<int>(c.head_dim);
  const int hpk = static_cast<int>(c.heads / c.kv_heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  constexpr int R = v2::kTileRows, K = v2::kTileKeys;
  for (const v2::PrefillTile& tile : tiles) {
    const int32_t* table = s.tables.data() + tile.table;
    const int p0 = tile.start_pos, p_last = tile.start_pos + tile.rows - 1;
    for (int head = 0; head < c.heads; ++head) {
      const int kvh = head / hpk;
      std::vector<float> q(R * d, 0.0f), o(R * d, 0.0f), mx(R, -kInf), sum(R, 0.0f);
      for (int r = 0; r < tile.rows; ++r) {
        for (int e = 0; e < d; ++e) q[r * d + e] = Q(s, c, tile.row_begin + r, head, e);
      }
      int first_tile = 0, end_tile = 0;
      v2::KeyTiles(p0, p_last, c.window, &first_tile, &end_tile);
      const int first_key = v2::FirstKey(p0, c.window);
      for (int kt = first_tile; kt < end_tile; ++kt) {
        std::vector<float> k(K * d, 0.0f), v(K * d, 0.0f);
        for (int r = 0; r < K; ++r) {
          const int j = kt * K + r;
          if (j < first_key || j > p_last) continue;
          for (int e = 0; e < d; ++e) {
            k[r * d + e] = s.kv[v2::KeyOffset(table, j, 16, s.kv_dim, kvh, d) + e];
            v[r * d + e] = s.kv[v2::ValueOffset(table, j, 16, s.kv_dim, kvh, d) + e];
          }
        }
        for (int tr = 0; tr < R; ++tr) {
          const bool live = tr < tile.rows;
          const int qpos = p0 + tr;
          std::vector<float> x(K);
          float half_max[2] = {-kInf, -kInf};
          for (int col = 0; col < K; ++col) {
            float dot = 0.0f;
            for (int e = 0; e < d; ++e) dot += q[tr * d + e] * k[col * d + e];
            x[col] = dot * scale;
            if (!live || !v2::Attends(qpos, kt * K + col, c.window)) x[col] = -kInf;
            half_max[col / 32] = std::max(half_max[col / 32], x[col]);
          }
          const float tile_max = std::max(half_max[0], half_max[1]);
          const float new_max = std::max(mx[tr], tile_max);
          const float corr = new_max == -kInf ? 1.0f : std::exp(mx[tr] - new_max);
          std::vector<float> prob(K);
          float half_sum[2] = {0.0f, 0.0f};
          for (int col = 0; col < K; ++col) {
            const float pr = x[col] == -kInf ? 0.0f : std::exp(x[col] - new_max);
            prob[col] = Bf16(pr);
            half_sum[col / 32] += pr;
          }
          mx[tr] = new_max;
          sum[tr] = sum[tr] * corr + (half_sum[0] + half_sum[1]);
          for (int e = 0; e < d; ++e) {
            float pv = 0.0f;
            for (int col = 0; col < K; ++col) pv += prob[col] * v[col * d + e];
            o[tr * d + e] = o[tr * d + e] * corr + pv;
          }
        }
      }
      for (int r = 0; r < tile.rows; ++r) {
        for (int e = 0; e < d; ++e) {
          (*out)[(static_cast<int64_t>(tile.row_begin + r) * c.heads + head) * d + e] =
              Bf16(o[r * d + e] / sum[r]);
        }
      }
    }
  }
}

void ExpectMatches(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const Step s = MakeStep(c, rng);
  std::vector<int32_t> decode_rows(s.rows);
  std::vector<v2::PrefillTile> tiles(s.rows);
  int32_t n_decode = 0, n_tiles = 0;
  v2::PlanWork(s.spans.data(), static_cast<int64_t>(s.spans.size()), decode_rows.data(), &n_decode,
               tiles.data(), &n_tiles);
  decode_rows.resize(n_decode);
  tiles.resize(n_tiles);
  std::vector<float> got(s.rows * c.heads * c.head_dim, NAN);
  EmulateDecode(s, c, decode_rows, &got);
  EmulatePrefill(s, c, tiles, &got);
  const std::vector<double> want = Reference(s, c);
  double worst = 0;
  int64_t worst_at = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "output " << i << " was not written";
    const double err = std::abs(got[i] - want[i]);
    if (err > worst) worst = err, worst_at = static_cast<int64_t>(i);
  }
  // Inputs are exact bf16; what remains is P's and the output's bf16
  // rounding (2^-9 relative) and f32 sums.
  const int64_t row = worst_at / (c.heads * c.head_dim);
  EXPECT_LE(worst, 8e-3) << "heads " << c.heads << "/" << c.kv_heads << ", head_dim " << c.head_dim
                         << ", window " << c.window << ", splits " << c.splits << ": row " << row
                         << " (position " << s.row_pos[row] << ")";
}

TEST(AttentionV2PlanTest, EveryRowIsADecodeRowOrInExactlyOneTile) {
  const std::vector<v2::ChunkSpan> spans = {
      {0, 1, 300, 0}, {1, 130, 0, 19}, {131, 1, 0, 28}, {132, 64, 17, 29}, {196, 65, 5, 35}};
  std::vector<int32_t> decode(261);
  std::vector<v2::PrefillTile> tiles(261);
  int32_t n_decode = 0, n_tiles = 0;
  v2::PlanWork(spans.data(), 5, decode.data(), &n_decode, tiles.data(), &n_tiles);
  ASSERT_EQ(n_decode, 2);
  EXPECT_EQ(decode[0], 0);
  EXPECT_EQ(decode[1], 131);
  std::vector<int> seen(261, 0);
  for (int32_t r = 0; r < n_decode; ++r) ++seen[decode[r]];
  ASSERT_EQ(n_tiles, 3 + 1 + 2);
  for (int32_t t = 0; t < n_tiles; ++t) {
    EXPECT_GE(tiles[t].rows, 1);
    EXPECT_LE(tiles[t].rows, v2::kTileRows);
    for (int32_t r = 0; r < tiles[t].rows; ++r) ++seen[tiles[t].row_begin + r];
  }
  for (int r = 0; r < 261; ++r) EXPECT_EQ(seen[r], 1) << "row " << r;
  // The 130-token chunk: tiles at positions 0, 64, 128 of 64, 64, 2 rows.
  EXPECT_EQ(tiles[2].row_begin, 129);
  EXPECT_EQ(tiles[2].start_pos, 128);
  EXPECT_EQ(tiles[2].rows, 2);
  EXPECT_EQ(tiles[2].table, 19);
}

TEST(AttentionV2PlanTest, SplitsCutEachRowsOwnRangeEvenly) {
  // 257 keys in 8 splits: 32 or 33 each, none empty (rounding the range up
  // to a power of two first would leave half of them nearly idle).
  int covered = 0, prev_end = 0;
  for (int s = 0; s < 8; ++s) {
    int b = 0, e = 0;
    v2::SplitRange(0, 257, 8, s, &b, &e);
    EXPECT_EQ(b, prev_end);
    EXPECT_GE(e - b, 32);
    EXPECT_LE(e - b, 33);
    covered += e - b;
    prev_end = e;
  }
  EXPECT_EQ(covered, 257);
  int b = 0, e = 0;
  v2::SplitRange(100, 103, 8, 7, &b, &e);  // more splits than keys: some are empty
  EXPECT_EQ(e, 103);
  EXPECT_TRUE(v2::Attends(10, 10, 0));
  EXPECT_FALSE(v2::Attends(10, 11, 0));
  EXPECT_TRUE(v2::Attends(10, 1, 10));
  EXPECT_FALSE(v2::Attends(10, 0, 10));
  EXPECT_TRUE(v2::Supported(128, 28, 4));
  EXPECT_FALSE(v2::Supported(128, 32, 2));  // 16 query heads per KV head
  EXPECT_FALSE(v2::Supported(96, 8, 8));
}

TEST(AttentionV2EmulationTest, DecodeRowsMatchFloat64AcrossShapesWindowsAndSplits) {
  uint32_t seed = 1;
  for (int64_t head_dim : {16, 32, 64, 128}) {
    for (auto [heads, kv_heads] : {std::pair<int64_t, int64_t>{4, 4}, {8, 2}, {14, 2}, {16, 2}}) {
      for (int64_t window : {0, 40}) {
        for (int splits : {1, 3, 8}) {
          Case c{heads, kv_heads, head_dim, window, splits, {{300, 1}, {0, 1}, {16, 1}, {1000, 1}}};
          ExpectMatches(c, seed++);
        }
      }
    }
  }
}

TEST(AttentionV2EmulationTest, PrefillTilesMatchFloat64WithDecodeRowsInTheSameStep) {
  uint32_t seed = 100;
  for (int64_t head_dim : {16, 64, 128}) {
    for (auto [heads, kv_heads] : {std::pair<int64_t, int64_t>{4, 4}, {8, 1}, {14, 2}}) {
      for (int64_t window : {0, 37, 200}) {
        // A 130-token prefill from 0 (three tiles), one continuing at 300
        // past a 64-key boundary, a short one, and a decode row.
        Case c{heads, kv_heads, head_dim, window, 2, {{0, 130}, {290, 40}, {5, 3}, {77, 1}}};
        ExpectMatches(c, seed++);
      }
    }
  }
}

}  // namespace
}  // namespace strata
