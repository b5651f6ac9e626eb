// Which tensors a decoder checkpoint holds and the shapes the config implies.
// The stage loader, `strata inspect` and (later) the placement planner read
// the same list, so they agree on what a layer weighs.
#ifndef STRATA_RUNTIME_MODEL_LAYOUT_H_
#define STRATA_RUNTIME_MODEL_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"

namespace strata {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

std::string LayerPrefix(int64_t layer);  // "model.layers.7."

// Tensors of decoder layer `layer`, in a fixed order.
std::vector<TensorSpec> LayerTensors(const ModelConfig& config, int64_t layer);
// Whether a layer tensor is a linear layer's weight ("...q_proj.weight"),
// which a quantized checkpoint may store in a quantized format (the module's
// name is the spec's name without ".weight").
bool IsLinearWeight(const TensorSpec& spec);
std::string ModuleOf(const TensorSpec& spec);
TensorSpec EmbeddingTensor(const ModelConfig& config);  // model.embed_tokens.weight
TensorSpec FinalNormTensor(const ModelConfig& config);  // model.norm.weight
// lm_head.weight, or the embedding when the embeddings are tied.
TensorSpec LmHeadTensor(const ModelConfig& config);

// Every tensor of the model, in checkpoint order: the embedding, each layer's,
// the final norm, and the LM head unless it is tied.
std::vector<TensorSpec> AllTensors(const ModelConfig& config);

struct ModelBytes {
  std::vector<int64_t> layer_bytes;  // one entry per decoder layer
  int64_t embedding_bytes = 0;
  int64_t final_norm_bytes = 0;
  int64_t lm_head_bytes = 0;  // 0 when tied (shared with the embedding)
  int64_t total() const;
};

// Byte sizes from the shard headers; no tensor data is read. A quantized
// linear layer counts what it takes once loaded (runtime/quant.h's packed form). Fails, naming the
// tensor, when one is missing or has the wrong shape.
absl::StatusOr<ModelBytes> MeasureModel(const ModelConfig& config, Checkpoint& checkpoint);

}  // namespace strata

#endif  // STRATA_RUNTIME_MODEL_LAYOUT_H_
