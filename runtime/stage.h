// The stage: decoder layers [begin, end) of one model, run on a batch of
// sequence chunks (prefill chunks and single decode tokens mixed) against the
// stage's own paged KV cache. The first stage (begin == 0) embeds token ids;
// the last (end == num_layers) applies the final norm and the LM head and
// returns logits. A whole model is a one-stage pipeline.
//
// A Stage reads only its own tensors from the checkpoint (memory-mapped) and
// runs them on its backend (options.device): on the CPU in place, on CUDA
// after copying them to the device. Weights, workspaces and the KV cache are
// all allocated through the backend, so a device that is too small fails at
// Load() with the sizes, never later. It is not thread-safe: one Run() at a
// time; the backend parallelises inside.
#ifndef STRATA_RUNTIME_STAGE_H_
#define STRATA_RUNTIME_STAGE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/backend/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/kv_cache.h"
#include "runtime/quant.h"

namespace strata {

// Reads one byte of every page of `spans` (after asking the kernel to read
// them ahead), reporting (bytes read, total) to `progress` (may be empty)
// about every 250 ms and once at the end. `max_rate` (bytes/s, 0: none)
// slows the read down, to show a slow disk in tests.
void PrefaultPages(const std::vector<std::pair<const void*, size_t>>& spans,
                   const std::function<void(int64_t, int64_t)>& progress, double max_rate = 0);

struct StageOptions {
  std::string device = "cpu";       // "cpu", "cuda", "cuda:N" or "sim:NAME" (see BackendOptions)
  int threads = 0;                  // CPU threads; 0 = every available core
  std::string cpu_kernels;          // CPU kernel set (BackendOptions::cpu_kernels)
  int64_t device_memory_bytes = 0;  // CUDA: most to allocate; 0 = free memory less 1 GiB
  int64_t max_batch_tokens = 512;   // tokens per Run(); workspaces are sized once for this
  int64_t max_context = 0;          // per sequence; 0 = min(max_position_embeddings, 8192)
  int64_t max_sequences = 4;        // sizes the default KV cache
  int64_t kv_blocks = 0;            // 0 = max_sequences * ceil(max_context / 16)
  // The KV cache takes what the device's budget leaves after the weights,
  // workspaces and scratch, up to the kv_blocks above (a device without a
  // budget, the CPU, takes exactly those). Less than one full context is a
  // RESOURCE_EXHAUSTED naming the sizes.
  bool kv_from_memory = false;
  // A first stage that is not the last keeps the embedding table in host
  // memory (the mapped checkpoint) and gathers a step's rows there, a few
  // rows per step, instead of holding the table on the device: what lets a
  // tied-embedding model fit small GPUs (its last stage holds it as the head).
  bool host_embedding = false;
  // CPU: read every page of the stage's weights before Load returns, so the
  // first request does not pay for page faults (a GPU reads them anyway, to
  // upload them). `load_progress` (may be empty) hears (bytes read, total)
  // about every 250 ms, and once at the end. `debug_load_rate` (bytes/s, 0:
  // off) slows the read, as a slow disk would.
  bool prefault = true;
  std::function<void(int64_t done, int64_t total)> load_progress;
  double debug_load_rate = 0;
  // sim:NAME: the figures that replace the device table's (0: the table's).
  int64_t sim_memory_bytes = 0;
  double sim_bandwidth = 0, sim_flops = 0;
};

// What the last stage returns for a chunk: nothing, the last position's
// logits, every position's, or only the argmax of the last position's
// (greedy decoding; computed where the logits are, so they need not be
// copied out).
enum class LogitsMode { kNone, kLast, kAll, kGreedy };

struct SequenceChunk {
  uint64_t seq_id = 0;
  int64_t start_pos = 0;  // must be <= the tokens the stage holds for seq_id
  int64_t num_tokens = 0;
  std::vector<int32_t> token_ids;         // first stage only: num_tokens ids
  LogitsMode logits = LogitsMode::kLast;  // last stage only
};

struct StageBatch {
  std::vector<SequenceChunk> chunks;
  // Non-first stages: [total tokens, hidden_size] from the previous stage.
  std::span<const float> hidden;
  // With a joined peer group (JoinPeerGroup): a non-first stage receives its
  // hidden states from this rank instead of `hidden`, and a non-last stage
  // sends its output to `send_peer` instead of returning it. -1: not used.
  int recv_peer = -1;
  int send_peer = -1;
};

struct StageOutput {
  // Non-last stages: [total tokens, hidden_size] for the next stage (empty
  // when it went to batch.send_peer).
  std::vector<float> hidden;
  // Last stage: rows of vocab_size logits; chunk c's rows start at
  // logits_row[c] (kLast: one row, kAll: num_tokens rows, kNone: none).
  std::vector<float> logits;
  std::vector<int64_t> logits_row;
  int64_t vocab_size = 0;
  // Last stage, per chunk: the kGreedy token, or -1. When every sampled chunk
  // is kGreedy no logits are returned and their logits_row is -1.
  std::vector<int32_t> greedy;
};

class Stage {
 public:
  // Loads layers [begin, end) of the model in `model_dir` (config already parsed).
  static absl::StatusOr<std::unique_ptr<Stage>> Load(const std::string& model_dir,
                                                     const ModelConfig& config, int64_t begin,
                                                     int64_t end, const StageOptions& options);
  ~Stage();

  absl::Status Run(const StageBatch& batch, StageOutput* out);
  // The GPUs' hidden-state transport for one map epoch (see PeerGroup);
  // joining again replaces the previous group.
  absl::Status JoinPeerGroup(const PeerGroup& group);
  void LeavePeerGroup();
  // Thread-safe, unlike the rest: ends the group's pending transfers so a
  // step stuck on a dead peer returns.
  void AbortPeerGroup() { backend_->AbortPeerGroup(); }
  bool in_peer_group() const { return in_peer_group_; }

  // Drops a sequence's KV blocks; unknown ids are ignored.
  void Free(uint64_t seq_id) { kv_->Free(seq_id); }
  int64_t SequenceLength(uint64_t seq_id) const { return kv_->Length(seq_id); }

  bool is_first() const { return begin_ == 0; }
  bool is_last() const { return end_ == config_.num_layers; }
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }
  int64_t max_context() const { return max_context_; }
  int64_t max_batch_tokens() const { return options_.max_batch_tokens; }
  const ModelConfig& config() const { return config_; }
  const KvCache& kv_cache() const { return *kv_; }
  const Backend& backend() const { return *backend_; }
  MemoryReport memory() const { return backend_->Memory(); }
  // Bytes of weights this stage reads (its layers plus embedding / head).
  int64_t weight_bytes() const { return weight_bytes_; }
  // The shards of the checkpoint this stage mapped.
  std::vector<std::string> mapped_files() const { return checkpoint_->MappedFiles(); }

 private:
  struct LayerWeights;
  Stage(const ModelConfig& config, int64_t begin, int64_t end, const StageOptions& options,
        int64_t max_context);
  absl::Status LoadWeights();
  // Backend::PrepareMatrix for every weight Linear multiplies by, after the
  // mapping was read (and its progress shown) by the prefault.
  absl::Status PrepareMatrices();
  absl::Status AllocateWorkspaces(int64_t kv_blocks);
  absl::Status Validate(const StageBatch& batch, int64_t* total_tokens) const;
  absl::Status ReserveKv(const StageBatch& batch);
  // Everything of Run() after validation and KV reservation.
  absl::Status Execute(const StageBatch& batch, int64_t tokens, StageOutput* out);
  void BeginStep(const StageBatch& batch, int64_t tokens);
  void RunLayer(const LayerWeights& w, int64_t local, int64_t tokens);
  absl::Status ComputeHead(const StageBatch& batch, StageOutput* out);

  ModelConfig config_;
  int64_t begin_, end_;
  StageOptions options_;
  int64_t max_context_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<KvCache> kv_;
  std::vector<LayerWeights> layers_;
  Weight embedding_, final_norm_, lm_head_;
  // With host_embedding: the table as mapped, and one step's rows as f32.
  TensorView host_embedding_;
  // Quantized linear layers, repacked on the host (runtime/quant.h): the CPU
  // backend reads them in place, CUDA copies them to the device.
  std::vector<std::unique_ptr<PackedLinear>> packed_;
  std::vector<float> embedded_;
  std::vector<float> inv_freq_;
  int64_t weight_bytes_ = 0;
  // The mapped bytes of every weight the stage reads (for the prefault).
  std::vector<std::pair<const void*, size_t>> weight_spans_;
  bool in_peer_group_ = false;

  // Activation workspaces in backend memory, sized for max_batch_tokens at load.
  std::vector<std::unique_ptr<Buffer>> buffers_;
  void *x_ = nullptr, *normed_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr,
       *attn_ = nullptr, *proj_ = nullptr, *gate_ = nullptr, *up_ = nullptr, *head_in_ = nullptr;
  // Host-side step layout.
  std::vector<float> cos_, sin_;
  std::vector<int32_t> ids_, greedy_ids_;
  std::vector<int64_t> head_rows_;
  std::vector<AttentionChunk> attn_chunks_;
};

}  // namespace strata

#endif  // STRATA_RUNTIME_STAGE_H_
