#include "runtime/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace strata {

KvCache::KvCache(int64_t num_layers, int64_t kv_dim, int64_t num_blocks, int64_t element_bytes,
                 std::unique_ptr<Buffer> storage)
    : num_layers_(num_layers),
      kv_dim_(kv_dim),
      num_blocks_(num_blocks),
      element_bytes_(element_bytes),
      storage_(std::move(storage)) {
  free_.reserve(num_blocks);
  // Hand out low block ids first.
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int64_t KvCache::Length(uint64_t seq) const {
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? 0 : it->second.length;
}

const std::vector<int32_t>& KvCache::BlockTable(uint64_t seq) const {
  static const std::vector<int32_t> kEmpty;
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? kEmpty : it->second.blocks;
}

int64_t KvCache::ExtraBlocks(uint64_t seq, int64_t tokens) const {
  auto it = seqs_.find(seq);
  const int64_t have = it == seqs_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size());
  return std::max<int64_t>(0, BlocksNeeded(tokens) - have);
}

absl::Status KvCache::Resize(uint64_t seq, int64_t tokens) {
  const int64_t extra = ExtraBlocks(seq, tokens);
  if (extra > free_blocks()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full: sequence ", seq, " needs ", extra, " more blocks of ",
                     kBlockSize, " tokens, ", free_blocks(), " of ", num_blocks_, " are free"));
  }
  Sequence& s = seqs_[seq];
  for (int64_t i = 0; i < extra; ++i) {
    s.blocks.push_back(free_.back());
    free_.pop_back();
  }
  while (static_cast<int64_t>(s.blocks.size()) > BlocksNeeded(tokens)) {
    free_.push_back(s.blocks.back());
    s.blocks.pop_back();
  }
  s.length = tokens;
  return absl::OkStatus();
}

void KvCache::Free(uint64_t seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  for (int32_t b : it->second.blocks) free_.push_back(b);
  seqs_.erase(it);
}

KvLayerView KvCache::Layer(int64_t local_layer) {
  KvLayerView v;
  v.base = static_cast<char*>(storage_->data()) +
           local_layer * num_blocks_ * 2 * kBlockSize * kv_dim_ * element_bytes_;
  v.num_blocks = num_blocks_;
  v.block_size = kBlockSize;
  v.kv_dim = kv_dim_;
  return v;
}

std::vector<uint64_t> KvCache::SequenceIds() const {
  std::vector<uint64_t> ids;
  ids.reserve(seqs_.size());
  for (const auto& [id, s] : seqs_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace strata
