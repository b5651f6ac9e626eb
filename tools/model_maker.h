// Deterministic random-initialised checkpoints in Hugging Face format, for
// tests, benchmarks and the embedded default model: config.json,
// model.safetensors (or shards with an index), generation_config.json,
// tokenizer_config.json, and a tokenizer.model trained with SentencePiece on
// the corpus in tools/corpus/ (compiled into the binary).
#ifndef STRATA_TOOLS_MODEL_MAKER_H_
#define STRATA_TOOLS_MODEL_MAKER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/dtype.h"
#include "tools/quantizer.h"

namespace strata {

struct ModelSpec {
  std::string flavour = "llama";  // llama | mistral | qwen2 | hunyuan-dense
  // tiny | 1b (TinyLlama-1.1B dimensions) | qwen2.5-3b (Qwen2.5-3B-Instruct,
  // flavour qwen2) | hy-mt1.5-1.8b (HY-MT1.5-1.8B, flavour hunyuan-dense).
  std::string size = "tiny";
  // Weights dtype; the default is f32 for tiny and bf16 for 1b.
  std::string dtype;
  int shards = 1;
  uint64_t seed = 0;
  // random: every tensor random (tests compare numbers, not text).
  // bigram: embedding and head of a bigram model of the corpus, faint layers
  // (see bigram_init.h), so greedy text reads like the corpus. llama/mistral.
  // zeros: every weight zero, written as sparse files: the full shape on
  // disk (for placement and memory checks) without using the space.
  std::string init = "random";
  // Decoder layers; 0 = the size's own count (a few layers of a large shape
  // suffice for comparing numbers with a reference).
  int layers = 0;
  // max_position_embeddings; 0 = the size's own (256 for tiny).
  int64_t positions = 0;
  // With a method: the model made as above, then its linear layers quantized
  // into that published format (tools/quantizer.h).
  QuantizeSpec quant;
};

std::vector<std::string> ModelFlavours();
std::vector<std::string> ModelSizes();

// Writes the model into `out_dir` (created if needed). Same spec, same bytes.
absl::Status MakeModel(const ModelSpec& spec, const std::string& out_dir);

// The embedded default model (a tiny Llama with bigram init): made by the
// generator on first use and kept in $STRATA_HOME/models (default
// ~/.cache/strata). Returns its folder.
absl::StatusOr<std::string> DefaultModelDir();

// The training corpus compiled into the binary.
const std::string& EmbeddedCorpus();

}  // namespace strata

#endif  // STRATA_TOOLS_MODEL_MAKER_H_
