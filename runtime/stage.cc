#include "runtime/stage.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/arch/architecture.h"
#include "runtime/model_layout.h"
#include "runtime/status_macros.h"

namespace strata {

struct Stage::LayerWeights {
  Weight input_norm, q, k, v, o, post_norm, gate, up, down, q_norm, k_norm;
  // Biases are kept as f32 on the host; *_bias is that vector as the backend
  // reads it, or empty (data == nullptr) when the family has none.
  std::vector<float> q_bias_f32, k_bias_f32, v_bias_f32;
  Weight q_bias, k_bias, v_bias;
};

namespace {

Weight AsWeight(const TensorView& t) {
  Weight w;
  w.dtype = t.dtype;
  w.rows = t.shape.size() == 2 ? t.shape[0] : 1;
  w.cols = t.shape.empty() ? 0 : t.shape.back();
  w.data = t.data;
  return w;
}

std::vector<float> ToF32(const TensorView& t) {
  std::vector<float> out(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = ElementAsF32(t.dtype, t.data, i);
  return out;
}

const Weight* BiasOrNull(const Weight& w) { return w.data == nullptr ? nullptr : &w; }

}  // namespace

Stage::Stage(const ModelConfig& config, int64_t begin, int64_t end, const StageOptions& options,
             int64_t max_context)
    : config_(config), begin_(begin), end_(end), options_(options), max_context_(max_context) {}

Stage::~Stage() = default;

absl::StatusOr<std::unique_ptr<Stage>> Stage::Load(const std::string& model_dir,
                                                   const ModelConfig& config, int64_t begin,
                                                   int64_t end, const StageOptions& options) {
  if (begin < 0 || end > config.num_layers || begin >= end) {
    return absl::InvalidArgumentError(absl::StrCat("layer range [", begin, ", ", end,
                                                   ") is not a non-empty part of the model's ",
                                                   config.num_layers, " layers"));
  }
  if (options.max_batch_tokens <= 0 || options.max_sequences <= 0 || options.threads < 0 ||
      options.max_context < 0 || options.kv_blocks < 0) {
    return absl::InvalidArgumentError(
        "stage options: max_batch_tokens and max_sequences must be positive; threads, "
        "max_context and kv_blocks must not be negative");
  }
  int64_t max_context = std::min<int64_t>(config.max_position_embeddings, 8192);
  if (options.max_context > 0) {
    max_context = std::min(options.max_context, config.max_position_embeddings);
  }
  int64_t kv_blocks = options.kv_blocks;
  if (kv_blocks == 0) {
    kv_blocks =
        options.max_sequences * ((max_context + KvCache::kBlockSize - 1) / KvCache::kBlockSize);
  }
  auto stage = std::unique_ptr<Stage>(new Stage(config, begin, end, options, max_context));
  ASSIGN_OR_RETURN(stage->checkpoint_, Checkpoint::Open(model_dir));
  // The first tensor's dtype stands for the checkpoint's (it picks the CUDA
  // activation dtype); mixed checkpoints still load, converted per tensor.
  const TensorSpec first = LayerTensors(config, begin).front();
  ASSIGN_OR_RETURN(TensorView probe, stage->checkpoint_->Get(first.name, first.shape));
  BackendOptions bo;
  bo.device = options.device;
  bo.threads = options.threads;
  bo.cpu_kernels = options.cpu_kernels;
  bo.memory_limit_bytes = options.device_memory_bytes;
  bo.sim_memory_bytes = options.sim_memory_bytes;
  bo.sim_bandwidth = options.sim_bandwidth;
  bo.sim_flops = options.sim_flops;
  ASSIGN_OR_RETURN(stage->backend_, MakeBackend(bo, probe.dtype));
  RETURN_IF_ERROR(stage->LoadWeights());
  if (options.prefault && options.device.rfind("cpu", 0) == 0) {
    PrefaultPages(stage->weight_spans_, options.load_progress, options.debug_load_rate);
  }
  stage->weight_spans_.clear();
  RETURN_IF_ERROR(stage->PrepareMatrices());
  RETURN_IF_ERROR(stage->AllocateWorkspaces(kv_blocks));
  stage->inv_freq_ = RopeInverseFrequencies(config);
  return stage;
}

void PrefaultPages(const std::vector<std::pair<const void*, size_t>>& spans,
                   const std::function<void(int64_t, int64_t)>& progress, double max_rate) {
  using Clock = std::chrono::steady_clock;
  constexpr size_t kPage = 4096;
  int64_t total = 0;
  for (const auto& [p, n] : spans) total += static_cast<int64_t>(n);
  // Ask the kernel to read ahead, then touch one byte of every page.
  for (const auto& [p, n] : spans) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(kPage - 1);
    const uintptr_t end = reinterpret_cast<uintptr_t>(p) + n;
    posix_madvise(reinterpret_cast<void*>(begin), end - begin, POSIX_MADV_WILLNEED);
  }
  int64_t done = 0;
  const auto start = Clock::now();
  auto last = start;
  volatile uint8_t sink = 0;
  for (const auto& [p, n] : spans) {
    const auto* bytes = static_cast<const uint8_t*>(p);
    for (size_t off = 0; off < n; off += kPage) {
      sink = sink + bytes[off];
      if (max_rate > 0) {
        const double due = static_cast<double>(done + static_cast<int64_t>(off)) / max_rate;
        std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(due)));
      }
      if (progress && ((off / kPage) & 15) == 0 &&
          Clock::now() - last >= std::chrono::milliseconds(250)) {
        last = Clock::now();
        progress(done + static_cast<int64_t>(off), total);
      }
    }
    if (n > 0) sink = sink + bytes[n - 1];
    done += static_cast<int64_t>(n);
  }
  if (progress) progress(done, total);
}

absl::Status Stage::AllocateWorkspaces(int64_t kv_blocks) {
  const int64_t t = options_.max_batch_tokens;
  const int64_t h = config_.hidden_size;
  const int64_t elem = static_cast<int64_t>(DTypeSize(backend_->activation_dtype()));
  auto workspace = [&](int64_t elements, std::string_view what, void** out) -> absl::Status {
    ASSIGN_OR_RETURN(
        std::unique_ptr<Buffer> b,
        backend_->Allocate(elements * elem, absl::StrCat("workspace ", std::string(what))));
    *out = b->data();
    buffers_.push_back(std::move(b));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(workspace(t * h, "hidden", &x_));
  RETURN_IF_ERROR(workspace(t * h, "normed", &normed_));
  RETURN_IF_ERROR(workspace(t * h, "projection", &proj_));
  RETURN_IF_ERROR(workspace(t * h, "head input", &head_in_));
  RETURN_IF_ERROR(workspace(t * config_.q_dim(), "q", &q_));
  RETURN_IF_ERROR(workspace(t * config_.q_dim(), "attention", &attn_));
  RETURN_IF_ERROR(workspace(t * config_.kv_dim(), "k", &k_));
  RETURN_IF_ERROR(workspace(t * config_.kv_dim(), "v", &v_));
  RETURN_IF_ERROR(workspace(t * config_.intermediate_size, "gate", &gate_));
  RETURN_IF_ERROR(workspace(t * config_.intermediate_size, "up", &up_));
  cos_.resize(t * config_.head_dim / 2);
  sin_.resize(t * config_.head_dim / 2);

  Backend::StepLimits limits;
  limits.max_rows = t;
  limits.max_positions = max_context_;
  limits.rope_half = config_.head_dim / 2;
  limits.num_heads = config_.num_heads;
  limits.head_dim = config_.head_dim;
  limits.hidden = h;
  limits.vocab = is_last() ? config_.vocab_size : 0;
  limits.max_logits_rows = std::min(t, std::max<int64_t>(64, options_.max_sequences));
  RETURN_IF_ERROR(backend_->ReserveScratch(limits));

  // The KV cache last: with kv_from_memory it takes what is left.
  const int64_t layers = end_ - begin_;
  const MemoryReport memory = backend_->Memory();
  if (options_.kv_from_memory && memory.limit_bytes > 0) {
    const int64_t block = KvCache::StorageBytes(layers, config_.kv_dim(), 1, elem);
    const int64_t left = memory.limit_bytes - memory.used_bytes;
    const int64_t fit = std::max<int64_t>(0, left / block);
    const int64_t one = (max_context_ + KvCache::kBlockSize - 1) / KvCache::kBlockSize;
    if (fit < one) {
      return absl::ResourceExhaustedError(
          absl::StrCat(memory.device, ": the weights and workspaces leave ", left >> 20,
                       " MiB for the KV cache: ", fit, " blocks of ", KvCache::kBlockSize,
                       " tokens, fewer than the ", one, " one sequence of ", max_context_,
                       " tokens needs; give the stage fewer layers or a shorter --max-context"));
    }
    kv_blocks = std::min(kv_blocks, fit);
  }
  const int64_t kv_bytes = KvCache::StorageBytes(layers, config_.kv_dim(), kv_blocks, elem);
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> storage,
                   backend_->Allocate(kv_bytes, absl::StrCat("KV cache (", kv_blocks, " blocks of ",
                                                             KvCache::kBlockSize, " tokens, ",
                                                             layers, " layers)")));
  kv_ = std::make_unique<KvCache>(layers, config_.kv_dim(), kv_blocks, elem, std::move(storage));
  return absl::OkStatus();
}

absl::Status Stage::LoadWeights() {
  auto get = [&](const TensorSpec& spec) -> absl::StatusOr<TensorView> {
    ASSIGN_OR_RETURN(TensorView t, checkpoint_->Get(spec.name, spec.shape));
    weight_bytes_ += static_cast<int64_t>(t.nbytes);
    weight_spans_.emplace_back(t.data, t.nbytes);
    return t;
  };
  auto bias = [&](const TensorView& t, const std::string& name, std::vector<float>* host,
                  Weight* out) -> absl::Status {
    *host = ToF32(t);
    Weight w;
    w.rows = 1;
    w.cols = static_cast<int64_t>(host->size());
    w.data = host->data();
    ASSIGN_OR_RETURN(*out, backend_->PrepareWeight(w, name));
    return absl::OkStatus();
  };
  auto target_of = [&](LayerWeights& w, std::string_view suffix) -> Weight* {
    if (suffix == "input_layernorm.weight") return &w.input_norm;
    if (suffix == "self_attn.q_proj.weight") return &w.q;
    if (suffix == "self_attn.k_proj.weight") return &w.k;
    if (suffix == "self_attn.v_proj.weight") return &w.v;
    if (suffix == "self_attn.o_proj.weight") return &w.o;
    if (suffix == "post_attention_layernorm.weight") return &w.post_norm;
    if (suffix == "mlp.gate_proj.weight") return &w.gate;
    if (suffix == "mlp.up_proj.weight") return &w.up;
    if (suffix == "mlp.down_proj.weight") return &w.down;
    if (suffix == config_.traits->q_norm_tensor) return &w.q_norm;
    if (suffix == config_.traits->k_norm_tensor) return &w.k_norm;
    return nullptr;
  };
  for (int64_t l = begin_; l < end_; ++l) {
    const std::string p = LayerPrefix(l);
    // The CPU backend reads the f32 bias vectors in place; moving a
    // LayerWeights (when layers_ grows) keeps their heap storage.
    layers_.emplace_back();
    LayerWeights& w = layers_.back();
    for (const TensorSpec& spec : LayerTensors(config_, l)) {
      const std::string_view suffix = std::string_view(spec.name).substr(p.size());
      if (IsLinearWeight(spec) && config_.quant.quantized()) {
        ASSIGN_OR_RETURN(std::unique_ptr<PackedLinear> packed,
                         LoadQuantizedLinear(*checkpoint_, config_.quant, ModuleOf(spec),
                                             spec.shape[0], spec.shape[1]));
        if (packed != nullptr) {
          Weight* target = target_of(w, suffix);
          weight_bytes_ += packed->checkpoint_bytes;
          ASSIGN_OR_RETURN(*target, backend_->PrepareWeight(packed->AsWeight(), spec.name));
          packed_.push_back(std::move(packed));
          continue;
        }
      }
      ASSIGN_OR_RETURN(TensorView t, get(spec));
      Weight* target = target_of(w, suffix);
      if (target != nullptr) {
        ASSIGN_OR_RETURN(*target, backend_->PrepareWeight(AsWeight(t), spec.name));
      } else if (suffix == "self_attn.q_proj.bias") {
        RETURN_IF_ERROR(bias(t, spec.name, &w.q_bias_f32, &w.q_bias));
      } else if (suffix == "self_attn.k_proj.bias") {
        RETURN_IF_ERROR(bias(t, spec.name, &w.k_bias_f32, &w.k_bias));
      } else if (suffix == "self_attn.v_proj.bias") {
        RETURN_IF_ERROR(bias(t, spec.name, &w.v_bias_f32, &w.v_bias));
      }
    }
  }
  if (is_first() && !is_last() && options_.host_embedding) {
    const TensorSpec spec = EmbeddingTensor(config_);
    ASSIGN_OR_RETURN(host_embedding_, checkpoint_->Get(spec.name, spec.shape));
  } else if (is_first() || (is_last() && config_.tie_word_embeddings)) {
    const TensorSpec spec = EmbeddingTensor(config_);
    ASSIGN_OR_RETURN(TensorView t, get(spec));
    ASSIGN_OR_RETURN(embedding_, backend_->PrepareWeight(AsWeight(t), spec.name));
  }
  if (is_last()) {
    const TensorSpec norm_spec = FinalNormTensor(config_);
    ASSIGN_OR_RETURN(TensorView norm, get(norm_spec));
    ASSIGN_OR_RETURN(final_norm_, backend_->PrepareWeight(AsWeight(norm), norm_spec.name));
    if (config_.tie_word_embeddings) {
      lm_head_ = embedding_;
    } else {
      const TensorSpec head_spec = LmHeadTensor(config_);
      ASSIGN_OR_RETURN(TensorView head, get(head_spec));
      ASSIGN_OR_RETURN(lm_head_, backend_->PrepareWeight(AsWeight(head), head_spec.name));
    }
  }
  return absl::OkStatus();
}

absl::Status Stage::PrepareMatrices() {
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = LayerPrefix(begin_ + static_cast<int64_t>(i));
    LayerWeights& w = layers_[i];
    const std::pair<Weight*, const char*> matrices[] = {
        {&w.q, "self_attn.q_proj.weight"}, {&w.k, "self_attn.k_proj.weight"},
        {&w.v, "self_attn.v_proj.weight"}, {&w.o, "self_attn.o_proj.weight"},
        {&w.gate, "mlp.gate_proj.weight"}, {&w.up, "mlp.up_proj.weight"},
        {&w.down, "mlp.down_proj.weight"}};
    for (const auto& [weight, suffix] : matrices) {
      ASSIGN_OR_RETURN(*weight, backend_->PrepareMatrix(*weight, p + suffix));
    }
  }
  if (is_last()) {
    const TensorSpec head =
        config_.tie_word_embeddings ? EmbeddingTensor(config_) : LmHeadTensor(config_);
    ASSIGN_OR_RETURN(lm_head_, backend_->PrepareMatrix(lm_head_, head.name));
  }
  return absl::OkStatus();
}

absl::Status Stage::Validate(const StageBatch& batch, int64_t* total_tokens) const {
  if (batch.chunks.empty()) return absl::InvalidArgumentError("stage batch has no chunks");
  int64_t total = 0;
  std::unordered_set<uint64_t> seen;
  for (const SequenceChunk& c : batch.chunks) {
    if (!seen.insert(c.seq_id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", c.seq_id, " appears twice in one stage batch"));
    }
    if (c.num_tokens <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", c.seq_id, ": chunk has no tokens"));
    }
    if (c.start_pos < 0 || c.start_pos > kv_->Length(c.seq_id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", c.seq_id, ": chunk starts at position ", c.start_pos,
                       " but the stage holds ", kv_->Length(c.seq_id), " tokens of it"));
    }
    if (c.start_pos + c.num_tokens > max_context_) {
      return absl::OutOfRangeError(
          absl::StrCat("sequence ", c.seq_id, ": ", c.start_pos + c.num_tokens,
                       " tokens exceed the context length of ", max_context_));
    }
    if (is_first()) {
      if (static_cast<int64_t>(c.token_ids.size()) != c.num_tokens) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", c.seq_id, ": ",
                                                       c.token_ids.size(), " token ids for ",
                                                       c.num_tokens, " tokens"));
      }
      for (int32_t id : c.token_ids) {
        if (id < 0 || id >= config_.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat("sequence ", c.seq_id, ": token id ", id,
                                                         " outside the vocabulary [0, ",
                                                         config_.vocab_size, ")"));
        }
      }
    }
    total += c.num_tokens;
  }
  if (total > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stage batch of ", total, " tokens exceeds max_batch_tokens ", options_.max_batch_tokens));
  }
  if (!is_first() && batch.recv_peer < 0 &&
      static_cast<int64_t>(batch.hidden.size()) != total * config_.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden states hold ", batch.hidden.size(), " floats; ", total, " tokens of hidden size ",
        config_.hidden_size, " need ", total * config_.hidden_size));
  }
  *total_tokens = total;
  return absl::OkStatus();
}

absl::Status Stage::ReserveKv(const StageBatch& batch) {
  int64_t extra = 0;
  for (const SequenceChunk& c : batch.chunks) {
    extra += kv_->ExtraBlocks(c.seq_id, c.start_pos + c.num_tokens);
  }
  if (extra > kv_->free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: batch needs ", extra,
                                                     " more blocks, ", kv_->free_blocks(), " of ",
                                                     kv_->total_blocks(), " are free"));
  }
  for (const SequenceChunk& c : batch.chunks) {
    RETURN_IF_ERROR(kv_->Resize(c.seq_id, c.start_pos + c.num_tokens));
  }
  return absl::OkStatus();
}

absl::Status Stage::JoinPeerGroup(const PeerGroup& group) {
  in_peer_group_ = false;
  RETURN_IF_ERROR(backend_->JoinPeerGroup(group));
  in_peer_group_ = true;
  return absl::OkStatus();
}

void Stage::LeavePeerGroup() {
  backend_->LeavePeerGroup();
  in_peer_group_ = false;
}

absl::Status Stage::Run(const StageBatch& batch, StageOutput* out) {
  if ((batch.recv_peer >= 0 || batch.send_peer >= 0) && !in_peer_group_) {
    return absl::FailedPreconditionError("recv_peer/send_peer: the stage joined no peer group");
  }
  // A peer's hidden states are received before anything can fail: the sender
  // has already enqueued them, and a receive never posted would stall it.
  if (batch.recv_peer >= 0) {
    if (is_first()) return absl::InvalidArgumentError("recv_peer: the first stage embeds ids");
    int64_t rows = 0;
    for (const SequenceChunk& c : batch.chunks) rows += c.num_tokens;
    if (rows > options_.max_batch_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stage batch of ", rows, " tokens exceeds max_batch_tokens ", options_.max_batch_tokens));
    }
    backend_->RecvFromPeer(x_, rows * config_.hidden_size, batch.recv_peer);
  }
  if (batch.send_peer >= 0 && is_last()) {
    return absl::InvalidArgumentError("send_peer: the last stage returns logits");
  }
  int64_t tokens = 0;
  RETURN_IF_ERROR(Validate(batch, &tokens));
  RETURN_IF_ERROR(ReserveKv(batch));
  absl::Status status = Execute(batch, tokens, out);
  if (!status.ok() && absl::StartsWith(status.message(), kStepNotRun)) {
    status = Execute(batch, tokens, out);  // nothing ran; the backend runs it without a graph now
  }
  backend_->Rest();
  return status;
}

absl::Status Stage::Execute(const StageBatch& batch, int64_t tokens, StageOutput* out) {
  BeginStep(batch, tokens);

  const int64_t h = config_.hidden_size;
  if (is_first()) {
    ids_.clear();
    for (const SequenceChunk& c : batch.chunks) {
      ids_.insert(ids_.end(), c.token_ids.begin(), c.token_ids.end());
    }
    if (host_embedding_.data != nullptr) {
      // The rows of this step's ids, gathered here and copied in.
      const int64_t rows = static_cast<int64_t>(ids_.size());
      embedded_.resize(rows * h);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t base = static_cast<int64_t>(ids_[r]) * h;
        for (int64_t j = 0; j < h; ++j) {
          embedded_[r * h + j] =
              ElementAsF32(host_embedding_.dtype, host_embedding_.data, base + j);
        }
      }
      backend_->UploadEmbedded(embedded_.data(), ids_, h, x_);
    } else {
      backend_->Embed(ids_, embedding_, x_);
    }
  } else if (batch.recv_peer < 0) {
    backend_->Upload(batch.hidden.data(), tokens * h, x_);
  }
  for (size_t l = 0; l < layers_.size(); ++l) RunLayer(layers_[l], static_cast<int64_t>(l), tokens);

  absl::Status status;
  if (is_last()) {
    out->hidden.clear();
    status = ComputeHead(batch, out);
  } else if (batch.send_peer >= 0) {
    // Enqueued, not waited for: the receiver posts its half once our step
    // header reaches it, after this returns; the next step waits for it
    // (see runtime/backend/peer_link.h).
    backend_->SendToPeer(x_, tokens * h, batch.send_peer);
    out->hidden.clear();
    status = backend_->TakeError();
    out->logits.clear();
    out->logits_row.clear();
    out->vocab_size = 0;
  } else {
    out->hidden.resize(tokens * h);
    status = backend_->Download(x_, tokens * h, out->hidden.data());
    out->logits.clear();
    out->logits_row.clear();
    out->vocab_size = 0;
  }
  return status;
}

void Stage::BeginStep(const StageBatch& batch, int64_t tokens) {
  const int64_t half = config_.head_dim / 2;
  attn_chunks_.clear();
  int64_t row = 0, max_positions = 0;
  for (const SequenceChunk& c : batch.chunks) {
    attn_chunks_.push_back({row, c.num_tokens, c.start_pos, kv_->BlockTable(c.seq_id).data()});
    max_positions = std::max(max_positions, c.start_pos + c.num_tokens);
    for (int64_t i = 0; i < c.num_tokens; ++i, ++row) {
      const float pos = static_cast<float>(c.start_pos + i);
      for (int64_t j = 0; j < half; ++j) {
        const float angle = pos * inv_freq_[j];
        cos_[row * half + j] = std::cos(angle);
        sin_[row * half + j] = std::sin(angle);
      }
    }
  }
  StepLayout layout;
  layout.chunks = attn_chunks_;
  layout.rows = tokens;
  layout.rope_half = half;
  layout.cos = cos_.data();
  layout.sin = sin_.data();
  layout.max_positions = max_positions;
  layout.logits_rows = 0;
  layout.peer_recv = batch.recv_peer >= 0;
  layout.peer_send = batch.send_peer >= 0;
  if (is_last()) {
    bool greedy = false, other = false;
    for (const SequenceChunk& c : batch.chunks) {
      if (c.logits == LogitsMode::kNone) continue;
      layout.logits_rows += c.logits == LogitsMode::kAll ? c.num_tokens : 1;
      (c.logits == LogitsMode::kGreedy ? greedy : other) = true;
    }
    layout.argmax_only = greedy && !other;
  }
  backend_->BeginStep(layout);
}

void Stage::RunLayer(const LayerWeights& w, int64_t local, int64_t t) {
  const ModelConfig& c = config_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Backend& be = *backend_;
  be.RmsNorm(x_, t, c.hidden_size, w.input_norm, eps, normed_);
  be.Linear(normed_, t, w.q, BiasOrNull(w.q_bias), q_);
  be.Linear(normed_, t, w.k, BiasOrNull(w.k_bias), k_);
  be.Linear(normed_, t, w.v, BiasOrNull(w.v_bias), v_);
  be.Rope(q_, c.num_heads, c.head_dim);
  be.Rope(k_, c.num_kv_heads, c.head_dim);
  if (c.qk_norm) {
    be.RmsNorm(q_, t * c.num_heads, c.head_dim, w.q_norm, eps, q_);
    be.RmsNorm(k_, t * c.num_kv_heads, c.head_dim, w.k_norm, eps, k_);
  }
  const KvLayerView kv = kv_->Layer(local);
  be.WriteKv(k_, v_, kv);
  AttentionShape shape;
  shape.num_heads = c.num_heads;
  shape.num_kv_heads = c.num_kv_heads;
  shape.head_dim = c.head_dim;
  shape.sliding_window = c.sliding_window;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  be.Attention(q_, kv, shape, attn_);
  be.Linear(attn_, t, w.o, nullptr, proj_);
  be.AddRmsNorm(x_, proj_, t, c.hidden_size, w.post_norm, eps, normed_);
  be.Linear(normed_, t, w.gate, nullptr, gate_);
  be.Linear(normed_, t, w.up, nullptr, up_);
  be.SiluMul(gate_, up_, t * c.intermediate_size);
  be.Linear(gate_, t, w.down, nullptr, proj_);
  be.Add(x_, proj_, t * c.hidden_size);
}

absl::Status Stage::ComputeHead(const StageBatch& batch, StageOutput* out) {
  const int64_t h = config_.hidden_size;
  out->logits_row.clear();
  out->greedy.assign(batch.chunks.size(), -1);
  head_rows_.clear();
  int64_t row = 0;
  bool greedy = false, other = false;
  for (const SequenceChunk& c : batch.chunks) {
    out->logits_row.push_back(static_cast<int64_t>(head_rows_.size()));
    if (c.logits == LogitsMode::kAll) {
      for (int64_t i = 0; i < c.num_tokens; ++i) head_rows_.push_back(row + i);
      other = true;
    } else if (c.logits != LogitsMode::kNone) {
      head_rows_.push_back(row + c.num_tokens - 1);
      (c.logits == LogitsMode::kGreedy ? greedy : other) = true;
    }
    row += c.num_tokens;
  }
  const int64_t rows = static_cast<int64_t>(head_rows_.size());
  const int64_t vocab = config_.vocab_size;
  out->vocab_size = vocab;
  out->logits.clear();
  if (rows == 0) return backend_->Download(x_, 0, nullptr);
  backend_->GatherRows(x_, head_rows_, h, head_in_);
  backend_->RmsNorm(head_in_, rows, h, final_norm_, static_cast<float>(config_.rms_norm_eps),
                    normed_);
  if (greedy && !other) {
    greedy_ids_.resize(rows);
    RETURN_IF_ERROR(backend_->Argmax(normed_, rows, lm_head_, greedy_ids_.data()));
    for (size_t c = 0; c < batch.chunks.size(); ++c) {
      if (batch.chunks[c].logits != LogitsMode::kGreedy) continue;
      out->greedy[c] = greedy_ids_[out->logits_row[c]];
      out->logits_row[c] = -1;
    }
    return absl::OkStatus();
  }
  out->logits.resize(rows * vocab);
  RETURN_IF_ERROR(backend_->Logits(normed_, rows, lm_head_, out->logits.data()));
  for (size_t c = 0; c < batch.chunks.size(); ++c) {
    if (batch.chunks[c].logits != LogitsMode::kGreedy) continue;
    const float* r = out->logits.data() + out->logits_row[c] * vocab;
    out->greedy[c] = static_cast<int32_t>(std::max_element(r, r + vocab) - r);
  }
  return absl::OkStatus();
}

}  // namespace strata
