// The index arithmetic of the second attention kernels (attention_v2.cu),
// shared with their host emulation (tests/runtime/attention_v2_test.cc) so
// both cut work, ranges and tiles by the very same code. Plain C++ without
// CUDA headers: under nvcc the functions are __host__ __device__.
//
//   decode rows (a chunk of one token): one thread block per (row, KV head,
//     split) serves every query head of the GQA group, so K/V are read once
//     per group; each key's head_dim elements are read by kLanes lanes with
//     16-byte loads; the row's real key range is cut into `splits` even parts.
//   prefill chunks: tiles of kTileRows consecutive rows of one chunk; one
//     thread block per (tile, query head) walks the tile's key range in
//     kTileKeys-key tiles of the paged cache with tensor-core MMAs and an
//     online softmax (FlashAttention-2's scheme).
#ifndef STRATA_RUNTIME_BACKEND_CUDA_ATTENTION_V2_PLAN_H_
#define STRATA_RUNTIME_BACKEND_CUDA_ATTENTION_V2_PLAN_H_

#include <cstdint>

#if defined(__CUDACC__)
#define STRATA_HD __host__ __device__ __forceinline__
#else
#define STRATA_HD inline
#endif

namespace strata::cuda::v2 {

// --- decode ---------------------------------------------------------------
constexpr int kDecodeThreads = 128;
constexpr int kVec = 8;       // elements per 16-byte load of bf16/f16
constexpr int kMaxGroup = 8;  // query heads per KV head the decode kernel serves
constexpr int kUnroll = 2;    // keys each lane group has in flight

// --- prefill --------------------------------------------------------------
constexpr int kTileRows = 64;  // query rows per block: 16 per warp, 4 warps
constexpr int kTileKeys = 64;  // keys per step of the walk
constexpr int kPrefillThreads = 128;
constexpr int kMaxPrefillHeadDim = 128;

// Query rows of one chunk that one prefill block takes.
struct PrefillTile {
  int32_t row_begin = 0;  // first row of the tile in the step
  int32_t rows = 0;       // 1 .. kTileRows
  int32_t start_pos = 0;  // position of the tile's first row
  int32_t table = 0;      // offset of the chunk's block table in the step's tables
};

// The first key position a query at `pos` attends to (sliding window or 0).
STRATA_HD int FirstKey(int pos, int64_t window) {
  if (window <= 0) return 0;
  const int64_t first = pos - window + 1;
  return first > 0 ? static_cast<int>(first) : 0;
}

// Whether a query at `qpos` sees the key at `kpos` (causal, windowed).
STRATA_HD bool Attends(int qpos, int kpos, int64_t window) {
  return kpos <= qpos && kpos >= FirstKey(qpos, window);
}

// Split `s` of `splits` of the key range [first, end): [*begin, *end_out).
// The cut follows the row's own length, so every split gets a fair share.
STRATA_HD void SplitRange(int first, int end, int splits, int s, int* begin, int* end_out) {
  const int64_t n = end - first;
  *begin = first + static_cast<int>(n * s / splits);
  *end_out = first + static_cast<int>(n * (s + 1) / splits);
}

// Element offset of key position `j`'s head `kv_head` in a layer's paged
// cache (blocks of [2][block_size][kv_dim]: keys, then values).
STRATA_HD int64_t KeyOffset(const int32_t* table, int j, int block_size, int64_t kv_dim,
                            int kv_head, int head_dim) {
  return (static_cast<int64_t>(table[j / block_size]) * 2 * block_size + j % block_size) * kv_dim +
         static_cast<int64_t>(kv_head) * head_dim;
}
STRATA_HD int64_t ValueOffset(const int32_t* table, int j, int block_size, int64_t kv_dim,
                              int kv_head, int head_dim) {
  return KeyOffset(table, j, block_size, kv_dim, kv_head, head_dim) + block_size * kv_dim;
}

// The key tiles [*first_tile, *end_tile) a prefill tile of query positions
// [p0, p_last] must visit.
STRATA_HD void KeyTiles(int p0, int p_last, int64_t window, int* first_tile, int* end_tile) {
  *first_tile = FirstKey(p0, window) / kTileKeys;
  *end_tile = p_last / kTileKeys + 1;
}

// Where row `r` of a flash-decoding partial sits: items are
// [decode row index, query head, split].
STRATA_HD int64_t PartialItem(int decode_index, int head, int split, int heads, int splits) {
  return (static_cast<int64_t>(decode_index) * heads + head) * splits + split;
}

// One chunk of a step as PlanWork reads it.
struct ChunkSpan {
  int64_t row_begin = 0;
  int64_t num_tokens = 0;
  int64_t start_pos = 0;
  int64_t table = 0;  // offset of its block table in the step's tables
};

// Sorts a step's rows between the kernels: a chunk of one token is a decode
// row; longer chunks are cut into tiles of up to kTileRows rows. Both lists
// have room for one entry per row of the step.
inline void PlanWork(const ChunkSpan* chunks, int64_t num_chunks, int32_t* decode_rows,
                     int32_t* num_decode, PrefillTile* tiles, int32_t* num_tiles) {
  *num_decode = 0;
  *num_tiles = 0;
  for (int64_t c = 0; c < num_chunks; ++c) {
    const ChunkSpan& ch = chunks[c];
    if (ch.num_tokens == 1) {
      decode_rows[(*num_decode)++] = static_cast<int32_t>(ch.row_begin);
      continue;
    }
    for (int64_t r = 0; r < ch.num_tokens; r += kTileRows) {
      PrefillTile& t = tiles[(*num_tiles)++];
      t.row_begin = static_cast<int32_t>(ch.row_begin + r);
      t.rows = static_cast<int32_t>(ch.num_tokens - r < kTileRows ? ch.num_tokens - r : kTileRows);
      t.start_pos = static_cast<int32_t>(ch.start_pos + r);
      t.table = static_cast<int32_t>(ch.table);
    }
  }
}

// Whether the v2 kernels take this shape (otherwise the first kernels run):
// head_dim one of 16, 32, 64, 128 (whole 16-byte loads per lane group, whole
// MMA tiles, the prefill's shared memory) and at most kMaxGroup query heads
// per KV head.
inline bool Supported(int64_t head_dim, int64_t heads, int64_t kv_heads) {
  const bool dim = head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
  return dim && kv_heads > 0 && heads % kv_heads == 0 && heads / kv_heads <= kMaxGroup;
}

}  // namespace strata::cuda::v2

#endif  // STRATA_RUNTIME_BACKEND_CUDA_ATTENTION_V2_PLAN_H_
