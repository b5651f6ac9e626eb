// The second attention kernels (STRATA_CUDA_ATTENTION=v2), built for memory
// bandwidth in decode and tensor cores in prefill; the plan of work and all
// index arithmetic are in attention_v2_plan.h, which the host emulation in
// tests/runtime/attention_v2_test.cc runs too.
//
// Decode (one token of a sequence): block (decode row, KV head, split). The
// block's 128 threads form lane groups of L = head_dim / 8 lanes; a group
// takes one key at a time, each lane loading 16 bytes of its K and V rows,
// and keeps an online softmax for every query head of the GQA group, so the
// group's K/V are read once, not once per query head. Each group has
// kUnroll keys' loads in flight before it uses the first. Groups, then
// splits, are merged exactly as the first kernels merge theirs.
//
// Prefill (chunks of several tokens): block (tile of 64 rows of one chunk,
// query head); each warp owns 16 rows. For every 64-key tile of the paged
// cache in the causal (and windowed) range: K and V are gathered to shared
// memory with 16-byte loads, S = Q Kᵀ by 16x16x16 MMAs (bf16/f16 in, f32
// out), an online softmax over S (two lanes per row), P rounded to the
// activation dtype as FlashAttention rounds it, and O = O * correction + P V
// by MMAs again. Shared memory: 66 KB (head_dim <= 64) or 121 KB (128).
#include <math_constants.h>
#include <mma.h>

#include <cstdint>

#include "runtime/backend/cuda/attention_merge.cuh"
#include "runtime/backend/cuda/attention_v2_plan.h"
#include "runtime/backend/cuda/device_math.cuh"
#include "runtime/backend/cuda/kernels.h"

namespace strata::cuda {
namespace {

namespace wmma = nvcuda::wmma;

// 8 elements of T from 16 bytes at `p` (16-byte aligned), as f32.
template <typename T>
__device__ __forceinline__ void Load8(const T* p, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < v2::kVec; ++i) out[i] = ToFloat(e[i]);
}

// Partials in the first kernels' layout: acc [items, head_dim], then (max,
// sum) [items, 2], items indexed by v2::PartialItem.
template <typename T, int L, int kGroupMax>
__global__ void __launch_bounds__(v2::kDecodeThreads)
    DecodePartialKernel(const T* q, const T* kv, StepDevice step, AttentionParams p,
                        float* part_acc, float* part_ml) {
  constexpr int kGroups = v2::kDecodeThreads / L;  // lane groups, one key each
  constexpr int d = L * v2::kVec;                  // == p.head_dim
  __shared__ float group_max[kGroups][kGroupMax], group_sum[kGroups][kGroupMax];
  __shared__ float group_acc[kGroups][kGroupMax][d];
  __shared__ float head_max[kGroupMax], head_sum[kGroupMax];
  const int index = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int row = step.decode_rows[index];
  const int group = threadIdx.x / L, li = threadIdx.x % L;
  const int heads_per_kv = static_cast<int>(p.num_heads / p.num_kv_heads);
  const int pos = step.row_pos[row];
  int begin = 0, end = 0;
  v2::SplitRange(v2::FirstKey(pos, p.sliding_window), pos + 1, p.splits, split, &begin, &end);

  float qf[kGroupMax][v2::kVec], acc[kGroupMax][v2::kVec], run_max[kGroupMax], run_sum[kGroupMax];
#pragma unroll
  for (int g = 0; g < kGroupMax; ++g) {
    const int head = kv_head * heads_per_kv + (g < heads_per_kv ? g : 0);
    Load8(q + (static_cast<int64_t>(row) * p.num_heads + head) * d + li * v2::kVec, qf[g]);
#pragma unroll
    for (int e = 0; e < v2::kVec; ++e) {
      qf[g][e] *= p.scale;
      acc[g][e] = 0.0f;
    }
    run_max[g] = -CUDART_INF_F;
    run_sum[g] = 0.0f;
  }
  const int32_t* table = step.tables + step.row_table[row];
  const int bs = static_cast<int>(p.block_size);
  // The bounds are the block's, so every lane of a warp runs every shuffle.
  for (int base = begin; base < end; base += kGroups * v2::kUnroll) {
    float k[v2::kUnroll][v2::kVec], v[v2::kUnroll][v2::kVec];
#pragma unroll
    for (int u = 0; u < v2::kUnroll; ++u) {
      const int j = base + group + u * kGroups;
      if (j < end) {
        Load8(kv + v2::KeyOffset(table, j, bs, p.kv_dim, kv_head, d) + li * v2::kVec, k[u]);
        Load8(kv + v2::ValueOffset(table, j, bs, p.kv_dim, kv_head, d) + li * v2::kVec, v[u]);
      } else {
#pragma unroll
        for (int e = 0; e < v2::kVec; ++e) k[u][e] = v[u][e] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < v2::kUnroll; ++u) {
      const bool valid = base + group + u * kGroups < end;
#pragma unroll
      for (int g = 0; g < kGroupMax; ++g) {
        if (g >= heads_per_kv) break;  // the same for the whole block
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < v2::kVec; ++e) s += qf[g][e] * k[u][e];
#pragma unroll
        for (int offset = L / 2; offset > 0; offset >>= 1) {
          s += __shfl_xor_sync(0xffffffffu, s, offset);
        }
        if (!valid) continue;
        const float new_max = fmaxf(run_max[g], s);
        const float correction = expf(run_max[g] - new_max);  // 0 for the first key
        const float weight = expf(s - new_max);
        run_sum[g] = run_sum[g] * correction + weight;
#pragma unroll
        for (int e = 0; e < v2::kVec; ++e) acc[g][e] = acc[g][e] * correction + weight * v[u][e];
        run_max[g] = new_max;
      }
    }
  }

#pragma unroll
  for (int g = 0; g < kGroupMax; ++g) {
    if (g >= heads_per_kv) break;
    if (li == 0) {
      group_max[group][g] = run_max[g];
      group_sum[group][g] = run_sum[g];
    }
#pragma unroll
    for (int e = 0; e < v2::kVec; ++e) group_acc[group][g][li * v2::kVec + e] = acc[g][e];
  }
  __syncthreads();
  if (threadIdx.x < heads_per_kv) {
    const int g = threadIdx.x;
    float m = -CUDART_INF_F;
    for (int gr = 0; gr < kGroups; ++gr) {
      if (group_sum[gr][g] > 0.0f) m = fmaxf(m, group_max[gr][g]);
    }
    float total = 0.0f;
    for (int gr = 0; gr < kGroups; ++gr) {
      if (group_sum[gr][g] > 0.0f) total += group_sum[gr][g] * expf(group_max[gr][g] - m);
    }
    head_max[g] = m;
    head_sum[g] = total;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < heads_per_kv * d; i += v2::kDecodeThreads) {
    const int g = i / d, dim = i % d;
    float a = 0.0f;
    for (int gr = 0; gr < kGroups; ++gr) {
      if (group_sum[gr][g] > 0.0f)
        a += group_acc[gr][g][dim] * expf(group_max[gr][g] - head_max[g]);
    }
    const int64_t item = v2::PartialItem(index, kv_head * heads_per_kv + g, split,
                                         static_cast<int>(p.num_heads), p.splits);
    part_acc[item * d + dim] = a;
    if (dim == 0) {
      part_ml[item * 2] = head_max[g];
      part_ml[item * 2 + 1] = head_sum[g];
    }
  }
}

// One block per (decode row, query head): merges the splits into the row.
template <typename T>
__global__ void DecodeMergeKernel(const float* part_acc, const float* part_ml, StepDevice step,
                                  AttentionParams p, T* out) {
  const int index = blockIdx.x, head = blockIdx.y;
  const int row = step.decode_rows[index];
  const int64_t first = v2::PartialItem(index, head, 0, static_cast<int>(p.num_heads), p.splits);
  MergeSplits(part_acc, part_ml, first, p.splits, static_cast<int>(p.head_dim),
              out + (static_cast<int64_t>(row) * p.num_heads + head) * p.head_dim);
}

// The prefill block's shared memory.
template <typename T, int kDim>
struct PrefillShared {
  // Stride of a warp's scratch: S (16 x 64) first, then P V (16 x head_dim).
  static constexpr int kScratch = kDim > v2::kTileKeys ? kDim : v2::kTileKeys;
  T q[v2::kTileRows * kDim];
  T k[v2::kTileKeys * kDim];
  T v[v2::kTileKeys * kDim];
  float scratch[4][16 * kScratch];
  T prob[4][16 * v2::kTileKeys];
  float o[v2::kTileRows * kDim];
  float max[v2::kTileRows], sum[v2::kTileRows], correction[v2::kTileRows];
};

template <typename T, int kDim>
__global__ void __launch_bounds__(v2::kPrefillThreads)
    PrefillKernel(const T* q, const T* kv, StepDevice step, AttentionParams p, T* out) {
  using Shared = PrefillShared<T, kDim>;
  constexpr int kScratch = Shared::kScratch;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Shared& sm = *reinterpret_cast<Shared*>(shared_raw);
  const v2::PrefillTile tile = step.tiles[blockIdx.x];
  const int head = blockIdx.y;
  const int kv_head = head / static_cast<int>(p.num_heads / p.num_kv_heads);
  const int d = static_cast<int>(p.head_dim);  // a multiple of 16, <= kDim
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int p0 = tile.start_pos, p_last = tile.start_pos + tile.rows - 1;
  const int32_t* table = step.tables + tile.table;
  const int bs = static_cast<int>(p.block_size);
  const int vecs = d / v2::kVec;

  for (int i = threadIdx.x; i < v2::kTileRows * vecs; i += v2::kPrefillThreads) {
    const int r = i / vecs, c = (i % vecs) * v2::kVec;
    uint4 val = make_uint4(0, 0, 0, 0);  // rows past the chunk: zeros
    if (r < tile.rows) {
      val = *reinterpret_cast<const uint4*>(
          q + (static_cast<int64_t>(tile.row_begin + r) * p.num_heads + head) * d + c);
    }
    *reinterpret_cast<uint4*>(&sm.q[r * kDim + c]) = val;
  }
  for (int i = threadIdx.x; i < v2::kTileRows * kDim; i += v2::kPrefillThreads) sm.o[i] = 0.0f;
  for (int i = threadIdx.x; i < v2::kTileRows; i += v2::kPrefillThreads) {
    sm.max[i] = -CUDART_INF_F;
    sm.sum[i] = 0.0f;
  }
  int first_tile = 0, end_tile = 0;
  v2::KeyTiles(p0, p_last, p.sliding_window, &first_tile, &end_tile);
  const int first_key = v2::FirstKey(p0, p.sliding_window);
  float* scratch = sm.scratch[warp];
  T* prob = sm.prob[warp];
  const int rr = lane >> 1, half = lane & 1;  // two lanes per row of the warp's 16
  const int tr = warp * 16 + rr;              // the row in the tile
  const bool live = tr < tile.rows;

  for (int kt = first_tile; kt < end_tile; ++kt) {
    __syncthreads();  // the last tile's K and V are read by every warp
    for (int i = threadIdx.x; i < v2::kTileKeys * vecs; i += v2::kPrefillThreads) {
      const int r = i / vecs, c = (i % vecs) * v2::kVec;
      const int j = kt * v2::kTileKeys + r;
      uint4 kval = make_uint4(0, 0, 0, 0), vval = make_uint4(0, 0, 0, 0);
      if (j >= first_key && j <= p_last) {  // else never attended: zeros, not stale data
        kval = *reinterpret_cast<const uint4*>(
            kv + v2::KeyOffset(table, j, bs, p.kv_dim, kv_head, d) + c);
        vval = *reinterpret_cast<const uint4*>(
            kv + v2::ValueOffset(table, j, bs, p.kv_dim, kv_head, d) + c);
      }
      *reinterpret_cast<uint4*>(&sm.k[r * kDim + c]) = kval;
      *reinterpret_cast<uint4*>(&sm.v[r * kDim + c]) = vval;
    }
    __syncthreads();

    // S [16, 64] = Q [16, d] · Kᵀ for this warp's rows.
    for (int n = 0; n < v2::kTileKeys / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_frag;
      wmma::fill_fragment(s_frag, 0.0f);
      for (int kk = 0; kk < d / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
        wmma::load_matrix_sync(a, &sm.q[(warp * 16) * kDim + kk * 16], kDim);
        wmma::load_matrix_sync(b, &sm.k[(n * 16) * kDim + kk * 16], kDim);
        wmma::mma_sync(s_frag, a, b, s_frag);
      }
      wmma::store_matrix_sync(&scratch[n * 16], s_frag, kScratch, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of the tile's scores: lanes 2r and 2r+1 take 32 keys each.
    const int qpos = p0 + tr;
    float tile_max = -CUDART_INF_F;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      float x = scratch[rr * kScratch + c] * p.scale;
      if (!live || !v2::Attends(qpos, kt * v2::kTileKeys + c, p.sliding_window)) x = -CUDART_INF_F;
      scratch[rr * kScratch + c] = x;
      tile_max = fmaxf(tile_max, x);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float old_max = sm.max[tr];
    const float new_max = fmaxf(old_max, tile_max);
    const float correction = new_max == -CUDART_INF_F ? 1.0f : expf(old_max - new_max);
    float tile_sum = 0.0f;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const float x = scratch[rr * kScratch + c];
      const float pr = x == -CUDART_INF_F ? 0.0f : expf(x - new_max);
      prob[rr * v2::kTileKeys + c] = FromFloat<T>(pr);
      tile_sum += pr;
    }
    tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 1);
    __syncwarp();  // both lanes of a row read the old max before it changes
    if (half == 0) {
      sm.max[tr] = new_max;
      sm.sum[tr] = sm.sum[tr] * correction + tile_sum;
      sm.correction[tr] = correction;
    }
    __syncwarp();

    // P V [16, d] into the scratch (S is consumed), then O = O * corr + P V.
    for (int n = 0; n < d / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> pv;
      wmma::fill_fragment(pv, 0.0f);
      for (int kk = 0; kk < v2::kTileKeys / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(a, &prob[kk * 16], v2::kTileKeys);
        wmma::load_matrix_sync(b, &sm.v[(kk * 16) * kDim + n * 16], kDim);
        wmma::mma_sync(pv, a, b, pv);
      }
      wmma::store_matrix_sync(&scratch[n * 16], pv, kScratch, wmma::mem_row_major);
    }
    __syncwarp();
    for (int i = lane; i < 16 * d; i += 32) {
      const int r = i / d, c = i % d;
      float& o = sm.o[(warp * 16 + r) * kDim + c];
      o = o * sm.correction[warp * 16 + r] + scratch[r * kScratch + c];
    }
    __syncwarp();  // the next tile's S overwrites the scratch
  }
  __syncthreads();
  for (int i = threadIdx.x; i < tile.rows * d; i += v2::kPrefillThreads) {
    const int r = i / d, c = i % d;
    out[(static_cast<int64_t>(tile.row_begin + r) * p.num_heads + head) * d + c] =
        FromFloat<T>(sm.o[r * kDim + c] / sm.sum[r]);
  }
}

template <typename T, int L, int kGroupMax>
void LaunchDecode(const T* q, const T* kv, const StepDevice& step, const AttentionParams& p,
                  float* workspace, T* out, cudaStream_t stream) {
  const int64_t items = static_cast<int64_t>(step.n_decode) * p.num_heads * p.splits;
  float* part_acc = workspace;
  float* part_ml = workspace + items * p.head_dim;
  const dim3 grid(static_cast<unsigned>(step.n_decode), static_cast<unsigned>(p.num_kv_heads),
                  static_cast<unsigned>(p.splits));
  DecodePartialKernel<T, L, kGroupMax>
      <<<grid, v2::kDecodeThreads, 0, stream>>>(q, kv, step, p, part_acc, part_ml);
  const dim3 merge(static_cast<unsigned>(step.n_decode), static_cast<unsigned>(p.num_heads));
  DecodeMergeKernel<T>
      <<<merge, RowThreads(p.head_dim), 0, stream>>>(part_acc, part_ml, step, p, out);
}

template <typename T, int L>
void DecodeByGroup(const T* q, const T* kv, const StepDevice& step, const AttentionParams& p,
                   float* workspace, T* out, cudaStream_t stream) {
  const int64_t group = p.num_heads / p.num_kv_heads;
  if (group == 1) {
    LaunchDecode<T, L, 1>(q, kv, step, p, workspace, out, stream);
  } else if (group <= 4) {
    LaunchDecode<T, L, 4>(q, kv, step, p, workspace, out, stream);
  } else {
    LaunchDecode<T, L, v2::kMaxGroup>(q, kv, step, p, workspace, out, stream);
  }
}

template <typename T, int kDim>
void LaunchPrefill(const T* q, const T* kv, const StepDevice& step, const AttentionParams& p,
                   T* out, cudaStream_t stream) {
  const size_t bytes = sizeof(PrefillShared<T, kDim>);
  // Above 48 KB a kernel must ask for its dynamic shared memory.
  cudaFuncSetAttribute(PrefillKernel<T, kDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       static_cast<int>(bytes));
  const dim3 grid(static_cast<unsigned>(step.n_tiles), static_cast<unsigned>(p.num_heads));
  PrefillKernel<T, kDim><<<grid, v2::kPrefillThreads, bytes, stream>>>(q, kv, step, p, out);
}

template <typename T>
void AttentionV2(const void* qv, const void* kvv, const StepDevice& step, const AttentionParams& p,
                 float* workspace, void* outv, cudaStream_t stream) {
  const T* q = static_cast<const T*>(qv);
  const T* kv = static_cast<const T*>(kvv);
  T* out = static_cast<T*>(outv);
  if (step.n_decode > 0) {
    switch (p.head_dim) {
      case 16:
        DecodeByGroup<T, 2>(q, kv, step, p, workspace, out, stream);
        break;
      case 32:
        DecodeByGroup<T, 4>(q, kv, step, p, workspace, out, stream);
        break;
      case 64:
        DecodeByGroup<T, 8>(q, kv, step, p, workspace, out, stream);
        break;
      default:
        DecodeByGroup<T, 16>(q, kv, step, p, workspace, out, stream);
        break;
    }
  }
  if (step.n_tiles > 0) {
    if (p.head_dim <= 64) {
      LaunchPrefill<T, 64>(q, kv, step, p, out, stream);
    } else {
      LaunchPrefill<T, 128>(q, kv, step, p, out, stream);
    }
  }
}

}  // namespace

void LaunchAttentionV2(DType dtype, const void* q, const void* kv_base, const StepDevice& step,
                       const AttentionParams& params, float* workspace, void* out,
                       cudaStream_t stream) {
  if (step.rows == 0) return;
  if (dtype == DType::kF16) {
    AttentionV2<__half>(q, kv_base, step, params, workspace, out, stream);
  } else {
    AttentionV2<__nv_bfloat16>(q, kv_base, step, params, workspace, out, stream);
  }
}

}  // namespace strata::cuda
