// The paged KV cache of one stage: fixed-size blocks of 16 token slots for
// every layer the stage owns, a free list, and one block table per sequence.
// The storage is a Buffer of the stage's backend (host or device memory) of
// elements of the backend's activation dtype; this class only does the
// bookkeeping. Owned by a Stage; not thread-safe (the stage serialises its
// steps).
#ifndef STRATA_RUNTIME_KV_CACHE_H_
#define STRATA_RUNTIME_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "runtime/backend/backend.h"

namespace strata {

class KvCache {
 public:
  static constexpr int64_t kBlockSize = 16;

  // Bytes of storage `num_blocks` blocks need.
  static int64_t StorageBytes(int64_t num_layers, int64_t kv_dim, int64_t num_blocks,
                              int64_t element_bytes) {
    return num_layers * num_blocks * 2 * kBlockSize * kv_dim * element_bytes;
  }
  // `storage` holds at least StorageBytes(...) bytes.
  KvCache(int64_t num_layers, int64_t kv_dim, int64_t num_blocks, int64_t element_bytes,
          std::unique_ptr<Buffer> storage);

  // Sets the number of tokens `seq` holds, growing or shrinking its block
  // table. Fails with RESOURCE_EXHAUSTED, changing nothing, when the free
  // blocks do not suffice.
  absl::Status Resize(uint64_t seq, int64_t tokens);
  // Returns every block of `seq` to the free list; a no-op for unknown ids.
  void Free(uint64_t seq);

  bool Has(uint64_t seq) const { return seqs_.count(seq) > 0; }
  int64_t Length(uint64_t seq) const;
  const std::vector<int32_t>& BlockTable(uint64_t seq) const;
  int64_t BlocksNeeded(int64_t tokens) const { return (tokens + kBlockSize - 1) / kBlockSize; }
  // Blocks `seq` would additionally need to hold `tokens` tokens.
  int64_t ExtraBlocks(uint64_t seq, int64_t tokens) const;

  KvLayerView Layer(int64_t local_layer);
  int64_t total_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }
  // The sequences holding blocks, in ascending order.
  std::vector<uint64_t> SequenceIds() const;
  int64_t bytes() const { return storage_->bytes(); }

 private:
  struct Sequence {
    int64_t length = 0;
    std::vector<int32_t> blocks;
  };
  int64_t num_layers_, kv_dim_, num_blocks_, element_bytes_;
  std::unique_ptr<Buffer> storage_;  // [layer][block][k|v][slot][kv_dim]
  std::vector<int32_t> free_;
  std::unordered_map<uint64_t, Sequence> seqs_;
};

}  // namespace strata

#endif  // STRATA_RUNTIME_KV_CACHE_H_
