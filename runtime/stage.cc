#include "runtime/stage.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "runtime/arch/architecture.h"
#include "runtime/model_layout.h"
#include "runtime/status_macros.h"

namespace strata {

struct Stage::LayerWeights {
  Weight input_norm, q, k, v, o, post_norm, gate, up, down, q_norm, k_norm;
  std::vector<float> q_bias, k_bias, v_bias;
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
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype) {
      case DType::kF32:
        out[i] = static_cast<const float*>(t.data)[i];
        break;
      case DType::kBF16:
        out[i] = Bf16ToF32(static_cast<const uint16_t*>(t.data)[i]);
        break;
      case DType::kF16:
        out[i] = F16ToF32(static_cast<const uint16_t*>(t.data)[i]);
        break;
    }
  }
  return out;
}

}  // namespace

Stage::Stage(const ModelConfig& config, int64_t begin, int64_t end, const StageOptions& options,
             int64_t max_context, int64_t kv_blocks)
    : config_(config),
      begin_(begin),
      end_(end),
      options_(options),
      max_context_(max_context),
      kv_(end - begin, config.kv_dim(), kv_blocks) {}

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
  auto stage =
      std::unique_ptr<Stage>(new Stage(config, begin, end, options, max_context, kv_blocks));
  RETURN_IF_ERROR(stage->LoadWeights(model_dir));
  stage->backend_ = MakeCpuBackend(options.threads);

  const int64_t t = options.max_batch_tokens;
  const int64_t h = config.hidden_size;
  stage->x_.resize(t * h);
  stage->normed_.resize(t * h);
  stage->proj_.resize(t * h);
  stage->head_in_.resize(t * h);
  stage->q_.resize(t * config.q_dim());
  stage->attn_.resize(t * config.q_dim());
  stage->k_.resize(t * config.kv_dim());
  stage->v_.resize(t * config.kv_dim());
  stage->gate_.resize(t * config.intermediate_size);
  stage->up_.resize(t * config.intermediate_size);
  stage->cos_.resize(t * config.head_dim / 2);
  stage->sin_.resize(t * config.head_dim / 2);
  stage->inv_freq_ = RopeInverseFrequencies(config);
  return stage;
}

absl::Status Stage::LoadWeights(const std::string& model_dir) {
  ASSIGN_OR_RETURN(checkpoint_, Checkpoint::Open(model_dir));
  auto get = [&](const TensorSpec& spec) -> absl::StatusOr<TensorView> {
    ASSIGN_OR_RETURN(TensorView t, checkpoint_->Get(spec.name, spec.shape));
    weight_bytes_ += static_cast<int64_t>(t.nbytes);
    return t;
  };
  for (int64_t l = begin_; l < end_; ++l) {
    const std::string p = LayerPrefix(l);
    LayerWeights w;
    for (const TensorSpec& spec : LayerTensors(config_, l)) {
      ASSIGN_OR_RETURN(TensorView t, get(spec));
      const std::string_view suffix = std::string_view(spec.name).substr(p.size());
      if (suffix == "input_layernorm.weight")
        w.input_norm = AsWeight(t);
      else if (suffix == "self_attn.q_proj.weight")
        w.q = AsWeight(t);
      else if (suffix == "self_attn.k_proj.weight")
        w.k = AsWeight(t);
      else if (suffix == "self_attn.v_proj.weight")
        w.v = AsWeight(t);
      else if (suffix == "self_attn.o_proj.weight")
        w.o = AsWeight(t);
      else if (suffix == "post_attention_layernorm.weight")
        w.post_norm = AsWeight(t);
      else if (suffix == "mlp.gate_proj.weight")
        w.gate = AsWeight(t);
      else if (suffix == "mlp.up_proj.weight")
        w.up = AsWeight(t);
      else if (suffix == "mlp.down_proj.weight")
        w.down = AsWeight(t);
      else if (suffix == "self_attn.q_proj.bias")
        w.q_bias = ToF32(t);
      else if (suffix == "self_attn.k_proj.bias")
        w.k_bias = ToF32(t);
      else if (suffix == "self_attn.v_proj.bias")
        w.v_bias = ToF32(t);
      else if (suffix == config_.traits->q_norm_tensor)
        w.q_norm = AsWeight(t);
      else if (suffix == config_.traits->k_norm_tensor)
        w.k_norm = AsWeight(t);
    }
    layers_.push_back(std::move(w));
  }
  if (is_first() || (is_last() && config_.tie_word_embeddings)) {
    ASSIGN_OR_RETURN(TensorView t, get(EmbeddingTensor(config_)));
    embedding_ = AsWeight(t);
  }
  if (is_last()) {
    ASSIGN_OR_RETURN(TensorView norm, get(FinalNormTensor(config_)));
    final_norm_ = AsWeight(norm);
    if (config_.tie_word_embeddings) {
      lm_head_ = embedding_;
    } else {
      ASSIGN_OR_RETURN(TensorView head, get(LmHeadTensor(config_)));
      lm_head_ = AsWeight(head);
    }
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
    if (c.start_pos < 0 || c.start_pos > kv_.Length(c.seq_id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", c.seq_id, ": chunk starts at position ", c.start_pos,
                       " but the stage holds ", kv_.Length(c.seq_id), " tokens of it"));
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
  if (!is_first() && static_cast<int64_t>(batch.hidden.size()) != total * config_.hidden_size) {
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
    extra += kv_.ExtraBlocks(c.seq_id, c.start_pos + c.num_tokens);
  }
  if (extra > kv_.free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: batch needs ", extra,
                                                     " more blocks, ", kv_.free_blocks(), " of ",
                                                     kv_.total_blocks(), " are free"));
  }
  for (const SequenceChunk& c : batch.chunks) {
    RETURN_IF_ERROR(kv_.Resize(c.seq_id, c.start_pos + c.num_tokens));
  }
  return absl::OkStatus();
}

absl::Status Stage::Run(const StageBatch& batch, StageOutput* out) {
  int64_t tokens = 0;
  RETURN_IF_ERROR(Validate(batch, &tokens));
  RETURN_IF_ERROR(ReserveKv(batch));

  const int64_t h = config_.hidden_size, half = config_.head_dim / 2;
  attn_chunks_.clear();
  int64_t row = 0;
  for (const SequenceChunk& c : batch.chunks) {
    attn_chunks_.push_back({row, c.num_tokens, c.start_pos, kv_.BlockTable(c.seq_id).data()});
    for (int64_t i = 0; i < c.num_tokens; ++i, ++row) {
      const float pos = static_cast<float>(c.start_pos + i);
      for (int64_t j = 0; j < half; ++j) {
        const float angle = pos * inv_freq_[j];
        cos_[row * half + j] = std::cos(angle);
        sin_[row * half + j] = std::sin(angle);
      }
    }
  }

  if (is_first()) {
    int64_t r = 0;
    for (const SequenceChunk& c : batch.chunks) {
      backend_->Embed(c.token_ids, embedding_, x_.data() + r * h);
      r += c.num_tokens;
    }
  } else {
    std::copy(batch.hidden.begin(), batch.hidden.end(), x_.begin());
  }
  for (size_t l = 0; l < layers_.size(); ++l) RunLayer(layers_[l], static_cast<int64_t>(l), tokens);

  if (is_last()) {
    out->hidden.clear();
    ComputeHead(batch, out);
  } else {
    out->hidden.assign(x_.begin(), x_.begin() + tokens * h);
    out->logits.clear();
    out->logits_row.clear();
    out->vocab_size = 0;
  }
  backend_->Rest();
  return absl::OkStatus();
}

void Stage::RunLayer(const LayerWeights& w, int64_t local, int64_t t) {
  const ModelConfig& c = config_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Backend& be = *backend_;
  be.RmsNorm(x_.data(), t, c.hidden_size, w.input_norm, eps, normed_.data());
  be.Linear(normed_.data(), t, w.q, w.q_bias.empty() ? nullptr : w.q_bias.data(), q_.data());
  be.Linear(normed_.data(), t, w.k, w.k_bias.empty() ? nullptr : w.k_bias.data(), k_.data());
  be.Linear(normed_.data(), t, w.v, w.v_bias.empty() ? nullptr : w.v_bias.data(), v_.data());
  be.Rope(q_.data(), t, c.num_heads, c.head_dim, cos_.data(), sin_.data());
  be.Rope(k_.data(), t, c.num_kv_heads, c.head_dim, cos_.data(), sin_.data());
  if (c.qk_norm) {
    be.RmsNorm(q_.data(), t * c.num_heads, c.head_dim, w.q_norm, eps, q_.data());
    be.RmsNorm(k_.data(), t * c.num_kv_heads, c.head_dim, w.k_norm, eps, k_.data());
  }
  const KvLayerView kv = kv_.Layer(local);
  be.WriteKv(k_.data(), v_.data(), attn_chunks_, kv);
  AttentionShape shape;
  shape.num_heads = c.num_heads;
  shape.num_kv_heads = c.num_kv_heads;
  shape.head_dim = c.head_dim;
  shape.sliding_window = c.sliding_window;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  be.Attention(q_.data(), attn_chunks_, kv, shape, attn_.data());
  be.Linear(attn_.data(), t, w.o, nullptr, proj_.data());
  be.Add(x_.data(), proj_.data(), t * c.hidden_size);

  be.RmsNorm(x_.data(), t, c.hidden_size, w.post_norm, eps, normed_.data());
  be.Linear(normed_.data(), t, w.gate, nullptr, gate_.data());
  be.Linear(normed_.data(), t, w.up, nullptr, up_.data());
  be.SiluMul(gate_.data(), up_.data(), t * c.intermediate_size);
  be.Linear(gate_.data(), t, w.down, nullptr, proj_.data());
  be.Add(x_.data(), proj_.data(), t * c.hidden_size);
}

void Stage::ComputeHead(const StageBatch& batch, StageOutput* out) {
  const int64_t h = config_.hidden_size;
  out->logits_row.clear();
  int64_t rows = 0, row = 0;
  for (const SequenceChunk& c : batch.chunks) {
    out->logits_row.push_back(rows);
    if (c.logits == LogitsMode::kAll) {
      std::copy_n(x_.begin() + row * h, c.num_tokens * h, head_in_.begin() + rows * h);
      rows += c.num_tokens;
    } else if (c.logits == LogitsMode::kLast) {
      std::copy_n(x_.begin() + (row + c.num_tokens - 1) * h, h, head_in_.begin() + rows * h);
      rows += 1;
    }
    row += c.num_tokens;
  }
  out->vocab_size = config_.vocab_size;
  out->logits.resize(rows * config_.vocab_size);
  if (rows == 0) return;
  backend_->RmsNorm(head_in_.data(), rows, h, final_norm_, static_cast<float>(config_.rms_norm_eps),
                    normed_.data());
  backend_->Linear(normed_.data(), rows, lm_head_, nullptr, out->logits.data());
}

}  // namespace strata
